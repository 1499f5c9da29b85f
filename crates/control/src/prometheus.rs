//! For those who run Prometheus and Grafana already: the run directory's
//! `prometheus/` holds a Prometheus configuration (`prometheus.yml`) that
//! discovers every node from a file (`targets.json`, file-based service
//! discovery: each node's `/metrics` with labels `dc`, `role`, `node`), the alert
//! rules (`alerts.yml`, the controller's own, `crate::alerts`) and a Grafana
//! dashboard of the same
//! panels as the controller's page (`grafana-dashboard.json`). Written when the
//! controller starts; the targets are written again whenever they differ from
//! the file (checked every scrape round), each file replaced in one rename so
//! Prometheus never reads half of one.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use topology::{Role, Topology};

use crate::error::{Context as _, ControlError};
use crate::files::replace;
use crate::shared::Shared;

/// The directory of the files, in the run directory.
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("prometheus")
}

/// The scrape targets: every node serving `/metrics` (all but PostgreSQL and
/// Redis), at the address it serves it on, and the controller at `api`.
pub(crate) fn targets(topology: &Topology, api: std::net::SocketAddr) -> Value {
    let mut groups: Vec<Value> = topology
        .nodes()
        .iter()
        .filter(|n| !matches!(n.role, Role::Postgres | Role::Redis))
        .map(|n| {
            json!({
                "targets": [crate::launch::readyz_addr(n).to_string()],
                "labels": {"dc": n.dc, "role": n.role.key(), "node": n.name},
            })
        })
        .collect();
    groups.push(json!({"targets": [api.to_string()], "labels": {"role": "control", "node": "control"}}));
    Value::Array(groups)
}

/// `prometheus.yml`: one job discovering [`targets`] from `targets.json`, the
/// rules of `alerts.yml`, scraped and evaluated every `interval`.
pub(crate) fn config(dir: &Path, interval: std::time::Duration, timeout: std::time::Duration) -> String {
    // JSON strings are YAML's double-quoted scalars: any path is quoted right.
    let quoted = |name: &str| Value::String(dir.join(name).display().to_string()).to_string();
    format!(
        "# Prometheus configuration of a Millions run, written by `millions control`.\n\
         # Run: prometheus --config.file={config}\n\
         # The nodes are discovered from targets.json (rewritten when they change).\n\
         global:\n  scrape_interval: {interval}ms\n  scrape_timeout: {timeout}ms\n  evaluation_interval: {interval}ms\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n  - job_name: millions\n    metrics_path: /metrics\n    file_sd_configs:\n      \
         - files:\n          - {targets}\n        refresh_interval: 10s\n",
        config = dir.join("prometheus.yml").display(),
        interval = interval.as_millis(),
        timeout = timeout.as_millis(),
        rules = quoted("alerts.yml"),
        targets = quoted("targets.json"),
    )
}

/// The routes that are probes, not users' requests.
const NOT_PROBES: &str = r#"route!~"/metrics|/healthz|/readyz""#;

/// A time-series panel of `exprs` (legend, PromQL) at grid position `i`.
fn panel(i: usize, title: &str, unit: &str, exprs: &[(&str, String)]) -> Value {
    let targets: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(j, (legend, expr))| {
            json!({"refId": ((b'A' + j as u8) as char).to_string(), "expr": expr, "legendFormat": legend,
                   "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}})
        })
        .collect();
    json!({
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": targets,
    })
}

/// The Grafana dashboard: the page's panels in PromQL (the per-node CPU,
/// memory and files are the controller's /proc readings, not in `/metrics`).
pub(crate) fn grafana_dashboard() -> Value {
    let select =
        |m: &str, filter: &str| if filter.is_empty() { m.to_owned() } else { format!("{m}{{{filter}}}") };
    let rate = |m: &str, by: &str, filter: &str| format!("sum by ({by}) (rate({}[1m]))", select(m, filter));
    let p99 = |m: &str, by: &str, filter: &str| {
        let buckets = select(&format!("{m}_bucket"), filter);
        format!("histogram_quantile(0.99, sum by ({by}, le) (rate({buckets}[1m])))")
    };
    let business: Vec<(&str, String)> = ["signups", "posts", "photos", "likes", "follows"]
        .into_iter()
        .map(|b| (b, format!("sum(rate(millions_business_{b}_total[5m])) * 60")))
        .collect();
    let panels = [
        ("requests per second, by tier", "reqps", vec![(
            "{{role}}",
            rate("millions_http_requests_total", "role", NOT_PROBES),
        )]),
        ("server errors (5xx) per second, by tier", "reqps", vec![(
            "{{role}}",
            rate("millions_http_requests_total", "role", r#"status=~"5..""#),
        )]),
        ("request duration p99, by tier", "s", vec![(
            "{{role}}",
            p99("millions_http_request_duration_seconds", "role", NOT_PROBES),
        )]),
        ("load balancers: backend requests, errors, p99", "short", vec![
            ("requests/s", rate("millions_lb_backend_requests_total", "dc", "")),
            ("errors/s", rate("millions_lb_backend_errors_total", "dc", "")),
            ("p99 s", p99("millions_lb_backend_latency_seconds", "dc", "")),
        ]),
        ("cache hit ratio (L1, L2)", "percentunit", vec![(
            "{{result}}",
            "sum by (result) (rate(millions_cache_lookups_total{result=~\"l1_hit|l2_hit\"}[1m])) / ignoring(result) \
             group_left sum(rate(millions_cache_lookups_total[1m]))"
                .to_owned(),
        )]),
        ("database queries per second, by shard", "short", vec![(
            "shard {{shard}}",
            rate("millions_db_queries_total", "shard", ""),
        )]),
        ("database reads per second, by shard and target", "short", vec![(
            "shard {{shard}} {{target}}",
            rate("millions_db_reads_total", "shard, target", ""),
        )]),
        ("replication lag (worst reader's view)", "s", vec![(
            "shard {{shard}} {{replica}}",
            "max by (shard, replica) (millions_db_replica_lag_seconds)".to_owned(),
        )]),
        ("queue depth, by state", "short", vec![(
            "{{state}}",
            "sum by (state) (max by (shard, state) (millions_queue_jobs))".to_owned(),
        )]),
        ("oldest waiting job", "s", vec![("oldest", "max(millions_queue_oldest_ready_seconds)".to_owned())]),
        ("jobs per second, by outcome", "short", vec![(
            "{{outcome}}",
            rate("millions_jobs_total", "outcome", ""),
        )]),
        ("what users did, per minute", "short", business),
        ("active users (HyperLogLog, every data center)", "short", vec![(
            "{{window}}",
            "max by (window) (millions_control_active_users)".to_owned(),
        )]),
        ("nodes up, restarts", "short", vec![
            ("{{node}} up", "up{job=\"millions\"}".to_owned()),
            ("{{node}} restarts", "increase(millions_control_node_restarts_total[10m])".to_owned()),
        ]),
    ];
    let panels: Vec<Value> =
        panels.iter().enumerate().map(|(i, (title, unit, exprs))| panel(i, title, unit, exprs)).collect();
    json!({
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "title": "Millions",
        "uid": "millions",
        "tags": ["millions"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "5s",
        "time": {"from": "now-30m", "to": "now"},
        "panels": panels,
    })
}

/// Write every file (at start).
pub(crate) fn write_all(shared: &Shared) -> Result<PathBuf, ControlError> {
    let dir = dir(&shared.opts.run_dir);
    std::fs::create_dir_all(&dir).file("creating", &dir)?;
    let h = &shared.opts.history;
    replace(&dir.join("prometheus.yml"), &config(&dir, h.interval, h.timeout))?;
    replace(&dir.join("alerts.yml"), &crate::alerts::prometheus_rules(h))?;
    let dashboard = serde_json::to_string_pretty(&grafana_dashboard()).expect("JSON");
    replace(&dir.join("grafana-dashboard.json"), &dashboard)?;
    refresh_targets(shared)?;
    Ok(dir)
}

/// Write `targets.json` if it is not what it should be.
pub(crate) fn refresh_targets(shared: &Shared) -> Result<(), ControlError> {
    let path = dir(&shared.opts.run_dir).join("targets.json");
    let text = serde_json::to_string_pretty(&targets(&shared.topology(), shared.api_addr)).expect("JSON");
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    replace(&path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metrics_node_is_a_target_with_its_labels() {
        let t = topology::preset("test").unwrap();
        let v = targets(&t, "127.0.0.1:9900".parse().unwrap());
        let groups = v.as_array().unwrap();
        let named: Vec<&str> = groups.iter().map(|g| g["labels"]["node"].as_str().unwrap()).collect();
        assert_eq!(
            named,
            ["dc1-worker-1", "dc1-web-1", "dc1-lb-1", "dc1-cdn-1", "dc1-dns-1", "control"],
            "{v}"
        );
        let lb = &groups[2];
        assert_eq!(lb["targets"][0], "127.0.201.10:8001", "the admin listener serves /metrics");
        assert_eq!((&lb["labels"]["dc"], &lb["labels"]["role"]), (&json!("dc1"), &json!("lb")));
        let text = config(
            Path::new("/run/x y/prometheus"),
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(2),
        );
        assert!(text.contains("scrape_interval: 5000ms"), "{text}");
        assert!(text.contains("- \"/run/x y/prometheus/targets.json\""), "{text}");
    }
}
