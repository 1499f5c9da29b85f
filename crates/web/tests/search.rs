//! Finding people and photos (issue 17): the user directory finds users written
//! straight into the shards (as `millions seed` does) by username and display-name
//! prefix, case-insensitively, within a limit, and from Redis once a prefix's
//! partition is filled (no shard query per keystroke); a prefix with more names
//! than a partition keeps is split and still answers longer queries; a signup is
//! found at once; suggestions rank friends of friends, then popular accounts; the
//! explore page ranks recent ready photo posts by likes; every bad input is a
//! clean 400 that stores nothing. Real PostgreSQL (two shards), Redis and a worker.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, TestEnv};

/// Insert users straight into their shards, as the seed's `COPY` does (no web
/// tier, no directory): `(username, display name)`; returns their ids.
async fn insert_users(app: &TestApp, users: &[(String, String)]) -> Vec<i64> {
    let map = app.state.data().shard_map();
    let mut by_shard: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    let mut ids = vec![];
    for (name, display) in users {
        let id = sharding::new_user_id(sharding::username_bucket(name));
        ids.push(id);
        let shard = map.shard_of_user(id).0;
        by_shard
            .entry(shard)
            .or_default()
            .push(format!("({id}, '{name}', '{}', 'x')", display.replace('\'', "''")));
    }
    for (shard, values) in by_shard {
        let sql = format!(
            "INSERT INTO users (user_id, username, display_name, password_hash) VALUES {}",
            values.join(", ")
        );
        let (client, conn) =
            tokio_postgres::connect(&app.env.shards[shard as usize], tokio_postgres::NoTls).await.unwrap();
        let conn = tokio::spawn(conn);
        client.batch_execute(&sql).await.unwrap();
        drop(client);
        let _ = conn.await;
    }
    ids
}

/// The usernames of a search's answer, in order.
async fn search(app: &TestApp, query: &str) -> Vec<String> {
    let body = call(app, "GET", &format!("/api/v1/search/users?{query}"), None, None, StatusCode::OK).await;
    usernames(&body["users"])
}

/// Shard queries the directory's fills sent (one per shard per fill).
fn shard_reads(app: &TestApp) -> u64 {
    app.state.data().query_count("users_with_prefix")
}

#[tokio::test]
async fn users_written_straight_into_the_shards_are_found_by_either_name_case_insensitively() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let users: Vec<(String, String)> = (1..=5)
        .map(|i| (format!("qzora_{i}"), format!("Velvet Quill {i}")))
        .chain([("qzorb".to_owned(), "Zed".to_owned()), ("other_q".to_owned(), "Qzora Fan".to_owned())])
        .collect();
    insert_users(&app, &users).await;

    // By username prefix, any case, in name order; a display name starting with
    // the prefix matches too ("Qzora Fan").
    let all = ["other_q", "qzora_1", "qzora_2", "qzora_3", "qzora_4", "qzora_5"];
    let found = search(&app, "q=QZORA").await;
    assert_eq!(found.len(), 6, "{found:?}");
    assert_eq!(found, all, "in name order (\"qzora fan\" sorts before \"qzora_1\")");
    assert!(all.iter().all(|n| found.contains(&(*n).to_owned())), "{found:?}");
    assert!(!found.contains(&"qzorb".to_owned()));
    // A limit.
    assert_eq!(search(&app, "q=qzora_&limit=2").await, ["qzora_1", "qzora_2"]);
    // By display-name prefix, spaces and all.
    assert_eq!(search(&app, "q=velvet%20quill%204").await, ["qzora_4"]);
    assert_eq!(search(&app, "q=VELVET+Q&limit=3").await, ["qzora_1", "qzora_2", "qzora_3"]);
    assert!(search(&app, "q=qzzz").await.is_empty());

    // The partition is filled: more keystrokes under it query no shard.
    let before = shard_reads(&app);
    assert_eq!(search(&app, "q=qzor").await.len(), 7);
    assert_eq!(search(&app, "q=qzora_3").await, ["qzora_3"]);
    assert_eq!(shard_reads(&app), before, "served from the directory");

    // A user who signs up is found at once, by a partition already filled.
    let filled = call(&app, "GET", "/api/v1/search/users?q=qzorc", None, None, StatusCode::OK).await;
    assert_eq!(usernames(&filled["users"]).len(), 0);
    call(
        &app,
        "POST",
        "/api/v1/users",
        None,
        Some(json!({"username": "qzorc_new", "password": "password123", "display_name": "Brand New"})),
        StatusCode::CREATED,
    )
    .await;
    let before = shard_reads(&app);
    assert_eq!(search(&app, "q=qzorc").await, ["qzorc_new"]);
    assert_eq!(search(&app, "q=brand+n").await, ["qzorc_new"]);
    assert_eq!(
        shard_reads(&app) - before,
        2,
        "only the unseen prefix \"br\" was filled (one read per shard)"
    );

    // An evicted partition is refilled from the shards, with the same answer.
    let key = app.state.redis().key("dir:qz");
    app.state
        .redis()
        .run(|mut c| async move { redis::cmd("DEL").arg(&key).query_async::<i64>(&mut c).await })
        .await
        .unwrap();
    let before = shard_reads(&app);
    assert_eq!(search(&app, "q=qzorc").await, ["qzorc_new"]);
    assert_eq!(search(&app, "q=qzora_&limit=2").await, ["qzora_1", "qzora_2"]);
    assert_eq!(shard_reads(&app) - before, 2, "refilled once");
}

#[tokio::test]
async fn a_prefix_with_more_names_than_a_partition_keeps_is_split_and_still_found() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let n = web::directory::PARTITION_CAP + 100;
    let users: Vec<(String, String)> =
        (0..n).map(|i| (format!("xsplit{i:05}"), format!("Crowd {i}"))).collect();
    insert_users(&app, &users).await;
    // The first names of the big prefix, and exact ones deep inside it.
    assert_eq!(search(&app, "q=xs&limit=3").await, ["xsplit00000", "xsplit00001", "xsplit00002"]);
    let last = format!("xsplit{:05}", n - 1);
    assert_eq!(search(&app, &format!("q={last}")).await, std::slice::from_ref(&last));
    assert_eq!(search(&app, "q=xsplit0105&limit=2").await, ["xsplit01050", "xsplit01051"]);
    // Filled once: again, no shard is asked.
    let before = shard_reads(&app);
    assert_eq!(search(&app, &format!("q={last}")).await, [last]);
    assert_eq!(search(&app, "q=xsplit0105&limit=2").await, ["xsplit01050", "xsplit01051"]);
    assert_eq!(shard_reads(&app), before);
    // A signup sorting first in a split partition is found there.
    call(
        &app,
        "POST",
        "/api/v1/users",
        None,
        Some(json!({"username": "xsaaa", "password": "password123"})),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(search(&app, "q=xs&limit=2").await, ["xsaaa", "xsplit00000"]);
}

#[tokio::test]
async fn a_renamed_user_is_found_by_the_new_name_only() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let ids = insert_users(&app, &[("wren_a".into(), "Old Handle".into())]).await;
    assert_eq!(search(&app, "q=old+h").await, ["wren_a"]);
    assert!(search(&app, "q=new+h").await.is_empty(), "the partition of \"ne\" is filled, without her");
    // Renamed behind the directory's back, then recorded as the profile edit will.
    exec_on_users_shard(
        &app,
        ids[0],
        &format!("UPDATE users SET display_name = 'New Handle' WHERE user_id = {}", ids[0]),
    )
    .await;
    app.state.caches().profiles.invalidate(&ids[0].to_string()).await;
    web::directory::record_user(&app.state, ids[0], "wren_a", "New Handle").await;
    assert!(search(&app, "q=old+h").await.is_empty(), "the stale name is never shown");
    // ... and it is out of its partition (which holds only its state now).
    let key = app.state.redis().key("dir:ol");
    let left: Vec<String> = app
        .state
        .redis()
        .run(|mut c| async move { redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).query_async(&mut c).await })
        .await
        .unwrap();
    assert_eq!(left, ["\u{1}"], "only the complete mark is left");
    let before = shard_reads(&app);
    assert_eq!(search(&app, "q=new+h").await, ["wren_a"], "recorded into the filled partition");
    assert_eq!(shard_reads(&app), before);
}

#[tokio::test]
async fn bad_searches_are_refused_with_a_code_and_store_nothing() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let long = "x".repeat(web::directory::MAX_QUERY + 1);
    let cases = [
        ("", "invalid_query"),
        ("q=", "invalid_query"),
        ("q=%20%20", "invalid_query"),
        ("q=a", "invalid_query"),
        (&format!("q={long}") as &str, "invalid_query"),
        ("q=ab%07", "invalid_query"),
        ("q=ab&limit=0", "invalid_limit"),
        ("q=ab&limit=101", "invalid_limit"),
        ("q=ab&limit=ten", "invalid_limit"),
        ("q=ab&page=2", "invalid_query"),
    ];
    let before = db_snapshot(&app).await;
    for (query, code) in cases {
        let body =
            call(&app, "GET", &format!("/api/v1/search/users?{query}"), None, None, StatusCode::BAD_REQUEST)
                .await;
        assert_eq!(error_code(&body), code, "{query}: {body}");
    }
    for path in ["/api/v1/suggestions?limit=0", "/api/v1/explore?limit=x", "/api/v1/explore?limit=101"] {
        let body = call(&app, "GET", path, None, None, StatusCode::BAD_REQUEST).await;
        assert_eq!(error_code(&body), "invalid_limit", "{path}: {body}");
    }
    let body = call(&app, "GET", "/api/v1/suggestions?sort=new", None, None, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_code(&body), "invalid_query");
    assert_eq!(db_snapshot(&app).await, before, "nothing stored");
    let keys = app.state.redis().key("dir:*");
    let found: Vec<String> = app
        .state
        .redis()
        .run(|mut c| async move { redis::cmd("KEYS").arg(&keys).query_async(&mut c).await })
        .await
        .unwrap();
    assert!(found.is_empty(), "no partition was filled: {found:?}");
    // The page says what is wrong, with the status.
    let r = app.client().get(app.url("/search?q=a")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("2 to 50"));
}

#[tokio::test]
async fn suggestions_are_friends_of_friends_by_shared_followees_then_popular_accounts() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let [alice, bob, carol, dave, erin, star] =
        ["alice", "bob", "carol", "dave", "erin", "star"].map(|n| n.to_owned());
    let mut users = std::collections::HashMap::new();
    for name in [&alice, &bob, &carol, &dave, &erin, &star] {
        users.insert(name.clone(), signup(&app, name).await);
    }
    let follow = async |who: &str, whom: &str| {
        call(&app, "PUT", &format!("/api/v1/users/{whom}/follow"), Some(&users[who]), None, StatusCode::OK)
            .await;
    };
    follow("alice", "bob").await;
    follow("alice", "carol").await;
    follow("bob", "dave").await;
    follow("carol", "dave").await;
    follow("bob", "erin").await;
    follow("bob", "alice").await;
    for fan in ["bob", "dave", "erin"] {
        follow(fan, "star").await;
    }

    let body = call(&app, "GET", "/api/v1/suggestions", Some(&users["alice"]), None, StatusCode::OK).await;
    let got: Vec<(String, String, Value)> = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["user"]["username"].as_str().unwrap().to_owned(),
                s["reason"].as_str().unwrap().to_owned(),
                s["mutual_count"].clone(),
            )
        })
        .collect();
    // Dave (followed by both of Alice's followees), then Erin and Star (one each,
    // by id), then nobody else: Alice, Bob and Carol are out.
    assert_eq!(got[0], ("dave".into(), "followed_by_followees".into(), json!(2)), "{body}");
    let rest: Vec<&str> = got[1..].iter().map(|g| g.0.as_str()).collect();
    assert!(rest.contains(&"erin") && rest.contains(&"star"), "{body}");
    assert_eq!(got.len(), 3, "{body}");
    assert!(got.iter().all(|g| g.2.as_i64().is_some_and(|n| n >= 1)));
    assert_eq!(got[0].0, "dave");

    // Signed out: the most followed accounts.
    let body = call(&app, "GET", "/api/v1/suggestions?limit=2", None, None, StatusCode::OK).await;
    let popular: Vec<&str> =
        body["users"].as_array().unwrap().iter().map(|s| s["user"]["username"].as_str().unwrap()).collect();
    assert_eq!(popular[0], "star", "{body}");
    assert_eq!(popular.len(), 2);
    assert_eq!(body["users"][0]["reason"], "popular");
    assert!(body["users"][0].get("mutual_count").is_none());

    // The page shows them.
    let browser = browser(&app, "alice").await;
    let html = page(&app, &browser, "/search").await;
    assert!(html.contains("Followed by 2 people you follow") && html.contains("/u/dave"), "{html}");
    let html = page(&app, &browser, "/search?q=DA").await;
    assert!(html.contains("@dave"), "{html}");
}

#[tokio::test]
async fn explore_ranks_recent_ready_photo_posts_by_likes() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let worker = env.spawn_worker().await;
    let ann = signup(&app, "ann").await;
    let ben = signup(&app, "ben").await;
    let cat = signup(&app, "cat").await;
    let photo = async |user: &User| -> String {
        post_photo(&app, user, jpeg(64, 48), "a photo").await["id"].as_str().unwrap().to_owned()
    };
    let quiet = photo(&ann).await;
    let liked = photo(&ben).await;
    let text = post_text(&app, &cat, "no photo").await;
    for id in [&quiet, &liked] {
        eventually("the photo to be processed", async || {
            let p = call(&app, "GET", &format!("/api/v1/posts/{id}"), None, None, StatusCode::OK).await;
            p["status"] == "ready"
        })
        .await;
    }
    for user in [&ann, &cat] {
        call(&app, "PUT", &format!("/api/v1/posts/{liked}/like"), Some(user), None, StatusCode::OK).await;
    }
    call(&app, "PUT", &format!("/api/v1/posts/{text}/like"), Some(&ann), None, StatusCode::OK).await;

    let body = call(&app, "GET", "/api/v1/explore", None, None, StatusCode::OK).await;
    let ids: Vec<&str> =
        body["posts"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [liked.as_str(), quiet.as_str()], "most liked first, no text post: {body}");
    assert_eq!(body["posts"][0]["like_count"], 2);
    assert!(body["posts"][0]["photo"]["thumbnails"].as_array().is_some_and(|t| !t.is_empty()));
    let body = call(&app, "GET", "/api/v1/explore?limit=1", None, None, StatusCode::OK).await;
    assert_eq!(body["posts"].as_array().unwrap().len(), 1);
    let html = app.client().get(app.url("/explore")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains(&format!("/p/{liked}")) && html.contains(&format!("/p/{quiet}")), "{html}");
    worker.stop().await;
}
