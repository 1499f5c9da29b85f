//! Workers: the consumers of the durable job queue.
//!
//! A [`Worker`] claims jobs from every shard's queue (`FOR UPDATE SKIP LOCKED`, so
//! workers side by side never hold the same job), runs them, and completes them, or
//! fails them: retried with exponential backoff, then dead letters with their reason.
//! A worker that dies loses its leases; its jobs run again elsewhere. On shutdown it
//! stops claiming, lets running jobs finish within a grace period, and releases
//! the rest.
#![forbid(unsafe_code)]

pub mod config;
mod handlers;
mod metrics;

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
        let health = tokio::spawn(metrics::serve(self.listener, ctx.clone(), shutdown.clone()));
        let jobs = TaskTracker::new();
        // Cancelled when the grace period is over: unfinished jobs are released.
        let abandon = CancellationToken::new();
        let permits = Arc::new(Semaphore::new(ctx.config().worker.concurrency));
        let loops: Vec<_> = ctx
            .data()
            .shard_map()
            .shards()
            .map(|shard| {
                tokio::spawn(claim_loop(
                    ctx.clone(),
                    shard,
                    permits.clone(),
                    jobs.clone(),
                    shutdown.clone(),
                    abandon.clone(),
                ))
            })
            .collect();
        shutdown.cancelled().await;
        ctx.inner.draining.store(true, Ordering::Relaxed);
        for l in loops {
            let _ = l.await;
        }
        jobs.close();
        let grace = Duration::from_secs(ctx.config().worker.shutdown_grace_secs);
        if tokio::time::timeout(grace, jobs.wait()).await.is_err() {
            tracing::warn!(grace_secs = grace.as_secs(), "grace period over; releasing running jobs");
            abandon.cancel();
            jobs.wait().await;
        }
        let _ = health.await;
        tracing::info!(worker = ctx.id(), "worker stopped");
        Ok(())
    }
}

/// Claim and start jobs of one shard while permits are free.
async fn claim_loop(
    ctx: Context,
    shard: ShardId,
    permits: Arc<Semaphore>,
    jobs: TaskTracker,
    shutdown: CancellationToken,
    abandon: CancellationToken,
) {
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

/// Run one claimed job to an outcome recorded in its queue.
async fn run_job(ctx: &Context, job: Job, abandon: CancellationToken) {
    let started = Instant::now();
    let kind = job.kind.clone();
    let span = tracing::info_span!("job", shard = %job.shard, job_id = job.job_id, kind = %kind, attempt = job.attempts);
    let _enter = span.enter();
    if ctx.config().chaos.stall_after_claim {
        tracing::warn!("chaos: stalling after claim");
        abandon.cancelled().await;
    }
    let outcome = tokio::select! {
        _ = abandon.cancelled() => None,
        r = execute(ctx, &job) => Some(r),
    };
    let data = ctx.data();
    let result = match outcome {
        None => {
            tracing::info!("released unfinished");
            data.release_job(&job, ctx.id()).await
        }
        Some(Ok(())) => {
            ctx.inner.metrics.finished(&kind, "done", started.elapsed());
            data.complete_job(&job, ctx.id()).await
        }
        Some(Err(e)) => {
            let permanent = matches!(e, JobError::Permanent(_));
            let dead = permanent || job.attempts >= job.max_attempts;
            let backoff = ctx.config().backoff(job.attempts);
            tracing::warn!(error = %e, dead, "job failed");
            ctx.inner.metrics.finished(&kind, if dead { "dead" } else { "retry" }, started.elapsed());
            let r = data.fail_job(&job, ctx.id(), &e.to_string(), backoff, permanent).await;
            if dead {
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
        other => Err(JobError::Permanent(format!("no handler for job kind {other:?}"))),
    }
}
