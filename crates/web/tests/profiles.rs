//! Profiles: editing one's display name and bio (API and page), what every web
//! server then shows, bad edits refused with nothing stored, and the followers
//! and following lists, paged.

mod common;

use common::*;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::{Value, json};
use testkit::{TestApp, TestEnv};

/// A user's row as its shard's primary has it (name and bio), to see that a
/// refused edit stored nothing.
async fn stored(app: &TestApp, user_id: i64) -> (String, String) {
    let u = data::primary_reads(app.state.data().profile(user_id)).await.unwrap().expect("the user exists");
    (u.display_name, u.bio)
}

/// The usernames of a page of users, and its cursor.
fn names(body: &Value) -> (Vec<String>, Option<String>) {
    let users = body["users"].as_array().unwrap_or_else(|| panic!("a page of users: {body}"));
    (
        users.iter().map(|u| u["username"].as_str().unwrap().to_owned()).collect(),
        body["next_cursor"].as_str().map(str::to_owned),
    )
}

#[tokio::test]
async fn an_edit_is_shown_by_every_web_server_at_once() {
    let env = TestEnv::new().await;
    let (one, two) = (env.spawn().await, env.spawn().await);
    let alice = signup(&one, "alice").await;
    let post = post_text(&one, &alice, "hello").await;
    // Both servers hold the profile (and the post with its author) in their caches.
    for app in [&one, &two] {
        let body = call(app, "GET", "/api/v1/users/alice", None, None, StatusCode::OK).await;
        assert_eq!(
            (body["display_name"].as_str(), body["bio"].as_str()),
            (Some("alice"), Some("")),
            "{body}"
        );
        let got = call(app, "GET", &format!("/api/v1/posts/{post}"), None, None, StatusCode::OK).await;
        assert_eq!(got["author"]["display_name"], "alice");
    }

    let edit = json!({"display_name": "  Alice L.  ", "bio": "Cats.\nAnd dogs. ✨"});
    let body = call(&one, "PATCH", "/api/v1/users/me", Some(&alice), Some(edit), StatusCode::OK).await;
    assert_eq!(body["display_name"], "Alice L.", "trimmed: {body}");
    assert_eq!(body["bio"], "Cats.\nAnd dogs. ✨");
    assert_eq!(body["username"], "alice");
    assert_eq!(stored(&one, alice.id).await, ("Alice L.".into(), "Cats.\nAnd dogs. ✨".into()));

    // The other server shows it on its next read: its copy was invalidated.
    eventually("the other server to drop its copy", async || {
        let body = call(&two, "GET", "/api/v1/users/alice", None, None, StatusCode::OK).await;
        body["display_name"] == "Alice L."
    })
    .await;
    let body = call(&two, "GET", "/api/v1/users/alice", None, None, StatusCode::OK).await;
    assert_eq!(body["bio"], "Cats.\nAnd dogs. ✨");
    let got = call(&two, "GET", &format!("/api/v1/posts/{post}"), None, None, StatusCode::OK).await;
    assert_eq!(got["author"]["display_name"], "Alice L.", "posts show the author's new name");
    let me = call(&two, "GET", "/api/v1/users/me", Some(&alice), None, StatusCode::OK).await;
    assert_eq!(
        (me["display_name"].as_str(), me["followed_by_me"].as_bool()),
        (Some("Alice L."), Some(false))
    );

    // One field alone changes only it; an empty bio clears it.
    let body =
        call(&two, "PATCH", "/api/v1/users/me", Some(&alice), Some(json!({"bio": ""})), StatusCode::OK).await;
    assert_eq!((body["display_name"].as_str(), body["bio"].as_str()), (Some("Alice L."), Some("")));
    assert_eq!(stored(&one, alice.id).await, ("Alice L.".into(), String::new()));
    let body = call(&one, "GET", "/api/v1/users/alice", None, None, StatusCode::OK).await;
    assert_eq!(body["bio"], "", "{body}");
}

#[tokio::test]
async fn bad_edits_are_refused_with_a_code_and_store_nothing() {
    let app = testkit::spawn_app().await;
    let alice = signup(&app, "alice").await;
    let bob = signup(&app, "bob").await;
    call(&app, "PATCH", "/api/v1/users/me", Some(&alice), Some(json!({"bio": "as it was"})), StatusCode::OK)
        .await;
    let before = stored(&app, alice.id).await;
    let before_bob = stored(&app, bob.id).await;

    let long_name = "n".repeat(51);
    let long_bio = "é".repeat(301);
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (json!({"bio": long_bio}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_bio"),
        (json!({"bio": "bell\u{7}"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_bio"),
        (json!({"bio": "esc \u{1b}[31m red"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_bio"),
        (json!({"display_name": long_name}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_display_name"),
        (json!({"display_name": "   "}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_display_name"),
        (json!({"display_name": "two\nlines"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_display_name"),
        // A good name with a bad bio: neither is stored.
        (json!({"display_name": "Fine", "bio": long_bio}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_bio"),
        (json!({"display_name": "Fine", "admin": true}), StatusCode::BAD_REQUEST, "invalid_body"),
        (json!({"bio": 5}), StatusCode::BAD_REQUEST, "invalid_body"),
        (json!({}), StatusCode::BAD_REQUEST, "invalid_body"),
        (json!({"display_name": null, "bio": null}), StatusCode::BAD_REQUEST, "invalid_body"),
        (json!(["Fine", "bio"]), StatusCode::BAD_REQUEST, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let got = call(&app, "PATCH", "/api/v1/users/me", Some(&alice), Some(body.clone()), status).await;
        assert_eq!(error_code(&got), code, "{body}: {got}");
    }
    // Not JSON at all; malformed JSON; not signed in.
    let r = reqwest::Client::new()
        .patch(app.url("/api/v1/users/me"))
        .bearer_auth(&alice.token)
        .body("display_name=Fine")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error_code(&r.json().await.unwrap()), "unsupported_media_type");
    let r = reqwest::Client::new()
        .patch(app.url("/api/v1/users/me"))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .body("{\"bio\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r.json().await.unwrap()), "invalid_json");
    let got =
        call(&app, "PATCH", "/api/v1/users/me", None, Some(json!({"bio": "x"})), StatusCode::UNAUTHORIZED)
            .await;
    assert_eq!(error_code(&got), "unauthenticated");
    let got = call(&app, "GET", "/api/v1/users/me", None, None, StatusCode::UNAUTHORIZED).await;
    assert_eq!(error_code(&got), "unauthenticated");
    // Someone else's profile cannot be edited: there is no such route.
    let got = call(
        &app,
        "PATCH",
        "/api/v1/users/bob",
        Some(&alice),
        Some(json!({"bio": "hacked"})),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    assert_eq!(error_code(&got), "method_not_allowed");

    assert_eq!(stored(&app, alice.id).await, before, "nothing stored");
    assert_eq!(stored(&app, bob.id).await, before_bob, "nothing stored for bob");
    let shown = call(&app, "GET", "/api/v1/users/alice", None, None, StatusCode::OK).await;
    assert_eq!(shown["bio"], "as it was");
    // The longest bio there may be is taken (characters, not bytes).
    let longest = "é".repeat(300);
    let body =
        call(&app, "PATCH", "/api/v1/users/me", Some(&alice), Some(json!({"bio": longest})), StatusCode::OK)
            .await;
    assert_eq!(body["bio"].as_str().unwrap().chars().count(), 300);
}

#[tokio::test]
async fn followers_and_following_are_paged_newest_first() {
    let app = testkit::spawn_app().await;
    let star = signup(&app, "star").await;
    let mut fans = vec![];
    for i in 0..5 {
        let fan = signup(&app, &format!("fan_{i}")).await;
        call(&app, "PUT", "/api/v1/users/star/follow", Some(&fan), None, StatusCode::OK).await;
        fans.push(fan);
    }
    // star follows two of them back.
    for name in ["fan_1", "fan_3"] {
        call(&app, "PUT", &format!("/api/v1/users/{name}/follow"), Some(&star), None, StatusCode::OK).await;
    }

    // Pages of two, newest follow first, every follower once.
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let body = call(
            &app,
            "GET",
            &format!("/api/v1/users/star/followers?limit=2{q}"),
            None,
            None,
            StatusCode::OK,
        )
        .await;
        let (page, next) = names(&body);
        assert!(page.len() <= 2, "{body}");
        assert!(body["users"][0].get("followed_by_me").is_none(), "no viewer, no flag: {body}");
        seen.extend(page);
        pages += 1;
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["fan_4", "fan_3", "fan_2", "fan_1", "fan_0"], "newest follow first, each once");

    // A signed-in viewer sees whom they follow.
    let body =
        call(&app, "GET", "/api/v1/users/star/followers?limit=100", Some(&star), None, StatusCode::OK).await;
    let flags: Vec<(String, bool)> = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["username"].as_str().unwrap().to_owned(), u["followed_by_me"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        flags,
        [("fan_4", false), ("fan_3", true), ("fan_2", false), ("fan_1", true), ("fan_0", false)]
            .map(|(n, f)| (n.to_owned(), f))
    );
    let body = call(&app, "GET", "/api/v1/users/star/following", None, None, StatusCode::OK).await;
    assert_eq!(names(&body), (vec!["fan_3".to_owned(), "fan_1".to_owned()], None));
    assert_eq!(body["users"][0]["followers_count"], 1, "full profiles: {body}");
    let body = call(&app, "GET", "/api/v1/users/fan_0/following", None, None, StatusCode::OK).await;
    assert_eq!(names(&body).0, ["star"]);
    // An unfollow leaves the list.
    call(&app, "DELETE", "/api/v1/users/star/follow", Some(&fans[2]), None, StatusCode::OK).await;
    let body = call(&app, "GET", "/api/v1/users/star/followers", None, None, StatusCode::OK).await;
    assert_eq!(names(&body).0, ["fan_4", "fan_3", "fan_1", "fan_0"]);
    let body = call(&app, "GET", "/api/v1/users/fan_2/followers", None, None, StatusCode::OK).await;
    assert_eq!(names(&body), (vec![], None));

    // Bad paging, unknown users.
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=101", "invalid_limit"),
        ("limit=ten", "invalid_limit"),
        ("cursor=AAAA", "invalid_cursor"),
        ("cursor=!!", "invalid_cursor"),
        // A posts page's cursor (8 bytes) is not a list's.
        ("cursor=AAAAAAAAAAU", "invalid_cursor"),
    ] {
        for side in ["followers", "following"] {
            let got = call(
                &app,
                "GET",
                &format!("/api/v1/users/star/{side}?{query}"),
                None,
                None,
                StatusCode::BAD_REQUEST,
            )
            .await;
            assert_eq!(error_code(&got), code, "{side}?{query}: {got}");
        }
    }
    for path in ["/api/v1/users/nobody_here/followers", "/api/v1/users/x/following"] {
        let got = call(&app, "GET", path, None, None, StatusCode::NOT_FOUND).await;
        assert_eq!(error_code(&got), "not_found");
    }
}

#[tokio::test]
async fn the_profile_page_is_edited_through_its_form_with_csrf() {
    let app = testkit::spawn_app().await;
    let alice = signup(&app, "alice").await;
    let bob = signup(&app, "bob").await;
    call(&app, "PUT", "/api/v1/users/alice/follow", Some(&bob), None, StatusCode::OK).await;

    // Not logged in: sent to log in.
    let r = app.client().get(app.url("/settings/profile")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/login");

    let client = browser(&app, "alice").await;
    let form = page(&app, &client, "/settings/profile").await;
    assert!(form.contains(r#"name="display_name" value="alice""#), "{form}");
    let csrf = csrf_of(&form);

    // Without the token (or with a wrong one): 403, nothing stored.
    for token in ["", "forged"] {
        let r = client
            .post(app.url("/settings/profile"))
            .form(&[("csrf", token), ("display_name", "Evil"), ("bio", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    // A bad value: the form again, with what was typed and why; nothing stored.
    let long_bio = "b".repeat(301);
    let r = client
        .post(app.url("/settings/profile"))
        .form(&[("csrf", csrf.as_str()), ("display_name", "Alice"), ("bio", long_bio.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let again = r.text().await.unwrap();
    assert!(again.contains("a bio is at most 300 characters") && again.contains(&long_bio), "{again}");
    // An unknown field is a malformed form.
    let r = client
        .post(app.url("/settings/profile"))
        .form(&[("csrf", csrf.as_str()), ("display_name", "Alice"), ("bio", ""), ("role", "admin")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(stored(&app, alice.id).await, ("alice".into(), String::new()), "nothing stored");

    let r = client
        .post(app.url("/settings/profile"))
        .form(&[("csrf", csrf.as_str()), ("display_name", "Alice <L>"), ("bio", "I take <b>photos</b>.")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/u/alice");
    let profile = page(&app, &client, "/u/alice").await;
    assert!(profile.contains("Alice &lt;L&gt;"), "{profile}");
    assert!(profile.contains("I take &lt;b&gt;photos&lt;/b&gt;."), "escaped bio: {profile}");
    assert!(profile.contains(r#"href="/settings/profile""#), "an edit link on one's own profile");
    assert!(
        profile.contains(r#"href="/u/alice/followers""#) && profile.contains(r#"href="/u/alice/following""#)
    );

    // The lists, as pages.
    let followers = page(&app, &client, "/u/alice/followers").await;
    assert!(followers.contains(r#"href="/u/bob""#), "{followers}");
    let following = page(&app, &app.client(), "/u/bob/following").await;
    assert!(
        following.contains("Alice &lt;L&gt;") && following.contains("I take &lt;b&gt;photos"),
        "{following}"
    );
    let empty = page(&app, &app.client(), "/u/alice/following").await;
    assert!(empty.contains("Not following anyone yet."), "{empty}");
    let r = app.client().get(app.url("/u/alice/followers?cursor=nope")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app.client().get(app.url("/u/nobody_here/followers")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
