//! Workers: the consumers of the durable job queue.
//!
//! A [`Worker`] claims jobs from every shard's queue (`FOR UPDATE SKIP LOCKED`, so
//! workers side by side never hold the same job; a shard a newer cluster map adds
//! is claimed from as soon as the map is installed), runs them, and completes them, or
//! fails them: retried with exponential backoff, then dead letters with their reason.
//! A running job's lease is renewed by a heartbeat; a worker that dies loses its
//! leases and its jobs run again elsewhere, and a worker that finds its lease lost
//! stops the job. On shutdown it stops claiming (`/readyz` says "draining"), lets
//! running jobs finish within a grace period, and releases the rest.
#![forbid(unsafe_code)]

mod avatars;
mod comments;
pub mod config;
mod handlers;
mod metrics;
mod notify;
mod post_deleted;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use data::{Data, Job, ShardId};
use settings::Validate as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

pub use config::WorkerConfig;

/// Why a job attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Another attempt may succeed (a dependency was down).
    #[error("{0}")]
    Retry(String),
    /// No attempt will ever succeed (bad input): straight to the dead letters.
    #[error("{0}")]
    Permanent(String),
}

/// What every job handler and the loop share.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    /// The configuration the worker started with.
    config: WorkerConfig,
    /// This worker's name in leases.
    id: String,
    /// The shards.
    data: Data,
    /// Redis (timelines, invalidations).
    redis: cache::Redis,
    /// Home timelines, for fan-out.
    timelines: cache::Timelines,
    /// Cache invalidation (posts, celebrity post lists).
    invalidator: cache::Invalidator,
    /// Photos.
    store: Arc<dyn media::ObjectStore>,
    /// Sends the CDN purges of removed objects (`media.cdn_purge_url`), with a
    /// bounded timeout: a purge that cannot be sent retries its job.
    http: reqwest::Client,
    /// Metrics registry served at `/metrics`.
    registry: telemetry::Registry,
    /// Job counters and queue gauges.
    metrics: metrics::Metrics,
    /// Set on shutdown: `/readyz` fails.
    draining: AtomicBool,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("id", &self.inner.id).finish()
    }
}

impl Context {
    /// The data layer.
    pub fn data(&self) -> &Data {
        &self.inner.data
    }
    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }
    /// The configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.inner.config
    }
}

/// A worker, built and bound, not yet running.
pub struct Worker {
    /// Shared state.
    ctx: Context,
    /// The health and metrics listener.
    listener: TcpListener,
    /// Its address.
    local_addr: SocketAddr,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.ctx.inner.id).field("addr", &self.local_addr).finish()
    }
}

impl Worker {
    /// Validate the configuration, connect, and bind the health listener.
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Worker> {
        config.validate()?;
        let registry = telemetry::Registry::default();
        let data = Data::new(&config.database, &registry)?;
        let redis = cache::Redis::connect_with(&config.redis).await.context("connecting to redis")?;
        let store: Arc<dyn media::ObjectStore> =
            Arc::new(media::LocalStore::open(&config.media.store_dir).context("opening the object store")?);
        let id = config.worker.id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        let metrics = metrics::Metrics::new(&registry);
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let ctx = Context {
            inner: Arc::new(Inner {
                timelines: cache::Timelines::new(redis.clone(), 800, Duration::from_secs(7 * 24 * 3600)),
                invalidator: cache::Invalidator::new(redis.clone()),
                config,
                id,
                data,
                redis,
                store,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .context("building the HTTP client")?,
                registry,
                metrics,
                draining: AtomicBool::new(false),
            }),
        };
        Ok(Worker { ctx, listener, local_addr })
    }

    /// The health and metrics address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared context (tests read it).
    pub fn context(&self) -> Context {
        self.ctx.clone()
    }

    /// Run until `shutdown`; then stop claiming, give running jobs the grace period,
    /// and release what is still running.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let ctx = self.ctx;
        tracing::info!(worker = ctx.id(), addr = %self.local_addr, "worker running");
        // Serves until the jobs are done, so `/readyz` says "draining" meanwhile.
        let health_stop = CancellationToken::new();
        let health = tokio::spawn(metrics::serve(self.listener, ctx.clone(), health_stop.clone()));
        let jobs = TaskTracker::new();
        // Cancelled when the grace period is over: unfinished jobs are released.
        let abandon = CancellationToken::new();
        let permits = Arc::new(Semaphore::new(ctx.config().worker.concurrency));
        // The claim loops, and the task that starts them (one per shard, more as
        // the cluster map adds shards): waited for together at shutdown.
        let loops = TaskTracker::new();
        loops.spawn(claim_every_shard(
            ctx.clone(),
            loops.clone(),
            Claiming { permits, jobs: jobs.clone(), shutdown: shutdown.clone(), abandon: abandon.clone() },
        ));
        loops.close();
        let janitor = tokio::spawn(purge_expired_sessions(ctx.clone(), shutdown.clone()));
        shutdown.cancelled().await;
        ctx.inner.draining.store(true, Ordering::Relaxed);
        loops.wait().await;
        let _ = janitor.await;
        jobs.close();
        let grace = Duration::from_secs(ctx.config().worker.shutdown_grace_secs);
        if tokio::time::timeout(grace, jobs.wait()).await.is_err() {
            tracing::warn!(grace_secs = grace.as_secs(), "grace period over; releasing running jobs");
            abandon.cancel();
            jobs.wait().await;
        }
        health_stop.cancel();
        let _ = health.await;
        tracing::info!(worker = ctx.id(), "worker stopped");
        Ok(())
    }
}

/// How often each shard's expired sessions are deleted, and how many per batch.
const SESSION_PURGE_EVERY: Duration = Duration::from_secs(600);
const SESSION_PURGE_BATCH: i64 = 10_000;

/// Until `shutdown`: every [`SESSION_PURGE_EVERY`] (the first soon after start),
/// delete every shard's expired sessions in batches. Expired rows are already
/// refused when read; this keeps the table to the live ones. Several workers
/// doing it at once is harmless (each batch deletes what is still there).
async fn purge_expired_sessions(ctx: Context, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SESSION_PURGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for shard in ctx.data().shard_map().shards() {
            loop {
                match ctx.data().purge_expired_sessions(shard, SESSION_PURGE_BATCH).await {
                    Ok(n) if n == SESSION_PURGE_BATCH as u64 && !shutdown.is_cancelled() => continue,
                    Ok(0) => break,
                    Ok(n) => {
                        tracing::info!(shard = shard.0, sessions = n, "expired sessions purged");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(shard = shard.0, error = %e, "could not purge expired sessions");
                        break;
                    }
                }
            }
        }
    }
}

/// What every shard's claim loop shares.
#[derive(Clone)]
struct Claiming {
    /// The concurrency limit over every shard's jobs.
    permits: Arc<Semaphore>,
    /// The running jobs, given the grace period at shutdown.
    jobs: TaskTracker,
    /// Stops claiming.
    shutdown: CancellationToken,
    /// Cancelled when the grace period is over: unfinished jobs are released.
    abandon: CancellationToken,
}

/// Until `shutdown`: a [`claim_loop`] for every shard of the cluster map in force,
/// and for every shard a newer map adds (a shard cluster joined the topology) as
/// soon as the data layer installs it. The loops run on `loops`, which this task
/// is on too, so a wait for `loops` covers every loop it started.
async fn claim_every_shard(ctx: Context, loops: TaskTracker, claiming: Claiming) {
    let mut started = 0;
    loop {
        // The epoch before the map: a map installed in between ends the wait below.
        let epoch = ctx.data().cluster_epoch();
        for shard in ctx.data().shard_map().shards().skip(started) {
            if started > 0 {
                tracing::info!(%shard, "claiming jobs on a shard the cluster map added");
            }
            loops.spawn(claim_loop(ctx.clone(), shard, claiming.clone()));
            started += 1;
        }
        tokio::select! {
            _ = claiming.shutdown.cancelled() => return,
            () = ctx.data().newer_cluster_map(epoch) => {}
        }
    }
}

/// Claim and start jobs of one shard while permits are free.
async fn claim_loop(ctx: Context, shard: ShardId, claiming: Claiming) {
    let Claiming { permits, jobs, shutdown, abandon } = claiming;
    let poll = Duration::from_millis(ctx.config().worker.poll_ms);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let claimed = ctx.data().claim_jobs(shard, ctx.id(), 1, ctx.config().lease()).await;
        let job = match claimed {
            Ok(mut jobs) if !jobs.is_empty() => jobs.remove(0),
            Ok(_) => {
                drop(permit);
                // Nothing due: look again shortly (with jitter so workers spread out).
                let wait = poll.mul_f64(rand::random_range(0.75..1.25));
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(wait) => continue }
            }
            Err(e) => {
                drop(permit);
                tracing::warn!(%shard, error = %e, "claiming jobs failed");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(poll * 4) => continue }
            }
        };
        let (ctx, abandon) = (ctx.clone(), abandon.clone());
        jobs.spawn(async move {
            run_job(&ctx, job, abandon).await;
            drop(permit);
        });
    }
}

/// Run one claimed job to an outcome recorded in its queue, in its own span.
async fn run_job(ctx: &Context, job: Job, abandon: CancellationToken) {
    let span = tracing::info_span!(
        "job",
        shard = %job.shard,
        job_id = job.job_id,
        kind = %job.kind,
        attempt = job.attempts,
        request_id = tracing::field::Empty,
    );
    // The request that enqueued it: its id on every line of the job, so that
    // `millions logs --request ID` follows the request into the worker.
    if let Some(id) = &job.request_id {
        span.record("request_id", id.as_str());
    }
    run_job_in_span(ctx, job, abandon).instrument(span).await
}

/// How an attempt ended.
enum Ended {
    /// The handler returned.
    Ran(Result<(), JobError>),
    /// The grace period of a shutdown ran out first.
    Abandoned,
    /// The lease was lost (the heartbeat found another worker holding the job).
    LeaseLost,
}

async fn run_job_in_span(ctx: &Context, job: Job, abandon: CancellationToken) {
    let started = Instant::now();
    let kind = job.kind.clone();
    let work = async {
        if ctx.config().chaos.stall_after_claim {
            tracing::warn!("chaos: stalling after claim");
            std::future::pending::<()>().await;
        }
        execute(ctx, &job).await
    };
    let ended = tokio::select! {
        _ = abandon.cancelled() => Ended::Abandoned,
        () = heartbeat(ctx, &job) => Ended::LeaseLost,
        r = work => Ended::Ran(r),
    };
    let data = ctx.data();
    let result = match ended {
        Ended::LeaseLost => {
            // Whoever holds it now runs it; this attempt's work is dropped (a
            // thumbnail being made finishes, harmlessly: objects are content-addressed).
            tracing::warn!("lease lost while running; stopped, another worker holds the job");
            ctx.inner.metrics.finished(&kind, "lost", started.elapsed());
            return;
        }
        Ended::Abandoned => {
            tracing::info!("released unfinished");
            data.release_job(&job, ctx.id()).await
        }
        Ended::Ran(Ok(())) => {
            ctx.inner.metrics.finished(&kind, "done", started.elapsed());
            data.complete_job(&job, ctx.id()).await
        }
        Ended::Ran(Err(e)) => {
            let permanent = matches!(e, JobError::Permanent(_));
            let dead = permanent || job.attempts >= job.max_attempts;
            let backoff = ctx.config().backoff(job.attempts);
            tracing::warn!(error = %e, dead, "job failed");
            ctx.inner.metrics.finished(&kind, if dead { "dead" } else { "retry" }, started.elapsed());
            let r = data.fail_job(&job, ctx.id(), &e.to_string(), backoff, permanent).await;
            // Only the holder that made it a dead letter settles what it was
            // about: a worker whose lease lapsed must not fail a post another
            // worker may be finishing.
            if dead && matches!(r, Ok(true)) {
                handlers::buried(ctx, &job).await;
            }
            r
        }
    };
    match result {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("lease lost before the outcome was recorded; another worker holds the job")
        }
        Err(e) => {
            tracing::error!(error = %e, "recording the job's outcome failed; it runs again after its lease")
        }
    }
}

/// Renew the job's lease every third of it while it runs; return only when the
/// lease is lost (another worker claimed the job after it lapsed). A renewal that
/// fails (database unreachable) is tried again at the next beat: the lease may
/// still hold, and if it lapses the next renewal says so.
async fn heartbeat(ctx: &Context, job: &Job) {
    let (every, lease) = (ctx.config().heartbeat(), ctx.config().lease());
    loop {
        tokio::time::sleep(every).await;
        match ctx.data().renew_job(job, ctx.id(), lease).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(error = %e, "renewing the job's lease failed"),
        }
    }
}

async fn execute(ctx: &Context, job: &Job) -> Result<(), JobError> {
    if ctx.config().chaos.fail_kinds.contains(&job.kind) {
        return Err(JobError::Retry("chaos: injected failure".into()));
    }
    if job.attempts > job.max_attempts {
        // Claimed again after its lease lapsed more often than it may run.
        return Err(JobError::Permanent(format!(
            "abandoned by workers {} times (lease expired each time)",
            job.attempts - 1
        )));
    }
    match job.kind.as_str() {
        data::PHOTO_JOB => handlers::photo(ctx, job).await,
        data::FANOUT_JOB => handlers::fanout(ctx, job).await,
        data::NOTIFY_JOB => notify::notify(ctx, job).await,
        data::COMMENT_COUNT_JOB => comments::count(ctx, job).await,
        data::POST_DELETED_JOB => post_deleted::clean_up(ctx, job).await,
        data::AVATAR_JOB => avatars::avatar(ctx, job).await,
        other => Err(JobError::Permanent(format!("no handler for job kind {other:?}"))),
    }
}
