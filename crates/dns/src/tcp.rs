//! The TCP listener (RFC 7766): each connection carries queries framed by a
//! two-byte length, answered in order, whole.
//!
//! A connection idle (or stalled inside a message) for `idle_timeout_ms` is
//! closed; at most `max_connections` are served at once. On stop the listener
//! accepts nothing more, connections waiting for their next query close, and
//! queries already read are answered, for at most `stop_grace_ms`, after which
//! the rest are cut.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::TcpSection;
use crate::handler::Handler;
use crate::metrics::Transport;

/// Accept and serve connections until `stop`, then let them finish (bounded).
pub async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    limits: TcpSection,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: wait a moment rather than spin.
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            connection(stream, peer, &handler, idle, &stop).await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let grace = Duration::from_millis(limits.stop_grace_ms);
    let drained =
        tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            cut = connections.len(),
            "tcp connections still answering after the grace period; cut"
        );
        connections.shutdown().await;
    }
}

/// Serve one connection's queries in order.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: &Handler,
    idle: Duration,
    stop: &CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut packet = Vec::new();
    let mut out = Vec::new();
    let mut frame = Vec::new();
    loop {
        let mut prefix = [0u8; 2];
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            read = tokio::time::timeout(idle, stream.read_exact(&mut prefix)) => read,
        };
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return, // closed, reset or idle
        }
        let len = usize::from(u16::from_be_bytes(prefix));
        packet.resize(len, 0);
        match tokio::time::timeout(idle, stream.read_exact(&mut packet)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => {
                tracing::debug!(%peer, "tcp query cut short");
                return;
            }
        }
        if !handler.handle(&packet, peer.ip(), Transport::Tcp, &mut out) {
            // Not a query (no header, or a response): the stream is not DNS.
            return;
        }
        frame.clear();
        frame.extend_from_slice(&u16::try_from(out.len()).unwrap_or(u16::MAX).to_be_bytes());
        frame.extend_from_slice(&out);
        match tokio::time::timeout(idle, stream.write_all(&frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}
