//! A PostgreSQL node's life in its shard: started as the primary, or as a standby
//! of the current primary — copied from it if it has no data (pg_basebackup),
//! rewound first if it last ran as a primary (pg_rewind), copied afresh if its
//! data cannot be used.

use nodes::PostgresSpec;
use topology::Node;

use crate::cluster::Event;
use crate::configs::{pg_run_spec, pg_spec, pg_spec_from, slot_name};
use crate::decide::{Rejoin, rejoin};
use crate::error::{Context as _, ControlError, process};
use crate::pgadmin;
use crate::shared::Shared;

/// Create `replica`'s replication slot on `primary` unless it exists.
pub(crate) async fn ensure_slot(primary: &PostgresSpec, replica: &Node) -> Result<(), ControlError> {
    pgadmin::ensure_slot(primary, &slot_name(replica)).await
}

/// A fresh copy of `primary` in `replica`'s data directory (pg_basebackup from
/// `source`, the primary as the replica's DC reaches it).
async fn rebuild(
    primary: &PostgresSpec,
    source: &PostgresSpec,
    replica: &PostgresSpec,
    node: &Node,
) -> Result<(), ControlError> {
    tracing::info!(node = node.name, primary = %primary.addr(), via = %source.addr(), "copying the primary (pg_basebackup)");
    let slot = slot_name(node);
    pgadmin::drop_slot(primary, &slot).await?;
    let dir = replica.data_dir.clone();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).file("removing", &dir)?;
    }
    let (p, r) = (source.clone(), replica.clone());
    tokio::task::spawn_blocking(move || nodes::base_backup(&p, &r, &slot)).await?.map_err(process(&node.name))
}

/// Start `spec`'s server (blocking work on a blocking thread).
pub(crate) async fn start(node: &str, spec: PostgresSpec) -> Result<(), ControlError> {
    tokio::task::spawn_blocking(move || nodes::start_postgres(&spec)).await?.map_err(process(node))
}

/// Reload `spec`'s server's configuration.
pub(crate) async fn reload(node: &str, spec: PostgresSpec) -> Result<(), ControlError> {
    tokio::task::spawn_blocking(move || nodes::reload_postgres(&spec)).await?.map_err(process(node))
}

/// After `new` became its shard's primary: every other member's slot on it
/// (before they connect; a replica's start creates its slot too, so a failure
/// is logged, not fatal), then the members still running, but those in
/// `except`, follow it (a reload suffices).
pub(crate) async fn follow_new_primary(shared: &Shared, new: &Node, except: &[&str]) {
    let Some(member) = new.shard else { return };
    let members: Vec<Node> = shared.topology().shard_nodes(member.shard).cloned().collect();
    let new_spec = pg_spec(shared, new);
    for n in members.iter().filter(|n| n.name != new.name) {
        if let Err(e) = ensure_slot(&new_spec, n).await {
            tracing::warn!(node = n.name, error = %e, "creating a replication slot failed");
        }
    }
    for n in members.iter().filter(|n| n.name != new.name && !except.contains(&n.name.as_str())) {
        let spec = pg_run_spec(shared, n, Some(new));
        if nodes::postgres_running(&spec.data_dir) {
            match reload(&n.name, spec).await {
                Ok(()) => {
                    tracing::info!(node = n.name, primary = new.name, "replica follows the new primary")
                }
                Err(e) => tracing::error!(node = n.name, error = %e, "repointing a replica failed"),
            }
        }
    }
}

/// Rewrite every running member of `shard` with the spec it runs with now (the
/// primary's synchronous standbys follow the data centers declared lost; the
/// standbys follow the primary), and reload it.
pub(crate) async fn reconcile_shard(shared: &Shared, shard: u16) {
    let Some(primary) = shared.cluster.primary(shard).and_then(|p| shared.topology().node(&p).cloned())
    else {
        return;
    };
    let members: Vec<Node> = shared.topology().shard_nodes(topology::ShardId(shard)).cloned().collect();
    for n in &members {
        let follow = (n.name != primary.name).then_some(&primary);
        let spec = pg_run_spec(shared, n, follow);
        if nodes::postgres_running(&spec.data_dir)
            && let Err(e) = reload(&n.name, spec).await
        {
            tracing::error!(node = n.name, error = %e, "reloading a member's configuration failed");
        }
    }
}

/// Whether the stopped standby `standby` last ran on an earlier timeline than
/// `primary`'s (a promotion happened since): then it is rewound before it
/// follows (pg_rewind does nothing if its history is a prefix of the primary's).
async fn behind_a_promotion(primary: &PostgresSpec, standby: &PostgresSpec) -> bool {
    let dir = standby.data_dir.clone();
    let Ok(Ok(own)) = tokio::task::spawn_blocking(move || nodes::controldata(&dir)).await else {
        return false;
    };
    // A just-promoted primary names its new timeline only after a checkpoint.
    if pgadmin::checkpoint(primary).await.is_err() {
        return false;
    }
    pgadmin::timeline(primary).await.is_ok_and(|current| own.timeline < current)
}

/// Start a PostgreSQL node in its current role (see the module's docs).
pub(crate) async fn start_node(shared: &Shared, node: &Node) -> Result<(), ControlError> {
    let shard =
        node.shard.ok_or_else(|| ControlError::Invalid(format!("{} is in no shard", node.name)))?.shard.0;
    let current = shared.cluster.primary(shard);
    if current.as_deref() == Some(node.name.as_str()) {
        return start(&node.name, pg_run_spec(shared, node, None)).await;
    }
    let current = current.ok_or_else(|| {
        ControlError::Refused(format!(
            "shard {shard} is failing over; {} waits for its new primary",
            node.name
        ))
    })?;
    let primary =
        shared.topology().node(&current).ok_or_else(|| ControlError::UnknownNode(current.clone()))?.clone();
    let primary_spec = pg_spec(shared, &primary);
    // What the replica copies and rewinds from: through its DC's WAN gateway.
    let source = pg_spec_from(shared, &primary, &node.dc);
    let spec = pg_run_spec(shared, node, Some(&primary));
    let mut plan =
        rejoin(spec.data_dir.join("PG_VERSION").exists(), spec.data_dir.join("standby.signal").exists());
    if plan == Rejoin::Follow && behind_a_promotion(&primary_spec, &spec).await {
        // A standby of an earlier primary may hold WAL its successor never got
        // (a replica next to a primary lost with its DC): it cannot follow the
        // new history until that is thrown away.
        plan = Rejoin::Rewind;
    }
    if plan == Rejoin::Copy {
        rebuild(&primary_spec, &source, &spec, node).await?;
    } else if plan == Rejoin::Rewind {
        // It last ran as a primary: drop what its successor never confirmed.
        ensure_slot(&primary_spec, node).await?;
        // A just-promoted primary's control file names its new timeline only
        // after a checkpoint; before it, pg_rewind sees no divergence and
        // leaves the old primary unable to follow.
        pgadmin::checkpoint(&primary_spec).await?;
        let (target, from) = (spec.clone(), source.clone());
        match tokio::task::spawn_blocking(move || nodes::rewind_postgres(&target, &from)).await? {
            Ok(()) => shared.cluster.record(Event::new(
                shard,
                "rejoined",
                &node.name,
                format!("{} rewound (pg_rewind) and rejoined as a replica of {}", node.name, primary.name),
            )),
            Err(e) => {
                tracing::warn!(node = node.name, error = %e, "pg_rewind failed; copying the primary instead");
                rebuild(&primary_spec, &source, &spec, node).await?;
            }
        }
    } else {
        ensure_slot(&primary_spec, node).await?;
    }
    let first = spec.clone();
    match tokio::task::spawn_blocking(move || nodes::start_postgres(&first)).await? {
        Ok(()) => Ok(()),
        Err(e @ nodes::Error::AlreadyRunning { .. }) => Err(process(&node.name)(e)),
        Err(e) => {
            tracing::warn!(node = node.name, error = %e, "the replica does not start; copying the primary afresh");
            rebuild(&primary_spec, &source, &spec, node).await?;
            start(&node.name, spec).await?;
            shared.cluster.record(Event::new(
                shard,
                "replica-rebuilt",
                &node.name,
                format!("{} rebuilt from {} (pg_basebackup)", node.name, primary.name),
            ));
            Ok(())
        }
    }
}
