//! One relayed connection: the client's accepted socket, a connection to the
//! target from the link's source address once the link lets it through, and a
//! [`crate::delay_line`] each way.
//!
//! The client's connect completed when the kernel accepted it; the connection to
//! the target waits for the link to be healed, then for the one-way delay (the
//! SYN's trip), and is not made at all if the client gave up meanwhile. Once both
//! sockets are open, bytes flow both ways; a half-close travels after the data
//! before it, and an error on either side closes both.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::delay_line;
use crate::link::{Direction, Link};

/// How the gateway tells its connections to end.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shutdown {
    /// Stop reading: each direction ends its stream after what it holds, as if
    /// both ends had shut down their writing; unconnected clients are closed.
    pub(crate) stop: CancellationToken,
    /// Close at once, whatever is held.
    pub(crate) abort: CancellationToken,
}

/// Counts the connection as open for as long as it lives.
struct Open(prometheus_client::metrics::gauge::Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Relay `client` (accepted on `link`) until both directions have ended, either
/// side failed, or the gateway aborts it.
pub(crate) async fn serve(client: TcpStream, link: Arc<Link>, shutdown: Shutdown) {
    link.stats.open.inc();
    let _open = Open(link.stats.open.clone());
    let client_addr = client.peer_addr().ok();
    let (mut client_read, client_write) = client.into_split();
    let target = tokio::select! {
        biased;
        _ = shutdown.stop.cancelled() => return,
        _ = shutdown.abort.cancelled() => return,
        _ = gave_up(&mut client_read) => {
            tracing::debug!(client = ?client_addr, listen = %link.listen, "client left before it was connected");
            return;
        }
        target = connect(&link) => target,
    };
    let target = match target {
        Ok(target) => target,
        Err(e) => {
            link.stats.connect_failures.inc();
            tracing::warn!(
                client = ?client_addr, target = %link.config.target, source = %link.config.source,
                error = %e, "cannot connect to the target; closing the client's connection"
            );
            return;
        }
    };
    let (target_read, target_write) = target.into_split();
    let (up_in, up_out) = delay_line::line(link.line(Direction::ToTarget));
    let (down_in, down_out) = delay_line::line(link.line(Direction::ToClient));
    let stop = &shutdown.stop;
    let flows = async {
        tokio::try_join!(
            up_in.run(client_read, stop),
            up_out.run(target_write),
            down_in.run(target_read, stop),
            down_out.run(client_write),
        )
    };
    tokio::select! {
        result = flows => {
            if let Err(e) = result {
                tracing::debug!(client = ?client_addr, target = %link.config.target, error = %e, "connection closed on both sides");
            }
        }
        _ = shutdown.abort.cancelled() => {}
    }
}

/// Resolves once the client has closed (or reset) its connection without sending
/// anything; never if it sent something (then it is waiting for an answer).
async fn gave_up(client: &mut OwnedReadHalf) {
    let mut byte = [0u8; 1];
    match client.peek(&mut byte).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Connect to the link's target from its source address: after the link is
/// healed (if cut) and the one-way delay has passed with the link still up.
async fn connect(link: &Link) -> io::Result<TcpStream> {
    let mut conditions = link.peer.watch();
    loop {
        // The peer outlives its links, so the channel never closes.
        let _ = conditions.wait_for(|c| !c.cut).await;
        let delay = conditions.borrow().delay_ms;
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if !conditions.borrow().cut {
            break;
        }
    }
    let (source, target) = (link.config.source, link.config.target);
    let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_nodelay(true)?;
    socket.bind(source)?;
    match tokio::time::timeout(link.connect_timeout, socket.connect(target)).await {
        Ok(connected) => connected,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}
