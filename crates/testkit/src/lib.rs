//! The test harness: real PostgreSQL and Redis servers, and the web app on port 0.
#![forbid(unsafe_code)]

mod app;
mod servers;

pub use app::{TEST_SHARDS, TestApp, TestEnv, TestWorker, spawn_app};
pub use servers::*;
