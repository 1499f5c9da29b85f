//! Notifications in the data layer: a job's payload enqueued with the row it is
//! about (only for a new row, never for oneself), delivered once however often,
//! and carried with its recipient's bucket when the bucket moves to another shard.

use std::time::Duration;

use data::moves::{self, Move};
use data::{Change, Data, DataConfig, Notify, PostId, ShardId};
use sharding::{Bucket, ClusterMap, ShardServers, user_bucket};
use tokio_postgres::{Client, NoTls};

const WAIT: Duration = Duration::from_secs(10);

async fn client(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

async fn count(url: &str, sql: &str) -> i64 {
    client(url).await.query_one(sql, &[]).await.unwrap().get(0)
}

async fn data_on(urls: &[String]) -> Data {
    Data::new(&DataConfig { pool_size: 4, ..DataConfig::new(urls.to_vec()) }, &telemetry::Registry::default())
        .unwrap()
}

/// The notify jobs' payloads on every shard.
async fn notify_payloads(urls: &[String]) -> Vec<serde_json::Value> {
    let mut out = vec![];
    for url in urls {
        let rows =
            client(url).await.query("SELECT payload FROM jobs WHERE kind = 'notify'", &[]).await.unwrap();
        out.extend(rows.iter().map(|r| r.get::<_, serde_json::Value>(0)));
    }
    out
}

#[tokio::test]
async fn a_new_like_or_follow_enqueues_one_payload_with_its_row() {
    let urls = testkit::TestEnv::new().await.shards;
    let d = data_on(&urls).await;
    let author = d.create_user("author", "A", "hash").await.unwrap().user_id;
    let fan = d.create_user("fan", "F", "hash").await.unwrap().user_id;
    let post = PostId::from_i64(d.create_post(author, "hi").await.unwrap().post_id).unwrap();

    assert_eq!(d.like(post, fan).await.unwrap().0, Change::Changed);
    assert_eq!(d.like(post, fan).await.unwrap().0, Change::Unchanged);
    assert_eq!(d.like(post, author).await.unwrap().0, Change::Changed, "one's own like counts");
    assert_eq!(d.follow(fan, author).await.unwrap(), Change::Changed);
    assert_eq!(d.follow(fan, author).await.unwrap(), Change::Unchanged);
    assert_eq!(d.unlike(post, fan).await.unwrap().0, Change::Changed);
    assert_eq!(d.unfollow(fan, author).await.unwrap(), Change::Changed);

    let mut got = notify_payloads(&urls).await;
    got.sort_by_key(|p| p["kind"].as_str().unwrap().to_owned());
    assert_eq!(
        got,
        vec![
            serde_json::json!({"kind": "follow", "recipient": author, "actor": fan}),
            serde_json::json!({"kind": "like", "recipient": author, "actor": fan, "post_id": post.get()}),
        ],
        "one per new row of someone else's, none for repeats, one's own like or the undoing"
    );
    // Each payload is one a worker delivers; delivering twice stores one row.
    for p in &got {
        let n = Notify::from_payload(p).unwrap();
        assert_eq!(d.deliver_notification(&n).await.unwrap(), Change::Changed);
        assert_eq!(d.deliver_notification(&n).await.unwrap(), Change::Unchanged);
    }
    let shard = &urls[d.shard_map().shard_of_user(author).0 as usize];
    assert_eq!(count(shard, "SELECT count(*) FROM notifications").await, 2);
    assert_eq!(d.unread_notifications(author).await.unwrap(), 2);
    // A recipient that does not exist gets nothing stored.
    let nobody =
        Notify::from_payload(&serde_json::json!({"kind": "follow", "recipient": 12_345_678, "actor": fan}))
            .unwrap();
    assert_eq!(d.deliver_notification(&nobody).await.unwrap(), Change::Unchanged);
    assert_eq!(
        count(&urls[0], "SELECT count(*) FROM notifications").await
            + count(&urls[1], "SELECT count(*) FROM notifications").await,
        2
    );
}

#[tokio::test]
async fn notifications_move_with_their_recipients_bucket() {
    let urls = testkit::TestEnv::new().await.shards;
    let d = data_on(&urls).await;
    let map = d.shard_map();
    let mut users = vec![];
    for i in 0..12 {
        users.push(d.create_user(&format!("n{i}"), "N", "hash").await.unwrap().user_id);
    }
    let recipient = *users.iter().find(|u| map.shard_of_user(**u) == ShardId(0)).expect("a user on shard 0");
    let actors: Vec<i64> = users.iter().copied().filter(|u| *u != recipient).collect();
    let follow = |actor: i64| {
        Notify::from_payload(&serde_json::json!({"kind": "follow", "recipient": recipient, "actor": actor}))
            .unwrap()
    };
    for a in &actors[..3] {
        d.deliver_notification(&follow(*a)).await.unwrap();
    }
    let bucket = Bucket::new(user_bucket(recipient).get()).unwrap();
    let m = Move { id: 11, buckets: vec![bucket] };
    let (mut source, mut target) = (client(&urls[0]).await, client(&urls[1]).await);
    moves::begin_capture(&source, &m, WAIT).await.unwrap();
    moves::copy(&mut source, &mut target, &m).await.unwrap();
    // During the move: one more delivered, the oldest marked read (captured).
    d.deliver_notification(&follow(actors[3])).await.unwrap();
    let oldest = d.notifications(recipient, None, 10).await.unwrap().last().unwrap().notification_id;
    assert_eq!(d.mark_notifications_seen(recipient, Some(oldest)).await.unwrap(), 1);
    moves::catch_up(&mut source, &mut target, &m).await.unwrap();
    moves::fence(&source, &m, WAIT).await.unwrap();
    moves::catch_up(&mut source, &mut target, &m).await.unwrap();
    moves::move_jobs(&mut source, &mut target, &m).await.unwrap();
    moves::adopt(&target, &m).await.unwrap();
    let after = map.with_moved(&[bucket], ShardId(1), 1).unwrap();
    let pg = testkit::postgres();
    let servers =
        ShardServers { primary: Some(format!("{}:{}", pg.host(), pg.port())), replicas: vec![], near: None };
    let cluster =
        ClusterMap { epoch: 1, shards: vec![servers.clone(), servers], directory: Some(after.ranges()) };
    assert_eq!(d.install_cluster_map(&cluster), Ok(true));
    moves::drop_source(&mut source, &m).await.unwrap();

    let on = |url: &str| {
        let sql = format!("SELECT count(*) FROM notifications WHERE user_id = {recipient}");
        let url = url.to_owned();
        async move { count(&url, &sql).await }
    };
    assert_eq!(on(&urls[0]).await, 0, "nothing left on the source");
    assert_eq!(on(&urls[1]).await, 4, "every notification, the one delivered during the move too");
    let listed = d.notifications(recipient, None, 10).await.unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(listed.iter().filter(|n| n.seen).count(), 1, "the read mark made during the move moved");
    assert_eq!(d.unread_notifications(recipient).await.unwrap(), 3);
    // Delivered again (a job run twice across the move): still once.
    assert_eq!(d.deliver_notification(&follow(actors[3])).await.unwrap(), Change::Unchanged);
    assert_eq!(on(&urls[1]).await, 4);
}
