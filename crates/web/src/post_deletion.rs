//! Deleting one's own post (`DELETE /api/v1/posts/{id}`, and the post page's
//! button). The post, its likes and its count entries go in one statement on its
//! shard, with a clean-up job ([`data::POST_DELETED_JOB`]) due at once; this
//! server then takes the post out of every timeline and cache itself, so the
//! author's next read no longer shows it, and leaves the rest to the job (its
//! comments on every shard, its photo's objects once nothing names them, and the
//! same timeline and cache steps again, in case this server fails before them).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::ApiPath;
use crate::error::ApiError;
use crate::service;
use crate::state::AppState;
use crate::viewer::Authenticated;
use data::{DeleteRefusal, PostId};

/// `viewer` deletes their post `id`.
pub async fn delete_post(state: &AppState, viewer: i64, id: PostId) -> Result<(), ApiError> {
    let deleted = match state.data().delete_post(id, viewer).await? {
        Ok(deleted) => deleted,
        Err(DeleteRefusal::NotFound) => return Err(ApiError::NotFound("no such post")),
        Err(DeleteRefusal::NotAllowed) => {
            return Err(ApiError::Forbidden("only its author may delete a post"));
        }
    };
    service::invalidate_post(state, id.get()).await;
    service::invalidate_author(state, viewer).await;
    // Its notifications went with it: the author's unread count may have dropped.
    state.caches().unread.invalidate(itoa::Buffer::new().format(viewer)).await;
    let author = service::profile_by_id(state, viewer).await?;
    let retracted = feed::retract(
        state.data(),
        state.timelines(),
        &state.caches().invalidator,
        state.config().feed.celebrity_threshold,
        deleted.post.post_id,
        viewer,
        author.followers_count,
    )
    .await;
    if let Err(e) = retracted {
        tracing::warn!(error = %e, post_id = id.get(), "taking a deleted post out of timelines failed; its clean-up job does it");
    }
    Ok(())
}

/// `DELETE /api/v1/posts/{id}`: 204.
pub(crate) async fn delete_handler(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = service::parse_post_id(&id)?;
    delete_post(&state, s.user_id, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
