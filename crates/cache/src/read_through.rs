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

    /// `key`'s value if this process holds it (L1), counted as an `l1_hit`; `None`
    /// otherwise, counted as nothing (the caller's [`ReadThrough::get_or_fill`]
    /// counts what it does next). For batch reads that try every key in L1
    /// before starting any load.
    pub fn cached(&self, key: &str) -> Option<Arc<T>> {
        let v = self.l1.get(key)?;
        self.l1_hits.inc();
        Some(v)
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
        // Keep a value only if no eviction of the key reached L1 while it was
        // being read (the message may arrive after Redis accepted the fill), nor
        // between the check and the insert (then the insert is undone).
        let keep = |v: Arc<T>| {
            if self.evictions.snapshot(key) != seen {
                return Outcome::Stale(v);
            }
            self.l1.insert(key, v.clone());
            if self.evictions.snapshot(key) != seen {
                self.l1.remove(key);
            }
            Outcome::Kept(v)
        };
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
