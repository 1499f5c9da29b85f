//! The disk tier against real origins (axum servers on port 0 that count what
//! they are asked): what survives a restart, what purges do to it, bad files,
//! the budget, and configurations refused before any port is bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use cdn::{CdnConfig, DiskSection, Running};

/// The Host every request carries: an object's key names it, and a restarted
/// edge listens on another port.
const HOST: &str = "cdn.test";
const TOKEN: &str = "a-token-long-enough-for-the-guard";

/// What an origin saw: requests and conditional requests per path.
#[derive(Default)]
struct Seen {
    requests: Mutex<HashMap<String, usize>>,
    conditional: Mutex<HashMap<String, usize>>,
}

impl Seen {
    fn requests(&self, path: &str) -> usize {
        self.requests.lock().unwrap().get(path).copied().unwrap_or(0)
    }
    fn conditional(&self, path: &str) -> usize {
        self.conditional.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// `/p/{name}`: fresh for a minute, `ETag` its name, tagged `tag-{name}` and
/// `all`; a matching `If-None-Match` is answered 304. `/blob/{n}`: 200 KiB.
async fn origin(State(seen): State<Arc<Seen>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    *seen.requests.lock().unwrap().entry(path.clone()).or_default() += 1;
    let cc = (header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    if let Some(name) = path.strip_prefix("/p/") {
        let etag = format!("\"{name}\"");
        if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
            *seen.conditional.lock().unwrap().entry(path.clone()).or_default() += 1;
            return (StatusCode::NOT_MODIFIED, [cc, (header::ETAG, etag.parse().unwrap())]).into_response();
        }
        let tags = format!("tag-{name} all");
        let headers = [
            cc,
            (header::ETAG, etag.parse().unwrap()),
            (header::HeaderName::from_static("surrogate-key"), tags.parse().unwrap()),
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
        ];
        return (headers, format!("body of {path}")).into_response();
    }
    if path.starts_with("/blob/") {
        return ([cc], vec![b'x'; 200 << 10]).into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

/// An origin on a free port, what it saw, and its task (abort it to stop it).
async fn spawn_origin() -> (SocketAddr, Arc<Seen>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new().fallback(origin).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen, server)
}

/// Stop an origin: its port refuses connections afterwards.
async fn stop_origin(server: tokio::task::JoinHandle<()>) {
    server.abort();
    let _ = server.await;
}

fn config(origin: SocketAddr, dir: &Path, bytes: u64) -> CdnConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut c = CdnConfig::new(any, any, origin);
    c.admin_token = Some(TOKEN.into());
    c.disk = Some(DiskSection { dir: dir.to_owned(), bytes });
    c
}

async fn edge(origin: SocketAddr, dir: &Path) -> Running {
    cdn::start(config(origin, dir, 64 << 20)).await.unwrap()
}

/// One GET through the edge: status, `X-Cache`, body.
async fn get(edge: &Running, path: &str) -> (StatusCode, String, String) {
    let r = reqwest::Client::new()
        .get(format!("http://{}{path}", edge.addr()))
        .header(header::HOST, HOST)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let cache = r.headers().get("x-cache").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, cache, r.text().await.unwrap())
}

async fn purge(edge: &Running, body: serde_json::Value) -> u64 {
    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/purge", edge.admin()))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<serde_json::Value>().await.unwrap()["purged"].as_u64().unwrap()
}

async fn metrics(edge: &Running) -> String {
    reqwest::get(format!("http://{}/metrics", edge.admin())).await.unwrap().text().await.unwrap()
}

/// The object files in `dir`.
fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "obj"))
        .collect();
    files.sort();
    files
}

/// The file holding the object of `path` (each file carries its request path).
fn file_of(dir: &Path, path: &str) -> PathBuf {
    let needle = path.as_bytes();
    objects(dir)
        .into_iter()
        .find(|f| std::fs::read(f).unwrap().windows(needle.len()).any(|w| w == needle))
        .unwrap_or_else(|| panic!("no file holds {path}"))
}

#[tokio::test]
async fn a_restarted_edge_serves_its_disk_tier_and_purges_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let (origin1, seen1, server1) = spawn_origin().await;
    let first = edge(origin1, dir.path()).await;
    for p in ["/p/a", "/p/b", "/p/c", "/p/d"] {
        assert_eq!(get(&first, p).await.1, "MISS", "{p}");
    }
    // A stop finishes the queued writes.
    first.stop().await;
    assert_eq!(objects(dir.path()).len(), 4);
    stop_origin(server1).await;

    // The origin is down: what the new edge serves comes from its disk.
    let second = edge(origin1, dir.path()).await;
    assert_eq!(second.disk_stored().unwrap().1, 4, "the index was rebuilt from the files");
    let (status, cache, body) = get(&second, "/p/a").await;
    assert_eq!((status, cache.as_str(), body.as_str()), (StatusCode::OK, "HIT", "body of /p/a"));
    assert_eq!(get(&second, "/p/a").await.1, "HIT", "now from memory");
    assert_eq!(seen1.requests("/p/a"), 1, "fetched once, by the first edge");
    let text = metrics(&second).await;
    for line in ["millions_cdn_disk_hits_total 1", "millions_cdn_disk_stored_objects 4"] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    // Purges of objects in memory and on disk (a), and on disk only (b, d).
    assert_eq!(purge(&second, serde_json::json!({"paths": ["/p/a"]})).await, 1);
    assert_eq!(purge(&second, serde_json::json!({"tags": ["tag-b"], "soft": true})).await, 1);
    assert_eq!(purge(&second, serde_json::json!({"prefixes": ["/p/d"]})).await, 1);
    // When a purge has answered, the files are gone.
    assert_eq!(objects(dir.path()).len(), 2);
    second.stop().await;

    // Up again (a new origin): the hard-purged are fetched, the soft-purged
    // revalidated, the rest served from disk.
    let (origin2, seen2, _server2) = spawn_origin().await;
    let third = edge(origin2, dir.path()).await;
    assert_eq!(get(&third, "/p/a").await.1, "MISS");
    assert_eq!(get(&third, "/p/d").await.1, "MISS");
    let (status, cache, body) = get(&third, "/p/b").await;
    assert_eq!((status, cache.as_str(), body.as_str()), (StatusCode::OK, "REVALIDATED", "body of /p/b"));
    assert_eq!((seen2.requests("/p/b"), seen2.conditional("/p/b")), (1, 1), "asked with its validator");
    assert_eq!(get(&third, "/p/c").await.1, "HIT");
    assert_eq!(seen2.requests("/p/c"), 0);
    third.stop().await;

    // The revalidation reached the disk copy: fresh after another restart.
    let fourth = edge(origin2, dir.path()).await;
    for p in ["/p/a", "/p/b", "/p/c", "/p/d"] {
        assert_eq!(get(&fourth, p).await.1, "HIT", "{p}");
    }
    assert_eq!(seen2.requests("/p/b") + seen2.requests("/p/c"), 1);
    fourth.stop().await;
}

#[tokio::test]
async fn bad_files_are_skipped_and_removed_and_the_edge_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, seen, _server) = spawn_origin().await;
    let first = edge(origin, dir.path()).await;
    for p in ["/p/truncated", "/p/corrupt", "/p/rotten", "/p/good"] {
        get(&first, p).await;
    }
    first.stop().await;
    // Truncated; a byte of its head changed; a byte of its body changed (found
    // only when read); a file of ours by name that is not ours by content; a
    // file being written when the edge stopped; someone else's file.
    let truncated = file_of(dir.path(), "/p/truncated");
    let len = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&truncated).unwrap().set_len(len / 2).unwrap();
    let corrupt = file_of(dir.path(), "/p/corrupt");
    let mut bytes = std::fs::read(&corrupt).unwrap();
    let at = bytes.windows(10).position(|w| w == b"/p/corrupt").unwrap();
    bytes[at + 3] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    let rotten = file_of(dir.path(), "/p/rotten");
    let mut bytes = std::fs::read(&rotten).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    std::fs::write(&rotten, bytes).unwrap();
    let foreign = dir.path().join(format!("{}.obj", "0".repeat(32)));
    std::fs::write(&foreign, b"not an object of the edge").unwrap();
    let leftover = dir.path().join(format!("{}.7.tmp", "1".repeat(32)));
    std::fs::write(&leftover, b"half").unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, b"someone else's").unwrap();

    let second = edge(origin, dir.path()).await;
    for gone in [&truncated, &corrupt, &foreign, &leftover] {
        assert!(!gone.exists(), "{} was removed", gone.display());
    }
    assert!(notes.exists(), "a file not named like the edge's is left alone");
    assert_eq!(second.disk_stored().unwrap().1, 2, "the rotten body passes the scan (its head is good)");
    assert_eq!(get(&second, "/p/good").await.1, "HIT");
    for p in ["/p/truncated", "/p/corrupt", "/p/rotten"] {
        let (status, cache, body) = get(&second, p).await;
        assert_eq!((status, cache.as_str(), body), (StatusCode::OK, "MISS", format!("body of {p}")));
        assert_eq!(seen.requests(p), 2, "{p} fetched again");
    }
    let text = metrics(&second).await;
    for line in
        ["millions_cdn_disk_errors_total{op=\"scan\"} 3", "millions_cdn_disk_errors_total{op=\"read\"} 1"]
    {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    second.stop().await;
    assert_eq!(objects(dir.path()).len(), 4, "the three fetched again are stored again");
}

#[tokio::test]
async fn the_disk_budget_is_kept_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, seen, _server) = spawn_origin().await;
    let budget = 1 << 20;
    let mut c = config(origin, dir.path(), budget);
    c.max_object_bytes = 256 << 10;
    let first = cdn::start(c.clone()).await.unwrap();
    // Eight objects of 200 KiB: 1.6 MB through a 1 MiB budget.
    for n in 0..8 {
        assert_eq!(get(&first, &format!("/blob/{n}")).await.1, "MISS");
    }
    let counted = first.metrics().clone();
    first.stop().await;
    let on_disk: u64 = objects(dir.path()).iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert!(on_disk <= budget, "{on_disk} bytes on disk, over {budget}");
    // Five files of a little over 200 KiB fit; three were evicted.
    assert_eq!(objects(dir.path()).len(), 5);
    assert_eq!((counted.disk_writes.get(), counted.disk_evictions.get()), (8, 3));

    let second = cdn::start(c).await.unwrap();
    assert_eq!(get(&second, "/blob/7").await.1, "HIT", "the newest stays");
    assert_eq!(get(&second, "/blob/0").await.1, "MISS", "the oldest went first");
    assert_eq!((seen.requests("/blob/7"), seen.requests("/blob/0")), (1, 2));
    second.stop().await;
}

#[tokio::test]
async fn a_disk_directory_that_cannot_be_used_is_refused_before_any_port_is_bound() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    // The public port is taken: an edge that bound before checking its
    // directory would fail to bind, not on the directory.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let refuse = async |dir: &Path, says: &str| {
        let mut c = config(origin, dir, 64 << 20);
        c.listen = taken.local_addr().unwrap();
        let e = match cdn::start(c).await {
            Ok(_) => panic!("an edge started on {}", dir.display()),
            Err(e) => e,
        };
        assert!(matches!(e, cdn::CdnError::Disk(_)), "{e}");
        let message = e.to_string();
        assert!(message.contains(says) && message.contains(dir.to_str().unwrap()), "{message}");
    };
    refuse(&file, "is not a directory").await;
    refuse(&file.join("below"), "cannot be read").await;
    // Not writable (unless this runs as root, which writes anyway).
    use std::os::unix::fs::PermissionsExt as _;
    let locked = scratch.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
    if std::fs::write(locked.join("probe"), b"").is_err() {
        refuse(&locked, "is not writable").await;
    }
    // A missing directory is created.
    let (origin, _seen, _server) = spawn_origin().await;
    let fresh = scratch.path().join("new/tier");
    let e = edge(origin, &fresh).await;
    assert!(fresh.is_dir());
    e.stop().await;
}

#[test]
fn the_disk_section_of_the_configuration() {
    let head = "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\norigin = \"127.0.0.1:8080\"\n";
    let c = CdnConfig::parse(head, "t").unwrap();
    assert!(c.disk.is_none(), "no [disk]: memory only");
    assert!(!c.to_toml().contains("[disk]"));
    let text = format!("{head}[disk]\ndir = \"/var/cache/edge\"\nbytes = 1073741824\n");
    let c = CdnConfig::parse(&text, "t").unwrap();
    let disk = DiskSection { dir: "/var/cache/edge".into(), bytes: 1 << 30 };
    assert_eq!(c.disk.as_ref(), Some(&disk));
    assert_eq!(CdnConfig::parse(&c.to_toml(), "t").unwrap().disk, Some(disk), "written back as read");
    for (body, says) in [
        ("dir = \"/d\"\n", "missing field `bytes`"),
        ("bytes = 1073741824\n", "missing field `dir`"),
        ("dir = \"\"\nbytes = 1073741824\n", "disk.dir"),
        ("dir = \"/d\"\nbytes = 1000\n", "disk.bytes: must be at least 1 MiB"),
        // The default max_object_bytes is 16 MiB.
        ("dir = \"/d\"\nbytes = 2097152\n", "must be at least max_object_bytes"),
        ("dir = \"/d\"\nbytes = 1073741824\nfsync = true\n", "unknown field"),
    ] {
        let e = CdnConfig::parse(&format!("{head}[disk]\n{body}"), "t").unwrap_err().to_string();
        assert!(e.contains(says), "{body}: {e}");
    }
}
