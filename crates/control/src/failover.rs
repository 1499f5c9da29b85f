//! Watching every shard's PostgreSQL servers: which replicas serve reads, and
//! when the primary is lost, failover.
//!
//! One task per shard probes its primary every [`PROBE_INTERVAL`]
//! ([`crate::pgadmin::probe_primary`]); what to conclude is [`decide`]'s.
//! - A replica that stops streaming leaves the published map (reads stop
//!   going to it) and returns once it streams again; the supervisor restarts a
//!   dead one, rebuilding it from the primary when its data cannot be used.
//! - A primary that fails [`decide::CONFIRM_PROBES`] probes in a row is lost: the
//!   map drops it at once (writes fail fast), it is fenced (killed if its process
//!   still runs: it can never take a write again; when it restarts, it is rewound
//!   into a replica of its successor), the member holding the most WAL is
//!   promoted, the others follow it, and the new map is published.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use topology::Node;

use crate::cluster::Event;
use crate::configs::{pg_run_spec, pg_spec};
use crate::decide::{self, Candidate, PrimaryProbe, PrimaryVerdict, PrimaryWatch, Promotion};
use crate::error::{ControlError, process};
use crate::shared::Shared;
use crate::{launch, pgadmin, postgres};

/// How often each shard's servers are probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// Watch every shard until shutdown.
pub(crate) async fn watch(shared: Shared) {
    let tasks: Vec<_> = (0..shared.topology().shards().len() as u16)
        .map(|shard| tokio::spawn(watch_shard(shared.clone(), shard)))
        .collect();
    shared.shutdown.cancelled().await;
    for t in tasks {
        t.abort();
    }
}

pub(crate) async fn watch_shard(shared: Shared, shard: u16) {
    let members: Vec<Node> = shared.topology().shard_nodes(topology::ShardId(shard)).cloned().collect();
    let names: Vec<String> = members.iter().map(|n| n.name.clone()).collect();
    let mut primary_watch = PrimaryWatch::default();
    // The primary is probed over one kept connection, not a new one each time.
    let mut prober = pgadmin::Prober::default();
    // Replicas known lost (so each loss is logged once).
    let mut lost: HashSet<String> = HashSet::new();
    // A failover that failed half-way (the map has no primary): the lost
    // primary and when it was first missed, to try again.
    let mut unfinished: Option<(Node, Instant)> = None;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
        let Some(primary_name) = shared.cluster.primary(shard) else {
            if let Some((old, since)) = &unfinished {
                match failover(&shared, shard, old, &members, *since).await {
                    Ok(()) => unfinished = None,
                    Err(e) => tracing::error!(shard, error = %e, "failover failed again; retrying"),
                }
            }
            continue;
        };
        let Some(primary) = members.iter().find(|n| n.name == primary_name) else { continue };
        // A shard whose every member is in lost data centers waits for dc-up.
        let lost_dcs = shared.cluster.lost_dcs();
        if members.iter().all(|m| lost_dcs.contains(&m.dc)) {
            primary_watch.reset();
            continue;
        }
        if shared.stopped_on_purpose(&primary.name).await {
            primary_watch.reset();
            continue;
        }
        let probed = prober.probe_primary(&pg_spec(&shared, primary)).await;
        let outcome = match &probed {
            Ok(p) if !p.in_recovery => PrimaryProbe::Primary,
            Ok(_) => PrimaryProbe::InRecovery,
            Err(_) => PrimaryProbe::Unreachable,
        };
        match primary_watch.observe(outcome, Instant::now()) {
            PrimaryVerdict::Healthy => {}
            PrimaryVerdict::Suspect(failures) => {
                tracing::debug!(shard, node = primary.name, failures, ?outcome, "primary probe failed");
                continue;
            }
            PrimaryVerdict::Lost { since } => {
                if members.len() > 1
                    && let Err(e) = failover(&shared, shard, primary, &members, since).await
                {
                    tracing::error!(shard, error = %e, "failover failed; retrying");
                    unfinished = Some((primary.clone(), since));
                }
                continue;
            }
        }
        let streaming: HashSet<String> =
            probed.map(|p| p.streaming.into_iter().collect()).unwrap_or_default();
        let (now_lost, back) = decide::replica_changes(&names, &primary.name, &streaming, &mut lost);
        for n in now_lost {
            shared.cluster.record(Event::new(
                shard,
                "replica-lost",
                &n,
                format!("{n} is not streaming from {}; reads no longer go to it", primary.name),
            ));
        }
        for n in back {
            shared.cluster.record(Event::new(
                shard,
                "replica-back",
                &n,
                format!("{n} streams from {} again and serves reads", primary.name),
            ));
        }
        let replicas = decide::read_replicas(&names, &primary.name, &streaming);
        let changed = shared.cluster.update(|s| {
            let mine = &mut s.shards[shard as usize];
            if mine.primary.as_deref() == Some(primary.name.as_str()) {
                mine.replicas = replicas;
            }
        });
        if let Err(e) = changed {
            tracing::error!(shard, error = %e, "publishing the replica set");
        }
    }
}

/// What each member but `old` is, for [`decide::choose_promotion`].
async fn candidates(shared: &Shared, old: &Node, members: &[Node]) -> Vec<(String, Candidate)> {
    let mut found = Vec::new();
    for n in members.iter().filter(|n| n.name != old.name) {
        let candidate = if shared.stopped_on_purpose(&n.name).await {
            Candidate::StoppedOnPurpose
        } else {
            match pgadmin::wal_position(&pg_spec(shared, n)).await {
                Ok(p) if p.in_recovery => {
                    tracing::info!(node = n.name, wal = p.lsn, "failover candidate");
                    Candidate::Standby { lsn: p.lsn }
                }
                Ok(_) => Candidate::Promoted,
                Err(e) => {
                    tracing::warn!(node = n.name, error = %e, "candidate unreachable");
                    Candidate::Unreachable
                }
            }
        };
        found.push((n.name.clone(), candidate));
    }
    found
}

/// Replace the lost primary `old` of `shard`.
async fn failover(
    shared: &Shared,
    shard: u16,
    old: &Node,
    members: &[Node],
    since: Instant,
) -> Result<(), ControlError> {
    let op = shared.shard_op(shard);
    let _changing = op.lock().await;
    match shared.cluster.primary(shard) {
        // A switchover replaced it meanwhile.
        Some(p) if p != old.name => return Ok(()),
        // A switchover that gave up restarted it while the probes were failing.
        Some(_) if pgadmin::probe_primary(&pg_spec(shared, old)).await.is_ok_and(|p| !p.in_recovery) => {
            return Ok(());
        }
        _ => {}
    }
    let detection = since.elapsed();
    tracing::warn!(
        shard,
        node = old.name,
        detection_ms = detection.as_millis() as u64,
        "primary lost; failing over"
    );
    // Writes fail fast from here on: no process may keep writing to `old`.
    // Replicas keep serving reads (each read still respects its session's floor).
    shared.cluster.update(|s| s.shards[shard as usize].primary = None)?;
    // Fence: if its process still runs (hung, or cut off), it dies now. When it
    // is started again it is not the primary, so it starts as a rewound replica.
    if let Some(id) = shared.node_process(&old.name).await
        && id.alive()
    {
        tracing::warn!(node = old.name, pid = id.pid, "fencing the old primary (SIGKILL)");
        tokio::task::spawn_blocking(move || nodes::stop_process(id, Duration::ZERO))
            .await?
            .map_err(process(&old.name))?;
    }
    let old_spec = pg_spec(shared, old);
    if nodes::postgres_running(&old_spec.data_dir) {
        let dir = old_spec.data_dir.clone();
        tokio::task::spawn_blocking(move || nodes::stop_postgres(&dir, nodes::StopMode::Immediate))
            .await?
            .map_err(process(&old.name))?;
    }

    let (new, promoted) = match decide::choose_promotion(&candidates(shared, old, members).await) {
        Promotion::Promote(name) => (name, false),
        // An earlier attempt of this failover promoted it, then failed later on.
        Promotion::Finish(name) => {
            tracing::warn!(node = name, "already promoted by an earlier attempt; finishing that failover");
            (name, true)
        }
        Promotion::SplitBrain(names) => {
            return Err(ControlError::Refused(format!(
                "shard {shard}: {} are all out of recovery (two primaries); not choosing — stop all but one",
                names.join(" and ")
            )));
        }
        Promotion::Nobody => {
            // Nobody to promote, and nothing was promoted (a promotion is recorded
            // in the map right after it succeeds): the old primary is still the only
            // copy, and starting it again as the primary is safe — once its data
            // center is back, if it was lost with it (the shard waits till then).
            shared.cluster.update(|s| s.shards[shard as usize].primary = Some(old.name.clone()))?;
            if shared.cluster.lost_dcs().contains(&old.dc) {
                shared.cluster.record(Event::new(
                    shard,
                    "shard-unavailable",
                    &old.name,
                    format!(
                        "no member of shard {shard} outside lost {} could be promoted; it waits for dc-up",
                        old.dc
                    ),
                ));
                return Ok(());
            }
            launch::start_node(shared, &old.name).await?;
            shared.cluster.record(Event::new(
                shard,
                "primary-restarted",
                &old.name,
                format!("no replica could be promoted; {} restarted as the primary", old.name),
            ));
            return Ok(());
        }
    };
    let new = members.iter().find(|n| n.name == new).expect("a candidate is a member");
    let new_spec = pg_spec(shared, new);
    if !promoted {
        let dir = new_spec.data_dir.clone();
        tokio::task::spawn_blocking(move || nodes::promote_postgres(&dir))
            .await?
            .map_err(process(&new.name))?;
    }
    // Recorded at once: from here on the old primary can only come back as a
    // standby of this one, whatever fails below.
    shared.cluster.update(|s| {
        let mine = &mut s.shards[shard as usize];
        mine.primary = Some(new.name.clone());
        mine.replicas.retain(|r| *r != new.name);
    })?;
    let total = since.elapsed();
    // Its control file names the new timeline only after a checkpoint, and
    // pg_rewind of the old primary reads it there.
    if let Err(e) = pgadmin::checkpoint(&new_spec).await {
        tracing::warn!(node = new.name, error = %e, "checkpoint after promotion failed");
    }
    postgres::follow_new_primary(shared, new, &[&old.name]).await;
    // Its own standbys as a primary, given the data centers lost now.
    if let Err(e) = postgres::reload(&new.name, pg_run_spec(shared, new, None)).await {
        tracing::error!(node = new.name, error = %e, "setting the new primary's synchronous standbys failed");
    }
    let mut event = Event::new(
        shard,
        "failover",
        &new.name,
        format!("{} lost; {} promoted (it held the most WAL)", old.name, new.name),
    );
    event.detection_ms = Some(detection.as_millis() as u64);
    event.failover_ms = Some(total.as_millis() as u64);
    shared.cluster.record(event);
    shared.metrics.failed_over();
    Ok(())
}
