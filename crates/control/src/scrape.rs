//! The scraper: on an interval, every node's `/metrics` (each with its own
//! timeout, all at once, each recorded as it arrives, so a node that hangs or
//! answers garbage holds up no other), every node's process tree from /proc
//! (CPU seconds, resident memory, open files), and the run directory's disk,
//! into the [`History`](crate::history::History); a `disk-low` event when free
//! disk falls below the threshold. Then what is derived from it: each tier's
//! p99 over the interval (from the request-duration buckets), the active users
//! over every DC's Redis (`cache::active`), the alert rules (`crate::alerts`),
//! and Prometheus' targets file kept current. Also the parser of the Prometheus
//! text format the nodes answer.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use topology::Role;

use crate::cluster::Event;
use crate::history::{QUANTILE_HISTOGRAMS, Recorder, SYSTEM, Sample, fold_buckets, now_ms, quantile};
use crate::shared::Shared;
use crate::status::{self, NodeStatus};

/// The most bytes of one node's `/metrics` read: past it, the scrape fails.
const MAX_BODY: usize = 4 << 20;

/// Parse the Prometheus text format (and OpenMetrics' text, whose `# EOF` is a
/// comment here): one sample per line, `name{label="value",...} value
/// [timestamp]`. `_created` samples and the buckets of histograms other than
/// [`QUANTILE_HISTOGRAMS`] are left out (the dashboard draws their means from
/// `_sum` and `_count`; their buckets would multiply the series kept). Any other
/// line that is not a sample is an error.
pub(crate) fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|e| format!("line {}: {e}: {line:.80}", i + 1))?;
        let kept_bucket =
            sample.name.strip_suffix("_bucket").is_none_or(|family| QUANTILE_HISTOGRAMS.contains(&family));
        if kept_bucket && !sample.name.ends_with("_created") {
            out.push(sample);
        }
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end =
        line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("a label without a value")?;
            let label = rest[..eq].trim();
            if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err("a bad label name");
            }
            rest = rest[eq + 1..].trim_start().strip_prefix('"').ok_or("a label value without quotes")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("an unterminated label value"),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        _ => return Err("a bad escape in a label value"),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            labels.insert(label.to_owned(), value);
            rest = rest[end + 1..].trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next().ok_or("no value")? {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| "a value that is not a number")?,
    };
    // An optional timestamp, then nothing (OpenMetrics exemplars are not sent here).
    if fields.next().is_some_and(|t| t.parse::<f64>().is_err()) || fields.next().is_some() {
        return Err("text after the value");
    }
    Ok(Sample { name: name.to_owned(), labels, value })
}

/// GET `http://{addr}/metrics` within `timeout`: its samples, or why not.
pub(crate) async fn scrape(
    client: &reqwest::Client,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Vec<Sample>, String> {
    let fetch = async {
        let mut r = client.get(format!("http://{addr}/metrics")).send().await.map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("status {}", r.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = r.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return Err(format!("more than {MAX_BODY} bytes"));
            }
        }
        let text = String::from_utf8(body).map_err(|_| "not UTF-8".to_owned())?;
        parse(&text).map(fold_buckets)
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

/// Scrape every one of `targets` (node name, address) at once, recording each
/// into `recorder` as soon as it answers or fails (`scrape_up` 1 or 0, and
/// its samples), so the slowest never delays the others. Returns the failures.
pub(crate) async fn scrape_all(
    recorder: &Recorder,
    client: &reqwest::Client,
    targets: Vec<(String, SocketAddr)>,
    timeout: Duration,
) -> Vec<(String, String)> {
    let mut pending: FuturesUnordered<_> = targets
        .into_iter()
        .map(|(name, addr)| async move { (name, scrape(client, addr, timeout).await) })
        .collect();
    let mut failures = Vec::new();
    while let Some((name, result)) = pending.next().await {
        let up = |v: f64| Sample { name: "scrape_up".into(), labels: BTreeMap::new(), value: v };
        match result {
            Ok(samples) => {
                recorder.record(&name, samples.into_iter().chain([up(1.0)]));
            }
            Err(e) => {
                tracing::debug!(node = name, error = e, "scrape failed");
                recorder.record(&name, [up(0.0)]);
                failures.push((name, e));
            }
        }
    }
    failures
}

/// One process as /proc/PID/stat shows it.
#[derive(Debug, Clone, Copy)]
struct Proc {
    /// Its parent.
    ppid: u32,
    /// User and system CPU time, in clock ticks.
    ticks: u64,
    /// Resident pages.
    rss_pages: u64,
}

/// Every process of the machine, by pid (one pass over /proc per round).
fn proc_table() -> HashMap<u32, Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return HashMap::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command may hold spaces and parentheses: the fields start after the last ')'.
            let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
            let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
            Some((pid, Proc { ppid: num(1)? as u32, ticks: num(11)? + num(12)?, rss_pages: num(21)? }))
        })
        .collect()
}

/// `root` and every process descending from it.
fn tree(table: &HashMap<u32, Proc>, root: u32) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(table.iter().filter(|(_, p)| p.ppid == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    out.retain(|pid| table.contains_key(pid));
    out
}

/// The host metrics of the process tree at `root`: CPU seconds, resident
/// bytes, open files, processes.
fn host_samples(table: &HashMap<u32, Proc>, root: u32, tick_hz: f64, page: f64) -> Vec<Sample> {
    let pids = tree(table, root);
    let ticks: u64 = pids.iter().map(|p| table[p].ticks).sum();
    let rss: u64 = pids.iter().map(|p| table[p].rss_pages).sum();
    let fds: usize =
        pids.iter().filter_map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok()).map(|d| d.count()).sum();
    let s = |name: &str, value: f64| Sample { name: name.into(), labels: BTreeMap::new(), value };
    vec![
        s("host_cpu_seconds_total", ticks as f64 / tick_hz),
        s("host_memory_rss_bytes", rss as f64 * page),
        s("host_open_fds", fds as f64),
        s("host_processes", pids.len() as f64),
    ]
}

/// Used and free bytes of the filesystem holding `path` (free: what an
/// unprivileged user may still write).
pub(crate) fn disk_usage(path: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let unit = st.fragment_size() as u64;
    let used = (st.blocks() as u64).saturating_sub(st.blocks_free() as u64) * unit;
    Some((used, st.blocks_available() as u64 * unit))
}

/// One round: every node's status (published at once, so the page sees a
/// node's health without waiting for the scrapes; published once, so a stale
/// one never follows a newer one an action published), then the host
/// metrics, the disk, and every node's `/metrics`.
pub(crate) async fn round(shared: &Shared, client: &reqwest::Client) {
    let rec = &shared.dashboard;
    let nodes = status::collect(shared).await;
    rec.publish(crate::dashboard::state(shared, &nodes));

    let table = tokio::task::spawn_blocking(proc_table).await.unwrap_or_default();
    let tick_hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as f64;
    for n in &nodes {
        let restarts =
            Sample { name: "node_restarts_total".into(), labels: BTreeMap::new(), value: n.restarts.into() };
        match n.pid.filter(|_| n.running) {
            Some(pid) => {
                rec.record(&n.name, host_samples(&table, pid, tick_hz, page).into_iter().chain([restarts]))
            }
            None => rec.record(&n.name, [restarts]),
        };
    }
    if let Some((used, free)) = disk_usage(&shared.opts.run_dir) {
        let s = |name: &str, value: u64| Sample {
            name: name.into(),
            labels: BTreeMap::new(),
            value: value as f64,
        };
        rec.record("host", [s("host_disk_used_bytes", used), s("host_disk_free_bytes", free)]);
        shared.metrics.set_disk_free(free);
        let threshold = rec.opts.disk_free_warning_bytes;
        if rec.disk_low_changed(free < threshold) && free < threshold {
            shared.cluster.record(Event::node(
                "disk-low",
                "host",
                format!(
                    "{} MiB free on the run directory's filesystem (warning below {} MiB)",
                    free >> 20,
                    threshold >> 20
                ),
            ));
        }
    }

    let targets = targets(shared, &nodes);
    let scraped_from = now_ms();
    scrape_all(rec, client, targets, rec.opts.timeout).await;
    rec.record(SYSTEM, tier_p99(shared, scraped_from));
    count_active(shared).await;
    follow_alerts(shared);
    if let Err(e) = crate::prometheus::refresh_targets(shared) {
        tracing::warn!(error = %e, "could not write Prometheus' targets");
    }
    rec.prune(now_ms());
}

/// Evaluate the alert rules on the history now; what starts or stops firing
/// goes to the event log (`alert-firing`, `alert-resolved`).
fn follow_alerts(shared: &Shared) {
    let rec = &shared.dashboard;
    let now = now_ms();
    let interval = rec.opts.interval.as_millis() as i64;
    let series = rec.query(&crate::alerts::NAMES, None, now - crate::alerts::LOOKBACK_MS - interval);
    let roles = shared.topology().nodes().iter().map(|n| (n.name.clone(), n.role.key().to_owned())).collect();
    let limits = crate::alerts::Limits::new(&rec.opts);
    let stale = 2 * interval + rec.opts.timeout.as_millis() as i64;
    let now_firing = crate::alerts::evaluate(&series, &roles, now, stale, &limits);
    let changes = crate::alerts::follow(&mut shared.alerts.lock().expect("alerts poisoned"), now_firing);
    for (kind, alert) in changes {
        shared.cluster.record(Event::node(
            kind,
            &alert.subject,
            format!("{}: {}", alert.rule, alert.summary),
        ));
    }
}

/// The histogram each tier's p99 is taken from: what a load balancer measured
/// of its backends, the requests every other node served.
fn p99_family(role: Role) -> &'static str {
    if role == Role::LoadBalancer { QUANTILE_HISTOGRAMS[1] } else { QUANTILE_HISTOGRAMS[0] }
}

/// Each tier's p99 over the last interval (`tier_request_duration_p99_seconds
/// {role}`): the increase of every bucket between each of its nodes' last two
/// scrapes (those scraped since `scraped_from`), summed over the tier, then
/// [`quantile`]. No sample for a tier that served nothing in the interval.
pub(crate) fn tier_p99(shared: &Shared, scraped_from: i64) -> Vec<Sample> {
    let rec = &shared.dashboard;
    let since = scraped_from - 3 * rec.opts.interval.as_millis() as i64;
    // Nodes scraped before this round: a bucket series new in this round is
    // one whose labels (a route) were first used since, so it rose from zero.
    let known: std::collections::HashSet<String> = rec
        .query(&["scrape_up"], None, since)
        .into_iter()
        .filter(|s| s.points.len() >= 2)
        .map(|s| s.node)
        .collect();
    let mut by_role: BTreeMap<&'static str, BTreeMap<String, f64>> = BTreeMap::new();
    for family in QUANTILE_HISTOGRAMS {
        let name = format!("{family}_bucket");
        let topology = shared.topology();
        for series in rec.query(&[&name], None, since) {
            let Some(node) = topology.node(&series.node) else { continue };
            let (v0, (t1, v1)) = match series.points.as_slice() {
                [.., (_, v0), last] => (*v0, *last),
                [only] if known.contains(&series.node) => (0.0, *only),
                _ => continue,
            };
            let Some(le) = series.labels.get("le") else { continue };
            if p99_family(node.role) != family || t1 < scraped_from {
                continue;
            }
            // A counter that went down was restarted: its value is the increase.
            let increase = if v1 >= v0 { v1 - v0 } else { v1 };
            *by_role.entry(node.role.key()).or_default().entry(le.clone()).or_default() += increase;
        }
    }
    by_role
        .into_iter()
        .filter_map(|(role, buckets)| {
            let buckets: Vec<(f64, f64)> =
                buckets.iter().filter_map(|(le, n)| Some((le.parse::<f64>().ok()?, *n))).collect();
            Some(Sample {
                name: "tier_request_duration_p99_seconds".into(),
                labels: BTreeMap::from([("role".to_owned(), role.to_owned())]),
                value: quantile(0.99, &buckets)?,
            })
        })
        .collect()
}

/// Count the daily, weekly and monthly active users over every data center's
/// Redis (`cache::active::count`: their union), into the history
/// (`active_users{window}`) and the dashboard's state.
async fn count_active(shared: &Shared) {
    let rec = &shared.dashboard;
    let mut servers = Vec::new();
    let mut missing = Vec::new();
    {
        let mut handles = rec.redis.lock().await;
        for node in shared.topology().nodes_of(Role::Redis) {
            if !handles.contains_key(&node.name) {
                let url = crate::configs::redis_spec(shared, node).url();
                match cache::Redis::connect(&url, cache::DEFAULT_PREFIX, rec.opts.timeout).await {
                    Ok(redis) => {
                        handles.insert(node.name.clone(), redis);
                    }
                    Err(e) => missing.push((node.name.clone(), e.to_string())),
                }
            }
            if let Some(redis) = handles.get(&node.name) {
                servers.push((node.name.clone(), redis.clone()));
            }
        }
    }
    if servers.is_empty() && missing.is_empty() {
        return;
    }
    let today = cache::active::day_of(std::time::SystemTime::now());
    let tag = std::process::id().to_string();
    let counts = match cache::active::count(&servers, today, &tag).await {
        Ok(mut counts) => {
            let s = |window: &str, value: u64| Sample {
                name: "active_users".into(),
                labels: BTreeMap::from([("window".to_owned(), window.to_owned())]),
                value: value as f64,
            };
            rec.record(SYSTEM, [s("day", counts.day), s("week", counts.week), s("month", counts.month)]);
            shared.metrics.set_active_users(counts.day, counts.week, counts.month);
            counts.missing.extend(missing);
            counts
        }
        Err(e) => {
            tracing::debug!(error = e, "no active users counted");
            missing.push(("every redis".into(), e));
            cache::active::ActiveCounts { missing, ..Default::default() }
        }
    };
    rec.set_active(counts);
}

/// The nodes that serve `/metrics` and run: name and address.
fn targets(shared: &Shared, nodes: &[NodeStatus]) -> Vec<(String, SocketAddr)> {
    nodes
        .iter()
        .filter(|n| n.running)
        .filter_map(|n| shared.topology().node(&n.name).cloned())
        .filter(|n| !matches!(n.role, Role::Postgres | Role::Redis))
        .map(|n| (n.name.clone(), crate::launch::readyz_addr(&n)))
        .collect()
}

/// Scrape every interval (or at once when nudged: the supervisor restarted a
/// node) until shutdown.
pub(crate) async fn watch(shared: Shared) {
    let client = match reqwest::Client::builder().no_proxy().build() {
        Ok(c) => c,
        Err(e) => return tracing::error!(error = %e, "no HTTP client: no metrics history"),
    };
    loop {
        round(&shared, &client).await;
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(shared.dashboard.opts.interval) => {}
            _ = shared.dashboard.nudged() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpListener;

    use super::*;
    use crate::history::HistoryOptions;

    #[test]
    fn parses_the_text_format_and_refuses_garbage() {
        let text = "# HELP millions_http_requests HTTP requests served\n\
                    # TYPE millions_http_requests counter\n\
                    millions_http_requests_total{route=\"/a\",method=\"GET\",status=\"200\"} 12\n\
                    millions_http_request_duration_seconds_bucket{le=\"0.1\"} 3\n\
                    millions_db_query_duration_seconds_bucket{le=\"0.1\"} 3\n\
                    millions_http_request_duration_seconds_sum 0.25\n\
                    odd{a=\"x\\\"y\\\\z\\n\", b = \"\",} +Inf 1700000000000\n\
                    up 1\n# EOF\n";
        let samples = parse(text).unwrap();
        let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "millions_http_requests_total",
                "millions_http_request_duration_seconds_bucket",
                "millions_http_request_duration_seconds_sum",
                "odd",
                "up"
            ]
        );
        assert_eq!(samples[0].labels["status"], "200");
        assert_eq!(samples[0].value, 12.0);
        assert_eq!(samples[3].labels["a"], "x\"y\\z\n");
        assert_eq!(samples[3].labels["b"], "");
        assert!(samples[3].value.is_infinite());
        for garbage in [
            "<html>oops</html>",
            "metric{a=\"1\" 2",
            "metric{a=1} 2",
            "metric twelve",
            "metric 1 2 3",
            "{a=\"1\"} 2",
            "m{a=\"\\q\"} 1",
        ] {
            assert!(parse(garbage).is_err(), "{garbage:?} was accepted");
        }
    }

    #[test]
    fn a_process_tree_is_measured_from_proc() {
        let mut child = std::process::Command::new("sh").args(["-c", "sleep 600 & wait"]).spawn().unwrap();
        let root = child.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let table = loop {
            let table = proc_table();
            if tree(&table, root).len() == 2 {
                break table;
            }
            assert!(std::time::Instant::now() < deadline, "sh never started its sleep");
            std::thread::sleep(Duration::from_millis(20));
        };
        let samples = host_samples(&table, root, 100.0, 4096.0);
        let get = |name: &str| samples.iter().find(|s| s.name == name).unwrap().value;
        assert_eq!(get("host_processes"), 2.0);
        assert!(get("host_memory_rss_bytes") > 0.0);
        assert!(get("host_open_fds") >= 2.0, "stdin, stdout... of both");
        for pid in tree(&table, root) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
        }
        let _ = child.wait();
        let (used, free) = disk_usage(Path::new("/")).unwrap();
        assert!(used > 0 && free > 0);
    }

    /// A listener that accepts and never answers (the connections held open).
    async fn hanging() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = vec![];
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        (addr, task)
    }

    /// A listener that answers every request with `body` (status 200), then closes.
    async fn answering(body: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let response =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_node_that_hangs_or_answers_garbage_blocks_no_other() {
        let (hang, hang_task) = hanging().await;
        let (good, good_task) = answering("millions_up_total{a=\"b\"} 7\n").await;
        let (bad, bad_task) = answering("\u{1}\u{2} not {metrics}!").await;
        let recorder = Arc::new(Recorder::new(HistoryOptions::default()));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let targets =
            vec![("hangs".to_owned(), hang), ("garbage".to_owned(), bad), ("good".to_owned(), good)];

        // With a timeout far longer than this test, the good node's samples and
        // the garbage node's failure are recorded while the hanging one still hangs.
        let round = {
            let (recorder, client, targets) = (recorder.clone(), client.clone(), targets.clone());
            tokio::spawn(
                async move { scrape_all(&recorder, &client, targets, Duration::from_secs(3600)).await },
            )
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let up = recorder.query(&["scrape_up"], None, 0);
            if up.len() == 2 {
                let by_node: Vec<(&str, f64)> = up.iter().map(|s| (s.node.as_str(), s.points[0].1)).collect();
                assert_eq!(by_node, [("garbage", 0.0), ("good", 1.0)]);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the others waited for the hanging node: {up:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let good_series = recorder.query(&["millions_up_total"], None, 0);
        assert_eq!((good_series.len(), good_series[0].points[0].1), (1, 7.0));
        assert!(!round.is_finished(), "the hanging node is still being waited for");
        round.abort();

        // With a short timeout, the round ends and says who failed and why.
        let failures = scrape_all(&recorder, &client, targets, Duration::from_millis(300)).await;
        let mut failed: Vec<&str> = failures.iter().map(|f| f.0.as_str()).collect();
        failed.sort();
        assert_eq!(failed, ["garbage", "hangs"], "{failures:?}");
        assert!(failures.iter().any(|f| f.1.contains("line 1")), "{failures:?}");
        assert!(failures.iter().any(|f| f.1.contains("no answer within")), "{failures:?}");
        for t in [hang_task, good_task, bad_task] {
            t.abort();
        }
    }
}
