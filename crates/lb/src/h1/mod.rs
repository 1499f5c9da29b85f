//! HTTP/1.x, client to backend, forwarded without rebuilding either message.
//!
//! Nearly every request the load balancer sees is HTTP/1.1 with a small body or
//! none. For those, this module reads the client's request head, checks it, writes
//! the backend's copy (the same header lines minus the hop-by-hop ones, plus the
//! forwarding headers) straight from the received bytes, and passes the backend's
//! answer back the same way; bodies are copied as they come, their framing checked
//! on the way. Headers are never parsed into maps and serialized again, and one
//! task does it all on one connection to a backend taken from [`crate::upstream`].
//! Pingora's HTTP sessions (used for HTTP/2, see [`crate::h2`]) cost about 1.4×
//! HAProxy's CPU per request on this path; this costs less than HAProxy (ADR 0005).
//!
//! What the framing rules are, and what is refused (400 unless said otherwise):
//! - a head that does not parse, or has a line not ended by CRLF (refused as soon
//!   as the bare LF arrives), or is larger than `max_header_bytes` (431), or does
//!   not arrive within `header_timeout_ms` of its first byte (the connection is
//!   closed: slowloris);
//! - `Content-Length` with `Transfer-Encoding`, several or malformed lengths, a
//!   transfer coding other than `chunked` ([`crate::rules::declared_framing`]), chunked
//!   from an HTTP/1.0 client, an HTTP/1.1 request without exactly one `Host`;
//! - chunked bodies are checked byte by byte ([`Chunked`]) in both directions: a
//!   malformed one ends the exchange and the connection;
//! - `CONNECT` (405); `Upgrade` is removed like every hop-by-hop header, so no
//!   connection ever switches protocols.
//!
//! Answers: informational ones are dropped (`Expect: 100-continue` is answered
//! here); one ended by closing is re-chunked for an HTTP/1.1 client; a chunked one
//! reaches an HTTP/1.0 client as plain data ended by closing; a malformed or
//! ambiguous one is a 502. A backend connection is reused only after a complete,
//! well-framed HTTP/1.1 answer with nothing after it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use http::Method;
use pingora_error::{Error, ErrorType};
use pingora_timeout::fast_timeout::fast_timeout;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

mod body;
mod parse;

pub use body::Chunked;
use parse::{connection_tokens, dropped_request_header, has_bare_lf, push_display, push_hex};

use crate::pipeline::Proxy;
use crate::pool::Lease;
use crate::ratelimit::retry_after_secs;
use crate::rules::{self, Declared, REQUEST_ID};
use crate::upstream;

/// A client connection: a TCP stream, or anything else that reads and writes.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

/// Header lines parsed at most (more: 431).
const MAX_HEADERS: usize = 128;
/// Read granularity.
const READ_CHUNK: usize = 16 * 1024;
/// How long an answer of the load balancer's own may take to write.
const ERROR_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (answers only).
    UntilClose,
}

/// Why an exchange could not go on.
#[derive(Debug)]
enum Failure {
    /// The client's side: the connection is closed, nothing more is written.
    Client(Box<Error>),
    /// The client's request went wrong on the way (its body too large or badly
    /// framed): answered with `status` and `code`, then the connection is closed.
    Refused {
        /// The status sent.
        status: u16,
        /// The error code sent.
        code: &'static str,
        /// What happened.
        error: Box<Error>,
    },
    /// The backend's side, before anything of the answer reached the client.
    Backend {
        /// What happened.
        error: Box<Error>,
        /// Whether any of the request reached the backend.
        sent: bool,
    },
    /// The backend's side, after part of the answer reached the client: the
    /// client's connection must be closed.
    BackendMidAnswer(Box<Error>),
}

fn io_error(etype: ErrorType, context: &'static str, e: std::io::Error) -> Box<Error> {
    Error::because(etype, context, e)
}

/// The request, as far as the load balancer cares.
struct Head {
    method: Method,
    path: String,
    /// HTTP/1.0 (keep-alive only if asked for).
    http10: bool,
    /// The client wants the connection kept.
    keep_alive: bool,
    body: Framing,
    expect_continue: bool,
    request_id: String,
    /// The backend's copy of the head, ready to send.
    upstream: Vec<u8>,
}

/// How a response, or the request, ended for the client's connection.
enum Next {
    /// Read the next request.
    KeepGoing,
    /// Close the connection.
    Close,
}

impl Proxy {
    /// Serve an HTTP/1 client connection until it closes. `inbuf` holds what was
    /// read already.
    pub(crate) async fn serve_h1<C: ClientIo>(
        &self,
        client: &mut C,
        mut inbuf: BytesMut,
        peer: Option<IpAddr>,
        shutdown: &pingora_core::server::ShutdownWatch,
    ) {
        let mut ubuf = BytesMut::with_capacity(READ_CHUNK);
        let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
        loop {
            let head_len = match self.read_head(client, &mut inbuf, shutdown).await {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(status) => {
                    if let Some((status, code)) = status {
                        self.metrics.rejected(code);
                        let id = rules::new_request_id();
                        let _ = write_error(client, &mut out, status, code, &id, None).await;
                    }
                    return;
                }
            };
            let started = Instant::now();
            let head = match self.parse_head(&inbuf[..head_len], peer) {
                Ok(h) => h,
                Err((status, code, extra)) => {
                    self.metrics.rejected(code);
                    let id = rules::new_request_id();
                    let _ = write_error(client, &mut out, status, code, &id, extra).await;
                    self.log_h1(None, &id, peer, status, None, 0, code, None, started);
                    return;
                }
            };
            inbuf.advance(head_len);
            let next =
                self.exchange(client, &mut inbuf, &mut ubuf, &mut out, head, peer, started, shutdown).await;
            match next {
                Next::KeepGoing if !*shutdown.borrow() => {}
                _ => return,
            }
        }
    }

    /// Wait for a complete request head in `inbuf`: `Ok(None)` when the client
    /// closes, stays idle past the keep-alive timeout or the load balancer stops; `Err(Some(status))` to
    /// answer and close, `Err(None)` to just close.
    async fn read_head<C: ClientIo>(
        &self,
        client: &mut C,
        inbuf: &mut BytesMut,
        shutdown: &pingora_core::server::ShutdownWatch,
    ) -> Result<Option<usize>, Option<(u16, &'static str)>> {
        let limits = &self.config.limits;
        let idle = Duration::from_secs(limits.idle_timeout_secs);
        let header_timeout = Duration::from_millis(limits.header_timeout_ms);
        let mut deadline = (!inbuf.is_empty()).then(|| Instant::now() + header_timeout);
        let mut scanned: usize = 0;
        loop {
            // The end of the head: CRLF CRLF. Every line of it must end with CRLF:
            // a bare LF is refused as soon as it arrives (RFC 9112 §2.2 lets a
            // recipient accept one; a proxy that does may read a head differently
            // from the server behind it, and a head ended by bare LFs would
            // otherwise wait for the header timeout).
            let from = scanned.saturating_sub(3);
            let end = inbuf[from..].windows(4).position(|w| w == b"\r\n\r\n").map(|i| from + i + 4);
            if has_bare_lf(&inbuf[..end.unwrap_or(inbuf.len())], scanned) {
                return Err(Some((400, "bad_request")));
            }
            if let Some(end) = end {
                if end > limits.max_header_bytes {
                    return Err(Some((431, "header_too_large")));
                }
                return Ok(Some(end));
            }
            scanned = inbuf.len();
            if inbuf.len() > limits.max_header_bytes {
                return Err(Some((431, "header_too_large")));
            }
            inbuf.reserve(READ_CHUNK);
            let read = client.read_buf(inbuf);
            let n = match deadline {
                // Between requests: until the keep-alive timeout, or the stop.
                None => {
                    let mut stopping = shutdown.clone();
                    tokio::select! {
                        read = fast_timeout(idle, read) => match read {
                            Ok(r) => r,
                            Err(_) => return Ok(None),
                        },
                        _ = stopping.wait_for(|stop| *stop) => return Ok(None),
                    }
                }
                Some(d) => match fast_timeout(d.saturating_duration_since(Instant::now()), read).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::debug!("request header not complete within the header timeout");
                        return Err(None);
                    }
                },
            };
            match n {
                Ok(0) if inbuf.is_empty() => return Ok(None),
                Ok(0) | Err(_) => return Err(None),
                Ok(_) => {
                    deadline.get_or_insert_with(|| Instant::now() + header_timeout);
                }
            }
        }
    }

    /// Parse and check a request head; build the backend's copy.
    #[allow(clippy::type_complexity)]
    fn parse_head(
        &self,
        bytes: &[u8],
        peer: Option<IpAddr>,
    ) -> Result<Head, (u16, &'static str, Option<(&'static str, String)>)> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(bytes) {
            Ok(httparse::Status::Complete(_)) => {}
            Err(httparse::Error::TooManyHeaders) => return Err((431, "header_too_large", None)),
            _ => return Err((400, "bad_request", None)),
        }
        let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
            return Err((400, "bad_request", None));
        };
        if let Some(limiter) = &self.limiter
            && let Some(ip) = peer
            && let Err(wait) = limiter.check(&ip, Instant::now())
        {
            return Err((429, "rate_limited", Some(("retry-after", retry_after_secs(wait).to_string()))));
        }
        let method = Method::from_bytes(method.as_bytes()).map_err(|_| (400, "bad_request", None))?;
        if method == Method::CONNECT {
            return Err((405, "method_not_allowed", None));
        }
        let declared =
            rules::declared_framing(req.headers.iter().map(|h| (h.name.as_bytes(), h.value.trim_ascii())));
        let body = match declared {
            Err(why) => {
                tracing::warn!(why, "ambiguous request framing refused");
                return Err((400, "smuggling", None));
            }
            Ok(Declared::Nothing) => Framing::Empty,
            Ok(Declared::Chunked) => Framing::Chunked,
            Ok(Declared::Length(v)) => {
                let len: u64 = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).ok_or((
                    400,
                    "smuggling",
                    None,
                ))?;
                if len > self.config.limits.max_body_bytes {
                    return Err((413, "body_too_large", None));
                }
                if len == 0 { Framing::Empty } else { Framing::Length(len) }
            }
        };
        let http10 = version == 0;
        if http10 && body == Framing::Chunked {
            // HTTP/1.0 has no chunked coding: a sender claiming both is not to be trusted.
            return Err((400, "smuggling", None));
        }
        // HTTP/1.1 requires exactly one Host (RFC 9112 §3.2).
        let hosts = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host")).count();
        if hosts > 1 || (hosts == 0 && !http10) {
            return Err((400, "bad_request", None));
        }
        let (close, keep_alive_token, named) = connection_tokens(req.headers);
        let keep_alive = if http10 { keep_alive_token && !close } else { !close };
        let mut expect_continue = false;
        let mut request_id = None;
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
                if request_id.is_none() {
                    request_id =
                        http::HeaderValue::from_bytes(h.value).ok().as_ref().and_then(rules::sane_request_id);
                }
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
        let request_id = request_id.unwrap_or_else(rules::new_request_id);
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
        upstream.extend_from_slice(b"x-forwarded-proto: http\r\nx-request-id: ");
        upstream.extend_from_slice(request_id.as_bytes());
        upstream.extend_from_slice(b"\r\n\r\n");
        Ok(Head {
            method,
            path: path.to_owned(),
            http10,
            keep_alive,
            body,
            expect_continue,
            request_id,
            upstream,
        })
    }

    /// One request and its answer, with retries on other backends.
    #[allow(clippy::too_many_arguments)]
    async fn exchange<C: ClientIo>(
        &self,
        client: &mut C,
        inbuf: &mut BytesMut,
        ubuf: &mut BytesMut,
        out: &mut Vec<u8>,
        head: Head,
        peer: Option<IpAddr>,
        started: Instant,
        shutdown: &pingora_core::server::ShutdownWatch,
    ) -> Next {
        let has_body = head.body != Framing::Empty;
        let max_attempts = self.config.upstream.max_retries + 1;
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut attempts = 0;
        let mut last_error: Option<Box<Error>> = None;
        let mut continued = false;
        loop {
            if attempts > 0 {
                self.metrics.retried();
            }
            let picked = self.pool.pick(&tried, if attempts == 0 { started } else { Instant::now() }, |n| {
                rand::Rng::random_range(&mut rand::rng(), 0..n)
            });
            let Some(lease) = picked else {
                let (status, code) = rules::gave_up(last_error.as_deref());
                if last_error.is_none() {
                    self.metrics.rejected(code);
                }
                let _ = write_error(client, out, status, code, &head.request_id, None).await;
                let rejected = if status == 503 { code } else { "" };
                let backend = tried.last().copied();
                self.log_h1(
                    Some(&head),
                    &head.request_id,
                    peer,
                    status,
                    backend,
                    attempts,
                    rejected,
                    last_error.as_deref(),
                    started,
                );
                return Next::Close;
            };
            attempts += 1;
            let addr = lease.backend.addr;
            let result =
                self.attempt_h1(client, inbuf, ubuf, out, &head, &lease, &mut continued, shutdown).await;
            // What the client got, why, and what becomes of its connection.
            let (status, rejected, error, next) = match result {
                Ok((status, next)) => (status, "", None, next),
                Err(Failure::Refused { status, code, error }) => (status, code, Some(error), Next::Close),
                // Nothing more can be written to the client after these.
                Err(Failure::Client(e)) => (0, "", Some(e), Next::Close),
                Err(Failure::BackendMidAnswer(e)) => {
                    self.attempt_failed(&lease.backend, Instant::now());
                    (0, "", Some(e), Next::Close)
                }
                Err(Failure::Backend { error, sent }) => {
                    self.attempt_failed(&lease.backend, Instant::now());
                    tried.push(addr);
                    tracing::debug!(request_id = %head.request_id, error = %error, sent, "attempt failed");
                    if attempts < max_attempts && rules::may_retry(&head.method, has_body, sent, false) {
                        last_error = Some(error);
                        continue;
                    }
                    let (status, code) = rules::gave_up(Some(&error));
                    let _ = write_error(client, out, status, code, &head.request_id, None).await;
                    (status, "", Some(error), Next::Close)
                }
            };
            let error = error.as_deref();
            self.log_h1(
                Some(&head),
                &head.request_id,
                peer,
                status,
                Some(addr),
                attempts,
                rejected,
                error,
                started,
            );
            return next;
        }
    }

    /// One attempt on `lease`'s backend: the status sent to the client and what
    /// becomes of its connection.
    #[allow(clippy::too_many_arguments)]
    async fn attempt_h1<C: ClientIo>(
        &self,
        client: &mut C,
        inbuf: &mut BytesMut,
        ubuf: &mut BytesMut,
        out: &mut Vec<u8>,
        head: &Head,
        lease: &Lease,
        continued: &mut bool,
        shutdown: &pingora_core::server::ShutdownWatch,
    ) -> Result<(u16, Next), Failure> {
        let backend = &lease.backend;
        let u = &self.config.upstream;
        let read_timeout = Duration::from_millis(u.read_timeout_ms);
        let client_timeout = Duration::from_secs(self.config.limits.idle_timeout_secs);
        let not_sent = |error| Failure::Backend { error, sent: false };
        let sent = |error| Failure::Backend { error, sent: true };
        let client_err =
            |context: &'static str| move |e| Failure::Client(io_error(ErrorType::ReadError, context, e));
        let picked_at = Instant::now();
        let (mut up, sent_at) =
            match backend.idle_h1.take(Duration::from_secs(u.idle_timeout_secs), picked_at) {
                Some((c, _)) => (c, picked_at),
                None => {
                    let c = upstream::connect(backend.addr, Duration::from_millis(u.connect_timeout_ms))
                        .await
                        .map_err(not_sent)?;
                    (c, Instant::now())
                }
            };

        // The request: its head, with as much of the body as is already here.
        out.clear();
        out.extend_from_slice(&head.upstream);
        let mut body_left: u64 = 0;
        let mut chunked = Chunked::Size(0, 0);
        let mut body_bytes: u64 = 0;
        match head.body {
            Framing::Empty | Framing::UntilClose => {}
            Framing::Length(n) => {
                let here = (inbuf.len() as u64).min(n) as usize;
                out.extend_from_slice(&inbuf[..here]);
                inbuf.advance(here);
                body_left = n - here as u64;
            }
            Framing::Chunked => {
                let (used, data) = match chunked.advance(inbuf) {
                    Ok(advanced) => advanced,
                    Err(why) => {
                        return Err(self.refuse_body(client, out, head, 400, "bad_request", why).await);
                    }
                };
                body_bytes += data;
                out.extend_from_slice(&inbuf[..used]);
                inbuf.advance(used);
            }
        }
        let more_body = match head.body {
            Framing::Length(_) => body_left > 0,
            Framing::Chunked => chunked != Chunked::Done,
            _ => false,
        };
        if body_bytes > self.config.limits.max_body_bytes {
            return Err(self
                .refuse_body(client, out, head, 413, "body_too_large", "request body too large")
                .await);
        }
        write_backend(&mut up, out, read_timeout).await.map_err(sent)?;

        // The rest of the body, as the client sends it. If the backend stops taking
        // it (it may have answered early, say 413), its answer is still read and
        // passed on, and the client's connection ends after it.
        let mut body_cut: Option<Box<Error>> = None;
        if more_body {
            if head.expect_continue && !*continued {
                *continued = true;
                write_client(client, b"HTTP/1.1 100 Continue\r\n\r\n", client_timeout, true)
                    .await
                    .map_err(Failure::Client)?;
            }
            while body_cut.is_none() {
                inbuf.reserve(READ_CHUNK);
                let n = match fast_timeout(client_timeout, client.read_buf(inbuf)).await {
                    Ok(r) => r.map_err(client_err("reading the request body"))?,
                    Err(_) => {
                        return Err(Failure::Client(Error::explain(ErrorType::ReadTimedout, "request body")));
                    }
                };
                if n == 0 {
                    return Err(Failure::Client(Error::explain(
                        ErrorType::ConnectionClosed,
                        "request body cut short",
                    )));
                }
                let (take, done) = match head.body {
                    Framing::Length(_) => {
                        let take = (inbuf.len() as u64).min(body_left) as usize;
                        body_left -= take as u64;
                        (take, body_left == 0)
                    }
                    _ => {
                        let (used, data) = match chunked.advance(inbuf) {
                            Ok(advanced) => advanced,
                            Err(why) => {
                                return Err(self
                                    .refuse_body(client, out, head, 400, "bad_request", why)
                                    .await);
                            }
                        };
                        body_bytes += data;
                        if body_bytes > self.config.limits.max_body_bytes {
                            return Err(self
                                .refuse_body(
                                    client,
                                    out,
                                    head,
                                    413,
                                    "body_too_large",
                                    "request body too large",
                                )
                                .await);
                        }
                        (used, chunked == Chunked::Done)
                    }
                };
                if let Err(e) = write_backend(&mut up, &inbuf[..take], read_timeout).await {
                    body_cut = Some(e);
                }
                inbuf.advance(take);
                if done {
                    break;
                }
            }
        }

        // The answer's head (informational answers are dropped: `Expect` was
        // answered here, and no upgrade was asked for).
        ubuf.clear();
        let deadline = sent_at + read_timeout;
        let (status, resp_head_len) = loop {
            let parsed = {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(ubuf) {
                    Ok(httparse::Status::Complete(n)) => Some((resp.code.unwrap_or(0), n)),
                    Ok(httparse::Status::Partial) => None,
                    Err(e) => {
                        return Err(sent(Error::explain(
                            ErrorType::InvalidHTTPHeader,
                            format!("backend answer: {e}"),
                        )));
                    }
                }
            };
            match parsed {
                Some((code, n)) if (100..200).contains(&code) && code != 101 => ubuf.advance(n),
                Some((101, _)) => {
                    return Err(sent(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        "backend switched protocols",
                    )));
                }
                Some(found) => break found,
                None => {}
            }
            if ubuf.len() > 64 * 1024 {
                return Err(sent(Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    "backend answer head too large",
                )));
            }
            ubuf.reserve(READ_CHUNK);
            let n = match fast_timeout(deadline.saturating_duration_since(Instant::now()), up.read_buf(ubuf))
                .await
            {
                Ok(r) => r.map_err(|e| {
                    sent(
                        body_cut
                            .take()
                            .unwrap_or_else(|| io_error(ErrorType::ReadError, "reading the answer", e)),
                    )
                })?,
                Err(_) => {
                    return Err(sent(Error::explain(
                        ErrorType::ReadTimedout,
                        format!("no answer within {read_timeout:?}"),
                    )));
                }
            };
            if n == 0 {
                return Err(sent(body_cut.take().unwrap_or_else(|| {
                    Error::explain(ErrorType::ConnectionClosed, "backend closed before answering")
                })));
            }
        };
        // The client's copy of the head.
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let _ = resp.parse(&ubuf[..resp_head_len]);
        let no_body = head.method == Method::HEAD || status == 204 || status == 304;
        let declared =
            rules::declared_framing(resp.headers.iter().map(|h| (h.name.as_bytes(), h.value.trim_ascii())));
        let framing = match declared {
            _ if no_body => Framing::Empty,
            Err(why) => {
                return Err(sent(Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    format!("backend answer: {why}"),
                )));
            }
            Ok(Declared::Nothing) => Framing::UntilClose,
            Ok(Declared::Chunked) => Framing::Chunked,
            Ok(Declared::Length(v)) => match std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()) {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => {
                    return Err(sent(Error::explain(ErrorType::InvalidHTTPHeader, "backend Content-Length")));
                }
            },
        };
        // A well-formed answer: the attempt counts as the backend's.
        let now = Instant::now();
        self.attempt_answered(backend, status, now.saturating_duration_since(sent_at), now);

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
        let keep_client = head.keep_alive && !*shutdown.borrow() && !ended_by_closing && body_cut.is_none();
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
            {
                continue;
            }
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(head.request_id.as_bytes());
        out.extend_from_slice(b"\r\n");
        if rechunk {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if !keep_client {
            out.extend_from_slice(b"connection: close\r\n");
        } else if head.http10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        ubuf.advance(resp_head_len);

        // The body: what arrived with the head goes out with it.
        let mid = |e: std::io::Error| {
            Failure::BackendMidAnswer(io_error(ErrorType::ReadError, "reading the answer body", e))
        };
        let mut left: u64 = if let Framing::Length(n) = framing { n } else { 0 };
        let mut resp_chunks = Chunked::Size(0, 0);
        let mut ended_by_close = false;
        let mut first = true;
        loop {
            // Move what is in `ubuf` into `out`.
            let done = match framing {
                Framing::Empty => true,
                Framing::Length(_) => {
                    let take = (ubuf.len() as u64).min(left) as usize;
                    out.extend_from_slice(&ubuf[..take]);
                    ubuf.advance(take);
                    left -= take as u64;
                    left == 0
                }
                Framing::Chunked => {
                    let bad =
                        |why| Failure::BackendMidAnswer(Error::explain(ErrorType::InvalidHTTPHeader, why));
                    let (used, _) = if dechunk {
                        resp_chunks.advance_with(ubuf, |data| out.extend_from_slice(data)).map_err(bad)?
                    } else {
                        let used = resp_chunks.advance(ubuf).map_err(bad)?;
                        out.extend_from_slice(&ubuf[..used.0]);
                        used
                    };
                    ubuf.advance(used);
                    resp_chunks == Chunked::Done
                }
                Framing::UntilClose => {
                    if !ubuf.is_empty() {
                        if rechunk {
                            push_hex(out, ubuf.len());
                            out.extend_from_slice(b"\r\n");
                            out.extend_from_slice(ubuf);
                            out.extend_from_slice(b"\r\n");
                        } else {
                            out.extend_from_slice(ubuf);
                        }
                        ubuf.clear();
                    }
                    if ended_by_close && rechunk {
                        out.extend_from_slice(b"0\r\n\r\n");
                    }
                    ended_by_close
                }
            };
            if !out.is_empty() || first {
                // A long or slow answer is passed on as it comes.
                write_client(client, out, client_timeout, !done).await.map_err(Failure::Client)?;
                out.clear();
            }
            first = false;
            if done {
                break;
            }
            ubuf.reserve(READ_CHUNK);
            let n = match fast_timeout(read_timeout, up.read_buf(ubuf)).await {
                Ok(r) => r.map_err(mid)?,
                Err(_) => {
                    return Err(Failure::BackendMidAnswer(Error::explain(
                        ErrorType::ReadTimedout,
                        "answer body",
                    )));
                }
            };
            if n == 0 {
                if framing == Framing::UntilClose {
                    ended_by_close = true;
                } else {
                    return Err(Failure::BackendMidAnswer(Error::explain(
                        ErrorType::ConnectionClosed,
                        "answer body cut short",
                    )));
                }
            }
        }
        write_client(client, &[], client_timeout, true).await.map_err(Failure::Client)?;
        // Leftover bytes after the answer: the connection is not in a known state.
        if backend_keeps && ubuf.is_empty() && !backend.draining() {
            let fd = upstream::fd(&up);
            backend.idle_h1.put(up, fd, u.keepalive_pool_size, now);
        }
        Ok((status, if keep_client { Next::KeepGoing } else { Next::Close }))
    }

    /// The body went wrong while being forwarded (over the limit, or badly
    /// framed): answer `status` and close; the backend's connection is dropped (it
    /// saw part of a body).
    async fn refuse_body<C: ClientIo>(
        &self,
        client: &mut C,
        out: &mut Vec<u8>,
        head: &Head,
        status: u16,
        code: &'static str,
        why: &'static str,
    ) -> Failure {
        self.metrics.rejected(code);
        let _ = write_error(client, out, status, code, &head.request_id, None).await;
        Failure::Refused { status, code, error: Error::explain(ErrorType::HTTPStatus(status), why) }
    }

    #[allow(clippy::too_many_arguments)]
    fn log_h1(
        &self,
        head: Option<&Head>,
        request_id: &str,
        client: Option<IpAddr>,
        status: u16,
        backend: Option<SocketAddr>,
        attempts: usize,
        rejected: &str,
        error: Option<&Error>,
        started: Instant,
    ) {
        if !crate::accesslog::enabled() {
            return;
        }
        self.access_log.log(&crate::accesslog::Entry {
            request_id,
            client,
            method: head.map_or("", |h| h.method.as_str()),
            path: head.map_or("", |h| h.path.as_str()),
            status,
            backend,
            attempts,
            rejected,
            error,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
    }
}

/// Write an answer of the load balancer's own; the connection is closed after it.
async fn write_error<C: ClientIo>(
    client: &mut C,
    out: &mut Vec<u8>,
    status: u16,
    code: &str,
    request_id: &str,
    extra: Option<(&'static str, String)>,
) -> Result<(), Box<Error>> {
    let body = rules::error_body(code);
    let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    out.clear();
    use std::io::Write as _;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some((name, value)) = extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    let written = write_client(client, out, ERROR_WRITE_TIMEOUT, true).await;
    out.clear();
    written
}

/// Write to a backend, within `timeout` (a backend that stops reading does not
/// hold the request forever).
async fn write_backend(
    up: &mut tokio::net::TcpStream,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), Box<Error>> {
    match fast_timeout(timeout, up.write_all(bytes)).await {
        Ok(r) => r.map_err(|e| io_error(ErrorType::WriteError, "writing to the backend", e)),
        Err(_) => Err(Error::explain(ErrorType::WriteTimedout, "writing to the backend")),
    }
}

/// Write to the client within `timeout` (a client that stops reading does not
/// hold a backend connection forever); `flush` sends what is buffered now.
async fn write_client<C: ClientIo>(
    client: &mut C,
    bytes: &[u8],
    timeout: Duration,
    flush: bool,
) -> Result<(), Box<Error>> {
    let write = async {
        client.write_all(bytes).await?;
        if flush {
            client.flush().await?;
        }
        Ok::<(), std::io::Error>(())
    };
    match fast_timeout(timeout, write).await {
        Ok(r) => r.map_err(|e| io_error(ErrorType::WriteError, "writing to the client", e)),
        Err(_) => Err(Error::explain(ErrorType::WriteTimedout, "writing to the client")),
    }
}
