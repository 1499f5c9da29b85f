//! The web tier when the processes it depends on crash and come back.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use testkit::{TestEnv, fresh_postgres, fresh_redis};

#[tokio::test]
async fn a_redis_crash_costs_signed_in_users_nothing() {
    let mut redis = fresh_redis();
    let pg = fresh_postgres();
    let env = TestEnv::on_servers(&pg, redis.url()).await;
    let app = env.spawn().await;
    let alice = signup(&app, "alice").await;
    let bob = signup(&app, "bob").await;
    call(&app, "PUT", "/api/v1/users/alice/follow", Some(&bob), None, StatusCode::OK).await;
    let post = post_text(&app, &alice, "before the crash").await;

    redis.kill();
    // Sessions are the shards' rows: signed-in calls are served from the shards.
    let (ids, _) = feed_ids(&app, &bob, "").await;
    assert_eq!(ids, vec![post], "bob's feed, read from the shards");
    let body = call(&app, "GET", "/api/v1/users/alice", Some(&bob), None, StatusCode::OK).await;
    assert_eq!(body["followed_by_me"], true, "{body}");
    // Writes too: the post commits (its fan-out waits in its outbox job).
    let during = post_text(&app, &alice, "during the crash").await;
    // A new signup and login work (the abuse limits, counted in Redis, let them
    // through), and the web server stays in its load balancer's pool.
    let carol = signup(&app, "carol").await;
    call(&app, "GET", "/api/v1/feed", Some(&carol), None, StatusCode::OK).await;
    let r = send(&app, "GET", "/readyz", None, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().starts_with("ready (degraded: redis"), "it says it is degraded");
    // Public reads fall through to the database.
    let got = call(&app, "GET", &format!("/api/v1/posts/{post}"), None, None, StatusCode::OK).await;
    assert_eq!(got["caption"], "before the crash");

    redis.restart();
    eventually("ready and not degraded after Redis restarts", || async {
        let r = send(&app, "GET", "/readyz", None, None).await;
        r.status() == StatusCode::OK && r.text().await.unwrap() == "ready"
    })
    .await;
    // This Redis does not persist, and nobody had to log in again: the sessions
    // were never in it.
    let (ids, _) = feed_ids(&app, &bob, "").await;
    assert_eq!(ids, vec![during, post], "bob's lost timeline was rebuilt from the database");
    call(&app, "GET", "/api/v1/feed", Some(&alice), None, StatusCode::OK).await;
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
