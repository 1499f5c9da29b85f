//! Where each query runs: [`Data`], the handle every query is a method of, and
//! its two paths to a shard.
//!
//! [`Data::write`] runs on the shard's primary; [`Data::read`] on a replica that
//! may serve it (answered its last probe, lag within bound, the scope's
//! read-your-writes floor replayed), else on the primary. Both count, time and
//! count failures of each operation by name and shard ([`Metrics`]), and count
//! it for the buckets whose rows it is about ([`LoadCounts`]: a write by the
//! bucket it is routed by, a read by the [`ReadOf`] it names); the write
//! path also raises the session's floor and asks for a fresh cluster map when a
//! primary seems to have moved. Which servers each shard has is [`cluster`]'s.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use deadpool_postgres::Object;
use sharding::{Bucket, ClusterMap, PostIdGenerator, ShardId, ShardMap};
use tokio_util::sync::CancellationToken;

use crate::cluster;
use crate::config::{ConfigError, DataConfig};
use crate::consistency;
use crate::error::{DataError, QueryError};
use crate::load::{BucketLoad, LoadCounts, ReadOf};
use crate::metrics::{Metrics, ReadTarget};
use crate::rows::{Params, opt_row};

/// Handle to every shard; cheap to clone.
#[derive(Clone)]
pub struct Data {
    /// Everything the handles share; the background tasks hold it weakly.
    inner: Arc<Inner>,
}

/// The state behind every [`Data`] handle of one process.
pub(crate) struct Inner {
    /// Every shard's servers at the epoch in force.
    routes: RwLock<Arc<cluster::Routes>>,
    /// Builds pools for servers a new map names.
    connector: cluster::Connector,
    /// The lag bound, in milliseconds.
    pub(crate) max_lag_ms: u64,
    /// Asks the map follower to fetch the map now (a write met a demoted or
    /// unreachable primary).
    pub(crate) refresh: Arc<tokio::sync::Notify>,
    /// Wakes writes waiting for a newer map (their shard had no reachable
    /// primary), and whoever follows the map's changes ([`Data::newer_cluster_map`]:
    /// a worker starting to claim on a shard the map added).
    installed: tokio::sync::Notify,
    /// How long such a write waits; zero without a map to follow.
    primary_wait: std::time::Duration,
    /// Stops the background tasks when the last handle goes.
    stop: CancellationToken,
    /// Makes this process's post ids.
    post_ids: PostIdGenerator,
    /// Every metric of the data layer (query counts and latency, failures, pools, replicas).
    pub(crate) metrics: Metrics,
    /// Queries sent per bucket, reads and writes apart: what the controller
    /// weighs buckets by to even the shards' load ([`Data::bucket_load`]).
    load: LoadCounts,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Inner {
    /// The routes in force.
    pub(crate) fn routes(&self) -> Arc<cluster::Routes> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Use `map` if it is newer than the view in force.
    pub(crate) fn install(&self, map: &ClusterMap) -> Result<bool, String> {
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if map.epoch <= routes.epoch {
            return Ok(false);
        }
        let next = routes.apply(map, &self.connector)?;
        if next.shards.len() > routes.shards.len() {
            tracing::info!(
                epoch = map.epoch,
                from = routes.shards.len(),
                to = next.shards.len(),
                "the cluster map adds shards"
            );
        }
        *routes = Arc::new(next);
        self.installed.notify_waiters();
        self.metrics.observe_epoch(map.epoch);
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
        let routes = self.inner.routes();
        f.debug_struct("Data").field("epoch", &routes.epoch).field("shards", &routes.shards.len()).finish()
    }
}

impl Data {
    /// Every shard's primary's WAL position now (unmeetable where a primary does
    /// not answer): a read-your-writes floor that covers every write committed
    /// before the call, for a session whose own floor was lost.
    pub async fn current_lsns(&self) -> consistency::Lsns {
        cluster::current_lsns(&self.inner.routes()).await
    }

    /// Build the pools. Connects lazily: a server that is down now is retried per
    /// query. With replicas or a cluster URL, starts the lag monitor and the map
    /// follower (both stop when the last handle is dropped).
    pub fn new(config: &DataConfig, registry: &telemetry::Registry) -> Result<Data, ConfigError> {
        config.validate()?;
        let connector = cluster::Connector::new(config)?;
        let routes = cluster::Routes::from_config(config, &connector)?;
        let cluster_url = config.cluster_url()?;
        let inner = Arc::new(Inner {
            routes: RwLock::new(Arc::new(routes)),
            connector,
            max_lag_ms: config.max_replica_lag_ms,
            refresh: Arc::new(tokio::sync::Notify::new()),
            installed: tokio::sync::Notify::new(),
            primary_wait: if cluster_url.is_some() {
                std::time::Duration::from_millis(config.primary_wait_ms)
            } else {
                std::time::Duration::ZERO
            },
            stop: CancellationToken::new(),
            post_ids: PostIdGenerator::default(),
            metrics: Metrics::new(registry),
            load: LoadCounts::new(),
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

    /// The bucket directory in force (it changes with the cluster map when
    /// buckets move).
    pub fn shard_map(&self) -> Arc<ShardMap> {
        self.inner.routes().directory.clone()
    }

    /// The epoch of the cluster map in force (0: the configuration's own view).
    pub fn cluster_epoch(&self) -> u64 {
        self.inner.routes().epoch
    }

    /// Use `map` if its epoch is larger than the one in force (what the map
    /// follower does with each map it fetches). Returns whether it was used. A
    /// map with fewer shards than the one in force is refused, and so is one with
    /// more but no bucket directory.
    pub fn install_cluster_map(&self, map: &ClusterMap) -> Result<bool, String> {
        self.inner.install(map)
    }

    /// Wait until a cluster map newer than `epoch` is in force (at once if one
    /// already is). How a caller follows the map's changes without polling: read
    /// [`Data::cluster_epoch`] first, then what it needs of the map in force
    /// ([`Data::shard_map`]), then wait here with that epoch.
    pub async fn newer_cluster_map(&self, epoch: u64) {
        loop {
            let installed = self.inner.installed.notified();
            if self.inner.routes().epoch > epoch {
                return;
            }
            installed.await;
        }
    }

    /// How many queries of operation `op` ran, over every shard of the map in
    /// force. Tests use it to prove what the cache saves.
    pub fn query_count(&self, op: &'static str) -> u64 {
        self.inner.metrics.queries_of(op, self.inner.routes().shards.len())
    }

    /// The queries this process sent about each bucket's rows since it started,
    /// reads and writes apart: every bucket with a nonzero count, in bucket
    /// order (what `GET /internal/bucket-load` serves; the crate's `load` module
    /// says what is counted). Cumulative: a rate is the difference of two calls.
    pub fn bucket_load(&self) -> Vec<BucketLoad> {
        self.inner.load.snapshot()
    }

    /// Count one write of `bucket`'s rows by a write routed by shard
    /// ([`Place::Shard`]) that is nevertheless about known buckets (a job's, a
    /// follow's two sides on one shard). A write routed by bucket is counted by
    /// [`Data::write`] itself.
    pub(crate) fn count_write(&self, bucket: Bucket) {
        self.inner.load.wrote(bucket);
    }

    /// How many reads were served by `target`, over every shard of the map in force.
    pub fn reads_on(&self, target: ReadTarget) -> u64 {
        self.inner.metrics.reads_on(target, self.inner.routes().shards.len())
    }

    /// How many writes of `shard` wait for it to have a reachable primary again.
    pub fn writes_waiting_for_primary(&self, shard: ShardId) -> i64 {
        self.inner.metrics.waiting_for_primary.get_or_create(&shard.into()).get()
    }

    /// How many of `shard`'s replicas may serve a read with no floor right now
    /// (none, for a shard the map in force does not have).
    pub fn usable_replicas(&self, shard: ShardId) -> usize {
        let routes = self.inner.routes();
        let Some(route) = routes.shard(shard) else { return 0 };
        route
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
            self.inner.metrics.observe_pool(ShardId(i as u16), primary.pool.status());
        }
    }

    /// Whether every shard answers a trivial query (its primary, or during a
    /// failover one of its replicas).
    pub async fn ping(&self) -> Result<(), DataError> {
        let routes = self.inner.routes();
        let checks = routes.shards.iter().enumerate().map(|(i, route)| {
            let shard = ShardId(i as u16);
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
    pub(crate) fn next_post_id(&self, author: i64) -> i64 {
        self.inner.post_ids.next(author).get()
    }

    /// `shard`'s primary; none while a failover is in progress, or while the map
    /// in force lacks the shard (a newer map added it): both wait for a newer map.
    fn primary_server(&self, shard: ShardId) -> Result<Arc<cluster::Server>, DataError> {
        let server = self.inner.routes().shard(shard).and_then(|route| route.primary.clone());
        server.ok_or_else(|| {
            self.inner.refresh.notify_one();
            DataError::NoPrimary { shard }
        })
    }

    /// A connection to `shard`'s primary. While there is none, or it cannot be
    /// reached (nothing was sent), wait for a newer cluster map — the follower is
    /// asked to fetch one at once — up to the configured wait, then fail with the
    /// last (retryable) error.
    async fn primary_connection(&self, shard: ShardId) -> Result<(Arc<cluster::Server>, Object), DataError> {
        let deadline = Instant::now() + self.inner.primary_wait;
        loop {
            let epoch = self.inner.routes().epoch;
            let attempt = match self.primary_server(shard) {
                Ok(server) => connect(&server, shard).await.map(|client| (server, client)),
                Err(e) => Err(e),
            };
            match attempt {
                Err(e) if e.suggests_failover() && Instant::now() < deadline => {
                    self.inner.refresh.notify_one();
                    let waiting = self.inner.metrics.waiting_for_primary.get_or_create(&shard.into()).clone();
                    waiting.inc();
                    let newer = self.newer_map(epoch, deadline).await;
                    waiting.dec();
                    if !newer {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    /// After a write met a fenced bucket under the map of `epoch`: ask for the
    /// map now and wait for a newer one, or a moment (the move may have been
    /// rolled back, lifting the fence).
    pub(crate) async fn after_fence(&self, epoch: u64) {
        self.inner.metrics.fenced_retries.inc();
        self.inner.refresh.notify_one();
        self.newer_map(epoch, Instant::now() + FENCE_POLL).await;
    }

    /// Wait until a map newer than `epoch` is installed (true) or `deadline` (false).
    async fn newer_map(&self, epoch: u64, deadline: Instant) -> bool {
        loop {
            let installed = self.inner.installed.notified();
            if self.inner.routes().epoch > epoch {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, installed).await.is_err() {
                return self.inner.routes().epoch > epoch;
            }
        }
    }

    /// The one write path: run `f` on the primary of the shard `place` names,
    /// then account for it.
    ///
    /// `f` gets a pooled connection and runs its statements (a transaction if it
    /// needs one), using `?` on the driver's errors; they become
    /// [`DataError::Db`] of the shard here. With [`Lsn::Track`], inside a
    /// [`consistency::scope`], the commit's LSN raises the scope's floor. A
    /// success is counted and timed as `op`, a failure counted as `op`'s error; a
    /// failure that suggests the primary moved (unreachable, read-only) makes the
    /// map follower fetch the map now. The error is retryable and the write is
    /// never retried here once sent; before it is sent, while the shard has no
    /// reachable primary, it waits for the next map ([`Data::primary_connection`]).
    ///
    /// The one exception: a write to a bucket that is being moved is refused by
    /// the source whole, before it changes anything (its transaction aborted), so
    /// it is run again — against the bucket's owner in the newest map, the new
    /// owner once the controller publishes it — for up to [`FENCE_WAIT`].
    ///
    /// A write to [`Place::Bucket`] is counted for its bucket as each attempt
    /// starts ([`Data::bucket_load`]); one to [`Place::Shard`] is not (its
    /// caller counts the buckets it knows, [`Data::count_write`]).
    pub(crate) async fn write<T, F, Fut>(
        &self,
        op: &'static str,
        place: impl Into<Place>,
        lsn: Lsn,
        f: F,
    ) -> Result<T, DataError>
    where
        F: Fn(Object) -> Fut,
        Fut: Future<Output = Result<T, QueryError>>,
    {
        let place = place.into();
        let deadline = Instant::now() + FENCE_WAIT;
        loop {
            let routes = self.inner.routes();
            let shard = place.shard(&routes.directory);
            if let Place::Bucket(bucket) = place {
                self.inner.load.wrote(bucket);
            }
            match self.write_on(op, shard, lsn, &f).await {
                Err(e) if e.is_fenced() && place.follows_moves() && Instant::now() < deadline => {
                    self.after_fence(routes.epoch).await;
                }
                other => return other,
            }
        }
    }

    /// One attempt of [`Data::write`] on `shard`.
    async fn write_on<T, F, Fut>(
        &self,
        op: &'static str,
        shard: ShardId,
        lsn: Lsn,
        f: &F,
    ) -> Result<T, DataError>
    where
        F: Fn(Object) -> Fut,
        Fut: Future<Output = Result<T, QueryError>>,
    {
        let started = Instant::now();
        let result = async {
            let (server, client) = self.primary_connection(shard).await?;
            let out = f(client).await?;
            if lsn == Lsn::Track && consistency::tracking() {
                // After the commit: the insert position covers the commit record
                // even when commits are not flushed at once.
                let client = connect(&server, shard).await?;
                let stmt = client.prepare_cached(LSN_AFTER_WRITE).await?;
                let row = client.query_one(&stmt, &[]).await?;
                consistency::wrote(shard, row.get::<_, i64>(0) as u64);
            }
            Ok(out)
        }
        .await
        .map_err(|e: QueryError| e.on(shard));
        match &result {
            Ok(_) => self.inner.metrics.record(op, shard, started),
            Err(e) => {
                self.inner.metrics.record_error(op, shard);
                if e.suggests_failover() {
                    self.inner.refresh.notify_one();
                }
            }
        }
        result
    }

    /// One write statement on `shard`'s primary, through [`Data::write`]: at most
    /// one row back.
    pub(crate) async fn write_one(
        &self,
        op: &'static str,
        place: impl Into<Place>,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<tokio_postgres::Row>, DataError> {
        self.write(op, place, Lsn::Track, |c| async move { Ok(opt_row(&c, sql, params).await?) }).await
    }

    /// Run a read of `shard` on a replica that may serve it (lag within bound,
    /// the scope's floor replayed), else on the primary. A replica that fails is
    /// marked unusable and the read runs again, once, on the primary. While the
    /// primary is gone or unreachable (a failover), a read that may use replicas
    /// ([`consistency::may_read_replica_without_primary`]: any but a strict
    /// primary-only one) runs on the most advanced replica that replayed the
    /// scope's floor instead of failing. A success is counted and timed as `op`
    /// (and by where it was served), a failure counted as `op`'s error.
    ///
    /// `of` says whose rows it reads: counted once for each bucket it names as
    /// the read starts ([`Data::bucket_load`]), whether it then succeeds or not.
    pub(crate) async fn read<T, F, Fut>(
        &self,
        op: &'static str,
        shard: ShardId,
        of: ReadOf<'_>,
        f: F,
    ) -> Result<T, DataError>
    where
        F: Fn(Object) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        self.inner.load.reads(of);
        let started = Instant::now();
        let run = |server: Arc<cluster::Server>| {
            let f = &f;
            async move { f(connect(&server, shard).await?).await.map_err(DataError::db(shard)) }
        };
        let result = async {
            let routes = self.inner.routes();
            let route = routes.shard(shard);
            // A primary-only read needs no floor (unless its primary is lost, below):
            // a lazy floor is not loaded for it.
            let primary_only = consistency::primary_only();
            let floor = if primary_only { None } else { consistency::floor(shard).await };
            if !primary_only
                && let Some(replica) = route.and_then(|r| r.pick_replica(floor, self.inner.max_lag_ms))
            {
                match run(replica.server.clone()).await {
                    Ok(out) => return Ok((out, ReadTarget::Replica)),
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(error = %e, replica = %replica.server.addr, "replica read failed; reading from the primary");
                        replica.health.usable.store(false, Ordering::Release);
                    }
                    Err(e) => return Err(e),
                }
            }
            let lost = match self.primary_server(shard) {
                Ok(primary) => match run(primary).await {
                    Ok(out) => return Ok((out, ReadTarget::Primary)),
                    Err(e) if e.suggests_failover() => {
                        self.inner.refresh.notify_one();
                        e
                    }
                    Err(e) => return Err(e),
                },
                Err(e) => e,
            };
            let Some(route) = route.filter(|_| consistency::may_read_replica_without_primary()) else {
                return Err(lost);
            };
            if route.most_advanced_replica().is_none() {
                // The monitor may have missed a beat (a probe timed out under load):
                // ask the replicas now rather than refuse.
                cluster::probe_replicas(&self.inner, shard, route).await;
            }
            let Some(replica) = route.most_advanced_replica() else {
                tracing::warn!(shard = shard.0, error = %lost, "primary lost and no replica usable; refusing the read");
                return Err(lost);
            };
            let floor = if primary_only { consistency::floor(shard).await } else { floor };
            if !cluster::replayed(replica, floor, REPLAY_WAIT).await {
                tracing::warn!(shard = shard.0, replica = %replica.server.addr, ?floor, "primary lost and the replica has not replayed the reader's writes; refusing the read");
                return Err(lost);
            }
            tracing::debug!(shard = shard.0, replica = %replica.server.addr, error = %lost, "primary lost; reading from a replica");
            let out = run(replica.server.clone()).await?;
            consistency::served_by_replica_without_primary();
            Ok((out, ReadTarget::ReplicaWhilePrimaryLost))
        }
        .await;
        match result {
            Ok((out, target)) => {
                self.inner.metrics.record_read(op, shard, target, started);
                Ok(out)
            }
            Err(e) => {
                self.inner.metrics.record_error(op, shard);
                Err(e)
            }
        }
    }

    /// A read that must see every committed write: always on the primary.
    pub(crate) async fn read_primary<T, F, Fut>(
        &self,
        op: &'static str,
        shard: ShardId,
        of: ReadOf<'_>,
        f: F,
    ) -> Result<T, DataError>
    where
        F: Fn(Object) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        consistency::primary_reads(self.read(op, shard, of, f)).await
    }
}

/// A pooled connection to `server` of `shard`.
async fn connect(server: &cluster::Server, shard: ShardId) -> Result<Object, DataError> {
    server.pool.get().await.map_err(|source| DataError::Unavailable { shard, source })
}

/// Where a write goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// A shard as such (a job claimed there, a shard's expired sessions): not
    /// re-routed when buckets move.
    Shard(ShardId),
    /// Whichever shard owns the bucket in the map in force: re-routed when the
    /// bucket moves.
    Bucket(Bucket),
}

impl Place {
    /// The place of a user's rows.
    pub(crate) fn user(user_id: i64) -> Place {
        Place::Bucket(sharding::user_bucket(user_id))
    }

    /// The place of a post's rows.
    pub(crate) fn post(post: sharding::PostId) -> Place {
        Place::Bucket(post.bucket())
    }

    fn shard(self, directory: &ShardMap) -> ShardId {
        match self {
            Place::Shard(shard) => shard,
            Place::Bucket(bucket) => directory.shard_of_bucket(bucket),
        }
    }

    fn follows_moves(self) -> bool {
        matches!(self, Place::Bucket(_))
    }
}

impl From<ShardId> for Place {
    fn from(shard: ShardId) -> Place {
        Place::Shard(shard)
    }
}

/// How long a write to a fenced bucket is tried again before its error is
/// returned: longer than a move's cutover takes.
pub(crate) const FENCE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a write to a fenced bucket waits for a newer map before it tries
/// again anyway (the move may have been rolled back, lifting the fence).
const FENCE_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// What a write's commit does to the read-your-writes floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lsn {
    /// Inside a [`consistency::scope`], read the LSN after the commit and raise
    /// the scope's floor to it, so the scope's next reads see the write.
    Track,
    /// Read nothing after the commit: no one reads what the write changed from
    /// a replica, so the round trip would buy nothing.
    Skip,
}

/// How long a read may wait, while its shard's primary is lost, for the most
/// advanced replica to replay the read's floor.
const REPLAY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The WAL insert position as a number (read after a write commits).
const LSN_AFTER_WRITE: &str = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8";
