//! Losing a whole data center, and bringing it back (`millions chaos dc-down` /
//! `dc-up`).
//!
//! Down: the DC is declared lost (kept in `cluster.json`), and every process placed
//! there is killed with SIGKILL, as a power cut would; the supervisor starts none
//! of them again. The failover watchers replace the primaries that were there with
//! the members holding the most WAL elsewhere, and every shard's primary stops
//! waiting for the lost DC's members ([`topology::Shard::quorum`]: a shard that
//! survives a DC then confirms commits in the DCs it has left, shown as degraded).
//!
//! Up: the DC's nodes start again in order — PostgreSQL members as standbys of the
//! current primaries (rewound or copied), Redis empty (it serves nothing from
//! before), workers, web servers, load balancers, DNS servers — and once its
//! PostgreSQL members stream again the DC is readmitted: the shards go back to
//! their full quorum. DNS sends users there again once its load balancers are
//! healthy.

use std::time::{Duration, Instant};

use serde::Serialize;
use topology::{Node, Role};

use crate::cluster::Event;
use crate::configs::pg_spec;
use crate::error::ControlError;
use crate::shared::Shared;
use crate::{launch, pgadmin, postgres};

/// How long a returning DC's PostgreSQL members may take to stream again.
const REJOIN: Duration = Duration::from_secs(180);

/// What a DC operation did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DcChange {
    /// The data center.
    pub(crate) dc: String,
    /// `down` or `up`.
    pub(crate) state: &'static str,
    /// The nodes killed or started.
    pub(crate) nodes: Vec<String>,
    /// How long it took, in milliseconds.
    pub(crate) took_ms: u64,
}

fn nodes_of(shared: &Shared, dc: &str) -> Result<Vec<Node>, ControlError> {
    if shared.topology().dc(dc).is_none() {
        let topology = shared.topology();
        let names: Vec<&str> = topology.dcs().iter().map(|d| d.name.as_str()).collect();
        return Err(ControlError::UnknownNode(format!(
            "{dc} (no such data center; they are {})",
            names.join(", ")
        )));
    }
    Ok(shared.topology().nodes_in(dc).cloned().collect())
}

/// Take data center `dc` down.
pub(crate) async fn down(shared: &Shared, dc: &str) -> Result<DcChange, ControlError> {
    let started = Instant::now();
    let nodes = nodes_of(shared, dc)?;
    if shared.cluster.lost_dcs().iter().any(|d| d == dc) {
        return Err(ControlError::Refused(format!("{dc} is already down")));
    }
    shared.cluster.update(|s| s.lost_dcs.push(dc.to_owned()))?;
    let mut killed = Vec::new();
    {
        let mut managed = shared.nodes.lock().await;
        for m in managed.iter_mut().rev().filter(|m| m.node.dc == dc) {
            if let Some(id) = m.process.take().filter(|p| p.alive()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(id.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                killed.push(m.node.name.clone());
            }
            if let Some(mut child) = m.child.take() {
                let _ = child.wait();
            }
            m.restart_at = None;
        }
    }
    tracing::warn!(dc, killed = killed.len(), "chaos: data center down");
    // The primaries elsewhere stop waiting for this DC's members.
    for shard in 0..shared.topology().shards().len() as u16 {
        let primary_here = shared.cluster.primary(shard).is_some_and(|p| nodes.iter().any(|n| n.name == p));
        if !primary_here {
            postgres::reconcile_shard(shared, shard).await;
        }
    }
    let detail = format!("{dc} lost: {} processes killed; its nodes stay down until dc-up", killed.len());
    shared.cluster.record(Event::dc("dc-down", dc, detail));
    Ok(DcChange {
        dc: dc.to_owned(),
        state: "down",
        nodes: killed,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

/// Bring data center `dc` back.
pub(crate) async fn up(shared: &Shared, dc: &str) -> Result<DcChange, ControlError> {
    let started = Instant::now();
    let nodes = nodes_of(shared, dc)?;
    if !shared.cluster.lost_dcs().iter().any(|d| d == dc) {
        return Err(ControlError::Refused(format!("{dc} is not down")));
    }
    let mut order = nodes.clone();
    let rank = |n: &Node| {
        [
            Role::Wan,
            Role::Postgres,
            Role::Redis,
            Role::Worker,
            Role::Web,
            Role::LoadBalancer,
            Role::Cdn,
            Role::Dns,
        ]
        .iter()
        .position(|r| *r == n.role)
    };
    order.sort_by_key(rank);
    let mut started_nodes = Vec::new();
    for node in &order {
        if shared.running(&node.name).await {
            continue;
        }
        if node.role == Role::Redis {
            // Whatever it held before the outage is stale: it starts empty.
            let dir = crate::files::node_dir(&shared.opts.run_dir, &node.name);
            for file in ["dump.rdb", "appendonly.aof", "appendonlydir"] {
                let path = dir.join(file);
                let _ =
                    if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            }
        }
        launch::start_node(shared, &node.name).await?;
        started_nodes.push(node.name.clone());
    }
    // Readmitted once every PostgreSQL member placed here streams from its primary.
    let deadline = Instant::now() + REJOIN;
    let members: Vec<&Node> = nodes.iter().filter(|n| n.role == Role::Postgres).collect();
    loop {
        let mut behind = Vec::new();
        for m in &members {
            let shard = m.shard.expect("a PostgreSQL node belongs to a shard").shard.0;
            let Some(primary) = shared.cluster.primary(shard) else {
                behind.push(m.name.clone());
                continue;
            };
            if primary == m.name {
                continue;
            }
            let node = shared.topology().node(&primary).cloned().expect("a primary is a node");
            let streaming = pgadmin::probe_primary(&pg_spec(shared, &node)).await.map(|p| p.streaming);
            if !streaming.is_ok_and(|s| s.contains(&m.name)) {
                behind.push(m.name.clone());
            }
        }
        if behind.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(ControlError::NotReady(format!(
                "{dc} started, but {} did not stream again within {REJOIN:?}; it stays lost",
                behind.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shared.cluster.update(|s| s.lost_dcs.retain(|d| d != dc))?;
    for shard in 0..shared.topology().shards().len() as u16 {
        postgres::reconcile_shard(shared, shard).await;
    }
    let detail =
        format!("{dc} back: {} nodes started, its replicas stream, full quorum again", started_nodes.len());
    shared.cluster.record(Event::dc("dc-up", dc, detail));
    Ok(DcChange {
        dc: dc.to_owned(),
        state: "up",
        nodes: started_nodes,
        took_ms: started.elapsed().as_millis() as u64,
    })
}
