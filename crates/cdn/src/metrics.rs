//! What an edge counts, in the process's Prometheus registry.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// What the cache did for a request.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values as Prometheus shows them
pub enum Outcome {
    /// Served from the cache, fresh.
    hit,
    /// Fetched from the origin and stored.
    miss,
    /// Stored but stale: fetched again.
    expired,
    /// Served stale (while revalidating, or because the origin failed).
    stale,
    /// Revalidated with the origin (a 304, or a new response).
    revalidated,
    /// Passed to the origin without caching.
    pass,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 6] =
        [Outcome::hit, Outcome::miss, Outcome::expired, Outcome::stale, Outcome::revalidated, Outcome::pass];

    /// The `X-Cache` header's value.
    pub fn header(self) -> &'static str {
        match self {
            Outcome::hit => "HIT",
            Outcome::miss => "MISS",
            Outcome::expired => "EXPIRED",
            Outcome::stale => "STALE",
            Outcome::revalidated => "REVALIDATED",
            Outcome::pass => "PASS",
        }
    }
}

/// A response's kind of content, for the hit ratio per kind.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Kind {
    /// `image/*`.
    image,
    /// `text/css`.
    css,
    /// JavaScript.
    js,
    /// Fonts.
    font,
    /// `text/html`.
    html,
    /// JSON.
    json,
    /// Anything else, or no `Content-Type`.
    other,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 7] =
        [Kind::image, Kind::css, Kind::js, Kind::font, Kind::html, Kind::json, Kind::other];

    /// The kind of a `Content-Type` value.
    pub fn of(content_type: Option<&str>) -> Kind {
        let Some(ct) = content_type else { return Kind::other };
        let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match ct.as_str() {
            c if c.starts_with("image/") => Kind::image,
            "text/css" => Kind::css,
            "text/javascript" | "application/javascript" | "application/x-javascript" => Kind::js,
            c if c.starts_with("font/") || c.contains("font-woff") => Kind::font,
            "text/html" => Kind::html,
            c if c == "application/json" || c.ends_with("+json") => Kind::json,
            _ => Kind::other,
        }
    }
}

/// Labels of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// What the cache did.
    pub cache: Outcome,
    /// What the response holds.
    pub kind: Kind,
}

/// Where a response sent to a client came from.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// `cache` or `origin`.
    pub from: &'static str,
}

/// An origin server.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabels {
    /// Its `ip:port`.
    pub origin: String,
}

/// Why a TLS handshake did not complete.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `timeout` or `error`.
    pub reason: &'static str,
}

/// How a purge was asked.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PurgeLabels {
    /// `path`, `prefix` or `tag`.
    pub by: &'static str,
    /// `hard` or `soft`.
    pub how: &'static str,
}

/// What the disk tier failed to do.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiskErrorLabels {
    /// `read` (a file that could not be read or failed its checks: removed),
    /// `write`, `remove`, `mark` (a soft purge's mark), `scan` (a file skipped at
    /// start, removed) or `queue_full` (a write dropped: the writer was behind).
    pub op: &'static str,
}

/// The edge's metrics.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Requests by what the cache did and the content's kind.
    pub requests: Family<RequestLabels, Counter>,
    /// Every series of `requests`, resolved once (`[outcome][kind]`): counting a
    /// request is one atomic add, not a lookup of its labels.
    request_slots: Vec<Vec<Counter>>,
    /// The series of `bytes`: from the cache, from the origin.
    bytes_from: [Counter; 2],
    /// Requests that waited on another request's fetch of the same object.
    pub coalesced: Counter,
    /// Objects dropped because an unsafe method changed their URL.
    pub invalidations: Counter,
    /// Requests answered 503 because every origin slot stayed busy.
    pub origin_busy: Counter,
    /// Connections to an origin that could not be made, by origin (the fetch
    /// then tries another origin, if one is left untried).
    pub origin_connect_failures: Family<OriginLabels, Counter>,
    /// TLS handshakes on the HTTPS listener that did not complete, by reason.
    pub tls_handshake_failures: Family<HandshakeLabels, Counter>,
    /// Objects purged, by how the purge named them and how hard.
    pub purged: Family<PurgeLabels, Counter>,
    /// Bytes sent to clients (heads and bodies), by where the response came from.
    pub bytes: Family<BytesLabels, Counter>,
    /// Bytes held by the memory tier (set when rendered).
    pub stored_bytes: Gauge,
    /// Objects held by the memory tier (set when rendered).
    pub stored_objects: Gauge,
    /// Lookups that missed the memory tier and found the object on disk.
    pub disk_hits: Counter,
    /// Objects written to the disk tier (new ones and revalidated ones).
    pub disk_writes: Counter,
    /// Files removed from the disk tier to keep within its budget.
    pub disk_evictions: Counter,
    /// What the disk tier failed to do, by operation.
    pub disk_errors: Family<DiskErrorLabels, Counter>,
    /// Bytes held by the disk tier (set when rendered).
    pub disk_bytes: Gauge,
    /// Objects held by the disk tier (set when rendered).
    pub disk_objects: Gauge,
}

impl Metrics {
    /// Metrics registered into `registry`.
    pub fn new(registry: &telemetry::Registry) -> Metrics {
        let mut m = Metrics::default();
        m.request_slots = Outcome::ALL
            .iter()
            .map(|&cache| {
                Kind::ALL
                    .iter()
                    .map(|&kind| m.requests.get_or_create(&RequestLabels { cache, kind }).clone())
                    .collect()
            })
            .collect();
        m.bytes_from = ["cache", "origin"].map(|from| m.bytes.get_or_create(&BytesLabels { from }).clone());
        registry.register("cdn_requests", "Requests by cache outcome and content kind", m.requests.clone());
        registry.register(
            "cdn_coalesced",
            "Requests that waited on another request's origin fetch of the same object",
            m.coalesced.clone(),
        );
        registry.register(
            "cdn_invalidations",
            "Objects dropped because an unsafe method changed their URL",
            m.invalidations.clone(),
        );
        registry.register(
            "cdn_origin_busy",
            "Requests answered 503 because every origin fetch slot stayed busy",
            m.origin_busy.clone(),
        );
        registry.register(
            "cdn_origin_connect_failures",
            "Connections to an origin that could not be made, by origin",
            m.origin_connect_failures.clone(),
        );
        registry.register(
            "cdn_tls_handshake_failures",
            "TLS handshakes that did not complete, by reason",
            m.tls_handshake_failures.clone(),
        );
        registry.register("cdn_purged", "Objects purged, by selector and how", m.purged.clone());
        registry.register(
            "cdn_sent_bytes",
            "Bytes sent to clients (heads and bodies), of responses from the cache or from the origin",
            m.bytes.clone(),
        );
        registry.register("cdn_stored_bytes", "Bytes held by the memory tier", m.stored_bytes.clone());
        registry.register("cdn_stored_objects", "Objects held by the memory tier", m.stored_objects.clone());
        registry.register(
            "cdn_disk_hits",
            "Lookups that missed the memory tier and found the object on disk",
            m.disk_hits.clone(),
        );
        registry.register("cdn_disk_writes", "Objects written to the disk tier", m.disk_writes.clone());
        registry.register(
            "cdn_disk_evictions",
            "Files removed from the disk tier to keep within its budget",
            m.disk_evictions.clone(),
        );
        registry.register("cdn_disk_errors", "Disk tier failures, by operation", m.disk_errors.clone());
        registry.register("cdn_disk_stored_bytes", "Bytes held by the disk tier", m.disk_bytes.clone());
        registry.register("cdn_disk_stored_objects", "Objects held by the disk tier", m.disk_objects.clone());
        m
    }

    /// Count a request.
    pub fn request(&self, outcome: Outcome, kind: Kind) {
        self.request_slots[outcome as usize][kind as usize].inc();
    }

    /// Count bytes sent to a client, for a response from the cache (`true`) or the origin.
    pub fn body_bytes(&self, from_cache: bool, n: u64) {
        self.bytes_from[usize::from(!from_cache)].inc_by(n);
    }

    /// A connection to `origin` that could not be made.
    pub fn origin_connect_failed(&self, origin: Option<std::net::SocketAddr>) {
        let origin = origin.map_or_else(String::new, |o| o.to_string());
        self.origin_connect_failures.get_or_create(&OriginLabels { origin }).inc();
    }

    /// A TLS handshake that did not complete, for `reason` (`timeout`, `error`).
    pub fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures.get_or_create(&HandshakeLabels { reason }).inc();
    }

    /// A disk tier failure of `op` (see [`DiskErrorLabels`]).
    pub fn disk_error(&self, op: &'static str) {
        self.disk_errors.get_or_create(&DiskErrorLabels { op }).inc();
    }

    /// Requests with `outcome`, of every kind.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.request_slots[outcome as usize].iter().map(Counter::get).sum()
    }
}
