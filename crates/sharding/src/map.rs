//! The directory from buckets to shard clusters.

use serde::{Deserialize, Serialize};

use crate::{BUCKETS, Bucket, PostId, user_bucket, username_bucket};

/// Index of a shard cluster in the deployment's list of shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId(pub u16);

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard{}", self.0)
    }
}

/// A shard map that does not describe every bucket exactly once.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardMapError {
    /// At least one shard is needed.
    #[error("a shard map needs at least one shard")]
    NoShards,
    /// More shards than buckets cannot all own a bucket.
    #[error("{0} shards is more than the {BUCKETS} buckets")]
    TooManyShards(usize),
    /// The assignment's length must be [`BUCKETS`].
    #[error("the assignment names {0} buckets, not {BUCKETS}")]
    WrongLength(usize),
    /// A bucket points past the list of shards.
    #[error("bucket {bucket} is assigned to shard {shard}, but there are only {shards} shards")]
    UnknownShard {
        /// The offending bucket.
        bucket: u16,
        /// The shard it names.
        shard: u16,
        /// How many shards exist.
        shards: usize,
    },
}

/// Which shard owns each bucket, at one epoch.
///
/// The epoch grows each time the map changes (a failover or a bucket move), so a
/// process holding an older map can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    /// Version of this map; larger is newer.
    epoch: u64,
    /// Number of shard clusters.
    shards: usize,
    /// `assignment[b]` owns bucket `b`.
    assignment: Vec<ShardId>,
}

impl ShardMap {
    /// Contiguous, even ranges of buckets over `shards` shards.
    pub fn even(shards: usize) -> Result<ShardMap, ShardMapError> {
        if shards == 0 {
            return Err(ShardMapError::NoShards);
        }
        if shards > BUCKETS as usize {
            return Err(ShardMapError::TooManyShards(shards));
        }
        let assignment =
            (0..BUCKETS as usize).map(|b| ShardId((b * shards / BUCKETS as usize) as u16)).collect();
        Ok(ShardMap { epoch: 1, shards, assignment })
    }

    /// An explicit assignment, checked.
    pub fn from_assignment(
        epoch: u64,
        shards: usize,
        assignment: Vec<ShardId>,
    ) -> Result<ShardMap, ShardMapError> {
        if shards == 0 {
            return Err(ShardMapError::NoShards);
        }
        if assignment.len() != BUCKETS as usize {
            return Err(ShardMapError::WrongLength(assignment.len()));
        }
        if let Some((bucket, shard)) = assignment.iter().enumerate().find(|(_, s)| s.0 as usize >= shards) {
            return Err(ShardMapError::UnknownShard { bucket: bucket as u16, shard: shard.0, shards });
        }
        Ok(ShardMap { epoch, shards, assignment })
    }

    /// The map's version.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// How many shards the map spreads over.
    pub fn shard_count(&self) -> usize {
        self.shards
    }

    /// Every shard, in order.
    pub fn shards(&self) -> impl Iterator<Item = ShardId> + use<> {
        (0..self.shards as u16).map(ShardId)
    }

    /// The shard owning `bucket`.
    pub fn shard_of_bucket(&self, bucket: Bucket) -> ShardId {
        self.assignment[bucket.get() as usize]
    }

    /// The shard holding a user's rows.
    pub fn shard_of_user(&self, user_id: i64) -> ShardId {
        self.shard_of_bucket(user_bucket(user_id))
    }

    /// The shard holding the claim on a (normalized) username.
    pub fn shard_of_username(&self, username: &str) -> ShardId {
        self.shard_of_bucket(username_bucket(username))
    }

    /// The shard holding a post.
    pub fn shard_of_post(&self, post: PostId) -> ShardId {
        self.shard_of_bucket(post.bucket())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_map_covers_all_buckets() {
        let m = ShardMap::even(2).unwrap();
        assert_eq!(m.shard_of_bucket(Bucket::new(0).unwrap()), ShardId(0));
        assert_eq!(m.shard_of_bucket(Bucket::new(2047).unwrap()), ShardId(0));
        assert_eq!(m.shard_of_bucket(Bucket::new(2048).unwrap()), ShardId(1));
        assert_eq!(m.shard_of_bucket(Bucket::new(4095).unwrap()), ShardId(1));
        assert_eq!(m.shards().count(), 2);
    }

    #[test]
    fn bad_maps_are_refused() {
        assert_eq!(ShardMap::even(0), Err(ShardMapError::NoShards));
        assert_eq!(ShardMap::even(5000), Err(ShardMapError::TooManyShards(5000)));
        assert_eq!(ShardMap::from_assignment(1, 1, vec![ShardId(0); 3]), Err(ShardMapError::WrongLength(3)));
        let mut a = vec![ShardId(0); BUCKETS as usize];
        a[9] = ShardId(2);
        assert_eq!(
            ShardMap::from_assignment(1, 2, a),
            Err(ShardMapError::UnknownShard { bucket: 9, shard: 2, shards: 2 })
        );
    }

    #[test]
    fn user_and_name_share_a_shard() {
        let m = ShardMap::even(3).unwrap();
        let name = "alice";
        let id = crate::new_user_id(username_bucket(name));
        assert_eq!(m.shard_of_user(id), m.shard_of_username(name));
    }
}
