//! The controller's one error type: what failed, naming the node, file or
//! statement, with its source kept.

use std::path::Path;

/// Why the controller, or one of its steps, failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A file or directory of the run directory could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What was being done (`writing`, `reading`, `removing`).
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file's contents could not be read or written as JSON.
    #[error("{what} {}: {source}", path.display())]
    Json {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A statement of the controller's own failed on a PostgreSQL server.
    #[error("on {server}: {statement}: {source}")]
    Sql {
        /// The server (`host:port`).
        server: String,
        /// The statement, or what it was for.
        statement: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement of the controller's own took too long.
    #[error("on {server}: {statement}: no answer within {timeout_ms} ms")]
    SqlTimeout {
        /// The server.
        server: String,
        /// The statement.
        statement: String,
        /// The bound it exceeded.
        timeout_ms: u64,
    },
    /// Starting, stopping or signalling a process (PostgreSQL, Redis) failed.
    #[error("{node}: {source}")]
    Process {
        /// The node.
        node: String,
        /// What `nodes` said.
        #[source]
        source: nodes::Error,
    },
    /// Spawning or signalling a process of ours failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (`starting dc1-web-1`).
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The topology, or a configuration made from it, cannot run.
    #[error("{0}")]
    Invalid(String),
    /// A request to the controller is malformed (nothing was done).
    #[error("{0}")]
    BadRequest(String),
    /// The run directory's CA or a certificate cannot be made or read.
    #[error("certificates in {}: {why}", dir.display())]
    Certificate {
        /// The run directory's `tls/`.
        dir: std::path::PathBuf,
        /// What went wrong.
        why: String,
    },
    /// No node of this name in the topology.
    #[error("no node named {0}")]
    UnknownNode(String),
    /// A step could not be done now (a node not running, a shard without a primary).
    #[error("{0}")]
    Refused(String),
    /// A node did not become ready (it exited, or timed out), with its log's tail.
    #[error("{0}")]
    NotReady(String),
    /// Shutdown came during start-up: the step was not done.
    #[error("shut down during start-up")]
    ShutDown,
    /// Migrating the shards failed.
    #[error("migrating the shards: {0}")]
    Migrate(#[source] data::DataError),
    /// A blocking step's task panicked or was cancelled.
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Shorthands to turn a std error into a [`ControlError`] naming what failed.
pub(crate) trait Context<T> {
    /// An I/O error on `path` while doing `what`.
    fn file(self, what: &'static str, path: &Path) -> Result<T, ControlError>;
}

impl<T> Context<T> for Result<T, std::io::Error> {
    fn file(self, what: &'static str, path: &Path) -> Result<T, ControlError> {
        self.map_err(|source| ControlError::File { what, path: path.to_owned(), source })
    }
}

/// `nodes`' error on `node`.
pub(crate) fn process(node: &str) -> impl FnOnce(nodes::Error) -> ControlError + '_ {
    move |source| ControlError::Process { node: node.to_owned(), source }
}
