//! PostgreSQL: create a cluster with `initdb`, start and stop it with `pg_ctl`.
//!
//! PostgreSQL refuses to run as root. When this process is root, every
//! PostgreSQL binary runs as the OS user `postgres` (created by the Debian
//! package), and the directories it writes are handed to that user.

use std::fmt::Write as _;
use std::fs;
use std::io::{ErrorKind, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::unistd::{Gid, Uid, User, chown, geteuid};

use crate::error::Error;
use crate::process::{find_in_path, is_executable, pid_alive, poll_until, run};

/// How much PostgreSQL may lose on a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// PostgreSQL's defaults: every commit is flushed to disk.
    #[default]
    Full,
    /// For throw-away test clusters: `fsync` off (`full_page_writes` stays
    /// on: pg_rewind needs it). A
    /// crash of the OS may corrupt the cluster; a crash of PostgreSQL alone
    /// loses nothing (each commit still reaches the OS before it is
    /// acknowledged, and still waits for synchronous standbys), so crash and
    /// failover tests keep their meaning.
    Fast,
}

/// How `pg_ctl stop` shuts the server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients, write a checkpoint, exit cleanly.
    Fast,
    /// Exit at once without a checkpoint, like a crash (recovery runs at the next start).
    Immediate,
}

/// Everything needed to create and run one PostgreSQL server.
#[derive(Debug, Clone)]
pub struct PostgresSpec {
    /// The cluster's data directory (`initdb -D`); created if missing.
    pub data_dir: PathBuf,
    /// Where the server puts its Unix socket and lock file; created if missing.
    /// Keep the path short: socket paths are limited to about 100 bytes.
    pub socket_dir: PathBuf,
    /// The address the server listens on for TCP (`listen_addresses`).
    pub listen: IpAddr,
    /// The TCP port (`port`).
    pub port: u16,
    /// The superuser role created by `initdb -U`.
    pub superuser: String,
    /// The superuser's password; connections must authenticate with it (SCRAM).
    pub password: String,
    /// The file `pg_ctl` sends the server's log to; error messages quote its tail.
    pub log_file: PathBuf,
    /// Whether commits are flushed to disk (see [`Durability`]).
    pub durability: Durability,
    /// More `postgresql.conf` settings as (name, value), written after ours so
    /// they override them; values are quoted for you.
    pub extra_conf: Vec<(String, String)>,
}

impl PostgresSpec {
    /// A spec with everything below `base_dir` (`data/`, `socket/`,
    /// `postgres.log`), full durability and no extra settings.
    pub fn new(
        base_dir: &Path,
        listen: IpAddr,
        port: u16,
        superuser: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        PostgresSpec {
            data_dir: base_dir.join("data"),
            socket_dir: base_dir.join("socket"),
            listen,
            port,
            superuser: superuser.into(),
            password: password.into(),
            log_file: base_dir.join("postgres.log"),
            durability: Durability::Full,
            extra_conf: Vec::new(),
        }
    }

    /// The TCP address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.listen, self.port)
    }

    /// A `postgres://` URL for database `dbname` as the superuser.
    pub fn url(&self, dbname: &str) -> String {
        postgres_url(&self.listen.to_string(), self.port, &self.superuser, &self.password, dbname)
    }

    /// Whether this spec makes a standby: its `extra_conf` names a primary
    /// (see [`standby_conf`]). [`start_postgres`] then marks the data
    /// directory with `standby.signal`.
    pub fn is_standby(&self) -> bool {
        self.extra_conf.iter().any(|(name, _)| name == "primary_conninfo")
    }

    fn what(&self, verb: &str) -> String {
        format!("{verb} PostgreSQL on {} (data directory {})", self.addr(), self.data_dir.display())
    }
}

/// Finds a PostgreSQL program such as `initdb` or `pg_ctl`: on `PATH` first,
/// then in the newest `/usr/lib/postgresql/<version>/bin` (where Debian puts them).
pub fn pg_bin(name: &str) -> Result<PathBuf, Error> {
    if let Some(found) = find_in_path(name) {
        return Ok(found);
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin").join(name)))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    versions.into_iter().map(|(_, path)| path).find(|path| is_executable(path)).ok_or_else(|| {
        Error::NotFound {
            program: name.to_string(),
            searched: "PATH, /usr/lib/postgresql/*/bin".into(),
            hint: "install the Debian package postgresql (version 15 or newer)",
        }
    })
}

/// A `postgres://user:password@host:port/dbname` URL; the user, password and
/// database name are percent-encoded, an IPv6 host is bracketed.
pub fn postgres_url(host: &str, port: u16, user: &str, password: &str, dbname: &str) -> String {
    let host =
        if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    format!("postgres://{}:{}@{host}:{port}/{}", encode(user), encode(password), encode(dbname))
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Creates the cluster with `initdb` unless `data_dir` already holds one
/// (has `PG_VERSION`), then writes our configuration (see [`start_postgres`]).
///
/// The superuser authenticates with SCRAM-SHA-256 and `spec.password`, over
/// the Unix socket and over TCP from any address (replication included):
/// other data centers use other loopback ranges or network-namespace hosts.
pub fn init_postgres(spec: &PostgresSpec) -> Result<(), Error> {
    let user = pg_os_user()?;
    prepare_dir(&spec.data_dir, user.as_ref(), 0o700)?;
    if !spec.data_dir.join("PG_VERSION").exists() {
        let mut pwfile = tempfile::Builder::new()
            .prefix("millions-pgpass-")
            .tempfile()
            .map_err(Error::io("create a temporary password file for initdb"))?;
        writeln!(pwfile, "{}", spec.password).map_err(Error::io("write the initdb password file"))?;
        pwfile.flush().map_err(Error::io("write the initdb password file"))?;
        if let Some(user) = &user {
            give_to(pwfile.path(), user)?;
        }
        let initdb = |locale_args: &[&str]| -> Result<(), Error> {
            let mut cmd = pg_command("initdb", user.as_ref())?;
            cmd.arg("-D")
                .arg(&spec.data_dir)
                .arg("-U")
                .arg(&spec.superuser)
                .arg("--auth=scram-sha-256")
                .arg(format!("--pwfile={}", pwfile.path().display()))
                .args(["-E", "UTF8", "--no-instructions"])
                .args(locale_args);
            if spec.durability == Durability::Fast {
                cmd.arg("--no-sync");
            }
            run(cmd, &format!("create a PostgreSQL cluster in {}", spec.data_dir.display()), None).map(drop)
        };
        // Byte-order collation (fast, and LIKE 'prefix%' can use plain indexes)
        // with Unicode-aware upper()/lower(); plain C where C.UTF-8 is missing.
        match initdb(&["--locale=C", "--lc-ctype=C.UTF-8"]) {
            Err(Error::Failed { output, .. }) if output.contains("locale") => {
                prepare_dir(&spec.data_dir, user.as_ref(), 0o700)?;
                initdb(&["--locale=C"])?;
            }
            other => other?,
        }
    }
    write_config(spec, user.as_ref())
}

/// Starts the server with `pg_ctl start -w` and returns once it accepts
/// connections (or fails, with the tail of the server log in the error).
///
/// Our settings (listen address, port, socket directory, SCRAM, durability,
/// `extra_conf`) are rewritten into `millions.conf` in the data directory,
/// included from `postgresql.conf`, and `pg_hba.conf` is rewritten, so the
/// spec is the truth at every start (also for a copy made by `pg_basebackup`).
/// The server runs in its own process group and outlives this process.
pub fn start_postgres(spec: &PostgresSpec) -> Result<(), Error> {
    let user = pg_os_user()?;
    if postgres_running(&spec.data_dir) {
        return Err(Error::AlreadyRunning { data_dir: spec.data_dir.clone() });
    }
    prepare_dir(&spec.socket_dir, user.as_ref(), 0o755)?;
    remove_stale_lock_files(spec)?;
    prepare_log_file(&spec.log_file, user.as_ref())?;
    write_config(spec, user.as_ref())?;
    if spec.is_standby() {
        write_owned(&spec.data_dir.join("standby.signal"), "", user.as_ref())?;
    }
    let mut cmd = pg_command("pg_ctl", user.as_ref())?;
    cmd.args(["start", "-w", "-t", "60", "-D"]).arg(&spec.data_dir).arg("-l").arg(&spec.log_file);
    cmd.process_group(0);
    let started = run(cmd, &spec.what("start"), Some(&spec.log_file)).map(drop);
    if started.is_err() && postgres_running(&spec.data_dir) {
        // pg_ctl gave up waiting, but the server may still come up: a failed
        // start leaves nothing running.
        let _ = stop_postgres(&spec.data_dir, StopMode::Immediate);
    }
    started
}

/// Makes `replica.data_dir` a copy of the running server `primary` with
/// `pg_basebackup` (WAL streamed alongside, through the new physical replication
/// slot `slot`), marked as a standby (`standby.signal`). The data directory must
/// not exist or be empty. Start it with [`start_postgres`] and a spec whose
/// `extra_conf` sets `primary_conninfo` (see [`standby_conf`]).
pub fn base_backup(primary: &PostgresSpec, replica: &PostgresSpec, slot: &str) -> Result<(), Error> {
    let user = pg_os_user()?;
    prepare_dir(&replica.data_dir, user.as_ref(), 0o700)?;
    let mut cmd = pg_command("pg_basebackup", user.as_ref())?;
    cmd.arg("-d")
        .arg(format!("host={} port={} user={}", primary.listen, primary.port, primary.superuser))
        .env("PGPASSWORD", &primary.password)
        .arg("-D")
        .arg(&replica.data_dir)
        .args(["-X", "stream", "-C", "-S", slot, "--checkpoint=fast", "--no-password"]);
    if replica.durability == Durability::Fast {
        cmd.arg("--no-sync");
    }
    let what = format!("copy {} to {} (pg_basebackup)", primary.addr(), replica.data_dir.display());
    run(cmd, &what, None)?;
    write_owned(&replica.data_dir.join("standby.signal"), "", user.as_ref())
}

/// Rewrites the running server's configuration from `spec` (its
/// `extra_conf`: a new primary to follow, new synchronous standbys) and makes
/// it reload (`pg_ctl reload`). Settings that need a restart are not applied.
pub fn reload_postgres(spec: &PostgresSpec) -> Result<(), Error> {
    let user = pg_os_user()?;
    write_config(spec, user.as_ref())?;
    let mut cmd = pg_command("pg_ctl", user.as_ref())?;
    cmd.args(["reload", "-D"]).arg(&spec.data_dir);
    run(cmd, &spec.what("reload"), None).map(drop)
}

/// Promotes the standby running in `data_dir` to a primary (`pg_ctl promote
/// -w`): it replays every WAL record it has received, leaves recovery on a
/// new timeline and accepts writes.
pub fn promote_postgres(data_dir: &Path) -> Result<(), Error> {
    let user = pg_os_user()?;
    let mut cmd = pg_command("pg_ctl", user.as_ref())?;
    cmd.args(["promote", "-w", "-t", "60", "-D"]).arg(data_dir);
    run(cmd, &format!("promote the standby in {}", data_dir.display()), None).map(drop)
}

/// What `pg_controldata` says of a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlData {
    /// `Database cluster state`: `shut down` after a clean stop of a primary,
    /// `shut down in recovery` of a standby, `in production` while running or
    /// after a crash.
    pub state: String,
    /// `Latest checkpoint location` as a number: after a clean stop, the shutdown
    /// checkpoint, the server's last WAL record.
    pub checkpoint_lsn: u64,
    /// `Latest checkpoint's TimeLineID`: the history it was on at its last
    /// checkpoint (or restartpoint, for a standby).
    pub timeline: u32,
}

/// A `pg_lsn` text (`16/B374D848`) as a number.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Read `data_dir`'s control file (`pg_controldata`).
pub fn controldata(data_dir: &Path) -> Result<ControlData, Error> {
    let user = pg_os_user()?;
    let mut cmd = pg_command("pg_controldata", user.as_ref())?;
    cmd.env("LC_ALL", "C").arg("-D").arg(data_dir);
    let what = format!("read the control file of {}", data_dir.display());
    let output = run(cmd, &what, None)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')).map(str::trim))
    };
    let bad = |reason: &str| Error::NotReady { what: what.clone(), reason: reason.to_owned(), log: None };
    let state = field("Database cluster state").ok_or_else(|| bad("no cluster state in its output"))?;
    let checkpoint = field("Latest checkpoint location").ok_or_else(|| bad("no checkpoint location"))?;
    let timeline = field("Latest checkpoint's TimeLineID").and_then(|t| t.parse().ok());
    Ok(ControlData {
        state: state.to_owned(),
        checkpoint_lsn: parse_lsn(checkpoint).ok_or_else(|| bad("an unreadable checkpoint location"))?,
        timeline: timeline.ok_or_else(|| bad("no readable timeline"))?,
    })
}

/// Makes the stopped server of `target` a follower of the running server
/// `source` with `pg_rewind`: WAL the target wrote after their timelines
/// split (writes no standby confirmed, hence never acknowledged under
/// synchronous replication) is thrown away. A target left by a crash is first
/// recovered by pg_rewind itself. Start it afterwards with a standby spec.
pub fn rewind_postgres(target: &PostgresSpec, source: &PostgresSpec) -> Result<(), Error> {
    let user = pg_os_user()?;
    if postgres_running(&target.data_dir) {
        return Err(Error::AlreadyRunning { data_dir: target.data_dir.clone() });
    }
    remove_stale_lock_files(target)?;
    // pg_rewind's crash recovery starts the target in single-user mode with
    // its own configuration: make it the target's, not a copied one.
    write_config(target, user.as_ref())?;
    let mut cmd = pg_command("pg_rewind", user.as_ref())?;
    cmd.arg("--target-pgdata")
        .arg(&target.data_dir)
        .arg(format!(
            "--source-server=host={} port={} user={} dbname=postgres",
            source.listen, source.port, source.superuser
        ))
        .env("PGPASSWORD", &source.password);
    let what = format!("rewind {} to follow {} (pg_rewind)", target.data_dir.display(), source.addr());
    run(cmd, &what, None).map(drop)
}

/// The settings that make a server a standby of `primary`, identified there as
/// `application_name` (what `synchronous_standby_names` names), through `slot`.
pub fn standby_conf(primary: &PostgresSpec, application_name: &str, slot: &str) -> Vec<(String, String)> {
    let conninfo = format!(
        "host={} port={} user={} password={} application_name={application_name}",
        primary.listen, primary.port, primary.superuser, primary.password
    );
    vec![
        ("primary_conninfo".into(), conninfo),
        ("primary_slot_name".into(), slot.into()),
        ("hot_standby".into(), "on".into()),
    ]
}

/// A server killed with SIGKILL leaves its lock files behind (`postmaster.pid`,
/// `.s.PGSQL.<port>.lock`). PostgreSQL ignores a lock naming a dead pid, but on
/// machines whose init does not reap orphans the pid stays a zombie, which it
/// takes for a running server. Once no process of the old server is left in
/// the data directory, such locks are removed.
fn remove_stale_lock_files(spec: &PostgresSpec) -> Result<(), Error> {
    let data_lock = spec.data_dir.join("postmaster.pid");
    let mut stale: Vec<PathBuf> = Vec::new();
    if postmaster_pid(&spec.data_dir).is_some() {
        stale.push(data_lock);
    }
    for entry in fs::read_dir(&spec.socket_dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".s.PGSQL.") && name.ends_with(".lock") {
            let pid = fs::read_to_string(entry.path()).ok().and_then(|t| first_line_pid(&t));
            if !pid.is_some_and(|pid| is_postmaster_of(pid, &spec.data_dir)) {
                stale.push(entry.path());
                stale.push(spec.socket_dir.join(name.trim_end_matches(".lock")));
            }
        }
    }
    if stale.is_empty() {
        return Ok(());
    }
    // The old postmaster's children exit soon after it dies; until they have,
    // the lock files are what keeps a second server off the same data.
    let mut left = Vec::new();
    if !poll_until(Duration::from_secs(30), || {
        left = processes_in(&spec.data_dir);
        left.is_empty()
    }) {
        return Err(Error::NotReady {
            what: spec.what("start"),
            reason: format!(
                "processes of a previous server are still running in the data directory: {left:?}"
            ),
            log: None,
        });
    }
    for path in stale {
        let _ = fs::remove_file(path);
    }
    Ok(())
}

/// Live processes whose working directory is `dir` (PostgreSQL's processes
/// work in their data directory). Empty where /proc cannot tell.
fn processes_in(dir: &Path) -> Vec<u32> {
    let Ok(dir) = dir.canonicalize() else { return Vec::new() };
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir) && pid_alive(*pid)
        })
        .collect()
}

/// Stops the server in `data_dir` with `pg_ctl stop -w`; Ok if it was not running.
pub fn stop_postgres(data_dir: &Path, mode: StopMode) -> Result<(), Error> {
    if !postgres_running(data_dir) {
        return Ok(());
    }
    let user = pg_os_user()?;
    let mut cmd = pg_command("pg_ctl", user.as_ref())?;
    let mode = match mode {
        StopMode::Fast => "fast",
        StopMode::Immediate => "immediate",
    };
    cmd.args(["stop", "-w", "-t", "60", "-m", mode, "-D"]).arg(data_dir);
    let what = format!("stop PostgreSQL (data directory {})", data_dir.display());
    let pid = running_postmaster(data_dir);
    match run(cmd, &what, None) {
        // It may have stopped by itself meanwhile.
        Err(_) if !postgres_running(data_dir) => {}
        other => other.map(drop)?,
    }
    // pg_ctl returns once the lock file is gone; the postmaster removes it a
    // moment before it exits. Callers rely on the process being gone (the
    // port free, no second primary), so wait for that too.
    if let Some(pid) = pid
        && !poll_until(Duration::from_secs(10), || !pid_alive(pid))
    {
        return Err(Error::Stop { pid, reason: "the postmaster outlived pg_ctl stop by 10 s".into() });
    }
    Ok(())
}

/// Whether a server is running in `data_dir`: its `postmaster.pid` names a live
/// process (not a zombie) that is that data directory's postmaster (see
/// [`running_postmaster`]). Falls back to `pg_ctl status` when the lock file
/// cannot be read by this user.
pub fn postgres_running(data_dir: &Path) -> bool {
    match fs::read_to_string(data_dir.join("postmaster.pid")) {
        Ok(text) => first_line_pid(&text).is_some_and(|pid| is_postmaster_of(pid, data_dir)),
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(_) => pg_ctl_status(data_dir),
    }
}

/// The pid of the server running in `data_dir`, from its `postmaster.pid`,
/// only if that process is alive and works in `data_dir` (a postmaster's
/// working directory is its data directory): a stale lock file whose pid an
/// unrelated process reused names no server.
pub fn running_postmaster(data_dir: &Path) -> Option<u32> {
    postmaster_pid(data_dir).filter(|pid| is_postmaster_of(*pid, data_dir))
}

/// Whether process `pid` is alive and runs in `data_dir` (where procfs can tell).
fn is_postmaster_of(pid: u32, data_dir: &Path) -> bool {
    if !pid_alive(pid) {
        return false;
    }
    if !Path::new("/proc/self/cwd").exists() {
        return true;
    }
    let (Ok(cwd), Ok(dir)) = (fs::read_link(format!("/proc/{pid}/cwd")), data_dir.canonicalize()) else {
        return false;
    };
    cwd == dir
}

fn pg_ctl_status(data_dir: &Path) -> bool {
    let Ok(user) = pg_os_user() else { return false };
    let Ok(mut cmd) = pg_command("pg_ctl", user.as_ref()) else { return false };
    cmd.arg("status").arg("-D").arg(data_dir).stdout(Stdio::null()).stderr(Stdio::null());
    cmd.status().is_ok_and(|s| s.success())
}

/// The postmaster's pid from `data_dir/postmaster.pid`, if that file exists
/// and is readable (it may be stale: check with [`crate::pid_alive`]).
pub fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    first_line_pid(&fs::read_to_string(data_dir.join("postmaster.pid")).ok()?)
}

fn first_line_pid(text: &str) -> Option<u32> {
    text.lines().next()?.trim().parse().ok().filter(|pid| *pid > 0)
}

/// The OS user PostgreSQL runs as: `None` means "as ourselves" (we are not root).
fn pg_os_user() -> Result<Option<User>, Error> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some(user)),
        Ok(None) => Err(Error::NoPostgresUser),
        Err(e) => Err(Error::Io { context: "look up the OS user postgres".into(), source: e.into() }),
    }
}

fn pg_command(name: &str, user: Option<&User>) -> Result<Command, Error> {
    let mut cmd = Command::new(pg_bin(name)?);
    if let Some(user) = user {
        // std drops root's supplementary groups when it switches the uid.
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    // Our working directory may be closed to the postgres user.
    cmd.current_dir("/").stdin(Stdio::null());
    Ok(cmd)
}

/// Creates `dir` (and parents), hands it to `user` with `mode`, and checks
/// that `user` can reach it.
fn prepare_dir(dir: &Path, user: Option<&User>, mode: u32) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(Error::io(format!("create directory {}", dir.display())))?;
    if let Some(user) = user {
        give_to(dir, user)?;
        check_reachable(dir, user)?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(Error::io(format!("set the mode of {}", dir.display())))
}

fn prepare_log_file(path: &Path, user: Option<&User>) -> Result<(), Error> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(Error::io(format!("create directory {}", parent.display())))?;
    }
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(Error::io(format!("create log file {}", path.display())))?;
    if let Some(user) = user {
        give_to(path, user)?;
        check_reachable(path, user)?;
    }
    Ok(())
}

fn give_to(path: &Path, user: &User) -> Result<(), Error> {
    chown(path, Some(user.uid), Some(user.gid)).map_err(|e| Error::Io {
        context: format!("chown {} to {}", path.display(), user.name),
        source: e.into(),
    })
}

/// Checks that every directory above `path` lets `user` pass (search permission).
fn check_reachable(path: &Path, user: &User) -> Result<(), Error> {
    for dir in path.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()) {
        let meta = fs::metadata(dir).map_err(Error::io(format!("inspect {}", dir.display())))?;
        let bit = if Uid::from_raw(meta.uid()) == user.uid {
            0o100
        } else if Gid::from_raw(meta.gid()) == user.gid {
            0o010
        } else {
            0o001
        };
        if meta.mode() & bit == 0 {
            return Err(Error::NotReachable {
                path: dir.to_path_buf(),
                user: user.name.clone(),
                reason: format!(
                    "mode {:o}, owner uid {} gid {}",
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                ),
            });
        }
    }
    Ok(())
}

/// Quotes a value for postgresql.conf (any setting accepts a quoted value).
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn write_config(spec: &PostgresSpec, user: Option<&User>) -> Result<(), Error> {
    let mut settings: Vec<(String, String)> = vec![
        ("listen_addresses".into(), spec.listen.to_string()),
        ("port".into(), spec.port.to_string()),
        ("unix_socket_directories".into(), spec.socket_dir.display().to_string()),
        ("password_encryption".into(), "scram-sha-256".into()),
        ("max_connections".into(), "200".into()),
    ];
    // pg_rewind needs it to turn a failed primary into a replica of its successor.
    settings.push(("wal_log_hints".into(), "on".into()));
    if spec.durability == Durability::Fast {
        settings.push(("fsync".into(), "off".into()));
    }
    settings.extend(spec.extra_conf.iter().cloned());
    let mut conf = String::from("# Written by millions (crate nodes) at every start; edits here are lost.\n");
    for (name, value) in &settings {
        let _ = writeln!(conf, "{name} = {}", conf_quote(value));
    }
    write_owned(&spec.data_dir.join("millions.conf"), &conf, user)?;

    let main_conf = spec.data_dir.join("postgresql.conf");
    let include = "include = 'millions.conf'";
    let current =
        fs::read_to_string(&main_conf).map_err(Error::io(format!("read {}", main_conf.display())))?;
    if !current.lines().any(|line| line.trim() == include) {
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&main_conf)
            .map_err(Error::io(format!("open {}", main_conf.display())))?;
        writeln!(file, "\n# Settings of millions (crate nodes).\n{include}")
            .map_err(Error::io(format!("append to {}", main_conf.display())))?;
    }

    let hba = "\
# Written by millions (crate nodes) at every start; edits here are lost.
# TYPE  DATABASE     USER  ADDRESS    METHOD
local   all          all              scram-sha-256
host    all          all   0.0.0.0/0  scram-sha-256
host    all          all   ::/0       scram-sha-256
local   replication  all              scram-sha-256
host    replication  all   0.0.0.0/0  scram-sha-256
host    replication  all   ::/0       scram-sha-256
";
    write_owned(&spec.data_dir.join("pg_hba.conf"), hba, user)
}

fn write_owned(path: &Path, contents: &str, user: Option<&User>) -> Result<(), Error> {
    fs::write(path, contents).map_err(Error::io(format!("write {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(Error::io(format!("set the mode of {}", path.display())))?;
    if let Some(user) = user {
        give_to(path, user)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encodes_and_brackets() {
        assert_eq!(
            postgres_url("127.0.0.1", 5432, "u", "p@ss/w:rd", "db"),
            "postgres://u:p%40ss%2Fw%3Ard@127.0.0.1:5432/db"
        );
        assert_eq!(postgres_url("::1", 1, "u", "p", "d"), "postgres://u:p@[::1]:1/d");
    }

    #[test]
    fn conf_values_are_quoted() {
        assert_eq!(conf_quote("it's"), "'it''s'");
        assert_eq!(conf_quote("off"), "'off'");
    }

    #[test]
    fn pid_file_first_line() {
        assert_eq!(first_line_pid("1234\n/data\n"), Some(1234));
        assert_eq!(first_line_pid("junk\n"), None);
        assert_eq!(first_line_pid(""), None);
    }
}
