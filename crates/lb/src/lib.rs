//! `millions lb`: the data center's load balancer, on Cloudflare's pingora.
//!
//! The only public entry of a DC: an HTTP/1.1 and HTTP/2 (cleartext, prior
//! knowledge) reverse proxy in front of the DC's web servers. [`pool`] picks a
//! backend (round robin, or power of two choices over peak-EWMA latency × load),
//! [`health`] probes every backend's `/readyz`, passive checks eject a backend that
//! keeps failing, and [`admin`] lets `millions control` change and drain backends
//! at runtime.
//!
//! [`listener`] runs the proxy on threads of its own (one single-threaded runtime
//! each); [`front`] tells HTTP/1 from HTTP/2 by a connection's first bytes. Every
//! request, either way, then takes one way, [`pipeline`]: the checks that protect
//! the web servers (rate limit, sizes, smuggling shapes), a backend picked,
//! attempts, safe requests retried elsewhere, passive health, metrics, one
//! access-log line. The rules it applies are small pure functions in [`rules`]
//! (ambiguous framing, hop-by-hop names, which requests may be sent again,
//! request ids). The protocols are its two sides: [`h1`] forwards HTTP/1.x by
//! hand (heads parsed and copied line by line, bodies copied with their framing
//! checked, the header deadline, keep-alive), [`h2`] drives HTTP/2 through
//! pingora-core's sessions; [`upstream`] keeps each thread's idle backend
//! connections. [`start`] binds both listeners before it returns, so the proxy
//! accepts connections once it has; [`Running::stop`] shuts everything down.
//!
//! With a `[tls]` section, [`tls`] terminates HTTPS on a third listener (rustls;
//! HTTP/2 or HTTP/1.1 by ALPN; HSTS; the certificate reloadable through the
//! admin API), and the plain listener redirects every request to it.
#![forbid(unsafe_code)]

pub mod accesslog;
pub mod admin;
pub mod config;
pub mod front;
pub mod h1;
pub mod h2;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod pipeline;
pub mod pool;
pub mod ratelimit;
pub mod rules;
pub mod tls;
pub mod upstream;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pingora_core::apps::HttpServerOptions;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use config::{Algorithm, LbConfig};

/// Why the load balancer cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// A listener's address cannot be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// `listen` or `admin`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A runtime or thread could not be created.
    #[error("cannot start the load balancer: {0}")]
    Start(String),
    /// The TLS certificate or key cannot be used (nothing was bound).
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
}

/// A running load balancer.
#[derive(Debug)]
pub struct Running {
    /// The public listener's address.
    pub listen: SocketAddr,
    /// The admin listener's address.
    pub admin: SocketAddr,
    /// The HTTPS listener's address, when configured.
    pub tls: Option<SocketAddr>,
    /// The certificate in force, when HTTPS is configured (`reload` reads its
    /// files again).
    pub certificates: Option<Arc<tls::Certificates>>,
    /// The backends (tests look inside).
    pub pool: Arc<pool::Pool>,
    /// Stops the listeners, the admin server and the health checks.
    stop: CancellationToken,
    /// Graceful (let requests finish) or fast.
    graceful: Arc<AtomicBool>,
    /// Tells connections to finish their request in flight and close.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The proxy's threads; each ends once its connections are done (or cut).
    proxy_threads: Vec<std::thread::JoinHandle<()>>,
    /// The admin server's and health checker's runtime.
    runtime: Option<tokio::runtime::Runtime>,
    /// The access log's writer (stopped after the proxy, so the last lines are written).
    access_log: Arc<accesslog::AccessLog>,
}

/// Start the load balancer on `config`'s addresses; returns once the proxy accepts
/// connections. The configuration must be valid (`LbConfig::load` checks it).
pub fn start(config: LbConfig) -> Result<Running, LbError> {
    // The certificate and key first: a bad one binds nothing.
    let tls_setup = match &config.tls {
        Some(t) => {
            let certificates = Arc::new(tls::Certificates::load(&t.cert, &t.key)?);
            let server =
                tls::server_config(certificates.clone()).map_err(|e| LbError::Start(e.to_string()))?;
            Some((certificates, tokio_rustls::TlsAcceptor::from(server), t.listen, t.hsts_max_age_secs))
        }
        None => None,
    };
    // The source address must be one of this host's, or every connection would fail.
    if let Some(ip) = config.upstream.source_ip {
        std::net::TcpListener::bind((ip, 0)).map_err(|e| {
            LbError::Start(format!("upstream.source_ip {ip} is not an address of this host: {e}"))
        })?;
    }
    let admin = TcpListener::bind(config.admin).map_err(|source| LbError::Bind {
        what: "admin",
        addr: config.admin,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|e| LbError::Start(e.to_string()))?;
    let listener = listener::bind(config.listen).map_err(|source| LbError::Bind {
        what: "listen",
        addr: config.listen,
        source,
    })?;
    let listen = listener.local_addr().map_err(|e| LbError::Start(e.to_string()))?;
    let tls_listener = match &tls_setup {
        Some((_, _, addr, _)) => {
            let l = listener::bind(*addr).map_err(|source| LbError::Bind {
                what: "tls.listen",
                addr: *addr,
                source,
            })?;
            let bound = l.local_addr().map_err(|e| LbError::Start(e.to_string()))?;
            Some((l, bound))
        }
        None => None,
    };
    let certificates = tls_setup.as_ref().map(|(c, ..)| c.clone());

    let registry = telemetry::Registry::default();
    let metrics = metrics::LbMetrics::new(&registry);
    let pool = Arc::new(pool::Pool::new(&config.backends, config.algorithm, config.outlier.clone()));
    let stop = CancellationToken::new();
    let wake = Arc::new(Notify::new());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("lb-admin")
        .enable_all()
        .build()
        .map_err(|e| LbError::Start(e.to_string()))?;
    admin.set_nonblocking(true).map_err(|e| LbError::Start(e.to_string()))?;
    let state = admin::AdminState {
        pool: pool.clone(),
        metrics: metrics.clone(),
        registry,
        wake: wake.clone(),
        certificates: certificates.clone(),
    };
    {
        let _enter = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(admin).map_err(|e| LbError::Start(e.to_string()))?;
        let app = admin::router(state, config.admin_token.as_deref());
        let token = stop.clone();
        runtime.spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin server failed");
            }
        });
        runtime.spawn(health::run(pool.clone(), config.health.clone(), wake, stop.clone()));
    }

    let limiter = (config.rate_limit.per_second > 0).then(|| {
        Arc::new(ratelimit::RateLimiter::new(config.rate_limit.per_second, config.rate_limit.burst))
    });
    let access_log = Arc::new(accesslog::AccessLog::start().map_err(|e| LbError::Start(e.to_string()))?);
    let options = || {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        options
    };
    let threads = config.threads;
    let plain_entry = match &tls_listener {
        Some((_, bound)) => pipeline::Entry::RedirectToHttps { port: bound.port() },
        None => pipeline::Entry::Http,
    };
    let proxy = pipeline::Proxy {
        pool: pool.clone(),
        config,
        metrics,
        limiter,
        access_log: access_log.clone(),
        options: options(),
        entry: plain_entry,
    };
    let mut listeners = Vec::with_capacity(2);
    let mut tls_addr = None;
    if let (Some((listener, bound)), Some((_, acceptor, _, hsts_max_age_secs))) = (tls_listener, tls_setup) {
        let secure = pipeline::Proxy {
            pool: proxy.pool.clone(),
            config: proxy.config.clone(),
            metrics: proxy.metrics.clone(),
            limiter: proxy.limiter.clone(),
            access_log: proxy.access_log.clone(),
            options: options(),
            entry: pipeline::Entry::Https { hsts_max_age_secs },
        };
        listeners.push((listener, Arc::new(front::Front { proxy: Arc::new(secure), tls: Some(acceptor) })));
        tls_addr = Some(bound);
    }
    listeners.insert(0, (listener, Arc::new(front::Front { proxy: Arc::new(proxy), tls: None })));
    let graceful = Arc::new(AtomicBool::new(false));
    let (shutdown, watch) = tokio::sync::watch::channel(false);
    let mut running = Running {
        listen,
        admin: admin_addr,
        tls: tls_addr,
        certificates,
        pool,
        stop: stop.clone(),
        graceful: graceful.clone(),
        shutdown,
        proxy_threads: Vec::new(),
        runtime: Some(runtime),
        access_log,
    };
    let shared = listener::Shared { stop, graceful, shutdown: watch };
    match listener::spawn(listeners, threads, shared) {
        Ok(joins) => running.proxy_threads = joins,
        Err(e) => {
            running.shutdown(false);
            return Err(LbError::Start(e.to_string()));
        }
    }
    tracing::info!(%listen, admin = %admin_addr, tls = ?tls_addr, "load balancer listening");
    Ok(running)
}

impl Running {
    /// Read the TLS certificate and key files again: new handshakes use them if
    /// they are good; otherwise the certificate in force stays and the error says
    /// why. `None` without HTTPS.
    pub fn reload_tls(&self) -> Option<Result<tls::CertificateInfo, tls::TlsError>> {
        self.certificates.as_ref().map(|c| c.reload())
    }

    /// Stop: no new connections; with `graceful`, requests in flight get a short
    /// grace period. Blocks until everything has stopped.
    pub fn stop(mut self, graceful: bool) {
        self.shutdown(graceful);
    }

    fn shutdown(&mut self, graceful: bool) {
        self.graceful.store(graceful, Ordering::Release);
        self.stop.cancel();
        self.shutdown.send_replace(true);
        for t in self.proxy_threads.drain(..) {
            let _ = t.join();
        }
        if let Some(rt) = self.runtime.take() {
            // Not `shutdown_timeout`: `stop` may be called (or the handle dropped)
            // inside another runtime, where blocking on this one would panic.
            rt.shutdown_background();
        }
        self.access_log.stop();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown(false);
    }
}
