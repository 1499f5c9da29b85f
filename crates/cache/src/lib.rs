//! The cache tier.
//!
//! - [`ReadThrough`]: a typed read-through cache, L1 in process (quick_cache,
//!   CLOCK-Pro eviction, a TTL per entry) over L2 in Redis, with TTL jitter and one load per key at a time.
//! - [`Invalidator`]: a write deletes the Redis entry and publishes the key; every
//!   process's listener evicts it from its L1.
//! - [`Timelines`]: home timelines as capped sorted sets in Redis.
//! - [`active`]: daily, weekly and monthly active users in HyperLogLogs, noted
//!   in memory, sent once a second, counted as a union over every data center.
//!
//! With several data centers, each has its own Redis, and a process knows the
//! others' as *peers*: invalidations and timeline writes go to every one of them
//! at once ([`Redis::run_everywhere`]); reads, fills and sessions stay local
//! (ADR 0008).
//!
//! Redis is a cache here, not a store of record: when it fails, reads fall through
//! to the loader and the error is counted and logged.
#![forbid(unsafe_code)]

pub mod active;
mod invalidation;
mod read_through;
mod redis_handle;
pub mod timeline;

pub use invalidation::{Invalidator, LocalEvict, spawn_listener};
pub use read_through::{CacheConfig, CacheMetrics, Loaded, LoadedMany, ReadThrough};
pub use redis_handle::{DEFAULT_PREFIX, Redis, RedisConfig, RedisError, SpreadError};
pub use timeline::{PushError, Pushed, Timelines};
