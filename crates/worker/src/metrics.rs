//! The worker's `/healthz`, `/readyz`, `/metrics` and `/internal/bucket-load`
//! (the queries its jobs sent about each bucket's rows: [`data::Data::bucket_load`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Context;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    /// The job kind.
    kind: String,
    /// `done`, `retry`, `dead`, or `lost` (the lease was lost while it ran).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    /// The shard.
    shard: u16,
    /// `ready` (due), `scheduled` (due later), `running` or `dead`.
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    /// The shard.
    shard: u16,
}

/// Job counters and queue gauges.
#[derive(Clone)]
pub(crate) struct Metrics {
    /// Attempts finished, by kind and outcome: throughput and failures.
    jobs: Family<JobLabels, Counter>,
    /// Attempt duration by kind and outcome.
    duration: Family<JobLabels, Histogram>,
    /// Jobs per queue state, per shard (refreshed when scraped).
    depth: Family<QueueLabels, Gauge>,
    /// How long the longest-waiting due job has been due, per shard, seconds
    /// (refreshed when scraped).
    oldest: Family<ShardLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Posts fanned out (photo posts, outbox jobs), by mode: `push` or `pull`.
    fanout_posts: Family<ModeLabels, Counter>,
    /// Timelines offered those posts: the authors' readers (or every follower) and the authors.
    fanout_offered: Counter,
    /// Timelines written in this data center's Redis. Write amplification per
    /// post = this ÷ `fanout_posts`.
    fanout_written: Counter,
    /// Pushes that listed every follower (this data center's Redis did not know
    /// the author's readers).
    fanout_full: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    /// `push` (into followers' timelines) or `pull` (a celebrity's post).
    mode: &'static str,
}

impl Metrics {
    pub(crate) fn new(registry: &telemetry::Registry) -> Metrics {
        let m = Metrics {
            jobs: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(telemetry::latency_buckets())),
            depth: Family::default(),
            oldest: Family::default(),
            fanout_posts: Family::default(),
            fanout_offered: Counter::default(),
            fanout_written: Counter::default(),
            fanout_full: Counter::default(),
        };
        // The web servers' names (`feed::METRICS`): one series per process role.
        let [(posts, posts_help), (offered, offered_help), (written, written_help), (full, full_help)] =
            feed::METRICS;
        registry.register(posts, posts_help, m.fanout_posts.clone());
        registry.register(offered, offered_help, m.fanout_offered.clone());
        registry.register(written, written_help, m.fanout_written.clone());
        registry.register(full, full_help, m.fanout_full.clone());
        for mode in ["push", "pull"] {
            let _ = m.fanout_posts.get_or_create(&ModeLabels { mode });
        }
        registry.register("jobs", "Job attempts finished, by kind and outcome", m.jobs.clone());
        registry.register("job_duration_seconds", "Job attempt duration", m.duration.clone());
        registry.register("queue_jobs", "Jobs in the queue, by shard and state", m.depth.clone());
        registry.register(
            "queue_oldest_ready_seconds",
            "How long the longest-waiting due job has been due",
            m.oldest.clone(),
        );
        m
    }

    pub(crate) fn finished(&self, kind: &str, outcome: &'static str, took: Duration) {
        let labels = JobLabels { kind: kind.to_owned(), outcome };
        self.jobs.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Count one post's fan-out.
    pub(crate) fn fanned_out(&self, done: &feed::FanOut) {
        self.fanout_posts.get_or_create(&ModeLabels { mode: done.mode() }).inc();
        self.fanout_offered.inc_by(done.offered() as u64);
        self.fanout_written.inc_by(done.written() as u64);
        if done.full() {
            self.fanout_full.inc();
        }
    }

    async fn refresh(&self, ctx: &Context) {
        for shard in ctx.data().shard_map().shards() {
            match ctx.data().queue_stats(shard).await {
                Ok(s) => {
                    let states = [
                        ("ready", s.ready),
                        ("scheduled", s.scheduled),
                        ("running", s.running),
                        ("dead", s.dead),
                    ];
                    for (state, n) in states {
                        self.depth.get_or_create(&QueueLabels { shard: shard.0, state }).set(n);
                    }
                    self.oldest.get_or_create(&ShardLabels { shard: shard.0 }).set(s.oldest_ready_secs);
                }
                Err(e) => tracing::warn!(%shard, error = %e, "reading queue stats failed"),
            }
        }
    }
}

pub(crate) async fn serve(listener: TcpListener, ctx: Context, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // Internal like the rest (`lb::rules::INTERNAL_PATHS` holds `/internal`).
        .route("/internal/bucket-load", get(bucket_load))
        .with_state(ctx);
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    if let Err(e) = result {
        tracing::error!(error = %e, "health server failed");
    }
}

async fn readyz(State(ctx): State<Context>) -> impl IntoResponse {
    if ctx.inner.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining".to_owned());
    }
    let checks = async {
        ctx.data().ping().await.map_err(|e| e.to_string())?;
        ctx.inner.redis.ping().await.map_err(|e| format!("redis: {e}"))
    };
    match tokio::time::timeout(Duration::from_secs(1), checks).await {
        Ok(Ok(())) => (StatusCode::OK, "ready".to_owned()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, e),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "dependencies did not answer in time".to_owned()),
    }
}

async fn metrics(State(ctx): State<Context>) -> impl IntoResponse {
    ctx.inner.metrics.refresh(&ctx).await;
    ctx.data().refresh_pool_metrics();
    ([(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)], ctx.inner.registry.render())
}

/// `{"buckets": [[bucket, reads, writes], ...]}`: the queries this worker sent
/// about each bucket's rows since it started — its jobs' reads and writes, their
/// claims, completions, renewals and failures counted for each job's user's
/// bucket — every bucket with a nonzero count, in bucket order. What the
/// controller weighs buckets by (`millions shard rebalance --by load`), with the
/// web servers'.
async fn bucket_load(State(ctx): State<Context>) -> axum::Json<data::BucketLoadReport> {
    axum::Json(data::BucketLoadReport { buckets: ctx.data().bucket_load() })
}
