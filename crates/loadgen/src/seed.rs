//! `millions seed`: a realistic social graph written straight into the shards.
//!
//! What it writes is what the API would have produced for the same users, follows and
//! posts: users rows with their counters, every follow edge on both sides
//! (`follows_out` on the follower's shard, `follows_in` on the followee's), posts with
//! time-ordered ids carrying their author's bucket, and `posts_count`,
//! `followers_count`, `following_count` equal to the rows written. Nothing is written
//! to Redis: home timelines are rebuilt from the database on first read, as after a
//! cache loss. No likes and no jobs are seeded (`like_count` is 0).
//!
//! The data, for `users = N`:
//! - users `user0` … `user{N-1}`, display names `User {i}`, all with the same
//!   password ([`SeedConfig::password`]) and therefore the same argon2id hash,
//!   computed once with OWASP's parameters (19 MiB, 2 passes, 1 lane) and a random
//!   salt. Sharing one hash is what makes a million users seedable in minutes; it is
//!   a seeding shortcut, never what the API does.
//! - user ids drawn like the API draws them (positive, at least 1,000,000, in the
//!   bucket of the name), but deterministically from [`SeedConfig::seed`] and
//!   distinct by construction.
//! - a power-law follower graph: user `i` follows `k_i` distinct others, `k_i` about
//!   exponential with mean [`SeedConfig::mean_follows`]; each followee is drawn by
//!   rank (rank = user index) from a Zipf distribution (exponent 1), and one draw in
//!   ten goes to one of the [`SeedConfig::celebrities`] (`user0` … `user{C-1}`) at
//!   random. The celebrities, most of all `user0`, hold a large share of all follower
//!   edges; the report says how large.
//! - posts: per user a Poisson number with mean [`SeedConfig::posts_per_user`],
//!   short captions, created over the 30 days before the seed started.
//!
//! Everything except timestamps is a function of the seed. Rows go in with `COPY` on
//! four connections per shard (one per table), all shards in parallel; each
//! connection's rows are one transaction, and the transactions commit only once every
//! `COPY` has succeeded, so a failed seed leaves the shards empty (short of a failure
//! between those commits). Then each loaded table is vacuumed and analyzed, as after
//! any bulk load, so the first queries find statistics and a visibility map. A seed goes in beside what the shards already hold (users
//! who signed up, an earlier seed of other names): it is refused, before anything is
//! written, only if one of the names it would create is taken.

use std::fmt;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use data::bulk;
use futures::SinkExt;
use sharding::{Bucket, PostId, ShardMap, fmix64, username_bucket};
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls};

/// The largest seed accepted.
pub const MAX_USERS: u64 = 100_000_000;
/// The largest mean number of posts per user accepted.
pub const MAX_POSTS_PER_USER: f64 = 1_000.0;
/// The largest mean number of follows per user accepted.
pub const MAX_MEAN_FOLLOWS: f64 = 10_000.0;
/// The share of followee draws that go to a celebrity, uniformly.
pub const CELEBRITY_DRAWS: f64 = 0.1;
/// The id epoch (2025-01-01), ms since the Unix epoch, as the sharding crate has it.
fn id_epoch_ms() -> u64 {
    PostId::from_parts(0, Bucket::new(0).expect("bucket 0 exists"), 0).unix_ms()
}

/// How far back seeded posts go.
pub const POST_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// What to seed.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedConfig {
    /// Number of users, `user0` … `user{users-1}`.
    pub users: u64,
    /// Mean number of posts per user.
    pub posts_per_user: f64,
    /// Mean number of users each user follows.
    pub mean_follows: f64,
    /// How many celebrities (`user0` … `user{celebrities-1}`) get the extra draws.
    pub celebrities: u64,
    /// The random seed: the same seed gives the same users, graph and posts.
    pub seed: u64,
    /// Every seeded user's password.
    pub password: String,
}

impl SeedConfig {
    /// The usual shape for `users` users: 3 posts and 20 follows (fewer if there are
    /// not that many other users) per user on average,
    /// one celebrity per 10,000 users (at least one), seed 1, password `password123`.
    pub fn new(users: u64) -> SeedConfig {
        SeedConfig {
            users,
            posts_per_user: 3.0,
            mean_follows: 20f64.min(users.saturating_sub(1) as f64),
            celebrities: (users / 10_000).max(1),
            seed: 1,
            password: "password123".to_owned(),
        }
    }

    /// Whether the configuration can be seeded; the error says what is wrong.
    pub fn validate(&self) -> Result<(), SeedError> {
        let bad = |m: String| Err(SeedError::InvalidConfig(m));
        if self.users < 2 {
            return bad(format!("users must be at least 2 (got {})", self.users));
        }
        if self.users > MAX_USERS {
            return bad(format!("users must be at most {MAX_USERS} (got {})", self.users));
        }
        if !self.posts_per_user.is_finite() || !(0.0..=MAX_POSTS_PER_USER).contains(&self.posts_per_user) {
            return bad(format!(
                "posts per user must be a number from 0 to {MAX_POSTS_PER_USER} (got {})",
                self.posts_per_user
            ));
        }
        if !self.mean_follows.is_finite() || !(0.0..=MAX_MEAN_FOLLOWS).contains(&self.mean_follows) {
            return bad(format!(
                "mean follows must be a number from 0 to {MAX_MEAN_FOLLOWS} (got {})",
                self.mean_follows
            ));
        }
        if self.mean_follows > (self.users - 1) as f64 {
            return bad(format!(
                "mean follows ({}) cannot exceed the number of other users ({})",
                self.mean_follows,
                self.users - 1
            ));
        }
        if self.celebrities > self.users {
            return bad(format!("celebrities ({}) cannot exceed users ({})", self.celebrities, self.users));
        }
        let len = self.password.chars().count();
        if !(8..=128).contains(&len) {
            return bad(format!("the password must be 8 to 128 characters (got {len}), as signup requires"));
        }
        Ok(())
    }
}

/// Rows written to one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardReport {
    /// `users` rows.
    pub users: u64,
    /// `follows_out` rows (edges whose follower lives here).
    pub follows_out: u64,
    /// `follows_in` rows (edges whose followee lives here).
    pub follows_in: u64,
    /// `posts` rows.
    pub posts: u64,
}

/// What a seed wrote.
#[derive(Debug, Clone)]
pub struct SeedReport {
    /// Users written.
    pub users: u64,
    /// Follow edges written (each as two rows).
    pub follows: u64,
    /// Posts written.
    pub posts: u64,
    /// Wall time, from validation to the last commit.
    pub elapsed: Duration,
    /// Rows per shard, in shard order.
    pub shards: Vec<ShardReport>,
    /// Number of celebrities (`user0` … `user{celebrities-1}`).
    pub celebrities: u64,
    /// Share of all follower edges held by the celebrities.
    pub celebrity_share: f64,
    /// Share of all follower edges held by the most-followed 1% of users (at least one).
    pub top_percent_share: f64,
    /// The largest follower count (that of `user0`, in practice).
    pub max_followers: u64,
}

impl SeedReport {
    /// Rows written per second, over every table and both sides of each edge.
    pub fn rows_per_sec(&self) -> f64 {
        let rows = self.users + 2 * self.follows + self.posts;
        rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for SeedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seeded {} users, {} follows, {} posts in {:.1}s ({:.0} rows/s); \
             the {} celebrities hold {:.1}% of follower edges, the top 1% {:.1}%, the top user {}",
            self.users,
            self.follows,
            self.posts,
            self.elapsed.as_secs_f64(),
            self.rows_per_sec(),
            self.celebrities,
            self.celebrity_share * 100.0,
            self.top_percent_share * 100.0,
            self.max_followers,
        )
    }
}

/// Why a seed did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The configuration is unusable; nothing was written.
    #[error("invalid seed configuration: {0}")]
    InvalidConfig(String),
    /// No shards were given; nothing was written.
    #[error("no shard databases to seed")]
    NoShards,
    /// A name the seed would create is taken (an earlier seed's); nothing was written.
    #[error(
        "shard {shard} already has the user `{name}` that this seed would create (an earlier \
         seed?): start from empty (`millions down --wipe`, then `millions up`) or seed fewer \
         users; nothing was written"
    )]
    NameTaken {
        /// The shard's index.
        shard: usize,
        /// A taken name.
        name: String,
    },
    /// A shard could not be reached or refused a statement.
    #[error("shard {shard}: {what}: {source}")]
    Database {
        /// The shard's index.
        shard: usize,
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Something else went wrong (hashing, a task).
    #[error("seeding failed: {0}")]
    Internal(String),
}

/// Seed `config` into the shards at `shard_urls` (mapped with `ShardMap::even`),
/// calling `progress` with a line now and then (about every tenth of the users).
pub async fn seed(
    shard_urls: &[String],
    config: &SeedConfig,
    progress: impl Fn(&str),
) -> Result<SeedReport, SeedError> {
    if shard_urls.is_empty() {
        return Err(SeedError::NoShards);
    }
    let map = ShardMap::even(shard_urls.len()).map_err(|e| SeedError::InvalidConfig(e.to_string()))?;
    seed_into(shard_urls, &map, config, progress).await
}

/// [`seed`] by the bucket directory `map` (a running topology's, where buckets
/// may have moved).
pub async fn seed_into(
    shard_urls: &[String],
    map: &ShardMap,
    config: &SeedConfig,
    progress: impl Fn(&str),
) -> Result<SeedReport, SeedError> {
    let started = Instant::now();
    config.validate()?;
    if shard_urls.is_empty() {
        return Err(SeedError::NoShards);
    }
    if map.shard_count() != shard_urls.len() {
        return Err(SeedError::InvalidConfig(format!(
            "the directory has {} shards, the URLs {}",
            map.shard_count(),
            shard_urls.len()
        )));
    }

    // Connect everything first: four writers per shard, and check emptiness.
    let mut clients = Vec::new();
    for (shard, url) in shard_urls.iter().enumerate() {
        let mut per_table = Vec::new();
        for _ in Table::ALL {
            per_table.push(connect(shard, url).await?);
        }
        clients.push(per_table);
    }
    // Seed beside what is there, but never over it: no name it creates may exist.
    let mut names: Vec<Vec<String>> = vec![Vec::new(); shard_urls.len()];
    for i in 0..config.users {
        let name = username(i);
        names[map.shard_of_username(&name).0 as usize].push(name);
    }
    for (shard, per_table) in clients.iter().enumerate() {
        let client = &per_table[0].0;
        let taken = client
            .query_opt(bulk::USERNAME_TAKEN_SQL, &[&names[shard]])
            .await
            .map_err(db(shard, "checking the names are free"))?;
        if let Some(row) = taken {
            return Err(SeedError::NameTaken { shard, name: row.get(0) });
        }
    }
    drop(names);

    progress(&format!("hashing the shared password (argon2id, OWASP parameters) for {} users", config.users));
    let password = config.password.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| SeedError::Internal(e.to_string()))??;

    // One writer task per shard and table, fed by the generator through a channel.
    let mut senders = Vec::new();
    let mut writers = Vec::new();
    for (shard, per_table) in clients.into_iter().enumerate() {
        let mut shard_senders = Vec::new();
        for (table, (client, conn)) in Table::ALL.into_iter().zip(per_table) {
            let (tx, rx) = mpsc::channel::<Bytes>(8);
            shard_senders.push(tx);
            writers.push(tokio::spawn(write_table(shard, table, client, conn, rx)));
        }
        senders.push(shard_senders);
    }

    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<String>();
    let gen_config = config.clone();
    let map = map.clone();
    let generator =
        tokio::task::spawn_blocking(move || generate(&gen_config, &map, &hash, senders, progress_tx));
    while let Some(line) = progress_rx.recv().await {
        progress(&line);
    }
    let generated = generator.await.map_err(|e| SeedError::Internal(e.to_string()))?;

    let mut open = Vec::new();
    let mut first_error = None;
    for w in writers {
        match w.await {
            Ok(Ok(o)) => open.push(o),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(SeedError::Internal(e.to_string()));
            }
        }
    }
    // A writer's error explains a stopped generator better than the generator can.
    if let Some(e) = first_error {
        return Err(e);
    }
    let stats = generated?;

    progress("committing");
    let commits = open.iter().map(|o| async move {
        o.client.batch_execute("COMMIT").await.map_err(db(o.shard, format!("committing {}", o.table.name())))
    });
    for r in futures::future::join_all(commits).await {
        r?;
    }
    // As `pgbench -i` and `pg_restore` do after a bulk load: vacuum (the
    // visibility map, so index-only scans skip the heap) and analyze (the
    // planner's statistics) each loaded table now, rather than leave it to
    // autovacuum in the first minutes of the load that follows.
    progress("vacuuming and analyzing the loaded tables");
    let vacuums = open.iter().map(|o| async move {
        let sql = format!("VACUUM (ANALYZE) {}", o.table.name());
        o.client.batch_execute(&sql).await.map_err(db(o.shard, format!("vacuuming {}", o.table.name())))
    });
    for r in futures::future::join_all(vacuums).await {
        r?;
    }
    let mut shards = vec![ShardReport::default(); shard_urls.len()];
    for o in open {
        let s = &mut shards[o.shard];
        match o.table {
            Table::Users => s.users = o.rows,
            Table::FollowsOut => s.follows_out = o.rows,
            Table::FollowsIn => s.follows_in = o.rows,
            Table::Posts => s.posts = o.rows,
        }
        drop(o.client);
        let _ = o.conn.await;
    }
    Ok(SeedReport {
        users: config.users,
        follows: stats.follows,
        posts: stats.posts,
        elapsed: started.elapsed(),
        shards,
        celebrities: config.celebrities,
        celebrity_share: stats.celebrity_share,
        top_percent_share: stats.top_percent_share,
        max_followers: stats.max_followers,
    })
}

/// The tables written, one `COPY` each per shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Users,
    FollowsOut,
    FollowsIn,
    Posts,
}

impl Table {
    const ALL: [Table; 4] = [Table::Users, Table::FollowsOut, Table::FollowsIn, Table::Posts];

    /// The table as the schema has it (`data` owns its name and columns; the
    /// generator writes each row's fields in the order of its columns).
    fn bulk(self) -> bulk::Table {
        match self {
            Table::Users => bulk::USERS,
            Table::FollowsOut => bulk::FOLLOWS_OUT,
            Table::FollowsIn => bulk::FOLLOWS_IN,
            Table::Posts => bulk::POSTS,
        }
    }

    fn name(self) -> &'static str {
        self.bulk().name()
    }

    fn copy_sql(self) -> &'static str {
        self.bulk().copy_sql()
    }
}

type Conn = tokio::task::JoinHandle<()>;

fn db(shard: usize, what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SeedError {
    let what = what.into();
    move |source| SeedError::Database { shard, what, source }
}

async fn connect(shard: usize, url: &str) -> Result<(Client, Conn), SeedError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(db(shard, "connecting"))?;
    let conn = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(shard, error = %e, "seed connection ended");
        }
    });
    client
        .batch_execute("SET synchronous_commit = off")
        .await
        .map_err(db(shard, "setting up the session"))?;
    Ok((client, conn))
}

/// A finished `COPY` whose transaction is still open.
struct Open {
    shard: usize,
    table: Table,
    client: Client,
    conn: Conn,
    rows: u64,
}

async fn write_table(
    shard: usize,
    table: Table,
    client: Client,
    conn: Conn,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<Open, SeedError> {
    let what = || format!("copying into {}", table.name());
    client.batch_execute("BEGIN").await.map_err(db(shard, what()))?;
    // No bucket move starts here until this copy commits; while none ever left
    // the shard, the copy skips the move-capture triggers (`data::bulk`).
    client.batch_execute(data::bulk::LOCK_MOVES_SQL).await.map_err(db(shard, what()))?;
    let skip: bool =
        client.query_one(data::bulk::MAY_SKIP_TRIGGERS_SQL, &[]).await.map_err(db(shard, what()))?.get(0);
    if skip {
        client.batch_execute(data::bulk::SKIP_TRIGGERS_SQL).await.map_err(db(shard, what()))?;
    }
    let mut rows = 0;
    if let Some(first) = rx.recv().await {
        let sink = client.copy_in::<_, Bytes>(table.copy_sql()).await.map_err(db(shard, what()))?;
        futures::pin_mut!(sink);
        sink.feed(first).await.map_err(db(shard, what()))?;
        while let Some(batch) = rx.recv().await {
            sink.feed(batch).await.map_err(db(shard, what()))?;
        }
        rows = sink.as_mut().finish().await.map_err(db(shard, what()))?;
    }
    Ok(Open { shard, table, client, conn, rows })
}

fn hash_password(password: &str) -> Result<String, SeedError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| SeedError::Internal(format!("salt: {e}")))?;
    // `Argon2::default()` is argon2id v1.3 with m = 19 MiB, t = 2, p = 1 (OWASP).
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SeedError::Internal(format!("hashing the password: {e}")))
}

// ---------------------------------------------------------------------------------
// Generation (on a blocking thread).

/// What the generator learned.
struct Stats {
    follows: u64,
    posts: u64,
    celebrity_share: f64,
    top_percent_share: f64,
    max_followers: u64,
}

/// The generator stopped because a writer went away (its error says why).
const WRITER_GONE: &str = "a writer stopped";

/// Buffered rows per shard and table, sent in batches.
struct Out {
    senders: Vec<Vec<mpsc::Sender<Bytes>>>,
    bufs: Vec<Vec<Vec<u8>>>,
}

const BATCH_BYTES: usize = 256 * 1024;

impl Out {
    fn new(senders: Vec<Vec<mpsc::Sender<Bytes>>>) -> Out {
        let bufs =
            senders.iter().map(|s| s.iter().map(|_| Vec::with_capacity(BATCH_BYTES)).collect()).collect();
        Out { senders, bufs }
    }

    fn buf(&mut self, shard: usize, table: Table) -> &mut Vec<u8> {
        &mut self.bufs[shard][table as usize]
    }

    /// Send the buffer if it is full enough.
    fn maybe_flush(&mut self, shard: usize, table: Table) -> Result<(), SeedError> {
        if self.bufs[shard][table as usize].len() >= BATCH_BYTES {
            self.flush(shard, table)?;
        }
        Ok(())
    }

    fn flush(&mut self, shard: usize, table: Table) -> Result<(), SeedError> {
        let buf = std::mem::replace(&mut self.bufs[shard][table as usize], Vec::with_capacity(BATCH_BYTES));
        if buf.is_empty() {
            return Ok(());
        }
        self.senders[shard][table as usize]
            .blocking_send(Bytes::from(buf))
            .map_err(|_| SeedError::Internal(WRITER_GONE.to_owned()))
    }

    fn flush_all(&mut self) -> Result<(), SeedError> {
        for shard in 0..self.senders.len() {
            for table in Table::ALL {
                self.flush(shard, table)?;
            }
        }
        Ok(())
    }
}

/// RNG streams per user.
const STREAM_FOLLOW_COUNT: u64 = 1;
const STREAM_FOLLOWEES: u64 = 2;
const STREAM_POST_COUNT: u64 = 3;
const STREAM_POSTS: u64 = 4;
const STREAM_USER: u64 = 5;

/// Ids of the most-followed ranks are cached; others are recomputed.
const ID_CACHE: u64 = 1 << 20;

struct Gen<'a> {
    config: &'a SeedConfig,
    map: &'a ShardMap,
    id_key: u64,
    id_cache: Vec<i64>,
    /// `[window start, window end)` of post times, ms since the Unix epoch.
    window: (u64, u64),
}

impl Gen<'_> {
    fn id_of(&self, i: u64) -> i64 {
        match self.id_cache.get(i as usize) {
            Some(id) => *id,
            None => seeded_user_id(self.id_key, i, username_bucket(&username(i))),
        }
    }

    fn shard_of(&self, id: i64) -> usize {
        self.map.shard_of_user(id).0 as usize
    }

    fn rng(&self, i: u64, stream: u64) -> SplitMix64 {
        SplitMix64::new(self.config.seed, i, stream)
    }

    fn follow_count(&self, i: u64) -> u64 {
        follow_count(&mut self.rng(i, STREAM_FOLLOW_COUNT), self.config.mean_follows, self.config.users)
    }

    fn post_count(&self, i: u64) -> u64 {
        post_count(&mut self.rng(i, STREAM_POST_COUNT), self.config.posts_per_user)
    }
}

fn generate(
    config: &SeedConfig,
    map: &ShardMap,
    hash: &str,
    senders: Vec<Vec<mpsc::Sender<Bytes>>>,
    progress: mpsc::UnboundedSender<String>,
) -> Result<Stats, SeedError> {
    let n = config.users;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let end = now_ms.saturating_sub(60_000).max(id_epoch_ms() + POST_WINDOW.as_millis() as u64);
    let id_key = SplitMix64::new(config.seed, u64::MAX, 0).next_u64();
    let mut g = Gen {
        config,
        map,
        id_key,
        id_cache: Vec::new(),
        window: (end - POST_WINDOW.as_millis() as u64, end),
    };
    g.id_cache =
        (0..n.min(ID_CACHE)).map(|i| seeded_user_id(id_key, i, username_bucket(&username(i)))).collect();
    let mut out = Out::new(senders);
    let step = (n / 10).max(1);
    let say = |m: String| {
        let _ = progress.send(m);
    };

    // Pass 1: follow edges (both sides) and posts, counting followers. The edges
    // are kept and written after both passes, each shard's sorted by its primary
    // key: user ids are random, so edges in generation order land at random
    // places of their tables' primary-key indexes, and once the indexes outgrow
    // memory every insert is a random page read; in key order each insert goes
    // to the index's right edge (as `pgbench -i`'s keys do). 16 bytes an edge
    // per side: 640 MB for a million users' 20 million follows.
    let shards = map.shard_count();
    let mut edges_out: Vec<Vec<(i64, i64)>> = vec![Vec::new(); shards];
    let mut edges_in: Vec<Vec<(i64, i64)>> = vec![Vec::new(); shards];
    let mut followers = vec![0u32; n as usize];
    let mut bucket_posts = vec![0u32; sharding::BUCKETS as usize];
    let mut chosen = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let (mut follows, mut posts) = (0u64, 0u64);
    for i in 0..n {
        if i % step == 0 {
            say(format!("follows and posts: {i}/{n} users"));
        }
        let id = g.id_of(i);
        let shard = g.shard_of(id);
        let k = g.follow_count(i);
        choose_followees(
            &mut g.rng(i, STREAM_FOLLOWEES),
            i,
            k,
            n,
            config.celebrities,
            &mut seen,
            &mut chosen,
        );
        for &j in &chosen {
            let fid = g.id_of(j);
            let fshard = g.shard_of(fid);
            followers[j as usize] += 1;
            edges_out[shard].push((id, fid));
            edges_in[fshard].push((fid, id));
        }
        follows += k;

        let count = g.post_count(i);
        let bucket = sharding::user_bucket(id);
        let mut rng = g.rng(i, STREAM_POSTS);
        for _ in 0..count {
            let c = &mut bucket_posts[bucket.get() as usize];
            if *c >= 1 << 20 {
                return Err(SeedError::InvalidConfig(
                    "too many posts per bucket (more than 2^20): lower users or posts per user".to_owned(),
                ));
            }
            // Unique by construction within the bucket: the bucket's post counter is
            // spread over the sequence (low 10 bits) and the millisecond (low 10 bits).
            let at = g.window.0 + rng.below(g.window.1 - g.window.0);
            let since = ((at - id_epoch_ms()) & !1023) | u64::from(*c >> 10);
            let post = PostId::from_parts(since, bucket, (*c & 1023) as u16);
            *c += 1;
            let buf = out.buf(shard, Table::Posts);
            let _ = write!(buf, "{}\t{id}\t", post.get());
            caption(&mut rng, buf);
            buf.extend_from_slice(b"\t0\t");
            timestamp(id_epoch_ms() + since, buf);
            buf.push(b'\n');
            out.maybe_flush(shard, Table::Posts)?;
        }
        posts += count;
    }
    say(format!("follows and posts: {n}/{n} users ({follows} follows, {posts} posts)"));

    // Pass 2: users, with their counters.
    for i in 0..n {
        if i % step == 0 {
            say(format!("users: {i}/{n}"));
        }
        let id = g.id_of(i);
        let shard = g.shard_of(id);
        let created = g.window.0 - 1 - SplitMix64::new(config.seed, i, STREAM_USER).below(335 * 86_400_000);
        let buf = out.buf(shard, Table::Users);
        let _ = write!(buf, "{id}\tuser{i}\tUser {i}\t");
        escape(hash, buf);
        let _ = write!(buf, "\t{}\t{}\t{}\t", followers[i as usize], g.follow_count(i), g.post_count(i));
        timestamp(created, buf);
        buf.push(b'\n');
        out.maybe_flush(shard, Table::Users)?;
    }
    say(format!("users: {n}/{n}"));
    say("follows: sorting each shard's edges by key".to_owned());
    // Every (shard, side) stream, sorted; then written a batch of each in turn,
    // so that every shard's two writers stay busy at once.
    let mut streams: Vec<(usize, Table, Edges)> = Vec::new();
    for (table, edges) in [(Table::FollowsOut, edges_out), (Table::FollowsIn, edges_in)] {
        for (shard, mut edges) in edges.into_iter().enumerate() {
            edges.sort_unstable();
            streams.push((shard, table, edges.into_iter()));
        }
    }
    while !streams.is_empty() {
        streams.retain_mut(|(shard, table, edges)| {
            let buf = out.buf(*shard, *table);
            while buf.len() < BATCH_BYTES {
                let Some((a, b)) = edges.next() else { return false };
                let _ = writeln!(buf, "{a}\t{b}");
            }
            true
        });
        for shard in 0..shards {
            for table in [Table::FollowsOut, Table::FollowsIn] {
                out.maybe_flush(shard, table)?;
            }
        }
    }
    out.flush_all()?;

    let total: u64 = followers.iter().map(|&f| u64::from(f)).sum();
    let share = |held: u64| if total == 0 { 0.0 } else { held as f64 / total as f64 };
    let celebrity_share = share(followers[..config.celebrities as usize].iter().map(|&f| u64::from(f)).sum());
    let top = (n / 100).max(1) as usize;
    followers.select_nth_unstable_by(top - 1, |a, b| b.cmp(a));
    let top_percent_share = share(followers[..top].iter().map(|&f| u64::from(f)).sum());
    let max_followers = u64::from(followers[..top].iter().copied().max().unwrap_or(0));
    Ok(Stats { follows, posts, celebrity_share, top_percent_share, max_followers })
}

/// One shard's follow edges of one side, in key order, as they are written.
type Edges = std::vec::IntoIter<(i64, i64)>;

/// The seeded name of user `i`.
pub fn username(i: u64) -> String {
    format!("user{i}")
}

/// How many users user `i` follows: 1 + exponential with mean `mean - 1` (so the mean
/// is `mean`), at most ten times the mean and never more than the other users.
fn follow_count(rng: &mut SplitMix64, mean: f64, users: u64) -> u64 {
    let k = if mean < 1.0 {
        u64::from(rng.unit() < mean)
    } else {
        1 + (-(mean - 1.0) * (1.0 - rng.unit()).ln()).round() as u64
    };
    k.min((10.0 * mean).ceil() as u64).min(users - 1)
}

/// A Poisson number with mean `mean` (a rounded normal above 50), at most
/// `4 * mean + 20`.
fn post_count(rng: &mut SplitMix64, mean: f64) -> u64 {
    let n = if mean <= 0.0 {
        0
    } else if mean < 50.0 {
        let limit = (-mean).exp();
        let mut p = rng.unit();
        let mut k = 0;
        while p > limit {
            p *= rng.unit();
            k += 1;
        }
        k
    } else {
        let (u1, u2) = (1.0 - rng.unit(), rng.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (mean + z * mean.sqrt()).round().max(0.0) as u64
    };
    n.min((4.0 * mean) as u64 + 20)
}

/// `k` distinct followees of user `i` (never `i`), into `chosen`.
fn choose_followees(
    rng: &mut SplitMix64,
    i: u64,
    k: u64,
    n: u64,
    celebrities: u64,
    seen: &mut std::collections::HashSet<u64>,
    chosen: &mut Vec<u64>,
) {
    seen.clear();
    chosen.clear();
    let ln_n = ((n + 1) as f64).ln();
    let mut attempts = 0;
    while (chosen.len() as u64) < k && attempts < 8 * k + 64 {
        attempts += 1;
        let j = if celebrities > 0 && rng.unit() < CELEBRITY_DRAWS {
            rng.below(celebrities)
        } else {
            // Zipf with exponent 1 over ranks, by the continuous inverse CDF.
            ((ln_n * rng.unit()).exp() as u64).saturating_sub(1).min(n - 1)
        };
        if j != i && seen.insert(j) {
            chosen.push(j);
        }
    }
    // Rarely (small graphs, heavy followers): fill up from a random point.
    let mut j = rng.below(n);
    while (chosen.len() as u64) < k {
        if j != i && seen.insert(j) {
            chosen.push(j);
        }
        j = (j + 1) % n;
    }
}

const WORDS: &[&str] = &[
    "sunset",
    "coffee",
    "morning",
    "city",
    "beach",
    "mountains",
    "friends",
    "dinner",
    "my",
    "new",
    "cat",
    "dog",
    "walk",
    "rain",
    "light",
    "weekend",
    "trip",
    "home",
    "garden",
    "street",
    "art",
    "music",
    "night",
    "sky",
    "river",
    "snow",
    "summer",
    "autumn",
    "lunch",
    "view",
    "the",
    "best",
    "day",
    "ever",
    "again",
];

/// A short caption: three to seven words.
fn caption(rng: &mut SplitMix64, buf: &mut Vec<u8>) {
    let words = 3 + rng.below(5);
    for w in 0..words {
        if w > 0 {
            buf.push(b' ');
        }
        buf.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
    }
}

/// `s` escaped for `COPY ... FROM STDIN` text format.
fn escape(s: &str, buf: &mut Vec<u8>) {
    for b in s.bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            _ => buf.push(b),
        }
    }
}

/// `unix_ms` as a UTC timestamp PostgreSQL reads: `2026-01-02 03:04:05.678+00`.
fn timestamp(unix_ms: u64, buf: &mut Vec<u8>) {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        buf,
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}+00",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix_ms % 1000
    );
}

/// The id of seeded user `i`, whose name's bucket is `bucket`: positive, at least
/// 1,000,000, with `user_bucket(id) == bucket`, and distinct for distinct `i`
/// (below 2^44): `fmix64(id)` is `round << 56 | perm(i) << 12 | bucket` for the first
/// `round` giving an id in range, and `fmix64` is a bijection.
pub fn seeded_user_id(key: u64, i: u64, bucket: Bucket) -> i64 {
    const MASK44: u64 = (1 << 44) - 1;
    let perm = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ key) & MASK44;
    for round in 0..256u64 {
        let h = (round << 56) | (perm << 12) | u64::from(bucket.get());
        let id = fmix64_inverse(h) as i64;
        if id >= 1_000_000 {
            return id;
        }
    }
    // Each round succeeds with probability ~1/2: 256 failures do not happen.
    unreachable!("no user id in 256 rounds")
}

/// The inverse of a multiplication by odd `a` modulo 2^64 (Newton's iteration).
const fn mul_inverse(a: u64) -> u64 {
    let mut x = a;
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// The inverse of [`sharding::fmix64`].
pub fn fmix64_inverse(mut k: u64) -> u64 {
    const INV1: u64 = mul_inverse(0xff51_afd7_ed55_8ccd);
    const INV2: u64 = mul_inverse(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k = k.wrapping_mul(INV2);
    k ^= k >> 33;
    k = k.wrapping_mul(INV1);
    k ^= k >> 33;
    k
}

/// A small, fast, seedable generator (SplitMix64), one per user and purpose, so any
/// user's rows can be regenerated on their own.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64, i: u64, stream: u64) -> SplitMix64 {
        SplitMix64(fmix64(
            seed ^ fmix64(i.wrapping_add(0x9E37_79B9_7F4A_7C15)) ^ fmix64(stream.wrapping_mul(31) + 7),
        ))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sharding::user_bucket;

    #[test]
    fn fmix64_inverse_inverts() {
        for k in [0u64, 1, 42, u64::MAX, 0x1234_5678_9abc_def0] {
            assert_eq!(fmix64_inverse(fmix64(k)), k);
            assert_eq!(fmix64(fmix64_inverse(k)), k);
        }
    }

    #[test]
    fn seeded_ids_are_in_the_name_bucket_and_distinct() {
        let mut ids = std::collections::HashSet::new();
        for i in 0..20_000 {
            let b = username_bucket(&username(i));
            let id = seeded_user_id(77, i, b);
            assert_eq!(user_bucket(id), b);
            assert!(id >= 1_000_000);
            assert!(ids.insert(id));
        }
    }

    #[test]
    fn timestamps_are_formatted() {
        let mut b = Vec::new();
        timestamp(id_epoch_ms() + 86_400_000 + 3_723_456, &mut b);
        assert_eq!(String::from_utf8(b).unwrap(), "2025-01-02 01:02:03.456+00");
        let mut b = Vec::new();
        timestamp(951_782_400_000, &mut b); // 2000-02-29
        assert_eq!(String::from_utf8(b).unwrap(), "2000-02-29 00:00:00.000+00");
    }

    #[test]
    fn followees_are_distinct_and_exact() {
        let (mut seen, mut chosen) = (Default::default(), Vec::new());
        for (i, k, n) in [(0u64, 1u64, 2u64), (3, 9, 10), (5, 20, 2000), (1, 99, 100)] {
            choose_followees(&mut SplitMix64::new(1, i, 2), i, k, n, 1, &mut seen, &mut chosen);
            assert_eq!(chosen.len() as u64, k);
            assert!(!chosen.contains(&i));
            let set: std::collections::HashSet<_> = chosen.iter().collect();
            assert_eq!(set.len(), chosen.len());
        }
    }

    #[test]
    fn counts_have_their_means() {
        let mut rng = SplitMix64::new(9, 0, 0);
        let n = 100_000;
        let follows: u64 = (0..n).map(|_| follow_count(&mut rng, 20.0, 1_000_000)).sum();
        let posts: u64 = (0..n).map(|_| post_count(&mut rng, 3.0)).sum();
        let (f, p) = (follows as f64 / n as f64, posts as f64 / n as f64);
        assert!((f - 20.0).abs() < 0.5, "{f}");
        assert!((p - 3.0).abs() < 0.1, "{p}");
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(SeedConfig::new(2).validate().is_ok());
        for bad in [
            SeedConfig::new(0),
            SeedConfig::new(1),
            SeedConfig::new(MAX_USERS + 1),
            SeedConfig { posts_per_user: f64::NAN, ..SeedConfig::new(100) },
            SeedConfig { mean_follows: f64::INFINITY, ..SeedConfig::new(100) },
            SeedConfig { mean_follows: -1.0, ..SeedConfig::new(100) },
            SeedConfig { mean_follows: 100.0, ..SeedConfig::new(100) },
            SeedConfig { celebrities: 101, ..SeedConfig::new(100) },
            SeedConfig { password: "short".into(), ..SeedConfig::new(100) },
        ] {
            assert!(matches!(bad.validate(), Err(SeedError::InvalidConfig(_))), "{bad:?}");
        }
    }
}
