//! The data layer: the only code that talks to PostgreSQL.
//!
//! A [`Data`] holds one connection pool per shard and a [`ShardMap`]; every query is
//! routed by the `user_id` (or post id) it is about. Operations that touch two users
//! on different shards (follow, unfollow) write each side in its own shard, each side
//! atomic and idempotent, so a retry repairs a half-done call.
#![forbid(unsafe_code)]

mod error;
mod jobs;
mod model;
mod queries;

use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use sharding::{PostIdGenerator, ShardMap};
use tokio_postgres::NoTls;

pub use error::DataError;
pub use jobs::PHOTO_JOB;
pub use model::{Change, Credentials, DeadJob, Job, Photo, PostRecord, QueueStats, StoredImage, UserRecord};
pub use sharding::{PostId, ShardId};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// How to reach the shards (the `[database]` section of a process's configuration).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// One PostgreSQL connection URL per shard, in shard order.
    pub shards: Vec<String>,
    /// Connections per shard pool.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long a query waits for a pooled connection (or a new one) before
    /// failing, in milliseconds.
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
}

fn default_pool_size() -> usize {
    16
}

fn default_acquire_timeout_ms() -> u64 {
    2000
}

/// Labels of one data-layer operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    /// The operation's name (`profile_by_id`, `create_post`, ...).
    op: &'static str,
    /// The shard it ran on.
    shard: u16,
}

/// Labels of a shard's pool gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    /// The shard.
    shard: u16,
}

/// The data layer's metrics.
#[derive(Clone)]
struct Metrics {
    /// Queries issued, by operation and shard: what the cache saves is read here.
    queries: Family<OpLabels, Counter>,
    /// Query latency, by operation and shard.
    latency: Family<OpLabels, Histogram>,
    /// Connections open per shard pool.
    pool_size: Family<ShardLabels, Gauge>,
    /// Idle connections per shard pool.
    pool_available: Family<ShardLabels, Gauge>,
    /// Tasks waiting for a connection per shard pool.
    pool_waiting: Family<ShardLabels, Gauge>,
}

/// Handle to every shard; cheap to clone.
#[derive(Clone)]
pub struct Data {
    inner: Arc<Inner>,
}

struct Inner {
    /// The current bucket→shard directory; replaced when a newer epoch arrives.
    map: RwLock<Arc<ShardMap>>,
    /// One pool per shard, indexed by `ShardId`.
    pools: Vec<Pool>,
    /// Makes this process's post ids.
    post_ids: PostIdGenerator,
    /// Query counters and pool gauges.
    metrics: Metrics,
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Data").field("shards", &self.inner.pools.len()).finish()
    }
}

/// A configuration the data layer cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No shard was given.
    #[error("at least one shard URL is needed")]
    NoShards,
    /// A URL could not be parsed.
    #[error("shard {index}: bad PostgreSQL URL: {message}")]
    BadUrl {
        /// The shard's position in the list.
        index: usize,
        /// The parser's complaint.
        message: String,
    },
    /// The pool size is zero.
    #[error("pool_size must be at least 1")]
    EmptyPool,
    /// Building a pool failed.
    #[error("shard {index}: {message}")]
    Pool {
        /// The shard's position in the list.
        index: usize,
        /// What went wrong.
        message: String,
    },
}

impl DataConfig {
    /// How long a query waits for a connection.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }

    /// Check the configuration without connecting anywhere.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.shards.is_empty() {
            return Err(ConfigError::NoShards);
        }
        if self.pool_size == 0 {
            return Err(ConfigError::EmptyPool);
        }
        if self.acquire_timeout_ms == 0 {
            return Err(ConfigError::Pool {
                index: 0,
                message: "acquire_timeout_ms must be positive".into(),
            });
        }
        for (index, url) in self.shards.iter().enumerate() {
            tokio_postgres::Config::from_str(url)
                .map_err(|e| ConfigError::BadUrl { index, message: e.to_string() })?;
        }
        Ok(())
    }
}

impl Data {
    /// Build the pools. Connects lazily: a shard that is down now is retried per query.
    pub fn new(config: &DataConfig, registry: &telemetry::Registry) -> Result<Data, ConfigError> {
        config.validate()?;
        let map = ShardMap::even(config.shards.len())
            .map_err(|e| ConfigError::Pool { index: 0, message: e.to_string() })?;
        let mut pools = Vec::with_capacity(config.shards.len());
        for (index, url) in config.shards.iter().enumerate() {
            let mut pg = tokio_postgres::Config::from_str(url)
                .map_err(|e| ConfigError::BadUrl { index, message: e.to_string() })?;
            if pg.get_connect_timeout().is_none() {
                pg.connect_timeout(config.acquire_timeout());
            }
            if pg.get_application_name().is_none() {
                pg.application_name("millions");
            }
            let manager =
                Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
            let pool = Pool::builder(manager)
                .max_size(config.pool_size)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(config.acquire_timeout()))
                .create_timeout(Some(config.acquire_timeout()))
                .recycle_timeout(Some(config.acquire_timeout()))
                .build()
                .map_err(|e| ConfigError::Pool { index, message: e.to_string() })?;
            pools.push(pool);
        }
        let metrics = Metrics {
            queries: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(telemetry::latency_buckets())),
            pool_size: Family::default(),
            pool_available: Family::default(),
            pool_waiting: Family::default(),
        };
        registry.register("db_queries", "Queries issued, by operation and shard", metrics.queries.clone());
        registry.register(
            "db_query_duration_seconds",
            "Query latency by operation and shard",
            metrics.latency.clone(),
        );
        registry.register("db_pool_connections", "Connections open, by shard", metrics.pool_size.clone());
        registry.register("db_pool_idle", "Idle connections, by shard", metrics.pool_available.clone());
        registry.register("db_pool_waiting", "Tasks waiting for a connection", metrics.pool_waiting.clone());
        Ok(Data {
            inner: Arc::new(Inner {
                map: RwLock::new(Arc::new(map)),
                pools,
                post_ids: PostIdGenerator::default(),
                metrics,
            }),
        })
    }

    /// The shard map in force.
    pub fn shard_map(&self) -> Arc<ShardMap> {
        self.inner.map.read().expect("shard map lock poisoned").clone()
    }

    /// How many queries of operation `op` ran, over all shards. Tests use it to prove
    /// what the cache saves.
    pub fn query_count(&self, op: &'static str) -> u64 {
        (0..self.inner.pools.len() as u16)
            .map(|shard| self.inner.metrics.queries.get_or_create(&OpLabels { op, shard }).get())
            .sum()
    }

    /// Refresh the pool gauges (called when metrics are scraped).
    pub fn refresh_pool_metrics(&self) {
        for (i, pool) in self.inner.pools.iter().enumerate() {
            let status = pool.status();
            let l = ShardLabels { shard: i as u16 };
            let m = &self.inner.metrics;
            m.pool_size.get_or_create(&l).set(status.size as i64);
            m.pool_available.get_or_create(&l).set(status.available as i64);
            m.pool_waiting.get_or_create(&l).set(status.waiting as i64);
        }
    }

    /// Whether every shard answers a trivial query.
    pub async fn ping(&self) -> Result<(), DataError> {
        let checks = self.shard_map().shards().map(|shard| async move {
            let client = self.client(shard).await?;
            client.simple_query("SELECT 1").await.map_err(DataError::db(shard))?;
            Ok::<(), DataError>(())
        });
        futures::future::try_join_all(checks).await.map(|_| ())
    }

    /// A fresh post id for a post by `author`.
    fn next_post_id(&self, author: i64) -> i64 {
        self.inner.post_ids.next(author).get()
    }

    /// A pooled connection to `shard`.
    async fn client(&self, shard: ShardId) -> Result<Object, DataError> {
        self.inner.pools[shard.0 as usize]
            .get()
            .await
            .map_err(|source| DataError::Unavailable { shard, source })
    }

    /// Count and time one operation on one shard.
    fn record(&self, op: &'static str, shard: ShardId, started: Instant) {
        let labels = OpLabels { op, shard: shard.0 };
        self.inner.metrics.queries.get_or_create(&labels).inc();
        self.inner.metrics.latency.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    }
}

/// Bring every shard's schema to the newest version.
///
/// Safe to run from several processes at once: each shard migrates under an
/// advisory lock.
pub async fn migrate(shard_urls: &[String]) -> Result<(), DataError> {
    const LOCK_KEY: i64 = 0x6d69_6c6c_696f_6e73; // "millions"
    for (i, url) in shard_urls.iter().enumerate() {
        let shard = ShardId(i as u16);
        let (mut client, conn) = tokio_postgres::connect(url, NoTls).await.map_err(DataError::db(shard))?;
        let conn = tokio::spawn(conn);
        client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY]).await.map_err(DataError::db(shard))?;
        let result = embedded::migrations::runner().run_async(&mut client).await;
        let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await;
        drop(client);
        let _ = conn.await;
        result.map_err(|e| DataError::Migration { shard, message: e.to_string() })?;
    }
    Ok(())
}
