//! Read-your-writes, carried in a task-local scope so that no query's signature
//! has to change.
//!
//! A [`scope`] holds, per shard, the *floor*: the smallest WAL position (LSN) a
//! replica must have replayed to serve this scope's reads. Every write done
//! inside the scope raises the floor of its shard to the LSN at which it
//! committed, and is reported when the scope ends, so a caller (the web tier)
//! can keep the floor with the user's session and pass it to the next request.
//! [`primary_reads`] sends every read of a future to the primaries (what a
//! shared cache fill needs: it must never store a value older than the
//! invalidation that emptied it). [`fill_reads`] does the same for a cache fill
//! that must not fail while a primary is being replaced: a shard without a
//! reachable primary is read on a replica instead, and the caller is told
//! ([`Served::Replica`]) so that it serves the value without caching it.
//!
//! A scope's floor may also be given lazily ([`scope_lazy`]): a loader that
//! runs only when a read of the scope first needs the floor (a read that may go
//! to a replica). A request served from caches, or only by primaries, never
//! loads it — for the web tier, one Redis round trip saved per signed-in
//! request.
//!
//! Outside any scope reads use any replica within the lag bound, and writes do
//! not pay for reading their LSN.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sharding::ShardId;

/// A WAL position per shard (`pg_lsn` as a number).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lsns(BTreeMap<u16, u64>);

impl Lsns {
    /// No positions.
    pub fn new() -> Lsns {
        Lsns::default()
    }

    /// A floor no replica can meet, on `shards` shards: every read goes to the
    /// primary. For a session whose floor could not be read (it may have writes a
    /// replica has not replayed).
    pub fn unknown(shards: usize) -> Lsns {
        Lsns((0..shards as u16).map(|s| (s, u64::MAX)).collect())
    }

    /// The position for `shard`, if any.
    pub fn get(&self, shard: ShardId) -> Option<u64> {
        self.0.get(&shard.0).copied()
    }

    /// Raise `shard`'s position to `lsn` (never lowers it).
    pub fn raise(&mut self, shard: ShardId, lsn: u64) {
        let e = self.0.entry(shard.0).or_insert(lsn);
        *e = (*e).max(lsn);
    }

    /// Whether no shard has a position.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every (shard, position).
    pub fn iter(&self) -> impl Iterator<Item = (ShardId, u64)> + '_ {
        self.0.iter().map(|(s, l)| (ShardId(*s), *l))
    }
}

impl FromIterator<(ShardId, u64)> for Lsns {
    fn from_iter<I: IntoIterator<Item = (ShardId, u64)>>(iter: I) -> Lsns {
        let mut out = Lsns::new();
        for (shard, lsn) in iter {
            out.raise(shard, lsn);
        }
        out
    }
}

#[derive(Debug, Default)]
struct State {
    /// What replicas must have replayed for this scope's reads.
    floor: Lsns,
    /// Where this scope's writes committed.
    written: Lsns,
}

/// Loads a scope's floor ([`scope_lazy`]); called again if a load was cancelled.
pub type FloorLoader = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Lsns> + Send>> + Send + Sync>;

/// A floor not loaded until a read needs it.
struct LazyFloor {
    /// Set once the loaded floor was merged into the scope's state.
    loaded: tokio::sync::OnceCell<()>,
    /// What loads it.
    load: FloorLoader,
}

#[derive(Clone)]
struct Scope {
    /// Shared by nested scopes of the same request.
    state: Arc<Mutex<State>>,
    /// The part of the floor still to be loaded, if given lazily; shared by
    /// nested scopes of the same request.
    lazy: Option<Arc<LazyFloor>>,
    /// Every read goes to the primary.
    primary: bool,
    /// Inside [`fill_reads`]: a shard without a reachable primary may be read on
    /// a replica, and this is set when one was.
    replica_fallback: Option<Arc<AtomicBool>>,
}

/// Where the reads of a [`fill_reads`] future were served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Every read on its shard's primary: the value may be cached.
    Primary,
    /// Some read on a replica because its shard's primary was gone or unreachable:
    /// serve the value, never cache it (it may predate a write the primary had).
    Replica,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Run `fut` with `floor` as its read-your-writes floor; returns its output and
/// the positions of the writes it made (empty if none).
pub async fn scope<F: Future>(floor: Lsns, fut: F) -> (F::Output, Lsns) {
    run_scope(floor, None, fut).await
}

/// [`scope`] with a floor loaded by `load` when a read of `fut` first needs it
/// (one that may be served by a replica), and never if none does. Writes made
/// before the load raise the floor as usual; the loaded floor is merged in
/// (never lowering a position).
pub async fn scope_lazy<F: Future>(load: FloorLoader, fut: F) -> (F::Output, Lsns) {
    let lazy = Arc::new(LazyFloor { loaded: tokio::sync::OnceCell::new(), load });
    run_scope(Lsns::new(), Some(lazy), fut).await
}

async fn run_scope<F: Future>(floor: Lsns, lazy: Option<Arc<LazyFloor>>, fut: F) -> (F::Output, Lsns) {
    let state = Arc::new(Mutex::new(State { floor, written: Lsns::new() }));
    let scope = Scope { state: state.clone(), lazy, primary: false, replica_fallback: None };
    let out = SCOPE.scope(scope, fut).await;
    let written = std::mem::take(&mut lock(&state).written);
    (out, written)
}

/// The enclosing scope's state and lazy floor, for a nested scope.
fn enclosing() -> (Arc<Mutex<State>>, Option<Arc<LazyFloor>>) {
    SCOPE.try_with(|s| (s.state.clone(), s.lazy.clone())).unwrap_or_default()
}

/// Run `fut` with every read on the shards' primaries. Writes inside still
/// count for the enclosing [`scope`], if any.
pub async fn primary_reads<F: Future>(fut: F) -> F::Output {
    let (state, lazy) = enclosing();
    SCOPE.scope(Scope { state, lazy, primary: true, replica_fallback: None }, fut).await
}

/// Run `fut` as a shared cache fill reads: every read on the shards' primaries,
/// except that a shard whose primary is gone or unreachable (being replaced) is
/// read on its most advanced replica that has replayed the scope's floor; the
/// answer says whether that happened. Writes inside still count for the
/// enclosing [`scope`], if any.
pub async fn fill_reads<F: Future>(fut: F) -> (F::Output, Served) {
    let (state, lazy) = enclosing();
    let fell_back = Arc::new(AtomicBool::new(false));
    let scope = Scope { state, lazy, primary: true, replica_fallback: Some(fell_back.clone()) };
    let out = SCOPE.scope(scope, fut).await;
    let served = if fell_back.load(Ordering::Acquire) { Served::Replica } else { Served::Primary };
    (out, served)
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether reads must go to the primary.
pub(crate) fn primary_only() -> bool {
    SCOPE.try_with(|s| s.primary).unwrap_or(false)
}

/// Whether a read may go to a replica when its shard has no reachable primary:
/// always outside a primary-only scope, and inside [`fill_reads`].
pub(crate) fn may_read_replica_without_primary() -> bool {
    SCOPE.try_with(|s| !s.primary || s.replica_fallback.is_some()).unwrap_or(true)
}

/// A read of the current scope was served by a replica because its shard's
/// primary was lost (seen by [`fill_reads`]).
pub(crate) fn served_by_replica_without_primary() {
    let _ = SCOPE.try_with(|s| {
        if let Some(flag) = &s.replica_fallback {
            flag.store(true, Ordering::Release);
        }
    });
}

/// The floor for `shard` in the current scope, loading the scope's lazy floor
/// first if it has one not loaded yet.
pub(crate) async fn floor(shard: ShardId) -> Option<u64> {
    let Ok((state, lazy)) = SCOPE.try_with(|s| (s.state.clone(), s.lazy.clone())) else { return None };
    if let Some(lazy) = lazy {
        lazy.loaded
            .get_or_init(|| async {
                let loaded = (lazy.load)().await;
                let mut st = lock(&state);
                for (shard, lsn) in loaded.iter() {
                    st.floor.raise(shard, lsn);
                }
            })
            .await;
    }
    lock(&state).floor.get(shard)
}

/// Whether a write should find out its LSN (someone will read it).
pub(crate) fn tracking() -> bool {
    SCOPE.try_with(|_| ()).is_ok()
}

/// A write on `shard` committed at or before `lsn`.
pub(crate) fn wrote(shard: ShardId, lsn: u64) {
    let _ = SCOPE.try_with(|s| {
        let mut st = lock(&s.state);
        st.floor.raise(shard, lsn);
        st.written.raise(shard, lsn);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_raise_the_floor_and_are_reported() {
        let floor: Lsns = [(ShardId(0), 10)].into_iter().collect();
        let ((), written) = scope(floor, async {
            assert_eq!(super::floor(ShardId(0)).await, Some(10));
            assert!(!primary_only());
            wrote(ShardId(1), 7);
            wrote(ShardId(1), 5);
            assert_eq!(super::floor(ShardId(1)).await, Some(7));
            primary_reads(async {
                assert!(primary_only());
                wrote(ShardId(0), 20);
            })
            .await;
            assert!(!primary_only());
            assert_eq!(super::floor(ShardId(0)).await, Some(20));
        })
        .await;
        assert_eq!(written, [(ShardId(1), 7), (ShardId(0), 20)].into_iter().collect());
        assert!(!tracking());
        assert_eq!(super::floor(ShardId(0)).await, None);
    }

    #[tokio::test]
    async fn a_lazy_floor_is_loaded_once_when_a_read_needs_it_and_merged_with_writes() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let loader = |calls: Arc<std::sync::atomic::AtomicUsize>| -> FloorLoader {
            Arc::new(move || {
                calls.fetch_add(1, Ordering::SeqCst);
                Box::pin(async { [(ShardId(0), 10), (ShardId(1), 3)].into_iter().collect() })
            })
        };
        // Nothing needs the floor: never loaded.
        let ((), written) = scope_lazy(loader(calls.clone()), async { wrote(ShardId(2), 1) }).await;
        assert_eq!(calls.load(Ordering::SeqCst), 0, "no read asked for the floor");
        assert_eq!(written, [(ShardId(2), 1)].into_iter().collect());
        // A write before the load stays above what is loaded; nested scopes share it.
        let ((), _) = scope_lazy(loader(calls.clone()), async {
            wrote(ShardId(1), 5);
            assert_eq!(super::floor(ShardId(1)).await, Some(5), "a write is never lowered");
            assert_eq!(super::floor(ShardId(0)).await, Some(10));
            fill_reads(async { assert_eq!(super::floor(ShardId(0)).await, Some(10)) }).await;
            primary_reads(async { assert_eq!(super::floor(ShardId(1)).await, Some(5)) }).await;
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "loaded once for the whole request");
    }

    #[tokio::test]
    async fn only_fill_reads_of_the_primary_only_scopes_may_fall_back_to_a_replica_and_say_so() {
        assert!(may_read_replica_without_primary(), "a plain read may");
        primary_reads(async { assert!(!may_read_replica_without_primary()) }).await;
        let ((), served) = fill_reads(async {
            assert!(primary_only());
            assert!(may_read_replica_without_primary());
        })
        .await;
        assert_eq!(served, Served::Primary, "nothing fell back");
        let ((), served) = fill_reads(async { served_by_replica_without_primary() }).await;
        assert_eq!(served, Served::Replica);
        // A nested strict scope stays strict, and the mark outside any fill is a no-op.
        fill_reads(primary_reads(async { assert!(!may_read_replica_without_primary()) })).await;
        served_by_replica_without_primary();
    }
}
