//! Home timelines: capped sets of post ids per user in Redis.
//!
//! A timeline is a sorted set whose members are post ids written as 19-digit,
//! zero-padded decimals, all with score 0, so Redis orders them lexically — which
//! is numerically, which (ids being time-ordered) is by time. Scores are not used
//! because a double cannot hold a 63-bit id exactly.
//!
//! A second key, the *marker*, says the set is complete (built from the database).
//! A read without the marker treats the timeline as cold and rebuilds it, merging.
//!
//! Fan-out pushes a post only into the timelines someone reads: those that exist,
//! even empty (a timeline lives `ttl` since its last read or write), and those being rebuilt
//! (a third key, set by [`Timelines::begin_rebuild`] before the rebuild reads the
//! database, so a post committed while a timeline is being rebuilt is not lost).
//! A follower who does not read gets nothing pushed, and no memory: their timeline
//! is rebuilt from the database when they do (as Twitter pushes only into cached
//! timelines). Each script call handles at most [`BATCH`] followers, so no call
//! holds a Redis long whatever a user's follower count.
//!
//! Every data center keeps its own timelines in its own Redis. Writes (pushes,
//! drops) go to all of them at once, since a follower may read through any data
//! center; reads and rebuilds stay in the local one (ADR 0008).

use std::time::Duration;

use redis::Script;

use crate::{Redis, RedisError, SpreadError};

/// Timeline operations.
#[derive(Clone)]
pub struct Timelines {
    /// Where timelines live: this data center's Redis (reads, rebuilds) and its
    /// peers (pushes and drops reach every data center).
    redis: Redis,
    /// Most post ids kept per timeline.
    cap: usize,
    /// Lifetime of a timeline since its last write or read; a lapsed one is rebuilt.
    ttl: Duration,
    /// Adds one post to the timelines, of many, that exist or are being rebuilt.
    push: Script,
    /// Merges a rebuilt list into a timeline and marks it complete.
    fill: Script,
}

impl std::fmt::Debug for Timelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timelines").field("cap", &self.cap).finish()
    }
}

/// Most followers handled by one script call (three keys each): a call takes well
/// under a millisecond, so other commands never wait long behind a fan-out.
pub const BATCH: usize = 64;

/// How long a rebuild's mark lives: longer than a rebuild's database read.
const REBUILD_MARK: Duration = Duration::from_secs(30);

fn member(post_id: i64) -> String {
    format!("{post_id:019}")
}

impl Timelines {
    /// Timelines of at most `cap` posts, each living `ttl` since last touched.
    pub fn new(redis: Redis, cap: usize, ttl: Duration) -> Timelines {
        // KEYS: a timeline, its marker, its rebuild mark, the next timeline, ...
        let push = Script::new(
            r"
            local cap = tonumber(ARGV[2])
            local ttl = tonumber(ARGV[3])
            local pushed = 0
            for i = 1, #KEYS, 3 do
              local k = KEYS[i]
              if redis.call('EXISTS', k, KEYS[i + 1], KEYS[i + 2]) > 0 then
                redis.call('ZADD', k, 0, ARGV[1])
                redis.call('ZREMRANGEBYRANK', k, 0, -(cap + 1))
                redis.call('EXPIRE', k, ttl)
                pushed = pushed + 1
              end
            end
            return pushed",
        );
        let fill = Script::new(
            r"
            local cap = tonumber(ARGV[1])
            local ttl = tonumber(ARGV[2])
            for i = 3, #ARGV do redis.call('ZADD', KEYS[1], 0, ARGV[i]) end
            redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(cap + 1))
            if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ttl) end
            redis.call('SET', KEYS[2], '1', 'EX', ttl)
            redis.call('DEL', KEYS[3])
            return 1",
        );
        Timelines { redis, cap, ttl, push, fill }
    }

    /// Most ids a timeline holds.
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn key(&self, user: i64) -> String {
        self.redis.key(&format!("tl:{user}"))
    }

    fn marker(&self, user: i64) -> String {
        self.redis.key(&format!("tlok:{user}"))
    }

    fn rebuild_mark(&self, user: i64) -> String {
        self.redis.key(&format!("tlb:{user}"))
    }

    /// Mark `user`'s timeline as being rebuilt, before the rebuild reads the
    /// database: from now on fan-out pushes into it (in this data center's Redis,
    /// where it is rebuilt), so no post is lost between the read and the fill.
    pub async fn begin_rebuild(&self, user: i64) -> Result<(), RedisError> {
        let key = self.rebuild_mark(user);
        let secs = REBUILD_MARK.as_secs();
        self.redis
            .run(|mut c| async move {
                redis::cmd("SET").arg(key).arg(1).arg("EX").arg(secs).query_async::<()>(&mut c).await
            })
            .await
    }

    /// Add `post_id` to those timelines of `owners` that someone reads (existing
    /// or being rebuilt), in this data center's Redis and every peer's at once (a
    /// reader may use any data center). Each server gets the batches in turn and
    /// stops at its first failure. Idempotent: a caller told of a failure (local or
    /// peer) pushes again.
    pub async fn push(&self, post_id: i64, owners: &[i64]) -> Result<(), SpreadError> {
        let m = member(post_id);
        let ttl = self.ttl.as_secs().max(1);
        let batches: Vec<_> = owners
            .chunks(BATCH)
            .map(|chunk| {
                let mut inv = self.push.prepare_invoke();
                for owner in chunk {
                    inv.key(self.key(*owner)).key(self.marker(*owner)).key(self.rebuild_mark(*owner));
                }
                inv.arg(&m).arg(self.cap).arg(ttl);
                inv
            })
            .collect();
        let batches = &batches;
        self.redis
            .run_everywhere("timeline push", |server| async move {
                for inv in batches {
                    server.run(|mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await?;
                }
                Ok(())
            })
            .await
    }

    /// Up to `limit` ids of `user`'s timeline older than `before`, newest first; `None`
    /// if the timeline is cold (never built, or lapsed) and must be rebuilt. A read
    /// refreshes the timeline's lifetime (the set's and its marker's, in the same
    /// transaction), so the timelines of active readers stay warm.
    pub async fn page(
        &self,
        user: i64,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Option<Vec<i64>>, RedisError> {
        let max = before.map_or_else(|| "+".to_owned(), |b| format!("({}", member(b)));
        let ttl = self.ttl.as_secs().max(1);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .get(self.marker(user))
            .cmd("ZREVRANGEBYLEX")
            .arg(self.key(user))
            .arg(max)
            .arg("-")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            // EXPIRE of a missing key does nothing: a cold timeline stays cold.
            .expire(self.key(user), ttl as i64)
            .ignore()
            .expire(self.marker(user), ttl as i64)
            .ignore();
        let (complete, ids): (Option<String>, Vec<String>) =
            self.redis.run(|mut c| async move { pipe.query_async(&mut c).await }).await?;
        if complete.is_none() {
            return Ok(None);
        }
        Ok(Some(ids.iter().filter_map(|s| s.parse().ok()).collect()))
    }

    /// Merge `ids` (rebuilt from the database) into `user`'s timeline and mark it
    /// complete — in this data center's Redis only: it is a cache fill, and each
    /// data center rebuilds its own timelines when they are read there.
    pub async fn fill(&self, user: i64, ids: &[i64]) -> Result<(), RedisError> {
        let mut inv = self.fill.prepare_invoke();
        inv.key(self.key(user))
            .key(self.marker(user))
            .key(self.rebuild_mark(user))
            .arg(self.cap)
            .arg(self.ttl.as_secs().max(1));
        for id in ids.iter().take(self.cap) {
            inv.arg(member(*id));
        }
        self.redis.run(|mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await?;
        Ok(())
    }

    /// Forget `user`'s timeline (it will be rebuilt on next read), in this data
    /// center's Redis and every peer's.
    pub async fn drop_timeline(&self, user: i64) -> Result<(), SpreadError> {
        let mut del = redis::cmd("DEL");
        del.arg(self.key(user)).arg(self.marker(user));
        let del = &del;
        self.redis
            .run_everywhere("timeline drop", |server| async move {
                server.run(|mut c| async move { del.query_async::<i64>(&mut c).await }).await.map(|_| ())
            })
            .await
    }
}
