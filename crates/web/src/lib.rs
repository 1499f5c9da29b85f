//! The stateless web tier: the JSON API under `/api/v1`, the HTML pages, and the
//! health, readiness and metrics endpoints.
//!
//! Any server serves any request: sessions, caches and timelines live in the shared
//! Redis and the data in the shards, never in the process (the L1 cache only holds
//! copies, invalidated through Redis pub/sub).
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod avatars;
pub mod body;
pub mod bucket_load;
pub mod client;
pub mod comments;
pub mod config;
pub mod directory;
pub mod edges;
pub mod error;
pub mod hotkeys;
pub mod html;
pub mod media;
pub mod notifications;
pub mod observe;
pub mod people;
pub mod post_deletion;
pub mod service;
pub mod sessions;
pub mod state;
pub mod viewer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use settings::Validate as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::WebConfig;
pub use state::AppState;

/// A web server, built and bound, not yet serving.
pub struct Application {
    /// The bound listener (bound in `build`, so the port is known before serving).
    listener: TcpListener,
    /// The address actually bound.
    local_addr: SocketAddr,
    /// Shared state, exposed for tests.
    state: AppState,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("local_addr", &self.local_addr).finish()
    }
}

impl Application {
    /// Validate the configuration, connect to Redis, build the shard pools and bind
    /// the listener. A bad configuration fails here, before any port is bound.
    pub async fn build(config: WebConfig) -> anyhow::Result<Application> {
        config.validate()?;
        let registry = telemetry::Registry::default();
        let data = data::Data::new(&config.database, &registry)?;
        let redis = cache::Redis::connect_with(&config.redis).await.context("connecting to redis")?;
        let listen = config.listen;
        let state = AppState::new(config, data, redis, registry)?;
        let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
        let local_addr = listener.local_addr()?;
        Ok(Application { listener, local_addr, state })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared state (tests read counters through it).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serve until `shutdown` is cancelled, then stop accepting, fail readiness, and
    /// give in-flight requests the configured grace period to finish.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let state = self.state.clone();
        let subscribed = Arc::new(tokio::sync::Notify::new());
        let listener_task =
            cache::spawn_listener(state.caches().invalidator.clone(), shutdown.child_token(), subscribed);
        // The signed-in users served, into the DC's HyperLogLogs once a second.
        let active_task = state.active_users().clone().spawn(Duration::from_secs(1), shutdown.child_token());
        // The CDN edges' health, probed until shutdown (photo URLs name the healthy).
        let probe_task = state.edges().clone().spawn(shutdown.child_token());
        // The hottest keys counted, and their copies refreshed, every tick.
        let hot_task = hotkeys::spawn(state.clone(), shutdown.child_token());
        let grace = Duration::from_secs(state.config().http.shutdown_grace_secs);
        let app = router(state.clone());
        tracing::info!(addr = %self.local_addr, "web server listening");
        let drain = {
            let shutdown = shutdown.clone();
            let state = state.clone();
            async move {
                shutdown.cancelled().await;
                state.start_draining();
                tracing::info!("shutting down: draining in-flight requests");
            }
        };
        let server = axum::serve(self.listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(drain);
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            result = &mut server => result?,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "grace period over; closing remaining connections");
            }
        }
        listener_task.abort();
        // Its last flush, bounded by Redis' timeout.
        let _ = active_task.await;
        let _ = probe_task.await;
        let _ = hot_task.await;
        tracing::info!("web server stopped");
        Ok(())
    }
}

/// The whole HTTP surface of a web server.
pub fn router(state: AppState) -> Router {
    let upload_limit = body::upload_body_limit(&state);
    let http = &state.config().http;
    let body_limit = http.max_body_bytes;
    let timeout = Duration::from_secs(http.request_timeout_secs);
    Router::new()
        .nest("/api/v1", api::routes(upload_limit))
        .route("/media/{key}", axum::routing::get(media::serve))
        .merge(html::routes(&state))
        .merge(observe::routes())
        .merge(hotkeys::routes())
        .merge(bucket_load::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe::track))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(|_: tower::BoxError| async {
                    error::ApiError::Unavailable { reason: "request timed out".into() }
                }))
                .timeout(timeout),
        )
        .with_state(state)
}
