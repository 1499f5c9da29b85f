//! The topology: which processes make up a deployment, in which data center each
//! runs, and at which address.
//!
//! A topology file (TOML, see `docs/TOPOLOGY.md`) lists data centers, each with an
//! address range (CIDR) and how many load balancers, web servers, workers and Redis
//! servers it has, and the shards with the DC of their primary and of each replica.
//! [`parse`] turns it into a validated [`Topology`] whose [`Topology::nodes`] is the
//! list of processes to run, each with a unique, stable name and its own IP address.
//! Presets ship inside the binary ([`preset`], [`PRESETS`]).
//!
//! Every node gets its own IP, drawn from its DC's range by a fixed rule (offsets
//! `.10` load balancers, `.20` web, `.50` CDN edges, `.60` workers, `.80` Redis, `.100` PostgreSQL,
//! each overridable), so all nodes of a role share one port and a node is found,
//! killed or cut off by its address alone.
//!
//! ```
//! let topology = topology::preset("default")?;
//! // A runner would call `topology.check_ports_free()?` before starting anything.
//! for node in topology.nodes() {
//!     println!("{} ({}, {}) listens on {}", node.name, node.role, node.dc, node.addr);
//! }
//! # Ok::<(), topology::TopologyError>(())
//! ```
#![forbid(unsafe_code)]

mod build;
mod cidr;
mod edit;
mod error;
mod raw;

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
pub use sharding::ShardId;

pub use cidr::{Cidr, CidrError};
pub use edit::set_count;
pub use error::TopologyError;

/// The presets that ship with the binary, by name.
pub const PRESETS: &[&str] = &["single", "default", "test"];

/// The TOML text of a preset, to show or to copy as a starting point.
pub fn preset_text(name: &str) -> Option<&'static str> {
    match name {
        "single" => Some(include_str!("../presets/single.toml")),
        "default" => Some(include_str!("../presets/default.toml")),
        "test" => Some(include_str!("../presets/test.toml")),
        _ => None,
    }
}

/// A preset, parsed and validated; an unknown name is an error listing the presets.
pub fn preset(name: &str) -> Result<Topology, TopologyError> {
    let text = preset_text(name).ok_or_else(|| TopologyError::UnknownPreset { name: name.to_owned() })?;
    parse(text, &format!("preset \"{name}\""))
}

/// Parse and validate a topology; `origin` (a path, a preset's name) starts every
/// error message.
pub fn parse(text: &str, origin: &str) -> Result<Topology, TopologyError> {
    let raw: raw::RawTopology = toml::from_str(text).map_err(|e| TopologyError::Parse {
        origin: origin.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    build::build(raw).map_err(|message| TopologyError::Invalid { origin: origin.to_owned(), message })
}

/// Read, parse and validate a topology file.
pub fn load(path: &Path) -> Result<Topology, TopologyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| TopologyError::Read { path: path.display().to_string(), source })?;
    parse(&text, &path.display().to_string())
}

/// What a node does; each role is one kind of process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `millions lb`: the only public entry of its DC.
    #[serde(rename = "lb")]
    LoadBalancer,
    /// `millions web`: a stateless application server.
    Web,
    /// `millions worker`: processes queued jobs.
    Worker,
    /// A Redis server: sessions, cache, timelines.
    Redis,
    /// A PostgreSQL server: one member (primary or replica) of one shard.
    Postgres,
    /// `millions dns`: an authoritative server of the app's zone (one per DC, so
    /// DNS is no single point of failure), answering the nearest healthy DC.
    Dns,
    /// `millions wan`: a DC's gateway to the others (with `[wan]`): everything a
    /// node of this DC sends to another DC goes through one of its relays, which
    /// adds the WAN's delay, loss and cuts and leaves from this DC's range.
    Wan,
    /// `millions cdn`: an edge cache of the DC, in front of its web servers, that
    /// serves photos to browsers over HTTP and HTTPS.
    Cdn,
}

impl Role {
    /// Every role, in the order of the file's keys.
    pub const ALL: [Role; 8] = [
        Role::LoadBalancer,
        Role::Web,
        Role::Worker,
        Role::Redis,
        Role::Postgres,
        Role::Dns,
        Role::Wan,
        Role::Cdn,
    ];

    /// The role's key in the file, in node names and on the command line.
    pub fn key(self) -> &'static str {
        match self {
            Role::LoadBalancer => "lb",
            Role::Web => "web",
            Role::Worker => "worker",
            Role::Redis => "redis",
            Role::Postgres => "postgres",
            Role::Dns => "dns",
            Role::Wan => "wan",
            Role::Cdn => "cdn",
        }
    }

    /// The port the role listens on unless `[ports]` says otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            Role::LoadBalancer => 8000,
            Role::Web => 8080,
            Role::Worker => 9100,
            Role::Redis => 6379,
            Role::Postgres => 5432,
            // Unprivileged (53 needs root); every DNS server has its own address.
            Role::Dns => 8053,
            // The gateway's admin API; its relays listen on ports of their own.
            Role::Wan => 7000,
            // A public entry like a load balancer's (on its own address); its admin
            // listener takes the next port.
            Role::Cdn => 8000,
        }
    }

    /// Offset in the DC's range of the role's first address unless `first` says
    /// otherwise, and how many addresses its default block holds (`None`: up to the
    /// end of the range).
    pub fn default_block(self) -> (u128, Option<u128>) {
        match self {
            Role::LoadBalancer => (10, Some(10)),
            Role::Web => (20, Some(30)),
            Role::Cdn => (50, Some(10)),
            Role::Worker => (60, Some(20)),
            Role::Redis => (80, Some(20)),
            Role::Postgres => (100, None),
            Role::Dns => (5, Some(5)),
            Role::Wan => (2, Some(3)),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.key())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL.into_iter().find(|r| r.key() == s).ok_or_else(|| {
            let keys: Vec<_> = Role::ALL.iter().map(|r| r.key()).collect();
            format!("unknown role \"{s}\"; the roles are {}", keys.join(", "))
        })
    }
}

/// How a shard's primary waits for its replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Replication {
    /// Commit without waiting for a replica: fastest, but a primary's crash may lose
    /// its last acknowledged writes.
    #[default]
    Async,
    /// Commit waits until at least one replica has the WAL on disk
    /// (`synchronous_standby_names = 'ANY 1 (...)'`): no acknowledged write is lost
    /// when the primary dies, and writes stall while no replica answers.
    Sync,
}

impl fmt::Display for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Replication::Async => "async",
            Replication::Sync => "sync",
        })
    }
}

/// What a synchronous shard's acknowledged writes survive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Survives {
    /// The loss of any one node: a commit waits for any replica
    /// (`ANY 1 (every other member)`). The replica may be in the primary's own DC.
    #[default]
    Node,
    /// The loss of a whole data center: a commit waits for a replica in another DC
    /// than the primary's (`ANY 1 (the members elsewhere)`).
    Dc,
}

impl fmt::Display for Survives {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Survives::Node => "node",
            Survives::Dc => "dc",
        })
    }
}

/// Which standbys a synchronous primary waits for, and whether that is weaker than
/// the shard's topology asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    /// The standbys (`application_name`s), any one of which must confirm a commit.
    pub standbys: Vec<String>,
    /// The shard asks to survive a DC, but every other DC holding one of its members
    /// is lost: commits wait only for a replica in the primary's own DC.
    pub degraded: bool,
}

impl Quorum {
    /// The `synchronous_standby_names` value: `ANY 1 ("a", "b")`.
    pub fn setting(&self) -> String {
        let names: Vec<String> = self.standbys.iter().map(|m| format!("\"{m}\"")).collect();
        format!("ANY 1 ({})", names.join(", "))
    }
}

/// How a load balancer picks a web server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbAlgorithm {
    /// Each healthy backend in turn.
    #[default]
    RoundRobin,
    /// The less busy of two random healthy backends (power of two choices).
    LeastRequest,
}

/// The port each role listens on. Every node has its own IP, so all nodes of a role
/// share one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ports {
    /// Load balancers' public HTTP port.
    pub lb: u16,
    /// Web servers' HTTP port (the app, `/healthz`, `/metrics`).
    pub web: u16,
    /// Workers' HTTP port (`/healthz`, `/readyz`, `/metrics`).
    pub worker: u16,
    /// Redis servers' port.
    pub redis: u16,
    /// PostgreSQL servers' port.
    pub postgres: u16,
    /// DNS servers' port (UDP and TCP); their admin listener takes the next one.
    pub dns: u16,
    /// WAN gateways' admin port (their relays listen from [`WAN_LINK_PORTS`] up).
    pub wan: u16,
    /// CDN edges' public HTTP port; their admin listener takes the next one, and
    /// their HTTPS listener is at [`Ports::https`].
    pub cdn: u16,
    /// Load balancers' HTTPS port (the app's public entry; their plain port
    /// redirects to it).
    pub https: u16,
}

/// The load balancers' HTTPS port unless `[ports] https` says otherwise.
pub const DEFAULT_HTTPS_PORT: u16 = 8443;

/// The first port of a WAN gateway's relays: the relay to the node at index `i`
/// of [`Topology::nodes`] listens on this plus `i`.
pub const WAN_LINK_PORTS: u16 = 20000;

impl Ports {
    /// The port of `role`.
    pub fn of(&self, role: Role) -> u16 {
        match role {
            Role::LoadBalancer => self.lb,
            Role::Web => self.web,
            Role::Worker => self.worker,
            Role::Redis => self.redis,
            Role::Postgres => self.postgres,
            Role::Dns => self.dns,
            Role::Wan => self.wan,
            Role::Cdn => self.cdn,
        }
    }
}

/// A data center: a failure domain with its own address range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dc {
    /// Unique name; prefixes its nodes' names, and is what `chaos dc-down` takes.
    pub name: String,
    /// The range every node of the DC has its address in. A loopback range on one
    /// machine; a network namespace's or a site's subnet elsewhere.
    pub cidr: Cidr,
    /// How this DC's load balancers spread requests over its web servers.
    pub lb_algorithm: LbAlgorithm,
    /// The rest of its load balancers' settings, as the `[dc.lb]` section gives them.
    pub lb_settings: LbSettings,
    /// How its Redis servers bound their memory.
    pub redis_memory: RedisMemory,
    /// Its web servers' scaling range and the addresses reserved for it.
    pub web: Scale,
    /// Its workers' scaling range and the addresses reserved for it.
    pub worker: Scale,
}

impl Dc {
    /// The scaling range of `role` in this DC: `Some` for web servers and workers
    /// (the roles that scale), `None` for the others.
    pub fn scale(&self, role: Role) -> Option<&Scale> {
        match role {
            Role::Web => Some(&self.web),
            Role::Worker => Some(&self.worker),
            _ => None,
        }
    }
}

/// A role's scaling range in one DC (web servers and workers). `Default` is a DC
/// without the role: no node, no address.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scale {
    /// The fewest nodes the controller scales the role down to (at least 1 with a
    /// range).
    pub min: u32,
    /// The most nodes it scales the role up to; their addresses are reserved, so
    /// scaling up never takes another node's address.
    pub max: u32,
    /// Whether the file gave a range (the controller autoscales the role); without one min == max == count.
    pub auto: bool,
    /// The addresses of all `max` nodes, in node order (node k, 1-based, has addrs[k-1]); the first `count` are the running nodes.
    pub addrs: Vec<std::net::IpAddr>,
    /// The `autoscale` table as written (policy overrides), interpreted by the controller.
    pub autoscale: toml::Table,
}

// The only value not equal to itself would be a NaN float, and the file's
// `autoscale` tables are refused with one (or an infinity) when it is read.
impl Eq for Scale {}

/// How a DC's Redis servers bound their memory (`[dc.redis]`'s `maxmemory_mb` and
/// `eviction`). Everything the system keeps in Redis may be evicted safely — an
/// evicted entry, timeline, generation or floor is rebuilt from the shards, never
/// trusted stale (ADR 0013) — so a budget evicts any key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RedisMemory {
    /// Each server's budget in MiB; `None`: no bound (memory grows with the load).
    pub maxmemory_mb: Option<u32>,
    /// What goes first at the budget.
    pub eviction: Eviction,
}

/// Smallest Redis budget accepted, in MiB: below it a server cannot hold a
/// working set (and Redis's own overhead is a few MiB).
pub const MIN_REDIS_MB: u32 = 8;

/// Which keys a Redis at its memory budget evicts first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Eviction {
    /// The least recently used (Redis's approximated LRU): measured better than LFU
    /// on the bench's trace (docs/BENCHMARKS.md, ADR 0013), where LFU evicts what
    /// was just filled — a rebuilt timeline, a claimed generation — first.
    #[default]
    AllkeysLru,
    /// The least frequently used (Redis's approximated LFU, with decay).
    AllkeysLfu,
}

impl Eviction {
    /// Redis's name for it (`maxmemory-policy`).
    pub fn as_redis(self) -> &'static str {
        match self {
            Eviction::AllkeysLfu => "allkeys-lfu",
            Eviction::AllkeysLru => "allkeys-lru",
        }
    }
}

/// `millions lb`'s own settings given in a DC's `[dc.lb]` section (`threads`,
/// `health`, `outlier`, `upstream`, `limits`, `rate_limit`), kept as written: the
/// load balancer's configuration (`lb::LbConfig`) knows their fields and rules, and
/// `millions up` checks them there before anything starts. Empty: every default.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct LbSettings(pub toml::Table);

// The only value not equal to itself would be a NaN float, and no load-balancer
// setting takes a float (`millions up` refuses one before anything starts).
impl Eq for LbSettings {}

/// One shard cluster: a primary and its replicas, placed in DCs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shard {
    /// Position in the file's list of shards; what the shard map routes buckets to.
    pub id: ShardId,
    /// Whether commits wait for a replica.
    pub replication: Replication,
    /// With synchronous replication, what an acknowledged write survives.
    pub survives: Survives,
    /// The DC of the initial primary.
    pub primary_dc: String,
    /// The DC of each replica, one entry per replica, in the file's order.
    pub replica_dcs: Vec<String>,
    /// The names of the shard's PostgreSQL nodes, the initial primary first; these
    /// are also the servers' `application_name`s in replication.
    pub members: Vec<String>,
}

impl Shard {
    /// The DC of member `name`, if it is one.
    pub fn member_dc(&self, name: &str) -> Option<&str> {
        let k = self.members.iter().position(|m| m == name)?;
        Some(if k == 0 { &self.primary_dc } else { &self.replica_dcs[k - 1] })
    }

    /// What the shard's acknowledged writes survive; `None` when asynchronous (a
    /// primary's crash may lose its last writes).
    pub fn survives(&self) -> Option<Survives> {
        (self.replication == Replication::Sync).then_some(self.survives)
    }

    /// The `synchronous_standby_names` setting for this shard while `primary` (one of
    /// [`Shard::members`]) is its primary: `ANY 1 ("shard0-pg-2", "shard0-pg-3")`
    /// when synchronous, `None` when asynchronous. A shard that survives a DC waits
    /// for a member in another DC than `primary`'s.
    pub fn synchronous_standby_names(&self, primary: &str) -> Option<String> {
        self.quorum(primary, &[]).map(|q| q.setting())
    }

    /// The standbys `primary` waits for while the DCs in `lost` are lost (declared
    /// down by the controller): their members cannot confirm anything. A DC-safe
    /// shard whose other DCs are all lost degrades to its members in the primary's
    /// DC (said so by [`Quorum::degraded`]); `None` when asynchronous, or when no
    /// member but the primary is left.
    pub fn quorum(&self, primary: &str, lost: &[&str]) -> Option<Quorum> {
        let survives = self.survives()?;
        let primary_dc = self.member_dc(primary);
        let standbys = |elsewhere_only: bool| -> Vec<String> {
            self.members
                .iter()
                .filter(|m| *m != primary)
                .filter(|m| self.member_dc(m).is_some_and(|dc| !lost.contains(&dc)))
                .filter(|m| !elsewhere_only || self.member_dc(m) != primary_dc)
                .cloned()
                .collect()
        };
        let (standbys, degraded) = match survives {
            Survives::Node => (standbys(false), false),
            Survives::Dc => match standbys(true) {
                elsewhere if !elsewhere.is_empty() => (elsewhere, false),
                _ => (standbys(false), true),
            },
        };
        (!standbys.is_empty()).then_some(Quorum { standbys, degraded })
    }
}

/// `[dns]`: the zone the DNS servers answer for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsSettings {
    /// The zone, lowercase, without a final dot (`millions.test`).
    pub zone: String,
    /// The app's name in the zone (`www`): answered with the nearest healthy DC's
    /// load balancers.
    pub app: String,
    /// TTL of those answers, seconds: how long a resolver may keep sending users to
    /// a DC that just failed, against how often resolvers ask again.
    pub ttl_secs: u32,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings { zone: "millions.test".into(), app: "www".into(), ttl_secs: 5 }
    }
}

/// `[tls]`: the load balancers' certificates (signed by the run directory's CA):
/// how long each lives, and when the controller renews it in a running topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TlsSettings {
    /// A certificate's lifetime, seconds (397 days: the longest browsers accept
    /// from public CAs).
    pub cert_lifetime_secs: u64,
    /// A certificate is renewed once less than this remains (a third of its
    /// lifetime unless set): room for failed renewals to be retried.
    pub renew_before_secs: u64,
    /// How often the controller checks every certificate (an hour, or a quarter
    /// of the renewal window if that is shorter): less than the window, so no
    /// certificate expires between two checks.
    pub renew_check_secs: u64,
}

/// The longest certificate lifetime `[tls]` accepts: ten years, the CA's own.
pub const MAX_CERT_LIFETIME_SECS: u64 = 3650 * 86_400;
/// The shortest (for tests that watch a renewal happen).
pub const MIN_CERT_LIFETIME_SECS: u64 = 10;

impl TlsSettings {
    /// The settings for a lifetime of `cert_lifetime_secs`, with the window and
    /// the check interval their defaults for it.
    pub fn with_lifetime(cert_lifetime_secs: u64) -> TlsSettings {
        let renew_before_secs = (cert_lifetime_secs / 3).max(1);
        TlsSettings {
            cert_lifetime_secs,
            renew_before_secs,
            renew_check_secs: default_check(renew_before_secs),
        }
    }
}

/// How often to check by default when renewing `renew_before_secs` ahead.
pub(crate) fn default_check(renew_before_secs: u64) -> u64 {
    (renew_before_secs / 4).clamp(1, 3600)
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings::with_lifetime(397 * 86_400)
    }
}

/// `[[region]]`: clients in some address ranges, and their DCs by preference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Region {
    /// Unique name (`west`).
    pub name: String,
    /// The clients' address ranges; no two regions' ranges overlap.
    pub cidrs: Vec<Cidr>,
    /// DC names, nearest first (the DCs it does not list come after, in file order).
    pub prefer: Vec<String>,
}

/// `[wan]`: the conditions on every link between two DCs (a user-space relay adds
/// them; `millions chaos wan-cut` cuts the links).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WanSettings {
    /// Delay added to every byte in each direction, milliseconds (the round trip
    /// grows by twice this).
    pub delay_ms: u32,
    /// Uniform jitter around the delay, milliseconds (order is kept).
    pub jitter_ms: u32,
    /// Probability that a chunk is "lost": TCP would send it again, so it and what
    /// follows it arrive [`WanSettings::loss_penalty_ms`] late.
    pub loss: f64,
    /// How late a lost chunk arrives, milliseconds.
    pub loss_penalty_ms: u32,
}

// `loss` is checked finite when the file is read.
impl Eq for WanSettings {}

/// Where a PostgreSQL node belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShardMember {
    /// The shard whose data the node holds.
    pub shard: ShardId,
    /// Whether the node starts as the shard's primary (the others start as its
    /// replicas; failover may change this later, the name stays).
    pub initial_primary: bool,
}

/// One process of the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Unique and stable (`dc1-web-2`, `shard0-pg-1`): names its directory, its log,
    /// its metrics and the target of `chaos kill`.
    pub name: String,
    /// What the process is.
    pub role: Role,
    /// The DC it runs in (failure domain, and range its address is in).
    pub dc: String,
    /// Where it listens: its own IP in its DC's range, and its role's port.
    pub addr: SocketAddr,
    /// For PostgreSQL nodes: the shard and whether the node starts as its primary.
    pub shard: Option<ShardMember>,
}

impl Node {
    /// A load balancer's, DNS server's or CDN edge's admin listener (health,
    /// metrics, and a load balancer's backends and drain, an edge's purges): its
    /// own IP, the next port after its public one. `None` for other roles.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        matches!(self.role, Role::LoadBalancer | Role::Dns | Role::Cdn)
            .then(|| self.addr.port().checked_add(1).map(|p| SocketAddr::new(self.addr.ip(), p)))
            .flatten()
    }

    /// A load balancer's or CDN edge's HTTPS listener at `https_port`
    /// ([`Ports::https`]): its own IP. `None` for other roles.
    pub fn https_addr(&self, https_port: u16) -> Option<SocketAddr> {
        matches!(self.role, Role::LoadBalancer | Role::Cdn)
            .then(|| SocketAddr::new(self.addr.ip(), https_port))
    }

    /// Every address the node listens on (a load balancer's HTTPS listener at
    /// `https_port` included).
    pub fn listen_addrs(&self, https_port: u16) -> impl Iterator<Item = (SocketAddr, &'static str)> {
        std::iter::once((self.addr, ""))
            .chain(self.admin_addr().map(|a| (a, " (admin listener)")))
            .chain(self.https_addr(https_port).map(|a| (a, " (HTTPS listener)")))
    }
}

/// A validated topology: every name and address unique, every range large enough,
/// every placement pointing at a defined DC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// Its name (`default`), for status output.
    name: String,
    /// The data centers, in the file's order.
    dcs: Vec<Dc>,
    /// The shards, in id order.
    shards: Vec<Shard>,
    /// Each role's port.
    ports: Ports,
    /// Every process, in start order.
    nodes: Vec<Node>,
    /// The zone the DNS servers answer for.
    dns: DnsSettings,
    /// Where clients are, and the DCs nearest to them.
    regions: Vec<Region>,
    /// The simulated links between DCs; `None`: DCs talk directly.
    wan: Option<WanSettings>,
    /// The load balancers' certificates' lifetime and renewal.
    tls: TlsSettings,
}

impl Topology {
    /// The topology's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The data centers, in the file's order.
    pub fn dcs(&self) -> &[Dc] {
        &self.dcs
    }

    /// The DC of this name.
    pub fn dc(&self, name: &str) -> Option<&Dc> {
        self.dcs.iter().find(|d| d.name == name)
    }

    /// The shards, `shards()[i].id == ShardId(i)`.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Each role's port.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// Every process to run, in an order that starts dependencies first: the WAN
    /// gateways, PostgreSQL (each shard's primary before its replicas), then Redis,
    /// workers, web servers, load balancers and DNS servers (each role DC by DC).
    /// Stop in the reverse order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The zone the DNS servers answer for, and how.
    pub fn dns(&self) -> &DnsSettings {
        &self.dns
    }

    /// The load balancers' certificates' lifetime and renewal.
    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    /// The client regions, in the file's order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The DCs nearest a client at `ip`, in order: its region's preference, then
    /// the other DCs in the file's order; every DC in the file's order for a client
    /// in no region.
    pub fn dc_order_for(&self, ip: std::net::IpAddr) -> Vec<&str> {
        let prefer = self.regions.iter().find(|r| r.cidrs.iter().any(|c| c.contains(ip))).map(|r| &r.prefer);
        let mut order: Vec<&str> = prefer.into_iter().flatten().map(String::as_str).collect();
        for dc in &self.dcs {
            if !order.contains(&dc.name.as_str()) {
                order.push(&dc.name);
            }
        }
        order
    }

    /// The conditions on every link between two DCs; `None` when the topology has
    /// no `[wan]` (DCs talk directly, and no gateway runs).
    pub fn wan(&self) -> Option<&WanSettings> {
        self.wan.as_ref()
    }

    /// `dc`'s WAN gateway, if it has one.
    pub fn wan_gateway(&self, dc: &str) -> Option<&Node> {
        self.nodes_of(Role::Wan).find(|n| n.dc == dc)
    }

    /// Whether a node of another DC reaches `node` through a WAN relay: with a
    /// `[wan]`, every PostgreSQL and Redis node.
    pub fn relayed(&self, node: &Node) -> bool {
        self.wan.is_some() && matches!(node.role, Role::Postgres | Role::Redis)
    }

    /// The port of the relays that lead to `node` (on every other DC's gateway):
    /// the Redis nodes' first, then the PostgreSQL nodes' in shard order, so that
    /// a shard added to the end (`millions shard add`) leaves every existing
    /// relay's port as it was.
    pub fn relay_port(&self, node: &Node) -> Option<u16> {
        let i = match node.role {
            Role::Redis => self.nodes_of(Role::Redis).position(|n| n.name == node.name)?,
            Role::Postgres => {
                self.nodes_of(Role::Redis).count()
                    + self.nodes_of(Role::Postgres).position(|n| n.name == node.name)?
            }
            _ => return None,
        };
        u16::try_from(i).ok().and_then(|i| WAN_LINK_PORTS.checked_add(i))
    }

    /// Where a node of `from_dc` connects to reach `node`: `node` itself in its own
    /// DC, else the relay to it on `from_dc`'s WAN gateway.
    pub fn address_from(&self, from_dc: &str, node: &Node) -> SocketAddr {
        if node.dc == from_dc || !self.relayed(node) {
            return node.addr;
        }
        match (self.wan_gateway(from_dc), self.relay_port(node)) {
            (Some(gw), Some(port)) => SocketAddr::new(gw.addr.ip(), port),
            _ => node.addr,
        }
    }

    /// The relays of `dc`'s WAN gateway: (listen, target node) for every relayed
    /// node of the other DCs.
    pub fn wan_links(&self, dc: &str) -> Vec<(SocketAddr, &Node)> {
        let Some(gw) = self.wan_gateway(dc) else { return Vec::new() };
        self.nodes
            .iter()
            .filter(|n| n.dc != dc && self.relayed(n))
            .filter_map(|n| Some((SocketAddr::new(gw.addr.ip(), self.relay_port(n)?), n)))
            .collect()
    }

    /// The DNS servers as the zone names them (`ns1`, `ns2`, …, in node order).
    pub fn name_servers(&self) -> impl Iterator<Item = (String, &Node)> + '_ {
        self.nodes_of(Role::Dns).enumerate().map(|(i, n)| (format!("ns{}", i + 1), n))
    }

    /// The node of this name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The nodes of one DC, in start order.
    pub fn nodes_in<'a>(&'a self, dc: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes.iter().filter(move |n| n.dc == dc)
    }

    /// The nodes of one role, in start order.
    pub fn nodes_of(&self, role: Role) -> impl Iterator<Item = &Node> + '_ {
        self.nodes.iter().filter(move |n| n.role == role)
    }

    /// How many nodes of `role` run in `dc`.
    pub fn count(&self, dc: &str, role: Role) -> usize {
        self.nodes_in(dc).filter(|n| n.role == role).count()
    }

    /// The node a shard starts with as its primary.
    pub fn initial_primary(&self, shard: ShardId) -> &Node {
        self.shard_nodes(shard)
            .find(|n| n.shard.is_some_and(|s| s.initial_primary))
            .expect("a validated topology gives every shard a primary")
    }

    /// The PostgreSQL nodes of a shard, the initial primary first.
    pub fn shard_nodes(&self, shard: ShardId) -> impl Iterator<Item = &Node> + '_ {
        self.nodes.iter().filter(move |n| n.shard.is_some_and(|m| m.shard == shard))
    }

    /// Check, before starting anything, that every node can listen on its address:
    /// binds each one (and lets go at once), a WAN gateway's relays too. The first
    /// that cannot is reported by name. Another process may still take a port
    /// between this check and the node's start; this only catches the common case
    /// of a port already in use.
    pub fn check_ports_free(&self) -> Result<(), TopologyError> {
        for node in &self.nodes {
            let relays = self.wan_links(&node.dc).into_iter().filter(|_| node.role == Role::Wan);
            let relays = relays.map(|(addr, to)| (addr, format!(" (relay to {})", to.name)));
            let own = node.listen_addrs(self.ports.https).map(|(addr, what)| (addr, what.to_owned()));
            for (addr, what) in own.chain(relays) {
                let name = format!("{}{what}", node.name);
                match TcpListener::bind(addr) {
                    Ok(listener) => drop(listener),
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                        return Err(TopologyError::PortInUse { node: name, addr });
                    }
                    Err(source) => return Err(TopologyError::CannotBind { node: name, addr, source }),
                }
            }
        }
        Ok(())
    }
}
