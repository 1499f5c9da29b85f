//! Follow edges, stored on both sides (`follows_out` on the follower's shard,
//! `follows_in` on the followee's) with denormalized counters.
//!
//! Each side's write is one atomic, idempotent statement that only counts a new
//! (or removed) edge, so repeating a call that failed half-way completes it
//! without double counting.

use sharding::user_bucket;

use crate::consistency;
use crate::error::DataError;
use crate::load::ReadOf;
use crate::model::Change;
use crate::route::{Data, Lsn, Place};
use crate::rows::{opt_row, rows};

impl Data {
    /// Make `follower` follow `followee` (idempotent). Fails with
    /// [`DataError::NotFound`] if either user does not exist.
    ///
    /// Writes the edge on the follower's shard, then on the followee's; each side
    /// is one atomic statement that only counts a new edge, so repeating a call
    /// that failed half-way completes it without double counting.
    pub async fn follow(&self, follower: i64, followee: i64) -> Result<Change, DataError> {
        self.set_follow(follower, followee, true).await
    }

    /// Make `follower` stop following `followee` (idempotent).
    pub async fn unfollow(&self, follower: i64, followee: i64) -> Result<Change, DataError> {
        self.set_follow(follower, followee, false).await
    }

    /// [`Data::set_follow_once`], run again while a bucket of the two users is
    /// fenced for a move: the two sides' shards are worked out again from the
    /// newest map, since one transaction on one shard may no longer hold both.
    async fn set_follow(&self, follower: i64, followee: i64, on: bool) -> Result<Change, DataError> {
        let deadline = std::time::Instant::now() + crate::route::FENCE_WAIT;
        loop {
            let epoch = self.cluster_epoch();
            match self.set_follow_once(follower, followee, on).await {
                Err(e) if e.is_fenced() && std::time::Instant::now() < deadline => {
                    self.after_fence(epoch).await
                }
                other => return other,
            }
        }
    }

    async fn set_follow_once(&self, follower: i64, followee: i64, on: bool) -> Result<Change, DataError> {
        let map = self.shard_map();
        let (out_shard, in_shard) = (map.shard_of_user(follower), map.shard_of_user(followee));
        // Each side: touch the edge, then move the owner's counter by what changed.
        // Referencing `users` in the CTE makes a missing owner visible as no row.
        let (out_sql, in_sql, op) = if on {
            (
                "WITH u AS (SELECT user_id FROM users WHERE user_id = $1), \
                 e AS (INSERT INTO follows_out (user_id, followee_id) SELECT user_id, $2 FROM u \
                       ON CONFLICT DO NOTHING RETURNING 1) \
                 UPDATE users SET following_count = following_count + (SELECT count(*) FROM e) \
                 WHERE user_id = $1 RETURNING (SELECT count(*) FROM e)",
                "WITH u AS (SELECT user_id FROM users WHERE user_id = $1), \
                 e AS (INSERT INTO follows_in (user_id, follower_id) SELECT user_id, $2 FROM u \
                       ON CONFLICT DO NOTHING RETURNING 1) \
                 UPDATE users SET followers_count = followers_count + (SELECT count(*) FROM e) \
                 WHERE user_id = $1 RETURNING (SELECT count(*) FROM e)",
                "follow",
            )
        } else {
            (
                "WITH e AS (DELETE FROM follows_out WHERE user_id = $1 AND followee_id = $2 RETURNING 1) \
                 UPDATE users SET following_count = following_count - (SELECT count(*) FROM e) \
                 WHERE user_id = $1 RETURNING (SELECT count(*) FROM e)",
                "WITH e AS (DELETE FROM follows_in WHERE user_id = $1 AND follower_id = $2 RETURNING 1) \
                 UPDATE users SET followers_count = followers_count - (SELECT count(*) FROM e) \
                 WHERE user_id = $1 RETURNING (SELECT count(*) FROM e)",
                "unfollow",
            )
        };
        // The followee must exist before anything is written on the follower's side.
        // (On the primary: a user who just signed up is not on every replica yet.)
        if on && out_shard != in_shard && consistency::primary_reads(self.profile(followee)).await?.is_none()
        {
            return Err(DataError::NotFound);
        }
        let changed = if out_shard == in_shard {
            // One transaction on the shard for both users' rows: a write of each bucket.
            self.count_write(user_bucket(follower));
            self.count_write(user_bucket(followee));
            self.write(op, out_shard, Lsn::Track, |mut client| async move {
                let tx = client.transaction().await?;
                let in_row = tx.query_opt(in_sql, &[&followee, &follower]).await?;
                if in_row.is_none() {
                    return Err(DataError::NotFound.into()); // dropping tx rolls back
                }
                let out_row = tx.query_opt(out_sql, &[&follower, &followee]).await?;
                let Some(out_row) = out_row else { return Err(DataError::NotFound.into()) };
                tx.commit().await?;
                Ok(out_row.get::<_, i64>(0) > 0)
            })
            .await?
        } else {
            let out_row = self
                .write(op, Place::user(follower), Lsn::Track, |c| async move {
                    Ok(c.query_opt(out_sql, &[&follower, &followee]).await?)
                })
                .await?;
            let Some(out_row) = out_row else { return Err(DataError::NotFound) };
            let in_row = self
                .write(op, Place::user(followee), Lsn::Track, |c| async move {
                    Ok(c.query_opt(in_sql, &[&followee, &follower]).await?)
                })
                .await?;
            if in_row.is_none() && on {
                return Err(DataError::NotFound);
            }
            // A retry after a failure between the two sides finds the follower's
            // side done and changes only the followee's: still a change (its
            // counter moved, its cached profile must go).
            out_row.get::<_, i64>(0) > 0 || in_row.is_some_and(|r| r.get::<_, i64>(0) > 0)
        };
        Ok(if changed { Change::Changed } else { Change::Unchanged })
    }

    /// Whether `follower` follows `followee`.
    pub async fn is_following(&self, follower: i64, followee: i64) -> Result<bool, DataError> {
        let shard = self.shard_map().shard_of_user(follower);
        let sql = "SELECT 1 FROM follows_out WHERE user_id = $1 AND followee_id = $2";
        let row = self
            .read("is_following", shard, ReadOf::Bucket(user_bucket(follower)), |c| async move {
                opt_row(&c, sql, &[&follower, &followee]).await
            })
            .await?;
        Ok(row.is_some())
    }

    /// Everyone `user_id` follows.
    pub async fn followees(&self, user_id: i64) -> Result<Vec<i64>, DataError> {
        self.edge_list(user_id, "SELECT followee_id FROM follows_out WHERE user_id = $1", "followees").await
    }

    /// Everyone following `user_id`.
    pub async fn followers(&self, user_id: i64) -> Result<Vec<i64>, DataError> {
        self.edge_list(user_id, "SELECT follower_id FROM follows_in WHERE user_id = $1", "followers").await
    }

    async fn edge_list(&self, user_id: i64, sql: &str, op: &'static str) -> Result<Vec<i64>, DataError> {
        let shard = self.shard_map().shard_of_user(user_id);
        let of = ReadOf::Bucket(user_bucket(user_id));
        let rows = self.read(op, shard, of, |c| async move { rows(&c, sql, &[&user_id]).await }).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
