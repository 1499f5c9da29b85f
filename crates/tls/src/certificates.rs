//! The certificate in force, read from files and reloadable, and the server
//! settings that answer handshakes with it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Serialize;
use sha2::{Digest, Sha256};

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

/// What the certificate in force is, as an admin API shows it.
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
/// no client certificates, ALPN `alpn` (preferred first), the certificate from
/// `certificates`, stateless TLS 1.3 session tickets.
pub fn server_config(
    certificates: Arc<Certificates>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Tickets rather than a server-side cache: any serving thread resumes any
    // session, and a reload of the certificate does not end them.
    config.ticketer = provider::Ticketer::new()?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    /// A self-signed certificate for localhost and its key, PEM.
    fn pair() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_good_pair_loads_and_a_bad_reload_keeps_the_one_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (c1, k1) = pair();
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let certificates = Certificates::load(&cert, &key).unwrap();
        let before = certificates.info();
        assert_eq!((before.chain_len, before.sha256.len()), (1, 64));
        // Another certificate with the first key: refused, the first stays.
        let (c2, _) = pair();
        std::fs::write(&cert, &c2).unwrap();
        let e = certificates.reload().unwrap_err().to_string();
        assert!(e.contains("the key is not the certificate's"), "{e}");
        assert_eq!(certificates.info().sha256, before.sha256);
        // Garbage and missing files say which file and why.
        std::fs::write(&cert, "nonsense").unwrap();
        assert!(certificates.reload().unwrap_err().to_string().contains("no CERTIFICATE"));
        let e = Certificates::load(&dir.path().join("absent.pem"), &key).unwrap_err().to_string();
        assert!(e.contains("cannot read certificate") && e.contains("absent.pem"), "{e}");
        assert!(server_config(Arc::new(certificates), &crate::ALPN_HTTP1).is_ok());
    }
}
