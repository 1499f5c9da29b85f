//! `millions bench` against the in-process test topology, the checker, and the
//! refusal of configurations that make no sense.

use std::time::Duration;

use loadgen::bench::{self, BenchConfig, BenchError, Mix, Op, Zipf};

const PASSWORD: &str = "bench-password-1";

fn config(targets: Vec<String>, prefix: &str) -> BenchConfig {
    BenchConfig {
        targets,
        rate: 50.0,
        duration: Duration::from_secs(3),
        warmup: Duration::from_millis(500),
        users: 20,
        user_prefix: prefix.into(),
        create_users: true,
        password: PASSWORD.into(),
        seed: 7,
        ..BenchConfig::default()
    }
}

#[tokio::test]
async fn a_short_bench_has_no_errors_and_the_checker_passes() {
    let env = testkit::TestEnv::new().await;
    let a = env.spawn().await;
    let b = env.spawn().await;
    let cfg = config(vec![a.base.clone(), format!("{}/", b.base)], "bench_");
    let report = bench::run(&cfg, |line| eprintln!("{line}")).await.expect("the bench runs");
    eprintln!("{report}");

    assert_eq!(report.errors, 0, "errors: {:?}", report.errors_by_kind);
    // 50/s for 3 s, give or take the last interval.
    assert!((148..=151).contains(&report.requests), "requests: {}", report.requests);
    for op in ["feed", "timeline"] {
        let r = &report.ops[op];
        assert!(r.count > 0 && r.ok == r.count, "{op}: {r:?}");
        assert!(r.latency_ms.p50 > 0.0 && r.latency_ms.max >= r.latency_ms.p999, "{op}: {r:?}");
    }
    let c = &report.checker;
    assert!(c.ran && c.passed, "checker: {c:?}");
    assert_eq!(c.lost, 0);
    assert!(c.posts_acknowledged > 0, "{c:?}");
    assert_eq!(c.verified, c.writes_acknowledged);
    assert_eq!(c.read_your_writes_checked, c.posts_acknowledged);
    assert_eq!(c.read_your_writes_violations, 0);

    let json = serde_json::to_value(&report).expect("the report serializes");
    assert_eq!(json["errors"], 0);
    assert!(json["ops"]["feed"]["latency_ms"]["p999"].is_number());
    assert_eq!(json["checker"]["passed"], true);
}

/// Delete every key of the deployment's Redis prefix (the shared Redis serves
/// other tests of this binary too).
async fn flush_prefix(env: &testkit::TestEnv) {
    let client = redis::Client::open(env.redis_url.as_str()).expect("redis url");
    let mut con = client.get_multiplexed_async_connection().await.expect("connecting to Redis");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", env.prefix))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .expect("SCAN");
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut con).await.expect("DEL");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

#[tokio::test]
async fn the_checker_reports_a_post_deleted_behind_its_back() {
    let env = testkit::TestEnv::new().await;
    let app = env.spawn().await;
    let mut cfg = config(vec![app.base.clone()], "gone_");
    cfg.rate = 40.0;
    cfg.duration = Duration::from_secs(2);
    cfg.warmup = Duration::ZERO;
    cfg.mix = Mix::parse("timeline=30,post=60,follow=10").unwrap();
    let report = bench::run(&cfg, |_| {}).await.expect("the bench runs");
    assert_eq!(report.errors, 0, "errors: {:?}", report.errors_by_kind);
    assert!(report.checker.passed, "{:?}", report.checker);
    assert!(report.writes.posts.len() >= 10, "{:?}", report.checker);

    let victim = report.writes.posts[report.writes.posts.len() / 2].id.clone();
    let id: i64 = victim.parse().expect("post ids are numbers");
    let mut deleted = 0;
    for url in &env.shards {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connecting");
        let conn = tokio::spawn(conn);
        deleted += client.execute("DELETE FROM posts WHERE post_id = $1", &[&id]).await.expect("DELETE");
        drop(client);
        let _ = conn.await;
    }
    assert_eq!(deleted, 1, "the post lived on exactly one shard");
    drop(app);
    flush_prefix(&env).await;
    let fresh = env.spawn().await;

    let check = bench::verify(&report.writes, std::slice::from_ref(&fresh.base), PASSWORD, 8)
        .await
        .expect("the checker runs");
    assert!(!check.passed, "{check:?}");
    assert_eq!(check.lost, 1, "{check:?}");
    assert_eq!(check.lost_posts, vec![victim]);
    assert_eq!(check.unverifiable, 0, "{check:?}");
    assert_eq!(check.verified, check.writes_acknowledged - 1);
}

#[tokio::test]
async fn an_unreachable_target_fails_setup_instead_of_hanging() {
    let mut cfg = config(vec!["http://127.0.0.1:1".into()], "nobody_");
    cfg.create_users = false;
    cfg.request_timeout = Duration::from_secs(2);
    let err = bench::run(&cfg, |_| {}).await.expect_err("nobody answers");
    assert!(matches!(err, BenchError::Setup(_)), "{err}");
    assert!(err.to_string().contains("logging in"), "{err}");
}

fn refused(cfg: &BenchConfig, needle: &str) {
    match cfg.validate() {
        Ok(()) => panic!("accepted a configuration that should be refused for `{needle}`"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "message {msg:?} should mention {needle:?}");
        }
    }
}

#[test]
fn nonsense_configurations_are_refused_with_a_message() {
    let good = config(vec!["http://127.0.0.1:8080".into()], "user");
    good.validate().expect("the base configuration is valid");

    for rate in [0.0, -5.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 2_000_000.0] {
        refused(&BenchConfig { rate, ..good.clone() }, "rate");
    }
    refused(&BenchConfig { duration: Duration::ZERO, ..good.clone() }, "duration");
    refused(&BenchConfig { duration: Duration::from_secs(25 * 3600), ..good.clone() }, "duration");
    refused(&BenchConfig { warmup: Duration::from_secs(25 * 3600), ..good.clone() }, "warm-up");
    refused(&BenchConfig { targets: vec![], ..good.clone() }, "targets");
    refused(&BenchConfig { targets: vec!["not a url".into()], ..good.clone() }, "not a url");
    refused(&BenchConfig { targets: vec!["ftp://host/".into()], ..good.clone() }, "http");
    refused(&BenchConfig { users: 0, ..good.clone() }, "users");
    refused(&BenchConfig { password: String::new(), ..good.clone() }, "password");
    refused(&BenchConfig { max_in_flight: 0, ..good.clone() }, "in flight");
    refused(&BenchConfig { zipf_exponent: f64::NAN, ..good.clone() }, "Zipf");
    refused(&BenchConfig { user_prefix: "Bad-Name".into(), ..good.clone() }, "prefix");
    refused(&BenchConfig { read_your_writes_fraction: 1.5, ..good.clone() }, "read-your-writes");

    let zero = Mix { feed: 0.0, timeline: 0.0, post: 0.0, like: 0.0, follow: 0.0, view_photo: 0.0 };
    refused(&BenchConfig { mix: zero, ..good.clone() }, "all zero");
    refused(&BenchConfig { mix: Mix { like: -1.0, ..Mix::default() }, ..good.clone() }, "`like` is negative");
    refused(
        &BenchConfig { mix: Mix { feed: f64::NAN, ..Mix::default() }, ..good.clone() },
        "`feed` is not finite",
    );

    // A run refuses before sending anything.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let err = rt.block_on(bench::run(&BenchConfig { rate: 0.0, ..good.clone() }, |_| {})).unwrap_err();
    assert!(matches!(err, BenchError::Invalid(_)), "{err}");
}

#[test]
fn mixes_parse_and_refuse_nonsense() {
    let m = Mix::parse("feed=60,timeline=30,post=4,like=4,follow=2").unwrap();
    assert_eq!(m, Mix::default());
    assert_eq!(Mix::parse(&m.to_string()).unwrap(), m);
    let m = Mix::parse(" post = 1 , view_photo=2 ").unwrap();
    assert_eq!((m.post, m.view_photo, m.feed), (1.0, 2.0, 0.0));

    for (text, needle) in [
        ("", "empty"),
        ("feed=60,tweet=5", "unknown operation `tweet`"),
        ("feed=60,feed=5", "twice"),
        ("feed", "name=weight"),
        ("feed=abc", "not a number"),
        ("feed=-1", "negative"),
        ("feed=inf", "not finite"),
        ("feed=NaN", "not finite"),
        ("feed=0,post=0", "all zero"),
    ] {
        let err = Mix::parse(text).expect_err(text).to_string();
        assert!(err.contains(needle), "{text:?}: {err:?} should mention {needle:?}");
    }
}

#[test]
fn the_mix_picks_operations_by_weight() {
    let m = Mix::parse("feed=1,follow=3").unwrap();
    let picks: Vec<Op> = (0..8).map(|i| m.pick(i as f64 / 8.0)).collect();
    assert_eq!(picks.iter().filter(|&&op| op == Op::Feed).count(), 2);
    assert_eq!(picks.iter().filter(|&&op| op == Op::Follow).count(), 6);
    assert_eq!(m.pick(0.999_999), Op::Follow);
}

#[test]
fn zipf_draws_favour_low_ranks_in_the_right_proportion() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let z = Zipf::new(100, 1.0);
    let mut counts = [0u64; 100];
    let n = 200_000;
    for _ in 0..n {
        counts[z.sample(|| rng.random()) as usize] += 1;
    }
    // P(k) = (1/(k+1)) / H(100), H(100) ≈ 5.187.
    let expect0 = n as f64 / 5.187;
    assert!((counts[0] as f64 - expect0).abs() < expect0 * 0.03, "{counts:?}");
    let ratio = counts[0] as f64 / counts[1] as f64;
    assert!((1.85..2.15).contains(&ratio), "rank 0 / rank 1 = {ratio}");
    assert!(counts[99] > 0);

    let uniform = Zipf::new(10, 0.0);
    let mut counts = [0u64; 10];
    for _ in 0..100_000 {
        counts[uniform.sample(|| rng.random()) as usize] += 1;
    }
    assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    assert_eq!(Zipf::new(1, 1.0).sample(|| rng.random()), 0);
}

/// A server that answers logins and never answers anything else.
async fn stalled_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let Ok(n) = sock.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    if buf[..n].starts_with(b"POST /api/v1/sessions") {
                        let body = r#"{"token":"t","user":{}}"#;
                        let head = format!(
                            "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if sock.write_all(format!("{head}{body}").as_bytes()).await.is_err() {
                            return;
                        }
                    } else {
                        // Hold the connection without answering.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_stalled_server_shows_as_latency_and_overload_not_a_lower_rate() {
    let base = stalled_server().await;
    let mut cfg = config(vec![base], "stall_");
    cfg.create_users = false;
    cfg.users = 3;
    cfg.rate = 20.0;
    cfg.duration = Duration::from_secs(1);
    cfg.warmup = Duration::ZERO;
    cfg.mix = Mix::parse("feed=1").unwrap();
    cfg.max_in_flight = 3;
    cfg.request_timeout = Duration::from_millis(1500);
    cfg.verify = false;
    let report = bench::run(&cfg, |_| {}).await.expect("the bench runs");
    let feed = &report.ops["feed"];
    assert_eq!(feed.count, 20, "{feed:?}");
    assert_eq!(feed.ok, 0);
    assert_eq!(feed.errors.get("timeout"), Some(&3), "{feed:?}");
    assert_eq!(feed.errors.get("overloaded"), Some(&17), "{feed:?}");
    // Measured from the intended start: at least the timeout.
    assert!(feed.latency_ms.p50 >= 1500.0, "{feed:?}");
    assert!(!report.checker.ran);
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

#[tokio::test]
async fn photo_views_fetch_thumbnails_seen_in_timelines() {
    let env = testkit::TestEnv::new().await;
    let app = env.spawn().await;
    let _worker = env.spawn_worker().await;
    let c = reqwest::Client::new();
    let creds = serde_json::json!({"username": "snap_0", "password": PASSWORD});
    assert!(c.post(app.url("/api/v1/users")).json(&creds).send().await.unwrap().status().is_success());
    let session: serde_json::Value =
        c.post(app.url("/api/v1/sessions")).json(&creds).send().await.unwrap().json().await.unwrap();
    let form = reqwest::multipart::Form::new()
        .text("caption", "a photo")
        .part("photo", reqwest::multipart::Part::bytes(jpeg(400, 300)).file_name("p.jpg"));
    let r = c
        .post(app.url("/api/v1/posts"))
        .bearer_auth(session["token"].as_str().unwrap())
        .multipart(form)
        .send()
        .await
        .unwrap();
    let post: serde_json::Value = r.json().await.unwrap();
    let id = post["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let p: serde_json::Value =
            c.get(app.url(&format!("/api/v1/posts/{id}"))).send().await.unwrap().json().await.unwrap();
        if p["status"] == "ready" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the photo never became ready: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One user (the existing account is reused), reading its timeline and photos.
    let mut cfg = config(vec![app.base.clone()], "snap_");
    cfg.users = 1;
    cfg.rate = 40.0;
    cfg.duration = Duration::from_millis(1500);
    cfg.warmup = Duration::from_millis(250);
    cfg.mix = Mix::parse("timeline=1,view_photo=3").unwrap();
    let report = bench::run(&cfg, |_| {}).await.expect("the bench runs");
    assert_eq!(report.errors, 0, "errors: {:?}", report.errors_by_kind);
    let views = &report.ops["view_photo"];
    assert!(views.ok > 20, "{views:?}");
    assert!(report.checker.passed && report.checker.writes_acknowledged == 0, "{:?}", report.checker);
}
