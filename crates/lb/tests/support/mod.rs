//! What the load balancer's integration tests share: a test CA with the
//! certificates it signs (made by rcgen into a temporary directory; no key is
//! ever committed), and raw HTTP/1.1 over TLS.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A test CA and the certificates it signs.
pub struct Pki {
    /// The CA's certificate and key.
    pub ca: CertifiedIssuer<'static, KeyPair>,
    /// Where the load balancer's files are written.
    pub dir: tempfile::TempDir,
}

/// A server certificate (PEM) and its key (PEM).
pub struct Leaf {
    /// The certificate, PEM.
    pub cert: String,
    /// Its key, PEM.
    pub key: String,
    /// The certificate, DER (what a client is shown).
    pub der: Vec<u8>,
}

impl Pki {
    /// A new CA, and a new directory for the load balancer's files.
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca, dir: tempfile::tempdir().unwrap() }
    }

    /// A certificate for `localhost` and 127.0.0.1.
    pub fn leaf(&self) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf { cert: cert.pem(), key: key.serialize_pem(), der: cert.der().to_vec() }
    }

    /// Where the load balancer reads its certificate chain.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// Where the load balancer reads its key.
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// Write `cert` and `key` where the load balancer reads them.
    pub fn install(&self, cert: &str, key: &str) {
        std::fs::write(self.cert_path(), cert).unwrap();
        std::fs::write(self.key_path(), key).unwrap();
    }

    /// The CA, for reqwest.
    pub fn root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.ca.pem().as_bytes()).unwrap()
    }

    /// A rustls client trusting the CA (no ALPN: HTTP/1.1).
    pub fn rustls_client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// `request`, as bytes, over a new HTTPS connection speaking HTTP/1.1; the whole
/// answer (the load balancer closes after its own).
pub async fn raw_https(pki: &Pki, addr: SocketAddr, request: &[u8]) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(pki.rustls_client()).connect(name, tcp).await.unwrap();
    tls.write_all(request).await.unwrap();
    // tokio-rustls may keep what it could not write yet: without this the
    // request can stay in the client.
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    // A reset after the answer (the rest of a refused request unread) is no failure.
    let _ = tls.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}
