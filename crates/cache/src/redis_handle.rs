//! One shared, self-reconnecting Redis connection per process.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A Redis error (connection, protocol or command).
pub type RedisError = redis::RedisError;

/// A handle to the shared Redis: a multiplexed connection that reconnects by itself,
/// and the key prefix that keeps this deployment's keys apart from others'.
#[derive(Clone)]
pub struct Redis {
    /// Multiplexed, auto-reconnecting connection for commands.
    conn: ConnectionManager,
    /// The client, kept to open pub/sub connections.
    client: redis::Client,
    /// Prepended to every key and channel.
    prefix: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("prefix", &self.prefix).finish()
    }
}

impl Redis {
    /// Connect to `url` (`redis://:password@host:port/`).
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Redis, RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Redis { conn, client, prefix: prefix.to_owned() })
    }

    /// A connection for commands (cheap clone of the multiplexed one).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The client, to open dedicated connections (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// `prefix + key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut c = self.conn();
        redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| ())
    }
}
