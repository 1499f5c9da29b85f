//! In-process control of a running gateway: the conditions per peer DC, cut and
//! heal, and what every link carries. The admin API is a thin layer over it;
//! tests and a process embedding the gateway use it directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::conditions::{Conditions, ConditionsUpdate, InvalidCondition};
use crate::link::Link;
use crate::peer::Peer;

/// What a gateway is made of, shared by its handles.
#[derive(Debug)]
pub(crate) struct Gateway {
    /// This gateway's DC.
    pub(crate) dc: String,
    /// Every peer DC with conditions, by name.
    pub(crate) peers: BTreeMap<String, Arc<Peer>>,
    /// Every link, in the configuration's order.
    pub(crate) links: Vec<Arc<Link>>,
}

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

    /// Every link with its conditions and statistics, in the configuration's order.
    pub fn links(&self) -> Vec<LinkView> {
        self.gateway
            .links
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
