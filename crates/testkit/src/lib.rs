//! The test harness: real PostgreSQL and Redis servers, and the web app on port 0.
#![forbid(unsafe_code)]

mod app;
mod map;
mod servers;

pub use app::{BYPASS_TOKEN, TEST_SHARDS, TestApp, TestEnv, TestWorker, spawn_app};
pub use map::map_server;
pub use servers::*;

/// Poll `check` until it holds; fail the test, naming `what`, if it still does
/// not after a minute (a bound against hangs, not a timing claim).
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut wait = std::time::Duration::from_millis(5);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_millis(100));
    }
}

/// `promtool ARGS` (the official Prometheus checker, from Debian's prometheus
/// package, which `scripts/setup.sh test` installs), `stdin` written to it:
/// whether it passed, and all it said.
pub fn promtool(args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool (Debian's prometheus package; scripts/setup.sh test installs it)");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("writing to promtool");
    let o = child.wait_with_output().expect("promtool's output");
    (
        o.status.success(),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
    )
}

/// The names of the files below `dir`, recursively, sorted (an object store's
/// keys: tests count and compare them to show nothing was stored, or twice).
pub fn files_in(dir: &std::path::Path) -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = vec![];
    walk(dir, &mut out);
    out.sort();
    out
}
