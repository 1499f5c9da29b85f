//! The test harness: real PostgreSQL and Redis servers, and the web app on port 0.
#![forbid(unsafe_code)]

mod app;
mod servers;

pub use app::{TEST_SHARDS, TestApp, TestEnv, TestWorker, spawn_app};
pub use servers::*;

/// Poll `check` until it holds; fail the test, naming `what`, if it still does
/// not after a minute (a bound against hangs, not a timing claim).
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut wait = std::time::Duration::from_millis(5);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_millis(100));
    }
}
