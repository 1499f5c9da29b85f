//! Job handlers. Each is idempotent: a job may run more than once (a worker died
//! after doing the work but before completing the job).

use std::sync::Arc;

use data::{Change, Job, PostId, StoredImage};

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

/// Make a photo's thumbnails, record them, mark the post ready, fan it out.
pub(crate) async fn photo(ctx: &Context, job: &Job) -> Result<(), JobError> {
    let id = post_id(job)?;
    let data = ctx.data();
    let Some(post) = data.post(id).await.map_err(retry("loading the post"))? else {
        tracing::info!(post_id = id.get(), "post is gone; nothing to do");
        return Ok(());
    };
    let Some(photo) = post.photo.clone() else {
        return Err(JobError::Permanent(format!("post {id} has no photo")));
    };
    if post.status == "processing" {
        let key = media::ObjectKey::parse(&photo.original.key)
            .map_err(|e| JobError::Permanent(format!("bad original key: {e}")))?;
        let store: Arc<dyn media::ObjectStore> = ctx.inner.store.clone();
        let limits = media::Limits { max_pixels: ctx.config().media.max_pixels, ..media::Limits::default() };
        let thumbs = tokio::task::spawn_blocking(move || -> Result<Vec<StoredImage>, JobError> {
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
        .map_err(|e| JobError::Retry(format!("thumbnail task: {e}")))??;
        let change = data.finish_photo(id, &thumbs).await.map_err(retry("recording thumbnails"))?;
        if change == Change::Unchanged {
            tracing::info!(post_id = id.get(), "another run recorded the thumbnails first");
        }
        ctx.inner.invalidator.invalidate(feed::POST_CACHE, &id.get().to_string()).await;
    }
    // Ready (now or by an earlier run): fan out. Repeating it is harmless.
    let author = data.profile(post.user_id).await.map_err(retry("loading the author"))?;
    let followers = author.map_or(0, |a| a.followers_count);
    let threshold = ctx.config().feed.celebrity_threshold;
    let (timelines, invalidator) = (&ctx.inner.timelines, &ctx.inner.invalidator);
    feed::fan_out(data, timelines, invalidator, threshold, id.get(), post.user_id, followers).await;
    tracing::info!(post_id = id.get(), "photo ready");
    Ok(())
}

/// A job became a dead letter: leave what it was about in a clear state.
pub(crate) async fn buried(ctx: &Context, job: &Job) {
    if job.kind == data::PHOTO_JOB
        && let Ok(id) = post_id(job)
    {
        match ctx.data().fail_photo(id).await {
            Ok(_) => {
                ctx.inner.invalidator.invalidate(feed::POST_CACHE, &id.get().to_string()).await;
            }
            Err(e) => tracing::error!(error = %e, "marking the post failed"),
        }
    }
}
