//! The web tier when the processes it depends on crash and come back.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use testkit::{TestEnv, fresh_postgres, fresh_redis};

#[tokio::test]
async fn redis_crash_gives_503_then_recovers() {
    let mut redis = fresh_redis();
    let pg = fresh_postgres();
    let env = TestEnv::on_servers(&pg, redis.url()).await;
    let app = env.spawn().await;
    let alice = signup(&app, "alice").await;
    let post = post_text(&app, &alice, "before the crash").await;

    redis.kill();
    // Authenticated calls need the session store: a clear, retryable 503.
    let r = send(&app, "GET", "/api/v1/feed", Some(&alice), None).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(error_code(&r.json().await.unwrap()), "unavailable");
    assert_eq!(send(&app, "GET", "/readyz", None, None).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Public reads fall through to the database.
    let got = call(&app, "GET", &format!("/api/v1/posts/{post}"), None, None, StatusCode::OK).await;
    assert_eq!(got["caption"], "before the crash");

    redis.restart();
    eventually("ready again after Redis restarts", || async {
        send(&app, "GET", "/readyz", None, None).await.status() == StatusCode::OK
    })
    .await;
    // This Redis does not persist: sessions are gone, and logging in again works.
    assert_eq!(
        send(&app, "GET", "/api/v1/feed", Some(&alice), None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let alice = login(&app, "alice").await;
    let (ids, _) = feed_ids(&app, &alice, "").await;
    assert_eq!(ids, vec![post], "the lost timeline was rebuilt from the database");
}

#[tokio::test]
async fn postgres_crash_gives_503_and_loses_no_acknowledged_write() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let mut pg = fresh_postgres();
    let env = TestEnv::on_servers(&pg, testkit::redis().url()).await;
    let app = env.spawn_with(|c| c.database.acquire_timeout_ms = 500).await;
    let alice = signup(&app, "alice").await;
    let mut acknowledged = vec![post_text(&app, &alice, "one").await];

    pg.kill();
    let r = send(&app, "POST", "/api/v1/posts", Some(&alice), Some(json!({"caption": "during"}))).await;
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a write to a dead shard fails fast and says retry"
    );
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(send(&app, "GET", "/readyz", None, None).await.status(), StatusCode::SERVICE_UNAVAILABLE);

    pg.restart();
    eventually("ready again after PostgreSQL restarts", || async {
        send(&app, "GET", "/readyz", None, None).await.status() == StatusCode::OK
    })
    .await;
    acknowledged.push(post_text(&app, &alice, "after").await);
    let body = call(&app, "GET", "/api/v1/users/alice/posts", None, None, StatusCode::OK).await;
    let (mut ids, _) = page_ids(&body);
    ids.sort_unstable();
    acknowledged.sort_unstable();
    assert_eq!(ids, acknowledged, "every acknowledged post, and only those");
}
