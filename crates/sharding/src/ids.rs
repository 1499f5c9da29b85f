//! Identifiers that carry their bucket.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

use crate::{Bucket, user_bucket};

/// Milliseconds since the Unix epoch of the id epoch, 2025-01-01T00:00:00Z.
pub const ID_EPOCH_MS: u64 = 1_735_689_600_000;
const SEQ_BITS: u32 = 10;
const BUCKET_BITS: u32 = 12;
const TIME_BITS: u32 = 41;

/// A post id: `0 | 41 bits ms since ID_EPOCH_MS | 12 bits author bucket | 10 bits sequence`.
///
/// Positive as an `i64`, ordered by creation time (to the millisecond), and routable:
/// [`PostId::bucket`] names the shard without any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PostId(i64);

/// Why a number is not a post id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// Zero or negative numbers are never issued.
    #[error("post ids are positive")]
    NotPositive,
}

impl PostId {
    /// Compose an id from its parts.
    pub fn from_parts(ms_since_epoch: u64, bucket: Bucket, seq: u16) -> PostId {
        let t = ms_since_epoch & ((1 << TIME_BITS) - 1);
        let raw = (t << (BUCKET_BITS + SEQ_BITS))
            | (u64::from(bucket.get()) << SEQ_BITS)
            | u64::from(seq & ((1 << SEQ_BITS) - 1) as u16);
        PostId(raw as i64)
    }

    /// Accept a number as a post id.
    pub fn from_i64(raw: i64) -> Result<PostId, IdError> {
        if raw <= 0 {
            return Err(IdError::NotPositive);
        }
        Ok(PostId(raw))
    }

    /// The raw value, as stored in the database.
    pub fn get(self) -> i64 {
        self.0
    }

    /// The author's bucket, read from the id.
    pub fn bucket(self) -> Bucket {
        Bucket::new(((self.0 as u64 >> SEQ_BITS) & ((1 << BUCKET_BITS) - 1)) as u16)
            .expect("12 bits are always below 4096")
    }

    /// Milliseconds since the Unix epoch at which the id was made.
    pub fn unix_ms(self) -> u64 {
        (self.0 as u64 >> (BUCKET_BITS + SEQ_BITS)) + ID_EPOCH_MS
    }
}

impl std::fmt::Display for PostId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Makes post ids for one process.
///
/// Two processes may, rarely, make the same id in the same millisecond for the same
/// bucket; the insert's primary key catches that and the caller draws another id.
#[derive(Debug)]
pub struct PostIdGenerator {
    /// Per-process sequence, started at a random point so processes rarely collide.
    seq: AtomicU32,
}

impl Default for PostIdGenerator {
    fn default() -> Self {
        PostIdGenerator { seq: AtomicU32::new(rand::rng().random()) }
    }
}

impl PostIdGenerator {
    /// A new id for a post by `author`, stamped with the current time.
    pub fn next(&self, author: i64) -> PostId {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) as u16;
        PostId::from_parts(now.saturating_sub(ID_EPOCH_MS), user_bucket(author), seq)
    }
}

/// A fresh random user id whose bucket is `bucket` (in practice, the bucket of the
/// user's name), so the user row and the name claim live together.
pub fn new_user_id(bucket: Bucket) -> i64 {
    let mut rng = rand::rng();
    loop {
        // Positive, and clear of the small numbers people type by hand.
        let id = rng.random_range(1_000_000_i64..i64::MAX);
        if user_bucket(id) == bucket {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_ids_round_trip_and_order() {
        let b = Bucket::new(1234).unwrap();
        let a = PostId::from_parts(1000, b, 5);
        let c = PostId::from_parts(1001, Bucket::new(7).unwrap(), 0);
        assert_eq!(a.bucket(), b);
        assert_eq!(a.unix_ms(), ID_EPOCH_MS + 1000);
        assert!(a < c, "later ids sort after earlier ones whatever the bucket");
        assert!(a.get() > 0);
    }

    #[test]
    fn generator_stamps_author_bucket() {
        let g = PostIdGenerator::default();
        for author in [1_i64, 42, 9_000_000_000] {
            let id = g.next(author);
            assert_eq!(id.bucket(), user_bucket(author));
            assert!(id.get() > 0);
        }
    }

    #[test]
    fn user_ids_land_in_the_asked_bucket() {
        for n in [0_u16, 1, 4095, 2048] {
            let b = Bucket::new(n).unwrap();
            let id = new_user_id(b);
            assert_eq!(user_bucket(id), b);
            assert!(id >= 1_000_000);
        }
    }

    #[test]
    fn non_positive_ids_are_refused() {
        assert_eq!(PostId::from_i64(0), Err(IdError::NotPositive));
        assert_eq!(PostId::from_i64(-5), Err(IdError::NotPositive));
    }
}
