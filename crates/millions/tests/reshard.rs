//! Buckets moved between two shards of a running topology while the load
//! generator writes: nothing acknowledged is lost, no request fails, and bad
//! requests change nothing.

mod support;

use support::{Stack, assert_verified, bench, millions, own_ranges, status_json, text};

/// Two shards of one primary each, in one data center.
const TOPOLOGY: &str = r#"
name = "reshard"

[[dc]]
name = "dc1"
cidr = "127.0.201.0/24"
lb = { count = 1 }
web = { count = 2 }
worker = { count = 1 }
redis = { count = 1 }

[[shard]]
primary = "dc1"

[[shard]]
primary = "dc1"
"#;

fn buckets(status: &serde_json::Value) -> Vec<u64> {
    status["shards"].as_array().unwrap().iter().map(|s| s["buckets"].as_u64().unwrap()).collect()
}

#[test]
fn buckets_move_under_load_and_bad_moves_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let topo = own_ranges(home, TOPOLOGY);
    let o = millions(home, &["up", "--topology", &topo.to_string_lossy(), "--unsafe-fast-storage"]);
    let _stack = Stack(home);
    assert!(o.status.success(), "{}", text(&o));
    let before = status_json(home);
    assert_eq!(buckets(&before), [2048, 2048]);

    // Bad requests: a clear message, a failed exit, nothing changed.
    for (args, says) in [
        (["shard", "move", "5000", "--to", "1"], "bucket 5000 is out of range"),
        (["shard", "move", "x", "--to", "1"], "not a bucket number"),
        (["shard", "move", "3000", "--to", "1"], "bucket 3000 is already on shard 1"),
        (["shard", "move", "1", "--to", "7"], "there is no shard 7"),
        (["shard", "move", "1,3000", "--to", "0"], "bucket 1 is already on shard 0"),
        (["shard", "move", "9-3", "--to", "1"], "backwards"),
    ] {
        let o = millions(home, &args);
        assert!(!o.status.success(), "{args:?} must fail: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }
    let unchanged = status_json(home);
    assert_eq!(unchanged["cluster"]["epoch"], before["cluster"]["epoch"], "a refused move publishes nothing");
    assert_eq!(buckets(&unchanged), [2048, 2048]);

    // Under the default mix, two moves one after the other.
    let load = {
        let home = home.to_path_buf();
        std::thread::spawn(move || {
            bench(
                &home,
                &[
                    "--rate",
                    "80",
                    "--duration",
                    "12s",
                    "--warmup",
                    "500ms",
                    "--users",
                    "100",
                    "--create-users",
                ],
            )
        })
    };
    for range in ["0-127", "128-255"] {
        let o = millions(home, &["shard", "move", range, "--to", "1"]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("128 buckets from shard 0 to shard 1"), "{}", text(&o));
    }
    let (o, report) = load.join().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(report["errors"], 0, "no request failed: {}", report["errors_by_kind"]);
    assert_verified(&report);

    let after = status_json(home);
    assert_eq!(buckets(&after), [2048 - 256, 2048 + 256]);
    assert!(after["cluster"]["moves"].as_array().is_none_or(|m| m.is_empty()), "no move left under way");
    let moved: Vec<&serde_json::Value> =
        after["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "bucket-move").collect();
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert!(moved[0]["detail"].as_str().unwrap().contains("writes paused"), "{}", moved[0]);
}
