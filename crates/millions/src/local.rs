//! Running a topology on this machine: `millions up|down|status|logs|chaos`.
//!
//! `up` validates the topology, checks that every node's address is free, and
//! starts `millions control` detached in the run directory (`.millions/` or
//! `$MILLIONS_HOME`); the controller starts and supervises the nodes. The other
//! commands talk to the controller's API, found through `control.json`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use control::NodeStatus;
use serde::Deserialize;

/// How long `up` waits for every node to be healthy.
const UP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `down` waits for the controller to stop everything.
const DOWN_TIMEOUT: Duration = Duration::from_secs(180);

/// Where the run directory is.
#[derive(Debug, clap::Args)]
pub struct HomeArgs {
    /// Run directory holding data, logs and state.
    #[arg(long, env = "MILLIONS_HOME", default_value = ".millions")]
    home: PathBuf,
}

/// `millions down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    #[command(flatten)]
    home: HomeArgs,
    /// Then delete the run directory's contents (every node's data, logs, photos,
    /// secrets): the next `millions up` starts from empty.
    #[arg(long)]
    wipe: bool,
}

/// `millions up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    home: HomeArgs,
    /// A preset topology: single, default or test.
    #[arg(long, conflicts_with = "topology")]
    preset: Option<String>,
    /// A topology file (TOML; see docs/TOPOLOGY.md).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Run PostgreSQL without fsync: faster, and a machine crash loses data. For
    /// throw-away stacks (tests) only.
    #[arg(long)]
    unsafe_fast_storage: bool,
    /// See `control --scrape-interval`.
    #[arg(long, default_value = "5s")]
    scrape_interval: humantime::Duration,
    /// Where the controller serves its dashboard (and API). A fixed address by
    /// default (127.0.0.1:9900), refused if taken; port 0 picks any free port
    /// (two stacks on one machine, tests).
    #[arg(long, env = "MILLIONS_DASHBOARD", default_value_t = control::DEFAULT_DASHBOARD)]
    dashboard: SocketAddr,
}

impl UpArgs {
    /// The flags `up` passes on to `millions control`.
    fn control_flags(&self) -> Vec<String> {
        let mut flags = vec!["--scrape-interval".to_owned(), self.scrape_interval.to_string()];
        if self.unsafe_fast_storage {
            flags.push("--unsafe-fast-storage".into());
        }
        flags
    }
}

/// `millions control` (started by `up`).
#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    #[command(flatten)]
    home: HomeArgs,
    /// Where the control API and the dashboard listen (port 0: any free port).
    #[arg(long, env = "MILLIONS_DASHBOARD", default_value_t = control::DEFAULT_DASHBOARD)]
    api: SocketAddr,
    /// See `up --unsafe-fast-storage`.
    #[arg(long)]
    unsafe_fast_storage: bool,
    /// How often every node's metrics are scraped for the dashboard's history
    /// (two hours of it are kept).
    #[arg(long, default_value = "5s")]
    scrape_interval: humantime::Duration,
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
    /// The node (see `millions status`), or `control`; with `--request`, only
    /// that node's lines of the request.
    #[arg(required_unless_present = "request")]
    node: Option<String>,
    /// Keep printing as the log grows.
    #[arg(short, long, conflicts_with = "request")]
    follow: bool,
    /// One request's whole path, from every node's log in time order: the load
    /// balancer's access line, the web server's lines, the jobs it enqueued as
    /// workers ran them (the id is the `x-request-id` of the answer).
    #[arg(long, value_name = "ID", value_parser = parse_request_id)]
    request: Option<String>,
    /// Only lines at this level or above: error, warn, info, debug, trace (the JSON
    /// logs of millions' own processes; PostgreSQL's and Redis' lines are kept).
    #[arg(long, value_parser = parse_level)]
    level: Option<u8>,
    /// Only lines from the last DURATION (e.g. 10m, 1h; JSON lines, by their
    /// timestamp).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
}

/// A request id as the system keeps them (`telemetry::request_id::is_sane`).
fn parse_request_id(id: &str) -> Result<String, String> {
    if telemetry::request_id::is_sane(id.as_bytes()) {
        Ok(id.to_owned())
    } else {
        Err(format!(
            "{id:?} is not a request id: 1 to {} letters, digits or -_.:",
            telemetry::request_id::MAX_LEN
        ))
    }
}

/// A log level's rank: error 0 … trace 4.
fn level_rank(level: &str) -> Option<u8> {
    ["error", "warn", "info", "debug", "trace"]
        .iter()
        .position(|l| l.eq_ignore_ascii_case(level))
        .map(|i| i as u8)
}

fn parse_level(text: &str) -> Result<u8, String> {
    level_rank(text).ok_or_else(|| format!("{text:?} is not a level: error, warn, info, debug or trace"))
}

/// Which lines `millions logs` prints.
struct LogFilter {
    /// The highest rank printed (`--level`).
    level: Option<u8>,
    /// The earliest time printed (`--since`).
    since: Option<std::time::SystemTime>,
}

impl LogFilter {
    /// Whether to print `line`: a JSON line by its `level` and `timestamp`; any
    /// other line (PostgreSQL's, Redis') always.
    fn keep(&self, line: &[u8]) -> bool {
        if self.level.is_none() && self.since.is_none() {
            return true;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else { return true };
        let level_ok = match (self.level, v["level"].as_str().and_then(level_rank)) {
            (Some(max), Some(rank)) => rank <= max,
            _ => true,
        };
        let time_ok =
            match (self.since, v["timestamp"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok())) {
                (Some(since), Some(at)) => at >= since,
                _ => true,
            };
        level_ok && time_ok
    }

    /// Print the lines of `buf` it keeps (a last line without its newline too).
    fn write(&self, buf: &[u8], out: &mut impl Write) -> std::io::Result<()> {
        if self.level.is_none() && self.since.is_none() {
            return out.write_all(buf);
        }
        for line in buf.split_inclusive(|&b| b == b'\n') {
            if self.keep(line.strip_suffix(b"\n").unwrap_or(line)) {
                out.write_all(line)?;
            }
        }
        Ok(())
    }
}

/// `millions chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    #[command(flatten)]
    home: HomeArgs,
    #[command(subcommand)]
    action: ChaosAction,
}

/// `millions scale`.
#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    home: HomeArgs,
    /// The data center (`dc1`).
    dc: String,
    /// `web` or `worker`.
    role: String,
    /// How many it should run, within the topology's `min` and `max` for the role.
    count: u32,
}

/// `millions purge`.
#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    home: HomeArgs,
    /// An exact path (with its query) to purge, e.g. `/media/ab12….jpg`; repeatable.
    #[arg(long = "path")]
    paths: Vec<String>,
    /// A path prefix: every object under it; repeatable.
    #[arg(long = "prefix")]
    prefixes: Vec<String>,
    /// A surrogate key the origin tagged responses with (`Surrogate-Key`); repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Mark stale (revalidated with the origin before the next use) instead of
    /// dropping.
    #[arg(long)]
    soft: bool,
}

/// `millions shard`.
#[derive(Debug, clap::Args)]
pub struct ShardArgs {
    #[command(flatten)]
    home: HomeArgs,
    #[command(subcommand)]
    action: ShardAction,
}

/// What to do to a shard.
#[derive(Debug, clap::Subcommand)]
enum ShardAction {
    /// Make a PostgreSQL node its shard's primary, on purpose (a switchover: writes
    /// pause while the node receives every commit of the old primary, which then
    /// follows it; nothing acknowledged is lost).
    Promote {
        /// The node to promote (`shard0-pg-3`).
        node: String,
    },
    /// Move buckets to another shard while they take writes: their rows copied,
    /// the changes made meanwhile replayed, their writes fenced for a short
    /// cutover, the new directory published, then their rows deleted from the
    /// source. Prints the move's report (rows, jobs, the writes' pause).
    Move {
        /// The buckets, all on one shard: numbers 0 to 4095 and ranges, comma
        /// separated (`7,100-163`).
        buckets: String,
        /// The shard they go to.
        #[arg(long)]
        to: u16,
    },
    /// Add a shard cluster to the running topology: its primary and replicas
    /// placed where the last shard's are unless told otherwise, built, supervised
    /// and watched like the others, then joined to the published map with no
    /// bucket (`millions shard rebalance` moves buckets onto it). Run again with
    /// no placement, it finishes a shard an interrupted add left joining.
    Add {
        /// The data center of its primary.
        #[arg(long)]
        primary: Option<String>,
        /// The data center of each replica, comma separated (empty: none).
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        replicas: Option<Vec<String>>,
        /// `sync` (commits wait for a replica) or `async`.
        #[arg(long)]
        replication: Option<String>,
        /// What a synchronous shard's acknowledged writes survive: `node` or `dc`.
        #[arg(long)]
        survives: Option<String>,
    },
    /// Move a user's bucket (a celebrity's) to a shard, with the users who share
    /// the bucket, who are listed.
    Isolate {
        /// The user.
        username: String,
        /// The shard the bucket goes to, or `new`: a shard added for it (placed
        /// like the last one), whose only bucket it then is.
        #[arg(long, value_parser = parse_isolate_to)]
        to: serde_json::Value,
    },
    /// Cancel a move under way (`millions status` lists them): it rolls back
    /// after the step it is in, unless it is past its fence, when it can only
    /// finish.
    Cancel {
        /// The move's id.
        id: i64,
    },
    /// Move buckets from the heaviest shard to the lightest, one move at a time,
    /// until the shards are even (no move overshoots); prints each move.
    Rebalance {
        /// What to even out: `buckets` (each counts the same), `rows` (a bucket
        /// weighs its users' rows in every table, counted on the shards) or
        /// `load` (a bucket weighs the queries every web server and worker sent
        /// for it during `--window`).
        #[arg(long, default_value = "buckets", value_parser = ["buckets", "rows", "load"])]
        by: String,
        /// With `--by load`: how long to measure the load.
        #[arg(long, default_value = "10s")]
        window: humantime::Duration,
        /// Most buckets per move (each move pauses its buckets' writes once).
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Most moves.
        #[arg(long, default_value_t = 1000)]
        max_moves: usize,
    },
}

/// `7,100-163` as the buckets it names, in order, or why not.
fn parse_buckets(text: &str) -> anyhow::Result<Vec<u16>> {
    let mut out = vec![];
    for part in text.split(',').map(str::trim) {
        let number = |s: &str| {
            s.trim().parse::<u16>().map_err(|_| anyhow::anyhow!("{s:?} is not a bucket number (0 to 4095)"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    bail!("the range {part} runs backwards");
                }
                out.extend(a..=b);
            }
            None => out.push(number(part)?),
        }
    }
    Ok(out)
}

/// What to break.
#[derive(Debug, clap::Subcommand)]
enum ChaosAction {
    /// Kill a node with SIGKILL, as a crash; the controller starts it again.
    Kill {
        /// The node.
        node: String,
    },
    /// Stop a node gracefully and start it again.
    Restart {
        /// The node.
        node: String,
    },
    /// Stop a node gracefully and leave it stopped (a web server leaves its load
    /// balancer first: drained, no request dropped).
    Stop {
        /// The node.
        node: String,
    },
    /// Start a node that was stopped (a web server rejoins its load balancer).
    Start {
        /// The node.
        node: String,
    },
    /// Lose a whole data center: every process there is killed and stays down;
    /// its shards' primaries fail over to the other data centers.
    DcDown {
        /// The data center.
        dc: String,
    },
    /// Bring a lost data center back: its nodes start again (its PostgreSQL
    /// servers as replicas, its Redis empty), readmitted once its replicas stream.
    DcUp {
        /// The data center.
        dc: String,
    },
    /// Cut a data center off from the others on the WAN (with a topology's
    /// `[wan]`): every byte between them is held, not dropped, until the heal.
    WanCut {
        /// The data center.
        dc: String,
    },
    /// Heal a data center's WAN links: what they held is delivered in order.
    WanHeal {
        /// The data center.
        dc: String,
    },
}

fn topology_path(home: &Path) -> PathBuf {
    control::topology_file(home)
}

/// Why a command found nothing to talk to: where it looked, as an absolute path
/// (the default run directory, `.millions`, is relative to the current
/// directory), and how to name another.
fn nothing_running(home: &Path) -> String {
    let looked = std::path::absolute(home).unwrap_or_else(|_| home.to_path_buf());
    format!(
        "nothing is running (no live controller in {}); name the run directory with --home DIR or MILLIONS_HOME",
        looked.display()
    )
}

/// The running controller's API, or an error saying nothing runs.
fn controller(home: &Path) -> anyhow::Result<control::ControlFile> {
    control::running(home).with_context(|| nothing_running(home))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("an HTTP client")
}

#[derive(Debug, Deserialize)]
struct NodesReply {
    topology: String,
    nodes: Vec<NodeStatus>,
    /// Each shard's primary and readable replicas, and the epoch.
    cluster: control::ClusterState,
    /// What the controller did to the shards (failovers, lost replicas).
    events: Vec<control::Event>,
    /// What each shard's acknowledged writes survive, and warnings.
    #[serde(default)]
    shards: Vec<control::ShardStatus>,
    /// Each data center, `up` or `down`.
    #[serde(default)]
    dcs: Vec<DcState>,
    /// Each DC's web servers and workers: count, range, the last decision.
    #[serde(default)]
    scaling: Vec<control::scale::RoleStatus>,
}

/// `millions status`'s lines about scaling: each scaled role's count, the
/// count wanted, its range and the autoscaler's last decision.
fn print_scaling(roles: &[control::scale::RoleStatus]) {
    if roles.iter().all(|r| !r.autoscaled && r.min == r.max) {
        return;
    }
    println!();
    println!("{:<5} {:<7} {:>7} {:>7} {:>6}  last decision", "DC", "ROLE", "CURRENT", "DESIRED", "RANGE");
    for r in roles {
        let range = format!("{}-{}", r.min, r.max);
        let last = match (&r.last_decision, r.autoscaled) {
            (Some(d), _) => format!("{} {} → {}: {}", d.at, d.from, d.to, d.reason),
            (None, true) => "none yet".to_owned(),
            (None, false) => "not autoscaled (no range in the topology)".to_owned(),
        };
        println!("{:<5} {:<7} {:>7} {:>7} {:>6}  {last}", r.dc, r.role, r.current, r.desired, range);
    }
}

/// A data center as the controller sees it.
#[derive(Debug, Deserialize, serde::Serialize)]
struct DcState {
    /// Its name.
    name: String,
    /// `up` or `down` (declared lost).
    state: String,
}

async fn fetch_nodes(home: &Path, api: SocketAddr) -> anyhow::Result<NodesReply> {
    let request = client().get(format!("http://{api}/api/nodes")).bearer_auth(admin_token(home)?);
    let r = request.send().await.context("asking the controller")?;
    Ok(r.error_for_status()?.json().await?)
}

/// The token the controller's API asks for (the run directory's secrets).
fn admin_token(home: &Path) -> anyhow::Result<String> {
    control::admin_token(home).with_context(|| format!("reading the admin token in {}", home.display()))
}

/// The topology `up` was asked for (`--topology` or `--preset`), if any,
/// validated: its text and where it came from.
fn requested_topology(args: &UpArgs) -> anyhow::Result<Option<(String, topology::Topology)>> {
    let (text, origin) = match (&args.preset, &args.topology) {
        (None, None) => return Ok(None),
        (_, Some(path)) => (
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            path.display().to_string(),
        ),
        (Some(name), None) => {
            let text = topology::preset_text(name).with_context(|| {
                format!("no preset named {name:?}; presets: {}", topology::PRESETS.join(", "))
            })?;
            (text.to_owned(), format!("preset {name:?}"))
        }
    };
    let topology = topology::parse(&text, &origin)?;
    Ok(Some((text, topology)))
}

/// Whether the run directory's topology file is `text` with more written after
/// it (the shards `millions shard add` appends), and still parses.
fn grown_from(home: &Path, text: &str) -> bool {
    let Ok(stored) = std::fs::read_to_string(topology_path(home)) else { return false };
    let (stored, text) = (stored.trim_end(), text.trim_end());
    stored.len() > text.len()
        && stored.starts_with(text)
        && topology::parse(stored, "the run directory's topology").is_ok()
}

/// The topology stored in the run directory by an earlier `up`, if any.
fn stored_topology(home: &Path) -> anyhow::Result<Option<topology::Topology>> {
    let path = topology_path(home);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(topology::load(&path)?))
}

/// `millions up`. Everything is checked before anything is written: a bad
/// topology, a taken address or a run directory holding another topology's
/// state change nothing.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let home = &args.home.home;
    if control::running(home).is_some() {
        bail!("already running (see `millions status`); run `millions down` first");
    }
    let requested = requested_topology(&args)?;
    let stored = stored_topology(home)?;
    // A controller that died (crashed, killed) left its file behind: start a
    // new one on the same API address; it adopts the nodes still running and
    // resumes its shard decisions, so nothing fails over.
    let crashed: Option<control::ControlFile> =
        std::fs::read_to_string(control::control_file(home)).ok().and_then(|t| serde_json::from_str(&t).ok());
    if let Some(prev) = crashed
        && let Some(stored) = &stored
    {
        if let Some((text, wanted)) = &requested
            && wanted != stored
            && !grown_from(home, text)
        {
            bail!(
                "the controller of topology {:?} (pid {}) is gone and its nodes may still run; \
                 `millions up` without --topology/--preset adopts them, `millions down` stops them \
                 (then `up` may start another topology)",
                stored.name(),
                prev.pid
            );
        }
        let home = home.canonicalize()?;
        println!(
            "the controller (pid {}) is gone; starting a new one, which adopts the running nodes",
            prev.pid
        );
        return start_controller(&home, stored, prev.api, &args.control_flags()).await;
    }
    if let Some(stored) = &stored {
        let orphans = control::orphans(home, stored);
        if !orphans.is_empty() {
            bail!(
                "nodes of topology {:?} still run with no controller: {}; run `millions down` first",
                stored.name(),
                describe_orphans(&orphans)
            );
        }
    }
    let (text, topology) = match requested {
        Some(r) => r,
        None => {
            let text = topology::preset_text("default").expect("the default preset ships with the binary");
            (text.to_owned(), topology::parse(text, "preset \"default\"")?)
        }
    };
    // The run directory's topology is this one with shards `millions shard add`
    // appended: that is the one to run.
    let (text, topology) = match (&stored, grown_from(home, &text)) {
        (Some(stored), true) => (std::fs::read_to_string(topology_path(home))?, stored.clone()),
        _ => (text, topology),
    };
    check_state_matches(home, stored.as_ref(), &topology)?;
    control::lb::check_configs(&topology)?;
    control::scale::check_policies(&topology)?;
    topology.check_ports_free()?;
    let api = dashboard_addr(&topology, args.dashboard)?;

    std::fs::create_dir_all(home.join("logs")).with_context(|| format!("creating {}", home.display()))?;
    let home = home.canonicalize()?;
    std::fs::write(topology_path(&home), &text)?;
    start_controller(&home, &topology, api, &args.control_flags()).await
}

/// The address the controller will serve its dashboard and API on: `wanted`,
/// checked to be no node's and free (nothing is bound here that stays bound),
/// or with port 0 a free port of its IP.
fn dashboard_addr(topology: &topology::Topology, wanted: SocketAddr) -> anyhow::Result<SocketAddr> {
    let https = topology.ports().https;
    if wanted.port() == 0 {
        return Ok(SocketAddr::new(wanted.ip(), nodes::free_port(wanted.ip())?));
    }
    if let Some(node) = topology.nodes().iter().find(|n| n.listen_addrs(https).any(|(a, _)| a == wanted)) {
        bail!(
            "--dashboard {wanted} is {}'s address in the topology: choose another \
             (--dashboard ADDR or MILLIONS_DASHBOARD)",
            node.name
        );
    }
    match std::net::TcpListener::bind(wanted) {
        Ok(listener) => {
            drop(listener);
            Ok(wanted)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "the dashboard's address {wanted} is in use (another `millions up`, or another program): \
             choose another with --dashboard ADDR or MILLIONS_DASHBOARD (port 0: any free port, \
             printed once up)"
        ),
        Err(e) => bail!("the dashboard's address {wanted} cannot be bound: {e}"),
    }
}

/// A run directory that holds the state of an earlier `up` (shard decisions,
/// data of nodes) is reused only by the same topology: another one would find
/// data and decisions that are not its own.
fn check_state_matches(
    home: &Path,
    stored: Option<&topology::Topology>,
    wanted: &topology::Topology,
) -> anyhow::Result<()> {
    let state: Vec<&str> =
        ["cluster.json", "nodes"].into_iter().filter(|name| home.join(name).exists()).collect();
    if state.is_empty() || stored == Some(wanted) {
        return Ok(());
    }
    let holds = match stored {
        Some(t) => format!("the state of topology {:?}", t.name()),
        None => "the state of an unknown topology (no topology.toml)".to_owned(),
    };
    bail!(
        "{} holds {holds} ({}), not of topology {:?}: run `millions up` with that topology, \
         or start afresh with another run directory (--home or MILLIONS_HOME) or after `rm -rf {}` \
         (this deletes its data)",
        home.display(),
        state.join(", "),
        wanted.name(),
        home.display()
    )
}

/// `name (pid N), ...`.
fn describe_orphans(orphans: &[(String, nodes::ProcessId)]) -> String {
    orphans.iter().map(|(name, p)| format!("{name} (pid {})", p.pid)).collect::<Vec<_>>().join(", ")
}

/// Start `millions control` detached on `api` and wait until every node is
/// healthy. If it is not, nothing is left running.
async fn start_controller(
    home: &Path,
    topology: &topology::Topology,
    api: SocketAddr,
    flags: &[String],
) -> anyhow::Result<()> {
    let log = control::log_path(home, "control");
    let log_start = std::fs::metadata(&log).map_or(0, |m| m.len());
    let mut cmd_args = vec!["control".to_owned(), "--home".into(), home.display().to_string()];
    cmd_args.extend(["--api".to_owned(), api.to_string()]);
    cmd_args.extend(flags.iter().cloned());
    let pid = spawn_detached(&cmd_args, &log)?;
    println!(
        "starting topology {:?} ({} nodes); controller pid {pid}",
        topology.name(),
        topology.nodes().len()
    );

    let deadline = Instant::now() + UP_TIMEOUT;
    let mut shown = 0;
    loop {
        if !nodes::pid_alive(pid) {
            // It stops what it started when start-up fails; should it have
            // died instead, its nodes are stopped here.
            let left = tokio::task::block_in_place(|| control::stop_orphans(home, topology));
            let _ = std::fs::remove_file(control::control_file(home));
            let mut msg =
                format!("the controller stopped during start-up: {}", startup_error(&log, log_start));
            match left {
                Ok(left) if !left.is_empty() => {
                    msg.push_str(&format!("\nstopped the nodes it left: {}", left.join(", ")))
                }
                Ok(_) => {}
                Err(e) => msg.push_str(&format!("\nstopping the nodes it left failed: {e:#}")),
            }
            bail!("{msg}\nnothing is left running; the controller's log: {}", log.display());
        }
        if let Ok(reply) = fetch_nodes(home, api).await {
            let up = reply.nodes.iter().filter(|n| n.healthy).count();
            if up != shown {
                println!("  {up}/{} nodes healthy", reply.nodes.len());
                shown = up;
            }
            if up == reply.nodes.len() {
                print_summary(home, topology, api, &reply.nodes);
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            println!("not every node was healthy within {UP_TIMEOUT:?}; stopping everything ...");
            let before = fetch_nodes(home, api).await.map(|r| r.nodes).unwrap_or_default();
            if let Ok(token) = admin_token(home) {
                let _ = client().post(format!("http://{api}/api/shutdown")).bearer_auth(token).send().await;
            }
            let ctl = control::ControlFile { pid, api };
            let stopped = wait_stopped(home, topology, &ctl, &before).await;
            let outcome = match stopped {
                Ok(()) => "everything was stopped".to_owned(),
                Err(e) => format!("{e:#}"),
            };
            bail!("not every node was healthy within {UP_TIMEOUT:?}; {outcome}:\n{}", nodes::log_tail(&log));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Why the controller's start-up failed, from what it logged since `from`
/// (its log is JSON lines; the failure is the line "start-up failed").
fn startup_error(log: &Path, from: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    let failure = text.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["message"].as_str()?.contains("start-up failed"))
            .then(|| v["error"].as_str().map(str::to_owned))?
    });
    failure.unwrap_or_else(|| nodes::log_tail(log).to_string())
}

fn print_summary(home: &Path, topology: &topology::Topology, api: SocketAddr, nodes: &[NodeStatus]) {
    let https_port = topology.ports().https;
    println!();
    println!("Millions is up ({} topology).", topology.name());
    for dc in topology.dcs() {
        let in_dc =
            |role: &str| nodes.iter().filter(|n| n.dc == dc.name && n.role == role).collect::<Vec<_>>();
        let (lbs, webs) = (in_dc("lb"), in_dc("web"));
        if webs.is_empty() {
            continue;
        }
        println!("  {}: open the app at its load balancer:", dc.name);
        for l in lbs {
            let https = match l.addr.parse::<SocketAddr>() {
                Ok(a) => SocketAddr::new(a.ip(), https_port).to_string(),
                Err(_) => l.addr.clone(),
            };
            println!("      https://{https}/    ({}; http://{}/ redirects there)", l.name, l.addr);
        }
        let names: Vec<String> = webs.iter().map(|w| format!("{} {}", w.name, w.addr)).collect();
        println!("      behind it, on private addresses: {}", names.join(", "));
        for edge in in_dc("cdn") {
            let https = match edge.addr.parse::<SocketAddr>() {
                Ok(a) => SocketAddr::new(a.ip(), https_port).to_string(),
                Err(_) => edge.addr.clone(),
            };
            println!(
                "      CDN edge {}: https://{https}/media/…  http://{}/media/…  (the pages' photos come from it)",
                edge.name, edge.addr
            );
        }
    }
    let name_servers: Vec<(String, &topology::Node)> = topology.name_servers().collect();
    if let Some((_, first)) = name_servers.first() {
        let dns = topology.dns();
        let app = format!("{}.{}", dns.app, dns.zone);
        println!(
            "  DNS: {app} answers the nearest healthy data center's load balancer (TTL {} s)",
            dns.ttl_secs
        );
        if topology.nodes_of(topology::Role::Cdn).next().is_some() {
            println!(
                "  DNS: cdn.{} answers the nearest healthy CDN edge (the load balancer when no edge is)",
                dns.zone
            );
        }
        for (ns, node) in &name_servers {
            println!("      {ns}.{}  {}  ({}, UDP and TCP)", dns.zone, node.addr, node.name);
        }
        println!("      try: dig @{} -p {} {app}", first.addr.ip(), first.addr.port());
    }
    let ca = control::tls::ca_path(home);
    let app = format!("{}.{}", topology.dns().app, topology.dns().zone);
    println!("  HTTPS: the certificates come from this run directory's own CA, {}; trust it:", ca.display());
    println!("      curl --cacert {} https://localhost:{https_port}/api/v1/openapi.json", ca.display());
    println!(
        "      for this machine (Debian, Ubuntu): sudo cp {} /usr/local/share/ca-certificates/millions-local-ca.crt && sudo update-ca-certificates",
        ca.display()
    );
    println!(
        "      browsers keep their own list: import it there as an authority; {app} needs the DNS servers above"
    );
    if topology.nodes_of(topology::Role::Cdn).next().is_some() {
        println!(
            "      (or accept the browser's warning for the load balancer, and once for a CDN edge above: the pages' photos come from it)"
        );
    }
    println!(
        "  JSON API under /api/v1 (OpenAPI: /api/v1/openapi.json), /metrics, /healthz and /readyz on every process"
    );
    println!(
        "  status: millions status    logs: millions logs NODE -f    crash a node: millions chaos kill NODE"
    );
    println!(
        "  dashboard: http://{api}/dashboard    (read-only without a token; its actions ask for the admin token,"
    );
    println!("      the \"admin\" field of {})", home.join("secrets.json").display());
    let prom = control::prometheus::dir(home);
    println!(
        "  prometheus: {}    (every node by file-based discovery, {}; grafana: {})",
        prom.join("prometheus.yml").display(),
        prom.join("targets.json").display(),
        prom.join("grafana-dashboard.json").display()
    );
    println!("  stop:   millions down");
}

/// `millions control`: run the topology written by `up`.
pub async fn control(args: ControlArgs, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    let home = args.home.home.canonicalize()?;
    let topology = topology::load(&topology_path(&home))?;
    let opts = control::ControlOptions {
        run_dir: home,
        topology,
        api: args.api,
        exe: std::env::current_exe().context("locating this binary")?,
        durability: if args.unsafe_fast_storage { nodes::Durability::Fast } else { nodes::Durability::Full },
        history: {
            let defaults = control::HistoryOptions::default();
            let interval: std::time::Duration = args.scrape_interval.into();
            control::HistoryOptions { interval, timeout: defaults.timeout.min(interval), ..defaults }
        },
    };
    Ok(control::Controller::build(opts, shutdown).await?.run().await?)
}

/// Start this binary with `args`, detached in its own process group, output to `log`.
fn spawn_detached(args: &[String], log: &Path) -> anyhow::Result<u32> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let child = Command::new(exe)
        .args(args)
        // Its log lines into `log`, rotated by size (stdout and stderr keep
        // anything written before logging starts, such as a bad-config message).
        .env(telemetry::output::LOG_FILE_ENV, log)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .context("starting the controller")?;
    Ok(child.id())
}

/// Wait until the controller `ctl` (asked to stop) has exited and every node
/// has stopped: the nodes it reported (`before`), and any node of `topology`
/// whose process (verified by pid and start time) still runs, which is stopped
/// here.
async fn wait_stopped(
    home: &Path,
    topology: &topology::Topology,
    ctl: &control::ControlFile,
    before: &[NodeStatus],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + DOWN_TIMEOUT;
    let left = || {
        before
            .iter()
            .filter(|n| n.pid.is_some_and(nodes::pid_alive))
            .map(|n| n.name.clone())
            .collect::<Vec<_>>()
    };
    while nodes::pid_alive(ctl.pid) || !left().is_empty() {
        if Instant::now() > deadline {
            bail!("still running after {DOWN_TIMEOUT:?}: controller {} and {}", ctl.pid, left().join(", "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stragglers = tokio::task::block_in_place(|| control::stop_orphans(home, topology))?;
    if !stragglers.is_empty() {
        println!("stopped nodes the controller left running: {}", stragglers.join(", "));
    }
    Ok(())
}

/// `millions down`: through the controller, or, when it is gone (crashed,
/// killed), by stopping the nodes it left running directly.
pub async fn down(args: DownArgs) -> anyhow::Result<()> {
    let home = &args.home.home;
    let stopped = stop_everything(home).await;
    if !args.wipe {
        return stopped;
    }
    if let Err(e) = stopped {
        // Nothing running is fine for a wipe; anything still running is not.
        let orphans =
            stored_topology(home).ok().flatten().map(|t| control::orphans(home, &t)).unwrap_or_default();
        if control::running(home).is_some() || !orphans.is_empty() {
            return Err(e.context("not wiping: something may still run"));
        }
    }
    wipe(home)
}

/// Delete what the run directory `home` holds (its data, logs, photos, secrets),
/// keeping the directory itself. Refuses a directory that does not look like one
/// `millions up` made.
fn wipe(home: &Path) -> anyhow::Result<()> {
    if !home.exists() {
        println!("nothing to wipe: {} does not exist", home.display());
        return Ok(());
    }
    if !topology_path(home).exists() {
        bail!(
            "not wiping {}: it holds no topology.toml, so it is not a run directory `millions up` made",
            home.display()
        );
    }
    for entry in std::fs::read_dir(home).with_context(|| format!("reading {}", home.display()))? {
        let path = entry?.path();
        let removed =
            if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        removed.with_context(|| format!("removing {}", path.display()))?;
    }
    println!("wiped {}: the next `millions up` starts from empty", home.display());
    Ok(())
}

async fn stop_everything(home: &Path) -> anyhow::Result<()> {
    let Some(ctl) = control::running(home) else {
        let topology = stored_topology(home).ok().flatten();
        let orphans = topology.as_ref().map(|t| control::orphans(home, t)).unwrap_or_default();
        let Some(topology) = topology.filter(|_| !orphans.is_empty()) else {
            bail!(nothing_running(home));
        };
        println!(
            "the controller is gone; stopping the {} nodes it left running: {}",
            orphans.len(),
            describe_orphans(&orphans)
        );
        tokio::task::block_in_place(|| control::stop_orphans(home, &topology))?;
        let _ = std::fs::remove_file(control::control_file(home));
        println!("all stopped");
        return Ok(());
    };
    let topology = topology::load(&topology_path(home))?;
    let before = fetch_nodes(home, ctl.api).await.map(|r| r.nodes).unwrap_or_default();
    client()
        .post(format!("http://{}/api/shutdown", ctl.api))
        .bearer_auth(admin_token(home)?)
        .send()
        .await
        .context("asking the controller to stop")?;
    println!("stopping {} nodes ...", before.len());
    wait_stopped(home, &topology, &ctl, &before).await?;
    println!("all stopped");
    Ok(())
}

/// `millions status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let home = &args.home.home;
    let Some(ctl) = control::running(home) else {
        if let Some(topology) = stored_topology(home).ok().flatten() {
            let orphans = control::orphans(home, &topology);
            if !orphans.is_empty() {
                bail!(
                    "the controller is not running, but {} nodes of topology {:?} it started still run: {}\n\
                     `millions up` starts a controller that adopts them; `millions down` stops them",
                    orphans.len(),
                    topology.name(),
                    describe_orphans(&orphans)
                );
            }
        }
        bail!(nothing_running(home));
    };
    let reply = fetch_nodes(home, ctl.api).await?;
    if args.json {
        let json = serde_json::json!({
            "topology": reply.topology,
            "controller": ctl,
            "nodes": reply.nodes,
            "cluster": reply.cluster,
            "shards": reply.shards,
            "dcs": reply.dcs,
            "events": reply.events,
            "scaling": reply.scaling,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!("topology {}   controller pid {} api {}", reply.topology, ctl.pid, ctl.api);
    println!(
        "{:<16} {:<9} {:<5} {:<22} {:>8}  {:<9} {:>8}  postgres",
        "NODE", "ROLE", "DC", "ADDRESS", "PID", "HEALTH", "RESTARTS"
    );
    for n in reply.nodes {
        let health = n.health();
        let pg = n.pg.map_or(String::new(), |p| {
            let mut s = format!("shard{} {}", p.shard, p.role);
            if let Some(state) = p.replication {
                s.push_str(&format!(" {state}"));
            }
            if let Some(lag) = p.lag_bytes {
                s.push_str(&format!(" lag {lag} B"));
            }
            if let Some(ms) = p.lag_ms {
                s.push_str(&format!(" {ms:.0} ms"));
            }
            s
        });
        let pid = n.pid.map_or("-".to_owned(), |p| p.to_string());
        println!(
            "{:<16} {:<9} {:<5} {:<22} {:>8}  {:<9} {:>8}  {pg}",
            n.name, n.role, n.dc, n.addr, pid, health, n.restarts
        );
    }
    println!();
    println!("shard map epoch {}", reply.cluster.epoch);
    for (i, shard) in reply.cluster.shards.iter().enumerate() {
        let primary = shard.primary.as_deref().unwrap_or("(failing over)");
        let replicas = if shard.replicas.is_empty() { "none".to_owned() } else { shard.replicas.join(", ") };
        let buckets = reply.shards.get(i).map_or(String::new(), |s| {
            let size = match (s.size_bytes, s.rows_estimate) {
                (Some(bytes), Some(rows)) => format!(", ~{rows} rows, {} MiB", bytes / (1 << 20)),
                _ => String::new(),
            };
            let load = s.queries_per_sec.map_or(String::new(), |q| format!(", {q:.0} queries/s"));
            format!("   {} buckets{size}{load}", s.buckets)
        });
        println!("  shard{i}: primary {primary}   read replicas {replicas}{buckets}");
        if let Some(s) = reply.shards.get(i) {
            let survives = match (s.survives.as_str(), s.promise.as_str()) {
                ("dc", _) => "the loss of a data center",
                ("node", _) => "the loss of a node",
                (_, "nothing") => "nothing (asynchronous)",
                _ => "nothing (no replica left to confirm them)",
            };
            let confirm = if s.quorum.is_empty() {
                String::new()
            } else {
                format!(
                    "; a commit waits for one of {} (streaming: {})",
                    s.quorum.join(", "),
                    if s.quorum_streaming.is_empty() {
                        "none".to_owned()
                    } else {
                        s.quorum_streaming.join(", ")
                    }
                )
            };
            println!("          acknowledged writes survive {survives}{confirm}");
            for w in &s.warnings {
                println!("          WARNING: {w}");
            }
        }
    }
    for m in &reply.cluster.moves {
        println!(
            "  move {}: {} buckets from shard{} to shard{}, at step {} (since {})",
            m.id,
            m.buckets.len(),
            m.from,
            m.to,
            m.phase,
            m.started
        );
    }
    print_scaling(&reply.scaling);
    let down: Vec<&str> = reply.dcs.iter().filter(|d| d.state == "down").map(|d| d.name.as_str()).collect();
    if !down.is_empty() {
        println!("data centers down: {}", down.join(", "));
    }
    let recent = reply.events.len().saturating_sub(10);
    if reply.events.len() > recent {
        println!();
        println!("events (latest last):");
    }
    for e in &reply.events[recent..] {
        let timing = match (e.detection_ms, e.failover_ms) {
            (Some(d), Some(f)) => format!("  [detected in {d} ms, new primary after {f} ms]"),
            _ => String::new(),
        };
        let about = e.shard.map_or_else(|| "all   ".to_owned(), |s| format!("shard{s}"));
        println!("  {}  {about} {:<16} {}{timing}", e.at, e.kind, e.detail);
    }
    Ok(())
}

/// `millions chaos`.
pub async fn chaos(args: ChaosArgs) -> anyhow::Result<()> {
    let ctl = controller(&args.home.home)?;
    let (path, what) = match &args.action {
        ChaosAction::Kill { node } => (format!("nodes/{node}/kill"), format!("kill: {node}")),
        ChaosAction::Restart { node } => (format!("nodes/{node}/restart"), format!("restart: {node}")),
        ChaosAction::Stop { node } => (format!("nodes/{node}/stop"), format!("stop: {node}")),
        ChaosAction::Start { node } => (format!("nodes/{node}/start"), format!("start: {node}")),
        ChaosAction::DcDown { dc } => (format!("dcs/{dc}/down"), format!("dc-down: {dc}")),
        ChaosAction::DcUp { dc } => (format!("dcs/{dc}/up"), format!("dc-up: {dc}")),
        ChaosAction::WanCut { dc } => (format!("dcs/{dc}/wan-cut"), format!("wan-cut: {dc}")),
        ChaosAction::WanHeal { dc } => (format!("dcs/{dc}/wan-heal"), format!("wan-heal: {dc}")),
    };
    // A data center's return waits for its replicas to stream again.
    let slow = reqwest::Client::builder().timeout(Duration::from_secs(300)).build()?;
    let token = admin_token(&args.home.home)?;
    let r = slow.post(format!("http://{}/api/{path}", ctl.api)).bearer_auth(token).send().await?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{}", body["error"]["message"].as_str().unwrap_or("the controller refused"));
    }
    println!("{what} {body}");
    Ok(())
}

/// `millions purge`: through the controller, which purges every edge at once;
/// fails (naming the edges) unless every edge that runs purged.
pub async fn purge(args: PurgeArgs) -> anyhow::Result<()> {
    let ctl = controller(&args.home.home)?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let token = admin_token(&args.home.home)?;
    let body = serde_json::json!({
        "paths": args.paths, "prefixes": args.prefixes, "tags": args.tags, "soft": args.soft,
    });
    let r = client
        .post(format!("http://{}/api/cdn/purge", ctl.api))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    let Some(edges) = body["edges"].as_array() else {
        bail!("{}", body["error"]["message"].as_str().unwrap_or("the controller refused"));
    };
    for e in edges {
        let detail = match (e["purged"].as_u64(), e["error"].as_str()) {
            (Some(n), _) => format!("{n} purged"),
            (None, Some(why)) => why.to_owned(),
            (None, None) => "not running: it drops its disk tier before it starts again".to_owned(),
        };
        println!(
            "  {:<14} {:<4} {:<12} {detail}",
            e["edge"].as_str().unwrap_or("?"),
            e["dc"].as_str().unwrap_or("?"),
            e["outcome"].as_str().unwrap_or("?")
        );
    }
    if !status.is_success() {
        bail!("the purge did not reach every edge: those marked failed may still serve what it named");
    }
    println!("purged {} object(s) from every edge", body["purged"].as_u64().unwrap_or(0));
    Ok(())
}

/// `millions scale`: the controller starts the new nodes (each ready before its
/// load balancers send it anything) or drains and stops the highest ones.
pub async fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    let ctl = controller(&args.home.home)?;
    let request = serde_json::json!({ "dc": args.dc, "role": args.role, "count": args.count });
    // Starting a node waits for it to be ready (up to 90 s each); draining one
    // for its requests in flight.
    let body = post_shard_op(&args.home.home, &ctl, "/api/scale", &request, Duration::from_secs(900)).await?;
    let names = |key: &str| {
        body[key]
            .as_array()
            .map_or(String::new(), |a| a.iter().filter_map(|n| n.as_str()).collect::<Vec<_>>().join(", "))
    };
    let (from, to) = (body["from"].as_u64().unwrap_or(0), body["to"].as_u64().unwrap_or(0));
    match from.cmp(&to) {
        std::cmp::Ordering::Equal => println!("{}'s {} nodes: already {to}", args.dc, args.role),
        std::cmp::Ordering::Less => {
            println!(
                "{}'s {} nodes: {from} → {to} (started {}; {} ms)",
                args.dc,
                args.role,
                names("added"),
                body["took_ms"]
            )
        }
        std::cmp::Ordering::Greater => println!(
            "{}'s {} nodes: {from} → {to} (drained and stopped {}; {} ms)",
            args.dc,
            args.role,
            names("removed"),
            body["took_ms"]
        ),
    }
    Ok(())
}

/// `millions shard`.
pub async fn shard(args: ShardArgs) -> anyhow::Result<()> {
    let ctl = controller(&args.home.home)?;
    let node = match &args.action {
        ShardAction::Promote { node } => node,
        ShardAction::Move { buckets, to } => return move_buckets(&args.home.home, &ctl, buckets, *to).await,
        ShardAction::Isolate { username, to } => {
            let request = serde_json::json!({ "username": username, "to": to });
            let wait = Duration::from_secs(3600);
            let body = post_shard_op(&args.home.home, &ctl, "/api/shards/isolate", &request, wait).await?;
            let mates: Vec<&str> =
                body["bucket_mates"].as_array().into_iter().flatten().filter_map(|m| m.as_str()).collect();
            println!("bucket {} moved with its {} users: {}", body["bucket"], mates.len(), mates.join(", "));
            print_move(&body["moved"]);
            return Ok(());
        }
        ShardAction::Add { primary, replicas, replication, survives } => {
            let mut request = serde_json::Map::new();
            let mut put = |key: &str, value: serde_json::Value| request.insert(key.to_owned(), value);
            if let Some(dc) = primary {
                put("primary", dc.as_str().into());
            }
            if let Some(dcs) = replicas {
                let dcs: Vec<&str> = dcs.iter().map(String::as_str).filter(|d| !d.is_empty()).collect();
                put("replicas", dcs.into());
            }
            if let Some(r) = replication {
                put("replication", r.as_str().into());
            }
            if let Some(s) = survives {
                put("survives", s.as_str().into());
            }
            // initdb and a base backup per replica: well under a minute here.
            let request = serde_json::Value::Object(request);
            let wait = Duration::from_secs(900);
            let body = post_shard_op(&args.home.home, &ctl, "/api/shards/add", &request, wait).await?;
            let nodes: Vec<String> = body["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    format!(
                        "{} ({}, {})",
                        n["name"].as_str().unwrap_or("?"),
                        n["dc"].as_str().unwrap_or("?"),
                        n["addr"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            println!(
                "shard {} {} in {:.1} s: {}; {} replication{}; in the map at epoch {} with no bucket \
                 (`millions shard rebalance` moves buckets onto it)",
                body["shard"],
                if body["resumed"].as_bool() == Some(true) { "finished joining" } else { "added" },
                body["took_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                nodes.join(", "),
                body["replication"].as_str().unwrap_or("?"),
                body["survives"].as_str().map(|s| format!(", survives a {s}")).unwrap_or_default(),
                body["epoch"],
            );
            return Ok(());
        }
        ShardAction::Cancel { id } => {
            let r = client()
                .post(format!("http://{}/api/shards/moves/{id}/cancel", ctl.api))
                .bearer_auth(admin_token(&args.home.home)?)
                .send()
                .await?;
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            if !status.is_success() {
                bail!("{}", body["error"]["message"].as_str().unwrap_or("the controller refused"));
            }
            println!("{}", body["message"].as_str().unwrap_or("cancelled"));
            return Ok(());
        }
        ShardAction::Rebalance { by, batch, max_moves, window } => {
            return rebalance(&args.home.home, &ctl, by, *batch, *max_moves, (*window).into()).await;
        }
    };
    // The target may take a while to receive the old primary's last WAL.
    let slow = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let token = admin_token(&args.home.home)?;
    let r =
        slow.post(format!("http://{}/api/nodes/{node}/promote", ctl.api)).bearer_auth(token).send().await?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{}", body["error"]["message"].as_str().unwrap_or("the controller refused"));
    }
    println!(
        "shard {}: {} is the primary (was {}); writes paused {} ms",
        body["shard"],
        body["new"].as_str().unwrap_or("?"),
        body["old"].as_str().unwrap_or("?"),
        body["write_pause_ms"]
    );
    Ok(())
}

/// `--to` of `shard isolate`: a shard number, or `new`.
fn parse_isolate_to(text: &str) -> Result<serde_json::Value, String> {
    match text {
        "new" => Ok("new".into()),
        n => {
            n.parse::<u16>().map(Into::into).map_err(|_| format!("{n:?} is neither a shard number nor `new`"))
        }
    }
}

/// POST `body` to the controller's `path` with the admin token, waiting up to
/// `wait` for the answer (shard operations answer when they are done); the
/// answer's JSON, or the controller's message as the error.
async fn post_shard_op(
    home: &Path,
    ctl: &control::ControlFile,
    path: &str,
    body: &serde_json::Value,
    wait: Duration,
) -> anyhow::Result<serde_json::Value> {
    let client = reqwest::Client::builder().timeout(wait).build()?;
    let r = client
        .post(format!("http://{}{path}", ctl.api))
        .bearer_auth(admin_token(home)?)
        .json(body)
        .send()
        .await?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{}", body["error"]["message"].as_str().unwrap_or("the controller refused"));
    }
    Ok(body)
}

/// `millions shard move`: the controller runs the move and answers when it is done.
async fn move_buckets(home: &Path, ctl: &control::ControlFile, buckets: &str, to: u16) -> anyhow::Result<()> {
    let buckets = parse_buckets(buckets).context("BUCKETS")?;
    // A move copies every row of its buckets: large ones take a while.
    let request = serde_json::json!({ "buckets": buckets, "to": to });
    let body = post_shard_op(home, ctl, "/api/shards/move", &request, Duration::from_secs(3600)).await?;
    print_move(&body);
    Ok(())
}

/// One move's report, as `shard move` and `shard rebalance` print it.
fn print_move(body: &serde_json::Value) {
    println!(
        "move {}: {} buckets from shard {} to shard {}; {} rows copied, {} jobs moved; writes paused {} ms; took {} ms (epoch {})",
        body["id"],
        body["buckets"],
        body["from"],
        body["to"],
        body["rows"],
        body["jobs"],
        body["write_pause_ms"],
        body["took_ms"],
        body["epoch"]
    );
}

/// `millions shard rebalance`: the controller plans and runs the moves.
async fn rebalance(
    home: &Path,
    ctl: &control::ControlFile,
    by: &str,
    batch: usize,
    max_moves: usize,
    window: Duration,
) -> anyhow::Result<()> {
    if by == "load" && window < Duration::from_secs(1) {
        bail!("--window {}: measure the load for at least a second", humantime::format_duration(window));
    }
    let request = serde_json::json!({
        "by": by, "batch": batch, "max_moves": max_moves, "window_secs": window.as_secs(),
    });
    let body =
        post_shard_op(home, ctl, "/api/shards/rebalance", &request, Duration::from_secs(6 * 3600)).await?;
    let moves = body["moves"].as_array().map(Vec::as_slice).unwrap_or_default();
    for m in moves {
        print_move(m);
    }
    println!("rebalanced by {by}: {} moves", moves.len());
    Ok(())
}

/// `millions logs`.
pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let home = &args.home.home;
    controller(home)?;
    let topology = topology::load(&topology_path(home))?;
    if let Some(node) = &args.node
        && node != "control"
        && topology.node(node).is_none()
    {
        let names: Vec<&str> = topology.nodes().iter().map(|n| n.name.as_str()).collect();
        bail!("no node named {node:?}; nodes: control, {}", names.join(", "));
    }
    let filter = LogFilter { level: args.level, since: args.since.map(|d| std::time::SystemTime::now() - d) };
    if let Some(id) = &args.request {
        let nodes: Vec<&str> = match &args.node {
            Some(node) => vec![node.as_str()],
            None => {
                std::iter::once("control").chain(topology.nodes().iter().map(|n| n.name.as_str())).collect()
            }
        };
        let mut found = Vec::new();
        for node in nodes {
            // The current file and the rotated ones (telemetry::output).
            let current = control::log_path(home, node);
            for path in telemetry::output::LogFile::all_paths(&current, telemetry::output::DEFAULT_KEEP) {
                found.extend(
                    crate::request_log::search(node, &path, id, |line| filter.keep(line))
                        .with_context(|| format!("reading {}", path.display()))?,
                );
            }
        }
        if found.is_empty() {
            bail!("no log line names request {id:?} (logs are kept per node under {})", home.display());
        }
        let mut out = std::io::stdout().lock();
        for f in crate::request_log::in_time_order(found) {
            writeln!(out, "{:<12} {}", f.node, f.line)?;
        }
        return Ok(());
    }
    let node = args.node.as_deref().expect("clap requires a node without --request");
    let path = control::log_path(home, node);
    let mut file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = std::io::stdout();
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    filter.write(&buf, &mut out)?;
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
        let len = std::fs::metadata(&path)?.len();
        if len < pos {
            // Rotated (or truncated): the name is a new file now.
            file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            pos = 0;
        }
        if len > pos {
            file.seek(SeekFrom::Start(pos))?;
            buf.clear();
            file.read_to_end(&mut buf)?;
            filter.write(&buf, &mut out)?;
            out.flush()?;
            pos = len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_numbers_and_ranges() {
        assert_eq!(parse_buckets("7").unwrap(), vec![7]);
        assert_eq!(parse_buckets("7, 10-12,4095").unwrap(), vec![7, 10, 11, 12, 4095]);
        assert!(parse_buckets("12-10").unwrap_err().to_string().contains("backwards"));
        assert!(parse_buckets("x").unwrap_err().to_string().contains("not a bucket number"));
        assert!(parse_buckets("70000").is_err());
        assert!(parse_buckets("").is_err());
    }

    #[test]
    fn logs_are_filtered_by_level_and_time_and_other_lines_are_kept() {
        let now = std::time::SystemTime::now();
        let at = |ago: u64| humantime::format_rfc3339_micros(now - Duration::from_secs(ago)).to_string();
        let text = format!(
            "{{\"timestamp\":\"{}\",\"level\":\"INFO\",\"message\":\"old\"}}\n\
             {{\"timestamp\":\"{}\",\"level\":\"WARN\",\"message\":\"new warning\"}}\n\
             {{\"timestamp\":\"{}\",\"level\":\"DEBUG\",\"message\":\"new detail\"}}\n\
             2026-12-05 04:36:38.681 UTC [42] LOG:  a PostgreSQL line\n",
            at(3600),
            at(10),
            at(5)
        );
        let run = |level: Option<&str>, since: Option<u64>| {
            let filter = LogFilter {
                level: level.map(|l| parse_level(l).unwrap()),
                since: since.map(|s| now - Duration::from_secs(s)),
            };
            let mut out = Vec::new();
            filter.write(text.as_bytes(), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(run(None, None), text);
        let warn = run(Some("warn"), None);
        assert!(warn.contains("new warning") && !warn.contains("old") && !warn.contains("detail"), "{warn}");
        assert!(warn.contains("PostgreSQL line"), "{warn}");
        let recent = run(None, Some(60));
        assert!(recent.contains("new warning") && recent.contains("new detail") && !recent.contains("old"));
        assert!(parse_level("loud").unwrap_err().contains("not a level"));
    }
}
