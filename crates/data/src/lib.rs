//! The data layer: the only code that talks to PostgreSQL.
//!
//! A [`Data`] holds one connection pool per server of every shard and a
//! [`ShardMap`](sharding::ShardMap); every query is a method of `Data`, routed by
//! the `user_id` (or post id) it is about. Operations that touch two users on
//! different shards (follow, unfollow) write each side in its own shard, each side
//! atomic and idempotent, so a retry repairs a half-done call.
//!
//! This file only declares the modules and re-exports what callers use:
//! - `config`: [`DataConfig`] (the `[database]` section), its defaults and
//!   validation, [`ConfigError`].
//! - `route`: [`Data`] itself and the two paths every query takes — `write` (the
//!   shard's primary; counts, times and counts failures of the operation, raises
//!   the session's read-your-writes floor, maps errors, asks for a fresh cluster
//!   map when the primary seems to have moved) and `read` (a replica that may
//!   serve it, else the primary).
//! - `cluster`: each shard's servers at an epoch, the lag monitor, the cluster
//!   map follower, the replica choice.
//! - [`consistency`]: read-your-writes scopes.
//! - `load`: the queries sent per bucket, reads and writes apart
//!   ([`Data::bucket_load`], [`BucketLoad`]): what the controller weighs buckets
//!   by to even the shards' load.
//! - `metrics`: the data layer's Prometheus metrics.
//! - `migrate`: the embedded migrations ([`migrate()`]).
//! - the queries, by entity: `users`, `sessions` (the store of record of who is
//!   logged in, routed by the bucket a token carries), `follows`, `likes`, `posts` (every post
//!   write, with the jobs written with a post), `comments` (each on its
//!   commenter's shard, counted on its post's), `post_deletion` (a post and what
//!   hangs on it), `jobs` (the queue: enqueue, claim,
//!   complete, renew, fail, release, stats, dead letters, dropping a queued job);
//!   below them `rows`, the statement helpers they share.
//! - `notifications`: a user's notifications (delivered by a worker, idempotently;
//!   paged; the unread count; marking read) and the `notify` job's payload
//!   ([`Notify`]) that follows, likes and comments enqueue with their rows.
//! - `directory`: finding people and photos — a name prefix's users from every
//!   shard (bounded index range scans), friends of friends, popular accounts,
//!   recent popular photo posts (ADR 0023).
//! - [`moves`]: the steps of moving buckets between shards under writes
//!   (capture, copy, catch-up, fence, jobs, drop), which the controller runs.
//! - [`bulk`]: the schema's columns, for bulk loaders (the seed's `COPY`s).
//! - `model` (the rows as the rest of the system sees them) and `error`
//!   ([`DataError`]).
#![forbid(unsafe_code)]

mod avatars;
pub mod bulk;
mod cluster;
mod comments;
mod config;
pub mod consistency;
mod directory;
mod error;
mod follows;
mod jobs;
mod liked;
mod likes;
mod load;
mod metrics;
mod migrate;
mod model;
pub mod moves;
mod notifications;
mod post_deletion;
mod posts;
mod route;
mod rows;
mod sessions;
mod users;

pub use avatars::{AVATAR_JOB, AvatarJob};
pub use comments::{
    COMMENT_COUNT_DELAY, COMMENT_COUNT_JOB, COMMENT_COUNT_MAX_ATTEMPTS, CommentCount, CommentRecord,
    DeleteRefusal, DeletedComment, MAX_COMMENT_CHARS, NewComment,
};
pub use config::{ConfigError, DataConfig};
pub use consistency::{Lsns, Served, fill_reads, primary_reads};
pub use directory::{DirectoryEntry, Ranked, prefix_end};
pub use error::DataError;
pub use follows::{EdgeCursor, FollowEdge};
pub use jobs::CLAIM_JOBS_SQL;
pub use load::{BucketLoad, BucketLoadReport};
pub use metrics::ReadTarget;
pub use migrate::migrate;
pub use model::{
    Change, Credentials, DeadJob, Job, Photo, PostRecord, QueueStats, QueuedJob, SessionRecord, StoredImage,
    UserRecord,
};
pub use notifications::{
    NOTIFY_JOB, NOTIFY_MAX_ATTEMPTS, NotificationKind, NotificationRecord, Notify, UNREAD_CACHE, UNREAD_CAP,
};
pub use post_deletion::{DeletedPost, POST_DELETED_JOB, POST_DELETED_MAX_ATTEMPTS, PostDeleted};
pub use posts::{FANOUT_DELAY, FANOUT_JOB, FANOUT_MAX_ATTEMPTS, PHOTO_JOB};
pub use route::Data;
pub use sharding::{PostId, ShardId};
