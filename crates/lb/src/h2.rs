//! HTTP/2 (prior knowledge) requests, through pingora-core's sessions: its HTTP/2
//! server session toward the client, its HTTP/1 client session toward the
//! backend. Each request goes through the shared [`crate::pipeline`] (the same
//! checks, retries, passive health, metrics and access log as HTTP/1);
//! `Stream` is HTTP/2's side of it. Pingora's ready-made proxy
//! (`pingora-proxy`) once did all of it through hooks, at about half HAProxy's
//! throughput (ADR 0005).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Version, header};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::protocols::http::HttpTask;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::http::v1::client::HttpSession as ClientSession;
use pingora_core::server::ShutdownWatch;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::pipeline::{Entry, Exchange, Failure, HeadFacts, Next, Proxy, Refusal, Request, Sent};
use crate::pool::Backend;
use crate::rules::{self, HSTS, REQUEST_ID, error_body, strip_hop_by_hop};
use crate::upstream;

/// One HTTP/2 request on its way through the pipeline.
struct Stream<'s> {
    /// The client's request (one HTTP/2 stream).
    session: &'s mut ServerSession,
    /// Whether it has a body.
    has_body: bool,
    /// It waits for `100 Continue` before sending its body.
    expect_continue: bool,
    /// Whether `100 Continue` went to the client already: a later attempt must not
    /// send it again.
    continued: bool,
    /// Over HTTPS: the `Strict-Transport-Security` `max-age` every answer
    /// carries, the load balancer's own included.
    hsts: Option<u64>,
}

/// A backend's answer whose head has arrived.
struct Answer {
    /// The backend's connection, as pingora's HTTP/1 client session.
    up: ClientSession,
    /// Its socket (to keep the connection idle and check it before reuse).
    fd: std::os::fd::RawFd,
    /// The client's copy of the answer's head.
    resp: Box<ResponseHeader>,
    /// Whether the answer has no body left to read.
    end: bool,
}

/// The size of a request header as it came (approximately: line and fields).
fn header_bytes(req: &RequestHeader) -> usize {
    let uri = &req.uri;
    let uri_len = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let line = req.method.as_str().len() + uri_len + 12;
    line + req.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>()
}

/// The client's IP address.
fn client_ip(session: &ServerSession) -> Option<IpAddr> {
    session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
}

impl Stream<'_> {
    /// The request as the backend gets it: HTTP/1.1, hop-by-hop headers removed,
    /// the forwarding headers and the request id set.
    fn upstream_request(&self, proxy: &Proxy, req: &Request) -> Result<Box<RequestHeader>> {
        let session = &*self.session;
        let mut up = Box::new(session.req_header().clone());
        if up.version == Version::HTTP_2 {
            up.set_version(Version::HTTP_11);
            // HTTP/1 needs the body's framing and a Host header (HTTP/2 has neither).
            if self.has_body && up.headers.get(header::CONTENT_LENGTH).is_none() {
                up.insert_header(header::TRANSFER_ENCODING, "chunked")?;
            }
            if up.headers.get(header::HOST).is_none() {
                let host = up.uri.authority().map_or("", |a| a.as_str()).to_owned();
                up.insert_header(header::HOST, host)?;
            }
        }
        for name in strip_hop_by_hop(&up.headers) {
            up.remove_header(&name);
        }
        if let Some(ip) = req.client {
            let xff = match up.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip.to_string(),
            };
            up.insert_header("x-forwarded-for", xff)?;
        }
        up.insert_header("x-forwarded-proto", proxy.entry.scheme())?;
        up.insert_header(REQUEST_ID, req.request_id.as_str())?;
        Ok(up)
    }

    /// Stream the client's body to the backend. Over `max_body` bytes, the request
    /// is refused (the backend, which saw part of a body, loses its connection).
    /// If the backend stops taking the body (it may have answered early), the rest
    /// is still read from the client and the answer read below.
    async fn send_body(&mut self, up: &mut ClientSession, max_body: u64) -> Result<(), Failure> {
        let session = &mut *self.session;
        if self.expect_continue && !self.continued {
            self.continued = true;
            session.write_continue_response().await.map_err(Failure::Client)?;
        }
        let mut upstream_error = None;
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    let total = session.body_bytes_read() as u64;
                    if total > max_body {
                        return Err(Failure::refused(413, "body_too_large", "request body too large"));
                    }
                    if upstream_error.is_none()
                        && let Err(e) = up.write_body(&chunk).await
                    {
                        upstream_error = Some(e);
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(Failure::Client(e)),
            }
        }
        if upstream_error.is_none() {
            up.finish_body().await.map_err(Failure::sent)?;
        }
        Ok(())
    }
}

impl Exchange for Stream<'_> {
    type Answer = Answer;

    fn method(&self) -> &Method {
        &self.session.req_header().method
    }

    fn path(&self) -> &str {
        self.session.req_header().uri.path()
    }

    fn has_body(&self) -> bool {
        self.has_body
    }

    async fn send(
        &mut self,
        proxy: &Proxy,
        req: &Request,
        backend: &Backend,
    ) -> Result<Sent<Answer>, Failure> {
        let u = &proxy.config.upstream;
        // Made again for each attempt: cheaper than keeping a copy for retries.
        let head = self.upstream_request(proxy, req).map_err(Failure::not_sent)?;
        let idle_for = Duration::from_secs(u.idle_timeout_secs);
        let (stream, fd) = match backend.idle.take(idle_for, Instant::now()) {
            Some(c) => c,
            None => {
                let tcp =
                    upstream::connect(backend.addr, u.source_ip, Duration::from_millis(u.connect_timeout_ms))
                        .await
                        .map_err(Failure::not_sent)?;
                let fd = upstream::fd(&tcp);
                let stream: pingora_core::protocols::Stream =
                    Box::new(pingora_core::protocols::l4::stream::Stream::from(tcp));
                (stream, fd)
            }
        };
        let mut up = ClientSession::new(stream);
        up.read_timeout = Some(Duration::from_millis(u.read_timeout_ms));
        up.write_timeout = Some(Duration::from_millis(u.read_timeout_ms));
        let sent_at = Instant::now();
        up.write_request_header(head).await.map_err(Failure::sent)?;
        if self.has_body {
            self.send_body(&mut up, proxy.config.limits.max_body_bytes).await?;
        }

        // The answer's header (informational ones are dropped: `Expect` was answered
        // here, and no upgrade is forwarded).
        let (mut resp, end) = loop {
            match up.read_response_task().await.map_err(Failure::sent)? {
                HttpTask::Header(h, end) if !h.status.is_informational() => break (h, end),
                HttpTask::Header(..) => continue,
                _ => {
                    let error = Error::explain(ErrorType::InvalidHTTPHeader, "no response header");
                    return Err(Failure::sent(error));
                }
            }
        };
        let status = resp.status.as_u16();
        for name in strip_hop_by_hop(&resp.headers) {
            resp.remove_header(&name);
        }
        resp.insert_header(REQUEST_ID, req.request_id.as_str()).map_err(Failure::sent)?;
        if let Some(max_age) = proxy.entry.hsts() {
            resp.insert_header(HSTS, format!("max-age={max_age}")).map_err(Failure::sent)?;
        }
        Ok(Sent { status, sent_at, answer: Answer { up, fd, resp, end } })
    }

    async fn relay(
        &mut self,
        proxy: &Proxy,
        backend: &Backend,
        answer: Answer,
        _answered_at: Instant,
    ) -> Result<Next, Failure> {
        let Answer { mut up, fd, resp, mut end } = answer;
        let session = &mut *self.session;
        session.write_response_header(resp).await.map_err(Failure::Client)?;
        while !end {
            // Part of the answer is out: a failure now ends the client's stream.
            let Some(bytes) = up.read_body_ref().await.map_err(Failure::mid_answer)? else { break };
            let bytes = Bytes::copy_from_slice(bytes);
            end = up.is_body_done();
            session.write_response_body(bytes, false).await.map_err(Failure::Client)?;
        }
        session.finish_body().await.map_err(Failure::Client)?;
        up.respect_keepalive();
        if let Some(stream) = up.reuse().await {
            if backend.draining() {
                drop(stream);
            } else {
                backend.idle.put(stream, fd, proxy.config.upstream.keepalive_pool_size, Instant::now());
            }
        }
        // Whether the client's connection carries another stream is the session's
        // affair.
        Ok(Next::KeepGoing)
    }

    /// Answer the request from the load balancer and end its stream after it (the
    /// rest of the request, a body maybe framed ambiguously, is never read).
    async fn respond(&mut self, req: &Request, refusal: Refusal) -> Result<(), Box<Error>> {
        write_own(self.session, refusal, &req.request_id, self.hsts).await
    }
}

/// Write an answer of the load balancer's own (with HSTS when `hsts` says, as on
/// every answer over HTTPS) and end the stream after it.
async fn write_own(
    session: &mut ServerSession,
    refusal: Refusal,
    request_id: &str,
    hsts: Option<u64>,
) -> Result<(), Box<Error>> {
    let body = Bytes::from(error_body(refusal.code));
    let mut resp = ResponseHeader::build(refusal.status, Some(5))?;
    resp.insert_header(header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(REQUEST_ID, request_id)?;
    if let Some(secs) = refusal.retry_after {
        resp.insert_header(header::RETRY_AFTER, secs.to_string())?;
    }
    if let Some(max_age) = hsts {
        resp.insert_header(HSTS, format!("max-age={max_age}"))?;
    }
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(body, true).await
}

impl Proxy {
    /// Answer an HTTP/2 request on the plain listener with a redirect (308) to
    /// the same authority and target on HTTPS at `port` (400 if they cannot be
    /// used, [`rules::https_location`]), and end the connection.
    async fn redirect(&self, session: &mut ServerSession, port: u16) {
        let head = session.req_header();
        let host = head
            .uri
            .authority()
            .map(|a| a.as_str().as_bytes())
            .or_else(|| head.headers.get(header::HOST).map(|v| v.as_bytes()));
        let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let location = host.and_then(|host| rules::https_location(host, target, port));
        let (method, path) = (head.method.to_string(), target.to_owned());
        let mut req = Request::new(Instant::now(), telemetry::request_id::new(), client_ip(session));
        let written = async {
            let mut resp = match &location {
                Some(location) => {
                    let mut resp = ResponseHeader::build(308, Some(3))?;
                    resp.insert_header(header::LOCATION, location.as_str())?;
                    resp
                }
                None => ResponseHeader::build(400, Some(3))?,
            };
            resp.insert_header(header::CONTENT_LENGTH, "0")?;
            resp.insert_header(REQUEST_ID, req.request_id.as_str())?;
            session.set_keepalive(None);
            session.write_response_header(Box::new(resp)).await?;
            session.write_response_body(Bytes::new(), true).await
        };
        if let Err(e) = written.await {
            req.error = Some(e);
        }
        match location {
            Some(_) => req.status = 308,
            None => {
                let refusal = Refusal::new(400, "bad_request");
                self.refused(&mut req, refusal);
                req.status = refusal.status;
            }
        }
        self.log(&req, &method, &path);
        session.shutdown().await;
    }
}

#[async_trait]
impl HttpServerApp for Proxy {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                // A header that does not parse gets a 400; a broken or timed-out
                // connection (the slowloris guard) is just closed.
                if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
                    let refusal = Refusal::new(400, "bad_request");
                    self.metrics.rejected(refusal.code);
                    let id = telemetry::request_id::new();
                    let _ = write_own(&mut session, refusal, &id, self.entry.hsts()).await;
                }
                tracing::debug!(error = %e, "request header not read");
                session.shutdown().await;
                return None;
            }
        }
        if let Entry::RedirectToHttps { port } = self.entry {
            self.redirect(&mut session, port).await;
            return None;
        }
        let started = Instant::now();
        let head = session.req_header();
        let given = head.headers.get_all(REQUEST_ID).iter().map(|v| v.as_bytes());
        let request_id =
            telemetry::request_id::accept(given).map_or_else(telemetry::request_id::new, str::to_owned);
        let mut req = Request::new(started, request_id, client_ip(&session));
        // HTTP/2 has no transfer codings (the framing rule still refuses one), only
        // lengths to check.
        let fields = head.headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
        let facts = HeadFacts {
            client: req.client,
            method: &head.method,
            path: head.uri.path(),
            declared: rules::declared_framing(fields),
            header_bytes: header_bytes(head),
        };
        let checked = self.check(&facts, started).map(|_| ());
        let keepalive = (!*shutdown.borrow()).then_some(self.config.limits.idle_timeout_secs);
        session.set_keepalive(keepalive);
        let expect_continue = session
            .get_header(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let has_body = !session.is_body_empty();
        let hsts = self.entry.hsts();
        let mut stream = Stream { session: &mut session, has_body, expect_continue, continued: false, hsts };
        if self.serve(&mut stream, &mut req, checked).await == Next::Broken {
            if let Some(e) = &req.error {
                tracing::debug!(request_id = %req.request_id, error = %e, "client connection broken");
            }
            session.shutdown().await;
            return None;
        }
        let persistent = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(stream)) => Some(ReusedHttpStream::new(stream, Some(persistent))),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "finishing the response failed");
                None
            }
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}
