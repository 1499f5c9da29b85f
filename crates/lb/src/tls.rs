//! HTTPS at the public entry: the workspace's `tls` crate (rustls on ring,
//! reloadable [`Certificates`], the handshake under a deadline, [`TlsClient`]),
//! with the load balancer's ALPN: `h2` then `http/1.1`.
//!
//! The TLS connection goes to the HTTP/1 path or, through [`TlsClient`], to
//! pingora's HTTP/2 session; the handshake itself runs in [`crate::front`] under
//! the header timeout. These names stay here so `lb::tls::…` keeps working.

use std::sync::Arc;

pub use ::tls::{CertificateInfo, Certificates, HandshakeError, TlsClient, TlsError, handshake};

/// The ALPN protocols offered, preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = ::tls::ALPN_H2_HTTP1;

/// The server side's TLS settings: TLS 1.2 and 1.3 with rustls' safe defaults,
/// no client certificates, ALPN `h2` and `http/1.1`, the certificate from
/// `certificates`, stateless TLS 1.3 session tickets.
pub fn server_config(certificates: Arc<Certificates>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    ::tls::server_config(certificates, &ALPN_PROTOCOLS)
}
