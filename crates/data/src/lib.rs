//! The data layer: the only code that talks to PostgreSQL.
//!
//! A [`Data`] holds one connection pool per shard and a [`ShardMap`]; every query is
//! routed by the `user_id` (or post id) it is about. Operations that touch two users
//! on different shards (follow, unfollow) write each side in its own shard, each side
//! atomic and idempotent, so a retry repairs a half-done call.
#![forbid(unsafe_code)]

mod cluster;
pub mod consistency;
mod error;
mod jobs;
mod model;
mod queries;

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use deadpool_postgres::Object;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use sharding::{ClusterMap, PostIdGenerator, ShardMap};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

pub use consistency::{Lsns, primary_reads};
pub use error::DataError;
pub use jobs::{CLAIM_JOBS_SQL, FANOUT_DELAY, FANOUT_JOB, FANOUT_MAX_ATTEMPTS, PHOTO_JOB};
pub use model::{
    Change, Credentials, DeadJob, Job, Photo, PostRecord, QueueStats, QueuedJob, StoredImage, UserRecord,
};
pub use sharding::{PostId, ShardId};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// How to reach the shards (the `[database]` section of a process's configuration).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// One PostgreSQL connection URL per shard, in shard order: each shard's
    /// (initial) primary. Its user, password and database name are also used for
    /// every server a cluster map names for that shard.
    pub shards: Vec<String>,
    /// Static replica URLs per shard (in shard order; shards may be left out at
    /// the end), for deployments without a controller.
    #[serde(default)]
    pub replicas: Vec<Vec<String>>,
    /// Where the controller publishes the cluster map (`http://.../cluster`); when
    /// set, the map replaces `shards` and `replicas` as soon as it is fetched and
    /// is followed from then on.
    #[serde(default)]
    pub cluster_url: Option<String>,
    /// A replica further behind its primary than this does not serve reads.
    #[serde(default = "default_max_replica_lag_ms")]
    pub max_replica_lag_ms: u64,
    /// Connections per server pool.
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

fn default_max_replica_lag_ms() -> u64 {
    1000
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

/// Where a read was served.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReadTarget {
    /// The shard's primary.
    Primary,
    /// One of its replicas.
    Replica,
}

/// Labels of the read counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    shard: u16,
    target: ReadTarget,
}

/// Labels of a replica's gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    shard: u16,
    replica: String,
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
    /// Reads by shard and where they were served.
    reads: Family<ReadLabels, Counter>,
    /// The cluster map's epoch in force.
    epoch: Gauge,
    /// Each replica's lag at the last probe.
    replica_lag: Family<ReplicaLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Whether each replica may serve reads (answered, lag known).
    replica_usable: Family<ReplicaLabels, Gauge>,
}

impl Metrics {
    fn new(registry: &telemetry::Registry) -> Metrics {
        let m = Metrics {
            queries: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(telemetry::latency_buckets())),
            pool_size: Family::default(),
            pool_available: Family::default(),
            pool_waiting: Family::default(),
            reads: Family::default(),
            epoch: Gauge::default(),
            replica_lag: Family::default(),
            replica_usable: Family::default(),
        };
        registry.register("db_queries", "Queries issued, by operation and shard", m.queries.clone());
        registry.register(
            "db_query_duration_seconds",
            "Query latency by operation and shard",
            m.latency.clone(),
        );
        registry.register("db_pool_connections", "Connections open, by shard", m.pool_size.clone());
        registry.register("db_pool_idle", "Idle connections, by shard", m.pool_available.clone());
        registry.register("db_pool_waiting", "Tasks waiting for a connection", m.pool_waiting.clone());
        registry.register("db_reads", "Reads by shard and target (primary or replica)", m.reads.clone());
        registry.register("db_cluster_epoch", "Epoch of the cluster map in force", m.epoch.clone());
        registry.register(
            "db_replica_lag_seconds",
            "Each replica's lag behind its primary at the last probe",
            m.replica_lag.clone(),
        );
        registry.register(
            "db_replica_usable",
            "1 if the replica answered its last probe and may serve reads",
            m.replica_usable.clone(),
        );
        m
    }

    fn observe_replica(&self, shard: ShardId, addr: &str, lag: Option<Duration>) {
        let l = ReplicaLabels { shard: shard.0, replica: addr.to_string() };
        self.replica_usable.get_or_create(&l).set(i64::from(lag.is_some()));
        if let Some(lag) = lag {
            self.replica_lag.get_or_create(&l).set(lag.as_secs_f64());
        }
    }
}

/// Handle to every shard; cheap to clone.
#[derive(Clone)]
pub struct Data {
    inner: Arc<Inner>,
}

struct Inner {
    /// The current bucket→shard directory; replaced when a newer epoch arrives.
    map: RwLock<Arc<ShardMap>>,
    /// Every shard's servers at the epoch in force.
    routes: RwLock<Arc<cluster::Routes>>,
    /// Builds pools for servers a new map names.
    connector: cluster::Connector,
    /// Per shard, recent samples of the primary's WAL position.
    history: Vec<Mutex<cluster::History>>,
    /// The lag bound, in milliseconds.
    max_lag_ms: u64,
    /// Asks the map follower to fetch the map now (a write met a demoted or
    /// unreachable primary).
    refresh: Arc<tokio::sync::Notify>,
    /// Stops the background tasks when the last handle goes.
    stop: CancellationToken,
    /// Makes this process's post ids.
    post_ids: PostIdGenerator,
    /// Query counters and pool gauges.
    metrics: Metrics,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Inner {
    fn routes(&self) -> Arc<cluster::Routes> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Use `map` if it is newer than the view in force.
    fn install(&self, map: &ClusterMap) -> Result<bool, String> {
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if map.epoch <= routes.epoch {
            return Ok(false);
        }
        let next = routes.apply(map, &self.connector)?;
        *routes = Arc::new(next);
        self.metrics.epoch.set(map.epoch as i64);
        for (i, shard) in routes.shards.iter().enumerate() {
            tracing::info!(
                epoch = map.epoch,
                shard = i,
                primary = shard.primary.as_ref().map_or("none", |p| p.addr.as_str()),
                replicas = shard.replicas.len(),
                "cluster map installed"
            );
        }
        Ok(true)
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Data").field("shards", &self.inner.connector.shards()).finish()
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
    /// A replica URL could not be parsed.
    #[error("database.replicas: shard {shard}, replica {replica}: bad PostgreSQL URL: {message}")]
    BadReplicaUrl {
        /// The shard's position.
        shard: usize,
        /// The replica's position in the shard's list.
        replica: usize,
        /// The parser's complaint.
        message: String,
    },
    /// More replica lists than shards.
    #[error("database.replicas lists {replicas} shards but database.shards only {shards}")]
    TooManyReplicaLists {
        /// Replica lists given.
        replicas: usize,
        /// Shards given.
        shards: usize,
    },
    /// The cluster URL is not an http(s) URL.
    #[error("database.cluster_url: {0}")]
    BadClusterUrl(String),
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
    /// A configuration for these shard URLs, every other setting at its default.
    pub fn new(shards: Vec<String>) -> DataConfig {
        DataConfig {
            shards,
            replicas: Vec::new(),
            cluster_url: None,
            max_replica_lag_ms: default_max_replica_lag_ms(),
            pool_size: default_pool_size(),
            acquire_timeout_ms: default_acquire_timeout_ms(),
        }
    }

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
        cluster::Connector::new(self)?;
        if self.replicas.len() > self.shards.len() {
            return Err(ConfigError::TooManyReplicaLists {
                replicas: self.replicas.len(),
                shards: self.shards.len(),
            });
        }
        for (shard, urls) in self.replicas.iter().enumerate() {
            for (replica, url) in urls.iter().enumerate() {
                tokio_postgres::Config::from_str(url).map_err(|e| ConfigError::BadReplicaUrl {
                    shard,
                    replica,
                    message: e.to_string(),
                })?;
            }
        }
        self.cluster_url()?;
        Ok(())
    }

    fn cluster_url(&self) -> Result<Option<reqwest::Url>, ConfigError> {
        let Some(raw) = &self.cluster_url else { return Ok(None) };
        let url =
            reqwest::Url::parse(raw).map_err(|e| ConfigError::BadClusterUrl(format!("{raw:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ConfigError::BadClusterUrl(format!("{raw:?} is not an http(s) URL with a host")));
        }
        Ok(Some(url))
    }
}

impl Data {
    /// Build the pools. Connects lazily: a server that is down now is retried per
    /// query. With replicas or a cluster URL, starts the lag monitor and the map
    /// follower (both stop when the last handle is dropped).
    pub fn new(config: &DataConfig, registry: &telemetry::Registry) -> Result<Data, ConfigError> {
        config.validate()?;
        let map = ShardMap::even(config.shards.len())
            .map_err(|e| ConfigError::Pool { index: 0, message: e.to_string() })?;
        let connector = cluster::Connector::new(config)?;
        let routes = cluster::Routes::from_config(config, &connector)?;
        let cluster_url = config.cluster_url()?;
        let inner = Arc::new(Inner {
            map: RwLock::new(Arc::new(map)),
            routes: RwLock::new(Arc::new(routes)),
            history: (0..connector.shards()).map(|_| Mutex::default()).collect(),
            connector,
            max_lag_ms: config.max_replica_lag_ms,
            refresh: Arc::new(tokio::sync::Notify::new()),
            stop: CancellationToken::new(),
            post_ids: PostIdGenerator::default(),
            metrics: Metrics::new(registry),
        });
        let has_replicas = config.replicas.iter().any(|r| !r.is_empty());
        if has_replicas || cluster_url.is_some() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let weak = Arc::downgrade(&inner);
                    rt.spawn(cluster::monitor(weak.clone(), inner.stop.clone()));
                    if let Some(url) = cluster_url {
                        rt.spawn(cluster::follow(weak, url, inner.stop.clone()));
                    }
                }
                Err(_) => {
                    tracing::warn!("no async runtime: replicas unused and the cluster map not followed")
                }
            }
        }
        Ok(Data { inner })
    }

    /// The shard map in force.
    pub fn shard_map(&self) -> Arc<ShardMap> {
        self.inner.map.read().expect("shard map lock poisoned").clone()
    }

    /// The epoch of the cluster map in force (0: the configuration's own view).
    pub fn cluster_epoch(&self) -> u64 {
        self.inner.routes().epoch
    }

    /// Use `map` if its epoch is larger than the one in force (what the map
    /// follower does with each map it fetches). Returns whether it was used.
    pub fn install_cluster_map(&self, map: &ClusterMap) -> Result<bool, String> {
        self.inner.install(map)
    }

    /// How many queries of operation `op` ran, over all shards. Tests use it to prove
    /// what the cache saves.
    pub fn query_count(&self, op: &'static str) -> u64 {
        (0..self.inner.connector.shards() as u16)
            .map(|shard| self.inner.metrics.queries.get_or_create(&OpLabels { op, shard }).get())
            .sum()
    }

    /// How many reads were served by `target`, over all shards.
    pub fn reads_on(&self, target: ReadTarget) -> u64 {
        (0..self.inner.connector.shards() as u16)
            .map(|shard| self.inner.metrics.reads.get_or_create(&ReadLabels { shard, target }).get())
            .sum()
    }

    /// How many of `shard`'s replicas may serve a read with no floor right now.
    pub fn usable_replicas(&self, shard: ShardId) -> usize {
        let routes = self.inner.routes();
        routes
            .shard(shard)
            .replicas
            .iter()
            .filter(|r| {
                r.health.usable.load(Ordering::Acquire)
                    && r.health.lag_ms.load(Ordering::Relaxed) <= self.inner.max_lag_ms
            })
            .count()
    }

    /// Refresh the pool gauges (called when metrics are scraped).
    pub fn refresh_pool_metrics(&self) {
        let routes = self.inner.routes();
        for (i, shard) in routes.shards.iter().enumerate() {
            let Some(primary) = &shard.primary else { continue };
            let status = primary.pool.status();
            let l = ShardLabels { shard: i as u16 };
            let m = &self.inner.metrics;
            m.pool_size.get_or_create(&l).set(status.size as i64);
            m.pool_available.get_or_create(&l).set(status.available as i64);
            m.pool_waiting.get_or_create(&l).set(status.waiting as i64);
        }
    }

    /// Whether every shard answers a trivial query (its primary, or during a
    /// failover one of its replicas).
    pub async fn ping(&self) -> Result<(), DataError> {
        let routes = self.inner.routes();
        let checks = self.shard_map().shards().map(|shard| {
            let route = routes.shard(shard);
            let server = route.primary.clone().or_else(|| route.replicas.first().map(|r| r.server.clone()));
            async move {
                let server = server.ok_or(DataError::NoPrimary { shard })?;
                let client = connect(&server, shard).await?;
                client.simple_query("SELECT 1").await.map_err(DataError::db(shard))?;
                Ok::<(), DataError>(())
            }
        });
        futures::future::try_join_all(checks).await.map(|_| ())
    }

    /// A fresh post id for a post by `author`.
    fn next_post_id(&self, author: i64) -> i64 {
        self.inner.post_ids.next(author).get()
    }

    /// `shard`'s primary; none while a failover is in progress.
    fn primary_server(&self, shard: ShardId) -> Result<Arc<cluster::Server>, DataError> {
        let server = self.inner.routes().shard(shard).primary.clone();
        server.ok_or_else(|| {
            self.inner.refresh.notify_one();
            DataError::NoPrimary { shard }
        })
    }

    /// Run a write on `shard`'s primary. Inside a [`consistency::scope`], its
    /// commit LSN raises the scope's floor. A failure that suggests the primary
    /// moved (unreachable, read-only) makes the map follower fetch the map now;
    /// the error is retryable and the write is never retried here.
    pub(crate) async fn write<T, F, Fut>(
        &self,
        op: &'static str,
        shard: ShardId,
        f: F,
    ) -> Result<T, DataError>
    where
        F: FnOnce(Object) -> Fut,
        Fut: Future<Output = Result<T, DataError>>,
    {
        let started = Instant::now();
        let result: Result<T, DataError> = async {
            let server = self.primary_server(shard)?;
            let out = f(connect(&server, shard).await?).await?;
            if consistency::tracking() {
                // After the commit: the insert position covers the commit record
                // even when commits are not flushed at once.
                let client = connect(&server, shard).await?;
                let stmt = client.prepare_cached(LSN_AFTER_WRITE).await.map_err(DataError::db(shard))?;
                let row = client.query_one(&stmt, &[]).await.map_err(DataError::db(shard))?;
                consistency::wrote(shard, row.get::<_, i64>(0) as u64);
            }
            Ok(out)
        }
        .await;
        match &result {
            Ok(_) => self.record(op, shard, started),
            Err(e) if e.suggests_failover() => self.inner.refresh.notify_one(),
            Err(_) => {}
        }
        result
    }

    /// Run a read of `shard` on a replica that may serve it (lag within bound,
    /// the scope's floor replayed), else on the primary. A replica that fails is
    /// marked unusable and the read runs again, once, on the primary.
    pub(crate) async fn read<T, F, Fut>(&self, op: &'static str, shard: ShardId, f: F) -> Result<T, DataError>
    where
        F: Fn(Object) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let started = Instant::now();
        let replica = if consistency::primary_only() {
            None
        } else {
            let routes = self.inner.routes();
            routes.shard(shard).pick_replica(consistency::floor(shard), self.inner.max_lag_ms).cloned()
        };
        if let Some(replica) = replica {
            let attempt =
                async { f(connect(&replica.server, shard).await?).await.map_err(DataError::db(shard)) }.await;
            match attempt {
                Ok(out) => {
                    self.record_read(op, shard, ReadTarget::Replica, started);
                    return Ok(out);
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, replica = %replica.server.addr, "replica read failed; reading from the primary");
                    replica.health.usable.store(false, Ordering::Release);
                }
                Err(e) => return Err(e),
            }
        }
        let client = connect(&*self.primary_server(shard)?, shard).await?;
        let out = f(client).await.map_err(DataError::db(shard))?;
        self.record_read(op, shard, ReadTarget::Primary, started);
        Ok(out)
    }

    /// A read that must see every committed write: always on the primary.
    pub(crate) async fn read_primary<T, F, Fut>(
        &self,
        op: &'static str,
        shard: ShardId,
        f: F,
    ) -> Result<T, DataError>
    where
        F: Fn(Object) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        consistency::primary_reads(self.read(op, shard, f)).await
    }

    fn record_read(&self, op: &'static str, shard: ShardId, target: ReadTarget, started: Instant) {
        self.inner.metrics.reads.get_or_create(&ReadLabels { shard: shard.0, target }).inc();
        self.record(op, shard, started);
    }

    /// Count and time one operation on one shard.
    fn record(&self, op: &'static str, shard: ShardId, started: Instant) {
        let labels = OpLabels { op, shard: shard.0 };
        self.inner.metrics.queries.get_or_create(&labels).inc();
        self.inner.metrics.latency.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    }
}

/// A pooled connection to `server` of `shard`.
async fn connect(server: &cluster::Server, shard: ShardId) -> Result<Object, DataError> {
    server.pool.get().await.map_err(|source| DataError::Unavailable { shard, source })
}

/// The WAL insert position as a number (read after a write commits).
const LSN_AFTER_WRITE: &str = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8";

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
