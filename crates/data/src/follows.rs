//! Follow edges, stored on both sides (`follows_out` on the follower's shard,
//! `follows_in` on the followee's) with denormalized counters.
//!
//! Each side's write is one atomic, idempotent statement that only counts a new
//! (or removed) edge, so repeating a call that failed half-way completes it
//! without double counting.
//!
//! A new edge's followee side also enqueues the followee's notification job
//! ([`crate::notifications`]) in its statement. The followers and following
//! lists are paged newest edge first through `(user_id, created_at, other)`
//! indexes (migration V7).

use std::sync::LazyLock;

use sharding::user_bucket;
use tokio_postgres::types::ToSql;

use crate::consistency;
use crate::error::DataError;
use crate::load::ReadOf;
use crate::model::Change;
use crate::notifications::{NotificationKind, enqueue_notify_sql};
use crate::route::{Data, Lsn, Place};
use crate::rows::{opt_row, rows};

/// The followee's side of a follow (`$1` the followee, `$2` the follower, `$3`
/// the request's id): the edge, the counter, and — only when the edge is new —
/// the followee's notification job, all in one statement.
static FOLLOW_IN_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH u AS (SELECT user_id FROM users WHERE user_id = $1), \
         e AS (INSERT INTO follows_in (user_id, follower_id) SELECT user_id, $2 FROM u \
               ON CONFLICT DO NOTHING RETURNING user_id, follower_id), \
         j AS ({}) \
         UPDATE users SET followers_count = followers_count + (SELECT count(*) FROM e) \
         WHERE user_id = $1 RETURNING (SELECT count(*) FROM e)",
        enqueue_notify_sql(
            NotificationKind::Follow,
            "e",
            "e.user_id",
            "e.user_id",
            "e.follower_id",
            None,
            None,
            "$3"
        )
    )
});

/// One edge of a followers or following list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowEdge {
    /// The user on the other side (the follower, or the one followed).
    pub user_id: i64,
    /// When the edge was made, microseconds since the Unix epoch: with the
    /// user id, where the next page starts ([`EdgeCursor`]).
    pub at_us: i64,
}

/// Where a page of a followers or following list starts: after this edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeCursor {
    /// The last edge's time, microseconds since the Unix epoch.
    pub at_us: i64,
    /// The last edge's other user.
    pub user_id: i64,
}

impl From<FollowEdge> for EdgeCursor {
    fn from(e: FollowEdge) -> EdgeCursor {
        EdgeCursor { at_us: e.at_us, user_id: e.user_id }
    }
}

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
                FOLLOW_IN_SQL.as_str(),
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
        // The followee's side of a follow also enqueues the followee's
        // notification (`$3` the request's id); an unfollow takes no `$3`.
        let request_id = telemetry::request_id::current();
        let in_args: Vec<&(dyn ToSql + Sync)> =
            if on { vec![&followee, &follower, &request_id] } else { vec![&followee, &follower] };
        let in_args = in_args.as_slice();
        let changed = if out_shard == in_shard {
            // One transaction on the shard for both users' rows: a write of each bucket.
            self.count_write(user_bucket(follower));
            self.count_write(user_bucket(followee));
            self.write(op, out_shard, Lsn::Track, |mut client| async move {
                let tx = client.transaction().await?;
                let in_row = tx.query_opt(in_sql, in_args).await?;
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
                    Ok(c.query_opt(in_sql, in_args).await?)
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

    /// A page of the users following `user_id`, newest edge first, after
    /// `after` (the last edge of the previous page) if given.
    pub async fn followers_page(
        &self,
        user_id: i64,
        after: Option<EdgeCursor>,
        limit: i64,
    ) -> Result<Vec<FollowEdge>, DataError> {
        self.edge_page(user_id, after, limit, "follows_in", "follower_id", "followers_page").await
    }

    /// A page of the users `user_id` follows, newest edge first, after `after`
    /// if given.
    pub async fn following_page(
        &self,
        user_id: i64,
        after: Option<EdgeCursor>,
        limit: i64,
    ) -> Result<Vec<FollowEdge>, DataError> {
        self.edge_page(user_id, after, limit, "follows_out", "followee_id", "following_page").await
    }

    /// One page of `table`'s edges of `user_id` (the other side in `other`),
    /// through its `(user_id, created_at DESC, other DESC)` index. The cursor's
    /// time is exact: microseconds both ways, as integers.
    async fn edge_page(
        &self,
        user_id: i64,
        after: Option<EdgeCursor>,
        limit: i64,
        table: &str,
        other: &str,
        op: &'static str,
    ) -> Result<Vec<FollowEdge>, DataError> {
        let shard = self.shard_map().shard_of_user(user_id);
        let of = ReadOf::Bucket(user_bucket(user_id));
        let select = format!(
            "SELECT {other}, (extract(epoch from created_at) * 1000000)::int8 FROM {table} WHERE user_id = $1"
        );
        let order = format!("ORDER BY created_at DESC, {other} DESC LIMIT $2");
        let rows = match after {
            None => {
                let sql = &format!("{select} {order}");
                self.read(op, shard, of, |c| async move { rows(&c, sql, &[&user_id, &limit]).await }).await?
            }
            Some(EdgeCursor { at_us, user_id: last }) => {
                let sql = &format!(
                    "{select} AND (created_at, {other}) < \
                     (timestamptz 'epoch' + $3::int8 * interval '1 microsecond', $4) {order}"
                );
                self.read(op, shard, of, |c| async move {
                    rows(&c, sql, &[&user_id, &limit, &at_us, &last]).await
                })
                .await?
            }
        };
        Ok(rows.iter().map(|r| FollowEdge { user_id: r.get(0), at_us: r.get(1) }).collect())
    }

    async fn edge_list(&self, user_id: i64, sql: &str, op: &'static str) -> Result<Vec<i64>, DataError> {
        let shard = self.shard_map().shard_of_user(user_id);
        let of = ReadOf::Bucket(user_bucket(user_id));
        let rows = self.read(op, shard, of, |c| async move { rows(&c, sql, &[&user_id]).await }).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
