//! Two data centers over the same shards, each web server on its own DC's Redis
//! with the other's as its peer (as `millions control` configures them): a write
//! made through one DC is seen through the other, warm caches and all (ADR 0008).

mod common;

use common::*;
use reqwest::StatusCode;
use testkit::{OwnedRedis, TestApp, TestEnv};

/// Two DCs: dc1 on the test binary's shared Redis, dc2 on a Redis of its own
/// (same key prefix, as in a real deployment), each the other's peer.
struct TwoDcs {
    dc1: TestApp,
    dc2: TestApp,
    /// dc2's Redis, kept running while the servers are.
    _dc2_redis: OwnedRedis,
}

async fn two_dcs() -> TwoDcs {
    let dc2_redis = testkit::fresh_redis();
    let env = TestEnv::new().await;
    let (dc1_url, dc2_url) = (env.redis_url.clone(), dc2_redis.url());
    let dc1 = env.spawn_with(|c| c.redis.peers = vec![dc2_url.clone()]).await;
    let dc2 = env
        .spawn_with(|c| {
            c.redis.url = dc2_url.clone();
            c.redis.peers = vec![dc1_url.clone()];
        })
        .await;
    TwoDcs { dc1, dc2, _dc2_redis: dc2_redis }
}

#[tokio::test]
async fn a_text_post_through_one_dc_reaches_a_warm_timeline_read_through_the_other() {
    let TwoDcs { dc1, dc2, _dc2_redis: _running } = two_dcs().await;
    let author = signup(&dc1, "east_author").await;
    // The fan lives near dc2: signed up, logged in and reading there.
    let fan = signup(&dc2, "west_fan").await;
    call(&dc2, "PUT", "/api/v1/users/east_author/follow", Some(&fan), None, StatusCode::OK).await;
    let old = post_text(&dc1, &author, "before").await;
    let (ids, _) = feed_ids(&dc2, &fan, "").await;
    assert_eq!(ids, [old], "the fan's timeline in dc2 is built, warm from now on");

    let new = post_text(&dc1, &author, "after").await;
    // The inline fan-out wrote both DCs' Redis before answering.
    let (ids, _) = feed_ids(&dc2, &fan, "").await;
    assert_eq!(ids, [new, old], "the warm dc2 timeline got the post");
    assert_eq!(
        dc1.env.count("SELECT count(*) FROM jobs WHERE kind = 'fanout'").await,
        0,
        "fan-out done everywhere: no outbox job left"
    );
}

#[tokio::test]
async fn a_follow_through_one_dc_shows_in_the_other_dcs_warm_profile() {
    let TwoDcs { dc1, dc2, _dc2_redis: _running } = two_dcs().await;
    let star = signup(&dc2, "west_star").await;
    let fan = signup(&dc1, "east_fan").await;
    // dc2 caches the profile (its L1 and its Redis) ...
    for _ in 0..2 {
        let body = call(&dc2, "GET", "/api/v1/users/west_star", None, None, StatusCode::OK).await;
        assert_eq!(body["followers_count"], 0);
    }
    assert!(dc2.state.caches().metrics.get("profile", "l1_hit") >= 1, "dc2 serves it from its L1");

    // ... a follow is made through dc1 ...
    call(&dc1, "PUT", "/api/v1/users/west_star/follow", Some(&fan), None, StatusCode::OK).await;

    // ... and dc2 shows it once the invalidation message reaches its listener.
    eventually("dc2 to show the new follower", async || {
        call(&dc2, "GET", "/api/v1/users/west_star", None, None, StatusCode::OK).await["followers_count"] == 1
    })
    .await;
    let own = call(&dc2, "GET", "/api/v1/users/west_star", Some(&star), None, StatusCode::OK).await;
    assert_eq!(own["followers_count"], 1);
    assert_eq!(dc1.state.caches().metrics.invalidation_failures("profile", "peer"), 0);
}

#[tokio::test]
async fn writes_while_the_other_dcs_redis_is_down_succeed_and_the_misses_are_counted_or_queued() {
    let TwoDcs { dc1, dc2, _dc2_redis: mut dc2_redis } = two_dcs().await;
    // A user of dc2 signs up there while its Redis is up.
    signup(&dc2, "far_star").await;
    let fan = signup(&dc1, "near_fan").await;
    dc2_redis.kill();
    let body = call(&dc1, "PUT", "/api/v1/users/far_star/follow", Some(&fan), None, StatusCode::OK).await;
    assert_eq!(body["user"]["followers_count"], 1, "the user's write stands");
    assert!(dc1.state.caches().metrics.invalidation_failures("profile", "peer") >= 1);
    assert_eq!(dc1.state.caches().metrics.invalidation_failures("profile", "local"), 0);

    // A text post meanwhile: published, in dc1's timelines at once, and its
    // outbox job stays for a worker, which retries until dc2's Redis has it too.
    let post = post_text(&dc1, &fan, "dc2 is dark").await;
    let (ids, _) = feed_ids(&dc1, &fan, "").await;
    assert_eq!(ids, [post]);
    assert_eq!(
        dc1.env.count("SELECT count(*) FROM jobs WHERE kind = 'fanout'").await,
        1,
        "the outbox job stays"
    );
}

#[tokio::test]
async fn a_session_made_in_one_dc_works_in_the_other_and_a_logout_ends_it_in_both() {
    let TwoDcs { dc1, dc2, _dc2_redis: _running } = two_dcs().await;
    // Logged in through dc1 ...
    let traveller = signup(&dc1, "traveller").await;
    call(&dc1, "GET", "/api/v1/feed", Some(&traveller), None, StatusCode::OK).await;
    // ... and moved to dc2 (DNS sent them there): still signed in, and dc2 keeps a
    // copy (its memory and its Redis).
    for _ in 0..2 {
        call(&dc2, "GET", "/api/v1/feed", Some(&traveller), None, StatusCode::OK).await;
    }
    assert!(dc2.state.caches().metrics.get("session", "l1_hit") >= 1, "dc2 serves the session from memory");
    // A logout through dc1 ends the session in dc2 too, copies and all.
    let r = send(&dc1, "DELETE", "/api/v1/sessions/current", Some(&traveller), None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    eventually("dc2 to refuse the ended session", async || {
        send(&dc2, "GET", "/api/v1/feed", Some(&traveller), None).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(
        send(&dc1, "GET", "/api/v1/feed", Some(&traveller), None).await.status(),
        StatusCode::UNAUTHORIZED,
        "and in dc1 at once"
    );
    assert_eq!(dc1.state.caches().metrics.invalidation_failures("session", "peer"), 0);
    // No copy survives in dc2's Redis for a restarted dc2 web server to find.
    let fresh_dc2 = dc2.env.spawn_with(|c| c.redis.url = dc2.state.config().redis.url.clone()).await;
    assert_eq!(
        send(&fresh_dc2, "GET", "/api/v1/feed", Some(&traveller), None).await.status(),
        StatusCode::UNAUTHORIZED
    );
}
