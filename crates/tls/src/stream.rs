//! A client's TLS connection as pingora's `Stream`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{ALPN, SslDigest};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, TimingDigest,
    UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A client's TLS connection as pingora's `Stream` (for its HTTP/1 and HTTP/2
/// sessions): the TLS stream, with the socket's digest (the client's address)
/// and the negotiated protocol (`h2` by ALPN makes pingora's `process_new` speak
/// HTTP/2; anything else, HTTP/1.1).
#[derive(Debug)]
pub struct TlsClient {
    /// The TLS connection.
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    /// The socket's addresses (pingora's sessions read the client's from it).
    socket: Arc<SocketDigest>,
    /// What pingora's sessions are told of the TLS connection (its presence is
    /// what tells the HTTP/2 path it is serving HTTPS).
    digest: Arc<SslDigest>,
    /// The socket's descriptor: a unique id among open connections.
    fd: i32,
}

impl TlsClient {
    /// Wrap an established TLS connection.
    pub fn new(tls: tokio_rustls::server::TlsStream<TcpStream>) -> TlsClient {
        use std::os::fd::AsRawFd;
        let fd = tls.get_ref().0.as_raw_fd();
        let (_, conn) = tls.get_ref();
        let cipher = conn.negotiated_cipher_suite().map_or("", |s| s.suite().as_str().unwrap_or(""));
        let version = conn.protocol_version().map_or("", |v| v.as_str().unwrap_or(""));
        let digest = Arc::new(SslDigest::new(cipher, version, None, None, Vec::new()));
        TlsClient { tls, socket: Arc::new(SocketDigest::from_raw_fd(fd)), digest, fd }
    }
}

impl AsyncRead for TlsClient {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsClient {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for TlsClient {
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(&mut self.tls).await;
    }
}

impl UniqueID for TlsClient {
    fn id(&self) -> UniqueIDType {
        self.fd
    }
}

impl Ssl for TlsClient {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(self.digest.clone())
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        match self.tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => Some(ALPN::H2),
            _ => Some(ALPN::H1),
        }
    }
}

impl GetTimingDigest for TlsClient {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for TlsClient {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for TlsClient {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.socket.clone())
    }
}

#[async_trait]
impl Peek for TlsClient {}
