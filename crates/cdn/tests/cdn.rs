//! The edge against a real origin (an axum server on port 0 that counts what it
//! is asked): what is cached, for how long, revalidated, coalesced, invalidated.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use cdn::{CdnConfig, Outcome, Running};
use tokio::sync::Semaphore;

/// What the origin saw.
struct Seen {
    /// Requests per path.
    requests: Mutex<HashMap<String, usize>>,
    /// Conditional requests (`If-None-Match`) per path.
    conditional: Mutex<HashMap<String, usize>>,
    /// Held by `/slow` until the test releases it.
    gate: Semaphore,
}

impl Seen {
    fn new() -> Seen {
        Seen { requests: Mutex::default(), conditional: Mutex::default(), gate: Semaphore::new(0) }
    }
    fn requests(&self, path: &str) -> usize {
        self.requests.lock().unwrap().get(path).copied().unwrap_or(0)
    }
    fn conditional(&self, path: &str) -> usize {
        self.conditional.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// The origin's one handler: the path says how to answer.
async fn origin(State(seen): State<Arc<Seen>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    *seen.requests.lock().unwrap().entry(path.clone()).or_default() += 1;
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::OK, "changed").into_response();
    }
    let cc = |v: &'static str| [(header::CACHE_CONTROL, HeaderValue::from_static(v))];
    match path.as_str() {
        "/fresh" => (cc("max-age=60"), "fresh body").into_response(),
        "/nostore" => (cc("no-store"), "no-store body").into_response(),
        "/private" => (cc("private, max-age=60"), "private body").into_response(),
        "/cookie" => {
            (cc("max-age=60"), [(header::SET_COOKIE, HeaderValue::from_static("s=1"))], "cookie body")
                .into_response()
        }
        "/uncached" => "no freshness, no validator".into_response(),
        "/etag" => {
            if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == "\"v1\"") {
                *seen.conditional.lock().unwrap().entry(path).or_default() += 1;
                return (
                    StatusCode::NOT_MODIFIED,
                    cc("no-cache"),
                    [(header::ETAG, HeaderValue::from_static("\"v1\""))],
                )
                    .into_response();
            }
            (cc("no-cache"), [(header::ETAG, HeaderValue::from_static("\"v1\""))], "etag body")
                .into_response()
        }
        "/vary" => {
            let lang = headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            (
                cc("max-age=60"),
                [(header::VARY, HeaderValue::from_static("Accept-Language"))],
                format!("lang={lang}"),
            )
                .into_response()
        }
        "/sie" => (cc("max-age=0, stale-if-error=60"), "kept for errors").into_response(),
        "/big" => (cc("max-age=60"), "0123456789abcdefghij").into_response(),
        p if p.starts_with("/tagged/") => {
            let (tags, etag) = match p {
                "/tagged/a" => ("user-1 post-1", "\"a\""),
                "/tagged/b" => ("user-1 post-2", "\"b\""),
                _ => ("user-2", "\"c\""),
            };
            if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == etag) {
                *seen.conditional.lock().unwrap().entry(path).or_default() += 1;
                return (
                    StatusCode::NOT_MODIFIED,
                    cc("max-age=60"),
                    [(header::ETAG, HeaderValue::from_static(etag))],
                )
                    .into_response();
            }
            let headers = [
                (header::ETAG, HeaderValue::from_static(etag)),
                (header::HeaderName::from_static("surrogate-key"), HeaderValue::from_static(tags)),
                (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            ];
            (cc("max-age=60"), headers, format!("body of {p}")).into_response()
        }
        "/slow" => {
            let _permit = seen.gate.acquire().await.unwrap();
            (cc("max-age=60"), "slow body").into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// An origin on a free port, and what it saw.
async fn spawn_origin() -> (SocketAddr, Arc<Seen>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Seen::new());
    let app = Router::new().fallback(origin).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen, server)
}

async fn spawn_edge(origin: impl Into<cdn::Origins>) -> Running {
    spawn_edge_with(origin, |_| {}).await
}

async fn spawn_edge_with(origin: impl Into<cdn::Origins>, adjust: impl FnOnce(&mut CdnConfig)) -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = CdnConfig::new(any, any, origin);
    adjust(&mut config);
    cdn::start(config).await.unwrap()
}

/// One GET through the edge: status, `X-Cache`, body, headers.
async fn get(
    edge: &Running,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, String, HeaderMap) {
    request(edge, Method::GET, path, headers).await
}

async fn request(
    edge: &Running,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, String, HeaderMap) {
    let mut req = reqwest::Client::new().request(method, format!("http://{}{path}", edge.addr()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let cache = headers.get("x-cache").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, cache, r.text().await.unwrap(), headers)
}

#[tokio::test]
async fn a_fresh_response_is_served_from_the_cache() {
    let (origin, seen, _server) = spawn_origin().await;
    let edge = spawn_edge(origin).await;
    let (status, cache, body, _) = get(&edge, "/fresh", &[]).await;
    assert_eq!((status, cache.as_str(), body.as_str()), (StatusCode::OK, "MISS", "fresh body"));
    let (status, cache, body, headers) = get(&edge, "/fresh", &[]).await;
    assert_eq!((status, cache.as_str(), body.as_str()), (StatusCode::OK, "HIT", "fresh body"));
    assert!(headers.contains_key(header::AGE), "a hit says its age: {headers:?}");
    assert_eq!(seen.requests("/fresh"), 1);
    assert_eq!(edge.metrics().count(Outcome::hit), 1);
    assert!(edge.stored().1 >= 1, "the object is in the memory tier");
    edge.stop().await;
}

#[tokio::test]
async fn responses_that_must_not_be_stored_are_not() {
    let (origin, seen, _server) = spawn_origin().await;
    let edge = spawn_edge(origin).await;
    for path in ["/nostore", "/private", "/cookie", "/uncached"] {
        for _ in 0..2 {
            let (status, cache, _, headers) = get(&edge, path, &[]).await;
            assert_eq!((status, cache.as_str()), (StatusCode::OK, "PASS"), "{path}");
            if path == "/cookie" {
                assert_eq!(headers[header::SET_COOKIE], "s=1", "the cookie reaches its client");
            }
        }
        assert_eq!(seen.requests(path), 2, "{path} fetched every time");
    }
    // A request with credentials: its response is not stored (no `public`,
    // `s-maxage` or `must-revalidate`), and it is not answered from the cache.
    for _ in 0..2 {
        let (_, cache, _, _) = get(&edge, "/fresh", &[("authorization", "Bearer abc")]).await;
        assert_eq!(cache, "PASS");
    }
    assert_eq!(seen.requests("/fresh"), 2);
    edge.stop().await;
}

#[tokio::test]
async fn a_stale_object_is_revalidated_with_its_validator() {
    let (origin, seen, _server) = spawn_origin().await;
    let edge = spawn_edge(origin).await;
    let (_, cache, body, _) = get(&edge, "/etag", &[]).await;
    assert_eq!((cache.as_str(), body.as_str()), ("MISS", "etag body"));
    for _ in 0..2 {
        // `no-cache`: stored, but every use asks the origin, which says 304.
        let (status, cache, body, _) = get(&edge, "/etag", &[]).await;
        assert_eq!((status, cache.as_str(), body.as_str()), (StatusCode::OK, "REVALIDATED", "etag body"));
    }
    assert_eq!((seen.requests("/etag"), seen.conditional("/etag")), (3, 2));
    // The client's own validator is answered from the cache's object.
    let (status, _, body, _) = get(&edge, "/etag", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    edge.stop().await;
}

#[tokio::test]
async fn vary_keeps_one_object_per_variant() {
    let (origin, seen, _server) = spawn_origin().await;
    let edge = spawn_edge(origin).await;
    for (lang, cache) in [("en", "MISS"), ("fr", "MISS"), ("en", "HIT"), ("fr", "HIT")] {
        let (_, got, body, _) = get(&edge, "/vary", &[("accept-language", lang)]).await;
        assert_eq!((got.as_str(), body), (cache, format!("lang={lang}")));
    }
    assert_eq!(seen.requests("/vary"), 2);
    edge.stop().await;
}

#[tokio::test]
async fn concurrent_misses_make_one_origin_fetch() {
    let (origin, seen, _server) = spawn_origin().await;
    let edge = Arc::new(spawn_edge(origin).await);
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let edge = edge.clone();
            tokio::spawn(async move { get(&edge, "/slow", &[]).await })
        })
        .collect();
    // The first miss reaches the origin and is held there; the rest wait on it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.requests("/slow") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the origin was never asked");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    seen.gate.add_permits(100);
    for r in requests {
        let (status, _, body, _) = r.await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "slow body"));
    }
    assert_eq!(seen.requests("/slow"), 1, "one origin fetch for 20 concurrent requests");
    Arc::into_inner(edge).unwrap().stop().await;
}

#[tokio::test]
async fn a_stale_object_is_served_while_the_origin_is_down_if_it_allows() {
    let (origin, seen, server) = spawn_origin().await;
    let edge = spawn_edge(origin).await;
    let (_, cache, _, _) = get(&edge, "/sie", &[]).await;
    assert_eq!(cache, "MISS");
    // Up: a stale object is fetched again.
    let (_, cache, _, _) = get(&edge, "/sie", &[]).await;
    assert_ne!(cache, "STALE");
    assert_eq!(seen.requests("/sie"), 2);
    // Down: the origin refuses connections, and `stale-if-error` lets the edge
    // answer with what it has. `/fresh`, never fetched, cannot be answered.
    server.abort();
    let _ = server.await;
    let (status, cache, body, _) = get(&edge, "/sie", &[]).await;
    assert_eq!((status, cache.as_str(), body.as_str()), (StatusCode::OK, "STALE", "kept for errors"));
    let (status, _, _, _) = get(&edge, "/fresh", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    edge.stop().await;
}

#[tokio::test]
async fn an_unsafe_method_invalidates_its_url() {
    let (origin, seen, _server) = spawn_origin().await;
    let edge = spawn_edge(origin).await;
    get(&edge, "/fresh", &[]).await;
    assert_eq!(get(&edge, "/fresh", &[]).await.1, "HIT");
    let (status, _, body, _) = request(&edge, Method::POST, "/fresh", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "changed"));
    assert_eq!(get(&edge, "/fresh", &[]).await.1, "MISS", "the POST dropped the stored object");
    assert_eq!(seen.requests("/fresh"), 3);
    edge.stop().await;
}

#[tokio::test]
async fn head_and_ranges_are_answered_from_the_cached_object() {
    let (origin, seen, _server) = spawn_origin().await;
    let edge = spawn_edge(origin).await;
    get(&edge, "/big", &[]).await;
    let (status, cache, body, headers) = request(&edge, Method::HEAD, "/big", &[]).await;
    assert_eq!((status, cache.as_str(), body.as_str()), (StatusCode::OK, "HIT", ""));
    assert_eq!(headers[header::CONTENT_LENGTH], "20");
    let (status, cache, body, headers) = get(&edge, "/big", &[("range", "bytes=2-5")]).await;
    assert_eq!((status, cache.as_str(), body.as_str()), (StatusCode::PARTIAL_CONTENT, "HIT", "2345"));
    assert_eq!(headers[header::CONTENT_RANGE], "bytes 2-5/20");
    let (status, _, _, headers) = get(&edge, "/big", &[("range", "bytes=40-50")]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers[header::CONTENT_RANGE], "bytes */20");
    assert_eq!(seen.requests("/big"), 1);
    edge.stop().await;
}

/// `POST /admin/purge` on the edge's admin listener.
async fn purge(
    edge: &Running,
    token: Option<&str>,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let mut req = reqwest::Client::new().post(format!("http://{}/admin/purge", edge.admin())).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.json().await.unwrap_or_default())
}

const TOKEN: &str = "a-token-long-enough-for-the-guard";

#[tokio::test]
async fn purges_by_path_prefix_and_tag_hard_and_soft() {
    let (origin, seen, _server) = spawn_origin().await;
    let edge = spawn_edge_with(origin, |c| c.admin_token = Some(TOKEN.into())).await;
    let warm = async || {
        for p in ["/tagged/a", "/tagged/b", "/tagged/c", "/fresh"] {
            get(&edge, p, &[]).await;
        }
    };
    warm().await;
    let cache = async |p: &str| get(&edge, p, &[]).await.1;
    let (_, _, _, headers) = get(&edge, "/tagged/a", &[]).await;
    assert!(!headers.contains_key("surrogate-key"), "tags stay in the edge: {headers:?}");

    // Without the token: refused, nothing purged.
    let (status, _) = purge(&edge, None, serde_json::json!({"tags": ["user-1"]})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(cache("/tagged/a").await, "HIT");

    // A tag: both of user-1's objects, not user-2's nor the untagged one.
    let (status, body) = purge(&edge, Some(TOKEN), serde_json::json!({"tags": ["user-1"]})).await;
    assert_eq!((status, body["purged"].as_u64()), (StatusCode::OK, Some(2)));
    let got =
        [cache("/tagged/a").await, cache("/tagged/b").await, cache("/tagged/c").await, cache("/fresh").await];
    assert_eq!(got, ["MISS", "MISS", "HIT", "HIT"]);

    // A path, then a prefix.
    let (_, body) = purge(&edge, Some(TOKEN), serde_json::json!({"paths": ["/fresh"]})).await;
    assert_eq!(body["purged"], 1);
    assert_eq!(cache("/fresh").await, "MISS");
    let (_, body) = purge(&edge, Some(TOKEN), serde_json::json!({"prefixes": ["/tagged/"]})).await;
    assert_eq!(body["purged"], 3);
    assert_eq!([cache("/tagged/a").await, cache("/fresh").await], ["MISS", "HIT"]);

    // Soft: kept, but its next use asks the origin first (a 304 here).
    assert_eq!(cache("/tagged/b").await, "MISS");
    let conditional = seen.conditional("/tagged/b");
    let (_, body) =
        purge(&edge, Some(TOKEN), serde_json::json!({"paths": ["/tagged/b"], "soft": true})).await;
    assert_eq!(body["purged"], 1);
    assert_eq!(cache("/tagged/b").await, "REVALIDATED");
    assert_eq!(seen.conditional("/tagged/b"), conditional + 1);
    assert_eq!(cache("/tagged/b").await, "HIT", "fresh again after the revalidation");

    // What was done shows in the metrics.
    let text = reqwest::get(format!("http://{}/metrics", edge.admin())).await.unwrap().text().await.unwrap();
    for line in [
        "millions_cdn_purged_total{by=\"tag\",how=\"hard\"} 2",
        "millions_cdn_purged_total{by=\"prefix\",how=\"hard\"} 3",
        "millions_cdn_purged_total{by=\"path\",how=\"soft\"} 1",
        "millions_cdn_requests_total{cache=\"revalidated\",kind=\"image\"} 1",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    assert!(text.contains("millions_cdn_stored_objects 3"), "{text}");
    edge.stop().await;
}

#[tokio::test]
async fn a_bad_purge_is_refused_with_a_message_and_purges_nothing() {
    let (origin, _seen, _server) = spawn_origin().await;
    let edge = spawn_edge(origin).await;
    get(&edge, "/fresh", &[]).await;
    for (body, says) in [
        (serde_json::json!({}), "at least one"),
        (serde_json::json!({"paths": ["fresh"]}), "must start with /"),
        (serde_json::json!({"prefixes": ["x"]}), "must start with /"),
        (serde_json::json!({"tags": ["two words"]}), "one word"),
        (serde_json::json!({"tags": [""]}), "one word"),
        (serde_json::json!({"paths": ["/fresh"], "everything": true}), "unknown field"),
        (serde_json::json!({"paths": "/fresh"}), "invalid type"),
        (serde_json::json!({"tags": vec!["t"; 1001]}), "at most 1000"),
    ] {
        let (status, reply) = purge(&edge, None, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply["error"]["code"], "invalid_purge");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    assert_eq!(get(&edge, "/fresh", &[]).await.1, "HIT", "nothing was purged");
    edge.stop().await;
}

/// One raw HTTP/1.1 request (what a client library would normalize first); the
/// status and the whole answer.
async fn raw(edge: &Running, head: &str) -> (u16, String) {
    raw_to(edge.addr(), head).await
}

/// [`raw`] to `addr`.
async fn raw_to(addr: SocketAddr, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn bad_requests_get_a_clean_4xx_and_never_reach_the_origin() {
    let (origin, seen, _server) = spawn_origin().await;
    let edge = spawn_edge(origin).await;
    get(&edge, "/big", &[]).await;
    // The same Host as the client library's requests: the same cache key.
    let close = format!("Host: {}\r\nConnection: close\r\n", edge.addr());
    for (target, status) in [
        ("/tagged/../fresh", 400),
        ("/%2e%2e/fresh", 400),
        ("/tagged/%2E/a", 400),
        ("/tagged/.%2e/fresh", 400),
        ("/tagged%2f..%2ffresh", 400),
        ("/./fresh", 400),
    ] {
        let (got, answer) = raw(&edge, &format!("GET {target} HTTP/1.1\r\n{close}\r\n")).await;
        assert_eq!(got, status, "{target}: {answer}");
    }
    let huge = "x".repeat(40 << 10);
    let (got, answer) = raw(&edge, &format!("GET /fresh HTTP/1.1\r\n{close}X-Huge: {huge}\r\n\r\n")).await;
    assert_eq!(got, 431, "{}", &answer[..answer.len().min(200)]);
    assert_eq!(seen.requests("/fresh"), 0, "none of them reached the origin");

    // Malformed or unsatisfiable ranges on a cached object: answered from the
    // cache (the whole object, or 416), never an error of ours.
    for (range, status) in [("bytes=abc", 200), ("bytes=5-2", 416), ("bytes=100-", 416), ("chars=1-2", 200)] {
        let (got, answer) = raw(&edge, &format!("GET /big HTTP/1.1\r\n{close}Range: {range}\r\n\r\n")).await;
        assert_eq!(got, status, "{range}: {answer}");
    }
    assert_eq!(seen.requests("/big"), 1);
    edge.stop().await;
}

/// With `paths`, only those prefixes reach the origin: an edge in front of the
/// app's web servers serves their photos, not their pages, probes or metrics.
#[tokio::test]
async fn paths_outside_the_served_prefixes_are_not_found_and_never_reach_the_origin() {
    let (origin, seen, _server) = spawn_origin().await;
    let edge = spawn_edge_with(origin, |c| c.paths = vec!["/fresh".into(), "/tagged/".into()]).await;
    assert_eq!(get(&edge, "/fresh", &[]).await.0, 200);
    let close = format!("Host: {}\r\nConnection: close\r\n", edge.addr());
    for target in ["/big", "/metrics", "/", "/Fresh", "/tagged", "/admin/purge"] {
        let (got, answer) = raw(&edge, &format!("GET {target} HTTP/1.1\r\n{close}\r\n")).await;
        assert_eq!(got, 404, "{target}: {answer}");
        assert_eq!(seen.requests(target), 0, "{target} reached the origin");
    }
    edge.stop().await;
}

/// A stop with a delay: `/readyz` turns 503 at once while the edge still serves,
/// then it closes.
#[tokio::test]
async fn a_stop_delay_says_not_ready_while_still_serving() {
    let (origin, _seen, _server) = spawn_origin().await;
    let edge = spawn_edge_with(origin, |c| c.stop_delay_ms = 3000).await;
    let (addr, admin) = (edge.addr(), edge.admin());
    let ready =
        async || reqwest::get(format!("http://{admin}/readyz")).await.map(|r| r.status().as_u16()).ok();
    assert_eq!(ready().await, Some(200));
    let stopping = tokio::spawn(edge.stop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ready().await != Some(503) {
        assert!(std::time::Instant::now() < deadline, "/readyz did not turn 503");
        tokio::task::yield_now().await;
    }
    let r = reqwest::get(format!("http://{addr}/fresh")).await.expect("still serving during the delay");
    assert_eq!(r.status(), 200);
    stopping.await.unwrap();
    assert!(reqwest::get(format!("http://{addr}/fresh")).await.is_err(), "closed after the delay");
}

/// Without the host in the cache key, one site under two names stores an object
/// once; with it (the default), twice.
#[tokio::test]
async fn the_host_is_part_of_the_cache_key_unless_turned_off() {
    let (origin, seen, _server) = spawn_origin().await;
    for (host_in_key, fetches) in [(true, 2), (false, 1)] {
        let edge = spawn_edge_with(origin, |c| c.host_in_key = host_in_key).await;
        let path = if host_in_key { "/fresh" } else { "/tagged/a" };
        for host in ["cdn.example", "127.0.0.1"] {
            let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            assert_eq!(raw(&edge, &head).await.0, 200);
        }
        assert_eq!(seen.requests(path), fetches, "host in key: {host_in_key}");
        edge.stop().await;
    }
}

#[tokio::test]
async fn an_object_over_the_size_limit_is_served_but_not_kept() {
    let (origin, seen, _server) = spawn_origin().await;
    let edge = spawn_edge_with(origin, |c| {
        c.max_object_bytes = 16;
        c.typical_object_bytes = 16;
    })
    .await;
    for _ in 0..2 {
        let (status, _, body, _) = get(&edge, "/big", &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "0123456789abcdefghij"), "20 bytes, whole");
    }
    assert_eq!(seen.requests("/big"), 2, "fetched each time");
    assert_eq!(edge.stored().1, 0);
    // A small one still is.
    get(&edge, "/fresh", &[]).await;
    assert_eq!(get(&edge, "/fresh", &[]).await.1, "HIT");
    edge.stop().await;
}

#[tokio::test]
async fn origin_fetches_are_bounded() {
    let (origin, seen, _server) = spawn_origin().await;
    let edge = Arc::new(
        spawn_edge_with(origin, |c| {
            c.max_origin_fetches = 1;
            c.origin_queue_ms = 200;
        })
        .await,
    );
    // One fetch holds the only slot (the origin keeps it waiting) ...
    let held = tokio::spawn({
        let edge = edge.clone();
        async move { get(&edge, "/slow", &[]).await }
    });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.requests("/slow") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the origin was never asked");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // ... so a miss of another object waits for a slot, then gets a 503 without
    // reaching the origin; a cached object is still served.
    let (status, _, _, _) = get(&edge, "/fresh", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.requests("/fresh"), 0);
    assert_eq!(edge.metrics().origin_busy.get(), 1);
    seen.gate.add_permits(1);
    assert_eq!(held.await.unwrap().0, StatusCode::OK);
    let (status, cache, _, _) = get(&edge, "/fresh", &[]).await;
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "MISS"), "the slot is free again");
    assert_eq!(get(&edge, "/slow", &[]).await.1, "HIT");
    Arc::into_inner(edge).unwrap().stop().await;
}

#[test]
fn bad_configurations_are_refused_with_a_message() {
    let ok = "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\norigin = \"127.0.0.1:8080\"\n";
    assert!(CdnConfig::parse(ok, "t").is_ok());
    for (text, says) in [
        ("listen = \"127.0.0.1:8080\"\nadmin = \"127.0.0.1:0\"\norigin = \"127.0.0.1:8080\"\n", "origin"),
        ("listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\norigin = \"127.0.0.1:0\"\n", "origin"),
        ("listen = \"127.0.0.1:81\"\nadmin = \"127.0.0.1:81\"\norigin = \"127.0.0.1:80\"\n", "admin"),
        ("listen = \"127.0.0.1:0\"\norigin = \"127.0.0.1:80\"\n", "admin"),
        (&format!("{ok}admin_token = \"short\"\n"), "admin_token"),
        (&format!("{ok}memory_bytes = 1000\n"), "memory_bytes"),
        (&format!("{ok}max_object_bytes = 0\n"), "max_object_bytes"),
        (&format!("{ok}max_object_bytes = 100000000\n"), "max_object_bytes"),
        (&format!("{ok}coalesce_timeout_ms = 0\n"), "coalesce_timeout_ms"),
        (&format!("{ok}max_origin_fetches = 0\n"), "max_origin_fetches"),
        (&format!("{ok}threads = 0\n"), "threads"),
        (&format!("{ok}origin_queue_ms = 0\n"), "origin_queue_ms"),
        (&format!("{ok}max_request_head_bytes = 10\n"), "max_request_head_bytes"),
        (&format!("{ok}colour = \"blue\"\n"), "unknown field"),
        (&format!("{ok}paths = [\"media/\"]\n"), "paths"),
        (&format!("{ok}stop_delay_ms = 60001\n"), "stop_delay_ms"),
        (&format!("{ok}paths = [\"/a/../b/\"]\n"), "paths"),
        (&format!("{ok}paths = [\"/a%2f\"]\n"), "paths"),
        ("listen = \"nowhere\"\nadmin = \"127.0.0.1:0\"\norigin = \"127.0.0.1:8080\"\n", "listen"),
    ] {
        let e = CdnConfig::parse(text, "t").unwrap_err().to_string();
        assert!(e.contains(says), "{text}: {e}");
    }
}

/// A test CA and the directory the edge reads its certificate and key from
/// (made by rcgen; no key is ever committed).
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "edge test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        Pki { ca, dir: tempfile::tempdir().unwrap() }
    }

    /// A new certificate for `localhost` and 127.0.0.1 and its key (PEM), and
    /// the certificate's DER.
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn cert_path(&self) -> std::path::PathBuf {
        self.dir.path().join("edge.pem")
    }

    fn key_path(&self) -> std::path::PathBuf {
        self.dir.path().join("edge.key")
    }

    /// Write a certificate and key where the edge reads them.
    fn install(&self, cert: &str, key: &str) {
        std::fs::write(self.cert_path(), cert).unwrap();
        std::fs::write(self.key_path(), key).unwrap();
    }

    /// A client trusting the CA.
    fn client(&self) -> reqwest::ClientBuilder {
        let root = reqwest::Certificate::from_pem(self.ca.pem().as_bytes()).unwrap();
        reqwest::Client::builder().add_root_certificate(root).tls_info(true)
    }

    fn section(&self) -> cdn::TlsSection {
        cdn::TlsSection {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: self.cert_path(),
            key: self.key_path(),
        }
    }
}

/// One GET over HTTPS: status, HTTP version, `X-Cache`, body, the server's certificate.
async fn get_https(
    client: &reqwest::Client,
    edge: &Running,
    path: &str,
) -> (StatusCode, reqwest::Version, String, String, Vec<u8>) {
    let port = edge.tls().expect("an HTTPS listener").port();
    let r = client.get(format!("https://localhost:{port}{path}")).send().await.unwrap();
    let shown = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap().peer_certificate().unwrap().to_vec();
    let cache = r.headers().get("x-cache").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (r.status(), r.version(), cache, r.text().await.unwrap(), shown)
}

/// `POST /admin/tls/reload` with the token: status and body.
async fn reload_tls(edge: &Running) -> (StatusCode, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/tls/reload", edge.admin()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn https_through_the_edge_is_cached_and_its_certificate_reloads() {
    let (origin, seen, _server) = spawn_origin().await;
    let pki = Pki::new();
    let (cert, key, der) = pki.leaf();
    pki.install(&cert, &key);
    let edge = spawn_edge_with(origin, |c| {
        c.tls = Some(pki.section());
        c.admin_token = Some(TOKEN.into());
    })
    .await;
    assert_ne!(edge.tls(), Some(edge.addr()));
    // HTTP/1.1, then HTTP/2 (ALPN), then plain HTTP: one object, one origin fetch.
    let h1 = pki.client().http1_only().build().unwrap();
    let (status, version, cache, body, shown) = get_https(&h1, &edge, "/fresh").await;
    assert_eq!((status, version), (StatusCode::OK, reqwest::Version::HTTP_11));
    assert_eq!((cache.as_str(), body.as_str(), shown), ("MISS", "fresh body", der));
    let h2 = pki.client().build().unwrap();
    let (status, version, cache, body, _) = get_https(&h2, &edge, "/fresh").await;
    assert_eq!((status, version), (StatusCode::OK, reqwest::Version::HTTP_2), "chosen by ALPN");
    assert_eq!((cache.as_str(), body.as_str()), ("HIT", "fresh body"));
    let (_, cache, _, _) = get(&edge, "/fresh", &[]).await;
    assert_eq!(cache, "MISS", "the plain listener's Host differs: another key");
    assert_eq!(seen.requests("/fresh"), 2);
    assert_eq!(edge.metrics().count(Outcome::hit), 1);

    // Not TLS on the HTTPS port: the handshake fails, counted.
    let (status, _) = raw_to(edge.tls().unwrap(), "GET /fresh HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 0, "no HTTP answer on the HTTPS port");
    // (The connection is dropped as the handshake fails, maybe before it is counted.)
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text =
            reqwest::get(format!("http://{}/metrics", edge.admin())).await.unwrap().text().await.unwrap();
        if text.contains("millions_cdn_tls_handshake_failures_total{reason=\"error\"} 1") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the failed handshake was never counted:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // A reload: refused without the token; a key of another certificate is
    // refused and the one in force stays; a new good pair is served.
    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/tls/reload", edge.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (new_cert, new_key, new_der) = pki.leaf();
    pki.install(&new_cert, &key);
    let (status, body) = reload_tls(&edge).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not the certificate's"), "{body}");
    let fresh_client = || pki.client().build().unwrap();
    assert_ne!(get_https(&fresh_client(), &edge, "/fresh").await.4, new_der, "the old one stays");
    pki.install(&new_cert, &new_key);
    let (status, body) = reload_tls(&edge).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["chain_len"], 1);
    assert_eq!(get_https(&fresh_client(), &edge, "/fresh").await.4, new_der, "new handshakes use it");
    assert_eq!(edge.certificates().unwrap().info().sha256, body["sha256"].as_str().unwrap());
    // Both clients still hold their connections: a stop closes them (the
    // HTTP/1.1 one idle between requests, the HTTP/2 one by GOAWAY) without
    // waiting out the grace period.
    let stopping = std::time::Instant::now();
    edge.stop().await;
    assert!(stopping.elapsed() < cdn::GRACE, "a stop waited {:?} on idle connections", stopping.elapsed());
    drop((h1, h2));
}

#[tokio::test]
async fn without_tls_the_reload_says_so() {
    let (origin, _seen, _server) = spawn_origin().await;
    let edge = spawn_edge_with(origin, |c| c.admin_token = Some(TOKEN.into())).await;
    assert_eq!(edge.tls(), None);
    assert!(edge.reload_tls().is_none());
    let (status, body) = reload_tls(&edge).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("tls_not_configured")));
    edge.stop().await;
}

#[tokio::test]
async fn a_bad_certificate_or_key_is_refused_before_any_port_is_bound() {
    let pki = Pki::new();
    let (cert, key, _) = pki.leaf();
    let (other_cert, _, _) = pki.leaf();
    // The public port is taken: an edge that bound before reading its
    // certificate would fail to bind, not on the certificate.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    for (cert_pem, key_pem, says) in [
        (None, Some(key.as_str()), "cannot read certificate"),
        (Some(cert.as_str()), None, "cannot read key"),
        (Some("not a certificate"), Some(key.as_str()), "no CERTIFICATE"),
        (Some(cert.as_str()), Some("not a key"), "not a PEM private key"),
        (Some(other_cert.as_str()), Some(key.as_str()), "the key is not the certificate's"),
    ] {
        let _ = std::fs::remove_file(pki.cert_path());
        let _ = std::fs::remove_file(pki.key_path());
        if let Some(c) = cert_pem {
            std::fs::write(pki.cert_path(), c).unwrap();
        }
        if let Some(k) = key_pem {
            std::fs::write(pki.key_path(), k).unwrap();
        }
        let mut config =
            CdnConfig::new(taken.local_addr().unwrap(), any, SocketAddr::from(([127, 0, 0, 1], 9)));
        config.tls = Some(pki.section());
        let e = match cdn::start(config).await {
            Ok(_) => panic!("an edge started with {says}"),
            Err(e) => e,
        };
        assert!(matches!(e, cdn::CdnError::Tls(_)), "{says}: {e}");
        let message = e.to_string();
        assert!(message.contains(says), "{message}");
        assert!(message.contains(pki.dir.path().to_str().unwrap()), "names the file: {message}");
    }
}

/// An address nothing listens on: a port bound, then let go.
fn down() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[tokio::test]
async fn fetches_take_the_origins_in_turn() {
    let (a, seen_a, _server_a) = spawn_origin().await;
    let (b, seen_b, _server_b) = spawn_origin().await;
    let edge = spawn_edge(vec![a, b]).await;
    for p in ["/tagged/a", "/tagged/b", "/tagged/c", "/fresh"] {
        let (status, cache, _, _) = get(&edge, p, &[]).await;
        assert_eq!((status, cache.as_str()), (StatusCode::OK, "MISS"), "{p}");
    }
    let asked = |seen: &Seen| ["/tagged/a", "/tagged/b", "/tagged/c", "/fresh"].map(|p| seen.requests(p));
    assert_eq!((asked(&seen_a), asked(&seen_b)), ([1, 0, 1, 0], [0, 1, 0, 1]));
    edge.stop().await;
}

#[tokio::test]
async fn an_origin_that_cannot_be_connected_to_is_passed_over() {
    let (up, seen, _server) = spawn_origin().await;
    let gone = down();
    let edge = spawn_edge(vec![gone, up]).await;
    // The first fetch starts at the dead origin and moves on; so does every
    // other one, so each object is served.
    for p in ["/tagged/a", "/tagged/b", "/tagged/c", "/fresh"] {
        let (status, cache, _, _) = get(&edge, p, &[]).await;
        assert_eq!((status, cache.as_str()), (StatusCode::OK, "MISS"), "{p}");
        assert_eq!(seen.requests(p), 1, "{p}");
        assert_eq!(get(&edge, p, &[]).await.1, "HIT", "{p}");
    }
    let text = reqwest::get(format!("http://{}/metrics", edge.admin())).await.unwrap().text().await.unwrap();
    let line = format!("millions_cdn_origin_connect_failures_total{{origin=\"{gone}\"}} 2");
    assert!(text.contains(&line), "two of the four fetches started at {gone}: {line} not in\n{text}");
    edge.stop().await;

    // Every origin down: each tried once, then a 502.
    let (a, b) = (down(), down());
    let edge = spawn_edge(vec![a, b]).await;
    let (status, _, _, _) = get(&edge, "/fresh", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let text = reqwest::get(format!("http://{}/metrics", edge.admin())).await.unwrap().text().await.unwrap();
    for o in [a, b] {
        let line = format!("millions_cdn_origin_connect_failures_total{{origin=\"{o}\"}} 1");
        assert!(text.contains(&line), "{line} not in\n{text}");
    }
    edge.stop().await;
}

#[test]
fn origins_and_tls_in_the_configuration() {
    let head = "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n";
    let one = CdnConfig::parse(&format!("{head}origin = \"127.0.0.1:8080\"\n"), "t").unwrap();
    assert_eq!(one.origin.addrs(), ["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]);
    assert!(one.tls.is_none());
    let text = format!(
        "{head}origin = [\"10.0.0.1:8080\", \"10.0.0.2:8080\"]\n\
         [tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"/etc/edge.pem\"\nkey = \"/etc/edge.key\"\n"
    );
    let two = CdnConfig::parse(&text, "t").unwrap();
    let addrs: Vec<SocketAddr> = vec!["10.0.0.1:8080".parse().unwrap(), "10.0.0.2:8080".parse().unwrap()];
    assert_eq!(two.origin.addrs(), addrs.as_slice());
    let tls = two.tls.clone().unwrap();
    assert_eq!(
        (tls.listen.port(), tls.cert.to_str(), tls.key.to_str()),
        (8443, Some("/etc/edge.pem"), Some("/etc/edge.key"))
    );
    // Written back as read: one origin as a string, several as a list.
    for c in [&one, &two] {
        let again = CdnConfig::parse(&c.to_toml(), "t").unwrap();
        assert_eq!((&again.origin, &again.tls), (&c.origin, &c.tls));
    }
    assert!(one.to_toml().contains("origin = \"127.0.0.1:8080\""), "{}", one.to_toml());

    let tls = |body: &str| format!("{head}origin = \"127.0.0.1:8080\"\n[tls]\n{body}");
    for (text, says) in [
        (format!("{head}origin = []\n"), "origin: names no origin"),
        (format!("{head}origin = [\"127.0.0.1:80\", \"127.0.0.1:80\"]\n"), "listed twice"),
        (format!("{head}origin = [\"127.0.0.1:80\", \"nowhere\"]\n"), "\"nowhere\" is not ip:port"),
        (format!("{head}origin = \"nowhere\"\n"), "\"nowhere\" is not ip:port"),
        (format!("{head}origin = 80\n"), "an address \"ip:port\" or an array of them"),
        (format!("{head}origin = [\"127.0.0.1:80\", \"127.0.0.1:0\"]\n"), "needs a port"),
        (
            "listen = \"127.0.0.1:81\"\nadmin = \"127.0.0.1:0\"\norigin = [\"127.0.0.1:80\", \"127.0.0.1:81\"]\n"
                .to_owned(),
            "127.0.0.1:81 is the edge's own listener",
        ),
        (tls("listen = \"127.0.0.1:8443\"\ncert = \"c\"\n"), "missing field `key`"),
        (tls("listen = \"127.0.0.1:8443\"\ncert = \"\"\nkey = \"k\"\n"), "tls.cert"),
        (tls("listen = \"127.0.0.1:8443\"\ncert = \"c\"\nkey = \"k\"\nhsts_max_age_secs = 1\n"), "unknown field"),
        (
            "listen = \"127.0.0.1:81\"\nadmin = \"127.0.0.1:0\"\norigin = \"127.0.0.1:80\"\n[tls]\nlisten = \"127.0.0.1:81\"\ncert = \"c\"\nkey = \"k\"\n".to_owned(),
            "tls.listen",
        ),
        (
            format!("{head}origin = \"127.0.0.1:8443\"\n[tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"c\"\nkey = \"k\"\n"),
            "the edge's own listener",
        ),
    ] {
        let e = CdnConfig::parse(&text, "t").unwrap_err().to_string();
        assert!(e.contains(says), "{text}: {e}");
    }
}

#[tokio::test]
async fn start_refuses_a_configuration_that_cannot_run() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let e = match cdn::start(CdnConfig::new(any, any, Vec::<SocketAddr>::new())).await {
        Ok(_) => panic!("an edge started without an origin"),
        Err(e) => e,
    };
    assert!(matches!(e, cdn::CdnError::Config(_)), "{e}");
    assert!(e.to_string().contains("origin: names no origin"), "{e}");
}
