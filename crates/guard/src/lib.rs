//! The admin APIs' bearer token.
//!
//! Every admin API (a load balancer's drain and resume, a WAN gateway's cut and
//! heal, a DNS server's health table, the controller's kill, promote and
//! `dc-down`) changes or reveals the system's state, so each requires
//! `Authorization: Bearer TOKEN` on its `/admin` (or `/api`) routes when it is given
//! a token: `millions control` generates one with the run directory's secrets
//! (`secrets.json`, mode 0600) and writes it into every node's configuration. The
//! probes (`/healthz`, `/readyz`, `/metrics`) stay open: supervisors and scrapers
//! need no secret. A missing or wrong token is answered 401 in the API's error
//! shape, compared in constant time.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// The shortest token accepted (a typo or an empty setting is not a secret).
pub const MIN_TOKEN_LEN: usize = 16;

/// Whether `token` is long enough to guard anything; the reason if not.
pub fn check(token: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!("must be at least {MIN_TOKEN_LEN} characters"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".into());
    }
    Ok(())
}

/// `router` with every route requiring `token` (when given; `None`: open).
pub fn protect<S: Clone + Send + Sync + 'static>(router: Router<S>, token: Option<&str>) -> Router<S> {
    match token {
        Some(token) => router.layer(axum::middleware::from_fn_with_state(Arc::<str>::from(token), require)),
        None => router,
    }
}

/// The middleware: the request's bearer token must be `token`.
async fn require(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        next.run(request).await
    } else {
        let body = r#"{"error":{"code":"unauthenticated","message":"this admin API needs its bearer token (Authorization: Bearer TOKEN, from the run directory's secrets)"}}"#;
        (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn status(router: &Router, auth: Option<&str>) -> StatusCode {
        let mut request = axum::http::Request::builder().uri("/admin/x");
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap().status()
    }

    #[tokio::test]
    async fn a_protected_route_needs_its_token_and_an_open_one_does_not() {
        let routes = || Router::new().route("/admin/x", get(|| async { "done" }));
        let token = "0123456789abcdef-token";
        let guarded = protect(routes(), Some(token));
        assert_eq!(status(&guarded, Some(&format!("Bearer {token}"))).await, StatusCode::OK);
        for wrong in [None, Some("Bearer nope"), Some(token), Some("Basic x"), Some("Bearer ")] {
            assert_eq!(status(&guarded, wrong).await, StatusCode::UNAUTHORIZED, "{wrong:?}");
        }
        assert_eq!(status(&protect(routes(), None), None).await, StatusCode::OK);
    }

    #[test]
    fn short_or_spaced_tokens_are_refused() {
        assert!(check("0123456789abcdef").is_ok());
        assert!(check("short").unwrap_err().contains("at least 16"));
        assert!(check("0123456789 abcdef").unwrap_err().contains("printable"));
    }
}
