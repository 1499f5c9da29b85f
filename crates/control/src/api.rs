//! The controller's HTTP API, used by the `millions` CLI.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::{Shared, launch, status};

pub(crate) async fn serve(listener: tokio::net::TcpListener, shared: Shared) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/nodes", get(nodes))
        .route("/api/cluster", get(cluster))
        .route("/api/events", get(events))
        .route("/api/nodes/{name}/kill", post(kill))
        .route("/api/nodes/{name}/restart", post(restart))
        .route("/api/nodes/{name}/stop", post(stop))
        .route("/api/nodes/{name}/start", post(start))
        .route("/api/shutdown", post(shutdown))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "control API failed");
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": {"message": message}}))).into_response()
}

fn unknown(shared: &Shared, name: &str) -> Option<Response> {
    if shared.opts.topology.node(name).is_some() {
        return None;
    }
    let names: Vec<&str> = shared.opts.topology.nodes().iter().map(|n| n.name.as_str()).collect();
    Some(error(StatusCode::NOT_FOUND, format!("no node named {name:?}; nodes: {}", names.join(", "))))
}

async fn nodes(State(shared): State<Shared>) -> Response {
    let nodes = status::collect(&shared).await;
    Json(json!({
        "topology": shared.opts.topology.name(),
        "nodes": nodes,
        "cluster": shared.cluster.snapshot(),
        "events": shared.cluster.events(),
    }))
    .into_response()
}

/// How long `GET /api/cluster?after=N` waits for a newer map.
const LONG_POLL: std::time::Duration = std::time::Duration::from_secs(20);

/// `?after=N`: wait for a map newer than epoch N.
#[derive(serde::Deserialize)]
struct After {
    /// The epoch the caller holds.
    after: Option<u64>,
}

/// The published shard map; with `?after=N`, answers as soon as its epoch
/// exceeds N, or with the current map after [`LONG_POLL`].
async fn cluster(State(shared): State<Shared>, Query(q): Query<After>) -> Response {
    if let Some(after) = q.after {
        let mut rx = shared.cluster.subscribe();
        let newer = rx.wait_for(|map| map.epoch > after);
        let _ = tokio::time::timeout(LONG_POLL, newer).await;
    }
    Json(shared.cluster.map()).into_response()
}

async fn events(State(shared): State<Shared>) -> Response {
    Json(json!({"events": shared.cluster.events()})).into_response()
}

async fn kill(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    if let Some(r) = unknown(&shared, &name) {
        return r;
    }
    match launch::kill_node(&shared, &name).await {
        Ok(pid) => Json(json!({"killed": name, "pid": pid})).into_response(),
        Err(e) => error(StatusCode::CONFLICT, format!("{e:#}")),
    }
}

async fn restart(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    if let Some(r) = unknown(&shared, &name) {
        return r;
    }
    if let Err(e) = launch::stop_node(&shared, &name).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    }
    match launch::start_node(&shared, &name).await {
        Ok(()) => Json(json!({"restarted": name})).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// Stop a node on purpose (a web server is drained from its load balancers
/// first); it stays stopped until `start`.
async fn stop(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    if let Some(r) = unknown(&shared, &name) {
        return r;
    }
    match launch::stop_node(&shared, &name).await {
        Ok(()) => Json(json!({"stopped": name})).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// Start a node stopped on purpose (a web server rejoins its load balancers).
async fn start(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    if let Some(r) = unknown(&shared, &name) {
        return r;
    }
    if launch::running_node(&shared, &name).await {
        return error(StatusCode::CONFLICT, format!("{name} is already running"));
    }
    match launch::start_node(&shared, &name).await {
        Ok(()) => Json(json!({"started": name})).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

async fn shutdown(State(shared): State<Shared>) -> Response {
    shared.shutdown.cancel();
    (StatusCode::ACCEPTED, Json(json!({"stopping": true}))).into_response()
}
