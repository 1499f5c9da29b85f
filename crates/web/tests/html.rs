//! The HTML pages, driven like a browser: plain forms, cookies, redirects by hand.

use reqwest::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use reqwest::{Client, Response, StatusCode};
use testkit::TestApp;

mod common;
use common::{csrf_of, jpeg, stored_files};

const PASSWORD: &str = "correct horse battery";

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
    assert_eq!(page.matches("<script").count(), 1, "only the site's own script: {page}");
    assert!(page.contains(r#"<script src="/static/app.js" defer>"#), "{page}");
    assert!(page.contains("0 likes"));
    assert!(page.contains(" UTC\">now</time>"), "how long ago, the exact time on hover: {page}");
    assert!(page.contains("href=\"/u/alice\""));
    let home = get_page(&app, &alice, "/").await;
    assert!(home.contains("&lt;script&gt;alert"), "own posts are in one's feed");
    let profile = get_page(&app, &alice, "/u/alice").await;
    assert!(profile.contains("@alice") && profile.contains("&lt;script&gt;alert"), "{profile}");
    assert!(!profile.contains("action=\"/u/alice/follow\""), "no follow button on one's own profile");

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
async fn the_forms_show_the_abuse_limits_with_when_to_retry() {
    let app = testkit::TestEnv::new()
        .await
        .spawn_with(|c| {
            c.abuse.signups_per_addr = 1;
            c.abuse.failed_logins_per_addr = 2;
        })
        .await;
    sign_up(&app, "dora").await;
    let client = app.client();
    let csrf = csrf_of(&get_page(&app, &client, "/signup").await);
    let r =
        post_form(&app, &client, "/signup", &[("csrf", &csrf), ("username", "eric"), ("password", PASSWORD)])
            .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let page = r.text().await.unwrap();
    assert!(
        page.contains("too many accounts made from your address") && page.contains("value=\"eric\""),
        "{page}"
    );

    let csrf = csrf_of(&get_page(&app, &client, "/login").await);
    let attempt = |password: &'static str| {
        let (client, csrf) = (client.clone(), csrf.clone());
        let app = &app;
        async move {
            post_form(
                app,
                &client,
                "/login",
                &[("csrf", &csrf), ("username", "dora"), ("password", password)],
            )
            .await
        }
    };
    for _ in 0..2 {
        assert_eq!(attempt("wrong pass").await.status(), StatusCode::UNAUTHORIZED);
    }
    let r = attempt(PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    let page = r.text().await.unwrap();
    assert!(
        page.contains("too many failed logins from your address") && page.contains("value=\"dora\""),
        "{page}"
    );
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
    assert!(profile.contains("hello from dave") && !profile.contains(r#"action="/u/dave/follow""#));

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

// ---------------------------------------------------------------------------
// Photos through the HTML form.
// ---------------------------------------------------------------------------

/// One part of a multipart form.
enum Part {
    /// A text field.
    Text(&'static str, String),
    /// A file: field name, file name, content type, bytes.
    File(&'static str, &'static str, &'static str, Vec<u8>),
}

fn text(name: &'static str, value: &str) -> Part {
    Part::Text(name, value.to_owned())
}

fn photo(bytes: Vec<u8>) -> Part {
    Part::File("photo", "photo.jpg", "image/jpeg", bytes)
}

/// POST a multipart form to `/upload`, its parts in the order given.
async fn post_multipart(app: &TestApp, client: &Client, parts: Vec<Part>) -> Response {
    let mut form = reqwest::multipart::Form::new();
    for part in parts {
        form = match part {
            Part::Text(name, value) => form.text(name, value),
            Part::File(name, file_name, mime, bytes) => form.part(
                name,
                reqwest::multipart::Part::bytes(bytes).file_name(file_name).mime_str(mime).unwrap(),
            ),
        };
    }
    client.post(app.url("/upload")).multipart(form).send().await.expect("POST multipart")
}

async fn post_json(app: &TestApp, id: &str) -> serde_json::Value {
    let r = reqwest::get(app.url(&format!("/api/v1/posts/{id}"))).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

fn csp_of(r: &Response) -> String {
    r.headers().get("content-security-policy").expect("a CSP header").to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_photo_posted_through_the_form_is_processed_and_shown() {
    let app = testkit::spawn_app().await;
    let alice = sign_up(&app, "alice").await;

    // The form is multipart, with a file input, and its token comes before the photo.
    let r = get(&app, &alice, "/upload").await;
    assert_eq!(r.status(), StatusCode::OK);
    let csp = csp_of(&r);
    assert!(csp.contains("img-src 'self' data:;") && csp.contains("script-src 'self';"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"enctype="multipart/form-data""#), "{page}");
    assert!(page.contains(r#"type="file" name="photo" accept="image/jpeg,image/png,image/webp""#), "{page}");
    let form = &page[page.find(r#"action="/upload""#).expect("the upload form")..];
    let (token_at, photo_at) = (form.find(r#"name="csrf""#).unwrap(), form.find(r#"name="photo""#).unwrap());
    assert!(token_at < photo_at, "the csrf field comes first: {form}");
    let home = get_page(&app, &alice, "/").await;
    assert!(home.contains(r#"name="photo""#), "the home page's form takes a photo too");

    let csrf = csrf_of(&page);
    let r = post_multipart(
        &app,
        &alice,
        vec![text("csrf", &csrf), text("caption", "My cat <3"), photo(jpeg(1600, 1200))],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    let post_path = location(&r);
    let id = post_path.strip_prefix("/p/").expect("redirected to the post").to_owned();

    // No worker yet: the post is processing, and its page says so and refreshes.
    let page = get_page(&app, &alice, &post_path).await;
    assert!(page.contains("Processing your photo…"), "{page}");
    assert!(page.contains(r#"<meta http-equiv="refresh" content="3">"#), "{page}");
    assert!(page.contains("My cat &lt;3") && !page.contains("<img"), "{page}");
    let profile = get_page(&app, &alice, "/u/alice").await;
    assert!(profile.contains("Processing your photo…"), "{profile}");
    let seen_by_others = get_page(&app, &app.client(), &post_path).await;
    assert!(seen_by_others.contains("Processing this photo…"), "{seen_by_others}");
    assert_eq!(posts_count(&app, "alice").await, 1);

    let post = post_json(&app, &id).await;
    assert_eq!(post["status"], "processing", "{post}");
    assert_eq!(post["caption"], "My cat <3");
    assert_eq!(post["photo"]["original"]["width"], 1600, "{post}");
    assert_eq!(post["photo"]["original"]["height"], 1200, "{post}");
    assert_eq!(post["photo"]["thumbnails"], serde_json::json!([]), "{post}");
    let original = post["photo"]["original"]["url"].as_str().unwrap().to_owned();
    assert!(original.starts_with("/media/"), "{original}");

    // The original is served at its URL, cacheable forever.
    let r = reqwest::get(app.url(&original)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(r.headers()[CONTENT_TYPE], "image/jpeg");
    assert!(r.bytes().await.unwrap().starts_with(&[0xFF, 0xD8]), "a JPEG");
    // A photo that is not there, or a key that names none, is a 404 with the
    // API's error body, like every other error.
    let missing = format!("/media/{}.jpg", "0".repeat(64));
    for path in [missing.as_str(), "/media/..%2F..%2Fetc%2Fpasswd", "/media/nope"] {
        let r = reqwest::get(app.url(path)).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }

    // A worker makes the thumbnails; the page then shows the photo.
    let worker = app.env.spawn_worker().await;
    testkit::eventually("the worker processes the photo", || async {
        post_json(&app, &id).await["status"] != "processing"
    })
    .await;
    let post = post_json(&app, &id).await;
    worker.stop().await;
    assert_eq!(post["status"], "ready", "{post}");
    let thumbs: Vec<(String, u64, u64)> = post["photo"]["thumbnails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["url"].as_str().unwrap().to_owned(),
                t["width"].as_u64().unwrap(),
                t["height"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(thumbs.iter().map(|t| t.1).collect::<Vec<_>>(), [160, 640, 1280], "{post}");
    let srcset = thumbs.iter().map(|(url, w, _)| format!("{url} {w}w")).collect::<Vec<_>>().join(", ");
    let (medium, w, h) = &thumbs[1];

    let page = get_page(&app, &alice, &post_path).await;
    assert!(!page.contains("Processing") && !page.contains("http-equiv"), "{page}");
    let img = format!(r#"<img src="{medium}" srcset="{srcset}" sizes=""#);
    assert!(page.contains(&img), "{img} in {page}");
    assert!(page.contains(&format!(r#"width="{w}" height="{h}" alt="My cat &lt;3""#)), "{page}");
    assert!(!page.contains(r#"loading="lazy""#), "the post's own page loads its photo at once");
    assert!(page.contains(&format!(r#"href="{original}""#)), "a link to the original: {page}");

    // Lists show the 640 thumbnail too, loaded lazily and linking to the post.
    for list in ["/", "/u/alice"] {
        let page = get_page(&app, &alice, list).await;
        assert!(page.contains(&img) && page.contains(r#"loading="lazy""#), "{list}: {page}");
        assert!(page.contains(&format!(r#"<a href="{post_path}" tabindex="-1"><img"#)), "{list}: {page}");
    }
}

#[tokio::test]
async fn the_multipart_form_also_posts_text_alone() {
    let app = testkit::spawn_app().await;
    let bob = sign_up(&app, "bob").await;
    let csrf = csrf_of(&get_page(&app, &bob, "/upload").await);

    // A browser sends an empty, unnamed file part when no photo was chosen.
    let no_file = Part::File("photo", "", "application/octet-stream", vec![]);
    let r =
        post_multipart(&app, &bob, vec![text("csrf", &csrf), text("caption", "just words"), no_file]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    let page = get_page(&app, &bob, &location(&r)).await;
    assert!(page.contains("just words") && !page.contains("Processing") && !page.contains("<img"), "{page}");
    let r = post_multipart(&app, &bob, vec![text("csrf", &csrf), text("caption", "no photo part")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(posts_count(&app, "bob").await, 2);

    // Neither a caption nor a photo: the form again, with a message.
    let no_file = Part::File("photo", "", "application/octet-stream", vec![]);
    let r = post_multipart(&app, &bob, vec![text("csrf", &csrf), text("caption", "  "), no_file]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_html(&r);
    let page = r.text().await.unwrap();
    assert!(page.contains("write a caption or choose a photo") && page.contains("<textarea"), "{page}");

    // A caption the rules refuse re-renders the form, keeping the text.
    let long = "z".repeat(3000);
    let r =
        post_multipart(&app, &bob, vec![text("csrf", &csrf), text("caption", &long), photo(jpeg(40, 30))])
            .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.unwrap();
    assert!(page.contains("captions are at most 2200 characters") && page.contains(&long), "{page}");

    // Parts the form does not have, or twice, are a 400 page.
    for parts in [
        vec![text("csrf", &csrf), text("caption", "x"), text("extra", "1")],
        vec![text("csrf", &csrf), text("caption", "x"), text("caption", "y")],
        vec![text("csrf", &csrf), photo(jpeg(40, 30)), photo(jpeg(40, 30))],
    ] {
        let r = post_multipart(&app, &bob, parts).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_html(&r);
    }
    assert_eq!(posts_count(&app, "bob").await, 2);
    assert!(stored_files(&app).is_empty(), "{:?}", stored_files(&app));
}

#[tokio::test]
async fn photo_uploads_without_the_csrf_token_first_store_nothing() {
    let app = testkit::spawn_app().await;
    let alice = sign_up(&app, "alice").await;
    let good = csrf_of(&get_page(&app, &alice, "/upload").await);
    let wrong = "A".repeat(43);
    let jpg = jpeg(64, 48);

    for (what, parts) in [
        ("no token", vec![text("caption", "forged"), photo(jpg.clone())]),
        ("no token, no photo", vec![text("caption", "forged")]),
        ("a wrong token", vec![text("csrf", &wrong), text("caption", "forged"), photo(jpg.clone())]),
        ("an empty token", vec![text("csrf", ""), text("caption", "forged"), photo(jpg.clone())]),
        ("the photo first", vec![photo(jpg.clone()), text("csrf", &good), text("caption", "forged")]),
        ("the photo before the token", vec![text("caption", "f"), photo(jpg.clone()), text("csrf", &good)]),
        ("two tokens", vec![text("csrf", &good), text("csrf", &wrong), photo(jpg.clone())]),
        ("another part first", vec![text("extra", "1"), text("csrf", &good), photo(jpg.clone())]),
    ] {
        let r = post_multipart(&app, &alice, parts).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
        assert_html(&r);
        assert!(r.text().await.unwrap().contains("reload the page"), "{what}");
    }

    // The right token in the form but no cookie (another site's page cannot read it).
    let alice_id = web::service::user_id_of(&app.state, "alice").await.unwrap();
    let sid = app.state.sessions().create(alice_id).await.unwrap();
    let form = reqwest::multipart::Form::new()
        .text("csrf", good.clone())
        .text("caption", "forged")
        .part("photo", reqwest::multipart::Part::bytes(jpg.clone()).file_name("a.jpg"));
    let r = reqwest::Client::new()
        .post(app.url("/upload"))
        .header("cookie", format!("sid={sid}"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Logged out: to the log-in page, whatever the form holds.
    let visitor = app.client();
    let r = post_multipart(&app, &visitor, vec![text("csrf", &good), photo(jpg.clone())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login");

    assert_eq!(posts_count(&app, "alice").await, 0);
    assert!(stored_files(&app).is_empty(), "{:?}", stored_files(&app));

    // With the token, a file that is no image is a 415 page with the form again.
    let r = post_multipart(
        &app,
        &alice,
        vec![
            text("csrf", &good),
            text("caption", "keep <me>"),
            Part::File("photo", "notes.txt", "text/plain", b"just some text, no pixels".to_vec()),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_html(&r);
    let page = r.text().await.unwrap();
    assert!(page.contains("upload a JPEG, PNG or WebP"), "{page}");
    assert!(page.contains("keep &lt;me&gt;</textarea>"), "the caption is kept: {page}");
    assert!(page.contains(r#"name="photo""#), "the form is shown again");

    // A damaged image: 422, the form again.
    let mut damaged = jpeg(200, 150);
    damaged.truncate(damaged.len() / 2);
    let r = post_multipart(&app, &alice, vec![text("csrf", &good), text("caption", "half"), photo(damaged)])
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("the image is damaged or incomplete") && page.contains("half</textarea>"),
        "{page}"
    );

    assert_eq!(posts_count(&app, "alice").await, 0);
    assert!(stored_files(&app).is_empty(), "{:?}", stored_files(&app));
}

#[tokio::test]
async fn oversized_uploads_and_huge_images_are_refused_with_the_form() {
    let env = testkit::TestEnv::new().await;
    let app = env
        .spawn_with(|c| {
            c.media.max_upload_bytes = 64 * 1024;
            c.media.max_pixels = 100 * 100;
            c.media.public_base = "https://cdn.example/media/".into();
        })
        .await;
    let carol = sign_up(&app, "carol").await;
    let r = get(&app, &carol, "/upload").await;
    let csp = csp_of(&r);
    assert!(csp.contains("img-src 'self' data: https://cdn.example;"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(page.contains("up to 64 KB"), "{page}");
    let csrf = csrf_of(&page);

    // Over the photo limit, found while reading it: the form again, caption kept.
    let big = vec![0xAB; 100 * 1024];
    let r =
        post_multipart(&app, &carol, vec![text("csrf", &csrf), text("caption", "too big"), photo(big)]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_html(&r);
    let page = r.text().await.unwrap();
    assert!(page.contains("photos are at most 64 KB") && page.contains("too big</textarea>"), "{page}");

    // Declared longer than any upload may be: refused before reading it.
    let huge = vec![0xAB; 300 * 1024];
    let r =
        post_multipart(&app, &carol, vec![text("csrf", &csrf), text("caption", "huge"), photo(huge)]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_html(&r);
    assert!(r.text().await.unwrap().contains("photos are at most 64 KB"));

    // A caption-only form keeps the usual body limit on this route.
    let long = "w".repeat(200 * 1024);
    let r = post_form(&app, &carol, "/upload", &[("csrf", &csrf), ("caption", &long)]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_html(&r);

    // Small in bytes, too many pixels.
    let r = post_multipart(
        &app,
        &carol,
        vec![text("csrf", &csrf), text("caption", "wide"), photo(jpeg(300, 200))],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.unwrap();
    assert!(page.contains("more than allowed") && page.contains("wide</textarea>"), "{page}");

    assert_eq!(posts_count(&app, "carol").await, 0);
    assert!(stored_files(&app).is_empty(), "{:?}", stored_files(&app));

    // Within the limits, the photo's URLs point at the configured base.
    let r = post_multipart(&app, &carol, vec![text("csrf", &csrf), photo(jpeg(80, 60))]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    let id = location(&r).strip_prefix("/p/").unwrap().to_owned();
    let post = post_json(&app, &id).await;
    let url = post["photo"]["original"]["url"].as_str().unwrap();
    assert!(url.starts_with("https://cdn.example/media/"), "{post}");
    assert_eq!(stored_files(&app).len(), 1);
}
