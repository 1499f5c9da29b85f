//! The data layer against real PostgreSQL shards.

use std::collections::BTreeMap;

use data::{Change, Data, DataConfig, DataError, Lsns, PostId, consistency};
use tokio_postgres::NoTls;

/// Two fresh, migrated shard databases.
async fn shards() -> Vec<String> {
    let pg = testkit::postgres();
    let mut urls = vec![];
    for _ in 0..2 {
        urls.push(pg.url(&pg.create_database(None).await));
    }
    data::migrate(&urls).await.unwrap();
    urls
}

fn data(urls: &[String]) -> Data {
    let config = DataConfig { pool_size: 2, ..DataConfig::new(urls.to_vec()) };
    Data::new(&config, &telemetry::Registry::default()).unwrap()
}

async fn query_i64(url: &str, sql: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    let v = client.query_one(sql, &[]).await.unwrap().get(0);
    drop(client);
    let _ = conn.await;
    v
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let urls = shards().await;
    data::migrate(&urls).await.unwrap();
    let applied = query_i64(&urls[0], "SELECT count(*) FROM refinery_schema_history").await;
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap().count();
    assert_eq!(applied, files as i64, "each migration applied once");
}

#[tokio::test]
async fn rows_live_on_their_owners_shard() {
    let urls = shards().await;
    let d = data(&urls);
    let map = d.shard_map();
    for name in ["ann", "bob", "cy", "dee", "eve", "fay"] {
        let u = d.create_user(name, name, "hash").await.unwrap();
        let shard = map.shard_of_user(u.user_id);
        assert_eq!(shard, map.shard_of_username(name));
        let p = d.create_post(u.user_id, "hi").await.unwrap();
        let id = PostId::from_i64(p.post_id).unwrap();
        assert_eq!(map.shard_of_post(id), shard, "a post id routes to its author's shard");
        let here = &urls[shard.0 as usize];
        let n = query_i64(here, &format!("SELECT count(*) FROM posts WHERE post_id = {}", p.post_id)).await;
        assert_eq!(n, 1, "the post is stored on that shard");
    }
    assert!(matches!(d.create_user("ann", "again", "hash").await, Err(DataError::Conflict(_))));
}

#[tokio::test]
async fn a_half_done_follow_is_completed_by_retrying_it() {
    let urls = shards().await;
    let d = data(&urls);
    let map = d.shard_map();
    // Two users on different shards.
    let a = d.create_user("alpha", "a", "h").await.unwrap();
    let mut b = None;
    for i in 0.. {
        let u = d.create_user(&format!("beta{i}"), "b", "h").await.unwrap();
        if map.shard_of_user(u.user_id) != map.shard_of_user(a.user_id) {
            b = Some(u);
            break;
        }
    }
    let b = b.unwrap();
    // Only the follower's side got written (as if the process died in between).
    let out = &urls[map.shard_of_user(a.user_id).0 as usize];
    let (client, conn) = tokio_postgres::connect(out, NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    client
        .execute("INSERT INTO follows_out (user_id, followee_id) VALUES ($1, $2)", &[&a.user_id, &b.user_id])
        .await
        .unwrap();
    client.execute("UPDATE users SET following_count = 1 WHERE user_id = $1", &[&a.user_id]).await.unwrap();
    drop(client);
    let _ = conn.await;

    assert_eq!(
        d.follow(a.user_id, b.user_id).await.unwrap(),
        Change::Changed,
        "the followee's side changed: its caller must invalidate what shows it"
    );
    assert_eq!(d.follow(a.user_id, b.user_id).await.unwrap(), Change::Unchanged, "and then nothing is left");
    let a2 = d.profile(a.user_id).await.unwrap().unwrap();
    let b2 = d.profile(b.user_id).await.unwrap().unwrap();
    assert_eq!(a2.following_count, 1, "not counted twice");
    assert_eq!(b2.followers_count, 1, "the missing side was completed");
    assert_eq!(d.followers(b.user_id).await.unwrap(), vec![a.user_id]);

    assert!(matches!(d.follow(a.user_id, 424242).await, Err(DataError::NotFound)));
    assert_eq!(d.followees(a.user_id).await.unwrap(), vec![b.user_id], "a failed follow wrote nothing");
}

#[tokio::test]
async fn liking_a_missing_post_writes_nothing() {
    let urls = shards().await;
    let d = data(&urls);
    let u = d.create_user("liker", "l", "h").await.unwrap();
    let ghost = PostId::from_i64(d.create_post(u.user_id, "x").await.unwrap().post_id + 1).unwrap();
    assert!(matches!(d.like(ghost, u.user_id).await, Err(DataError::NotFound)));
    let likes: i64 = {
        let mut n = 0;
        for url in &urls {
            n += query_i64(url, "SELECT count(*) FROM likes").await;
        }
        n
    };
    assert_eq!(likes, 0);
}

#[tokio::test]
async fn an_unreachable_shard_is_a_retryable_error() {
    let port = nodes::free_port("127.0.0.1".parse().unwrap()).unwrap();
    let url = format!("postgres://u:p@127.0.0.1:{port}/db");
    let d = data(&[url]);
    let err = d.profile(1).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(matches!(err, DataError::Unavailable { .. }));
}

#[tokio::test]
async fn a_text_posts_job_is_written_with_it_and_dropped_without_an_lsn() {
    let urls = shards().await;
    let d = data(&urls);
    let u = d.create_user("poster", "p", "h").await.unwrap();
    let (created, written) = consistency::scope(Lsns::new(), d.create_post_queued(u.user_id, "hi")).await;
    let (post, job) = created.unwrap();
    assert_eq!(job.shard, d.shard_map().shard_of_user(u.user_id));
    assert!(written.get(job.shard).is_some(), "the post's commit raises the floor");
    let shard_url = &urls[job.shard.0 as usize];
    let sql = format!(
        "SELECT count(*) FROM jobs WHERE job_id = {} AND payload->>'post_id' = '{}'",
        job.job_id, post.post_id
    );
    assert_eq!(query_i64(shard_url, &sql).await, 1, "the fan-out job commits with its post");
    let (deleted, written) = consistency::scope(Lsns::new(), d.delete_queued_job(&job)).await;
    assert!(deleted.unwrap());
    assert!(written.is_empty(), "no LSN is read after dropping a job");
    assert_eq!(d.query_count("delete_queued_job"), 1);
    assert_eq!(query_i64(shard_url, &sql).await, 0);
    assert!(!d.delete_queued_job(&job).await.unwrap(), "a job already gone");
}

#[tokio::test]
async fn a_failed_write_is_counted_as_its_operations_error() {
    let port = nodes::free_port("127.0.0.1".parse().unwrap()).unwrap();
    let url = format!("postgres://u:p@127.0.0.1:{port}/db");
    let registry = telemetry::Registry::default();
    let d = Data::new(&DataConfig { pool_size: 2, ..DataConfig::new(vec![url]) }, &registry).unwrap();
    let err = d.create_user("ann", "ann", "hash").await.unwrap_err();
    assert!(matches!(err, DataError::Unavailable { .. }), "{err}");
    let metrics = registry.render();
    assert!(metrics.contains(r#"db_query_errors_total{op="create_user",shard="0"} 1"#), "{metrics}");
    assert_eq!(d.query_count("create_user"), 0, "only successes are counted as queries");
}

#[test]
fn bad_configs_are_refused_before_connecting() {
    let reg = telemetry::Registry::default();
    let mk = |shards: Vec<&str>, pool_size| DataConfig {
        pool_size,
        acquire_timeout_ms: 1000,
        ..DataConfig::new(shards.into_iter().map(String::from).collect())
    };
    assert!(Data::new(&mk(vec![], 1), &reg).is_err());
    assert!(Data::new(&mk(vec!["postgres://h/db"], 0), &reg).is_err());
    let err = Data::new(&mk(vec!["postgres://h/db", "not a url at all ::"], 1), &reg).unwrap_err();
    assert!(err.to_string().contains("shard 1"), "{err}");
}

#[tokio::test]
async fn sessions_live_on_their_users_shard_until_they_expire_or_end() {
    let urls = shards().await;
    let d = data(&urls);
    let user = d.create_user("sessioned", "Sessioned", "hash").await.unwrap().user_id;
    let bucket = sharding::user_bucket(user);
    let shard = d.shard_map().shard_of_user(user);
    let (live, ended, expired) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    let mut created = Vec::new();
    for hash in [&live, &ended, &expired] {
        created.push(d.create_session(user, hash, std::time::Duration::from_secs(3600)).await.unwrap());
    }
    let url = &urls[shard.0 as usize];
    assert_eq!(query_i64(url, "SELECT count(*) FROM sessions").await, 3, "on the user's shard");
    let found = d.session(bucket, &live).await.unwrap().expect("live");
    assert_eq!(found.user_id, user);
    assert!(found.expires_at_ms > 0);
    assert_eq!(created[0], found, "what creating it returned is what a read finds");
    assert!(d.delete_session(bucket, &ended).await.unwrap());
    assert!(!d.delete_session(bucket, &ended).await.unwrap(), "ending twice is a no-op");
    assert_eq!(d.session(bucket, &ended).await.unwrap(), None);
    // Expire one: refused at once, and purged.
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    client
        .execute("UPDATE sessions SET expires_at = now() WHERE token_hash = $1", &[&&expired[..]])
        .await
        .unwrap();
    drop(client);
    let _ = conn.await;
    assert_eq!(d.session(bucket, &expired).await.unwrap(), None, "an expired row is refused");
    assert_eq!(d.purge_expired_sessions(shard, 100).await.unwrap(), 1);
    assert_eq!(d.purge_expired_sessions(shard, 100).await.unwrap(), 0);
    assert!(d.session(bucket, &live).await.unwrap().is_some(), "the live one stays");
    // A token hash must be 32 bytes: the table says so.
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    let short = client
        .execute("INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ('\\x01', 1, now())", &[])
        .await;
    assert!(short.is_err(), "a malformed hash is refused by the schema");
    drop(client);
    let _ = conn.await;
}

/// Connections to `url`'s database other than the one asking.
async fn connections(url: &str) -> i64 {
    query_i64(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        .await
}

#[tokio::test]
async fn each_pool_opens_its_warm_connections_before_any_query_and_no_more_than_its_size() {
    let urls = shards().await;
    // By default the whole pool is opened.
    let fixed = DataConfig { pool_size: 3, ..DataConfig::new(urls.clone()) };
    let data = Data::new(&fixed, &telemetry::Registry::default()).unwrap();
    for url in &urls {
        testkit::eventually("three connections per shard, with no query asked", async || {
            connections(url).await == 3
        })
        .await;
    }
    drop(data);
    testkit::eventually("a dropped pool closes them", async || connections(&urls[0]).await == 0).await;

    // Part of it, or more than it may hold (as many as it may).
    let part = DataConfig { pool_size: 4, pool_warm: Some(1), ..DataConfig::new(vec![urls[0].clone()]) };
    let over = DataConfig { pool_size: 2, pool_warm: Some(5), ..DataConfig::new(vec![urls[1].clone()]) };
    let _part = Data::new(&part, &telemetry::Registry::default()).unwrap();
    let _over = Data::new(&over, &telemetry::Registry::default()).unwrap();
    testkit::eventually("one connection", async || connections(&urls[0]).await == 1).await;
    testkit::eventually("two connections", async || connections(&urls[1]).await == 2).await;
}

/// A PostgreSQL server of the test's own (its settings are changed), migrated:
/// the server (kept alive by the caller), its URL, and one shard over it.
async fn server_of_its_own() -> (testkit::OwnedPostgres, String, Data) {
    let pg = testkit::fresh_postgres();
    let url = pg.url("postgres");
    data::migrate(std::slice::from_ref(&url)).await.unwrap();
    let d = data(std::slice::from_ref(&url));
    (pg, url, d)
}

/// A superuser connection to the server at `url`.
async fn admin_of(url: &str) -> tokio_postgres::Client {
    let (admin, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    admin
}

/// Name the server's synchronous standby (`nobody`: one that never comes, so
/// every synchronous commit waits; empty: none) and wait for new sessions to
/// have the setting.
async fn set_standby(admin: &tokio_postgres::Client, url: &str, name: &str) {
    admin.batch_execute(&format!("ALTER SYSTEM SET synchronous_standby_names = '{name}'")).await.unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    testkit::eventually("the setting to reach new sessions", || async {
        let c = admin_of(url).await;
        let shown: String = c.query_one("SHOW synchronous_standby_names", &[]).await.unwrap().get(0);
        shown == name
    })
    .await;
}

/// Starts an enqueue on `d` (a synchronous commit) and returns once it waits for
/// the standby.
async fn write_waiting_for_standby(
    d: &Data,
    admin: &tokio_postgres::Client,
    author: i64,
) -> tokio::task::JoinHandle<Result<i64, DataError>> {
    let waiting = tokio::spawn({
        let d = d.clone();
        async move { d.enqueue("test", author, serde_json::json!({}), 1).await }
    });
    testkit::eventually("a write to wait for the standby", || async {
        let sql = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'";
        admin.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) == 1
    })
    .await;
    waiting
}

/// A text post's outbox job is dropped without waiting for a synchronous standby
/// (a lost deletion only repeats an idempotent fan-out), while every other write
/// still waits for one.
#[tokio::test]
async fn dropping_a_posts_outbox_job_does_not_wait_for_a_standby() {
    let (_pg, url, d) = server_of_its_own().await;
    let author = d.create_user("ann", "ann", "hash").await.unwrap().user_id;
    let (_, job) = d.create_post_queued(author, "hi").await.unwrap();

    let admin = admin_of(&url).await;
    set_standby(&admin, &url, "nobody").await;
    let waiting = write_waiting_for_standby(&d, &admin, author).await;

    let deleted = tokio::time::timeout(std::time::Duration::from_secs(60), d.delete_queued_job(&job)).await;
    assert!(matches!(deleted, Ok(Ok(true))), "the outbox job is dropped at once: {deleted:?}");
    assert!(!waiting.is_finished(), "the other write still waits for the standby");

    set_standby(&admin, &url, "").await;
    waiting.await.unwrap().unwrap();
    let kinds = admin.query("SELECT kind FROM jobs", &[]).await.unwrap();
    assert_eq!(kinds.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(), ["test"]);
}

/// A worker's claim and its completion do not wait for a synchronous standby (a
/// lost one only runs an idempotent job again), while the writes that enqueue
/// jobs still do.
#[tokio::test]
async fn claiming_and_completing_a_job_do_not_wait_for_a_standby() {
    let (_pg, url, d) = server_of_its_own().await;
    let author = d.create_user("bea", "bea", "hash").await.unwrap().user_id;
    let job_id = d.enqueue("work", author, serde_json::json!({"n": 1}), 3).await.unwrap();
    let shard = d.shard_map().shard_of_user(author);

    let admin = admin_of(&url).await;
    set_standby(&admin, &url, "nobody").await;
    let waiting = write_waiting_for_standby(&d, &admin, author).await;

    let lease = std::time::Duration::from_secs(60);
    let at_once = std::time::Duration::from_secs(60);
    let claimed = tokio::time::timeout(at_once, d.claim_jobs(shard, "w", 10, lease)).await;
    let claimed = claimed.expect("the claim waited for the standby").unwrap();
    assert_eq!(claimed.iter().map(|j| j.job_id).collect::<Vec<_>>(), [job_id], "only the committed job");
    let done = tokio::time::timeout(at_once, d.complete_job(&claimed[0], "w")).await;
    assert!(matches!(done, Ok(Ok(true))), "completed at once: {done:?}");
    assert!(!waiting.is_finished(), "the enqueue still waits for the standby");

    // Committed all the same: the job is gone for good, and the other is due.
    set_standby(&admin, &url, "").await;
    let other = waiting.await.unwrap().unwrap();
    let left = admin.query("SELECT job_id FROM jobs", &[]).await.unwrap();
    assert_eq!(left.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(), [other]);
}

/// A shard's queue as the workers' metrics show it: due jobs are ready, jobs due
/// later (a text post's outbox job) are scheduled, and a ready job's delay counts
/// from when it became due, not from when it was made (a retried job is old).
#[tokio::test]
async fn queue_stats_tell_due_jobs_from_scheduled_ones() {
    let (_pg, url, d) = server_of_its_own().await;
    let admin = admin_of(&url).await;
    let u = d.create_user("cy", "cy", "hash").await.unwrap().user_id;
    let shard = d.shard_map().shard_of_user(u);
    assert_eq!(d.queue_stats(shard).await.unwrap(), data::QueueStats::default());

    d.create_post_queued(u, "later").await.unwrap();
    let s = d.queue_stats(shard).await.unwrap();
    assert_eq!((s.ready, s.scheduled, s.oldest_ready_secs), (0, 1, 0.0), "the outbox job is not due: {s:?}");
    d.enqueue("now", u, serde_json::json!({}), 3).await.unwrap();
    let s = d.queue_stats(shard).await.unwrap();
    assert_eq!((s.ready, s.scheduled, s.running, s.dead), (1, 1, 0, 0), "{s:?}");

    // Made an hour ago, due for 90 s (a retry's backoff lapsed): it has waited 90 s.
    let aged = "UPDATE jobs SET created_at = now() - interval '1 hour', run_at = now() - interval '90 seconds' \
                WHERE kind = 'now'";
    assert_eq!(admin.execute(aged, &[]).await.unwrap(), 1);
    let s = d.queue_stats(shard).await.unwrap();
    assert!(s.oldest_ready_secs >= 90.0 && s.oldest_ready_secs < 1800.0, "{s:?}");
    let claimed = d.claim_jobs(shard, "w", 10, std::time::Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.len(), 1, "only the due job: {claimed:?}");
    let s = d.queue_stats(shard).await.unwrap();
    assert_eq!((s.ready, s.scheduled, s.running, s.oldest_ready_secs), (0, 1, 1, 0.0), "{s:?}");
}

/// Each bucket's `(reads, writes)` as `Data::bucket_load` has them.
fn load(d: &Data) -> BTreeMap<u16, (u64, u64)> {
    let listed = d.bucket_load();
    assert!(listed.windows(2).all(|w| w[0].bucket < w[1].bucket), "in bucket order: {listed:?}");
    assert!(listed.iter().all(|l| l.reads + l.writes > 0), "no zero listed: {listed:?}");
    listed.into_iter().map(|l| (l.bucket, (l.reads, l.writes))).collect()
}

/// What grew from `before` to `after`, bucket by bucket (unchanged ones left out).
fn grown(before: &BTreeMap<u16, (u64, u64)>, after: &BTreeMap<u16, (u64, u64)>) -> BTreeMap<u16, (u64, u64)> {
    after
        .iter()
        .map(|(b, (r, w))| {
            let (r0, w0) = before.get(b).copied().unwrap_or_default();
            (*b, (r - r0, w - w0))
        })
        .filter(|(_, d)| *d != (0, 0))
        .collect()
}

/// Users named `{prefix}{i}`, each in a bucket of its own.
async fn users_in_distinct_buckets(d: &Data, prefix: &str, n: usize) -> Vec<i64> {
    let mut users: Vec<i64> = vec![];
    for i in 0.. {
        let u = d.create_user(&format!("{prefix}{i}"), "u", "h").await.unwrap().user_id;
        if users.iter().all(|o| sharding::user_bucket(*o) != sharding::user_bucket(u)) {
            users.push(u);
        }
        if users.len() == n {
            return users;
        }
    }
    unreachable!()
}

#[tokio::test]
async fn a_users_reads_and_writes_count_on_their_bucket_and_no_other() {
    let urls = shards().await;
    let d = data(&urls);
    assert_eq!(d.bucket_load(), vec![], "nothing sent yet");
    let ann = d.create_user("load_ann", "Ann", "h").await.unwrap().user_id;
    let bucket = sharding::user_bucket(ann);
    let b = bucket.get();
    assert_eq!(load(&d), BTreeMap::from([(b, (0, 1))]), "signing up: one write of the user's bucket");

    // Reads by id, by name (the name's bucket is the user's), by post, by session.
    d.profile(ann).await.unwrap().unwrap();
    d.credentials("load_ann").await.unwrap().unwrap();
    d.user_id_by_username("load_ann").await.unwrap().unwrap();
    let post = PostId::from_i64(d.create_post(ann, "hi").await.unwrap().post_id).unwrap();
    assert_eq!(post.bucket(), bucket, "a post is in its author's bucket");
    d.post(post).await.unwrap().unwrap();
    assert_eq!(d.user_posts(ann, None, 10).await.unwrap().len(), 1);
    d.like(post, ann).await.unwrap();
    assert!(d.likes(post, ann).await.unwrap());
    let hash = [9u8; 32];
    d.create_session(ann, &hash, std::time::Duration::from_secs(60)).await.unwrap();
    d.session(bucket, &hash).await.unwrap().unwrap();
    assert!(d.delete_session(bucket, &hash).await.unwrap());
    assert!(d.followers(ann).await.unwrap().is_empty());
    assert!(!d.is_following(ann, ann).await.unwrap());
    assert_eq!(
        load(&d),
        BTreeMap::from([(b, (9, 5))]),
        "9 reads (profile, credentials, name, post, user's posts, like, session, followers, \
         following) and 5 writes (sign-up, post, like, session, its end), all of the user's bucket"
    );

    d.celebrities(1).await.unwrap();
    assert_eq!(load(&d), BTreeMap::from([(b, (9, 5))]), "a scan of every shard is no bucket's");

    // Another user's queries are that user's bucket's alone.
    let mut bob = d.create_user("load_bob", "Bob", "h").await.unwrap().user_id;
    for i in 0.. {
        if sharding::user_bucket(bob) != bucket {
            break;
        }
        bob = d.create_user(&format!("load_bob{i}"), "Bob", "h").await.unwrap().user_id;
    }
    let before = load(&d);
    d.profile(bob).await.unwrap().unwrap();
    d.create_post(bob, "hello").await.unwrap();
    let bob_bucket = sharding::user_bucket(bob).get();
    assert_eq!(
        grown(&before, &load(&d)),
        BTreeMap::from([(bob_bucket, (1, 1))]),
        "the first user's did not move"
    );
}

#[tokio::test]
async fn a_batch_read_counts_each_ids_bucket_and_a_job_its_users() {
    let urls = shards().await;
    let d = data(&urls);
    let users = users_in_distinct_buckets(&d, "batch", 3).await;
    let [u1, u2, u3] = users[..] else { unreachable!() };
    let [b1, b2, b3] = [u1, u2, u3].map(|u| sharding::user_bucket(u).get());
    let mut posts = vec![];
    for author in [u1, u1, u2] {
        posts.push(PostId::from_i64(d.create_post(author, "p").await.unwrap().post_id).unwrap());
    }

    // One query per shard, one read counted per id.
    let before = load(&d);
    assert_eq!(d.profiles(&[u1, u2, u3]).await.unwrap().len(), 3);
    assert_eq!(d.posts(&posts).await.unwrap().len(), 3);
    assert_eq!(d.recent_post_ids(&[u1, u2], 10, None).await.unwrap().len(), 3);
    assert_eq!(
        grown(&before, &load(&d)),
        BTreeMap::from([(b1, (1 + 2 + 1, 0)), (b2, (1 + 1 + 1, 0)), (b3, (1, 0))]),
        "profiles: one each; posts: two of the first user's, one of the second's; newest posts: one per author"
    );

    // A follow writes both users' buckets, whether their sides share a shard or not.
    let before = load(&d);
    assert_eq!(d.follow(u1, u3).await.unwrap(), Change::Changed);
    let follow = grown(&before, &load(&d));
    assert_eq!((follow[&b1].1, follow[&b3].1), (1, 1), "{follow:?}");
    assert_eq!(follow.keys().copied().collect::<Vec<_>>(), [b1.min(b3), b1.max(b3)]);

    // (The follow queued u3's notification job: out of the way first.)
    let queued = d.claim_jobs(d.shard_map().shard_of_user(u3), "w", 10, std::time::Duration::from_secs(60));
    let queued = queued.await.unwrap();
    assert_eq!(queued.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>(), [data::NOTIFY_JOB]);
    assert!(d.complete_job(&queued[0], "w").await.unwrap());

    // A job: enqueued, claimed, completed — each a write of its user's bucket; the
    // other shard's claim found nothing and counts for no bucket.
    let shard = d.shard_map().shard_of_user(u3);
    let before = load(&d);
    d.enqueue("test", u3, serde_json::json!({}), 3).await.unwrap();
    for s in d.shard_map().shards().filter(|s| *s != shard) {
        assert!(d.claim_jobs(s, "w", 10, std::time::Duration::from_secs(60)).await.unwrap().is_empty());
    }
    let claimed = d.claim_jobs(shard, "w", 10, std::time::Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.len(), 1, "the text posts' jobs are not due yet: {claimed:?}");
    assert!(d.complete_job(&claimed[0], "w").await.unwrap());
    d.queue_stats(shard).await.unwrap();
    assert_eq!(grown(&before, &load(&d)), BTreeMap::from([(b3, (0, 3))]));

    // A text post and the drop of its outbox job: two writes of the author's bucket.
    let before = load(&d);
    let (_, job) = d.create_post_queued(u2, "queued").await.unwrap();
    assert_eq!(job.user_id, u2);
    assert!(d.delete_queued_job(&job).await.unwrap());
    assert_eq!(grown(&before, &load(&d)), BTreeMap::from([(b2, (0, 2))]));
}

#[tokio::test]
async fn which_photo_objects_are_in_use_is_read_from_the_key_indexes_not_by_scanning_posts() {
    let urls = shards().await;
    let d = data(&urls);
    let author = d.create_user("snap", "S", "hash").await.unwrap().user_id;
    let image = |key: &str| data::StoredImage { key: key.into(), width: 10, height: 10 };
    let post = d.create_photo_post(author, "a", image("orig.jpg"), 3).await.unwrap();
    let post = PostId::from_i64(post.post_id).unwrap();
    assert_eq!(d.finish_photo(post, &[image("thumb.jpg")]).await.unwrap(), Change::Changed);
    d.create_post(author, "text only").await.unwrap();

    let keys: Vec<String> = ["orig.jpg", "thumb.jpg", "gone.jpg"].map(String::from).into();
    let in_use = d.photo_keys_in_use(&keys).await.unwrap();
    let expected: std::collections::HashSet<String> = ["orig.jpg", "thumb.jpg"].map(String::from).into();
    assert_eq!(in_use, expected);

    // On a table of two posts the planner would scan it for the correlated
    // EXISTS; the lookup goes through the indexes whatever the table's size.
    for shard in d.shard_map().shards() {
        let plan = d.photo_keys_in_use_plan(shard, &keys).await.unwrap();
        assert!(plan.contains("posts_photo_keys") && plan.contains("users_avatar_keys"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }
}
