//! The clean-up after a deleted post ([`data::POST_DELETED_JOB`]), written in the
//! deletion's statement: what lives outside the post's shard goes too. Every
//! step is idempotent, so a retried job (or one that runs after the web server
//! did the first steps itself) repeats them harmlessly.

use std::sync::Arc;

use data::{Job, PostDeleted, PostId};

use crate::{Context, JobError};

/// Take the post out of every timeline and cache, delete its comments on every
/// shard, and remove its photo's objects that no other post names.
pub(crate) async fn clean_up(ctx: &Context, job: &Job) -> Result<(), JobError> {
    let deleted: PostDeleted = serde_json::from_value(job.payload.clone())
        .map_err(|e| JobError::Permanent(format!("payload is not a deleted post ({e}): {}", job.payload)))?;
    let id = PostId::from_i64(deleted.post_id)
        .map_err(|_| JobError::Permanent(format!("payload has no valid post_id: {}", job.payload)))?;
    let data = ctx.data();
    let retry = |what: &'static str| move |e: data::DataError| JobError::Retry(format!("{what}: {e}"));
    // Every read the clean-up makes must see the deletion: the primaries.
    let author =
        data::primary_reads(data.profile(deleted.author)).await.map_err(retry("loading the author"))?;
    let followers = author.map_or(0, |a| a.followers_count);
    data::primary_reads(feed::retract(
        data,
        &ctx.inner.timelines,
        &ctx.inner.invalidator,
        ctx.config().feed.celebrity_threshold,
        deleted.post_id,
        deleted.author,
        followers,
    ))
    .await
    .map_err(|e| JobError::Retry(format!("taking the post out of timelines: {e}")))?;
    let comments = data.delete_post_comments(id).await.map_err(retry("deleting the comments"))?;
    let removed = match &deleted.photo {
        Some(photo) => remove_unused_objects(ctx, photo).await?,
        None => 0,
    };
    tracing::info!(post_id = deleted.post_id, comments, objects_removed = removed, "deleted post cleaned up");
    Ok(())
}

/// Remove `photo`'s objects (original and thumbnails) that no post and no
/// avatar on any shard names any more, and purge them from the CDN; how many. The store is content-addressed,
/// so another post (or avatar) of the same bytes shares them.
pub(crate) async fn remove_unused_objects(ctx: &Context, photo: &data::Photo) -> Result<usize, JobError> {
    let mut keys: Vec<String> =
        std::iter::once(&photo.original).chain(&photo.thumbnails).map(|i| i.key.clone()).collect();
    // A small photo's thumbnails may be the same bytes as each other: one object.
    keys.sort_unstable();
    keys.dedup();
    let in_use = ctx
        .data()
        .photo_keys_in_use(&keys)
        .await
        .map_err(|e| JobError::Retry(format!("checking which objects are in use: {e}")))?;
    let unused: Vec<media::ObjectKey> = keys
        .iter()
        .filter(|k| !in_use.contains(*k))
        .filter_map(|k| match media::ObjectKey::parse(k) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(key = %k, error = %e, "a deleted post named an object key that is not one; left alone");
                None
            }
        })
        .collect();
    let store: Arc<dyn media::ObjectStore> = ctx.inner.store.clone();
    let removed = unused.clone();
    tokio::task::spawn_blocking(move || {
        for key in &removed {
            store.delete(key).map_err(|e| JobError::Retry(format!("removing {}: {e}", key.as_str())))?;
        }
        Ok::<_, JobError>(())
    })
    .await
    .map_err(|e| JobError::Retry(format!("the removal task failed: {e}")))??;
    purge_from_cdn(ctx, &unused).await?;
    Ok(unused.len())
}

/// Purge the removed objects' URLs from every CDN edge (through the controller,
/// `media.cdn_purge_url`): they are cached forever (content-addressed), so a
/// deleted photo would otherwise stay on the edges until evicted. Anything but a
/// 2xx — an edge the controller could not reach — retries the job, which removes
/// nothing again (already gone) and sends the purge again.
async fn purge_from_cdn(ctx: &Context, removed: &[media::ObjectKey]) -> Result<(), JobError> {
    let media = &ctx.config().media;
    let (Some(url), Some(token)) = (&media.cdn_purge_url, &media.cdn_purge_token) else { return Ok(()) };
    if removed.is_empty() {
        return Ok(());
    }
    let paths: Vec<String> = removed.iter().map(|k| format!("/media/{}", k.as_str())).collect();
    let body = serde_json::json!({ "paths": paths });
    let answer = ctx
        .inner
        .http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| JobError::Retry(format!("purging from the CDN: {e}")))?;
    let status = answer.status();
    if !status.is_success() {
        let text = answer.text().await.unwrap_or_default();
        return Err(JobError::Retry(format!("purging from the CDN: {status}: {text}")));
    }
    tracing::info!(objects = paths.len(), "removed objects purged from the CDN");
    Ok(())
}
