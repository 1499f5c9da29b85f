//! `millions cdn`: an edge cache in front of one or several origins, for photos
//! and static assets.
//!
//! A caching reverse proxy on Cloudflare's pingora-proxy and pingora-cache
//! (ADR 0019): [`proxy`] decides what is cacheable and for how long as RFC 9111
//! says for a shared cache, and keeps objects in [`store`], a byte-budgeted
//! memory tier on TinyUFO. Concurrent misses of one object make one origin fetch.
//! Pointed at any HTTP origin it is a general HTTP cache; `origin` may list
//! several (e.g. a DC's web servers): each fetch takes the next in turn, and one
//! that cannot be connected to is passed over for the next, each tried at most
//! once per fetch. [`admin`] serves the probes, the metrics, the purge API and
//! the certificate reload on a listener of its own.
//!
//! With a `[tls]` section ([`config::TlsSection`]) the edge also serves HTTPS on
//! a second public listener, so pages opened over HTTPS can load its images
//! (an `http:` image on an `https:` page is blocked as mixed content): the
//! certificate and key are read and checked before any port is bound (the
//! workspace's `tls` crate, as the load balancer's), each connection's handshake
//! is bounded by [`TLS_HANDSHAKE_TIMEOUT`], ALPN chooses HTTP/2 or HTTP/1.1, and
//! the connection then goes through the same pingora session loop as a plain
//! one. The plain listener keeps serving HTTP; hops to the origins are plain
//! HTTP on private addresses.
//!
//! With a `[disk]` section ([`config::DiskSection`]) a disk tier ([`disk`]) sits
//! under the memory tier: completed objects are written to files in its
//! directory, a memory miss looks there, and a restarted edge serves what its
//! files hold; the directory is checked and scanned before any port is bound.
//!
//! [`start`] binds every listener before it returns and serves the public ones
//! on threads of its own ([`acceptor`]); [`Running::stop`] stops accepting, lets
//! the requests in flight finish (bounded by a grace period) and returns.
#![forbid(unsafe_code)]

pub mod accesslog;
pub mod admin;
pub mod config;
pub mod disk;
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

pub use config::{CdnConfig, ConfigError, DiskSection, Origins, TlsSection};
pub use disk::DiskError;
pub use metrics::{Metrics, Outcome};
pub use tls::{CertificateInfo, Certificates, TlsError};

/// Why an edge cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CdnError {
    /// The configuration cannot run (nothing was bound).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The serving threads could not be started.
    #[error("cannot start the serving threads: {0}")]
    Start(String),
    /// The TLS certificate or key cannot be used (nothing was bound).
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The disk tier's directory cannot be used (nothing was bound).
    #[error("{0}")]
    Disk(#[from] DiskError),
    /// A listener's address cannot be bound.
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
    /// The HTTPS listener's address, when configured.
    tls: Option<SocketAddr>,
    /// The certificate in force, when HTTPS is configured.
    certificates: Option<Arc<Certificates>>,
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
    /// The proxy (told at a stop to close the connections waiting for a request).
    app: Arc<pingora_proxy::HttpProxy<proxy::Edge>>,
    /// The serving threads.
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The admin listener's task.
    admin_task: tokio::task::JoinHandle<()>,
    /// Cancelled when a stop begins: `/readyz` answers 503 while the edge still
    /// serves for `stop_delay`, so whoever names it (the web servers' pages)
    /// stops doing so before it closes.
    draining: CancellationToken,
    /// How long a stop keeps serving after `/readyz` turned 503.
    stop_delay: Duration,
}

/// How long [`Running::stop`] waits for requests in flight.
pub const GRACE: Duration = acceptor::STOP_GRACE;

/// How long a client has to complete its TLS handshake on the HTTPS listener
/// before its connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one client connection: pingora's session loop (HTTP/1 keep-alive, or
/// HTTP/2 when ALPN chose it) until it closes or the edge drains; on the HTTPS
/// listener, after the TLS handshake.
struct Connections {
    /// The proxy every request goes through.
    app: Arc<pingora_proxy::HttpProxy<proxy::Edge>>,
    /// On the HTTPS listener: the TLS handshake.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// What the edge counts (failed handshakes).
    metrics: Metrics,
}

impl acceptor::Serve for Connections {
    async fn serve(&self, tcp: tokio::net::TcpStream, shutdown: &tokio::sync::watch::Receiver<bool>) {
        use pingora_core::protocols::GetSocketDigest as _;
        use std::os::fd::AsRawFd as _;
        let _ = tcp.set_nodelay(true);
        let mut stream: pingora_core::protocols::Stream = match &self.tls {
            Some(acceptor) => match tls::handshake(acceptor, tcp, TLS_HANDSHAKE_TIMEOUT).await {
                // Its socket digest gives the session the client's address.
                Ok(tls) => Box::new(tls::TlsClient::new(tls)),
                Err(e) => {
                    self.metrics.tls_handshake_failed(e.reason());
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
            },
            None => {
                // The socket digest gives the session its client's address (the access log).
                let digest = pingora_core::protocols::SocketDigest::from_raw_fd(tcp.as_raw_fd());
                let mut l4 = pingora_core::protocols::l4::stream::Stream::from(tcp);
                l4.set_socket_digest(digest);
                Box::new(l4)
            }
        };
        while let Some(reused) = self.app.process_new(stream, shutdown).await {
            if *shutdown.borrow() {
                break;
            }
            stream = reused;
        }
    }
}

/// Bind `config.listen`, `config.admin` and, with `[tls]`, `tls.listen`, and
/// serve until stopped: the public listeners on `config.threads` serving threads
/// of their own ([`acceptor`]: one single-threaded runtime each, every
/// connection on one of them from accept to close), the admin listener on the
/// caller's runtime. The configuration is validated, and the certificate and
/// key read and checked, first: a bad one binds nothing.
pub async fn start(config: CdnConfig) -> Result<Running, CdnError> {
    settings::Validate::validate(&config)?;
    let tls_setup = match &config.tls {
        Some(t) => {
            let certificates = Arc::new(Certificates::load(&t.cert, &t.key)?);
            let server = tls::server_config(certificates.clone(), &tls::ALPN_H2_HTTP1)
                .map_err(|e| CdnError::Start(e.to_string()))?;
            Some((certificates, tokio_rustls::TlsAcceptor::from(server), t.listen))
        }
        None => None,
    };
    let registry = telemetry::Registry::default();
    let metrics = Metrics::new(&registry);
    let disk = match &config.disk {
        Some(section) => Some(disk::Disk::open(section, metrics.clone()).await?),
        None => None,
    };
    let listen = config.listen;
    let listener = acceptor::bind(listen).map_err(|source| CdnError::Bind { addr: listen, source })?;
    let addr = listener.local_addr().map_err(|source| CdnError::Bind { addr: listen, source })?;
    let admin_listener = TcpListener::bind(config.admin)
        .await
        .map_err(|source| CdnError::Bind { addr: config.admin, source })?;
    let admin =
        admin_listener.local_addr().map_err(|source| CdnError::Bind { addr: config.admin, source })?;
    let tls_listener = match &tls_setup {
        Some((_, _, at)) => {
            let l = acceptor::bind(*at).map_err(|source| CdnError::Bind { addr: *at, source })?;
            let bound = l.local_addr().map_err(|source| CdnError::Bind { addr: *at, source })?;
            Some((l, bound))
        }
        None => None,
    };
    // pingora-cache's storage and lock are `&'static`: one per edge, for the
    // process's life (an edge runs until its process ends).
    let mut memory =
        store::EdgeStore::new(config.memory_bytes as usize, config.typical_object_bytes as usize);
    if let Some(disk) = disk {
        memory = memory.with_disk(disk);
    }
    let store: &'static store::EdgeStore = Box::leak(Box::new(memory));
    let lock = Box::leak(CacheLock::new_boxed(config.coalesce_timeout()));
    let edge = proxy::Edge {
        origins: proxy::OriginTurns::new(config.origin.addrs().to_vec()),
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
        paths: config.paths.clone(),
        host_in_key: config.host_in_key,
    };
    let app = Arc::new(pingora_proxy::http_proxy(&Arc::new(ServerConf::default()), edge));
    let (drain, watch) = tokio::sync::watch::channel(false);
    let (stop, graceful) = (CancellationToken::new(), Arc::new(AtomicBool::new(false)));
    let shared = acceptor::Shared { stop: stop.clone(), graceful: graceful.clone(), shutdown: watch };
    let mut listeners =
        vec![(listener, Arc::new(Connections { app: app.clone(), tls: None, metrics: metrics.clone() }))];
    let (mut tls_addr, mut certificates) = (None, None);
    if let (Some((l, bound)), Some((certs, acceptor, _))) = (tls_listener, tls_setup) {
        let tls = Some(acceptor);
        listeners.push((l, Arc::new(Connections { app: app.clone(), tls, metrics: metrics.clone() })));
        (tls_addr, certificates) = (Some(bound), Some(certs));
    }
    let threads = acceptor::spawn("cdn", listeners, config.threads, shared, |_| {})
        .map_err(|e| CdnError::Start(e.to_string()))?;
    let draining = CancellationToken::new();
    let state = admin::AdminState {
        store,
        metrics: metrics.clone(),
        registry,
        stop: stop.clone(),
        draining: draining.clone(),
        certificates: certificates.clone(),
    };
    let router = admin::router(state, config.admin_token.as_deref());
    let admin_stop = stop.clone();
    let admin_task = tokio::spawn(async move {
        let serve = axum::serve(admin_listener, router).with_graceful_shutdown(admin_stop.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "the admin listener failed");
        }
    });
    tracing::info!(%addr, %admin, tls = ?tls_addr, origin = %config.origin, memory_bytes = config.memory_bytes, "edge listening");
    Ok(Running {
        addr,
        admin,
        tls: tls_addr,
        certificates,
        metrics,
        store,
        stop,
        graceful,
        drain,
        app,
        threads,
        admin_task,
        draining,
        stop_delay: Duration::from_millis(config.stop_delay_ms),
    })
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

    /// The HTTPS listener's address, when `[tls]` is configured.
    pub fn tls(&self) -> Option<SocketAddr> {
        self.tls
    }

    /// The certificate in force, when `[tls]` is configured (e.g. for a reload
    /// on SIGHUP).
    pub fn certificates(&self) -> Option<&Arc<Certificates>> {
        self.certificates.as_ref()
    }

    /// Read the certificate and key files again: new handshakes use them if they
    /// are good; otherwise the certificate in force stays and the error says
    /// why. `None` without `[tls]`.
    pub fn reload_tls(&self) -> Option<Result<CertificateInfo, TlsError>> {
        self.certificates.as_ref().map(|c| c.reload())
    }

    /// What the edge counts.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Bytes and objects in the memory tier.
    pub fn stored(&self) -> (u64, u64) {
        (self.store.bytes(), self.store.objects())
    }

    /// Bytes and objects in the disk tier, when `[disk]` is configured.
    pub fn disk_stored(&self) -> Option<(u64, u64)> {
        self.store.disk().map(|d| (d.bytes(), d.objects()))
    }

    /// Stop accepting, close the connections waiting for a next request, let
    /// requests in flight finish for up to [`GRACE`], then return once every
    /// serving thread has ended and the disk tier's queued writes are done.
    pub async fn stop(self) {
        // Not ready first, still serving: whoever probes `/readyz` stops sending
        // clients here before the listeners close.
        self.draining.cancel();
        if !self.stop_delay.is_zero() {
            tracing::info!(
                delay_ms = self.stop_delay.as_millis() as u64,
                "not ready; serving until the stop delay ends"
            );
            tokio::time::sleep(self.stop_delay).await;
        }
        self.graceful.store(true, Ordering::Release);
        let _ = self.drain.send(true);
        // Idle keep-alive connections (waiting for a next request) close now
        // rather than at the end of the grace period.
        ServerApp::cleanup(&*self.app).await;
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
        // Objects that completed are on disk before the next edge scans the directory.
        self.store.close().await;
    }
}
