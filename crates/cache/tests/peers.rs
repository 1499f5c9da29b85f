//! Two data centers, each with its own Redis, each the other's peer: writes every
//! data center must see (invalidations, timeline pushes and drops) reach both;
//! reads and fills stay local; a peer that is down fails only its part (ADR 0008).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache::{
    CacheConfig, CacheMetrics, Invalidator, ReadThrough, Redis, RedisConfig, SpreadError, Timelines,
};
use tokio_util::sync::CancellationToken;

fn config() -> CacheConfig {
    CacheConfig {
        l1_capacity: 1000,
        l1_ttl: Duration::from_secs(60),
        l2_ttl: Duration::from_secs(100),
        jitter: 0.0,
    }
}

fn redis_config(url: String, prefix: &str, peers: Vec<String>) -> RedisConfig {
    RedisConfig { url, prefix: prefix.to_owned(), timeout_ms: 1000, peers, peer_retry_ms: 0 }
}

/// A process of a data center whose Redis is `url`, writing to `peers` too.
async fn connect(url: String, prefix: &str, peers: Vec<String>) -> Redis {
    let config = redis_config(url, prefix, peers);
    config.validate().unwrap();
    Redis::connect_with(&config).await.unwrap()
}

fn cache(redis: &Redis, name: &'static str) -> (Arc<ReadThrough<String>>, CacheMetrics, Invalidator) {
    let metrics = CacheMetrics::new(&telemetry::Registry::default());
    let inv = Invalidator::new(redis.clone());
    (ReadThrough::new(name, redis.clone(), config(), metrics.clone(), inv.clone()), metrics, inv)
}

async fn get(redis: &Redis, key: &str) -> Option<String> {
    let mut conn = redis.conn().await.unwrap();
    redis::cmd("GET").arg(redis.key(key)).query_async(&mut conn).await.unwrap()
}

/// The post ids in timeline `key` (not the members that say it is complete or
/// being rebuilt).
async fn members(redis: &Redis, key: &str) -> Vec<String> {
    let mut conn = redis.conn().await.unwrap();
    let all: Vec<String> =
        redis::cmd("ZRANGE").arg(redis.key(key)).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    all.into_iter().filter(|m| m != cache::timeline::COMPLETE && m != cache::timeline::REBUILDING).collect()
}

/// Starts `invalidator`'s listener and returns once it is subscribed.
async fn listen(invalidator: Invalidator, shutdown: &CancellationToken) -> tokio::task::JoinHandle<()> {
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let listening = subscribed.notified();
    let task = cache::spawn_listener(invalidator, shutdown.clone(), subscribed.clone());
    listening.await;
    task
}

/// A complete timeline for `user` holding `ids`, built as a reader builds it.
async fn warm(t: &Timelines, user: i64, ids: &[i64]) {
    t.begin_rebuild(user).await.unwrap();
    assert!(t.fill(user, ids).await.unwrap(), "stored");
}

/// Two DCs' timelines under `prefix` (a cap of 10): dc1 on the shared test Redis,
/// writing to dc2's too; dc2 on a fresh server (kept alive by the returned one).
async fn two_dcs(prefix: &str) -> (testkit::OwnedRedis, (Redis, Timelines), (Redis, Timelines)) {
    let dc2_server = testkit::fresh_redis();
    let dc1 = connect(testkit::redis().url(), prefix, vec![dc2_server.url()]).await;
    let dc2 = connect(dc2_server.url(), prefix, vec![]).await;
    let timelines = |r: &Redis| Timelines::new(r.clone(), 10, Duration::from_secs(600));
    let (t1, t2) = (timelines(&dc1), timelines(&dc2));
    (dc2_server, (dc1, t1), (dc2, t2))
}

#[tokio::test]
async fn an_invalidation_in_one_dc_evicts_the_other_dcs_l1_and_refuses_its_racing_fill() {
    let dc2_server = testkit::fresh_redis();
    let (dc1_url, dc2_url) = (testkit::redis().url(), dc2_server.url());
    let dc1 = connect(dc1_url.clone(), "twodc:", vec![dc2_url.clone()]).await;
    let dc2 = connect(dc2_url, "twodc:", vec![dc1_url]).await;
    let (writer, _, _) = cache(&dc1, "p");
    let (reader, reader_metrics, reader_inv) = cache(&dc2, "p");
    let shutdown = CancellationToken::new();
    let task = listen(reader_inv, &shutdown).await;

    // dc2 holds "old" in its L1 and its Redis.
    let v = reader.get_or_load("k", || async { Ok::<_, ()>(Some("old".to_owned())) }).await.unwrap();
    assert_eq!(v.as_deref().map(String::as_str), Some("old"));
    assert!(get(&dc2, "c:p:k").await.is_some(), "dc2's Redis holds the entry");
    assert_eq!(get(&dc1, "c:p:k").await, None, "a fill stays in its own DC");

    // A write in dc1 invalidates: both Redis forget the key and bump its generation
    // (dc2's claimed by its miss), and dc2's listener evicts its L1.
    let claimed: u64 = get(&dc2, "gen:p:k").await.expect("dc2's miss claimed a generation").parse().unwrap();
    writer.invalidate("k").await;
    assert_eq!(get(&dc2, "c:p:k").await, None, "dc2's Redis entry is deleted");
    assert_eq!(get(&dc2, "gen:p:k").await, Some((claimed + 1).to_string()), "dc2's generation is bumped");
    assert_eq!(get(&dc1, "gen:p:k").await.as_deref(), Some("1"), "dc1's generation is bumped");
    testkit::eventually("dc2's L1 to be evicted", || async {
        let v = reader.get_or_load("k", || async { Ok::<_, ()>(Some("new".to_owned())) }).await.unwrap();
        v.as_deref().map(String::as_str) == Some("new")
    })
    .await;

    // A load in dc2 racing a dc1 write: it read the old row, dc1 invalidates, then
    // its fill of dc2's Redis is refused.
    let (racer, racer_metrics, _) = cache(&dc2, "p");
    let loads = Arc::new(AtomicUsize::new(0));
    let (loading, proceed) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let read = tokio::spawn({
        let (racer, loads, loading, proceed) =
            (racer.clone(), loads.clone(), loading.clone(), proceed.clone());
        async move {
            racer
                .get_or_load("race", || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    loading.notify_one();
                    proceed.notified().await;
                    Ok::<_, ()>(Some("stale".to_owned()))
                })
                .await
                .unwrap()
        }
    });
    loading.notified().await;
    writer.invalidate("race").await;
    proceed.notify_one();
    let served = read.await.unwrap();
    assert_eq!(served.as_deref().map(String::as_str), Some("stale"), "its callers get what it read");
    assert_eq!(racer_metrics.get("p", "fill_refused"), 1, "dc2 refused the stale fill");
    assert_eq!(get(&dc2, "c:p:race").await, None);
    assert_eq!(reader_metrics.invalidation_failures("p", "peer"), 0);
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn timeline_pushes_merges_and_drops_reach_every_dc_and_fills_stay_local() {
    let (_dc2_server, (dc1, t1), (dc2, t2)) = two_dcs("twodc-tl:").await;
    // User 7 reads through dc2: a warm timeline there; user 300 reads in both.
    warm(&t2, 7, &[70]).await;
    assert_eq!(t1.page(7, None, 10).await.unwrap(), None, "a fill stays in its own DC");
    warm(&t1, 300, &[]).await;
    warm(&t2, 300, &[]).await;

    // A post fanned out by a process of dc1 reaches 7's warm timeline in dc2.
    let readers: Vec<i64> = (1..=300).chain([7]).collect(); // more than one batch
    t1.push(80, &readers).await.unwrap();
    assert_eq!(t2.page(7, None, 10).await.unwrap(), Some(vec![80, 70]));
    assert_eq!(members(&dc1, "tl:300").await, [format!("{:019}", 80)]);
    assert_eq!(members(&dc2, "tl:300").await, [format!("{:019}", 80)], "every batch reached dc2");
    // Followers who read nowhere get nothing pushed (their timelines are rebuilt
    // when they read), and 7 got nothing in dc1, where it does not read.
    assert!(members(&dc1, "tl:5").await.is_empty() && members(&dc2, "tl:5").await.is_empty());
    assert!(members(&dc1, "tl:7").await.is_empty());

    // A follow through dc1 merges the followee's posts into 7's timeline where
    // it exists (dc2), and makes none in dc1, where 7 does not read.
    t1.merge(7, &[75, 60]).await.unwrap();
    assert_eq!(t2.page(7, None, 10).await.unwrap(), Some(vec![80, 75, 70, 60]), "merged in dc2");
    assert!(members(&dc1, "tl:7").await.is_empty(), "nothing made in dc1");

    // An unfollow through dc1 drops 7's timeline in both DCs.
    t1.drop_timeline(7).await.unwrap();
    assert_eq!(t2.page(7, None, 10).await.unwrap(), None, "cold in dc2: rebuilt on next read");
    assert!(members(&dc2, "tl:7").await.is_empty());
}

#[tokio::test]
async fn each_dc_knows_its_own_readers_and_the_followers_are_listed_once_for_both() {
    let (_dc2_server, (dc1, t1), (dc2, t2)) = two_dcs("twodc-rd:").await;
    // 7 reads through dc2, 8 through dc1.
    warm(&t2, 7, &[]).await;
    warm(&t1, 8, &[]).await;
    let listed = Arc::new(AtomicUsize::new(0));
    let followers = || {
        listed.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, std::io::Error>(vec![7, 8, 9]) }
    };
    // Neither DC knows the author's readers: one listing serves both full pushes.
    let first = t1.push_to_readers(80, 1, followers).await.unwrap();
    assert_eq!(first, cache::Pushed { offered: 4, written: 1, full: true }, "dc1's part");
    assert_eq!(listed.load(Ordering::SeqCst), 1);
    // Each DC's set names the timelines it holds.
    let set = |r: Redis| async move {
        let mut conn = r.conn().await.unwrap();
        let mut m: Vec<String> =
            redis::cmd("SMEMBERS").arg(r.key("rd:1")).query_async(&mut conn).await.unwrap();
        m.sort();
        m
    };
    assert_eq!(set(dc1.clone()).await, ["8", "~"]);
    assert_eq!(set(dc2.clone()).await, ["7", "~"]);

    // dc2 loses its set (evicted): only dc2 lists the followers again.
    let mut conn = dc2.conn().await.unwrap();
    let _: i64 = redis::cmd("DEL").arg(dc2.key("rd:1")).query_async(&mut conn).await.unwrap();
    let second = t1.push_to_readers(81, 1, followers).await.unwrap();
    assert_eq!(second, cache::Pushed { offered: 2, written: 1, full: false }, "dc1 asked its set");
    assert_eq!(listed.load(Ordering::SeqCst), 2, "dc2 listed them");
    assert_eq!(t2.page(7, None, 10).await.unwrap(), Some(vec![81, 80]));
    assert_eq!(t1.page(8, None, 10).await.unwrap(), Some(vec![81, 80]));
    assert!(members(&dc1, "tl:9").await.is_empty() && members(&dc2, "tl:9").await.is_empty());
}

#[tokio::test]
async fn a_peer_that_is_down_fails_only_its_part_and_is_reported() {
    let mut dc2_server = testkit::fresh_redis();
    dc2_server.kill();
    // The other DC being down does not stop this process from starting.
    let dc1 = connect(testkit::redis().url(), "twodc-down:", vec![dc2_server.url()]).await;
    let peer = format!("127.0.0.1:{}", dc2_server.port());
    let timelines = Timelines::new(dc1.clone(), 10, Duration::from_secs(600));
    warm(&timelines, 1, &[]).await;

    // A push: the local timeline has it; the error names the peer, not its password.
    let err = timelines.push(10, &[1]).await.unwrap_err();
    assert!(
        matches!(&err, SpreadError::Peers(failed) if failed.len() == 1 && failed[0].0 == peer),
        "{err:?}"
    );
    assert!(!err.is_local());
    assert!(!err.to_string().contains(dc2_server.password()), "{err}");
    assert_eq!(timelines.page(1, None, 10).await.unwrap(), Some(vec![10]), "the local write took");
    let err = timelines.drop_timeline(1).await.unwrap_err();
    assert!(!err.is_local(), "{err}");
    assert_eq!(timelines.page(1, None, 10).await.unwrap(), None, "dropped locally");

    // An invalidation: done locally, the peer's failure returned ...
    let (c, metrics, inv) = cache(&dc1, "d");
    c.get_or_load("k", || async { Ok::<_, ()>(Some("v".to_owned())) }).await.unwrap();
    let claimed: u64 = get(&dc1, "gen:d:k").await.expect("the miss claimed a generation").parse().unwrap();
    let err = inv.invalidate("d", "k").await.unwrap_err();
    assert!(!err.is_local(), "{err}");
    assert_eq!(get(&dc1, "c:d:k").await, None, "the local entry is gone");
    assert_eq!(get(&dc1, "gen:d:k").await, Some((claimed + 1).to_string()), "the generation moved on");
    // ... and through a cache (a web request): counted, never an error.
    c.invalidate("k").await;
    assert_eq!(metrics.invalidation_failures("d", "peer"), 1);
    assert_eq!(metrics.invalidation_failures("d", "local"), 0);

    // The peer comes back: the first write that reaches it clears what it held
    // under the prefix (it missed writes), then the writes reach it, where 1 reads.
    dc2_server.restart();
    let dc2 = connect(dc2_server.url(), "twodc-down:", vec![]).await;
    set(&dc2, "c:d:stale", "missed an invalidation").await;
    inv.invalidate("d", "k").await.unwrap();
    assert_eq!(get(&dc2, "c:d:stale").await, None, "what it held was cleared");
    assert_eq!(get(&dc2, "gen:d:k").await.as_deref(), Some("1"));
    warm(&Timelines::new(dc2.clone(), 10, Duration::from_secs(600)), 1, &[]).await;
    timelines.push(11, &[1]).await.unwrap();
    assert_eq!(members(&dc2, "tl:1").await, [format!("{:019}", 11)]);
}

async fn set(redis: &Redis, key: &str, value: &str) {
    let mut conn = redis.conn().await.unwrap();
    redis::cmd("SET").arg(redis.key(key)).arg(value).query_async::<()>(&mut conn).await.unwrap();
}

#[tokio::test]
async fn a_peer_that_failed_is_skipped_for_a_while_then_cleared_when_reached_again() {
    let mut dc2_server = testkit::fresh_redis();
    let mut config = redis_config(testkit::redis().url(), "twodc-skip:", vec![dc2_server.url()]);
    config.peer_retry_ms = 300;
    let dc1 = Redis::connect_with(&config).await.unwrap();
    let (_, _, inv) = cache(&dc1, "d");
    dc2_server.kill();
    // The first write pays the failure; the next ones skip the peer at once.
    let err = inv.invalidate("d", "k").await.unwrap_err().to_string();
    assert!(!err.contains("skipped"), "{err}");
    let err = inv.invalidate("d", "k").await.unwrap_err().to_string();
    assert!(err.contains("skipped"), "{err}");
    assert_eq!(get(&dc1, "gen:d:k").await.as_deref(), Some("2"), "the local writes all took");

    // Back, holding an entry that missed the invalidations: once the window has
    // passed, a write clears it, then takes.
    dc2_server.restart();
    let dc2 = connect(dc2_server.url(), "twodc-skip:", vec![]).await;
    set(&dc2, "c:d:k", "stale").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = inv.invalidate("d", "k").await {
        assert!(e.to_string().contains("skipped"), "{e}");
        assert!(tokio::time::Instant::now() < deadline, "the peer was never tried again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&dc2, "c:d:k").await, None, "the stale entry was cleared");
    assert_eq!(get(&dc2, "gen:d:k").await.as_deref(), Some("1"));
}

#[tokio::test]
async fn a_local_failure_is_local_whatever_the_peers_do() {
    let mut dc1_server = testkit::fresh_redis();
    let dc1 = connect(dc1_server.url(), "twodc-local:", vec![testkit::redis().url()]).await;
    let dc2 = connect(testkit::redis().url(), "twodc-local:", vec![]).await;
    warm(&Timelines::new(dc2.clone(), 10, Duration::from_secs(600)), 2, &[]).await;
    dc1_server.kill();
    let err = Timelines::new(dc1.clone(), 10, Duration::from_secs(600)).push(5, &[2]).await.unwrap_err();
    assert!(err.is_local(), "{err:?}");
    assert_eq!(members(&dc2, "tl:2").await, [format!("{:019}", 5)], "the peers still got it");
}

#[test]
fn peers_are_validated_like_the_url() {
    let url = "redis://:pw@127.0.0.1:6379/".to_owned();
    let ok = redis_config(url.clone(), "m:", vec!["redis://:pw@127.0.2.80:6379/".into()]);
    ok.validate().unwrap();
    for (peers, expected) in [
        (vec!["http://127.0.2.80:6379/".to_owned()], "redis.peers[0] must start with redis://"),
        (vec!["redis://:pw@127.0.2.80:99999/".to_owned()], "redis.peers[0] has a bad port"),
        (vec!["redis://:pw@/".to_owned()], "redis.peers[0] has no host"),
        (vec![url.clone()], "redis.peers[0] is redis.url itself"),
        (vec!["redis://a:1/".to_owned(), "redis://a:1/".to_owned()], "redis.peers[1] is listed twice"),
    ] {
        let err = redis_config(url.clone(), "m:", peers).validate().unwrap_err();
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
    }
}
