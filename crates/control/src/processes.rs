//! Knowing a node's process across controllers: pid files (pid *and* start time),
//! PostgreSQL's own `postmaster.pid`, adopting what an earlier controller left
//! running, and finding and stopping the nodes of a controller that is gone.

use std::path::Path;
use std::time::Duration;

use topology::{Node, Role, Topology};

use crate::error::{ControlError, process};
use crate::files::{node_dir, pid_file};

/// How long a process may take to stop after SIGTERM before it gets SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(15);

/// Forget `node`'s process: it was stopped, or seen dead (its pid file could
/// otherwise name whatever process reuses the pid).
pub(crate) fn forget_process(run_dir: &Path, node: &Node) {
    if node.role != Role::Postgres {
        let _ = std::fs::remove_file(pid_file(run_dir, &node.name));
    }
}

/// `node`'s process if it still runs from an earlier controller (which crashed
/// or was restarted): that process is adopted, not started again. Only that
/// very process: a pid file must name its pid and start time, PostgreSQL's
/// `postmaster.pid` a process working in the node's data directory. A pid file
/// naming anything else is stale and removed.
pub(crate) fn running_process(run_dir: &Path, node: &Node) -> Option<nodes::ProcessId> {
    match node.role {
        Role::Postgres => nodes::running_postmaster(&node_dir(run_dir, &node.name).join("data"))
            .and_then(nodes::ProcessId::of),
        _ => {
            let path = pid_file(run_dir, &node.name);
            let found = nodes::read_pid_file(&path);
            if found.is_none() {
                let _ = std::fs::remove_file(&path);
            }
            found
        }
    }
}

/// The nodes of `topology` whose processes still run in `run_dir` without a
/// controller (it crashed or was killed), in the order to stop them: DNS
/// servers, load balancers, web servers, workers, Redis, PostgreSQL, then the
/// WAN gateways.
pub fn orphans(run_dir: &Path, topology: &Topology) -> Vec<(String, nodes::ProcessId)> {
    [
        Role::Dns,
        Role::Cdn,
        Role::LoadBalancer,
        Role::Web,
        Role::Worker,
        Role::Redis,
        Role::Postgres,
        Role::Wan,
    ]
    .into_iter()
    .flat_map(|role| topology.nodes_of(role))
    .filter_map(|node| running_process(run_dir, node).map(|p| (node.name.clone(), p)))
    .collect()
}

/// Stop every node [`orphans`] finds (PostgreSQL with a fast shutdown, the
/// others with SIGTERM, then SIGKILL after a grace period); blocking. Returns
/// the names of the nodes stopped.
pub fn stop_orphans(run_dir: &Path, topology: &Topology) -> Result<Vec<String>, ControlError> {
    let mut stopped = vec![];
    for (name, pid) in orphans(run_dir, topology) {
        let node = topology.node(&name).ok_or_else(|| ControlError::UnknownNode(name.clone()))?;
        match node.role {
            Role::Postgres => {
                nodes::stop_postgres(&node_dir(run_dir, &name).join("data"), nodes::StopMode::Fast)
                    .map_err(process(&name))?
            }
            _ => nodes::stop_process(pid, STOP_GRACE).map_err(process(&name))?,
        }
        forget_process(run_dir, node);
        stopped.push(name);
    }
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// An unrelated process, killed when the test ends.
    struct Sleeper(std::process::Child);

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn pid_files_naming_an_unrelated_process_are_neither_adopted_nor_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path();
        let topology = topology::preset("test").unwrap();
        let mut sleeper = Sleeper(Command::new("sleep").arg("600").spawn().unwrap());
        let unrelated = nodes::ProcessId::of(sleeper.0.id()).unwrap();
        let web = topology.node("dc1-web-1").unwrap();
        let pg = topology.node("shard0-pg-1").unwrap();
        let data = node_dir(run_dir, &pg.name).join("data");
        std::fs::create_dir_all(&data).unwrap();
        // PostgreSQL's lock file left by a crash, its pid now the unrelated process's.
        std::fs::write(data.join("postmaster.pid"), format!("{}\n{}\n", unrelated.pid, data.display()))
            .unwrap();

        // The pid with a wrong start time (a reused pid), or with none at all.
        for text in [format!("{} {}\n", unrelated.pid, unrelated.start + 1), format!("{}\n", unrelated.pid)] {
            std::fs::write(pid_file(run_dir, &web.name), &text).unwrap();
            assert_eq!(running_process(run_dir, web), None, "{text:?}");
            assert!(!pid_file(run_dir, &web.name).exists(), "a stale pid file is removed");
            std::fs::write(pid_file(run_dir, &web.name), &text).unwrap();
            assert!(orphans(run_dir, &topology).is_empty(), "{text:?}");
            assert!(stop_orphans(run_dir, &topology).unwrap().is_empty());
            assert!(sleeper.0.try_wait().unwrap().is_none(), "the unrelated process was signalled");
        }
        assert_eq!(running_process(run_dir, pg), None);

        // The node's own process (pid and start time): found, and stopped.
        nodes::write_pid_file(&pid_file(run_dir, &web.name), unrelated).unwrap();
        assert_eq!(orphans(run_dir, &topology), vec![(web.name.clone(), unrelated)]);
        assert_eq!(stop_orphans(run_dir, &topology).unwrap(), vec![web.name.clone()]);
        assert!(!unrelated.alive(), "the node's own process is stopped");
        assert!(!pid_file(run_dir, &web.name).exists());
    }
}
