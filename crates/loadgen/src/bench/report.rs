//! What a bench run found: per-operation throughput, errors and latency, and the
//! checker's verdict. `Serialize` for `--json`, `Display` for people.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::dns::TrafficReport;
use super::error::BenchError;
use super::verdict::{Tolerance, Verdict};

/// Latency percentiles, in milliseconds, measured from each request's intended
/// start time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// From a histogram of microseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// One operation's results over the measured window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpReport {
    /// Requests due (sent or dropped as `overloaded`).
    pub count: u64,
    /// Answered successfully.
    pub ok: u64,
    /// Failures by kind: `http_4xx`, `http_5xx`, `timeout`, `connect`, `request`,
    /// `bad_body`, `login`, `overloaded`.
    pub errors: BTreeMap<String, u64>,
    /// Successful requests per second of wall time (see [`Report::wall_secs`]).
    pub throughput: f64,
    /// Latency of every answered request (successful or not), from its intended
    /// start.
    pub latency_ms: Latency,
}

impl OpReport {
    /// Failures of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// An acknowledged post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckedPost {
    /// Its id.
    pub id: String,
    /// Who wrote it.
    pub author: String,
    /// The caption it was created with.
    pub caption: String,
    /// A photo post: the checker also waits for it to be processed (`ready`).
    #[serde(default)]
    pub photo: bool,
}

/// An acknowledged like.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AckedLike {
    /// The post.
    pub post_id: String,
    /// Who liked it.
    pub liker: String,
}

/// An acknowledged follow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AckedFollow {
    /// Who follows.
    pub follower: String,
    /// Whom.
    pub followee: String,
}

/// An acknowledged comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckedComment {
    /// Its id (the checker pages through the post's comments down to it).
    pub id: String,
    /// The post it is on (a post this run deleted takes it along).
    pub post_id: String,
    /// Who wrote it.
    pub author: String,
    /// The text it was created with, compared with the one listed.
    pub body: String,
}

/// An acknowledged deletion of a post this run created.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AckedDeletion {
    /// The deleted post.
    pub post_id: String,
    /// Its author, who deleted it (the post must be gone from their timeline).
    pub author: String,
}

/// Every write the system acknowledged during a run (warm-up included).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Writes {
    /// Posts created.
    pub posts: Vec<AckedPost>,
    /// Likes set.
    pub likes: Vec<AckedLike>,
    /// Follows set.
    pub follows: Vec<AckedFollow>,
    /// Comments written.
    #[serde(default)]
    pub comments: Vec<AckedComment>,
    /// Posts deleted (each one this run created).
    #[serde(default)]
    pub deletions: Vec<AckedDeletion>,
    /// Posts whose deletion was sent but failed: perhaps deleted anyway (an
    /// answer lost after the commit), so neither they nor their likes and
    /// comments are required. Not writes: not counted in [`Writes::len`].
    #[serde(default)]
    pub maybe_deleted: Vec<String>,
}

impl Writes {
    /// How many writes were acknowledged.
    pub fn len(&self) -> usize {
        self.posts.len() + self.likes.len() + self.follows.len() + self.comments.len() + self.deletions.len()
    }

    /// The ids of the posts this run deleted (or perhaps deleted): their posts, likes and comments
    /// went with them and are not required.
    pub fn deleted_posts(&self) -> std::collections::BTreeSet<&str> {
        self.deletions
            .iter()
            .map(|d| d.post_id.as_str())
            .chain(self.maybe_deleted.iter().map(String::as_str))
            .collect()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Listed ids of lost writes are capped at this many per kind.
pub const LISTED_LOST: usize = 20;

/// A fault injected under load (`millions bench --scenario`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FaultReport {
    /// What was done (`kill dc1-web-1`).
    pub action: String,
    /// Seconds into the measured window when it was done.
    pub at_secs: f64,
    /// Whether it could be done, or why not.
    pub outcome: String,
    /// Failed requests due after the fault.
    pub errors_after: u64,
    /// Whether the action itself succeeded (the node was killed). A scenario
    /// whose fault was not injected measured nothing: `millions bench` fails.
    pub done: bool,
    /// Seconds from the fault to the last failed request due after it: how long
    /// the system took to recover, as users saw it; 0 when nothing failed.
    /// Meaningful only when [`FaultReport::recovered`].
    pub recovery_secs: f64,
    /// False when requests due in the last [`FaultReport::quiet_secs`] of the
    /// run still failed: the system had not recovered when the run ended, and
    /// `recovery_secs` is only a lower bound.
    pub recovered: bool,
    /// The closing stretch of the run that must be free of failures for the
    /// system to count as recovered.
    pub quiet_secs: f64,
    /// What the scenario claims about the requests due after the fault (judged
    /// by the [`Report::verdict`]).
    pub tolerance: Tolerance,
    /// Failed requests due in the measured window before the fault (none may
    /// fail there).
    pub errors_before: u64,
    /// Of [`FaultReport::errors_after`], the reads (feed, timeline, photo
    /// view).
    pub reads_failed_after: u64,
    /// [`FaultReport::errors_after`] by operation.
    pub errors_after_by_op: BTreeMap<String, u64>,
}

/// Read-your-writes checks of one kind of write.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RywKind {
    /// Writes read back at once by their writer.
    pub checked: u64,
    /// Of those, not seen by the writer's own read.
    pub violations: u64,
    /// Read-backs that failed for another reason (not counted as violations).
    pub errors: u64,
}

/// The checker's verdict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Whether the final verification ran.
    pub ran: bool,
    /// Acknowledged writes the checker requires (distinct likes and follows;
    /// every post, comment and deletion; not those gone with a post this run
    /// deleted): `verified + lost + unverifiable + photos not ready`.
    pub writes_acknowledged: u64,
    /// Acknowledged posts (not deleted by this run).
    pub posts_acknowledged: u64,
    /// Acknowledged likes (not on a post this run deleted).
    pub likes_acknowledged: u64,
    /// Acknowledged follows.
    pub follows_acknowledged: u64,
    /// Acknowledged comments (not on a post this run deleted).
    pub comments_acknowledged: u64,
    /// Acknowledged post deletions.
    pub deletions_acknowledged: u64,
    /// Found as written.
    pub verified: u64,
    /// Acknowledged posts, likes and comments not required because this run
    /// deleted their post afterwards (they went with it); left out of
    /// `writes_acknowledged` and the per-kind counts, neither verified nor lost.
    pub gone_with_deleted_posts: u64,
    /// Missing or different.
    pub lost: u64,
    /// [`CheckReport::lost`] by kind of write (`post`, `like`, `follow`,
    /// `comment`, `delete_post`): which path lost them.
    pub lost_by_kind: BTreeMap<String, u64>,
    /// Lost posts (missing, or another caption), the first [`LISTED_LOST`] ids.
    pub lost_posts: Vec<String>,
    /// Lost likes, `post_id by liker`, the first [`LISTED_LOST`].
    pub lost_likes: Vec<String>,
    /// Lost follows, `follower -> followee`, the first [`LISTED_LOST`].
    pub lost_follows: Vec<String>,
    /// Lost comments (not listed under their post, or another text), `id on
    /// post_id`, the first [`LISTED_LOST`].
    pub lost_comments: Vec<String>,
    /// Deletions not in effect (the post still answers, or is still in its
    /// author's timeline), the first [`LISTED_LOST`].
    pub lost_deletions: Vec<String>,
    /// Acknowledged photo posts (also counted in `posts_acknowledged`).
    pub photos_acknowledged: u64,
    /// Of those, processed (`ready`) before the checker's photo deadline.
    pub photos_ready: u64,
    /// Photo posts found but not `ready` by the deadline, `id: status`, the
    /// first [`LISTED_LOST`] (their count is `photos_acknowledged -
    /// photos_ready` minus the lost ones).
    pub photos_not_ready: Vec<String>,
    /// How many photo posts were found but not `ready` by the deadline.
    pub photos_not_ready_count: u64,
    /// Followees whose `followers_count` is below the number of distinct
    /// acknowledged followers (the followee's side of a follow is missing),
    /// `name: counted < acknowledged`, the first [`LISTED_LOST`].
    pub short_follower_counts: Vec<String>,
    /// How many followees were short.
    pub short_follower_counts_count: u64,
    /// Posts the checked readers' home feeds had to list: every post found
    /// above by the reader or by a user it followed before the run, per reader
    /// (the run's most active writers, up to 16).
    #[serde(default)]
    pub feed_deliveries_checked: u64,
    /// Of those, below the feed's first page of 100 (older than its oldest, with
    /// more pages to come): not required.
    #[serde(default)]
    pub feed_deliveries_hidden: u64,
    /// Of those, missing from the reader's feed: a push that did not reach a
    /// timeline its reader reads.
    #[serde(default)]
    pub feed_deliveries_missing_count: u64,
    /// The missing deliveries, `post_id by author from reader's feed`, the first
    /// [`LISTED_LOST`].
    #[serde(default)]
    pub feed_deliveries_missing: Vec<String>,
    /// Readers whose feed or followee list could not be read (the reasons are
    /// in `unverifiable_reasons`).
    #[serde(default)]
    pub feeds_unverifiable: u64,
    /// Could not be checked (the reads kept failing).
    pub unverifiable: u64,
    /// Why, the first [`LISTED_LOST`] reasons.
    pub unverifiable_reasons: Vec<String>,
    /// Writes read back by their writer right after the acknowledgement (every
    /// kind together).
    pub read_your_writes_checked: u64,
    /// Of those, not seen.
    pub read_your_writes_violations: u64,
    /// The violations, `kind id`, the first [`LISTED_LOST`].
    pub read_your_writes_violation_ids: Vec<String>,
    /// Read-backs that failed for another reason (not counted as violations).
    pub read_your_writes_errors: u64,
    /// The same, per kind of write (`post`, `photo_post`, `like`, `follow`,
    /// `comment`, `delete_post`).
    pub read_your_writes_by_kind: BTreeMap<String, RywKind>,
    /// No write lost, none unverifiable, every photo ready, no follower count
    /// short, no read-your-writes violation.
    pub passed: bool,
}

impl CheckReport {
    /// Recompute [`CheckReport::passed`].
    pub fn settle(&mut self) {
        self.passed = self.lost == 0
            && self.unverifiable == 0
            && self.photos_not_ready_count == 0
            && self.short_follower_counts_count == 0
            && self.feed_deliveries_missing_count == 0
            && self.feeds_unverifiable == 0
            && self.read_your_writes_violations == 0;
    }
}

/// How late the generator itself sent requests: from each request's intended
/// start to when its task actually began sending it. Large values mean the
/// generator (not the system under test) was behind, e.g. starved of CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct GeneratorLag {
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Largest, milliseconds.
    pub max_ms: f64,
}

/// One second of the measured window of a run with a step in its rate, by the
/// requests' intended (scheduled) time: latency is measured from it, so a
/// stall shows in the seconds whose requests it delayed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Second {
    /// Which second, from the end of the warm-up.
    pub second: u32,
    /// Requests due in it (sent or dropped as `overloaded`).
    pub requests: u64,
    /// Of those, failed.
    pub errors: u64,
    /// Median latency of its answered requests, milliseconds (0 without any).
    pub p50_ms: f64,
    /// Their 99th percentile, milliseconds.
    pub p99_ms: f64,
}

/// The requests of one phase of a step in the rate, by intended time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Phase {
    /// Requests due in it (sent or dropped as `overloaded`).
    pub requests: u64,
    /// Of those, failed.
    pub errors: u64,
    /// Median latency of its answered requests, milliseconds (0 without any).
    pub p50_ms: f64,
    /// Their 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// The slowest, milliseconds.
    pub max_ms: f64,
}

/// A step in the offered rate (`--scenario spike`, `queue-burst`), and how the
/// system answered before, during and after it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepReport {
    /// When the step started, seconds into the measured window.
    pub from_secs: f64,
    /// When it ended.
    pub to_secs: f64,
    /// Requests per second outside the step.
    pub base_rate: f64,
    /// Requests per second during it.
    pub step_rate: f64,
    /// The operation of the requests it added (`None`: drawn from the mix).
    pub op: Option<String>,
    /// Requests due in the measured window before the step.
    pub before: Phase,
    /// Requests due during it.
    pub during: Phase,
    /// Requests due after it, to the end of the measured window: whether the
    /// system came back to its latency before the step.
    pub after: Phase,
}

/// A bench run's results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Where the load went.
    pub targets: Vec<String>,
    /// The mix asked for.
    pub mix: String,
    /// Requests per second asked for.
    pub target_rate: f64,
    /// Measured seconds (after the warm-up).
    pub duration_secs: f64,
    /// Warm-up seconds (not recorded).
    pub warmup_secs: f64,
    /// When the measured window started (unix ms): to place what others saw
    /// (a controller's scaling, its events) against the run's seconds.
    #[serde(default)]
    pub measured_from_unix_ms: i64,
    /// Requests due in the measured window.
    pub requests: u64,
    /// Requests due per second in the measured window.
    pub offered_rate: f64,
    /// Successful requests per second of wall time: over the measured window,
    /// or until the last successful answer if that came later (a generator or
    /// system that fell behind shows a lower rate, not the scheduled one).
    pub achieved_rate: f64,
    /// Wall time `achieved_rate` (and every operation's throughput) is over.
    pub wall_secs: f64,
    /// In DNS mode, which DC answered the measured window's requests, per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficReport>,
    /// How late the generator sent requests (measured window).
    pub generator_lag: GeneratorLag,
    /// Operations that became another for want of a target, `from->to`
    /// (a like or comment with no post known yet → post; a photo view with no
    /// photo known, or a comment read with no post known → timeline; a
    /// deletion by a user with no post of this run left → post), over the
    /// whole run, warm-up included.
    pub substitutions: BTreeMap<String, u64>,
    /// Things that make the numbers less than they seem (the generator fell
    /// behind, operations substituted); printed first.
    pub warnings: Vec<String>,
    /// Failures of every kind and operation in the measured window.
    pub errors: u64,
    /// Failures by kind, all operations together.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Latency of every operation together.
    pub latency_ms: Latency,
    /// Per operation, by name.
    pub ops: BTreeMap<String, OpReport>,
    /// The checker.
    pub checker: CheckReport,
    /// The fault injected during the run, if any, and how the system took it.
    pub fault: Option<FaultReport>,
    /// With a step in the rate: every second of the measured window, by the
    /// requests' intended time (empty, and left out of the JSON, without one).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub timeline: Vec<Second>,
    /// The step in the rate, if any, and the requests before, during and after
    /// it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub step: Option<StepReport>,
    /// Whether the run passed, and why not (the exit status of `millions
    /// bench`).
    pub verdict: Verdict,
    /// Every acknowledged write, to verify again later with [`super::checker::verify`].
    #[serde(skip)]
    pub writes: Writes,
}

impl Report {
    /// Write the report as pretty JSON to `path` (`millions bench --json FILE`).
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| BenchError::Output(format!("serializing the report: {e}")))?;
        std::fs::write(path, text).map_err(|e| BenchError::Output(format!("writing {}: {e}", path.display())))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bench: {} target(s), mix {}, {:.1} s measured after {:.1} s warm-up",
            self.targets.len(),
            self.mix,
            self.duration_secs,
            self.warmup_secs
        )?;
        for w in &self.warnings {
            writeln!(f, "WARNING: {w}")?;
        }
        writeln!(
            f,
            "rate: target {:.1}/s, offered {:.1}/s, achieved {:.1}/s ok over {:.1} s wall; {} requests, {} errors",
            self.target_rate,
            self.offered_rate,
            self.achieved_rate,
            self.wall_secs,
            self.requests,
            self.errors
        )?;
        writeln!(
            f,
            "generator lag (intended start to send): p99 {:.2} ms, max {:.2} ms",
            self.generator_lag.p99_ms, self.generator_lag.max_ms
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<13} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "operation",
            "count",
            "ok/s",
            "errors",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "mean ms"
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, count: u64, tput: f64, errs: u64, l: &Latency| {
            writeln!(
                f,
                "{:<13} {:>9} {:>9.1} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                name, count, tput, errs, l.p50, l.p90, l.p99, l.p999, l.max, l.mean
            )
        };
        for (name, op) in &self.ops {
            row(f, name, op.count, op.throughput, op.error_count(), &op.latency_ms)?;
        }
        row(f, "all", self.requests, self.achieved_rate, self.errors, &self.latency_ms)?;
        if !self.errors_by_kind.is_empty() {
            writeln!(f)?;
            writeln!(f, "errors by kind:")?;
            for (name, op) in &self.ops {
                for (kind, n) in &op.errors {
                    writeln!(f, "  {name:<13} {kind:<12} {n}")?;
                }
            }
        }
        writeln!(f)?;
        if let Some(traffic) = &self.traffic {
            let totals: Vec<String> = traffic.totals.iter().map(|(dc, n)| format!("{dc} {n}")).collect();
            writeln!(f, "answered per DC: {}", totals.join(", "))?;
            // One line per second: `  3s dc1 70 dc2 10`.
            for (i, second) in traffic.per_second.iter().enumerate() {
                let counts: Vec<String> = second.iter().map(|(dc, n)| format!("{dc} {n}")).collect();
                writeln!(
                    f,
                    "  {i:>3}s {}",
                    if counts.is_empty() { "-".to_owned() } else { counts.join(" ") }
                )?;
            }
            writeln!(f)?;
        }
        self.fmt_step(f)?;
        if let Some(fault) = &self.fault {
            let recovery = if !fault.done {
                "NOT injected: nothing was measured".to_owned()
            } else if fault.recovered {
                format!("recovered {:.2} s after it", fault.recovery_secs)
            } else {
                format!(
                    "NOT recovered: requests still failed in the last {:.1} s of the run (at least {:.2} s)",
                    fault.quiet_secs, fault.recovery_secs
                )
            };
            writeln!(
                f,
                "fault: {} at {:.1} s ({}); {} requests failed after it; {recovery}",
                fault.action, fault.at_secs, fault.outcome, fault.errors_after
            )?;
            writeln!(
                f,
                "  claim: {}; {} requests failed before it, {} reads failed after it",
                fault.tolerance, fault.errors_before, fault.reads_failed_after
            )?;
        }
        self.fmt_checker(f)?;
        writeln!(f, "{}", self.verdict)
    }
}

/// Seconds of the text report's timeline windows (the JSON has every second).
const TIMELINE_WINDOW: usize = 5;
/// Timeline windows per line of the text report.
const WINDOWS_PER_LINE: usize = 4;

impl Report {
    /// The step's lines, if the run had one: its phases, and the timeline in
    /// [`TIMELINE_WINDOW`] windows.
    fn fmt_step(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(step) = &self.step else { return Ok(()) };
        writeln!(
            f,
            "step: {:.1}/s → {:.1}/s from {:.1} s to {:.1} s (added: {})",
            step.base_rate,
            step.step_rate,
            step.from_secs,
            step.to_secs,
            step.op.as_deref().unwrap_or("the mix")
        )?;
        writeln!(
            f,
            "  {:<8} {:>9} {:>8} {:>9} {:>9} {:>9}",
            "phase", "requests", "errors", "p50 ms", "p99 ms", "max ms"
        )?;
        for (name, p) in [("before", &step.before), ("during", &step.during), ("after", &step.after)] {
            writeln!(
                f,
                "  {name:<8} {:>9} {:>8} {:>9.2} {:>9.2} {:>9.2}",
                p.requests, p.errors, p.p50_ms, p.p99_ms, p.max_ms
            )?;
        }
        let windows: Vec<String> = self
            .timeline
            .chunks(TIMELINE_WINDOW)
            .map(|w| {
                let (first, last) = (w[0].second, w[w.len() - 1].second + 1);
                let requests: u64 = w.iter().map(|s| s.requests).sum();
                let errors: u64 = w.iter().map(|s| s.errors).sum();
                let p99 = w.iter().map(|s| s.p99_ms).fold(0.0, f64::max);
                format!("{first}-{last} s {requests} req {errors} err p99 {p99:.1} ms")
            })
            .collect();
        if !windows.is_empty() {
            writeln!(
                f,
                "  timeline ({TIMELINE_WINDOW} s windows: requests due, errors, the worst second's p99):"
            )?;
            for line in windows.chunks(WINDOWS_PER_LINE) {
                writeln!(f, "    {}", line.join(" | "))?;
            }
        }
        writeln!(f)
    }

    /// The checker's lines.
    fn fmt_checker(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.checker;
        if !c.ran {
            return writeln!(f, "checker: not run ({} writes acknowledged)", self.writes.len());
        }
        writeln!(
            f,
            "checker: {}: {} writes acknowledged ({} posts, {} likes, {} follows, {} comments, {} deletions), \
             {} verified, {} lost, {} unverifiable, {} gone with deleted posts",
            if c.passed { "PASSED" } else { "FAILED" },
            c.writes_acknowledged,
            c.posts_acknowledged,
            c.likes_acknowledged,
            c.follows_acknowledged,
            c.comments_acknowledged,
            c.deletions_acknowledged,
            c.verified,
            c.lost,
            c.unverifiable,
            c.gone_with_deleted_posts
        )?;
        if c.photos_acknowledged > 0 {
            writeln!(
                f,
                "photos: {} acknowledged, {} ready, {} not ready",
                c.photos_acknowledged, c.photos_ready, c.photos_not_ready_count
            )?;
        }
        writeln!(
            f,
            "feeds: {} deliveries checked, {} missing, {} below the first page, {} feeds unreadable",
            c.feed_deliveries_checked,
            c.feed_deliveries_missing_count,
            c.feed_deliveries_hidden,
            c.feeds_unverifiable
        )?;
        writeln!(
            f,
            "read-your-writes: {} checked, {} violations, {} errors",
            c.read_your_writes_checked, c.read_your_writes_violations, c.read_your_writes_errors
        )?;
        for (kind, k) in &c.read_your_writes_by_kind {
            writeln!(
                f,
                "  {kind:<13} {} checked, {} violations, {} errors",
                k.checked, k.violations, k.errors
            )?;
        }
        let list = |f: &mut fmt::Formatter<'_>, what: &str, items: &[String]| {
            if items.is_empty() { Ok(()) } else { writeln!(f, "  {what}: {}", items.join(", ")) }
        };
        list(f, "lost posts", &c.lost_posts)?;
        list(f, "lost likes", &c.lost_likes)?;
        list(f, "lost follows", &c.lost_follows)?;
        list(f, "lost comments", &c.lost_comments)?;
        list(f, "deletions not in effect", &c.lost_deletions)?;
        list(f, "photos not ready", &c.photos_not_ready)?;
        list(f, "follower counts short", &c.short_follower_counts)?;
        list(f, "missing from feeds", &c.feed_deliveries_missing)?;
        list(f, "unverifiable", &c.unverifiable_reasons)?;
        list(f, "read-your-writes violations", &c.read_your_writes_violation_ids)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step from 2 s to 4 s of a 12 s window, every second 10 requests and
    /// a p99 of its number in ms (second 7: 30 ms and 2 errors).
    fn stepped() -> Report {
        let timeline = (0..12)
            .map(|i| Second {
                second: i,
                requests: 10,
                errors: if i == 7 { 2 } else { 0 },
                p50_ms: 1.0,
                p99_ms: if i == 7 { 30.0 } else { f64::from(i) },
            })
            .collect();
        let phase = |requests, errors| Phase { requests, errors, p50_ms: 1.5, p99_ms: 9.25, max_ms: 31.0 };
        let step = StepReport {
            from_secs: 2.0,
            to_secs: 4.0,
            base_rate: 10.0,
            step_rate: 40.0,
            op: Some("photo_post".into()),
            before: phase(20, 0),
            during: phase(80, 1),
            after: phase(80, 2),
        };
        Report { timeline, step: Some(step), ..Report::default() }
    }

    #[test]
    fn a_step_is_printed_with_its_phases_and_the_timeline_in_windows() {
        let text = stepped().to_string();
        let lines: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("step: ")).take(7).collect();
        assert_eq!(
            lines,
            [
                "step: 10.0/s → 40.0/s from 2.0 s to 4.0 s (added: photo_post)",
                "  phase     requests   errors    p50 ms    p99 ms    max ms",
                "  before          20        0      1.50      9.25     31.00",
                "  during          80        1      1.50      9.25     31.00",
                "  after           80        2      1.50      9.25     31.00",
                "  timeline (5 s windows: requests due, errors, the worst second's p99):",
                "    0-5 s 50 req 0 err p99 4.0 ms | 5-10 s 50 req 2 err p99 30.0 ms | 10-12 s 20 req 0 err p99 11.0 ms",
            ],
            "{text}"
        );
        let mix = Report { step: stepped().step.map(|s| StepReport { op: None, ..s }), ..stepped() };
        assert!(mix.to_string().contains("from 2.0 s to 4.0 s (added: the mix)\n"), "{mix}");
    }

    #[test]
    fn the_json_has_a_timeline_and_a_step_only_with_a_step() {
        let json = serde_json::to_value(Report::default()).unwrap();
        assert!(json.get("timeline").is_none() && json.get("step").is_none(), "{json}");
        assert!(json.get("checker").is_some(), "{json}");
        let json = serde_json::to_value(stepped()).unwrap();
        assert_eq!(json["timeline"].as_array().map(Vec::len), Some(12));
        assert_eq!(
            json["timeline"][7],
            serde_json::json!({
                "second": 7, "requests": 10, "errors": 2, "p50_ms": 1.0, "p99_ms": 30.0
            })
        );
        assert_eq!(json["step"]["op"], "photo_post");
        assert_eq!(json["step"]["during"]["requests"], 80);
        assert_eq!(json["step"]["after"]["max_ms"], 31.0);
        let no_step = Report { step: None, ..stepped() };
        assert!(!no_step.to_string().contains("step:"), "{no_step}");
    }
}
