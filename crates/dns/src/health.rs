//! Active health checks of every DC's entries: its load balancers, and its CDN
//! edges when the zone has a CDN name.
//!
//! Every `interval_ms` each entry's health URL (a load balancer's private
//! `/readyz`, 200 only while it has a healthy web server; an edge's own
//! `/readyz`) is fetched with a timeout; `unhealthy_threshold` failures in a row
//! withdraw the entry, `healthy_threshold` passes in a row readmit it. Load
//! balancers and edges are probed alike, in the same rounds, with the same
//! `[health]` settings: only what their health means differs.
//!
//! The table holds two groups, one per [`Service`], each laid out by `[[dc]]`
//! (the indices placements use): the app's load balancers, and the CDN's edges
//! (a DC without edges has an empty list, and is never healthy for the CDN). A
//! DC is healthy for a service while any of its entries in that group is.
//!
//! Entries start healthy, and the first round of probes runs at once: a server
//! that just started answers with every DC rather than with nothing, and a dead
//! entry is withdrawn after `unhealthy_threshold` rounds, as if it had just died.
//! Queries read the state through atomics only; the prober alone writes it.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{DnsConfig, Entry, HealthSection};
use crate::metrics::DnsMetrics;

/// Which name a group of entries answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// The app's name: the DCs' load balancers (`[[dc]]`).
    #[default]
    App,
    /// The CDN's name: the DCs' CDN edges (`[[cdn_dc]]`).
    Cdn,
}

impl Service {
    /// Both services, in the order the table, the prober and the admin API use.
    pub const ALL: [Service; 2] = [Service::App, Service::Cdn];

    /// Its name in metrics, logs and the admin API.
    pub fn label(self) -> &'static str {
        match self {
            Service::App => "app",
            Service::Cdn => "cdn",
        }
    }
}

/// The health of every entry of every DC, by service, in `[[dc]]` order.
#[derive(Debug)]
pub struct HealthTable {
    /// One group per [`Service`] (indexed by it), each with every DC in
    /// configuration order (the indices placements use).
    groups: [Vec<DcHealth>; 2],
}

/// One DC's entries.
#[derive(Debug)]
struct DcHealth {
    /// The DC's name, for logs, metrics and the admin API.
    name: String,
    /// Its entries, in configuration order.
    entries: Vec<EntryHealth>,
}

/// One entry's state.
#[derive(Debug)]
struct EntryHealth {
    /// The address answered for it.
    address: IpAddr,
    /// What is probed.
    health_url: String,
    /// Whether it is answered (true until proven otherwise).
    healthy: AtomicBool,
}

/// One DC's entries of one service as `GET /admin/health` shows them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DcView {
    /// The DC's name.
    pub name: String,
    /// Whose entries these are: `app` (load balancers) or `cdn` (CDN edges);
    /// a view without it (an older server's) is the app's.
    #[serde(default)]
    pub service: Service,
    /// Whether any of its entries is healthy.
    pub healthy: bool,
    /// Its entries.
    pub entries: Vec<EntryView>,
}

/// One entry as `GET /admin/health` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryView {
    /// The address answered for it.
    pub address: IpAddr,
    /// What is probed.
    pub health_url: String,
    /// Whether it is answered.
    pub healthy: bool,
}

impl HealthTable {
    /// Every entry of the configuration (load balancers, and CDN edges when
    /// configured), all healthy.
    pub fn new(config: &DnsConfig) -> HealthTable {
        let group = |entries: Vec<Vec<&Entry>>| -> Vec<DcHealth> {
            config
                .dcs
                .iter()
                .zip(entries)
                .map(|(dc, entries)| DcHealth {
                    name: dc.name.clone(),
                    entries: entries
                        .into_iter()
                        .map(|e| EntryHealth {
                            address: e.address,
                            health_url: e.health_url.clone(),
                            healthy: AtomicBool::new(true),
                        })
                        .collect(),
                })
                .collect()
        };
        let app = group(config.dcs.iter().map(|dc| dc.entries.iter().collect()).collect());
        let cdn = group(config.cdn_edges_by_dc());
        HealthTable { groups: [app, cdn] }
    }

    fn group(&self, service: Service) -> &[DcHealth] {
        &self.groups[service as usize]
    }

    /// How many DCs there are (`[[dc]]`; the same for both services).
    pub fn dc_count(&self) -> usize {
        self.group(Service::App).len()
    }

    /// How many entries DC `dc` has for `service` (0: a DC without CDN edges).
    pub fn entry_count(&self, service: Service, dc: usize) -> usize {
        self.group(service)[dc].entries.len()
    }

    /// A DC's name.
    pub fn dc_name(&self, dc: usize) -> &str {
        &self.group(Service::App)[dc].name
    }

    /// Whether entry `entry` of DC `dc` is answered for `service`.
    pub fn entry_healthy(&self, service: Service, dc: usize, entry: usize) -> bool {
        self.group(service)[dc].entries[entry].healthy.load(Ordering::Relaxed)
    }

    /// Whether any of DC `dc`'s entries for `service` is healthy (never, for a
    /// DC without CDN edges).
    pub fn dc_healthy(&self, service: Service, dc: usize) -> bool {
        self.group(service)[dc].entries.iter().any(|e| e.healthy.load(Ordering::Relaxed))
    }

    /// Whether any DC is healthy for `service` (for the app: else its name
    /// fails open; for the CDN: else its name answers the load balancers).
    pub fn any_healthy(&self, service: Service) -> bool {
        (0..self.dc_count()).any(|d| self.dc_healthy(service, d))
    }

    /// Every DC with its entries and their state: the app's (every DC) first,
    /// then the CDN's (only DCs with edges), each marked with its service.
    pub fn views(&self) -> Vec<DcView> {
        Service::ALL
            .into_iter()
            .flat_map(|service| {
                self.group(service).iter().enumerate().filter(|(_, dc)| !dc.entries.is_empty()).map(
                    move |(d, dc)| DcView {
                        name: dc.name.clone(),
                        service,
                        healthy: self.dc_healthy(service, d),
                        entries: dc
                            .entries
                            .iter()
                            .map(|e| EntryView {
                                address: e.address,
                                health_url: e.health_url.clone(),
                                healthy: e.healthy.load(Ordering::Relaxed),
                            })
                            .collect(),
                    },
                )
            })
            .collect()
    }
}

/// Consecutive probe results of one entry, kept by the prober.
#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    /// Passes in a row.
    passes: u32,
    /// Failures in a row.
    failures: u32,
}

/// Probe every entry every interval until `stop`.
pub async fn run(
    table: Arc<HealthTable>,
    health: HealthSection,
    metrics: DnsMetrics,
    stop: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .timeout(health.timeout())
        .connect_timeout(health.timeout())
        .pool_max_idle_per_host(1)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the health-check client; entries stay healthy");
            return;
        }
    };
    let mut streaks: Vec<Vec<Vec<Streak>>> = table
        .groups
        .iter()
        .map(|group| group.iter().map(|dc| vec![Streak::default(); dc.entries.len()]).collect())
        .collect();
    refresh_gauges(&table, &metrics);
    let mut ticks = tokio::time::interval(health.interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let probes = table
            .groups
            .iter()
            .flatten()
            .flat_map(|dc| dc.entries.iter())
            .map(|e| probe(&client, &e.health_url));
        let results = tokio::select! {
            _ = stop.cancelled() => return,
            results = futures::future::join_all(probes) => results,
        };
        let mut results = results.into_iter();
        for service in Service::ALL {
            for (d, dc) in table.group(service).iter().enumerate() {
                let was_healthy = table.dc_healthy(service, d);
                for (i, entry) in dc.entries.iter().enumerate() {
                    let passed = results.next().unwrap_or(false);
                    record(service, &dc.name, entry, &mut streaks[service as usize][d][i], passed, &health);
                }
                let healthy = table.dc_healthy(service, d);
                if healthy != was_healthy {
                    let service = service.label();
                    if healthy {
                        tracing::info!(dc = %dc.name, service, "dc healthy: answered again");
                    } else {
                        tracing::warn!(dc = %dc.name, service, "dc unhealthy: withdrawn from answers");
                    }
                }
            }
        }
        refresh_gauges(&table, &metrics);
    }
}

/// One probe: does the health URL answer 2xx within the timeout?
async fn probe(client: &reqwest::Client, url: &str) -> bool {
    match client.get(url).send().await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

/// Apply one probe result to an entry; log a change of state.
fn record(
    service: Service,
    dc: &str,
    entry: &EntryHealth,
    streak: &mut Streak,
    passed: bool,
    health: &HealthSection,
) {
    let service = service.label();
    if passed {
        streak.passes = streak.passes.saturating_add(1);
        streak.failures = 0;
    } else {
        streak.failures = streak.failures.saturating_add(1);
        streak.passes = 0;
    }
    let healthy = entry.healthy.load(Ordering::Relaxed);
    if !healthy && streak.passes >= health.healthy_threshold {
        entry.healthy.store(true, Ordering::Relaxed);
        tracing::info!(dc, service, entry = %entry.address, health_url = %entry.health_url, "entry healthy");
    } else if healthy && streak.failures >= health.unhealthy_threshold {
        entry.healthy.store(false, Ordering::Relaxed);
        tracing::warn!(dc, service, entry = %entry.address, health_url = %entry.health_url, "entry unhealthy");
    }
}

fn refresh_gauges(table: &HealthTable, metrics: &DnsMetrics) {
    for service in Service::ALL {
        for (d, dc) in table.group(service).iter().enumerate() {
            for (i, e) in dc.entries.iter().enumerate() {
                metrics.set_entry_health(service, d, i, e.healthy.load(Ordering::Relaxed));
            }
        }
    }
}
