//! Whether a finished run passed, and why not: the one place that decides the
//! exit status of `millions bench`.
//!
//! A run passes when every check holds:
//! - every acknowledged write was found, every photo processed, no follower
//!   count short, and no writer missed its own write (read-your-writes): always,
//!   with or without a fault (the checker's part only when it ran);
//! - without a fault, no request failed;
//! - with a fault: it was injected; no request failed before it; none failed in
//!   the closing [`super::faults::RECOVERY_QUIET`] of the run (recovered); and after it,
//!   what the scenario's [`Tolerance`] claims: requests may fail until the system
//!   recovers, or no read may fail, or no request may fail.
//!
//! A run that passes exits 0, one that fails exits 1 (usage errors are clap's 2).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::report::Report;

/// What a scenario claims about the requests due after its fault.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tolerance {
    /// Requests may fail after the fault while the system recovers (a lone
    /// node of a tier lost: its sessions, its writes), provided none fails in
    /// the run's closing stretch.
    #[default]
    UntilRecovered,
    /// No read (feed, timeline, photo view) may fail: another node serves it
    /// (a web server with a sibling behind the load balancer, a replica whose
    /// reads move to another or the primary, a primary being replaced whose
    /// reads its replicas serve). Writes may fail until recovered.
    NoReadFails,
    /// No request may fail: the node is on no request's path (a worker), or its
    /// loss costs no request (a DC's Redis: sessions are in the shards, cache
    /// reads fall through to the database).
    NoRequestFails,
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tolerance::UntilRecovered => "requests may fail until it is recovered from",
            Tolerance::NoReadFails => "no read may fail, writes only until it is recovered from",
            Tolerance::NoRequestFails => "no request may fail",
        })
    }
}

/// One check a run failed, with its numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Breach {
    /// Requests failed in a run without a fault.
    RequestsFailed {
        /// How many.
        count: u64,
    },
    /// The fault could not be injected: nothing was measured.
    FaultNotInjected {
        /// What was tried.
        action: String,
        /// Why it failed.
        outcome: String,
    },
    /// Requests failed before the fault was injected.
    FailedBeforeFault {
        /// How many.
        count: u64,
    },
    /// Reads failed after a fault whose scenario says none may.
    ReadsFailedAfterFault {
        /// The fault.
        action: String,
        /// How many reads.
        count: u64,
    },
    /// Requests failed after a fault whose scenario says none may.
    RequestsFailedAfterFault {
        /// The fault.
        action: String,
        /// How many.
        count: u64,
    },
    /// Requests still failed in the closing stretch of the run.
    NotRecovered {
        /// The fault.
        action: String,
        /// The closing stretch, seconds.
        quiet_secs: f64,
    },
    /// Requests of signed-in users were refused as unauthenticated: sessions
    /// were lost (whatever the fault, a session must survive it).
    SessionsLost {
        /// How many requests were answered 401.
        count: u64,
    },
    /// The checker (or a writer's read-back) found a write missing.
    CheckFailed {
        /// Acknowledged writes not found.
        lost: u64,
        /// Of those, how many of each kind (`post`, `like`, `follow`,
        /// `comment`, `delete_post`).
        lost_by_kind: BTreeMap<String, u64>,
        /// Writes whose reads kept failing.
        unverifiable: u64,
        /// Photo posts not processed by the deadline.
        photos_not_ready: u64,
        /// Followees counting fewer followers than acknowledged.
        short_follower_counts: u64,
        /// Posts missing from a checked reader's home feed, and readers whose
        /// feed could not be read.
        feeds_missing: u64,
        /// Writes their writer did not see right after the acknowledgement.
        read_your_writes_violations: u64,
    },
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Breach::RequestsFailed { count } => write!(f, "{count} requests failed"),
            Breach::FaultNotInjected { action, outcome } => {
                write!(f, "the scenario's fault was not injected ({action}: {outcome}): nothing was measured")
            }
            Breach::FailedBeforeFault { count } => {
                write!(f, "{count} requests failed before the fault was injected")
            }
            Breach::ReadsFailedAfterFault { action, count } => {
                write!(f, "{count} reads failed after {action}, whose scenario says no read may fail")
            }
            Breach::RequestsFailedAfterFault { action, count } => {
                write!(f, "{count} requests failed after {action}, whose scenario says no request may fail")
            }
            Breach::NotRecovered { action, quiet_secs } => write!(
                f,
                "not recovered from {action}: requests still failed in the last {quiet_secs:.1} s of the run \
                 (run longer to measure the recovery)"
            ),
            Breach::SessionsLost { count } => {
                write!(f, "{count} requests were refused as unauthenticated: sessions were lost")
            }
            Breach::CheckFailed {
                lost,
                lost_by_kind,
                unverifiable,
                photos_not_ready,
                short_follower_counts,
                feeds_missing,
                read_your_writes_violations,
            } => write!(
                f,
                "the checker failed: {lost} writes lost{}, {unverifiable} unverifiable, {photos_not_ready} photos \
                 not processed, {short_follower_counts} follower counts short, {feeds_missing} posts missing from \
                 followers' feeds (or feeds unreadable), {read_your_writes_violations} read-your-writes violations",
                if lost_by_kind.is_empty() {
                    String::new()
                } else {
                    let kinds: Vec<String> = lost_by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
                    format!(" ({})", kinds.join(", "))
                }
            ),
        }
    }
}

/// Whether a run passed, and why not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// No check failed.
    pub passed: bool,
    /// The exit status of `millions bench` for it ([`Verdict::exit_code`]).
    pub exit_code: i32,
    /// What the run was judged by, in words.
    pub rule: String,
    /// Every check that failed, with its numbers; empty when passed.
    pub breaches: Vec<Breach>,
    /// The same, in words.
    pub reasons: Vec<String>,
}

impl Default for Verdict {
    /// A report not judged yet: not a pass.
    fn default() -> Verdict {
        Verdict::from_breaches("not judged".into(), Vec::new(), false)
    }
}

impl Verdict {
    /// Judge a finished run from its report (everything but its verdict).
    pub fn judge(report: &Report) -> Verdict {
        let mut breaches = Vec::new();
        let rule = match &report.fault {
            None => {
                if report.errors > 0 {
                    breaches.push(Breach::RequestsFailed { count: report.errors });
                }
                "no request may fail".to_owned()
            }
            Some(fault) => {
                if !fault.done {
                    breaches.push(Breach::FaultNotInjected {
                        action: fault.action.clone(),
                        outcome: fault.outcome.clone(),
                    });
                } else {
                    if fault.errors_before > 0 {
                        breaches.push(Breach::FailedBeforeFault { count: fault.errors_before });
                    }
                    let action = fault.action.clone();
                    match fault.tolerance {
                        Tolerance::UntilRecovered => {}
                        Tolerance::NoReadFails if fault.reads_failed_after > 0 => breaches
                            .push(Breach::ReadsFailedAfterFault { action, count: fault.reads_failed_after }),
                        Tolerance::NoRequestFails if fault.errors_after > 0 => breaches
                            .push(Breach::RequestsFailedAfterFault { action, count: fault.errors_after }),
                        Tolerance::NoReadFails | Tolerance::NoRequestFails => {}
                    }
                    if !fault.recovered {
                        breaches.push(Breach::NotRecovered {
                            action: fault.action.clone(),
                            quiet_secs: fault.quiet_secs,
                        });
                    }
                }
                format!(
                    "no request may fail before {}; after it, {}; none in the last {:.1} s of the run; no session lost",
                    fault.action, fault.tolerance, fault.quiet_secs
                )
            }
        };
        // Every request the bench sends as a user carries a session it logged in
        // for: a 401 means the system forgot it, which no fault excuses.
        if let Some(&count) = report.errors_by_kind.get("http_401")
            && report.fault.is_some()
        {
            breaches.push(Breach::SessionsLost { count });
        }
        let c = &report.checker;
        if (c.ran && !c.passed) || c.read_your_writes_violations > 0 {
            breaches.push(Breach::CheckFailed {
                lost: c.lost,
                lost_by_kind: c.lost_by_kind.clone(),
                unverifiable: c.unverifiable,
                photos_not_ready: c.photos_not_ready_count,
                short_follower_counts: c.short_follower_counts_count,
                feeds_missing: c.feed_deliveries_missing_count + c.feeds_unverifiable,
                read_your_writes_violations: c.read_your_writes_violations,
            });
        }
        let rule = if c.ran {
            format!("{rule}; every acknowledged write found, every photo processed")
        } else {
            format!("{rule}; writers see their writes (the checker did not run)")
        };
        let passed = breaches.is_empty();
        Verdict::from_breaches(rule, breaches, passed)
    }

    fn from_breaches(rule: String, breaches: Vec<Breach>, passed: bool) -> Verdict {
        let reasons = breaches.iter().map(ToString::to_string).collect();
        Verdict { passed, exit_code: if passed { 0 } else { 1 }, rule, breaches, reasons }
    }

    /// The exit status of `millions bench`: 0 when the run passed, 1 when a
    /// check failed (2, a usage error, is clap's before anything runs).
    pub fn exit_code(&self) -> i32 {
        if self.passed { 0 } else { 1 }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed {
            write!(f, "verdict: PASSED (exit {}): {}", self.exit_code(), self.rule)
        } else if self.reasons.is_empty() {
            write!(f, "verdict: FAILED (exit {}): {}", self.exit_code(), self.rule)
        } else {
            write!(f, "verdict: FAILED (exit {}): {}", self.exit_code(), self.reasons.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::{CheckReport, FaultReport};
    use super::*;

    /// A run whose checker passed, with `errors` failed requests.
    fn run(errors: u64) -> Report {
        Report {
            errors,
            checker: CheckReport { ran: true, passed: true, ..CheckReport::default() },
            ..Report::default()
        }
    }

    /// The same under an injected fault that was recovered from, `before`
    /// failures before it, `reads` and `writes` failed after it.
    fn under(tolerance: Tolerance, before: u64, reads: u64, writes: u64) -> Report {
        Report {
            fault: Some(FaultReport {
                action: "kill dc1-web-1".into(),
                outcome: "killed".into(),
                done: true,
                recovered: true,
                quiet_secs: 1.0,
                tolerance,
                errors_before: before,
                errors_after: reads + writes,
                reads_failed_after: reads,
                ..FaultReport::default()
            }),
            ..run(before + reads + writes)
        }
    }

    fn breaches(report: &Report) -> Vec<Breach> {
        let verdict = Verdict::judge(report);
        assert_eq!(verdict.passed, verdict.breaches.is_empty(), "{verdict:?}");
        assert_eq!(verdict.exit_code(), if verdict.passed { 0 } else { 1 });
        assert_eq!(verdict.exit_code, verdict.exit_code());
        assert_eq!(verdict.reasons.len(), verdict.breaches.len());
        verdict.breaches
    }

    #[test]
    fn without_a_fault_any_failed_request_fails_the_run() {
        assert_eq!(breaches(&run(0)), []);
        assert_eq!(Verdict::judge(&run(0)).exit_code(), 0);
        assert_eq!(breaches(&run(2)), [Breach::RequestsFailed { count: 2 }]);
        assert_eq!(Verdict::judge(&run(2)).exit_code(), 1);
        assert_eq!(Verdict::judge(&run(2)).reasons, ["2 requests failed"]);
    }

    #[test]
    fn a_failed_check_fails_the_run_with_or_without_a_fault() {
        let lost = |mut r: Report| {
            r.checker.passed = false;
            r.checker.lost = 1;
            r.checker.lost_by_kind.insert("comment".into(), 1);
            r
        };
        let expected = Breach::CheckFailed {
            lost: 1,
            lost_by_kind: BTreeMap::from([("comment".to_owned(), 1)]),
            unverifiable: 0,
            photos_not_ready: 0,
            short_follower_counts: 0,
            feeds_missing: 0,
            read_your_writes_violations: 0,
        };
        assert_eq!(breaches(&lost(run(0))), std::slice::from_ref(&expected));
        assert_eq!(breaches(&lost(under(Tolerance::UntilRecovered, 0, 0, 0))), [expected]);
        // Photos not processed: the checker did not pass.
        let mut r = run(0);
        r.checker.passed = false;
        r.checker.photos_not_ready_count = 3;
        assert!(matches!(breaches(&r)[..], [Breach::CheckFailed { photos_not_ready: 3, .. }]));
        // A writer missing its own write fails the run even when the checker
        // did not run (`--no-verify`): the read-backs are made during the run.
        let mut r = run(0);
        r.checker.ran = false;
        r.checker.passed = false;
        assert_eq!(breaches(&r), []);
        r.checker.read_your_writes_violations = 1;
        assert!(matches!(breaches(&r)[..], [Breach::CheckFailed { read_your_writes_violations: 1, .. }]));
    }

    #[test]
    fn a_fault_not_injected_or_not_recovered_from_fails_the_run() {
        let mut r = under(Tolerance::UntilRecovered, 0, 0, 0);
        let fault = r.fault.as_mut().unwrap();
        fault.done = false;
        fault.outcome = "failed: no such node".into();
        let verdict = Verdict::judge(&r);
        assert_eq!(verdict.exit_code(), 1);
        assert!(matches!(&verdict.breaches[..], [Breach::FaultNotInjected { .. }]), "{verdict:?}");
        assert!(verdict.reasons[0].contains("not injected"), "{verdict:?}");

        let mut r = under(Tolerance::UntilRecovered, 0, 0, 3);
        r.fault.as_mut().unwrap().recovered = false;
        let verdict = Verdict::judge(&r);
        assert_eq!(
            verdict.breaches,
            [Breach::NotRecovered { action: "kill dc1-web-1".into(), quiet_secs: 1.0 }]
        );
        assert!(verdict.reasons[0].starts_with("not recovered from kill dc1-web-1"), "{verdict:?}");
    }

    #[test]
    fn failures_after_a_fault_fail_the_run_only_where_its_scenario_claims_none() {
        // Until recovered: reads and writes may fail after it.
        assert_eq!(breaches(&under(Tolerance::UntilRecovered, 0, 4, 5)), []);
        // No read may fail: failed writes are reported, failed reads fail it.
        assert_eq!(breaches(&under(Tolerance::NoReadFails, 0, 0, 5)), []);
        assert_eq!(
            breaches(&under(Tolerance::NoReadFails, 0, 4, 5)),
            [Breach::ReadsFailedAfterFault { action: "kill dc1-web-1".into(), count: 4 }]
        );
        // No request may fail.
        assert_eq!(breaches(&under(Tolerance::NoRequestFails, 0, 0, 0)), []);
        assert_eq!(
            breaches(&under(Tolerance::NoRequestFails, 0, 0, 1)),
            [Breach::RequestsFailedAfterFault { action: "kill dc1-web-1".into(), count: 1 }]
        );
        // Before the fault, nothing may fail, whatever the scenario.
        for tolerance in [Tolerance::UntilRecovered, Tolerance::NoReadFails, Tolerance::NoRequestFails] {
            assert_eq!(breaches(&under(tolerance, 2, 0, 0)), [Breach::FailedBeforeFault { count: 2 }]);
        }
    }

    #[test]
    fn a_lost_session_fails_a_run_under_any_fault() {
        // Tolerated as a failure until recovered, but a 401 is a session the
        // system forgot: a breach of its own.
        let mut r = under(Tolerance::UntilRecovered, 0, 0, 3);
        r.errors_by_kind.insert("http_401".into(), 2);
        assert_eq!(breaches(&r), [Breach::SessionsLost { count: 2 }]);
        r.errors_by_kind.clear();
        r.errors_by_kind.insert("http_5xx".into(), 3);
        assert_eq!(breaches(&r), []);
    }

    #[test]
    fn the_verdict_is_in_the_json_report_and_printed() {
        let mut r = under(Tolerance::NoReadFails, 0, 4, 0);
        r.verdict = Verdict::judge(&r);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["verdict"]["passed"], false);
        assert_eq!(json["verdict"]["exit_code"], 1);
        assert_eq!(json["verdict"]["breaches"][0]["check"], "reads_failed_after_fault");
        assert_eq!(json["verdict"]["breaches"][0]["count"], 4);
        assert_eq!(json["fault"]["tolerance"], "no_read_fails");
        let text = r.to_string();
        assert_eq!(
            text.lines().last(),
            Some(
                "verdict: FAILED (exit 1): 4 reads failed after kill dc1-web-1, whose scenario says no read may fail"
            ),
            "{text}"
        );
        // A report nobody judged is no pass.
        let text = Report::default().to_string();
        assert_eq!(text.lines().last(), Some("verdict: FAILED (exit 1): not judged"), "{text}");
        let mut r = run(0);
        r.verdict = Verdict::judge(&r);
        let text = r.to_string();
        assert_eq!(
            text.lines().last(),
            Some(
                "verdict: PASSED (exit 0): no request may fail; every acknowledged write found, every photo processed"
            ),
            "{text}"
        );
    }
}
