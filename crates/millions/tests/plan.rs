//! `millions plan`, the capacity planner, as a user runs it: the binary, its
//! output and its exit status.

use std::process::{Command, Output};

use serde_json::Value;

/// Run `millions plan ARGS`.
fn plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_millions"))
        .arg("plan")
        .args(args)
        .output()
        .expect("running millions plan")
}

/// Run `millions plan ARGS --json`, which must succeed, and parse what it printed.
fn plan_json(args: &[&str]) -> Value {
    let o = plan(&[args, &["--json"]].concat());
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&o)))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The plan's nodes of `tier` over every DC.
fn tier_total(plan: &Value, tier: &str) -> u64 {
    let tiers = plan["tiers"].as_array().expect("tiers");
    let t = tiers.iter().find(|t| t["tier"] == tier).unwrap_or_else(|| panic!("no tier {tier}"));
    t["total"].as_u64().expect("a count")
}

const TIERS: [&str; 8] =
    ["lb", "web", "redis", "worker", "cdn", "postgres_primary", "postgres_replica", "dns"];

#[test]
fn a_plan_names_every_tier_the_storage_the_bandwidth_and_every_assumptions_source() {
    let o = plan(&["--dau", "1000000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for section in ["Traffic", "Nodes", "Storage per year", "Bandwidth at peak", "Assumptions"] {
        assert!(text.contains(section), "{section:?} missing:\n{text}");
    }
    for tier in TIERS {
        assert!(text.contains(tier), "{tier} missing:\n{text}");
    }
    assert!(text.contains("1,000,000 daily active users"), "{text}");
    assert!(text.contains("50,000,000"), "requests per day: {text}");
    // Every assumption is shown with where it comes from.
    for (name, source) in [
        ("peak-factor", "assumed"),
        ("web_cpu_ms_per_request", "docs/BENCHMARKS.md"),
        ("row_bytes", "Seeding at millions scale"),
        ("cdn_byte_hit_ratio", "hit ratio"),
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name}: {text}"));
        assert!(line.contains(source), "{name}: {line}");
    }
    // The same plan for a thousand users is small but whole: every tier in every DC.
    let small = plan_json(&["--dau", "1k"]);
    for dc in small["dcs"].as_array().unwrap() {
        for tier in ["lb", "web", "redis", "worker", "cdn", "postgres_replica", "dns"] {
            assert!(dc["nodes"][tier].as_u64().unwrap() >= 1, "{tier} in {dc}");
        }
    }
    assert_eq!(small["shards"]["count"], 1);
}

#[test]
fn the_json_plan_parses_with_the_expected_keys() {
    let p = plan_json(&["--dau", "2.5M"]);
    assert_eq!(p["dau"], 2_500_000.0);
    for key in [
        "traffic",
        "tiers",
        "shards",
        "dcs",
        "nodes_total",
        "storage_per_year",
        "bandwidth",
        "warnings",
        "assumptions",
    ] {
        assert!(!p[key].is_null(), "{key} missing: {p:#}");
    }
    assert!(p.get("check").is_none(), "no check unless asked");
    let tiers: Vec<&str> =
        p["tiers"].as_array().unwrap().iter().map(|t| t["tier"].as_str().unwrap()).collect();
    assert_eq!(tiers, TIERS);
    // Two DCs by default, whose nodes add up to the total.
    let dcs = p["dcs"].as_array().unwrap();
    assert_eq!(dcs.len(), 2);
    let sum: u64 = dcs.iter().map(|d| d["total"].as_u64().unwrap()).sum();
    assert_eq!(sum, p["nodes_total"].as_u64().unwrap());
    let by_tier: u64 = TIERS.iter().map(|t| tier_total(&p, t)).sum();
    assert_eq!(by_tier, sum);
    // The traffic follows from the model's numbers: 2.5 M × 50 requests a day, × 3 at peak.
    let t = &p["traffic"];
    assert_eq!(t["requests_per_day"], 125_000_000.0);
    let peak = t["peak_per_sec"].as_f64().unwrap();
    assert!((peak - 125e6 / 86400.0 * 3.0).abs() < 1e-6, "{peak}");
    assert!((t["peak_per_sec_per_dc"].as_f64().unwrap() - peak / 2.0).abs() < 1e-6);
    for key in ["database_bytes_per_copy", "database_bytes_all_copies", "photo_bytes", "rows", "photos"] {
        assert!(p["storage_per_year"][key].as_f64().unwrap() > 0.0, "{key}");
    }
    for key in ["client_ingress_bytes_per_sec", "app_egress_bytes_per_sec", "photo_egress_bytes_per_sec"] {
        assert!(p["bandwidth"][key].as_f64().unwrap() > 0.0, "{key}");
    }
    // Every assumption has a value, a source and a way to change it.
    let assumptions = p["assumptions"].as_array().unwrap();
    assert!(assumptions.len() > 30, "{}", assumptions.len());
    for a in assumptions {
        assert!(a["value"].is_number(), "{a}");
        assert!(!a["source"].as_str().unwrap().is_empty(), "{a}");
        assert!(a["set_with"].as_str().unwrap().starts_with("--"), "{a}");
    }
    assert!(assumptions.iter().any(|a| a["name"] == "dau" && a["source"] == "given"));
}

#[test]
fn more_users_never_need_fewer_nodes_storage_or_bandwidth() {
    let sizes = ["1000", "10000", "100000", "1000000", "10000000", "100000000"];
    let plans: Vec<Value> = sizes.iter().map(|n| plan_json(&["--dau", n])).collect();
    for pair in plans.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        for tier in TIERS {
            assert!(tier_total(b, tier) >= tier_total(a, tier), "{tier}: {} then {}", a["dau"], b["dau"]);
        }
        assert!(b["nodes_total"].as_u64() >= a["nodes_total"].as_u64());
        assert!(b["shards"]["count"].as_u64() >= a["shards"]["count"].as_u64());
        assert!(
            b["storage_per_year"]["total_bytes"].as_f64() > a["storage_per_year"]["total_bytes"].as_f64()
        );
        assert!(
            b["bandwidth"]["photo_egress_bytes_per_sec"].as_f64()
                > a["bandwidth"]["photo_egress_bytes_per_sec"].as_f64()
        );
    }
    let (first, last) = (&plans[0], &plans[plans.len() - 1]);
    assert!(last["nodes_total"].as_u64().unwrap() > 10 * first["nodes_total"].as_u64().unwrap());
    assert!(last["shards"]["count"].as_u64().unwrap() > 1);
}

#[test]
fn n_plus_two_adds_a_node_to_every_tier_and_a_replica_to_every_shard() {
    let n1 = plan_json(&["--dau", "5M", "--redundancy", "1"]);
    let n2 = plan_json(&["--dau", "5M", "--redundancy", "2"]);
    assert!(n2["nodes_total"].as_u64() > n1["nodes_total"].as_u64());
    let dcs = n1["dcs"].as_array().unwrap().len() as u64;
    for tier in ["lb", "web", "redis", "worker", "cdn"] {
        assert_eq!(tier_total(&n2, tier), tier_total(&n1, tier) + dcs, "{tier}: one more spare per DC");
    }
    assert_eq!(n1["shards"]["replicas_per_dc"], 1);
    assert_eq!(n2["shards"]["replicas_per_dc"], 2);
    assert_eq!(n2["shards"]["members"].as_u64().unwrap(), 1 + 2 * dcs);
    // A DC's loss carried by the others: each DC sized for the whole peak of two.
    let survive = plan_json(&["--dau", "5M", "--survive-dc-loss"]);
    assert_eq!(survive["traffic"]["peak_per_sec_per_dc"], survive["traffic"]["peak_per_sec"]);
    assert!(tier_total(&survive, "web") > tier_total(&n1, "web"));
    // More DCs, more nodes in all: every DC runs every tier.
    let three = plan_json(&["--dau", "5M", "--dcs", "3"]);
    assert_eq!(three["dcs"].as_array().unwrap().len(), 3);
    assert!(three["nodes_total"].as_u64() > n1["nodes_total"].as_u64());
}

#[test]
fn bad_inputs_are_refused_with_a_message_and_no_plan() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{ not json").unwrap();
    let array = dir.path().join("array.json");
    std::fs::write(&array, "[1, 2]").unwrap();
    let unknown = dir.path().join("unknown.json");
    std::fs::write(&unknown, r#"{"web_cpu_ms_per_requets": 0.5}"#).unwrap();
    let negative = dir.path().join("negative.json");
    std::fs::write(&negative, r#"{"web_cpu_ms_per_request": -1}"#).unwrap();
    let report = dir.path().join("report.json");
    std::fs::write(&report, r#"{"achieved_rate": 800.0, "ops": {}, "verdict": {"passed": true}}"#).unwrap();
    let missing = dir.path().join("missing.json");
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "--dau"),
        (vec!["--dau".into(), "0".into()], "at least 1"),
        (vec!["--dau".into(), "-5".into()], "at least 1"),
        (vec!["--dau".into(), "many".into()], "not a number of users"),
        (vec!["--dau".into(), "1.5".into()], "whole number"),
        (vec!["--dau".into(), "1M".into(), "--utilization".into(), "0".into()], "--utilization"),
        (vec!["--dau".into(), "1M".into(), "--utilization".into(), "1.5".into()], "--utilization"),
        (vec!["--dau".into(), "1M".into(), "--utilization".into(), "-0.5".into()], "--utilization"),
        (vec!["--dau".into(), "1M".into(), "--redundancy".into(), "3".into()], "--redundancy"),
        (vec!["--dau".into(), "1M".into(), "--peak-factor".into(), "0.5".into()], "--peak-factor"),
        (
            vec![
                "--dau".into(),
                "1M".into(),
                "--post-share".into(),
                "0.9".into(),
                "--like-share".into(),
                "0.5".into(),
            ],
            "add up",
        ),
        (vec!["--dau".into(), "1M".into(), "--dcs".into(), "1".into(), "--survive-dc-loss".into()], "2 DCs"),
        (vec!["--dau".into(), "1M".into(), "--costs".into(), path(&missing)], "reading the costs file"),
        (vec!["--dau".into(), "1M".into(), "--costs".into(), path(&garbage)], "not valid JSON"),
        (vec!["--dau".into(), "1M".into(), "--costs".into(), path(&array)], "JSON object"),
        (vec!["--dau".into(), "1M".into(), "--costs".into(), path(&unknown)], "no cost named"),
        (vec!["--dau".into(), "1M".into(), "--costs".into(), path(&negative)], "zero or more"),
        (vec!["--dau".into(), "1M".into(), "--costs".into(), path(&report)], "bench --json"),
        (vec!["--dau".into(), "1M".into(), "--cost".into(), "web_cpu_ms_per_request".into()], "NAME=VALUE"),
        (
            vec!["--dau".into(), "1M".into(), "--cost".into(), "cdn_byte_hit_ratio=2".into()],
            "between 0 and 1",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for json in [false, true] {
            let args = if json { [args.as_slice(), &["--json"]].concat() } else { args.clone() };
            let o = plan(&args);
            assert!(!o.status.success(), "{args:?} was accepted: {}", stdout(&o));
            assert!(stdout(&o).is_empty(), "{args:?} printed a plan: {}", stdout(&o));
            assert!(stderr(&o).contains(expected), "{args:?}: {expected:?} not in {}", stderr(&o));
        }
    }
}

#[test]
fn a_costs_file_replaces_the_defaults_and_is_named_as_their_source() {
    let dir = tempfile::tempdir().unwrap();
    // The defaults, written as a costs file and read back, plan the same.
    let o = plan(&["--print-costs"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut costs: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(costs["measured_capacity_rps"], 975.0);
    let file = dir.path().join("costs.json");
    std::fs::write(&file, serde_json::to_string(&costs).unwrap()).unwrap();
    let file_text = file.to_string_lossy().into_owned();
    let defaults = plan_json(&["--dau", "20M"]);
    let same = plan_json(&["--dau", "20M", "--costs", &file_text]);
    assert_eq!(same["nodes_total"], defaults["nodes_total"]);
    // A web tier ten times as costly needs more web servers, and says where that came from.
    costs["web_cpu_ms_per_request"] = (10.0 * costs["web_cpu_ms_per_request"].as_f64().unwrap()).into();
    costs["source"] = "a run on a slower machine".into();
    std::fs::write(&file, serde_json::to_string(&costs).unwrap()).unwrap();
    let costly = plan_json(&["--dau", "20M", "--costs", &file_text]);
    assert!(tier_total(&costly, "web") > tier_total(&defaults, "web"));
    assert_eq!(tier_total(&costly, "lb"), tier_total(&defaults, "lb"));
    let web =
        costly["assumptions"].as_array().unwrap().iter().find(|a| a["name"] == "web_cpu_ms_per_request");
    let source = web.unwrap()["source"].as_str().unwrap();
    assert!(source.contains(&file_text) && source.contains("a slower machine"), "{source}");
    // One cost on the command line, after the file.
    let one = plan_json(&["--dau", "20M", "--costs", &file_text, "--cost", "web_cpu_ms_per_request=0.5"]);
    assert_eq!(tier_total(&one, "web"), tier_total(&defaults, "web"));
}

#[test]
fn the_check_predicts_the_default_topologys_capacity_beside_the_measured_one() {
    let p = plan_json(&["--check"]);
    assert!(p.get("tiers").is_none(), "--check alone plans nothing: {p:#}");
    let c = &p["check"];
    assert_eq!(c["measured_per_sec"], 975.0);
    assert_eq!(c["machine_cores"], 2.0);
    let predicted = c["predicted_per_sec"].as_f64().unwrap();
    let full = c["predicted_per_sec_at_full_cpu"].as_f64().unwrap();
    assert!((predicted - full * 0.6).abs() < 1e-6, "{c:#}");
    assert!((c["predicted_over_measured"].as_f64().unwrap() - predicted / 975.0).abs() < 1e-9);
    // The model's rate at the knee's utilization is the measured rate.
    let knee = c["utilization_at_measured"].as_f64().unwrap();
    assert!((full * knee - 975.0).abs() < 1e-6, "{c:#}");
    assert!(knee > 0.0 && knee < 1.0, "{knee}");
    let dedicated = c["dedicated"].as_array().unwrap();
    assert_eq!(dedicated.len(), 5);
    assert!(dedicated.iter().all(|t| t["nodes"].as_u64().unwrap() >= 2), "{c:#}");
    // At the knee's utilization the model gives the measured rate.
    let at_knee = plan_json(&["--check", "--utilization", &knee.to_string()]);
    let predicted_at_knee = at_knee["check"]["predicted_per_sec"].as_f64().unwrap();
    assert!((predicted_at_knee - 975.0).abs() < 1e-6, "{predicted_at_knee}");
    // With a plan, in words.
    let o = plan(&["--dau", "1M", "--check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("predicted capacity") && text.contains("measured capacity"), "{text}");
    assert!(text.contains(&format!("{}/s", predicted.round())), "{text}");
}
