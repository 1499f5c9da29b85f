//! The admin listener, on a private address of its own.
//!
//! - `GET /healthz`: the process is alive;
//! - `GET /readyz`: the DNS listeners are serving (503 once stopping); answers
//!   never depend on a DC being up (every DC down fails open), so neither does this;
//! - `GET /metrics`: Prometheus text of the process's registry;
//! - `GET /admin/health`: every DC and entry with its state (JSON): a list of
//!   DCs, the app's load balancers first (`"service": "app"`), then, with a CDN
//!   name, the DCs' CDN edges (`"service": "cdn"`).
//!
//! The probes and the `/admin` routes are separate routers ([`probes`],
//! [`admin_routes`]): a token check for `/admin` is one layer on the latter.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use crate::health::{DcView, HealthTable};

/// What the admin handlers share.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// The load balancers' and CDN edges' health.
    pub health: Arc<HealthTable>,
    /// The registry `/metrics` renders.
    pub registry: telemetry::Registry,
    /// Cancelled when the server stops (then `/readyz` says so).
    pub stop: CancellationToken,
}

/// The whole admin router: the probes, open, and `/admin`, behind `token` when given.
pub fn router(state: AdminState, token: Option<&str>) -> Router {
    probes(state.clone()).nest("/admin", guard::protect(admin_routes(state), token))
}

/// `/healthz`, `/readyz`, `/metrics`: what orchestration and monitoring poll.
pub fn probes(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The operator's API under `/admin` (today `GET /admin/health`).
pub fn admin_routes(state: AdminState) -> Router {
    Router::new().route("/health", get(health)).with_state(state)
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if s.stop.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response()
    } else {
        "ready".into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    ([("content-type", telemetry::CONTENT_TYPE)], s.registry.render()).into_response()
}

async fn health(State(s): State<AdminState>) -> Json<Vec<DcView>> {
    Json(s.health.views())
}
