//! Watching every shard's PostgreSQL servers: which replicas serve reads, and
//! when the primary is lost, failover.
//!
//! One task per shard probes its primary and replicas every [`PROBE_INTERVAL`].
//! - A replica that stops streaming leaves the published map (reads stop
//!   going to it) and returns once it streams again; the supervisor restarts a
//!   dead one, rebuilding it from the primary when its data cannot be used.
//! - A primary that fails [`CONFIRM_PROBES`] probes in a row is lost: the map
//!   drops it at once (writes fail fast), it is fenced (killed if its process
//!   still runs: it can never take a write again; when it restarts, it is
//!   rewound into a replica of its successor), the replica holding the most WAL
//!   is promoted, the others follow it, and the new map is published.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use topology::Node;

use crate::Shared;
use crate::cluster::Event;
use crate::launch::{self, pg_spec};

/// How often each shard's servers are probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// Failed probes in a row that confirm a primary lost.
const CONFIRM_PROBES: u32 = 3;

/// Watch every shard until shutdown.
pub(crate) async fn watch(shared: Shared) {
    let tasks: Vec<_> = (0..shared.opts.topology.shards().len() as u16)
        .map(|shard| tokio::spawn(watch_shard(shared.clone(), shard)))
        .collect();
    shared.shutdown.cancelled().await;
    for t in tasks {
        t.abort();
    }
}

async fn watch_shard(shared: Shared, shard: u16) {
    let members: Vec<Node> = shared.opts.topology.shard_nodes(topology::ShardId(shard)).cloned().collect();
    let mut failures = 0u32;
    let mut first_failure: Option<Instant> = None;
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
                    Err(e) => {
                        tracing::error!(shard, error = format!("{e:#}"), "failover failed again; retrying")
                    }
                }
            }
            continue;
        };
        let Some(primary) = members.iter().find(|n| n.name == primary_name) else { continue };
        if crate::stopped_on_purpose(&shared, &primary.name).await {
            failures = 0;
            first_failure = None;
            continue;
        }
        // One connection per probe: is it still the primary, and which replicas
        // stream from it.
        const PROBE: &str = "SELECT pg_is_in_recovery(), ARRAY(SELECT application_name::text \
                             FROM pg_stat_replication WHERE state = 'streaming')";
        let spec = pg_spec(&shared, primary);
        let streaming: HashSet<String> = match probe(&spec, PROBE).await {
            Ok(rows) if !rows[0].get::<_, bool>(0) => {
                failures = 0;
                first_failure = None;
                rows[0].get::<_, Vec<String>>(1).into_iter().collect()
            }
            outcome => {
                failures += 1;
                let since = *first_failure.get_or_insert_with(Instant::now);
                tracing::debug!(
                    shard,
                    node = primary.name,
                    failures,
                    ok = outcome.is_ok(),
                    "primary probe failed"
                );
                if failures >= CONFIRM_PROBES && members.len() > 1 {
                    if let Err(e) = failover(&shared, shard, primary, &members, since).await {
                        tracing::error!(shard, error = format!("{e:#}"), "failover failed; retrying");
                        unfinished = Some((primary.clone(), since));
                    }
                    failures = 0;
                    first_failure = None;
                }
                continue;
            }
        };
        let replicas: Vec<String> = members
            .iter()
            .filter(|n| n.name != primary.name && streaming.contains(&n.name))
            .map(|n| n.name.clone())
            .collect();
        for n in members.iter().filter(|n| n.name != primary.name) {
            let now_lost = !streaming.contains(&n.name);
            if now_lost && lost.insert(n.name.clone()) {
                shared.cluster.record(Event::new(
                    shard,
                    "replica-lost",
                    &n.name,
                    format!("{} is not streaming from {}; reads no longer go to it", n.name, primary.name),
                ));
            } else if !now_lost && lost.remove(&n.name) {
                shared.cluster.record(Event::new(
                    shard,
                    "replica-back",
                    &n.name,
                    format!("{} streams from {} again and serves reads", n.name, primary.name),
                ));
            }
        }
        let changed = shared.cluster.update(|s| {
            let mine = &mut s.shards[shard as usize];
            if mine.primary.as_deref() == Some(primary.name.as_str()) {
                mine.replicas = replicas;
            }
        });
        if let Err(e) = changed {
            tracing::error!(shard, error = format!("{e:#}"), "publishing the replica set");
        }
    }
}

/// Run `sql` on `spec`'s server within [`PROBE_TIMEOUT`].
async fn probe(spec: &nodes::PostgresSpec, sql: &str) -> anyhow::Result<Vec<tokio_postgres::Row>> {
    let url = spec.url("postgres");
    let work = async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        let conn = tokio::spawn(conn);
        let rows = client.query(sql, &[]).await;
        drop(client);
        let _ = conn.await;
        rows
    };
    Ok(tokio::time::timeout(PROBE_TIMEOUT, work).await.context("timed out")??)
}

/// Replace the lost primary `old` of `shard`.
async fn failover(
    shared: &Shared,
    shard: u16,
    old: &Node,
    members: &[Node],
    since: Instant,
) -> anyhow::Result<()> {
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
    if let Some(process) = crate::node_process(shared, &old.name).await
        && process.alive()
    {
        tracing::warn!(node = old.name, pid = process.pid, "fencing the old primary (SIGKILL)");
        tokio::task::spawn_blocking(move || nodes::stop_process(process, Duration::ZERO)).await??;
    }
    let old_spec = pg_spec(shared, old);
    if nodes::postgres_running(&old_spec.data_dir) {
        let dir = old_spec.data_dir.clone();
        tokio::task::spawn_blocking(move || nodes::stop_postgres(&dir, nodes::StopMode::Immediate)).await??;
    }

    // The candidate holding the most WAL: under synchronous replication every
    // acknowledged commit was flushed by at least one standby, so it has them all.
    const POSITION: &str = "SELECT pg_is_in_recovery(), pg_wal_lsn_diff(\
        GREATEST(coalesce(pg_last_wal_receive_lsn(), '0/0'), coalesce(pg_last_wal_replay_lsn(), '0/0')), \
        '0/0')::int8";
    let mut best: Option<(&Node, i64)> = None;
    // A member already out of recovery was promoted by an earlier attempt of
    // this failover that failed later on: it is the new primary, whatever the WAL.
    let mut promoted: Option<&Node> = None;
    for n in members.iter().filter(|n| n.name != old.name) {
        if crate::stopped_on_purpose(shared, &n.name).await {
            continue;
        }
        match probe(&pg_spec(shared, n), POSITION).await {
            Ok(rows) if rows[0].get::<_, bool>(0) => {
                let lsn: i64 = rows[0].get(1);
                tracing::info!(node = n.name, wal = lsn, "failover candidate");
                if best.is_none_or(|(_, b)| lsn > b) {
                    best = Some((n, lsn));
                }
            }
            Ok(_) => {
                tracing::warn!(
                    node = n.name,
                    "already promoted by an earlier attempt; finishing that failover"
                );
                promoted = Some(n);
            }
            Err(e) => tracing::warn!(node = n.name, error = format!("{e:#}"), "candidate unreachable"),
        }
    }
    let Some(new) = promoted.or(best.map(|(n, _)| n)) else {
        // Nobody to promote, and nothing was promoted (a promotion is recorded
        // in the map right after it succeeds): the old primary is still the only copy, and
        // starting it again as the primary is safe.
        shared.cluster.update(|s| s.shards[shard as usize].primary = Some(old.name.clone()))?;
        launch::start_node(shared, &old.name).await?;
        shared.cluster.record(Event::new(
            shard,
            "primary-restarted",
            &old.name,
            format!("no replica could be promoted; {} restarted as the primary", old.name),
        ));
        return Ok(());
    };
    let new_spec = pg_spec(shared, new);
    if promoted.is_none() {
        let dir = new_spec.data_dir.clone();
        tokio::task::spawn_blocking(move || nodes::promote_postgres(&dir)).await??;
    }
    // Recorded at once: from here on the old primary can only come back as a
    // standby of this one, whatever fails below.
    shared.cluster.update(|s| {
        let mine = &mut s.shards[shard as usize];
        mine.primary = Some(new.name.clone());
        mine.replicas.retain(|r| *r != new.name);
    })?;
    let total = since.elapsed();
    // Its successors' slots, before they connect (a replica's start creates
    // its slot too, so a failure here is logged, not fatal).
    for n in members.iter().filter(|n| n.name != new.name) {
        if let Err(e) = launch::ensure_slot(&new_spec, n).await {
            tracing::warn!(node = n.name, error = format!("{e:#}"), "creating a replication slot failed");
        }
    }
    // Its control file names the new timeline only after a checkpoint, and
    // pg_rewind of the old primary reads it there.
    if let Err(e) = launch::pg_execute(&new_spec, "postgres", "CHECKPOINT").await {
        tracing::warn!(node = new.name, error = format!("{e:#}"), "checkpoint after promotion failed");
    }
    // The other running replicas follow the new primary (a reload suffices).
    for n in members.iter().filter(|n| n.name != new.name && n.name != old.name) {
        let spec = launch::pg_run_spec(shared, n, Some(new));
        if nodes::postgres_running(&spec.data_dir) {
            let name = n.name.clone();
            match tokio::task::spawn_blocking(move || nodes::reload_postgres(&spec)).await? {
                Ok(()) => tracing::info!(node = name, primary = new.name, "replica follows the new primary"),
                Err(e) => tracing::error!(node = name, error = %e, "repointing a replica failed"),
            }
        }
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
