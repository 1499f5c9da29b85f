//! Spreading invalidations to every process's L1 through Redis pub/sub.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use crate::Redis;

/// Something holding entries in this process that an invalidation must reach.
pub(crate) trait LocalEvict: Send + Sync {
    /// Drop one key.
    fn evict<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()>;
    /// Drop everything (after missing messages while disconnected).
    fn clear(&self);
}

/// The Redis key of entry `key` of cache `name`.
pub(crate) fn l2_key(redis: &Redis, name: &str, key: &str) -> String {
    redis.key(&format!("c:{name}:{key}"))
}

/// Publishes invalidations and knows this process's L1 caches by name.
#[derive(Clone)]
pub struct Invalidator {
    /// Where messages go.
    redis: Redis,
    /// Local caches by name, for the listener to evict from.
    locals: Arc<RwLock<HashMap<&'static str, Arc<dyn LocalEvict>>>>,
}

impl std::fmt::Debug for Invalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Invalidator")
    }
}

impl Invalidator {
    /// An invalidator publishing on this deployment's channel.
    pub fn new(redis: Redis) -> Invalidator {
        Invalidator { redis, locals: Arc::default() }
    }

    fn channel(&self) -> String {
        self.redis.key("invalidate")
    }

    pub(crate) fn register(&self, name: &'static str, local: Box<dyn LocalEvict>) {
        self.locals.write().expect("invalidator lock poisoned").insert(name, Arc::from(local));
    }

    /// Forget `key` of the cache named `name` in Redis and in every process's L1 —
    /// for processes that write but hold no such cache themselves (workers).
    /// Returns false if Redis could not be told (entries then expire by TTL).
    pub async fn invalidate(&self, name: &str, key: &str) -> bool {
        let rkey = l2_key(&self.redis, name, key);
        let deleted = self.redis.run(|mut c| async move { c.del::<_, ()>(rkey).await }).await;
        if let Err(e) = &deleted {
            tracing::warn!(cache = name, error = %e, "redis delete failed");
        }
        self.publish(name, key).await && deleted.is_ok()
    }

    async fn publish(&self, name: &str, key: &str) -> bool {
        let message = format!("{name}\n{key}");
        let channel = self.channel();
        let published =
            self.redis.run(|mut c| async move { c.publish::<_, _, ()>(channel, message).await }).await;
        if let Err(e) = &published {
            tracing::warn!(cache = name, error = %e, "publishing an invalidation failed; L1 entries elsewhere expire by TTL");
        }
        published.is_ok()
    }

    async fn evict_local(&self, message: &str) {
        let Some((name, key)) = message.split_once('\n') else {
            tracing::warn!(message, "malformed invalidation message");
            return;
        };
        let local = self.locals.read().expect("invalidator lock poisoned").get(name).cloned();
        if let Some(local) = local {
            local.evict(key).await;
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
