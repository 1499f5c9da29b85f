//! The UDP listener: a few tasks share one socket, each receiving a datagram,
//! answering it in place (answers are computed from memory, nothing awaits) and
//! sending the answer back to its source.

use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::handler::Handler;
use crate::metrics::Transport;

/// The largest datagram read; anything longer is cut, fails to parse and is
/// answered FORMERR.
const MAX_DATAGRAM: usize = 65_535;

/// Receive and answer on `socket` until `stop`.
pub async fn serve(socket: Arc<UdpSocket>, handler: Arc<Handler>, stop: CancellationToken) {
    let mut packet = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::with_capacity(1232);
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            received = socket.recv_from(&mut packet) => received,
        };
        let (len, peer) = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        // A source port of 0 cannot be answered (and is never a real client).
        if peer.port() == 0 {
            continue;
        }
        if handler.handle(&packet[..len], peer.ip(), Transport::Udp, &mut out)
            && let Err(e) = socket.send_to(&out, peer).await
        {
            tracing::debug!(error = %e, %peer, "udp send failed");
        }
    }
}
