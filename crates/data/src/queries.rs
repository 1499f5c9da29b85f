//! Every query the system runs, each routed through the shard map.

use std::collections::BTreeMap;

use deadpool_postgres::ClientWrapper;
use sharding::{PostId, ShardId, new_user_id, username_bucket};
use tokio_postgres::Row;
use tokio_postgres::types::Json;

use crate::error::QueryError;
use crate::route::Lsn;
use crate::{Change, Credentials, Data, DataError, Photo, PostRecord, UserRecord, consistency};

const USER_COLUMNS: &str = "user_id, username, display_name, followers_count, following_count, posts_count, \
     (extract(epoch from created_at) * 1000)::int8 AS created_ms";
pub(crate) const POST_COLUMNS: &str = "post_id, user_id, caption, like_count, \
     (extract(epoch from created_at) * 1000)::int8 AS created_ms, status, photo";

fn user_from(row: &Row) -> UserRecord {
    UserRecord {
        user_id: row.get("user_id"),
        username: row.get("username"),
        display_name: row.get("display_name"),
        followers_count: row.get("followers_count"),
        following_count: row.get("following_count"),
        posts_count: row.get("posts_count"),
        created_ms: row.get("created_ms"),
    }
}

pub(crate) fn post_from(row: &Row) -> PostRecord {
    PostRecord {
        post_id: row.get("post_id"),
        user_id: row.get("user_id"),
        caption: row.get("caption"),
        like_count: row.get("like_count"),
        created_ms: row.get("created_ms"),
        status: row.get("status"),
        photo: row.get::<_, Option<Json<Photo>>>("photo").map(|Json(p)| p),
    }
}

type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// `sql` (prepared once per connection) with `params`: at most one row.
async fn opt_row(
    c: &ClientWrapper,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query_opt(&stmt, params).await
}

/// `sql` (prepared once per connection) with `params`: every row.
pub(crate) async fn rows(
    c: &ClientWrapper,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query(&stmt, params).await
}

impl Data {
    /// Create a user. The name must already be normalized and validated.
    ///
    /// Fails with [`DataError::Conflict`] if the name is taken.
    pub async fn create_user(
        &self,
        username: &str,
        display_name: &str,
        password_hash: &str,
    ) -> Result<UserRecord, DataError> {
        let user_id = new_user_id(username_bucket(username));
        let shard = self.shard_map().shard_of_user(user_id);
        let sql = format!(
            "INSERT INTO users (user_id, username, display_name, password_hash) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (username) DO NOTHING RETURNING {USER_COLUMNS}"
        );
        let row = self
            .write("create_user", shard, Lsn::Track, |c| async move {
                let stmt = c.prepare_cached(&sql).await?;
                Ok(c.query_opt(&stmt, &[&user_id, &username, &display_name, &password_hash]).await?)
            })
            .await?;
        row.as_ref().map(user_from).ok_or(DataError::Conflict("username is taken"))
    }

    /// Id and password hash of the user with this (normalized) name.
    ///
    /// May be served by a replica; "no such user" from a replica is confirmed on
    /// the primary, so a user who just signed up (on any web server) can log in.
    pub async fn credentials(&self, username: &str) -> Result<Option<Credentials>, DataError> {
        let shard = self.shard_map().shard_of_username(username);
        let sql = "SELECT user_id, password_hash FROM users WHERE username = $1";
        let found =
            self.read("credentials", shard, |c| async move { opt_row(&c, sql, &[&username]).await }).await?;
        let row =
            match found {
                Some(row) => Some(row),
                None if !consistency::primary_only() => {
                    self.read_primary("credentials", shard, |c| async move {
                        opt_row(&c, sql, &[&username]).await
                    })
                    .await?
                }
                None => None,
            };
        Ok(row.map(|r| Credentials { user_id: r.get(0), password_hash: r.get(1) }))
    }

    /// The id of the user with this (normalized) name.
    pub async fn user_id_by_username(&self, username: &str) -> Result<Option<i64>, DataError> {
        let shard = self.shard_map().shard_of_username(username);
        let sql = "SELECT user_id FROM users WHERE username = $1";
        let row = self
            .read("user_id_by_username", shard, |c| async move { opt_row(&c, sql, &[&username]).await })
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// A user's profile and counters.
    pub async fn profile(&self, user_id: i64) -> Result<Option<UserRecord>, DataError> {
        let shard = self.shard_map().shard_of_user(user_id);
        let sql = &format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = $1");
        let row = self.read("profile", shard, |c| async move { opt_row(&c, sql, &[&user_id]).await }).await?;
        Ok(row.as_ref().map(user_from))
    }

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

    async fn set_follow(&self, follower: i64, followee: i64, on: bool) -> Result<Change, DataError> {
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
                .write(op, out_shard, Lsn::Track, |c| async move {
                    Ok(c.query_opt(out_sql, &[&follower, &followee]).await?)
                })
                .await?;
            let Some(out_row) = out_row else { return Err(DataError::NotFound) };
            let in_row = self
                .write(op, in_shard, Lsn::Track, |c| async move {
                    Ok(c.query_opt(in_sql, &[&followee, &follower]).await?)
                })
                .await?;
            if in_row.is_none() && on {
                return Err(DataError::NotFound);
            }
            out_row.get::<_, i64>(0) > 0
        };
        Ok(if changed { Change::Changed } else { Change::Unchanged })
    }

    /// Whether `follower` follows `followee`.
    pub async fn is_following(&self, follower: i64, followee: i64) -> Result<bool, DataError> {
        let shard = self.shard_map().shard_of_user(follower);
        let sql = "SELECT 1 FROM follows_out WHERE user_id = $1 AND followee_id = $2";
        let row = self
            .read("is_following", shard, |c| async move { opt_row(&c, sql, &[&follower, &followee]).await })
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
        let rows = self.read(op, shard, |c| async move { rows(&c, sql, &[&user_id]).await }).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Users with at least `threshold` followers, from every shard.
    pub async fn celebrities(&self, threshold: i64) -> Result<Vec<i64>, DataError> {
        let per_shard = self.shard_map().shards().map(|shard| async move {
            let sql = "SELECT user_id FROM users WHERE followers_count >= $1";
            let rows = self
                .read("celebrities", shard, |c| async move { rows(&c, sql, &[&threshold]).await })
                .await?;
            Ok::<_, DataError>(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>())
        });
        Ok(futures::future::try_join_all(per_shard).await?.into_iter().flatten().collect())
    }

    /// Create a text post by `author`, count it on the author's profile, and
    /// enqueue its fan-out job (see [`Data::create_post_queued`]).
    pub async fn create_post(&self, author: i64, caption: &str) -> Result<PostRecord, DataError> {
        Ok(self.create_post_queued(author, caption).await?.0)
    }

    /// Run `sql`, an insert of a new post by `author` whose `$1` is the post id and
    /// whose further parameters are `rest`, returning its row. Another process may,
    /// very rarely, have made the same id in the same millisecond: then another id
    /// is drawn.
    pub(crate) async fn insert_post(
        &self,
        author: i64,
        sql: &str,
        op: &'static str,
        rest: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Row, DataError> {
        let shard = self.shard_map().shard_of_user(author);
        self.write(op, shard, Lsn::Track, |client| async move {
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

    /// One post.
    pub async fn post(&self, id: PostId) -> Result<Option<PostRecord>, DataError> {
        let shard = self.shard_map().shard_of_post(id);
        let sql = &format!("SELECT {POST_COLUMNS} FROM posts WHERE post_id = $1");
        let row = self.read("post", shard, |c| async move { opt_row(&c, sql, &[&id.get()]).await }).await?;
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
                let rows = self.read("posts", shard, |c| async move { rows(&c, sql, &[ids]).await }).await?;
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
        let rows = self
            .read("user_posts", shard, |c| async move { rows(&c, sql, &[&user_id, &before, &limit]).await })
            .await?;
        Ok(rows.iter().map(post_from).collect())
    }

    /// The newest `limit` post ids written by any of `authors`, newest first: what a
    /// home timeline is rebuilt from.
    pub async fn recent_post_ids(&self, authors: &[i64], limit: i64) -> Result<Vec<PostId>, DataError> {
        let map = self.shard_map();
        let mut by_shard: BTreeMap<ShardId, Vec<i64>> = BTreeMap::new();
        for a in authors {
            by_shard.entry(map.shard_of_user(*a)).or_default().push(*a);
        }
        let per_shard = by_shard.into_iter().map(|(shard, authors)| async move {
            let authors = &authors;
            let sql = "SELECT p.post_id FROM unnest($1::int8[]) AS a(id) CROSS JOIN LATERAL \
                       (SELECT post_id FROM posts WHERE user_id = a.id ORDER BY post_id DESC LIMIT $2) p \
                       ORDER BY p.post_id DESC LIMIT $2";
            let rows = self
                .read("recent_post_ids", shard, |c| async move { rows(&c, sql, &[authors, &limit]).await })
                .await?;
            Ok::<_, DataError>(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>())
        });
        let mut ids: Vec<i64> =
            futures::future::try_join_all(per_shard).await?.into_iter().flatten().collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(limit.max(0) as usize);
        Ok(ids.into_iter().filter_map(|id| PostId::from_i64(id).ok()).collect())
    }

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
        let shard = self.shard_map().shard_of_post(post);
        let row = self
            .write(op, shard, Lsn::Track, |c| async move {
                let stmt = c.prepare_cached(sql).await?;
                Ok(c.query_opt(&stmt, &[&post.get(), &liker]).await?)
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
            .read("likes", shard, |c| async move { opt_row(&c, sql, &[&post.get(), &user]).await })
            .await?;
        Ok(row.is_some())
    }
}
