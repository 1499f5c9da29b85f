//! Rows as the rest of the system sees them.

use serde::{Deserialize, Serialize};

/// A user's public profile, with its denormalized counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user's id; its bucket decides the shard.
    pub user_id: i64,
    /// Normalized (lowercase) unique name.
    pub username: String,
    /// Free-form name shown beside the username.
    pub display_name: String,
    /// What the user says about themselves (at most 300 characters; empty when
    /// none). Defaulted when absent, so profiles cached before it existed still read.
    #[serde(default)]
    pub bio: String,
    /// How many users follow this one.
    pub followers_count: i64,
    /// How many users this one follows.
    pub following_count: i64,
    /// How many posts this user made.
    pub posts_count: i64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// The profile's photo, if any (its thumbnails empty until a worker made
    /// them). Defaulted when absent, so profiles cached before it existed still read.
    #[serde(default)]
    pub avatar: Option<Photo>,
}

/// What logging in needs.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The user's id.
    pub user_id: i64,
    /// The argon2id PHC string.
    pub password_hash: String,
}

/// A live session, as its shard stores it (and caches copy it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Whose session it is.
    pub user_id: i64,
    /// When it ends, in milliseconds since the Unix epoch: a cached copy is
    /// refused past it even if no one removed it.
    pub expires_at_ms: i64,
}

/// A post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostRecord {
    /// Time-ordered id carrying the author's bucket.
    pub post_id: i64,
    /// The author.
    pub user_id: i64,
    /// The caption text.
    pub caption: String,
    /// Denormalized like counter.
    pub like_count: i64,
    /// Denormalized comment counter (the comments are on their commenters' shards).
    #[serde(default)]
    pub comment_count: i64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// `processing` (a photo not yet processed), `ready` or `failed`.
    pub status: String,
    /// The photo, for photo posts.
    pub photo: Option<Photo>,
}

/// A post's photo: the normalized original and, once processed, its thumbnails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Photo {
    /// The original (orientation applied, metadata stripped).
    pub original: StoredImage,
    /// Thumbnails, smallest first; empty until a worker has made them.
    #[serde(default)]
    pub thumbnails: Vec<StoredImage>,
}

/// One image in the object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    /// Content-addressed object key (`<sha256>.<ext>`).
    pub key: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A job claimed from a shard's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The shard whose queue holds it.
    pub shard: sharding::ShardId,
    /// Id within that shard.
    pub job_id: i64,
    /// What to do (`photo`, ...).
    pub kind: String,
    /// The owner of what the job is about.
    pub user_id: i64,
    /// Kind-specific arguments.
    pub payload: serde_json::Value,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// Attempts allowed before the job is dead.
    pub max_attempts: i32,
    /// The request that enqueued it, if a request did: the worker's lines for the
    /// job carry it, so the request's whole path shows in the logs.
    pub request_id: Option<String>,
}

/// A job just enqueued, named so its producer can drop it before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedJob {
    /// The shard whose queue holds it.
    pub shard: sharding::ShardId,
    /// Id within that shard.
    pub job_id: i64,
    /// The owner of what the job is about (the post's author): dropping the job
    /// is counted as a write of this user's bucket ([`crate::Data::bucket_load`]).
    pub user_id: i64,
}

/// A shard queue's state, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Jobs due to run, waiting for a worker (what more workers would take).
    pub ready: i64,
    /// Jobs waiting for a later time: a retry's backoff, or a text post's
    /// outbox job, due 30 s after its post unless its web server drops it first.
    /// No worker can take them yet, so they are not `ready`.
    pub scheduled: i64,
    /// Jobs claimed by a worker.
    pub running: i64,
    /// Dead letters.
    pub dead: i64,
    /// How long the longest-waiting `ready` job has been due, in seconds (0 if
    /// none): the queue's delay, which a job scheduled for later does not have yet.
    pub oldest_ready_secs: f64,
}

/// A dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadJob {
    /// Id within its shard.
    pub job_id: i64,
    /// What it was to do.
    pub kind: String,
    /// Its arguments.
    pub payload: serde_json::Value,
    /// How often it ran.
    pub attempts: i32,
    /// Why it failed the last time.
    pub last_error: Option<String>,
}

/// What a follow or like call did, so callers know whether to invalidate caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The state changed.
    Changed,
    /// The state was already as asked (idempotent repeat).
    Unchanged,
}
