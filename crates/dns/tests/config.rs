//! Bad configurations: each is refused with an error naming its setting, by
//! `DnsConfig::parse` and by `dns::start`, and nothing is bound.

use dns::{DnsConfig, DnsError};

/// A valid configuration on fixed, free ports (so a test can check they stay free).
fn good(listen: u16, admin: u16) -> String {
    format!(
        r#"
zone = "millions.test"
listen = "127.0.0.1:{listen}"
admin = "127.0.0.1:{admin}"
nameservers = ["127.0.0.53"]

[[dc]]
name = "dc1"
entry = [{{ address = "127.0.1.1", health_url = "http://127.0.1.1:9001/readyz" }}]
[[dc]]
name = "dc2"
entry = [{{ address = "127.0.2.1", health_url = "http://127.0.2.1:9001/readyz" }}]

[[region]]
name = "one"
ranges = ["127.0.11.0/24"]
order = ["dc1"]
"#
    )
}

/// Two different free ports (bound together, then released).
fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

/// Apply `edit` to the good text; return the error of parsing it and of
/// starting it, after checking that both name `expect` and nothing was bound.
async fn refused(edit: impl Fn(String) -> String, expect: &str) {
    let (listen, admin) = free_ports();
    let text = edit(good(listen, admin));
    let parsed = DnsConfig::parse(&text, "dns.toml").unwrap_err().to_string();
    assert!(parsed.contains(expect), "parse: expected {expect:?} in {parsed:?}");

    // The same text, unchecked, handed to start.
    let config: DnsConfig = toml::from_str(&text).unwrap();
    match dns::start(config, None).await {
        Err(DnsError::Config(e)) => {
            assert!(e.to_string().contains(expect), "start: expected {expect:?} in {e}")
        }
        Err(other) => panic!("start: expected a configuration error, got {other}"),
        Ok(_) => panic!("start accepted a bad configuration ({expect})"),
    }
    std::net::UdpSocket::bind(("127.0.0.1", listen)).expect("the UDP port stayed free");
    std::net::TcpListener::bind(("127.0.0.1", listen)).expect("the TCP port stayed free");
    std::net::TcpListener::bind(("127.0.0.1", admin)).expect("the admin port stayed free");
}

fn replace(from: &'static str, to: &'static str) -> impl Fn(String) -> String {
    move |text| {
        assert!(text.contains(from), "{from:?} is not in the good text");
        text.replacen(from, to, 1)
    }
}

fn append(extra: &'static str) -> impl Fn(String) -> String {
    move |text| format!("{text}\n{extra}")
}

fn prepend(extra: &'static str) -> impl Fn(String) -> String {
    move |text| format!("{extra}\n{text}")
}

#[tokio::test]
async fn the_good_configuration_starts() {
    let (listen, admin) = free_ports();
    let config = DnsConfig::parse(&good(listen, admin), "dns.toml").unwrap();
    let running = dns::start(config, None).await.unwrap();
    assert_eq!(running.udp.port(), listen);
    assert_eq!(running.tcp.port(), listen);
    running.stop().await;
}

#[tokio::test]
async fn the_zone_must_be_a_valid_name() {
    refused(replace(r#"zone = "millions.test""#, r#"zone = "bad..zone""#), "invalid setting zone").await;
    refused(replace(r#"zone = "millions.test""#, r#"zone = "-x.test""#), "invalid setting zone").await;
    refused(replace(r#"zone = "millions.test""#, r#"zone = "a b.test""#), "invalid setting zone").await;
    refused(
        replace(r#"zone = "millions.test""#, r#"zone = ".""#),
        "invalid setting zone: must not be the root",
    )
    .await;
}

#[tokio::test]
async fn the_app_name_must_be_inside_the_zone_and_below_its_apex() {
    refused(
        prepend(r#"app = "www.example.com.""#),
        "invalid setting app: www.example.com. is outside the zone",
    )
    .await;
    refused(prepend(r#"app = "millions.test.""#), "invalid setting app: must be a name below").await;
    refused(prepend(r#"app = "ns1""#), "invalid setting app: ns1.millions.test. is a name server's name")
        .await;
    refused(prepend(r#"app = "w w w""#), "invalid setting app").await;
}

#[tokio::test]
async fn regions_must_name_known_dcs_and_valid_ranges_that_do_not_overlap() {
    refused(
        replace(r#"order = ["dc1"]"#, r#"order = ["dc9"]"#),
        r#"region.order: region one names an unknown DC "dc9""#,
    )
    .await;
    refused(replace(r#"order = ["dc1"]"#, r#"order = ["dc1", "dc1"]"#), "region one lists dc1 twice").await;
    refused(replace(r#"order = ["dc1"]"#, "order = []"), "region one names no DC").await;
    refused(
        replace(r#"ranges = ["127.0.11.0/24"]"#, r#"ranges = ["127.0.11.0/33"]"#),
        "invalid setting region.ranges: region one: \"127.0.11.0/33\": the prefix is longer",
    )
    .await;
    refused(replace(r#"ranges = ["127.0.11.0/24"]"#, r#"ranges = ["banana"]"#), "is not ADDRESS/PREFIX")
        .await;
    refused(
        replace(r#"ranges = ["127.0.11.0/24"]"#, r#"ranges = ["127.0.11.9/24"]"#),
        "did you mean 127.0.11.0/24",
    )
    .await;
    refused(replace(r#"ranges = ["127.0.11.0/24"]"#, "ranges = []"), "region one has no range").await;
    refused(
        append("[[region]]\nname = \"two\"\nranges = [\"127.0.0.0/16\"]\norder = [\"dc2\"]"),
        "region two: 127.0.0.0/16 overlaps 127.0.11.0/24 of region one",
    )
    .await;
    refused(
        replace(r#"ranges = ["127.0.11.0/24"]"#, r#"ranges = ["127.0.11.0/24", "127.0.11.128/25"]"#),
        "overlaps 127.0.11.0/24 of region one",
    )
    .await;
    refused(
        append("[[region]]\nname = \"one\"\nranges = [\"10.0.0.0/8\"]\norder = [\"dc2\"]"),
        "one is listed twice",
    )
    .await;
    refused(
        prepend(r#"default_order = ["dc7"]"#),
        r#"invalid setting default_order: default_order names an unknown DC "dc7""#,
    )
    .await;
}

#[tokio::test]
async fn dcs_must_exist_have_entries_and_answerable_addresses() {
    refused(
        |text: String| text[..text.find("[[dc]]").unwrap()].to_owned(),
        "invalid setting dc: at least one [[dc]] is needed",
    )
    .await;
    refused(
        replace(
            r#"entry = [{ address = "127.0.1.1", health_url = "http://127.0.1.1:9001/readyz" }]"#,
            "entry = []",
        ),
        "invalid setting dc.entry: dc dc1 has no entry",
    )
    .await;
    refused(replace(r#"name = "dc2""#, r#"name = "dc1""#), "invalid setting dc.name: dc1 is listed twice")
        .await;
    refused(replace(r#"address = "127.0.2.1""#, r#"address = "127.0.1.1""#), "127.0.1.1 is listed twice")
        .await;
    refused(
        replace(r#"address = "127.0.2.1""#, r#"address = "0.0.0.0""#),
        "invalid setting dc.entry.address",
    )
    .await;
    refused(
        replace("http://127.0.1.1:9001/readyz", "ftp://127.0.1.1/readyz"),
        "invalid setting dc.entry.health_url: dc dc1: \"ftp://127.0.1.1/readyz\" is not an http:// URL",
    )
    .await;
    refused(replace("http://127.0.1.1:9001/readyz", "https://127.0.1.1/readyz"), "is not an http:// URL")
        .await;
    refused(replace("http://127.0.1.1:9001/readyz", "not a url"), "invalid setting dc.entry.health_url")
        .await;
}

#[tokio::test]
async fn static_records_must_match_their_family_and_not_collide() {
    refused(
        append("[[record]]\nname = \"api\"\na = [\"2001:db8::1\"]"),
        "invalid setting record.a: api.millions.test.: 2001:db8::1 is not an IPv4 address",
    )
    .await;
    refused(
        append("[[record]]\nname = \"api\"\naaaa = [\"192.0.2.1\"]"),
        "invalid setting record.aaaa: api.millions.test.: 192.0.2.1 is not an IPv6 address",
    )
    .await;
    refused(append("[[record]]\nname = \"www\"\na = [\"192.0.2.1\"]"), "www.millions.test. is already taken")
        .await;
    refused(append("[[record]]\nname = \"api\""), "api.millions.test. has no address").await;
    refused(append("[[record]]\nname = \"api.example.com.\"\na = [\"192.0.2.1\"]"), "is outside the zone")
        .await;
}

/// A CDN name with an edge in dc1 (top-level key first, table last).
fn with_cdn(text: String) -> String {
    format!(
        "cdn = \"cdn\"\n{text}\n[[cdn_dc]]\nname = \"dc1\"\n\
         entry = [{{ address = \"127.0.1.51\", health_url = \"http://127.0.1.51:8001/readyz\" }}]\n"
    )
}

#[tokio::test]
async fn a_cdn_name_and_its_edges_start_and_round_trip() {
    let (listen, admin) = free_ports();
    let config = DnsConfig::parse(&with_cdn(good(listen, admin)), "dns.toml").unwrap();
    assert_eq!(config.cdn.as_deref(), Some("cdn"));
    let again = DnsConfig::parse(&config.to_toml(), "again").unwrap();
    assert_eq!(again.cdn.as_deref(), Some("cdn"));
    assert_eq!(again.cdn_dcs[0].name, "dc1");
    assert_eq!(again.cdn_dcs[0].entries[0].address.to_string(), "127.0.1.51");
    // Without a CDN, the TOML a controller writes has no trace of one.
    let plain = DnsConfig::parse(&good(listen, admin), "dns.toml").unwrap().to_toml();
    assert!(!plain.contains("cdn"), "{plain}");
    dns::start(config, None).await.unwrap().stop().await;
}

#[tokio::test]
async fn the_cdn_name_and_its_edges_come_together() {
    refused(
        prepend(r#"cdn = "cdn""#),
        r#"invalid setting cdn_dc: cdn = "cdn" needs its edges: at least one [[cdn_dc]] with an entry"#,
    )
    .await;
    refused(
        append("[[cdn_dc]]\nname = \"dc1\"\nentry = [{ address = \"127.0.1.51\", health_url = \"http://127.0.1.51:8001/readyz\" }]"),
        "invalid setting cdn: [[cdn_dc]] lists CDN edges but cdn (the CDN's name) is not set",
    )
    .await;
    refused(
        |text| {
            with_cdn(text).replace(
                r#"entry = [{ address = "127.0.1.51", health_url = "http://127.0.1.51:8001/readyz" }]"#,
                "entry = []",
            )
        },
        "invalid setting cdn_dc.entry: cdn_dc dc1 has no entry",
    )
    .await;
}

#[tokio::test]
async fn cdn_edges_must_belong_to_known_dcs_with_their_own_addresses() {
    refused(
        |text| {
            with_cdn(text).replace(
                r#"name = "dc1"
entry = [{ address = "127.0.1.51""#,
                r#"name = "dc9"
entry = [{ address = "127.0.1.51""#,
            )
        },
        r#"invalid setting cdn_dc.name: cdn_dc "dc9" names an unknown DC"#,
    )
    .await;
    refused(
        |text| {
            format!(
                "{}\n[[cdn_dc]]\nname = \"dc1\"\nentry = [{{ address = \"127.0.1.52\", health_url = \"http://127.0.1.52:1/readyz\" }}]",
                with_cdn(text)
            )
        },
        "invalid setting cdn_dc.name: dc1 is listed twice",
    )
    .await;
    refused(
        |text| with_cdn(text).replace(r#"address = "127.0.1.51""#, r#"address = "127.0.2.1""#),
        "invalid setting cdn_dc.entry.address: cdn_dc dc1: 127.0.2.1 is a load balancer's address",
    )
    .await;
    refused(
        |text| with_cdn(text).replace(r#"address = "127.0.1.51""#, r#"address = "224.0.0.1""#),
        "invalid setting cdn_dc.entry.address: cdn_dc dc1: 224.0.0.1 cannot be answered",
    )
    .await;
    refused(
        |text| with_cdn(text).replace("http://127.0.1.51:8001/readyz", "https://127.0.1.51/readyz"),
        "invalid setting cdn_dc.entry.health_url: dc dc1: \"https://127.0.1.51/readyz\" is not an http:// URL",
    )
    .await;
}

#[tokio::test]
async fn the_cdn_name_must_not_clash_with_the_zones_other_names() {
    let cdn_named = |name: &'static str| {
        move |text: String| with_cdn(text).replacen(r#"cdn = "cdn""#, &format!("cdn = {name:?}"), 1)
    };
    refused(cdn_named("www"), "invalid setting cdn: www.millions.test. is the app's name").await;
    refused(cdn_named("WWW.millions.test."), "invalid setting cdn: www.millions.test. is the app's name")
        .await;
    refused(cdn_named("millions.test."), "invalid setting cdn: must be a name below the zone's apex").await;
    refused(cdn_named("ns1"), "invalid setting cdn: ns1.millions.test. is a name server's name").await;
    refused(cdn_named("cdn.example.com."), "invalid setting cdn: cdn.example.com. is outside the zone").await;
    refused(cdn_named("c d n"), "invalid setting cdn").await;
    refused(
        |text| format!("{}\n[[record]]\nname = \"cdn\"\na = [\"192.0.2.1\"]", with_cdn(text)),
        "invalid setting record.name: cdn.millions.test. is already taken",
    )
    .await;
}

#[tokio::test]
async fn numbers_must_be_in_range() {
    refused(prepend("ttl_secs = 0"), "invalid setting ttl_secs: must be positive").await;
    refused(prepend("static_ttl_secs = 0"), "invalid setting static_ttl_secs").await;
    refused(prepend("max_udp_payload = 100"), "invalid setting max_udp_payload").await;
    refused(replace(r#"nameservers = ["127.0.0.53"]"#, "nameservers = []"), "invalid setting nameservers")
        .await;
    refused(append("[soa]\nrefresh = 0"), "invalid setting soa.refresh").await;
    refused(append("[health]\ninterval_ms = 0"), "invalid setting health.interval_ms").await;
    refused(append("[health]\ntimeout_ms = 0"), "invalid setting health.timeout_ms").await;
    refused(append("[health]\nunhealthy_threshold = 0"), "invalid setting health.healthy_threshold").await;
    refused(append("[tcp]\nmax_connections = 0"), "invalid setting tcp.max_connections").await;
    refused(append("[udp]\nbuffer_bytes = 1000"), "invalid setting udp.buffer_bytes").await;
}

#[tokio::test]
async fn listen_and_admin_must_differ() {
    let (listen, _) = free_ports();
    let text = good(listen, listen);
    let e = DnsConfig::parse(&text, "dns.toml").unwrap_err().to_string();
    assert_eq!(e, "invalid setting admin: must differ from listen");
}

#[tokio::test]
async fn unknown_keys_and_wrong_types_name_the_file_and_line() {
    let text = format!("{}\n[health]\nspeed = 3\n", good(5300, 5301));
    let e = DnsConfig::parse(&text, "dns.toml").unwrap_err().to_string();
    assert!(e.starts_with("dns.toml:") && e.contains("unknown field `speed`"), "{e}");
    let text = good(5300, 5301).replace(r#"nameservers = ["127.0.0.53"]"#, r#"nameservers = ["ns.example"]"#);
    let e = DnsConfig::parse(&text, "dns.toml").unwrap_err().to_string();
    assert!(e.starts_with("dns.toml:") && e.contains("nameservers"), "{e}");
}
