//! The hottest keys (`web::hotkeys`): a celebrity's read storm is counted, named
//! in `/internal/hotkeys` and `/metrics`, and served from hot copies that cost
//! the shards nothing; a viewer's own writes show to them at once despite the
//! copies, through the server they wrote through or (once announced) any other.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use testkit::{TestApp, TestEnv};
use web::WebConfig;
use web::hotkeys::Kind;

/// Keys become protected after a few dozen reads (0.5 reads a second, decayed
/// over a minute's half-life: about 43 reads).
fn eager(c: &mut WebConfig) {
    c.hotkeys.min_rate = 0.5;
    c.hotkeys.half_life_secs = 60;
}

/// Read `path` anonymously until a read is served by a hot copy of `kind`.
async fn until_served_from_a_copy(app: &TestApp, kind: Kind, path: &str) {
    let hot = app.state.hotkeys();
    let hits = || match kind {
        Kind::Profile => hot.profiles().hits(),
        Kind::Post => hot.posts().hits(),
    };
    eventually(&format!("{path} to be served from its hot copy"), async || {
        let before = hits();
        call(app, "GET", path, None, None, StatusCode::OK).await;
        hits() > before
    })
    .await;
}

/// Profile and post loads from the shards, one by one or in batches.
fn shard_reads(app: &TestApp) -> u64 {
    let data = app.state.data();
    ["profile", "profiles", "post", "posts"].iter().map(|op| data.query_count(op)).sum()
}

async fn hotkeys(app: &TestApp, query: &str) -> Value {
    call(app, "GET", &format!("/internal/hotkeys{query}"), None, None, StatusCode::OK).await
}

#[tokio::test]
async fn a_celebrity_read_storm_costs_the_shards_nothing_and_names_the_celebrity() {
    let app = TestEnv::new().await.spawn_with(eager).await;
    let celeb = signup(&app, "celeb").await;
    let reader = signup(&app, "reader").await;
    let path = "/api/v1/users/celeb";
    until_served_from_a_copy(&app, Kind::Profile, path).await;

    // The storm: anonymous and signed-in readers, twenty at a time.
    let before = shard_reads(&app);
    let (app, reader) = (&app, &reader);
    for _ in 0..15 {
        let reads = (0..20).map(|i| {
            let user = (i % 2 == 0).then_some(reader);
            async move { call(app, "GET", path, user, None, StatusCode::OK).await }
        });
        for body in futures::future::join_all(reads).await {
            assert_eq!(body["username"], "celeb");
        }
    }
    assert_eq!(shard_reads(app), before, "300 reads of the celebrity, no profile read from the shards");

    // The internal listing names them, hottest first, protected.
    let listing = hotkeys(app, "").await;
    let top = &listing["kinds"]["profile"][0];
    assert_eq!(top["key"], celeb.id.to_string(), "{listing}");
    assert_eq!(top["user"], "celeb");
    assert_eq!(top["protected"], true);
    assert!(top["reads_per_sec"].as_f64().unwrap() > 0.0);
    assert!(listing["kinds"]["post"].as_array().unwrap().is_empty(), "no post was read");
    let only = hotkeys(app, "?kind=profile&n=1").await;
    assert_eq!(only["kinds"].as_object().unwrap().len(), 1);
    assert_eq!(only["kinds"]["profile"].as_array().unwrap().len(), 1);

    // So does /metrics, in series of the current top only.
    let metrics = app.client().get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let series =
        format!("millions_hot_key_reads_per_second{{kind=\"profile\",key=\"{}\",user=\"celeb\"}}", celeb.id);
    assert!(metrics.contains(&series), "{metrics}");
    assert!(metrics.contains("millions_hot_copies{kind=\"profile\"} 1"), "{metrics}");
    assert!(metrics.contains("millions_hot_copy_reads_total{kind=\"profile\",result=\"hit\"}"), "{metrics}");
    let shown = metrics.lines().filter(|l| l.starts_with("millions_hot_key_reads_per_second{")).count();
    assert!(shown <= app.state.config().hotkeys.top_n, "{shown} series");
}

#[tokio::test]
async fn a_hot_post_and_its_author_are_served_from_copies() {
    let app = TestEnv::new().await.spawn_with(eager).await;
    let author = signup(&app, "poster").await;
    let post = post_text(&app, &author, "the famous one").await;
    let path = format!("/api/v1/posts/{post}");
    until_served_from_a_copy(&app, Kind::Post, &path).await;
    let before = shard_reads(&app);
    for _ in 0..100 {
        let body = call(&app, "GET", &path, None, None, StatusCode::OK).await;
        assert_eq!(body["author"]["username"], "poster");
    }
    assert_eq!(shard_reads(&app), before, "no post or author read from the shards");
    assert!(app.state.hotkeys().profiles().held() >= 1, "the author is hot with the post");
    let listing = hotkeys(&app, "?kind=post").await;
    assert_eq!(listing["kinds"]["post"][0]["key"], post.to_string(), "{listing}");
    assert_eq!(listing["kinds"]["post"][0]["user"], "poster", "named by its author");

    // A like through this server shows at once, to its giver and to anyone.
    let fan = signup(&app, "liker").await;
    let liked = call(&app, "PUT", &format!("{path}/like"), Some(&fan), None, StatusCode::OK).await;
    assert_eq!(liked["like_count"], 1);
    let seen = call(&app, "GET", &path, Some(&fan), None, StatusCode::OK).await;
    assert_eq!((&seen["like_count"], &seen["liked_by_me"]), (&Value::from(1), &Value::from(true)));
}

#[tokio::test]
async fn a_viewer_sees_their_own_follow_at_once_despite_the_copies() {
    let app = TestEnv::new().await.spawn_with(eager).await;
    signup(&app, "star").await;
    let fan = signup(&app, "fan").await;
    let path = "/api/v1/users/star";
    until_served_from_a_copy(&app, Kind::Profile, path).await;
    let seen = call(&app, "GET", path, Some(&fan), None, StatusCode::OK).await;
    assert_eq!(seen["followers_count"], 0);

    let done = call(&app, "PUT", "/api/v1/users/star/follow", Some(&fan), None, StatusCode::OK).await;
    assert_eq!(done["user"]["followers_count"], 1);
    let seen = call(&app, "GET", path, Some(&fan), None, StatusCode::OK).await;
    assert_eq!(seen["followers_count"], 1, "the fan's own follow, at once");
    assert_eq!(seen["followed_by_me"], true);

    call(&app, "DELETE", "/api/v1/users/star/follow", Some(&fan), None, StatusCode::OK).await;
    let seen = call(&app, "GET", path, Some(&fan), None, StatusCode::OK).await;
    assert_eq!((&seen["followers_count"], &seen["followed_by_me"]), (&Value::from(0), &Value::from(false)));

    // The copy is refreshed and serves everyone again.
    until_served_from_a_copy(&app, Kind::Profile, path).await;
    eventually("anonymous readers to see the unfollow", async || {
        call(&app, "GET", path, None, None, StatusCode::OK).await["followers_count"] == 0
    })
    .await;
}

#[tokio::test]
async fn a_viewer_sees_their_follow_through_another_server_once_it_is_announced() {
    let env = TestEnv::new().await;
    let (here, there) = (env.spawn_with(eager).await, env.spawn_with(eager).await);
    signup(&here, "far_star").await;
    let fan = signup(&there, "far_fan").await;
    let path = "/api/v1/users/far_star";
    until_served_from_a_copy(&here, Kind::Profile, path).await;
    assert_eq!(call(&here, "GET", path, Some(&fan), None, StatusCode::OK).await["followers_count"], 0);

    // The fan follows through the other server ...
    let since = here.state.hotkeys().now();
    call(&there, "PUT", "/api/v1/users/far_star/follow", Some(&fan), None, StatusCode::OK).await;
    // ... which announces the writer after the follow's invalidations; once this
    // server heard of it, no copy read before is served to the fan.
    eventually("the follow to be announced here", async || here.state.hotkeys().heard_since(fan.id, since))
        .await;
    let seen = call(&here, "GET", path, Some(&fan), None, StatusCode::OK).await;
    assert_eq!(seen["followers_count"], 1, "the fan's own follow");
    assert_eq!(seen["followed_by_me"], true);
    // Everyone else within the copies' lifetime.
    eventually("anonymous readers here to see the follow", async || {
        call(&here, "GET", path, None, None, StatusCode::OK).await["followers_count"] == 1
    })
    .await;
}

#[tokio::test]
async fn without_protection_keys_are_counted_but_not_copied() {
    let app = TestEnv::new()
        .await
        .spawn_with(|c| {
            eager(c);
            c.hotkeys.protect = 0;
        })
        .await;
    let celeb = signup(&app, "plain_celeb").await;
    let key = celeb.id.to_string();
    eventually("the celebrity to top the listing", async || {
        call(&app, "GET", "/api/v1/users/plain_celeb", None, None, StatusCode::OK).await;
        hotkeys(&app, "?kind=profile").await["kinds"]["profile"][0]["key"] == key.as_str()
    })
    .await;
    let listing = hotkeys(&app, "?kind=profile").await;
    assert_eq!(listing["kinds"]["profile"][0]["protected"], false);
    assert_eq!(app.state.hotkeys().profiles().held(), 0);
    assert_eq!(app.state.hotkeys().profiles().hits(), 0);
}

#[tokio::test]
async fn bad_hotkeys_queries_are_refused_cleanly() {
    let app = TestEnv::new().await.spawn().await;
    for query in ["?n=0", "?n=101", "?n=ten", "?n=-1", "?n=", "?kind=users", "?kind=", "?other=1", "?n=1&n=2"]
    {
        let r = send(&app, "GET", &format!("/internal/hotkeys{query}"), None, None).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), "invalid_query", "{query}: {body}");
    }
    let r = send(&app, "POST", "/internal/hotkeys", None, None).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let listing = hotkeys(&app, "?kind=post&n=100").await;
    assert_eq!(listing["kinds"].as_object().unwrap().keys().collect::<Vec<_>>(), ["post"]);
    assert_eq!(listing["hot_ttl_ms"], 1000);
}
