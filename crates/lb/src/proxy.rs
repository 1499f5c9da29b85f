//! The proxy itself: pingora's `ProxyHttp` hooks, in the order a request meets them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use rand::Rng;

use crate::accesslog::{self, AccessLog};
use crate::config::LbConfig;
use crate::metrics::LbMetrics;
use crate::pool::{Backend, Lease, Outcome, Pool};
use crate::ratelimit::{RateLimiter, retry_after_secs};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), removed
/// in both directions. `Transfer-Encoding` is hop-by-hop too, but pingora frames
/// bodies itself from it, so it is left to pingora.
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "proxy-authorization"];

/// The request id header, carried LB → web → logs.
pub const REQUEST_ID: &str = "x-request-id";

/// What the load balancer shares between requests.
#[derive(Debug)]
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
}

/// One request's state across its attempts.
#[derive(Debug)]
pub struct Ctx {
    /// When the request's header was read.
    started: Instant,
    /// The request id (taken from a sane incoming header, or made).
    request_id: String,
    /// The current attempt's backend, counted in flight until dropped.
    lease: Option<Lease>,
    /// When the current attempt was sent (for its latency).
    sent_at: Option<Instant>,
    /// Backends already tried, not to be tried again.
    tried: Vec<SocketAddr>,
    /// The backend's answer status, once its header arrived.
    upstream_status: Option<u16>,
    /// Body bytes received from the client, against `max_body_bytes`.
    body_bytes: u64,
    /// Why the load balancer answered itself, if it did.
    rejected: Option<&'static str>,
    /// The last backend used (for the access log after the lease is gone).
    backend: Option<SocketAddr>,
}

fn new_request_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

/// An incoming id is kept if it is short and plain, so logs cannot be forged with it.
fn sane_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok =
        (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_owned())
}

/// Methods that are safe to send twice (RFC 9110 §9.2.2 lists PUT and DELETE too;
/// the web tier's PUT and DELETE are idempotent, but a request with a body cannot be
/// replayed from pingora's buffer reliably, so only these are retried after sending).
fn retryable_method(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The framing fields (`Content-Length`, `Transfer-Encoding`) of a request header
/// as the client sent it. Pingora's parsed header cannot be used: it already drops
/// `Content-Length` when `Transfer-Encoding` is present.
fn framing_fields(session: &Session) -> Vec<(Vec<u8>, Vec<u8>)> {
    let wanted =
        |n: &[u8]| n.eq_ignore_ascii_case(b"content-length") || n.eq_ignore_ascii_case(b"transfer-encoding");
    match session.as_downstream().as_http1() {
        Some(h1) => raw_fields(&h1.get_headers_raw_bytes(), wanted),
        None => session
            .req_header()
            .headers
            .iter()
            .filter(|(n, _)| wanted(n.as_str().as_bytes()))
            .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
    }
}

/// The `name: value` lines of a raw header whose names `wanted` accepts, in order.
fn raw_fields(raw: &[u8], wanted: impl Fn(&[u8]) -> bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw.split(|&b| b == b'\n')
        .skip(1) // the request line
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = &line[..colon];
            wanted(name).then(|| (name.to_ascii_lowercase(), line[colon + 1..].trim_ascii().to_vec()))
        })
        .collect()
}

/// Why a request's framing is ambiguous (request smuggling), if it is: both
/// `Content-Length` and `Transfer-Encoding`, more than one of either, a length
/// that is not a plain number, a transfer coding other than `chunked`.
pub fn smuggling(fields: &[(Vec<u8>, Vec<u8>)]) -> Option<&'static str> {
    let lengths: Vec<&[u8]> =
        fields.iter().filter(|(n, _)| n == b"content-length").map(|(_, v)| &v[..]).collect();
    let te: Vec<&[u8]> =
        fields.iter().filter(|(n, _)| n == b"transfer-encoding").map(|(_, v)| &v[..]).collect();
    if !lengths.is_empty() && !te.is_empty() {
        return Some("Content-Length with Transfer-Encoding");
    }
    if lengths.len() > 1 {
        return Some("more than one Content-Length");
    }
    if let Some(v) = lengths.first()
        && (v.is_empty() || !v.iter().all(u8::is_ascii_digit))
    {
        return Some("Content-Length is not a number");
    }
    if te.len() > 1 {
        return Some("more than one Transfer-Encoding");
    }
    if let Some(v) = te.first()
        && !v.eq_ignore_ascii_case(b"chunked")
    {
        return Some("Transfer-Encoding other than chunked");
    }
    None
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

/// Remove hop-by-hop headers, and those the `Connection` header names.
fn strip_hop_by_hop(headers: &HeaderMap) -> Vec<HeaderName> {
    // Most requests have none of them: no allocation then.
    let mut names: Vec<HeaderName> =
        HOP_BY_HOP.iter().filter(|n| headers.contains_key(**n)).map(|n| HeaderName::from_static(n)).collect();
    for v in headers.get_all(header::CONNECTION) {
        for token in v.to_str().unwrap_or("").split(',') {
            if let Ok(n) = HeaderName::from_bytes(token.trim().as_bytes())
                && n != header::TRANSFER_ENCODING
                && n != header::CONTENT_LENGTH
            {
                names.push(n);
            }
        }
    }
    names.retain(|n| headers.contains_key(n));
    names
}

impl Proxy {
    /// Answer the request from the load balancer and close the connection.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        reason: &'static str,
        extra: Option<(&'static str, String)>,
    ) -> Result<bool> {
        self.metrics.rejected(reason);
        ctx.rejected = Some(reason);
        let body = Bytes::from(format!("{{\"error\":{{\"code\":\"{reason}\",\"message\":\"{reason}\"}}}}"));
        let mut resp = ResponseHeader::build(status, Some(4))?;
        resp.insert_header(header::CONTENT_TYPE, "application/json")?;
        resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
        resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        if let Some((name, value)) = extra {
            resp.insert_header(name, value)?;
        }
        // The rest of the request (a body, maybe framed ambiguously) is never read:
        // the connection cannot be reused.
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await?;
        Ok(true)
    }

    /// Passive checks: count the outcome, eject the backend if it keeps failing.
    fn record(&self, backend: &Backend, outcome: Outcome, now: Instant) {
        if let Some(length) = self.pool.record(backend, outcome, now) {
            self.metrics.ejected(backend.addr);
            tracing::warn!(backend = %backend.addr, ejected_ms = length.as_millis() as u64, "backend ejected");
        }
    }

    /// Give up the current attempt's backend after a failure, recording it.
    fn attempt_failed(&self, ctx: &mut Ctx) {
        if let Some(lease) = ctx.lease.take() {
            let b = &lease.backend;
            let seconds = ctx.sent_at.map(|t| t.elapsed().as_secs_f64());
            self.metrics.attempt(b.addr, true, seconds);
            self.record(b, Outcome::Failure, Instant::now());
            ctx.tried.push(b.addr);
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            request_id: String::new(),
            lease: None,
            sent_at: None,
            tried: Vec::new(),
            upstream_status: None,
            body_bytes: 0,
            rejected: None,
            backend: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.started = Instant::now();
        ctx.request_id = session
            .req_header()
            .headers
            .get(REQUEST_ID)
            .and_then(sane_request_id)
            .unwrap_or_else(new_request_id);
        session.set_keepalive(Some(self.config.limits.idle_timeout_secs));
        if let Some(limiter) = &self.limiter
            && let Some(ip) = client_ip(session)
            && let Err(wait) = limiter.check(&ip, Instant::now())
        {
            let after = retry_after_secs(wait).to_string();
            return self.refuse(session, ctx, 429, "rate_limited", Some(("retry-after", after))).await;
        }
        if let Some(why) = smuggling(&framing_fields(session)) {
            tracing::warn!(request_id = %ctx.request_id, why, "ambiguous request framing refused");
            return self.refuse(session, ctx, 400, "smuggling", None).await;
        }
        if header_bytes(session.req_header()) > self.config.limits.max_header_bytes {
            return self.refuse(session, ctx, 431, "header_too_large", None).await;
        }
        let declared = session.req_header().headers.get(header::CONTENT_LENGTH);
        if let Some(len) = declared.and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u64>().ok())
            && len > self.config.limits.max_body_bytes
        {
            return self.refuse(session, ctx, 413, "body_too_large", None).await;
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > self.config.limits.max_body_bytes {
                self.metrics.rejected("body_too_large");
                ctx.rejected = Some("body_too_large");
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        if !ctx.tried.is_empty() {
            self.metrics.retried();
        }
        let mut rng = rand::rng();
        let lease = self.pool.pick(&ctx.tried, Instant::now(), |n| rng.random_range(0..n));
        let Some(lease) = lease else {
            let status = if ctx.tried.is_empty() { 503 } else { 502 };
            if ctx.tried.is_empty() {
                self.metrics.rejected("no_backend");
            }
            return Error::e_explain(ErrorType::HTTPStatus(status), "no backend to try");
        };
        let addr = lease.backend.addr;
        ctx.backend = Some(addr);
        ctx.lease = Some(lease);
        let u = &self.config.upstream;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(Duration::from_millis(u.connect_timeout_ms));
        peer.options.read_timeout = Some(Duration::from_millis(u.read_timeout_ms));
        peer.options.idle_timeout = Some(Duration::from_secs(u.idle_timeout_secs));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        for name in strip_hop_by_hop(&upstream.headers) {
            upstream.remove_header(&name);
        }
        if let Some(ip) = client_ip(session) {
            let xff = match upstream.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip.to_string(),
            };
            upstream.insert_header("x-forwarded-for", xff)?;
        }
        upstream.insert_header("x-forwarded-proto", "http")?;
        upstream.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        ctx.sent_at = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = upstream.status.as_u16();
        ctx.upstream_status = Some(status);
        if let Some(lease) = &ctx.lease {
            let now = Instant::now();
            let b = &lease.backend;
            let latency = ctx.sent_at.map(|t| now.saturating_duration_since(t));
            let failed = status >= 500;
            self.metrics.attempt(b.addr, failed, latency.map(|d| d.as_secs_f64()));
            if let Some(l) = latency {
                b.observe_latency(l, now);
            }
            self.record(b, if failed { Outcome::Failure } else { Outcome::Success }, now);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        for name in strip_hop_by_hop(&resp.headers) {
            resp.remove_header(&name);
        }
        resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent: any request may go to another backend.
        self.attempt_failed(ctx);
        e.set_retry(true);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("backend {peer}"));
        let upstream_fault = matches!(e.esource(), ErrorSource::Upstream);
        if upstream_fault && ctx.upstream_status.is_none() {
            self.attempt_failed(ctx);
        }
        // Sent once: only a safe method with nothing of the answer passed on yet may
        // be tried again, elsewhere.
        let retry = upstream_fault
            && ctx.upstream_status.is_none()
            && retryable_method(&session.req_header().method)
            && !session.as_ref().retry_buffer_truncated();
        e.set_retry(retry);
        e
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
        // The request is over: its backend no longer counts it in flight.
        drop(ctx.lease.take());
        if !accesslog::enabled() {
            return;
        }
        let req = session.req_header();
        self.access_log.log(&accesslog::Entry {
            request_id: &ctx.request_id,
            client: client_ip(session),
            method: req.method.as_str(),
            path: req.uri.path(),
            status,
            backend: ctx.backend,
            attempts: ctx.tried.len() + usize::from(ctx.upstream_status.is_some()),
            rejected: ctx.rejected.unwrap_or(""),
            error: e,
            duration_ms: ctx.started.elapsed().as_secs_f64() * 1000.0,
        });
    }
}

/// The client's IP address.
fn client_ip(session: &Session) -> Option<IpAddr> {
    session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn smuggling_shapes() {
        let fields = |text: &str| {
            let raw = format!("POST / HTTP/1.1\r\nHost: x\r\n{text}\r\n");
            raw_fields(raw.as_bytes(), |n| {
                n.eq_ignore_ascii_case(b"content-length") || n.eq_ignore_ascii_case(b"transfer-encoding")
            })
        };
        assert_eq!(smuggling(&fields("Content-Length: 5\r\n")), None);
        assert_eq!(smuggling(&fields("transfer-encoding: Chunked\r\n")), None);
        for bad in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\ncontent-length: 6\r\n",
            "Content-Length: 5, 6\r\n",
            "Content-Length: +5\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ] {
            assert!(smuggling(&fields(bad)).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let h = headers(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("host", "a"),
        ]);
        let mut names: Vec<String> = strip_hop_by_hop(&h).iter().map(|n| n.to_string()).collect();
        names.sort();
        assert_eq!(names, ["connection", "keep-alive", "x-secret"]);
    }

    #[test]
    fn request_ids() {
        assert_eq!(sane_request_id(&HeaderValue::from_static("abc-123")).as_deref(), Some("abc-123"));
        assert_eq!(sane_request_id(&HeaderValue::from_static("a b")), None);
        assert_eq!(new_request_id().len(), 32);
    }
}
