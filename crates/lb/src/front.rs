//! What runs each accepted connection: on the plain listener, tells HTTP/2 from
//! HTTP/1 by a connection's first bytes, and hands HTTP/1 to [`crate::h1`] and
//! HTTP/2 (cleartext, prior knowledge) to pingora's sessions ([`crate::h2`]); on
//! the HTTPS listener, completes the TLS handshake within the header timeout and
//! lets ALPN choose (`h2` to pingora's sessions through [`TlsClient`], anything
//! else to [`crate::h1`]).
//!
//! The bytes read to decide are given back to pingora through [`ReplayStream`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::pipeline::Proxy;
use crate::tls::TlsClient;

/// What every HTTP/2 connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection whose first bytes were read already, and are read again first.
#[derive(Debug)]
pub struct ReplayStream {
    /// The bytes read before, not yet read again.
    prefix: Bytes,
    /// The connection.
    inner: Stream,
}

impl ReplayStream {
    /// `inner`, with `prefix` to be read before its bytes.
    pub fn new(prefix: Bytes, inner: Stream) -> ReplayStream {
        ReplayStream { prefix, inner }
    }
}

impl AsyncRead for ReplayStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReplayStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for ReplayStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for ReplayStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ReplayStream {}

impl GetTimingDigest for ReplayStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for ReplayStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for ReplayStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for ReplayStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        // The bytes to peek at were read already: they are the prefix.
        if self.prefix.len() >= buf.len() {
            buf.copy_from_slice(&self.prefix[..buf.len()]);
            return Ok(true);
        }
        Ok(false)
    }
}

/// What runs every connection a listener accepts.
pub struct Front {
    /// The proxy's shared state, with the listener's [`crate::pipeline::Entry`].
    pub proxy: Arc<Proxy>,
    /// On the HTTPS listener: the TLS handshake.
    pub tls: Option<TlsAcceptor>,
}

impl Front {
    /// Serve one client connection until it closes.
    pub async fn serve(&self, tcp: TcpStream, shutdown: &ShutdownWatch) {
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(acceptor) => self.serve_tls(acceptor, tcp, shutdown).await,
            None => self.serve_plain(tcp, shutdown).await,
        }
    }

    /// An HTTPS connection: the handshake within the header timeout (a client
    /// that never finishes it is cut), then HTTP/2 or HTTP/1.1 as ALPN chose.
    async fn serve_tls(&self, acceptor: &TlsAcceptor, tcp: TcpStream, shutdown: &ShutdownWatch) {
        let peer = tcp.peer_addr().ok().map(|a| a.ip());
        let deadline = Duration::from_millis(self.proxy.config.limits.header_timeout_ms);
        let tls = match crate::tls::handshake(acceptor, tcp, deadline).await {
            Ok(tls) => tls,
            Err(e) => {
                self.proxy.metrics.tls_handshake_failed(e.reason());
                tracing::debug!(error = %e, "TLS handshake failed (the header timeout bounds it)");
                return;
            }
        };
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            let mut next = Some(Box::new(TlsClient::new(tls)) as Stream);
            while let Some(stream) = next {
                next = self.proxy.process_new(stream, shutdown).await;
            }
            return;
        }
        let mut tls = tls;
        crate::h1::serve(&self.proxy, &mut tls, BytesMut::with_capacity(16 * 1024), peer, shutdown).await;
        // close_notify, so the client sees a clean end (bounded: it may not read).
        let _ = pingora_timeout::fast_timeout::fast_timeout(
            deadline,
            tokio::io::AsyncWriteExt::shutdown(&mut tls),
        )
        .await;
    }

    /// A plain connection: HTTP/2 if it starts with HTTP/2's preface, else HTTP/1.
    async fn serve_plain(&self, mut tcp: TcpStream, shutdown: &ShutdownWatch) {
        let limits = &self.proxy.config.limits;
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        // Up to the first request's first bytes: the keep-alive timeout; then, while
        // they could still be HTTP/2's preface, the header timeout.
        let mut wait = Duration::from_secs(limits.idle_timeout_secs);
        loop {
            match pingora_timeout::fast_timeout::fast_timeout(wait, tcp.read_buf(&mut inbuf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let n = inbuf.len().min(H2_PREFACE.len());
            if inbuf[..n] != H2_PREFACE[..n] {
                break;
            }
            if n == H2_PREFACE.len() {
                let fd = crate::upstream::fd(&tcp);
                let mut stream = pingora_core::protocols::l4::stream::Stream::from(tcp);
                // The client's address, for pingora's session (the rate limit's
                // key, X-Forwarded-For, the access log).
                stream.set_socket_digest(SocketDigest::from_raw_fd(fd));
                let stream: Stream = Box::new(stream);
                let mut next = Some(Box::new(ReplayStream::new(inbuf.freeze(), stream)) as Stream);
                while let Some(stream) = next {
                    next = self.proxy.process_new(stream, shutdown).await;
                }
                return;
            }
            wait = Duration::from_millis(limits.header_timeout_ms);
        }
        let peer = tcp.peer_addr().ok().map(|a| a.ip());
        crate::h1::serve(&self.proxy, tcp, inbuf, peer, shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_prefix_is_read_first_then_the_connection() {
        let inner: Stream = Box::new(std::io::Cursor::new(b" world".to_vec()));
        let mut s = ReplayStream::new(Bytes::from_static(b"hello"), inner);
        let mut all = String::new();
        s.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
