//! Profiles and the people around them: editing one's shown name and bio, and
//! the followers and following lists (newest edge first, paged) — the
//! operations, shared by the JSON API and the pages, and the API's handlers.
//!
//! An edit is one statement on the user's shard; the cached profile is then
//! invalidated (Redis, and every web server's L1 through pub/sub), so every
//! server shows the new name at once. Posts are rendered with their author's
//! current profile (`service::CachedPost`), so they follow without a write each.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use data::{DataError, EdgeCursor, FollowEdge};
use serde::{Deserialize, Serialize};

use crate::api::{ApiJson, ApiPath};
use crate::error::ApiError;
use crate::service::{self, UserView};
use crate::state::AppState;
use crate::viewer::{Authenticated, Viewer};

/// Longest bio, in characters (the table checks the same bound).
pub const MAX_BIO: usize = 300;

/// Trim and check a bio: at most [`MAX_BIO`] characters, no control characters
/// but line breaks and tabs. Empty clears it.
pub fn check_bio(raw: &str) -> Result<String, ApiError> {
    let bio = raw.trim();
    if bio.chars().count() > MAX_BIO {
        return Err(ApiError::invalid("invalid_bio", format!("a bio is at most {MAX_BIO} characters")));
    }
    if service::has_control_chars(bio, true) {
        return Err(ApiError::invalid("invalid_bio", "a bio cannot contain control characters"));
    }
    Ok(bio.to_owned())
}

/// Change `user_id`'s shown name and/or bio (at least one given). Both are
/// checked before anything is written: a bad one changes nothing.
pub async fn edit_profile(
    state: &AppState,
    user_id: i64,
    display_name: Option<&str>,
    bio: Option<&str>,
) -> Result<UserView, ApiError> {
    if display_name.is_none() && bio.is_none() {
        return Err(ApiError::bad_request("invalid_body", "give `display_name`, `bio` or both"));
    }
    let display_name = display_name.map(service::check_display_name).transpose()?;
    let bio = bio.map(check_bio).transpose()?;
    let user =
        state.data().update_profile(user_id, display_name.as_deref(), bio.as_deref()).await.map_err(|e| {
            match e {
                DataError::NotFound => ApiError::NotFound("no such user"),
                e => e.into(),
            }
        })?;
    service::invalidate_profile(state, user_id).await;
    if let Some(name) = &display_name {
        tracing::info!(user_id, display_name = %name, "display name changed");
        // Found under the new name at once (the old one is dropped when read).
        crate::directory::record_user(state, user_id, &user.username, name).await;
    }
    Ok(service::user_view(&user, Some(false)))
}

/// Which list of a user's edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Who follows the user.
    Followers,
    /// Whom the user follows.
    Following,
}

/// One page of users.
#[derive(Debug, Clone, Serialize)]
pub struct UserPage {
    /// Newest edge first.
    pub users: Vec<UserView>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

/// Parse an opaque followers/following `cursor`: 16 bytes, the last edge's
/// time (microseconds) and other user, base64url.
pub fn parse_edge_cursor(raw: Option<&str>) -> Result<Option<EdgeCursor>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let bad = || ApiError::bad_request("invalid_cursor", "cursor is not one this server issued");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| bad())?;
    let (at, user) = bytes.split_at(8);
    let at_us = i64::from_be_bytes(at.try_into().map_err(|_| bad())?);
    let user_id = i64::from_be_bytes(user.try_into().map_err(|_| bad())?);
    if at_us < 0 || user_id <= 0 {
        return Err(bad());
    }
    Ok(Some(EdgeCursor { at_us, user_id }))
}

fn encode_edge_cursor(edge: FollowEdge) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&edge.at_us.to_be_bytes());
    bytes[8..].copy_from_slice(&edge.user_id.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A page of `username`'s followers or followees as `viewer` sees them
/// (`followed_by_me` from [`service::viewer_followees`]), newest edge first.
pub async fn edges(
    state: &AppState,
    username: &str,
    side: Side,
    cursor: Option<EdgeCursor>,
    limit: usize,
    viewer: Option<i64>,
) -> Result<UserPage, ApiError> {
    let user_id = service::user_id_of(state, username).await?;
    let data = state.data();
    let mut edges = match side {
        Side::Followers => data.followers_page(user_id, cursor, limit as i64 + 1).await?,
        Side::Following => data.following_page(user_id, cursor, limit as i64 + 1).await?,
    };
    let next_cursor = (edges.len() > limit).then(|| encode_edge_cursor(edges[limit - 1]));
    edges.truncate(limit);
    let ids: Vec<i64> = edges.iter().map(|e| e.user_id).collect();
    let profiles = service::batch_by_id(&state.caches().profiles, &ids, |ids| async move {
        Ok(data.profiles(&ids).await?.into_iter().map(|u| (u.user_id, u)).collect())
    })
    .await?;
    let followees = match viewer {
        Some(v) => Some(service::viewer_followees(state, v).await?),
        None => None,
    };
    // A user whose account is gone is left out.
    let users = profiles
        .iter()
        .flatten()
        .map(|u| {
            let followed = match (viewer, &followees) {
                (Some(v), _) if v == u.user_id => Some(false),
                (Some(_), Some(f)) => Some(f.contains(&u.user_id)),
                _ => None,
            };
            service::user_view(u, followed)
        })
        .collect();
    Ok(UserPage { users, next_cursor })
}

/// `GET /users/me`: the signed-in user's own profile.
pub(crate) async fn me(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
) -> Result<Response, ApiError> {
    let user = service::profile_by_id(&state, s.user_id).await?;
    Ok(Json(service::user_view(&user, Some(false))).into_response())
}

/// The body of `PATCH /users/me`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditBody {
    /// The new shown name, if it changes.
    display_name: Option<String>,
    /// The new bio, if it changes (empty clears it).
    bio: Option<String>,
}

/// `PATCH /users/me`: change the signed-in user's shown name and/or bio.
pub(crate) async fn edit_me(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    ApiJson(body): ApiJson<EditBody>,
) -> Result<Response, ApiError> {
    let user = edit_profile(&state, s.user_id, body.display_name.as_deref(), body.bio.as_deref()).await?;
    Ok(Json(user).into_response())
}

/// `limit` and `cursor` of the lists.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    /// Page size.
    limit: Option<String>,
    /// Opaque position from a previous page.
    cursor: Option<String>,
}

async fn list(
    state: AppState,
    viewer: Option<i64>,
    username: String,
    side: Side,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let cursor = parse_edge_cursor(q.cursor.as_deref())?;
    let limit = service::parse_limit(q.limit.as_deref())?;
    Ok(Json(edges(&state, &username, side, cursor, limit, viewer).await?).into_response())
}

/// `GET /users/{username}/followers`.
pub(crate) async fn followers(
    State(state): State<AppState>,
    Viewer(viewer): Viewer,
    ApiPath(username): ApiPath<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    list(state, viewer.map(|s| s.user_id), username, Side::Followers, query).await
}

/// `GET /users/{username}/following`.
pub(crate) async fn following(
    State(state): State<AppState>,
    Viewer(viewer): Viewer,
    ApiPath(username): ApiPath<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    list(state, viewer.map(|s| s.user_id), username, Side::Following, query).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bios_are_checked() {
        assert_eq!(check_bio("  hello\nworld  ").unwrap(), "hello\nworld");
        assert_eq!(check_bio("").unwrap(), "", "empty clears it");
        assert!(check_bio(&"é".repeat(MAX_BIO)).is_ok());
        assert!(check_bio(&"é".repeat(MAX_BIO + 1)).is_err());
        assert!(check_bio("bell\u{7}").is_err());
        assert!(check_bio("esc\u{1b}[31m").is_err());
    }

    #[test]
    fn edge_cursors_round_trip_and_reject_garbage() {
        let edge = FollowEdge { user_id: 1_234_567, at_us: 1_733_500_000_123_456 };
        let c = encode_edge_cursor(edge);
        assert_eq!(parse_edge_cursor(Some(&c)).unwrap(), Some(EdgeCursor::from(edge)));
        let neg = encode_edge_cursor(FollowEdge { user_id: -1, at_us: 5 });
        for bad in ["", "!!", "AAAA", &service::encode_cursor(5), &neg] {
            assert!(parse_edge_cursor(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
