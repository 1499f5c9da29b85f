//! The avatar job ([`data::AVATAR_JOB`]): an uploaded profile photo's
//! thumbnails, then the objects of the avatar it replaced that nothing names
//! any more. Idempotent: thumbnails are content-addressed (made again, the same
//! objects), recorded only while the avatar has none, and removal repeats.

use data::{AvatarJob, Change, Job};

use crate::handlers::make_thumbnails;
use crate::post_deleted::remove_unused_objects;
use crate::{Context, JobError};

/// Make and record the avatar's thumbnails, drop the cached profile everywhere,
/// and remove what the replaced avatar left behind.
pub(crate) async fn avatar(ctx: &Context, job: &Job) -> Result<(), JobError> {
    let work: AvatarJob = serde_json::from_value(job.payload.clone())
        .map_err(|e| JobError::Permanent(format!("payload is not an avatar job ({e}): {}", job.payload)))?;
    let thumbs = make_thumbnails(ctx, &work.original).await?;
    let change = ctx
        .data()
        .finish_avatar(job.user_id, &work.original, &thumbs)
        .await
        .map_err(|e| JobError::Retry(format!("recording the avatar's thumbnails: {e}")))?;
    ctx.inner
        .invalidator
        .invalidate(feed::PROFILE_CACHE, &job.user_id.to_string())
        .await
        .map_err(|e| JobError::Retry(format!("invalidating the cached profile: {e}")))?;
    let removed = match &work.previous {
        Some(previous) => remove_unused_objects(ctx, previous).await?,
        None => 0,
    };
    // Unchanged: done by an earlier run (all of it still named: nothing goes), or
    // replaced since, when what this job made is named by nothing and goes now
    // (the replacement's own job removes only the original it replaced).
    if change == Change::Unchanged {
        remove_unused_objects(ctx, &data::Photo { original: work.original.clone(), thumbnails: thumbs })
            .await?;
    }
    tracing::info!(user_id = job.user_id, ?change, objects_removed = removed, "avatar processed");
    Ok(())
}
