//! The UDP listener: a few tasks share one socket, each receiving a datagram,
//! answering it in place (answers are computed from memory, nothing awaits) and
//! sending the answer back to its source.

use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::handler::Handler;
use crate::metrics::Transport;

/// The largest datagram read; anything longer is cut, fails to parse and is
/// answered FORMERR.
const MAX_DATAGRAM: usize = 65_535;

/// A UDP socket on `addr` with buffers of `buffer_bytes` (as large as the
/// kernel allows: a smaller buffer is not an error).
pub fn bind(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(buffer_bytes) {
        tracing::warn!(error = %e, buffer_bytes, "cannot size the udp receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer_bytes) {
        tracing::warn!(error = %e, buffer_bytes, "cannot size the udp send buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

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
