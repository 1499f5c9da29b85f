//! The photo pipeline end to end: upload through the web tier, processing by
//! workers, thumbnails served by the origin; and every way it can go wrong.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use testkit::{TestApp, TestEnv};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct User {
    token: String,
    id: i64,
}

async fn signup(app: &TestApp, name: &str) -> User {
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

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

async fn upload(app: &TestApp, user: &User, bytes: Vec<u8>, caption: &str) -> reqwest::Response {
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

async fn get_json(app: &TestApp, path: &str, user: Option<&User>) -> Value {
    let mut req = reqwest::Client::new().get(app.url(path));
    if let Some(u) = user {
        req = req.bearer_auth(&u.token);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    r.json().await.unwrap()
}

/// Poll the post until its status is `want`.
async fn await_status(app: &TestApp, id: &str, want: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let post = get_json(app, &format!("/api/v1/posts/{id}"), None).await;
        if post["status"] == want {
            return post;
        }
        assert!(tokio::time::Instant::now() < deadline, "post {id} never became {want}: {post}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Files in the object store.
fn stored_files(env: &TestEnv) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum()
            })
            .unwrap_or(0)
    }
    walk(env.store.path())
}

#[tokio::test]
async fn an_upload_becomes_ready_with_three_thumbnails_and_reaches_followers() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let _worker = env.spawn_worker().await;
    let author = signup(&app, "photographer").await;
    let fan = signup(&app, "fan").await;
    let r = reqwest::Client::new()
        .put(app.url("/api/v1/users/photographer/follow"))
        .bearer_auth(&fan.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    get_json(&app, "/api/v1/feed", Some(&fan)).await; // warm the fan's timeline

    let r = upload(&app, &author, jpeg(2000, 1500), "sunset").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let post: Value = r.json().await.unwrap();
    assert_eq!(post["status"], "processing");
    assert_eq!(post["photo"]["original"]["width"], 2000);
    assert_eq!(post["photo"]["thumbnails"].as_array().unwrap().len(), 0);
    let id = post["id"].as_str().unwrap().to_owned();

    let post = await_status(&app, &id, "ready").await;
    let thumbs = post["photo"]["thumbnails"].as_array().unwrap();
    let dims: Vec<(u64, u64)> =
        thumbs.iter().map(|t| (t["width"].as_u64().unwrap(), t["height"].as_u64().unwrap())).collect();
    assert_eq!(dims, vec![(160, 120), (640, 480), (1280, 960)]);
    for t in thumbs {
        let url = t["url"].as_str().unwrap();
        assert!(url.starts_with("/media/") && url.ends_with(".jpg"), "{url}");
        let r = reqwest::get(app.url(url)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
        assert_eq!(r.headers()["content-type"], "image/jpeg");
        let img = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(
            (u64::from(img.width()), u64::from(img.height())),
            (t["width"].as_u64().unwrap(), t["height"].as_u64().unwrap())
        );
    }
    let feed = get_json(&app, "/api/v1/feed", Some(&fan)).await;
    assert_eq!(feed["posts"][0]["id"], id.as_str(), "the worker fanned the ready post out");
    assert_eq!(env.count("SELECT count(*) FROM jobs").await, 0, "the finished job left the queue");
    assert_eq!(author.id, post["author"]["id"].as_str().unwrap().parse::<i64>().unwrap());
}

#[tokio::test]
async fn workers_side_by_side_never_do_the_same_job_twice() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let user = signup(&app, "busy").await;
    let mut ids = vec![];
    for i in 0..6 {
        let r = upload(&app, &user, jpeg(300 + i, 200), "batch").await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        ids.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let workers = [env.spawn_worker().await, env.spawn_worker().await, env.spawn_worker().await];
    for id in &ids {
        await_status(&app, id, "ready").await;
    }
    let finished: u64 = workers.iter().map(|w| w.ctx.data().query_count("finish_photo")).sum();
    assert_eq!(finished, 6, "each job's thumbnails were recorded exactly once");
    // A post is ready before its job is completed: wait for the completions.
    let completed = || workers.iter().map(|w| w.ctx.data().query_count("complete_job")).sum::<u64>();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while completed() < 6 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(completed(), 6, "each job was completed exactly once");
}

#[tokio::test]
async fn a_job_that_always_fails_ends_in_dead_letters_with_its_reason() {
    let env = TestEnv::new().await;
    let app = env.spawn_with(|c| c.media.max_attempts = 3).await;
    let user = signup(&app, "unlucky").await;
    let worker = env.spawn_worker_with(|c| c.chaos.fail_kinds = vec!["photo".into()]).await;
    let r = upload(&app, &user, jpeg(64, 64), "doomed").await;
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    await_status(&app, &id, "failed").await;
    let shard = worker.ctx.data().shard_map().shard_of_user(user.id);
    let dead = worker.ctx.data().dead_jobs(shard).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3, "retried until out of attempts");
    assert_eq!(dead[0].last_error.as_deref(), Some("chaos: injected failure"));

    // A job nobody can run is a dead letter at once, with the reason.
    worker.ctx.data().enqueue("mystery", user.id, json!({}), 5).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let dead = worker.ctx.data().dead_jobs(shard).await.unwrap();
        if let Some(j) = dead.iter().find(|j| j.kind == "mystery") {
            assert_eq!(j.attempts, 1);
            assert_eq!(j.last_error.as_deref(), Some("no handler for job kind \"mystery\""));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the unknown job never died");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics =
        reqwest::get(format!("http://{}/metrics", worker.addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"millions_jobs_total{kind="photo",outcome="dead"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"millions_jobs_total{kind="photo",outcome="retry"} 2"#), "{metrics}");
    assert!(metrics.contains("millions_queue_jobs{shard="), "{metrics}");
    assert!(metrics.contains("millions_queue_oldest_ready_seconds"), "{metrics}");
}

#[tokio::test]
async fn a_stopping_worker_releases_the_job_it_could_not_finish() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let user = signup(&app, "patient").await;
    let stalled = env
        .spawn_worker_with(|c| {
            c.chaos.stall_after_claim = true;
            c.worker.shutdown_grace_secs = 0;
        })
        .await;
    let r = upload(&app, &user, jpeg(64, 48), "later").await;
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.count("SELECT count(*) FROM jobs WHERE state = 'running'").await != 1 {
        assert!(tokio::time::Instant::now() < deadline, "never claimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stalled.stop().await;
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'ready' AND attempts = 0").await,
        1,
        "released, attempt not counted"
    );
    let _worker = env.spawn_worker().await;
    await_status(&app, &id, "ready").await;
}

#[tokio::test]
async fn bad_uploads_are_refused_and_store_nothing() {
    let env = TestEnv::new().await;
    let app = env.spawn_with(|c| c.media.max_upload_bytes = 200_000).await;
    let user = signup(&app, "mallory").await;
    let good = jpeg(300, 200);
    let truncated = good[..good.len() / 2].to_vec();
    // A valid PNG whose header declares 100000 x 100000 pixels.
    let bomb = {
        let mut png = Vec::new();
        image::RgbImage::new(1, 1)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    };
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec();
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "text named .jpg",
            b"just some text, honestly".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        ("truncated JPEG", truncated, StatusCode::UNPROCESSABLE_ENTITY, "corrupt_image"),
        ("decompression bomb", bomb, StatusCode::UNPROCESSABLE_ENTITY, "too_many_pixels"),
        ("empty", vec![], StatusCode::UNPROCESSABLE_ENTITY, "empty_upload"),
        ("GIF", gif, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ("oversized", vec![0xFF; 300_000], StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
    ];
    for (what, bytes, status, code) in cases {
        let r = upload(&app, &user, bytes, "nope").await;
        assert_eq!(r.status(), status, "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
    }
    // A multipart post without a photo, and with an unknown part.
    let c = reqwest::Client::new();
    let r = c
        .post(app.url("/api/v1/posts"))
        .bearer_auth(&user.token)
        .multipart(Form::new().text("caption", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let form = Form::new().text("junk", "x").part("photo", Part::bytes(jpeg(10, 10)));
    let r = c.post(app.url("/api/v1/posts")).bearer_auth(&user.token).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // An upload declaring a huge body is refused before the body is sent.
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 50000000\r\n\r\n--b\r\n",
        user.token
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(&head, b"HTTP/1.1 413", "answered 413 with 49.99 MB still unsent");

    assert_eq!(env.count("SELECT count(*) FROM posts").await, 0, "no post row");
    assert_eq!(env.count("SELECT count(*) FROM jobs").await, 0, "no job");
    assert_eq!(stored_files(&env), 0, "no object");
}

/// CRC-32 (IEEE), for patching a PNG chunk.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
