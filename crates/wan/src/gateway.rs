//! What a running gateway is made of, shared by [`crate::Running`] and every
//! [`crate::Handle`]: the peer DCs, the links served — those of the configuration
//! and those added at runtime — and what serving a new link takes (the metrics,
//! the task tracker, the stop signals).
//!
//! Adding links ([`Gateway::add_links`]) is all or nothing: every link asked for
//! is checked by the configuration's own rules ([`crate::config`]), then every new
//! listener is bound, and only then is any of them served; a failure drops the
//! listeners bound so far, so nothing of the request is left listening. A link
//! added joins its peer DC's conditions as they are (a cut in force holds it too)
//! and gets the same metrics as a configured one. Adds run under the lock of the
//! links served, so two adds, or an add and the stop, never interleave.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::task::TaskTracker;

use crate::BoundLink;
use crate::accept;
use crate::config::{LinkConfig, WanConfig, check_links, link_name};
use crate::handle::{ControlError, LinksAdded};
use crate::link::Link;
use crate::metrics::WanMetrics;
use crate::peer::Peer;
use crate::relay::Shutdown;

/// Connections a listener's kernel queue holds before the gateway accepts them.
const BACKLOG: u32 = 1024;

/// One gateway.
#[derive(Debug)]
pub(crate) struct Gateway {
    /// This gateway's DC: no link may go to it.
    pub(crate) dc: String,
    /// The admin listener's bound address: no link added may listen there.
    admin: SocketAddr,
    /// Every peer DC with conditions, by name. Fixed at start: a link added at
    /// runtime goes to one of them and shares its conditions.
    pub(crate) peers: BTreeMap<String, Arc<Peer>>,
    /// Every link served: the configured ones in the configuration's order, then
    /// those added, in the order they were added. Its lock is held through a whole
    /// add and by the stop's signal, which is what makes adds all or nothing and
    /// keeps an add from starting a link after the stop.
    links: Mutex<Vec<Arc<Link>>>,
    /// Bytes each direction of each connection of a new link may hold.
    window: usize,
    /// How long a new link's connections to its target may take.
    connect_timeout: Duration,
    /// Where a new link's statistics are created, under the same names and labels
    /// as a configured link's.
    metrics: WanMetrics,
    /// The runtime the gateway was started on: new listeners are registered with
    /// it and new acceptors spawned on it, whichever thread adds them.
    runtime: tokio::runtime::Handle,
    /// The gateway's tasks: a new link's acceptor and connections join them, so
    /// the stop waits for them within the same grace.
    tasks: TaskTracker,
    /// The gateway's stop and abort signals, which a new link's acceptor and
    /// connections follow like every other.
    shutdown: Shutdown,
}

/// A link's listener, bound and not yet served.
#[derive(Debug)]
pub(crate) struct BoundListener {
    /// The link asked for.
    config: LinkConfig,
    /// Its listener.
    listener: TcpListener,
    /// The address it is bound to (port 0 resolved).
    listen: SocketAddr,
}

impl BoundListener {
    /// Bind `config`'s listen address (on the current runtime).
    pub(crate) fn bind(config: &LinkConfig) -> io::Result<BoundListener> {
        let listener = listen(config.listen)?;
        let listen = listener.local_addr()?;
        Ok(BoundListener { config: config.clone(), listener, listen })
    }
}

/// A listener on `addr`, on the current runtime.
pub(crate) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

impl Gateway {
    /// A gateway of `config` serving no link yet, its admin listener bound to
    /// `admin`, its tasks spawned on `runtime`.
    pub(crate) fn new(
        config: &WanConfig,
        admin: SocketAddr,
        metrics: WanMetrics,
        runtime: tokio::runtime::Handle,
        tasks: TaskTracker,
        shutdown: Shutdown,
    ) -> Gateway {
        let peers = config
            .conditions
            .iter()
            .map(|(name, c)| (name.clone(), Arc::new(Peer::new(name, *c, metrics.peer(name)))))
            .collect();
        Gateway {
            dc: config.dc.clone(),
            admin,
            peers,
            links: Mutex::new(Vec::new()),
            window: config.window_bytes,
            connect_timeout: config.connect_timeout(),
            metrics,
            runtime,
            tasks,
            shutdown,
        }
    }

    /// Every link served, in order.
    pub(crate) fn links(&self) -> Vec<Arc<Link>> {
        self.served().clone()
    }

    /// Every link served as bound, in order.
    pub(crate) fn bound_links(&self) -> Vec<BoundLink> {
        self.served().iter().map(|l| bound_link(l)).collect()
    }

    /// Serve links already checked and bound (the configuration's, at start).
    pub(crate) fn serve(&self, bound: Vec<BoundListener>) -> Vec<BoundLink> {
        let _entered = self.runtime.enter();
        self.serve_locked(&mut self.served(), bound)
    }

    /// Add `asked` to the links served, all or nothing: checked by the
    /// configuration's rules, a link whose listen address is served already as
    /// asked (same target, source and peer DC) left alone, every other one bound
    /// before any is served. Returns every link served and those this call added.
    pub(crate) fn add_links(&self, asked: &[LinkConfig]) -> Result<LinksAdded, ControlError> {
        let _entered = self.runtime.enter();
        let mut served = self.served();
        if self.shutdown.stop.is_cancelled() {
            return Err(ControlError::Stopping);
        }
        check_links(&self.dc, self.admin, |peer| self.peers.contains_key(peer), asked)
            .map_err(ControlError::InvalidLink)?;
        let mut new = Vec::new();
        for (i, link) in asked.iter().enumerate() {
            // Port 0 asks for a free port: always a new link.
            let existing = served.iter().find(|l| link.listen.port() != 0 && l.listen == link.listen);
            match existing {
                None => new.push((i, link)),
                Some(l) if same_link(&l.config, link) => {}
                Some(l) => {
                    return Err(ControlError::Conflict {
                        link: link_name(i, link),
                        served: describe(&l.config),
                        asked: describe(link),
                    });
                }
            }
        }
        let mut bound = Vec::with_capacity(new.len());
        for (i, link) in new {
            // On an error, the listeners bound so far are dropped with `bound`.
            let listener = BoundListener::bind(link).map_err(|source| ControlError::Bind {
                link: link_name(i, link),
                addr: link.listen,
                source,
            })?;
            bound.push(listener);
        }
        let added = self.serve_locked(&mut served, bound);
        for l in &added {
            tracing::info!(listen = %l.listen, target = %l.target, peer_dc = %l.peer_dc, "WAN link added");
        }
        Ok(LinksAdded { links: served.iter().map(|l| bound_link(l)).collect(), added })
    }

    /// Tell every acceptor and connection to stop, under the links' lock: an add
    /// either finished before (its links stop with the others) or is refused.
    pub(crate) fn stop(&self) {
        let _served = self.served();
        self.shutdown.stop.cancel();
    }

    /// Start serving `bound` (the runtime entered, the links' lock held as `served`).
    fn serve_locked(&self, served: &mut Vec<Arc<Link>>, bound: Vec<BoundListener>) -> Vec<BoundLink> {
        let mut added = Vec::with_capacity(bound.len());
        for BoundListener { config, listener, listen } in bound {
            let link = Arc::new(Link {
                listen,
                peer: self.peers[&config.peer_dc].clone(),
                window: self.window,
                connect_timeout: self.connect_timeout,
                stats: self.metrics.link(listen, &config.peer_dc, config.target),
                config,
            });
            self.tasks.spawn(accept::run(listener, link.clone(), self.tasks.clone(), self.shutdown.clone()));
            added.push(bound_link(&link));
            served.push(link);
        }
        added
    }

    /// The links served, locked. A panic while it was held cannot leave the list
    /// half-changed (links are pushed whole), so a poisoned lock is used as is.
    fn served(&self) -> MutexGuard<'_, Vec<Arc<Link>>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `served` is the link `asked` asks for (its listen address aside).
fn same_link(served: &LinkConfig, asked: &LinkConfig) -> bool {
    served.target == asked.target && served.source == asked.source && served.peer_dc == asked.peer_dc
}

/// A link's way, for a conflict's message.
fn describe(link: &LinkConfig) -> String {
    format!("to {} from {} (peer DC {})", link.target, link.source, link.peer_dc)
}

/// A running link's bound addresses.
fn bound_link(link: &Link) -> BoundLink {
    BoundLink { listen: link.listen, target: link.config.target, peer_dc: link.config.peer_dc.clone() }
}
