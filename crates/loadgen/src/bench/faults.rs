//! The `--scenario` faults: injecting one at its time under load, measuring how
//! the system recovered from it (from when the failed requests after it were
//! due), and waiting for a recovered system before the checker reads.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::BenchError;
use super::report::FaultReport;
use super::state::{Failed, Shared, lock};
use super::verdict::Tolerance;

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
    /// What the scenario claims about the requests due after it: the run fails
    /// if they break the claim.
    pub tolerance: Tolerance,
}

impl std::fmt::Debug for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fault")
            .field("action", &self.action)
            .field("at", &self.at)
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// A fault's action, as it went.
#[derive(Debug, Clone)]
struct Injected {
    /// What was done (`kill dc1-web-1`).
    action: String,
    /// What its scenario claims.
    tolerance: Tolerance,
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
    let (action, tolerance, run) = (fault.action, fault.tolerance, fault.run);
    Pending(tokio::spawn(async move {
        tokio::time::sleep_until(when).await;
        let (done, outcome) = match run.await {
            Ok(s) => (true, s),
            Err(e) => (false, format!("failed: {e}")),
        };
        Injected { action, tolerance, at_secs, done, outcome }
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
    let failures = lock(&shared.failure_times).clone();
    Ok(fault_report(injected, &failures, duration.as_secs_f64()))
}

/// Verify against a recovered system: wait (bounded) until every target is
/// ready again, as a client retrying later would.
pub(super) async fn wait_until_ready(shared: &Shared) {
    let deadline = Instant::now() + READY_WAIT;
    for (i, target) in shared.targets.iter().enumerate() {
        while Instant::now() < deadline {
            // A public page a web server answers (a load balancer refuses the
            // internal `/readyz` from outside).
            let url = format!("{target}/api/v1/openapi.json");
            let ready = shared.http.send(shared.http.client(i as u64).get(url)).await;
            if ready.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The report of a fault injected into a measured window of `duration_secs`,
/// given when the run's failed requests were due (seconds into the window) and
/// their operations.
fn fault_report(injected: Injected, failures: &[Failed], duration_secs: f64) -> FaultReport {
    let Injected { action, tolerance, at_secs, done, outcome } = injected;
    // After the fault: what failed once it was injected, including a request due
    // just before it and still in flight (the fault is what made it fail).
    let after: Vec<Failed> = failures.iter().copied().filter(|f| f.done >= at_secs).collect();
    let before = failures.len() - after.len();
    let last = after.iter().map(|f| f.due).fold(at_secs, f64::max);
    let quiet = RECOVERY_QUIET.as_secs_f64().min(duration_secs);
    let quiet_from = (duration_secs - quiet).max(at_secs);
    let recovered = !after.iter().any(|f| f.due >= quiet_from);
    let mut errors_after_by_op = BTreeMap::new();
    for f in &after {
        *errors_after_by_op.entry(f.op.name().to_owned()).or_default() += 1;
    }
    FaultReport {
        action,
        at_secs,
        outcome,
        done,
        errors_after: after.len() as u64,
        recovery_secs: last - at_secs,
        recovered,
        quiet_secs: quiet,
        tolerance,
        errors_before: before as u64,
        reads_failed_after: after.iter().filter(|f| f.op.is_read()).count() as u64,
        errors_after_by_op,
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::Op;
    use super::super::report::Report;
    use super::*;

    fn kill_x(at_secs: f64, done: bool) -> Injected {
        let outcome = if done { "killed" } else { "failed: no" };
        let tolerance = Tolerance::UntilRecovered;
        Injected { action: "kill x".into(), tolerance, at_secs, done, outcome: outcome.into() }
    }

    /// Failed feeds due (and failing at once) at `times`.
    fn feeds(times: &[f64]) -> Vec<Failed> {
        times.iter().map(|&t| Failed { due: t, done: t, op: Op::Feed }).collect()
    }

    /// Requests of `op`, each due and failing at its time.
    fn failed(list: &[(f64, Op)]) -> Vec<Failed> {
        list.iter().map(|&(t, op)| Failed { due: t, done: t, op }).collect()
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
        let r = fault_report(kill_x(10.0, true), &feeds(&[10.5, 12.0, 29.5]), 30.0);
        assert!(!r.recovered);
        assert_eq!(r.errors_after, 3);
        assert_eq!(r.recovery_secs, 19.5);
        let r = fault_report(kill_x(10.0, true), &feeds(&[10.5, 12.0]), 30.0);
        assert!(r.recovered);
        assert_eq!(r.recovery_secs, 2.0);
        let r = fault_report(kill_x(10.0, true), &[], 30.0);
        assert!(r.recovered && r.recovery_secs == 0.0);
        // Printed as such.
        let report = Report {
            fault: Some(fault_report(kill_x(1.0, true), &feeds(&[2.95]), 3.0)),
            ..Report::default()
        };
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

    #[test]
    fn failures_are_split_at_the_fault_and_reads_counted_apart() {
        let failures = failed(&[
            (2.0, Op::Post),
            (10.0, Op::Feed),
            (11.0, Op::Post),
            (12.0, Op::ViewPhoto),
            (12.5, Op::Like),
        ]);
        let r = fault_report(kill_x(10.0, true), &failures, 30.0);
        assert_eq!(r.errors_before, 1);
        assert_eq!(r.errors_after, 4);
        assert_eq!(r.reads_failed_after, 2);
        let by_op: Vec<(&str, u64)> = r.errors_after_by_op.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(by_op, [("feed", 1), ("like", 1), ("post", 1), ("view_photo", 1)]);
        // A failure before the fault is no part of the recovery.
        assert_eq!(r.recovery_secs, 2.5);
        assert!(r.recovered);
        // A request due just before the fault, still in flight when it came and
        // failing after it, failed because of it: after, not before.
        let in_flight = [Failed { due: 9.9, done: 10.2, op: Op::Feed }];
        let r = fault_report(kill_x(10.0, true), &in_flight, 30.0);
        assert_eq!((r.errors_before, r.errors_after, r.reads_failed_after), (0, 1, 1));
        assert_eq!(r.recovery_secs, 0.0, "recovery counts from the fault");
    }
}
