//! Nothing internal through the public entry. Every route any process of the
//! workspace registers is found in the sources and must be either internal by
//! [`lb::rules::INTERNAL_PATHS`] or listed below as public ([`PUBLIC_ROUTES`]);
//! then every internal path, spelled many ways, is requested with GET and POST
//! through each public listener (plain HTTP without TLS, HTTPS with HTTP/1.1 and
//! HTTP/2, and the plain port that redirects when TLS is on). None may reach the
//! backend, whose every answer is "internal content".

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use lb::config::TlsSection;
use lb::rules::is_internal;
use lb::{LbConfig, Running};
use support::{Pki, raw_https};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The routes served to the public, as their source registers them (file from
/// the workspace's root, path literal). A route is public only if listed here;
/// any other must be internal by `lb::rules::INTERNAL_PATHS`.
const PUBLIC_ROUTES: &[(&str, &str)] = &[
    ("crates/web/src/lib.rs", "/api/v1"),
    ("crates/web/src/lib.rs", "/media/{key}"),
    ("crates/web/src/api.rs", "/openapi.json"),
    ("crates/web/src/api.rs", "/users"),
    ("crates/web/src/api.rs", "/users/{username}"),
    ("crates/web/src/api.rs", "/users/{username}/follow"),
    ("crates/web/src/api.rs", "/users/me"),
    ("crates/web/src/api.rs", "/users/{username}/posts"),
    ("crates/web/src/api.rs", "/users/{username}/followers"),
    ("crates/web/src/api.rs", "/users/{username}/following"),
    ("crates/web/src/api.rs", "/notifications"),
    ("crates/web/src/api.rs", "/notifications/unread"),
    ("crates/web/src/api.rs", "/notifications/read"),
    ("crates/web/src/api.rs", "/sessions"),
    ("crates/web/src/api.rs", "/sessions/current"),
    ("crates/web/src/api.rs", "/posts"),
    ("crates/web/src/api.rs", "/posts/{id}"),
    ("crates/web/src/api.rs", "/posts/{id}/like"),
    ("crates/web/src/api.rs", "/posts/{id}/comments"),
    ("crates/web/src/api.rs", "/comments/{id}"),
    ("crates/web/src/api.rs", "/users/me/avatar"),
    ("crates/web/src/api.rs", "/feed"),
    ("crates/web/src/api.rs", "/search/users"),
    ("crates/web/src/api.rs", "/suggestions"),
    ("crates/web/src/api.rs", "/explore"),
    ("crates/web/src/html/mod.rs", "/"),
    ("crates/web/src/html/mod.rs", "/signup"),
    ("crates/web/src/html/mod.rs", "/login"),
    ("crates/web/src/html/mod.rs", "/logout"),
    ("crates/web/src/html/mod.rs", "/u/{username}"),
    ("crates/web/src/html/mod.rs", "/u/{username}/follow"),
    ("crates/web/src/html/mod.rs", "/u/{username}/followers"),
    ("crates/web/src/html/mod.rs", "/u/{username}/following"),
    ("crates/web/src/html/mod.rs", "/settings/profile"),
    ("crates/web/src/html/mod.rs", "/notifications"),
    ("crates/web/src/html/mod.rs", "/p/{id}"),
    ("crates/web/src/html/mod.rs", "/p/{id}/like"),
    ("crates/web/src/html/mod.rs", "/p/{id}/delete"),
    ("crates/web/src/html/mod.rs", "/settings/avatar"),
    ("crates/web/src/html/mod.rs", "/static/app.js"),
    ("crates/web/src/html/mod.rs", "/p/{id}/comments"),
    ("crates/web/src/html/mod.rs", "/p/{id}/comments/{comment}/delete"),
    ("crates/web/src/html/mod.rs", "/upload"),
    ("crates/web/src/html/mod.rs", "/search"),
    ("crates/web/src/html/mod.rs", "/explore"),
];

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The string literals that open the calls `call` (`.route(`) in `text`.
fn literals<'t>(text: &'t str, call: &str) -> Vec<&'t str> {
    text.match_indices(call)
        .filter_map(|(at, _)| {
            let rest = text[at + call.len()..].trim_start().strip_prefix('"')?;
            rest.split('"').next()
        })
        .collect()
}

/// A route registered in the workspace.
#[derive(Debug)]
struct Route {
    /// Its source file, from the workspace's root.
    file: String,
    /// The path literal, as written.
    path: String,
    /// The prefixes it may be served under: the `.nest(` literals of its file.
    nests: Vec<String>,
}

impl Route {
    /// Internal by the load balancer's rule, alone or under one of its file's nests.
    fn internal(&self) -> bool {
        is_internal(&self.path) || self.nests.iter().any(|n| is_internal(&format!("{n}{}", self.path)))
    }
}

/// Every route registered in the workspace's sources (axum's `.route(`,
/// `.route_service(`, `.nest(`, `.nest_service(`).
fn registered_routes() -> Vec<Route> {
    let root = root();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).unwrap() {
        let krate = krate.unwrap().path();
        // The test harness's stand-ins (a cluster-map endpoint) serve tests only,
        // never behind a load balancer.
        if krate.ends_with("testkit") {
            continue;
        }
        let src = krate.join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    let mut routes = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        let nests: Vec<String> =
            [".nest(", ".nest_service("].iter().flat_map(|c| literals(&text, c)).map(str::to_owned).collect();
        for call in [".route(", ".route_service(", ".nest(", ".nest_service("] {
            for path in literals(&text, call) {
                routes.push(Route { file: name.clone(), path: path.to_owned(), nests: nests.clone() });
            }
        }
    }
    routes
}

#[test]
fn every_route_in_the_workspace_is_listed_public_or_is_internal() {
    let routes = registered_routes();
    assert!(routes.len() > 40, "the scan finds the routes: {routes:?}");
    for r in &routes {
        let public = PUBLIC_ROUTES.contains(&(r.file.as_str(), r.path.as_str()));
        assert!(
            public || r.internal(),
            "{} registers {:?}, which the load balancer would forward from the public entry: if it is \
             internal, add its prefix to lb::rules::INTERNAL_PATHS; if it is for the public, to \
             PUBLIC_ROUTES in crates/lb/tests/internal.rs",
            r.file,
            r.path
        );
        assert!(!(public && r.internal()), "{} {:?} is listed public but is internal", r.file, r.path);
    }
    for (file, path) in PUBLIC_ROUTES {
        assert!(
            routes.iter().any(|r| r.file == *file && r.path == *path),
            "PUBLIC_ROUTES lists {file} {path:?}, which is no longer registered there"
        );
    }
}

/// Every internal path to try: the list's entries and every internal route
/// registered (under its nest where only that makes it internal), parameters
/// filled in.
fn internal_paths() -> BTreeSet<String> {
    let mut paths: BTreeSet<String> = lb::rules::INTERNAL_PATHS.iter().map(|p| p.to_string()).collect();
    for r in registered_routes().into_iter().filter(Route::internal) {
        let full = if is_internal(&r.path) {
            r.path.clone()
        } else {
            r.nests.iter().map(|n| format!("{n}{}", r.path)).find(|p| is_internal(p)).unwrap()
        };
        let filled: Vec<String> =
            full.split('/').map(|s| if s.starts_with('{') { "x".to_owned() } else { s.to_owned() }).collect();
        paths.insert(filled.join("/"));
    }
    paths
}

/// `path` spelled the ways a lenient server behind might still read as `path`.
fn spellings(path: &str) -> Vec<String> {
    let first = path.as_bytes()[1];
    let rest = &path[2..];
    vec![
        path.to_owned(),
        format!("{path}/"),
        format!("/{path}"),
        format!("/.{path}"),
        format!("/api/..{path}"),
        path.to_uppercase(),
        format!("/%{first:02x}{rest}"),
        format!("/%{first:02X}{rest}"),
        format!("/%25{first:02x}{rest}"),
        format!("{path}?x=1"),
        format!("{path};x=1"),
        // The absolute form: a web server (hyper, axum) routes it by its path,
        // so `GET http://host/metrics` once reached a web server's metrics.
        format!("http://localhost{path}"),
    ]
}

/// A backend whose every answer is internal content; counts what reaches it
/// (the load balancer's health probes aside).
async fn internal_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counted = hits.clone();
    let app = axum::Router::new().route("/readyz", axum::routing::get(|| async { "ready" })).fallback(
        move |req: axum::extract::Request| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { format!("internal content of {}", req.uri()) }
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn start(config: LbConfig) -> Running {
    tokio::task::block_in_place(|| lb::start(config)).expect("load balancer starts")
}

/// `request` over a new plain TCP connection; the whole answer.
async fn raw_plain(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// How an answer must look: the load balancer's own 404, or (the redirecting
/// port) its 308 or, for a target it will not put in a `Location`, its 400.
fn assert_refused(what: &str, status: u16, body: &str, redirecting: bool) {
    assert!(!body.contains("internal content"), "{what}: reached the backend: {body}");
    if redirecting {
        assert!(status == 308 || status == 400, "{what}: {status} {body}");
    } else {
        assert_eq!(status, 404, "{what}: {body}");
        assert!(body.contains("\"code\":\"not_found\""), "{what}: not the load balancer's 404: {body}");
    }
}

/// The status of a raw HTTP/1.1 answer.
fn raw_status(answer: &str) -> u16 {
    answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_internal_path_is_reachable_through_the_public_entry_however_spelled() {
    let (backend, hits) = internal_backend().await;
    let mut plain = LbConfig::new(any_port(), any_port(), vec![backend]);
    plain.rate_limit.per_second = 0;
    let pki = Pki::new();
    let leaf = pki.leaf();
    pki.install(&leaf.cert, &leaf.key);
    let mut secure = plain.clone();
    secure.tls = Some(TlsSection::new(any_port(), pki.cert_path(), pki.key_path()));
    let (plain, secure) = (start(plain), start(secure));
    let https_addr = secure.tls.unwrap();

    // The backend is in use: a public path reaches it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while raw_status(
        &raw_plain(plain.listen, b"GET /u/ann HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await,
    ) != 200
    {
        assert!(Instant::now() < deadline, "the backend never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = hits.load(Ordering::SeqCst);

    let paths = internal_paths();
    assert!(paths.contains("/admin/tls/reload") && paths.contains("/api/nodes/x/kill"), "{paths:?}");
    // Every spelling of the list's own entries; of the routes under them, the
    // path as registered, upper case and encoded (their prefix is what is judged).
    let listed = |p: &String| lb::rules::INTERNAL_PATHS.contains(&p.as_str());
    let targets: Vec<String> = paths
        .iter()
        .flat_map(|p| {
            let all = spellings(p);
            if listed(p) { all } else { [0, 5, 6].map(|i| all[i].clone()).to_vec() }
        })
        .collect();
    // HTTP/1.1, raw (so that every spelling goes out as written): plain HTTP,
    // HTTPS, and the port that redirects to HTTPS.
    let cases = targets.iter().flat_map(|t| ["GET", "POST"].map(move |m| (m, t.as_str())));
    let pki = &pki;
    futures::stream::iter(cases)
        .for_each_concurrent(8, |(method, target)| async move {
            let request = format!(
                "{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            for (entry, answer, redirecting) in [
                ("plain", raw_plain(plain.listen, request.as_bytes()).await, false),
                ("https", raw_https(pki, https_addr, request.as_bytes()).await, false),
                ("redirect", raw_plain(secure.listen, request.as_bytes()).await, true),
            ] {
                let what = format!("HTTP/1.1 {entry} {method} {target}");
                let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                assert_refused(&what, raw_status(&answer), body, redirecting);
            }
        })
        .await;

    // HTTP/2, cleartext and over TLS (the client normalizes dot segments and
    // sends origin form only).
    let h2c = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let h2 = reqwest::Client::builder().add_root_certificate(pki.root()).build().unwrap();
    let bases = [
        (&h2c, format!("http://localhost:{}", plain.listen.port())),
        (&h2, format!("https://localhost:{}", https_addr.port())),
    ];
    let cases = targets.iter().filter(|t| t.starts_with('/')).flat_map(|t| {
        bases.iter().flat_map(move |(client, base)| {
            [reqwest::Method::GET, reqwest::Method::POST].map(|m| (*client, base, m, t))
        })
    });
    futures::stream::iter(cases)
        .for_each_concurrent(8, |(client, base, method, target)| async move {
            let r = client.request(method.clone(), format!("{base}{target}")).send().await.unwrap();
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert_refused(&format!("HTTP/2 {base} {method} {target}"), status, &body, false);
        })
        .await;
    assert_eq!(hits.load(Ordering::SeqCst), before, "an internal path reached the backend");
}
