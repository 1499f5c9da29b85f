//! The `[database]` section of a process's configuration: how to reach the
//! shards, its defaults, and the checks done before anything connects.

use std::str::FromStr;
use std::time::Duration;

use crate::cluster;

/// How to reach the shards (the `[database]` section of a process's configuration).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// One PostgreSQL connection URL per shard, in shard order: each shard's
    /// (initial) primary. Its user, password and database name are also used for
    /// every server a cluster map names for that shard.
    pub shards: Vec<String>,
    /// Static replica URLs per shard (in shard order; shards may be left out at
    /// the end), for deployments without a controller.
    #[serde(default)]
    pub replicas: Vec<Vec<String>>,
    /// Where the controller publishes the cluster map (`http://.../cluster`); when
    /// set, the map replaces `shards` and `replicas` as soon as it is fetched and
    /// is followed from then on.
    #[serde(default)]
    pub cluster_url: Option<String>,
    /// A replica further behind its primary than this does not serve reads.
    #[serde(default = "default_max_replica_lag_ms")]
    pub max_replica_lag_ms: u64,
    /// Connections per server pool.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Connections each server's pool opens as soon as the server is known, and
    /// keeps: a new PostgreSQL connection costs the server a forked backend and an
    /// authentication (about 6 ms of its CPU, 2 more of ours on this machine), so
    /// a process that opened them only when a burst asked for them spent its first
    /// seconds under load making connections (docs/BENCHMARKS.md, cold start).
    /// By default all of `pool_size` (a fixed-size pool); capped at it; 0 opens
    /// connections only on demand.
    #[serde(default)]
    pub pool_warm: Option<usize>,
    /// How long a query waits for a pooled connection (or a new one) before
    /// failing, in milliseconds.
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// With a cluster map to follow: how long a write waits for its shard to have
    /// a reachable primary again (a failover or switchover under way) before it
    /// fails, retryably, in milliseconds. Nothing is sent before that: a write
    /// whose connection could not be opened is sent to the new primary.
    #[serde(default = "default_primary_wait_ms")]
    pub primary_wait_ms: u64,
}

fn default_primary_wait_ms() -> u64 {
    3000
}

fn default_pool_size() -> usize {
    8
}

fn default_acquire_timeout_ms() -> u64 {
    2000
}

fn default_max_replica_lag_ms() -> u64 {
    1000
}

/// A configuration the data layer cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No shard was given.
    #[error("at least one shard URL is needed")]
    NoShards,
    /// A URL could not be parsed.
    #[error("shard {index}: bad PostgreSQL URL: {message}")]
    BadUrl {
        /// The shard's position in the list.
        index: usize,
        /// The parser's complaint.
        message: String,
    },
    /// A replica URL could not be parsed.
    #[error("database.replicas: shard {shard}, replica {replica}: bad PostgreSQL URL: {message}")]
    BadReplicaUrl {
        /// The shard's position.
        shard: usize,
        /// The replica's position in the shard's list.
        replica: usize,
        /// The parser's complaint.
        message: String,
    },
    /// More replica lists than shards.
    #[error("database.replicas lists {replicas} shards but database.shards only {shards}")]
    TooManyReplicaLists {
        /// Replica lists given.
        replicas: usize,
        /// Shards given.
        shards: usize,
    },
    /// The cluster URL is not an http(s) URL.
    #[error("database.cluster_url: {0}")]
    BadClusterUrl(String),
    /// The pool size is zero.
    #[error("pool_size must be at least 1")]
    EmptyPool,
    /// Building a pool failed.
    #[error("shard {index}: {message}")]
    Pool {
        /// The shard's position in the list.
        index: usize,
        /// What went wrong.
        message: String,
    },
}

impl DataConfig {
    /// A configuration for these shard URLs, every other setting at its default.
    pub fn new(shards: Vec<String>) -> DataConfig {
        DataConfig {
            shards,
            replicas: Vec::new(),
            cluster_url: None,
            max_replica_lag_ms: default_max_replica_lag_ms(),
            pool_size: default_pool_size(),
            pool_warm: None,
            acquire_timeout_ms: default_acquire_timeout_ms(),
            primary_wait_ms: default_primary_wait_ms(),
        }
    }

    /// How long a query waits for a connection.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }

    /// Check the configuration without connecting anywhere.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.shards.is_empty() {
            return Err(ConfigError::NoShards);
        }
        if self.pool_size == 0 {
            return Err(ConfigError::EmptyPool);
        }
        if self.acquire_timeout_ms == 0 {
            return Err(ConfigError::Pool {
                index: 0,
                message: "acquire_timeout_ms must be positive".into(),
            });
        }
        cluster::Connector::new(self)?;
        if self.replicas.len() > self.shards.len() {
            return Err(ConfigError::TooManyReplicaLists {
                replicas: self.replicas.len(),
                shards: self.shards.len(),
            });
        }
        for (shard, urls) in self.replicas.iter().enumerate() {
            for (replica, url) in urls.iter().enumerate() {
                tokio_postgres::Config::from_str(url).map_err(|e| ConfigError::BadReplicaUrl {
                    shard,
                    replica,
                    message: e.to_string(),
                })?;
            }
        }
        self.cluster_url()?;
        Ok(())
    }

    pub(crate) fn cluster_url(&self) -> Result<Option<reqwest::Url>, ConfigError> {
        let Some(raw) = &self.cluster_url else { return Ok(None) };
        let url =
            reqwest::Url::parse(raw).map_err(|e| ConfigError::BadClusterUrl(format!("{raw:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ConfigError::BadClusterUrl(format!("{raw:?} is not an http(s) URL with a host")));
        }
        Ok(Some(url))
    }
}
