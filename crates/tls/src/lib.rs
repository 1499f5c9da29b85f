//! TLS at a public listener, shared by the load balancer (`lb`) and the CDN edge
//! (`cdn`): rustls on the ring provider, TLS 1.2 and 1.3.
//!
//! - [`Certificates`] holds the certificate in force, read from a PEM chain and
//!   a PEM key, and answers every handshake with it (rustls'
//!   `ResolvesServerCert`); [`Certificates::reload`] reads the files again and
//!   swaps it in only if the new chain and key are good and belong together.
//!   New handshakes use the new certificate; open connections keep theirs.
//! - [`server_config`]: rustls' safe defaults, no client certificates, the ALPN
//!   protocols the caller offers ([`ALPN_H2_HTTP1`], [`ALPN_HTTP1`]), stateless
//!   TLS 1.3 session tickets (resumption on any serving thread; the ticket keys
//!   outlive a reload).
//! - [`handshake`]: the server side of a handshake under a deadline, so a client
//!   that never finishes it cannot hold a connection.
//! - [`admin::routes`]: `GET /admin/tls` and `POST /admin/tls/reload` for a
//!   server's admin API.
//! - [`TlsClient`]: an established connection as pingora's `Stream`, with the
//!   socket's digest (the client's address) and the protocol ALPN chose, so
//!   pingora's sessions (HTTP/1.1 or HTTP/2) serve it like a plain one.
//!
//! Everything here is about the public entry; hops behind it are plain TCP on
//! private addresses (ADR 0016).
#![forbid(unsafe_code)]

pub mod admin;
mod certificates;
mod handshake;
mod stream;

pub use certificates::{CertificateInfo, Certificates, TlsError, server_config};
pub use handshake::{HandshakeError, handshake};
pub use stream::TlsClient;

/// ALPN `h2` then `http/1.1`: HTTP/2 for the clients that speak it.
pub const ALPN_H2_HTTP1: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// ALPN `http/1.1` alone.
pub const ALPN_HTTP1: [&[u8]; 1] = [b"http/1.1"];
