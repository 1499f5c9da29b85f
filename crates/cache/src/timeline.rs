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
//! Which timelines exist is kept per author too, so that a push need not ask of
//! every follower: a set of the author's *readers* ([`Timelines::push_to_readers`]).
//! A reader registers with every followee's set when its timeline is rebuilt
//! ([`Timelines::register`], between [`Timelines::begin_rebuild`] and the rebuild's
//! read of the posts) and when it follows someone; an unfollow takes it out. A push
//! trusts a set only while it holds the [`COMPLETE`] member, which only a *full*
//! push adds: one that listed every follower from the database, wrote (and
//! registered) each one whose timeline exists, and found its own building member
//! still there at the end, so a set evicted or expired half-way is never trusted.
//! A set lives at most [`READERS_LIFETIME`] from its making (80–100% of it, drawn
//! per set), never lengthened, so members
//! whose timelines lapsed since go with it; the next push rebuilds it. Anything
//! lost (an evicted set, a Redis restart) costs one full push, never a missed post.
//!
//! Every data center keeps its own timelines in its own Redis. Writes (pushes,
//! drops) go to all of them at once, since a follower may read through any data
//! center; reads and rebuilds stay in the local one (ADR 0008).

use std::future::Future;
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
    /// Adds one post to the timelines, of many, that exist; answers how many. In
    /// a full push it also registers each written owner in the author's readers
    /// set.
    push: Script,
    /// Marks a timeline as being rebuilt, creating it if need be.
    begin: Script,
    /// Merges a rebuilt list into a timeline and marks it complete.
    fill: Script,
    /// Starts a full push: makes the readers set (with its lifetime) if missing
    /// and adds the push's building member.
    readers_begin: Script,
    /// Ends a full push: marks the readers set complete if its building member is
    /// still there (the set was not evicted or expired meanwhile).
    readers_complete: Script,
    /// Adds a reader to those of many authors' readers sets that exist.
    register: Script,
    /// Adds many posts to one timeline if it exists (a followee's, on a follow).
    merge: Script,
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

/// Most members of one `ZADD` in the scripts that add many ids to one timeline
/// (a rebuild's fill, a follow's merge): it bounds the Lua stack `unpack` needs.
pub const ZADD_CHUNK: usize = 256;

/// A Lua function the scripts that add many ids to one timeline start with:
/// `zadd_all(key, from)` adds `ARGV[from..]`, each with score 0, in variadic
/// `ZADD`s of at most [`ZADD_CHUNK`] members. One call per id (as a rebuild's
/// 800 once were) costs a command dispatch each: a fifth to a third of a fill's
/// time in Redis, the rest being the sorted set's own inserts (docs/BENCHMARKS.md,
/// "A timeline's fill in one `ZADD` per 256 ids").
fn zadd_all() -> String {
    format!(
        r"
            local function zadd_all(key, from)
              local args = {{}}
              for i = from, #ARGV do
                args[#args + 1] = 0
                args[#args + 1] = ARGV[i]
                if #args == {pairs} then
                  redis.call('ZADD', key, unpack(args))
                  args = {{}}
                end
              end
              if #args > 0 then redis.call('ZADD', key, unpack(args)) end
            end",
        pairs = 2 * ZADD_CHUNK
    )
}

/// The member that says a timeline is complete: sorts after every id.
pub const COMPLETE: &str = "~";

/// The member that says a timeline is being rebuilt: sorts before every id.
pub const REBUILDING: &str = "!";

/// How long an author's readers set lives from its making (never lengthened): it
/// bounds how long members whose timelines lapsed or were evicted are still tried
/// (an `EXISTS` each), at the price of one full push per author per lifetime.
pub const READERS_LIFETIME: Duration = Duration::from_secs(600);

/// The lifetime of a readers set being made: 80–100% of [`READERS_LIFETIME`],
/// drawn per set, so that the sets made in one busy minute (a warm-up, a
/// restart) do not lapse together and cost their full pushes in one burst (seen
/// in a capacity run: 26 `EXISTS` per request against 2 in the runs around it).
fn readers_lifetime() -> Duration {
    READERS_LIFETIME.mul_f64(rand::random_range(0.8..=1.0))
}

/// A readers set's members that are not user ids: [`COMPLETE`], and a full push's
/// building member, which starts with this.
const BUILDING: &str = "!";

/// How long a timeline created by [`Timelines::begin_rebuild`] lives unless filled:
/// longer than a rebuild's database read.
const REBUILD_MARK: Duration = Duration::from_secs(30);

fn member(post_id: i64) -> String {
    format!("{post_id:019}")
}

impl Timelines {
    /// Timelines of at most `cap` posts, each living `ttl` since last read or rebuilt.
    pub fn new(redis: Redis, cap: usize, ttl: Duration) -> Timelines {
        // KEYS: [the author's readers set,] timelines; ARGV: the member, the cap,
        // 1 if KEYS[1] is the readers set (else 0), then, with the set, the
        // timelines' owners (one per timeline key). Keeps the newest `cap` ids plus
        // the complete member (the rebuilding one, lowest, goes first). With the
        // set, every written owner joins it while it exists (never made here: a
        // set without its lifetime would outlive the timelines it lists).
        let push = Script::new(
            r"
            local keep = tonumber(ARGV[2]) + 1
            local first = 1 + tonumber(ARGV[3])
            local set = first == 2 and redis.call('EXISTS', KEYS[1]) == 1
            local pushed = 0
            for i = first, #KEYS do
              local k = KEYS[i]
              if redis.call('EXISTS', k) == 1 then
                redis.call('ZADD', k, 0, ARGV[1])
                redis.call('ZREMRANGEBYRANK', k, 0, -(keep + 1))
                if set then redis.call('SADD', KEYS[1], ARGV[i + 2]) end
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
        let fill = Script::new(&format!(
            r"{zadd_all}
            if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
            local keep = tonumber(ARGV[1]) + 1
            zadd_all(KEYS[1], 5)
            redis.call('ZREM', KEYS[1], ARGV[4])
            redis.call('ZADD', KEYS[1], 0, ARGV[3])
            redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(keep + 1))
            redis.call('EXPIRE', KEYS[1], ARGV[2])
            return 1",
            zadd_all = zadd_all()
        ));
        // KEYS: the readers set; ARGV: the building member, the lifetime.
        let readers_begin = Script::new(
            r"
            if redis.call('EXISTS', KEYS[1]) == 0 then
              redis.call('SADD', KEYS[1], ARGV[1])
              redis.call('EXPIRE', KEYS[1], ARGV[2])
            else
              redis.call('SADD', KEYS[1], ARGV[1])
            end
            return 1",
        );
        // KEYS: the readers set; ARGV: the building member, the complete member.
        let readers_complete = Script::new(
            r"
            if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
              redis.call('SADD', KEYS[1], ARGV[2])
              return 1
            end
            return 0",
        );
        // KEYS: readers sets; ARGV: the reader.
        let register = Script::new(
            r"
            local n = 0
            for i = 1, #KEYS do
              if redis.call('EXISTS', KEYS[i]) == 1 then
                redis.call('SADD', KEYS[i], ARGV[1])
                n = n + 1
              end
            end
            return n",
        );
        // KEYS: the timeline; ARGV: the cap, then the members. Into a timeline
        // being rebuilt too: a fill only adds, so what is merged stays.
        let merge = Script::new(&format!(
            r"{zadd_all}
            if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
            local keep = tonumber(ARGV[1]) + 1
            zadd_all(KEYS[1], 2)
            redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(keep + 1))
            return 1",
            zadd_all = zadd_all()
        ));
        Timelines { redis, cap, ttl, push, begin, fill, readers_begin, readers_complete, register, merge }
    }

    /// Most ids a timeline holds.
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn key(&self, user: i64) -> String {
        self.redis.key(&format!("tl:{user}"))
    }

    fn readers_key(&self, author: i64) -> String {
        self.redis.key(&format!("rd:{author}"))
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
        let trips = self.push_trips(&member(post_id), owners, None);
        let (trips, script) = (&trips, &self.push);
        self.redis
            .run_everywhere("timeline push", |server| async move { send_trips(&server, trips, script).await })
            .await
    }

    /// Add `post_id` by `author` to the timelines of the author's readers that
    /// exist, in this data center's Redis and every peer's, asking each Redis for
    /// its readers set of the author rather than offering every follower. Where
    /// that set is missing or not complete (never made, lapsed, evicted, or being
    /// made by another push), the push there is a full one: `followers` (called
    /// once, whichever Redis needs it, unless it fails) lists every follower from the database,
    /// each is offered the post as [`Timelines::push`] does, and the set is
    /// (re)made of those whose timelines exist. Idempotent like `push`.
    ///
    /// Returns what this data center's Redis was offered and wrote.
    pub async fn push_to_readers<F, Fut, E>(
        &self,
        post_id: i64,
        author: i64,
        followers: F,
    ) -> Result<Pushed, PushError<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Vec<i64>, E>>,
        E: std::error::Error + 'static,
    {
        let m = member(post_id);
        let listed: tokio::sync::OnceCell<Vec<i64>> = tokio::sync::OnceCell::new();
        let unlisted: std::sync::Mutex<Option<E>> = std::sync::Mutex::new(None);
        let (m, listed, unlisted, followers) = (&m, &listed, &unlisted, &followers);
        let pushed = self
            .redis
            .run_everywhere("timeline push", |server| async move {
                let set = self.readers_key(author);
                let members: Vec<String> = server
                    .run(|mut c| {
                        let set = set.clone();
                        async move { redis::cmd("SMEMBERS").arg(set).query_async(&mut c).await }
                    })
                    .await?;
                if members.iter().any(|x| x == COMPLETE) {
                    let mut owners: Vec<i64> = members.iter().filter_map(|x| x.parse().ok()).collect();
                    if !owners.contains(&author) {
                        owners.push(author);
                    }
                    let trips = self.push_trips(m, &owners, None);
                    let written = send_trips(&server, &trips, &self.push).await?;
                    return Ok(Pushed { offered: owners.len(), written, full: false });
                }
                let building = format!("{BUILDING}{}", rand::random::<u64>());
                let mut begin = self.readers_begin.prepare_invoke();
                begin.key(&set).arg(&building).arg(readers_lifetime().as_secs());
                server.run(|mut c| async move { begin.invoke_async::<i64>(&mut c).await }).await?;
                let all = match listed.get_or_try_init(followers).await {
                    Ok(all) => all,
                    Err(e) => {
                        unlisted.lock().expect("push error slot poisoned").get_or_insert(e);
                        return Err(RedisError::from(std::io::Error::other(
                            "the followers could not be listed",
                        )));
                    }
                };
                let mut owners = Vec::with_capacity(all.len() + 1);
                owners.push(author);
                owners.extend(all.iter().copied().filter(|f| *f != author));
                let trips = self.push_trips(m, &owners, Some(&set));
                let written = send_trips(&server, &trips, &self.push).await?;
                let mut complete = self.readers_complete.prepare_invoke();
                complete.key(&set).arg(&building).arg(COMPLETE);
                server.run(|mut c| async move { complete.invoke_async::<i64>(&mut c).await }).await?;
                Ok(Pushed { offered: owners.len(), written, full: true })
            })
            .await;
        if let Some(e) = unlisted.lock().expect("push error slot poisoned").take() {
            return Err(PushError::Followers(e));
        }
        pushed.map_err(PushError::Timelines)
    }

    /// Register `reader` with the readers sets of `authors` that exist, in this
    /// data center's Redis: done by a rebuild of `reader`'s timeline (after
    /// [`Timelines::begin_rebuild`], before it reads the posts), so every later
    /// push by those authors reaches it. A set that does not exist is left so:
    /// the author's next push is a full one, which finds the timeline.
    pub async fn register(&self, reader: i64, authors: &[i64]) -> Result<(), RedisError> {
        let r = reader.to_string();
        let trips: Vec<redis::Pipeline> = authors
            .chunks(BATCH)
            .collect::<Vec<_>>()
            .chunks(CALLS_PER_TRIP)
            .map(|calls| {
                let mut pipe = redis::pipe();
                for chunk in calls {
                    let mut inv = self.register.prepare_invoke();
                    for author in *chunk {
                        inv.key(self.readers_key(*author));
                    }
                    inv.arg(&r);
                    pipe.invoke_script(&inv);
                }
                pipe
            })
            .collect();
        send_trips(&self.redis, &trips, &self.register).await.map(|_| ())
    }

    /// A follow: register `reader` with `author`'s readers set, where it exists,
    /// in this data center's Redis and every peer's — the reader's next rebuild
    /// registers it too, but may read a followee list cached from before the
    /// follow.
    pub async fn add_reader(&self, author: i64, reader: i64) -> Result<(), SpreadError> {
        let trips = {
            let mut inv = self.register.prepare_invoke();
            inv.key(self.readers_key(author)).arg(reader);
            let mut pipe = redis::pipe();
            pipe.invoke_script(&inv);
            vec![pipe]
        };
        let (trips, script) = (&trips, &self.register);
        self.redis
            .run_everywhere("readers add", |server| async move {
                send_trips(&server, trips, script).await.map(|_| ())
            })
            .await
    }

    /// An unfollow: take `reader` out of `author`'s readers set in this data
    /// center's Redis and every peer's, so the author's pushes stop reaching the
    /// reader's (rebuilt) timeline.
    pub async fn remove_reader(&self, author: i64, reader: i64) -> Result<(), SpreadError> {
        let mut srem = redis::cmd("SREM");
        srem.arg(self.readers_key(author)).arg(reader);
        let srem = &srem;
        self.redis
            .run_everywhere("readers remove", |server| async move {
                server.run(|mut c| async move { srem.query_async::<i64>(&mut c).await }).await.map(|_| ())
            })
            .await
    }

    /// The calls of a push of member `m` to `owners`, [`BATCH`] owners each and
    /// [`CALLS_PER_TRIP`] calls to a round trip: of the plain push script, or, given
    /// the author's readers set, of the one that also registers those written.
    fn push_trips(&self, m: &str, owners: &[i64], readers: Option<&str>) -> Vec<redis::Pipeline> {
        let calls: Vec<_> = owners
            .chunks(BATCH)
            .map(|chunk| {
                let mut inv = self.push.prepare_invoke();
                if let Some(set) = readers {
                    inv.key(set);
                }
                for owner in chunk {
                    inv.key(self.key(*owner));
                }
                inv.arg(m).arg(self.cap).arg(u8::from(readers.is_some()));
                if readers.is_some() {
                    for owner in chunk {
                        inv.arg(*owner);
                    }
                }
                inv
            })
            .collect();
        calls
            .chunks(CALLS_PER_TRIP)
            .map(|calls| {
                let mut pipe = redis::pipe();
                for inv in calls {
                    pipe.invoke_script(inv);
                }
                pipe
            })
            .collect()
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

    /// Add `ids` (the newest posts of a user `user` just followed, at most the
    /// cap's worth) to `user`'s timeline where it exists — complete, or being
    /// rebuilt from a followee list that may predate the follow (a fill only adds,
    /// so the merged posts stay) — in this data center's Redis and every peer's,
    /// keeping the newest `cap`. A timeline that does not exist is left so: it is
    /// rebuilt, with the new followee, when read. The caller registers `user` as
    /// a reader of the followee first, and reads `ids` after that, so a post of
    /// the followee is either among them or pushed. Idempotent.
    pub async fn merge(&self, user: i64, ids: &[i64]) -> Result<(), SpreadError> {
        let mut inv = self.merge.prepare_invoke();
        inv.key(self.key(user)).arg(self.cap);
        for id in ids.iter().take(self.cap) {
            inv.arg(member(*id));
        }
        let inv = &inv;
        self.redis
            .run_everywhere("timeline merge", |server| async move {
                server.run(|mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await.map(|_| ())
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

/// What a push did in one data center's Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Timelines offered the post: the author's readers (or, in a full push,
    /// every follower) and the author.
    pub offered: usize,
    /// Those written: the offered timelines that exist.
    pub written: usize,
    /// Whether the author's readers set was missing or incomplete, so every
    /// follower was listed and offered the post (and the set made again).
    pub full: bool,
}

/// Why [`Timelines::push_to_readers`] did not reach every reader.
#[derive(Debug, thiserror::Error)]
pub enum PushError<E: std::error::Error + 'static> {
    /// A full push needed the followers, and they could not be listed.
    #[error("listing the followers: {0}")]
    Followers(#[source] E),
    /// A Redis (this data center's or a peer's) failed.
    #[error(transparent)]
    Timelines(SpreadError),
}

/// Send `trips` of `script`'s calls to `server` in turn, stopping at the first
/// failure; answer the sum of the calls' counts. Pipelined calls cannot load the
/// script themselves: a Redis that lost it (restarted) answers NOSCRIPT, and the
/// trip is sent again once it is loaded (every script here is idempotent).
/// Loading it ahead of every trip instead cost Redis 20 µs per post.
async fn send_trips(server: &Redis, trips: &[redis::Pipeline], script: &Script) -> Result<usize, RedisError> {
    let mut total = 0;
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
        total += counts.iter().map(|&n| usize::try_from(n).unwrap_or(0)).sum::<usize>();
    }
    Ok(total)
}
