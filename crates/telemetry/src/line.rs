//! Log lines formatted by hand, for the lines written once per request.
//!
//! A `tracing` event goes through the subscriber's JSON formatter: field
//! visitors, a `serde_json` map, and, inside a span, a re-parse of the span's
//! fields. For the one line every request writes (the load balancer's access
//! line, a web server's request line) that was the largest single cost on the
//! request path, so those lines are formatted here into a per-thread buffer and
//! handed to the process's [`crate::batch::BatchWriter`] in one copy. They have
//! the shape of the `tracing` lines (`timestamp`, `level`, `message`, then the
//! fields, flat), so a reader of the log sees one format.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::batch::BatchWriter;

/// The process's log writer, once [`crate::init_logging`] ran; lines written
/// before (or in tests that never set up logging) go nowhere.
static WRITER: OnceLock<Arc<BatchWriter>> = OnceLock::new();

thread_local! {
    /// Each thread formats its lines here, then copies them in one piece.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    /// The timestamp's date and time to the second, and the second it is for.
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// Where [`write`] sends its lines (the first call wins).
pub(crate) fn set_writer(writer: Arc<BatchWriter>) {
    let _ = WRITER.set(writer);
}

/// Format one line with `f` (which appends the JSON object and its newline to
/// the empty buffer it is given) and write it to the process log. Does nothing,
/// `f` included, when logging is not set up.
pub fn write(f: impl FnOnce(&mut String)) {
    let Some(writer) = WRITER.get() else { return };
    LINE.with_borrow_mut(|line| {
        line.clear();
        f(line);
        writer.push(line.as_bytes());
    });
}

/// Append `{"timestamp":"…","level":"LEVEL","message":` and `message` as a JSON
/// string: the start of a line, to be followed by `,"field":value` pairs and
/// `}\n`.
pub fn start(out: &mut String, now: SystemTime, level: &str, message: &str) {
    out.push_str("{\"timestamp\":\"");
    timestamp(out, now);
    out.push_str("\",\"level\":\"");
    out.push_str(level);
    out.push_str("\",\"message\":");
    json_str(out, message);
}

/// Append `,"error":` (the error, or "" without one), `,"duration_ms":N` and the
/// closing `}` and newline: the end every access line shares.
pub fn finish_access(out: &mut String, error: Option<&dyn std::fmt::Display>, duration_ms: f64) {
    out.push_str(",\"error\":");
    match error {
        Some(err) => json_str(out, &err.to_string()),
        None => out.push_str("\"\""),
    }
    out.push_str(",\"duration_ms\":");
    out.push_str(&duration_ms.to_string());
    out.push_str("}\n");
}

/// Append `now` as RFC 3339 UTC with microseconds (`2023-11-14T22:13:20.123456Z`),
/// the format of the `tracing` lines.
pub fn timestamp(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != since.as_secs() {
            *second = since.as_secs();
            text.clear();
            civil_time(text, since.as_secs());
        }
        out.push_str(text);
    });
    let _ = write!(out, ".{:06}Z", since.subsec_micros());
}

/// Append `s` as a JSON string.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    // Nearly always nothing to escape: one copy.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time in seconds. Called once a second
/// per thread (the result is cached).
fn civil_time(out: &mut String, secs: u64) {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let _ = write!(out, "{}", humantime::format_rfc3339_seconds(t));
    // The caller appends the fraction and the zone.
    if out.ends_with('Z') {
        out.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_line_start_is_the_tracing_shape() {
        let mut line = String::new();
        start(&mut line, UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456), "INFO", "say \"hi\"");
        line.push_str(",\"n\":1}\n");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "say \"hi\"");
        assert_eq!(v["n"], 1);
    }

    #[test]
    fn strings_are_escaped() {
        for s in ["plain", "q\"uote", "back\\slash", "new\nline\r\t", "bell\u{7}", "ünï"] {
            let mut out = String::new();
            json_str(&mut out, s);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s, "{out}");
        }
    }

    #[test]
    fn civil_dates() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (4_107_542_399, "2100-02-28T23:59:59"),
        ] {
            let mut s = String::new();
            civil_time(&mut s, secs);
            assert_eq!(s, want);
        }
    }
}
