//! Page load of the home feed through a running topology, in headless Chromium:
//! with the photos from the CDN edge, and from the origin (the web servers) with
//! every edge stopped. `scripts/bench-pageload.sh` starts the topology and runs
//! this; see it for the method.
//!
//! `pageload HOME BASE WEB_METRICS PHOTOS LOADS MODE`: HOME is the run directory
//! (its CA and its `millions` controller), BASE the app's HTTPS URL at a load
//! balancer, WEB_METRICS the URL of a web server's `/metrics` (its requests are
//! counted per page), PHOTOS how many photo posts the feed shows, LOADS the page
//! loads measured, MODE `prepare` (a poster with PHOTOS photos and a viewer who
//! follows them; prints the viewer's name) or `measure VIEWER` (LOADS loads of
//! `/` as that viewer, signed in through the login form, each in a fresh browser
//! profile, so nothing comes from the browser's cache; prints one JSON line of
//! medians).

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

const PASSWORD: &str = "pageload password";

/// chromedriver in its own process group, killed (with its browsers) on drop.
struct Driver(Child, String);

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

async fn driver() -> Driver {
    let port = nodes::free_port("127.0.0.1".parse().unwrap()).unwrap();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("starting /usr/bin/chromedriver (Debian's chromium-driver)");
    let driver = Driver(child, format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = async {
            let v: Value = reqwest::get(format!("{}/status", driver.1)).await.ok()?.json().await.ok()?;
            (v["value"]["ready"] == json!(true)).then_some(())
        };
        if ready.await.is_some() {
            return driver;
        }
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn client(home: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(home.join("tls/ca.pem")).expect("the run directory's CA");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

async fn session(http: &reqwest::Client, base: &str, name: &str) -> String {
    let creds = json!({"username": name, "password": PASSWORD});
    let r = http.post(format!("{base}/api/v1/users")).json(&creds).send().await.unwrap();
    assert!(r.status().is_success() || r.status() == 409, "signup {name}: {}", r.status());
    let v: Value =
        http.post(format!("{base}/api/v1/sessions")).json(&creds).send().await.unwrap().json().await.unwrap();
    v["token"].as_str().expect("a session token").to_owned()
}

/// A JPEG of `w`×`h` that differs with `seed` (so every photo is its own object).
fn photo(seed: u32, w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x * 7 + seed * 31) % 256) as u8,
            ((y * 5 + seed * 17) % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

async fn prepare(home: &std::path::Path, base: &str, photos: u32) {
    let http = client(home);
    let poster = session(&http, base, "pageposter").await;
    let viewer = session(&http, base, "pageviewer").await;
    let r =
        http.put(format!("{base}/api/v1/users/pageposter/follow")).bearer_auth(&viewer).send().await.unwrap();
    assert!(r.status().is_success(), "follow: {}", r.status());
    let mut ids = Vec::new();
    for i in 0..photos {
        let form = reqwest::multipart::Form::new()
            .part("photo", reqwest::multipart::Part::bytes(photo(i, 1600, 1200)).file_name("p.jpg"));
        let r = http
            .post(format!("{base}/api/v1/posts"))
            .bearer_auth(&poster)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "upload {i}");
        let v: Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    for id in &ids {
        loop {
            let v: Value =
                http.get(format!("{base}/api/v1/posts/{id}")).send().await.unwrap().json().await.unwrap();
            if v["status"] == "ready" {
                break;
            }
            assert!(Instant::now() < deadline, "post {id} not ready: {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!("pageviewer");
}

/// Requests the web server has served so far (every route, every status).
async fn web_requests(metrics: &str) -> f64 {
    let text = reqwest::get(metrics).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("millions_http_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn measure(base: &str, metrics: &str, viewer: &str, loads: u32) {
    let driver = driver().await;
    let (mut load_ms, mut images_ms, mut images, mut web) = (vec![], vec![], vec![], vec![]);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..loads {
        let profile: PathBuf = dir.path().join(format!("profile-{round}"));
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1200,1000".into(),
            "--ignore-certificate-errors".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"browserName": "chrome", "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}});
        let Value::Object(caps) = caps else { unreachable!() };
        let c = ClientBuilder::new(HttpConnector::new()).capabilities(caps).connect(&driver.1).await.unwrap();
        // Signed in through the login form, as a person would be, landing on a
        // page without photos (the feed's would otherwise be in the browser's
        // cache before the measured load).
        let landing = format!("/u/{viewer}");
        c.goto(&format!("{base}/login?next={landing}")).await.unwrap();
        c.find(Locator::Css("#username")).await.unwrap().send_keys(viewer).await.unwrap();
        c.find(Locator::Css("#password")).await.unwrap().send_keys(PASSWORD).await.unwrap();
        c.find(Locator::Css("form button[type=submit]")).await.unwrap().click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.current_url().await.unwrap().path() != landing {
            assert!(Instant::now() < deadline, "the login did not land on the feed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before = web_requests(metrics).await;
        c.goto(&format!("{base}/")).await.unwrap();
        // Every image in the first screen shown (those below it are lazy and not
        // fetched, as in any browser).
        let script = "const n = performance.getEntriesByType('navigation')[0]; \
             const imgs = performance.getEntriesByType('resource').filter(r => r.initiatorType === 'img'); \
             const seen = [...document.images].filter(i => { const r = i.getBoundingClientRect(); \
                 return r.top < innerHeight && r.bottom > 0; }); \
             const pending = seen.filter(i => !(i.complete && i.naturalWidth > 0)).length; \
             return [n.loadEventEnd, imgs.length ? Math.max(...imgs.map(r => r.responseEnd)) : 0, imgs.length, \
                 seen.length ? pending : 1];";
        let deadline = Instant::now() + Duration::from_secs(30);
        let v = loop {
            let v = c.execute(script, vec![]).await.unwrap();
            if v[0].as_f64().unwrap_or(0.0) > 0.0 && v[3].as_f64() == Some(0.0) {
                break v;
            }
            assert!(Instant::now() < deadline, "the page did not finish loading: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let after = web_requests(metrics).await;
        let img_names: Value = c
            .execute("return [...document.images].map(i => i.currentSrc).filter(s => s).slice(0, 1);", vec![])
            .await
            .unwrap();
        if round == 0 {
            eprintln!("pageload: first image from {img_names}");
        }
        load_ms.push(v[0].as_f64().unwrap());
        images_ms.push(v[1].as_f64().unwrap());
        images.push(v[2].as_f64().unwrap());
        web.push(after - before);
        let _ = c.close().await;
    }
    println!(
        "{}",
        json!({
            "loads": loads,
            "load_event_ms_p50": median(load_ms),
            "last_image_ms_p50": median(images_ms),
            "images_p50": median(images),
            "web_requests_per_load_p50": median(web),
        })
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: pageload HOME BASE WEB_METRICS PHOTOS LOADS prepare|measure TOKEN";
    assert!(args.len() >= 7, "{usage}");
    let (home, base, metrics) = (PathBuf::from(&args[1]), &args[2], &args[3]);
    let photos: u32 = args[4].parse().expect(usage);
    let loads: u32 = args[5].parse().expect(usage);
    match (args[6].as_str(), args.get(7)) {
        ("prepare", _) => prepare(&home, base, photos).await,
        ("measure", Some(viewer)) => measure(base, metrics, viewer, loads).await,
        _ => panic!("{usage}"),
    }
}
