//! An edge's configuration: read from TOML, validated before any port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use settings::invalid;

use crate::store::MAX_OBJECT_BYTES;

/// A configuration that cannot run.
pub type ConfigError = settings::SettingsError;

/// Everything an edge needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdnConfig {
    /// Where clients connect over plain HTTP (HTTP/1.1). Port 0 binds a free
    /// port (`Running::addr` says which).
    pub listen: SocketAddr,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics`, `POST
    /// /admin/purge` and `POST /admin/tls/reload`, kept off the public ports.
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
    /// The origin servers misses, revalidations and passes go to (HTTP/1.1,
    /// cleartext): one address (`origin = "10.0.0.5:8080"`) or a non-empty list
    /// (`origin = ["10.0.0.5:8080", "10.0.0.6:8080"]`, e.g. a DC's web servers),
    /// taken in turn, another tried when connecting fails ([`Origins`]).
    pub origin: Origins,
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
    /// The path prefixes this edge serves (`["/media/"]` in a topology: the
    /// photos, not the app's pages or its web servers' probes and metrics); a
    /// request for any other path is answered 404 and never reaches the origin.
    /// Empty (the default): every path, a general HTTP cache.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Whether the request's `Host` is part of the cache key (the default: an
    /// edge in front of several sites keeps their objects apart). Off when the
    /// edge fronts one site under several names or addresses — its IP over HTTP
    /// and HTTPS, `cdn.` in the zone — so an object is stored once.
    #[serde(default = "default_host_in_key")]
    pub host_in_key: bool,
    /// How long a stop keeps serving after `/readyz` turned 503, so that
    /// whoever probes it (a topology's web servers, which name healthy edges in
    /// their pages) stops sending clients here before the listeners close. 0
    /// (the default): none.
    #[serde(default)]
    pub stop_delay_ms: u64,
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
    /// HTTPS on a second public listener; absent, the edge serves plain HTTP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
    /// A disk tier under the memory tier, kept across restarts; absent, the
    /// edge keeps objects in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskSection>,
}

/// The origin servers: one address or several.
///
/// TOML takes a string (`"ip:port"`) or an array of them; an empty array is
/// refused by validation. Written back as a string when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins(Vec<SocketAddr>);

impl Origins {
    /// These addresses (validation refuses an empty or repeating list).
    pub fn new(addrs: Vec<SocketAddr>) -> Origins {
        Origins(addrs)
    }

    /// The addresses, in the configured order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.0
    }
}

impl From<SocketAddr> for Origins {
    fn from(addr: SocketAddr) -> Origins {
        Origins(vec![addr])
    }
}

impl From<Vec<SocketAddr>> for Origins {
    fn from(addrs: Vec<SocketAddr>) -> Origins {
        Origins(addrs)
    }
}

impl std::fmt::Display for Origins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

impl Serialize for Origins {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Origins {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Origins, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Origins;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an address \"ip:port\" or an array of them")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Origins, E> {
                v.parse().map(|a| Origins(vec![a])).map_err(|_| E::custom(format!("{v:?} is not ip:port")))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Origins, A::Error> {
                let mut addrs = Vec::new();
                while let Some(v) = seq.next_element::<String>()? {
                    let addr =
                        v.parse().map_err(|_| serde::de::Error::custom(format!("{v:?} is not ip:port")))?;
                    addrs.push(addr);
                }
                Ok(Origins(addrs))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// HTTPS at the edge: where it listens and the certificate and key files; the
/// same shape as the load balancer's `[tls]` without HSTS (whether browsers must
/// use HTTPS is the app's host's policy, set by the app; the edge passes on
/// whatever `Strict-Transport-Security` its origin sends).
///
/// The files are read, and checked to belong together, before any port is bound
/// ([`crate::start`]); `POST /admin/tls/reload` reads them again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The HTTPS listener (HTTP/2 or HTTP/1.1, chosen by ALPN). Port 0 binds a
    /// free port (`Running::tls` says which).
    pub listen: SocketAddr,
    /// The certificate chain, PEM, the server's certificate first.
    pub cert: PathBuf,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The disk tier ([`crate::disk`]): a directory of its own and a byte budget.
///
/// The directory is created if missing; one that exists but is not a directory,
/// or cannot be written, is refused before any port is bound. Its files are the
/// edge's alone: one edge per directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSection {
    /// Where the objects are kept, one file each.
    pub dir: PathBuf,
    /// Bytes the files may take (headers, metadata and bodies); the least
    /// recently used are removed beyond it. At least 1 MiB and at least
    /// `max_object_bytes`.
    pub bytes: u64,
}

fn default_host_in_key() -> bool {
    true
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

    /// A configuration with every default, for `listen`, `admin` and `origin`
    /// (one address or several), without HTTPS.
    pub fn new(listen: SocketAddr, admin: SocketAddr, origin: impl Into<Origins>) -> CdnConfig {
        CdnConfig {
            listen,
            admin,
            admin_token: None,
            threads: default_threads(),
            origin: origin.into(),
            memory_bytes: default_memory_bytes(),
            max_object_bytes: default_max_object_bytes(),
            typical_object_bytes: default_typical_object_bytes(),
            coalesce_timeout_ms: default_coalesce_timeout_ms(),
            max_origin_fetches: default_max_origin_fetches(),
            origin_queue_ms: default_origin_queue_ms(),
            max_request_head_bytes: default_max_request_head_bytes(),
            paths: Vec::new(),
            host_in_key: default_host_in_key(),
            stop_delay_ms: 0,
            origin_connect_timeout_ms: default_origin_connect_timeout_ms(),
            origin_read_timeout_ms: default_origin_read_timeout_ms(),
            max_heuristic_secs: default_max_heuristic_secs(),
            tls: None,
            disk: None,
        }
    }

    /// [`CdnConfig::coalesce_timeout_ms`] as a duration.
    pub fn coalesce_timeout(&self) -> Duration {
        Duration::from_millis(self.coalesce_timeout_ms)
    }
}

impl settings::Validate for CdnConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let origins = self.origin.addrs();
        if origins.is_empty() {
            return Err(invalid(
                "origin",
                "names no origin: give an address \"ip:port\" or a non-empty list",
            ));
        }
        for (i, o) in origins.iter().enumerate() {
            if o.port() == 0 {
                return Err(invalid("origin", format!("{o} needs a port")));
            }
            if *o == self.listen || self.tls.as_ref().is_some_and(|t| t.listen == *o) {
                return Err(invalid(
                    "origin",
                    format!("{o} is the edge's own listener (it would fetch from itself)"),
                ));
            }
            if origins[..i].contains(o) {
                return Err(invalid("origin", format!("{o} is listed twice")));
            }
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
        if let Some(tls) = &self.tls {
            if tls.listen.port() != 0 && (tls.listen == self.listen || tls.listen == self.admin) {
                return Err(invalid("tls.listen", "must differ from listen and admin"));
            }
            if tls.cert.as_os_str().is_empty() || tls.key.as_os_str().is_empty() {
                return Err(invalid("tls.cert", "cert and key must name files"));
            }
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
        if let Some(disk) = &self.disk {
            if disk.dir.as_os_str().is_empty() {
                return Err(invalid("disk.dir", "must name a directory"));
            }
            if disk.bytes < 1 << 20 {
                return Err(invalid("disk.bytes", "must be at least 1 MiB (1048576)"));
            }
            if disk.bytes < self.max_object_bytes {
                return Err(invalid(
                    "disk.bytes",
                    format!("must be at least max_object_bytes ({})", self.max_object_bytes),
                ));
            }
        }
        if !(1..=100_000).contains(&self.max_origin_fetches) {
            return Err(invalid("max_origin_fetches", "must be between 1 and 100000"));
        }
        if !(1024..=1 << 20).contains(&self.max_request_head_bytes) {
            return Err(invalid("max_request_head_bytes", "must be between 1024 and 1048576"));
        }
        if self.stop_delay_ms > 60_000 {
            return Err(invalid("stop_delay_ms", "must be at most 60000 ms"));
        }
        if self.paths.len() > 64 {
            return Err(invalid("paths", "at most 64 prefixes"));
        }
        for prefix in &self.paths {
            let bad = prefix.bytes().any(|b| b.is_ascii_control() || b == b'\\' || b == b' ' || b == b'%');
            if !prefix.starts_with('/') || bad || prefix.split('/').any(|s| s == "." || s == "..") {
                return Err(invalid(
                    "paths",
                    format!(
                        "{prefix:?} is not a path prefix: it starts with /, in one plain spelling (no dot segments, escapes, spaces or backslashes)"
                    ),
                ));
            }
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
