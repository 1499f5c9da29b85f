//! Where a process's log lines go: stdout, or a file of bounded size.
//!
//! A node started by the controller logs into its file in the run directory
//! (`MILLIONS_LOG_FILE`), which is rotated by size so that a node under load for
//! hours cannot fill the disk: past [`LogFile::max_bytes`] the file becomes
//! `FILE.1` (the older ones `FILE.2` …, the oldest beyond [`LogFile::keep`]
//! deleted) and a new one is started. Rotation happens between two batches of
//! whole lines, never inside a line. Every writer of the process (the JSON log,
//! the load balancer's access log) shares one output, so they rotate together.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};

/// The environment variable naming the log file (unset: stdout).
pub const LOG_FILE_ENV: &str = "MILLIONS_LOG_FILE";
/// The environment variable with the size at which the file is rotated, bytes.
pub const LOG_MAX_BYTES_ENV: &str = "MILLIONS_LOG_MAX_BYTES";
/// The environment variable with how many rotated files are kept.
pub const LOG_KEEP_ENV: &str = "MILLIONS_LOG_KEEP";
/// Rotation size when [`LOG_MAX_BYTES_ENV`] is not set: 64 MiB.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Rotated files kept when [`LOG_KEEP_ENV`] is not set: with the current file,
/// at most 4 × 64 MiB of log per node.
pub const DEFAULT_KEEP: usize = 3;

/// A log file rotated by size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// The current file; rotated ones get `.1`, `.2`, … appended.
    pub path: PathBuf,
    /// Size past which it is rotated (checked after each batch).
    pub max_bytes: usize,
    /// Rotated files kept.
    pub keep: usize,
}

impl LogFile {
    /// The log file the environment asks for, if any; a bad size or count is an
    /// error naming the variable.
    pub fn from_env() -> Result<Option<LogFile>, String> {
        let Some(path) = std::env::var_os(LOG_FILE_ENV) else { return Ok(None) };
        let var = |name: &str| std::env::var(name).ok();
        Ok(Some(LogFile {
            path: PathBuf::from(path),
            max_bytes: number(LOG_MAX_BYTES_ENV, var(LOG_MAX_BYTES_ENV).as_deref(), DEFAULT_MAX_BYTES)?,
            keep: number(LOG_KEEP_ENV, var(LOG_KEEP_ENV).as_deref(), DEFAULT_KEEP)?,
        }))
    }

    /// The current file and the rotated ones, oldest first.
    pub fn all_paths(path: &std::path::Path, keep: usize) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = (1..=keep)
            .rev()
            .map(|i| {
                let mut p = path.as_os_str().to_owned();
                p.push(format!(".{i}"));
                PathBuf::from(p)
            })
            .collect();
        paths.push(path.to_owned());
        paths
    }
}

/// The whole number above 0 that variable `name` holds, or `default` if unset.
fn number(name: &str, value: Option<&str>, default: usize) -> Result<usize, String> {
    match value {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name}={v:?}: must be a whole number above 0")),
        },
    }
}

/// One process's log output, shared by its writers.
#[derive(Clone)]
pub struct LogOutput(Arc<Mutex<Box<dyn Write + Send>>>);

impl std::fmt::Debug for LogOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogOutput")
    }
}

impl LogOutput {
    /// Into `file`, rotated by size.
    pub fn file(file: &LogFile) -> LogOutput {
        let rotate = FileRotate::new(
            &file.path,
            AppendCount::new(file.keep),
            ContentLimit::BytesSurpassed(file.max_bytes),
            Compression::None,
            None,
        );
        LogOutput(Arc::new(Mutex::new(Box::new(rotate))))
    }

    /// Into stdout.
    pub fn stdout() -> LogOutput {
        LogOutput(Arc::new(Mutex::new(Box::new(std::io::stdout()))))
    }
}

impl Write for LogOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        // One batch, whole, before any rotation.
        self.0.lock().unwrap_or_else(PoisonError::into_inner).write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).flush()
    }
}

/// The process's output, chosen once ([`crate::init_logging`] sets it; stdout
/// if nothing did).
static OUTPUT: OnceLock<LogOutput> = OnceLock::new();

/// Use `output` for every log writer of the process (the first call wins).
pub(crate) fn set(output: LogOutput) -> LogOutput {
    OUTPUT.get_or_init(|| output).clone()
}

/// The process's log output: what [`crate::init_logging`] chose, or stdout.
pub fn get() -> LogOutput {
    OUTPUT.get_or_init(LogOutput::stdout).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_past_its_size_is_rotated_between_batches_and_old_ones_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        let mut out = LogOutput::file(&LogFile { path: path.clone(), max_bytes: 100, keep: 2 });
        let batch = format!("{}\n", "x".repeat(59));
        for _ in 0..10 {
            out.write_all(batch.as_bytes()).unwrap();
            out.flush().unwrap();
        }
        let files = LogFile::all_paths(&path, 2);
        assert_eq!(
            files.iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect::<Vec<_>>(),
            ["node.log.2", "node.log.1", "node.log"]
        );
        for p in &files[..2] {
            let text = std::fs::read_to_string(p).unwrap();
            assert_eq!(text.len(), 120, "{}: two whole batches, rotated once past 100 bytes", p.display());
            assert!(text.lines().all(|l| l.len() == 59));
        }
        assert!(!dir.path().join("node.log.3").exists(), "older ones deleted");
        assert!(std::fs::metadata(&path).unwrap().len() <= 120);
    }

    #[test]
    fn sizes_and_counts_must_be_whole_numbers_above_zero() {
        assert_eq!(number(LOG_MAX_BYTES_ENV, None, 7), Ok(7));
        assert_eq!(number(LOG_MAX_BYTES_ENV, Some("1000"), 7), Ok(1000));
        let zero = number(LOG_KEEP_ENV, Some("0"), 7).unwrap_err();
        assert!(zero.contains("MILLIONS_LOG_KEEP=\"0\"") && zero.contains("above 0"), "{zero}");
        assert!(number(LOG_MAX_BYTES_ENV, Some("lots"), 7).is_err());
        assert!(number(LOG_MAX_BYTES_ENV, Some("-5"), 7).is_err());
    }
}
