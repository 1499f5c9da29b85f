//! Deleting a post: the post, its likes and its comment count entries in one
//! statement on the post's shard, with the job that cleans up what lives
//! elsewhere ([`POST_DELETED_JOB`]: its comments on every shard, its ids in
//! timelines, its photo objects once nothing refers to them).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sharding::{PostId, ShardId};

use crate::comments::DeleteRefusal;
use crate::error::DataError;
use crate::load::ReadOf;
use crate::model::{Photo, PostRecord, QueuedJob};
use crate::posts::POST_COLUMNS;
use crate::route::{Data, Lsn, Place};

/// The job kind that cleans up after a deleted post.
pub const POST_DELETED_JOB: &str = "post_deleted";

/// Attempts a clean-up job gets before it is a dead letter.
pub const POST_DELETED_MAX_ATTEMPTS: i32 = 10;

/// For [`Data::photo_keys_in_use`]'s transaction: its lookups by key go through
/// the photo-key indexes (the setting lasts until the transaction ends).
const INDEX_ONLY: &str = "SET LOCAL enable_seqscan = off";

/// The object keys of `$1` that a post's photo or a user's avatar on this shard
/// names, as its original or as a thumbnail.
const KEYS_IN_USE_SQL: &str = "SELECT k FROM unnest($1::text[]) AS k WHERE EXISTS (SELECT 1 FROM posts \
     WHERE photo @> jsonb_build_object('original', jsonb_build_object('key', k)) \
        OR photo @> jsonb_build_object('thumbnails', jsonb_build_array(jsonb_build_object('key', k)))) \
     OR EXISTS (SELECT 1 FROM users \
     WHERE avatar @> jsonb_build_object('original', jsonb_build_object('key', k)) \
        OR avatar @> jsonb_build_object('thumbnails', jsonb_build_array(jsonb_build_object('key', k))))";

/// What a clean-up job carries: the post as it was, enough to clean up after it
/// without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostDeleted {
    /// The deleted post.
    pub post_id: i64,
    /// Its author, whose followers' timelines held it.
    pub author: i64,
    /// Its photo, whose objects go once no other post refers to them.
    pub photo: Option<Photo>,
}

/// A post deleted, with its clean-up job.
#[derive(Debug, Clone)]
pub struct DeletedPost {
    /// The post as it was.
    pub post: PostRecord,
    /// The clean-up job, due at once.
    pub job: QueuedJob,
}

impl Data {
    /// Delete post `id` if `viewer` wrote it: the post, its likes, its comment
    /// count entries, the author's notifications about it (likes and comments,
    /// on the author's shard like the post), its author's post count and its
    /// jobs not yet started, with
    /// its clean-up job ([`POST_DELETED_JOB`]), in one statement on its shard.
    pub async fn delete_post(
        &self,
        id: PostId,
        viewer: i64,
    ) -> Result<Result<DeletedPost, DeleteRefusal>, DataError> {
        let sql = format!(
            "WITH p AS (DELETE FROM posts WHERE post_id = $1 AND user_id = $2 \
                        RETURNING {POST_COLUMNS}), \
                  l AS (DELETE FROM likes WHERE post_id = $1 AND EXISTS (SELECT 1 FROM p)), \
                  k AS (DELETE FROM comment_counts WHERE post_id = $1 AND EXISTS (SELECT 1 FROM p)), \
                  n AS (DELETE FROM notifications WHERE user_id = $2 AND post_id = $1 AND EXISTS (SELECT 1 FROM p)), \
                  u AS (UPDATE users SET posts_count = posts_count - 1 \
                        WHERE user_id = $2 AND EXISTS (SELECT 1 FROM p)), \
                  o AS (DELETE FROM jobs WHERE user_id = $2 AND state = 'ready' \
                        AND kind IN ('{photo}', '{fanout}') AND payload->>'post_id' = $1::text \
                        AND EXISTS (SELECT 1 FROM p)), \
                  j AS (INSERT INTO jobs (kind, user_id, payload, max_attempts, request_id) \
                        SELECT '{POST_DELETED_JOB}', user_id, \
                               jsonb_build_object('post_id', post_id, 'author', user_id, 'photo', photo), $3, $4 \
                        FROM p RETURNING job_id) \
             SELECT p.*, (SELECT job_id FROM j) AS job_id FROM p",
            photo = crate::PHOTO_JOB,
            fanout = crate::FANOUT_JOB,
        );
        let request = telemetry::request_id::current();
        let row = self
            .write_one(
                "delete_post",
                Place::post(id),
                &sql,
                &[&id.get(), &viewer, &POST_DELETED_MAX_ATTEMPTS, &request],
            )
            .await?;
        let Some(row) = row else {
            let post = crate::consistency::primary_reads(self.post(id)).await?;
            return Ok(Err(if post.is_some() { DeleteRefusal::NotAllowed } else { DeleteRefusal::NotFound }));
        };
        let post = crate::posts::post_from(&row);
        let job = QueuedJob {
            shard: self.shard_map().shard_of_post(id),
            job_id: row.get("job_id"),
            user_id: viewer,
        };
        Ok(Ok(DeletedPost { post, job }))
    }

    /// Delete every comment on `post`, on every shard (they are on their
    /// commenters'); how many.
    pub async fn delete_post_comments(&self, post: PostId) -> Result<u64, DataError> {
        let sql = "DELETE FROM comments WHERE post_id = $1";
        let per_shard = self.shard_map().shards().map(|shard: ShardId| async move {
            self.write("delete_post_comments", Place::Shard(shard), Lsn::Skip, |c| async move {
                let stmt = c.prepare_cached(sql).await?;
                Ok(c.execute(&stmt, &[&post.get()]).await?)
            })
            .await
        });
        Ok(futures::future::try_join_all(per_shard).await?.into_iter().sum())
    }

    /// Which of the object `keys` a post or an avatar on any shard still names
    /// (as its original or a thumbnail), read on the primaries: an object not
    /// named may be removed.
    ///
    /// Each key is looked up in the photo-key GIN indexes (`posts_photo_keys`,
    /// `users_avatar_keys`), never by reading every post: the query runs in a
    /// read-only transaction with sequential scans off, because the planner
    /// otherwise chooses one for the correlated `EXISTS` (it expects one post in
    /// fifty to match, so a scan looks likely to stop early; almost none do).
    /// On 150,000 posts a shard that scan took 270 ms per key, some 2.5 s of a
    /// primary's CPU for each deleted photo post; the index, about 1 ms.
    pub async fn photo_keys_in_use(&self, keys: &[String]) -> Result<HashSet<String>, DataError> {
        let per_shard = self.shard_map().shards().map(|shard: ShardId| async move {
            let found = self.keys_in_use_query(shard, KEYS_IN_USE_SQL, keys).await?;
            Ok::<_, DataError>(found.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>())
        });
        Ok(futures::future::try_join_all(per_shard).await?.into_iter().flatten().collect())
    }

    /// The plan [`Data::photo_keys_in_use`]'s query gets on `shard`'s primary
    /// (`EXPLAIN`'s text, a line a row), planned as that function plans it: for
    /// tests and for an operator who wonders why a clean-up is slow.
    pub async fn photo_keys_in_use_plan(&self, shard: ShardId, keys: &[String]) -> Result<String, DataError> {
        let sql = format!("EXPLAIN {KEYS_IN_USE_SQL}");
        let rows = self.keys_in_use_query(shard, &sql, keys).await?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n"))
    }

    /// Run `sql` (the query of [`KEYS_IN_USE_SQL`], or its `EXPLAIN`) with `keys`
    /// on `shard`'s primary, in a read-only transaction with sequential scans
    /// off ([`INDEX_ONLY`]).
    async fn keys_in_use_query(
        &self,
        shard: ShardId,
        sql: &str,
        keys: &[String],
    ) -> Result<Vec<tokio_postgres::Row>, DataError> {
        self.read_primary("photo_keys_in_use", shard, ReadOf::Shard, |mut c| async move {
            let tx = c.build_transaction().read_only(true).start().await?;
            tx.batch_execute(INDEX_ONLY).await?;
            let stmt = tx.prepare_cached(sql).await?;
            let found = tx.query(&stmt, &[&keys]).await?;
            tx.commit().await?;
            Ok(found)
        })
        .await
    }
}
