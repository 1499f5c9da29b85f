//! Run the DNS server on a configuration file until SIGINT or SIGTERM.
//!
//! The `millions dns` role does not exist yet; until it does, this is how
//! `scripts/bench-dns.sh` (and a person) runs the server:
//!
//! ```text
//! cargo run --release -p dns --example dns-server -- dns.toml
//! ```
//!
//! Like `millions`, it uses mimalloc and the JSON logger (`RUST_LOG`, default info).

use std::path::Path;

use anyhow::Context;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).context("usage: dns-server CONFIG.toml")?;
    let _logs = telemetry::init_logging("dns");
    let config = dns::DnsConfig::load(Path::new(&path))?;
    let running = dns::start(config, None).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    running.stop().await;
    Ok(())
}
