//! Property-based fuzzing of the topology file's parsing and validation
//! (docs/SECURITY.md): TOML-ish text and the presets mutated the ways people
//! break files (`settings::fuzz`). Whatever the text, `parse` returns a topology
//! that keeps every promise `Topology` makes (unique names and addresses, each
//! node in its DC's range, each shard a primary) or an error naming the file;
//! never a panic. Each runs `PROPTEST_CASES` cases (256 by default; `make fuzz`
//! runs many more).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use settings::fuzz::{config, mutated, toml_ish};
use topology::{PRESETS, Role, Topology, parse, preset_text};

const ORIGIN: &str = "fuzz.toml";

/// Check what `parse` made of `text`.
fn judged(text: &str) -> Result<(), TestCaseError> {
    match parse(text, ORIGIN) {
        Ok(t) => keeps_its_promises(&t),
        Err(e) => {
            let message = e.to_string();
            prop_assert!(message.starts_with(ORIGIN) && message.len() > ORIGIN.len() + 2, "{message}");
            Ok(())
        }
    }
}

/// What a validated topology promises its users.
fn keeps_its_promises(t: &Topology) -> Result<(), TestCaseError> {
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for node in t.nodes() {
        prop_assert!(names.insert(node.name.as_str()), "two nodes named {}", node.name);
        for (addr, what) in node.listen_addrs(t.ports().https) {
            prop_assert!(addrs.insert(addr), "{addr}{what} of {} is taken twice", node.name);
        }
        let dc = t.dc(&node.dc);
        prop_assert!(dc.is_some(), "{} is in an unknown DC {}", node.name, node.dc);
        prop_assert!(dc.unwrap().cidr.contains(node.addr.ip()), "{} is outside its DC's range", node.name);
        prop_assert_eq!(node.addr.port(), t.ports().of(node.role));
        prop_assert_eq!(node.shard.is_some(), node.role == Role::Postgres);
        prop_assert_eq!(t.node(&node.name), Some(node));
        for dc in t.dcs() {
            // Never a panic, whichever pair is asked.
            let _ = t.address_from(&dc.name, node);
        }
    }
    // A scaled role's nodes have the first of its range's addresses, the range's
    // other addresses are no node's, and min <= count <= max.
    let ips: HashSet<IpAddr> = t.nodes().iter().map(|n| n.addr.ip()).collect();
    for dc in t.dcs() {
        for role in [Role::Web, Role::Worker] {
            let scale = dc.scale(role);
            prop_assert!(scale.is_some(), "{} has no {} range", dc.name, role);
            let scale = scale.unwrap();
            let nodes: Vec<IpAddr> =
                t.nodes_in(&dc.name).filter(|n| n.role == role).map(|n| n.addr.ip()).collect();
            prop_assert!(
                scale.min as usize <= nodes.len() && nodes.len() <= scale.max as usize,
                "{:?}",
                scale
            );
            prop_assert_eq!(scale.addrs.len(), scale.max as usize);
            prop_assert_eq!(&scale.addrs[..nodes.len()], &nodes[..]);
            prop_assert!(scale.addrs[nodes.len()..].iter().all(|ip| !ips.contains(ip)), "{:?}", scale);
        }
    }
    for (i, shard) in t.shards().iter().enumerate() {
        let primaries = t
            .nodes()
            .iter()
            .filter(|n| n.shard.is_some_and(|m| m.shard.0 as usize == i && m.initial_primary))
            .count();
        prop_assert_eq!(primaries, 1, "shard {} has {} primaries: {:?}", i, primaries, shard);
    }
    // Every client, in a region or not, gets every DC once.
    let mut dcs: Vec<&str> = t.dcs().iter().map(|d| d.name.as_str()).collect();
    dcs.sort_unstable();
    let clients = t.regions().iter().flat_map(|r| r.cidrs.iter().map(|c| c.network()));
    for ip in clients.chain([IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))]) {
        let mut order = t.dc_order_for(ip);
        order.sort_unstable();
        prop_assert_eq!(&order, &dcs);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1.0))]

    #[test]
    fn toml_ish_text_is_a_topology_or_an_error(text in toml_ish()) {
        judged(&text)?;
    }

    #[test]
    fn a_mutated_preset_is_a_topology_or_an_error(
        text in prop::sample::select(PRESETS).prop_flat_map(|name| mutated(preset_text(name).expect("a preset"))),
    ) {
        judged(&text)?;
    }
}

/// The mutations reach both sides: most mutated presets still parse (so the
/// promises above are checked on many topologies), and many do not.
#[test]
fn mutated_presets_are_often_valid_and_often_not() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut valid, mut refused) = (0, 0);
    for name in PRESETS {
        let text = preset_text(name).unwrap();
        keeps_its_promises(&parse(text, name).unwrap()).unwrap();
        let strategy = mutated(text);
        for _ in 0..100 {
            match parse(&strategy.new_tree(&mut runner).unwrap().current(), ORIGIN) {
                Ok(t) => {
                    keeps_its_promises(&t).unwrap();
                    valid += 1;
                }
                Err(_) => refused += 1,
            }
        }
    }
    assert!(valid >= 30 && refused >= 30, "{valid} valid, {refused} refused");
}
