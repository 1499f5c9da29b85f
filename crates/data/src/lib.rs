//! The data layer: the only code that talks to PostgreSQL.
//!
//! A [`Data`] holds one connection pool per shard and a [`ShardMap`]; every query is
//! routed by the `user_id` (or post id) it is about. Operations that touch two users
//! on different shards (follow, unfollow) write each side in its own shard, each side
//! atomic and idempotent, so a retry repairs a half-done call.
#![forbid(unsafe_code)]

pub mod bulk;
mod cluster;
mod config;
pub mod consistency;
mod error;
mod follows;
mod jobs;
mod likes;
mod metrics;
mod migrate;
mod model;
mod posts;
mod route;
mod rows;
mod users;

pub use config::{ConfigError, DataConfig};
pub use consistency::{Lsns, primary_reads};
pub use error::DataError;
pub use jobs::CLAIM_JOBS_SQL;
pub use metrics::ReadTarget;
pub use migrate::migrate;
pub use model::{
    Change, Credentials, DeadJob, Job, Photo, PostRecord, QueueStats, QueuedJob, StoredImage, UserRecord,
};
pub use posts::{FANOUT_DELAY, FANOUT_JOB, FANOUT_MAX_ATTEMPTS, PHOTO_JOB};
pub use route::Data;
pub use sharding::{PostId, ShardId};
