//! The edge's disk tier: objects kept in files under the memory tier, so that a
//! restarted edge serves what it had instead of asking the origin again.
//!
//! - **Files.** One file per object (`{slot:032x}.obj`, the slot being the cache
//!   key's combined hash, as in the memory tier). Each carries everything needed
//!   to serve and purge it without the process that wrote it: a magic and version
//!   header, a flags byte (soft-purged), its slot, the request path and surrogate
//!   keys (for purges by path, prefix and tag), pingora-cache's serialized
//!   `CacheMeta` (freshness, validators, the response header) and the body, with
//!   a CRC-32 of the head and one of the body. A file is written under a
//!   temporary name and renamed: a crash never leaves half an object under a
//!   final name. It is not fsynced: a cache may lose objects at a power loss (a
//!   loss is a miss), and a torn file fails its length or checksum and is
//!   dropped; a flush per miss would cost more than it saves. Purges, rare and
//!   where a lost update would resurrect an object, are synced (a soft purge's
//!   mark with `fdatasync`, a hard purge's removals with the directory's fsync).
//! - **Index.** At start the directory is scanned (each file's head read and
//!   checked, not its body); a file that cannot be read, is truncated, fails its
//!   checksum or is not ours by its magic is logged, counted and removed, and so
//!   are temporary files a crash left. Files not named like ours are left alone.
//!   The index (slot → size, path, tags, last use) lives in memory.
//! - **Budget.** Beyond `bytes`, the least recently used files are removed. Plain
//!   LRU, not TinyUFO: the memory tier above already filters one-off objects out
//!   of what is hot, the disk is the large second chance, and its order must
//!   survive a restart (files' modification times, touched on every disk hit).
//!   An object leaving the memory tier counts as a use.
//! - **Threads.** Every change to the directory (writes, meta updates, purges,
//!   evictions) runs in order on one thread of its own, fed by a bounded queue: a
//!   purge queued after a write sees its file, and the serving threads never wait
//!   on the disk to store. Reads (a lookup that missed memory) run on the
//!   runtime's blocking pool. A memory hit does no disk work.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use pingora_cache::CacheMeta;
use tokio::sync::{mpsc, oneshot};

use crate::config::DiskSection;
use crate::metrics::Metrics;
use crate::store::{Index, MAX_OBJECT_BYTES, Meta, Object, Purge};

/// The first bytes of every file of ours.
const MAGIC: &[u8; 6] = b"MCDNOB";
/// The format's version; a file of another version is dropped at start.
const VERSION: u8 = 1;
/// Where the flags byte is.
const FLAGS_AT: usize = 7;
/// Flag: soft-purged (the next use revalidates).
const FLAG_STALE: u8 = 1;
/// The fixed part of the head: magic, version, flags, slot, five lengths, two
/// checksums.
const FIXED: usize = 56;
/// The longest path, tags and meta kept (a larger head is not written).
const MAX_HEAD: usize = 1 << 20;
/// Object files end so.
const SUFFIX: &str = ".obj";
/// Files being written end so (a crash may leave some; removed at start).
const TMP_SUFFIX: &str = ".tmp";
/// Writes queued at most, and their bytes: beyond, a write is dropped (counted
/// as `queue_full`), the object still in memory.
const QUEUE_JOBS: usize = 1024;
const QUEUE_BYTES: u64 = 64 << 20;

/// Why the disk tier cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("disk.dir {dir}: {why}")]
pub struct DiskError {
    /// The directory.
    pub dir: PathBuf,
    /// Why.
    pub why: String,
}

/// An object's file name.
fn file_name(slot: u128) -> String {
    format!("{slot:032x}{SUFFIX}")
}

/// The slot a file name stands for, if it is one of ours.
fn slot_of(name: &str) -> Option<u128> {
    let hex = name.strip_suffix(SUFFIX)?;
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u128::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Whether a file name is one of the writer's temporary files
/// (`{slot:032x}.{n}.tmp`) or the start's write probe.
fn is_tmp(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(TMP_SUFFIX) else { return false };
    stem.starts_with(".probe-")
        || stem.split_once('.').is_some_and(|(hex, seq)| {
            hex.len() == 32
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
                && !seq.is_empty()
                && seq.bytes().all(|b| b.is_ascii_digit())
        })
}

/// The lengths a file's fixed head gives.
#[derive(Debug, Clone, Copy)]
struct Layout {
    slot: u128,
    stale: bool,
    path: usize,
    tags: usize,
    internal: usize,
    header: usize,
    body: u64,
    head_crc: u32,
    body_crc: u32,
}

impl Layout {
    /// Bytes of the head after its fixed part.
    fn variable(&self) -> usize {
        self.path + self.tags + self.internal + self.header
    }

    /// Where the body starts.
    fn body_at(&self) -> usize {
        FIXED + self.variable()
    }

    /// The whole file's length.
    fn total(&self) -> u64 {
        self.body_at() as u64 + self.body
    }

    /// Read the fixed head.
    fn parse(fixed: &[u8]) -> Result<Layout, String> {
        if fixed.len() < FIXED || &fixed[..6] != MAGIC {
            return Err("not an object file of the edge (magic)".into());
        }
        if fixed[6] != VERSION {
            return Err(format!("format version {} (this edge reads {VERSION})", fixed[6]));
        }
        let u32_at = |i: usize| u32::from_le_bytes(fixed[i..i + 4].try_into().expect("4 bytes"));
        let layout = Layout {
            stale: fixed[FLAGS_AT] & FLAG_STALE != 0,
            slot: u128::from_le_bytes(fixed[8..24].try_into().expect("16 bytes")),
            path: u32_at(24) as usize,
            tags: u32_at(28) as usize,
            internal: u32_at(32) as usize,
            header: u32_at(36) as usize,
            body: u64::from_le_bytes(fixed[40..48].try_into().expect("8 bytes")),
            head_crc: u32_at(48),
            body_crc: u32_at(52),
        };
        if layout.variable() > MAX_HEAD || layout.body > MAX_OBJECT_BYTES as u64 {
            return Err("lengths out of range".into());
        }
        Ok(layout)
    }
}

/// A file's head (everything before the body), with its checksums.
fn encode_head(
    slot: u128,
    stale: bool,
    path: &str,
    tags: &[String],
    meta: &Meta,
    body_len: u64,
    body_crc: u32,
) -> Result<Vec<u8>, String> {
    let (internal, header) = meta.to_cache_meta().serialize().map_err(|e| e.to_string())?;
    let tags = tags.join("\n");
    if path.len() + tags.len() + internal.len() + header.len() > MAX_HEAD {
        return Err("the head is too large".into());
    }
    let mut h = Vec::with_capacity(FIXED + path.len() + tags.len() + internal.len() + header.len());
    h.extend_from_slice(MAGIC);
    h.push(VERSION);
    h.push(if stale { FLAG_STALE } else { 0 });
    h.extend_from_slice(&slot.to_le_bytes());
    for n in [path.len(), tags.len(), internal.len(), header.len()] {
        h.extend_from_slice(&(n as u32).to_le_bytes());
    }
    h.extend_from_slice(&body_len.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    for part in [path.as_bytes(), tags.as_bytes(), &internal, &header] {
        h.extend_from_slice(part);
    }
    let crc = head_crc(&h);
    h[48..52].copy_from_slice(&crc.to_le_bytes());
    h[52..56].copy_from_slice(&body_crc.to_le_bytes());
    Ok(h)
}

/// The head's checksum: the fixed part but the flags (set in place by a soft
/// purge) and the checksums, then the variable part.
fn head_crc(head: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(&head[8..48]);
    c.update(&head[FIXED..]);
    c.finalize()
}

/// A file's head, checked: its path, tags and meta.
struct Head {
    path: String,
    tags: Vec<String>,
    meta: CacheMeta,
}

/// Check and parse a whole head (`head` from the file's first byte to its body).
fn parse_head(layout: &Layout, head: &[u8]) -> Result<Head, String> {
    if head_crc(head) != layout.head_crc {
        return Err("head checksum mismatch".into());
    }
    let mut at = FIXED;
    let mut take = |n: usize| {
        let part = &head[at..at + n];
        at += n;
        part
    };
    let path = std::str::from_utf8(take(layout.path)).map_err(|_| "path not UTF-8")?.to_owned();
    let tags = std::str::from_utf8(take(layout.tags)).map_err(|_| "tags not UTF-8")?;
    let tags = tags.split('\n').filter(|t| !t.is_empty()).map(str::to_owned).collect();
    let internal = take(layout.internal);
    let header = take(layout.header);
    let meta = CacheMeta::deserialize(internal, header).map_err(|e| format!("meta: {e}"))?;
    Ok(Head { path, tags, meta })
}

/// An object read back from its file.
pub(crate) struct Loaded {
    pub(crate) meta: Meta,
    pub(crate) path: String,
    pub(crate) tags: Vec<String>,
    pub(crate) body: Bytes,
    pub(crate) stale: bool,
}

/// Read and check a whole file. `Ok(None)`: it is gone (evicted or purged since
/// the index was read).
fn read_object(file: &Path, slot: u128) -> Result<Option<Loaded>, String> {
    let mut f = match File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut data = Vec::new();
    f.read_to_end(&mut data).map_err(|e| e.to_string())?;
    let layout = Layout::parse(&data)?;
    if data.len() as u64 != layout.total() {
        return Err(format!("truncated: {} bytes of {}", data.len(), layout.total()));
    }
    if layout.slot != slot {
        return Err("holds another key".into());
    }
    let head = parse_head(&layout, &data[..layout.body_at()])?;
    if crc32fast::hash(&data[layout.body_at()..]) != layout.body_crc {
        return Err("body checksum mismatch".into());
    }
    // Its use, for the order of evictions after a restart.
    let _ = f.set_modified(SystemTime::now());
    let body = Bytes::from(data).slice(layout.body_at()..);
    Ok(Some(Loaded {
        meta: Meta::of(&head.meta),
        path: head.path,
        tags: head.tags,
        body,
        stale: layout.stale,
    }))
}

/// Check a file's head at start (its body is checked when it is read).
fn scan_file(file: &Path, slot: u128) -> Result<(Entry, SystemTime), String> {
    let mut f = File::open(file).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut fixed = [0; FIXED];
    f.read_exact(&mut fixed).map_err(|_| format!("truncated: {len} bytes"))?;
    let layout = Layout::parse(&fixed)?;
    if len != layout.total() {
        return Err(format!("truncated: {len} bytes of {}", layout.total()));
    }
    if layout.slot != slot {
        return Err("its name is not its key".into());
    }
    let mut head = vec![0; layout.body_at()];
    head[..FIXED].copy_from_slice(&fixed);
    f.read_exact(&mut head[FIXED..]).map_err(|e| e.to_string())?;
    let Head { path, tags, .. } = parse_head(&layout, &head)?;
    let used = f.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    Ok((Entry { size: len, path, tags, last_use: 0 }, used))
}

/// What the index knows of a file.
struct Entry {
    /// The file's length.
    size: u64,
    /// The request path it answers.
    path: String,
    /// Its surrogate keys.
    tags: Vec<String>,
    /// Its place in the LRU order.
    last_use: u64,
}

/// The index of the files: by slot, path and tag, and in order of use.
#[derive(Default)]
struct State {
    entries: HashMap<u128, Entry>,
    index: Index,
    /// Last use → slot; the first is the least recently used.
    lru: BTreeMap<u64, u128>,
    tick: u64,
    bytes: u64,
}

impl State {
    fn insert(&mut self, slot: u128, mut entry: Entry) {
        self.remove(slot);
        self.tick += 1;
        entry.last_use = self.tick;
        self.lru.insert(self.tick, slot);
        self.index.add(slot, &entry.path, &entry.tags);
        self.bytes += entry.size;
        self.entries.insert(slot, entry);
    }

    fn remove(&mut self, slot: u128) -> Option<Entry> {
        let e = self.entries.remove(&slot)?;
        self.lru.remove(&e.last_use);
        self.index.remove(slot, &e.path, &e.tags);
        self.bytes -= e.size;
        Some(e)
    }

    fn touch(&mut self, slot: u128) {
        if let Some(e) = self.entries.get_mut(&slot) {
            self.lru.remove(&e.last_use);
            self.tick += 1;
            e.last_use = self.tick;
            self.lru.insert(self.tick, slot);
        }
    }
}

/// A change to the directory, done in order by the writer thread.
enum Job {
    /// Store an object (new, or revalidated with its body in memory).
    Write(Arc<Object>),
    /// Replace a stored object's meta and tags, its body kept (a revalidation of
    /// an object that is on disk only).
    Rewrite { slot: u128, meta: Box<Meta>, tags: Vec<String> },
    /// Remove (hard) or mark (soft) what a purge names; answers the slots.
    Purge { purge: Purge, soft: bool, done: oneshot::Sender<Vec<u128>> },
    /// Remove one object (an invalidation, or a file found bad); answers
    /// whether there was one.
    Remove { slot: u128, done: Option<oneshot::Sender<bool>> },
    /// Finish what is queued, then stop.
    Close(oneshot::Sender<()>),
}

/// The disk tier of one edge.
pub struct Disk {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    jobs: mpsc::Sender<Job>,
    /// Bytes of bodies queued for writing.
    queued: Arc<AtomicU64>,
    metrics: Metrics,
    closed: AtomicBool,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Disk {
    /// Open the disk tier: the directory checked (created if missing; refused if
    /// it is not a directory or cannot be written), its files scanned into the
    /// index (bad ones removed), the budget enforced, the writer thread started.
    pub async fn open(section: &DiskSection, metrics: Metrics) -> Result<Disk, DiskError> {
        let (dir, budget) = (section.dir.clone(), section.bytes);
        let scanned = {
            let (dir, metrics) = (dir.clone(), metrics.clone());
            tokio::task::spawn_blocking(move || -> Result<State, String> {
                prepare(&dir)?;
                let state = Mutex::new(scan(&dir, &metrics)?);
                evict(&dir, &state, budget, &metrics);
                Ok(state.into_inner().unwrap_or_else(|e| e.into_inner()))
            })
            .await
        };
        let state = match scanned {
            Ok(Ok(state)) => state,
            Ok(Err(why)) => return Err(DiskError { dir, why }),
            Err(e) => return Err(DiskError { dir, why: e.to_string() }),
        };
        tracing::info!(dir = %dir.display(), objects = state.entries.len(), bytes = state.bytes, budget, "disk tier opened");
        let state = Arc::new(Mutex::new(state));
        let queued = Arc::new(AtomicU64::new(0));
        let (jobs, rx) = mpsc::channel(QUEUE_JOBS);
        let writer = Writer {
            dir: dir.clone(),
            budget,
            state: state.clone(),
            metrics: metrics.clone(),
            queued: queued.clone(),
            seq: 0,
        };
        std::thread::Builder::new()
            .name("cdn-disk".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| DiskError { dir: dir.clone(), why: format!("cannot start its thread: {e}") })?;
        Ok(Disk { dir, state, jobs, queued, metrics, closed: AtomicBool::new(false) })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of the files held now.
    pub fn bytes(&self) -> u64 {
        lock(&self.state).bytes
    }

    /// Objects held now.
    pub fn objects(&self) -> u64 {
        lock(&self.state).entries.len() as u64
    }

    /// Whether the index holds `slot`.
    pub(crate) fn contains(&self, slot: u128) -> bool {
        lock(&self.state).entries.contains_key(&slot)
    }

    /// Count `slot` as used (an object leaving the memory tier).
    pub(crate) fn touch(&self, slot: u128) {
        lock(&self.state).touch(slot);
    }

    /// Read `slot`'s object, if the index holds it and its file is good (a bad
    /// one is removed), on the blocking pool.
    pub(crate) async fn lookup(&self, slot: u128) -> Option<Loaded> {
        if self.closed.load(Ordering::Acquire) || !self.contains(slot) {
            return None;
        }
        let file = self.dir.join(file_name(slot));
        let read = tokio::task::spawn_blocking(move || read_object(&file, slot)).await;
        match read {
            Ok(Ok(Some(loaded))) => {
                lock(&self.state).touch(slot);
                self.metrics.disk_hits.inc();
                Some(loaded)
            }
            Ok(Ok(None)) => None,
            Ok(Err(why)) => {
                tracing::warn!(dir = %self.dir.display(), file = %file_name(slot), %why, "a bad file on the disk tier: removed");
                self.metrics.disk_error("read");
                let _ = self.jobs.try_send(Job::Remove { slot, done: None });
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "a disk read failed");
                self.metrics.disk_error("read");
                None
            }
        }
    }

    /// Queue `object` for writing; dropped (counted) when the writer is behind.
    pub(crate) fn write(&self, object: Arc<Object>) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let size = object.body.len() as u64;
        if self.queued.fetch_add(size, Ordering::AcqRel) + size > QUEUE_BYTES
            || self.jobs.try_send(Job::Write(object)).is_err()
        {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            self.metrics.disk_error("queue_full");
        }
    }

    /// Queue a meta update of an object held on disk only.
    pub(crate) fn rewrite(&self, slot: u128, meta: Meta, tags: Vec<String>) {
        if self.jobs.try_send(Job::Rewrite { slot, meta: Box::new(meta), tags }).is_err() {
            self.metrics.disk_error("queue_full");
        }
    }

    /// Remove (hard) or mark stale (soft) what `purge` names, after every write
    /// queued before; returns the slots, once done.
    pub(crate) async fn purge(&self, purge: Purge, soft: bool) -> Vec<u128> {
        let (done, answer) = oneshot::channel();
        if self.jobs.send(Job::Purge { purge, soft, done }).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Remove one object, after every write queued before.
    pub(crate) async fn remove(&self, slot: u128) -> bool {
        let (done, answer) = oneshot::channel();
        if self.jobs.send(Job::Remove { slot, done: Some(done) }).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// Finish the queued writes and stop the writer; the tier is unused after.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (done, answer) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).await.is_ok() {
            let _ = answer.await;
        }
    }
}

/// Check the directory: created if missing, a directory, writable.
fn prepare(dir: &Path) -> Result<(), String> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err("exists and is not a directory".into()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| format!("cannot be created: {e}"))?;
        }
        Err(e) => return Err(format!("cannot be read: {e}")),
    }
    let probe = dir.join(format!(".probe-{}{TMP_SUFFIX}", std::process::id()));
    File::create(&probe).map_err(|e| format!("is not writable: {e}"))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Read every file's head into an index, oldest use first; remove what is bad.
fn scan(dir: &Path, metrics: &Metrics) -> Result<State, String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| format!("cannot be listed: {e}"))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if is_tmp(name) {
            // Half written when its edge stopped.
            let _ = fs::remove_file(&path);
            continue;
        }
        let Some(slot) = slot_of(name) else {
            tracing::warn!(dir = %dir.display(), file = name, "a file the disk tier does not know: left alone");
            continue;
        };
        match scan_file(&path, slot) {
            Ok((e, used)) => found.push((used, slot, e)),
            Err(why) => {
                tracing::warn!(dir = %dir.display(), file = name, %why, "a bad file on the disk tier: skipped and removed");
                metrics.disk_error("scan");
                let _ = fs::remove_file(&path);
            }
        }
    }
    found.sort_by_key(|(used, _, _)| *used);
    let mut state = State::default();
    for (_, slot, e) in found {
        state.insert(slot, e);
    }
    Ok(state)
}

/// Remove least recently used files until the rest fit `budget`.
fn evict(dir: &Path, state: &Mutex<State>, budget: u64, metrics: &Metrics) {
    loop {
        let slot = {
            let mut s = lock(state);
            if s.bytes <= budget {
                return;
            }
            let Some((_, &slot)) = s.lru.first_key_value() else { return };
            s.remove(slot);
            slot
        };
        remove_file(dir, slot, metrics);
        metrics.disk_evictions.inc();
    }
}

fn remove_file(dir: &Path, slot: u128, metrics: &Metrics) {
    match fs::remove_file(dir.join(file_name(slot))) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a file of the disk tier");
            metrics.disk_error("remove");
        }
    }
}

/// The thread that changes the directory.
struct Writer {
    dir: PathBuf,
    budget: u64,
    state: Arc<Mutex<State>>,
    metrics: Metrics,
    queued: Arc<AtomicU64>,
    /// Names temporary files apart.
    seq: u64,
}

impl Writer {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.blocking_recv() {
            match job {
                Job::Write(object) => {
                    let size = object.body.len() as u64;
                    self.write(&object);
                    self.queued.fetch_sub(size, Ordering::AcqRel);
                }
                Job::Rewrite { slot, meta, tags } => self.rewrite(slot, &meta, &tags),
                Job::Purge { purge, soft, done } => {
                    let _ = done.send(self.purge(&purge, soft));
                }
                Job::Remove { slot, done } => {
                    let removed = lock(&self.state).remove(slot).is_some();
                    if removed {
                        remove_file(&self.dir, slot, &self.metrics);
                        self.sync_dir();
                    }
                    if let Some(done) = done {
                        let _ = done.send(removed);
                    }
                }
                Job::Close(done) => {
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    fn write(&mut self, o: &Object) {
        let stale = o.stale.load(Ordering::Acquire);
        let head = encode_head(
            o.slot,
            stale,
            &o.path,
            &o.tags,
            &o.meta,
            o.body.len() as u64,
            crc32fast::hash(&o.body),
        );
        let result = head.and_then(|head| {
            self.store(o.slot, |f| {
                f.write_all(&head)?;
                f.write_all(&o.body)
            })
        });
        self.stored(o.slot, result, &o.path, &o.tags);
    }

    fn rewrite(&mut self, slot: u128, meta: &Meta, tags: &[String]) {
        let Some(path) = lock(&self.state).entries.get(&slot).map(|e| e.path.clone()) else { return };
        let file = self.dir.join(file_name(slot));
        let result = (|| {
            let mut old = File::open(&file).map_err(|e| e.to_string())?;
            let mut fixed = [0; FIXED];
            old.read_exact(&mut fixed).map_err(|e| e.to_string())?;
            let layout = Layout::parse(&fixed)?;
            let head = encode_head(slot, false, &path, tags, meta, layout.body, layout.body_crc)?;
            old.seek(SeekFrom::Start(layout.body_at() as u64)).map_err(|e| e.to_string())?;
            self.store(slot, |f| {
                f.write_all(&head)?;
                let copied = io::copy(&mut (&mut old).take(layout.body), f)?;
                if copied != layout.body {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the old file is truncated"));
                }
                Ok(())
            })
        })();
        self.stored(slot, result, &path, tags);
    }

    /// Write a file under a temporary name, then rename it to `slot`'s: its
    /// length.
    fn store(&mut self, slot: u128, fill: impl FnOnce(&mut File) -> io::Result<()>) -> Result<u64, String> {
        self.seq += 1;
        let tmp = self.dir.join(format!("{slot:032x}.{}{TMP_SUFFIX}", self.seq));
        let written = (|| {
            let mut f = File::create_new(&tmp)?;
            fill(&mut f)?;
            let len = f.stream_position()?;
            drop(f);
            fs::rename(&tmp, self.dir.join(file_name(slot)))?;
            Ok(len)
        })();
        written.map_err(|e: io::Error| {
            let _ = fs::remove_file(&tmp);
            e.to_string()
        })
    }

    /// Index a stored file (or count the failure), then keep to the budget.
    fn stored(&mut self, slot: u128, result: Result<u64, String>, path: &str, tags: &[String]) {
        match result {
            Ok(size) => {
                let entry = Entry { size, path: path.to_owned(), tags: tags.to_vec(), last_use: 0 };
                lock(&self.state).insert(slot, entry);
                self.metrics.disk_writes.inc();
                evict(&self.dir, &self.state, self.budget, &self.metrics);
            }
            Err(why) => {
                tracing::warn!(dir = %self.dir.display(), %why, "cannot write to the disk tier");
                self.metrics.disk_error("write");
            }
        }
    }

    fn purge(&mut self, purge: &Purge, soft: bool) -> Vec<u128> {
        let slots = lock(&self.state).index.slots(purge);
        for &slot in &slots {
            if soft {
                match mark_stale(&self.dir.join(file_name(slot))) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "cannot mark a file stale: removed");
                        self.metrics.disk_error("mark");
                        // Unmarked, it would come back fresh after a restart.
                        lock(&self.state).remove(slot);
                        remove_file(&self.dir, slot, &self.metrics);
                    }
                }
            } else {
                lock(&self.state).remove(slot);
                remove_file(&self.dir, slot, &self.metrics);
            }
        }
        if !soft && !slots.is_empty() {
            self.sync_dir();
        }
        slots
    }

    /// Make removals durable.
    fn sync_dir(&self) {
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            tracing::debug!(error = %e, "cannot sync the disk tier's directory");
        }
    }
}

/// Set a file's soft-purged flag in place, durably.
fn mark_stale(file: &Path) -> io::Result<()> {
    let f = File::options().read(true).write(true).open(file)?;
    let mut flags = [0];
    f.read_exact_at(&mut flags, FLAGS_AT as u64)?;
    f.write_all_at(&[flags[0] | FLAG_STALE], FLAGS_AT as u64)?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_slots() {
        let slot = 0x0123_4567_89ab_cdef_0011_2233_4455_6677_u128;
        assert_eq!(slot_of(&file_name(slot)), Some(slot));
        for other in ["notes.txt", "0123.obj", "zz23456789abcdef0011223344556677.obj", ".obj"] {
            assert_eq!(slot_of(other), None, "{other}");
        }
        assert!(is_tmp(&format!("{slot:032x}.17.tmp")) && is_tmp(".probe-42.tmp"));
        for other in ["work.tmp", "0123.1.tmp", &format!("{slot:032x}.obj"), &format!("{slot:032x}..tmp")] {
            assert!(!is_tmp(other), "{other}");
        }
    }

    fn meta(etag: &str, tags: &str) -> Meta {
        let mut header = pingora_http::ResponseHeader::build(200, None).unwrap();
        header.append_header("etag", etag).unwrap();
        header.append_header("surrogate-key", tags).unwrap();
        let now = SystemTime::now();
        Meta::of(&CacheMeta::new(now + std::time::Duration::from_secs(60), now, 0, 0, header))
    }

    /// A write, a meta update of the file (its body kept), a restart: what is
    /// read back is the new head over the old body, found by its new tag.
    #[tokio::test]
    async fn a_rewritten_head_keeps_the_body_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let section = DiskSection { dir: dir.path().to_owned(), bytes: 1 << 20 };
        let slot = 42;
        let disk = Disk::open(&section, Metrics::default()).await.unwrap();
        disk.write(Arc::new(Object {
            slot,
            path: "/a.jpg".into(),
            tags: vec!["old".into()],
            meta: meta("\"v1\"", "old"),
            body: Bytes::from_static(b"the body"),
            stale: AtomicBool::new(false),
        }));
        disk.rewrite(slot, meta("\"v2\"", "new"), vec!["new".into()]);
        disk.close().await;

        let disk = Disk::open(&section, Metrics::default()).await.unwrap();
        let loaded = disk.lookup(slot).await.expect("on disk");
        assert_eq!(
            (loaded.path.as_str(), &loaded.body[..], loaded.stale),
            ("/a.jpg", &b"the body"[..], false)
        );
        assert_eq!(loaded.meta.to_cache_meta().headers()["etag"], "\"v2\"");
        assert_eq!(disk.purge(Purge::Tag("old".into()), false).await, Vec::<u128>::new());
        assert_eq!(disk.purge(Purge::Tag("new".into()), true).await, vec![slot]);
        assert!(disk.lookup(slot).await.unwrap().stale, "marked by the soft purge");
        assert_eq!(disk.purge(Purge::Prefix("/a".into()), false).await, vec![slot]);
        assert!(disk.lookup(slot).await.is_none());
        assert_eq!((disk.objects(), disk.bytes()), (0, 0));
        disk.close().await;
    }
}
