//! Where each shard's servers are, and which one a query goes to.
//!
//! Every shard has a primary (writes, and reads no replica can serve) and any
//! number of streaming replicas. [`Routes`] is one immutable view of them at an
//! epoch: the static one from the configuration, then each newer
//! [`ClusterMap`] the controller publishes. Pools are kept per address, so a
//! new map reuses the pools of servers it still names. A newer map may name
//! more shards than the routes in force (a shard cluster added to a running
//! topology, with a directory that says which buckets it owns), never fewer.
//!
//! A lag monitor samples every shard's primary WAL position and each replica's
//! replay position every [`PROBE_EVERY`]; a replica's lag is how long ago the
//! primary was where the replica is now. Reads pick a replica that answered its
//! last probe, lags at most the configured bound and has replayed the request's
//! read-your-writes floor; none → the primary.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use sharding::{ClusterMap, ShardId, ShardMap};
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, DataConfig};
use crate::route::Inner;

/// How often the lag monitor probes.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(200);
/// How long a probe may take before its server counts as unusable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait before asking the controller again after a failure.
const FOLLOW_RETRY: Duration = Duration::from_millis(500);

/// One server's pool, named by its `host:port`.
pub(crate) struct Server {
    /// `host:port`.
    pub(crate) addr: String,
    /// Its connections.
    pub(crate) pool: Pool,
}

/// What the lag monitor last learned about a replica.
#[derive(Default)]
pub(crate) struct Health {
    /// It answered its last probe and its lag is known.
    pub(crate) usable: AtomicBool,
    /// Its replay position at the last probe.
    pub(crate) replay_lsn: AtomicU64,
    /// Its lag at the last probe, in milliseconds.
    pub(crate) lag_ms: AtomicU64,
}

/// A replica and its health (kept across maps while its address stays).
#[derive(Clone)]
pub(crate) struct Replica {
    /// Its pool, where reads it may serve run.
    pub(crate) server: Arc<Server>,
    /// What the lag monitor last learned, which decides whether it may serve.
    pub(crate) health: Arc<Health>,
}

/// One shard's servers.
pub(crate) struct ShardRoute {
    /// `None` while a failover is in progress.
    pub(crate) primary: Option<Arc<Server>>,
    /// The replicas that may serve reads, in the map's order.
    pub(crate) replicas: Vec<Replica>,
    /// How many of `replicas`, from the first, are in this process's data center:
    /// reads go to them first (a cross-DC read pays the WAN's round trip).
    near: usize,
    /// Round-robin cursor over usable replicas.
    next: AtomicUsize,
    /// Recent samples of the shard's primary WAL position, which date its
    /// replicas' replay positions: kept across maps like the replicas' health, so
    /// a new map does not make every replica's lag unknown for a moment, and
    /// made with the route, so a shard a newer map adds has one.
    pub(crate) history: Arc<Mutex<History>>,
}

/// Every shard's servers at one epoch.
pub(crate) struct Routes {
    /// The controller's epoch; 0 for the configuration's own view.
    pub(crate) epoch: u64,
    /// Each shard's servers, indexed by shard: the configuration's shards, and
    /// any a newer map added (a map never has fewer).
    pub(crate) shards: Vec<ShardRoute>,
    /// Which shard owns each bucket at this epoch: the even split until the
    /// controller publishes a directory (a bucket moved).
    pub(crate) directory: Arc<ShardMap>,
}

/// How a shard's servers are connected to: the shard URL's settings, with each
/// server's host and port substituted.
///
/// Every shard of a topology shares its user, password and database name (the
/// controller gives them all the same): a shard a cluster map adds beyond the
/// configuration's `database.shards` is connected to with shard 0's URL's
/// settings.
pub(crate) struct Connector {
    /// Parsed shard URLs, in shard order; the first also serves the shards a
    /// cluster map adds beyond them.
    templates: Vec<tokio_postgres::Config>,
    /// Connections per server pool (`database.pool_size`).
    pool_size: usize,
    /// Connections a new pool opens at once and keeps (`database.pool_warm`).
    pool_warm: usize,
    /// How long a query waits for a connection (`database.acquire_timeout_ms`).
    acquire_timeout: Duration,
}

/// `host:port` of the first host of a parsed URL.
fn address_of(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) if h.contains(':') => format!("[{h}]"),
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    format!("{host}:{}", config.get_ports().first().copied().unwrap_or(5432))
}

/// Parse `host:port` (IPv6 hosts bracketed).
fn split_address(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (!host.is_empty()).then_some(())?;
    Some((host.to_string(), port.parse().ok()?))
}

impl Connector {
    pub(crate) fn new(config: &DataConfig) -> Result<Connector, ConfigError> {
        let templates = config
            .shards
            .iter()
            .enumerate()
            .map(|(index, url)| {
                parse_url(config, url).map_err(|message| ConfigError::BadUrl { index, message })
            })
            .collect::<Result<_, _>>()?;
        Ok(Connector {
            templates,
            pool_size: config.pool_size,
            pool_warm: config.pool_warm.unwrap_or(config.pool_size).min(config.pool_size),
            acquire_timeout: config.acquire_timeout(),
        })
    }

    fn pool(&self, pg: tokio_postgres::Config) -> Result<Pool, String> {
        let manager =
            Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.acquire_timeout))
            .create_timeout(Some(self.acquire_timeout))
            .recycle_timeout(Some(self.acquire_timeout))
            .build()
            .map_err(|e| e.to_string())?;
        self.warm(&pool);
        Ok(pool)
    }

    /// Open `pool_warm` connections of `pool` in the background and return them to
    /// it idle, so the first queries find them made (deadpool keeps an idle
    /// connection until it breaks). A server that cannot be reached now is only
    /// logged: its connections are then made when queries need them, as before.
    fn warm(&self, pool: &Pool) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        if self.pool_warm == 0 {
            return;
        }
        let (pool, n) = (pool.clone(), self.pool_warm);
        rt.spawn(async move {
            let opened = futures::future::join_all((0..n).map(|_| pool.get())).await;
            if let Some(Err(e)) = opened.iter().find(|c| c.is_err()) {
                tracing::debug!(error = %e, wanted = n, "a pool was not fully warmed; it opens connections on demand");
            }
        });
    }

    /// A server from a full URL (the configuration's static view).
    fn server(&self, pg: tokio_postgres::Config) -> Result<Arc<Server>, String> {
        Ok(Arc::new(Server { addr: address_of(&pg), pool: self.pool(pg)? }))
    }

    /// A server of `shard` at `addr`, with the shard URL's credentials and
    /// database (shard 0's for a shard beyond the configuration's URLs).
    fn at(&self, shard: usize, addr: &str) -> Result<Arc<Server>, String> {
        let t = self.templates.get(shard).unwrap_or(&self.templates[0]);
        let (host, port) = split_address(addr).ok_or_else(|| format!("bad server address {addr:?}"))?;
        let mut pg = tokio_postgres::Config::new();
        pg.host(&host).port(port).ssl_mode(t.get_ssl_mode());
        if let Some(v) = t.get_user() {
            pg.user(v);
        }
        if let Some(v) = t.get_password() {
            pg.password(v);
        }
        if let Some(v) = t.get_dbname() {
            pg.dbname(v);
        }
        if let Some(v) = t.get_options() {
            pg.options(v);
        }
        if let Some(v) = t.get_application_name() {
            pg.application_name(v);
        }
        if let Some(v) = t.get_connect_timeout() {
            pg.connect_timeout(*v);
        }
        Ok(Arc::new(Server { addr: format_address(&host, port), pool: self.pool(pg)? }))
    }
}

fn format_address(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// A shard or replica URL with our defaults (connect timeout, application name).
fn parse_url(config: &DataConfig, url: &str) -> Result<tokio_postgres::Config, String> {
    let mut pg = tokio_postgres::Config::from_str(url).map_err(|e| e.to_string())?;
    if pg.get_hosts().is_empty() {
        return Err("the URL names no host".into());
    }
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(config.acquire_timeout());
    }
    if pg.get_application_name().is_none() {
        pg.application_name("millions");
    }
    Ok(pg)
}

impl Routes {
    /// The configuration's view: `shards` as primaries, `replicas` as replicas.
    pub(crate) fn from_config(config: &DataConfig, connector: &Connector) -> Result<Routes, ConfigError> {
        let mut shards = Vec::new();
        for index in 0..config.shards.len() {
            let pool_err = |message| ConfigError::Pool { index, message };
            let primary = connector.server(connector.templates[index].clone()).map_err(pool_err)?;
            let mut replicas = Vec::new();
            for (r, url) in config.replicas.get(index).into_iter().flatten().enumerate() {
                let pg = parse_url(config, url).map_err(|message| ConfigError::BadReplicaUrl {
                    shard: index,
                    replica: r,
                    message,
                })?;
                let server = connector.server(pg).map_err(|message| ConfigError::Pool { index, message })?;
                replicas.push(Replica { server, health: Arc::default() });
            }
            let near = replicas.len();
            shards.push(ShardRoute {
                primary: Some(primary),
                replicas,
                near,
                next: AtomicUsize::new(0),
                history: Arc::default(),
            });
        }
        let directory = ShardMap::even(shards.len())
            .map_err(|e| ConfigError::Pool { index: 0, message: e.to_string() })?;
        Ok(Routes { epoch: 0, shards, directory: Arc::new(directory) })
    }

    /// The view `map` describes, reusing this view's pools (and replica health,
    /// and primary history) for addresses (and shards) it keeps.
    ///
    /// The map may add shards (a shard cluster joined the topology), if it says
    /// which buckets each owns: without a directory the even split over the new
    /// count would give almost every bucket a new owner that lacks its rows. It
    /// may never drop one (rows would become unreachable).
    pub(crate) fn apply(&self, map: &ClusterMap, connector: &Connector) -> Result<Routes, String> {
        let (had, has) = (self.shards.len(), map.shards.len());
        if has < had {
            return Err(format!(
                "the map has {has} shards, fewer than the {had} this process routes to: shards are never removed"
            ));
        }
        if has > had && map.directory.is_none() {
            return Err(format!(
                "the map adds shards ({had} to {has}) but has no bucket directory: \
                 the even split over {has} shards would move almost every bucket"
            ));
        }
        let mut shards = Vec::new();
        for (i, new) in map.shards.iter().enumerate() {
            let old = self.shards.get(i);
            let known = |addr: &str| {
                let old = old?;
                old.primary
                    .iter()
                    .chain(old.replicas.iter().map(|r| &r.server))
                    .find(|s| s.addr == addr)
                    .cloned()
            };
            let server = |addr: &str| known(addr).map_or_else(|| connector.at(i, addr), Ok);
            let primary = new.primary.as_deref().map(server).transpose()?;
            let mut replicas = Vec::new();
            for addr in &new.replicas {
                let health = old
                    .and_then(|old| old.replicas.iter().find(|r| r.server.addr == *addr))
                    .map(|r| r.health.clone());
                replicas.push(Replica { server: server(addr)?, health: health.unwrap_or_default() });
            }
            let near = new.near.unwrap_or(replicas.len()).min(replicas.len());
            let history = old.map(|old| old.history.clone()).unwrap_or_default();
            shards.push(ShardRoute { primary, replicas, near, next: AtomicUsize::new(0), history });
        }
        let directory = match &map.directory {
            None => ShardMap::even(shards.len()),
            Some(ranges) => ShardMap::from_ranges(map.epoch, shards.len(), ranges),
        }
        .map_err(|e| format!("the map's directory: {e}"))?;
        Ok(Routes { epoch: map.epoch, shards, directory: Arc::new(directory) })
    }

    /// `shard`'s servers; `None` for a shard this view does not have (one a
    /// newer map, not yet installed here, added).
    pub(crate) fn shard(&self, shard: ShardId) -> Option<&ShardRoute> {
        self.shards.get(usize::from(shard.0))
    }
}

impl ShardRoute {
    /// A replica that may serve a read needing `floor`, within `max_lag_ms`.
    pub(crate) fn pick_replica(&self, floor: Option<u64>, max_lag_ms: u64) -> Option<&Replica> {
        let fits = |r: &&Replica| {
            let h = &r.health;
            h.usable.load(Ordering::Acquire)
                && h.lag_ms.load(Ordering::Relaxed) <= max_lag_ms
                && floor.is_none_or(|f| h.replay_lsn.load(Ordering::Relaxed) >= f)
        };
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // The near ones first, in turn; then the others, in turn.
        let (near, far) = self.replicas.split_at(self.near);
        in_turn(near, start).chain(in_turn(far, start)).find(fits)
    }

    /// For a read while the primary is lost: the usable replica that replayed the
    /// most WAL (no lag bound: with the primary gone there is nothing newer to
    /// measure lag against). The read's floor is checked by [`replayed`].
    pub(crate) fn most_advanced_replica(&self) -> Option<&Replica> {
        self.replicas
            .iter()
            .filter(|r| r.health.usable.load(Ordering::Acquire))
            .max_by_key(|r| r.health.replay_lsn.load(Ordering::Relaxed))
    }
}

/// Whether `replica` has replayed `floor`, asking it (every 20 ms, for at most
/// `wait`) when the last probe saw it behind: a synchronous replica has every
/// acknowledged commit on disk, and replays it a moment later.
pub(crate) async fn replayed(replica: &Replica, floor: Option<u64>, wait: Duration) -> bool {
    let Some(floor) = floor else { return true };
    if replica.health.replay_lsn.load(Ordering::Relaxed) >= floor {
        return true;
    }
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(Some(replay)) = probe(&replica.server, REPLAY_LSN_SQL).await {
            replica.health.replay_lsn.fetch_max(replay as u64, Ordering::Relaxed);
            if replay as u64 >= floor {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `set` from position `start` (modulo its length), wrapping around.
fn in_turn(set: &[Replica], start: usize) -> impl Iterator<Item = &Replica> {
    let n = set.len();
    (0..n).map(move |k| &set[(start + k) % n])
}

/// Recent (time, primary WAL position) samples of one shard.
#[derive(Default)]
pub(crate) struct History {
    /// Oldest first; what a replica's replay position is dated by.
    samples: VecDeque<(Instant, u64)>,
}

impl History {
    fn push(&mut self, at: Instant, lsn: u64, keep: Duration) {
        self.samples.push_back((at, lsn));
        // Keep one sample older than `keep`, so a replica exactly that far
        // behind still has a known lag.
        while self.samples.len() > 2 && self.samples[1].0 + keep < at {
            self.samples.pop_front();
        }
        while self.samples.len() > 4096 {
            self.samples.pop_front();
        }
    }

    /// How stale a replica that replayed up to `replay` is at `now`: how long
    /// ago the primary was last seen at or before it. `None` when it is behind
    /// every sample (further behind than the history reaches).
    pub(crate) fn lag(&self, replay: u64, now: Instant) -> Option<Duration> {
        let (_, newest) = *self.samples.back()?;
        if replay >= newest {
            return Some(Duration::ZERO);
        }
        let (at, _) = self.samples.iter().rev().find(|(_, lsn)| *lsn <= replay)?;
        Some(now.saturating_duration_since(*at))
    }
}

/// A primary's current WAL position, as a number.
const PRIMARY_LSN_SQL: &str = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8";

/// A replica's replayed WAL position, as a number.
const REPLAY_LSN_SQL: &str = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8";

async fn probe(server: &Server, sql: &str) -> Result<Option<i64>, String> {
    let query = async {
        let client = server.pool.get().await.map_err(|e| e.to_string())?;
        let stmt = client.prepare_cached(sql).await.map_err(|e| e.to_string())?;
        let row = client.query_one(&stmt, &[]).await.map_err(|e| e.to_string())?;
        Ok(row.get::<_, Option<i64>>(0))
    };
    tokio::time::timeout(PROBE_TIMEOUT, query).await.unwrap_or_else(|_| Err("probe timed out".into()))
}

/// Every shard's primary's current WAL position, asked now: a floor that every
/// write committed before this call meets. A shard whose primary is unknown or
/// does not answer gets an unmeetable position (its reads go to the primary, or
/// wait for one). For a session whose floor was lost (evicted from Redis, or
/// never kept in this data center): reads then use replicas that have replayed
/// everything the session may have written, instead of primaries only.
pub(crate) async fn current_lsns(routes: &Routes) -> crate::Lsns {
    let asks = routes.shards.iter().map(|shard| async move {
        match &shard.primary {
            Some(primary) => match probe(primary, PRIMARY_LSN_SQL).await {
                Ok(Some(lsn)) => lsn as u64,
                _ => u64::MAX,
            },
            None => u64::MAX,
        }
    });
    let mut floor = crate::Lsns::new();
    for (i, lsn) in futures::future::join_all(asks).await.into_iter().enumerate() {
        floor.raise(ShardId(i as u16), lsn);
    }
    floor
}

/// Ask each replica of `shard` (routed by `route`) how far it has replayed, and
/// mark it usable when that is within the primary's known history (its lag dated).
/// The monitor does it every [`PROBE_EVERY`]; a read whose primary is lost does it
/// at once when no replica is marked usable (a probe may have timed out under load).
pub(crate) async fn probe_replicas(inner: &Inner, shard: ShardId, route: &ShardRoute) {
    let replicas = route.replicas.iter().map(|r| async move {
        let answer = probe(&r.server, REPLAY_LSN_SQL).await;
        let now = Instant::now();
        let h = &r.health;
        let lag = match answer {
            Ok(Some(replay)) => {
                h.replay_lsn.store(replay as u64, Ordering::Relaxed);
                route.history.lock().unwrap_or_else(|e| e.into_inner()).lag(replay as u64, now)
            }
            // Not in recovery (promoted?) or not answering.
            Ok(None) | Err(_) => None,
        };
        if let Some(lag) = lag {
            h.lag_ms.store(lag.as_millis() as u64, Ordering::Relaxed);
        }
        h.usable.store(lag.is_some(), Ordering::Release);
        inner.metrics.observe_replica(shard, &r.server.addr, lag);
    });
    futures::future::join_all(replicas).await;
}

/// Probe every shard until `stop`.
pub(crate) async fn monitor(inner: Weak<Inner>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let routes = inner.routes();
        let keep = Duration::from_millis(inner.max_lag_ms) + Duration::from_secs(2);
        let shards = routes.shards.iter().enumerate().map(|(i, shard)| {
            let inner = &inner;
            async move {
                if let Some(primary) = &shard.primary
                    && let Ok(Some(lsn)) = probe(primary, PRIMARY_LSN_SQL).await
                {
                    shard.history.lock().unwrap_or_else(|e| e.into_inner()).push(
                        Instant::now(),
                        lsn as u64,
                        keep,
                    );
                }
                probe_replicas(inner, ShardId(i as u16), shard).await;
            }
        });
        futures::future::join_all(shards).await;
    }
}

/// Follow the controller's map at `url` until `stop`: fetch it, then long-poll
/// for a newer epoch; fetch at once when a write suggests a failover.
pub(crate) async fn follow(inner: Weak<Inner>, url: reqwest::Url, stop: CancellationToken) {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(40)).build() {
        Ok(c) => c,
        Err(e) => return tracing::error!(error = %e, "cannot build an HTTP client to follow the cluster map"),
    };
    let mut after: Option<u64> = None;
    loop {
        let Some(refresh) = inner.upgrade().map(|i| i.refresh.clone()) else { return };
        let mut target = url.clone();
        if let Some(n) = after {
            target.query_pairs_mut().append_pair("after", &n.to_string());
        }
        let fetch = async {
            let response = client.get(target).send().await?.error_for_status()?;
            response.json::<ClusterMap>().await
        };
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            _ = refresh.notified() => { after = None; continue }
            r = fetch => r,
        };
        let Some(inner) = inner.upgrade() else { return };
        match result {
            Ok(map) => {
                // A refused map is not asked for again (it would be answered at
                // once, over and over): the next one asked for is newer than it.
                after = Some(match inner.install(&map) {
                    Ok(_) => inner.routes().epoch,
                    Err(e) => {
                        tracing::error!(error = %e, epoch = map.epoch, "cannot use the cluster map");
                        map.epoch.max(inner.routes().epoch)
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the cluster map; retrying");
                after = None;
                drop(inner);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = refresh.notified() => {}
                    _ = tokio::time::sleep(FOLLOW_RETRY) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_how_long_ago_the_primary_was_where_the_replica_is() {
        let t0 = Instant::now();
        let mut h = History::default();
        let keep = Duration::from_secs(10);
        h.push(t0, 100, keep);
        h.push(t0 + Duration::from_secs(1), 200, keep);
        h.push(t0 + Duration::from_secs(2), 300, keep);
        let now = t0 + Duration::from_secs(3);
        assert_eq!(h.lag(300, now), Some(Duration::ZERO));
        assert_eq!(h.lag(350, now), Some(Duration::ZERO));
        assert_eq!(h.lag(250, now), Some(Duration::from_secs(2)));
        assert_eq!(h.lag(100, now), Some(Duration::from_secs(3)));
        assert_eq!(h.lag(99, now), None, "behind the whole history");
    }

    #[tokio::test]
    async fn reads_prefer_the_near_replicas_and_fall_back_to_the_far_ones() {
        let config = DataConfig::new(vec!["postgres://u:p@127.0.0.1:1/db".into()]);
        let connector = Connector::new(&config).unwrap();
        let routes = Routes::from_config(&config, &connector).unwrap();
        let replicas = |addrs: &[&str]| addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let map = |near| ClusterMap {
            epoch: 1,
            shards: vec![sharding::ShardServers {
                primary: Some("127.0.0.1:1".into()),
                replicas: replicas(&["127.0.0.2:1", "127.0.0.3:1", "127.0.0.4:1"]),
                near,
            }],
            directory: None,
        };
        let usable = |r: &Replica| {
            r.health.usable.store(true, Ordering::Release);
        };
        let picks = |route: &ShardRoute| -> Vec<String> {
            (0..6).map(|_| route.pick_replica(None, 1000).unwrap().server.addr.clone()).collect()
        };
        // Two near ones: reads alternate between them, never the far one.
        let near = routes.apply(&map(Some(2)), &connector).unwrap();
        let route = near.shard(ShardId(0)).unwrap();
        route.replicas.iter().for_each(usable);
        let got = picks(route);
        assert!(got.iter().all(|a| a != "127.0.0.4:1"), "{got:?}");
        assert!(got.contains(&"127.0.0.2:1".into()) && got.contains(&"127.0.0.3:1".into()), "{got:?}");
        // The near ones unusable: the far one serves.
        route.replicas[..2].iter().for_each(|r| r.health.usable.store(false, Ordering::Release));
        assert!(picks(route).iter().all(|a| a == "127.0.0.4:1"));
        // No preference: every replica in turn.
        let any = routes.apply(&map(None), &connector).unwrap();
        let route = any.shard(ShardId(0)).unwrap();
        route.replicas.iter().for_each(usable);
        let got: std::collections::HashSet<String> = picks(route).into_iter().collect();
        assert_eq!(got.len(), 3, "{got:?}");
    }

    #[tokio::test]
    async fn a_map_may_add_shards_with_a_directory_and_never_drop_one() {
        let config = DataConfig::new(vec!["postgres://u:p@127.0.0.1:1/db".into()]);
        let connector = Connector::new(&config).unwrap();
        let routes = Routes::from_config(&config, &connector).unwrap();
        let servers = |primary: &str| sharding::ShardServers {
            primary: Some(primary.into()),
            replicas: vec![],
            near: None,
        };
        let one = vec![servers("127.0.0.1:1")];
        let two = vec![servers("127.0.0.1:1"), servers("127.0.0.2:1")];
        let all_on_0 = vec![sharding::BucketRange { first: 0, last: 4095, shard: 0 }];
        let map = |epoch, shards: &Vec<_>, directory: Option<&Vec<_>>| ClusterMap {
            epoch,
            shards: shards.clone(),
            directory: directory.cloned(),
        };

        let err = routes.apply(&map(1, &two, None), &connector).err().unwrap();
        assert!(err.contains("no bucket directory"), "{err}");
        let grown = routes.apply(&map(1, &two, Some(&all_on_0)), &connector).unwrap();
        assert_eq!(grown.shards.len(), 2);
        assert_eq!(grown.directory.shard_count(), 2);
        assert!(grown.directory.buckets_of(ShardId(1)).is_empty());
        assert_eq!(grown.shard(ShardId(1)).unwrap().primary.as_ref().unwrap().addr, "127.0.0.2:1");
        assert!(grown.shard(ShardId(2)).is_none());
        // Shard 0 keeps its pool and its primary's history; shard 1 has its own.
        let (old, new) = (routes.shard(ShardId(0)).unwrap(), grown.shard(ShardId(0)).unwrap());
        assert!(Arc::ptr_eq(old.primary.as_ref().unwrap(), new.primary.as_ref().unwrap()));
        assert!(Arc::ptr_eq(&old.history, &new.history));
        assert!(!Arc::ptr_eq(&new.history, &grown.shard(ShardId(1)).unwrap().history));

        let err = grown.apply(&map(2, &one, Some(&all_on_0)), &connector).err().unwrap();
        assert!(err.contains("fewer than the 2"), "{err}");
        let same = grown.apply(&map(2, &two, None), &connector).unwrap();
        assert!(Arc::ptr_eq(
            &grown.shard(ShardId(1)).unwrap().history,
            &same.shard(ShardId(1)).unwrap().history
        ));
    }

    #[test]
    fn addresses_split_and_format() {
        assert_eq!(split_address("127.0.0.1:5432"), Some(("127.0.0.1".into(), 5432)));
        assert_eq!(split_address("[::1]:6000"), Some(("::1".into(), 6000)));
        assert_eq!(split_address("nohost"), None);
        assert_eq!(split_address(":5432"), None);
        assert_eq!(format_address("::1", 6000), "[::1]:6000");
    }
}
