//! An HTTP/1 client connection from its first request to its close: each head
//! read within the header deadline (and refused at once if a line ends in a bare
//! LF), then served by the shared pipeline through [`Forward`]; keep-alive and
//! pipelining (bytes of the next request wait in the connection's buffer), the
//! keep-alive timeout, the load balancer's stop. Writing to the client, and the
//! load balancer's own answers, are here too.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use pingora_core::server::ShutdownWatch;
use pingora_error::{Error, ErrorType};
use pingora_timeout::fast_timeout::fast_timeout;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::forward::Forward;
use super::parse::{self, has_bare_lf};
use crate::config::LbConfig;
use crate::pipeline::{Entry, Next, Proxy, Refusal, Request};
use crate::rules;

/// A client connection: a TCP stream, or anything else that reads and writes.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

/// Read granularity.
pub(super) const READ_CHUNK: usize = 16 * 1024;
/// How long an answer of the load balancer's own may take to write.
const ERROR_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The timeouts a connection's requests run under, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// Between requests (keep-alive), and for each read of a request body from
    /// the client or write of an answer to it.
    pub client: Duration,
    /// For a request head, from its first byte (slowloris).
    pub header: Duration,
    /// For the backend's answer after the request started going out, for each
    /// read of its body, for each write to it.
    pub backend: Duration,
    /// How long an idle backend connection may have waited to be used again.
    pub backend_idle: Duration,
    /// For a new backend connection to open.
    pub connect: Duration,
}

impl Timeouts {
    fn new(config: &LbConfig) -> Timeouts {
        let (limits, upstream) = (&config.limits, &config.upstream);
        Timeouts {
            client: Duration::from_secs(limits.idle_timeout_secs),
            header: Duration::from_millis(limits.header_timeout_ms),
            backend: Duration::from_millis(upstream.read_timeout_ms),
            backend_idle: Duration::from_secs(upstream.idle_timeout_secs),
            connect: Duration::from_millis(upstream.connect_timeout_ms),
        }
    }
}

/// One client connection, kept across its requests.
pub(super) struct Conn<'a, C> {
    /// The client's connection.
    pub client: C,
    /// The client's IP address: the rate limit's key, `X-Forwarded-For`, the
    /// access log.
    pub peer: Option<IpAddr>,
    /// Bytes read from the client and not used yet: the next head, body bytes,
    /// pipelined requests.
    pub inbuf: BytesMut,
    /// Bytes read from the backend and not passed on yet.
    pub ubuf: BytesMut,
    /// What is written next, to the backend or the client: a head, with the
    /// body bytes that came with it.
    pub out: Vec<u8>,
    /// Turns true when the load balancer stops: an idle connection closes at
    /// once, a busy one after its answer.
    pub shutdown: &'a ShutdownWatch,
    /// The timeouts its requests run under.
    pub timeouts: Timeouts,
    /// Over HTTPS: the `Strict-Transport-Security` `max-age` every answer
    /// carries, the load balancer's own included.
    pub hsts: Option<u64>,
}

/// Serve an HTTP/1 client connection until it closes. `inbuf` holds what was
/// read already.
pub(crate) async fn serve<C: ClientIo>(
    proxy: &Proxy,
    client: C,
    inbuf: BytesMut,
    peer: Option<IpAddr>,
    shutdown: &ShutdownWatch,
) {
    let mut conn = Conn {
        client,
        peer,
        inbuf,
        ubuf: BytesMut::with_capacity(READ_CHUNK),
        out: Vec::with_capacity(READ_CHUNK),
        shutdown,
        timeouts: Timeouts::new(&proxy.config),
        hsts: proxy.entry.hsts(),
    };
    loop {
        let head_len = match conn.read_head(proxy.config.limits.max_header_bytes).await {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(refusal) => {
                if let Some(refusal) = refusal {
                    proxy.metrics.rejected(refusal.code);
                    let id = telemetry::request_id::new();
                    let _ = write_error(&mut conn, refusal, &id).await;
                }
                return;
            }
        };
        if let Entry::RedirectToHttps { port } = proxy.entry {
            redirect(proxy, &mut conn, head_len, port).await;
            return;
        }
        let started = Instant::now();
        let (head, request_id) = match parse::request(proxy, &conn.inbuf[..head_len], conn.peer, started) {
            Ok(parsed) => parsed,
            Err(refusal) => {
                let mut req = Request::new(started, telemetry::request_id::new(), conn.peer);
                proxy.refused(&mut req, refusal);
                req.status = refusal.status;
                let _ = write_error(&mut conn, refusal, &req.request_id).await;
                proxy.log(&req, "", "");
                return;
            }
        };
        conn.inbuf.advance(head_len);
        let mut req = Request::new(started, request_id, conn.peer);
        let mut exchange = Forward { conn: &mut conn, head, continued: false };
        match proxy.serve(&mut exchange, &mut req, Ok(())).await {
            Next::KeepGoing if !*shutdown.borrow() => {}
            _ => return,
        }
    }
}

impl<C: ClientIo> Conn<'_, C> {
    /// Wait for a complete request head in `inbuf`: `Ok(None)` when the client
    /// closes, stays idle past the keep-alive timeout or the load balancer stops;
    /// `Err(Some(refusal))` to answer and close, `Err(None)` to just close.
    async fn read_head(&mut self, max_header_bytes: usize) -> Result<Option<usize>, Option<Refusal>> {
        // A head too large because of its request line is a URI too long (414);
        // otherwise its header fields are too large (431).
        let too_large = |head: &[u8]| match head.iter().position(|&b| b == b'\n') {
            Some(end) if end <= max_header_bytes => Refusal::new(431, "header_too_large"),
            _ => Refusal::new(414, "uri_too_long"),
        };
        let mut deadline = (!self.inbuf.is_empty()).then(|| Instant::now() + self.timeouts.header);
        let mut scanned: usize = 0;
        loop {
            let inbuf = &mut self.inbuf;
            // The end of the head: CRLF CRLF. Every line of it must end with CRLF:
            // a bare LF is refused as soon as it arrives (RFC 9112 §2.2 lets a
            // recipient accept one; a proxy that does may read a head differently
            // from the server behind it, and a head ended by bare LFs would
            // otherwise wait for the header timeout).
            let from = scanned.saturating_sub(3);
            let end = inbuf[from..].windows(4).position(|w| w == b"\r\n\r\n").map(|i| from + i + 4);
            if has_bare_lf(&inbuf[..end.unwrap_or(inbuf.len())], scanned) {
                return Err(Some(Refusal::new(400, "bad_request")));
            }
            if let Some(end) = end {
                if end > max_header_bytes {
                    return Err(Some(too_large(&inbuf[..end])));
                }
                return Ok(Some(end));
            }
            scanned = inbuf.len();
            if inbuf.len() > max_header_bytes {
                return Err(Some(too_large(inbuf)));
            }
            inbuf.reserve(READ_CHUNK);
            let read = self.client.read_buf(inbuf);
            let n = match deadline {
                // Between requests: until the keep-alive timeout, or the stop.
                None => {
                    let mut stopping = self.shutdown.clone();
                    tokio::select! {
                        read = fast_timeout(self.timeouts.client, read) => match read {
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
                Ok(0) if self.inbuf.is_empty() => return Ok(None),
                Ok(0) | Err(_) => return Err(None),
                Ok(_) => {
                    deadline.get_or_insert_with(|| Instant::now() + self.timeouts.header);
                }
            }
        }
    }
}

/// Answer a plain-HTTP request (its head: `conn.inbuf[..head_len]`) with a
/// redirect (308) to the same host and target on HTTPS at `port`, or 400 when
/// it names no usable host or target ([`rules::https_location`]); the
/// connection is closed after it.
async fn redirect<C: ClientIo>(proxy: &Proxy, conn: &mut Conn<'_, C>, head_len: usize, port: u16) {
    // Taken out of the buffer (the connection closes after the answer anyway).
    let head = conn.inbuf.split_to(head_len);
    let mut headers = [httparse::EMPTY_HEADER; parse::MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let complete = matches!(parsed.parse(&head), Ok(httparse::Status::Complete(_)));
    let host = parsed.headers.iter().find(|h| h.name.eq_ignore_ascii_case("host")).map(|h| h.value);
    let location = match (complete, parsed.path, host) {
        (true, Some(target), Some(host)) => rules::https_location(host, target, port),
        _ => None,
    };
    let mut req = Request::new(Instant::now(), telemetry::request_id::new(), conn.peer);
    match location {
        Some(location) => {
            req.status = 308;
            use std::io::Write as _;
            conn.out.clear();
            let _ = write!(
                conn.out,
                "HTTP/1.1 308 Permanent Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\nx-request-id: {}\r\nconnection: close\r\n\r\n",
                req.request_id
            );
            if let Err(e) = write_client(&mut conn.client, &conn.out, ERROR_WRITE_TIMEOUT, true).await {
                req.error = Some(e);
            }
        }
        None => {
            let refusal = Refusal::new(400, "bad_request");
            proxy.refused(&mut req, refusal);
            req.status = refusal.status;
            if let Err(e) = write_error(conn, refusal, &req.request_id).await {
                req.error = Some(e);
            }
        }
    }
    proxy.log(&req, parsed.method.unwrap_or(""), parsed.path.unwrap_or(""));
}

/// An I/O error as pingora's error, of `etype`, in `context`.
pub(super) fn io_error(etype: ErrorType, context: &'static str, e: std::io::Error) -> Box<Error> {
    Error::because(etype, context, e)
}

/// Write an answer of the load balancer's own (with HSTS over HTTPS, like every
/// answer there); the connection is closed after it.
pub(super) async fn write_error<C: ClientIo>(
    conn: &mut Conn<'_, C>,
    refusal: Refusal,
    request_id: &str,
) -> Result<(), Box<Error>> {
    let Conn { client, out, hsts, .. } = conn;
    let Refusal { status, code, retry_after } = refusal;
    let body = rules::error_body(code);
    let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    out.clear();
    use std::io::Write as _;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(secs) = retry_after {
        let _ = write!(out, "retry-after: {secs}\r\n");
    }
    if let Some(max_age) = hsts {
        let _ = write!(out, "{}: max-age={max_age}\r\n", rules::HSTS);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    let written = write_client(client, out, ERROR_WRITE_TIMEOUT, true).await;
    out.clear();
    written
}

/// Write to the client within `timeout` (a client that stops reading does not
/// hold a backend connection forever); `flush` sends what is buffered now.
pub(super) async fn write_client<C: ClientIo>(
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
