//! Autoscaling decisions for the web tier and the workers, as pure functions of
//! what the controller measured (issue 18). Not wired into the controller yet:
//! the scrape round would build a [`Signal`] from its history, call
//! [`State::step`] once per decision interval, and start or stop nodes when the
//! [`Decision`] changes the count, writing its [`Display`](std::fmt::Display)
//! text to the event log.
//!
//! The algorithm is Kubernetes' Horizontal Pod Autoscaler's:
//! - each target's recommendation is `ceil(current × value / target)` (for a
//!   load shared by the replicas — CPU, requests in flight, queue depth — that is
//!   `ceil(total / target)`), nothing when the ratio is within the tolerance band
//!   (±10%); with several targets the largest recommendation wins;
//! - scale out at once (no stabilization: the first decision after the signal
//!   crosses its target acts), by at most `max(out_step_min, out_step_percent% of
//!   current)` replicas per decision;
//! - scale in only to the largest recommendation of the last
//!   `scale_in_window_ms` (HPA's 300 s), by at most `in_step` replicas per
//!   decision, and not within `cooldown_ms` of the last change; a load under
//!   the band recommends as many replicas as put it at the band's lower edge
//!   (`ceil(current × ratio / (1 − tolerance))`, where HPA has
//!   `ceil(current × ratio)`), so that after a scale-in the window's peak sits
//!   under the band, and only a load more than the band's width above anything
//!   seen in the window scales out again: a noisy signal does not flap;
//! - always within `[min, max]`.
//!
//! Latency (p99) and the oldest job's age are symptoms, not loads the replicas
//! share: they do not fall in proportion to the replicas added. They scale out
//! (by the same ratio, bounded by the step) and hold the count while near or
//! over their target, but never ask for fewer replicas on their own.
//!
//! Where each signal comes from today: the web servers' CPU from /proc
//! (`host_cpu_seconds_total`, per node), requests in flight from the load
//! balancers (`millions_lb_backend_in_flight`), the tier's p99 as the scrape
//! derives it (`tier_request_duration_p99_seconds{role="web"}`), the queue from
//! the workers (`millions_queue_jobs{state="ready"}` summed over shards,
//! `millions_queue_oldest_ready_seconds`, the largest over shards).

use std::collections::VecDeque;
use std::fmt;

use serde::Serialize;

/// The tiers that scale with their load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The stateless web servers behind each DC's load balancer.
    Web,
    /// The job-queue workers.
    Worker,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Web => "web",
            Tier::Worker => "worker",
        })
    }
}

/// What a target follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Web: CPU per server, in cores (CPU seconds per second): the tier's total
    /// divided by its servers.
    CpuPerServer,
    /// Web: requests in flight per server.
    InFlightPerServer,
    /// Web: the tier's 99th percentile request duration, in seconds.
    P99Seconds,
    /// Workers: jobs ready to run, over every shard, per worker.
    QueueDepthPerWorker,
    /// Workers: how long the oldest ready job has waited, over every shard, in
    /// seconds.
    OldestJobSeconds,
}

impl Metric {
    /// The tier whose signal this is.
    pub fn tier(self) -> Tier {
        match self {
            Metric::CpuPerServer | Metric::InFlightPerServer | Metric::P99Seconds => Tier::Web,
            Metric::QueueDepthPerWorker | Metric::OldestJobSeconds => Tier::Worker,
        }
    }

    /// Whether it is a load the replicas share (its signal is the tier's total,
    /// divided by the replicas), which alone may ask for fewer replicas.
    pub fn per_replica(self) -> bool {
        matches!(self, Metric::CpuPerServer | Metric::InFlightPerServer | Metric::QueueDepthPerWorker)
    }

    /// Its name in decisions and the event log.
    pub fn name(self) -> &'static str {
        match self {
            Metric::CpuPerServer => "cpu_per_server",
            Metric::InFlightPerServer => "in_flight_per_server",
            Metric::P99Seconds => "p99_seconds",
            Metric::QueueDepthPerWorker => "queue_depth_per_worker",
            Metric::OldestJobSeconds => "oldest_job_seconds",
        }
    }

    /// The signal's raw value for this metric: the tier's total for a
    /// per-replica metric, else the tier-wide value.
    fn raw(self, signal: &Signal) -> Option<f64> {
        let v = match self {
            Metric::CpuPerServer => signal.cpu_cores,
            Metric::InFlightPerServer => signal.in_flight,
            Metric::P99Seconds => signal.p99_seconds,
            Metric::QueueDepthPerWorker => signal.queue_depth,
            Metric::OldestJobSeconds => signal.oldest_job_seconds,
        };
        // A gap or garbage in the history is no evidence either way.
        v.filter(|v| v.is_finite() && *v >= 0.0)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metric's target value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Target {
    /// What is measured.
    pub metric: Metric,
    /// The value to hold it at (per replica for a per-replica metric).
    pub value: f64,
}

/// How a tier scales.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// The tier it scales: its targets must be this tier's metrics.
    pub tier: Tier,
    /// The targets followed; with several, the one asking for the most replicas
    /// wins (a tier is as short as its scarcest resource).
    pub targets: Vec<Target>,
    /// Never fewer replicas than this (at least 1: a tier at zero has no
    /// per-replica signal, and the design keeps a node per tier in every DC).
    pub min: u32,
    /// Never more than this (a budget, and a guard against a signal gone wrong).
    pub max: u32,
    /// A ratio of value to target within `1 ± tolerance` changes nothing, so
    /// noise around the target does not move the count (HPA's 0.1).
    pub tolerance: f64,
    /// How often a decision is taken (HPA's sync period, 15 s): "scale out
    /// within one interval" is measured in it, and the windows must cover it.
    pub interval_ms: i64,
    /// A signal older than this is not acted on (the scrapes stopped, or a node
    /// is not reporting): about two scrape intervals.
    pub stale_ms: i64,
    /// A scale-out may add at least this many replicas in one decision.
    pub out_step_min: u32,
    /// ... or this percentage of the current count, when that is more (HPA's
    /// default: 4 pods or 100%, whichever is more).
    pub out_step_percent: u32,
    /// A scale-in removes at most this many replicas per decision: scaling in
    /// is slow on purpose, a replica at a time.
    pub in_step: u32,
    /// A scale-in goes only to the largest recommendation of this window (HPA's
    /// stabilization window, 300 s): a dip must last that long to cost a replica.
    pub scale_in_window_ms: i64,
    /// No scale-in within this long of the last change, in either direction:
    /// the replicas just added or removed must show in the signal first.
    pub cooldown_ms: i64,
}

impl Policy {
    /// The web tier's defaults: half a core per server, 32 requests in flight
    /// per server, p99 under 250 ms (a quarter of the alert's 1 s); 2 to 16
    /// servers (per DC).
    pub fn web() -> Policy {
        Policy {
            tier: Tier::Web,
            targets: vec![
                Target { metric: Metric::CpuPerServer, value: 0.5 },
                Target { metric: Metric::InFlightPerServer, value: 32.0 },
                Target { metric: Metric::P99Seconds, value: 0.25 },
            ],
            min: 2,
            max: 16,
            ..Policy::common(Tier::Web)
        }
    }

    /// The workers' defaults: 20 ready jobs per worker, no job waiting over
    /// 10 s (a sixth of the alert's 60 s); 1 to 8 workers (per DC).
    pub fn workers() -> Policy {
        Policy {
            targets: vec![
                Target { metric: Metric::QueueDepthPerWorker, value: 20.0 },
                Target { metric: Metric::OldestJobSeconds, value: 10.0 },
            ],
            min: 1,
            max: 8,
            ..Policy::common(Tier::Worker)
        }
    }

    /// What both tiers share: HPA's defaults, with a slower scale-in.
    fn common(tier: Tier) -> Policy {
        Policy {
            tier,
            targets: Vec::new(),
            min: 1,
            max: 1,
            tolerance: 0.1,
            interval_ms: 15_000,
            stale_ms: 30_000,
            out_step_min: 4,
            out_step_percent: 100,
            in_step: 1,
            scale_in_window_ms: 300_000,
            cooldown_ms: 60_000,
        }
    }

    /// Check the policy before it is used.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.min == 0 {
            return Err(PolicyError::MinZero);
        }
        if self.min > self.max {
            return Err(PolicyError::MinAboveMax { min: self.min, max: self.max });
        }
        if self.targets.is_empty() {
            return Err(PolicyError::NoTargets);
        }
        for (i, t) in self.targets.iter().enumerate() {
            if t.metric.tier() != self.tier {
                return Err(PolicyError::WrongTier { metric: t.metric, tier: self.tier });
            }
            if !(t.value.is_finite() && t.value > 0.0) {
                return Err(PolicyError::BadTarget { metric: t.metric, value: t.value });
            }
            if self.targets[..i].iter().any(|o| o.metric == t.metric) {
                return Err(PolicyError::DuplicateTarget(t.metric));
            }
        }
        if !(self.tolerance.is_finite() && (0.0..1.0).contains(&self.tolerance)) {
            return Err(PolicyError::BadTolerance(self.tolerance));
        }
        if self.interval_ms <= 0 {
            return Err(PolicyError::ZeroInterval);
        }
        for (name, ms) in [
            ("stale_ms", self.stale_ms),
            ("scale_in_window_ms", self.scale_in_window_ms),
            ("cooldown_ms", self.cooldown_ms),
        ] {
            if ms < self.interval_ms {
                return Err(PolicyError::ShorterThanInterval { name, ms, interval_ms: self.interval_ms });
            }
        }
        if self.out_step_min == 0 && self.out_step_percent == 0 {
            return Err(PolicyError::NoOutStep);
        }
        if self.in_step == 0 {
            return Err(PolicyError::NoInStep);
        }
        Ok(())
    }

    /// The most replicas a scale-out from `current` reaches in one decision.
    fn out_limit(&self, current: u32) -> u32 {
        let by_percent = (u64::from(current) * u64::from(self.out_step_percent)).div_ceil(100);
        let step = by_percent.max(u64::from(self.out_step_min)).max(1);
        u32::try_from(u64::from(current) + step).unwrap_or(u32::MAX)
    }
}

/// A policy that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// `min` is zero.
    #[error("min must be at least 1 replica (a tier at zero has no per-replica signal)")]
    MinZero,
    /// `min` is above `max`.
    #[error("min ({min}) is above max ({max})")]
    MinAboveMax {
        /// The policy's `min`.
        min: u32,
        /// The policy's `max`.
        max: u32,
    },
    /// No target to follow.
    #[error("no target: a policy follows at least one metric")]
    NoTargets,
    /// A target of another tier's metric.
    #[error("{metric} is not a metric of the {tier} tier")]
    WrongTier {
        /// The metric.
        metric: Metric,
        /// The policy's tier.
        tier: Tier,
    },
    /// A target that is zero, negative or not a number.
    #[error("the target of {metric} must be a positive number, not {value}")]
    BadTarget {
        /// The metric.
        metric: Metric,
        /// The value given.
        value: f64,
    },
    /// A metric with two targets.
    #[error("{0} has two targets")]
    DuplicateTarget(Metric),
    /// A tolerance outside [0, 1).
    #[error("the tolerance must be in [0, 1), not {0}")]
    BadTolerance(f64),
    /// A decision interval of zero or less.
    #[error("the decision interval must be positive")]
    ZeroInterval,
    /// A window shorter than the decision interval, which it could not cover.
    #[error("{name} ({ms} ms) is shorter than the decision interval ({interval_ms} ms)")]
    ShorterThanInterval {
        /// The setting.
        name: &'static str,
        /// Its value.
        ms: i64,
        /// The decision interval.
        interval_ms: i64,
    },
    /// A scale-out step that adds nothing.
    #[error("a scale-out must be able to add a replica (out_step_min or out_step_percent above 0)")]
    NoOutStep,
    /// A scale-in step of zero.
    #[error("in_step must be at least 1 (otherwise the tier never scales in)")]
    NoInStep,
}

/// The tier's load as last measured: each value the tier's total or tier-wide
/// value (`None`: not measured).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Signal {
    /// When it was measured (unix ms): a signal older than the policy's
    /// `stale_ms` is not acted on.
    pub at_ms: i64,
    /// Web: CPU of every web server together, in cores.
    pub cpu_cores: Option<f64>,
    /// Web: requests in flight at every web server together.
    pub in_flight: Option<f64>,
    /// Web: the tier's p99, in seconds.
    pub p99_seconds: Option<f64>,
    /// Workers: jobs ready to run, over every shard.
    pub queue_depth: Option<f64>,
    /// Workers: the oldest ready job's wait, the largest over every shard, in
    /// seconds.
    pub oldest_job_seconds: Option<f64>,
}

/// What a tier's autoscaler remembers between decisions.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// The replicas the tier has (the last decision's count: a change being
    /// carried out counts as made).
    current: u32,
    /// Each decision's recommendation still within the scale-in window
    /// (unix ms, replicas), oldest first: a scale-in goes to their largest.
    recommendations: VecDeque<(i64, u32)>,
    /// When the last change was decided: no scale-in within the cool-down.
    last_change_ms: Option<i64>,
}

impl State {
    /// A tier of `current` replicas at `now_ms`. The count itself counts as
    /// recommended now, so nothing scales in before a whole window of evidence
    /// (a restarted controller does not shrink a tier on its first sample).
    pub fn new(current: u32, now_ms: i64) -> State {
        State { current, recommendations: VecDeque::from([(now_ms, current)]), last_change_ms: None }
    }

    /// The replicas the tier has.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// Keep what `decision`, taken at `now_ms`, changes: its recommendation
    /// for the window, its count, when it changed.
    pub fn record(&mut self, policy: &Policy, decision: &Decision, now_ms: i64) {
        if let Some(r) = decision.recommendation {
            self.recommendations.push_back((now_ms, r));
        }
        while self.recommendations.front().is_some_and(|(t, _)| *t <= now_ms - policy.scale_in_window_ms) {
            self.recommendations.pop_front();
        }
        if decision.desired != self.current {
            self.current = decision.desired;
            self.last_change_ms = Some(now_ms);
        }
    }

    /// Decide at `now_ms` on `signal`, and record the decision.
    pub fn step(&mut self, policy: &Policy, signal: &Signal, now_ms: i64) -> Decision {
        let decision = decide(policy, self, signal, now_ms);
        self.record(policy, &decision, now_ms);
        decision
    }
}

/// What a decision found, for the event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// The count was outside `[min, max]` (the policy changed, or an operator
    /// scaled by hand): brought inside, whatever the signal.
    OutOfBounds {
        /// The policy's minimum.
        min: u32,
        /// The policy's maximum.
        max: u32,
    },
    /// No fresh value of any target's metric: nothing changes.
    NoSignal,
    /// Every metric is within its tolerance band (or a symptom is below it):
    /// nothing changes.
    WithinTolerance {
        /// The metric that asked for the most (the one nearest a change).
        metric: Metric,
        /// Its value (per replica for a per-replica metric).
        value: f64,
        /// Its target.
        target: f64,
    },
    /// More replicas.
    ScaleOut {
        /// The metric that asked for the most.
        metric: Metric,
        /// Its value.
        value: f64,
        /// Its target.
        target: f64,
        /// What it asked for, before the step limit and `max`.
        wanted: u32,
    },
    /// The signal asks for more, but the tier is at its maximum.
    AtMax {
        /// The metric that asked for the most.
        metric: Metric,
        /// Its value.
        value: f64,
        /// Its target.
        target: f64,
        /// What it asked for.
        wanted: u32,
    },
    /// Fewer replicas: every recommendation of the window asked for fewer.
    ScaleIn {
        /// The metric that asked for the most.
        metric: Metric,
        /// Its value.
        value: f64,
        /// Its target.
        target: f64,
        /// The largest recommendation of the window (the step limit may stop
        /// short of it).
        window_max: u32,
    },
    /// The signal asks for fewer, but a recommendation within the window asked
    /// for the count or more: held.
    Stabilizing {
        /// What the signal asks for now.
        recommended: u32,
        /// The largest recommendation within the window.
        window_max: u32,
    },
    /// The window asks for fewer, but the last change is too recent.
    CoolingDown {
        /// What the window asks for.
        window_max: u32,
        /// When a scale-in may happen (unix ms).
        until_ms: i64,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::OutOfBounds { min, max } => write!(f, "outside the bounds [{min}, {max}]"),
            Reason::NoSignal => f.write_str("no fresh signal: holding"),
            Reason::WithinTolerance { metric, value, target } => {
                write!(f, "{metric} {value:.3} against a target of {target}: within tolerance")
            }
            Reason::ScaleOut { metric, value, target, wanted } => {
                write!(f, "{metric} {value:.3} against a target of {target}: scaling out (wanted {wanted})")
            }
            Reason::AtMax { metric, value, target, wanted } => {
                write!(f, "{metric} {value:.3} against a target of {target} wants {wanted}: at the maximum")
            }
            Reason::ScaleIn { metric, value, target, window_max } => write!(
                f,
                "{metric} {value:.3} against a target of {target}: scaling in (at most {window_max} asked for \
                 over the window)"
            ),
            Reason::Stabilizing { recommended, window_max } => {
                write!(f, "{recommended} would do, but {window_max} was asked for within the window: holding")
            }
            Reason::CoolingDown { window_max, until_ms } => {
                write!(
                    f,
                    "{window_max} would do, but the last change is too recent: holding until {until_ms}"
                )
            }
        }
    }
}

/// A decision about a tier's size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The tier decided about (for the event log).
    pub tier: Tier,
    /// The replicas it had.
    pub from: u32,
    /// The replicas it should have now.
    pub desired: u32,
    /// What the signal alone asks for, within `[min, max]`, before the window,
    /// cool-down and step limits: what the scale-in window remembers. `None`
    /// when there was no signal.
    pub recommendation: Option<u32>,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    /// Whether the count changes.
    pub fn changes(&self) -> bool {
        self.desired != self.from
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes() {
            write!(f, "{}: {} → {}: {}", self.tier, self.from, self.desired, self.reason)
        } else {
            write!(f, "{}: {} kept: {}", self.tier, self.from, self.reason)
        }
    }
}

/// One metric's view: its value and what it asks for.
struct Opinion {
    /// The metric.
    metric: Metric,
    /// Its value (per replica when per-replica).
    value: f64,
    /// Its target.
    target: f64,
    /// The replicas it asks for; `None`: no objection to any count.
    wants: Option<u64>,
}

/// What `target`'s metric asks of a tier of `current` replicas.
fn opinion(policy: &Policy, target: &Target, signal: &Signal, current: u32) -> Option<Opinion> {
    let raw = target.metric.raw(signal)?;
    let value = if target.metric.per_replica() { raw / f64::from(current) } else { raw };
    let ratio = value / target.value;
    // `current × ratio`, with a hair off so a float's last bit does not round an
    // exact count up.
    let replicas =
        |ratio: f64| (f64::from(current) * ratio - 1e-9).ceil().clamp(0.0, f64::from(u32::MAX)) as u64;
    let wants = if (ratio - 1.0).abs() <= policy.tolerance {
        Some(u64::from(current))
    } else if ratio > 1.0 {
        Some(replicas(ratio))
    } else if target.metric.per_replica() {
        // Fewer, but as many as keep the load at the band's lower edge: a
        // scale-in leaves the whole band before the next scale-out.
        Some(replicas(ratio / (1.0 - policy.tolerance)))
    } else {
        // A symptom well under its target says nothing about how few would do.
        None
    };
    Some(Opinion { metric: target.metric, value, target: target.value, wants })
}

/// Decide the tier's size at `now_ms` from `signal`, following `policy` (which
/// must be valid: [`Policy::validate`]) and what `state` remembers. Pure: the
/// caller records the decision ([`State::record`], or [`State::step`]).
pub fn decide(policy: &Policy, state: &State, signal: &Signal, now_ms: i64) -> Decision {
    let current = state.current;
    let decision = |desired: u32, recommendation: Option<u32>, reason: Reason| Decision {
        tier: policy.tier,
        from: current,
        desired,
        recommendation,
        reason,
    };
    if current < policy.min || current > policy.max {
        let desired = current.clamp(policy.min, policy.max);
        return decision(desired, Some(desired), Reason::OutOfBounds { min: policy.min, max: policy.max });
    }
    let fresh = signal.at_ms >= now_ms - policy.stale_ms && signal.at_ms <= now_ms + policy.stale_ms;
    let opinions: Vec<Opinion> = if fresh {
        policy.targets.iter().filter_map(|t| opinion(policy, t, signal, current)).collect()
    } else {
        Vec::new()
    };
    // The metric that asks for the most leads (the first listed on a tie).
    let Some(lead) = opinions.iter().reduce(|a, b| if b.wants > a.wants { b } else { a }) else {
        return decision(current, None, Reason::NoSignal);
    };
    let (metric, value, target) = (lead.metric, lead.value, lead.target);
    let wanted = lead.wants.map_or(current, |w| u32::try_from(w).unwrap_or(u32::MAX));
    let recommendation = wanted.clamp(policy.min, policy.max);

    if recommendation > current {
        let desired = recommendation.min(policy.out_limit(current));
        return decision(desired, Some(recommendation), Reason::ScaleOut { metric, value, target, wanted });
    }
    if wanted > current {
        // Wanted more, but the tier is at its maximum.
        return decision(current, Some(recommendation), Reason::AtMax { metric, value, target, wanted });
    }
    if recommendation == current {
        return decision(current, Some(recommendation), Reason::WithinTolerance { metric, value, target });
    }
    // Fewer would do: only as few as the whole window agrees on.
    let window_start = now_ms - policy.scale_in_window_ms;
    let window_max = state
        .recommendations
        .iter()
        .filter(|(t, _)| *t > window_start)
        .map(|(_, r)| *r)
        .chain([recommendation])
        .max()
        .unwrap_or(recommendation);
    if window_max >= current {
        return decision(
            current,
            Some(recommendation),
            Reason::Stabilizing { recommended: recommendation, window_max },
        );
    }
    if let Some(changed) = state.last_change_ms
        && now_ms < changed + policy.cooldown_ms
    {
        let until_ms = changed + policy.cooldown_ms;
        return decision(current, Some(recommendation), Reason::CoolingDown { window_max, until_ms });
    }
    let desired = window_max.max(current.saturating_sub(policy.in_step)).max(policy.min);
    decision(desired, Some(recommendation), Reason::ScaleIn { metric, value, target, window_max })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    /// A web signal at `at_ms` of `cores` CPU over the whole tier.
    fn cpu(at_ms: i64, cores: f64) -> Signal {
        Signal { at_ms, cpu_cores: Some(cores), ..Signal::default() }
    }

    /// A worker signal at `at_ms`.
    fn queue(at_ms: i64, depth: f64, oldest: f64) -> Signal {
        Signal { at_ms, queue_depth: Some(depth), oldest_job_seconds: Some(oldest), ..Signal::default() }
    }

    /// A web policy on CPU alone (0.5 cores per server), 2 to 16 servers.
    fn web_cpu() -> Policy {
        let p =
            Policy { targets: vec![Target { metric: Metric::CpuPerServer, value: 0.5 }], ..Policy::web() };
        p.validate().unwrap();
        p
    }

    /// Steps `state` every interval from `from_ms` while `from_ms + i ×
    /// interval < until_ms`, with the signal `at(t)`; returns every decision.
    fn run(
        policy: &Policy,
        state: &mut State,
        from_ms: i64,
        until_ms: i64,
        mut at: impl FnMut(i64) -> Signal,
    ) -> Vec<(i64, Decision)> {
        let mut out = Vec::new();
        let mut t = from_ms;
        while t < until_ms {
            let d = state.step(policy, &at(t), t);
            out.push((t, d));
            t += policy.interval_ms;
        }
        out
    }

    #[test]
    fn the_defaults_are_valid_and_bad_policies_are_refused_by_name() {
        Policy::web().validate().unwrap();
        Policy::workers().validate().unwrap();
        let bad = |p: Policy| p.validate().unwrap_err();
        assert_eq!(bad(Policy { min: 0, ..Policy::web() }), PolicyError::MinZero);
        assert_eq!(
            bad(Policy { min: 5, max: 4, ..Policy::web() }),
            PolicyError::MinAboveMax { min: 5, max: 4 }
        );
        assert_eq!(bad(Policy { targets: vec![], ..Policy::web() }), PolicyError::NoTargets);
        let wrong =
            Policy { targets: vec![Target { metric: Metric::P99Seconds, value: 1.0 }], ..Policy::workers() };
        assert_eq!(bad(wrong), PolicyError::WrongTier { metric: Metric::P99Seconds, tier: Tier::Worker });
        for value in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let p = Policy { targets: vec![Target { metric: Metric::CpuPerServer, value }], ..Policy::web() };
            assert!(matches!(bad(p), PolicyError::BadTarget { metric: Metric::CpuPerServer, .. }), "{value}");
        }
        let twice = Target { metric: Metric::CpuPerServer, value: 0.5 };
        assert_eq!(
            bad(Policy { targets: vec![twice, twice], ..Policy::web() }),
            PolicyError::DuplicateTarget(Metric::CpuPerServer)
        );
        assert_eq!(bad(Policy { tolerance: 1.0, ..Policy::web() }), PolicyError::BadTolerance(1.0));
        assert!(matches!(bad(Policy { tolerance: -0.1, ..Policy::web() }), PolicyError::BadTolerance(_)));
        assert_eq!(bad(Policy { interval_ms: 0, ..Policy::web() }), PolicyError::ZeroInterval);
        let short = bad(Policy { scale_in_window_ms: 1000, ..Policy::web() });
        assert!(
            matches!(short, PolicyError::ShorterThanInterval { name: "scale_in_window_ms", .. }),
            "{short}"
        );
        assert_eq!(
            bad(Policy { out_step_min: 0, out_step_percent: 0, ..Policy::web() }),
            PolicyError::NoOutStep
        );
        assert_eq!(bad(Policy { in_step: 0, ..Policy::web() }), PolicyError::NoInStep);
        // The messages name what is wrong.
        assert_eq!(PolicyError::MinAboveMax { min: 5, max: 4 }.to_string(), "min (5) is above max (4)");
    }

    #[test]
    fn a_signal_over_its_target_scales_out_within_one_interval() {
        let p = web_cpu();
        let mut state = State::new(4, 0);
        // At target (4 servers × 0.5 cores) for a minute, then the load doubles
        // between two decisions.
        let crossing = 60 * S + 7 * S;
        let decisions = run(&p, &mut state, 0, 120 * S, |t| cpu(t, if t < crossing { 2.0 } else { 4.0 }));
        let first_after = decisions.iter().find(|(t, _)| *t >= crossing).unwrap();
        assert!(first_after.0 - crossing < p.interval_ms);
        let d = &first_after.1;
        assert_eq!((d.from, d.desired), (4, 8), "{d}");
        assert!(matches!(d.reason, Reason::ScaleOut { metric: Metric::CpuPerServer, wanted: 8, .. }), "{d}");
        assert!(decisions.iter().filter(|(t, _)| *t < crossing).all(|(_, d)| !d.changes()));
        // Once there, the load per server is at target: it stays.
        assert_eq!(state.current(), 8);
        assert!(decisions.iter().filter(|(t, _)| *t > first_after.0).all(|(_, d)| !d.changes()));
        assert!(d.to_string().starts_with("web: 4 → 8: cpu_per_server 1.000 against a target of 0.5"), "{d}");
    }

    #[test]
    fn a_scale_out_is_bounded_by_the_step_and_the_maximum() {
        let p = web_cpu();
        // 2 servers at 5 cores: 20 wanted; at most max(4, 100%) more per decision.
        let mut state = State::new(2, 0);
        let d = state.step(&p, &cpu(0, 10.0), 0);
        assert_eq!((d.desired, d.recommendation), (6, Some(16)), "{d}");
        assert!(matches!(d.reason, Reason::ScaleOut { wanted: 20, .. }), "{d}");
        let d = state.step(&p, &cpu(15 * S, 10.0), 15 * S);
        assert_eq!(d.desired, 12, "doubling from 6: {d}");
        let d = state.step(&p, &cpu(30 * S, 10.0), 30 * S);
        assert_eq!(d.desired, 16, "capped at max: {d}");
        let d = state.step(&p, &cpu(45 * S, 10.0), 45 * S);
        assert_eq!(d.desired, 16);
        assert!(matches!(d.reason, Reason::AtMax { wanted: 20, .. }), "{d}");
        assert!(d.to_string().contains("at the maximum"), "{d}");
    }

    #[test]
    fn a_scale_in_waits_for_the_whole_window_then_goes_a_replica_at_a_time() {
        let p = web_cpu();
        let mut state = State::new(8, 0);
        // 8 servers busy, then the load drops to what 2 serve under the band's
        // lower edge (0.8 cores: 0.4 each, against 0.5 × 0.9).
        let drop = 60 * S;
        let decisions = run(&p, &mut state, 0, 20 * 60 * S, |t| cpu(t, if t < drop { 4.0 } else { 0.8 }));
        let changes: Vec<(i64, u32)> =
            decisions.iter().filter(|(_, d)| d.changes()).map(|(t, d)| (*t, d.desired)).collect();
        // Nothing before the window since the last high recommendation has passed.
        let first = changes[0];
        assert!(first.0 >= drop - p.interval_ms + p.scale_in_window_ms, "{changes:?}");
        assert!(first.0 <= drop + p.scale_in_window_ms, "{changes:?}");
        assert_eq!(first.1, 7, "one replica at a time");
        // Each later one at least a cool-down apart, down to the minimum, never below.
        for w in changes.windows(2) {
            assert!(w[1].0 - w[0].0 >= p.cooldown_ms, "{changes:?}");
            assert_eq!(w[1].1, w[0].1 - 1, "{changes:?}");
        }
        assert_eq!(changes.last().unwrap().1, 2, "{changes:?}");
        assert_eq!(state.current(), 2);
        // What was said while waiting.
        let waiting: Vec<&Reason> = decisions.iter().map(|(_, d)| &d.reason).collect();
        assert!(waiting.iter().any(|r| matches!(r, Reason::Stabilizing { recommended: 2, window_max: 8 })));
        assert!(waiting.iter().any(|r| matches!(r, Reason::CoolingDown { .. })));
    }

    #[test]
    fn a_new_state_does_not_scale_in_before_a_whole_window() {
        let p = web_cpu();
        let mut state = State::new(6, 0);
        let d = state.step(&p, &cpu(0, 0.1), 0);
        assert!(
            !d.changes() && matches!(d.reason, Reason::Stabilizing { recommended: 2, window_max: 6 }),
            "{d}"
        );
        // ... but scales out at once.
        let d = state.step(&p, &cpu(15 * S, 9.0), 15 * S);
        assert_eq!(d.desired, 12, "{d}");
    }

    #[test]
    fn the_count_stays_within_bounds_whatever_the_signal() {
        let p = web_cpu();
        // Below the minimum (an operator scaled by hand): raised, whatever the signal.
        let mut state = State::new(1, 0);
        let d = state.step(&p, &cpu(0, 0.0), 0);
        assert_eq!(d.desired, 2);
        assert_eq!(d.reason, Reason::OutOfBounds { min: 2, max: 16 });
        assert!(d.to_string().contains("outside the bounds [2, 16]"), "{d}");
        // Above the maximum: lowered at once, no window.
        let mut state = State::new(40, 0);
        assert_eq!(state.step(&p, &cpu(0, 100.0), 0).desired, 16);
        // An idle tier for an hour never goes below the minimum.
        let mut state = State::new(5, 0);
        let decisions = run(&p, &mut state, 0, 3600 * S, |t| cpu(t, 0.0));
        assert!(decisions.iter().all(|(_, d)| d.desired >= 2));
        assert_eq!(state.current(), 2);
        // An enormous signal never goes above the maximum.
        let decisions = run(&p, &mut state, 3600 * S, 4000 * S, |t| cpu(t, 1e12));
        assert!(decisions.iter().all(|(_, d)| d.desired <= 16));
        assert_eq!(state.current(), 16);
    }

    #[test]
    fn a_stale_or_missing_signal_changes_nothing() {
        let p = web_cpu();
        let mut state = State::new(4, 0);
        let d = state.step(&p, &cpu(0, 100.0), p.stale_ms + 1);
        assert_eq!((d.desired, &d.reason, d.recommendation), (4, &Reason::NoSignal, None));
        let d = state.step(&p, &Signal { at_ms: 60 * S, ..Signal::default() }, 60 * S);
        assert_eq!(d.reason, Reason::NoSignal);
        // Garbage (negative, NaN) is no signal either.
        assert_eq!(state.step(&p, &cpu(90 * S, f64::NAN), 90 * S).reason, Reason::NoSignal);
        assert_eq!(state.step(&p, &cpu(105 * S, -3.0), 105 * S).reason, Reason::NoSignal);
        assert_eq!(state.current(), 4);
    }

    /// xorshift64*: the noise of the flapping tests, seeded, so every run sees
    /// the same signal.
    struct Noise(u64);

    impl Noise {
        /// Uniform in [-1, 1).
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
            (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    #[test]
    fn noise_within_the_tolerance_band_never_moves_the_count() {
        let p = web_cpu();
        for seed in [1, 42, 0x5eed] {
            let mut noise = Noise(seed);
            let mut state = State::new(6, 0);
            // 6 servers at 0.5 cores each, ±9.5%: every ratio within ±10%.
            let decisions =
                run(&p, &mut state, 0, 6 * 3600 * S, |t| cpu(t, 3.0 * (1.0 + 0.095 * noise.next())));
            assert!(decisions.iter().all(|(_, d)| !d.changes()), "seed {seed}");
            assert!(decisions.iter().all(|(_, d)| matches!(d.reason, Reason::WithinTolerance { .. })));
        }
    }

    #[test]
    fn noise_beyond_the_band_does_not_flap() {
        let p = web_cpu();
        for seed in [7, 99, 2024] {
            let mut noise = Noise(seed);
            let mut state = State::new(6, 0);
            // The same mean, ±40%: single samples cross the band both ways.
            let decisions =
                run(&p, &mut state, 0, 6 * 3600 * S, |t| cpu(t, 3.0 * (1.0 + 0.4 * noise.next())));
            let changes: Vec<(i64, i64)> = decisions
                .iter()
                .filter(|(_, d)| d.changes())
                .map(|(t, d)| (*t, i64::from(d.desired) - i64::from(d.from)))
                .collect();
            // It goes up to what the peaks need and stays there: no change of
            // direction within the window either way, and only a few changes in
            // six hours.
            for w in changes.windows(2) {
                let reversed = w[0].1.signum() != w[1].1.signum();
                assert!(!reversed || w[1].0 - w[0].0 >= p.scale_in_window_ms, "seed {seed}: {changes:?}");
            }
            assert!(changes.len() <= 4, "seed {seed}: {changes:?}");
            assert!(changes[0].1 > 0, "seed {seed}: out first: {changes:?}");
            assert!(state.current() <= 9, "seed {seed}: the peaks need ⌈4.2 / 0.5⌉ = 9 at most");
        }
    }

    #[test]
    fn the_metric_asking_for_the_most_leads_and_symptoms_never_ask_for_fewer() {
        let p = Policy::web();
        let mut state = State::new(4, 0);
        // CPU at target, in flight 3× over: in flight leads.
        let s = Signal {
            at_ms: 0,
            cpu_cores: Some(2.0),
            in_flight: Some(384.0),
            p99_seconds: Some(0.01),
            ..Signal::default()
        };
        let d = state.step(&p, &s, 0);
        assert_eq!(d.desired, 8, "max(4, 100%) per decision: {d}");
        assert!(
            matches!(d.reason, Reason::ScaleOut { metric: Metric::InFlightPerServer, wanted: 12, .. }),
            "{d}"
        );
        // p99 over its target alone scales out by its ratio.
        let mut state = State::new(4, 0);
        let s = Signal { at_ms: 0, cpu_cores: Some(2.0), p99_seconds: Some(0.5), ..Signal::default() };
        let d = state.step(&p, &s, 0);
        assert!(matches!(d.reason, Reason::ScaleOut { metric: Metric::P99Seconds, wanted: 8, .. }), "{d}");
        // A tiny p99 with no other signal says nothing about fewer servers.
        let mut state = State::new(4, 0);
        let quiet = |t| Signal { at_ms: t, p99_seconds: Some(0.001), ..Signal::default() };
        let decisions = run(&p, &mut state, 0, 3600 * S, quiet);
        assert!(decisions.iter().all(|(_, d)| !d.changes()));
        // Nor does it hold off a scale-in that CPU asks for.
        let mut state = State::new(4, 0);
        let idle =
            |t| Signal { at_ms: t, cpu_cores: Some(0.1), p99_seconds: Some(0.001), ..Signal::default() };
        run(&p, &mut state, 0, 3600 * S, idle);
        assert_eq!(state.current(), 2);
        // A p99 near its target holds the count.
        let mut state = State::new(4, 0);
        let near =
            |t| Signal { at_ms: t, cpu_cores: Some(0.1), p99_seconds: Some(0.24), ..Signal::default() };
        let decisions = run(&p, &mut state, 0, 3600 * S, near);
        assert!(decisions.iter().all(|(_, d)| !d.changes()));
    }

    #[test]
    fn workers_follow_the_queue_depth_and_the_oldest_jobs_age() {
        let p = Policy::workers();
        // 2 workers, 200 ready jobs: 10 wanted, capped by the step at 6.
        let mut state = State::new(2, 0);
        let d = state.step(&p, &queue(0, 200.0, 1.0), 0);
        assert_eq!(d.desired, 6, "{d}");
        assert!(matches!(d.reason, Reason::ScaleOut { metric: Metric::QueueDepthPerWorker, wanted: 10, .. }));
        // A short queue whose oldest job has waited 35 s (target 10 s): the age leads.
        let mut state = State::new(2, 0);
        let d = state.step(&p, &queue(0, 5.0, 35.0), 0);
        assert_eq!(d.desired, 6, "{d}");
        assert!(
            matches!(d.reason, Reason::ScaleOut { metric: Metric::OldestJobSeconds, wanted: 7, .. }),
            "{d}"
        );
        // The backlog drains: back to one worker, slowly, and never to zero.
        let mut state = State::new(6, 0);
        let decisions = run(&p, &mut state, 0, 3600 * S, |t| queue(t, 0.0, 0.0));
        assert_eq!(state.current(), 1);
        assert!(decisions.iter().all(|(_, d)| d.desired >= 1));
        let first_in = decisions.iter().find(|(_, d)| d.changes()).unwrap();
        assert!(first_in.0 >= p.scale_in_window_ms, "{:?}", first_in);
        // A steady trickle at target keeps them.
        let mut state = State::new(3, 0);
        let decisions = run(&p, &mut state, 0, 3600 * S, |t| queue(t, 60.0, 2.0));
        assert!(decisions.iter().all(|(_, d)| !d.changes()));
    }
}
