//! A load balancer's configuration: read from TOML, validated before any port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use settings::invalid;

/// A configuration that cannot run.
pub type ConfigError = settings::SettingsError;

/// Everything a load balancer needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbConfig {
    /// The public HTTP listener (HTTP/1.1, and HTTP/2 in cleartext with prior
    /// knowledge). Port 0 binds a free port (`Running::listen` says which).
    pub listen: SocketAddr,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics` and `/admin/backends`.
    /// Kept off the public port so that no client can reach the admin API through it.
    pub admin: SocketAddr,
    /// The web servers at start; the admin API replaces the list at runtime.
    #[serde(default)]
    pub backends: Vec<SocketAddr>,
    /// How a backend is picked for each request.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Proxy threads, each running a single-threaded runtime of its own
    /// ([`crate::listener`]); a connection stays on one of them.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Active health checks.
    #[serde(default)]
    pub health: HealthSection,
    /// Passive outlier ejection.
    #[serde(default)]
    pub outlier: OutlierSection,
    /// Talking to the backends.
    #[serde(default)]
    pub upstream: UpstreamSection,
    /// Protections against clients.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Per-client rate limiting.
    #[serde(default)]
    pub rate_limit: RateLimitSection,
    /// The bearer token the `/admin` routes require (`Authorization: Bearer
    /// TOKEN`; at least 16 characters); the probes stay open. Absent: the admin
    /// routes are open to whoever reaches the admin address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// HTTPS at the public entry. With it, `listen` answers every request with a
    /// redirect to HTTPS (308); without it, `listen` serves the app in plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
}

/// HTTPS: where it listens, the certificate and key files, HSTS.
///
/// The files are read, and checked to belong together, before any port is bound
/// (`crate::start`); `POST /admin/tls/reload` (or SIGHUP to `millions lb`) reads
/// them again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The HTTPS listener (HTTP/1.1 and HTTP/2, chosen by ALPN). Port 0 binds a
    /// free port (`Running::tls` says which).
    pub listen: SocketAddr,
    /// The certificate chain, PEM, the server's certificate first.
    pub cert: PathBuf,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `Strict-Transport-Security: max-age` in seconds on every answer over
    /// HTTPS (0: no header): browsers then use HTTPS only for the host that long.
    #[serde(default = "default_hsts_max_age")]
    pub hsts_max_age_secs: u64,
}

/// One year, the usual HSTS lifetime.
fn default_hsts_max_age() -> u64 {
    365 * 24 * 3600
}

impl TlsSection {
    /// HTTPS on `listen` with the certificate chain and key in these files.
    pub fn new(listen: SocketAddr, cert: PathBuf, key: PathBuf) -> TlsSection {
        TlsSection { listen, cert, key, hsts_max_age_secs: default_hsts_max_age() }
    }
}

fn default_threads() -> usize {
    2
}

/// How a backend is picked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Each usable backend in turn.
    #[default]
    RoundRobin,
    /// Power of two choices: of two random usable backends, the one with the lower
    /// peak-EWMA latency × (requests in flight + 1).
    LeastRequest,
}

/// Active health checks: `GET <path>` on every backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// The path probed (a web server's readiness).
    pub path: String,
    /// Milliseconds between probes of a backend.
    pub interval_ms: u64,
    /// Milliseconds a probe may take before it counts as failed.
    pub timeout_ms: u64,
    /// Consecutive passing probes that make an unhealthy backend healthy.
    pub healthy_threshold: u32,
    /// Consecutive failing probes that make a healthy backend unhealthy.
    pub unhealthy_threshold: u32,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            path: "/readyz".into(),
            interval_ms: 1000,
            timeout_ms: 1000,
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }
}

/// Passive outlier ejection from live traffic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierSection {
    /// Consecutive 5xx answers or connection failures that eject a backend (0: never).
    pub consecutive_failures: u32,
    /// The first ejection's length in milliseconds; the n-th lasts n times as long.
    pub base_ejection_ms: u64,
    /// The longest ejection in milliseconds.
    pub max_ejection_ms: u64,
    /// At most this share of the backends (percent, at least one backend) is ejected at once.
    pub max_ejected_percent: u32,
    /// Below this share of usable backends (percent), every backend is used
    /// (panic mode): a sick fleet is better than none.
    pub panic_below_percent: u32,
}

impl Default for OutlierSection {
    fn default() -> Self {
        OutlierSection {
            consecutive_failures: 5,
            base_ejection_ms: 5000,
            max_ejection_ms: 60_000,
            max_ejected_percent: 50,
            panic_below_percent: 50,
        }
    }
}

/// Talking to the backends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSection {
    /// Milliseconds to open a connection to a backend.
    pub connect_timeout_ms: u64,
    /// Milliseconds a backend may stay silent while answering, or stalled while
    /// taking a request (each read and each write waits at most this long).
    pub read_timeout_ms: u64,
    /// Seconds an idle kept-alive backend connection stays pooled.
    pub idle_timeout_secs: u64,
    /// Other backends tried after a failure that allows a retry.
    pub max_retries: usize,
    /// Idle connections kept to each backend (over all proxy threads; HTTP/1 and
    /// HTTP/2 clients' requests each have their own).
    pub keepalive_pool_size: usize,
    /// The address backend connections come from (none: the kernel's choice,
    /// 127.0.0.1 for every loopback backend). A node's own address lets the web
    /// servers trust `X-Forwarded-For` from exactly their load balancers.
    pub source_ip: Option<std::net::IpAddr>,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            connect_timeout_ms: 1000,
            read_timeout_ms: 60_000,
            idle_timeout_secs: 60,
            max_retries: 2,
            keepalive_pool_size: 1024,
            source_ip: None,
        }
    }
}

/// Protections against clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Milliseconds from a request's first byte to the end of its header (slowloris).
    pub header_timeout_ms: u64,
    /// Seconds a client connection may stay silent: idle between requests, or
    /// stalled while sending a body or taking an answer (like HAProxy's
    /// `timeout client`).
    pub idle_timeout_secs: u64,
    /// Largest request line plus headers, in bytes (431 above).
    pub max_header_bytes: usize,
    /// Largest request body, in bytes (413 above). Photos are up to 10 MiB plus
    /// multipart framing.
    pub max_body_bytes: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            header_timeout_ms: 10_000,
            idle_timeout_secs: 60,
            max_header_bytes: 32 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Per-client (per source IP) token buckets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    /// Sustained requests per second per client (0: no limit).
    pub per_second: u32,
    /// Requests a client may send in a burst above the sustained rate.
    pub burst: u32,
}

impl LbConfig {
    /// Read and validate a TOML file.
    pub fn load(path: &Path) -> Result<LbConfig, ConfigError> {
        settings::load(path)
    }

    /// Parse and validate TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<LbConfig, ConfigError> {
        settings::parse(text, origin)
    }

    /// The configuration as TOML (what `millions control` writes).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("an LbConfig always serializes")
    }

    /// A configuration with every default, for `listen`, `admin` and `backends`.
    pub fn new(listen: SocketAddr, admin: SocketAddr, backends: Vec<SocketAddr>) -> LbConfig {
        LbConfig {
            listen,
            admin,
            backends,
            algorithm: Algorithm::default(),
            threads: default_threads(),
            health: HealthSection::default(),
            outlier: OutlierSection::default(),
            upstream: UpstreamSection::default(),
            limits: LimitsSection::default(),
            rate_limit: RateLimitSection::default(),
            admin_token: None,
            tls: None,
        }
    }
}

impl settings::Validate for LbConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen == self.admin && self.listen.port() != 0 {
            return Err(invalid("admin", "must differ from listen"));
        }
        if let Some(token) = &self.admin_token {
            guard::check(token).map_err(|why| invalid("admin_token", why))?;
        }
        if !(1..=256).contains(&self.threads) {
            return Err(invalid("threads", "must be between 1 and 256"));
        }
        for (i, b) in self.backends.iter().enumerate() {
            if self.backends[..i].contains(b) {
                return Err(invalid("backends", format!("{b} is listed twice")));
            }
        }
        let h = &self.health;
        if !h.path.starts_with('/') {
            return Err(invalid("health.path", "must start with /"));
        }
        if h.interval_ms == 0 || h.timeout_ms == 0 {
            return Err(invalid("health.interval_ms", "interval_ms and timeout_ms must be positive"));
        }
        if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
            return Err(invalid("health.healthy_threshold", "both thresholds must be at least 1"));
        }
        let o = &self.outlier;
        if o.base_ejection_ms == 0 || o.max_ejection_ms < o.base_ejection_ms {
            return Err(invalid("outlier.base_ejection_ms", "must be positive and at most max_ejection_ms"));
        }
        if o.max_ejected_percent > 100 {
            return Err(invalid("outlier.max_ejected_percent", "is a percentage: 0 to 100"));
        }
        if o.panic_below_percent > 100 {
            return Err(invalid("outlier.panic_below_percent", "is a percentage: 0 to 100"));
        }
        let u = &self.upstream;
        if u.connect_timeout_ms == 0 || u.read_timeout_ms == 0 {
            return Err(invalid("upstream.connect_timeout_ms", "timeouts must be positive"));
        }
        if u.max_retries > 10 {
            return Err(invalid("upstream.max_retries", "must be at most 10"));
        }
        let l = &self.limits;
        if l.header_timeout_ms == 0 {
            return Err(invalid("limits.header_timeout_ms", "must be positive"));
        }
        if l.idle_timeout_secs == 0 {
            return Err(invalid("limits.idle_timeout_secs", "must be positive"));
        }
        if !(1024..=1024 * 1024).contains(&l.max_header_bytes) {
            return Err(invalid("limits.max_header_bytes", "must be between 1 KiB and 1 MiB"));
        }
        if self.rate_limit.per_second > 0 && self.rate_limit.burst == 0 {
            return Err(invalid("rate_limit.burst", "must be at least 1 when per_second is set"));
        }
        if let Some(tls) = &self.tls {
            if tls.listen.port() != 0 && (tls.listen == self.listen || tls.listen == self.admin) {
                return Err(invalid("tls.listen", "must differ from listen and admin"));
            }
            if tls.cert.as_os_str().is_empty() || tls.key.as_os_str().is_empty() {
                return Err(invalid("tls.cert", "cert and key must name files"));
            }
            if tls.hsts_max_age_secs > 2 * 365 * 24 * 3600 {
                return Err(invalid("tls.hsts_max_age_secs", "must be at most two years (63072000)"));
            }
        }
        Ok(())
    }
}

impl LbConfig {
    /// Time between probes of a backend.
    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health.interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:8000"
admin = "127.0.0.1:8001"
backends = ["127.0.0.1:8080", "127.0.0.1:8081"]
"#;

    #[test]
    fn defaults_and_round_trip() {
        let c = LbConfig::parse(GOOD, "t").unwrap();
        assert_eq!(c.algorithm, Algorithm::RoundRobin);
        assert_eq!(c.health.path, "/readyz");
        let again = LbConfig::parse(&c.to_toml(), "again").unwrap();
        assert_eq!(again.backends, c.backends);
        let c = LbConfig::parse(&format!("algorithm = \"least_request\"\n{GOOD}"), "t").unwrap();
        assert_eq!(c.algorithm, Algorithm::LeastRequest);
    }

    #[test]
    fn bad_values_are_named() {
        for (text, field) in [
            (GOOD.replace("127.0.0.1:8000", "127.0.0.1"), "listen"),
            (GOOD.replace("8001", "8000"), "admin"),
            (GOOD.replace("8081", "8080"), "listed twice"),
            (format!("algorithm = \"random\"\n{GOOD}"), "unknown variant"),
            (format!("{GOOD}[health]\npath = \"readyz\"\n"), "health.path"),
            (format!("{GOOD}[health]\nunhealthy_threshold = 0\n"), "thresholds"),
            (format!("{GOOD}[outlier]\nmax_ejected_percent = 101\n"), "outlier.max_ejected_percent"),
            (format!("{GOOD}[outlier]\nbase_ejection_ms = 10\nmax_ejection_ms = 5\n"), "base_ejection_ms"),
            (format!("{GOOD}[limits]\nmax_header_bytes = 10\n"), "limits.max_header_bytes"),
            (format!("{GOOD}[rate_limit]\nper_second = 5\n"), "rate_limit.burst"),
            (format!("admin_token = \"short\"\n{GOOD}"), "admin_token"),
            (format!("{GOOD}[limits]\nslow = 1\n"), "unknown field"),
            (format!("{GOOD}[tls]\nlisten = \"127.0.0.1:8000\"\ncert = \"c\"\nkey = \"k\"\n"), "tls.listen"),
            (format!("{GOOD}[tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"\"\nkey = \"k\"\n"), "tls.cert"),
            (
                format!(
                    "{GOOD}[tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"c\"\nkey = \"k\"\nhsts_max_age_secs = 99999999\n"
                ),
                "tls.hsts_max_age_secs",
            ),
            (format!("{GOOD}[tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"c\"\n"), "missing field `key`"),
        ] {
            let err = LbConfig::parse(&text, "t").unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
