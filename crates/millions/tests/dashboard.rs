//! The controller's dashboard on a running topology (`millions up`, scraped
//! every second): its JSON for scripts (every node, every process's host
//! metrics, PostgreSQL and Redis included, the nodes' own metrics, clear 4xx
//! for bad input), then the page in headless Chromium (driven over WebDriver by
//! chromedriver, as `crates/web/tests/browser.rs` does): it lists every node,
//! its charts draw data (each tier's p99, the business numbers, the active
//! users), a node killed through its action shows as down, then restarted, and
//! a node restarting in a loop fires an alert the page shows; a photo comes
//! from the CDN edge (JSON, page, DNS), is purged from it, and comes from the
//! origin while the edge is stopped. Also the
//! Prometheus files `up` writes, checked by promtool. One topology for the
//! whole binary: one test.

mod support;

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use support::{Stack, millions, own_ranges, text};

/// How long any one condition may take to come true.
const PATIENCE: Duration = Duration::from_secs(40);

/// Polls `check` (async) until it yields `Some`, or fails with `what` and the last value.
async fn until<T, F: AsyncFnMut() -> Result<T, String>>(what: &str, mut check: F) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(Instant::now() < deadline, "timed out waiting for {what}: {last}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// chromedriver in its own process group (its browsers with it), killed on drop.
struct Driver(Child, String);

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// A headless Chromium session with a fresh profile in `dir`.
async fn browser(dir: &Path) -> (Driver, Client) {
    let port = nodes::free_port("127.0.0.1".parse().unwrap()).unwrap();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect(
            "starting /usr/bin/chromedriver (Debian's chromium-driver; scripts/setup.sh test installs it)",
        );
    let driver = Driver(child, format!("http://127.0.0.1:{port}"));
    let status = reqwest::Client::new();
    until("chromedriver to be ready", async || {
        let r = status.get(format!("{}/status", driver.1)).send().await.map_err(|e| e.to_string())?;
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        if v["value"]["ready"] == json!(true) { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    let args = [
        "--headless=new".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1200,1000".into(),
        // The app's pages come over HTTPS with the run directory's CA, which
        // this fresh profile does not know.
        "--ignore-certificate-errors".into(),
        format!("--user-data-dir={}", dir.join("profile").display()),
    ];
    let caps =
        json!({"browserName": "chrome", "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}});
    let Value::Object(caps) = caps else { unreachable!() };
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.1)
        .await
        .expect("a session");
    (driver, client)
}

/// What the page shows, for failure messages.
async fn body(c: &Client) -> String {
    match c.find(Locator::Css("body")).await {
        Ok(b) => b.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    }
}

/// A number the page's script reads (`return ...`), or an error.
async fn js_number(c: &Client, script: &str) -> Result<f64, String> {
    let v = c.execute(script, vec![]).await.map_err(|e| e.to_string())?;
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).ok_or_else(|| v.to_string())
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// What `up` wrote for an operator's own Prometheus and Grafana: the
/// configuration passes `promtool check config`, its alert rules `promtool
/// check rules`, its targets are every node
/// serving `/metrics` (and the controller), each of which passes `promtool
/// check metrics` (the exposition format's rules and Prometheus' naming), and
/// every metric the Grafana dashboard names is served by some node (a typo in
/// a panel's query fails here).
async fn prometheus_files_check_out(up_output: &str) {
    let config = up_output
        .lines()
        .find_map(|l| l.trim().strip_prefix("prometheus: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no prometheus line: {up_output}"))
        .to_owned();
    let dir = Path::new(&config).parent().unwrap().to_owned();
    let (ok, said) = tokio::task::block_in_place(|| testkit::promtool(&["check", "config", &config], ""));
    assert!(ok, "promtool check config {config}: {said}");
    let rules = dir.join("alerts.yml").display().to_string();
    let (ok, said) = tokio::task::block_in_place(|| testkit::promtool(&["check", "rules", &rules], ""));
    assert!(ok && said.contains("SUCCESS: 7 rules found"), "promtool check rules {rules}: {said}");
    let targets: Value = serde_json::from_slice(&std::fs::read(dir.join("targets.json")).unwrap()).unwrap();
    let mut nodes: Vec<(String, String, String)> = targets
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let name = g["labels"]["node"].as_str().unwrap().to_owned();
            (
                name,
                g["labels"]["role"].as_str().unwrap().to_owned(),
                g["targets"][0].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    nodes.sort();
    let roles: Vec<&str> = nodes.iter().map(|n| n.1.as_str()).collect();
    assert_eq!(roles, ["control", "cdn", "dns", "lb", "web", "worker"], "{targets}");
    let mut served = String::new();
    for (name, _, addr) in &nodes {
        let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
        let (ok, said) = tokio::task::block_in_place(|| testkit::promtool(&["check", "metrics"], &text));
        assert!(ok && said.trim().is_empty(), "promtool check metrics on {name}'s /metrics: {said}");
        served.push_str(&text);
    }
    let grafana = std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&grafana).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "{grafana}");
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    // Every panel's query is PromQL Prometheus parses: promtool checks them as
    // the expressions of recording rules.
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        rules.push_str(&format!("      - record: grafana_panel_{i}\n        expr: {}\n", json!(expr)));
    }
    let queries = dir.parent().unwrap().join("grafana-queries.yml");
    std::fs::write(&queries, &rules).unwrap();
    let queries = queries.display().to_string();
    let (ok, said) = tokio::task::block_in_place(|| testkit::promtool(&["check", "rules", &queries], ""));
    assert!(ok, "the Grafana dashboard's queries: {said}\n{rules}");
    for expr in exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            // A histogram with no observation yet shows only its family's name.
            if word.starts_with("millions_") {
                assert!(
                    served.contains(word.trim_end_matches("_bucket")),
                    "the Grafana dashboard's {word} is served by no node ({expr})"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_node_live_and_its_actions_work() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let topo = own_ranges(home, topology::preset_text("test").unwrap());
    // The dashboard at the address asked for (a free one: tests never take the
    // fixed default).
    let at = format!("127.0.0.1:{}", nodes::free_port("127.0.0.1".parse().unwrap()).unwrap());
    let topo = topo.to_string_lossy();
    let args =
        ["up", "--topology", &topo, "--unsafe-fast-storage", "--scrape-interval", "1s", "--dashboard", &at];
    let o = tokio::task::block_in_place(|| millions(home, &args));
    let _stack = Stack(home);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    let url = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("dashboard: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no dashboard line: {out}"))
        .strip_suffix("/dashboard")
        .unwrap_or_else(|| panic!("the dashboard is at /dashboard: {out}"))
        .to_owned();
    assert_eq!(url, format!("http://{at}"), "the dashboard is where --dashboard put it");

    // The JSON for scripts, without a token: every node, healthy.
    let (status, state) = get_json(&format!("{url}/api/dashboard/state")).await;
    assert_eq!(status, 200, "{state}");
    let nodes: Vec<String> =
        state["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(nodes.len(), 8, "{state}");
    assert!(state["nodes"].as_array().unwrap().iter().all(|n| n["health"] == "healthy"), "{state}");
    assert!(state["epoch"].as_u64().unwrap() >= 1);

    // Every process's host metrics (PostgreSQL and Redis included), the
    // disk, and the nodes' own metrics (a web server's requests) are kept.
    let names = "host_cpu_seconds_total,host_memory_rss_bytes,host_open_fds";
    until("every node's host metrics", async || {
        let (_, v) = get_json(&format!("{url}/api/dashboard/series?names={names}")).await;
        let series = v["series"].as_array().cloned().unwrap_or_default();
        let missing: Vec<&String> =
            nodes.iter().filter(|n| series.iter().filter(|s| s["node"] == n.as_str()).count() < 3).collect();
        let rss_ok = series.iter().filter(|s| s["name"] == "host_memory_rss_bytes").all(|s| {
            s["points"].as_array().and_then(|p| p.last()).and_then(|p| p[1].as_f64()).is_some_and(|v| v > 0.0)
        });
        if missing.is_empty() && rss_ok { Ok(()) } else { Err(format!("missing {missing:?}: {v}")) }
    })
    .await;
    until("the disk and a web server's requests", async || {
        let q = "names=host_disk_free_bytes,millions_http_requests_total,scrape_up";
        let (status, v) = get_json(&format!("{url}/api/dashboard/series?{q}")).await;
        let series = v["series"].as_array().cloned().unwrap_or_default();
        let has = |name: &str, node: &str| series.iter().any(|s| s["name"] == name && s["node"] == node);
        if status == 200
            && has("host_disk_free_bytes", "host")
            && has("millions_http_requests_total", "dc1-web-1")
        {
            Ok(())
        } else {
            Err(format!("{status}: {v}"))
        }
    })
    .await;
    // A user signs up, logs in and reads the feed (straight at the web server):
    // the web tier's p99 and the active users of the day come from that.
    let web = state["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "dc1-web-1").unwrap()["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let app = reqwest::Client::new();
    let creds = json!({"username": "watcher", "password": "password123"});
    let r = app.post(format!("http://{web}/api/v1/users")).json(&creds).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = app.post(format!("http://{web}/api/v1/sessions")).json(&creds).send().await.unwrap();
    let session: Value = r.json().await.unwrap();
    let token = session["token"].as_str().unwrap();
    let r = app.get(format!("http://{web}/api/v1/feed")).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    until("the web tier's p99 and one active user", async || {
        let (_, s) = get_json(&format!("{url}/api/dashboard/state")).await;
        let q = "names=tier_request_duration_p99_seconds&node=system";
        let (_, v) = get_json(&format!("{url}/api/dashboard/series?{q}")).await;
        let p99 =
            v["series"].as_array().into_iter().flatten().any(|s| {
                s["labels"]["role"] == "web" && s["points"].as_array().is_some_and(|p| !p.is_empty())
            });
        let a = &s["active_users"];
        if p99 && a["day"] == 1 && a["month"] == 1 && a["counted"].as_array().is_some_and(|c| c.len() == 1) {
            Ok(())
        } else {
            Err(format!("p99 {p99}; active users {a}"))
        }
    })
    .await;

    prometheus_files_check_out(&out).await;

    for (query, want) in [
        ("names=no_such_metric", 404),
        ("names=host_open_fds&since=soon", 400),
        ("names=host_open_fds&node=dc9-web-9", 404),
    ] {
        let (status, v) = get_json(&format!("{url}/api/dashboard/series?{query}")).await;
        assert_eq!(status, want, "{query}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{query}: {v}");
    }
    let r = reqwest::Client::new().post(format!("{url}/api/nodes/dc1-web-1/kill")).send().await.unwrap();
    assert_eq!(r.status(), 401, "an action needs the admin token");

    // The page lists every node and draws its charts.
    let (_driver, c) = browser(home).await;
    c.goto(&format!("{url}/dashboard")).await.unwrap();
    until("every node on the page", async || {
        for n in &nodes {
            let css = format!("tr.node[data-node='{n}'][data-health='healthy']");
            if c.find_all(Locator::Css(&css)).await.map_err(|e| e.to_string())?.is_empty() {
                return Err(format!("no {css}; the page reads:\n{}", body(&c).await));
            }
        }
        Ok(())
    })
    .await;
    until("the live stream", async || {
        let live = c.find(Locator::Css("#live")).await.map_err(|e| e.to_string())?;
        match live.attr("data-state").await.map_err(|e| e.to_string())? {
            Some(s) if s == "live" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    for chart in ["cpu", "memory", "fds", "rate-web", "duration-web", "disk", "business", "active-users"] {
        let script = format!(
            "const c = document.querySelector('#chart-{chart}'); \
             return c && c.querySelector('canvas') ? Number(c.dataset.points || 0) : -1;"
        );
        until(&format!("chart {chart} to draw points"), async || match js_number(&c, &script).await {
            Ok(n) if n > 0.0 => Ok(()),
            other => Err(format!("{other:?}; the page reads:\n{}", body(&c).await)),
        })
        .await;
    }

    // Nothing is wrong: no alert fires, and the page says so.
    let (_, now) = get_json(&format!("{url}/api/dashboard/state")).await;
    assert_eq!(now["alerts"], json!([]), "{now}");
    until("the alerts area", async || {
        let none = c.find_all(Locator::Css("#alerts li.none")).await.map_err(|e| e.to_string())?;
        if none.len() == 1 { Ok(()) } else { Err(body(&c).await) }
    })
    .await;
    // Each DC's web servers and workers with their counts (fixed here: no range).
    let scaled: Vec<(String, String, u64, bool)> = now["scaling"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap().to_owned();
            (text("dc"), text("role"), r["current"].as_u64().unwrap(), r["autoscaled"].as_bool().unwrap())
        })
        .collect();
    let fixed = |role: &str| ("dc1".to_owned(), role.to_owned(), 1, false);
    assert_eq!(scaled, [fixed("web"), fixed("worker")], "{now}");
    until("the scaling table", async || {
        let rows =
            c.find_all(Locator::Css("#scaling tbody tr[data-dc='dc1']")).await.map_err(|e| e.to_string())?;
        if rows.len() == 2 { Ok(()) } else { Err(body(&c).await) }
    })
    .await;
    until("the active users on the page", async || {
        let dau = c.find(Locator::Css("#dau")).await.map_err(|e| e.to_string())?;
        match dau.text().await.map_err(|e| e.to_string())?.as_str() {
            "1" => Ok(()),
            other => Err(other.to_owned()),
        }
    })
    .await;

    // Without the token, an action is not sent.
    let kill = "tr.node[data-node='dc1-web-1'] button[data-action='kill']";
    c.find(Locator::Css(kill)).await.unwrap().click().await.unwrap();
    let said = c.find(Locator::Css("#message")).await.unwrap().text().await.unwrap();
    assert!(said.contains("enter the admin token first"), "{said}");

    // With it (kept for the tab), after a confirmation: the node goes down,
    // then the supervisor brings it back, and both are on the event log.
    let token = control::admin_token(home).unwrap();
    let field = c.find(Locator::Css("#token")).await.unwrap();
    field.send_keys(&token).await.unwrap();
    c.find(Locator::Css("#token-form button")).await.unwrap().click().await.unwrap();
    let kept = c.find(Locator::Css("#token-state")).await.unwrap().text().await.unwrap();
    assert!(kept.contains("kept"), "{kept}");
    let pid_before =
        state["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "dc1-web-1").unwrap()["pid"]
            .as_u64()
            .unwrap();
    c.find(Locator::Css(kill)).await.unwrap().click().await.unwrap();
    until("the confirmation", async || c.accept_alert().await.map_err(|e| e.to_string())).await;
    let row = "tr.node[data-node='dc1-web-1']";
    until("the killed node to show as down", async || {
        let r = c.find(Locator::Css(row)).await.map_err(|e| e.to_string())?;
        match r.attr("data-health").await.map_err(|e| e.to_string())? {
            Some(h) if h == "down" => Ok(()),
            other => Err(format!("{other:?}; the page reads:\n{}", body(&c).await)),
        }
    })
    .await;
    until("the node restarted and healthy", async || {
        let r = c.find(Locator::Css(row)).await.map_err(|e| e.to_string())?;
        let health = r.attr("data-health").await.map_err(|e| e.to_string())?;
        let restarts = r.find(Locator::Css(".restarts")).await.map_err(|e| e.to_string())?.text().await;
        let pid = r.find(Locator::Css(".pid")).await.map_err(|e| e.to_string())?.text().await;
        let (restarts, pid) = (restarts.map_err(|e| e.to_string())?, pid.map_err(|e| e.to_string())?);
        if health.as_deref() == Some("healthy") && restarts == "1" && pid != pid_before.to_string() {
            Ok(())
        } else {
            Err(format!("{health:?} restarts {restarts} pid {pid}"))
        }
    })
    .await;
    for kind in ["killed", "restarted"] {
        let css = format!("#events li[data-kind='{kind}']");
        until(&format!("a {kind} event"), async || {
            let found = c.find_all(Locator::Css(&css)).await.map_err(|e| e.to_string())?;
            if found.iter().len() > 0 { Ok(()) } else { Err(body(&c).await) }
        })
        .await;
    }

    // A node restarting in a loop (killed three times, restarted by the
    // supervisor each time) fires an alert: on the page and in the event log.
    let restarts = async |node: &str| {
        let (_, s) = get_json(&format!("{url}/api/dashboard/state")).await;
        let n = s["nodes"].as_array().unwrap().iter().find(|n| n["name"] == node).cloned().unwrap();
        (n["restarts"].as_u64().unwrap(), n["health"] == "healthy")
    };
    let api = reqwest::Client::new();
    for round in 1..=3 {
        let r =
            api.post(format!("{url}/api/nodes/dc1-worker-1/kill")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        until(&format!("restart {round} of the worker"), async || match restarts("dc1-worker-1").await {
            (n, true) if n == round => Ok(()),
            other => Err(format!("{other:?}")),
        })
        .await;
    }
    until("the restart loop alert on the page", async || {
        let css = "#alerts li[data-rule='NodeRestartLoop'][data-severity='page']";
        let found = c.find_all(Locator::Css(css)).await.map_err(|e| e.to_string())?;
        if found.len() == 1 { Ok(()) } else { Err(body(&c).await) }
    })
    .await;
    let (_, s) = get_json(&format!("{url}/api/dashboard/state")).await;
    assert_eq!(s["alerts"][0]["subject"], "dc1-worker-1", "{s}");
    let fired = s["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "alert-firing" && e["node"] == "dc1-worker-1");
    assert!(fired, "{s}");

    photos_come_from_the_cdn_edge_and_from_the_origin_without_it(home, &url, &state, token_of(&session), &c)
        .await;
    let _ = c.close().await;
}

fn token_of(session: &Value) -> &str {
    session["token"].as_str().expect("a session token")
}

/// The address of node `name` in the dashboard's state.
fn addr_of(state: &Value, name: &str) -> String {
    let node = state["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name);
    node.and_then(|n| n["addr"].as_str()).unwrap_or_else(|| panic!("no {name} in {state}")).to_owned()
}

/// The CDN edge in front of dc1's web servers: once the web server has seen it
/// healthy, a photo's URLs (JSON and page) point at it, over HTTPS when the page
/// came over HTTPS, and it serves them (a miss, then a hit, the origin's bytes).
/// With every edge stopped, the same page shows the photo from the origin, with
/// nothing asked of the user; started again, the edge is used again. Deleting the
/// post takes the photo off the edge.
async fn photos_come_from_the_cdn_edge_and_from_the_origin_without_it(
    home: &Path,
    url: &str,
    state: &Value,
    token: &str,
    c: &Client,
) {
    let (web, edge, lb) =
        (addr_of(state, "dc1-web-1"), addr_of(state, "dc1-cdn-1"), addr_of(state, "dc1-lb-1"));
    let edge_ip = edge.parse::<std::net::SocketAddr>().unwrap().ip();
    let https_port = topology::load(&home.join("topology.toml")).unwrap().ports().https;
    let edge_https = format!("https://{}", std::net::SocketAddr::new(edge_ip, https_port));
    let mut photo = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(320, 240, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    }))
    .write_to(&mut photo, image::ImageFormat::Jpeg)
    .unwrap();
    let form = reqwest::multipart::Form::new()
        .part("photo", reqwest::multipart::Part::bytes(photo.into_inner()).file_name("p.jpg"));
    let app = reqwest::Client::new();
    let r = app
        .post(format!("http://{web}/api/v1/posts"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let post: Value = r.json().await.unwrap();
    let id = post["id"].as_str().unwrap().to_owned();
    let original = async |prefix: &str| -> Result<String, String> {
        let r = app.get(format!("http://{web}/api/v1/posts/{id}")).send().await.map_err(|e| e.to_string())?;
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        let url = v["photo"]["original"]["url"].as_str().unwrap_or_default().to_owned();
        if url.starts_with(prefix) { Ok(url) } else { Err(format!("wanted {prefix}…: {v}")) }
    };
    let at_edge =
        until("the photo's URL at the edge", async || original(&format!("http://{edge}/media/")).await).await;
    let key = at_edge.rsplit('/').next().unwrap().to_owned();
    let from_origin =
        app.get(format!("http://{web}/media/{key}")).send().await.unwrap().bytes().await.unwrap();
    for want in ["miss", "hit"] {
        let r = app.get(&at_edge).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let outcome = r.headers().get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(outcome.eq_ignore_ascii_case(want), "wanted {want}, got {outcome:?}");
        assert_eq!(r.bytes().await.unwrap(), from_origin, "the edge serves the origin's bytes");
    }

    // `millions purge` empties every edge of it (the next request is a miss);
    // a purge that names nothing is refused and reaches no edge.
    let key_path = format!("/media/{key}");
    let o = tokio::task::block_in_place(|| millions(home, &["purge", "--path", &key_path]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("dc1-cdn-1") && text(&o).contains("1 purged"), "{}", text(&o));
    let r = app.get(&at_edge).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"].to_str().unwrap().to_ascii_lowercase(), "miss", "purged");
    let o = tokio::task::block_in_place(|| millions(home, &["purge"]));
    assert!(
        !o.status.success() && text(&o).contains("name at least one path, prefix or tag"),
        "{}",
        text(&o)
    );
    let o = tokio::task::block_in_place(|| millions(home, &["purge", "--prefix", "media/"]));
    assert!(!o.status.success() && text(&o).contains("must start with /"), "{}", text(&o));

    // The edge serves the photos only: the web servers' pages, probes and metrics
    // are not reachable through it.
    let https_app = support::app_client(home).build().unwrap();
    for path in ["/", "/metrics", "/readyz", "/api/v1/feed", "/login"] {
        let r = https_app.get(format!("{edge_https}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} through the edge");
    }

    // The page over HTTPS: its photo comes from the edge's HTTPS listener.
    let page = format!("{}/p/{id}", support::https_base(home, &lb));
    let loaded = |prefix: String| {
        format!(
            "const i = [...document.images].filter(i => i.currentSrc.startsWith('{prefix}')); \
             return i.length > 0 && i.every(i => i.complete && i.naturalWidth > 0) ? i.length : 0;"
        )
    };
    let shows = async |prefix: String| {
        let script = loaded(prefix.clone());
        until(&format!("the page's photo loaded from {prefix}"), async || {
            c.goto(&page).await.map_err(|e| e.to_string())?;
            match js_number(c, &script).await {
                Ok(n) if n > 0.0 => Ok(()),
                other => Err(format!("{other:?}; the page reads:\n{}", body(c).await)),
            }
        })
        .await;
    };
    shows(format!("{edge_https}/media/")).await;
    // DNS names the edge as `cdn.` in the zone.
    let dns: std::net::SocketAddr = addr_of(state, "dc1-dns-1").parse().unwrap();
    let lb_ip = lb.parse::<std::net::SocketAddr>().unwrap().ip();
    let cdn_name = async |want: std::net::IpAddr| {
        until(&format!("cdn.millions.test to answer {want}"), async || {
            match tokio::task::block_in_place(|| support::dns_a(dns, "cdn.millions.test")) {
                Ok(a) if a == [want] => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    };
    cdn_name(edge_ip).await;

    // Every edge down: the origin serves the page's photo, and DNS answers the
    // CDN's name with the load balancer.
    let o = tokio::task::block_in_place(|| millions(home, &["chaos", "stop", "dc1-cdn-1"]));
    assert!(o.status.success(), "{}", text(&o));
    until("the photo's URL back at the origin", async || original("/media/").await).await;
    shows(format!("{}/media/", support::https_base(home, &lb))).await;
    cdn_name(lb_ip).await;
    // A purge with the edge stopped: complete, and the edge's disk tier (which
    // holds the photo) is dropped before it starts again: a miss, not a stale hit.
    let o = tokio::task::block_in_place(|| millions(home, &["purge", "--prefix", "/media/"]));
    assert!(o.status.success() && text(&o).contains("not-running"), "{}", text(&o));
    let o = tokio::task::block_in_place(|| millions(home, &["chaos", "start", "dc1-cdn-1"]));
    assert!(o.status.success(), "{}", text(&o));
    let outcome = async || {
        let r = app.get(&at_edge).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-cache"].to_str().unwrap().to_ascii_lowercase()
    };
    assert_eq!(outcome().await, "miss", "the purge that missed the edge still holds");
    assert_eq!(outcome().await, "hit");
    shows(format!("{edge_https}/media/")).await;
    cdn_name(edge_ip).await;

    // A crash keeps the disk tier: after the supervisor's restart the photo is a
    // hit from disk, not a miss.
    let o = tokio::task::block_in_place(|| millions(home, &["chaos", "kill", "dc1-cdn-1"]));
    assert!(o.status.success(), "{}", text(&o));
    until("the edge restarted", async || {
        let (_, s) = get_json(&format!("{url}/api/dashboard/state")).await;
        let n = s["nodes"].as_array().and_then(|n| n.iter().find(|n| n["name"] == "dc1-cdn-1").cloned());
        match n {
            Some(n) if n["restarts"].as_u64() >= Some(1) && n["health"] == "healthy" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(outcome().await, "hit", "served from the disk tier after a crash");

    // Deleting the post removes its photo's objects from the store and purges
    // them from every edge (a worker's clean-up job, through the controller's
    // purge): the edge no longer serves the photo.
    let r = app.delete(format!("http://{web}/api/v1/posts/{id}")).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    until("the deleted post's photo gone from the edge", async || {
        let r = app.get(&at_edge).send().await.map_err(|e| e.to_string())?;
        match r.status().as_u16() {
            404 => Ok(()),
            s => Err(format!("{s}, x-cache {:?}", r.headers().get("x-cache"))),
        }
    })
    .await;
}
