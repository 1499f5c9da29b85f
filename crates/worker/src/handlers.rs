//! Job handlers. Each is idempotent: a job may run more than once (a worker died
//! after doing the work but before completing the job).
//!
//! Every read a handler makes goes to the shard's primary ([`data::primary_reads`]):
//! a job is due as soon as its transaction commits, when a replica (even one within
//! the lag bound) may not have the row yet, or may have an older follower list.

use std::sync::Arc;
use std::time::Duration;

use data::{Change, Job, PostId, PostRecord, StoredImage};

use crate::{Context, JobError};

fn post_id(job: &Job) -> Result<PostId, JobError> {
    job.payload
        .get("post_id")
        .and_then(serde_json::Value::as_i64)
        .and_then(|id| PostId::from_i64(id).ok())
        .ok_or_else(|| JobError::Permanent(format!("payload has no valid post_id: {}", job.payload)))
}

fn retry(what: &str) -> impl FnOnce(data::DataError) -> JobError + '_ {
    move |e| JobError::Retry(format!("{what}: {e}"))
}

/// The job's post, read on the primary. A job is written in the same transaction
/// as its post, so a post not found is a retry (bounded by the job's attempts),
/// never a success that would leave the post unprocessed.
async fn load_post(ctx: &Context, id: PostId) -> Result<PostRecord, JobError> {
    data::primary_reads(ctx.data().post(id))
        .await
        .map_err(retry("loading the post"))?
        .ok_or_else(|| JobError::Retry(format!("post {id} not found on its shard's primary")))
}

/// Make and store the thumbnails of the stored `original` (a post's photo, an
/// avatar). A missing or undecodable original is permanent; storing is retried.
pub(crate) async fn make_thumbnails(
    ctx: &Context,
    original: &StoredImage,
) -> Result<Vec<StoredImage>, JobError> {
    let key = media::ObjectKey::parse(&original.key)
        .map_err(|e| JobError::Permanent(format!("bad original key: {e}")))?;
    let store: Arc<dyn media::ObjectStore> = ctx.inner.store.clone();
    // The original was checked against the upload limits when it was accepted
    // (and normalizing may have made it larger): only the pixel limit guards
    // the decoder here.
    let limits = media::Limits {
        max_pixels: ctx.config().media.max_pixels,
        max_bytes: usize::MAX,
        ..media::Limits::default()
    };
    tokio::task::spawn_blocking(move || -> Result<Vec<StoredImage>, JobError> {
        let original = store
            .get(&key)
            .map_err(|e| JobError::Retry(format!("reading the original: {e}")))?
            .ok_or_else(|| JobError::Permanent(format!("the original {key} is missing")))?;
        let thumbs = media::thumbnails_with_limits(&original, &limits).map_err(|e| match e {
            media::MediaError::Encode(m) => JobError::Retry(m),
            e => JobError::Permanent(e.to_string()),
        })?;
        thumbs
            .into_iter()
            .map(|t| {
                let key = store
                    .put(&t.bytes, t.format)
                    .map_err(|e| JobError::Retry(format!("storing a thumbnail: {e}")))?;
                Ok(StoredImage { key: key.as_str().to_owned(), width: t.width, height: t.height })
            })
            .collect()
    })
    .await
    .map_err(|e| JobError::Retry(format!("thumbnail task: {e}")))?
}

/// Make a photo's thumbnails, record them, mark the post ready, fan it out.
pub(crate) async fn photo(ctx: &Context, job: &Job) -> Result<(), JobError> {
    let id = post_id(job)?;
    let data = ctx.data();
    let mut post = load_post(ctx, id).await?;
    let Some(photo) = post.photo.clone() else {
        return Err(JobError::Permanent(format!("post {id} has no photo")));
    };
    if post.status == "processing" {
        let thumbs = make_thumbnails(ctx, &photo.original).await?;
        hold_before_finish(ctx).await;
        let change = data.finish_photo(id, &thumbs).await.map_err(retry("recording thumbnails"))?;
        if change == Change::Unchanged {
            // Another run recorded its (identical) thumbnails first, or the post
            // failed meanwhile: look again before fanning it out.
            tracing::info!(post_id = id.get(), "the post was no longer processing");
            post = load_post(ctx, id).await?;
        } else {
            post.status = "ready".into();
        }
    }
    if post.status != "ready" {
        tracing::info!(post_id = id.get(), status = %post.status, "post not ready; nothing to fan out");
        return Ok(());
    }
    // Ready (now or by an earlier run): drop the cached `processing` copy, fan
    // out. Repeating either is harmless, so both run again on every retry. Both
    // reach every data center's Redis; a data center that missed either (its
    // Redis down) would show `processing`, or miss the post, so that is a retry
    // too, until the data center is back or the job's attempts run out. The
    // fan-out runs even when the invalidation failed: a data center that is down
    // must not keep the post from the timelines of those that are up.
    let invalidated = ctx.inner.invalidator.invalidate(feed::POST_CACHE, &id.get().to_string()).await;
    let fanned = fan_out(ctx, id, post.user_id).await;
    invalidated.map_err(|e| JobError::Retry(format!("invalidating the cached post: {e}")))?;
    fanned?;
    tracing::info!(post_id = id.get(), "photo ready");
    Ok(())
}

/// A text post's outbox job: the web server that wrote the post did not confirm
/// its fan-out (it failed, or the server died after the commit). Fan it out.
pub(crate) async fn fanout(ctx: &Context, job: &Job) -> Result<(), JobError> {
    let id = post_id(job)?;
    let post = load_post(ctx, id).await?;
    if post.status != "ready" {
        tracing::info!(post_id = id.get(), status = %post.status, "post not ready; nothing to fan out");
        return Ok(());
    }
    fan_out(ctx, id, post.user_id).await?;
    tracing::info!(post_id = id.get(), "post fanned out by a worker");
    Ok(())
}

/// Fan a ready post out to its author's followers (primary reads). A failure is
/// a retry: fan-out is idempotent.
async fn fan_out(ctx: &Context, id: PostId, author: i64) -> Result<(), JobError> {
    let data = ctx.data();
    let profile = data::primary_reads(data.profile(author)).await.map_err(retry("loading the author"))?;
    let followers = profile.map_or(0, |a| a.followers_count);
    let threshold = ctx.config().feed.celebrity_threshold;
    let (timelines, invalidator) = (&ctx.inner.timelines, &ctx.inner.invalidator);
    let done = data::primary_reads(feed::fan_out(
        data,
        timelines,
        invalidator,
        threshold,
        id.get(),
        author,
        followers,
    ))
    .await
    .map_err(|e| JobError::Retry(format!("fan-out: {e}")))?;
    ctx.inner.metrics.fanned_out(&done);
    Ok(())
}

/// Chaos: wait while the configured file exists.
async fn hold_before_finish(ctx: &Context) {
    let Some(flag) = &ctx.config().chaos.hold_before_finish else { return };
    if tokio::fs::try_exists(flag).await.unwrap_or(false) {
        tracing::warn!(flag = %flag.display(), "chaos: holding before recording the thumbnails");
        while tokio::fs::try_exists(flag).await.unwrap_or(false) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A job became a dead letter: leave what it was about in a clear state.
pub(crate) async fn buried(ctx: &Context, job: &Job) {
    if job.kind == data::PHOTO_JOB
        && let Ok(id) = post_id(job)
    {
        match ctx.data().fail_photo(id).await {
            Ok(_) => {
                // Best effort: a data center not told shows the old state until TTL.
                let _ = ctx.inner.invalidator.invalidate(feed::POST_CACHE, &id.get().to_string()).await;
            }
            Err(e) => tracing::error!(error = %e, "marking the post failed"),
        }
    }
}
