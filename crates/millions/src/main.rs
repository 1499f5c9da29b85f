//! `millions`: every role of the system, and the commands that run it.
//!
//! The binary is thin: roles live in their crates (`web::Application`, ...), the
//! local stack in [`local`].
#![forbid(unsafe_code)]

mod bench;
mod local;
mod plan;
mod request_log;
mod scaling;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Every role allocates through mimalloc (see ADR 0005: glibc malloc/free were
/// about 13% of the load balancer's CPU).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "millions", version, about = "Scale from zero to millions of users, for real.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a topology detached (every tier, supervised) and print where to open it.
    Up(local::UpArgs),
    /// Stop everything `up` started (`--wipe`: and delete its data, to start from empty).
    Down(local::DownArgs),
    /// Show every node with its pid and health.
    Status(local::StatusArgs),
    /// Print a node's log.
    Logs(local::LogsArgs),
    /// Write N users, a power-law follower graph and posts into the shards in bulk.
    Seed(bench::SeedArgs),
    /// Open-loop load against the web tier, then check every acknowledged write.
    Bench(bench::BenchArgs),
    /// Plan capacity: nodes per tier and per DC, storage per year and bandwidth for
    /// N daily active users, from measured costs, every assumption shown.
    Plan(plan::PlanArgs),
    /// Break things on purpose: kill or restart a node.
    Chaos(local::ChaosArgs),
    /// Shard operations: move a shard's primary on purpose (`promote`).
    Shard(local::ShardArgs),
    /// Purge objects from every CDN edge of every data center (by path, path
    /// prefix or surrogate-key tag; hard, or `--soft`: marked stale and
    /// revalidated); returns once every edge has answered.
    Purge(local::PurgeArgs),
    /// Set how many web servers or workers a data center runs, within the
    /// topology's range for the role (`web = { count = 2, min = 2, max = 6 }`);
    /// returns once the nodes are started and ready, or drained and stopped.
    Scale(local::ScaleArgs),
    /// Run a topology's controller (started by `up`).
    Control(local::ControlArgs),
    /// Run a web server (the stateless web tier).
    Web {
        /// The web server's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a load balancer (the DC's public entry, in front of its web servers).
    Lb {
        /// The load balancer's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a CDN edge (a caching reverse proxy in front of an origin: photos and
    /// static assets).
    Cdn {
        /// The edge's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a DNS server (authoritative for the app's zone; answers the nearest
    /// healthy data center's load balancers).
    Dns {
        /// The DNS server's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a data center's WAN gateway (a delaying relay per link to another DC;
    /// cut, heal and conditions through its admin API).
    Wan {
        /// The gateway's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a worker (claims and runs jobs from every shard's queue).
    Worker {
        /// The worker's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Bring the schema of every shard named in a web configuration up to date.
    Migrate {
        /// A web server's TOML configuration (its `database.shards` are migrated).
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(home_anywhere(std::env::args_os().collect()));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => local::up(args).await,
        Command::Down(args) => local::down(args).await,
        Command::Status(args) => local::status(args).await,
        Command::Scale(args) => local::scale(args).await,
        Command::Logs(args) => local::logs(args).await,
        Command::Chaos(args) => local::chaos(args).await,
        Command::Shard(args) => local::shard(args).await,
        Command::Purge(args) => local::purge(args).await,
        Command::Bench(args) => bench::bench(args).await,
        Command::Seed(args) => bench::seed(args).await,
        Command::Plan(args) => plan::run(args),
        Command::Control(args) => {
            let _logs = telemetry::init_logging("control").map_err(anyhow::Error::msg)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            local::control(args, shutdown).await
        }
        Command::Web { config } => {
            // Validate before anything is bound or logged.
            let config = web::WebConfig::load(&config)?;
            let _logs = telemetry::init_logging("web").map_err(anyhow::Error::msg)?;
            let app = web::Application::build(config).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            app.run_until_stopped(shutdown).await
        }
        Command::Lb { config } => {
            // Validate before anything is bound or logged.
            let config = lb::LbConfig::load(&config)?;
            let _logs = telemetry::init_logging("lb").map_err(anyhow::Error::msg)?;
            let running = tokio::task::block_in_place(|| lb::start(config))?;
            if let Some(certificates) = running.certificates.clone() {
                tokio::spawn(reload_tls_on_sighup(certificates));
            }
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            shutdown.cancelled().await;
            tokio::task::block_in_place(|| running.stop(true));
            Ok(())
        }
        Command::Cdn { config } => {
            // Validate before anything is bound or logged.
            let config = cdn::CdnConfig::load(&config)?;
            let _logs = telemetry::init_logging("cdn").map_err(anyhow::Error::msg)?;
            let running = cdn::start(config).await?;
            if let Some(certificates) = running.certificates().cloned() {
                tokio::spawn(reload_tls_on_sighup(certificates));
            }
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            shutdown.cancelled().await;
            running.stop().await;
            Ok(())
        }
        Command::Dns { config } => {
            // Validate before anything is bound or logged.
            let config = dns::DnsConfig::load(&config)?;
            let _logs = telemetry::init_logging("dns").map_err(anyhow::Error::msg)?;
            let running = dns::start(config, None).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            shutdown.cancelled().await;
            running.stop().await;
            Ok(())
        }
        Command::Wan { config } => {
            // Validate before anything is bound or logged.
            let config = wan::WanConfig::load(&config)?;
            let _logs = telemetry::init_logging("wan").map_err(anyhow::Error::msg)?;
            let registry = telemetry::Registry::default();
            let running = wan::start(config, &registry)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            shutdown.cancelled().await;
            running.stop().await;
            Ok(())
        }
        Command::Worker { config } => {
            let config = worker::WorkerConfig::load(&config)?;
            let _logs = telemetry::init_logging("worker").map_err(anyhow::Error::msg)?;
            let w = worker::Worker::build(config).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            w.run_until_stopped(shutdown).await
        }
        Command::Migrate { config } => {
            let config = web::WebConfig::load(&config)?;
            data::migrate(&config.database.shards).await?;
            println!("migrated {} shard(s)", config.database.shards.len());
            Ok(())
        }
    }
}

/// `--home DIR` (or `--home=DIR`) given before the subcommand moves after it,
/// where every command that works on a run directory takes it: the run directory
/// may be named before or after the subcommand (`millions --home DIR status`).
fn home_anywhere(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut home = Vec::new();
    let mut rest = args.into_iter();
    out.extend(rest.next());
    while let Some(arg) = rest.next() {
        let text = arg.to_string_lossy();
        if text == "--home" {
            home.push(arg);
            home.extend(rest.next());
        } else if text.starts_with("--home=") {
            home.push(arg);
        } else if text.starts_with('-') {
            out.push(arg);
        } else {
            // The subcommand: what came before it and belongs to it follows it.
            out.push(arg);
            out.append(&mut home);
            out.extend(rest);
            break;
        }
    }
    // No subcommand: leave `--home` where it was, for clap to explain.
    out.append(&mut home);
    out
}

/// Cancel `token` on SIGTERM or SIGINT.
async fn stop_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
    token.cancel();
}

/// SIGHUP makes a load balancer read its TLS certificate and key files again (as
/// `POST /admin/tls/reload` does): new handshakes use them if they are good; a
/// bad pair is logged and the certificate in force stays.
async fn reload_tls_on_sighup(certificates: std::sync::Arc<lb::tls::Certificates>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP");
            return;
        }
    };
    while hup.recv().await.is_some() {
        let certificates = certificates.clone();
        match tokio::task::spawn_blocking(move || certificates.reload()).await {
            Ok(Ok(info)) => tracing::info!(sha256 = %info.sha256, "SIGHUP: TLS certificate reloaded"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "SIGHUP: TLS reload refused; the certificate in force stays")
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::home_anywhere;

    fn run(line: &str) -> Vec<String> {
        home_anywhere(line.split(' ').map(Into::into).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn home_before_the_subcommand_moves_after_it() {
        assert_eq!(run("millions --home /x status --json"), ["millions", "status", "--home", "/x", "--json"]);
        assert_eq!(run("millions --home=/x chaos kill n"), ["millions", "chaos", "--home=/x", "kill", "n"]);
        assert_eq!(run("millions status --home /x"), ["millions", "status", "--home", "/x"]);
        assert_eq!(run("millions --home /x"), ["millions", "--home", "/x"]);
        assert_eq!(run("millions --version"), ["millions", "--version"]);
    }
}
