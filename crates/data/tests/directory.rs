//! The directory's queries (ADR 0023): a name prefix's users from every shard,
//! at most a bound per shard and name, in byte order, display names matched
//! lowercased; friends of friends counted over bounded edges; popular
//! accounts merged across shards; the plans use the V8 indexes.

use data::{Data, DataConfig, Ranked};
use tokio_postgres::{Client, NoTls};

async fn client(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

fn data_on(urls: &[String]) -> Data {
    Data::new(&DataConfig { pool_size: 4, ..DataConfig::new(urls.to_vec()) }, &telemetry::Registry::default())
        .unwrap()
}

#[tokio::test]
async fn a_prefix_is_read_from_every_shard_by_either_name_and_bounded_per_shard() {
    let urls = testkit::TestEnv::new().await.shards;
    assert!(urls.len() >= 2, "the harness runs several shards");
    let d = data_on(&urls);
    for i in 0..12 {
        d.create_user(&format!("pre_{i:02}"), &format!("Someone {i}"), "h").await.unwrap();
    }
    d.create_user("other", "PRE Shown", "h").await.unwrap();
    d.create_user("prf", "Nobody", "h").await.unwrap();

    let mut all = d.users_with_prefix("pre", 100).await.unwrap();
    all.sort_by(|a, b| a.username.cmp(&b.username));
    let names: Vec<&str> = all.iter().map(|e| e.username.as_str()).collect();
    assert_eq!(names.len(), 13, "{names:?}");
    assert!(names.contains(&"other"), "found by its display name, lowercased: {names:?}");
    assert!(!names.contains(&"prf"));

    // At most `per_shard` by each name on each shard: the first in byte order.
    let few = d.users_with_prefix("pre_", 2).await.unwrap();
    assert!(few.len() <= 2 * urls.len(), "{few:?}");
    let map = d.shard_map();
    for shard in map.shards() {
        let mut on: Vec<&str> = few
            .iter()
            .filter(|e| map.shard_of_user(e.user_id) == shard)
            .map(|e| e.username.as_str())
            .collect();
        on.sort();
        let mut expected: Vec<&str> = all
            .iter()
            .filter(|e| e.username.starts_with("pre_") && map.shard_of_user(e.user_id) == shard)
            .map(|e| e.username.as_str())
            .collect();
        expected.truncate(2);
        assert_eq!(on, expected, "shard {shard:?}: its first names");
    }
}

#[tokio::test]
async fn friends_of_friends_are_counted_over_at_most_each_sources_newest_follows() {
    let urls = testkit::TestEnv::new().await.shards;
    let d = data_on(&urls);
    let id = async |name: &str| d.create_user(name, name, "h").await.unwrap().user_id;
    let (a, b, x, y, z) =
        (id("ffa").await, id("ffb").await, id("ffx").await, id("ffy").await, id("ffz").await);
    for (who, whom) in [(a, x), (a, y), (b, x), (b, z)] {
        d.follow(who, whom).await.unwrap();
    }
    let got = d.followees_of_many(&[a, b], 10, 10).await.unwrap();
    assert_eq!(got[0], Ranked { id: x, score: 2 });
    assert_eq!(got.len(), 3);
    assert!(got[1..].iter().all(|r| r.score == 1 && (r.id == y || r.id == z)));
    // One edge per source: only each one's newest follow.
    let newest = d.followees_of_many(&[a, b], 1, 10).await.unwrap();
    let ids: Vec<i64> = newest.iter().map(|r| r.id).collect();
    assert_eq!(newest.len(), 2, "{newest:?}");
    assert!(ids.contains(&y) && ids.contains(&z), "the newest of each: {ids:?}");
    assert_eq!(d.followees_of_many(&[a, b], 10, 1).await.unwrap(), vec![Ranked { id: x, score: 2 }]);

    // Popular accounts, merged across shards: most followed first.
    let top = d.popular_users(2).await.unwrap();
    assert_eq!(top[0], Ranked { id: x, score: 2 });
    assert_eq!(top[1].score, 1);
}

#[tokio::test]
async fn prefix_reads_use_the_name_indexes() {
    let urls = testkit::TestEnv::new().await.shards;
    let c = client(&urls[0]).await;
    c.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off").await.unwrap();
    for (index, expr) in
        [("users_username_prefix", "username"), ("users_display_name_prefix", "lower(display_name)")]
    {
        let plan: Vec<String> = c
            .query(
                &format!(
                    "EXPLAIN SELECT user_id FROM users WHERE {expr} ~>=~ 'ab' AND {expr} ~<~ 'ac' \
                     ORDER BY {expr} USING ~<~ LIMIT 10"
                ),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains(index), "{plan}");
        assert!(!plan.contains("Sort"), "read in the index's order: {plan}");
    }
}
