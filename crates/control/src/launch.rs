//! Starting and stopping nodes: one node (its role's way), all of them in order at
//! start-up (adopting what an earlier controller left running), all of them at
//! shutdown in reverse; `kill` for chaos.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use topology::{Node, Role};

use crate::configs::{pg_run_spec, pg_spec, redis_spec, shard_urls, write_process_config};
use crate::error::{Context as _, ControlError, process};
use crate::files::{log_path, pid_file};
use crate::processes::{STOP_GRACE, forget_process, running_process};
use crate::shared::{DATABASE, Shared};
use crate::{cdn, dns, lb, pgadmin, postgres, wan};

/// How long a started process may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Where `node` answers `/readyz`: a DNS server, a load balancer and a CDN edge
/// on their admin listener (a public entry refuses internal paths), the others
/// on their own address.
pub(crate) fn readyz_addr(node: &Node) -> std::net::SocketAddr {
    match node.role {
        Role::Dns | Role::LoadBalancer | Role::Cdn => node.admin_addr().unwrap_or(node.addr),
        _ => node.addr,
    }
}

async fn http_ready(addr: std::net::SocketAddr) -> bool {
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(2)).build() else { return false };
    client.get(format!("http://{addr}/readyz")).send().await.is_ok_and(|r| r.status().is_success())
}

/// The node of this name.
fn node(shared: &Shared, name: &str) -> Result<Node, ControlError> {
    shared.topology().node(name).cloned().ok_or_else(|| ControlError::UnknownNode(name.to_owned()))
}

/// Start node `name` (used at start-up and by the supervisor and `chaos restart`).
pub(crate) async fn start_node(shared: &Shared, name: &str) -> Result<(), ControlError> {
    let node = node(shared, name)?;
    let run_dir = &shared.opts.run_dir;
    let (process_id, child) = match node.role {
        Role::Postgres => {
            postgres::start_node(shared, &node).await?;
            (running_process(run_dir, &node), None)
        }
        Role::Redis => {
            let spec = redis_spec(shared, &node);
            let pid = tokio::task::spawn_blocking(move || nodes::start_redis(&spec))
                .await?
                .map_err(process(name))?;
            let id = nodes::ProcessId::of(pid).ok_or_else(|| {
                ControlError::NotReady(format!("{name} (pid {pid}) exited as soon as it was ready"))
            })?;
            if let Err(e) = nodes::write_pid_file(&pid_file(run_dir, name), id) {
                let _ = tokio::task::spawn_blocking(move || nodes::stop_process(id, STOP_GRACE)).await;
                return Err(process(name)(e));
            }
            (Some(id), None)
        }
        Role::Web | Role::Worker | Role::LoadBalancer | Role::Dns | Role::Wan | Role::Cdn => {
            let config = match node.role {
                Role::LoadBalancer => lb::write_config(shared, &node)?,
                Role::Cdn => cdn::write_config(shared, &node)?,
                Role::Dns => dns::write_config(shared, &node)?,
                Role::Wan => wan::write_config(shared, &node)?,
                _ => write_process_config(shared, &node)?,
            };
            let log = log_path(run_dir, &node.name);
            let out =
                std::fs::OpenOptions::new().create(true).append(true).open(&log).file("opening", &log)?;
            let err = out.try_clone().file("opening", &log)?;
            let mut child = Command::new(&shared.opts.exe)
                .args([node.role.key(), "--config"])
                .arg(&config)
                // Its log lines into its log file, rotated by size
                // (telemetry::output); stdout and stderr append there too, for
                // what is written before logging starts or after a panic.
                .env(telemetry::output::LOG_FILE_ENV, &log)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0)
                .spawn()
                .map_err(|source| ControlError::Io { what: format!("starting {name}"), source })?;
            if let Err(e) = wait_ready(shared, &node, &mut child, &log).await {
                // Nothing is left running by a start that failed.
                let pid = child.id();
                let stopped = tokio::task::spawn_blocking(move || {
                    let _ = nodes::stop_pid(pid, STOP_GRACE);
                    child.wait()
                })
                .await;
                tracing::warn!(node = name, stopped = stopped.is_ok(), "stopped a node that failed to start");
                forget_process(run_dir, &node);
                return Err(e);
            }
            (nodes::ProcessId::of(child.id()), Some(child))
        }
    };
    let mut nodes = shared.nodes.lock().await;
    if let Some(m) = nodes.iter_mut().find(|m| m.node.name == name) {
        m.process = process_id;
        m.child = child;
        m.stopped_on_purpose = false;
        m.started_at = Some(Instant::now());
    }
    drop(nodes);
    if node.role == Role::Web {
        lb::resume(shared, &node).await;
    }
    if node.role == Role::Cdn {
        cdn::replay_missed(shared, &node).await;
    }
    Ok(())
}

/// Wait until a just-spawned web server, worker or load balancer answers
/// `/readyz`; an error if it exits first or is not ready in time.
async fn wait_ready(
    shared: &Shared,
    node: &Node,
    child: &mut std::process::Child,
    log: &Path,
) -> Result<(), ControlError> {
    let name = &node.name;
    if let Some(id) = nodes::ProcessId::of(child.id()) {
        nodes::write_pid_file(&pid_file(&shared.opts.run_dir, name), id).map_err(process(name))?;
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    while !http_ready(readyz_addr(node)).await {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ControlError::NotReady(format!(
                "{name} exited during start-up ({status}):\n{}",
                nodes::log_tail(log)
            )));
        }
        if Instant::now() > deadline {
            return Err(ControlError::NotReady(format!(
                "{name} was not ready within {READY_TIMEOUT:?}:\n{}",
                nodes::log_tail(log)
            )));
        }
        if shared.shutdown.is_cancelled() {
            return Err(ControlError::ShutDown);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Stop node `name` on purpose (it is not restarted); a web server is drained from
/// its load balancers first.
pub(crate) async fn stop_node(shared: &Shared, name: &str) -> Result<(), ControlError> {
    let node = node(shared, name)?;
    if node.role == Role::Web {
        lb::drain(shared, &node).await;
    }
    let (id, child) = {
        let mut nodes = shared.nodes.lock().await;
        let m = nodes
            .iter_mut()
            .find(|m| m.node.name == name)
            .ok_or_else(|| ControlError::UnknownNode(name.into()))?;
        m.stopped_on_purpose = true;
        m.restart_at = None;
        (m.process.take(), m.child.take())
    };
    let spec = pg_spec(shared, &node);
    let run_dir = shared.opts.run_dir.clone();
    tokio::task::spawn_blocking(move || -> Result<(), ControlError> {
        match node.role {
            Role::Postgres => {
                nodes::stop_postgres(&spec.data_dir, nodes::StopMode::Fast).map_err(process(&node.name))?
            }
            _ => {
                // Known here, or (a start cut short) only by its pid file.
                if let Some(id) = id.or_else(|| running_process(&run_dir, &node)) {
                    nodes::stop_process(id, STOP_GRACE).map_err(process(&node.name))?;
                }
            }
        }
        if let Some(mut child) = child {
            let _ = child.wait();
        }
        forget_process(&run_dir, &node);
        Ok(())
    })
    .await?
}

/// Kill node `name` with SIGKILL, as a crash: the supervisor starts it again.
pub(crate) async fn kill_node(shared: &Shared, name: &str) -> Result<u32, ControlError> {
    let nodes = shared.nodes.lock().await;
    let m =
        nodes.iter().find(|m| m.node.name == name).ok_or_else(|| ControlError::UnknownNode(name.into()))?;
    let pid = m
        .process
        .filter(|p| p.alive())
        .ok_or_else(|| ControlError::Refused(format!("{name} is not running")))?
        .pid;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| ControlError::Io { what: format!("killing {name} ({pid})"), source: e.into() })?;
    tracing::warn!(node = name, pid, "chaos: killed");
    Ok(pid)
}

/// Start every node, in order: WAN gateways, primaries (then migrate), replicas (then switch
/// synchronous shards to synchronous commit), Redis, workers, web servers, load
/// balancers, CDN edges, DNS servers. A node still running from an earlier controller is adopted, not
/// restarted.
pub(crate) async fn start_all(shared: &Shared) -> Result<(), ControlError> {
    let topology = shared.topology().clone();
    // Shutdown (a signal, `down`, `up` giving up) takes effect between steps:
    // a step under way (initdb, a base backup) runs to its end, and the caller
    // stops whatever was started.
    let go_on = || if shared.shutdown.is_cancelled() { Err(ControlError::ShutDown) } else { Ok(()) };
    // The WAN gateways: a replica in another DC is copied and streams through them.
    for node in topology.nodes_of(Role::Wan) {
        go_on()?;
        if !adopt(shared, node).await {
            tracing::info!(node = node.name, addr = %node.addr, "starting");
            start_node(shared, &node.name).await?;
        }
    }
    // Primaries.
    for shard in topology.shards() {
        go_on()?;
        start_primary(shared, shard.id.0).await?;
    }
    go_on()?;
    data::migrate(&shard_urls(shared)).await.map_err(ControlError::Migrate)?;
    // Replicas.
    for shard in topology.shards() {
        start_replicas(shared, shard.id.0, &go_on).await?;
    }
    for role in [Role::Redis, Role::Worker, Role::Web, Role::LoadBalancer, Role::Cdn, Role::Dns] {
        for node in topology.nodes_of(role) {
            go_on()?;
            if !adopt(shared, node).await {
                tracing::info!(node = node.name, addr = %node.addr, "starting");
                start_node(shared, &node.name).await?;
            }
        }
    }
    Ok(())
}

/// Start (or adopt) `shard`'s primary, made with initdb the first time, and
/// make sure it holds the database.
pub(crate) async fn start_primary(shared: &Shared, shard: u16) -> Result<(), ControlError> {
    let name = shared
        .cluster
        .primary(shard)
        .ok_or_else(|| ControlError::Refused(format!("shard {shard} has no primary: run `millions down`")))?;
    let node = node(shared, &name)?;
    if !adopt(shared, &node).await {
        let spec = pg_spec(shared, &node);
        tracing::info!(node = node.name, addr = %node.addr, "starting PostgreSQL primary");
        tokio::task::spawn_blocking(move || nodes::init_postgres(&spec)).await?.map_err(process(&name))?;
        if shared.shutdown.is_cancelled() {
            return Err(ControlError::ShutDown);
        }
        start_node(shared, &node.name).await?;
    }
    pgadmin::ensure_database(&pg_spec(shared, &node), DATABASE).await
}

/// Start (or adopt) `shard`'s replicas once its primary runs and is migrated,
/// then switch a synchronous shard to synchronous commit; a shard still joining
/// then joins the published map. `go_on` says whether to go on between steps.
pub(crate) async fn start_replicas(
    shared: &Shared,
    shard: u16,
    go_on: &impl Fn() -> Result<(), ControlError>,
) -> Result<(), ControlError> {
    let topology = shared.topology();
    let id = topology::ShardId(shard);
    let primary = shared.cluster.primary(shard);
    for node in topology.shard_nodes(id).filter(|n| Some(&n.name) != primary.as_ref()) {
        go_on()?;
        if !adopt(shared, node).await {
            tracing::info!(node = node.name, addr = %node.addr, "starting PostgreSQL replica");
            start_node(shared, &node.name).await?;
        }
    }
    if topology.shards()[usize::from(shard)].synchronous_standby_names("").is_some() {
        // Only now: with no replica connected, every commit would wait.
        shared.cluster.update(|s| s.shards[usize::from(shard)].sync_active = true)?;
        for node in topology.shard_nodes(id) {
            let follow = primary.as_ref().filter(|p| **p != node.name).and_then(|p| topology.node(p));
            postgres::reload(&node.name, pg_run_spec(shared, node, follow)).await?;
        }
    }
    if let Some(epoch) = shared.cluster.update(|s| s.shards[usize::from(shard)].joining = false)? {
        tracing::info!(shard, epoch, "the shard joined the published map");
    }
    Ok(())
}

/// Adopt `node` if its process still runs from an earlier controller.
async fn adopt(shared: &Shared, node: &Node) -> bool {
    let Some(id) = running_process(&shared.opts.run_dir, node) else { return false };
    tracing::info!(node = node.name, pid = id.pid, "adopting a running node");
    let mut nodes = shared.nodes.lock().await;
    if let Some(m) = nodes.iter_mut().find(|m| m.node.name == node.name) {
        m.process = Some(id);
        m.started_at = Some(Instant::now());
    }
    true
}

/// Stop every node that runs, in reverse start order.
pub(crate) async fn stop_all(shared: &Shared) {
    let names: Vec<String> = shared.nodes.lock().await.iter().rev().map(|m| m.node.name.clone()).collect();
    for name in names {
        if let Err(e) = stop_node(shared, &name).await {
            tracing::error!(node = name, error = %e, "stopping failed");
        }
    }
}
