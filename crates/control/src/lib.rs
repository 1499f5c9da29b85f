//! `millions control`: runs a topology.
//!
//! The controller starts every node of a [`Topology`] in order — PostgreSQL
//! primaries (initdb, scram, migrations), their replicas (pg_basebackup through a
//! replication slot, then streaming), Redis, workers, web servers, one load
//! balancer per data center — each on its own address, then supervises them: a
//! node that dies is started again with backoff, unless it was stopped on purpose.
//! Its HTTP API (`/api/...`) is how `millions status`, `chaos` and `down` talk to
//! it; it also serves `/healthz`, `/readyz` and `/metrics`.
//!
//! Every node's process is remembered by pid *and* start time (`nodes/NAME.pid`,
//! PostgreSQL's own `postmaster.pid` checked against its data directory), so a
//! restarted controller adopts only its own nodes, and a pid reused by another
//! process is never adopted nor signalled. When the controller itself is gone,
//! [`orphans`] finds the nodes it left running and [`stop_orphans`] stops them.
#![forbid(unsafe_code)]

mod api;
mod cluster;
mod failover;
mod launch;
pub mod lb;
mod metrics;
mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use topology::{Node, Topology};

pub use cluster::{ClusterState, Event, ShardState};
pub use launch::{orphans, stop_orphans};
pub use status::{NodeStatus, PgStatus};

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
}

/// Written to `control.json` in the run directory once the API listens, so the CLI
/// finds the controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlFile {
    /// The controller's process id.
    pub pid: u32,
    /// Its API address.
    pub api: SocketAddr,
}

/// Passwords of the deployment, generated once and kept in the run directory (0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secrets {
    /// The PostgreSQL superuser's password (every server of every shard).
    pub postgres: String,
    /// Every Redis's `requirepass`.
    pub redis: String,
}

/// The file naming the running controller.
pub fn control_file(run_dir: &Path) -> PathBuf {
    run_dir.join("control.json")
}

/// The running controller of `run_dir`, if its process is alive.
pub fn running(run_dir: &Path) -> Option<ControlFile> {
    let text = std::fs::read_to_string(control_file(run_dir)).ok()?;
    let file: ControlFile = serde_json::from_str(&text).ok()?;
    nodes::pid_alive(file.pid).then_some(file)
}

/// Connection URLs of each shard's current primary, in shard order, for tools
/// that write to the shards directly (`millions seed`).
pub fn primary_urls(run_dir: &Path, topology: &Topology) -> anyhow::Result<Vec<String>> {
    let secrets = read_secrets(run_dir)?;
    let state = cluster::read_state(run_dir, topology)?;
    Ok(primary_urls_with(topology, state.as_ref(), &secrets.postgres))
}

/// Connection URLs of each shard's primary in `state` (the initial one with no
/// state, or while a failover is under way), given the PostgreSQL password.
pub(crate) fn primary_urls_with(
    topology: &Topology,
    state: Option<&ClusterState>,
    password: &str,
) -> Vec<String> {
    topology
        .shards()
        .iter()
        .map(|shard| {
            let node = state
                .and_then(|s| s.shards[shard.id.0 as usize].primary.as_deref())
                .and_then(|name| topology.node(name))
                .unwrap_or_else(|| initial_primary(topology, shard.id));
            let host = node.addr.ip().to_string();
            nodes::postgres_url(&host, node.addr.port(), launch::PG_USER, password, launch::DATABASE)
        })
        .collect()
}

/// The node a shard starts with as its primary.
pub(crate) fn initial_primary(topology: &Topology, shard: topology::ShardId) -> &Node {
    topology
        .shard_nodes(shard)
        .find(|n| n.shard.is_some_and(|s| s.initial_primary))
        .expect("a validated topology gives every shard a primary")
}

/// The log file of node `name`.
pub fn log_path(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join("logs").join(format!("{name}.log"))
}

/// The supervisor's first wait before restarting a node that died.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A node that ran this long before it died is restarted after [`FIRST_BACKOFF`] again.
const STABLE_UPTIME: Duration = Duration::from_secs(30);

/// The wait before the next restart of a node that died after running for
/// `uptime`, when its last wait was `last` (`None`: it never died before):
/// doubling on each quick death, up to [`MAX_BACKOFF`]; a node that stayed up
/// [`STABLE_UPTIME`] starts over at [`FIRST_BACKOFF`].
fn restart_backoff(last: Option<Duration>, uptime: Option<Duration>) -> Duration {
    match last {
        Some(last) if uptime.is_none_or(|u| u <= STABLE_UPTIME) => (last * 2).min(MAX_BACKOFF),
        _ => FIRST_BACKOFF,
    }
}

/// One node under supervision.
#[derive(Debug)]
struct Managed {
    /// What the topology says about it.
    node: Node,
    /// Its process (pid and start time) while it runs.
    process: Option<nodes::ProcessId>,
    /// Its process handle, for the processes started here directly (to reap them).
    child: Option<std::process::Child>,
    /// Stopped by an operator or by shutdown: not restarted.
    stopped_on_purpose: bool,
    /// Times the supervisor started it again after it died.
    restarts: u32,
    /// The wait before its last restart (`None`: it never died), from which
    /// [`restart_backoff`] makes the next.
    backoff: Option<Duration>,
    /// When the supervisor may start it again.
    restart_at: Option<Instant>,
    /// When it was last started.
    started_at: Option<Instant>,
}

impl Managed {
    fn alive(&mut self) -> bool {
        if let Some(child) = &mut self.child
            && let Ok(Some(_)) = child.try_wait()
        {
            self.child = None;
            return false;
        }
        self.process.is_some_and(|p| p.alive())
    }
}

/// Shared state of a running controller.
#[derive(Clone)]
pub(crate) struct Shared {
    /// Options it was started with.
    opts: Arc<ControlOptions>,
    /// Passwords.
    secrets: Arc<Secrets>,
    /// Every node, in start order.
    nodes: Arc<Mutex<Vec<Managed>>>,
    /// Each shard's primary and readable replicas, published to web servers and workers.
    cluster: Arc<cluster::Cluster>,
    /// Where the API listens: web servers and workers follow the shard map there.
    api_addr: SocketAddr,
    /// Cancelled to stop the controller (by signal or `POST /api/shutdown`).
    shutdown: CancellationToken,
    /// Set once every node was started (or adopted): what `/readyz` reports.
    ready: Arc<AtomicBool>,
    /// What `/metrics` shows.
    metrics: metrics::Metrics,
}

/// Whether node `name` was stopped on purpose (and is not to be replaced or restarted).
pub(crate) async fn stopped_on_purpose(shared: &Shared, name: &str) -> bool {
    shared.nodes.lock().await.iter().any(|m| m.node.name == name && m.stopped_on_purpose)
}

/// The process the controller knows for node `name`.
pub(crate) async fn node_process(shared: &Shared, name: &str) -> Option<nodes::ProcessId> {
    shared.nodes.lock().await.iter().find(|m| m.node.name == name).and_then(|m| m.process)
}

/// A controller, bound, not yet started.
pub struct Controller {
    /// Shared state.
    shared: Shared,
    /// The API listener.
    listener: tokio::net::TcpListener,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("run_dir", &self.shared.opts.run_dir).finish()
    }
}

fn read_secrets(run_dir: &Path) -> anyhow::Result<Secrets> {
    let path = run_dir.join("secrets.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
}

/// The deployment's secrets, generated on first use.
fn secrets(run_dir: &Path) -> anyhow::Result<Secrets> {
    if run_dir.join("secrets.json").exists() {
        return read_secrets(run_dir);
    }
    let path = run_dir.join("secrets.json");
    let s = Secrets { postgres: nodes::random_secret(32), redis: nodes::random_secret(32) };
    launch::write_private(&path, &serde_json::to_string_pretty(&s)?)?;
    Ok(s)
}

impl Controller {
    /// Prepare the run directory and bind the API.
    pub async fn build(opts: ControlOptions, shutdown: CancellationToken) -> anyhow::Result<Controller> {
        // Every node's configuration that can be checked without the network is,
        // before anything is written or bound.
        crate::lb::check_configs(&opts.topology)?;
        std::fs::create_dir_all(opts.run_dir.join("logs"))
            .with_context(|| format!("creating {}", opts.run_dir.display()))?;
        let secrets = secrets(&opts.run_dir)?;
        let cluster = cluster::Cluster::load(&opts.run_dir, &opts.topology)?;
        let listener = tokio::net::TcpListener::bind(opts.api)
            .await
            .with_context(|| format!("binding the control API on {}", opts.api))?;
        let nodes = opts
            .topology
            .nodes()
            .iter()
            .map(|n| Managed {
                node: n.clone(),
                process: None,
                child: None,
                stopped_on_purpose: false,
                restarts: 0,
                backoff: None,
                restart_at: None,
                started_at: None,
            })
            .collect();
        let metrics = metrics::Metrics::new(&opts.topology);
        Ok(Controller {
            shared: Shared {
                opts: Arc::new(opts),
                secrets: Arc::new(secrets),
                nodes: Arc::new(Mutex::new(nodes)),
                cluster: Arc::new(cluster),
                api_addr: listener.local_addr()?,
                shutdown,
                ready: Arc::new(AtomicBool::new(false)),
                metrics,
            },
            listener,
        })
    }

    /// Start every node, publish `control.json`, supervise and serve the API until
    /// shutdown; then stop every node. If start-up fails, what was started is stopped.
    pub async fn run(self) -> anyhow::Result<()> {
        let shared = self.shared;
        let api_addr = self.listener.local_addr()?;
        let api = tokio::spawn(api::serve(self.listener, shared.clone()));
        let file = ControlFile { pid: std::process::id(), api: api_addr };
        launch::write_private(&control_file(&shared.opts.run_dir), &serde_json::to_string(&file)?)?;
        tracing::info!(api = %api_addr, topology = shared.opts.topology.name(), "controller starting nodes");
        // Not raced against shutdown: a blocking step (initdb, a base backup)
        // cannot be abandoned half-way, so start_all checks for shutdown between
        // its steps, and what it started is stopped below either way.
        let started = launch::start_all(&shared).await;
        if let Err(e) = &started {
            tracing::error!(error = format!("{e:#}"), "start-up failed; stopping what was started");
        } else {
            shared.ready.store(true, Ordering::SeqCst);
            tracing::info!("every node started; supervising");
            let supervisor = tokio::spawn(supervise(shared.clone()));
            let watcher = tokio::spawn(failover::watch(shared.clone()));
            shared.shutdown.cancelled().await;
            supervisor.abort();
            watcher.abort();
        }
        shared.ready.store(false, Ordering::SeqCst);
        launch::stop_all(&shared).await;
        let _ = std::fs::remove_file(control_file(&shared.opts.run_dir));
        api.abort();
        tracing::info!("controller stopped");
        started
    }
}

/// Restart nodes that died, with backoff, until shutdown.
async fn supervise(shared: Shared) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            // The supervisor looks at every node twice a second.
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let due: Vec<String> = {
            let mut nodes = shared.nodes.lock().await;
            let now = Instant::now();
            let mut due = vec![];
            for m in nodes.iter_mut() {
                // A replicated shard's primary is not restarted in place: the
                // failover watcher replaces it (restarting it could bring back
                // a second primary).
                let failover_decides = m.node.shard.is_some_and(|member| {
                    let shard = member.shard.0 as usize;
                    shared.opts.topology.shards()[shard].members.len() > 1
                        && shared.cluster.primary(shard as u16).is_none_or(|p| p == m.node.name)
                });
                if m.stopped_on_purpose || failover_decides || m.alive() {
                    continue;
                }
                match m.restart_at {
                    None => {
                        let backoff = restart_backoff(m.backoff, m.started_at.map(|t| t.elapsed()));
                        tracing::warn!(
                            node = m.node.name,
                            backoff_ms = backoff.as_millis() as u64,
                            "node died"
                        );
                        m.process = None;
                        // Its next uptime counts from its next successful start.
                        m.started_at = None;
                        launch::forget_process(&shared.opts.run_dir, &m.node);
                        m.backoff = Some(backoff);
                        m.restart_at = Some(now + backoff);
                    }
                    Some(at) if at <= now => {
                        m.restart_at = None;
                        due.push(m.node.name.clone());
                    }
                    Some(_) => {}
                }
            }
            due
        };
        for name in due {
            match launch::start_node(&shared, &name).await {
                Ok(()) => {
                    let mut nodes = shared.nodes.lock().await;
                    if let Some(m) = nodes.iter_mut().find(|m| m.node.name == name) {
                        m.restarts += 1;
                        shared.metrics.restarted(&name, m.node.role);
                    }
                    tracing::info!(node = name, "node restarted");
                }
                Err(e) => {
                    tracing::error!(node = name, error = format!("{e:#}"), "restarting failed; will retry")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(url: String) -> (u16, String) {
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn readyz_waits_for_every_node_and_metrics_count_nodes_restarts_failovers_and_requests() {
        let dir = tempfile::tempdir().unwrap();
        let topology = topology::preset("test").unwrap();
        let opts = ControlOptions {
            run_dir: dir.path().to_owned(),
            topology,
            api: "127.0.0.1:0".parse().unwrap(),
            exe: "/nonexistent".into(),
            durability: nodes::Durability::Fast,
        };
        let shutdown = CancellationToken::new();
        let controller = Controller::build(opts, shutdown.clone()).await.unwrap();
        let shared = controller.shared.clone();
        let base = format!("http://{}", shared.api_addr);
        let api = tokio::spawn(api::serve(controller.listener, shared.clone()));

        // Nothing started yet.
        assert_eq!(get(format!("{base}/readyz")).await.0, 503);
        assert_eq!(get(format!("{base}/healthz")).await.0, 200);
        shared.ready.store(true, Ordering::SeqCst);
        assert_eq!(get(format!("{base}/readyz")).await, (200, "ready".to_owned()));

        shared.metrics.restarted("dc1-web-1", topology::Role::Web);
        shared.metrics.failed_over();
        assert_eq!(get(format!("{base}/api/events")).await.0, 200);
        let (status, text) = get(format!("{base}/metrics")).await;
        assert_eq!(status, 200);
        for line in [
            "millions_control_nodes{health=\"down\"} 6",
            "millions_control_nodes{health=\"healthy\"} 0",
            "millions_control_node_restarts_total{node=\"dc1-web-1\",role=\"web\"} 1",
            "millions_control_node_restarts_total{node=\"shard0-pg-2\",role=\"postgres\"} 0",
            "millions_control_failovers_total 1",
            "millions_http_requests_total{route=\"/api/events\",method=\"GET\",status=\"200\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }

        // Shutting down: no longer ready.
        shutdown.cancel();
        assert_eq!(get(format!("{base}/readyz")).await, (503, "stopping".to_owned()));
        api.abort();
    }

    #[test]
    fn restarts_back_off_exponentially_up_to_a_cap_and_start_over_after_a_stable_run() {
        let quick = Some(Duration::from_millis(200));
        let mut schedule = vec![];
        let mut last = None;
        for _ in 0..8 {
            let next = restart_backoff(last, quick);
            schedule.push(next.as_secs());
            last = Some(next);
        }
        assert_eq!(schedule, [1, 2, 4, 8, 16, 30, 30, 30]);
        // Never started (died during its start): still a quick death.
        assert_eq!(restart_backoff(Some(Duration::from_secs(4)), None), Duration::from_secs(8));
        // It ran long enough: the next wait is the first one again.
        let stable = Some(STABLE_UPTIME + Duration::from_secs(1));
        assert_eq!(restart_backoff(Some(MAX_BACKOFF), stable), FIRST_BACKOFF);
        assert_eq!(restart_backoff(None, stable), FIRST_BACKOFF);
    }
}
