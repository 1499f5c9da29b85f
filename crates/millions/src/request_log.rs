//! `millions logs --request ID`: one request's whole path across every node's log.
//!
//! A request id is made at the load balancer (or taken from the client) and
//! carried on: the load balancer's access line has it as `request_id`, the web
//! server's request line too, every line logged while a web server serves the
//! request has it in its `span`, and a job the request enqueued carries it into
//! the worker's `job` span. This module picks those lines out of the logs and
//! puts them in time order, each named by its node.

use std::io::{BufRead, BufReader};
use std::path::Path;

/// One line of the request's path.
#[derive(Debug, PartialEq)]
pub(crate) struct Found {
    /// When it was logged (RFC 3339, as the line has it; they sort as text).
    pub(crate) timestamp: String,
    /// The node whose log holds it.
    pub(crate) node: String,
    /// The line itself.
    pub(crate) line: String,
}

/// Whether `line`, a JSON log line, belongs to request `id`: its own
/// `request_id`, its span's, or any of its spans'.
fn belongs(value: &serde_json::Value, id: &str) -> bool {
    let is = |v: &serde_json::Value| v.get("request_id").and_then(|r| r.as_str()) == Some(id);
    is(value)
        || value.get("span").is_some_and(is)
        || value.get("spans").and_then(|s| s.as_array()).is_some_and(|spans| spans.iter().any(is))
}

/// The lines of request `id` in the log at `path` of node `node` (a missing
/// log has none: the node has not started yet). `keep` filters further (level,
/// time).
pub(crate) fn search(
    node: &str,
    path: &Path,
    id: &str,
    keep: impl Fn(&[u8]) -> bool,
) -> std::io::Result<Vec<Found>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        // Most lines are another request's: look for the id's bytes before parsing.
        if !line.windows(id.len()).any(|w| w == id.as_bytes()) || !keep(&line) {
            continue;
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&line) else { continue };
        if belongs(&value, id) {
            found.push(Found {
                timestamp: value["timestamp"].as_str().unwrap_or_default().to_owned(),
                node: node.to_owned(),
                line: String::from_utf8_lossy(&line).into_owned(),
            });
        }
    }
    Ok(found)
}

/// All of `found`, oldest first (lines of one node keep their order when
/// their timestamps tie).
pub(crate) fn in_time_order(mut found: Vec<Found>) -> Vec<Found> {
    found.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requests_lines_are_found_in_every_shape_and_put_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let lb = dir.path().join("lb.log");
        let web = dir.path().join("web.log");
        let worker = dir.path().join("worker.log");
        std::fs::write(
            &lb,
            "{\"timestamp\":\"2026-12-05T10:00:00.000001Z\",\"request_id\":\"r1\",\"status\":202}\n\
             {\"timestamp\":\"2026-12-05T10:00:00.000002Z\",\"request_id\":\"r10\",\"status\":200}\n",
        )
        .unwrap();
        std::fs::write(
            &web,
            "{\"timestamp\":\"2026-12-05T10:00:00.000003Z\",\"message\":\"slow query\",\"span\":{\"name\":\"request\",\"request_id\":\"r1\"}}\n\
             not json, but names r1\n\
             {\"timestamp\":\"2026-12-05T10:00:00.000000Z\",\"message\":\"request\",\"request_id\":\"r1\"}\n\
             {\"timestamp\":\"2026-12-05T10:00:00.000004Z\",\"message\":\"mentions r1 in its text only\"}\n",
        )
        .unwrap();
        std::fs::write(
            &worker,
            "{\"timestamp\":\"2026-12-05T10:00:01Z\",\"message\":\"done\",\"spans\":[{\"name\":\"job\",\"request_id\":\"r1\"}]}\n",
        )
        .unwrap();
        let mut all = Vec::new();
        for (node, path) in
            [("lb", &lb), ("web", &web), ("worker", &worker), ("absent", &dir.path().join("no.log"))]
        {
            all.extend(search(node, path, "r1", |_| true).unwrap());
        }
        let ordered = in_time_order(all);
        let nodes: Vec<&str> = ordered.iter().map(|f| f.node.as_str()).collect();
        assert_eq!(nodes, ["web", "lb", "web", "worker"], "r10 and mere mentions are not r1's");
        let none = search("web", &web, "r1", |_| false).unwrap();
        assert!(none.is_empty(), "the filter applies");
    }
}
