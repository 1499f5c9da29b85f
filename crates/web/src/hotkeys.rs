//! The hottest keys: which users' profiles and which posts this web server reads
//! most, counted in bounded memory, shown in `/metrics` and at
//! `GET /internal/hotkeys`, and protected by hot copies so that a celebrity's read
//! storm costs neither Redis nor the shards anything.
//!
//! # Counting
//!
//! A read notes its key ([`HotKeys::note`]) in one of [`STRIPES`] small
//! fixed-size tables (open addressing, [`SLOTS`] slots, [`PROBES`] deep), the one
//! its thread was given: a runtime worker thread takes its own table's lock
//! (`try_lock`: uncontended but for the drain; a table that is busy or full drops
//! the note, counted in `millions_hotkeys_notes_dropped_total`). No allocation, no
//! shared counter but the table's: a hash, a lock, a few compares. Every [`TICK`]
//! a task of [`spawn`] drains the tables into one summary per kind: Space-Saving
//! (Metwally et al., 2005) over `hotkeys.tracked` counters kept as an indexed
//! min-heap, whose counts decay exponentially with `hotkeys.half_life_secs` (all
//! counts scaled alike, so the summary's order and its bound — a count is at
//! least the key's true decayed count, and at most `error` more — hold for the
//! decayed stream; a count under half a read is forgotten): yesterday's
//! celebrity fades. Memory is fixed by the configuration: the tables (64 KiB),
//! `tracked` counters per kind, at most `protect` copies per kind, and the writer
//! marks (32 KiB), whatever the number of keys read.
//!
//! Hand-written rather than a crate: the candidates on crates.io (`heavykeeper`,
//! `topk`'s Filtered Space-Saving, `flowstats`) count without time decay
//! (HeavyKeeper's "decay" ages a counter when another key collides with it, not
//! with time) and are `&mut self` structures a request could only reach through a
//! shared lock; the request path here is the striped tables, and the summary,
//! touched by one task ten times a second, is a hundred lines.
//!
//! # Hot copies
//!
//! The hottest `hotkeys.protect` keys of each kind reading at least
//! `hotkeys.min_rate` per second (decayed average) are *protected*: the task keeps
//! a copy of each ([`HotCopies`]), read through the shared cache
//! ([`cache::ReadThrough`]: its L1, else Redis, else the shard's primary) and
//! refreshed every tick once half of `hotkeys.hot_ttl_ms` has passed, so it never
//! lapses while the key stays hot. Reads of a protected key are served from the
//! copy: the shared cache's L1, which every write anywhere empties through
//! pub/sub, is not consulted, so a celebrity followed a hundred times a second
//! through other servers is read here from Redis twice a second at most, never
//! once per follow, and from the shards only when Redis lacks it too.
//!
//! Staleness: a copy is served for at most `hot_ttl_ms` after the read that made
//! it began, and is never older than what this process's shared cache held then.
//! So a write through another server shows here within `hot_ttl_ms` (plus the
//! pub/sub delay that bounds the shared cache itself). A write through this
//! server drops the copy at once ([`HotKeys::forget`], after the shared cache's
//! invalidation), and a refresh that read before it keeps nothing (an epoch per
//! stripe of keys).
//!
//! Read-your-writes: a signed-in viewer is never served a copy older than their
//! own last write, wherever it was made. A request that wrote marks its user here
//! at once ([`HotKeys::wrote`]) and announces it to every web server of every data
//! center ([`cache::Invalidator::announce`], one `PUBLISH` per Redis, sent beside
//! the session's floor update) after the write's invalidations, on the same
//! channel, so each server hears of the writer after it dropped the keys the
//! write changed. A copy is served to a viewer only if its read began after the
//! last mark of that viewer ([`Writers`]: a table of 4096 timestamps by hash of
//! the user id — a collision costs a read through the shared cache, never a stale
//! answer); after the listener resubscribes (messages may have been lost), no
//! copy read before that is served to any signed-in viewer. The guarantee is
//! therefore the shared cache's own: once the write's messages reached this
//! server.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use data::UserRecord;
use serde::{Deserialize, Serialize};
use telemetry::prometheus_client::metrics::counter::Counter;
use telemetry::prometheus_client::metrics::family::Family;
use telemetry::prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::config::HotKeysConfig;
use crate::error::ApiError;
use crate::service::CachedPost;
use crate::state::AppState;

/// How often the tables are drained, the counts decayed, the protected keys
/// chosen and their copies refreshed.
pub const TICK: Duration = Duration::from_millis(100);
/// Note tables: more than the runtime has worker threads, so that each writes to
/// its own.
pub const STRIPES: usize = 16;
/// Slots of a note table: distinct keys one thread can note between two ticks.
pub const SLOTS: usize = 256;
/// Slots a note probes before it is dropped.
pub const PROBES: usize = 8;
/// Stripes of the hot copies' locks and epochs.
const COPY_STRIPES: usize = 16;
/// Slots of the writer marks.
const MARK_SLOTS: usize = 4096;
/// A decayed count under this (half a read) is forgotten.
const FORGOTTEN: f64 = 0.5;
/// The name writer announcements travel under on the invalidation channel (no
/// cache has it).
pub const WRITERS: &str = "writer";

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A user's profile read, by user id.
    Profile,
    /// A single post read, by post id.
    Post,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 2] = [Kind::Profile, Kind::Post];

    /// Its name in metrics, JSON and queries.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Profile => "profile",
            Kind::Post => "post",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Its tag in a note table (0 marks a free slot).
    fn tag(self) -> u8 {
        self as u8 + 1
    }
}

/// A slot of a note table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Note {
    /// The key read (a user id or a post id).
    key: i64,
    /// Its kind's [`Kind::tag`]; 0: the slot is free.
    tag: u8,
    /// Reads of it since the last drain.
    count: u32,
}

/// One note table.
#[derive(Debug)]
struct Table {
    /// Open addressing by the key's hash; [`SLOTS`] long, allocated once.
    slots: Box<[Note]>,
    /// Slots in use: draining an idle table reads none.
    used: usize,
}

impl Table {
    fn new() -> Table {
        Table { slots: vec![Note::default(); SLOTS].into_boxed_slice(), used: 0 }
    }

    /// Count one read of `key`; `false` when its probes found no room.
    fn add(&mut self, tag: u8, key: i64) -> bool {
        let start = sharding::fmix64(key as u64 ^ u64::from(tag) << 56) as usize;
        for i in 0..PROBES {
            let slot = &mut self.slots[(start + i) % SLOTS];
            if slot.tag == 0 {
                *slot = Note { key, tag, count: 1 };
                self.used += 1;
                return true;
            }
            if slot.tag == tag && slot.key == key {
                slot.count = slot.count.saturating_add(1);
                return true;
            }
        }
        false
    }

    /// Move every note into `out`, leaving the table empty.
    fn drain_into(&mut self, out: &mut Vec<Note>) {
        if self.used == 0 {
            return;
        }
        for slot in self.slots.iter_mut().filter(|s| s.tag != 0) {
            out.push(std::mem::take(slot));
        }
        self.used = 0;
    }
}

/// Hands threads their note table in turn.
static NEXT_HOME: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's note table (in every [`HotKeys`]): threads take them in
    /// turn, so each runtime worker writes to its own.
    static HOME: usize = NEXT_HOME.fetch_add(1, Ordering::Relaxed);
}

/// The request path's side of the counting: striped note tables.
#[derive(Debug)]
struct Notes {
    /// [`STRIPES`] tables.
    tables: Box<[Mutex<Table>]>,
    /// Notes dropped: their table was busy (being drained) or full.
    dropped: Counter,
}

impl Notes {
    fn new() -> Notes {
        Notes {
            tables: (0..STRIPES).map(|_| Mutex::new(Table::new())).collect(),
            dropped: Counter::default(),
        }
    }

    fn note(&self, kind: Kind, key: i64) {
        // (0 while the thread is being torn down.)
        let home = HOME.try_with(|h| *h).unwrap_or(0);
        // The thread's own table, else (being drained) the next one.
        for attempt in 0..2 {
            let mut table = match self.tables[(home + attempt) % STRIPES].try_lock() {
                Ok(table) => table,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            if table.add(kind.tag(), key) {
                return;
            }
            break;
        }
        self.dropped.inc();
    }

    fn drain_into(&self, out: &mut Vec<Note>) {
        for table in self.tables.iter() {
            lock(table).drain_into(out);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One key a [`SpaceSaving`] summary tracks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counted {
    /// The key.
    pub key: i64,
    /// Its decayed read count: at least its true decayed count.
    pub count: f64,
    /// How much of `count` may be other keys' (the count of the key it replaced):
    /// its true decayed count is at least `count - error`.
    pub error: f64,
}

/// Space-Saving over a decayed stream: at most `capacity` keys, each with an
/// over-estimate of its count; a new key replaces the smallest count and
/// inherits it as its error. Kept as a min-heap indexed by key, so an update is
/// O(log capacity).
#[derive(Debug)]
pub struct SpaceSaving {
    /// Most keys tracked.
    capacity: usize,
    /// The tracked keys, a binary min-heap by `count`.
    heap: Vec<Counted>,
    /// Each tracked key's position in `heap`.
    index: HashMap<i64, usize>,
}

impl SpaceSaving {
    /// An empty summary of at most `capacity` (at least 1) keys; its memory is
    /// allocated now and never grows.
    pub fn new(capacity: usize) -> SpaceSaving {
        let capacity = capacity.max(1);
        SpaceSaving { capacity, heap: Vec::with_capacity(capacity), index: HashMap::with_capacity(capacity) }
    }

    /// Count `weight` reads of `key`.
    pub fn add(&mut self, key: i64, weight: f64) {
        if let Some(&i) = self.index.get(&key) {
            self.heap[i].count += weight;
            self.sift_down(i);
        } else if self.heap.len() < self.capacity {
            self.heap.push(Counted { key, count: weight, error: 0.0 });
            let i = self.heap.len() - 1;
            self.index.insert(key, i);
            self.sift_up(i);
        } else {
            let min = self.heap[0];
            self.index.remove(&min.key);
            self.heap[0] = Counted { key, count: min.count + weight, error: min.count };
            self.index.insert(key, 0);
            self.sift_down(0);
        }
    }

    /// Scale every count by `factor` (in 0..=1), forgetting the keys left under
    /// half a read.
    pub fn decay(&mut self, factor: f64) {
        for c in &mut self.heap {
            c.count *= factor;
            c.error *= factor;
        }
        while self.heap.first().is_some_and(|c| c.count < FORGOTTEN) {
            let last = self.heap.len() - 1;
            self.swap(0, last);
            if let Some(gone) = self.heap.pop() {
                self.index.remove(&gone.key);
            }
            if !self.heap.is_empty() {
                self.sift_down(0);
            }
        }
    }

    /// The `n` largest counts, largest first (ties by key).
    pub fn top(&self, n: usize) -> Vec<Counted> {
        let mut all = self.heap.clone();
        let order = |a: &Counted, b: &Counted| b.count.total_cmp(&a.count).then(a.key.cmp(&b.key));
        if n < all.len() {
            all.select_nth_unstable_by(n, order);
            all.truncate(n);
        }
        all.sort_unstable_by(order);
        all
    }

    /// `key`'s counter, if tracked.
    pub fn get(&self, key: i64) -> Option<Counted> {
        self.index.get(&key).map(|&i| self.heap[i])
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.index.insert(self.heap[a].key, a);
        self.index.insert(self.heap[b].key, b);
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[i].count >= self.heap[parent].count {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < n && self.heap[l].count < self.heap[least].count {
                least = l;
            }
            if r < n && self.heap[r].count < self.heap[least].count {
                least = r;
            }
            if least == i {
                break;
            }
            self.swap(i, least);
            i = least;
        }
    }
}

/// The summaries, touched by the tick (and by `/internal/hotkeys`).
#[derive(Debug)]
struct Counting {
    /// One summary per [`Kind`].
    summaries: [SpaceSaving; 2],
    /// The notes of the last drain (kept for its memory).
    drained: Vec<Note>,
    /// When the counts were last decayed.
    decayed_at: Instant,
}

/// What the last tick decided.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Per [`Kind`], the hottest keys, hottest first (`top_n`, or `protect` if
    /// more).
    top: [Vec<Counted>; 2],
    /// Per [`Kind`], the keys protected by hot copies.
    protected: [Vec<i64>; 2],
}

impl Snapshot {
    /// The hottest keys of `kind`, hottest first.
    pub fn top(&self, kind: Kind) -> &[Counted] {
        &self.top[kind.index()]
    }

    /// The keys of `kind` protected by hot copies.
    pub fn protected(&self, kind: Kind) -> &[i64] {
        &self.protected[kind.index()]
    }
}

/// When writers were last heard of, by hash of their user id: what decides
/// whether a copy may be served to a signed-in viewer (see the module's
/// documentation).
#[derive(Debug)]
pub struct Writers {
    /// The clock's origin: times here are nanoseconds since, plus one (0 is
    /// "never").
    origin: Instant,
    /// [`MARK_SLOTS`] times, the latest write heard of a user hashing there.
    marks: Box<[AtomicU64]>,
    /// When the listener last resubscribed (announcements may have been lost):
    /// no copy read before is served to a signed-in viewer.
    missed_at: AtomicU64,
    /// Announcements heard (`millions_hotkeys_writers_heard_total`).
    heard: Counter,
}

impl Writers {
    fn new() -> Writers {
        Writers {
            origin: Instant::now(),
            marks: (0..MARK_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            missed_at: AtomicU64::new(0),
            heard: Counter::default(),
        }
    }

    /// Now on this clock.
    pub fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    fn slot(&self, user_id: i64) -> &AtomicU64 {
        &self.marks[sharding::fmix64(user_id as u64) as usize % MARK_SLOTS]
    }

    /// `user_id` wrote (heard now).
    fn note(&self, user_id: i64) {
        self.slot(user_id).fetch_max(self.now(), Ordering::SeqCst);
    }

    /// Whether a copy whose read began at `read_at` may be served to `viewer`.
    fn may_serve(&self, viewer: i64, read_at: u64) -> bool {
        let newest = self.slot(viewer).load(Ordering::SeqCst).max(self.missed_at.load(Ordering::SeqCst));
        read_at > newest
    }
}

/// What the invalidation listener hands announcements of writers to.
struct WriterReceiver(
    /// The marks it writes to (the same as its [`HotKeys`]').
    Arc<Writers>,
);

impl cache::LocalEvict for WriterReceiver {
    fn evict(&self, key: &str) {
        if let Ok(user_id) = key.parse::<i64>() {
            self.0.note(user_id);
            self.0.heard.inc();
        }
    }

    fn clear(&self) {
        self.0.missed_at.fetch_max(self.0.now(), Ordering::SeqCst);
    }
}

/// One hot copy.
#[derive(Debug)]
struct HotCopy<T> {
    /// Its key.
    key: i64,
    /// The value, as the shared cache held it.
    value: Arc<T>,
    /// When ([`Writers::now`]) the read that made it began: it is no older than
    /// anything this process had heard of then.
    read_at: u64,
}

/// How refreshes of copies ended, by kind (`millions_hot_copy_refreshes_total`).
#[derive(Debug, Clone)]
struct Refreshes {
    /// Stored.
    done: Counter,
    /// Not stored: this process wrote the key while it was being read.
    raced: Counter,
    /// Not stored: the shared cache did not keep what it read (a replica's
    /// answer during a failover, or an invalidation overtook the load) or
    /// found nothing.
    unkept: Counter,
    /// Not stored: the read failed.
    failed: Counter,
}

/// The hot copies of one kind: at most `protect`, each refreshed by the tick.
#[derive(Debug)]
pub struct HotCopies<T> {
    /// Which kind (metrics).
    kind: Kind,
    /// The copies by stripe of key: a handful each.
    stripes: Box<[RwLock<Vec<HotCopy<T>>>]>,
    /// Copies held: while none, a lookup takes no lock.
    held: AtomicUsize,
    /// Per stripe of keys, bumped by every write of one of them through this
    /// process, so that a refresh which read before it keeps nothing.
    epochs: Box<[AtomicU64]>,
    /// How long a copy is served, in [`Writers::now`] units.
    ttl: u64,
    /// Reads served by a copy (`millions_hot_copy_reads_total{result="hit"}`).
    hits: Counter,
    /// Reads a copy would have served but for the viewer's own newer write
    /// (`result="bypassed"`).
    bypassed: Counter,
    /// How refreshes ended.
    refreshes: Refreshes,
}

impl<T> HotCopies<T> {
    fn new(
        kind: Kind,
        ttl: Duration,
        reads: &Family<[(&'static str, &'static str); 2], Counter>,
        refreshes: &Family<[(&'static str, &'static str); 2], Counter>,
    ) -> HotCopies<T> {
        let read = |result| reads.get_or_create(&[("kind", kind.name()), ("result", result)]).clone();
        let refresh = |result| refreshes.get_or_create(&[("kind", kind.name()), ("result", result)]).clone();
        HotCopies {
            kind,
            stripes: (0..COPY_STRIPES).map(|_| RwLock::new(Vec::new())).collect(),
            held: AtomicUsize::new(0),
            epochs: (0..COPY_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            ttl: u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX),
            hits: read("hit"),
            bypassed: read("bypassed"),
            refreshes: Refreshes {
                done: refresh("done"),
                raced: refresh("raced"),
                unkept: refresh("unkept"),
                failed: refresh("failed"),
            },
        }
    }

    fn stripe_of(key: i64) -> usize {
        sharding::fmix64(key as u64) as usize % COPY_STRIPES
    }

    /// The copy of `key` for `viewer` (`None`: anonymous) at `now`, if one is
    /// held, has not lapsed, and is newer than the viewer's last write.
    fn get(&self, key: i64, viewer: Option<i64>, writers: &Writers) -> Option<Arc<T>> {
        if self.held.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.get_at(key, viewer, writers, writers.now())
    }

    /// [`HotCopies::get`] at `now` ([`Writers::now`]).
    fn get_at(&self, key: i64, viewer: Option<i64>, writers: &Writers, now: u64) -> Option<Arc<T>> {
        let copies =
            self.stripes[Self::stripe_of(key)].read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let copy = copies.iter().find(|c| c.key == key)?;
        if now.saturating_sub(copy.read_at) >= self.ttl {
            return None;
        }
        if viewer.is_some_and(|v| !writers.may_serve(v, copy.read_at)) {
            self.bypassed.inc();
            return None;
        }
        self.hits.inc();
        Some(copy.value.clone())
    }

    /// The copy of `key`, whatever its age (names in `/metrics`).
    fn peek(&self, key: i64) -> Option<Arc<T>> {
        let copies =
            self.stripes[Self::stripe_of(key)].read().unwrap_or_else(std::sync::PoisonError::into_inner);
        copies.iter().find(|c| c.key == key).map(|c| c.value.clone())
    }

    /// This process wrote `key`: its copy goes, and a refresh under way keeps
    /// nothing.
    fn forget(&self, key: i64) {
        let stripe = Self::stripe_of(key);
        self.epochs[stripe].fetch_add(1, Ordering::SeqCst);
        // Under the stripe's lock even when no copy seems held: an install that
        // checked the old epoch is then either done (and undone here) or not begun.
        let mut copies = self.stripes[stripe].write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = copies.len();
        copies.retain(|c| c.key != key);
        self.held.fetch_sub(before - copies.len(), Ordering::SeqCst);
    }

    /// What a refresh of `key` compares against when it is done.
    fn epoch(&self, key: i64) -> u64 {
        self.epochs[Self::stripe_of(key)].load(Ordering::SeqCst)
    }

    /// Whether `key` needs a refresh at `now`: no copy, or half its life gone.
    fn due(&self, key: i64, now: u64) -> bool {
        let copies =
            self.stripes[Self::stripe_of(key)].read().unwrap_or_else(std::sync::PoisonError::into_inner);
        copies.iter().find(|c| c.key == key).is_none_or(|c| now.saturating_sub(c.read_at) >= self.ttl / 2)
    }

    /// Store what a refresh of `key` that began at `read_at` (with `epoch`) found,
    /// unless this process wrote the key since.
    fn install(&self, key: i64, value: Arc<T>, read_at: u64, epoch: u64) {
        let stripe = Self::stripe_of(key);
        let mut copies = self.stripes[stripe].write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.epochs[stripe].load(Ordering::SeqCst) != epoch {
            self.refreshes.raced.inc();
            return;
        }
        match copies.iter_mut().find(|c| c.key == key) {
            Some(copy) => *copy = HotCopy { key, value, read_at },
            None => {
                copies.push(HotCopy { key, value, read_at });
                self.held.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.refreshes.done.inc();
    }

    /// Drop the copies of keys not in `keep`.
    fn retain(&self, keep: &[i64]) {
        if self.held.load(Ordering::SeqCst) == 0 {
            return;
        }
        for stripe in self.stripes.iter() {
            let mut copies = stripe.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let before = copies.len();
            copies.retain(|c| keep.contains(&c.key));
            self.held.fetch_sub(before - copies.len(), Ordering::SeqCst);
        }
    }

    /// Copies held.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Reads served by a copy.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }
}

/// The hottest keys of one web server, and their copies.
#[derive(Debug)]
pub struct HotKeys {
    /// `[hotkeys]`.
    config: HotKeysConfig,
    /// The decay rate, ln 2 / half-life: a decayed count times this is a rate
    /// per second.
    lambda: f64,
    /// The request path's note tables.
    notes: Notes,
    /// The summaries.
    counting: Mutex<Counting>,
    /// What the last tick decided.
    snapshot: Mutex<Arc<Snapshot>>,
    /// When writers were last heard of (shared with the listener's receiver).
    writers: Arc<Writers>,
    /// Hot copies of profiles, by user id.
    profiles: HotCopies<UserRecord>,
    /// Hot copies of posts, by post id.
    posts: HotCopies<CachedPost>,
    /// `millions_hot_key_reads_per_second{kind,key,user}`: the current top
    /// `top_n` of each kind only, rewritten at each scrape.
    shown: Family<[(&'static str, String); 3], Gauge<f64, AtomicU64>>,
    /// `millions_hot_copies{kind}`: copies held.
    held: Family<[(&'static str, &'static str); 1], Gauge>,
}

impl HotKeys {
    /// Counters and copies as `config` says, their metrics in `registry`.
    pub fn new(config: &HotKeysConfig, registry: &telemetry::Registry) -> HotKeys {
        let notes = Notes::new();
        let writers = Arc::new(Writers::new());
        let reads = Family::default();
        let refreshes = Family::default();
        let shown = Family::default();
        let held = Family::default();
        registry.register(
            "hot_key_reads_per_second",
            "Estimated reads per second (decayed average) of this server's hottest keys, the top hotkeys.top_n of each kind",
            shown.clone(),
        );
        registry.register("hot_copies", "Hot copies held: the protected keys of each kind", held.clone());
        registry.register(
            "hot_copy_reads",
            "Reads of a protected key by result: hit (served by its copy), bypassed (the viewer wrote since the copy was read)",
            reads.clone(),
        );
        registry.register(
            "hot_copy_refreshes",
            "Refreshes of hot copies by result: done, raced (written meanwhile), unkept (not cached), failed",
            refreshes.clone(),
        );
        registry.register(
            "hotkeys_notes_dropped",
            "Key reads not counted: their table was being drained or had no room",
            notes.dropped.clone(),
        );
        registry.register(
            "hotkeys_writers_heard",
            "Announcements of writers heard (a signed-in viewer is not served copies older than their write)",
            writers.heard.clone(),
        );
        let ttl = Duration::from_millis(config.hot_ttl_ms);
        let summaries = [SpaceSaving::new(config.tracked), SpaceSaving::new(config.tracked)];
        HotKeys {
            lambda: std::f64::consts::LN_2 / config.half_life_secs.max(1) as f64,
            config: config.clone(),
            notes,
            counting: Mutex::new(Counting {
                summaries,
                drained: Vec::with_capacity(STRIPES * SLOTS),
                decayed_at: Instant::now(),
            }),
            snapshot: Mutex::default(),
            profiles: HotCopies::new(Kind::Profile, ttl, &reads, &refreshes),
            posts: HotCopies::new(Kind::Post, ttl, &reads, &refreshes),
            writers,
            shown,
            held,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HotKeysConfig {
        &self.config
    }

    /// Count a read of `key` (cheap: see the module's documentation).
    pub fn note(&self, kind: Kind, key: i64) {
        self.notes.note(kind, key);
    }

    /// The hot copy of `user_id`'s profile for `viewer`, if it is protected
    /// and the copy may be served to them.
    pub fn profile(&self, user_id: i64, viewer: Option<i64>) -> Option<Arc<UserRecord>> {
        self.profiles.get(user_id, viewer, &self.writers)
    }

    /// The hot copy of post `post_id` for `viewer`, as [`HotKeys::profile`].
    pub fn post(&self, post_id: i64, viewer: Option<i64>) -> Option<Arc<CachedPost>> {
        self.posts.get(post_id, viewer, &self.writers)
    }

    /// The profiles' copies.
    pub fn profiles(&self) -> &HotCopies<UserRecord> {
        &self.profiles
    }

    /// The posts' copies.
    pub fn posts(&self) -> &HotCopies<CachedPost> {
        &self.posts
    }

    /// This process wrote `key` of `kind` (call it after the shared cache's
    /// invalidation): its copy goes at once.
    pub fn forget(&self, kind: Kind, key: i64) {
        match kind {
            Kind::Profile => self.profiles.forget(key),
            Kind::Post => self.posts.forget(key),
        }
    }

    /// A request of `user_id` wrote: no copy read before now is served to them
    /// here.
    pub fn wrote(&self, user_id: i64) {
        self.writers.note(user_id);
    }

    /// Tell every web server that `user_id` wrote (after the write's
    /// invalidations), so that none serves them a copy read before it. Nothing
    /// while nothing is protected anywhere (`protect = 0`).
    pub async fn announce(&self, invalidator: &cache::Invalidator, user_id: i64) {
        if self.config.protect == 0 {
            return;
        }
        if let Err(e) = invalidator.announce(WRITERS, itoa::Buffer::new().format(user_id)).await {
            // Other servers then serve this user copies up to hot_ttl_ms old.
            tracing::debug!(error = %e, user_id, "a writer was not announced everywhere");
        }
    }

    /// What the invalidation listener hands writer announcements to (register it
    /// under [`WRITERS`]).
    pub fn receiver(&self) -> Box<dyn cache::LocalEvict> {
        Box::new(WriterReceiver(self.writers.clone()))
    }

    /// Now on the clock copies and writer marks are timed by.
    pub fn now(&self) -> u64 {
        self.writers.now()
    }

    /// Whether a write of `user_id` was heard of (announced, or made here) after
    /// `since` ([`HotKeys::now`]); another user may share the mark, so tests
    /// ask about one writer at a time.
    pub fn heard_since(&self, user_id: i64, since: u64) -> bool {
        self.writers.slot(user_id).load(Ordering::SeqCst) > since
    }

    /// Drain the note tables, decay and update the summaries, choose the
    /// protected keys.
    pub fn tick(&self) -> Arc<Snapshot> {
        self.tick_at(Instant::now())
    }

    /// [`HotKeys::tick`] at `now` (tests move time on by hand).
    pub fn tick_at(&self, now: Instant) -> Arc<Snapshot> {
        let mut counting = lock(&self.counting);
        let Counting { summaries, drained, decayed_at } = &mut *counting;
        let elapsed = now.saturating_duration_since(*decayed_at).as_secs_f64();
        if elapsed > 0.0 {
            let factor = (-self.lambda * elapsed).exp();
            for summary in summaries.iter_mut() {
                summary.decay(factor);
            }
            *decayed_at = now;
        }
        drained.clear();
        self.notes.drain_into(drained);
        for note in drained.iter() {
            summaries[usize::from(note.tag - 1)].add(note.key, f64::from(note.count));
        }
        let wanted = self.config.top_n.max(self.config.protect);
        let mut snapshot = Snapshot::default();
        for kind in Kind::ALL {
            let top = summaries[kind.index()].top(wanted);
            snapshot.protected[kind.index()] = top
                .iter()
                .take(self.config.protect)
                .filter(|c| c.count * self.lambda >= self.config.min_rate)
                .map(|c| c.key)
                .collect();
            snapshot.top[kind.index()] = top;
        }
        drop(counting);
        let snapshot = Arc::new(snapshot);
        *lock(&self.snapshot) = snapshot.clone();
        snapshot
    }

    /// What the last tick decided.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        lock(&self.snapshot).clone()
    }

    /// The `n` hottest keys of `kind` now (since the last tick's drain).
    pub fn top(&self, kind: Kind, n: usize) -> Vec<Counted> {
        lock(&self.counting).summaries[kind.index()].top(n)
    }

    /// Estimated reads per second of a decayed count.
    pub fn rate(&self, counted: &Counted) -> f64 {
        counted.count * self.lambda
    }

    /// The user a key of `kind` is about, if this process holds it: the
    /// profile's username, the post author's (never loaded for this).
    fn user_of(&self, state: &AppState, kind: Kind, key: i64) -> Option<String> {
        let profile = |id: i64| {
            self.profiles.peek(id).or_else(|| state.caches().profiles.peek(itoa::Buffer::new().format(id)))
        };
        let user_id = match kind {
            Kind::Profile => key,
            Kind::Post => {
                self.posts
                    .peek(key)
                    .or_else(|| state.caches().posts.peek(itoa::Buffer::new().format(key)))?
                    .user_id
            }
        };
        profile(user_id).map(|p| p.username.clone())
    }

    /// Rewrite the gauges from the last tick: only the current top `top_n` of
    /// each kind have a series (the label sets stay bounded).
    pub fn publish_metrics(&self, state: &AppState) {
        let snapshot = self.snapshot();
        self.shown.clear();
        for kind in Kind::ALL {
            for c in snapshot.top(kind).iter().take(self.config.top_n) {
                let user = self.user_of(state, kind, c.key).unwrap_or_default();
                let labels = [("kind", kind.name().to_owned()), ("key", c.key.to_string()), ("user", user)];
                self.shown.get_or_create(&labels).set(self.rate(c));
            }
        }
        self.held.get_or_create(&[("kind", "profile")]).set(self.profiles.held() as i64);
        self.held.get_or_create(&[("kind", "post")]).set(self.posts.held() as i64);
    }
}

/// Run the tick every [`TICK`] until `stop`: counts, protected keys, and the
/// refresh of their copies through the shared cache.
pub fn spawn(state: AppState, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let snapshot = state.hotkeys().tick();
            if state.hotkeys().config.protect > 0 {
                refresh(&state, &snapshot).await;
            }
        }
    })
}

/// Refresh the copies of the protected keys that are due, and drop the others.
async fn refresh(state: &AppState, snapshot: &Snapshot) {
    let hot = state.hotkeys();
    let caches = state.caches();
    let profiles = refresh_kind(&hot.profiles, &caches.profiles, &hot.writers, snapshot, |id| async move {
        crate::service::profile_by_id(state, id).await
    });
    let posts = refresh_kind(&hot.posts, &caches.posts, &hot.writers, snapshot, |id| async move {
        match data::PostId::from_i64(id) {
            Ok(id) => crate::service::post_by_id(state, id).await,
            Err(_) => Err(ApiError::NotFound("no such post")),
        }
    });
    futures::join!(profiles, posts);
}

async fn refresh_kind<T, F, Fut>(
    copies: &HotCopies<T>,
    cache: &cache::ReadThrough<T>,
    writers: &Writers,
    snapshot: &Snapshot,
    load: F,
) where
    T: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    F: Fn(i64) -> Fut,
    Fut: Future<Output = Result<Arc<T>, ApiError>>,
{
    let keys = snapshot.protected(copies.kind);
    copies.retain(keys);
    let now = writers.now();
    let load = &load;
    let due = keys.iter().copied().filter(|key| copies.due(*key, now)).map(|key| async move {
        let epoch = copies.epoch(key);
        let read_at = writers.now();
        match load(key).await {
            // Only what the shared cache kept: the value its L1 holds now is the
            // one just returned (a replica's answer, or a load an invalidation
            // overtook, is served by it but kept nowhere, and not here either).
            Ok(value) => match cache.peek(itoa::Buffer::new().format(key)) {
                Some(kept) if Arc::ptr_eq(&kept, &value) => copies.install(key, value, read_at, epoch),
                _ => {
                    copies.refreshes.unkept.inc();
                }
            },
            Err(ApiError::NotFound(_)) => {
                copies.refreshes.unkept.inc();
            }
            Err(e) => {
                copies.refreshes.failed.inc();
                tracing::debug!(kind = copies.kind.name(), key, error = %e, "a hot copy was not refreshed");
            }
        }
    });
    futures::future::join_all(due).await;
}

/// `GET /internal/hotkeys` (internal: `lb::rules::INTERNAL_PATHS` holds
/// `/internal`, so no load balancer forwards it from its public entry).
pub fn routes() -> Router<AppState> {
    Router::new().route("/internal/hotkeys", get(list))
}

/// `GET /internal/hotkeys?kind=profile|post&n=1..100`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only this kind (both when absent).
    kind: Option<String>,
    /// How many keys of each kind (`hotkeys.top_n` when absent).
    n: Option<String>,
}

/// The most keys of a kind `/internal/hotkeys` lists.
pub const MAX_LISTED: usize = 100;

/// This server's hottest keys, for an operator or a controller that sums them
/// over servers.
#[derive(Debug, Serialize)]
struct Listing {
    /// `hotkeys.half_life_secs`: how counts decay.
    half_life_secs: u64,
    /// `hotkeys.protect`: how many keys of a kind may be protected.
    protect: usize,
    /// `hotkeys.min_rate`: reads per second a key needs to be protected.
    min_rate: f64,
    /// `hotkeys.hot_ttl_ms`: the copies' staleness bound.
    hot_ttl_ms: u64,
    /// Reads not counted so far (tables busy or full).
    notes_dropped: u64,
    /// Per kind asked for, the hottest keys, hottest first.
    kinds: BTreeMap<&'static str, Vec<Listed>>,
}

/// One hot key.
#[derive(Debug, Serialize)]
struct Listed {
    /// The user id or post id, as a string (64-bit ids do not fit JavaScript
    /// numbers).
    key: String,
    /// The user it is about (the profile's, or the post's author), if this
    /// server holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// Estimated reads per second (decayed average).
    reads_per_sec: f64,
    /// The decayed read count.
    count: f64,
    /// How much of `count` may be other keys' (Space-Saving's bound).
    error: f64,
    /// Whether it is protected by a hot copy (as of the last tick).
    protected: bool,
}

async fn list(State(state): State<AppState>, query: Result<Query<ListQuery>, QueryRejection>) -> Response {
    match listing(&state, query) {
        Ok(listing) => axum::Json(listing).into_response(),
        Err(e) => e.into_response(),
    }
}

fn listing(state: &AppState, query: Result<Query<ListQuery>, QueryRejection>) -> Result<Listing, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let hot = state.hotkeys();
    let kinds: Vec<Kind> = match q.kind.as_deref() {
        None => Kind::ALL.to_vec(),
        Some(name) => vec![
            Kind::parse(name)
                .ok_or_else(|| ApiError::bad_request("invalid_query", "kind must be profile or post"))?,
        ],
    };
    let n = match q.n.as_deref() {
        None => hot.config.top_n,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_LISTED).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("n must be a whole number from 1 to {MAX_LISTED}"),
                ));
            }
        },
    };
    let snapshot = hot.snapshot();
    let kinds = kinds
        .into_iter()
        .map(|kind| {
            let listed = hot
                .top(kind, n)
                .iter()
                .map(|c| Listed {
                    key: c.key.to_string(),
                    user: hot.user_of(state, kind, c.key),
                    reads_per_sec: hot.rate(c),
                    count: c.count,
                    error: c.error,
                    protected: snapshot.protected(kind).contains(&c.key),
                })
                .collect();
            (kind.name(), listed)
        })
        .collect();
    let c = &hot.config;
    Ok(Listing {
        half_life_secs: c.half_life_secs,
        protect: c.protect,
        min_rate: c.min_rate,
        hot_ttl_ms: c.hot_ttl_ms,
        notes_dropped: hot.notes.dropped.get(),
        kinds,
    })
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    fn config() -> HotKeysConfig {
        HotKeysConfig { min_rate: 0.0, ..HotKeysConfig::default() }
    }

    /// `draws` keys from a Zipf(`s`) law over keys 1..=`n`, and their exact counts.
    fn zipf(n: usize, s: f64, draws: usize, seed: u64) -> (Vec<i64>, HashMap<i64, u64>) {
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for w in &weights {
            acc += w / total;
            cdf.push(acc);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut exact = HashMap::new();
        let stream: Vec<i64> = (0..draws)
            .map(|_| {
                let u: f64 = rng.random();
                let key = cdf.partition_point(|c| *c < u).min(n - 1) as i64 + 1;
                *exact.entry(key).or_insert(0) += 1;
                key
            })
            .collect();
        (stream, exact)
    }

    fn exact_top(exact: &HashMap<i64, u64>, n: usize) -> Vec<i64> {
        let mut all: Vec<(i64, u64)> = exact.iter().map(|(k, c)| (*k, *c)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.into_iter().take(n).map(|(k, _)| k).collect()
    }

    #[test]
    fn space_saving_finds_the_heavy_hitters_of_a_zipf_stream_within_its_bounds() {
        let (stream, exact) = zipf(50_000, 1.1, 300_000, 7);
        let mut summary = SpaceSaving::new(256);
        for key in &stream {
            summary.add(*key, 1.0);
        }
        assert_eq!(summary.len(), 256);
        let top: Vec<i64> = summary.top(10).iter().map(|c| c.key).collect();
        assert_eq!(top, exact_top(&exact, 10), "the ten hottest, in order");
        for c in summary.top(256) {
            let truth = exact[&c.key] as f64;
            assert!(c.count >= truth, "{c:?} never under-counts ({truth})");
            assert!(c.count - c.error <= truth, "{c:?}: the error bounds the over-count ({truth})");
        }
        // Any key read more than n/capacity times is tracked.
        let bound = stream.len() as f64 / 256.0;
        for (key, count) in &exact {
            if *count as f64 > bound {
                assert!(summary.get(*key).is_some(), "key {key} read {count} times is tracked");
            }
        }
    }

    #[test]
    fn the_request_path_side_finds_them_too_and_memory_stays_bounded() {
        let registry = telemetry::Registry::default();
        let hot = HotKeys::new(&HotKeysConfig { tracked: 64, ..config() }, &registry);
        let (stream, exact) = zipf(1_000_000, 1.2, 200_000, 11);
        // Drained every 100 reads, as a tick would under this load.
        for chunk in stream.chunks(100) {
            for key in chunk {
                hot.note(Kind::Profile, *key);
            }
            hot.note(Kind::Post, 42);
            hot.tick();
        }
        let counting = lock(&hot.counting);
        assert!(counting.summaries[0].len() <= 64, "tracked keys are bounded");
        assert_eq!(counting.summaries[1].len(), 1);
        assert!(counting.drained.capacity() <= STRIPES * SLOTS, "the drain buffer never grew");
        drop(counting);
        let top: Vec<i64> = hot.top(Kind::Profile, 5).iter().map(|c| c.key).collect();
        assert_eq!(top, exact_top(&exact, 5));
        assert_eq!(hot.top(Kind::Post, 5)[0].key, 42, "kinds are counted apart");
        // A table takes SLOTS distinct keys between ticks at most; the rest are
        // dropped and counted, not stored.
        for key in 0..(10 * SLOTS as i64) {
            hot.note(Kind::Post, key);
        }
        assert!(hot.notes.dropped.get() > 0);
        hot.tick();
        assert!(lock(&hot.counting).summaries[1].len() <= 64);
    }

    #[test]
    fn yesterdays_celebrity_fades() {
        let registry = telemetry::Registry::default();
        let hot = HotKeys::new(&HotKeysConfig { half_life_secs: 10, protect: 2, ..config() }, &registry);
        let start = lock(&hot.counting).decayed_at;
        for _ in 0..10_000 {
            hot.note(Kind::Profile, 1);
        }
        let snapshot = hot.tick_at(start);
        assert_eq!(snapshot.protected(Kind::Profile), [1]);
        // Then a new celebrity, read 100 times a second for ten minutes.
        for second in 1..=600 {
            for _ in 0..100 {
                hot.note(Kind::Profile, 2);
            }
            hot.tick_at(start + Duration::from_secs(second));
        }
        let snapshot = hot.snapshot();
        assert_eq!(snapshot.protected(Kind::Profile), [2], "the old celebrity is forgotten");
        assert!(hot.top(Kind::Profile, 10).iter().all(|c| c.key != 1));
        // 100 reads a second is measured as such.
        let rate = hot.rate(&snapshot.top(Kind::Profile)[0]);
        assert!((95.0..=110.0).contains(&rate), "{rate}");
    }

    #[test]
    fn only_keys_read_often_enough_are_protected() {
        let registry = telemetry::Registry::default();
        let hot = HotKeys::new(
            &HotKeysConfig { half_life_secs: 10, protect: 3, min_rate: 5.0, ..config() },
            &registry,
        );
        // A decayed count of c is c·ln2/10 reads a second: 5/s needs about 72.
        for (key, reads) in [(1, 200), (2, 100), (3, 50), (4, 300), (5, 400)] {
            for _ in 0..reads {
                hot.note(Kind::Post, key);
            }
        }
        let snapshot = hot.tick();
        assert_eq!(snapshot.protected(Kind::Post), [5, 4, 1], "the three hottest over the rate");
        let top: Vec<i64> = snapshot.top(Kind::Post).iter().map(|c| c.key).collect();
        assert_eq!(top, [5, 4, 1, 2, 3]);
    }

    fn user(id: i64, followers: i64) -> UserRecord {
        UserRecord {
            user_id: id,
            username: format!("u{id}"),
            display_name: "U".into(),
            bio: String::new(),
            followers_count: followers,
            following_count: 0,
            posts_count: 0,
            created_ms: 0,
            avatar: None,
        }
    }

    #[test]
    fn a_copy_is_served_until_it_lapses_or_is_written() {
        let registry = telemetry::Registry::default();
        let hot = HotKeys::new(&HotKeysConfig { hot_ttl_ms: 200, ..config() }, &registry);
        let copies = &hot.profiles;
        assert!(hot.profile(7, None).is_none(), "no copy yet");
        let epoch = copies.epoch(7);
        copies.install(7, Arc::new(user(7, 1)), hot.now(), epoch);
        assert_eq!(hot.profile(7, None).unwrap().followers_count, 1);
        assert_eq!(copies.held(), 1);
        assert!(!copies.due(7, hot.now()), "fresh");
        assert!(copies.due(7, hot.now() + 100_000_000), "due at half its life");

        // A write here drops it, and a refresh that read before keeps nothing.
        let epoch = copies.epoch(7);
        let read_at = hot.now();
        hot.forget(Kind::Profile, 7);
        assert!(hot.profile(7, None).is_none());
        copies.install(7, Arc::new(user(7, 1)), read_at, epoch);
        assert!(hot.profile(7, None).is_none(), "the raced refresh was not kept");
        assert_eq!(copies.refreshes.raced.get(), 1);

        // A copy past its lifetime is not served.
        let epoch = copies.epoch(7);
        let read_at = hot.now();
        copies.install(7, Arc::new(user(7, 2)), read_at, epoch);
        let just_before = read_at + 199_999_999;
        assert!(copies.get_at(7, None, &hot.writers, just_before).is_some(), "served up to its lifetime");
        assert!(copies.get_at(7, None, &hot.writers, read_at + 200_000_000).is_none(), "lapsed");
        copies.retain(&[]);
        assert_eq!(copies.held(), 0);
    }

    #[test]
    fn a_viewer_is_never_served_a_copy_older_than_their_write() {
        let registry = telemetry::Registry::default();
        let hot = HotKeys::new(&config(), &registry);
        let copies = &hot.profiles;
        let epoch = copies.epoch(7);
        copies.install(7, Arc::new(user(7, 1)), hot.now(), epoch);
        assert!(hot.profile(7, Some(100)).is_some(), "no write heard of viewer 100");

        // Viewer 100 wrote (here, or heard through the channel).
        hot.wrote(100);
        assert!(hot.profile(7, Some(100)).is_none(), "older than their write");
        assert_eq!(copies.bypassed.get(), 1);
        assert!(hot.profile(7, None).is_some(), "still served to others");
        let receiver = hot.receiver();
        receiver.evict("200");
        assert!(hot.profile(7, Some(200)).is_none(), "an announced writer too");
        receiver.evict("not a user id");

        // A copy read after the writes is served to them.
        let epoch = copies.epoch(7);
        copies.install(7, Arc::new(user(7, 2)), hot.now() + 1, epoch);
        assert_eq!(hot.profile(7, Some(100)).unwrap().followers_count, 2);
        assert_eq!(hot.profile(7, Some(200)).unwrap().followers_count, 2);

        // Messages may have been missed: no older copy for any signed-in viewer.
        receiver.clear();
        assert!(hot.profile(7, Some(300)).is_none());
        assert!(hot.profile(7, None).is_some(), "anonymous reads are owed nothing");
    }
}
