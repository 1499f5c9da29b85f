//! Who is asking: the request's session as axum extractors ([`Viewer`],
//! [`Authenticated`]) and the middleware that loads it once per request and runs
//! the request under the session's read-your-writes floor ([`session_scope`]).
//!
//! The session store itself ([`crate::sessions::Sessions`]) knows nothing of requests;
//! this module sits above it and above [`AppState`].

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use data::Lsns;

use crate::auth::{SESSION_COOKIE, cookie};
use crate::error::ApiError;
use crate::state::AppState;

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

/// The logged-in user of a request.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub user_id: i64,
    /// The token that proved it (to log out).
    pub token: String,
}

/// The request's session, if any: a bearer token wins over the `sid` cookie.
/// A presented but unknown or expired token is treated as no session.
#[derive(Debug, Clone)]
pub struct Viewer(pub Option<Session>);

/// What [`session_scope`] found, for the extractors (a Redis failure is kept so
/// that only the handlers that need the session fail).
#[derive(Clone)]
struct Loaded(Result<Option<Session>, Arc<String>>);

fn request_token(headers: &HeaderMap) -> Option<String> {
    bearer(headers).or_else(|| cookie(headers, SESSION_COOKIE))
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(Loaded(loaded)) = parts.extensions.get::<Loaded>() {
            return loaded.clone().map(Viewer).map_err(|e| ApiError::Unavailable { reason: e.to_string() });
        }
        let Some(token) = request_token(&parts.headers) else { return Ok(Viewer(None)) };
        let found = state.sessions().lookup(&token).await?;
        Ok(Viewer(found.map(|user_id| Session { user_id, token })))
    }
}

/// Load the request's session (its user, usually from memory), run the rest of
/// the request (`next`) in a [`data::consistency::scope_lazy`] whose floor is
/// the session's read-your-writes floor, read from Redis only if a read of the
/// request may go to a replica (a request served from caches or by primaries
/// never reads it), and raise the session's floor to where the request's writes
/// committed, and mark its user as a writer for the hot copies
/// ([`crate::hotkeys`]: here, and announced to every web server). Anonymous
/// requests run with no floor.
///
/// Called by [`crate::observe::track`], the one middleware, rather than being a
/// layer of its own: each `from_fn` layer clones and boxes the services below
/// it on every request (about 3% of a cached profile read's CPU).
pub async fn session_scope(state: &AppState, mut req: Request, next: Next) -> Response {
    let Some(token) = request_token(req.headers()) else { return next.run(req).await };
    let found = state.sessions().lookup(&token).await;
    let loaded = match found {
        Ok(Some(user_id)) => Ok(Some(Session { user_id, token: token.clone() })),
        Ok(None) => Ok(None),
        Err(e) => Err(Arc::new(e.to_string())),
    };
    let user_id = match &loaded {
        Ok(Some(session)) => Some(session.user_id),
        _ => None,
    };
    let live = user_id.is_some();
    if let Some(user_id) = user_id {
        state.active_users().saw(user_id);
    }
    req.extensions_mut().insert(Loaded(loaded));
    let (response, written) = if live {
        let (sessions, floor_token) = (state.sessions().clone(), token.clone());
        let load: data::consistency::FloorLoader = Arc::new(move || {
            let (sessions, token) = (sessions.clone(), floor_token.clone());
            Box::pin(async move { sessions.floor_of(&token).await })
        });
        data::consistency::scope_lazy(load, next.run(req)).await
    } else {
        data::consistency::scope(Lsns::new(), next.run(req)).await
    };
    if let Some(user_id) = user_id
        && !written.is_empty()
    {
        // No hot copy read before this write is served to its writer: here at
        // once, and on every other web server once the announcement (sent after
        // the write's invalidations, beside the floor) reaches it.
        let hot = state.hotkeys();
        hot.wrote(user_id);
        let (raised, ()) = tokio::join!(
            state.sessions().raise_floor(&token, &written),
            hot.announce(&state.caches().invalidator, user_id)
        );
        if let Err(e) = raised {
            // The write stands; this session's next reads may be served by
            // the primary's replicas without it for up to the lag bound.
            tracing::warn!(error = %e, "could not record the session's read-your-writes floor");
        }
    }
    response
}

/// A request that must be logged in (401 otherwise).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Session);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Viewer::from_request_parts(parts, state).await? {
            Viewer(Some(s)) => Ok(Authenticated(s)),
            Viewer(None) => Err(ApiError::Unauthenticated),
        }
    }
}
