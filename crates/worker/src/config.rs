//! A worker's configuration: read from TOML, validated before any port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything a worker needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Where `/healthz`, `/readyz` and `/metrics` are served (port 0: any).
    pub listen: SocketAddr,
    /// The shards whose queues this worker serves.
    pub database: data::DataConfig,
    /// This DC's Redis (timelines and cache invalidations), and in `peers` the
    /// other DCs': a job's writes reach them all, or the job is retried.
    pub redis: cache::RedisConfig,
    /// Photos.
    #[serde(default)]
    pub media: MediaSection,
    /// Feeds.
    #[serde(default)]
    pub feed: FeedSection,
    /// The queue loop.
    #[serde(default)]
    pub worker: QueueSection,
    /// Fault injection, for tests and demonstrations. Off by default.
    #[serde(default)]
    pub chaos: ChaosSection,
}

/// Photos.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// The object store folder, shared with the web servers.
    pub store_dir: PathBuf,
    /// Largest photo in pixels (as the web tier accepted).
    pub max_pixels: u64,
    /// Where objects removed from the store are purged from the CDN: the
    /// controller's `POST /api/cdn/purge` (every edge of every DC; an edge that
    /// is down drops its disk tier before it starts again). None: no CDN, or
    /// nothing to purge (photo URLs are content-addressed and cached forever,
    /// so a deleted photo would stay on the edges until evicted).
    pub cdn_purge_url: Option<String>,
    /// The bearer token that purge URL takes (the run directory's admin token).
    pub cdn_purge_token: Option<String>,
}

impl Default for MediaSection {
    fn default() -> Self {
        MediaSection {
            store_dir: "objects".into(),
            max_pixels: 40_000_000,
            cdn_purge_url: None,
            cdn_purge_token: None,
        }
    }
}

/// Feeds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedSection {
    /// Same meaning as the web tier's: authors with this many followers are not
    /// fanned out.
    pub celebrity_threshold: i64,
}

impl Default for FeedSection {
    fn default() -> Self {
        FeedSection { celebrity_threshold: 10_000 }
    }
}

/// The queue loop.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSection {
    /// This worker's name in job leases; default: host name and process id.
    pub id: Option<String>,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Seconds a claimed job stays leased; a worker that dies loses its jobs to
    /// others after this long. A running job's lease is renewed every third of it.
    pub lease_secs: u64,
    /// Milliseconds to wait before looking again at an empty queue.
    pub poll_ms: u64,
    /// First retry delay in milliseconds; it doubles with each attempt.
    pub backoff_base_ms: u64,
    /// Longest retry delay in milliseconds.
    pub backoff_max_ms: u64,
    /// On shutdown, seconds running jobs may take to finish before they are released.
    pub shutdown_grace_secs: u64,
}

impl Default for QueueSection {
    fn default() -> Self {
        QueueSection {
            id: None,
            concurrency: 2,
            lease_secs: 60,
            poll_ms: 250,
            backoff_base_ms: 1000,
            backoff_max_ms: 300_000,
            shutdown_grace_secs: 30,
        }
    }
}

/// Fault injection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChaosSection {
    /// Claim jobs, then never finish them (as a hung worker would). Lets tests kill a
    /// worker in the middle of a job.
    pub stall_after_claim: bool,
    /// Job kinds whose every attempt fails, to exercise retries and dead letters.
    pub fail_kinds: Vec<String>,
    /// While this file exists, a photo job waits after its thumbnails are stored
    /// and before they are recorded: lets tests kill the worker, or take its
    /// database away, at the most delicate point of a job, and let it go on by
    /// removing the file.
    pub hold_before_finish: Option<PathBuf>,
}

/// A configuration that cannot run.
pub type ConfigError = settings::SettingsError;

use settings::invalid;

impl WorkerConfig {
    /// Read and validate a TOML file.
    pub fn load(path: &Path) -> Result<WorkerConfig, ConfigError> {
        settings::load(path)
    }

    /// Parse and validate TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<WorkerConfig, ConfigError> {
        settings::parse(text, origin)
    }
}

impl settings::Validate for WorkerConfig {
    /// Check every value without touching the network.
    fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate().map_err(|e| invalid("database", e.to_string()))?;
        self.redis.validate().map_err(|m| invalid("redis", m))?;
        let w = &self.worker;
        if !(1..=1024).contains(&w.concurrency) {
            return Err(invalid("worker.concurrency", "must be between 1 and 1024"));
        }
        if w.lease_secs == 0 {
            return Err(invalid("worker.lease_secs", "must be positive"));
        }
        if w.poll_ms == 0 {
            return Err(invalid("worker.poll_ms", "must be positive"));
        }
        if w.backoff_base_ms == 0 || w.backoff_max_ms < w.backoff_base_ms {
            return Err(invalid("worker.backoff_base_ms", "must be positive and at most backoff_max_ms"));
        }
        if self.feed.celebrity_threshold < 1 {
            return Err(invalid("feed.celebrity_threshold", "must be at least 1"));
        }
        if self.media.max_pixels == 0 {
            return Err(invalid("media.max_pixels", "must be positive"));
        }
        match (&self.media.cdn_purge_url, &self.media.cdn_purge_token) {
            (None, None) => {}
            (Some(url), Some(token)) => {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| invalid("media.cdn_purge_url", format!("not a URL ({e}): {url}")))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                    return Err(invalid(
                        "media.cdn_purge_url",
                        format!("must be an http(s) URL with a host: {url}"),
                    ));
                }
                guard::check(token).map_err(|m| invalid("media.cdn_purge_token", m))?;
            }
            (Some(_), None) => {
                return Err(invalid("media.cdn_purge_token", "is required with media.cdn_purge_url"));
            }
            (None, Some(_)) => {
                return Err(invalid("media.cdn_purge_url", "is required with media.cdn_purge_token"));
            }
        }
        if let Some(id) = &w.id
            && (id.is_empty() || id.len() > 100)
        {
            return Err(invalid("worker.id", "must be 1 to 100 characters"));
        }
        Ok(())
    }
}

impl WorkerConfig {
    /// How long a claim lasts.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.worker.lease_secs)
    }

    /// How often a running job's lease is renewed: three times per lease, so two
    /// renewals in a row may fail (a database hiccup) before it lapses.
    pub fn heartbeat(&self) -> Duration {
        self.lease() / 3
    }

    /// Delay before attempt `attempts + 1`: exponential, capped, with ±20% jitter so
    /// a burst of failures does not retry in lockstep.
    pub fn backoff(&self, attempts: i32) -> Duration {
        use rand::Rng;
        let base = self.worker.backoff_base_ms as f64;
        let exp = base * 2f64.powi(attempts.clamp(1, 30) - 1);
        let capped = exp.min(self.worker.backoff_max_ms as f64);
        Duration::from_millis((capped * rand::rng().random_range(0.8..=1.2)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:0"
[database]
shards = ["postgres://u:p@127.0.0.1:5432/a"]
[redis]
url = "redis://:pw@127.0.0.1:6379/"
"#;

    #[test]
    fn defaults_and_backoff() {
        let c = WorkerConfig::parse(GOOD, "t").unwrap();
        assert_eq!(c.worker.concurrency, 2);
        let b1 = c.backoff(1).as_millis();
        let b3 = c.backoff(3).as_millis();
        assert!((800..=1200).contains(&b1), "{b1}");
        assert!((3200..=4800).contains(&b3), "{b3}");
        assert!(c.backoff(40).as_millis() <= 360_000, "capped");
    }

    #[test]
    fn a_cdn_purge_needs_its_url_and_token_together() {
        let text = format!(
            "{GOOD}[media]\ncdn_purge_url = \"http://127.0.0.1:9900/api/cdn/purge\"\ncdn_purge_token = \"0123456789abcdef\"\n"
        );
        let c = WorkerConfig::parse(&text, "t").unwrap();
        assert_eq!(c.media.cdn_purge_url.as_deref(), Some("http://127.0.0.1:9900/api/cdn/purge"));
        assert!(WorkerConfig::parse(GOOD, "t").unwrap().media.cdn_purge_url.is_none(), "none by default");
    }

    #[test]
    fn bad_values_are_named() {
        for (extra, field) in [
            ("[worker]\nconcurrency = 0\n", "worker.concurrency"),
            ("[worker]\nlease_secs = 0\n", "worker.lease_secs"),
            ("[worker]\nbackoff_base_ms = 10\nbackoff_max_ms = 5\n", "worker.backoff_base_ms"),
            ("peers = [\"http://127.0.2.80/\"]\n", "redis.peers[0] must start with redis://"),
            ("[chaos]\nexplode = true\n", "unknown field"),
            ("[media]\ncdn_purge_url = \"http://127.0.0.1:9900/api/cdn/purge\"\n", "media.cdn_purge_token"),
            ("[media]\ncdn_purge_token = \"0123456789abcdef\"\n", "media.cdn_purge_url"),
            (
                "[media]\ncdn_purge_url = \"http://h/p\"\ncdn_purge_token = \"short\"\n",
                "media.cdn_purge_token",
            ),
            (
                "[media]\ncdn_purge_url = \"ftp://h/p\"\ncdn_purge_token = \"0123456789abcdef\"\n",
                "media.cdn_purge_url",
            ),
            (
                "[media]\ncdn_purge_url = \"not a url\"\ncdn_purge_token = \"0123456789abcdef\"\n",
                "media.cdn_purge_url",
            ),
        ] {
            let err = WorkerConfig::parse(&format!("{GOOD}{extra}"), "t").unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }
}
