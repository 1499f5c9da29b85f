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
    /// A run of buckets does not start where the previous one ended.
    #[error("bucket range {first}..={last} does not follow the previous one")]
    BadRange {
        /// The run's first bucket.
        first: u16,
        /// The run's last bucket.
        last: u16,
    },
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

    /// The buckets `shard` owns, in order.
    pub fn buckets_of(&self, shard: ShardId) -> Vec<Bucket> {
        (0..BUCKETS).filter(|b| self.assignment[*b as usize] == shard).map(Bucket).collect()
    }

    /// The directory written down as runs of consecutive buckets with one owner,
    /// in bucket order: how the controller keeps and publishes it.
    pub fn ranges(&self) -> Vec<BucketRange> {
        let mut out: Vec<BucketRange> = vec![];
        for (b, shard) in self.assignment.iter().enumerate() {
            match out.last_mut() {
                Some(r) if r.shard == shard.0 && usize::from(r.last) + 1 == b => r.last = b as u16,
                _ => out.push(BucketRange { first: b as u16, last: b as u16, shard: shard.0 }),
            }
        }
        out
    }

    /// A map from runs of buckets, which must cover every bucket once, in order.
    pub fn from_ranges(epoch: u64, shards: usize, ranges: &[BucketRange]) -> Result<ShardMap, ShardMapError> {
        let mut assignment = Vec::with_capacity(BUCKETS as usize);
        for r in ranges {
            if usize::from(r.first) != assignment.len() || r.last < r.first {
                return Err(ShardMapError::BadRange { first: r.first, last: r.last });
            }
            assignment.extend((r.first..=r.last).map(|_| ShardId(r.shard)));
        }
        ShardMap::from_assignment(epoch, shards, assignment)
    }

    /// This map with `buckets` given to `to`, at `epoch`.
    pub fn with_moved(&self, buckets: &[Bucket], to: ShardId, epoch: u64) -> Result<ShardMap, ShardMapError> {
        let mut assignment = self.assignment.clone();
        for b in buckets {
            assignment[b.get() as usize] = to;
        }
        ShardMap::from_assignment(epoch, self.shards, assignment)
    }
}

/// Buckets `first..=last`, owned by shard `shard`: one run of the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketRange {
    /// The run's first bucket.
    pub first: u16,
    /// The run's last bucket (inclusive).
    pub last: u16,
    /// The shard owning them.
    pub shard: u16,
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
    fn ranges_round_trip_and_moves_change_only_their_buckets() {
        let m = ShardMap::even(2).unwrap();
        assert_eq!(
            m.ranges(),
            vec![
                BucketRange { first: 0, last: 2047, shard: 0 },
                BucketRange { first: 2048, last: 4095, shard: 1 }
            ]
        );
        let moved = m.with_moved(&[Bucket(5), Bucket(6), Bucket(4095)], ShardId(1), 7).unwrap();
        assert_eq!(moved.epoch(), 7);
        assert_eq!(moved.ranges().len(), 4);
        assert_eq!(ShardMap::from_ranges(7, 2, &moved.ranges()).unwrap(), moved);
        assert_eq!(moved.buckets_of(ShardId(1)).len(), 2050);
        assert_eq!(moved.shard_of_bucket(Bucket(4)), ShardId(0));
        assert_eq!(moved.shard_of_bucket(Bucket(6)), ShardId(1));
        assert!(matches!(
            ShardMap::from_ranges(1, 2, &[BucketRange { first: 1, last: 4095, shard: 0 }]),
            Err(ShardMapError::BadRange { .. })
        ));
        assert!(matches!(
            ShardMap::from_ranges(1, 2, &[BucketRange { first: 0, last: 10, shard: 0 }]),
            Err(ShardMapError::WrongLength(11))
        ));
        assert!(moved.with_moved(&[Bucket(1)], ShardId(2), 8).is_err(), "no such shard");
    }

    #[test]
    fn user_and_name_share_a_shard() {
        let m = ShardMap::even(3).unwrap();
        let name = "alice";
        let id = crate::new_user_id(username_bucket(name));
        assert_eq!(m.shard_of_user(id), m.shard_of_username(name));
    }
}
