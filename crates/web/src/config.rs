//! The web server's configuration: read from TOML, validated before any port is bound.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Everything a web server needs to run. Every address comes from here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The shards.
    pub database: DatabaseConfig,
    /// The shared Redis (sessions, L2 cache, timelines, invalidations).
    pub redis: RedisConfig,
    /// Cache sizes and lifetimes.
    #[serde(default)]
    pub cache: CacheSection,
    /// Home-feed behaviour.
    #[serde(default)]
    pub feed: FeedConfig,
    /// Sessions and cookies.
    #[serde(default)]
    pub sessions: SessionConfig,
    /// Password hashing cost.
    #[serde(default)]
    pub passwords: PasswordConfig,
    /// HTTP limits and shutdown.
    #[serde(default)]
    pub http: HttpConfig,
}

/// How to reach PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// One connection URL per shard, in shard order.
    pub shards: Vec<String>,
    /// Connections per shard.
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// How long a request waits for a connection, in milliseconds.
    #[serde(default = "defaults::acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
}

/// How to reach Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://:password@host:port/`.
    pub url: String,
    /// Prefix of every key and channel, so deployments can share a Redis.
    #[serde(default = "defaults::prefix")]
    pub prefix: String,
    /// Connect and response timeout, in milliseconds.
    #[serde(default = "defaults::redis_timeout_ms")]
    pub timeout_ms: u64,
}

/// Cache sizes and lifetimes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Entries per in-process cache.
    pub l1_capacity: u64,
    /// L1 lifetime in seconds (bounds staleness if an invalidation is lost).
    pub l1_ttl_secs: u64,
    /// Redis lifetime in seconds, before jitter.
    pub l2_ttl_secs: u64,
    /// Relative TTL jitter, 0 to 0.5.
    pub jitter: f64,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection { l1_capacity: 100_000, l1_ttl_secs: 30, l2_ttl_secs: 300, jitter: 0.1 }
    }
}

/// Home-feed behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// Users with at least this many followers are not fanned out on write; their
    /// posts are merged into their followers' feeds at read time.
    pub celebrity_threshold: i64,
    /// Most post ids kept in a cached timeline.
    pub timeline_cap: usize,
    /// Seconds a cached timeline lives since last touched.
    pub timeline_ttl_secs: u64,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig { celebrity_threshold: 10_000, timeline_cap: 800, timeline_ttl_secs: 7 * 24 * 3600 }
    }
}

/// Sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Seconds a session lives.
    pub ttl_secs: u64,
    /// Mark cookies `Secure` (serve over HTTPS).
    pub secure_cookies: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig { ttl_secs: 30 * 24 * 3600, secure_cookies: false }
    }
}

/// argon2id cost. The defaults are OWASP's recommendation (19 MiB, 2 passes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Memory per hash, KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        PasswordConfig { memory_kib: 19_456, iterations: 2, parallelism: 1 }
    }
}

/// HTTP limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take, seconds.
    pub request_timeout_secs: u64,
    /// On shutdown, how long in-flight requests may take to finish, seconds.
    pub shutdown_grace_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { max_body_bytes: 64 * 1024, request_timeout_secs: 30, shutdown_grace_secs: 10 }
    }
}

mod defaults {
    pub fn pool_size() -> usize {
        16
    }
    pub fn acquire_timeout_ms() -> u64 {
        2000
    }
    pub fn prefix() -> String {
        "m:".into()
    }
    pub fn redis_timeout_ms() -> u64 {
        1000
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {field}: {message}")]
    Invalid {
        /// Dotted path of the setting.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, message: message.into() }
}

impl WebConfig {
    /// Read and validate a TOML file.
    pub fn load(path: &Path) -> Result<WebConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        WebConfig::parse(&text, &path.display().to_string())
    }

    /// Parse and validate TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<WebConfig, ConfigError> {
        let config: WebConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: origin.to_owned(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Check every value without touching the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.data_config().validate().map_err(|e| invalid("database.shards", e.to_string()))?;
        if self.database.acquire_timeout_ms == 0 {
            return Err(invalid("database.acquire_timeout_ms", "must be positive"));
        }
        redis_url_ok(&self.redis.url).map_err(|m| invalid("redis.url", m))?;
        if self.redis.timeout_ms == 0 {
            return Err(invalid("redis.timeout_ms", "must be positive"));
        }
        if self.cache.l1_capacity == 0 {
            return Err(invalid("cache.l1_capacity", "must be positive"));
        }
        if self.cache.l1_ttl_secs == 0 || self.cache.l2_ttl_secs == 0 {
            return Err(invalid("cache.l1_ttl_secs", "cache lifetimes must be positive"));
        }
        if !(0.0..=0.5).contains(&self.cache.jitter) {
            return Err(invalid("cache.jitter", "must be between 0 and 0.5"));
        }
        if self.feed.celebrity_threshold < 1 {
            return Err(invalid("feed.celebrity_threshold", "must be at least 1"));
        }
        if !(1..=10_000).contains(&self.feed.timeline_cap) {
            return Err(invalid("feed.timeline_cap", "must be between 1 and 10000"));
        }
        if self.feed.timeline_ttl_secs == 0 {
            return Err(invalid("feed.timeline_ttl_secs", "must be positive"));
        }
        if self.sessions.ttl_secs < 60 {
            return Err(invalid("sessions.ttl_secs", "must be at least 60"));
        }
        let p = &self.passwords;
        argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None)
            .map_err(|e| invalid("passwords", e.to_string()))?;
        if self.http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        if self.http.request_timeout_secs == 0 {
            return Err(invalid("http.request_timeout_secs", "must be positive"));
        }
        Ok(())
    }

    /// The data layer's part of the configuration.
    pub fn data_config(&self) -> data::DataConfig {
        data::DataConfig {
            shards: self.database.shards.clone(),
            pool_size: self.database.pool_size,
            acquire_timeout: Duration::from_millis(self.database.acquire_timeout_ms),
        }
    }

    /// The caches' part of the configuration.
    pub fn cache_config(&self) -> cache::CacheConfig {
        cache::CacheConfig {
            l1_capacity: self.cache.l1_capacity,
            l1_ttl: Duration::from_secs(self.cache.l1_ttl_secs),
            l2_ttl: Duration::from_secs(self.cache.l2_ttl_secs),
            jitter: self.cache.jitter,
        }
    }
}

fn redis_url_ok(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err("must start with redis://".into());
    }
    // The redis crate parses lazily on connect; check the shape here.
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = host.split('/').next().unwrap_or("");
    if hostport.is_empty() {
        return Err("has no host".into());
    }
    if let Some((_, port)) = hostport.rsplit_once(':') {
        port.parse::<u16>().map_err(|_| format!("bad port {port:?}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:0"
[database]
shards = ["postgres://u:p@127.0.0.1:5432/a", "postgres://u:p@127.0.0.1:5432/b"]
[redis]
url = "redis://:pw@127.0.0.1:6379/"
"#;

    #[test]
    fn a_minimal_file_parses_with_defaults() {
        let c = WebConfig::parse(GOOD, "test").unwrap();
        assert_eq!(c.database.shards.len(), 2);
        assert_eq!(c.feed.timeline_cap, 800);
        assert_eq!(c.passwords.memory_kib, 19_456);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let cases = [
            (GOOD.replace("listen", "lisen"), "unknown field"),
            (GOOD.replace("127.0.0.1:0", "nowhere"), "listen"),
            (
                GOOD.replace(
                    r#"shards = ["postgres://u:p@127.0.0.1:5432/a", "postgres://u:p@127.0.0.1:5432/b"]"#,
                    "shards = []",
                ),
                "at least one shard",
            ),
            (GOOD.replace("redis://:pw@127.0.0.1:6379/", "http://x"), "redis.url"),
            (GOOD.replace("redis://:pw@127.0.0.1:6379/", "redis://:pw@127.0.0.1:99999/"), "bad port"),
            (format!("{GOOD}[feed]\ncelebrity_threshold = 0\n"), "celebrity_threshold"),
            (format!("{GOOD}[cache]\njitter = 2.0\n"), "jitter"),
            (format!("{GOOD}[passwords]\nmemory_kib = 1\n"), "passwords"),
        ];
        for (text, expected) in cases {
            let err = WebConfig::parse(&text, "test").unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should mention {expected:?}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = WebConfig::load(Path::new("/nonexistent/web.toml")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/web.toml"), "{err}");
    }
}
