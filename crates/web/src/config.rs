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
    pub database: data::DataConfig,
    /// This DC's Redis (sessions, L2 cache, timelines, invalidations), and in
    /// `peers` the other DCs', which invalidations and timeline writes reach too.
    pub redis: cache::RedisConfig,
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
    /// Limits per client address (logins, signups).
    #[serde(default)]
    pub abuse: AbuseConfig,
    /// Photos: limits, storage, public URLs.
    #[serde(default)]
    pub media: MediaConfig,
    /// Counting the hottest keys, and the copies that protect them.
    #[serde(default)]
    pub hotkeys: HotKeysConfig,
}

/// The hottest keys (`[hotkeys]`): which users' profiles and which posts this
/// server reads most ([`crate::hotkeys`]), exposed in `/metrics` and
/// `/internal/hotkeys`, and the copies that keep a celebrity's read storm off
/// the shared cache and the shards.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotKeysConfig {
    /// How many of the hottest keys of each kind `/metrics` and
    /// `/internal/hotkeys` show (the metrics' label sets are bounded by it).
    pub top_n: usize,
    /// Keys of each kind the summary tracks (Space-Saving counters): more, the
    /// more accurate the top of the list under a long tail; memory is fixed by it.
    pub tracked: usize,
    /// Seconds after which a read counts half: yesterday's celebrity fades.
    pub half_life_secs: u64,
    /// The hottest keys of each kind kept as hot copies and refreshed ahead of
    /// their expiry, so their reads touch neither Redis nor the shards. 0: no
    /// protection (the keys are still counted and shown).
    pub protect: usize,
    /// Least reads per second (the decayed average) a key needs to be protected:
    /// a quiet server protects nothing.
    pub min_rate: f64,
    /// Milliseconds a hot copy is served: what another server's write may take
    /// to show here (writes through this server show at once, and a viewer's own
    /// writes to that viewer at once, wherever they were made).
    pub hot_ttl_ms: u64,
}

impl Default for HotKeysConfig {
    fn default() -> Self {
        HotKeysConfig {
            top_n: 10,
            tracked: 256,
            half_life_secs: 30,
            protect: 16,
            min_rate: 10.0,
            hot_ttl_ms: 1000,
        }
    }
}

impl HotKeysConfig {
    /// Check the values; the message names the bad one.
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100).contains(&self.top_n) {
            return Err(invalid("hotkeys.top_n", "must be between 1 and 100"));
        }
        if !(self.top_n..=65_536).contains(&self.tracked) {
            return Err(invalid("hotkeys.tracked", "must be between hotkeys.top_n and 65536"));
        }
        if !(1..=7 * 86_400).contains(&self.half_life_secs) {
            return Err(invalid("hotkeys.half_life_secs", "must be between 1 and 604800"));
        }
        if self.protect > self.tracked.min(1024) {
            return Err(invalid("hotkeys.protect", "must be at most hotkeys.tracked and at most 1024"));
        }
        if !self.min_rate.is_finite() || self.min_rate < 0.0 {
            return Err(invalid("hotkeys.min_rate", "must be a number of reads per second, 0 or more"));
        }
        if !(200..=10_000).contains(&self.hot_ttl_ms) {
            return Err(invalid("hotkeys.hot_ttl_ms", "must be between 200 and 10000"));
        }
        Ok(())
    }
}

/// Photo uploads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Largest photo upload, bytes.
    pub max_upload_bytes: usize,
    /// Largest photo, in pixels (decompression bombs declare more).
    pub max_pixels: u64,
    /// The object store's folder (shared with the workers).
    pub store_dir: std::path::PathBuf,
    /// Prefix of photo URLs: `/media/` (served by this origin) or a CDN's URL.
    pub public_base: String,
    /// Attempts a photo's processing job gets before it is a dead letter.
    pub max_attempts: i32,
    /// The CDN edges photo URLs point at while they are healthy (`[media.cdn]`);
    /// with none, every photo URL is under `public_base`.
    pub cdn: CdnConfig,
}

/// The CDN edges of the topology (`[media.cdn]`): caching proxies in each data
/// center serving the same `/media/{key}` paths as this origin. Pages run no
/// script, so which edge (or the origin) a photo's URL names is decided here, at
/// render time, from health checks this server runs itself ([`crate::edges`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdnConfig {
    /// This web server's data center: its own edges are preferred (the nearest
    /// cache to the users this DC serves); the other DCs' edges are used only
    /// when none of its own is healthy. None: every edge is equally near.
    pub dc: Option<String>,
    /// How often every edge's `health` URL is probed, milliseconds.
    pub probe_interval_ms: u64,
    /// How long a probe may take before it counts as failed, milliseconds.
    pub probe_timeout_ms: u64,
    /// Failed probes in a row that withdraw a healthy edge (one lost probe is
    /// not an outage worth moving every photo URL for).
    pub unhealthy_after: u32,
    /// Passing probes in a row that (re)admit an edge. Edges start unhealthy:
    /// a page rendered before an edge's first passing probe names the origin.
    pub healthy_after: u32,
    /// The edges (`[[media.cdn.edges]]`), at most 64.
    pub edges: Vec<CdnEdge>,
}

impl Default for CdnConfig {
    fn default() -> Self {
        CdnConfig {
            dc: None,
            probe_interval_ms: 1000,
            probe_timeout_ms: 500,
            unhealthy_after: 2,
            healthy_after: 1,
            edges: Vec::new(),
        }
    }
}

/// One CDN edge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdnEdge {
    /// Its unique name: metrics and logs name it, and rendezvous hashing keys on
    /// it (renaming an edge moves the photos it caches).
    pub name: String,
    /// Its data center (compared with `media.cdn.dc`).
    pub dc: String,
    /// Its public HTTP address, `host:port`: photo URLs on pages served over
    /// HTTP, and over HTTPS when it has no `https`.
    pub http: String,
    /// Its public HTTPS address, `host:port`, if it has one: photo URLs on pages
    /// the load balancer received over HTTPS (no mixed content).
    #[serde(default)]
    pub https: Option<String>,
    /// The URL probed for its health (`http://…`, usually its admin `/readyz`):
    /// any 2xx answer within `probe_timeout_ms` passes.
    pub health: String,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            max_upload_bytes: 10 * 1024 * 1024,
            max_pixels: 40_000_000,
            store_dir: "objects".into(),
            public_base: "/media/".into(),
            max_attempts: 5,
            cdn: CdnConfig::default(),
        }
    }
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
    /// Hashes computed at once (0: one per CPU): a login flood takes at most these
    /// threads, never the whole machine.
    pub max_concurrent: usize,
    /// Hashes that may wait for one of those; beyond, a login or signup is answered
    /// 503 with Retry-After at once instead of queueing without bound.
    pub max_waiting: usize,
    /// Failed logins an account may have within `lockout_secs` (in its DC, counted
    /// in Redis) before further logins are refused 429 until the window ends; 0: no
    /// limit. A successful login clears the count.
    pub max_failed_logins: u32,
    /// The window of `max_failed_logins`, seconds.
    pub lockout_secs: u64,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        PasswordConfig {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 0,
            max_waiting: 64,
            max_failed_logins: 10,
            lockout_secs: 900,
        }
    }
}

/// Limits per client address, counted in this DC's Redis over fixed windows: what
/// the per-account lock cannot bound (one password tried against many accounts,
/// accounts made by the thousand). Who the client is: `http.trusted_proxies`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbuseConfig {
    /// Failed logins one address may have within `failed_login_window_secs`, over
    /// all accounts, before its logins are refused 429 until the window ends (0: no
    /// limit). An attempt counts when it starts, so concurrent guesses cannot
    /// overrun it; a success takes back only its own count (one good account must
    /// not reset a guesser's).
    pub failed_logins_per_addr: u32,
    /// The window of `failed_logins_per_addr`, seconds.
    pub failed_login_window_secs: u64,
    /// Signups one address may make within `signup_window_secs` (0: no limit).
    pub signups_per_addr: u32,
    /// The window of `signups_per_addr`, seconds.
    pub signup_window_secs: u64,
    /// Seconds a device stays known after a login from it (the `did` cookie names
    /// it; 0: no device is ever known). A login from a device known for its
    /// account is not held by the account's or the address's failed-login limits
    /// and gets the next free hashing thread before other logins; one failed login from it, and it
    /// is known no more (OWASP's device cookies).
    pub known_device_secs: u64,
    /// The operator's secret: a request that carries it in `X-Bypass-Limits` is
    /// not held by the per-address limits (a load generator signs up and logs in
    /// thousands of users from one address). None: nothing bypasses them.
    pub bypass_token: Option<String>,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        AbuseConfig {
            failed_logins_per_addr: 50,
            failed_login_window_secs: 900,
            signups_per_addr: 20,
            signup_window_secs: 3600,
            known_device_secs: 90 * 24 * 3600,
            bypass_token: None,
        }
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
    /// Peers whose `X-Forwarded-For` is believed (the load balancers): the client
    /// address the abuse limits count under is the first hop they did not append
    /// ([`crate::client`]). Each an address or a network (`10.0.0.0/24`). Empty:
    /// the peer is the client.
    #[serde(deserialize_with = "addresses_or_networks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 64 * 1024,
            request_timeout_secs: 30,
            shutdown_grace_secs: 10,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A list of `192.0.2.1` or `192.0.2.0/24` entries (an address is its /32 or /128).
fn addresses_or_networks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    use serde::de::Error;
    let entries = Vec::<String>::deserialize(d)?;
    entries
        .iter()
        .map(|e| {
            let e = e.trim();
            e.parse::<ipnet::IpNet>()
                .or_else(|_| e.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    D::Error::custom(format!("{e:?} is neither an address nor a network like 10.0.0.0/24"))
                })
        })
        .collect()
}

/// A configuration that cannot run.
pub type ConfigError = settings::SettingsError;

use settings::invalid;

impl WebConfig {
    /// Read and validate a TOML file.
    pub fn load(path: &Path) -> Result<WebConfig, ConfigError> {
        settings::load(path)
    }

    /// Parse and validate TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<WebConfig, ConfigError> {
        settings::parse(text, origin)
    }
}

impl settings::Validate for WebConfig {
    /// Check every value without touching the network.
    fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate().map_err(|e| invalid("database", e.to_string()))?;
        self.redis.validate().map_err(|m| invalid("redis", m))?;
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
        if p.max_failed_logins > 0 && !(1..=86_400).contains(&p.lockout_secs) {
            return Err(invalid("passwords.lockout_secs", "must be between 1 and 86400"));
        }
        let a = &self.abuse;
        if a.failed_logins_per_addr > 0 && !(1..=86_400).contains(&a.failed_login_window_secs) {
            return Err(invalid("abuse.failed_login_window_secs", "must be between 1 and 86400"));
        }
        if a.signups_per_addr > 0 && !(1..=86_400).contains(&a.signup_window_secs) {
            return Err(invalid("abuse.signup_window_secs", "must be between 1 and 86400"));
        }
        if a.bypass_token.as_ref().is_some_and(|t| t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic())) {
            return Err(invalid("abuse.bypass_token", "must be at least 16 visible ASCII characters"));
        }
        if a.known_device_secs > 400 * 24 * 3600 {
            return Err(invalid("abuse.known_device_secs", "must be at most 400 days (a cookie's limit)"));
        }
        if self.http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        if self.media.max_upload_bytes < 1024 {
            return Err(invalid("media.max_upload_bytes", "must be at least 1024"));
        }
        if self.media.max_pixels < 1 {
            return Err(invalid("media.max_pixels", "must be positive"));
        }
        if !(1..=100).contains(&self.media.max_attempts) {
            return Err(invalid("media.max_attempts", "must be between 1 and 100"));
        }
        if !self.media.public_base.ends_with('/') {
            return Err(invalid("media.public_base", "must end with /"));
        }
        if self.http.request_timeout_secs == 0 {
            return Err(invalid("http.request_timeout_secs", "must be positive"));
        }
        self.hotkeys.validate()?;
        self.media.cdn.validate()
    }
}

/// The most edges `[media.cdn]` may name (their health is one 64-bit mask).
pub const MAX_EDGES: usize = 64;

impl CdnConfig {
    /// Check the edges and the probe settings.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.probe_interval_ms == 0 {
            return Err(invalid("media.cdn.probe_interval_ms", "must be positive"));
        }
        if self.probe_timeout_ms == 0 {
            return Err(invalid("media.cdn.probe_timeout_ms", "must be positive"));
        }
        if self.unhealthy_after == 0 {
            return Err(invalid("media.cdn.unhealthy_after", "must be at least 1"));
        }
        if self.healthy_after == 0 {
            return Err(invalid("media.cdn.healthy_after", "must be at least 1"));
        }
        if self.dc.as_deref().is_some_and(|dc| dc.trim().is_empty()) {
            return Err(invalid("media.cdn.dc", "must not be empty"));
        }
        if self.edges.len() > MAX_EDGES {
            return Err(invalid("media.cdn.edges", format!("at most {MAX_EDGES} edges")));
        }
        let mut names = std::collections::HashSet::new();
        for edge in &self.edges {
            let name = &edge.name;
            if name.trim().is_empty() {
                return Err(invalid("media.cdn.edges", "an edge has an empty name"));
            }
            if !names.insert(name.as_str()) {
                return Err(invalid("media.cdn.edges", format!("two edges are named {name:?}")));
            }
            if edge.dc.trim().is_empty() {
                return Err(invalid("media.cdn.edges", format!("edge {name:?} has an empty dc")));
            }
            if !is_host_port(&edge.http) {
                return Err(invalid(
                    "media.cdn.edges",
                    format!("edge {name:?}: http = {:?} is not host:port", edge.http),
                ));
            }
            if let Some(https) = edge.https.as_deref().filter(|a| !is_host_port(a)) {
                return Err(invalid(
                    "media.cdn.edges",
                    format!("edge {name:?}: https = {https:?} is not host:port"),
                ));
            }
            let health = edge.health.strip_prefix("http://").unwrap_or_default();
            let authority = health.split(['/', '?', '#']).next().unwrap_or_default();
            if !is_host_port(authority) || health.bytes().any(|b| !b.is_ascii_graphic()) {
                return Err(invalid(
                    "media.cdn.edges",
                    format!("edge {name:?}: health = {:?} is not an http://host:port/path URL", edge.health),
                ));
            }
        }
        Ok(())
    }
}

/// `host:port` with a plain host (letters, digits, `.`, `-`, or a bracketed IPv6
/// address) and a port from 1 to 65535: safe to put in a URL and a CSP source.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else { return false };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0) && port.bytes().all(|b| b.is_ascii_digit())
}

impl WebConfig {
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
        assert!(c.http.trusted_proxies.is_empty(), "no proxy is trusted unless named");
        assert_eq!(c.abuse.signups_per_addr, 20);
        assert_eq!((c.hotkeys.top_n, c.hotkeys.protect, c.hotkeys.hot_ttl_ms), (10, 16, 1000));
        // A proxy is named by its network or, as a /32 or /128, by its address.
        let c = WebConfig::parse(
            &format!("{GOOD}[http]\ntrusted_proxies = [\"127.0.1.5\", \"10.0.0.0/24\"]\n"),
            "t",
        )
        .unwrap();
        assert_eq!(c.http.trusted_proxies.len(), 2);
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
            (format!("{GOOD}peers = [\"redis://:pw@127.0.2.80:99999/\"]\n"), "redis.peers[0] has a bad port"),
            (format!("{GOOD}[feed]\ncelebrity_threshold = 0\n"), "celebrity_threshold"),
            (format!("{GOOD}[cache]\njitter = 2.0\n"), "jitter"),
            (format!("{GOOD}[passwords]\nmemory_kib = 1\n"), "passwords"),
            (format!("{GOOD}[passwords]\nlockout_secs = 0\n"), "passwords.lockout_secs"),
            (format!("{GOOD}[abuse]\nsignup_window_secs = 0\n"), "abuse.signup_window_secs"),
            (format!("{GOOD}[abuse]\nfailed_login_window_secs = 90000\n"), "abuse.failed_login_window_secs"),
            (format!("{GOOD}[abuse]\nsignups_per_addr = -1\n"), "signups_per_addr"),
            (format!("{GOOD}[abuse]\nknown_device_secs = 999999999\n"), "abuse.known_device_secs"),
            (format!("{GOOD}[abuse]\nbypass_token = \"short\"\n"), "abuse.bypass_token"),
            (format!("{GOOD}[http]\ntrusted_proxies = [\"10.0.0.0/33\"]\n"), "trusted_proxies"),
            (format!("{GOOD}[http]\ntrusted_proxies = [\"lb.example\"]\n"), "trusted_proxies"),
            (format!("{GOOD}[hotkeys]\ntop_n = 0\n"), "hotkeys.top_n"),
            (format!("{GOOD}[hotkeys]\ntop_n = 20\ntracked = 10\n"), "hotkeys.tracked"),
            (format!("{GOOD}[hotkeys]\nhalf_life_secs = 0\n"), "hotkeys.half_life_secs"),
            (format!("{GOOD}[hotkeys]\nprotect = 5000\n"), "hotkeys.protect"),
            (format!("{GOOD}[hotkeys]\nmin_rate = -1.0\n"), "hotkeys.min_rate"),
            (format!("{GOOD}[hotkeys]\nmin_rate = nan\n"), "hotkeys.min_rate"),
            (format!("{GOOD}[hotkeys]\nhot_ttl_ms = 50\n"), "hotkeys.hot_ttl_ms"),
            (format!("{GOOD}[hotkeys]\nprotekt = 5\n"), "unknown field"),
        ];
        for (text, expected) in cases {
            let err = WebConfig::parse(&text, "test").unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should mention {expected:?}");
        }
    }

    const CDN: &str = r#"
[media.cdn]
dc = "dc1"
[[media.cdn.edges]]
name = "dc1-cdn-1"
dc = "dc1"
http = "127.0.1.50:8000"
https = "127.0.1.50:8443"
health = "http://127.0.1.50:8001/readyz"
[[media.cdn.edges]]
name = "dc2-cdn-1"
dc = "dc2"
http = "cdn2.example:80"
health = "http://[::1]:8001/readyz"
"#;

    #[test]
    fn cdn_edges_are_optional_and_defaulted() {
        let c = WebConfig::parse(GOOD, "t").unwrap();
        assert!(c.media.cdn.edges.is_empty(), "no edges: photos at public_base");
        let c = WebConfig::parse(&format!("{GOOD}{CDN}"), "t").unwrap();
        let cdn = &c.media.cdn;
        assert_eq!(cdn.dc.as_deref(), Some("dc1"));
        assert_eq!((cdn.probe_interval_ms, cdn.probe_timeout_ms), (1000, 500));
        assert_eq!((cdn.unhealthy_after, cdn.healthy_after), (2, 1));
        assert_eq!(cdn.edges.len(), 2);
        assert_eq!(cdn.edges[0].https.as_deref(), Some("127.0.1.50:8443"));
        assert_eq!(cdn.edges[1].https, None);
    }

    #[test]
    fn bad_cdn_settings_say_what_is_wrong() {
        let with = |extra: &str| format!("{GOOD}{CDN}{extra}");
        let cases = [
            (CDN.replace("dc2-cdn-1", "dc1-cdn-1"), "two edges are named \"dc1-cdn-1\""),
            (
                CDN.replace("dc = \"dc1\"\n[[", "dc = \"dc1\"\nprobe_interval_ms = 0\n[["),
                "media.cdn.probe_interval_ms",
            ),
            (
                CDN.replace("dc = \"dc1\"\n[[", "dc = \"dc1\"\nprobe_timeout_ms = 0\n[["),
                "media.cdn.probe_timeout_ms",
            ),
            (
                CDN.replace("dc = \"dc1\"\n[[", "dc = \"dc1\"\nunhealthy_after = 0\n[["),
                "media.cdn.unhealthy_after",
            ),
            (
                CDN.replace("dc = \"dc1\"\n[[", "dc = \"dc1\"\nhealthy_after = 0\n[["),
                "media.cdn.healthy_after",
            ),
            (CDN.replace("127.0.1.50:8000", "127.0.1.50"), "http = \"127.0.1.50\" is not host:port"),
            (CDN.replace("127.0.1.50:8443", "a b:1"), "https"),
            (CDN.replace("cdn2.example:80", "cdn2.example:0"), "is not host:port"),
            (CDN.replace("http://127.0.1.50:8001/readyz", "https://127.0.1.50:8001/readyz"), "health"),
            (CDN.replace("http://[::1]:8001/readyz", "http:///readyz"), "health"),
            (CDN.replace("name = \"dc2-cdn-1\"", "name = \"\""), "empty name"),
            (CDN.replace("dc = \"dc2\"", "dc = \"\""), "empty dc"),
            (CDN.replace("health = \"http://[::1]:8001/readyz\"\n", ""), "missing field `health`"),
            (CDN.replace("http = \"cdn2.example:80\"", "htp = \"cdn2.example:80\""), "unknown field"),
        ];
        for (cdn, expected) in cases {
            let err = WebConfig::parse(&format!("{GOOD}{cdn}"), "test").unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should mention {expected:?}");
        }
        let many: String = (0..=MAX_EDGES)
            .map(|i| format!("[[media.cdn.edges]]\nname = \"e{i}\"\ndc = \"d\"\nhttp = \"h:1\"\nhealth = \"http://h:2/\"\n"))
            .collect();
        let err = WebConfig::parse(&format!("{GOOD}{many}"), "t").unwrap_err().to_string();
        assert!(err.contains("at most 64 edges"), "{err}");
        assert!(WebConfig::parse(&with(""), "t").is_ok());
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = WebConfig::load(Path::new("/nonexistent/web.toml")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/web.toml"), "{err}");
    }
}
