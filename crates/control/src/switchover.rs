//! Moving a shard's primary on purpose (`millions shard promote NODE`) with the
//! failover's guarantee — no acknowledged write lost — and no lost primary:
//! fence the writes (the map names no primary: writes wait or fail fast,
//! retryably), stop the old primary cleanly (its last record is a shutdown
//! checkpoint, sent to every connected standby before it exits), check that the
//! target received WAL past that record, promote it, publish it, and start the
//! old primary again as its standby. If the target cannot catch up, nothing
//! changes: the old primary is started again as the primary.

use std::time::{Duration, Instant};

use serde::Serialize;
use topology::{Node, Role};

use crate::cluster::Event;
use crate::configs::{pg_run_spec, pg_spec};
use crate::decide::caught_up;
use crate::error::{ControlError, process};
use crate::shared::Shared;
use crate::{launch, pgadmin, postgres};

/// How long the target may take to receive the old primary's last WAL.
const CATCH_UP: Duration = Duration::from_secs(30);

/// What a switchover did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Switchover {
    /// The shard.
    pub(crate) shard: u16,
    /// The primary before.
    pub(crate) old: String,
    /// The primary now.
    pub(crate) new: String,
    /// How long writes had no primary, in milliseconds.
    pub(crate) write_pause_ms: u64,
}

/// Make `target` its shard's primary.
pub(crate) async fn switchover(shared: &Shared, target: &str) -> Result<Switchover, ControlError> {
    let target =
        shared.topology().node(target).cloned().ok_or_else(|| ControlError::UnknownNode(target.into()))?;
    let member = target.shard.filter(|_| target.role == Role::Postgres).ok_or_else(|| {
        ControlError::Refused(format!("{} is not a PostgreSQL node of a shard", target.name))
    })?;
    let shard = member.shard.0;
    let op = shared.shard_op(shard);
    let _changing = op.lock().await;
    let old_name = shared.cluster.primary(shard).ok_or_else(|| {
        ControlError::Refused(format!("shard {shard} is failing over; try again once it has a primary"))
    })?;
    if old_name == target.name {
        return Err(ControlError::Refused(format!("{} is already shard {shard}'s primary", target.name)));
    }
    let old =
        shared.topology().node(&old_name).cloned().ok_or_else(|| ControlError::UnknownNode(old_name))?;
    let probe = pgadmin::probe_primary(&pg_spec(shared, &old)).await?;
    if probe.in_recovery || !probe.streaming.contains(&target.name) {
        return Err(ControlError::Refused(format!(
            "{} is not streaming from {} (streaming: {}); a switchover needs a target that has its commits",
            target.name,
            old.name,
            if probe.streaming.is_empty() { "none".into() } else { probe.streaming.join(", ") }
        )));
    }

    // Fence: no process writes to the old primary from here on.
    let paused = Instant::now();
    shared.cluster.update(|s| s.shards[shard as usize].primary = None)?;
    set_stopped_on_purpose(shared, &old.name, true).await;
    let old_spec = pg_spec(shared, &old);
    let dir = old_spec.data_dir.clone();
    let stopped = tokio::task::spawn_blocking(move || {
        nodes::stop_postgres(&dir, nodes::StopMode::Fast)?;
        nodes::controldata(&dir)
    })
    .await?
    .map_err(process(&old.name));
    let target_spec = pg_spec(shared, &target);
    let ready = match stopped {
        Ok(control) if control.state == "shut down" => {
            wait_caught_up(&target_spec, control.checkpoint_lsn).await
        }
        Ok(control) => Err(format!("{} did not stop cleanly ({})", old.name, control.state)),
        Err(e) => Err(e.to_string()),
    };
    if let Err(why) = ready {
        // Nothing changed: the old primary takes the writes again.
        shared.cluster.update(|s| s.shards[shard as usize].primary = Some(old.name.clone()))?;
        launch::start_node(shared, &old.name).await?;
        return Err(ControlError::Refused(format!(
            "switchover of shard {shard} to {} abandoned ({why}); {} is the primary again",
            target.name, old.name
        )));
    }

    let dir = target_spec.data_dir.clone();
    tokio::task::spawn_blocking(move || nodes::promote_postgres(&dir))
        .await?
        .map_err(process(&target.name))?;
    shared.cluster.update(|s| {
        let mine = &mut s.shards[shard as usize];
        mine.primary = Some(target.name.clone());
        mine.replicas.retain(|r| *r != target.name);
    })?;
    let write_pause_ms = paused.elapsed().as_millis() as u64;
    // The new primary waits for its own standbys (its spec as a primary).
    postgres::reload(&target.name, pg_run_spec(shared, &target, None)).await?;
    follow(shared, &target, &old).await;
    let detail = format!(
        "{} handed shard {shard} to {} (switchover; writes paused {write_pause_ms} ms)",
        old.name, target.name
    );
    shared.cluster.record(Event::new(shard, "switchover", &target.name, detail));
    Ok(Switchover { shard, old: old.name.clone(), new: target.name.clone(), write_pause_ms })
}

/// Whether the target received WAL past `checkpoint` within [`CATCH_UP`].
async fn wait_caught_up(target: &nodes::PostgresSpec, checkpoint: u64) -> Result<(), String> {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        match pgadmin::receive_lsn(target).await {
            Ok(received) if caught_up(received, checkpoint) => return Ok(()),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(received) => {
                return Err(format!("the target received WAL up to {received:?}, not past {checkpoint}"));
            }
            Err(e) => return Err(format!("the target does not answer: {e}")),
        }
    }
}

/// After the swap: the other members follow `new`, and `old` starts again as
/// its standby (rewound: it stopped as a primary).
async fn follow(shared: &Shared, new: &Node, old: &Node) {
    postgres::follow_new_primary(shared, new, &[&old.name]).await;
    if let Err(e) = launch::start_node(shared, &old.name).await {
        // The supervisor tries again (it is no longer stopped on purpose).
        set_stopped_on_purpose(shared, &old.name, false).await;
        tracing::error!(node = old.name, error = %e, "the old primary did not rejoin yet; the supervisor retries");
    }
}

async fn set_stopped_on_purpose(shared: &Shared, name: &str, on: bool) {
    if let Some(m) = shared.nodes.lock().await.iter_mut().find(|m| m.node.name == name) {
        m.stopped_on_purpose = on;
        if on {
            m.process = None;
        }
    }
}
