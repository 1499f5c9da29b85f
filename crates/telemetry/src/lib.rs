//! What every process shares to be observable: JSON log lines, a Prometheus
//! registry rendered at `/metrics`, and the rule for request ids
//! ([`request_id`]) that ties one request's lines together across tiers.
#![forbid(unsafe_code)]

pub mod batch;
pub mod line;
pub mod output;
pub mod request_id;

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

pub use prometheus_client;

/// How often the log's writer thread writes what is buffered.
pub const LOG_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Keeps the background log writer alive; dropping it writes what is buffered.
#[must_use = "logs are lost when the guard is dropped"]
pub struct LogGuard(Arc<batch::BatchWriter>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// Install the process-wide JSON logger. `RUST_LOG` filters (default `info`).
///
/// Each line is one JSON object with the span fields (for a request: its
/// `request_id`, method and path), so a request can be followed across tiers.
/// Lines are formatted on the thread that logs them and written to stdout in
/// batches by a thread of their own every [`LOG_FLUSH_EVERY`] ([`batch`]), so a
/// request never waits on a `write(2)` or wakes a thread; if stdout cannot keep up,
/// lines are dropped (and counted) rather than slowing requests.
///
/// Lines go to stdout, or, when `MILLIONS_LOG_FILE` is set (the controller sets
/// it for the nodes it starts), to that file rotated by size ([`output`]). A bad
/// rotation setting is an error, before anything is logged.
pub fn init_logging(service: &'static str) -> Result<LogGuard, String> {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let out = match output::LogFile::from_env()? {
        Some(file) => output::set(output::LogOutput::file(&file)),
        None => output::set(output::LogOutput::stdout()),
    };
    let writer = Arc::new(
        batch::BatchWriter::start("log-writer", LOG_FLUSH_EVERY, 16 * 1024 * 1024, out)
            .map_err(|e| format!("starting the log writer thread: {e}"))?,
    );
    line::set_writer(writer.clone());
    let _ = fmt()
        .json()
        .with_writer(batch::BatchMakeWriter(writer.clone()))
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .flatten_event(true)
        .try_init();
    tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
    Ok(LogGuard(writer))
}

/// A process's metrics registry, cheap to clone and shared by its components.
#[derive(Clone, Default)]
pub struct Registry {
    /// The registry; a mutex because components register while the process starts.
    inner: Arc<Mutex<prometheus_client::registry::Registry>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

impl Registry {
    /// Register a metric under `name` (no `millions_` prefix: it is added).
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        let mut r = self.inner.lock().expect("metrics registry poisoned");
        r.register(format!("millions_{name}"), help, metric);
    }

    /// Register a metric whose value is computed when scraped.
    pub fn register_collector(&self, collector: Box<dyn prometheus_client::collector::Collector>) {
        self.inner.lock().expect("metrics registry poisoned").register_collector(collector);
    }

    /// Every registered metric in the Prometheus text format ([`CONTENT_TYPE`]),
    /// which Prometheus scrapes and `promtool check metrics` checks.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.inner.lock().expect("metrics registry poisoned");
        prometheus_client::encoding::text::encode(&mut out, &r).expect("writing to a String cannot fail");
        drop(r);
        classic_text(&out)
    }
}

/// The content type of [`Registry::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text (what `prometheus_client` writes) as the Prometheus text
/// format: a counter family's `HELP` and `TYPE` name its samples' name (with
/// `_total`), and the `UNIT` and `# EOF` lines, which that format lacks, are left
/// out. Samples are the same in both.
fn classic_text(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len() + 256);
    let mut help: Option<&str> = None;
    for line in open_metrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(held) = help.replace(rest) {
                push_line(&mut out, "# HELP ", held);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let counter = rest.strip_suffix(" counter").filter(|name| !name.ends_with("_total"));
            if let Some(held) = help.take() {
                match (counter, held.split_once(' ')) {
                    (Some(name), Some((of, text))) if of == name => {
                        out.push_str(&format!("# HELP {name}_total {text}\n"));
                    }
                    _ => push_line(&mut out, "# HELP ", held),
                }
            }
            match counter {
                Some(name) => out.push_str(&format!("# TYPE {name}_total counter\n")),
                None => push_line(&mut out, "# TYPE ", rest),
            }
            continue;
        }
        if let Some(held) = help.take() {
            push_line(&mut out, "# HELP ", held);
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        push_line(&mut out, "", line);
    }
    if let Some(held) = help {
        push_line(&mut out, "# HELP ", held);
    }
    out
}

fn push_line(out: &mut String, prefix: &str, line: &str) {
    out.push_str(prefix);
    out.push_str(line);
    out.push('\n');
}

/// Labels of one HTTP request for the request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route template (`/api/v1/users/{username}`), never the raw path, so the
    /// label set stays small.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Response status code.
    pub status: u16,
}

/// Request count and latency by route, method and status.
#[derive(Clone)]
pub struct HttpMetrics {
    /// Requests served.
    requests: Family<HttpLabels, Counter>,
    /// Time from request to response head, in seconds.
    latency: Family<HttpLabels, Histogram>,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpMetrics")
    }
}

/// Histogram buckets for latencies, 100 µs to ~13 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 18)
}

impl HttpMetrics {
    /// Create and register the HTTP metrics.
    pub fn new(registry: &Registry) -> HttpMetrics {
        let requests = Family::<HttpLabels, Counter>::default();
        let latency =
            Family::<HttpLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", latency.clone());
        HttpMetrics { requests, latency }
    }

    /// Record one request.
    pub fn observe(&self, labels: &HttpLabels, seconds: f64) {
        self.requests.get_or_create(labels).inc();
        self.latency.get_or_create(labels).observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_metrics_render() {
        let r = Registry::default();
        let m = HttpMetrics::new(&r);
        m.observe(&HttpLabels { route: "/x".into(), method: "GET".into(), status: 200 }, 0.002);
        let text = r.render();
        assert!(
            text.contains(r#"millions_http_requests_total{route="/x",method="GET",status="200"} 1"#),
            "{text}"
        );
        assert!(text.contains("millions_http_request_duration_seconds_bucket"), "{text}");
        // The Prometheus text format: a counter's family is named as its samples.
        assert!(text.contains("# HELP millions_http_requests_total HTTP requests served.\n"), "{text}");
        assert!(text.contains("# TYPE millions_http_requests_total counter\n"), "{text}");
        assert!(text.contains("# TYPE millions_http_request_duration_seconds histogram\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn open_metrics_text_becomes_the_prometheus_text_format() {
        let open = "# HELP a_seconds Time.\n# TYPE a_seconds gauge\n# UNIT a_seconds seconds\na_seconds 1\n\
                    # HELP b Things done.\n# TYPE b counter\nb_total{x=\"1\"} 2\n\
                    # HELP c_total Odd.\n# TYPE c_total counter\nc_total_total 3\n# EOF\n";
        assert_eq!(
            classic_text(open),
            "# HELP a_seconds Time.\n# TYPE a_seconds gauge\na_seconds 1\n\
             # HELP b_total Things done.\n# TYPE b_total counter\nb_total{x=\"1\"} 2\n\
             # HELP c_total Odd.\n# TYPE c_total counter\nc_total_total 3\n"
        );
    }
}
