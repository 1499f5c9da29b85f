//! Where photo URLs point: a healthy CDN edge of the topology, else this origin.
//!
//! Pages run no script that could pick an edge (their one script only sends
//! forms in place), so a browser cannot fall back from a dead edge by itself: the server decides, when it renders a page or a JSON
//! answer, from health checks it runs itself ([`Edges::spawn`]). Every photo
//! object is named at one edge, chosen by rendezvous (highest-random-weight)
//! hashing of its key among the healthy edges of this server's data center —
//! else of the other DCs — so each object is cached on one edge, and an edge
//! leaving moves only the objects it had. With no healthy edge at all, photos
//! come from `media.public_base` (the origin's `/media/`).
//!
//! Nothing that is cached holds a chosen URL: posts are kept with their object
//! keys, and URLs are made per request from a [`MediaUrls`] snapshot of the
//! edges' health and the request's scheme.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use telemetry::prometheus_client::metrics::counter::Counter;
use telemetry::prometheus_client::metrics::family::Family;
use telemetry::prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::config::{CdnConfig, MediaConfig};
use crate::state::AppState;

/// One configured edge, with what its URLs start with.
#[derive(Debug)]
struct Edge {
    /// Its name (metrics, logs; hashed into `seed`).
    name: String,
    /// Its data center.
    dc: String,
    /// `http://{http}/media/`.
    http_prefix: String,
    /// `https://{https}/media/`, if it has an HTTPS address.
    https_prefix: Option<String>,
    /// The URL its health is probed at.
    health: String,
    /// Its rendezvous seed: the mixed hash of its name.
    seed: u64,
    /// `millions_cdn_edge_healthy{edge,dc}`: 1 while photo URLs may name it.
    healthy_gauge: Gauge,
    /// `millions_cdn_edge_probe_failures_total{edge,dc}`.
    failures: Counter,
}

/// The CDN edges of `[media.cdn]` and their health, shared by every request.
#[derive(Debug)]
pub struct Edges {
    /// In configuration order; bit `i` of the masks is `edges[i]`.
    edges: Vec<Edge>,
    /// The edges of this server's data center (all of them when it names none).
    own: u64,
    /// The edges photo URLs may name now.
    healthy: AtomicU64,
    /// The origin's prefix (`media.public_base`), when no edge is healthy.
    origin: String,
    /// Probe settings.
    settings: CdnConfig,
}

impl Edges {
    /// The edges of a validated configuration, all unhealthy until probed, with
    /// their metrics registered.
    pub fn new(media: &MediaConfig, registry: &telemetry::Registry) -> Edges {
        type Labels = [(&'static str, String); 2];
        let healthy = Family::<Labels, Gauge>::default();
        let failures = Family::<Labels, Counter>::default();
        if !media.cdn.edges.is_empty() {
            registry.register(
                "cdn_edge_healthy",
                "Whether photo URLs may name this CDN edge (1) or not (0: withdrawn, or not yet probed)",
                healthy.clone(),
            );
            registry.register(
                "cdn_edge_probe_failures",
                "Health probes of this CDN edge that failed (error, timeout or a non-2xx answer)",
                failures.clone(),
            );
        }
        let cdn = &media.cdn;
        let edges: Vec<Edge> = cdn
            .edges
            .iter()
            .map(|e| {
                let labels = [("edge", e.name.clone()), ("dc", e.dc.clone())];
                Edge {
                    name: e.name.clone(),
                    dc: e.dc.clone(),
                    http_prefix: format!("http://{}/media/", e.http),
                    https_prefix: e.https.as_ref().map(|a| format!("https://{a}/media/")),
                    health: e.health.clone(),
                    seed: edge_seed(&e.name),
                    healthy_gauge: healthy.get_or_create(&labels).clone(),
                    failures: failures.get_or_create(&labels).clone(),
                }
            })
            .collect();
        let own = edges
            .iter()
            .enumerate()
            .filter(|(_, e)| cdn.dc.as_ref().is_none_or(|dc| *dc == e.dc))
            .fold(0u64, |mask, (i, _)| mask | 1 << i);
        Edges {
            edges,
            own,
            healthy: AtomicU64::new(0),
            origin: media.public_base.clone(),
            settings: cdn.clone(),
        }
    }

    /// URLs for one request: the edges' health as it is now, and whether the
    /// request came over HTTPS.
    pub fn urls(self: &Arc<Self>, https: bool) -> MediaUrls {
        MediaUrls { edges: self.clone(), healthy: self.healthy.load(Ordering::Relaxed), https }
    }

    /// Whether the edge named `name` is healthy now (None: no such edge).
    pub fn is_healthy(&self, name: &str) -> Option<bool> {
        let i = self.edges.iter().position(|e| e.name == name)?;
        Some(self.healthy.load(Ordering::Relaxed) & (1 << i) != 0)
    }

    /// Mark the edge named `name` healthy or not, as probes would (unit tests).
    #[cfg(test)]
    pub(crate) fn set_health(&self, name: &str, healthy: bool) {
        let i = self.edges.iter().position(|e| e.name == name).expect("a configured edge");
        if healthy {
            self.healthy.fetch_or(1 << i, Ordering::Relaxed);
        } else {
            self.healthy.fetch_and(!(1 << i), Ordering::Relaxed);
        }
    }

    /// The CSP sources photos may come from: every edge's `http://host:port` and
    /// `https://host:port` (whether healthy or not: a page names whichever is).
    pub fn csp_sources(&self) -> Vec<String> {
        let mut sources = Vec::new();
        for e in &self.edges {
            for prefix in std::iter::once(&e.http_prefix).chain(&e.https_prefix) {
                let origin = prefix.trim_end_matches("/media/").to_owned();
                if !sources.contains(&origin) {
                    sources.push(origin);
                }
            }
        }
        sources
    }

    /// Probe every edge until `stop`: at once, then every `probe_interval_ms`.
    /// Nothing to do (a finished task) when there are no edges.
    pub fn spawn(self: Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if self.edges.is_empty() {
                return;
            }
            stop.run_until_cancelled(self.probe_forever()).await;
        })
    }

    async fn probe_forever(&self) {
        let timeout = Duration::from_millis(self.settings.probe_timeout_ms);
        // A new connection per probe: an edge that no longer accepts connections
        // is down for browsers, whatever a kept-alive connection still answers.
        let client = reqwest::Client::builder().timeout(timeout).no_proxy().pool_max_idle_per_host(0).build();
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cdn: no HTTP client for health probes; photos stay at the origin");
                return;
            }
        };
        // Consecutive passes (positive) or failures (negative) per edge.
        let mut streaks = vec![0i64; self.edges.len()];
        let mut ticks = tokio::time::interval(Duration::from_millis(self.settings.probe_interval_ms));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let results =
                futures::future::join_all(self.edges.iter().map(|e| probe(&client, &e.health, timeout)))
                    .await;
            for (i, result) in results.into_iter().enumerate() {
                self.record(i, result, &mut streaks[i]);
            }
        }
    }

    /// Count one probe of edge `i` and move it in or out when its streak is long
    /// enough.
    fn record(&self, i: usize, result: Result<(), String>, streak: &mut i64) {
        let edge = &self.edges[i];
        let bit = 1u64 << i;
        let was = self.healthy.load(Ordering::Relaxed) & bit != 0;
        match result {
            Ok(()) => {
                *streak = (*streak).max(0) + 1;
                if !was && *streak >= i64::from(self.settings.healthy_after) {
                    self.healthy.fetch_or(bit, Ordering::Relaxed);
                    edge.healthy_gauge.set(1);
                    tracing::info!(edge = %edge.name, dc = %edge.dc, "cdn edge healthy: photo URLs may name it");
                }
            }
            Err(reason) => {
                edge.failures.inc();
                *streak = (*streak).min(0) - 1;
                if was && -*streak >= i64::from(self.settings.unhealthy_after) {
                    self.healthy.fetch_and(!bit, Ordering::Relaxed);
                    edge.healthy_gauge.set(0);
                    tracing::warn!(
                        edge = %edge.name, dc = %edge.dc, %reason,
                        "cdn edge unhealthy: withdrawn from photo URLs"
                    );
                } else if !was && *streak == -1 {
                    tracing::debug!(edge = %edge.name, %reason, "cdn edge probe failed");
                }
            }
        }
    }
}

/// One probe: a 2xx answer within `timeout` passes.
async fn probe(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<(), String> {
    let answer = tokio::time::timeout(timeout, client.get(url).send()).await;
    match answer {
        Ok(Ok(r)) if r.status().is_success() => Ok(()),
        Ok(Ok(r)) => Err(format!("answered {}", r.status().as_u16())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// An edge's rendezvous seed.
fn edge_seed(name: &str) -> u64 {
    sharding::fmix64(sharding::fnv1a64(name.as_bytes()))
}

/// The weight of (`key`'s hash, edge `seed`): the edge with the largest names
/// the object.
fn weight(key_hash: u64, seed: u64) -> u64 {
    sharding::fmix64(key_hash ^ seed)
}

/// Photo URLs for one request: a snapshot of the edges' health (so one answer
/// is consistent) and the request's scheme. Cheap to clone (one `Arc`).
///
/// As an extractor it reads `X-Forwarded-Proto` from trusted proxies only
/// ([`crate::client::forwarded_https`]).
#[derive(Debug, Clone)]
pub struct MediaUrls {
    edges: Arc<Edges>,
    /// The healthy edges when the snapshot was taken.
    healthy: u64,
    /// The request came over HTTPS: name an edge's HTTPS address if it has one.
    https: bool,
}

impl MediaUrls {
    /// What `key`'s URL starts with: an edge's `…/media/` or the origin's prefix.
    pub fn prefix(&self, key: &str) -> &str {
        let edges = &self.edges;
        let pool = match self.healthy & edges.own {
            0 => self.healthy,
            own => own,
        };
        if pool == 0 {
            return &edges.origin;
        }
        let key_hash = sharding::fnv1a64(key.as_bytes());
        let (mut best, mut best_weight) = (usize::MAX, 0u64);
        let mut rest = pool;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let w = weight(key_hash, edges.edges[i].seed);
            if best == usize::MAX || w > best_weight {
                (best, best_weight) = (i, w);
            }
        }
        let edge = &edges.edges[best];
        match (&edge.https_prefix, self.https) {
            (Some(https), true) => https,
            _ => &edge.http_prefix,
        }
    }

    /// `key`'s URL.
    pub fn url(&self, key: &str) -> String {
        let prefix = self.prefix(key);
        let mut url = String::with_capacity(prefix.len() + key.len());
        url.push_str(prefix);
        url.push_str(key);
        url
    }

    /// `key`'s URL as something to format (into JSON, without a `String`).
    pub fn display<'a>(&'a self, key: &'a str) -> MediaUrl<'a> {
        MediaUrl { prefix: self.prefix(key), key }
    }
}

/// A photo's URL, formatted when written.
#[derive(Debug, Clone, Copy)]
pub struct MediaUrl<'a> {
    prefix: &'a str,
    key: &'a str,
}

impl std::fmt::Display for MediaUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.prefix)?;
        f.write_str(self.key)
    }
}

impl FromRequestParts<AppState> for MediaUrls {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = crate::client::peer_of(parts);
        let https =
            crate::client::forwarded_https(peer, &parts.headers, &state.config().http.trusted_proxies);
        Ok(state.edges().urls(https))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CdnEdge;

    fn edge(name: &str, dc: &str, n: u8, https: bool) -> CdnEdge {
        CdnEdge {
            name: name.into(),
            dc: dc.into(),
            http: format!("10.0.{n}.1:8000"),
            https: https.then(|| format!("10.0.{n}.1:8443")),
            health: format!("http://10.0.{n}.1:8001/readyz"),
        }
    }

    fn edges(dc: Option<&str>, list: Vec<CdnEdge>) -> Arc<Edges> {
        let media = MediaConfig {
            cdn: CdnConfig { dc: dc.map(str::to_owned), edges: list, ..CdnConfig::default() },
            ..MediaConfig::default()
        };
        Arc::new(Edges::new(&media, &telemetry::Registry::default()))
    }

    fn set_healthy(e: &Edges, names: &[&str]) {
        let mask = e
            .edges
            .iter()
            .enumerate()
            .filter(|(_, x)| names.contains(&x.name.as_str()))
            .fold(0, |m, (i, _)| m | 1 << i);
        e.healthy.store(mask, Ordering::Relaxed);
    }

    fn keys() -> Vec<String> {
        (0..2000).map(|i| format!("{:064x}.jpg", sharding::fmix64(i))).collect()
    }

    fn host(url: &str) -> &str {
        url.split('/').nth(2).unwrap_or("origin")
    }

    #[test]
    fn removing_an_edge_moves_only_its_keys_and_spreads_them() {
        let e = edges(Some("dc1"), (1..=4).map(|n| edge(&format!("e{n}"), "dc1", n, false)).collect());
        set_healthy(&e, &["e1", "e2", "e3", "e4"]);
        let all = e.urls(false);
        let before: Vec<String> = keys().iter().map(|k| all.url(k)).collect();
        // Every edge gets a fair share.
        for n in 1..=4 {
            let share = before.iter().filter(|u| host(u) == format!("10.0.{n}.1:8000")).count();
            assert!((300..700).contains(&share), "edge e{n} has {share} of 2000 keys");
        }
        set_healthy(&e, &["e1", "e2", "e4"]);
        let three = e.urls(false);
        let mut moved = 0;
        for (k, was) in keys().iter().zip(&before) {
            let now = three.url(k);
            if host(was) == "10.0.3.1:8000" {
                moved += 1;
                assert_ne!(host(&now), "10.0.3.1:8000");
            } else {
                assert_eq!(&now, was, "a key of a remaining edge stays where it was");
            }
        }
        assert!(moved > 0);
        // The same snapshot always names the same edge; a new one too.
        assert_eq!(three.url(&keys()[0]), e.urls(false).url(&keys()[0]));
    }

    #[test]
    fn own_dc_first_then_other_dcs_then_the_origin() {
        let e = edges(
            Some("dc1"),
            vec![edge("a1", "dc1", 1, true), edge("b1", "dc2", 2, true), edge("b2", "dc2", 3, true)],
        );
        let key = &keys()[7];
        // Nothing probed yet: the origin.
        assert_eq!(e.urls(false).url(key), format!("/media/{key}"));
        set_healthy(&e, &["a1", "b1", "b2"]);
        for k in keys().iter().take(200) {
            assert_eq!(host(&e.urls(false).url(k)), "10.0.1.1:8000", "own DC's only edge takes every key");
        }
        set_healthy(&e, &["b1", "b2"]);
        let hosts: std::collections::HashSet<String> =
            keys().iter().take(200).map(|k| host(&e.urls(false).url(k)).to_owned()).collect();
        assert_eq!(hosts.len(), 2, "the other DC's edges share the keys: {hosts:?}");
        assert!(!hosts.contains("10.0.1.1:8000"));
        set_healthy(&e, &[]);
        assert_eq!(e.urls(true).url(key), format!("/media/{key}"));
    }

    #[test]
    fn https_pages_name_https_addresses_where_an_edge_has_one() {
        let e = edges(None, vec![edge("s", "dc1", 1, true)]);
        set_healthy(&e, &["s"]);
        let key = &keys()[0];
        assert_eq!(e.urls(true).url(key), format!("https://10.0.1.1:8443/media/{key}"));
        assert_eq!(e.urls(false).url(key), format!("http://10.0.1.1:8000/media/{key}"));
        assert_eq!(e.urls(true).display(key).to_string(), e.urls(true).url(key));
        let plain = edges(None, vec![edge("p", "dc1", 2, false)]);
        set_healthy(&plain, &["p"]);
        assert_eq!(plain.urls(true).url(key), format!("http://10.0.2.1:8000/media/{key}"));
    }

    #[test]
    fn the_csp_sources_are_every_edges_origins() {
        let e = edges(None, vec![edge("s", "dc1", 1, true), edge("p", "dc2", 2, false)]);
        assert_eq!(
            e.csp_sources(),
            ["http://10.0.1.1:8000", "https://10.0.1.1:8443", "http://10.0.2.1:8000"]
        );
    }

    #[test]
    fn streaks_withdraw_and_readmit_an_edge() {
        let media = MediaConfig {
            cdn: CdnConfig {
                edges: vec![edge("x", "dc1", 1, false)],
                unhealthy_after: 2,
                healthy_after: 2,
                ..CdnConfig::default()
            },
            ..MediaConfig::default()
        };
        let registry = telemetry::Registry::default();
        let e = Edges::new(&media, &registry);
        let mut streak = 0;
        let fail = || Err("down".to_owned());
        e.record(0, Ok(()), &mut streak);
        assert_eq!(e.is_healthy("x"), Some(false), "one pass is not enough with healthy_after = 2");
        e.record(0, Ok(()), &mut streak);
        assert_eq!(e.is_healthy("x"), Some(true));
        assert!(registry.render().contains(r#"millions_cdn_edge_healthy{edge="x",dc="dc1"} 1"#));
        e.record(0, fail(), &mut streak);
        e.record(0, Ok(()), &mut streak);
        e.record(0, fail(), &mut streak);
        assert_eq!(e.is_healthy("x"), Some(true), "failures must come in a row");
        e.record(0, fail(), &mut streak);
        assert_eq!(e.is_healthy("x"), Some(false));
        let metrics = registry.render();
        assert!(metrics.contains(r#"millions_cdn_edge_healthy{edge="x",dc="dc1"} 0"#), "{metrics}");
        assert!(
            metrics.contains(r#"millions_cdn_edge_probe_failures_total{edge="x",dc="dc1"} 3"#),
            "{metrics}"
        );
        assert_eq!(e.is_healthy("nope"), None);
    }
}
