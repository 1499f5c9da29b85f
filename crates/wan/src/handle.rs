//! In-process control of a running gateway: the conditions per peer DC, cut and
//! heal, what every link carries, and links added at runtime. The admin API is a
//! thin layer over it; tests and a process embedding the gateway use it directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::BoundLink;
use crate::conditions::{Conditions, ConditionsUpdate, InvalidCondition};
use crate::config::LinkConfig;
use crate::gateway::Gateway;
use crate::peer::Peer;

/// Controls a running gateway; cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The gateway.
    gateway: Arc<Gateway>,
}

/// A control request that cannot be carried out; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No conditions exist for this peer DC (so no link goes to it).
    #[error("unknown peer DC {0:?}")]
    UnknownPeer(String),
    /// The conditions asked for are out of range.
    #[error("invalid conditions for {peer}: {error}")]
    Invalid {
        /// The peer DC.
        peer: String,
        /// What is wrong.
        error: InvalidCondition,
    },
    /// A link asked for breaks the rules a configuration's links follow; the
    /// error names the setting and the link by its position in the request.
    #[error(transparent)]
    InvalidLink(settings::SettingsError),
    /// A link asks for a listen address the gateway serves already, but for
    /// another target, source or peer DC: a link is never changed in place.
    #[error("{link}: that address relays {served} already, not {asked}; a link is not changed in place")]
    Conflict {
        /// The link asked for, by position and listen address.
        link: String,
        /// Where the address relays to now.
        served: String,
        /// Where the request would have it relay to.
        asked: String,
    },
    /// A new link's listen address cannot be bound: taken by another process, or
    /// not one of this machine's.
    #[error("{link}: cannot listen there: {source}")]
    Bind {
        /// The link asked for, by position and listen address.
        link: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gateway is stopping or stopped: no link is added.
    #[error("the WAN gateway is stopping")]
    Stopping,
}

/// What an add of links did ([`Handle::add_links`], `POST /admin/links`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinksAdded {
    /// Every link served now, the configured ones first, then those added, in
    /// order: the request's links among them, so a caller sees the whole state.
    pub links: Vec<BoundLink>,
    /// The links this add started (port 0 resolved), in the request's order; empty
    /// when every link asked for was served already.
    pub added: Vec<BoundLink>,
}

/// One link as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkView {
    /// Where this DC's clients connect (bound address).
    pub listen: SocketAddr,
    /// The node relayed to.
    pub target: SocketAddr,
    /// The address outgoing connections leave from (port chosen per connection).
    pub source: SocketAddr,
    /// The DC the target is in.
    pub peer_dc: String,
    /// The conditions in force on the link.
    pub conditions: Conditions,
    /// Connections open now (including those waiting for a cut to heal).
    pub open_connections: u64,
    /// Connections accepted since start.
    pub accepted_connections: u64,
    /// Connections to the target that failed since start.
    pub connect_failures: u64,
    /// Bytes delivered to the target since start.
    pub bytes_to_target: u64,
    /// Bytes delivered back to the clients since start.
    pub bytes_to_client: u64,
    /// Bytes read from one side and not yet delivered to the other (delayed or
    /// held by a cut), both directions, every connection.
    pub held_bytes: u64,
}

impl Handle {
    pub(crate) fn new(gateway: Arc<Gateway>) -> Handle {
        Handle { gateway }
    }

    /// This gateway's DC.
    pub fn dc(&self) -> &str {
        &self.gateway.dc
    }

    /// The conditions in force, per peer DC.
    pub fn conditions(&self) -> BTreeMap<String, Conditions> {
        self.gateway.peers.iter().map(|(name, p)| (name.clone(), p.conditions())).collect()
    }

    /// Change some of `peer`'s conditions; applies at once to new and open
    /// connections (a chunk already scheduled keeps its due time; a heal releases
    /// held data at once, in order). Returns the conditions now in force.
    pub fn set_conditions(&self, peer: &str, update: ConditionsUpdate) -> Result<Conditions, ControlError> {
        let p = self.peer(peer)?;
        let now =
            p.update(&update).map_err(|error| ControlError::Invalid { peer: peer.to_owned(), error })?;
        tracing::info!(peer_dc = peer, conditions = ?now, "WAN conditions changed");
        Ok(now)
    }

    /// Cut the links to `peer`, or to every peer DC if `None`; returns the
    /// conditions in force per peer DC.
    pub fn cut(&self, peer: Option<&str>) -> Result<BTreeMap<String, Conditions>, ControlError> {
        self.set_cut(peer, true)
    }

    /// Heal the links to `peer`, or to every peer DC if `None`.
    pub fn heal(&self, peer: Option<&str>) -> Result<BTreeMap<String, Conditions>, ControlError> {
        self.set_cut(peer, false)
    }

    /// Every link with its conditions and statistics: the configured ones in the
    /// configuration's order, then those added at runtime, in the order they were
    /// added.
    pub fn links(&self) -> Vec<LinkView> {
        self.gateway
            .links()
            .iter()
            .map(|l| LinkView {
                listen: l.listen,
                target: l.config.target,
                source: l.config.source,
                peer_dc: l.config.peer_dc.clone(),
                conditions: l.peer.conditions(),
                open_connections: l.stats.open.get().max(0) as u64,
                accepted_connections: l.stats.accepted.get(),
                connect_failures: l.stats.connect_failures.get(),
                bytes_to_target: l.stats.to_target.get(),
                bytes_to_client: l.stats.to_client.get(),
                held_bytes: l.stats.held.get().max(0) as u64,
            })
            .collect()
    }

    /// Every link served as bound (listen, target, peer DC), in the order of
    /// [`Handle::links`].
    pub fn bound_links(&self) -> Vec<BoundLink> {
        self.gateway.bound_links()
    }

    /// Serve `links` besides those served, without disturbing any open
    /// connection: each is checked by the rules of a configuration's links (its
    /// peer DC must be one the gateway has conditions for), a link whose listen
    /// address is served already with the same target, source and peer DC is left
    /// alone (so a caller may send its whole list every time; port 0 always binds a
    /// new port), and every new listener is bound before any is served. A new link
    /// follows its peer DC's conditions in force (a cut holds it until the heal)
    /// and stops with the gateway. All or nothing: on an error nothing of the
    /// request is served or left bound.
    pub fn add_links(&self, links: &[LinkConfig]) -> Result<LinksAdded, ControlError> {
        self.gateway.add_links(links)
    }

    /// Signal every acceptor and connection to stop ([`crate::Running::stop`]).
    pub(crate) fn stop(&self) {
        self.gateway.stop();
    }

    fn peer(&self, peer: &str) -> Result<&Arc<Peer>, ControlError> {
        self.gateway.peers.get(peer).ok_or_else(|| ControlError::UnknownPeer(peer.to_owned()))
    }

    fn set_cut(&self, peer: Option<&str>, cut: bool) -> Result<BTreeMap<String, Conditions>, ControlError> {
        let peers: Vec<&Arc<Peer>> = match peer {
            Some(name) => vec![self.peer(name)?],
            None => self.gateway.peers.values().collect(),
        };
        let update = ConditionsUpdate { cut: Some(cut), ..Default::default() };
        let mut now = BTreeMap::new();
        for p in peers {
            // The current conditions passed their checks, and `cut` has no range.
            let c =
                p.update(&update).map_err(|error| ControlError::Invalid { peer: p.name.clone(), error })?;
            tracing::info!(peer_dc = %p.name, cut, "WAN {}", if cut { "cut" } else { "healed" });
            now.insert(p.name.clone(), c);
        }
        Ok(now)
    }
}
