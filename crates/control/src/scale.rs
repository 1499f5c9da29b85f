//! Scaling web servers and workers (issue 18): by hand (`millions scale DC ROLE
//! N`) and by the autoscaler, which takes [`autoscale`]'s decisions from the
//! metrics history once per decision interval.
//!
//! A DC's range for a role (`web = { count = 2, min = 2, max = 6 }`) reserves
//! the addresses of all `max` nodes, so a scale never meets a taken address of
//! the topology's own. Nodes are numbered: scaling out starts the next ones,
//! scaling in stops the highest, so nodes `1..=min` are never removed by a
//! scale (a CDN edge takes only those as its origins).
//!
//! A change is made in an order that loses no request:
//! - **out**: the run directory's topology file gets the new count (what a
//!   restarted controller and `millions down` read), the topology in force is
//!   replaced, each new node is started and waited for until ready; only then
//!   do the DC's load balancers get the new list, and they send a new backend
//!   nothing until their own health probe passes;
//! - **in**: each node leaving is drained from its load balancers (no new
//!   request, those in flight finish), then stopped with SIGTERM (a web server
//!   finishes what it has; a worker's job in hand is leased and done again
//!   elsewhere if cut), and only then does it leave the file, the topology and
//!   the load balancers' lists.
//!
//! One change per DC and role at a time; every change is an event (`scaled`),
//! with its reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;
use topology::{Node, Role, Topology};

use crate::autoscale::{self, Decision, Metric, Policy, Signal, Target};
use crate::cluster::Event;
use crate::error::{Context as _, ControlError};
use crate::files::topology_file;
use crate::history::{Recorder, now_ms};
use crate::launch;
use crate::shared::{Managed, Shared};

/// The roles a DC's range may scale.
pub const SCALED: [Role; 2] = [Role::Web, Role::Worker];

/// A DC and one of its roles.
type TierKey = (String, Role);

/// What the controller keeps about scaling.
#[derive(Default)]
pub(crate) struct Scaling {
    /// One lock per DC and role: a change (by hand or decided) is carried out
    /// whole before the next starts.
    locks: std::sync::Mutex<BTreeMap<TierKey, Arc<Mutex<()>>>>,
    /// Each autoscaled tier's last decision and the count it wants, for
    /// `millions status` and the dashboard.
    tiers: std::sync::Mutex<BTreeMap<TierKey, TierView>>,
}

impl Scaling {
    fn lock(&self, dc: &str, role: Role) -> Arc<Mutex<()>> {
        self.locks.lock().expect("scale locks poisoned").entry((dc.to_owned(), role)).or_default().clone()
    }

    fn note(&self, dc: &str, role: Role, update: impl FnOnce(&mut TierView)) {
        let mut tiers = self.tiers.lock().expect("scale views poisoned");
        update(tiers.entry((dc.to_owned(), role)).or_default());
    }
}

/// What `millions status` shows of an autoscaled tier beyond its count.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct TierView {
    /// The count the last decision (or `millions scale`) asked for.
    pub(crate) desired: Option<u32>,
    /// The last decision that changed something, or the latest if none did:
    /// when (RFC 3339) and why.
    pub(crate) last_decision: Option<DecisionView>,
}

/// A decision as shown.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DecisionView {
    /// When it was taken (RFC 3339, UTC).
    pub at: String,
    /// From how many to how many.
    pub from: u32,
    /// The count decided.
    pub to: u32,
    /// In words: the signal, its target and what the policy made of it.
    pub reason: String,
}

/// One DC's role as `millions status` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RoleStatus {
    /// The DC.
    pub dc: String,
    /// `web` or `worker`.
    pub role: String,
    /// Nodes the topology has now.
    pub current: u32,
    /// What the last decision or `millions scale` asked for (the current
    /// count when nothing asked yet).
    pub desired: u32,
    /// The range.
    pub min: u32,
    /// The range.
    pub max: u32,
    /// Whether the autoscaler follows it (the topology gave a range).
    pub autoscaled: bool,
    /// The last decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<DecisionView>,
}

/// Every DC's scaled roles, for `millions status`.
pub(crate) fn status(shared: &Shared) -> Vec<RoleStatus> {
    let t = shared.topology();
    let tiers = shared.scaling.tiers.lock().expect("scale views poisoned").clone();
    let mut out = vec![];
    for dc in t.dcs() {
        for role in SCALED {
            let Some(range) = dc.scale(role).filter(|s| s.max > 0) else { continue };
            let current = t.count(&dc.name, role) as u32;
            let view = tiers.get(&(dc.name.clone(), role)).cloned().unwrap_or_default();
            out.push(RoleStatus {
                dc: dc.name.clone(),
                role: role.key().to_owned(),
                current,
                desired: view.desired.unwrap_or(current),
                min: range.min,
                max: range.max,
                autoscaled: range.auto,
                last_decision: view.last_decision,
            });
        }
    }
    out
}

/// What a change did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Scaled {
    /// The DC.
    pub(crate) dc: String,
    /// `web` or `worker`.
    pub(crate) role: String,
    /// The count before.
    pub(crate) from: u32,
    /// The count now.
    pub(crate) to: u32,
    /// The nodes started.
    pub(crate) added: Vec<String>,
    /// The nodes stopped and removed.
    pub(crate) removed: Vec<String>,
    /// How long the change took, in milliseconds.
    pub(crate) took_ms: u64,
}

/// A scaled role named on the command line or in a request.
pub(crate) fn scaled_role(text: &str) -> Result<Role, ControlError> {
    let role: Role = text.parse().map_err(ControlError::BadRequest)?;
    if !SCALED.contains(&role) {
        return Err(ControlError::BadRequest(format!(
            "{role} nodes are not scaled by count: only web and worker are"
        )));
    }
    Ok(role)
}

/// Set `dc`'s count of `role` to `count`, within its range; `why` goes to the
/// event log. Refused, changing nothing, for an unknown DC, a role that is
/// not scaled, a count outside the range, or a new node's address taken.
pub(crate) async fn scale_to(
    shared: &Shared,
    dc: &str,
    role: Role,
    count: u32,
    why: &str,
) -> Result<Scaled, ControlError> {
    let started = Instant::now();
    let lock = shared.scaling.lock(dc, role);
    let _one = lock.lock().await;
    let t = shared.topology();
    let range = t
        .dc(dc)
        .ok_or_else(|| {
            let names: Vec<&str> = t.dcs().iter().map(|d| d.name.as_str()).collect();
            ControlError::BadRequest(format!("no DC named {dc}; the DCs are {}", names.join(", ")))
        })?
        .scale(role)
        .ok_or_else(|| ControlError::BadRequest(format!("{role} nodes are not scaled by count")))?
        .clone();
    if range.max == 0 {
        return Err(ControlError::BadRequest(format!("{dc} has no {role} nodes to scale")));
    }
    if !(range.min..=range.max).contains(&count) {
        return Err(ControlError::BadRequest(format!(
            "{dc}'s {role} nodes scale within {}..={} (the topology's {role}.min and {role}.max); {count} is outside",
            range.min, range.max
        )));
    }
    let from = t.count(dc, role) as u32;
    shared.scaling.note(dc, role, |v| v.desired = Some(count));
    let mut scaled = Scaled {
        dc: dc.to_owned(),
        role: role.key().to_owned(),
        from,
        to: from,
        added: vec![],
        removed: vec![],
        took_ms: 0,
    };
    if count > from {
        grow(shared, dc, role, count, &mut scaled).await?;
    } else if count < from {
        shrink(shared, dc, role, count, &mut scaled).await?;
    }
    scaled.took_ms = started.elapsed().as_millis() as u64;
    if scaled.from != scaled.to {
        let nodes = if scaled.added.is_empty() { &scaled.removed } else { &scaled.added };
        shared.cluster.record(Event::node(
            "scaled",
            &format!("{dc}-{role}"),
            format!(
                "{dc}'s {role} nodes {} → {} ({}: {}; {} ms): {why}",
                scaled.from,
                scaled.to,
                if scaled.added.is_empty() { "removed" } else { "added" },
                nodes.join(", "),
                scaled.took_ms
            ),
        ));
        shared.dashboard.nudge();
    }
    Ok(scaled)
}

/// The topology file's text with `dc`'s count of `role` set to `count`, and
/// the topology it describes (checked by the topology's own rules).
fn with_count(shared: &Shared, dc: &str, role: Role, count: u32) -> Result<(String, Topology), ControlError> {
    let path = topology_file(&shared.opts.run_dir);
    let text = std::fs::read_to_string(&path).file("reading", &path)?;
    let next_text = topology::set_count(&text, dc, role, count)
        .map_err(|e| ControlError::Invalid(format!("{}: {e}", path.display())))?;
    let next = topology::parse(&next_text, &path.display().to_string()).map_err(|e| {
        ControlError::BadRequest(format!("the topology with {dc}'s {role}.count = {count}: {e}"))
    })?;
    Ok((next_text, next))
}

/// Set `dc`'s count of `role` in the run directory's topology file and put
/// what it describes in force, as one step under the topology's edit lock:
/// the file is read, changed and written back whole, and another scale (of
/// another DC or role) or a shard add edits the same file.
fn put_count(shared: &Shared, dc: &str, role: Role, count: u32) -> Result<Topology, ControlError> {
    let _edit = shared.topology_edit.lock().expect("topology edit lock poisoned");
    let (text, next) = with_count(shared, dc, role, count)?;
    crate::files::replace(&topology_file(&shared.opts.run_dir), &text)?;
    shared.set_topology(next.clone());
    Ok(next)
}

fn role_nodes<'a>(t: &'a Topology, dc: &'a str, role: Role) -> impl Iterator<Item = &'a Node> + 'a {
    t.nodes_in(dc).filter(move |n| n.role == role)
}

async fn grow(
    shared: &Shared,
    dc: &str,
    role: Role,
    count: u32,
    scaled: &mut Scaled,
) -> Result<(), ControlError> {
    // What the change would be, checked before anything is written.
    let (_, preview) = with_count(shared, dc, role, count)?;
    let before: Vec<String> = role_nodes(&shared.topology(), dc, role).map(|n| n.name.clone()).collect();
    let new: Vec<Node> =
        role_nodes(&preview, dc, role).filter(|n| !before.contains(&n.name)).cloned().collect();
    for node in &new {
        if let Err(e) = std::net::TcpListener::bind(node.addr) {
            return Err(ControlError::Refused(format!("{} cannot listen on {}: {e}", node.name, node.addr)));
        }
    }
    put_count(shared, dc, role, count)?;
    {
        let mut nodes = shared.nodes.lock().await;
        for node in &new {
            if !nodes.iter().any(|m| m.node.name == node.name) {
                // Not supervised until its first start (which clears this).
                let mut m = Managed::new(node.clone());
                m.stopped_on_purpose = true;
                nodes.push(m);
            }
        }
    }
    let mut failed = None;
    for node in &new {
        match launch::start_node(shared, &node.name).await {
            Ok(()) => {
                scaled.added.push(node.name.clone());
                scaled.to += 1;
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failed {
        // Back to what did start: the nodes that did not leave the file, the
        // topology and supervision.
        tracing::error!(dc, role = %role, error = %e, "a scale-out failed; keeping the nodes that started");
        let (_, preview) = with_count(shared, dc, role, scaled.to)?;
        let keep: Vec<String> = role_nodes(&preview, dc, role).map(|n| n.name.clone()).collect();
        for node in new.iter().filter(|n| !keep.contains(&n.name)) {
            let _ = launch::stop_node(shared, &node.name).await;
        }
        put_count(shared, dc, role, scaled.to)?;
        forget(shared, new.iter().filter(|n| !keep.contains(&n.name)).map(|n| n.name.as_str())).await;
        if role == Role::Web {
            crate::lb::set_backends(shared, dc).await;
        }
        return Err(e);
    }
    if role == Role::Web {
        crate::lb::set_backends(shared, dc).await;
    }
    Ok(())
}

async fn shrink(
    shared: &Shared,
    dc: &str,
    role: Role,
    count: u32,
    scaled: &mut Scaled,
) -> Result<(), ControlError> {
    let (_, preview) = with_count(shared, dc, role, count)?;
    let keep: Vec<String> = role_nodes(&preview, dc, role).map(|n| n.name.clone()).collect();
    let mut leaving: Vec<Node> =
        role_nodes(&shared.topology(), dc, role).filter(|n| !keep.contains(&n.name)).cloned().collect();
    // The highest first.
    leaving.reverse();
    for node in &leaving {
        // Drained from the load balancers first (a web server), then stopped.
        launch::stop_node(shared, &node.name).await?;
    }
    put_count(shared, dc, role, count)?;
    forget(shared, leaving.iter().map(|n| n.name.as_str())).await;
    if role == Role::Web {
        crate::lb::set_backends(shared, dc).await;
    }
    scaled.removed = leaving.iter().map(|n| n.name.clone()).collect();
    scaled.to = count;
    Ok(())
}

/// Take nodes no longer in the topology out of supervision.
async fn forget<'a>(shared: &Shared, names: impl Iterator<Item = &'a str>) {
    let names: Vec<&str> = names.collect();
    shared.nodes.lock().await.retain(|m| !names.contains(&m.node.name.as_str()));
}

/// The policy `dc`'s range of `role` follows: the tier's defaults, its range,
/// and the overrides of its `autoscale` table (`cpu_per_server`,
/// `in_flight_per_server`, `p99_seconds`, `queue_depth_per_worker`,
/// `oldest_job_seconds`: targets, and when any is given only those are
/// followed; `tolerance`, `interval_ms`, `stale_ms`, `scale_in_window_ms`,
/// `cooldown_ms`, `out_step_min`, `out_step_percent`, `in_step`), checked.
pub fn policy(t: &Topology, dc: &str, role: Role) -> Result<Option<Policy>, ControlError> {
    let Some(range) = t.dc(dc).and_then(|d| d.scale(role)).filter(|s| s.auto) else { return Ok(None) };
    let invalid = |m: String| ControlError::Invalid(format!("{dc}'s {role}.autoscale: {m}"));
    let mut p = if role == Role::Web { Policy::web() } else { Policy::workers() };
    p.min = range.min;
    p.max = range.max;
    let mut targets: Vec<Target> = vec![];
    for (key, value) in &range.autoscale {
        let number = || -> Result<f64, ControlError> {
            value
                .as_float()
                .or_else(|| value.as_integer().map(|i| i as f64))
                .ok_or_else(|| invalid(format!("{key} = {value} is not a number")))
        };
        let whole = |what: &str| -> Result<i64, ControlError> {
            value
                .as_integer()
                .ok_or_else(|| invalid(format!("{key} = {value} is not a whole number of {what}")))
        };
        let count = || -> Result<u32, ControlError> {
            u32::try_from(whole("replicas")?).map_err(|_| invalid(format!("{key} = {value} is out of range")))
        };
        let metric = [
            Metric::CpuPerServer,
            Metric::InFlightPerServer,
            Metric::P99Seconds,
            Metric::QueueDepthPerWorker,
            Metric::OldestJobSeconds,
        ]
        .into_iter()
        .find(|m| m.name() == key);
        match (metric, key.as_str()) {
            (Some(metric), _) => targets.push(Target { metric, value: number()? }),
            (None, "tolerance") => p.tolerance = number()?,
            (None, "interval_ms") => p.interval_ms = whole("milliseconds")?,
            (None, "stale_ms") => p.stale_ms = whole("milliseconds")?,
            (None, "scale_in_window_ms") => p.scale_in_window_ms = whole("milliseconds")?,
            (None, "cooldown_ms") => p.cooldown_ms = whole("milliseconds")?,
            (None, "out_step_min") => p.out_step_min = count()?,
            (None, "out_step_percent") => p.out_step_percent = count()?,
            (None, "in_step") => p.in_step = count()?,
            (None, other) => return Err(invalid(format!("{other} is not an autoscaling setting"))),
        }
    }
    if !targets.is_empty() {
        p.targets = targets;
    }
    p.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(Some(p))
}

/// Every autoscaled range's policy of `t`, checked: what `millions up` does
/// before it starts anything.
pub fn check_policies(t: &Topology) -> Result<(), ControlError> {
    for dc in t.dcs() {
        for role in SCALED {
            policy(t, &dc.name, role)?;
        }
    }
    Ok(())
}

/// The load of `dc`'s `role` tier as the history has it now.
fn signal(rec: &Recorder, t: &Topology, dc: &str, role: Role, now: i64) -> Signal {
    // Enough history for two scrapes of every node.
    let since = now - 3 * rec.opts.interval.as_millis() as i64 - rec.opts.timeout.as_millis() as i64;
    let mut at = 0i64;
    let mut s = Signal::default();
    match role {
        Role::Web => {
            let webs: Vec<&str> = role_nodes(t, dc, Role::Web).map(|n| n.name.as_str()).collect();
            let mut cpu = 0.0;
            let mut measured = 0;
            for series in rec.query(&["host_cpu_seconds_total"], None, since) {
                if !webs.contains(&series.node.as_str()) {
                    continue;
                }
                if let [.., (t0, v0), (t1, v1)] = series.points[..]
                    && t1 > t0
                {
                    cpu += ((v1 - v0) / ((t1 - t0) as f64 / 1000.0)).max(0.0);
                    measured += 1;
                    at = at.max(t1);
                }
            }
            // Only a tier every node of which reported: a node just started
            // has one point, and would make the tier look idle.
            if measured == webs.len() && measured > 0 {
                s.cpu_cores = Some(cpu);
            }
            let lbs: Vec<&str> =
                t.nodes_in(dc).filter(|n| n.role == Role::LoadBalancer).map(|n| n.name.as_str()).collect();
            let addrs: Vec<String> =
                webs.iter().filter_map(|w| t.node(w)).map(|n| n.addr.to_string()).collect();
            let mut in_flight = None;
            for series in rec.query(&["millions_lb_backend_in_flight"], None, since) {
                let ours = lbs.contains(&series.node.as_str())
                    && series.labels.get("backend").is_some_and(|b| addrs.contains(b));
                if let (true, Some((t1, v))) = (ours, series.points.last()) {
                    *in_flight.get_or_insert(0.0) += v;
                    at = at.max(*t1);
                }
            }
            s.in_flight = in_flight;
            if let Some(series) = rec
                .query(&["tier_request_duration_p99_seconds"], Some(crate::history::SYSTEM), since)
                .into_iter()
                .find(|s| s.labels.get("role").is_some_and(|r| r == "web"))
                && let Some((t1, v)) = series.points.last()
            {
                s.p99_seconds = Some(*v);
                at = at.max(*t1);
            }
        }
        _ => {
            // Every worker reports every shard's queue (a worker removed
            // lately too, until its series leaves the window): per shard, the
            // latest report is the view of it.
            let latest = |name: &str, state: Option<&str>| -> BTreeMap<String, (i64, f64)> {
                let mut by_shard: BTreeMap<String, (i64, f64)> = BTreeMap::new();
                for series in rec.query(&[name], None, since) {
                    let Some(shard) = series.labels.get("shard") else { continue };
                    if state.is_some_and(|want| series.labels.get("state").is_none_or(|s| s != want)) {
                        continue;
                    }
                    if let Some(&(t1, v)) = series.points.last() {
                        let e = by_shard.entry(shard.clone()).or_insert((t1, v));
                        if t1 > e.0 {
                            *e = (t1, v);
                        }
                    }
                }
                by_shard
            };
            let ready = latest("millions_queue_jobs", Some("ready"));
            let oldest = latest("millions_queue_oldest_ready_seconds", None);
            if !ready.is_empty() {
                // Every DC's workers take from the same queues: this DC's share
                // is in proportion to its workers.
                let total: f64 = ready.values().map(|(_, v)| v).sum();
                let here = t.count(dc, Role::Worker) as f64;
                let all = t.nodes_of(Role::Worker).count().max(1) as f64;
                s.queue_depth = Some(total * here / all);
            }
            s.oldest_job_seconds = oldest.values().map(|(_, v)| *v).reduce(f64::max);
            at = ready.values().chain(oldest.values()).map(|(t, _)| *t).max().unwrap_or(0);
        }
    }
    s.at_ms = at;
    s
}

fn rfc3339(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// Follow every autoscaled range of the topology until shutdown: one decision
/// per interval, carried out when it changes the count.
pub(crate) async fn watch(shared: Shared) {
    let t = shared.topology();
    let mut tasks = vec![];
    for dc in t.dcs() {
        for role in SCALED {
            match policy(&t, &dc.name, role) {
                Ok(Some(p)) => tasks.push(tokio::spawn(follow(shared.clone(), dc.name.clone(), role, p))),
                Ok(None) => {}
                // Checked before start-up; a topology file edited since is logged.
                Err(e) => tracing::error!(error = %e, "not autoscaling"),
            }
        }
    }
    shared.shutdown.cancelled().await;
    for task in tasks {
        task.abort();
    }
}

async fn follow(shared: Shared, dc: String, role: Role, policy: Policy) {
    let current = shared.topology().count(&dc, role) as u32;
    let mut state = autoscale::State::new(current, now_ms());
    tracing::info!(dc, role = %role, min = policy.min, max = policy.max, "autoscaling");
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(policy.interval_ms as u64)) => {}
        }
        let t = shared.topology();
        let now = now_ms();
        // A count changed by hand is the count to decide from.
        let actual = t.count(&dc, role) as u32;
        if actual != state.current() {
            state = autoscale::State::new(actual, now);
        }
        let decision: Decision = state.step(&policy, &signal(&shared.dashboard, &t, &dc, role, now), now);
        let view = DecisionView {
            at: rfc3339(now),
            from: actual,
            to: decision.desired,
            reason: decision.to_string(),
        };
        shared.scaling.note(&dc, role, |v| {
            v.desired = Some(decision.desired);
            // A change stays shown until the next change.
            if decision.changes() || v.last_decision.as_ref().is_none_or(|d| d.from == d.to) {
                v.last_decision = Some(view);
            }
        });
        if decision.changes() {
            let why = format!("autoscaler: {decision}");
            if let Err(e) = scale_to(&shared, &dc, role, decision.desired, &why).await {
                tracing::error!(dc, role = %role, error = %e, "an autoscaling change failed");
                shared.cluster.record(Event::node(
                    "scale-failed",
                    &format!("{dc}-{role}"),
                    format!("{dc}'s {role} nodes to {}: {e}", decision.desired),
                ));
                // Decide again from what is there.
                state = autoscale::State::new(shared.topology().count(&dc, role) as u32, now_ms());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test preset with its first DC's web and worker sections replaced.
    fn with(web: &str, worker: &str) -> Result<Topology, String> {
        let text = topology::preset_text("test").unwrap();
        assert!(text.contains("web = { count = 1 }") && text.contains("worker = { count = 1 }"));
        let text = text.replacen("web = { count = 1 }", web, 1).replacen("worker = { count = 1 }", worker, 1);
        topology::parse(&text, "t").map_err(|e| e.to_string())
    }

    #[test]
    fn a_range_autoscales_with_the_tiers_defaults_and_its_overrides() {
        let t = with(
            "web = { count = 1, min = 1, max = 4 }",
            "worker = { count = 1, min = 1, max = 3, autoscale = { queue_depth_per_worker = 5, interval_ms = 1000, cooldown_ms = 2000, in_step = 2 } }",
        )
        .unwrap();
        let web = policy(&t, "dc1", Role::Web).unwrap().unwrap();
        assert_eq!((web.min, web.max), (1, 4));
        assert_eq!(web.targets, Policy::web().targets, "no target given: the defaults");
        assert_eq!(web.interval_ms, Policy::web().interval_ms);
        let worker = policy(&t, "dc1", Role::Worker).unwrap().unwrap();
        assert_eq!(
            worker.targets,
            [Target { metric: Metric::QueueDepthPerWorker, value: 5.0 }],
            "only those given"
        );
        assert_eq!((worker.interval_ms, worker.cooldown_ms, worker.in_step), (1000, 2000, 2));
        assert_eq!((worker.min, worker.max), (1, 3));
        check_policies(&t).unwrap();
        // Without a range: fixed, no policy.
        let t = with("web = { count = 1 }", "worker = { count = 1 }").unwrap();
        assert_eq!(policy(&t, "dc1", Role::Web).unwrap(), None);
        assert_eq!(policy(&t, "dc1", Role::Redis).unwrap(), None);
    }

    #[test]
    fn bad_overrides_are_refused_naming_the_dc_role_and_setting() {
        for (autoscale, says) in [
            ("cpu_per_server = 0", "the target of cpu_per_server must be a positive number"),
            ("queue_depth_per_worker = 3", "queue_depth_per_worker is not a metric of the web tier"),
            ("cpu_per_sever = 1", "cpu_per_sever is not an autoscaling setting"),
            ("interval_ms = \"1s\"", "interval_ms = \"1s\" is not a whole number of milliseconds"),
            ("interval_ms = 1.5", "is not a whole number"),
            ("in_step = -1", "in_step = -1 is out of range"),
            ("in_step = 0", "in_step must be at least 1"),
            ("tolerance = 1.5", "the tolerance must be in [0, 1)"),
            ("cooldown_ms = 10", "cooldown_ms (10 ms) is shorter than the decision interval"),
            ("cpu_per_server = \"high\"", "cpu_per_server = \"high\" is not a number"),
        ] {
            let t = with(
                &format!("web = {{ count = 1, min = 1, max = 2, autoscale = {{ {autoscale} }} }}"),
                "worker = { count = 1 }",
            )
            .unwrap();
            let e = check_policies(&t).unwrap_err().to_string();
            assert!(e.starts_with("dc1's web.autoscale: ") && e.contains(says), "{autoscale}: {e}");
        }
    }

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> crate::history::Sample {
        crate::history::Sample {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            value,
        }
    }

    #[test]
    fn the_signal_is_the_dcs_tier_as_the_history_has_it() {
        let t = with("web = { count = 2, min = 1, max = 4 }", "worker = { count = 1, min = 1, max = 2 }")
            .unwrap();
        let rec = Recorder::new(Default::default());
        let cpu = |v| [sample("host_cpu_seconds_total", &[], v)];
        // dc1-web-1 scraped twice, dc1-web-2 once: no CPU (a node with one
        // point would look idle).
        rec.record("dc1-web-1", cpu(10.0));
        rec.record("dc1-web-2", cpu(3.0));
        rec.record("dc1-web-1", cpu(10.5));
        let now = now_ms();
        assert_eq!(signal(&rec, &t, "dc1", Role::Web, now).cpu_cores, None);
        rec.record("dc1-web-2", cpu(3.5));
        let s = signal(&rec, &t, "dc1", Role::Web, now_ms());
        assert!(s.cpu_cores.is_some_and(|c| c > 0.0) && s.at_ms > 0, "{s:?}");
        // Requests in flight: the DC's load balancer's, to its web servers only.
        let web1 = t.node("dc1-web-1").unwrap().addr.to_string();
        let in_flight =
            |backend: &str, v| [sample("millions_lb_backend_in_flight", &[("backend", backend)], v)];
        rec.record("dc1-lb-1", in_flight(&web1, 7.0));
        rec.record("dc1-lb-1", in_flight("127.9.9.9:8080", 50.0));
        assert_eq!(signal(&rec, &t, "dc1", Role::Web, now_ms()).in_flight, Some(7.0));
        // The tier's p99, from the pseudo-node the scrape writes it to.
        rec.record(
            crate::history::SYSTEM,
            [sample("tier_request_duration_p99_seconds", &[("role", "web")], 0.2)],
        );
        assert_eq!(signal(&rec, &t, "dc1", Role::Web, now_ms()).p99_seconds, Some(0.2));

        // The queue: per shard, the latest report of any worker; the DC's share
        // in proportion to its workers (dc1 has the only one here).
        let queue = |shard, ready, oldest| {
            [
                sample("millions_queue_jobs", &[("shard", shard), ("state", "ready")], ready),
                sample("millions_queue_jobs", &[("shard", shard), ("state", "running")], 99.0),
                sample("millions_queue_oldest_ready_seconds", &[("shard", shard)], oldest),
            ]
        };
        rec.record("dc1-worker-1", queue("0", 40.0, 12.0));
        rec.record("dc1-worker-2", queue("0", 30.0, 8.0));
        let s = signal(&rec, &t, "dc1", Role::Worker, now_ms());
        assert_eq!(
            (s.queue_depth, s.oldest_job_seconds),
            (Some(30.0), Some(8.0)),
            "the latest report: {s:?}"
        );
        assert_eq!(signal(&rec, &t, "dc2", Role::Worker, now_ms()).cpu_cores, None);
        // Nothing recorded: no signal at all (not a load of zero).
        let empty = signal(&Recorder::new(Default::default()), &t, "dc1", Role::Worker, now_ms());
        assert_eq!((empty.queue_depth, empty.oldest_job_seconds, empty.at_ms), (None, None, 0));
    }

    #[test]
    fn only_web_and_worker_are_scaled_roles() {
        assert_eq!(scaled_role("web").unwrap(), Role::Web);
        assert_eq!(scaled_role("worker").unwrap(), Role::Worker);
        assert!(scaled_role("lb").unwrap_err().to_string().contains("only web and worker"));
        assert!(scaled_role("webs").unwrap_err().to_string().contains("unknown role"));
    }
}
