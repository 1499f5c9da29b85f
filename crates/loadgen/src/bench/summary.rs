//! After the run: the checker's report completed with the writers' read-backs,
//! and the run's tallies turned into a [`Report`] (per-operation throughput,
//! errors and latency, the generator's own lag, warnings, the verdict).

use std::collections::BTreeMap;
use std::time::Duration;

use super::checker::verify_via;
use super::config::BenchConfig;
use super::error::BenchError;
use super::http::Http;
use super::report::{CheckReport, FaultReport, GeneratorLag, Latency, OpReport, Report, Writes};
use super::state::{Ryw, Shared, histogram, lock};
use super::verdict::Verdict;

/// The generator warns when its p99 lag (intended start to send) exceeds this.
pub const GENERATOR_LAG_WARN: Duration = Duration::from_millis(10);

/// Verify every acknowledged write (if `config.verify`), and add the writers'
/// read-back tallies.
pub(super) async fn check(
    config: &BenchConfig,
    shared: &Shared,
    writes: &Writes,
    progress: &impl Fn(&str),
) -> Result<CheckReport, BenchError> {
    let mut checker = CheckReport::default();
    if config.verify {
        progress(&format!("verifying {} acknowledged writes (before removing repeats)", writes.len()));
        let http = Http::new(
            Duration::from_secs(10),
            config.dns.as_ref(),
            &config.roots()?,
            config.bypass_token.as_deref(),
        )?;
        checker =
            verify_via(&http, writes, &shared.targets, &config.password, &config.verify_options()).await?;
    }
    with_read_backs(&mut checker, &lock(&shared.ryw));
    if checker.ran {
        checker.settle();
    }
    Ok(checker)
}

/// Add the read-your-writes tallies to the checker's report.
fn with_read_backs(checker: &mut CheckReport, ryw: &Ryw) {
    for k in ryw.by_kind.values() {
        checker.read_your_writes_checked += k.checked;
        checker.read_your_writes_violations += k.violations;
        checker.read_your_writes_errors += k.errors;
    }
    checker.read_your_writes_by_kind = ryw.by_kind.clone();
    checker.read_your_writes_violation_ids = ryw.listed.clone();
}

/// What the run found besides its tallies.
pub(super) struct Findings {
    /// The checker's report, read-backs included.
    pub(super) checker: CheckReport,
    /// Every acknowledged write.
    pub(super) writes: Writes,
    /// The injected fault, if any.
    pub(super) fault: Option<FaultReport>,
}

/// The report of a run of `config` whose measured window began at
/// `shared.measure_from`.
pub(super) fn report(config: &BenchConfig, shared: &Shared, findings: Findings) -> Report {
    let secs = config.duration.as_secs_f64();
    let wall = lock(&shared.last_ok)
        .map_or(secs, |t| t.saturating_duration_since(shared.measure_from).as_secs_f64().max(secs));
    let lag = generator_lag(shared);
    let substitutions = lock(&shared.substitutions).clone();
    let mut report = Report {
        targets: shared.targets.clone(),
        mix: config.mix.to_string(),
        target_rate: config.rate,
        duration_secs: secs,
        warmup_secs: config.warmup.as_secs_f64(),
        checker: findings.checker,
        writes: findings.writes,
        fault: findings.fault,
        wall_secs: wall,
        traffic: shared
            .http
            .traffic
            .as_ref()
            .map(|t| t.report(shared.measure_from.into_std(), config.duration)),
        generator_lag: lag,
        warnings: warnings(lag, &substitutions),
        substitutions,
        ..Report::default()
    };
    add_ops(&mut report, shared, wall);
    if let (Some(step), Some(timeline)) = (&config.step, &shared.timeline) {
        let (seconds, step) = lock(timeline).finish(step, config.rate);
        report.timeline = seconds;
        report.step = Some(step);
    }
    report.verdict = Verdict::judge(&report);
    report
}

/// How late the generator sent the measured requests.
fn generator_lag(shared: &Shared) -> GeneratorLag {
    let h = lock(&shared.lag);
    if h.is_empty() {
        GeneratorLag::default()
    } else {
        GeneratorLag { p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0, max_ms: h.max() as f64 / 1000.0 }
    }
}

/// What makes the numbers less than they seem: the generator behind its
/// schedule, operations substituted.
fn warnings(lag: GeneratorLag, substitutions: &BTreeMap<String, u64>) -> Vec<String> {
    let mut warnings = Vec::new();
    let bound_ms = GENERATOR_LAG_WARN.as_secs_f64() * 1000.0;
    if lag.p99_ms > bound_ms {
        warnings.push(format!(
            "the load generator fell behind its own schedule (send lag p99 {:.1} ms, max {:.1} ms, bound {bound_ms:.0} ms): \
             latencies include its delay and the rate was not sent on time; give it more CPU or a lower rate",
            lag.p99_ms, lag.max_ms
        ));
    }
    for (what, n) in substitutions {
        let why = match what.split("->").next().unwrap_or_default() {
            "like" => "no post was known yet to like",
            "comment" => "no post was known yet to comment on",
            "comments" => "no post was known yet to read the comments of",
            "delete_post" => "the user had no post of this run left to delete",
            _ => "no photo was known yet to view",
        };
        warnings.push(format!(
            "{n} operations were substituted {what} ({why}): the mix sent is not the mix asked"
        ));
    }
    warnings
}

/// Every operation's results, their totals and the rates, over `wall` seconds.
fn add_ops(report: &mut Report, shared: &Shared, wall: f64) {
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
    report.offered_rate = report.requests as f64 / report.duration_secs;
    report.achieved_rate = ok as f64 / wall;
    report.latency_ms = Latency::from_histogram(&all);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_substitution_is_warned_about_with_its_reason() {
        let subs: BTreeMap<String, u64> = [
            ("like->post", 1),
            ("comment->post", 2),
            ("comments->timeline", 3),
            ("delete_post->post", 4),
            ("view_photo->timeline", 5),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
        let w = warnings(GeneratorLag::default(), &subs);
        assert_eq!(w.len(), 5, "{w:?}");
        for (needle, why) in [
            ("1 operations were substituted like->post", "to like"),
            ("2 operations were substituted comment->post", "to comment on"),
            ("3 operations were substituted comments->timeline", "the comments of"),
            ("4 operations were substituted delete_post->post", "no post of this run left to delete"),
            ("5 operations were substituted view_photo->timeline", "to view"),
        ] {
            assert!(w.iter().any(|l| l.starts_with(needle) && l.contains(why)), "{needle}: {w:?}");
        }
    }
}
