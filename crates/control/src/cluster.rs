//! Who is each shard's primary, which replicas serve reads, at which epoch:
//! the controller's decisions, kept in the run directory and published to
//! every web server and worker.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sharding::{BucketRange, ClusterMap, ShardServers};
use tokio::sync::watch;
use topology::Topology;

use crate::error::{Context as _, ControlError};

/// The decisions, as persisted in `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Raised at every change; what processes compare to ignore stale maps.
    pub epoch: u64,
    /// One entry per shard, in shard order.
    pub shards: Vec<ShardState>,
    /// Data centers declared lost (`millions chaos dc-down`, until `dc-up`): their
    /// nodes are not restarted, and their PostgreSQL members confirm no commit.
    #[serde(default)]
    pub lost_dcs: Vec<String>,
    /// Data centers cut off from the others on the WAN (`millions chaos wan-cut`,
    /// until `wan-heal`): a WAN gateway starting meanwhile starts cut.
    #[serde(default)]
    pub wan_cut: Vec<String>,
    /// Which shard owns each bucket, once a bucket has moved (`millions shard
    /// move`); until then the even split over the shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<Vec<BucketRange>>,
    /// The bucket moves under way, each with the step it reached: a restarted
    /// controller rolls back or finishes each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<MoveState>,
    /// The id the next move gets (ids are never reused: the shards record them).
    #[serde(default)]
    pub next_move: i64,
}

/// A bucket move under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveState {
    /// Its id, recorded on the shards beside its buckets and changes.
    pub id: i64,
    /// The buckets that move.
    pub buckets: Vec<u16>,
    /// The shard they leave.
    pub from: u16,
    /// The shard they go to.
    pub to: u16,
    /// The step reached.
    pub phase: MovePhase,
    /// When it started (RFC 3339, UTC).
    pub started: String,
    /// An operator asked to cancel it (`millions shard cancel`): it is rolled
    /// back after the step under way, unless that step was its fence.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
}

/// The steps of a move, in order. Up to `CatchUp` a move that stops is rolled
/// back; from `Fenced` on it can only be finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MovePhase {
    /// Capturing the buckets' changes on the source.
    Capture,
    /// Copying their rows to the target.
    Copy,
    /// Replaying the changes made meanwhile.
    CatchUp,
    /// Writes refused on the source for the cutover.
    Fenced,
    /// The directory names the target; the source's rows wait to be deleted.
    Published,
}

impl std::fmt::Display for MovePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MovePhase::Capture => "capture",
            MovePhase::Copy => "copy",
            MovePhase::CatchUp => "catch-up",
            MovePhase::Fenced => "fenced",
            MovePhase::Published => "published",
        })
    }
}

/// One shard's decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardState {
    /// The node that takes writes; `None` while a failover is under way.
    pub primary: Option<String>,
    /// Replicas currently streaming from the primary, which serve reads.
    pub replicas: Vec<String>,
    /// Whether a synchronous shard's primary already waits for its standbys
    /// (off only while the shard is first built: with no standby yet, every
    /// commit would wait).
    pub sync_active: bool,
    /// Added by `millions shard add` and still being built: not yet in the
    /// published map (no process routes to it), no bucket may move onto it.
    /// Only the last shards can be joining.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joining: bool,
}

impl ClusterState {
    /// How many shards the published map has: those before the first one still
    /// joining.
    pub fn published(&self) -> usize {
        self.shards.iter().take_while(|s| !s.joining).count()
    }
}

/// Something the controller did to a shard, a data center or a node, for
/// `millions status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// When it finished (RFC 3339, UTC).
    pub at: String,
    /// The shard; `None` for an event about a whole data center or a node of
    /// no shard.
    pub shard: Option<u16>,
    /// `failover`, `replica-lost`, `replica-back`, `replica-rebuilt`, `rejoined`,
    /// `primary-restarted`, the data center ones, `cert-renewed`; about a node:
    /// `killed`, `restarted`, `stopped`, `started` (by an operator, or
    /// `restarted` by the supervisor); `disk-low` (about `host`).
    pub kind: String,
    /// The node it is about (for a failover: the promoted one).
    pub node: String,
    /// In words.
    pub detail: String,
    /// For a failover: from the first failed probe to the confirmed loss, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection_ms: Option<u64>,
    /// For a failover: from the first failed probe to the new primary
    /// published, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_ms: Option<u64>,
}

/// What the published map is made from besides the decisions.
#[derive(Debug)]
struct Layout {
    /// Every PostgreSQL node's address, to turn names into the published map.
    addrs: HashMap<String, SocketAddr>,
    /// The topology: each node's DC, and where a node of one DC reaches it.
    topology: Topology,
}

impl Layout {
    fn of(topology: &Topology) -> Layout {
        let addrs =
            topology.nodes().iter().filter(|n| n.shard.is_some()).map(|n| (n.name.clone(), n.addr)).collect();
        Layout { addrs, topology: topology.clone() }
    }
}

/// A shard's decisions before it first started: its initial primary, nothing
/// streaming yet.
fn initial(topology: &Topology, shard: topology::ShardId, joining: bool) -> ShardState {
    ShardState {
        primary: Some(topology.initial_primary(shard).name.clone()),
        replicas: vec![],
        sync_active: false,
        joining,
    }
}

/// The decisions in memory, their file, and their publication.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// `cluster.json`: a restarted controller resumes from it instead of
    /// starting over (which would be a spurious failover).
    path: PathBuf,
    /// `events.jsonl`: the event log, appended.
    events_path: PathBuf,
    /// The topology's PostgreSQL nodes and the topology itself, replaced when a
    /// shard is added.
    layout: std::sync::RwLock<Layout>,
    /// The current decisions.
    state: Mutex<ClusterState>,
    /// Publishes the map; the API's long poll waits on it.
    tx: watch::Sender<ClusterMap>,
}

impl Cluster {
    /// The decisions kept in `run_dir`, or the topology's initial ones (then
    /// written there).
    pub(crate) fn load(run_dir: &Path, topology: &Topology) -> Result<Cluster, ControlError> {
        let path = run_dir.join("cluster.json");
        let (state, fresh) = match read_state(run_dir, topology)? {
            // More shards in the topology: `millions shard add` wrote the
            // topology and stopped before it recorded them here; they join now.
            Some(mut state) => {
                let grown = !grow(&mut state, topology).is_empty();
                (state, grown)
            }
            None => (
                ClusterState {
                    epoch: 1,
                    shards: topology.shards().iter().map(|s| initial(topology, s.id, false)).collect(),
                    lost_dcs: Vec::new(),
                    wan_cut: Vec::new(),
                    directory: None,
                    moves: Vec::new(),
                    next_move: 1,
                },
                true,
            ),
        };
        let layout = Layout::of(topology);
        let map = to_map(&state, &layout.addrs);
        let cluster = Cluster {
            path,
            events_path: run_dir.join("events.jsonl"),
            layout: std::sync::RwLock::new(layout),
            state: Mutex::new(state),
            tx: watch::Sender::new(map),
        };
        if fresh {
            cluster.persist(&cluster.snapshot())?;
        }
        Ok(cluster)
    }

    /// A copy of the current decisions.
    pub(crate) fn snapshot(&self) -> ClusterState {
        self.state.lock().expect("cluster lock poisoned").clone()
    }

    /// The data centers declared lost.
    pub(crate) fn lost_dcs(&self) -> Vec<String> {
        self.state.lock().expect("cluster lock poisoned").lost_dcs.clone()
    }

    /// The current primary of `shard`.
    pub(crate) fn primary(&self, shard: u16) -> Option<String> {
        self.state.lock().expect("cluster lock poisoned").shards[shard as usize].primary.clone()
    }

    /// Change the decisions with `f`; if anything changed, raise the epoch,
    /// write the file and publish. Returns the new epoch if it changed.
    pub(crate) fn update(&self, f: impl FnOnce(&mut ClusterState)) -> Result<Option<u64>, ControlError> {
        let mut state = self.state.lock().expect("cluster lock poisoned");
        let mut next = state.clone();
        f(&mut next);
        if next == *state {
            return Ok(None);
        }
        next.epoch = state.epoch + 1;
        self.persist(&next)?;
        *state = next;
        let map = to_map(&state, &self.layout.read().expect("layout lock poisoned").addrs);
        let epoch = map.epoch;
        self.tx.send_replace(map);
        Ok(Some(epoch))
    }

    /// Take `topology`, which adds shards to the one in force, and the decisions
    /// of its new shards: each joining, with its initial primary. The directory
    /// is written down first if it was the even split, so that the buckets stay
    /// where they are. Returns the new shards' ids.
    pub(crate) fn add_shards(&self, topology: &Topology) -> Result<Vec<u16>, ControlError> {
        // A superset of the addresses in force: the map published meanwhile is the same.
        *self.layout.write().expect("layout lock poisoned") = Layout::of(topology);
        let mut added = vec![];
        self.update(|state| added = grow(state, topology))?;
        Ok(added)
    }

    /// The published map.
    pub(crate) fn map(&self) -> ClusterMap {
        self.tx.borrow().clone()
    }

    /// The published map as the processes of data center `dc` use it: each
    /// shard's replicas in `dc` first (`near`), reads prefer them; every server of
    /// another DC at the address `dc` reaches it by (its WAN relay, with `[wan]`).
    pub(crate) fn map_for(&self, dc: &str) -> ClusterMap {
        let mut map = self.map();
        let state = self.snapshot();
        let layout = self.layout.read().expect("layout lock poisoned");
        let t = &layout.topology;
        let from_dc = |name: &String| t.node(name).map(|n| t.address_from(dc, n).to_string());
        for (servers, decided) in map.shards.iter_mut().zip(&state.shards) {
            if let Some(primary) = servers.primary.take() {
                // The map's primary, by its own address.
                let node = t.nodes().iter().find(|n| n.addr.to_string() == primary);
                servers.primary = Some(node.map_or(primary, |n| t.address_from(dc, n).to_string()));
            }
            let dc_of = |name: &String| t.node(name).map(|n| n.dc.as_str());
            let (mut near, far): (Vec<&String>, Vec<&String>) =
                decided.replicas.iter().partition(|r| dc_of(r) == Some(dc));
            let count = near.len();
            near.extend(far);
            servers.replicas = near.into_iter().filter_map(from_dc).collect();
            servers.near = Some(count);
        }
        map
    }

    /// A receiver that sees every new map.
    pub(crate) fn subscribe(&self) -> watch::Receiver<ClusterMap> {
        self.tx.subscribe()
    }

    fn persist(&self, state: &ClusterState) -> Result<(), ControlError> {
        let tmp = self.path.with_extension("json.tmp");
        crate::files::write_json(&tmp, state)?;
        std::fs::rename(&tmp, &self.path).file("writing", &self.path)
    }

    /// Append `event` to the log (and to the controller's own log).
    pub(crate) fn record(&self, mut event: Event) {
        event.at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        tracing::warn!(
            shard = event.shard,
            kind = event.kind,
            node = event.node,
            detection_ms = event.detection_ms,
            failover_ms = event.failover_ms,
            "{}",
            event.detail
        );
        let line = match serde_json::to_string(&event) {
            Ok(line) => line,
            Err(e) => return tracing::error!(error = %e, "encoding an event"),
        };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.events_path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            tracing::error!(error = %e, path = %self.events_path.display(), "writing the event log");
        }
    }

    /// Every recorded event, oldest first.
    pub(crate) fn events(&self) -> Vec<Event> {
        read_events(&self.events_path)
    }
}

/// The decisions kept in `run_dir`, if any (read only: the controller is the
/// one writer).
pub(crate) fn read_state(run_dir: &Path, topology: &Topology) -> Result<Option<ClusterState>, ControlError> {
    let path = run_dir.join("cluster.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).file("reading", &path),
    };
    let state: ClusterState = serde_json::from_str(&text).map_err(|source| ControlError::Json {
        what: "reading",
        path: path.clone(),
        source,
    })?;
    if state.shards.len() > topology.shards().len() {
        return Err(ControlError::Invalid(format!(
            "{} describes {} shards but the topology has {}",
            path.display(),
            state.shards.len(),
            topology.shards().len()
        )));
    }
    if let Some(ranges) = &state.directory {
        sharding::ShardMap::from_ranges(state.epoch, state.shards.len(), ranges).map_err(|e| {
            ControlError::Invalid(format!("{}: its bucket directory is not whole: {e}", path.display()))
        })?;
    }
    Ok(Some(state))
}

/// The events of a run directory's log (unreadable lines are skipped).
fn read_events(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

impl Event {
    /// An event of `kind` about `node` of `shard`.
    pub(crate) fn new(shard: u16, kind: &str, node: &str, detail: String) -> Event {
        Event::about(Some(shard), kind, node, detail)
    }

    /// An event of `kind` about a whole data center (named as `node`).
    pub(crate) fn dc(kind: &str, dc: &str, detail: String) -> Event {
        Event::about(None, kind, dc, detail)
    }

    /// An event of `kind` about `node`, of no shard (a load balancer's
    /// certificate renewed).
    pub(crate) fn node(kind: &str, node: &str, detail: String) -> Event {
        Event::about(None, kind, node, detail)
    }

    fn about(shard: Option<u16>, kind: &str, node: &str, detail: String) -> Event {
        Event {
            at: String::new(),
            shard,
            kind: kind.to_owned(),
            node: node.to_owned(),
            detail,
            detection_ms: None,
            failover_ms: None,
        }
    }
}

/// Give `state` a joining shard for each shard of `topology` it lacks, the
/// directory written down first if it was the even split; returns their ids.
fn grow(state: &mut ClusterState, topology: &Topology) -> Vec<u16> {
    let known = state.shards.len();
    if topology.shards().len() <= known {
        return vec![];
    }
    if state.directory.is_none()
        && let Ok(even) = sharding::ShardMap::even(known)
    {
        state.directory = Some(even.ranges());
    }
    let new = &topology.shards()[known..];
    state.shards.extend(new.iter().map(|s| initial(topology, s.id, true)));
    new.iter().map(|s| s.id.0).collect()
}

fn to_map(state: &ClusterState, addrs: &HashMap<String, SocketAddr>) -> ClusterMap {
    let addr = |name: &String| addrs.get(name).map(|a| a.to_string());
    ClusterMap {
        epoch: state.epoch,
        shards: state
            .shards
            .iter()
            .take(state.published())
            .map(|s| ShardServers {
                near: None,
                primary: s.primary.as_ref().and_then(addr),
                replicas: s.replicas.iter().filter_map(addr).collect(),
            })
            .collect(),
        directory: state.directory.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        topology::parse(topology::preset_text("test").unwrap(), "preset test").unwrap()
    }

    #[test]
    fn starts_from_the_topology_then_resumes_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let t = topology();
        let cluster = Cluster::load(dir.path(), &t).unwrap();
        let state = cluster.snapshot();
        assert_eq!(state.epoch, 1);
        assert_eq!(state.shards[0].primary.as_deref(), Some("shard0-pg-1"));
        let mut rx = cluster.subscribe();

        // No change, no new epoch.
        assert_eq!(cluster.update(|_| {}).unwrap(), None);
        let epoch = cluster.update(|s| s.shards[0].primary = Some("shard0-pg-2".into())).unwrap();
        assert_eq!(epoch, Some(2));
        assert!(rx.has_changed().unwrap());
        let map = rx.borrow_and_update().clone();
        assert_eq!(map.epoch, 2);
        assert_eq!(map.shards[0].primary.as_deref(), Some("127.0.202.100:5432"));

        // A new controller resumes: same primary, same epoch.
        let again = Cluster::load(dir.path(), &t).unwrap();
        assert_eq!(again.snapshot(), cluster.snapshot());
        assert_eq!(read_state(dir.path(), &t).unwrap(), Some(cluster.snapshot()));
    }

    #[test]
    fn each_dc_gets_the_map_with_its_own_replicas_first() {
        let dir = tempfile::tempdir().unwrap();
        let t = topology();
        let cluster = Cluster::load(dir.path(), &t).unwrap();
        cluster.update(|s| s.shards[0].replicas = vec!["shard0-pg-2".into()]).unwrap();
        let replica = t.node("shard0-pg-2").unwrap().addr.to_string();
        let dc2 = cluster.map_for("dc2");
        assert_eq!((dc2.shards[0].replicas.clone(), dc2.shards[0].near), (vec![replica.clone()], Some(1)));
        let dc1 = cluster.map_for("dc1");
        assert_eq!((dc1.shards[0].replicas.clone(), dc1.shards[0].near), (vec![replica], Some(0)));
        assert_eq!(dc1.epoch, cluster.map().epoch);
        assert_eq!(cluster.map().shards[0].near, None, "the map of no DC prefers none");
    }

    #[test]
    fn a_damaged_or_foreign_state_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let t = topology();
        let path = dir.path().join("cluster.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = format!("{:#}", Cluster::load(dir.path(), &t).unwrap_err());
        assert!(err.contains("cluster.json"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{not json");

        let two = r#"{"epoch": 3, "shards": [{"primary": null, "replicas": [], "sync_active": false},
                                              {"primary": null, "replicas": [], "sync_active": false}]}"#;
        std::fs::write(&path, two).unwrap();
        let err = format!("{:#}", Cluster::load(dir.path(), &t).unwrap_err());
        assert!(err.contains("2 shards but the topology has 1"), "{err}");
    }

    #[test]
    fn an_added_shard_joins_unpublished_and_no_bucket_changes_owner() {
        let dir = tempfile::tempdir().unwrap();
        let two = topology::preset("default").unwrap();
        let cluster = Cluster::load(dir.path(), &two).unwrap();
        let before = cluster.map();
        assert_eq!((before.shards.len(), before.directory.clone()), (2, None));
        let even = sharding::ShardMap::even(2).unwrap();

        let text = format!(
            "{}\n[[shard]]\nprimary = \"dc1\"\nreplicas = [\"dc2\"]\nsurvives = \"dc\"\n",
            topology::preset_text("default").unwrap()
        );
        let three = topology::parse(&text, "test").unwrap();
        assert_eq!(cluster.add_shards(&three).unwrap(), [2]);
        let state = cluster.snapshot();
        assert!(state.shards[2].joining && !state.shards[1].joining);
        assert_eq!(state.shards[2].primary.as_deref(), Some("shard2-pg-1"));
        assert_eq!(state.published(), 2);
        // Published: the same two shards, the directory written down as it was.
        let map = cluster.map();
        assert_eq!(map.shards.len(), 2);
        assert!(map.epoch > before.epoch);
        assert_eq!(map.directory.as_deref(), Some(even.ranges().as_slice()));
        // Adding what is there adds nothing.
        assert!(cluster.add_shards(&three).unwrap().is_empty());

        // Once it is built it joins the map.
        cluster.update(|s| s.shards[2].joining = false).unwrap();
        assert_eq!(cluster.map().shards.len(), 3);
        let directory =
            sharding::ShardMap::from_ranges(1, 3, cluster.map().directory.as_ref().unwrap()).unwrap();
        assert!(directory.buckets_of(sharding::ShardId(2)).is_empty());
    }

    #[test]
    fn a_topology_written_before_its_shard_was_recorded_adds_the_shard_as_joining() {
        let dir = tempfile::tempdir().unwrap();
        let two = topology::preset("default").unwrap();
        let epoch = Cluster::load(dir.path(), &two).unwrap().map().epoch;
        // `millions shard add` wrote the topology, then the controller died.
        let text = format!(
            "{}\n[[shard]]\nprimary = \"dc2\"\nreplicas = [\"dc1\"]\n",
            topology::preset_text("default").unwrap()
        );
        let three = topology::parse(&text, "test").unwrap();
        let again = Cluster::load(dir.path(), &three).unwrap();
        let state = again.snapshot();
        assert_eq!((state.shards.len(), state.published()), (3, 2));
        assert!(state.shards[2].joining);
        assert!(state.directory.is_some(), "the even split over two, written down");
        assert_eq!(again.map().shards.len(), 2);
        // Kept: a third controller reads the same.
        assert_eq!(read_state(dir.path(), &three).unwrap().unwrap(), state);
        assert!(state.epoch >= epoch);
        // A topology with fewer shards than the decisions is refused.
        let one = topology::preset("test").unwrap();
        let err = Cluster::load(dir.path(), &one).unwrap_err().to_string();
        assert!(err.contains("3 shards but the topology has 1"), "{err}");
    }

    #[test]
    fn events_are_appended_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::load(dir.path(), &topology()).unwrap();
        assert!(cluster.events().is_empty());
        let mut e = Event::new(0, "failover", "shard0-pg-2", "promoted".into());
        e.failover_ms = Some(512);
        cluster.record(e);
        cluster.record(Event::new(0, "rejoined", "shard0-pg-1", "rewound".into()));
        let events = cluster.events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].failover_ms, Some(512));
        assert_eq!(events[1].kind, "rejoined");
        assert!(events[0].at.ends_with('Z'), "{}", events[0].at);
    }
}
