//! `millions dns`: the system's authoritative, geo-routing DNS server.
//!
//! The chapter's top box: users reach the site by name, and the name sends each
//! user to the nearest data center (DC) that is up. The server is authoritative
//! for one zone (`zone`, e.g. `millions.test`) over UDP and TCP on one address;
//! it never recurses and refuses every name outside the zone.
//!
//! # Design
//!
//! - [`wire`] reads queries and writes answers with hickory-proto's message
//!   types; [`udp`] and [`tcp`] are our own small loops around it (why not
//!   hickory-server's `Server`: it answers malformed packets itself, where they
//!   cannot be counted, and logs every query at `info`).
//! - [`zone`] holds the static names: the apex SOA and NS records, `ns1`, `ns2`,
//!   … with their addresses (glue), `[[record]]`s, the app's name (`app`,
//!   default `www`) and, when configured, the CDN's name (`cdn`); [`answer`]
//!   applies the DNS rules (NXDOMAIN and NODATA with the SOA, REFUSED outside
//!   the zone, AA=1, RA=0, ANY with what exists).
//! - [`geo`] places a client by its EDNS Client Subnet (RFC 7871) when the query
//!   has one, else by the packet's source address, into a region (address
//!   ranges, non-overlapping) with its DC order; the answer's ECS scope says for
//!   how many bits of the address it holds.
//! - [`health`] probes every DC's entries (load balancers, through their private
//!   `/readyz`; CDN edges, through theirs) with rise/fall thresholds. The app's
//!   name answers the healthy entries of the first healthy DC in the client's
//!   order.
//! - [`admin`] serves `/healthz`, `/readyz`, `/metrics` ([`metrics`]) and
//!   `GET /admin/health` (load balancers and CDN edges, each DC marked with its
//!   service) on a private address.
//! - [`config`] is the TOML schema; [`validate`] checks it, building the zone
//!   and the regions as the server will, so every refusal names its setting.
//!
//! # The app's TTL: failover time against query load
//!
//! `ttl_secs` (default 5) bounds how long a resolver keeps sending users to a DC
//! after it is withdrawn: failover takes about `interval_ms ×
//! unhealthy_threshold` (detection, 2 s by default) plus the TTL (5 s). Each
//! resolver asks again once per TTL per name, so halving the TTL doubles the
//! query load from resolvers; 5 s keeps failover under ten seconds while a
//! resolver serving thousands of users still asks only once every 5 s. (Some
//! resolvers and browsers keep answers longer than the TTL; the load balancer
//! of a DC that is going away should keep serving for a while.)
//!
//! # Health and failing open
//!
//! Entries start healthy and are probed at once, so a server that just started
//! answers every DC rather than nothing. A DC is healthy while one of its
//! entries is. If every DC is unhealthy, the app's name answers every entry of
//! every DC (fail open) and `millions_dns_fail_open_total` counts it: the
//! probes may be what is broken, and an answer that might work beats none.
//!
//! # The CDN's name: edges, with the origin as the fallback
//!
//! With `cdn` (e.g. `cdn`, so `cdn.<zone>`) and `[[cdn_dc]]` (each a `[[dc]]`'s
//! CDN edges), photo URLs can name one host that DNS sends to the nearest
//! healthy edges: the first DC in the client's order (the app's placement,
//! scope and rotation) that has a healthy edge answers its healthy edges. When
//! no edge is healthy anywhere, the CDN's name answers what the app's name
//! would: the load balancers serve the same `/media/` paths on the same port,
//! so photos keep coming from the origin (the CDN's health-checked DNS
//! fallback, `millions_dns_cdn_fallback_total`); only with every load balancer
//! down too does it fail open, as the app's name does. Edges are probed with
//! the same `[health]` settings and its TTL is `ttl_secs`, so it fails over as
//! fast as the app's name. Without `cdn` nothing of this exists.
//!
//! # Sizes and truncation
//!
//! UDP answers fit the client's EDNS size capped by `max_udp_payload` (default
//! 1232), 512 bytes without EDNS; a larger answer drops its glue, then is sent
//! with TC=1 and no records, and the client asks again over TCP, where answers
//! are whole. Malformed packets are counted and answered FORMERR when their
//! header can be read, else dropped.
//!
//! [`start`] validates the configuration and binds UDP, TCP and the admin
//! listener before it returns; [`Running::stop`] stops gracefully.
#![forbid(unsafe_code)]

pub mod admin;
pub mod answer;
pub mod cidr;
pub mod config;
pub mod geo;
pub mod handler;
pub mod health;
pub mod metrics;
pub mod tcp;
pub mod udp;
pub mod validate;
pub mod wire;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use settings::Validate;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::DnsConfig;
pub use health::{DcView, EntryView, Service};

/// Why the DNS server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The configuration is not valid (nothing was bound).
    #[error(transparent)]
    Config(#[from] settings::SettingsError),
    /// A listener's address cannot be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// `udp`, `tcp` or `admin`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running DNS server. Dropping it stops it without waiting.
#[derive(Debug)]
pub struct Running {
    /// The UDP socket's address.
    pub udp: SocketAddr,
    /// The TCP listener's address (same IP and port as `udp`).
    pub tcp: SocketAddr,
    /// The admin listener's address.
    pub admin: SocketAddr,
    /// The load balancers' and CDN edges' health (tests and the controller look inside).
    pub health: Arc<health::HealthTable>,
    /// Stops every task.
    stop: CancellationToken,
    /// The listeners', admin server's and prober's tasks.
    tasks: Vec<JoinHandle<()>>,
    /// How long `stop` waits for TCP queries in flight (and the admin server).
    grace: Duration,
}

/// Start the DNS server on the current tokio runtime: validate `config`, bind
/// UDP, TCP and the admin listener, start serving and probing. Metrics go to
/// `registry` (a registry of its own when `None`).
pub async fn start(config: DnsConfig, registry: Option<telemetry::Registry>) -> Result<Running, DnsError> {
    config.validate()?;
    let zone = zone::Zone::build(&config)?;
    let geo = geo::Geo::build(&config)?;
    let (udp_socket, tcp_listener) = bind_dns(config.listen, config.udp.buffer_bytes).await?;
    let admin_listener = TcpListener::bind(config.admin).await.map_err(|source| DnsError::Bind {
        what: "admin",
        addr: config.admin,
        source,
    })?;
    let local = |what, r: std::io::Result<SocketAddr>, addr| {
        r.map_err(|source| DnsError::Bind { what, addr, source })
    };
    let udp = local("udp", udp_socket.local_addr(), config.listen)?;
    let tcp = local("tcp", tcp_listener.local_addr(), config.listen)?;
    let admin = local("admin", admin_listener.local_addr(), config.admin)?;

    let registry = registry.unwrap_or_default();
    let labels: Vec<(String, Vec<String>)> = config
        .dcs
        .iter()
        .map(|dc| (dc.name.clone(), dc.entries.iter().map(|e| e.address.to_string()).collect()))
        .collect();
    let edges_by_dc = config.cdn_edges_by_dc();
    let edge_labels: Vec<(String, Vec<String>)> = config
        .dcs
        .iter()
        .zip(&edges_by_dc)
        .map(|(dc, edges)| (dc.name.clone(), edges.iter().map(|e| e.address.to_string()).collect()))
        .collect();
    let metrics =
        metrics::DnsMetrics::new(&registry, &labels, config.cdn.is_some().then_some(&edge_labels[..]));
    let health = Arc::new(health::HealthTable::new(&config));
    let answerer = answer::Answerer::new(answer::Parts {
        zone,
        geo,
        health: health.clone(),
        entries: config.dcs.iter().map(|dc| dc.entries.iter().map(|e| e.address).collect()).collect(),
        cdn_entries: edges_by_dc.iter().map(|edges| edges.iter().map(|e| e.address).collect()).collect(),
        ttl_secs: config.ttl_secs,
        max_udp_payload: config.max_udp_payload,
        metrics: metrics.clone(),
    });
    let handler = Arc::new(handler::Handler {
        answerer,
        metrics: metrics.clone(),
        max_udp_payload: config.max_udp_payload,
    });

    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let udp_socket = Arc::new(udp_socket);
    for _ in 0..config.udp_workers() {
        tasks.push(tokio::spawn(udp::serve(udp_socket.clone(), handler.clone(), stop.clone())));
    }
    tasks.push(tokio::spawn(tcp::serve(tcp_listener, handler, config.tcp.clone(), stop.clone())));
    tasks.push(tokio::spawn(health::run(health.clone(), config.health.clone(), metrics, stop.clone())));
    let state = admin::AdminState { health: health.clone(), registry, stop: stop.clone() };
    let app = admin::router(state, config.admin_token.as_deref());
    let token = stop.clone();
    tasks.push(tokio::spawn(async move {
        let served = axum::serve(admin_listener, app).with_graceful_shutdown(token.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "dns admin server failed");
        }
    }));
    tracing::info!(%udp, %tcp, %admin, zone = %config.zone, cdn = ?config.cdn, "dns server listening");
    Ok(Running {
        udp,
        tcp,
        admin,
        health,
        stop,
        tasks,
        grace: Duration::from_millis(config.tcp.stop_grace_ms),
    })
}

/// Bind UDP and TCP on one address; with port 0, on one free port for both.
async fn bind_dns(listen: SocketAddr, udp_buffer: usize) -> Result<(UdpSocket, TcpListener), DnsError> {
    let bind_error = |what, addr, source| DnsError::Bind { what, addr, source };
    let mut attempts = if listen.port() == 0 { 16 } else { 1 };
    loop {
        let udp = udp::bind(listen, udp_buffer).map_err(|e| bind_error("udp", listen, e))?;
        let addr = udp.local_addr().map_err(|e| bind_error("udp", listen, e))?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // The free UDP port is taken for TCP: try another one.
            Err(_) if attempts > 1 => attempts -= 1,
            Err(e) => return Err(bind_error("tcp", addr, e)),
        }
    }
}

impl Running {
    /// Stop gracefully: no new queries or connections; TCP queries in flight are
    /// answered within `tcp.stop_grace_ms`, then everything is cut.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        // The TCP listener bounds its own connections by the grace period; the
        // extra second only covers the admin server's last requests.
        let bound = self.grace + Duration::from_secs(1);
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        if tokio::time::timeout(bound, futures::future::join_all(tasks)).await.is_err() {
            for a in aborts {
                a.abort();
            }
        }
        tracing::info!(udp = %self.udp, "dns server stopped");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
