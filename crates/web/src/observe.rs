//! Health, readiness, metrics, request ids and request logging.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::state::AppState;

/// The request id header, taken from the client (or load balancer) or made here
/// ([`telemetry::request_id`] holds the rule).
pub static REQUEST_ID: HeaderName = HeaderName::from_static(telemetry::request_id::HEADER);

/// Routes every process serves.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Ready when not draining and the shards answer within a second. Redis is not
/// required: without it sessions and reads fall through to the shards (slower, not
/// failing), so a DC whose Redis died keeps its web servers in its load balancer's
/// pool; the answer then says it is degraded.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let within = Duration::from_secs(1);
    let (shards, redis) = tokio::join!(
        tokio::time::timeout(within, state.data().ping()),
        tokio::time::timeout(within, state.redis().ping())
    );
    match (shards, redis) {
        (Ok(Ok(())), Ok(Ok(_))) => "ready".into_response(),
        (Ok(Ok(())), Ok(Err(e))) => format!("ready (degraded: redis: {e})").into_response(),
        (Ok(Ok(())), Err(_)) => "ready (degraded: redis did not answer in time)".into_response(),
        (Ok(Err(e)), _) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        (Err(_), _) => (StatusCode::SERVICE_UNAVAILABLE, "the shards did not answer in time").into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.data().refresh_pool_metrics();
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.registry().render(),
    )
}

/// Drop an incoming request id that the rule refuses
/// ([`telemetry::request_id::is_sane`]) or that is given twice, so that one is
/// made instead.
pub async fn drop_insane_request_id(mut request: Request, next: Next) -> Response {
    let headers = request.headers_mut();
    let given = headers.get_all(&REQUEST_ID).iter().map(|v| v.as_bytes());
    if headers.contains_key(&REQUEST_ID) && telemetry::request_id::accept(given).is_none() {
        headers.remove(&REQUEST_ID);
    }
    next.run(request).await
}

/// Makes request ids ([`telemetry::request_id::new`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        HeaderValue::try_from(telemetry::request_id::new()).ok().map(RequestId::new)
    }
}

/// Record each request's route, status and latency, and log it as one JSON line.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = request.method().to_string();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.http_metrics().observe(
        telemetry::HttpLabels { route: route.clone(), method: method.clone(), status },
        elapsed.as_secs_f64(),
    );
    // Probes answered well (load balancers ask every second) are not worth a line
    // each at the default level: they would drown the requests of users.
    if matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics") && status < 400 {
        tracing::debug!(route, method, status, latency_ms = elapsed.as_secs_f64() * 1e3, "request");
    } else {
        tracing::info!(route, method, status, latency_ms = elapsed.as_secs_f64() * 1e3, "request");
    }
    response
}
