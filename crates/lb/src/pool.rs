//! The backends and how one is picked: round robin or power of two choices over
//! peak-EWMA latency, active health, passive outlier ejection, draining.
//!
//! Pure logic over atomics and small mutexes, so every rule is unit-tested without
//! a network. Time is passed in (`Instant`) where a rule depends on it. Each
//! backend also holds its idle kept-alive connections ([`crate::upstream`]), so they
//! go with it when it is removed and are closed when it is drained.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::{Algorithm, OutlierSection};
use crate::upstream::IdleConnections;

/// Decay time of the latency average: a sample weighs half after ~7 s.
const EWMA_TAU: Duration = Duration::from_secs(10);
/// The latency a backend is assumed to have before its first answer.
const EWMA_INITIAL_NS: f64 = 1_000_000.0;

/// One backend (a web server) and what the load balancer knows of it.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests sent to it and not finished: least-request's load and drain's wait.
    in_flight: AtomicUsize,
    /// Passing the active health checks (the latest threshold crossing).
    healthy: AtomicBool,
    /// No new requests: it is being drained before it stops.
    draining: AtomicBool,
    /// Peak-EWMA latency and passive-failure state, updated together.
    state: Mutex<BackendState>,
    /// Total requests sent, for the metrics and `GET /admin/backends`.
    requests: AtomicU64,
    /// Kept-alive connections to it, idle between requests ([`crate::h1`]'s).
    pub idle_h1: IdleConnections<tokio::net::TcpStream>,
    /// The same for pingora's client session (requests that came over HTTP/2).
    pub idle: IdleConnections<pingora_core::protocols::Stream>,
}

/// What changes with every answer.
#[derive(Debug)]
struct BackendState {
    /// Latency average in nanoseconds, jumping up to any slower sample (peak).
    ewma_ns: f64,
    /// When `ewma_ns` was last updated (its decay depends on the time since).
    ewma_at: Instant,
    /// 5xx answers or connection failures in a row.
    consecutive_failures: u32,
    /// Ejected by passive checks until then.
    ejected_until: Option<Instant>,
    /// How many times it has been ejected (each ejection lasts longer).
    ejections: u32,
    /// Consecutive passing probes (toward `healthy_threshold`).
    probe_passes: u32,
    /// Consecutive failing probes (toward `unhealthy_threshold`).
    probe_fails: u32,
}

impl Backend {
    fn new(addr: SocketAddr, healthy: bool, now: Instant) -> Backend {
        Backend {
            addr,
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(healthy),
            draining: AtomicBool::new(false),
            state: Mutex::new(BackendState {
                ewma_ns: EWMA_INITIAL_NS,
                ewma_at: now,
                consecutive_failures: 0,
                ejected_until: None,
                ejections: 0,
                probe_passes: 0,
                probe_fails: 0,
            }),
            requests: AtomicU64::new(0),
            idle_h1: IdleConnections::default(),
            idle: IdleConnections::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BackendState> {
        self.state.lock().expect("backend state poisoned")
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Passing active health checks.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Being drained.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Ejected by passive checks at `now`.
    pub fn ejected(&self, now: Instant) -> bool {
        self.state().ejected_until.is_some_and(|t| t > now)
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The least-request cost: expected latency × queue length.
    fn cost(&self, now: Instant) -> f64 {
        let s = self.state();
        let decayed = decay(s.ewma_ns, now.saturating_duration_since(s.ewma_at));
        decayed * (self.in_flight() as f64 + 1.0)
    }

    /// Fold one answer's latency into the peak EWMA.
    pub fn observe_latency(&self, latency: Duration, now: Instant) {
        let sample = latency.as_nanos() as f64;
        let mut s = self.state();
        let elapsed = now.saturating_duration_since(s.ewma_at);
        s.ewma_ns = if sample > s.ewma_ns {
            sample
        } else {
            let w = (-elapsed.as_secs_f64() / EWMA_TAU.as_secs_f64()).exp();
            s.ewma_ns * w + sample * (1.0 - w)
        };
        s.ewma_at = now;
    }
}

/// A backend not picked for a while looks cheaper and cheaper, so P2C tries it
/// again (and measures it) instead of starving it on an old sample; a peak ages out
/// over `EWMA_TAU`.
fn decay(ewma_ns: f64, since: Duration) -> f64 {
    ewma_ns * (-since.as_secs_f64() / EWMA_TAU.as_secs_f64()).exp()
}

/// A request's hold on a backend: counts it in flight until dropped.
#[derive(Debug)]
pub struct Lease {
    /// The backend chosen.
    pub backend: Arc<Backend>,
}

impl Lease {
    fn new(backend: Arc<Backend>) -> Lease {
        backend.in_flight.fetch_add(1, Ordering::AcqRel);
        backend.requests.fetch_add(1, Ordering::Relaxed);
        Lease { backend }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The outcome of one attempt on a backend, for passive checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer below 500.
    Success,
    /// A 5xx answer, or the connection failed or broke.
    Failure,
}

/// What a health probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// No change.
    None,
    /// Crossed the healthy threshold.
    BecameHealthy,
    /// Crossed the unhealthy threshold.
    BecameUnhealthy,
}

/// The set of backends.
#[derive(Debug)]
pub struct Pool {
    /// The current list; replaced whole by `set_backends`, so a pick sees one
    /// consistent list and an in-flight request keeps its `Arc<Backend>`.
    backends: RwLock<Arc<Vec<Arc<Backend>>>>,
    /// Round robin's position.
    next: AtomicUsize,
    /// How to pick.
    algorithm: Algorithm,
    /// Passive ejection rules.
    outlier: OutlierSection,
}

impl Pool {
    /// A pool of `addrs`, all presumed healthy until probed.
    pub fn new(addrs: &[SocketAddr], algorithm: Algorithm, outlier: OutlierSection) -> Pool {
        let now = Instant::now();
        let list = addrs.iter().map(|a| Arc::new(Backend::new(*a, true, now))).collect();
        Pool { backends: RwLock::new(Arc::new(list)), next: AtomicUsize::new(0), algorithm, outlier }
    }

    /// The current backends.
    pub fn backends(&self) -> Arc<Vec<Arc<Backend>>> {
        self.backends.read().expect("pool poisoned").clone()
    }

    /// The backend at `addr`, if listed.
    pub fn get(&self, addr: SocketAddr) -> Option<Arc<Backend>> {
        self.backends().iter().find(|b| b.addr == addr).cloned()
    }

    /// Replace the list. Backends still listed keep their state (health, ejection,
    /// draining); new ones start unhealthy until a probe passes, so a web server
    /// still starting gets no traffic; removed ones stop getting new requests while
    /// the requests they have finish. Returns the addresses added.
    pub fn set_backends(&self, addrs: &[SocketAddr]) -> Vec<SocketAddr> {
        let now = Instant::now();
        let mut guard = self.backends.write().expect("pool poisoned");
        let mut added = Vec::new();
        let list = addrs
            .iter()
            .map(|a| match guard.iter().find(|b| b.addr == *a) {
                Some(b) => b.clone(),
                None => {
                    added.push(*a);
                    Arc::new(Backend::new(*a, false, now))
                }
            })
            .collect();
        *guard = Arc::new(list);
        added
    }

    /// Pick a backend for a request, skipping `tried` (earlier attempts of the
    /// same request). `random` gives two independent uniform draws for P2C.
    pub fn pick(
        &self,
        tried: &[SocketAddr],
        now: Instant,
        random: impl FnMut(usize) -> usize,
    ) -> Option<Lease> {
        let all = self.backends();
        // Counted in passes over the list rather than collected: a pick happens
        // for every request, and lists are short.
        let serving = |b: &Backend| !b.draining();
        let usable = |b: &Backend| serving(b) && b.healthy() && !b.ejected(now);
        let n_serving = all.iter().filter(|b| serving(b)).count();
        let n_usable = all.iter().filter(|b| usable(b)).count();
        // Panic mode: too few usable backends; spread over all of them rather than
        // overload the few (or refuse everything when none passes).
        let panic = (n_usable * 100) < n_serving * self.outlier.panic_below_percent as usize;
        let everyone = panic || n_usable == 0;
        let candidate =
            |b: &Backend| (if everyone { serving(b) } else { usable(b) }) && !tried.contains(&b.addr);
        let nth = |i: usize| all.iter().filter(|b| candidate(b)).nth(i).expect("counted above");
        let chosen = match all.iter().filter(|b| candidate(b)).count() {
            0 => return None,
            1 => nth(0),
            n => match self.algorithm {
                Algorithm::RoundRobin => nth(self.next.fetch_add(1, Ordering::Relaxed) % n),
                Algorithm::LeastRequest => p2c(n, nth, now, random),
            },
        };
        Some(Lease::new(chosen.clone()))
    }

    /// Record an attempt's outcome; returns the ejection's length if this one
    /// ejected the backend.
    pub fn record(&self, backend: &Backend, outcome: Outcome, now: Instant) -> Option<Duration> {
        let threshold = self.outlier.consecutive_failures;
        if outcome == Outcome::Success {
            backend.state().consecutive_failures = 0;
            return None;
        }
        let mut s = backend.state();
        s.consecutive_failures += 1;
        let already = s.ejected_until.is_some_and(|t| t > now);
        if threshold == 0 || s.consecutive_failures < threshold || already {
            return None;
        }
        drop(s);
        // At most max_ejected_percent of the backends (and at least one) out at once.
        let all = self.backends();
        let ejected = all.iter().filter(|b| b.ejected(now)).count();
        let cap = (all.len() * self.outlier.max_ejected_percent as usize / 100).max(1);
        if ejected >= cap {
            return None;
        }
        let mut s = backend.state();
        s.ejections += 1;
        s.consecutive_failures = 0;
        let length = Duration::from_millis(
            self.outlier
                .base_ejection_ms
                .saturating_mul(u64::from(s.ejections))
                .min(self.outlier.max_ejection_ms),
        );
        s.ejected_until = Some(now + length);
        Some(length)
    }

    /// Record a health probe's result against the thresholds.
    pub fn probe(
        &self,
        backend: &Backend,
        passed: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Transition {
        let mut s = backend.state();
        if passed {
            s.probe_fails = 0;
            s.probe_passes = s.probe_passes.saturating_add(1);
            // A new backend joins after its first pass: nothing was routed to it yet.
            let needed = if s.probe_passes == 1 && backend.requests() == 0 { 1 } else { healthy_threshold };
            if !backend.healthy() && s.probe_passes >= needed {
                backend.healthy.store(true, Ordering::Release);
                return Transition::BecameHealthy;
            }
        } else {
            s.probe_passes = 0;
            s.probe_fails = s.probe_fails.saturating_add(1);
            if backend.healthy() && s.probe_fails >= unhealthy_threshold {
                backend.healthy.store(false, Ordering::Release);
                return Transition::BecameUnhealthy;
            }
        }
        Transition::None
    }

    /// Stop sending new requests to `addr`. False if it is not listed.
    pub fn start_drain(&self, addr: SocketAddr) -> bool {
        self.set_draining(addr, true)
    }

    /// Send new requests to `addr` again after a drain. False if it is not listed.
    pub fn resume(&self, addr: SocketAddr) -> bool {
        self.set_draining(addr, false)
    }

    fn set_draining(&self, addr: SocketAddr, draining: bool) -> bool {
        let Some(b) = self.get(addr) else { return false };
        b.draining.store(draining, Ordering::Release);
        if draining {
            // The backend is about to stop: its idle connections are of no more use.
            b.idle_h1.clear();
            b.idle.clear();
        }
        true
    }

    /// Whether any backend can take a request now (readiness).
    pub fn any_serving(&self) -> bool {
        self.backends().iter().any(|b| !b.draining())
    }
}

/// Of two distinct random candidates (of `n`, the `i`-th given by `nth`), the cheaper.
fn p2c<'a>(
    n: usize,
    nth: impl Fn(usize) -> &'a Arc<Backend>,
    now: Instant,
    mut random: impl FnMut(usize) -> usize,
) -> &'a Arc<Backend> {
    let i = random(n);
    let j = (i + 1 + random(n - 1)) % n;
    let (a, b) = (nth(i), nth(j));
    if b.cost(now) < a.cost(now) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i))).collect()
    }

    fn outlier() -> OutlierSection {
        OutlierSection {
            consecutive_failures: 3,
            base_ejection_ms: 1000,
            max_ejection_ms: 2500,
            max_ejected_percent: 50,
            panic_below_percent: 50,
        }
    }

    fn seq() -> impl FnMut(usize) -> usize {
        let mut k = 0;
        move |n| {
            k += 1;
            k % n
        }
    }

    #[test]
    fn round_robin_visits_each_in_turn_and_skips_tried() {
        let pool = Pool::new(&addrs(3), Algorithm::RoundRobin, outlier());
        let now = Instant::now();
        let picked: Vec<u16> =
            (0..6).map(|_| pool.pick(&[], now, seq()).unwrap().backend.addr.port()).collect();
        assert_eq!(picked, [9000, 9001, 9002, 9000, 9001, 9002]);
        let tried = addrs(2);
        for _ in 0..3 {
            assert_eq!(pool.pick(&tried, now, seq()).unwrap().backend.addr.port(), 9002);
        }
        assert!(pool.pick(&addrs(3), now, seq()).is_none());
    }

    #[test]
    fn least_request_prefers_the_idle_and_the_fast() {
        let pool = Pool::new(&addrs(2), Algorithm::LeastRequest, outlier());
        let now = Instant::now();
        let busy = pool.pick(&[SocketAddr::from(([127, 0, 0, 1], 9001))], now, seq()).unwrap();
        assert_eq!(busy.backend.addr.port(), 9000);
        for _ in 0..10 {
            assert_eq!(pool.pick(&[], now, seq()).unwrap().backend.addr.port(), 9001);
        }
        drop(busy);
        let all = pool.backends();
        all[0].observe_latency(Duration::from_millis(50), now);
        all[1].observe_latency(Duration::from_millis(1), now);
        assert_eq!(pool.pick(&[], now, seq()).unwrap().backend.addr.port(), 9001);
        // Peak: one slow answer counts at once; fast ones lower it gradually.
        all[1].observe_latency(Duration::from_millis(100), now);
        assert!(all[1].cost(now) >= 100e6);
        all[1].observe_latency(Duration::from_millis(1), now + Duration::from_secs(30));
        assert!(all[1].cost(now + Duration::from_secs(30)) < 10e6);
    }

    #[test]
    fn ejection_grows_and_is_capped_by_share() {
        let pool = Pool::new(&addrs(4), Algorithm::RoundRobin, outlier());
        let all = pool.backends();
        let t0 = Instant::now();
        assert_eq!(pool.record(&all[0], Outcome::Failure, t0), None);
        assert_eq!(pool.record(&all[0], Outcome::Failure, t0), None);
        assert_eq!(pool.record(&all[0], Outcome::Failure, t0), Some(Duration::from_millis(1000)));
        assert!(all[0].ejected(t0));
        // A success resets the count.
        for o in [Outcome::Failure, Outcome::Failure, Outcome::Success, Outcome::Failure, Outcome::Failure] {
            assert_eq!(pool.record(&all[1], o, t0), None);
        }
        assert_eq!(pool.record(&all[1], Outcome::Failure, t0), Some(Duration::from_millis(1000)));
        // 2 of 4 ejected is the 50% cap: the third stays in.
        for _ in 0..5 {
            assert_eq!(pool.record(&all[2], Outcome::Failure, t0), None);
        }
        // Picks avoid the ejected.
        for _ in 0..4 {
            let p = pool.pick(&[], t0, seq()).unwrap().backend.addr.port();
            assert!(p == 9002 || p == 9003, "{p}");
        }
        // Readmitted after the ejection; the next ejection is longer, up to the max.
        let t1 = t0 + Duration::from_millis(1001);
        assert!(!all[0].ejected(t1));
        for _ in 0..2 {
            pool.record(&all[0], Outcome::Failure, t1);
        }
        assert_eq!(pool.record(&all[0], Outcome::Failure, t1), Some(Duration::from_millis(2000)));
        let t2 = t1 + Duration::from_millis(2001);
        for _ in 0..2 {
            pool.record(&all[0], Outcome::Failure, t2);
        }
        assert_eq!(pool.record(&all[0], Outcome::Failure, t2), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn panic_mode_uses_everything_when_too_few_are_usable() {
        let pool = Pool::new(&addrs(3), Algorithm::RoundRobin, outlier());
        let all = pool.backends();
        let now = Instant::now();
        for b in &all[..2] {
            pool.probe(b, false, 2, 1);
        }
        // 1 of 3 usable (33% < 50%): all three get traffic.
        let mut seen: Vec<u16> =
            (0..3).map(|_| pool.pick(&[], now, seq()).unwrap().backend.addr.port()).collect();
        seen.sort();
        assert_eq!(seen, [9000, 9001, 9002]);
        pool.probe(&all[0], true, 2, 1);
        assert!(!all[0].healthy(), "a backend that served before needs healthy_threshold passes");
        assert_eq!(pool.probe(&all[0], true, 2, 1), Transition::BecameHealthy);
        for _ in 0..4 {
            assert_ne!(pool.pick(&[], now, seq()).unwrap().backend.addr.port(), 9001);
        }
    }

    #[test]
    fn set_backends_keeps_state_and_new_ones_wait_for_a_probe() {
        let pool = Pool::new(&addrs(2), Algorithm::RoundRobin, outlier());
        let old = pool.get(addrs(2)[1]).unwrap();
        assert!(pool.start_drain(old.addr));
        let lease = pool.pick(&[], Instant::now(), seq()).unwrap();
        assert_eq!(lease.backend.addr.port(), 9000, "draining gets nothing new");
        let added = pool.set_backends(&addrs(3)[1..]);
        assert_eq!(added, [addrs(3)[2]]);
        assert!(pool.get(addrs(3)[1]).unwrap().draining(), "state kept");
        let new = pool.get(addrs(3)[2]).unwrap();
        assert!(!new.healthy());
        assert_eq!(pool.probe(&new, true, 3, 3), Transition::BecameHealthy);
        assert_eq!(lease.backend.in_flight(), 1, "a removed backend's requests go on");
        drop(lease);
        assert_eq!(pool.backends()[0].in_flight(), 0);
    }
}
