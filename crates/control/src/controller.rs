//! The controller as a whole: [`Controller::build`] checks the topology's
//! configurations, prepares the run directory and binds the API;
//! [`Controller::run`] starts every node, then supervises, watches the shards,
//! renews the load balancers' certificates, scrapes every node's metrics for the
//! dashboard and serves the API until shutdown,
//! and stops every node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::error::{Context as _, ControlError};
use crate::files::{ControlFile, control_file, secrets, write_json};
use crate::history::Recorder;
use crate::metrics::Metrics;
use crate::shared::{ControlOptions, Managed, Shared};
use crate::{api, dns, failover, launch, lb, renew, reshard, scrape, supervise};

/// A controller, bound, not yet started.
pub struct Controller {
    /// Shared state.
    shared: Shared,
    /// The API listener.
    listener: tokio::net::TcpListener,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("run_dir", &self.shared.opts.run_dir).finish()
    }
}

impl Controller {
    /// Prepare the run directory and bind the API.
    pub async fn build(
        opts: ControlOptions,
        shutdown: CancellationToken,
    ) -> Result<Controller, ControlError> {
        // Every node's configuration that can be checked without the network is,
        // before anything is written or bound.
        opts.history.check().map_err(ControlError::Invalid)?;
        lb::check_configs(&opts.topology)?;
        dns::check_configs(&opts.topology)?;
        crate::cdn::check_configs(&opts.topology)?;
        crate::wan::check_configs(&opts.topology)?;
        crate::scale::check_policies(&opts.topology)?;
        let logs = opts.run_dir.join("logs");
        std::fs::create_dir_all(&logs).file("creating", &logs)?;
        let secrets = secrets(&opts.run_dir)?;
        // Once per run directory: clients that trust it keep trusting it.
        crate::tls::ensure_ca(&opts.run_dir)?;
        let cluster = Cluster::load(&opts.run_dir, &opts.topology)?;
        let listener = tokio::net::TcpListener::bind(opts.api).await.map_err(|source| ControlError::Io {
            what: format!("binding the control API on {}", opts.api),
            source,
        })?;
        let api_addr = listener
            .local_addr()
            .map_err(|source| ControlError::Io { what: "reading the API's address".into(), source })?;
        let nodes = opts.topology.nodes().iter().cloned().map(Managed::new).collect();
        let metrics = Metrics::new(&opts.topology);
        let topology = Arc::new(std::sync::RwLock::new(Arc::new(opts.topology.clone())));
        let dashboard = Arc::new(Recorder::new(opts.history.clone()));
        Ok(Controller {
            shared: Shared {
                opts: Arc::new(opts),
                secrets: Arc::new(secrets),
                nodes: Arc::new(Mutex::new(nodes)),
                cluster: Arc::new(cluster),
                api_addr,
                shutdown,
                ready: Arc::new(AtomicBool::new(false)),
                metrics,
                shard_ops: Arc::default(),
                topology,
                adding: Arc::default(),
                topology_edit: Arc::default(),
                dashboard,
                alerts: Arc::default(),
                scaling: Arc::default(),
            },
            listener,
        })
    }

    /// Start every node, publish `control.json`, supervise and serve the API until
    /// shutdown; then stop every node. If start-up fails, what was started is stopped.
    pub async fn run(self) -> Result<(), ControlError> {
        let shared = self.shared;
        let api = tokio::spawn(api::serve(self.listener, shared.clone()));
        // For an operator's own Prometheus and Grafana (before control.json, so
        // `up` finds them once it finds the controller).
        if let Err(e) = crate::prometheus::write_all(&shared) {
            tracing::warn!(error = %e, "could not write the Prometheus configuration");
        }
        let file = ControlFile { pid: std::process::id(), api: shared.api_addr };
        write_json(&control_file(&shared.opts.run_dir), &file)?;
        tracing::info!(api = %shared.api_addr, topology = shared.topology().name(), "controller starting nodes");
        // Not raced against shutdown: a blocking step (initdb, a base backup)
        // cannot be abandoned half-way, so start_all checks for shutdown between
        // its steps, and what it started is stopped below either way.
        let started = launch::start_all(&shared).await;
        if let Err(e) = &started {
            tracing::error!(error = %e, "start-up failed; stopping what was started");
        } else {
            shared.ready.store(true, Ordering::SeqCst);
            tracing::info!("every node started; supervising");
            let supervisor = tokio::spawn(supervise::supervise(shared.clone()));
            let watcher = tokio::spawn(failover::watch(shared.clone()));
            let renewer = tokio::spawn(renew::watch(shared.clone()));
            let scraper = tokio::spawn(scrape::watch(shared.clone()));
            let moves = tokio::spawn(reshard::resume(shared.clone()));
            let autoscaler = tokio::spawn(crate::scale::watch(shared.clone()));
            shared.shutdown.cancelled().await;
            autoscaler.abort();
            moves.abort();
            scraper.abort();
            supervisor.abort();
            watcher.abort();
            renewer.abort();
        }
        shared.ready.store(false, Ordering::SeqCst);
        launch::stop_all(&shared).await;
        let _ = std::fs::remove_file(control_file(&shared.opts.run_dir));
        api.abort();
        tracing::info!("controller stopped");
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(url: String) -> (u16, String) {
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// A controller of the `test` preset in `dir`, its API on any port, no node
    /// started (none can be: no binary).
    async fn controller(
        dir: &std::path::Path,
        history: crate::HistoryOptions,
        shutdown: CancellationToken,
    ) -> Controller {
        let opts = ControlOptions {
            run_dir: dir.to_owned(),
            topology: topology::preset("test").unwrap(),
            api: "127.0.0.1:0".parse().unwrap(),
            exe: "/nonexistent".into(),
            durability: nodes::Durability::Fast,
            history,
        };
        Controller::build(opts, shutdown).await.unwrap()
    }

    #[tokio::test]
    async fn readyz_waits_for_every_node_and_metrics_count_nodes_restarts_failovers_and_requests() {
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let controller = controller(dir.path(), Default::default(), shutdown.clone()).await;
        let shared = controller.shared.clone();
        let base = format!("http://{}", shared.api_addr);
        let api = tokio::spawn(api::serve(controller.listener, shared.clone()));

        // Nothing started yet.
        assert_eq!(get(format!("{base}/readyz")).await.0, 503);
        assert_eq!(get(format!("{base}/healthz")).await.0, 200);
        shared.ready.store(true, Ordering::SeqCst);
        assert_eq!(get(format!("{base}/readyz")).await, (200, "ready".to_owned()));

        shared.metrics.restarted("dc1-web-1", topology::Role::Web);
        shared.metrics.failed_over();
        // The API needs the admin token; without it, refused (and counted).
        assert_eq!(get(format!("{base}/api/events")).await.0, 401);
        let token = crate::admin_token(dir.path()).unwrap();
        let events = reqwest::Client::new().get(format!("{base}/api/events")).bearer_auth(token);
        assert_eq!(events.send().await.unwrap().status(), 200);
        let (status, text) = get(format!("{base}/metrics")).await;
        assert_eq!(status, 200);
        for line in [
            "millions_control_nodes{health=\"down\"} 8",
            "millions_control_nodes{health=\"healthy\"} 0",
            "millions_control_node_restarts_total{node=\"dc1-web-1\",role=\"web\"} 1",
            "millions_control_node_restarts_total{node=\"shard0-pg-2\",role=\"postgres\"} 0",
            "millions_control_failovers_total 1",
            "millions_http_requests_total{route=\"/api/events\",method=\"GET\",status=\"200\"} 1",
            "millions_http_requests_total{route=\"/api/events\",method=\"GET\",status=\"401\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }

        // Shutting down: no longer ready.
        shutdown.cancel();
        assert_eq!(get(format!("{base}/readyz")).await, (503, "stopping".to_owned()));
        api.abort();
    }

    #[tokio::test]
    async fn the_dashboard_and_its_json_need_no_token_and_refuse_bad_input_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let controller = controller(dir.path(), Default::default(), CancellationToken::new()).await;
        let shared = controller.shared.clone();
        let base = format!("http://{}", shared.api_addr);
        let api = tokio::spawn(api::serve(controller.listener, shared.clone()));

        // The page and its assets, uPlot included, are in the binary.
        let (status, page) = get(format!("{base}/dashboard")).await;
        assert_eq!(status, 200);
        assert!(
            page.contains("/dashboard/uPlot.iife.min.js") && page.contains("/dashboard/app.js"),
            "{page}"
        );
        let (status, uplot) = get(format!("{base}/dashboard/uPlot.iife.min.js")).await;
        assert_eq!(status, 200);
        assert!(uplot.contains("uPlot"), "uPlot's script is served");

        // The state: every node of the topology (none started), the epoch.
        let (status, text) = get(format!("{base}/api/dashboard/state")).await;
        assert_eq!(status, 200, "{text}");
        let state: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(state["epoch"], 1);
        let names: Vec<&str> =
            state["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
        let topology = shared.topology();
        let expected: Vec<&str> = topology.nodes().iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, expected);
        assert!(state["nodes"].as_array().unwrap().iter().all(|n| n["health"] == "down"), "{state}");
        assert_eq!(state["shards"][0]["primary"], "shard0-pg-1");

        // The history, by name, node and time.
        let sample =
            |value| crate::history::Sample { name: "m_total".into(), labels: Default::default(), value };
        let first = shared.dashboard.record("dc1-web-1", [sample(1.0)]);
        let second = shared.dashboard.record("dc1-web-1", [sample(3.0)]);
        assert!(second > first, "every record is stamped later than the one before");
        let url = format!("{base}/api/dashboard/series?names=m_total&since={first}&node=dc1-web-1");
        let (status, text) = get(url).await;
        assert_eq!(status, 200, "{text}");
        let series: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(series["series"][0]["points"], serde_json::json!([[second, 3.0]]));
        for (query, status, says) in [
            ("names=nope,m_total", 404, "no series named nope; known: m_total"),
            ("names=m_total&since=yesterday", 400, "since must be a time in unix milliseconds"),
            ("names=m_total&since=-1", 400, "since must be a time in unix milliseconds"),
            ("names=m_total&node=ghost", 404, "no node named \\\"ghost\\\""),
            ("since=0", 400, "name the metrics"),
        ] {
            let (got, text) = get(format!("{base}/api/dashboard/series?{query}")).await;
            assert_eq!(got, status, "{query}: {text}");
            assert!(text.contains(says), "{query}: {text}");
        }

        // The live stream starts with the state (published by the scraper).
        shared.dashboard.publish(serde_json::json!({"epoch": 1}));
        let mut stream = reqwest::get(format!("{base}/api/dashboard/stream")).await.unwrap();
        assert_eq!(stream.headers()["content-type"], "text/event-stream");
        let first = stream.chunk().await.unwrap().unwrap();
        assert_eq!(String::from_utf8_lossy(&first), "event: state\ndata: {\"epoch\":1}\n\n");

        // Actions still need the token: refused, nothing done, nothing recorded.
        let c = reqwest::Client::new();
        let r = c.post(format!("{base}/api/nodes/dc1-web-1/kill")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let token = crate::admin_token(dir.path()).unwrap();
        let r = c.post(format!("{base}/api/nodes/ghost/kill")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert!(shared.cluster.events().is_empty());
        api.abort();
    }

    #[tokio::test]
    async fn each_tiers_p99_comes_from_the_increase_of_its_nodes_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let controller = controller(dir.path(), Default::default(), CancellationToken::new()).await;
        let shared = controller.shared.clone();
        let rec = &shared.dashboard;
        let bucket = |family: &str, le: &str, value: f64| crate::history::Sample {
            name: format!("{family}_bucket"),
            labels: [("le".to_owned(), le.to_owned())].into(),
            value,
        };
        let up =
            || crate::history::Sample { name: "scrape_up".into(), labels: Default::default(), value: 1.0 };
        let (http, lb) = crate::history::QUANTILE_HISTOGRAMS.into();
        // The round before: the web server had served 100 requests, the worker
        // none (no buckets yet), the load balancer 10.
        let web =
            |fast, slow, all| [bucket(http, "0.1", fast), bucket(http, "1", slow), bucket(http, "+Inf", all)];
        rec.record("dc1-web-1", web(100.0, 100.0, 100.0).into_iter().chain([up()]));
        rec.record("dc1-worker-1", [up()]);
        let lb_buckets = || [bucket(lb, "0.01", 10.0), bucket(lb, "+Inf", 10.0), bucket(http, "+Inf", 7.0)];
        rec.record("dc1-lb-1", lb_buckets().into_iter().chain([up()]));
        // This round: 100 more on the web server (50 within 0.1 s, 50 more
        // within 1 s), the worker's first 4 (within 0.1 s), nothing new at the
        // load balancer.
        let from = rec.record("dc1-web-1", web(150.0, 200.0, 200.0).into_iter().chain([up()]));
        let worker = [bucket(http, "0.1", 4.0), bucket(http, "+Inf", 4.0)];
        rec.record("dc1-worker-1", worker.into_iter().chain([up()]));
        rec.record("dc1-lb-1", lb_buckets().into_iter().chain([up()]));
        let p99: Vec<(String, f64)> = scrape::tier_p99(&shared, from)
            .into_iter()
            .map(|s| (s.labels["role"].clone(), s.value))
            .collect();
        assert_eq!(p99.len(), 2, "web and worker; nothing new at the load balancer: {p99:?}");
        assert_eq!(p99[0].0, "web");
        assert!((p99[0].1 - (0.1 + 0.9 * 49.0 / 50.0)).abs() < 1e-9, "{p99:?}");
        assert_eq!(p99[1].0, "worker");
        assert!((p99[1].1 - 0.099).abs() < 1e-9, "{p99:?}");
        // Only this round's scrapes count: a later start sees none.
        assert!(scrape::tier_p99(&shared, crate::history::now_ms() + 1000).is_empty());
    }

    #[tokio::test]
    async fn free_disk_below_the_threshold_is_one_event_per_crossing() {
        let dir = tempfile::tempdir().unwrap();
        // No disk has this much free: always below.
        let history = crate::HistoryOptions { disk_free_warning_bytes: u64::MAX, ..Default::default() };
        let controller = controller(dir.path(), history, CancellationToken::new()).await;
        let shared = controller.shared.clone();
        let client = reqwest::Client::new();
        for _ in 0..3 {
            scrape::round(&shared, &client).await;
        }
        let low: Vec<_> = shared.cluster.events().into_iter().filter(|e| e.kind == "disk-low").collect();
        assert_eq!(low.len(), 1, "one event while it stays low: {low:?}");
        assert!(low[0].detail.contains("MiB free on the run directory's filesystem"), "{:?}", low[0]);
        let free = shared.dashboard.query(&["host_disk_free_bytes"], Some("host"), 0);
        assert_eq!(free[0].points.len(), 3);
        assert!(free[0].points.iter().all(|p| p.1 > 0.0));
        // The alert rule fired once (an event), and is in the state while it holds.
        let fired: Vec<_> =
            shared.cluster.events().into_iter().filter(|e| e.kind == "alert-firing").collect();
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert!(fired[0].detail.starts_with("DiskFreeLow: ") && fired[0].node == "host", "{fired:?}");
        let state = crate::dashboard::state(&shared, &crate::status::collect(&shared).await);
        assert_eq!(state["alerts"][0]["rule"], "DiskFreeLow", "{state}");
        // The state the page streams was published, every node in it.
        let state = shared.dashboard.subscribe().borrow().clone();
        assert_eq!(state["nodes"].as_array().unwrap().len(), shared.topology().nodes().len());
    }
}
