//! What fanning one post out costs Redis, by the author's follower count.
//!
//! `cargo run --release -p cache --example push_cost` (docs/BENCHMARKS.md, "Fan-out:
//! the push's cost per post"). It starts a Redis of its own (the test harness's),
//! and for each follower count makes some of the followers readers (`READING`; a
//! complete timeline of `CAP` ids, as a read leaves it), spread evenly, and leaves
//! the others without a timeline (followers who do not read). It then pushes posts with
//! [`Timelines::push`] and, as the anchor in the same run, with the plain push the
//! system first had: `ZADD` and `ZREMRANGEBYRANK` into every follower's timeline,
//! pipelined 64 followers at a time, whether anyone reads it or not. For each it
//! prints Redis's CPU per post (from `INFO cpu`), the wall time per post, and the
//! longest single command or script (from `SLOWLOG`, which records what took over
//! 1 ms). Arguments: follower counts (default 1 10 100 1000 10000). `READING`
//! sets the percentage of followers who read (default 50; in the bench's mix about 2
//! of a posting author's followers in 100 have a timeline).

use std::time::{Duration, Instant};

use cache::{Redis, Timelines};

/// Ids kept per timeline (the web server's default `feed.timeline_cap`).
const CAP: usize = 800;
/// Followers per pipeline of the anchor (the fan-out's batch size).
const BATCH: usize = 64;

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let counts: Vec<usize> = match std::env::args().skip(1).map(|a| a.parse()).collect::<Result<Vec<_>, _>>()
    {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => vec![1, 10, 100, 1000, 10_000],
        Err(e) => return Err(format!("follower counts must be whole numbers: {e}").into()),
    };
    let share: i64 = match std::env::var("READING") {
        Err(_) => 50,
        Ok(v) => match v.parse() {
            Ok(p) if (0..=100).contains(&p) => p,
            _ => return Err(format!("READING must be a percentage from 0 to 100, not {v:?}").into()),
        },
    };
    let server = testkit::redis();
    let redis = Redis::connect(&server.url(), "", Duration::from_secs(5)).await?;
    let timelines = Timelines::new(redis.clone(), CAP, Duration::from_secs(3600));
    let mut conn = redis.conn().await?;
    redis::cmd("CONFIG").arg("SET").arg("slowlog-log-slower-than").arg(1000).exec_async(&mut conn).await?;
    println!(
        "| followers | of them reading | posts | ours: Redis CPU/post | ours: wall/post | ours: longest call | \
         plain push: Redis CPU/post | plain push: wall/post | plain push: longest call | ours ÷ plain (CPU) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &counts {
        let posts = (20_000 / n.max(1)).clamp(20, 2_000);
        let followers: Vec<i64> = (0..n as i64).collect();
        let reading: Vec<i64> = followers.iter().copied().filter(|f| (f * share) % 100 < share).collect();
        let ids: Vec<i64> = (1..=CAP as i64).collect();

        prepare(&mut conn, &timelines, &reading, &ids).await?;
        let ours = measure(&mut conn, posts, |post| {
            let (timelines, followers) = (&timelines, &followers);
            async move { timelines.push(post, followers).await.map(|_| ()).map_err(|e| e.to_string().into()) }
        })
        .await?;

        prepare(&mut conn, &timelines, &reading, &ids).await?;
        let plain = measure(&mut conn, posts, |post| {
            let (redis, followers) = (&redis, &followers);
            async move { plain_push(redis, post, followers).await }
        })
        .await?;

        println!(
            "| {n} | {} | {posts} | {:.1} µs | {:.2} ms | {} | {:.1} µs | {:.2} ms | {} | {:.2}× |",
            reading.len(),
            ours.cpu_us,
            ours.wall_ms,
            longest(ours.longest_us),
            plain.cpu_us,
            plain.wall_ms,
            longest(plain.longest_us),
            ours.cpu_us / plain.cpu_us,
        );
    }
    redis::cmd("FLUSHALL").exec_async(&mut conn).await?;
    Ok(())
}

/// What one way of pushing cost, per post.
struct Cost {
    /// Redis's CPU (user + system) per post, µs.
    cpu_us: f64,
    /// Wall time per post, ms.
    wall_ms: f64,
    /// The longest command or script Redis ran meanwhile, µs, if any took over 1 ms.
    longest_us: Option<u64>,
}

fn longest(us: Option<u64>) -> String {
    us.map_or_else(|| "< 1 ms".to_owned(), |us| format!("{:.1} ms", us as f64 / 1000.0))
}

/// An empty Redis but for `reading`'s complete timelines of `ids`.
async fn prepare(
    conn: &mut redis::aio::MultiplexedConnection,
    timelines: &Timelines,
    reading: &[i64],
    ids: &[i64],
) -> Result<(), Error> {
    redis::cmd("FLUSHALL").exec_async(conn).await?;
    for &user in reading {
        timelines.begin_rebuild(user).await?;
        if !timelines.fill(user, ids).await? {
            return Err(format!("timeline {user} not filled").into());
        }
    }
    Ok(())
}

/// Push `posts` posts (ids above every prepared one) one after the other with
/// `push`, measuring Redis's CPU, the wall time and the slow log.
async fn measure<F, Fut>(
    conn: &mut redis::aio::MultiplexedConnection,
    posts: usize,
    push: F,
) -> Result<Cost, Error>
where
    F: Fn(i64) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    redis::cmd("SLOWLOG").arg("RESET").exec_async(conn).await?;
    let cpu_before = redis_cpu(conn).await?;
    let started = Instant::now();
    for p in 0..posts {
        push(1_000_000 + p as i64).await?;
    }
    let wall = started.elapsed();
    let cpu = redis_cpu(conn).await? - cpu_before;
    let slow: Vec<redis::Value> = redis::cmd("SLOWLOG").arg("GET").arg(128).query_async(conn).await?;
    let longest_us = slow
        .iter()
        .filter_map(|entry| match entry {
            redis::Value::Array(fields) => match fields.get(2) {
                Some(redis::Value::Int(us)) => Some(*us as u64),
                _ => None,
            },
            _ => None,
        })
        .max();
    Ok(Cost {
        cpu_us: cpu * 1e6 / posts as f64,
        wall_ms: wall.as_secs_f64() * 1e3 / posts as f64,
        longest_us,
    })
}

/// The anchor: `post` into every follower's timeline, read or not, as plain
/// pipelined commands.
async fn plain_push(redis: &Redis, post: i64, followers: &[i64]) -> Result<(), Error> {
    let member = format!("{post:019}");
    let mut conn = redis.conn().await?;
    for chunk in followers.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for f in chunk {
            let key = redis.key(&format!("tl:{f}"));
            pipe.cmd("ZADD").arg(&key).arg(0).arg(&member).ignore();
            pipe.cmd("ZREMRANGEBYRANK").arg(&key).arg(0).arg(-(CAP as i64 + 2)).ignore();
        }
        pipe.exec_async(&mut conn).await?;
    }
    Ok(())
}

/// Redis's CPU seconds so far (user + system, main thread and the rest).
async fn redis_cpu(conn: &mut redis::aio::MultiplexedConnection) -> Result<f64, Error> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    let field = |name: &str| {
        info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<f64>().ok())
    };
    match (field("used_cpu_user"), field("used_cpu_sys")) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => Err("INFO cpu without used_cpu_user/used_cpu_sys".into()),
    }
}
