//! The DNS servers' configuration, from the topology: the zone and its name
//! servers, every DC's load balancers and CDN edges with their private health
//! checks, and the client regions. Checked by the DNS server's own rules before anything starts.

use std::path::PathBuf;

use topology::{Node, Role, Topology};

use crate::error::ControlError;
use crate::files::{config_path, write_private};
use crate::shared::Shared;

/// The CDN's name in the zone: `cdn.millions.test`.
pub const CDN_LABEL: &str = "cdn";

/// Every DC's nodes of `role` (load balancers, CDN edges) as DNS entries, each
/// probed at its admin listener's `/readyz`; DCs without one are left out.
fn sections(t: &Topology, role: Role) -> Vec<dns::config::DcSection> {
    t.dcs()
        .iter()
        .filter(|dc| t.count(&dc.name, role) > 0)
        .map(|dc| dns::config::DcSection {
            name: dc.name.clone(),
            entries: t
                .nodes_in(&dc.name)
                .filter(|n| n.role == role)
                .map(|n| dns::config::Entry {
                    address: n.addr.ip(),
                    health_url: format!(
                        "http://{}/readyz",
                        n.admin_addr().expect("load balancers and CDN edges have an admin address")
                    ),
                })
                .collect(),
        })
        .collect()
}

/// `node`'s configuration (a DNS server of `t`).
pub fn config(t: &Topology, node: &Node) -> Result<dns::DnsConfig, ControlError> {
    let admin = node
        .admin_addr()
        .ok_or_else(|| ControlError::Invalid(format!("{} has no admin address", node.name)))?;
    let settings = t.dns();
    let dcs = sections(t, Role::LoadBalancer);
    let regions = t
        .regions()
        .iter()
        .map(|r| dns::config::RegionSection {
            name: r.name.clone(),
            ranges: r.cidrs.iter().map(ToString::to_string).collect(),
            order: r.prefer.clone(),
        })
        .collect();
    let text = format!(
        "zone = {zone:?}\nlisten = \"{listen}\"\nadmin = \"{admin}\"\napp = {app:?}\nttl_secs = {ttl}\nnameservers = {ns:?}\n",
        zone = settings.zone,
        listen = node.addr,
        app = settings.app,
        ttl = settings.ttl_secs,
        ns = t.name_servers().map(|(_, n)| n.addr.ip().to_string()).collect::<Vec<_>>(),
    );
    let mut config: dns::DnsConfig = toml::from_str(&text)
        .map_err(|e| ControlError::Invalid(format!("{}'s DNS configuration: {e}", node.name)))?;
    config.dcs = dcs;
    config.regions = regions;
    // `cdn.` in the zone: the nearest healthy DC's edges, else the load
    // balancers (which serve the same `/media/` on the same HTTPS port).
    config.cdn_dcs = sections(t, Role::Cdn);
    config.cdn = (!config.cdn_dcs.is_empty()).then(|| CDN_LABEL.to_owned());
    settings::Validate::validate(&config)
        .map_err(|e| ControlError::Invalid(format!("{}'s DNS configuration: {e}", node.name)))?;
    Ok(config)
}

/// Every DNS server's configuration of `t`, checked: what `millions up` does
/// before it starts anything.
pub fn check_configs(t: &Topology) -> Result<(), ControlError> {
    for node in t.nodes_of(Role::Dns) {
        config(t, node)?;
    }
    Ok(())
}

/// Write `node`'s configuration ([`config`]) where its process reads it.
pub(crate) fn write_config(shared: &Shared, node: &Node) -> Result<PathBuf, ControlError> {
    let mut config = config(&shared.topology(), node)?;
    config.admin_token = Some(shared.secrets.admin.clone());
    let path = config_path(&shared.opts.run_dir, &node.name);
    write_private(&path, &config.to_toml())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cdn_name_answers_each_dc_s_edges_with_their_admin_probes() {
        let t = topology::preset("default").unwrap();
        let c = config(&t, t.node("dc2-dns-1").unwrap()).unwrap();
        assert_eq!(c.cdn.as_deref(), Some(CDN_LABEL));
        let edges: Vec<(String, String, String)> = c
            .cdn_dcs
            .iter()
            .flat_map(|dc| {
                dc.entries.iter().map(|e| (dc.name.clone(), e.address.to_string(), e.health_url.clone()))
            })
            .collect();
        assert_eq!(
            edges,
            [
                ("dc1".into(), "127.0.1.50".into(), "http://127.0.1.50:8001/readyz".into()),
                ("dc2".into(), "127.0.2.50".into(), "http://127.0.2.50:8001/readyz".into()),
            ]
        );
        let text = topology::preset_text("single").unwrap().replace("cdn = { count = 1 }", "");
        let without = topology::parse(&text, "single").unwrap();
        let c = config(&without, without.node("dc1-dns-1").unwrap()).unwrap();
        assert_eq!((c.cdn, c.cdn_dcs.len()), (None, 0), "no edges: no CDN name");
    }
}
