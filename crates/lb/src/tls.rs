//! HTTPS at the public entry: rustls (ring provider) with the certificate and key
//! read from files, reloadable while running, and the TLS connection handed to
//! the HTTP/1 path or, through [`TlsClient`], to pingora's HTTP/2 session.
//!
//! - [`Certificates`] holds the certificate in force and answers every handshake
//!   with it (rustls' `ResolvesServerCert`); [`Certificates::reload`] reads the
//!   files again and swaps it in only if the new chain and key are good and
//!   belong together. New handshakes use the new certificate; open connections
//!   keep theirs.
//! - [`server_config`]: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, stateless
//!   TLS 1.3 session tickets (resumption; the ticket keys outlive a reload).
//! - The handshake itself runs in [`crate::front`] under the header timeout.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{ALPN, SslDigest};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, TimingDigest,
    UniqueID, UniqueIDType,
};
use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The ALPN protocols offered, preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The key does not belong to the certificate, or rustls refuses them.
    #[error("{cert} and {key}: {why}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        why: String,
    },
}

/// What the certificate in force is, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateInfo {
    /// The certificate file it was read from.
    pub cert: PathBuf,
    /// Certificates in the chain (the server's first).
    pub chain_len: usize,
    /// SHA-256 of the server certificate's DER, in hex (what `openssl x509
    /// -fingerprint -sha256` shows, without colons).
    pub sha256: String,
}

/// The certificate in force and where it is read from.
#[derive(Debug)]
pub struct Certificates {
    /// The certificate chain's file.
    cert: PathBuf,
    /// The private key's file.
    key: PathBuf,
    /// What every new handshake is answered with, and what the admin API shows of it.
    current: RwLock<(Arc<CertifiedKey>, CertificateInfo)>,
}

impl Certificates {
    /// Read and check the chain in `cert` and the key in `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Certificates, TlsError> {
        let current = read(cert, key)?;
        Ok(Certificates { cert: cert.to_owned(), key: key.to_owned(), current: RwLock::new(current) })
    }

    /// Read the files again; on success new handshakes use the new certificate,
    /// otherwise the old one stays and the error says why.
    pub fn reload(&self) -> Result<CertificateInfo, TlsError> {
        let (key, info) = read(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (key, info.clone());
        Ok(info)
    }

    /// The certificate in force.
    pub fn info(&self) -> CertificateInfo {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone())
    }
}

/// Read a chain and its key, and check that they belong together.
fn read(cert: &Path, key: &Path) -> Result<(Arc<CertifiedKey>, CertificateInfo), TlsError> {
    let pem_error = |path: &Path, why: String| TlsError::Pem { path: path.to_owned(), why };
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::Read {
        what: "certificate",
        path: cert.into(),
        source,
    })?;
    let key_pem =
        std::fs::read(key).map_err(|source| TlsError::Read { what: "key", path: key.into(), source })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(pem_error(cert, "no CERTIFICATE in it".into()));
    }
    let der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| pem_error(key, format!("not a PEM private key: {e}")))?;
    let mismatch = |why: String| TlsError::Mismatch { cert: cert.to_owned(), key: key.to_owned(), why };
    let signing = provider::default_provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| mismatch(format!("unusable key: {e}")))?;
    let sha256 = Sha256::digest(&chain[0]).iter().map(|b| format!("{b:02x}")).collect();
    let info = CertificateInfo { cert: cert.to_owned(), chain_len: chain.len(), sha256 };
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(mismatch("the key is not the certificate's".into()));
        }
        Err(e) => return Err(mismatch(format!("the certificate does not parse: {e}"))),
    }
    Ok((Arc::new(certified), info))
}

/// The server side's TLS settings: TLS 1.2 and 1.3 with rustls' safe defaults,
/// no client certificates, ALPN `h2` and `http/1.1`, the certificate from
/// `certificates`, stateless TLS 1.3 session tickets.
pub fn server_config(certificates: Arc<Certificates>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    // Tickets rather than a server-side cache: any proxy thread resumes any
    // session, and a reload of the certificate does not end them.
    config.ticketer = provider::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// A client's TLS connection as pingora's `Stream` (for its HTTP/2 session):
/// the TLS stream, with the socket's digest (the client's address) and the
/// negotiated protocol.
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
