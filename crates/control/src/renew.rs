//! Renewing the load balancers' and CDN edges' certificates in a running
//! topology: at start and then every `[tls] renew_check_secs`, each one's certificate is
//! checked ([`tls::renew_if_due`]); one within `[tls] renew_before_secs` of its
//! expiry is made anew from the run directory's CA, and the load balancer is
//! told to read it (`POST /admin/tls/reload` with the admin token): no restart,
//! no connection cut (new handshakes get the new certificate, open connections
//! keep theirs). Each renewal is logged, and recorded in the event log once the
//! load balancer serves it. A renewal that fails, or a reload that fails (the
//! load balancer down, say), is logged and tried again at the next check.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use topology::{Node, Role};

use crate::cluster::Event;
use crate::shared::Shared;
use crate::tls::{self, Checked};

/// How long a load balancer may take to answer a reload.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Check every load balancer's certificate now and every `[tls]
/// renew_check_secs`, until shutdown.
pub(crate) async fn watch(shared: Shared) {
    let every = Duration::from_secs(shared.topology().tls().renew_check_secs);
    // Renewed, and not yet read by their load balancer (with the new expiry).
    let mut unread: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        // Load balancers and CDN edges: the servers with certificates.
        let lbs: Vec<Node> = shared
            .topology()
            .nodes()
            .iter()
            .filter(|n| matches!(n.role, Role::LoadBalancer | Role::Cdn))
            .cloned()
            .collect();
        for lb in &lbs {
            check(&shared, lb, &mut unread).await;
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Renew `lb`'s certificate if it is due, and have it read a renewed one.
async fn check(shared: &Shared, lb: &Node, unread: &mut BTreeSet<(String, String)>) {
    let opts = shared.opts.clone();
    let node = lb.clone();
    let checked = tokio::task::spawn_blocking(move || {
        tls::renew_if_due(&opts.run_dir, &opts.topology, &node, SystemTime::now())
    })
    .await;
    match checked {
        Ok(Ok(Checked::Current { .. })) => {}
        Ok(Ok(Checked::Renewed { not_after, why })) => {
            let until = humantime::format_rfc3339(not_after).to_string();
            tracing::info!(lb = lb.name, not_after = %until, why, "certificate renewed");
            unread.retain(|(name, _)| *name != lb.name);
            unread.insert((lb.name.clone(), until));
        }
        Ok(Err(e)) => {
            tracing::warn!(lb = lb.name, error = %e, "certificate renewal failed; tried again at the next check")
        }
        Err(e) => tracing::warn!(lb = lb.name, error = %e, "certificate renewal did not run"),
    }
    let Some((_, until)) = unread.iter().find(|(name, _)| *name == lb.name).cloned() else { return };
    match reload(shared, lb).await {
        Ok(sha256) => {
            unread.retain(|(name, _)| *name != lb.name);
            let detail =
                format!("{} serves a renewed certificate, valid until {until} (sha256 {sha256})", lb.name);
            shared.cluster.record(Event::node("cert-renewed", &lb.name, detail));
        }
        Err(e) => tracing::warn!(
            lb = lb.name,
            error = %e,
            "the load balancer did not reload its renewed certificate; tried again at the next check"
        ),
    }
}

/// Tell `lb` to read its certificate files again; the fingerprint it then serves.
async fn reload(shared: &Shared, lb: &Node) -> Result<String, String> {
    let client = reqwest::Client::builder().timeout(RELOAD_TIMEOUT).build().map_err(|e| e.to_string())?;
    let admin = lb.admin_addr().ok_or_else(|| format!("{} has no admin listener", lb.name))?;
    let url = format!("http://{admin}/admin/tls/reload");
    let r = client.post(&url).bearer_auth(&shared.secrets.admin).send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{url}: {status}: {body}"));
    }
    Ok(body["sha256"].as_str().unwrap_or("").to_owned())
}
