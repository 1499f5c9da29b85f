//! The gateway's Prometheus metrics. They are also its statistics: the admin API's
//! `/admin/links` reads the same counters and gauges that `/metrics` renders, so the
//! two never disagree.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use telemetry::Registry;

use crate::conditions::Conditions;

/// One link's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    /// The link's bound listen address (unique in a gateway).
    pub link: String,
    /// The DC the link goes to.
    pub peer_dc: String,
    /// The node the link relays to.
    pub target: String,
}

/// One direction of one link.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// The link's bound listen address.
    pub link: String,
    /// The DC the link goes to.
    pub peer_dc: String,
    /// The node the link relays to.
    pub target: String,
    /// `to_target` (from this DC's clients) or `to_client` (the answers).
    pub direction: &'static str,
}

/// One peer DC's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The peer DC.
    pub peer_dc: String,
}

/// Every metric family of a gateway.
#[derive(Clone)]
pub(crate) struct WanMetrics {
    /// Bytes delivered, per link and direction.
    bytes: Family<DirectionLabels, Counter>,
    /// Connections open now, per link.
    open: Family<LinkLabels, Gauge>,
    /// Connections accepted, per link.
    accepted: Family<LinkLabels, Counter>,
    /// Connections to the target that failed (refused, timed out), per link.
    connect_failures: Family<LinkLabels, Counter>,
    /// Bytes read from one side and not yet written to the other, per link.
    held: Family<LinkLabels, Gauge>,
    /// 1 while the links to a peer DC are cut.
    cut: Family<PeerLabels, Gauge>,
    /// The one-way delay in force, per peer DC.
    delay: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    /// The jitter in force, per peer DC.
    jitter: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    /// The loss probability in force, per peer DC.
    loss: Family<PeerLabels, Gauge<f64, AtomicU64>>,
}

impl std::fmt::Debug for WanMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WanMetrics")
    }
}

/// One link's counters and gauges, shared by its connections.
#[derive(Clone, Debug)]
pub(crate) struct LinkStats {
    /// Bytes delivered to the target.
    pub(crate) to_target: Counter,
    /// Bytes delivered to the clients.
    pub(crate) to_client: Counter,
    /// Connections open now.
    pub(crate) open: Gauge,
    /// Connections accepted so far.
    pub(crate) accepted: Counter,
    /// Connections to the target that failed.
    pub(crate) connect_failures: Counter,
    /// Bytes held in the link's delay lines (both directions, every connection).
    pub(crate) held: Gauge,
}

/// One peer DC's gauges of the conditions in force.
#[derive(Clone, Debug)]
pub(crate) struct PeerGauges {
    /// 1 while cut.
    cut: Gauge,
    /// One-way delay, in seconds.
    delay: Gauge<f64, AtomicU64>,
    /// Jitter, in seconds.
    jitter: Gauge<f64, AtomicU64>,
    /// Loss probability.
    loss: Gauge<f64, AtomicU64>,
}

impl PeerGauges {
    /// Show `c` as the conditions in force.
    pub(crate) fn show(&self, c: &Conditions) {
        self.cut.set(i64::from(c.cut));
        self.delay.set(c.delay_ms as f64 / 1000.0);
        self.jitter.set(c.jitter_ms as f64 / 1000.0);
        self.loss.set(c.loss);
    }
}

impl WanMetrics {
    /// Create the families and register them in `registry`.
    pub(crate) fn new(registry: &Registry) -> WanMetrics {
        let m = WanMetrics {
            bytes: Family::default(),
            open: Family::default(),
            accepted: Family::default(),
            connect_failures: Family::default(),
            held: Family::default(),
            cut: Family::default(),
            delay: Family::default(),
            jitter: Family::default(),
            loss: Family::default(),
        };
        registry.register(
            "wan_bytes_relayed",
            "Bytes delivered across the WAN, by link and direction",
            m.bytes.clone(),
        );
        registry.register("wan_connections_open", "Relayed connections open, by link", m.open.clone());
        registry.register("wan_connections_accepted", "Connections accepted, by link", m.accepted.clone());
        registry.register(
            "wan_connect_failures",
            "Connections to a link's target that failed",
            m.connect_failures.clone(),
        );
        registry.register("wan_held_bytes", "Bytes read and not yet delivered, by link", m.held.clone());
        registry.register("wan_cut", "1 while the links to a peer DC are cut", m.cut.clone());
        registry.register("wan_delay_seconds", "One-way delay in force, by peer DC", m.delay.clone());
        registry.register("wan_jitter_seconds", "Jitter (±) in force, by peer DC", m.jitter.clone());
        registry.register("wan_loss_ratio", "Chunk loss probability in force, by peer DC", m.loss.clone());
        m
    }

    /// The statistics of the link bound to `listen`.
    pub(crate) fn link(&self, listen: SocketAddr, peer_dc: &str, target: SocketAddr) -> LinkStats {
        let l =
            LinkLabels { link: listen.to_string(), peer_dc: peer_dc.to_owned(), target: target.to_string() };
        let direction = |direction| DirectionLabels {
            link: l.link.clone(),
            peer_dc: l.peer_dc.clone(),
            target: l.target.clone(),
            direction,
        };
        // One statement per metric: a family's guard lives to the end of its
        // statement, and a second `get_or_create` on the same family within it
        // would wait for the first guard forever.
        let to_target = self.bytes.get_or_create(&direction("to_target")).clone();
        let to_client = self.bytes.get_or_create(&direction("to_client")).clone();
        LinkStats {
            to_target,
            to_client,
            open: self.open.get_or_create(&l).clone(),
            accepted: self.accepted.get_or_create(&l).clone(),
            connect_failures: self.connect_failures.get_or_create(&l).clone(),
            held: self.held.get_or_create(&l).clone(),
        }
    }

    /// The gauges of peer DC `peer_dc`.
    pub(crate) fn peer(&self, peer_dc: &str) -> PeerGauges {
        let l = PeerLabels { peer_dc: peer_dc.to_owned() };
        PeerGauges {
            cut: self.cut.get_or_create(&l).clone(),
            delay: self.delay.get_or_create(&l).clone(),
            jitter: self.jitter.get_or_create(&l).clone(),
            loss: self.loss.get_or_create(&l).clone(),
        }
    }
}
