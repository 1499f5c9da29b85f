//! The benchmark anchor: a bare axum handler, nothing else.
//!
//! `scripts/bench-web.sh` loads this beside the real web server, in the same run on
//! the same machine, and reports the real server's numbers as ratios to this one.
//! It is what the hardware, the kernel's loopback, hyper and axum give for free: no
//! middleware, no logging, no metrics, no session, no cache, no database.
//!
//! Usage: `bare ADDR` (e.g. `127.0.0.1:0`). The first line on stdout is the bound
//! address. `GET /` and `GET /api/v1/users/{username}` both answer a fixed JSON
//! body shaped and sized like a cached profile read.
//!
//! Build: `cargo build --release -p web --example bare`.

use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// A profile as `GET /api/v1/users/{username}` returns it (same fields, same size).
const BODY: &str = concat!(
    r#"{"id":"1234567890123456789","username":"bench_author","display_name":"Bench Author","#,
    r#""followers_count":1,"following_count":0,"posts_count":50,"#,
    r#""created_at":"2025-01-01T00:00:00.123456789Z"}"#
);

async fn handler() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], BODY)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_owned()).parse()?;
    // The same runtime the `millions` binary builds: multi-thread, one worker per core.
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("{}", listener.local_addr()?);
        let app = Router::new().route("/", get(handler)).route("/api/v1/users/{username}", get(handler));
        axum::serve(listener, app).await?;
        Ok(())
    })
}
