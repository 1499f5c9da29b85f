//! Likes, stored on the post's shard, with the post's denormalized like counter
//! moved by the same statement.

use sharding::PostId;

use crate::error::DataError;
use crate::load::ReadOf;
use crate::model::Change;
use crate::route::{Data, Lsn, Place};
use crate::rows::opt_row;

impl Data {
    /// `liker` likes `post` (idempotent). Returns what changed and the new count;
    /// [`DataError::NotFound`] if the post does not exist.
    pub async fn like(&self, post: PostId, liker: i64) -> Result<(Change, i64), DataError> {
        self.set_like(
            post,
            liker,
            "WITH e AS (INSERT INTO likes (post_id, user_id, liker_id) \
                        SELECT post_id, user_id, $2 FROM posts WHERE post_id = $1 \
                        ON CONFLICT DO NOTHING RETURNING 1) \
             UPDATE posts SET like_count = like_count + (SELECT count(*) FROM e) \
             WHERE post_id = $1 RETURNING (SELECT count(*) FROM e), like_count",
            "like",
        )
        .await
    }

    /// `liker` takes back a like (idempotent).
    pub async fn unlike(&self, post: PostId, liker: i64) -> Result<(Change, i64), DataError> {
        self.set_like(
            post,
            liker,
            "WITH e AS (DELETE FROM likes WHERE post_id = $1 AND liker_id = $2 RETURNING 1) \
             UPDATE posts SET like_count = like_count - (SELECT count(*) FROM e) \
             WHERE post_id = $1 RETURNING (SELECT count(*) FROM e), like_count",
            "unlike",
        )
        .await
    }

    async fn set_like(
        &self,
        post: PostId,
        liker: i64,
        sql: &str,
        op: &'static str,
    ) -> Result<(Change, i64), DataError> {
        let row = self
            .write(op, Place::post(post), Lsn::Track, |c| async move {
                Ok(opt_row(&c, sql, &[&post.get(), &liker]).await?)
            })
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
