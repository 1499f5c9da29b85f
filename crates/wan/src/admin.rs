//! The admin listener: probes, metrics, and the control API drills use
//! (`millions chaos wan-cut|wan-heal`) and the controller adds links through
//! (`millions shard add`).
//!
//! - `GET /healthz` (alive), `GET /readyz` (not stopping), `GET /metrics`;
//! - `GET /admin/links`: every link with its peer DC, the conditions in force,
//!   open connections, bytes each way and bytes held — the configured ones, then
//!   those added at runtime;
//! - `POST /admin/links` `[{"listen":..,"target":..,"source":..,"peer_dc":..},
//!   ..]` (or the same list as `{"links": [..]}`): serve these links too, each in
//!   a configuration's link shape and checked by the same rules
//!   ([`crate::Handle::add_links`]); a link served already as asked is left
//!   alone, so the whole list may be sent every time. Answers `{"links": [..],
//!   "added": [..]}` (`{"listen","target","peer_dc"}` each): every link served
//!   now, and those this request started;
//! - `GET /admin/conditions`: the conditions in force per peer DC;
//! - `PUT /admin/conditions/{peer_dc}` `{"delay_ms":..,"jitter_ms":..,"loss":..,
//!   "loss_penalty_ms":..,"cut":..}`: change the fields given;
//! - `POST /admin/cut`, `POST /admin/heal`: every peer DC, or `?peer=dc2`.
//!
//! Errors are JSON, `{"error": {"code", "message"}}`: 404 `unknown_peer`, 400
//! `bad_request` (a body or query that cannot be used, a value out of range, a
//! link that breaks a rule), 409 `conflict` (a listen address served for another
//! target), `cannot_bind` (409 for an address in use, 400 for one that cannot be
//! bound otherwise, such as another machine's), 503 `stopping`; a link is named
//! by its position in the request and its listen address, and a refused request
//! changes nothing. The probes and the control API are separate routers
//! ([`probes`], [`control`]), so one layer on [`control`] can require an admin
//! token without touching the probes.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::conditions::{Conditions, ConditionsUpdate};
use crate::config::LinkConfig;
use crate::handle::{ControlError, Handle, LinkView};

/// What the admin handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The gateway.
    pub handle: Handle,
    /// The registry `/metrics` renders.
    pub registry: telemetry::Registry,
    /// Cancelled when the gateway stops: `/readyz` then says so.
    pub stopping: CancellationToken,
}

/// Every admin route: [`probes`], open, and [`control`], behind `token` when given.
pub fn router(state: AdminState, token: Option<&str>) -> Router {
    Router::new().merge(probes()).merge(guard::protect(control(), token)).with_state(state)
}

/// `/healthz`, `/readyz`, `/metrics`: open to any scraper or supervisor.
pub fn probes() -> Router<AdminState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The control API under `/admin`: what a token check would guard.
pub fn control() -> Router<AdminState> {
    Router::new()
        .route("/admin/links", get(links).post(add_links))
        .route("/admin/conditions", get(conditions))
        .route("/admin/conditions/{peer_dc}", put(set_conditions))
        .route("/admin/cut", post(cut))
        .route("/admin/heal", post(heal))
}

/// `cut`'s and `heal`'s query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerQuery {
    /// One peer DC; every peer DC when absent. Unknown keys are refused, so a typo
    /// (`?peers=dc2`) cannot cut every DC.
    peer: Option<String>,
}

/// `POST /admin/links`' body as an object: the links as a configuration lists
/// them (the body may also be the list alone). Each is kept as JSON until it is
/// read on its own, so an error names its position.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddLinks {
    /// The links to serve (those served already included, or not).
    links: Vec<serde_json::Value>,
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if s.stopping.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response()
    } else {
        "ready".into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    ([("content-type", telemetry::CONTENT_TYPE)], s.registry.render()).into_response()
}

async fn links(State(s): State<AdminState>) -> Json<Vec<LinkView>> {
    Json(s.handle.links())
}

async fn add_links(
    State(s): State<AdminState>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, "bad_request", rejection.body_text()),
    };
    // A list of links, or an object naming it as the configuration does. (serde
    // would read an array positionally as `AddLinks`, so the two are told apart
    // here.)
    let asked = match body {
        serde_json::Value::Array(links) => AddLinks { links },
        body @ serde_json::Value::Object(_) => match serde_json::from_value(body) {
            Ok(asked) => asked,
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                r#"the body must be a JSON list of links, or {"links": [...]}"#.to_owned(),
            );
        }
    };
    let mut links = Vec::with_capacity(asked.links.len());
    for (i, link) in asked.links.into_iter().enumerate() {
        if !link.is_object() {
            return error(StatusCode::BAD_REQUEST, "bad_request", format!("link {i}: must be a JSON object"));
        }
        let listen = match link.get("listen") {
            Some(serde_json::Value::String(listen)) => format!(" (listen {listen})"),
            _ => String::new(),
        };
        match serde_json::from_value::<LinkConfig>(link) {
            Ok(link) => links.push(link),
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("link {i}{listen}: {e}")),
        }
    }
    match s.handle.add_links(&links) {
        Ok(added) => Json(added).into_response(),
        Err(e) => control_error(e),
    }
}

async fn conditions(State(s): State<AdminState>) -> Json<BTreeMap<String, Conditions>> {
    Json(s.handle.conditions())
}

async fn set_conditions(
    State(s): State<AdminState>,
    Path(peer): Path<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, "bad_request", rejection.body_text()),
    };
    // serde reads a JSON array positionally (`[1]` would set `delay_ms`): only an
    // object names the fields it changes.
    if !body.is_object() {
        return error(StatusCode::BAD_REQUEST, "bad_request", "the body must be a JSON object".to_owned());
    }
    let update: ConditionsUpdate = match serde_json::from_value(body) {
        Ok(update) => update,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    match s.handle.set_conditions(&peer, update) {
        Ok(now) => Json(now).into_response(),
        Err(e) => control_error(e),
    }
}

async fn cut(State(s): State<AdminState>, query: Result<Query<PeerQuery>, QueryRejection>) -> Response {
    match query {
        Ok(Query(q)) => {
            s.handle.cut(q.peer.as_deref()).map_or_else(control_error, |c| Json(c).into_response())
        }
        Err(rejection) => error(StatusCode::BAD_REQUEST, "bad_request", rejection.body_text()),
    }
}

async fn heal(State(s): State<AdminState>, query: Result<Query<PeerQuery>, QueryRejection>) -> Response {
    match query {
        Ok(Query(q)) => {
            s.handle.heal(q.peer.as_deref()).map_or_else(control_error, |c| Json(c).into_response())
        }
        Err(rejection) => error(StatusCode::BAD_REQUEST, "bad_request", rejection.body_text()),
    }
}

fn control_error(e: ControlError) -> Response {
    match e {
        ControlError::UnknownPeer(_) => error(StatusCode::NOT_FOUND, "unknown_peer", e.to_string()),
        ControlError::Invalid { .. } | ControlError::InvalidLink(_) => {
            error(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
        }
        ControlError::Conflict { .. } => error(StatusCode::CONFLICT, "conflict", e.to_string()),
        ControlError::Bind { ref source, .. } => {
            let status = if source.kind() == std::io::ErrorKind::AddrInUse {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            error(status, "cannot_bind", e.to_string())
        }
        ControlError::Stopping => error(StatusCode::SERVICE_UNAVAILABLE, "stopping", e.to_string()),
    }
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(serde_json::json!({"error": {"code": code, "message": message}}))).into_response()
}
