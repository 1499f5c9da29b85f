//! Helpers shared by the web tier's integration tests.
#![allow(dead_code, unused_imports)] // each test binary uses its own subset

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use testkit::TestApp;

/// A signed-up, logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub id: i64,
    pub token: String,
}

pub async fn signup(app: &TestApp, username: &str) -> User {
    let client = Client::new();
    let r = client
        .post(app.url("/api/v1/users"))
        .json(&json!({"username": username, "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "signup {username}: {}", r.text().await.unwrap());
    login(app, username).await
}

pub async fn login(app: &TestApp, username: &str) -> User {
    let r = Client::new()
        .post(app.url("/api/v1/sessions"))
        .json(&json!({"username": username, "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    User {
        username: username.to_owned(),
        id: body["user"]["id"].as_str().unwrap().parse().unwrap(),
        token: body["token"].as_str().unwrap().to_owned(),
    }
}

pub async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    user: Option<&User>,
    body: Option<Value>,
) -> Response {
    let client = Client::new();
    let mut req = client.request(method.parse().unwrap(), app.url(path));
    if let Some(u) = user {
        req = req.bearer_auth(&u.token);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

/// Send and expect `status`; returns the JSON body (or Null).
pub async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    user: Option<&User>,
    body: Option<Value>,
    status: StatusCode,
) -> Value {
    let r = send(app, method, path, user, body).await;
    let got = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The error code of a JSON error body, checking its shape.
pub fn error_code(body: &Value) -> &str {
    assert!(body["error"]["message"].is_string(), "error body without message: {body}");
    body["error"]["code"].as_str().expect("error body has a code")
}

pub async fn post_text(app: &TestApp, user: &User, caption: &str) -> i64 {
    let body = call(
        app,
        "POST",
        "/api/v1/posts",
        Some(user),
        Some(json!({"caption": caption})),
        StatusCode::CREATED,
    )
    .await;
    body["id"].as_str().unwrap().parse().unwrap()
}

pub async fn feed_ids(app: &TestApp, user: &User, query: &str) -> (Vec<i64>, Option<String>) {
    let body = call(app, "GET", &format!("/api/v1/feed{query}"), Some(user), None, StatusCode::OK).await;
    page_ids(&body)
}

/// The usernames of a list of users (a page's `users`, search results).
pub fn usernames(users: &Value) -> Vec<String> {
    users
        .as_array()
        .unwrap_or_else(|| panic!("a list of users: {users}"))
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect()
}

pub fn page_ids(body: &Value) -> (Vec<i64>, Option<String>) {
    let ids = body["posts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().parse().unwrap())
        .collect();
    (ids, body["next_cursor"].as_str().map(str::to_owned))
}

/// Row counts of every table, summed over the deployment's shards.
pub async fn row_counts(app: &TestApp) -> Vec<(String, i64)> {
    let mut totals = vec![];
    for table in ["users", "follows_out", "follows_in", "posts", "likes"] {
        let mut n = 0;
        for url in &app.env.shards {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            let conn = tokio::spawn(conn);
            let row = client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap();
            n += row.get::<_, i64>(0);
            drop(client);
            let _ = conn.await;
        }
        totals.push((table.to_owned(), n));
    }
    totals
}

/// Tables that hold the system's state (every shard has them all).
pub const STATE_TABLES: &[&str] =
    &["users", "follows_out", "follows_in", "posts", "likes", "jobs", "sessions"];

/// The full contents of every state table on every shard: (shard, table, rows),
/// each row as JSON text (every column, counters included), sorted. Two equal
/// snapshots mean nothing at all was written in between.
pub async fn db_snapshot(app: &TestApp) -> Vec<(usize, &'static str, Vec<String>)> {
    let mut out = vec![];
    for (shard, url) in app.env.shards.iter().enumerate() {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        let conn = tokio::spawn(conn);
        for table in STATE_TABLES {
            let rows = client
                .query(&format!("SELECT row_to_json(t)::text FROM {table} t ORDER BY 1"), &[])
                .await
                .unwrap_or_else(|e| panic!("reading {table}: {e}"));
            out.push((shard, *table, rows.iter().map(|r| r.get::<_, String>(0)).collect()));
        }
        drop(client);
        let _ = conn.await;
    }
    out
}

/// Run `sql` on the shard that holds `user_id`'s rows (in `app`'s deployment).
pub async fn exec_on_users_shard(app: &TestApp, user_id: i64, sql: &str) {
    let shard = app.state.data().shard_map().shard_of_user(user_id);
    let (client, conn) =
        tokio_postgres::connect(&app.env.shards[shard.0 as usize], tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = conn.await;
}

pub use testkit::eventually;

/// A `width`×`height` JPEG with a colour gradient (so it is not trivially small).
pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, ((x + y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encoding a JPEG");
    out.into_inner()
}

/// A browser-like client logged in as `username` (cookies kept: the session's,
/// and the CSRF token's once a page sets it; redirects not followed).
pub async fn browser(app: &TestApp, username: &str) -> Client {
    let client = app.client();
    let r = client
        .post(app.url("/api/v1/sessions"))
        .json(&json!({"username": username, "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    client
}

/// `GET path` as `client`, expecting 200; the page's HTML.
pub async fn page(app: &TestApp, client: &Client, path: &str) -> String {
    let r = client.get(app.url(path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    r.text().await.unwrap()
}

/// The value of the first hidden `csrf` input of a page.
pub fn csrf_of(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).unwrap_or_else(|| panic!("no csrf field in:\n{html}")) + marker.len();
    let len = html[start..].find('"').expect("end of the csrf value");
    html[start..start + len].to_owned()
}

/// Files in the deployment's object store folder (at any depth), sorted.
pub fn stored_files(app: &TestApp) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("reading the store folder") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = vec![];
    walk(app.env.store.path(), &mut out);
    out.sort();
    out
}

/// A photo post of `bytes` (a JPEG) by `user` through the API, with `caption`;
/// the 202 answer's JSON (status `processing`).
pub async fn post_photo(app: &TestApp, user: &User, bytes: Vec<u8>, caption: &str) -> Value {
    let part = reqwest::multipart::Part::bytes(bytes).file_name("p.jpg").mime_str("image/jpeg").unwrap();
    let form = reqwest::multipart::Form::new().text("caption", caption.to_owned()).part("photo", part);
    let r = Client::new()
        .post(app.url("/api/v1/posts"))
        .bearer_auth(&user.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "a photo post");
    r.json().await.unwrap()
}
