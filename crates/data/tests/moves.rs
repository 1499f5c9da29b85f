//! Moving buckets between two real PostgreSQL shards while they take writes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use data::moves::{self, Move, MoveError};
use data::{Data, DataConfig, PostId, ShardId};
use sharding::{Bucket, ClusterMap, ShardServers, user_bucket};
use tokio_postgres::{Client, NoTls};

const WAIT: Duration = Duration::from_secs(10);

/// Two fresh, migrated shard databases (the harness's deployment).
async fn shards() -> Vec<String> {
    let urls = testkit::TestEnv::new().await.shards;
    assert_eq!(urls.len(), 2, "the moves go from shard 0 to shard 1");
    urls
}

async fn client(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

async fn count(url: &str, sql: &str) -> i64 {
    client(url).await.query_one(sql, &[]).await.unwrap().get(0)
}

/// The map publishing `directory` at `epoch`, both shards on the test server.
fn cluster_map(epoch: u64, directory: &sharding::ShardMap) -> ClusterMap {
    let pg = testkit::postgres();
    let addr = format!("{}:{}", pg.host(), pg.port());
    let servers = ShardServers { primary: Some(addr), replicas: vec![], near: None };
    ClusterMap { epoch, shards: vec![servers.clone(), servers], directory: Some(directory.ranges()) }
}

#[tokio::test]
async fn the_bucket_function_in_sql_is_the_rust_one() {
    let urls = shards().await;
    let c = client(&urls[0]).await;
    let mut ids: Vec<i64> = vec![0, 1, -1, i64::MAX, i64::MIN, 1_000_000, 4095, 4096];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..5_000 {
        x = sharding::fmix64(x.wrapping_add(0x9e37_79b9_7f4a_7c15));
        ids.push(x as i64);
    }
    let rows = c.query("SELECT id, millions_bucket(id) FROM unnest($1::bigint[]) id", &[&ids]).await.unwrap();
    assert_eq!(rows.len(), ids.len());
    for row in rows {
        let id: i64 = row.get(0);
        let bucket: i32 = row.get(1);
        assert_eq!(bucket, i32::from(user_bucket(id).get()), "bucket of {id}");
    }
}

#[tokio::test]
async fn a_move_under_concurrent_writes_keeps_every_acknowledged_write_exactly_once() {
    let urls = shards().await;
    let d = Data::new(
        &DataConfig { pool_size: 4, ..DataConfig::new(urls.clone()) },
        &telemetry::Registry::default(),
    )
    .unwrap();
    let map = d.shard_map();
    let mut users = vec![];
    for i in 0..24 {
        users.push(d.create_user(&format!("mover{i}"), "M", "hash").await.unwrap().user_id);
    }
    let on_source: Vec<i64> = users.iter().copied().filter(|u| map.shard_of_user(*u) == ShardId(0)).collect();
    assert!(on_source.len() >= 4, "enough users on shard 0");
    // The buckets of half the source's users move; the others stay.
    let moving: BTreeSet<u16> =
        on_source.iter().take(on_source.len() / 2).map(|u| user_bucket(*u).get()).collect();
    let buckets: Vec<Bucket> = moving.iter().map(|b| Bucket::new(*b).unwrap()).collect();
    let m = Move { id: 7, buckets: buckets.clone() };
    // Something of every kind before the move.
    let mut jobs = 0;
    for (i, u) in users.iter().enumerate() {
        d.create_session(*u, &[i as u8; 32], Duration::from_secs(3600)).await.unwrap();
        d.enqueue("test-job", *u, serde_json::json!({ "n": i }), 3).await.unwrap();
        jobs += 1;
        d.follow(*u, users[(i + 1) % users.len()]).await.unwrap();
    }

    // Writers: posts and likes by everyone, and follows, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = vec![];
    for w in 0..3 {
        let (d, users, stop) = (d.clone(), users.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut posts: Vec<(i64, i64)> = vec![];
            let mut comments: Vec<(i64, i64)> = vec![];
            let mut errors = vec![];
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let author = users[i % users.len()];
                match d.create_post(author, "during the move").await {
                    Ok(p) => {
                        let id = PostId::from_i64(p.post_id).unwrap();
                        if let Err(e) = d.like(id, users[(i + 3) % users.len()]).await {
                            errors.push(format!("like: {e}"));
                        }
                        // A comment, on its commenter's shard, counted on the post's.
                        let commenter = users[(i + 5) % users.len()];
                        match d.create_comment(id, author, commenter, "during the move").await {
                            Ok(new) => {
                                if let Err(e) =
                                    d.count_comment(data::CommentCount::of(&new.comment, true)).await
                                {
                                    errors.push(format!("count: {e}"));
                                }
                                comments.push((commenter, new.comment.comment_id));
                            }
                            Err(e) => errors.push(format!("comment: {e}")),
                        }
                        posts.push((author, p.post_id));
                    }
                    Err(e) => errors.push(format!("post: {e}")),
                }
                if let Err(e) = d.follow(author, users[(i * 7 + 5) % users.len()]).await {
                    errors.push(format!("follow: {e}"));
                }
                i += 3;
            }
            (posts, comments, errors)
        }));
    }
    let moved_users = |d: &Data| {
        let (d, users, buckets) = (d.clone(), users.clone(), moving.clone());
        async move {
            let mut n = 0;
            for w in &users {
                if buckets.contains(&user_bucket(*w).get()) {
                    n += d.profile(*w).await.unwrap().unwrap().posts_count;
                }
            }
            n
        }
    };
    let before = moved_users(&d).await;

    let (mut source, mut target) = (client(&urls[0]).await, client(&urls[1]).await);
    moves::begin_capture(&source, &m, WAIT).await.unwrap();
    let copied = moves::copy(&mut source, &mut target, &m).await.unwrap();
    assert!(copied.rows > 0, "the buckets' rows were copied");
    moves::catch_up(&mut source, &mut target, &m).await.unwrap();
    moves::fence(&source, &m, WAIT).await.unwrap();
    moves::catch_up(&mut source, &mut target, &m).await.unwrap();
    assert_eq!(moves::backlog(&source, &m).await.unwrap(), 0, "nothing is captured once fenced");
    let moved_jobs = moves::move_jobs(&mut source, &mut target, &m).await.unwrap();
    assert!(moved_jobs > 0);
    assert_eq!(
        moves::move_jobs(&mut source, &mut target, &m).await.unwrap(),
        0,
        "a second run moves none again"
    );
    moves::adopt(&target, &m).await.unwrap();
    let after = map.with_moved(&buckets, ShardId(1), 1).unwrap();
    assert_eq!(d.install_cluster_map(&cluster_map(1, &after)), Ok(true));
    assert_eq!(d.shard_map().shard_of_bucket(buckets[0]), ShardId(1));
    // Writes to the moved buckets go on, now on the target.
    testkit::eventually("the moved users post on their new shard", || async {
        moved_users(&d).await > before + 5
    })
    .await;
    moves::drop_source(&mut source, &m).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = vec![];
    let mut commented = vec![];
    for w in writers {
        let (posts, comments, errors) = w.await.unwrap();
        assert!(errors.is_empty(), "no write failed because of the move: {errors:?}");
        acknowledged.extend(posts);
        commented.extend(comments);
    }

    // Every acknowledged post is stored once, on its author's shard of the new map.
    let mut where_stored: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, url) in urls.iter().enumerate() {
        for row in client(url).await.query("SELECT post_id FROM posts", &[]).await.unwrap() {
            where_stored.entry(row.get(0)).or_default().push(i);
        }
    }
    for (author, post) in &acknowledged {
        let expected = after.shard_of_user(*author).0 as usize;
        assert_eq!(where_stored.get(post), Some(&vec![expected]), "post {post} by {author}");
    }
    // Every acknowledged comment is stored once, on its commenter's shard; each
    // post's comment count is the number of its comments, over every shard.
    let mut comments_stored: HashMap<i64, Vec<usize>> = HashMap::new();
    let mut per_post: HashMap<i64, i64> = HashMap::new();
    for (i, url) in urls.iter().enumerate() {
        for row in client(url).await.query("SELECT comment_id, post_id FROM comments", &[]).await.unwrap() {
            comments_stored.entry(row.get(0)).or_default().push(i);
            *per_post.entry(row.get(1)).or_default() += 1;
        }
    }
    assert!(!commented.is_empty());
    for (commenter, comment) in &commented {
        let expected = after.shard_of_user(*commenter).0 as usize;
        assert_eq!(comments_stored.get(comment), Some(&vec![expected]), "comment {comment} by {commenter}");
    }
    for (_, post) in &acknowledged {
        let stored = d.post(PostId::from_i64(*post).unwrap()).await.unwrap().unwrap();
        assert_eq!(stored.comment_count, per_post.get(post).copied().unwrap_or(0), "post {post}'s count");
    }
    // Counters agree with the rows they count, on every user, wherever it lives.
    for u in &users {
        let shard = &urls[after.shard_of_user(*u).0 as usize];
        let p = d.profile(*u).await.unwrap().unwrap();
        assert_eq!(
            p.posts_count,
            count(shard, &format!("SELECT count(*) FROM posts WHERE user_id = {u}")).await
        );
        assert_eq!(
            p.following_count,
            count(shard, &format!("SELECT count(*) FROM follows_out WHERE user_id = {u}")).await
        );
        assert_eq!(
            p.followers_count,
            count(shard, &format!("SELECT count(*) FROM follows_in WHERE user_id = {u}")).await
        );
    }
    // The source keeps nothing of the buckets, moves nothing any more; the jobs all survived.
    for (table, n) in moves::count_rows(&source, &buckets).await.unwrap() {
        assert_eq!(n, 0, "{table} rows of the moved buckets left on the source");
    }
    assert_eq!(count(&urls[0], "SELECT count(*) FROM bucket_moves WHERE NOT gone").await, 0);
    assert_eq!(count(&urls[0], "SELECT count(*) FROM bucket_changes").await, 0);
    // A process with the old map cannot write there any more.
    let stale = Data::new(&DataConfig::new(urls.clone()), &telemetry::Registry::default()).unwrap();
    let moved_user = *on_source.iter().find(|u| moving.contains(&user_bucket(**u).get())).unwrap();
    let err = stale.create_post(moved_user, "to the old shard").await.unwrap_err();
    assert!(matches!(err, data::DataError::NotFound), "the user is not there any more: {err}");
    let err = stale.enqueue("test-job", moved_user, serde_json::json!({}), 3).await.unwrap_err();
    assert!(err.is_fenced(), "and a write that needs no row there is refused: {err}");
    // (The follows', likes' and comments' notification jobs aside: how many
    // depends on which edges and likes were new; and the comments' count jobs,
    // left queued here since nothing drops them.)
    let own_jobs = "SELECT count(*) FROM jobs WHERE kind NOT IN ('notify', 'comment_count')";
    let total_jobs = count(&urls[0], own_jobs).await + count(&urls[1], own_jobs).await;
    // Each post queued its fan-out job with it.
    assert_eq!(total_jobs, jobs + acknowledged.len() as i64, "every queued job is somewhere, once");
    // Sessions moved with their users: each one is found through the new map.
    for (i, u) in users.iter().enumerate() {
        let s = d.session(user_bucket(*u), &[i as u8; 32]).await.unwrap();
        assert_eq!(s.map(|s| s.user_id), Some(*u), "session of {u}");
    }
}

#[tokio::test]
async fn overlapping_moves_are_refused_and_an_abandoned_move_leaves_nothing_behind() {
    let urls = shards().await;
    let d = Data::new(&DataConfig::new(urls.clone()), &telemetry::Registry::default()).unwrap();
    let map = d.shard_map();
    let mut mine = None;
    for i in 0.. {
        let u = d.create_user(&format!("abandon{i}"), "A", "hash").await.unwrap().user_id;
        if map.shard_of_user(u) == ShardId(0) {
            mine = Some(u);
            break;
        }
    }
    let user = mine.unwrap();
    d.create_post(user, "before").await.unwrap();
    let bucket = user_bucket(user);
    let (mut source, mut target) = (client(&urls[0]).await, client(&urls[1]).await);
    let first = Move { id: 1, buckets: vec![bucket] };
    moves::begin_capture(&source, &first, WAIT).await.unwrap();
    moves::begin_capture(&source, &first, WAIT).await.expect("running a step again is harmless");
    let other = Bucket::new((bucket.get() + 1) % 4096).unwrap();
    let overlapping = Move { id: 2, buckets: vec![other, bucket] };
    match moves::begin_capture(&source, &overlapping, WAIT).await {
        Err(e @ MoveError::AlreadyMoving { .. }) => {
            assert!(!e.is_retryable());
            assert!(e.to_string().contains(&format!("bucket {}", bucket.get())), "{e}");
        }
        other => panic!("an overlapping move must be refused: {other:?}"),
    }
    assert_eq!(
        count(&urls[0], "SELECT count(*) FROM bucket_moves WHERE move_id = 2").await,
        0,
        "nothing of it kept"
    );

    moves::copy(&mut source, &mut target, &first).await.unwrap();
    d.create_post(user, "captured").await.unwrap();
    assert!(moves::backlog(&source, &first).await.unwrap() >= 2, "the post and its author's counter");
    moves::fence(&source, &first, WAIT).await.unwrap();
    let err = d.create_post(user, "fenced").await.unwrap_err();
    assert!(err.is_fenced() && err.is_retryable(), "with no new map, a fenced write fails retryably: {err}");

    moves::abandon(&source, &mut target, &first).await.unwrap();
    moves::abandon(&source, &mut target, &first).await.expect("abandoning again is harmless");
    for (table, n) in moves::count_rows(&target, &[bucket]).await.unwrap() {
        assert_eq!(n, 0, "{table} rows left on the target");
    }
    assert_eq!(count(&urls[0], "SELECT count(*) FROM bucket_moves").await, 0);
    assert_eq!(count(&urls[0], "SELECT count(*) FROM bucket_changes").await, 0);
    d.create_post(user, "after").await.expect("the fence is lifted");
    // The user's bucket weighs its user, its posts with their fan-out jobs.
    let weights = moves::rows_by_bucket(&source).await.unwrap();
    let mine = weights.iter().find(|(b, _)| *b == bucket.get()).map(|(_, n)| *n);
    assert!(mine >= Some(1 + 3 + 3), "{weights:?}");
    assert_eq!(d.profile(user).await.unwrap().unwrap().posts_count, 3);
}
