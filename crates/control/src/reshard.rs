//! Moving buckets between shards while they take writes (`millions shard move
//! BUCKETS --to SHARD`; ADR 0020): the controller drives `data::moves`' steps on
//! the source's and the target's current primaries, keeps the step reached in
//! `cluster.json`, and publishes the new directory at the cutover.
//!
//! Up to the catch-up, a move that fails (or whose controller died) is rolled
//! back: the target's copies deleted, the source's capture lifted. From the
//! fence on it can only go forward, and is retried until it is done: its
//! buckets' writes wait meanwhile (and fail retryably after the data layer's
//! wait). A primary that fails over mid-move is simply reconnected to: with the
//! durable topology a failover loses no commit, of the application or of the
//! move.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use data::moves::{self, Client, Move, MoveError};
use serde::Serialize;
use sharding::{BUCKETS, Bucket, ShardId, ShardMap};
use topology::Role;

use crate::cluster::{ClusterState, Event, MovePhase, MoveState};
use crate::configs::pg_spec;
use crate::error::ControlError;
use crate::pgadmin;
use crate::shared::{DATABASE, Shared};

/// How long a step waits for transactions older than it (capture, fence).
const OLDER_TRANSACTIONS: Duration = Duration::from_secs(30);
/// How long a failing step is retried before a move that may still roll back is
/// rolled back.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// Catch-up rounds before the fence: the fence is taken once what is left is
/// under [`FENCE_BELOW`] changes, or after this many rounds.
const CATCH_UP_ROUNDS: usize = 20;
/// The captured changes under which the fence is taken.
const FENCE_BELOW: u64 = 500;
/// How long the controller waits for every web server and worker to route by
/// the new directory before the source's rows are deleted.
const FOLLOW_WAIT: Duration = Duration::from_secs(30);
/// How long the controller waits for the target's read replicas to replay what
/// the move wrote there, before its fence and again before it publishes.
const REPLICAS_WAIT: Duration = Duration::from_secs(10);

/// What a finished move did, for the CLI.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MoveReport {
    /// The move's id.
    pub(crate) id: i64,
    /// How many buckets moved.
    pub(crate) buckets: usize,
    /// The shard they left.
    pub(crate) from: u16,
    /// The shard they went to.
    pub(crate) to: u16,
    /// Rows copied, then rewritten by the catch-up.
    pub(crate) rows: u64,
    /// Queued jobs moved at the cutover.
    pub(crate) jobs: u64,
    /// From the fence to the new directory published: how long the buckets'
    /// writes waited, in milliseconds (unknown for a move a restarted
    /// controller finished).
    pub(crate) write_pause_ms: Option<u64>,
    /// The whole move, in milliseconds.
    pub(crate) took_ms: u64,
    /// The epoch of the map naming the new owner.
    pub(crate) epoch: u64,
}

/// Check a request to move `buckets` to shard `to` against the decisions in
/// force: the source shard they all come from, and the buckets without repeats.
/// Refuses, naming the first problem: a bad request (no bucket, a bucket out of
/// range, an unknown shard, a bucket already on `to`, buckets of several
/// shards), or a conflict (a bucket another move holds).
pub(crate) fn check(state: &ClusterState, buckets: &[u16], to: u16) -> Result<(u16, Vec<u16>), ControlError> {
    let refuse = |why: String| Err(ControlError::BadRequest(why));
    let shards = state.published();
    if buckets.is_empty() {
        return refuse("no bucket to move".into());
    }
    if let Some(b) = buckets.iter().find(|b| **b >= BUCKETS) {
        return refuse(format!("bucket {b} is out of range: buckets are 0 to {}", BUCKETS - 1));
    }
    if usize::from(to) >= state.shards.len() {
        return refuse(format!("there is no shard {to}: the shards are 0 to {}", state.shards.len() - 1));
    }
    if usize::from(to) >= shards {
        return Err(ControlError::Refused(format!(
            "shard {to} is still joining: `millions shard add` finishes adding it"
        )));
    }
    let directory = directory(state)?;
    let unique: Vec<u16> = buckets.iter().copied().collect::<BTreeSet<u16>>().into_iter().collect();
    let owner = |b: u16| directory.shard_of_bucket(Bucket::new(b).expect("checked above")).0;
    if let Some(b) = unique.iter().find(|b| owner(**b) == to) {
        return refuse(format!("bucket {b} is already on shard {to}"));
    }
    let sources: BTreeSet<u16> = unique.iter().map(|b| owner(*b)).collect();
    if sources.len() > 1 {
        let list: Vec<String> = sources.iter().map(u16::to_string).collect();
        return refuse(format!(
            "the buckets are on shards {}: move the buckets of one shard at a time",
            list.join(" and ")
        ));
    }
    for m in &state.moves {
        if let Some(b) = unique.iter().find(|b| m.buckets.contains(b)) {
            let why = format!("bucket {b} is being moved already (move {}, {})", m.id, m.phase);
            return Err(ControlError::Refused(why));
        }
    }
    let from = *sources.iter().next().expect("at least one bucket");
    Ok((from, unique))
}

/// The directory in force: the published one, or the even split.
pub(crate) fn directory(state: &ClusterState) -> Result<ShardMap, ControlError> {
    let map = match &state.directory {
        Some(ranges) => ShardMap::from_ranges(state.epoch, state.published(), ranges),
        None => ShardMap::even(state.published()),
    };
    map.map_err(|e| ControlError::Invalid(format!("the bucket directory in cluster.json: {e}")))
}

/// Move `buckets` to shard `to`: checked, recorded, then run to its end.
pub(crate) async fn start(shared: &Shared, buckets: &[u16], to: u16) -> Result<MoveReport, ControlError> {
    let mut planned = None;
    let mut refused = None;
    shared.cluster.update(|state| match check(state, buckets, to) {
        Ok((from, buckets)) => {
            let id = state.next_move.max(1);
            state.next_move = id + 1;
            let started = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            state.moves.push(MoveState {
                id,
                buckets,
                from,
                to,
                phase: MovePhase::Capture,
                started,
                cancel: false,
            });
            planned = Some(id);
        }
        Err(e) => refused = Some(e),
    })?;
    if let Some(e) = refused {
        return Err(e);
    }
    let id = planned.expect("either planned or refused");
    run(shared, id).await
}

/// What `millions shard rebalance` evens out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Weight {
    /// Every bucket counts the same.
    Buckets,
    /// A bucket weighs the rows of its users (every table), counted on the shards.
    Rows,
    /// A bucket weighs the queries every web server and worker sent for it
    /// over a window ([`measure_load`]).
    Load,
}

/// The longest window `rebalance --by load` measures over.
const MAX_LOAD_WINDOW: Duration = Duration::from_secs(600);

/// Each bucket's load: the queries (reads and writes) every running web server
/// and worker sent for it during `window`, from their `/internal/bucket-load`
/// counts read at its start and its end. A process that answered only at the
/// end (started meanwhile) or whose counts went down (restarted) counts what it
/// has. Refused when no process answers or nothing was measured.
pub(crate) async fn measure_load(shared: &Shared, window: Duration) -> Result<Vec<u64>, ControlError> {
    let before = sample_load(shared).await?;
    tokio::select! {
        _ = shared.shutdown.cancelled() => return Err(ControlError::ShutDown),
        _ = tokio::time::sleep(window) => {}
    }
    let after = sample_load(shared).await?;
    let mut load = vec![0u64; usize::from(BUCKETS)];
    for (node, counts) in &after {
        let earlier = before.get(node);
        for (bucket, n) in counts {
            let then = earlier.and_then(|e| e.get(bucket)).copied().unwrap_or(0);
            let since = if *n >= then { n - then } else { *n };
            if let Some(w) = load.get_mut(usize::from(*bucket)) {
                *w += since;
            }
        }
    }
    if load.iter().all(|w| *w == 0) {
        return Err(ControlError::Refused(format!(
            "no query was measured in {}: no load to even out",
            humantime::format_duration(window)
        )));
    }
    Ok(load)
}

/// Every running web server's and worker's per-bucket query counts (reads plus
/// writes), by node.
async fn sample_load(shared: &Shared) -> Result<HashMap<String, HashMap<u16, u64>>, ControlError> {
    #[derive(serde::Deserialize)]
    struct Counts {
        /// (bucket, reads, writes).
        buckets: Vec<(u16, u64, u64)>,
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ControlError::Invalid(format!("an HTTP client: {e}")))?;
    let topology = shared.topology();
    let mut asks = vec![];
    for node in topology.nodes().iter().filter(|n| matches!(n.role, Role::Web | Role::Worker)) {
        if !shared.running(&node.name).await {
            continue;
        }
        let url = format!("http://{}/internal/bucket-load", crate::launch::readyz_addr(node));
        let client = client.clone();
        asks.push(async move {
            let counts =
                async { client.get(&url).send().await?.error_for_status()?.json::<Counts>().await }.await;
            (node.name.clone(), counts)
        });
    }
    let mut out = HashMap::new();
    for (name, counts) in futures::future::join_all(asks).await {
        match counts {
            Ok(c) => {
                out.insert(name, c.buckets.into_iter().map(|(b, r, w)| (b, r + w)).collect());
            }
            Err(e) => tracing::warn!(node = name, error = %e, "no bucket load from this node"),
        }
    }
    if out.is_empty() {
        return Err(ControlError::Refused("no web server or worker answered with its bucket load".into()));
    }
    Ok(out)
}

/// One move a rebalance plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Planned {
    /// The buckets.
    pub(crate) buckets: Vec<u16>,
    /// From the heaviest shard of the moment.
    pub(crate) from: u16,
    /// To the lightest.
    pub(crate) to: u16,
}

/// The moves that even the shards' weights out, at most `batch` buckets each and
/// at most `max_moves` of them: each from the heaviest shard to the lightest, of
/// the heaviest shard's buckets that fit in half the gap between them (so no
/// move overshoots), until no bucket fits. Pure.
pub(crate) fn plan_rebalance(
    directory: &ShardMap,
    weight: &dyn Fn(u16) -> u64,
    batch: usize,
    max_moves: usize,
) -> Vec<Planned> {
    let mut owner: Vec<u16> =
        (0..BUCKETS).map(|b| directory.shard_of_bucket(Bucket::new(b).expect("in range")).0).collect();
    let shards = directory.shard_count();
    let mut plan = vec![];
    while plan.len() < max_moves {
        let mut load = vec![0u64; shards];
        for (b, s) in owner.iter().enumerate() {
            load[usize::from(*s)] += weight(b as u16);
        }
        let heavy = (0..shards).max_by_key(|s| (load[*s], std::cmp::Reverse(*s))).expect("a shard");
        let light = (0..shards).min_by_key(|s| (load[*s], *s)).expect("a shard");
        let mut room = (load[heavy] - load[light]) / 2;
        let mut buckets = vec![];
        for b in 0..BUCKETS {
            if buckets.len() == batch {
                break;
            }
            let w = weight(b);
            if usize::from(owner[usize::from(b)]) == heavy && w > 0 && w <= room {
                room -= w;
                buckets.push(b);
            }
        }
        if buckets.is_empty() {
            break;
        }
        for b in &buckets {
            owner[usize::from(*b)] = light as u16;
        }
        plan.push(Planned { buckets, from: heavy as u16, to: light as u16 });
    }
    plan
}

/// `millions shard rebalance`: the moves [`plan_rebalance`] gives, run one after
/// the other; their reports. Stops at the first that fails.
pub(crate) async fn rebalance(
    shared: &Shared,
    by: Weight,
    batch: usize,
    max_moves: usize,
    window: Duration,
) -> Result<Vec<MoveReport>, ControlError> {
    if by == Weight::Load && (window.is_zero() || window > MAX_LOAD_WINDOW) {
        return Err(ControlError::BadRequest(format!(
            "a load window is more than 0 s and at most {} s",
            MAX_LOAD_WINDOW.as_secs()
        )));
    }
    if batch == 0 || batch > usize::from(BUCKETS) {
        return Err(ControlError::BadRequest(format!("a batch is 1 to {BUCKETS} buckets, not {batch}")));
    }
    if max_moves == 0 {
        return Err(ControlError::BadRequest("at most 0 moves moves nothing".into()));
    }
    let state = shared.cluster.snapshot();
    if let Some(m) = state.moves.first() {
        return Err(ControlError::Refused(format!(
            "move {} is under way ({}); rebalance after it",
            m.id, m.phase
        )));
    }
    let directory = directory(&state)?;
    let weights: Vec<u64> = match by {
        Weight::Buckets => vec![1; usize::from(BUCKETS)],
        Weight::Rows => {
            let mut w = vec![0; usize::from(BUCKETS)];
            for shard in 0..state.published() as u16 {
                let client = connect(shared, shard).await.map_err(ControlError::Refused)?;
                let rows = moves::rows_by_bucket(&client)
                    .await
                    .map_err(|e| ControlError::Refused(format!("counting shard {shard}'s rows: {e}")))?;
                for (b, n) in rows {
                    // Only the owner's rows count (a source keeps none once a move is done).
                    if directory.shard_of_bucket(Bucket::new(b).expect("in range")).0 == shard {
                        w[usize::from(b)] = n;
                    }
                }
            }
            w
        }
        Weight::Load => measure_load(shared, window).await?,
    };
    let plan = plan_rebalance(&directory, &|b| weights[usize::from(b)], batch, max_moves);
    let mut reports = vec![];
    for planned in plan {
        reports.push(start(shared, &planned.buckets, planned.to).await?);
    }
    Ok(reports)
}

/// What `millions shard isolate` did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Isolated {
    /// The user's bucket.
    pub(crate) bucket: u16,
    /// The users who share it, and so moved with the user (the user included).
    pub(crate) bucket_mates: Vec<String>,
    /// The move.
    pub(crate) moved: MoveReport,
}

/// Where `isolate` moves a user's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IsolateTo {
    /// A shard of the topology.
    Shard(u16),
    /// A shard added for it first (placed like the last one): the user's bucket
    /// is then its only one.
    NewShard,
}

/// `millions shard isolate USERNAME --to SHARD|new`: the user's bucket moved to
/// `to`, with the users who share it, who are listed. The user is looked up
/// before anything changes (no shard is added for a user who does not exist).
pub(crate) async fn isolate(
    shared: &Shared,
    username: &str,
    to: IsolateTo,
) -> Result<Isolated, ControlError> {
    let name = username.trim().to_lowercase();
    if name.is_empty() {
        return Err(ControlError::BadRequest("no username".into()));
    }
    let bucket = sharding::username_bucket(&name);
    let state = shared.cluster.snapshot();
    let owner = directory(&state)?.shard_of_bucket(bucket).0;
    let client = connect(shared, owner).await.map_err(ControlError::Refused)?;
    let mates = moves::usernames_in(&client, bucket)
        .await
        .map_err(|e| ControlError::Refused(format!("listing bucket {}'s users: {e}", bucket.get())))?;
    if !mates.contains(&name) {
        return Err(ControlError::BadRequest(format!("no user named {name:?}")));
    }
    let to = match to {
        IsolateTo::Shard(n) => n,
        IsolateTo::NewShard => crate::grow::add(shared, &crate::grow::AddRequest::default()).await?.shard,
    };
    let moved = start(shared, &[bucket.get()], to).await?;
    Ok(Isolated { bucket: bucket.get(), bucket_mates: mates, moved })
}

/// At the controller's start: each move left by the previous one rolled back
/// (if it had not reached its fence) or finished.
pub(crate) async fn resume(shared: Shared) {
    for m in shared.cluster.snapshot().moves {
        let outcome = if m.phase < MovePhase::Fenced {
            roll_back(&shared, &m, "the controller restarted during the move").await
        } else {
            run(&shared, m.id).await.map(|_| ())
        };
        if let Err(e) = outcome {
            tracing::error!(id = m.id, error = %e, "resuming a bucket move");
        }
    }
}

/// Run move `id` from the step it reached to its end.
async fn run(shared: &Shared, id: i64) -> Result<MoveReport, ControlError> {
    let started = Instant::now();
    let mut report = None;
    let mut rows = 0;
    let mut jobs = 0;
    let mut fenced_at = None;
    let mut write_pause_ms = None;
    // Kept from the wait before the fence to the one after it.
    let mut watch: Option<ReplicaWatch> = None;
    // What the fenced step spent where, for its event.
    let mut parts = String::new();
    loop {
        let Some(m) = shared.cluster.snapshot().moves.into_iter().find(|m| m.id == id) else {
            return report.ok_or_else(|| ControlError::Refused(format!("move {id} is not under way")));
        };
        let spec =
            Move { id, buckets: m.buckets.iter().map(|b| Bucket::new(*b).expect("checked")).collect() };
        hold(shared, id, m.phase).await;
        let m = match shared.cluster.snapshot().moves.into_iter().find(|m| m.id == id) {
            Some(m) if m.cancel && m.phase < MovePhase::Fenced => {
                roll_back(shared, &m, "cancelled").await?;
                return Err(ControlError::Refused(format!("move {id} was cancelled and rolled back")));
            }
            Some(m) => m,
            None => continue,
        };
        let step_started = Instant::now();
        let next = match m.phase {
            MovePhase::Capture => step(shared, &m, |c| {
                let spec = spec.clone();
                async move { moves::begin_capture(&c.source, &spec, OLDER_TRANSACTIONS).await }
            })
            .await
            .map(|()| MovePhase::Copy),
            MovePhase::Copy => step(shared, &m, |mut c| {
                let spec = spec.clone();
                async move { moves::copy(&mut c.source, &mut c.target, &spec).await }
            })
            .await
            .map(|copied| {
                rows += copied.rows;
                MovePhase::CatchUp
            }),
            MovePhase::CatchUp => {
                let caught = step(shared, &m, |mut c| {
                    let spec = spec.clone();
                    async move {
                        let mut rows = 0;
                        for _ in 0..CATCH_UP_ROUNDS {
                            rows += moves::catch_up(&mut c.source, &mut c.target, &spec).await?.rows;
                            if moves::backlog(&c.source, &spec).await? < FENCE_BELOW {
                                break;
                            }
                        }
                        Ok(rows)
                    }
                })
                .await;
                if caught.is_ok() {
                    // The copy reaches the target's replicas before the fence, so
                    // that the wait after it (writes paused) is short; the
                    // connections stay open for that wait.
                    let w = ReplicaWatch::open(shared, m.to).await;
                    w.replayed(m.to).await;
                    watch = Some(w);
                }
                caught.map(|n| {
                    rows += n;
                    MovePhase::Fenced
                })
            }
            MovePhase::Fenced => {
                // Connections are made before the fence: the pause starts with
                // the fence's statement (the first attempt's, if one is retried).
                let watch = match watch.take() {
                    Some(w) => w,
                    None => ReplicaWatch::open(shared, m.to).await,
                };
                let first_fence = std::sync::OnceLock::new();
                let done = forward(shared, &m, |mut c| {
                    let (spec, first_fence) = (spec.clone(), &first_fence);
                    async move {
                        let t0 = *first_fence.get_or_init(Instant::now);
                        let fenced = Instant::now();
                        moves::fence(&c.source, &spec, OLDER_TRANSACTIONS).await?;
                        let t1 = Instant::now();
                        let rows = moves::catch_up(&mut c.source, &mut c.target, &spec).await?.rows;
                        let t2 = Instant::now();
                        let jobs = moves::move_jobs(&mut c.source, &mut c.target, &spec).await?;
                        let t3 = Instant::now();
                        moves::adopt(&c.target, &spec).await?;
                        let ms = |a: Instant, b: Instant| b.duration_since(a).as_millis();
                        let parts = format!(
                            "fence {} ms, catch-up {} ms, jobs {} ms, adopt {} ms",
                            ms(fenced, t1),
                            ms(t1, t2),
                            ms(t2, t3),
                            ms(t3, Instant::now())
                        );
                        Ok((rows, jobs, t0, parts))
                    }
                })
                .await?;
                rows += done.0;
                jobs += done.1;
                fenced_at.get_or_insert(done.2);
                // Reads of the buckets go to the target's replicas from the
                // publication on: they must hold the rows first.
                let waited = Instant::now();
                watch.replayed(m.to).await;
                parts = format!("{}, replicas {} ms", done.3, waited.elapsed().as_millis());
                Ok(MovePhase::Published)
            }
            MovePhase::Published => {
                let epoch = shared.cluster.snapshot().epoch;
                wait_for_followers(shared, epoch).await;
                let deleted = forward(shared, &m, |mut c| {
                    let spec = spec.clone();
                    async move { moves::drop_source(&mut c.source, &spec).await }
                })
                .await?;
                shared.cluster.update(|s| s.moves.retain(|x| x.id != id))?;
                let r = MoveReport {
                    id,
                    buckets: m.buckets.len(),
                    from: m.from,
                    to: m.to,
                    rows,
                    jobs,
                    write_pause_ms,
                    took_ms: started.elapsed().as_millis() as u64,
                    epoch,
                };
                shared.cluster.record(Event::new(
                    m.to,
                    "bucket-move",
                    &format!("shard{}", m.to),
                    format!(
                        "move {id}: {} buckets from shard {} to shard {} ({rows} rows copied, {jobs} jobs, \
                         {deleted} rows deleted from the source; writes paused {}, took {} ms)",
                        m.buckets.len(),
                        m.from,
                        m.to,
                        write_pause_ms.map_or("an unknown time (resumed)".into(), |ms| format!("{ms} ms")),
                        r.took_ms
                    ),
                ));
                report = Some(r);
                continue;
            }
        };
        let phase = match next {
            Ok(phase) => phase,
            Err(e) if m.phase < MovePhase::Fenced => {
                let why = e.to_string();
                if let Err(again) = roll_back(shared, &m, &why).await {
                    tracing::error!(id, error = %again, "rolling back a bucket move; the next controller start retries");
                }
                return Err(ControlError::Refused(format!("move {id} failed and was rolled back: {why}")));
            }
            Err(e) => return Err(e),
        };
        if phase == MovePhase::Published {
            // The cutover: the directory names the target from this epoch.
            let mut published = Ok(());
            shared.cluster.update(|s| match directory(s) {
                Ok(d) => match d.with_moved(&spec.buckets, ShardId(m.to), s.epoch + 1) {
                    Ok(next) => {
                        s.directory = Some(next.ranges());
                        set_phase(s, id, MovePhase::Published);
                    }
                    Err(e) => published = Err(ControlError::Invalid(e.to_string())),
                },
                Err(e) => published = Err(e),
            })?;
            published?;
            write_pause_ms = fenced_at.map(|f| f.elapsed().as_millis() as u64);
        } else {
            shared.cluster.update(|s| set_phase(s, id, phase))?;
        }
        let ms = step_started.elapsed().as_millis();
        shared.cluster.record(Event::new(
            m.from,
            "bucket-move-step",
            &format!("shard{}", m.from),
            format!(
                "move {id}: {} done in {ms} ms; next: {phase}{}",
                m.phase,
                if parts.is_empty() { String::new() } else { format!(" ({})", std::mem::take(&mut parts)) }
            ),
        ));
    }
}

/// For drills: with [`crate::files::HOLD_VAR`] set, wait before running `phase` while
/// [`crate::files::HOLD_FILE`] names it (or until the controller stops, or move `id` is
/// cancelled).
async fn hold(shared: &Shared, id: i64, phase: MovePhase) {
    if std::env::var(crate::files::HOLD_VAR).is_err() {
        return;
    }
    let file = shared.opts.run_dir.join(crate::files::HOLD_FILE);
    let named = || std::fs::read_to_string(&file).is_ok_and(|s| s.trim() == phase.to_string());
    if named() {
        tracing::warn!(%phase, file = %file.display(), "a bucket move holds for a drill");
    }
    let cancelled = || shared.cluster.snapshot().moves.iter().any(|m| m.id == id && m.cancel);
    while named() && !shared.shutdown.is_cancelled() && !cancelled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Record that move `id` reached `phase` — but a cancelled move does not reach
/// its fence: it stays before it, to be rolled back.
fn set_phase(state: &mut ClusterState, id: i64, phase: MovePhase) {
    if let Some(m) = state.moves.iter_mut().find(|m| m.id == id)
        && !(m.cancel && phase >= MovePhase::Fenced && m.phase < MovePhase::Fenced)
    {
        m.phase = phase;
    }
}

/// `millions shard cancel ID`: ask move `id` to roll back after the step under
/// way. Refused for a move that is not under way, or past its fence (it can only
/// finish).
pub(crate) fn cancel(shared: &Shared, id: i64) -> Result<String, ControlError> {
    let mut outcome = Err(ControlError::BadRequest(format!("no move {id} is under way")));
    shared.cluster.update(|s| {
        if let Some(m) = s.moves.iter_mut().find(|m| m.id == id) {
            if m.phase >= MovePhase::Fenced {
                outcome = Err(ControlError::Refused(format!(
                    "move {id} is past its fence ({}): it can only finish",
                    m.phase
                )));
            } else {
                m.cancel = true;
                outcome = Ok(format!("move {id} is cancelled: it rolls back after its {} step", m.phase));
            }
        }
    })?;
    outcome
}

/// Undo a move that had not reached its fence, then forget it.
async fn roll_back(shared: &Shared, m: &MoveState, why: &str) -> Result<(), ControlError> {
    let spec = Move { id: m.id, buckets: m.buckets.iter().filter_map(|b| Bucket::new(*b)).collect() };
    step(shared, m, |mut c| {
        let spec = spec.clone();
        async move { moves::abandon(&c.source, &mut c.target, &spec).await }
    })
    .await?;
    shared.cluster.update(|s| s.moves.retain(|x| x.id != m.id))?;
    shared.cluster.record(Event::new(
        m.from,
        "bucket-move-rolled-back",
        &format!("shard{}", m.from),
        format!("move {}: {} buckets stay on shard {} ({why})", m.id, m.buckets.len(), m.from),
    ));
    Ok(())
}

/// Connections to a move's two current primaries.
struct Sides {
    /// The source shard's primary, on the application's database.
    source: Client,
    /// The target shard's primary.
    target: Client,
}

async fn connect(shared: &Shared, shard: u16) -> Result<Client, String> {
    let name = shared
        .cluster
        .primary(shard)
        .ok_or_else(|| format!("shard {shard} has no primary (failing over)"))?;
    let node = shared.topology().node(&name).cloned().ok_or_else(|| format!("unknown node {name}"))?;
    pgadmin::connection(&pg_spec(shared, &node), DATABASE).await.map_err(|e| e.to_string())
}

/// Run `work` on fresh connections to the move's primaries; a failure that may
/// pass (a connection lost, a primary failing over) is retried on new
/// connections for up to [`RETRY_FOR`].
async fn step<T, F, Fut>(shared: &Shared, m: &MoveState, work: F) -> Result<T, ControlError>
where
    F: Fn(Sides) -> Fut,
    Fut: Future<Output = Result<T, MoveError>>,
{
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        let attempt = async {
            // Not reaching a primary is worth retrying: it may be failing over.
            let source = connect(shared, m.from).await.map_err(|e| (true, e))?;
            let target = connect(shared, m.to).await.map_err(|e| (true, e))?;
            work(Sides { source, target }).await.map_err(|e| (e.is_retryable(), e.to_string()))
        };
        let err = match attempt.await {
            Ok(out) => return Ok(out),
            Err((retryable, e)) => (retryable, e),
        };
        if !err.0 || Instant::now() >= deadline || shared.shutdown.is_cancelled() {
            return Err(ControlError::Refused(format!("move {}: {}", m.id, err.1)));
        }
        tracing::warn!(id = m.id, error = err.1, "a bucket move's step failed; retrying");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kept connections to a shard's primary and its read replicas (those in the
/// map when opened), so that the wait for the replicas while a move's writes
/// are paused makes no connection. One that could not be opened is skipped and
/// logged (the data layer's lag bound still keeps a lagging replica from
/// serving reads).
struct ReplicaWatch {
    /// The primary: where the position to reach is read.
    primary: Option<pgadmin::KeptClient>,
    /// Each read replica, by name.
    replicas: Vec<(String, pgadmin::KeptClient)>,
}

impl ReplicaWatch {
    async fn open(shared: &Shared, shard: u16) -> ReplicaWatch {
        let open = |name: String| async move {
            let node = shared.topology().node(&name).cloned()?;
            match pgadmin::connection(&pg_spec(shared, &node), "postgres").await {
                Ok(c) => Some((name, pgadmin::KeptClient(c))),
                Err(e) => {
                    tracing::warn!(shard, node = name, error = %e, "no connection to watch a replica's replay");
                    None
                }
            }
        };
        let primary = match shared.cluster.primary(shard) {
            Some(name) => open(name).await.map(|(_, c)| c),
            None => None,
        };
        let names = shared.cluster.snapshot().shards[usize::from(shard)].replicas.clone();
        let replicas =
            futures::future::join_all(names.into_iter().map(open)).await.into_iter().flatten().collect();
        ReplicaWatch { primary, replicas }
    }

    /// Wait (up to [`REPLICAS_WAIT`]) until every watched replica has replayed
    /// the primary's WAL position of now. One that does not is logged.
    async fn replayed(&self, shard: u16) {
        let Some(primary) = &self.primary else { return };
        let Ok(target) = primary.current_lsn().await else { return };
        let deadline = Instant::now() + REPLICAS_WAIT;
        for (name, replica) in &self.replicas {
            loop {
                if matches!(replica.replay_lsn().await, Ok(Some(lsn)) if lsn >= target) {
                    break;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        shard,
                        replica = name,
                        "a read replica has not replayed a bucket move's rows"
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

/// [`step`] for the steps after the fence, which cannot be undone: retried until
/// they succeed or the controller stops.
async fn forward<T, F, Fut>(shared: &Shared, m: &MoveState, work: F) -> Result<T, ControlError>
where
    F: Fn(Sides) -> Fut,
    Fut: Future<Output = Result<T, MoveError>>,
{
    loop {
        match step(shared, m, &work).await {
            Ok(out) => return Ok(out),
            Err(e) if shared.shutdown.is_cancelled() => return Err(e),
            Err(e) => {
                tracing::error!(id = m.id, error = %e, "a bucket move past its fence failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Wait until every running web server and worker routes by a map of at least
/// `epoch` (their `db_cluster_epoch`), or [`FOLLOW_WAIT`]. A process that does
/// not answer is waited for too; one still on an older map after the wait can
/// only meet the source's refusal (its buckets are marked gone there).
async fn wait_for_followers(shared: &Shared, epoch: u64) {
    let Ok(client) = reqwest::Client::builder().no_proxy().build() else { return };
    let deadline = Instant::now() + FOLLOW_WAIT;
    loop {
        let mut behind = vec![];
        for node in shared.topology().nodes().iter().filter(|n| matches!(n.role, Role::Web | Role::Worker)) {
            if !shared.running(&node.name).await {
                continue;
            }
            let addr = crate::launch::readyz_addr(node);
            let seen =
                crate::scrape::scrape(&client, addr, Duration::from_secs(2)).await.ok().and_then(|samples| {
                    samples.iter().find(|s| s.name.ends_with("db_cluster_epoch")).map(|s| s.value as u64)
                });
            if seen.is_none_or(|e| e < epoch) {
                behind.push(node.name.clone());
            }
        }
        if behind.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                ?behind,
                epoch,
                "processes still on an older map; the source refuses their writes"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ShardState;

    #[test]
    fn no_bucket_moves_onto_a_shard_still_joining() {
        let mut s = state(3);
        s.shards[2].joining = true;
        s.directory = Some(ShardMap::even(2).unwrap().ranges());
        let e = check(&s, &[1], 2).unwrap_err();
        assert!(matches!(e, ControlError::Refused(_)) && e.to_string().contains("still joining"), "{e}");
        assert!(check(&s, &[1], 3).unwrap_err().to_string().contains("no shard 3"));
        s.shards[2].joining = false;
        assert_eq!(check(&s, &[1], 2).unwrap(), (0, vec![1]));
    }

    fn state(shards: usize) -> ClusterState {
        ClusterState {
            epoch: 3,
            shards: (0..shards)
                .map(|_| ShardState {
                    primary: Some("p".into()),
                    replicas: vec![],
                    sync_active: true,
                    joining: false,
                })
                .collect(),
            lost_dcs: vec![],
            wan_cut: vec![],
            directory: None,
            moves: vec![],
            next_move: 1,
        }
    }

    fn refused(r: Result<(u16, Vec<u16>), ControlError>) -> String {
        match r {
            Err(ControlError::BadRequest(why) | ControlError::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_good_request_names_its_source_and_drops_repeats() {
        let s = state(2);
        assert_eq!(check(&s, &[7, 3, 7], 1).unwrap(), (0, vec![3, 7]));
        assert_eq!(check(&s, &[4095], 0).unwrap(), (1, vec![4095]));
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let mut s = state(2);
        assert_eq!(refused(check(&s, &[], 1)), "no bucket to move");
        assert!(refused(check(&s, &[1, 4096], 1)).contains("bucket 4096 is out of range"));
        assert!(refused(check(&s, &[1], 2)).contains("there is no shard 2"));
        assert!(refused(check(&s, &[1, 2], 0)).contains("bucket 1 is already on shard 0"));
        assert!(refused(check(&s, &[1, 4000], 1)).contains("bucket 4000 is already on shard 1"));
        let s3 = state(3);
        assert!(refused(check(&s3, &[1, 4000], 1)).contains("on shards 0 and 2"));
        s.moves.push(MoveState {
            id: 9,
            buckets: vec![5, 6],
            from: 0,
            to: 1,
            phase: MovePhase::Copy,
            started: String::new(),
            cancel: false,
        });
        assert!(refused(check(&s, &[4, 6], 1)).contains("bucket 6 is being moved already (move 9, copy)"));
    }

    #[test]
    fn a_rebalance_evens_buckets_out_without_overshooting() {
        let even = ShardMap::even(2).unwrap();
        assert!(plan_rebalance(&even, &|_| 1, 64, 100).is_empty(), "even already");
        let lopsided = even
            .with_moved(&(0..300).map(|b| Bucket::new(b).unwrap()).collect::<Vec<_>>(), ShardId(1), 2)
            .unwrap();
        let plan = plan_rebalance(&lopsided, &|_| 1, 64, 100);
        // 2,348 against 1,748: half the gap moves back.
        assert_eq!(plan.iter().map(|p| p.buckets.len()).sum::<usize>(), 300);
        assert!(plan.iter().all(|p| p.from == 1 && p.to == 0 && p.buckets.len() <= 64));
        assert_eq!(plan.len(), 5);
        assert_eq!(plan_rebalance(&lopsided, &|_| 1, 64, 2).len(), 2, "bounded");
    }

    #[test]
    fn a_rebalance_by_rows_moves_light_buckets_to_even_heavy_ones() {
        let even = ShardMap::even(3).unwrap();
        // Shard 0 holds a celebrity's bucket (bucket 5) of 10,000 rows; every other
        // bucket weighs 10.
        let weight = |b: u16| if b == 5 { 10_000 } else { 10 };
        let plan = plan_rebalance(&even, &weight, 4096, 100);
        assert!(!plan.iter().any(|p| p.buckets.contains(&5)), "the heavy bucket stays: moving it overshoots");
        let mut load = [0u64; 3];
        let mut owner: Vec<u16> =
            (0..BUCKETS).map(|b| even.shard_of_bucket(Bucket::new(b).unwrap()).0).collect();
        for p in &plan {
            for b in &p.buckets {
                owner[usize::from(*b)] = p.to;
            }
        }
        for (b, s) in owner.iter().enumerate() {
            load[usize::from(*s)] += weight(b as u16);
        }
        let (max, min) = (*load.iter().max().unwrap(), *load.iter().min().unwrap());
        assert!(max - min <= 20, "{load:?}");
        assert!(plan_rebalance(&even, &|_| 0, 64, 10).is_empty(), "nothing to weigh, nothing to move");
    }

    #[test]
    fn a_cancelled_move_never_reaches_its_fence_but_one_past_it_goes_on() {
        let mut s = state(2);
        let m = |id, phase, cancel| MoveState {
            id,
            buckets: vec![1],
            from: 0,
            to: 1,
            phase,
            started: String::new(),
            cancel,
        };
        s.moves = vec![
            m(1, MovePhase::CatchUp, true),
            m(2, MovePhase::Fenced, true),
            m(3, MovePhase::CatchUp, false),
        ];
        set_phase(&mut s, 1, MovePhase::Fenced);
        set_phase(&mut s, 2, MovePhase::Published);
        set_phase(&mut s, 3, MovePhase::Fenced);
        let phases: Vec<MovePhase> = s.moves.iter().map(|m| m.phase).collect();
        assert_eq!(phases, [MovePhase::CatchUp, MovePhase::Published, MovePhase::Fenced]);
    }

    #[test]
    fn the_directory_follows_what_was_published() {
        let mut s = state(2);
        let moved = ShardMap::even(2).unwrap().with_moved(&[Bucket::new(1).unwrap()], ShardId(1), 4).unwrap();
        s.directory = Some(moved.ranges());
        assert_eq!(directory(&s).unwrap().shard_of_bucket(Bucket::new(1).unwrap()), ShardId(1));
        assert!(refused(check(&s, &[1], 1)).contains("already on shard 1"));
        assert_eq!(check(&s, &[1], 0).unwrap(), (1, vec![1]));
        s.directory = Some(vec![sharding::BucketRange { first: 0, last: 3, shard: 0 }]);
        assert!(matches!(directory(&s), Err(ControlError::Invalid(_))));
    }
}
