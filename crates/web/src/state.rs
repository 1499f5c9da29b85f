//! What every handler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cache::{CacheConfig, Invalidator, ReadThrough, Redis, Timelines};
use data::{Data, SessionRecord, UserRecord};
use telemetry::prometheus_client::metrics::counter::Counter;
use telemetry::prometheus_client::metrics::family::Family;

use crate::auth::Passwords;
use crate::config::WebConfig;
use crate::sessions::Sessions;

/// The caches the web tier reads through.
#[derive(Debug)]
pub struct Caches {
    /// Profiles by user id.
    pub profiles: Arc<ReadThrough<UserRecord>>,
    /// User ids by username (names never change hands, so entries never go stale).
    pub user_ids: Arc<ReadThrough<i64>>,
    /// Posts by id, each with how pages last showed it.
    pub posts: Arc<ReadThrough<crate::service::CachedPost>>,
    /// Whom each user follows, by user id: feeds and "following" flags read it.
    pub followees: Arc<ReadThrough<Vec<i64>>>,
    /// The set of celebrities (one entry, key `all`).
    pub celebrities: Arc<ReadThrough<Vec<i64>>>,
    /// Each author's newest post ids: a celebrity's are merged into followers'
    /// feeds at read time, and an author's pages are served from them.
    pub author_posts: Arc<ReadThrough<Vec<i64>>>,
    /// Live sessions by the hex SHA-256 of their token (copies of the shards'
    /// rows; a logout invalidates them everywhere).
    pub sessions: Arc<ReadThrough<SessionRecord>>,
    /// Each user's unread notification count, by user id (the top bar's badge;
    /// invalidated by the worker that delivers one and by marking them read).
    pub unread: Arc<ReadThrough<i64>>,
    /// Lookup counters.
    pub metrics: cache::CacheMetrics,
    /// Spreads invalidations to every web server's L1.
    pub invalidator: Invalidator,
}

impl Caches {
    fn new(redis: &Redis, config: CacheConfig, registry: &telemetry::Registry) -> Caches {
        let invalidator = Invalidator::new(redis.clone());
        let metrics = cache::CacheMetrics::new(registry);
        let with =
            |name, config: CacheConfig| (name, redis.clone(), config, metrics.clone(), invalidator.clone());
        // A user crossing the celebrity threshold shows up within seconds.
        let mut short = config.clone();
        short.l1_ttl = short.l1_ttl.min(Duration::from_secs(5));
        short.l2_ttl = short.l2_ttl.min(Duration::from_secs(30));
        Caches {
            profiles: build(with(feed::PROFILE_CACHE, config.clone())),
            user_ids: build(with("uid", config.clone())),
            posts: build(with(feed::POST_CACHE, config.clone())),
            followees: build(with("followees", config.clone())),
            celebrities: build(with("celebrities", short)),
            author_posts: build(with(feed::AUTHOR_POSTS_CACHE, config.clone())),
            unread: build(with(data::UNREAD_CACHE, config.clone())),
            sessions: build(with("session", config)),
            metrics,
            invalidator,
        }
    }
}

type Parts = (&'static str, Redis, CacheConfig, cache::CacheMetrics, Invalidator);

fn build<T>((name, redis, config, metrics, invalidator): Parts) -> Arc<ReadThrough<T>>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    ReadThrough::new(name, redis, config, metrics, invalidator)
}

/// Counters of home-feed timeline reads (`feed_timeline_reads{result}`), made once
/// so a read counts without a label lookup.
#[derive(Clone, Debug)]
pub struct TimelineReads {
    /// The timeline was in Redis, complete.
    pub warm: Counter,
    /// It was not (never built, lapsed, or evicted): rebuilt from the shards.
    pub cold: Counter,
    /// Redis could not be read: the feed was merged from the shards.
    pub unreadable: Counter,
}

impl TimelineReads {
    fn new(registry: &telemetry::Registry) -> TimelineReads {
        let family = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "feed_timeline_reads",
            "Home-feed timeline reads by result: warm, cold (rebuilt from the shards) or unreadable",
            family.clone(),
        );
        let get = |result| family.get_or_create(&[("result", result)]).clone();
        TimelineReads { warm: get("warm"), cold: get("cold"), unreadable: get("unreadable") }
    }
}

/// What the users did, counted where it succeeds (`millions_business_*_total`):
/// the dashboard charts them per minute.
#[derive(Clone, Debug, Default)]
pub struct Business {
    /// Accounts created.
    pub signups: Counter,
    /// Posts published, text or photo.
    pub posts: Counter,
    /// Photo posts accepted (also counted in `posts`).
    pub photos: Counter,
    /// Likes given (a repeated like changes nothing and is not counted).
    pub likes: Counter,
    /// Follows started (a repeated follow is not counted).
    pub follows: Counter,
    /// What this server's inline fan-outs of text posts cost (`millions_fanout_*`,
    /// named as the workers' for photo posts and outbox jobs).
    pub fan_out: FanOutCounters,
}

/// The fan-out's counters (`feed::METRICS`): posts by mode, timelines offered,
/// timelines written in this data center's Redis. Write amplification per post
/// = writes ÷ posts.
#[derive(Clone, Debug, Default)]
pub struct FanOutCounters {
    /// Posts pushed into followers' timelines (`mode="push"`).
    pub push: Counter,
    /// Celebrities' posts, merged at read time (`mode="pull"`).
    pub pull: Counter,
    /// Timelines offered: the author's readers (or every follower) and the author.
    pub offered: Counter,
    /// Timelines written in this data center's Redis.
    pub written: Counter,
    /// Pushes that listed every follower (this DC's Redis did not know the
    /// author's readers).
    pub full: Counter,
}

impl FanOutCounters {
    fn new(registry: &telemetry::Registry) -> FanOutCounters {
        let [(posts, posts_help), (offered, offered_help), (written, written_help), (full, full_help)] =
            feed::METRICS;
        let modes = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(posts, posts_help, modes.clone());
        // Each guard dropped before the next insertion takes the family's lock.
        let get = |mode| modes.get_or_create(&[("mode", mode)]).clone();
        let c = FanOutCounters { push: get("push"), pull: get("pull"), ..FanOutCounters::default() };
        registry.register(offered, offered_help, c.offered.clone());
        registry.register(written, written_help, c.written.clone());
        registry.register(full, full_help, c.full.clone());
        c
    }

    /// Count one post's fan-out.
    pub fn record(&self, done: &feed::FanOut) {
        match done {
            feed::FanOut::Pushed { .. } => self.push.inc(),
            feed::FanOut::Celebrity { .. } => self.pull.inc(),
        };
        self.offered.inc_by(done.offered() as u64);
        self.written.inc_by(done.written() as u64);
        if done.full() {
            self.full.inc();
        }
    }
}

impl Business {
    fn new(registry: &telemetry::Registry) -> Business {
        let b = Business { fan_out: FanOutCounters::new(registry), ..Business::default() };
        for (name, help, counter) in [
            ("business_signups", "Accounts created", &b.signups),
            ("business_posts", "Posts published, text or photo", &b.posts),
            ("business_photos", "Photo posts accepted", &b.photos),
            ("business_likes", "Likes given", &b.likes),
            ("business_follows", "Follows started", &b.follows),
        ] {
            registry.register(name, help, counter.clone());
        }
        b
    }
}

/// Shared state of one web server; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("listen", &self.inner.config.listen).finish()
    }
}

struct Inner {
    /// The configuration the server started with.
    config: WebConfig,
    /// The shards.
    data: Data,
    /// The shared Redis.
    redis: Redis,
    /// Read-through caches.
    caches: Caches,
    /// Cached home timelines.
    timelines: Timelines,
    /// Login sessions.
    sessions: Sessions,
    /// Password hashing.
    passwords: Passwords,
    /// Where photos are stored (shared with the workers).
    store: Arc<dyn media::ObjectStore>,
    /// This process's metrics.
    registry: telemetry::Registry,
    /// HTTP request metrics.
    http_metrics: telemetry::HttpMetrics,
    /// Home-feed timeline reads by outcome: how often a cold (never built, lapsed
    /// or evicted) timeline had to be rebuilt from the shards.
    timeline_reads: TimelineReads,
    /// What the users did (signups, posts, photos, likes, follows).
    business: Business,
    /// The signed-in users served, sent once a second to the DC's Redis
    /// HyperLogLogs (daily, weekly, monthly active users).
    active_users: Arc<cache::active::ActiveUsers>,
    /// The CDN edges photo URLs may name, and their health.
    edges: Arc<crate::edges::Edges>,
    /// The hottest profiles and posts this server reads, and their hot copies
    /// (refreshed by a task of `run_until_stopped`).
    hotkeys: crate::hotkeys::HotKeys,
    /// Set when shutdown begins, so `/readyz` fails and load balancers stop sending.
    draining: AtomicBool,
}

impl AppState {
    /// Assemble the state from connected components.
    pub fn new(
        config: WebConfig,
        data: Data,
        redis: Redis,
        registry: telemetry::Registry,
    ) -> Result<AppState, anyhow::Error> {
        let caches = Caches::new(&redis, config.cache_config(), &registry);
        let timelines = Timelines::new(
            redis.clone(),
            config.feed.timeline_cap,
            Duration::from_secs(config.feed.timeline_ttl_secs),
        );
        let sessions = Sessions::new(
            data.clone(),
            caches.sessions.clone(),
            redis.clone(),
            Duration::from_secs(config.sessions.ttl_secs),
        );
        let passwords = Passwords::new(&config.passwords)?;
        let store: Arc<dyn media::ObjectStore> = Arc::new(media::LocalStore::open(&config.media.store_dir)?);
        let http_metrics = telemetry::HttpMetrics::new(&registry);
        let timeline_reads = TimelineReads::new(&registry);
        let business = Business::new(&registry);
        let active_users = Arc::new(cache::active::ActiveUsers::new(redis.clone(), &registry));
        let edges = Arc::new(crate::edges::Edges::new(&config.media, &registry));
        let hotkeys = crate::hotkeys::HotKeys::new(&config.hotkeys, &registry);
        // Writers announced by any web server reach this one's hot copies.
        caches.invalidator.register(crate::hotkeys::WRITERS, hotkeys.receiver());
        Ok(AppState {
            inner: Arc::new(Inner {
                config,
                data,
                redis,
                caches,
                timelines,
                sessions,
                passwords,
                store,
                registry,
                http_metrics,
                timeline_reads,
                business,
                active_users,
                edges,
                hotkeys,
                draining: AtomicBool::new(false),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &WebConfig {
        &self.inner.config
    }
    /// The data layer.
    pub fn data(&self) -> &Data {
        &self.inner.data
    }
    /// The shared Redis.
    pub fn redis(&self) -> &Redis {
        &self.inner.redis
    }
    /// The read-through caches.
    pub fn caches(&self) -> &Caches {
        &self.inner.caches
    }
    /// Cached timelines.
    pub fn timelines(&self) -> &Timelines {
        &self.inner.timelines
    }
    /// Sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }
    /// Password hashing.
    pub fn passwords(&self) -> &Passwords {
        &self.inner.passwords
    }
    /// The object store holding photos.
    pub fn store(&self) -> &Arc<dyn media::ObjectStore> {
        &self.inner.store
    }
    /// The metrics registry.
    pub fn registry(&self) -> &telemetry::Registry {
        &self.inner.registry
    }
    /// HTTP metrics.
    pub fn http_metrics(&self) -> &telemetry::HttpMetrics {
        &self.inner.http_metrics
    }
    /// Home-feed timeline reads by outcome.
    pub fn timeline_reads(&self) -> &TimelineReads {
        &self.inner.timeline_reads
    }
    /// What the users did.
    pub fn business(&self) -> &Business {
        &self.inner.business
    }
    /// The signed-in users served since the last flush.
    pub fn active_users(&self) -> &Arc<cache::active::ActiveUsers> {
        &self.inner.active_users
    }
    /// The CDN edges and their health (probed by a task of `run_until_stopped`).
    pub fn edges(&self) -> &Arc<crate::edges::Edges> {
        &self.inner.edges
    }
    /// The hottest keys and their hot copies.
    pub fn hotkeys(&self) -> &crate::hotkeys::HotKeys {
        &self.inner.hotkeys
    }
    /// Whether shutdown has begun.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }
    /// Mark shutdown as begun.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }
}
