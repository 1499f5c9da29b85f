//! The photo pipeline end to end: upload through the web tier, processing by
//! workers, thumbnails served by the origin; and every way it can go wrong.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use testkit::{TestEnv, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    // A post is ready before its job is completed: wait for the queue to empty.
    eventually("every job to leave the queue", async || env.count("SELECT count(*) FROM jobs").await == 0)
        .await;
    let completed: u64 = workers.iter().map(|w| w.ctx.data().query_count("complete_job")).sum();
    assert_eq!(completed, 6, "each job was completed exactly once");
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
    let dead_mystery = async || {
        let dead = worker.ctx.data().dead_jobs(shard).await.unwrap();
        dead.into_iter().find(|j| j.kind == "mystery")
    };
    eventually("the unknown job to die", async || dead_mystery().await.is_some()).await;
    let j = dead_mystery().await.unwrap();
    assert_eq!(j.attempts, 1);
    assert_eq!(j.last_error.as_deref(), Some("no handler for job kind \"mystery\""));
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
    eventually("the job to be claimed", async || {
        env.count("SELECT count(*) FROM jobs WHERE state = 'running'").await == 1
    })
    .await;
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

/// An incompressible PNG of `w`×`h` (noise), as large as its pixels.
fn noise_png(w: u32, h: u32) -> Vec<u8> {
    use image::ImageEncoder as _;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let pixels: Vec<u8> = (0..w as usize * h as usize * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::NoFilter)
        .write_image(&pixels, w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

#[tokio::test]
async fn a_stored_original_larger_than_the_upload_limit_is_still_processed() {
    let env = TestEnv::new().await;
    let worker = env.spawn_worker().await;
    let d = worker.ctx.data();
    let user = d.create_user("bigshot", "Big", "hash").await.unwrap();
    // Normalizing may make an accepted upload larger than the upload limit: the
    // stored original is not checked against it again.
    let png = noise_png(2000, 2000);
    assert!(png.len() > media::Limits::default().max_bytes, "{} bytes", png.len());
    let original = store_original(&env, &png, media::Format::Png, 2000, 2000);
    let id = d.create_photo_post(user.user_id, "huge", original, 3).await.unwrap().post_id;
    let post = await_status_on_primary(d, id, "ready").await;
    let dims: Vec<_> = post.photo.unwrap().thumbnails.iter().map(|t| (t.width, t.height)).collect();
    assert_eq!(dims, vec![(160, 160), (640, 640), (1280, 1280)]);
    assert_eq!(env.count("SELECT count(*) FROM jobs").await, 0, "no dead letter");
}

#[tokio::test]
async fn a_photo_job_of_a_failed_post_does_not_fan_it_out() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let author = signup(&app, "failing").await;
    let fan = signup(&app, "watcher").await;
    follow_and_warm(&app, &fan, "failing").await;
    let d = app.state.data();
    let id = photo_post_direct(&env, d, author.id, 64, 48, 3).await;
    // Its job is still queued, but the post failed meanwhile (a dead letter of an
    // earlier run settled it).
    exec_all(&env, &format!("UPDATE posts SET status = 'failed' WHERE post_id = {id}")).await;
    let _worker = env.spawn_worker().await;
    eventually("the job to finish", async || env.count("SELECT count(*) FROM jobs").await == 0).await;
    // Read the warm timeline in Redis itself (the API would hide a failed post anyway).
    let redis = cache::Redis::connect(&env.redis_url, &env.prefix, Duration::from_secs(5)).await.unwrap();
    let timelines = cache::Timelines::new(redis, 800, Duration::from_secs(3600));
    let ids = timelines.page(fan.id, None, 100).await.unwrap().expect("the fan's timeline is warm");
    assert!(!ids.contains(&id), "a failed post was fanned out: {ids:?}");
    assert_eq!(post_on_primary(d, id).await.status, "failed");
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_does_not_fail_the_post_when_its_attempt_dies() {
    let env = TestEnv::new().await;
    let app = env.spawn_with(|c| c.media.max_attempts = 1).await;
    let user = signup(&app, "contested").await;
    let hold = Hold::new();
    let worker = env.spawn_worker_with(|c| c.chaos.hold_before_finish = Some(hold.path())).await;
    let id = upload_id(&app, &user, jpeg(1400, 1050)).await;
    // The original and three thumbnails of distinct sizes.
    eventually("the worker to hold after storing thumbnails", async || stored_files(&env) == 4).await;
    // Its lease passes to another worker, and its own last attempt is about to
    // fail (recording the thumbnails is refused).
    exec_all(&env, "UPDATE jobs SET locked_by = 'another-worker'").await;
    exec_all(&env, "ALTER TABLE posts ADD CONSTRAINT no_ready_yet CHECK (status <> 'ready') NOT VALID").await;
    hold.release();
    worker.stop().await; // waits for the attempt to end
    assert_eq!(
        post_on_primary(app.state.data(), id.parse().unwrap()).await.status,
        "processing",
        "the stale worker must not settle a job another worker holds"
    );
    assert_eq!(env.count("SELECT count(*) FROM jobs WHERE locked_by = 'another-worker'").await, 1);
}

#[tokio::test]
async fn a_running_job_keeps_its_lease_and_a_worker_that_loses_it_stops() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let user = signup(&app, "longrunner").await;
    let holder = env
        .spawn_worker_with(|c| {
            c.worker.id = Some("holder".into());
            c.worker.lease_secs = 3;
            c.chaos.stall_after_claim = true;
        })
        .await;
    let id = upload_id(&app, &user, jpeg(64, 48)).await;
    eventually("the holder to claim the job", async || {
        env.count("SELECT count(*) FROM jobs WHERE locked_by = 'holder'").await == 1
    })
    .await;
    let _other = env.spawn_worker_with(|c| c.worker.id = Some("other".into())).await;
    // The job runs far longer than its lease: renewed, it stays with the holder
    // (first attempt) while the other worker keeps looking for due jobs.
    eventually("the lease to be renewed well past its length", async || {
        let held = "SELECT count(*) FROM jobs WHERE locked_by = 'holder' AND attempts = 1";
        assert_eq!(env.count(held).await, 1, "another worker claimed a job whose holder is alive");
        env.count(&format!("{held} AND locked_until > created_at + interval '9 seconds'")).await == 1
    })
    .await;

    // The lease is lost (taken over): the holder stops the job at its next beat.
    exec_all(&env, "UPDATE jobs SET locked_by = 'thief', locked_until = now() + interval '1 hour'").await;
    eventually("the holder to notice", async || {
        metrics(holder.addr).await.contains(r#"millions_jobs_total{kind="photo",outcome="lost"} 1"#)
    })
    .await;
    assert_eq!(env.count("SELECT count(*) FROM jobs WHERE locked_by = 'thief'").await, 1, "nothing recorded");
    holder.stop().await;
    // The thief's lease lapses; the other worker finishes the job.
    exec_all(&env, "UPDATE jobs SET locked_until = now()").await;
    await_status(&app, &id, "ready").await;
    eventually("the job to leave the queue", async || env.count("SELECT count(*) FROM jobs").await == 0)
        .await;
}

#[tokio::test]
async fn a_stopping_worker_finishes_a_job_within_the_grace_period() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let user = signup(&app, "graceful").await;
    let hold = Hold::new();
    let worker = env
        .spawn_worker_with(|c| {
            c.chaos.hold_before_finish = Some(hold.path());
            c.worker.shutdown_grace_secs = 120;
        })
        .await;
    let addr = worker.addr;
    let id = upload_id(&app, &user, jpeg(1400, 1050)).await;
    eventually("the worker to be in the middle of the job", async || stored_files(&env) == 4).await;
    let stopping = tokio::spawn(worker.stop());
    eventually("/readyz to say draining", async || {
        let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
        r.status() == StatusCode::SERVICE_UNAVAILABLE && r.text().await.unwrap() == "draining"
    })
    .await;
    hold.release();
    stopping.await.unwrap();
    // Finished, not released: ready and completed when the stop returned.
    assert_eq!(post_on_primary(app.state.data(), id.parse().unwrap()).await.status, "ready");
    assert_eq!(env.count("SELECT count(*) FROM jobs").await, 0, "completed, not released");
}

#[tokio::test]
async fn one_worker_serves_every_shard() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let map = app.state.data().shard_map();
    let mut users: Vec<User> = vec![];
    for i in 0.. {
        let u = signup(&app, &format!("sharded{i}")).await;
        if users.iter().all(|o| map.shard_of_user(o.id) != map.shard_of_user(u.id)) {
            users.push(u);
        }
        if users.len() == testkit::TEST_SHARDS {
            break;
        }
        assert!(i < 200, "no user landed on some shard");
    }
    let mut ids = vec![];
    for u in &users {
        ids.push(upload_id(&app, u, jpeg(80, 60)).await);
    }
    let _worker = env.spawn_worker().await;
    for id in &ids {
        await_status(&app, id, "ready").await;
    }
    eventually("both shards' queues to empty", async || env.count("SELECT count(*) FROM jobs").await == 0)
        .await;
}

#[tokio::test]
async fn retries_back_off_exponentially() {
    let env = TestEnv::new().await;
    let app = env.spawn_with(|c| c.media.max_attempts = 5).await;
    let user = signup(&app, "backoff").await;
    let _worker = env
        .spawn_worker_with(|c| {
            c.chaos.fail_kinds = vec!["photo".into()];
            c.worker.backoff_base_ms = 60_000;
            c.worker.backoff_max_ms = 600_000;
        })
        .await;
    upload_id(&app, &user, jpeg(32, 32)).await;
    let failed = |n: i32| {
        format!(
            "SELECT count(*) FROM jobs WHERE state = 'ready' AND attempts = {n} AND last_error IS NOT NULL"
        )
    };
    eventually("the first attempt to fail", async || env.count(&failed(1)).await == 1).await;
    // Base 60 s, ±20% jitter: due again in 48 s or more.
    let later =
        |secs: u32| format!("SELECT count(*) FROM jobs WHERE run_at > now() + interval '{secs} seconds'");
    assert_eq!(env.count(&later(45)).await, 1, "the retry was pushed back by the base delay");
    // Made due at once, it fails again and is pushed back twice as far.
    exec_all(&env, "UPDATE jobs SET run_at = now()").await;
    eventually("the second attempt to fail", async || env.count(&failed(2)).await == 1).await;
    assert_eq!(env.count(&later(90)).await, 1, "the second retry waits twice the base delay");
}

#[tokio::test]
async fn a_stale_worker_cannot_complete_fail_or_renew_a_job() {
    let env = TestEnv::new().await;
    let d =
        data::Data::new(&data::DataConfig::new(env.shards.clone()), &telemetry::Registry::default()).unwrap();
    let user = d.create_user("queued", "Q", "hash").await.unwrap();
    let shard = d.shard_map().shard_of_user(user.user_id);
    d.enqueue("noop", user.user_id, json!({}), 5).await.unwrap();
    let lease = Duration::from_secs(60);
    let stale = d.claim_jobs(shard, "a", 1, lease).await.unwrap().remove(0);
    // a's lease lapses (it hung); b claims the job.
    exec_all(&env, "UPDATE jobs SET locked_until = now() - interval '1 second'").await;
    let fresh = d.claim_jobs(shard, "b", 1, lease).await.unwrap().remove(0);
    assert_eq!((fresh.job_id, fresh.attempts), (stale.job_id, 2));
    assert!(!d.complete_job(&stale, "a").await.unwrap(), "a no longer holds it");
    assert!(!d.fail_job(&stale, "a", "late", lease, true).await.unwrap());
    assert!(!d.renew_job(&stale, "a", lease).await.unwrap());
    assert!(!d.release_job(&stale, "a").await.unwrap());
    assert!(d.renew_job(&fresh, "b", lease).await.unwrap());
    assert!(d.complete_job(&fresh, "b").await.unwrap());
    assert_eq!(env.count("SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn a_text_post_leaves_no_fanout_job_behind() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let author = signup(&app, "writer").await;
    let fan = signup(&app, "reader").await;
    follow_and_warm(&app, &fan, "writer").await;
    let r = reqwest::Client::new()
        .post(app.url("/api/v1/posts"))
        .bearer_auth(&author.token)
        .json(&json!({"caption": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE kind = 'fanout'").await,
        0,
        "the fan-out was done inline; its job dropped"
    );
    assert_eq!(feed_ids(&app, &fan).await.first(), Some(&id));
    assert_eq!(app.state.data().query_count("delete_queued_job"), 1);
}

#[tokio::test]
async fn a_text_post_committed_but_never_fanned_out_inline_is_fanned_out_by_a_worker() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let author = signup(&app, "crashy").await;
    let fan = signup(&app, "loyal").await;
    follow_and_warm(&app, &fan, "crashy").await;
    // The post and its outbox job commit, and nothing fans it out inline (what a
    // web server that died right after the commit leaves behind).
    let (post, _job) = app.state.data().create_post_queued(author.id, "lost?").await.unwrap();
    let id = post.post_id.to_string();
    assert!(!feed_ids(&app, &fan).await.contains(&id), "not fanned out yet");
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM jobs WHERE kind = 'fanout' AND state = 'ready' AND run_at > now() \
             AND payload->>'post_id' = '{id}'"
        ))
        .await,
        1,
        "the outbox job waits, giving the web server time to do it first"
    );
    let worker = env.spawn_worker().await;
    // Its time comes.
    exec_all(&env, "UPDATE jobs SET run_at = now()").await;
    eventually("the worker to fan the post out", async || feed_ids(&app, &fan).await.contains(&id)).await;
    eventually("the job to leave the queue", async || env.count("SELECT count(*) FROM jobs").await == 0)
        .await;
    // Counted by the worker, under the web servers' names: the follower and the
    // author offered, the follower's timeline (the one that exists) written.
    let text = metrics(worker.addr).await;
    for line in [
        r#"millions_fanout_posts_total{mode="push"} 1"#,
        r#"millions_fanout_posts_total{mode="pull"} 0"#,
        "millions_fanout_timelines_offered_total 2",
        "millions_fanout_timeline_writes_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
}

#[tokio::test]
async fn a_job_carries_the_id_of_the_request_that_enqueued_it() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let user = signup(&app, "traced").await;
    // Through the API: the upload's request id reaches its photo job.
    let form = reqwest::multipart::Form::new()
        .text("caption", "traced")
        .part("photo", reqwest::multipart::Part::bytes(jpeg(64, 48)).file_name("p.jpg"));
    let r = reqwest::Client::new()
        .post(app.url("/api/v1/posts"))
        .bearer_auth(&user.token)
        .header("x-request-id", "trace-me-1")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE kind = 'photo' AND request_id = 'trace-me-1'").await,
        1
    );
    // And to the worker that claims it; a job enqueued outside a request has none.
    let d =
        data::Data::new(&data::DataConfig::new(env.shards.clone()), &telemetry::Registry::default()).unwrap();
    let shard = d.shard_map().shard_of_user(user.id);
    let claimed = d.claim_jobs(shard, "w", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].request_id.as_deref(), Some("trace-me-1"));
    telemetry::request_id::scope("in-scope".to_owned(), d.enqueue("noop", user.id, json!({}), 5))
        .await
        .unwrap();
    d.enqueue("noop", user.id, json!({}), 5).await.unwrap();
    let mut ids: Vec<Option<String>> = d
        .claim_jobs(shard, "w", 10, Duration::from_secs(60))
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.request_id)
        .collect();
    ids.sort();
    assert_eq!(ids, vec![None, Some("in-scope".to_owned())]);
}

#[tokio::test]
async fn the_worker_serves_the_queries_its_jobs_sent_per_bucket() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let author = signup(&app, "load_photographer").await;
    let id = upload_id(&app, &author, jpeg(80, 60)).await;
    // A lease long enough that no heartbeat renews it while the job runs.
    let worker = env.spawn_worker_with(|c| c.worker.lease_secs = 600).await;
    let load = async || -> Value {
        let r = reqwest::get(format!("http://{}/internal/bucket-load", worker.addr)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    };
    await_status(&app, &id, "ready").await;
    eventually("the job to be completed", async || env.count("SELECT count(*) FROM jobs").await == 0).await;
    let bucket = data::PostId::from_i64(id.parse().unwrap()).unwrap().bucket().get();
    // Reads: the post, its author's profile, the author's followers (fan-out).
    // Writes: the claim, the thumbnails recorded, the job completed. All of the
    // author's bucket (a post's is its author's); the claims that found nothing
    // are the shards', not counted.
    assert_eq!(load().await, json!({"buckets": [[bucket, 3, 3]]}));
    let listed = worker.ctx.data().bucket_load();
    assert_eq!(listed, [data::BucketLoad { bucket, reads: 3, writes: 3 }]);
}
