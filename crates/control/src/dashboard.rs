//! The dashboard: its page and assets (built into the binary; uPlot from the
//! npm registry, fetched and checked by `scripts/setup.sh`, embedded by
//! `build.rs`), and its read-only JSON for scripts and the page: the state
//! (`/api/dashboard/state`), the history (`/api/dashboard/series`), and the
//! state live as server-sent events (`/api/dashboard/stream`). What changes
//! something stays behind the admin token (the node actions of `api`).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use crate::history::now_ms;
use crate::shared::Shared;
use crate::status::{self, NodeStatus};

/// The page.
const PAGE: &str = include_str!("../assets/dashboard.html");
/// The page's script.
const SCRIPT: &str = include_str!("../assets/dashboard.js");
/// The page's style.
const STYLE: &str = include_str!("../assets/dashboard.css");
/// uPlot's script, as the npm registry ships it (see `build.rs`).
const UPLOT_JS: &str = include_str!(env!("MILLIONS_UPLOT_JS"));
/// uPlot's style.
const UPLOT_CSS: &str = include_str!(env!("MILLIONS_UPLOT_CSS"));
/// The events the state carries (the newest).
const RECENT_EVENTS: usize = 200;
/// The most series one `/api/dashboard/series` answer may name.
const MAX_NAMES: usize = 64;

/// Only this origin's scripts and styles (uPlot sets styles from script).
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /dashboard`.
pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /dashboard/app.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard/app.css`.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /dashboard/uPlot.iife.min.js`.
pub(crate) async fn uplot_js() -> Response {
    asset("text/javascript; charset=utf-8", UPLOT_JS)
}

/// `GET /dashboard/uPlot.min.css`.
pub(crate) async fn uplot_css() -> Response {
    asset("text/css; charset=utf-8", UPLOT_CSS)
}

/// The dashboard's state from `nodes`: the data centers, every node (role, DC,
/// health, restarts), every shard (primary, replicas with their lag), the shard
/// map's epoch, the newest events, and the history's size.
pub(crate) fn state(shared: &Shared, nodes: &[NodeStatus]) -> Value {
    let cluster = shared.cluster.snapshot();
    let lost = &cluster.lost_dcs;
    let dcs: Vec<Value> = shared
        .topology()
        .dcs()
        .iter()
        .map(|d| {
            json!({"name": d.name, "state": if lost.contains(&d.name) { "down" } else { "up" },
                   "wan_cut": cluster.wan_cut.contains(&d.name)})
        })
        .collect();
    let durability = status::shards(shared, nodes);
    let shards: Vec<Value> = cluster
        .shards
        .iter()
        .zip(&durability)
        .map(|(decided, d)| {
            let members = nodes.iter().filter(|n| n.pg.as_ref().is_some_and(|p| p.shard == d.shard));
            let replicas: Vec<Value> = members
                .filter(|n| Some(&n.name) != decided.primary.as_ref())
                .map(|n| {
                    let pg = n.pg.as_ref();
                    json!({
                        "name": n.name,
                        "serves_reads": decided.replicas.contains(&n.name),
                        "replication": pg.and_then(|p| p.replication.clone()),
                        "lag_bytes": pg.and_then(|p| p.lag_bytes),
                        "lag_ms": pg.and_then(|p| p.lag_ms),
                    })
                })
                .collect();
            json!({
                "shard": d.shard,
                "primary": decided.primary,
                "replicas": replicas,
                "survives": d.survives,
                "warnings": d.warnings,
            })
        })
        .collect();
    let events = shared.cluster.events();
    let recent = &events[events.len().saturating_sub(RECENT_EVENTS)..];
    json!({
        "at": now_ms(),
        "topology": shared.topology().name(),
        "epoch": cluster.epoch,
        "dcs": dcs,
        "nodes": nodes,
        "shards": shards,
        "events": recent,
        "history": shared.dashboard.stats(),
        "active_users": shared.dashboard.active(),
        "alerts": shared.alerts.lock().expect("alerts poisoned").values().cloned().collect::<Vec<_>>(),
        "scaling": crate::scale::status(shared),
    })
}

/// `GET /api/dashboard/state`: the state now.
pub(crate) async fn current(State(shared): State<Shared>) -> Response {
    let nodes = status::collect(&shared).await;
    Json(state(&shared, &nodes)).into_response()
}

/// `?names=a,b&since=MS&node=NAME`.
#[derive(serde::Deserialize)]
pub(crate) struct SeriesQuery {
    /// Metric names, comma-separated.
    names: Option<String>,
    /// Only points after this time (unix milliseconds); all kept when absent.
    since: Option<String>,
    /// Only this node's series.
    node: Option<String>,
}

fn bad(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": {"message": message}}))).into_response()
}

/// `GET /api/dashboard/series`: the history of the metrics named.
pub(crate) async fn series(State(shared): State<Shared>, Query(q): Query<SeriesQuery>) -> Response {
    let known = shared.dashboard.names();
    let Some(names) = q.names.as_deref().filter(|n| !n.trim().is_empty()) else {
        return bad(
            StatusCode::BAD_REQUEST,
            format!("name the metrics: ?names=a,b (known: {})", known.join(", ")),
        );
    };
    let names: Vec<&str> = names.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
    if names.len() > MAX_NAMES {
        return bad(StatusCode::BAD_REQUEST, format!("at most {MAX_NAMES} names at once"));
    }
    let unknown: Vec<&str> = names.iter().copied().filter(|n| !known.iter().any(|k| k == n)).collect();
    if !unknown.is_empty() {
        return bad(
            StatusCode::NOT_FOUND,
            format!("no series named {}; known: {}", unknown.join(", "), known.join(", ")),
        );
    }
    let since = match q.since.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(ms)) if ms >= 0 => ms,
        Some(_) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("since must be a time in unix milliseconds, not {:?}", q.since.unwrap_or_default()),
            );
        }
    };
    if let Some(node) = &q.node
        && node != "host"
        && node != crate::history::SYSTEM
        && shared.topology().node(node).is_none()
    {
        return bad(StatusCode::NOT_FOUND, format!("no node named {node:?}"));
    }
    Json(json!({"at": now_ms(), "series": shared.dashboard.query(&names, q.node.as_deref(), since)}))
        .into_response()
}

/// `GET /api/dashboard/stream`: the state as server-sent events (`state`),
/// the current one first, then each one the scraper publishes.
pub(crate) async fn stream(State(shared): State<Shared>) -> Response {
    let rx = shared.dashboard.subscribe();
    let events = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let data = rx.borrow_and_update().to_string();
        Some((Ok::<_, Infallible>(SseEvent::default().event("state").data(data)), (rx, false)))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}
