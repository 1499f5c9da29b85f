//! The cache tier against a real Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache::{CacheConfig, CacheMetrics, Invalidator, Loaded, LoadedMany, ReadThrough, Redis, Timelines};
use tokio_util::sync::CancellationToken;

fn config() -> CacheConfig {
    CacheConfig {
        l1_capacity: 1000,
        l1_ttl: Duration::from_secs(60),
        l2_ttl: Duration::from_secs(100),
        jitter: 0.2,
    }
}

async fn redis(prefix: &str) -> Redis {
    Redis::connect(&testkit::redis().url(), prefix, Duration::from_secs(1)).await.unwrap()
}

fn cache(redis: &Redis, name: &'static str) -> (Arc<ReadThrough<String>>, CacheMetrics, Invalidator) {
    let metrics = CacheMetrics::new(&telemetry::Registry::default());
    let inv = Invalidator::new(redis.clone());
    (ReadThrough::new(name, redis.clone(), config(), metrics.clone(), inv.clone()), metrics, inv)
}

/// A complete timeline for `user` holding `ids`, built as a reader builds it.
async fn warm(t: &Timelines, user: i64, ids: &[i64]) {
    t.begin_rebuild(user).await.unwrap();
    assert!(t.fill(user, ids).await.unwrap(), "stored");
}

#[tokio::test]
async fn concurrent_misses_share_one_load_and_later_reads_hit() {
    let r = redis("stampede:").await;
    let (c, metrics, _) = cache(&r, "s");
    let loads = Arc::new(AtomicUsize::new(0));
    let reads = (0..100).map(|_| {
        let (c, loads) = (c.clone(), loads.clone());
        async move {
            let waiting = c.clone();
            c.get_or_load("k", || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                // Hold the load until all 100 lookups have missed L1 and wait on
                // it, so they certainly overlap.
                testkit::eventually("all 100 lookups are in flight", || async {
                    waiting.misses_in_flight() == 100
                })
                .await;
                Ok::<_, String>(Some("v".to_owned()))
            })
            .await
            .unwrap()
        }
    });
    let values = futures::future::join_all(reads).await;
    assert!(values.iter().all(|v| v.as_deref().map(String::as_str) == Some("v")));
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.get("s", "miss"), 1);
    assert_eq!(c.misses_in_flight(), 0, "every lookup left");
    // Another process (its own L1) finds it in Redis.
    let (other, other_metrics, _) = cache(&r, "s");
    let v = other.get_or_load("k", || async { Err::<Option<String>, _>("must not load") }).await.unwrap();
    assert_eq!(v.as_deref().map(String::as_str), Some("v"));
    assert_eq!(other_metrics.get("s", "l2_hit"), 1);
}

#[tokio::test]
async fn concurrent_misses_share_one_failure_and_the_next_lookup_loads_again() {
    let r = redis("stampede-fail:").await;
    let (c, metrics, _) = cache(&r, "f");
    let loads = Arc::new(AtomicUsize::new(0));
    let reads = (0..20).map(|_| {
        let (c, loads) = (c.clone(), loads.clone());
        async move {
            let waiting = c.clone();
            c.get_or_load("k", || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                testkit::eventually("all 20 lookups are in flight", || async {
                    waiting.misses_in_flight() == 20
                })
                .await;
                Err::<Option<String>, _>("db down".to_owned())
            })
            .await
        }
    });
    let results = futures::future::join_all(reads).await;
    assert!(results.iter().all(|r| r.as_ref().is_err_and(|e| e.as_str() == "db down")), "{results:?}");
    assert_eq!(loads.load(Ordering::SeqCst), 1, "one load failed for all 20");
    assert_eq!(metrics.get("f", "miss"), 1);
    // A failure is not remembered.
    let v = c.get_or_load("k", || async { Ok::<_, String>(Some("back".to_owned())) }).await.unwrap();
    assert_eq!(v.as_deref().map(String::as_str), Some("back"));
}

#[tokio::test]
async fn a_cancelled_load_hands_over_to_a_waiting_lookup() {
    let r = redis("handover:").await;
    let (c, _, _) = cache(&r, "h");
    let started = Arc::new(tokio::sync::Notify::new());
    let first = {
        let (c, started) = (c.clone(), started.clone());
        tokio::spawn(async move {
            c.get_or_load("k", || async move {
                started.notify_one();
                std::future::pending::<()>().await;
                Ok::<_, String>(Some("never".to_owned()))
            })
            .await
        })
    };
    started.notified().await;
    let second = {
        let c = c.clone();
        tokio::spawn(async move {
            c.get_or_load("k", || async { Ok::<_, String>(Some("mine".to_owned())) }).await
        })
    };
    testkit::eventually("the second lookup waits on the first's load", || async {
        c.misses_in_flight() == 2
    })
    .await;
    first.abort();
    let v = second.await.unwrap().unwrap();
    assert_eq!(v.as_deref().map(String::as_str), Some("mine"), "the waiter ran its own load");
    assert_eq!(c.misses_in_flight(), 0);
    let again = c.get_or_load("k", || async { Err::<Option<String>, _>("must not load".to_owned()) }).await;
    assert_eq!(again.unwrap().as_deref().map(String::as_str), Some("mine"), "and kept it");
}

#[tokio::test]
async fn an_l1_entry_lapses_after_its_ttl() {
    let r = redis("l1ttl:").await;
    let metrics = CacheMetrics::new(&telemetry::Registry::default());
    let inv = Invalidator::new(r.clone());
    let short = CacheConfig { l1_ttl: Duration::from_millis(50), ..config() };
    let c = ReadThrough::<String>::new("l", r.clone(), short, metrics.clone(), inv);
    c.get_or_load("k", || async { Ok::<_, String>(Some("v".to_owned())) }).await.unwrap();
    assert!(c.cached("k").is_some(), "kept in L1");
    testkit::eventually("the L1 entry lapses", || async { c.cached("k").is_none() }).await;
    // The next lookup finds it in Redis.
    let v =
        c.get_or_load("k", || async { Err::<Option<String>, _>("must not load".to_owned()) }).await.unwrap();
    assert_eq!(v.as_deref().map(String::as_str), Some("v"));
    assert_eq!(metrics.get("l", "l2_hit"), 1);
}

#[tokio::test]
async fn l2_entries_carry_a_jittered_ttl_and_missing_values_are_not_cached() {
    let r = redis("ttl:").await;
    let (c, _, _) = cache(&r, "t");
    let mut ttls = std::collections::BTreeSet::new();
    for i in 0..20 {
        let key = format!("k{i}");
        c.get_or_load(&key, || async { Ok::<_, ()>(Some("x".to_owned())) }).await.unwrap();
        let mut conn = r.conn().await.unwrap();
        let ttl: i64 =
            redis::cmd("TTL").arg(r.key(&format!("c:t:{key}"))).query_async(&mut conn).await.unwrap();
        assert!((80..=120).contains(&ttl), "ttl {ttl} within 100 s ± 20%");
        ttls.insert(ttl);
    }
    assert!(ttls.len() > 1, "jitter spreads expiries: {ttls:?}");
    let none = c.get_or_load("absent", || async { Ok::<Option<String>, ()>(None) }).await.unwrap();
    assert!(none.is_none());
    let found = c.get_or_load("absent", || async { Ok::<_, ()>(Some("now".to_owned())) }).await.unwrap();
    assert_eq!(found.as_deref().map(String::as_str), Some("now"), "a miss was not remembered");
    let err = c.get_or_load("broken", || async { Err::<Option<String>, _>("db down") }).await.unwrap_err();
    assert_eq!(*err, "db down");
}

#[tokio::test]
async fn invalidation_reaches_another_process_l1() {
    let r = redis("inval:").await;
    let (writer, _, _) = cache(&r, "p");
    let (reader, _, reader_inv) = cache(&r, "p");
    let shutdown = CancellationToken::new();
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let listening = subscribed.notified();
    let task = cache::spawn_listener(reader_inv, shutdown.clone(), subscribed.clone());
    listening.await;

    let v = reader.get_or_load("k", || async { Ok::<_, ()>(Some("old".to_owned())) }).await.unwrap();
    assert_eq!(v.as_deref().map(String::as_str), Some("old"));
    writer.invalidate("k").await;
    testkit::eventually("the reader's L1 is invalidated", || async {
        let v = reader.get_or_load("k", || async { Ok::<_, ()>(Some("new".to_owned())) }).await.unwrap();
        v.as_deref().map(String::as_str) == Some("new")
    })
    .await;
    shutdown.cancel();
    task.await.unwrap();
}

/// A read past L1 sees a write's invalidation as soon as Redis has it, before the
/// invalidation message reaches this process (here never: no listener runs).
#[tokio::test]
async fn a_read_past_l1_sees_an_invalidation_this_process_has_not_heard() {
    let r = redis("shared:").await;
    let (writer, _, _) = cache(&r, "p");
    let (reader, metrics, _) = cache(&r, "p");
    let value = |v: Option<Arc<String>>| v.as_deref().cloned();
    let old = reader.get_or_load("k", || async { Ok::<_, ()>(Some("old".to_owned())) }).await.unwrap();
    assert_eq!(value(old).as_deref(), Some("old"));
    writer.invalidate("k").await;

    // L1 still serves the old value: the message never came ...
    let l1 = reader.get_or_load("k", || async { Ok::<_, ()>(Some("new".to_owned())) }).await.unwrap();
    assert_eq!(value(l1).as_deref(), Some("old"));
    // ... a read past it loads the new one and keeps it in both levels.
    let load = || async { Ok::<_, ()>(cache::Loaded::Keep(Some("new".to_owned()))) };
    let fresh = reader.get_or_fill_shared("k", load).await.unwrap();
    assert_eq!(value(fresh).as_deref(), Some("new"));
    assert_eq!(value(reader.peek("k")).as_deref(), Some("new"), "kept in L1");
    let unused = || async { Ok::<_, ()>(cache::Loaded::Keep(Some("unused".to_owned()))) };
    let again = reader.get_or_fill_shared("k", unused).await.unwrap();
    assert_eq!(value(again).as_deref(), Some("new"), "kept in Redis");
    assert_eq!(metrics.get("p", "l2_hit"), 1);
    // A loader's failure is its caller's, and nothing is kept.
    writer.invalidate("k").await;
    let err = reader.get_or_fill_shared("k", || async { Err::<cache::Loaded<String>, _>("db down") }).await;
    assert_eq!(*err.unwrap_err(), "db down");
}

#[tokio::test]
async fn timelines_are_capped_ordered_and_know_when_they_are_cold() {
    let r = redis("tl:").await;
    let t = Timelines::new(r.clone(), 3, Duration::from_secs(60));
    assert_eq!(t.page(1, None, 10).await.unwrap(), None, "never built");
    // User 1's timeline is being rebuilt (its database read under way): a post
    // pushed meanwhile reaches it. User 2 reads no timeline: nothing is kept.
    t.begin_rebuild(1).await.unwrap();
    t.push(100, &[1, 2]).await.unwrap();
    assert_eq!(t.page(1, None, 10).await.unwrap(), None, "fan-out alone does not make it complete");
    let mut conn = r.conn().await.unwrap();
    let exists: i64 = redis::cmd("EXISTS").arg(r.key("tl:2")).query_async(&mut conn).await.unwrap();
    assert_eq!(exists, 0, "no timeline is made for a follower who does not read");
    warm(&t, 1, &[90, 80]).await;
    assert_eq!(t.page(1, None, 10).await.unwrap(), Some(vec![100, 90, 80]), "merged, newest first");
    let mark: Option<f64> = redis::cmd("ZSCORE")
        .arg(r.key("tl:1"))
        .arg(cache::timeline::REBUILDING)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(mark, None, "the fill ends the rebuild");
    t.push(110, &[1]).await.unwrap();
    t.push(9_000_000_000_000_000_000, &[1]).await.unwrap();
    assert_eq!(
        t.page(1, None, 10).await.unwrap(),
        Some(vec![9_000_000_000_000_000_000, 110, 100]),
        "capped at 3, oldest dropped; 63-bit ids keep their order"
    );
    assert_eq!(t.page(1, None, 2).await.unwrap(), Some(vec![9_000_000_000_000_000_000, 110]), "a page of 2");
    assert_eq!(t.page(1, Some(110), 10).await.unwrap(), Some(vec![100]), "older than the cursor");
    warm(&t, 3, &[]).await;
    assert_eq!(t.page(3, None, 10).await.unwrap(), Some(vec![]), "complete and empty is not cold");
    t.drop_timeline(1).await.unwrap();
    assert_eq!(t.page(1, None, 10).await.unwrap(), None);
}

/// A followee's posts merged on a follow: into a complete timeline (capped,
/// ordered), into one being rebuilt (the fill keeps them), never into a missing
/// one.
#[tokio::test]
async fn a_merge_adds_to_timelines_that_exist_and_a_rebuild_keeps_it() {
    let r = redis("tlmerge:").await;
    let t = Timelines::new(r.clone(), 4, Duration::from_secs(60));
    warm(&t, 1, &[50, 40]).await;
    t.merge(1, &[70, 45, 10, 5]).await.unwrap();
    assert_eq!(t.page(1, None, 10).await.unwrap(), Some(vec![70, 50, 45, 40]), "merged, capped at 4");
    // Idempotent.
    t.merge(1, &[70, 45]).await.unwrap();
    assert_eq!(t.page(1, None, 10).await.unwrap(), Some(vec![70, 50, 45, 40]));
    // A rebuild under way (its followee list read before the follow): the merge
    // lands and the fill, which only adds, keeps it.
    t.begin_rebuild(2).await.unwrap();
    t.merge(2, &[30]).await.unwrap();
    assert!(t.fill(2, &[20]).await.unwrap());
    assert_eq!(t.page(2, None, 10).await.unwrap(), Some(vec![30, 20]));
    // No timeline: none made, the next read rebuilds.
    t.merge(3, &[30]).await.unwrap();
    assert_eq!(t.page(3, None, 10).await.unwrap(), None);
    let mut conn = r.conn().await.unwrap();
    let exists: i64 = redis::cmd("EXISTS").arg(r.key("tl:3")).query_async(&mut conn).await.unwrap();
    assert_eq!(exists, 0, "no timeline is made by a merge");
}

/// A rebuild's fill and a follow's merge write their ids in chunks of
/// `ZADD_CHUNK`: lists longer than two chunks (and not a multiple of one) are
/// stored whole, capped, newest first, and complete.
#[tokio::test]
async fn fills_and_merges_longer_than_a_chunk_are_stored_whole() {
    let chunk = cache::timeline::ZADD_CHUNK as i64;
    let r = redis("tlchunk:").await;
    let t = Timelines::new(r.clone(), 5_000, Duration::from_secs(60));
    let rebuilt: Vec<i64> = (1..=2 * chunk + 7).rev().collect();
    warm(&t, 1, &rebuilt).await;
    assert_eq!(t.page(1, None, 5_000).await.unwrap(), Some(rebuilt.clone()), "every id, newest first");
    let followed: Vec<i64> = (10_000..10_000 + 3 * chunk + 1).rev().collect();
    t.merge(1, &followed).await.unwrap();
    let page = t.page(1, None, 5_000).await.unwrap().expect("still complete");
    assert_eq!(page.len(), rebuilt.len() + followed.len(), "the merge added every id");
    assert_eq!(page, followed.iter().chain(&rebuilt).copied().collect::<Vec<_>>());
    // Capped below the fill's length: the newest `cap` stay.
    let capped = Timelines::new(r.clone(), chunk as usize + 3, Duration::from_secs(60));
    warm(&capped, 2, &rebuilt).await;
    let page = capped.page(2, None, 5_000).await.unwrap().expect("complete");
    assert_eq!(page, rebuilt[..chunk as usize + 3].to_vec(), "the newest cap ids");
}

#[tokio::test]
async fn a_push_counts_the_timelines_it_wrote() {
    let r = redis("pushcount:").await;
    let t = Timelines::new(r.clone(), 10, Duration::from_secs(600));
    warm(&t, 1, &[]).await;
    warm(&t, 2, &[]).await;
    assert_eq!(t.push(7, &[1, 2, 3]).await.unwrap(), 2, "the two existing timelines");
    assert_eq!(t.page(3, None, 10).await.unwrap(), None, "the third not created");
    assert_eq!(t.page(1, None, 10).await.unwrap(), Some(vec![7]));
    assert_eq!(t.push(7, &[]).await.unwrap(), 0, "no owners");

    // Many owners: several calls per trip and several trips, summed.
    let owners: Vec<i64> =
        (100..100 + 2 * (cache::timeline::BATCH * cache::timeline::CALLS_PER_TRIP) as i64 + 5).collect();
    let read = [100, 164, 1200, owners[owners.len() - 1]];
    for u in read {
        warm(&t, u, &[]).await;
    }
    assert_eq!(t.push(8, &owners).await.unwrap(), read.len());

    // A Redis that lost the script (restarted) still answers the count.
    let mut conn = r.conn().await.unwrap();
    let () = ::redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    assert_eq!(t.push(9, &owners).await.unwrap(), read.len(), "after NOSCRIPT");
    assert_eq!(t.page(164, None, 10).await.unwrap(), Some(vec![9, 8]));
}

#[tokio::test]
async fn an_evicted_timeline_is_cold_never_wrong() {
    let r = redis("tlevict:").await;
    let t = Timelines::new(r.clone(), 10, Duration::from_secs(600));
    warm(&t, 1, &[50, 40]).await;
    warm(&t, 2, &[]).await;
    assert_eq!(t.page(2, None, 10).await.unwrap(), Some(vec![]), "an empty timeline is complete");
    let mut conn = r.conn().await.unwrap();
    // What Redis's eviction does to a timeline under its memory budget: the key goes,
    // state and ids together.
    let _: i64 = redis::cmd("DEL").arg(r.key("tl:1")).query_async(&mut conn).await.unwrap();
    t.push(60, &[1, 2]).await.unwrap();
    assert_eq!(t.page(1, None, 10).await.unwrap(), None, "cold: rebuilt on read, not served as just [60]");
    assert_eq!(t.page(2, None, 10).await.unwrap(), Some(vec![60]), "the live one got the push");
    // A rebuild never shortens a live timeline's lifetime, and gives a new one a short one.
    t.begin_rebuild(2).await.unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(r.key("tl:2")).query_async(&mut conn).await.unwrap();
    assert!(ttl > 30, "kept its lifetime (ttl {ttl} of 600 s)");
    t.begin_rebuild(1).await.unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(r.key("tl:1")).query_async(&mut conn).await.unwrap();
    assert!((1..=30).contains(&ttl), "a rebuild's mark lapses if never filled (ttl {ttl})");
    assert_eq!(t.page(1, None, 10).await.unwrap(), None, "still cold while rebuilding");
    warm(&t, 1, &[50, 40]).await;
    assert_eq!(t.page(1, None, 10).await.unwrap(), Some(vec![50, 40]));
    // A follow change drops a timeline while it is being rebuilt (or Redis evicts
    // it meanwhile): the rebuild's list, read before, is not stored.
    t.begin_rebuild(3).await.unwrap();
    t.drop_timeline(3).await.unwrap();
    assert!(!t.fill(3, &[30]).await.unwrap(), "refused: the timeline is gone");
    assert_eq!(t.page(3, None, 10).await.unwrap(), None, "still cold");
    // The cap counts ids only, whatever the state members.
    let t2 = Timelines::new(r.clone(), 2, Duration::from_secs(600));
    t2.push(70, &[1]).await.unwrap();
    assert_eq!(t2.page(1, None, 10).await.unwrap(), Some(vec![70, 50]));
}

#[tokio::test]
async fn a_push_to_many_followers_reaches_every_read_timeline_over_several_trips_even_after_a_script_flush() {
    use cache::timeline::{BATCH, CALLS_PER_TRIP};
    // A server of its own: the test makes it forget its scripts.
    let server = testkit::fresh_redis();
    let r = Redis::connect(&server.url(), "tlmany:", Duration::from_secs(1)).await.unwrap();
    let t = Timelines::new(r.clone(), 10, Duration::from_secs(600));
    // More followers than one round trip carries; a few read their timelines: the
    // first, one in each trip, and the last.
    let per_trip = (BATCH * CALLS_PER_TRIP) as i64;
    let followers: Vec<i64> = (1..=2 * per_trip + 5).collect();
    let readers = [1, per_trip, per_trip + 1, 2 * per_trip + 5];
    for reader in readers {
        warm(&t, reader, &[10]).await;
    }
    t.push(20, &followers).await.unwrap();
    for reader in readers {
        assert_eq!(t.page(reader, None, 10).await.unwrap(), Some(vec![20, 10]), "reader {reader}");
    }
    let mut conn = r.conn().await.unwrap();
    let made: i64 = redis::cmd("EXISTS").arg(r.key("tl:2")).query_async(&mut conn).await.unwrap();
    assert_eq!(made, 0, "a follower who does not read gets nothing");
    // Redis forgot the script (as after a restart): the next push loads it again.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    t.push(30, &followers).await.unwrap();
    for reader in readers {
        assert_eq!(t.page(reader, None, 10).await.unwrap(), Some(vec![30, 20, 10]), "reader {reader}");
    }
}

#[tokio::test]
async fn reading_a_timeline_refreshes_its_lifetime() {
    let r = redis("tlttl:").await;
    let t = Timelines::new(r.clone(), 10, Duration::from_secs(600));
    warm(&t, 7, &[70, 60]).await;
    let keys = [r.key("tl:7")];
    let mut conn = r.conn().await.unwrap();
    // Most of the lifetime has passed (as if the last write were long ago).
    for k in &keys {
        let _: () = redis::cmd("EXPIRE").arg(k).arg(5).query_async(&mut conn).await.unwrap();
    }
    // A push does not lengthen it: a timeline lives for its reader, not its writers.
    t.push(80, &[7]).await.unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(&keys[0]).query_async(&mut conn).await.unwrap();
    assert!((1..=5).contains(&ttl), "the push kept the lifetime (ttl {ttl})");
    assert_eq!(t.page(7, None, 10).await.unwrap(), Some(vec![80, 70, 60]));
    for k in &keys {
        let ttl: i64 = redis::cmd("TTL").arg(k).query_async(&mut conn).await.unwrap();
        assert!(ttl > 5, "{k}: the read restored the lifetime (ttl {ttl} of 600 s)");
    }
    // A cold timeline stays cold: the refresh creates nothing.
    assert_eq!(t.page(8, None, 10).await.unwrap(), None);
    let exists: i64 = redis::cmd("EXISTS").arg(r.key("tl:8")).query_async(&mut conn).await.unwrap();
    assert_eq!(exists, 0);
}

#[tokio::test]
async fn a_crashed_redis_is_an_error_reads_fall_through_and_it_is_reconnected_after_restart() {
    let mut server = testkit::fresh_redis();
    let r = Redis::connect(&server.url(), "crash:", Duration::from_secs(1)).await.unwrap();
    let (c, metrics, _) = cache(&r, "c");
    r.ping().await.unwrap();
    server.kill();
    assert!(r.ping().await.is_err());
    // Reads fall through to the loader while Redis is down.
    let v = c.get_or_load("k", || async { Ok::<_, ()>(Some("from db".to_owned())) }).await.unwrap();
    assert_eq!(v.as_deref().map(String::as_str), Some("from db"));
    assert!(metrics.get("c", "error") >= 1, "the failure is counted");
    server.restart();
    // The first command after the restart dials a new connection.
    r.ping().await.expect("reconnected");
}

#[tokio::test]
async fn connecting_to_nothing_is_an_error() {
    let port = nodes::free_port("127.0.0.1".parse().unwrap()).unwrap();
    let err = Redis::connect(&format!("redis://:x@127.0.0.1:{port}/"), "x:", Duration::from_secs(1)).await;
    assert!(err.is_err());
}

/// A loader that reads `db` at once, says so on `loading`, then waits for
/// `proceed` before handing the value it read to the cache.
async fn held_load(
    db: Arc<std::sync::Mutex<&'static str>>,
    loads: Arc<AtomicUsize>,
    loading: Arc<tokio::sync::Notify>,
    proceed: Arc<tokio::sync::Notify>,
) -> Result<Option<String>, ()> {
    loads.fetch_add(1, Ordering::SeqCst);
    let read = db.lock().unwrap().to_owned();
    loading.notify_one();
    proceed.notified().await;
    Ok(Some(read))
}

#[tokio::test]
async fn a_load_overtaken_by_a_write_is_served_but_cached_nowhere() {
    let r = redis("overtaken:").await;
    // The reader's process has no listener: only the refused fill keeps the old
    // value out of its L1.
    let (reader, metrics, _) = cache(&r, "s");
    let (writer, _, _) = cache(&r, "s");
    let db = Arc::new(std::sync::Mutex::new("old"));
    let loads = Arc::new(AtomicUsize::new(0));
    let (loading, proceed) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));

    // The reader misses and reads "old" from the store; its fill is held back.
    let read = tokio::spawn({
        let (reader, db, loads, loading, proceed) =
            (reader.clone(), db.clone(), loads.clone(), loading.clone(), proceed.clone());
        async move { reader.get_or_load("k", || held_load(db, loads, loading, proceed)).await.unwrap() }
    });
    loading.notified().await;
    // Meanwhile a writer commits "new" and invalidates, in another process.
    *db.lock().unwrap() = "new";
    writer.invalidate("k").await;
    proceed.notify_one();
    let served = read.await.unwrap();
    assert_eq!(served.as_deref().map(String::as_str), Some("old"), "the load's callers get what it read");

    // Redis does not hold the old value ...
    let mut conn = r.conn().await.unwrap();
    let l2: Option<String> = redis::cmd("GET").arg(r.key("c:s:k")).query_async(&mut conn).await.unwrap();
    assert_eq!(l2, None, "the stale fill was refused");
    assert_eq!(metrics.get("s", "fill_refused"), 1);
    let gen_ttl: i64 = redis::cmd("TTL").arg(r.key("gen:s:k")).query_async(&mut conn).await.unwrap();
    assert!(gen_ttl > 100, "the generation outlives the values (ttl {gen_ttl})");
    // ... nor does the reader's L1: the next read loads again and sees the write.
    let fresh = || {
        let (db, loads) = (db.clone(), loads.clone());
        async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(Some(db.lock().unwrap().to_owned()))
        }
    };
    let v = reader.get_or_load("k", fresh).await.unwrap();
    assert_eq!(v.as_deref().map(String::as_str), Some("new"));
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    // An unraced load is cached as usual, in both levels.
    let v = reader.get_or_load("k", fresh).await.unwrap();
    assert_eq!(v.as_deref().map(String::as_str), Some("new"));
    assert_eq!(loads.load(Ordering::SeqCst), 2, "an L1 hit");
    let (other, _, _) = cache(&r, "s");
    let v = other.get_or_load("k", || async { Err::<Option<String>, _>("must not load") }).await.unwrap();
    assert_eq!(v.as_deref().map(String::as_str), Some("new"), "an L2 hit");
}

#[tokio::test]
async fn a_write_then_an_evicted_generation_during_a_load_still_refuses_the_fill() {
    let r = redis("genevict:").await;
    let (reader, metrics, _) = cache(&r, "s");
    let (writer, _, _) = cache(&r, "s");
    let db = Arc::new(std::sync::Mutex::new("old"));
    let loads = Arc::new(AtomicUsize::new(0));
    let (loading, proceed) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    // A key never invalidated has no generation: the reader's miss claims one.
    let read = tokio::spawn({
        let (reader, db, loads, loading, proceed) =
            (reader.clone(), db.clone(), loads.clone(), loading.clone(), proceed.clone());
        async move { reader.get_or_load("k", || held_load(db, loads, loading, proceed)).await.unwrap() }
    });
    loading.notified().await;
    let mut conn = r.conn().await.unwrap();
    let claimed: Option<String> =
        redis::cmd("GET").arg(r.key("gen:s:k")).query_async(&mut conn).await.unwrap();
    assert!(claimed.is_some(), "the miss claimed a generation before loading");
    // A write commits and invalidates; then Redis, short of memory, evicts the
    // generation (as allkeys-lfu may) before the reader's fill arrives.
    *db.lock().unwrap() = "new";
    writer.invalidate("k").await;
    let _: i64 = redis::cmd("DEL").arg(r.key("gen:s:k")).query_async(&mut conn).await.unwrap();
    proceed.notify_one();
    assert_eq!(read.await.unwrap().as_deref().map(String::as_str), Some("old"));
    let l2: Option<String> = redis::cmd("GET").arg(r.key("c:s:k")).query_async(&mut conn).await.unwrap();
    assert_eq!(l2, None, "the stale fill was refused: its generation is gone");
    assert_eq!(metrics.get("s", "fill_refused"), 1);
    // An unraced miss of a key with no generation is stored as before.
    let (a, _, _) = cache(&r, "s");
    let v = a.get_or_load("j", || async { Ok::<_, ()>(Some("j".to_owned())) }).await.unwrap();
    assert_eq!(v.as_deref().map(String::as_str), Some("j"));
    let stored: Option<String> = redis::cmd("GET").arg(r.key("c:s:j")).query_async(&mut conn).await.unwrap();
    assert!(stored.is_some(), "an unraced fill is stored under its claimed generation");
}

#[tokio::test]
async fn an_eviction_reaching_l1_during_a_load_keeps_the_value_out_of_l1() {
    let r = redis("evicted:").await;
    let (reader, metrics, reader_inv) = cache(&r, "e");
    let shutdown = CancellationToken::new();
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let listening = subscribed.notified();
    let task = cache::spawn_listener(reader_inv, shutdown.clone(), subscribed.clone());
    listening.await;
    reader.get_or_load("probe", || async { Ok::<_, ()>(Some("p".to_owned())) }).await.unwrap();

    let db = Arc::new(std::sync::Mutex::new("v"));
    let loads = Arc::new(AtomicUsize::new(0));
    let (loading, proceed) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let read = tokio::spawn({
        let (reader, db, loads, loading, proceed) =
            (reader.clone(), db.clone(), loads.clone(), loading.clone(), proceed.clone());
        async move { reader.get_or_load("k", || held_load(db, loads, loading, proceed)).await.unwrap() }
    });
    loading.notified().await;
    // An invalidation's message arrives while the load runs, but its generation
    // bump does not stop the fill (as when the fill reached Redis first): the
    // message alone must keep the value out of L1. A second message, for the
    // probe, shows when the listener has handled the first.
    let mut conn = r.conn().await.unwrap();
    for key in ["k", "probe"] {
        let _: () = redis::cmd("PUBLISH")
            .arg(r.key("invalidate"))
            .arg(format!("e\n{key}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let l2_hits = metrics.get("e", "l2_hit");
    testkit::eventually("the listener evicted the probe", || async {
        reader.get_or_load("probe", || async { Err::<Option<String>, _>(()) }).await.unwrap();
        metrics.get("e", "l2_hit") > l2_hits
    })
    .await;
    proceed.notify_one();
    assert_eq!(read.await.unwrap().as_deref().map(String::as_str), Some("v"));

    let (l1_hits, l2_hits) = (metrics.get("e", "l1_hit"), metrics.get("e", "l2_hit"));
    let v = reader.get_or_load("k", || async { Err::<Option<String>, _>(()) }).await.unwrap();
    assert_eq!(v.as_deref().map(String::as_str), Some("v"));
    assert_eq!(metrics.get("e", "l1_hit"), l1_hits, "not kept in L1");
    assert_eq!(metrics.get("e", "l2_hit"), l2_hits + 1, "read from Redis, which accepted the fill");
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_serve_only_load_is_served_and_kept_in_neither_level() {
    let r = redis("serveonly:").await;
    let (c, metrics, _) = cache(&r, "s");
    let loads = Arc::new(AtomicUsize::new(0));
    let load = |value: Loaded<String>| {
        let loads = loads.clone();
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(value)
        }
    };
    for round in 1..=2 {
        let v = c.get_or_fill("k", load(Loaded::ServeOnly(Some("maybe behind".into())))).await.unwrap();
        assert_eq!(v.as_deref().map(String::as_str), Some("maybe behind"));
        assert_eq!(loads.load(Ordering::SeqCst), round, "round {round} loaded again: nothing was kept");
    }
    assert_eq!(metrics.get("s", "served_uncached"), 2);
    let mut conn = r.conn().await.unwrap();
    let stored: Option<String> = redis::cmd("GET").arg(r.key("c:s:k")).query_async(&mut conn).await.unwrap();
    assert_eq!(stored, None, "Redis holds nothing");
    // Nothing found, serve-only: nothing cached either.
    assert_eq!(c.get_or_fill("gone", load(Loaded::ServeOnly(None))).await.unwrap(), None);
    // An authoritative load afterwards is kept as usual.
    let v = c.get_or_fill("k", load(Loaded::Keep(Some("fresh".into())))).await.unwrap();
    assert_eq!(v.as_deref().map(String::as_str), Some("fresh"));
    let v = c.get_or_load("k", || async { Err::<Option<String>, _>("must not load") }).await.unwrap();
    assert_eq!(v.as_deref().map(String::as_str), Some("fresh"));
}

/// A batch loader over `db` (key → value; a key absent is not found) that counts
/// its calls and records the keys it was asked for.
fn batch_loader(
    keys: &'static [&'static str],
    db: Arc<std::sync::Mutex<std::collections::HashMap<&'static str, String>>>,
    asked: Arc<std::sync::Mutex<Vec<Vec<&'static str>>>>,
) -> impl Fn(Vec<usize>) -> std::future::Ready<Result<LoadedMany<String>, String>> {
    move |indices: Vec<usize>| {
        let wanted: Vec<&'static str> = indices.iter().map(|i| keys[*i]).collect();
        let db = db.lock().unwrap();
        let values = wanted.iter().map(|k| db.get(k).cloned()).collect();
        asked.lock().unwrap().push(wanted);
        std::future::ready(Ok(LoadedMany { values, keep: true }))
    }
}

#[tokio::test]
async fn a_batch_reads_redis_once_loads_its_misses_in_one_call_and_fills_both_levels() {
    let r = redis("batch:").await;
    let (c, metrics, _) = cache(&r, "b");
    let (other, _, _) = cache(&r, "b");
    // `l1` is in this process's L1, `l2` only in Redis (another process filled it).
    c.get_or_load("l1", || async { Ok::<_, ()>(Some("one".to_owned())) }).await.unwrap();
    other.get_or_load("l2", || async { Ok::<_, ()>(Some("two".to_owned())) }).await.unwrap();
    static KEYS: [&str; 6] = ["l1", "l2", "cold", "gone", "cold", "cold2"];
    let db = Arc::new(std::sync::Mutex::new(std::collections::HashMap::from([
        ("cold", "three".to_owned()),
        ("cold2", "four".to_owned()),
    ])));
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let got = c.get_many_or_fill(&KEYS, batch_loader(&KEYS, db.clone(), asked.clone())).await.unwrap();
    let got: Vec<Option<&str>> = got.iter().map(|v| v.as_deref().map(String::as_str)).collect();
    assert_eq!(got, [Some("one"), Some("two"), Some("three"), None, Some("three"), Some("four")]);
    assert_eq!(*asked.lock().unwrap(), [vec!["cold", "gone", "cold2"]], "one load, each missing key once");
    assert_eq!(metrics.get("b", "l2_hit"), 1);
    assert_eq!(metrics.get("b", "miss"), 4, "l1 and l2 (single lookups above), cold, gone, cold2");
    assert_eq!(c.misses_in_flight(), 0, "every lookup left");
    // Both levels hold what was found: this process from L1, another from Redis.
    asked.lock().unwrap().clear();
    let again = c.get_many_or_fill(&KEYS[..3], batch_loader(&KEYS, db.clone(), asked.clone())).await.unwrap();
    assert_eq!(again[2].as_deref().map(String::as_str), Some("three"));
    assert!(asked.lock().unwrap().is_empty(), "all from L1");
    let (third, third_metrics, _) = cache(&r, "b");
    let from_l2 =
        third.get_or_load("cold2", || async { Err::<Option<String>, _>("must not load") }).await.unwrap();
    assert_eq!(from_l2.as_deref().map(String::as_str), Some("four"));
    assert_eq!(third_metrics.get("b", "l2_hit"), 1);
    // What was not found is not cached: it is asked for again.
    c.get_many_or_fill(&KEYS[3..4], batch_loader(&KEYS[3..4], db, asked.clone())).await.unwrap();
    assert_eq!(*asked.lock().unwrap(), [vec!["gone"]]);
}

#[tokio::test]
async fn a_lookup_of_a_key_a_batch_is_loading_waits_for_the_batch() {
    let r = redis("batch-join:").await;
    let (c, metrics, _) = cache(&r, "j");
    let loads = Arc::new(AtomicUsize::new(0));
    let (loading, proceed) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let batch = tokio::spawn({
        let (c, loads, loading, proceed) = (c.clone(), loads.clone(), loading.clone(), proceed.clone());
        async move {
            let load = |indices: Vec<usize>| {
                let (loads, loading, proceed) = (loads.clone(), loading.clone(), proceed.clone());
                async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    loading.notify_one();
                    proceed.notified().await;
                    Ok::<_, String>(LoadedMany {
                        values: indices.iter().map(|i| Some(format!("v{i}"))).collect(),
                        keep: true,
                    })
                }
            };
            c.get_many_or_fill(&["a", "b"], load).await.unwrap()
        }
    });
    loading.notified().await;
    // A single lookup of `b` while the batch loads it joins the batch's load.
    let single = tokio::spawn({
        let c = c.clone();
        async move { c.get_or_load("b", || async { Err::<Option<String>, _>("must not load".to_owned()) }).await }
    });
    testkit::eventually("the single lookup waits on the batch", || async { c.misses_in_flight() == 3 }).await;
    proceed.notify_one();
    let got = batch.await.unwrap();
    assert_eq!(got[1].as_deref().map(String::as_str), Some("v1"));
    assert_eq!(single.await.unwrap().unwrap().as_deref().map(String::as_str), Some("v1"));
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.get("j", "miss"), 2);
}

#[tokio::test]
async fn a_batch_load_overtaken_by_a_write_keeps_that_key_nowhere_and_a_failure_is_the_callers() {
    let r = redis("batch-race:").await;
    let (reader, metrics, _) = cache(&r, "r");
    let (writer, _, _) = cache(&r, "r");
    let (loading, proceed) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let read = tokio::spawn({
        let (reader, loading, proceed) = (reader.clone(), loading.clone(), proceed.clone());
        async move {
            let load = |indices: Vec<usize>| {
                let (loading, proceed) = (loading.clone(), proceed.clone());
                async move {
                    loading.notify_one();
                    proceed.notified().await;
                    Ok::<_, String>(LoadedMany {
                        values: indices.iter().map(|_| Some("old".to_owned())).collect(),
                        keep: true,
                    })
                }
            };
            reader.get_many_or_fill(&["x", "y"], load).await.unwrap()
        }
    });
    loading.notified().await;
    writer.invalidate("y").await;
    proceed.notify_one();
    let got = read.await.unwrap();
    assert!(
        got.iter().all(|v| v.as_deref().map(String::as_str) == Some("old")),
        "its callers get what it read"
    );
    assert_eq!(metrics.get("r", "fill_refused"), 1);
    let mut conn = r.conn().await.unwrap();
    let x: Option<String> = redis::cmd("GET").arg(r.key("c:r:x")).query_async(&mut conn).await.unwrap();
    let y: Option<String> = redis::cmd("GET").arg(r.key("c:r:y")).query_async(&mut conn).await.unwrap();
    assert!(x.is_some(), "the unraced key is stored");
    assert_eq!(y, None, "the overtaken key is not");
    // Not in L1 either: the next lookup of `y` loads again; `x` is a hit.
    let fresh = |indices: Vec<usize>| {
        std::future::ready(Ok::<_, String>(LoadedMany {
            values: indices.iter().map(|_| Some("new".to_owned())).collect(),
            keep: true,
        }))
    };
    let got = reader.get_many_or_fill(&["x", "y"], fresh).await.unwrap();
    assert_eq!(got[0].as_deref().map(String::as_str), Some("old"));
    assert_eq!(got[1].as_deref().map(String::as_str), Some("new"));
    // A failed load is the caller's error, and nothing is kept; a serve-only one
    // is served and kept nowhere.
    let failed = reader
        .get_many_or_fill(&["f"], |_| std::future::ready(Err::<LoadedMany<String>, _>("db down".to_owned())))
        .await;
    assert_eq!(failed.unwrap_err().as_str(), "db down");
    let behind = |indices: Vec<usize>| {
        std::future::ready(Ok::<_, String>(LoadedMany {
            values: indices.iter().map(|_| Some("behind".to_owned())).collect(),
            keep: false,
        }))
    };
    let got = reader.get_many_or_fill(&["f"], behind).await.unwrap();
    assert_eq!(got[0].as_deref().map(String::as_str), Some("behind"));
    assert_eq!(metrics.get("r", "served_uncached"), 1);
    let f: Option<String> = redis::cmd("GET").arg(r.key("c:r:f")).query_async(&mut conn).await.unwrap();
    assert_eq!(f, None);
}

#[tokio::test]
async fn a_primed_value_is_a_hit_everywhere_and_a_key_redis_knows_is_never_primed() {
    let r = redis("prime:").await;
    let (c, metrics, _) = cache(&r, "p");
    let (other, other_metrics, _) = cache(&r, "p");
    assert!(c.prime("fresh", "created".to_owned()).await);
    let must_not_load = || async { Err::<Option<String>, _>("must not load") };
    assert_eq!(
        c.get_or_load("fresh", must_not_load).await.unwrap().as_deref().map(String::as_str),
        Some("created")
    );
    assert_eq!(metrics.get("p", "miss"), 0, "an L1 hit");
    assert_eq!(
        other.get_or_load("fresh", must_not_load).await.unwrap().as_deref().map(String::as_str),
        Some("created")
    );
    assert_eq!(other_metrics.get("p", "l2_hit"), 1, "another process finds it in Redis");
    // A key that was invalidated (or claimed by a lookup) has a generation:
    // priming it would race that write, so nothing is kept anywhere.
    other.invalidate("touched").await;
    assert!(!c.prime("touched", "maybe stale".to_owned()).await);
    let loaded =
        c.get_or_load("touched", || async { Ok::<_, ()>(Some("from the store".to_owned())) }).await.unwrap();
    assert_eq!(loaded.as_deref().map(String::as_str), Some("from the store"));
    assert!(!c.prime("fresh", "again".to_owned()).await, "a primed key has a generation too");
}

#[tokio::test]
async fn a_key_a_batch_answered_is_loaded_afresh_after_an_invalidation_while_the_batch_still_waits() {
    let r = redis("batch-end:").await;
    let (c, _, _) = cache(&r, "e");
    let (loading, proceed) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    // A single lookup of `held` loads and is held back.
    let single = tokio::spawn({
        let (c, loading, proceed) = (c.clone(), loading.clone(), proceed.clone());
        async move {
            c.get_or_load("held", || async move {
                loading.notify_one();
                proceed.notified().await;
                Ok::<_, String>(Some("held".to_owned()))
            })
            .await
        }
    });
    loading.notified().await;
    // A batch of `held` (joined: it waits) and `k` (led: answered at once).
    let batch = tokio::spawn({
        let c = c.clone();
        async move {
            let load = |indices: Vec<usize>| {
                std::future::ready(Ok::<_, String>(LoadedMany {
                    values: indices.iter().map(|_| Some("old k".to_owned())).collect(),
                    keep: true,
                }))
            };
            c.get_many_or_fill(&["held", "k"], load).await.unwrap()
        }
    });
    let stored = r.clone();
    testkit::eventually("the batch stored k", || async {
        let mut conn = stored.conn().await.unwrap();
        let v: Option<String> =
            redis::cmd("GET").arg(stored.key("c:e:k")).query_async(&mut conn).await.unwrap();
        v.is_some()
    })
    .await;
    // `k` changes while the batch still waits on `held`: a lookup now loads it.
    c.invalidate("k").await;
    let fresh = c.get_or_load("k", || async { Ok::<_, String>(Some("new k".to_owned())) }).await.unwrap();
    assert_eq!(fresh.as_deref().map(String::as_str), Some("new k"), "not the answered batch's old value");
    proceed.notify_one();
    assert_eq!(single.await.unwrap().unwrap().as_deref().map(String::as_str), Some("held"));
    let got = batch.await.unwrap();
    assert_eq!(
        got[0].as_deref().map(String::as_str),
        Some("held"),
        "the joined key: the single lookup's load"
    );
    assert_eq!(got[1].as_deref().map(String::as_str), Some("old k"), "the batch's callers get what it read");
}

/// A follower list for `Timelines::push_to_readers` that counts how often it is read.
fn listing(
    followers: &[i64],
    reads: &Arc<AtomicUsize>,
) -> impl Fn() -> futures::future::Ready<Result<Vec<i64>, std::io::Error>> {
    let (followers, reads) = (followers.to_vec(), reads.clone());
    move || {
        reads.fetch_add(1, Ordering::SeqCst);
        futures::future::ready(Ok(followers.clone()))
    }
}

async fn readers_set(r: &Redis, author: i64) -> Vec<String> {
    let mut conn = r.conn().await.unwrap();
    let mut members: Vec<String> =
        redis::cmd("SMEMBERS").arg(r.key(&format!("rd:{author}"))).query_async(&mut conn).await.unwrap();
    members.sort();
    members
}

#[tokio::test]
async fn a_push_lists_the_followers_once_then_asks_the_authors_readers() {
    let r = redis("readers:").await;
    let t = Timelines::new(r.clone(), 10, Duration::from_secs(600));
    let (author, followers) = (1, [2, 3, 4, 5]);
    warm(&t, 2, &[]).await;
    warm(&t, 3, &[]).await;
    let reads = Arc::new(AtomicUsize::new(0));

    // The first push knows no readers: it lists the followers and offers each one.
    let first = t.push_to_readers(10, author, listing(&followers, &reads)).await.unwrap();
    assert_eq!(first, cache::Pushed { offered: 5, written: 2, full: true });
    assert_eq!(reads.load(Ordering::SeqCst), 1);
    assert_eq!(
        readers_set(&r, author).await,
        ["2", "3", "~"],
        "made of the timelines that exist, and complete"
    );
    let mut conn = r.conn().await.unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(r.key("rd:1")).query_async(&mut conn).await.unwrap();
    assert!((1..=cache::timeline::READERS_LIFETIME.as_secs() as i64).contains(&ttl), "it lapses (ttl {ttl})");

    // The next asks the set: no listing, the readers and the author offered.
    let second = t.push_to_readers(11, author, listing(&followers, &reads)).await.unwrap();
    assert_eq!(second, cache::Pushed { offered: 3, written: 2, full: false });
    assert_eq!(reads.load(Ordering::SeqCst), 1, "the followers were not listed again");
    for reader in [2, 3] {
        assert_eq!(t.page(reader, None, 10).await.unwrap(), Some(vec![11, 10]), "reader {reader}");
    }
    assert_eq!(t.page(4, None, 10).await.unwrap(), None, "a follower who does not read gets nothing");

    // A follower whose timeline is rebuilt registers (after marking it, before
    // reading the posts) and gets the next push; the rebuild of a user who follows
    // an author without a set leaves it missing.
    t.begin_rebuild(4).await.unwrap();
    t.register(4, &[author, 99]).await.unwrap();
    assert!(t.fill(4, &[11, 10]).await.unwrap());
    assert!(readers_set(&r, 99).await.is_empty(), "no set made by a registration");
    let third = t.push_to_readers(12, author, listing(&followers, &reads)).await.unwrap();
    assert_eq!(third, cache::Pushed { offered: 4, written: 3, full: false });
    assert_eq!(t.page(4, None, 10).await.unwrap(), Some(vec![12, 11, 10]));

    // An unfollow takes the reader out; a follow puts one in (where the set exists).
    t.remove_reader(author, 3).await.unwrap();
    t.add_reader(author, 5).await.unwrap();
    t.add_reader(99, 5).await.unwrap();
    assert_eq!(readers_set(&r, author).await, ["2", "4", "5", "~"]);
    assert!(readers_set(&r, 99).await.is_empty(), "no set made by a follow");
    t.push_to_readers(13, author, listing(&followers, &reads)).await.unwrap();
    assert_eq!(t.page(3, None, 10).await.unwrap(), Some(vec![12, 11, 10]), "the unfollower got nothing more");
    assert_eq!(reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_lost_readers_set_costs_a_full_push_never_a_missed_post() {
    let r = redis("readerslost:").await;
    let t = Timelines::new(r.clone(), 10, Duration::from_secs(600));
    let (author, followers) = (1, [2, 3]);
    warm(&t, 2, &[]).await;
    let reads = Arc::new(AtomicUsize::new(0));
    t.push_to_readers(10, author, listing(&followers, &reads)).await.unwrap();
    warm(&t, 3, &[]).await; // rebuilt without registering: only a full push finds it now
    let mut conn = r.conn().await.unwrap();

    // Evicted (or a Redis restarted): the next push lists the followers again.
    let _: i64 = redis::cmd("DEL").arg(r.key("rd:1")).query_async(&mut conn).await.unwrap();
    let pushed = t.push_to_readers(11, author, listing(&followers, &reads)).await.unwrap();
    assert_eq!(pushed, cache::Pushed { offered: 3, written: 2, full: true });
    assert_eq!(reads.load(Ordering::SeqCst), 2);
    assert_eq!(t.page(3, None, 10).await.unwrap(), Some(vec![11]));

    // Evicted while a full push is under way (here: while it lists the followers):
    // the set it leaves is not complete, so the next push is a full one too.
    let _: i64 = redis::cmd("DEL").arg(r.key("rd:1")).query_async(&mut conn).await.unwrap();
    let evicting = {
        let (r, reads) = (r.clone(), reads.clone());
        move || {
            let (r, reads) = (r.clone(), reads.clone());
            async move {
                reads.fetch_add(1, Ordering::SeqCst);
                let mut conn = r.conn().await.unwrap();
                let _: i64 = redis::cmd("DEL").arg(r.key("rd:1")).query_async(&mut conn).await.unwrap();
                Ok::<_, std::io::Error>(vec![2, 3])
            }
        }
    };
    t.push_to_readers(12, author, evicting).await.unwrap();
    assert!(
        !readers_set(&r, author).await.contains(&"~".to_owned()),
        "not trusted: {:?}",
        readers_set(&r, author).await
    );
    let after = t.push_to_readers(13, author, listing(&followers, &reads)).await.unwrap();
    assert!(after.full, "listed again");
    assert_eq!(t.page(2, None, 10).await.unwrap(), Some(vec![13, 12, 11, 10]));
    assert_eq!(t.page(3, None, 10).await.unwrap(), Some(vec![13, 12, 11]));

    // Followers that cannot be listed: an error for the caller to retry, and the
    // set stays untrusted.
    let _: i64 = redis::cmd("DEL").arg(r.key("rd:1")).query_async(&mut conn).await.unwrap();
    let failing = || futures::future::ready(Err::<Vec<i64>, _>(std::io::Error::other("the shard is down")));
    let err = t.push_to_readers(14, author, failing).await.unwrap_err();
    assert!(matches!(err, cache::PushError::Followers(_)), "{err}");
    assert!(!readers_set(&r, author).await.contains(&"~".to_owned()));
    assert!(
        t.push_to_readers(14, author, listing(&followers, &reads)).await.unwrap().full,
        "the retry lists them"
    );
    assert_eq!(t.page(3, None, 10).await.unwrap(), Some(vec![14, 13, 12, 11]));
}
