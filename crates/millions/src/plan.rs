//! `millions plan`: the nodes per tier and per data center, the storage per year
//! and the bandwidth that a number of daily active users needs, from the
//! per-request costs measured on this machine and a stated traffic model, with
//! every assumption shown, its source named, and overridable (ADR 0021).
//!
//! Everything is computed before anything is printed: a bad input prints an
//! error and no plan.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;

/// `millions plan`.
#[derive(Debug, clap::Args)]
#[command(after_help = MODEL)]
pub struct PlanArgs {
    /// Daily active users to plan for: 1000000, 1_000_000, 2.5M, 800k, 1e6.
    #[arg(long, value_parser = parse_users, allow_hyphen_values = true,
          required_unless_present_any = ["check", "print_costs"])]
    dau: Option<f64>,
    /// Requests a daily active user sends in a day (pages and API calls; the
    /// photos their pages show come from the CDN and are counted apart).
    #[arg(long, default_value_t = 50.0, allow_hyphen_values = true)]
    requests_per_user: f64,
    /// The busiest hour's request rate ÷ the day's mean rate.
    #[arg(long, default_value_t = 3.0, allow_hyphen_values = true)]
    peak_factor: f64,
    /// Share of requests that are text posts (the bench's default mix: 0.03).
    #[arg(long, default_value_t = 0.03, allow_hyphen_values = true)]
    post_share: f64,
    /// Share of requests that are photo uploads (0.01).
    #[arg(long, default_value_t = 0.01, allow_hyphen_values = true)]
    photo_share: f64,
    /// Share of requests that are likes or unlikes (0.04).
    #[arg(long, default_value_t = 0.04, allow_hyphen_values = true)]
    like_share: f64,
    /// Share of requests that are follows or unfollows (0.02). The rest are reads.
    #[arg(long, default_value_t = 0.02, allow_hyphen_values = true)]
    follow_share: f64,
    /// Size of an uploaded photo, in megapixels (its normalizing, thumbnails and
    /// bytes scale with it).
    #[arg(long, default_value_t = 12.0, allow_hyphen_values = true)]
    photo_megapixels: f64,
    /// Photos a read (a feed or timeline page) makes the browser fetch from the CDN.
    #[arg(long, default_value_t = 3.0, allow_hyphen_values = true)]
    photos_per_read: f64,
    /// The share of a node's CPU (and disk, and network) to plan for at peak, in (0, 1].
    #[arg(long, default_value_t = 0.6, allow_hyphen_values = true)]
    utilization: f64,
    /// Spare nodes of each tier per DC (N+1 or N+2); also the replicas of every
    /// shard in each DC.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=2))]
    redundancy: u32,
    /// Data centers, sharing the traffic evenly.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    dcs: u32,
    /// Size each DC to carry the peak with one DC lost (peak ÷ (DCs − 1)).
    #[arg(long)]
    survive_dc_loss: bool,
    /// CPU cores of a node.
    #[arg(long, default_value_t = 8.0, allow_hyphen_values = true)]
    cores_per_node: f64,
    /// Network bandwidth of a node, in Gbit/s (CDN edges are sized by it too).
    #[arg(long, default_value_t = 10.0, allow_hyphen_values = true)]
    nic_gbps: f64,
    /// Disk of a PostgreSQL node, in GB (shards are sized to hold the rows of
    /// `--years`).
    #[arg(long, default_value_t = 2000.0, allow_hyphen_values = true)]
    db_disk_gb: f64,
    /// Years of rows the shards are sized to hold.
    #[arg(long, default_value_t = 3.0, allow_hyphen_values = true)]
    years: f64,
    /// A costs file: a JSON object of costs by name (those it names replace the
    /// defaults; `--print-costs` prints them all). A `millions bench --json`
    /// report is not one: it has no CPU per tier.
    #[arg(long)]
    costs: Option<PathBuf>,
    /// One cost, NAME=VALUE (repeatable; after --costs).
    #[arg(long = "cost", value_name = "NAME=VALUE")]
    cost: Vec<String>,
    /// Compare the model's capacity of the default topology with the capacity
    /// measured at the p99 target (docs/BENCHMARKS.md).
    #[arg(long)]
    check: bool,
    /// Print the costs in force as a costs file, and nothing else.
    #[arg(long)]
    print_costs: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

/// The model, for `millions plan --help`.
const MODEL: &str = "\
The model (ADR 0021):
  requests/s at peak = DAU × requests per user ÷ 86,400 × peak factor; each DC
  serves its share (1/DCs, or 1/(DCs−1) with --survive-dc-loss).
  CPU per request of each tier (load balancer, web, Redis, PostgreSQL, worker) is
  the measured cost of the bench's default mix (10% writes), split into a read
  and a write part by each tier's write share and re-weighted for the mix asked
  for; photo uploads add their normalizing (web) and thumbnails (worker) per
  megapixel. Nodes per DC = ceil(cores at peak ÷ (cores per node × utilization)),
  at least 1, plus --redundancy spares. Redis is one thread per node; every DC's
  Redis takes every DC's writes. Shards: enough primaries for the primaries' CPU
  and for --years of rows on --db-disk-gb disks; each DC holds --redundancy
  replicas of every shard (more when its reads need them). CDN edges: the larger
  of their CPU and their bandwidth.
Costs come from docs/BENCHMARKS.md (each cost's source is printed); replace them
with --costs FILE (`--print-costs` writes one) or --cost NAME=VALUE.";

/// What a cost may be.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Range {
    /// Zero or more.
    NonNegative,
    /// More than zero.
    Positive,
    /// In [0, 1].
    Share,
    /// In (0, 1): it is divided by, and so is one minus it.
    OpenShare,
}

/// One cost of the model: its name in a costs file, default, unit, and where the
/// default comes from.
struct CostDef {
    /// Its name in a costs file and in `--cost NAME=VALUE`.
    name: &'static str,
    /// The default.
    value: f64,
    /// The unit, for the assumptions' table.
    unit: &'static str,
    /// What values make sense.
    range: Range,
    /// Where the default comes from.
    source: &'static str,
}

/// The capacity run the CPU costs come from.
const CAPACITY_RUN: &str = "docs/BENCHMARKS.md \"Capacity of the default topology\", \"Job claims and completions \
                            committed asynchronously\", run of 2026-12-07 08:20 UTC, the first 975/s row";

/// Every cost, with its default.
const COSTS: &[CostDef] = &[
    CostDef {
        name: "lb_cpu_ms_per_request",
        value: 0.08 / 0.975,
        unit: "ms",
        range: Range::NonNegative,
        source: "lb 0.08 cores ÷ 975/s (CAPACITY)",
    },
    CostDef {
        name: "web_cpu_ms_per_request",
        value: 0.42 / 0.975,
        unit: "ms",
        range: Range::NonNegative,
        source: "web 0.42 cores ÷ 975/s (CAPACITY)",
    },
    CostDef {
        name: "redis_cpu_ms_per_request",
        value: 0.12 / 0.975,
        unit: "ms",
        range: Range::NonNegative,
        source: "redis 0.12 cores ÷ 975/s, both DCs' (CAPACITY)",
    },
    CostDef {
        name: "postgres_cpu_ms_per_request",
        value: 0.40 / 0.975,
        unit: "ms",
        range: Range::NonNegative,
        source: "postgres 0.40 cores ÷ 975/s, all six servers' (CAPACITY)",
    },
    CostDef {
        name: "worker_cpu_ms_per_request",
        value: 0.04 / 0.975,
        unit: "ms",
        range: Range::NonNegative,
        source: "worker 0.04 cores ÷ 975/s, the bench's tiny photos (CAPACITY)",
    },
    CostDef {
        name: "wan_cpu_ms_per_request",
        value: 0.07 / 0.975,
        unit: "ms",
        range: Range::NonNegative,
        source: "wan 0.07 cores ÷ 975/s: the simulated WAN's gateways, counted by --check only (CAPACITY)",
    },
    CostDef {
        name: "control_cpu_ms_per_request",
        value: 0.01 / 0.975,
        unit: "ms",
        range: Range::NonNegative,
        source: "control 0.01 cores ÷ 975/s, counted by --check only (CAPACITY)",
    },
    CostDef {
        name: "dns_cpu_ms_per_request",
        value: 0.0,
        unit: "ms",
        range: Range::NonNegative,
        source: "dns 0.00 cores at 975/s, counted by --check only (CAPACITY)",
    },
    CostDef {
        name: "generator_cpu_ms_per_request",
        value: 0.16 / 0.975,
        unit: "ms",
        range: Range::NonNegative,
        source: "the load generator's 0.16 cores ÷ 975/s, on the same machine, counted by --check only (CAPACITY)",
    },
    CostDef {
        name: "measured_write_share",
        value: 0.10,
        unit: "",
        range: Range::OpenShare,
        source: "the mix the CPU costs were measured with: the bench's default (feed 57, timeline 28, comments 2, \
                 notifications 2, search 1; post 3, photo_post 1, like 2.7, follow 2, comment 1, delete_post 0.3; \
                 loadgen Mix::default)",
    },
    CostDef {
        name: "measured_dcs",
        value: 2.0,
        unit: "DCs",
        range: Range::Positive,
        source: "the default preset's two DCs, over which the CPU costs are summed",
    },
    CostDef {
        name: "lb_write_cpu_share",
        value: 0.10,
        unit: "",
        range: Range::Share,
        source: "estimate: a load balancer's work is per request, and writes are 10% of the requests",
    },
    CostDef {
        name: "web_write_cpu_share",
        value: 0.35,
        unit: "",
        range: Range::Share,
        source: "estimate from docs/BENCHMARKS.md \"Where the default mix's CPU goes, by operation\" (web 3.2 ms \
                 per text post; reads alone 0.84 ms per request for the whole system) weighted by the mix",
    },
    CostDef {
        name: "redis_write_cpu_share",
        value: 0.60,
        unit: "",
        range: Range::Share,
        source: "estimate from docs/BENCHMARKS.md \"Where the default mix's CPU goes, by operation\" (Redis 4.3 ms \
                 per text post, 2.0 per follow; the push's cost halved by pipelining since) weighted by the mix",
    },
    CostDef {
        name: "postgres_write_cpu_share",
        value: 0.60,
        unit: "",
        range: Range::Share,
        source: "estimate from docs/BENCHMARKS.md \"Where the default mix's CPU goes, by operation\" (PostgreSQL \
                 4.2 ms per text post and per follow) weighted by the mix",
    },
    CostDef {
        name: "worker_write_cpu_share",
        value: 1.0,
        unit: "",
        range: Range::Share,
        source: "workers run only the jobs writes make (photos, fan-out retries)",
    },
    CostDef {
        name: "postgres_primary_cpu_share",
        value: (0.27 - 4.0 * 0.015) / 0.27,
        unit: "",
        range: Range::Share,
        source: "docs/BENCHMARKS.md capacity run of 2026-12-05 19:14 UTC (e05b45f) at 600/s: PostgreSQL 0.27 \
                 cores, the four replicas idle at 0.015 cores each",
    },
    CostDef {
        name: "web_cpu_ms_per_megapixel",
        value: 1000.0 / 12.0,
        unit: "ms",
        range: Range::NonNegative,
        source: "docs/BENCHMARKS.md \"Photos and the job queue\" (1d90bda): normalizing an upload costs about 1 s \
                 of web CPU per 12 MP photo",
    },
    CostDef {
        name: "worker_cpu_ms_per_megapixel",
        value: 218.0 / 12.0,
        unit: "ms",
        range: Range::NonNegative,
        source: "docs/BENCHMARKS.md \"Photos and the job queue\" (1d90bda): the real worker, 218 ms of CPU per \
                 12 MP photo",
    },
    CostDef {
        name: "original_bytes_per_megapixel",
        value: 2.6e6 / 12.0,
        unit: "B",
        range: Range::NonNegative,
        source: "docs/BENCHMARKS.md \"Photos and the job queue\": the 12 MP photo normalized (JPEG q90) is 2.6 MB",
    },
    CostDef {
        name: "thumbnail_bytes",
        value: 207_100.0,
        unit: "B",
        range: Range::NonNegative,
        source: "docs/BENCHMARKS.md \"Photos and the job queue\": the three thumbnails, 9.2 + 54.5 + 143.4 KB",
    },
    CostDef {
        name: "shown_photo_bytes",
        value: 54_500.0,
        unit: "B",
        range: Range::NonNegative,
        source: "docs/BENCHMARKS.md \"Photos and the job queue\": the 640 px thumbnail, which pages show by default",
    },
    CostDef {
        name: "read_response_bytes",
        value: 5538.0,
        unit: "B",
        range: Range::NonNegative,
        source: "docs/BENCHMARKS.md \"Web tier\" (869980f): the home feed's JSON page of 20 posts",
    },
    CostDef {
        name: "small_message_bytes",
        value: 500.0,
        unit: "B",
        range: Range::NonNegative,
        source: "assumed: a request's head (cookie or token) with a write's JSON, and a write's answer",
    },
    CostDef {
        name: "row_bytes",
        value: 6.5e9 / 43.9e6,
        unit: "B",
        range: Range::NonNegative,
        source: "docs/BENCHMARKS.md \"Seeding at millions scale\", durable default topology (aa5dd19): 43.9 M rows \
                 in 3.2–3.3 GB per server of each of two shards, indexes included",
    },
    CostDef {
        name: "wal_bytes_per_post",
        value: 873.0,
        unit: "B",
        range: Range::NonNegative,
        source: "docs/BENCHMARKS.md \"Writes: a text post's and a like's cost\" (1fe4375)",
    },
    CostDef {
        name: "wal_bytes_per_like",
        value: 224.0,
        unit: "B",
        range: Range::NonNegative,
        source: "docs/BENCHMARKS.md \"Writes: a text post's and a like's cost\" (1fe4375)",
    },
    CostDef {
        name: "wal_bytes_per_follow",
        value: 448.0,
        unit: "B",
        range: Range::NonNegative,
        source: "estimate: two like-sized statements, one per side of the edge",
    },
    CostDef {
        name: "postgres_queries_per_request",
        value: 2.0,
        unit: "",
        range: Range::NonNegative,
        source: "docs/BENCHMARKS.md capacity run of 2026-12-05 22:00 UTC (b2a6dc6), the web tier's profile",
    },
    CostDef {
        name: "redis_commands_per_request",
        value: 13.0,
        unit: "",
        range: Range::NonNegative,
        source: "docs/BENCHMARKS.md capacity run of 2026-12-05 22:00 UTC (b2a6dc6), the web tier's profile",
    },
    CostDef {
        name: "redis_threads_per_node",
        value: 1.0,
        unit: "cores",
        range: Range::Positive,
        source: "Redis runs commands on one thread",
    },
    CostDef {
        name: "cdn_cpu_us_per_photo",
        value: 2.0 / 55_862.0 * 1e6,
        unit: "µs",
        range: Range::NonNegative,
        source: "docs/BENCHMARKS.md \"CDN edge\" (e25fa89): 55,862 cached requests/s on 2 cores it shared with \
                 wrk (an upper bound)",
    },
    CostDef {
        name: "cdn_byte_hit_ratio",
        value: 0.469,
        unit: "",
        range: Range::Share,
        source: "docs/BENCHMARKS.md \"The memory tier's hit ratio\": TinyUFO's byte hits at Zipf 0.9 with 1% of \
                 the working set",
    },
    CostDef {
        name: "measured_capacity_rps",
        value: 975.0,
        unit: "req/s",
        range: Range::Positive,
        source: "the highest rate that passed, p99 ≤ 50 ms (CAPACITY)",
    },
    CostDef {
        name: "measured_p99_ms",
        value: 26.1,
        unit: "ms",
        range: Range::NonNegative,
        source: "its p99 (CAPACITY)",
    },
    CostDef {
        name: "p99_target_ms",
        value: 50.0,
        unit: "ms",
        range: Range::Positive,
        source: "the capacity script's pass condition (BENCH_P99_MS)",
    },
    CostDef {
        name: "machine_cores",
        value: 2.0,
        unit: "cores",
        range: Range::Positive,
        source: "the 2-CPU VM every tier of the capacity run shared (CAPACITY)",
    },
];

/// The costs in force: each with its value and where it came from.
#[derive(Debug, Clone)]
struct Costs {
    /// By name: value and source.
    values: BTreeMap<&'static str, (f64, String)>,
}

impl Costs {
    /// The defaults.
    fn defaults() -> Costs {
        let values =
            COSTS.iter().map(|c| (c.name, (c.value, c.source.replace("CAPACITY", CAPACITY_RUN)))).collect();
        Costs { values }
    }

    /// A cost's value (`name` is one of [`COSTS`]).
    fn get(&self, name: &str) -> f64 {
        self.values.get(name).map(|v| v.0).unwrap_or_else(|| panic!("no cost named {name}"))
    }

    /// Set `name` to `value`, from `source`.
    fn set(&mut self, name: &str, value: f64, source: String) -> anyhow::Result<()> {
        let Some(def) = COSTS.iter().find(|c| c.name == name) else {
            let names: Vec<&str> = COSTS.iter().map(|c| c.name).collect();
            bail!("no cost named {name:?}; the costs are: {}", names.join(", "));
        };
        let ok = value.is_finite()
            && match def.range {
                Range::NonNegative => value >= 0.0,
                Range::Positive => value > 0.0,
                Range::Share => (0.0..=1.0).contains(&value),
                Range::OpenShare => value > 0.0 && value < 1.0,
            };
        if !ok {
            let wanted = match def.range {
                Range::NonNegative => "a number of zero or more",
                Range::Positive => "a number above zero",
                Range::Share => "a share between 0 and 1",
                Range::OpenShare => "a share strictly between 0 and 1",
            };
            bail!("cost {name} must be {wanted}, not {value} ({source})");
        }
        self.values.insert(def.name, (value, source));
        Ok(())
    }

    /// Replace the costs a costs file names.
    fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the costs file {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("the costs file {} is not valid JSON", path.display()))?;
        let Some(object) = value.as_object() else {
            bail!("the costs file {} must be a JSON object of costs by name", path.display());
        };
        if ["achieved_rate", "ops", "verdict"].iter().all(|k| object.contains_key(*k)) {
            bail!(
                "{} is a `millions bench --json` report: it has rates and latencies but no CPU per tier; a costs \
                 file is a JSON object of costs by name (`millions plan --print-costs` prints one to edit)",
                path.display()
            );
        }
        let note = match object.get("source") {
            None => String::new(),
            Some(serde_json::Value::String(s)) => format!(": {s}"),
            Some(_) => bail!("{}: \"source\" must be a string", path.display()),
        };
        for (name, v) in object.iter().filter(|(k, _)| k.as_str() != "source") {
            let Some(n) = v.as_f64() else {
                bail!("{}: cost {name} must be a number, not {v}", path.display());
            };
            self.set(name, n, format!("{}{note}", path.display()))
                .with_context(|| format!("in the costs file {}", path.display()))?;
        }
        Ok(())
    }

    /// The costs as a costs file.
    fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        object.insert(
            "source".into(),
            "the costs in force of `millions plan`; each default's source: `millions plan --dau N`".into(),
        );
        for c in COSTS {
            object.insert(c.name.into(), self.get(c.name).into());
        }
        serde_json::Value::Object(object)
    }
}

/// Parse a number of users: digits with `_` or `,` between them, a decimal or
/// exponent, and an optional k, M or B (G) suffix; whole, at least 1.
fn parse_users(text: &str) -> Result<f64, String> {
    let cleaned: String = text.trim().chars().filter(|c| *c != '_' && *c != ',').collect();
    let (digits, scale) = match cleaned.chars().last() {
        Some('k' | 'K') => (&cleaned[..cleaned.len() - 1], 1e3),
        Some('m' | 'M') => (&cleaned[..cleaned.len() - 1], 1e6),
        Some('b' | 'B' | 'g' | 'G') => (&cleaned[..cleaned.len() - 1], 1e9),
        _ => (cleaned.as_str(), 1.0),
    };
    let n: f64 =
        digits.parse().map_err(|_| format!("{text:?} is not a number of users (e.g. 1000000, 2.5M)"))?;
    let n = n * scale;
    if !n.is_finite() || n < 1.0 {
        return Err(format!("the daily active users must be at least 1, not {text}"));
    }
    if n.fract() != 0.0 {
        return Err(format!("the daily active users must be a whole number, not {text}"));
    }
    if n > 1e12 {
        return Err(format!("{text} daily active users is more than there are people"));
    }
    Ok(n)
}

/// One assumption of the plan: what it is, its value, and where it comes from.
#[derive(Debug, Clone, Serialize)]
struct Assumption {
    /// Its name (a flag's or a cost's).
    name: String,
    /// Its value.
    value: f64,
    /// Its unit (empty for a share or a count).
    unit: &'static str,
    /// Where the value comes from: a measurement, an estimate, an assumption, a flag.
    source: String,
    /// How to change it.
    set_with: String,
}

/// The traffic model and deployment, checked.
#[derive(Debug, Clone)]
struct Inputs {
    /// Daily active users (`None`: `--check` alone).
    dau: Option<f64>,
    /// Requests per user per day.
    requests_per_user: f64,
    /// Peak ÷ mean.
    peak_factor: f64,
    /// Text posts' share of requests.
    post_share: f64,
    /// Photo uploads' share.
    photo_share: f64,
    /// Likes' share.
    like_share: f64,
    /// Follows' share.
    follow_share: f64,
    /// Megapixels of an upload.
    photo_megapixels: f64,
    /// Photos fetched per read.
    photos_per_read: f64,
    /// Target utilization.
    utilization: f64,
    /// Spares per tier per DC, and replicas per shard per DC.
    redundancy: u32,
    /// Data centers.
    dcs: u32,
    /// Each DC sized for the peak with one DC lost.
    survive_dc_loss: bool,
    /// Cores per node.
    cores_per_node: f64,
    /// Gbit/s per node.
    nic_gbps: f64,
    /// GB of disk per PostgreSQL node.
    db_disk_gb: f64,
    /// Years of rows the shards hold.
    years: f64,
}

impl Inputs {
    /// The writes' share of requests.
    fn write_share(&self) -> f64 {
        self.post_share + self.photo_share + self.like_share + self.follow_share
    }
}

/// Check the flags, naming the one that is wrong.
fn inputs(args: &PlanArgs) -> anyhow::Result<Inputs> {
    let positive = |flag: &str, v: f64| -> anyhow::Result<f64> {
        if v.is_finite() && v > 0.0 { Ok(v) } else { bail!("--{flag} must be a number above zero, not {v}") }
    };
    let non_negative = |flag: &str, v: f64| -> anyhow::Result<f64> {
        if v.is_finite() && v >= 0.0 { Ok(v) } else { bail!("--{flag} must be zero or more, not {v}") }
    };
    let share = |flag: &str, v: f64| -> anyhow::Result<f64> {
        if v.is_finite() && (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            bail!("--{flag} must be a share between 0 and 1, not {v}")
        }
    };
    let i = Inputs {
        dau: args.dau,
        requests_per_user: positive("requests-per-user", args.requests_per_user)?,
        peak_factor: positive("peak-factor", args.peak_factor)?,
        post_share: share("post-share", args.post_share)?,
        photo_share: share("photo-share", args.photo_share)?,
        like_share: share("like-share", args.like_share)?,
        follow_share: share("follow-share", args.follow_share)?,
        photo_megapixels: positive("photo-megapixels", args.photo_megapixels)?,
        photos_per_read: non_negative("photos-per-read", args.photos_per_read)?,
        utilization: args.utilization,
        redundancy: args.redundancy,
        dcs: args.dcs,
        survive_dc_loss: args.survive_dc_loss,
        cores_per_node: positive("cores-per-node", args.cores_per_node)?,
        nic_gbps: positive("nic-gbps", args.nic_gbps)?,
        db_disk_gb: positive("db-disk-gb", args.db_disk_gb)?,
        years: positive("years", args.years)?,
    };
    if !(i.utilization.is_finite() && i.utilization > 0.0 && i.utilization <= 1.0) {
        bail!(
            "--utilization must be in (0, 1], the share of a node to use at peak, not {}",
            args.utilization
        );
    }
    if i.peak_factor < 1.0 {
        bail!("--peak-factor must be at least 1 (the peak is no lower than the mean), not {}", i.peak_factor);
    }
    if i.write_share() > 1.0 + 1e-9 {
        bail!(
            "the writes' shares (--post-share, --photo-share, --like-share, --follow-share) add up to {}, more than 1",
            i.write_share()
        );
    }
    if i.survive_dc_loss && i.dcs < 2 {
        bail!("--survive-dc-loss needs at least 2 DCs (--dcs)");
    }
    Ok(i)
}

/// The assumptions of the traffic model and the deployment (the flags).
fn flag_assumptions(i: &Inputs) -> Vec<Assumption> {
    let mix = "the bench's default mix (loadgen Mix::default), the one the CPU costs were measured with";
    let rows = [
        (
            "requests-per-user",
            i.requests_per_user,
            50.0,
            "/day",
            "assumed: a user's pages and API calls in a day",
        ),
        ("peak-factor", i.peak_factor, 3.0, "", "assumed: the busiest hour's rate ÷ the day's mean"),
        ("post-share", i.post_share, 0.03, "", mix),
        ("photo-share", i.photo_share, 0.01, "", mix),
        ("like-share", i.like_share, 0.04, "", mix),
        ("follow-share", i.follow_share, 0.02, "", mix),
        (
            "photo-megapixels",
            i.photo_megapixels,
            12.0,
            "MP",
            "assumed: a phone camera's photo (the photos bench's size)",
        ),
        (
            "photos-per-read",
            i.photos_per_read,
            3.0,
            "",
            "docs/BENCHMARKS.md \"Page load of the home feed\": the feed's first screen fetched 3 photos",
        ),
        (
            "utilization",
            i.utilization,
            0.6,
            "",
            "assumed, under the measured knee: the capacity run passed p99 ≤ 50 ms up to about 65% of the \
             machine's CPU (--check)",
        ),
        (
            "redundancy",
            f64::from(i.redundancy),
            1.0,
            "per DC",
            "N+1: a node of every tier per DC may be down at peak",
        ),
        ("dcs", f64::from(i.dcs), 2.0, "", "the default preset's two DCs"),
        (
            "survive-dc-loss",
            if i.survive_dc_loss { 1.0 } else { 0.0 },
            0.0,
            "",
            "off: each DC sized for its share of the peak, not for a lost DC's too",
        ),
        ("cores-per-node", i.cores_per_node, 8.0, "cores", "assumed: the node size to plan with"),
        ("nic-gbps", i.nic_gbps, 10.0, "Gbit/s", "assumed: a node's network"),
        ("db-disk-gb", i.db_disk_gb, 2000.0, "GB", "assumed: a PostgreSQL node's disk"),
        ("years", i.years, 3.0, "years", "assumed: the rows the shards are sized to hold"),
    ];
    let mut out = Vec::new();
    if let Some(dau) = i.dau {
        out.push(Assumption {
            name: "dau".into(),
            value: dau,
            unit: "users",
            source: "given".into(),
            set_with: "--dau".into(),
        });
    }
    for (flag, value, default, unit, source) in rows {
        let source = if value == default { source.to_owned() } else { "given".to_owned() };
        out.push(Assumption { name: flag.into(), value, unit, source, set_with: format!("--{flag}") });
    }
    out
}

/// The assumptions of the costs.
fn cost_assumptions(costs: &Costs) -> Vec<Assumption> {
    COSTS
        .iter()
        .map(|c| Assumption {
            name: c.name.into(),
            value: costs.get(c.name),
            unit: c.unit,
            source: costs.values[c.name].1.clone(),
            set_with: format!("--cost {}=V", c.name),
        })
        .collect()
}

/// The requests per second of each kind a tier serves.
#[derive(Debug, Clone, Copy)]
struct Load {
    /// Reads per second.
    reads: f64,
    /// Writes per second (photo uploads included).
    writes: f64,
    /// Photo uploads per second.
    photos: f64,
}

/// The model: costs and inputs together.
struct Model<'a> {
    /// The costs.
    c: &'a Costs,
    /// The inputs.
    i: &'a Inputs,
}

impl Model<'_> {
    /// CPU cores `tier` (`lb`, `web`, `redis`, `postgres`, `worker`) needs for
    /// `load`: its measured cost per request split into a read part and a
    /// write part by its write share, plus the photos' pixel work.
    fn cores(&self, tier: &str, load: Load) -> f64 {
        let per_request = self.c.get(&format!("{tier}_cpu_ms_per_request"));
        let write_share = self.c.get(&format!("{tier}_write_cpu_share"));
        let w0 = self.c.get("measured_write_share");
        let read_ms = per_request * (1.0 - write_share) / (1.0 - w0);
        let write_ms = per_request * write_share / w0;
        let pixel_ms = match tier {
            "web" => self.c.get("web_cpu_ms_per_megapixel") * self.i.photo_megapixels,
            "worker" => self.c.get("worker_cpu_ms_per_megapixel") * self.i.photo_megapixels,
            _ => 0.0,
        };
        (load.reads * read_ms + load.writes * write_ms + load.photos * pixel_ms) / 1000.0
    }

    /// `rate` requests per second of the mix asked for.
    fn load(&self, rate: f64) -> Load {
        let w = self.i.write_share();
        Load { reads: rate * (1.0 - w), writes: rate * w, photos: rate * self.i.photo_share }
    }

    /// Nodes for `load` of a resource where a node gives `per_node` of it at
    /// full use: at least 1.
    fn nodes(&self, load: f64, per_node: f64) -> u64 {
        ((load / (per_node * self.i.utilization)) - 1e-9).ceil().max(1.0) as u64
    }
}

/// The traffic at peak.
#[derive(Debug, Clone, Serialize)]
struct Traffic {
    /// Requests in a day.
    requests_per_day: f64,
    /// The day's mean rate.
    mean_per_sec: f64,
    /// The busiest hour's rate.
    peak_per_sec: f64,
    /// What each DC serves at peak.
    peak_per_sec_per_dc: f64,
    /// Reads at peak.
    reads_peak_per_sec: f64,
    /// Writes at peak (posts, photo uploads, likes, follows).
    writes_peak_per_sec: f64,
    /// Photo uploads at peak.
    photo_uploads_peak_per_sec: f64,
    /// Photos fetched from the CDN at peak.
    photo_views_peak_per_sec: f64,
    /// PostgreSQL queries at peak, every shard together.
    postgres_queries_peak_per_sec: f64,
    /// Redis commands at peak, per DC.
    redis_commands_peak_per_sec_per_dc: f64,
}

/// One tier's nodes.
#[derive(Debug, Clone, Serialize)]
struct TierPlan {
    /// The tier: `lb`, `web`, `redis`, `worker`, `cdn`, `postgres_primary`,
    /// `postgres_replica`, `dns`.
    tier: &'static str,
    /// What sizes it: `cpu`, `cpu+bandwidth`, `cpu+storage`, `redundancy`, `fixed`.
    sized_by: &'static str,
    /// Its load at peak in one DC (for PostgreSQL primaries: per primary), in `unit`.
    load_at_peak: f64,
    /// The unit of `load_at_peak`.
    unit: &'static str,
    /// Nodes the load needs in one DC.
    needed_per_dc: u64,
    /// Spares added in one DC.
    spare_per_dc: u64,
    /// Nodes in each DC (`None` for primaries, which the DCs share out).
    per_dc: Option<u64>,
    /// Nodes over every DC.
    total: u64,
}

/// The shards.
#[derive(Debug, Clone, Serialize)]
struct Shards {
    /// Shards planned.
    count: u64,
    /// Shards the primaries' CPU needs.
    by_cpu: u64,
    /// Shards the rows of `years` need on the disks.
    by_storage: u64,
    /// Replicas of every shard in each DC.
    replicas_per_dc: u64,
    /// Members of every shard: the primary and every replica.
    members: u64,
}

/// One DC's nodes.
#[derive(Debug, Clone, Serialize)]
struct DcPlan {
    /// Its name (`dc1`, ...).
    name: String,
    /// Nodes by tier.
    nodes: BTreeMap<&'static str, u64>,
    /// All of them.
    total: u64,
}

/// Storage added in a year.
#[derive(Debug, Clone, Serialize)]
struct Storage {
    /// Post rows (text and photo posts).
    post_rows: f64,
    /// Like rows (every like counted as a new row: unlikes not subtracted).
    like_rows: f64,
    /// Follow rows (two per follow, one on each side).
    follow_rows: f64,
    /// All rows.
    rows: f64,
    /// Their bytes in one copy of the shards.
    database_bytes_per_copy: f64,
    /// Their bytes over every member of every shard.
    database_bytes_all_copies: f64,
    /// Photos uploaded.
    photos: f64,
    /// Their bytes: originals and thumbnails, one copy.
    photo_bytes: f64,
    /// Database (every copy) and photos.
    total_bytes: f64,
}

/// Bandwidth at peak, every DC together, in bytes per second.
#[derive(Debug, Clone, Serialize)]
struct Bandwidth {
    /// Clients to load balancers: requests and uploads.
    client_ingress_bytes_per_sec: f64,
    /// Load balancers to clients: pages and JSON.
    app_egress_bytes_per_sec: f64,
    /// CDN edges to clients: photos.
    photo_egress_bytes_per_sec: f64,
    /// Web servers to CDN edges: the edges' misses.
    cdn_origin_bytes_per_sec: f64,
    /// Between DCs: WAL streamed to the replicas in the other DCs.
    cross_dc_replication_bytes_per_sec: f64,
    /// Bytes sent to clients in a day (mean rate, not peak).
    egress_bytes_per_day: f64,
}

/// The plan.
#[derive(Debug, Clone, Serialize)]
struct Plan {
    /// Daily active users.
    dau: f64,
    /// Traffic.
    traffic: Traffic,
    /// Nodes per tier.
    tiers: Vec<TierPlan>,
    /// The shards.
    shards: Shards,
    /// Nodes per DC.
    dcs: Vec<DcPlan>,
    /// Every node of every DC.
    nodes_total: u64,
    /// Storage per year.
    storage_per_year: Storage,
    /// Bandwidth.
    bandwidth: Bandwidth,
    /// What the plan cannot do as the system is built.
    warnings: Vec<String>,
}

/// Plan for `dau` users.
fn plan(m: &Model, dau: f64) -> Plan {
    let (c, i) = (m.c, m.i);
    let dcs = f64::from(i.dcs);
    let w = i.write_share();
    let requests_per_day = dau * i.requests_per_user;
    let mean = requests_per_day / 86_400.0;
    let peak = mean * i.peak_factor;
    let dc_share = if i.survive_dc_loss { 1.0 / (dcs - 1.0) } else { 1.0 / dcs };
    let peak_dc = peak * dc_share;
    let dc_load = m.load(peak_dc);
    let all_load = m.load(peak);
    let photo_views_dc = dc_load.reads * i.photos_per_read;
    let spare = u64::from(i.redundancy);
    let node_cores = i.cores_per_node;

    let mut tiers = Vec::new();
    let mut per_node_tier = |tier: &'static str, sized_by, load: f64, unit, needed: u64| {
        tiers.push(TierPlan {
            tier,
            sized_by,
            load_at_peak: load,
            unit,
            needed_per_dc: needed,
            spare_per_dc: spare,
            per_dc: Some(needed + spare),
            total: (needed + spare) * u64::from(i.dcs),
        });
    };
    for tier in ["lb", "web"] {
        let cores = m.cores(tier, dc_load);
        per_node_tier(tier, "cpu", cores, "cores", m.nodes(cores, node_cores));
    }
    // Every DC's Redis takes every DC's writes (invalidations, timeline pushes);
    // the measured write cost is the sum over the measured DCs.
    let redis_cores = m.cores("redis", Load { writes: 0.0, photos: 0.0, ..dc_load })
        + m.cores("redis", Load { reads: 0.0, photos: 0.0, ..all_load }) / c.get("measured_dcs");
    let redis_needed = m.nodes(redis_cores, c.get("redis_threads_per_node"));
    per_node_tier("redis", "cpu", redis_cores, "cores", redis_needed);
    let worker_cores = m.cores("worker", dc_load);
    per_node_tier("worker", "cpu", worker_cores, "cores", m.nodes(worker_cores, node_cores));
    let cdn_cores = photo_views_dc * c.get("cdn_cpu_us_per_photo") / 1e6;
    let cdn_gbps = photo_views_dc * c.get("shown_photo_bytes") * 8.0 / 1e9;
    let cdn_needed = m.nodes(cdn_cores, node_cores).max(m.nodes(cdn_gbps, i.nic_gbps));
    per_node_tier("cdn", "cpu+bandwidth", cdn_gbps, "Gbit/s", cdn_needed);

    // Storage, which also sizes the shards.
    let per_year = requests_per_day * 365.0;
    let post_rows = per_year * (i.post_share + i.photo_share);
    let like_rows = per_year * i.like_share;
    let follow_rows = per_year * i.follow_share * 2.0;
    let rows = post_rows + like_rows + follow_rows;
    let database_bytes_per_copy = rows * c.get("row_bytes");
    let photos = per_year * i.photo_share;
    let photo_bytes =
        photos * (i.photo_megapixels * c.get("original_bytes_per_megapixel") + c.get("thumbnail_bytes"));

    // Shards: the primaries' CPU, and the rows of `years` on one node's disk.
    let pg_cores = m.cores("postgres", all_load);
    let primary_cores = pg_cores * c.get("postgres_primary_cpu_share");
    let by_cpu = m.nodes(primary_cores, node_cores);
    let by_storage = m.nodes(database_bytes_per_copy * i.years, i.db_disk_gb * 1e9);
    let shards = by_cpu.max(by_storage);
    // Each DC's replicas serve its reads: as many as they need, at least `redundancy`.
    let replica_cores_dc = (pg_cores - primary_cores) * dc_share / shards as f64;
    let replicas_per_dc = m.nodes(replica_cores_dc, node_cores).max(spare);
    let members = 1 + replicas_per_dc * u64::from(i.dcs);
    tiers.push(TierPlan {
        tier: "postgres_primary",
        sized_by: "cpu+storage",
        load_at_peak: primary_cores / shards as f64,
        unit: "cores",
        needed_per_dc: shards.div_ceil(u64::from(i.dcs)),
        spare_per_dc: 0,
        per_dc: None,
        total: shards,
    });
    tiers.push(TierPlan {
        tier: "postgres_replica",
        sized_by: "redundancy",
        load_at_peak: replica_cores_dc,
        unit: "cores",
        needed_per_dc: shards * replicas_per_dc,
        spare_per_dc: 0,
        per_dc: Some(shards * replicas_per_dc),
        total: shards * replicas_per_dc * u64::from(i.dcs),
    });
    tiers.push(TierPlan {
        tier: "dns",
        sized_by: "fixed",
        load_at_peak: 0.0,
        unit: "",
        needed_per_dc: 1,
        spare_per_dc: 0,
        per_dc: Some(1),
        total: u64::from(i.dcs),
    });

    // The DCs: alike but for the primaries, dealt in turn (shard k's in DC k mod DCs).
    let dc_plans: Vec<DcPlan> = (0..u64::from(i.dcs))
        .map(|k| {
            let mut nodes = BTreeMap::new();
            for t in &tiers {
                let n = match t.per_dc {
                    Some(n) => n,
                    None => (k..shards).step_by(i.dcs as usize).count() as u64,
                };
                nodes.insert(t.tier, n);
            }
            let total = nodes.values().sum();
            DcPlan { name: format!("dc{}", k + 1), nodes, total }
        })
        .collect();
    let nodes_total = dc_plans.iter().map(|d| d.total).sum();

    let wal_per_sec = peak * i.post_share * c.get("wal_bytes_per_post")
        + peak * i.photo_share * c.get("wal_bytes_per_post")
        + peak * i.like_share * c.get("wal_bytes_per_like")
        + peak * i.follow_share * c.get("wal_bytes_per_follow");
    let small = c.get("small_message_bytes");
    let upload_bytes = i.photo_megapixels * c.get("original_bytes_per_megapixel");
    let photo_egress = peak * (1.0 - w) * i.photos_per_read * c.get("shown_photo_bytes");
    let app_egress = peak * ((1.0 - w) * c.get("read_response_bytes") + w * small);
    let bandwidth = Bandwidth {
        client_ingress_bytes_per_sec: peak * ((1.0 - i.photo_share) * small + i.photo_share * upload_bytes),
        app_egress_bytes_per_sec: app_egress,
        photo_egress_bytes_per_sec: photo_egress,
        cdn_origin_bytes_per_sec: photo_egress * (1.0 - c.get("cdn_byte_hit_ratio")),
        cross_dc_replication_bytes_per_sec: wal_per_sec * (replicas_per_dc * u64::from(i.dcs - 1)) as f64,
        egress_bytes_per_day: (app_egress + photo_egress) / i.peak_factor * 86_400.0,
    };

    let mut warnings = Vec::new();
    if redis_needed > 1 {
        warnings.push(format!(
            "each DC's Redis needs {redis_needed} nodes at peak ({redis_cores:.2} cores of one-threaded work): the \
             system runs one Redis per DC; more needs Redis Cluster or sharding the cache by key (not built)"
        ));
    }
    if shards > 4096 {
        warnings.push(format!("{shards} shards: more than the 4096 buckets a shard map can deal out"));
    }
    let knee = knee_utilization(c);
    if i.utilization > knee {
        warnings.push(format!(
            "--utilization {} is above the measured knee ({:.0}% of the machine's CPU at the p99 target, --check): \
             p99 may exceed {} ms at peak",
            i.utilization,
            knee * 100.0,
            c.get("p99_target_ms")
        ));
    }
    if spare > 0 && redis_needed + spare > 1 {
        warnings.push(
            "Redis spares are standbys the system does not fail over to yet: a DC's Redis lost costs hit ratio, \
             not correctness (ADR 0013)"
                .into(),
        );
    }

    Plan {
        dau,
        traffic: Traffic {
            requests_per_day,
            mean_per_sec: mean,
            peak_per_sec: peak,
            peak_per_sec_per_dc: peak_dc,
            reads_peak_per_sec: all_load.reads,
            writes_peak_per_sec: all_load.writes,
            photo_uploads_peak_per_sec: all_load.photos,
            photo_views_peak_per_sec: all_load.reads * i.photos_per_read,
            postgres_queries_peak_per_sec: peak * c.get("postgres_queries_per_request"),
            redis_commands_peak_per_sec_per_dc: peak_dc * c.get("redis_commands_per_request"),
        },
        tiers,
        shards: Shards { count: shards, by_cpu, by_storage, replicas_per_dc, members },
        dcs: dc_plans,
        nodes_total,
        storage_per_year: Storage {
            post_rows,
            like_rows,
            follow_rows,
            rows,
            database_bytes_per_copy,
            database_bytes_all_copies: database_bytes_per_copy * members as f64,
            photos,
            photo_bytes,
            total_bytes: database_bytes_per_copy * members as f64 + photo_bytes,
        },
        bandwidth,
        warnings,
    }
}

/// Every process's CPU per request in the capacity run, the generator's
/// included: what the machine spent per request.
fn machine_ms_per_request(c: &Costs) -> f64 {
    ["lb", "web", "redis", "postgres", "worker", "wan", "control", "dns", "generator"]
        .iter()
        .map(|t| c.get(&format!("{t}_cpu_ms_per_request")))
        .sum()
}

/// The share of the machine's CPU in use at the measured capacity: where the
/// p99 target was met last.
fn knee_utilization(c: &Costs) -> f64 {
    c.get("measured_capacity_rps") * machine_ms_per_request(c) / 1000.0 / c.get("machine_cores")
}

/// The model's capacity of one tier of the default topology.
#[derive(Debug, Clone, Serialize)]
struct TierCapacity {
    /// The tier.
    tier: &'static str,
    /// Its nodes in the default preset (for PostgreSQL: the primaries).
    nodes: u64,
    /// The requests per second they carry at the target utilization.
    capacity_per_sec: f64,
}

/// The model against the measurement: the default topology's capacity.
#[derive(Debug, Clone, Serialize)]
struct Check {
    /// The machine's cores, which every node of the measured run shared.
    machine_cores: f64,
    /// CPU per request of every process of the run, the generator's included.
    machine_cpu_ms_per_request: f64,
    /// The rate that uses every core: machine cores ÷ CPU per request.
    predicted_per_sec_at_full_cpu: f64,
    /// The target utilization.
    utilization: f64,
    /// The rate at the target utilization: the model's capacity of the default
    /// topology on this machine.
    predicted_per_sec: f64,
    /// The rate measured at the p99 target.
    measured_per_sec: f64,
    /// Its p99.
    measured_p99_ms: f64,
    /// The p99 target.
    p99_target_ms: f64,
    /// Predicted ÷ measured.
    predicted_over_measured: f64,
    /// The utilization at which the model gives the measured rate: the knee.
    utilization_at_measured: f64,
    /// On nodes of their own (`--cores-per-node` each), per tier of the default
    /// preset, what the model says each carries.
    dedicated: Vec<TierCapacity>,
    /// The tier that carries the least on nodes of their own.
    dedicated_bottleneck: &'static str,
}

/// Compare the model with the measured capacity of the default topology.
fn check(m: &Model) -> anyhow::Result<Check> {
    let (c, i) = (m.c, m.i);
    let per_request = machine_ms_per_request(c);
    let full = c.get("machine_cores") * 1000.0 / per_request;
    let predicted = full * i.utilization;
    let measured = c.get("measured_capacity_rps");
    let topology = topology::preset("default").context("reading the default preset")?;
    let count = |role| topology.nodes_of(role).count() as u64;
    let primaries =
        topology.nodes_of(topology::Role::Postgres).filter(|n| n.shard.is_some_and(|s| s.initial_primary));
    let primaries = primaries.count() as u64;
    // The measured mix, as measured: requests per second that `nodes` of `tier`
    // carry at the target utilization.
    let carry = |tier: &str, nodes: u64, per_node: f64, share: f64| {
        let ms = c.get(&format!("{tier}_cpu_ms_per_request")) * share;
        if ms <= 0.0 { f64::INFINITY } else { nodes as f64 * per_node * i.utilization * 1000.0 / ms }
    };
    let cores = i.cores_per_node;
    let dedicated = vec![
        TierCapacity {
            tier: "lb",
            nodes: count(topology::Role::LoadBalancer),
            capacity_per_sec: carry("lb", count(topology::Role::LoadBalancer), cores, 1.0),
        },
        TierCapacity {
            tier: "web",
            nodes: count(topology::Role::Web),
            capacity_per_sec: carry("web", count(topology::Role::Web), cores, 1.0),
        },
        TierCapacity {
            tier: "redis",
            nodes: count(topology::Role::Redis),
            capacity_per_sec: carry(
                "redis",
                count(topology::Role::Redis),
                c.get("redis_threads_per_node"),
                1.0,
            ),
        },
        TierCapacity {
            tier: "postgres_primary",
            nodes: primaries,
            capacity_per_sec: carry("postgres", primaries, cores, c.get("postgres_primary_cpu_share")),
        },
        TierCapacity {
            tier: "worker",
            nodes: count(topology::Role::Worker),
            capacity_per_sec: carry("worker", count(topology::Role::Worker), cores, 1.0),
        },
    ];
    let bottleneck = dedicated
        .iter()
        .min_by(|a, b| a.capacity_per_sec.total_cmp(&b.capacity_per_sec))
        .map_or("none", |t| t.tier);
    Ok(Check {
        machine_cores: c.get("machine_cores"),
        machine_cpu_ms_per_request: per_request,
        predicted_per_sec_at_full_cpu: full,
        utilization: i.utilization,
        predicted_per_sec: predicted,
        measured_per_sec: measured,
        measured_p99_ms: c.get("measured_p99_ms"),
        p99_target_ms: c.get("p99_target_ms"),
        predicted_over_measured: predicted / measured,
        utilization_at_measured: knee_utilization(c),
        dedicated,
        dedicated_bottleneck: bottleneck,
    })
}

/// What `millions plan` prints as JSON.
#[derive(Debug, Serialize)]
struct Output {
    /// The plan, unless `--check` alone.
    #[serde(flatten)]
    plan: Option<Plan>,
    /// With `--check`.
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<Check>,
    /// Every assumption, with its source.
    assumptions: Vec<Assumption>,
}

/// Run `millions plan`: everything is computed before anything is printed.
pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    let mut costs = Costs::defaults();
    if let Some(path) = &args.costs {
        costs.load(path)?;
    }
    for given in &args.cost {
        let Some((name, value)) = given.split_once('=') else {
            bail!("--cost takes NAME=VALUE, not {given:?}");
        };
        let value: f64 =
            value.trim().parse().map_err(|_| anyhow::anyhow!("--cost {given}: {value:?} is not a number"))?;
        costs.set(name.trim(), value, format!("given (--cost {given})"))?;
    }
    if args.print_costs {
        return print(&serde_json::to_string_pretty(&costs.to_json())?);
    }
    let i = inputs(&args)?;
    let model = Model { c: &costs, i: &i };
    let plan = i.dau.map(|dau| plan(&model, dau));
    let check = if args.check { Some(check(&model)?) } else { None };
    let mut assumptions = flag_assumptions(&i);
    assumptions.extend(cost_assumptions(&costs));
    let out = Output { plan, check, assumptions };
    let text = if args.json { serde_json::to_string_pretty(&out)? } else { render(&out, &i) };
    print(&text)
}

/// Print `text` and a newline; a reader that went away (`| head`) is no error.
fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// `n` rounded, with thousands separated: 1,234,567.
fn int(n: f64) -> String {
    let digits = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (k, ch) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if n < -0.5 { format!("-{out}") } else { out }
}

/// A rate per second: whole above 100, else with a decimal.
fn per_sec(n: f64) -> String {
    if n >= 100.0 { format!("{}/s", int(n)) } else { format!("{n:.1}/s") }
}

/// Bytes in SI units.
fn bytes(n: f64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1000.0 && unit < units.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{v:.0} B") } else { format!("{v:.1} {}", units[unit]) }
}

/// Bytes per second as bits per second.
fn bits(bytes_per_sec: f64) -> String {
    let b = bytes_per_sec * 8.0;
    if b >= 1e9 {
        format!("{:.2} Gbit/s", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} Mbit/s", b / 1e6)
    } else {
        format!("{:.1} kbit/s", b / 1e3)
    }
}

/// A number with three significant digits (whole, with separators, from 1000 up).
fn num(v: f64) -> String {
    if v == 0.0 || v.abs() >= 1000.0 {
        return int(v);
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

/// The plan as text.
fn render(out: &Output, i: &Inputs) -> String {
    let mut s = String::new();
    if let Some(p) = &out.plan {
        render_plan(&mut s, p, i);
    }
    if let Some(c) = &out.check {
        render_check(&mut s, c);
    }
    let _ = writeln!(
        s,
        "Assumptions (traffic and nodes: the flags; costs: --costs FILE or --cost NAME=VALUE, \
         `millions plan --print-costs` writes a costs file)"
    );
    let width = out.assumptions.iter().map(|a| a.name.len()).max().unwrap_or(0);
    for a in &out.assumptions {
        let value = match a.name.as_str() {
            "survive-dc-loss" => (if a.value > 0.0 { "yes" } else { "no" }).to_owned(),
            _ => format!("{} {}", num(a.value), a.unit),
        };
        let _ = writeln!(s, "  {:<width$}  {:>14}  {}", a.name, value.trim_end(), a.source);
    }
    s.lines().map(str::trim_end).collect::<Vec<_>>().join("\n").trim_end().to_owned()
}

/// The plan's sections.
fn render_plan(s: &mut String, p: &Plan, i: &Inputs) {
    let t = &p.traffic;
    let _ = writeln!(
        s,
        "Capacity plan: {} daily active users, {} DC{}, N+{} per DC, {:.0}% target utilization, {} cores per node{}\n",
        int(p.dau),
        i.dcs,
        if i.dcs == 1 { "" } else { "s" },
        i.redundancy,
        i.utilization * 100.0,
        num(i.cores_per_node),
        if i.survive_dc_loss { ", each DC sized to carry a lost DC's share" } else { "" },
    );
    let _ = writeln!(s, "Traffic");
    let rows = [
        (
            "requests per day",
            int(t.requests_per_day),
            format!("{} users × {} requests", int(p.dau), num(i.requests_per_user)),
        ),
        ("mean rate", per_sec(t.mean_per_sec), String::new()),
        ("peak rate", per_sec(t.peak_per_sec), format!("× {} peak factor", num(i.peak_factor))),
        ("peak rate per DC", per_sec(t.peak_per_sec_per_dc), String::new()),
        (
            "writes at peak",
            per_sec(t.writes_peak_per_sec),
            format!("{:.1}% of requests", i.write_share() * 100.0),
        ),
        (
            "photo uploads at peak",
            per_sec(t.photo_uploads_peak_per_sec),
            format!("{} MP each", num(i.photo_megapixels)),
        ),
        ("photos viewed at peak", per_sec(t.photo_views_peak_per_sec), "from the CDN edges".into()),
        (
            "PostgreSQL queries at peak",
            per_sec(t.postgres_queries_peak_per_sec),
            "every shard together".into(),
        ),
        ("Redis commands at peak", per_sec(t.redis_commands_peak_per_sec_per_dc), "per DC".into()),
    ];
    for (name, value, note) in rows {
        let _ = writeln!(s, "  {name:<28} {value:>14}  {note}");
    }

    let _ = writeln!(s, "\nNodes (load at peak in one DC; needed + spares = per DC)");
    let _ = writeln!(
        s,
        "  {:<18} {:>20} {:>7} {:>6} {:>7} {:>8}",
        "tier", "load at peak", "needed", "spare", "per DC", "all DCs"
    );
    for tier in &p.tiers {
        let load = match tier.tier {
            "dns" => "fixed".to_owned(),
            "postgres_primary" | "postgres_replica" => {
                format!("{} {}/shard", num(tier.load_at_peak), tier.unit)
            }
            _ => format!("{} {}", num(tier.load_at_peak), tier.unit),
        };
        let per_dc = tier.per_dc.map_or_else(|| "shared".to_owned(), |n| n.to_string());
        let _ = writeln!(
            s,
            "  {:<18} {:>20} {:>7} {:>6} {:>7} {:>8}",
            tier.tier,
            load,
            tier.needed_per_dc,
            format!("+{}", tier.spare_per_dc),
            per_dc,
            tier.total
        );
    }
    let _ = writeln!(s, "  {:<18} {:>53}", "total", p.nodes_total);
    let sh = &p.shards;
    let _ = writeln!(
        s,
        "  shards: {} ({} for the primaries' CPU, {} for {} years of rows on {} GB disks); each shard: a primary \
         and {} replica{} in every DC",
        sh.count,
        sh.by_cpu,
        sh.by_storage,
        num(i.years),
        num(i.db_disk_gb),
        sh.replicas_per_dc,
        if sh.replicas_per_dc == 1 { "" } else { "s" }
    );
    for dc in &p.dcs {
        let parts: Vec<String> =
            p.tiers.iter().filter_map(|t| Some(format!("{} {}", t.tier, dc.nodes.get(t.tier)?))).collect();
        let _ = writeln!(s, "  {}: {} nodes ({})", dc.name, dc.total, parts.join(", "));
    }

    let st = &p.storage_per_year;
    let _ = writeln!(s, "\nStorage per year");
    let _ = writeln!(s, "  {:<28} {:>14}", "post rows", int(st.post_rows));
    let _ = writeln!(s, "  {:<28} {:>14}", "like rows", int(st.like_rows));
    let _ = writeln!(s, "  {:<28} {:>14}  two per follow", "follow rows", int(st.follow_rows));
    let _ = writeln!(
        s,
        "  {:<28} {:>14}  {} per copy, {} copies of each shard",
        "database",
        bytes(st.database_bytes_all_copies),
        bytes(st.database_bytes_per_copy),
        sh.members
    );
    let _ = writeln!(
        s,
        "  {:<28} {:>14}  {} photos, originals and thumbnails",
        "photos",
        bytes(st.photo_bytes),
        int(st.photos)
    );
    let _ = writeln!(s, "  {:<28} {:>14}", "total", bytes(st.total_bytes));

    let b = &p.bandwidth;
    let _ = writeln!(s, "\nBandwidth at peak (every DC together)");
    let rows = [
        ("clients → load balancers", b.client_ingress_bytes_per_sec, "requests and photo uploads"),
        ("load balancers → clients", b.app_egress_bytes_per_sec, "pages and JSON"),
        ("CDN edges → clients", b.photo_egress_bytes_per_sec, "photos"),
        ("web servers → CDN edges", b.cdn_origin_bytes_per_sec, "the edges' misses"),
        ("between DCs", b.cross_dc_replication_bytes_per_sec, "WAL to the other DCs' replicas"),
    ];
    for (name, v, note) in rows {
        let _ = writeln!(s, "  {name:<28} {:>14}  {note}", bits(v));
    }
    let _ = writeln!(
        s,
        "  {:<28} {:>14}  to clients, pages and photos",
        "egress per day",
        bytes(b.egress_bytes_per_day)
    );
    if !p.warnings.is_empty() {
        let _ = writeln!(s, "\nWarnings");
        for w in &p.warnings {
            let _ = writeln!(s, "  - {w}");
        }
    }
    s.push('\n');
}

/// The check's section.
fn render_check(s: &mut String, c: &Check) {
    let _ = writeln!(s, "Check: the default topology on the measured machine");
    let _ = writeln!(
        s,
        "  predicted capacity           {:>10}  at {:.0}% of {} cores, {} ms of CPU per request (every process, the \
         generator's too)",
        per_sec(c.predicted_per_sec),
        c.utilization * 100.0,
        num(c.machine_cores),
        num(c.machine_cpu_ms_per_request)
    );
    let _ = writeln!(s, "  at full CPU                  {:>10}", per_sec(c.predicted_per_sec_at_full_cpu));
    let _ = writeln!(
        s,
        "  measured capacity            {:>10}  p99 {} ms, target {} ms",
        per_sec(c.measured_per_sec),
        num(c.measured_p99_ms),
        num(c.p99_target_ms)
    );
    let _ = writeln!(
        s,
        "  predicted ÷ measured         {:>10}  the measured rate is the model's at {:.0}% utilization",
        format!("{:.2}", c.predicted_over_measured),
        c.utilization_at_measured * 100.0
    );
    let parts: Vec<String> = c
        .dedicated
        .iter()
        .map(|t| format!("{} ×{} {}", t.tier, t.nodes, per_sec(t.capacity_per_sec)))
        .collect();
    let _ = writeln!(
        s,
        "  on nodes of their own        {}; the least: {}\n",
        parts.join(", "),
        c.dedicated_bottleneck
    );
}
