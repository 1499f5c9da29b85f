//! Read-your-writes through the web API, with a real streaming replica.

mod common;

use common::*;
use data::ReadTarget;
use reqwest::StatusCode;
use serde_json::Value;
use testkit::{TestEnv, fresh_replicated_postgres};

fn post_ids(body: &Value) -> Vec<i64> {
    page_ids(body).0
}

#[tokio::test]
async fn a_session_reads_its_writes_while_the_replica_lags() {
    let pg = fresh_replicated_postgres();
    let env = TestEnv::on_replicated(&pg, testkit::redis().url()).await;
    // A bound so loose that only the floor keeps a lagging replica away.
    let app = env.spawn_with(|c| c.database.max_replica_lag_ms = 600_000).await;
    // A second web server: the floor travels with the session, not the process.
    let other = env.spawn_with(|c| c.database.max_replica_lag_ms = 600_000).await;
    let alice = signup(&app, "alice").await;
    let bob = signup(&other, "bob").await; // signed up on one server, logged in on the other
    let data = app.state.data().clone();
    let shard = data.shard_map().shard_of_user(alice.id);
    eventually("the replica is usable", || async { data.usable_replicas(shard) == 1 }).await;
    let replica_url = &env.replicas[shard.0 as usize][0];
    let (client, conn) = tokio_postgres::connect(replica_url, tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    client.batch_execute("SELECT pg_wal_replay_pause()").await.unwrap();

    let post = post_text(&app, &alice, "written while the replica is paused").await;
    let path = "/api/v1/users/alice/posts";
    // Alice, on the other server: served by the primary, she sees her post.
    let body = call(&other, "GET", path, Some(&alice), None, StatusCode::OK).await;
    assert_eq!(post_ids(&body), vec![post], "read-your-writes across web servers");
    // Bob has no floor on that shard: the paused replica serves him.
    let on_replica = other.state.data().reads_on(ReadTarget::Replica);
    let body = call(&other, "GET", path, Some(&bob), None, StatusCode::OK).await;
    assert!(post_ids(&body).is_empty(), "bob read the paused replica: {body}");
    assert!(other.state.data().reads_on(ReadTarget::Replica) > on_replica);

    // Resumed: Alice's reads return to the replica, and still see her post.
    client.batch_execute("SELECT pg_wal_replay_resume()").await.unwrap();
    eventually("alice reads from the replica again", || async {
        let before = other.state.data().reads_on(ReadTarget::Replica);
        let body = call(&other, "GET", path, Some(&alice), None, StatusCode::OK).await;
        assert_eq!(post_ids(&body), vec![post]);
        other.state.data().reads_on(ReadTarget::Replica) > before
    })
    .await;
    drop(client);
    let _ = conn.await;
}
