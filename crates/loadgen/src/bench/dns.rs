//! Reaching the app by name, as users do: each client region resolves the app's
//! name through the DNS servers from an address of its own range (so GeoDNS
//! places it), with a real resolver that caches answers for their TTL, and sends
//! its requests from that address through a client that is replaced every TTL
//! (so connections follow DNS when a DC is withdrawn or readmitted). Which DC
//! answered each request is told from the peer address, per second.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use serde::Serialize;

use super::error::BenchError;

/// How the bench reaches the app by name (`BenchConfig::dns`).
#[derive(Debug, Clone)]
pub struct DnsMode {
    /// The app's name (`www.millions.test`).
    pub name: String,
    /// The load balancers' public port.
    pub port: u16,
    /// Whether that port speaks HTTPS (the load balancers' certificates name
    /// the app, so a client that trusts their CA checks them).
    pub https: bool,
    /// The DNS servers, asked in turn.
    pub servers: Vec<SocketAddr>,
    /// The client regions: user `i` belongs to region `i mod R` for the whole run.
    pub regions: Vec<ClientRegion>,
    /// Every DC's address range, to tell which DC answered a request.
    pub dcs: Vec<DcRange>,
    /// How long a region's HTTP client (and its pooled connections) lives: the
    /// DNS answers' TTL.
    pub ttl: Duration,
}

/// A client region: its name and the address its users' queries and requests
/// come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRegion {
    /// As in the topology (`west`).
    pub name: String,
    /// An address of the region's range.
    pub source: IpAddr,
}

/// A DC's address range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcRange {
    /// The DC's name.
    pub name: String,
    /// The range's network address.
    pub network: IpAddr,
    /// The range's prefix length.
    pub prefix: u8,
}

impl DcRange {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask =
                    if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix.min(32))) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask =
                    if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix.min(128))) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl DnsMode {
    /// The base URL every region's users use (`https://www.millions.test:8443`),
    /// once per region: user `i` goes through entry `i mod R`, its region's.
    pub fn targets(&self) -> Vec<String> {
        let scheme = if self.https { "https" } else { "http" };
        vec![format!("{scheme}://{}:{}", self.name, self.port); self.regions.len()]
    }

    /// Refuse what cannot work, naming it.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::Invalid(m));
        if self.name.is_empty() || !self.name.contains('.') {
            return bad(format!("the app's name `{}` is not a domain name", self.name));
        }
        if self.servers.is_empty() {
            return bad("no DNS servers to resolve the app's name through".into());
        }
        if self.regions.is_empty() {
            return bad("no client regions: users need an address to come from".into());
        }
        if self.ttl.is_zero() {
            return bad("the DNS TTL must be above zero".into());
        }
        Ok(())
    }

    /// The DC whose range holds `ip`.
    pub fn dc_of(&self, ip: IpAddr) -> Option<&str> {
        self.dcs.iter().find(|d| d.contains(ip)).map(|d| d.name.as_str())
    }
}

/// A region's resolver, as reqwest asks for names.
struct RegionResolver(TokioResolver);

impl reqwest::dns::Resolve for RegionResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        Box::pin(async move {
            let lookup = resolver.lookup_ip(name.as_str()).await?;
            let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A resolver asking `servers` from `source` (UDP, then TCP), caching answers
/// for their TTL, never reading the hosts file.
fn resolver(servers: &[SocketAddr], source: IpAddr) -> Result<TokioResolver, BenchError> {
    let name_servers = servers
        .iter()
        .map(|server| {
            let connection = |mut c: ConnectionConfig| {
                c.port = server.port();
                c.bind_addr = Some(SocketAddr::new(source, 0));
                c
            };
            NameServerConfig::new(
                server.ip(),
                true,
                vec![connection(ConnectionConfig::udp()), connection(ConnectionConfig::tcp())],
            )
        })
        .collect();
    let config = ResolverConfig::from_parts(None, Vec::new(), name_servers);
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    let options = builder.options_mut();
    options.use_hosts_file = ResolveHosts::Never;
    options.timeout = Duration::from_secs(1);
    options.attempts = 2;
    builder.build().map_err(|e| BenchError::Setup(format!("a resolver for {source}: {e}")))
}

/// One region's HTTP client, rebuilt once it is a TTL old.
pub(crate) struct RegionClient {
    /// The client and when it was built.
    current: RwLock<(reqwest::Client, Instant)>,
    /// Builds a fresh client (same resolver, cache and source address).
    build: Box<dyn Fn() -> Result<reqwest::Client, BenchError> + Send + Sync>,
    /// A client's lifetime.
    ttl: Duration,
}

impl RegionClient {
    /// A client for `region`, from `make` (a builder with the timeouts set).
    pub(crate) fn new(
        mode: &DnsMode,
        region: &ClientRegion,
        make: impl Fn() -> reqwest::ClientBuilder + Send + Sync + 'static,
    ) -> Result<RegionClient, BenchError> {
        let resolver = Arc::new(RegionResolver(resolver(&mode.servers, region.source)?));
        let source = region.source;
        let name = region.name.clone();
        let build = move || {
            make()
                .local_address(source)
                .dns_resolver(resolver.clone())
                .build()
                .map_err(|e| BenchError::Setup(format!("the HTTP client of region {name}: {e}")))
        };
        let first = build()?;
        Ok(RegionClient {
            current: RwLock::new((first, Instant::now())),
            build: Box::new(build),
            ttl: mode.ttl,
        })
    }

    /// The client to use now (a fresh one every TTL; requests in flight finish on
    /// the old one).
    pub(crate) fn get(&self) -> reqwest::Client {
        {
            let current = self.current.read().expect("client lock poisoned");
            if current.1.elapsed() < self.ttl {
                return current.0.clone();
            }
        }
        let mut current = self.current.write().expect("client lock poisoned");
        if current.1.elapsed() >= self.ttl {
            match (self.build)() {
                Ok(client) => *current = (client, Instant::now()),
                Err(e) => {
                    tracing::warn!(error = %e, "rebuilding a region's client failed; keeping the old one")
                }
            }
        }
        current.0.clone()
    }
}

/// Requests answered per DC, per second since the counter started.
#[derive(Debug)]
pub(crate) struct Traffic {
    /// When second 0 began.
    origin: Instant,
    /// The DCs' ranges.
    dcs: Vec<DcRange>,
    /// (second, DC or `unknown`) → answers.
    counts: Mutex<BTreeMap<(u64, String), u64>>,
}

/// Traffic per DC in the measured window (`Report::traffic`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrafficReport {
    /// Answers per DC over the window (`unknown`: from no DC's range).
    pub totals: BTreeMap<String, u64>,
    /// For each second of the window, from its start, answers per DC.
    pub per_second: Vec<BTreeMap<String, u64>>,
}

impl Traffic {
    pub(crate) fn new(dcs: Vec<DcRange>) -> Traffic {
        Traffic { origin: Instant::now(), dcs, counts: Mutex::default() }
    }

    /// Count an answer from `peer`.
    pub(crate) fn count(&self, peer: Option<SocketAddr>) {
        let dc = peer
            .and_then(|p| self.dcs.iter().find(|d| d.contains(p.ip())))
            .map_or_else(|| "unknown".to_owned(), |d| d.name.clone());
        let second = self.origin.elapsed().as_secs();
        *self.counts.lock().expect("traffic lock poisoned").entry((second, dc)).or_default() += 1;
    }

    /// The window from `from` for `length`, second by second.
    pub(crate) fn report(&self, from: Instant, length: Duration) -> TrafficReport {
        let first = from.saturating_duration_since(self.origin).as_secs();
        let seconds = length.as_secs_f64().ceil() as u64;
        let mut report =
            TrafficReport { per_second: vec![BTreeMap::new(); seconds as usize], ..Default::default() };
        for ((second, dc), n) in self.counts.lock().expect("traffic lock poisoned").iter() {
            let Some(i) = second.checked_sub(first).filter(|i| *i < seconds) else { continue };
            *report.per_second[i as usize].entry(dc.clone()).or_default() += n;
            *report.totals.entry(dc.clone()).or_default() += n;
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(name: &str, net: [u8; 4], prefix: u8) -> DcRange {
        DcRange { name: name.into(), network: IpAddr::from(net), prefix }
    }

    #[test]
    fn an_address_is_placed_in_its_dc_range() {
        let dc1 = range("dc1", [127, 0, 1, 0], 24);
        assert!(dc1.contains(IpAddr::from([127, 0, 1, 10])));
        assert!(!dc1.contains(IpAddr::from([127, 0, 2, 10])));
        assert!(range("all", [0, 0, 0, 0], 0).contains(IpAddr::from([10, 1, 2, 3])));
        assert!(!dc1.contains("::1".parse().unwrap()));
        let mode = DnsMode {
            name: "www.millions.test".into(),
            port: 8000,
            https: false,
            servers: vec!["127.0.1.5:8053".parse().unwrap()],
            regions: vec![
                ClientRegion { name: "west".into(), source: IpAddr::from([127, 0, 11, 2]) },
                ClientRegion { name: "east".into(), source: IpAddr::from([127, 0, 12, 2]) },
            ],
            dcs: vec![dc1, range("dc2", [127, 0, 2, 0], 24)],
            ttl: Duration::from_secs(5),
        };
        assert_eq!(mode.dc_of(IpAddr::from([127, 0, 2, 10])), Some("dc2"));
        assert_eq!(mode.dc_of(IpAddr::from([127, 0, 3, 10])), None);
        assert_eq!(mode.targets(), ["http://www.millions.test:8000", "http://www.millions.test:8000"]);
        let secure = DnsMode { https: true, port: 8443, ..mode.clone() };
        assert_eq!(secure.targets()[0], "https://www.millions.test:8443");
        mode.validate().unwrap();
        let bad = DnsMode { servers: vec![], ..mode.clone() };
        assert!(bad.validate().unwrap_err().to_string().contains("no DNS servers"));
        let bad = DnsMode { name: "localhost".into(), ..mode };
        assert!(bad.validate().unwrap_err().to_string().contains("not a domain name"));
    }

    #[test]
    fn traffic_is_counted_per_second_of_the_window() {
        let t = Traffic::new(vec![range("dc1", [127, 0, 1, 0], 24)]);
        t.count(Some("127.0.1.10:8000".parse().unwrap()));
        t.count(Some("127.0.9.10:8000".parse().unwrap()));
        t.count(None);
        let r = t.report(t.origin, Duration::from_secs(2));
        assert_eq!(r.totals["dc1"], 1);
        assert_eq!(r.totals["unknown"], 2);
        assert_eq!(r.per_second.len(), 2);
        assert_eq!(r.per_second[0]["dc1"], 1);
        // A window that starts later leaves the earlier seconds out.
        assert!(t.report(t.origin + Duration::from_secs(5), Duration::from_secs(1)).totals.is_empty());
    }
}
