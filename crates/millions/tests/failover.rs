//! A real topology under load, losing servers: web servers behind the load
//! balancer, and a synchronous shard's replica, primary and controller.

mod support;

use support::{
    Stack, SteadyGets, assert_verified, backend_requests, bench, https_base, millions, node, own_ranges,
    poll, status_json, text,
};

/// One synchronous shard: a primary and a replica in dc1, a replica in dc2.
const TOPOLOGY: &str = r#"
name = "failover"

[[dc]]
name = "dc1"
cidr = "127.0.201.0/24"
lb = { count = 1 }
web = { count = 2 }
worker = { count = 1 }
redis = { count = 1 }

[[dc]]
name = "dc2"
cidr = "127.0.202.0/24"

[[shard]]
replication = "sync"
primary = "dc1"
replicas = ["dc1", "dc2"]
"#;

fn primaries(status: &serde_json::Value) -> Vec<String> {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["pg"]["role"] == "primary")
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect()
}

fn events(status: &serde_json::Value, kind: &str) -> Vec<serde_json::Value> {
    status["events"].as_array().unwrap().iter().filter(|e| e["kind"] == kind).cloned().collect()
}

fn pids(status: &serde_json::Value) -> Vec<(String, u64)> {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap().to_owned(), n["pid"].as_u64().unwrap_or(0)))
        .collect()
}

#[test]
fn the_stack_survives_losing_web_servers_a_replica_its_primary_and_its_controller_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let topo = own_ranges(home, TOPOLOGY);
    let o = millions(home, &["up", "--topology", &topo.to_string_lossy(), "--unsafe-fast-storage"]);
    let _stack = Stack(home);
    assert!(o.status.success(), "{}", text(&o));
    poll("both replicas to serve reads", || {
        status_json(home)["cluster"]["shards"][0]["replicas"].as_array().unwrap().len() == 2
    });
    let before = status_json(home);
    assert_eq!(primaries(&before), ["shard0-pg-1"]);

    // Web servers leave and come back behind the load balancer while GETs flow:
    // one restarted on purpose (drained first), one killed (its requests retried
    // on the other). No GET fails.
    let lb = node(&before, "dc1-lb-1")["addr"].as_str().unwrap().to_owned();
    let load = SteadyGets::start(home, format!("{}/api/v1/openapi.json", https_base(home, &lb)));
    poll("GETs to flow through the load balancer", || load.ok() >= 50);
    let o = millions(home, &["chaos", "restart", "dc1-web-1"]);
    assert!(o.status.success(), "{}", text(&o));
    let seen = load.ok();
    poll("GETs after the restart", || load.ok() >= seen + 50);
    // Removed and added back at runtime: stopped (drained first), every GET goes
    // to the other; started, it gets requests again.
    let o = millions(home, &["chaos", "stop", "dc1-web-1"]);
    assert!(o.status.success(), "{}", text(&o));
    let web1 = node(&before, "dc1-web-1")["addr"].as_str().unwrap().to_owned();
    let admin = {
        let (ip, port) = lb.rsplit_once(':').unwrap();
        format!("{ip}:{}", port.parse::<u16>().unwrap() + 1)
    };
    let sent_to_web1 = || backend_requests(&admin, &web1);
    let stopped_at = sent_to_web1();
    let seen = load.ok();
    poll("GETs while dc1-web-1 is stopped", || load.ok() >= seen + 100);
    assert_eq!(sent_to_web1(), stopped_at, "nothing was sent to a stopped web server");
    let o = millions(home, &["chaos", "start", "dc1-web-1"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = millions(home, &["chaos", "start", "dc1-web-1"]);
    assert!(!o.status.success() && text(&o).contains("already running"), "{}", text(&o));
    poll("dc1-web-1 to get requests again", || sent_to_web1() > stopped_at);
    let o = millions(home, &["chaos", "kill", "dc1-web-2"]);
    assert!(o.status.success(), "{}", text(&o));
    poll("the killed web server back", || {
        let s = status_json(home);
        node(&s, "dc1-web-2")["healthy"] == true && node(&s, "dc1-web-2")["restarts"] == 1
    });
    let (ok, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} of {} GETs failed: {:?}",
        failed.len(),
        ok,
        &failed[..failed.len().min(5)]
    );
    let before = status_json(home);
    assert_eq!(before["cluster"]["shards"][0]["primary"], "shard0-pg-1");

    // The controller crashes and a new one starts: it adopts every running
    // node and keeps the shard's primary. No failover.
    let controller = before["controller"]["pid"].as_u64().unwrap() as u32;
    sigkill(controller);
    // Meanwhile its nodes run on: `status` says so and how to take them back,
    // and `up` refuses another topology.
    let o = millions(home, &["status"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("the controller is not running, but 8 nodes")
            && text(&o).contains("shard0-pg-1 (pid")
            && text(&o).contains("`millions up`"),
        "{}",
        text(&o)
    );
    let o = millions(home, &["up", "--preset", "single"]);
    assert!(!o.status.success() && text(&o).contains("is gone"), "{}", text(&o));
    let o = millions(home, &["up", "--unsafe-fast-storage"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("adopts the running nodes"), "{}", text(&o));
    let after = status_json(home);
    assert_ne!(after["controller"]["pid"], before["controller"]["pid"]);
    assert_eq!(pids(&after), pids(&before), "every node kept running, adopted");
    assert_eq!(primaries(&after), ["shard0-pg-1"]);
    assert!(events(&after, "failover").is_empty(), "{after}");

    let o = millions(home, &["seed", "--users", "200"]);
    assert!(o.status.success(), "{}", text(&o));

    // A replica is killed under read load: no read fails.
    let replicas: Vec<String> = status_json(home)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["pg"]["role"] == "replica")
        .map(|n| format!("kill {}", n["name"].as_str().unwrap()))
        .collect();
    let (o, report) = bench(
        home,
        &["--rate", "60", "--duration", "3s", "--warmup", "500ms", "--users", "200"]
            .into_iter()
            .chain(["--mix", "feed=5,timeline=5", "--scenario", "kill-replica"])
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let fault = &report["fault"];
    assert!(replicas.iter().any(|r| fault["action"] == r.as_str()), "{replicas:?}: {fault}");
    assert_eq!(fault["done"], true, "{fault}");
    assert_eq!(fault["tolerance"], "no_read_fails", "{fault}");
    assert_eq!(fault["errors_before"], 0, "{fault}");
    assert_eq!(fault["errors_after"], 0, "{fault}");
    assert_eq!(fault["reads_failed_after"], 0, "{fault}");
    assert_eq!(fault["recovery_secs"], 0.0, "{fault}");
    assert_eq!(report["errors"], 0, "{}", report["errors_by_kind"]);
    for op in ["feed", "timeline"] {
        let r = &report["ops"][op];
        assert!(r["count"].as_u64() > Some(0) && r["ok"] == r["count"], "{op}: {r}");
    }
    assert_eq!(
        report["requests"],
        report["ops"]["feed"]["count"].as_u64().unwrap()
            + report["ops"]["timeline"]["count"].as_u64().unwrap()
    );
    assert_eq!(report["checker"]["passed"], true, "{}", report["checker"]);
    assert_eq!(report["verdict"]["passed"], true, "{}", report["verdict"]);
    assert_eq!(report["verdict"]["exit_code"], 0);
    poll("the killed replica to stream again", || {
        status_json(home)["cluster"]["shards"][0]["replicas"].as_array().unwrap().len() == 2
    });

    // The primary is killed under write load: a replica is promoted, writes
    // resume, and every acknowledged write is there (the checker reads each back).
    let (o, report) = bench(
        home,
        &["--rate", "60", "--duration", "8s", "--warmup", "500ms", "--users", "200"]
            .into_iter()
            .chain(["--mix", "post=6,like=2,follow=2", "--scenario", "kill-primary"])
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let fault = &report["fault"];
    assert_eq!(fault["action"], "kill shard0-pg-1", "{fault}");
    assert_eq!(fault["done"], true, "{fault}");
    assert_eq!(fault["recovered"], true, "{fault}");
    assert_eq!(fault["tolerance"], "no_read_fails", "{fault}");
    assert_eq!(fault["errors_before"], 0, "{fault}");
    // Writes may fail until the promotion (replicas serve every read); none after
    // it (recovered above).
    assert_eq!(report["errors"], fault["errors_after"], "{}", report["errors_by_kind"]);
    assert_verified(&report);
    assert!(report["checker"]["writes_acknowledged"].as_u64() > Some(0), "{}", report["checker"]);
    assert_eq!(report["verdict"]["passed"], true, "{}", report["verdict"]);

    // The old primary comes back, rewound, as a replica of the new one; at no
    // moment are there two primaries.
    poll("the old primary to rejoin as a replica", || {
        let s = status_json(home);
        assert!(primaries(&s).len() <= 1, "two primaries: {s}");
        node(&s, "shard0-pg-1")["pg"]["role"] == "replica"
            && s["cluster"]["shards"][0]["replicas"].as_array().unwrap().len() == 2
    });
    let s = status_json(home);
    let failovers = events(&s, "failover");
    assert_eq!(failovers.len(), 1, "{s}");
    assert!(
        failovers[0]["failover_ms"].as_u64().is_some() && failovers[0]["detection_ms"].as_u64().is_some()
    );
    let promoted = failovers[0]["node"].as_str().unwrap().to_owned();
    assert_eq!(primaries(&s), std::slice::from_ref(&promoted));
    assert_eq!(s["cluster"]["shards"][0]["primary"], promoted.as_str());
    assert!(s["cluster"]["epoch"].as_u64() > after["cluster"]["epoch"].as_u64());
    assert_eq!(events(&s, "rejoined").len(), 1, "{s}");

    // Restarting the old primary on purpose keeps it a replica.
    let o = millions(home, &["chaos", "restart", "shard0-pg-1"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = status_json(home);
    assert_eq!(node(&s, "shard0-pg-1")["pg"]["role"], "replica", "{s}");
    assert_eq!(primaries(&s), std::slice::from_ref(&promoted));

    // Writes work after all this.
    let (o, report) = bench(
        home,
        &["--rate", "40", "--duration", "1s", "--warmup", "0s", "--users", "200", "--mix", "post=1"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(report["errors"], 0, "{}", report["errors_by_kind"]);
    assert_verified(&report);
    assert_eq!(report["checker"]["posts_acknowledged"], report["ops"]["post"]["ok"], "{}", report["checker"]);
    assert!(report["checker"]["posts_acknowledged"].as_u64() > Some(0), "{}", report["checker"]);
    assert_eq!(report["verdict"]["passed"], true, "{}", report["verdict"]);

    // The primary is moved back on purpose under writes (a switchover): writes
    // wait while shard0-pg-1 receives every commit, none fails, none is lost.
    let home_buf = home.to_path_buf();
    let writes = std::thread::spawn(move || {
        bench(
            &home_buf,
            &[
                "--rate",
                "40",
                "--duration",
                "5s",
                "--warmup",
                "0s",
                "--users",
                "200",
                "--mix",
                "post=3,like=1",
            ],
        )
    });
    let web = status_json(home);
    let webs: Vec<String> = ["dc1-web-1", "dc1-web-2"]
        .iter()
        .map(|w| node(&web, w)["addr"].as_str().unwrap().to_owned())
        .collect();
    poll("posts to flow before the switchover", || webs.iter().map(|w| posts_served(w)).sum::<f64>() >= 20.0);
    let o = millions(home, &["shard", "promote", "shard0-pg-1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("shard0-pg-1 is the primary"), "{}", text(&o));
    let (o, report) = writes.join().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(report["errors"], 0, "no write failed: {}", report["errors_by_kind"]);
    assert_verified(&report);
    assert!(report["checker"]["writes_acknowledged"].as_u64() > Some(0), "{}", report["checker"]);
    poll("the previous primary to follow the new one", || {
        let s = status_json(home);
        assert!(primaries(&s).len() <= 1, "two primaries: {s}");
        primaries(&s) == ["shard0-pg-1"]
            && node(&s, &promoted)["pg"]["role"] == "replica"
            && s["cluster"]["shards"][0]["replicas"].as_array().unwrap().len() == 2
    });
    assert_eq!(events(&status_json(home), "switchover").len(), 1);
    // What cannot be promoted is refused, and changes nothing.
    for (target, why) in [
        ("shard0-pg-1", "already shard 0's primary"),
        ("dc1-web-1", "not a PostgreSQL node"),
        ("shard9-pg-1", "no node named"),
    ] {
        let o = millions(home, &["shard", "promote", target]);
        assert!(!o.status.success() && text(&o).contains(why), "{target}: {}", text(&o));
    }
    assert_eq!(primaries(&status_json(home)), ["shard0-pg-1"]);

    // The controller crashes again, and `down` stops the nodes it left.
    let s = status_json(home);
    sigkill(s["controller"]["pid"].as_u64().unwrap() as u32);
    let o = millions(home, &["down"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("the controller is gone; stopping the 8 nodes"), "{}", text(&o));
    for (name, pid) in pids(&s) {
        assert!(!nodes::pid_alive(pid as u32), "{name} ({pid}) is left behind");
    }
    let o = millions(home, &["status"]);
    assert!(!o.status.success() && text(&o).contains("nothing is running"), "{}", text(&o));
}

/// A crash: SIGKILL, and wait until the process is gone.
fn sigkill(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    poll("the killed process to be gone", || !nodes::pid_alive(pid));
}

/// `POST /api/v1/posts` requests web server `web` answered, from its `/metrics`.
fn posts_served(web: &str) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let text = rt.block_on(async {
        reqwest::get(format!("http://{web}/metrics")).await.unwrap().text().await.unwrap()
    });
    text.lines()
        .filter(|l| l.starts_with("millions_http_requests_total{") && l.contains("route=\"/api/v1/posts\""))
        .filter(|l| l.contains("method=\"POST\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
