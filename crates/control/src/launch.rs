//! Starting and stopping each kind of node.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nodes::{PostgresSpec, RedisSpec};
use topology::{Node, Role, ShardId};

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

/// The PostgreSQL spec of node `node`.
pub(crate) fn pg_spec(shared: &Shared, node: &Node) -> PostgresSpec {
    let dir = shared.opts.run_dir.join("nodes").join(&node.name);
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

/// The initial primary of `shard`.
pub(crate) fn primary_of(shared: &Shared, shard: ShardId) -> &Node {
    crate::initial_primary(&shared.opts.topology, shard)
}

fn slot_name(node: &Node) -> String {
    node.name.replace('-', "_")
}

/// Connection URL of each shard's primary, in shard order.
pub(crate) fn shard_urls(shared: &Shared) -> Vec<String> {
    crate::primary_urls_with(&shared.opts.topology, &shared.secrets.postgres)
}

/// The Redis a node of `dc` uses: its DC's first, else the first anywhere.
fn redis_for(shared: &Shared, dc: &str) -> String {
    let t = &shared.opts.topology;
    let node = t
        .nodes_in(dc)
        .find(|n| n.role == Role::Redis)
        .or_else(|| t.nodes_of(Role::Redis).next())
        .expect("a validated topology with web servers or workers has a Redis");
    redis_spec(shared, node).url()
}

fn process_config(shared: &Shared, node: &Node) -> anyhow::Result<std::path::PathBuf> {
    let run_dir = &shared.opts.run_dir;
    let store = run_dir.join("objects");
    let mut text = format!(
        "listen = \"{addr}\"\n\n[database]\nshards = {shards:?}\n\n[redis]\nurl = \"{redis}\"\n\n\
         [media]\nstore_dir = {store:?}\n",
        addr = node.addr,
        shards = shard_urls(shared),
        redis = redis_for(shared, &node.dc),
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
    let (pid, child) = match node.role {
        Role::Postgres => {
            let spec = postgres_spec_for_start(shared, &node);
            tokio::task::spawn_blocking(move || -> anyhow::Result<u32> {
                nodes::start_postgres(&spec)?;
                nodes::postmaster_pid(&spec.data_dir).context("PostgreSQL started but wrote no pid")
            })
            .await??;
            (nodes::postmaster_pid(&pg_spec(shared, &node).data_dir), None)
        }
        Role::Redis => {
            let spec = redis_spec(shared, &node);
            let pid = tokio::task::spawn_blocking(move || nodes::start_redis(&spec)).await??;
            (Some(pid), None)
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
            let pid = child.id();
            let deadline = Instant::now() + READY_TIMEOUT;
            let mut child = Some(child);
            while !http_ready(node.addr).await {
                if let Some(c) = &mut child
                    && let Ok(Some(status)) = c.try_wait()
                {
                    bail!("{name} exited during start-up ({status}):\n{}", nodes::log_tail(&log));
                }
                if Instant::now() > deadline {
                    bail!("{name} was not ready within {READY_TIMEOUT:?}:\n{}", nodes::log_tail(&log));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (Some(pid), child)
        }
    };
    let mut nodes = shared.nodes.lock().await;
    if let Some(m) = nodes.iter_mut().find(|m| m.node.name == name) {
        m.pid = pid;
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

/// A replica's spec carries the settings that make it follow its primary.
fn postgres_spec_for_start(shared: &Shared, node: &Node) -> PostgresSpec {
    let mut spec = pg_spec(shared, node);
    if let Some(member) = node.shard
        && !member.initial_primary
    {
        let primary = pg_spec(shared, primary_of(shared, member.shard));
        spec.extra_conf = nodes::standby_conf(&primary, &node.name, &slot_name(node));
    }
    spec
}

/// Stop node `name` on purpose (it is not restarted); a web server is drained from
/// its load balancers first.
pub(crate) async fn stop_node(shared: &Shared, name: &str) -> anyhow::Result<()> {
    if let Some(node) = shared.opts.topology.node(name).filter(|n| n.role == Role::Web) {
        crate::lb::drain(shared, node).await;
    }
    let (node, pid, child) = {
        let mut nodes = shared.nodes.lock().await;
        let m = nodes
            .iter_mut()
            .find(|m| m.node.name == name)
            .with_context(|| format!("no node named {name}"))?;
        m.stopped_on_purpose = true;
        m.restart_at = None;
        (m.node.clone(), m.pid.take(), m.child.take())
    };
    let spec = pg_spec(shared, &node);
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        match node.role {
            Role::Postgres => nodes::stop_postgres(&spec.data_dir, nodes::StopMode::Fast)?,
            _ => {
                if let Some(pid) = pid {
                    nodes::stop_pid(pid, STOP_GRACE)?;
                }
            }
        }
        if let Some(mut child) = child {
            let _ = child.wait();
        }
        Ok(())
    })
    .await?
}

/// Kill node `name` with SIGKILL, as a crash: the supervisor starts it again.
pub(crate) async fn kill_node(shared: &Shared, name: &str) -> anyhow::Result<u32> {
    let nodes = shared.nodes.lock().await;
    let m = nodes.iter().find(|m| m.node.name == name).with_context(|| format!("no node named {name}"))?;
    let pid = m.pid.filter(|p| nodes::pid_alive(*p)).with_context(|| format!("{name} is not running"))?;
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
/// balancers.
pub(crate) async fn start_all(shared: &Shared) -> anyhow::Result<()> {
    let topology = shared.opts.topology.clone();
    // Primaries.
    for shard in topology.shards() {
        let node = primary_of(shared, shard.id).clone();
        let spec = pg_spec(shared, &node);
        tracing::info!(node = node.name, addr = %node.addr, "starting PostgreSQL primary");
        tokio::task::spawn_blocking(move || nodes::init_postgres(&spec)).await??;
        start_node(shared, &node.name).await?;
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
    data::migrate(&shard_urls(shared)).await.context("migrating the shards")?;
    // Replicas.
    for shard in topology.shards() {
        let primary = pg_spec(shared, primary_of(shared, shard.id));
        for node in topology.shard_nodes(shard.id).filter(|n| n.shard.is_some_and(|s| !s.initial_primary)) {
            let replica = pg_spec(shared, node);
            if !replica.data_dir.join("PG_VERSION").exists() {
                tracing::info!(node = node.name, "copying the primary (pg_basebackup)");
                let slot = slot_name(node);
                let drop_slot = format!(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}'"
                );
                pg_execute(&primary, "postgres", &drop_slot).await?;
                let (p, r) = (primary.clone(), replica.clone());
                tokio::task::spawn_blocking(move || nodes::base_backup(&p, &r, &slot)).await??;
            }
            tracing::info!(node = node.name, addr = %node.addr, "starting PostgreSQL replica");
            start_node(shared, &node.name).await?;
        }
        if let Some(names) = shard.synchronous_standby_names(&shard.members[0]) {
            // Only now: with no replica connected, every commit would wait.
            let sql = format!("ALTER SYSTEM SET synchronous_standby_names = '{}'", names.replace('\'', "''"));
            pg_execute(&primary, "postgres", &sql).await?;
            pg_execute(&primary, "postgres", "SELECT pg_reload_conf()").await?;
        }
    }
    for role in [Role::Redis, Role::Worker, Role::Web, Role::LoadBalancer] {
        for node in topology.nodes_of(role) {
            tracing::info!(node = node.name, addr = %node.addr, "starting");
            start_node(shared, &node.name).await?;
        }
    }
    Ok(())
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
