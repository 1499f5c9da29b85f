//! The one error type of this crate.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// The last lines of a server's log file, attached to errors so that the
/// reason a server did not start is in the message itself.
#[derive(Debug, Clone)]
pub struct LogTail {
    /// Which file the lines come from, so the reader can open the whole log.
    pub path: PathBuf,
    /// The last lines of that file (empty if the file is empty or unreadable).
    pub text: String,
}

impl fmt::Display for LogTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.trim().is_empty() {
            write!(f, "\n(log {} is empty or missing)", self.path.display())
        } else {
            write!(f, "\n--- last lines of {} ---\n{}", self.path.display(), self.text.trim_end())
        }
    }
}

/// Everything that can go wrong while starting, checking or stopping a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program we need is not installed.
    #[error("`{program}` not found (looked in: {searched}); {hint}")]
    NotFound {
        /// The program's file name, e.g. `initdb`.
        program: String,
        /// Where we looked, so the reader can check.
        searched: String,
        /// How to install it.
        hint: &'static str,
    },

    /// A program could not be started at all.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line we tried to run.
        command: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A program ran and exited unsuccessfully.
    #[error("{what} failed: `{command}` exited with {status}{}{}", output_suffix(.output), log_suffix(.log))]
    Failed {
        /// What we were trying to do, e.g. "start PostgreSQL on 127.0.0.1:5432".
        what: String,
        /// The command line that failed.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr (and stdout), trimmed.
        output: String,
        /// The server log, when the program manages a server that writes one.
        log: Option<Box<LogTail>>,
    },

    /// A server did not become ready: it exited, or did not answer in time.
    #[error("{what} failed: {reason}{}", log_suffix(.log))]
    NotReady {
        /// What we were waiting for, e.g. "start Redis on 127.0.0.1:6379".
        what: String,
        /// Why we gave up.
        reason: String,
        /// The server log, if it writes one.
        log: Option<Box<LogTail>>,
    },

    /// PostgreSQL must be started on a data directory where it is not running yet.
    #[error("PostgreSQL is already running in {}; stop it first", data_dir.display())]
    AlreadyRunning {
        /// The data directory of the running server.
        data_dir: PathBuf,
    },

    /// We are root, and PostgreSQL refuses to run as root, but there is no OS
    /// user to run it as.
    #[error(
        "PostgreSQL refuses to run as root and there is no OS user `postgres` to run it as; \
         install the Debian package postgresql (it creates that user) or run as an unprivileged user"
    )]
    NoPostgresUser,

    /// A directory the PostgreSQL OS user must reach is closed to it.
    #[error(
        "{} is not reachable by OS user `{user}` ({reason}); \
         put the PostgreSQL directories below directories that user can enter (e.g. chmod o+x)",
        path.display()
    )]
    NotReachable {
        /// The directory the user cannot enter.
        path: PathBuf,
        /// The OS user PostgreSQL runs as.
        user: String,
        /// Why not (mode and owner).
        reason: String,
    },

    /// A process could not be signalled, or did not die.
    #[error("stopping pid {pid}: {reason}")]
    Stop {
        /// The process we tried to stop.
        pid: u32,
        /// What went wrong.
        reason: String,
    },

    /// A file system or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing, naming the path or address.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

fn output_suffix(output: &str) -> String {
    if output.is_empty() { String::new() } else { format!("\n--- output ---\n{output}") }
}

fn log_suffix(log: &Option<Box<LogTail>>) -> String {
    log.as_ref().map(ToString::to_string).unwrap_or_default()
}
