//! The load balancer's Prometheus metrics: per backend, and the requests it refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use telemetry::Registry;

use crate::pool::Pool;

/// A backend's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    /// `ip:port` of the backend.
    pub backend: String,
}

/// Why a request was answered by the load balancer itself.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabel {
    /// `rate_limited`, `smuggling`, `header_too_large`, `uri_too_long`, `body_too_large`, `no_backend`.
    pub reason: &'static str,
}

/// Every metric of the load balancer.
#[derive(Clone)]
pub struct LbMetrics {
    /// Attempts sent to each backend.
    requests: Family<BackendLabel, Counter>,
    /// Attempts that failed (5xx, connection failed or broke).
    errors: Family<BackendLabel, Counter>,
    /// Time from sending to the backend to its response header, in seconds.
    latency: Family<BackendLabel, Histogram>,
    /// 1 while a backend gets new requests (healthy, not ejected, not draining).
    up: Family<BackendLabel, Gauge>,
    /// Requests in flight per backend.
    in_flight: Family<BackendLabel, Gauge>,
    /// Times each backend was ejected by passive checks.
    ejections: Family<BackendLabel, Counter>,
    /// Requests the load balancer answered itself, by reason.
    rejected: Family<RejectLabel, Counter>,
    /// Attempts retried on another backend.
    retries: Counter,
    /// TLS handshakes that did not complete, by reason (`timeout`, `error`): a
    /// sign of scanners, slow clients or clients that do not trust the certificate.
    tls_handshake_failures: Family<RejectLabel, Counter>,
    /// Each backend's per-attempt metrics, so that an attempt formats no label and
    /// hashes no string (the families never drop these series).
    handles: Arc<RwLock<HashMap<SocketAddr, AttemptHandles>>>,
}

/// One backend's series touched by every attempt.
#[derive(Clone)]
struct AttemptHandles {
    requests: Counter,
    errors: Counter,
    latency: Histogram,
}

impl AttemptHandles {
    fn record(&self, failed: bool, seconds: Option<f64>) {
        self.requests.inc();
        if failed {
            self.errors.inc();
        }
        if let Some(s) = seconds {
            self.latency.observe(s);
        }
    }
}

impl std::fmt::Debug for LbMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LbMetrics")
    }
}

fn label(addr: SocketAddr) -> BackendLabel {
    BackendLabel { backend: addr.to_string() }
}

impl LbMetrics {
    /// Create and register the metrics.
    pub fn new(registry: &Registry) -> LbMetrics {
        let m = LbMetrics {
            requests: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(telemetry::latency_buckets())),
            up: Family::default(),
            in_flight: Family::default(),
            ejections: Family::default(),
            rejected: Family::default(),
            retries: Counter::default(),
            tls_handshake_failures: Family::default(),
            handles: Arc::default(),
        };
        registry.register("lb_backend_requests", "Attempts sent to each backend", m.requests.clone());
        registry.register(
            "lb_backend_errors",
            "Attempts that got a 5xx or a broken connection",
            m.errors.clone(),
        );
        registry.register("lb_backend_latency_seconds", "Backend time to response header", m.latency.clone());
        registry.register("lb_backend_up", "1 while the backend gets new requests", m.up.clone());
        registry.register("lb_backend_in_flight", "Requests in flight per backend", m.in_flight.clone());
        registry.register("lb_backend_ejections", "Passive ejections per backend", m.ejections.clone());
        registry.register("lb_rejected", "Requests answered by the load balancer itself", m.rejected.clone());
        registry.register("lb_retries", "Attempts retried on another backend", m.retries.clone());
        registry.register(
            "lb_tls_handshake_failures",
            "TLS handshakes that did not complete, by reason",
            m.tls_handshake_failures.clone(),
        );
        m
    }

    /// One attempt's answer (or failure) from `addr`.
    pub fn attempt(&self, addr: SocketAddr, failed: bool, seconds: Option<f64>) {
        if let Some(h) = self.handles.read().expect("metrics poisoned").get(&addr) {
            h.record(failed, seconds);
            return;
        }
        let l = label(addr);
        let h = AttemptHandles {
            requests: self.requests.get_or_create(&l).clone(),
            errors: self.errors.get_or_create(&l).clone(),
            latency: self.latency.get_or_create(&l).clone(),
        };
        h.record(failed, seconds);
        self.handles.write().expect("metrics poisoned").insert(addr, h);
    }

    /// `addr` was ejected.
    pub fn ejected(&self, addr: SocketAddr) {
        self.ejections.get_or_create(&label(addr)).inc();
    }

    /// A request refused for `reason`.
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabel { reason }).inc();
    }

    /// A TLS handshake that did not complete, for `reason`.
    pub fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures.get_or_create(&RejectLabel { reason }).inc();
    }

    /// A retry on another backend.
    pub fn retried(&self) {
        self.retries.inc();
    }

    /// Refresh the gauges from the pool (before a scrape).
    pub fn refresh(&self, pool: &Pool) {
        let now = Instant::now();
        self.up.clear();
        self.in_flight.clear();
        for b in pool.backends().iter() {
            let up = b.healthy() && !b.ejected(now) && !b.draining();
            self.up.get_or_create(&label(b.addr)).set(i64::from(up));
            self.in_flight.get_or_create(&label(b.addr)).set(b.in_flight() as i64);
        }
    }
}
