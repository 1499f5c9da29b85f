//! `millions seed` against real PostgreSQL shards: the rows are what the API would
//! have written, the graph is power-law, and the web app serves the seeded data.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use loadgen::seed::{SeedConfig, SeedError, seed};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sharding::{PostId, ShardMap, user_bucket};
use testkit::TestEnv;
use tokio_postgres::{Client, NoTls};

const USERS: u64 = 2_000;

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connecting to a shard");
    tokio::spawn(conn);
    client
}

async fn pairs(client: &Client, sql: &str) -> Vec<(i64, i64)> {
    client.query(sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test]
async fn seeds_a_consistent_power_law_graph_and_refuses_to_seed_twice() {
    let env = TestEnv::new().await;
    let config = SeedConfig::new(USERS);
    assert_eq!(config.celebrities, 1);
    let lines = Mutex::new(Vec::new());
    let report = seed(&env.shards, &config, |l| lines.lock().unwrap().push(l.to_owned())).await.unwrap();
    let lines = lines.into_inner().unwrap();
    assert!(lines.len() >= 20, "progress about every tenth of the users: {lines:?}");
    assert_eq!(report.users, USERS);
    assert_eq!(report.shards.iter().map(|s| s.users).sum::<u64>(), USERS);
    assert_eq!(report.shards.iter().map(|s| s.follows_out).sum::<u64>(), report.follows);
    assert_eq!(report.shards.iter().map(|s| s.follows_in).sum::<u64>(), report.follows);
    assert_eq!(report.shards.iter().map(|s| s.posts).sum::<u64>(), report.posts);
    let mean_follows = report.follows as f64 / USERS as f64;
    assert!((17.0..23.0).contains(&mean_follows), "mean follows {mean_follows}");
    let mean_posts = report.posts as f64 / USERS as f64;
    assert!((2.5..3.5).contains(&mean_posts), "mean posts {mean_posts}");

    assert_eq!(env.count("SELECT count(*) FROM users").await, USERS as i64);
    let follows = report.follows as i64;
    assert_eq!(env.count("SELECT count(*) FROM follows_out").await, follows);
    assert_eq!(env.count("SELECT count(*) FROM follows_in").await, follows);
    assert_eq!(env.count("SELECT coalesce(sum(followers_count), 0)::bigint FROM users").await, follows);
    assert_eq!(env.count("SELECT coalesce(sum(following_count), 0)::bigint FROM users").await, follows);
    assert_eq!(env.count("SELECT count(*) FROM posts").await, report.posts as i64);
    assert_eq!(
        env.count("SELECT coalesce(sum(posts_count), 0)::bigint FROM users").await,
        report.posts as i64
    );
    assert_eq!(env.count("SELECT count(*) FROM likes").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM jobs").await, 0);
    // Every loaded table was vacuumed and analyzed on every shard, after the load.
    assert!(lines.iter().any(|l| l.contains("vacuuming")), "{lines:?}");
    assert_eq!(
        env.count(
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('users', 'follows_out', 'follows_in', 'posts') \
             AND last_vacuum IS NOT NULL AND last_analyze IS NOT NULL"
        )
        .await,
        4 * env.shards.len() as i64
    );
    assert_eq!(env.count("SELECT count(*) FROM follows_out WHERE user_id = followee_id").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM follows_in WHERE user_id = follower_id").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM posts WHERE like_count <> 0 OR status <> 'ready'").await, 0);
    // Every user's counters match its own shard's rows.
    for (what, sql) in [
        (
            "followers",
            "SELECT count(*) FROM users u WHERE followers_count <> (SELECT count(*) FROM follows_in f WHERE f.user_id = u.user_id)",
        ),
        (
            "following",
            "SELECT count(*) FROM users u WHERE following_count <> (SELECT count(*) FROM follows_out f WHERE f.user_id = u.user_id)",
        ),
        (
            "posts",
            "SELECT count(*) FROM users u WHERE posts_count <> (SELECT count(*) FROM posts p WHERE p.user_id = u.user_id)",
        ),
    ] {
        assert_eq!(env.count(sql).await, 0, "users whose {what} count is off");
    }

    // Rows live on their owner's shard; edges are on both sides; ids are well formed.
    let map = ShardMap::even(env.shards.len()).unwrap();
    let mut users: HashMap<i64, (String, i64)> = HashMap::new();
    let (mut out_edges, mut in_edges) = (HashSet::new(), HashSet::new());
    let mut seen_shards = HashSet::new();
    for (shard, url) in env.shards.iter().enumerate() {
        let c = connect(url).await;
        for r in
            c.query("SELECT user_id, username, followers_count, password_hash FROM users", &[]).await.unwrap()
        {
            let (id, name): (i64, String) = (r.get(0), r.get(1));
            assert_eq!(map.shard_of_user(id).0 as usize, shard, "{name} ({id}) is on the wrong shard");
            assert_eq!(map.shard_of_username(&name).0 as usize, shard, "{name}'s name claim is elsewhere");
            assert!(id >= 1_000_000);
            assert!(r.get::<_, String>(3).starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
            seen_shards.insert(shard);
            assert!(users.insert(id, (name, r.get(2))).is_none());
        }
        for (follower, followee) in pairs(&c, "SELECT user_id, followee_id FROM follows_out").await {
            assert_eq!(map.shard_of_user(follower).0 as usize, shard);
            out_edges.insert((follower, followee));
        }
        for (followee, follower) in pairs(&c, "SELECT user_id, follower_id FROM follows_in").await {
            assert_eq!(map.shard_of_user(followee).0 as usize, shard);
            in_edges.insert((follower, followee));
        }
        for (post, author) in pairs(&c, "SELECT post_id, user_id FROM posts").await {
            let post = PostId::from_i64(post).unwrap();
            assert_eq!(post.bucket(), user_bucket(author), "a post carries its author's bucket");
            assert_eq!(map.shard_of_post(post).0 as usize, shard);
        }
        let skew: i64 = c
            .query_one(
                "SELECT count(*) FROM posts WHERE abs(extract(epoch FROM created_at) * 1000 - \
                 ((post_id >> 22) + 1735689600000)) > 1 OR created_at < now() - interval '31 days' \
                 OR created_at > now()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(skew, 0, "post times match their ids and lie in the last 30 days");
    }
    assert_eq!(seen_shards.len(), 2, "users spread over both shards");
    assert_eq!(users.len() as u64, USERS);
    assert_eq!(out_edges, in_edges, "every edge is stored on both sides");
    assert!(out_edges.iter().all(|(a, b)| users.contains_key(a) && users.contains_key(b)));
    let names: HashSet<&str> = users.values().map(|(n, _)| n.as_str()).collect();
    assert!((0..USERS).all(|i| names.contains(format!("user{i}").as_str())));

    // Power law: a few celebrities hold a large share of all follower edges.
    let mut counts: Vec<i64> = users.values().map(|(_, f)| *f).collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let top: i64 = counts[..(USERS / 100) as usize].iter().sum();
    let share = top as f64 / follows as f64;
    assert!(share > 0.2, "the top 1% hold {share:.3} of follower edges");
    assert!((share - report.top_percent_share).abs() < 1e-9);
    let user0 = users.values().find(|(n, _)| n == "user0").unwrap().1;
    assert_eq!(user0, counts[0], "user0 is the most followed");
    assert!(user0 as f64 > 0.5 * USERS as f64, "most users follow the celebrity: {user0}");
    assert!(report.celebrity_share > 0.03, "{report}");
    let median = counts[counts.len() / 2];
    assert!(median < 20, "most users have few followers (median {median})");

    // Seeding the same names again is refused and writes nothing.
    let err = seed(&env.shards, &config, |_| {}).await.unwrap_err();
    assert!(matches!(&err, SeedError::NameTaken { name, .. } if name.starts_with("user")), "{err}");
    assert!(err.to_string().contains("--wipe"), "it says how to start from empty: {err}");
    assert_eq!(env.count("SELECT count(*) FROM users").await, USERS as i64);
    assert_eq!(env.count("SELECT count(*) FROM follows_out").await, follows);
    assert_eq!(env.count("SELECT count(*) FROM posts").await, report.posts as i64);
}

#[tokio::test]
async fn a_seed_goes_in_beside_users_who_signed_up() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let client = reqwest::Client::new();
    let r = client
        .post(app.url("/api/v1/users"))
        .json(&serde_json::json!({"username": "newcomer", "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let report = seed(&env.shards, &SeedConfig::new(200), |_| {}).await.unwrap();
    assert_eq!(report.users, 200);
    assert_eq!(env.count("SELECT count(*) FROM users").await, 201, "the newcomer and the seeded users");
    assert_eq!(env.count("SELECT count(*) FROM users WHERE username = 'newcomer'").await, 1);
    let r = client.get(app.url("/api/v1/users/newcomer")).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK, "the newcomer is untouched");
}

#[tokio::test]
async fn bad_configs_are_refused_before_touching_the_shards() {
    let env = TestEnv::new().await;
    for bad in [
        SeedConfig::new(0),
        SeedConfig::new(1),
        SeedConfig { posts_per_user: f64::NAN, ..SeedConfig::new(100) },
        SeedConfig { mean_follows: f64::NAN, ..SeedConfig::new(100) },
        SeedConfig { mean_follows: -2.0, ..SeedConfig::new(100) },
        SeedConfig { posts_per_user: f64::INFINITY, ..SeedConfig::new(100) },
        SeedConfig { celebrities: 200, ..SeedConfig::new(100) },
    ] {
        let err = seed(&env.shards, &bad, |_| {}).await.unwrap_err();
        assert!(matches!(err, SeedError::InvalidConfig(_)), "{bad:?}: {err}");
    }
    let err = seed(&[], &SeedConfig::new(10), |_| {}).await.unwrap_err();
    assert!(matches!(err, SeedError::NoShards), "{err}");
    assert_eq!(env.count("SELECT count(*) FROM users").await, 0);
}

#[tokio::test]
async fn the_same_seed_gives_the_same_graph() {
    let (a, b) = (TestEnv::new().await, TestEnv::new().await);
    let config = SeedConfig { seed: 42, ..SeedConfig::new(300) };
    let ra = seed(&a.shards, &config, |_| {}).await.unwrap();
    let rb = seed(&b.shards, &config, |_| {}).await.unwrap();
    assert_eq!((ra.follows, ra.posts, ra.shards.clone()), (rb.follows, rb.posts, rb.shards.clone()));
    for (x, y) in a.shards.iter().zip(&b.shards) {
        let (x, y) = (connect(x).await, connect(y).await);
        for sql in [
            "SELECT user_id, followers_count FROM users ORDER BY 1",
            "SELECT user_id, followee_id FROM follows_out ORDER BY 1, 2",
            "SELECT user_id, post_id % 4194304 FROM posts ORDER BY 1, 2",
        ] {
            assert_eq!(pairs(&x, sql).await, pairs(&y, sql).await, "{sql}");
        }
    }
}

#[tokio::test]
async fn the_web_app_serves_the_seeded_data() {
    let env = TestEnv::new().await;
    let config = SeedConfig::new(USERS);
    seed(&env.shards, &config, |_| {}).await.unwrap();
    let app = env.spawn().await;
    let http = reqwest::Client::new();

    let r = http
        .post(app.url("/api/v1/sessions"))
        .json(&json!({"username": "user1", "password": config.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "logging in as a seeded user");
    let body: Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    let me: i64 = body["user"]["id"].as_str().unwrap().parse().unwrap();

    // Whom user1 follows, from its shard.
    let map = ShardMap::even(env.shards.len()).unwrap();
    let c = connect(&env.shards[map.shard_of_user(me).0 as usize]).await;
    let followees: HashSet<i64> = c
        .query("SELECT followee_id FROM follows_out WHERE user_id = $1", &[&me])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!followees.is_empty());

    let r = http.get(app.url("/api/v1/feed?limit=50")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let feed: Value = r.json().await.unwrap();
    let posts = feed["posts"].as_array().unwrap();
    assert!(!posts.is_empty(), "the feed is rebuilt from the seeded posts: {feed}");
    for p in posts {
        let author: i64 = p["author"]["id"].as_str().unwrap().parse().unwrap();
        assert!(followees.contains(&author) || author == me, "{p}");
    }
    let ids: Vec<i64> = posts.iter().map(|p| p["id"].as_str().unwrap().parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first");

    // Profiles show the seeded counters, and the seeded users can act.
    let r = http.get(app.url("/api/v1/users/user0")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let user0: Value = r.json().await.unwrap();
    assert!(user0["followers_count"].as_i64().unwrap() > 1_000, "{user0}");
    let r = http
        .post(app.url("/api/v1/posts"))
        .bearer_auth(&token)
        .json(&json!({"caption": "after the seed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}
