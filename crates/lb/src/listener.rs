//! The proxy's threads: [`acceptor`]'s serving threads (one single-threaded tokio
//! runtime per configured thread, one acceptor handing each new connection to the
//! runtime serving the fewest), each proxy thread with its own idle backend
//! connections ([`crate::upstream::set_thread_slot`]).
//!
//! Against pingora-core's server (a work-stealing runtime per service), measured
//! in interleaved runs (ADR 0005, `docs/BENCHMARKS.md`): less CPU per request and
//! more requests per second at saturation.

use std::net::TcpListener;
use std::sync::Arc;

pub use acceptor::{STOP_GRACE, Shared, bind};
use tokio::sync::watch;

use crate::front::Front;

impl acceptor::Serve for Front {
    async fn serve(&self, tcp: tokio::net::TcpStream, shutdown: &watch::Receiver<bool>) {
        Front::serve(self, tcp, shutdown).await
    }
}

/// Start `threads` proxy threads serving `listeners`, each connection by its
/// listener's [`Front`] (the plain one, and the HTTPS one when configured); see
/// [`acceptor::spawn`].
pub fn spawn(
    listeners: Vec<(TcpListener, Arc<Front>)>,
    threads: usize,
    shared: Shared,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    acceptor::spawn("lb-proxy", listeners, threads, shared, crate::upstream::set_thread_slot)
}
