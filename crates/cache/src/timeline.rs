//! Home timelines: capped sets of post ids per user in Redis.
//!
//! A timeline is one sorted set whose members are post ids written as 19-digit,
//! zero-padded decimals, all with score 0, so Redis orders them lexically — which
//! is numerically, which (ids being time-ordered) is by time. Scores are not used
//! because a double cannot hold a 63-bit id exactly.
//!
//! Two more members, which sort outside the digits, say what the set is:
//! [`COMPLETE`] (`~`, after every id) that it was built from the database, and
//! [`REBUILDING`] (`!`, before every id) that a reader is rebuilding it. A read
//! without the complete member treats the timeline as cold and rebuilds it,
//! merging. Keeping the state inside the one key is what lets Redis evict
//! timelines under its memory budget: an evicted timeline is simply cold, where a
//! marker kept in a key of its own could outlive its set and vouch for an empty one.
//!
//! Fan-out pushes a post only into the timelines someone reads: those that exist
//! (a timeline lives `ttl` since it was last read or rebuilt; pushes do not
//! lengthen it) — including those being rebuilt ([`Timelines::begin_rebuild`] adds
//! the rebuilding member before the rebuild reads the database, so a post committed
//! while a timeline is being rebuilt is not lost). A follower who does not read gets
//! nothing pushed, and no memory: their timeline is rebuilt from the database when
//! they do (as Twitter pushes only into cached timelines). Each script call handles
//! at most [`BATCH`] followers, so no call holds a Redis long whatever a user's
//! follower count, and [`CALLS_PER_TRIP`] calls travel in one round trip.
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
    /// Lifetime of a timeline since it was last read or rebuilt; a lapsed (or
    /// evicted) one is rebuilt.
    ttl: Duration,
    /// Adds one post to the timelines, of many, that exist; answers how many.
    push: Script,
    /// Marks a timeline as being rebuilt, creating it if need be.
    begin: Script,
    /// Merges a rebuilt list into a timeline and marks it complete.
    fill: Script,
}

impl std::fmt::Debug for Timelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timelines").field("cap", &self.cap).finish()
    }
}

/// Most followers handled by one script call (one key each): a call takes well
/// under a millisecond, so other commands never wait long behind a fan-out.
pub const BATCH: usize = 64;

/// Script calls of a push sent in one round trip: a post's fan-out to 1,000
/// followers is then one round trip per data center instead of 16, while Redis,
/// which runs a client's pipelined calls one after another, is held about a
/// millisecond at most by one trip.
pub const CALLS_PER_TRIP: usize = 16;

/// `ZREM`s of a retraction sent in one round trip: each takes a microsecond or
/// two, so a trip holds a Redis well under a millisecond.
pub const RETRACT_PER_TRIP: usize = 256;

/// The member that says a timeline is complete: sorts after every id.
pub const COMPLETE: &str = "~";

/// The member that says a timeline is being rebuilt: sorts before every id.
pub const REBUILDING: &str = "!";

/// How long a timeline created by [`Timelines::begin_rebuild`] lives unless filled:
/// longer than a rebuild's database read.
const REBUILD_MARK: Duration = Duration::from_secs(30);

fn member(post_id: i64) -> String {
    format!("{post_id:019}")
}

impl Timelines {
    /// Timelines of at most `cap` posts, each living `ttl` since last read or rebuilt.
    pub fn new(redis: Redis, cap: usize, ttl: Duration) -> Timelines {
        // KEYS: timelines; ARGV: the member, the cap. Keeps the newest `cap` ids
        // plus the complete member (the rebuilding one, lowest, goes first).
        let push = Script::new(
            r"
            local keep = tonumber(ARGV[2]) + 1
            local pushed = 0
            for i = 1, #KEYS do
              local k = KEYS[i]
              if redis.call('EXISTS', k) == 1 then
                redis.call('ZADD', k, 0, ARGV[1])
                redis.call('ZREMRANGEBYRANK', k, 0, -(keep + 1))
                pushed = pushed + 1
              end
            end
            return pushed",
        );
        // KEYS: the timeline; ARGV: the rebuilding member, the mark's lifetime. A
        // timeline that lives longer keeps its lifetime (never shortened).
        let begin = Script::new(
            r"
            redis.call('ZADD', KEYS[1], 0, ARGV[1])
            local left = redis.call('TTL', KEYS[1])
            if left < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
            return 1",
        );
        // KEYS: the timeline; ARGV: cap, ttl, complete, rebuilding, ids... Only
        // into a timeline that still exists: one dropped (a follow change) or
        // evicted since the rebuild began may have missed pushes, or hold a
        // followee list the rebuild did not read.
        let fill = Script::new(
            r"
            if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
            local keep = tonumber(ARGV[1]) + 1
            for i = 5, #ARGV do redis.call('ZADD', KEYS[1], 0, ARGV[i]) end
            redis.call('ZREM', KEYS[1], ARGV[4])
            redis.call('ZADD', KEYS[1], 0, ARGV[3])
            redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(keep + 1))
            redis.call('EXPIRE', KEYS[1], ARGV[2])
            return 1",
        );
        Timelines { redis, cap, ttl, push, begin, fill }
    }

    /// Most ids a timeline holds.
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn key(&self, user: i64) -> String {
        self.redis.key(&format!("tl:{user}"))
    }

    /// Mark `user`'s timeline as being rebuilt, before the rebuild reads the
    /// database: from now on fan-out pushes into it (in this data center's Redis,
    /// where it is rebuilt), so no post is lost between the read and the fill.
    pub async fn begin_rebuild(&self, user: i64) -> Result<(), RedisError> {
        let mut inv = self.begin.prepare_invoke();
        inv.key(self.key(user)).arg(REBUILDING).arg(REBUILD_MARK.as_secs());
        self.redis.run(|mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await?;
        Ok(())
    }

    /// Add `post_id` to those timelines of `owners` that someone reads (existing,
    /// complete or being rebuilt), in this data center's Redis and every peer's at
    /// once (a reader may use any data center). Each server gets the batches in
    /// turn and stops at its first failure. Idempotent: a caller told of a failure
    /// (local or peer) pushes again.
    ///
    /// Returns how many of `owners`' timelines were written in this data center's
    /// Redis (those that exist there; a timeline already holding the post counts
    /// too). The count is per data center: every peer gets the same pushes, into
    /// its own timelines, and its count is not gathered — a fan-out's writes in
    /// all data centers are about this number times their count.
    pub async fn push(&self, post_id: i64, owners: &[i64]) -> Result<usize, SpreadError> {
        let m = member(post_id);
        let batches: Vec<_> = owners
            .chunks(BATCH)
            .map(|chunk| {
                let mut inv = self.push.prepare_invoke();
                for owner in chunk {
                    inv.key(self.key(*owner));
                }
                inv.arg(&m).arg(self.cap);
                inv
            })
            .collect();
        // Up to CALLS_PER_TRIP calls per round trip. Pipelined calls cannot load
        // the script themselves: a Redis that lost it (restarted) answers NOSCRIPT,
        // and the trip is sent again once it is loaded (pushes are idempotent).
        // Loading it ahead of every trip instead cost Redis 20 µs per post.
        let trips: Vec<redis::Pipeline> = batches
            .chunks(CALLS_PER_TRIP)
            .map(|calls| {
                let mut pipe = redis::pipe();
                for inv in calls {
                    pipe.invoke_script(inv);
                }
                pipe
            })
            .collect();
        // Each call answers how many of its timelines it wrote; the sum over the
        // trips is this server's count (only the local one's is returned).
        let (trips, script) = (&trips, &self.push);
        self.redis
            .run_everywhere("timeline push", |server| async move {
                let mut written = 0;
                for pipe in trips {
                    let counts = server
                        .run(|mut c| async move {
                            match pipe.query_async::<Vec<i64>>(&mut c).await {
                                Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                                    script.load_async(&mut c).await?;
                                    pipe.query_async::<Vec<i64>>(&mut c).await
                                }
                                done => done,
                            }
                        })
                        .await?;
                    written += counts.iter().map(|&n| usize::try_from(n).unwrap_or(0)).sum::<usize>();
                }
                Ok(written)
            })
            .await
    }

    /// Up to `limit` ids of `user`'s timeline older than `before`, newest first; `None`
    /// if the timeline is cold (never built, lapsed, evicted, or not yet filled) and
    /// must be rebuilt. A read refreshes the timeline's lifetime (in the same
    /// round trip), so the timelines of active readers stay warm.
    pub async fn page(
        &self,
        user: i64,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Option<Vec<i64>>, RedisError> {
        let ttl = self.ttl.as_secs().max(1);
        let key = self.key(user);
        let mut pipe = redis::pipe();
        let Some(before) = before else {
            // The first page, the common read, in one command: from the complete
            // member down, so the reply starts with it if the timeline is complete,
            // then the ids above the rebuilding member (one reply to parse, no
            // transaction: a single command sees one state of the timeline).
            pipe.cmd("ZREVRANGEBYLEX")
                .arg(&key)
                .arg(format!("[{COMPLETE}"))
                .arg(format!("({REBUILDING}"))
                .arg("LIMIT")
                .arg(0)
                .arg(limit + 1)
                // EXPIRE of a missing key does nothing: a cold timeline stays cold.
                .expire(&key, ttl as i64)
                .ignore();
            let (members,): (Vec<String>,) =
                self.redis.run(|mut c| async move { pipe.query_async(&mut c).await }).await?;
            let mut members = members.iter();
            if members.next().map(String::as_str) != Some(COMPLETE) {
                return Ok(None);
            }
            return Ok(Some(members.filter_map(|s| s.parse().ok()).collect()));
        };
        // A later page: whether the timeline is complete and the ids below the
        // cursor, read in one transaction.
        pipe.atomic()
            .zscore(&key, COMPLETE)
            .cmd("ZREVRANGEBYLEX")
            .arg(&key)
            .arg(format!("({}", member(before)))
            .arg(format!("({REBUILDING}"))
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .expire(&key, ttl as i64)
            .ignore();
        let (complete, ids): (Option<f64>, Vec<String>) =
            self.redis.run(|mut c| async move { pipe.query_async(&mut c).await }).await?;
        if complete.is_none() {
            return Ok(None);
        }
        Ok(Some(ids.iter().filter_map(|s| s.parse().ok()).collect()))
    }

    /// Merge `ids` (rebuilt from the database after [`Timelines::begin_rebuild`])
    /// into `user`'s timeline and mark it complete — in this data center's Redis
    /// only: it is a cache fill, and each data center rebuilds its own timelines
    /// when they are read there. `false`: not stored, because the timeline is gone
    /// since the rebuild began (dropped by a follow change, evicted, or lapsed), so
    /// a push or a followee may be missing from `ids`; the caller serves them
    /// uncached and the next read rebuilds again.
    pub async fn fill(&self, user: i64, ids: &[i64]) -> Result<bool, RedisError> {
        let mut inv = self.fill.prepare_invoke();
        inv.key(self.key(user)).arg(self.cap).arg(self.ttl.as_secs().max(1)).arg(COMPLETE).arg(REBUILDING);
        for id in ids.iter().take(self.cap) {
            inv.arg(member(*id));
        }
        let stored = self.redis.run(|mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await?;
        Ok(stored == 1)
    }

    /// Take `post_id` out of `owners`' timelines (a deleted post), in this data
    /// center's Redis and every peer's: plain `ZREM`s, [`RETRACT_PER_TRIP`] to a
    /// round trip (a missing timeline is left missing). A timeline being rebuilt
    /// from a read made before the deletion may take the id back; readers skip
    /// posts that are gone, so it only costs that page a post.
    pub async fn retract(&self, post_id: i64, owners: &[i64]) -> Result<(), SpreadError> {
        let m = member(post_id);
        let trips: Vec<redis::Pipeline> = owners
            .chunks(RETRACT_PER_TRIP)
            .map(|chunk| {
                let mut pipe = redis::pipe();
                for owner in chunk {
                    pipe.zrem(self.key(*owner), &m).ignore();
                }
                pipe
            })
            .collect();
        let trips = &trips;
        self.redis
            .run_everywhere("timeline retract", |server| async move {
                for pipe in trips {
                    server.run(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await?;
                }
                Ok(())
            })
            .await
    }

    /// Forget `user`'s timeline (it will be rebuilt on next read), in this data
    /// center's Redis and every peer's.
    pub async fn drop_timeline(&self, user: i64) -> Result<(), SpreadError> {
        let mut del = redis::cmd("DEL");
        del.arg(self.key(user));
        let del = &del;
        self.redis
            .run_everywhere("timeline drop", |server| async move {
                server.run(|mut c| async move { del.query_async::<i64>(&mut c).await }).await.map(|_| ())
            })
            .await
    }
}
