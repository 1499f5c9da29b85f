//! Likes, stored on the post's shard, with the post's denormalized like counter
//! moved by the same statement — and, for a new like of someone else's post, the
//! author's notification job ([`crate::notifications`]) enqueued by it too.

use std::sync::LazyLock;

use sharding::PostId;
use tokio_postgres::types::ToSql;

use crate::error::DataError;
use crate::load::ReadOf;
use crate::model::Change;
use crate::notifications::{NotificationKind, enqueue_notify_sql};
use crate::route::{Data, Lsn, Place};
use crate::rows::opt_row;

/// A like (`$1` the post, `$2` the liker, `$3` the request's id): the like, the
/// counter, and — only when the like is new and not the author's own — the
/// author's notification job, all in one statement on the post's shard.
static LIKE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH e AS (INSERT INTO likes (post_id, user_id, liker_id) \
                    SELECT post_id, user_id, $2 FROM posts WHERE post_id = $1 \
                    ON CONFLICT DO NOTHING RETURNING post_id, user_id, liker_id), \
              j AS ({}) \
         UPDATE posts SET like_count = like_count + (SELECT count(*) FROM e) \
         WHERE post_id = $1 RETURNING (SELECT count(*) FROM e), like_count",
        enqueue_notify_sql(
            NotificationKind::Like,
            "e",
            "e.user_id",
            "e.user_id",
            "e.liker_id",
            Some("e.post_id"),
            None,
            "$3"
        )
    )
});

impl Data {
    /// `liker` likes `post` (idempotent). Returns what changed and the new count;
    /// [`DataError::NotFound`] if the post does not exist.
    pub async fn like(&self, post: PostId, liker: i64) -> Result<(Change, i64), DataError> {
        self.set_like(post, liker, LIKE_SQL.as_str(), Some(telemetry::request_id::current()), "like").await
    }

    /// `liker` takes back a like (idempotent).
    pub async fn unlike(&self, post: PostId, liker: i64) -> Result<(Change, i64), DataError> {
        self.set_like(
            post,
            liker,
            "WITH e AS (DELETE FROM likes WHERE post_id = $1 AND liker_id = $2 RETURNING 1) \
             UPDATE posts SET like_count = like_count - (SELECT count(*) FROM e) \
             WHERE post_id = $1 RETURNING (SELECT count(*) FROM e), like_count",
            None,
            "unlike",
        )
        .await
    }

    /// Run a like's or unlike's statement: `$1` the post, `$2` the liker and,
    /// for a like (`request_id` given), `$3` the request's id for the author's
    /// notification job; an unlike's statement has no `$3`.
    async fn set_like(
        &self,
        post: PostId,
        liker: i64,
        sql: &str,
        request_id: Option<Option<String>>,
        op: &'static str,
    ) -> Result<(Change, i64), DataError> {
        let id = post.get();
        let args: Vec<&(dyn ToSql + Sync)> = match &request_id {
            Some(request_id) => vec![&id, &liker, request_id],
            None => vec![&id, &liker],
        };
        let args = args.as_slice();
        let row = self
            .write(op, Place::post(post), Lsn::Track, |c| async move { Ok(opt_row(&c, sql, args).await?) })
            .await?;
        let row = row.ok_or(DataError::NotFound)?;
        let delta: i64 = row.get(0);
        let count: i64 = row.get(1); // the updated value
        Ok((if delta > 0 { Change::Changed } else { Change::Unchanged }, count))
    }

    /// Whether `user` likes `post`.
    pub async fn likes(&self, post: PostId, user: i64) -> Result<bool, DataError> {
        let shard = self.shard_map().shard_of_post(post);
        let sql = "SELECT 1 FROM likes WHERE post_id = $1 AND liker_id = $2";
        let row = self
            .read("likes", shard, ReadOf::Bucket(post.bucket()), |c| async move {
                opt_row(&c, sql, &[&post.get(), &user]).await
            })
            .await?;
        Ok(row.is_some())
    }
}
