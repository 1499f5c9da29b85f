//! One request's way through the load balancer, written once for HTTP/1 and HTTP/2:
//! the checks (`Proxy::check`: rate limit, method, smuggling shapes, sizes), a
//! backend picked, attempts on it, the retry rule ([`rules::may_retry`]), passive
//! health and per-backend metrics (`Proxy::attempt_failed`,
//! `Proxy::attempt_answered`) and the access log line (`Proxy::log`).
//!
//! What differs between the protocols sits behind `Exchange`, called with static
//! dispatch: how a request is sent to a backend and its answer's head read
//! (`Exchange::send`), how the answer is passed back (`Exchange::relay`), how
//! the load balancer answers itself (`Exchange::respond`). [`crate::h1`] and
//! [`crate::h2`] implement it; how a head is read from the client is theirs too,
//! before the pipeline starts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use pingora_core::apps::HttpServerOptions;
use pingora_error::{Error, ErrorType};
use rand::Rng;

use crate::accesslog::{self, AccessLog};
use crate::config::LbConfig;
use crate::metrics::LbMetrics;
use crate::pool::{Backend, Outcome, Pool};
use crate::ratelimit::{RateLimiter, retry_after_secs};
use crate::rules::{self, Declared};

/// What the load balancer shares between requests.
pub struct Proxy {
    /// The backends.
    pub pool: Arc<Pool>,
    /// The settings.
    pub config: LbConfig,
    /// The metrics.
    pub metrics: LbMetrics,
    /// Per-client token buckets, when configured (one set for both public
    /// listeners).
    pub limiter: Option<Arc<RateLimiter<IpAddr>>>,
    /// One line per request.
    pub access_log: Arc<AccessLog>,
    /// Pingora's server options: HTTP/2 with prior knowledge is accepted.
    pub options: HttpServerOptions,
    /// Which public listener this is: what the backend is told of the scheme,
    /// HSTS, or the redirect to HTTPS.
    pub entry: Entry,
}

/// Which public listener a [`Proxy`] serves, and what that changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Plain HTTP serving the app (no TLS configured).
    Http,
    /// HTTPS: the backend gets `X-Forwarded-Proto: https`, answers get
    /// `Strict-Transport-Security: max-age=hsts_max_age_secs` (unless 0).
    Https {
        /// HSTS' `max-age` (0: no header).
        hsts_max_age_secs: u64,
    },
    /// Plain HTTP while HTTPS is configured: every request is answered with a
    /// redirect (308) to the same host and target on HTTPS at `port`.
    RedirectToHttps {
        /// The HTTPS port the redirects name.
        port: u16,
    },
}

impl Entry {
    /// What `X-Forwarded-Proto` tells the backend.
    pub fn scheme(self) -> &'static str {
        match self {
            Entry::Https { .. } => "https",
            Entry::Http | Entry::RedirectToHttps { .. } => "http",
        }
    }

    /// The HSTS `max-age` answers carry, if any.
    pub fn hsts(self) -> Option<u64> {
        match self {
            Entry::Https { hsts_max_age_secs } if hsts_max_age_secs > 0 => Some(hsts_max_age_secs),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.config)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// An answer of the load balancer's own, instead of a backend's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The status sent.
    pub status: u16,
    /// The error code in the body (and the `rejected` metric's reason).
    pub code: &'static str,
    /// Seconds for a `Retry-After` header (rate limited).
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// `status` with `code`, no `Retry-After`.
    pub const fn new(status: u16, code: &'static str) -> Refusal {
        Refusal { status, code, retry_after: None }
    }
}

/// What the shared checks look at in a request's head.
#[derive(Debug)]
pub(crate) struct HeadFacts<'a> {
    /// The client's address: the rate limit's key.
    pub client: Option<IpAddr>,
    /// The method (`CONNECT` is refused).
    pub method: &'a Method,
    /// The request target's path (and query): internal paths are refused.
    pub path: &'a str,
    /// The body framing the header fields declare, or why it is ambiguous.
    pub declared: Result<Declared<'a>, &'static str>,
    /// The head's size in bytes (as it came, or close to it).
    pub header_bytes: usize,
}

/// One request's state across its attempts: what the access log says of it.
#[derive(Debug)]
pub(crate) struct Request {
    /// When its head was read: the access log's duration starts here, and the
    /// first backend is picked with this clock reading.
    pub started: Instant,
    /// The request id (a sane incoming one, or made): sent to the backend, given
    /// back to the client, logged.
    pub request_id: String,
    /// The client's IP address.
    pub client: Option<IpAddr>,
    /// Backends already tried and failed, not to be tried again.
    pub tried: Vec<SocketAddr>,
    /// Attempts made (connections tried, the last one included).
    pub attempts: usize,
    /// The last backend used.
    pub backend: Option<SocketAddr>,
    /// The status sent to the client (0: none).
    pub status: u16,
    /// Why the load balancer answered itself, or "".
    pub rejected: &'static str,
    /// What went wrong, if anything.
    pub error: Option<Box<Error>>,
}

impl Request {
    /// A request whose head was read at `started`.
    pub fn new(started: Instant, request_id: String, client: Option<IpAddr>) -> Request {
        Request {
            started,
            request_id,
            client,
            tried: Vec::new(),
            attempts: 0,
            backend: None,
            status: 0,
            rejected: "",
            error: None,
        }
    }
}

/// Why an attempt could not go on.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The client's side: nothing more can be written to it.
    Client(Box<Error>),
    /// The client's request went wrong on the way (its body too large or badly
    /// framed): answered with the refusal, then the connection is closed.
    Refused(Refusal, Box<Error>),
    /// The backend's side.
    Backend {
        /// What happened.
        error: Box<Error>,
        /// Whether any of the request reached the backend.
        sent: bool,
        /// Whether any of the answer reached the client (then its connection
        /// must be closed).
        passed_on: bool,
    },
}

impl Failure {
    /// The backend failed before any of the request reached it.
    pub fn not_sent(error: Box<Error>) -> Failure {
        Failure::Backend { error, sent: false, passed_on: false }
    }

    /// The backend failed after (some of) the request reached it, before any of
    /// its answer went on.
    pub fn sent(error: Box<Error>) -> Failure {
        Failure::Backend { error, sent: true, passed_on: false }
    }

    /// The backend failed after part of its answer went on to the client.
    pub fn mid_answer(error: Box<Error>) -> Failure {
        Failure::Backend { error, sent: true, passed_on: true }
    }

    /// The request's body is refused on the way: `status` and `code`, for `why`.
    pub fn refused(status: u16, code: &'static str, why: &'static str) -> Failure {
        Failure::Refused(Refusal::new(status, code), Error::explain(ErrorType::HTTPStatus(status), why))
    }
}

/// A backend's answer whose head has arrived, well formed.
#[derive(Debug)]
pub(crate) struct Sent<A> {
    /// Its status.
    pub status: u16,
    /// When the request started going to the backend (its latency starts here).
    pub sent_at: Instant,
    /// What the protocol needs to pass the answer on.
    pub answer: A,
}

/// What becomes of the client's connection after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// It may carry another request.
    KeepGoing,
    /// It is closed after the answer written.
    Close,
    /// Nothing more can be written to it (the client went away, or an answer
    /// broke off midway): it is cut.
    Broken,
}

/// The protocol-specific half of one request: what the pipeline asks of HTTP/1
/// and HTTP/2.
pub(crate) trait Exchange {
    /// What [`Exchange::relay`] needs of an answer whose head has arrived.
    type Answer;

    /// The request's method.
    fn method(&self) -> &Method;

    /// The request's path, for the access log.
    fn path(&self) -> &str;

    /// Whether the request has a body (then, once sent, it is never sent again).
    fn has_body(&self) -> bool;

    /// Send the request to `backend` and read its answer's head. A well-formed
    /// head is `Ok`; nothing of it has reached the client yet.
    async fn send(
        &mut self,
        proxy: &Proxy,
        req: &Request,
        backend: &Backend,
    ) -> Result<Sent<Self::Answer>, Failure>;

    /// Pass the answer on to the client; `answered_at` is when its head arrived.
    /// A failure here is the client's, or the backend's after part of the answer
    /// went on; neither is retried.
    async fn relay(
        &mut self,
        proxy: &Proxy,
        backend: &Backend,
        answer: Self::Answer,
        answered_at: Instant,
    ) -> Result<Next, Failure>;

    /// Write an answer of the load balancer's own; the client's connection is
    /// closed after it.
    async fn respond(&mut self, req: &Request, refusal: Refusal) -> Result<(), Box<Error>>;
}

impl Proxy {
    /// The checks every request passes before a backend is picked, in order:
    /// rate limit (429), `CONNECT` (405), an internal path (404,
    /// [`rules::INTERNAL_PATHS`]: probes, metrics and admin APIs are for the
    /// private network), ambiguous framing (400: request smuggling), header size
    /// (431), declared body size (413). Returns the
    /// declared `Content-Length`, if any. `now` is the rate limit's clock.
    pub(crate) fn check(&self, head: &HeadFacts<'_>, now: Instant) -> Result<Option<u64>, Refusal> {
        let limits = &self.config.limits;
        if let Some(limiter) = &self.limiter
            && let Some(ip) = head.client
            && let Err(wait) = limiter.check(&ip, now)
        {
            let refusal = Refusal::new(429, "rate_limited");
            return Err(Refusal { retry_after: Some(retry_after_secs(wait)), ..refusal });
        }
        if *head.method == Method::CONNECT {
            return Err(Refusal::new(405, "method_not_allowed"));
        }
        if rules::is_internal(head.path) {
            return Err(Refusal::new(404, "not_found"));
        }
        let length = match head.declared {
            Err(why) => {
                tracing::warn!(why, "ambiguous request framing refused");
                return Err(Refusal::new(400, "smuggling"));
            }
            Ok(Declared::Length(v)) => {
                let len = std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok());
                Some(len.ok_or(Refusal::new(400, "smuggling"))?)
            }
            Ok(Declared::Nothing | Declared::Chunked) => None,
        };
        // HTTP/1 heads are bounded as they are read (`h1::conn`), so only HTTP/2's
        // can be refused here; the limit is the same.
        if head.header_bytes > limits.max_header_bytes {
            return Err(Refusal::new(431, "header_too_large"));
        }
        if length.is_some_and(|len| len > limits.max_body_bytes) {
            return Err(Refusal::new(413, "body_too_large"));
        }
        Ok(length)
    }

    /// Count a refusal and note it in the request's log.
    pub(crate) fn refused(&self, req: &mut Request, refusal: Refusal) {
        self.metrics.rejected(refusal.code);
        req.rejected = refusal.code;
    }

    /// Serve a request whose head passed the checks (`checked`; a refused one is
    /// answered with its refusal): pick a backend, attempt, retry on another while
    /// [`rules::may_retry`] allows, answer 502/503/504 when none answered; then
    /// one access-log line.
    pub(crate) async fn serve<E: Exchange>(
        &self,
        ex: &mut E,
        req: &mut Request,
        checked: Result<(), Refusal>,
    ) -> Next {
        let next = match checked {
            Ok(()) => self.attempts(ex, req).await,
            Err(refusal) => {
                self.refused(req, refusal);
                self.answer(ex, req, refusal).await
            }
        };
        self.log(req, ex.method().as_str(), ex.path());
        next
    }

    /// Attempts on backends until one answers or the retry rule says no more.
    async fn attempts<E: Exchange>(&self, ex: &mut E, req: &mut Request) -> Next {
        let max_attempts = self.config.upstream.max_retries + 1;
        loop {
            if req.attempts > 0 {
                self.metrics.retried();
            }
            let now = if req.attempts == 0 { req.started } else { Instant::now() };
            let Some(lease) = self.pool.pick(&req.tried, now, |n| rand::rng().random_range(0..n)) else {
                let (status, code) = rules::gave_up(req.error.as_deref());
                let refusal = Refusal::new(status, code);
                if req.error.is_none() {
                    self.refused(req, refusal);
                }
                return self.answer(ex, req, refusal).await;
            };
            let backend = &lease.backend;
            req.attempts += 1;
            req.backend = Some(backend.addr);
            let failure = match self.attempt(ex, req, backend).await {
                Ok(next) => return next,
                Err(failure) => failure,
            };
            match failure {
                Failure::Client(error) => {
                    req.error = Some(error);
                    return Next::Broken;
                }
                Failure::Refused(refusal, error) => {
                    req.error = Some(error);
                    self.refused(req, refusal);
                    return self.answer(ex, req, refusal).await;
                }
                Failure::Backend { error, sent, passed_on } => {
                    self.attempt_failed(backend, Instant::now());
                    tracing::debug!(request_id = %req.request_id, error = %error, sent, "attempt failed");
                    req.error = Some(error);
                    let retry = rules::may_retry(ex.method(), ex.has_body(), sent, passed_on);
                    if retry && req.attempts < max_attempts {
                        req.tried.push(backend.addr);
                        continue;
                    }
                    if passed_on {
                        // Part of the answer went on: nothing more can be written.
                        return Next::Broken;
                    }
                    let (status, code) = rules::gave_up(req.error.as_deref());
                    return self.answer(ex, req, Refusal::new(status, code)).await;
                }
            }
        }
    }

    /// One attempt on `backend`: send, record the answer's head, pass it on.
    async fn attempt<E: Exchange>(
        &self,
        ex: &mut E,
        req: &mut Request,
        backend: &Backend,
    ) -> Result<Next, Failure> {
        let Sent { status, sent_at, answer } = ex.send(self, req, backend).await?;
        let now = Instant::now();
        self.attempt_answered(backend, status, now.saturating_duration_since(sent_at), now);
        req.status = status;
        ex.relay(self, backend, answer, now).await
    }

    /// Write an answer of the load balancer's own.
    async fn answer<E: Exchange>(&self, ex: &mut E, req: &mut Request, refusal: Refusal) -> Next {
        req.status = refusal.status;
        match ex.respond(req, refusal).await {
            Ok(()) => Next::Close,
            Err(e) => {
                req.error.get_or_insert(e);
                Next::Broken
            }
        }
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

    /// The request's access-log line (`method` and `path` "" when its head did not
    /// parse).
    pub(crate) fn log(&self, req: &Request, method: &str, path: &str) {
        if !accesslog::enabled() {
            return;
        }
        self.access_log.log(&accesslog::Entry {
            request_id: &req.request_id,
            client: req.client,
            method,
            path,
            status: req.status,
            backend: req.backend,
            attempts: req.attempts,
            rejected: req.rejected,
            error: req.error.as_deref(),
            duration_ms: req.started.elapsed().as_secs_f64() * 1000.0,
        });
    }
}
