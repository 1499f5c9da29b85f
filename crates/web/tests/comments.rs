//! Comments (ADR 0024) through the JSON API and the HTML forms, against real
//! PostgreSQL (two shards), Redis and, for the count's job, a real worker.

mod common;

use common::*;
use data::{Change, CommentCount, PostId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, TestEnv};

async fn comment(app: &TestApp, user: &User, post: i64, body: &str) -> Value {
    call(
        app,
        "POST",
        &format!("/api/v1/posts/{post}/comments"),
        Some(user),
        Some(json!({ "body": body })),
        StatusCode::CREATED,
    )
    .await
}

async fn comment_count(app: &TestApp, post: i64) -> i64 {
    let body = call(app, "GET", &format!("/api/v1/posts/{post}"), None, None, StatusCode::OK).await;
    body["comment_count"].as_i64().expect("a comment_count")
}

/// Every comment of `post` through the API's pages of `limit`, newest first.
async fn all_comments(app: &TestApp, viewer: Option<&User>, post: i64, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit={limit}&cursor={c}"),
            None => format!("?limit={limit}"),
        };
        let path = format!("/api/v1/posts/{post}/comments{query}");
        let page = call(app, "GET", &path, viewer, None, StatusCode::OK).await;
        let comments = page["comments"].as_array().unwrap();
        assert!(comments.len() <= limit);
        all.extend(comments.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return all,
        }
    }
}

#[tokio::test]
async fn comments_spread_over_the_commenters_shards_are_counted_paged_and_deleted() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let author = signup(&app, "author").await;
    let mut commenters = Vec::new();
    for i in 0..8 {
        commenters.push(signup(&app, &format!("commenter_{i}")).await);
    }
    let map = app.state.data().shard_map();
    let shards: std::collections::BTreeSet<_> = commenters.iter().map(|u| map.shard_of_user(u.id)).collect();
    assert_eq!(shards.len(), 2, "the commenters are on both shards");

    let post = post_text(&app, &author, "say something").await;
    assert_eq!(comment_count(&app, post).await, 0);
    let mut written = Vec::new();
    for (i, c) in commenters.iter().enumerate() {
        let body = comment(&app, c, post, &format!("  comment {i}\n  ")).await;
        assert_eq!(body["body"], format!("comment {i}"), "trimmed, the line break inside kept");
        assert_eq!(body["author"]["username"], c.username.as_str());
        assert_eq!(body["post_id"], post.to_string());
        assert_eq!(body["can_delete"], true);
        written.push(body["id"].as_str().unwrap().to_owned());
    }
    // The author answers too: counted, and not notified of their own comment.
    let own = comment(&app, &author, post, "thanks all").await;
    written.push(own["id"].as_str().unwrap().to_owned());

    // Each comment is on its commenter's shard, none on the post's alone.
    for (shard, url) in env.shards.iter().enumerate() {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        let conn = tokio::spawn(conn);
        let rows = client.query("SELECT user_id FROM comments", &[]).await.unwrap();
        assert!(!rows.is_empty(), "shard {shard} holds comments");
        for r in rows {
            assert_eq!(
                map.shard_of_user(r.get(0)).0 as usize,
                shard,
                "a comment is on its commenter's shard"
            );
        }
        drop(client);
        let _ = conn.await;
    }
    assert_eq!(comment_count(&app, post).await, 9, "counted at once, through the post's cache");
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE kind = 'comment_count'").await,
        0,
        "count jobs dropped"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE kind = 'notify' AND payload->>'kind' = 'comment'").await,
        8,
        "the author is notified of each comment but their own"
    );

    // A worker delivers the author's notifications: one per comment but their own.
    let worker = env.spawn_worker().await;
    eventually("the author is notified of the comments", async || {
        let page =
            call(&app, "GET", "/api/v1/notifications?limit=100", Some(&author), None, StatusCode::OK).await;
        let comments = page["notifications"].as_array().unwrap().iter().filter(|n| n["kind"] == "comment");
        comments.filter(|n| n["post_id"].as_str() == Some(post.to_string().as_str())).count() == 8
    })
    .await;
    worker.stop().await;

    // Pages of 4, newest first, every comment once; the merge across shards keeps the order.
    let listed = all_comments(&app, None, post, 4).await;
    let ids: Vec<&str> = listed.iter().map(|c| c["id"].as_str().unwrap()).collect();
    let newest_first: Vec<&str> = written.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first);
    assert!(listed.iter().all(|c| c.get("can_delete").is_none()), "no viewer, no can_delete");
    let as_stranger = all_comments(&app, Some(&commenters[0]), post, 100).await;
    let deletable: Vec<bool> = as_stranger.iter().map(|c| c["can_delete"].as_bool().unwrap()).collect();
    assert_eq!(deletable.iter().filter(|d| **d).count(), 1, "commenter 0 may delete only their own");

    // The commenter deletes theirs; the post's author deletes another's.
    let path = |id: &str| format!("/api/v1/comments/{id}");
    call(&app, "DELETE", &path(&written[0]), Some(&commenters[0]), None, StatusCode::NO_CONTENT).await;
    call(&app, "DELETE", &path(&written[1]), Some(&author), None, StatusCode::NO_CONTENT).await;
    // Someone else may not: refused, nothing changes.
    let body =
        call(&app, "DELETE", &path(&written[2]), Some(&commenters[3]), None, StatusCode::FORBIDDEN).await;
    assert_eq!(error_code(&body), "forbidden");
    // Gone is gone.
    let body =
        call(&app, "DELETE", &path(&written[0]), Some(&commenters[0]), None, StatusCode::NOT_FOUND).await;
    assert_eq!(error_code(&body), "not_found");
    let body = call(&app, "DELETE", &path(&written[2]), None, None, StatusCode::UNAUTHORIZED).await;
    assert_eq!(error_code(&body), "unauthenticated");

    assert_eq!(comment_count(&app, post).await, 7);
    let left: Vec<String> = all_comments(&app, None, post, 100)
        .await
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left.len(), 7);
    assert!(!left.contains(&written[0]) && !left.contains(&written[1]) && left.contains(&written[2]));
    assert_eq!(env.count("SELECT count(*) FROM jobs WHERE kind = 'comment_count'").await, 0);
}

#[tokio::test]
async fn bad_comments_are_refused_and_store_nothing() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let alice = signup(&app, "alice").await;
    let post = post_text(&app, &alice, "a post").await;
    let before = row_counts(&app).await;
    let on = format!("/api/v1/posts/{post}/comments");
    let too_long = "x".repeat(data::MAX_COMMENT_CHARS + 1);
    /// What is sent, as whom, and the status and code expected.
    type Case<'a> = (&'a str, String, Option<&'a User>, Option<Value>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "empty",
            on.clone(),
            Some(&alice),
            Some(json!({"body": ""})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_comment",
        ),
        (
            "blank",
            on.clone(),
            Some(&alice),
            Some(json!({"body": " \n\t "})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_comment",
        ),
        (
            "too long",
            on.clone(),
            Some(&alice),
            Some(json!({"body": too_long})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_comment",
        ),
        (
            "control",
            on.clone(),
            Some(&alice),
            Some(json!({"body": "a\u{7}b"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_comment",
        ),
        (
            "unknown field",
            on.clone(),
            Some(&alice),
            Some(json!({"body": "hi", "x": 1})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        ("missing body", on.clone(), Some(&alice), Some(json!({})), StatusCode::BAD_REQUEST, "invalid_body"),
        (
            "wrong type",
            on.clone(),
            Some(&alice),
            Some(json!({"body": 5})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "signed out",
            on.clone(),
            None,
            Some(json!({"body": "hi"})),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "no such post",
            "/api/v1/posts/12345/comments".into(),
            Some(&alice),
            Some(json!({"body": "hi"})),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "bad post id",
            "/api/v1/posts/-1/comments".into(),
            Some(&alice),
            Some(json!({"body": "hi"})),
            StatusCode::BAD_REQUEST,
            "invalid_post_id",
        ),
        (
            "bad post id text",
            "/api/v1/posts/abc/comments".into(),
            Some(&alice),
            Some(json!({"body": "hi"})),
            StatusCode::BAD_REQUEST,
            "invalid_post_id",
        ),
    ];
    for (what, path, user, body, status, code) in cases {
        let r = send(&app, "POST", &path, user, body).await;
        assert_eq!(r.status(), status, "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), code, "{what}: {body}");
    }
    // A body that is not JSON.
    let r = reqwest::Client::new()
        .post(app.url(&on))
        .bearer_auth(&alice.token)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Reads and deletes with bad parameters.
    for (path, code) in [
        (format!("{on}?limit=0"), "invalid_limit"),
        (format!("{on}?limit=101"), "invalid_limit"),
        (format!("{on}?cursor=nope"), "invalid_cursor"),
        ("/api/v1/posts/0/comments".into(), "invalid_post_id"),
    ] {
        let body = call(&app, "GET", &path, None, None, StatusCode::BAD_REQUEST).await;
        assert_eq!(error_code(&body), code, "{path}");
    }
    let body = call(&app, "GET", "/api/v1/posts/12345/comments", None, None, StatusCode::NOT_FOUND).await;
    assert_eq!(error_code(&body), "not_found");
    for id in ["abc", "-5", "0"] {
        let path = format!("/api/v1/comments/{id}");
        let body = call(&app, "DELETE", &path, Some(&alice), None, StatusCode::BAD_REQUEST).await;
        assert_eq!(error_code(&body), "invalid_comment_id", "{id}");
    }
    let body = call(&app, "GET", "/api/v1/comments/1", None, None, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_eq!(error_code(&body), "method_not_allowed");
    assert_eq!(row_counts(&app).await, before, "nothing stored");
    assert_eq!(comment_count(&app, post).await, 0);
}

/// The count when the web server never counted: a comment written and then the
/// server gone (the data layer's statement alone), so the job does it, on a
/// real worker; and counting is idempotent and order-proof per comment.
#[tokio::test]
async fn a_count_the_server_never_made_is_made_by_the_job_once() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let author = signup(&app, "author").await;
    let fan = signup(&app, "fan").await;
    let post = post_text(&app, &author, "count me").await;
    let id = PostId::from_i64(post).unwrap();
    let data = app.state.data().clone();

    // As if the server died right after the commit: the comment and its job only.
    let new = data.create_comment(id, author.id, fan.id, "first").await.unwrap();
    assert_eq!(comment_count(&app, post).await, 0, "not counted yet");
    // Its job is due later; a worker makes it due now and runs it.
    let due = "WITH u AS (UPDATE jobs SET run_at = now() WHERE kind = 'comment_count' RETURNING 1) \
               SELECT count(*) FROM u";
    assert_eq!(env.count(due).await, 1, "one count job, written with the comment");
    let worker = env.spawn_worker().await;
    testkit::eventually("the job counted the comment", async || comment_count(&app, post).await == 1).await;
    testkit::eventually("the job is done", async || {
        env.count("SELECT count(*) FROM jobs WHERE kind = 'comment_count'").await == 0
    })
    .await;
    worker.stop().await;

    // The server's own count arriving late, or the job twice: nothing changes.
    let c = &new.comment;
    let count =
        CommentCount { post_id: post, comment_id: c.comment_id, post_author_id: author.id, counted: true };
    assert_eq!(data.count_comment(count).await.unwrap(), Change::Unchanged);
    assert_eq!(comment_count(&app, post).await, 1);

    // A deletion's uncount arriving before the creation's count: a tombstone,
    // and the late count then counts nothing.
    let other = data.create_comment(id, author.id, fan.id, "second").await.unwrap();
    let second = CommentCount { comment_id: other.comment.comment_id, ..count };
    let uncount = CommentCount { counted: false, ..second };
    assert_eq!(data.count_comment(uncount).await.unwrap(), Change::Unchanged, "never counted");
    assert_eq!(data.count_comment(second).await.unwrap(), Change::Unchanged, "the tombstone holds");
    // Uncounting the first: once.
    let first_gone = CommentCount { counted: false, ..count };
    assert_eq!(data.count_comment(first_gone).await.unwrap(), Change::Changed);
    assert_eq!(data.count_comment(first_gone).await.unwrap(), Change::Unchanged);
    let counted: i64 = env
        .count(&format!("SELECT coalesce(sum(comment_count), 0)::int8 FROM posts WHERE post_id = {post}"))
        .await;
    assert_eq!(counted, 0);
    // A count for a post that does not exist changes nothing and fails nothing.
    let nowhere = CommentCount { post_id: 12345, ..count };
    assert_eq!(data.count_comment(nowhere).await.unwrap(), Change::Unchanged);
}

/// The HTML: the post page lists comments with a form; the feed's cards carry a
/// comment form that comes back to the card.
#[tokio::test]
async fn comments_through_the_forms_of_the_post_page_and_the_feed() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let author = signup(&app, "author").await;
    let reader = signup(&app, "reader").await;
    call(&app, "PUT", "/api/v1/users/author/follow", Some(&reader), None, StatusCode::OK).await;
    let post = post_text(&app, &author, "look at this").await;

    let browser = browser(&app, "reader").await;
    let home = page(&app, &browser, "/").await;
    assert!(home.contains(&format!(r#"action="/p/{post}/comments""#)), "the feed card's comment form");
    assert!(home.contains(&format!(r#"id="p{post}""#)), "the card's anchor");
    assert!(home.contains("0 comments"));
    let csrf = csrf_of(&home);
    let send = async |path: &str, form: &[(&str, &str)]| {
        browser.post(app.url(path)).form(form).send().await.unwrap()
    };
    let on = format!("/p/{post}/comments");
    // From the feed: back to the card.
    let r = send(&on, &[("csrf", &csrf), ("body", "nice <b>one</b>"), ("back", "feed")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    assert_eq!(r.headers()["location"], format!("/#p{post}").as_str());
    assert!(page(&app, &browser, "/").await.contains("1 comment<"));
    // The post page lists it, escaped, with a delete button for its writer.
    let post_page = page(&app, &browser, &format!("/p/{post}")).await;
    assert!(post_page.contains("nice &lt;b&gt;one&lt;/b&gt;"), "escaped");
    assert!(post_page.contains(r#"id="comments""#));
    let delete_action = format!(r#"action="/p/{post}/comments/"#);
    assert!(post_page.contains(&delete_action), "the writer may delete it");
    // Bad comments through the form: refused, nothing stored.
    let r = send(&on, &[("csrf", &csrf), ("body", "  ")]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = send(&on, &[("csrf", &csrf), ("body", "hi"), ("back", "https://evil.example")]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "only known places to come back to");
    let r = send(&on, &[("body", "forged")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");
    assert_eq!(comment_count(&app, post).await, 1, "only the good comment is stored");
    // Deleting through the post page's button.
    let start = post_page.find(&delete_action).unwrap() + r#"action=""#.len();
    let action = post_page[start..start + post_page[start..].find('"').unwrap()].to_owned();
    let r = send(&action, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], format!("/p/{post}#comments").as_str());
    assert_eq!(comment_count(&app, post).await, 0);
    assert!(page(&app, &browser, &format!("/p/{post}")).await.contains("No comments yet."));
}

/// The feed's like buttons show the viewer's likes and come back to the card;
/// sent by the pages' script (asking for JSON) they answer in place; error pages
/// keep a signed-in viewer's menu.
#[tokio::test]
async fn the_feed_likes_in_place_and_error_pages_keep_the_menu() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let author = signup(&app, "author").await;
    let reader = signup(&app, "reader").await;
    call(&app, "PUT", "/api/v1/users/author/follow", Some(&reader), None, StatusCode::OK).await;
    let liked = post_text(&app, &author, "liked already").await;
    let other = post_text(&app, &author, "not yet").await;
    call(&app, "PUT", &format!("/api/v1/posts/{liked}/like"), Some(&reader), None, StatusCode::OK).await;

    let browser = browser(&app, "reader").await;
    let home = page(&app, &browser, "/").await;
    let csrf = csrf_of(&home);
    // Each card's like form, as its state says.
    let form_of = |post: i64| {
        let at = home.find(&format!(r#"action="/p/{post}/like""#)).expect("a like form on the card");
        home[at..at + home[at..].find("</form>").unwrap()].to_owned()
    };
    assert!(form_of(liked).contains(r#"value="unlike""#), "{}", form_of(liked));
    assert!(form_of(other).contains(r#"value="like""#), "{}", form_of(other));
    assert!(form_of(other).contains(r#"data-inline="like""#));
    assert!(home.contains(r#"<script src="/static/app.js" defer>"#));
    // The plain form (`json` false), or the script's request (asking for JSON).
    let send = async |path: String, form: &[(&str, &str)], json: bool| {
        let request = browser.post(app.url(&path)).form(form);
        let request = if json { request.header("accept", "application/json") } else { request };
        request.send().await.unwrap()
    };

    let r = send(format!("/p/{other}/like"), &[("csrf", &csrf), ("action", "like"), ("back", "feed")], false)
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "back to the card on the feed");
    assert_eq!(r.headers()["location"], format!("/#p{other}").as_str());
    let r =
        send(format!("/p/{other}/like"), &[("csrf", &csrf), ("action", "unlike"), ("back", "feed")], true)
            .await;
    assert_eq!(r.status(), StatusCode::OK, "JSON back, no redirect");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"liked": false, "like_count": 0}));
    let form = [("csrf", csrf.as_str()), ("body", "in place"), ("back", "feed")];
    let r = send(format!("/p/{other}/comments"), &form, true).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["body"], "in place");
    assert_eq!(body["comment_count"], 1);
    assert_eq!(body["author"]["username"], "reader");

    // The script itself.
    let r = reqwest::get(app.url("/static/app.js")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(r.text().await.unwrap().contains("dataset.inline"), "the enhancement script");

    // An error page keeps the signed-in viewer's menu; a visitor's has none.
    let r = browser.get(app.url("/p/12345")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let html = r.text().await.unwrap();
    assert!(html.contains("404") && html.contains(r#"href="/u/reader""#), "the viewer's menu: {html}");
    assert!(html.contains(r#"action="/logout""#), "{html}");
    let r = reqwest::get(app.url("/p/12345")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let html = r.text().await.unwrap();
    assert!(html.contains("404") && !html.contains(r#"action="/logout""#), "{html}");
}
