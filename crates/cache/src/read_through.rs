//! Typed read-through caching over two levels.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rand::Rng;
use redis::AsyncCommands;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Invalidator, Redis};

/// Sizes and lifetimes of a cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Entries kept in the process (L1); beyond this, TinyLFU picks what to evict.
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    /// The cache's name (`profile`, `post`, ...).
    cache: &'static str,
    /// `l1_hit`, `l2_hit`, `miss` (loaded from the store) or `error` (Redis failed).
    result: &'static str,
}

/// Lookup counters shared by every cache of a process.
#[derive(Clone, Default)]
pub struct CacheMetrics {
    /// Lookups by cache and outcome.
    lookups: Family<LookupLabels, Counter>,
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
        m
    }

    fn count(&self, cache: &'static str, result: &'static str) {
        self.lookups.get_or_create(&LookupLabels { cache, result }).inc();
    }

    /// How many lookups of `cache` ended with `result` (for tests and dashboards).
    pub fn get(&self, cache: &'static str, result: &'static str) -> u64 {
        self.lookups.get_or_create(&LookupLabels { cache, result }).get()
    }
}

/// What a loader found when asked for a key: a missing key is not cached.
enum Load<E> {
    Missing,
    Failed(Arc<E>),
}

/// A read-through cache of `T` values under one name.
pub struct ReadThrough<T> {
    /// Names the key space in Redis, in metrics and in invalidation messages.
    name: &'static str,
    /// The in-process level; `try_get_with` makes concurrent misses of a key share one load.
    l1: moka::future::Cache<String, Arc<T>>,
    /// The shared level.
    redis: Redis,
    /// Lifetimes.
    config: CacheConfig,
    /// Lookup counters.
    metrics: CacheMetrics,
    /// Spreads invalidations to every process.
    invalidator: Invalidator,
    /// Lookups past L1 right now (reading Redis, loading, or waiting on another
    /// caller's load of the same key): shows that concurrent misses overlapped.
    misses_in_flight: Arc<AtomicUsize>,
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
        let l1 = moka::future::Cache::builder()
            .max_capacity(config.l1_capacity)
            .time_to_live(config.l1_ttl)
            .build();
        let cache = Arc::new(ReadThrough {
            name,
            l1,
            redis,
            config,
            metrics,
            invalidator: invalidator.clone(),
            misses_in_flight: Arc::default(),
        });
        invalidator.register(name, Box::new(LocalL1 { l1: cache.l1.clone() }));
        cache
    }

    fn redis_key(&self, key: &str) -> String {
        crate::invalidation::l2_key(&self.redis, self.name, key)
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
    pub async fn get_or_load<F, Fut, E>(&self, key: &str, load: F) -> Result<Option<Arc<T>>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
        E: Send + Sync + 'static,
    {
        if let Some(v) = self.l1.get(key).await {
            self.metrics.count(self.name, "l1_hit");
            return Ok(Some(v));
        }
        let _in_flight = InFlight::enter(&self.misses_in_flight);
        let result = self
            .l1
            .try_get_with(key.to_owned(), async {
                let rkey = self.redis_key(key);
                let read = {
                    let rkey = rkey.clone();
                    self.redis.run(|mut c| async move { c.get::<_, Option<Vec<u8>>>(rkey).await }).await
                };
                match read {
                    Ok(Some(bytes)) => match serde_json::from_slice::<T>(&bytes) {
                        Ok(v) => {
                            self.metrics.count(self.name, "l2_hit");
                            return Ok(Arc::new(v));
                        }
                        Err(e) => tracing::warn!(cache = self.name, error = %e, "undecodable cache entry"),
                    },
                    Ok(None) => {}
                    Err(e) => {
                        self.metrics.count(self.name, "error");
                        tracing::warn!(cache = self.name, error = %e, "redis read failed; loading from the store");
                    }
                }
                self.metrics.count(self.name, "miss");
                let value = match load().await {
                    Ok(Some(v)) => v,
                    Ok(None) => return Err(Load::Missing),
                    Err(e) => return Err(Load::Failed(Arc::new(e))),
                };
                match serde_json::to_vec(&value) {
                    Ok(bytes) => {
                        let ttl = self.l2_ttl();
                        let write =
                            self.redis.run(|mut c| async move { c.set_ex::<_, _, ()>(rkey, bytes, ttl).await }).await;
                        if let Err(e) = write {
                            self.metrics.count(self.name, "error");
                            tracing::warn!(cache = self.name, error = %e, "redis write failed");
                        }
                    }
                    Err(e) => tracing::warn!(cache = self.name, error = %e, "value not encodable"),
                }
                Ok(Arc::new(value))
            })
            .await;
        match result {
            Ok(v) => Ok(Some(v)),
            // Waiters that shared the load share its outcome.
            Err(shared) => match &*shared {
                Load::Missing => Ok(None),
                Load::Failed(e) => Err(e.clone()),
            },
        }
    }

    /// Forget `key` everywhere: Redis, this process's L1, and (by message) every
    /// other process's L1. Call it after the write to the store has committed.
    pub async fn invalidate(&self, key: &str) {
        self.l1.invalidate(key).await;
        if !self.invalidator.invalidate(self.name, key).await {
            self.metrics.count(self.name, "error");
        }
    }
}

struct LocalL1<T> {
    l1: moka::future::Cache<String, Arc<T>>,
}

impl<T: Send + Sync + 'static> crate::invalidation::LocalEvict for LocalL1<T> {
    fn evict<'a>(&'a self, key: &'a str) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(self.l1.invalidate(key))
    }

    fn clear(&self) {
        self.l1.invalidate_all();
    }
}
