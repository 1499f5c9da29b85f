//! The load balancer against real backends: small axum servers in the test, and
//! backend processes (this test binary re-run as a backend) where one must be
//! killed with SIGKILL. No sleeps as synchronization: every wait polls a condition
//! with a deadline.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use lb::{Algorithm, LbConfig, Running};
use tokio::sync::Semaphore;

/// An in-test backend.
#[derive(Clone)]
struct Backend {
    /// Where it listens.
    addr: SocketAddr,
    /// Requests served (not counting health probes).
    hits: Arc<AtomicUsize>,
    /// The status it answers with.
    status: Arc<AtomicU16>,
    /// Requests to `/hold` wait for a permit here.
    gate: Arc<Semaphore>,
}

async fn backend() -> Backend {
    let hits = Arc::new(AtomicUsize::new(0));
    let status = Arc::new(AtomicU16::new(200));
    let gate = Arc::new(Semaphore::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (h, s, g) = (hits.clone(), status.clone(), gate.clone());
    let app = Router::new().route("/readyz", axum::routing::get(|| async { "ready" })).fallback(
        move |req: Request| {
            let (h, s, g) = (h.clone(), s.clone(), g.clone());
            async move { answer(addr, req, &h, &s, &g).await }
        },
    );
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Backend { addr, hits, status, gate }
}

/// Echo what the backend saw: its address, the request's headers and its body's
/// length, as JSON.
async fn answer(
    addr: SocketAddr,
    req: Request,
    hits: &AtomicUsize,
    status: &AtomicU16,
    gate: &Semaphore,
) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    if req.uri().path() == "/hold" {
        gate.acquire().await.unwrap().forget();
    }
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    let headers: HashMap<String, String> =
        req.headers().iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned())).collect();
    let body_len = axum::body::to_bytes(req.into_body(), 32 << 20).await.map_or(0, |b| b.len());
    let code = axum::http::StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap();
    let body = serde_json::json!({
        "backend": addr.to_string(), "peer": peer, "headers": headers, "body_len": body_len,
    });
    (code, [("connection", "keep-alive"), ("keep-alive", "timeout=5")], body.to_string()).into_response()
}

fn config(backends: &[SocketAddr]) -> LbConfig {
    let mut c = LbConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        backends.to_vec(),
    );
    c.health.interval_ms = 100;
    c
}

fn start(config: LbConfig) -> Running {
    tokio::task::block_in_place(|| lb::start(config)).expect("load balancer starts")
}

fn url(lb: &Running, path: &str) -> String {
    format!("http://{}{path}", lb.listen)
}

async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn served_by(client: &reqwest::Client, lb: &Running, path: &str) -> (u16, serde_json::Value) {
    let r = client.get(url(lb, path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_spreads_evenly() {
    let bs = [backend().await, backend().await, backend().await];
    let lb = start(config(&bs.iter().map(|b| b.addr).collect::<Vec<_>>()));
    let client = reqwest::Client::new();
    for _ in 0..30 {
        assert_eq!(served_by(&client, &lb, "/x").await.0, 200);
    }
    for b in &bs {
        assert_eq!(b.hits.load(Ordering::SeqCst), 10, "{}", b.addr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_request_spreads_under_concurrency() {
    let bs = [backend().await, backend().await, backend().await];
    let mut c = config(&bs.iter().map(|b| b.addr).collect::<Vec<_>>());
    c.algorithm = Algorithm::LeastRequest;
    let lb = Arc::new(start(c));
    let client = reqwest::Client::new();
    // Requests held at the backends: each new one goes where fewer are waiting.
    let mut held = Vec::new();
    for _ in 0..9 {
        let (client, u) = (client.clone(), url(&lb, "/hold"));
        held.push(tokio::spawn(async move { client.get(u).send().await.unwrap().status().as_u16() }));
    }
    wait_for("9 held requests", async || {
        bs.iter().map(|b| b.hits.load(Ordering::SeqCst)).sum::<usize>() == 9
    })
    .await;
    for b in &bs {
        let n = b.hits.load(Ordering::SeqCst);
        assert!((1..=5).contains(&n), "{} got {n} of 9", b.addr);
        b.gate.add_permits(9);
    }
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarding_headers_set_and_hop_by_hop_removed() {
    let b = backend().await;
    let lb = start(config(&[b.addr]));
    let client = reqwest::Client::new();
    let r = client
        .get(url(&lb, "/h"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .header("keep-alive", "timeout=5")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    assert!(r.headers().get("keep-alive").is_none(), "{:?}", r.headers());
    let seen: serde_json::Value = r.json().await.unwrap();
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-request-id"], "abc-123");
    assert!(h.get("x-drop-me").is_none() && h.get("keep-alive").is_none(), "{h}");
    // Without one, an id is made, sent on and returned.
    let r = client.get(url(&lb, "/h")).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(seen["headers"]["x-request-id"], id.as_str());
    assert_eq!(id.len(), 32);
    // Given twice, or not plain, an id is replaced too (the rule the web tier
    // applies: `telemetry::request_id`), over HTTP/1 and HTTP/2.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for client in [&client, &h2] {
        for ids in [&["one", "two"][..], &["with space"], &["a\"quote"]] {
            let mut req = client.get(url(&lb, "/h"));
            for id in ids {
                req = req.header("x-request-id", *id);
            }
            let r = req.send().await.unwrap();
            let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
            assert!(id.len() == 32 && !ids.contains(&id.as_str()), "{ids:?} -> {id}");
            let seen: serde_json::Value = r.json().await.unwrap();
            assert_eq!(seen["headers"]["x-request-id"], id.as_str(), "{ids:?}: the backend got the new one");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backend_connections_come_from_the_configured_source_address() {
    let b = backend().await;
    let mut c = config(&[b.addr]);
    c.upstream.source_ip = Some("127.0.0.77".parse().unwrap());
    let lb = start(c);
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for client in [reqwest::Client::new(), h2] {
        let seen: serde_json::Value = client.get(url(&lb, "/h")).send().await.unwrap().json().await.unwrap();
        assert_eq!(seen["peer"], "127.0.0.77", "{seen}");
    }
    // Without it, the kernel's choice.
    let lb = start(config(&[b.addr]));
    let seen: serde_json::Value = reqwest::get(url(&lb, "/h")).await.unwrap().json().await.unwrap();
    assert_eq!(seen["peer"], "127.0.0.1", "{seen}");
    // An address this host does not have is refused before anything is bound.
    let mut bad = config(&[b.addr]);
    bad.upstream.source_ip = Some("192.0.2.1".parse().unwrap());
    let e = tokio::task::block_in_place(|| lb::start(bad)).expect_err("refused");
    assert!(e.to_string().contains("upstream.source_ip 192.0.2.1"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_prior_knowledge() {
    let b = backend().await;
    let lb = start(config(&[b.addr]));
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let r = client.get(url(&lb, "/h2")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    // The client's address is known (X-Forwarded-For, the rate limit's key).
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_backend_is_ejected_then_readmitted() {
    let (bad, good) = (backend().await, backend().await);
    let mut c = config(&[bad.addr, good.addr]);
    c.outlier.consecutive_failures = 3;
    c.outlier.base_ejection_ms = 300;
    let lb = start(c);
    bad.status.store(500, Ordering::SeqCst);
    let client = reqwest::Client::new();
    let backend = lb.pool.get(bad.addr).unwrap();
    wait_for("the 500 backend to be ejected", async || {
        served_by(&client, &lb, "/e").await;
        backend.ejected(Instant::now())
    })
    .await;
    assert_eq!(bad.hits.load(Ordering::SeqCst), 3);
    for _ in 0..4 {
        let (status, seen) = served_by(&client, &lb, "/e").await;
        // It may be readmitted (and answer 500 again) already; never a 502.
        assert!(status == 200 || seen["backend"] == bad.addr.to_string(), "{status} {seen}");
    }
    bad.status.store(200, Ordering::SeqCst);
    let before = bad.hits.load(Ordering::SeqCst);
    wait_for("the recovered backend to get traffic again", async || {
        served_by(&client, &lb, "/e").await;
        bad.hits.load(Ordering::SeqCst) > before
    })
    .await;
    let text = reqwest::get(format!("http://{}/metrics", lb.admin)).await.unwrap().text().await.unwrap();
    let line = format!("millions_lb_backend_ejections_total{{backend=\"{}\"}}", bad.addr);
    assert!(text.contains(&line), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_backend_metrics_count_requests_errors_latency_and_health() {
    let (bad, good) = (backend().await, backend().await);
    let mut c = config(&[bad.addr, good.addr]);
    // Counted, not ejected.
    c.outlier.consecutive_failures = 1000;
    let lb = start(c);
    bad.status.store(500, Ordering::SeqCst);
    let client = reqwest::Client::new();
    for _ in 0..10 {
        served_by(&client, &lb, "/m").await;
    }
    let (to_bad, to_good) = (bad.hits.load(Ordering::SeqCst), good.hits.load(Ordering::SeqCst));
    assert_eq!(to_bad + to_good, 10);
    assert!(to_bad > 0 && to_good > 0, "round robin reached both: {to_bad} {to_good}");
    let metrics =
        async || reqwest::get(format!("http://{}/metrics", lb.admin)).await.unwrap().text().await.unwrap();
    let text = metrics().await;
    for (b, requests, errors) in [(bad.addr, to_bad, to_bad), (good.addr, to_good, 0)] {
        for line in [
            format!("millions_lb_backend_requests_total{{backend=\"{b}\"}} {requests}"),
            format!("millions_lb_backend_errors_total{{backend=\"{b}\"}} {errors}"),
            format!("millions_lb_backend_latency_seconds_count{{backend=\"{b}\"}} {requests}"),
            format!("millions_lb_backend_up{{backend=\"{b}\"}} 1"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
    }
    // A drained backend is reported down.
    assert!(lb.pool.start_drain(good.addr));
    let line = format!("millions_lb_backend_up{{backend=\"{}\"}} 0", good.addr);
    let text = metrics().await;
    assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_backend_joins_through_the_admin_api() {
    let (a, b) = (backend().await, backend().await);
    let lb = start(config(&[a.addr]));
    let client = reqwest::Client::new();
    let r = client
        .put(format!("http://{}/admin/backends", lb.admin))
        .json(&serde_json::json!({"backends": [a.addr, b.addr]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_for("the new backend to get traffic", async || {
        assert_eq!(served_by(&client, &lb, "/j").await.0, 200);
        b.hits.load(Ordering::SeqCst) > 0
    })
    .await;
    let r = client
        .put(format!("http://{}/admin/backends", lb.admin))
        .json(&serde_json::json!({"backends": [b.addr, b.addr]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_waits_for_requests_in_flight_then_sends_nothing_new() {
    let (a, b) = (backend().await, backend().await);
    let lb = start(config(&[a.addr, b.addr]));
    let client = reqwest::Client::new();
    // One request held at each backend.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (client, u) = (client.clone(), url(&lb, "/hold"));
            tokio::spawn(async move { client.get(u).send().await.unwrap().status().as_u16() })
        })
        .collect();
    wait_for("both held", async || a.hits.load(Ordering::SeqCst) == 1 && b.hits.load(Ordering::SeqCst) == 1)
        .await;
    let drain = {
        let u = format!("http://{}/admin/backends/{}/drain?timeout_ms=20000", lb.admin, b.addr);
        let client = client.clone();
        tokio::spawn(async move { client.post(u).send().await.unwrap().status().as_u16() })
    };
    let backend = lb.pool.get(b.addr).unwrap();
    wait_for("draining", async || backend.draining()).await;
    assert!(!drain.is_finished(), "drain returned with a request in flight");
    for _ in 0..4 {
        assert_eq!(served_by(&client, &lb, "/d").await.1["backend"], a.addr.to_string());
    }
    b.gate.add_permits(1);
    assert_eq!(drain.await.unwrap(), 200);
    a.gate.add_permits(1);
    for h in held {
        assert_eq!(h.await.unwrap(), 200, "the drained backend's request completed");
    }
    assert_eq!(b.hits.load(Ordering::SeqCst), 1);
}

/// Send `request` on a fresh connection; the response's head, or what was read
/// before the connection closed.
fn raw(lb: &Running, request: &[u8]) -> String {
    let mut s = TcpStream::connect(lb.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smuggling_shapes_are_refused() {
    let b = backend().await;
    let lb = start(config(&[b.addr]));
    for (name, req) in [
        (
            "CL and TE",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE and CL",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        ),
        ("duplicate CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        (
            "conflicting CL",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        ("CL list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!"),
        ("TE not chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ] {
        let head = raw(&lb, req.as_bytes());
        assert!(head.starts_with("HTTP/1.1 400"), "{name}: {head:?}");
    }
    assert_eq!(b.hits.load(Ordering::SeqCst), 0, "nothing reached the backend");
    let ok = raw(&lb, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_header_and_body_are_refused() {
    let b = backend().await;
    let mut c = config(&[b.addr]);
    c.limits.max_header_bytes = 2048;
    c.limits.max_body_bytes = 1000;
    let lb = start(c);
    let big = "a".repeat(4000);
    let head = raw(&lb, format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes());
    assert!(head.starts_with("HTTP/1.1 431"), "{head:?}");
    // A request line alone longer than the limit: the URI is too long.
    let head = raw(&lb, format!("GET /{big} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert!(head.starts_with("HTTP/1.1 414"), "{head:?}");
    let head = raw(&lb, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 413"), "{head:?}");
    let client = reqwest::Client::new();
    let r = client.post(url(&lb, "/")).body(vec![b'x'; 1000]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(b.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slowloris_connection_is_closed() {
    let b = backend().await;
    let mut c = config(&[b.addr]);
    c.limits.header_timeout_ms = 300;
    let lb = start(c);
    let mut s = TcpStream::connect(lb.listen).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    // Trickle a header byte at a time, each well within pingora's per-read timeout.
    let closed = loop {
        assert!(started.elapsed() < Duration::from_secs(20), "still open after 20 s");
        if s.write_all(b"X").is_err() {
            break true;
        }
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => break false,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
            }
            Err(_) => break true,
        }
    };
    assert!(closed, "the connection got an answer instead of being closed");
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_answers_429_with_retry_after() {
    let b = backend().await;
    let mut c = config(&[b.addr]);
    c.rate_limit.per_second = 1;
    c.rate_limit.burst = 2;
    let lb = start(c);
    let client = reqwest::Client::new();
    assert_eq!(served_by(&client, &lb, "/r").await.0, 200);
    assert_eq!(served_by(&client, &lb, "/r").await.0, 200);
    let r = client.get(url(&lb, "/r")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(b.hits.load(Ordering::SeqCst), 2);
}

/// A backend that reads a request's header, then closes the connection unanswered.
async fn dropper() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (gets, posts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (g, p) = (gets.clone(), posts.clone());
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let (g, p) = (g.clone(), p.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if buf.starts_with(b"POST") {
                    p.fetch_add(1, Ordering::SeqCst);
                } else if !buf.starts_with(b"GET /readyz") {
                    g.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, gets, posts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_is_retried_elsewhere_post_is_not() {
    let (drop_addr, drop_gets, drop_posts) = dropper().await;
    let good = backend().await;
    let mut c = config(&[drop_addr, good.addr]);
    c.outlier.consecutive_failures = 0;
    c.health.interval_ms = 60_000;
    let lb = start(c);
    let client = reqwest::Client::new();
    for _ in 0..4 {
        assert_eq!(served_by(&client, &lb, "/g").await.0, 200);
    }
    assert!(drop_gets.load(Ordering::SeqCst) >= 1, "some GET met the dropping backend first");
    assert_eq!(good.hits.load(Ordering::SeqCst), 4);
    let mut bad_gateway = 0;
    for _ in 0..4 {
        let s = client.post(url(&lb, "/p")).body("x").send().await.unwrap().status().as_u16();
        assert!(s == 200 || s == 502, "{s}");
        bad_gateway += usize::from(s == 502);
    }
    assert!(bad_gateway >= 1);
    assert_eq!(drop_posts.load(Ordering::SeqCst), bad_gateway, "each lost POST was sent once");
    assert_eq!(good.hits.load(Ordering::SeqCst), 4 + 4 - bad_gateway, "no POST was sent twice");
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_backend_process() -> (SocketAddr, Child) {
    let port = nodes::free_port("127.0.0.1".parse().unwrap()).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_lb-test-backend"))
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    (addr, Child(child))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_a_backend_under_get_load() {
    let procs: Vec<(SocketAddr, Child)> = (0..3).map(|_| spawn_backend_process()).collect();
    for (addr, _) in &procs {
        wait_for("a backend process", async || TcpStream::connect(addr).is_ok()).await;
    }
    let lb = Arc::new(start(config(&procs.iter().map(|(a, _)| *a).collect::<Vec<_>>())));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (lb, ok, failed, stop) = (lb.clone(), ok.clone(), failed.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::SeqCst) {
                match client.get(url(&lb, "/k")).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    Ok(r) => {
                        failed.lock().unwrap().push(r.status().to_string());
                        0
                    }
                    Err(e) => {
                        failed.lock().unwrap().push(e.to_string());
                        0
                    }
                };
            }
        }));
    }
    wait_for("load to flow", async || ok.load(Ordering::SeqCst) >= 200).await;
    let mut procs = procs;
    let (victim, mut child) = procs.remove(1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.0.wait();
    let after = ok.load(Ordering::SeqCst);
    let dead = lb.pool.get(victim).unwrap();
    wait_for("the dead backend marked unhealthy", async || !dead.healthy()).await;
    wait_for("more load after the kill", async || ok.load(Ordering::SeqCst) >= after + 300).await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    let failed = failed.lock().unwrap();
    assert!(failed.is_empty(), "{} failed GETs: {:?}", failed.len(), &failed[..failed.len().min(5)]);
}

/// How a [`raw_backend`] answers (it reads each request's header and a
/// `Content-Length` body first; `/readyz` always gets a kept-alive 200).
#[derive(Clone, Copy, PartialEq)]
enum Style {
    /// `200 ok`, connection kept.
    KeepAlive,
    /// `200 ok` with keep-alive headers, then the connection closed anyway.
    CloseAfterAnswer,
    /// An HTTP/1.0 answer without a length, ended by closing the connection.
    EndedByClose,
    /// A chunked answer, connection kept.
    Chunked,
    /// Never answers.
    Silent,
    /// A `Content-Length` that is not a number.
    BadLength,
    /// `Content-Length` with `Transfer-Encoding` (an ambiguous answer).
    Ambiguous,
    /// Answers 413 right after the head, and never reads the body.
    EarlyAnswer,
    /// A `100 Continue` and the final answer in one write.
    InformationalFirst,
}

/// A hand-written HTTP/1.1 backend that counts what happens to its connections.
struct RawBackend {
    addr: SocketAddr,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
    /// Requests read (not counting `/readyz`).
    requests: Arc<AtomicUsize>,
    /// Connections it closed after answering.
    closed: Arc<AtomicUsize>,
}

async fn raw_backend(style: Style) -> RawBackend {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (accepted, requests, closed) = counters.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            accepted.fetch_add(1, Ordering::SeqCst);
            let (requests, closed) = (requests.clone(), closed.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    if style == Style::EarlyAnswer && !head.starts_with("get /readyz") {
                        requests.fetch_add(1, Ordering::SeqCst);
                        let no = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 2\r\n\r\nno";
                        let _ = s.write_all(no).await;
                        // Holds the connection, reading nothing more.
                        std::future::pending::<()>().await;
                    }
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + length {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + length);
                    if head.starts_with("get /readyz") {
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nready";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    let answer: &[u8] = match style {
                        Style::KeepAlive | Style::CloseAfterAnswer => {
                            b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok"
                        }
                        Style::EndedByClose => b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nhello",
                        Style::Chunked => {
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                        }
                        Style::Silent | Style::EarlyAnswer => std::future::pending().await,
                        Style::BadLength => b"HTTP/1.1 200 OK\r\ncontent-length: two\r\n\r\nok",
                        Style::Ambiguous => {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                        }
                        Style::InformationalFirst => {
                            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                        }
                    };
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                    if matches!(style, Style::CloseAfterAnswer | Style::EndedByClose) {
                        drop(s);
                        closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            });
        }
    });
    RawBackend { addr, accepted: counters.0, requests: counters.1, closed: counters.2 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backend_connections_are_kept_alive_and_reused() {
    let b = raw_backend(Style::KeepAlive).await;
    let mut c = config(&[b.addr]);
    c.health.interval_ms = 60_000;
    c.threads = 2;
    let lb = start(c);
    // Two client connections of our own (a pooling client may open another at
    // any moment), taking turns: with two proxy threads they are most likely on
    // different ones, and each thread keeps its own backend connections.
    let mut clients = [TcpStream::connect(lb.listen).unwrap(), TcpStream::connect(lb.listen).unwrap()];
    for s in &clients {
        // A hang fails the test instead of holding it.
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    for i in 0..50 {
        let s = &mut clients[i % 2];
        s.write_all(b"GET /k HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let answer = read_until(s, b"\r\n\r\nok");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 50);
    // One connection per proxy thread for the requests, at most one more for the
    // health probe.
    let accepted = b.accepted.load(Ordering::SeqCst);
    assert!(accepted <= 3, "{accepted} connections for 50 requests over two client connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_the_backend_closed_is_not_reused_for_a_post() {
    let b = raw_backend(Style::CloseAfterAnswer).await;
    let mut c = config(&[b.addr]);
    c.health.interval_ms = 60_000;
    let lb = start(c);
    let client = reqwest::Client::new();
    for i in 1..=5 {
        let r = client.post(url(&lb, "/p")).body("x").send().await.unwrap();
        // A POST is never retried: had the closed connection been reused, this
        // would be a 502.
        assert_eq!(r.status(), 200, "POST {i}");
        wait_for("the backend to close its connection", async || b.closed.load(Ordering::SeqCst) == i).await;
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 5, "each POST reached the backend once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_ended_by_close_or_chunked_arrive_whole_over_http1_and_http2() {
    let ended = raw_backend(Style::EndedByClose).await;
    let chunked = raw_backend(Style::Chunked).await;
    let h1 = reqwest::Client::new();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for (b, body) in [(&ended, "hello"), (&chunked, "hello world")] {
        let lb = start(config(&[b.addr]));
        for client in [&h1, &h2] {
            for _ in 0..3 {
                let r = client.get(url(&lb, "/c")).send().await.unwrap();
                assert_eq!(r.status(), 200);
                assert_eq!(r.text().await.unwrap(), body);
            }
        }
    }
    // The client's HTTP/1.1 connection outlived the backend's closing ones.
    let lb = start(config(&[ended.addr]));
    let mut s = TcpStream::connect(lb.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let text = read_until(&mut s, b"0\r\n\r\n").to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200") && text.contains("transfer-encoding: chunked"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expect_100_continue_is_answered_before_the_body() {
    let b = raw_backend(Style::KeepAlive).await;
    let lb = start(config(&[b.addr]));
    let mut s = TcpStream::connect(lb.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim:?}");
    s.write_all(b"hello").unwrap();
    let got = read_until(&mut s, b"ok");
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    assert_eq!(b.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_backend_is_a_504_and_a_post_is_sent_once() {
    let b = raw_backend(Style::Silent).await;
    let mut c = config(&[b.addr]);
    c.upstream.read_timeout_ms = 300;
    c.health.interval_ms = 60_000;
    let lb = start(c);
    let client = reqwest::Client::new();
    let r = client.get(url(&lb, "/s")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let r = client.post(url(&lb, "/s")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 504);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "gateway_timeout");
    assert_eq!(b.requests.load(Ordering::SeqCst), 2, "one backend: nothing to retry on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_requests_with_bodies_reach_the_backend_as_http1() {
    let b = backend().await;
    let lb = start(config(&[b.addr]));
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let r = client.post(url(&lb, "/h2")).body(vec![b'x'; 100_000]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: serde_json::Value = r.json().await.unwrap();
    let h = &seen["headers"];
    assert!(h["host"].as_str().is_some_and(|v| v.starts_with("127.0.0.1:")), "{h}");
    assert!(h.get("content-length").is_some() || h["transfer-encoding"] == "chunked", "{h}");
    assert_eq!(seen["body_len"], 100_000);
}

/// Read from `s` until what was read ends with `end`; the connection must not
/// close first.
fn read_until(s: &mut TcpStream, end: &[u8]) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(end) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Send `request` on a fresh connection and read until the server closes it (or
/// 10 s pass); everything received.
fn exchange_until_close(lb: &Running, request: &[u8]) -> String {
    let mut s = TcpStream::connect(lb.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunked_request_bodies_are_checked_on_the_way() {
    let b = backend().await;
    let mut c = config(&[b.addr]);
    c.limits.max_body_bytes = 1000;
    let lb = start(c);
    // Well framed: it arrives whole (the echo says how long).
    let good = exchange_until_close(
        &lb,
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert!(good.starts_with("HTTP/1.1 200"), "{good:?}");
    assert!(good.contains("\"body_len\":11"), "{good:?}");
    // A chunk longer than its size: 400, and the connection ends.
    let bad = exchange_until_close(
        &lb,
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello, world\r\n0\r\n\r\n",
    );
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad:?}");
    assert!(bad.contains("bad_request"), "{bad:?}");
    // More chunked bytes than the limit: 413.
    let chunk = "x".repeat(600);
    let big = format!(
        "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let too_big = exchange_until_close(&lb, big.as_bytes());
    assert!(too_big.starts_with("HTTP/1.1 413"), "{too_big:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_request_heads_are_400_and_pipelined_requests_are_answered_in_order() {
    let b = raw_backend(Style::KeepAlive).await;
    let lb = start(config(&[b.addr]));
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        // Lines ended by bare LFs: refused at once, not left to the header timeout.
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\n",
        b"GET / HTTP/1.1\r\nHost: x\n\r\n",
        // A bare LF inside an otherwise complete head.
        b"GET / HTTP/1.1\r\nHost: x\nX-Y: z\r\n\r\n",
    ] {
        let head = exchange_until_close(&lb, garbage);
        assert!(head.starts_with("HTTP/1.1 400"), "{:?}: {head:?}", String::from_utf8_lossy(garbage));
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 0, "nothing reached the backend");
    let two = exchange_until_close(
        &lb,
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(two.matches("HTTP/1.1 200").count(), 2, "{two:?}");
    assert!(two.ends_with("ok"), "{two:?}");
    assert_eq!(b.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http10_clients_keep_their_connection_only_when_they_ask() {
    let b = raw_backend(Style::KeepAlive).await;
    let lb = start(config(&[b.addr]));
    let closed = exchange_until_close(&lb, b"GET / HTTP/1.0\r\n\r\n");
    assert!(closed.starts_with("HTTP/1.1 200") && closed.contains("connection: close"), "{closed:?}");
    // Asked for keep-alive: the same connection serves a second request.
    let mut s = TcpStream::connect(lb.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let text = read_until(&mut s, b"ok").to_ascii_lowercase();
        assert!(text.contains("connection: keep-alive"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_or_ambiguous_backend_answers_are_502() {
    for style in [Style::BadLength, Style::Ambiguous] {
        let b = raw_backend(style).await;
        let mut c = config(&[b.addr]);
        c.health.interval_ms = 60_000;
        let lb = start(c);
        let r = reqwest::Client::new().post(url(&lb, "/m")).body("x").send().await.unwrap();
        assert_eq!(r.status(), 502);
        assert_eq!(b.requests.load(Ordering::SeqCst), 1, "a POST is not sent twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_early_answer_from_a_backend_that_stops_reading_reaches_the_client() {
    let b = raw_backend(Style::EarlyAnswer).await;
    let mut c = config(&[b.addr]);
    c.upstream.read_timeout_ms = 500;
    c.limits.max_body_bytes = 64 << 20;
    c.health.interval_ms = 60_000;
    let lb = start(c);
    // Far more than the socket buffers hold: the load balancer's writes stall.
    let r = reqwest::Client::new().post(url(&lb, "/upload")).body(vec![b'x'; 32 << 20]).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers().get("connection").map(|v| v.to_str().unwrap()), Some("close"));
    assert_eq!(r.text().await.unwrap(), "no");
    assert_eq!(b.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_informational_answer_read_with_the_final_one_is_dropped() {
    let b = raw_backend(Style::InformationalFirst).await;
    let mut c = config(&[b.addr]);
    // Were the final answer missed, the request would end in a 504 after this.
    c.upstream.read_timeout_ms = 2_000;
    c.health.interval_ms = 60_000;
    let lb = start(c);
    let h1 = reqwest::Client::new();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for client in [h1, h2] {
        let r = client.get(url(&lb, "/i")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 2, "each request sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http10_client_gets_a_chunked_answer_as_plain_data() {
    let b = raw_backend(Style::Chunked).await;
    let lb = start(config(&[b.addr]));
    let got = exchange_until_close(&lb, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let (head, body) = got.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{got:?}");
    assert!(!head.contains("transfer-encoding") && head.contains("connection: close"), "{got:?}");
    assert_eq!(body, "hello world", "ended by closing, no chunk framing");
}

/// A connection kept alive, idle, after one answered request.
fn idle_connection(lb: &Running) -> TcpStream {
    let mut s = TcpStream::connect(lb.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap())
            })
            .expect("a length");
        if body.len() >= len {
            return s;
        }
    }
}

/// Read what is left until the peer closes (a read timeout fails the test).
fn rest(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("the peer closes the connection");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_finishes_requests_in_flight_and_closes_idle_connections() {
    let b = backend().await;
    let lb = start(config(&[b.addr]));
    let listen = lb.listen;
    let mut idle = idle_connection(&lb);
    let mut busy = TcpStream::connect(listen).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    busy.write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let hits = b.hits.clone();
    wait_for("the held request to reach the backend", async || hits.load(Ordering::SeqCst) == 2).await;

    let stopping = tokio::task::spawn_blocking(move || lb.stop(true));
    // The idle connection is closed at once, without waiting for its timeout.
    assert_eq!(tokio::task::block_in_place(|| rest(&mut idle)), "");
    // No new connections.
    wait_for("the listener to close", async || TcpStream::connect(listen).is_err()).await;
    // The request in flight is answered, and its connection closed after it.
    b.gate.add_permits(1);
    let answer = tokio::task::block_in_place(|| rest(&mut busy));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fast_stop_cuts_requests_in_flight() {
    let b = backend().await;
    let lb = start(config(&[b.addr]));
    let mut busy = TcpStream::connect(lb.listen).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    busy.write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let hits = b.hits.clone();
    wait_for("the held request to reach the backend", async || hits.load(Ordering::SeqCst) == 1).await;
    tokio::task::spawn_blocking(move || lb.stop(false)).await.unwrap();
    assert_eq!(tokio::task::block_in_place(|| rest(&mut busy)), "");
    b.gate.add_permits(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_paths_are_never_answered_through_the_public_entry() {
    let b = backend().await;
    let lb = start(config(&[b.addr]));
    let client = reqwest::Client::new();
    for path in
        lb::rules::INTERNAL_PATHS.iter().flat_map(|p| [p.to_string(), format!("{p}?x=1"), format!("{p}/x")])
    {
        let r = client.get(url(&lb, &path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    assert_eq!(b.hits.load(Ordering::SeqCst), 0, "an internal path reached the backend");
    // Everything else is proxied as before.
    assert_eq!(client.get(url(&lb, "/metricsx")).send().await.unwrap().status(), 200);
    assert_eq!(b.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_token_the_admin_api_needs_it_and_the_probes_do_not() {
    let (a, b) = (backend().await, backend().await);
    let mut c = config(&[a.addr]);
    c.admin_token = Some("a-long-enough-admin-token".into());
    let lb = start(c);
    let client = reqwest::Client::new();
    let replace = |token: Option<&str>| {
        let mut r = client
            .put(format!("http://{}/admin/backends", lb.admin))
            .json(&serde_json::json!({"backends": [a.addr, b.addr]}));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    for wrong in [None, Some("not-the-admin-token-at-all")] {
        let r = replace(wrong).await.unwrap();
        assert_eq!(r.status(), 401, "{wrong:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated");
    }
    let listed = client.get(format!("http://{}/admin/backends", lb.admin)).send().await.unwrap();
    assert_eq!(listed.status(), 401, "listing needs the token too");
    assert_eq!(replace(Some("a-long-enough-admin-token")).await.unwrap().status(), 200);
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let r = client.get(format!("http://{}{probe}", lb.admin)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{probe} stays open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_requests_share_one_http2_connection() {
    // h2 ends a connection whose server side reset too many streams itself
    // ("too_many_internal_resets", after 1024): every stream must end cleanly.
    // Answers larger than a stream's first flow-control window (64 KiB), like the
    // OpenAPI document, and small ones.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/big", axum::routing::get(|| async { "x".repeat(100_000) }))
        .route("/small", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let lb = start(config(&[addr]));
    let h2 = reqwest::Client::builder().http2_prior_knowledge().pool_max_idle_per_host(1).build().unwrap();
    for i in 0..2000 {
        let path = if i % 2 == 0 { "/big" } else { "/small" };
        let r = h2.get(url(&lb, path)).send().await.unwrap_or_else(|e| {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why.push_str(&format!(": {s}"));
                source = s.source();
            }
            panic!("request {i}: {why}")
        });
        assert_eq!(r.status(), 200, "request {i}");
        r.bytes().await.unwrap();
    }
}
