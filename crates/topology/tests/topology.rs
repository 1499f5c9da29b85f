//! The topology format: presets, addresses, and one test per validation error.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, TcpListener};

use topology::{
    LbAlgorithm, PRESETS, Replication, Role, Scale, ShardId, Survives, Topology, TopologyError, parse,
    preset, preset_text, set_count,
};

/// A small valid topology; tests replace parts of it to break it one way at a time.
const BASE: &str = r#"
name = "base"

[[dc]]
name = "dc1"
cidr = "127.0.1.0/24"
lb = { count = 1 }
web = { count = 2 }
worker = { count = 1 }
redis = { count = 1 }

[[dc]]
name = "dc2"
cidr = "127.0.2.0/24"
lb = { count = 1 }
web = { count = 1 }
worker = { count = 1 }
redis = { count = 1 }

[[shard]]
replication = "sync"
primary = "dc1"
replicas = ["dc1", "dc2"]
"#;

fn ok(text: &str) -> Topology {
    parse(text, "test.toml").unwrap_or_else(|e| panic!("should parse: {e}\n{text}"))
}

/// The error message for `text`, which must not parse.
fn err(text: &str) -> String {
    match parse(text, "test.toml") {
        Ok(_) => panic!("should be refused:\n{text}"),
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("test.toml: "), "error names its origin: {message}");
            message
        }
    }
}

/// `BASE` with `from` replaced by `to` (which must occur).
fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no {from:?}");
    BASE.replacen(from, to, 1)
}

fn assert_contains(message: &str, expected: &str) {
    assert!(message.contains(expected), "expected {expected:?} in:\n{message}");
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn addr(t: &Topology, node: &str) -> SocketAddr {
    t.node(node).unwrap_or_else(|| panic!("no node {node}")).addr
}

/// Invariants every topology keeps.
fn check_invariants(t: &Topology) {
    let names: HashSet<_> = t.nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names.len(), t.nodes().len(), "node names are unique");
    let ips: HashSet<_> = t.nodes().iter().map(|n| n.addr.ip()).collect();
    assert_eq!(ips.len(), t.nodes().len(), "node addresses are unique");
    for node in t.nodes() {
        let dc = t.dc(&node.dc).expect("a node's DC is defined");
        assert!(dc.cidr.contains(node.addr.ip()), "{} is in its DC's range", node.name);
        assert_eq!(node.addr.port(), t.ports().of(node.role));
        assert_eq!(node.shard.is_some(), node.role == Role::Postgres);
    }
    // A scaled role's nodes have the first of its range's addresses; the others are
    // no node's.
    for dc in t.dcs() {
        for role in Role::ALL {
            let Some(scale) = dc.scale(role) else { continue };
            let nodes: Vec<_> =
                t.nodes_in(&dc.name).filter(|n| n.role == role).map(|n| n.addr.ip()).collect();
            assert!(scale.min as usize <= nodes.len() && nodes.len() <= scale.max as usize, "{scale:?}");
            assert_eq!(scale.addrs.len(), scale.max as usize);
            assert_eq!(scale.addrs[..nodes.len()], nodes[..]);
            assert!(scale.addrs[nodes.len()..].iter().all(|ip| !ips.contains(ip)), "spares are free");
            if !scale.auto {
                assert_eq!((scale.min, scale.max), (nodes.len() as u32, nodes.len() as u32));
                assert!(scale.autoscale.is_empty());
            }
        }
    }
    for (i, shard) in t.shards().iter().enumerate() {
        assert_eq!(shard.id, ShardId(i as u16));
        let members: Vec<_> = t.shard_nodes(shard.id).map(|n| n.name.clone()).collect();
        assert_eq!(members, shard.members);
        let primaries: Vec<_> =
            t.shard_nodes(shard.id).filter(|n| n.shard.unwrap().initial_primary).collect();
        assert_eq!(primaries.len(), 1);
        assert_eq!(primaries[0].dc, shard.primary_dc);
    }
    // Start order: WAN gateways, PostgreSQL, Redis, workers, web servers, load
    // balancers, CDN edges, DNS.
    let order = [
        Role::Wan,
        Role::Postgres,
        Role::Redis,
        Role::Worker,
        Role::Web,
        Role::LoadBalancer,
        Role::Cdn,
        Role::Dns,
    ];
    let ranks: Vec<_> = t.nodes().iter().map(|n| order.iter().position(|r| *r == n.role).unwrap()).collect();
    assert!(ranks.is_sorted(), "nodes are in start order");
}

#[test]
fn every_preset_parses_and_keeps_the_invariants() {
    for name in PRESETS {
        assert!(preset_text(name).is_some());
        let t = preset(name).unwrap_or_else(|e| panic!("preset {name}: {e}"));
        assert_eq!(t.name(), *name);
        check_invariants(&t);
    }
}

#[test]
fn an_unknown_preset_lists_the_presets() {
    let e = preset("huge").unwrap_err();
    assert!(matches!(e, TopologyError::UnknownPreset { .. }));
    assert_eq!(e.to_string(), "unknown preset \"huge\"; the presets are: single, default, test");
    assert!(preset_text("huge").is_none());
}

#[test]
fn the_single_preset_has_one_of_everything() {
    let t = preset("single").unwrap();
    assert_eq!(t.dcs().len(), 1);
    // A WAN gateway only joins data centers: one DC has none.
    for role in Role::ALL.into_iter().filter(|r| *r != Role::Wan) {
        assert_eq!(t.count("dc1", role), 1, "{role}");
    }
    assert_eq!(t.shards().len(), 1);
    assert_eq!(t.shards()[0].replica_dcs, Vec::<String>::new());
    assert_eq!(t.shards()[0].replication, Replication::Async);
    assert_eq!(t.nodes().len(), 7);
}

#[test]
fn cdn_edges_take_their_block_an_admin_port_and_the_https_port() {
    let t = ok(&base_with("redis = { count = 1 }", "redis = { count = 1 }\ncdn = { count = 2 }"));
    assert_eq!(t.count("dc1", Role::Cdn), 2);
    assert_eq!(t.count("dc2", Role::Cdn), 0);
    let edge = t.node("dc1-cdn-2").expect("the second edge");
    assert_eq!(edge.role, Role::Cdn);
    assert_eq!(edge.addr, "127.0.1.51:8000".parse().unwrap());
    assert_eq!(edge.admin_addr(), Some("127.0.1.51:8001".parse().unwrap()));
    assert_eq!(edge.https_addr(t.ports().https), Some("127.0.1.51:8443".parse().unwrap()));
    let listens: Vec<SocketAddr> = edge.listen_addrs(t.ports().https).map(|(a, _)| a).collect();
    assert_eq!(listens.len(), 3, "public, admin and HTTPS: {listens:?}");
    check_invariants(&t);
    let moved = ok(&format!(
        "{}\n[ports]\ncdn = 9000\n",
        base_with(
            "redis = { count = 1 }",
            "redis = { count = 1 }\ncdn = { count = 1, first = \"127.0.1.200\" }"
        )
    ));
    assert_eq!(addr(&moved, "dc1-cdn-1"), "127.0.1.200:9000".parse().unwrap());
}

#[test]
fn cdn_edges_need_web_servers_and_ports_of_their_own() {
    let dc2 = "cidr = \"127.0.2.0/24\"\nlb = { count = 1 }\nweb = { count = 1 }\n";
    let e = err(&base_with(dc2, "cidr = \"127.0.2.0/24\"\ncdn = { count = 1 }\n"));
    assert_contains(
        &e,
        "dc[1] (dc2): web.count must be at least 1: the DC has CDN edges, whose origin is the DC's web servers",
    );
    let e = err(&format!("{BASE}\n[ports]\ncdn = 8442\n"));
    assert_contains(&e, "ports.https = 8443: a CDN edge listens on ports.cdn (8442)");
    let e = err(&format!("{BASE}\n[ports]\ncdn = 65535\n"));
    assert_contains(&e, "ports.cdn = 65535: a CDN edge's admin listener takes the next port");
    let e = err(&format!("{BASE}\n[ports]\ncdn = 0\n"));
    assert_contains(&e, "ports.cdn = 0: a port must be between 1 and 65535");
    let e = err(&base_with("redis = { count = 1 }", "redis = { count = 1 }\ncdn = { count = 11 }"));
    assert_contains(&e, "11 cdn nodes do not fit cdn's default block 127.0.1.50-127.0.1.59 (10 addresses)");
}

#[test]
fn the_default_preset_has_two_dcs_and_two_synchronous_shards() {
    let t = preset("default").unwrap();
    let dcs: Vec<_> = t.dcs().iter().map(|d| (d.name.as_str(), d.cidr.to_string())).collect();
    assert_eq!(dcs, [("dc1", "127.0.1.0/24".to_owned()), ("dc2", "127.0.2.0/24".to_owned())]);
    for dc in ["dc1", "dc2"] {
        assert_eq!(t.count(dc, Role::LoadBalancer), 1);
        assert_eq!(t.count(dc, Role::Web), 2);
        assert_eq!(t.count(dc, Role::Worker), 1);
        assert_eq!(t.count(dc, Role::Redis), 1);
        assert_eq!(t.dc(dc).unwrap().lb_algorithm, LbAlgorithm::RoundRobin);
    }
    assert_eq!(t.shards().len(), 2);
    for shard in t.shards() {
        assert_eq!(shard.replication, Replication::Sync);
        assert_eq!(shard.replica_dcs.len(), 2);
        let same = shard.replica_dcs.iter().filter(|d| **d == shard.primary_dc).count();
        assert_eq!(same, 1, "one replica next to the primary, one in the other DC");
        assert_eq!(shard.members.len(), 3);
    }
    assert_ne!(t.shards()[0].primary_dc, t.shards()[1].primary_dc, "primaries are spread over the DCs");
    assert_eq!(t.nodes().len(), 2 * 8 + 2 * 3);
    assert_eq!(addr(&t, "dc2-cdn-1"), "127.0.2.50:8000".parse().unwrap());

    // The documented addresses.
    assert_eq!(addr(&t, "dc1-lb-1"), "127.0.1.10:8000".parse().unwrap());
    assert_eq!(addr(&t, "dc1-web-1"), "127.0.1.20:8080".parse().unwrap());
    assert_eq!(addr(&t, "dc1-web-2"), "127.0.1.21:8080".parse().unwrap());
    assert_eq!(addr(&t, "dc1-worker-1"), "127.0.1.60:9100".parse().unwrap());
    assert_eq!(addr(&t, "dc1-redis-1"), "127.0.1.80:6379".parse().unwrap());
    assert_eq!(addr(&t, "shard0-pg-1"), "127.0.1.100:5432".parse().unwrap());
    assert_eq!(addr(&t, "shard0-pg-2"), "127.0.1.101:5432".parse().unwrap());
    assert_eq!(addr(&t, "shard1-pg-3"), "127.0.1.102:5432".parse().unwrap());
    assert_eq!(addr(&t, "shard0-pg-3"), "127.0.2.100:5432".parse().unwrap());
    assert_eq!(addr(&t, "shard1-pg-1"), "127.0.2.101:5432".parse().unwrap());
    assert_eq!(addr(&t, "shard1-pg-2"), "127.0.2.102:5432".parse().unwrap());
    assert_eq!(addr(&t, "dc2-web-2"), "127.0.2.21:8080".parse().unwrap());
    assert_eq!(addr(&t, "dc1-dns-1"), "127.0.1.5:8053".parse().unwrap());
    assert_eq!(addr(&t, "dc2-dns-1"), "127.0.2.5:8053".parse().unwrap());
    assert_eq!(t.node("dc2-dns-1").unwrap().admin_addr(), Some("127.0.2.5:8054".parse().unwrap()));
    let ns: Vec<(String, String)> = t.name_servers().map(|(ns, n)| (ns, n.name.clone())).collect();
    assert_eq!(ns, [("ns1".into(), "dc1-dns-1".into()), ("ns2".into(), "dc2-dns-1".into())]);

    let pg1 = t.node("shard1-pg-1").unwrap();
    assert_eq!(pg1.dc, "dc2");
    assert!(pg1.shard.unwrap().initial_primary);
    assert_eq!(pg1.shard.unwrap().shard, ShardId(1));
    assert!(!t.node("shard1-pg-3").unwrap().shard.unwrap().initial_primary);
    // Every commit is confirmed in the other DC: the shards survive a DC's loss.
    assert!(t.shards().iter().all(|s| s.survives() == Some(Survives::Dc)));
    assert_eq!(
        t.shards()[0].synchronous_standby_names("shard0-pg-1").as_deref(),
        Some(r#"ANY 1 ("shard0-pg-3")"#),
        "the primary in dc1 waits for the replica in dc2, not the one beside it"
    );
    assert_eq!(
        t.shards()[0].synchronous_standby_names("shard0-pg-3").as_deref(),
        Some(r#"ANY 1 ("shard0-pg-1", "shard0-pg-2")"#),
        "after a failover to dc2 the new primary waits for either member in dc1"
    );
    // With dc2 lost, a primary in dc1 has no other DC: it degrades to its own DC's
    // replica, and says so.
    let q = t.shards()[0].quorum("shard0-pg-1", &["dc2"]).unwrap();
    assert_eq!((q.setting().as_str(), q.degraded), (r#"ANY 1 ("shard0-pg-2")"#, true));
    assert!(!t.shards()[0].quorum("shard0-pg-1", &[]).unwrap().degraded);
    // With dc1 lost, shard 0's survivor in dc2 has no member left to wait for.
    assert_eq!(t.shards()[0].quorum("shard0-pg-3", &["dc1"]), None);

    // The app's zone and the client regions.
    assert_eq!(t.dns().zone, "millions.test");
    assert_eq!(t.dns().app, "www");
    assert_eq!(t.dns().ttl_secs, 5);
    assert_eq!(t.dc_order_for("127.0.11.7".parse().unwrap()), ["dc1", "dc2"]);
    assert_eq!(t.dc_order_for("127.0.12.7".parse().unwrap()), ["dc2", "dc1"]);
    assert_eq!(t.dc_order_for("10.1.2.3".parse().unwrap()), ["dc1", "dc2"], "no region: file order");
    // The WAN: a gateway per DC, relaying to the other DC's PostgreSQL and Redis.
    assert_eq!(t.wan().map(|w| w.delay_ms), Some(0));
    let gw1 = t.wan_gateway("dc1").unwrap();
    assert_eq!((gw1.name.as_str(), gw1.addr), ("dc1-wan-1", "127.0.1.2:7000".parse().unwrap()));
    let pg3 = t.node("shard0-pg-3").unwrap();
    let relay = t.address_from("dc1", pg3);
    assert_eq!(relay.ip(), gw1.addr.ip(), "dc1 reaches dc2's node through dc1's gateway");
    assert_eq!(Some(relay.port()), t.relay_port(pg3));
    assert_eq!(t.address_from("dc2", pg3), pg3.addr, "its own DC reaches it directly");
    let web = t.node("dc2-web-1").unwrap();
    assert_eq!(t.address_from("dc1", web), web.addr, "only PostgreSQL and Redis are relayed");
    let links: Vec<&str> = t.wan_links("dc1").iter().map(|(_, n)| n.name.as_str()).collect();
    assert_eq!(links, ["shard0-pg-3", "shard1-pg-1", "shard1-pg-2", "dc2-redis-1"]);
    assert!(t.wan_links("dc1").iter().all(|(a, _)| a.ip() == gw1.addr.ip()));
    // Without [wan], no gateway and direct addresses.
    let test = preset("test").unwrap();
    assert!(test.wan().is_none() && test.nodes_of(Role::Wan).next().is_none());
    let pg2 = test.node("shard0-pg-2").unwrap();
    assert_eq!(test.address_from("dc1", pg2), pg2.addr);
}

#[test]
fn durability_dns_regions_and_wan_are_checked() {
    let base = r#"
name = "t"
[[dc]]
name = "a"
cidr = "10.1.0.0/24"
lb = { count = 1 }
web = { count = 1 }
worker = { count = 1 }
redis = { count = 1 }
[[dc]]
name = "b"
cidr = "10.2.0.0/24"
"#;
    let shard = "[[shard]]\nprimary = \"a\"\nreplicas = [\"a\", \"b\"]\n";
    let ok =
        |extra: &str| parse(&format!("{base}{extra}"), "t.toml").unwrap_or_else(|e| panic!("{extra}: {e}"));
    let bad = |extra: &str, expect: &str| {
        let e = parse(&format!("{base}{extra}"), "t.toml").expect_err(extra).to_string();
        assert!(e.contains(expect), "{extra}: {e} (expected {expect:?})");
    };
    // `survives` implies synchronous replication.
    let t = ok(&format!("{shard}survives = \"dc\"\n"));
    assert_eq!(t.shards()[0].replication, Replication::Sync);
    assert_eq!(t.shards()[0].survives(), Some(Survives::Dc));
    let t = ok(&format!("{shard}replication = \"sync\"\n"));
    assert_eq!(t.shards()[0].survives(), Some(Survives::Node), "sync alone survives a node");
    assert_eq!(ok(shard).shards()[0].survives(), None, "async survives nothing");
    bad(&format!("{shard}replication = \"async\"\nsurvives = \"dc\"\n"), "needs replication = \"sync\"");
    bad(
        "[[shard]]\nprimary = \"a\"\nreplicas = [\"a\"]\nsurvives = \"dc\"\n",
        "needs a replica in another DC",
    );
    bad(&format!("{shard}survives = \"rack\"\n"), "unknown variant");

    // [dns]
    let t = ok(&format!("{shard}[dns]\nzone = \"example.test\"\napp = \"app\"\nttl_secs = 30\n"));
    assert_eq!((t.dns().zone.as_str(), t.dns().app.as_str(), t.dns().ttl_secs), ("example.test", "app", 30));
    for (dns, expect) in [
        ("zone = \"test\"", "is not a zone name"),
        ("zone = \"Millions.test\"", "is not a zone name"),
        ("zone = \"millions.test.\"", "is not a zone name"),
        ("zone = \"-a.test\"", "is not a zone name"),
        ("app = \"w.w\"", "is not one DNS label"),
        ("app = \"\"", "is not one DNS label"),
        ("ttl_secs = 0", "must be between 1 and 3600"),
        ("ttl_secs = -5", "must be between 1 and 3600"),
        ("ttl = 5", "unknown field"),
    ] {
        bad(&format!("{shard}[dns]\n{dns}\n"), expect);
    }

    // [[region]]
    let region = |name: &str, cidrs: &str, prefer: &str| {
        format!("[[region]]\nname = \"{name}\"\ncidrs = [{cidrs}]\nprefer = [{prefer}]\n")
    };
    let t = ok(&format!("{shard}{}", region("near-b", "\"10.9.0.0/16\"", "\"b\"")));
    assert_eq!(t.dc_order_for("10.9.1.1".parse().unwrap()), ["b", "a"], "unlisted DCs follow");
    bad(&format!("{shard}{}", region("x", "\"10.9.0.0/16\"", "\"c\"")), "prefer[0] \"c\" is not defined");
    bad(&format!("{shard}{}", region("x", "\"10.9.0.0/16\"", "\"a\", \"a\"")), "lists \"a\" twice");
    bad(&format!("{shard}{}", region("x", "\"10.9.0.0/16\"", "")), "prefer must list");
    bad(&format!("{shard}{}", region("x", "", "\"a\"")), "cidrs must list");
    bad(&format!("{shard}{}", region("x", "\"10.9.0.0/33\"", "\"a\"")), "cidrs[0]");
    bad(&format!("{shard}{}", region("x", "\"10.1.0.128/25\"", "\"a\"")), "overlaps dc[0] (a)'s range");
    bad(
        &format!(
            "{shard}{}{}",
            region("x", "\"10.9.0.0/16\"", "\"a\""),
            region("y", "\"10.9.3.0/24\"", "\"b\"")
        ),
        "overlaps a range of region x",
    );
    bad(
        &format!(
            "{shard}{}{}",
            region("x", "\"10.9.0.0/16\"", "\"a\""),
            region("x", "\"10.8.0.0/16\"", "\"b\"")
        ),
        "region names must be unique",
    );

    // [wan]
    let t = ok(&format!("{shard}[wan]\ndelay_ms = 40\njitter_ms = 5\nloss = 0.01\n"));
    let w = t.wan().unwrap();
    assert_eq!((w.delay_ms, w.jitter_ms, w.loss, w.loss_penalty_ms), (40, 5, 0.01, 200));
    assert_eq!(t.nodes_of(Role::Wan).count(), 2, "a gateway per DC");
    for (wan, expect) in [
        ("delay_ms = -1", "must be between 0 and 10000"),
        ("delay_ms = 10001", "must be between 0 and 10000"),
        ("delay_ms = 5\njitter_ms = 6", "must be at most wan.delay_ms"),
        ("loss = 1.5", "a probability between 0 and 1"),
        ("loss = -0.1", "a probability between 0 and 1"),
        ("loss = nan", "a probability between 0 and 1"),
        ("cut = true", "unknown field"),
    ] {
        bad(&format!("{shard}[wan]\n{wan}\n"), expect);
    }
}

#[test]
fn the_test_preset_is_small_and_spans_two_dcs() {
    let t = preset("test").unwrap();
    assert_eq!(t.nodes().len(), 8);
    assert_eq!(t.dcs().len(), 2);
    let names: Vec<_> = t.nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "shard0-pg-1",
            "shard0-pg-2",
            "dc1-redis-1",
            "dc1-worker-1",
            "dc1-web-1",
            "dc1-lb-1",
            "dc1-cdn-1",
            "dc1-dns-1"
        ]
    );
    assert_eq!(addr(&t, "shard0-pg-2"), "127.0.202.100:5432".parse().unwrap());
    assert_eq!(t.nodes_in("dc2").count(), 1);
    assert_eq!(t.shards()[0].replication, Replication::Async);
    assert_eq!(t.shards()[0].synchronous_standby_names("shard0-pg-1"), None);
    // Its ranges are its own: a test stack never lands on a hand-started one.
    for other in ["single", "default"] {
        let other = preset(other).unwrap();
        for dc in t.dcs() {
            assert!(other.dcs().iter().all(|o| !o.cidr.overlaps(&dc.cidr)));
        }
    }
}

#[test]
fn ports_first_and_addrs_place_nodes() {
    let t = ok(&format!(
        "{}\n[ports]\nweb = 9000\npostgres = 6543\n",
        base_with("web = { count = 2 }", r#"web = { count = 2, first = "127.0.1.200" }"#)
            .replacen("worker = { count = 1 }", r#"worker = { addrs = ["127.0.1.7", "127.0.1.3"] }"#, 1)
            .replacen(
                "redis = { count = 1 }",
                "redis = { count = 1 }\npostgres = { first = \"127.0.1.150\" }",
                1
            )
    ));
    check_invariants(&t);
    assert_eq!(addr(&t, "dc1-web-1"), "127.0.1.200:9000".parse().unwrap());
    assert_eq!(addr(&t, "dc1-web-2"), "127.0.1.201:9000".parse().unwrap());
    assert_eq!(addr(&t, "dc1-worker-1").ip(), ip("127.0.1.7"));
    assert_eq!(addr(&t, "dc1-worker-2").ip(), ip("127.0.1.3"));
    assert_eq!(addr(&t, "shard0-pg-1"), "127.0.1.150:6543".parse().unwrap());
    assert_eq!(addr(&t, "shard0-pg-3"), "127.0.2.100:6543".parse().unwrap());
    assert_eq!(addr(&t, "dc2-lb-1").port(), 8000, "unset ports keep their defaults");
}

#[test]
fn a_dc_s_lb_section_carries_the_load_balancer_s_own_settings() {
    let t = ok(&base_with(
        "lb = { count = 1 }",
        "lb = { count = 1, threads = 4, health = { interval_ms = 250 }, rate_limit = { per_second = 50, burst = 10 } }",
    ));
    let settings = &t.dc("dc1").unwrap().lb_settings.0;
    assert_eq!(settings.len(), 3, "{settings:?}");
    assert_eq!(settings["threads"].as_integer(), Some(4));
    assert_eq!(settings["health"]["interval_ms"].as_integer(), Some(250));
    assert_eq!(settings["rate_limit"]["burst"].as_integer(), Some(10));
    assert!(t.dc("dc2").unwrap().lb_settings.0.is_empty(), "dc2 gives none");
    // Topologies differing only in a setting are different topologies.
    assert_ne!(t, ok(BASE));
    // A key that is no setting is still refused, with its line.
    let e = err(&base_with("lb = { count = 1 }", "lb = { count = 1, helth = { interval_ms = 250 } }"));
    assert_contains(&e, "unknown field `helth`");
}

#[test]
fn a_dc_may_hold_only_replicas_and_the_lb_algorithm_is_chosen_per_dc() {
    let t = ok(&format!(
        "{}\n[[dc]]\nname = \"dr\"\ncidr = \"10.9.0.0/28\"\npostgres = {{ first = \"10.9.0.2\" }}\n[[shard]]\nprimary = \"dc2\"\nreplicas = [\"dr\"]\n",
        base_with("lb = { count = 1 }", r#"lb = { count = 1, algorithm = "least_request" }"#)
    ));
    check_invariants(&t);
    assert_eq!(t.dc("dc1").unwrap().lb_algorithm, LbAlgorithm::LeastRequest);
    assert_eq!(t.dc("dc2").unwrap().lb_algorithm, LbAlgorithm::RoundRobin);
    assert_eq!(t.shards()[1].replication, Replication::Async, "async unless said otherwise");
    assert_eq!(addr(&t, "shard1-pg-2"), "10.9.0.2:5432".parse().unwrap());
    assert_eq!(t.nodes_in("dr").count(), 1);
    // A /28 has no .100: postgres.first must be set … or the error says so.
    let e = err(&format!(
        "{}\n[[dc]]\nname = \"dr\"\ncidr = \"10.9.0.0/28\"\n[[shard]]\nprimary = \"dc2\"\nreplicas = [\"dr\"]\n",
        BASE
    ));
    assert_contains(
        &e,
        "dc[2] (dr): the range 10.9.0.0/28 is too small for its nodes: postgres needs 1 address from offset 100, \
         but the range's last usable address is 10.9.0.14; use a larger range or set postgres.first",
    );
}

#[test]
fn ipv6_ranges_work() {
    let t = ok(&base_with("127.0.2.0/24", "fd00:2::/64"));
    check_invariants(&t);
    assert_eq!(addr(&t, "dc2-web-1"), "[fd00:2::14]:8080".parse().unwrap());
    assert_eq!(addr(&t, "shard0-pg-3").ip(), ip("fd00:2::64"));
}

#[test]
fn malformed_toml_is_refused_with_its_line() {
    let e = parse("name = \"x\"\n[[dc]\n", "bad.toml").unwrap_err();
    assert!(matches!(e, TopologyError::Parse { .. }));
    let message = e.to_string();
    assert!(message.starts_with("bad.toml: "), "{message}");
    assert_contains(&message, "line 2");
}

#[test]
fn unknown_keys_and_roles_are_refused() {
    assert_contains(&err(&base_with("replication = \"sync\"", "rol = \"sync\"")), "unknown field `rol`");
    let e = err(&base_with("redis = { count = 1 }", "redis = { count = 1 }\ncache = { count = 1 }"));
    assert_contains(&e, "unknown field `cache`, expected one of");
    assert_contains(
        &err(&base_with("web = { count = 2 }", "web = { count = 2, algorithm = \"x\" }")),
        "unknown field `algorithm`",
    );
    assert_contains(&err(&format!("{BASE}\n[ports]\nhttp = 80\n")), "unknown field `http`");
    assert_contains(&err(&format!("{BASE}\nextra = 1\n")), "unknown field `extra`");
}

#[test]
fn bad_values_are_refused() {
    assert_contains(
        &err(&base_with("\"sync\"", "\"semi\"")),
        "unknown variant `semi`, expected `async` or `sync`",
    );
    assert_contains(
        &err(&base_with("lb = { count = 1 }", "lb = { count = 1, algorithm = \"random\" }")),
        "unknown variant `random`",
    );
    assert_contains(&err(&BASE.replacen("name = \"base\"", "", 1)), "missing field `name`");
    assert_contains(&err(&base_with("cidr = \"127.0.1.0/24\"\n", "\n")), "missing field `cidr`");
    assert_contains(&err(&base_with("primary = \"dc1\"\n", "\n")), "missing field `primary`");
    assert_contains(&err(&base_with("web = { count = 2 }", "web = { count = \"two\" }")), "invalid type");
}

#[test]
fn counts_must_be_in_range_and_present() {
    assert_contains(
        &err(&base_with("web = { count = 2 }", "web = { count = -1 }")),
        "dc[0] (dc1): web.count = -1 must be between 0 and 1000",
    );
    assert_contains(
        &err(&base_with("web = { count = 2 }", "web = { first = \"127.0.1.20\" }")),
        "dc[0] (dc1): [web] needs a count (or a list of addrs)",
    );
}

#[test]
fn a_load_balancer_needs_web_servers() {
    let e = err(&BASE.replacen("web = { count = 1 }", "web = { count = 0 }", 1));
    assert_contains(&e, "dc[1] (dc2): web.count must be at least 1");
}

#[test]
fn web_servers_need_a_load_balancer_and_redis_and_workers_need_redis() {
    let e = err(&base_with("lb = { count = 1 }", "lb = { count = 0 }"));
    assert_contains(&e, "dc[0] (dc1): lb.count must be at least 1");
    let e = err(&base_with("redis = { count = 1 }", "redis = { count = 0 }"));
    assert_contains(&e, "dc[0] (dc1): redis.count must be at least 1: the DC has web servers");
    let only_workers = base_with(
        "lb = { count = 1 }\nweb = { count = 2 }\nworker = { count = 1 }\nredis = { count = 1 }",
        "worker = { count = 1 }",
    );
    assert_contains(&err(&only_workers), "dc[0] (dc1): redis.count must be at least 1: the DC has workers");
}

#[test]
fn the_topology_needs_web_servers_workers_dcs_and_shards() {
    let no_web = "name = \"x\"\n[[dc]]\nname = \"dc1\"\ncidr = \"127.0.1.0/24\"\nworker = { count = 1 }\n\
                  redis = { count = 1 }\n[[shard]]\nprimary = \"dc1\"\n";
    assert_contains(&err(no_web), "no DC has web servers");
    let no_workers = BASE.replace("worker = { count = 1 }", "worker = { count = 0 }");
    assert_contains(&err(&no_workers), "no DC has workers");
    assert_contains(&err("name = \"x\"\n"), "no data centers: add at least one [[dc]]");
    let no_shards = &BASE[..BASE.find("[[shard]]").unwrap()];
    assert_contains(&err(no_shards), "no shards: add at least one [[shard]]");
}

#[test]
fn names_must_be_valid_and_dc_names_unique() {
    assert_contains(&err(&base_with("name = \"base\"", "name = \"My Stack\"")), "name \"My Stack\" must be");
    assert_contains(&err(&base_with("name = \"dc1\"", "name = \"DC 1\"")), "dc[0]: name \"DC 1\" must be");
    assert_contains(&err(&base_with("name = \"dc1\"", "name = \"shard3\"")), "is reserved");
    let e = err(&BASE.replacen("name = \"dc2\"", "name = \"dc1\"", 1));
    assert_contains(
        &e,
        "dc[1] (dc1): the name \"dc1\" is already used by dc[0] (dc1); DC names must be unique",
    );
}

#[test]
fn ranges_must_be_valid_and_disjoint() {
    assert_contains(
        &err(&base_with("127.0.1.0/24", "127.0.1/24")),
        "dc[0] (dc1): cidr: \"127.0.1\" in \"127.0.1/24\" is not an IPv4 or IPv6 address",
    );
    assert_contains(&err(&base_with("127.0.1.0/24", "127.0.1.0")), "expected ADDRESS/PREFIX");
    assert_contains(&err(&base_with("127.0.1.0/24", "127.0.1.0/40")), "longer than the 32 bits");
    assert_contains(&err(&base_with("127.0.1.0/24", "127.0.1.9/24")), "has host bits set");
    let e = err(&base_with("127.0.2.0/24", "127.0.0.0/16"));
    assert_contains(&e, "dc[0] (dc1) and dc[1] (dc2) have overlapping ranges 127.0.1.0/24 and 127.0.0.0/16");
}

#[test]
fn a_range_too_small_for_its_nodes_is_refused() {
    let e = err(&base_with("127.0.1.0/24", "127.0.1.0/28"));
    assert_contains(
        &e,
        "dc[0] (dc1): the range 127.0.1.0/28 is too small for its nodes: web needs 2 addresses from offset 20, \
         but the range's last usable address is 127.0.1.14; use a larger range or set web.first",
    );
    let e = err(&base_with("web = { count = 2 }", "web = { count = 2, first = \"127.0.1.254\" }"));
    assert_contains(
        &e,
        "web needs 2 addresses from 127.0.1.254, but the range's last usable address is 127.0.1.254",
    );
    let e = err(&base_with("web = { count = 2 }", "web = { count = 31 }"));
    assert_contains(
        &e,
        "dc[0] (dc1): 31 web nodes do not fit web's default block 127.0.1.20-127.0.1.49 (30 addresses); \
         set web.first",
    );
}

#[test]
fn explicit_addresses_must_be_in_the_range_and_unique() {
    let e = err(&base_with("web = { count = 2 }", "web = { count = 2, first = \"127.0.1.10\" }"));
    assert_contains(&e, "address 127.0.1.10 is used by both dc1-web-1 and dc1-lb-1");
    let e = err(&base_with("web = { count = 2 }", r#"web = { addrs = ["127.0.1.5", "127.0.1.5"] }"#));
    assert_contains(&e, "address 127.0.1.5 is used by both dc1-web-1 and dc1-web-2");
    let e = err(&base_with("web = { count = 2 }", "web = { count = 2, first = \"127.0.2.20\" }"));
    assert_contains(&e, "dc[0] (dc1): web.first = 127.0.2.20 is outside the DC's range 127.0.1.0/24");
    let e = err(&base_with("web = { count = 2 }", "web = { count = 2, first = \"127.0.1.255\" }"));
    assert_contains(&e, "web.first = 127.0.1.255 is the network or broadcast address of 127.0.1.0/24");
    let e = err(&base_with("web = { count = 2 }", r#"web = { addrs = ["127.0.1.5", "nope"] }"#));
    assert_contains(&e, "dc[0] (dc1): web.addrs[1] = \"nope\" is not an IPv4 or IPv6 address");
    let e = err(&base_with("web = { count = 2 }", r#"web = { count = 3, addrs = ["127.0.1.5"] }"#));
    assert_contains(&e, "web.count = 3 but web.addrs lists 1 addresses");
    let e = err(&base_with("web = { count = 2 }", r#"web = { first = "127.0.1.5", addrs = ["127.0.1.5"] }"#));
    assert_contains(&e, "web.first and web.addrs cannot both be set");
    let e = err(&base_with(
        "redis = { count = 1 }",
        "redis = { count = 1 }\npostgres = { first = \"127.0.1.80\" }",
    ));
    assert_contains(&e, "address 127.0.1.80 is used by both shard0-pg-1 and dc1-redis-1");
}

#[test]
fn shard_placements_must_name_defined_dcs() {
    let e = err(&base_with("replicas = [\"dc1\", \"dc2\"]", "replicas = [\"dc1\", \"dc3\"]"));
    assert_contains(&e, "shard 0: replica DC \"dc3\" is not defined (the DCs are dc1, dc2)");
    let e = err(&base_with("primary = \"dc1\"", "primary = \"dc9\""));
    assert_contains(&e, "shard 0: primary DC \"dc9\" is not defined");
}

#[test]
fn a_synchronous_shard_needs_a_replica() {
    let e = err(&base_with("replicas = [\"dc1\", \"dc2\"]", "replicas = []"));
    assert_contains(&e, "shard 0: replication = \"sync\" needs at least one replica");
    ok(&base_with(
        "replication = \"sync\"\nprimary = \"dc1\"\nreplicas = [\"dc1\", \"dc2\"]",
        "primary = \"dc1\"",
    ));
}

#[test]
fn ports_must_be_between_1_and_65535() {
    assert_contains(
        &err(&format!("{BASE}\n[ports]\nweb = 0\n")),
        "ports.web = 0: a port must be between 1 and 65535",
    );
    assert_contains(&err(&format!("{BASE}\n[ports]\nredis = 70000\n")), "ports.redis = 70000");
}

#[test]
fn roles_have_keys() {
    for role in Role::ALL {
        assert_eq!(role.key().parse::<Role>().unwrap(), role);
        assert_eq!(role.to_string(), role.key());
    }
    assert_eq!(
        "cache".parse::<Role>().unwrap_err(),
        "unknown role \"cache\"; the roles are lb, web, worker, redis, postgres, dns, wan, cdn"
    );
}

#[test]
fn loading_a_missing_file_names_it() {
    let e = topology::load(std::path::Path::new("/nonexistent/topology.toml")).unwrap_err();
    assert_contains(&e.to_string(), "cannot read topology /nonexistent/topology.toml");
}

#[test]
fn check_ports_free_names_the_node_whose_port_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // Every role on the port we hold; only dc1-web-1 lands on 127.0.0.1 itself.
    let text = format!(
        r#"
name = "ports"
[[dc]]
name = "dc1"
cidr = "127.0.0.0/24"
lb = {{ count = 1 }}
web = {{ count = 2, first = "127.0.0.1" }}
worker = {{ count = 1 }}
redis = {{ count = 1 }}
[[shard]]
primary = "dc1"
[ports]
lb = {port}
web = {port}
worker = {port}
redis = {port}
postgres = {port}
"#
    );
    let t = ok(&text);
    assert_eq!(addr(&t, "dc1-web-1"), SocketAddr::from(([127, 0, 0, 1], port)));
    let e = t.check_ports_free().unwrap_err();
    assert!(matches!(&e, TopologyError::PortInUse { node, .. } if node == "dc1-web-1"), "{e}");
    assert_eq!(
        e.to_string(),
        format!("dc1-web-1 cannot listen on 127.0.0.1:{port}: port {port} is already in use on 127.0.0.1")
    );
    drop(taken);
    t.check_ports_free().expect("free once let go");
}

#[test]
fn role_sections_may_be_sub_tables() {
    let t = ok(r#"
name = "tables"

[[dc]]
name = "dc1"
cidr = "127.0.1.0/24"
[dc.lb]
count = 1
algorithm = "least_request"
[dc.web]
count = 2
[dc.worker]
count = 1
[dc.redis]
count = 1

[[dc]]
name = "dc2"
cidr = "127.0.2.0/24"
[dc.postgres]
first = "127.0.2.200"

[[shard]]
primary = "dc1"
replicas = ["dc2"]
"#);
    check_invariants(&t);
    assert_eq!(t.dc("dc1").unwrap().lb_algorithm, LbAlgorithm::LeastRequest);
    assert_eq!(t.count("dc1", Role::Web), 2);
    assert_eq!(addr(&t, "shard0-pg-2").ip(), ip("127.0.2.200"));
}

#[test]
fn a_load_balancers_admin_port_is_checked_and_must_exist() {
    let text = |lb_port: u32| {
        format!(
            "name = \"admin\"\n[[dc]]\nname = \"dc1\"\ncidr = \"127.0.0.0/24\"\nlb = {{ count = 1, first = \"127.0.0.1\" }}\n\
             web = {{ count = 1 }}\nworker = {{ count = 1 }}\nredis = {{ count = 1 }}\n[[shard]]\nprimary = \"dc1\"\n\
             [ports]\nlb = {lb_port}\n"
        )
    };
    let e = topology::parse(&text(65535), "t").unwrap_err().to_string();
    assert_contains(&e, "ports.lb = 65535: a load balancer's admin listener takes the next port");

    // The public port is free, the admin port (public + 1) is taken.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap().port();
    let t = ok(&text(u32::from(admin - 1)));
    let lb = t.node("dc1-lb-1").unwrap();
    assert_eq!(lb.admin_addr(), Some(SocketAddr::from(([127, 0, 0, 1], admin))));
    assert_eq!(t.node("dc1-web-1").unwrap().admin_addr(), None);
    if TcpListener::bind(lb.addr).is_ok() {
        let e = t.check_ports_free().unwrap_err();
        assert!(
            matches!(&e, TopologyError::PortInUse { node, .. } if node == "dc1-lb-1 (admin listener)"),
            "{e}"
        );
    }
}

#[test]
fn a_load_balancers_https_port_is_checked_and_must_be_free() {
    let text = |ports: &str| {
        format!(
            "name = \"https\"\n[[dc]]\nname = \"dc1\"\ncidr = \"127.0.0.0/24\"\nlb = {{ count = 1, first = \"127.0.0.1\" }}\n\
             web = {{ count = 1 }}\nworker = {{ count = 1 }}\nredis = {{ count = 1 }}\n[[shard]]\nprimary = \"dc1\"\n\
             [ports]\n{ports}\n"
        )
    };
    assert_eq!(ok(&text("")).ports().https, 8443, "the default");
    for (ports, want) in [
        ("https = 0", "ports.https = 0: a port must be between 1 and 65535"),
        ("https = 70000", "ports.https = 70000: a port must be between 1 and 65535"),
        ("lb = 9000\nhttps = 9000", "ports.https = 9000: a load balancer listens on ports.lb (9000)"),
        ("lb = 9000\nhttps = 9001", "the HTTPS port must be another"),
    ] {
        let e = topology::parse(&text(ports), "t").unwrap_err().to_string();
        assert_contains(&e, want);
    }
    // Public and admin ports free, the HTTPS port taken.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let https = taken.local_addr().unwrap().port();
    let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let t = ok(&text(&format!("https = {https}\nlb = {}", free.max(2) - 1)));
    let lb = t.node("dc1-lb-1").unwrap();
    assert_eq!(lb.https_addr(t.ports().https), Some(SocketAddr::from(([127, 0, 0, 1], https))));
    assert_eq!(t.node("dc1-web-1").unwrap().https_addr(https), None);
    if TcpListener::bind(lb.addr).is_ok() && lb.admin_addr().is_some_and(|a| TcpListener::bind(a).is_ok()) {
        let e = t.check_ports_free().unwrap_err();
        assert!(
            matches!(&e, TopologyError::PortInUse { node, .. } if node == "dc1-lb-1 (HTTPS listener)"),
            "{e}"
        );
    }
}

#[test]
fn a_dc_gives_its_redis_servers_a_memory_budget_and_bad_budgets_are_refused() {
    use topology::{Eviction, RedisMemory};
    let t = ok(&base_with("redis = { count = 1 }", "redis = { count = 1, maxmemory_mb = 64 }"));
    assert_eq!(
        t.dc("dc1").unwrap().redis_memory,
        RedisMemory { maxmemory_mb: Some(64), eviction: Eviction::AllkeysLru },
        "LRU unless said otherwise"
    );
    assert_eq!(t.dc("dc2").unwrap().redis_memory.maxmemory_mb, None, "no budget unless given");
    let t = ok(&base_with(
        "redis = { count = 1 }",
        r#"redis = { count = 1, maxmemory_mb = 8, eviction = "allkeys-lfu" }"#,
    ));
    assert_eq!(t.dc("dc1").unwrap().redis_memory.eviction.as_redis(), "allkeys-lfu");
    for (section, expected) in [
        (
            "redis = { count = 1, maxmemory_mb = 7 }",
            "dc[0] (dc1): redis.maxmemory_mb = 7 is out of range: give at least 8",
        ),
        ("redis = { count = 1, maxmemory_mb = -1 }", "redis.maxmemory_mb = -1 is out of range"),
        (
            r#"redis = { count = 1, eviction = "allkeys-lru" }"#,
            "dc[0] (dc1): redis.eviction is given without redis.maxmemory_mb",
        ),
        (
            r#"redis = { count = 1, maxmemory_mb = 64, eviction = "noeviction" }"#,
            "unknown variant `noeviction`",
        ),
        (r#"redis = { count = 1, maxmemory_mb = "64" }"#, "invalid type"),
    ] {
        assert_contains(&err(&base_with("redis = { count = 1 }", section)), expected);
    }
    // Every preset bounds its Redis servers.
    for name in PRESETS {
        let t = preset(name).unwrap();
        for dc in t.dcs().iter().filter(|dc| t.nodes_in(&dc.name).any(|n| n.role == Role::Redis)) {
            assert!(dc.redis_memory.maxmemory_mb.is_some(), "{name}: {} has no Redis budget", dc.name);
        }
    }
}

#[test]
fn certificate_renewal_settings_have_defaults_and_bad_ones_are_refused() {
    let t = topology::parse(BASE, "t").unwrap();
    let day = 86_400;
    assert_eq!(
        *t.tls(),
        topology::TlsSettings {
            cert_lifetime_secs: 397 * day,
            renew_before_secs: 397 * day / 3,
            renew_check_secs: 3600
        }
    );
    // A lifetime alone: the window is a third of it, checks four times in it.
    let t = topology::parse(&format!("{BASE}\n[tls]\ncert_lifetime_secs = 60\n"), "t").unwrap();
    assert_eq!((t.tls().renew_before_secs, t.tls().renew_check_secs), (20, 5));
    let t = topology::parse(
        &format!("{BASE}\n[tls]\ncert_lifetime_secs = 60\nrenew_before_secs = 40\nrenew_check_secs = 1\n"),
        "t",
    )
    .unwrap();
    assert_eq!(
        (t.tls().cert_lifetime_secs, t.tls().renew_before_secs, t.tls().renew_check_secs),
        (60, 40, 1)
    );
    for (section, expected) in [
        ("cert_lifetime_secs = 5", "tls.cert_lifetime_secs = 5 must be between 10 and 315360000"),
        ("cert_lifetime_secs = 400000000", "tls.cert_lifetime_secs = 400000000 must be between"),
        (
            "cert_lifetime_secs = 60\nrenew_before_secs = 60",
            "tls.renew_before_secs = 60 must be at least 2 and less than",
        ),
        ("renew_before_secs = 0", "tls.renew_before_secs = 0 must be at least 2"),
        ("renew_before_secs = -3", "tls.renew_before_secs = -3"),
        (
            "cert_lifetime_secs = 60\nrenew_check_secs = 20",
            "tls.renew_check_secs = 20 must be at least 1 and less than the renewal window (tls.renew_before_secs = 20)",
        ),
        ("renew_check_secs = 0", "tls.renew_check_secs = 0 must be at least 1"),
        ("renew_check = 5", "unknown field `renew_check`"),
    ] {
        assert_contains(&err(&format!("{BASE}\n[tls]\n{section}\n")), expected);
    }
}

#[test]
fn web_servers_and_workers_may_scale_within_a_range_whose_addresses_are_reserved() {
    let t = ok(&base_with(
        "web = { count = 2 }",
        "web = { min = 2, max = 4, autoscale = { cpu_per_server = 0.5, interval_secs = 1 } }",
    ));
    check_invariants(&t);
    let dc1 = t.dc("dc1").unwrap();
    assert_eq!(t.count("dc1", Role::Web), 2, "count defaults to min");
    assert_eq!(addr(&t, "dc1-web-1").ip(), ip("127.0.1.20"));
    assert_eq!(addr(&t, "dc1-web-2").ip(), ip("127.0.1.21"));
    assert!(t.node("dc1-web-3").is_none(), "only the first count addresses are nodes");
    let web = dc1.scale(Role::Web).unwrap();
    assert_eq!((web.min, web.max, web.auto), (2, 4, true));
    let expected: Vec<IpAddr> = (20..24).map(|o| ip(&format!("127.0.1.{o}"))).collect();
    assert_eq!(web.addrs, expected, "the addresses of all max nodes, in node order");
    assert_eq!(web.autoscale.len(), 2, "{:?}", web.autoscale);
    assert_eq!(web.autoscale["cpu_per_server"].as_float(), Some(0.5));
    assert_eq!(web.autoscale["interval_secs"].as_integer(), Some(1));
    assert_eq!(dc1.web, *web);
    // Without a range: min == max == count, the nodes' addresses, nothing to autoscale.
    let worker = dc1.scale(Role::Worker).unwrap();
    assert_eq!(
        *worker,
        Scale { min: 1, max: 1, auto: false, addrs: vec![ip("127.0.1.60")], autoscale: toml::Table::new() }
    );
    let dc2_web = t.dc("dc2").unwrap().scale(Role::Web).unwrap();
    assert_eq!((dc2_web.min, dc2_web.max, dc2_web.auto), (1, 1, false));
    assert_eq!(dc2_web.addrs, vec![ip("127.0.2.20")]);
    for role in [Role::LoadBalancer, Role::Redis, Role::Postgres, Role::Dns, Role::Wan, Role::Cdn] {
        assert!(dc1.scale(role).is_none(), "{role} does not scale");
    }
    assert_ne!(t, ok(BASE), "a range makes another topology");

    // A starting count within the range, a first address, a worker range; explicit
    // addresses without a range still work and are the role's addresses.
    let t = ok(&base_with(
        "web = { count = 2 }
worker = { count = 1 }",
        "web = { count = 3, min = 1, max = 5, first = \"127.0.1.200\" }
worker = { min = 1, max = 3 }",
    )
    .replacen("worker = { count = 1 }", r#"worker = { addrs = ["127.0.2.7", "127.0.2.3"] }"#, 1));
    check_invariants(&t);
    let dc1 = t.dc("dc1").unwrap();
    assert_eq!(t.count("dc1", Role::Web), 3);
    assert_eq!(addr(&t, "dc1-web-3").ip(), ip("127.0.1.202"));
    assert_eq!(dc1.web.addrs.last(), Some(&ip("127.0.1.204")));
    assert_eq!((dc1.worker.min, dc1.worker.max, dc1.worker.addrs.len()), (1, 3, 3));
    assert!(dc1.worker.autoscale.is_empty(), "no overrides: the controller's defaults");
    let dc2 = t.dc("dc2").unwrap();
    assert_eq!(dc2.worker.addrs, vec![ip("127.0.2.7"), ip("127.0.2.3")]);
    assert_eq!((dc2.worker.min, dc2.worker.max, dc2.worker.auto), (2, 2, false));

    // A DC without the role: an empty range.
    let t = ok(&format!(
        "{BASE}\n[[dc]]\nname = \"dr\"\ncidr = \"10.9.0.0/24\"\n[[shard]]\nprimary = \"dc2\"\nreplicas = [\"dr\"]\n"
    ));
    let dr = t.dc("dr").unwrap();
    assert_eq!((dr.web.clone(), dr.worker.clone()), (Scale::default(), Scale::default()));
    assert_eq!(dr.web, Scale { min: 0, max: 0, auto: false, addrs: vec![], autoscale: toml::Table::new() });
}

#[test]
fn bad_scaling_ranges_are_refused_naming_the_dc_and_the_key() {
    for (section, expected) in [
        ("web = { min = 3, max = 2 }", "dc[0] (dc1): web.min = 3 is above web.max = 2"),
        ("worker = { min = 2, max = 1 }", "dc[0] (dc1): worker.min = 2 is above worker.max = 1"),
        ("web = { min = 0, max = 2 }", "dc[0] (dc1): web.min = 0: a scaled role keeps at least one node"),
        ("web = { count = 1, min = -1, max = 2 }", "dc[0] (dc1): web.min = -1: a scaled role keeps"),
        ("web = { min = 1 }", "dc[0] (dc1): web.min and web.max go together"),
        ("web = { count = 2, max = 4 }", "dc[0] (dc1): web.min and web.max go together"),
        ("worker = { count = 1, min = 1 }", "dc[0] (dc1): worker.min and worker.max go together"),
        (
            "web = { count = 5, min = 1, max = 4 }",
            "dc[0] (dc1): web.count = 5 is outside web.min..web.max = 1..4",
        ),
        (
            "web = { count = 0, min = 1, max = 4 }",
            "dc[0] (dc1): web.count = 0 is outside web.min..web.max = 1..4",
        ),
        (
            r#"web = { min = 1, max = 2, addrs = ["127.0.1.20", "127.0.1.21"] }"#,
            "dc[0] (dc1): a scaled role's addresses are consecutive: give web.first, not web.addrs",
        ),
        (
            "web = { count = 2, autoscale = { cpu_per_server = 0.5 } }",
            "dc[0] (dc1): web.autoscale needs web.min and web.max",
        ),
        (
            "worker = { count = 1, autoscale = {} }",
            "dc[0] (dc1): worker.autoscale needs worker.min and worker.max",
        ),
        (
            "web = { min = 1, max = 1001, first = \"127.0.1.2\" }",
            "dc[0] (dc1): web.max = 1001 must be at most 1000",
        ),
        (
            "web = { min = 1, max = 31 }",
            "dc[0] (dc1): 31 web nodes (web.max) do not fit web's default block 127.0.1.20-127.0.1.49 \
             (30 addresses); set web.first",
        ),
        (
            "web = { min = 1, max = 60, first = \"127.0.1.200\" }",
            "dc[0] (dc1): the range 127.0.1.0/24 is too small for its nodes: web needs 60 addresses (web.max) \
             from 127.0.1.200, but the range's last usable address is 127.0.1.254; use a larger range",
        ),
        (
            "web = { min = 1, max = 2, autoscale = { cpu_per_server = nan } }",
            "dc[0] (dc1): web.autoscale.cpu_per_server = NaN is not a finite number",
        ),
        (
            "web = { min = 1, max = 2, autoscale = { steps = [1.0, inf] } }",
            "dc[0] (dc1): web.autoscale.steps[1] = inf is not a finite number",
        ),
        ("web = { min = 1, max = 2, autoscale = 5 }", "invalid type: integer `5`, expected a map"),
        ("redis = { count = 1, min = 1, max = 2 }", "unknown field `min`"),
        ("lb = { count = 1, max = 2 }", "unknown field `max`"),
        ("redis = { count = 1, autoscale = {} }", "unknown field `autoscale`"),
    ] {
        // Replaces dc1's section of the role.
        let role = section.split(' ').next().unwrap();
        let from = BASE.lines().find(|l| l.starts_with(&format!("{role} = "))).unwrap();
        assert_contains(&err(&base_with(from, section)), expected);
    }

    // A range too big for a small DC range: the nodes alone would fit, the range not.
    let small = base_with("127.0.1.0/24", "127.0.1.0/27")
        .replacen("worker = { count = 1 }", "worker = { count = 1, first = \"127.0.1.5\" }", 1)
        .replacen(
            "redis = { count = 1 }",
            "redis = { count = 1, first = \"127.0.1.6\" }\npostgres = { first = \"127.0.1.7\" }",
            1,
        );
    ok(&small.replacen("web = { count = 2 }", "web = { count = 2, min = 2, max = 11 }", 1));
    assert_contains(
        &err(&small.replacen("web = { count = 2 }", "web = { count = 2, min = 2, max = 12 }", 1)),
        "dc[0] (dc1): the range 127.0.1.0/27 is too small for its nodes: web needs 12 addresses (web.max) from \
         127.0.1.20, but the range's last usable address is 127.0.1.30; use a larger range or set web.first",
    );

    // The spare addresses are reserved: another node on one is refused.
    let e = err(&base_with(
        "web = { count = 2 }\nworker = { count = 1 }",
        "web = { count = 1, min = 1, max = 4 }\nworker = { count = 1, first = \"127.0.1.23\" }",
    ));
    assert_contains(
        &e,
        "address 127.0.1.23 is reserved for dc1-web-4 (web.max = 4) and used by dc1-worker-1",
    );
    let e = err(&base_with(
        "worker = { count = 1 }",
        "worker = { count = 2, min = 1, max = 30, first = \"127.0.1.60\" }",
    ));
    assert_contains(
        &e,
        "address 127.0.1.80 is reserved for dc1-worker-21 (worker.max = 30) and used by dc1-redis-1",
    );
    // Spare addresses of one DC may equal addresses of nobody else's range.
    ok(&base_with("web = { count = 2 }", "web = { count = 2, min = 1, max = 30 }"));
}

/// The default preset with dc1's web servers given a range (the rest of the line,
/// its comment, kept).
fn default_with_range(range: &str) -> String {
    let text = preset_text("default").unwrap();
    assert!(text.contains("web = { count = 2 }         # 127.0.1.20"));
    text.replacen("web = { count = 2 }", range, 1)
}

#[test]
fn set_count_changes_one_count_and_keeps_the_rest_of_the_file() {
    let text = default_with_range("web = { count = 2, min = 1, max = 4 }");
    assert_eq!(ok(&text).count("dc1", Role::Web), 2);
    let out = set_count(&text, "dc1", Role::Web, 3).unwrap();
    let changed: Vec<(&str, &str)> = text.lines().zip(out.lines()).filter(|(a, b)| a != b).collect();
    assert_eq!(
        changed,
        [(
            "web = { count = 2, min = 1, max = 4 }         # 127.0.1.20, .21  dc1-web-1, dc1-web-2",
            "web = { count = 3, min = 1, max = 4 }         # 127.0.1.20, .21  dc1-web-1, dc1-web-2"
        )]
    );
    assert_eq!(text.lines().count(), out.lines().count(), "comments and layout survive");
    let t = ok(&out);
    check_invariants(&t);
    assert_eq!(t.count("dc1", Role::Web), 3);
    assert_eq!(addr(&t, "dc1-web-3").ip(), ip("127.0.1.22"));
    assert_eq!(t.count("dc2", Role::Web), 2, "other DCs keep theirs");

    // A range without a count gets one, inside the braces.
    let text = default_with_range("web = { min = 1, max = 4 }");
    let out = set_count(&text, "dc1", Role::Web, 4).unwrap();
    assert_contains(&out, "web = { min = 1, max = 4, count = 4 }         # 127.0.1.20");
    assert_eq!(ok(&out).count("dc1", Role::Web), 4);

    // Workers too, in another DC, without a range (parse then holds it to the count).
    let out = set_count(preset_text("default").unwrap(), "dc2", Role::Worker, 3).unwrap();
    assert_contains(&out, "worker = { count = 3 }      # 127.0.2.60");
    assert_eq!(ok(&out).count("dc2", Role::Worker), 3);

    // Outside the range: written, and refused by parse with the range's message.
    let out =
        set_count(&default_with_range("web = { count = 2, min = 1, max = 4 }"), "dc1", Role::Web, 5).unwrap();
    let e = parse(&out, "t.toml").unwrap_err().to_string();
    assert_contains(&e, "dc[0] (dc1): web.count = 5 is outside web.min..web.max = 1..4");
}

#[test]
fn set_count_edits_role_sub_tables() {
    let text = r#"# A topology with sub-tables.
name = "tables"

[[dc]]
name = "dc1"
cidr = "127.0.1.0/24"
[dc.lb]
count = 1
[dc.web]          # the web servers
count = 2         # to start with
min = 1
max = 3
[dc.worker]
min = 1           # no count: min
max = 2
[dc.redis]
count = 1

[[shard]]
primary = "dc1"
"#;
    assert_eq!(ok(text).count("dc1", Role::Worker), 1);
    let out = set_count(text, "dc1", Role::Web, 3).unwrap();
    assert_eq!(
        out,
        text.replacen("count = 2         # to start with", "count = 3         # to start with", 1)
    );
    let out = set_count(&out, "dc1", Role::Worker, 2).unwrap();
    assert_contains(&out, "[dc.worker]\nmin = 1           # no count: min\nmax = 2\ncount = 2\n[dc.redis]");
    assert_contains(&out, "# A topology with sub-tables.");
    let t = ok(&out);
    check_invariants(&t);
    assert_eq!((t.count("dc1", Role::Web), t.count("dc1", Role::Worker)), (3, 2));

    // Dotted keys in the DC's table.
    let dotted = "name = \"dotted\"\n[[dc]]\nname = \"dc1\"\ncidr = \"127.0.1.0/24\"\nlb.count = 1\n\
                  web.count = 1 # one\nweb.min = 1\nweb.max = 2\nworker.min = 1\nworker.max = 2\nredis.count = 1\n\
                  [[shard]]\nprimary = \"dc1\"\n";
    let out = set_count(dotted, "dc1", Role::Web, 2).unwrap();
    assert_eq!(out, dotted.replacen("web.count = 1 # one", "web.count = 2 # one", 1));
    let out = set_count(&out, "dc1", Role::Worker, 2).unwrap();
    assert_eq!((ok(&out).count("dc1", Role::Web), ok(&out).count("dc1", Role::Worker)), (2, 2));
}

#[test]
fn set_count_refuses_what_it_cannot_set() {
    let text = preset_text("default").unwrap();
    let e = set_count(text, "dc9", Role::Web, 2).unwrap_err();
    assert!(matches!(&e, TopologyError::Edit { dc, role: Role::Web, .. } if dc == "dc9"), "{e:?}");
    assert_eq!(
        e.to_string(),
        "cannot set web.count of DC \"dc9\": no [[dc]] is named \"dc9\" (the DCs are \"dc1\", \"dc2\")"
    );
    let e = set_count(text, "dc1", Role::LoadBalancer, 2).unwrap_err().to_string();
    assert_eq!(e, "cannot set lb.count of DC \"dc1\": only web servers and workers scale, not lb nodes");
    let no_worker = text.replacen("worker = { count = 1 }      # 127.0.1.60       dc1-worker-1\n", "", 1);
    let e = set_count(&no_worker, "dc1", Role::Worker, 1).unwrap_err().to_string();
    assert_eq!(e, "cannot set worker.count of DC \"dc1\": the DC has no worker section to set the count in");
    let e = set_count("name = \"x\"\n[[dc]\n", "dc1", Role::Web, 1).unwrap_err().to_string();
    assert_contains(
        &e,
        "cannot set web.count of DC \"dc1\": the text is not TOML: TOML parse error at line 2",
    );
    let e = set_count("name = \"x\"\n", "dc1", Role::Web, 1).unwrap_err().to_string();
    assert_contains(&e, "no [[dc]] is named \"dc1\" (the text has none)");
}

#[test]
fn the_documented_scaling_range_holds() {
    let doc = include_str!("../../../docs/TOPOLOGY.md");
    let example = doc
        .split("```toml\n")
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("autoscale = "))
        .expect("docs/TOPOLOGY.md shows a scaling range");
    let t = ok(&format!("name = \"doc\"\n{example}[[shard]]\nprimary = \"dc1\"\n"));
    check_invariants(&t);
    let web = &t.dc("dc1").unwrap().web;
    assert_eq!((t.count("dc1", Role::Web), web.min, web.max, web.auto), (2, 2, 6, true));
    assert_eq!(web.autoscale["cpu_per_server"].as_float(), Some(0.5));
}
