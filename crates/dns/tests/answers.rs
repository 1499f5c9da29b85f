//! What the server answers, over real UDP and TCP sockets: geo placement by
//! source address and by EDNS Client Subnet, the zone's records, negative
//! answers, refusals, EDNS, truncation, and a graceful stop.

mod support;

use dns::DnsConfig;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use support::*;

/// A server on the standard test configuration, its health URL always 200.
async fn server(top: &str, tables: &str) -> (dns::Running, HealthUrl) {
    let health = HealthUrl::start().await;
    let config = DnsConfig::parse(&config_text(&health.url, top, tables), "test").unwrap();
    (dns::start(config, None).await.unwrap(), health)
}

fn assert_authoritative(m: &Message, rcode: ResponseCode) {
    assert!(is_response(m));
    assert_eq!(m.metadata.response_code, rcode, "{m}");
    assert!(m.metadata.authoritative, "AA must be set on zone answers: {m}");
    assert!(!m.metadata.recursion_available, "never a resolver: {m}");
    assert!(!m.metadata.truncation);
}

#[tokio::test]
async fn the_app_answers_the_dc_of_the_clients_region_by_source_address() {
    let (dns, _health) = server("", "").await;
    for (source, dc) in [
        ("127.0.11.7", ["127.0.1.1", "127.0.1.2"]),
        ("127.0.12.200", ["127.0.2.1", "127.0.2.2"]),
        // In no region: default_order puts dc3 first.
        ("127.0.0.1", ["127.0.3.1", "127.0.3.2"]),
        ("127.0.13.1", ["127.0.3.1", "127.0.3.2"]),
    ] {
        let answer = ask_udp(dns.udp, source, &query("www.millions.test.", RecordType::A, None)).await;
        assert_authoritative(&answer, ResponseCode::NoError);
        assert_eq!(addresses(&answer), ips(&dc), "from {source}");
        assert!(answer.answers.iter().all(|r| r.ttl == 5), "ttl_secs: {answer}");
        assert!(answer.edns.is_none(), "no OPT without one in the query");
    }
    // With EDNS but no Client Subnet option: an OPT without ECS.
    let answer =
        ask_udp(dns.udp, "127.0.11.7", &query("www.millions.test.", RecordType::A, Some(1232))).await;
    assert_eq!(addresses(&answer), ips(&["127.0.1.1", "127.0.1.2"]));
    assert!(answer.edns.is_some() && ecs_of(&answer).is_none(), "{answer}");
    dns.stop().await;
}

#[tokio::test]
async fn a_client_subnet_option_places_the_query_and_the_answer_carries_its_scope() {
    let (dns, _health) = server("", "").await;
    let www = "www.millions.test.";
    // From outside any region, with ECS in region two.
    let answer = ask_udp(dns.udp, "127.0.0.1", &query_with_ecs(www, RecordType::A, "127.0.12.0/24")).await;
    assert_eq!(addresses(&answer), ips(&["127.0.2.1", "127.0.2.2"]));
    assert_eq!(ecs_of(&answer), Some(("127.0.12.0".parse().unwrap(), 24, 24)), "{answer}");
    // ECS wins over the packet's source.
    let answer = ask_udp(dns.udp, "127.0.11.7", &query_with_ecs(www, RecordType::A, "127.0.12.0/24")).await;
    assert_eq!(addresses(&answer), ips(&["127.0.2.1", "127.0.2.2"]));
    // A longer source prefix than the region's range: the scope is the range's.
    let answer = ask_udp(dns.udp, "127.0.0.1", &query_with_ecs(www, RecordType::A, "127.0.11.128/25")).await;
    assert_eq!(addresses(&answer), ips(&["127.0.1.1", "127.0.1.2"]));
    assert_eq!(ecs_of(&answer), Some(("127.0.11.128".parse().unwrap(), 25, 24)));
    // In no region: the default order, and a scope that reaches no region
    // (192.0.2.0 shares no leading bit with 127.0.0.0/8's ranges: /1).
    let answer = ask_udp(dns.udp, "127.0.11.7", &query_with_ecs(www, RecordType::A, "192.0.2.0/24")).await;
    assert_eq!(addresses(&answer), ips(&["127.0.3.1", "127.0.3.2"]));
    assert_eq!(ecs_of(&answer), Some(("192.0.2.0".parse().unwrap(), 24, 1)));
    // Source prefix 0: the client asked not to be placed by it; the packet's
    // source places it, and the answer holds for everyone it could be (scope 0).
    let answer = ask_udp(dns.udp, "127.0.11.7", &query_with_ecs(www, RecordType::A, "0.0.0.0/0")).await;
    assert_eq!(addresses(&answer), ips(&["127.0.1.1", "127.0.1.2"]));
    assert_eq!(ecs_of(&answer), Some(("0.0.0.0".parse().unwrap(), 0, 0)));
    // Names whose answer does not depend on the client have scope 0.
    let answer =
        ask_udp(dns.udp, "127.0.0.1", &query_with_ecs("millions.test.", RecordType::SOA, "127.0.12.0/24"))
            .await;
    assert_eq!(ecs_of(&answer), Some(("127.0.12.0".parse().unwrap(), 24, 0)));
    // And over TCP.
    let answer = ask_tcp(dns.tcp, &query_with_ecs(www, RecordType::A, "127.0.12.0/24")).await;
    assert_eq!(addresses(&answer), ips(&["127.0.2.1", "127.0.2.2"]));
    assert_eq!(ecs_of(&answer), Some(("127.0.12.0".parse().unwrap(), 24, 24)));
    dns.stop().await;
}

#[tokio::test]
async fn the_zone_answers_its_records_and_negative_answers_over_udp_and_tcp() {
    let tables = "[[record]]\nname = \"api\"\na = [\"192.0.2.10\"]\naaaa = [\"2001:db8::10\"]\n";
    let (dns, _health) = server("", tables).await;
    for via in [Via::Udp, Via::Tcp] {
        let server = if via == Via::Udp { dns.udp } else { dns.tcp };
        let at = |q: Message| async move { ask(via, server, &q).await };

        let soa = at(query("millions.test.", RecordType::SOA, None)).await;
        assert_authoritative(&soa, ResponseCode::NoError);
        let RData::SOA(data) = &soa.answers[0].data else { panic!("{soa}") };
        assert_eq!(data.mname.to_string(), "ns1.millions.test.");
        assert_eq!(data.rname.to_string(), "hostmaster.millions.test.");
        assert_eq!((data.serial, data.minimum), (1, 60));

        let ns = at(query("millions.test.", RecordType::NS, None)).await;
        assert_authoritative(&ns, ResponseCode::NoError);
        let mut names: Vec<String> = ns
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::NS(n) => n.0.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        names.sort();
        assert_eq!(names, ["ns1.millions.test.", "ns2.millions.test."]);
        let glue: Vec<(String, RecordType)> =
            ns.additionals.iter().map(|r| (r.name.to_string(), r.record_type())).collect();
        assert!(glue.contains(&("ns1.millions.test.".into(), RecordType::A)), "{ns}");
        assert!(glue.contains(&("ns2.millions.test.".into(), RecordType::AAAA)), "{ns}");

        let ns1 = at(query("ns1.millions.test.", RecordType::A, None)).await;
        assert_authoritative(&ns1, ResponseCode::NoError);
        assert_eq!(addresses(&ns1), ips(&["127.0.0.53"]));

        let api = at(query("api.millions.test.", RecordType::AAAA, None)).await;
        assert_eq!(addresses(&api), ips(&["2001:db8::10"]));
        let any = at(query("api.millions.test.", RecordType::ANY, None)).await;
        assert_eq!(addresses(&any), ips(&["192.0.2.10", "2001:db8::10"]), "ANY answers what exists");

        let nx = at(query("nope.millions.test.", RecordType::A, None)).await;
        assert_authoritative(&nx, ResponseCode::NXDomain);
        assert!(nx.answers.is_empty());
        assert_eq!(nx.authorities.len(), 1);
        assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(nx.authorities[0].ttl, 60, "negative caching TTL = SOA minimum");

        // www has IPv4 entries only: AAAA is NODATA.
        let nodata = at(query("www.millions.test.", RecordType::AAAA, None)).await;
        assert_authoritative(&nodata, ResponseCode::NoError);
        assert!(nodata.answers.is_empty(), "{nodata}");
        assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);

        let refused = at(query("example.com.", RecordType::A, None)).await;
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
        assert!(!refused.metadata.authoritative && !refused.metadata.recursion_available);
        assert!(refused.answers.is_empty() && refused.authorities.is_empty());

        // 0x20: the question comes back exactly as asked.
        let mixed = at(query("wWw.MiLLioNS.tEsT.", RecordType::A, None)).await;
        assert_authoritative(&mixed, ResponseCode::NoError);
        assert_eq!(mixed.queries[0].name().to_string(), "wWw.MiLLioNS.tEsT.");
        assert_eq!(addresses(&mixed).len(), 2, "{mixed}");
    }
    dns.stop().await;
}

#[tokio::test]
async fn edns_is_answered_with_our_opt_and_unknown_versions_with_badvers() {
    let (dns, _health) = server("", "").await;
    let answer = ask_udp(dns.udp, "127.0.0.1", &query("www.millions.test.", RecordType::A, Some(4096))).await;
    let edns = answer.edns.as_ref().expect("an OPT record");
    assert_eq!(edns.max_payload(), 1232, "our own size, not the client's");
    assert_eq!(edns.version(), 0);

    let mut v1 = query("www.millions.test.", RecordType::A, Some(1232));
    v1.edns.as_mut().unwrap().set_version(1);
    let answer = ask_udp(dns.udp, "127.0.0.1", &v1).await;
    // 16 is BADVERS in an OPT's context (hickory names the code BADSIG when reading).
    assert_eq!(u16::from(answer.metadata.response_code), 16, "{answer}");
    assert_eq!(answer.edns.as_ref().unwrap().version(), 0);
    assert!(answer.answers.is_empty());
    dns.stop().await;
}

#[tokio::test]
async fn answers_too_large_for_udp_are_truncated_and_whole_over_tcp() {
    let health = HealthUrl::start().await;
    let entries: Vec<String> = (1..=50)
        .map(|i| format!("{{ address = \"127.0.50.{i}\", health_url = \"{}\" }}", health.url))
        .collect();
    let many: Vec<String> = (1..=30).map(|i| format!("\"192.0.2.{i}\"")).collect();
    let text = format!(
        r#"
zone = "millions.test"
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
nameservers = ["127.0.0.53"]
max_udp_payload = 700
[[dc]]
name = "big"
entry = [{}]
[[record]]
name = "many"
a = [{}]
"#,
        entries.join(", "),
        many.join(", ")
    );
    let dns = dns::start(DnsConfig::parse(&text, "test").unwrap(), None).await.unwrap();
    let client = UdpClient::new("127.0.0.1", dns.udp).await;

    // 30 addresses: 516 bytes, over 512 without EDNS, within 700 with it.
    let (answer, size) = client.ask_sized(&query("many.millions.test.", RecordType::A, None)).await;
    assert!(answer.metadata.truncation && answer.answers.is_empty(), "{answer}");
    assert!(size <= 512, "{size}");
    let (answer, size) = client.ask_sized(&query("many.millions.test.", RecordType::A, Some(4096))).await;
    assert!(!answer.metadata.truncation, "{answer}");
    assert_eq!(answer.answers.len(), 30);
    assert!(size <= 700, "{size}");
    // The client's smaller size is honoured.
    let (answer, _) = client.ask_sized(&query("many.millions.test.", RecordType::A, Some(512))).await;
    assert!(answer.metadata.truncation, "{answer}");

    // 50 entries: over our 700 bytes whatever the client offers.
    let (answer, size) = client.ask_sized(&query("www.millions.test.", RecordType::A, Some(4096))).await;
    assert!(answer.metadata.truncation && answer.answers.is_empty(), "{answer}");
    assert!(answer.edns.is_some(), "a truncated answer keeps its OPT record");
    assert!(size <= 700);

    // Over TCP the whole answer comes.
    let answer = ask_tcp(dns.tcp, &query("www.millions.test.", RecordType::A, None)).await;
    assert!(!answer.metadata.truncation);
    assert_eq!(answer.answers.len(), 50);
    let answer = ask_tcp(dns.tcp, &query("many.millions.test.", RecordType::A, Some(512))).await;
    assert_eq!(answer.answers.len(), 30);

    assert_eq!(metric(dns.admin, "millions_dns_truncated_total").await, 3.0);
    dns.stop().await;
}

#[tokio::test]
async fn stop_closes_connections_and_frees_every_port() {
    let (dns, _health) = server("", "").await;
    let mut idle = tokio::net::TcpStream::connect(dns.tcp).await.unwrap();
    // The connection is served (one query answered) before the stop.
    write_frame(&mut idle, &query("www.millions.test.", RecordType::A, None).to_vec().unwrap()).await;
    assert!(read_frame(&mut idle).await.is_some());
    let ready = reqwest::get(format!("http://{}/readyz", dns.admin)).await.unwrap();
    assert_eq!(ready.status(), 200);
    let (udp, tcp, admin) = (dns.udp, dns.tcp, dns.admin);
    dns.stop().await;

    assert!(read_frame(&mut idle).await.is_none(), "an idle connection is closed by stop");
    std::net::UdpSocket::bind(udp).expect("the UDP port is free again");
    std::net::TcpListener::bind(tcp).expect("the TCP port is free again");
    assert!(tokio::net::TcpStream::connect(admin).await.is_err(), "the admin listener is closed");
}

#[tokio::test]
async fn ipv6_entries_answer_aaaa() {
    let health = HealthUrl::start().await;
    let text = format!(
        r#"
zone = "millions.test"
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
nameservers = ["127.0.0.53"]
[[dc]]
name = "dc1"
entry = [{{ address = "2001:db8::1", health_url = "{url}" }}, {{ address = "192.0.2.1", health_url = "{url}" }}]
"#,
        url = health.url
    );
    let dns = dns::start(DnsConfig::parse(&text, "test").unwrap(), None).await.unwrap();
    let aaaa = ask_udp(dns.udp, "127.0.0.1", &query("www.millions.test.", RecordType::AAAA, None)).await;
    assert_eq!(addresses(&aaaa), ips(&["2001:db8::1"]));
    let a = ask_udp(dns.udp, "127.0.0.1", &query("www.millions.test.", RecordType::A, None)).await;
    assert_eq!(addresses(&a), ips(&["192.0.2.1"]));
    let any = ask_udp(dns.udp, "127.0.0.1", &query("www.millions.test.", RecordType::ANY, None)).await;
    assert_eq!(addresses(&any), ips(&["192.0.2.1", "2001:db8::1"]));
    // No region, so the answers never depend on the client: scope 0.
    let ecs =
        ask_udp(dns.udp, "127.0.0.1", &query_with_ecs("www.millions.test.", RecordType::A, "127.0.12.0/24"))
            .await;
    assert_eq!(ecs_of(&ecs).map(|e| e.2), Some(0));
    dns.stop().await;
}
