//! `millions wan`: a data center's WAN gateway, a simulated WAN between DCs in
//! user space.
//!
//! The DCs of a local stack share one machine, each on its own loopback range
//! (dc1 `127.0.1.0/24`, dc2 `127.0.2.0/24`). Everything one DC sends to another —
//! PostgreSQL streaming replication and base backups, peer Redis commands — goes
//! through its gateway: a delaying TCP relay per cross-DC link, as Toxiproxy does
//! for tests (this machine's kernel has no `netem`). A client in dc1 connects to
//! a link's `listen` address in dc1's range; the gateway connects to the `target`
//! in dc2 from the link's `source` address in dc1's range, so the target sees the
//! connection come from dc1, and relays bytes both ways through the peer DC's
//! conditions, which the admin API ([`admin`]) or a [`Handle`] change at runtime.
//!
//! # The model
//!
//! - **One-way delay**: every byte, each direction, is delivered `delay_ms` after
//!   the gateway read it; a round trip grows by twice that. A new connection to the
//!   target is made one delay after the client connected (the SYN's trip).
//! - **Jitter**: each chunk's delay varies uniformly by ± `jitter_ms`, but a chunk
//!   is never due before the one ahead of it: bytes keep their order
//!   (`schedule`).
//! - **Loss as retransmission delay**: both ends speak TCP, so a lost segment is
//!   resent, not missing. A chunk is "lost" with probability `loss` and then
//!   waits `loss_penalty_ms` more, and everything behind it in its direction waits
//!   with it (head-of-line blocking). No byte is dropped or reordered.
//! - **Cut**: no byte moves either way on open connections; what they send is held
//!   (up to the window), not dropped, and released in order at the heal. A close
//!   or reset by an endpoint during a cut reaches the other end after the heal.
//!   New connections are accepted by the kernel but reach their target only after
//!   the heal (a client sees a connect that "succeeded" and then silence, or gives
//!   up, which the gateway notices: it then never connects for it).
//! - **Backpressure window**: each direction of each connection holds at most
//!   `window_bytes` read but not delivered (`delay_line`); beyond, the gateway
//!   stops reading that side, so the sender's socket buffers fill and it blocks,
//!   as behind a real link's full buffers. A cut or a long delay thus throttles
//!   the sender instead of growing the gateway's memory.
//! - With no delay, no jitter and no loss, a chunk goes straight through (no timer).
//!
//! A change of conditions applies at once to new and open connections: chunks
//! read afterwards get the new delay (a chunk already scheduled keeps its due
//! time), and a cut or heal takes effect on the next chunk written.
//!
//! # Limits (what a real WAN does that this does not)
//!
//! - No bandwidth cap: a link is as fast as loopback; a transfer's duration does
//!   not grow with its size as over a thin pipe, and there is no queueing delay
//!   under load beyond the window.
//! - No packet-level behaviour: loss is a delay per chunk (a `read` of up to 64 KiB),
//!   not per segment; no congestion window shrinking after a loss, no slow start,
//!   no duplicate or corrupted packets, no reordering, no MTU.
//! - The client's own connect always succeeds at once (the kernel accepts it):
//!   during a cut a client sees a hanging connection, not a connect timeout, and
//!   never a refusal; a target that refuses makes the gateway close the client's
//!   connection (end of stream, not `ECONNREFUSED`).
//! - A cut does not break connections by itself: nothing times out unless an
//!   endpoint's own keepalives or timeouts do (no `reset_on_cut`).
//! - Only TCP through configured links: traffic that bypasses a link (a process
//!   given the peer's real address) is not delayed at all.
//!
//! # Use
//!
//! [`start`] validates the configuration, binds every link's listener and the
//! admin listener (port 0 allowed; [`Running::links`] says which ports), and
//! spawns the relay on the current Tokio runtime. [`Running::handle`] controls it
//! in process; [`Running::stop`] stops accepting and closes open connections
//! within `stop_grace_ms`.
//!
//! Links can be added while it runs, without a restart that would break every
//! open connection (replication streams among them): [`Handle::add_links`], or
//! `POST /admin/links` ([`admin`]), takes links in the configuration's shape,
//! checks them by the configuration's rules, leaves alone those served already as
//! asked (a caller may send its whole list every time), binds every new listener
//! and only then serves them, all or nothing. A new link follows its peer DC's
//! conditions in force — a cut holds it too — and stops with the gateway. The peer
//! DCs are fixed at start: a link to a DC without `[conditions]` is refused, and
//! no link is removed or changed in place.
#![forbid(unsafe_code)]

mod accept;
pub mod admin;
pub mod conditions;
pub mod config;
mod delay_line;
mod gateway;
mod handle;
mod link;
mod metrics;
mod peer;
mod relay;
mod schedule;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use settings::Validate;
use tokio_util::task::TaskTracker;

pub use conditions::{Conditions, ConditionsUpdate, InvalidCondition};
pub use config::{LinkConfig, WanConfig};
pub use handle::{ControlError, Handle, LinkView, LinksAdded};

use gateway::{BoundListener, Gateway};
use relay::Shutdown;

/// Why a gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WanError {
    /// The configuration is invalid (nothing was bound).
    #[error(transparent)]
    Config(#[from] settings::SettingsError),
    /// A listener's address cannot be bound (nothing is left bound).
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// `admin`, or the link (`link 0`).
        what: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// [`start`] was called outside a Tokio runtime.
    #[error("the WAN gateway must be started inside a Tokio runtime")]
    NoRuntime,
}

/// One link's addresses as bound; what [`Running::links`] and `POST /admin/links`
/// answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundLink {
    /// Where this DC's clients connect (port 0 resolved).
    pub listen: SocketAddr,
    /// The node the link relays to.
    pub target: SocketAddr,
    /// The DC the target is in.
    pub peer_dc: String,
}

/// A running gateway. Dropping it closes everything at once; [`Running::stop`]
/// closes gracefully.
#[derive(Debug)]
pub struct Running {
    /// The admin listener's bound address.
    admin: SocketAddr,
    /// In-process control; also how [`Running::links`] sees the links added at
    /// runtime and how the stop reaches them.
    handle: Handle,
    /// Stop and abort signals for the acceptors, the connections and the admin
    /// server (the gateway's own, which links added at runtime follow too).
    shutdown: Shutdown,
    /// Every task: acceptors, connections, the admin server, those of links added
    /// at runtime included.
    tasks: TaskTracker,
    /// How long connections get to deliver what they hold on stop.
    stop_grace: Duration,
}

/// Start a gateway on the current Tokio runtime: validates `config`, then binds
/// every listener before returning (a connection made once this returned is
/// relayed). Its metrics are registered in `registry`.
pub fn start(config: WanConfig, registry: &telemetry::Registry) -> Result<Running, WanError> {
    config.validate()?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| WanError::NoRuntime)?;
    let _entered = runtime.enter();
    let bind_error = |what: String, addr| move |source| WanError::Bind { what, addr, source };
    let admin_listener =
        gateway::listen(config.admin).map_err(bind_error("admin".to_owned(), config.admin))?;
    let mut link_listeners = Vec::with_capacity(config.links.len());
    for (i, link) in config.links.iter().enumerate() {
        link_listeners.push(BoundListener::bind(link).map_err(bind_error(format!("link {i}"), link.listen))?);
    }
    let admin = admin_listener.local_addr().map_err(bind_error("admin".to_owned(), config.admin))?;

    let metrics = metrics::WanMetrics::new(registry);
    let shutdown = Shutdown::default();
    let tasks = TaskTracker::new();
    let gateway = Arc::new(Gateway::new(&config, admin, metrics, runtime, tasks.clone(), shutdown.clone()));
    let bound = gateway.serve(link_listeners);
    let handle = Handle::new(gateway);

    let token = config.admin_token.clone();
    let state = admin::AdminState {
        handle: handle.clone(),
        registry: registry.clone(),
        stopping: shutdown.stop.clone(),
    };
    let (stop, abort) = (shutdown.stop.clone(), shutdown.abort.clone());
    tasks.spawn(async move {
        let serve = axum::serve(admin_listener, admin::router(state, token.as_deref()))
            .with_graceful_shutdown(stop.cancelled_owned());
        tokio::select! {
            served = serve => if let Err(e) = served {
                tracing::error!(error = %e, "admin server failed");
            },
            _ = abort.cancelled() => {}
        }
    });

    tracing::info!(dc = %config.dc, %admin, links = bound.len(), "WAN gateway listening");
    Ok(Running { admin, handle, shutdown, tasks, stop_grace: config.stop_grace() })
}

impl Running {
    /// Every link's bound addresses now: the configured ones in the
    /// configuration's order, then those added at runtime ([`Handle::add_links`],
    /// `POST /admin/links`) in the order they were added.
    pub fn links(&self) -> Vec<BoundLink> {
        self.handle.bound_links()
    }

    /// The admin listener's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Control the gateway in process.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stop: the listeners close at once, those of links added at runtime too
    /// (an add racing the stop is refused, [`ControlError::Stopping`]); open
    /// connections stop reading and get `stop_grace_ms` to deliver what they hold
    /// (each side then sees its stream end), then whatever is left is closed.
    /// Returns once every task has ended.
    pub async fn stop(self) {
        self.handle.stop();
        self.tasks.close();
        if tokio::time::timeout(self.stop_grace, self.tasks.wait()).await.is_err() {
            tracing::info!("closing the connections still open after the stop grace");
            self.shutdown.abort.cancel();
            self.tasks.wait().await;
        }
        tracing::info!(dc = %self.handle.dc(), "WAN gateway stopped");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.stop.cancel();
        self.shutdown.abort.cancel();
    }
}
