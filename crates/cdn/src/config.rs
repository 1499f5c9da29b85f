//! An edge's configuration: read from TOML, validated before any port is bound.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use settings::invalid;

use crate::store::MAX_OBJECT_BYTES;

/// A configuration that cannot run.
pub type ConfigError = settings::SettingsError;

/// Everything an edge needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdnConfig {
    /// Where clients connect (HTTP/1.1). Port 0 binds a free port
    /// (`Running::addr` says which).
    pub listen: SocketAddr,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics` and `POST
    /// /admin/purge`, kept off the public port.
    pub admin: SocketAddr,
    /// The bearer token the `/admin` routes require (at least 16 characters); the
    /// probes stay open. Absent: the admin routes are open to whoever reaches the
    /// admin address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// Serving threads, each a single-threaded runtime of its own; a connection
    /// stays on one from accept to close.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// The origin every miss and revalidation goes to (HTTP/1.1, cleartext): in a
    /// topology the DC's load balancer; any HTTP server otherwise.
    pub origin: SocketAddr,
    /// Bytes the memory tier may hold, headers and bodies (TinyUFO admission and
    /// eviction beyond it).
    #[serde(default = "default_memory_bytes")]
    pub memory_bytes: u64,
    /// The largest response kept; a larger one is passed through, uncached.
    #[serde(default = "default_max_object_bytes")]
    pub max_object_bytes: u64,
    /// The size of a typical object, for sizing the store's index.
    #[serde(default = "default_typical_object_bytes")]
    pub typical_object_bytes: u64,
    /// How long a request waits for another request's fetch of the same object
    /// (request coalescing) before it fetches for itself.
    #[serde(default = "default_coalesce_timeout_ms")]
    pub coalesce_timeout_ms: u64,
    /// Origin fetches in flight at most (misses, revalidations, passes); a
    /// request waits up to `origin_queue_ms` for one, then gets a 503.
    #[serde(default = "default_max_origin_fetches")]
    pub max_origin_fetches: usize,
    /// How long a request waits for an origin fetch slot.
    #[serde(default = "default_origin_queue_ms")]
    pub origin_queue_ms: u64,
    /// The largest request head (target and headers) accepted; larger gets 431.
    #[serde(default = "default_max_request_head_bytes")]
    pub max_request_head_bytes: usize,
    /// Connecting to the origin.
    #[serde(default = "default_origin_connect_timeout_ms")]
    pub origin_connect_timeout_ms: u64,
    /// Waiting for the origin's response, and between its reads.
    #[serde(default = "default_origin_read_timeout_ms")]
    pub origin_read_timeout_ms: u64,
    /// The longest heuristic freshness (RFC 9111 §4.2.2) given to a response
    /// without explicit freshness but with `Last-Modified`: a tenth of its age,
    /// at most this. 0 turns heuristic freshness off.
    #[serde(default = "default_max_heuristic_secs")]
    pub max_heuristic_secs: u64,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
fn default_memory_bytes() -> u64 {
    256 << 20
}
fn default_max_object_bytes() -> u64 {
    16 << 20
}
fn default_typical_object_bytes() -> u64 {
    32 << 10
}
fn default_coalesce_timeout_ms() -> u64 {
    5_000
}
fn default_max_origin_fetches() -> usize {
    256
}
fn default_origin_queue_ms() -> u64 {
    2_000
}
fn default_max_request_head_bytes() -> usize {
    32 << 10
}
fn default_origin_connect_timeout_ms() -> u64 {
    2_000
}
fn default_origin_read_timeout_ms() -> u64 {
    10_000
}
fn default_max_heuristic_secs() -> u64 {
    86_400
}

impl CdnConfig {
    /// Read and validate a TOML file.
    pub fn load(path: &Path) -> Result<CdnConfig, ConfigError> {
        settings::load(path)
    }

    /// Parse and validate TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<CdnConfig, ConfigError> {
        settings::parse(text, origin)
    }

    /// The configuration as TOML (what the controller writes).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a CdnConfig always serializes")
    }

    /// A configuration with every default, for `listen`, `admin` and `origin`.
    pub fn new(listen: SocketAddr, admin: SocketAddr, origin: SocketAddr) -> CdnConfig {
        CdnConfig {
            listen,
            admin,
            admin_token: None,
            threads: default_threads(),
            origin,
            memory_bytes: default_memory_bytes(),
            max_object_bytes: default_max_object_bytes(),
            typical_object_bytes: default_typical_object_bytes(),
            coalesce_timeout_ms: default_coalesce_timeout_ms(),
            max_origin_fetches: default_max_origin_fetches(),
            origin_queue_ms: default_origin_queue_ms(),
            max_request_head_bytes: default_max_request_head_bytes(),
            origin_connect_timeout_ms: default_origin_connect_timeout_ms(),
            origin_read_timeout_ms: default_origin_read_timeout_ms(),
            max_heuristic_secs: default_max_heuristic_secs(),
        }
    }

    /// [`CdnConfig::coalesce_timeout_ms`] as a duration.
    pub fn coalesce_timeout(&self) -> Duration {
        Duration::from_millis(self.coalesce_timeout_ms)
    }
}

impl settings::Validate for CdnConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen == self.origin {
            return Err(invalid("origin", "must differ from listen (the edge would fetch from itself)"));
        }
        if self.listen == self.admin && self.listen.port() != 0 {
            return Err(invalid("admin", "must differ from listen"));
        }
        if let Some(token) = &self.admin_token {
            guard::check(token).map_err(|why| invalid("admin_token", why))?;
        }
        if !(1..=256).contains(&self.threads) {
            return Err(invalid("threads", "must be between 1 and 256"));
        }
        if self.origin.port() == 0 {
            return Err(invalid("origin", "needs a port"));
        }
        if self.memory_bytes < 1 << 20 {
            return Err(invalid("memory_bytes", "must be at least 1 MiB"));
        }
        if self.max_object_bytes == 0 || self.max_object_bytes > MAX_OBJECT_BYTES as u64 {
            return Err(invalid("max_object_bytes", format!("must be between 1 and {MAX_OBJECT_BYTES}")));
        }
        if self.max_object_bytes > self.memory_bytes {
            return Err(invalid("max_object_bytes", "must not exceed memory_bytes"));
        }
        if self.typical_object_bytes == 0 || self.typical_object_bytes > self.max_object_bytes {
            return Err(invalid("typical_object_bytes", "must be between 1 and max_object_bytes"));
        }
        if !(1..=100_000).contains(&self.max_origin_fetches) {
            return Err(invalid("max_origin_fetches", "must be between 1 and 100000"));
        }
        if !(1024..=1 << 20).contains(&self.max_request_head_bytes) {
            return Err(invalid("max_request_head_bytes", "must be between 1024 and 1048576"));
        }
        for (field, ms) in [
            ("coalesce_timeout_ms", self.coalesce_timeout_ms),
            ("origin_queue_ms", self.origin_queue_ms),
            ("origin_connect_timeout_ms", self.origin_connect_timeout_ms),
            ("origin_read_timeout_ms", self.origin_read_timeout_ms),
        ] {
            if !(1..=600_000).contains(&ms) {
                return Err(invalid(field, "must be between 1 and 600000 ms"));
            }
        }
        Ok(())
    }
}
