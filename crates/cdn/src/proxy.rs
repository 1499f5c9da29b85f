//! The edge's request path: pingora-proxy's phases, with HTTP caching as RFC 9111
//! says.
//!
//! pingora-cache does the mechanics: lookups, serving hits (with `Age`, ranges,
//! `HEAD`, conditional requests answered 304 from the cache), revalidating a stale
//! object with its validators and updating it from a 304, `Vary` slots, one
//! origin fetch per object for concurrent misses (its cache lock),
//! stale-while-revalidate in the background. This module decides policy:
//! what is cacheable and for how long ([`freshness`]), the key, what stale may be
//! served, and the invalidation an unsafe method causes.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::{HeaderValue, Method, header};
use pingora_cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora_cache::key::HashBinary;
use pingora_cache::lock::CacheKeyLockImpl;
use pingora_cache::storage::HitHandler;
use pingora_cache::{
    CacheKey, CacheMeta, CachePhase, ForcedFreshness, NoCacheReason, RespCacheable, VarianceBuilder,
};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};

use crate::metrics::{Kind, Metrics, Outcome};
use crate::store::{EdgeStore, Hit};

/// The edge: where misses go and where objects are kept.
pub struct Edge {
    /// The origin servers (at least one), and which to ask next.
    pub(crate) origins: OriginTurns,
    /// The memory tier.
    pub(crate) store: &'static EdgeStore,
    /// Coalesces concurrent misses of one object into one origin fetch.
    pub(crate) lock: &'static CacheKeyLockImpl,
    /// Larger responses pass through uncached.
    pub(crate) max_object_bytes: usize,
    /// Origin connect timeout.
    pub(crate) connect_timeout: Duration,
    /// Origin read timeout.
    pub(crate) read_timeout: Duration,
    /// The cap on heuristic freshness (zero: none).
    pub(crate) max_heuristic: Duration,
    /// What it counts.
    pub(crate) metrics: Metrics,
    /// Origin fetches in flight, bounded: a herd of misses for different objects
    /// (after a purge, a cold start) cannot swamp the origin.
    pub(crate) origin_slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// How long a request waits for an origin slot before it is answered 503.
    pub(crate) origin_queue: Duration,
    /// The largest request head (target and headers) accepted.
    pub(crate) max_request_head: usize,
    /// The path prefixes the edge serves (empty: every path); others are
    /// answered 404 without reaching the origin.
    pub(crate) paths: Vec<String>,
    /// Whether the request's host is part of the cache key.
    pub(crate) host_in_key: bool,
}

/// The origin servers, taken in turn.
///
/// Round robin rather than a hash of the cache key: the edge already makes one
/// origin fetch per object (its cache, and its lock for concurrent misses), so
/// sending an object's misses to the same origin would buy little, while a hash
/// would pin a hot object that passes uncached (or its revalidations) to one
/// server; the origins are the DC's stateless web servers, any of which serves
/// any request. A request's fetch starts at the next origin in turn and, when
/// connecting fails (nothing sent, so any request may be retried), moves on to
/// the following one, trying each origin at most once.
pub(crate) struct OriginTurns {
    /// The addresses (at least one: the configuration is validated).
    pub(crate) addrs: Vec<SocketAddr>,
    /// The number of fetches started: where the next one starts.
    next: std::sync::atomic::AtomicUsize,
}

impl OriginTurns {
    /// Take turns among `addrs` (at least one).
    pub(crate) fn new(addrs: Vec<SocketAddr>) -> OriginTurns {
        assert!(!addrs.is_empty(), "validated: at least one origin");
        OriginTurns { addrs, next: std::sync::atomic::AtomicUsize::new(0) }
    }

    /// The origin a request's next attempt goes to: on its first, the next in
    /// turn; on each retry, the one after the last it tried.
    pub(crate) fn pick(&self, ctx: &mut Ctx) -> SocketAddr {
        let n = self.addrs.len();
        if ctx.origin_attempts == 0 && n > 1 {
            ctx.origin_first = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
        }
        let addr = self.addrs[(ctx.origin_first + ctx.origin_attempts) % n];
        ctx.origin_attempts += 1;
        ctx.origin = Some(addr);
        addr
    }
}

/// Why a request is refused before it reaches the cache or the origin.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A dot segment (`.`/`..`, raw or percent-encoded), a backslash or a control
    /// character in the path: the same object could be named many ways, or a
    /// path normalized differently by the origin (cache key confusion).
    Path,
    /// The request head is larger than allowed.
    HeadTooLarge,
    /// The path is outside every prefix the edge serves (`paths`): not the
    /// origin's to answer through this edge.
    NotServed,
}

impl Refusal {
    /// The status it is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Path => 400,
            Refusal::HeadTooLarge => 431,
            Refusal::NotServed => 404,
        }
    }
}

/// Whether a request may go on: its path is in one normal spelling, under one of
/// `served` (any path when it is empty), and its head within `max_head` bytes.
pub fn check_request(req: &RequestHeader, max_head: usize, served: &[String]) -> Result<(), Refusal> {
    let target = req.uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + req.uri.authority().map_or(0, |a| a.as_str().len());
    let head =
        target + req.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum::<usize>();
    if head > max_head {
        return Err(Refusal::HeadTooLarge);
    }
    let path = req.uri.path();
    if path.bytes().any(|b| b.is_ascii_control() || b == b'\\') {
        return Err(Refusal::Path);
    }
    let dot_segment = |p: &str| p.split('/').any(|segment| segment == "." || segment == "..");
    // Percent-encoded dots and slashes would hide a dot segment (checked only
    // when there is an escape: the usual path costs no allocation).
    let hidden = || {
        let lower = path.to_ascii_lowercase();
        dot_segment(&lower.replace("%2e", ".").replace("%2f", "/").replace("%5c", "/"))
    };
    if dot_segment(path) || (path.contains('%') && hidden()) {
        return Err(Refusal::Path);
    }
    if !served.is_empty() && !served.iter().any(|prefix| path.starts_with(prefix.as_str())) {
        return Err(Refusal::NotServed);
    }
    Ok(())
}

/// The cache key's primary part: the request's authority (unless `with_host` is
/// off) and path with query.
fn primary_key(req: &RequestHeader, with_host: bool) -> String {
    let path = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    if !with_host {
        return path.to_owned();
    }
    let host = req
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    format!("{}{path}", host.to_ascii_lowercase())
}

/// Status codes whose responses may be given heuristic freshness ("heuristically
/// cacheable", RFC 9110 §15.1).
fn heuristically_cacheable(status: u16) -> bool {
    matches!(status, 200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// Whether a response may be stored, and until when it is fresh: RFC 9111 §3 and
/// §4.2, for a shared cache.
///
/// - Not stored: `no-store`, `private`, a request with `Authorization` unless
///   the response allows it (`public`, `s-maxage`, `must-revalidate`), a
///   response with `Set-Cookie` (one user's cookie must not reach another), and
///   a status that is neither explicitly fresh nor heuristically cacheable.
/// - The freshness lifetime: `s-maxage`, else `max-age`, else `Expires − Date`,
///   else heuristically a tenth of `Date − Last-Modified` (at most
///   `max_heuristic`); `no-cache` stores it stale (every use revalidates).
/// - Its age at arrival (`Age`) counts against the lifetime: the meta is dated
///   back by it, so the `Age` the edge sends includes the origin's.
pub fn freshness(
    resp: &ResponseHeader,
    authorization: bool,
    now: SystemTime,
    max_heuristic: Duration,
) -> RespCacheable {
    let uncacheable = || RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    let cc = CacheControl::from_resp_headers(resp);
    if cc.as_ref().is_some_and(|cc| cc.is_cacheable() == Cacheable::No) {
        return uncacheable();
    }
    if authorization && !cc.as_ref().is_some_and(|cc| cc.allow_caching_authorized_req()) {
        return uncacheable();
    }
    if resp.headers.contains_key(header::SET_COOKIE) {
        return uncacheable();
    }
    let date = http_date(resp, header::DATE).unwrap_or(now);
    let explicit = cc.as_ref().and_then(|cc| cc.fresh_duration()).or_else(|| expires_lifetime(resp, date));
    let lifetime = match explicit {
        Some(lifetime) => lifetime,
        None => {
            let status = resp.status.as_u16();
            let last_modified = http_date(resp, header::LAST_MODIFIED);
            match last_modified {
                Some(lm) if heuristically_cacheable(status) && !max_heuristic.is_zero() => {
                    (date.duration_since(lm).unwrap_or_default() / 10).min(max_heuristic)
                }
                _ => return uncacheable(),
            }
        }
    };
    let age = resp
        .headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let created = now.checked_sub(age).unwrap_or(now);
    // A zero lifetime is stale at once (pingora-cache's convention: a second ago).
    let fresh_until = if lifetime.is_zero() {
        created.checked_sub(Duration::from_secs(1)).unwrap_or(created)
    } else {
        created + lifetime
    };
    let (swr, sie) = match &cc {
        Some(cc) => (
            cc.serve_stale_while_revalidate_duration().unwrap_or_default(),
            cc.serve_stale_if_error_duration().unwrap_or_default(),
        ),
        None => (Duration::ZERO, Duration::ZERO),
    };
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let mut header = resp.clone();
    if let Some(cc) = &cc {
        cc.strip_private_headers(&mut header);
    }
    RespCacheable::Cacheable(CacheMeta::new(fresh_until, created, secs(swr), secs(sie), header))
}

/// A header holding an HTTP date, if present once and valid.
fn http_date(resp: &ResponseHeader, name: header::HeaderName) -> Option<SystemTime> {
    let mut values = resp.headers.get_all(name).iter();
    let (Some(v), None) = (values.next(), values.next()) else { return None };
    httpdate::parse_http_date(v.to_str().ok()?).ok()
}

/// `Expires − Date`; an invalid or repeated `Expires` means already expired (RFC
/// 9111 §5.3).
fn expires_lifetime(resp: &ResponseHeader, date: SystemTime) -> Option<Duration> {
    let count = resp.headers.get_all(header::EXPIRES).iter().count();
    if count == 0 {
        return None;
    }
    Some(http_date(resp, header::EXPIRES).and_then(|e| e.duration_since(date).ok()).unwrap_or_default())
}

/// Whether a method may be answered from the cache.
fn cacheable_method(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Whether a method is unsafe: its success invalidates what the cache holds for
/// its URL (RFC 9111 §4.4).
fn unsafe_method(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// Per request.
#[derive(Debug, Default)]
pub struct Ctx {
    /// The origin this request's fetch asks (the last one tried).
    origin: Option<SocketAddr>,
    /// The origins tried for it, in [`OriginTurns::pick`]'s order.
    origin_attempts: usize,
    /// Where in the origin list its attempts started.
    origin_first: usize,
    /// The request carried `Authorization`.
    authorization: bool,
    /// What the cache did, once the response header is known.
    outcome: Option<Outcome>,
    /// This request's origin slot, held until it ends.
    origin_slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// When the request's header was read (for the access log).
    started: Option<std::time::Instant>,
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.started = Some(std::time::Instant::now());
        match check_request(session.req_header(), self.max_request_head, &self.paths) {
            Ok(()) => Ok(false),
            Err(refusal) => {
                tracing::debug!(?refusal, path = session.req_header().uri.path(), "request refused");
                session.respond_error(refusal.status()).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        if ctx.origin_slot.is_none() {
            let slot =
                tokio::time::timeout(self.origin_queue, self.origin_slots.clone().acquire_owned()).await;
            match slot {
                Ok(Ok(permit)) => ctx.origin_slot = Some(permit),
                _ => {
                    self.metrics.origin_busy.inc();
                    return Err(Error::explain(ErrorType::HTTPStatus(503), "every origin slot is busy"));
                }
            }
        }
        let origin = self.origins.pick(ctx);
        let mut peer = HttpPeer::new(origin, false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.write_timeout = Some(self.read_timeout);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.metrics.origin_connect_failed(ctx.origin);
        // Nothing was sent: another origin may take it, each one tried at most once.
        let again = ctx.origin_attempts < self.origins.addrs.len();
        tracing::debug!(origin = %peer, error = %e, again, "cannot connect to an origin");
        e.set_retry(again);
        e
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let req = session.req_header();
        ctx.authorization = req.headers.contains_key(header::AUTHORIZATION);
        if !cacheable_method(&req.method) {
            return Ok(());
        }
        session.cache.enable(self.store, None, None, Some(self.lock), None);
        session.cache.set_max_file_size_bytes(self.max_object_bytes);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, _ctx: &mut Ctx) -> Result<CacheKey> {
        Ok(CacheKey::new("", primary_key(session.req_header(), self.host_in_key), ""))
    }

    fn cache_vary_filter(&self, meta: &CacheMeta, _ctx: &mut Ctx, req: &RequestHeader) -> Option<HashBinary> {
        let mut names: Vec<String> = meta
            .headers()
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect();
        if names.is_empty() {
            return None;
        }
        names.sort();
        names.dedup();
        let mut variance = VarianceBuilder::new();
        for name in &names {
            variance.add_value(name, req.headers.get(name.as_str()).map_or(&[][..], |v| v.as_bytes()));
        }
        variance.finalize()
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        Ok(freshness(resp, ctx.authorization, SystemTime::now(), self.max_heuristic))
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &CacheMeta,
        hit: &mut HitHandler,
        is_fresh: bool,
        _ctx: &mut Ctx,
    ) -> Result<Option<ForcedFreshness>> {
        // A soft purge marked the object: fresh or not, it is revalidated first.
        let purged = hit.as_any().downcast_ref::<Hit>().is_some_and(|h| h.purged);
        Ok((purged && is_fresh).then_some(ForcedFreshness::ForceExpired))
    }

    fn should_serve_stale(&self, _session: &mut Session, _ctx: &mut Ctx, error: Option<&Error>) -> bool {
        match error {
            // stale-while-revalidate: the object's own directive allowed it.
            None => true,
            // stale-if-error: the origin is unreachable or failing (RFC 5861 §4).
            Some(e) => {
                e.esource() == &ErrorSource::Upstream
                    || matches!(e.etype(), ErrorType::HTTPStatus(500 | 502 | 503 | 504))
            }
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let outcome = match session.cache.phase() {
            CachePhase::Hit => Outcome::hit,
            CachePhase::Miss => Outcome::miss,
            CachePhase::Stale | CachePhase::StaleUpdating => Outcome::stale,
            CachePhase::Expired => Outcome::expired,
            CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => Outcome::revalidated,
            _ => Outcome::pass,
        };
        ctx.outcome = Some(outcome);
        let kind = Kind::of(resp.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()));
        self.metrics.request(outcome, kind);
        if session.cache.lock_duration().is_some() {
            self.metrics.coalesced.inc();
        }
        // Surrogate keys are for the edge's purges, not for clients.
        resp.remove_header("surrogate-key");
        resp.insert_header("x-cache", HeaderValue::from_static(outcome.header()))?;
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let from_cache = matches!(ctx.outcome, Some(Outcome::hit | Outcome::stale | Outcome::revalidated));
        self.metrics.body_bytes(from_cache, session.body_bytes_sent() as u64);
        if crate::accesslog::enabled() {
            let req = session.req_header();
            let response = session.response_written();
            crate::accesslog::log(&crate::accesslog::Entry {
                client: session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
                method: req.method.as_str(),
                path: req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
                status: response.map_or(0, |r| r.status.as_u16()),
                cache: ctx.outcome,
                content_type: response
                    .and_then(|r| r.headers.get(header::CONTENT_TYPE))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
                bytes_sent: session.body_bytes_sent(),
                origin: ctx.origin,
                duration_ms: ctx.started.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0),
                error: e,
            });
        }
        let req = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if e.is_none() && unsafe_method(&req.method) && (200..400).contains(&status) {
            // Whatever the cache holds for this URL is no longer what the origin has.
            let key = CacheKey::new("", primary_key(req, self.host_in_key), "").to_compact();
            if let Ok(true) = pingora_cache::Storage::purge(
                self.store,
                &key,
                pingora_cache::storage::PurgeType::Invalidation,
                &pingora_cache::trace::Span::inactive().handle(),
            )
            .await
            {
                self.metrics.invalidations.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn resp(status: u16, headers: &[(&'static str, String)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(*k, v.as_str()).unwrap();
        }
        r
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    /// (fresh for, age) of a cacheable response, or None.
    fn verdict(r: &ResponseHeader, authorization: bool) -> Option<(i64, u64)> {
        match freshness(r, authorization, at(NOW), Duration::from_secs(86_400)) {
            RespCacheable::Cacheable(meta) => {
                let fresh = match meta.fresh_until().duration_since(at(NOW)) {
                    Ok(d) => d.as_secs() as i64,
                    Err(e) => -(e.duration().as_secs() as i64),
                };
                Some((fresh, at(NOW).duration_since(meta.created()).unwrap().as_secs()))
            }
            RespCacheable::Uncacheable(_) => None,
        }
    }

    #[test]
    fn explicit_freshness_comes_from_s_maxage_then_max_age_then_expires() {
        let cc = |v: &str| ("cache-control", v.to_owned());
        assert_eq!(verdict(&resp(200, &[cc("max-age=60")]), false), Some((60, 0)));
        assert_eq!(verdict(&resp(200, &[cc("max-age=60, s-maxage=600")]), false), Some((600, 0)));
        let expires = [("date", date(NOW)), ("expires", date(NOW + 120))];
        assert_eq!(verdict(&resp(200, &expires), false), Some((120, 0)));
        // Expires is read against the response's Date, not the edge's clock.
        let skewed = [("date", date(NOW - 1000)), ("expires", date(NOW - 1000 + 120))];
        assert_eq!(verdict(&resp(200, &skewed), false), Some((120, 0)));
        // max-age wins over Expires; an invalid Expires means already expired.
        assert_eq!(verdict(&resp(200, &[cc("max-age=5"), expires[1].clone()]), false), Some((5, 0)));
        let invalid = [("date", date(NOW)), ("expires", "0".to_owned())];
        assert!(verdict(&resp(200, &invalid), false).unwrap().0 <= 0);
    }

    #[test]
    fn the_origins_age_counts_against_the_lifetime() {
        let r = resp(200, &[("cache-control", "max-age=100".into()), ("age", "30".into())]);
        assert_eq!(verdict(&r, false), Some((70, 30)));
    }

    #[test]
    fn heuristic_freshness_only_for_heuristically_cacheable_statuses_with_last_modified() {
        let lm = [("date", date(NOW)), ("last-modified", date(NOW - 10_000))];
        assert_eq!(verdict(&resp(200, &lm), false), Some((1_000, 0)), "a tenth of its age");
        assert_eq!(verdict(&resp(404, &lm), false), Some((1_000, 0)));
        assert_eq!(verdict(&resp(500, &lm), false), None, "500 is not heuristically cacheable");
        assert_eq!(verdict(&resp(200, &[("date", date(NOW))]), false), None, "nothing to go on");
        let old = [("date", date(NOW)), ("last-modified", date(NOW - 100 * 86_400))];
        assert_eq!(verdict(&resp(200, &old), false), Some((86_400, 0)), "capped");
        // With explicit freshness the heuristic does not apply; a 500 with
        // max-age is cacheable (explicitly).
        assert_eq!(verdict(&resp(500, &[("cache-control", "max-age=9".into())]), false), Some((9, 0)));
    }

    #[test]
    fn what_must_not_be_stored_is_not() {
        let cc = |v: &str| ("cache-control", v.to_owned());
        assert_eq!(verdict(&resp(200, &[cc("no-store, max-age=60")]), false), None);
        assert_eq!(verdict(&resp(200, &[cc("private, max-age=60")]), false), None);
        assert_eq!(verdict(&resp(200, &[cc("max-age=60"), ("set-cookie", "a=b".into())]), false), None);
        assert_eq!(verdict(&resp(200, &[cc("max-age=60")]), true), None, "a request with credentials");
        assert_eq!(verdict(&resp(200, &[cc("public, max-age=60")]), true), Some((60, 0)));
        assert_eq!(verdict(&resp(200, &[cc("s-maxage=60")]), true), Some((60, 0)));
        // no-cache: stored, stale at once (every use revalidates).
        assert!(verdict(&resp(200, &[cc("no-cache")]), false).unwrap().0 < 0);
    }

    #[test]
    fn fetches_take_origins_in_turn_and_a_retry_moves_to_the_next() {
        let addrs: Vec<SocketAddr> = (1..=3).map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
        let origins = OriginTurns::new(addrs.clone());
        let firsts: Vec<u16> = (0..4).map(|_| origins.pick(&mut Ctx::default()).port()).collect();
        assert_eq!(firsts, [1, 2, 3, 1]);
        // A request starting at the second origin, every connect failing: each once.
        let mut ctx = Ctx::default();
        let tried: Vec<u16> = (0..3).map(|_| origins.pick(&mut ctx).port()).collect();
        assert_eq!(tried, [2, 3, 1]);
        assert_eq!((ctx.origin_attempts, ctx.origin), (3, Some(addrs[0])));
        // One origin: always it.
        let one = OriginTurns::new(vec![addrs[2]]);
        assert!((0..3).all(|_| one.pick(&mut Ctx::default()) == addrs[2]));
    }

    #[test]
    fn unsafe_methods_are_those_that_change_things() {
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(unsafe_method(&m), "{m}");
        }
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(!unsafe_method(&m), "{m}");
        }
    }
}
