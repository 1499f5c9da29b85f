//! The data layer's metrics: queries by operation and shard, pool gauges, where
//! reads were served, the cluster map's epoch and each replica's lag.
//!
//! [`Metrics`] registers them once per [`crate::Data`] and is the only code that
//! updates them: the read and write paths call [`Metrics::record`] and
//! [`Metrics::record_read`], the lag monitor [`Metrics::observe_replica`].

use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use sharding::ShardId;

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
pub(crate) struct ShardLabels {
    /// The shard.
    shard: u16,
}

impl From<ShardId> for ShardLabels {
    fn from(shard: ShardId) -> ShardLabels {
        ShardLabels { shard: shard.0 }
    }
}

/// Where a read was served.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReadTarget {
    /// The shard's primary.
    Primary,
    /// One of its replicas.
    Replica,
    /// One of its replicas, because the primary was gone or unreachable (a
    /// failover): the most advanced replica that replayed the read's floor, its
    /// lag not bounded.
    ReplicaWhilePrimaryLost,
}

/// Labels of the read counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    /// The shard read.
    shard: u16,
    /// Where the read was served.
    target: ReadTarget,
}

/// Labels of a replica's gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    /// The replica's shard.
    shard: u16,
    /// The replica's `host:port`.
    replica: String,
}

/// The data layer's metrics.
#[derive(Clone)]
pub(crate) struct Metrics {
    /// Queries issued, by operation and shard: what the cache saves is read here.
    queries: Family<OpLabels, Counter>,
    /// Query latency, by operation and shard.
    latency: Family<OpLabels, Histogram>,
    /// Operations that failed, by operation and shard (`queries` and `latency`
    /// count and time those that succeeded).
    errors: Family<OpLabels, Counter>,
    /// Connections open per shard pool.
    pool_size: Family<ShardLabels, Gauge>,
    /// Idle connections per shard pool.
    pool_available: Family<ShardLabels, Gauge>,
    /// Writes waiting for their shard to have a reachable primary (a failover or
    /// switchover under way), per shard.
    pub(crate) waiting_for_primary: Family<ShardLabels, Gauge>,
    /// Tasks waiting for a connection per shard pool.
    pool_waiting: Family<ShardLabels, Gauge>,
    /// Writes refused by a fenced bucket (a move's cutover) and run again: how
    /// often moves made writes wait.
    pub(crate) fenced_retries: Counter,
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
    /// The metrics, registered in `registry`.
    pub(crate) fn new(registry: &telemetry::Registry) -> Metrics {
        let m = Metrics {
            queries: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(telemetry::latency_buckets())),
            errors: Family::default(),
            pool_size: Family::default(),
            pool_available: Family::default(),
            pool_waiting: Family::default(),
            waiting_for_primary: Family::default(),
            fenced_retries: Counter::default(),
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
        registry.register("db_query_errors", "Failed operations, by operation and shard", m.errors.clone());
        registry.register("db_pool_connections", "Connections open, by shard", m.pool_size.clone());
        registry.register("db_pool_idle", "Idle connections, by shard", m.pool_available.clone());
        registry.register("db_pool_waiting", "Tasks waiting for a connection", m.pool_waiting.clone());
        registry.register(
            "db_writes_waiting_for_primary",
            "Writes waiting for their shard to have a reachable primary again, by shard",
            m.waiting_for_primary.clone(),
        );
        registry.register(
            "db_writes_fenced_retries",
            "Writes refused by a bucket being moved (its cutover), run again",
            m.fenced_retries.clone(),
        );
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

    /// What the lag monitor learned about a replica: its lag, or `None` if it
    /// may not serve reads.
    pub(crate) fn observe_replica(&self, shard: ShardId, addr: &str, lag: Option<Duration>) {
        let l = ReplicaLabels { shard: shard.0, replica: addr.to_string() };
        self.replica_usable.get_or_create(&l).set(i64::from(lag.is_some()));
        if let Some(lag) = lag {
            self.replica_lag.get_or_create(&l).set(lag.as_secs_f64());
        }
    }

    /// Count and time one operation on one shard.
    pub(crate) fn record(&self, op: &'static str, shard: ShardId, started: Instant) {
        let labels = OpLabels { op, shard: shard.0 };
        self.queries.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    }

    /// Count one failed operation on one shard.
    pub(crate) fn record_error(&self, op: &'static str, shard: ShardId) {
        self.errors.get_or_create(&OpLabels { op, shard: shard.0 }).inc();
    }

    /// Count and time one read, and where it was served.
    pub(crate) fn record_read(&self, op: &'static str, shard: ShardId, target: ReadTarget, started: Instant) {
        self.reads.get_or_create(&ReadLabels { shard: shard.0, target }).inc();
        self.record(op, shard, started);
    }

    /// How many queries of operation `op` ran on the first `shards` shards.
    pub(crate) fn queries_of(&self, op: &'static str, shards: usize) -> u64 {
        (0..shards as u16).map(|shard| self.queries.get_or_create(&OpLabels { op, shard }).get()).sum()
    }

    /// How many reads `target` served on the first `shards` shards.
    pub(crate) fn reads_on(&self, target: ReadTarget, shards: usize) -> u64 {
        (0..shards as u16).map(|shard| self.reads.get_or_create(&ReadLabels { shard, target }).get()).sum()
    }

    /// A shard primary pool's state, when metrics are scraped.
    pub(crate) fn observe_pool(&self, shard: ShardId, status: deadpool_postgres::Status) {
        let l = ShardLabels { shard: shard.0 };
        self.pool_size.get_or_create(&l).set(status.size as i64);
        self.pool_available.get_or_create(&l).set(status.available as i64);
        self.pool_waiting.get_or_create(&l).set(status.waiting as i64);
    }

    /// The cluster map in force changed.
    pub(crate) fn observe_epoch(&self, epoch: u64) {
        self.epoch.set(epoch as i64);
    }
}
