//! Comments (ADR 0024): each on its commenter's shard, a post's read from every
//! shard at once, and the post's denormalized count kept on the post's shard.
//!
//! Writing a comment is one statement on the commenter's shard: the comment, the
//! job that counts it on the post's shard ([`COMMENT_COUNT_JOB`], due after
//! [`COMMENT_COUNT_DELAY`]) and the post author's notification job. The web
//! server counts it at once ([`Data::count_comment`]) and drops the job; if it
//! fails or dies first, a worker runs the job. Counting is idempotent per comment
//! (the post's shard keeps which comments it counted), so the two never count
//! one comment twice, in whatever order a comment's creation and deletion arrive.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sharding::{PostId, ShardId};
use tokio_postgres::Row;

use crate::error::{DataError, QueryError};
use crate::load::ReadOf;
use crate::model::{Change, QueuedJob};
use crate::notifications::{NotificationKind, enqueue_notify_sql};
use crate::route::{Data, Lsn, Place};
use crate::rows::{millis, opt_row, rows};

/// The job kind that brings a post's comment count up to date with one comment's
/// creation or deletion, on the post's shard.
pub const COMMENT_COUNT_JOB: &str = "comment_count";

/// How long after its comment a count job becomes due: the web server that wrote
/// the comment counts it at once and drops the job long before.
pub const COMMENT_COUNT_DELAY: Duration = Duration::from_secs(10);

/// Attempts a count job gets before it is a dead letter.
pub const COMMENT_COUNT_MAX_ATTEMPTS: i32 = 10;

/// The longest comment, in characters (Instagram's caption limit).
pub const MAX_COMMENT_CHARS: usize = 2200;

/// A comment as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentRecord {
    /// Time-ordered id carrying the commenter's bucket (which shard holds it).
    pub comment_id: i64,
    /// The commenter.
    pub user_id: i64,
    /// The post it answers.
    pub post_id: i64,
    /// The post's author, who may delete it as the commenter may.
    pub post_author_id: i64,
    /// The text.
    pub body: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// What a count job carries: which comment of which post to count or uncount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentCount {
    /// The post whose count changes.
    pub post_id: i64,
    /// The comment counted (or uncounted).
    pub comment_id: i64,
    /// The post's author: the owner of the count's rows on the post's shard.
    pub post_author_id: i64,
    /// `true` when the comment was written, `false` when it was deleted.
    pub counted: bool,
}

impl CommentCount {
    /// The count (`counted`) or uncount of comment `c`.
    pub fn of(c: &CommentRecord, counted: bool) -> CommentCount {
        CommentCount {
            post_id: c.post_id,
            comment_id: c.comment_id,
            post_author_id: c.post_author_id,
            counted,
        }
    }
}

/// A comment written, with its count job (to drop once counted).
#[derive(Debug, Clone)]
pub struct NewComment {
    /// The comment.
    pub comment: CommentRecord,
    /// Its count job, due after [`COMMENT_COUNT_DELAY`].
    pub count_job: QueuedJob,
}

/// A comment deleted, with its uncount job (to drop once uncounted).
#[derive(Debug, Clone)]
pub struct DeletedComment {
    /// The comment as it was.
    pub comment: CommentRecord,
    /// Its uncount job, due after [`COMMENT_COUNT_DELAY`].
    pub count_job: QueuedJob,
}

/// Why a comment could not be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteRefusal {
    /// There is no such comment.
    NotFound,
    /// It exists, but the viewer neither wrote it nor wrote its post.
    NotAllowed,
}

/// What a comment query selects, in the names [`comment_from`] reads.
const COMMENT_COLUMNS: &str = "comment_id, user_id, post_id, post_author_id, body, (extract(epoch from created_at) * 1000)::int8 AS created_ms";

fn comment_from(row: &Row) -> CommentRecord {
    CommentRecord {
        comment_id: row.get("comment_id"),
        user_id: row.get("user_id"),
        post_id: row.get("post_id"),
        post_author_id: row.get("post_author_id"),
        body: row.get("body"),
        created_ms: row.get("created_ms"),
    }
}

/// The count job's insert, on the comment's shard, for the comment row `c` of the
/// statement: `$COUNTED` says whether it counts or uncounts.
fn count_job_cte(counted: bool) -> String {
    format!(
        "j AS (INSERT INTO jobs (kind, user_id, payload, max_attempts, run_at, request_id) \
               SELECT '{COMMENT_COUNT_JOB}', user_id, \
                      jsonb_build_object('post_id', post_id, 'comment_id', comment_id, \
                                         'post_author_id', post_author_id, 'counted', {counted}), \
                      $MAX, now() + $DELAY * interval '1 millisecond', $REQ FROM c RETURNING job_id)"
    )
}

impl Data {
    /// `commenter` answers `post` (by `post_author`) with `body`: the comment, its
    /// count job and, unless the commenter wrote the post, the author's
    /// notification job, in one statement on the commenter's shard.
    /// [`DataError::NotFound`] if the commenter does not exist.
    pub async fn create_comment(
        &self,
        post: PostId,
        post_author: i64,
        commenter: i64,
        body: &str,
    ) -> Result<NewComment, DataError> {
        let sql = format!(
            "WITH c AS (INSERT INTO comments (comment_id, user_id, post_id, post_author_id, body) \
                        SELECT $1, user_id, $3, $4, $5 FROM users WHERE user_id = $2 RETURNING *), \
                  {}, \
                  n AS ({notify}) \
             SELECT {COMMENT_COLUMNS}, (SELECT job_id FROM j) AS job_id FROM c",
            count_job_cte(true).replace("$MAX", "$6").replace("$DELAY", "$7").replace("$REQ", "$8"),
            notify = enqueue_notify_sql(
                NotificationKind::Comment,
                "c",
                "c.user_id",
                "c.post_author_id",
                "c.user_id",
                Some("c.post_id"),
                Some("c.comment_id"),
                "$8",
            ),
        );
        let delay = millis(COMMENT_COUNT_DELAY);
        let request = telemetry::request_id::current();
        let (post_id, max) = (post.get(), COMMENT_COUNT_MAX_ATTEMPTS);
        let row = self
            .write("create_comment", Place::user(commenter), Lsn::Track, |client| {
                let sql = &sql;
                let request = &request;
                async move {
                    let stmt = client.prepare_cached(sql).await?;
                    for _ in 0..4 {
                        let id = self.next_post_id(commenter);
                        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] =
                            [&id, &commenter, &post_id, &post_author, &body, &max, &delay, request];
                        match client.query_opt(&stmt, &params).await.map_err(QueryError::from) {
                            Ok(Some(row)) => return Ok(row),
                            Ok(None) => return Err(DataError::NotFound.into()),
                            Err(e) if e.is_unique_violation() => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    Err(DataError::Conflict("could not draw a free comment id").into())
                }
            })
            .await?;
        let shard = self.shard_map().shard_of_user(commenter);
        Ok(NewComment {
            comment: comment_from(&row),
            count_job: QueuedJob { shard, job_id: row.get("job_id"), user_id: commenter },
        })
    }

    /// Delete comment `id` if `viewer` wrote it or wrote its post, with its uncount
    /// job, in one statement on the comment's shard.
    pub async fn delete_comment(
        &self,
        id: PostId,
        viewer: i64,
    ) -> Result<Result<DeletedComment, DeleteRefusal>, DataError> {
        let sql = format!(
            "WITH c AS (DELETE FROM comments WHERE comment_id = $1 AND (user_id = $2 OR post_author_id = $2) \
                        RETURNING *), \
                  {} \
             SELECT {COMMENT_COLUMNS}, (SELECT job_id FROM j) AS job_id FROM c",
            count_job_cte(false).replace("$MAX", "$3").replace("$DELAY", "$4").replace("$REQ", "$5"),
        );
        let delay = millis(COMMENT_COUNT_DELAY);
        let request = telemetry::request_id::current();
        let row = self
            .write_one(
                "delete_comment",
                Place::post(id),
                &sql,
                &[&id.get(), &viewer, &COMMENT_COUNT_MAX_ATTEMPTS, &delay, &request],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Err(match self.comment(id).await? {
                Some(_) => DeleteRefusal::NotAllowed,
                None => DeleteRefusal::NotFound,
            }));
        };
        let comment = comment_from(&row);
        let shard = self.shard_map().shard_of_post(id);
        let count_job = QueuedJob { shard, job_id: row.get("job_id"), user_id: comment.user_id };
        Ok(Ok(DeletedComment { comment, count_job }))
    }

    /// One comment, read on its shard's primary (a deletion's check).
    pub async fn comment(&self, id: PostId) -> Result<Option<CommentRecord>, DataError> {
        let shard = self.shard_map().shard_of_post(id);
        let sql = &format!("SELECT {COMMENT_COLUMNS} FROM comments WHERE comment_id = $1");
        let row = self
            .read_primary("comment", shard, ReadOf::Bucket(id.bucket()), |c| async move {
                opt_row(&c, sql, &[&id.get()]).await
            })
            .await?;
        Ok(row.as_ref().map(comment_from))
    }

    /// Bring `post`'s comment count up to date with one comment's creation or
    /// deletion, on the post's shard: what a count job does, and what the web
    /// server does at once. Idempotent, and commutative per comment: a comment
    /// is counted once, uncounted once, and never counted after its uncounting.
    /// Returns whether the count changed; a post that is gone changes nothing.
    pub async fn count_comment(&self, count: CommentCount) -> Result<Change, DataError> {
        let post = PostId::from_i64(count.post_id).map_err(|_| DataError::NotFound)?;
        let sql = if count.counted {
            "WITH e AS (INSERT INTO comment_counts (post_id, comment_id, user_id, counted) \
                        SELECT post_id, $2, user_id, true FROM posts WHERE post_id = $1 \
                        ON CONFLICT DO NOTHING RETURNING 1) \
             UPDATE posts SET comment_count = comment_count + (SELECT count(*) FROM e) \
             WHERE post_id = $1 AND EXISTS (SELECT 1 FROM e) RETURNING 1"
        } else {
            // A tombstone when the count never saw it; uncounted when it did.
            "WITH e AS (INSERT INTO comment_counts AS k (post_id, comment_id, user_id, counted) \
                        SELECT post_id, $2, user_id, false FROM posts WHERE post_id = $1 \
                        ON CONFLICT (post_id, comment_id) DO UPDATE SET counted = false WHERE k.counted \
                        RETURNING (xmax <> 0) AS was_counted), \
                  d AS (SELECT count(*) AS n FROM e WHERE was_counted) \
             UPDATE posts SET comment_count = comment_count - (SELECT n FROM d) \
             WHERE post_id = $1 AND (SELECT n FROM d) > 0 RETURNING 1"
        };
        let row = self
            .write_one("count_comment", Place::post(post), sql, &[&count.post_id, &count.comment_id])
            .await?;
        Ok(if row.is_some() { Change::Changed } else { Change::Unchanged })
    }

    /// `post`'s comments, newest first, older than `before` if given: every
    /// shard's newest `limit`, merged (a post's comments are on their
    /// commenters' shards).
    pub async fn post_comments(
        &self,
        post: PostId,
        before: Option<PostId>,
        limit: i64,
    ) -> Result<Vec<CommentRecord>, DataError> {
        let map = self.shard_map();
        let before = before.map_or(i64::MAX, PostId::get);
        let sql = &format!(
            "SELECT {COMMENT_COLUMNS} FROM comments WHERE post_id = $1 AND comment_id < $2 \
             ORDER BY comment_id DESC LIMIT $3"
        );
        let post_id = post.get();
        let per_shard = map.shards().map(|shard: ShardId| async move {
            let rows = self
                .read("post_comments", shard, ReadOf::Shard, |c| async move {
                    rows(&c, sql, &[&post_id, &before, &limit]).await
                })
                .await?;
            Ok::<_, DataError>(rows.iter().map(comment_from).collect::<Vec<_>>())
        });
        let mut all: Vec<CommentRecord> =
            futures::future::try_join_all(per_shard).await?.into_iter().flatten().collect();
        all.sort_unstable_by_key(|c| std::cmp::Reverse(c.comment_id));
        all.truncate(limit.max(0) as usize);
        Ok(all)
    }
}
