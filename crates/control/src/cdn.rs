//! The DCs' CDN edges: each one's configuration (its DC's web servers as origins,
//! its HTTPS listener with a certificate of the run directory's CA), and what the
//! web servers are told about the edges so that photo URLs point at them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use topology::{Node, Role, Topology};

use crate::error::ControlError;
use crate::files::{config_path, node_dir, write_private};
use crate::shared::Shared;

/// The paths an edge serves: the web servers' photos (`/media/{key}`).
pub const SERVED: &str = "/media/";

/// How long a stopping edge keeps serving after its `/readyz` turned 503: longer
/// than the web servers take to withdraw it from their pages (two failed probes
/// a second apart), so no page names an edge that has closed.
pub const STOP_DELAY_MS: u64 = 3000;

/// Bytes each edge's disk tier may take.
pub const DISK_BYTES: u64 = 256 << 20;

/// `edge`'s disk tier in the run directory: what it cached survives its restarts.
pub fn disk_dir(run_dir: &std::path::Path, edge: &str) -> PathBuf {
    node_dir(run_dir, edge).join("cache")
}

/// Present while `edge` may hold an object a purge named but did not reach it
/// with (it was not running, or did not answer), one purge's JSON per line: its
/// disk tier is dropped before it starts again, and the purges that missed it
/// while it was starting are sent once it is ready ([`replay_missed`]).
fn missed_purge(run_dir: &std::path::Path, edge: &str) -> PathBuf {
    node_dir(run_dir, edge).join("missed-purge")
}

/// `edge`'s configuration without its secrets: its listeners, and its DC's web
/// servers as origins (a miss is fetched from one of them directly, not through
/// the load balancer, whose plain port only redirects to HTTPS). Checked by the
/// edge's own rules; `tls` names the certificate files and `disk` its disk tier's
/// folder, when given.
pub fn config(
    t: &Topology,
    edge: &Node,
    tls: Option<(PathBuf, PathBuf)>,
    disk: Option<PathBuf>,
) -> Result<cdn::CdnConfig, ControlError> {
    let invalid =
        |e: &dyn std::fmt::Display| ControlError::Invalid(format!("{}'s CDN configuration: {e}", edge.name));
    let admin = edge.admin_addr().ok_or_else(|| invalid(&"no room for its admin port"))?;
    // Only the web servers no scale removes (the first `web.min`): an edge
    // has no list to be told of changes, and an origin gone would fail misses.
    let kept = t.dc(&edge.dc).and_then(|d| d.scale(Role::Web)).map_or(usize::MAX, |s| s.min as usize);
    let origins: Vec<String> =
        t.nodes_in(&edge.dc).filter(|n| n.role == Role::Web).take(kept).map(|n| n.addr.to_string()).collect();
    // Only the photos: the web servers' pages, probes and metrics are never
    // reachable through an edge (the load balancer is the app's entry). One app
    // under every name of the edge (its IP over HTTP and HTTPS, `cdn.` in the
    // zone): the host is not part of the cache key.
    let mut text = format!(
        "listen = \"{}\"\nadmin = \"{admin}\"\norigin = {origins:?}\npaths = [{SERVED:?}]\nhost_in_key = false\nstop_delay_ms = {STOP_DELAY_MS}\n",
        edge.addr
    );
    if let Some((cert, key)) = tls {
        let https = edge.https_addr(t.ports().https).ok_or_else(|| invalid(&"no HTTPS address"))?;
        text.push_str(&format!("\n[tls]\nlisten = \"{https}\"\ncert = {cert:?}\nkey = {key:?}\n"));
    }
    if let Some(dir) = disk {
        text.push_str(&format!("\n[disk]\ndir = {dir:?}\nbytes = {DISK_BYTES}\n"));
    }
    cdn::CdnConfig::parse(&text, &edge.name).map_err(|e| invalid(&e))
}

/// Every edge's configuration of `t`, checked: what `millions up` does before it
/// starts anything.
pub fn check_configs(t: &Topology) -> Result<(), ControlError> {
    for edge in t.nodes_of(Role::Cdn) {
        config(t, edge, None, None)?;
    }
    Ok(())
}

/// Write `edge`'s configuration ([`config`]) where its process reads it, with the
/// admin token, its certificate (made when missing) and its disk tier — dropped
/// first if a purge missed the edge while it was down.
pub(crate) fn write_config(shared: &Shared, edge: &Node) -> Result<PathBuf, ControlError> {
    let t = shared.topology();
    let run_dir = &shared.opts.run_dir;
    let tls = crate::tls::ensure_server(run_dir, &t, edge)?;
    let disk = disk_dir(run_dir, &edge.name);
    let missed = missed_purge(run_dir, &edge.name);
    if missed.exists() {
        match std::fs::remove_dir_all(&disk) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ControlError::Io { what: format!("dropping {}", disk.display()), source });
            }
        }
        std::fs::remove_file(&missed)
            .map_err(|source| ControlError::Io { what: format!("removing {}", missed.display()), source })?;
        tracing::warn!(
            edge = edge.name,
            "a purge missed this edge: its disk tier was dropped before it starts"
        );
    }
    let mut config = config(&t, edge, Some(tls), Some(disk))?;
    config.admin_token = Some(shared.secrets.admin.clone());
    let path = config_path(&shared.opts.run_dir, &edge.name);
    write_private(&path, &config.to_toml())?;
    Ok(path)
}

/// The `[media.cdn]` section of a web server of `dc`: every edge of the topology
/// (its own DC's are preferred), each with its public addresses and the admin
/// `/readyz` the web server probes. Empty when the topology has no edges.
pub(crate) fn web_section(t: &Topology, dc: &str) -> String {
    let mut text = String::new();
    let edges: Vec<&Node> = t.nodes_of(Role::Cdn).collect();
    if edges.is_empty() {
        return text;
    }
    text.push_str(&format!("\n[media.cdn]\ndc = {dc:?}\n"));
    for edge in edges {
        let https =
            edge.https_addr(t.ports().https).map(|a| format!("https = \"{a}\"\n")).unwrap_or_default();
        let health = edge.admin_addr().unwrap_or(edge.addr);
        text.push_str(&format!(
            "\n[[media.cdn.edges]]\nname = {name:?}\ndc = {edge_dc:?}\nhttp = \"{http}\"\n{https}health = \"http://{health}/readyz\"\n",
            name = edge.name,
            edge_dc = edge.dc,
            http = edge.addr,
        ));
    }
    text
}

/// Once `edge` is ready after a start: send it the purges that missed it while it
/// was starting (its disk tier was dropped before the start for those that came
/// earlier), then forget them. Those it does not take stay marked, so its disk
/// tier is dropped at its next start.
pub(crate) async fn replay_missed(shared: &Shared, edge: &Node) {
    let Some(admin) = edge.admin_addr() else { return };
    let path = missed_purge(&shared.opts.run_dir, &edge.name);
    if let Err(e) = replay(&path, admin, &shared.secrets.admin).await {
        tracing::warn!(
            edge = edge.name,
            error = e,
            "purges that missed the edge while it started were not all sent"
        );
    }
}

/// Send every purge in the marker at `path` to the edge at `admin`, and remove the
/// marker once each was taken.
async fn replay(path: &std::path::Path, admin: std::net::SocketAddr, token: &str) -> Result<(), String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let client = reqwest::Client::builder().timeout(PURGE_TIMEOUT).build().map_err(|e| e.to_string())?;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let body: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{line}: {e}"))?;
        let r = client
            .post(format!("http://{admin}/admin/purge"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("{line}: {}", r.status()));
        }
    }
    std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// How long one edge may take to answer a purge.
const PURGE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a purge did at one edge.
#[derive(Debug, Clone, Serialize)]
pub struct EdgePurge {
    /// The edge.
    pub edge: String,
    /// Its DC.
    pub dc: String,
    /// `purged` (the edge answered once every named object was gone or marked
    /// stale), `not-running` (its disk tier is dropped before it starts again,
    /// and its memory tier starts empty), or `failed` (it runs and may still
    /// serve what the purge named; its disk tier is dropped at its next start).
    pub outcome: &'static str,
    /// Objects the edge purged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purged: Option<u64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A purge across every edge of the topology.
#[derive(Debug, Clone, Serialize)]
pub struct PurgeReport {
    /// Every edge reached or not: no edge still serves what the purge named.
    pub complete: bool,
    /// Objects purged, over every edge.
    pub purged: u64,
    /// Each edge's outcome, in topology order.
    pub edges: Vec<EdgePurge>,
}

/// Purge what `request` names from every edge of every DC at once, and return
/// once each has answered (or failed to, within [`PURGE_TIMEOUT`]). The request
/// is checked by the edges' own rules first: a bad one reaches no edge.
pub(crate) async fn purge(
    shared: &Shared,
    request: &cdn::admin::PurgeRequest,
) -> Result<PurgeReport, ControlError> {
    request.selectors().map_err(ControlError::BadRequest)?;
    let mut edges = Vec::new();
    for edge in shared.topology().nodes_of(Role::Cdn) {
        edges.push(Target {
            name: edge.name.clone(),
            dc: edge.dc.clone(),
            admin: edge.admin_addr(),
            running: shared.running(&edge.name).await,
            missed: Some(missed_purge(&shared.opts.run_dir, &edge.name)),
        });
    }
    if edges.is_empty() {
        return Err(ControlError::Refused("the topology has no CDN edges ([dc] cdn = { count = N })".into()));
    }
    Ok(purge_edges(&edges, &shared.secrets.admin, request).await)
}

/// An edge a purge is sent to.
struct Target {
    /// Its node's name.
    name: String,
    /// Its DC.
    dc: String,
    /// Its admin listener.
    admin: Option<std::net::SocketAddr>,
    /// Whether its process runs.
    running: bool,
    /// Its missed-purge marker, written when the purge does not reach it (its
    /// disk tier is then dropped before it starts again).
    missed: Option<PathBuf>,
}

/// [`purge`] at `edges`, with the admin token.
async fn purge_edges(edges: &[Target], token: &str, request: &cdn::admin::PurgeRequest) -> PurgeReport {
    let client = reqwest::Client::builder().timeout(PURGE_TIMEOUT).build().unwrap_or_default();
    let body = serde_json::json!({
        "paths": request.paths,
        "prefixes": request.prefixes,
        "tags": request.tags,
        "soft": request.soft,
    });
    let each = edges.iter().map(|edge| {
        let (client, body) = (&client, &body);
        async move {
            let outcome = |outcome, purged, error| EdgePurge {
                edge: edge.name.clone(),
                dc: edge.dc.clone(),
                outcome,
                purged,
                error,
            };
            let mark_missed = || {
                if let Some(path) = &edge.missed {
                    let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
                        use std::io::Write as _;
                        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                        writeln!(file, "{body}")
                    });
                    if let Err(e) = written {
                        tracing::error!(edge = edge.name, error = %e, "cannot mark a missed purge");
                    }
                }
            };
            if !edge.running {
                mark_missed();
                return outcome("not-running", None, None);
            }
            let Some(admin) = edge.admin else {
                return outcome("failed", None, Some("no admin listener".into()));
            };
            let sent =
                client.post(format!("http://{admin}/admin/purge")).bearer_auth(token).json(body).send().await;
            let answer = match sent {
                Ok(r) => (r.status(), r.json::<serde_json::Value>().await.unwrap_or_default()),
                Err(e) => {
                    mark_missed();
                    return outcome("failed", None, Some(e.to_string()));
                }
            };
            match answer {
                (status, body) if status.is_success() => outcome("purged", body["purged"].as_u64(), None),
                (status, answer) => {
                    mark_missed();
                    outcome("failed", None, Some(format!("{status}: {answer}")))
                }
            }
        }
    });
    let edges = futures::future::join_all(each).await;
    let complete = edges.iter().all(|e| e.outcome != "failed");
    let purged = edges.iter().filter_map(|e| e.purged).sum();
    for e in edges.iter().filter(|e| e.outcome == "failed") {
        tracing::warn!(
            edge = e.edge,
            error = e.error.as_deref().unwrap_or(""),
            "a purge did not reach an edge"
        );
    }
    PurgeReport { complete, purged, edges }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_fetches_from_its_dc_s_web_servers_and_listens_on_its_own_addresses() {
        let t = topology::preset("default").unwrap();
        let edge = t.node("dc2-cdn-1").unwrap();
        let c =
            config(&t, edge, Some(("c.pem".into(), "c.key".into())), Some("/run/x/cache".into())).unwrap();
        assert_eq!(c.listen, "127.0.2.50:8000".parse().unwrap());
        assert_eq!(c.admin, "127.0.2.50:8001".parse().unwrap());
        let text = c.to_toml();
        assert!(text.contains("127.0.2.20:8080") && text.contains("127.0.2.21:8080"), "{text}");
        assert!(!text.contains("127.0.1.2"), "no other DC's web server: {text}");
        // With a scaling range, only the web servers no scale removes.
        let scaled = topology::preset_text("default").unwrap().replacen(
            "web = { count = 2 }",
            "web = { count = 3, min = 1, max = 4 }",
            2,
        );
        let t2 = topology::parse(&scaled, "t").unwrap();
        let text2 = config(&t2, t2.node("dc2-cdn-1").unwrap(), None, None).unwrap().to_toml();
        assert!(text2.contains("127.0.2.20:8080") && !text2.contains("127.0.2.21:8080"), "{text2}");
        assert_eq!(c.paths, ["/media/"], "only the photos");
        assert!(!c.host_in_key, "one site under several names");
        assert_eq!(c.stop_delay_ms, STOP_DELAY_MS, "withdrawn from the pages before it closes");
        assert!(text.contains("127.0.2.50:8443"), "HTTPS on the topology's port: {text}");
        assert!(
            text.contains("/run/x/cache") && text.contains(&DISK_BYTES.to_string()),
            "a disk tier: {text}"
        );
        check_configs(&t).unwrap();
    }

    /// An origin on port 0 whose answers are cacheable for a minute and tagged
    /// `t-{path}`; counts the requests it serves.
    async fn origin() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = served.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let tag = format!("t-{}", uri.path().trim_start_matches('/'));
                (
                    [("cache-control", "public, max-age=60".to_owned()), ("surrogate-key", tag)],
                    uri.to_string(),
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, served)
    }

    /// `X-Cache` of a GET of `url`.
    async fn outcome(url: &str) -> String {
        let r = reqwest::get(url).await.unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-cache"].to_str().unwrap().to_ascii_lowercase()
    }

    #[tokio::test]
    async fn a_purge_reaches_every_edge_by_path_prefix_and_tag_and_names_those_it_did_not() {
        let (origin, served) = origin().await;
        let token = "a-purge-token-of-enough-length";
        let mut edges = Vec::new();
        for _ in 0..2 {
            let mut c =
                cdn::CdnConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), origin);
            c.admin_token = Some(token.into());
            c.threads = 1;
            edges.push(cdn::start(c).await.unwrap());
        }
        let targets: Vec<Target> = edges
            .iter()
            .enumerate()
            .map(|(i, e)| Target {
                name: format!("dc{}-cdn-1", i + 1),
                dc: format!("dc{}", i + 1),
                admin: Some(e.admin()),
                running: true,
                missed: None,
            })
            .collect();
        let paths = ["/a/1", "/a/2", "/b/1"];
        for e in &edges {
            for p in paths {
                let url = format!("http://{}{p}", e.addr());
                assert_eq!(outcome(&url).await, "miss");
                assert_eq!(outcome(&url).await, "hit");
            }
        }
        let fetched = served.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(fetched, 6, "each edge fetched each object once");
        let request =
            |json: serde_json::Value| -> cdn::admin::PurgeRequest { serde_json::from_value(json).unwrap() };
        // By path, by prefix, by tag: gone from both edges once the purge returns
        // (the check's miss stores /a/1 again, so the prefix then finds two).
        for (purge, gone, n) in [
            (serde_json::json!({"paths": ["/a/1"]}), "/a/1", 1),
            (serde_json::json!({"prefixes": ["/a/"]}), "/a/2", 2),
            (serde_json::json!({"tags": ["t-b/1"]}), "/b/1", 1),
        ] {
            let report = purge_edges(&targets, token, &request(purge.clone())).await;
            assert!(report.complete, "{report:?}");
            assert_eq!(report.edges.len(), 2);
            assert!(
                report.edges.iter().all(|e| e.outcome == "purged" && e.purged == Some(n)),
                "{purge}: {report:?}"
            );
            for e in &edges {
                assert_eq!(outcome(&format!("http://{}{gone}", e.addr())).await, "miss", "{purge}");
            }
        }
        // An edge that does not answer: the purge says so and is not complete; one
        // that does not run cannot serve until it starts again. Either way it is
        // marked, so its disk tier is dropped before it starts.
        let markers = tempfile::tempdir().unwrap();
        let marker = |i: usize| markers.path().join(format!("edge-{i}")).join("missed-purge");
        let mut broken = targets;
        for (i, t) in broken.iter_mut().enumerate() {
            t.missed = Some(marker(i));
        }
        let report = purge_edges(&broken, token, &request(serde_json::json!({"paths": ["/a/1"]}))).await;
        assert!(report.complete && !marker(0).exists() && !marker(1).exists(), "reached: no marker");
        broken[0].admin =
            Some(nodes::free_port("127.0.0.1".parse().unwrap()).map(|p| ([127, 0, 0, 1], p).into()).unwrap());
        broken[1].running = false;
        let report = purge_edges(&broken, token, &request(serde_json::json!({"paths": ["/a/1"]}))).await;
        assert!(!report.complete, "{report:?}");
        assert_eq!(report.edges[0].outcome, "failed");
        assert!(report.edges[0].error.is_some());
        assert_eq!(report.edges[1].outcome, "not-running");
        assert!(marker(0).exists() && marker(1).exists(), "both missed it");
        // A second purge that misses them is kept too; once an edge is ready, both
        // are sent to it and the marker goes.
        let report = purge_edges(&broken, token, &request(serde_json::json!({"tags": ["t-b/1"]}))).await;
        assert!(!report.complete);
        assert_eq!(std::fs::read_to_string(marker(1)).unwrap().lines().count(), 2, "one purge per line");
        let url = format!("http://{}/b/1", edges[1].addr());
        outcome(&url).await;
        assert_eq!(outcome(&url).await, "hit", "cached before the replay");
        replay(&marker(1), edges[1].admin(), token).await.unwrap();
        assert!(!marker(1).exists(), "taken: forgotten");
        assert_eq!(outcome(&url).await, "miss", "the replayed tag purge reached the edge");
        std::fs::write(marker(0), "{\"paths\": [\"/a/1\"]}\n").unwrap();
        assert!(replay(&marker(0), edges[0].admin(), "not-the-token-at-all-no").await.is_err());
        assert!(marker(0).exists(), "refused: kept for the next start");
        replay(&markers.path().join("none"), edges[0].admin(), token).await.unwrap();
        // A wrong token is refused by the edge: failed, nothing purged.
        let live: Vec<Target> = edges
            .iter()
            .map(|e| Target {
                name: "x".into(),
                dc: "dc1".into(),
                admin: Some(e.admin()),
                running: true,
                missed: None,
            })
            .collect();
        let report =
            purge_edges(&live, "not-the-token-at-all-no", &request(serde_json::json!({"paths": ["/b/1"]})))
                .await;
        assert!(!report.complete && report.edges.iter().all(|e| e.outcome == "failed"), "{report:?}");
        for e in edges {
            e.stop().await;
        }
    }

    #[test]
    fn web_servers_learn_every_edge_and_their_own_dc() {
        let t = topology::preset("default").unwrap();
        let section = web_section(&t, "dc1");
        let parsed: toml::Value = toml::from_str(&format!("[media]\n{section}")).unwrap();
        let cdn = &parsed["media"]["cdn"];
        assert_eq!(cdn["dc"].as_str(), Some("dc1"));
        let edges = cdn["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 2);
        assert_eq!(edges[1]["name"].as_str(), Some("dc2-cdn-1"));
        assert_eq!(edges[1]["https"].as_str(), Some("127.0.2.50:8443"));
        assert_eq!(edges[1]["health"].as_str(), Some("http://127.0.2.50:8001/readyz"));
        let without = topology::parse(
            &topology::preset_text("single").unwrap().replace("cdn = { count = 1 }", "cdn = { count = 0 }"),
            "single",
        )
        .unwrap();
        assert_eq!(web_section(&without, "dc1"), "", "no edges: no section");
    }
}
