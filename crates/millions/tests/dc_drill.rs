//! The data-center drill, on one running topology with a simulated WAN: dc1's
//! links to dc2 are cut while users post, then dc1 is lost. A shard whose
//! commits a replica in the other DC must confirm (`survives = "dc"`) loses no
//! acknowledged post, checked one by one; a shard that only survives a node
//! (`survives = "node"`) said so beforehand, and loses the posts acknowledged
//! during the cut. DNS answers only dc2 while dc1 is lost, and dc1 again once it
//! is back; a DC whose load balancer stops is withdrawn from DNS the same way.
//! Then dc1 comes back and serves everything, a shard is added across the WAN,
//! and dc1 is lost again under load.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{
    Stack, app_client, assert_verified, bench, dns_a, https_base, millions, node, own_ranges, poll,
    status_json, text,
};

/// Two DCs with a WAN between them; two synchronous shards, both with their
/// primary and a replica in dc1 and a replica in dc2, one DC-safe, one node-safe.
const TOPOLOGY: &str = r#"
name = "dc-drill"

[[dc]]
name = "dc1"
cidr = "127.0.201.0/24"
lb = { count = 1 }
web = { count = 1 }
worker = { count = 1 }
redis = { count = 1 }
dns = { count = 1 }

[[dc]]
name = "dc2"
cidr = "127.0.202.0/24"
lb = { count = 1 }
web = { count = 1 }
worker = { count = 1 }
redis = { count = 1 }
dns = { count = 1 }

[[shard]]
replication = "sync"
survives = "dc"
primary = "dc1"
replicas = ["dc1", "dc2"]

[[shard]]
replication = "sync"
survives = "node"
primary = "dc1"
replicas = ["dc1", "dc2"]

[[region]]
name = "west"
cidrs = ["127.0.211.0/24"]
prefer = ["dc1", "dc2"]

[[region]]
name = "east"
cidrs = ["127.0.212.0/24"]
prefer = ["dc2", "dc1"]

[wan]
delay_ms = 0
"#;

/// Users posting through one load balancer, each from a task of its own, until
/// stopped; every post answered 201 is recorded with its shard.
struct Posters {
    /// Set to stop.
    stop: Arc<AtomicBool>,
    /// Acknowledged posts: (post id, shard, acknowledged after the cut).
    acked: Arc<Mutex<Vec<(i64, u16, bool)>>>,
    /// Set once the WAN is cut: later acknowledgements are marked so.
    cut: Arc<AtomicBool>,
    /// The load's thread.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Posters {
    fn start(client: reqwest::Client, lb: String, tokens: Vec<String>) -> Posters {
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, c, a) = (stop.clone(), cut.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let map = sharding::ShardMap::even(2).unwrap();
                let mut tasks = Vec::new();
                for (u, token) in tokens.into_iter().enumerate() {
                    let (s, c, a, client, lb, map) =
                        (s.clone(), c.clone(), a.clone(), client.clone(), lb.clone(), map.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut n = 0u32;
                        while !s.load(Ordering::SeqCst) {
                            n += 1;
                            let after_cut = c.load(Ordering::SeqCst);
                            let sent = client
                                .post(format!("{lb}/api/v1/posts"))
                                .header("cookie", format!("sid={token}"))
                                .json(&serde_json::json!({ "caption": format!("user {u} post {n}") }))
                                .send()
                                .await;
                            let Ok(r) = sent else { continue };
                            if r.status() != 201 {
                                // Waiting for a confirmation it cannot get, or the DC
                                // is going: not acknowledged, so not promised.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                            let Ok(body) = r.json::<serde_json::Value>().await else { continue };
                            let id: i64 = body["id"].as_str().unwrap().parse().unwrap();
                            let shard = map.shard_of_post(sharding::PostId::from_i64(id).unwrap()).0;
                            a.lock().unwrap().push((id, shard, after_cut));
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        });
        Posters { stop, acked, cut, thread: Some(thread) }
    }

    /// Acknowledged posts of `shard` (after the cut only, or all).
    fn count(&self, shard: u16, after_cut: bool) -> usize {
        self.acked.lock().unwrap().iter().filter(|(_, s, c)| *s == shard && (*c || !after_cut)).count()
    }

    fn finish(mut self) -> Vec<(i64, u16, bool)> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.acked.lock().unwrap().clone()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// `POST url` with a JSON body, trusting `home`'s CA: (status, body).
fn post_json(home: &Path, url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let client = app_client(home).build().unwrap();
    rt().block_on(async {
        let r = client.post(url).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or_default())
    })
}

/// `GET url` with a session, trusting `home`'s CA: the status.
fn get_status(home: &Path, url: &str, token: Option<&str>) -> u16 {
    let client = app_client(home).timeout(Duration::from_secs(10)).build().unwrap();
    rt().block_on(async {
        let mut request = client.get(url);
        if let Some(token) = token {
            request = request.header("cookie", format!("sid={token}"));
        }
        request.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    })
}

/// The conditions a WAN gateway has in force (its admin API, with the run
/// directory's admin token; without it, refused).
fn gateway_conditions(home: &std::path::Path, admin: &str) -> serde_json::Value {
    let secrets: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("secrets.json")).unwrap()).unwrap();
    let token = secrets["admin"].as_str().unwrap().to_owned();
    rt().block_on(async {
        let url = format!("http://{admin}/admin/conditions");
        let refused = reqwest::get(&url).await.unwrap().status();
        assert_eq!(refused, 401, "the gateway's admin API answered without its token");
        let client = reqwest::Client::new();
        client.get(&url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
    })
}

fn addr(status: &serde_json::Value, name: &str) -> String {
    node(status, name)["addr"].as_str().unwrap().to_owned()
}

/// The addresses `www` resolves to at DNS server `dns` (a client in no region:
/// the DCs in file order, dc1 first).
fn www(status: &serde_json::Value, dns: &str) -> Vec<std::net::IpAddr> {
    dns_a(addr(status, dns).parse().unwrap(), "www.millions.test").unwrap()
}

/// `name`'s IP.
fn ip(status: &serde_json::Value, name: &str) -> std::net::IpAddr {
    addr(status, name).parse::<std::net::SocketAddr>().unwrap().ip()
}

fn primary(status: &serde_json::Value, shard: usize) -> String {
    status["cluster"]["shards"][shard]["primary"].as_str().unwrap_or("").to_owned()
}

#[test]
fn a_wan_cut_then_the_loss_of_the_primarys_dc_loses_no_acknowledged_write_of_a_dc_safe_shard() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let topo = own_ranges(home, TOPOLOGY);
    let o = millions(home, &["up", "--topology", &topo.to_string_lossy(), "--unsafe-fast-storage"]);
    let _stack = Stack(home);
    assert!(o.status.success(), "{}", text(&o));
    poll("every replica to stream", || {
        let s = status_json(home);
        (0..2).all(|i| s["cluster"]["shards"][i]["replicas"].as_array().unwrap().len() == 2)
    });
    let s = status_json(home);
    let (lb1, lb2) = (https_base(home, &addr(&s, "dc1-lb-1")), https_base(home, &addr(&s, "dc2-lb-1")));
    for gw in ["dc1-wan-1", "dc2-wan-1"] {
        assert_eq!(node(&s, gw)["healthy"], true, "{gw}");
    }

    assert_eq!(www(&s, "dc2-dns-1"), [ip(&s, "dc1-lb-1")], "DNS answers the first healthy DC");

    // What each shard survives was said beforehand.
    let o = millions(home, &["status"]);
    let out = text(&o);
    assert!(
        out.contains("shard0: primary")
            && out.contains("acknowledged writes survive the loss of a data center"),
        "{out}"
    );
    assert!(out.contains("acknowledged writes survive the loss of a node"), "{out}");

    // Bad requests change nothing.
    let o = millions(home, &["chaos", "wan-cut", "dc9"]);
    assert!(!o.status.success() && text(&o).contains("no such data center"), "{}", text(&o));
    let o = millions(home, &["chaos", "wan-heal", "dc1"]);
    assert!(!o.status.success() && text(&o).contains("up already"), "{}", text(&o));

    // Users of both shards, signed in at dc1.
    let mut tokens = Vec::new();
    for u in 0..12 {
        let creds = serde_json::json!({"username": format!("drill{u}"), "password": "a long drill password"});
        let (status, body) = post_json(home, &format!("{lb1}/api/v1/users"), creds.clone());
        assert_eq!(status, 201, "{body}");
        let (status, body) = post_json(home, &format!("{lb1}/api/v1/sessions"), creds);
        assert_eq!(status, 201, "{body}");
        tokens.push(body["token"].as_str().unwrap().to_owned());
    }
    let posters = Posters::start(
        app_client(home).timeout(Duration::from_secs(2)).build().unwrap(),
        lb1.clone(),
        tokens.clone(),
    );
    poll("posts acknowledged on both shards", || {
        posters.count(0, false) >= 20 && posters.count(1, false) >= 20
    });

    // Cut dc1 off: the DC-safe shard's commits wait for dc2; the node-safe
    // shard's are confirmed by dc1's own replica.
    posters.cut.store(true, Ordering::SeqCst);
    let o = millions(home, &["chaos", "wan-cut", "dc1"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = millions(home, &["chaos", "wan-cut", "dc1"]);
    assert!(!o.status.success() && text(&o).contains("cut already"), "{}", text(&o));
    // A gateway that crashes during the cut comes back cut.
    let o = millions(home, &["chaos", "kill", "dc2-wan-1"]);
    assert!(o.status.success(), "{}", text(&o));
    poll("dc2's gateway restarted", || {
        let s = status_json(home);
        node(&s, "dc2-wan-1")["healthy"] == true && node(&s, "dc2-wan-1")["restarts"] == 1
    });
    assert_eq!(gateway_conditions(home, &addr(&s, "dc2-wan-1"))["dc1"]["cut"], true);
    poll("node-safe posts acknowledged during the cut", || posters.count(1, true) >= 10);

    // Lose dc1.
    let o = millions(home, &["chaos", "dc-down", "dc1"]);
    assert!(o.status.success(), "{}", text(&o));
    let acked = posters.finish();
    poll("both shards' primaries in dc2", || {
        let s = status_json(home);
        primary(&s, 0) == "shard0-pg-3" && primary(&s, 1) == "shard1-pg-3"
    });

    poll("DNS to withdraw the lost DC", || www(&s, "dc2-dns-1") == [ip(&s, "dc2-lb-1")]);

    // Every acknowledged post of the DC-safe shard is there, one by one; the
    // node-safe shard lost what dc1's replica alone confirmed.
    let mut missing: BTreeMap<u16, Vec<i64>> = BTreeMap::new();
    for (id, shard, _) in &acked {
        let status = get_status(home, &format!("{lb2}/api/v1/posts/{id}"), None);
        assert!(status == 200 || status == 404, "post {id}: {status}");
        if status == 404 {
            missing.entry(*shard).or_default().push(*id);
        }
    }
    let on = |shard: u16| acked.iter().filter(|(_, s, _)| *s == shard).count();
    assert!(on(0) >= 20, "too few DC-safe posts to prove anything: {}", on(0));
    assert_eq!(missing.get(&0), None, "acknowledged posts of the DC-safe shard were lost");
    let lost = missing.get(&1).map_or(0, Vec::len);
    let during = |shard: u16| acked.iter().filter(|(_, s, cut)| *s == shard && *cut).count();
    eprintln!(
        "DC-safe shard: {} posts acknowledged ({} during the cut), none lost; \
         node-safe shard: {} acknowledged ({} during the cut), {lost} lost",
        on(0),
        during(0),
        on(1),
        during(1)
    );
    assert!(lost >= 1, "the node-safe shard lost nothing of {} posts: the cut did not hold its WAL", on(1));

    // Sessions made in dc1 are valid in dc2.
    for token in &tokens {
        assert_eq!(get_status(home, &format!("{lb2}/api/v1/feed"), Some(token)), 200);
    }

    // dc1 comes back (healed first): its servers rejoin as replicas, and it
    // serves every DC-safe post.
    let o = millions(home, &["chaos", "wan-heal", "dc1"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = millions(home, &["chaos", "dc-up", "dc1"]);
    assert!(o.status.success(), "{}", text(&o));
    poll("dc1's replicas streaming again", || {
        let s = status_json(home);
        (0..2).all(|i| s["cluster"]["shards"][i]["replicas"].as_array().unwrap().len() == 2)
    });
    for (id, _, _) in acked.iter().filter(|(_, s, _)| *s == 0) {
        assert_eq!(get_status(home, &format!("{lb1}/api/v1/posts/{id}"), None), 200, "post {id} from dc1");
    }
    assert_eq!(gateway_conditions(home, &addr(&s, "dc1-wan-1"))["dc2"]["cut"], false);
    poll("DNS to answer dc1 again", || www(&s, "dc2-dns-1") == [ip(&s, "dc1-lb-1")]);
    assert_eq!(www(&s, "dc1-dns-1"), [ip(&s, "dc1-lb-1")], "dc1's own DNS server is back");

    // A DC whose load balancer is stopped is withdrawn, and returns with it.
    let o = millions(home, &["chaos", "stop", "dc1-lb-1"]);
    assert!(o.status.success(), "{}", text(&o));
    poll("DNS to withdraw dc1 without its load balancer", || www(&s, "dc1-dns-1") == [ip(&s, "dc2-lb-1")]);
    let o = millions(home, &["chaos", "start", "dc1-lb-1"]);
    assert!(o.status.success(), "{}", text(&o));
    poll("DNS to answer dc1 with its load balancer back", || www(&s, "dc1-dns-1") == [ip(&s, "dc1-lb-1")]);

    // A third shard joins, its replica in dc2 streaming through dc2's gateway,
    // which relays to the new primary without a restart (the other shards'
    // streams through it are not broken); buckets move onto it.
    let restarts = |s: &serde_json::Value| node(s, "dc2-wan-1")["restarts"].clone();
    let before = status_json(home);
    let o = millions(home, &["shard", "add", "--survives", "dc"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("shard 2 added") && text(&o).contains("survives a dc"), "{}", text(&o));
    poll("shard 2's replicas to stream, one of them across the WAN", || {
        status_json(home)["cluster"]["shards"][2]["replicas"].as_array().is_some_and(|r| r.len() == 2)
    });
    let after = status_json(home);
    assert_eq!(restarts(&after), restarts(&before), "the gateway took the new links live");
    assert_eq!(node(&after, "dc2-wan-1")["pid"], node(&before, "dc2-wan-1")["pid"]);
    let o = millions(home, &["shard", "move", "0-15", "--to", "2"]);
    assert!(o.status.success(), "{}", text(&o));

    // Users who reach the site by name, from both regions, while dc1 is lost under
    // load: they move to dc2 as DNS withdraws dc1, stay signed in (no 401), and
    // no acknowledged write is lost. Ten seconds after the loss leave room for the
    // DNS health checks and the clients' TTL on a busy machine.
    let (o, report) = bench(
        home,
        &["--rate", "30", "--duration", "15s", "--warmup", "1s", "--users", "40", "--create-users"]
            .into_iter()
            .chain([
                "--password",
                "a long drill password",
                "--user-prefix",
                "roamer",
                "--scenario",
                "dc-down:dc1",
            ])
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(report["fault"]["action"], "dc-down dc1", "{}", report["fault"]);
    assert_eq!(report["fault"]["recovered"], true, "{}", report["fault"]);
    assert_verified(&report);
    let kinds = &report["errors_by_kind"];
    assert!(kinds["http_401"].is_null() && kinds["http_4xx"].is_null(), "{kinds}");
    let traffic = &report["traffic"];
    assert!(traffic["totals"]["dc1"].as_u64() > Some(0), "the west region went to dc1 first: {traffic}");
    let last = traffic["per_second"].as_array().unwrap().last().unwrap();
    assert!(last["dc1"].is_null() && last["dc2"].as_u64() > Some(0), "everyone on dc2 at the end: {traffic}");
}
