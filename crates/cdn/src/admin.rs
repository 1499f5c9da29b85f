//! The admin listener, on a private address of its own.
//!
//! - `GET /healthz`: the process is alive;
//! - `GET /readyz`: the edge serves (503 once stopping);
//! - `GET /metrics`: Prometheus text of the process's registry;
//! - `POST /admin/purge`: drop or mark stale what a purge names (JSON below),
//!   behind the admin token when one is configured;
//! - `POST /admin/tls/reload`: read the `[tls]` certificate and key files again
//!   (new handshakes use them; a bad pair is refused, 422, and the one in force
//!   stays); `GET /admin/tls`: the certificate in force. Both 404 without
//!   `[tls]`, and both behind the admin token.
//!
//! A purge names paths (exact, with their query), prefixes of paths and
//! surrogate keys (the origin's `Surrogate-Key` tags), and says whether it is
//! soft (objects marked stale: their next use revalidates with the origin) or
//! hard (dropped):
//!
//! ```json
//! {"paths": ["/media/ab/cd.jpg"], "prefixes": ["/assets/"], "tags": ["user-42"], "soft": false}
//! ```
//!
//! It answers `{"purged": N}` once every named object of this edge is gone (or
//! marked); a body that names nothing or something malformed is refused with a
//! 400 and purges nothing.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, PurgeLabels};
use crate::store::{EdgeStore, Purge};

/// The most selectors one purge may carry.
pub const MAX_SELECTORS: usize = 1000;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The memory tier purges act on.
    pub store: &'static EdgeStore,
    /// The edge's metrics (purges counted; the store's size set before rendering).
    pub metrics: Metrics,
    /// The registry `/metrics` renders.
    pub registry: telemetry::Registry,
    /// Cancelled when the edge stops (then `/readyz` says so).
    pub stop: CancellationToken,
    /// Cancelled when a stop begins, before its delay (`/readyz` says so too).
    pub draining: CancellationToken,
    /// The TLS certificate in force, when HTTPS is configured.
    pub certificates: Option<std::sync::Arc<tls::Certificates>>,
}

/// The whole admin router: the probes, open, and `/admin`, behind `token` when given.
pub fn router(state: AdminState, token: Option<&str>) -> Router {
    let probes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    let admin = Router::new()
        .route("/admin/purge", post(purge))
        .merge(tls::admin::routes(state.certificates.clone(), "edge"))
        .with_state(state);
    probes.merge(guard::protect(admin, token))
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if s.stop.is_cancelled() || s.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response()
    } else {
        "ready".into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    s.metrics.stored_bytes.set(s.store.bytes() as i64);
    s.metrics.stored_objects.set(s.store.objects() as i64);
    if let Some(disk) = s.store.disk() {
        s.metrics.disk_bytes.set(disk.bytes() as i64);
        s.metrics.disk_objects.set(disk.objects() as i64);
    }
    ([("content-type", telemetry::CONTENT_TYPE)], s.registry.render()).into_response()
}

/// A purge request's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// Exact paths, with their query.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Prefixes of paths.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Surrogate keys.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Mark stale instead of dropping.
    #[serde(default)]
    pub soft: bool,
}

impl PurgeRequest {
    /// The selectors, checked: at least one, at most [`MAX_SELECTORS`], paths and
    /// prefixes absolute, tags one word each.
    pub fn selectors(&self) -> Result<Vec<Purge>, String> {
        let n = self.paths.len() + self.prefixes.len() + self.tags.len();
        if n == 0 {
            return Err("name at least one path, prefix or tag".into());
        }
        if n > MAX_SELECTORS {
            return Err(format!("at most {MAX_SELECTORS} paths, prefixes and tags in one purge"));
        }
        let mut out = Vec::with_capacity(n);
        for p in &self.paths {
            if !p.starts_with('/') {
                return Err(format!("path {p:?} must start with /"));
            }
            out.push(Purge::Path(p.clone()));
        }
        for p in &self.prefixes {
            if !p.starts_with('/') {
                return Err(format!("prefix {p:?} must start with /"));
            }
            out.push(Purge::Prefix(p.clone()));
        }
        for t in &self.tags {
            if t.is_empty() || t.len() > 128 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("tag {t:?} must be one word of at most 128 bytes"));
            }
            out.push(Purge::Tag(t.clone()));
        }
        Ok(out)
    }
}

/// The error shape of the app's API: `{"error": {"code", "message"}}`.
fn refuse(message: String) -> Response {
    coded_error(StatusCode::BAD_REQUEST, "invalid_purge", message)
}

fn coded_error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(serde_json::json!({"error": {"code": code, "message": message}}))).into_response()
}

async fn purge(State(s): State<AdminState>, body: Result<Json<PurgeRequest>, JsonRejection>) -> Response {
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => return refuse(e.body_text()),
    };
    let selectors = match request.selectors() {
        Ok(s) => s,
        Err(message) => return refuse(message),
    };
    let how = if request.soft { "soft" } else { "hard" };
    let mut purged = 0;
    for selector in &selectors {
        let n = s.store.purge(selector, request.soft).await;
        let by = match selector {
            Purge::Path(_) => "path",
            Purge::Prefix(_) => "prefix",
            Purge::Tag(_) => "tag",
        };
        s.metrics.purged.get_or_create(&PurgeLabels { by, how }).inc_by(n as u64);
        purged += n;
    }
    tracing::info!(selectors = selectors.len(), purged, soft = request.soft, "purge");
    Json(serde_json::json!({ "purged": purged })).into_response()
}
