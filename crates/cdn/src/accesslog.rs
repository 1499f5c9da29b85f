//! The edge's access log: one JSON line per request, in the shape of the process's
//! other log lines (`timestamp`, `level`, `message`, then the fields), formatted by
//! hand and handed to the process log's batch writer ([`telemetry::line`]), as the
//! load balancer's is. Switched by the log filter: target `access`, level INFO.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::SystemTime;

use telemetry::line::{self, json_str};

use crate::metrics::Outcome;

/// One request's access-log fields.
#[derive(Debug)]
pub struct Entry<'a> {
    /// The client's IP address.
    pub client: Option<IpAddr>,
    /// The method.
    pub method: &'a str,
    /// The path with its query.
    pub path: &'a str,
    /// The status sent to the client (0: none).
    pub status: u16,
    /// What the cache did (`None`: refused before the cache).
    pub cache: Option<Outcome>,
    /// The response's `Content-Type`, or "".
    pub content_type: &'a str,
    /// Bytes sent to the client (head and body).
    pub bytes_sent: usize,
    /// The origin the request's fetch went to last (`None`: answered by the
    /// cache, or refused, without asking one).
    pub origin: Option<std::net::SocketAddr>,
    /// From the request's start to the end, in milliseconds.
    pub duration_ms: f64,
    /// The error, if any.
    pub error: Option<&'a pingora_error::Error>,
}

/// Whether the log filter lets access lines through (`RUST_LOG`; off without a
/// subscriber, as in tests).
pub fn enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// Write `e` to the process log (the caller checked [`enabled`]).
pub fn log(e: &Entry<'_>) {
    line::write(|out| format_line(out, e, SystemTime::now()));
}

/// Append `e` as one JSON line (newline included) to `out`.
pub fn format_line(out: &mut String, e: &Entry<'_>, now: SystemTime) {
    line::start(out, now, "INFO", "access");
    out.push_str(",\"client\":\"");
    if let Some(ip) = e.client {
        let _ = write!(out, "{ip}");
    }
    out.push_str("\",\"method\":");
    json_str(out, e.method);
    out.push_str(",\"path\":");
    json_str(out, e.path);
    let _ = write!(out, ",\"status\":{},\"cache\":\"", e.status);
    if let Some(c) = e.cache {
        out.push_str(c.header());
    }
    out.push_str("\",\"content_type\":");
    json_str(out, e.content_type);
    let _ = write!(out, ",\"bytes_sent\":{},\"origin\":\"", e.bytes_sent);
    if let Some(origin) = e.origin {
        let _ = write!(out, "{origin}");
    }
    out.push('"');
    line::finish_access(out, e.error.map(|e| e as &dyn std::fmt::Display), e.duration_ms);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let err = pingora_error::Error::explain(pingora_error::ErrorType::ConnectRefused, "\"down\"\n");
        let e = Entry {
            client: Some("127.0.0.1".parse().unwrap()),
            method: "GET",
            path: "/media/a\"b.jpg?x=1",
            status: 200,
            cache: Some(Outcome::stale),
            content_type: "image/jpeg",
            bytes_sent: 1234,
            origin: Some("10.0.0.7:8080".parse().unwrap()),
            duration_ms: 0.25,
            error: Some(&err),
        };
        let mut out = String::new();
        format_line(&mut out, &e, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert!(out.ends_with('\n') && out.matches('\n').count() == 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(v["message"], "access");
        assert_eq!(v["path"], "/media/a\"b.jpg?x=1");
        assert_eq!(v["cache"], "STALE");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes_sent"], 1234);
        assert_eq!(v["client"], "127.0.0.1");
        assert_eq!(v["origin"], "10.0.0.7:8080");
        assert!(v["error"].as_str().unwrap().contains("\"down\""));
        // Refused before the cache, no client known, no error.
        let e = Entry { client: None, cache: None, error: None, origin: None, ..e };
        let mut out = String::new();
        format_line(&mut out, &e, UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["cache"].as_str(), v["client"].as_str(), v["error"].as_str(), v["origin"].as_str()),
            (Some(""), Some(""), Some(""), Some(""))
        );
    }
}
