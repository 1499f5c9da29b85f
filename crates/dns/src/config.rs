//! The DNS server's configuration: read from TOML, validated before any port is
//! bound ([`crate::validate`] holds the rules).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A configuration that cannot run.
pub type ConfigError = settings::SettingsError;

/// Everything the DNS server needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The one zone this server is authoritative for (`millions.test`); every
    /// other name is refused.
    pub zone: String,
    /// UDP and TCP address of the DNS service (the same port for both). Port 0
    /// binds a free port for UDP and TCP alike (`Running::udp`, `Running::tcp`).
    pub listen: SocketAddr,
    /// The private admin listener: `/healthz`, `/readyz`, `/metrics`,
    /// `/admin/health`. Kept off the DNS address so no client reaches it.
    pub admin: SocketAddr,
    /// The app's name, relative to the zone (`www`), or absolute with a final dot
    /// (`www.millions.test.`); it answers A/AAAA with the nearest healthy DC's
    /// load balancers.
    #[serde(default = "default_app")]
    pub app: String,
    /// TTL of the app's answers, in seconds. Short, because it bounds how long
    /// resolvers keep sending users to a DC after it is withdrawn; every halving
    /// doubles the query load from resolvers (see the crate docs).
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u32,
    /// TTL of everything else (SOA, NS, glue, static records), in seconds: these
    /// change with a deploy, not a failure.
    #[serde(default = "default_static_ttl_secs")]
    pub static_ttl_secs: u32,
    /// The largest UDP answer we send, in bytes (the client's EDNS size may lower
    /// it; 512 without EDNS). 1232 avoids IP fragmentation on any path (DNS flag
    /// day 2020).
    #[serde(default = "default_max_udp_payload")]
    pub max_udp_payload: u16,
    /// The zone's name servers' addresses: the first is `ns1.<zone>`, the next
    /// `ns2.<zone>`, and so on; the apex NS records name them and their A/AAAA
    /// records are the glue.
    pub nameservers: Vec<IpAddr>,
    /// The apex SOA record's timers.
    #[serde(default)]
    pub soa: SoaSection,
    /// Extra static names (`[[record]]`), answered as configured.
    #[serde(default, rename = "record")]
    pub records: Vec<StaticRecord>,
    /// The data centers (`[[dc]]`), each with the load balancers answered for it.
    #[serde(default, rename = "dc")]
    pub dcs: Vec<DcSection>,
    /// The CDN's name, relative to the zone (`cdn`) or absolute with a final dot;
    /// absent (the default), the zone has no CDN name and nothing below changes.
    /// It exists so photo URLs can name one host that DNS sends to the nearest
    /// healthy CDN edges, with the load balancers (which serve the same `/media/`
    /// paths on the same port) as the health-checked fallback when no edge is
    /// healthy anywhere. Set together with `[[cdn_dc]]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdn: Option<String>,
    /// The CDN's edges by DC (`[[cdn_dc]]`, shaped like `[[dc]]`: `name` and
    /// `entry = [{ address, health_url }]`). Each name must be a `[[dc]]`'s: the
    /// CDN name is placed with the app's DC orders, so an edge is only ever
    /// preferred as its DC is. A DC may have no edges (then the CDN name skips it).
    /// Edges are probed like load balancers (`[health]`), on their own `/readyz`.
    #[serde(default, rename = "cdn_dc", skip_serializing_if = "Vec::is_empty")]
    pub cdn_dcs: Vec<DcSection>,
    /// Client regions (`[[region]]`): address ranges and the DCs they prefer.
    #[serde(default, rename = "region")]
    pub regions: Vec<RegionSection>,
    /// The DC order for clients in no region; empty means the order of `[[dc]]`.
    /// DCs it does not name follow in the order of `[[dc]]`.
    #[serde(default)]
    pub default_order: Vec<String>,
    /// Probing the load balancers (and the CDN edges, alike).
    #[serde(default)]
    pub health: HealthSection,
    /// The TCP listener's limits.
    #[serde(default)]
    pub tcp: TcpSection,
    /// The UDP listener.
    #[serde(default)]
    pub udp: UdpSection,
    /// The bearer token the `/admin` routes require (`Authorization: Bearer
    /// TOKEN`; at least 16 characters); the probes stay open. Absent: the admin
    /// routes are open to whoever reaches the admin address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
}

fn default_app() -> String {
    "www".into()
}
fn default_ttl_secs() -> u32 {
    5
}
fn default_static_ttl_secs() -> u32 {
    3600
}
fn default_max_udp_payload() -> u16 {
    1232
}

/// The apex SOA record (RFC 1035 3.3.13; the negative-caching TTL is RFC 2308's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoaSection {
    /// The zone's version; secondaries (none yet) transfer when it grows.
    pub serial: u32,
    /// Seconds between a secondary's checks for a new serial.
    pub refresh: u32,
    /// Seconds before a secondary retries a failed check.
    pub retry: u32,
    /// Seconds after which a secondary that cannot reach us stops answering.
    pub expire: u32,
    /// How long resolvers cache a negative answer (NXDOMAIN, NODATA), in seconds:
    /// also the TTL of the SOA record sent with one.
    pub minimum: u32,
    /// The mailbox of the zone's operator, as a name relative to the zone
    /// (`hostmaster` is `hostmaster@<zone>`).
    pub hostmaster: String,
}

impl Default for SoaSection {
    fn default() -> Self {
        SoaSection {
            serial: 1,
            refresh: 3600,
            retry: 600,
            expire: 604_800,
            minimum: 60,
            hostmaster: "hostmaster".into(),
        }
    }
}

/// A static name with its addresses (`[[record]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticRecord {
    /// The name, relative to the zone (`api`) or absolute with a final dot.
    pub name: String,
    /// Its IPv4 addresses (A records).
    #[serde(default)]
    pub a: Vec<IpAddr>,
    /// Its IPv6 addresses (AAAA records).
    #[serde(default)]
    pub aaaa: Vec<IpAddr>,
}

/// A data center (`[[dc]]`), or a DC's CDN edges (`[[cdn_dc]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DcSection {
    /// Its name (`dc1`), as regions and metrics name it (in `[[cdn_dc]]`, the
    /// name of the `[[dc]]` its edges belong to).
    pub name: String,
    /// Its load balancers (in `[[cdn_dc]]`, its CDN edges).
    #[serde(default, rename = "entry")]
    pub entries: Vec<Entry>,
}

/// One load balancer of a DC (`[[dc.entry]]`), or one CDN edge
/// (`[[cdn_dc.entry]]`: its public address, and its private `/readyz`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The address answered in DNS (the load balancer's public address): an A
    /// record for IPv4, AAAA for IPv6.
    pub address: IpAddr,
    /// Its health check: `http://ADMIN/readyz` on the load balancer's private
    /// admin port, 200 only while it has a healthy web server.
    pub health_url: String,
}

/// A client region (`[[region]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSection {
    /// Its name (for logs and errors).
    pub name: String,
    /// Its client address ranges (`127.0.11.0/24`, `2001:db8::/32`). No range
    /// may overlap another, in this region or any other.
    pub ranges: Vec<String>,
    /// Its DCs, nearest first; DCs it does not name follow in `default_order`.
    pub order: Vec<String>,
}

/// Probing every entry's health URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// Milliseconds between two probes of an entry (the first is at start).
    pub interval_ms: u64,
    /// Milliseconds a probe may take before it counts as failed; absent means
    /// `interval_ms`.
    pub timeout_ms: Option<u64>,
    /// Consecutive passing probes that readmit an unhealthy entry.
    pub healthy_threshold: u32,
    /// Consecutive failing probes that withdraw a healthy entry.
    pub unhealthy_threshold: u32,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection { interval_ms: 1000, timeout_ms: None, healthy_threshold: 2, unhealthy_threshold: 2 }
    }
}

impl HealthSection {
    /// Time between two probes of an entry.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// How long a probe may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(self.interval_ms))
    }
}

/// The TCP listener's limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpSection {
    /// Milliseconds a connection may stay idle between queries, or stalled
    /// inside one, before it is closed (RFC 7766 asks for seconds, not minutes).
    pub idle_timeout_ms: u64,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Milliseconds `Running::stop` waits for the queries in flight on TCP
    /// connections before it cuts them.
    pub stop_grace_ms: u64,
}

impl Default for TcpSection {
    fn default() -> Self {
        TcpSection { idle_timeout_ms: 10_000, max_connections: 1024, stop_grace_ms: 2000 }
    }
}

/// The UDP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpSection {
    /// Tasks receiving and answering on the UDP socket; 0 means one per CPU.
    pub workers: usize,
    /// The socket's receive and send buffers, in bytes (the kernel caps them at
    /// `net.core.rmem_max`/`wmem_max`): a burst of queries larger than the
    /// receive buffer is dropped by the kernel before we see it.
    pub buffer_bytes: usize,
}

impl Default for UdpSection {
    fn default() -> Self {
        UdpSection { workers: 0, buffer_bytes: 4 * 1024 * 1024 }
    }
}

impl DnsConfig {
    /// Read and validate a TOML file.
    pub fn load(path: &Path) -> Result<DnsConfig, ConfigError> {
        settings::load(path)
    }

    /// Parse and validate TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<DnsConfig, ConfigError> {
        settings::parse(text, origin)
    }

    /// The configuration as TOML (what a controller would write).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a DnsConfig always serializes")
    }

    /// UDP tasks to run: `udp.workers`, or one per CPU.
    pub fn udp_workers(&self) -> usize {
        match self.udp.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }

    /// The DC names in `[[dc]]` order.
    pub fn dc_names(&self) -> Vec<&str> {
        self.dcs.iter().map(|d| d.name.as_str()).collect()
    }

    /// The CDN's edges laid out like `[[dc]]`: one list per DC, in `[[dc]]`
    /// order, empty for a DC without edges (and for every DC without `cdn`).
    /// Placements index DCs by their `[[dc]]` position, so the CDN's health and
    /// answers use this layout. A `[[cdn_dc]]` naming no `[[dc]]` (refused by
    /// validation) is left out.
    pub fn cdn_edges_by_dc(&self) -> Vec<Vec<&Entry>> {
        self.dcs
            .iter()
            .map(|dc| {
                self.cdn_dcs.iter().filter(|c| c.name == dc.name).flat_map(|c| c.entries.iter()).collect()
            })
            .collect()
    }
}

/// Whether an address can be the answer to a query.
pub(crate) fn is_answerable(addr: IpAddr) -> bool {
    !addr.is_unspecified() && !addr.is_multicast()
}

/// A DC or region name: it becomes a metrics label and a log field.
pub(crate) fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
zone = "millions.test"
listen = "127.0.0.1:5300"
admin = "127.0.0.1:5301"
nameservers = ["127.0.0.53"]

[[dc]]
name = "dc1"
entry = [{ address = "127.0.1.1", health_url = "http://127.0.1.1:8001/readyz" }]
"#;

    #[test]
    fn defaults_and_round_trip() {
        let c = DnsConfig::parse(GOOD, "t").unwrap();
        assert_eq!(c.app, "www");
        assert_eq!(c.ttl_secs, 5);
        assert_eq!(c.max_udp_payload, 1232);
        assert_eq!(c.health.timeout(), c.health.interval());
        assert_eq!(c.soa.minimum, 60);
        let again = DnsConfig::parse(&c.to_toml(), "again").unwrap();
        assert_eq!(again.dcs[0].entries[0].address, c.dcs[0].entries[0].address);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = DnsConfig::parse(&format!("{GOOD}[health]\nspeed = 1\n"), "t").unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
