//! One shared Redis connection per process, replaced when it breaks.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

/// How to reach Redis (the `[redis]` section of a process's configuration).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://:password@host:port/`.
    pub url: String,
    /// Prefix of every key and channel, so deployments can share a Redis.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Connect and command timeout, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The Redis servers of the other data centers (`redis://:password@host:port/`,
    /// same prefix): the writes every data center must see (cache invalidations,
    /// timeline changes) go to them too, in parallel with this one (ADR 0008).
    /// Reads, sessions and cache fills stay local. Empty: one data center.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Milliseconds a peer that failed a write is skipped before it is tried
    /// again: while another DC is cut off, a write pays the timeout once per
    /// window, not at every request. What a skipped peer missed is made good by
    /// clearing its keys when it is reached again. 0: never skip.
    #[serde(default = "default_peer_retry_ms")]
    pub peer_retry_ms: u64,
}

fn default_peer_retry_ms() -> u64 {
    3000
}

/// The prefix of every key and channel unless `redis.prefix` says otherwise.
pub const DEFAULT_PREFIX: &str = "m:";

fn default_prefix() -> String {
    DEFAULT_PREFIX.into()
}

fn default_timeout_ms() -> u64 {
    1000
}

impl RedisConfig {
    /// Check the settings without connecting; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        validate_url("redis.url", &self.url)?;
        for (i, peer) in self.peers.iter().enumerate() {
            let field = format!("redis.peers[{i}]");
            validate_url(&field, peer)?;
            if peer == &self.url {
                return Err(format!(
                    "{field} is redis.url itself: peers are the other data centers' servers"
                ));
            }
            if self.peers[..i].contains(peer) {
                return Err(format!("{field} is listed twice"));
            }
        }
        if self.timeout_ms == 0 {
            return Err("redis.timeout_ms must be positive".into());
        }
        Ok(())
    }

    /// The command timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Check a Redis URL without connecting; `field` names it in the message.
fn validate_url(field: &str, url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("redis://").or_else(|| url.strip_prefix("rediss://")) else {
        return Err(format!("{field} must start with redis://"));
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = host.split('/').next().unwrap_or("");
    if hostport.is_empty() || hostport.starts_with(':') {
        return Err(format!("{field} has no host"));
    }
    if let Some((_, port)) = hostport.rsplit_once(':') {
        port.parse::<u16>().map_err(|_| format!("{field} has a bad port {port:?}"))?;
    }
    redis::Client::open(url).map_err(|e| format!("{field} is not a valid Redis URL: {e}"))?;
    Ok(())
}

/// A write that every data center must see did not reach every Redis
/// ([`Redis::run_everywhere`]).
#[derive(Debug, thiserror::Error)]
pub enum SpreadError {
    /// This data center's Redis failed: the write failed as it would with no peers
    /// (some peers may have taken it).
    #[error("redis: {0}")]
    Local(#[source] RedisError),
    /// This data center's Redis took the write; these peers (by address, never
    /// with their password) did not. Their data center sees the change late (an
    /// invalidation: after its entries' TTL; a timeline push: when retried).
    #[error("{}", describe_peers(.0))]
    Peers(Vec<(String, RedisError)>),
}

fn describe_peers(failed: &[(String, RedisError)]) -> String {
    let list: Vec<String> = failed.iter().map(|(peer, e)| format!("{peer}: {e}")).collect();
    format!("peer redis did not take the write ({})", list.join("; "))
}

impl SpreadError {
    /// Whether this data center's own Redis failed (not only a peer).
    pub fn is_local(&self) -> bool {
        matches!(self, SpreadError::Local(_))
    }
}

/// A Redis error (connection, protocol or command).
pub type RedisError = redis::RedisError;

/// A peer's state as this process sees it ([`Redis::run_everywhere`]).
#[derive(Debug, Default)]
struct PeerState {
    /// Skipped until then, after a failure.
    skip_until: Option<Instant>,
    /// A write failed or was skipped since it last took one: it may hold entries
    /// that writes since would have invalidated, so its keys are cleared before
    /// the next write reaches it.
    missed: bool,
}

/// A handle to the shared Redis: one multiplexed connection (pipelining every
/// request of the process over one socket), reconnected on the next command after it
/// breaks, with every command bounded by a timeout; and the key prefix that keeps
/// this deployment's keys apart from others'.
///
/// redis-rs's own `ConnectionManager` was tried first: after the server was killed
/// and restarted it kept failing every command (see ADR 0003), so reconnection is
/// done here, simply: drop the connection on a connection error, dial on next use.
#[derive(Clone)]
pub struct Redis {
    /// The live connection, if any; `None` after it broke.
    current: Arc<Mutex<Option<MultiplexedConnection>>>,
    /// Held while dialing, so a burst of requests after an outage dials once.
    dialing: Arc<tokio::sync::Mutex<()>>,
    /// The client, to dial command and pub/sub connections.
    client: redis::Client,
    /// Prepended to every key and channel.
    prefix: String,
    /// Longest any dial or command may take: a dead or unreachable Redis must make
    /// requests fail fast (or fall through to the database), never hang them.
    timeout: Duration,
    /// The other data centers' Redis servers (with no peers of their own), which
    /// [`Redis::run_everywhere`] writes to as well.
    peers: Arc<[Redis]>,
    /// `host:port` of the server, to name it in logs and errors without its password.
    label: String,
    /// As a peer: whether it is skipped and whether it missed writes. Held across
    /// the clearing of its keys, so this process's writes wait for it.
    peer_state: Arc<tokio::sync::Mutex<PeerState>>,
    /// As a peer: how long it is skipped after a failure.
    peer_retry: Duration,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("server", &self.label)
            .field("prefix", &self.prefix)
            .field("peers", &self.peers.len())
            .finish()
    }
}

fn timed_out(what: &str, timeout: Duration) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("redis did not {what} within {timeout:?}"),
    ))
}

impl Redis {
    /// Connect to `url` (`redis://:password@host:port/`). Fails if Redis cannot be
    /// reached now, so a misconfigured process stops at start-up.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Redis, RedisError> {
        let redis = Redis::lazy(url, prefix, timeout)?;
        redis.conn().await?;
        Ok(redis)
    }

    /// A handle to `url` that dials on first use (a peer data center may be down
    /// when this process starts; its writes fail until it is back).
    fn lazy(url: &str, prefix: &str, timeout: Duration) -> Result<Redis, RedisError> {
        let client = redis::Client::open(url)?;
        let label = client.get_connection_info().addr.to_string();
        Ok(Redis {
            current: Arc::default(),
            dialing: Arc::default(),
            client,
            prefix: prefix.to_owned(),
            timeout,
            peers: Arc::new([]),
            label,
            peer_state: Arc::default(),
            peer_retry: Duration::ZERO,
        })
    }

    /// Connect as `config` says: to the local Redis now (it must answer), to the
    /// peers on first use.
    pub async fn connect_with(config: &RedisConfig) -> Result<Redis, RedisError> {
        let peers = config
            .peers
            .iter()
            .map(|url| {
                let mut peer = Redis::lazy(url, &config.prefix, config.timeout())?;
                peer.peer_retry = Duration::from_millis(config.peer_retry_ms);
                Ok(peer)
            })
            .collect::<Result<Vec<_>, RedisError>>()?;
        let mut redis = Redis::connect(&config.url, &config.prefix, config.timeout()).await?;
        redis.peers = peers.into();
        Ok(redis)
    }

    /// The other data centers' Redis servers.
    pub fn peers(&self) -> &[Redis] {
        &self.peers
    }

    /// `host:port` of the server (no password), for logs.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Run `op` against this Redis and every peer at once (each of its commands
    /// bounded by the timeout), for writes every data center must see. Wall time is
    /// that of the slowest server, not the sum. A local failure is
    /// [`SpreadError::Local`], whatever the peers did; peers that failed while the
    /// local one succeeded are logged and returned as [`SpreadError::Peers`].
    pub async fn run_everywhere<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, SpreadError>
    where
        F: Fn(Redis) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let local = op(self.clone());
        let peers = futures::future::join_all(self.peers.iter().map(|p| p.as_peer(&op)));
        let (local, peers) = futures::join!(local, peers);
        let mut failed: Vec<(String, RedisError)> = Vec::new();
        for (peer, (result, skipped)) in self.peers.iter().zip(peers) {
            if let Err(e) = result {
                if !skipped {
                    tracing::warn!(peer = %peer.label, write = what, error = %e, "a peer data center's redis did not take a write");
                }
                failed.push((peer.label.clone(), e));
            }
        }
        let value = local.map_err(SpreadError::Local)?;
        if failed.is_empty() { Ok(value) } else { Err(SpreadError::Peers(failed)) }
    }

    /// Run `op` against this peer: skipped within the retry window after a
    /// failure (`Err` at once, and `true`: not worth a log line each time); once
    /// reached again after a failure or a skip, its keys under the prefix are
    /// cleared first — it missed invalidations and timeline writes, and
    /// everything it holds is derived from the shards.
    async fn as_peer<T, F, Fut>(&self, op: &F) -> (Result<T, RedisError>, bool)
    where
        F: Fn(Redis) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        {
            // Held while clearing, so this process's writes to the peer wait for it.
            let mut state = self.peer_state.lock().await;
            if state.skip_until.is_some_and(|until| Instant::now() < until) {
                state.missed = true;
                let skipped =
                    std::io::Error::new(std::io::ErrorKind::NotConnected, "skipped: it failed a moment ago");
                return (Err(RedisError::from(skipped)), true);
            }
            state.skip_until = None;
            if state.missed {
                match self.clear_prefix().await {
                    Ok(keys) => {
                        tracing::warn!(peer = %self.label, keys, "a peer data center's redis is reached again: cleared what it held, as it missed writes");
                        state.missed = false;
                    }
                    Err(e) => {
                        state.skip_until = Some(Instant::now() + self.peer_retry);
                        return (Err(e), false);
                    }
                }
            }
        }
        let result = op(self.clone()).await;
        if result.is_err() {
            let mut state = self.peer_state.lock().await;
            state.missed = true;
            state.skip_until = Some(Instant::now() + self.peer_retry);
        }
        (result, false)
    }

    /// Delete every key under the prefix (SCAN and UNLINK, in batches); returns how
    /// many.
    async fn clear_prefix(&self) -> Result<u64, RedisError> {
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let pattern = &pattern;
            let (next, keys): (u64, Vec<String>) = self
                .run(|mut c| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            if !keys.is_empty() {
                let n = keys.len() as u64;
                self.run(
                    |mut c| async move { redis::cmd("UNLINK").arg(&keys).query_async::<u64>(&mut c).await },
                )
                .await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// The shared connection (a cheap clone), dialing a new one if the last broke.
    pub async fn conn(&self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(c) = self.current.lock().expect("redis slot poisoned").clone() {
            return Ok(c);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(c) = self.current.lock().expect("redis slot poisoned").clone() {
            return Ok(c);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let dial = self.client.get_multiplexed_async_connection_with_config(&config);
        let conn = match tokio::time::timeout(self.timeout, dial).await {
            Ok(result) => result?,
            Err(_) => return Err(timed_out("accept a connection", self.timeout)),
        };
        *self.current.lock().expect("redis slot poisoned") = Some(conn.clone());
        Ok(conn)
    }

    /// The client, to open dedicated connections (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The prefix of this deployment's keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `prefix + key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Run a command on the shared connection within the timeout. A connection-level
    /// failure (reset, refused, timed out) drops the connection so the next command
    /// dials again.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, RedisError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let result = match self.conn().await {
            Ok(conn) => match tokio::time::timeout(self.timeout, command(conn)).await {
                Ok(result) => result,
                Err(_) => Err(timed_out("answer", self.timeout)),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = &result
            && (e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout())
        {
            self.current.lock().expect("redis slot poisoned").take();
        }
        result
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| ()) })
            .await
    }
}
