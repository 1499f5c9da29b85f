//! Reads on streaming replicas, read-your-writes, and following the
//! controller's cluster map, against a real primary and replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use data::{Data, DataConfig, DataError, Lsns, ReadTarget, ShardId, consistency};
use sharding::{ClusterMap, ShardServers};
use testkit::{ReplicatedPostgres, TestEnv, eventually, fresh_replicated_postgres};

async fn env(pg: &ReplicatedPostgres) -> TestEnv {
    TestEnv::on_replicated(pg, testkit::redis().url()).await
}

fn data(env: &TestEnv, max_lag_ms: u64) -> Data {
    let config = DataConfig {
        replicas: env.replicas.clone(),
        max_replica_lag_ms: max_lag_ms,
        pool_size: 4,
        ..DataConfig::new(env.shards.clone())
    };
    Data::new(&config, &telemetry::Registry::default()).unwrap()
}

/// Run `sql` on the replica's copy of `shard`.
async fn on_replica(env: &TestEnv, shard: ShardId, sql: &str) {
    let (client, conn) =
        tokio_postgres::connect(&env.replicas[shard.0 as usize][0], tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap();
    drop(client);
    let _ = conn.await;
}

#[tokio::test]
async fn reads_follow_lag_and_read_your_writes() {
    let pg = fresh_replicated_postgres();
    let env = env(&pg).await;
    let d = data(&env, 300);
    let user = d.create_user("reader", "Reader", "hash").await.unwrap();
    let shard = d.shard_map().shard_of_user(user.user_id);

    // Caught up: the replica serves reads.
    eventually("the replica is usable", || async { d.usable_replicas(shard) == 1 }).await;
    // (Its lag history starts before the pause below.)
    let loose = data(&env, 600_000);
    eventually("the replica is usable under a loose bound", || async { loose.usable_replicas(shard) == 1 })
        .await;
    let on_replica_before = d.reads_on(ReadTarget::Replica);
    eventually("the replica serves the new user", || async {
        d.profile(user.user_id).await.unwrap().is_some()
            && d.reads_on(ReadTarget::Replica) > on_replica_before
    })
    .await;

    // Paused beyond the bound: not used; reads see fresh data on the primary.
    on_replica(&env, shard, "SELECT pg_wal_replay_pause()").await;
    let post = d.create_post(user.user_id, "while paused").await.unwrap();
    eventually("the paused replica exceeds the lag bound", || async { d.usable_replicas(shard) == 0 }).await;
    let on_primary = d.reads_on(ReadTarget::Primary);
    let posts = d.user_posts(user.user_id, None, 10).await.unwrap();
    assert_eq!(posts.first().map(|p| p.post_id), Some(post.post_id), "fresh data, from the primary");
    assert_eq!(d.reads_on(ReadTarget::Primary), on_primary + 1);

    // Read-your-writes, with a bound so loose the paused replica stays usable:
    // the writer's reads go to the primary, another reader's to the replica.
    let (mine, floor) = consistency::scope(Lsns::new(), async {
        let p = loose.create_post(user.user_id, "mine").await.unwrap();
        let seen = loose.user_posts(user.user_id, None, 10).await.unwrap();
        (p, seen)
    })
    .await;
    assert_eq!(mine.1.first().map(|p| p.post_id), Some(mine.0.post_id), "the writer reads its write");
    assert!(floor.get(shard).is_some(), "the write's LSN is reported");
    let replica_reads = loose.reads_on(ReadTarget::Replica);
    let theirs = loose.user_posts(user.user_id, None, 10).await.unwrap();
    assert!(theirs.iter().all(|p| p.post_id != mine.0.post_id), "no floor: the stale replica served it");
    assert_eq!(loose.reads_on(ReadTarget::Replica), replica_reads + 1);
    // With the floor, a later request (another scope) still reads its write.
    let (again, _) = consistency::scope(floor.clone(), loose.user_posts(user.user_id, None, 10)).await;
    assert_eq!(again.unwrap().first().map(|p| p.post_id), Some(mine.0.post_id));

    // Resumed: the floor is replayed and reads return to the replica.
    on_replica(&env, shard, "SELECT pg_wal_replay_resume()").await;
    eventually("floored reads return to the replica", || async {
        let before = loose.reads_on(ReadTarget::Replica);
        let (rows, _) = consistency::scope(floor.clone(), loose.user_posts(user.user_id, None, 10)).await;
        let rows = rows.unwrap();
        assert_eq!(rows.first().map(|p| p.post_id), Some(mine.0.post_id), "never stale under the floor");
        loose.reads_on(ReadTarget::Replica) > before
    })
    .await;
}

#[tokio::test]
async fn killing_the_replica_under_reads_causes_no_read_errors() {
    let mut pg = fresh_replicated_postgres();
    let env = env(&pg).await;
    let d = data(&env, 1000);
    let user = d.create_user("steady", "Steady", "hash").await.unwrap();
    let shard = d.shard_map().shard_of_user(user.user_id);
    eventually("the replica serves reads", || async {
        d.profile(user.user_id).await.unwrap().is_some() && d.reads_on(ReadTarget::Replica) > 0
    })
    .await;
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (d, errors, done) = (d.clone(), errors.clone(), done.clone());
            tokio::spawn(async move {
                while done.load(Ordering::Relaxed) == 0 {
                    match d.profile(user.user_id).await {
                        Ok(Some(_)) => {}
                        other => {
                            eprintln!("read failed: {other:?}");
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    eventually("reads run on the replica", || async { d.reads_on(ReadTarget::Replica) > 50 }).await;
    pg.replica.kill9();
    let on_primary = d.reads_on(ReadTarget::Primary);
    eventually("the monitor drops the dead replica", || async { d.usable_replicas(shard) == 0 }).await;
    eventually("reads continue on the primary", || async {
        d.reads_on(ReadTarget::Primary) > on_primary + 100
    })
    .await;
    done.store(1, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "no read failed");
}

/// A stand-in for `millions control`'s map endpoint: `GET /cluster[?after=N]`.
async fn controller(map: tokio::sync::watch::Receiver<ClusterMap>) -> String {
    testkit::map_server(map, |m| m.epoch).await.0
}

#[tokio::test]
async fn the_cluster_map_repoints_writes_and_a_failover_makes_them_wait_then_refuses_them_retryably() {
    let pg = fresh_replicated_postgres();
    let env = env(&pg).await;
    let (primary, replica) = (pg.primary.addr(), pg.replica.addr());
    let servers = |primary: Option<&str>| ShardServers {
        primary: primary.map(String::from),
        replicas: vec![replica.clone()],
        near: None,
    };
    let map =
        |epoch, p: Option<&str>| ClusterMap { epoch, shards: vec![servers(p), servers(p)], directory: None };
    let (publish, rx) = tokio::sync::watch::channel(map(1, Some(&primary)));
    let url = controller(rx).await;
    // Writes give up quickly in this test unless told otherwise below.
    let config =
        DataConfig { cluster_url: Some(url), primary_wait_ms: 300, ..DataConfig::new(env.shards.clone()) };
    let d = Data::new(&config, &telemetry::Registry::default()).unwrap();
    eventually("the first map is installed", || async { d.cluster_epoch() == 1 }).await;
    let user = d.create_user("mapped", "Mapped", "hash").await.unwrap();

    // A lower or equal epoch is ignored.
    assert_eq!(d.install_cluster_map(&map(1, None)), Ok(false));
    assert_eq!(d.install_cluster_map(&map(0, Some(&replica))), Ok(false));
    d.create_post(user.user_id, "still on the primary").await.unwrap();

    // Failover in progress: writes are refused (no primary to try) and retryably.
    publish.send_replace(map(2, None));
    eventually("epoch 2 is installed", || async { d.cluster_epoch() == 2 }).await;
    // NoPrimary is decided from the map, before any connection is tried; the
    // write waited for a newer map, none came.
    let err = d.create_post(user.user_id, "during failover").await.unwrap_err();
    assert!(matches!(err, DataError::NoPrimary { .. }), "{err}");
    assert!(err.is_retryable());
    let shard = d.shard_map().shard_of_user(user.user_id);
    assert_eq!(d.writes_waiting_for_primary(shard), 0);

    // A write that waits long enough goes through once the new primary is named.
    let patient =
        Data::new(&DataConfig { primary_wait_ms: 60_000, ..config.clone() }, &telemetry::Registry::default())
            .unwrap();
    eventually("the patient process has epoch 2", || async { patient.cluster_epoch() == 2 }).await;
    let write = tokio::spawn({
        let patient = patient.clone();
        async move { patient.create_post(user.user_id, "waited for its primary").await }
    });
    eventually("the write to wait for a primary", || async {
        patient.writes_waiting_for_primary(shard) == 1
    })
    .await;
    publish.send_replace(map(3, Some(&primary)));
    let post = write.await.unwrap().expect("committed on the primary named by epoch 3");
    assert_eq!(post.caption, "waited for its primary");
    assert_eq!(patient.writes_waiting_for_primary(shard), 0);
    eventually("epoch 3 is installed", || async { d.cluster_epoch() == 3 }).await;

    // A newer map re-points writes (here at the read-only replica, which refuses them).
    publish.send_replace(map(4, Some(&replica)));
    eventually("epoch 4 is installed", || async { d.cluster_epoch() == 4 }).await;
    let err = d.create_post(user.user_id, "to the new primary").await.unwrap_err();
    assert!(err.is_retryable() && err.to_string().contains("25006"), "{err}");

    // The web tier answers 503 with Retry-After during a failover that outlasts
    // the write's wait.
    publish.send_replace(map(5, None));
    let app = env
        .spawn_with(|c| {
            c.database.cluster_url = Some(config.cluster_url.clone().unwrap());
            c.database.primary_wait_ms = 300;
        })
        .await;
    eventually("the web server has epoch 5", || async { app.state.data().cluster_epoch() == 5 }).await;
    let r = reqwest::Client::new()
        .post(app.url("/api/v1/users"))
        .json(&serde_json::json!({"username": "latecomer", "password": "long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
}

#[test]
fn bad_replica_settings_are_refused_with_clear_errors() {
    let reg = telemetry::Registry::default();
    let base = || DataConfig::new(vec!["postgres://u:p@h/db".into()]);
    let err = |c: DataConfig| Data::new(&c, &reg).unwrap_err().to_string();
    let too_many = DataConfig { replicas: vec![vec![], vec![]], ..base() };
    assert!(err(too_many).contains("database.replicas lists 2 shards"));
    let bad = DataConfig { replicas: vec![vec!["not a url ::".into()]], ..base() };
    assert!(err(bad).contains("shard 0, replica 0"));
    for url in ["ftp://x/cluster", "not a url", "http://"] {
        let bad = DataConfig { cluster_url: Some(url.into()), ..base() };
        assert!(err(bad).contains("database.cluster_url"), "{url}");
    }
}
