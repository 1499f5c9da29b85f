//! Finding people and photos: the queries behind the user directory, the
//! suggestions and the explore page (ADR 0023).
//!
//! Each is bounded in work on every shard it reads: a name prefix's users are
//! an index range scan of at most `limit` rows per index (migration V8), the
//! popular accounts the top of `users_by_followers`, friends of friends at most
//! `per_source` edges of each sampled followee (through `follows_out_newest`),
//! the explore page a recent range of post ids. The web tier merges the
//! shards' answers and caches them in Redis.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sharding::{PostId, ShardId};

use crate::error::DataError;
use crate::load::ReadOf;
use crate::route::Data;
use crate::rows::rows;

/// A user as the directory lists them: the names it matches a prefix against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// The user's id.
    pub user_id: i64,
    /// The (lowercase) username.
    pub username: String,
    /// The shown name, as stored (the directory folds its case).
    pub display_name: String,
}

/// A user or post with what it is ranked by: popular accounts (followers),
/// friends of friends (followees following them), explore (likes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranked {
    /// The user's (or post's) id.
    pub id: i64,
    /// What it is ranked by (followers, or shared followees, or likes).
    pub score: i64,
}

/// The smallest string greater than every string that starts with `prefix`
/// (its last character incremented), or `None` if there is none.
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 {
            0xD7FF => Some('\u{E000}'),
            n => char::from_u32(n + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// One shard's users whose username or lowercased display name starts with
/// `$1` (and sorts below `$2`): at most `$3` of each, from their indexes in
/// byte order.
const PREFIX_SQL: &str = "SELECT u.user_id, u.username, u.display_name FROM ( \
       (SELECT user_id FROM users WHERE username ~>=~ $1 AND username ~<~ $2 \
        ORDER BY username USING ~<~ LIMIT $3) \
       UNION \
       (SELECT user_id FROM users WHERE lower(display_name) ~>=~ $1 AND lower(display_name) ~<~ $2 \
        ORDER BY lower(display_name) USING ~<~ LIMIT $3)) m \
     JOIN users u USING (user_id)";

impl Data {
    /// The users of every shard whose username or lowercased display name
    /// starts with `prefix` (already lowercase): from each shard at most
    /// `per_shard` by each name, the first in byte order. One query per shard.
    pub async fn users_with_prefix(
        &self,
        prefix: &str,
        per_shard: i64,
    ) -> Result<Vec<DirectoryEntry>, DataError> {
        // No string sorts above the range: every string from the prefix on.
        let end = prefix_end(prefix).unwrap_or_else(|| format!("{prefix}\u{10FFFF}\u{10FFFF}"));
        let per_shard_reads = self.shard_map().shards().map(|shard| {
            let end = &end;
            async move {
                let rows = self
                    .read("users_with_prefix", shard, ReadOf::Shard, |c| async move {
                        rows(&c, PREFIX_SQL, &[&prefix, end, &per_shard]).await
                    })
                    .await?;
                Ok::<_, DataError>(
                    rows.iter()
                        .map(|r| DirectoryEntry {
                            user_id: r.get(0),
                            username: r.get(1),
                            display_name: r.get(2),
                        })
                        .collect::<Vec<_>>(),
                )
            }
        });
        Ok(futures::future::try_join_all(per_shard_reads).await?.into_iter().flatten().collect())
    }

    /// The `limit` users with the most followers, over every shard (each
    /// shard's top from `users_by_followers`), most followed first.
    pub async fn popular_users(&self, limit: i64) -> Result<Vec<Ranked>, DataError> {
        let sql = "SELECT user_id, followers_count FROM users ORDER BY followers_count DESC LIMIT $1";
        let per_shard = self.shard_map().shards().map(|shard| async move {
            let rows =
                self.read("popular_users", shard, ReadOf::Shard, |c| async move {
                    rows(&c, sql, &[&limit]).await
                })
                .await?;
            Ok::<_, DataError>(
                rows.iter().map(|r| Ranked { id: r.get(0), score: r.get(1) }).collect::<Vec<_>>(),
            )
        });
        let mut all: Vec<Ranked> =
            futures::future::try_join_all(per_shard).await?.into_iter().flatten().collect();
        all.sort_by(|a, b| b.score.cmp(&a.score).then(a.id.cmp(&b.id)));
        all.truncate(limit.max(0) as usize);
        Ok(all)
    }

    /// Whom `sources` follow, each counted by how many of them follow it, most
    /// shared first: at most the `per_source` newest followees of each source
    /// are read (bounded work whatever a source follows), at most `limit`
    /// returned. One query per shard holding a source.
    pub async fn followees_of_many(
        &self,
        sources: &[i64],
        per_source: i64,
        limit: i64,
    ) -> Result<Vec<Ranked>, DataError> {
        let map = self.shard_map();
        let mut by_shard: BTreeMap<ShardId, Vec<i64>> = BTreeMap::new();
        for id in sources {
            by_shard.entry(map.shard_of_user(*id)).or_default().push(*id);
        }
        // Each shard's counts are partial (its sources only): summed below, so
        // each shard returns all it counted, at most per_source × its sources.
        let sql = "SELECT f.followee_id, count(*)::int8 FROM unnest($1::int8[]) AS s(id) \
                   CROSS JOIN LATERAL (SELECT followee_id FROM follows_out WHERE user_id = s.id \
                                       ORDER BY created_at DESC, followee_id DESC LIMIT $2) f \
                   GROUP BY f.followee_id";
        let per_shard = by_shard.into_iter().map(|(shard, ids)| async move {
            let ids = &ids;
            let rows = self
                .read("followees_of_many", shard, ReadOf::Users(ids), |c| async move {
                    rows(&c, sql, &[ids, &per_source]).await
                })
                .await?;
            Ok::<_, DataError>(
                rows.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1))).collect::<Vec<_>>(),
            )
        });
        let mut counts: HashMap<i64, i64> = HashMap::new();
        for (id, n) in futures::future::try_join_all(per_shard).await?.into_iter().flatten() {
            *counts.entry(id).or_default() += n;
        }
        let mut all: Vec<Ranked> = counts.into_iter().map(|(id, score)| Ranked { id, score }).collect();
        all.sort_by(|a, b| b.score.cmp(&a.score).then(a.id.cmp(&b.id)));
        all.truncate(limit.max(0) as usize);
        Ok(all)
    }

    /// The ready photo posts of the last `window` with the most likes, over
    /// every shard (each shard's posts since the window's first post id),
    /// most liked first, then newest.
    pub async fn popular_photo_posts(&self, window: Duration, limit: i64) -> Result<Vec<Ranked>, DataError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // The ids' epoch: the time of the smallest id.
        let id_epoch_ms = PostId::from_i64(1).map(PostId::unix_ms).unwrap_or(0);
        let since_ms = now_ms.saturating_sub(window.as_millis() as u64).saturating_sub(id_epoch_ms);
        // A post id is `ms since the id epoch` above 22 bits of bucket and sequence.
        let first_id = (since_ms << 22) as i64;
        let sql = "SELECT post_id, like_count FROM posts \
                   WHERE post_id >= $1 AND photo IS NOT NULL AND status = 'ready' \
                   ORDER BY like_count DESC, post_id DESC LIMIT $2";
        let per_shard = self.shard_map().shards().map(|shard| async move {
            let rows = self
                .read("popular_photo_posts", shard, ReadOf::Shard, |c| async move {
                    rows(&c, sql, &[&first_id, &limit]).await
                })
                .await?;
            Ok::<_, DataError>(
                rows.iter().map(|r| Ranked { id: r.get(0), score: r.get(1) }).collect::<Vec<_>>(),
            )
        });
        let mut all: Vec<Ranked> =
            futures::future::try_join_all(per_shard).await?.into_iter().flatten().collect();
        all.sort_by(|a, b| b.score.cmp(&a.score).then(b.id.cmp(&a.id)));
        all.truncate(limit.max(0) as usize);
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_last_character_incremented() {
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
    }
}
