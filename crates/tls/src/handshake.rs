//! The server side of a TLS handshake, under a deadline.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not finish it within the deadline.
    #[error("TLS handshake not complete within {0:?}")]
    Timeout(Duration),
    /// It failed: not TLS, no protocol or cipher in common, an alert, a reset.
    #[error("TLS handshake failed: {0}")]
    Failed(#[source] std::io::Error),
}

impl HandshakeError {
    /// A metric label for it: `timeout` or `error`.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Timeout(_) => "timeout",
            HandshakeError::Failed(_) => "error",
        }
    }
}

/// Complete the handshake of an accepted connection with `acceptor`, within
/// `deadline` (a client that never finishes it is cut: the connection is dropped).
pub async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    deadline: Duration,
) -> Result<TlsStream<TcpStream>, HandshakeError> {
    match pingora_timeout::fast_timeout::fast_timeout(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(HandshakeError::Failed(e)),
        Err(_) => Err(HandshakeError::Timeout(deadline)),
    }
}
