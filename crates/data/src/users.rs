//! Users: sign-up, credentials, names to ids, profiles with their counters, and
//! the celebrities (users with many followers) from every shard.

use std::collections::BTreeMap;

use sharding::{ShardId, new_user_id, user_bucket, username_bucket};
use tokio_postgres::Row;

use crate::consistency;
use crate::error::DataError;
use crate::load::ReadOf;
use crate::model::{Credentials, UserRecord};
use crate::route::{Data, Lsn, Place};
use crate::rows::{opt_row, rows};

/// What a profile query selects, in the names [`user_from`] reads.
const USER_COLUMNS: &str = "user_id, username, display_name, bio, followers_count, following_count, posts_count, \
     (extract(epoch from created_at) * 1000)::int8 AS created_ms, avatar";

/// A row selected with [`USER_COLUMNS`] as a user.
fn user_from(row: &Row) -> UserRecord {
    UserRecord {
        user_id: row.get("user_id"),
        username: row.get("username"),
        display_name: row.get("display_name"),
        bio: row.get("bio"),
        followers_count: row.get("followers_count"),
        following_count: row.get("following_count"),
        posts_count: row.get("posts_count"),
        created_ms: row.get("created_ms"),
        avatar: row.get::<_, Option<tokio_postgres::types::Json<crate::model::Photo>>>("avatar").map(|j| j.0),
    }
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
        let sql = format!(
            "INSERT INTO users (user_id, username, display_name, password_hash) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (username) DO NOTHING RETURNING {USER_COLUMNS}"
        );
        let sql = sql.as_str();
        let row = self
            .write("create_user", Place::user(user_id), Lsn::Track, |c| async move {
                Ok(opt_row(&c, sql, &[&user_id, &username, &display_name, &password_hash]).await?)
            })
            .await?;
        row.as_ref().map(user_from).ok_or(DataError::Conflict("username is taken"))
    }

    /// Change a user's shown name and bio (each only if given); the updated
    /// profile, or [`DataError::NotFound`] if there is no such user. Values must
    /// already be validated (the table refuses a bio over 300 characters).
    pub async fn update_profile(
        &self,
        user_id: i64,
        display_name: Option<&str>,
        bio: Option<&str>,
    ) -> Result<UserRecord, DataError> {
        let sql = format!(
            "UPDATE users SET display_name = coalesce($2, display_name), bio = coalesce($3, bio) \
             WHERE user_id = $1 RETURNING {USER_COLUMNS}"
        );
        let row = self
            .write_one("update_profile", Place::user(user_id), &sql, &[&user_id, &display_name, &bio])
            .await?;
        row.as_ref().map(user_from).ok_or(DataError::NotFound)
    }

    /// Id and password hash of the user with this (normalized) name.
    ///
    /// May be served by a replica; "no such user" from a replica is confirmed on
    /// the primary, so a user who just signed up (on any web server) can log in.
    pub async fn credentials(&self, username: &str) -> Result<Option<Credentials>, DataError> {
        let shard = self.shard_map().shard_of_username(username);
        let sql = "SELECT user_id, password_hash FROM users WHERE username = $1";
        let of = ReadOf::Bucket(username_bucket(username));
        let found = self
            .read("credentials", shard, of, |c| async move { opt_row(&c, sql, &[&username]).await })
            .await?;
        let row = match found {
            Some(row) => Some(row),
            None if !consistency::primary_only() => {
                self.read_primary("credentials", shard, of, |c| async move {
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
        let of = ReadOf::Bucket(username_bucket(username));
        let row = self
            .read("user_id_by_username", shard, of, |c| async move { opt_row(&c, sql, &[&username]).await })
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// A user's profile and counters.
    pub async fn profile(&self, user_id: i64) -> Result<Option<UserRecord>, DataError> {
        let shard = self.shard_map().shard_of_user(user_id);
        let sql = &format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = $1");
        let of = ReadOf::Bucket(user_bucket(user_id));
        let row =
            self.read("profile", shard, of, |c| async move { opt_row(&c, sql, &[&user_id]).await }).await?;
        Ok(row.as_ref().map(user_from))
    }

    /// Several users' profiles, with one query per shard involved; missing ones
    /// are skipped.
    pub async fn profiles(&self, user_ids: &[i64]) -> Result<Vec<UserRecord>, DataError> {
        let map = self.shard_map();
        let mut by_shard: BTreeMap<ShardId, Vec<i64>> = BTreeMap::new();
        for id in user_ids {
            by_shard.entry(map.shard_of_user(*id)).or_default().push(*id);
        }
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = ANY($1)");
        let per_shard = by_shard.into_iter().map(|(shard, ids)| {
            let sql = &sql;
            async move {
                let ids = &ids;
                let of = ReadOf::Users(ids);
                let rows =
                    self.read("profiles", shard, of, |c| async move { rows(&c, sql, &[ids]).await }).await?;
                Ok::<_, DataError>(rows.iter().map(user_from).collect::<Vec<_>>())
            }
        });
        Ok(futures::future::try_join_all(per_shard).await?.into_iter().flatten().collect())
    }

    /// Users with at least `threshold` followers, from every shard.
    pub async fn celebrities(&self, threshold: i64) -> Result<Vec<i64>, DataError> {
        let per_shard = self.shard_map().shards().map(|shard| async move {
            let sql = "SELECT user_id FROM users WHERE followers_count >= $1";
            let rows =
                self.read("celebrities", shard, ReadOf::Shard, |c| async move {
                    rows(&c, sql, &[&threshold]).await
                })
                .await?;
            Ok::<_, DataError>(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>())
        });
        Ok(futures::future::try_join_all(per_shard).await?.into_iter().flatten().collect())
    }
}
