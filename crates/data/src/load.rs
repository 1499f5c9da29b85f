//! Queries per bucket: what `millions shard rebalance --by load` weighs buckets by.
//!
//! Every query this process sends about a bucket's rows is counted for that
//! bucket, reads and writes apart, in two fixed tables of [`BUCKETS`] atomics
//! ([`LoadCounts`]): one relaxed `fetch_add` per query (per id for a batch read),
//! no map, no lock, nothing allocated. The counts are cumulative since the
//! process started; the controller samples every web server's and worker's
//! ([`Data::bucket_load`](crate::Data::bucket_load), served at
//! `GET /internal/bucket-load` as a [`BucketLoadReport`]) twice, some seconds
//! apart, and weighs each bucket by the difference.
//!
//! What is counted, as the query starts, whether it then succeeds or not (a
//! claim once it returned its jobs, since only they name the buckets):
//! - a write routed by bucket (`Place::Bucket`: a user's or a post's rows):
//!   one for the bucket per attempt, so a write a move's fence refused and ran
//!   again counts once per attempt sent;
//! - a write routed by shard whose rows belong to known buckets: a follow whose
//!   two sides share a shard (one transaction: one for each user's bucket), a
//!   job's claim (one for each claimed job's user's bucket), a job's completion,
//!   renewal, failure or release and the deletion of a post's queued fan-out
//!   job (one for the job's user's bucket): a bucket's jobs move with it;
//! - a read ([`ReadOf`]): one for the bucket it is about (a user's, a post's, a
//!   username's, a session token's), and for a batch read (one query for many
//!   ids on a shard: profiles, posts, the newest posts of several authors) one
//!   for each id's bucket; a read confirmed on the primary after a replica found
//!   nothing is a second read.
//!
//! Not counted: work of a shard as such, which no bucket move changes — a
//! claim that found no job (the workers' polling), queue statistics and dead
//! letters, the celebrities' scan, the expired sessions' purge — and the
//! statements of a bucket move (the controller's own connections, not `Data`).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sharding::{BUCKETS, Bucket, PostId, user_bucket};

/// One bucket's cumulative query counts, as this process sent them.
///
/// Serialized as the array `[bucket, reads, writes]`: a listing of thousands of
/// buckets stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "(u16, u64, u64)", from = "(u16, u64, u64)")]
pub struct BucketLoad {
    /// The bucket, `0..BUCKETS`: what a move moves.
    pub bucket: u16,
    /// Reads of the bucket's rows sent since the process started.
    pub reads: u64,
    /// Writes of the bucket's rows sent since the process started (each attempt).
    pub writes: u64,
}

impl From<BucketLoad> for (u16, u64, u64) {
    fn from(l: BucketLoad) -> (u16, u64, u64) {
        (l.bucket, l.reads, l.writes)
    }
}

impl From<(u16, u64, u64)> for BucketLoad {
    fn from((bucket, reads, writes): (u16, u64, u64)) -> BucketLoad {
        BucketLoad { bucket, reads, writes }
    }
}

/// The body of `GET /internal/bucket-load` (web servers and workers alike):
/// `{"buckets": [[bucket, reads, writes], ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketLoadReport {
    /// Every bucket with a nonzero count, in bucket order ([`crate::Data::bucket_load`]).
    pub buckets: Vec<BucketLoad>,
}

/// What a read is about, for the counts: every read says it, so none is left
/// out by accident.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReadOf<'a> {
    /// One bucket's rows (a user's, a post's, a username's, a session's).
    Bucket(Bucket),
    /// Several users' rows in one query: one read for each user's bucket.
    Users(&'a [i64]),
    /// Several posts' rows in one query (raw post ids): one read for each
    /// post's bucket.
    Posts(&'a [i64]),
    /// A shard as such (a scan of every user, the queue's statistics): not counted.
    Shard,
}

/// The per-bucket counters of one process's [`crate::Data`].
pub(crate) struct LoadCounts {
    /// Reads sent, indexed by bucket ([`BUCKETS`] of them).
    reads: Box<[AtomicU64]>,
    /// Writes sent, indexed by bucket ([`BUCKETS`] of them).
    writes: Box<[AtomicU64]>,
}

impl LoadCounts {
    /// Every bucket at zero.
    pub(crate) fn new() -> LoadCounts {
        let table = || (0..BUCKETS).map(|_| AtomicU64::new(0)).collect();
        LoadCounts { reads: table(), writes: table() }
    }

    /// One write of `bucket`'s rows.
    pub(crate) fn wrote(&self, bucket: Bucket) {
        self.writes[usize::from(bucket.get())].fetch_add(1, Ordering::Relaxed);
    }

    /// One read of `bucket`'s rows.
    fn read(&self, bucket: Bucket) {
        self.reads[usize::from(bucket.get())].fetch_add(1, Ordering::Relaxed);
    }

    /// One read query about `of`: one count per bucket it names (per id of a batch).
    pub(crate) fn reads(&self, of: ReadOf<'_>) {
        match of {
            ReadOf::Bucket(bucket) => self.read(bucket),
            ReadOf::Users(ids) => ids.iter().for_each(|id| self.read(user_bucket(*id))),
            ReadOf::Posts(ids) => {
                // The ids came from `PostId`s: none is refused.
                ids.iter().filter_map(|id| PostId::from_i64(*id).ok()).for_each(|p| self.read(p.bucket()))
            }
            ReadOf::Shard => {}
        }
    }

    /// Every bucket with a nonzero count, in bucket order. Each counter is read
    /// on its own (relaxed): counts that grow meanwhile may be seen for some
    /// buckets and not others, which a difference between two samples absorbs.
    pub(crate) fn snapshot(&self) -> Vec<BucketLoad> {
        (0..BUCKETS)
            .filter_map(|bucket| {
                let i = usize::from(bucket);
                let reads = self.reads[i].load(Ordering::Relaxed);
                let writes = self.writes[i].load(Ordering::Relaxed);
                (reads > 0 || writes > 0).then_some(BucketLoad { bucket, reads, writes })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(n: u16) -> Bucket {
        Bucket::new(n).unwrap()
    }

    #[test]
    fn counts_are_per_bucket_reads_and_writes_apart_in_bucket_order_zeros_left_out() {
        let load = LoadCounts::new();
        assert_eq!(load.snapshot(), vec![], "nothing counted yet");
        load.wrote(bucket(4095));
        load.wrote(bucket(4095));
        load.reads(ReadOf::Bucket(bucket(7)));
        load.reads(ReadOf::Bucket(bucket(0)));
        load.wrote(bucket(7));
        load.reads(ReadOf::Shard);
        assert_eq!(
            load.snapshot(),
            vec![
                BucketLoad { bucket: 0, reads: 1, writes: 0 },
                BucketLoad { bucket: 7, reads: 1, writes: 1 },
                BucketLoad { bucket: 4095, reads: 0, writes: 2 },
            ]
        );
    }

    #[test]
    fn a_batch_read_counts_one_read_for_each_ids_bucket() {
        let (ann, bob) = (11_i64, 12_i64);
        let (a, b) = (user_bucket(ann), user_bucket(bob));
        assert_ne!(a, b);
        let load = LoadCounts::new();
        load.reads(ReadOf::Users(&[ann, bob, ann]));
        let posts = [PostId::from_parts(1, b, 0).get(), PostId::from_parts(2, b, 1).get()];
        load.reads(ReadOf::Posts(&posts));
        let reads_of =
            |bucket: Bucket| load.snapshot().iter().find(|l| l.bucket == bucket.get()).map_or(0, |l| l.reads);
        assert_eq!((reads_of(a), reads_of(b)), (2, 3));
        assert_eq!(load.snapshot().len(), 2, "no other bucket");
        assert!(load.snapshot().iter().all(|l| l.writes == 0));
    }

    #[test]
    fn a_report_is_an_array_of_bucket_reads_writes_triples() {
        let report = BucketLoadReport {
            buckets: vec![
                BucketLoad { bucket: 3, reads: 10, writes: 2 },
                BucketLoad { bucket: 4000, reads: 0, writes: 1 },
            ],
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(json, r#"{"buckets":[[3,10,2],[4000,0,1]]}"#);
        assert_eq!(serde_json::from_str::<BucketLoadReport>(&json).unwrap(), report);
    }

    #[test]
    fn counting_from_many_threads_loses_nothing() {
        let load = LoadCounts::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..10_000_u32 {
                        load.wrote(bucket((i % 3) as u16));
                        load.reads(ReadOf::Bucket(bucket(1)));
                    }
                });
            }
        });
        let snapshot = load.snapshot();
        assert_eq!(snapshot.iter().map(|l| l.writes).sum::<u64>(), 40_000);
        assert_eq!(snapshot[1], BucketLoad { bucket: 1, reads: 40_000, writes: 13_332 });
    }
}
