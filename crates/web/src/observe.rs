//! Health, readiness, metrics, request ids and request logging.

use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::{Instrument as _, Level};

use crate::state::AppState;

/// The request id header, taken from the client (or load balancer) or made here
/// ([`telemetry::request_id`] holds the rule).
pub static REQUEST_ID: HeaderName = HeaderName::from_static(telemetry::request_id::HEADER);

/// Routes every process serves. They are internal: each is in
/// `lb::rules::INTERNAL_PATHS`, so the load balancers never forward them from
/// the public entry (a new internal route goes there too; `lb`'s
/// `tests/internal.rs` fails until it does).
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
    state.hotkeys().publish_metrics(&state);
    ([(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)], state.registry().render())
}

/// The request's id: the one it came with if the rule keeps it
/// ([`telemetry::request_id::accept`]: sane, and given once), or a new one
/// ([`telemetry::request_id::new`]). The request's header is set to it.
fn request_id(headers: &mut http::HeaderMap) -> HeaderValue {
    if let Some(kept) =
        telemetry::request_id::accept(headers.get_all(&REQUEST_ID).iter().map(|v| v.as_bytes()))
            .and_then(|id| HeaderValue::from_str(id).ok())
    {
        return kept;
    }
    let made =
        HeaderValue::try_from(telemetry::request_id::new()).expect("a made request id is 32 hex digits");
    headers.insert(&REQUEST_ID, made.clone());
    made
}

/// The one middleware every request passes: give it a request id (taken from
/// the client or made, and echoed in the response), run it in a `request` span
/// carrying that id (so any line logged while serving it names it, and any job
/// it enqueues carries it: [`telemetry::request_id::scope`]) and in its
/// session's scope ([`crate::viewer::session_scope`]), count it and its latency
/// by route, method and status, and write its request line.
///
/// One middleware rather than a layer per concern: profiling the cached reads
/// showed each layer's boxing, cloning and span bookkeeping on every request,
/// and `tracing`'s JSON formatting of the request line as the largest cost
/// after the kernel's. The line is formatted by hand ([`telemetry::line`]) in
/// the shape of the `tracing` lines.
pub async fn track(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers_mut());
    // Copied, not cloned: every request of a route would otherwise count on the
    // route's one shared `Arc` from every thread.
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let id_text = id.to_str().unwrap_or("-");
    let span = tracing::info_span!("request", request_id = id_text);
    let serve = crate::viewer::session_scope(&state, request, next).instrument(span);
    // Jobs the request enqueues carry its id (`telemetry::request_id::current`).
    let mut response = telemetry::request_id::scope(id_text.to_owned(), serve).await;
    let elapsed = started.elapsed();
    response.headers_mut().insert(&REQUEST_ID, id.clone());
    let status = response.status().as_u16();
    let labels = telemetry::HttpLabels { route, method: method.as_str().to_owned(), status };
    state.http_metrics().observe(&labels, elapsed.as_secs_f64());
    let route = labels.route.as_str();
    // Probes answered well (load balancers ask every second) are not worth a line
    // each at the default level: they would drown the requests of users.
    let probe = matches!(route, "/healthz" | "/readyz" | "/metrics") && status < 400;
    let enabled = if probe { tracing::enabled!(Level::DEBUG) } else { tracing::enabled!(Level::INFO) };
    if enabled {
        telemetry::line::write(|out| {
            use std::fmt::Write as _;
            telemetry::line::start(out, SystemTime::now(), if probe { "DEBUG" } else { "INFO" }, "request");
            out.push_str(",\"request_id\":");
            telemetry::line::json_str(out, id_text);
            out.push_str(",\"method\":");
            telemetry::line::json_str(out, method.as_str());
            out.push_str(",\"path\":");
            telemetry::line::json_str(out, uri.path());
            out.push_str(",\"route\":");
            telemetry::line::json_str(out, route);
            let _ = writeln!(out, ",\"status\":{status},\"latency_ms\":{}}}", elapsed.as_secs_f64() * 1e3);
        });
    }
    response
}
