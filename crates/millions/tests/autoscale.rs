//! Web servers and workers scaled on a running topology (issue 18): by hand
//! within the topology's range while GETs flow (none fails: a new web server
//! gets requests once ready, one removed is drained first), bad requests and
//! bad ranges refused changing nothing, and the autoscaler adding a worker for
//! a burst of photo jobs and removing it once the queue is idle.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{
    Stack, SteadyGets, backend_requests, https_base, millions, node, own_ranges, poll, status_json, text,
};

/// One DC, one shard. The web servers scale by hand here (their autoscaler
/// follows a CPU target no test reaches and would wait an hour to scale in);
/// the workers follow the queue with second-long windows.
const TOPOLOGY: &str = r#"
name = "autoscale"

[[dc]]
name = "dc1"
cidr = "127.0.201.0/24"
lb = { count = 1 }
web = { count = 2, min = 1, max = 3, autoscale = { cpu_per_server = 100.0, scale_in_window_ms = 3600000, cooldown_ms = 3600000 } }
worker = { count = 1, min = 1, max = 2, autoscale = { queue_depth_per_worker = 3, interval_ms = 1000, stale_ms = 5000, scale_in_window_ms = 10000, cooldown_ms = 4000 } }
redis = { count = 1 }

[[shard]]
primary = "dc1"
"#;

/// The scaled role `role` of dc1 in a status.
fn role<'a>(status: &'a Value, role: &str) -> &'a Value {
    status["scaling"].as_array().unwrap().iter().find(|r| r["dc"] == "dc1" && r["role"] == role).unwrap()
}

fn names(status: &Value, prefix: &str) -> Vec<String> {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

fn scaled_events(status: &Value) -> Vec<String> {
    status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "scaled")
        .map(|e| e["detail"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn bad_ranges_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    for (from, to, says) in [
        (
            "web = { count = 2, min = 1, max = 3,",
            "web = { count = 2, min = 3, max = 2,",
            "web.min = 3 is above web.max = 2",
        ),
        ("max = 3, autoscale", "max = 300, autoscale", "(web.max)"),
        (
            "cpu_per_server = 100.0",
            "cpu_per_server = -1.0",
            "the target of cpu_per_server must be a positive number",
        ),
        (
            "queue_depth_per_worker = 3",
            "queue_depth_per_workers = 3",
            "queue_depth_per_workers is not an autoscaling setting",
        ),
        ("stale_ms = 5000", "stale_ms = 500", "stale_ms (500 ms) is shorter than the decision interval"),
    ] {
        assert!(TOPOLOGY.contains(from), "{from}");
        let topo = own_ranges(home, &TOPOLOGY.replacen(from, to, 1));
        let o = millions(home, &["up", "--topology", &topo.to_string_lossy(), "--unsafe-fast-storage"]);
        assert!(!o.status.success(), "{to}: started");
        assert!(text(&o).contains(says), "{to}: {}", text(&o));
        assert!(!home.join("control.json").exists(), "{to}: nothing started");
        assert!(
            !home.join("logs").exists() || std::fs::read_dir(home.join("logs")).unwrap().next().is_none()
        );
    }
}

#[test]
fn web_servers_and_workers_scale_by_hand_and_on_the_queue_failing_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let topo = own_ranges(home, TOPOLOGY);
    let o = millions(
        home,
        &["up", "--topology", &topo.to_string_lossy(), "--unsafe-fast-storage", "--scrape-interval", "1s"],
    );
    let _stack = Stack(home);
    assert!(o.status.success(), "{}", text(&o));
    let before = status_json(home);
    assert_eq!(names(&before, "dc1-web-"), ["dc1-web-1", "dc1-web-2"]);
    let web = role(&before, "web");
    assert_eq!(
        (web["current"].as_u64(), web["min"].as_u64(), web["max"].as_u64()),
        (Some(2), Some(1), Some(3))
    );
    assert_eq!(web["autoscaled"], true);
    let file = std::fs::read_to_string(home.join("topology.toml")).unwrap();

    by_hand_under_load(home, &before, &file);
    on_the_queue(home);
}

/// `millions scale`: bad requests change nothing; out to 3 and in to 1 while
/// GETs flow, none failing.
fn by_hand_under_load(home: &Path, before: &Value, file: &str) {
    for (args, says) in [
        (["scale", "dc1", "web", "4"], "dc1's web nodes scale within 1..=3"),
        (["scale", "dc1", "web", "0"], "0 is outside"),
        (["scale", "dc1", "lb", "2"], "only web and worker are"),
        (["scale", "dc9", "web", "2"], "no DC named dc9"),
        (["scale", "dc1", "web", "two"], "invalid value 'two'"),
    ] {
        let o = millions(home, &args);
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }
    let s = status_json(home);
    assert_eq!(names(&s, "dc1-web-"), ["dc1-web-1", "dc1-web-2"], "nothing changed");
    assert_eq!(std::fs::read_to_string(home.join("topology.toml")).unwrap(), file, "nor the topology file");
    assert!(scaled_events(&s).is_empty());

    let lb = node(before, "dc1-lb-1")["addr"].as_str().unwrap().to_owned();
    let admin = {
        let (ip, port) = lb.rsplit_once(':').unwrap();
        format!("{ip}:{}", port.parse::<u16>().unwrap() + 1)
    };
    let load = SteadyGets::start(home, format!("{}/api/v1/openapi.json", https_base(home, &lb)));
    poll("GETs to flow through the load balancer", || load.ok() >= 50);

    let o = millions(home, &["scale", "dc1", "web", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 → 3 (started dc1-web-3"), "{}", text(&o));
    let s = status_json(home);
    assert_eq!(names(&s, "dc1-web-"), ["dc1-web-1", "dc1-web-2", "dc1-web-3"]);
    assert_eq!(node(&s, "dc1-web-3")["healthy"], true, "ready before it was added");
    let web3 = node(&s, "dc1-web-3")["addr"].as_str().unwrap().to_owned();
    poll("the load balancer to send dc1-web-3 requests", || backend_requests(&admin, &web3) > 0.0);
    let kept = topology::load(&home.join("topology.toml")).unwrap();
    assert_eq!(kept.count("dc1", topology::Role::Web), 3, "the run directory's topology has the count");

    // Two roles at once, one of them draining for a while: each change
    // rewrites the same topology file, and neither undoes the other.
    let (web, worker) = std::thread::scope(|scope| {
        let web = scope.spawn(|| millions(home, &["scale", "dc1", "web", "1"]));
        let worker = scope.spawn(|| millions(home, &["scale", "dc1", "worker", "2"]));
        (web.join().unwrap(), worker.join().unwrap())
    });
    assert!(web.status.success(), "{}", text(&web));
    assert!(text(&web).contains("3 → 1 (drained and stopped dc1-web-3, dc1-web-2"), "{}", text(&web));
    assert!(worker.status.success(), "{}", text(&worker));
    assert!(text(&worker).contains("1 → 2 (started dc1-worker-2"), "{}", text(&worker));
    let s = status_json(home);
    assert_eq!(names(&s, "dc1-web-"), ["dc1-web-1"]);
    let both = topology::load(&home.join("topology.toml")).unwrap();
    assert_eq!((both.count("dc1", topology::Role::Web), both.count("dc1", topology::Role::Worker)), (1, 2));
    let seen = load.ok();
    poll("GETs after the scale-in", || load.ok() >= seen + 100);
    let (ok, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} of {} GETs failed: {:?}",
        failed.len(),
        ok,
        &failed[..failed.len().min(5)]
    );
    let events = scaled_events(&s);
    for change in ["web nodes 2 → 3", "worker nodes 1 → 2", "web nodes 3 → 1"] {
        assert!(
            events.iter().any(|e| e.contains(change) && e.contains("set by hand")),
            "{change}: {events:?}"
        );
    }
    let o = millions(home, &["scale", "dc1", "web", "1"]);
    assert!(o.status.success() && text(&o).contains("already 1"), "{}", text(&o));
    // Back to one worker (by hand, or by the autoscaler first: the queue is idle).
    let o = millions(home, &["scale", "dc1", "worker", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(names(&status_json(home), "dc1-worker-"), ["dc1-worker-1"]);
}

/// A burst of photo posts: the queue grows past its target, a worker is
/// added; every photo is processed; once the queue is idle for the window,
/// the worker is removed. (Both can happen within seconds: they are read
/// from the event log, not waited for as states.)
fn on_the_queue(home: &Path) {
    let s = status_json(home);
    let by_autoscaler = |says: &str| {
        scaled_events(&status_json(home))
            .iter()
            .filter(|e| e.contains(says) && e.contains("autoscaler"))
            .count()
    };
    let (added_before, removed_before) =
        (by_autoscaler("1 → 2 (added: dc1-worker-2"), by_autoscaler("2 → 1 (removed: dc1-worker-2"));
    let web = node(&s, "dc1-web-1")["addr"].as_str().unwrap().to_owned();
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(1600, 1200, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]))
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    let jpeg = jpeg.into_inner();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ids: Vec<String> = rt.block_on(async {
        let c = reqwest::Client::new();
        let creds = serde_json::json!({"username": "burst", "password": "password123"});
        let r = c.post(format!("http://{web}/api/v1/users")).json(&creds).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let r = c.post(format!("http://{web}/api/v1/sessions")).json(&creds).send().await.unwrap();
        let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
        // Posted eight at a time, far faster than one worker makes
        // thumbnails: the queue stays over its target for seconds.
        let mut ids = vec![];
        for _ in 0..12 {
            let mut posts = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let (c, url, token, jpeg) =
                    (c.clone(), format!("http://{web}/api/v1/posts"), token.clone(), jpeg.clone());
                posts.spawn(async move {
                    let form = reqwest::multipart::Form::new()
                        .part("photo", reqwest::multipart::Part::bytes(jpeg).file_name("p.jpg"));
                    let r = c.post(url).bearer_auth(&token).multipart(form).send().await.unwrap();
                    assert_eq!(r.status(), 202);
                    r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
                });
            }
            ids.extend(posts.join_all().await);
        }
        ids
    });
    poll("the autoscaler to add a worker", || by_autoscaler("1 → 2 (added: dc1-worker-2") > added_before);
    let ready = |id: &String| {
        rt.block_on(async {
            let v: Value =
                reqwest::get(format!("http://{web}/api/v1/posts/{id}")).await.unwrap().json().await.unwrap();
            v["status"] == "ready"
        })
    };
    poll("every photo processed", || ids.iter().all(ready));
    poll("the autoscaler to remove the worker once the queue is idle", || {
        by_autoscaler("2 → 1 (removed: dc1-worker-2") > removed_before
    });
    let s = status_json(home);
    assert_eq!(names(&s, "dc1-worker-"), ["dc1-worker-1"]);
    let worker = role(&s, "worker");
    assert_eq!(worker["current"], 1);
    let decision = &worker["last_decision"];
    assert_eq!((decision["from"].as_u64(), decision["to"].as_u64()), (Some(2), Some(1)), "{decision}");
    assert!(decision["reason"].as_str().unwrap().contains("scaling in"), "{decision}");
    let kept = topology::load(&home.join("topology.toml")).unwrap();
    assert_eq!(kept.count("dc1", topology::Role::Worker), 1);
    let o = millions(home, &["status"]);
    assert!(text(&o).contains("last decision") && text(&o).contains("2 → 1"), "{}", text(&o));
}
