//! The `--scenario` faults: injecting one at its time under load, measuring how
//! the system recovered from it (from when the failed requests after it were
//! due), and waiting for a recovered system before the checker reads.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::BenchError;
use super::report::FaultReport;
use super::state::{Shared, lock};

/// A fault counts as recovered from only if no request due in this last stretch
/// of the run failed.
pub const RECOVERY_QUIET: Duration = Duration::from_secs(1);
/// Longest wait for every target to be ready again before the checker reads.
const READY_WAIT: Duration = Duration::from_secs(60);

/// A fault to inject during a run: what it is, when (into the measured window), and
/// the action itself, which returns what happened or why it could not be done.
pub struct Fault {
    /// Shown in the report (`kill dc1-web-1`).
    pub action: String,
    /// When, after the warm-up.
    pub at: Duration,
    /// The action.
    pub run: futures::future::BoxFuture<'static, Result<String, String>>,
}

impl std::fmt::Debug for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fault").field("action", &self.action).field("at", &self.at).finish()
    }
}

/// A fault's action, as it went.
#[derive(Debug, Clone)]
struct Injected {
    /// What was done (`kill dc1-web-1`).
    action: String,
    /// Seconds into the measured window.
    at_secs: f64,
    /// Whether the action succeeded.
    done: bool,
    /// What it returned, or `failed: why`.
    outcome: String,
}

/// A fault waiting for its time, then injected, on a task of its own.
pub(super) struct Pending(JoinHandle<Injected>);

/// Inject `fault` at `fault.at` after `measure_from`, while the load runs.
pub(super) fn inject_at(fault: Fault, measure_from: Instant) -> Pending {
    let when = measure_from + fault.at;
    let at_secs = fault.at.as_secs_f64();
    let action = fault.action;
    let run = fault.run;
    Pending(tokio::spawn(async move {
        tokio::time::sleep_until(when).await;
        let (done, outcome) = match run.await {
            Ok(s) => (true, s),
            Err(e) => (false, format!("failed: {e}")),
        };
        Injected { action, at_secs, done, outcome }
    }))
}

/// Once the run's requests have all answered: how the injected fault went and
/// how the system recovered from it, over a measured window of `duration`.
pub(super) async fn measure(
    pending: Pending,
    shared: &Shared,
    duration: Duration,
) -> Result<FaultReport, BenchError> {
    let injected = pending.0.await.map_err(|e| BenchError::Setup(format!("the fault task failed: {e}")))?;
    let after: Vec<f64> =
        lock(&shared.failure_times).iter().copied().filter(|t| *t >= injected.at_secs).collect();
    Ok(fault_report(injected, &after, duration.as_secs_f64()))
}

/// Verify against a recovered system: wait (bounded) until every target is
/// ready again, as a client retrying later would.
pub(super) async fn wait_until_ready(shared: &Shared) {
    let deadline = Instant::now() + READY_WAIT;
    for target in &shared.targets {
        while Instant::now() < deadline {
            let ready = shared.http.send(shared.http.client.get(format!("{target}/readyz"))).await;
            if ready.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The report of a fault injected into a measured window of `duration_secs`,
/// given when the failed requests after it were due.
fn fault_report(injected: Injected, failures_after: &[f64], duration_secs: f64) -> FaultReport {
    let Injected { action, at_secs, done, outcome } = injected;
    let last = failures_after.iter().copied().fold(at_secs, f64::max);
    let quiet = RECOVERY_QUIET.as_secs_f64().min(duration_secs);
    let quiet_from = (duration_secs - quiet).max(at_secs);
    let recovered = !failures_after.iter().any(|&t| t >= quiet_from);
    FaultReport {
        action,
        at_secs,
        outcome,
        done,
        errors_after: failures_after.len() as u64,
        recovery_secs: last - at_secs,
        recovered,
        quiet_secs: quiet,
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::Report;
    use super::*;

    fn kill_x(at_secs: f64, done: bool) -> Injected {
        let outcome = if done { "killed" } else { "failed: no" };
        Injected { action: "kill x".into(), at_secs, done, outcome: outcome.into() }
    }

    /// The report's fault line.
    fn fault_line(report: &Report) -> String {
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("fault: ")).collect();
        assert_eq!(lines.len(), 1, "{text}");
        lines[0].to_owned()
    }

    #[test]
    fn a_fault_with_failures_until_the_end_is_not_recovered() {
        let r = fault_report(kill_x(10.0, true), &[10.5, 12.0, 29.5], 30.0);
        assert!(!r.recovered);
        assert_eq!(r.errors_after, 3);
        assert_eq!(r.recovery_secs, 19.5);
        let r = fault_report(kill_x(10.0, true), &[10.5, 12.0], 30.0);
        assert!(r.recovered);
        assert_eq!(r.recovery_secs, 2.0);
        let r = fault_report(kill_x(10.0, true), &[], 30.0);
        assert!(r.recovered && r.recovery_secs == 0.0);
        // Printed as such.
        let report =
            Report { fault: Some(fault_report(kill_x(1.0, true), &[2.95], 3.0)), ..Report::default() };
        assert_eq!(
            fault_line(&report),
            "fault: kill x at 1.0 s (killed); 1 requests failed after it; \
             NOT recovered: requests still failed in the last 1.0 s of the run (at least 1.95 s)"
        );
        let report = Report { fault: Some(fault_report(kill_x(1.0, false), &[], 3.0)), ..Report::default() };
        assert_eq!(
            fault_line(&report),
            "fault: kill x at 1.0 s (failed: no); 0 requests failed after it; NOT injected: nothing was measured"
        );
    }
}
