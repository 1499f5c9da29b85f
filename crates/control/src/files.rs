//! The run directory's layout and the files the controller writes in it:
//! `control.json` (where its API is), `secrets.json`, `nodes/` (each node's data,
//! configuration and pid file), `logs/`. At the bottom: imports no sibling.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context as _, ControlError};

/// Written to `control.json` in the run directory once the API listens, so the CLI
/// finds the controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlFile {
    /// The controller's process id.
    pub pid: u32,
    /// Its API address.
    pub api: SocketAddr,
}

/// Passwords of the deployment, generated once and kept in the run directory (0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secrets {
    /// The PostgreSQL superuser's password (every server of every shard).
    pub postgres: String,
    /// Every Redis's `requirepass`.
    pub redis: String,
    /// The bearer token of every node's admin API (load balancers, WAN gateways,
    /// DNS servers): `guard`. Generated when missing (a run directory made before
    /// it existed).
    #[serde(default)]
    pub admin: String,
}

/// The topology a run directory runs: written by `millions up`, a shard
/// appended by `millions shard add`; what a restarted controller reads.
pub fn topology_file(run_dir: &Path) -> PathBuf {
    run_dir.join("topology.toml")
}

/// For drills: with this variable in the controller's environment, a bucket
/// move (or a shard add) waits before the step the run directory's
/// [`HOLD_FILE`] names while the file is there, so a process can be killed there.
pub(crate) const HOLD_VAR: &str = "MILLIONS_MOVE_HOLD";

/// The run directory's file naming the step (`copy`, `catch-up`, …, or `add`)
/// at which a move or an add waits; removing it lets it go on.
pub(crate) const HOLD_FILE: &str = "move.hold";

/// The file naming the running controller.
pub fn control_file(run_dir: &Path) -> PathBuf {
    run_dir.join("control.json")
}

/// The running controller of `run_dir`, if its process is alive.
pub fn running(run_dir: &Path) -> Option<ControlFile> {
    let text = std::fs::read_to_string(control_file(run_dir)).ok()?;
    let file: ControlFile = serde_json::from_str(&text).ok()?;
    nodes::pid_alive(file.pid).then_some(file)
}

/// The log file of node `name`.
pub fn log_path(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join("logs").join(format!("{name}.log"))
}

/// The directory of node `name`'s data (PostgreSQL's data directory is its `data/`).
pub(crate) fn node_dir(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join("nodes").join(name)
}

/// The configuration file of node `name` (web servers, workers, load balancers).
pub(crate) fn config_path(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join("nodes").join(format!("{name}.toml"))
}

/// The pid file of node `name` (not PostgreSQL, which keeps its own).
pub(crate) fn pid_file(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join("nodes").join(format!("{name}.pid"))
}

/// Write `text` to `path` in one rename (a reader sees the old file or the new).
pub(crate) fn replace(path: &Path, text: &str) -> Result<(), ControlError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).file("writing", &tmp)?;
    std::fs::rename(&tmp, path).file("renaming into place", path)
}

/// Write `text` to `path`, readable by its owner only (it may hold passwords).
pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), ControlError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).file("creating", dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .file("writing", path)?;
    f.write_all(text.as_bytes()).file("writing", path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).file("writing", path)
}

/// `value` as pretty JSON in `path`, readable by its owner only.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<(), ControlError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| ControlError::Json {
        what: "encoding",
        path: path.to_owned(),
        source,
    })?;
    write_private(path, &text)
}

/// The deployment's secrets as kept in `run_dir`.
pub(crate) fn read_secrets(run_dir: &Path) -> Result<Secrets, ControlError> {
    let path = run_dir.join("secrets.json");
    let text = std::fs::read_to_string(&path).file("reading", &path)?;
    serde_json::from_str(&text).map_err(|source| ControlError::Json { what: "reading", path, source })
}

/// The admin token of the deployment in `run_dir` (`secrets.json`), which the
/// controller's API and every node's admin API require.
pub fn admin_token(run_dir: &Path) -> Result<String, ControlError> {
    let s = read_secrets(run_dir)?;
    if s.admin.is_empty() {
        return Err(ControlError::Invalid(format!(
            "{} has no admin token: start the topology with `millions up`",
            run_dir.join("secrets.json").display()
        )));
    }
    Ok(s.admin)
}

/// The deployment's secrets, generated on first use.
pub(crate) fn secrets(run_dir: &Path) -> Result<Secrets, ControlError> {
    let path = run_dir.join("secrets.json");
    if path.exists() {
        let mut s = read_secrets(run_dir)?;
        if s.admin.is_empty() {
            s.admin = nodes::random_secret(32);
            write_json(&path, &s)?;
        }
        return Ok(s);
    }
    let s = Secrets {
        postgres: nodes::random_secret(32),
        redis: nodes::random_secret(32),
        admin: nodes::random_secret(32),
    };
    write_json(&path, &s)?;
    Ok(s)
}
