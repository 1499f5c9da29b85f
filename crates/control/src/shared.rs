//! What every part of a running controller shares: its options and secrets, the
//! nodes under supervision, the shard decisions, its metrics and history, and
//! questions about a node. Above `cluster`, `metrics`, `history` and `files` only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use topology::{Node, Topology};

use crate::cluster::{Cluster, ClusterState};
use crate::files::Secrets;
use crate::history::Recorder;
use crate::metrics::Metrics;

/// The database every shard server holds.
pub(crate) const DATABASE: &str = "millions";
/// The superuser of every PostgreSQL server.
pub(crate) const PG_USER: &str = "millions";

/// How a controller runs.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// Where data, logs, configurations and state live.
    pub run_dir: PathBuf,
    /// What to run.
    pub topology: Topology,
    /// Where the control API listens (port 0: any).
    pub api: SocketAddr,
    /// The `millions` binary, to start web servers and workers.
    pub exe: PathBuf,
    /// PostgreSQL durability: `Fast` (no fsync) only for throw-away test stacks.
    pub durability: nodes::Durability,
    /// How every node's metrics are scraped and kept for the dashboard.
    pub history: crate::history::HistoryOptions,
}

/// One node under supervision.
#[derive(Debug)]
pub(crate) struct Managed {
    /// What the topology says about it.
    pub(crate) node: Node,
    /// Its process (pid and start time) while it runs.
    pub(crate) process: Option<nodes::ProcessId>,
    /// Its process handle, for the processes started here directly (to reap them).
    pub(crate) child: Option<std::process::Child>,
    /// Stopped by an operator or by shutdown: not restarted.
    pub(crate) stopped_on_purpose: bool,
    /// Times the supervisor started it again after it died.
    pub(crate) restarts: u32,
    /// The wait before its last restart (`None`: it never died), from which the
    /// supervisor makes the next.
    pub(crate) backoff: Option<Duration>,
    /// When the supervisor may start it again.
    pub(crate) restart_at: Option<Instant>,
    /// When it was last started.
    pub(crate) started_at: Option<Instant>,
}

impl Managed {
    /// A node not started yet.
    pub(crate) fn new(node: Node) -> Managed {
        Managed {
            node,
            process: None,
            child: None,
            stopped_on_purpose: false,
            restarts: 0,
            backoff: None,
            restart_at: None,
            started_at: None,
        }
    }

    /// Whether its process runs (reaping it if it was ours and exited).
    pub(crate) fn alive(&mut self) -> bool {
        if let Some(child) = &mut self.child
            && let Ok(Some(_)) = child.try_wait()
        {
            self.child = None;
            return false;
        }
        self.process.is_some_and(|p| p.alive())
    }
}

/// Shared state of a running controller; cheap to clone.
#[derive(Clone)]
pub(crate) struct Shared {
    /// Options it was started with.
    pub(crate) opts: Arc<ControlOptions>,
    /// Passwords.
    pub(crate) secrets: Arc<Secrets>,
    /// Every node, in start order.
    pub(crate) nodes: Arc<Mutex<Vec<Managed>>>,
    /// Each shard's primary and readable replicas, published to web servers and workers.
    pub(crate) cluster: Arc<Cluster>,
    /// Where the API listens: web servers and workers follow the shard map there.
    pub(crate) api_addr: SocketAddr,
    /// Cancelled to stop the controller (by signal or `POST /api/shutdown`).
    pub(crate) shutdown: CancellationToken,
    /// Set once every node was started (or adopted): what `/readyz` reports.
    pub(crate) ready: Arc<AtomicBool>,
    /// What `/metrics` shows.
    pub(crate) metrics: Metrics,
    /// One lock per shard, held by whatever changes its primary (a failover, a
    /// switchover), so two such changes never interleave; grown with the shards
    /// (`shard_op`).
    pub(crate) shard_ops: Arc<std::sync::Mutex<Vec<Arc<Mutex<()>>>>>,
    /// The topology being run: the options' one, replaced (never changed in
    /// place) when `millions shard add` adds a shard.
    pub(crate) topology: Arc<std::sync::RwLock<Arc<Topology>>>,
    /// Held while a shard is being added: one at a time.
    pub(crate) adding: Arc<Mutex<()>>,
    /// Held across each read-modify-write of the run directory's topology file
    /// and the topology in force (a shard added, a DC's role scaled): two
    /// scales of different DCs or roles at once would otherwise each write
    /// back the file they read, and the second undo the first.
    pub(crate) topology_edit: Arc<std::sync::Mutex<()>>,
    /// Every node's scraped metrics and the dashboard's latest state.
    pub(crate) dashboard: Arc<Recorder>,
    /// The alerts firing, by rule and subject (followed every scrape round).
    pub(crate) alerts:
        Arc<std::sync::Mutex<std::collections::BTreeMap<(String, String), crate::alerts::Alert>>>,
    /// One scale at a time per DC and role, and each autoscaled tier's last
    /// decision.
    pub(crate) scaling: Arc<crate::scale::Scaling>,
}

impl Shared {
    /// The topology being run now (a shard added since start-up included).
    pub(crate) fn topology(&self) -> Arc<Topology> {
        self.topology.read().expect("topology lock poisoned").clone()
    }

    /// Run the topology `next` from now on (it has the shards and nodes of the
    /// one in force, and more).
    pub(crate) fn set_topology(&self, next: Topology) {
        *self.topology.write().expect("topology lock poisoned") = Arc::new(next);
    }

    /// The lock of `shard`, held by whatever changes its primary.
    pub(crate) fn shard_op(&self, shard: u16) -> Arc<Mutex<()>> {
        let mut ops = self.shard_ops.lock().expect("shard locks poisoned");
        while ops.len() <= usize::from(shard) {
            ops.push(Arc::default());
        }
        ops[usize::from(shard)].clone()
    }

    /// Whether node `name` was stopped on purpose (and is not to be replaced or restarted).
    pub(crate) async fn stopped_on_purpose(&self, name: &str) -> bool {
        self.nodes.lock().await.iter().any(|m| m.node.name == name && m.stopped_on_purpose)
    }

    /// The process the controller knows for node `name`.
    pub(crate) async fn node_process(&self, name: &str) -> Option<nodes::ProcessId> {
        self.nodes.lock().await.iter().find(|m| m.node.name == name).and_then(|m| m.process)
    }

    /// Whether node `name`'s process runs.
    pub(crate) async fn running(&self, name: &str) -> bool {
        let mut nodes = self.nodes.lock().await;
        nodes.iter_mut().find(|m| m.node.name == name).is_some_and(|m| m.alive())
    }
}

/// Connection URLs of the primaries of the first `count` shards in `state`
/// (the initial one with no state, or while a failover is under way), given the
/// PostgreSQL password; as a node of `from_dc` reaches them (through its WAN
/// gateway), or directly.
pub(crate) fn primary_urls_with(
    topology: &Topology,
    state: Option<&ClusterState>,
    count: usize,
    password: &str,
    from_dc: Option<&str>,
) -> Vec<String> {
    topology
        .shards()
        .iter()
        .take(count)
        .map(|shard| {
            let node = state
                .and_then(|s| s.shards.get(shard.id.0 as usize))
                .and_then(|s| s.primary.as_deref())
                .and_then(|name| topology.node(name))
                .unwrap_or_else(|| topology.initial_primary(shard.id));
            let addr = from_dc.map_or(node.addr, |dc| topology.address_from(dc, node));
            nodes::postgres_url(&addr.ip().to_string(), addr.port(), PG_USER, password, DATABASE)
        })
        .collect()
}
