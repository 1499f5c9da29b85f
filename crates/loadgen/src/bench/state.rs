//! What the running tasks share: the sessions, the per-operation tallies and
//! histograms, the known posts and photos, the acknowledged writes and the
//! read-your-writes tallies, and the counters of the progress line.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::config::{BenchConfig, Op};
use super::failure::Failure;
use super::http::Http;
use super::report::{RywKind, Writes};
use super::timeline::Timeline;

/// Largest latency the histograms hold, in microseconds (an hour).
pub(super) const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Known post ids and photo URLs kept for likes and photo views.
const POOL: usize = 10_000;

/// An empty latency histogram (microseconds, up to [`MAX_LATENCY_US`]).
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Lock `m`, also after a task panicked holding it (the tallies stay usable).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One operation's running tallies.
pub(super) struct OpStats {
    /// Requests due in the measured window (sent or dropped as `overloaded`).
    pub(super) count: u64,
    /// Of those, answered successfully.
    pub(super) ok: u64,
    /// Failures by kind ([`Failure::kind`], or `overloaded`).
    pub(super) errors: BTreeMap<String, u64>,
    /// Latency from the intended start, microseconds.
    pub(super) latency: Histogram<u64>,
}

/// Recently seen post ids and photo URLs.
#[derive(Default)]
pub(super) struct Pool {
    /// Posts to like.
    pub(super) posts: VecDeque<String>,
    /// Thumbnail URLs to view.
    pub(super) photos: VecDeque<String>,
}

impl Pool {
    /// Remember `item`, forgetting the oldest beyond [`POOL`].
    pub(super) fn push(list: &mut VecDeque<String>, item: String) {
        if list.len() >= POOL {
            list.pop_front();
        }
        list.push_back(item);
    }

    /// The item a draw `r` falls on, if any is known.
    pub(super) fn pick(list: &VecDeque<String>, r: u64) -> Option<String> {
        if list.is_empty() { None } else { list.get((r % list.len() as u64) as usize).cloned() }
    }
}

/// Read-your-writes tallies.
#[derive(Default)]
pub(super) struct Ryw {
    /// Per kind of write.
    pub(super) by_kind: BTreeMap<String, RywKind>,
    /// The first violations, `kind subject: what`.
    pub(super) listed: Vec<String>,
}

/// A measured request that failed: when it was due and when it failed, seconds
/// into the measured window, and its operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Failed {
    /// When it was due.
    pub(super) due: f64,
    /// When its failure was known (answered or given up): a request due before a
    /// fault and failing after it failed because of it.
    pub(super) done: f64,
    /// What it was.
    pub(super) op: Op,
}

/// What the running tasks share.
pub(super) struct Shared {
    /// The client every request goes through.
    pub(super) http: Http,
    /// The entries, without trailing slashes; user `i` uses the `(i mod N)`th.
    pub(super) targets: Vec<String>,
    /// Username prefix (`{prefix}{i}`).
    pub(super) prefix: String,
    /// Every user's password, to log in.
    pub(super) password: String,
    /// In every caption: tells this run's posts from other runs'.
    pub(super) tag: String,
    /// Each user's session, logged in once (before the clock starts).
    pub(super) sessions: Mutex<HashMap<u64, Arc<OnceCell<String>>>>,
    /// Per operation, the measured window's tallies.
    pub(super) stats: Mutex<BTreeMap<Op, OpStats>>,
    /// Latencies since the last progress line (its p99, then reset).
    pub(super) window: Mutex<Histogram<u64>>,
    /// Requests due from this instant on are measured (the warm-up is not).
    pub(super) measure_from: Instant,
    /// Requests sent and not yet answered (bounded by `max_in_flight`).
    pub(super) in_flight: AtomicUsize,
    /// Requests sent, warm-up included (progress line).
    pub(super) sent: AtomicU64,
    /// Requests answered, warm-up included (progress line).
    pub(super) completed: AtomicU64,
    /// Measured requests failed (progress line).
    pub(super) failed: AtomicU64,
    /// Posts created: numbers each caption and photo.
    pub(super) posted: AtomicU64,
    /// Posts and photos seen, for likes and photo views.
    pub(super) pool: Mutex<Pool>,
    /// Comments written: numbers each comment's text.
    pub(super) commented: AtomicU64,
    /// Per user, their posts acknowledged in this run and not yet picked for
    /// deletion: the only posts a `delete_post` may delete (never a seeded one).
    pub(super) own_posts: Mutex<HashMap<u64, Vec<String>>>,
    /// Posts this run is deleting or deleted: kept out of the pool, and a 404
    /// from them to a like, comment or comment read that raced the deletion is
    /// the right answer, not a failure.
    pub(super) deleting: Mutex<HashSet<String>>,
    /// Every acknowledged write, for the checker.
    pub(super) writes: Mutex<Writes>,
    /// Read-your-writes tallies of the writers' read-backs.
    pub(super) ryw: Mutex<Ryw>,
    /// When each failed request was due, seconds into the measured window, and
    /// its operation (to measure recovery from an injected fault, and to judge
    /// what failed before and after it).
    pub(super) failure_times: Mutex<Vec<Failed>>,
    /// Intended start to send of measured requests, microseconds: whether the
    /// generator itself kept to its schedule.
    pub(super) lag: Mutex<Histogram<u64>>,
    /// Operations that became another, by `from->to`.
    pub(super) substitutions: Mutex<BTreeMap<String, u64>>,
    /// When the last successful answer to a measured request came (wall time
    /// for the achieved rate).
    pub(super) last_ok: Mutex<Option<Instant>>,
    /// Distinguishes this run's photos from every other run's.
    pub(super) photo_salt: u64,
    /// With a step in the rate: the measured window second by second and the
    /// step's phases, by intended time (`None` without a step: the report
    /// stays as it was).
    pub(super) timeline: Option<Mutex<Timeline>>,
}

impl Shared {
    /// Empty tallies for a run of `config` through `http`; measuring starts
    /// now until [`Shared::measure_from`] is set.
    pub(super) fn new(config: &BenchConfig, http: Http) -> Shared {
        let mut stats = BTreeMap::new();
        for op in Op::ALL {
            stats.insert(op, OpStats { count: 0, ok: 0, errors: BTreeMap::new(), latency: histogram() });
        }
        Shared {
            http,
            targets: config.targets.iter().map(|t| t.trim_end_matches('/').to_owned()).collect(),
            prefix: config.user_prefix.clone(),
            password: config.password.clone(),
            tag: format!("{:x}-{:x}", config.seed, std::process::id()),
            sessions: Mutex::new(HashMap::new()),
            stats: Mutex::new(stats),
            window: Mutex::new(histogram()),
            measure_from: Instant::now(),
            in_flight: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            posted: AtomicU64::new(0),
            pool: Mutex::new(Pool::default()),
            commented: AtomicU64::new(0),
            own_posts: Mutex::new(HashMap::new()),
            deleting: Mutex::new(HashSet::new()),
            writes: Mutex::new(Writes::default()),
            ryw: Mutex::new(Ryw::default()),
            failure_times: Mutex::new(Vec::new()),
            lag: Mutex::new(histogram()),
            substitutions: Mutex::new(BTreeMap::new()),
            last_ok: Mutex::new(None),
            photo_salt: (config.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(std::process::id()))
                .rotate_left(17)
                ^ std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
            timeline: config.step.as_ref().map(|step| Mutex::new(Timeline::new(config.duration, step))),
        }
    }

    /// The entry user `user` always goes through: a user sticks to one entry, as
    /// DNS keeps a client in one data center (whose Redis holds its session).
    pub(super) fn target(&self, user: u64) -> &str {
        &self.targets[(user % self.targets.len() as u64) as usize]
    }

    /// The username of user `i`.
    pub(super) fn username(&self, i: u64) -> String {
        format!("{}{i}", self.prefix)
    }

    /// User `user`'s session token, logging in through `target` the first time.
    pub(super) async fn token(&self, target: &str, user: u64) -> Result<String, Failure> {
        let cell = lock(&self.sessions).entry(user).or_default().clone();
        let name = self.username(user);
        cell.get_or_try_init(|| self.http.login((user, target), &name, &self.password)).await.cloned()
    }

    /// Note a request due at `intended`, before it is sent or dropped: the
    /// timeline's seconds before it get no more requests.
    pub(super) fn due(&self, intended: Instant) {
        if let Some(timeline) = &self.timeline
            && intended >= self.measure_from
        {
            lock(timeline).due((intended - self.measure_from).as_secs_f64());
        }
    }

    /// Count a due request of `op` (in the measured window only).
    pub(super) fn record(
        &self,
        op: Op,
        intended: Instant,
        result: Result<(), &str>,
        latency: Option<Duration>,
    ) {
        if intended < self.measure_from {
            return;
        }
        let mut stats = lock(&self.stats);
        let s = stats.get_mut(&op).expect("every op has stats");
        s.count += 1;
        match result {
            Ok(()) => {
                s.ok += 1;
                let mut last = lock(&self.last_ok);
                let now = Instant::now();
                if last.is_none_or(|t| t < now) {
                    *last = Some(now);
                }
            }
            Err(kind) => {
                *s.errors.entry(kind.to_owned()).or_default() += 1;
                self.failed.fetch_add(1, Ordering::Relaxed);
                let due = (intended - self.measure_from).as_secs_f64();
                let done = due + latency.unwrap_or_else(|| intended.elapsed()).as_secs_f64();
                lock(&self.failure_times).push(Failed { due, done, op });
            }
        }
        let us = latency.map(|latency| (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US));
        if let Some(us) = us {
            s.latency.saturating_record(us);
        }
        drop(stats);
        if let Some(us) = us {
            lock(&self.window).saturating_record(us);
        }
        if let Some(timeline) = &self.timeline {
            lock(timeline).record((intended - self.measure_from).as_secs_f64(), result.is_err(), us);
        }
    }

    /// Remember the posts and photos in a page of posts.
    pub(super) fn harvest(&self, page: &Value) {
        let Some(posts) = page["posts"].as_array() else { return };
        let deleting = lock(&self.deleting);
        let mut pool = lock(&self.pool);
        for p in posts {
            let Some(id) = p["id"].as_str() else { continue };
            // A feed may list a post this run deleted until it is retracted.
            if deleting.contains(id) {
                continue;
            }
            Pool::push(&mut pool.posts, id.to_owned());
            if let Some(thumbs) = p["photo"]["thumbnails"].as_array() {
                for t in thumbs {
                    if let Some(url) = t["url"].as_str() {
                        Pool::push(&mut pool.photos, url.to_owned());
                    }
                }
            }
        }
    }

    /// Take one of `user`'s own posts of this run (drawn with `r`) to delete:
    /// it leaves the pool, and is marked as being deleted.
    pub(super) fn take_own_post(&self, user: u64, r: u64) -> Option<String> {
        let id = {
            let mut own = lock(&self.own_posts);
            let list = own.get_mut(&user).filter(|l| !l.is_empty())?;
            let i = (r % list.len() as u64) as usize;
            list.swap_remove(i)
        };
        lock(&self.deleting).insert(id.clone());
        lock(&self.pool).posts.retain(|p| *p != id);
        Some(id)
    }

    /// Whether `post_id` is one this run is deleting or deleted.
    pub(super) fn is_deleting(&self, post_id: &str) -> bool {
        lock(&self.deleting).contains(post_id)
    }

    /// Count an operation that became another for want of a target.
    pub(super) fn substituted(&self, from: Op, to: Op) {
        *lock(&self.substitutions).entry(format!("{from}->{to}")).or_default() += 1;
    }

    /// The line printed about every second: counters, and the p99 since the last line.
    pub(super) fn progress_line(&self, phase: &str, elapsed: Duration) -> String {
        let p99 = {
            let mut w = lock(&self.window);
            let p99 = if w.is_empty() { 0.0 } else { w.value_at_quantile(0.99) as f64 / 1000.0 };
            w.reset();
            p99
        };
        format!(
            "{phase} {:>6.1}s: sent {}, completed {}, errors {}, in flight {}, p99 {:.2} ms",
            elapsed.as_secs_f64(),
            self.sent.load(Ordering::Relaxed),
            self.completed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed),
            p99
        )
    }
}
