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

    // Her follow, written while the replica is paused: her page of whom she
    // follows is read from her shard (replicas allowed), uncached.
    call(&app, "PUT", "/api/v1/users/bob/follow", Some(&alice), None, StatusCode::OK).await;
    let path = "/api/v1/users/alice/following";
    let follow = vec!["bob".to_owned()];
    // Alice, on the other server: served by the primary, she sees her follow.
    let body = call(&other, "GET", path, Some(&alice), None, StatusCode::OK).await;
    assert_eq!(usernames(&body["users"]), follow, "read-your-writes across web servers");
    // Bob has no floor on that shard: the paused replica serves him.
    let on_replica = other.state.data().reads_on(ReadTarget::Replica);
    let body = call(&other, "GET", path, Some(&bob), None, StatusCode::OK).await;
    assert!(usernames(&body["users"]).is_empty(), "bob read the paused replica: {body}");
    assert!(other.state.data().reads_on(ReadTarget::Replica) > on_replica);

    // Alice's floor is evicted from Redis (as under its memory budget): her next
    // request finds none and takes the primaries' positions as her floor, so the
    // paused replica still does not serve her.
    let floor_key = {
        use sha2::Digest;
        let hash: String =
            sha2::Sha256::digest(alice.token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        app.state.redis().key(&format!("floor:{hash}"))
    };
    let mut redis = app.state.redis().conn().await.unwrap();
    let gone: i64 = redis::cmd("DEL").arg(&floor_key).query_async(&mut redis).await.unwrap();
    assert_eq!(gone, 1, "the floor existed");
    let body = call(&other, "GET", path, Some(&alice), None, StatusCode::OK).await;
    assert_eq!(usernames(&body["users"]), follow, "read-your-writes survives a lost floor");
    let kept: i64 = redis::cmd("EXISTS").arg(&floor_key).query_async(&mut redis).await.unwrap();
    assert_eq!(kept, 1, "the recovered floor is kept for the next requests");

    // Resumed: Alice's reads return to the replica, and still see her post.
    client.batch_execute("SELECT pg_wal_replay_resume()").await.unwrap();
    eventually("alice reads from the replica again", || async {
        let before = other.state.data().reads_on(ReadTarget::Replica);
        let body = call(&other, "GET", path, Some(&alice), None, StatusCode::OK).await;
        assert_eq!(usernames(&body["users"]), follow);
        other.state.data().reads_on(ReadTarget::Replica) > before
    })
    .await;
    drop(client);
    let _ = conn.await;
}

#[tokio::test]
async fn reads_are_served_by_the_replica_while_the_primary_is_gone_and_cached_nowhere() {
    let mut pg = fresh_replicated_postgres();
    let env = TestEnv::on_replicated(&pg, testkit::redis().url()).await;
    let app = env.spawn().await;
    let alice = signup(&app, "alice").await;
    let post = post_text(&app, &alice, "written before the primary died").await;
    // Carol signs up on another web server: this one never read her profile...
    let carol = signup(&env.spawn().await, "carol").await;
    let data = app.state.data().clone();
    let shard = data.shard_map().shard_of_user(alice.id);
    eventually("the replica is usable", || async { data.usable_replicas(shard) == 1 }).await;
    eventually("the replica has replayed the post and the users", || async {
        let (mut posts, mut users) = (0, 0);
        for url in env.replicas.iter().flatten() {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            let conn = tokio::spawn(conn);
            let count = |table| format!("SELECT count(*) FROM {table}");
            posts += client.query_one(&count("posts"), &[]).await.unwrap().get::<_, i64>(0);
            users += client.query_one(&count("users"), &[]).await.unwrap().get::<_, i64>(0);
            drop(client);
            let _ = conn.await;
        }
        posts == 1 && users == 2
    })
    .await;

    // ... and the shared cache forgets it too.
    let mut redis = app.state.redis().conn().await.unwrap();
    let key = app.state.redis().key(&format!("c:profile:{}", carol.id));
    ::redis::cmd("DEL").arg(key).query_async::<()>(&mut redis).await.unwrap();

    // The primary dies; the map still names it (no controller here), so every
    // fill meets an unreachable primary, as in the first moments of a failover.
    pg.primary.kill9();
    let metrics = &app.state.caches().metrics;
    let uncached = metrics.get("profile", "served_uncached");
    for round in 0..2 {
        // Carol's profile (never read here; then, not kept by the round before)
        // and alice's posts, served anyway.
        let body = call(&app, "GET", "/api/v1/users/carol", None, None, StatusCode::OK).await;
        assert_eq!(body["username"], "carol", "round {round}: {body}");
        let body = call(&app, "GET", "/api/v1/users/alice/posts", Some(&alice), None, StatusCode::OK).await;
        assert_eq!(post_ids(&body), vec![post], "round {round}");
    }
    // Alice's first feed: rebuilt from the replica and served, but not stored
    // (a replica may lack a post pushed before the rebuild began), so each read
    // rebuilds.
    for round in 0..2 {
        assert_eq!(feed_ids(&app, &alice, "").await.0, vec![post], "round {round}");
        assert_eq!(app.state.timelines().page(alice.id, None, 10).await.unwrap(), None, "round {round}");
    }
    assert!(data.reads_on(ReadTarget::ReplicaWhilePrimaryLost) >= 2, "the fills fell back to the replica");
    assert_eq!(
        metrics.get("profile", "served_uncached"),
        uncached + 2,
        "each profile read loaded it again: nothing read from the replica was cached"
    );
    // Writes wait for a primary: refused, retryably.
    let r =
        send(&app, "POST", "/api/v1/posts", Some(&alice), Some(serde_json::json!({"caption": "x"}))).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
}
