//! The run directory's local certificate authority and the load balancers'
//! certificates (`tls/` in the run directory).
//!
//! `tls/ca.pem` (readable: clients trust it) and `tls/ca.key` (0600) are made
//! once per run directory, on the controller's first start; every later start
//! reuses them, so a client that trusts the CA keeps trusting the deployment.
//! Each load balancer gets `tls/<name>.pem` (its certificate, then the CA's) and
//! `tls/<name>.key` (0600), made when missing, for the app's DNS name
//! (`www.millions.test`), `localhost` and the load balancer's IP; they are valid
//! for 397 days and a new one is made once less than 30 remain.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use topology::{Node, Topology};

use crate::error::{Context as _, ControlError};
use crate::files::write_private;

/// The CA's name, as its certificate's subject (and the issuer of every
/// certificate it signs).
const CA_NAME: &str = "Millions local CA";
/// A load balancer's certificate lives this long (the longest browsers accept
/// from public CAs; a local root is exempt, but short is good practice).
const SERVER_DAYS: i64 = 397;
/// A server certificate is made again once fewer days than this remain.
const RENEW_DAYS: i64 = 30;

/// The run directory's `tls/`.
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("tls")
}

/// The CA certificate clients trust (`curl --cacert`).
pub fn ca_path(run_dir: &Path) -> PathBuf {
    dir(run_dir).join("ca.pem")
}

/// The CA's private key (0600).
fn ca_key_path(run_dir: &Path) -> PathBuf {
    dir(run_dir).join("ca.key")
}

/// A load balancer's certificate chain and key files.
pub fn server_paths(run_dir: &Path, lb: &Node) -> (PathBuf, PathBuf) {
    let dir = dir(run_dir);
    (dir.join(format!("{}.pem", lb.name)), dir.join(format!("{}.key", lb.name)))
}

fn error(run_dir: &Path, why: impl std::fmt::Display) -> ControlError {
    ControlError::Certificate { dir: dir(run_dir), why: why.to_string() }
}

/// The CA's parameters: the same at every start, so that a certificate signed
/// now names the issuer the CA certificate made at the first start has.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// Make the CA unless the run directory has it: `tls/ca.pem` (0644), `tls/ca.key`
/// (0600). Returns it as an issuer.
pub(crate) fn ensure_ca(run_dir: &Path) -> Result<Issuer<'static, KeyPair>, ControlError> {
    let (cert, key) = (ca_path(run_dir), ca_key_path(run_dir));
    if key.exists() && cert.exists() {
        let pem = std::fs::read_to_string(&key).file("reading", &key)?;
        let key_pair =
            KeyPair::from_pem(&pem).map_err(|e| error(run_dir, format!("{}: {e}", key.display())))?;
        return Ok(Issuer::new(ca_params(), key_pair));
    }
    let key_pair = KeyPair::generate().map_err(|e| error(run_dir, e))?;
    let mut params = ca_params();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let ca = params.self_signed(&key_pair).map_err(|e| error(run_dir, e))?;
    write_private(&key, &key_pair.serialize_pem())?;
    write_private(&cert, &ca.pem())?;
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).file("writing", &cert)?;
    tracing::info!(ca = %cert.display(), "made the run directory's certificate authority");
    Ok(Issuer::new(ca_params(), key_pair))
}

/// The names `lb`'s certificate is for: the app's DNS name, `localhost`, its IP.
pub fn server_names(t: &Topology, lb: &Node) -> Vec<String> {
    let dns = t.dns();
    vec![format!("{}.{}", dns.app, dns.zone), "localhost".to_owned(), lb.addr.ip().to_string()]
}

/// Make `lb`'s certificate and key, signed by the run directory's CA, unless a
/// current one is there; returns the chain's and the key's paths.
pub(crate) fn ensure_server(
    run_dir: &Path,
    t: &Topology,
    lb: &Node,
) -> Result<(PathBuf, PathBuf), ControlError> {
    let (cert, key) = server_paths(run_dir, lb);
    let renew_after = std::fs::metadata(&cert)
        .and_then(|m| m.modified())
        .ok()
        .map(|made| made + std::time::Duration::from_secs(((SERVER_DAYS - RENEW_DAYS) * 86_400) as u64));
    if key.exists() && renew_after.is_some_and(|at| at > std::time::SystemTime::now()) {
        return Ok((cert, key));
    }
    let ca = ensure_ca(run_dir)?;
    let key_pair = KeyPair::generate().map_err(|e| error(run_dir, e))?;
    let mut params = CertificateParams::new(server_names(t, lb)).map_err(|e| error(run_dir, e))?;
    params.distinguished_name.push(DnType::CommonName, lb.name.clone());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(SERVER_DAYS);
    let signed = params.signed_by(&key_pair, &ca).map_err(|e| error(run_dir, e))?;
    let ca_pem = std::fs::read_to_string(ca_path(run_dir)).file("reading", &ca_path(run_dir))?;
    write_private(&key, &key_pair.serialize_pem())?;
    write_private(&cert, &format!("{}{ca_pem}", signed.pem()))?;
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).file("writing", &cert)?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_signs_certificates_lb_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let t = topology::preset("test").unwrap();
        let lb = t.nodes().iter().find(|n| n.role == topology::Role::LoadBalancer).unwrap();
        let (cert, key) = ensure_server(run, &t, lb).unwrap();
        let ca = std::fs::read(ca_path(run)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca_key_path(run)), 0o600);
        assert_eq!((mode(&ca_path(run)), mode(&key), mode(&cert)), (0o644, 0o600, 0o644));
        // The load balancer's own check: the chain parses, the key is its certificate's.
        lb::tls::Certificates::load(&cert, &key).unwrap();
        // Again: nothing is made anew (the CA above all: clients trust it).
        assert_eq!(ensure_server(run, &t, lb).unwrap(), (cert.clone(), key));
        ensure_ca(run).unwrap();
        assert_eq!(std::fs::read(ca_path(run)).unwrap(), ca);
        let names = server_names(&t, lb);
        assert!(
            names.contains(&"localhost".to_owned()) && names.contains(&lb.addr.ip().to_string()),
            "{names:?}"
        );
    }
}
