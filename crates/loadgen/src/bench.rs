//! `millions bench`: open-loop, fixed-rate load through the public entry, and the
//! checker that every acknowledged write is readable afterwards.
//!
//! Open loop, no coordinated omission: the scheduler computes each request's
//! intended start time (a fixed interval of `1/rate`, or Poisson arrivals) and
//! starts it then, whether or not earlier requests have finished. Latency is
//! measured from the intended start, so a stalled server shows up as latency on
//! every request that was due during the stall, not as a lower rate. When
//! `max_in_flight` requests are outstanding, a due request is not sent and counts
//! as an `overloaded` error: the generator never slows down to match the server.
//!
//! Each operation has its own HDR histogram (microseconds); warm-up requests are
//! sent but not recorded (their acknowledged writes are still checked).
//!
//! The generator watches itself: how late each request's task began sending
//! it (intended start to send) goes into its own histogram, and the report
//! warns when the generator, not the system, was behind.
//!
//! Read-your-writes: right after an acknowledged write, the writer reads it back
//! with the same session through the same entry, on a read replicas serve under
//! the session's floor ([`read_back`]); violations are counted per kind.

mod checker;
mod config;
mod error;
mod failure;
mod http;
mod ops;
mod photo;
mod report;
mod schedule;
mod state;
mod zipf;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

pub use checker::{ReadBack, Written, read_back, verify};
pub use config::{BenchConfig, MAX_CREATED_USERS, MAX_DURATION, MAX_RATE, Mix, Op, VerifyOptions};
pub use error::BenchError;
use http::Http;
pub use report::{
    AckedFollow, AckedLike, AckedPost, CheckReport, FaultReport, GeneratorLag, LISTED_LOST, Latency,
    OpReport, Report, RywKind, Writes,
};
use schedule::Schedule;
use state::{Shared, histogram, lock};
pub use zipf::Zipf;

/// Concurrent requests while creating and logging in users.
const SETUP_CONCURRENCY: usize = 16;
/// Users whose timelines are read before the run (when the mix likes posts or
/// views photos) so that likes and photo views have targets from the start.
const PRIME_USERS: u64 = 50;
/// The generator warns when its p99 lag (intended start to send) exceeds this.
pub const GENERATOR_LAG_WARN: Duration = Duration::from_millis(10);
/// A fault counts as recovered from only if no request due in this last stretch
/// of the run failed.
pub const RECOVERY_QUIET: Duration = Duration::from_secs(1);
/// Create (if asked) and log in the users before the run.
async fn set_up_users(
    config: &BenchConfig,
    shared: &Shared,
    progress: &impl Fn(&str),
) -> Result<(), BenchError> {
    use futures::StreamExt;
    if config.create_users {
        progress(&format!("creating {} users ({}0…)", config.users, config.user_prefix));
        let failures: Vec<String> = futures::stream::iter(0..config.users)
            .map(|i| {
                let target = shared.target(i).to_owned();
                let name = config.username(i);
                async move {
                    let mut last = None;
                    for _ in 0..3 {
                        match shared.http.signup(&target, &name, &config.password).await {
                            Ok(()) => return None,
                            Err(e) => last = Some(format!("signing up {name}: {e}")),
                        }
                    }
                    last
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .filter_map(|r| async move { r })
            .collect()
            .await;
        if let Some(first) = failures.first() {
            return Err(BenchError::Setup(format!("{} signups failed; first: {first}", failures.len())));
        }
    }
    let acting = Schedule::acting_users(config, config.warmup + config.duration);
    progress(&format!("logging in the {} users this run acts as", acting.len()));
    let failures: Vec<String> = futures::stream::iter(acting)
        .map(|i| {
            let target = shared.target(i).to_owned();
            async move {
                let mut last = None;
                for _ in 0..3 {
                    match shared.token(&target, i).await {
                        Ok(_) => return None,
                        Err(e) => last = Some(format!("logging in {}: {e}", shared.username(i))),
                    }
                }
                last
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    if let Some(first) = failures.first() {
        return Err(BenchError::Setup(format!("{} logins failed; first: {first}", failures.len())));
    }
    if config.mix.like > 0.0 || config.mix.view_photo > 0.0 {
        // Known posts and photos for likes and photo views from the first request
        // (a failed read only means fewer known; substitutions are reported).
        let primed = config.users.min(PRIME_USERS);
        progress(&format!("reading {primed} timelines for posts to like and photos to view"));
        futures::stream::iter(0..primed)
            .map(|i| async move {
                let url = format!("{}/api/v1/users/{}/posts?limit=20", shared.target(i), shared.username(i));
                if let Ok(page) = shared.http.json(shared.http.client.get(url)).await {
                    shared.harvest(&page);
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
    }
    Ok(())
}

/// Run a bench: validate, set up users, send open-loop load for the warm-up and
/// the measured duration, wait for the last answers, then verify every
/// acknowledged write (unless `config.verify` is off). `progress` gets a line
/// about every second.
pub async fn run(config: &BenchConfig, progress: impl Fn(&str)) -> Result<Report, BenchError> {
    run_with_fault(config, progress, None).await
}

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

/// [`run`], injecting `fault` (if any) under load and reporting how long the
/// system took to recover from it.
pub async fn run_with_fault(
    config: &BenchConfig,
    progress: impl Fn(&str),
    fault: Option<Fault>,
) -> Result<Report, BenchError> {
    config.validate()?;
    let http = Http::new(config.request_timeout)?;
    let mut shared = Shared::new(config, http);
    let targets = shared.targets.clone();
    set_up_users(config, &shared, &progress).await?;

    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + config.warmup;
    let end = measure_from + config.duration;
    shared.measure_from = measure_from;
    let shared = Arc::new(shared);
    let fault_task = fault.map(|fault| {
        let when = measure_from + fault.at;
        let at_secs = fault.at.as_secs_f64();
        let action = fault.action;
        let run = fault.run;
        tokio::spawn(async move {
            tokio::time::sleep_until(when).await;
            let (done, outcome) = match run.await {
                Ok(s) => (true, s),
                Err(e) => (false, format!("failed: {e}")),
            };
            (action, at_secs, done, outcome)
        })
    });

    let mut schedule = Schedule::new(config);
    let mut offset = 0.0f64; // seconds after `start`
    let mut next_progress = start + Duration::from_secs(1);
    progress(&format!(
        "sending {:.1} requests/s for {:?} after {:?} of warm-up, mix {}",
        config.rate, config.duration, config.warmup, config.mix
    ));
    let mut behind = 0u32;
    loop {
        let intended = start + Duration::from_secs_f64(offset);
        if intended >= end {
            break;
        }
        if Instant::now() >= intended {
            // Behind schedule: send without sleeping, but let other tasks run now
            // and then (the runtime may have a single thread).
            behind = behind.wrapping_add(1);
            if behind.is_multiple_of(64) {
                tokio::task::yield_now().await;
            }
        } else {
            if next_progress < intended {
                tokio::time::sleep_until(next_progress).await;
            } else {
                tokio::time::sleep_until(intended).await;
            }
        }
        let now = Instant::now();
        if now >= next_progress {
            let phase = if now < measure_from { "warm-up" } else { "running" };
            progress(&shared.progress_line(phase, now - start));
            next_progress += Duration::from_secs(1);
            continue;
        }
        if now < intended {
            continue;
        }
        // Due: draw the request, then send it (or drop it as overloaded).
        let (gap, job) = schedule.next(config);
        offset += gap;
        let op = job.op;
        if shared.in_flight.load(Ordering::Acquire) >= config.max_in_flight {
            shared.record(op, intended, Err("overloaded"), None);
            continue;
        }
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        shared.sent.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(ops::execute(shared.clone(), job, intended));
    }
    // Wait for the answers still due (each is bounded by the request timeout).
    while shared.in_flight.load(Ordering::Acquire) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = Instant::now();
        if now >= next_progress {
            progress(&shared.progress_line("draining", now - start));
            next_progress += Duration::from_secs(1);
        }
    }

    let fault = match fault_task {
        Some(task) => {
            let (action, at_secs, done, outcome) =
                task.await.map_err(|e| BenchError::Setup(format!("the fault task failed: {e}")))?;
            let after: Vec<f64> =
                lock(&shared.failure_times).iter().copied().filter(|t| *t >= at_secs).collect();
            Some(fault_report(action, at_secs, done, outcome, &after, config.duration.as_secs_f64()))
        }
        None => None,
    };
    if fault.is_some() {
        // Verify against a recovered system: wait (bounded) until every target is
        // ready again, as a client retrying later would.
        let deadline = Instant::now() + Duration::from_secs(60);
        for target in &targets {
            while Instant::now() < deadline {
                let ready = shared.http.send(shared.http.client.get(format!("{target}/readyz"))).await;
                if ready.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let writes = lock(&shared.writes).clone();
    let mut checker = CheckReport::default();
    if config.verify {
        progress(&format!("verifying {} acknowledged writes (before removing repeats)", writes.len()));
        checker = verify(&writes, &targets, &config.password, &config.verify_options()).await?;
    }
    {
        let ryw = lock(&shared.ryw);
        for k in ryw.by_kind.values() {
            checker.read_your_writes_checked += k.checked;
            checker.read_your_writes_violations += k.violations;
            checker.read_your_writes_errors += k.errors;
        }
        checker.read_your_writes_by_kind = ryw.by_kind.clone();
        checker.read_your_writes_violation_ids = ryw.listed.clone();
    }
    if checker.ran {
        checker.settle();
    }

    let secs = config.duration.as_secs_f64();
    let wall = lock(&shared.last_ok)
        .map_or(secs, |t| t.saturating_duration_since(measure_from).as_secs_f64().max(secs));
    let lag = {
        let h = lock(&shared.lag);
        if h.is_empty() {
            GeneratorLag::default()
        } else {
            GeneratorLag {
                p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
                max_ms: h.max() as f64 / 1000.0,
            }
        }
    };
    let substitutions = lock(&shared.substitutions).clone();
    let mut warnings = Vec::new();
    let bound_ms = GENERATOR_LAG_WARN.as_secs_f64() * 1000.0;
    if lag.p99_ms > bound_ms {
        warnings.push(format!(
            "the load generator fell behind its own schedule (send lag p99 {:.1} ms, max {:.1} ms, bound {bound_ms:.0} ms): \
             latencies include its delay and the rate was not sent on time; give it more CPU or a lower rate",
            lag.p99_ms, lag.max_ms
        ));
    }
    for (what, n) in &substitutions {
        let why = if what.starts_with("like") {
            "no post was known yet to like"
        } else {
            "no photo was known yet to view"
        };
        warnings.push(format!(
            "{n} operations were substituted {what} ({why}): the mix sent is not the mix asked"
        ));
    }
    let mut report = Report {
        targets,
        mix: config.mix.to_string(),
        target_rate: config.rate,
        duration_secs: secs,
        warmup_secs: config.warmup.as_secs_f64(),
        checker,
        writes,
        fault,
        wall_secs: wall,
        generator_lag: lag,
        substitutions,
        warnings,
        ..Report::default()
    };
    let mut all = histogram();
    let mut ok = 0;
    for (op, s) in lock(&shared.stats).iter() {
        if s.count == 0 {
            continue;
        }
        all.add(&s.latency).expect("histograms with the same bounds add");
        report.requests += s.count;
        ok += s.ok;
        for (kind, n) in &s.errors {
            *report.errors_by_kind.entry(kind.clone()).or_default() += n;
            report.errors += n;
        }
        report.ops.insert(
            op.name().to_owned(),
            OpReport {
                count: s.count,
                ok: s.ok,
                errors: s.errors.clone(),
                throughput: s.ok as f64 / wall,
                latency_ms: Latency::from_histogram(&s.latency),
            },
        );
    }
    report.offered_rate = report.requests as f64 / secs;
    report.achieved_rate = ok as f64 / wall;
    report.latency_ms = Latency::from_histogram(&all);
    Ok(report)
}

/// The report of a fault at `at_secs` into a measured window of `duration_secs`,
/// given when the failed requests after it were due.
fn fault_report(
    action: String,
    at_secs: f64,
    done: bool,
    outcome: String,
    failures_after: &[f64],
    duration_secs: f64,
) -> FaultReport {
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
    use super::*;

    #[test]
    fn a_fault_with_failures_until_the_end_is_not_recovered() {
        let r = fault_report("kill x".into(), 10.0, true, "killed".into(), &[10.5, 12.0, 29.5], 30.0);
        assert!(!r.recovered);
        assert_eq!(r.errors_after, 3);
        assert_eq!(r.recovery_secs, 19.5);
        let r = fault_report("kill x".into(), 10.0, true, "killed".into(), &[10.5, 12.0], 30.0);
        assert!(r.recovered);
        assert_eq!(r.recovery_secs, 2.0);
        let r = fault_report("kill x".into(), 10.0, true, "killed".into(), &[], 30.0);
        assert!(r.recovered && r.recovery_secs == 0.0);
        // Printed as such.
        let report = Report {
            fault: Some(fault_report("kill x".into(), 1.0, true, "killed".into(), &[2.95], 3.0)),
            ..Report::default()
        };
        assert!(report.to_string().contains("NOT recovered"), "{report}");
        let report = Report {
            fault: Some(fault_report("kill x".into(), 1.0, false, "failed: no".into(), &[], 3.0)),
            ..Report::default()
        };
        assert!(report.to_string().contains("NOT injected"), "{report}");
    }
}
