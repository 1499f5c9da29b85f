//! Typed read-through caching over two levels.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coarsetime::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rand::Rng;
use redis::Script;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Invalidator, Redis, SpreadError};

/// Sizes and lifetimes of a cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Entries kept in the process (L1); beyond this, quick_cache's CLOCK-Pro
    /// policy picks what to evict (a key read once does not push out hot ones).
    pub l1_capacity: u64,
    /// How long an entry stays in L1. Invalidation normally removes it sooner; this
    /// bounds staleness if an invalidation message is lost.
    pub l1_ttl: Duration,
    /// Base lifetime of an entry in Redis (L2).
    pub l2_ttl: Duration,
    /// Each L2 entry lives `l2_ttl × (1 ± jitter)`, so entries written together do not
    /// all expire together.
    pub jitter: f64,
}

/// What a [`ReadThrough::get_or_fill`] loader found, and whether it may be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded<T> {
    /// Read from the source of truth: cached in both levels (unless an
    /// invalidation overtook the load). `None`: nothing there (never cached).
    Keep(Option<T>),
    /// Read from a source that may be behind: served to the callers sharing the
    /// load, cached nowhere.
    ServeOnly(Option<T>),
}

/// What a [`ReadThrough::get_many_or_fill`] loader found for the keys it was
/// given, and whether it may be kept (as [`Loaded`] says for one key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedMany<T> {
    /// One entry per key asked for, in the order asked: its value, or `None`
    /// (nothing there; never cached).
    pub values: Vec<Option<T>>,
    /// `true`: read from the source of truth, cached in both levels (unless an
    /// invalidation overtook the load); `false`: read from a source that may be
    /// behind, served and cached nowhere.
    pub keep: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    /// The cache's name (`profile`, `post`, ...).
    cache: &'static str,
    /// `l1_hit`, `l2_hit`, `miss` (loaded from the store) or `error` (Redis failed);
    /// also `fill_refused`, counted besides `miss`: the loaded value was served but
    /// not cached, because the key was invalidated while it was being loaded;
    /// and `served_uncached`: the loader said its value may be behind.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvalidationLabels {
    /// The cache's name.
    cache: &'static str,
    /// Which Redis was not told: `local` (this data center's) or `peer` (another
    /// data center's, whose entries then live until their TTL).
    redis: &'static str,
}

/// Lookup counters shared by every cache of a process.
#[derive(Clone, Default)]
pub struct CacheMetrics {
    /// Lookups by cache and outcome.
    lookups: Family<LookupLabels, Counter>,
    /// Invalidations that did not reach some Redis, by cache and which one: a
    /// peer data center serving stale entries until their TTL shows here.
    invalidation_failures: Family<InvalidationLabels, Counter>,
}

impl std::fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheMetrics")
    }
}

impl CacheMetrics {
    /// Create and register the counters.
    pub fn new(registry: &telemetry::Registry) -> CacheMetrics {
        let m = CacheMetrics::default();
        registry.register("cache_lookups", "Cache lookups by cache and result", m.lookups.clone());
        registry.register(
            "cache_invalidation_failures",
            "Invalidations that did not reach a Redis (local, or a peer data center's)",
            m.invalidation_failures.clone(),
        );
        m
    }

    fn count(&self, cache: &'static str, result: &'static str) {
        self.lookups.get_or_create(&LookupLabels { cache, result }).inc();
    }

    /// The counter of `cache`'s lookups ending with `result`, resolved once (a hot
    /// path counts without hashing labels or taking the family's lock).
    fn counter(&self, cache: &'static str, result: &'static str) -> Counter {
        self.lookups.get_or_create(&LookupLabels { cache, result }).clone()
    }

    fn count_invalidation_failure(&self, cache: &'static str, redis: &'static str) {
        self.invalidation_failures.get_or_create(&InvalidationLabels { cache, redis }).inc();
    }

    /// How many lookups of `cache` ended with `result` (for tests and dashboards).
    pub fn get(&self, cache: &'static str, result: &'static str) -> u64 {
        self.lookups.get_or_create(&LookupLabels { cache, result }).get()
    }

    /// How many invalidations of `cache` did not reach a `redis` (`local` or
    /// `peer`) (for tests and dashboards).
    pub fn invalidation_failures(&self, cache: &'static str, redis: &'static str) -> u64 {
        self.invalidation_failures.get_or_create(&InvalidationLabels { cache, redis }).get()
    }
}

/// What one load found, as every caller that shared it sees it.
enum Outcome<T> {
    /// Kept (in L1, and in L2 unless Redis was unknown).
    Kept(Arc<T>),
    /// The loader found nothing (a missing key is not cached).
    Missing,
    /// The loader failed: its error, whose type is the loader's (`Any`, since
    /// callers of one key share a load whatever their loader's error type).
    Failed(Arc<dyn Any + Send + Sync>),
    /// The key was invalidated while this value was being read, or the loader
    /// read a source that may be behind: the callers of this load get it (it is
    /// at worst as old as a read concurrent with the write), but no level keeps it.
    Stale(Arc<T>),
}

impl<T> Clone for Outcome<T> {
    fn clone(&self) -> Self {
        match self {
            Outcome::Kept(v) => Outcome::Kept(v.clone()),
            Outcome::Missing => Outcome::Missing,
            Outcome::Failed(e) => Outcome::Failed(e.clone()),
            Outcome::Stale(v) => Outcome::Stale(v.clone()),
        }
    }
}

/// One load of a key that concurrent lookups share: the first to get here runs
/// its loader and the others wait for its outcome. If the one running it is
/// cancelled, the next waiter runs its own loader.
type Flight<T> = Arc<tokio::sync::OnceCell<Outcome<T>>>;

/// What L1 holds for a key.
struct Held<T> {
    /// The value.
    value: Arc<T>,
    /// When it stops being served ([`CacheConfig::l1_ttl`] after it was kept), on
    /// the coarse monotonic clock (a few milliseconds' resolution; read 40 times
    /// per feed page, the precise clock was 2% of the web server's CPU).
    until: Instant,
}

impl<T> Clone for Held<T> {
    fn clone(&self) -> Self {
        Held { value: self.value.clone(), until: self.until }
    }
}

/// The in-process level: a bounded concurrent map whose entries also lapse.
/// (`quick_cache` rather than `moka`: a hit costs a shard's read lock and a
/// hash, with no per-read bookkeeping queue; see ADR 0014.)
struct L1<T> {
    /// The entries; a lapsed one is a miss and is replaced by the next load.
    entries: quick_cache::sync::Cache<String, Held<T>>,
    /// How long an entry is served.
    ttl: coarsetime::Duration,
}

impl<T> L1<T> {
    fn new(config: &CacheConfig) -> L1<T> {
        L1 {
            entries: quick_cache::sync::Cache::new(config.l1_capacity.max(1) as usize),
            ttl: config.l1_ttl.into(),
        }
    }

    fn get(&self, key: &str) -> Option<Arc<T>> {
        let held = self.entries.get(key)?;
        (held.until > Instant::now()).then_some(held.value)
    }

    fn insert(&self, key: &str, value: Arc<T>) {
        self.entries.insert(key.to_owned(), Held { value, until: Instant::now() + self.ttl });
    }

    fn remove(&self, key: &str) {
        self.entries.remove(key);
    }

    fn clear(&self) {
        self.entries.clear();
    }
}

/// Ends a key's [`Flight`] when its load ends, or is cancelled: later lookups
/// start a new one (so none joins a load that began before an invalidation and
/// has finished since).
struct EndFlight<'a, T> {
    /// The loads under way by key.
    flights: &'a Mutex<HashMap<String, Flight<T>>>,
    /// The key.
    key: &'a str,
    /// This flight (the map may hold a newer one by now).
    flight: &'a Flight<T>,
}

impl<T> Drop for EndFlight<'_, T> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if flights.get(self.key).is_some_and(|f| Arc::ptr_eq(f, self.flight)) {
            flights.remove(self.key);
        }
    }
}

/// Stored by the fill script only if the key's generation is still the one read
/// before the load, i.e. no invalidation ran since. KEYS: value, generation;
/// ARGV: the generation read (or claimed), the value, its TTL in seconds. A
/// generation gone (evicted) reads as `''`, which matches no claimed generation.
const FILL_LUA: &str = r"
local g = redis.call('GET', KEYS[2]) or ''
if g ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1";

/// [`FILL_LUA`] for many keys in one call. KEYS: value, generation, for each key;
/// ARGV: the generation read (or claimed), the value, its TTL, for each key.
/// Returns 1 (stored) or 0 (refused) per key, in order.
const FILL_MANY_LUA: &str = r"
local out = {}
for i = 1, #KEYS, 2 do
  local j = (i - 1) * 3 / 2
  local g = redis.call('GET', KEYS[i + 1]) or ''
  if g == ARGV[j + 1] then
    redis.call('SET', KEYS[i], ARGV[j + 2], 'EX', ARGV[j + 3])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out";

/// Stores a value under a key no lookup or write has touched: only if the key
/// has no generation yet, which it then gets. KEYS: value, generation; ARGV: the
/// value, its TTL, the new generation, the generation's TTL.
const PRIME_LUA: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1";

/// Stripes of [`Evictions`]: more stripes, fewer values left out of L1 because
/// another key sharing the stripe was evicted meanwhile.
const EVICTION_STRIPES: usize = 1024;

/// Counts this process's L1 evictions, so a load can tell whether an invalidation
/// of its key reached this process while it ran (then its value is not kept in L1,
/// even if the pub/sub message arrived between the Redis fill and the L1 insert).
/// Keys share striped counters: a collision only costs one value not kept.
struct Evictions {
    /// Evictions by stripe of keys; bumped *before* the entry is removed, so a load
    /// that inserts after the removal sees the bump.
    stripes: Box<[AtomicU64]>,
    /// Clears of the whole L1 (after a resubscription), bumped before clearing.
    clears: AtomicU64,
}

impl Evictions {
    fn new() -> Evictions {
        Evictions {
            stripes: (0..EVICTION_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            clears: AtomicU64::new(0),
        }
    }

    fn stripe(&self, key: &str) -> &AtomicU64 {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.stripes[(h.finish() % EVICTION_STRIPES as u64) as usize]
    }

    /// What a load compares against when it is done.
    fn snapshot(&self, key: &str) -> (u64, u64) {
        (self.stripe(key).load(Ordering::SeqCst), self.clears.load(Ordering::SeqCst))
    }

    fn note(&self, key: &str) {
        self.stripe(key).fetch_add(1, Ordering::SeqCst);
    }

    fn note_clear(&self) {
        self.clears.fetch_add(1, Ordering::SeqCst);
    }
}

/// How the fill of L2 after a load went.
enum Fill {
    /// Stored, or not attempted (Redis unknown or the value not encodable).
    Done,
    /// Refused: the key's generation changed during the load.
    Refused,
}

/// A read-through cache of `T` values under one name.
pub struct ReadThrough<T> {
    /// Names the key space in Redis, in metrics and in invalidation messages.
    name: &'static str,
    /// The in-process level (shared with the invalidation listener's evictor).
    l1: Arc<L1<T>>,
    /// Loads under way, by key: concurrent misses of a key share one load.
    flights: Mutex<HashMap<String, Flight<T>>>,
    /// The shared level.
    redis: Redis,
    /// Lifetimes.
    config: CacheConfig,
    /// Lookup counters.
    metrics: CacheMetrics,
    /// This cache's `l1_hit` counter, resolved once: L1 hits are most lookups, and
    /// the family's lookup (label hash, lock) cost more than the hit itself.
    l1_hits: Counter,
    /// Spreads invalidations to every process.
    invalidator: Invalidator,
    /// Lookups past L1 right now (reading Redis, loading, or waiting on another
    /// caller's load of the same key): shows that concurrent misses overlapped.
    misses_in_flight: Arc<AtomicUsize>,
    /// L1 evictions (shared with the listener's evictor), so a load that raced an
    /// invalidation does not keep its value in L1.
    evictions: Arc<Evictions>,
    /// The conditional fill (sent by hash; its text only when Redis lacks it).
    fill: Script,
    /// The conditional fill of many keys at once, for batch lookups.
    fill_many: Script,
    /// The store of a value just created ([`ReadThrough::prime`]).
    prime: Script,
}

/// Counts one lookup in [`ReadThrough::misses_in_flight`] while it lives (also when
/// the lookup is cancelled).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> InFlight<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<T> std::fmt::Debug for ReadThrough<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadThrough").field("name", &self.name).finish()
    }
}

impl<T> ReadThrough<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A cache named `name`, registered with `invalidator` so other processes' writes
    /// reach its L1.
    pub fn new(
        name: &'static str,
        redis: Redis,
        config: CacheConfig,
        metrics: CacheMetrics,
        invalidator: Invalidator,
    ) -> Arc<ReadThrough<T>> {
        let l1 = Arc::new(L1::new(&config));
        let longest = config.l2_ttl.as_secs_f64() * (1.0 + config.jitter.clamp(0.0, 0.9));
        invalidator.note_value_ttl(Duration::from_secs_f64(longest.ceil()));
        let evictions = Arc::new(Evictions::new());
        let l1_hits = metrics.counter(name, "l1_hit");
        let cache = Arc::new(ReadThrough {
            name,
            l1,
            flights: Mutex::default(),
            redis,
            config,
            metrics,
            l1_hits,
            invalidator: invalidator.clone(),
            misses_in_flight: Arc::default(),
            evictions: evictions.clone(),
            fill: Script::new(FILL_LUA),
            fill_many: Script::new(FILL_MANY_LUA),
            prime: Script::new(PRIME_LUA),
        });
        invalidator.register(name, Box::new(LocalL1 { l1: cache.l1.clone(), evictions }));
        cache
    }

    fn redis_key(&self, key: &str) -> String {
        crate::invalidation::l2_key(&self.redis, self.name, key)
    }

    fn generation_key(&self, key: &str) -> String {
        crate::invalidation::generation_key(&self.redis, self.name, key)
    }

    /// Store `value` in Redis unless `key`'s generation is no longer `generation`
    /// (`None`: unknown, because reading it failed; then nothing is stored, as a
    /// write may have happened unseen).
    async fn fill_l2(&self, key: &str, generation: Option<String>, value: &T) -> Fill {
        let Some(generation) = generation else { return Fill::Done };
        let bytes = match serde_json::to_vec(value) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(cache = self.name, error = %e, "value not encodable");
                return Fill::Done;
            }
        };
        let (value_key, gen_key, ttl, script) =
            (self.redis_key(key), self.generation_key(key), self.l2_ttl(), &self.fill);
        let stored = self
            .redis
            .run(|mut c| async move {
                script
                    .key(value_key)
                    .key(gen_key)
                    .arg(generation)
                    .arg(bytes)
                    .arg(ttl)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        match stored {
            Ok(0) => Fill::Refused,
            Ok(_) => Fill::Done,
            Err(e) => {
                self.metrics.count(self.name, "error");
                tracing::warn!(cache = self.name, error = %e, "redis write failed");
                Fill::Done
            }
        }
    }

    /// The generation a load compares its fill against: the one read, or — when
    /// the key has none (never invalidated, lapsed, or evicted under Redis's memory
    /// budget) — a random one this call creates (`SET NX`; a racing caller's wins
    /// and is used). A fill is then stored only if that generation is still there:
    /// an invalidation meanwhile bumps it, an eviction meanwhile removes it, and
    /// either way the fill is refused. (Compared against "no generation" instead, a
    /// generation created by an invalidation and evicted before the fill would let
    /// a stale value in.) `None` when Redis fails: nothing is stored.
    async fn generation_or_claim(&self, key: &str, read: Option<String>) -> Option<String> {
        if read.is_some() {
            return read;
        }
        let fresh = (rand::rng().random::<u64>() >> 2).to_string();
        let (gen_key, ttl, claim) =
            (self.generation_key(key), self.invalidator.generation_ttl(), fresh.clone());
        let set = self
            .redis
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(gen_key)
                    .arg(claim)
                    .arg("NX")
                    .arg("GET")
                    .arg("EX")
                    .arg(ttl)
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
            .await;
        match set {
            Ok(existing) => Some(existing.unwrap_or(fresh)),
            Err(e) => {
                self.metrics.count(self.name, "error");
                tracing::warn!(cache = self.name, error = %e, "redis write failed; the value is not cached");
                None
            }
        }
    }

    fn l2_ttl(&self) -> u64 {
        let base = self.config.l2_ttl.as_secs_f64();
        let j = self.config.jitter.clamp(0.0, 0.9);
        let factor = if j > 0.0 { rand::rng().random_range(1.0 - j..=1.0 + j) } else { 1.0 };
        (base * factor).round().max(1.0) as u64
    }

    /// How many lookups are past L1 at this moment: reading Redis, loading, or
    /// waiting for another caller's load of the same key to finish.
    pub fn misses_in_flight(&self) -> usize {
        self.misses_in_flight.load(Ordering::SeqCst)
    }

    /// The value for `key`: from L1, else from Redis, else from `load` (stored in
    /// both levels). Concurrent calls for one key in this process share one load.
    /// `Ok(None)` when the loader finds nothing (not cached).
    ///
    /// A load that an invalidation of `key` overtook (a write committed and
    /// invalidated after the load read Redis) is returned to its callers but kept
    /// in neither level: Redis refuses the fill because the key's generation
    /// changed, and L1 drops it because this process saw the key evicted meanwhile.
    pub async fn get_or_load<F, Fut, E>(&self, key: &str, load: F) -> Result<Option<Arc<T>>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
        E: Send + Sync + 'static,
    {
        self.get_or_fill(key, || async { load().await.map(Loaded::Keep) }).await
    }

    /// [`ReadThrough::get_or_load`] with a loader that says whether what it found
    /// may be kept: [`Loaded::ServeOnly`] (read from a source that may be behind,
    /// such as a replica while the primary is being replaced) is returned to the
    /// callers sharing the load and cached nowhere (counted as `served_uncached`).
    pub async fn get_or_fill<F, Fut, E>(&self, key: &str, load: F) -> Result<Option<Arc<T>>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded<T>, E>>,
        E: Send + Sync + 'static,
    {
        if let Some(v) = self.cached(key) {
            return Ok(Some(v));
        }
        // Out of line and boxed: the miss path's state (Redis, the loader, the
        // fill) is large, and a hit, the common case, should not carry it.
        Box::pin(self.miss(key, load)).await
    }

    /// [`ReadThrough::get_or_fill`] past this process's L1: from Redis, else from
    /// `load`, kept in both levels as a miss's value is. For a read that must see
    /// every write already acknowledged: a write's invalidation reaches Redis before
    /// the write is acknowledged, but another process's L1 only when its message
    /// arrives, which under load can be after the writer's next request. Joins no
    /// load under way (one may have read Redis before the invalidation). One Redis
    /// round trip more than an L1 hit.
    pub async fn get_or_fill_shared<F, Fut, E>(&self, key: &str, load: F) -> Result<Option<Arc<T>>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded<T>, E>>,
        E: Send + Sync + 'static,
    {
        let _in_flight = InFlight::enter(&self.misses_in_flight);
        match Box::pin(self.load(key, load)).await {
            Outcome::Kept(v) | Outcome::Stale(v) => Ok(Some(v)),
            Outcome::Missing => Ok(None),
            Outcome::Failed(e) => {
                Err(e.downcast::<E>().unwrap_or_else(|_| unreachable!("the load was this caller's own")))
            }
        }
    }

    /// `key`'s value if this process holds it (L1), counted as an `l1_hit`; `None`
    /// otherwise, counted as nothing (the caller's [`ReadThrough::get_or_fill`]
    /// counts what it does next). For batch reads that try every key in L1
    /// before starting any load.
    pub fn cached(&self, key: &str) -> Option<Arc<T>> {
        let v = self.l1.get(key)?;
        self.l1_hits.inc();
        Some(v)
    }

    /// `key`'s value if this process holds it (L1), counted as nothing: for
    /// callers that look without serving a request (what a lookup just returned
    /// is the one kept, or was served but not kept).
    pub fn peek(&self, key: &str) -> Option<Arc<T>> {
        self.l1.get(key)
    }

    /// The rest of [`ReadThrough::get_or_fill`] after an L1 miss: join the key's
    /// load under way, or run `load` as the key's load.
    async fn miss<F, Fut, E>(&self, key: &str, load: F) -> Result<Option<Arc<T>>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded<T>, E>>,
        E: Send + Sync + 'static,
    {
        let _in_flight = InFlight::enter(&self.misses_in_flight);
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            flights.entry(key.to_owned()).or_default().clone()
        };
        let mut load = Some(load);
        let outcome = flight
            .get_or_init(|| async {
                let _end = EndFlight { flights: &self.flights, key, flight: &flight };
                let load = load.take().expect("a flight runs one loader per caller");
                self.load(key, load).await
            })
            .await
            .clone();
        match outcome {
            Outcome::Kept(v) | Outcome::Stale(v) => Ok(Some(v)),
            Outcome::Missing => Ok(None),
            Outcome::Failed(e) => match e.downcast::<E>() {
                Ok(e) => Err(e),
                // The load shared was another caller's, whose error is of
                // another type: this caller's own loader decides (uncached).
                Err(_) => match load.take() {
                    Some(load) => match load().await {
                        Ok(Loaded::Keep(v) | Loaded::ServeOnly(v)) => Ok(v.map(Arc::new)),
                        Err(e) => Err(Arc::new(e)),
                    },
                    None => unreachable!("a caller whose own loader failed shares its error type"),
                },
            },
        }
    }

    /// One load of `key` for every lookup sharing it: Redis (the value and its
    /// generation in one round trip), else the loader, whose value is filled into
    /// Redis if the generation is unchanged and kept in L1 if no eviction of the
    /// key reached this process meanwhile.
    async fn load<F, Fut, E>(&self, key: &str, load: F) -> Outcome<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded<T>, E>>,
        E: Send + Sync + 'static,
    {
        let seen = self.evictions.snapshot(key);
        let keep = |v: Arc<T>| self.keep_in_l1(key, seen, v);
        let (value_key, gen_key) = (self.redis_key(key), self.generation_key(key));
        let read = self
            .redis
            .run(|mut c| async move {
                redis::cmd("MGET")
                    .arg(value_key)
                    .arg(gen_key)
                    .query_async::<(Option<Vec<u8>>, Option<String>)>(&mut c)
                    .await
            })
            .await;
        let generation = match read {
            Ok((Some(bytes), generation)) => match serde_json::from_slice::<T>(&bytes) {
                Ok(v) => {
                    self.metrics.count(self.name, "l2_hit");
                    return keep(Arc::new(v));
                }
                Err(e) => {
                    tracing::warn!(cache = self.name, error = %e, "undecodable cache entry");
                    self.generation_or_claim(key, generation).await
                }
            },
            Ok((None, generation)) => self.generation_or_claim(key, generation).await,
            Err(e) => {
                self.metrics.count(self.name, "error");
                tracing::warn!(cache = self.name, error = %e, "redis read failed; loading from the store");
                None
            }
        };
        self.metrics.count(self.name, "miss");
        let value = match load().await {
            Ok(Loaded::Keep(Some(v))) => v,
            Ok(Loaded::Keep(None) | Loaded::ServeOnly(None)) => return Outcome::Missing,
            Ok(Loaded::ServeOnly(Some(v))) => {
                self.metrics.count(self.name, "served_uncached");
                return Outcome::Stale(Arc::new(v));
            }
            Err(e) => return Outcome::Failed(Arc::new(e)),
        };
        match self.fill_l2(key, generation, &value).await {
            Fill::Done => keep(Arc::new(value)),
            Fill::Refused => {
                self.metrics.count(self.name, "fill_refused");
                Outcome::Stale(Arc::new(value))
            }
        }
    }

    /// The values of `keys`, as [`ReadThrough::get_or_fill`] would give each, but
    /// with one round trip to Redis for every key L1 lacks, one claim of the
    /// missing generations and one `load` call for every key Redis lacks too
    /// (`load` gets the indices in `keys` of the keys to load, and answers in that
    /// order), then one conditional fill: a cold page of twenty posts costs a few
    /// round trips, not twenty times three. Keys another lookup is loading
    /// already are awaited, not loaded again, and a lookup of a key this batch is
    /// loading waits for the batch. A key given twice is looked up once. `load`
    /// may be called again for a single key (when another lookup's load this one
    /// waited on was cancelled, or failed with another error type).
    pub async fn get_many_or_fill<F, Fut, E>(
        &self,
        keys: &[&str],
        load: F,
    ) -> Result<Vec<Option<Arc<T>>>, Arc<E>>
    where
        F: Fn(Vec<usize>) -> Fut,
        Fut: Future<Output = Result<LoadedMany<T>, E>>,
        E: Send + Sync + 'static,
    {
        let mut out: Vec<Option<Arc<T>>> = keys.iter().map(|k| self.cached(k)).collect();
        if out.iter().any(Option::is_none) {
            Box::pin(self.miss_many(keys, &load, &mut out)).await?;
        }
        Ok(out)
    }

    /// The rest of [`ReadThrough::get_many_or_fill`] after the L1 pass: fills the
    /// `None`s of `out`.
    async fn miss_many<F, Fut, E>(
        &self,
        keys: &[&str],
        load: &F,
        out: &mut [Option<Arc<T>>],
    ) -> Result<(), Arc<E>>
    where
        F: Fn(Vec<usize>) -> Fut,
        Fut: Future<Output = Result<LoadedMany<T>, E>>,
        E: Send + Sync + 'static,
    {
        // Each distinct missing key once: (its first index, copies at these indices).
        let mut first: HashMap<&str, usize> = HashMap::new();
        let mut copies: Vec<(usize, usize)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if out[i].is_none() {
                match first.get(key) {
                    Some(&f) => copies.push((i, f)),
                    None => {
                        first.insert(key, i);
                    }
                }
            }
        }
        let _in_flight: Vec<InFlight<'_>> =
            first.iter().map(|_| InFlight::enter(&self.misses_in_flight)).collect();
        // Lead the keys no one is loading; join the others' loads.
        let mut led: Vec<(usize, Flight<T>)> = Vec::new();
        let mut joined: Vec<(usize, Flight<T>)> = Vec::new();
        {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            let mut distinct: Vec<usize> = first.values().copied().collect();
            distinct.sort_unstable();
            for i in distinct {
                match flights.get(keys[i]) {
                    Some(flight) => joined.push((i, flight.clone())),
                    None => {
                        let flight = Flight::<T>::default();
                        flights.insert(keys[i].to_owned(), flight.clone());
                        led.push((i, flight));
                    }
                }
            }
        }
        // Ends the led flights whose outcome never came (the batch cancelled
        // before they started); each one that did is ended as it is answered.
        let _ends: Vec<EndFlight<'_, T>> = led
            .iter()
            .map(|(i, flight)| EndFlight { flights: &self.flights, key: keys[*i], flight })
            .collect();
        // Each led key's flight is initialized by the batch's outcome for it (so a
        // lookup of the key meanwhile waits for it), the batch running beside.
        let (senders, receivers): (Vec<_>, Vec<_>) =
            led.iter().map(|_| tokio::sync::oneshot::channel::<Outcome<T>>()).unzip();
        let inits = led.iter().zip(receivers).map(|((i, flight), rx)| {
            let key = keys[*i];
            async move {
                flight
                    .get_or_init(|| async move {
                        // The key's flight ends with its outcome, not with the
                        // whole batch: a lookup after that (after an invalidation,
                        // say) starts a load of its own.
                        let _end = EndFlight { flights: &self.flights, key, flight };
                        rx.await.expect("the batch answers every key it leads")
                    })
                    .await
                    .clone()
            }
        });
        let batch = async {
            let indices: Vec<usize> = led.iter().map(|(i, _)| *i).collect();
            if indices.is_empty() {
                return;
            }
            let outcomes = self.load_many(keys, &indices, load).await;
            for (tx, outcome) in senders.into_iter().zip(outcomes) {
                // A lookup that took the flight over answers it itself.
                let _ = tx.send(outcome);
            }
        };
        let joins = joined.iter().map(|(i, flight)| {
            let key = keys[*i];
            async move {
                flight
                    .get_or_init(|| async {
                        let _end = EndFlight { flights: &self.flights, key, flight };
                        self.load(key, || one_of(load, *i)).await
                    })
                    .await
                    .clone()
            }
        });
        let (led_out, (), joined_out) =
            futures::join!(futures::future::join_all(inits), batch, futures::future::join_all(joins));
        let outcomes =
            led.iter().map(|(i, _)| *i).zip(led_out).chain(joined.iter().map(|(i, _)| *i).zip(joined_out));
        for (i, outcome) in outcomes {
            out[i] = match outcome {
                Outcome::Kept(v) | Outcome::Stale(v) => Some(v),
                Outcome::Missing => None,
                Outcome::Failed(e) => match e.downcast::<E>() {
                    Ok(e) => return Err(e),
                    // Another caller's load, with another error type: this
                    // caller's own loader decides (uncached).
                    Err(_) => match one_of(load, i).await {
                        Ok(Loaded::Keep(v) | Loaded::ServeOnly(v)) => v.map(Arc::new),
                        Err(e) => return Err(Arc::new(e)),
                    },
                },
            };
        }
        for (i, f) in copies {
            out[i] = out[f].clone();
        }
        Ok(())
    }

    /// One load of the keys at `indices` for every lookup sharing them, as
    /// [`ReadThrough::load`] does for one: their outcomes, in order.
    async fn load_many<F, Fut, E>(&self, keys: &[&str], indices: &[usize], load: &F) -> Vec<Outcome<T>>
    where
        F: Fn(Vec<usize>) -> Fut,
        Fut: Future<Output = Result<LoadedMany<T>, E>>,
        E: Send + Sync + 'static,
    {
        let n = indices.len();
        let key = |j: usize| keys[indices[j]];
        let seen: Vec<_> = (0..n).map(|j| self.evictions.snapshot(key(j))).collect();
        let keep = |j: usize, v: Arc<T>| self.keep_in_l1(key(j), seen[j], v);
        let mut outcomes: Vec<Option<Outcome<T>>> = (0..n).map(|_| None).collect();
        // Every value, then every generation, in one MGET. `None`: the
        // generation is unknown (Redis failed) and nothing is stored.
        let mut generations: Vec<Option<String>> = vec![None; n];
        let mut mget = redis::cmd("MGET");
        for j in 0..n {
            mget.arg(self.redis_key(key(j)));
        }
        for j in 0..n {
            mget.arg(self.generation_key(key(j)));
        }
        let read = self
            .redis
            .run(|mut c| async move { mget.query_async::<Vec<Option<Vec<u8>>>>(&mut c).await })
            .await;
        let mut unclaimed: Vec<usize> = Vec::new();
        match read {
            Ok(replies) if replies.len() == 2 * n => {
                let (values, gens) = replies.split_at(n);
                for j in 0..n {
                    if let Some(bytes) = &values[j] {
                        match serde_json::from_slice::<T>(bytes) {
                            Ok(v) => {
                                self.metrics.count(self.name, "l2_hit");
                                outcomes[j] = Some(keep(j, Arc::new(v)));
                                continue;
                            }
                            Err(e) => {
                                tracing::warn!(cache = self.name, error = %e, "undecodable cache entry")
                            }
                        }
                    }
                    match gens[j].as_deref().map(String::from_utf8_lossy) {
                        Some(g) => generations[j] = Some(g.into_owned()),
                        None => unclaimed.push(j),
                    }
                }
            }
            Ok(replies) => {
                self.metrics.count(self.name, "error");
                tracing::warn!(
                    cache = self.name,
                    replies = replies.len(),
                    asked = 2 * n,
                    "redis answered MGET short; loading from the store"
                );
            }
            Err(e) => {
                self.metrics.count(self.name, "error");
                tracing::warn!(cache = self.name, error = %e, "redis read failed; loading from the store");
            }
        }
        // Claim a generation for each key that has none, in one pipeline (see
        // [`ReadThrough::generation_or_claim`]).
        if !unclaimed.is_empty() {
            let fresh: Vec<String> =
                unclaimed.iter().map(|_| (rand::rng().random::<u64>() >> 2).to_string()).collect();
            let ttl = self.invalidator.generation_ttl();
            let mut pipe = redis::pipe();
            for (j, claim) in unclaimed.iter().zip(&fresh) {
                pipe.cmd("SET")
                    .arg(self.generation_key(key(*j)))
                    .arg(claim)
                    .arg("NX")
                    .arg("GET")
                    .arg("EX")
                    .arg(ttl);
            }
            let set = self
                .redis
                .run(|mut c| async move { pipe.query_async::<Vec<Option<String>>>(&mut c).await })
                .await;
            match set {
                Ok(existing) if existing.len() == unclaimed.len() => {
                    for ((j, claim), existing) in unclaimed.iter().zip(fresh).zip(existing) {
                        generations[*j] = Some(existing.unwrap_or(claim));
                    }
                }
                Ok(_) => self.metrics.count(self.name, "error"),
                Err(e) => {
                    self.metrics.count(self.name, "error");
                    tracing::warn!(cache = self.name, error = %e, "redis write failed; the values are not cached");
                }
            }
        }
        let to_load: Vec<usize> = (0..n).filter(|j| outcomes[*j].is_none()).collect();
        for _ in &to_load {
            self.metrics.count(self.name, "miss");
        }
        let loaded = load(to_load.iter().map(|j| indices[*j]).collect()).await;
        match loaded {
            Err(e) => {
                let e: Arc<dyn Any + Send + Sync> = Arc::new(e);
                for j in to_load {
                    outcomes[j] = Some(Outcome::Failed(e.clone()));
                }
            }
            Ok(LoadedMany { values, keep: may_keep }) => {
                let mut values = values.into_iter();
                // (index among the batch, value, its encoding) of what Redis may keep.
                let mut fills: Vec<(usize, T, Vec<u8>)> = Vec::new();
                for j in to_load {
                    let Some(v) = values.next().flatten() else {
                        outcomes[j] = Some(Outcome::Missing);
                        continue;
                    };
                    if !may_keep {
                        self.metrics.count(self.name, "served_uncached");
                        outcomes[j] = Some(Outcome::Stale(Arc::new(v)));
                        continue;
                    }
                    match (&generations[j], serde_json::to_vec(&v)) {
                        (Some(_), Ok(bytes)) => fills.push((j, v, bytes)),
                        (None, _) => outcomes[j] = Some(keep(j, Arc::new(v))),
                        (_, Err(e)) => {
                            tracing::warn!(cache = self.name, error = %e, "value not encodable");
                            outcomes[j] = Some(keep(j, Arc::new(v)));
                        }
                    }
                }
                if !fills.is_empty() {
                    let mut call = self.fill_many.prepare_invoke();
                    for (j, _, bytes) in &fills {
                        call.key(self.redis_key(key(*j))).key(self.generation_key(key(*j)));
                        call.arg(generations[*j].as_deref().unwrap_or_default())
                            .arg(bytes.as_slice())
                            .arg(self.l2_ttl());
                    }
                    let stored = self
                        .redis
                        .run(|mut c| async move { call.invoke_async::<Vec<i64>>(&mut c).await })
                        .await;
                    let stored = match stored {
                        Ok(stored) if stored.len() == fills.len() => stored,
                        Ok(_) | Err(_) => {
                            if let Err(e) = &stored {
                                tracing::warn!(cache = self.name, error = %e, "redis write failed");
                            }
                            self.metrics.count(self.name, "error");
                            // As for one key: not stored, kept in L1.
                            vec![1; fills.len()]
                        }
                    };
                    for ((j, v, _), stored) in fills.into_iter().zip(stored) {
                        outcomes[j] = Some(if stored == 1 {
                            keep(j, Arc::new(v))
                        } else {
                            self.metrics.count(self.name, "fill_refused");
                            Outcome::Stale(Arc::new(v))
                        });
                    }
                }
            }
        }
        outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Missing)).collect()
    }

    /// Keep `value`, just created in the store of record, under a `key` that no
    /// lookup can have asked for before (a fresh random token, say), in both
    /// levels and one Redis round trip: its first lookup, on any web server of
    /// this data center, is then a hit instead of a load. Stored only if Redis
    /// knows nothing of the key (no generation: never invalidated nor claimed by
    /// a lookup); otherwise nothing is kept and lookups load it as usual.
    /// Whether it was kept.
    pub async fn prime(&self, key: &str, value: T) -> bool {
        let bytes = match serde_json::to_vec(&value) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(cache = self.name, error = %e, "value not encodable");
                return false;
            }
        };
        let seen = self.evictions.snapshot(key);
        let generation = (rand::rng().random::<u64>() >> 2).to_string();
        let mut call = self.prime.prepare_invoke();
        call.key(self.redis_key(key)).key(self.generation_key(key));
        call.arg(bytes).arg(self.l2_ttl()).arg(generation).arg(self.invalidator.generation_ttl());
        match self.redis.run(|mut c| async move { call.invoke_async::<i64>(&mut c).await }).await {
            Ok(1) => {}
            Ok(_) => return false,
            Err(e) => {
                self.metrics.count(self.name, "error");
                tracing::warn!(cache = self.name, error = %e, "redis write failed; the value is not primed");
                return false;
            }
        }
        // Not primed if an eviction came at any point: Redis no longer holds it.
        matches!(self.keep_in_l1(key, seen, Arc::new(value)), Outcome::Kept(_))
            && self.evictions.snapshot(key) == seen
    }

    /// Keep `v` in L1 only if no eviction of `key` reached this process since
    /// `seen` (the message may arrive after Redis accepted the fill), nor between
    /// the check and the insert (then the insert is undone, though the value is
    /// still reported kept: the eviction came after it).
    fn keep_in_l1(&self, key: &str, seen: (u64, u64), v: Arc<T>) -> Outcome<T> {
        if self.evictions.snapshot(key) != seen {
            return Outcome::Stale(v);
        }
        self.l1.insert(key, v.clone());
        if self.evictions.snapshot(key) != seen {
            self.l1.remove(key);
        }
        Outcome::Kept(v)
    }

    /// Forget `key` everywhere: Redis (this data center's and its peers'), this
    /// process's L1, and (by message) every other process's L1 in every data center.
    /// Call it after the write to the store has committed. A Redis that could not
    /// be told is logged and counted (`cache_invalidation_failures`), never an
    /// error: the write stands, and that Redis's entries expire by TTL.
    pub async fn invalidate(&self, key: &str) {
        self.evictions.note(key);
        self.l1.remove(key);
        match self.invalidator.invalidate(self.name, key).await {
            Ok(()) => {}
            Err(SpreadError::Local(_)) => {
                self.metrics.count(self.name, "error");
                self.metrics.count_invalidation_failure(self.name, "local");
            }
            Err(SpreadError::Peers(_)) => self.metrics.count_invalidation_failure(self.name, "peer"),
        }
    }
}

/// A batch loader's answer for the key at index `i` alone, as one key's loader
/// answers (for a lookup that must load it by itself).
async fn one_of<T, F, Fut, E>(load: &F, i: usize) -> Result<Loaded<T>, E>
where
    F: Fn(Vec<usize>) -> Fut,
    Fut: Future<Output = Result<LoadedMany<T>, E>>,
{
    let LoadedMany { values, keep } = load(vec![i]).await?;
    let v = values.into_iter().next().flatten();
    Ok(if keep { Loaded::Keep(v) } else { Loaded::ServeOnly(v) })
}

/// What the invalidation listener evicts from.
struct LocalL1<T> {
    /// The cache's L1.
    l1: Arc<L1<T>>,
    /// Told of every eviction before it happens, so loads in flight notice.
    evictions: Arc<Evictions>,
}

impl<T: Send + Sync + 'static> crate::invalidation::LocalEvict for LocalL1<T> {
    fn evict(&self, key: &str) {
        self.evictions.note(key);
        self.l1.remove(key);
    }

    fn clear(&self) {
        self.evictions.note_clear();
        self.l1.clear();
    }
}
