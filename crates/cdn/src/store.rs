//! The edge's memory tier: pingora-cache's [`Storage`] over TinyUFO.
//!
//! Objects are kept whole (headers and body) under their cache key's combined
//! hash (the primary key and, for `Vary`, the variance), weighted by their size in
//! bytes: TinyUFO admits a new object only if it is likely to be used more than
//! what it would evict (TinyLFU), and evicts with S3-FIFO, so a scan of one-off
//! objects does not flush the popular ones as it would from an LRU. A response is
//! written here only once it is complete: a reader never sees half an object, and
//! concurrent misses wait on pingora-cache's lock for the one fetch instead.
//!
//! An index beside the objects knows each object's path and surrogate keys (the
//! origin's `Surrogate-Key` header), so that a purge can name a path, a prefix of
//! paths or a tag ([`EdgeStore::purge`]); hard purges drop objects, soft ones mark
//! them stale so that their next use revalidates.
//!
//! With a disk tier ([`crate::disk`]) under it, every object that completes (and
//! every revalidated one) is also queued for writing to disk; a lookup that
//! misses memory looks on disk and, on a hit, serves the object and offers it
//! to the memory tier (TinyUFO admits it or not); purges reach both tiers.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_cache::key::{CacheHashKey, CompactCacheKey};
use pingora_cache::storage::{HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta, Storage};
use pingora_error::{Error, ErrorType, Result};

use crate::disk::Disk;

/// A response's metadata, kept as parts (not pingora-cache's serialized form,
/// whose header is zstd-compressed: decompressing it on every hit was about a
/// fifth of the edge's own CPU on small objects).
pub(crate) struct Meta {
    /// Until when it is fresh.
    fresh_until: SystemTime,
    /// When it was stored.
    created: SystemTime,
    /// When it was last stored or revalidated (its age counts from here).
    updated: SystemTime,
    /// Its epoch override, if pingora-cache set one.
    epoch_override: Option<SystemTime>,
    /// stale-while-revalidate, seconds.
    swr: u32,
    /// stale-if-error, seconds.
    sie: u32,
    /// Its `Vary` variance, if any.
    variance: Option<pingora_cache::key::HashBinary>,
    /// The response header.
    header: pingora_http::ResponseHeader,
}

impl Meta {
    pub(crate) fn of(meta: &CacheMeta) -> Meta {
        Meta {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            updated: meta.updated(),
            epoch_override: meta.epoch_override(),
            swr: meta.stale_while_revalidate_sec(),
            sie: meta.stale_if_error_sec(),
            variance: meta.variance(),
            header: meta.response_header_copy(),
        }
    }

    /// A `CacheMeta` equal to the one kept for what a hit uses: freshness, age
    /// (from `updated`, through the epoch override), stale windows, variance.
    pub(crate) fn to_cache_meta(&self) -> CacheMeta {
        let mut meta =
            CacheMeta::new(self.fresh_until, self.created, self.swr, self.sie, self.header.clone());
        if let Some(v) = self.variance {
            meta.set_variance(v);
        }
        if let Some(epoch) = self.epoch_override.or((self.updated != self.created).then_some(self.updated)) {
            meta.set_epoch_override(epoch);
        }
        meta
    }

    /// Roughly what it costs in memory.
    fn size(&self) -> usize {
        128 + self.header.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 16).sum::<usize>()
    }
}

/// A stored response: its metadata and body.
pub(crate) struct Object {
    /// Where it is stored (TinyUFO hands back only the object when it evicts).
    pub(crate) slot: u128,
    /// The request path with query it answers, for purges by path or prefix.
    pub(crate) path: String,
    /// Its surrogate keys, for purges by tag.
    pub(crate) tags: Vec<String>,
    /// Freshness and the response header.
    pub(crate) meta: Meta,
    /// The whole body; cloned cheaply into every hit.
    pub(crate) body: Bytes,
    /// Soft-purged: served only after a revalidation.
    pub(crate) stale: AtomicBool,
}

/// The most surrogate keys kept per object, and the longest; beyond, ignored.
const MAX_TAGS: usize = 32;
const MAX_TAG_BYTES: usize = 128;

/// The surrogate keys of a response: its `Surrogate-Key` headers, split at
/// whitespace.
pub fn surrogate_keys(headers: &http::HeaderMap) -> Vec<String> {
    let mut tags: Vec<String> = headers
        .get_all("surrogate-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(str::split_ascii_whitespace)
        .filter(|t| t.len() <= MAX_TAG_BYTES)
        .map(str::to_owned)
        .collect();
    tags.sort();
    tags.dedup();
    tags.truncate(MAX_TAGS);
    tags
}

/// What a purge names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// Objects answering exactly this path (with its query), every variant.
    Path(String),
    /// Objects whose path starts with this.
    Prefix(String),
    /// Objects tagged with this surrogate key.
    Tag(String),
}

/// Where each object is, by path and by tag (of the memory tier, and of the
/// disk tier's files).
#[derive(Default)]
pub(crate) struct Index {
    /// Path → the slots answering it (one per `Vary` variant).
    by_path: BTreeMap<String, HashSet<u128>>,
    /// Surrogate key → slots.
    by_tag: HashMap<String, HashSet<u128>>,
}

impl Index {
    pub(crate) fn add(&mut self, slot: u128, path: &str, tags: &[String]) {
        self.by_path.entry(path.to_owned()).or_default().insert(slot);
        for t in tags {
            self.by_tag.entry(t.clone()).or_default().insert(slot);
        }
    }

    pub(crate) fn remove(&mut self, slot: u128, path: &str, tags: &[String]) {
        /// Drop `slot` from a set; true if the set is then empty.
        fn drop_from(slots: Option<&mut HashSet<u128>>, slot: u128) -> bool {
            slots.is_some_and(|s| {
                s.remove(&slot);
                s.is_empty()
            })
        }
        if drop_from(self.by_path.get_mut(path), slot) {
            self.by_path.remove(path);
        }
        for t in tags {
            if drop_from(self.by_tag.get_mut(t), slot) {
                self.by_tag.remove(t);
            }
        }
    }

    pub(crate) fn slots(&self, purge: &Purge) -> Vec<u128> {
        match purge {
            Purge::Path(p) => self.by_path.get(p).into_iter().flatten().copied().collect(),
            Purge::Prefix(p) => self
                .by_path
                .range::<str, _>((std::ops::Bound::Included(p.as_str()), std::ops::Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(p.as_str()))
                .flat_map(|(_, s)| s.iter().copied())
                .collect(),
            Purge::Tag(t) => self.by_tag.get(t).into_iter().flatten().copied().collect(),
        }
    }
}

impl Object {
    /// What the object costs the byte budget.
    fn size(&self) -> usize {
        self.meta.size() + self.body.len()
    }
}

/// TinyUFO weighs entries in `u16`: sizes are counted in units of this many bytes
/// (rounded up), so an object of up to 64 MiB has its weight.
pub const WEIGHT_UNIT: usize = 1024;

/// The largest object the store can weigh.
pub const MAX_OBJECT_BYTES: usize = WEIGHT_UNIT * u16::MAX as usize;

/// An object's weight in [`WEIGHT_UNIT`]s, at least 1.
fn weight_of(size: usize) -> u16 {
    size.div_ceil(WEIGHT_UNIT).clamp(1, u16::MAX as usize) as u16
}

/// The memory tier of one edge.
pub struct EdgeStore {
    /// The objects by combined key hash, byte-weighted.
    objects: tinyufo::TinyUfo<u128, Arc<Object>>,
    /// Bytes held now (objects admitted minus those evicted or purged), for the
    /// metrics: TinyUFO does not say.
    bytes: AtomicU64,
    /// Objects held now.
    count: AtomicU64,
    /// Paths and tags of the objects held.
    index: Mutex<Index>,
    /// The disk tier, when configured.
    disk: Option<Disk>,
    /// Purges begun plus purges ended: odd while one runs. An object read from
    /// disk while a purge ran is served to its request but not kept in memory
    /// (it may be what the purge removed).
    purges: AtomicU64,
}

/// Counts a purge's end, even if its caller gave up waiting.
struct Purging<'a>(&'a AtomicU64);

impl<'a> Purging<'a> {
    fn begin(purges: &'a AtomicU64) -> Purging<'a> {
        purges.fetch_add(1, Ordering::AcqRel);
        Purging(purges)
    }
}

impl Drop for Purging<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// The key an object is stored under.
fn slot(key: &impl CacheHashKey) -> u128 {
    u128::from_be_bytes(key.combined_bin())
}

impl EdgeStore {
    /// A store holding at most `budget` bytes (counted in [`WEIGHT_UNIT`]s),
    /// sized for about `budget / typical_object` objects.
    pub fn new(budget: usize, typical_object: usize) -> EdgeStore {
        // Sized for the objects the budget can hold: every object weighs at least one
        // unit, so a tiny `typical_object` must not size the sketch for more.
        let estimated = (budget / typical_object.max(WEIGHT_UNIT)).max(16);
        EdgeStore {
            objects: tinyufo::TinyUfo::new((budget / WEIGHT_UNIT).max(1), estimated),
            bytes: AtomicU64::new(0),
            count: AtomicU64::new(0),
            index: Mutex::default(),
            disk: None,
            purges: AtomicU64::new(0),
        }
    }

    /// This store over a disk tier.
    pub fn with_disk(mut self, disk: Disk) -> EdgeStore {
        self.disk = Some(disk);
        self
    }

    /// The disk tier, when configured.
    pub fn disk(&self) -> Option<&Disk> {
        self.disk.as_ref()
    }

    /// Drop (`soft` false) or mark stale (`soft` true) every object `purge`
    /// names, in memory and on disk; returns how many. When it returns, their
    /// files are gone (or marked, durably).
    pub async fn purge(&self, purge: &Purge, soft: bool) -> usize {
        let _purging = Purging::begin(&self.purges);
        let slots = self.index().slots(purge);
        let mut purged = HashSet::new();
        for slot in slots {
            if soft {
                if let Some(o) = self.objects.get(&slot) {
                    o.stale.store(true, Ordering::Release);
                    purged.insert(slot);
                }
            } else if let Some(o) = self.objects.remove(&slot) {
                self.forget(&o);
                purged.insert(slot);
            }
        }
        if let Some(disk) = &self.disk {
            purged.extend(disk.purge(purge.clone(), soft).await);
        }
        purged.len()
    }

    /// Finish the disk tier's queued writes and close it (at a stop).
    pub async fn close(&self) {
        if let Some(disk) = &self.disk {
            disk.close().await;
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Objects held now.
    pub fn objects(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Keep `object` in memory if TinyUFO admits it; the object, shared.
    fn put(&self, slot: u128, object: Object) -> Arc<Object> {
        let size = object.size();
        // An object already there is replaced in place (its use count kept).
        let old = self.objects.get(&slot);
        let object = Arc::new(object);
        let evicted = self.objects.put(slot, object.clone(), weight_of(size));
        // Admitted unless it is among what TinyUFO evicted at once (a newcomer
        // that lost against the victims it would have replaced).
        let mut admitted = true;
        for kv in evicted {
            if Arc::ptr_eq(&kv.data, &object) {
                admitted = false;
            } else if !old.as_ref().is_some_and(|o| Arc::ptr_eq(&kv.data, o)) {
                self.forget(&kv.data);
                // Leaving memory is a use, for the disk tier's order.
                if let Some(disk) = &self.disk {
                    disk.touch(kv.data.slot);
                }
            }
        }
        if let Some(old) = &old {
            self.forget(old);
        }
        if admitted {
            self.bytes.fetch_add(size as u64, Ordering::Relaxed);
            self.count.fetch_add(1, Ordering::Relaxed);
            self.index().add(slot, &object.path, &object.tags);
        }
        object
    }

    fn forget(&self, object: &Object) {
        self.bytes.fetch_sub(object.size() as u64, Ordering::Relaxed);
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.index().remove(object.slot, &object.path, &object.tags);
    }

    /// A lookup that missed memory: the object from disk, if there, kept in
    /// memory too unless a purge ran meanwhile.
    async fn lookup_disk(&self, slot: u128) -> Option<Arc<Object>> {
        let disk = self.disk.as_ref()?;
        let before = self.purges.load(Ordering::Acquire);
        let loaded = disk.lookup(slot).await?;
        let object = Object {
            slot,
            path: loaded.path,
            tags: loaded.tags,
            meta: loaded.meta,
            body: loaded.body,
            stale: AtomicBool::new(loaded.stale),
        };
        if before & 1 == 0 && self.purges.load(Ordering::Acquire) == before {
            Some(self.put(slot, object))
        } else {
            Some(Arc::new(object))
        }
    }
}

#[async_trait]
impl Storage for EdgeStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let slot = slot(key);
        let object = match self.objects.get(&slot) {
            Some(object) => object,
            None => match self.lookup_disk(slot).await {
                Some(object) => object,
                None => return Ok(None),
            },
        };
        let meta = object.meta.to_cache_meta();
        let hit = Hit {
            body: object.body.clone(),
            range: (0, object.body.len()),
            done: false,
            purged: object.stale.load(Ordering::Acquire),
        };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let pk = key.primary_key_str().unwrap_or("");
        // The primary key is the authority then the path: the path starts at its first `/`.
        let path = pk.find('/').map_or("/", |i| &pk[i..]).to_owned();
        Ok(Box::new(Miss {
            store: self,
            slot: slot(key),
            path,
            tags: surrogate_keys(meta.headers()),
            meta: Meta::of(meta),
            body: BytesMut::new(),
        }))
    }

    async fn purge(
        &'static self,
        key: &CompactCacheKey,
        _type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let _purging = Purging::begin(&self.purges);
        let slot = slot(key);
        let removed = self.objects.remove(&slot);
        if let Some(old) = &removed {
            self.forget(old);
        }
        let on_disk = match &self.disk {
            Some(disk) => disk.remove(slot).await,
            None => false,
        };
        Ok(removed.is_some() || on_disk)
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        // A revalidation (304) refreshes the headers and freshness; the body stays.
        let slot = slot(key);
        let tags = surrogate_keys(meta.headers());
        let Some(old) = self.objects.get(&slot) else {
            // Held on disk only (TinyUFO did not admit it from there): its file
            // is rewritten with the new meta.
            if let Some(disk) = self.disk.as_ref().filter(|d| d.contains(slot)) {
                disk.rewrite(slot, Meta::of(meta), tags);
                return Ok(true);
            }
            return Err(Error::explain(
                ErrorType::InternalError,
                "updating the meta of an object not stored",
            ));
        };
        let object = Object {
            slot,
            path: old.path.clone(),
            tags,
            meta: Meta::of(meta),
            body: old.body.clone(),
            stale: AtomicBool::new(false),
        };
        let object = self.put(slot, object);
        if let Some(disk) = &self.disk {
            // A file there gets the new head, its body copied file to file; else
            // the whole object is written.
            if disk.contains(slot) {
                disk.rewrite(slot, Meta::of(meta), object.tags.clone());
            } else {
                disk.write(object);
            }
        }
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// Serving one hit: the body, or the part of it a range asked for.
pub(crate) struct Hit {
    /// The object's whole body.
    body: Bytes,
    /// The part to send, `[start, end)`.
    range: (usize, usize),
    /// Whether the part was sent.
    done: bool,
    /// The object was soft-purged: it must be revalidated before it is served.
    pub(crate) purged: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.range.0..self.range.1)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        let end = end.map_or(len, |e| e.min(len));
        if start >= end && len > 0 {
            return Err(Error::explain(ErrorType::InternalError, "seek beyond the body"));
        }
        self.range = (start, end);
        self.done = false;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Writing one miss: the body gathers here and is stored when complete.
struct Miss {
    /// Where it goes.
    store: &'static EdgeStore,
    /// Under which key.
    slot: u128,
    /// The path it answers.
    path: String,
    /// Its surrogate keys.
    tags: Vec<String>,
    /// Its metadata.
    meta: Meta,
    /// The body so far.
    body: BytesMut,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let Miss { store, slot, path, tags, meta, body } = *self;
        let object = Object { slot, path, tags, meta, body: body.freeze(), stale: AtomicBool::new(false) };
        let size = object.size();
        let object = store.put(slot, object);
        if let Some(disk) = &store.disk {
            disk.write(object);
        }
        Ok(MissFinishType::Created(size))
    }
}
