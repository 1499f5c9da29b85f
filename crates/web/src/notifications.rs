//! Notifications of the signed-in user: the list (newest first, paged), the
//! unread count (the top bar's badge) and marking them read — the operations,
//! shared by the JSON API and the pages, and the API's handlers.
//!
//! Notifications are written by workers (a `notify` job enqueued with the
//! follow, like or comment: [`data::Notify`]); this module only reads them and
//! marks them read. The unread count is read through the `unread` cache (L1 and
//! Redis, keyed by user id): a page view costs no query while nothing changed;
//! the worker that delivers one, and marking them read here, invalidate it on
//! every web server; a miss counts on the shard (up to [`data::UNREAD_CAP`]).

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Query, Request, State};
use axum::response::{IntoResponse, Response};
use data::{NotificationKind, NotificationRecord, UserRecord};
use serde::{Deserialize, Serialize};

use crate::api::ApiJson;
use crate::body::{ReadError, read_limited};
use crate::error::ApiError;
use crate::service::{self, AuthorView};
use crate::state::AppState;
use crate::viewer::Authenticated;

/// A notification as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationView {
    /// Id, as a string; time-ordered (`up_to` of marking read takes it).
    pub id: String,
    /// `follow`, `like` or `comment`.
    pub kind: NotificationKind,
    /// Who did it (absent if that account is gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<AuthorView>,
    /// The post liked or commented on (likes and comments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_id: Option<String>,
    /// The comment (comments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<String>,
    /// Whether it was marked read.
    pub read: bool,
    /// RFC 3339 delivery time.
    pub created_at: String,
}

/// One page of notifications.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationPage {
    /// Newest first.
    pub notifications: Vec<NotificationView>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
    /// How many are unread (all pages), counted up to [`data::UNREAD_CAP`].
    pub unread: i64,
}

/// The unread count, cached (L1, then Redis, then the user's shard).
pub async fn unread_count(state: &AppState, user_id: i64) -> Result<i64, ApiError> {
    let data = state.data().clone();
    let found = state
        .caches()
        .unread
        .get_or_fill(itoa::Buffer::new().format(user_id), || {
            service::fill(async move { data.unread_notifications(user_id).await.map(Some) })
        })
        .await?;
    Ok(found.map_or(0, |n| *n))
}

/// A page of `user_id`'s notifications, older than `cursor` if given, with their
/// actors' current names.
pub async fn page(
    state: &AppState,
    user_id: i64,
    cursor: Option<data::PostId>,
    limit: usize,
) -> Result<NotificationPage, ApiError> {
    let before = cursor.map(data::PostId::get);
    let (rows, unread) = tokio::join!(
        state.data().notifications(user_id, before, limit as i64 + 1),
        unread_count(state, user_id)
    );
    let (mut rows, unread) = (rows?, unread?);
    let next_cursor = (rows.len() > limit).then(|| service::encode_cursor(rows[limit - 1].notification_id));
    rows.truncate(limit);
    let actor_ids: Vec<i64> = rows.iter().map(|n| n.actor_id).collect();
    let data = state.data();
    let actors = service::batch_by_id(&state.caches().profiles, &actor_ids, |ids| async move {
        Ok(data.profiles(&ids).await?.into_iter().map(|u| (u.user_id, u)).collect())
    })
    .await?;
    let notifications = rows.iter().zip(actors).map(|(n, actor)| view(n, actor.as_deref())).collect();
    Ok(NotificationPage { notifications, next_cursor, unread })
}

fn view(n: &NotificationRecord, actor: Option<&UserRecord>) -> NotificationView {
    NotificationView {
        id: n.notification_id.to_string(),
        kind: n.kind,
        actor: actor.map(|u| AuthorView {
            id: u.user_id.to_string(),
            username: u.username.clone(),
            display_name: u.display_name.clone(),
        }),
        post_id: n.post_id.map(|id| id.to_string()),
        comment_id: n.comment_id.map(|id| id.to_string()),
        read: n.seen,
        created_at: service::rfc3339(n.created_ms),
    }
}

/// What marking read did.
#[derive(Debug, Clone, Serialize)]
pub struct MarkedRead {
    /// How many were unread and are now read.
    pub marked: u64,
    /// How many remain unread (delivered after `up_to`).
    pub unread: i64,
}

/// Mark `user_id`'s notifications read, all or up to `up_to` (an id), and drop
/// the cached count everywhere.
pub async fn mark_read(state: &AppState, user_id: i64, up_to: Option<i64>) -> Result<MarkedRead, ApiError> {
    let marked = state.data().mark_notifications_seen(user_id, up_to).await?;
    // Also when nothing changed: an earlier attempt may have committed and
    // failed before invalidating.
    state.caches().unread.invalidate(itoa::Buffer::new().format(user_id)).await;
    Ok(MarkedRead { marked, unread: unread_count(state, user_id).await? })
}

/// Parse a notification id (`up_to`): a positive whole number.
pub fn parse_notification_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::bad_request("invalid_notification_id", "notification ids are positive whole numbers")
    })
}

/// `limit` and `cursor` of the list.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    /// Page size.
    limit: Option<String>,
    /// Opaque position from a previous page.
    cursor: Option<String>,
}

/// `GET /notifications`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let cursor = service::parse_cursor(q.cursor.as_deref())?;
    let limit = service::parse_limit(q.limit.as_deref())?;
    Ok(Json(page(&state, s.user_id, cursor, limit).await?).into_response())
}

/// The unread count's answer.
#[derive(Debug, Serialize)]
struct Unread {
    /// Unread notifications, counted up to [`data::UNREAD_CAP`].
    unread: i64,
}

/// `GET /notifications/unread`.
pub(crate) async fn unread(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
) -> Result<Response, ApiError> {
    Ok(Json(Unread { unread: unread_count(&state, s.user_id).await? }).into_response())
}

/// The optional body of `POST /notifications/read`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    /// Mark read only up to this notification (the newest one the client
    /// showed), so one delivered meanwhile stays unread; all when absent.
    up_to: Option<String>,
}

/// `POST /notifications/read`: an empty body marks every notification read; a
/// JSON object may name `up_to`.
pub(crate) async fn read(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    request: Request,
) -> Result<Response, ApiError> {
    let limit = state.config().http.max_body_bytes;
    let (parts, body) = request.into_parts();
    let bytes = read_limited(body, limit).await.map_err(|e| match e {
        ReadError::TooLarge => ApiError::TooLarge,
        ReadError::Unreadable(e) => ApiError::bad_request("invalid_body", format!("reading the body: {e}")),
    })?;
    let body = if bytes.is_empty() {
        ReadBody::default()
    } else {
        let request = Request::from_parts(parts, Body::from(bytes));
        ApiJson::<ReadBody>::from_request(request, &state).await?.0
    };
    let up_to = body.up_to.as_deref().map(parse_notification_id).transpose()?;
    Ok(Json(mark_read(&state, s.user_id, up_to).await?).into_response())
}

/// The signed-in viewer's unread count for the top bar: `None` when it cannot
/// be had (Redis and the shard both failing): the page is served without it.
pub(crate) async fn badge(state: &AppState, user_id: i64) -> Option<i64> {
    match unread_count(state, user_id).await {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, user_id, "no unread count for the top bar");
            None
        }
    }
}
