//! The controller's own `/metrics`: the nodes by health, restarts per node,
//! failovers, and the HTTP requests its API served.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Labels of the nodes-by-health gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    /// `healthy`, `unhealthy` (runs, fails its check), `down` (not running) or
    /// `stopped` (on purpose).
    health: &'static str,
}

/// Labels of the active-users gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WindowLabels {
    /// `day`, `week` or `month`.
    window: &'static str,
}

/// Labels of the per-node restart counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    /// The node's name.
    node: String,
    /// Its role (`postgres`, `redis`, `worker`, `web`, `lb`).
    role: String,
}

/// Every metric of the controller, registered in its registry.
#[derive(Clone)]
pub(crate) struct Metrics {
    /// What `/metrics` renders.
    pub(crate) registry: telemetry::Registry,
    /// Requests served by the API, by route, method and status.
    pub(crate) http: telemetry::HttpMetrics,
    /// Nodes by health, refreshed when scraped.
    nodes: Family<HealthLabels, Gauge>,
    /// Times the supervisor restarted each node after it died.
    restarts: Family<NodeLabels, Counter>,
    /// Failovers completed (a replica promoted in place of a lost primary).
    failovers: Counter,
    /// Distinct signed-in users of the day, 7 days, 30 days, over every DC (at
    /// the last count), so Prometheus has them too.
    active_users: Family<WindowLabels, Gauge>,
    /// Free bytes of the run directory's filesystem (what the `DiskFreeLow`
    /// rule watches in Prometheus).
    disk_free: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The names of the health states, in the order `millions status` shows them.
pub(crate) const HEALTH_STATES: [&str; 4] = ["healthy", "unhealthy", "down", "stopped"];

impl Metrics {
    /// The metrics of a controller running `topology`: every node's restart
    /// counter starts at 0, so a dashboard sees it before the first restart.
    pub(crate) fn new(topology: &topology::Topology) -> Metrics {
        let registry = telemetry::Registry::default();
        let m = Metrics {
            http: telemetry::HttpMetrics::new(&registry),
            nodes: Family::default(),
            restarts: Family::default(),
            failovers: Counter::default(),
            active_users: Family::default(),
            disk_free: Gauge::default(),
            registry,
        };
        m.registry.register("control_nodes", "Nodes of the topology by health", m.nodes.clone());
        m.registry.register(
            "control_node_restarts",
            "Times the supervisor restarted a node after it died",
            m.restarts.clone(),
        );
        m.registry.register(
            "control_failovers",
            "Failovers completed (a replica promoted in place of a lost primary)",
            m.failovers.clone(),
        );
        m.registry.register(
            "control_active_users",
            "Distinct signed-in users of the window (day, week, month) over every data center, by HyperLogLog",
            m.active_users.clone(),
        );
        m.registry.register(
            "control_disk_free_bytes",
            "Free bytes of the run directory's filesystem, at the last scrape round",
            m.disk_free.clone(),
        );
        for node in topology.nodes() {
            let _ = m
                .restarts
                .get_or_create(&NodeLabels { node: node.name.clone(), role: node.role.to_string() });
        }
        for health in HEALTH_STATES {
            let _ = m.nodes.get_or_create(&HealthLabels { health });
        }
        m
    }

    /// Node `name` (of `role`) was restarted after it died.
    pub(crate) fn restarted(&self, name: &str, role: topology::Role) {
        self.restarts.get_or_create(&NodeLabels { node: name.to_owned(), role: role.to_string() }).inc();
    }

    /// A failover completed.
    pub(crate) fn failed_over(&self) {
        self.failovers.inc();
    }

    /// The active users counted: of the day, the week, the month.
    pub(crate) fn set_active_users(&self, day: u64, week: u64, month: u64) {
        for (window, n) in [("day", day), ("week", week), ("month", month)] {
            self.active_users.get_or_create(&WindowLabels { window }).set(n as i64);
        }
    }

    /// Free bytes of the run directory's filesystem now.
    pub(crate) fn set_disk_free(&self, bytes: u64) {
        self.disk_free.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Set the nodes-by-health gauge from every node's health (one of
    /// [`HEALTH_STATES`]).
    pub(crate) fn set_health<'a>(&self, healths: impl IntoIterator<Item = &'a str> + Clone) {
        for health in HEALTH_STATES {
            let n = healths.clone().into_iter().filter(|h| *h == health).count();
            self.nodes.get_or_create(&HealthLabels { health }).set(n as i64);
        }
    }
}
