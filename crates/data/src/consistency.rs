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
//! invalidation that emptied it).
//!
//! Outside any scope reads use any replica within the lag bound, and writes do
//! not pay for reading their LSN.

use std::collections::BTreeMap;
use std::future::Future;
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

#[derive(Clone)]
struct Scope {
    /// Shared by nested scopes of the same request.
    state: Arc<Mutex<State>>,
    /// Every read goes to the primary.
    primary: bool,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Run `fut` with `floor` as its read-your-writes floor; returns its output and
/// the positions of the writes it made (empty if none).
pub async fn scope<F: Future>(floor: Lsns, fut: F) -> (F::Output, Lsns) {
    let state = Arc::new(Mutex::new(State { floor, written: Lsns::new() }));
    let out = SCOPE.scope(Scope { state: state.clone(), primary: false }, fut).await;
    let written = std::mem::take(&mut lock(&state).written);
    (out, written)
}

/// Run `fut` with every read on the shards' primaries. Writes inside still
/// count for the enclosing [`scope`], if any.
pub async fn primary_reads<F: Future>(fut: F) -> F::Output {
    let state = SCOPE.try_with(|s| s.state.clone()).unwrap_or_default();
    SCOPE.scope(Scope { state, primary: true }, fut).await
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether reads must go to the primary.
pub(crate) fn primary_only() -> bool {
    SCOPE.try_with(|s| s.primary).unwrap_or(false)
}

/// The floor for `shard` in the current scope.
pub(crate) fn floor(shard: ShardId) -> Option<u64> {
    SCOPE.try_with(|s| lock(&s.state).floor.get(shard)).ok().flatten()
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
            assert_eq!(super::floor(ShardId(0)), Some(10));
            assert!(!primary_only());
            wrote(ShardId(1), 7);
            wrote(ShardId(1), 5);
            assert_eq!(super::floor(ShardId(1)), Some(7));
            primary_reads(async {
                assert!(primary_only());
                wrote(ShardId(0), 20);
            })
            .await;
            assert!(!primary_only());
            assert_eq!(super::floor(ShardId(0)), Some(20));
        })
        .await;
        assert_eq!(written, [(ShardId(1), 7), (ShardId(0), 20)].into_iter().collect());
        assert!(!tracking());
        assert_eq!(super::floor(ShardId(0)), None);
    }
}
