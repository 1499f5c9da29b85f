//! The metrics history the dashboard draws: every scraped series of every node,
//! in memory, each in a ring of its last points. Memory is bounded twice: a
//! series keeps at most [`HistoryOptions::points`] points, and at most
//! [`HistoryOptions::max_series`] series are kept (a new series beyond the cap
//! is dropped and counted); a series that saw no point for the whole retention
//! is forgotten.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{Notify, watch};

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// How the controller scrapes and keeps history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryOptions {
    /// Time between two scrapes of every node.
    pub interval: Duration,
    /// How long one node's scrape may take before it counts as failed.
    pub timeout: Duration,
    /// How far back the history reaches.
    pub retention: Duration,
    /// The most series kept at once, over every node.
    pub max_series: usize,
    /// Below this many free bytes on the run directory's filesystem, a
    /// `disk-low` event is recorded (once per crossing).
    pub disk_free_warning_bytes: u64,
}

impl Default for HistoryOptions {
    fn default() -> HistoryOptions {
        HistoryOptions {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            retention: Duration::from_secs(2 * 3600),
            max_series: 4000,
            disk_free_warning_bytes: 1 << 30,
        }
    }
}

impl HistoryOptions {
    /// Points per series: the retention at the interval.
    pub fn points(&self) -> usize {
        (self.retention.as_millis() / self.interval.as_millis().max(1)).max(1) as usize
    }

    /// Refuses settings that make no sense (before anything is bound).
    pub fn check(&self) -> Result<(), String> {
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Err("the scrape interval and timeout must be above zero".into());
        }
        if self.timeout > self.interval {
            return Err(format!(
                "the scrape timeout ({:?}) must not exceed its interval ({:?})",
                self.timeout, self.interval
            ));
        }
        if self.retention < self.interval || self.max_series == 0 {
            return Err("the history must hold at least one point of one series".into());
        }
        Ok(())
    }
}

/// The series of the whole system, derived by the controller (each tier's p99,
/// the active users), kept under this name in place of a node's.
pub(crate) const SYSTEM: &str = "system";

/// The histograms whose buckets are kept (summed over their other labels, per
/// node), so the controller can derive each tier's p99; other buckets are left
/// out (they would multiply the series kept).
pub(crate) const QUANTILE_HISTOGRAMS: [&str; 2] =
    ["millions_http_request_duration_seconds", "millions_lb_backend_latency_seconds"];

/// The `q` quantile (0..=1) of a histogram given as cumulative bucket counts
/// `(upper bound, count)`, as Prometheus' `histogram_quantile` computes it: the
/// bucket holding the rank, linearly interpolated within it (from 0 for the
/// first); a rank in the `+Inf` bucket is the largest finite bound. `None`
/// without observations.
pub(crate) fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let mut sorted: Vec<(f64, f64)> = buckets.iter().copied().filter(|(le, _)| !le.is_nan()).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = sorted.last().filter(|(le, _)| le.is_infinite())?.1;
    if total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (i, &(le, count)) in sorted.iter().enumerate() {
        if count >= rank {
            if le.is_infinite() {
                return Some(if i == 0 { 0.0 } else { sorted[i - 1].0 });
            }
            if count == below {
                return Some(le);
            }
            return Some(lower + (le - lower) * (rank - below) / (count - below));
        }
        (lower, below) = (le, count);
    }
    None
}

/// Routes left out of the folded buckets: probes (every second from each load
/// balancer, every interval from the controller) are not what users wait for.
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// `samples` with the buckets of [`QUANTILE_HISTOGRAMS`] summed by `le` over
/// their other labels (probes' left out), and every other histogram's buckets
/// left out.
pub(crate) fn fold_buckets(samples: Vec<Sample>) -> Vec<Sample> {
    let mut folded: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        let Some(family) = s.name.strip_suffix("_bucket") else {
            out.push(s);
            continue;
        };
        let probe = s.labels.get("route").is_some_and(|r| PROBES.contains(&r.as_str()));
        if let (true, false, Some(le)) = (QUANTILE_HISTOGRAMS.contains(&family), probe, s.labels.get("le")) {
            *folded.entry((s.name.clone(), le.clone())).or_default() += s.value;
        }
    }
    out.extend(folded.into_iter().map(|((name, le), value)| Sample {
        name,
        labels: BTreeMap::from([("le".to_owned(), le)]),
        value,
    }));
    out
}

/// One sample of a scrape: a metric's name, its labels, its value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// The metric's name (`millions_http_requests_total`).
    pub(crate) name: String,
    /// Its labels, sorted by name.
    pub(crate) labels: BTreeMap<String, String>,
    /// Its value.
    pub(crate) value: f64,
}

/// A series' identity: whose, which metric, which labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    /// The node it was scraped from (or `host` for the run directory's disk).
    node: String,
    /// The metric's name.
    name: String,
    /// Its labels, sorted.
    labels: BTreeMap<String, String>,
}

/// One series' last points, oldest first: (unix ms, value).
#[derive(Debug)]
struct Ring {
    /// The points, at most the history's points per series.
    points: VecDeque<(i64, f64)>,
}

/// A series as the API answers it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SeriesOut {
    /// The node it was scraped from.
    pub(crate) node: String,
    /// The metric's name.
    pub(crate) name: String,
    /// Its labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// (unix ms, value), oldest first.
    pub(crate) points: Vec<(i64, f64)>,
}

/// Every series' ring.
#[derive(Debug)]
pub(crate) struct History {
    /// Points per series.
    points: usize,
    /// The most series kept.
    max_series: usize,
    /// How long a series without a new point is kept, in ms.
    retention_ms: i64,
    /// The series.
    series: HashMap<Key, Ring>,
    /// Series not kept because the cap was reached (since the start).
    dropped: u64,
    /// The newest time [`Recorder::record`] stamped (unix ms).
    last_stamp: i64,
}

impl History {
    /// An empty history of `opts`' size.
    pub(crate) fn new(opts: &HistoryOptions) -> History {
        History {
            points: opts.points(),
            max_series: opts.max_series,
            retention_ms: opts.retention.as_millis() as i64,
            series: HashMap::new(),
            dropped: 0,
            last_stamp: 0,
        }
    }

    /// Add `samples` of `node`, taken at `at` (unix ms).
    pub(crate) fn record(&mut self, node: &str, at: i64, samples: impl IntoIterator<Item = Sample>) {
        for s in samples {
            let key = Key { node: node.to_owned(), name: s.name, labels: s.labels };
            let full = self.series.len() >= self.max_series;
            let ring = match self.series.get_mut(&key) {
                Some(ring) => ring,
                None if full => {
                    self.dropped += 1;
                    continue;
                }
                None => self
                    .series
                    .entry(key)
                    .or_insert_with(|| Ring { points: VecDeque::with_capacity(self.points) }),
            };
            if ring.points.len() == self.points {
                ring.points.pop_front();
            }
            ring.points.push_back((at, s.value));
        }
    }

    /// Forget the series that saw no point within the retention before `now`.
    pub(crate) fn prune(&mut self, now: i64) {
        let oldest = now - self.retention_ms;
        self.series.retain(|_, ring| ring.points.back().is_some_and(|p| p.0 >= oldest));
    }

    /// The series named one of `names` (of `node` only, if given), with their
    /// points after `since` (unix ms).
    pub(crate) fn query(&self, names: &[&str], node: Option<&str>, since: i64) -> Vec<SeriesOut> {
        let mut out: Vec<SeriesOut> = self
            .series
            .iter()
            .filter(|(k, _)| names.contains(&k.name.as_str()) && node.is_none_or(|n| n == k.node))
            .map(|(k, ring)| SeriesOut {
                node: k.node.clone(),
                name: k.name.clone(),
                labels: k.labels.clone(),
                points: ring.points.iter().filter(|p| p.0 > since).copied().collect(),
            })
            .collect();
        out.sort_by(|a, b| (&a.name, &a.node, &a.labels).cmp(&(&b.name, &b.node, &b.labels)));
        out
    }

    /// The metric names known, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.series.keys().map(|k| k.name.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Series kept now.
    pub(crate) fn len(&self) -> usize {
        self.series.len()
    }

    /// Series not kept because the cap was reached.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Points kept now, over every series.
    pub(crate) fn total_points(&self) -> usize {
        self.series.values().map(|r| r.points.len()).sum()
    }

    /// Points per series.
    pub(crate) fn points_per_series(&self) -> usize {
        self.points
    }
}

/// The history as the running controller shares it: the rings behind a lock,
/// the latest dashboard state (what the page's live stream sends), and the
/// nudge that makes the scraper look again at once.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// The settings it was made with.
    pub(crate) opts: HistoryOptions,
    /// The rings.
    history: Mutex<History>,
    /// The latest dashboard state, sent to every page's stream when it changes.
    state: watch::Sender<serde_json::Value>,
    /// Wakes the scraper before its interval (a node was killed or started).
    nudge: Notify,
    /// Whether free disk was below the threshold at the last look.
    disk_low: AtomicBool,
    /// Every data center's Redis, by node name, connected on first use: where
    /// the active users are counted.
    pub(crate) redis: tokio::sync::Mutex<HashMap<String, cache::Redis>>,
    /// The active users at the last count (with whose Redis answered).
    active: Mutex<Option<cache::active::ActiveCounts>>,
}

impl Recorder {
    /// An empty history of `opts`' size.
    pub(crate) fn new(opts: HistoryOptions) -> Recorder {
        Recorder {
            history: Mutex::new(History::new(&opts)),
            opts,
            state: watch::Sender::new(serde_json::Value::Null),
            nudge: Notify::new(),
            disk_low: AtomicBool::new(false),
            redis: tokio::sync::Mutex::new(HashMap::new()),
            active: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().expect("history lock poisoned")
    }

    /// [`History::record`], stamped now, under the lock, and later than any
    /// earlier stamp: a reader that asks for the points after the newest it has
    /// seen (`since`) misses none recorded after its read.
    pub(crate) fn record(&self, node: &str, samples: impl IntoIterator<Item = Sample>) -> i64 {
        let mut h = self.lock();
        let at = now_ms().max(h.last_stamp + 1);
        h.last_stamp = at;
        h.record(node, at, samples);
        at
    }

    /// [`History::prune`].
    pub(crate) fn prune(&self, now: i64) {
        self.lock().prune(now);
    }

    /// [`History::query`].
    pub(crate) fn query(&self, names: &[&str], node: Option<&str>, since: i64) -> Vec<SeriesOut> {
        self.lock().query(names, node, since)
    }

    /// [`History::names`].
    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().names()
    }

    /// Series kept, series dropped at the cap, points kept, points per series,
    /// the metric names known.
    pub(crate) fn stats(&self) -> serde_json::Value {
        let h = self.lock();
        serde_json::json!({
            "series": h.len(),
            "max_series": h.max_series,
            "dropped_series": h.dropped(),
            "points": h.total_points(),
            "points_per_series": h.points_per_series(),
            "interval_ms": self.opts.interval.as_millis() as u64,
            "names": h.names(),
        })
    }

    /// Send `state` to every page's stream.
    pub(crate) fn publish(&self, state: serde_json::Value) {
        self.state.send_replace(state);
    }

    /// A receiver of every state published.
    pub(crate) fn subscribe(&self) -> watch::Receiver<serde_json::Value> {
        self.state.subscribe()
    }

    /// Make the scraper look again now.
    pub(crate) fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Until [`Recorder::nudge`].
    pub(crate) async fn nudged(&self) {
        self.nudge.notified().await;
    }

    /// The active users at the last count.
    pub(crate) fn active(&self) -> Option<cache::active::ActiveCounts> {
        self.active.lock().expect("active users poisoned").clone()
    }

    /// Keep `counts` as the last count.
    pub(crate) fn set_active(&self, counts: cache::active::ActiveCounts) {
        *self.active.lock().expect("active users poisoned") = Some(counts);
    }

    /// Remember whether free disk is low now; whether that changed.
    pub(crate) fn disk_low_changed(&self, low: bool) -> bool {
        self.disk_low.swap(low, Ordering::SeqCst) != low
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            value,
        }
    }

    #[test]
    fn memory_stays_within_its_bound_over_a_long_run_of_changing_series() {
        let opts = HistoryOptions {
            interval: Duration::from_secs(5),
            retention: Duration::from_secs(600),
            max_series: 500,
            ..HistoryOptions::default()
        };
        let mut h = History::new(&opts);
        assert_eq!(h.points_per_series(), 120);
        // 5000 scrapes (seven hours at 5 s) of 3 nodes, each with 100 steady
        // series and 5 whose labels change every scrape (a request id leaked
        // into a label: the worst case).
        for round in 0..5000i64 {
            let at = round * 5000;
            for node in ["web-1", "web-2", "lb-1"] {
                let steady = (0..100).map(|i| sample("m", &[("i", &i.to_string())], round as f64));
                let churn = (0..5).map(|i| sample("c", &[("id", &format!("{round}-{i}"))], 1.0));
                h.record(node, at, steady.chain(churn));
            }
            h.prune(at);
            assert!(h.len() <= 500, "round {round}: {} series", h.len());
            assert!(h.total_points() <= 500 * 120, "round {round}: {} points", h.total_points());
        }
        // The steady series are all there, with the last 120 points each.
        let m = h.query(&["m"], Some("web-2"), 0);
        assert_eq!(m.len(), 100);
        assert!(m.iter().all(|s| s.points.len() == 120));
        assert_eq!(m[0].points.last(), Some(&(4999 * 5000, 4999.0)));
        assert_eq!(m[0].points.first(), Some(&(4880 * 5000, 4880.0)));
        assert!(h.dropped() > 0, "the churning series hit the cap");
    }

    #[test]
    fn queries_filter_by_name_node_and_time() {
        let mut h = History::new(&HistoryOptions::default());
        h.record("a", 1000, [sample("x", &[], 1.0), sample("y", &[], 2.0)]);
        h.record("b", 2000, [sample("x", &[], 3.0)]);
        h.record("a", 3000, [sample("x", &[], 4.0)]);
        assert_eq!(h.names(), ["x", "y"]);
        let all = h.query(&["x"], None, 0);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].points, [(1000, 1.0), (3000, 4.0)]);
        assert_eq!(h.query(&["x"], Some("a"), 1000)[0].points, [(3000, 4.0)]);
        assert!(h.query(&["z"], None, 0).is_empty());
        // A series silent for the whole retention is forgotten.
        h.prune(3000 + 2 * 3600 * 1000);
        assert_eq!(h.names(), ["x"]);
    }

    #[test]
    fn quantiles_come_from_buckets_as_prometheus_computes_them() {
        let inf = f64::INFINITY;
        // 100 observations: 50 up to 0.1 s, 40 more up to 0.5 s, 9 up to 1 s, 1 above.
        let b = [(0.1, 50.0), (0.5, 90.0), (1.0, 99.0), (inf, 100.0)];
        assert_eq!(quantile(0.5, &b), Some(0.1));
        let p90 = quantile(0.9, &b).unwrap();
        assert!((p90 - 0.5).abs() < 1e-9, "{p90}");
        let p99 = quantile(0.99, &b).unwrap();
        assert!((p99 - 1.0).abs() < 1e-9, "{p99}");
        // Interpolated within the bucket holding the rank.
        let p70 = quantile(0.7, &b).unwrap();
        assert!((p70 - 0.3).abs() < 1e-9, "{p70}");
        // A rank in +Inf: the largest finite bound.
        assert_eq!(quantile(0.999, &b), Some(1.0));
        // Order does not matter; nothing observed, no +Inf, a bad q: none.
        let shuffled = [(inf, 100.0), (1.0, 99.0), (0.1, 50.0), (0.5, 90.0)];
        assert_eq!(quantile(0.99, &shuffled), quantile(0.99, &b));
        assert_eq!(quantile(0.99, &[(0.1, 0.0), (inf, 0.0)]), None);
        assert_eq!(quantile(0.99, &[(0.1, 5.0)]), None);
        assert_eq!(quantile(1.5, &b), None);
    }

    #[test]
    fn buckets_are_folded_by_le_and_other_histograms_buckets_dropped() {
        let http = "millions_http_request_duration_seconds_bucket";
        let samples = vec![
            sample(http, &[("route", "/a"), ("le", "0.1")], 3.0),
            sample(http, &[("route", "/b"), ("le", "0.1")], 4.0),
            sample(http, &[("route", "/a"), ("le", "+Inf")], 5.0),
            sample("millions_db_query_duration_seconds_bucket", &[("le", "0.1")], 9.0),
            sample("millions_http_requests_total", &[("route", "/a")], 5.0),
        ];
        let folded = fold_buckets(samples);
        let names: Vec<(&str, Option<&String>, f64)> =
            folded.iter().map(|s| (s.name.as_str(), s.labels.get("le"), s.value)).collect();
        let (inf, tenth) = ("+Inf".to_owned(), "0.1".to_owned());
        assert_eq!(
            names,
            [("millions_http_requests_total", None, 5.0), (http, Some(&inf), 5.0), (http, Some(&tenth), 7.0)]
        );
    }

    #[test]
    fn nonsense_settings_are_refused() {
        assert!(HistoryOptions::default().check().is_ok());
        let zero = HistoryOptions { interval: Duration::ZERO, ..HistoryOptions::default() };
        assert!(zero.check().is_err());
        let slow = HistoryOptions { timeout: Duration::from_secs(10), ..HistoryOptions::default() };
        assert!(slow.check().unwrap_err().contains("must not exceed"));
        let none = HistoryOptions { max_series: 0, ..HistoryOptions::default() };
        assert!(none.check().is_err());
    }
}
