//! `GET /admin/tls` and `POST /admin/tls/reload`, the same on every server with
//! a public TLS listener (the load balancer, the CDN edge): what certificate is
//! in force, and reading its files again. The caller puts them behind its admin
//! token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};

use crate::Certificates;

/// What the routes answer from.
#[derive(Clone)]
struct TlsAdmin {
    /// The certificate in force, if the server has a TLS listener.
    certificates: Option<Arc<Certificates>>,
    /// The server's kind in messages ("load balancer", "edge").
    what: &'static str,
}

/// The routes, for any router state (they carry their own): `GET /admin/tls`
/// (the certificate in force) and `POST /admin/tls/reload` (its files read again;
/// 422 naming why when the new pair is refused, and the old one stays). Both
/// answer 404 when the server has no TLS listener (`certificates` is `None`).
pub fn routes<S: Clone + Send + Sync + 'static>(
    certificates: Option<Arc<Certificates>>,
    what: &'static str,
) -> axum::Router<S> {
    axum::Router::new()
        .route("/admin/tls", get(info))
        .route("/admin/tls/reload", post(reload))
        .with_state(TlsAdmin { certificates, what })
}

/// The error shape of the admin APIs: `{"error": {"code", "message"}}`.
fn coded_error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(serde_json::json!({"error": {"code": code, "message": message}}))).into_response()
}

fn no_tls(what: &str) -> Response {
    coded_error(StatusCode::NOT_FOUND, "tls_not_configured", format!("this {what} has no [tls] section"))
}

async fn info(State(s): State<TlsAdmin>) -> Response {
    match &s.certificates {
        Some(c) => Json(c.info()).into_response(),
        None => no_tls(s.what),
    }
}

async fn reload(State(s): State<TlsAdmin>) -> Response {
    let Some(certificates) = s.certificates.clone() else { return no_tls(s.what) };
    // File reads: off the runtime's thread.
    match tokio::task::spawn_blocking(move || certificates.reload()).await {
        Ok(Ok(info)) => {
            tracing::info!(sha256 = %info.sha256, "TLS certificate reloaded");
            Json(info).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "TLS reload refused; the certificate in force stays");
            coded_error(StatusCode::UNPROCESSABLE_ENTITY, "tls_reload_failed", e.to_string())
        }
        Err(e) => coded_error(StatusCode::INTERNAL_SERVER_ERROR, "tls_reload_failed", e.to_string()),
    }
}
