//! Benchmark: the durable job queue's own claim-and-complete throughput, with
//! empty jobs, against plain round trips to the same server in the same run.
//!
//! ```text
//! cargo build --release -p worker --example bench_queue
//! target/release/examples/bench_queue        # or: bash scripts/bench-photos.sh
//! ```
//!
//! For every number of concurrent claimers K, and in every round, four runs of
//! N "jobs" each, on shard 0 of a migrated test deployment:
//!
//! - **queue**: N jobs of kind `noop` are inserted in bulk (untimed), then K
//!   tasks each loop `Data::claim_jobs(shard, me, limit 1, lease)` +
//!   `Data::complete_job` until a claim comes back empty. This is exactly what
//!   a worker does per job, minus running it: two statements, each its own
//!   transaction (the claim, [`data::CLAIM_JOBS_SQL`]: `UPDATE … FROM` the
//!   lapsed-lease and ready jobs, each picked through its partial index with
//!   `FOR UPDATE SKIP LOCKED`; and the completing `DELETE`), through the data
//!   layer's pool.
//! - **anchor, 2 writes**: K tasks on K plain connections; per job, two
//!   autocommit single-row `UPDATE`s by primary key, each task on a row of its
//!   own (no lock contention). The same number of round trips and commits per
//!   job as the queue, with none of its logic: the floor the queue sits on.
//! - **anchor, 2 × SELECT 1**: the same with `SELECT 1`: round trips alone,
//!   no writes, no commits to log.
//! - **single-OR claim** (the earlier form, no longer shipped; for
//!   comparison): the queue drain with [`CLAIM_OR`] in place of the shipped
//!   claim statement, on plain connections. Its `OR` of the two due conditions
//!   keeps PostgreSQL from using either partial index, so each claim reads and
//!   sorts every due job; this shows what the shipped statement saves.
//!
//! The ratio recorded is queue ÷ (2-write anchor) from the same round; the
//! tables show medians over the rounds. CPU per job is read from `/proc`: this
//! process (the client side, including the data layer) and the PostgreSQL
//! server (postmaster and all its children). A last table drains backlogs of
//! growing depth with one claimer, and the plans of both claim statements are
//! printed.
//!
//! Two servers: testkit's shared one (`fsync` off), and, unless `BENCH_QUEUE_DURABLE=0`, a durable one
//! (`testkit::fresh_postgres`: default settings, every commit flushed).
//!
//! Environment: `BENCH_QUEUE_JOBS` (20000), `BENCH_QUEUE_DURABLE_JOBS` (2000),
//! `BENCH_QUEUE_CLAIMERS` (`1,4,16`), `BENCH_QUEUE_DEPTHS`
//! (`1000,5000,20000`; empty: skip), `BENCH_ROUNDS` (3), `BENCH_QUEUE_DURABLE` (1).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use data::{Data, DataConfig, ShardId};
use tokio_postgres::{Client, NoTls};

const SHARD: ShardId = ShardId(0);
const LEASE: Duration = Duration::from_secs(600);
const MAX_CLAIMERS: usize = 64;

/// The claim statement `Data::claim_jobs` runs, taken from the data layer
/// itself so the plan printed and the statement measured are the shipped ones.
const CLAIM_SHIPPED: &str = data::CLAIM_JOBS_SQL;

/// The earlier, single-`OR` form of the claim, measured for comparison only: one
/// `SELECT` over both due conditions, which neither partial index (`jobs_due`,
/// `jobs_leased`) can answer in order, so every due row is read and sorted.
const CLAIM_OR: &str = "WITH due AS ( \
    SELECT job_id FROM jobs \
    WHERE (state = 'ready' AND run_at <= now()) OR (state = 'running' AND locked_until < now()) \
    ORDER BY run_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
 UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, locked_by = $1, \
    locked_until = now() + $2 * interval '1 millisecond' \
 FROM due WHERE j.job_id = due.job_id \
 RETURNING j.job_id, j.kind, j.user_id, j.payload, j.attempts, j.max_attempts";

/// `Data::complete_job`'s statement.
const COMPLETE: &str =
    "DELETE FROM jobs WHERE job_id = $1 AND locked_by = $2 AND state = 'running' RETURNING 1";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn say(msg: impl AsRef<str>) {
    eprintln!("bench_queue: {}", msg.as_ref());
}

// ---------------------------------------------------------------- CPU from /proc

/// Clock ticks per second of `/proc/*/stat` times.
fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Fields of `/proc/<pid>/stat` after the command name: index 0 is field 3 (state).
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect())
}

/// utime + stime (+ cutime + cstime when `children`) of a process, in ticks.
fn ticks(pid: &str, children: bool) -> u64 {
    stat_fields(pid).map_or(0, |f| f[11] + f[12] + if children { f[13] + f[14] } else { 0 })
}

/// CPU ticks used so far by the PostgreSQL server: the postmaster (with its
/// exited, reaped children) and every live child process.
fn server_ticks(postmaster: u32) -> u64 {
    let pm = postmaster.to_string();
    let mut total = ticks(&pm, true);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        if let Some(f) = stat_fields(pid)
            && f[1] == u64::from(postmaster)
        {
            total += f[11] + f[12];
        }
    }
    total
}

#[derive(Clone, Copy)]
struct Cpu {
    client: u64,
    server: u64,
}

fn cpu_now(postmaster: u32) -> Cpu {
    Cpu { client: ticks("self", false), server: server_ticks(postmaster) }
}

// ---------------------------------------------------------------- one measured run

/// The result of one run of `jobs` jobs.
#[derive(Clone, Copy, Default)]
struct Run {
    per_sec: f64,
    client_us: f64,
    server_us: f64,
}

struct Meter {
    postmaster: u32,
    tck: f64,
}

impl Meter {
    fn start(&self) -> (Instant, Cpu) {
        (Instant::now(), cpu_now(self.postmaster))
    }

    fn stop(&self, (started, before): (Instant, Cpu), jobs: usize) -> Run {
        let elapsed = started.elapsed().as_secs_f64();
        let after = cpu_now(self.postmaster);
        let us = |t: u64| t as f64 / self.tck * 1e6 / jobs as f64;
        Run {
            per_sec: jobs as f64 / elapsed,
            client_us: us(after.client - before.client),
            server_us: us(after.server.saturating_sub(before.server)),
        }
    }
}

// ---------------------------------------------------------------- a server under test

struct Server {
    label: String,
    settings: String,
    jobs: usize,
    data: Data,
    /// Plain connections for setup and the anchors.
    admin: Client,
    conns: Vec<Arc<Client>>,
    anchor_select: Vec<tokio_postgres::Statement>,
    anchor_update: Vec<tokio_postgres::Statement>,
    /// Per connection: the single-OR claim ([`CLAIM_OR`]) and the
    /// completing `DELETE` of `Data::complete_job`.
    alt: Vec<(tokio_postgres::Statement, tokio_postgres::Statement)>,
    user_id: i64,
    meter: Meter,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn connect(url: &str, tasks: &mut Vec<tokio::task::JoinHandle<()>>) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connecting to PostgreSQL");
    tasks.push(tokio::spawn(async move {
        let _ = conn.await;
    }));
    client
}

impl Server {
    async fn new(label: &str, shard_urls: &[String], jobs: usize, max_claimers: usize) -> Server {
        let config = DataConfig {
            pool_size: max_claimers + 1,
            acquire_timeout_ms: 30_000,
            ..DataConfig::new(shard_urls.to_vec())
        };
        let data = Data::new(&config, &telemetry::Registry::default()).expect("data layer");
        let url = &shard_urls[usize::from(SHARD.0)];
        let mut tasks = Vec::new();
        let admin = connect(url, &mut tasks).await;
        let backend: i32 = admin.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        let postmaster = stat_fields(&backend.to_string()).map(|f| f[1] as u32).expect("postmaster pid");
        let mut settings = Vec::new();
        for name in ["fsync", "synchronous_commit", "full_page_writes", "server_version"] {
            let v: String = admin.query_one(&format!("SHOW {name}"), &[]).await.unwrap().get(0);
            settings.push(format!("{name}={v}"));
        }
        admin
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS bench_anchor; \
                 CREATE TABLE bench_anchor (id int PRIMARY KEY, n bigint NOT NULL); \
                 INSERT INTO bench_anchor SELECT i, 0 FROM generate_series(0, {}) i; \
                 DELETE FROM jobs;",
                max_claimers - 1
            ))
            .await
            .expect("creating the anchor table");
        let mut conns = Vec::new();
        let (mut anchor_select, mut anchor_update, mut alt) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..max_claimers {
            let c = connect(url, &mut tasks).await;
            anchor_select.push(c.prepare("SELECT 1").await.unwrap());
            anchor_update.push(c.prepare("UPDATE bench_anchor SET n = n + 1 WHERE id = $1").await.unwrap());
            alt.push((c.prepare(CLAIM_OR).await.unwrap(), c.prepare(COMPLETE).await.unwrap()));
            conns.push(Arc::new(c));
        }
        let map = data.shard_map();
        let user_id = (1_000_000_i64..).find(|&id| map.shard_of_user(id) == SHARD).unwrap();
        Server {
            label: label.to_owned(),
            settings: settings.join(", "),
            jobs,
            data,
            admin,
            conns,
            anchor_select,
            anchor_update,
            alt,
            user_id,
            meter: Meter { postmaster, tck: clk_tck() },
            _tasks: tasks,
        }
    }

    /// Enqueue `jobs` noop jobs in bulk (untimed) on a freshly vacuumed table.
    async fn fill(&self, jobs: usize) {
        let n = i32::try_from(jobs).unwrap();
        self.admin.batch_execute("VACUUM jobs").await.unwrap();
        self.admin
            .execute(
                "INSERT INTO jobs (kind, user_id, payload, max_attempts) \
                 SELECT 'noop', $1, '{}'::jsonb, 5 FROM generate_series(1, $2)",
                &[&self.user_id, &n],
            )
            .await
            .expect("enqueueing");
        self.admin.batch_execute("ANALYZE jobs").await.unwrap();
    }

    async fn assert_empty(&self) {
        let left: i64 = self.admin.query_one("SELECT count(*) FROM jobs", &[]).await.unwrap().get(0);
        assert_eq!(left, 0, "the queue is empty");
    }

    /// The queue: `jobs` noop jobs claimed and completed by `k` concurrent claimers.
    async fn queue(&self, jobs: usize, k: usize) -> Run {
        self.fill(jobs).await;
        let mark = self.meter.start();
        let claimers: Vec<_> = (0..k)
            .map(|i| {
                let data = self.data.clone();
                tokio::spawn(async move {
                    let me = format!("bench-{i}");
                    let mut done = 0usize;
                    loop {
                        let claimed = data.claim_jobs(SHARD, &me, 1, LEASE).await.expect("claim_jobs");
                        let Some(job) = claimed.first() else { return done };
                        assert!(data.complete_job(job, &me).await.expect("complete_job"), "lease lost");
                        done += 1;
                    }
                })
            })
            .collect();
        let mut done = 0;
        for c in claimers {
            done += c.await.unwrap();
        }
        let run = self.meter.stop(mark, jobs);
        assert_eq!(done, jobs, "every job claimed and completed exactly once");
        self.assert_empty().await;
        run
    }

    /// The same drain with [`CLAIM_OR`] instead of the shipped claim, on plain
    /// connections (not a proposal's implementation: a measurement of what the
    /// statement alone would change).
    async fn queue_single_or(&self, jobs: usize, k: usize) -> Run {
        self.fill(jobs).await;
        let mark = self.meter.start();
        let claimers: Vec<_> = (0..k)
            .map(|i| {
                let c = self.conns[i].clone();
                let (claim, complete) = self.alt[i].clone();
                tokio::spawn(async move {
                    let me = format!("bench-{i}");
                    let lease = LEASE.as_secs_f64() * 1000.0;
                    let mut done = 0usize;
                    loop {
                        let rows = c.query(&claim, &[&me, &lease, &1_i64]).await.expect("claim");
                        let Some(row) = rows.first() else { return done };
                        let id: i64 = row.get(0);
                        assert!(c.query_opt(&complete, &[&id, &me]).await.unwrap().is_some(), "lease lost");
                        done += 1;
                    }
                })
            })
            .collect();
        let mut done = 0;
        for c in claimers {
            done += c.await.unwrap();
        }
        let run = self.meter.stop(mark, jobs);
        assert_eq!(done, jobs, "every job claimed and completed exactly once");
        self.assert_empty().await;
        run
    }

    /// An anchor: `jobs` jobs of two plain statements each, `k` connections.
    async fn anchor(&self, jobs: usize, k: usize, update: bool) -> Run {
        self.admin.batch_execute("VACUUM bench_anchor").await.unwrap();
        let left = Arc::new(AtomicI64::new(i64::try_from(jobs).unwrap()));
        let mark = self.meter.start();
        let tasks: Vec<_> = (0..k)
            .map(|i| {
                let (c, left) = (self.conns[i].clone(), left.clone());
                let stmt = if update { self.anchor_update[i].clone() } else { self.anchor_select[i].clone() };
                let id = i32::try_from(i).unwrap();
                tokio::spawn(async move {
                    while left.fetch_sub(1, Ordering::Relaxed) > 0 {
                        if update {
                            c.execute(&stmt, &[&id]).await.unwrap();
                            c.execute(&stmt, &[&id]).await.unwrap();
                        } else {
                            c.query_one(&stmt, &[]).await.unwrap();
                            c.query_one(&stmt, &[]).await.unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        self.meter.stop(mark, jobs)
    }

    /// A claim statement's plan with `jobs` ready jobs, for the report.
    async fn plan(&self, jobs: usize, claim: &str) -> String {
        self.fill(jobs).await;
        let claim = claim.replace("$1", "'explain'").replace("$2", "60000.0").replace("$3", "1");
        self.admin.batch_execute("BEGIN").await.unwrap();
        let rows = self.admin.query(&format!("EXPLAIN (ANALYZE, COSTS OFF) {claim}"), &[]).await.unwrap();
        self.admin.batch_execute("ROLLBACK; DELETE FROM jobs").await.unwrap();
        rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
    }
}

// ---------------------------------------------------------------- report

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ratio(x: f64) -> String {
    if x >= 10.0 { format!("{x:.0}×") } else { format!("{x:.2}×") }
}

fn us(x: f64) -> String {
    if x >= 100.0 { format!("{x:.0} µs") } else { format!("{x:.1} µs") }
}

#[derive(Default)]
struct Rounds {
    queue: Vec<Run>,
    single_or: Vec<Run>,
    update: Vec<Run>,
    select: Vec<Run>,
}

fn med(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    median(runs.iter().map(f).collect())
}

/// "median (min–max)" of a per-round ratio, the median in bold when `bold`.
fn ratios(a: &[Run], b: &[Run], f: impl Fn(&Run) -> f64, bold: bool) -> String {
    let v: Vec<f64> = a.iter().zip(b).map(|(a, b)| f(a) / f(b)).collect();
    let m = ratio(median(v.clone()));
    let m = if bold { format!("**{m}**") } else { m };
    if v.len() < 2 {
        return m;
    }
    let (lo, hi) = v.iter().fold((f64::INFINITY, 0.0_f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    format!("{m} ({}–{})", ratio(lo).trim_end_matches('×'), ratio(hi))
}

fn cpu(x: &Run) -> f64 {
    x.client_us + x.server_us
}

async fn bench(server: &Server, claimers: &[usize], rounds: usize) -> Vec<(usize, Rounds)> {
    let jobs = server.jobs;
    say(format!("{}: {}", server.label, server.settings));
    // Warm-up: open the pool's connections, prepare every statement, fill caches.
    for &k in claimers {
        server.queue(jobs.min(1000), k).await;
        server.queue_single_or(jobs.min(1000), k).await;
        server.anchor(jobs.min(1000), k, true).await;
        server.anchor(jobs.min(1000), k, false).await;
    }
    let mut results: Vec<(usize, Rounds)> = claimers.iter().map(|&k| (k, Rounds::default())).collect();
    for round in 1..=rounds {
        for (k, r) in &mut results {
            let k = *k;
            let select = server.anchor(jobs, k, false).await;
            let update = server.anchor(jobs, k, true).await;
            let queue = server.queue(jobs, k).await;
            let single_or = server.queue_single_or(jobs, k).await;
            say(format!(
                "{} round {round}/{rounds} K={k}: queue {:.0}/s, single-OR claim {:.0}/s, \
                 2 writes {:.0}/s, 2 × SELECT 1 {:.0}/s",
                server.label, queue.per_sec, single_or.per_sec, update.per_sec, select.per_sec
            ));
            r.queue.push(queue);
            r.single_or.push(single_or);
            r.update.push(update);
            r.select.push(select);
        }
    }
    results
}

fn table(server: &Server, results: &[(usize, Rounds)], rounds: usize) {
    println!(
        "**{}** ({}): {} jobs enqueued, then drained; median of {rounds} rounds, ratios as median \
         (lowest–highest round).\n",
        server.label, server.settings, server.jobs
    );
    println!(
        "| claimers | 2 × `SELECT 1` /s | anchor: 2 writes, jobs/s | **queue** jobs/s | **÷ anchor** | \
         single-OR claim (earlier, not shipped) jobs/s | ÷ anchor |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (k, r) in results {
        println!(
            "| {k} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {} |",
            med(&r.select, |x| x.per_sec),
            med(&r.update, |x| x.per_sec),
            med(&r.queue, |x| x.per_sec),
            ratios(&r.queue, &r.update, |x| x.per_sec, true),
            med(&r.single_or, |x| x.per_sec),
            ratios(&r.single_or, &r.update, |x| x.per_sec, false),
        );
    }
    println!();
    println!("CPU per job, client (this process) + server (all PostgreSQL processes):\n");
    println!(
        "| claimers | anchor: 2 writes | **queue** | **÷ anchor** | single-OR claim (earlier, not shipped) | ÷ anchor |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (k, r) in results {
        let split = |runs: &[Run]| {
            format!(
                "{} ({} + {})",
                us(med(runs, cpu)),
                us(med(runs, |x| x.client_us)),
                us(med(runs, |x| x.server_us))
            )
        };
        println!(
            "| {k} | {} | {} | {} | {} | {} |",
            split(&r.update),
            split(&r.queue),
            ratios(&r.queue, &r.update, cpu, true),
            split(&r.single_or),
            ratios(&r.single_or, &r.update, cpu, false),
        );
    }
    println!();
}

/// One claimer draining queues of growing depth: the claim's cost per job
/// against the backlog.
async fn depth_table(server: &Server, depths: &[usize]) {
    println!("One claimer, by backlog ({}; one run each):\n", server.label);
    println!(
        "| jobs enqueued | anchor: 2 writes, jobs/s | queue jobs/s | ÷ anchor | server CPU/job | \
         single-OR claim jobs/s | ÷ anchor | server CPU/job |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &depth in depths {
        let update = server.anchor(depth, 1, true).await;
        let queue = server.queue(depth, 1).await;
        let single_or = server.queue_single_or(depth, 1).await;
        say(format!(
            "backlog {depth}: queue {:.0}/s, single-OR {:.0}/s, anchor {:.0}/s",
            queue.per_sec, single_or.per_sec, update.per_sec
        ));
        println!(
            "| {depth} | {:.0} | {:.0} | {} | {} | {:.0} | {} | {} |",
            update.per_sec,
            queue.per_sec,
            ratio(queue.per_sec / update.per_sec),
            us(queue.server_us),
            single_or.per_sec,
            ratio(single_or.per_sec / update.per_sec),
            us(single_or.server_us),
        );
    }
    println!();
}

fn list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|k| k.trim().parse().ok())
        .filter(|&k| k > 0)
        .collect()
}

#[tokio::main]
async fn main() {
    let jobs = env_usize("BENCH_QUEUE_JOBS", 20_000);
    let durable_jobs = env_usize("BENCH_QUEUE_DURABLE_JOBS", 2_000);
    let rounds = env_usize("BENCH_ROUNDS", 3).max(1);
    let durable = env_usize("BENCH_QUEUE_DURABLE", 1) != 0;
    let claimers: Vec<usize> =
        list("BENCH_QUEUE_CLAIMERS", "1,4,16").into_iter().filter(|&k| k <= MAX_CLAIMERS).collect();
    let depths = list("BENCH_QUEUE_DEPTHS", "1000,5000,20000");
    let max_k = claimers.iter().copied().max().unwrap_or(1);

    say("starting testkit's PostgreSQL (fsync off)");
    let env = testkit::TestEnv::new().await;
    let fast = Server::new("testkit PostgreSQL, fsync off", &env.shards, jobs, max_k).await;
    let plan_shipped = fast.plan(jobs, CLAIM_SHIPPED).await;
    let plan_single_or = fast.plan(jobs, CLAIM_OR).await;
    let fast_results = bench(&fast, &claimers, rounds).await;

    let mut durable_server = None;
    if durable {
        say("starting a durable PostgreSQL (testkit::fresh_postgres)");
        let pg = testkit::fresh_postgres();
        // The queue benchmark needs no Redis; the URL is never used.
        let denv = testkit::TestEnv::on_servers(&pg, "redis://127.0.0.1:1".into()).await;
        let server = Server::new("durable PostgreSQL, fsync on", &denv.shards, durable_jobs, max_k).await;
        let results = bench(&server, &claimers, rounds).await;
        durable_server = Some((pg, server, results));
    }

    println!("### Job queue: claim + complete of empty jobs\n");
    table(&fast, &fast_results, rounds);
    if let Some((_pg, server, results)) = &durable_server {
        table(server, results, rounds);
    }
    if !depths.is_empty() {
        depth_table(&fast, &depths).await;
    }
    println!("Plans with {jobs} ready jobs (fsync-off server, `EXPLAIN (ANALYZE, COSTS OFF)`, limit 1):\n");
    println!("Shipped claim (`Data::claim_jobs`):\n\n```text\n{plan_shipped}\n```\n");
    println!("Single-OR claim (earlier, not shipped):\n\n```text\n{plan_single_or}\n```\n");
}
