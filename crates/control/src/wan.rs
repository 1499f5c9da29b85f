//! The WAN gateways (with a topology's `[wan]`): each DC's configuration from the
//! topology, and cutting or healing a DC's links (`millions chaos wan-cut` /
//! `wan-heal`).
//!
//! Every node of a DC reaches the PostgreSQL and Redis nodes of another DC through
//! its own DC's gateway ([`topology::Topology::address_from`]), which leaves from
//! the DC's range and adds the `[wan]` conditions. A cut DC is kept in
//! `cluster.json` (`wan_cut`): a gateway that restarts during a cut starts cut.
//! The controller itself is no DC's node: its probes and commands go straight to
//! the nodes, so it still sees both sides of a cut, as an operator's out-of-band
//! network would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use topology::{Node, Role, Topology};

use crate::cluster::Event;
use crate::error::ControlError;
use crate::files::{config_path, write_private};
use crate::shared::Shared;

/// What a cut or heal did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WanChange {
    /// The data center cut off from the others, or healed.
    pub(crate) dc: String,
    /// `cut` or `healed`.
    pub(crate) state: &'static str,
    /// The gateways told (those not running start with the state kept).
    pub(crate) gateways: Vec<String>,
    /// How long it took, in milliseconds.
    pub(crate) took_ms: u64,
}

/// Gateway `node`'s configuration in `t`, with the links to and from every DC in
/// `cut` cut.
pub fn config(t: &Topology, node: &Node, cut: &[String]) -> Result<wan::WanConfig, ControlError> {
    let invalid = |what: String| ControlError::Invalid(format!("{}'s WAN configuration: {what}", node.name));
    let settings = t.wan().ok_or_else(|| invalid("the topology has no [wan]".into()))?;
    let mut config = wan::WanConfig::new(&node.dc, node.addr);
    for peer in t.dcs().iter().filter(|d| d.name != node.dc) {
        let conditions = wan::Conditions {
            delay_ms: settings.delay_ms.into(),
            jitter_ms: settings.jitter_ms.into(),
            loss: settings.loss,
            loss_penalty_ms: settings.loss_penalty_ms.into(),
            cut: cut.contains(&peer.name) || cut.contains(&node.dc),
        };
        config.conditions.insert(peer.name.clone(), conditions);
    }
    for (listen, target) in t.wan_links(&node.dc) {
        config.links.push(wan::LinkConfig {
            listen,
            target: target.addr,
            source: SocketAddr::new(node.addr.ip(), 0),
            peer_dc: target.dc.clone(),
        });
    }
    settings::Validate::validate(&config).map_err(|e| invalid(e.to_string()))?;
    Ok(config)
}

/// Every gateway's configuration of `t`, checked: what the controller does before
/// it starts anything.
pub fn check_configs(t: &Topology) -> Result<(), ControlError> {
    for node in t.nodes_of(Role::Wan) {
        config(t, node, &[])?;
    }
    Ok(())
}

/// Write `node`'s configuration ([`config`]) where its process reads it.
pub(crate) fn write_config(shared: &Shared, node: &Node) -> Result<PathBuf, ControlError> {
    let mut config = config(&shared.topology(), node, &shared.cluster.snapshot().wan_cut)?;
    config.admin_token = Some(shared.secrets.admin.clone());
    let path = config_path(&shared.opts.run_dir, &node.name);
    write_private(&path, &config.to_toml())?;
    Ok(path)
}

/// After the topology grew (`millions shard add`): every gateway's configuration
/// written again, and every running gateway given its links live (those it has
/// are left as they are, open connections included). A gateway that does not
/// answer is restarting and reads the new configuration.
pub(crate) async fn add_links(shared: &Shared) -> Result<(), ControlError> {
    let t = shared.topology();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ControlError::Invalid(format!("an HTTP client: {e}")))?;
    for gw in t.nodes_of(Role::Wan) {
        write_config(shared, gw)?;
        if !shared.running(&gw.name).await {
            continue;
        }
        let links = config(&t, gw, &shared.cluster.snapshot().wan_cut)?.links;
        let url = format!("http://{}/admin/links", gw.addr);
        match client.post(&url).bearer_auth(&shared.secrets.admin).json(&links).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(node = gw.name, links = links.len(), "WAN gateway relays the new nodes")
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                return Err(ControlError::Refused(format!(
                    "{} refused the new links: {status} {body}",
                    gw.name
                )));
            }
            Err(e) => {
                tracing::warn!(node = gw.name, error = %e, "a WAN gateway did not answer; it starts with them")
            }
        }
    }
    Ok(())
}

/// Cut `dc` off from every other DC (`cut`), or heal it: every byte between them
/// is held until the heal (see the `wan` crate). Refused, changing nothing, for
/// an unknown DC, a topology without `[wan]`, or a DC already in that state.
pub(crate) async fn set_cut(shared: &Shared, dc: &str, cut: bool) -> Result<WanChange, ControlError> {
    let started = Instant::now();
    let t = shared.topology().clone();
    if t.dc(dc).is_none() {
        let names: Vec<&str> = t.dcs().iter().map(|d| d.name.as_str()).collect();
        return Err(ControlError::UnknownNode(format!(
            "{dc} (no such data center; they are {})",
            names.join(", ")
        )));
    }
    if t.wan().is_none() || t.nodes_of(Role::Wan).next().is_none() {
        return Err(ControlError::Refused(
            "this topology has no WAN between data centers (no [wan], or one data center)".into(),
        ));
    }
    let is_cut = shared.cluster.snapshot().wan_cut.iter().any(|d| d == dc);
    if is_cut == cut {
        return Err(ControlError::Refused(format!(
            "{dc}'s links are {} already",
            if cut { "cut" } else { "up" }
        )));
    }
    shared.cluster.update(|s| {
        if cut {
            s.wan_cut.push(dc.to_owned());
        } else {
            s.wan_cut.retain(|d| d != dc);
        }
    })?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ControlError::Invalid(format!("an HTTP client: {e}")))?;
    let verb = if cut { "cut" } else { "heal" };
    let mut told = Vec::new();
    for gw in t.nodes_of(Role::Wan) {
        if !shared.running(&gw.name).await {
            continue;
        }
        // dc's own gateway: every peer; the others: their links to dc.
        let query = if gw.dc == dc { String::new() } else { format!("?peer={dc}") };
        let url = format!("http://{}/admin/{verb}{query}", gw.addr);
        match client.post(&url).bearer_auth(&shared.secrets.admin).send().await {
            Ok(r) if r.status().is_success() => told.push(gw.name.clone()),
            Ok(r) => {
                return Err(ControlError::Refused(format!("{} refused to {verb}: {}", gw.name, r.status())));
            }
            // Not answering: it is restarting, and starts with the state kept.
            Err(e) => {
                tracing::warn!(node = gw.name, error = %e, "a WAN gateway did not answer; it starts {verb}")
            }
        }
    }
    let state = if cut { "cut" } else { "healed" };
    let detail = if cut {
        format!("{dc} cut off from the other data centers (bytes held until the heal)")
    } else {
        format!("{dc}'s links to the other data centers healed")
    };
    shared.cluster.record(Event::dc(if cut { "wan-cut" } else { "wan-heal" }, dc, detail));
    Ok(WanChange { dc: dc.to_owned(), state, gateways: told, took_ms: started.elapsed().as_millis() as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_gateway_relays_to_every_other_dcs_data_nodes_and_starts_cut_if_kept_cut() {
        let t = topology::preset("default").unwrap();
        let gw = t.wan_gateway("dc1").unwrap();
        let c = config(&t, gw, &[]).unwrap();
        assert_eq!(c.dc, "dc1");
        assert_eq!(c.conditions.keys().collect::<Vec<_>>(), ["dc2"]);
        let targets: Vec<&str> = c
            .links
            .iter()
            .map(|l| t.nodes().iter().find(|n| n.addr == l.target).unwrap().name.as_str())
            .collect();
        assert!(targets.contains(&"dc2-redis-1") && targets.contains(&"shard0-pg-3"), "{targets:?}");
        assert!(c.links.iter().all(|l| l.source.ip() == gw.addr.ip() && l.peer_dc == "dc2"));
        assert!(!c.conditions["dc2"].cut);
        // dc2 cut: dc1's links to it start cut, and dc2's own gateway cuts all.
        assert!(config(&t, gw, &["dc2".into()]).unwrap().conditions["dc2"].cut);
        let gw2 = t.wan_gateway("dc2").unwrap();
        assert!(config(&t, gw2, &["dc2".into()]).unwrap().conditions["dc1"].cut);
        check_configs(&t).unwrap();
        // One DC, no gateway.
        assert!(topology::preset("single").unwrap().nodes_of(Role::Wan).next().is_none());
    }
}
