//! Real PostgreSQL servers: start, authenticate with SCRAM, stop, and the ways that fails.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nodes::{
    Durability, Error, PostgresSpec, StopMode, init_postgres, pg_bin, pid_alive, postgres_running,
    postmaster_pid, start_postgres, stop_postgres,
};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A temporary directory for one server; stops the server (if any) before the
/// directory is removed, also when the test panics.
struct PgGuard {
    spec: PostgresSpec,
    _dir: tempfile::TempDir,
}

impl PgGuard {
    fn new(port: u16) -> PgGuard {
        let dir = tempfile::Builder::new().prefix("nodes-pg-").tempdir().expect("create a temp dir");
        // The postgres OS user (when we are root) must be able to enter it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut spec = PostgresSpec::new(dir.path(), LOCALHOST, port, "millions", nodes::random_secret(24));
        spec.durability = Durability::Fast;
        PgGuard { spec, _dir: dir }
    }
}

impl Drop for PgGuard {
    fn drop(&mut self) {
        if let Err(e) = stop_postgres(&self.spec.data_dir, StopMode::Immediate) {
            eprintln!("cleanup: {e}");
        }
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn free_port() -> u16 {
    nodes::free_port(LOCALHOST).unwrap()
}

/// A crash: SIGKILL to the postmaster, then wait until it is gone (its lock
/// file stays behind, naming a dead or zombie pid).
async fn sigkill_postmaster(data_dir: &Path) {
    let pid = postmaster_pid(data_dir).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    testkit::eventually("the killed postmaster to be gone", async || !pid_alive(pid)).await;
}

fn assert_gone(data_dir: &Path, pid: u32) {
    assert!(!postgres_running(data_dir), "pg_ctl still sees a server in {}", data_dir.display());
    assert!(!pid_alive(pid), "postmaster {pid} still alive");
}

#[tokio::test]
async fn starts_with_scram_and_stops_cleanly() {
    let pg = PgGuard::new(free_port());
    init_postgres(&pg.spec).unwrap();
    // A second init on an existing cluster is a no-op.
    init_postgres(&pg.spec).unwrap();
    start_postgres(&pg.spec).unwrap();
    assert!(postgres_running(&pg.spec.data_dir));
    let pid = postmaster_pid(&pg.spec.data_dir).expect("postmaster.pid");

    let client = connect(&pg.spec.url("postgres")).await.unwrap();
    let row = client.query_one("SHOW password_encryption", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "scram-sha-256");
    let row = client.query_one("SHOW fsync", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "off");
    let row =
        client.query_one("SELECT rolpassword FROM pg_authid WHERE rolname = 'millions'", &[]).await.unwrap();
    assert!(row.get::<_, String>(0).starts_with("SCRAM-SHA-256$"));

    let before: String = client.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0);
    drop(client);
    let wrong = nodes::postgres_url("127.0.0.1", pg.spec.port, "millions", "wrong-password", "postgres");
    let err = connect(&wrong).await.expect_err("a wrong password must be refused");
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD), "{err}");

    // Starting twice is refused clearly.
    let err = start_postgres(&pg.spec).expect_err("already running");
    assert!(matches!(err, Error::AlreadyRunning { .. }), "{err}");

    stop_postgres(&pg.spec.data_dir, StopMode::Fast).unwrap();
    assert_gone(&pg.spec.data_dir, pid);
    // Stopping a stopped server is fine.
    stop_postgres(&pg.spec.data_dir, StopMode::Fast).unwrap();
    // A clean stop ends with a shutdown checkpoint: the server's last WAL record,
    // past everything written before.
    let control = nodes::controldata(&pg.spec.data_dir).unwrap();
    assert_eq!(control.state, "shut down");
    assert!(control.checkpoint_lsn >= nodes::parse_lsn(&before).unwrap(), "{control:?} vs {before}");
    assert_eq!(nodes::parse_lsn("16/B374D848"), Some(0x16_B374_D848));
    assert_eq!(nodes::parse_lsn("0/0"), Some(0));
    assert_eq!(nodes::parse_lsn("nope"), None);
    assert!(nodes::controldata(&pg.spec.data_dir.join("missing")).is_err());
}

#[tokio::test]
async fn restarts_after_immediate_stop_and_after_sigkill() {
    let mut pg = PgGuard::new(free_port());
    // Fast durability acknowledges commits before they reach the WAL file, so
    // an immediate stop could lose them; this test wants them kept.
    pg.spec.extra_conf.push(("synchronous_commit".into(), "on".into()));
    init_postgres(&pg.spec).unwrap();
    start_postgres(&pg.spec).unwrap();
    let client = connect(&pg.spec.url("postgres")).await.unwrap();
    let row = client.query_one("SHOW synchronous_commit", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "on", "extra_conf overrides the durability settings");
    client.batch_execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)").await.unwrap();
    drop(client);

    let pid = postmaster_pid(&pg.spec.data_dir).unwrap();
    stop_postgres(&pg.spec.data_dir, StopMode::Immediate).unwrap();
    assert_gone(&pg.spec.data_dir, pid);

    start_postgres(&pg.spec).unwrap();
    let client = connect(&pg.spec.url("postgres")).await.unwrap();
    let row = client.query_one("SELECT v FROM kept", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    drop(client);

    // A crash: the lock file stays behind, naming a dead (or zombie) pid.
    sigkill_postmaster(&pg.spec.data_dir).await;
    assert!(postmaster_pid(&pg.spec.data_dir).is_some(), "a crash leaves its lock file");
    assert!(!postgres_running(&pg.spec.data_dir));
    start_postgres(&pg.spec).unwrap();
    let client = connect(&pg.spec.url("postgres")).await.unwrap();
    let row = client.query_one("SELECT v FROM kept", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[test]
fn port_in_use_is_reported_with_the_log() {
    let taken = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let pg = PgGuard::new(port);
    init_postgres(&pg.spec).unwrap();
    let err = start_postgres(&pg.spec).expect_err("the port is taken");
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains(&pg.spec.log_file.display().to_string()), "{msg}");
    assert!(msg.contains("Address already in use"), "{msg}");
    assert!(!postgres_running(&pg.spec.data_dir));
}

#[test]
fn missing_binary_is_named() {
    let err = pg_bin("no-such-binary").expect_err("does not exist");
    let msg = err.to_string();
    assert!(msg.contains("no-such-binary") && msg.contains("postgresql"), "{msg}");
    assert!(pg_bin("initdb").is_ok());
}

#[test]
fn closed_directory_is_reported_when_root() {
    if !nix::unistd::geteuid().is_root() {
        return; // Only root hands directories to the postgres user.
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let spec = PostgresSpec::new(dir.path(), LOCALHOST, free_port(), "millions", "pw");
    let err = init_postgres(&spec).expect_err("postgres cannot enter a 0700 root directory");
    assert!(matches!(err, Error::NotReachable { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
}

/// Rows of table `t` on the server at `url`, in order, once the server
/// accepts connections and the table has `want` rows.
async fn rows_eventually(url: &str, want: usize) -> Vec<i32> {
    let mut got = Vec::new();
    testkit::eventually(&format!("{want} rows in t on {url}"), async || {
        if let Ok(client) = connect(url).await
            && let Ok(rows) = client.query("SELECT v FROM t ORDER BY v", &[]).await
        {
            got = rows.iter().map(|r| r.get(0)).collect();
        }
        got.len() == want
    })
    .await;
    got
}

#[tokio::test]
async fn a_crashed_primary_is_rewound_into_a_replica_of_the_promoted_one() {
    let primary = PgGuard::new(free_port());
    let mut replica = PgGuard::new(free_port());
    replica.spec.password = primary.spec.password.clone();
    init_postgres(&primary.spec).unwrap();
    start_postgres(&primary.spec).unwrap();
    let client = connect(&primary.spec.url("postgres")).await.unwrap();
    client.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)").await.unwrap();
    nodes::base_backup(&primary.spec, &replica.spec, "r1").unwrap();
    replica.spec.extra_conf = nodes::standby_conf(&primary.spec, "r1", "r1");
    assert!(replica.spec.is_standby());
    start_postgres(&replica.spec).unwrap();
    assert_eq!(rows_eventually(&replica.spec.url("postgres"), 1).await, vec![1]);

    // The replica stops; the primary takes a write only it has, then crashes.
    stop_postgres(&replica.spec.data_dir, StopMode::Fast).unwrap();
    client.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    drop(client);
    sigkill_postmaster(&primary.spec.data_dir).await;

    // The replica is promoted and moves on without that write.
    start_postgres(&replica.spec).unwrap();
    nodes::promote_postgres(&replica.spec.data_dir).unwrap();
    let promoted = connect(&replica.spec.url("postgres")).await.unwrap();
    let row = promoted.query_one("SELECT pg_is_in_recovery()", &[]).await.unwrap();
    assert!(!row.get::<_, bool>(0), "promoted");
    promoted.batch_execute("SELECT pg_create_physical_replication_slot('old')").await.unwrap();
    promoted.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();

    // The old primary: a rewind while it runs is refused; once rewound it
    // follows the new one and has lost the write nobody confirmed.
    let mut old = primary.spec.clone();
    old.extra_conf = nodes::standby_conf(&replica.spec, "old", "old");
    nodes::rewind_postgres(&old, &replica.spec).unwrap();
    start_postgres(&old).unwrap();
    assert!(matches!(nodes::rewind_postgres(&old, &replica.spec), Err(Error::AlreadyRunning { .. })));
    assert_eq!(rows_eventually(&old.url("postgres"), 2).await, vec![1, 3]);
    let c = connect(&old.url("postgres")).await.unwrap();
    let row = c.query_one("SELECT pg_is_in_recovery()", &[]).await.unwrap();
    assert!(row.get::<_, bool>(0), "the old primary came back as a replica");
    let err = c.batch_execute("INSERT INTO t VALUES (4)").await.expect_err("read-only");
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION), "{err}");
}

/// A `postmaster.pid` left by a crash whose pid now belongs to an unrelated
/// process: no server runs there, the process is never signalled, and the
/// server starts.
#[tokio::test]
async fn a_stale_lock_file_naming_an_unrelated_process_is_not_a_server() {
    let pg = PgGuard::new(free_port());
    init_postgres(&pg.spec).unwrap();
    start_postgres(&pg.spec).unwrap();
    sigkill_postmaster(&pg.spec.data_dir).await;
    let mut unrelated = std::process::Command::new("sleep").arg("600").spawn().unwrap();
    let lock = pg.spec.data_dir.join("postmaster.pid");
    let text = std::fs::read_to_string(&lock).unwrap();
    let rest = text.split_once('\n').unwrap().1;
    std::fs::write(&lock, format!("{}\n{rest}", unrelated.id())).unwrap();

    assert!(!postgres_running(&pg.spec.data_dir));
    assert_eq!(nodes::running_postmaster(&pg.spec.data_dir), None);
    stop_postgres(&pg.spec.data_dir, StopMode::Fast).unwrap();
    assert!(unrelated.try_wait().unwrap().is_none(), "the unrelated process was signalled");
    start_postgres(&pg.spec).unwrap();
    assert!(postgres_running(&pg.spec.data_dir));
    assert_ne!(nodes::running_postmaster(&pg.spec.data_dir), Some(unrelated.id()));
    assert!(unrelated.try_wait().unwrap().is_none(), "the unrelated process was signalled");
    unrelated.kill().unwrap();
    unrelated.wait().unwrap();
}
