//! Which posts of a page a viewer likes: one query per shard holding any of
//! them, for the like buttons on feed and profile cards.

use std::collections::{BTreeMap, HashSet};

use sharding::{PostId, ShardId};

use crate::error::DataError;
use crate::load::ReadOf;
use crate::route::Data;
use crate::rows::rows;

impl Data {
    /// The posts among `posts` that `viewer` likes, found through the likes'
    /// primary key `(post_id, liker_id)` on the posts' shards.
    pub async fn liked_among(&self, viewer: i64, posts: &[PostId]) -> Result<HashSet<i64>, DataError> {
        let map = self.shard_map();
        let mut by_shard: BTreeMap<ShardId, Vec<i64>> = BTreeMap::new();
        for p in posts {
            by_shard.entry(map.shard_of_post(*p)).or_default().push(p.get());
        }
        let sql = "SELECT post_id FROM likes WHERE post_id = ANY($1) AND liker_id = $2";
        let per_shard = by_shard.into_iter().map(|(shard, ids)| async move {
            let ids = &ids;
            let found = self
                .read("liked_among", shard, ReadOf::Posts(ids), |c| async move {
                    rows(&c, sql, &[ids, &viewer]).await
                })
                .await?;
            Ok::<_, DataError>(found.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>())
        });
        Ok(futures::future::try_join_all(per_shard).await?.into_iter().flatten().collect())
    }
}
