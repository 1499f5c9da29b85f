//! The `millions` binary as a user runs it.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;

use support::{
    Stack, app_client, assert_verified, bench, https_base, millions, node, own_ranges, poll, status_json,
    text,
};

/// Run `millions ROLE --config FILE` with `config` as the file.
fn run_role(dir: &Path, role: &str, config: &str) -> Output {
    let path = dir.join(format!("{role}.toml"));
    std::fs::write(&path, config).unwrap();
    millions(dir, &[role, "--config", &path.to_string_lossy()])
}

#[test]
fn a_bad_config_exits_with_a_message_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    // The listen address is taken: had the server bound first, it would complain
    // about the address, not the setting.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let cases = [
        ("not toml at all [", "web.toml"),
        (
            "listen = \"TAKEN\"\n[database]\nshards = []\n[redis]\nurl = \"redis://x:1/\"\n",
            "at least one shard",
        ),
        (
            "listen = \"TAKEN\"\n[database]\nshards = [\"postgres://u@h/d\"]\n[redis]\nurl = \"redis://x:1/\"\n[feed]\ntimeline_cap = 0\n",
            "feed.timeline_cap",
        ),
        ("listen = \"TAKEN\"\nbogus = 1\n", "unknown field"),
    ];
    for (config, expected) in cases {
        let path = dir.path().join("web.toml");
        std::fs::write(&path, config.replace("TAKEN", &taken.local_addr().unwrap().to_string())).unwrap();
        let o = millions(dir.path(), &["web", "--config", &path.to_string_lossy()]);
        assert!(!o.status.success());
        assert!(text(&o).contains(expected), "{expected:?} not in {}", text(&o));
        assert!(!text(&o).contains("binding"), "{}", text(&o));
    }
    let worker_cases = [
        (
            "listen = \"TAKEN\"\n[database]\nshards = [\"postgres://u@h/d\"]\n[redis]\nurl = \"redis://x:1/\"\n[worker]\nconcurrency = 0\n",
            "worker.concurrency",
        ),
        (
            "listen = \"TAKEN\"\n[database]\nshards = [\"postgres://u@h/d\"]\n[redis]\nurl = \"redis://x:1/\"\n[chaos]\nmeteor = true\n",
            "unknown field",
        ),
    ];
    for (config, expected) in worker_cases {
        let path = dir.path().join("worker.toml");
        std::fs::write(&path, config.replace("TAKEN", &taken.local_addr().unwrap().to_string())).unwrap();
        let o = millions(dir.path(), &["worker", "--config", &path.to_string_lossy()]);
        assert!(!o.status.success());
        assert!(text(&o).contains(expected), "{expected:?} not in {}", text(&o));
    }
    // Roles that bind before they connect to anything: the message names the
    // setting, and nothing was bound.
    let role_cases = [
        ("lb", "listen = \"TAKEN\"\nadmin = \"127.0.0.1:0\"\nalgorithm = \"fastest\"\n", "unknown variant"),
        (
            "lb",
            "listen = \"TAKEN\"\nadmin = \"127.0.0.1:0\"\n[health]\ninterval_ms = 0\n",
            "health.interval_ms",
        ),
        (
            "cdn",
            "listen = \"TAKEN\"\nadmin = \"127.0.0.1:0\"\norigin = \"127.0.0.1:9\"\nmemory_bytes = 10\n",
            "memory_bytes",
        ),
        (
            "cdn",
            "listen = \"TAKEN\"\nadmin = \"127.0.0.1:0\"\norigin = \"TAKEN\"\n",
            "is the edge's own listener",
        ),
    ];
    for (role, config, expected) in role_cases {
        let o =
            run_role(dir.path(), role, &config.replace("TAKEN", &taken.local_addr().unwrap().to_string()));
        assert!(!o.status.success());
        assert!(
            text(&o).contains(expected) && !text(&o).contains("cannot listen"),
            "{role} {expected:?}: {}",
            text(&o)
        );
    }
    let o = millions(dir.path(), &["web", "--config", "/nonexistent.toml"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent.toml"));
}

#[test]
fn commands_with_nothing_running_say_so() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["down"][..], &["status"], &["logs", "dc1-web-1"], &["chaos", "kill", "dc1-web-1"]] {
        let o = millions(dir.path(), args);
        assert!(!o.status.success(), "{args:?}");
        assert!(text(&o).contains("nothing is running"), "{args:?}: {}", text(&o));
    }
    let o = millions(dir.path(), &["no-such-command"]);
    assert!(!o.status.success(), "unknown commands are refused");
    // The run directory named before or after the subcommand, from elsewhere,
    // overrides the environment's; the message names where it looked.
    let named = tempfile::tempdir().unwrap();
    let path = named.path().to_string_lossy().into_owned();
    for args in
        [&["--home", &path, "status"][..], &["status", "--home", &path], &[&format!("--home={path}"), "down"]]
    {
        let o = millions(dir.path(), args);
        assert!(!o.status.success(), "{args:?}");
        assert!(
            text(&o).contains(&format!("nothing is running (no live controller in {path})")),
            "{args:?}: {}",
            text(&o)
        );
    }

    // No run directory named: the default one, relative to where the command
    // runs; the message names it in full and says how to name another.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_millions"))
        .arg("status")
        .current_dir(named.path())
        .env_remove("MILLIONS_HOME")
        .output()
        .unwrap();
    let looked = named.path().canonicalize().unwrap().join(".millions");
    assert!(!o.status.success());
    assert!(text(&o).contains(&format!("no live controller in {})", looked.display())), "{}", text(&o));
    assert!(text(&o).contains("--home DIR or MILLIONS_HOME"), "{}", text(&o));

    // Pid files naming a live unrelated process (its pid reused after a crash,
    // or written without the start time that identifies it): not a node.
    let mut unrelated = std::process::Command::new("sleep").arg("600").spawn().unwrap();
    let pid = unrelated.id();
    let start = nodes::process_start_time(pid).unwrap();
    std::fs::write(dir.path().join("topology.toml"), topology::preset_text("test").unwrap()).unwrap();
    std::fs::create_dir_all(dir.path().join("nodes/shard0-pg-1/data")).unwrap();
    std::fs::write(dir.path().join("nodes/shard0-pg-1/data/postmaster.pid"), format!("{pid}\n")).unwrap();
    for (node, text) in [("dc1-web-1", format!("{pid} {}\n", start + 1)), ("dc1-lb-1", format!("{pid}\n"))] {
        std::fs::write(dir.path().join(format!("nodes/{node}.pid")), text).unwrap();
    }
    for args in [&["status"][..], &["down"]] {
        let o = millions(dir.path(), args);
        assert!(!o.status.success(), "{args:?}");
        assert!(text(&o).contains("nothing is running"), "{args:?}: {}", text(&o));
    }
    assert!(unrelated.try_wait().unwrap().is_none(), "an unrelated process was signalled");
    unrelated.kill().unwrap();
    unrelated.wait().unwrap();

    // A wipe deletes only a run directory `millions up` made (one with its topology).
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("precious.txt"), "keep me").unwrap();
    let o = millions(other.path(), &["down", "--wipe"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not a run directory"), "{}", text(&o));
    assert!(other.path().join("precious.txt").exists(), "nothing was deleted");
}

/// Run `millions ARGS` with `home` as its run directory and `bin` first on PATH.
fn millions_with_path(home: &Path, bin: &Path, args: &[&str]) -> Output {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    std::process::Command::new(env!("CARGO_BIN_EXE_millions"))
        .args(args)
        .env("MILLIONS_HOME", home)
        .env("MILLIONS_DASHBOARD", "127.0.0.1:0")
        .env("PATH", path)
        .output()
        .expect("running millions")
}

/// Processes (not zombies) whose command line or working directory is in `dir`.
fn processes_using(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap();
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id() && nodes::pid_alive(*pid))
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
            (cmdline.contains(&needle) || cwd.is_some_and(|c| c.starts_with(&dir)))
                .then(|| format!("{pid}: {cmdline}"))
        })
        .collect()
}

#[test]
fn a_start_that_fails_part_way_stops_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("run");
    std::fs::create_dir(&home).unwrap();
    // A shard (its primary and a replica) starts, then Redis cannot.
    let topo = own_ranges(
        dir.path(),
        "name = \"broken\"\n[[dc]]\nname = \"dc1\"\ncidr = \"127.0.201.0/24\"\nlb = { count = 1 }\nweb = { count = 1 }\nworker = { count = 1 }\nredis = { count = 1 }\n\
         [[shard]]\nprimary = \"dc1\"\nreplicas = [\"dc1\"]\n",
    );
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("redis-server");
    std::fs::write(&fake, "#!/bin/sh\necho 'fake redis-server: cannot start' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let o = millions_with_path(
        &home,
        &bin,
        &["up", "--topology", &topo.to_string_lossy(), "--unsafe-fast-storage"],
    );
    let _stack = Stack(&home);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("the controller stopped during start-up"), "{}", text(&o));
    assert!(text(&o).contains("Redis") && text(&o).contains("nothing is left running"), "{}", text(&o));
    let controller: u32 = text(&o)
        .split("controller pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(!nodes::pid_alive(controller));
    assert!(!home.join("control.json").exists());
    for pg in ["shard0-pg-1", "shard0-pg-2"] {
        let data = home.join("nodes").join(pg).join("data");
        assert!(data.join("PG_VERSION").exists(), "{pg} was started before Redis failed");
        assert!(!nodes::postgres_running(&data) && !data.join("postmaster.pid").exists(), "{pg} runs");
    }
    assert_eq!(processes_using(&home), Vec::<String>::new(), "processes left behind");
    let o = millions(&home, &["status"]);
    assert!(text(&o).contains("nothing is running"), "{}", text(&o));
}

/// The `test` preset, on address ranges of its own.
fn test_topology(dir: &Path) -> std::path::PathBuf {
    own_ranges(dir, topology::preset_text("test").unwrap())
}

fn http_status(url: &str) -> Option<u16> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async { reqwest::get(url).await.ok().map(|r| r.status().as_u16()) })
}

/// The status of `GET url` with the run directory's CA trusted, redirects not
/// followed.
fn app_status(home: &Path, url: &str) -> Option<u16> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = app_client(home).build().unwrap();
    rt.block_on(async { client.get(url).send().await.ok().map(|r| r.status().as_u16()) })
}

fn http_text(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

fn psql(url: &str, sql: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.ok()?;
        let conn = tokio::spawn(conn);
        let rows = client.simple_query(sql).await.ok()?;
        drop(client);
        let _ = conn.await;
        rows.into_iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
    })
}

#[test]
fn up_runs_a_topology_with_streaming_replicas_restarts_what_dies_and_down_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    // The load balancers' certificates live 40 s and are renewed within 30 s of
    // expiry: while this test runs, each is renewed every 10 s or so.
    let renewing = "\n[tls]\ncert_lifetime_secs = 40\nrenew_before_secs = 30\nrenew_check_secs = 1\n";
    let topo = own_ranges(home, &format!("{}{renewing}", topology::preset_text("test").unwrap()));
    let o = millions(home, &["up", "--topology", &topo.to_string_lossy(), "--unsafe-fast-storage"]);
    let _stack = Stack(home);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Millions is up"), "{}", text(&o));

    let status = status_json(home);
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 8, "every node runs: {status}");
    // The app's address is the load balancer's, and the app answers through it.
    let lb = node(&status, "dc1-lb-1")["addr"].as_str().unwrap().to_owned();
    let app = https_base(home, &lb);
    assert!(text(&o).contains(&format!("{app}/")), "{}", text(&o));
    assert!(text(&o).contains(&format!("--cacert {}", home.join("tls/ca.pem").display())), "{}", text(&o));
    assert_eq!(app_status(home, &format!("{app}/api/v1/openapi.json")), Some(200));
    // Its certificate is renewed while it runs: a new handshake then gets one
    // that expires later, from the same load balancer (no restart), and no
    // request fails meanwhile; the renewal is in the event log.
    let lb_pid = node(&status, "dc1-lb-1")["pid"].as_u64().unwrap();
    let served_until = || {
        let client = app_client(home).tls_info(true).build().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let r = rt.block_on(client.get(format!("{app}/api/v1/openapi.json")).send()).unwrap();
        assert_eq!(r.status(), 200, "no request fails while certificates are renewed");
        let der = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap().peer_certificate().unwrap().to_vec();
        control::tls::der_not_after(&der).unwrap()
    };
    let first = served_until();
    poll("the load balancer to present a renewed certificate", || served_until() > first);
    assert_eq!(node(&status_json(home), "dc1-lb-1")["pid"].as_u64(), Some(lb_pid), "not restarted");
    poll("the renewal in the event log", || {
        status_json(home)["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "cert-renewed" && e["node"] == "dc1-lb-1"))
    });
    // The plain port sends every request there.
    let plain = app_client(home).build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = rt.block_on(plain.get(format!("http://{lb}/api/v1/openapi.json")).send()).unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], format!("{app}/api/v1/openapi.json").as_str());
    // The session cookie is Secure (the web tier is served over HTTPS).
    let web = std::fs::read_to_string(home.join("nodes/dc1-web-1.toml")).unwrap();
    assert!(web.contains("secure_cookies = true"), "{web}");
    // It believes X-Forwarded-For from its load balancer only, which connects from
    // its own address.
    let lb_host = lb.rsplit_once(':').unwrap().0;
    assert!(web.contains(&format!("trusted_proxies = [\"{lb_host}\"]")), "{web}");
    // The load generator's signups pass the per-address limits with the admin token.
    let admin = control::admin_token(home).unwrap();
    assert!(web.contains(&format!("bypass_token = \"{admin}\"")), "{web}");
    let lb_conf = std::fs::read_to_string(home.join("nodes/dc1-lb-1.toml")).unwrap();
    assert!(lb_conf.contains(&format!("source_ip = \"{lb_host}\"")), "{lb_conf}");
    assert!(nodes.iter().all(|n| n["healthy"] == true && n["health"] == "healthy"), "{status}");
    assert!(nodes.iter().all(|n| n["address"] == n["addr"]), "{status}");
    // Redis runs within the DC's memory budget (the test preset's 64 MiB), evicting
    // by LRU, as the topology says.
    let redis_conf = std::fs::read_to_string(home.join("nodes/dc1-redis-1/redis.conf")).unwrap();
    assert!(redis_conf.contains("maxmemory 64mb\nmaxmemory-policy allkeys-lru\n"), "{redis_conf}");
    // The app's name resolves, through the DC's DNS server, to its load balancer.
    let dns = node(&status, "dc1-dns-1");
    assert_eq!(dns["role"], "dns");
    let dns_addr: std::net::SocketAddr = dns["address"].as_str().unwrap().parse().unwrap();
    let lb_ip: std::net::IpAddr = lb.rsplit_once(':').unwrap().0.parse().unwrap();
    assert_eq!(support::dns_a(dns_addr, "www.millions.test"), Ok(vec![lb_ip]));
    assert_eq!(support::dns_a(dns_addr, "nope.millions.test"), Err(3), "NXDOMAIN");
    assert_eq!(support::dns_a(dns_addr, "www.example.com"), Err(5), "REFUSED: not an open resolver");
    let up = text(&o);
    assert!(up.contains(&format!("dig @{} -p {} www.millions.test", dns_addr.ip(), dns_addr.port())), "{up}");
    let pids: Vec<u32> = nodes.iter().map(|n| n["pid"].as_u64().unwrap() as u32).collect();
    let primary = node(&status, "shard0-pg-1");
    let replica = node(&status, "shard0-pg-2");
    assert_eq!(primary["pg"]["role"], "primary");
    assert_eq!(replica["pg"]["role"], "replica");

    // Streaming, as the primary reports it, and data written there is read on the replica.
    let secrets: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("secrets.json")).unwrap()).unwrap();
    let pw = secrets["postgres"].as_str().unwrap();
    let url =
        |addr: &serde_json::Value| format!("postgres://millions:{pw}@{}/millions", addr.as_str().unwrap());
    let (primary_url, replica_url) = (url(&primary["addr"]), url(&replica["addr"]));
    poll("the replica to stream, as its primary reports it", || {
        psql(&primary_url, "SELECT state FROM pg_stat_replication WHERE application_name = 'shard0-pg-2'")
            .as_deref()
            == Some("streaming")
    });
    // And as `status` reports it: streaming, with its lag, its DC and address.
    poll("status to show the replica streaming", || {
        let s = status_json(home);
        let r = node(&s, "shard0-pg-2");
        r["pg"]["replication"] == "streaming" && r["pg"]["lag_bytes"].is_i64() && r["pg"]["lag_ms"].is_f64()
    });
    let topology = topology::load(&topo).unwrap();
    for n in topology.nodes() {
        let s = node(&status, &n.name);
        assert_eq!((s["dc"].as_str(), s["addr"].as_str()), (Some(n.dc.as_str()), Some(&*n.addr.to_string())));
        assert_eq!(s["role"], n.role.to_string());
    }
    let o = millions(home, &["status"]);
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    for n in topology.nodes() {
        assert!(
            table.lines().any(|l| l.starts_with(&format!("{} ", n.name)) && l.contains("healthy")),
            "{} not in:\n{table}",
            n.name
        );
    }
    assert!(table.contains("shard0 replica streaming lag"), "{table}");

    // The controller's own endpoints.
    let api = status["controller"]["api"].as_str().unwrap().to_owned();
    assert_eq!(http_status(&format!("http://{api}/readyz")), Some(200));
    // Its API needs the run directory's admin token (the CLI sends it); the shard
    // map the web servers and workers follow stays open.
    assert_eq!(http_status(&format!("http://{api}/api/nodes")), Some(401));
    assert_eq!(http_status(&format!("http://{api}/api/events")), Some(401));
    assert_eq!(http_status(&format!("http://{api}/api/cluster")), Some(200));
    let metrics = http_text(&format!("http://{api}/metrics"));
    for line in [
        "millions_control_nodes{health=\"healthy\"} 8",
        "millions_control_node_restarts_total{node=\"dc1-web-1\",role=\"web\"} 0",
        "millions_control_failovers_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line:?} not in:\n{metrics}");
    }
    assert!(
        metrics.contains("millions_http_requests_total{route=\"/api/nodes\",method=\"GET\",status=\"200\"}")
    );
    psql(&primary_url, "CREATE TABLE probe (v text); INSERT INTO probe VALUES ('written on the primary')");
    poll("the write to reach the replica", || {
        psql(&replica_url, "SELECT v FROM probe").as_deref() == Some("written on the primary")
    });
    assert_eq!(psql(&replica_url, "SELECT pg_is_in_recovery()::text").as_deref(), Some("true"));

    let o = millions(home, &["up", "--topology", &topo.to_string_lossy()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already running"), "{}", text(&o));

    let o = millions(home, &["logs", "dc1-web-1"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"request_id\""), "JSON logs with request ids");
    for name in ["shard0-pg-2", "dc1-redis-1", "dc1-lb-1", "control"] {
        let o = millions(home, &["logs", name]);
        assert!(o.status.success(), "{name}: {}", text(&o));
        assert!(String::from_utf8_lossy(&o.stdout).lines().count() > 1, "{name}: {}", text(&o));
    }
    let o = millions(home, &["logs", "nope"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("nodes: control, shard0-pg-1"), "{}", text(&o));
    // One request's path across the nodes, by the id it was sent with.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = app_client(home).build().unwrap();
    let sent = rt.block_on(async {
        let r = client
            .get(format!("{app}/api/v1/users/nobody-here"))
            .header("x-request-id", "cli-trace-1")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_owned()))
    });
    assert_eq!(sent, (404, Some("cli-trace-1".to_owned())));
    poll("the request's lines from the load balancer and the web server", || {
        let o = millions(home, &["logs", "--request", "cli-trace-1"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        o.status.success()
            && out.lines().any(|l| l.starts_with("dc1-lb-1 ") && l.contains("\"status\":404"))
            && out
                .lines()
                .any(|l| l.starts_with("dc1-web-1 ") && l.contains("\"request_id\":\"cli-trace-1\""))
    });
    let o = millions(home, &["logs", "--request", "never-sent"]);
    assert!(!o.status.success() && text(&o).contains("no log line names request"), "{}", text(&o));
    let o = millions(home, &["logs", "--request", "bad id"]);
    assert!(!o.status.success() && text(&o).contains("is not a request id"), "{}", text(&o));
    let o = millions(home, &["logs", "--request", "cli-trace-1", "--follow"]);
    assert!(!o.status.success() && text(&o).contains("cannot be used with"), "{}", text(&o));
    let o = millions(home, &["logs"]);
    assert!(!o.status.success() && text(&o).contains("required"), "{}", text(&o));

    // A crashed web server is started again.
    let web_pid = node(&status, "dc1-web-1")["pid"].as_u64().unwrap();
    let o = millions(home, &["chaos", "kill", "dc1-web-1"]);
    assert!(o.status.success(), "{}", text(&o));
    poll("the killed web server to be restarted", || {
        let s = status_json(home);
        let w = node(&s, "dc1-web-1");
        w["healthy"] == true && w["pid"].as_u64() != Some(web_pid) && w["restarts"] == 1
    });
    assert!(!nodes::pid_alive(web_pid as u32));
    assert_eq!(
        app_status(home, &format!("{app}/api/v1/openapi.json")),
        Some(200),
        "served through the load balancer again"
    );
    // A web server's probes and metrics are not reachable through the public entry.
    for path in ["/readyz", "/healthz", "/metrics", "/metrics?x=1"] {
        assert_eq!(app_status(home, &format!("{app}{path}")), Some(404), "{path} through the load balancer");
    }
    // A restart on purpose: stopped gracefully, started again, not counted as a crash.
    let worker_pid = node(&status, "dc1-worker-1")["pid"].as_u64().unwrap();
    let o = millions(home, &["chaos", "restart", "dc1-worker-1"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = status_json(home);
    let w = node(&s, "dc1-worker-1");
    assert!(w["healthy"] == true && w["pid"].as_u64() != Some(worker_pid) && w["restarts"] == 0, "{w}");
    let o = millions(home, &["chaos", "kill", "dc9-web-7"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no node named"), "{}", text(&o));

    // Redis, the worker and the load balancer crash together: each is started again.
    let s = status_json(home);
    let crashed = ["dc1-redis-1", "dc1-worker-1", "dc1-lb-1"];
    let old: Vec<u64> = crashed.iter().map(|n| node(&s, n)["pid"].as_u64().unwrap()).collect();
    for name in crashed {
        let o = millions(home, &["chaos", "kill", name]);
        assert!(o.status.success(), "{}", text(&o));
    }
    poll("redis, the worker and the load balancer to be restarted", || {
        let s = status_json(home);
        crashed.iter().zip(&old).all(|(name, pid)| {
            let n = node(&s, name);
            n["healthy"] == true && n["pid"].as_u64() != Some(*pid) && n["restarts"] == 1
        })
    });
    let metrics = http_text(&format!("http://{api}/metrics"));
    assert!(
        metrics
            .lines()
            .any(|l| l == "millions_control_node_restarts_total{node=\"dc1-redis-1\",role=\"redis\"} 1"),
        "{metrics}"
    );
    assert_eq!(app_status(home, &format!("{app}/api/v1/openapi.json")), Some(200));

    // Seed users in bulk, then a short open-loop bench with them passes its checker.
    let o = millions(home, &["seed", "--users", "300"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("seeded 300 users"), "{}", text(&o));
    let o = millions(home, &["seed", "--users", "300"]);
    assert!(!o.status.success() && text(&o).contains("nothing was written"), "{}", text(&o));
    let (o, report) =
        bench(home, &["--rate", "40", "--duration", "2s", "--warmup", "500ms", "--users", "300"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(report["errors"], 0, "{}", report["errors_by_kind"]);
    assert_verified(&report);
    assert_eq!(report["verdict"]["passed"], true, "{}", report["verdict"]);
    // A fault under load: a web server killed a third into the run; the report
    // gives the recovery time, and no acknowledged write is lost. It died once
    // already, so the supervisor waits 2 s before restarting it (backoff): the
    // run is long enough to see it back, with room for a busy machine. It is the
    // DC's only web server, so its scenario lets requests fail until it is back
    // (and none before the kill).
    let (o, report) = bench(
        home,
        &["--rate", "40", "--duration", "10s", "--warmup", "0s", "--users", "300", "--scenario", "kill-web"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let fault = &report["fault"];
    assert_eq!(fault["action"], "kill dc1-web-1", "{fault}");
    assert_eq!(fault["done"], true, "{fault}");
    assert_eq!(fault["recovered"], true, "{fault}");
    assert_eq!(fault["tolerance"], "until_recovered", "{fault}");
    assert_eq!(fault["errors_before"], 0, "{fault}");
    assert!(fault["recovery_secs"].as_f64().is_some_and(|s| s >= 0.0), "{fault}");
    assert_verified(&report);
    assert_eq!(report["verdict"]["passed"], true, "{}", report["verdict"]);
    assert_eq!(report["verdict"]["exit_code"], 0);
    // Nonsense is refused, never run unthrottled.
    for (args, expected) in [
        (&["bench", "--rate", "0"][..], "rate"),
        (&["bench", "--rate", "NaN"], "rate"),
        (&["bench", "--duration", "0s"], "duration"),
        (&["bench", "--mix", "feed=1,explode=2"], "explode"),
        (&["bench", "--mix", "feed=0"], "mix"),
        (&["bench", "--scenario", "kill-everything"], "scenarios: kill-web"),
    ] {
        let o = millions(home, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(expected), "{args:?}: {}", text(&o));
    }
    // A value that does not parse is clap's usage error (2); `--help` says what
    // each exit status means and what each scenario claims.
    let o = millions(home, &["bench", "--rate", "fast"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = millions(home, &["bench", "--seed", "seven"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--seed"), "{}", text(&o));
    let o = millions(home, &["bench", "--help"]);
    assert!(o.status.success(), "{}", text(&o));
    let help = text(&o);
    for start in ["Exit status:", "  0  the run passed", "  1  a check failed", "  2  a usage error"] {
        assert!(help.lines().any(|l| l.starts_with(start)), "{start:?} not in {help}");
    }
    for scenario in ["kill-web", "kill-worker", "kill-redis", "kill-replica", "kill-primary"] {
        assert!(help.lines().any(|l| l.starts_with(&format!("  {scenario} "))), "{scenario} not in {help}");
    }

    let last = status_json(home);
    let o = millions(home, &["down"]);
    assert!(o.status.success(), "{}", text(&o));
    let all: Vec<u32> = pids
        .into_iter()
        .chain(last["nodes"].as_array().unwrap().iter().map(|n| n["pid"].as_u64().unwrap() as u32))
        .collect();
    for pid in all {
        assert!(!nodes::pid_alive(pid), "process {pid} is left behind");
    }
    let controller = last["controller"]["pid"].as_u64().unwrap() as u32;
    assert!(!nodes::pid_alive(controller), "the controller is left behind");
    let o = millions(home, &["down"]);
    assert!(!o.status.success(), "a second down has nothing to stop");
    // Start from empty: everything the run left goes, the directory stays.
    assert!(home.join("nodes").exists());
    let o = millions(home, &["down", "--wipe"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_dir(home).unwrap().count(), 0, "the run directory is empty");
}

#[test]
fn up_refuses_bad_topologies_and_taken_addresses_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The run directory: bad input must not even create it.
    let home = &dir.path().join("run");
    let good = std::fs::read_to_string(test_topology(dir.path())).unwrap();
    // dc1's range, as "127.N.201."
    let cidr = good.lines().find(|l| l.starts_with("cidr")).unwrap().split('"').nth(1).unwrap();
    let dc1 = cidr.trim_end_matches("0/24");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cases = [
        ("name = \"x\"\n[[dc]\n".to_owned(), "topology.toml"),
        (good.replace("web = { count = 1 }", "webb = { count = 1 }"), "unknown field"),
        // A load balancer setting its own rules refuse.
        (
            good.replace("lb = { count = 1 }", "lb = { count = 1, health = { interval_ms = 0 } }"),
            "dc1's load balancer settings ([dc.lb]): invalid setting health.interval_ms",
        ),
        (
            good.replace("worker = { count = 1 }", &format!("worker = {{ count = 1, first = \"{dc1}20\" }}")),
            "used by both",
        ),
        (good.replace("[[dc]]\nname = \"dc2\"", "[[dc]]\nname = \"dc1\""), "dc1"),
        // The web server's address is taken.
        (
            format!(
                "name = \"taken\"\n[[dc]]\nname = \"dc1\"\ncidr = \"127.0.0.0/24\"\nlb = {{ count = 1 }}\nweb = {{ count = 1, first = \"127.0.0.1\" }}\nworker = {{ count = 1 }}\nredis = {{ count = 1 }}\n[[shard]]\nprimary = \"dc1\"\n[ports]\nweb = {port}\n"
            ),
            "in use",
        ),
    ];
    for (topology, expected) in cases {
        let path = dir.path().join("topology.toml");
        std::fs::write(&path, topology).unwrap();
        let o = millions(home, &["up", "--topology", &path.to_string_lossy()]);
        assert!(!o.status.success(), "{expected}");
        assert!(text(&o).contains(expected), "{expected:?} not in {}", text(&o));
        assert!(!home.exists(), "{expected}: the run directory was created");
    }
    let o = millions(home, &["up", "--preset", "gigantic"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("presets: single, default, test"), "{}", text(&o));
    assert!(!home.exists());

    // The dashboard's fixed address: a bad value, a node's address, or one in
    // use are refused before anything is written or started.
    let path = dir.path().join("topology.toml");
    std::fs::write(&path, &good).unwrap();
    let lb = format!("{dc1}10:8000");
    let taken_addr = format!("127.0.0.1:{port}");
    for (dashboard, expected) in [
        ("localhost-ish", "invalid value 'localhost-ish' for '--dashboard"),
        (lb.as_str(), "is dc1-lb-1's address in the topology"),
        (taken_addr.as_str(), &format!("the dashboard's address {taken_addr} is in use")),
    ] {
        let o = millions(home, &["up", "--topology", &path.to_string_lossy(), "--dashboard", dashboard]);
        assert!(!o.status.success(), "{dashboard}");
        assert!(text(&o).contains(expected), "{expected:?} not in {}", text(&o));
        assert!(!home.exists(), "{dashboard}: the run directory was created");
    }

    // A run directory holding the state of another topology (left by `down`),
    // or nodes of a crashed controller's topology: refused before anything
    // is written or started, saying what to do.
    std::fs::create_dir_all(home.join("nodes/shard0-pg-1")).unwrap();
    std::fs::write(home.join("topology.toml"), topology::preset_text("test").unwrap()).unwrap();
    std::fs::write(home.join("cluster.json"), "{}").unwrap();
    let entries = |home: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(home).unwrap().flatten().map(|e| e.file_name()).collect();
        names.sort();
        names
    };
    let before = entries(home);
    let o = millions(home, &["up", "--preset", "single"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("holds the state of topology \"test\"") && text(&o).contains("rm -rf"),
        "{}",
        text(&o)
    );
    assert_eq!(entries(home), before);
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    std::fs::write(home.join("control.json"), format!("{{\"pid\":{},\"api\":\"127.0.0.1:9\"}}", gone.id()))
        .unwrap();
    let before = entries(home);
    let o = millions(home, &["up", "--preset", "single"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("is gone") && text(&o).contains("millions down"), "{}", text(&o));
    assert_eq!(entries(home), before);
}
