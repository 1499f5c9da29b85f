//! How fast `millions seed` writes: seeds `N` users (default 100,000; first argument)
//! into two fresh shard databases on the test PostgreSQL and prints the report.
//!
//! `cargo run --release -p loadgen --example seed_speed -- 100000`

use std::time::Instant;

use loadgen::seed::{SeedConfig, seed};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let users: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|e| anyhow::anyhow!("users must be a number: {e}"))?,
        None => 100_000,
    };
    let env = testkit::TestEnv::new().await;
    let started = Instant::now();
    let report = seed(&env.shards, &SeedConfig::new(users), |line| {
        println!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64());
    })
    .await?;
    println!("{report}");
    for (i, s) in report.shards.iter().enumerate() {
        println!("shard {i}: {s:?}");
    }
    let rows = report.users + 2 * report.follows + report.posts;
    println!("{rows} rows in {:.1}s", report.elapsed.as_secs_f64());
    Ok(())
}
