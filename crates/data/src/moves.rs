//! Moving buckets from one shard to another while they take writes: the steps
//! the controller runs, each on the source's and the target's primaries
//! (ADR 0020).
//!
//! The steps, in order, each safe to run again after a crash:
//! 1. [`begin_capture`]: the source lists the buckets in `bucket_moves`; from
//!    then on every row written in them leaves its key in `bucket_changes`
//!    (migration V5's trigger). It returns once every transaction that may have
//!    written without being captured has ended.
//! 2. [`copy`]: every row of the buckets, read in one snapshot of the source,
//!    written to the target (each batch replacing what the target had under
//!    the same keys).
//! 3. [`catch_up`]: each captured key's current row on the source (or its
//!    absence) written to the target, then the key forgotten. Run until little
//!    is left.
//! 4. [`fence`]: writes to the buckets refused on the source (SQLSTATE MB001,
//!    retried by the data layer against the new owner); returns once every
//!    transaction that wrote unfenced has ended. Then a last [`catch_up`]
//!    leaves nothing behind.
//! 5. [`move_jobs`]: the buckets' queued jobs inserted on the target under new
//!    ids, marked done there in the same transaction, then deleted from the
//!    source. From here on the move can only go forward.
//! 6. [`adopt`] on the target lifts what an earlier move away from it left
//!    (the buckets marked gone there); the controller publishes the new
//!    directory; once every process follows it, [`drop_source`] deletes the
//!    buckets' rows from the source and marks them gone there: writes to them
//!    stay refused, so a process still holding an old map cannot write where no
//!    one reads.
//!
//! Before step 5, [`abandon`] rolls a move back: the target's copies deleted, the
//! source's capture and fence lifted.
//!
//! This module is the only code besides the entity modules that touches the
//! application's tables, and it touches them only through these steps.

use std::time::{Duration, Instant};

use serde_json::Value;
use sharding::Bucket;
pub use tokio_postgres::Client;
use tokio_postgres::IsolationLevel;

/// The tables whose rows belong to a bucket through their `user_id`, with the
/// columns of their primary key. `jobs` is apart: it moves at the cutover.
const TABLES: &[(&str, &[&str])] = &[
    ("users", &["user_id"]),
    ("follows_out", &["user_id", "followee_id"]),
    ("follows_in", &["user_id", "follower_id"]),
    ("posts", &["post_id"]),
    ("likes", &["post_id", "liker_id"]),
    ("sessions", &["token_hash"]),
    ("notifications", &["user_id", "dedup"]),
    ("comments", &["comment_id"]),
    ("comment_counts", &["post_id", "comment_id"]),
];

/// The rows of `table` (aliased `t`) owned by the users `$1` (a `bigint[]`):
/// found through each table's index on its owner (a like through its post's),
/// rather than by hashing every row's owner into its bucket.
fn owned_by(table: &str) -> &'static str {
    match table {
        "likes" | "comment_counts" => "t.post_id IN (SELECT post_id FROM posts WHERE user_id = ANY($1))",
        _ => "t.user_id = ANY($1)",
    }
}

/// The users of the buckets on one side: every row of a bucket belongs to one
/// of them (no user is ever deleted while rows of theirs remain).
async fn users_of<C: tokio_postgres::GenericClient>(
    c: &C,
    buckets: &[i32],
    step: &'static str,
    side: &'static str,
) -> Result<Vec<i64>, MoveError> {
    let rows = c
        .query("SELECT user_id FROM users WHERE millions_bucket(user_id) = ANY($1)", &[&buckets])
        .await
        .map_err(sql(step, side))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Every table with rows of a bucket, in an order that deletes a like before the
/// post it is found through.
const DELETE_ORDER: &[&str] = &[
    "likes",
    "comment_counts",
    "posts",
    "comments",
    "users",
    "follows_out",
    "follows_in",
    "sessions",
    "notifications",
    "jobs",
];

/// Delete the rows of the users `users` from every table, in one transaction
/// (with the mover's marks set on `c`); how many.
async fn delete_owned(
    c: &mut Client,
    users: &[i64],
    step: &'static str,
    side: &'static str,
) -> Result<u64, MoveError> {
    let tx = c.transaction().await.map_err(sql(step, side))?;
    let mut deleted = 0;
    for &table in DELETE_ORDER {
        deleted += tx
            .execute(&format!("DELETE FROM {table} t WHERE {}", owned_by(table)), &[&users])
            .await
            .map_err(sql(step, side))?;
    }
    tx.commit().await.map_err(sql(step, side))?;
    Ok(deleted)
}

/// Rows per batch of [`copy`] and keys per round of [`catch_up`].
const BATCH: i32 = 2_000;

/// The SQLSTATE a fenced bucket's writes get.
pub const FENCED_SQLSTATE: &str = "MB001";

/// Why a step of a move failed.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// A statement failed on one side.
    #[error("{step} on the {side}: {}", crate::error::describe(source))]
    Sql {
        /// The step that failed.
        step: &'static str,
        /// `source` or `target`.
        side: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A bucket is already being moved by another move, or is no longer on
    /// the source.
    #[error("bucket {bucket} is already being moved or moved away (move {other})")]
    AlreadyMoving {
        /// The bucket.
        bucket: u16,
        /// The move that holds it.
        other: i64,
    },
    /// Transactions older than the step did not end in time.
    #[error("{step}: transactions older than it still run after {waited:?} (one is idle in a transaction?)")]
    OldTransactions {
        /// The step that waited.
        step: &'static str,
        /// How long it waited.
        waited: Duration,
    },
}

impl MoveError {
    /// Whether the same step may succeed if run again (a connection lost, a
    /// primary restarting, old transactions) rather than never.
    pub fn is_retryable(&self) -> bool {
        match self {
            // A connection lost, a server shutting down or starting up (a crash,
            // a failover), a transaction rolled back, resources short, or a
            // primary turned read-only (demoted): a later attempt may succeed.
            MoveError::Sql { source, .. } => match source.code() {
                None => true,
                Some(code) => {
                    let code = code.code();
                    ["08", "40", "53", "57"].iter().any(|class| code.starts_with(class)) || code == "25006"
                }
            },
            MoveError::AlreadyMoving { .. } => false,
            MoveError::OldTransactions { .. } => true,
        }
    }
}

/// A move as the steps see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The controller's id for the move, recorded beside its buckets and changes.
    pub id: i64,
    /// The buckets that move.
    pub buckets: Vec<Bucket>,
}

impl Move {
    /// The buckets as the statements take them.
    fn bucket_param(&self) -> Vec<i32> {
        self.buckets.iter().map(|b| i32::from(b.get())).collect()
    }
}

/// What [`copy`] or [`catch_up`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Rows written to the target.
    pub rows: u64,
    /// Keys deleted on the target because the source no longer has them.
    pub deleted: u64,
    /// Captured changes consumed (catch-up only).
    pub changes: u64,
}

fn sql(step: &'static str, side: &'static str) -> impl FnOnce(tokio_postgres::Error) -> MoveError {
    move |source| MoveError::Sql { step, side, source }
}

/// Mark this session as the mover's: the capture trigger lets its writes pass
/// (they are the move itself).
async fn as_mover(c: &Client, step: &'static str, side: &'static str) -> Result<(), MoveError> {
    c.batch_execute("SET millions.mover = 'on'").await.map_err(sql(step, side))
}

/// Step 1: list the buckets as moving on the source, so that their writes are
/// captured, then wait (up to `wait`) until no transaction that started before
/// is still running. Running it again for the same move changes nothing.
pub async fn begin_capture(source: &Client, m: &Move, wait: Duration) -> Result<(), MoveError> {
    const STEP: &str = "begin capture";
    let held = source
        .query(
            "SELECT bucket, move_id FROM bucket_moves WHERE bucket = ANY($1) AND (move_id <> $2 OR gone)",
            &[&m.bucket_param(), &m.id],
        )
        .await
        .map_err(sql(STEP, "source"))?;
    if let Some(row) = held.first() {
        return Err(MoveError::AlreadyMoving { bucket: row.get::<_, i32>(0) as u16, other: row.get(1) });
    }
    source
        .execute(
            "INSERT INTO bucket_moves (bucket, move_id) SELECT b, $2 FROM unnest($1::int[]) b \
             ON CONFLICT (bucket) DO NOTHING",
            &[&m.bucket_param(), &m.id],
        )
        .await
        .map_err(sql(STEP, "source"))?;
    wait_for_older_transactions(source, STEP, wait).await
}

/// Wait until every transaction that had a transaction id before this call
/// has ended: what a writer did before a change to `bucket_moves` became
/// visible to it is then committed or gone.
async fn wait_for_older_transactions(
    c: &Client,
    step: &'static str,
    wait: Duration,
) -> Result<(), MoveError> {
    let now: i64 = c
        .query_one("SELECT pg_current_xact_id()::text::bigint", &[])
        .await
        .map_err(sql(step, "source"))?
        .get(0);
    let started = Instant::now();
    loop {
        let oldest: i64 = c
            .query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint", &[])
            .await
            .map_err(sql(step, "source"))?
            .get(0);
        if oldest >= now {
            return Ok(());
        }
        if started.elapsed() >= wait {
            return Err(MoveError::OldTransactions { step, waited: started.elapsed() });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Step 2: every row of the buckets, from one snapshot of the source, written to
/// the target.
pub async fn copy(source: &mut Client, target: &mut Client, m: &Move) -> Result<Copied, MoveError> {
    const STEP: &str = "copy";
    as_mover(target, STEP, "target").await?;
    let buckets = m.bucket_param();
    let tx = source
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(sql(STEP, "source"))?;
    let mut copied = Copied::default();
    let users = users_of(&tx, &buckets, STEP, "source").await?;
    for &(table, key) in TABLES {
        let stmt = tx
            .prepare(&format!("SELECT to_jsonb(t) FROM {table} t WHERE {}", owned_by(table)))
            .await
            .map_err(sql(STEP, "source"))?;
        let portal = tx.bind(&stmt, &[&users]).await.map_err(sql(STEP, "source"))?;
        loop {
            let rows = tx.query_portal(&portal, BATCH).await.map_err(sql(STEP, "source"))?;
            if rows.is_empty() {
                break;
            }
            let values: Vec<Value> = rows.iter().map(|r| r.get(0)).collect();
            replace(target, table, key, &Value::Array(values.clone()), &Value::Array(values), STEP).await?;
            copied.rows += rows.len() as u64;
            if rows.len() < BATCH as usize {
                break;
            }
        }
    }
    tx.commit().await.map_err(sql(STEP, "source"))?;
    Ok(copied)
}

/// On the target, in one transaction: delete the rows under `keys` (a JSON
/// array of objects holding the key columns), then insert `rows` (a JSON array
/// of whole rows). Returns how many rows were deleted beyond those re-inserted.
async fn replace(
    target: &mut Client,
    table: &str,
    key: &[&str],
    keys: &Value,
    rows: &Value,
    step: &'static str,
) -> Result<u64, MoveError> {
    let on = key.iter().map(|k| format!("t.{k} = k.{k}")).collect::<Vec<_>>().join(" AND ");
    let tx = target.transaction().await.map_err(sql(step, "target"))?;
    let deleted = tx
        .execute(
            &format!("DELETE FROM {table} t USING jsonb_populate_recordset(NULL::{table}, $1) k WHERE {on}"),
            &[keys],
        )
        .await
        .map_err(sql(step, "target"))?;
    let inserted = tx
        .execute(
            &format!("INSERT INTO {table} SELECT * FROM jsonb_populate_recordset(NULL::{table}, $1)"),
            &[rows],
        )
        .await
        .map_err(sql(step, "target"))?;
    tx.commit().await.map_err(sql(step, "target"))?;
    Ok(deleted.saturating_sub(inserted))
}

/// Step 3: consume the captured changes, oldest first, until none is left: each
/// key's current row on the source (or its absence) written to the target, then
/// the change deleted on the source. Returns what was done.
pub async fn catch_up(source: &mut Client, target: &mut Client, m: &Move) -> Result<Copied, MoveError> {
    const STEP: &str = "catch up";
    as_mover(target, STEP, "target").await?;
    let mut done = Copied::default();
    loop {
        let changes = source
            .query(
                "SELECT seq, tbl, key FROM bucket_changes WHERE move_id = $1 ORDER BY seq LIMIT $2",
                &[&m.id, &i64::from(BATCH)],
            )
            .await
            .map_err(sql(STEP, "source"))?;
        if changes.is_empty() {
            return Ok(done);
        }
        let seqs: Vec<i64> = changes.iter().map(|r| r.get(0)).collect();
        for &(table, key) in TABLES {
            let keys: Vec<Value> =
                changes.iter().filter(|r| r.get::<_, &str>(1) == table).map(|r| r.get(2)).collect();
            if keys.is_empty() {
                continue;
            }
            let on = key.iter().map(|k| format!("t.{k} = k.{k}")).collect::<Vec<_>>().join(" AND ");
            let keys = Value::Array(keys);
            let rows: Vec<Value> = source
                .query(
                    &format!(
                        "SELECT to_jsonb(t) FROM {table} t \
                         WHERE EXISTS (SELECT 1 FROM jsonb_populate_recordset(NULL::{table}, $1) k WHERE {on})"
                    ),
                    &[&keys],
                )
                .await
                .map_err(sql(STEP, "source"))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            done.rows += rows.len() as u64;
            done.deleted += replace(target, table, key, &keys, &Value::Array(rows), STEP).await?;
        }
        source
            .execute("DELETE FROM bucket_changes WHERE seq = ANY($1)", &[&seqs])
            .await
            .map_err(sql(STEP, "source"))?;
        done.changes += seqs.len() as u64;
    }
}

/// How many captured changes wait for [`catch_up`].
pub async fn backlog(source: &Client, m: &Move) -> Result<u64, MoveError> {
    let n: i64 = source
        .query_one("SELECT count(*) FROM bucket_changes WHERE move_id = $1", &[&m.id])
        .await
        .map_err(sql("backlog", "source"))?
        .get(0);
    Ok(n as u64)
}

/// Step 4: refuse writes to the buckets on the source, then wait (up to `wait`)
/// until every transaction that may have written unfenced has ended.
pub async fn fence(source: &Client, m: &Move, wait: Duration) -> Result<(), MoveError> {
    const STEP: &str = "fence";
    source
        .execute("UPDATE bucket_moves SET fenced = true WHERE move_id = $1", &[&m.id])
        .await
        .map_err(sql(STEP, "source"))?;
    wait_for_older_transactions(source, STEP, wait).await
}

/// Step 5 (fenced): the buckets' jobs, whatever their state, inserted on the
/// target under new ids with the move marked done there in the same
/// transaction, then deleted from the source. A second run finds the mark and
/// only deletes. Returns how many jobs moved.
pub async fn move_jobs(source: &mut Client, target: &mut Client, m: &Move) -> Result<u64, MoveError> {
    const STEP: &str = "move jobs";
    as_mover(source, STEP, "source").await?;
    as_mover(target, STEP, "target").await?;
    // The queue holds only jobs not yet done: hashing each job's user is cheaper
    // than finding the buckets' users (a scan of every user), and this step runs
    // while the buckets' writes are paused.
    let buckets = m.bucket_param();
    let jobs: Vec<Value> = source
        .query("SELECT to_jsonb(t) FROM jobs t WHERE millions_bucket(t.user_id) = ANY($1)", &[&buckets])
        .await
        .map_err(sql(STEP, "source"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let count = jobs.len() as u64;
    let tx = target.transaction().await.map_err(sql(STEP, "target"))?;
    let fresh = tx
        .execute(
            "INSERT INTO bucket_moves_done (move_id, jobs) VALUES ($1, $2) ON CONFLICT (move_id) DO NOTHING",
            &[&m.id, &(count as i64)],
        )
        .await
        .map_err(sql(STEP, "target"))?;
    if fresh == 1 {
        tx.execute(
            "INSERT INTO jobs (kind, user_id, payload, state, attempts, max_attempts, run_at, locked_by, \
             locked_until, last_error, created_at, request_id) \
             SELECT kind, user_id, payload, state, attempts, max_attempts, run_at, locked_by, locked_until, \
             last_error, created_at, request_id FROM jsonb_populate_recordset(NULL::jobs, $1)",
            &[&Value::Array(jobs)],
        )
        .await
        .map_err(sql(STEP, "target"))?;
    }
    tx.commit().await.map_err(sql(STEP, "target"))?;
    source
        .execute("DELETE FROM jobs t WHERE millions_bucket(t.user_id) = ANY($1)", &[&buckets])
        .await
        .map_err(sql(STEP, "source"))?;
    Ok(if fresh == 1 { count } else { 0 })
}

/// Before the new directory is published: the target forgets that the buckets
/// once left it (their `gone` marks), so that it takes their writes.
pub async fn adopt(target: &Client, m: &Move) -> Result<(), MoveError> {
    target
        .execute("DELETE FROM bucket_moves WHERE bucket = ANY($1) AND gone", &[&m.bucket_param()])
        .await
        .map_err(sql("adopt", "target"))?;
    Ok(())
}

/// Step 6, once every process routes the buckets to the target: delete their
/// rows from the source, forget their captured changes and mark them gone (their
/// writes stay refused), in one transaction. Returns how many rows were deleted.
pub async fn drop_source(source: &mut Client, m: &Move) -> Result<u64, MoveError> {
    const STEP: &str = "drop source rows";
    as_mover(source, STEP, "source").await?;
    let users = users_of(source, &m.bucket_param(), STEP, "source").await?;
    // The rows first, then the marks: a crash between them leaves the move to be
    // dropped again, which finds nothing more to delete.
    let deleted = delete_owned(source, &users, STEP, "source").await?;
    source
        .batch_execute(&format!(
            "BEGIN; DELETE FROM bucket_changes WHERE move_id = {id}; \
             UPDATE bucket_moves SET gone = true WHERE move_id = {id}; COMMIT",
            id = m.id
        ))
        .await
        .map_err(sql(STEP, "source"))?;
    Ok(deleted)
}

/// Roll back a move that has not reached [`move_jobs`]: the target's copies of
/// the buckets deleted, then the source's capture and fence lifted. Safe to run
/// again, and on a move that never started.
pub async fn abandon(source: &Client, target: &mut Client, m: &Move) -> Result<(), MoveError> {
    const STEP: &str = "abandon";
    as_mover(target, STEP, "target").await?;
    let users = users_of(target, &m.bucket_param(), STEP, "target").await?;
    delete_owned(target, &users, STEP, "target").await?;
    source
        .batch_execute(&format!(
            "BEGIN; DELETE FROM bucket_changes WHERE move_id = {id}; \
             DELETE FROM bucket_moves WHERE move_id = {id} AND NOT gone; COMMIT",
            id = m.id
        ))
        .await
        .map_err(sql(STEP, "source"))
}

/// The rows of every owned table (and `jobs`) per bucket on one shard: the
/// weights `millions shard rebalance --by rows` evens out. Scans every table.
pub async fn rows_by_bucket(c: &Client) -> Result<Vec<(u16, u64)>, MoveError> {
    let counts = TABLES
        .iter()
        .map(|(t, _)| *t)
        .chain(["jobs"])
        .map(|t| format!("SELECT millions_bucket(user_id) AS b, count(*) AS n FROM {t} GROUP BY 1"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows = c
        .query(&format!("SELECT b, sum(n)::int8 FROM ({counts}) c GROUP BY b ORDER BY b"), &[])
        .await
        .map_err(sql("rows by bucket", "server"))?;
    Ok(rows.iter().map(|r| (r.get::<_, i32>(0) as u16, r.get::<_, i64>(1) as u64)).collect())
}

/// The usernames of the users of `bucket` on one shard, in order: who moves
/// with a user whose bucket moves (`millions shard isolate`).
pub async fn usernames_in(c: &Client, bucket: Bucket) -> Result<Vec<String>, MoveError> {
    let rows = c
        .query(
            "SELECT username FROM users WHERE millions_bucket(user_id) = $1 ORDER BY username",
            &[&i32::from(bucket.get())],
        )
        .await
        .map_err(sql("usernames in a bucket", "server"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// How many rows of each table (and `jobs`) the buckets hold on one side, for
/// checks and `millions status`.
pub async fn count_rows(c: &Client, buckets: &[Bucket]) -> Result<Vec<(&'static str, u64)>, MoveError> {
    let param: Vec<i32> = buckets.iter().map(|b| i32::from(b.get())).collect();
    let mut out = vec![];
    for table in TABLES.iter().map(|(t, _)| *t).chain(["jobs"]) {
        let n: i64 = c
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE millions_bucket(user_id) = ANY($1)"),
                &[&param],
            )
            .await
            .map_err(sql("count rows", "server"))?
            .get(0);
        out.push((table, n as u64));
    }
    Ok(out)
}
