//! A link as it runs: where it listens, where it relays to and from, the peer DC
//! whose conditions apply, and its statistics. Shared by its acceptor and every
//! connection relayed through it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::LinkConfig;
use crate::delay_line::LineConfig;
use crate::metrics::LinkStats;
use crate::peer::Peer;

/// One running link.
#[derive(Debug)]
pub(crate) struct Link {
    /// The bound listen address (the configured one, with port 0 resolved).
    pub(crate) listen: SocketAddr,
    /// The link as configured: target, source, peer DC.
    pub(crate) config: LinkConfig,
    /// The peer DC whose conditions apply.
    pub(crate) peer: Arc<Peer>,
    /// Bytes each direction of each connection may hold.
    pub(crate) window: usize,
    /// How long a connection to the target may take.
    pub(crate) connect_timeout: Duration,
    /// Bytes, connections, held bytes.
    pub(crate) stats: LinkStats,
}

/// Which way bytes go through a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From this DC's client to the target in the peer DC.
    ToTarget,
    /// From the target back to the client.
    ToClient,
}

impl Link {
    /// The settings of a new delay line in `direction`.
    pub(crate) fn line(&self, direction: Direction) -> LineConfig {
        LineConfig {
            window: self.window,
            conditions: self.peer.watch(),
            held: self.stats.held.clone(),
            delivered: match direction {
                Direction::ToTarget => self.stats.to_target.clone(),
                Direction::ToClient => self.stats.to_client.clone(),
            },
        }
    }
}
