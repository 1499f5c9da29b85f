//! A stand-in for `millions control`'s cluster-map endpoint, for tests of the
//! processes that follow it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Query, State};
use tokio::sync::watch;

/// `?after=N`: answer once the map's epoch is above N.
#[derive(serde::Deserialize)]
struct After {
    after: Option<u64>,
}

/// What the handler holds.
struct Served<T> {
    /// The map to answer with (a test sends new ones).
    map: watch::Receiver<T>,
    /// How to read a map's epoch.
    epoch_of: fn(&T) -> u64,
    /// The largest epoch answered with.
    largest: Arc<AtomicU64>,
}

impl<T> Clone for Served<T> {
    fn clone(&self) -> Self {
        Served { map: self.map.clone(), epoch_of: self.epoch_of, largest: self.largest.clone() }
    }
}

/// Serve `map` as `GET /cluster[?after=N]` does (a long poll of up to 20 s for a
/// map whose epoch, read by `epoch_of`, is above N) on a port of 127.0.0.1.
/// Returns its URL and the largest epoch it has answered with.
pub async fn map_server<T>(map: watch::Receiver<T>, epoch_of: fn(&T) -> u64) -> (String, Arc<AtomicU64>)
where
    T: serde::Serialize + Clone + Send + Sync + 'static,
{
    async fn get<T: serde::Serialize + Clone>(
        State(mut s): State<Served<T>>,
        Query(q): Query<After>,
    ) -> axum::Json<T> {
        if let Some(after) = q.after {
            let wait = s.map.wait_for(|m| (s.epoch_of)(m) > after);
            let _ = tokio::time::timeout(Duration::from_secs(20), wait).await;
        }
        let map = s.map.borrow().clone();
        s.largest.fetch_max((s.epoch_of)(&map), Ordering::Relaxed);
        axum::Json(map)
    }
    let largest = Arc::new(AtomicU64::new(0));
    let state = Served { map, epoch_of, largest: largest.clone() };
    let app = axum::Router::new().route("/cluster", axum::routing::get(get::<T>)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the map server");
    let addr = listener.local_addr().expect("the map server's address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/cluster"), largest)
}
