//! One shared Redis connection per process, replaced when it breaks.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

fn default_prefix() -> String {
    "m:".into()
}

fn default_timeout_ms() -> u64 {
    1000
}

impl RedisConfig {
    /// Check the settings without connecting; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        let url = &self.url;
        let Some(rest) = url.strip_prefix("redis://").or_else(|| url.strip_prefix("rediss://")) else {
            return Err("redis.url must start with redis://".into());
        };
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let hostport = host.split('/').next().unwrap_or("");
        if hostport.is_empty() {
            return Err("redis.url has no host".into());
        }
        if let Some((_, port)) = hostport.rsplit_once(':') {
            port.parse::<u16>().map_err(|_| format!("redis.url has a bad port {port:?}"))?;
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

/// A Redis error (connection, protocol or command).
pub type RedisError = redis::RedisError;

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
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("prefix", &self.prefix).finish()
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
        let client = redis::Client::open(url)?;
        let redis = Redis {
            current: Arc::default(),
            dialing: Arc::default(),
            client,
            prefix: prefix.to_owned(),
            timeout,
        };
        redis.conn().await?;
        Ok(redis)
    }

    /// Connect as `config` says.
    pub async fn connect_with(config: &RedisConfig) -> Result<Redis, RedisError> {
        Redis::connect(&config.url, &config.prefix, config.timeout()).await
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
