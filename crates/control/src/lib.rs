//! `millions control`: runs a topology.
//!
//! The controller starts every node of a [`Topology`] in order — PostgreSQL
//! primaries (initdb, scram, migrations), their replicas (pg_basebackup through a
//! replication slot, then streaming), Redis, workers, web servers, one load
//! balancer per data center — each on its own address, then supervises them: a
//! node that dies is started again with backoff, unless it was stopped on purpose.
//! Its HTTP API (`/api/...`) is how `millions status`, `chaos` and `down` talk to
//! it; it also serves `/healthz`, `/readyz` and `/metrics`.
//!
//! Every node's process is remembered by pid *and* start time (`nodes/NAME.pid`,
//! PostgreSQL's own `postmaster.pid` checked against its data directory), so a
//! restarted controller adopts only its own nodes, and a pid reused by another
//! process is never adopted nor signalled. When the controller itself is gone,
//! [`orphans`] finds the nodes it left running and [`stop_orphans`] stops them.
//!
//! The modules, each importing only those listed before it:
//! - `error` ([`ControlError`]) and `files` (the run directory's layout:
//!   `control.json`, secrets, pid files, configurations, logs), then [`tls`]
//!   (the run directory's CA and the load balancers' certificates);
//! - `cluster` (the shard decisions, their file, their publication, the event log),
//!   `metrics` (the controller's own `/metrics`) and `history` (every node's
//!   scraped series in bounded rings, for the dashboard), then `alerts` (the
//!   alert rules: evaluated on the history, followed, exported for Prometheus);
//! - `shared` (what a running controller shares: options, secrets, the nodes under
//!   supervision, the decisions; questions about a node);
//! - `pgadmin` (the controller's own SQL: probes, WAL positions, replication
//!   state, slots, checkpoints; never the application's tables);
//! - `configs` (each node's spec and configuration file), [`lb`] (the load
//!   balancers' configuration, drain and resume) and [`dns`] (the DNS servers'
//!   configuration);
//! - `processes` (pid files, adoption, orphans);
//! - `decide` (the decisions about a shard, pure: is a primary lost, whom to
//!   promote, the read set, how a node rejoins) and `postgres` (a PostgreSQL
//!   node's start in its role: primary, standby, rewound, rebuilt);
//! - `launch` (starting and stopping nodes, all of them in order);
//! - `failover` (the per-shard watcher: read set, lost primaries, promotion),
//!   `switchover` (moving a primary on purpose, no commit lost), `dcs` (a whole
//!   data center lost and brought back), `supervise`
//!   (restarts with backoff), `renew` (the load balancers' certificates renewed
//!   and reloaded before they expire) and `status` (what `millions status` shows);
//! - `dashboard` (the page, its assets, its JSON and live stream) and
//!   [`prometheus`] (the Prometheus configuration with file-based discovery of
//!   every node, the alert rules, the Grafana dashboard), then `scrape`
//!   (every node's `/metrics` and /proc, the disk, on an interval; it publishes
//!   the dashboard's state);
//! - `api` (the HTTP API), then `controller` ([`Controller`]: build, run).
#![forbid(unsafe_code)]

mod alerts;
mod api;
pub mod autoscale;
pub mod cdn;
mod cluster;
mod configs;
mod controller;
mod dashboard;
mod dcs;
mod decide;
pub mod dns;
mod error;
mod failover;
mod files;
mod grow;
mod history;
mod launch;
pub mod lb;
mod metrics;
mod pgadmin;
mod postgres;
mod processes;
pub mod prometheus;
mod renew;
mod reshard;
pub mod scale;
mod scrape;
mod shared;
mod status;
mod supervise;
mod switchover;
pub mod tls;
pub mod wan;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

use topology::Topology;

/// Where the controller serves its API and dashboard unless told otherwise
/// (`--dashboard`, `MILLIONS_DASHBOARD`): a fixed address, so a bookmark and a
/// Prometheus scrape of the controller survive restarts. Loopback, outside every
/// data center's range; 9900 is beside the roles' own defaults (8000s, 9100).
pub const DEFAULT_DASHBOARD: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9900));

pub use cluster::{ClusterState, Event, MovePhase, MoveState, ShardState};
pub use controller::Controller;
pub use error::ControlError;
pub use files::{ControlFile, Secrets, admin_token, control_file, log_path, running, topology_file};
pub use history::HistoryOptions;
pub use processes::{orphans, stop_orphans};
pub use shared::ControlOptions;
pub use status::{NodeStatus, PgStatus, ShardStatus};

/// The bucket directory the decisions in `run_dir` hold (the even split before
/// any bucket moved), for tools that write to the shards directly (`millions
/// seed`).
pub fn directory(run_dir: &Path, topology: &Topology) -> Result<sharding::ShardMap, ControlError> {
    match cluster::read_state(run_dir, topology)? {
        Some(state) => reshard::directory(&state),
        None => sharding::ShardMap::even(topology.shards().len())
            .map_err(|e| ControlError::Invalid(e.to_string())),
    }
}

/// Connection URLs of each published shard's current primary, in shard order, for tools
/// that write to the shards directly (`millions seed`).
pub fn primary_urls(run_dir: &Path, topology: &Topology) -> Result<Vec<String>, ControlError> {
    let secrets = files::read_secrets(run_dir)?;
    let state = cluster::read_state(run_dir, topology)?;
    // The published shards: the directory's (a shard still joining has no bucket).
    let count = state.as_ref().map_or(topology.shards().len(), ClusterState::published);
    Ok(shared::primary_urls_with(topology, state.as_ref(), count, &secrets.postgres, None))
}
