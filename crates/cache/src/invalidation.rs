//! Spreading invalidations to every process's L1 through Redis pub/sub.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use redis::Script;
use tokio_util::sync::CancellationToken;

use crate::{Redis, SpreadError};

/// Something holding entries in this process that an invalidation must reach:
/// each cache's L1, and whatever else registers under a name of its own
/// ([`Invalidator::register`]; the web tier's hot-key copies hear of writers
/// this way, [`Invalidator::announce`]).
pub trait LocalEvict: Send + Sync {
    /// Drop one key (a message naming it arrived).
    fn evict(&self, key: &str);
    /// Drop everything (after missing messages while disconnected).
    fn clear(&self);
}

/// The Redis key of entry `key` of cache `name`.
pub(crate) fn l2_key(redis: &Redis, name: &str, key: &str) -> String {
    redis.key(&format!("c:{name}:{key}"))
}

/// The Redis key of the generation of entry `key` of cache `name`: a counter every
/// invalidation increments, so a fill can tell whether a write happened while it
/// was loading (ADR 0003).
pub(crate) fn generation_key(redis: &Redis, name: &str, key: &str) -> String {
    redis.key(&format!("gen:{name}:{key}"))
}

/// The channel invalidations of this deployment are published on, in `redis`.
fn channel_of(redis: &Redis) -> String {
    redis.key("invalidate")
}

/// Least lifetime of a generation key. A stale fill could be accepted only if its
/// key's generation expired *during* the load (read as nil before the load, nil
/// again at the fill), so this must exceed the longest load by far; it is also
/// longer than the value lifetimes of the default configuration.
pub(crate) const MIN_GENERATION_TTL: Duration = Duration::from_secs(3600);

/// One round trip, atomic: bump the generation (and renew its lifetime), delete the
/// value, tell every process. KEYS: value, generation; ARGV: generation TTL (s),
/// channel, message.
const INVALIDATE_LUA: &str = r"
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1";

/// Publishes invalidations and knows this process's L1 caches by name.
#[derive(Clone)]
pub struct Invalidator {
    /// Where messages go: this data center's Redis, and its peers (every data
    /// center's listeners must hear of a write).
    redis: Redis,
    /// Local caches by name, for the listener to evict from.
    locals: Arc<RwLock<HashMap<&'static str, Arc<dyn LocalEvict>>>>,
    /// The invalidation script (sent by hash, its text only when Redis lacks it).
    script: Script,
    /// Lifetime given to generation keys, in seconds: the longest value lifetime
    /// of the caches registered here, plus a margin, and at least
    /// [`MIN_GENERATION_TTL`].
    generation_ttl_secs: Arc<AtomicU64>,
}

impl std::fmt::Debug for Invalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Invalidator")
    }
}

impl Invalidator {
    /// An invalidator publishing on this deployment's channel.
    pub fn new(redis: Redis) -> Invalidator {
        Invalidator {
            redis,
            locals: Arc::default(),
            script: Script::new(INVALIDATE_LUA),
            generation_ttl_secs: Arc::new(AtomicU64::new(MIN_GENERATION_TTL.as_secs())),
        }
    }

    /// A cache of this process keeps values up to `longest` in Redis: generations
    /// outlive that (twice over, plus a minute).
    pub(crate) fn note_value_ttl(&self, longest: Duration) {
        let wanted = longest.as_secs().saturating_mul(2).saturating_add(60);
        self.generation_ttl_secs.fetch_max(wanted, Ordering::Relaxed);
    }

    /// Lifetime of generation keys, in seconds (also of those a fill creates).
    pub(crate) fn generation_ttl(&self) -> u64 {
        self.generation_ttl_secs.load(Ordering::Relaxed)
    }

    fn channel(&self) -> String {
        channel_of(&self.redis)
    }

    /// Have the listener ([`spawn_listener`]) hand every message for `name` to
    /// `local`. One receiver per name: a cache registers its own name; anything
    /// else registers a name no cache of the process uses.
    pub fn register(&self, name: &'static str, local: Box<dyn LocalEvict>) {
        self.locals.write().expect("invalidator lock poisoned").insert(name, Arc::from(local));
    }

    /// Forget `key` of the cache named `name` in Redis and in every process's L1 —
    /// for processes that write but hold no such cache themselves (workers).
    ///
    /// One script, atomically: increment the key's generation (so a load that read
    /// the old generation cannot store its value afterwards), delete the value,
    /// publish the key to every listener. It runs on this data center's Redis and
    /// on every peer's at once, so every data center's L2 and L1s forget the key.
    /// An error says which Redis could not be told (its entries then expire by TTL;
    /// a caller that must not leave them, such as a job, retries).
    pub async fn invalidate(&self, name: &str, key: &str) -> Result<(), SpreadError> {
        let ttl = self.generation_ttl_secs.load(Ordering::Relaxed);
        let message = format!("{name}\n{key}");
        let (script, message) = (&self.script, &message);
        let done = self
            .redis
            .run_everywhere("invalidation", |server| async move {
                let value_key = l2_key(&server, name, key);
                let gen_key = generation_key(&server, name, key);
                let channel = channel_of(&server);
                server
                    .run(|mut c| async move {
                        script
                            .key(value_key)
                            .key(gen_key)
                            .arg(ttl)
                            .arg(channel)
                            .arg(message)
                            .invoke_async::<i64>(&mut c)
                            .await
                    })
                    .await
            })
            .await;
        if let Err(e) = &done {
            tracing::warn!(cache = name, error = %e, "invalidation failed; entries expire by TTL");
        }
        done.map(|_| ())
    }

    /// Tell every process's receiver of `name` about `key` ([`Invalidator::register`]),
    /// in every data center at once, without touching any cached value: one
    /// `PUBLISH` per Redis. Published after an [`Invalidator::invalidate`] on the
    /// same Redis, it reaches each listener after that invalidation (one channel,
    /// delivered in order). An error says which Redis could not be told.
    pub async fn announce(&self, name: &str, key: &str) -> Result<(), SpreadError> {
        let message = format!("{name}\n{key}");
        let message = &message;
        let done = self
            .redis
            .run_everywhere("announcement", |server| async move {
                let channel = channel_of(&server);
                server
                    .run(|mut c| async move {
                        redis::cmd("PUBLISH").arg(channel).arg(message).query_async::<i64>(&mut c).await
                    })
                    .await
            })
            .await;
        if let Err(e) = &done {
            tracing::debug!(name, error = %e, "announcement not delivered everywhere");
        }
        done.map(|_| ())
    }

    async fn evict_local(&self, message: &str) {
        let Some((name, key)) = message.split_once('\n') else {
            tracing::warn!(message, "malformed invalidation message");
            return;
        };
        let local = self.locals.read().expect("invalidator lock poisoned").get(name).cloned();
        if let Some(local) = local {
            local.evict(key);
        }
    }

    fn clear_all_local(&self) {
        for local in self.locals.read().expect("invalidator lock poisoned").values() {
            local.clear();
        }
    }
}

/// Listen for invalidations until `shutdown`, reconnecting with backoff. After every
/// (re)subscription all L1 entries are dropped, since messages may have been missed.
/// `subscribed` is notified each time the subscription is in place.
pub fn spawn_listener(
    invalidator: Invalidator,
    shutdown: CancellationToken,
    subscribed: Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = async {
                let mut pubsub = invalidator.redis.client().get_async_pubsub().await?;
                pubsub.subscribe(invalidator.channel()).await?;
                invalidator.clear_all_local();
                subscribed.notify_waiters();
                tracing::info!("listening for cache invalidations");
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    match msg.get_payload::<String>() {
                        Ok(payload) => invalidator.evict_local(&payload).await,
                        Err(e) => tracing::warn!(error = %e, "undecodable invalidation"),
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                result = attempt => match result {
                    Ok(()) => {
                        tracing::warn!("invalidation subscription ended; reconnecting");
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => tracing::warn!(error = %e, "invalidation subscription failed; reconnecting"),
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                // A real backoff between reconnection attempts, not synchronization.
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}
