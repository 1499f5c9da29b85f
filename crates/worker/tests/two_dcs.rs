//! Workers in a two-DC deployment: a worker attached to dc1's Redis, with dc2's as
//! its peer (as `millions control` configures it), makes its writes seen through
//! dc2 too; while dc2's Redis hangs, its jobs retry until dc2 has them (ADR 0008),
//! and dc1 has their writes meanwhile.

mod common;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use testkit::{OwnedRedis, TestApp, TestEnv, eventually};

/// A deployment whose web server is in dc2 (its own Redis, dc1's as peer); dc1's
/// Redis is the test binary's shared one, where workers attach.
async fn dc2_web(dc2_redis: &OwnedRedis) -> (TestEnv, TestApp) {
    let env = TestEnv::new().await;
    let dc1_url = env.redis_url.clone();
    let app = env
        .spawn_with(|c| {
            c.redis.url = dc2_redis.url();
            c.redis.peers = vec![dc1_url];
        })
        .await;
    (env, app)
}

async fn post_status(app: &TestApp, id: &str) -> String {
    get_json(app, &format!("/api/v1/posts/{id}"), None).await["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_photo_made_ready_by_a_dc1_worker_reads_ready_through_dc2_whose_cache_said_processing() {
    let dc2_redis = testkit::fresh_redis();
    let (env, dc2) = dc2_web(&dc2_redis).await;
    let author = signup(&dc2, "west_photographer").await;
    let fan = signup(&dc2, "west_viewer").await;
    follow_and_warm(&dc2, &fan, "west_photographer").await;

    // Uploaded through dc2, which caches the post as `processing` (L1 and Redis).
    let id = upload_id(&dc2, &author, jpeg(640, 480)).await;
    for _ in 0..2 {
        assert_eq!(post_status(&dc2, &id).await, "processing");
    }
    assert!(dc2.state.caches().metrics.get("post", "l1_hit") >= 1, "dc2 serves it from its L1");

    // A worker of dc1 processes it.
    let worker = env.spawn_worker_with(|c| c.redis.peers = vec![dc2_redis.url()]).await;
    await_status_on_primary(worker.ctx.data(), id.parse().unwrap(), "ready").await;
    eventually("the job to complete", async || env.count("SELECT count(*) FROM jobs").await == 0).await;
    eventually("dc2 to read the post as ready", async || post_status(&dc2, &id).await == "ready").await;
    assert!(feed_ids(&dc2, &fan).await.contains(&id), "the post reached the warm timeline in dc2");
}

/// Stops (SIGSTOP) or resumes (SIGCONT) a process: a server that hangs,
/// accepting connections and answering nothing, and keeps its data.
fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).unwrap();
}

#[tokio::test]
async fn a_photo_job_while_the_peer_dcs_redis_hangs_retries_until_the_post_reaches_it() {
    let dc2_redis = testkit::fresh_redis();
    let (env, dc2) = dc2_web(&dc2_redis).await;
    let author = signup(&dc2, "west_author").await;
    let fan = signup(&dc2, "west_reader").await;
    follow_and_warm(&dc2, &fan, "west_author").await;
    let worker = env.spawn_worker_with(|c| c.redis.peers = vec![dc2_redis.url()]).await;
    // The reader reads through dc1 too: a complete timeline in dc1's Redis.
    let dc1 =
        cache::Redis::connect(&env.redis_url, &env.prefix, std::time::Duration::from_secs(1)).await.unwrap();
    let dc1_timelines = cache::Timelines::new(dc1, 800, std::time::Duration::from_secs(600));
    dc1_timelines.begin_rebuild(fan.id).await.unwrap();
    assert!(dc1_timelines.fill(fan.id, &[]).await.unwrap());

    // dc2's Redis hangs (its data, the warm timeline, stays); a photo post arrives
    // (dc2's web tier needs its Redis for sessions, so it is written directly).
    signal(dc2_redis.pid(), Signal::SIGSTOP);
    let id = photo_post_direct(&env, worker.ctx.data(), author.id, 640, 480, 50).await;
    eventually("an attempt to fail on dc2's Redis and be scheduled again", async || {
        let failed =
            "SELECT count(*) FROM jobs WHERE kind = 'photo' AND state <> 'dead' AND last_error LIKE '%peer redis%'";
        env.count(failed).await == 1
    })
    .await;
    assert_eq!(post_on_primary(worker.ctx.data(), id).await.status, "ready", "the post is ready meanwhile");
    assert_eq!(
        dc1_timelines.page(fan.id, None, 10).await.unwrap(),
        Some(vec![id]),
        "a DC whose Redis hangs does not keep the post from dc1's timelines meanwhile"
    );
    signal(dc2_redis.pid(), Signal::SIGCONT);

    eventually("the job to complete", async || env.count("SELECT count(*) FROM jobs").await == 0).await;
    assert!(feed_ids(&dc2, &fan).await.contains(&id.to_string()), "the post reached dc2's warm timeline");
    assert_eq!(post_status(&dc2, &id.to_string()).await, "ready");
}
