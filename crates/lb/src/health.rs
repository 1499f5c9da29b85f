//! Active health checks: every backend's readiness path, probed on an interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::HealthSection;
use crate::pool::{Backend, Pool, Transition};

/// Probe every backend every `interval` until `stop`; `wake` probes at once (a
/// backend was added).
pub async fn run(pool: Arc<Pool>, health: HealthSection, wake: Arc<Notify>, stop: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(health.timeout_ms))
        .connect_timeout(Duration::from_millis(health.timeout_ms))
        .pool_max_idle_per_host(1)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the health-check client; no active checks");
            return;
        }
    };
    let interval = Duration::from_millis(health.interval_ms);
    loop {
        let backends = pool.backends();
        let probes = backends.iter().map(|b| probe(&client, &pool, b, &health));
        futures::future::join_all(probes).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
        }
    }
}

async fn probe(client: &reqwest::Client, pool: &Pool, backend: &Arc<Backend>, health: &HealthSection) {
    let url = format!("http://{}{}", backend.addr, health.path);
    let passed = match client.get(&url).send().await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    };
    match pool.probe(backend, passed, health.healthy_threshold, health.unhealthy_threshold) {
        Transition::BecameHealthy => tracing::info!(backend = %backend.addr, "backend healthy"),
        Transition::BecameUnhealthy => tracing::warn!(backend = %backend.addr, "backend unhealthy"),
        Transition::None => {}
    }
}
