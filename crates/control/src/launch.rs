//! Starting and stopping each kind of node.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nodes::{PostgresSpec, RedisSpec};
use topology::{Node, Role, Topology};

use crate::cluster::Event;
use crate::{Shared, log_path};

/// The database every shard server holds.
pub(crate) const DATABASE: &str = "millions";
/// The superuser of every PostgreSQL server.
pub(crate) const PG_USER: &str = "millions";
/// How long a web server or worker may drain when stopped.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long a started process may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The directory of node `name`'s data (PostgreSQL's data directory is its `data/`).
fn node_dir(run_dir: &Path, name: &str) -> std::path::PathBuf {
    run_dir.join("nodes").join(name)
}

/// The PostgreSQL spec of node `node`.
pub(crate) fn pg_spec(shared: &Shared, node: &Node) -> PostgresSpec {
    let dir = node_dir(&shared.opts.run_dir, &node.name);
    let mut spec =
        PostgresSpec::new(&dir, node.addr.ip(), node.addr.port(), PG_USER, &shared.secrets.postgres);
    spec.log_file = log_path(&shared.opts.run_dir, &node.name);
    spec.durability = shared.opts.durability;
    spec
}

fn redis_spec(shared: &Shared, node: &Node) -> RedisSpec {
    let dir = shared.opts.run_dir.join("nodes").join(&node.name);
    let mut spec = RedisSpec::new(&dir, node.addr.ip(), node.addr.port(), &shared.secrets.redis);
    spec.log_file = log_path(&shared.opts.run_dir, &node.name);
    // Sessions live here: they must survive a crash of the server.
    spec.persistent = true;
    spec
}

fn slot_name(node: &Node) -> String {
    node.name.replace('-', "_")
}

/// Connection URL of each shard's initial primary, in shard order: the
/// credentials and database a process uses; it routes by the published map.
fn initial_urls(shared: &Shared) -> Vec<String> {
    crate::primary_urls_with(&shared.opts.topology, None, &shared.secrets.postgres)
}

/// Connection URL of each shard's current primary, in shard order.
pub(crate) fn shard_urls(shared: &Shared) -> Vec<String> {
    crate::primary_urls_with(
        &shared.opts.topology,
        Some(&shared.cluster.snapshot()),
        &shared.secrets.postgres,
    )
}

/// The Redis node a node of `dc` uses: its DC's first, else the first anywhere.
fn redis_node_for<'t>(t: &'t Topology, dc: &str) -> &'t Node {
    t.nodes_of(Role::Redis)
        .find(|n| n.dc == dc)
        .or_else(|| t.nodes_of(Role::Redis).next())
        .expect("a validated topology with web servers or workers has a Redis")
}

/// The Redis nodes the other DCs use, each once and never `dc`'s own: a node of
/// `dc` writes invalidations and timelines to them too (ADR 0008).
fn redis_peer_nodes<'t>(t: &'t Topology, dc: &str) -> Vec<&'t Node> {
    let own = redis_node_for(t, dc);
    let mut peers: Vec<&Node> = Vec::new();
    for other in t.dcs().iter().filter(|d| d.name != dc) {
        let node = redis_node_for(t, &other.name);
        if node.name != own.name && !peers.iter().any(|p| p.name == node.name) {
            peers.push(node);
        }
    }
    peers
}

/// The URL of the Redis a node of `dc` uses.
fn redis_for(shared: &Shared, dc: &str) -> String {
    redis_spec(shared, redis_node_for(&shared.opts.topology, dc)).url()
}

/// The URLs (with their passwords) of the other DCs' Redis servers.
fn redis_peers_for(shared: &Shared, dc: &str) -> Vec<String> {
    redis_peer_nodes(&shared.opts.topology, dc).into_iter().map(|n| redis_spec(shared, n).url()).collect()
}

fn process_config(shared: &Shared, node: &Node) -> anyhow::Result<std::path::PathBuf> {
    let run_dir = &shared.opts.run_dir;
    let store = run_dir.join("objects");
    let mut text = format!(
        "listen = \"{addr}\"\n\n[database]\nshards = {shards:?}\ncluster_url = \"http://{api}/api/cluster\"\n\n\
         [redis]\nurl = \"{redis}\"\npeers = {peers:?}\n\n[media]\nstore_dir = {store:?}\n",
        addr = node.addr,
        api = shared.api_addr,
        shards = initial_urls(shared),
        redis = redis_for(shared, &node.dc),
        peers = redis_peers_for(shared, &node.dc),
        store = store.display().to_string(),
    );
    if node.role == Role::Worker {
        text.push_str(&format!("\n[worker]\nid = \"{}\"\n", node.name));
    }
    let path = run_dir.join("nodes").join(format!("{}.toml", node.name));
    std::fs::create_dir_all(run_dir.join("nodes"))?;
    write_private(&path, &text)?;
    Ok(path)
}

async fn http_ready(addr: std::net::SocketAddr) -> bool {
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(2)).build() else { return false };
    client.get(format!("http://{addr}/readyz")).send().await.is_ok_and(|r| r.status().is_success())
}

/// Start node `name` (used at start-up and by the supervisor and `chaos restart`).
pub(crate) async fn start_node(shared: &Shared, name: &str) -> anyhow::Result<()> {
    let node = shared.opts.topology.node(name).with_context(|| format!("no node named {name}"))?.clone();
    let (process, child) = match node.role {
        Role::Postgres => {
            start_postgres_node(shared, &node).await?;
            (running_process(&shared.opts.run_dir, &node), None)
        }
        Role::Redis => {
            let spec = redis_spec(shared, &node);
            let pid = tokio::task::spawn_blocking(move || nodes::start_redis(&spec)).await??;
            let process = nodes::ProcessId::of(pid)
                .with_context(|| format!("{name} (pid {pid}) exited as soon as it was ready"))?;
            if let Err(e) = nodes::write_pid_file(&pid_file(&shared.opts.run_dir, name), process) {
                let _ = tokio::task::spawn_blocking(move || nodes::stop_process(process, STOP_GRACE)).await;
                return Err(e.into());
            }
            (Some(process), None)
        }
        Role::Web | Role::Worker | Role::LoadBalancer => {
            let config = match node.role {
                Role::LoadBalancer => crate::lb::write_config(shared, &node)?,
                _ => process_config(shared, &node)?,
            };
            let log = log_path(&shared.opts.run_dir, &node.name);
            let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
            let role = match node.role {
                Role::Web => "web",
                Role::LoadBalancer => "lb",
                _ => "worker",
            };
            let child = Command::new(&shared.opts.exe)
                .args([role, "--config"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .process_group(0)
                .spawn()
                .with_context(|| format!("starting {name}"))?;
            let mut child = child;
            let ready = wait_ready(shared, &node, &mut child, &log).await;
            if let Err(e) = ready {
                // Nothing is left running by a start that failed.
                let pid = child.id();
                let stopped = tokio::task::spawn_blocking(move || {
                    let _ = nodes::stop_pid(pid, STOP_GRACE);
                    child.wait()
                })
                .await;
                tracing::warn!(node = name, stopped = stopped.is_ok(), "stopped a node that failed to start");
                forget_process(&shared.opts.run_dir, &node);
                return Err(e);
            }
            (nodes::ProcessId::of(child.id()), Some(child))
        }
    };
    let mut nodes = shared.nodes.lock().await;
    if let Some(m) = nodes.iter_mut().find(|m| m.node.name == name) {
        m.process = process;
        m.child = child;
        m.stopped_on_purpose = false;
        m.started_at = Some(Instant::now());
    }
    drop(nodes);
    if node.role == Role::Web {
        crate::lb::resume(shared, &node).await;
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
) -> anyhow::Result<()> {
    let name = &node.name;
    let process = nodes::ProcessId::of(child.id());
    if let Some(process) = process {
        nodes::write_pid_file(&pid_file(&shared.opts.run_dir, name), process)?;
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    while !http_ready(node.addr).await {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{name} exited during start-up ({status}):\n{}", nodes::log_tail(log));
        }
        if Instant::now() > deadline {
            bail!("{name} was not ready within {READY_TIMEOUT:?}:\n{}", nodes::log_tail(log));
        }
        if shared.shutdown.is_cancelled() {
            bail!("{name}: shut down during its start-up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The pid file of node `name` (not PostgreSQL, which keeps its own).
fn pid_file(run_dir: &Path, name: &str) -> std::path::PathBuf {
    run_dir.join("nodes").join(format!("{name}.pid"))
}

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
/// controller (it crashed or was killed), in the order to stop them: load
/// balancers, web servers, workers, Redis, then PostgreSQL.
pub fn orphans(run_dir: &Path, topology: &topology::Topology) -> Vec<(String, nodes::ProcessId)> {
    [Role::LoadBalancer, Role::Web, Role::Worker, Role::Redis, Role::Postgres]
        .into_iter()
        .flat_map(|role| topology.nodes_of(role))
        .filter_map(|node| running_process(run_dir, node).map(|p| (node.name.clone(), p)))
        .collect()
}

/// Stop every node [`orphans`] finds (PostgreSQL with a fast shutdown, the
/// others with SIGTERM, then SIGKILL after a grace period); blocking. Returns
/// the names of the nodes stopped.
pub fn stop_orphans(run_dir: &Path, topology: &topology::Topology) -> anyhow::Result<Vec<String>> {
    let mut stopped = vec![];
    for (name, process) in orphans(run_dir, topology) {
        let node = topology.node(&name).context("an orphan is a node of the topology")?;
        match node.role {
            Role::Postgres => {
                nodes::stop_postgres(&node_dir(run_dir, &name).join("data"), nodes::StopMode::Fast)?
            }
            _ => nodes::stop_process(process, STOP_GRACE)?,
        }
        forget_process(run_dir, node);
        stopped.push(name);
    }
    Ok(stopped)
}

/// The spec `node` runs with now: a standby of `follow`, or a primary when
/// `follow` is `None`; with its shard's synchronous standbys once they are
/// active (a standby ignores them until it is promoted, and then needs them at once).
pub(crate) fn pg_run_spec(shared: &Shared, node: &Node, follow: Option<&Node>) -> PostgresSpec {
    let mut spec = pg_spec(shared, node);
    if let Some(member) = node.shard {
        let shard = &shared.opts.topology.shards()[member.shard.0 as usize];
        let active = shared.cluster.snapshot().shards[member.shard.0 as usize].sync_active;
        if active && let Some(names) = shard.synchronous_standby_names(&node.name) {
            spec.extra_conf.push(("synchronous_standby_names".into(), names));
        }
    }
    if let Some(primary) = follow {
        spec.extra_conf.extend(nodes::standby_conf(&pg_spec(shared, primary), &node.name, &slot_name(node)));
    }
    spec
}

/// Create `replica`'s replication slot on `primary` unless it exists.
pub(crate) async fn ensure_slot(primary: &PostgresSpec, replica: &Node) -> anyhow::Result<()> {
    let slot = slot_name(replica);
    let sql = format!(
        "SELECT pg_create_physical_replication_slot('{slot}', true) \
         WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}')"
    );
    pg_execute(primary, "postgres", &sql).await
}

/// A fresh copy of `primary` in `replica`'s data directory (pg_basebackup).
async fn rebuild(primary: &PostgresSpec, replica: &PostgresSpec, node: &Node) -> anyhow::Result<()> {
    tracing::info!(node = node.name, primary = %primary.addr(), "copying the primary (pg_basebackup)");
    let slot = slot_name(node);
    let drop_slot = format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}'"
    );
    pg_execute(primary, "postgres", &drop_slot).await?;
    let dir = replica.data_dir.clone();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let (p, r) = (primary.clone(), replica.clone());
    tokio::task::spawn_blocking(move || nodes::base_backup(&p, &r, &slot)).await??;
    Ok(())
}

/// Start a PostgreSQL node in its current role. A node that is not its
/// shard's primary starts as a standby of the primary: copied from it if it
/// has no data, rewound first if it last ran as a primary (a fenced old
/// primary), copied afresh if its data cannot be used.
async fn start_postgres_node(shared: &Shared, node: &Node) -> anyhow::Result<()> {
    let shard = node.shard.context("a PostgreSQL node belongs to a shard")?.shard.0;
    let current = shared.cluster.primary(shard);
    if current.as_deref() == Some(node.name.as_str()) {
        let spec = pg_run_spec(shared, node, None);
        tokio::task::spawn_blocking(move || nodes::start_postgres(&spec)).await??;
        return Ok(());
    }
    let current = current
        .with_context(|| format!("shard {shard} is failing over; {} waits for its new primary", node.name))?;
    let primary = shared.opts.topology.node(&current).context("the primary is in the topology")?.clone();
    let primary_spec = pg_spec(shared, &primary);
    let spec = pg_run_spec(shared, node, Some(&primary));
    if !spec.data_dir.join("PG_VERSION").exists() {
        rebuild(&primary_spec, &spec, node).await?;
    } else if !spec.data_dir.join("standby.signal").exists() {
        // It last ran as a primary: drop what its successor never confirmed.
        ensure_slot(&primary_spec, node).await?;
        // A just-promoted primary's control file names its new timeline only
        // after a checkpoint; before it, pg_rewind sees no divergence and
        // leaves the old primary unable to follow.
        pg_execute(&primary_spec, "postgres", "CHECKPOINT").await?;
        let (target, source) = (spec.clone(), primary_spec.clone());
        match tokio::task::spawn_blocking(move || nodes::rewind_postgres(&target, &source)).await? {
            Ok(()) => shared.cluster.record(Event::new(
                shard,
                "rejoined",
                &node.name,
                format!("{} rewound (pg_rewind) and rejoined as a replica of {}", node.name, primary.name),
            )),
            Err(e) => {
                tracing::warn!(node = node.name, error = %e, "pg_rewind failed; copying the primary instead");
                rebuild(&primary_spec, &spec, node).await?;
            }
        }
    } else {
        ensure_slot(&primary_spec, node).await?;
    }
    let first = spec.clone();
    match tokio::task::spawn_blocking(move || nodes::start_postgres(&first)).await? {
        Ok(()) => Ok(()),
        Err(e @ nodes::Error::AlreadyRunning { .. }) => Err(e.into()),
        Err(e) => {
            tracing::warn!(node = node.name, error = %e, "the replica does not start; copying the primary afresh");
            rebuild(&primary_spec, &spec, node).await?;
            tokio::task::spawn_blocking(move || nodes::start_postgres(&spec)).await??;
            shared.cluster.record(Event::new(
                shard,
                "replica-rebuilt",
                &node.name,
                format!("{} rebuilt from {} (pg_basebackup)", node.name, primary.name),
            ));
            Ok(())
        }
    }
}

/// Stop node `name` on purpose (it is not restarted); a web server is drained from
/// its load balancers first.
pub(crate) async fn stop_node(shared: &Shared, name: &str) -> anyhow::Result<()> {
    if let Some(node) = shared.opts.topology.node(name).filter(|n| n.role == Role::Web) {
        crate::lb::drain(shared, node).await;
    }
    let (node, process, child) = {
        let mut nodes = shared.nodes.lock().await;
        let m = nodes
            .iter_mut()
            .find(|m| m.node.name == name)
            .with_context(|| format!("no node named {name}"))?;
        m.stopped_on_purpose = true;
        m.restart_at = None;
        (m.node.clone(), m.process.take(), m.child.take())
    };
    let spec = pg_spec(shared, &node);
    let run_dir = shared.opts.run_dir.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        match node.role {
            Role::Postgres => nodes::stop_postgres(&spec.data_dir, nodes::StopMode::Fast)?,
            _ => {
                // Known here, or (a start cut short) only by its pid file.
                if let Some(process) = process.or_else(|| running_process(&run_dir, &node)) {
                    nodes::stop_process(process, STOP_GRACE)?;
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

/// Whether node `name`'s process runs.
pub(crate) async fn running_node(shared: &Shared, name: &str) -> bool {
    let mut nodes = shared.nodes.lock().await;
    nodes.iter_mut().find(|m| m.node.name == name).is_some_and(|m| m.alive())
}

/// Kill node `name` with SIGKILL, as a crash: the supervisor starts it again.
pub(crate) async fn kill_node(shared: &Shared, name: &str) -> anyhow::Result<u32> {
    let nodes = shared.nodes.lock().await;
    let m = nodes.iter().find(|m| m.node.name == name).with_context(|| format!("no node named {name}"))?;
    let pid = m.process.filter(|p| p.alive()).with_context(|| format!("{name} is not running"))?.pid;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
        .with_context(|| format!("killing {name} ({pid})"))?;
    tracing::warn!(node = name, pid, "chaos: killed");
    Ok(pid)
}

/// Run SQL on a node's database.
pub(crate) async fn pg_execute(spec: &PostgresSpec, dbname: &str, sql: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(&spec.url(dbname), tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(conn);
    let result = client.batch_execute(sql).await;
    drop(client);
    let _ = conn.await;
    result.with_context(|| format!("on {}: {sql}", spec.addr()))
}

/// Start every node, in order: primaries (then migrate), replicas (then switch
/// synchronous shards to synchronous commit), Redis, workers, web servers, load
/// balancers. A node still running from an earlier controller is adopted, not
/// restarted.
pub(crate) async fn start_all(shared: &Shared) -> anyhow::Result<()> {
    let topology = shared.opts.topology.clone();
    // Shutdown (a signal, `down`, `up` giving up) takes effect between steps:
    // a step under way (initdb, a base backup) runs to its end, and the caller
    // stops whatever was started.
    let go_on = || -> anyhow::Result<()> {
        anyhow::ensure!(!shared.shutdown.is_cancelled(), "shut down during start-up");
        Ok(())
    };
    // Primaries.
    for shard in topology.shards() {
        go_on()?;
        let name =
            shared.cluster.primary(shard.id.0).context("a shard has no primary: run `millions down`")?;
        let node = topology.node(&name).context("the primary is in the topology")?.clone();
        if !adopt(shared, &node).await {
            let spec = pg_spec(shared, &node);
            tracing::info!(node = node.name, addr = %node.addr, "starting PostgreSQL primary");
            tokio::task::spawn_blocking(move || nodes::init_postgres(&spec)).await??;
            go_on()?;
            start_node(shared, &node.name).await?;
        }
        let spec = pg_spec(shared, &node);
        let (client, conn) = tokio_postgres::connect(&spec.url("postgres"), tokio_postgres::NoTls).await?;
        let conn = tokio::spawn(conn);
        let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DATABASE]).await?;
        if exists.is_none() {
            client.batch_execute(&format!("CREATE DATABASE {DATABASE}")).await?;
        }
        drop(client);
        let _ = conn.await;
    }
    go_on()?;
    data::migrate(&shard_urls(shared)).await.context("migrating the shards")?;
    // Replicas.
    for shard in topology.shards() {
        let primary = shared.cluster.primary(shard.id.0);
        for node in topology.shard_nodes(shard.id).filter(|n| Some(&n.name) != primary.as_ref()) {
            go_on()?;
            if !adopt(shared, node).await {
                tracing::info!(node = node.name, addr = %node.addr, "starting PostgreSQL replica");
                start_node(shared, &node.name).await?;
            }
        }
        if shard.synchronous_standby_names("").is_some() {
            // Only now: with no replica connected, every commit would wait.
            shared.cluster.update(|s| s.shards[shard.id.0 as usize].sync_active = true)?;
            for node in topology.shard_nodes(shard.id) {
                let follow = primary.as_ref().filter(|p| **p != node.name).and_then(|p| topology.node(p));
                let spec = pg_run_spec(shared, node, follow);
                tokio::task::spawn_blocking(move || nodes::reload_postgres(&spec)).await??;
            }
        }
    }
    for role in [Role::Redis, Role::Worker, Role::Web, Role::LoadBalancer] {
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

/// Adopt `node` if its process still runs from an earlier controller.
async fn adopt(shared: &Shared, node: &Node) -> bool {
    let Some(process) = running_process(&shared.opts.run_dir, node) else { return false };
    tracing::info!(node = node.name, pid = process.pid, "adopting a running node");
    let mut nodes = shared.nodes.lock().await;
    if let Some(m) = nodes.iter_mut().find(|m| m.node.name == node.name) {
        m.process = Some(process);
        m.started_at = Some(Instant::now());
    }
    true
}

/// Stop every node that runs, in reverse start order.
pub(crate) async fn stop_all(shared: &Shared) {
    let names: Vec<String> = shared.nodes.lock().await.iter().rev().map(|m| m.node.name.clone()).collect();
    for name in names {
        if let Err(e) = stop_node(shared, &name).await {
            tracing::error!(node = name, error = format!("{e:#}"), "stopping failed");
        }
    }
}

#[cfg(test)]
mod tests {
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
    fn each_dc_writes_to_the_other_dcs_redis_servers() {
        let names = |nodes: Vec<&Node>| nodes.into_iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        let two = topology::preset("default").unwrap();
        assert_eq!(redis_node_for(&two, "dc1").name, "dc1-redis-1");
        assert_eq!(names(redis_peer_nodes(&two, "dc1")), ["dc2-redis-1"]);
        assert_eq!(names(redis_peer_nodes(&two, "dc2")), ["dc1-redis-1"]);
        let one = topology::preset("single").unwrap();
        assert!(redis_peer_nodes(&one, "dc1").is_empty(), "one DC: no peers");
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
