//! Workers against servers that lag, hang or die: a replica behind its primary,
//! Redis that stops answering, PostgreSQL taken away in the middle of a job.
//! Each test runs its own servers, so killing them disturbs no other test.

mod common;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use testkit::{TestEnv, eventually};

/// Stops (SIGSTOP) or resumes (SIGCONT) a process: a server that hangs,
/// accepting connections and answering nothing, and keeps its data.
fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).unwrap();
}

#[tokio::test]
async fn a_photo_job_whose_post_is_not_yet_on_the_replica_completes() {
    let pg = testkit::fresh_replicated_postgres();
    let env = TestEnv::on_replicated(&pg, testkit::redis().url()).await;
    // A bound so loose that the paused replica stays eligible for reads.
    let worker = env.spawn_worker_with(|c| c.database.max_replica_lag_ms = 600_000).await;
    let d = worker.ctx.data();
    let user = d.create_user("lagging", "Lagging", "hash").await.unwrap();
    let shard = d.shard_map().shard_of_user(user.user_id);
    eventually("the replica to serve reads", async || {
        d.usable_replicas(shard) == 1 && d.profile(user.user_id).await.unwrap().is_some()
    })
    .await;
    let replica = &env.replicas[shard.0 as usize][0];
    exec(replica, "SELECT pg_wal_replay_pause()").await;

    let id = photo_post_direct(&env, d, user.user_id, 640, 480, 3).await;
    let post = await_status_on_primary(d, id, "ready").await;
    assert_eq!(post.photo.unwrap().thumbnails.len(), 3);
    // The replica still does not have the post: the worker read the primary.
    let (client, conn) = tokio_postgres::connect(replica, tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    let on_replica = client.query_opt("SELECT 1 FROM posts WHERE post_id = $1", &[&id]).await.unwrap();
    assert!(on_replica.is_none(), "the replica was paused before the post");
    drop(client);
    let _ = conn.await;
    exec(replica, "SELECT pg_wal_replay_resume()").await;
    eventually("the job to leave the queue", async || env.count("SELECT count(*) FROM jobs").await == 0)
        .await;
}

#[tokio::test]
async fn a_fan_out_while_redis_does_not_answer_is_retried_until_it_reaches_the_timelines() {
    let redis = testkit::fresh_redis();
    let env = TestEnv { redis_url: redis.url(), ..TestEnv::new().await };
    let app = env.spawn().await;
    let author = signup(&app, "hung").await;
    let fan = signup(&app, "waiting").await;
    follow_and_warm(&app, &fan, "hung").await;
    let worker = env.spawn_worker().await;

    // Redis hangs (its data, the warm timeline, stays); a photo post arrives (the
    // web tier needs Redis for sessions, so it is written directly).
    signal(redis.pid(), Signal::SIGSTOP);
    let id = photo_post_direct(&env, worker.ctx.data(), author.id, 640, 480, 50).await;
    eventually("an attempt to fail on Redis and be scheduled again", async || {
        let failed =
            "SELECT count(*) FROM jobs WHERE kind = 'photo' AND state <> 'dead' AND last_error IS NOT NULL";
        env.count(failed).await == 1
    })
    .await;
    signal(redis.pid(), Signal::SIGCONT);

    eventually("the post to reach the fan's warm timeline", async || {
        feed_ids(&app, &fan).await.contains(&id.to_string())
    })
    .await;
    eventually("the job to complete", async || env.count("SELECT count(*) FROM jobs").await == 0).await;
    assert_eq!(post_on_primary(worker.ctx.data(), id).await.status, "ready");
}

#[tokio::test]
async fn a_text_post_whose_inline_fan_out_failed_reaches_followers_through_a_worker() {
    let redis = testkit::fresh_redis();
    let env = TestEnv { redis_url: redis.url(), ..TestEnv::new().await };
    let app = env.spawn().await;
    let author = signup(&app, "talker").await;
    let fan = signup(&app, "listener").await;
    follow_and_warm(&app, &fan, "talker").await;

    // Redis hangs while the web tier publishes a text post: the post commits,
    // its fan-out fails.
    signal(redis.pid(), Signal::SIGSTOP);
    let post = web::service::create_post(&app.state, author.id, "into the void?").await.unwrap();
    signal(redis.pid(), Signal::SIGCONT);
    assert!(!feed_ids(&app, &fan).await.contains(&post.id), "the inline fan-out failed");
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE kind = 'fanout' AND state = 'ready'").await,
        1,
        "its outbox job stays"
    );

    let _worker = env.spawn_worker().await;
    exec_all(&env, "UPDATE jobs SET run_at = now()").await; // its time comes
    eventually("a worker to fan the post out", async || feed_ids(&app, &fan).await.contains(&post.id)).await;
    eventually("the job to complete", async || env.count("SELECT count(*) FROM jobs").await == 0).await;
}

#[tokio::test]
async fn a_job_whose_database_goes_away_mid_job_is_leased_again_and_finishes_once() {
    let mut pg = testkit::fresh_postgres();
    let env = TestEnv::on_servers(&pg, testkit::redis().url()).await;
    let hold = Hold::new();
    let worker = env
        .spawn_worker_with(|c| {
            c.chaos.hold_before_finish = Some(hold.path());
            c.worker.lease_secs = 2;
        })
        .await;
    let d = worker.ctx.data();
    let user = d.create_user("unlucky", "Unlucky", "hash").await.unwrap();
    let id = photo_post_direct(&env, d, user.user_id, 1400, 1050, 5).await;
    eventually("the worker to be in the middle of the job", async || stored_files(&env) == 4).await;
    let files = files_in(env.store.path());

    // PostgreSQL goes away while the job runs; the job goes on, and recording
    // its thumbnails (and then its failure) fails.
    pg.kill();
    hold.release();
    eventually("the attempt to fail", async || {
        metrics(worker.addr).await.contains(r#"millions_jobs_total{kind="photo",outcome="retry"} 1"#)
    })
    .await;
    pg.restart();

    // Its lease lapses; it is claimed again and finishes.
    let post = await_status_on_primary(d, id, "ready").await;
    let thumbs: Vec<String> = post.photo.unwrap().thumbnails.into_iter().map(|t| t.key).collect();
    assert_eq!(thumbs.len(), 3);
    assert!(thumbs.iter().all(|k| files.contains(k)), "the same thumbnails: {thumbs:?} in {files:?}");
    assert_eq!(files_in(env.store.path()), files, "nothing stored twice");
    assert_eq!(d.query_count("finish_photo"), 1, "recorded once");
    eventually("the job to complete", async || env.count("SELECT count(*) FROM jobs").await == 0).await;
}
