//! The comment count job ([`data::COMMENT_COUNT_JOB`]): the web server that wrote
//! (or deleted) a comment did not confirm its count on the post's shard (it failed,
//! or died after the commit). Counting is idempotent per comment, so running the
//! job after the server did changes nothing.

use data::{CommentCount, Job};

use crate::{Context, JobError};

/// Count (or uncount) the job's comment on its post's shard, then drop the cached
/// post everywhere so that its count shows: also when the count was already
/// right, since the server that counted it may have died before dropping it.
pub(crate) async fn count(ctx: &Context, job: &Job) -> Result<(), JobError> {
    let count: CommentCount = serde_json::from_value(job.payload.clone())
        .map_err(|e| JobError::Permanent(format!("payload is not a comment count ({e}): {}", job.payload)))?;
    let change = ctx
        .data()
        .count_comment(count)
        .await
        .map_err(|e| JobError::Retry(format!("counting the comment: {e}")))?;
    ctx.inner
        .invalidator
        .invalidate(feed::POST_CACHE, &count.post_id.to_string())
        .await
        .map_err(|e| JobError::Retry(format!("invalidating the cached post: {e}")))?;
    tracing::info!(
        post_id = count.post_id,
        comment_id = count.comment_id,
        counted = count.counted,
        ?change,
        "comment count brought up to date by a worker"
    );
    Ok(())
}
