//! The local stack: `millions up|down|status|logs` on one machine.
//!
//! `up` starts a PostgreSQL server holding the shards (one database per shard), a
//! Redis, and a web server, each detached and recorded in the run directory
//! (`.millions/` or `$MILLIONS_HOME`), so later commands find them.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Shards of the local stack: two, so cross-shard paths run from day one.
const SHARDS: usize = 2;
/// How long `up` waits for the web server to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a web server may drain on `down` before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Where the run directory is.
#[derive(Debug, clap::Args)]
pub struct HomeArgs {
    /// Run directory holding data, logs and state.
    #[arg(long, env = "MILLIONS_HOME", default_value = ".millions")]
    home: PathBuf,
}

/// `millions up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    home: HomeArgs,
    /// Address the web server listens on.
    #[arg(long, env = "MILLIONS_WEB_ADDR", default_value = "127.0.0.1:8080")]
    web: SocketAddr,
}

/// `millions status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    home: HomeArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `millions logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    home: HomeArgs,
    /// The node (see `millions status`).
    node: String,
    /// Keep printing as the log grows.
    #[arg(short, long)]
    follow: bool,
}

/// What `up` started, saved in `state.json`.
#[derive(Debug, Serialize, Deserialize)]
struct StackState {
    /// Where to open the app.
    app_url: String,
    /// Every node started.
    nodes: Vec<NodeState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeState {
    /// Unique name (`postgres`, `redis`, `web-1`).
    name: String,
    /// `postgres`, `redis` or `web`.
    role: String,
    /// The address it serves on.
    addr: SocketAddr,
    /// Its process id.
    pid: u32,
    /// Its log file.
    log: PathBuf,
    /// Its data directory, where it has one.
    dir: Option<PathBuf>,
}

/// Passwords of the local stack, generated once and kept (mode 0600).
#[derive(Debug, Serialize, Deserialize)]
struct Secrets {
    /// The PostgreSQL superuser's password.
    postgres: String,
    /// Redis's `requirepass`.
    redis: String,
}

fn state_path(home: &Path) -> PathBuf {
    home.join("state.json")
}

fn read_state(home: &Path) -> anyhow::Result<Option<StackState>> {
    let path = state_path(home);
    match fs::read_to_string(&path) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn secrets(home: &Path) -> anyhow::Result<Secrets> {
    let path = home.join("secrets.json");
    if let Ok(text) = fs::read_to_string(&path) {
        return serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()));
    }
    let s = Secrets { postgres: nodes::random_secret(32), redis: nodes::random_secret(32) };
    write_private(&path, &serde_json::to_string_pretty(&s)?)?;
    Ok(s)
}

/// Undo list for a failed `up`: nothing is left half-started.
#[derive(Default)]
struct Started {
    nodes: Vec<NodeState>,
}

impl Started {
    fn stop_all(&mut self) {
        for node in self.nodes.drain(..).rev() {
            if let Err(e) = stop_node(&node) {
                eprintln!("warning: stopping {}: {e:#}", node.name);
            }
        }
    }
}

/// `millions up`.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let home = &args.home.home;
    fs::create_dir_all(home.join("logs")).with_context(|| format!("creating {}", home.display()))?;
    let home = home.canonicalize()?;
    if let Some(state) = read_state(&home)? {
        if state.nodes.iter().any(|n| nodes::pid_alive(n.pid)) {
            bail!("already running (see `millions status`); run `millions down` first");
        }
        fs::remove_file(state_path(&home))?;
    }
    // Refuse a taken web address before starting anything.
    drop(std::net::TcpListener::bind(args.web).with_context(|| {
        format!("the web address {} is in use; pick another with --web or MILLIONS_WEB_ADDR", args.web)
    })?);

    let secrets = secrets(&home)?;
    let mut started = Started::default();
    match start_stack(&home, &args, &secrets, &mut started).await {
        Ok(state) => {
            fs::write(state_path(&home), serde_json::to_string_pretty(&state)?)?;
            println!();
            println!("Millions is up.");
            println!("  open the app:  {}", state.app_url);
            println!(
                "  JSON API:      {}api/v1  (OpenAPI: {}api/v1/openapi.json)",
                state.app_url, state.app_url
            );
            println!("  metrics:       {}metrics", state.app_url);
            println!("  status:        millions status    logs: millions logs web-1    stop: millions down");
            Ok(())
        }
        Err(e) => {
            eprintln!("up failed; stopping what was started");
            started.stop_all();
            Err(e)
        }
    }
}

async fn start_stack(
    home: &Path,
    args: &UpArgs,
    secrets: &Secrets,
    started: &mut Started,
) -> anyhow::Result<StackState> {
    // PostgreSQL: one server, one database per shard.
    let pg_port = nodes::free_port(LOCALHOST)?;
    let pg =
        nodes::PostgresSpec::new(&home.join("postgres"), LOCALHOST, pg_port, "millions", &secrets.postgres);
    println!("starting PostgreSQL on {}", pg.addr());
    nodes::init_postgres(&pg)?;
    nodes::start_postgres(&pg)?;
    let pid = nodes::postmaster_pid(&pg.data_dir).context("PostgreSQL started but wrote no pid")?;
    started.nodes.push(NodeState {
        name: "postgres".into(),
        role: "postgres".into(),
        addr: pg.addr(),
        pid,
        log: pg.log_file.clone(),
        dir: Some(pg.data_dir.clone()),
    });
    let shard_urls = create_shard_databases(&pg).await?;
    data::migrate(&shard_urls).await.context("migrating the shards")?;

    // Redis.
    let redis_port = nodes::free_port(LOCALHOST)?;
    let redis = nodes::RedisSpec::new(&home.join("redis"), LOCALHOST, redis_port, &secrets.redis);
    println!("starting Redis on {}", redis.addr());
    let pid = nodes::start_redis(&redis)?;
    started.nodes.push(NodeState {
        name: "redis".into(),
        role: "redis".into(),
        addr: redis.addr(),
        pid,
        log: redis.log_file.clone(),
        dir: Some(redis.dir.clone()),
    });

    // The web server.
    let store = home.join("objects");
    let config_path = home.join("web-1.toml");
    let config = format!(
        "listen = \"{listen}\"\n\n[database]\nshards = {shards:?}\n\n[redis]\nurl = \"{redis}\"\n\n\
         [media]\nstore_dir = {store:?}\n",
        listen = args.web,
        shards = shard_urls,
        redis = redis.url(),
        store = store.display().to_string(),
    );
    write_private(&config_path, &config)?;
    web::WebConfig::load(&config_path).context("the generated web configuration is invalid")?;
    let log = home.join("logs/web-1.log");
    println!("starting web-1 on {}", args.web);
    let pid = spawn_detached(&["web", "--config", &config_path.to_string_lossy()], &log)?;
    started.nodes.push(NodeState {
        name: "web-1".into(),
        role: "web".into(),
        addr: args.web,
        pid,
        log: log.clone(),
        dir: None,
    });
    wait_ready(args.web, pid, &log).await?;

    // A worker: photo processing and fan-out.
    let worker_addr = SocketAddr::new(LOCALHOST, nodes::free_port(LOCALHOST)?);
    let config_path = home.join("worker-1.toml");
    let config = format!(
        "listen = \"{worker_addr}\"\n\n[database]\nshards = {shards:?}\n\n[redis]\nurl = \"{redis}\"\n\n\
         [media]\nstore_dir = {store:?}\n\n[worker]\nid = \"worker-1\"\n",
        shards = shard_urls,
        redis = redis.url(),
        store = store.display().to_string(),
    );
    write_private(&config_path, &config)?;
    worker::WorkerConfig::load(&config_path).context("the generated worker configuration is invalid")?;
    let log = home.join("logs/worker-1.log");
    println!("starting worker-1 (metrics on {worker_addr})");
    let pid = spawn_detached(&["worker", "--config", &config_path.to_string_lossy()], &log)?;
    started.nodes.push(NodeState {
        name: "worker-1".into(),
        role: "worker".into(),
        addr: worker_addr,
        pid,
        log: log.clone(),
        dir: None,
    });
    wait_ready(worker_addr, pid, &log).await?;
    Ok(StackState { app_url: format!("http://{}/", args.web), nodes: started.nodes.clone() })
}

async fn create_shard_databases(pg: &nodes::PostgresSpec) -> anyhow::Result<Vec<String>> {
    let (client, conn) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    let conn = tokio::spawn(conn);
    let mut urls = vec![];
    for i in 0..SHARDS {
        let name = format!("millions_shard_{i}");
        let exists =
            client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await?.is_some();
        if !exists {
            client.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        }
        urls.push(pg.url(&name));
    }
    drop(client);
    let _ = conn.await;
    Ok(urls)
}

/// Start this binary with `args`, detached in its own process group, output to `log`.
fn spawn_detached(args: &[&str], log: &Path) -> anyhow::Result<u32> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .context("starting a node")?;
    Ok(child.id())
}

async fn http_status(url: &str) -> Option<u16> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
    client.get(url).send().await.ok().map(|r| r.status().as_u16())
}

async fn wait_ready(addr: SocketAddr, pid: u32, log: &Path) -> anyhow::Result<()> {
    let url = format!("http://{addr}/readyz");
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if http_status(&url).await == Some(200) {
            return Ok(());
        }
        if !nodes::pid_alive(pid) {
            bail!("the process exited during start-up:\n{}", nodes::log_tail(log));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{addr} was not ready within {READY_TIMEOUT:?}:\n{}", nodes::log_tail(log))
}

fn stop_node(node: &NodeState) -> anyhow::Result<()> {
    match (node.role.as_str(), &node.dir) {
        ("postgres", Some(dir)) => nodes::stop_postgres(dir, nodes::StopMode::Fast)?,
        _ => nodes::stop_pid(node.pid, STOP_GRACE)?,
    }
    Ok(())
}

/// `millions down`.
pub async fn down(args: HomeArgs) -> anyhow::Result<()> {
    let Some(state) = read_state(&args.home)? else {
        bail!("nothing is running (no {})", state_path(&args.home).display());
    };
    // Web first (it drains), then the stores it uses.
    let mut failures = vec![];
    for node in state.nodes.iter().rev() {
        print!("stopping {} ... ", node.name);
        match stop_node(node) {
            Ok(()) => println!("stopped"),
            Err(e) => {
                println!("failed");
                failures.push(format!("{}: {e:#}", node.name));
            }
        }
    }
    // A server may still be exiting for a moment after its stop command returned.
    let alive =
        || state.nodes.iter().filter(|n| nodes::pid_alive(n.pid)).map(|n| n.name.clone()).collect::<Vec<_>>();
    let deadline = Instant::now() + STOP_GRACE;
    let mut left = alive();
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = alive();
    }
    if !left.is_empty() || !failures.is_empty() {
        bail!("some nodes did not stop: {} {}", left.join(", "), failures.join("; "));
    }
    fs::remove_file(state_path(&args.home))?;
    println!("all stopped");
    Ok(())
}

#[derive(Debug, Serialize)]
struct NodeStatus {
    name: String,
    role: String,
    addr: SocketAddr,
    pid: u32,
    running: bool,
    healthy: bool,
}

/// `millions status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let Some(state) = read_state(&args.home.home)? else {
        bail!("nothing is running (no {})", state_path(&args.home.home).display());
    };
    let mut rows = vec![];
    for n in &state.nodes {
        let running = nodes::pid_alive(n.pid);
        let healthy = running
            && match n.role.as_str() {
                "web" | "worker" => http_status(&format!("http://{}/readyz", n.addr)).await == Some(200),
                "redis" => {
                    let password = secrets(&args.home.home)?.redis;
                    nodes::redis_ping(n.addr, &password, Duration::from_secs(1)).is_ok()
                }
                _ => n.dir.as_deref().is_some_and(nodes::postgres_running),
            };
        rows.push(NodeStatus {
            name: n.name.clone(),
            role: n.role.clone(),
            addr: n.addr,
            pid: n.pid,
            running,
            healthy,
        });
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"app_url": state.app_url, "nodes": rows}))?
        );
    } else {
        println!("app: {}", state.app_url);
        println!("{:<10} {:<9} {:<22} {:>8}  health", "NODE", "ROLE", "ADDRESS", "PID");
        for r in rows {
            let health = match (r.running, r.healthy) {
                (false, _) => "down",
                (true, false) => "unhealthy",
                (true, true) => "healthy",
            };
            println!("{:<10} {:<9} {:<22} {:>8}  {health}", r.name, r.role, r.addr.to_string(), r.pid);
        }
    }
    Ok(())
}

/// `millions logs`.
pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let Some(state) = read_state(&args.home.home)? else {
        bail!("nothing is running (no {})", state_path(&args.home.home).display());
    };
    let Some(node) = state.nodes.iter().find(|n| n.name == args.node) else {
        let names: Vec<_> = state.nodes.iter().map(|n| n.name.as_str()).collect();
        bail!("no node named {:?}; nodes: {}", args.node, names.join(", "));
    };
    let mut file = fs::File::open(&node.log).with_context(|| format!("opening {}", node.log.display()))?;
    let mut out = std::io::stdout();
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    out.write_all(&buf)?;
    if !args.follow {
        return Ok(());
    }
    let mut pos = file.stream_position()?;
    loop {
        // Follow like `tail -f`: look for growth a few times a second.
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let len = fs::metadata(&node.log)?.len();
        if len < pos {
            pos = 0; // truncated or rotated
        }
        if len > pos {
            file.seek(SeekFrom::Start(pos))?;
            buf.clear();
            file.read_to_end(&mut buf)?;
            out.write_all(&buf)?;
            out.flush()?;
            pos = len;
        }
    }
}
