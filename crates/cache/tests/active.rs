//! Active users in HyperLogLogs (`cache::active`), on two real Redis servers (two
//! data centers): noted in memory, sent as one `PFADD` per day key with an
//! expiry, counted as the union of both data centers.

use std::time::Duration;

use cache::Redis;
use cache::active::{self, ActiveUsers};

async fn connect(url: String) -> Redis {
    Redis::connect(&url, "m:", Duration::from_secs(1)).await.unwrap()
}

/// How many times `command` ran on `redis` (INFO commandstats).
async fn calls(redis: &Redis, command: &str) -> u64 {
    let info: String = redis
        .run(|mut c| async move { redis::cmd("INFO").arg("commandstats").query_async(&mut c).await })
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// Within HyperLogLog's error (0.81% standard error; 3% is far outside it).
fn near(got: u64, want: u64) -> bool {
    (got as f64 - want as f64).abs() <= want as f64 * 0.03
}

#[tokio::test]
async fn users_are_counted_once_across_data_centers_with_one_pfadd_per_day_key() {
    let (mut dc1_server, mut dc2_server) = (testkit::fresh_redis(), testkit::fresh_redis());
    let (dc1, dc2) = (connect(dc1_server.url()).await, connect(dc2_server.url()).await);
    let registry = telemetry::Registry::default();
    let (web1, web2) = (ActiveUsers::new(dc1.clone(), &registry), ActiveUsers::new(dc2.clone(), &registry));
    let today = active::day_of(std::time::SystemTime::now());

    // dc1 serves users 1..=1000 today, each many times; dc2 serves 501..=1500
    // (500 of them in both DCs); dc2 also served 2001..=2100 three days ago and
    // 3001..=3050 twenty days ago.
    for _ in 0..3 {
        for id in 1..=1000 {
            web1.saw(id);
        }
    }
    for id in 501..=1500 {
        web2.saw_on(today, id);
    }
    for id in 2001..=2100 {
        web2.saw_on(today - 3, id);
    }
    for id in 3001..=3050 {
        web2.saw_on(today - 20, id);
    }
    let before = (calls(&dc1, "pfadd").await, calls(&dc2, "pfadd").await);
    assert_eq!(web1.flush().await.unwrap(), 1, "one day key");
    assert_eq!(web2.flush().await.unwrap(), 3, "three day keys");
    let after = (calls(&dc1, "pfadd").await, calls(&dc2, "pfadd").await);
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 3), "one PFADD per day key, not per user");
    assert_eq!(web1.flush().await.unwrap(), 0, "nothing noted since: nothing sent");

    // Every key expires (within the month's window and a little more).
    let key = active::day_key("m:", today);
    let ttl: i64 =
        dc1.run(|mut c| async move { redis::cmd("TTL").arg(&key).query_async(&mut c).await }).await.unwrap();
    assert!(ttl > 30 * 86_400 && ttl <= active::KEY_TTL.as_secs() as i64, "ttl {ttl}");

    let servers = vec![("dc1-redis-1".to_owned(), dc1.clone()), ("dc2-redis-1".to_owned(), dc2.clone())];
    let counts = active::count(&servers, today, "t1").await.unwrap();
    assert!(near(counts.day, 1500), "the union, not 2000: {counts:?}");
    assert!(near(counts.week, 1600), "{counts:?}");
    assert!(near(counts.month, 1650), "{counts:?}");
    assert_eq!(counts.counted, ["dc1-redis-1", "dc2-redis-1"]);
    assert!(counts.missing.is_empty());
    // The copies made for the union are gone.
    let copies: Vec<String> = dc1
        .run(|mut c| async move { redis::cmd("KEYS").arg("active-copy:*").query_async(&mut c).await })
        .await
        .unwrap();
    assert!(copies.is_empty(), "{copies:?}");

    // With dc1's Redis gone, dc2's users are still counted, and the answer says
    // whose are missing.
    dc1_server.kill();
    let counts = active::count(&servers, today, "t2").await.unwrap();
    assert!(near(counts.day, 1000), "{counts:?}");
    assert_eq!(counts.counted, ["dc2-redis-1"]);
    assert_eq!(counts.missing.len(), 1, "{counts:?}");
    assert_eq!(counts.missing[0].0, "dc1-redis-1");
    dc2_server.kill();
    assert!(active::count(&servers, today, "t3").await.unwrap_err().contains("no redis answered"));
}
