//! `millions bench --scenario spike|queue-burst`: the controller's scaled roles
//! (`GET /api/scale`) followed while the load runs, and after it until they are
//! back where they started, so the report can say when each changed against
//! the step in the load.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control::scale::RoleStatus;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the roles are read.
const EVERY: Duration = Duration::from_millis(250);

/// The roles as read at one moment.
#[derive(Debug, Clone)]
struct Sample {
    /// When (unix ms).
    at_ms: i64,
    /// Every scaled role then.
    roles: Vec<RoleStatus>,
}

/// A role's count changing between two reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// First seen changed (unix ms).
    pub at_ms: i64,
    /// The DC.
    pub dc: String,
    /// `web` or `worker`.
    pub role: String,
    /// The count before.
    pub from: u32,
    /// The count after.
    pub to: u32,
}

/// The roles being followed, on a task of their own.
pub struct Watch {
    /// Ends the reads.
    stop: CancellationToken,
    /// The reads so far, shared with the task making them.
    samples: Arc<Mutex<Vec<Sample>>>,
    /// The task.
    task: JoinHandle<()>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

async fn read(client: &reqwest::Client, api: SocketAddr, token: &str) -> Option<Vec<RoleStatus>> {
    let r = client.get(format!("http://{api}/api/scale")).bearer_auth(token).send().await.ok()?;
    r.error_for_status().ok()?.json().await.ok()
}

impl Watch {
    /// Start reading the controller at `api` every [`EVERY`].
    pub fn start(api: SocketAddr, token: String) -> Watch {
        let stop = CancellationToken::new();
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let (cancelled, kept) = (stop.clone(), samples.clone());
        let task = tokio::spawn(async move {
            let client =
                reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap_or_default();
            loop {
                if let Some(roles) = read(&client, api, &token).await {
                    kept.lock().expect("samples poisoned").push(Sample { at_ms: now_ms(), roles });
                }
                tokio::select! {
                    _ = cancelled.cancelled() => return,
                    _ = tokio::time::sleep(EVERY) => {}
                }
            }
        });
        Watch { stop, samples, task }
    }

    /// Whether the last read has every role at the count of the first.
    fn back(&self) -> bool {
        let samples = self.samples.lock().expect("samples poisoned");
        match (samples.first(), samples.last()) {
            (Some(first), Some(last)) => first.roles.iter().all(|f| {
                last.roles.iter().any(|l| l.dc == f.dc && l.role == f.role && l.current == f.current)
            }),
            _ => true,
        }
    }

    /// Keep reading until every role is back at the count it had at the first
    /// read, or `limit` passes; then stop. The changes seen, in order, and
    /// whether every role was back.
    pub async fn finish(self, limit: Duration) -> (Vec<Change>, bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.back() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(EVERY).await;
        }
        let back = self.back();
        self.stop.cancel();
        let _ = self.task.await;
        let samples = std::mem::take(&mut *self.samples.lock().expect("samples poisoned"));
        (changes(&samples), back)
    }
}

/// The count changes among `samples`, in order.
fn changes(samples: &[Sample]) -> Vec<Change> {
    let mut out = vec![];
    for pair in samples.windows(2) {
        for now in &pair[1].roles {
            let before = pair[0].roles.iter().find(|r| r.dc == now.dc && r.role == now.role);
            if let Some(before) = before.filter(|b| b.current != now.current) {
                out.push(Change {
                    at_ms: pair[1].at_ms,
                    dc: now.dc.clone(),
                    role: now.role.clone(),
                    from: before.current,
                    to: now.current,
                });
            }
        }
    }
    out
}

/// The report's lines about scaling: each change, in seconds into the measured
/// window (which starts at `measured_from_ms` and lasts `duration_secs`), and
/// against the step (`step`: its start and end in the window, in seconds) or
/// the end of the load.
pub fn render(
    changes: &[Change],
    back: bool,
    measured_from_ms: i64,
    duration_secs: f64,
    step: Option<(f64, f64)>,
) -> String {
    let mut out = String::from("scaling (the controller's counts, read every 250 ms):\n");
    if changes.is_empty() {
        out.push_str("  no web server or worker was added or removed\n");
    }
    for c in changes {
        let t = (c.at_ms - measured_from_ms) as f64 / 1000.0;
        let against = match step {
            _ if t >= duration_secs => format!(", {:.1} s after the load ended", t - duration_secs),
            _ if t < 0.0 => ", before the measured window (the run's logins)".to_owned(),
            Some((from, to)) if c.to > c.from && t >= from && t < to => {
                format!(", {:.1} s after the step up", t - from)
            }
            Some((_, to)) if c.to < c.from && t >= to => format!(", {:.1} s after the step down", t - to),
            _ => String::new(),
        };
        out.push_str(&format!("  {t:>7.1} s  {} {}: {} → {}{against}\n", c.dc, c.role, c.from, c.to));
    }
    if !back {
        out.push_str("  not every role was back at its starting count when the watch ended\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(dc: &str, role: &str, current: u32) -> RoleStatus {
        RoleStatus {
            dc: dc.into(),
            role: role.into(),
            current,
            desired: current,
            min: 1,
            max: 4,
            autoscaled: true,
            last_decision: None,
        }
    }

    #[test]
    fn changes_are_read_from_consecutive_samples_and_placed_against_the_step() {
        let s = |at_ms, web, worker| Sample {
            at_ms,
            roles: vec![role("dc1", "web", web), role("dc1", "worker", worker)],
        };
        let samples = [
            s(1_000, 2, 1),
            s(1_250, 2, 1),
            s(13_000, 3, 1),
            s(13_250, 4, 2),
            s(40_000, 3, 2),
            s(70_000, 2, 1),
        ];
        let c = changes(&samples);
        let seen: Vec<(i64, &str, u32, u32)> =
            c.iter().map(|c| (c.at_ms, c.role.as_str(), c.from, c.to)).collect();
        assert_eq!(
            seen,
            [
                (13_000, "web", 2, 3),
                (13_250, "web", 3, 4),
                (13_250, "worker", 1, 2),
                (40_000, "web", 4, 3),
                (70_000, "web", 3, 2),
                (70_000, "worker", 2, 1)
            ]
        );
        // Measured from 0 for 60 s, the step from 10 s to 30 s.
        let text = render(&c, true, 0, 60.0, Some((10.0, 30.0)));
        assert!(text.contains("13.0 s  dc1 web: 2 → 3, 3.0 s after the step up"), "{text}");
        assert!(text.contains("40.0 s  dc1 web: 4 → 3, 10.0 s after the step down"), "{text}");
        assert!(text.contains("70.0 s  dc1 web: 3 → 2, 10.0 s after the load ended"), "{text}");
        let early = Change { at_ms: -5_000, dc: "dc1".into(), role: "web".into(), from: 2, to: 4 };
        let late = Change { at_ms: 61_000, dc: "dc1".into(), role: "web".into(), from: 2, to: 3 };
        let text = render(&[early, late], true, 0, 60.0, Some((10.0, 30.0)));
        assert!(text.contains("-5.0 s  dc1 web: 2 → 4, before the measured window"), "{text}");
        assert!(text.contains("61.0 s  dc1 web: 2 → 3, 1.0 s after the load ended"), "{text}");
        assert!(!text.contains("not every role"), "{text}");
        let none = render(&[], false, 0, 60.0, None);
        assert!(
            none.contains("no web server or worker") && none.contains("not every role was back"),
            "{none}"
        );
    }
}
