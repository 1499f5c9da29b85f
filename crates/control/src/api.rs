//! The controller's HTTP API, used by the `millions` CLI.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::cluster::Event;
use crate::shared::Shared;
use crate::{dashboard, dcs, launch, status, switchover};

pub(crate) async fn serve(listener: tokio::net::TcpListener, shared: Shared) {
    // What changes or reveals the system needs the admin token; the probes, the
    // shard map that every web server and worker follows, and the dashboard's
    // read-only view (its page, state, history and stream) stay open.
    let guarded = Router::new()
        .route("/api/nodes", get(nodes))
        .route("/api/events", get(events))
        .route("/api/nodes/{name}/kill", post(kill))
        .route("/api/nodes/{name}/restart", post(restart))
        .route("/api/nodes/{name}/stop", post(stop))
        .route("/api/nodes/{name}/start", post(start))
        .route("/api/nodes/{name}/promote", post(promote))
        .route("/api/dcs/{dc}/down", post(dc_down))
        .route("/api/dcs/{dc}/up", post(dc_up))
        .route("/api/dcs/{dc}/wan-cut", post(wan_cut))
        .route("/api/dcs/{dc}/wan-heal", post(wan_heal))
        .route("/api/cdn/purge", post(cdn_purge))
        .route("/api/shards/move", post(move_buckets))
        .route("/api/shards/rebalance", post(rebalance))
        .route("/api/shards/moves/{id}/cancel", post(cancel_move))
        .route("/api/shards/isolate", post(isolate))
        .route("/api/shards/add", post(add_shard))
        .route("/api/scale", get(scale_status).post(scale))
        .route("/api/shutdown", post(shutdown));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/cluster", get(cluster))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style))
        .route("/dashboard/uPlot.iife.min.js", get(dashboard::uplot_js))
        .route("/dashboard/uPlot.min.css", get(dashboard::uplot_css))
        .route("/api/dashboard/state", get(dashboard::current))
        .route("/api/dashboard/series", get(dashboard::series))
        .route("/api/dashboard/stream", get(dashboard::stream))
        .merge(guard::protect(guarded, Some(&shared.secrets.admin)))
        .route_layer(axum::middleware::from_fn_with_state(shared.clone(), track))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "control API failed");
    }
}

/// Record each request's route, method, status and latency.
async fn track(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    shared
        .metrics
        .http
        .observe(&telemetry::HttpLabels { route, method, status }, started.elapsed().as_secs_f64());
    response
}

/// Ready once every node was started or adopted (the cluster state loaded);
/// not while starting up, nor once shutting down.
async fn readyz(State(shared): State<Shared>) -> Response {
    if shared.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response();
    }
    if !shared.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting the nodes").into_response();
    }
    (StatusCode::OK, "ready").into_response()
}

/// Prometheus text: nodes by health (probed now), restarts per node,
/// failovers, API requests.
async fn metrics(State(shared): State<Shared>) -> Response {
    let nodes = status::collect(&shared).await;
    shared.metrics.set_health(nodes.iter().map(|n| n.health()));
    ([(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)], shared.metrics.registry.render()).into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": {"message": message}}))).into_response()
}

/// An operator's action on a node: in the event log, and on the dashboard at
/// once (a killed node shows as down before the supervisor restarts it).
async fn acted(shared: &Shared, kind: &str, name: &str, detail: String) {
    shared.cluster.record(Event::node(kind, name, detail));
    let nodes = status::collect(shared).await;
    shared.dashboard.publish(dashboard::state(shared, &nodes));
}

fn unknown(shared: &Shared, name: &str) -> Option<Response> {
    if shared.topology().node(name).is_some() {
        return None;
    }
    let topology = shared.topology();
    let names: Vec<&str> = topology.nodes().iter().map(|n| n.name.as_str()).collect();
    Some(error(StatusCode::NOT_FOUND, format!("no node named {name:?}; nodes: {}", names.join(", "))))
}

async fn nodes(State(shared): State<Shared>) -> Response {
    let nodes = status::collect(&shared).await;
    let mut shards = status::shards(&shared, &nodes);
    status::fill_sizes(&shared, &mut shards).await;
    status::fill_load(&shared, &mut shards);
    let lost = shared.cluster.lost_dcs();
    let dcs: Vec<_> = shared
        .topology()
        .dcs()
        .iter()
        .map(|d| json!({"name": d.name, "state": if lost.contains(&d.name) { "down" } else { "up" }}))
        .collect();
    Json(json!({
        "topology": shared.topology().name(),
        "shards": shards,
        "dcs": dcs,
        "nodes": nodes,
        "cluster": shared.cluster.snapshot(),
        "events": shared.cluster.events(),
        "scaling": crate::scale::status(&shared),
    }))
    .into_response()
}

/// `POST /api/scale`'s body: `millions scale DC ROLE N`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleRequest {
    /// The DC.
    dc: String,
    /// `web` or `worker`.
    role: String,
    /// The count wanted, within the DC's range for the role.
    count: u32,
}

async fn scale(
    State(shared): State<Shared>,
    body: Result<Json<ScaleRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let role = match crate::scale::scaled_role(&request.role) {
        Ok(role) => role,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match crate::scale::scale_to(&shared, &request.dc, role, request.count, "set by hand (millions scale)")
        .await
    {
        Ok(scaled) => Json(scaled).into_response(),
        Err(e @ crate::ControlError::BadRequest(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ crate::ControlError::Refused(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn scale_status(State(shared): State<Shared>) -> Response {
    Json(crate::scale::status(&shared)).into_response()
}

/// How long `GET /api/cluster?after=N` waits for a newer map.
const LONG_POLL: std::time::Duration = std::time::Duration::from_secs(20);

/// `?after=N`: wait for a map newer than epoch N; `?dc=NAME`: the map as that data
/// center's processes use it.
#[derive(serde::Deserialize)]
struct After {
    /// The epoch the caller holds.
    after: Option<u64>,
    /// The caller's data center.
    dc: Option<String>,
}

/// The published shard map; with `?after=N`, answers as soon as its epoch
/// exceeds N, or with the current map after [`LONG_POLL`].
async fn cluster(State(shared): State<Shared>, Query(q): Query<After>) -> Response {
    if let Some(after) = q.after {
        let mut rx = shared.cluster.subscribe();
        let newer = rx.wait_for(|map| map.epoch > after);
        let _ = tokio::time::timeout(LONG_POLL, newer).await;
    }
    match &q.dc {
        Some(dc) if shared.topology().dc(dc).is_some() => Json(shared.cluster.map_for(dc)).into_response(),
        Some(dc) => error(StatusCode::NOT_FOUND, format!("no data center named {dc:?}")),
        None => Json(shared.cluster.map()).into_response(),
    }
}

async fn events(State(shared): State<Shared>) -> Response {
    Json(json!({"events": shared.cluster.events()})).into_response()
}

async fn kill(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    if let Some(r) = unknown(&shared, &name) {
        return r;
    }
    match launch::kill_node(&shared, &name).await {
        Ok(pid) => {
            // SIGKILL takes effect when the process is next scheduled: the
            // dashboard is told once it is gone (or after a bound).
            let deadline = Instant::now() + std::time::Duration::from_secs(2);
            while shared.running(&name).await && Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            acted(&shared, "killed", &name, format!("killed (pid {pid}) by an operator")).await;
            Json(json!({"killed": name, "pid": pid})).into_response()
        }
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn restart(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    if let Some(r) = unknown(&shared, &name) {
        return r;
    }
    if let Err(e) = launch::stop_node(&shared, &name).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    match launch::start_node(&shared, &name).await {
        Ok(()) => {
            acted(&shared, "restarted", &name, "restarted by an operator".into()).await;
            Json(json!({"restarted": name})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Stop a node on purpose (a web server is drained from its load balancers
/// first); it stays stopped until `start`.
async fn stop(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    if let Some(r) = unknown(&shared, &name) {
        return r;
    }
    match launch::stop_node(&shared, &name).await {
        Ok(()) => {
            acted(&shared, "stopped", &name, "stopped by an operator".into()).await;
            Json(json!({"stopped": name})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Start a node stopped on purpose (a web server rejoins its load balancers).
async fn start(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    if let Some(r) = unknown(&shared, &name) {
        return r;
    }
    if shared.running(&name).await {
        return error(StatusCode::CONFLICT, format!("{name} is already running"));
    }
    match launch::start_node(&shared, &name).await {
        Ok(()) => {
            acted(&shared, "started", &name, "started by an operator".into()).await;
            Json(json!({"started": name})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Make a PostgreSQL node its shard's primary (a switchover: no commit lost).
async fn promote(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    if let Some(r) = unknown(&shared, &name) {
        return r;
    }
    match switchover::switchover(&shared, &name).await {
        Ok(done) => Json(done).into_response(),
        Err(e @ crate::ControlError::Refused(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Take a whole data center down (every process killed, kept down).
async fn dc_down(State(shared): State<Shared>, Path(dc): Path<String>) -> Response {
    dc_result(dcs::down(&shared, &dc).await)
}

/// Bring a data center back (started, readmitted once its replicas stream).
async fn dc_up(State(shared): State<Shared>, Path(dc): Path<String>) -> Response {
    dc_result(dcs::up(&shared, &dc).await)
}

/// Cut a data center off from the others on the WAN (bytes held until the heal).
async fn wan_cut(State(shared): State<Shared>, Path(dc): Path<String>) -> Response {
    dc_result(crate::wan::set_cut(&shared, &dc, true).await)
}

/// Heal a data center's WAN links.
async fn wan_heal(State(shared): State<Shared>, Path(dc): Path<String>) -> Response {
    dc_result(crate::wan::set_cut(&shared, &dc, false).await)
}

fn dc_result<T: serde::Serialize>(r: Result<T, crate::ControlError>) -> Response {
    match r {
        Ok(done) => Json(done).into_response(),
        Err(e @ crate::ControlError::UnknownNode(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ crate::ControlError::Refused(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /api/cdn/purge` (`{"paths", "prefixes", "tags", "soft"}`, as an edge's
/// own purge takes): purged from every edge of every DC, answered once each has
/// answered; 502 naming the edges it did not reach. A bad request reaches none (400).
async fn cdn_purge(
    State(shared): State<Shared>,
    body: Result<Json<cdn::admin::PurgeRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match crate::cdn::purge(&shared, &request).await {
        Ok(report) if report.complete => Json(report).into_response(),
        Ok(report) => (StatusCode::BAD_GATEWAY, Json(report)).into_response(),
        Err(e @ crate::ControlError::BadRequest(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ crate::ControlError::Refused(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A request to move buckets.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveRequest {
    /// The buckets, each 0 to 4095, all on one shard.
    buckets: Vec<u16>,
    /// The shard they go to.
    to: u16,
}

/// `POST /api/shards/move` (`{"buckets": [..], "to": N}`): the buckets moved to
/// shard `to` under writes, answered when the move is done (its report). A bad
/// request changes nothing (400); buckets another move holds, 409; a move that
/// failed and was rolled back, 409 with the reason.
async fn move_buckets(
    State(shared): State<Shared>,
    body: Result<Json<MoveRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match crate::reshard::start(&shared, &request.buckets, request.to).await {
        Ok(report) => Json(report).into_response(),
        Err(e @ crate::ControlError::BadRequest(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ crate::ControlError::Refused(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /api/shards/moves/{id}/cancel`: the move rolls back after its step under
/// way. 400 for no such move, 409 for one past its fence.
async fn cancel_move(State(shared): State<Shared>, Path(id): Path<i64>) -> Response {
    match crate::reshard::cancel(&shared, id) {
        Ok(message) => Json(json!({ "cancelled": id, "message": message })).into_response(),
        Err(e @ crate::ControlError::BadRequest(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ crate::ControlError::Refused(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /api/shards/add` (`{"primary": DC, "replicas": [DC..], "replication",
/// "survives"}`, each defaulting to the last shard's): a shard cluster built and
/// joined to the published map with no bucket, answered when it has joined. A
/// bad request changes nothing (400); a taken address or another add under way,
/// 409.
async fn add_shard(
    State(shared): State<Shared>,
    body: Result<Json<crate::grow::AddRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match crate::grow::add(&shared, &request).await {
        Ok(added) => Json(added).into_response(),
        Err(e @ crate::ControlError::BadRequest(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ crate::ControlError::Refused(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A request to isolate a user's bucket.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IsolateRequest {
    /// The user.
    username: String,
    /// The shard the bucket goes to: a number, or `"new"` for a shard added
    /// for it (placed like the last one).
    to: IsolateTarget,
}

/// Where `isolate` moves a bucket.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum IsolateTarget {
    /// A shard of the topology.
    Shard(u16),
    /// `"new"`: a shard added first.
    New(String),
}

/// `POST /api/shards/isolate` (`{"username", "to"}`, `to` a shard or `"new"` for a
/// shard added for it first): the user's bucket moved,
/// answered with the bucket, its users and the move's report. 400 for no such
/// user or a bad shard, 409 for a bucket already moving.
async fn isolate(
    State(shared): State<Shared>,
    body: Result<Json<IsolateRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let to = match request.to {
        IsolateTarget::Shard(n) => crate::reshard::IsolateTo::Shard(n),
        IsolateTarget::New(word) if word == "new" => crate::reshard::IsolateTo::NewShard,
        IsolateTarget::New(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("to: {other:?} is neither a shard number nor \"new\""),
            );
        }
    };
    match crate::reshard::isolate(&shared, &request.username, to).await {
        Ok(done) => Json(done).into_response(),
        Err(e @ crate::ControlError::BadRequest(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ crate::ControlError::Refused(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A request to rebalance.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RebalanceRequest {
    /// What to even out.
    by: crate::reshard::Weight,
    /// Most buckets per move.
    batch: usize,
    /// Most moves.
    max_moves: usize,
    /// With `by: load`, how long to measure it, in seconds (10 by default).
    #[serde(default)]
    window_secs: Option<u64>,
}

/// `POST /api/shards/rebalance` (`{"by": "buckets"|"rows"|"load", "batch",
/// "max_moves", "window_secs"}`; the load measured over `window_secs`):
/// moves from the heaviest shard to the lightest, one after the other, until
/// they are even; answered with each move's report. A bad request moves nothing
/// (400); a move under way, 409.
async fn rebalance(
    State(shared): State<Shared>,
    body: Result<Json<RebalanceRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let window = std::time::Duration::from_secs(request.window_secs.unwrap_or(10));
    match crate::reshard::rebalance(&shared, request.by, request.batch, request.max_moves, window).await {
        Ok(reports) => Json(json!({ "moves": reports })).into_response(),
        Err(e @ crate::ControlError::BadRequest(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ crate::ControlError::Refused(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn shutdown(State(shared): State<Shared>) -> Response {
    shared.shutdown.cancel();
    (StatusCode::ACCEPTED, Json(json!({"stopping": true}))).into_response()
}
