//! Posts: every post write — a text post with its outbox fan-out job, a photo
//! post with its processing job, finishing or failing a photo — and the post
//! reads (one, several, a user's, the newest of several authors).
//!
//! A post's job is written by the same statement as the post, on its author's
//! shard, so the two commit together; the queue that runs them is `jobs`.

use std::collections::BTreeMap;
use std::time::Duration;

use sharding::{PostId, ShardId, user_bucket};
use tokio_postgres::Row;
use tokio_postgres::types::Json;

use crate::error::{DataError, QueryError};
use crate::load::ReadOf;
use crate::model::{Change, Photo, PostRecord, QueuedJob, StoredImage};
use crate::route::{Data, Lsn, Place};
use crate::rows::{millis, opt_row, rows};

/// The job kind that makes a photo's thumbnails.
pub const PHOTO_JOB: &str = "photo";

/// The job kind that fans a text post out into its readers' timelines: the
/// post's outbox entry, written with the post.
pub const FANOUT_JOB: &str = "fanout";

/// How long after its post a fan-out job becomes due. The web server that wrote
/// the post fans it out at once and deletes the job well before this; the job runs
/// only if that fan-out failed or the server died after the commit.
pub const FANOUT_DELAY: Duration = Duration::from_secs(30);

/// Attempts a fan-out job gets before it is a dead letter.
pub const FANOUT_MAX_ATTEMPTS: i32 = 10;

/// What a post query selects, in the names [`post_from`] reads.
pub(crate) const POST_COLUMNS: &str = "post_id, user_id, caption, like_count, comment_count, \
     (extract(epoch from created_at) * 1000)::int8 AS created_ms, status, photo";

/// A row selected with [`POST_COLUMNS`] as a post.
pub(crate) fn post_from(row: &Row) -> PostRecord {
    PostRecord {
        post_id: row.get("post_id"),
        user_id: row.get("user_id"),
        caption: row.get("caption"),
        like_count: row.get("like_count"),
        comment_count: row.get("comment_count"),
        created_ms: row.get("created_ms"),
        status: row.get("status"),
        photo: row.get::<_, Option<Json<Photo>>>("photo").map(|Json(p)| p),
    }
}

impl Data {
    /// Create a text post by `author`, count it on the author's profile, and
    /// enqueue its fan-out job, left for a worker to run when it falls due:
    /// [`Data::create_post_queued`] without the job's name.
    pub async fn create_post(&self, author: i64, caption: &str) -> Result<PostRecord, DataError> {
        Ok(self.create_post_queued(author, caption).await?.0)
    }

    /// Create a text post by `author`, count it on the author's profile, and
    /// enqueue its fan-out job ([`FANOUT_JOB`], due after [`FANOUT_DELAY`], carrying
    /// the id of the request being served, if any): one
    /// statement, so the post and its outbox entry commit together. The caller
    /// fans the post out at once and then drops the job with
    /// [`Data::delete_queued_job`]; if it fails or dies first, a worker runs the job.
    pub async fn create_post_queued(
        &self,
        author: i64,
        caption: &str,
    ) -> Result<(PostRecord, QueuedJob), DataError> {
        let sql = format!(
            "WITH p AS (INSERT INTO posts (post_id, user_id, caption) \
                        SELECT $1, user_id, $3 FROM users WHERE user_id = $2 RETURNING *), \
                  u AS (UPDATE users SET posts_count = posts_count + 1 \
                        WHERE user_id = $2 AND EXISTS (SELECT 1 FROM p)), \
                  j AS (INSERT INTO jobs (kind, user_id, payload, max_attempts, run_at, request_id) \
                        SELECT '{FANOUT_JOB}', user_id, jsonb_build_object('post_id', post_id), $4, \
                               now() + $5 * interval '1 millisecond', $6 FROM p RETURNING job_id) \
             SELECT {POST_COLUMNS}, (SELECT job_id FROM j) AS job_id FROM p"
        );
        let delay = millis(FANOUT_DELAY);
        let row = self
            .insert_post(
                author,
                &sql,
                "create_post",
                &[&author, &caption, &FANOUT_MAX_ATTEMPTS, &delay, &telemetry::request_id::current()],
            )
            .await?;
        let shard = self.shard_map().shard_of_user(author);
        Ok((post_from(&row), QueuedJob { shard, job_id: row.get("job_id"), user_id: author }))
    }

    /// Create a photo post in `processing` state together with its processing job,
    /// in one transaction on the author's shard.
    pub async fn create_photo_post(
        &self,
        author: i64,
        caption: &str,
        original: StoredImage,
        max_attempts: i32,
    ) -> Result<PostRecord, DataError> {
        let photo = Json(Photo { original, thumbnails: vec![] });
        let sql = format!(
            "WITH p AS (INSERT INTO posts (post_id, user_id, caption, status, photo) \
                        SELECT $1, user_id, $3, 'processing', $4 FROM users WHERE user_id = $2 RETURNING *), \
                  u AS (UPDATE users SET posts_count = posts_count + 1 \
                        WHERE user_id = $2 AND EXISTS (SELECT 1 FROM p)), \
                  j AS (INSERT INTO jobs (kind, user_id, payload, max_attempts, request_id) \
                        SELECT '{PHOTO_JOB}', user_id, jsonb_build_object('post_id', post_id), $5, $6 FROM p) \
             SELECT {POST_COLUMNS} FROM p"
        );
        let row = self
            .insert_post(
                author,
                &sql,
                "create_photo_post",
                &[&author, &caption, &photo, &max_attempts, &telemetry::request_id::current()],
            )
            .await?;
        Ok(post_from(&row))
    }

    /// Run `sql`, an insert of a new post by `author` whose `$1` is the post id and
    /// whose further parameters are `rest`, returning its row. Another process may,
    /// very rarely, have made the same id in the same millisecond: then another id
    /// is drawn.
    async fn insert_post(
        &self,
        author: i64,
        sql: &str,
        op: &'static str,
        rest: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Row, DataError> {
        self.write(op, Place::user(author), Lsn::Track, |client| async move {
            let stmt = client.prepare_cached(sql).await?;
            for _ in 0..4 {
                let id = self.next_post_id(author);
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&id];
                params.extend_from_slice(rest);
                match client.query_opt(&stmt, &params).await.map_err(QueryError::from) {
                    Ok(Some(row)) => return Ok(row),
                    Ok(None) => return Err(DataError::NotFound.into()),
                    Err(e) if e.is_unique_violation() => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(DataError::Conflict("could not draw a free post id").into())
        })
        .await
    }

    /// Record a processed photo's thumbnails and mark its post ready. Idempotent:
    /// only the first call for a post changes it, so a job run twice records one set.
    pub async fn finish_photo(&self, post: PostId, thumbnails: &[StoredImage]) -> Result<Change, DataError> {
        let thumbs = Json(thumbnails);
        let row = self
            .write_one(
                "finish_photo",
                Place::post(post),
                "UPDATE posts SET status = 'ready', photo = jsonb_set(photo, '{thumbnails}', $2) \
                 WHERE post_id = $1 AND status = 'processing' RETURNING 1",
                &[&post.get(), &thumbs],
            )
            .await?;
        Ok(if row.is_some() { Change::Changed } else { Change::Unchanged })
    }

    /// Mark a photo post as failed (its job is dead).
    pub async fn fail_photo(&self, post: PostId) -> Result<Change, DataError> {
        let row = self
            .write_one(
                "fail_photo",
                Place::post(post),
                "UPDATE posts SET status = 'failed' WHERE post_id = $1 AND status = 'processing' RETURNING 1",
                &[&post.get()],
            )
            .await?;
        Ok(if row.is_some() { Change::Changed } else { Change::Unchanged })
    }

    /// One post.
    pub async fn post(&self, id: PostId) -> Result<Option<PostRecord>, DataError> {
        let shard = self.shard_map().shard_of_post(id);
        let sql = &format!("SELECT {POST_COLUMNS} FROM posts WHERE post_id = $1");
        let of = ReadOf::Bucket(id.bucket());
        let row =
            self.read("post", shard, of, |c| async move { opt_row(&c, sql, &[&id.get()]).await }).await?;
        Ok(row.as_ref().map(post_from))
    }

    /// Several posts, fetched with one query per shard involved; missing ones are skipped.
    pub async fn posts(&self, ids: &[PostId]) -> Result<Vec<PostRecord>, DataError> {
        let map = self.shard_map();
        let mut by_shard: BTreeMap<ShardId, Vec<i64>> = BTreeMap::new();
        for id in ids {
            by_shard.entry(map.shard_of_post(*id)).or_default().push(id.get());
        }
        let sql = format!("SELECT {POST_COLUMNS} FROM posts WHERE post_id = ANY($1)");
        let per_shard = by_shard.into_iter().map(|(shard, ids)| {
            let sql = &sql;
            async move {
                let ids = &ids;
                let of = ReadOf::Posts(ids);
                let rows =
                    self.read("posts", shard, of, |c| async move { rows(&c, sql, &[ids]).await }).await?;
                Ok::<_, DataError>(rows.iter().map(post_from).collect::<Vec<_>>())
            }
        });
        Ok(futures::future::try_join_all(per_shard).await?.into_iter().flatten().collect())
    }

    /// A user's posts, newest first, older than `before` if given.
    pub async fn user_posts(
        &self,
        user_id: i64,
        before: Option<PostId>,
        limit: i64,
    ) -> Result<Vec<PostRecord>, DataError> {
        let shard = self.shard_map().shard_of_user(user_id);
        let before = before.map_or(i64::MAX, PostId::get);
        let sql = &format!(
            "SELECT {POST_COLUMNS} FROM posts WHERE user_id = $1 AND post_id < $2 \
             ORDER BY post_id DESC LIMIT $3"
        );
        let of = ReadOf::Bucket(user_bucket(user_id));
        let rows =
            self.read("user_posts", shard, of, |c| async move {
                rows(&c, sql, &[&user_id, &before, &limit]).await
            })
            .await?;
        Ok(rows.iter().map(post_from).collect())
    }

    /// The newest `limit` post ids written by any of `authors` (older than
    /// `before`, when given), newest first: what a home timeline is rebuilt from,
    /// and what a feed is read from when the timelines cannot be.
    pub async fn recent_post_ids(
        &self,
        authors: &[i64],
        limit: i64,
        before: Option<PostId>,
    ) -> Result<Vec<PostId>, DataError> {
        let map = self.shard_map();
        let mut by_shard: BTreeMap<ShardId, Vec<i64>> = BTreeMap::new();
        for a in authors {
            by_shard.entry(map.shard_of_user(*a)).or_default().push(*a);
        }
        let before = before.map(PostId::get);
        let per_shard = by_shard.into_iter().map(|(shard, authors)| async move {
            let authors = &authors;
            let sql = "SELECT p.post_id FROM unnest($1::int8[]) AS a(id) CROSS JOIN LATERAL \
                       (SELECT post_id FROM posts WHERE user_id = a.id \
                          AND ($3::int8 IS NULL OR post_id < $3) ORDER BY post_id DESC LIMIT $2) p \
                       ORDER BY p.post_id DESC LIMIT $2";
            let rows = self
                .read("recent_post_ids", shard, ReadOf::Users(authors), |c| async move {
                    rows(&c, sql, &[authors, &limit, &before]).await
                })
                .await?;
            Ok::<_, DataError>(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>())
        });
        let mut ids: Vec<i64> =
            futures::future::try_join_all(per_shard).await?.into_iter().flatten().collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(limit.max(0) as usize);
        Ok(ids.into_iter().filter_map(|id| PostId::from_i64(id).ok()).collect())
    }
}
