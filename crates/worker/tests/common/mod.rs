//! Helpers shared by the worker's test binaries.
#![allow(dead_code)] // each binary uses its own subset

use data::{Data, PostId, PostRecord, StoredImage};
use media::ObjectStore as _;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
pub use testkit::files_in;
use testkit::{TestApp, TestEnv, eventually};

pub struct User {
    pub token: String,
    pub id: i64,
}

pub async fn signup(app: &TestApp, name: &str) -> User {
    let c = reqwest::Client::new();
    let body = json!({"username": name, "password": "password123"});
    let r = c.post(app.url("/api/v1/users")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r: Value =
        c.post(app.url("/api/v1/sessions")).json(&body).send().await.unwrap().json().await.unwrap();
    User {
        token: r["token"].as_str().unwrap().into(),
        id: r["user"]["id"].as_str().unwrap().parse().unwrap(),
    }
}

/// `fan` follows `author`, then reads its feed once, so its timeline is warm
/// (complete in Redis): from then on only fan-out adds posts to it.
pub async fn follow_and_warm(app: &TestApp, fan: &User, author: &str) {
    let r = reqwest::Client::new()
        .put(app.url(&format!("/api/v1/users/{author}/follow")))
        .bearer_auth(&fan.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    get_json(app, "/api/v1/feed", Some(fan)).await;
}

/// The ids in `user`'s home feed.
pub async fn feed_ids(app: &TestApp, user: &User) -> Vec<String> {
    let feed = get_json(app, "/api/v1/feed", Some(user)).await;
    feed["posts"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect()
}

pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

pub async fn upload(app: &TestApp, user: &User, bytes: Vec<u8>, caption: &str) -> reqwest::Response {
    let form =
        Form::new().text("caption", caption.to_owned()).part("photo", Part::bytes(bytes).file_name("p.jpg"));
    reqwest::Client::new()
        .post(app.url("/api/v1/posts"))
        .bearer_auth(&user.token)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// Upload a photo; the new post's id.
pub async fn upload_id(app: &TestApp, user: &User, bytes: Vec<u8>) -> String {
    let r = upload(app, user, bytes, "a photo").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

pub async fn get_json(app: &TestApp, path: &str, user: Option<&User>) -> Value {
    let mut req = reqwest::Client::new().get(app.url(path));
    if let Some(u) = user {
        req = req.bearer_auth(&u.token);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    r.json().await.unwrap()
}

/// Poll the post (through the API) until its status is `want`.
pub async fn await_status(app: &TestApp, id: &str, want: &str) -> Value {
    let path = format!("/api/v1/posts/{id}");
    eventually(&format!("post {id} to become {want}"), async || {
        get_json(app, &path, None).await["status"] == want
    })
    .await;
    get_json(app, &path, None).await
}

/// A post as its shard's primary has it.
pub async fn post_on_primary(data: &Data, id: i64) -> PostRecord {
    data::primary_reads(data.post(PostId::from_i64(id).unwrap())).await.unwrap().expect("the post exists")
}

/// Poll the primary until the post's status is `want`.
pub async fn await_status_on_primary(data: &Data, id: i64, want: &str) -> PostRecord {
    eventually(&format!("post {id} to become {want}"), async || {
        post_on_primary(data, id).await.status == want
    })
    .await;
    post_on_primary(data, id).await
}

/// Finished objects in the deployment's object store. A write in progress
/// (its `.tmp-` file, renamed into place once fsynced) is not one yet, so a
/// test waiting for N objects never snapshots the store mid-write; the
/// snapshots themselves (`files_in`) keep every file, so a leaked temporary
/// file still fails a comparison.
pub fn stored_files(env: &TestEnv) -> usize {
    files_in(env.store.path()).iter().filter(|f| !f.starts_with(".tmp-")).count()
}

/// Store `bytes` (an image of `format`) as an original in the deployment's
/// object store, as the web tier would have.
pub fn store_original(env: &TestEnv, bytes: &[u8], format: media::Format, w: u32, h: u32) -> StoredImage {
    let store = media::LocalStore::open(env.store.path()).unwrap();
    let key = store.put(bytes, format).unwrap();
    StoredImage { key: key.as_str().to_owned(), width: w, height: h }
}

/// A photo post written straight into the data layer (for tests where the web
/// tier cannot take it: Redis held, a replica paused): user `name` and a JPEG of
/// `w`×`h`; the post id.
pub async fn photo_post_direct(
    env: &TestEnv,
    data: &Data,
    author: i64,
    w: u32,
    h: u32,
    attempts: i32,
) -> i64 {
    let original = store_original(env, &jpeg(w, h), media::Format::Jpeg, w, h);
    data.create_photo_post(author, "direct", original, attempts).await.unwrap().post_id
}

/// Run `sql` on every shard database.
pub async fn exec_all(env: &TestEnv, sql: &str) {
    for url in &env.shards {
        exec(url, sql).await;
    }
}

/// Run `sql` on the database at `url`.
pub async fn exec(url: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = conn.await;
}

/// A worker's `/metrics` text.
pub async fn metrics(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap()
}

/// A file whose existence holds photo jobs before they record thumbnails
/// (`chaos.hold_before_finish`); removed with its folder on drop.
pub struct Hold {
    dir: tempfile::TempDir,
}

impl Hold {
    pub fn new() -> Hold {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hold"), b"").unwrap();
        Hold { dir }
    }
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("hold")
    }
    pub fn release(&self) {
        std::fs::remove_file(self.path()).unwrap();
    }
}
