//! Health: entries whose health URL fails are withdrawn, a DC with no healthy
//! entry gives way to the next in the client's order, recovery readmits it, and
//! with every DC down the answer holds every entry (fail open). Health URLs are
//! small HTTP servers of the test's own that answer 200 or 503 on command, or
//! stop listening.

mod support;

use std::net::IpAddr;

use dns::{DcView, DnsConfig};
use hickory_proto::rr::RecordType;
use support::*;
use testkit::eventually;

/// dc1: two entries with a health URL each; dc2 and dc3: one URL for both entries.
struct Fleet {
    /// dc1's entries' URLs, one each, so one entry can fail alone.
    dc1: [HealthUrl; 2],
    /// dc2's URL, shared by its entries.
    dc2: HealthUrl,
    /// dc3's URL, shared by its entries.
    dc3: HealthUrl,
}

async fn fleet() -> Fleet {
    Fleet {
        dc1: [HealthUrl::start().await, HealthUrl::start().await],
        dc2: HealthUrl::start().await,
        dc3: HealthUrl::start().await,
    }
}

async fn server(f: &Fleet) -> dns::Running {
    let text = format!(
        r#"
zone = "millions.test"
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
nameservers = ["127.0.0.53"]
default_order = ["dc3"]
[health]
interval_ms = 50
[[dc]]
name = "dc1"
entry = [{{ address = "127.0.1.1", health_url = "{a1}" }}, {{ address = "127.0.1.2", health_url = "{a2}" }}]
[[dc]]
name = "dc2"
entry = [{{ address = "127.0.2.1", health_url = "{b}" }}, {{ address = "127.0.2.2", health_url = "{b}" }}]
[[dc]]
name = "dc3"
entry = [{{ address = "127.0.3.1", health_url = "{c}" }}, {{ address = "127.0.3.2", health_url = "{c}" }}]
[[region]]
name = "one"
ranges = ["127.0.11.0/24"]
order = ["dc1", "dc2"]
[[region]]
name = "two"
ranges = ["127.0.12.0/24"]
order = ["dc2", "dc1"]
"#,
        a1 = f.dc1[0].url,
        a2 = f.dc1[1].url,
        b = f.dc2.url,
        c = f.dc3.url
    );
    dns::start(DnsConfig::parse(&text, "test").unwrap(), None).await.unwrap()
}

/// The app's addresses as a client at `source` gets them.
async fn www(dns: &dns::Running, source: &str) -> Vec<IpAddr> {
    addresses(&ask_udp(dns.udp, source, &query("www.millions.test.", RecordType::A, None)).await)
}

async fn admin_health(dns: &dns::Running) -> Vec<DcView> {
    reqwest::get(format!("http://{}/admin/health", dns.admin)).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn failing_entries_are_withdrawn_then_their_dc_and_readmitted_when_they_recover() {
    let f = fleet().await;
    let dns = server(&f).await;
    let region_one = "127.0.11.7";
    assert_eq!(www(&dns, region_one).await, ips(&["127.0.1.1", "127.0.1.2"]));

    // One entry fails: the DC is still healthy, without it.
    f.dc1[0].set(false);
    eventually("dc1's first entry withdrawn", async || www(&dns, region_one).await == ips(&["127.0.1.2"]))
        .await;

    // Both fail: the client's next DC answers.
    f.dc1[1].set(false);
    eventually("dc1 withdrawn, dc2 answers", async || {
        www(&dns, region_one).await == ips(&["127.0.2.1", "127.0.2.2"])
    })
    .await;
    let views = admin_health(&dns).await;
    assert_eq!(views[0].name, "dc1");
    assert!(!views[0].healthy && views[0].entries.iter().all(|e| !e.healthy), "{views:?}");
    assert!(views[1].healthy && views[2].healthy, "{views:?}");
    let gauge = metric(dns.admin, r#"millions_dns_entry_healthy{dc="dc1",entry="127.0.1.1"}"#).await;
    assert_eq!(gauge, 0.0);
    assert!(metric(dns.admin, r#"millions_dns_app_answers_total{dc="dc2"}"#).await >= 1.0);
    // Region two never noticed.
    assert_eq!(www(&dns, "127.0.12.7").await, ips(&["127.0.2.1", "127.0.2.2"]));

    // Recovery readmits dc1.
    f.dc1[0].set(true);
    f.dc1[1].set(true);
    eventually("dc1 readmitted", async || www(&dns, region_one).await == ips(&["127.0.1.1", "127.0.1.2"]))
        .await;
    assert!(admin_health(&dns).await.iter().all(|dc| dc.healthy));
    assert_eq!(metric(dns.admin, r#"millions_dns_entry_healthy{dc="dc1",entry="127.0.1.1"}"#).await, 1.0);
    dns.stop().await;
}

#[tokio::test]
async fn a_health_url_that_stops_listening_withdraws_its_dc() {
    let f = fleet().await;
    let dns = server(&f).await;
    let region_two = "127.0.12.7";
    assert_eq!(www(&dns, region_two).await, ips(&["127.0.2.1", "127.0.2.2"]));
    f.dc2.stop();
    eventually("dc2 withdrawn, dc1 answers region two", async || {
        www(&dns, region_two).await == ips(&["127.0.1.1", "127.0.1.2"])
    })
    .await;
    dns.stop().await;
}

#[tokio::test]
async fn with_every_dc_down_every_entry_is_answered_fail_open() {
    let f = fleet().await;
    let dns = server(&f).await;
    for url in f.dc1.iter().chain([&f.dc2, &f.dc3]) {
        url.set(false);
    }
    let everything = ips(&["127.0.1.1", "127.0.1.2", "127.0.2.1", "127.0.2.2", "127.0.3.1", "127.0.3.2"]);
    eventually("every DC down", async || admin_health(&dns).await.iter().all(|dc| !dc.healthy)).await;
    assert_eq!(www(&dns, "127.0.11.7").await, everything);
    assert_eq!(www(&dns, "127.0.0.1").await, everything);
    // The answer no longer depends on the client: ECS scope 0.
    let answer =
        ask_udp(dns.udp, "127.0.0.1", &query_with_ecs("www.millions.test.", RecordType::A, "127.0.12.0/24"))
            .await;
    assert_eq!(addresses(&answer), everything);
    assert_eq!(ecs_of(&answer).map(|e| e.2), Some(0));
    assert!(metric(dns.admin, "millions_dns_fail_open_total").await >= 3.0);
    assert!(metric(dns.admin, r#"millions_dns_app_answers_total{dc="all"}"#).await >= 3.0);
    // Still serving: ready.
    let ready = reqwest::get(format!("http://{}/readyz", dns.admin)).await.unwrap();
    assert_eq!(ready.status(), 200);

    // One DC back: fail open ends.
    f.dc3.set(true);
    eventually("dc3 readmitted", async || www(&dns, "127.0.11.7").await == ips(&["127.0.3.1", "127.0.3.2"]))
        .await;
    dns.stop().await;
}
