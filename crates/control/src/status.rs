//! What `millions status` shows: every node's process and health, and for
//! PostgreSQL its role and replication lag.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use topology::Role;

use crate::configs::pg_spec;
use crate::pgadmin;
use crate::shared::Shared;

/// One node, as the controller sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its unique name.
    pub name: String,
    /// `postgres`, `redis`, `worker`, `web`, `lb`.
    pub role: String,
    /// Its data center.
    pub dc: String,
    /// Where it listens.
    pub addr: String,
    /// The same, under the name the public interface gives it.
    #[serde(default)]
    pub address: String,
    /// `healthy`, `unhealthy`, `down` or `stopped` ([`NodeStatus::health`]).
    #[serde(default)]
    pub health: String,
    /// Its process id, while it runs.
    pub pid: Option<u32>,
    /// Whether its process is alive.
    pub running: bool,
    /// Whether it answers its health check.
    pub healthy: bool,
    /// Stopped by an operator (not restarted).
    pub stopped: bool,
    /// Times the supervisor restarted it.
    pub restarts: u32,
    /// For PostgreSQL nodes.
    pub pg: Option<PgStatus>,
}

impl NodeStatus {
    /// `healthy`, `unhealthy` (runs, fails its check), `down` (not running) or
    /// `stopped` (on purpose): what `millions status` and `/metrics` show.
    pub fn health(&self) -> &'static str {
        match (self.running, self.healthy, self.stopped) {
            (_, _, true) => "stopped",
            (false, _, _) => "down",
            (true, false, _) => "unhealthy",
            (true, true, _) => "healthy",
        }
    }
}

/// A PostgreSQL node's place in its shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgStatus {
    /// The shard.
    pub shard: u16,
    /// `primary` or `replica` (what the server says), or `unknown` when it is down.
    pub role: String,
    /// For a replica: its replication state as its primary reports it (`streaming`).
    pub replication: Option<String>,
    /// For a replica: bytes of WAL its primary has that it has not replayed.
    pub lag_bytes: Option<i64>,
    /// For a replica: how long ago its primary wrote what it last replayed
    /// (`replay_lag`), in milliseconds; 0 when caught up.
    #[serde(default)]
    pub lag_ms: Option<f64>,
}

/// What a shard's acknowledged writes survive now, and what an operator should know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardStatus {
    /// The shard.
    pub shard: u16,
    /// Its primary; `None` while a failover is under way.
    pub primary: Option<String>,
    /// What the topology asks its acknowledged writes to survive: `dc`, `node`,
    /// or `nothing` (asynchronous).
    pub promise: String,
    /// What they survive now: the promise, or less while data centers are lost.
    pub survives: String,
    /// The standbys any one of which must confirm a commit.
    pub quorum: Vec<String>,
    /// Of those, the ones streaming from the primary now.
    pub quorum_streaming: Vec<String>,
    /// Weaker than the promise because data centers are lost.
    pub degraded: bool,
    /// What an operator should know (writes waiting, a degraded promise).
    pub warnings: Vec<String>,
    /// How many of the 4096 buckets it owns in the directory in force.
    #[serde(default)]
    pub buckets: usize,
    /// Its database's size on its primary, in bytes (absent while the primary
    /// does not answer).
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Its rows, estimated from the planner's statistics.
    #[serde(default)]
    pub rows_estimate: Option<u64>,
    /// Its load: the queries per second every web server and worker sent it
    /// over the last minute of scraped metrics (absent before two scrapes).
    #[serde(default)]
    pub queries_per_sec: Option<f64>,
}

/// Each shard's size and rows, asked of its primary (all at once, each bounded
/// in time); a shard whose primary does not answer keeps `None`.
pub(crate) async fn fill_sizes(shared: &Shared, shards: &mut [ShardStatus]) {
    let asks: Vec<_> = shards
        .iter()
        .map(|s| {
            let node = s.primary.as_ref().and_then(|p| shared.topology().node(p).cloned());
            async move {
                let node = node?;
                pgadmin::shard_size(&pg_spec(shared, &node), crate::shared::DATABASE).await.ok()
            }
        })
        .collect();
    let sizes = futures::future::join_all(asks).await;
    for (shard, size) in shards.iter_mut().zip(sizes) {
        if let Some((bytes, rows)) = size {
            shard.size_bytes = Some(bytes);
            shard.rows_estimate = Some(rows);
        }
    }
}

/// How far back a shard's load is measured.
const LOAD_WINDOW_MS: i64 = 60_000;

/// Each shard's queries per second over the last [`LOAD_WINDOW_MS`]: the
/// increase of every web server's and worker's `millions_db_queries_total` of
/// that shard in the scraped history, over the time it covers. A shard no
/// process has queried twice in the window keeps `None`.
pub(crate) fn fill_load(shared: &Shared, shards: &mut [ShardStatus]) {
    let since = crate::history::now_ms() - LOAD_WINDOW_MS;
    let mut per: HashMap<u16, f64> = HashMap::new();
    for series in shared.dashboard.query(&["millions_db_queries_total"], None, since) {
        let Some(shard) = series.labels.get("shard").and_then(|s| s.parse::<u16>().ok()) else { continue };
        if let [(t0, v0), .., (t1, v1)] = series.points.as_slice()
            && t1 > t0
        {
            // A counter that went down: its process restarted; what it counted since.
            let increase = if v1 >= v0 { v1 - v0 } else { *v1 };
            *per.entry(shard).or_default() += increase * 1000.0 / (t1 - t0) as f64;
        }
    }
    for s in shards {
        s.queries_per_sec = per.get(&s.shard).copied();
    }
}

/// Every shard's durability, from the decisions and the standbys streaming now.
pub(crate) fn shards(shared: &Shared, nodes: &[NodeStatus]) -> Vec<ShardStatus> {
    let state = shared.cluster.snapshot();
    let lost: Vec<&str> = state.lost_dcs.iter().map(String::as_str).collect();
    let directory = crate::reshard::directory(&state).ok();
    let streaming = |name: &str| {
        nodes.iter().any(|n| {
            n.name == name && n.pg.as_ref().is_some_and(|p| p.replication.as_deref() == Some("streaming"))
        })
    };
    shared
        .topology()
        .shards()
        .iter()
        .zip(&state.shards)
        .map(|(shard, decided)| {
            let promise = shard
                .survives()
                .map_or("nothing", |s| if s == topology::Survives::Dc { "dc" } else { "node" });
            let quorum = decided.primary.as_deref().and_then(|p| shard.quorum(p, &lost));
            let degraded = promise != "nothing" && quorum.as_ref().is_none_or(|q| q.degraded);
            let survives = match (&quorum, degraded) {
                (None, _) => "nothing",
                (Some(_), true) => "node",
                (Some(_), false) => promise,
            };
            let names = quorum.map(|q| q.standbys).unwrap_or_default();
            let live: Vec<String> = names.iter().filter(|n| streaming(n)).cloned().collect();
            let mut warnings = Vec::new();
            if decided.joining {
                warnings.push(
                    "joining: being built by `millions shard add`, not in the published map yet".to_owned(),
                );
            }
            if decided.primary.is_none() {
                warnings.push("no primary: a failover is under way, writes wait".to_owned());
            } else if promise != "nothing" && !names.is_empty() && live.is_empty() {
                warnings.push(format!(
                    "no standby that may confirm a commit is streaming (one of {} must): writes wait",
                    names.join(", ")
                ));
            }
            if degraded {
                warnings.push(format!(
                    "degraded: survives {} while {} {} lost (promised: {promise})",
                    if survives == "node" { "a node" } else { "nothing" },
                    state.lost_dcs.join(", "),
                    if state.lost_dcs.len() == 1 { "is" } else { "are" }
                ));
            }
            ShardStatus {
                shard: shard.id.0,
                primary: decided.primary.clone(),
                promise: promise.to_owned(),
                survives: survives.to_owned(),
                quorum: names,
                quorum_streaming: live,
                degraded,
                warnings,
                buckets: directory.as_ref().map_or(0, |d| d.buckets_of(shard.id).len()),
                size_bytes: None,
                rows_estimate: None,
                queries_per_sec: None,
            }
        })
        .collect()
}

/// The status of every node.
pub(crate) async fn collect(shared: &Shared) -> Vec<NodeStatus> {
    let snapshot: Vec<_> = {
        let mut nodes = shared.nodes.lock().await;
        nodes
            .iter_mut()
            .map(|m| (m.node.clone(), m.process.map(|p| p.pid), m.alive(), m.stopped_on_purpose, m.restarts))
            .collect()
    };
    // Replication as each running primary reports it: application_name → (state, lag).
    let mut replication: HashMap<String, (String, i64, f64)> = HashMap::new();
    let mut in_recovery: HashMap<String, bool> = HashMap::new();
    for (node, ..) in snapshot.iter().filter(|s| s.0.role == Role::Postgres && s.2) {
        let spec = pg_spec(shared, node);
        if let Ok(recovering) = pgadmin::in_recovery(&spec).await {
            in_recovery.insert(node.name.clone(), recovering);
            if !recovering {
                for standby in pgadmin::standbys(&spec).await.unwrap_or_default() {
                    replication.insert(standby.name, (standby.state, standby.lag_bytes, standby.lag_ms));
                }
            }
        }
    }
    let mut out = vec![];
    for (node, pid, running, stopped, restarts) in snapshot {
        let healthy = running
            && match node.role {
                Role::Web | Role::Worker | Role::LoadBalancer | Role::Dns | Role::Wan | Role::Cdn => {
                    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build();
                    match client {
                        Ok(c) => c
                            .get(format!("http://{}/readyz", crate::launch::readyz_addr(&node)))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success()),
                        Err(_) => false,
                    }
                }
                Role::Redis => {
                    let (addr, pw) = (node.addr, shared.secrets.redis.clone());
                    tokio::task::spawn_blocking(move || {
                        nodes::redis_ping(addr, &pw, Duration::from_secs(1)).is_ok()
                    })
                    .await
                    .unwrap_or(false)
                }
                Role::Postgres => in_recovery.contains_key(&node.name),
            };
        let pg = node.shard.map(|member| {
            let role = match in_recovery.get(&node.name) {
                Some(true) => "replica",
                Some(false) => "primary",
                None => "unknown",
            };
            let rep = replication.get(&node.name);
            PgStatus {
                shard: member.shard.0,
                role: role.to_owned(),
                replication: rep.map(|r| r.0.clone()),
                lag_bytes: rep.map(|r| r.1),
                lag_ms: rep.map(|r| r.2),
            }
        });
        let mut status = NodeStatus {
            name: node.name.clone(),
            role: node.role.to_string(),
            dc: node.dc.clone(),
            addr: node.addr.to_string(),
            address: node.addr.to_string(),
            health: String::new(),
            pid,
            running,
            healthy,
            stopped,
            restarts,
            pg,
        };
        status.health = status.health().to_owned();
        out.push(status);
    }
    out
}
