//! The CDN's name (`cdn` with `[[cdn_dc]]`): the nearest DC's healthy edges,
//! the next DC's when a DC's edges are all down, the load balancers (what the
//! app's name answers) when no edge is healthy anywhere, and fail open only with
//! every load balancer down too; the app's name never changes with the edges.
//! Health URLs are small HTTP servers of the test's own that answer 200 or 503
//! on command.

mod support;

use std::net::IpAddr;

use dns::{DcView, DnsConfig, Service};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::*;
use testkit::eventually;

/// Region one (127.0.11.0/24) prefers dc1 then dc2; region two (127.0.12.0/24)
/// dc2 then dc1; everyone else dc3 then dc1, dc2.
const REGION_ONE: &str = "127.0.11.7";
const REGION_TWO: &str = "127.0.12.7";
const ELSEWHERE: &str = "127.0.0.1";

/// Every health URL of the test: the load balancers' by DC, and the edges'.
struct Fleet {
    /// dc1's, dc2's and dc3's load balancers (one URL for both of a DC's).
    lbs: [HealthUrl; 3],
    /// dc1's two edges, one URL each.
    dc1_edges: [HealthUrl; 2],
    /// dc2's one edge. dc3 has none.
    dc2_edge: HealthUrl,
}

impl Fleet {
    async fn start() -> Fleet {
        Fleet {
            lbs: [HealthUrl::start().await, HealthUrl::start().await, HealthUrl::start().await],
            dc1_edges: [HealthUrl::start().await, HealthUrl::start().await],
            dc2_edge: HealthUrl::start().await,
        }
    }

    fn edges(&self) -> impl Iterator<Item = &HealthUrl> {
        self.dc1_edges.iter().chain([&self.dc2_edge])
    }
}

fn config(f: &Fleet, cdn: bool) -> DnsConfig {
    let (top, edges) = if cdn {
        (
            r#"cdn = "cdn""#.to_owned(),
            format!(
                r#"
[[cdn_dc]]
name = "dc2"
entry = [{{ address = "127.0.2.51", health_url = "{e2}" }}]
[[cdn_dc]]
name = "dc1"
entry = [{{ address = "127.0.1.51", health_url = "{e1a}" }}, {{ address = "127.0.1.52", health_url = "{e1b}" }}]
"#,
                e1a = f.dc1_edges[0].url,
                e1b = f.dc1_edges[1].url,
                e2 = f.dc2_edge.url,
            ),
        )
    } else {
        (String::new(), String::new())
    };
    let text = config_text_by_dc([&f.lbs[0].url, &f.lbs[1].url, &f.lbs[2].url], &top, &edges);
    let config = DnsConfig::parse(&text, "test").unwrap();
    // What a controller writes reads back the same.
    let again = DnsConfig::parse(&config.to_toml(), "again").unwrap();
    assert_eq!(again.cdn, config.cdn);
    assert_eq!(again.cdn_dcs.len(), config.cdn_dcs.len());
    config
}

async fn server(f: &Fleet) -> dns::Running {
    dns::start(config(f, true), None).await.unwrap()
}

/// The A addresses of `name` as a client at `source` gets them, after checking
/// that every record is owned by `name` (a resolver drops any other).
async fn a(dns: &dns::Running, name: &str, source: &str) -> Vec<IpAddr> {
    let answer = ask_udp(dns.udp, source, &query(name, RecordType::A, None)).await;
    assert!(
        answer.answers.iter().all(|r| r.name.to_string() == name),
        "records not owned by {name}: {answer}"
    );
    addresses(&answer)
}

async fn cdn(dns: &dns::Running, source: &str) -> Vec<IpAddr> {
    a(dns, "cdn.millions.test.", source).await
}

async fn www(dns: &dns::Running, source: &str) -> Vec<IpAddr> {
    a(dns, "www.millions.test.", source).await
}

async fn admin_health(dns: &dns::Running) -> Vec<DcView> {
    reqwest::get(format!("http://{}/admin/health", dns.admin)).await.unwrap().json().await.unwrap()
}

/// The app's answers with every load balancer healthy.
async fn assert_app_unchanged(dns: &dns::Running) {
    assert_eq!(www(dns, REGION_ONE).await, ips(&["127.0.1.1", "127.0.1.2"]));
    assert_eq!(www(dns, REGION_TWO).await, ips(&["127.0.2.1", "127.0.2.2"]));
    assert_eq!(www(dns, ELSEWHERE).await, ips(&["127.0.3.1", "127.0.3.2"]));
}

#[tokio::test]
async fn the_cdn_name_answers_the_nearest_dcs_edges_and_skips_dcs_without_edges() {
    let f = Fleet::start().await;
    let dns = server(&f).await;
    let dc1_edges = ips(&["127.0.1.51", "127.0.1.52"]);
    assert_eq!(cdn(&dns, REGION_ONE).await, dc1_edges);
    assert_eq!(cdn(&dns, REGION_TWO).await, ips(&["127.0.2.51"]));
    // dc3 comes first for everyone else, but has no edges: dc1, next in the order.
    assert_eq!(cdn(&dns, ELSEWHERE).await, dc1_edges);
    assert_app_unchanged(&dns).await;

    // Authoritative, the app's TTL, and the placement's ECS scope.
    let answer =
        ask_udp(dns.udp, ELSEWHERE, &query_with_ecs("CDN.millions.test.", RecordType::A, "127.0.12.0/24"))
            .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert_eq!(addresses(&answer), ips(&["127.0.2.51"]));
    assert!(answer.answers.iter().all(|r| r.ttl == 5), "ttl_secs: {answer}");
    assert_eq!(ecs_of(&answer), Some(("127.0.12.0".parse().unwrap(), 24, 24)));
    // Over TCP too; ANY answers the edges; the edges are IPv4 only: AAAA is NODATA.
    let tcp = ask_tcp(dns.tcp, &query("cdn.millions.test.", RecordType::A, None)).await;
    assert_eq!(addresses(&tcp), dc1_edges);
    let any = ask_udp(dns.udp, REGION_ONE, &query("cdn.millions.test.", RecordType::ANY, None)).await;
    assert_eq!(addresses(&any), dc1_edges);
    let aaaa = ask_udp(dns.udp, REGION_ONE, &query("cdn.millions.test.", RecordType::AAAA, None)).await;
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    assert!(aaaa.answers.is_empty(), "{aaaa}");
    assert_eq!(aaaa.authorities[0].record_type(), RecordType::SOA);

    // Counted by DC; the app's counter is the app's alone.
    assert!(metric(dns.admin, r#"millions_dns_cdn_answers_total{dc="dc1"}"#).await >= 3.0);
    assert!(metric(dns.admin, r#"millions_dns_cdn_answers_total{dc="dc2"}"#).await >= 2.0);
    assert_eq!(metric(dns.admin, r#"millions_dns_app_answers_total{dc="dc1"}"#).await, 1.0);
    assert_eq!(metric(dns.admin, r#"millions_dns_cdn_fallback_total{dc="dc1"}"#).await, 0.0);
    // The admin API shows the edges, marked as the CDN's, after the app's DCs.
    let views = admin_health(&dns).await;
    let services: Vec<(&str, Service)> = views.iter().map(|v| (v.name.as_str(), v.service)).collect();
    assert_eq!(
        services,
        [
            ("dc1", Service::App),
            ("dc2", Service::App),
            ("dc3", Service::App),
            ("dc1", Service::Cdn),
            ("dc2", Service::Cdn)
        ]
    );
    assert_eq!(views[3].entries.len(), 2);
    assert!(views.iter().all(|v| v.healthy));
    dns.stop().await;
}

#[tokio::test]
async fn edges_down_move_the_cdn_name_to_the_next_dc_then_to_the_load_balancers() {
    let f = Fleet::start().await;
    let dns = server(&f).await;
    let dc1_edges = ips(&["127.0.1.51", "127.0.1.52"]);
    let dc2_edge = ips(&["127.0.2.51"]);
    assert_eq!(cdn(&dns, REGION_ONE).await, dc1_edges);

    // One of dc1's edges fails: dc1 still answers, without it.
    f.dc1_edges[0].set(false);
    eventually("dc1's first edge withdrawn", async || cdn(&dns, REGION_ONE).await == ips(&["127.0.1.52"]))
        .await;
    // Both fail: the client's next DC with an edge answers.
    f.dc1_edges[1].set(false);
    eventually("dc1's edges withdrawn, dc2's answer", async || cdn(&dns, REGION_ONE).await == dc2_edge).await;
    assert_eq!(cdn(&dns, ELSEWHERE).await, dc2_edge);
    assert_eq!(cdn(&dns, REGION_TWO).await, dc2_edge);
    assert_eq!(metric(dns.admin, r#"millions_dns_cdn_edge_healthy{dc="dc1",edge="127.0.1.51"}"#).await, 0.0);
    assert_eq!(metric(dns.admin, r#"millions_dns_cdn_edge_healthy{dc="dc2",edge="127.0.2.51"}"#).await, 1.0);
    // The app's load balancers never depended on the edges.
    assert_app_unchanged(&dns).await;
    assert_eq!(metric(dns.admin, r#"millions_dns_entry_healthy{dc="dc1",entry="127.0.1.1"}"#).await, 1.0);

    // No edge healthy anywhere: the CDN's name answers what the app's does.
    f.dc2_edge.set(false);
    eventually("every edge withdrawn", async || {
        admin_health(&dns).await.iter().filter(|v| v.service == Service::Cdn).all(|v| !v.healthy)
    })
    .await;
    for source in [REGION_ONE, REGION_TWO, ELSEWHERE] {
        assert_eq!(cdn(&dns, source).await, www(&dns, source).await, "from {source}");
    }
    assert_eq!(cdn(&dns, REGION_ONE).await, ips(&["127.0.1.1", "127.0.1.2"]));
    assert_eq!(cdn(&dns, ELSEWHERE).await, ips(&["127.0.3.1", "127.0.3.2"]));
    // With the placement's scope, as the app's answer.
    let answer =
        ask_udp(dns.udp, ELSEWHERE, &query_with_ecs("cdn.millions.test.", RecordType::A, "127.0.12.0/24"))
            .await;
    assert_eq!(addresses(&answer), ips(&["127.0.2.1", "127.0.2.2"]));
    assert_eq!(ecs_of(&answer).map(|e| e.2), Some(24));
    // The load balancers' addresses, under the name asked for.
    assert!(answer.answers.iter().all(|r| r.name.to_string() == "cdn.millions.test."), "{answer}");
    assert!(metric(dns.admin, r#"millions_dns_cdn_fallback_total{dc="dc1"}"#).await >= 2.0);
    assert!(metric(dns.admin, r#"millions_dns_cdn_fallback_total{dc="dc3"}"#).await >= 2.0);
    assert_eq!(metric(dns.admin, "millions_dns_fail_open_total").await, 0.0);
    assert_app_unchanged(&dns).await;

    // The fallback follows the load balancers' health: dc1's down, dc2's answer.
    f.lbs[0].set(false);
    eventually("dc1's load balancers withdrawn", async || {
        cdn(&dns, REGION_ONE).await == ips(&["127.0.2.1", "127.0.2.2"])
    })
    .await;
    assert_eq!(www(&dns, REGION_ONE).await, ips(&["127.0.2.1", "127.0.2.2"]));

    // Every load balancer down too: fail open, as the app's name does.
    f.lbs[1].set(false);
    f.lbs[2].set(false);
    let everything = ips(&["127.0.1.1", "127.0.1.2", "127.0.2.1", "127.0.2.2", "127.0.3.1", "127.0.3.2"]);
    eventually("every DC down", async || admin_health(&dns).await.iter().all(|v| !v.healthy)).await;
    assert_eq!(cdn(&dns, REGION_ONE).await, everything);
    assert_eq!(www(&dns, REGION_ONE).await, everything);
    assert!(metric(dns.admin, r#"millions_dns_cdn_fallback_total{dc="all"}"#).await >= 1.0);
    assert!(metric(dns.admin, "millions_dns_fail_open_total").await >= 2.0);
    // Still serving: ready.
    let ready = reqwest::get(format!("http://{}/readyz", dns.admin)).await.unwrap();
    assert_eq!(ready.status(), 200);

    // One edge back: the CDN's name answers it again, whatever the load balancers.
    f.dc2_edge.set(true);
    eventually("dc2's edge readmitted", async || cdn(&dns, REGION_ONE).await == dc2_edge).await;
    assert_eq!(www(&dns, REGION_ONE).await, everything);
    // And the load balancers back: the app is as it was.
    for lb in &f.lbs {
        lb.set(true);
    }
    for edge in f.edges() {
        edge.set(true);
    }
    eventually("everything readmitted", async || admin_health(&dns).await.iter().all(|v| v.healthy)).await;
    assert_app_unchanged(&dns).await;
    assert_eq!(cdn(&dns, REGION_ONE).await, dc1_edges);
    dns.stop().await;
}

#[tokio::test]
async fn without_a_cdn_name_nothing_changes() {
    let f = Fleet::start().await;
    let dns = dns::start(config(&f, false), None).await.unwrap();
    let nx = ask_udp(dns.udp, REGION_ONE, &query("cdn.millions.test.", RecordType::A, None)).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_app_unchanged(&dns).await;
    let views = admin_health(&dns).await;
    assert_eq!(views.len(), 3);
    assert!(views.iter().all(|v| v.service == Service::App));
    let text = reqwest::get(format!("http://{}/metrics", dns.admin)).await.unwrap().text().await.unwrap();
    assert!(!text.contains("millions_dns_cdn"), "no CDN metrics without a CDN name:\n{text}");
    dns.stop().await;
}
