//! `millions bench`: open-loop load against the web tier, then the checker.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use loadgen::bench::{BenchConfig, Mix};

/// `millions bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Run directory of a running topology (its load balancers, one per DC, are the
    /// targets when no --target is given; each user sticks to one of them).
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
    /// Operation weights, e.g.
    /// feed=60,timeline=30,post=3,photo_post=1,like=4,follow=2,view_photo=0 (the default).
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
    /// Skip the final check that every acknowledged write is readable.
    #[arg(long)]
    no_verify: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Inject a fault a third into the run and report the recovery time:
    /// kill-web, kill-worker, kill-redis, kill-replica or kill-primary (SIGKILL
    /// through the controller, which restarts the node).
    #[arg(long)]
    scenario: Option<String>,
}

/// The scenarios: name, role of the node to kill, and PostgreSQL role if any.
const SCENARIOS: &[(&str, &str, Option<&str>)] = &[
    ("kill-web", "web", None),
    ("kill-worker", "worker", None),
    ("kill-redis", "redis", None),
    ("kill-replica", "postgres", Some("replica")),
    ("kill-primary", "postgres", Some("primary")),
];

/// Run the bench; fails (exit 1) if any request failed (without a scenario), the
/// checker did not pass, or a scenario's fault could not be injected or the system
/// had not recovered from it by the end of the run.
pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let scenario = match &args.scenario {
        Some(name) => Some(SCENARIOS.iter().find(|s| s.0 == name).with_context(|| {
            let names: Vec<&str> = SCENARIOS.iter().map(|s| s.0).collect();
            format!("no scenario named {name:?}; scenarios: {}", names.join(", "))
        })?),
        None => None,
    };
    let ctl = control::running(&args.home);
    if scenario.is_some() && ctl.is_none() {
        bail!("a scenario needs a running topology (nothing is running in {})", args.home.display());
    }
    let nodes: serde_json::Value = match &ctl {
        Some(ctl) => {
            reqwest::get(format!("http://{}/api/nodes", ctl.api)).await?.error_for_status()?.json().await?
        }
        None => serde_json::Value::Null,
    };
    let mut targets = args.targets.clone();
    if targets.is_empty() {
        if ctl.is_none() {
            bail!("no --target given and nothing is running in {}", args.home.display());
        }
        // The public entries: each DC's load balancer, else its web servers.
        let of_role = |role: &str| -> Vec<String> {
            nodes["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| n["role"] == role)
                .filter_map(|n| n["addr"].as_str().map(|a| format!("http://{a}")))
                .collect()
        };
        targets = of_role("lb");
        if targets.is_empty() {
            targets = of_role("web");
        }
    }
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
        verify: !args.no_verify,
        ..BenchConfig::default()
    };
    config.validate()?;
    let fault = match (scenario, &ctl) {
        (Some((name, role, pg_role)), Some(ctl)) => {
            let victim = nodes["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["role"] == *role && pg_role.is_none_or(|r| n["pg"]["role"] == r))
                .and_then(|n| n["name"].as_str())
                .with_context(|| format!("scenario {name}: the topology has no such node"))?
                .to_owned();
            let url = format!("http://{}/api/nodes/{victim}/kill", ctl.api);
            Some(loadgen::bench::Fault {
                action: format!("kill {victim}"),
                at: config.duration / 3,
                run: Box::pin(async move {
                    let r = reqwest::Client::new().post(url).send().await.map_err(|e| e.to_string())?;
                    if r.status().is_success() {
                        Ok("killed".to_owned())
                    } else {
                        Err(r.text().await.unwrap_or_default())
                    }
                }),
            })
        }
        _ => None,
    };
    let report = loadgen::bench::run_with_fault(&config, |line| eprintln!("{line}"), fault).await?;
    println!("{report}");
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    verdict(&report, config.verify)
}

/// Whether a finished run counts as a success (exit 0).
fn verdict(report: &loadgen::bench::Report, verified: bool) -> anyhow::Result<()> {
    if let Some(fault) = &report.fault {
        if !fault.done {
            bail!(
                "the scenario's fault was not injected ({}: {}): nothing was measured",
                fault.action,
                fault.outcome
            );
        }
        if !fault.recovered {
            bail!(
                "not recovered from {}: requests still failed in the last {:.1} s of the run (run longer to measure the recovery)",
                fault.action,
                fault.quiet_secs
            );
        }
    }
    // Under a fault, failed requests are what is being measured; the verdict is
    // the checker's.
    if report.errors > 0 && report.fault.is_none() {
        bail!("{} requests failed", report.errors);
    }
    if verified && !report.checker.passed {
        bail!("the checker found lost writes, photos not processed or read-your-writes violations");
    }
    Ok(())
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
    let report = loadgen::seed::seed(&urls, &config, |line| eprintln!("{line}")).await?;
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use loadgen::bench::{FaultReport, Report};

    use super::verdict;

    fn with_fault(done: bool, recovered: bool) -> Report {
        let mut report = Report::default();
        report.checker.passed = true;
        report.errors = 3;
        report.fault = Some(FaultReport {
            action: "kill dc1-web-1".into(),
            done,
            recovered,
            quiet_secs: 1.0,
            outcome: if done { "killed".into() } else { "failed: no such node".into() },
            ..FaultReport::default()
        });
        report
    }

    #[test]
    fn a_fault_not_injected_or_not_recovered_from_fails_the_command() {
        let err = verdict(&with_fault(false, true), true).unwrap_err().to_string();
        assert!(err.contains("not injected"), "{err}");
        let err = verdict(&with_fault(true, false), true).unwrap_err().to_string();
        assert!(err.contains("not recovered"), "{err}");
        verdict(&with_fault(true, true), true).expect("an injected, recovered fault with a passing checker");
        let mut failed = with_fault(true, true);
        failed.checker.passed = false;
        assert!(verdict(&failed, true).is_err());
    }
}
