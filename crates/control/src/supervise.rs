//! The supervisor: a node that dies is started again, with backoff, unless it was
//! stopped on purpose or its shard's failover decides what happens to it.

use std::time::{Duration, Instant};

use crate::cluster::Event;
use crate::launch;
use crate::processes::forget_process;
use crate::shared::Shared;

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

/// Restart nodes that died, with backoff, until shutdown.
pub(crate) async fn supervise(shared: Shared) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            // The supervisor looks at every node twice a second.
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let lost = shared.cluster.lost_dcs();
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
                    shared.topology().shards()[shard].members.len() > 1
                        && shared.cluster.primary(shard as u16).is_none_or(|p| p == m.node.name)
                });
                // A data center declared lost stays down until it is brought back.
                let dc_lost = lost.contains(&m.node.dc);
                if m.stopped_on_purpose || failover_decides || dc_lost || m.alive() {
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
                        forget_process(&shared.opts.run_dir, &m.node);
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
                    shared.cluster.record(Event::node("restarted", &name, "restarted after it died".into()));
                    shared.dashboard.nudge();
                }
                Err(e) => tracing::error!(node = name, error = %e, "restarting failed; will retry"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
