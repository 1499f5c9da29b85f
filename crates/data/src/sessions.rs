//! Sessions, the store of record: one row per live session on its user's shard,
//! keyed by the SHA-256 of its token. A token carries its user's bucket, so a
//! lookup goes straight to the right shard without knowing the user.
//!
//! Expired rows are refused on read and deleted in batches
//! ([`Data::purge_expired_sessions`]).

use std::time::Duration;

use sharding::{Bucket, ShardId};

use crate::error::DataError;
use crate::load::ReadOf;
use crate::model::SessionRecord;
use crate::route::{Data, Lsn, Place};
use crate::rows::{millis, opt_row};

impl Data {
    /// Record a session of `user_id` whose token hashes to `token_hash`, living
    /// `ttl` from now. The row commits on the user's shard's primary (with the
    /// shard's replication rule), so an acknowledged login survives what the
    /// shard survives. Returns the session as [`Data::session`] reads it (a
    /// cache may hold it from the start).
    pub async fn create_session(
        &self,
        user_id: i64,
        token_hash: &[u8; 32],
        ttl: Duration,
    ) -> Result<SessionRecord, DataError> {
        let sql = "INSERT INTO sessions (token_hash, user_id, expires_at) \
                   VALUES ($1, $2, now() + $3 * interval '1 millisecond') \
                   RETURNING (extract(epoch FROM expires_at) * 1000)::int8";
        let (hash, ms) = (token_hash.as_slice(), millis(ttl));
        let row = self
            .write("create_session", Place::user(user_id), Lsn::Skip, |c| async move {
                Ok(opt_row(&c, sql, &[&hash, &user_id, &ms]).await?)
            })
            .await?;
        let row = row.ok_or(DataError::NotFound)?;
        Ok(SessionRecord { user_id, expires_at_ms: row.get(0) })
    }

    /// The live session whose token (issued for a user of `bucket`) hashes to
    /// `token_hash`; `None` if there is none or it expired.
    pub async fn session(
        &self,
        bucket: Bucket,
        token_hash: &[u8; 32],
    ) -> Result<Option<SessionRecord>, DataError> {
        let shard = self.shard_map().shard_of_bucket(bucket);
        let sql = "SELECT user_id, (extract(epoch FROM expires_at) * 1000)::int8 FROM sessions \
                   WHERE token_hash = $1 AND expires_at > now()";
        let hash = token_hash.as_slice();
        let of = ReadOf::Bucket(bucket);
        let row =
            self.read("session", shard, of, |c| async move { opt_row(&c, sql, &[&hash]).await }).await?;
        Ok(row.map(|r| SessionRecord { user_id: r.get(0), expires_at_ms: r.get(1) }))
    }

    /// End a session (idempotent): whether there was one.
    pub async fn delete_session(&self, bucket: Bucket, token_hash: &[u8; 32]) -> Result<bool, DataError> {
        let sql = "DELETE FROM sessions WHERE token_hash = $1 RETURNING 1";
        let hash = token_hash.as_slice();
        let row = self
            .write("delete_session", Place::Bucket(bucket), Lsn::Skip, |c| async move {
                Ok(opt_row(&c, sql, &[&hash]).await?)
            })
            .await?;
        Ok(row.is_some())
    }

    /// Delete up to `limit` sessions of `shard` that expired; how many went.
    pub async fn purge_expired_sessions(&self, shard: ShardId, limit: i64) -> Result<u64, DataError> {
        let sql = "WITH gone AS (DELETE FROM sessions WHERE token_hash IN \
                     (SELECT token_hash FROM sessions WHERE expires_at <= now() LIMIT $1) RETURNING 1) \
                   SELECT count(*) FROM gone";
        let row =
            self.write("purge_sessions", shard, Lsn::Skip, |c| async move {
                Ok(opt_row(&c, sql, &[&limit]).await?)
            })
            .await?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
    }
}
