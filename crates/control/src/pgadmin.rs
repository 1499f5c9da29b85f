//! The controller's own SQL: one connection helper and a named function per thing
//! it asks or tells a PostgreSQL server (recovery state, WAL positions, replication,
//! slots, checkpoints, the shard database). None of it touches the application's
//! tables, which only `data` queries. Every call is bounded in time.

use std::net::SocketAddr;
use std::time::Duration;

use nodes::PostgresSpec;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, Row, Statement};

use crate::error::ControlError;

/// How long a probe of the failover watcher may take.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// How long a status query may take.
pub(crate) const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an administrative statement (a checkpoint, a slot) may take.
pub(crate) const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `work` on a fresh connection to `spec`'s database `db`, all within
/// `timeout`; `what` names the statement in errors.
async fn with_client<T, F, Fut>(
    spec: &PostgresSpec,
    db: &str,
    what: &str,
    timeout: Duration,
    work: F,
) -> Result<T, ControlError>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<T, tokio_postgres::Error>>,
{
    let server = spec.addr().to_string();
    let sql_error = |source| ControlError::Sql { server: server.clone(), statement: what.to_owned(), source };
    let attempt = async {
        let (client, conn) = tokio_postgres::connect(&spec.url(db), NoTls).await.map_err(sql_error)?;
        let conn = tokio::spawn(conn);
        let out = work(client).await.map_err(sql_error);
        let _ = conn.await;
        out
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(out) => out,
        Err(_) => Err(ControlError::SqlTimeout {
            server: spec.addr().to_string(),
            statement: what.to_owned(),
            timeout_ms: timeout.as_millis() as u64,
        }),
    }
}

/// A connection to `spec`'s database `db`, kept by the caller: what a bucket
/// move hands to `data::moves`, whose steps are the only statements it runs
/// (this module itself never touches the application's tables).
pub(crate) async fn connection(spec: &PostgresSpec, db: &str) -> Result<Client, ControlError> {
    let server = spec.addr().to_string();
    let url = spec.url(db);
    let connect = tokio_postgres::connect(&url, NoTls);
    let (client, conn) = match tokio::time::timeout(STATUS_TIMEOUT, connect).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(source)) => {
            return Err(ControlError::Sql { server, statement: "connect".into(), source });
        }
        Err(_) => {
            let timeout_ms = STATUS_TIMEOUT.as_millis() as u64;
            return Err(ControlError::SqlTimeout { server, statement: "connect".into(), timeout_ms });
        }
    };
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "a kept connection ended");
        }
    });
    Ok(client)
}

/// A kept connection on which the controller asks its own questions (WAL
/// positions), one round trip each, bounded by [`PROBE_TIMEOUT`].
pub(crate) struct KeptClient(pub(crate) Client);

impl KeptClient {
    async fn one(&self, sql: &str) -> Result<Option<i64>, ControlError> {
        let server = "a kept connection".to_owned();
        match tokio::time::timeout(PROBE_TIMEOUT, self.0.query_one(sql, &[])).await {
            Ok(Ok(row)) => Ok(row.get(0)),
            Ok(Err(source)) => Err(ControlError::Sql { server, statement: sql.into(), source }),
            Err(_) => Err(ControlError::SqlTimeout {
                server,
                statement: sql.into(),
                timeout_ms: PROBE_TIMEOUT.as_millis() as u64,
            }),
        }
    }

    /// The primary's WAL position now (`pg_current_wal_lsn`), as a number.
    pub(crate) async fn current_lsn(&self) -> Result<i64, ControlError> {
        const SQL: &str = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8";
        self.one(SQL).await?.ok_or_else(|| ControlError::Invalid("no WAL position".into()))
    }

    /// How far a standby has replayed WAL (`pg_last_wal_replay_lsn`), as a
    /// number; `None` if it has replayed none.
    pub(crate) async fn replay_lsn(&self) -> Result<Option<i64>, ControlError> {
        self.one("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8").await
    }
}

/// Rows of `sql` (no parameters) on database `postgres`.
async fn rows(spec: &PostgresSpec, sql: &str, timeout: Duration) -> Result<Vec<Row>, ControlError> {
    let owned = sql.to_owned();
    with_client(spec, "postgres", sql, timeout, |c| async move { c.query(&owned, &[]).await }).await
}

/// Run `sql` (statements, no parameters) on database `db`.
pub(crate) async fn execute(spec: &PostgresSpec, db: &str, sql: &str) -> Result<(), ControlError> {
    let owned = sql.to_owned();
    with_client(spec, db, sql, ADMIN_TIMEOUT, |c| async move { c.batch_execute(&owned).await }).await
}

/// What a primary says about itself in one round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrimaryProbe {
    /// It is a standby (recovering), so not a primary.
    pub(crate) in_recovery: bool,
    /// The `application_name`s of the standbys streaming from it.
    pub(crate) streaming: Vec<String>,
}

/// The probe of a primary: its recovery state and its streaming standbys.
const PROBE_PRIMARY: &str = "SELECT pg_is_in_recovery(), ARRAY(SELECT application_name::text \
                             FROM pg_stat_replication WHERE state = 'streaming')";

/// Is the server still a primary, and which standbys stream from it (on a fresh
/// connection: for the occasional check; the failover watcher's steady probing
/// goes through a [`Prober`]).
pub(crate) async fn probe_primary(spec: &PostgresSpec) -> Result<PrimaryProbe, ControlError> {
    let rows = rows(spec, PROBE_PRIMARY, PROBE_TIMEOUT).await?;
    Ok(PrimaryProbe { in_recovery: rows[0].get(0), streaming: rows[0].get(1) })
}

/// Probes a shard's primary over a kept connection. The failover watcher asks five
/// times a second; a fresh connection each time (a forked backend and an
/// authentication on the server) cost each primary about 0.05 cores with the
/// system at rest, more than all of a web server's idle work (docs/BENCHMARKS.md).
///
/// What a probe concludes is what a fresh connection would: a kept connection that
/// broke (the server restarted, the socket was closed) is replaced by a fresh one
/// within the same probe, so only a server that a new connection cannot reach
/// either is reported unreachable. A probe that times out drops the kept
/// connection: a hung server would hang a new one too, so it is not tried again
/// in the same probe (which would double the time to detect a failure).
#[derive(Default)]
pub(crate) struct Prober {
    /// The connection kept from the last successful probe, if any.
    kept: Option<Kept>,
}

/// A kept probe connection.
struct Kept {
    /// The server it is connected to (a failover changes whom the watcher probes).
    server: SocketAddr,
    /// The client the probe is sent on.
    client: Client,
    /// The probe, prepared once: each probe is then one round trip.
    statement: Statement,
    /// The task driving the connection, stopped with it.
    driver: JoinHandle<()>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Prober {
    /// Is the server still a primary, and which standbys stream from it.
    pub(crate) async fn probe_primary(&mut self, spec: &PostgresSpec) -> Result<PrimaryProbe, ControlError> {
        let server = spec.addr();
        let sql_error = |source| ControlError::Sql {
            server: server.to_string(),
            statement: PROBE_PRIMARY.to_owned(),
            source,
        };
        let timed_out = || ControlError::SqlTimeout {
            server: server.to_string(),
            statement: PROBE_PRIMARY.to_owned(),
            timeout_ms: PROBE_TIMEOUT.as_millis() as u64,
        };
        if let Some(kept) = self.kept.take().filter(|k| k.server == server && !k.client.is_closed()) {
            match tokio::time::timeout(PROBE_TIMEOUT, kept.client.query_one(&kept.statement, &[])).await {
                Ok(Ok(row)) => {
                    self.kept = Some(kept);
                    return Ok(PrimaryProbe { in_recovery: row.get(0), streaming: row.get(1) });
                }
                Ok(Err(e)) => {
                    tracing::debug!(%server, error = %e, "kept probe connection broke; probing on a new one")
                }
                Err(_) => return Err(timed_out()),
            }
        }
        let fresh = async {
            let (client, connection) = tokio_postgres::connect(&spec.url("postgres"), NoTls).await?;
            let driver = tokio::spawn(async move {
                let _ = connection.await;
            });
            let statement = client.prepare(PROBE_PRIMARY).await?;
            let kept = Kept { server, client, statement, driver };
            let row = kept.client.query_one(&kept.statement, &[]).await?;
            Ok((kept, row))
        };
        match tokio::time::timeout(PROBE_TIMEOUT, fresh).await {
            Ok(Ok((kept, row))) => {
                self.kept = Some(kept);
                Ok(PrimaryProbe { in_recovery: row.get(0), streaming: row.get(1) })
            }
            Ok(Err(e)) => Err(sql_error(e)),
            Err(_) => Err(timed_out()),
        }
    }
}

/// How much WAL a failover candidate holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalPosition {
    /// It is a standby (not yet promoted).
    pub(crate) in_recovery: bool,
    /// The furthest WAL position it received or replayed, as a number.
    pub(crate) lsn: i64,
}

/// A candidate's WAL position: the furthest it received or replayed.
pub(crate) async fn wal_position(spec: &PostgresSpec) -> Result<WalPosition, ControlError> {
    const SQL: &str = "SELECT pg_is_in_recovery(), pg_wal_lsn_diff(\
        GREATEST(coalesce(pg_last_wal_receive_lsn(), '0/0'), coalesce(pg_last_wal_replay_lsn(), '0/0')), \
        '0/0')::int8";
    let rows = rows(spec, SQL, PROBE_TIMEOUT).await?;
    Ok(WalPosition { in_recovery: rows[0].get(0), lsn: rows[0].get(1) })
}

/// How far a standby has received WAL (`pg_last_wal_receive_lsn`), as a number;
/// `None` if it has received none through streaming.
pub(crate) async fn receive_lsn(spec: &PostgresSpec) -> Result<Option<i64>, ControlError> {
    const SQL: &str = "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::int8";
    Ok(rows(spec, SQL, PROBE_TIMEOUT).await?[0].get(0))
}

/// Whether the server is a standby.
pub(crate) async fn in_recovery(spec: &PostgresSpec) -> Result<bool, ControlError> {
    Ok(rows(spec, "SELECT pg_is_in_recovery()", STATUS_TIMEOUT).await?[0].get(0))
}

/// One standby as its primary reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StandbyState {
    /// Its `application_name` (the node's name).
    pub(crate) name: String,
    /// `streaming`, `catchup`, ...
    pub(crate) state: String,
    /// Bytes of WAL the primary has that it has not replayed.
    pub(crate) lag_bytes: i64,
    /// How long ago the primary wrote what it last replayed, ms.
    pub(crate) lag_ms: f64,
    /// `sync`, `quorum`, `potential` or `async`: whether it may confirm commits.
    pub(crate) sync_state: String,
}

/// Every standby connected to a primary.
pub(crate) async fn standbys(spec: &PostgresSpec) -> Result<Vec<StandbyState>, ControlError> {
    const SQL: &str = "SELECT application_name, state, \
                       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::int8, \
                       coalesce(extract(epoch FROM replay_lag) * 1000, 0)::float8, sync_state \
                       FROM pg_stat_replication";
    Ok(rows(spec, SQL, STATUS_TIMEOUT)
        .await?
        .iter()
        .map(|r| StandbyState {
            name: r.get(0),
            state: r.get(1),
            lag_bytes: r.get(2),
            lag_ms: r.get(3),
            sync_state: r.get(4),
        })
        .collect())
}

/// Create physical replication slot `slot` unless it exists.
pub(crate) async fn ensure_slot(spec: &PostgresSpec, slot: &str) -> Result<(), ControlError> {
    let sql = format!(
        "SELECT pg_create_physical_replication_slot('{slot}', true) \
         WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}')"
    );
    execute(spec, "postgres", &sql).await
}

/// Drop replication slot `slot` if it exists.
pub(crate) async fn drop_slot(spec: &PostgresSpec, slot: &str) -> Result<(), ControlError> {
    let sql = format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}'"
    );
    execute(spec, "postgres", &sql).await
}

/// A checkpoint: after a promotion, the control file names the new timeline only
/// once one has run (pg_rewind of the old primary reads it there).
pub(crate) async fn checkpoint(spec: &PostgresSpec) -> Result<(), ControlError> {
    execute(spec, "postgres", "CHECKPOINT").await
}

/// The timeline the server is on (as of its last checkpoint: run one first after a
/// promotion).
pub(crate) async fn timeline(spec: &PostgresSpec) -> Result<u32, ControlError> {
    let rows = rows(spec, "SELECT timeline_id::int8 FROM pg_control_checkpoint()", STATUS_TIMEOUT).await?;
    let timeline: i64 = rows[0].get(0);
    Ok(u32::try_from(timeline).unwrap_or(0))
}

/// A shard's size on disk and its rows, estimated from the planner's statistics
/// (`reltuples`, kept by autovacuum and ANALYZE; no table is scanned), of the
/// application's database on its primary `spec`: for `millions status`.
pub(crate) async fn shard_size(spec: &PostgresSpec, db: &str) -> Result<(u64, u64), ControlError> {
    const SQL: &str = "SELECT pg_database_size(current_database()), \
                       coalesce(sum(greatest(c.reltuples, 0)), 0)::int8 FROM pg_class c \
                       WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace \
                       AND c.relname NOT LIKE 'bucket%' AND c.relname <> 'refinery_schema_history'";
    let rows = with_client(spec, db, SQL, STATUS_TIMEOUT, |c| async move { c.query(SQL, &[]).await }).await?;
    Ok((rows[0].get::<_, i64>(0) as u64, rows[0].get::<_, i64>(1) as u64))
}

/// Create database `name` unless it exists.
pub(crate) async fn ensure_database(spec: &PostgresSpec, name: &str) -> Result<(), ControlError> {
    let owned = name.to_owned();
    let what = format!("CREATE DATABASE {name}");
    with_client(spec, "postgres", &what, ADMIN_TIMEOUT, |c| async move {
        let exists = c.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&owned]).await?;
        if exists.is_none() {
            c.batch_execute(&format!("CREATE DATABASE {owned}")).await?;
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pid of the backend that last ran the primary probe, if one is connected.
    async fn probing_backend(observer: &Client) -> Option<i32> {
        let rows = observer
            .query(
                "SELECT pid FROM pg_stat_activity WHERE query = $1 AND pid <> pg_backend_pid()",
                &[&PROBE_PRIMARY],
            )
            .await
            .unwrap();
        assert!(rows.len() <= 1, "at most one probe connection at a time, found {}", rows.len());
        rows.first().map(|r| r.get(0))
    }

    async fn observer(url: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    #[tokio::test]
    async fn a_prober_keeps_one_connection_across_probes() {
        let pg = testkit::fresh_postgres();
        let observer = observer(&pg.url("postgres")).await;
        let mut prober = Prober::default();
        let first = prober.probe_primary(pg.spec()).await.unwrap();
        assert_eq!(first, PrimaryProbe { in_recovery: false, streaming: vec![] });
        let backend = probing_backend(&observer).await.expect("the probe's connection is kept");
        for _ in 0..20 {
            assert!(!prober.probe_primary(pg.spec()).await.unwrap().in_recovery);
        }
        assert_eq!(
            probing_backend(&observer).await,
            Some(backend),
            "every probe went over the same connection"
        );
        drop(prober);
        testkit::eventually("a dropped prober closes its connection", async || {
            probing_backend(&observer).await.is_none()
        })
        .await;
    }

    #[tokio::test]
    async fn a_kept_connection_that_broke_is_replaced_within_the_probe() {
        let mut pg = testkit::fresh_postgres();
        let mut prober = Prober::default();
        prober.probe_primary(pg.spec()).await.unwrap();
        // The server crashes and comes back between two probes: the kept
        // connection is dead, but the server is fine, and the probe says so.
        pg.kill();
        pg.restart();
        let probe = prober.probe_primary(pg.spec()).await;
        assert!(probe.as_ref().is_ok_and(|p| !p.in_recovery), "{probe:?}");
        // While it is down, probes fail; once it is back, they succeed again.
        pg.kill();
        let down = prober.probe_primary(pg.spec()).await;
        assert!(matches!(down, Err(ControlError::Sql { .. })), "{down:?}");
        pg.restart();
        assert!(!prober.probe_primary(pg.spec()).await.unwrap().in_recovery);
    }
}
