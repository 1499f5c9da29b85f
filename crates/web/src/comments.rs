//! Comments (ADR 0024): writing, deleting and paging a post's comments, for the
//! JSON API (its handlers are here) and the HTML pages.
//!
//! A comment is written on its commenter's shard with its count job; this server
//! then counts it on the post's shard at once and drops the job, so the count a
//! page shows right after includes it. Should the count fail (the post's shard
//! busy failing over) the comment still stands and the job counts it later.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::api::{ApiJson, ApiPath, PageQuery};
use crate::error::ApiError;
use crate::service::{self, AuthorView};
use crate::state::AppState;
use crate::viewer::{Authenticated, Viewer};
use data::{CommentCount, CommentRecord, DataError, DeleteRefusal, PostId, UserRecord};

/// A comment as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CommentView {
    /// Id, as a string (64-bit ids do not fit JavaScript numbers).
    pub id: String,
    /// The post it answers.
    pub post_id: String,
    /// Who wrote it.
    pub author: AuthorView,
    /// The text.
    pub body: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Whether the viewer may delete it (they wrote it or its post); absent when
    /// not logged in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_delete: Option<bool>,
}

/// One page of a post's comments.
#[derive(Debug, Clone, Serialize)]
pub struct CommentPage {
    /// Newest first.
    pub comments: Vec<CommentView>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

/// Trim and check a comment's text: 1 to [`data::MAX_COMMENT_CHARS`] characters,
/// line breaks allowed, no other control characters.
pub fn parse_body(raw: &str) -> Result<String, ApiError> {
    let body = raw.trim();
    if body.is_empty() {
        return Err(ApiError::invalid("invalid_comment", "a comment cannot be empty"));
    }
    if body.chars().count() > data::MAX_COMMENT_CHARS {
        return Err(ApiError::invalid(
            "invalid_comment",
            format!("a comment is at most {} characters", data::MAX_COMMENT_CHARS),
        ));
    }
    if service::has_control_chars(body, true) {
        return Err(ApiError::invalid("invalid_comment", "comments cannot contain control characters"));
    }
    Ok(body.to_owned())
}

/// Parse a comment id from a path.
pub fn parse_comment_id(raw: &str) -> Result<PostId, ApiError> {
    raw.parse::<i64>()
        .ok()
        .and_then(|n| PostId::from_i64(n).ok())
        .ok_or_else(|| ApiError::bad_request("invalid_comment_id", "comment ids are positive whole numbers"))
}

fn view(c: &CommentRecord, author: &UserRecord, viewer: Option<i64>) -> CommentView {
    CommentView {
        id: c.comment_id.to_string(),
        post_id: c.post_id.to_string(),
        author: AuthorView {
            id: author.user_id.to_string(),
            username: author.username.clone(),
            display_name: author.display_name.clone(),
        },
        body: c.body.clone(),
        created_at: service::rfc3339(c.created_ms),
        can_delete: viewer.map(|v| v == c.user_id || v == c.post_author_id),
    }
}

/// Bring the post's count up to date now and drop the job that would have; a
/// failure leaves the job to do it.
async fn count_now(state: &AppState, count: CommentCount, job: &data::QueuedJob) {
    let data = state.data();
    match data.count_comment(count).await {
        Ok(_) => {
            if let Err(e) = data.delete_queued_job(job).await {
                tracing::warn!(error = %e, job_id = job.job_id, "could not drop a done comment count job; a worker repeats it (harmless)");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, post_id = count.post_id, "counting a comment failed; its job counts it later");
        }
    }
    service::invalidate_post(state, count.post_id).await;
}

/// `viewer` comments on post `id`.
pub async fn create(state: &AppState, viewer: i64, id: PostId, raw: &str) -> Result<CommentView, ApiError> {
    let body = parse_body(raw)?;
    let post = service::post_by_id(state, id).await?;
    let author = post.user_id;
    let new = state.data().create_comment(id, author, viewer, &body).await.map_err(|e| match e {
        // The commenter is gone (their session outlived them).
        DataError::NotFound => ApiError::Unauthenticated,
        e => e.into(),
    })?;
    let c = &new.comment;
    let count = CommentCount::of(c, true);
    count_now(state, count, &new.count_job).await;
    let me = service::profile_by_id(state, viewer).await?;
    Ok(view(c, &me, Some(viewer)))
}

/// `viewer` deletes comment `id` (theirs, or one on their post).
pub async fn delete(state: &AppState, viewer: i64, id: PostId) -> Result<(), ApiError> {
    let deleted = match state.data().delete_comment(id, viewer).await? {
        Ok(deleted) => deleted,
        Err(DeleteRefusal::NotFound) => return Err(ApiError::NotFound("no such comment")),
        Err(DeleteRefusal::NotAllowed) => {
            return Err(ApiError::Forbidden("only its author and the post's author may delete a comment"));
        }
    };
    let c = &deleted.comment;
    let count = CommentCount::of(c, false);
    count_now(state, count, &deleted.count_job).await;
    Ok(())
}

/// Post `id`'s comments, newest first, older than `cursor` (404 if the post does
/// not exist). A comment whose author is gone is left out.
pub async fn page(
    state: &AppState,
    id: PostId,
    cursor: Option<PostId>,
    limit: usize,
    viewer: Option<i64>,
) -> Result<CommentPage, ApiError> {
    service::post_by_id(state, id).await?;
    let mut rows = state.data().post_comments(id, cursor, limit as i64 + 1).await?;
    let next_cursor = (rows.len() > limit).then(|| service::encode_cursor(rows[limit - 1].comment_id));
    rows.truncate(limit);
    let author_ids: Vec<i64> = rows.iter().map(|c| c.user_id).collect();
    let data = state.data().clone();
    let authors = service::batch_by_id(&state.caches().profiles, &author_ids, |ids| {
        let data = data.clone();
        async move { Ok(data.profiles(&ids).await?.into_iter().map(|u| (u.user_id, u)).collect()) }
    })
    .await?;
    let comments = rows
        .iter()
        .zip(authors)
        .filter_map(|(c, author)| Some(view(c, author.as_deref()?, viewer)))
        .collect();
    Ok(CommentPage { comments, next_cursor })
}

/// The body of `POST /posts/{id}/comments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommentBody {
    /// The comment's text.
    body: String,
}

/// `POST /api/v1/posts/{id}/comments`: 201 with the comment.
pub(crate) async fn create_handler(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CommentBody>,
) -> Result<Response, ApiError> {
    let id = service::parse_post_id(&id)?;
    let comment = create(&state, s.user_id, id, &body.body).await?;
    let location = format!("/api/v1/comments/{}", comment.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(comment)).into_response())
}

/// `GET /api/v1/posts/{id}/comments`: a page of the post's comments.
pub(crate) async fn list_handler(
    State(state): State<AppState>,
    Viewer(viewer): Viewer,
    ApiPath(id): ApiPath<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = service::parse_post_id(&id)?;
    let (cursor, limit) = crate::api::page_params(query)?;
    Ok(Json(page(&state, id, cursor, limit, viewer.map(|s| s.user_id)).await?).into_response())
}

/// `DELETE /api/v1/comments/{id}`: 204.
pub(crate) async fn delete_handler(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_comment_id(&id)?;
    delete(&state, s.user_id, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
