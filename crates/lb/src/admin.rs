//! The admin listener: health, metrics, and the backends API `millions control` uses.
//!
//! - `GET /healthz`, `GET /readyz` (some backend takes requests), `GET /metrics`;
//! - `GET /admin/backends`: every backend's state;
//! - `PUT /admin/backends` `{"backends": ["ip:port", ...]}`: the whole list;
//! - `POST /admin/backends/{addr}/drain?timeout_ms=N`: no new requests to it, and
//!   answer once its requests in flight are done (200) or the wait ends (504);
//! - `POST /admin/backends/{addr}/resume`: take requests again;
//! - `POST /admin/tls/reload`: read the TLS certificate and key files again (new
//!   handshakes use them; a bad pair is refused, 422, and the one in force
//!   stays); `GET /admin/tls`: the certificate in force.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::metrics::LbMetrics;
use crate::pool::Pool;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The backends.
    pub pool: Arc<Pool>,
    /// Metrics to refresh and render.
    pub metrics: LbMetrics,
    /// The registry `/metrics` renders.
    pub registry: telemetry::Registry,
    /// Wakes the health checker when backends are added.
    pub wake: Arc<Notify>,
    /// The TLS certificate in force, when HTTPS is configured.
    pub certificates: Option<Arc<crate::tls::Certificates>>,
}

/// One backend as the admin API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct BackendView {
    /// `ip:port`.
    pub addr: SocketAddr,
    /// Passing active checks.
    pub healthy: bool,
    /// Ejected by passive checks.
    pub ejected: bool,
    /// Being drained (no new requests).
    pub draining: bool,
    /// Requests in flight.
    pub in_flight: usize,
    /// Requests sent so far.
    pub requests: u64,
}

/// `PUT /admin/backends`'s body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendList {
    /// Every backend, replacing the current list.
    pub backends: Vec<SocketAddr>,
}

/// `drain`'s query.
#[derive(Debug, Deserialize)]
struct DrainQuery {
    /// How long to wait for requests in flight, in milliseconds (default 30 s).
    timeout_ms: Option<u64>,
}

/// The admin router: the probes, open, and `/admin`, behind `token` when given.
pub fn router(state: AdminState, token: Option<&str>) -> Router {
    let admin = Router::new()
        .route("/admin/backends", get(list).put(replace))
        .route("/admin/backends/{addr}/drain", post(drain))
        .route("/admin/backends/{addr}/resume", post(resume))
        .merge(tls::admin::routes(state.certificates.clone(), "load balancer"));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(guard::protect(admin, token))
        .with_state(state)
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if s.pool.any_serving() {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no backend").into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    s.metrics.refresh(&s.pool);
    ([("content-type", telemetry::CONTENT_TYPE)], s.registry.render()).into_response()
}

fn views(pool: &Pool) -> Vec<BackendView> {
    let now = Instant::now();
    pool.backends()
        .iter()
        .map(|b| BackendView {
            addr: b.addr,
            healthy: b.healthy(),
            ejected: b.ejected(now),
            draining: b.draining(),
            in_flight: b.in_flight(),
            requests: b.requests(),
        })
        .collect()
}

async fn list(State(s): State<AdminState>) -> Json<Vec<BackendView>> {
    Json(views(&s.pool))
}

fn error(status: StatusCode, message: String) -> Response {
    coded_error(status, "bad_request", message)
}

fn coded_error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(serde_json::json!({"error": {"code": code, "message": message}}))).into_response()
}

async fn replace(State(s): State<AdminState>, Json(body): Json<BackendList>) -> Response {
    for (i, b) in body.backends.iter().enumerate() {
        if body.backends[..i].contains(b) {
            return error(StatusCode::BAD_REQUEST, format!("{b} is listed twice"));
        }
    }
    let added = s.pool.set_backends(&body.backends);
    tracing::info!(backends = ?body.backends, added = ?added, "backends replaced");
    if !added.is_empty() {
        s.wake.notify_one();
    }
    Json(views(&s.pool)).into_response()
}

async fn drain(
    State(s): State<AdminState>,
    Path(addr): Path<SocketAddr>,
    Query(q): Query<DrainQuery>,
) -> Response {
    let Some(backend) = s.pool.get(addr) else {
        return error(StatusCode::NOT_FOUND, format!("{addr} is not a backend"));
    };
    s.pool.start_drain(addr);
    tracing::info!(backend = %addr, in_flight = backend.in_flight(), "draining");
    let deadline = Instant::now() + Duration::from_millis(q.timeout_ms.unwrap_or(30_000).min(300_000));
    while backend.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let left = backend.in_flight();
    let status = if left == 0 { StatusCode::OK } else { StatusCode::GATEWAY_TIMEOUT };
    (status, Json(serde_json::json!({"backend": addr, "drained": left == 0, "in_flight": left})))
        .into_response()
}

async fn resume(State(s): State<AdminState>, Path(addr): Path<SocketAddr>) -> Response {
    match s.pool.resume(addr) {
        true => Json(serde_json::json!({"backend": addr, "draining": false})).into_response(),
        false => error(StatusCode::NOT_FOUND, format!("{addr} is not a backend")),
    }
}
