//! Daily, weekly and monthly active users, counted with Redis' HyperLogLog (about
//! 12 KB per day key, 0.81% standard error), never a set of every id.
//!
//! A web server notes the id of every signed-in user it serves in memory
//! ([`ActiveUsers::saw`]: a set per UTC day, no Redis command per request) and
//! once a second sends one `PFADD` per day key it holds to its own data center's
//! Redis, with the key's expiry ([`ActiveUsers::flush`]). The keys are
//! `active:{prefix}{day}`: outside the cache's prefix, so clearing a peer that
//! missed writes (ADR 0012) leaves them. They are still in a Redis that evicts
//! under its memory budget (ADR 0013) and keeps nothing across a restart: a count
//! can only be low, never high.
//!
//! Each data center's Redis holds only its own servers' users. [`count`] forms the
//! union over every data center's Redis that answers: the day keys of the others
//! are copied (`GET`, then `SET` with a short expiry) into one of them, and one
//! `PFCOUNT` over all of a window's keys counts their union, so a user active in
//! both data centers counts once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

use crate::redis_handle::{Redis, RedisError};

/// How long a day key lives: the month's window, and a little more.
pub const KEY_TTL: Duration = Duration::from_secs(32 * 24 * 3600);
/// The most distinct users one flush carries; more are dropped and counted.
pub const MAX_BUFFERED: usize = 100_000;
/// Days in each window counted: the day, the week, the month (30 days).
pub const WINDOWS: [(&str, i64); 3] = [("day", 1), ("week", 7), ("month", 30)];

/// Days since the unix epoch (UTC) of `at`.
pub fn day_of(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| (d.as_secs() / 86_400) as i64)
}

/// The Redis key of `day`'s active users (outside `prefix`, the cache's keys).
pub fn day_key(prefix: &str, day: i64) -> String {
    format!("active:{prefix}{day}")
}

/// Counters of what was noted and sent.
#[derive(Clone, Debug, Default)]
struct ActiveMetrics {
    /// Flushes sent to Redis.
    flushes: Counter,
    /// Flushes Redis refused or did not answer (their ids are lost).
    flush_failures: Counter,
    /// Ids not noted because the buffer was full.
    dropped: Counter,
}

/// The signed-in users a process served, by day, until the next flush.
#[derive(Debug)]
pub struct ActiveUsers {
    /// Ids seen since the last flush, by day.
    seen: Mutex<HashMap<i64, HashSet<i64>>>,
    /// This data center's Redis (peers are not written: [`count`] forms the union).
    redis: Redis,
    /// Counters, registered as `millions_active_users_*`.
    metrics: ActiveMetrics,
}

impl ActiveUsers {
    /// An empty buffer flushing into `redis`, its counters in `registry`.
    pub fn new(redis: Redis, registry: &telemetry::Registry) -> ActiveUsers {
        let metrics = ActiveMetrics::default();
        for (name, help, counter) in [
            (
                "active_users_flushes",
                "Flushes of the signed-in users served into Redis' day keys",
                &metrics.flushes,
            ),
            (
                "active_users_flush_failures",
                "Flushes of signed-in users that Redis did not take (those ids are not counted)",
                &metrics.flush_failures,
            ),
            (
                "active_users_dropped",
                "Signed-in users not noted: the buffer between flushes was full",
                &metrics.dropped,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        ActiveUsers { seen: Mutex::new(HashMap::new()), redis, metrics }
    }

    /// Note that `user_id` was served now.
    pub fn saw(&self, user_id: i64) {
        self.saw_on(day_of(SystemTime::now()), user_id);
    }

    /// Note that `user_id` was served on `day`.
    pub fn saw_on(&self, day: i64, user_id: i64) {
        let mut seen = self.seen.lock().expect("active users poisoned");
        let total: usize = seen.values().map(HashSet::len).sum();
        let set = seen.entry(day).or_default();
        if total >= MAX_BUFFERED && !set.contains(&user_id) {
            self.metrics.dropped.inc();
            return;
        }
        set.insert(user_id);
    }

    /// Send what was noted: one `PFADD` per day key (with its expiry), in one
    /// pipeline. Returns the day keys sent; on failure the ids are dropped.
    pub async fn flush(&self) -> Result<usize, RedisError> {
        let seen = std::mem::take(&mut *self.seen.lock().expect("active users poisoned"));
        if seen.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for (day, ids) in &seen {
            let key = day_key(self.redis.prefix(), *day);
            pipe.cmd("PFADD").arg(&key).arg(ids.iter().collect::<Vec<_>>()).ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(KEY_TTL.as_secs()).ignore();
        }
        let sent = self.redis.run(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await;
        match sent {
            Ok(()) => {
                self.metrics.flushes.inc();
                Ok(seen.len())
            }
            Err(e) => {
                self.metrics.flush_failures.inc();
                Err(e)
            }
        }
    }

    /// Flush every `every` until `shutdown`, and once more then.
    pub fn spawn(
        self: Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let stop = tokio::select! {
                    _ = shutdown.cancelled() => true,
                    _ = tokio::time::sleep(every) => false,
                };
                if let Err(e) = self.flush().await {
                    tracing::warn!(error = %e, "could not send the active users to redis; this second's are not counted");
                }
                if stop {
                    return;
                }
            }
        })
    }
}

/// Active users over every data center, as [`count`] found them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ActiveCounts {
    /// Distinct users of the day so far (UTC).
    pub day: u64,
    /// Of the last 7 days, today included.
    pub week: u64,
    /// Of the last 30 days, today included.
    pub month: u64,
    /// The servers (by name) whose users are counted.
    pub counted: Vec<String>,
    /// The servers that did not answer, and why: their users are missing.
    pub missing: Vec<(String, String)>,
}

/// One day key's HyperLogLog, as `GET` answers it.
type DayBytes = (i64, Vec<u8>);

/// Count the active users of the windows ending on `today` over `servers`
/// (name, Redis; every data center's), as a union: the other servers' day keys
/// are copied into the first that answers, then one `PFCOUNT` per window counts
/// every key of it. `tag` keeps the copies of concurrent counters apart.
pub async fn count(servers: &[(String, Redis)], today: i64, tag: &str) -> Result<ActiveCounts, String> {
    let mut out = ActiveCounts::default();
    let days: Vec<i64> = (0..30).map(|back| today - back).collect();
    // Each server's day keys, raw (a HyperLogLog is a string): (server, [(day, bytes)]).
    let mut held: Vec<(usize, Vec<DayBytes>)> = Vec::new();
    for (i, (name, redis)) in servers.iter().enumerate() {
        let keys: Vec<String> = days.iter().map(|d| day_key(redis.prefix(), *d)).collect();
        let got = redis
            .run(|mut c| async move {
                redis::cmd("MGET").arg(&keys).query_async::<Vec<Option<Vec<u8>>>>(&mut c).await
            })
            .await;
        match got {
            Ok(values) => {
                out.counted.push(name.clone());
                let present = days.iter().zip(values).filter_map(|(d, v)| v.map(|v| (*d, v))).collect();
                held.push((i, present));
            }
            Err(e) => out.missing.push((name.clone(), e.to_string())),
        }
    }
    let Some(((home_index, _), others)) = held.split_first() else {
        return Err(format!("no redis answered: {:?}", out.missing));
    };
    let home = &servers[*home_index].1;
    // (day, key in home) of every key counted.
    let mut keys: Vec<(i64, String)> = days.iter().map(|d| (*d, day_key(home.prefix(), *d))).collect();
    let mut copies = redis::pipe();
    let mut copied = Vec::new();
    for (i, present) in others {
        for (day, bytes) in present {
            let key = format!("active-copy:{tag}:{i}:{}", day_key(home.prefix(), *day));
            copies.cmd("SET").arg(&key).arg(bytes.as_slice()).arg("EX").arg(60).ignore();
            copied.push(key.clone());
            keys.push((*day, key));
        }
    }
    let mut counts = redis::pipe();
    for (_, window) in WINDOWS {
        let in_window: Vec<&String> =
            keys.iter().filter(|(d, _)| today - d < window).map(|(_, k)| k).collect();
        counts.cmd("PFCOUNT").arg(in_window);
    }
    if !copied.is_empty() {
        counts.cmd("UNLINK").arg(&copied).ignore();
    }
    let found: Vec<u64> = home
        .run(|mut c| async move {
            if !copied.is_empty() {
                copies.query_async::<()>(&mut c).await?;
            }
            counts.query_async(&mut c).await
        })
        .await
        .map_err(|e| format!("counting on {}: {e}", servers[*home_index].0))?;
    let [day, week, month] = found[..] else { return Err(format!("PFCOUNT answered {found:?}")) };
    (out.day, out.week, out.month) = (day, week, month);
    Ok(out)
}
