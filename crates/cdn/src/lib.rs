//! `millions cdn`: an edge cache in front of an origin, for photos and static
//! assets.
//!
//! A caching reverse proxy on Cloudflare's pingora-proxy and pingora-cache
//! (ADR 0019): [`proxy`] decides what is cacheable and for how long as RFC 9111
//! says for a shared cache, and keeps objects in [`store`], a byte-budgeted
//! memory tier on TinyUFO. Concurrent misses of one object make one origin fetch.
//! Pointed at any HTTP origin it is a general HTTP cache (in a topology, once
//! edges join one, the origin will be the data center's load balancer). [`admin`]
//! serves the probes, the metrics and the purge API on a listener of its own.
//!
//! [`start`] binds both listeners before it returns and serves the public one on
//! threads of its own ([`acceptor`]); [`Running::stop`] stops accepting, lets the
//! requests in flight finish (bounded by a grace period) and returns.
#![forbid(unsafe_code)]

pub mod accesslog;
pub mod admin;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use pingora_cache::lock::CacheLock;
use pingora_core::apps::ServerApp;
use pingora_core::server::configuration::ServerConf;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{CdnConfig, ConfigError};
pub use metrics::{Metrics, Outcome};

/// Why an edge cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CdnError {
    /// The serving threads could not be started.
    #[error("cannot start the serving threads: {0}")]
    Start(String),
    /// The listener's address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running edge.
pub struct Running {
    /// The address it accepts on (the configured one, with the port bound).
    addr: SocketAddr,
    /// The admin listener's address.
    admin: SocketAddr,
    /// What it counts.
    metrics: Metrics,
    /// Its memory tier (for its size).
    store: &'static store::EdgeStore,
    /// Stops the acceptor and the admin listener.
    stop: CancellationToken,
    /// Set before a stop: the serving threads let requests in flight finish.
    graceful: Arc<AtomicBool>,
    /// Tells connections in flight to finish (pingora's shutdown watch).
    drain: tokio::sync::watch::Sender<bool>,
    /// The serving threads.
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The admin listener's task.
    admin_task: tokio::task::JoinHandle<()>,
}

/// How long [`Running::stop`] waits for requests in flight.
pub const GRACE: Duration = acceptor::STOP_GRACE;

/// Serves one client connection: pingora's HTTP/1 session loop (keep-alive) until
/// it closes or the edge drains.
struct Connections(Arc<pingora_proxy::HttpProxy<proxy::Edge>>);

impl acceptor::Serve for Connections {
    async fn serve(&self, tcp: tokio::net::TcpStream, shutdown: &tokio::sync::watch::Receiver<bool>) {
        use pingora_core::protocols::GetSocketDigest as _;
        use std::os::fd::AsRawFd as _;
        let _ = tcp.set_nodelay(true);
        // The socket digest gives the session its client's address (the access log).
        let digest = pingora_core::protocols::SocketDigest::from_raw_fd(tcp.as_raw_fd());
        let mut l4 = pingora_core::protocols::l4::stream::Stream::from(tcp);
        l4.set_socket_digest(digest);
        let mut stream: pingora_core::protocols::Stream = Box::new(l4);
        while let Some(reused) = self.0.process_new(stream, shutdown).await {
            if *shutdown.borrow() {
                break;
            }
            stream = reused;
        }
    }
}

/// Bind `config.listen` and `config.admin`, and serve until stopped: the public
/// listener on `config.threads` serving threads of its own ([`acceptor`]: one
/// single-threaded runtime each, every connection on one of them from accept to
/// close), the admin listener on the caller's runtime.
pub async fn start(config: CdnConfig) -> Result<Running, CdnError> {
    let listen = config.listen;
    let listener = acceptor::bind(listen).map_err(|source| CdnError::Bind { addr: listen, source })?;
    let addr = listener.local_addr().map_err(|source| CdnError::Bind { addr: listen, source })?;
    let admin_listener = TcpListener::bind(config.admin)
        .await
        .map_err(|source| CdnError::Bind { addr: config.admin, source })?;
    let admin =
        admin_listener.local_addr().map_err(|source| CdnError::Bind { addr: config.admin, source })?;
    let registry = telemetry::Registry::default();
    let metrics = Metrics::new(&registry);
    // pingora-cache's storage and lock are `&'static`: one per edge, for the
    // process's life (an edge runs until its process ends).
    let store: &'static store::EdgeStore = Box::leak(Box::new(store::EdgeStore::new(
        config.memory_bytes as usize,
        config.typical_object_bytes as usize,
    )));
    let lock = Box::leak(CacheLock::new_boxed(config.coalesce_timeout()));
    let edge = proxy::Edge {
        origin: config.origin,
        store,
        lock,
        max_object_bytes: config.max_object_bytes as usize,
        connect_timeout: Duration::from_millis(config.origin_connect_timeout_ms),
        read_timeout: Duration::from_millis(config.origin_read_timeout_ms),
        max_heuristic: Duration::from_secs(config.max_heuristic_secs),
        metrics: metrics.clone(),
        origin_slots: Arc::new(tokio::sync::Semaphore::new(config.max_origin_fetches)),
        origin_queue: Duration::from_millis(config.origin_queue_ms),
        max_request_head: config.max_request_head_bytes,
    };
    let app = Arc::new(pingora_proxy::http_proxy(&Arc::new(ServerConf::default()), edge));
    let (drain, watch) = tokio::sync::watch::channel(false);
    let (stop, graceful) = (CancellationToken::new(), Arc::new(AtomicBool::new(false)));
    let shared = acceptor::Shared { stop: stop.clone(), graceful: graceful.clone(), shutdown: watch };
    let listeners = vec![(listener, Arc::new(Connections(app)))];
    let threads = acceptor::spawn("cdn", listeners, config.threads, shared, |_| {})
        .map_err(|e| CdnError::Start(e.to_string()))?;
    let state = admin::AdminState { store, metrics: metrics.clone(), registry, stop: stop.clone() };
    let router = admin::router(state, config.admin_token.as_deref());
    let admin_stop = stop.clone();
    let admin_task = tokio::spawn(async move {
        let serve = axum::serve(admin_listener, router).with_graceful_shutdown(admin_stop.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "the admin listener failed");
        }
    });
    tracing::info!(%addr, %admin, origin = %config.origin, memory_bytes = config.memory_bytes, "edge listening");
    Ok(Running { addr, admin, metrics, store, stop, graceful, drain, threads, admin_task })
}

impl Running {
    /// The address the edge accepts on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// What the edge counts.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Bytes and objects in the memory tier.
    pub fn stored(&self) -> (u64, u64) {
        (self.store.bytes(), self.store.objects())
    }

    /// Stop accepting, let requests in flight finish for up to [`GRACE`], then
    /// return once every serving thread has ended.
    pub async fn stop(self) {
        self.graceful.store(true, Ordering::Release);
        let _ = self.drain.send(true);
        self.stop.cancel();
        let _ = self.admin_task.await;
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        if joined.await.is_err() {
            tracing::warn!("a serving thread panicked");
        }
    }
}
