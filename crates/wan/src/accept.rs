//! A link's acceptor: every connection accepted on its listener is relayed by a
//! task of its own, tracked so that the gateway's stop can wait for it.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::link::Link;
use crate::relay::{self, Shutdown};

/// Accept on `listener` until the gateway stops (then the listener is closed).
pub(crate) async fn run(listener: TcpListener, link: Arc<Link>, tracker: TaskTracker, shutdown: Shutdown) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, _)) => {
                // Delaying is the delay line's job, not Nagle's.
                let _ = client.set_nodelay(true);
                link.stats.accepted.inc();
                tracker.spawn(relay::serve(client, link.clone(), shutdown.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listen = %link.listen, error = %e, "accept failed");
                tokio::select! {
                    _ = shutdown.stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}
