//! Buckets moved between two shards of a running topology while the load
//! generator writes, then shards added to it and filled: nothing acknowledged
//! is lost, no request fails, and bad requests change nothing.

mod support;

use std::path::Path;

use support::{Stack, assert_verified, bench, millions, millions_with, own_ranges, poll, status_json, text};

/// Two shards in one data center: shard 0 a lone primary, shard 1 a primary
/// with a synchronous read replica (reads of moved buckets go to it; its primary
/// fails over mid-move).
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
replication = "sync"
primary = "dc1"
replicas = ["dc1"]
"#;

/// The controller's drill hook: a move waits at the step the run directory's
/// `move.hold` names, so a process can be killed there.
const HOLD: (&str, &str) = ("MILLIONS_MOVE_HOLD", "1");

fn up(home: &Path, topo: &Path) -> std::process::Output {
    millions_with(home, &["up", "--topology", &topo.to_string_lossy(), "--unsafe-fast-storage"], &[HOLD])
}

/// `millions shard move BUCKETS --to 1` on a thread of its own: it waits for the move.
fn start_move(home: &Path, buckets: &str) -> std::thread::JoinHandle<std::process::Output> {
    let (home, buckets) = (home.to_path_buf(), buckets.to_owned());
    std::thread::spawn(move || millions(&home, &["shard", "move", &buckets, "--to", "1"]))
}

/// The phase of the one move under way, if any.
fn phase(home: &Path) -> Option<String> {
    let s = status_json(home);
    let moves = s["cluster"]["moves"].as_array()?.clone();
    moves.first().and_then(|m| m["phase"].as_str().map(str::to_owned))
}

fn events(status: &serde_json::Value, kind: &str) -> usize {
    status["events"].as_array().unwrap().iter().filter(|e| e["kind"] == kind).count()
}

fn kill_controller(home: &Path) {
    let pid = status_json(home)["controller"]["pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    poll("the killed controller to be gone", || !nodes::pid_alive(pid as u32));
}

fn buckets(status: &serde_json::Value) -> Vec<u64> {
    status["shards"].as_array().unwrap().iter().map(|s| s["buckets"].as_u64().unwrap()).collect()
}

#[test]
fn buckets_move_under_load_and_bad_moves_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let topo = own_ranges(home, TOPOLOGY);
    let o = up(home, &topo);
    let _stack = Stack(home);
    assert!(o.status.success(), "{}", text(&o));
    poll("shard 1's replica to serve reads", || {
        status_json(home)["cluster"]["shards"][1]["replicas"].as_array().is_some_and(|r| r.len() == 1)
    });
    let before = status_json(home);
    assert_eq!(buckets(&before), [2048, 2048]);
    for shard in before["shards"].as_array().unwrap() {
        assert!(shard["size_bytes"].as_u64() > Some(1 << 20), "each shard's size is known: {shard}");
        assert!(shard["rows_estimate"].as_u64().is_some(), "{shard}");
    }

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
    assert!(unchanged["cluster"]["directory"].is_null(), "{}", unchanged["cluster"]);
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
    // Each step of each move is in the event log with its time.
    let steps = after["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "bucket-move-step");
    let steps: Vec<&str> = steps.map(|e| e["detail"].as_str().unwrap()).collect();
    assert_eq!(steps.len(), 2 * 4, "capture, copy, catch-up and fence of each: {steps:?}");
    assert!(
        steps[0].starts_with("move 1: capture done in ") && steps[0].ends_with("next: copy"),
        "{steps:?}"
    );
    assert!(moved[0]["detail"].as_str().unwrap().contains("writes paused"), "{}", moved[0]);

    // Kill points, under load again.
    let load = {
        let home = home.to_path_buf();
        std::thread::spawn(move || {
            bench(&home, &["--rate", "60", "--duration", "20s", "--warmup", "500ms", "--users", "100"])
        })
    };
    let hold = home.join("move.hold");
    // The controller dies while copying: the next one rolls the move back.
    std::fs::write(&hold, "copy").unwrap();
    let cli = start_move(home, "256-271");
    poll("the move to reach its copy", || phase(home).as_deref() == Some("copy"));
    kill_controller(home);
    assert!(!cli.join().unwrap().status.success(), "the CLI lost its controller");
    std::fs::remove_file(&hold).unwrap();
    let o = up(home, &topo);
    assert!(o.status.success(), "{}", text(&o));
    poll("the move to be rolled back", || {
        let s = status_json(home);
        events(&s, "bucket-move-rolled-back") == 1 && phase(home).is_none()
    });
    assert_eq!(buckets(&status_json(home)), [2048 - 256, 2048 + 256], "nothing moved");

    // The controller dies once the move is about to fence: the next one finishes it.
    std::fs::write(&hold, "fenced").unwrap();
    let cli = start_move(home, "272-287");
    poll("the move to reach its fence", || phase(home).as_deref() == Some("fenced"));
    kill_controller(home);
    assert!(!cli.join().unwrap().status.success(), "the CLI lost its controller");
    std::fs::remove_file(&hold).unwrap();
    let o = up(home, &topo);
    assert!(o.status.success(), "{}", text(&o));
    poll("the move to be finished", || {
        events(&status_json(home), "bucket-move") == 3 && phase(home).is_none()
    });
    assert_eq!(buckets(&status_json(home)), [2048 - 272, 2048 + 272]);
    let (o, report) = load.join().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(report["errors"], 0, "no request failed: {}", report["errors_by_kind"]);
    assert_verified(&report);

    // Both primaries and a web server crash during the catch-up: shard 0's
    // primary restarts, shard 1's fails over to its replica, and the move
    // reconnects to each and finishes.
    std::fs::write(&hold, "catch-up").unwrap();
    let cli = start_move(home, "288-303");
    poll("the move to reach its catch-up", || phase(home).as_deref() == Some("catch-up"));
    for node in ["shard0-pg-1", "shard1-pg-1", "dc1-web-1"] {
        let o = millions(home, &["chaos", "kill", node]);
        assert!(o.status.success(), "{}", text(&o));
    }
    std::fs::remove_file(&hold).unwrap();
    let o = cli.join().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let s = status_json(home);
    assert_eq!(events(&s, "failover"), 1, "shard 1's primary failed over mid-move");
    assert_eq!(s["cluster"]["shards"][1]["primary"], "shard1-pg-2");
    // A move cancelled during its copy rolls back; cancelling nothing is refused.
    std::fs::write(&hold, "copy").unwrap();
    let cli = start_move(home, "304-319");
    poll("the move to reach its copy", || phase(home).as_deref() == Some("copy"));
    let id = status_json(home)["cluster"]["moves"][0]["id"].as_u64().unwrap().to_string();
    let o = millions(home, &["shard", "cancel", &id]);
    assert!(o.status.success() && text(&o).contains("rolls back after its copy step"), "{}", text(&o));
    let o = cli.join().unwrap();
    assert!(!o.status.success() && text(&o).contains("cancelled and rolled back"), "{}", text(&o));
    std::fs::remove_file(&hold).unwrap();
    assert_eq!(events(&status_json(home), "bucket-move-rolled-back"), 2);
    let o = millions(home, &["shard", "cancel", &id]);
    assert!(!o.status.success() && text(&o).contains(&format!("no move {id} is under way")), "{}", text(&o));
    // And the rolled-back buckets move cleanly now.
    let o = millions(home, &["shard", "move", "256-271", "--to", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(buckets(&status_json(home)), [2048 - 304, 2048 + 304]);

    // A rebalance evens the buckets out again, 64 at a time; bad ones change nothing.
    for (args, says) in [
        (vec!["shard", "rebalance", "--batch", "0"], "a batch is 1 to 4096 buckets"),
        (vec!["shard", "rebalance", "--by", "weight"], "invalid value"),
        (vec!["shard", "rebalance", "--by", "load", "--window", "0s"], "at least a second"),
        (vec!["shard", "rebalance", "--by", "load", "--window", "1h"], "at most 600 s"),
        (vec!["shard", "rebalance", "--max-moves", "0"], "moves nothing"),
    ] {
        let o = millions(home, &args);
        assert!(!o.status.success() && text(&o).contains(says), "{args:?}: {}", text(&o));
    }
    assert_eq!(buckets(&status_json(home)), [2048 - 304, 2048 + 304]);
    let o = millions(home, &["shard", "rebalance", "--batch", "64"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("rebalanced by buckets: 5 moves"), "{}", text(&o));
    assert_eq!(buckets(&status_json(home)), [2048, 2048]);
    let o = millions(home, &["shard", "rebalance", "--by", "rows"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("rebalanced by rows"), "{}", text(&o));

    // A celebrity's bucket moves with its bucket-mates, who are named.
    let before = buckets(&status_json(home));
    let from_shard = |s: &serde_json::Value, user: &str| {
        let directory: control::ClusterState = serde_json::from_value(s["cluster"].clone()).unwrap();
        let map = match &directory.directory {
            Some(r) => sharding::ShardMap::from_ranges(directory.epoch, 2, r).unwrap(),
            None => sharding::ShardMap::even(2).unwrap(),
        };
        map.shard_of_username(user).0
    };
    let celebrity = "user7";
    let there = from_shard(&status_json(home), celebrity);
    let to = (1 - there).to_string();
    let o = millions(home, &["shard", "isolate", celebrity, "--to", &to]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("moved with its") && text(&o).contains(celebrity), "{}", text(&o));
    assert_eq!(from_shard(&status_json(home), celebrity), 1 - there);
    assert_ne!(buckets(&status_json(home)), before);
    for (args, says) in [
        (vec!["shard", "isolate", "nobody-at-all", "--to", "0"], "no user named"),
        (vec!["shard", "isolate", celebrity, "--to", &to], "already on shard"),
    ] {
        let o = millions(home, &args);
        assert!(!o.status.success() && text(&o).contains(says), "{args:?}: {}", text(&o));
    }

    // A third shard: bad adds are refused and change nothing.
    let before = status_json(home);
    let topology_text = std::fs::read_to_string(home.join("topology.toml")).unwrap();
    for (args, says) in [
        (vec!["shard", "add", "--primary", "dc9"], "\"dc9\" is not a data center"),
        (vec!["shard", "add", "--replication", "fast"], "not one of sync, async"),
        (vec!["shard", "add", "--survives", "dc"], "needs a replica in another DC"),
    ] {
        let o = millions(home, &args);
        assert!(!o.status.success() && text(&o).contains(says), "{args:?}: {}", text(&o));
    }
    let unchanged = status_json(home);
    assert_eq!(unchanged["cluster"]["epoch"], before["cluster"]["epoch"], "a refused add publishes nothing");
    assert_eq!(unchanged["cluster"]["shards"].as_array().unwrap().len(), 2);
    assert_eq!(std::fs::read_to_string(home.join("topology.toml")).unwrap(), topology_text);

    // Added under the default mix, placed like shard 1 (a synchronous replica
    // beside it), then filled by a rebalance: no request fails, every
    // acknowledged write is found.
    let load = {
        let home = home.to_path_buf();
        std::thread::spawn(move || {
            bench(&home, &["--rate", "60", "--duration", "40s", "--warmup", "500ms", "--users", "100"])
        })
    };
    let o = millions(home, &["shard", "add"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("shard 2 added") && text(&o).contains("shard2-pg-2"), "{}", text(&o));
    let s = status_json(home);
    assert_eq!(buckets(&s).len(), 3);
    assert_eq!(buckets(&s)[2], 0, "it joins with no bucket");
    assert_eq!(events(&s, "shard-added"), 1);
    poll("shard 2's replica to serve reads", || {
        status_json(home)["cluster"]["shards"][2]["replicas"].as_array().is_some_and(|r| r.len() == 1)
    });
    let o = millions(home, &["shard", "rebalance", "--batch", "512"]);
    assert!(o.status.success(), "{}", text(&o));
    let even = buckets(&status_json(home));
    let (most, least) = (even.iter().max().unwrap(), even.iter().min().unwrap());
    assert!(most - least <= 1, "even over three shards: {even:?}");
    // By the load the web servers and workers measure, still under the mix.
    let o = millions(home, &["shard", "rebalance", "--by", "load", "--window", "3s", "--max-moves", "2"]);
    assert!(o.status.success() && text(&o).contains("rebalanced by load"), "{}", text(&o));
    let s = status_json(home);
    assert!(s["shards"][0]["queries_per_sec"].as_f64() > Some(0.0), "each shard's load: {}", s["shards"]);
    assert!(text(&millions(home, &["status"])).contains("queries/s"));
    let (o, report) = load.join().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(report["errors"], 0, "no request failed: {}", report["errors_by_kind"]);
    assert_verified(&report);
    // A celebrity gets a shard of its own: one added for its bucket alone.
    for (args, says) in [
        (vec!["shard", "isolate", celebrity, "--to", "newest"], "neither a shard number nor `new`"),
        (vec!["shard", "isolate", "nobody-at-all", "--to", "new"], "no user named"),
    ] {
        let o = millions(home, &args);
        assert!(!o.status.success() && text(&o).contains(says), "{args:?}: {}", text(&o));
    }
    assert_eq!(buckets(&status_json(home)).len(), 3, "no shard added for a user who does not exist");
    let o = millions(home, &["shard", "isolate", celebrity, "--to", "new"]);
    assert!(o.status.success() && text(&o).contains(celebrity), "{}", text(&o));
    assert_eq!(buckets(&status_json(home))[3], 1, "its bucket is shard 3's only one");

    // The controller dies while a fifth shard is being built: the next one
    // reads the grown topology (`up` with the original file) and finishes it.
    std::fs::write(&hold, "add").unwrap();
    let cli = {
        let home = home.to_path_buf();
        std::thread::spawn(move || millions(&home, &["shard", "add", "--replicas", ""]))
    };
    poll("shard 4 to be declared", || {
        status_json(home)["cluster"]["shards"].as_array().is_some_and(|s| s.len() == 5)
    });
    assert_eq!(status_json(home)["cluster"]["shards"][4]["joining"], true);
    let o = millions(home, &["shard", "move", "0", "--to", "4"]);
    assert!(!o.status.success() && text(&o).contains("still joining"), "{}", text(&o));
    kill_controller(home);
    assert!(!cli.join().unwrap().status.success(), "the CLI lost its controller");
    std::fs::remove_file(&hold).unwrap();
    let o = up(home, &topo);
    assert!(o.status.success(), "{}", text(&o));
    let s = status_json(home);
    assert!(s["cluster"]["shards"][4]["joining"].is_null(), "joined: {}", s["cluster"]);
    assert_eq!(buckets(&s).len(), 5);
    // Its writes go through every web server and worker.
    let directory: control::ClusterState = serde_json::from_value(s["cluster"].clone()).unwrap();
    let directory = sharding::ShardMap::from_ranges(1, 5, directory.directory.as_ref().unwrap()).unwrap();
    let of_shard_0: Vec<String> =
        directory.buckets_of(sharding::ShardId(0)).iter().take(16).map(|b| b.get().to_string()).collect();
    let o = millions(home, &["shard", "move", &of_shard_0.join(","), "--to", "4"]);
    assert!(o.status.success(), "{}", text(&o));
    let (o, report) =
        bench(home, &["--rate", "40", "--duration", "5s", "--warmup", "500ms", "--users", "100"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(report["errors"], 0, "no request failed: {}", report["errors_by_kind"]);
    assert_verified(&report);

    // The new primary crashes before its replica is made: the add fails, the
    // shard stays joining (another placement is refused meanwhile), and
    // `shard add` again finishes it.
    std::fs::write(&hold, "replicas").unwrap();
    let cli = {
        let home = home.to_path_buf();
        std::thread::spawn(move || {
            millions(&home, &["shard", "add", "--replicas", "dc1", "--replication", "async"])
        })
    };
    let runs = |name: &str| {
        let s = status_json(home);
        s["nodes"].as_array().unwrap().iter().any(|n| n["name"] == name && n["running"] == true)
    };
    poll("shard 5's primary to run", || runs("shard5-pg-1"));
    let o = millions(home, &["chaos", "kill", "shard5-pg-1"]);
    assert!(o.status.success(), "{}", text(&o));
    poll("shard 5's primary to be gone", || !runs("shard5-pg-1"));
    std::fs::remove_file(&hold).unwrap();
    let o = cli.join().unwrap();
    assert!(!o.status.success(), "the add fails with its primary gone: {}", text(&o));
    assert_eq!(status_json(home)["cluster"]["shards"][5]["joining"], true);
    let o = millions(home, &["shard", "add", "--primary", "dc1"]);
    assert!(!o.status.success() && text(&o).contains("shard 5 is still joining"), "{}", text(&o));
    let o = millions(home, &["shard", "add"]);
    assert!(o.status.success() && text(&o).contains("shard 5 finished joining"), "{}", text(&o));
    poll("shard 5's replica to serve reads", || {
        status_json(home)["cluster"]["shards"][5]["replicas"].as_array().is_some_and(|r| r.len() == 1)
    });
}
