//! HTTP/1 heads, both ways, at the byte level: a client's request head parsed,
//! checked ([`crate::pipeline::Proxy::check`] and HTTP/1's own rules) and copied
//! for the backend ([`request`]); a backend's answer head found ([`answer_status`])
//! and copied for the client ([`answer`]). Heads are never turned into header maps:
//! lines are copied as they came, minus the hop-by-hop ones (and those the
//! `Connection` header names), plus the forwarding headers.

use std::net::IpAddr;
use std::time::Instant;

use http::Method;
use pingora_error::{Error, ErrorType};

use crate::pipeline::{HeadFacts, Proxy, Refusal};
use crate::rules::{self, Declared, HSTS, REQUEST_ID};

/// Header lines parsed at most (more: 431).
pub(super) const MAX_HEADERS: usize = 128;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (answers only).
    UntilClose,
}

/// A client's request, as far as the load balancer cares.
#[derive(Debug)]
pub(super) struct Head {
    /// The method (the retry rule and `HEAD` answers look at it).
    pub method: Method,
    /// The request target, for the access log.
    pub path: String,
    /// HTTP/1.0 (keep-alive only if asked for, no chunked coding).
    pub http10: bool,
    /// The client wants the connection kept.
    pub keep_alive: bool,
    /// How its body is delimited.
    pub body: Framing,
    /// It waits for `100 Continue` before sending its body.
    pub expect_continue: bool,
    /// The backend's copy of the head, ready to send.
    pub upstream: Vec<u8>,
    /// Over HTTPS: the `Strict-Transport-Security` `max-age` the answer carries.
    pub hsts: Option<u64>,
}

/// Parse and check a request head (`bytes`, complete, read at `started` from
/// `peer`); build the backend's copy. Returns the head and the request's id (the
/// client's if sane, else a new one), or what to answer instead.
pub(super) fn request(
    proxy: &Proxy,
    bytes: &[u8],
    peer: Option<IpAddr>,
    started: Instant,
) -> Result<(Head, String), Refusal> {
    let bad_request = Refusal::new(400, "bad_request");
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::new(431, "header_too_large")),
        _ => return Err(bad_request),
    }
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(bad_request);
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| bad_request)?;
    let declared =
        rules::declared_framing(req.headers.iter().map(|h| (h.name.as_bytes(), h.value.trim_ascii())));
    let facts = HeadFacts { client: peer, method: &method, path, declared, header_bytes: bytes.len() };
    let length = proxy.check(&facts, started)?;
    let body = match (declared, length) {
        (Ok(Declared::Chunked), _) => Framing::Chunked,
        (_, Some(0) | None) => Framing::Empty,
        (_, Some(n)) => Framing::Length(n),
    };
    let http10 = version == 0;
    if http10 && body == Framing::Chunked {
        // HTTP/1.0 has no chunked coding: a sender claiming both is not to be trusted.
        return Err(Refusal::new(400, "smuggling"));
    }
    // HTTP/1.1 requires exactly one Host (RFC 9112 §3.2).
    let hosts = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host")).count();
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(bad_request);
    }
    let (close, keep_alive_token, named) = connection_tokens(req.headers);
    let keep_alive = if http10 { keep_alive_token && !close } else { !close };
    let mut expect_continue = false;
    // The client's ids (`telemetry::request_id::accept` keeps one only if it is
    // the only one, and sane).
    let (mut first_id, mut ids) = (None, 0);
    let mut xff: Option<String> = None;
    let mut upstream = Vec::with_capacity(bytes.len() + 128);
    upstream.extend_from_slice(method.as_str().as_bytes());
    upstream.push(b' ');
    upstream.extend_from_slice(path.as_bytes());
    upstream.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("expect") {
            expect_continue |= h.value.eq_ignore_ascii_case(b"100-continue");
        } else if h.name.eq_ignore_ascii_case(REQUEST_ID) {
            ids += 1;
            first_id.get_or_insert(h.value);
        } else if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            let v = String::from_utf8_lossy(h.value);
            match &mut xff {
                Some(prior) => {
                    prior.push_str(", ");
                    prior.push_str(v.trim());
                }
                None => xff = Some(v.trim().to_owned()),
            }
        }
        if dropped_request_header(h.name, &named) {
            continue;
        }
        upstream.extend_from_slice(h.name.as_bytes());
        upstream.extend_from_slice(b": ");
        upstream.extend_from_slice(h.value);
        upstream.extend_from_slice(b"\r\n");
    }
    let request_id =
        match telemetry::request_id::accept(first_id.into_iter().chain((ids > 1).then_some(&b""[..]))) {
            Some(id) => id.to_owned(),
            None => telemetry::request_id::new(),
        };
    if let Some(ip) = peer {
        upstream.extend_from_slice(b"x-forwarded-for: ");
        if let Some(prior) = &xff {
            upstream.extend_from_slice(prior.as_bytes());
            upstream.extend_from_slice(b", ");
        }
        push_display(&mut upstream, ip);
        upstream.extend_from_slice(b"\r\n");
    } else if let Some(prior) = &xff {
        upstream.extend_from_slice(b"x-forwarded-for: ");
        upstream.extend_from_slice(prior.as_bytes());
        upstream.extend_from_slice(b"\r\n");
    }
    upstream.extend_from_slice(b"x-forwarded-proto: ");
    upstream.extend_from_slice(proxy.entry.scheme().as_bytes());
    upstream.extend_from_slice(b"\r\nx-request-id: ");
    upstream.extend_from_slice(request_id.as_bytes());
    upstream.extend_from_slice(b"\r\n\r\n");
    let hsts = proxy.entry.hsts();
    let head =
        Head { method, path: path.to_owned(), http10, keep_alive, body, expect_continue, upstream, hsts };
    Ok((head, request_id))
}

/// An answer head at the start of `bytes`: its status and length once complete,
/// `None` while partial.
pub(super) fn answer_status(bytes: &[u8]) -> Result<Option<(u16, usize)>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    Ok(match resp.parse(bytes)? {
        httparse::Status::Complete(n) => Some((resp.code.unwrap_or(0), n)),
        httparse::Status::Partial => None,
    })
}

/// How an answer goes on to the client, judged from its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AnswerShape {
    /// How the backend delimits the body.
    pub framing: Framing,
    /// An answer ended by closing goes to an HTTP/1.1 client chunked, so its
    /// connection can be kept.
    pub rechunk: bool,
    /// A chunked answer goes to an HTTP/1.0 client (which knows no chunks) as
    /// plain data ended by closing.
    pub dechunk: bool,
    /// The backend's connection may carry another request after this answer.
    pub backend_keeps: bool,
    /// The client's connection goes on after this answer.
    pub keep_client: bool,
}

/// Judge a backend's answer head (`bytes`: the complete head, whose status is
/// `status`) to `head`'s request, and write the client's copy into `out`:
/// hop-by-hop lines out, the request id in, the framing the client needs.
/// `may_keep` false: the client's connection ends after this answer whatever it
/// says (the load balancer stops, or part of the request body was never read).
/// A malformed or ambiguous answer is an error, and nothing is written.
pub(super) fn answer(
    bytes: &[u8],
    status: u16,
    head: &Head,
    request_id: &str,
    may_keep: bool,
    out: &mut Vec<u8>,
) -> Result<AnswerShape, Box<Error>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let _ = resp.parse(bytes);
    // Three digits, but not a status: the client's copy would not parse (`HTTP/1.1 0`).
    if status < 100 {
        return Err(Error::explain(
            ErrorType::InvalidHTTPHeader,
            format!("backend answer: status {status:03}"),
        ));
    }
    let no_body = head.method == Method::HEAD || status == 204 || status == 304;
    let declared =
        rules::declared_framing(resp.headers.iter().map(|h| (h.name.as_bytes(), h.value.trim_ascii())));
    let framing = match declared {
        _ if no_body => Framing::Empty,
        Err(why) => {
            return Err(Error::explain(ErrorType::InvalidHTTPHeader, format!("backend answer: {why}")));
        }
        Ok(Declared::Nothing) => Framing::UntilClose,
        Ok(Declared::Chunked) => Framing::Chunked,
        Ok(Declared::Length(v)) => match std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()) {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => return Err(Error::explain(ErrorType::InvalidHTTPHeader, "backend Content-Length")),
        },
    };

    let (backend_close, _, named) = connection_tokens(resp.headers);
    let backend_keeps = resp.version == Some(1) && !backend_close && framing != Framing::UntilClose;
    // An answer ended by closing goes on as chunked to an HTTP/1.1 client, so
    // its connection can be kept; an HTTP/1.0 client's ends with it. A chunked
    // answer to an HTTP/1.0 client (which knows no chunks) goes as plain data
    // ended by closing.
    let rechunk = framing == Framing::UntilClose && !head.http10;
    let dechunk = framing == Framing::Chunked && head.http10;
    // The client's connection ends after this answer if it asked so, if the
    // answer is ended by closing to an HTTP/1.0 client, or if part of its body
    // was never read.
    let ended_by_closing = head.http10 && matches!(framing, Framing::UntilClose | Framing::Chunked);
    let keep_client = head.keep_alive && may_keep && !ended_by_closing;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_display(out, status);
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        if rules::is_hop_by_hop(h.name)
            || h.name.eq_ignore_ascii_case(REQUEST_ID)
            || named.iter().any(|n| n.eq_ignore_ascii_case(h.name))
            || (dechunk && h.name.eq_ignore_ascii_case("transfer-encoding"))
            || (head.hsts.is_some() && h.name.eq_ignore_ascii_case(HSTS))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(max_age) = head.hsts {
        out.extend_from_slice(b"strict-transport-security: max-age=");
        push_display(out, max_age);
        out.extend_from_slice(b"\r\n");
    }
    if rechunk {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !keep_client {
        out.extend_from_slice(b"connection: close\r\n");
    } else if head.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(AnswerShape { framing, rechunk, dechunk, backend_keeps, keep_client })
}

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

/// Write `v` as text.
pub(super) fn push_display(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = write!(out, "{v}");
}

/// Write `n` in hex (a chunk size).
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
