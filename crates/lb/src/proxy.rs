//! The proxy's shared state, and requests that came over HTTP/2.
//!
//! The rules both paths apply are in [`crate::rules`]. HTTP/1 requests are forwarded by [`crate::h1`]; an
//! HTTP/2 (prior knowledge) request goes through pingora-core's sessions: its
//! HTTP/2 server session toward the client, its HTTP/1 client session toward the
//! backend, with the same checks, retries, passive health, metrics and access log
//! in straight-line code ([`Proxy::serve`]). Pingora's ready-made proxy
//! (`pingora-proxy`) once did all of it through hooks, at about half HAProxy's
//! throughput (ADR 0005).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use http::{Method, Version};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::protocols::Stream;
use pingora_core::protocols::http::HttpTask;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::http::v1::client::HttpSession as ClientSession;
use pingora_core::server::ShutdownWatch;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use rand::Rng;

use crate::accesslog::{self, AccessLog};
use crate::config::LbConfig;
use crate::metrics::LbMetrics;
use crate::pool::{Backend, Lease, Outcome, Pool};
use crate::ratelimit::{RateLimiter, retry_after_secs};
use crate::rules::{
    self, REQUEST_ID, declared_framing, error_body, new_request_id, sane_request_id, strip_hop_by_hop,
};
use crate::upstream;

/// What the load balancer shares between requests.
pub struct Proxy {
    /// The backends.
    pub pool: Arc<Pool>,
    /// The settings.
    pub config: LbConfig,
    /// The metrics.
    pub metrics: LbMetrics,
    /// Per-client token buckets, when configured.
    pub limiter: Option<RateLimiter<IpAddr>>,
    /// One line per request.
    pub access_log: Arc<AccessLog>,
    /// Pingora's server options: HTTP/2 with prior knowledge is accepted.
    pub options: HttpServerOptions,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.config)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// One request's state across its attempts.
#[derive(Debug)]
struct Ctx {
    /// When the request's header was read.
    started: Instant,
    /// The request id (taken from a sane incoming header, or made).
    request_id: String,
    /// Backends already tried and failed, not to be tried again.
    tried: Vec<SocketAddr>,
    /// Attempts made (connections tried, the last one included).
    attempts: usize,
    /// The last backend used (for the access log).
    backend: Option<SocketAddr>,
    /// The status sent to the client (0: none).
    status: u16,
    /// Why the load balancer answered itself, if it did.
    rejected: Option<&'static str>,
    /// What went wrong, for the access log.
    error: Option<Box<Error>>,
}

/// How an attempt on one backend failed.
struct AttemptError {
    /// What happened.
    error: Box<Error>,
    /// Whether anything of the request reached the backend (then only a
    /// replayable request may be tried again).
    sent: bool,
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

impl Proxy {
    /// Answer the request from the load balancer and close the connection after it
    /// (the rest of the request, a body maybe framed ambiguously, is never read).
    async fn respond(
        &self,
        session: &mut ServerSession,
        ctx: &mut Ctx,
        status: u16,
        code: &'static str,
        extra: Option<(&'static str, String)>,
    ) -> Result<()> {
        let body = Bytes::from(error_body(code));
        let mut resp = ResponseHeader::build(status, Some(4))?;
        resp.insert_header(header::CONTENT_TYPE, "application/json")?;
        resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
        resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        if let Some((name, value)) = extra {
            resp.insert_header(name, value)?;
        }
        session.set_keepalive(None);
        ctx.status = status;
        session.write_response_header(Box::new(resp)).await?;
        session.write_response_body(body, true).await
    }

    /// Refuse the request before any backend sees it.
    async fn refuse(
        &self,
        session: &mut ServerSession,
        ctx: &mut Ctx,
        status: u16,
        reason: &'static str,
        extra: Option<(&'static str, String)>,
    ) -> Result<()> {
        self.metrics.rejected(reason);
        ctx.rejected = Some(reason);
        self.respond(session, ctx, status, reason, extra).await
    }

    /// Passive checks: count the outcome, eject the backend if it keeps failing.
    fn record(&self, backend: &Backend, outcome: Outcome, now: Instant) {
        if let Some(length) = self.pool.record(backend, outcome, now) {
            self.metrics.ejected(backend.addr);
            tracing::warn!(backend = %backend.addr, ejected_ms = length.as_millis() as u64, "backend ejected");
        }
    }

    /// An attempt on `backend` failed before (or while) its answer came: counted
    /// in its metrics and against its passive health.
    pub(crate) fn attempt_failed(&self, backend: &Backend, now: Instant) {
        self.metrics.attempt(backend.addr, true, None);
        self.record(backend, Outcome::Failure, now);
    }

    /// `backend` answered with `status`, `latency` after the request was sent:
    /// its metrics, its latency average and its passive health.
    pub(crate) fn attempt_answered(&self, backend: &Backend, status: u16, latency: Duration, now: Instant) {
        let failed = status >= 500;
        self.metrics.attempt(backend.addr, failed, Some(latency.as_secs_f64()));
        backend.observe_latency(latency, now);
        self.record(backend, if failed { Outcome::Failure } else { Outcome::Success }, now);
    }

    /// The request's checks, in order; `Some` (and the answer written) if refused.
    async fn check(&self, session: &mut ServerSession, ctx: &mut Ctx) -> Result<bool> {
        if let Some(limiter) = &self.limiter
            && let Some(ip) = client_ip(session)
            && let Err(wait) = limiter.check(&ip, Instant::now())
        {
            let after = retry_after_secs(wait).to_string();
            self.refuse(session, ctx, 429, "rate_limited", Some(("retry-after", after))).await?;
            return Ok(true);
        }
        if session.req_header().method == Method::CONNECT {
            self.refuse(session, ctx, 405, "method_not_allowed", None).await?;
            return Ok(true);
        }
        // Only HTTP/2 requests come here (HTTP/1 goes through `h1`, which judges the
        // raw header lines); HTTP/2 has no transfer codings, only lengths to check.
        let fields = session.req_header().headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
        if let Err(why) = declared_framing(fields) {
            tracing::warn!(request_id = %ctx.request_id, why, "ambiguous request framing refused");
            self.refuse(session, ctx, 400, "smuggling", None).await?;
            return Ok(true);
        }
        if header_bytes(session.req_header()) > self.config.limits.max_header_bytes {
            self.refuse(session, ctx, 431, "header_too_large", None).await?;
            return Ok(true);
        }
        let declared = session.req_header().headers.get(header::CONTENT_LENGTH);
        if let Some(len) = declared.and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u64>().ok())
            && len > self.config.limits.max_body_bytes
        {
            self.refuse(session, ctx, 413, "body_too_large", None).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The request as the backend gets it: HTTP/1.1, hop-by-hop headers removed,
    /// the forwarding headers and the request id set.
    fn upstream_request(&self, session: &mut ServerSession, ctx: &Ctx) -> Result<Box<RequestHeader>> {
        let has_body = !session.is_body_empty();
        let mut req = Box::new(session.req_header().clone());
        if req.version == Version::HTTP_2 {
            req.set_version(Version::HTTP_11);
            // HTTP/1 needs the body's framing and a Host header (HTTP/2 has neither).
            if has_body && req.headers.get(header::CONTENT_LENGTH).is_none() {
                req.insert_header(header::TRANSFER_ENCODING, "chunked")?;
            }
            if req.headers.get(header::HOST).is_none() {
                let host = req.uri.authority().map_or("", |a| a.as_str()).to_owned();
                req.insert_header(header::HOST, host)?;
            }
        }
        for name in strip_hop_by_hop(&req.headers) {
            req.remove_header(&name);
        }
        if let Some(ip) = client_ip(session) {
            let xff = match req.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip.to_string(),
            };
            req.insert_header("x-forwarded-for", xff)?;
        }
        req.insert_header("x-forwarded-proto", "http")?;
        req.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        Ok(req)
    }

    /// Serve one request. `Err` means the client's connection is broken (nothing
    /// more can be written to it); every other ending has been answered.
    async fn serve(&self, session: &mut ServerSession, ctx: &mut Ctx) -> Result<()> {
        if self.check(session, ctx).await? {
            return Ok(());
        }
        let method = session.req_header().method.clone();
        let has_body = !session.is_body_empty();
        let expect_continue = session
            .get_header(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let max_attempts = self.config.upstream.max_retries + 1;
        let mut continued = false;
        loop {
            if ctx.attempts > 0 {
                self.metrics.retried();
            }
            let picked = self.pool.pick(&ctx.tried, Instant::now(), |n| rand::rng().random_range(0..n));
            let Some(lease) = picked else {
                if ctx.tried.is_empty() {
                    self.metrics.rejected("no_backend");
                    ctx.rejected = Some("no_backend");
                    return self.respond(session, ctx, 503, "no_backend", None).await;
                }
                return self.gave_up(session, ctx).await;
            };
            ctx.attempts += 1;
            ctx.backend = Some(lease.backend.addr);
            let last = ctx.attempts >= max_attempts;
            // Made again for each attempt: cheaper than keeping a copy for retries.
            let req = self.upstream_request(session, ctx)?;
            let result = self.attempt(session, ctx, &lease, req, expect_continue, &mut continued).await;
            let failure = match result {
                Ok(()) => return Ok(()),
                Err(f) => f,
            };
            let AttemptError { error, sent } = failure;
            // The body was streamed to the backend, or the client went away: over.
            if error.esource() == &pingora_error::ErrorSource::Downstream {
                return Err(error);
            }
            let backend = &lease.backend;
            self.attempt_failed(backend, Instant::now());
            ctx.tried.push(backend.addr);
            drop(lease);
            tracing::debug!(request_id = %ctx.request_id, error = %error, sent, "attempt failed");
            ctx.error = Some(error);
            if !last && rules::may_retry(&method, has_body, sent, false) {
                continue;
            }
            return self.gave_up(session, ctx).await;
        }
    }

    /// No attempt succeeded: 504 if the last backend did not answer in time, else 502.
    async fn gave_up(&self, session: &mut ServerSession, ctx: &mut Ctx) -> Result<()> {
        let (status, code) = rules::gave_up(ctx.error.as_deref());
        self.respond(session, ctx, status, code, None).await
    }

    /// One attempt on `lease`'s backend. `Err` before anything was written to the
    /// client; once the answer's header is written, failures are the client's
    /// connection's (a downstream error).
    async fn attempt(
        &self,
        session: &mut ServerSession,
        ctx: &mut Ctx,
        lease: &Lease,
        req: Box<RequestHeader>,
        expect_continue: bool,
        continued: &mut bool,
    ) -> std::result::Result<(), AttemptError> {
        let backend = &lease.backend;
        let u = &self.config.upstream;
        let idle_for = Duration::from_secs(u.idle_timeout_secs);
        let not_sent = |error| AttemptError { error, sent: false };
        let sent = |error| AttemptError { error, sent: true };
        let (stream, fd) = match backend.idle.take(idle_for, Instant::now()) {
            Some(c) => c,
            None => {
                let tcp = upstream::connect(backend.addr, Duration::from_millis(u.connect_timeout_ms))
                    .await
                    .map_err(not_sent)?;
                let fd = upstream::fd(&tcp);
                let stream: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(tcp));
                (stream, fd)
            }
        };
        let mut up = ClientSession::new(stream);
        up.read_timeout = Some(Duration::from_millis(u.read_timeout_ms));
        up.write_timeout = Some(Duration::from_millis(u.read_timeout_ms));
        let sent_at = Instant::now();
        up.write_request_header(req).await.map_err(sent)?;

        if !session.is_body_empty() {
            if expect_continue && !*continued {
                *continued = true;
                session.write_continue_response().await.map_err(|e| sent(downstream(e)))?;
            }
            let mut upstream_error = None;
            loop {
                match session.read_request_body().await {
                    Ok(Some(chunk)) => {
                        let total = session.body_bytes_read() as u64;
                        if total > self.config.limits.max_body_bytes {
                            self.metrics.rejected("body_too_large");
                            ctx.rejected = Some("body_too_large");
                            // The backend saw part of a body: its connection goes.
                            drop(up);
                            self.respond(session, ctx, 413, "body_too_large", None)
                                .await
                                .map_err(|e| sent(downstream(e)))?;
                            return Ok(());
                        }
                        if upstream_error.is_none()
                            && let Err(e) = up.write_body(&chunk).await
                        {
                            // The backend may have answered early; read on below.
                            upstream_error = Some(e);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Err(sent(downstream(e))),
                }
            }
            if upstream_error.is_none() {
                up.finish_body().await.map_err(sent)?;
            }
        }

        // The answer's header (informational ones are dropped: `Expect` was answered
        // here, and no upgrade is forwarded).
        let (resp, mut end) = loop {
            match up.read_response_task().await.map_err(sent)? {
                HttpTask::Header(h, end) if !h.status.is_informational() => break (h, end),
                HttpTask::Header(..) => continue,
                _ => return Err(sent(Error::explain(ErrorType::InvalidHTTPHeader, "no response header"))),
            }
        };
        let now = Instant::now();
        let status = resp.status.as_u16();
        self.attempt_answered(backend, status, now.saturating_duration_since(sent_at), now);

        let mut resp = resp;
        for name in strip_hop_by_hop(&resp.headers) {
            resp.remove_header(&name);
        }
        resp.insert_header(REQUEST_ID, ctx.request_id.as_str()).map_err(sent)?;
        ctx.status = status;
        session.write_response_header(resp).await.map_err(|e| sent(downstream(e)))?;

        while !end {
            let chunk = match up.read_body_ref().await {
                Ok(chunk) => chunk,
                Err(e) => {
                    // Part of the answer is out: the client's connection must end.
                    return Err(sent(downstream(e)));
                }
            };
            let Some(bytes) = chunk else { break };
            let bytes = Bytes::copy_from_slice(bytes);
            end = up.is_body_done();
            session.write_response_body(bytes, false).await.map_err(|e| sent(downstream(e)))?;
        }
        session.finish_body().await.map_err(|e| sent(downstream(e)))?;
        up.respect_keepalive();
        if let Some(stream) = up.reuse().await {
            if backend.draining() {
                drop(stream);
            } else {
                backend.idle.put(stream, fd, u.keepalive_pool_size, Instant::now());
            }
        }
        Ok(())
    }

    /// One access-log line.
    fn log(&self, session: &ServerSession, ctx: &Ctx) {
        if !accesslog::enabled() {
            return;
        }
        let req = session.req_header();
        self.access_log.log(&accesslog::Entry {
            request_id: &ctx.request_id,
            client: client_ip(session),
            method: req.method.as_str(),
            path: req.uri.path(),
            status: ctx.status,
            backend: ctx.backend,
            attempts: ctx.attempts,
            rejected: ctx.rejected.unwrap_or(""),
            error: ctx.error.as_deref(),
            duration_ms: ctx.started.elapsed().as_secs_f64() * 1000.0,
        });
    }
}

/// Mark an error as the client's side's.
fn downstream(mut e: Box<Error>) -> Box<Error> {
    e.as_down();
    e
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
                    self.metrics.rejected("bad_request");
                    let _ = session.respond_error(400).await;
                }
                tracing::debug!(error = %e, "request header not read");
                session.shutdown().await;
                return None;
            }
        }
        let mut ctx = Ctx {
            started: Instant::now(),
            request_id: session
                .req_header()
                .headers
                .get(REQUEST_ID)
                .and_then(sane_request_id)
                .unwrap_or_else(new_request_id),
            tried: Vec::new(),
            attempts: 0,
            backend: None,
            status: 0,
            rejected: None,
            error: None,
        };
        let keepalive = (!*shutdown.borrow()).then_some(self.config.limits.idle_timeout_secs);
        session.set_keepalive(keepalive);
        let served = self.serve(&mut session, &mut ctx).await;
        if let Err(e) = served {
            tracing::debug!(request_id = %ctx.request_id, error = %e, "client connection broken");
            ctx.error = Some(e);
            self.log(&session, &ctx);
            session.shutdown().await;
            return None;
        }
        self.log(&session, &ctx);
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

/// The client's IP address.
fn client_ip(session: &ServerSession) -> Option<IpAddr> {
    session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
}
