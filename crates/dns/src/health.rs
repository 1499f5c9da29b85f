//! Active health checks of every DC's entries (its load balancers).
//!
//! Every `interval_ms` each entry's health URL (the load balancer's private
//! `/readyz`, 200 only while it has a healthy web server) is fetched with a
//! timeout; `unhealthy_threshold` failures in a row withdraw the entry,
//! `healthy_threshold` passes in a row readmit it. A DC is healthy while any of
//! its entries is.
//!
//! Entries start healthy, and the first round of probes runs at once: a server
//! that just started answers with every DC rather than with nothing, and a dead
//! entry is withdrawn after `unhealthy_threshold` rounds, as if it had just died.
//! Queries read the state through atomics only; the prober alone writes it.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{DnsConfig, HealthSection};
use crate::metrics::DnsMetrics;

/// The health of every entry of every DC, in `[[dc]]` order.
#[derive(Debug)]
pub struct HealthTable {
    /// The DCs, in configuration order (the indices placements use).
    dcs: Vec<DcHealth>,
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

/// One DC as `GET /admin/health` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DcView {
    /// The DC's name.
    pub name: String,
    /// Whether any of its entries is healthy.
    pub healthy: bool,
    /// Its entries.
    pub entries: Vec<EntryView>,
}

/// One entry as `GET /admin/health` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EntryView {
    /// The address answered for it.
    pub address: IpAddr,
    /// What is probed.
    pub health_url: String,
    /// Whether it is answered.
    pub healthy: bool,
}

impl HealthTable {
    /// Every entry of the configuration, all healthy.
    pub fn new(config: &DnsConfig) -> HealthTable {
        let dcs = config
            .dcs
            .iter()
            .map(|dc| DcHealth {
                name: dc.name.clone(),
                entries: dc
                    .entries
                    .iter()
                    .map(|e| EntryHealth {
                        address: e.address,
                        health_url: e.health_url.clone(),
                        healthy: AtomicBool::new(true),
                    })
                    .collect(),
            })
            .collect();
        HealthTable { dcs }
    }

    /// How many DCs there are.
    pub fn dc_count(&self) -> usize {
        self.dcs.len()
    }

    /// How many entries DC `dc` has.
    pub fn entry_count(&self, dc: usize) -> usize {
        self.dcs[dc].entries.len()
    }

    /// A DC's name.
    pub fn dc_name(&self, dc: usize) -> &str {
        &self.dcs[dc].name
    }

    /// Whether entry `entry` of DC `dc` is answered.
    pub fn entry_healthy(&self, dc: usize, entry: usize) -> bool {
        self.dcs[dc].entries[entry].healthy.load(Ordering::Relaxed)
    }

    /// Whether any entry of DC `dc` is healthy.
    pub fn dc_healthy(&self, dc: usize) -> bool {
        self.dcs[dc].entries.iter().any(|e| e.healthy.load(Ordering::Relaxed))
    }

    /// Whether any DC is healthy (the server is ready; else it fails open).
    pub fn any_healthy(&self) -> bool {
        (0..self.dcs.len()).any(|d| self.dc_healthy(d))
    }

    /// Every DC and entry with its state.
    pub fn views(&self) -> Vec<DcView> {
        (0..self.dcs.len())
            .map(|d| DcView {
                name: self.dcs[d].name.clone(),
                healthy: self.dc_healthy(d),
                entries: self.dcs[d]
                    .entries
                    .iter()
                    .map(|e| EntryView {
                        address: e.address,
                        health_url: e.health_url.clone(),
                        healthy: e.healthy.load(Ordering::Relaxed),
                    })
                    .collect(),
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
    let mut streaks: Vec<Vec<Streak>> =
        table.dcs.iter().map(|dc| vec![Streak::default(); dc.entries.len()]).collect();
    refresh_gauges(&table, &metrics);
    let mut ticks = tokio::time::interval(health.interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let probes = table.dcs.iter().flat_map(|dc| dc.entries.iter()).map(|e| probe(&client, &e.health_url));
        let results = tokio::select! {
            _ = stop.cancelled() => return,
            results = futures::future::join_all(probes) => results,
        };
        let mut results = results.into_iter();
        for (d, dc) in table.dcs.iter().enumerate() {
            let was_healthy = table.dc_healthy(d);
            for (i, entry) in dc.entries.iter().enumerate() {
                let passed = results.next().unwrap_or(false);
                record(&dc.name, entry, &mut streaks[d][i], passed, &health);
            }
            let healthy = table.dc_healthy(d);
            if healthy != was_healthy {
                if healthy {
                    tracing::info!(dc = %dc.name, "dc healthy: answered again");
                } else {
                    tracing::warn!(dc = %dc.name, "dc unhealthy: withdrawn from answers");
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
fn record(dc: &str, entry: &EntryHealth, streak: &mut Streak, passed: bool, health: &HealthSection) {
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
        tracing::info!(dc, entry = %entry.address, health_url = %entry.health_url, "entry healthy");
    } else if healthy && streak.failures >= health.unhealthy_threshold {
        entry.healthy.store(false, Ordering::Relaxed);
        tracing::warn!(dc, entry = %entry.address, health_url = %entry.health_url, "entry unhealthy");
    }
}

fn refresh_gauges(table: &HealthTable, metrics: &DnsMetrics) {
    for (d, dc) in table.dcs.iter().enumerate() {
        for (i, e) in dc.entries.iter().enumerate() {
            metrics.set_entry_health(d, i, e.healthy.load(Ordering::Relaxed));
        }
    }
}
