//! Alert rules for the symptoms that matter — a tier's error rate, a tier's
//! p99, replication lag, the oldest waiting job, free disk, a node restarting in
//! a loop — evaluated by the controller on its history every scrape round
//! ([`evaluate`], pure), followed from firing to resolved ([`follow`], pure: the
//! event log gets `alert-firing` and `alert-resolved`), shown on the dashboard,
//! and exported as the same rules for Prometheus ([`prometheus_rules`]).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::history::{HistoryOptions, SeriesOut};

/// How far back the rules look: the longest window (restarts).
pub(crate) const LOOKBACK_MS: i64 = RESTART_WINDOW_MS;
/// The window of the error rate.
const RATE_WINDOW_MS: i64 = 60_000;
/// The window of the restart loop.
const RESTART_WINDOW_MS: i64 = 600_000;

/// The thresholds of the rules.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Limits {
    /// A tier's share of server errors (5xx) among its requests in the last minute.
    pub(crate) error_ratio: f64,
    /// Fewer requests than this in the minute: the ratio says nothing yet.
    pub(crate) min_requests: f64,
    /// A tier's p99 over the last interval, in seconds.
    pub(crate) p99_seconds: f64,
    /// A replica's lag as a web server or worker last measured it, in seconds.
    pub(crate) replica_lag_seconds: f64,
    /// The oldest job waiting to run, in seconds.
    pub(crate) queue_oldest_seconds: f64,
    /// Free bytes on the run directory's filesystem.
    pub(crate) disk_free_bytes: f64,
    /// Restarts of one node within ten minutes.
    pub(crate) restarts: f64,
}

impl Limits {
    /// The limits of a controller keeping history as `opts` says.
    pub(crate) fn new(opts: &HistoryOptions) -> Limits {
        Limits {
            error_ratio: 0.05,
            min_requests: 10.0,
            p99_seconds: 1.0,
            replica_lag_seconds: 5.0,
            queue_oldest_seconds: 60.0,
            disk_free_bytes: opts.disk_free_warning_bytes as f64,
            restarts: 3.0,
        }
    }
}

/// A rule's condition holding now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Alert {
    /// The rule (`HighErrorRate`, ...).
    pub(crate) rule: &'static str,
    /// What it is about: a tier, a replica, a shard's queue, a node, `host`.
    pub(crate) subject: String,
    /// `page` (users are hurt now) or `ticket` (they will be).
    pub(crate) severity: &'static str,
    /// The value measured.
    pub(crate) value: f64,
    /// The threshold it crossed.
    pub(crate) threshold: f64,
    /// In words.
    pub(crate) summary: String,
    /// Since when it fires (unix ms); the evaluation's time until [`follow`]
    /// keeps the first.
    pub(crate) since: i64,
}

/// The roles whose requests users wait for, and how their errors are counted.
fn tiers(roles: &HashMap<String, String>) -> Vec<&str> {
    let mut tiers: Vec<&str> =
        roles.values().map(String::as_str).filter(|r| matches!(*r, "web" | "lb")).collect();
    tiers.sort();
    tiers.dedup();
    tiers
}

/// The increase of a counter's `points` from `from` on (a value lower than the
/// one before is a restart: the new value is the increase).
fn increase(points: &[(i64, f64)], from: i64) -> f64 {
    let mut sum = 0.0;
    let mut prev: Option<f64> = None;
    for &(t, v) in points {
        if let Some(p) = prev
            && t > from
        {
            sum += if v >= p { v - p } else { v };
        }
        prev = Some(v);
    }
    sum
}

/// The newest value of `points` not older than `oldest`.
fn latest(points: &[(i64, f64)], oldest: i64) -> Option<f64> {
    points.last().filter(|p| p.0 >= oldest).map(|p| p.1)
}

fn is_probe(s: &SeriesOut) -> bool {
    s.labels.get("route").is_some_and(|r| matches!(r.as_str(), "/metrics" | "/healthz" | "/readyz"))
}

/// Every rule's conditions holding at `now` on `series` (the history of the
/// metrics the rules read, [`NAMES`], over at least [`LOOKBACK_MS`]); `roles`
/// maps node names to their role; `stale_ms` is how old a gauge's last point may
/// be and still count (about two scrape intervals).
pub(crate) fn evaluate(
    series: &[SeriesOut],
    roles: &HashMap<String, String>,
    now: i64,
    stale_ms: i64,
    limits: &Limits,
) -> Vec<Alert> {
    let mut out = Vec::new();
    let alert = |rule, subject: String, severity, value: f64, threshold: f64, summary: String| Alert {
        rule,
        subject,
        severity,
        value,
        threshold,
        summary,
        since: now,
    };
    let role_of = |s: &SeriesOut| roles.get(&s.node).map(String::as_str);
    let named = |name: &'static str| series.iter().filter(move |s| s.name == name);

    // Error rate per tier, over the last minute.
    for tier in tiers(roles) {
        let from = now - RATE_WINDOW_MS;
        let (errors, total) = if tier == "lb" {
            let sum = |name| {
                named(name).filter(|s| role_of(s) == Some("lb")).map(|s| increase(&s.points, from)).sum()
            };
            (sum("millions_lb_backend_errors_total"), sum("millions_lb_backend_requests_total"))
        } else {
            let requests =
                named("millions_http_requests_total").filter(|s| role_of(s) == Some(tier) && !is_probe(s));
            let (mut errors, mut total) = (0.0, 0.0);
            for s in requests {
                let n = increase(&s.points, from);
                total += n;
                if s.labels.get("status").is_some_and(|c| c.starts_with('5')) {
                    errors += n;
                }
            }
            (errors, total)
        };
        if total >= limits.min_requests && errors / total > limits.error_ratio {
            let ratio = errors / total;
            out.push(alert(
                "HighErrorRate",
                tier.to_owned(),
                "page",
                ratio,
                limits.error_ratio,
                format!("{tier}: {:.1}% of {total} requests in the last minute failed (5xx)", ratio * 100.0),
            ));
        }
    }
    // p99 per tier, as the controller derived it for the last interval.
    for s in named("tier_request_duration_p99_seconds") {
        let (Some(role), Some(p99)) = (s.labels.get("role"), latest(&s.points, now - stale_ms)) else {
            continue;
        };
        if p99 > limits.p99_seconds {
            out.push(alert(
                "HighLatencyP99",
                role.clone(),
                "page",
                p99,
                limits.p99_seconds,
                format!("{role}: p99 {:.0} ms (limit {:.0} ms)", p99 * 1e3, limits.p99_seconds * 1e3),
            ));
        }
    }
    // Replication lag: the worst any web server or worker measured, per replica.
    let mut lag: BTreeMap<(String, String), f64> = BTreeMap::new();
    for s in named("millions_db_replica_lag_seconds") {
        let (Some(shard), Some(replica)) = (s.labels.get("shard"), s.labels.get("replica")) else { continue };
        if let Some(v) = latest(&s.points, now - stale_ms) {
            let worst = lag.entry((shard.clone(), replica.clone())).or_insert(v);
            *worst = worst.max(v);
        }
    }
    for ((shard, replica), v) in lag.into_iter().filter(|(_, v)| *v > limits.replica_lag_seconds) {
        out.push(alert(
            "ReplicationLag",
            format!("shard {shard} replica {replica}"),
            "ticket",
            v,
            limits.replica_lag_seconds,
            format!(
                "shard {shard}: replica {replica} lags {v:.1} s (limit {} s)",
                limits.replica_lag_seconds
            ),
        ));
    }
    // The oldest waiting job, per shard (every worker sees the whole queue).
    let mut oldest: BTreeMap<String, f64> = BTreeMap::new();
    for s in named("millions_queue_oldest_ready_seconds") {
        let (Some(shard), Some(v)) = (s.labels.get("shard"), latest(&s.points, now - stale_ms)) else {
            continue;
        };
        let worst = oldest.entry(shard.clone()).or_insert(v);
        *worst = worst.max(v);
    }
    for (shard, v) in oldest.into_iter().filter(|(_, v)| *v > limits.queue_oldest_seconds) {
        out.push(alert(
            "QueueJobsWaiting",
            format!("shard {shard} queue"),
            "ticket",
            v,
            limits.queue_oldest_seconds,
            format!(
                "shard {shard}: a job has waited {v:.0} s to run (limit {} s)",
                limits.queue_oldest_seconds
            ),
        ));
    }
    // Free disk of the run directory.
    if let Some(free) = named("host_disk_free_bytes").find_map(|s| latest(&s.points, now - stale_ms))
        && free < limits.disk_free_bytes
    {
        out.push(alert(
            "DiskFreeLow",
            "host".into(),
            "ticket",
            free,
            limits.disk_free_bytes,
            format!("{} MiB free on the run directory's filesystem", free as u64 >> 20),
        ));
    }
    // A node restarting in a loop.
    for s in named("node_restarts_total") {
        let n = increase(&s.points, now - RESTART_WINDOW_MS);
        if n >= limits.restarts {
            out.push(alert(
                "NodeRestartLoop",
                s.node.clone(),
                "page",
                n,
                limits.restarts,
                format!("{}: restarted {n} times in ten minutes", s.node),
            ));
        }
    }
    out
}

/// The metrics [`evaluate`] reads.
pub(crate) const NAMES: [&str; 9] = [
    "millions_http_requests_total",
    "millions_lb_backend_errors_total",
    "millions_lb_backend_requests_total",
    "tier_request_duration_p99_seconds",
    "millions_db_replica_lag_seconds",
    "millions_queue_oldest_ready_seconds",
    "host_disk_free_bytes",
    "node_restarts_total",
    "scrape_up",
];

/// Follow the alerts firing (`firing`, by rule and subject) to `now_firing`:
/// a new one fires (its `since` kept from then on), one no longer holding
/// resolves. Returns what changed: (`alert-firing` or `alert-resolved`, the alert).
pub(crate) fn follow(
    firing: &mut BTreeMap<(String, String), Alert>,
    now_firing: Vec<Alert>,
) -> Vec<(&'static str, Alert)> {
    let mut changes = Vec::new();
    let mut next = BTreeMap::new();
    for mut a in now_firing {
        let key = (a.rule.to_owned(), a.subject.clone());
        match firing.remove(&key) {
            Some(before) => a.since = before.since,
            None => changes.push(("alert-firing", a.clone())),
        }
        next.insert(key, a);
    }
    changes.extend(std::mem::take(firing).into_values().map(|a| ("alert-resolved", a)));
    *firing = next;
    changes
}

/// The same rules for Prometheus (`alerts.yml`), over the metrics every node
/// serves and the controller's own (free disk, restarts).
pub(crate) fn prometheus_rules(opts: &HistoryOptions) -> String {
    let l = Limits::new(opts);
    let users = r#"route!~"/metrics|/healthz|/readyz""#;
    let rules = [
        (
            "HighErrorRate",
            "page",
            "requests",
            format!(
                "(sum by (role) (rate(millions_http_requests_total{{status=~\"5..\",{users}}}[1m])) / sum by (role) \
                 (rate(millions_http_requests_total{{{users}}}[1m])) > {e}) and sum by (role) \
                 (increase(millions_http_requests_total{{{users}}}[1m])) >= {n}",
                e = l.error_ratio,
                n = l.min_requests
            ),
            "{{ $labels.role }}: {{ $value | humanizePercentage }} of requests failed (5xx) in the last minute",
        ),
        (
            "HighErrorRate",
            "page",
            "lb_backends",
            format!(
                "(sum by (dc) (rate(millions_lb_backend_errors_total[1m])) / sum by (dc) \
                 (rate(millions_lb_backend_requests_total[1m])) > {e}) and sum by (dc) \
                 (increase(millions_lb_backend_requests_total[1m])) >= {n}",
                e = l.error_ratio,
                n = l.min_requests
            ),
            "load balancers of {{ $labels.dc }}: {{ $value | humanizePercentage }} of backend requests failed",
        ),
        (
            "HighLatencyP99",
            "page",
            "",
            format!(
                "histogram_quantile(0.99, sum by (role, le) (rate(millions_http_request_duration_seconds_bucket{{{users}}}[1m]))) > {}",
                l.p99_seconds
            ),
            "{{ $labels.role }}: p99 {{ $value | humanizeDuration }}",
        ),
        (
            "ReplicationLag",
            "ticket",
            "",
            format!("max by (shard, replica) (millions_db_replica_lag_seconds) > {}", l.replica_lag_seconds),
            "shard {{ $labels.shard }}: replica {{ $labels.replica }} lags {{ $value | humanizeDuration }}",
        ),
        (
            "QueueJobsWaiting",
            "ticket",
            "",
            format!("max by (shard) (millions_queue_oldest_ready_seconds) > {}", l.queue_oldest_seconds),
            "shard {{ $labels.shard }}: a job has waited {{ $value | humanizeDuration }} to run",
        ),
        (
            "DiskFreeLow",
            "ticket",
            "",
            format!("millions_control_disk_free_bytes < {}", l.disk_free_bytes),
            "{{ $value | humanize1024 }}B free on the run directory's filesystem",
        ),
        (
            "NodeRestartLoop",
            "page",
            "",
            format!("increase(millions_control_node_restarts_total[10m]) >= {}", l.restarts),
            "{{ $labels.node }}: restarted {{ $value }} times in ten minutes",
        ),
    ];
    let mut out = String::from(
        "# Alert rules of a Millions run, written by `millions control`: the rules its\n\
         # dashboard evaluates on its own history, over the metrics Prometheus scrapes.\n\
         groups:\n  - name: millions\n    rules:\n",
    );
    // `measured` tells apart the two rules of one name (what the error rate is of).
    for (name, severity, measured, expr, summary) in rules {
        // JSON strings are YAML's double-quoted scalars.
        let quoted = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        let measured =
            if measured.is_empty() { String::new() } else { format!("\n          measured: {measured}") };
        out.push_str(&format!(
            "      - alert: {name}\n        expr: {}\n        labels:\n          severity: {severity}{measured}\n        \
             annotations:\n          summary: {}\n",
            quoted(&expr),
            quoted(summary)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(node: &str, name: &str, labels: &[(&str, &str)], points: &[(i64, f64)]) -> SeriesOut {
        SeriesOut {
            node: node.into(),
            name: name.into(),
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            points: points.to_vec(),
        }
    }

    fn roles() -> HashMap<String, String> {
        [("web-1", "web"), ("web-2", "web"), ("lb-1", "lb"), ("worker-1", "worker")]
            .into_iter()
            .map(|(n, r)| (n.to_owned(), r.to_owned()))
            .collect()
    }

    fn limits() -> Limits {
        Limits::new(&HistoryOptions { disk_free_warning_bytes: 1 << 30, ..Default::default() })
    }

    /// A counter growing by `per_step` every 5 s from `start` for `steps` steps.
    fn counter(start: i64, steps: i64, per_step: f64) -> Vec<(i64, f64)> {
        (0..=steps).map(|i| (start + i * 5000, i as f64 * per_step)).collect()
    }

    #[test]
    fn an_error_rate_fires_then_resolves() {
        let now = 600_000;
        let ok = |node: &str, per: f64| {
            series(
                node,
                "millions_http_requests_total",
                &[("route", "/a"), ("status", "200")],
                &counter(now - 120_000, 24, per),
            )
        };
        // Two web servers: 10 requests a step each; 5xx on one of them at 2 a step (10%).
        let errors = series(
            "web-2",
            "millions_http_requests_total",
            &[("route", "/a"), ("status", "503")],
            &counter(now - 120_000, 24, 2.0),
        );
        // Probes failing do not count.
        let probe = series(
            "web-1",
            "millions_http_requests_total",
            &[("route", "/readyz"), ("status", "503")],
            &counter(now - 120_000, 24, 50.0),
        );
        let firing = evaluate(
            &[ok("web-1", 10.0), ok("web-2", 10.0), errors.clone(), probe.clone()],
            &roles(),
            now,
            10_000,
            &limits(),
        );
        assert_eq!(firing.len(), 1, "{firing:?}");
        assert_eq!((firing[0].rule, firing[0].subject.as_str()), ("HighErrorRate", "web"));
        assert!((firing[0].value - 24.0 / 264.0).abs() < 1e-9, "{firing:?}");

        // The errors stop: the last minute's ratio falls under the limit.
        let mut stopped = errors;
        for p in stopped.points.iter_mut().filter(|p| p.0 > now - 90_000) {
            p.1 = 2.0 * 6.0;
        }
        let quiet = evaluate(
            &[ok("web-1", 10.0), ok("web-2", 10.0), stopped, probe],
            &roles(),
            now,
            10_000,
            &limits(),
        );
        assert!(quiet.is_empty(), "{quiet:?}");

        // Too few requests say nothing.
        let few = series(
            "web-1",
            "millions_http_requests_total",
            &[("route", "/a"), ("status", "500")],
            &[(now - 30_000, 0.0), (now, 3.0)],
        );
        assert!(evaluate(&[few], &roles(), now, 10_000, &limits()).is_empty());
    }

    #[test]
    fn latency_lag_queue_disk_and_restart_loops_fire_over_their_limits_only() {
        let now = 1_000_000;
        let gauge = |node: &str, name: &str, labels: &[(&str, &str)], v: f64| {
            series(node, name, labels, &[(now - 20_000, 0.0), (now - 1000, v)])
        };
        let history = [
            gauge("system", "tier_request_duration_p99_seconds", &[("role", "web")], 1.5),
            gauge("system", "tier_request_duration_p99_seconds", &[("role", "lb")], 0.2),
            gauge("web-1", "millions_db_replica_lag_seconds", &[("shard", "0"), ("replica", "r1")], 7.0),
            gauge("worker-1", "millions_db_replica_lag_seconds", &[("shard", "0"), ("replica", "r1")], 2.0),
            gauge("web-1", "millions_db_replica_lag_seconds", &[("shard", "1"), ("replica", "r2")], 0.1),
            gauge("worker-1", "millions_queue_oldest_ready_seconds", &[("shard", "1")], 90.0),
            gauge("host", "host_disk_free_bytes", &[], 100.0 * 1048576.0),
            // Restarted 3 times in the last ten minutes, and once long before.
            series(
                "web-2",
                "node_restarts_total",
                &[],
                &[
                    (now - 900_000, 0.0),
                    (now - 700_000, 1.0),
                    (now - 500_000, 2.0),
                    (now - 300_000, 3.0),
                    (now - 5000, 4.0),
                ],
            ),
            series("lb-1", "node_restarts_total", &[], &[(now - 900_000, 0.0), (now - 5000, 1.0)]),
        ];
        let mut got: Vec<(&str, String)> = evaluate(&history, &roles(), now, 10_000, &limits())
            .into_iter()
            .map(|a| (a.rule, a.subject))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("DiskFreeLow", "host".to_owned()),
                ("HighLatencyP99", "web".to_owned()),
                ("NodeRestartLoop", "web-2".to_owned()),
                ("QueueJobsWaiting", "shard 1 queue".to_owned()),
                ("ReplicationLag", "shard 0 replica r1".to_owned()),
            ]
        );
        // A gauge whose last point is stale (the node stopped answering) says nothing.
        assert!(evaluate(&history[..1], &roles(), now + 60_000, 10_000, &limits()).is_empty());
    }

    #[test]
    fn following_keeps_the_first_time_and_says_what_fired_and_resolved() {
        let a = |rule, subject: &str, since| Alert {
            rule,
            subject: subject.into(),
            severity: "page",
            value: 1.0,
            threshold: 0.5,
            summary: String::new(),
            since,
        };
        let mut firing = BTreeMap::new();
        let changes = follow(&mut firing, vec![a("HighLatencyP99", "web", 10)]);
        assert_eq!(changes, [("alert-firing", a("HighLatencyP99", "web", 10))]);
        let changes = follow(&mut firing, vec![a("HighLatencyP99", "web", 20), a("DiskFreeLow", "host", 20)]);
        assert_eq!(changes, [("alert-firing", a("DiskFreeLow", "host", 20))]);
        assert_eq!(
            firing[&("HighLatencyP99".to_owned(), "web".to_owned())].since,
            10,
            "firing since the first time"
        );
        let changes = follow(&mut firing, vec![a("DiskFreeLow", "host", 30)]);
        assert_eq!(changes, [("alert-resolved", a("HighLatencyP99", "web", 10))]);
        assert_eq!(firing.len(), 1);
    }

    #[test]
    fn the_prometheus_rules_name_every_rule() {
        let text = prometheus_rules(&HistoryOptions::default());
        for rule in [
            "HighErrorRate",
            "HighLatencyP99",
            "ReplicationLag",
            "QueueJobsWaiting",
            "DiskFreeLow",
            "NodeRestartLoop",
        ] {
            assert!(text.contains(&format!("- alert: {rule}\n")), "{rule}: {text}");
        }
    }
}
