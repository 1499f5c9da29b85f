//! Process, port and file helpers shared by the PostgreSQL and Redis code.

use std::env;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use rand::Rng;
use rand::distr::Alphanumeric;

use crate::error::{Error, LogTail};

/// Asks the OS for a TCP port that is free on `ip` right now (bind to port 0,
/// read the port, close). Another process may take it before we use it, so
/// callers that fail to bind should retry with a new port.
pub fn free_port(ip: IpAddr) -> Result<u16, Error> {
    let listener =
        TcpListener::bind((ip, 0)).map_err(Error::io(format!("bind {ip}:0 to find a free port")))?;
    let port = listener.local_addr().map_err(Error::io("read the address of a bound socket"))?.port();
    Ok(port)
}

/// A random alphanumeric string of `len` characters, for passwords and names.
pub fn random_secret(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Waits until something accepts TCP connections on `addr`, or `timeout` passes.
pub fn wait_tcp(addr: SocketAddr, timeout: Duration) -> Result<(), Error> {
    let mut last_error = String::from("no attempt made");
    let ok = poll_until(timeout, || match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        Ok(_) => true,
        Err(e) => {
            last_error = e.to_string();
            false
        }
    });
    if ok {
        Ok(())
    } else {
        Err(Error::NotReady {
            what: format!("wait for a TCP listener on {addr}"),
            reason: format!("nothing accepted connections within {timeout:?} (last error: {last_error})"),
            log: None,
        })
    }
}

/// Calls `check` with a short growing back-off until it returns true or
/// `timeout` passes; returns whether it succeeded.
pub(crate) fn poll_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if check() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Whether process `pid` exists and is not a zombie. On machines whose init
/// does not reap orphans, a killed server stays a zombie forever, and a zombie
/// holds no port, file or memory: for our purposes it is gone.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else { return false };
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => match stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) {
            Some(state) => state != "Z" && state != "X",
            None => true,
        },
        Err(_) if Path::new("/proc/self/stat").exists() => false,
        // No procfs: fall back to asking the kernel whether the pid exists.
        Err(_) => matches!(signal::kill(Pid::from_raw(raw), None), Ok(()) | Err(Errno::EPERM)),
    }
}

/// When process `pid` started, in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or `None` when it does not exist or procfs cannot tell.
/// With the pid it identifies a process: a pid reused by another process has
/// another start time.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name start at field 3 (the state).
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// A process identified by its pid and its start time, so that a process that
/// reused the pid of a dead one is never taken for it (nor signalled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The process id.
    pub pid: u32,
    /// Its start time (see [`process_start_time`]).
    pub start: u64,
}

impl ProcessId {
    /// Process `pid` as it is now, if it runs and procfs tells its start time.
    pub fn of(pid: u32) -> Option<ProcessId> {
        if !pid_alive(pid) {
            return None;
        }
        process_start_time(pid).map(|start| ProcessId { pid, start })
    }

    /// Whether this very process still runs (same pid, same start time, not a zombie).
    pub fn alive(&self) -> bool {
        pid_alive(self.pid) && process_start_time(self.pid) == Some(self.start)
    }
}

/// Writes `process` into the pid file `path` as `PID START` (see [`read_pid_file`]).
pub fn write_pid_file(path: &Path, process: ProcessId) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(Error::io(format!("create directory {}", dir.display())))?;
    }
    fs::write(path, format!("{} {}\n", process.pid, process.start))
        .map_err(Error::io(format!("write {}", path.display())))
}

/// The process the pid file `path` names, if that very process still runs:
/// a file without a start time, or naming a dead process or one that reused
/// its pid (another start time), gives `None`.
pub fn read_pid_file(path: &Path) -> Option<ProcessId> {
    let text = fs::read_to_string(path).ok()?;
    let mut fields = text.split_whitespace();
    let pid = fields.next()?.parse().ok()?;
    let start = fields.next()?.parse().ok()?;
    let process = ProcessId { pid, start };
    process.alive().then_some(process)
}

/// Stops process `pid`: SIGTERM, wait up to `grace` for it to exit, then
/// SIGKILL and wait a little more. Ok if the process is (or already was) gone.
/// If it is a child of this process, it is also reaped (no zombie is left).
pub fn stop_pid(pid: u32, grace: Duration) -> Result<(), Error> {
    let result = signal_and_wait(pid, grace, &|| pid_alive(pid));
    reap(pid);
    result
}

/// Stops `process` like [`stop_pid`], but only that very process: a process
/// that reused its pid is never signalled. Ok if it is (or already was) gone.
pub fn stop_process(process: ProcessId, grace: Duration) -> Result<(), Error> {
    let result = signal_and_wait(process.pid, grace, &|| process.alive());
    reap(process.pid);
    result
}

/// Reaps `pid` if it is a child of this process that exited (no zombie is left).
fn reap(pid: u32) {
    if let Ok(raw) = i32::try_from(pid) {
        // ECHILD when it is not our child: nothing to reap.
        let _ = waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG));
    }
}

/// SIGTERM, up to `grace` for it to exit, then SIGKILL; each signal only while
/// `running` says the process is still the one meant.
fn signal_and_wait(pid: u32, grace: Duration, running: &dyn Fn() -> bool) -> Result<(), Error> {
    let raw = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::Stop { pid, reason: "not a valid process id".into() })?;
    let target = Pid::from_raw(raw);
    if !running() {
        return Ok(());
    }
    match signal::kill(target, Signal::SIGTERM) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => return Err(Error::Stop { pid, reason: format!("SIGTERM: {e}") }),
    }
    if poll_until(grace, || !running()) {
        return Ok(());
    }
    match signal::kill(target, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => return Err(Error::Stop { pid, reason: format!("SIGKILL: {e}") }),
    }
    if poll_until(Duration::from_secs(10), || !running()) {
        Ok(())
    } else {
        Err(Error::Stop { pid, reason: "still alive 10s after SIGKILL".into() })
    }
}

/// Finds an executable called `name` in the directories of `PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A command line for messages, e.g. `pg_ctl start -D /x`.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, capturing its output; a non-zero exit becomes
/// [`Error::Failed`] with the output and, if given, the tail of `log`.
pub(crate) fn run(mut cmd: Command, what: &str, log: Option<&Path>) -> Result<Output, Error> {
    let command = describe(&cmd);
    let output = cmd.output().map_err(|source| Error::Spawn { command: command.clone(), source })?;
    if output.status.success() {
        return Ok(output);
    }
    Err(Error::Failed {
        what: what.to_string(),
        command,
        status: output.status,
        output: output_text(&output),
        log: log.map(|path| Box::new(log_tail(path))),
    })
}

/// Stderr followed by stdout, trimmed.
pub(crate) fn output_text(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    [stderr.trim(), stdout.trim()].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join("\n")
}

/// The last 30 lines (at most 8 KiB) of the file at `path`.
pub fn log_tail(path: &Path) -> LogTail {
    const MAX_BYTES: u64 = 8 * 1024;
    const MAX_LINES: usize = 30;
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(MAX_BYTES);
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(start)).is_ok() && file.read_to_end(&mut bytes).is_ok() {
            let all = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = all.lines().collect();
            // Drop a partial first line when we started mid-file.
            let skip_partial = usize::from(start > 0 && lines.len() > 1);
            let from = lines.len().saturating_sub(MAX_LINES).max(skip_partial);
            text = lines[from..].join("\n");
        }
    }
    LogTail { path: path.to_path_buf(), text }
}
