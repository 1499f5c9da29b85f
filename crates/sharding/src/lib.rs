//! How data finds its shard.
//!
//! Every user-owned row lives in the *bucket* of its owner: `bucket(user_id) =
//! fmix64(user_id) mod 4096`, where `fmix64` is MurmurHash3's 64-bit finalizer (a
//! fixed, documented bijection, see [`fmix64`]). A [`ShardMap`] assigns each of the
//! [`BUCKETS`] buckets to one shard cluster; moving buckets between shards is how the
//! system reshards.
//!
//! Two identifiers carry their bucket so that routing needs no lookup:
//! - a username's bucket is `fmix64(fnv1a64(lowercase name)) mod 4096`, and a user's
//!   id is drawn so that `bucket(user_id) == username_bucket(username)`; a user's
//!   row and the unique claim on its name therefore always share a shard;
//! - a [`PostId`] holds its author's bucket in bits 10..22.
#![forbid(unsafe_code)]

mod cluster;
mod ids;
mod map;

pub use cluster::{ClusterMap, ShardServers};
pub use ids::{IdError, PostId, PostIdGenerator, new_user_id};
pub use map::{BucketRange, ShardId, ShardMap, ShardMapError};

/// Number of logical buckets. Fixed forever: it is baked into every post id.
pub const BUCKETS: u16 = 4096;

/// A logical bucket, `0..BUCKETS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Bucket(u16);

impl Bucket {
    /// The bucket with this number, if it is in range.
    pub fn new(n: u16) -> Option<Bucket> {
        (n < BUCKETS).then_some(Bucket(n))
    }

    /// The bucket's number.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// MurmurHash3's 64-bit finalizer: a fixed, well-mixed bijection on `u64`.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// FNV-1a, 64-bit.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The bucket of a user, from its id.
pub fn user_bucket(user_id: i64) -> Bucket {
    Bucket((fmix64(user_id as u64) % u64::from(BUCKETS)) as u16)
}

/// The bucket of a username. Callers pass the normalized (lowercase) name.
pub fn username_bucket(username: &str) -> Bucket {
    Bucket((fmix64(fnv1a64(username.as_bytes())) % u64::from(BUCKETS)) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_fixed() {
        // These values are part of the on-disk format: changing them strands data.
        assert_eq!(fmix64(0), 0);
        assert_eq!(fmix64(1), 0xb456_bcfc_34c2_cb2c);
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(user_bucket(1).get(), (0xb456_bcfc_34c2_cb2c_u64 % 4096) as u16);
    }

    #[test]
    fn buckets_spread() {
        let mut seen = vec![0u32; BUCKETS as usize];
        for i in 0..409_600i64 {
            seen[user_bucket(i).get() as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50 && n < 150), "skewed buckets");
    }

    #[test]
    fn bucket_range_is_checked() {
        assert!(Bucket::new(4095).is_some());
        assert!(Bucket::new(4096).is_none());
    }
}
