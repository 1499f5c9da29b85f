//! `millions bench` against the in-process test topology, the checker, and the
//! refusal of configurations that make no sense.

use std::time::Duration;

use loadgen::bench::{
    self, BenchConfig, BenchError, Breach, Fault, Mix, Op, ReadBack, Step, Tolerance, VerifyOptions, Written,
    Zipf,
};

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
        bypass_token: Some(testkit::BYPASS_TOKEN.into()),
        seed: 7,
        ..BenchConfig::default()
    }
}

#[tokio::test]
async fn a_short_bench_has_no_errors_and_the_checker_passes() {
    let env = testkit::TestEnv::new().await;
    let a = env.spawn().await;
    let b = env.spawn().await;
    let _worker = env.spawn_worker().await;
    // More users than one address may sign up (20 an hour): the generator passes
    // the per-address limits with the operator's token, as `millions bench` does.
    let mut cfg = config(vec![a.base.clone(), format!("{}/", b.base)], "bench_");
    cfg.users = 30;
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
    assert_eq!(c.photos_ready, c.photos_acknowledged);
    // Every acknowledged write (repeats included) was read back by its writer.
    assert_eq!(c.read_your_writes_checked, report.writes.len() as u64, "{c:?}");
    assert_eq!(c.read_your_writes_violations, 0, "{c:?}");
    let by_kind: u64 = c.read_your_writes_by_kind.values().map(|k| k.checked).sum();
    assert_eq!(by_kind, c.read_your_writes_checked);
    assert!(report.wall_secs >= report.duration_secs, "{report:?}");

    // `--json FILE`: the file parses and has every operation's fields.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    report.write_json(&path).expect("the report is written");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("the file is JSON");
    assert_eq!(json["errors"], 0);
    assert_eq!(json["checker"]["passed"], true);
    // The verdict: passed, exit status 0, no breach.
    assert!(report.verdict.passed && report.verdict.breaches.is_empty(), "{:?}", report.verdict);
    assert_eq!(json["verdict"]["passed"], true, "{}", json["verdict"]);
    assert_eq!(json["verdict"]["exit_code"], 0);
    assert_eq!(json["verdict"]["breaches"], serde_json::json!([]));
    assert!(json["verdict"]["rule"].as_str().is_some_and(|r| !r.is_empty()), "{}", json["verdict"]);
    assert!(json["fault"].is_null());
    // Without a step in the rate, no timeline and no step.
    assert!(json.get("timeline").is_none() && json.get("step").is_none(), "{json}");
    assert!(report.timeline.is_empty() && report.step.is_none());
    assert!(!report.to_string().contains("step:"), "{report}");
    for key in ["requests", "offered_rate", "achieved_rate", "wall_secs", "target_rate"] {
        assert!(json[key].is_number(), "{key}: {json}");
    }
    assert!(json["generator_lag"]["p99_ms"].is_number() && json["generator_lag"]["max_ms"].is_number());
    assert!(json["warnings"].is_array() && json["substitutions"].is_object());
    for (name, op) in &report.ops {
        let j = &json["ops"][name];
        assert_eq!(j["count"], op.count, "{name}");
        assert_eq!(j["ok"], op.ok, "{name}");
        assert!(j["errors"].is_object() && j["throughput"].is_number(), "{name}: {j}");
        for q in ["p50", "p90", "p99", "p999", "max", "mean"] {
            assert!(j["latency_ms"][q].is_number(), "{name}.{q}: {j}");
        }
    }
    assert!(json["ops"]["feed"]["count"].as_u64().unwrap() > 0);
    assert!(json["checker"]["read_your_writes_by_kind"].is_object());
    assert!(
        bench::Report::default().write_json(&dir.path().join("no/such/dir/r.json")).is_err(),
        "an unwritable path is an error"
    );
}

/// A fault under load (here an action that touches nothing, and one that
/// cannot be done): reported with when it came and what failed around it, and
/// judged by its scenario's claim.
#[tokio::test]
async fn a_fault_under_load_is_reported_and_judged_by_its_claim() {
    let env = testkit::TestEnv::new().await;
    let app = env.spawn().await;
    let mut cfg = config(vec![app.base.clone()], "fault_");
    cfg.rate = 40.0;
    cfg.duration = Duration::from_secs(2);
    cfg.warmup = Duration::ZERO;
    cfg.mix = Mix::parse("feed=4,timeline=4,post=2").unwrap();
    let harmless = Fault {
        action: "touch nothing".into(),
        at: Duration::from_millis(500),
        run: Box::pin(async { Ok("done".to_owned()) }),
        tolerance: Tolerance::NoRequestFails,
    };
    let report = bench::run_with_fault(&cfg, |_| {}, Some(harmless)).await.expect("the bench runs");
    assert_eq!(report.errors, 0, "errors: {:?}", report.errors_by_kind);
    let fault = report.fault.as_ref().expect("the fault is reported");
    assert!(fault.done && fault.recovered, "{fault:?}");
    assert_eq!((fault.at_secs, fault.outcome.as_str()), (0.5, "done"));
    assert_eq!((fault.errors_before, fault.errors_after, fault.reads_failed_after), (0, 0, 0));
    assert!(fault.errors_after_by_op.is_empty(), "{fault:?}");
    assert_eq!(fault.tolerance, Tolerance::NoRequestFails);
    assert!(report.checker.passed, "{:?}", report.checker);
    assert!(report.verdict.passed && report.verdict.exit_code() == 0, "{:?}", report.verdict);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["fault"]["tolerance"], "no_request_fails");
    assert_eq!(json["fault"]["errors_before"], 0);
    assert_eq!(json["verdict"]["passed"], true);

    let impossible = Fault {
        action: "kill nobody".into(),
        at: Duration::from_millis(500),
        run: Box::pin(async { Err("no such node".to_owned()) }),
        tolerance: Tolerance::UntilRecovered,
    };
    let report = bench::run_with_fault(&cfg, |_| {}, Some(impossible)).await.expect("the bench runs");
    let fault = report.fault.as_ref().unwrap();
    assert!(!fault.done && fault.outcome == "failed: no such node", "{fault:?}");
    assert_eq!(
        report.verdict.breaches,
        [Breach::FaultNotInjected { action: "kill nobody".into(), outcome: "failed: no such node".into() }]
    );
    assert_eq!(report.verdict.exit_code(), 1);
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
    // The post is still in the app's caches (L1 and Redis): the checker must not
    // be fooled by them. No flush, no restart.
    let cached = reqwest::get(app.url(&format!("/api/v1/posts/{victim}"))).await.unwrap();
    assert_eq!(cached.status(), 200, "the deleted post is still served from the cache");

    let options =
        VerifyOptions { concurrency: 8, settle: Duration::from_millis(500), ..VerifyOptions::default() };
    let check = bench::verify(&report.writes, std::slice::from_ref(&app.base), PASSWORD, &options)
        .await
        .expect("the checker runs");
    assert!(!check.passed, "{check:?}");
    assert_eq!(check.lost, 1, "{check:?}");
    assert_eq!(check.lost_posts, vec![victim]);
    assert_eq!(check.unverifiable, 0, "{check:?}");
    assert_eq!(check.verified, check.writes_acknowledged - 1);
}

/// Posts must reach the home feeds of their authors' followers: after a run of
/// follows, a run of posts and feed reads passes with deliveries checked; a
/// post then taken out of one follower's cached timeline behind the checker's
/// back (its post row, author timeline and caches untouched) is reported
/// missing from that feed, and only there.
#[tokio::test]
async fn the_checker_finds_a_post_missing_from_a_followers_feed() {
    let env = testkit::TestEnv::new().await;
    let app = env.spawn().await;
    let mut cfg = config(vec![app.base.clone()], "feeds_");
    cfg.users = 6;
    cfg.rate = 30.0;
    cfg.duration = Duration::from_secs(2);
    cfg.warmup = Duration::ZERO;
    cfg.mix = Mix::parse("follow=100").unwrap();
    let follows = bench::run(&cfg, |_| {}).await.expect("the follows run");
    assert!(follows.checker.passed && follows.checker.follows_acknowledged > 0, "{:?}", follows.checker);
    cfg.mix = Mix::parse("post=50,feed=50").unwrap();
    let report = bench::run(&cfg, |_| {}).await.expect("the posts run");
    let c = &report.checker;
    assert!(c.passed, "{c:?}");
    assert!(c.feed_deliveries_checked > 0, "{c:?}");
    assert_eq!((c.feed_deliveries_missing_count, c.feeds_unverifiable), (0, 0), "{c:?}");
    assert!(report.to_string().lines().any(|l| l.starts_with("feeds: ") && l.contains(" 0 missing")));

    // A reader (one of the run's writers) who follows the author of a post of
    // the run by someone else.
    let http = reqwest::Client::new();
    let following = |name: String| {
        let http = http.clone();
        let url = app.url(&format!("/api/v1/users/{name}/following?limit=100"));
        async move {
            let page: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
            page["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["username"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let mut victim = None;
    'search: for reader in report.writes.posts.iter().map(|p| p.author.clone()) {
        let followees = following(reader.clone()).await;
        for post in &report.writes.posts {
            if post.author != reader && followees.contains(&post.author) {
                victim = Some((reader, post.clone()));
                break 'search;
            }
        }
    }
    let (reader, post) = victim.expect("a writer follows another writer of the run");
    let token = login(&http, &app.base, &reader).await;
    let feed = |token: String| {
        let (http, url) = (http.clone(), app.url("/api/v1/feed?limit=100"));
        async move {
            let page: serde_json::Value =
                http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
            page["posts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    // Read once so the reader's timeline is cached, then take the post out of it.
    assert!(feed(token.clone()).await.contains(&post.id), "the post is in {reader}'s feed");
    let me: serde_json::Value =
        http.get(app.url(&format!("/api/v1/users/{reader}"))).send().await.unwrap().json().await.unwrap();
    let reader_id: i64 = me["id"].as_str().unwrap().parse().unwrap();
    app.state.timelines().retract(post.id.parse().unwrap(), &[reader_id]).await.expect("retracting");
    assert!(!feed(token).await.contains(&post.id), "the post is gone from {reader}'s feed");

    let options = VerifyOptions {
        concurrency: 8,
        settle: Duration::from_millis(500),
        feed_settle: Duration::from_millis(500),
        ..VerifyOptions::default()
    };
    let check = bench::verify(&report.writes, std::slice::from_ref(&app.base), PASSWORD, &options)
        .await
        .expect("the checker runs");
    assert!(!check.passed, "{check:?}");
    assert_eq!(check.lost, 0, "the post itself is still found: {check:?}");
    assert_eq!(check.feed_deliveries_missing_count, 1, "{check:?}");
    assert_eq!(
        check.feed_deliveries_missing,
        [format!("{} by {} from {reader}'s feed", post.id, post.author)],
        "{check:?}"
    );
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

    refused(&BenchConfig { mix: Mix::ZERO, ..good.clone() }, "all zero");
    refused(&BenchConfig { mix: Mix { like: -1.0, ..Mix::default() }, ..good.clone() }, "`like` is negative");
    refused(
        &BenchConfig { mix: Mix { feed: f64::NAN, ..Mix::default() }, ..good.clone() },
        "`feed` is not finite",
    );

    // A step in the rate: inside the measured window, above the base rate (50/s).
    let step = |from: u64, to: u64, rate: f64, op: Option<Op>| BenchConfig {
        step: Some(Step { from: Duration::from_secs(from), to: Duration::from_secs(to), rate, op }),
        ..good.clone()
    };
    step(1, 3, 100.0, None).validate().expect("a step inside the window");
    step(0, 1, 50.5, Some(Op::PhotoPost)).validate().expect("a step of photo posts");
    refused(&step(2, 1, 100.0, None), "the step must start before it ends");
    refused(&step(1, 1, 100.0, None), "the step must start before it ends");
    refused(&step(1, 4, 100.0, None), "the step ends at 4s, after the measured duration 3s");
    for rate in [f64::NAN, f64::INFINITY] {
        refused(&step(1, 2, rate, None), "the step's rate must be a finite number");
    }
    for rate in [50.0, 10.0, -1.0] {
        refused(&step(1, 2, rate, None), "must be above the base rate 50");
    }
    refused(&step(1, 2, 2_000_000.0, None), "the step's rate 2000000 is above the most");
    let one_user =
        BenchConfig { users: 1, mix: Mix::parse("feed=1").unwrap(), ..step(1, 2, 100.0, Some(Op::Follow)) };
    refused(&one_user, "a step of follows needs at least 2 users");

    // A run refuses before sending anything.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let err = rt.block_on(bench::run(&BenchConfig { rate: 0.0, ..good.clone() }, |_| {})).unwrap_err();
    assert!(matches!(err, BenchError::Invalid(_)), "{err}");
}

#[test]
fn mixes_parse_and_refuse_nonsense() {
    let m = Mix::parse(
        "feed=57,timeline=28,post=3,photo_post=1,like=2.7,follow=2,comment=1,comments=2,notifications=2,delete_post=0.3,search=1",
    )
    .unwrap();
    assert_eq!(m, Mix::default());
    // 90% reads, 10% writes, a photo post, a comment and a deletion among them.
    let writes: f64 = Op::ALL.iter().filter(|op| !op.is_read()).map(|&op| m.weight(op)).sum();
    assert!((writes / m.total() - 0.1).abs() < 1e-9, "writes {writes} of {}", m.total());
    assert!((m.feed + m.timeline) / m.total() >= 0.85);
    assert!(m.photo_post > 0.0 && m.comment > 0.0 && m.delete_post > 0.0);
    assert!(m.comments > 0.0 && m.notifications > 0.0 && m.search > 0.0);
    // Every operation is parsed by its name, and printed so.
    for op in Op::ALL {
        let parsed = Mix::parse(&format!("{op}=1.5")).unwrap();
        assert_eq!(parsed.weight(op), 1.5, "{op}");
        assert_eq!(parsed.total(), 1.5, "{op}");
        assert_eq!(parsed.pick(0.5), op);
        assert_eq!(Op::from_name(op.name()), Some(op));
    }
    assert_eq!(Op::from_name("tweet"), None);
    let m = Mix::parse("comment=1,comments=2,notifications=3,delete_post=0.5").unwrap();
    assert_eq!((m.comment, m.comments, m.notifications, m.delete_post), (1.0, 2.0, 3.0, 0.5));
    assert_eq!(m.to_string(), "comment=1,comments=2,notifications=3,delete_post=0.5");
    assert!(Op::Comments.is_read() && Op::Notifications.is_read() && Op::Search.is_read());
    assert!(!Op::Comment.is_read() && !Op::DeletePost.is_read());
    let err = Mix::parse("feed=1,tweet=1").unwrap_err().to_string();
    for name in ["comment", "comments", "notifications", "delete_post", "search", "view_photo"] {
        assert!(err.contains(name), "{err:?} should list {name}");
    }
    let m = Mix::default();
    assert_eq!(Mix::parse(&m.to_string()).unwrap(), m);
    let m = Mix::parse(" post = 1 , view_photo=2 ").unwrap();
    assert_eq!((m.post, m.view_photo, m.feed), (1.0, 2.0, 0.0));

    for (text, needle) in [
        ("", "empty"),
        ("feed=60,tweet=5", "unknown operation `tweet`"),
        ("photo=1", "unknown operation `photo`"),
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

/// A step in the rate: the schedule follows it, and the report has every second
/// of the measured window and the requests before, during and after the step.
#[tokio::test]
async fn a_step_in_the_rate_is_sent_and_reported_second_by_second() {
    let env = testkit::TestEnv::new().await;
    let app = env.spawn().await;
    let mut cfg = config(vec![app.base.clone()], "step_");
    cfg.rate = 20.0;
    cfg.mix = Mix::parse("feed=4,timeline=4,post=2").unwrap();
    // 20/s, 80/s of which 60/s added posts from 1 s to 2 s, 20/s again.
    cfg.step = Some(Step {
        from: Duration::from_secs(1),
        to: Duration::from_secs(2),
        rate: 80.0,
        op: Some(Op::Post),
    });
    let report = bench::run(&cfg, |line| eprintln!("{line}")).await.expect("the bench runs");
    eprintln!("{report}");
    assert_eq!(report.errors, 0, "errors: {:?}", report.errors_by_kind);
    assert!(report.checker.passed, "{:?}", report.checker);

    let seconds: Vec<(u32, u64)> = report.timeline.iter().map(|s| (s.second, s.requests)).collect();
    assert_eq!(seconds.len(), 3, "{seconds:?}");
    for ((second, requests), want) in seconds.iter().zip([20, 80, 20]) {
        assert!(requests.abs_diff(want) <= 1, "second {second}: {seconds:?}");
    }
    assert_eq!(seconds.iter().map(|s| s.1).sum::<u64>(), report.requests);
    assert!(report.timeline.iter().all(|s| s.errors == 0 && s.p99_ms >= s.p50_ms && s.p50_ms > 0.0));

    let step = report.step.as_ref().expect("the step is reported");
    assert_eq!((step.from_secs, step.to_secs, step.base_rate, step.step_rate), (1.0, 2.0, 20.0, 80.0));
    assert_eq!(step.op.as_deref(), Some("post"));
    let phases = [step.before, step.during, step.after];
    assert_eq!(phases.iter().map(|p| p.requests).sum::<u64>(), report.requests);
    for (phase, want) in phases.iter().zip([20, 80, 20]) {
        assert!(phase.requests.abs_diff(want) <= 1 && phase.errors == 0, "{step:?}");
        assert!(
            phase.max_ms >= phase.p99_ms && phase.p99_ms >= phase.p50_ms && phase.p50_ms > 0.0,
            "{step:?}"
        );
    }
    // Posts: about 60 added in the step, and a fifth of the other 60.
    let posts = report.ops["post"].count;
    assert!((55..=90).contains(&posts), "{posts} posts");

    let text = report.to_string();
    assert!(text.contains("step: 20.0/s → 80.0/s from 1.0 s to 2.0 s (added: post)"), "{text}");
    assert!(text.contains("0-3 s"), "{text}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["timeline"].as_array().map(Vec::len), Some(3), "{json}");
    assert_eq!(json["timeline"][1]["second"], 1);
    assert_eq!(json["step"]["during"]["requests"], step.during.requests);
    assert_eq!(json["step"]["op"], "post");
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
    // 20 due on schedule, whatever the server does; none answered; each either
    // sent and timed out or dropped because 3 were already in flight.
    assert_eq!(feed.count, 20, "{feed:?}");
    assert_eq!(feed.ok, 0);
    let timeouts = feed.errors.get("timeout").copied().unwrap_or(0);
    let overloaded = feed.errors.get("overloaded").copied().unwrap_or(0);
    assert_eq!(timeouts + overloaded, 20, "{feed:?}");
    assert!(timeouts > 0 && overloaded > 0, "{feed:?}");
    assert_eq!(feed.errors.len(), 2, "{feed:?}");
    // Measured from the intended start, a timed-out request took at least the
    // timeout (a lower bound that holds however slow the machine).
    assert!(feed.latency_ms.p50 >= 1500.0, "{feed:?}");
    assert!(!report.checker.ran);
    // Without a fault, a failed request fails the run.
    assert_eq!(report.errors, 20);
    assert_eq!(report.verdict.breaches, [Breach::RequestsFailed { count: 20 }]);
    assert_eq!(report.verdict.exit_code(), 1);
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
    testkit::eventually("the photo is ready", || async {
        let p: serde_json::Value =
            c.get(app.url(&format!("/api/v1/posts/{id}"))).send().await.unwrap().json().await.unwrap();
        p["status"] == "ready"
    })
    .await;

    // One user (the existing account is reused), reading its timeline and photos.
    let mut cfg = config(vec![app.base.clone()], "snap_");
    cfg.users = 1;
    cfg.rate = 40.0;
    cfg.duration = Duration::from_millis(1500);
    cfg.warmup = Duration::from_millis(250);
    cfg.mix = Mix::parse("timeline=1,view_photo=3").unwrap();
    let report = bench::run(&cfg, |_| {}).await.expect("the bench runs");
    assert_eq!(report.errors, 0, "errors: {:?}", report.errors_by_kind);
    // The user's timeline was read before the run: every photo view had a photo
    // to fetch, none became a timeline read.
    assert!(report.substitutions.is_empty(), "{:?}", report.substitutions);
    assert!(report.warnings.iter().all(|w| !w.contains("substituted")), "{:?}", report.warnings);
    let views = &report.ops["view_photo"];
    assert!(views.count > 0 && views.ok == views.count, "{views:?}");
    assert!(report.checker.passed && report.checker.writes_acknowledged == 0, "{:?}", report.checker);
}

#[tokio::test]
async fn photo_posts_are_checked_until_processed() {
    let env = testkit::TestEnv::new().await;
    let app = env.spawn().await;
    let mut cfg = config(vec![app.base.clone()], "pic_");
    cfg.users = 5;
    cfg.rate = 20.0;
    cfg.duration = Duration::from_secs(1);
    cfg.warmup = Duration::ZERO;
    cfg.mix = Mix::parse("timeline=1,photo_post=3").unwrap();
    // No worker yet: the photos stay `processing`, and the checker says so.
    cfg.photo_ready_timeout = Duration::from_millis(300);
    cfg.verify_settle = Duration::from_millis(300);
    let report = bench::run(&cfg, |_| {}).await.expect("the bench runs");
    assert_eq!(report.errors, 0, "errors: {:?}", report.errors_by_kind);
    let c = &report.checker;
    assert!(c.photos_acknowledged > 0, "{c:?}");
    assert_eq!(c.photos_acknowledged, c.posts_acknowledged);
    assert_eq!(c.photos_ready, 0, "{c:?}");
    assert_eq!(c.photos_not_ready_count, c.photos_acknowledged, "{c:?}");
    assert_eq!(c.lost, 0, "{c:?}");
    assert!(!c.passed, "{c:?}");
    // Printed as such, and the run fails on it.
    let text = report.to_string();
    let photos_line = format!(
        "photos: {} acknowledged, 0 ready, {} not ready",
        c.photos_acknowledged, c.photos_acknowledged
    );
    assert!(text.lines().any(|l| l == photos_line), "{text}");
    assert!(text.lines().any(|l| l.starts_with("  photos not ready: ")), "{text}");
    assert_eq!(
        report.verdict.breaches,
        [Breach::CheckFailed {
            lost: 0,
            lost_by_kind: Default::default(),
            unverifiable: 0,
            photos_not_ready: c.photos_acknowledged,
            short_follower_counts: 0,
            feeds_missing: 0,
            read_your_writes_violations: 0,
        }]
    );
    assert_eq!(report.verdict.exit_code(), 1);
    // Every photo was listed in its author's timeline at once.
    assert_eq!(c.read_your_writes_by_kind["photo_post"].checked, c.photos_acknowledged);
    assert_eq!(c.read_your_writes_violations, 0, "{c:?}");

    // Distinct photos: one stored original per post.
    let originals: std::collections::BTreeSet<String> = {
        let mut set = std::collections::BTreeSet::new();
        for p in &report.writes.posts {
            let v: serde_json::Value = reqwest::get(app.url(&format!("/api/v1/posts/{}", p.id)))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            set.insert(v["photo"]["original"]["url"].as_str().unwrap().to_owned());
        }
        set
    };
    assert_eq!(originals.len(), report.writes.posts.len());

    // A worker processes them: the same writes now pass.
    let _worker = env.spawn_worker().await;
    let check =
        bench::verify(&report.writes, std::slice::from_ref(&app.base), PASSWORD, &VerifyOptions::default())
            .await
            .expect("the checker runs");
    assert!(check.passed, "{check:?}");
    assert_eq!(check.photos_ready, check.photos_acknowledged);
}

async fn signup_and_login(c: &reqwest::Client, base: &str, name: &str) -> (i64, String) {
    let creds = serde_json::json!({"username": name, "password": PASSWORD});
    let user: serde_json::Value =
        c.post(format!("{base}/api/v1/users")).json(&creds).send().await.unwrap().json().await.unwrap();
    (user["id"].as_str().unwrap().parse().unwrap(), login(c, base, name).await)
}

async fn login(c: &reqwest::Client, base: &str, name: &str) -> String {
    let creds = serde_json::json!({"username": name, "password": PASSWORD});
    let session: serde_json::Value =
        c.post(format!("{base}/api/v1/sessions")).json(&creds).send().await.unwrap().json().await.unwrap();
    session["token"].as_str().unwrap().to_owned()
}

/// With a real streaming replica whose replay is paused: the writer's own
/// session sees its writes (its floor sends the reads to the primary), the
/// bench's read-backs find no violation, and the same user's fresh session,
/// which has no floor, reads the lagging replica: the like's read-back reports
/// the violation (a post's is the author's cached newest ids, filled from the
/// primary, and sees it).
#[tokio::test]
async fn read_backs_expose_a_lagging_replica_read_without_the_sessions_floor() {
    let pg = testkit::fresh_replicated_postgres();
    let env = testkit::TestEnv::on_replicated(&pg, testkit::redis().url()).await;
    // A lag bound so loose that only the floor keeps the paused replica away.
    let app = env.spawn_with(|c| c.database.max_replica_lag_ms = 600_000).await;
    let c = reqwest::Client::new();
    let (alice, token) = signup_and_login(&c, &app.base, "ryw_0").await;
    let (_, bob) = signup_and_login(&c, &app.base, "ryw_1").await;
    let _ = signup_and_login(&c, &app.base, "ryw_2").await;
    let bobs: serde_json::Value = c
        .post(app.url("/api/v1/posts"))
        .bearer_auth(&bob)
        .json(&serde_json::json!({"caption": "for alice to like"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let liked = bobs["id"].as_str().unwrap().to_owned();
    let data = app.state.data().clone();
    let shards = [
        data.shard_map().shard_of_user(alice),
        data.shard_map().shard_of_post(data::PostId::from_i64(liked.parse().unwrap()).unwrap()),
    ];
    testkit::eventually("the replicas are usable", || async {
        shards.iter().all(|s| data.usable_replicas(*s) == 1)
    })
    .await;
    let (replica, conn) = tokio_postgres::connect(&env.replicas[0][0], tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    replica.batch_execute("SELECT pg_wal_replay_pause()").await.unwrap();

    // The bench itself, on the paused replica: every read-back sees its write.
    let mut cfg = config(vec![app.base.clone()], "ryw_");
    cfg.users = 3;
    cfg.rate = 30.0;
    cfg.duration = Duration::from_secs(1);
    cfg.warmup = Duration::ZERO;
    cfg.mix = Mix::parse("post=2,like=2,follow=1").unwrap();
    cfg.verify = false;
    let report = bench::run(&cfg, |_| {}).await.expect("the bench runs");
    assert_eq!(report.errors, 0, "errors: {:?}", report.errors_by_kind);
    let r = &report.checker;
    assert_eq!(r.read_your_writes_checked, report.writes.len() as u64, "{r:?}");
    assert_eq!(r.read_your_writes_violations, 0, "{r:?}");
    assert!(r.read_your_writes_by_kind["post"].checked > 0, "{r:?}");

    // Alice writes; her session reads it back; her fresh session does not.
    let post: serde_json::Value = c
        .post(app.url("/api/v1/posts"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"caption": "written while the replica is paused"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let post =
        Written::Post { author: "ryw_0".into(), id: post["id"].as_str().unwrap().into(), photo: false };
    let r = c.put(app.url(&format!("/api/v1/posts/{liked}/like"))).bearer_auth(&token).send().await.unwrap();
    assert!(r.status().is_success());
    let like = Written::Like { post_id: liked };
    for w in [&post, &like] {
        assert_eq!(bench::read_back(&c, &app.base, &token, w).await, ReadBack::Seen, "{w:?}");
    }
    // A fresh session of hers has no floor: the like's read-back, on the paused
    // replica, does not show it. Her post's does: its read-back is her page, the
    // cached ids her post invalidated, filled from the primary.
    let fresh = login(&c, &app.base, "ryw_0").await;
    let seen = bench::read_back(&c, &app.base, &fresh, &like).await;
    assert!(matches!(seen, ReadBack::Violation(_)), "{like:?}: {seen:?}");
    assert_eq!(bench::read_back(&c, &app.base, &fresh, &post).await, ReadBack::Seen);

    // Resumed, the replica catches up and the fresh session sees both.
    replica.batch_execute("SELECT pg_wal_replay_resume()").await.unwrap();
    testkit::eventually("the replica catches up", || async {
        bench::read_back(&c, &app.base, &fresh, &post).await == ReadBack::Seen
            && bench::read_back(&c, &app.base, &fresh, &like).await == ReadBack::Seen
    })
    .await;
    let check =
        bench::verify(&report.writes, std::slice::from_ref(&app.base), PASSWORD, &VerifyOptions::default())
            .await
            .expect("the checker runs");
    assert!(check.passed, "{check:?}");
    drop(replica);
    let _ = conn.await;
}

/// A generator starved of CPU (its single runtime thread blocked for most of
/// every 100 ms, as a busy machine would) says so: its send lag is measured and
/// the report warns, instead of passing its own delay off as the system's.
#[tokio::test]
async fn a_starved_generator_reports_its_own_lag() {
    let base = stalled_server().await;
    let mut cfg = config(vec![base], "lag_");
    cfg.create_users = false;
    cfg.users = 1;
    cfg.rate = 100.0;
    cfg.duration = Duration::from_secs(1);
    cfg.warmup = Duration::ZERO;
    cfg.mix = Mix::parse("feed=1").unwrap();
    cfg.request_timeout = Duration::from_millis(200);
    cfg.verify = false;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hog = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Blocks the (current-thread) runtime: nothing else runs meanwhile.
                std::thread::sleep(Duration::from_millis(80));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let report = bench::run(&cfg, |_| {}).await.expect("the bench runs");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hog.await.unwrap();
    let bound = bench::GENERATOR_LAG_WARN.as_secs_f64() * 1000.0;
    assert!(report.generator_lag.p99_ms > bound, "{:?}", report.generator_lag);
    assert!(report.generator_lag.max_ms >= report.generator_lag.p99_ms);
    assert!(
        report.warnings.iter().any(|w| w.starts_with("the load generator fell behind its own schedule")),
        "{:?}",
        report.warnings
    );
    let text = report.to_string();
    assert!(
        text.lines().any(|l| l.starts_with("WARNING: the load generator fell behind its own schedule")),
        "{text}"
    );
}

/// Comments, comment pages, notifications, post deletions and user searches in
/// the mix: each is sent and answered, every comment and deletion is read back
/// by its writer and verified by the checker, and a deleted post's writes are
/// not required.
/// Then the checker, on the same writes, catches a comment deleted behind its
/// back and a deletion that did not happen.
#[tokio::test]
async fn comments_and_deletions_are_sent_read_back_and_verified() {
    let env = testkit::TestEnv::new().await;
    let app = env.spawn().await;
    // Few users, so each has posts of this run to delete.
    let mut cfg = config(vec![app.base.clone()], "talk_");
    cfg.users = 5;
    cfg.rate = 40.0;
    cfg.duration = Duration::from_secs(2);
    cfg.warmup = Duration::from_millis(500);
    cfg.mix =
        Mix::parse("post=4,like=1,comment=4,comments=2,notifications=2,delete_post=2,search=2").unwrap();
    let report = bench::run(&cfg, |_| {}).await.expect("the bench runs");
    eprintln!("{report}");
    assert_eq!(report.errors, 0, "errors: {:?}", report.errors_by_kind);
    for op in ["comment", "comments", "notifications", "delete_post", "search"] {
        let r = &report.ops[op];
        assert!(r.ok > 0 && r.ok == r.count, "{op}: {r:?}");
    }
    let writes = &report.writes;
    let c = &report.checker;
    assert!(c.ran && c.passed, "checker: {c:?}");
    assert_eq!((c.lost, c.unverifiable), (0, 0), "{c:?}");
    assert!(c.lost_by_kind.is_empty(), "{c:?}");
    // Required: every write but those gone with a post the run deleted.
    let deleted_posts = writes.deleted_posts();
    let on_kept = |post: &str| !deleted_posts.contains(post);
    let comments_kept = writes.comments.iter().filter(|cm| on_kept(&cm.post_id)).count() as u64;
    assert_eq!(c.comments_acknowledged, comments_kept, "{c:?}");
    assert_eq!(c.deletions_acknowledged, writes.deletions.len() as u64);
    assert!(c.comments_acknowledged > 0 && c.deletions_acknowledged > 0, "{c:?}");
    assert_eq!(c.verified, c.writes_acknowledged, "{c:?}");
    let posts_gone = writes.posts.len() as u64 - c.posts_acknowledged;
    let comments_gone = writes.comments.len() as u64 - c.comments_acknowledged;
    assert_eq!(posts_gone, c.deletions_acknowledged, "{c:?}");
    let distinct_likes: std::collections::BTreeSet<_> = writes.likes.iter().collect();
    let likes_gone = distinct_likes.len() as u64 - c.likes_acknowledged;
    assert_eq!(c.gone_with_deleted_posts, posts_gone + comments_gone + likes_gone, "{c:?}");
    // Every deleted post is one this run created, deleted by its author, once.
    let authors: std::collections::HashMap<&str, &str> =
        writes.posts.iter().map(|p| (p.id.as_str(), p.author.as_str())).collect();
    let mut deleted = std::collections::BTreeSet::new();
    for d in &writes.deletions {
        assert_eq!(authors.get(d.post_id.as_str()), Some(&d.author.as_str()), "{d:?}");
        assert!(deleted.insert(d.post_id.as_str()), "deleted twice: {d:?}");
        let gone = reqwest::get(app.url(&format!("/api/v1/posts/{}", d.post_id))).await.unwrap();
        assert_eq!(gone.status(), 404, "{d:?}");
    }
    // Each comment and deletion was read back by its writer, none missing.
    for (kind, n) in [("comment", writes.comments.len()), ("delete_post", writes.deletions.len())] {
        let k = &c.read_your_writes_by_kind[kind];
        assert_eq!(k.checked, n as u64, "{kind}: {k:?}");
        assert_eq!(k.violations, 0, "{kind}: {k:?}");
    }
    assert_eq!(c.read_your_writes_checked, writes.len() as u64, "{c:?}");
    // Reported per kind in the text and the JSON.
    let text = report.to_string();
    let line = format!("{} comments, {} deletions", c.comments_acknowledged, c.deletions_acknowledged);
    assert!(text.contains(&line), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    report.write_json(&path).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let checker = &json["checker"];
    assert_eq!(checker["comments_acknowledged"], c.comments_acknowledged);
    assert_eq!(checker["deletions_acknowledged"], c.deletions_acknowledged);
    assert_eq!(checker["gone_with_deleted_posts"], c.gone_with_deleted_posts);
    assert!(checker["lost_comments"].is_array() && checker["lost_deletions"].is_array(), "{checker}");
    assert!(checker["lost_by_kind"].is_object(), "{checker}");
    for op in ["comment", "comments", "notifications", "delete_post", "search"] {
        assert!(json["ops"][op]["count"].as_u64().unwrap() > 0, "{op}");
    }

    // Behind the checker's back: a comment deleted by its writer, and a
    // deletion recorded of a post that still exists.
    let gone = writes.deleted_posts();
    let victim = writes
        .comments
        .iter()
        .find(|cm| !gone.contains(cm.post_id.as_str()))
        .expect("a comment on a post that is still there")
        .clone();
    let survivor = writes
        .posts
        .iter()
        .find(|p| !gone.contains(p.id.as_str()) && p.id != victim.post_id)
        .expect("another post that is still there")
        .clone();
    let http = reqwest::Client::new();
    let token = login(&http, &app.base, &victim.author).await;
    let resp = http
        .delete(app.url(&format!("/api/v1/comments/{}", victim.id)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let mut tampered = writes.clone();
    // Its comments and likes now count as gone; keep the victim's post intact.
    tampered
        .deletions
        .push(bench::AckedDeletion { post_id: survivor.id.clone(), author: survivor.author.clone() });
    let options =
        VerifyOptions { concurrency: 8, settle: Duration::from_millis(500), ..VerifyOptions::default() };
    let check = bench::verify(&tampered, std::slice::from_ref(&app.base), PASSWORD, &options)
        .await
        .expect("the checker runs");
    assert!(!check.passed, "{check:?}");
    assert_eq!(check.lost, 2, "{check:?}");
    assert_eq!(check.lost_comments, vec![format!("{} on {}", victim.id, victim.post_id)], "{check:?}");
    assert_eq!(check.lost_deletions.len(), 1, "{check:?}");
    assert!(check.lost_deletions[0].starts_with(&survivor.id), "{check:?}");
    assert_eq!(
        check.lost_by_kind,
        [("comment".to_owned(), 1), ("delete_post".to_owned(), 1)].into_iter().collect(),
        "{check:?}"
    );
    assert_eq!(check.unverifiable, 0, "{check:?}");
}
