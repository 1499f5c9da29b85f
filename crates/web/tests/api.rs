//! The JSON API against real PostgreSQL (two shards) and Redis.

mod common;

use common::*;
use data::{Change, PostId};
use reqwest::StatusCode;
use serde_json::json;
use sha2::Digest as _;
use testkit::{TestEnv, spawn_app};

#[tokio::test]
async fn signup_login_profile_logout() {
    let app = spawn_app().await;
    let body = call(
        &app,
        "POST",
        "/api/v1/users",
        None,
        Some(json!({"username": "Alice", "password": "password123", "display_name": "Alice A."})),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(body["username"], "alice", "usernames are normalized to lowercase");
    assert_eq!(body["display_name"], "Alice A.");

    let r = send(
        &app,
        "POST",
        "/api/v1/sessions",
        None,
        Some(json!({"username": "alice", "password": "password123"})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("sid="), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    let body: serde_json::Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 46, "256 random bits behind the user's bucket, base64url");
    assert!(cookie.contains(&token));

    let user =
        User { username: "alice".into(), id: body["user"]["id"].as_str().unwrap().parse().unwrap(), token };
    let me = call(&app, "GET", "/api/v1/users/alice", Some(&user), None, StatusCode::OK).await;
    assert_eq!(me["posts_count"], 0);
    assert_eq!(me["followed_by_me"], false);

    // The cookie alone authenticates too.
    let r = reqwest::Client::new()
        .get(app.url("/api/v1/feed"))
        .header("cookie", format!("sid={}", user.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let r = send(&app, "DELETE", "/api/v1/sessions/current", Some(&user), None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let cleared = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cleared.starts_with("sid=;"), "the cookie is emptied: {cleared}");
    assert!(cleared.contains("Max-Age=0") && cleared.contains("Path=/"), "and expired: {cleared}");
    let body = call(&app, "GET", "/api/v1/feed", Some(&user), None, StatusCode::UNAUTHORIZED).await;
    assert_eq!(error_code(&body), "unauthenticated");
}

#[tokio::test]
async fn follow_post_and_feed_across_shards() {
    let app = spawn_app().await;
    // Enough users that both shards hold some.
    let mut users = vec![];
    for i in 0..8 {
        users.push(signup(&app, &format!("user{i}")).await);
    }
    let map = app.state.data().shard_map();
    let shards: std::collections::BTreeSet<_> = users.iter().map(|u| map.shard_of_user(u.id)).collect();
    assert_eq!(shards.len(), 2, "users spread over both shards");

    let author = &users[0];
    for reader in &users[1..] {
        let body = call(
            &app,
            "PUT",
            &format!("/api/v1/users/{}/follow", author.username),
            Some(reader),
            None,
            StatusCode::OK,
        )
        .await;
        assert_eq!(body["following"], true);
        // Idempotent.
        call(
            &app,
            "PUT",
            &format!("/api/v1/users/{}/follow", author.username),
            Some(reader),
            None,
            StatusCode::OK,
        )
        .await;
    }
    let profile = call(&app, "GET", "/api/v1/users/user0", None, None, StatusCode::OK).await;
    assert_eq!(profile["followers_count"], 7);
    let reader = call(&app, "GET", "/api/v1/users/user1", Some(&users[1]), None, StatusCode::OK).await;
    assert_eq!(reader["following_count"], 1);
    let seen_by_follower =
        call(&app, "GET", "/api/v1/users/user0", Some(&users[1]), None, StatusCode::OK).await;
    assert_eq!(seen_by_follower["followed_by_me"], true);

    // Readers' timelines are warm (empty) before the post, so fan-out is what fills them.
    for reader in &users[1..] {
        assert!(feed_ids(&app, reader, "").await.0.is_empty());
    }
    let post = post_text(&app, author, "hello followers").await;
    for reader in &users[1..] {
        assert_eq!(feed_ids(&app, reader, "").await.0, vec![post], "{}", reader.username);
        let tl = app.state.timelines().page(reader.id, None, 10).await.unwrap();
        assert_eq!(tl, Some(vec![post]), "fanned out on write into the cached timeline");
    }
    assert_eq!(feed_ids(&app, author, "").await.0, vec![post], "own posts are in one's feed");
    let profile = call(&app, "GET", "/api/v1/users/user0", None, None, StatusCode::OK).await;
    assert_eq!(profile["posts_count"], 1);

    // The user timeline.
    let body = call(&app, "GET", "/api/v1/users/user0/posts", None, None, StatusCode::OK).await;
    assert_eq!(page_ids(&body).0, vec![post]);
    assert_eq!(body["posts"][0]["author"]["username"], "user0");
    assert_eq!(body["posts"][0]["caption"], "hello followers");

    // Unfollow removes the author's posts from the feed.
    call(&app, "DELETE", "/api/v1/users/user0/follow", Some(&users[1]), None, StatusCode::OK).await;
    call(&app, "DELETE", "/api/v1/users/user0/follow", Some(&users[1]), None, StatusCode::OK).await;
    assert!(feed_ids(&app, &users[1], "").await.0.is_empty());
    let profile = call(&app, "GET", "/api/v1/users/user0", None, None, StatusCode::OK).await;
    assert_eq!(profile["followers_count"], 6);

    // Edges are stored on both sides.
    let counts = row_counts(&app).await;
    let get = |t: &str| counts.iter().find(|(n, _)| n == t).unwrap().1;
    assert_eq!(get("follows_out"), 6);
    assert_eq!(get("follows_in"), 6);
}

#[tokio::test]
async fn likes_are_idempotent_and_counted() {
    let app = spawn_app().await;
    let a = signup(&app, "author").await;
    let b = signup(&app, "fan").await;
    let id = post_text(&app, &a, "like me").await;
    let path = format!("/api/v1/posts/{id}/like");
    let body = call(&app, "PUT", &path, Some(&b), None, StatusCode::OK).await;
    assert_eq!((body["liked"].as_bool(), body["like_count"].as_i64()), (Some(true), Some(1)));
    let body = call(&app, "PUT", &path, Some(&b), None, StatusCode::OK).await;
    assert_eq!(body["like_count"], 1, "liking twice counts once");
    let post = call(&app, "GET", &format!("/api/v1/posts/{id}"), Some(&b), None, StatusCode::OK).await;
    assert_eq!((post["like_count"].as_i64(), post["liked_by_me"].as_bool()), (Some(1), Some(true)));
    let body = call(&app, "DELETE", &path, Some(&b), None, StatusCode::OK).await;
    assert_eq!(body["like_count"], 0);
    let body = call(&app, "DELETE", &path, Some(&b), None, StatusCode::OK).await;
    assert_eq!(body["like_count"], 0, "unliking twice is harmless");
    let post = call(&app, "GET", &format!("/api/v1/posts/{id}"), None, None, StatusCode::OK).await;
    assert_eq!(post["like_count"], 0, "the cached post was invalidated");
    assert!(post.get("liked_by_me").is_none());
}

#[tokio::test]
async fn feeds_page_with_cursors() {
    let app = spawn_app().await;
    let a = signup(&app, "writer").await;
    let mut ids = vec![];
    for i in 0..5 {
        ids.push(post_text(&app, &a, &format!("post {i}")).await);
    }
    ids.reverse();
    let (p1, c1) = feed_ids(&app, &a, "?limit=2").await;
    let (p2, c2) = feed_ids(&app, &a, &format!("?limit=2&cursor={}", c1.unwrap())).await;
    let (p3, c3) = feed_ids(&app, &a, &format!("?limit=2&cursor={}", c2.unwrap())).await;
    assert_eq!([p1, p2, p3].concat(), ids);
    assert_eq!(c3, None, "the last page has no cursor");

    let body = call(&app, "GET", "/api/v1/users/writer/posts?limit=3", None, None, StatusCode::OK).await;
    let (first, cursor) = page_ids(&body);
    let body = call(
        &app,
        "GET",
        &format!("/api/v1/users/writer/posts?limit=3&cursor={}", cursor.unwrap()),
        None,
        None,
        StatusCode::OK,
    )
    .await;
    let (second, end) = page_ids(&body);
    assert_eq!([first, second].concat(), ids);
    assert_eq!(end, None);
}

#[tokio::test]
async fn a_lost_timeline_is_rebuilt_from_the_database() {
    let app = spawn_app().await;
    let a = signup(&app, "poster").await;
    let b = signup(&app, "reader").await;
    call(&app, "PUT", "/api/v1/users/poster/follow", Some(&b), None, StatusCode::OK).await;
    let p1 = post_text(&app, &a, "one").await;
    let p2 = post_text(&app, &a, "two").await;
    app.state.timelines().drop_timeline(b.id).await.unwrap();
    assert_eq!(app.state.timelines().page(b.id, None, 10).await.unwrap(), None, "cold");
    let reads = app.state.timeline_reads().clone();
    let (warm, cold) = (reads.warm.get(), reads.cold.get());
    assert_eq!(feed_ids(&app, &b, "").await.0, vec![p2, p1]);
    assert_eq!((reads.warm.get(), reads.cold.get()), (warm, cold + 1), "a cold read, counted");
    assert_eq!(app.state.timelines().page(b.id, None, 10).await.unwrap(), Some(vec![p2, p1]), "rebuilt");
    assert_eq!(feed_ids(&app, &b, "").await.0, vec![p2, p1]);
    assert_eq!((reads.warm.get(), reads.cold.get()), (warm + 1, cold + 1), "then a warm one");
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        text.contains(&format!("millions_feed_timeline_reads_total{{result=\"cold\"}} {}", cold + 1)),
        "{text}"
    );
}

#[tokio::test]
async fn celebrities_are_merged_at_read_time_not_fanned_out() {
    let env = TestEnv::new().await;
    let app = env.spawn_with(|c| c.feed.celebrity_threshold = 2).await;
    let star = signup(&app, "star").await;
    let f1 = signup(&app, "fan_one").await;
    let f2 = signup(&app, "fan_two").await;
    let plain = signup(&app, "plain").await;
    for f in [&f1, &f2] {
        call(&app, "PUT", "/api/v1/users/star/follow", Some(f), None, StatusCode::OK).await;
    }
    call(&app, "PUT", "/api/v1/users/plain/follow", Some(&f1), None, StatusCode::OK).await;
    assert!(feed_ids(&app, &f1, "").await.0.is_empty(), "warm the timeline");
    let star_post = post_text(&app, &star, "from the stage").await;
    let plain_post = post_text(&app, &plain, "from the floor").await;
    let tl = app.state.timelines().page(f1.id, None, 10).await.unwrap().unwrap();
    assert_eq!(tl, vec![plain_post], "the celebrity's post was not fanned out");
    assert_eq!(feed_ids(&app, &f1, "").await.0, vec![plain_post, star_post], "merged at read time");
    assert_eq!(feed_ids(&app, &f2, "").await.0, vec![star_post]);
    assert_eq!(feed_ids(&app, &plain, "").await.0, vec![plain_post], "non-followers do not see it");
}

#[tokio::test]
async fn sessions_work_on_any_web_server_and_invalidations_reach_every_l1() {
    let env = TestEnv::new().await;
    // L1 entries outlive the test: only a pub/sub message can empty B's copy.
    let a = env.spawn_with(|c| c.cache.l1_ttl_secs = 3600).await;
    let b = env.spawn_with(|c| c.cache.l1_ttl_secs = 3600).await;
    // Both listeners are subscribed before anything is cached or written.
    let channel = a.state.redis().key("invalidate");
    eventually("both web servers listen for invalidations", || async {
        let mut conn = a.state.redis().conn().await.unwrap();
        let (_, n): (String, i64) =
            ::redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await.unwrap();
        n == 2
    })
    .await;
    let alice = signup(&a, "alice").await;
    let bob = signup(&b, "bob").await;

    // A session made on A works on B, and the reverse.
    call(&b, "GET", "/api/v1/feed", Some(&alice), None, StatusCode::OK).await;
    let post = post_text(&a, &bob, "written through A").await;
    let got = call(&b, "GET", &format!("/api/v1/posts/{post}"), None, None, StatusCode::OK).await;
    assert_eq!(got["caption"], "written through A");

    // B caches alice's profile in its L1, then a write through A changes it.
    let before = call(&b, "GET", "/api/v1/users/alice", None, None, StatusCode::OK).await;
    assert_eq!(before["followers_count"], 0);
    call(&a, "PUT", "/api/v1/users/alice/follow", Some(&bob), None, StatusCode::OK).await;
    eventually("B's L1 sees the new follower count", || async {
        let now = call(&b, "GET", "/api/v1/users/alice", None, None, StatusCode::OK).await;
        now["followers_count"] == 1
    })
    .await;
}

/// Hold every shard's `users` table locked (ACCESS EXCLUSIVE, in an open
/// transaction), so any query of it waits; dropping the guard's clients by
/// [`release`] commits and lets them through.
async fn lock_users(app: &testkit::TestApp) -> Vec<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
    let mut held = vec![];
    for url in &app.env.shards {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        client.batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await.unwrap();
        held.push((client, conn));
    }
    held
}

async fn release(held: Vec<(tokio_postgres::Client, tokio::task::JoinHandle<()>)>) {
    for (client, conn) in held {
        client.batch_execute("COMMIT").await.unwrap();
        drop(client);
        conn.await.unwrap();
    }
}

/// 64 concurrent `GET /api/v1/users/popular`, started while the loads they need
/// are held; returns them, still running.
fn stampede(app: &testkit::TestApp) -> Vec<tokio::task::JoinHandle<StatusCode>> {
    let client = reqwest::Client::new();
    (0..64)
        .map(|_| {
            let (client, url) = (client.clone(), app.url("/api/v1/users/popular"));
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect()
}

#[tokio::test]
async fn a_stampede_on_a_cold_key_loads_it_once() {
    let app = spawn_app().await;
    let created = call(
        &app,
        "POST",
        "/api/v1/users",
        None,
        Some(json!({"username": "popular", "password": "password123"})),
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let data = app.state.data().clone();
    let caches = &app.state.caches();
    let count = || (data.query_count("user_id_by_username"), data.query_count("profile"));

    // Everything cold. The first request's load of the name waits on the lock;
    // once all 64 have missed L1 and wait on it, the lock goes.
    let (ids0, profiles0) = count();
    let held = lock_users(&app).await;
    let requests = stampede(&app);
    eventually("all 64 requests wait on one load of the name", || async {
        caches.user_ids.misses_in_flight() == 64
    })
    .await;
    release(held).await;
    for r in requests {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    let (ids1, profiles1) = count();
    assert_eq!(ids1 - ids0, 1, "one name lookup for 64 concurrent misses");
    assert_eq!(profiles1 - profiles0, 1, "one profile load");
    assert_eq!(caches.metrics.get("uid", "miss"), 1);

    // The name is cached now; the profile alone goes cold (everywhere), and 64
    // requests meet on its load.
    caches.profiles.invalidate(&id).await;
    let held = lock_users(&app).await;
    let requests = stampede(&app);
    eventually("all 64 requests wait on one load of the profile", || async {
        caches.profiles.misses_in_flight() == 64
    })
    .await;
    release(held).await;
    for r in requests {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    let (ids2, profiles2) = count();
    assert_eq!(profiles2 - profiles1, 1, "one profile query for 64 concurrent misses");
    assert_eq!(ids2 - ids1, 0, "the name came from L1");
    assert_eq!(caches.metrics.get("profile", "miss"), 2);
    assert_eq!(caches.user_ids.misses_in_flight() + caches.profiles.misses_in_flight(), 0);
}

/// Method, path, user, body, expected status, expected error code.
type Case<'a> = (&'a str, String, Option<&'a User>, Option<serde_json::Value>, StatusCode, &'a str);

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let a = signup(&app, "victim").await;
    let post = post_text(&app, &a, "existing").await;
    // A user whose session expired: its row's expiry passed, and its cached copy
    // (kept since the login) is gone, as the copy's own expiry would drop it.
    let ghost = signup(&app, "ghost").await;
    exec_on_users_shard(
        &app,
        ghost.id,
        &format!("UPDATE sessions SET expires_at = now() WHERE user_id = {}", ghost.id),
    )
    .await;
    let token_key: String =
        sha2::Sha256::digest(ghost.token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    app.state.caches().sessions.invalidate(&token_key).await;
    // Tokens no server issued: junk, token-shaped, and a real one altered.
    let forged: Vec<User> = ["forged".to_owned(), "A".repeat(43), format!("{}x", &a.token[..42])]
        .into_iter()
        .map(|token| User { username: "victim".into(), id: a.id, token })
        .collect();

    let before = db_snapshot(&app).await;
    let long = "x".repeat(3000);
    let mut cases: Vec<Case> = vec![
        // A JSON array is not read as an object, field by position.
        (
            "POST",
            "/api/v1/users".into(),
            None,
            Some(json!(["arrayuser", "password123", null])),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/posts".into(),
            Some(&a),
            Some(json!(["by position"])),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/sessions".into(),
            None,
            Some(json!(["victim", "password123"])),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            None,
            Some(json!({"username": "ab", "password": "password123"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_username",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            None,
            Some(json!({"username": "", "password": "password123"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_username",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            None,
            Some(json!({"username": "x".repeat(31), "password": "password123"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_username",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            None,
            Some(json!({"username": "bad name", "password": "password123"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_username",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            None,
            Some(json!({"username": "newbie", "password": "short"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_password",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            None,
            Some(json!({"username": "newbie", "password": ""})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_password",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            None,
            Some(json!({"username": "newbie", "password": "p".repeat(129)})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_password",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            None,
            Some(json!({"username": "newbie", "password": "password123", "display_name": "d".repeat(51)})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_display_name",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            None,
            Some(json!({"username": "newbie", "password": "password123", "admin": true})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            None,
            Some(json!({"username": "newbie"})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            None,
            Some(json!({"username": "victim", "password": "password123"})),
            StatusCode::CONFLICT,
            "username_taken",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            None,
            Some(json!({"username": "VICTIM", "password": "password123"})),
            StatusCode::CONFLICT,
            "username_taken",
        ),
        (
            "POST",
            "/api/v1/sessions".into(),
            None,
            Some(json!({"username": "victim", "password": "wrong-password"})),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        ),
        (
            "POST",
            "/api/v1/sessions".into(),
            None,
            Some(json!({"username": "nobody", "password": "password123"})),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        ),
        (
            "POST",
            "/api/v1/sessions".into(),
            None,
            Some(json!({"username": "victim", "password": ""})),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        ),
        (
            "POST",
            "/api/v1/sessions".into(),
            None,
            Some(json!({"username": "", "password": ""})),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        ),
        // Right credentials, but an unknown field: refused before logging in.
        (
            "POST",
            "/api/v1/sessions".into(),
            None,
            Some(json!({"username": "victim", "password": "password123", "remember_me": true})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/sessions".into(),
            None,
            Some(json!({"username": "victim"})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/posts".into(),
            Some(&a),
            Some(json!({"caption": "hello", "author": "someone_else"})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        ("POST", "/api/v1/posts".into(), Some(&a), Some(json!({})), StatusCode::BAD_REQUEST, "invalid_body"),
        (
            "POST",
            "/api/v1/posts".into(),
            Some(&a),
            Some(json!({"caption": ""})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_caption",
        ),
        (
            "POST",
            "/api/v1/posts".into(),
            Some(&a),
            Some(json!({"caption": "   "})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_caption",
        ),
        (
            "POST",
            "/api/v1/posts".into(),
            Some(&a),
            Some(json!({"caption": long})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_caption",
        ),
        (
            "POST",
            "/api/v1/posts".into(),
            Some(&a),
            Some(json!({"caption": 7})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/posts".into(),
            None,
            Some(json!({"caption": "anonymous"})),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "PUT",
            "/api/v1/users/nobody_here/follow".into(),
            Some(&a),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "PUT",
            "/api/v1/users/victim/follow".into(),
            Some(&a),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "cannot_follow_self",
        ),
        (
            "PUT",
            "/api/v1/users/victim/follow".into(),
            None,
            None,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "PUT",
            format!("/api/v1/posts/{}/like", post + 1),
            Some(&a),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        ("PUT", "/api/v1/posts/abc/like".into(), Some(&a), None, StatusCode::BAD_REQUEST, "invalid_post_id"),
        ("PUT", "/api/v1/posts/-4/like".into(), Some(&a), None, StatusCode::BAD_REQUEST, "invalid_post_id"),
        ("GET", "/api/v1/posts/0".into(), None, None, StatusCode::BAD_REQUEST, "invalid_post_id"),
        ("GET", format!("/api/v1/posts/{}", post + 1), None, None, StatusCode::NOT_FOUND, "not_found"),
        ("GET", "/api/v1/users/nobody_here".into(), None, None, StatusCode::NOT_FOUND, "not_found"),
        (
            "GET",
            "/api/v1/feed?cursor=garbage".into(),
            Some(&a),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            "GET",
            "/api/v1/feed?cursor=AAAAAAAAAAA".into(),
            Some(&a),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        ("GET", "/api/v1/feed?limit=0".into(), Some(&a), None, StatusCode::BAD_REQUEST, "invalid_limit"),
        ("GET", "/api/v1/feed?limit=101".into(), Some(&a), None, StatusCode::BAD_REQUEST, "invalid_limit"),
        ("GET", "/api/v1/feed?limit=many".into(), Some(&a), None, StatusCode::BAD_REQUEST, "invalid_limit"),
        (
            "GET",
            "/api/v1/users/victim/posts?cursor=%%%".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            "GET",
            "/api/v1/users/victim/posts?limit=1&limit=2".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        ("GET", "/api/v1/nothing".into(), None, None, StatusCode::NOT_FOUND, "not_found"),
        ("PATCH", "/api/v1/users".into(), None, None, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        // Path segments that are not UTF-8 once decoded.
        ("GET", "/api/v1/users/%FF".into(), None, None, StatusCode::BAD_REQUEST, "invalid_path"),
        ("GET", "/api/v1/users/%FF/posts".into(), None, None, StatusCode::BAD_REQUEST, "invalid_path"),
        (
            "PUT",
            "/api/v1/users/%C3%28/follow".into(),
            Some(&a),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        ("GET", "/api/v1/posts/%FF".into(), None, None, StatusCode::BAD_REQUEST, "invalid_path"),
        ("PUT", "/api/v1/posts/%FF/like".into(), Some(&a), None, StatusCode::BAD_REQUEST, "invalid_path"),
        ("GET", "/api/v1/posts/12ab".into(), None, None, StatusCode::BAD_REQUEST, "invalid_post_id"),
        (
            "GET",
            "/api/v1/posts/99999999999999999999".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "invalid_post_id",
        ),
    ];
    // Writes with a forged or an expired session.
    for user in forged.iter().chain([&ghost]) {
        cases.extend([
            (
                "POST",
                "/api/v1/posts".into(),
                Some(user),
                Some(json!({"caption": "not mine"})),
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
            ),
            (
                "PUT",
                "/api/v1/users/victim/follow".into(),
                Some(user),
                None,
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
            ),
            (
                "PUT",
                format!("/api/v1/posts/{post}/like"),
                Some(user),
                None,
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
            ),
            (
                "DELETE",
                "/api/v1/sessions/current".into(),
                Some(user),
                None,
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
            ),
        ]);
    }
    for (method, path, user, body, status, code) in cases {
        let got = call(&app, method, &path, user, body.clone(), status).await;
        assert_eq!(error_code(&got), code, "{method} {path} {body:?}");
    }

    let client = reqwest::Client::new();
    // Malformed JSON, and JSON without its content type.
    let r = client
        .post(app.url("/api/v1/users"))
        .header("content-type", "application/json")
        .body("{\"username\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r.json().await.unwrap()), "invalid_json");
    let r = client
        .post(app.url("/api/v1/users"))
        .body(r#"{"username":"abc","password":"password123"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error_code(&r.json().await.unwrap()), "unsupported_media_type");
    let r = client
        .post(app.url("/api/v1/posts"))
        .bearer_auth(&a.token)
        .header("content-type", "text/plain")
        .body(r#"{"caption":"typed wrong"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error_code(&r.json().await.unwrap()), "unsupported_media_type");
    // Oversized body, its length declared.
    let huge = json!({"caption": "y".repeat(200_000)});
    let r = client.post(app.url("/api/v1/posts")).bearer_auth(&a.token).json(&huge).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&r.json().await.unwrap()), "payload_too_large");
    // Oversized body, chunked (no length declared): refused as it grows past the
    // JSON limit, not read up to the photo upload limit.
    let (status, body) = post_chunked_json(&app, "/api/v1/posts", &a.token, 1 << 20).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_code(&body), "payload_too_large");
    // Forged tokens, as bearer tokens and as cookies, for reads and writes.
    for user in &forged {
        let r = client.get(app.url("/api/v1/feed")).bearer_auth(&user.token).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{}", user.token);
        let r = client
            .post(app.url("/api/v1/posts"))
            .header("cookie", format!("sid={}", user.token))
            .json(&json!({"caption": "by cookie"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{}", user.token);
        assert_eq!(error_code(&r.json().await.unwrap()), "unauthenticated");
    }

    assert_eq!(
        db_snapshot(&app).await,
        before,
        "nothing was written to any shard, no session made or revived"
    );
}

/// POST `size` bytes of valid JSON (a caption of `y`s) as a chunked body, with no
/// `Content-Length`; returns the status and the JSON body of the answer.
async fn post_chunked_json(
    app: &testkit::TestApp,
    path: &str,
    token: &str,
    size: usize,
) -> (StatusCode, serde_json::Value) {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    const CHUNK: usize = 16 * 1024;
    let head = br#"{"caption":""#.to_vec();
    let chunks = std::iter::once(head)
        .chain((0..size / CHUNK).map(|_| vec![b'y'; CHUNK]))
        .chain(std::iter::once(br#""}"#.to_vec()))
        .map(|c| Ok::<_, std::io::Error>(axum::body::Bytes::from(c)));
    let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
    let request = http::Request::post(app.url(path))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<axum::body::Body>();
    let response = client.request(request).await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let bytes = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let app = spawn_app().await;
    let a = signup(&app, "mortal").await;
    call(&app, "GET", "/api/v1/feed", Some(&a), None, StatusCode::OK).await;
    // The session's row carries its expiry: the configured lifetime from its start.
    let shard = app.state.data().shard_map().shard_of_user(a.id);
    let (client, conn) =
        tokio_postgres::connect(&app.env.shards[shard.0 as usize], tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    let lifetime: f64 = client
        .query_one(
            "SELECT extract(epoch FROM expires_at - created_at)::float8 FROM sessions WHERE user_id = $1",
            &[&a.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(lifetime.round() as u64, app.state.config().sessions.ttl_secs, "sessions carry their TTL");
    // Its time passes. A web server that holds no copy of it reads the row: refused.
    client
        .batch_execute(&format!("UPDATE sessions SET expires_at = now() WHERE user_id = {}", a.id))
        .await
        .unwrap();
    drop(client);
    let _ = conn.await;
    let mut redis = app.state.redis().conn().await.unwrap();
    for key in redis_keys(&mut redis, &app.state.redis().key("c:session:*")).await {
        let _: () = ::redis::cmd("DEL").arg(key).query_async(&mut redis).await.unwrap();
    }
    let other = app.env.spawn().await;
    let r = send(&other, "GET", "/api/v1/feed", Some(&a), None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A copy cached before the expiry is refused past it too (unit-tested in
    // `sessions::tests::a_record_is_live_until_its_expiry`).
}

async fn redis_keys(conn: &mut ::redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    ::redis::cmd("KEYS").arg(pattern).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn observability_endpoints_and_request_ids() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    assert_eq!(client.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(client.get(app.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);

    let r = client
        .get(app.url("/api/v1/users/x_y_z"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-123", "echoed");
    let r = client.get(app.url("/healthz")).send().await.unwrap();
    let made = r.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(made.len(), 32, "made when missing: {made}");
    let longest = "a".repeat(128);
    let r = client.get(app.url("/healthz")).header("x-request-id", &longest).send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], longest.as_str(), "128 characters are kept");
    // Too long, or characters that could forge log lines: replaced by a made one.
    for bad in ["a".repeat(129), "a b".into(), "x\"},\"level\":\"ERROR".into(), "../etc".into()] {
        let r = client.get(app.url("/healthz")).header("x-request-id", &bad).send().await.unwrap();
        let got = r.headers()["x-request-id"].to_str().unwrap();
        assert!(got.len() == 32 && got.bytes().all(|b| b.is_ascii_hexdigit()), "{bad:?} became {got:?}");
    }
    let r = client
        .get(app.url("/healthz"))
        .header("x-request-id", "one")
        .header("x-request-id", "two")
        .send()
        .await
        .unwrap();
    let got: Vec<_> = r.headers().get_all("x-request-id").iter().collect();
    assert_eq!(got.len(), 1, "one id: {got:?}");
    assert_eq!(got[0].len(), 32, "two ids given: a new one is made");

    let text = client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        r#"millions_http_requests_total{route="/api/v1/users/{username}",method="GET",status="404"} 1"#,
        "millions_http_request_duration_seconds_bucket",
        "millions_cache_lookups_total",
        "millions_db_pool_connections",
        "millions_db_queries_total",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }

    let doc: serde_json::Value =
        client.get(app.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
}

/// `GET /internal/bucket-load` as `bucket → (reads, writes)`, checking its shape:
/// `{"buckets": [[bucket, reads, writes], ...]}`, in bucket order, no zero listed.
async fn bucket_load(app: &testkit::TestApp) -> std::collections::BTreeMap<u64, (u64, u64)> {
    let body = call(app, "GET", "/internal/bucket-load", None, None, StatusCode::OK).await;
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let mut load = std::collections::BTreeMap::new();
    for entry in body["buckets"].as_array().unwrap() {
        let [bucket, reads, writes] = entry.as_array().unwrap().as_slice() else { panic!("{entry}") };
        let (bucket, counts) =
            (bucket.as_u64().unwrap(), (reads.as_u64().unwrap(), writes.as_u64().unwrap()));
        assert!(bucket < 4096 && counts != (0, 0), "{entry}");
        assert!(load.last_key_value().is_none_or(|(b, _)| *b < bucket), "in bucket order: {body}");
        load.insert(bucket, counts);
    }
    load
}

#[tokio::test]
async fn bucket_load_counts_each_users_queries_on_their_bucket() {
    let app = spawn_app().await;
    assert_eq!(bucket_load(&app).await, Default::default(), "no query sent yet");
    let ann = signup(&app, "loaded_ann").await;
    let bucket = |u: &User| u64::from(sharding::user_bucket(u.id).get());
    let mut bob = signup(&app, "loaded_bob").await;
    for i in 0.. {
        if bucket(&bob) != bucket(&ann) {
            break;
        }
        bob = signup(&app, &format!("loaded_bob{i}")).await;
    }
    let before = bucket_load(&app).await;
    let (reads, writes) = before[&bucket(&ann)];
    assert!(reads >= 1 && writes >= 2, "signing up and logging in: {before:?}");

    // Ann posts and her posts are read: her bucket's counts grow, Bob's do not.
    post_text(&app, &ann, "counted").await;
    call(&app, "GET", "/api/v1/users/loaded_ann/posts", None, None, StatusCode::OK).await;
    let after = bucket_load(&app).await;
    let (more_reads, more_writes) = after[&bucket(&ann)];
    assert!(more_writes >= writes + 2, "the post and the drop of its outbox job: {before:?} → {after:?}");
    assert!(more_reads > reads, "the user's posts: {before:?} → {after:?}");
    assert_eq!(after[&bucket(&bob)], before[&bucket(&bob)], "another bucket's counts stay");
    let listed: std::collections::BTreeMap<u64, (u64, u64)> =
        app.state.data().bucket_load().iter().map(|l| (u64::from(l.bucket), (l.reads, l.writes))).collect();
    assert_eq!(after, listed, "the data layer's counts, as they are");
    let r = send(&app, "POST", "/internal/bucket-load", None, None).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn readiness_fails_while_draining_and_the_server_stops() {
    let app = spawn_app().await;
    let url = app.url("/readyz");
    app.state.start_draining();
    assert_eq!(reqwest::get(&url).await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    app.stop().await;
    assert!(reqwest::get(&url).await.is_err(), "no longer listening");
}

/// Backends of any shard of `env` waiting for a lock on `users`: (shard URL, pid).
async fn waiting_on_users(env: &TestEnv) -> Vec<(String, i32)> {
    let mut waiting = vec![];
    for url in &env.shards {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        let conn = tokio::spawn(conn);
        let rows = client
            .query(
                "SELECT pid FROM pg_locks WHERE NOT granted AND relation = 'users'::regclass \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await
            .unwrap();
        waiting.extend(rows.iter().map(|r| (url.clone(), r.get::<_, i32>(0))));
        drop(client);
        let _ = conn.await;
    }
    waiting
}

/// The state (`active`, `idle`, ...) of backend `pid` of the database at `url`.
async fn backend_state(url: &str, pid: i32) -> Option<String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    let row = client.query_opt("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid]).await.unwrap();
    drop(client);
    let _ = conn.await;
    row.and_then(|r| r.get(0))
}

/// The invalidate-then-stale-fill race, end to end: a profile load on server A
/// reads the row before a follow through server B commits and invalidates, and
/// its fill reaches Redis only after that. Neither Redis nor A's L1 may keep the
/// old count (before generations, both kept it for a whole TTL).
#[tokio::test]
async fn a_profile_load_overtaken_by_a_follow_is_cached_nowhere() {
    let env = TestEnv::new().await;
    // A's Redis connection is held below; its commands must wait, not time out.
    let a = env
        .spawn_with(|c| {
            c.redis.timeout_ms = 600_000;
            c.cache.l1_ttl_secs = 3600;
        })
        .await;
    let b = env.spawn().await;
    let star = signup(&b, "star").await;
    let fan = signup(&b, "fan").await;
    // A knows the name (in L1), not the profile.
    call(&a, "GET", "/api/v1/users/star", None, None, StatusCode::OK).await;
    a.state.caches().profiles.invalidate(&star.id.to_string()).await;

    // A misses the profile (it has read the entry and its generation from Redis)
    // and its query waits on the lock.
    let held = lock_users(&a).await;
    let read = tokio::spawn({
        let url = a.url("/api/v1/users/star");
        async move { reqwest::get(url).await.unwrap().json::<serde_json::Value>().await.unwrap() }
    });
    let mut waiting = vec![];
    eventually("A's profile query waits on the lock", async || {
        waiting = waiting_on_users(&env).await;
        !waiting.is_empty()
    })
    .await;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let (shard, pid) = waiting.pop().unwrap();
    // Hold A's Redis connection: a BLPOP on it makes Redis queue A's next
    // commands (its fill) until the list gets an element.
    let gate = a.state.redis().key("test:gate");
    let blocker = tokio::spawn({
        let (mut conn, gate) = (a.state.redis().conn().await.unwrap(), gate.clone());
        async move {
            let _: Option<(String, String)> =
                ::redis::cmd("BLPOP").arg(gate).arg(0).query_async(&mut conn).await.unwrap();
        }
    });
    let mut conn = b.state.redis().conn().await.unwrap();
    eventually("A's Redis connection is blocked", async || {
        let clients: String = ::redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await.unwrap();
        clients.contains("cmd=blpop")
    })
    .await;
    // A's query reads the old row (no follower yet) and finishes.
    release(held).await;
    eventually("A's profile query is done", || async {
        backend_state(&shard, pid).await.as_deref() != Some("active")
    })
    .await;
    // Now the write commits and invalidates (through B), then A's fill goes.
    call(&b, "PUT", "/api/v1/users/star/follow", Some(&fan), None, StatusCode::OK).await;
    let _: i64 = ::redis::cmd("RPUSH").arg(&gate).arg("go").query_async(&mut conn).await.unwrap();
    blocker.await.unwrap();
    let served = read.await.unwrap();
    assert_eq!(served["followers_count"], 0, "A's load read the row before the follow");

    let key = a.state.redis().key(&format!("c:profile:{}", star.id));
    let l2: Option<String> = ::redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
    if let Some(json) = l2 {
        let cached: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(cached["followers_count"], 1, "Redis must not keep the old count");
    }
    assert_eq!(a.state.caches().metrics.get("profile", "fill_refused"), 1);
    let again = call(&a, "GET", "/api/v1/users/star", None, None, StatusCode::OK).await;
    assert_eq!(again["followers_count"], 1, "A's L1 must not keep the old count");
}

/// `followed_by_me` comes from the viewer's cached followee list: the viewer's
/// own follow and unfollow invalidate it, so the next read shows the change even
/// though the list was cached (in both levels, with a long L1 lifetime) before.
#[tokio::test]
async fn followed_by_me_follows_the_viewers_own_follows_at_once() {
    let app = TestEnv::new().await.spawn_with(|c| c.cache.l1_ttl_secs = 3600).await;
    let (star, fan) = (signup(&app, "star").await, signup(&app, "fan").await);
    let seen = async || call(&app, "GET", "/api/v1/users/star", Some(&fan), None, StatusCode::OK).await;
    assert_eq!(seen().await["followed_by_me"], false);
    let misses = app.state.caches().metrics.get("followees", "miss");
    for on in [true, false, true] {
        let method = if on { "PUT" } else { "DELETE" };
        call(&app, method, "/api/v1/users/star/follow", Some(&fan), None, StatusCode::OK).await;
        assert_eq!(seen().await["followed_by_me"], on);
        assert_eq!(seen().await["followed_by_me"], on, "and from the cache");
    }
    assert_eq!(app.state.caches().metrics.get("followees", "miss"), misses + 3, "one load per change");
    let own = call(&app, "GET", "/api/v1/users/star", Some(&star), None, StatusCode::OK).await;
    assert_eq!(own["followed_by_me"], false, "one's own profile");
}

/// A follow or a like that committed and then failed before its invalidations
/// (its primary lost mid-commit, its web server killed) is retried by the client
/// and finds nothing to change: the retry still mends the caches, so the writer
/// reads the write and the counts are right.
#[tokio::test]
async fn a_retried_write_that_had_committed_mends_the_caches() {
    let app = TestEnv::new().await.spawn_with(|c| c.cache.l1_ttl_secs = 3600).await;
    let (star, fan) = (signup(&app, "star").await, signup(&app, "fan").await);
    let seen = async || call(&app, "GET", "/api/v1/users/star", Some(&fan), None, StatusCode::OK).await;
    let before = seen().await;
    assert_eq!(
        (before["followed_by_me"].clone(), before["followers_count"].clone()),
        (json!(false), json!(0))
    );
    // The first attempt: committed, caches untouched.
    assert_eq!(app.state.data().follow(fan.id, star.id).await.unwrap(), Change::Changed);
    assert_eq!(seen().await["followed_by_me"], false, "the caches are behind");
    // The retry.
    let r = call(&app, "PUT", "/api/v1/users/star/follow", Some(&fan), None, StatusCode::OK).await;
    assert_eq!(r["following"], true);
    let after = seen().await;
    assert_eq!((after["followed_by_me"].clone(), after["followers_count"].clone()), (json!(true), json!(1)));
    // A repeat with caches in agreement changes nothing and keeps them.
    let misses = app.state.caches().metrics.get("followees", "miss");
    call(&app, "PUT", "/api/v1/users/star/follow", Some(&fan), None, StatusCode::OK).await;
    assert_eq!(seen().await["followed_by_me"], true);
    assert_eq!(app.state.caches().metrics.get("followees", "miss"), misses, "no invalidation");

    // The same for a like and its count.
    let post =
        call(&app, "POST", "/api/v1/posts", Some(&star), Some(json!({"caption": "hi"})), StatusCode::CREATED)
            .await;
    let path = format!("/api/v1/posts/{}", post["id"].as_str().unwrap());
    assert_eq!(call(&app, "GET", &path, Some(&fan), None, StatusCode::OK).await["like_count"], 0);
    let id = PostId::from_i64(post["id"].as_str().unwrap().parse().unwrap()).unwrap();
    assert_eq!(app.state.data().like(id, fan.id).await.unwrap().0, Change::Changed);
    assert_eq!(call(&app, "GET", &path, Some(&fan), None, StatusCode::OK).await["like_count"], 0, "behind");
    call(&app, "PUT", &format!("{path}/like"), Some(&fan), None, StatusCode::OK).await;
    let shown = call(&app, "GET", &path, Some(&fan), None, StatusCode::OK).await;
    assert_eq!((shown["like_count"].clone(), shown["liked_by_me"].clone()), (json!(1), json!(true)));
}

#[tokio::test]
async fn an_account_is_locked_after_its_failed_logins_and_others_are_not() {
    let app = spawn_app().await;
    signup(&app, "target").await;
    let bystander = signup(&app, "bystander").await;
    let attempt = |username: &'static str, password: &'static str| {
        let url = app.url("/api/v1/sessions");
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&json!({"username": username, "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    // The default: 10 failed logins per account in 15 minutes.
    for i in 0..10 {
        let r = attempt("target", "guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // Locked: even the right password is refused, with when to retry.
    for password in ["guess", "password123"] {
        let r = attempt("Target", password).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{password}");
        let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=900).contains(&retry), "{retry}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_many_attempts");
    }
    // Another account is not affected, and a success clears its own count.
    for _ in 0..9 {
        assert_eq!(attempt("bystander", "guess").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login(&app, &bystander.username).await.username, "bystander");
    for _ in 0..9 {
        assert_eq!(attempt("bystander", "guess").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(attempt("bystander", "password123").await.status(), StatusCode::CREATED);
}

/// `POST path` with `body` as if through a load balancer for `client`
/// (`X-Forwarded-For`).
async fn from_client(
    app: &testkit::TestApp,
    client: &str,
    path: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    from_device(app, client, None, path, body).await
}

/// [`from_client`] with a `Cookie` header, if given.
async fn from_device(
    app: &testkit::TestApp,
    client: &str,
    cookie: Option<&str>,
    path: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    let mut request =
        reqwest::Client::new().post(app.url(path)).header("x-forwarded-for", client).json(&body);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

/// A 429 of `code` whose message names `what`, with a `Retry-After` within `window`.
async fn assert_limited(r: reqwest::Response, code: &str, what: &str, window: u64) {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=window).contains(&retry), "{retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains(what), "{body}");
}

#[tokio::test]
async fn logins_and_signups_are_limited_per_client_address_named_by_a_trusted_proxy() {
    // This test's requests come from 127.0.0.1, trusted as a load balancer would be.
    let app = TestEnv::new()
        .await
        .spawn_with(|c| {
            c.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            c.abuse.signups_per_addr = 3;
            c.abuse.failed_logins_per_addr = 6;
        })
        .await;
    let signup = |client: &'static str, name: &'static str| {
        from_client(&app, client, "/api/v1/users", json!({"username": name, "password": "password123"}))
    };
    for name in ["ann", "ben", "cid"] {
        assert_eq!(signup("198.51.100.1", name).await.status(), StatusCode::CREATED, "{name}");
    }
    assert_limited(signup("198.51.100.1", "dan").await, "too_many_signups", "from your address", 3600).await;
    // Refused means not made; another address may still sign up, and a forged
    // entry left of the proxy's own changes nothing.
    call(&app, "GET", "/api/v1/users/dan", None, None, StatusCode::NOT_FOUND).await;
    assert_eq!(signup("198.51.100.2", "dan").await.status(), StatusCode::CREATED);
    assert_limited(signup("198.51.100.2, 198.51.100.1", "eve").await, "too_many_signups", "address", 3600)
        .await;

    // Failed logins spread over accounts (under each account's own limit of 10)
    // add up per address.
    let login = |client: &'static str, name: &'static str, password: &'static str| {
        from_client(&app, client, "/api/v1/sessions", json!({"username": name, "password": password}))
    };
    for name in ["ann", "ben", "cid", "nobody", "ann", "ben"] {
        assert_eq!(login("203.0.113.5", name, "guess1234").await.status(), StatusCode::UNAUTHORIZED);
    }
    // Used up: even the right password is refused from there, and not from elsewhere.
    assert_limited(
        login("203.0.113.5", "ann", "password123").await,
        "too_many_attempts",
        "from your address",
        900,
    )
    .await;
    assert_eq!(login("203.0.113.6", "ann", "password123").await.status(), StatusCode::CREATED);
    // A success elsewhere did not clear the guesser's count.
    assert_eq!(login("203.0.113.5", "cid", "guess1234").await.status(), StatusCode::TOO_MANY_REQUESTS);
    // IPv6 clients count by their /64.
    for i in 0..6 {
        let r = login(["2001:db8::1", "[2001:db8::2]:4711"][i % 2], "ben", "guess1234").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    assert_eq!(login("2001:db8::3", "ben", "password123").await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login("2001:db8:0:1::3", "ben", "password123").await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn an_untrusted_peer_cannot_spread_its_attempts_over_forged_addresses() {
    // The default: no proxy trusted, so the peer is the client.
    let app = TestEnv::new().await.spawn_with(|c| c.abuse.failed_logins_per_addr = 3).await;
    signup(&app, "fay").await;
    for forged in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        let r = from_client(
            &app,
            forged,
            "/api/v1/sessions",
            json!({"username": "fay", "password": "guess1234"}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = from_client(
        &app,
        "192.0.2.4",
        "/api/v1/sessions",
        json!({"username": "fay", "password": "password123"}),
    )
    .await;
    assert_limited(r, "too_many_attempts", "from your address", 900).await;
}

#[tokio::test]
async fn a_known_device_logs_in_through_a_locked_account_and_address_until_it_fails_once() {
    let app = TestEnv::new()
        .await
        .spawn_with(|c| {
            c.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            c.abuse.failed_logins_per_addr = 12;
        })
        .await;
    signup(&app, "gus").await;
    let login = |client: &'static str, cookie: Option<String>, password: &'static str| {
        let app = &app;
        async move {
            let body = json!({"username": "gus", "password": password});
            from_device(app, client, cookie.as_deref(), "/api/v1/sessions", body).await
        }
    };
    // A login from a new device makes it known: a strict, HttpOnly cookie.
    let r = login("192.0.2.10", None, "password123").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let set: Vec<String> =
        r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let device = set.iter().find(|c| c.starts_with("did=")).unwrap_or_else(|| panic!("{set:?}"));
    assert!(device.contains("HttpOnly") && device.contains("SameSite=Strict"), "{device}");
    let cookie = device.split(';').next().unwrap().to_owned();
    // Someone else fails the account's logins from one address until both the
    // account and that address are locked.
    for i in 0..12 {
        let r = login("203.0.113.9", None, "guess1234").await;
        assert!([StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&r.status()), "{i}");
    }
    assert_eq!(login("192.0.2.10", None, "password123").await.status(), StatusCode::TOO_MANY_REQUESTS);
    // The known device still logs in, even from the locked address, and is not
    // given a new cookie.
    for from in ["192.0.2.10", "203.0.113.9"] {
        let r = login(from, Some(cookie.clone()), "password123").await;
        assert_eq!(r.status(), StatusCode::CREATED, "{from}");
        assert!(r.headers().get_all("set-cookie").iter().all(|c| !c.to_str().unwrap().starts_with("did=")));
    }
    // A cookie of another account, or a forged one, is no key.
    let other =
        login("192.0.2.10", Some("did=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()), "password123")
            .await;
    assert_eq!(other.status(), StatusCode::TOO_MANY_REQUESTS);
    // One failure from the device, and it is known no more.
    assert_eq!(
        login("192.0.2.10", Some(cookie.clone()), "guess1234").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login("192.0.2.10", Some(cookie), "password123").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn concurrent_guesses_get_exactly_the_limit_and_successes_do_not_use_it_up() {
    let app = TestEnv::new().await.spawn_with(|c| c.abuse.failed_logins_per_addr = 5).await;
    signup(&app, "hal").await;
    // Logins that succeed give their count back.
    for _ in 0..8 {
        login(&app, "hal").await;
    }
    // Twenty guesses at once, each at another account: five are checked, the rest
    // refused unhashed, however they interleave.
    let guesses = (0..20).map(|i| {
        let body = json!({"username": format!("guess{i}"), "password": "guess1234"});
        from_client(&app, "ignored", "/api/v1/sessions", body)
    });
    let statuses: Vec<StatusCode> =
        futures::future::join_all(guesses).await.iter().map(|r| r.status()).collect();
    let checked = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((checked, refused), (5, 15), "{statuses:?}");
}

#[tokio::test]
async fn the_operators_token_passes_the_per_address_limits_and_nothing_else_does() {
    const TOKEN: &str = "operator-token-0123456789";
    let app = TestEnv::new()
        .await
        .spawn_with(|c| {
            c.abuse.bypass_token = Some(TOKEN.into());
            c.abuse.signups_per_addr = 1;
        })
        .await;
    let signup = |name: &'static str, token: Option<&'static str>| {
        let mut r = reqwest::Client::new()
            .post(app.url("/api/v1/users"))
            .json(&json!({"username": name, "password": "password123"}));
        if let Some(token) = token {
            r = r.header("x-bypass-limits", token);
        }
        async move { r.send().await.unwrap().status() }
    };
    assert_eq!(signup("ivy", None).await, StatusCode::CREATED);
    assert_eq!(signup("jon", None).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(signup("jon", Some("operator-token-wrong")).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(signup("jon", Some(TOKEN)).await, StatusCode::CREATED);
    assert_eq!(signup("kim", Some(TOKEN)).await, StatusCode::CREATED);
}

#[tokio::test]
async fn an_impossible_username_gets_no_counter_of_its_own() {
    let app = spawn_app().await;
    let long = "x".repeat(20_000);
    let mut redis = app.state.redis().conn().await.unwrap();
    for name in [long.as_str(), "nobody_here"] {
        let r = from_client(
            &app,
            "ignored",
            "/api/v1/sessions",
            json!({"username": name, "password": "guess1234"}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let key = app.state.redis().key(&format!("lf:{name}"));
        let exists: bool = ::redis::cmd("EXISTS").arg(key).query_async(&mut redis).await.unwrap();
        // A possible name is counted, though no such account exists (the same
        // answer as a wrong password); an impossible one never becomes a key.
        assert_eq!(exists, name.len() < 31, "{}", &name[..name.len().min(20)]);
    }
}

/// `op`'s query count summed over the shards, from a server's `/metrics`.
async fn queries(app: &testkit::TestApp, op: &str) -> u64 {
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    let prefix = format!("millions_db_queries_total{{op=\"{op}\",");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn cold_pages_load_in_batches_and_logins_are_cached() {
    let env = TestEnv::new().await;
    let (a, b) = (env.spawn().await, env.spawn().await);
    let alice = signup(&a, "alice").await;
    let mut posts = Vec::new();
    for i in 0..5 {
        posts.push(post_text(&a, &alice, &format!("post {i}")).await);
    }
    posts.reverse();
    // A server that holds none of them reads her page: the five posts in one
    // query (not one each).
    let path = "/api/v1/users/alice/posts";
    let body = call(&b, "GET", path, None, None, StatusCode::OK).await;
    assert_eq!(page_ids(&body).0, posts);
    assert_eq!(queries(&b, "posts").await, 1, "one batch for the five posts");
    assert_eq!(queries(&b, "post").await, 0);
    assert_eq!(b.state.caches().metrics.get("post", "miss"), 5);
    // Read again: every post from L1.
    call(&b, "GET", path, None, None, StatusCode::OK).await;
    assert_eq!(queries(&b, "posts").await, 1);
    // A session is cached from its login: its first use, on the other server,
    // reads no shard.
    let sessions = queries(&b, "session").await;
    call(&b, "GET", "/api/v1/feed", Some(&alice), None, StatusCode::OK).await;
    assert_eq!(queries(&b, "session").await, sessions);
    assert_eq!(b.state.caches().metrics.get("session", "l2_hit"), 1);
}

/// An author's pages are served from their cached newest post ids: two pages,
/// one read of the shard; a new post and a deletion are in the next read, on
/// any server; a page past what is cached reads the shard.
#[tokio::test]
async fn an_authors_pages_come_from_their_cached_newest_posts() {
    let env = TestEnv::new().await;
    let (a, b) = (env.spawn().await, env.spawn().await);
    let alice = signup(&a, "alice").await;
    let mut posts = Vec::new();
    for i in 0..3 {
        posts.push(post_text(&a, &alice, &format!("post {i}")).await);
    }
    posts.reverse();
    let path = "/api/v1/users/alice/posts?limit=2";
    let (first, cursor) = page_ids(&call(&b, "GET", path, None, None, StatusCode::OK).await);
    let next = format!("{path}&cursor={}", cursor.unwrap());
    let (second, end) = page_ids(&call(&b, "GET", &next, None, None, StatusCode::OK).await);
    assert_eq!([first, second].concat(), posts);
    assert_eq!(end, None, "the cached ids are all of hers: the last page is known");
    assert_eq!(queries(&b, "recent_post_ids").await, 1, "her newest ids, read once for both pages");
    assert_eq!(queries(&b, "user_posts").await, 0, "no page read the shard");
    // Asked with `Cache-Control: no-cache` (however spelled), the page is read
    // from her shard; any other directive leaves it to the cache.
    for (value, from_shard) in [
        ("no-cache", true),
        ("max-age=0, No-Cache", true),
        ("no-store", false),
        ("no-cache=x", false),
        ("", false),
    ] {
        let before = queries(&b, "user_posts").await;
        let r = reqwest::Client::new()
            .get(b.url(path))
            .header(reqwest::header::CACHE_CONTROL, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{value:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(page_ids(&body).0, posts[..2], "{value:?}");
        assert_eq!(queries(&b, "user_posts").await - before, u64::from(from_shard), "{value:?}");
    }

    // Written through `a`, read on `b`: by her (past b's copy) and by anyone.
    let new = post_text(&a, &alice, "post 3").await;
    let (mine, _) = page_ids(&call(&b, "GET", path, Some(&alice), None, StatusCode::OK).await);
    assert_eq!(mine, [new, posts[0]]);
    call(&a, "DELETE", &format!("/api/v1/posts/{new}"), Some(&alice), None, StatusCode::NO_CONTENT).await;
    let (mine, _) = page_ids(&call(&b, "GET", path, Some(&alice), None, StatusCode::OK).await);
    assert_eq!(mine, posts[..2], "the deleted post is gone from her page");
    testkit::eventually("b's own copy hears of the deletion", async || {
        page_ids(&call(&b, "GET", path, None, None, StatusCode::OK).await).0 == posts[..2]
    })
    .await;

    // More posts than are cached (written before any read of them): the pages
    // within the cached ids come from them, the ones past them from the shard.
    let carol = signup(&a, "carol").await;
    let data = a.state.data();
    for i in 0..205 {
        data.create_post_queued(carol.id, &format!("bulk {i}")).await.unwrap();
    }
    let before = queries(&b, "user_posts").await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            None => "/api/v1/users/carol/posts?limit=100".to_string(),
            Some(c) => format!("/api/v1/users/carol/posts?limit=100&cursor={c}"),
        };
        let (ids, next) = page_ids(&call(&b, "GET", &page, Some(&alice), None, StatusCode::OK).await);
        seen.extend(ids);
        let Some(next) = next else { break };
        cursor = Some(next);
    }
    assert_eq!(seen.len(), 205, "every post, once");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert_eq!(
        queries(&b, "user_posts").await - before,
        2,
        "the pages past the 200 cached ids read the shard"
    );
}

/// The value of the sample `line_start` (`name{labels}` or `name`) in `/metrics`.
async fn metric(app: &testkit::TestApp, line_start: &str) -> f64 {
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    let value = text.lines().find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '));
    value.unwrap_or_else(|| panic!("no {line_start} in:\n{text}")).parse().unwrap()
}

#[tokio::test]
async fn business_counters_and_active_users_are_counted() {
    let app = spawn_app().await;
    let a = signup(&app, "maker").await;
    let b = signup(&app, "taker").await;
    let id = post_text(&app, &a, "count me").await;
    let like = format!("/api/v1/posts/{id}/like");
    for _ in 0..2 {
        call(&app, "PUT", &like, Some(&b), None, StatusCode::OK).await;
        call(&app, "PUT", "/api/v1/users/maker/follow", Some(&b), None, StatusCode::OK).await;
    }
    let photo = reqwest::multipart::Form::new()
        .part("photo", reqwest::multipart::Part::bytes(jpeg(64, 48)).file_name("p.jpg"));
    let r = reqwest::Client::new()
        .post(app.url("/api/v1/posts"))
        .bearer_auth(&a.token)
        .multipart(photo)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", r.text().await.unwrap());
    // A repeated like or follow changes nothing and is not counted.
    for (name, want) in [("signups", 2.0), ("posts", 2.0), ("photos", 1.0), ("likes", 1.0), ("follows", 1.0)]
    {
        assert_eq!(metric(&app, &format!("millions_business_{name}_total")).await, want, "{name}");
    }

    // The signed-in users served reach the DC's HyperLogLog of the day within
    // a flush (once a second), under a key that expires.
    let redis = app.state.redis().clone();
    let key = cache::active::day_key(redis.prefix(), cache::active::day_of(std::time::SystemTime::now()));
    testkit::eventually("both users counted active today", || {
        let (redis, key) = (redis.clone(), key.clone());
        async move {
            let n: u64 = redis
                .run(|mut c| async move { ::redis::cmd("PFCOUNT").arg(&key).query_async(&mut c).await })
                .await
                .unwrap();
            n == 2
        }
    })
    .await;
    assert!(metric(&app, "millions_active_users_flushes_total").await >= 1.0);
    let ttl: i64 = redis
        .run(|mut c| async move { ::redis::cmd("TTL").arg(&key).query_async(&mut c).await })
        .await
        .unwrap();
    assert!(ttl > 0, "the day key expires: {ttl}");
}

#[tokio::test]
async fn a_post_gone_from_a_cold_feed_is_left_out_and_no_author_is_asked_for_it() {
    let env = TestEnv::new().await;
    let (a, b) = (env.spawn().await, env.spawn().await);
    let (alice, bob) = (signup(&a, "alice").await, signup(&a, "bob").await);
    call(&a, "PUT", "/api/v1/users/alice/follow", Some(&bob), None, StatusCode::OK).await;
    let post = post_text(&a, &alice, "still here").await;
    let body = call(&a, "GET", "/api/v1/feed", Some(&bob), None, StatusCode::OK).await;
    assert_eq!(page_ids(&body).0, vec![post], "bob's timeline is built");
    // An id in bob's timeline whose post is gone (a newer one, so it leads the page).
    let gone = post + (1 << 22);
    a.state.timelines().push(gone, &[bob.id]).await.unwrap();
    // A server holding none of it in L1 shows the page without it...
    let body = call(&b, "GET", "/api/v1/feed", Some(&bob), None, StatusCode::OK).await;
    assert_eq!(page_ids(&body).0, vec![post]);
    // ... and looked up no author for it (no profile key `0` claimed in Redis).
    let mut redis = b.state.redis().conn().await.unwrap();
    let key = b.state.redis().key("gen:profile:0");
    let claimed: bool = ::redis::cmd("EXISTS").arg(key).query_async(&mut redis).await.unwrap();
    assert!(!claimed);
}
