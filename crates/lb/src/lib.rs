//! `millions lb`: the data center's load balancer, on Cloudflare's pingora.
//!
//! The only public entry of a DC: an HTTP/1.1 and HTTP/2 (cleartext, prior
//! knowledge) reverse proxy in front of the DC's web servers. [`pool`] picks a
//! backend (round robin, or power of two choices over peak-EWMA latency × load),
//! [`health`] probes every backend's `/readyz`, passive checks eject a backend that
//! keeps failing, [`proxy`] retries safe requests elsewhere and protects the web
//! servers (header deadline, sizes, per-client rate limit, smuggling shapes), and
//! [`admin`] lets `millions control` change and drain backends at runtime.
//!
//! Pingora runs its own runtimes and owns its listener; [`start`] runs it on a
//! thread of its own, returns once the proxy accepts connections, and
//! [`Running::stop`] shuts it down.
#![forbid(unsafe_code)]

pub mod accesslog;
pub mod admin;
pub mod config;
pub mod front;
pub mod h1;
pub mod health;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod ratelimit;
pub mod upstream;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::listening::Service;
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
}

/// How long a graceful stop lets requests in flight finish.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A running load balancer.
#[derive(Debug)]
pub struct Running {
    /// The public listener's address.
    pub listen: SocketAddr,
    /// The admin listener's address.
    pub admin: SocketAddr,
    /// The backends (tests look inside).
    pub pool: Arc<pool::Pool>,
    /// Stops pingora, the admin server and the health checks.
    stop: CancellationToken,
    /// Graceful (let requests finish) or fast.
    graceful: Arc<AtomicBool>,
    /// Pingora's thread; ends when pingora has stopped.
    pingora: Option<std::thread::JoinHandle<()>>,
    /// The admin server's and health checker's runtime.
    runtime: Option<tokio::runtime::Runtime>,
    /// The access log's writer (stopped after pingora, so the last lines are written).
    access_log: Arc<accesslog::AccessLog>,
}

/// Pingora's shutdown signal: our token, not the process's signals.
struct Stopper {
    /// Cancelled to stop.
    token: CancellationToken,
    /// Which kind of stop.
    graceful: Arc<AtomicBool>,
}

#[async_trait]
impl ShutdownSignalWatch for Stopper {
    async fn recv(&self) -> ShutdownSignal {
        self.token.cancelled().await;
        if self.graceful.load(Ordering::Acquire) {
            ShutdownSignal::GracefulTerminate
        } else {
            ShutdownSignal::FastShutdown
        }
    }
}

/// Start the load balancer on `config`'s addresses; returns once the proxy accepts
/// connections. The configuration must be valid (`LbConfig::load` checks it).
pub fn start(config: LbConfig) -> Result<Running, LbError> {
    // Bind the admin listener for good, and check the proxy's address is free
    // (pingora binds it itself, on its own thread, and panics if it cannot).
    let admin = TcpListener::bind(config.admin).map_err(|source| LbError::Bind {
        what: "admin",
        addr: config.admin,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|e| LbError::Start(e.to_string()))?;
    drop(TcpListener::bind(config.listen).map_err(|source| LbError::Bind {
        what: "listen",
        addr: config.listen,
        source,
    })?);

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
    let state =
        admin::AdminState { pool: pool.clone(), metrics: metrics.clone(), registry, wake: wake.clone() };
    {
        let _enter = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(admin).map_err(|e| LbError::Start(e.to_string()))?;
        let app = admin::router(state);
        let token = stop.clone();
        runtime.spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin server failed");
            }
        });
        runtime.spawn(health::run(pool.clone(), config.health.clone(), wake, stop.clone()));
    }

    let limiter = (config.rate_limit.per_second > 0)
        .then(|| ratelimit::RateLimiter::new(config.rate_limit.per_second, config.rate_limit.burst));
    let listen = config.listen;
    let conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(STOP_GRACE.as_secs() / 2),
        graceful_shutdown_timeout_seconds: Some(STOP_GRACE.as_secs() / 2),
        ..ServerConf::default()
    };
    let access_log = Arc::new(accesslog::AccessLog::start().map_err(|e| LbError::Start(e.to_string()))?);
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    let proxy = proxy::Proxy {
        pool: pool.clone(),
        config,
        metrics,
        limiter,
        access_log: access_log.clone(),
        options,
    };
    let graceful = Arc::new(AtomicBool::new(false));
    let stopper = Stopper { token: stop.clone(), graceful: graceful.clone() };
    let pingora = std::thread::Builder::new()
        .name("lb-pingora".into())
        .spawn(move || {
            let mut server = Server::new_with_opt_and_conf(None, conf);
            server.bootstrap();
            let app = front::Front { proxy: Arc::new(proxy) };
            let mut service = Service::new("lb".to_owned(), app);
            service.add_tcp(&listen.to_string());
            server.add_service(service);
            server.run(RunArgs { shutdown_signal: Box::new(stopper) });
        })
        .map_err(|e| LbError::Start(e.to_string()))?;

    let mut running = Running {
        listen,
        admin: admin_addr,
        pool,
        stop,
        graceful,
        pingora: Some(pingora),
        runtime: Some(runtime),
        access_log,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline || running.pingora.as_ref().is_some_and(|t| t.is_finished()) {
            running.shutdown(false);
            return Err(LbError::Start(format!("the proxy did not start listening on {listen}")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::info!(%listen, admin = %admin_addr, "load balancer listening");
    Ok(running)
}

impl Running {
    /// Stop: no new connections; with `graceful`, requests in flight get a short
    /// grace period. Blocks until everything has stopped.
    pub fn stop(mut self, graceful: bool) {
        self.shutdown(graceful);
    }

    fn shutdown(&mut self, graceful: bool) {
        self.graceful.store(graceful, Ordering::Release);
        self.stop.cancel();
        if let Some(t) = self.pingora.take() {
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
