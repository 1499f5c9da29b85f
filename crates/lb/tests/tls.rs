//! HTTPS at the load balancer: HTTP/1.1 and HTTP/2 by ALPN, HSTS (on its own
//! answers too, never on plain HTTP), the plain port's redirect, certificate
//! reloads, bad certificates refused before binding, the handshake deadline and
//! session resumption. Certificates are made by the test ([`support::Pki`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use lb::config::TlsSection;
use lb::{LbConfig, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

use support::{Leaf, Pki, raw_https};

const TOKEN: &str = "tls-test-admin-token";

/// A backend that answers every request with the headers it saw, as JSON.
async fn echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counted = hits.clone();
    let app = Router::new().route("/readyz", axum::routing::get(|| async { "ready" })).fallback(
        move |req: Request| {
            counted.fetch_add(1, Ordering::SeqCst);
            let headers: HashMap<String, String> = req
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            async move { axum::Json(serde_json::json!({ "headers": headers })) }
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn tls_config(backend: SocketAddr, pki: &Pki) -> LbConfig {
    let mut c = LbConfig::new(any_port(), any_port(), vec![backend]);
    c.health.interval_ms = 100;
    c.admin_token = Some(TOKEN.into());
    let mut tls = TlsSection::new(any_port(), pki.cert_path(), pki.key_path());
    tls.hsts_max_age_secs = 600;
    c.tls = Some(tls);
    c
}

fn start(config: LbConfig) -> Running {
    tokio::task::block_in_place(|| lb::start(config)).expect("load balancer starts")
}

fn https(lb: &Running, path: &str) -> String {
    format!("https://localhost:{}{path}", lb.tls.expect("HTTPS listener").port())
}

fn client(pki: &Pki) -> reqwest::ClientBuilder {
    reqwest::Client::builder().add_root_certificate(pki.root()).tls_info(true)
}

/// The server certificate a new client is shown.
async fn served_certificate(pki: &Pki, lb: &Running) -> Vec<u8> {
    let r = client(pki).build().unwrap().get(https(lb, "/")).send().await.unwrap();
    let info = r.extensions().get::<reqwest::tls::TlsInfo>().expect("TLS info");
    info.peer_certificate().expect("a peer certificate").to_vec()
}

async fn wait_until_served(pki: &Pki, lb: &Running) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = client(pki).build().unwrap();
    while client.get(https(lb, "/")).send().await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(Instant::now() < deadline, "the load balancer never served over HTTPS");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A load balancer serving HTTPS (its configuration changed by `tweak`) with a
/// new certificate of a new CA, in front of an echoing backend (and its hits).
async fn serving(tweak: impl FnOnce(&mut LbConfig)) -> (Pki, Leaf, Running, Arc<AtomicUsize>) {
    let pki = Pki::new();
    let leaf = pki.leaf();
    pki.install(&leaf.cert, &leaf.key);
    let (backend, hits) = echo().await;
    let mut config = tls_config(backend, &pki);
    tweak(&mut config);
    let lb = start(config);
    wait_until_served(&pki, &lb).await;
    (pki, leaf, lb, hits)
}

async fn reload(lb: &Running) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/tls/reload", lb.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_with_http1_and_http2_by_alpn_reaches_the_backend_with_hsts() {
    let (pki, _, lb, _) = serving(|_| {}).await;
    for (client, version) in [
        (client(&pki).http1_only().build().unwrap(), reqwest::Version::HTTP_11),
        (client(&pki).build().unwrap(), reqwest::Version::HTTP_2),
    ] {
        let r = client.get(https(&lb, "/hello?x=1")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version, "chosen by ALPN");
        assert_eq!(r.headers()["strict-transport-security"], "max-age=600", "{version:?}");
        let seen: serde_json::Value = r.json().await.unwrap();
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{version:?}");
        assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1", "{version:?}");
    }
}

/// The `Strict-Transport-Security` line of a raw HTTP/1.1 answer's head.
fn hsts_line(answer: &str) -> Option<&str> {
    let head = answer.split("\r\n\r\n").next().unwrap_or("");
    head.lines().find(|l| l.to_ascii_lowercase().starts_with("strict-transport-security:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_load_balancers_own_answers_carry_hsts_over_https_and_never_over_plain_http() {
    let (pki, _, lb, hits) = serving(|c| {
        c.limits.max_header_bytes = 4096;
        c.limits.max_body_bytes = 1024;
    })
    .await;
    let addr = lb.tls.unwrap();
    let long = "a".repeat(5000);
    // HTTP/1.1 (ALPN not offered): every refusal the load balancer writes itself.
    for (request, status) in [
        ("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(), "404"),
        ("GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(), "404"),
        (
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_owned(),
            "400",
        ),
        ("GET / HTTP/1.1\nHost: localhost\n\n".to_owned(), "400"),
        ("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n".to_owned(), "413"),
        (format!("GET /{long} HTTP/1.1\r\nHost: localhost\r\n\r\n"), "414"),
        (format!("GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {long}\r\n\r\n"), "431"),
        ("CONNECT localhost:443 HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(), "405"),
    ] {
        let answer = raw_https(&pki, addr, request.as_bytes()).await;
        let what = &request[..request.len().min(40)];
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{what:?}: {answer}");
        assert_eq!(hsts_line(&answer), Some("strict-transport-security: max-age=600"), "{what:?}: {answer}");
    }
    // HTTP/2: the same for the refusals a client library lets through.
    let h2 = client(&pki).build().unwrap();
    let answers = [
        h2.get(https(&lb, "/metrics")).send().await.unwrap(),
        h2.get(https(&lb, "/healthz/x")).send().await.unwrap(),
        h2.post(https(&lb, "/")).body(vec![b'x'; 5000]).send().await.unwrap(),
        h2.get(https(&lb, "/")).header("x-big", long.as_str()).send().await.unwrap(),
    ];
    for (r, status) in answers.into_iter().zip([404, 404, 413, 431]) {
        assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, status));
        assert_eq!(r.headers()["strict-transport-security"], "max-age=600", "{status}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "only the first request (the wait) reached the backend");

    // No backend left that answers: 502 or 503, from the load balancer, with HSTS.
    let gone = reqwest::Client::new()
        .put(format!("http://{}/admin/backends", lb.admin))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"backends": [free_port()]}))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 200);
    let h1 = client(&pki).http1_only().build().unwrap();
    for (client, version) in [(&h1, reqwest::Version::HTTP_11), (&h2, reqwest::Version::HTTP_2)] {
        let r = client.get(https(&lb, "/x")).send().await.unwrap();
        assert!([502, 503].contains(&r.status().as_u16()), "{version:?}: {}", r.status());
        assert_eq!(r.headers()["strict-transport-security"], "max-age=600", "{version:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "the load balancer's own: {body}");
    }

    // The plain port's answers never carry it: its redirects, its refusals.
    let plain = format!("http://localhost:{}", lb.listen.port());
    let no_redirects =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects.get(format!("{plain}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert!(r.headers().get("strict-transport-security").is_none());
    let mut raw = tokio::net::TcpStream::connect(lb.listen).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400") && hsts_line(&answer).is_none(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limited_client_is_told_so_with_hsts() {
    let (pki, _, lb, _) = serving(|c| {
        c.rate_limit.per_second = 1;
        c.rate_limit.burst = 1;
    })
    .await;
    // The bucket refills once a second: within a few requests in a row, one is refused.
    for (name, client) in
        [("HTTP/1.1", client(&pki).http1_only().build().unwrap()), ("HTTP/2", client(&pki).build().unwrap())]
    {
        let mut limited = None;
        for _ in 0..20 {
            let r = client.get(https(&lb, "/x")).send().await.unwrap();
            if r.status() == 429 {
                limited = Some(r);
                break;
            }
        }
        let r = limited.unwrap_or_else(|| panic!("{name}: never rate limited"));
        assert!(r.headers().contains_key("retry-after"), "{name}");
        assert_eq!(r.headers()["strict-transport-security"], "max-age=600", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_plain_port_redirects_every_request_to_https() {
    let (pki, _, lb, hits) = serving(|_| {}).await;
    let tls_port = lb.tls.unwrap().port();
    let before = hits.load(Ordering::SeqCst);

    let no_redirects = client(&pki).redirect(reqwest::redirect::Policy::none());
    for (client, name) in [
        (no_redirects.build().unwrap(), "HTTP/1.1"),
        (
            client(&pki).redirect(reqwest::redirect::Policy::none()).http2_prior_knowledge().build().unwrap(),
            "h2c",
        ),
    ] {
        let url = format!("http://localhost:{}/u/ann?tab=posts", lb.listen.port());
        let r = client.get(url).send().await.unwrap();
        assert_eq!(r.status(), 308, "{name}");
        assert_eq!(
            r.headers()["location"],
            format!("https://localhost:{tls_port}/u/ann?tab=posts"),
            "{name}"
        );
        assert!(r.headers().get("strict-transport-security").is_none(), "{name}: no HSTS over plain HTTP");
    }
    assert_eq!(hits.load(Ordering::SeqCst), before, "nothing plain reaches a backend");

    // A client that follows it ends up served over HTTPS.
    let r =
        client(&pki).build().unwrap().get(format!("http://localhost:{}/x", lb.listen.port())).send().await;
    let r = r.unwrap();
    assert_eq!((r.status().as_u16(), r.url().scheme()), (200, "https"));

    // A Host that is no host name is refused, not echoed into a Location.
    let mut raw = tokio::net::TcpStream::connect(lb.listen).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_switches_the_certificate_and_a_bad_one_keeps_the_old() {
    let (pki, first, lb, _) = serving(|_| {}).await;
    let second = pki.leaf();
    assert_eq!(served_certificate(&pki, &lb).await, first.der);
    // A connection opened before the reload.
    let open = client(&pki).http1_only().build().unwrap();
    assert_eq!(open.get(https(&lb, "/")).send().await.unwrap().status(), 200);

    pki.install(&second.cert, &second.key);
    let unauthorized = reqwest::Client::new().post(format!("http://{}/admin/tls/reload", lb.admin)).send();
    assert_eq!(unauthorized.await.unwrap().status(), 401, "the reload needs the admin token");
    let (status, info) = reload(&lb).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(served_certificate(&pki, &lb).await, second.der, "new handshakes get the new certificate");
    let r = open.get(https(&lb, "/")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the connection opened before the reload still serves");
    let shown = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap().peer_certificate().unwrap().to_vec();
    assert_eq!(shown, first.der, "and keeps its certificate");

    // Bad files: refused with the reason; the certificate in force stays.
    for (cert, key, why) in [
        (second.cert.as_str(), first.key.as_str(), "not the certificate's"),
        ("garbage", second.key.as_str(), "no CERTIFICATE"),
        (second.cert.as_str(), "", "not a PEM private key"),
    ] {
        pki.install(cert, key);
        let (status, body) = reload(&lb).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "tls_reload_failed");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{why}: {message}");
        assert_eq!(served_certificate(&pki, &lb).await, second.der, "{why}: the old certificate stays");
    }
}

/// A port free now (bound and let go).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind(any_port()).unwrap().local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_certificate_or_key_is_refused_before_anything_is_bound() {
    let pki = Pki::new();
    let (leaf, other) = (pki.leaf(), pki.leaf());
    for (cert, key, why) in [
        (None, Some(leaf.key.as_str()), "cannot read certificate"),
        (Some("not pem"), Some(leaf.key.as_str()), "no CERTIFICATE"),
        (Some(leaf.cert.as_str()), Some(other.key.as_str()), "not the certificate's"),
        (Some(leaf.cert.as_str()), Some(leaf.cert.as_str()), "not a PEM private key"),
    ] {
        let _ = std::fs::remove_file(pki.cert_path());
        let _ = std::fs::remove_file(pki.key_path());
        if let Some(cert) = cert {
            std::fs::write(pki.cert_path(), cert).unwrap();
        }
        if let Some(key) = key {
            std::fs::write(pki.key_path(), key).unwrap();
        }
        let mut config = LbConfig::new(free_port(), free_port(), vec![]);
        config.tls = Some(TlsSection::new(free_port(), pki.cert_path(), pki.key_path()));
        let tls = config.tls.as_ref().unwrap().listen;
        let (listen, admin) = (config.listen, config.admin);
        let err = tokio::task::block_in_place(|| lb::start(config)).expect_err(why).to_string();
        assert!(err.contains(why), "{why}: {err}");
        for addr in [listen, admin, tls] {
            assert!(std::net::TcpListener::bind(addr).is_ok(), "{why}: {addr} was bound");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_finishes_the_handshake_is_cut() {
    let (_pki, _, lb, _) = serving(|c| c.limits.header_timeout_ms = 200).await;
    // Silent, and a ClientHello's first bytes only.
    for first in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]] {
        let mut tcp = tokio::net::TcpStream::connect(lb.tls.unwrap()).await.unwrap();
        tcp.write_all(first).await.unwrap();
        let mut buf = [0u8; 64];
        // The server closes it (well within this bound, which only keeps a broken
        // server from hanging the test).
        let read = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{first:?}: {read:?}");
    }
    // Counted (the socket closes just before the count: poll).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics =
            reqwest::get(format!("http://{}/metrics", lb.admin)).await.unwrap().text().await.unwrap();
        if metrics.contains("lb_tls_handshake_failures_total{reason=\"timeout\"} 2") {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One HTTP/1.1 request over a new TLS connection with `config`; returns how the
/// handshake went.
async fn one_request(config: Arc<rustls::ClientConfig>, addr: SocketAddr) -> rustls::HandshakeKind {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    conn.handshake_kind().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls13_sessions_resume_with_tickets() {
    let (pki, _, lb, _) = serving(|_| {}).await;
    let config = pki.rustls_client();
    assert_eq!(one_request(config.clone(), lb.tls.unwrap()).await, rustls::HandshakeKind::Full);
    assert_eq!(one_request(config, lb.tls.unwrap()).await, rustls::HandshakeKind::Resumed);
}
