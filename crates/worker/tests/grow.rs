//! A topology that grows (`millions shard add`): a running worker configured
//! with one shard claims and finishes a job on the shard cluster a newer cluster
//! map adds — a real PostgreSQL server of its own — and drains cleanly.

mod common;

use common::*;
use data::{Data, DataConfig, ShardId};
use serde_json::{Value, json};
use testkit::{OwnedPostgres, TestEnv, eventually};

/// A stand-in for `millions control`'s map endpoint: `GET /cluster[?after=N]`
/// (the map as JSON: a `sharding::ClusterMap`).
async fn controller(map: tokio::sync::watch::Receiver<Value>) -> String {
    testkit::map_server(map, |m| m["epoch"].as_u64().unwrap_or(0)).await.0
}

/// One value of `sql` (one parameter, `id`) on the database at `url`.
async fn one<T: for<'a> tokio_postgres::types::FromSql<'a>>(url: &str, sql: &str, id: i64) -> T {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    let v = client.query_one(sql, &[&id]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0);
    drop(client);
    let _ = conn.await;
    v
}

/// Shard 0 (`env`'s first shard database, on the harness's shared server) and
/// the shard cluster `millions shard add` brings: a server of its own holding a
/// migrated database of the same name. Both are reached with one login of their
/// own, as the controller gives every shard the same user, password and
/// database name. Returns the new server and both shards' URLs.
async fn two_shards(env: &TestEnv) -> (OwnedPostgres, [String; 2]) {
    let dbname = env.shards[0].rsplit('/').next().unwrap().to_owned();
    let user = format!("grow_{:x}", rand::random::<u64>());
    let password = format!("{:x}{:x}", rand::random::<u64>(), rand::random::<u64>());
    let login = format!("CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{password}'");
    let shared = testkit::postgres();
    exec(&shared.url("postgres"), &login).await;

    let added = testkit::fresh_postgres();
    exec(&added.url("postgres"), &format!("CREATE DATABASE {dbname}")).await;
    exec(&added.url("postgres"), &login).await;
    data::migrate(&[added.url(&dbname)]).await.unwrap();

    let url = |addr: String| format!("postgres://{user}:{password}@{addr}/{dbname}");
    let urls = [url(format!("{}:{}", shared.host(), shared.port())), url(added.addr())];
    (added, urls)
}

/// A map at `epoch` of `primaries` (no replicas) and, when given, the directory
/// `ranges` (first bucket, last bucket, shard).
fn map(epoch: u64, primaries: &[&str], ranges: Option<&[(u16, u16, u16)]>) -> Value {
    let shards: Vec<Value> = primaries.iter().map(|p| json!({ "primary": p, "replicas": [] })).collect();
    let mut map = json!({ "epoch": epoch, "shards": shards });
    if let Some(r) = ranges {
        let runs: Vec<Value> = r
            .iter()
            .map(|&(first, last, shard)| json!({ "first": first, "last": last, "shard": shard }))
            .collect();
        map["directory"] = Value::from(runs);
    }
    map
}

#[tokio::test]
async fn a_running_worker_claims_and_finishes_a_job_on_a_shard_the_cluster_map_adds() {
    let env = TestEnv::new().await;
    let (added, [shard0, shard1]) = two_shards(&env).await;
    let pg = testkit::postgres();
    let old = format!("{}:{}", pg.host(), pg.port());
    let new = added.addr();
    let (publish, rx) = tokio::sync::watch::channel(map(1, &[&old], None));
    let url = controller(rx).await;

    // A worker and a web server's data layer, both configured with shard 0 only.
    let worker = env
        .spawn_worker_with(|c| {
            c.database.shards = vec![shard0.clone()];
            c.database.cluster_url = Some(url.clone());
        })
        .await;
    let config = DataConfig { cluster_url: Some(url), pool_size: 4, ..DataConfig::new(vec![shard0]) };
    let d = Data::new(&config, &telemetry::Registry::default()).unwrap();
    let both_at = |epoch| {
        let (d, w) = (d.clone(), worker.ctx.data().clone());
        async move { d.cluster_epoch() == epoch && w.cluster_epoch() == epoch }
    };
    eventually("the first map is installed", || both_at(1)).await;

    // The new shard joins owning no bucket, then half the buckets move onto it.
    publish.send_replace(map(2, &[&old, &new], Some(&[(0, 4095, 0)])));
    eventually("the map adding a shard is installed", || both_at(2)).await;
    publish.send_replace(map(3, &[&old, &new], Some(&[(0, 2047, 0), (2048, 4095, 1)])));
    eventually("the directory giving it buckets is installed", || both_at(3)).await;

    // A photo post (and its job) by a user of the new shard.
    let directory = d.shard_map();
    let name =
        (0..).map(|i| format!("grown{i}")).find(|n| directory.shard_of_username(n) == ShardId(1)).unwrap();
    let author = d.create_user(&name, "Grown", "hash").await.unwrap();
    assert_eq!(d.shard_map().shard_of_user(author.user_id), ShardId(1));
    let id = photo_post_direct(&env, &d, author.user_id, 640, 480, 3).await;
    let posts_on = |url| one::<i64>(url, "SELECT count(*) FROM posts WHERE post_id = $1", id);
    assert_eq!(posts_on(&shard1).await, 1, "the post and its job are on the new shard");
    assert_eq!(posts_on(&env.shards[0]).await, 0);

    // The running worker claims it there and finishes it.
    await_status_on_primary(&d, id, "ready").await;
    let status = one::<String>(&shard1, "SELECT status FROM posts WHERE post_id = $1", id).await;
    assert_eq!(status, "ready");
    eventually("the job is done and deleted", async || {
        one::<i64>(&shard1, "SELECT count(*) FROM jobs WHERE user_id = $1", author.user_id).await == 0
    })
    .await;
    let text = metrics(worker.addr).await;
    assert!(text.contains("jobs_total{kind=\"photo\",outcome=\"done\"} 1"), "{text}");
    assert!(text.contains("queue_jobs{shard=\"1\",state=\"ready\"} 0"), "{text}");

    // It drains cleanly, the loop the map added included.
    worker.stop().await;
}
