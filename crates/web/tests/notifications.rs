//! Notifications: produced through the job queue (never inline in the request),
//! delivered exactly once however often their job runs — a worker that dies
//! after delivering, one stopped while holding the job, a web server gone after
//! acknowledging — the unread count (API and top bar), marking read, paging,
//! and bad input refused with nothing changed.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::{Value, json};
use testkit::{TestApp, TestEnv};

async fn unread(app: &TestApp, user: &User) -> i64 {
    let body = call(app, "GET", "/api/v1/notifications/unread", Some(user), None, StatusCode::OK).await;
    body["unread"].as_i64().unwrap_or_else(|| panic!("a count: {body}"))
}

async fn list(app: &TestApp, user: &User, query: &str) -> Value {
    call(app, "GET", &format!("/api/v1/notifications{query}"), Some(user), None, StatusCode::OK).await
}

/// (kind, actor's username) of each notification of a page.
fn kinds(page: &Value) -> Vec<(String, String)> {
    page["notifications"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {page}"))
        .iter()
        .map(|n| {
            (n["kind"].as_str().unwrap().to_owned(), n["actor"]["username"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn ids(page: &Value) -> Vec<i64> {
    page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

async fn notify_jobs(env: &TestEnv) -> i64 {
    env.count("SELECT count(*) FROM jobs WHERE kind = 'notify'").await
}

async fn stored(env: &TestEnv) -> i64 {
    env.count("SELECT count(*) FROM notifications").await
}

#[tokio::test]
async fn follows_likes_and_comments_notify_through_the_queue_once_and_never_oneself() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let alice = signup(&app, "alice").await;
    let bob = signup(&app, "bob").await;
    let post = post_text(&app, &alice, "look").await;
    assert_eq!(unread(&app, &alice).await, 0);

    // No worker yet: the requests succeed and only queue the notifications.
    call(&app, "PUT", "/api/v1/users/alice/follow", Some(&bob), None, StatusCode::OK).await;
    call(&app, "PUT", &format!("/api/v1/posts/{post}/like"), Some(&bob), None, StatusCode::OK).await;
    // Repeats change nothing and queue nothing; one's own like notifies no one.
    call(&app, "PUT", "/api/v1/users/alice/follow", Some(&bob), None, StatusCode::OK).await;
    call(&app, "PUT", &format!("/api/v1/posts/{post}/like"), Some(&bob), None, StatusCode::OK).await;
    call(&app, "PUT", &format!("/api/v1/posts/{post}/like"), Some(&alice), None, StatusCode::OK).await;
    assert_eq!(notify_jobs(&env).await, 2, "one job per new follow or like of someone else's");
    assert_eq!(stored(&env).await, 0, "not inline in the request");
    assert_eq!(kinds(&list(&app, &alice, "").await), vec![]);

    let _worker = env.spawn_worker().await;
    eventually("the worker to deliver both (and drop the cached count)", async || {
        unread(&app, &alice).await == 2
    })
    .await;
    let page = list(&app, &alice, "").await;
    let mut got = kinds(&page);
    got.sort();
    assert_eq!(got, [("follow".into(), "bob".into()), ("like".into(), "bob".into())]);
    assert_eq!(page["unread"], 2);
    assert!(page["notifications"].as_array().unwrap().iter().all(|n| n["read"] == false));
    let like = page["notifications"].as_array().unwrap().iter().find(|n| n["kind"] == "like").unwrap();
    assert_eq!(like["post_id"], post.to_string());
    assert!(like.get("comment_id").is_none(), "{like}");
    assert_eq!(unread(&app, &bob).await, 0, "bob was told nothing");

    // Unlike and like again, unfollow and follow again: queued, delivered once.
    for (method, path) in [
        ("DELETE", format!("/api/v1/posts/{post}/like")),
        ("PUT", format!("/api/v1/posts/{post}/like")),
        ("DELETE", "/api/v1/users/alice/follow".to_owned()),
        ("PUT", "/api/v1/users/alice/follow".to_owned()),
    ] {
        call(&app, method, &path, Some(&bob), None, StatusCode::OK).await;
    }
    eventually("the repeated events' jobs to run", async || notify_jobs(&env).await == 0).await;
    assert_eq!(stored(&env).await, 2, "an event notifies once");
    assert_eq!(unread(&app, &alice).await, 2);

    // A comment's job (enqueued with the comment by the comments code) is
    // delivered the same way, with its comment.
    let payload = json!({"kind": "comment", "recipient": alice.id, "actor": bob.id, "post_id": post, "comment_id": 4242});
    app.state.data().enqueue(data::NOTIFY_JOB, bob.id, payload, data::NOTIFY_MAX_ATTEMPTS).await.unwrap();
    eventually("the comment's notification", async || unread(&app, &alice).await == 3).await;
    let page = list(&app, &alice, "").await;
    let newest = &page["notifications"][0];
    assert_eq!((newest["kind"].as_str(), newest["comment_id"].as_str()), (Some("comment"), Some("4242")));
    assert_eq!(newest["post_id"], post.to_string());

    // A job whose payload is not a notification is a dead letter at once, and
    // stores nothing.
    let bad = json!({"kind": "poke", "recipient": alice.id, "actor": bob.id});
    app.state.data().enqueue(data::NOTIFY_JOB, bob.id, bad, data::NOTIFY_MAX_ATTEMPTS).await.unwrap();
    eventually("the bad job to be buried", async || {
        env.count("SELECT count(*) FROM jobs WHERE kind = 'notify' AND state = 'dead' AND attempts = 1").await
            == 1
    })
    .await;
    assert_eq!(stored(&env).await, 3);
}

#[tokio::test]
async fn marking_read_and_bad_input_change_nothing_else() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let _worker = env.spawn_worker().await;
    let alice = signup(&app, "alice").await;
    for fan in ["bob", "carol"] {
        let u = signup(&app, fan).await;
        call(&app, "PUT", "/api/v1/users/alice/follow", Some(&u), None, StatusCode::OK).await;
    }
    eventually("two notifications", async || unread(&app, &alice).await == 2).await;
    let page = list(&app, &alice, "").await;
    let [newer, older] = ids(&page)[..] else { panic!("two: {page}") };
    assert!(newer > older, "newest first");

    // Bad input: a code, and nothing marked.
    for (body, status, code) in [
        (json!({"up_to": "abc"}), StatusCode::BAD_REQUEST, "invalid_notification_id"),
        (json!({"up_to": "-5"}), StatusCode::BAD_REQUEST, "invalid_notification_id"),
        (json!({"up_to": "0"}), StatusCode::BAD_REQUEST, "invalid_notification_id"),
        (json!({"up_to": 5}), StatusCode::BAD_REQUEST, "invalid_body"),
        (json!({"all": true}), StatusCode::BAD_REQUEST, "invalid_body"),
        (json!(["up_to"]), StatusCode::BAD_REQUEST, "invalid_body"),
    ] {
        let got =
            call(&app, "POST", "/api/v1/notifications/read", Some(&alice), Some(body.clone()), status).await;
        assert_eq!(error_code(&got), code, "{body}");
    }
    let client = reqwest::Client::new();
    let r = client
        .post(app.url("/api/v1/notifications/read"))
        .bearer_auth(&alice.token)
        .header("content-type", "text/plain")
        .body("all")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error_code(&r.json().await.unwrap()), "unsupported_media_type");
    let r = client
        .post(app.url("/api/v1/notifications/read"))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .body("{\"up_to\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r.json().await.unwrap()), "invalid_json");
    for (method, path) in [
        ("POST", "/api/v1/notifications/read"),
        ("GET", "/api/v1/notifications"),
        ("GET", "/api/v1/notifications/unread"),
    ] {
        let got = call(&app, method, path, None, None, StatusCode::UNAUTHORIZED).await;
        assert_eq!(error_code(&got), "unauthenticated", "{method} {path}");
    }
    for (query, code) in [
        ("?limit=0", "invalid_limit"),
        ("?limit=101", "invalid_limit"),
        ("?cursor=zzz", "invalid_cursor"),
        ("?cursor=AAAAAAAAAAA", "invalid_cursor"),
    ] {
        let got = call(
            &app,
            "GET",
            &format!("/api/v1/notifications{query}"),
            Some(&alice),
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(error_code(&got), code, "{query}");
    }
    assert_eq!(env.count("SELECT count(*) FROM notifications WHERE seen").await, 0, "nothing marked");
    assert_eq!(unread(&app, &alice).await, 2);

    // Up to the older one: the newer stays unread.
    let body = json!({"up_to": older.to_string()});
    let got =
        call(&app, "POST", "/api/v1/notifications/read", Some(&alice), Some(body), StatusCode::OK).await;
    assert_eq!((got["marked"].as_i64(), got["unread"].as_i64()), (Some(1), Some(1)), "{got}");
    let page = list(&app, &alice, "").await;
    let read: Vec<bool> =
        page["notifications"].as_array().unwrap().iter().map(|n| n["read"] == true).collect();
    assert_eq!(read, [false, true]);
    assert_eq!(page["unread"], 1);
    // No body: all of them. Again: nothing more to mark.
    let got = call(&app, "POST", "/api/v1/notifications/read", Some(&alice), None, StatusCode::OK).await;
    assert_eq!((got["marked"].as_i64(), got["unread"].as_i64()), (Some(1), Some(0)), "{got}");
    let got =
        call(&app, "POST", "/api/v1/notifications/read", Some(&alice), Some(json!({})), StatusCode::OK).await;
    assert_eq!((got["marked"].as_i64(), got["unread"].as_i64()), (Some(0), Some(0)), "{got}");
    assert_eq!(unread(&app, &alice).await, 0);
    assert_eq!(stored(&env).await, 2, "marking read deletes nothing");
}

#[tokio::test]
async fn notifications_are_paged_newest_first() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let _worker = env.spawn_worker().await;
    let star = signup(&app, "star").await;
    let mut fans = vec![];
    for i in 0..5 {
        let fan = signup(&app, &format!("fan_{i}")).await;
        call(&app, "PUT", "/api/v1/users/star/follow", Some(&fan), None, StatusCode::OK).await;
        fans.push(fan.username);
    }
    eventually("five notifications", async || unread(&app, &star).await == 5).await;
    let (mut seen, mut actors, mut cursor, mut pages) = (vec![], vec![], None::<String>, 0);
    loop {
        let q = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let page = list(&app, &star, &format!("?limit=2{q}")).await;
        assert!(ids(&page).len() <= 2);
        seen.extend(ids(&page));
        actors.extend(kinds(&page).into_iter().map(|(_, a)| a));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first, each once: {seen:?}");
    actors.sort();
    assert_eq!(actors, fans);
}

#[tokio::test]
async fn a_worker_that_died_after_delivering_leaves_one_notification_and_a_fresh_count() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let alice = signup(&app, "alice").await;
    let bob = signup(&app, "bob").await;
    let post = post_text(&app, &alice, "look").await;
    assert_eq!(unread(&app, &alice).await, 0, "the count is cached");
    call(&app, "PUT", &format!("/api/v1/posts/{post}/like"), Some(&bob), None, StatusCode::OK).await;

    // A worker claims the job, delivers it and dies before invalidating the
    // count or completing the job: its lease lapses.
    let d = app.state.data();
    let shard = d.shard_map().shard_of_user(alice.id);
    let claimed = d.claim_jobs(shard, "doomed", 1, Duration::from_millis(1)).await.unwrap();
    let [job] = &claimed[..] else { panic!("one job: {claimed:?}") };
    assert_eq!(job.kind, data::NOTIFY_JOB);
    let change = d.deliver_notification(&data::Notify::from_payload(&job.payload).unwrap()).await.unwrap();
    assert_eq!(change, data::Change::Changed);
    assert_eq!(unread(&app, &alice).await, 0, "the dead worker never invalidated the count");

    // Another worker claims the lapsed job and runs it again.
    let _worker = env.spawn_worker().await;
    eventually("the job to run again and complete", async || notify_jobs(&env).await == 0).await;
    assert_eq!(stored(&env).await, 1, "delivered exactly once");
    assert_eq!(unread(&app, &alice).await, 1, "the rerun invalidated the count");
    assert_eq!(kinds(&list(&app, &alice, "").await), [("like".to_owned(), "bob".to_owned())]);
}

#[tokio::test]
async fn a_stopped_worker_and_a_gone_web_server_lose_no_notification() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    signup(&app, "alice").await;
    let bob = signup(&app, "bob").await;
    let holder = env
        .spawn_worker_with(|c| {
            c.worker.id = Some("holder".into());
            c.chaos.stall_after_claim = true;
            c.worker.shutdown_grace_secs = 1;
        })
        .await;
    call(&app, "PUT", "/api/v1/users/alice/follow", Some(&bob), None, StatusCode::OK).await;
    eventually("the holder to claim the job", async || {
        env.count("SELECT count(*) FROM jobs WHERE kind = 'notify' AND locked_by = 'holder'").await == 1
    })
    .await;
    // The worker stops with the job unfinished: released, nothing delivered.
    holder.stop().await;
    assert_eq!(env.count("SELECT count(*) FROM jobs WHERE kind = 'notify' AND state = 'ready'").await, 1);
    assert_eq!(stored(&env).await, 0);
    // The web server that acknowledged the follow is gone too.
    app.stop().await;

    let _worker = env.spawn_worker().await;
    let app = env.spawn().await;
    let alice = login(&app, "alice").await;
    eventually("the notification to arrive", async || unread(&app, &alice).await == 1).await;
    eventually("the job to complete", async || notify_jobs(&env).await == 0).await;
    assert_eq!(stored(&env).await, 1, "exactly once");
    assert_eq!(kinds(&list(&app, &alice, "").await), [("follow".to_owned(), "bob".to_owned())]);
}

/// The top bar of a page.
fn top_bar(html: &str) -> &str {
    let start = html.find("<header").expect("a top bar");
    let end = html[start..].find("</header>").expect("the top bar ends") + start;
    &html[start..end]
}

#[tokio::test]
async fn the_top_bar_counts_unread_and_the_page_marks_them_read() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let _worker = env.spawn_worker().await;
    let alice = signup(&app, "alice").await;
    let bob = signup(&app, "bob").await;
    let post = post_text(&app, &alice, "look").await;
    let client = browser(&app, "alice").await;
    let home = page(&app, &client, "/").await;
    assert!(top_bar(&home).contains(r#"href="/notifications""#), "{home}");
    assert!(!top_bar(&home).contains("badge"), "no badge yet: {home}");

    call(&app, "PUT", "/api/v1/users/alice/follow", Some(&bob), None, StatusCode::OK).await;
    call(&app, "PUT", &format!("/api/v1/posts/{post}/like"), Some(&bob), None, StatusCode::OK).await;
    eventually("both delivered", async || unread(&app, &alice).await == 2).await;
    let home = page(&app, &client, "/").await;
    assert!(top_bar(&home).contains(r#"aria-label="2 unread""#), "{home}");

    let notes = page(&app, &client, "/notifications").await;
    assert!(notes.contains("started following you") && notes.contains(r#"href="/u/bob""#), "{notes}");
    assert!(notes.contains(&format!(r#"href="/p/{post}""#)), "{notes}");
    assert_eq!(notes.matches(r#"<span class="badge">new</span>"#).count(), 2, "{notes}");
    assert!(!top_bar(&notes).contains("badge"), "the page's own top bar counts them read: {notes}");
    assert_eq!(unread(&app, &alice).await, 0, "visiting marked them read");
    let again = page(&app, &client, "/notifications").await;
    assert!(!again.contains(">new<"), "{again}");
    let home = page(&app, &client, "/").await;
    assert!(!top_bar(&home).contains("badge"), "{home}");

    // Not logged in: sent to log in. A bad cursor: 400.
    let r = app.client().get(app.url("/notifications")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/login");
    let r = client.get(app.url("/notifications?cursor=zzz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_peer_dcs_redis_that_is_down_holds_no_notification_back() {
    let mut peer = testkit::fresh_redis();
    let peer_url = peer.url();
    peer.kill();
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let alice = signup(&app, "alice").await;
    let bob = signup(&app, "bob").await;
    assert_eq!(unread(&app, &alice).await, 0, "the count is cached");
    call(&app, "PUT", "/api/v1/users/alice/follow", Some(&bob), None, StatusCode::OK).await;
    // The worker invalidates the count here and in the other DC, whose Redis is
    // down: delivered, counted here, the job done (the peer's copy lapses).
    let _worker = env.spawn_worker_with(|c| c.redis.peers = vec![peer_url]).await;
    eventually("the notification, counted here", async || unread(&app, &alice).await == 1).await;
    eventually("the job to complete", async || notify_jobs(&env).await == 0).await;
    assert_eq!(stored(&env).await, 1);
}
