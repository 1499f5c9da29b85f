//! The run directory's local certificate authority and the load balancers'
//! certificates (`tls/` in the run directory), and their renewal.
//!
//! `tls/ca.pem` (readable: clients trust it) and `tls/ca.key` (0600) are made
//! once per run directory, on the controller's first start; every later start
//! reuses them, so a client that trusts the CA keeps trusting the deployment.
//! Each load balancer gets `tls/<name>.pem` (its certificate, then the CA's) and
//! `tls/<name>.key` (0600), for the app's DNS name (`www.millions.test`),
//! `localhost` and the load balancer's IP, valid for the topology's
//! `[tls] cert_lifetime_secs`. [`renew_if_due`] makes a new one once less than
//! `[tls] renew_before_secs` remains (or none is usable): when a load balancer's
//! configuration is written, and on every check of the controller's renewal
//! loop (`renew`). A renewal keeps the key and replaces the certificate file
//! in one rename, after the load balancer's own check of the new pair: the files
//! on disk are always a certificate with its key, whatever fails.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

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

/// The names a server's certificate is for: `cdn.` in the zone for a CDN edge;
/// for a load balancer the app's DNS name and `cdn.` too (DNS answers the CDN's
/// name with the load balancers when no edge is healthy); `localhost`; its IP.
pub fn server_names(t: &Topology, server: &Node) -> Vec<String> {
    let dns = t.dns();
    let cdn = format!("{}.{}", crate::dns::CDN_LABEL, dns.zone);
    let mut names = match server.role {
        topology::Role::Cdn => vec![cdn],
        _ => vec![format!("{}.{}", dns.app, dns.zone), cdn],
    };
    names.extend(["localhost".to_owned(), server.addr.ip().to_string()]);
    names
}

/// Make `lb`'s certificate and key, signed by the run directory's CA, unless a
/// current one is there ([`renew_if_due`]); returns the chain's and the key's paths.
pub(crate) fn ensure_server(
    run_dir: &Path,
    t: &Topology,
    lb: &Node,
) -> Result<(PathBuf, PathBuf), ControlError> {
    renew_if_due(run_dir, t, lb, SystemTime::now())?;
    Ok(server_paths(run_dir, lb))
}

/// When the certificate in the PEM file `path` (its first) expires.
pub fn not_after(path: &Path) -> Result<SystemTime, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
    der_not_after(&pem.contents).map_err(|e| format!("{}: {e}", path.display()))
}

/// When the certificate `der` (DER, as a TLS handshake shows it) expires.
pub fn der_not_after(der: &[u8]) -> Result<SystemTime, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let secs = cert.validity().not_after.timestamp();
    let secs = u64::try_from(secs).map_err(|_| format!("expires before 1970 ({secs})"))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// What [`renew_if_due`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The certificate on disk has more than the renewal window left.
    Current {
        /// When it expires.
        not_after: SystemTime,
    },
    /// A new one was made (the load balancer must be told to reload).
    Renewed {
        /// When the new one expires.
        not_after: SystemTime,
        /// Why it was made, in words.
        why: String,
    },
}

/// One certificate made at a time: the renewal loop and a load balancer's
/// (re)start may both find one due.
static ISSUING: Mutex<()> = Mutex::new(());

/// Make `lb`'s certificate anew if, at `now`, it has less than the topology's
/// `[tls] renew_before_secs` left, or there is no usable one (no key, no
/// certificate, one that does not parse). A failure leaves the files as they
/// were (the new certificate is checked with the key before it replaces the
/// old one, in one rename); the caller tries again later.
pub fn renew_if_due(
    run_dir: &Path,
    t: &Topology,
    lb: &Node,
    now: SystemTime,
) -> Result<Checked, ControlError> {
    let _one = ISSUING.lock().unwrap_or_else(|e| e.into_inner());
    let (cert, key) = server_paths(run_dir, lb);
    let window = Duration::from_secs(t.tls().renew_before_secs);
    let why = match (key.exists(), not_after(&cert)) {
        (true, Ok(end)) => {
            let left = end.duration_since(now).unwrap_or(Duration::ZERO);
            if left > window {
                return Ok(Checked::Current { not_after: end });
            }
            format!("{} s left, renewed within {} s of expiry", left.as_secs(), window.as_secs())
        }
        (false, _) => "no key".to_owned(),
        (true, Err(e)) => format!("no usable certificate ({e})"),
    };
    let not_after = issue(run_dir, t, lb, now)?;
    Ok(Checked::Renewed { not_after, why })
}

/// Sign a certificate for `lb` valid from `now` for the topology's lifetime and
/// put it in place: with its key if that is usable (only the certificate file
/// is replaced), else with a new key (then, with no usable pair on disk before,
/// the key is put in place first). Both are checked together, as the load
/// balancer checks them, before either replaces anything.
fn issue(run_dir: &Path, t: &Topology, lb: &Node, now: SystemTime) -> Result<SystemTime, ControlError> {
    let ca = ensure_ca(run_dir)?;
    let (cert, key) = server_paths(run_dir, lb);
    let kept = std::fs::read_to_string(&key).ok().and_then(|pem| KeyPair::from_pem(&pem).ok());
    let new_key = kept.is_none();
    let key_pair = match kept {
        Some(k) => k,
        None => KeyPair::generate().map_err(|e| error(run_dir, e))?,
    };
    let mut params = CertificateParams::new(server_names(t, lb)).map_err(|e| error(run_dir, e))?;
    params.distinguished_name.push(DnType::CommonName, lb.name.clone());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let start = time::OffsetDateTime::from(now);
    let lifetime = i64::try_from(t.tls().cert_lifetime_secs).unwrap_or(i64::MAX);
    params.not_before = start - time::Duration::days(1);
    params.not_after = start + time::Duration::seconds(lifetime);
    let signed = params.signed_by(&key_pair, &ca).map_err(|e| error(run_dir, e))?;
    let ca_pem = std::fs::read_to_string(ca_path(run_dir)).file("reading", &ca_path(run_dir))?;

    let (cert_new, key_new) = (cert.with_extension("pem.new"), key.with_extension("key.new"));
    let placed = (|| {
        write_private(&cert_new, &format!("{}{ca_pem}", signed.pem()))?;
        std::fs::set_permissions(&cert_new, std::fs::Permissions::from_mode(0o644))
            .file("writing", &cert_new)?;
        let key_checked = if new_key {
            write_private(&key_new, &key_pair.serialize_pem())?;
            &key_new
        } else {
            &key
        };
        lb::tls::Certificates::load(&cert_new, key_checked).map_err(|e| error(run_dir, e))?;
        if new_key {
            std::fs::rename(&key_new, &key).file("writing", &key)?;
        }
        std::fs::rename(&cert_new, &cert).file("writing", &cert)
    })();
    if placed.is_err() {
        let _ = std::fs::remove_file(&cert_new);
        let _ = std::fs::remove_file(&key_new);
    }
    placed?;
    let not_after =
        SystemTime::UNIX_EPOCH + Duration::from_secs(params.not_after.unix_timestamp().max(0) as u64);
    tracing::info!(lb = lb.name, cert = %cert.display(), new_key, not_after = %humantime::format_rfc3339(not_after), "made a certificate");
    Ok(not_after)
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
        // The CDN's name too: DNS answers it with the load balancers when no edge is healthy.
        assert!(names.contains(&"www.millions.test".to_owned()), "{names:?}");
        assert!(names.contains(&"cdn.millions.test".to_owned()), "{names:?}");
        let edge = t.node("dc1-cdn-1").unwrap();
        let edge_names = server_names(&t, edge);
        assert_eq!(edge_names, ["cdn.millions.test", "localhost", &edge.addr.ip().to_string()]);
        let (edge_cert, edge_key) = ensure_server(run, &t, edge).unwrap();
        lb::tls::Certificates::load(&edge_cert, &edge_key).unwrap();
    }

    #[test]
    fn a_certificate_is_renewed_within_its_window_with_its_key_and_a_failed_renewal_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let text = format!(
            "{}\n[tls]\ncert_lifetime_secs = 60\nrenew_before_secs = 20\nrenew_check_secs = 1\n",
            topology::preset_text("test").unwrap()
        );
        let t = topology::parse(&text, "t").unwrap();
        let lb = t.nodes().iter().find(|n| n.role == topology::Role::LoadBalancer).unwrap();
        let (cert, key) = server_paths(run, lb);
        let start = SystemTime::now();
        let Checked::Renewed { not_after: first, why } = renew_if_due(run, &t, lb, start).unwrap() else {
            panic!("nothing there: made")
        };
        assert_eq!(why, "no key");
        assert_eq!(not_after(&cert).unwrap(), first);
        let (cert_pem, key_pem) = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
        // Outside the window: kept.
        let later = start + Duration::from_secs(30);
        assert_eq!(renew_if_due(run, &t, lb, later).unwrap(), Checked::Current { not_after: first });
        assert_eq!(std::fs::read(&cert).unwrap(), cert_pem);

        // Inside it, and the renewal fails (where the new certificate goes is
        // taken): the pair on disk is untouched and still good.
        let due = start + Duration::from_secs(45);
        let blocked = cert.with_extension("pem.new");
        std::fs::create_dir(&blocked).unwrap();
        assert!(renew_if_due(run, &t, lb, due).is_err());
        assert_eq!(
            (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()),
            (cert_pem.clone(), key_pem.clone())
        );
        lb::tls::Certificates::load(&cert, &key).unwrap();
        assert!(!key.with_extension("key.new").exists());

        // Tried again: renewed, the key kept, a later expiry, the pair good.
        std::fs::remove_dir(&blocked).unwrap();
        let Checked::Renewed { not_after: second, why } = renew_if_due(run, &t, lb, due).unwrap() else {
            panic!("due: renewed")
        };
        assert!(second > first && why.contains(" s left, renewed within 20 s of expiry"), "{why}");
        assert_eq!(not_after(&cert).unwrap(), second);
        assert_ne!(std::fs::read(&cert).unwrap(), cert_pem);
        assert_eq!(std::fs::read(&key).unwrap(), key_pem, "the key stays");
        lb::tls::Certificates::load(&cert, &key).unwrap();
        assert!(!blocked.exists());
    }
}
