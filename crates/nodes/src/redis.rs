//! Redis: a `redis-server` with a generated config file, password required.

use std::fmt::Write as _;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::process::{describe, find_in_path, is_executable, log_tail, poll_until};

/// How long [`start_redis`] waits for the server to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything needed to run one Redis server.
#[derive(Debug, Clone)]
pub struct RedisSpec {
    /// Working directory of the server; the generated `redis.conf` goes here. Created if missing.
    pub dir: PathBuf,
    /// The address the server binds (`bind`).
    pub listen: IpAddr,
    /// The TCP port (`port`).
    pub port: u16,
    /// The password every client must send with AUTH (`requirepass`).
    pub password: String,
    /// Where the server logs (`logfile`); error messages quote its tail.
    pub log_file: PathBuf,
    /// Where the server writes its pid (`pidfile`), so another process can stop it later.
    pub pid_file: PathBuf,
    /// A memory limit in MiB. `None`: no limit, and writes never evict. `Some`:
    /// at the limit, evict keys by [`RedisSpec::eviction`].
    pub maxmemory_mb: Option<u32>,
    /// Redis's `maxmemory-policy` when there is a limit (`allkeys-lru` unless set):
    /// which keys go first.
    pub eviction: &'static str,
    /// Keep an append-only file (fsync every second), so sessions survive a crash
    /// of the server (losing at most the last second); off for throw-away servers.
    pub persistent: bool,
}

impl RedisSpec {
    /// A spec with everything in `dir` (`redis.log`, `redis.pid`) and no memory limit.
    pub fn new(dir: &Path, listen: IpAddr, port: u16, password: impl Into<String>) -> Self {
        RedisSpec {
            dir: dir.to_path_buf(),
            listen,
            port,
            password: password.into(),
            log_file: dir.join("redis.log"),
            pid_file: dir.join("redis.pid"),
            maxmemory_mb: None,
            eviction: "allkeys-lru",
            persistent: false,
        }
    }

    /// The TCP address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.listen, self.port)
    }

    /// A `redis://:password@host:port/` URL.
    pub fn url(&self) -> String {
        let host = match self.listen {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        format!("redis://:{}@{host}:{}/", self.password, self.port)
    }
}

/// Finds `redis-server`: on `PATH`, then in `/usr/bin` and `/usr/sbin`.
pub fn redis_server_bin() -> Result<PathBuf, Error> {
    find_in_path("redis-server")
        .or_else(|| {
            ["/usr/bin/redis-server", "/usr/sbin/redis-server"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| is_executable(p))
        })
        .ok_or_else(|| Error::NotFound {
            program: "redis-server".into(),
            searched: "PATH, /usr/bin, /usr/sbin".into(),
            hint: "install the Debian package redis-server",
        })
}

/// Quotes a value for redis.conf.
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The contents of the generated `redis.conf`.
fn config(spec: &RedisSpec) -> String {
    let mut conf = String::from("# Written by millions (crate nodes); edits here are lost.\n");
    let mut line = |name: &str, value: String| {
        let _ = writeln!(conf, "{name} {value}");
    };
    line("bind", spec.listen.to_string());
    line("port", spec.port.to_string());
    line("requirepass", quote(&spec.password));
    line("protected-mode", "yes".into());
    line("daemonize", "no".into());
    line("save", quote(""));
    line("appendonly", if spec.persistent { "yes" } else { "no" }.into());
    if spec.persistent {
        line("appendfsync", "everysec".into());
    }
    line("dir", quote(&spec.dir.display().to_string()));
    line("logfile", quote(&spec.log_file.display().to_string()));
    line("pidfile", quote(&spec.pid_file.display().to_string()));
    match spec.maxmemory_mb {
        Some(mb) => {
            line("maxmemory", format!("{mb}mb"));
            line("maxmemory-policy", spec.eviction.into());
        }
        None => line("maxmemory-policy", "noeviction".into()),
    }
    conf
}

/// Writes `redis.conf` into `spec.dir` and returns the command that runs the
/// server in the foreground with it (stdio and process group left to the caller).
pub fn redis_command(spec: &RedisSpec) -> Result<Command, Error> {
    let bin = redis_server_bin()?;
    fs::create_dir_all(&spec.dir).map_err(Error::io(format!("create directory {}", spec.dir.display())))?;
    let conf_path = spec.dir.join("redis.conf");
    fs::write(&conf_path, config(spec)).map_err(Error::io(format!("write {}", conf_path.display())))?;
    let mut cmd = Command::new(bin);
    cmd.arg(conf_path).current_dir(&spec.dir);
    Ok(cmd)
}

/// Starts the server detached (own process group, stdio to /dev/null, it
/// outlives this process), waits until it answers PING with the password,
/// and returns its pid. Stop it with [`crate::stop_pid`].
pub fn start_redis(spec: &RedisSpec) -> Result<u32, Error> {
    let what = format!("start Redis on {} (log {})", spec.addr(), spec.log_file.display());
    // A stale pid file would make a later `stop` hit the wrong process.
    let _ = fs::remove_file(&spec.pid_file);
    let mut cmd = redis_command(spec)?;
    // Config errors go to stderr before the server opens its log file: send
    // them to the log file too, so the error below can quote them.
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_file)
        .map_err(Error::io(format!("open log file {}", spec.log_file.display())))?;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).process_group(0);
    let command = describe(&cmd);
    let mut child = cmd.spawn().map_err(|source| Error::Spawn { command: command.clone(), source })?;
    let pid = child.id();

    let mut last_error = String::from("no answer yet");
    let mut exited = None;
    let ready = poll_until(START_TIMEOUT, || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return true;
        }
        match redis_ping(spec.addr(), &spec.password, Duration::from_secs(1)) {
            Ok(()) => true,
            Err(e) => {
                last_error = e.to_string();
                false
            }
        }
    });
    if let Some(status) = exited {
        return Err(Error::Failed {
            what,
            command,
            status,
            output: String::new(),
            log: Some(Box::new(log_tail(&spec.log_file))),
        });
    }
    if !ready {
        let _ = crate::stop_pid(pid, Duration::from_secs(2));
        let _ = child.try_wait();
        return Err(Error::NotReady {
            what,
            reason: format!("no PONG within {START_TIMEOUT:?} (last error: {last_error})"),
            log: Some(Box::new(log_tail(&spec.log_file))),
        });
    }
    Ok(pid)
}

/// Sends `AUTH password` and `PING` to the Redis server at `addr` and checks
/// the answers (`+OK`, `+PONG`). An error names what the server said instead.
pub fn redis_ping(addr: SocketAddr, password: &str, timeout: Duration) -> Result<(), Error> {
    let context = format!("PING Redis at {addr}");
    let io = |e| Error::Io { context: context.clone(), source: e };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut request = Vec::new();
    for args in [&["AUTH", password][..], &["PING"][..]] {
        request.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            request.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
    }
    stream.write_all(&request).map_err(io)?;

    let deadline = Instant::now() + timeout;
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    while reply.iter().filter(|b| **b == b'\n').count() < 2 {
        if Instant::now() >= deadline {
            return Err(io(ErrorKind::TimedOut.into()));
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    let reply = String::from_utf8_lossy(&reply);
    let mut lines = reply.lines();
    match (lines.next(), lines.next()) {
        (Some("+OK"), Some("+PONG")) => Ok(()),
        _ => Err(Error::NotReady {
            what: context.clone(),
            reason: format!("expected +OK and +PONG, got {:?}", reply.trim()),
            log: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_password_and_policy() {
        let mut spec = RedisSpec::new(Path::new("/tmp/x y"), "127.0.0.1".parse().unwrap(), 7000, "pw\"1");
        let conf = config(&spec);
        assert!(conf.contains("requirepass \"pw\\\"1\"\n"), "{conf}");
        assert!(conf.contains("dir \"/tmp/x y\"\n"), "{conf}");
        assert!(conf.contains("maxmemory-policy noeviction\n"), "{conf}");
        spec.maxmemory_mb = Some(64);
        let conf = config(&spec);
        assert!(conf.contains("maxmemory 64mb\nmaxmemory-policy allkeys-lru\n"), "{conf}");
    }

    #[test]
    fn url_brackets_ipv6() {
        let spec = RedisSpec::new(Path::new("/tmp"), "::1".parse().unwrap(), 7000, "pw");
        assert_eq!(spec.url(), "redis://:pw@[::1]:7000/");
    }
}
