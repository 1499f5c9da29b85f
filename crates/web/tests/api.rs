//! The JSON API against real PostgreSQL (two shards) and Redis.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
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
    assert_eq!(token.len(), 43, "256-bit token, base64url");
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

    call(&app, "DELETE", "/api/v1/sessions/current", Some(&user), None, StatusCode::NO_CONTENT).await;
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
    assert_eq!(feed_ids(&app, &b, "").await.0, vec![p2, p1]);
    assert_eq!(app.state.timelines().page(b.id, None, 10).await.unwrap(), Some(vec![p2, p1]), "rebuilt");
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
    let a = env.spawn().await;
    let b = env.spawn().await;
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

#[tokio::test]
async fn a_stampede_on_a_cold_key_loads_it_once() {
    let app = spawn_app().await;
    call(
        &app,
        "POST",
        "/api/v1/users",
        None,
        Some(json!({"username": "popular", "password": "password123"})),
        StatusCode::CREATED,
    )
    .await;
    let data = app.state.data().clone();
    let (profiles, ids) = (data.query_count("profile"), data.query_count("user_id_by_username"));
    let client = reqwest::Client::new();
    let requests = (0..64).map(|_| {
        let client = client.clone();
        let url = app.url("/api/v1/users/popular");
        async move { client.get(url).send().await.unwrap().status() }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    assert_eq!(data.query_count("profile") - profiles, 1, "one profile query for 64 concurrent misses");
    assert_eq!(data.query_count("user_id_by_username") - ids, 1, "one name lookup for 64 concurrent misses");
    let metrics = app.state.caches().metrics.clone();
    assert_eq!(metrics.get("profile", "miss"), 1);
}

/// Method, path, user, body, expected status, expected error code.
type Case<'a> = (&'a str, String, Option<&'a User>, Option<serde_json::Value>, StatusCode, &'a str);

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let a = signup(&app, "victim").await;
    let post = post_text(&app, &a, "existing").await;
    let before = row_counts(&app).await;
    let long = "x".repeat(3000);
    let cases: Vec<Case> = vec![
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
    ];
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
    // Oversized body.
    let huge = json!({"caption": "y".repeat(200_000)});
    let r = client.post(app.url("/api/v1/posts")).bearer_auth(&a.token).json(&huge).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&r.json().await.unwrap()), "payload_too_large");
    // Forged tokens.
    for forged in ["forged", &"A".repeat(43), &format!("{}x", &a.token[..42])] {
        let r = client.get(app.url("/api/v1/feed")).bearer_auth(forged).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{forged}");
    }

    assert_eq!(row_counts(&app).await, before, "nothing was written");
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let app = spawn_app().await;
    let a = signup(&app, "mortal").await;
    call(&app, "GET", "/api/v1/feed", Some(&a), None, StatusCode::OK).await;
    // Expire the session in Redis, as its TTL would.
    let mut conn = app.state.redis().conn().await.unwrap();
    let keys: Vec<String> = redis_keys(&mut conn, &app.state.redis().key("session:*")).await;
    assert_eq!(keys.len(), 1);
    let ttl: i64 = ::redis::cmd("TTL").arg(&keys[0]).query_async(&mut conn).await.unwrap();
    assert!(ttl > 0 && ttl <= 30 * 24 * 3600, "sessions carry a TTL: {ttl}");
    let _: () = ::redis::cmd("PEXPIRE").arg(&keys[0]).arg(1).query_async(&mut conn).await.unwrap();
    eventually("the session expires", || async {
        send(&app, "GET", "/api/v1/feed", Some(&a), None).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
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

#[tokio::test]
async fn readiness_fails_while_draining_and_the_server_stops() {
    let app = spawn_app().await;
    let url = app.url("/readyz");
    app.state.start_draining();
    assert_eq!(reqwest::get(&url).await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    app.stop().await;
    assert!(reqwest::get(&url).await.is_err(), "no longer listening");
}
