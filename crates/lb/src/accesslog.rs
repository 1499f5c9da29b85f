//! The access log: one JSON line per request, batched off the proxy's threads.
//!
//! Profiling the saturation benchmark showed a `tracing` event per request costing
//! about 30% of the load balancer's CPU: JSON formatting through the subscriber's
//! field visitors on the proxy threads, then a channel send, a futex wake and a
//! `write` per line on `tracing-appender`'s thread. Here a proxy thread formats the
//! line by hand and hands it to a [`telemetry::batch::BatchWriter`] (a copy into a
//! shared buffer, no syscall), whose thread writes the buffer to stdout every
//! [`FLUSH_EVERY`] in one `write`. The line has the fields the `tracing` event had, in the telemetry
//! crate's JSON shape (`timestamp`, `level`, `message`, then the fields), and it is
//! still switched by the log filter (`RUST_LOG`): target `access`, level INFO.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use telemetry::line::{self, json_str};

/// How often the buffer is written out.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Above this many buffered bytes, lines are dropped (and counted) rather than let
/// a stuck stdout grow the buffer without bound.
const MAX_BUFFERED: usize = 8 * 1024 * 1024;

/// One request's access-log fields.
#[derive(Debug)]
pub struct Entry<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The client's IP address.
    pub client: Option<std::net::IpAddr>,
    /// The method.
    pub method: &'a str,
    /// The path.
    pub path: &'a str,
    /// The status sent to the client (0: none).
    pub status: u16,
    /// The last backend used.
    pub backend: Option<std::net::SocketAddr>,
    /// Attempts made.
    pub attempts: usize,
    /// Why the load balancer answered itself, or "".
    pub rejected: &'a str,
    /// The error, if any.
    pub error: Option<&'a pingora_error::Error>,
    /// From the request's header to the end, in milliseconds.
    pub duration_ms: f64,
}

/// The access log; cheap to share, written by a thread of its own until stopped.
#[derive(Debug)]
pub struct AccessLog {
    /// Buffers the lines and writes them out.
    writer: telemetry::batch::BatchWriter,
}

thread_local! {
    /// Each proxy thread formats its lines here, then copies them in one piece.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Whether the log filter lets access lines through (`RUST_LOG`; off without a
/// subscriber, as in tests).
pub fn enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

impl AccessLog {
    /// Start the writer thread, writing where the process's log goes (stdout,
    /// or its rotated log file: [`telemetry::output`]).
    pub fn start() -> std::io::Result<AccessLog> {
        AccessLog::start_to(telemetry::output::get())
    }

    /// Start the writer thread, writing to `out`.
    pub fn start_to(out: impl std::io::Write + Send + 'static) -> std::io::Result<AccessLog> {
        let writer = telemetry::batch::BatchWriter::start("lb-access-log", FLUSH_EVERY, MAX_BUFFERED, out)?;
        Ok(AccessLog { writer })
    }

    /// Log one request (the caller checked [`enabled`]).
    pub fn log(&self, e: &Entry<'_>) {
        LINE.with_borrow_mut(|line| {
            line.clear();
            format_line(line, e, SystemTime::now());
            self.writer.push(line.as_bytes());
        });
    }

    /// Write what is buffered and stop the writer.
    pub fn stop(&self) {
        self.writer.stop();
    }
}

/// Append `e` as one JSON line (newline included) to `out`.
fn format_line(out: &mut String, e: &Entry<'_>, now: SystemTime) {
    line::start(out, now, "INFO", "access");
    out.push_str(",\"request_id\":");
    json_str(out, e.request_id);
    out.push_str(",\"client\":\"");
    if let Some(ip) = e.client {
        let _ = write!(out, "{ip}");
    }
    out.push_str("\",\"method\":");
    json_str(out, e.method);
    out.push_str(",\"path\":");
    json_str(out, e.path);
    let _ = write!(out, ",\"status\":{},\"backend\":\"", e.status);
    if let Some(b) = e.backend {
        let _ = write!(out, "{b}");
    }
    let _ = write!(out, "\",\"attempts\":{},\"rejected\":", e.attempts);
    json_str(out, e.rejected);
    line::finish_access(out, e.error.map(|e| e as &dyn std::fmt::Display), e.duration_ms);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let err = pingora_error::Error::explain(pingora_error::ErrorType::ConnectRefused, "\"broke\"\n");
        let e = Entry {
            request_id: "abc",
            client: Some("127.0.0.1".parse().unwrap()),
            method: "GET",
            path: "/a\\b",
            status: 502,
            backend: Some("10.0.0.1:8080".parse().unwrap()),
            attempts: 2,
            rejected: "",
            error: Some(&err),
            duration_ms: 1.5,
        };
        let mut line = String::new();
        format_line(&mut line, &e, UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456));
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "access");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["client"], "127.0.0.1");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/a\\b");
        assert_eq!(v["status"], 502);
        assert_eq!(v["backend"], "10.0.0.1:8080");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["rejected"], "");
        assert_eq!(v["error"], err.to_string());
        assert_eq!(v["duration_ms"], 1.5);
    }

    /// An output the test can read.
    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_reach_the_output_by_the_time_the_writer_stops() {
        let sink = Sink::default();
        let log = AccessLog::start_to(sink.clone()).unwrap();
        let e = Entry {
            request_id: "r",
            client: None,
            method: "GET",
            path: "/",
            status: 200,
            backend: None,
            attempts: 1,
            rejected: "",
            error: None,
            duration_ms: 0.0,
        };
        log.log(&e);
        log.stop();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("\"request_id\":\"r\""), "{text}");
    }
}
