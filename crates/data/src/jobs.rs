//! The durable job queue (one per shard).
//!
//! A job is written in the same transaction as the row it is about, on the owner's
//! shard. Workers claim due jobs with `FOR UPDATE SKIP LOCKED`, so several workers
//! never hold the same job at once; a claim is a lease (`locked_until`): a worker
//! that dies leaves its job to be claimed again once the lease lapses. Every state
//! change after the claim is fenced by the claimant's id, so a worker whose lease
//! lapsed cannot complete or fail a job someone else now holds.

use std::time::Duration;

use sharding::{ShardId, user_bucket};
use tokio_postgres::types::Json;

use crate::error::DataError;
use crate::load::ReadOf;
use crate::model::{DeadJob, Job, QueueStats, QueuedJob};
use crate::route::{Data, Lsn, Place};
use crate::rows::{Params, millis, opt_row, rows};

/// The claim statement of [`Data::claim_jobs`] (public so the queue benchmark
/// measures and explains exactly this). `$1` the worker, `$2` the lease in
/// milliseconds, `$3` the most jobs to claim.
///
/// One indexed step per kind of due job: jobs whose lease lapsed (their worker
/// died; `jobs_leased`) first, then ready jobs in `run_at` order (`jobs_due`).
/// An `OR` of the two conditions in one `SELECT` would keep PostgreSQL from
/// using either partial index and scan and sort every due job (11 ms per claim
/// at 20k jobs).
///
/// Committed asynchronously (`synchronous_commit = off` for its transaction, set
/// in its own `WHERE` as [`Data::delete_queued_job`] does): a claim is not an
/// acknowledged write, and one lost to a crash or a failover only leaves its jobs
/// due again, to be run again (handlers are idempotent). A durable, synchronously
/// replicated commit costs the machine about 0.7 ms of CPU more than this
/// (docs/BENCHMARKS.md, "What a durable commit costs").
pub const CLAIM_JOBS_SQL: &str = "WITH ready AS ( \
    SELECT job_id FROM jobs WHERE state = 'ready' AND run_at <= now() \
    ORDER BY run_at LIMIT $3 FOR UPDATE SKIP LOCKED), \
 lapsed AS ( \
    SELECT job_id FROM jobs WHERE state = 'running' AND locked_until < now() \
    ORDER BY locked_until LIMIT $3 FOR UPDATE SKIP LOCKED), \
 due AS (SELECT job_id FROM lapsed UNION ALL SELECT job_id FROM ready LIMIT $3) \
 UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, locked_by = $1, \
    locked_until = now() + $2 * interval '1 millisecond' \
 FROM due WHERE j.job_id = due.job_id AND set_config('synchronous_commit', 'off', true) = 'off' \
 RETURNING j.job_id, j.kind, j.user_id, j.payload, j.attempts, j.max_attempts, j.request_id";

impl Data {
    /// Enqueue a job on the owner's shard (for jobs not tied to another write),
    /// carrying the id of the request being served, if any
    /// ([`telemetry::request_id::current`]).
    pub async fn enqueue(
        &self,
        kind: &str,
        user_id: i64,
        payload: serde_json::Value,
        max_attempts: i32,
    ) -> Result<i64, DataError> {
        let row = self
            .write_one(
                "enqueue",
                Place::user(user_id),
                "INSERT INTO jobs (kind, user_id, payload, max_attempts, request_id) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING job_id",
                &[&kind, &user_id, &Json(payload), &max_attempts, &telemetry::request_id::current()],
            )
            .await?;
        Ok(row.ok_or(DataError::NotFound)?.get(0))
    }

    /// Claim up to `limit` due jobs of `shard` for `worker`, leased for `lease`. Jobs
    /// whose lease lapsed (their worker died) are due again.
    ///
    /// Counted as one write of each claimed job's user's bucket
    /// ([`Data::bucket_load`]: a bucket's jobs move with it); a claim that finds
    /// nothing is the shard's polling, no bucket's, and is not counted.
    pub async fn claim_jobs(
        &self,
        shard: ShardId,
        worker: &str,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<Job>, DataError> {
        let rows = self
            .write("claim_jobs", shard, Lsn::Track, |c| async move {
                Ok(rows(&c, CLAIM_JOBS_SQL, &[&worker, &millis(lease), &limit]).await?)
            })
            .await?;
        // The shard's scan is no bucket's; each job claimed is its user's.
        for r in &rows {
            self.count_write(user_bucket(r.get(2)));
        }
        Ok(rows
            .iter()
            .map(|r| Job {
                shard,
                job_id: r.get(0),
                kind: r.get(1),
                user_id: r.get(2),
                payload: r.get::<_, Json<serde_json::Value>>(3).0,
                attempts: r.get(4),
                max_attempts: r.get(5),
                request_id: r.get(6),
            })
            .collect())
    }

    /// A finished job leaves the queue. False if `worker` no longer holds it.
    ///
    /// Committed asynchronously, as a claim is ([`CLAIM_JOBS_SQL`]): a deletion
    /// lost to a crash or a failover leaves the job running under a lease that
    /// lapses, and it runs again (handlers are idempotent). What the handler wrote
    /// before it was committed before it: on the job's own shard the WAL keeps that
    /// order, and a handler's writes on other shards waited for their own commits.
    pub async fn complete_job(&self, job: &Job, worker: &str) -> Result<bool, DataError> {
        self.job_update(
            job,
            "DELETE FROM jobs WHERE job_id = $1 AND locked_by = $2 AND state = 'running' \
             AND set_config('synchronous_commit', 'off', true) = 'off' RETURNING 1",
            &[&job.job_id, &worker],
            "complete_job",
        )
        .await
    }

    /// Extend `worker`'s lease on a running job to `lease` from now (the running
    /// worker's heartbeat). False if `worker` no longer holds it: its lease lapsed
    /// and another worker claimed it, or it was finished.
    pub async fn renew_job(&self, job: &Job, worker: &str, lease: Duration) -> Result<bool, DataError> {
        self.job_update(
            job,
            "UPDATE jobs SET locked_until = now() + $3 * interval '1 millisecond' \
             WHERE job_id = $1 AND locked_by = $2 AND state = 'running' RETURNING 1",
            &[&job.job_id, &worker, &millis(lease)],
            "renew_job",
        )
        .await
    }

    /// A failed attempt: run again after `backoff`, or, with no attempts left or when
    /// `permanent`, become a dead letter with `error` as its reason. False if
    /// `worker` no longer holds the job.
    pub async fn fail_job(
        &self,
        job: &Job,
        worker: &str,
        error: &str,
        backoff: Duration,
        permanent: bool,
    ) -> Result<bool, DataError> {
        self.job_update(
            job,
            "UPDATE jobs SET \
                state = CASE WHEN $5 OR attempts >= max_attempts THEN 'dead' ELSE 'ready' END, \
                run_at = now() + $3 * interval '1 millisecond', last_error = $4, \
                locked_by = NULL, locked_until = NULL \
             WHERE job_id = $1 AND locked_by = $2 AND state = 'running' RETURNING 1",
            &[&job.job_id, &worker, &millis(backoff), &error, &permanent],
            "fail_job",
        )
        .await
    }

    /// Give a claimed job back unstarted (graceful shutdown): due at once, and the
    /// attempt is not counted.
    pub async fn release_job(&self, job: &Job, worker: &str) -> Result<bool, DataError> {
        self.job_update(
            job,
            "UPDATE jobs SET state = 'ready', run_at = now(), attempts = greatest(attempts - 1, 0), \
                locked_by = NULL, locked_until = NULL \
             WHERE job_id = $1 AND locked_by = $2 AND state = 'running' RETURNING 1",
            &[&job.job_id, &worker],
            "release_job",
        )
        .await
    }

    /// One statement on a claimed job, on the shard whose queue holds it, counted
    /// as a write of the job's user's bucket ([`Data::bucket_load`]).
    async fn job_update(
        &self,
        job: &Job,
        sql: &str,
        params: Params<'_>,
        op: &'static str,
    ) -> Result<bool, DataError> {
        self.count_write(user_bucket(job.user_id));
        Ok(self.write_one(op, job.shard, sql, params).await?.is_some())
    }

    /// Depth and age of a shard's queue.
    pub async fn queue_stats(&self, shard: ShardId) -> Result<QueueStats, DataError> {
        let sql = "SELECT count(*) FILTER (WHERE state = 'ready' AND run_at <= now()), \
                        count(*) FILTER (WHERE state = 'running'), count(*) FILTER (WHERE state = 'dead'), \
                        coalesce(extract(epoch from now() - min(run_at) FILTER (WHERE state = 'ready' AND run_at <= now())), 0)::float8, \
                        count(*) FILTER (WHERE state = 'ready' AND run_at > now()) \
                 FROM jobs";
        let rows = self
            .read_primary("queue_stats", shard, ReadOf::Shard, |c| async move { rows(&c, sql, &[]).await })
            .await?;
        let r = rows.first().ok_or(DataError::NotFound)?;
        Ok(QueueStats {
            ready: r.get(0),
            running: r.get(1),
            dead: r.get(2),
            oldest_ready_secs: r.get(3),
            scheduled: r.get(4),
        })
    }

    /// A shard's dead letters, newest first.
    pub async fn dead_jobs(&self, shard: ShardId) -> Result<Vec<DeadJob>, DataError> {
        let sql = "SELECT job_id, kind, payload, attempts, last_error FROM jobs WHERE state = 'dead' \
                   ORDER BY job_id DESC LIMIT 1000";
        let rows = self
            .read_primary("dead_jobs", shard, ReadOf::Shard, |c| async move { rows(&c, sql, &[]).await })
            .await?;
        Ok(rows
            .iter()
            .map(|r| DeadJob {
                job_id: r.get(0),
                kind: r.get(1),
                payload: r.get::<_, Json<serde_json::Value>>(2).0,
                attempts: r.get(3),
                last_error: r.get(4),
            })
            .collect())
    }

    /// Drop a job that is no longer needed before it ran (a text post's fan-out,
    /// done by the web server that wrote the post): one statement. False if a
    /// worker has claimed it meanwhile (it then runs; handlers are idempotent) or
    /// it is gone. Not tracked for read-your-writes: nobody reads a job's absence
    /// from a replica, so no LSN is fetched after it.
    ///
    /// Committed asynchronously (`synchronous_commit = off` for this transaction
    /// alone): it waits neither for the local WAL flush nor for a synchronous
    /// standby, which on a DC-safe shard is a WAN round trip in every text post's
    /// response. A deletion lost to a crash only lets a worker repeat an idempotent
    /// fan-out 30 s later. The setting is made in the statement's own `WHERE`
    /// (`set_config(..., true)` lasts until the end of the transaction), so the
    /// deletion stays one round trip; when no row matches, nothing is committed
    /// and there is nothing to wait for either way.
    ///
    /// Counted as a write of the job's user's bucket ([`Data::bucket_load`]),
    /// though routed by the shard that holds it.
    pub async fn delete_queued_job(&self, job: &QueuedJob) -> Result<bool, DataError> {
        let sql = "DELETE FROM jobs WHERE job_id = $1 AND state = 'ready' \
                   AND set_config('synchronous_commit', 'off', true) = 'off' RETURNING 1";
        self.count_write(user_bucket(job.user_id));
        let row = self
            .write("delete_queued_job", job.shard, Lsn::Skip, |c| async move {
                Ok(opt_row(&c, sql, &[&job.job_id]).await?)
            })
            .await?;
        Ok(row.is_some())
    }
}
