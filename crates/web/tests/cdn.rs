//! Photo URLs at a CDN edge while it is healthy, at the origin when it is not:
//! a real web server (PostgreSQL, Redis, a worker) probing a stand-in edge.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use common::*;
use serde_json::Value;
use testkit::TestApp;

/// A stand-in CDN edge: `GET /readyz` answers whatever status it is set to.
struct FakeEdge {
    addr: std::net::SocketAddr,
    status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeEdge {
    async fn start() -> FakeEdge {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let app = axum::Router::new()
            .route(
                "/readyz",
                axum::routing::get(|State(s): State<Arc<AtomicU16>>| async move {
                    StatusCode::from_u16(s.load(Ordering::Relaxed)).unwrap()
                }),
            )
            .with_state(status.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeEdge { addr, status, task }
    }
}

async fn json(app: &TestApp, path: &str, user: Option<&User>, headers: &[(&str, &str)]) -> Value {
    let mut req = reqwest::Client::new().get(app.url(path));
    if let Some(u) = user {
        req = req.bearer_auth(&u.token);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.unwrap()
}

async fn page(app: &TestApp, path: &str) -> (String, String) {
    let r = reqwest::get(app.url(path)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    (csp, r.text().await.unwrap())
}

/// Every photo URL the app gives for the post `id` of `user` (single post and
/// lists, JSON and pages) starts with `prefix`.
async fn all_urls_start_with(app: &TestApp, user: &User, id: &str, prefix: &str) -> bool {
    let post = json(app, &format!("/api/v1/posts/{id}"), None, &[]).await;
    let listed = json(app, &format!("/api/v1/users/{}/posts", user.username), None, &[]).await;
    let feed = json(app, "/api/v1/feed", Some(user), &[]).await;
    let mut urls =
        vec![post["photo"]["thumbnails"][1]["url"].clone(), post["photo"]["original"]["url"].clone()];
    for page in [&listed, &feed] {
        let p = &page["posts"][0];
        assert_eq!(p["id"], id, "{page}");
        urls.push(p["photo"]["thumbnails"][1]["url"].clone());
        urls.push(p["photo"]["original"]["url"].clone());
    }
    let json_ok = urls.iter().all(|u| u.as_str().is_some_and(|u| u.starts_with(prefix)));
    let thumb = post["photo"]["thumbnails"][1]["url"].as_str().unwrap().to_owned();
    let (_, single) = page(app, &format!("/p/{id}")).await;
    let (_, profile) = page(app, &format!("/u/{}", user.username)).await;
    let img = format!(r#"<img src="{thumb}""#);
    json_ok && thumb.starts_with(prefix) && single.contains(&img) && profile.contains(&img)
}

#[tokio::test]
async fn photo_urls_follow_the_edges_health() {
    let edge = FakeEdge::start().await;
    let env = testkit::TestEnv::new().await;
    let edge_addr = edge.addr;
    let app = env
        .spawn_with(|c| {
            let toml = format!(
                r#"
dc = "dc1"
probe_interval_ms = 50
probe_timeout_ms = 500
unhealthy_after = 2
healthy_after = 1
[[edges]]
name = "dc1-cdn-1"
dc = "dc1"
http = "{edge_addr}"
https = "127.0.0.1:8443"
health = "http://{edge_addr}/readyz"
"#
            );
            c.media.cdn = toml::from_str(&toml).unwrap();
            // The test's requests come from a trusted proxy, as a load balancer's do.
            c.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        })
        .await;
    let edge_http = format!("http://{edge_addr}/media/");

    // A photo post, made ready by a worker.
    let ann = signup(&app, "ann").await;
    let id = post_photo(&app, &ann, jpeg(800, 600), "").await["id"].as_str().unwrap().to_owned();
    let worker = env.spawn_worker().await;
    testkit::eventually("the worker processes the photo", || async {
        json(&app, &format!("/api/v1/posts/{id}"), None, &[]).await["status"] == "ready"
    })
    .await;
    worker.stop().await;

    // The pages may load images from the edge, over HTTP and HTTPS.
    let (csp, _) = page(&app, &format!("/p/{id}")).await;
    assert!(
        csp.contains(&format!("img-src 'self' data: http://{edge_addr} https://127.0.0.1:8443;")),
        "{csp}"
    );

    // Healthy: every photo URL names the edge.
    testkit::eventually("photo URLs name the healthy edge", || async {
        all_urls_start_with(&app, &ann, &id, &edge_http).await
    })
    .await;
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"millions_cdn_edge_healthy{edge="dc1-cdn-1",dc="dc1"} 1"#), "{metrics}");
    // Over HTTPS (as the trusted load balancer says), its HTTPS address.
    let https = [("x-forwarded-proto", "https")];
    let post = json(&app, &format!("/api/v1/posts/{id}"), None, &https).await;
    let url = post["photo"]["original"]["url"].as_str().unwrap();
    assert!(url.starts_with("https://127.0.0.1:8443/media/"), "{url}");
    let feed = json(&app, "/api/v1/feed", Some(&ann), &https).await;
    let url = feed["posts"][0]["photo"]["thumbnails"][0]["url"].as_str().unwrap();
    assert!(url.starts_with("https://127.0.0.1:8443/media/"), "{url}");

    // Unready: back at the origin.
    edge.status.store(503, Ordering::Relaxed);
    testkit::eventually("photo URLs fall back to the origin", || async {
        all_urls_start_with(&app, &ann, &id, "/media/").await
    })
    .await;
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"millions_cdn_edge_healthy{edge="dc1-cdn-1",dc="dc1"} 0"#), "{metrics}");

    // Ready again, then gone altogether.
    edge.status.store(200, Ordering::Relaxed);
    testkit::eventually("photo URLs name the edge again", || async {
        all_urls_start_with(&app, &ann, &id, &edge_http).await
    })
    .await;
    edge.task.abort();
    let _ = edge.task.await;
    testkit::eventually("photo URLs leave the closed edge", || async {
        all_urls_start_with(&app, &ann, &id, "/media/").await
    })
    .await;
    // The origin serves what the URLs name.
    let post = json(&app, &format!("/api/v1/posts/{id}"), None, &[]).await;
    let r = reqwest::get(app.url(post["photo"]["original"]["url"].as_str().unwrap())).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn https_is_not_believed_from_an_untrusted_peer() {
    let edge = FakeEdge::start().await;
    let edge_addr = edge.addr;
    let app = testkit::TestEnv::new()
        .await
        .spawn_with(|c| {
            let toml = format!(
                "probe_interval_ms = 50\n[[edges]]\nname = \"e\"\ndc = \"dc1\"\nhttp = \"{edge_addr}\"\n\
                 https = \"127.0.0.1:8443\"\nhealth = \"http://{edge_addr}/readyz\"\n"
            );
            c.media.cdn = toml::from_str(&toml).unwrap();
        })
        .await;
    testkit::eventually("the edge is healthy", || async { app.state.edges().is_healthy("e") == Some(true) })
        .await;
    let ann = signup(&app, "ann").await;
    let form = reqwest::multipart::Form::new()
        .part("photo", reqwest::multipart::Part::bytes(jpeg(64, 48)).file_name("p.jpg"));
    let r = reqwest::Client::new()
        .post(app.url("/api/v1/posts"))
        .bearer_auth(&ann.token)
        .header("x-forwarded-proto", "https")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let post: Value = r.json().await.unwrap();
    let url = post["photo"]["original"]["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("http://{edge_addr}/media/")), "no trusted proxy: plain HTTP: {url}");
}
