//! HTTP/1 heads, byte level: where a head ends (no bare LF), what its `Connection`
//! tokens say, which header lines the backend's copy leaves out, numbers written
//! into a head.

use crate::rules::{self, REQUEST_ID};

/// Whether a header name is one the load balancer sets itself or removes.
pub(super) fn dropped_request_header(name: &str, connection_named: &[&str]) -> bool {
    rules::is_hop_by_hop(name)
        || name.eq_ignore_ascii_case("x-forwarded-proto")
        || name.eq_ignore_ascii_case("x-forwarded-for")
        || name.eq_ignore_ascii_case(REQUEST_ID)
        || connection_named.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// The tokens of every `Connection` header: whether `close` and `keep-alive`
/// are among them, and the other tokens (header names to remove).
pub(super) fn connection_tokens<'a>(headers: &[httparse::Header<'a>]) -> (bool, bool, Vec<&'a str>) {
    let (mut close, mut keep_alive, mut named) = (false, false, Vec::new());
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case("connection")) {
        for token in std::str::from_utf8(h.value).unwrap_or("").split(',').map(str::trim) {
            if token.eq_ignore_ascii_case("close") {
                close = true;
            } else if token.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            } else if !token.is_empty()
                && !token.eq_ignore_ascii_case("content-length")
                && !token.eq_ignore_ascii_case("transfer-encoding")
            {
                named.push(token);
            }
        }
    }
    (close, keep_alive, named)
}

/// Whether `head` has, from `from` on, an LF that does not end a CRLF.
pub(super) fn has_bare_lf(head: &[u8], from: usize) -> bool {
    (from..head.len()).any(|i| head[i] == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

pub(super) fn push_display(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = write!(out, "{v}");
}

pub(super) fn push_hex(out: &mut Vec<u8>, n: usize) {
    use std::io::Write as _;
    let _ = write!(out, "{n:x}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_lf_is_found_wherever_it_is() {
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0));
        assert!(has_bare_lf(b"\nGET / HTTP/1.1\r\n", 0));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nHost: x\n", 0));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nHost: x\n\r\n", 0));
        // Only from `from` on, but a CR just before `from` still counts.
        assert!(!has_bare_lf(b"A\nB\r\n", 2));
        assert!(!has_bare_lf(b"A\r\n", 2));
    }

    #[test]
    fn connection_tokens_name_headers_to_drop() {
        let h = [
            httparse::Header { name: "Connection", value: b"close, X-Secret" },
            httparse::Header { name: "connection", value: b"keep-alive" },
        ];
        let (close, keep, named) = connection_tokens(&h);
        assert!(close && keep);
        assert_eq!(named, ["X-Secret"]);
        assert!(dropped_request_header("x-secret", &named));
        assert!(dropped_request_header("Upgrade", &named));
        assert!(!dropped_request_header("host", &named));
    }
}
