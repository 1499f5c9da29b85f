//! `millions bench`: open-loop load against the web tier, then the checker.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use loadgen::bench::{BenchConfig, Mix, Op, Report, Step, Tolerance};

/// `millions bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS)]
pub struct BenchArgs {
    /// Run directory of a running topology. With no --target, the app is reached by
    /// name through the topology's DNS servers, from its client regions (user i
    /// belongs to region i mod R, and comes from the region's range: host .2 of its
    /// first range); without DNS servers (or with --no-dns), its load balancers are
    /// the targets, one per DC, each user sticking to one of them.
    #[arg(long, env = "MILLIONS_HOME", default_value = ".millions")]
    home: PathBuf,
    /// A base URL to load (repeatable), e.g. http://127.0.1.10:8000; user i always
    /// goes through the (i mod N)th.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Requests per second, sent on schedule whatever the answers (open loop).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long to measure, e.g. 30s, 2m.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load before measuring (not recorded).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Operation weights, e.g. (the default)
    /// feed=57,timeline=28,post=3,photo_post=1,like=2.7,follow=2,comment=1,comments=2,notifications=2,
    /// delete_post=0.3,search=1,view_photo=0.
    #[arg(long)]
    mix: Option<String>,
    /// User accounts to spread the load over (Zipf-distributed).
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// Name prefix of those accounts (`user` matches `millions seed`).
    #[arg(long, default_value = "user")]
    user_prefix: String,
    /// Sign the accounts up first (otherwise they must exist, e.g. seeded).
    #[arg(long)]
    create_users: bool,
    /// The accounts' password.
    #[arg(long, default_value = "password123")]
    password: String,
    /// Most requests in flight; a request due beyond it counts as `overloaded`.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Poisson arrivals instead of a fixed interval.
    #[arg(long)]
    poisson: bool,
    /// Seed of the run's random draws (operations, users, whom they follow, like
    /// or comment on): the same seed repeats the same requests, so a second run's
    /// follows find their edges made by the first; another seed draws anew.
    #[arg(long, default_value_t = BenchConfig::default().seed)]
    seed: u64,
    /// Skip the final check that every acknowledged write is readable.
    #[arg(long)]
    no_verify: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Inject a fault a third into the run and report the recovery time:
    /// kill-web, kill-worker, kill-redis, kill-replica or kill-primary (SIGKILL
    /// through the controller, which restarts the node), or dc-down[:DC] (a whole
    /// data center lost, by default the one of shard 0's primary; it stays down:
    /// `millions chaos dc-up DC` brings it back), reshard (a shard added, then a
    /// rebalance moves buckets onto it, 64 per move; the outcome gives the
    /// buckets' write pauses) or reshard:N (N buckets moved from shard 0 to the
    /// last shard, 16 per move), under the load. What each claims about the
    /// requests after it is below. Or a step in the load, for the autoscaler:
    /// spike[:FACTOR] (the rate times FACTOR, 4 by default, through the middle
    /// third of the run) or queue-burst[:RATE] (RATE photo posts per second,
    /// 20 by default, added through the middle third); the report then gives
    /// latency before, during and after the step and when web servers and
    /// workers were added and removed.
    #[arg(long)]
    scenario: Option<String>,
    /// With spike or queue-burst: after the run, keep following the scaled
    /// roles until they are back at their starting counts, up to this long (the
    /// autoscaler's default scale-in waits out a 300 s window), e.g. 400s.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    scale_in_wait: Duration,
    /// Reach the load balancers by address even when the topology has DNS servers.
    #[arg(long)]
    no_dns: bool,
}

/// The exit status, and what each scenario claims (`millions bench --help`).
const EXIT_STATUS: &str = "\
Exit status:
  0  the run passed: every acknowledged write found, every photo processed, every
     writer saw its own writes, and no request failed (with a scenario: none before
     the kill, none in the last second of the run, and after the kill what the
     scenario claims)
  1  a check failed (a lost write, a read-your-writes violation, photos not
     processed, a failed request beyond what the scenario allows, a fault not
     injected or not recovered from), or the run could not be made (nothing
     running, set-up failed, values refused)
  2  a usage error (an unknown option, a value that does not parse)
The report's last line says which, and --json FILE writes it as `verdict`.

Scenarios, and what they claim about the requests after the kill (failed
requests are reported; where the claim allows them, they do not fail the run):
  kill-web      no read may fail when the web server's DC has another one behind
                its load balancer and the load goes through the load balancers
                (no --target); otherwise requests may fail until it is back
  kill-worker   no request may fail (no request waits on a worker)
  kill-redis    no request may fail (sessions are in the shards, cache reads
                fall through to the database)
  kill-replica  no read may fail (reads move to another replica or the primary)
  kill-primary  no read may fail (replicas serve them); writes may fail until a
                replica is promoted
  dc-down[:DC]  requests may fail until every user is served by the other data
                centers again (DNS withdraws the lost one; its shards fail over)
  reshard[:N]   no request may fail (a write to a moving bucket waits for the
                cutover and goes to the bucket's new shard); without N a shard
                is added first and the rebalance fills it
  spike[:F], queue-burst[:R]
                a step in the load, not a fault: as without a scenario, no
                request may fail, the autoscaler adding and removing nodes
                included";

/// A `--scenario`: the node it kills, and what it claims.
struct Scenario {
    /// Its name on the command line.
    name: &'static str,
    /// The role of the node killed.
    role: &'static str,
    /// The PostgreSQL role of the node killed, for a database node.
    pg_role: Option<&'static str>,
    /// What it claims about the requests after the kill (see [`EXIT_STATUS`]).
    claim: Claim,
}

/// What a scenario claims, before the topology is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The same whatever the topology.
    Always(Tolerance),
    /// No read fails if the killed web server has a sibling behind its DC's
    /// load balancer and the load goes through the load balancers; otherwise
    /// requests may fail until it is back.
    ReadsIfBalanced,
}

/// The scenarios.
const SCENARIOS: &[Scenario] = &[
    Scenario { name: "kill-web", role: "web", pg_role: None, claim: Claim::ReadsIfBalanced },
    Scenario {
        name: "kill-worker",
        role: "worker",
        pg_role: None,
        claim: Claim::Always(Tolerance::NoRequestFails),
    },
    Scenario {
        name: "kill-redis",
        role: "redis",
        pg_role: None,
        claim: Claim::Always(Tolerance::NoRequestFails),
    },
    Scenario {
        name: "kill-replica",
        role: "postgres",
        pg_role: Some("replica"),
        claim: Claim::Always(Tolerance::NoReadFails),
    },
    Scenario {
        name: "kill-primary",
        role: "postgres",
        pg_role: Some("primary"),
        claim: Claim::Always(Tolerance::NoReadFails),
    },
];

/// What `claim` means for killing `victim` of the topology whose nodes are
/// `nodes` (`/api/nodes`), the load going through its load balancers unless
/// `explicit_targets`.
fn tolerance(claim: Claim, nodes: &serde_json::Value, victim: &str, explicit_targets: bool) -> Tolerance {
    match claim {
        Claim::Always(t) => t,
        Claim::ReadsIfBalanced => {
            let all = nodes["nodes"].as_array().map(Vec::as_slice).unwrap_or_default();
            let dc = all.iter().find(|n| n["name"] == victim).map(|n| &n["dc"]);
            let in_dc = |role: &str| all.iter().filter(|n| n["role"] == role && Some(&n["dc"]) == dc).count();
            if !explicit_targets && in_dc("lb") > 0 && in_dc("web") > 1 {
                Tolerance::NoReadFails
            } else {
                Tolerance::UntilRecovered
            }
        }
    }
}

/// Run the bench; exits 1 when the report's verdict fails (see [`EXIT_STATUS`]
/// and `loadgen::bench::Verdict`).
pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    // `dc-down` or `dc-down:DC`; `Some(None)`: the DC of shard 0's primary.
    let dc_down: Option<Option<String>> = match args.scenario.as_deref() {
        Some("dc-down") => Some(None),
        Some(s) => s.strip_prefix("dc-down:").map(|dc| Some(dc.to_owned())),
        None => None,
    };
    // `reshard` (a shard added and filled) or `reshard:N` (N buckets moved) under the load.
    let reshard: Option<Reshard> = match args.scenario.as_deref() {
        Some("reshard") => Some(Reshard::AddShard),
        Some(s) => match s.strip_prefix("reshard:") {
            Some(n) => {
                Some(Reshard::Buckets(n.parse().ok().filter(|n| (1..=4096).contains(n)).with_context(
                    || format!("scenario {s:?}: the number of buckets to move must be 1 to 4096"),
                )?))
            }
            None => None,
        },
        None => None,
    };
    let step = step_of(args.scenario.as_deref(), args.rate, args.duration)?;
    let scenario = match &args.scenario {
        Some(_) if dc_down.is_some() || reshard.is_some() || step.is_some() => None,
        Some(name) => Some(SCENARIOS.iter().find(|s| s.name == name).with_context(|| {
            let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
            format!(
                "no scenario named {name:?}; scenarios: {}, dc-down[:DC], reshard[:N], spike[:FACTOR], queue-burst[:RATE]",
                names.join(", ")
            )
        })?),
        None => None,
    };
    let ctl = control::running(&args.home);
    if (scenario.is_some() || dc_down.is_some() || reshard.is_some() || step.is_some()) && ctl.is_none() {
        bail!("a scenario needs a running topology (nothing is running in {})", args.home.display());
    }
    // The controller's API asks for the run directory's admin token.
    let token = match &ctl {
        Some(_) => control::admin_token(&args.home)?,
        None => String::new(),
    };
    let nodes: serde_json::Value = match &ctl {
        Some(ctl) => {
            let request =
                reqwest::Client::new().get(format!("http://{}/api/nodes", ctl.api)).bearer_auth(&token);
            request.send().await?.error_for_status()?.json().await?
        }
        None => serde_json::Value::Null,
    };
    let mut targets = args.targets.clone();
    let mut dns = None;
    if targets.is_empty() {
        if ctl.is_none() {
            bail!("no --target given and nothing is running in {}", args.home.display());
        }
        if !args.no_dns {
            let topology = topology::load(&args.home.join("topology.toml"))?;
            dns = dns_mode(&topology);
            if let Some(mode) = &dns {
                targets = mode.targets();
            }
        }
    }
    if targets.is_empty() {
        // The public entries: each DC's load balancer over HTTPS, else its web
        // servers.
        let https_port = topology::load(&args.home.join("topology.toml"))?.ports().https;
        let of_role = |role: &str| -> Vec<String> {
            nodes["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| n["role"] == role)
                .filter_map(|n| n["addr"].as_str()?.parse::<std::net::SocketAddr>().ok())
                .map(|a| match role {
                    "lb" => format!("https://{}", std::net::SocketAddr::new(a.ip(), https_port)),
                    _ => format!("http://{a}"),
                })
                .collect()
        };
        targets = of_role("lb");
        if targets.is_empty() {
            targets = of_role("web");
        }
    }
    // The run directory's CA, which signed its load balancers' certificates.
    let ca_pem = std::fs::read(control::tls::ca_path(&args.home)).ok();
    let mix = match &args.mix {
        Some(m) => Mix::parse(m)?,
        None => Mix::default(),
    };
    let config = BenchConfig {
        targets,
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        mix,
        users: args.users,
        user_prefix: args.user_prefix,
        create_users: args.create_users,
        password: args.password,
        max_in_flight: args.max_in_flight,
        poisson: args.poisson,
        seed: args.seed,
        verify: !args.no_verify,
        dns,
        ca_pem,
        bypass_token: (!token.is_empty()).then(|| token.clone()),
        step: step.clone(),
        ..BenchConfig::default()
    };
    config.validate()?;
    if let Some(mode) = &config.dns {
        let regions: Vec<String> =
            mode.regions.iter().map(|r| format!("{} from {}", r.name, r.source)).collect();
        eprintln!(
            "reaching {}:{} through DNS ({}), TTL {} s; regions: {}",
            mode.name,
            mode.port,
            mode.servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            mode.ttl.as_secs(),
            regions.join("; ")
        );
    }
    let fault = match (scenario, &ctl) {
        (Some(scenario), Some(ctl)) => {
            let victim = nodes["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["role"] == scenario.role && scenario.pg_role.is_none_or(|r| n["pg"]["role"] == r))
                .and_then(|n| n["name"].as_str())
                .with_context(|| format!("scenario {}: the topology has no such node", scenario.name))?
                .to_owned();
            let url = format!("http://{}/api/nodes/{victim}/kill", ctl.api);
            let token = token.clone();
            Some(loadgen::bench::Fault {
                tolerance: tolerance(scenario.claim, &nodes, &victim, !args.targets.is_empty()),
                action: format!("kill {victim}"),
                at: config.duration / 3,
                run: Box::pin(async move {
                    let r = reqwest::Client::new()
                        .post(url)
                        .bearer_auth(token)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    if r.status().is_success() {
                        Ok("killed".to_owned())
                    } else {
                        Err(r.text().await.unwrap_or_default())
                    }
                }),
            })
        }
        _ => match (&dc_down, reshard, &ctl) {
            (Some(dc), _, Some(ctl)) => {
                Some(dc_down_fault(dc.clone(), &nodes, ctl, token.clone(), config.duration / 3)?)
            }
            (None, Some(Reshard::Buckets(n)), Some(ctl)) => {
                Some(reshard_fault(n, &nodes, ctl, token.clone(), config.duration / 3)?)
            }
            (None, Some(Reshard::AddShard), Some(ctl)) => {
                Some(add_shard_fault(ctl, token.clone(), config.duration / 5))
            }
            _ => None,
        },
    };
    let lost_dc = fault.as_ref().and_then(|f| f.action.strip_prefix("dc-down ").map(str::to_owned));
    let watch = match (&step, &ctl) {
        (Some(_), Some(ctl)) => Some(crate::scaling::Watch::start(ctl.api, token.clone())),
        _ => None,
    };
    let report = loadgen::bench::run_with_fault(&config, |line| eprintln!("{line}"), fault).await?;
    if let Some(dc) = lost_dc {
        eprintln!("{dc} stays down: `millions chaos dc-up {dc}` brings it back");
    }
    println!("{report}");
    let scaling = match watch {
        Some(watch) => {
            if !args.scale_in_wait.is_zero() {
                eprintln!("following the scaled roles until they are back (up to {:?})", args.scale_in_wait);
            }
            let (changes, back) = watch.finish(args.scale_in_wait).await;
            let window = step.as_ref().map(|s| (s.from.as_secs_f64(), s.to.as_secs_f64()));
            let from = report.measured_from_unix_ms;
            print!("{}", crate::scaling::render(&changes, back, from, config.duration.as_secs_f64(), window));
            Some(serde_json::json!({ "changes": changes, "back": back }))
        }
        None => None,
    };
    if let Some(path) = &args.json {
        match scaling {
            None => report.write_json(path)?,
            Some(scaling) => {
                let mut json = serde_json::to_value(&report)?;
                json["scaling"] = scaling;
                std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    outcome(&report)
}

/// The step in the load that `--scenario spike[:FACTOR]` or
/// `queue-burst[:RATE]` asks for (through the middle third of the measured
/// window), `None` for another scenario.
fn step_of(scenario: Option<&str>, rate: f64, duration: Duration) -> anyhow::Result<Option<Step>> {
    let Some(s) = scenario else { return Ok(None) };
    let (name, value) = s.split_once(':').map_or((s, None), |(n, v)| (n, Some(v)));
    let number = |default: f64, what: &str| -> anyhow::Result<f64> {
        match value {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x > 0.0)
                .with_context(|| format!("scenario {s:?}: {what} must be a positive number, not {v:?}")),
        }
    };
    let (rate, op) = match name {
        "spike" => {
            let factor = number(4.0, "the factor")?;
            if factor <= 1.0 {
                bail!("scenario {s:?}: the factor must be above 1 (a step up)");
            }
            (rate * factor, None)
        }
        "queue-burst" => (rate + number(20.0, "the rate of photo posts")?, Some(Op::PhotoPost)),
        _ => return Ok(None),
    };
    Ok(Some(Step { from: duration / 3, to: duration * 2 / 3, rate, op }))
}

/// How to reach the app by name in `t`: through its DNS servers, from each client
/// region's range (host .2 of its first range; with no region, 127.0.0.1, which
/// DNS places in no region); `None` when it has no DNS server.
fn dns_mode(t: &topology::Topology) -> Option<loadgen::bench::DnsMode> {
    use loadgen::bench::{ClientRegion, DcRange, DnsMode};
    let servers: Vec<std::net::SocketAddr> = t.nodes_of(topology::Role::Dns).map(|n| n.addr).collect();
    if servers.is_empty() {
        return None;
    }
    let mut regions: Vec<ClientRegion> = t
        .regions()
        .iter()
        .filter_map(|r| {
            let source = r.cidrs.first()?.host(2)?;
            Some(ClientRegion { name: r.name.clone(), source })
        })
        .collect();
    if regions.is_empty() {
        regions
            .push(ClientRegion { name: "anywhere".into(), source: std::net::IpAddr::from([127, 0, 0, 1]) });
    }
    let dcs = t
        .dcs()
        .iter()
        .map(|d| DcRange { name: d.name.clone(), network: d.cidr.network(), prefix: d.cidr.prefix() })
        .collect();
    let settings = t.dns();
    Some(DnsMode {
        name: format!("{}.{}", settings.app, settings.zone),
        port: t.ports().https,
        https: true,
        servers,
        regions,
        dcs,
        ttl: Duration::from_secs(u64::from(settings.ttl_secs).max(1)),
    })
}

/// The `dc-down` fault: `dc`, or the DC of shard 0's current primary, taken down
/// through the controller at `at`.
/// What `--scenario reshard[:N]` does.
#[derive(Debug, Clone, Copy)]
enum Reshard {
    /// `reshard`: a shard added, then a rebalance onto it.
    AddShard,
    /// `reshard:N`: N buckets of shard 0 moved to the last shard.
    Buckets(u16),
}

/// Buckets per move of `--scenario reshard`'s rebalance onto the new shard.
const GROW_BATCH: usize = 64;

/// `--scenario reshard`: a shard added (placed like the last one) while the load
/// runs, then buckets moved onto it by a rebalance, [`GROW_BATCH`] per move; no
/// request may fail. The outcome gives the time to add the shard and the write
/// pause every moved bucket saw: p50, p99 and max over the buckets, and per move.
fn add_shard_fault(ctl: &control::ControlFile, token: String, at: Duration) -> loadgen::bench::Fault {
    let api = ctl.api;
    loadgen::bench::Fault {
        tolerance: Tolerance::NoRequestFails,
        action: "reshard: a shard added, then a rebalance onto it".into(),
        at,
        run: Box::pin(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(1800))
                .build()
                .map_err(|e| e.to_string())?;
            let post = |path: &str, body: serde_json::Value| {
                client.post(format!("http://{api}{path}")).bearer_auth(&token).json(&body).send()
            };
            let r = post("/api/shards/add", serde_json::json!({})).await.map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("adding a shard: {}", r.text().await.unwrap_or_default()));
            }
            let added: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
            let body = serde_json::json!({ "by": "buckets", "batch": GROW_BATCH, "max_moves": 4096 });
            let r = post("/api/shards/rebalance", body).await.map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("the rebalance: {}", r.text().await.unwrap_or_default()));
            }
            let moves: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
            let moves = moves["moves"].as_array().cloned().unwrap_or_default();
            // Each bucket waited as long as its move's cutover.
            let mut per_bucket: Vec<u64> = vec![];
            let mut per_move: Vec<String> = vec![];
            for m in &moves {
                let pause = m["write_pause_ms"].as_u64().unwrap_or(0);
                let n = m["buckets"].as_u64().unwrap_or(0);
                per_bucket.extend(std::iter::repeat_n(pause, n as usize));
                per_move.push(pause.to_string());
            }
            per_bucket.sort_unstable();
            let at = |q: f64| {
                per_bucket
                    .get(((per_bucket.len() as f64 * q) as usize).min(per_bucket.len().saturating_sub(1)))
            };
            Ok(format!(
                "shard {} added in {:.1} s; {} buckets moved onto it in {} moves; each bucket's writes paused \
                 p50 {} ms, p99 {} ms, max {} ms (per move: {} ms)",
                added["shard"],
                added["took_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                per_bucket.len(),
                moves.len(),
                at(0.5).copied().unwrap_or(0),
                at(0.99).copied().unwrap_or(0),
                per_bucket.last().copied().unwrap_or(0),
                per_move.join(", ")
            ))
        }),
    }
}

/// Buckets per move of `--scenario reshard:N`: each move pauses its own buckets'
/// writes once, so the report gives a pause per move.
const RESHARD_BATCH: usize = 16;

/// `--scenario reshard:N`: the first `n` buckets of shard 0 moved to the last
/// shard, [`RESHARD_BATCH`] at a time, one move after the other, while the load
/// runs; no request may fail. The outcome lists each move's write pause.
fn reshard_fault(
    n: u16,
    nodes: &serde_json::Value,
    ctl: &control::ControlFile,
    token: String,
    at: Duration,
) -> anyhow::Result<loadgen::bench::Fault> {
    let cluster: control::ClusterState =
        serde_json::from_value(nodes["cluster"].clone()).context("the controller's cluster state")?;
    if cluster.shards.len() < 2 {
        bail!("scenario reshard needs at least two shards; the topology has {}", cluster.shards.len());
    }
    let to = (cluster.shards.len() - 1) as u16;
    let directory = match &cluster.directory {
        Some(ranges) => sharding::ShardMap::from_ranges(cluster.epoch, cluster.shards.len(), ranges),
        None => sharding::ShardMap::even(cluster.shards.len()),
    }
    .map_err(|e| anyhow::anyhow!("the bucket directory: {e}"))?;
    let buckets: Vec<u16> = directory
        .buckets_of(sharding::ShardId(0))
        .into_iter()
        .take(usize::from(n))
        .map(|b| b.get())
        .collect();
    if buckets.len() < usize::from(n) {
        bail!("scenario reshard: shard 0 owns {} buckets, fewer than {n}", buckets.len());
    }
    let url = format!("http://{}/api/shards/move", ctl.api);
    Ok(loadgen::bench::Fault {
        tolerance: Tolerance::NoRequestFails,
        action: format!("reshard {n} buckets from shard 0 to shard {to}"),
        at,
        run: Box::pin(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()
                .map_err(|e| e.to_string())?;
            let mut pauses = vec![];
            for batch in buckets.chunks(RESHARD_BATCH) {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "buckets": batch, "to": to }))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !r.status().is_success() {
                    return Err(r.text().await.unwrap_or_default());
                }
                let report: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
                pauses.push(report["write_pause_ms"].as_u64().unwrap_or(0));
            }
            let mut sorted = pauses.clone();
            sorted.sort_unstable();
            let list: Vec<String> = pauses.iter().map(u64::to_string).collect();
            Ok(format!(
                "{} moves; writes paused p50 {} ms, max {} ms (per move: {} ms)",
                pauses.len(),
                sorted[sorted.len() / 2],
                sorted[sorted.len() - 1],
                list.join(", ")
            ))
        }),
    })
}

fn dc_down_fault(
    dc: Option<String>,
    nodes: &serde_json::Value,
    ctl: &control::ControlFile,
    token: String,
    at: Duration,
) -> anyhow::Result<loadgen::bench::Fault> {
    let dc = match dc {
        Some(dc) => dc,
        None => {
            let primary =
                nodes["cluster"]["shards"][0]["primary"].as_str().context("shard 0 has no primary now")?;
            nodes["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["name"] == primary)
                .and_then(|n| n["dc"].as_str())
                .context("the DC of shard 0's primary is unknown")?
                .to_owned()
        }
    };
    let url = format!("http://{}/api/dcs/{dc}/down", ctl.api);
    Ok(loadgen::bench::Fault {
        tolerance: Tolerance::UntilRecovered,
        action: format!("dc-down {dc}"),
        at,
        run: Box::pin(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .map_err(|e| e.to_string())?;
            let r = client.post(url).bearer_auth(token).send().await.map_err(|e| e.to_string())?;
            if r.status().is_success() {
                Ok("down".to_owned())
            } else {
                Err(r.text().await.unwrap_or_default())
            }
        }),
    })
}

/// The command's outcome: an error (exit 1) carrying the verdict's reasons when
/// the run failed.
fn outcome(report: &Report) -> anyhow::Result<()> {
    let verdict = &report.verdict;
    if verdict.exit_code() == 0 {
        return Ok(());
    }
    bail!("the bench failed: {}", verdict.reasons.join("; "))
}

/// `millions seed`.
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// Run directory of a running topology (its shard primaries are written).
    #[arg(long, env = "MILLIONS_HOME", default_value = ".millions")]
    home: PathBuf,
    /// Users to create (`user0` ... `user{N-1}`, password `password123`).
    #[arg(long)]
    users: u64,
    /// Mean posts per user.
    #[arg(long)]
    posts_per_user: Option<f64>,
    /// Mean follows per user.
    #[arg(long)]
    mean_follows: Option<f64>,
    /// Random seed (same seed, same graph).
    #[arg(long)]
    seed: Option<u64>,
}

/// Seed the running topology's shards in bulk.
pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let home = &args.home;
    control::running(home).with_context(|| format!("nothing is running in {}", home.display()))?;
    let topology = topology::load(&home.join("topology.toml"))?;
    let urls = control::primary_urls(home, &topology)?;
    let mut config = loadgen::seed::SeedConfig::new(args.users);
    if let Some(p) = args.posts_per_user {
        config.posts_per_user = p;
    }
    if let Some(f) = args.mean_follows {
        config.mean_follows = f;
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    config.validate()?;
    // Where buckets moved, their users go to their new shard.
    let directory = control::directory(home, &topology)?;
    let report = loadgen::seed::seed_into(&urls, &directory, &config, |line| eprintln!("{line}")).await?;
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use loadgen::bench::{FaultReport, Report, Tolerance, Verdict};
    use serde_json::json;

    use super::{Claim, SCENARIOS, outcome, tolerance};

    fn with_fault(done: bool, recovered: bool) -> Report {
        let mut report = Report::default();
        report.checker.ran = true;
        report.checker.passed = true;
        report.errors = 3;
        report.fault = Some(FaultReport {
            action: "kill dc1-web-1".into(),
            done,
            recovered,
            quiet_secs: 1.0,
            errors_after: 3,
            outcome: if done { "killed".into() } else { "failed: no such node".into() },
            ..FaultReport::default()
        });
        report.verdict = Verdict::judge(&report);
        report
    }

    #[test]
    fn a_fault_not_injected_or_not_recovered_from_fails_the_command() {
        let err = outcome(&with_fault(false, true)).unwrap_err().to_string();
        assert!(err.contains("not injected"), "{err}");
        let err = outcome(&with_fault(true, false)).unwrap_err().to_string();
        assert!(err.contains("not recovered"), "{err}");
        outcome(&with_fault(true, true)).expect("an injected, recovered fault with a passing checker");
        let mut failed = with_fault(true, true);
        failed.checker.passed = false;
        failed.verdict = Verdict::judge(&failed);
        assert!(outcome(&failed).is_err());
    }

    #[test]
    fn a_spike_or_a_queue_burst_is_a_step_through_the_middle_third() {
        use std::time::Duration;

        use loadgen::bench::Op;

        use super::step_of;
        let d = Duration::from_secs(60);
        let spike = step_of(Some("spike"), 100.0, d).unwrap().unwrap();
        assert_eq!((spike.from, spike.to, spike.rate, spike.op), (d / 3, d * 2 / 3, 400.0, None));
        assert_eq!(step_of(Some("spike:2.5"), 100.0, d).unwrap().unwrap().rate, 250.0);
        let burst = step_of(Some("queue-burst:50"), 100.0, d).unwrap().unwrap();
        assert_eq!((burst.rate, burst.op), (150.0, Some(Op::PhotoPost)));
        assert_eq!(step_of(Some("queue-burst"), 100.0, d).unwrap().unwrap().rate, 120.0);
        for (bad, says) in [
            ("spike:1", "the factor must be above 1"),
            ("spike:x", "the factor must be a positive number"),
            ("spike:-2", "the factor must be a positive number"),
            ("queue-burst:0", "the rate of photo posts must be a positive number"),
            ("queue-burst:NaN", "must be a positive number"),
        ] {
            let e = step_of(Some(bad), 100.0, d).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(step_of(Some("kill-web"), 100.0, d).unwrap().is_none());
        assert!(step_of(None, 100.0, d).unwrap().is_none());
    }

    fn claim(name: &str) -> Claim {
        SCENARIOS.iter().find(|s| s.name == name).unwrap().claim
    }

    #[test]
    fn scenarios_claim_what_their_topology_allows() {
        let node = |name: &str, role: &str, dc: &str| json!({"name": name, "role": role, "dc": dc});
        let balanced = json!({"nodes": [
            node("dc1-lb-1", "lb", "dc1"), node("dc1-web-1", "web", "dc1"), node("dc1-web-2", "web", "dc1"),
            node("dc2-web-1", "web", "dc2"),
        ]});
        let web = claim("kill-web");
        assert_eq!(tolerance(web, &balanced, "dc1-web-1", false), Tolerance::NoReadFails);
        // Aimed at by hand, or alone in its DC, or with no load balancer in it:
        // its requests have nowhere else to go.
        assert_eq!(tolerance(web, &balanced, "dc1-web-1", true), Tolerance::UntilRecovered);
        assert_eq!(tolerance(web, &balanced, "dc2-web-1", false), Tolerance::UntilRecovered);
        let single = json!({"nodes": [node("dc1-lb-1", "lb", "dc1"), node("dc1-web-1", "web", "dc1")]});
        assert_eq!(tolerance(web, &single, "dc1-web-1", false), Tolerance::UntilRecovered);
        let unbalanced = json!({"nodes": [node("dc1-web-1", "web", "dc1"), node("dc1-web-2", "web", "dc1")]});
        assert_eq!(tolerance(web, &unbalanced, "dc1-web-1", false), Tolerance::UntilRecovered);

        for (name, expected) in [
            ("kill-worker", Tolerance::NoRequestFails),
            ("kill-redis", Tolerance::NoRequestFails),
            ("kill-replica", Tolerance::NoReadFails),
            ("kill-primary", Tolerance::NoReadFails),
        ] {
            assert_eq!(tolerance(claim(name), &single, "shard0-pg-2", false), expected, "{name}");
        }
    }
}
