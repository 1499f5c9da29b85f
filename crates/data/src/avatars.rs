//! Profile photos: the normalized original recorded with its `avatar` job (the
//! thumbnails), in one statement on the user's shard; the thumbnails recorded
//! once made, only if the avatar is still the one they were made from.

use serde::{Deserialize, Serialize};
use tokio_postgres::types::Json;

use crate::error::DataError;
use crate::model::{Change, Photo, StoredImage};
use crate::route::{Data, Place};

/// The job kind that makes an avatar's thumbnails and removes the objects of the
/// avatar it replaced (once nothing names them).
pub const AVATAR_JOB: &str = "avatar";

/// What an avatar job carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvatarJob {
    /// The original to make thumbnails of (the avatar set with the job).
    pub original: StoredImage,
    /// The avatar it replaced, whose objects go once nothing names them.
    pub previous: Option<Photo>,
}

impl Data {
    /// Make `original` `user`'s avatar (its thumbnails to come), with its
    /// [`AVATAR_JOB`] naming the avatar it replaces, in one statement on the
    /// user's shard. The update reads the row `old` locked first (so a concurrent
    /// replacement is waited for, and the latest avatar named): were `old` read
    /// after the update in the same statement, its lock would skip the row.
    /// [`DataError::NotFound`] if the user does not exist.
    pub async fn set_avatar(
        &self,
        user: i64,
        original: StoredImage,
        max_attempts: i32,
    ) -> Result<(), DataError> {
        let sql = format!(
            "WITH old AS (SELECT user_id, avatar FROM users WHERE user_id = $1 FOR UPDATE), \
                  u AS (UPDATE users SET avatar = $2 WHERE user_id = (SELECT user_id FROM old) RETURNING user_id), \
                  j AS (INSERT INTO jobs (kind, user_id, payload, max_attempts, request_id) \
                        SELECT '{AVATAR_JOB}', user_id, \
                               jsonb_build_object('original', $2::jsonb -> 'original', \
                                                  'previous', (SELECT avatar FROM old)), $3, $4 \
                        FROM u) \
             SELECT 1 FROM u"
        );
        let avatar = Json(Photo { original, thumbnails: vec![] });
        let request = telemetry::request_id::current();
        let row = self
            .write_one("set_avatar", Place::user(user), &sql, &[&user, &avatar, &max_attempts, &request])
            .await?;
        row.map(|_| ()).ok_or(DataError::NotFound)
    }

    /// Record the thumbnails made of `original` as `user`'s avatar's, if the
    /// avatar is still that original (not replaced since) and has none yet.
    pub async fn finish_avatar(
        &self,
        user: i64,
        original: &StoredImage,
        thumbnails: &[StoredImage],
    ) -> Result<Change, DataError> {
        let row = self
            .write_one(
                "finish_avatar",
                Place::user(user),
                "UPDATE users SET avatar = jsonb_set(avatar, '{thumbnails}', $3) \
                 WHERE user_id = $1 AND avatar -> 'original' ->> 'key' = $2 \
                   AND jsonb_array_length(avatar -> 'thumbnails') = 0 RETURNING 1",
                &[&user, &original.key, &Json(thumbnails)],
            )
            .await?;
        Ok(if row.is_some() { Change::Changed } else { Change::Unchanged })
    }
}
