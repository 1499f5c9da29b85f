//! The DCs' load balancers: their configuration, and keeping them told about the
//! web servers (drain before a web server is stopped, resume once it is back).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use topology::{LbAlgorithm, LbSettings, Node, Role, Topology};

use crate::error::ControlError;
use crate::files::{config_path, write_private};
use crate::shared::Shared;

/// How long a web server's requests in flight may take to finish before it is
/// stopped anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A load balancer's admin listener (see [`Node::admin_addr`]).
pub fn admin_addr(lb: &Node) -> SocketAddr {
    lb.admin_addr().expect("a validated topology leaves a load balancer room for its admin port")
}

/// `lb`'s configuration: its DC's web servers as backends, the DC's algorithm, and
/// the settings its `[dc.lb]` section gives, checked by the load balancer's own
/// rules (an error names the DC and the setting).
pub fn config(t: &Topology, lb: &Node) -> Result<lb::LbConfig, ControlError> {
    let dc = t
        .dc(&lb.dc)
        .ok_or_else(|| ControlError::Invalid(format!("{} is in no DC of the topology", lb.name)))?;
    let backends = t.nodes_in(&lb.dc).filter(|n| n.role == Role::Web).map(|n| n.addr).collect();
    let mut config = lb::LbConfig::new(lb.addr, admin_addr(lb), backends);
    config.algorithm = match dc.lb_algorithm {
        LbAlgorithm::RoundRobin => lb::Algorithm::RoundRobin,
        LbAlgorithm::LeastRequest => lb::Algorithm::LeastRequest,
    };
    apply(&mut config, &dc.lb_settings)
        .map_err(|e| ControlError::Invalid(format!("{}'s load balancer settings ([dc.lb]): {e}", dc.name)))?;
    // From its own address, which the web servers trust with X-Forwarded-For.
    config.upstream.source_ip = Some(lb.addr.ip());
    Ok(config)
}

/// Every load balancer's configuration of `t`, checked: what `millions up` does
/// before it starts anything.
pub fn check_configs(t: &Topology) -> Result<(), ControlError> {
    for lb in t.nodes().iter().filter(|n| n.role == Role::LoadBalancer) {
        config(t, lb)?;
    }
    Ok(())
}

/// Put `settings` into `config`, each section whole (a section's fields left out
/// keep their defaults), then check the result.
fn apply(config: &mut lb::LbConfig, settings: &LbSettings) -> Result<(), String> {
    for (name, value) in &settings.0 {
        let value = value.clone();
        let what = |e: toml::de::Error| format!("[dc.lb] {name}: {e}");
        match name.as_str() {
            "threads" => config.threads = value.try_into().map_err(what)?,
            "health" => config.health = value.try_into().map_err(what)?,
            "outlier" => config.outlier = value.try_into().map_err(what)?,
            "upstream" => config.upstream = value.try_into().map_err(what)?,
            "limits" => config.limits = value.try_into().map_err(what)?,
            "rate_limit" => config.rate_limit = value.try_into().map_err(what)?,
            other => return Err(format!("{other} is not a load balancer setting")),
        }
    }
    settings::Validate::validate(config).map_err(|e| e.to_string())
}

/// `Strict-Transport-Security` lifetime the load balancers of a local run send:
/// an hour, not lb's year, because browsers keep HSTS per host name
/// (`localhost` among them), and other servers a developer runs there may be
/// plain HTTP.
const LOCAL_HSTS_SECS: u64 = 3600;

/// Write `lb`'s configuration ([`config`]) where its process reads it, with its
/// admin token and its HTTPS listener (a certificate of the run directory's CA,
/// made when missing).
pub(crate) fn write_config(shared: &Shared, lb: &Node) -> Result<PathBuf, ControlError> {
    let t = shared.topology();
    let mut config = config(&t, lb)?;
    config.admin_token = Some(shared.secrets.admin.clone());
    let (cert, key) = crate::tls::ensure_server(&shared.opts.run_dir, &t, lb)?;
    let https = lb.https_addr(t.ports().https).expect("a load balancer has an HTTPS address");
    let mut tls = lb::config::TlsSection::new(https, cert, key);
    tls.hsts_max_age_secs = LOCAL_HSTS_SECS;
    config.tls = Some(tls);
    let path = config_path(&shared.opts.run_dir, &lb.name);
    write_private(&path, &config.to_toml())?;
    Ok(path)
}

fn lbs_of(shared: &Shared, web: &Node) -> Vec<Node> {
    shared.topology().nodes_in(&web.dc).filter(|n| n.role == Role::LoadBalancer).cloned().collect()
}

fn client(timeout: Duration) -> Option<reqwest::Client> {
    reqwest::Client::builder().timeout(timeout).build().ok()
}

/// Before `web` is stopped on purpose: its DC's load balancers stop sending it new
/// requests and wait (bounded) for those it has. A load balancer that is down is
/// skipped: it sends nothing anyway.
pub(crate) async fn drain(shared: &Shared, web: &Node) {
    let Some(client) = client(DRAIN_TIMEOUT + Duration::from_secs(2)) else { return };
    for lb in lbs_of(shared, web) {
        let url = format!(
            "http://{}/admin/backends/{}/drain?timeout_ms={}",
            admin_addr(&lb),
            web.addr,
            DRAIN_TIMEOUT.as_millis()
        );
        match client.post(&url).bearer_auth(&shared.secrets.admin).send().await {
            Ok(r) => tracing::info!(lb = lb.name, web = web.name, status = r.status().as_u16(), "drained"),
            Err(e) => {
                tracing::debug!(lb = lb.name, web = web.name, error = %e, "no drain (load balancer down)")
            }
        }
    }
}

/// Tell `dc`'s load balancers its web servers as the topology has them now
/// (after a scale): a new one gets requests once their own probe passes, one
/// gone gets none. A load balancer that is down reads the list from its
/// configuration when it starts again.
pub(crate) async fn set_backends(shared: &Shared, dc: &str) {
    let Some(client) = client(Duration::from_secs(5)) else { return };
    let t = shared.topology();
    let backends: Vec<SocketAddr> = t.nodes_in(dc).filter(|n| n.role == Role::Web).map(|n| n.addr).collect();
    for lb in t.nodes_in(dc).filter(|n| n.role == Role::LoadBalancer) {
        let url = format!("http://{}/admin/backends", admin_addr(lb));
        let body = serde_json::json!({ "backends": backends });
        match client.put(&url).bearer_auth(&shared.secrets.admin).json(&body).send().await {
            Ok(r) if r.status().is_success() => tracing::info!(lb = lb.name, ?backends, "backends set"),
            Ok(r) => tracing::warn!(lb = lb.name, status = r.status().as_u16(), "backends refused"),
            Err(e) => tracing::debug!(lb = lb.name, error = %e, "backends not set (load balancer down)"),
        }
    }
}

/// After `web` (re)started: its DC's load balancers take it back (a drain is
/// undone; the health checks readmit it).
pub(crate) async fn resume(shared: &Shared, web: &Node) {
    let Some(client) = client(Duration::from_secs(2)) else { return };
    for lb in lbs_of(shared, web) {
        let url = format!("http://{}/admin/backends/{}/resume", admin_addr(&lb), web.addr);
        if let Err(e) = client.post(&url).bearer_auth(&shared.secrets.admin).send().await {
            tracing::debug!(lb = lb.name, web = web.name, error = %e, "no resume (load balancer down)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test preset with `lb = { count = 1 }` of its first DC replaced by `section`.
    fn with_lb(section: &str) -> Topology {
        let text = topology::preset_text("test").unwrap();
        assert!(text.contains("lb = { count = 1 }"), "the test preset has a load balancer");
        topology::parse(&text.replacen("lb = { count = 1 }", section, 1), "t").unwrap()
    }

    fn first_lb(t: &Topology) -> &Node {
        t.nodes().iter().find(|n| n.role == Role::LoadBalancer).unwrap()
    }

    #[test]
    fn a_dc_s_settings_reach_its_load_balancer_and_the_rest_keep_their_defaults() {
        let t = with_lb(
            r#"lb = { count = 1, algorithm = "least_request", threads = 3, health = { interval_ms = 250, unhealthy_threshold = 4 }, rate_limit = { per_second = 20, burst = 5 } }"#,
        );
        let lb = first_lb(&t);
        let c = config(&t, lb).unwrap();
        let defaults = lb::LbConfig::new(lb.addr, admin_addr(lb), Vec::new());
        assert_eq!(c.algorithm, lb::Algorithm::LeastRequest);
        assert_eq!(c.threads, 3);
        assert_eq!((c.health.interval_ms, c.health.unhealthy_threshold), (250, 4));
        assert_eq!(c.health.path, defaults.health.path, "a field left out keeps its default");
        assert_eq!((c.rate_limit.per_second, c.rate_limit.burst), (20, 5));
        assert_eq!(c.limits.max_body_bytes, defaults.limits.max_body_bytes, "a section left out too");
        assert!(
            !c.backends.is_empty() && c.backends.iter().all(|b| t.nodes_in(&lb.dc).any(|n| n.addr == *b))
        );
        // Backend connections come from its own address (what the web servers trust),
        // even with an [upstream] section of the DC's.
        assert_eq!(c.upstream.source_ip, Some(lb.addr.ip()));
        let t = with_lb("lb = { count = 1, upstream = { max_retries = 1 } }");
        assert_eq!(config(&t, first_lb(&t)).unwrap().upstream.source_ip, Some(first_lb(&t).addr.ip()));
        check_configs(&t).unwrap();
    }

    #[test]
    fn the_documented_example_holds() {
        let doc = include_str!("../../../docs/TOPOLOGY.md");
        let example = doc
            .split("```toml\n")
            .filter_map(|block| block.split("```").next())
            .find(|block| block.contains("health = "))
            .expect("docs/TOPOLOGY.md shows [dc.lb] settings");
        let t = topology::parse(&format!("name = \"doc\"\n{example}[[shard]]\nprimary = \"dc1\"\n"), "doc")
            .unwrap();
        let c = config(&t, first_lb(&t)).unwrap();
        assert_eq!((c.health.interval_ms, c.outlier.consecutive_failures, c.rate_limit.burst), (500, 3, 50));
    }

    #[test]
    fn bad_settings_are_refused_naming_the_dc_and_the_setting() {
        for (section, expected) in [
            ("lb = { count = 1, health = { interval_ms = 0 } }", "health.interval_ms"),
            ("lb = { count = 1, threads = 0 }", "threads"),
            ("lb = { count = 1, threads = \"many\" }", "[dc.lb] threads"),
            ("lb = { count = 1, health = { intervl_ms = 5 } }", "unknown field `intervl_ms`"),
            ("lb = { count = 1, outlier = 5 }", "[dc.lb] outlier"),
            ("lb = { count = 1, rate_limit = { per_second = 5 } }", "rate_limit.burst"),
            ("lb = { count = 1, limits = { max_header_bytes = 1.5 } }", "[dc.lb] limits"),
        ] {
            let t = with_lb(section);
            let e = format!("{:#}", check_configs(&t).unwrap_err());
            assert!(e.contains("load balancer settings ([dc.lb])") && e.contains(expected), "{section}: {e}");
            let dc = &first_lb(&t).dc;
            assert!(e.starts_with(&format!("{dc}'s")), "{section}: {e}");
        }
    }
}
