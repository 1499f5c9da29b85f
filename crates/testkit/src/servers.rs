//! Real PostgreSQL and Redis servers for tests.
//!
//! [`postgres()`] and [`redis()`] start one server each per test binary, the
//! first time a test asks; tests share them and isolate themselves with their
//! own databases ([`TestPostgres::create_database`]) or keys. [`fresh_redis()`]
//! starts a private Redis a test may kill.
//!
//! Statics are never dropped, so every server gets a watchdog: a detached
//! `sh` that waits for the end of a pipe whose other end only this process
//! holds. When the test process exits in any way (end of tests, panic, abort,
//! SIGKILL), the kernel closes the pipe and the watchdog stops the server and
//! deletes its directory.

use std::fs;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nodes::{Durability, PostgresSpec, RedisSpec};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// How many fresh ports to try when another process takes ours first.
const PORT_ATTEMPTS: usize = 3;

/// The shared PostgreSQL server of this test binary (see [`postgres()`]).
#[derive(Debug)]
pub struct TestPostgres {
    spec: PostgresSpec,
    pid: u32,
    _watchdog: Watchdog,
}

/// The PostgreSQL server shared by all tests of this test binary: started on
/// first use in a temporary directory, on a free 127.0.0.1 port, with fast
/// (non-durable) settings and superuser `millions` with a random password.
/// Panics, with the server log, if it cannot start.
pub fn postgres() -> &'static TestPostgres {
    static SERVER: OnceLock<TestPostgres> = OnceLock::new();
    SERVER.get_or_init(|| TestPostgres::start().unwrap_or_else(|e| panic!("test PostgreSQL: {e}")))
}

impl TestPostgres {
    fn start() -> Result<TestPostgres, nodes::Error> {
        let dir = server_dir("pg")?;
        let watchdog = Watchdog::spawn(&dir, &[("QUIT", dir.join("data/postmaster.pid"))])?;
        let mut spec = PostgresSpec::new(&dir, LOCALHOST, 0, "millions", nodes::random_secret(24));
        spec.durability = Durability::Fast;
        nodes::init_postgres(&spec)?;
        retry_ports(|port| {
            spec.port = port;
            nodes::start_postgres(&spec)
        })?;
        let pid = nodes::postmaster_pid(&spec.data_dir).ok_or_else(|| nodes::Error::NotReady {
            what: "start the test PostgreSQL".into(),
            reason: "it runs, but its postmaster.pid is unreadable".into(),
            log: None,
        })?;
        Ok(TestPostgres { spec, pid, _watchdog: watchdog })
    }

    /// A `postgres://` URL for database `dbname` as the superuser.
    pub fn url(&self, dbname: &str) -> String {
        self.spec.url(dbname)
    }

    /// The address the server listens on.
    pub fn host(&self) -> IpAddr {
        self.spec.listen
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.spec.port
    }

    /// The superuser's name.
    pub fn user(&self) -> &str {
        &self.spec.superuser
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.spec.password
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.spec.data_dir
    }

    /// Creates a new database with a unique name (`t_<random>`), as a copy of
    /// `template` if given (which must have no open connections), and returns
    /// its name. Panics if that fails.
    pub async fn create_database(&self, template: Option<&str>) -> String {
        let name = format!("t_{}", nodes::random_secret(16).to_lowercase());
        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to the test PostgreSQL: {e}"));
        let connection = tokio::spawn(connection);
        let sql = match template {
            Some(template) => format!("CREATE DATABASE {name} TEMPLATE {}", quote_ident(template)),
            None => format!("CREATE DATABASE {name}"),
        };
        client.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        drop(client);
        let _ = connection.await;
        name
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The shared Redis server of this test binary (see [`redis()`]).
#[derive(Debug)]
pub struct TestRedis {
    spec: RedisSpec,
    pid: u32,
    _watchdog: Watchdog,
}

/// The Redis server shared by all tests of this test binary: started on first
/// use, on a free 127.0.0.1 port, with a random password. Panics, with the
/// server log, if it cannot start.
pub fn redis() -> &'static TestRedis {
    static SERVER: OnceLock<TestRedis> = OnceLock::new();
    SERVER.get_or_init(|| {
        let (spec, pid, watchdog) = start_redis_in_new_dir().unwrap_or_else(|e| panic!("test Redis: {e}"));
        TestRedis { spec, pid, _watchdog: watchdog }
    })
}

impl TestRedis {
    /// `redis://:<password>@127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        self.spec.url()
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.spec.port
    }

    /// The password clients must AUTH with.
    pub fn password(&self) -> &str {
        &self.spec.password
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's working directory.
    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }
}

/// A Redis server of its own for one test, which the test may kill and
/// restart; stopped and deleted on drop.
#[derive(Debug)]
pub struct OwnedRedis {
    spec: RedisSpec,
    pid: Option<u32>,
    watchdog: Option<Watchdog>,
}

/// Starts a Redis server for one test (free port, random password). Panics,
/// with the server log, if it cannot start.
pub fn fresh_redis() -> OwnedRedis {
    let (spec, pid, watchdog) = start_redis_in_new_dir().unwrap_or_else(|e| panic!("fresh test Redis: {e}"));
    OwnedRedis { spec, pid: Some(pid), watchdog: Some(watchdog) }
}

impl OwnedRedis {
    /// `redis://:<password>@127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        self.spec.url()
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.spec.port
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.spec.addr()
    }

    /// The password clients must AUTH with.
    pub fn password(&self) -> &str {
        &self.spec.password
    }

    /// The server's working directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }

    /// The server's process id; panics while the server is killed.
    pub fn pid(&self) -> u32 {
        self.pid.expect("this Redis is killed; restart() it first")
    }

    /// Kills the server with SIGKILL (a crash) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            nodes::stop_pid(pid, Duration::ZERO).unwrap_or_else(|e| panic!("kill test Redis: {e}"));
        }
    }

    /// Starts the server again on the same port with the same password (its
    /// data is gone: it never persists). Panics if it cannot start.
    pub fn restart(&mut self) {
        self.kill();
        let pid = nodes::start_redis(&self.spec).unwrap_or_else(|e| panic!("restart test Redis: {e}"));
        self.pid = Some(pid);
    }
}

impl Drop for OwnedRedis {
    fn drop(&mut self) {
        if let Err(e) = self.pid.take().map_or(Ok(()), |pid| nodes::stop_pid(pid, Duration::from_secs(5))) {
            eprintln!("testkit: stopping Redis: {e}");
        }
        let _ = fs::remove_dir_all(&self.spec.dir);
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
    }
}

/// A PostgreSQL server of its own for one test, which the test may crash and
/// restart; stopped and deleted on drop.
#[derive(Debug)]
pub struct OwnedPostgres {
    spec: PostgresSpec,
    dir: PathBuf,
    watchdog: Option<Watchdog>,
}

/// Starts a PostgreSQL server for one test (free port, random password), with
/// full durability: a test that crashes it expects every commit to survive.
/// Panics, with the server log, if it cannot start.
pub fn fresh_postgres() -> OwnedPostgres {
    let start = || -> Result<OwnedPostgres, nodes::Error> {
        let dir = server_dir("pg")?;
        let watchdog = Watchdog::spawn(&dir, &[("QUIT", dir.join("data/postmaster.pid"))])?;
        let mut spec = PostgresSpec::new(&dir, LOCALHOST, 0, "millions", nodes::random_secret(24));
        nodes::init_postgres(&spec)?;
        retry_ports(|port| {
            spec.port = port;
            nodes::start_postgres(&spec)
        })?;
        Ok(OwnedPostgres { spec, dir, watchdog: Some(watchdog) })
    };
    start().unwrap_or_else(|e| panic!("fresh test PostgreSQL: {e}"))
}

impl OwnedPostgres {
    /// A `postgres://` URL for database `dbname` as the superuser.
    pub fn url(&self, dbname: &str) -> String {
        self.spec.url(dbname)
    }

    /// `host:port`, as a cluster map names servers.
    pub fn addr(&self) -> String {
        self.spec.addr().to_string()
    }

    /// How the server was made: what a caller that speaks to servers by their
    /// spec (the controller) needs.
    pub fn spec(&self) -> &PostgresSpec {
        &self.spec
    }

    /// Kills the postmaster with SIGKILL (its backends notice and exit) and
    /// waits until it is gone.
    pub fn kill9(&mut self) {
        if let Some(pid) = nodes::postmaster_pid(&self.spec.data_dir) {
            nodes::stop_pid(pid, Duration::ZERO).unwrap_or_else(|e| panic!("kill -9 test PostgreSQL: {e}"));
        }
    }

    /// Crashes the server (an immediate stop: no checkpoint, clients cut off).
    pub fn kill(&mut self) {
        nodes::stop_postgres(&self.spec.data_dir, nodes::StopMode::Immediate)
            .unwrap_or_else(|e| panic!("crash test PostgreSQL: {e}"));
    }

    /// Starts the server again on the same port; it recovers from its WAL.
    pub fn restart(&mut self) {
        nodes::start_postgres(&self.spec).unwrap_or_else(|e| panic!("restart test PostgreSQL: {e}"));
    }
}

impl Drop for OwnedPostgres {
    fn drop(&mut self) {
        if let Err(e) = nodes::stop_postgres(&self.spec.data_dir, nodes::StopMode::Immediate) {
            eprintln!("testkit: stopping PostgreSQL: {e}");
        }
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
    }
}

/// A primary and one streaming replica of it (asynchronous, through a
/// replication slot), each a server of its own the test may kill; both
/// stopped and deleted on drop. Throw-away durability (no fsync) for speed.
#[derive(Debug)]
pub struct ReplicatedPostgres {
    /// Takes the writes.
    pub primary: OwnedPostgres,
    /// Replays the primary's WAL; read-only.
    pub replica: OwnedPostgres,
}

/// Starts a primary and a streaming replica of it. Panics, with the server
/// log, if either cannot start.
pub fn fresh_replicated_postgres() -> ReplicatedPostgres {
    let start = |standby_of: Option<&PostgresSpec>| -> Result<OwnedPostgres, nodes::Error> {
        let dir = server_dir("pg")?;
        let watchdog = Watchdog::spawn(&dir, &[("QUIT", dir.join("data/postmaster.pid"))])?;
        let mut spec = PostgresSpec::new(&dir, LOCALHOST, 0, "millions", nodes::random_secret(24));
        spec.durability = Durability::Fast;
        match standby_of {
            None => nodes::init_postgres(&spec)?,
            Some(primary) => {
                spec.password = primary.password.clone();
                spec.extra_conf = nodes::standby_conf(primary, "replica", "replica");
                nodes::base_backup(primary, &spec, "replica")?;
            }
        }
        retry_ports(|port| {
            spec.port = port;
            nodes::start_postgres(&spec)
        })?;
        Ok(OwnedPostgres { spec, dir, watchdog: Some(watchdog) })
    };
    let primary = start(None).unwrap_or_else(|e| panic!("test primary: {e}"));
    let replica = start(Some(&primary.spec)).unwrap_or_else(|e| panic!("test replica: {e}"));
    ReplicatedPostgres { primary, replica }
}

fn start_redis_in_new_dir() -> Result<(RedisSpec, u32, Watchdog), nodes::Error> {
    let dir = server_dir("redis")?;
    let mut spec = RedisSpec::new(&dir, LOCALHOST, 0, nodes::random_secret(24));
    let watchdog = Watchdog::spawn(&dir, &[("TERM", spec.pid_file.clone())])?;
    let pid = retry_ports(|port| {
        spec.port = port;
        nodes::start_redis(&spec)
    })?;
    Ok((spec, pid, watchdog))
}

/// Runs `start` with a free port, and again with another one if some other
/// process took it in between.
fn retry_ports<T>(mut start: impl FnMut(u16) -> Result<T, nodes::Error>) -> Result<T, nodes::Error> {
    let mut attempt = 1;
    loop {
        match start(nodes::free_port(LOCALHOST)?) {
            Err(e) if attempt < PORT_ATTEMPTS && e.to_string().contains("Address already in use") => {
                attempt += 1
            }
            other => return other,
        }
    }
}

/// A new directory `/tmp/millions-test-<kind>-XXXXXX` that outlives this
/// process until its watchdog removes it. Mode 0711, so that the postgres OS
/// user (when we are root) can reach the directories inside it.
fn server_dir(kind: &str) -> Result<PathBuf, nodes::Error> {
    let io_err = |context: &str| {
        let context = context.to_string();
        move |source| nodes::Error::Io { context, source }
    };
    let dir = tempfile::Builder::new()
        .prefix(&format!("millions-test-{kind}-"))
        .tempdir()
        .map_err(io_err("create a temporary directory"))?
        .keep();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
        .map_err(io_err(&format!("chmod {}", dir.display())))?;
    Ok(dir)
}

/// The cleanup script. Arguments: the directory, then `SIGNAL:PIDFILE` pairs.
/// A line on stdin disarms it; end of file (this process is gone) fires it.
const WATCHDOG_SCRIPT: &str = r#"
dir=$1; shift
if read -r _; then exit 0; fi
alive() { [ -r "/proc/$1/stat" ] && ! sed 's/^.*) //' "/proc/$1/stat" | grep -q '^[ZX]'; }
pids=
for target in "$@"; do
    sig=${target%%:*}; file=${target#*:}
    pid=$(head -n 1 "$file" 2>/dev/null)
    case $pid in ''|*[!0-9]*) continue ;; esac
    kill -s "$sig" "$pid" 2>/dev/null && pids="$pids $pid"
done
i=0
while [ $i -lt 100 ]; do
    left=
    for pid in $pids; do alive "$pid" && left=1; done
    [ -z "$left" ] && break
    sleep 0.1; i=$((i + 1))
done
for pid in $pids; do alive "$pid" && kill -s KILL "$pid" 2>/dev/null; done
rm -rf -- "$dir"
"#;

/// A detached `sh` that stops servers and removes their directory when this
/// process ends, unless disarmed first.
#[derive(Debug)]
struct Watchdog {
    /// Our end of the pipe; its closing (at process exit) fires the watchdog.
    stdin: ChildStdin,
    child: Child,
}

impl Watchdog {
    fn spawn(dir: &Path, targets: &[(&str, PathBuf)]) -> Result<Watchdog, nodes::Error> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(WATCHDOG_SCRIPT).arg("millions-test-watchdog").arg(dir);
        for (signal, pid_file) in targets {
            cmd.arg(format!("{signal}:{}", pid_file.display()));
        }
        // Its own process group: a Ctrl-C on the test run must not kill it first.
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|source| nodes::Error::Spawn { command: "sh -c <testkit watchdog>".into(), source })?;
        let stdin = child.stdin.take().ok_or_else(|| nodes::Error::Io {
            context: "open the watchdog's stdin".into(),
            source: io::ErrorKind::BrokenPipe.into(),
        })?;
        Ok(Watchdog { stdin, child })
    }

    /// Tells the watchdog that cleanup is done, and waits for it to exit.
    fn disarm(mut self) {
        let _ = self.stdin.write_all(b"disarm\n");
        drop(self.stdin);
        let _ = self.child.wait();
    }
}
