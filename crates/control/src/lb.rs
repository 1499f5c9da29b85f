//! The DCs' load balancers: their configuration, and keeping them told about the
//! web servers (drain before a web server is stopped, resume once it is back).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use topology::{LbAlgorithm, Node, Role};

use crate::Shared;
use crate::launch::write_private;

/// How long a web server's requests in flight may take to finish before it is
/// stopped anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A load balancer's admin listener (see [`Node::admin_addr`]).
pub fn admin_addr(lb: &Node) -> SocketAddr {
    lb.admin_addr().expect("a validated topology leaves a load balancer room for its admin port")
}

/// Write `lb`'s configuration: its DC's web servers as backends, the DC's algorithm.
pub(crate) fn write_config(shared: &Shared, lb: &Node) -> anyhow::Result<PathBuf> {
    let t = &shared.opts.topology;
    let backends = t.nodes_in(&lb.dc).filter(|n| n.role == Role::Web).map(|n| n.addr).collect();
    let mut config = lb::LbConfig::new(lb.addr, admin_addr(lb), backends);
    config.algorithm = match t.dc(&lb.dc).map(|d| d.lb_algorithm).unwrap_or_default() {
        LbAlgorithm::RoundRobin => lb::Algorithm::RoundRobin,
        LbAlgorithm::LeastRequest => lb::Algorithm::LeastRequest,
    };
    let run_dir = &shared.opts.run_dir;
    std::fs::create_dir_all(run_dir.join("nodes"))?;
    let path = run_dir.join("nodes").join(format!("{}.toml", lb.name));
    write_private(&path, &config.to_toml())?;
    Ok(path)
}

fn lbs_of<'a>(shared: &'a Shared, web: &'a Node) -> impl Iterator<Item = &'a Node> + 'a {
    shared.opts.topology.nodes_in(&web.dc).filter(|n| n.role == Role::LoadBalancer)
}

fn client(timeout: Duration) -> Option<reqwest::Client> {
    reqwest::Client::builder().timeout(timeout).build().ok()
}

/// Before `web` is stopped on purpose: its DC's load balancers stop sending it new
/// requests and wait (bounded) for those it has. A load balancer that is down is
/// skipped: it sends nothing anyway.
pub(crate) async fn drain(shared: &Shared, web: &Node) {
    let Some(client) = client(DRAIN_TIMEOUT + Duration::from_secs(2)) else { return };
    for lb in lbs_of(shared, web) {
        let url = format!(
            "http://{}/admin/backends/{}/drain?timeout_ms={}",
            admin_addr(lb),
            web.addr,
            DRAIN_TIMEOUT.as_millis()
        );
        match client.post(&url).send().await {
            Ok(r) => tracing::info!(lb = lb.name, web = web.name, status = r.status().as_u16(), "drained"),
            Err(e) => {
                tracing::debug!(lb = lb.name, web = web.name, error = %e, "no drain (load balancer down)")
            }
        }
    }
}

/// After `web` (re)started: its DC's load balancers take it back (a drain is
/// undone; the health checks readmit it).
pub(crate) async fn resume(shared: &Shared, web: &Node) {
    let Some(client) = client(Duration::from_secs(2)) else { return };
    for lb in lbs_of(shared, web) {
        let url = format!("http://{}/admin/backends/{}/resume", admin_addr(lb), web.addr);
        if let Err(e) = client.post(&url).send().await {
            tracing::debug!(lb = lb.name, web = web.name, error = %e, "no resume (load balancer down)");
        }
    }
}
