//! A WAN gateway's configuration: read from TOML, validated before any port is bound.
//!
//! ```toml
//! dc = "dc1"
//! admin = "127.0.1.250:7600"
//!
//! [conditions.dc2]          # every peer DC a link goes to needs its conditions
//! delay_ms = 40
//! jitter_ms = 5
//! loss = 0.001
//!
//! [[links]]                 # dc1's clients reach dc2's PostgreSQL here
//! listen = "127.0.1.250:15432"
//! target = "127.0.2.10:5432"
//! source = "127.0.1.250:0"
//! peer_dc = "dc2"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use settings::invalid;

use crate::conditions::Conditions;

/// A configuration that cannot run.
pub type ConfigError = settings::SettingsError;

/// The largest `window_bytes`: a link's buffers, not a disk.
pub const MAX_WINDOW_BYTES: usize = 1 << 30;

/// Everything a DC's WAN gateway needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanConfig {
    /// This gateway's DC (its name in the topology): every link goes from it to
    /// another DC, and it has no conditions of its own.
    pub dc: String,
    /// The admin listener (`/admin/...`, `/healthz`, `/readyz`, `/metrics`). Private:
    /// whoever reaches it can cut the DC off, so it is never a link's `listen`.
    pub admin: SocketAddr,
    /// Bytes one direction of one connection may hold (read from one side, not yet
    /// written to the other) before the relay stops reading that side: the link's
    /// buffers, so a cut or a long delay pushes back on the sender as a real
    /// link's full buffers would.
    #[serde(default = "default_window_bytes")]
    pub window_bytes: usize,
    /// Milliseconds a connection to a target may take once the link lets it through.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// On stop, milliseconds open connections get to deliver what they hold before
    /// they are closed (a cut link holds it until then).
    #[serde(default = "default_stop_grace_ms")]
    pub stop_grace_ms: u64,
    /// The conditions at start, per peer DC (`[conditions.dc2]`); the admin API
    /// changes them at runtime.
    #[serde(default)]
    pub conditions: BTreeMap<String, Conditions>,
    /// The relayed links: one per node of another DC that this DC's processes reach.
    #[serde(default)]
    pub links: Vec<LinkConfig>,
    /// The bearer token the `/admin` routes require (`Authorization: Bearer
    /// TOKEN`; at least 16 characters); the probes stay open. Absent: the admin
    /// routes are open to whoever reaches the admin address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
}

/// One relayed link: local clients connect to `listen`, and each connection is
/// relayed to `target` from `source` through the peer DC's conditions. The same
/// shape, with the same rules, is what `POST /admin/links` takes to add links to a
/// running gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// Where this DC's clients connect: an address in the gateway's own DC range.
    /// Port 0 binds a free port (`Running::links` says which).
    pub listen: SocketAddr,
    /// The node in the peer DC that connections are relayed to.
    pub target: SocketAddr,
    /// The address outgoing connections are bound to, in the gateway's own DC range
    /// with port 0: the target sees connections from this DC's range, so traffic
    /// between DCs can be told apart (and allowed or refused) at the target.
    pub source: SocketAddr,
    /// The DC `target` is in; its conditions apply to this link.
    pub peer_dc: String,
}

fn default_window_bytes() -> usize {
    4 << 20
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

fn default_stop_grace_ms() -> u64 {
    1_000
}

impl WanConfig {
    /// Read and validate a TOML file.
    pub fn load(path: &Path) -> Result<WanConfig, ConfigError> {
        settings::load(path)
    }

    /// Parse and validate TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<WanConfig, ConfigError> {
        settings::parse(text, origin)
    }

    /// The configuration as TOML (what `millions control` would write).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a WanConfig always serializes")
    }

    /// A gateway of DC `dc` with its admin listener on `admin`, no link, no peer
    /// DC's conditions, and every default.
    pub fn new(dc: &str, admin: SocketAddr) -> WanConfig {
        WanConfig {
            dc: dc.to_owned(),
            admin,
            window_bytes: default_window_bytes(),
            connect_timeout_ms: default_connect_timeout_ms(),
            stop_grace_ms: default_stop_grace_ms(),
            conditions: BTreeMap::new(),
            links: Vec::new(),
            admin_token: None,
        }
    }

    /// How long a connection to a target may take.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// How long open connections get to deliver what they hold on stop.
    pub fn stop_grace(&self) -> Duration {
        Duration::from_millis(self.stop_grace_ms)
    }
}

impl settings::Validate for WanConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.dc.trim().is_empty() {
            return Err(invalid("dc", "must name this gateway's DC"));
        }
        if self.window_bytes == 0 || self.window_bytes > MAX_WINDOW_BYTES {
            return Err(invalid("window_bytes", format!("must be between 1 and {MAX_WINDOW_BYTES}")));
        }
        if self.connect_timeout_ms == 0 || self.connect_timeout_ms > 600_000 {
            return Err(invalid("connect_timeout_ms", "must be between 1 and 600000"));
        }
        if self.stop_grace_ms > 60_000 {
            return Err(invalid("stop_grace_ms", "must be at most 60000"));
        }
        if let Some(token) = &self.admin_token {
            guard::check(token).map_err(|why| invalid("admin_token", why))?;
        }
        for (peer, conditions) in &self.conditions {
            if *peer == self.dc {
                return Err(invalid(
                    "conditions",
                    format!("[conditions.{peer}] is this gateway's own DC: the WAN is between DCs"),
                ));
            }
            conditions.check().map_err(|e| invalid(e.setting(), format!("peer DC {peer}: {}", e.message)))?;
        }
        check_links(&self.dc, self.admin, |peer| self.conditions.contains_key(peer), &self.links)?;
        Ok(())
    }
}

/// How a link is named in messages: its position among the links checked (the
/// configuration's `links`, or the links of one `POST /admin/links`) and its listen
/// address.
pub(crate) fn link_name(i: usize, link: &LinkConfig) -> String {
    format!("link {i} (listen {})", link.listen)
}

/// The rules of links, the same for a configuration's `links` and for links added
/// at runtime ([`crate::Handle::add_links`]): `dc` is the gateway's own DC,
/// `admin` its admin address, `has_peer` whether a peer DC has conditions (a link
/// to a DC without them has none to follow). Each error names the setting and the
/// link by its position in `links`.
pub(crate) fn check_links(
    dc: &str,
    admin: SocketAddr,
    has_peer: impl Fn(&str) -> bool,
    links: &[LinkConfig],
) -> Result<(), ConfigError> {
    for (i, link) in links.iter().enumerate() {
        check_link(dc, admin, &has_peer, &links[..i], i, link)?;
    }
    Ok(())
}

/// One link's rules; `before` are the links listed ahead of it, `i` its position.
fn check_link(
    dc: &str,
    admin: SocketAddr,
    has_peer: &impl Fn(&str) -> bool,
    before: &[LinkConfig],
    i: usize,
    link: &LinkConfig,
) -> Result<(), ConfigError> {
    let at = link_name(i, link);
    if link.peer_dc == dc {
        return Err(invalid(
            "links.peer_dc",
            format!("{at} goes to {}, this gateway's own DC", link.peer_dc),
        ));
    }
    if !has_peer(&link.peer_dc) {
        return Err(invalid(
            "links.peer_dc",
            format!("{at} goes to {} but there is no [conditions.{}]", link.peer_dc, link.peer_dc),
        ));
    }
    if link.listen.port() != 0 {
        if link.listen == admin {
            return Err(invalid("links.listen", format!("{at} is also the admin address")));
        }
        if before.iter().any(|other| other.listen == link.listen) {
            return Err(invalid("links.listen", format!("{at}: {} is listed twice", link.listen)));
        }
    }
    if link.target.port() == 0 || link.target.ip().is_unspecified() {
        return Err(invalid("links.target", format!("{at}: {} is not a node's address", link.target)));
    }
    if link.source.is_ipv4() != link.target.is_ipv4() {
        return Err(invalid(
            "links.source",
            format!("{at}: {} and the target {} are of different address families", link.source, link.target),
        ));
    }
    if link.source.ip().is_unspecified() {
        return Err(invalid(
            "links.source",
            format!("{at}: {} would leave from any address; give one of this DC's range", link.source),
        ));
    }
    if link.source.port() != 0 {
        return Err(invalid(
            "links.source",
            format!("{at}: {} must have port 0 (each connection binds a port of its own)", link.source),
        ));
    }
    Ok(())
}
