//! The HTML pages, driven like a browser: plain forms, cookies, redirects by hand.

use reqwest::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use reqwest::{Client, Response, StatusCode};
use testkit::TestApp;

const PASSWORD: &str = "correct horse battery";

/// The value of the first hidden `csrf` input of a page.
fn csrf_of(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).unwrap_or_else(|| panic!("no csrf field in:\n{html}")) + marker.len();
    let len = html[start..].find('"').expect("end of the csrf value");
    html[start..start + len].to_owned()
}

fn location(r: &Response) -> String {
    r.headers().get(LOCATION).expect("a Location header").to_str().unwrap().to_owned()
}

fn set_cookies(r: &Response) -> Vec<String> {
    r.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

fn assert_html(r: &Response) {
    let ct = r.headers().get(CONTENT_TYPE).expect("a content type").to_str().unwrap();
    assert!(ct.starts_with("text/html"), "{ct}");
}

async fn get(app: &TestApp, client: &Client, path: &str) -> Response {
    client.get(app.url(path)).send().await.expect("GET")
}

async fn get_page(app: &TestApp, client: &Client, path: &str) -> String {
    let r = get(app, client, path).await;
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    assert_html(&r);
    r.text().await.unwrap()
}

async fn post_form(app: &TestApp, client: &Client, path: &str, form: &[(&str, &str)]) -> Response {
    client.post(app.url(path)).form(form).send().await.expect("POST")
}

/// Sign up through the form (which logs in); returns the client.
async fn sign_up(app: &TestApp, username: &str) -> Client {
    let client = app.client();
    let page = get_page(app, &client, "/signup").await;
    let csrf = csrf_of(&page);
    let r = post_form(
        app,
        &client,
        "/signup",
        &[("csrf", &csrf), ("username", username), ("password", PASSWORD), ("display_name", "")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), "/");
    client
}

/// Post through the home page's form; returns the post's id.
async fn publish(app: &TestApp, client: &Client, caption: &str) -> String {
    let home = get_page(app, client, "/").await;
    let r = post_form(app, client, "/upload", &[("csrf", &csrf_of(&home)), ("caption", caption)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    let to = location(&r);
    let id = to.strip_prefix("/p/").unwrap_or_else(|| panic!("redirected to {to}"));
    assert!(id.parse::<i64>().is_ok(), "{to}");
    id.to_owned()
}

async fn posts_count(app: &TestApp, username: &str) -> i64 {
    let r = reqwest::get(app.url(&format!("/api/v1/users/{username}"))).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<serde_json::Value>().await.unwrap()["posts_count"].as_i64().unwrap()
}

#[tokio::test]
async fn a_browser_signs_up_posts_follows_likes_and_logs_out() {
    let app = testkit::spawn_app().await;

    // Logged out: a welcome page with ways in.
    let alice = app.client();
    let welcome = get_page(&app, &alice, "/").await;
    assert!(welcome.contains("<meta name=\"viewport\""), "{welcome}");
    assert!(welcome.contains("<title>"));
    assert!(welcome.contains("href=\"/signup\"") && welcome.contains("href=\"/login\""));

    // The sign-up page hands out a CSRF cookie (once) and the same token in the form.
    let r = get(&app, &alice, "/signup").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(set_cookies(&r).is_empty(), "the cookie from the first page is still good");
    let r = get(&app, &app.client(), "/signup").await;
    let cookies = set_cookies(&r);
    let page = r.text().await.unwrap();
    let csrf = csrf_of(&page);
    assert!(cookies.iter().any(|c| c.starts_with(&format!("csrf={csrf};"))), "{cookies:?}");
    let csrf = csrf_of(&get_page(&app, &alice, "/signup").await);
    let r = post_form(
        &app,
        &alice,
        "/signup",
        &[("csrf", &csrf), ("username", "Alice"), ("password", PASSWORD), ("display_name", "Alice <A.>")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/");
    let cookies = set_cookies(&r);
    let sid = cookies.iter().find(|c| c.starts_with("sid=")).expect("a session cookie");
    assert!(sid.contains("HttpOnly") && sid.contains("SameSite=Lax"), "{sid}");

    // Logged in: the home page greets by name, escaped, with the new-post form.
    let home = get_page(&app, &alice, "/").await;
    assert!(home.contains("Alice &lt;A.&gt;"), "{home}");
    assert!(home.contains("href=\"/u/alice\""));
    assert!(home.contains("action=\"/upload\"") && home.contains("action=\"/logout\""));
    assert!(!home.contains("<A.>"));

    // A new post, through /upload; its page shows the caption escaped.
    let upload = get_page(&app, &alice, "/upload").await;
    assert!(upload.contains("<textarea") && upload.contains("action=\"/upload\""));
    let caption = "<script>alert('pwned')</script>\nsecond line & more";
    let r = post_form(&app, &alice, "/upload", &[("csrf", &csrf_of(&upload)), ("caption", caption)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let post_path = location(&r);
    assert!(post_path.starts_with("/p/"), "{post_path}");
    let page = get_page(&app, &alice, &post_path).await;
    assert!(page.contains("&lt;script&gt;alert('pwned')&lt;/script&gt;\nsecond line &amp; more"), "{page}");
    assert!(!page.contains("<script"), "{page}");
    assert!(page.contains("0 likes"));
    assert!(page.contains(" UTC</time>"), "{page}");
    assert!(page.contains("href=\"/u/alice\""));
    let home = get_page(&app, &alice, "/").await;
    assert!(home.contains("&lt;script&gt;alert"), "own posts are in one's feed");
    let profile = get_page(&app, &alice, "/u/alice").await;
    assert!(profile.contains("@alice") && profile.contains("&lt;script&gt;alert"), "{profile}");
    assert!(!profile.contains("/u/alice/follow"), "no follow button on one's own profile");

    // A second user, in another browser, follows Alice from her profile page.
    let bob = sign_up(&app, "bob").await;
    let feed = get_page(&app, &bob, "/").await;
    assert!(!feed.contains("alert("), "not following Alice yet");
    let profile = get_page(&app, &bob, "/u/alice").await;
    assert!(profile.contains("action=\"/u/alice/follow\"") && profile.contains("value=\"follow\""));
    let r =
        post_form(&app, &bob, "/u/alice/follow", &[("csrf", &csrf_of(&profile)), ("action", "follow")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/u/alice");
    let profile = get_page(&app, &bob, "/u/alice").await;
    assert!(profile.contains("value=\"unfollow\"") && profile.contains("Unfollow"), "{profile}");
    assert!(profile.contains("<strong>1</strong><span class=\"muted\">follower</span>"), "{profile}");

    // Alice's post is now in Bob's feed; he likes it on its page.
    let feed = get_page(&app, &bob, "/").await;
    assert!(feed.contains("&lt;script&gt;alert") && feed.contains(&format!("href=\"{post_path}\"")));
    let page = get_page(&app, &bob, &post_path).await;
    assert!(page.contains("value=\"like\""));
    let like_path = format!("{post_path}/like");
    let r = post_form(&app, &bob, &like_path, &[("csrf", &csrf_of(&page)), ("action", "like")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), post_path);
    let page = get_page(&app, &bob, &post_path).await;
    assert!(page.contains("1 like<") && page.contains("value=\"unlike\""), "{page}");

    // Liking twice is harmless; unliking takes it back.
    let r = post_form(&app, &bob, &like_path, &[("csrf", &csrf_of(&page)), ("action", "like")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(get_page(&app, &bob, &post_path).await.contains("1 like<"));
    let r = post_form(&app, &bob, &like_path, &[("csrf", &csrf_of(&page)), ("action", "unlike")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(get_page(&app, &bob, &post_path).await.contains("0 likes"));

    // Log out: the session ends and the home page is the welcome page again.
    let home = get_page(&app, &bob, "/").await;
    let r = post_form(&app, &bob, "/logout", &[("csrf", &csrf_of(&home))]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/");
    assert!(set_cookies(&r).iter().any(|c| c.starts_with("sid=;") && c.contains("Max-Age=0")));
    let welcome = get_page(&app, &bob, "/").await;
    assert!(welcome.contains("href=\"/signup\"") && !welcome.contains("action=\"/logout\""), "{welcome}");
    // Logged out, a post page offers a way to log in instead of a like button.
    let page = get_page(&app, &bob, &post_path).await;
    assert!(!page.contains("/like\"") && page.contains(&format!("/login?next={post_path}")), "{page}");

    // And back in through the log-in form, landing where `next` says.
    let page = get_page(&app, &bob, &format!("/login?next={post_path}")).await;
    let r = post_form(
        &app,
        &bob,
        "/login",
        &[("csrf", &csrf_of(&page)), ("username", "bob"), ("password", PASSWORD), ("next", &post_path)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), post_path);
    assert!(get_page(&app, &bob, "/").await.contains("action=\"/logout\""));
}

#[tokio::test]
async fn forms_without_the_csrf_token_change_nothing() {
    let app = testkit::spawn_app().await;
    let alice = sign_up(&app, "alice").await;
    let home = get_page(&app, &alice, "/").await;
    let good = csrf_of(&home);
    let wrong = "A".repeat(43);

    for form in [
        vec![("csrf", wrong.as_str()), ("caption", "forged")],
        vec![("caption", "forged")],
        vec![("csrf", ""), ("caption", "forged")],
        vec![("csrf", good.as_str()), ("csrf", wrong.as_str()), ("caption", "forged")],
    ] {
        let r = post_form(&app, &alice, "/upload", &form).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{form:?}");
        assert_html(&r);
        assert!(r.text().await.unwrap().contains("reload the page"));
    }

    // The right token in the form but no cookie (another site's page cannot read it).
    let alice_id = web::service::user_id_of(&app.state, "alice").await.unwrap();
    let sid = app.state.sessions().create(alice_id).await.unwrap();
    let r = reqwest::Client::new()
        .post(app.url("/upload"))
        .header("cookie", format!("sid={sid}"))
        .form(&[("csrf", good.as_str()), ("caption", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(posts_count(&app, "alice").await, 0);

    // Other forms are guarded the same way.
    let bob = sign_up(&app, "bob").await;
    let r = post_form(&app, &bob, "/u/alice/follow", &[("csrf", &wrong), ("action", "follow")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let profile = get_page(&app, &bob, "/u/alice").await;
    assert!(profile.contains("value=\"follow\""), "still not following");
    let r = post_form(&app, &bob, "/logout", &[("csrf", &wrong)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(get_page(&app, &bob, "/").await.contains("action=\"/logout\""), "still logged in");
    let r = post_form(&app, &app.client(), "/login", &[("username", "bob"), ("password", PASSWORD)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // With the token, a malformed form is a 400 page, not axum's plain text.
    let r = post_form(&app, &alice, "/upload", &[("csrf", &good), ("caption", "x"), ("extra", "1")]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_html(&r);
    let r = post_form(&app, &alice, "/upload", &[("csrf", &good)]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = post_form(&app, &bob, "/u/alice/follow", &[("csrf", &csrf_of(&profile)), ("action", "befriend")])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_html(&r);
    let r = alice
        .post(app.url("/upload"))
        .header(CONTENT_TYPE, "application/json")
        .body(format!(r#"{{"csrf":"{good}","caption":"json"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_html(&r);

    // A caption the rules refuse re-renders the form, keeping the text.
    let long = "y".repeat(3000);
    let r = post_form(&app, &alice, "/upload", &[("csrf", &good), ("caption", &long)]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.unwrap();
    assert!(page.contains("captions are at most 2200 characters") && page.contains(&long), "{page}");
    assert_eq!(posts_count(&app, "alice").await, 0);

    // Following oneself is refused with a page.
    let r = post_form(&app, &alice, "/u/alice/follow", &[("csrf", &good), ("action", "follow")]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_html(&r);
}

#[tokio::test]
async fn signup_and_login_errors_re_render_the_form() {
    let app = testkit::spawn_app().await;
    let client = app.client();
    let page = get_page(&app, &client, "/signup").await;
    let csrf = csrf_of(&page);

    let r =
        post_form(&app, &client, "/signup", &[("csrf", &csrf), ("username", "ab"), ("password", PASSWORD)])
            .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_html(&r);
    let page = r.text().await.unwrap();
    assert!(page.contains("usernames are 3 to 30 characters long"), "{page}");
    assert!(page.contains("value=\"ab\""), "the typed username is kept");
    assert!(!page.contains(PASSWORD), "the password is not echoed");

    let r =
        post_form(&app, &client, "/signup", &[("csrf", &csrf), ("username", "carol"), ("password", "short")])
            .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("passwords are 8 to 128 characters long"));

    sign_up(&app, "carol").await;
    let r = post_form(
        &app,
        &client,
        "/signup",
        &[("csrf", &csrf), ("username", "Carol"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("the username carol is taken"));

    let page = get_page(&app, &client, "/login").await;
    let csrf = csrf_of(&page);
    let r = post_form(
        &app,
        &client,
        "/login",
        &[("csrf", &csrf), ("username", "carol"), ("password", "wrong pass")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_html(&r);
    assert!(r.headers().get_all(SET_COOKIE).iter().all(|c| !c.to_str().unwrap().starts_with("sid=")));
    let page = r.text().await.unwrap();
    assert!(page.contains("wrong username or password") && page.contains("value=\"carol\""), "{page}");
    let r = post_form(
        &app,
        &client,
        "/login",
        &[("csrf", &csrf), ("username", "nobody"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(get_page(&app, &client, "/").await.contains("href=\"/signup\""), "still logged out");

    // `next` is only followed to a local path.
    for (next, expected) in
        [("//evil.example/x", "/"), ("https://evil.example", "/"), ("/u/carol", "/u/carol")]
    {
        let client = app.client();
        let csrf = csrf_of(&get_page(&app, &client, "/login").await);
        let r = post_form(
            &app,
            &client,
            "/login",
            &[("csrf", &csrf), ("username", "carol"), ("password", PASSWORD), ("next", next)],
        )
        .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&r), expected, "next={next}");
    }
}

#[tokio::test]
async fn bad_addresses_and_logged_out_visitors() {
    let app = testkit::spawn_app().await;
    let visitor = app.client();

    let r = get(&app, &visitor, "/p/abc").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_html(&r);
    assert!(r.text().await.unwrap().contains("post ids are positive whole numbers"));
    let r = get(&app, &visitor, "/u/nobody").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_html(&r);
    assert!(r.text().await.unwrap().contains("no such user"));
    let r = get(&app, &visitor, "/no/such/page").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_html(&r);
    let r = get(&app, &visitor, "/api/v1/no/such/route").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        r.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("application/json"),
        "the API keeps JSON"
    );
    let r = visitor.delete(app.url("/upload")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_html(&r);

    // Logged out: the new-post page and every logged-in form send to /login.
    let r = get(&app, &visitor, "/upload").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login");
    let csrf = csrf_of(&get_page(&app, &visitor, "/login").await);
    let r = post_form(&app, &visitor, "/upload", &[("csrf", &csrf), ("caption", "hello")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login");
    let r = post_form(&app, &visitor, "/upload", &[("caption", "hello")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login");

    // A real post, seen logged out; then ids that are not there, and bad cursors.
    let dave = sign_up(&app, "dave").await;
    let id = publish(&app, &dave, "hello from dave").await;
    let page = get_page(&app, &visitor, &format!("/p/{id}")).await;
    assert!(page.contains("hello from dave") && page.contains("Log in to like"));
    let r = post_form(&app, &visitor, &format!("/p/{id}/like"), &[("csrf", &csrf), ("action", "like")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login");
    let r = post_form(&app, &visitor, "/u/dave/follow", &[("csrf", &csrf), ("action", "follow")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login");
    let profile = get_page(&app, &visitor, "/u/dave").await;
    assert!(profile.contains("hello from dave") && !profile.contains("/u/dave/follow"));

    let missing = id.parse::<i64>().unwrap() + 1;
    let r = get(&app, &visitor, &format!("/p/{missing}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_html(&r);
    let r = get(&app, &dave, "/?cursor=garbage").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("cursor is not one this server issued"));
    let r = get(&app, &visitor, "/u/dave?cursor=garbage").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = get(&app, &visitor, "/u/Dave").await;
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(location(&r), "/u/dave");
}

#[tokio::test]
async fn feeds_and_profiles_page_with_older_posts_links() {
    let app = testkit::spawn_app().await;
    let erin = sign_up(&app, "erin").await;
    for i in 0..25 {
        publish(&app, &erin, &format!("post number {i:02}")).await;
    }
    for base in ["/", "/u/erin"] {
        let first = get_page(&app, &erin, base).await;
        assert!(first.contains("post number 24") && !first.contains("post number 04"), "{base}");
        let marker = format!("href=\"{base}?cursor=");
        let start =
            first.find(&marker).unwrap_or_else(|| panic!("no older-posts link on {base}")) + marker.len();
        let cursor = &first[start..start + first[start..].find('"').unwrap()];
        let second = get_page(&app, &erin, &format!("{base}?cursor={cursor}")).await;
        assert!(second.contains("post number 04") && second.contains("post number 00"), "{second}");
        assert!(!second.contains("post number 05") && !second.contains("?cursor="), "{second}");
    }
}
