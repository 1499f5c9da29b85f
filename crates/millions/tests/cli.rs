//! The `millions` binary as a user runs it.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn millions(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_millions"))
        .args(args)
        .env("MILLIONS_HOME", home)
        .output()
        .expect("running millions")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
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
    let o = millions(dir.path(), &["web", "--config", "/nonexistent.toml"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent.toml"));
}

#[test]
fn commands_with_nothing_running_say_so() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["down"][..], &["status"], &["logs", "web-1"]] {
        let o = millions(dir.path(), args);
        assert!(!o.status.success(), "{args:?}");
        assert!(text(&o).contains("nothing is running"), "{args:?}: {}", text(&o));
    }
    let o = millions(dir.path(), &["no-such-command"]);
    assert!(!o.status.success(), "unknown commands are refused");
}

#[test]
fn up_status_crash_and_down_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let web = free_addr();
    let o = millions(home, &["up", "--web", &web]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("http://{web}/")), "prints where to open the app: {}", text(&o));

    let o = millions(home, &["status", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    assert!(nodes.iter().all(|n| n["healthy"] == true), "{status}");
    let pids: Vec<u32> = nodes.iter().map(|n| n["pid"].as_u64().unwrap() as u32).collect();

    let o = millions(home, &["up", "--web", &free_addr()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already running"), "{}", text(&o));

    let o = millions(home, &["logs", "web-1"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"request_id\""), "JSON logs with request ids");
    let o = millions(home, &["logs", "nope"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("nodes: postgres, redis, web-1, worker-1"), "{}", text(&o));

    // A crashed web server shows as down.
    let web_pid = pids[2];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(web_pid as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = millions(home, &["status", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if status["nodes"][2]["running"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "the killed web server still shows as running");
        std::thread::sleep(Duration::from_millis(50));
    }

    let o = millions(home, &["down"]);
    assert!(o.status.success(), "{}", text(&o));
    for pid in pids {
        assert!(!nodes::pid_alive(pid), "process {pid} is left behind");
    }
    assert!(!home.join("state.json").exists());
    let o = millions(home, &["down"]);
    assert!(!o.status.success(), "a second down has nothing to stop");
}

#[test]
fn up_refuses_a_taken_web_address_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = millions(dir.path(), &["up", "--web", &addr]);
    assert!(!o.status.success());
    assert!(text(&o).contains("in use"), "{}", text(&o));
    assert!(!dir.path().join("postgres").exists(), "nothing was started");
    assert!(!dir.path().join("state.json").exists());
}
