//! The file as written, before validation (`docs/TOPOLOGY.md` is the reference).
//! Every table refuses unknown keys, so a misspelt key or an unknown role is an
//! error with its line, not silently ignored.

use serde::Deserialize;

use crate::{LbAlgorithm, Replication, Survives};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTopology {
    /// `name`: shown by status output.
    pub name: String,
    /// `[[dc]]`: the data centers.
    #[serde(default)]
    pub dc: Vec<RawDc>,
    /// `[[shard]]`: the shards and their placement.
    #[serde(default)]
    pub shard: Vec<RawShard>,
    /// `[ports]`: overrides of the roles' ports.
    #[serde(default)]
    pub ports: RawPorts,
    /// `[dns]`: the app's zone and its answers.
    #[serde(default)]
    pub dns: RawDns,
    /// `[[region]]`: where clients are, and which DCs are nearest to them.
    #[serde(default)]
    pub region: Vec<RawRegion>,
    /// `[wan]`: the simulated links between DCs (absent: DCs talk directly).
    pub wan: Option<RawWan>,
    /// `[tls]`: the load balancers' certificates' lifetime and renewal.
    #[serde(default)]
    pub tls: RawTls,
}

/// `[tls]`: how long the load balancers' certificates live and when they are
/// renewed (signed, so a negative value gets our message).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    /// A certificate's lifetime, seconds.
    pub cert_lifetime_secs: Option<i64>,
    /// A certificate is renewed once less than this remains, seconds.
    pub renew_before_secs: Option<i64>,
    /// How often the controller checks, seconds.
    pub renew_check_secs: Option<i64>,
}

/// `[dns]`: the zone the DNS servers answer for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    /// The zone (`millions.test`).
    pub zone: Option<String>,
    /// The app's name in the zone (`www`).
    pub app: Option<String>,
    /// TTL of the app's answers, seconds (signed, so a negative value gets our message).
    pub ttl_secs: Option<i64>,
}

/// One `[[region]]`: clients in some address ranges, and their DCs by preference.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegion {
    /// The region's name.
    pub name: String,
    /// The clients' address ranges.
    pub cidrs: Vec<String>,
    /// DC names, nearest first.
    pub prefer: Vec<String>,
}

/// `[wan]`: conditions on every link between two DCs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWan {
    /// One-way delay, milliseconds.
    pub delay_ms: Option<i64>,
    /// Uniform jitter around the delay, milliseconds.
    pub jitter_ms: Option<i64>,
    /// Probability that a chunk is "lost" (delayed by a retransmission).
    pub loss: Option<f64>,
    /// The delay a lost chunk takes, milliseconds.
    pub loss_penalty_ms: Option<i64>,
}

/// One `[[dc]]`. An absent role section means none of that role.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDc {
    /// The DC's name, unique.
    pub name: String,
    /// The DC's address range.
    pub cidr: String,
    /// Load balancers.
    pub lb: Option<RawLb>,
    /// Web servers, and the range they may scale within.
    pub web: Option<RawScaled>,
    /// Workers, and the range they may scale within.
    pub worker: Option<RawScaled>,
    /// Redis servers, and their memory budget.
    pub redis: Option<RawRedis>,
    /// DNS servers.
    pub dns: Option<RawRole>,
    /// CDN edges.
    pub cdn: Option<RawRole>,
    /// Where the DC's PostgreSQL nodes' addresses start.
    pub postgres: Option<RawPostgres>,
}

/// How many nodes of a role a DC has, and where their addresses come from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRole {
    /// How many (signed, so a negative count gets our message).
    pub count: Option<i64>,
    /// The first node's address, instead of the role's default offset.
    pub first: Option<String>,
    /// Every node's address, instead of consecutive ones.
    pub addrs: Option<Vec<String>>,
}

/// `[dc.web]` and `[dc.worker]`: a role section plus the range the controller may
/// scale the role within. Only these two roles scale (the others hold state, or are
/// entries whose addresses clients know), so only they accept the keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScaled {
    /// As [`RawRole::count`]; with a range, the starting count (`min` when absent).
    pub count: Option<i64>,
    /// As [`RawRole::first`].
    pub first: Option<String>,
    /// As [`RawRole::addrs`]; refused with a range, whose spare addresses follow
    /// the running nodes' consecutively.
    pub addrs: Option<Vec<String>>,
    /// The fewest nodes the role scales down to (signed, so a negative one gets our
    /// message); given with `max` or not at all.
    pub min: Option<i64>,
    /// The most nodes the role scales up to; their addresses are reserved.
    pub max: Option<i64>,
    /// The autoscaler's policy overrides, passed through whole ([`crate::Scale::autoscale`]):
    /// the controller knows their names and rules.
    pub autoscale: Option<toml::Table>,
}

impl RawScaled {
    /// The section's node placement, as for any role.
    pub fn role(&self) -> RawRole {
        RawRole { count: self.count, first: self.first.clone(), addrs: self.addrs.clone() }
    }
}

/// `[dc.redis]`: a role section plus each server's memory budget.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    /// As [`RawRole::count`].
    pub count: Option<i64>,
    /// As [`RawRole::first`].
    pub first: Option<String>,
    /// As [`RawRole::addrs`].
    pub addrs: Option<Vec<String>>,
    /// Each server's memory budget in MiB (signed, so a negative one gets our message).
    pub maxmemory_mb: Option<i64>,
    /// What goes first when a server reaches its budget.
    pub eviction: Option<crate::Eviction>,
}

impl RawRedis {
    /// The section's node placement, as for any role.
    pub fn role(&self) -> RawRole {
        RawRole { count: self.count, first: self.first.clone(), addrs: self.addrs.clone() }
    }
}

/// `[dc.lb]`: a role section plus the balancing algorithm.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLb {
    /// As [`RawRole::count`].
    pub count: Option<i64>,
    /// As [`RawRole::first`].
    pub first: Option<String>,
    /// As [`RawRole::addrs`].
    pub addrs: Option<Vec<String>>,
    /// How the DC's load balancers pick a web server.
    pub algorithm: Option<LbAlgorithm>,
    /// `millions lb`'s settings of the same names, passed through whole
    /// ([`crate::LbSettings`]).
    pub threads: Option<toml::Value>,
    /// As `threads`: `[dc.lb.health]`.
    pub health: Option<toml::Value>,
    /// As `threads`: `[dc.lb.outlier]`.
    pub outlier: Option<toml::Value>,
    /// As `threads`: `[dc.lb.upstream]`.
    pub upstream: Option<toml::Value>,
    /// As `threads`: `[dc.lb.limits]`.
    pub limits: Option<toml::Value>,
    /// As `threads`: `[dc.lb.rate_limit]`.
    pub rate_limit: Option<toml::Value>,
}

impl RawLb {
    /// The section's node placement, as for any role.
    pub fn role(&self) -> RawRole {
        RawRole { count: self.count, first: self.first.clone(), addrs: self.addrs.clone() }
    }

    /// The load balancer's own settings the section gives, by name.
    pub fn settings(&self) -> toml::Table {
        [
            ("threads", &self.threads),
            ("health", &self.health),
            ("outlier", &self.outlier),
            ("upstream", &self.upstream),
            ("limits", &self.limits),
            ("rate_limit", &self.rate_limit),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value.clone()?)))
        .collect()
    }
}

/// `[dc.postgres]`: PostgreSQL nodes come from the shards' placement; a DC only says
/// where their addresses start.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPostgres {
    /// The first PostgreSQL node's address, instead of offset 100.
    pub first: Option<String>,
}

/// One `[[shard]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShard {
    /// `async` or `sync`; `sync` when `survives` is given, else `async`.
    pub replication: Option<Replication>,
    /// What a synchronous shard's acknowledged writes survive: `node` or `dc`.
    pub survives: Option<Survives>,
    /// The DC of the initial primary.
    pub primary: String,
    /// The DC of each replica, one entry per replica.
    #[serde(default)]
    pub replicas: Vec<String>,
}

/// `[ports]`, as signed integers so that `0` or `70000` get our message rather than
/// the deserializer's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPorts {
    /// Load balancers' port.
    pub lb: Option<i64>,
    /// Web servers' port.
    pub web: Option<i64>,
    /// Workers' port.
    pub worker: Option<i64>,
    /// Redis servers' port.
    pub redis: Option<i64>,
    /// PostgreSQL servers' port.
    pub postgres: Option<i64>,
    /// DNS servers' port.
    pub dns: Option<i64>,
    /// WAN gateways' admin port.
    pub wan: Option<i64>,
    /// CDN edges' public HTTP port.
    pub cdn: Option<i64>,
    /// Load balancers' HTTPS port.
    pub https: Option<i64>,
}
