//! `millions shard add`: a new shard cluster joins a running topology.
//!
//! The request names where the shard's primary and replicas go (by default
//! where the last shard's are) and what its acknowledged writes survive. It is
//! checked by the topology's own rules on the topology with the shard appended,
//! and the new nodes' addresses must be free; a refused request changes
//! nothing. Then, in an order a controller killed at any point resumes from:
//! 1. the run directory's topology file gets the `[[shard]]` (one rename); a
//!    restarted controller reads it and takes the shard as joining;
//! 2. the topology in force is replaced, the shard is recorded in `cluster.json`
//!    as *joining* (the directory written down first if it was the even split,
//!    so that no bucket changes owner), the WAN gateways relay to its nodes;
//! 3. its primary is made (initdb), started and migrated, its replicas are made
//!    from it and stream, a synchronous shard switches to synchronous commit —
//!    the steps every shard goes through at start-up, with the same supervision;
//! 4. the shard joins the published map (a higher epoch) with no bucket: web
//!    servers and workers open pools to it, and buckets move onto it with
//!    `millions shard move` or `rebalance`; its failover watcher starts.
//!
//! A request while a shard is still joining (an add that failed half-way)
//! finishes that shard instead, and must not name another placement.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use topology::{Node, Topology};

use crate::cluster::Event;
use crate::error::{Context as _, ControlError};
use crate::files::topology_file;
use crate::shared::{Managed, Shared};
use crate::{failover, launch};

/// Where a new shard goes; every field defaults to the last shard's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    /// The DC of its primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// The DC of each replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<String>>,
    /// `async` or `sync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<String>,
    /// What a synchronous shard's acknowledged writes survive: `node` or `dc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survives: Option<String>,
}

impl AddRequest {
    fn is_empty(&self) -> bool {
        *self == AddRequest::default()
    }
}

/// What an add did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Added {
    /// The new shard's id.
    pub(crate) shard: u16,
    /// Its PostgreSQL nodes, the primary first: name, DC, address.
    pub(crate) nodes: Vec<AddedNode>,
    /// `sync` or `async`.
    pub(crate) replication: String,
    /// With synchronous replication, what its acknowledged writes survive.
    pub(crate) survives: Option<String>,
    /// The epoch of the map it joined.
    pub(crate) epoch: u64,
    /// How long the add took, in milliseconds.
    pub(crate) took_ms: u64,
    /// Whether this finished a shard an earlier add left joining.
    pub(crate) resumed: bool,
}

/// One node of an added shard.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AddedNode {
    /// Its name (`shardN-pg-M`).
    pub(crate) name: String,
    /// Its DC.
    pub(crate) dc: String,
    /// Where it listens.
    pub(crate) addr: String,
}

/// The `[[shard]]` section `request` asks for, its defaults taken from the
/// topology's last shard. Refused, naming the field, for a DC the topology does
/// not have or a word that is not a setting (so the section written can be
/// nothing but what was checked).
pub(crate) fn shard_section(topology: &Topology, request: &AddRequest) -> Result<String, ControlError> {
    let bad = |why: String| Err(ControlError::BadRequest(why));
    let last = topology.shards().last().expect("a topology has a shard");
    let dcs: Vec<&str> = topology.dcs().iter().map(|d| d.name.as_str()).collect();
    let known = |what: &str, dc: &str| -> Result<(), ControlError> {
        if dcs.contains(&dc) {
            Ok(())
        } else {
            Err(ControlError::BadRequest(format!(
                "{what} {dc:?} is not a data center of this topology ({})",
                dcs.join(", ")
            )))
        }
    };
    let primary = request.primary.clone().unwrap_or_else(|| last.primary_dc.clone());
    known("primary", &primary)?;
    let replicas = request.replicas.clone().unwrap_or_else(|| last.replica_dcs.clone());
    for dc in &replicas {
        known("replica", dc)?;
    }
    let last_replication = match last.replication {
        topology::Replication::Sync => "sync",
        topology::Replication::Async => "async",
    };
    let last_survives = last.survives().map(|s| match s {
        topology::Survives::Node => "node",
        topology::Survives::Dc => "dc",
    });
    // An explicit placement does not inherit what the last shard survives.
    let placed = request.primary.is_some() || request.replicas.is_some();
    let replication = match request.replication.as_deref() {
        None if placed && request.survives.is_none() => None,
        None => Some(last_replication),
        Some(r @ ("sync" | "async")) => Some(r),
        Some(other) => return bad(format!("replication {other:?} is not one of sync, async")),
    };
    let survives = match request.survives.as_deref() {
        None if placed || replication == Some("async") => None,
        None => last_survives,
        Some(s @ ("node" | "dc")) => Some(s),
        Some(other) => return bad(format!("survives {other:?} is not one of node, dc")),
    };
    let mut section = String::from("\n[[shard]]                   # added by `millions shard add`\n");
    if let Some(r) = replication {
        section.push_str(&format!("replication = \"{r}\"\n"));
    }
    if let Some(s) = survives {
        section.push_str(&format!("survives = \"{s}\"\n"));
    }
    section.push_str(&format!("primary = {primary:?}\n"));
    let list: Vec<String> = replicas.iter().map(|dc| format!("{dc:?}")).collect();
    section.push_str(&format!("replicas = [{}]\n", list.join(", ")));
    Ok(section)
}

/// Add a shard as `request` says (or finish the one still joining).
pub(crate) async fn add(shared: &Shared, request: &AddRequest) -> Result<Added, ControlError> {
    let started = Instant::now();
    let _one = shared
        .adding
        .try_lock()
        .map_err(|_| ControlError::Refused("a shard is being added already; add the next after it".into()))?;
    let state = shared.cluster.snapshot();
    let joining = state.shards.iter().position(|s| s.joining);
    let (shard, resumed) = match joining {
        Some(shard) if !request.is_empty() => {
            return Err(ControlError::Refused(format!(
                "shard {shard} is still joining: `millions shard add` without a placement finishes it first"
            )));
        }
        Some(shard) => (shard as u16, true),
        None => (declare(shared, request)?, false),
    };
    hold(shared, "add").await;
    let topology = shared.topology();
    let members: Vec<Node> = topology.shard_nodes(topology::ShardId(shard)).cloned().collect();
    {
        let mut nodes = shared.nodes.lock().await;
        for node in &members {
            if !nodes.iter().any(|m| m.node.name == node.name) {
                // Not supervised until its first start (which clears this).
                let mut m = Managed::new(node.clone());
                m.stopped_on_purpose = true;
                nodes.push(m);
            }
        }
    }
    // (The Prometheus targets follow at the next scrape round.)
    crate::wan::add_links(shared).await?;
    tracing::info!(shard, resumed, "adding a shard: starting its primary");
    launch::start_primary(shared, shard).await?;
    let url = crate::configs::shard_urls(shared).swap_remove(usize::from(shard));
    data::migrate(&[url]).await.map_err(ControlError::Migrate)?;
    let go_on = || if shared.shutdown.is_cancelled() { Err(ControlError::ShutDown) } else { Ok(()) };
    hold(shared, "replicas").await;
    launch::start_replicas(shared, shard, &go_on).await?;
    let epoch = shared.cluster.map().epoch;
    tokio::spawn(failover::watch_shard(shared.clone(), shard));
    let spec = &topology.shards()[usize::from(shard)];
    let added = Added {
        shard,
        nodes: members
            .iter()
            .map(|n| AddedNode { name: n.name.clone(), dc: n.dc.clone(), addr: n.addr.to_string() })
            .collect(),
        replication: match spec.replication {
            topology::Replication::Sync => "sync".into(),
            topology::Replication::Async => "async".into(),
        },
        survives: spec.survives().map(|s| {
            match s {
                topology::Survives::Node => "node",
                topology::Survives::Dc => "dc",
            }
            .to_owned()
        }),
        epoch,
        took_ms: started.elapsed().as_millis() as u64,
        resumed,
    };
    let names: Vec<&str> = added.nodes.iter().map(|n| n.name.as_str()).collect();
    shared.cluster.record(Event::new(
        shard,
        "shard-added",
        &members[0].name,
        format!(
            "shard {shard} joined the map at epoch {epoch} with no bucket ({}; {} ms)",
            names.join(", "),
            added.took_ms
        ),
    ));
    shared.dashboard.nudge();
    Ok(added)
}

/// For drills, as a bucket move's ([`crate::files::HOLD_VAR`]): an add waits
/// while the run directory's hold file names `step` (or until the controller
/// stops) — `add` once its shard is declared, `replicas` once its primary runs
/// and is migrated — so a process can be killed there.
async fn hold(shared: &Shared, step: &str) {
    if std::env::var(crate::files::HOLD_VAR).is_err() {
        return;
    }
    let file = shared.opts.run_dir.join(crate::files::HOLD_FILE);
    let named = || std::fs::read_to_string(&file).is_ok_and(|s| s.trim() == step);
    if named() {
        tracing::warn!(step, file = %file.display(), "a shard add holds for a drill");
    }
    while named() && !shared.shutdown.is_cancelled() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Check `request` on the topology with its shard appended, write that topology
/// to the run directory and put it in force with the shard joining; returns
/// the shard's id. Refused, changing nothing, for a bad request or a taken
/// address.
fn declare(shared: &Shared, request: &AddRequest) -> Result<u16, ControlError> {
    let _edit = shared.topology_edit.lock().expect("topology edit lock poisoned");
    let current = shared.topology();
    let path = topology_file(&shared.opts.run_dir);
    let text = std::fs::read_to_string(&path).file("reading", &path)?;
    let section = shard_section(&current, request)?;
    let next_text = format!("{}\n{section}", text.trim_end());
    let next = topology::parse(&next_text, &path.display().to_string())
        .map_err(|e| ControlError::BadRequest(format!("the topology with the new shard is refused: {e}")))?;
    let shard = current.shards().len() as u16;
    check_free(&current, &next, shard)?;
    crate::files::replace(&path, &next_text)?;
    shared.set_topology(next.clone());
    shared.cluster.add_shards(&next)?;
    tracing::info!(shard, "a shard was added to the topology; building it");
    Ok(shard)
}

/// Whether every address the new shard's nodes and the relays to them need can
/// be bound now.
fn check_free(current: &Topology, next: &Topology, shard: u16) -> Result<(), ControlError> {
    let mut wanted: Vec<(String, std::net::SocketAddr)> =
        next.shard_nodes(topology::ShardId(shard)).map(|n| (n.name.clone(), n.addr)).collect();
    for gw in next.nodes_of(topology::Role::Wan) {
        let before: Vec<_> = current.wan_links(&gw.dc).into_iter().map(|(a, _)| a).collect();
        for (addr, to) in next.wan_links(&gw.dc) {
            if !before.contains(&addr) {
                wanted.push((format!("{}'s relay to {}", gw.name, to.name), addr));
            }
        }
    }
    for (what, addr) in wanted {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(ControlError::Refused(format!("{what} cannot listen on {addr}: {e}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default() -> Topology {
        topology::preset("default").unwrap()
    }

    fn with(t: &Topology, request: &AddRequest) -> Result<Topology, String> {
        let text =
            format!("{}\n{}", topology::preset_text("default").unwrap(), shard_section(t, request).unwrap());
        topology::parse(&text, "test").map_err(|e| e.to_string())
    }

    #[test]
    fn a_new_shard_is_placed_like_the_last_unless_told_otherwise() {
        let t = default();
        let next = with(&t, &AddRequest::default()).unwrap();
        let s = &next.shards()[2];
        assert_eq!((s.primary_dc.as_str(), s.replica_dcs.clone()), ("dc2", vec!["dc2".into(), "dc1".into()]));
        assert_eq!(s.survives(), Some(topology::Survives::Dc));
        // Every node that was there keeps its address and relay ports.
        for node in t.nodes() {
            let same = next.node(&node.name).unwrap();
            assert_eq!(same.addr, node.addr, "{}", node.name);
            for dc in ["dc1", "dc2"] {
                assert_eq!(next.address_from(dc, same), t.address_from(dc, node), "{} from {dc}", node.name);
            }
        }
        let placed = AddRequest { primary: Some("dc1".into()), replicas: Some(vec![]), ..Default::default() };
        let next = with(&t, &placed).unwrap();
        let s = &next.shards()[2];
        assert_eq!((s.primary_dc.as_str(), s.replica_dcs.len(), s.survives()), ("dc1", 0, None));
    }

    #[test]
    fn bad_requests_are_refused_by_name() {
        let t = default();
        let err = |r: AddRequest| shard_section(&t, &r).unwrap_err().to_string();
        assert!(err(AddRequest { primary: Some("dc9".into()), ..Default::default() }).contains("\"dc9\""));
        assert!(
            err(AddRequest { replicas: Some(vec!["x\"]".into()]), ..Default::default() }).contains("replica")
        );
        assert!(
            err(AddRequest { replication: Some("fast".into()), ..Default::default() })
                .contains("sync, async")
        );
        assert!(err(AddRequest { survives: Some("city".into()), ..Default::default() }).contains("node, dc"));
        // Checked by the topology's rules: a DC-safe shard needs a replica elsewhere.
        let lonely = AddRequest {
            primary: Some("dc1".into()),
            replicas: Some(vec!["dc1".into()]),
            survives: Some("dc".into()),
            ..Default::default()
        };
        let e = with(&t, &lonely).unwrap_err();
        assert!(e.contains("survives = \"dc\" needs a replica in another DC"), "{e}");
    }
}
