//! The edge against a real origin (an axum server on port 0 that counts what it
//! is asked): what is cached, for how long, revalidated, coalesced, invalidated.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use cdn::{CdnConfig, Running};
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

async fn spawn_edge(origin: SocketAddr) -> Running {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    cdn::start(CdnConfig::new(listen, origin)).await.unwrap()
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
    assert_eq!(edge.stats().hits.load(std::sync::atomic::Ordering::Relaxed), 1);
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

#[test]
fn bad_configurations_are_refused_with_a_message() {
    let ok = "listen = \"127.0.0.1:0\"\norigin = \"127.0.0.1:8080\"\n";
    assert!(CdnConfig::parse(ok, "t").is_ok());
    for (text, says) in [
        ("listen = \"127.0.0.1:8080\"\norigin = \"127.0.0.1:8080\"\n", "origin"),
        ("listen = \"127.0.0.1:0\"\norigin = \"127.0.0.1:0\"\n", "origin"),
        (&format!("{ok}memory_bytes = 1000\n"), "memory_bytes"),
        (&format!("{ok}max_object_bytes = 0\n"), "max_object_bytes"),
        (&format!("{ok}max_object_bytes = 100000000\n"), "max_object_bytes"),
        (&format!("{ok}coalesce_timeout_ms = 0\n"), "coalesce_timeout_ms"),
        (&format!("{ok}colour = \"blue\"\n"), "unknown field"),
        ("listen = \"nowhere\"\norigin = \"127.0.0.1:8080\"\n", "listen"),
    ] {
        let e = CdnConfig::parse(text, "t").unwrap_err().to_string();
        assert!(e.contains(says), "{text}: {e}");
    }
}
