//! Deleting one's own post: gone from its page, its author's and followers'
//! timelines and every cache at once; its likes, comments (on every shard) and
//! photo objects (once nothing names them) by its clean-up job, on a real worker.

mod common;

use common::*;
use data::PostId;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, TestEnv};

/// The ids in `user`'s cached timeline (`None`: cold).
async fn timeline(app: &TestApp, user: &User) -> Option<Vec<i64>> {
    app.state.timelines().page(user.id, None, 100).await.unwrap()
}

async fn posts_count(app: &TestApp, username: &str) -> i64 {
    let body = call(app, "GET", &format!("/api/v1/users/{username}"), None, None, StatusCode::OK).await;
    body["posts_count"].as_i64().unwrap()
}

async fn photo_post(app: &TestApp, user: &User, bytes: Vec<u8>) -> i64 {
    post_photo(app, user, bytes, "").await["id"].as_str().unwrap().parse().unwrap()
}

async fn status(app: &TestApp, post: i64) -> String {
    let body = call(app, "GET", &format!("/api/v1/posts/{post}"), None, None, StatusCode::OK).await;
    body["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_deleted_post_leaves_every_timeline_cache_count_and_shard() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let author = signup(&app, "author").await;
    let mut fans = Vec::new();
    for i in 0..6 {
        let fan = signup(&app, &format!("fan_{i}")).await;
        call(&app, "PUT", "/api/v1/users/author/follow", Some(&fan), None, StatusCode::OK).await;
        fans.push(fan);
    }
    let map = app.state.data().shard_map();
    let shards: std::collections::BTreeSet<_> = fans.iter().map(|u| map.shard_of_user(u.id)).collect();
    assert_eq!(shards.len(), 2, "the fans (and their comments) are on both shards");
    // Everyone's timeline is warm: the post is pushed into each.
    for u in fans.iter().chain([&author]) {
        feed_ids(&app, u, "").await;
    }
    let keep = post_text(&app, &author, "stays").await;
    let post = post_text(&app, &author, "goes").await;
    for fan in &fans {
        call(&app, "PUT", &format!("/api/v1/posts/{post}/like"), Some(fan), None, StatusCode::OK).await;
        let path = format!("/api/v1/posts/{post}/comments");
        call(&app, "POST", &path, Some(fan), Some(json!({"body": "nice"})), StatusCode::CREATED).await;
        assert_eq!(timeline(&app, fan).await.unwrap(), vec![post, keep]);
        assert_eq!(feed_ids(&app, fan, "").await.0, vec![post, keep], "cached in the post cache too");
    }
    assert_eq!(posts_count(&app, "author").await, 2);
    // The author is told of the likes and comments (and the follows).
    let worker = env.spawn_worker().await;
    let about_post = async || {
        let page =
            call(&app, "GET", "/api/v1/notifications?limit=100", Some(&author), None, StatusCode::OK).await;
        page["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["post_id"].as_str() == Some(post.to_string().as_str()))
            .count()
    };
    eventually("the likes and comments are notified", async || about_post().await == 12).await;
    worker.stop().await;

    call(&app, "DELETE", &format!("/api/v1/posts/{post}"), Some(&author), None, StatusCode::NO_CONTENT).await;
    assert_eq!(about_post().await, 0, "its notifications went with it");
    let unread = call(&app, "GET", "/api/v1/notifications/unread", Some(&author), None, StatusCode::OK).await;
    assert_eq!(unread["unread"], 6, "the follows' are left, and the cached count knows it: {unread}");

    // At once: its page, every timeline, feed and list, and the author's count.
    let body = call(&app, "GET", &format!("/api/v1/posts/{post}"), None, None, StatusCode::NOT_FOUND).await;
    assert_eq!(error_code(&body), "not_found");
    for u in fans.iter().chain([&author]) {
        assert_eq!(timeline(&app, u).await.unwrap(), vec![keep], "taken out of {}'s timeline", u.username);
        assert_eq!(feed_ids(&app, u, "").await.0, vec![keep]);
    }
    let posts = call(&app, "GET", "/api/v1/users/author/posts", None, None, StatusCode::OK).await;
    assert_eq!(page_ids(&posts).0, vec![keep]);
    assert_eq!(posts_count(&app, "author").await, 1);
    assert_eq!(env.count(&format!("SELECT count(*) FROM likes WHERE post_id = {post}")).await, 0);
    assert_eq!(env.count(&format!("SELECT count(*) FROM comment_counts WHERE post_id = {post}")).await, 0);
    // Its comments, on the fans' shards, go with the clean-up job.
    assert_eq!(env.count(&format!("SELECT count(*) FROM comments WHERE post_id = {post}")).await, 6);
    let worker = env.spawn_worker().await;
    eventually("the clean-up job deleted the comments on every shard", async || {
        env.count(&format!("SELECT count(*) FROM comments WHERE post_id = {post}")).await == 0
    })
    .await;
    eventually("the clean-up job is done", async || {
        env.count("SELECT count(*) FROM jobs WHERE kind = 'post_deleted'").await == 0
    })
    .await;
    worker.stop().await;
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'dead'").await,
        0,
        "no job failed for good"
    );
    // Gone is gone.
    let path = format!("/api/v1/posts/{post}");
    let body = call(&app, "DELETE", &path, Some(&author), None, StatusCode::NOT_FOUND).await;
    assert_eq!(error_code(&body), "not_found");
}

#[tokio::test]
async fn deletes_of_others_posts_and_bad_ids_are_refused_and_change_nothing() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let alice = signup(&app, "alice").await;
    let bob = signup(&app, "bob").await;
    let post = post_text(&app, &alice, "mine").await;
    let before = row_counts(&app).await;
    let path = format!("/api/v1/posts/{post}");
    let body = call(&app, "DELETE", &path, Some(&bob), None, StatusCode::FORBIDDEN).await;
    assert_eq!(error_code(&body), "forbidden");
    let body = call(&app, "DELETE", &path, None, None, StatusCode::UNAUTHORIZED).await;
    assert_eq!(error_code(&body), "unauthenticated");
    let body = call(&app, "DELETE", "/api/v1/posts/12345", Some(&alice), None, StatusCode::NOT_FOUND).await;
    assert_eq!(error_code(&body), "not_found");
    for bad in ["abc", "0", "-3", "1.5"] {
        let path = format!("/api/v1/posts/{bad}");
        let body = call(&app, "DELETE", &path, Some(&alice), None, StatusCode::BAD_REQUEST).await;
        assert_eq!(error_code(&body), "invalid_post_id", "{bad}");
    }
    assert_eq!(row_counts(&app).await, before, "nothing changed");
    call(&app, "GET", &path, None, None, StatusCode::OK).await;
    // Through the page's form, someone else's post: no button, and refused.
    let browser = browser(&app, "bob").await;
    let html = page(&app, &browser, &format!("/p/{post}")).await;
    assert!(!html.contains("Delete this post"), "no button on someone else's post");
    let form = [("csrf", csrf_of(&html))];
    let r = browser.post(app.url(&format!("/p/{post}/delete"))).form(&form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The author's own page has the button, which deletes it.
    let browser = common::browser(&app, "alice").await;
    let html = page(&app, &browser, &format!("/p/{post}")).await;
    assert!(html.contains("Delete this post"));
    assert_eq!(row_counts(&app).await, before, "nothing changed");
    let form = [("csrf", csrf_of(&html))];
    let r = browser.post(app.url(&format!("/p/{post}/delete"))).form(&form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/u/alice");
    call(&app, "GET", &path, None, None, StatusCode::NOT_FOUND).await;
}

/// The web server dies right after the deletion commits (the data layer's
/// statement alone): the clean-up job takes the post out of the timelines.
/// And a photo's objects go only once no post names them.
#[tokio::test]
async fn the_clean_up_job_finishes_what_the_server_did_not_and_keeps_shared_photos() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let alice = signup(&app, "alice").await;
    let bob = signup(&app, "bob").await;
    call(&app, "PUT", "/api/v1/users/alice/follow", Some(&bob), None, StatusCode::OK).await;
    feed_ids(&app, &bob, "").await;
    let post = post_text(&app, &alice, "half deleted").await;
    assert_eq!(timeline(&app, &bob).await.unwrap(), vec![post]);
    let data = app.state.data().clone();
    let deleted = data.delete_post(PostId::from_i64(post).unwrap(), alice.id).await.unwrap();
    assert!(deleted.is_ok());
    assert_eq!(timeline(&app, &bob).await.unwrap(), vec![post], "nobody took it out yet");

    // The same photo posted twice (one set of objects) and another photo.
    let worker = env.spawn_worker().await;
    let first = photo_post(&app, &alice, jpeg(320, 240)).await;
    let second = photo_post(&app, &bob, jpeg(320, 240)).await;
    let other = photo_post(&app, &alice, jpeg(200, 300)).await;
    for p in [first, second, other] {
        eventually("the photo is processed", async || status(&app, p).await == "ready").await;
    }
    eventually("the clean-up job took the post out of bob's timeline", async || {
        timeline(&app, &bob).await.is_some_and(|t| !t.contains(&post))
    })
    .await;
    let all = stored_files(&app);
    let shared = |app: &TestApp| stored_files(app).len();
    assert!(!all.is_empty());
    call(&app, "DELETE", &format!("/api/v1/posts/{first}"), Some(&alice), None, StatusCode::NO_CONTENT).await;
    eventually("the first photo's clean-up ran", async || {
        env.count("SELECT count(*) FROM jobs WHERE kind = 'post_deleted'").await == 0
    })
    .await;
    assert_eq!(shared(&app), all.len(), "bob's post names the same objects: all kept");
    call(&app, "DELETE", &format!("/api/v1/posts/{second}"), Some(&bob), None, StatusCode::NO_CONTENT).await;
    eventually("the shared objects are removed once nothing names them", async || {
        shared(&app) < all.len()
            && env.count("SELECT count(*) FROM jobs WHERE kind = 'post_deleted'").await == 0
    })
    .await;
    let left = stored_files(&app);
    let body = call(&app, "GET", &format!("/api/v1/posts/{other}"), None, None, StatusCode::OK).await;
    let photo = &body["photo"];
    // A small photo's thumbnails may be the same bytes as each other (one object).
    let keys: std::collections::BTreeSet<String> = std::iter::once(&photo["original"])
        .chain(photo["thumbnails"].as_array().unwrap())
        .map(|i| i["url"].as_str().unwrap().rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(left.len(), keys.len(), "only the other photo's objects are left: {left:?}");
    for key in keys {
        assert!(left.iter().any(|p| p.file_name().unwrap().to_str().unwrap() == key), "{key} kept");
    }
    worker.stop().await;
    assert_eq!(env.count("SELECT count(*) FROM jobs WHERE state = 'dead'").await, 0);
}

/// What a stand-in for the controller's `POST /api/cdn/purge` received: each
/// request's `Authorization` and body. Its first answer is a 502 (an edge not
/// reached), then 200s.
#[derive(Clone, Default)]
struct Purges(std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>);

async fn purge_endpoint(purges: Purges) -> String {
    use axum::http::{HeaderMap, StatusCode as Status};
    let app = axum::Router::new().route(
        "/api/cdn/purge",
        axum::routing::post(move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
            let purges = purges.clone();
            async move {
                let auth =
                    headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let mut seen = purges.0.lock().unwrap();
                seen.push((auth, body));
                if seen.len() == 1 { Status::BAD_GATEWAY } else { Status::OK }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/api/cdn/purge")
}

/// A deleted photo's removed objects are purged from the CDN (through the
/// controller's purge, here a stand-in), with the token; a purge the controller
/// could not complete retries the job until it does. Objects still named are not.
#[tokio::test]
async fn removed_objects_are_purged_from_the_cdn_and_a_failed_purge_is_retried() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let ann = signup(&app, "ann").await;
    let purges = Purges::default();
    let url = purge_endpoint(purges.clone()).await;
    let token = "purge-token-0123456789";
    let worker = env
        .spawn_worker_with(|c| {
            c.media.cdn_purge_url = Some(url.clone());
            c.media.cdn_purge_token = Some(token.to_owned());
        })
        .await;
    let post = photo_post(&app, &ann, jpeg(320, 240)).await;
    eventually("the photo is processed", async || status(&app, post).await == "ready").await;
    let body = call(&app, "GET", &format!("/api/v1/posts/{post}"), None, None, StatusCode::OK).await;
    let mut paths: Vec<String> = std::iter::once(&body["photo"]["original"])
        .chain(body["photo"]["thumbnails"].as_array().unwrap())
        .map(|i| format!("/media/{}", i["url"].as_str().unwrap().rsplit('/').next().unwrap()))
        .collect();
    paths.sort();
    paths.dedup();
    assert!(purges.0.lock().unwrap().is_empty(), "nothing purged for a new post");

    call(&app, "DELETE", &format!("/api/v1/posts/{post}"), Some(&ann), None, StatusCode::NO_CONTENT).await;
    eventually("the clean-up purged the objects, again after the 502", async || {
        purges.0.lock().unwrap().len() >= 2
            && env.count("SELECT count(*) FROM jobs WHERE kind = 'post_deleted'").await == 0
    })
    .await;
    worker.stop().await;
    let seen = purges.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one failed purge, one that went through: {seen:?}");
    for (auth, body) in &seen {
        assert_eq!(auth, &format!("Bearer {token}"));
        let mut sent: Vec<String> =
            body["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
        sent.sort();
        assert_eq!(sent, paths, "every removed object, once");
    }
    assert!(stored_files(&app).is_empty(), "removed from the store too");
    assert_eq!(env.count("SELECT count(*) FROM jobs WHERE state = 'dead'").await, 0);
}
