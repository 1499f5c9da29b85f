//! A topology that grows (`millions shard add`): a process configured with one
//! shard follows a cluster map that adds a second shard cluster — a primary and
//! a replica of their own, real PostgreSQL servers — and routes to it the buckets
//! the map gives it; maps that would shrink the topology, or grow it without a
//! directory, are refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use data::{Data, DataConfig, Lsns, ShardId, consistency};
use sharding::{BucketRange, ClusterMap, ShardServers, username_bucket};
use testkit::{ReplicatedPostgres, TestEnv, eventually, fresh_replicated_postgres};

/// A stand-in for `millions control`'s map endpoint: its URL and the largest
/// epoch it has answered with.
async fn controller(map: tokio::sync::watch::Receiver<ClusterMap>) -> (String, Arc<AtomicU64>) {
    testkit::map_server(map, |m| m.epoch).await
}

/// Run `sql` on the database at `url`.
async fn exec(url: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = conn.await;
}

/// One bigint `sql` returns on the database at `url`.
async fn count(url: &str, sql: &str, id: i64) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    let n = client.query_one(sql, &[&id]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0);
    drop(client);
    let _ = conn.await;
    n
}

/// The two shard clusters: shard 0, a migrated database on the harness's shared
/// server, and the cluster `millions shard add` brings, a primary with a streaming
/// replica, holding a migrated database of the same name. Both are reached with
/// one login of their own, as the controller gives every shard the same user,
/// password and database name. Returns the new cluster and both shards' URLs.
async fn two_clusters() -> (ReplicatedPostgres, [String; 2]) {
    let env = TestEnv::new().await;
    let dbname = env.shards[0].rsplit('/').next().unwrap().to_owned();
    let (user, password) =
        (format!("grow_{}", nodes::random_secret(8).to_lowercase()), nodes::random_secret(24));
    let login = format!("CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{password}'");
    let shared = testkit::postgres();
    exec(&shared.url("postgres"), &login).await;

    let added = fresh_replicated_postgres();
    exec(&added.primary.url("postgres"), &format!("CREATE DATABASE {dbname}")).await;
    exec(&added.primary.url("postgres"), &login).await;
    data::migrate(&[added.primary.url(&dbname)]).await.unwrap();

    let url = |host: std::net::IpAddr, port| {
        nodes::postgres_url(&host.to_string(), port, &user, &password, &dbname)
    };
    let primary = added.primary.spec().addr();
    let urls = [url(shared.host(), shared.port()), url(primary.ip(), primary.port())];
    (added, urls)
}

/// A map at `epoch` of `shards` (each a primary and its replicas) and, when
/// given, the bucket directory `ranges`.
fn map(epoch: u64, shards: &[(String, Vec<String>)], ranges: Option<&[(u16, u16, u16)]>) -> ClusterMap {
    ClusterMap {
        epoch,
        shards: shards
            .iter()
            .map(|(primary, replicas)| ShardServers {
                primary: Some(primary.clone()),
                replicas: replicas.clone(),
                near: None,
            })
            .collect(),
        directory: ranges
            .map(|r| r.iter().map(|&(first, last, shard)| BucketRange { first, last, shard }).collect()),
    }
}

/// A name whose bucket is in `first..=last`.
fn name_in(prefix: &str, first: u16, last: u16) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| (first..=last).contains(&username_bucket(n).get()))
        .unwrap()
}

#[tokio::test]
async fn a_one_shard_process_follows_a_map_that_adds_a_shard_cluster_and_refuses_shrinking_or_undirected_growth()
 {
    let (added, [shard0, shard1]) = two_clusters().await;
    let pg = testkit::postgres();
    let old = (format!("{}:{}", pg.host(), pg.port()), vec![]);
    let new = (added.primary.addr(), vec![added.replica.addr()]);

    let (publish, rx) = tokio::sync::watch::channel(map(1, std::slice::from_ref(&old), None));
    let (url, served) = controller(rx).await;
    let config = DataConfig { cluster_url: Some(url), pool_size: 4, ..DataConfig::new(vec![shard0.clone()]) };
    let registry = telemetry::Registry::default();
    let d = Data::new(&config, &registry).unwrap();
    eventually("the first map is installed", || async { d.cluster_epoch() == 1 }).await;
    let before = d.create_user(&name_in("before", 0, 4095), "Before", "hash").await.unwrap();

    // The new shard joins owning no bucket: every user stays where it is.
    let two = [old.clone(), new.clone()];
    publish.send_replace(map(2, &two, Some(&[(0, 4095, 0)])));
    eventually("the map adding a shard is installed", || async { d.cluster_epoch() == 2 }).await;
    assert_eq!(d.shard_map().shard_count(), 2);
    assert!(d.shard_map().buckets_of(ShardId(1)).is_empty());
    assert!(format!("{d:?}").contains("shards: 2"), "{d:?}");
    assert_eq!(d.profile(before.user_id).await.unwrap().map(|u| u.user_id), Some(before.user_id));
    // The lag monitor probes the new shard's primary and replica: the replica's
    // lag is dated by the new shard's own history.
    eventually("the new shard's replica is usable", || async { d.usable_replicas(ShardId(1)) == 1 }).await;
    d.ping().await.unwrap();

    // Half the buckets move onto it (as `millions shard move` would publish).
    publish.send_replace(map(3, &two, Some(&[(0, 2047, 0), (2048, 4095, 1)])));
    eventually("the directory giving buckets to the new shard", || async { d.cluster_epoch() == 3 }).await;
    let name = name_in("grown", 2048, 4095);
    let ((user, read), floor) = consistency::scope(Lsns::new(), async {
        let user = d.create_user(&name, "Grown", "hash").await.unwrap();
        let read = d.profile(user.user_id).await.unwrap();
        (user, read)
    })
    .await;
    assert_eq!(d.shard_map().shard_of_user(user.user_id), ShardId(1));
    assert_eq!(read.map(|u| u.username), Some(name.clone()), "read back through the data layer");
    assert!(floor.get(ShardId(1)).is_some(), "the write on the new shard raised the floor");
    let on = |url| count(url, "SELECT count(*) FROM users WHERE user_id = $1", user.user_id);
    assert_eq!(on(&shard1).await, 1, "the row is on the new shard's primary");
    assert_eq!(on(&shard0).await, 0, "and not on shard 0");
    assert_eq!(d.user_id_by_username(&name).await.unwrap(), Some(user.user_id));
    assert!(d.query_count("create_user") >= 2, "counted over both shards");

    // Metrics cover the new shard: its pool, its replica.
    d.refresh_pool_metrics();
    let text = registry.render();
    for want in ["db_pool_connections{shard=\"1\"}", "db_replica_usable{shard=\"1\"", "db_cluster_epoch 3"] {
        assert!(text.contains(want), "{want} in\n{text}");
    }

    // Refused: a map with fewer shards, and one adding a shard without a directory.
    let err = d.install_cluster_map(&map(4, std::slice::from_ref(&old), None)).unwrap_err();
    assert!(err.contains("fewer") && err.contains("never removed"), "{err}");
    let three = [old.clone(), new.clone(), new.clone()];
    let err = d.install_cluster_map(&map(4, &three, None)).unwrap_err();
    assert!(err.contains("no bucket directory"), "{err}");
    assert_eq!(d.cluster_epoch(), 3, "the routes in force stay");
    assert_eq!(d.shard_map().shard_of_user(user.user_id), ShardId(1));

    // The follower refuses such a map too, and takes the next good one.
    publish.send_replace(map(4, std::slice::from_ref(&old), None));
    eventually("the follower is sent the shrinking map", || async { served.load(Ordering::Relaxed) == 4 })
        .await;
    assert_eq!(d.cluster_epoch(), 3);
    publish.send_replace(map(5, &two, Some(&[(0, 2047, 0), (2048, 4095, 1)])));
    eventually("the map after a refused one is installed", || async { d.cluster_epoch() == 5 }).await;
    assert_eq!(d.profile(user.user_id).await.unwrap().map(|u| u.user_id), Some(user.user_id));
}
