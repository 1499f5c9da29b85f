//! What a bench run is asked to do, and refusing what makes no sense.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::dns::DnsMode;
use super::error::BenchError;

/// Highest request rate a bench accepts, per second.
pub const MAX_RATE: f64 = 1_000_000.0;
/// Longest run (and longest warm-up) a bench accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Most users a bench creates itself (each signup hashes a password).
pub const MAX_CREATED_USERS: u64 = 1_000_000;

/// One kind of request the bench sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `GET /api/v1/feed` as a Zipf-drawn user.
    Feed,
    /// `GET /api/v1/users/{name}/posts` of a Zipf-drawn user.
    Timeline,
    /// `POST /api/v1/posts` (a text post).
    Post,
    /// `POST /api/v1/posts` as multipart with a small generated JPEG (distinct
    /// bytes per post): a photo a worker must process before it is `ready`.
    PhotoPost,
    /// `PUT /api/v1/posts/{id}/like` of a recently seen post.
    Like,
    /// `PUT /api/v1/users/{name}/follow` between two Zipf-drawn users.
    Follow,
    /// `GET` of a thumbnail URL seen in a feed or timeline.
    ViewPhoto,
    /// `POST /api/v1/posts/{id}/comments` on a known post.
    Comment,
    /// `GET /api/v1/posts/{id}/comments`: a known post's first page of comments.
    Comments,
    /// `GET /api/v1/notifications`: the acting user's first page of notifications.
    Notifications,
    /// `DELETE /api/v1/posts/{id}` of one of the acting user's own posts
    /// acknowledged earlier in this run (never a seeded one).
    DeletePost,
    /// `GET /api/v1/search/users?q=` of the first 2–4 characters of a
    /// Zipf-drawn user's name (the directory's prefix search).
    Search,
}

impl Op {
    /// Every operation, in report order.
    pub const ALL: [Op; 12] = [
        Op::Feed,
        Op::Timeline,
        Op::Post,
        Op::PhotoPost,
        Op::Like,
        Op::Follow,
        Op::ViewPhoto,
        Op::Comment,
        Op::Comments,
        Op::Notifications,
        Op::DeletePost,
        Op::Search,
    ];

    /// Its name in mixes and reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Feed => "feed",
            Op::Timeline => "timeline",
            Op::Post => "post",
            Op::PhotoPost => "photo_post",
            Op::Like => "like",
            Op::Follow => "follow",
            Op::ViewPhoto => "view_photo",
            Op::Comment => "comment",
            Op::Comments => "comments",
            Op::Notifications => "notifications",
            Op::DeletePost => "delete_post",
            Op::Search => "search",
        }
    }

    /// The operation named `name` in a mix, if any.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Whether it only reads (a feed, a timeline, a photo, a page of comments or
    /// of notifications, a search): what a scenario may promise never fails
    /// while a redundant node is lost.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Op::Feed | Op::Timeline | Op::ViewPhoto | Op::Comments | Op::Notifications | Op::Search
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Relative weights of the operations (they need not sum to 100).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mix {
    /// Home feed reads.
    pub feed: f64,
    /// User timeline reads.
    pub timeline: f64,
    /// Text posts.
    pub post: f64,
    /// Photo posts (multipart upload, processed by a worker).
    pub photo_post: f64,
    /// Likes.
    pub like: f64,
    /// Follows.
    pub follow: f64,
    /// Photo (thumbnail) views.
    pub view_photo: f64,
    /// Comments written.
    pub comment: f64,
    /// Reads of a post's first page of comments.
    pub comments: f64,
    /// Reads of one's notifications page.
    pub notifications: f64,
    /// Deletions of one's own posts written in this run.
    pub delete_post: f64,
    /// Prefix searches of the user directory.
    pub search: f64,
}

impl Default for Mix {
    /// 90% reads, 10% writes, as before comments, deletions and search existed,
    /// so numbers measured with the default mix stay comparable: reads are 57
    /// home feed, 28 user timeline, 2 comment pages, 2 notification pages, 1
    /// user search (the five points of the new reads taken from feed and
    /// timeline: opening a post's comments and the bell are frequent but rarer
    /// than scrolling, and looking someone up rarer still); writes are
    /// 3 text post, 1 photo post, 2.7 like, 1 comment, 2 follow, 0.3 post
    /// deletion (the comment and the deletion taken from likes: commenting is
    /// rarer than liking, and deleting much rarer than posting, yet often
    /// enough that a short run deletes a few posts and the checker sees them).
    /// No photo views (ask for them with `view_photo=N`).
    fn default() -> Mix {
        Mix {
            feed: 57.0,
            timeline: 28.0,
            post: 3.0,
            photo_post: 1.0,
            like: 2.7,
            follow: 2.0,
            view_photo: 0.0,
            comment: 1.0,
            comments: 2.0,
            notifications: 2.0,
            delete_post: 0.3,
            search: 1.0,
        }
    }
}

impl Mix {
    /// Every weight zero (a starting point for building a mix).
    pub const ZERO: Mix = Mix {
        feed: 0.0,
        timeline: 0.0,
        post: 0.0,
        photo_post: 0.0,
        like: 0.0,
        follow: 0.0,
        view_photo: 0.0,
        comment: 0.0,
        comments: 0.0,
        notifications: 0.0,
        delete_post: 0.0,
        search: 0.0,
    };

    /// Parse `feed=57,timeline=28,post=3,photo_post=1,like=2.7,follow=2,comment=1,comments=2,notifications=2,delete_post=0.3,search=1`; operations
    /// left out weigh 0. Refuses unknown names, repeated names, weights that are
    /// not finite non-negative numbers, and a mix whose weights are all zero.
    pub fn parse(s: &str) -> Result<Mix, BenchError> {
        let mut mix = Mix::ZERO;
        let mut seen = Vec::new();
        if s.trim().is_empty() {
            return Err(BenchError::Invalid(
                "the mix is empty: expected e.g. `feed=60,timeline=30,post=4,like=4,follow=2`".into(),
            ));
        }
        for part in s.split(',') {
            let part = part.trim();
            let Some((name, weight)) = part.split_once('=') else {
                return Err(BenchError::Invalid(format!(
                    "mix entry `{part}` is not `name=weight` (e.g. `feed=60`)"
                )));
            };
            let name = name.trim().to_ascii_lowercase();
            let Some(op) = Op::from_name(&name) else {
                let known: Vec<&str> = Op::ALL.iter().map(|op| op.name()).collect();
                return Err(BenchError::Invalid(format!(
                    "unknown operation `{name}` in the mix (known: {})",
                    known.join(", ")
                )));
            };
            if seen.contains(&op) {
                return Err(BenchError::Invalid(format!("operation `{op}` appears twice in the mix")));
            }
            seen.push(op);
            let w: f64 = weight.trim().parse().map_err(|_| {
                BenchError::Invalid(format!("the mix weight of `{op}` is not a number: `{}`", weight.trim()))
            })?;
            *mix.weight_mut(op) = w;
        }
        mix.validate()?;
        Ok(mix)
    }

    /// The weight of `op`.
    pub fn weight(&self, op: Op) -> f64 {
        match op {
            Op::Feed => self.feed,
            Op::Timeline => self.timeline,
            Op::Post => self.post,
            Op::PhotoPost => self.photo_post,
            Op::Like => self.like,
            Op::Follow => self.follow,
            Op::ViewPhoto => self.view_photo,
            Op::Comment => self.comment,
            Op::Comments => self.comments,
            Op::Notifications => self.notifications,
            Op::DeletePost => self.delete_post,
            Op::Search => self.search,
        }
    }

    fn weight_mut(&mut self, op: Op) -> &mut f64 {
        match op {
            Op::Feed => &mut self.feed,
            Op::Timeline => &mut self.timeline,
            Op::Post => &mut self.post,
            Op::PhotoPost => &mut self.photo_post,
            Op::Like => &mut self.like,
            Op::Follow => &mut self.follow,
            Op::ViewPhoto => &mut self.view_photo,
            Op::Comment => &mut self.comment,
            Op::Comments => &mut self.comments,
            Op::Notifications => &mut self.notifications,
            Op::DeletePost => &mut self.delete_post,
            Op::Search => &mut self.search,
        }
    }

    /// Sum of the weights.
    pub fn total(&self) -> f64 {
        Op::ALL.iter().map(|&op| self.weight(op)).sum()
    }

    /// Refuse non-finite or negative weights and an all-zero mix.
    pub fn validate(&self) -> Result<(), BenchError> {
        for op in Op::ALL {
            let w = self.weight(op);
            if !w.is_finite() {
                return Err(BenchError::Invalid(format!("the mix weight of `{op}` is not finite ({w})")));
            }
            if w < 0.0 {
                return Err(BenchError::Invalid(format!("the mix weight of `{op}` is negative ({w})")));
            }
        }
        if self.total() <= 0.0 {
            return Err(BenchError::Invalid("the mix weights are all zero: nothing to send".into()));
        }
        Ok(())
    }

    /// The operation a uniform draw `u` in `[0, 1)` falls on.
    pub fn pick(&self, u: f64) -> Op {
        let mut x = u * self.total();
        let mut last = Op::Feed;
        for op in Op::ALL {
            let w = self.weight(op);
            if w <= 0.0 {
                continue;
            }
            last = op;
            if x < w {
                return op;
            }
            x -= w;
        }
        last
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for op in Op::ALL {
            let w = self.weight(op);
            if w > 0.0 {
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                write!(f, "{op}={w}")?;
            }
        }
        Ok(())
    }
}

/// A step in the offered rate: `rate` from the start, `step.rate` between
/// `step.from` and `step.to` (counted from the end of the warm-up, like a
/// fault's time), `rate` again after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// When the step starts, into the measured window.
    pub from: Duration,
    /// When it ends.
    pub to: Duration,
    /// Requests per second during the step, above the base rate.
    pub rate: f64,
    /// The operation of the requests the step adds (`None`: drawn from the
    /// mix like the others): a queue burst adds photo posts.
    pub op: Option<Op>,
}

impl Step {
    /// Refuse a step that makes no sense for a run of `config`'s base rate,
    /// duration and users, naming the problem.
    fn validate(&self, config: &BenchConfig) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::Invalid(m));
        if self.from >= self.to {
            return bad(format!(
                "the step must start before it ends (from {:?}, to {:?})",
                self.from, self.to
            ));
        }
        if self.to > config.duration {
            return bad(format!(
                "the step ends at {:?}, after the measured duration {:?}",
                self.to, config.duration
            ));
        }
        if !self.rate.is_finite() {
            return bad(format!(
                "the step's rate must be a finite number of requests per second, not {}",
                self.rate
            ));
        }
        if self.rate <= config.rate {
            return bad(format!(
                "the step's rate {} must be above the base rate {} (a step adds requests)",
                self.rate, config.rate
            ));
        }
        if self.rate > MAX_RATE {
            return bad(format!(
                "the step's rate {} is above the most this generator sends ({MAX_RATE}/s)",
                self.rate
            ));
        }
        if self.op == Some(Op::Follow) && config.users < 2 {
            return bad("a step of follows needs at least 2 users (users cannot follow themselves)".into());
        }
        Ok(())
    }
}

/// A bench run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Base URLs of the public entry, e.g. `http://127.0.1.20:8080`, used round-robin.
    pub targets: Vec<String>,
    /// Requests per second (`> 0`, at most [`MAX_RATE`]); includes the warm-up.
    pub rate: f64,
    /// Measured time (after the warm-up), `> 0`, at most 24 h.
    pub duration: Duration,
    /// Time sent at the same rate before measuring; not recorded.
    pub warmup: Duration,
    /// The operations' weights.
    pub mix: Mix,
    /// User accounts to act as: `{user_prefix}0` … `{user_prefix}{users-1}`.
    pub users: u64,
    /// Username prefix (`user` for the seeded users).
    pub user_prefix: String,
    /// Sign the users up first (an existing account is reused) rather than
    /// relying on seeded ones.
    pub create_users: bool,
    /// Every user's password.
    pub password: String,
    /// Zipf exponent of the user popularity (0 = uniform, 1 = classic Zipf).
    pub zipf_exponent: f64,
    /// Most requests in flight at once. When a request is due and this many are
    /// still in flight, the generator does NOT wait (that would be coordinated
    /// omission): it drops that request and counts it as an error of kind
    /// `overloaded` for its operation.
    pub max_in_flight: usize,
    /// Seed of the random choices (operations, users, arrival times).
    pub seed: u64,
    /// Exponential (Poisson) inter-arrival times instead of a fixed interval.
    pub poisson: bool,
    /// Per-request timeout; a request that exceeds it counts as `timeout`.
    pub request_timeout: Duration,
    /// Fraction (0–1) of acknowledged writes read back at once by their writer,
    /// with the same session and through the same entry, on a read that replicas
    /// serve (a post in the author's own timeline, `liked_by_me` of a liked
    /// post, `followed_by_me` of a followed user): a read-your-writes check.
    pub read_your_writes_fraction: f64,
    /// Verify every acknowledged write at the end (the checker).
    pub verify: bool,
    /// Concurrent requests of the final verification.
    pub verify_concurrency: usize,
    /// How long the checker keeps re-reading a write it did not find before
    /// calling it lost: its fresh sessions have no read-your-writes floor, so a
    /// replica within the lag bound may serve them a little behind.
    pub verify_settle: Duration,
    /// How long the checker waits for every acknowledged photo post to be
    /// processed (`ready`) before reporting the rest as not ready.
    pub photo_ready_timeout: Duration,
    /// Reach the app by name through its DNS servers, from client regions
    /// (`targets` are then [`DnsMode::targets`]); `None`: the targets'
    /// addresses, through one client.
    pub dns: Option<DnsMode>,
    /// CA certificates (PEM) the client trusts for `https://` targets besides
    /// its built-in roots: a run directory's `tls/ca.pem`.
    pub ca_pem: Option<Vec<u8>>,
    /// The operator's token that lets this generator's signups and logins past
    /// the web tier's per-address limits (`abuse.bypass_token`, which `millions
    /// up` sets to the run directory's admin token): every request comes from one
    /// address.
    pub bypass_token: Option<String>,
    /// A step in the offered rate during the measured window (a spike, a
    /// burst of photo posts); `None`: `rate` throughout. With a step the
    /// report also has a per-second timeline and the step's phases.
    pub step: Option<Step>,
}

impl Default for BenchConfig {
    fn default() -> BenchConfig {
        BenchConfig {
            targets: Vec::new(),
            rate: 100.0,
            duration: Duration::from_secs(60),
            warmup: Duration::from_secs(5),
            mix: Mix::default(),
            users: 1000,
            user_prefix: "user".into(),
            create_users: false,
            password: String::new(),
            zipf_exponent: 1.0,
            max_in_flight: 1024,
            seed: 1,
            poisson: false,
            request_timeout: Duration::from_secs(10),
            read_your_writes_fraction: 1.0,
            verify: true,
            verify_concurrency: 16,
            verify_settle: Duration::from_secs(5),
            photo_ready_timeout: Duration::from_secs(60),
            dns: None,
            ca_pem: None,
            bypass_token: None,
            step: None,
        }
    }
}

impl BenchConfig {
    /// The CA certificates of `ca_pem`, for the HTTP client.
    pub(crate) fn roots(&self) -> Result<Vec<reqwest::Certificate>, BenchError> {
        match &self.ca_pem {
            None => Ok(Vec::new()),
            Some(pem) => reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| BenchError::Invalid(format!("the CA certificates are not PEM: {e}"))),
        }
    }

    /// Refuse a configuration that makes no sense, naming the problem.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::Invalid(m));
        if self.ca_pem.is_some() && self.roots()?.is_empty() {
            return bad("the CA certificates hold no CERTIFICATE".into());
        }
        if self.targets.is_empty() {
            return bad(
                "no targets: give at least one web server base URL (e.g. http://127.0.0.1:8080)".into()
            );
        }
        for t in &self.targets {
            match reqwest::Url::parse(t) {
                Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
                    if u.query().is_some() || u.fragment().is_some() {
                        return bad(format!("target `{t}` must be a base URL without query or fragment"));
                    }
                }
                Ok(_) => return bad(format!("target `{t}` is not an http(s) URL with a host")),
                Err(e) => return bad(format!("target `{t}` is not a valid URL: {e}")),
            }
        }
        if !self.rate.is_finite() {
            return bad(format!(
                "the rate must be a finite number of requests per second, not {}",
                self.rate
            ));
        }
        if self.rate <= 0.0 {
            return bad(format!("the rate must be above 0 requests per second, not {}", self.rate));
        }
        if self.rate > MAX_RATE {
            return bad(format!(
                "the rate {} is above the most this generator sends ({MAX_RATE}/s)",
                self.rate
            ));
        }
        if self.duration.is_zero() {
            return bad("the duration must be above zero".into());
        }
        if self.duration > MAX_DURATION {
            return bad(format!("the duration {:?} is longer than 24 h", self.duration));
        }
        if self.warmup > MAX_DURATION {
            return bad(format!("the warm-up {:?} is longer than 24 h", self.warmup));
        }
        self.mix.validate()?;
        if let Some(dns) = &self.dns {
            dns.validate()?;
            if self.targets != dns.targets() {
                return bad(format!(
                    "in DNS mode the targets are the app's name once per client region ({:?}), not {:?}",
                    dns.targets(),
                    self.targets
                ));
            }
        }
        if self.users == 0 {
            return bad("the number of users must be at least 1".into());
        }
        if let Some(step) = &self.step {
            step.validate(self)?;
        }
        if self.users < 2 && self.mix.follow > 0.0 {
            return bad("follows need at least 2 users (users cannot follow themselves)".into());
        }
        if self.create_users && self.users > MAX_CREATED_USERS {
            return bad(format!(
                "creating {} users is more than {MAX_CREATED_USERS}: seed them with `millions seed` instead",
                self.users
            ));
        }
        let longest = format!("{}{}", self.user_prefix, self.users - 1);
        if !self.user_prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return bad(format!(
                "the user prefix `{}` may use only a-z, 0-9 and underscores",
                self.user_prefix
            ));
        }
        if format!("{}0", self.user_prefix).len() < 3 || longest.len() > 30 {
            return bad(format!(
                "usernames `{}0`…`{longest}` must be 3 to 30 characters long",
                self.user_prefix
            ));
        }
        if self.password.is_empty() {
            return bad("the users' password is empty".into());
        }
        if !self.zipf_exponent.is_finite() || self.zipf_exponent < 0.0 || self.zipf_exponent > 10.0 {
            return bad(format!("the Zipf exponent must be between 0 and 10, not {}", self.zipf_exponent));
        }
        if self.max_in_flight == 0 {
            return bad("max in flight must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            return bad("the request timeout must be above zero".into());
        }
        if !(0.0..=1.0).contains(&self.read_your_writes_fraction) {
            return bad(format!(
                "the read-your-writes fraction must be between 0 and 1, not {}",
                self.read_your_writes_fraction
            ));
        }
        if self.verify && self.verify_concurrency == 0 {
            return bad("the verification concurrency must be at least 1".into());
        }
        if self.verify_settle > MAX_DURATION || self.photo_ready_timeout > MAX_DURATION {
            return bad("the checker's settle time and photo deadline must be at most 24 h".into());
        }
        Ok(())
    }

    /// The username of user `i`.
    pub fn username(&self, i: u64) -> String {
        format!("{}{i}", self.user_prefix)
    }

    /// The checker's settings from this run's.
    pub fn verify_options(&self) -> VerifyOptions {
        VerifyOptions {
            concurrency: self.verify_concurrency,
            settle: self.verify_settle,
            photo_ready_timeout: self.photo_ready_timeout,
            feed_settle: FEED_SETTLE,
        }
    }
}

/// How the checker reads.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Most requests at once.
    pub concurrency: usize,
    /// See [`BenchConfig::verify_settle`].
    pub settle: Duration,
    /// See [`BenchConfig::photo_ready_timeout`].
    pub photo_ready_timeout: Duration,
    /// How long a post may take to reach a reader's home feed ([`FEED_SETTLE`]
    /// by default; `settle` if longer).
    pub feed_settle: Duration,
}

/// How long a post may take to reach its readers' home feeds: a push normally
/// lands before the post is acknowledged, but one that failed is the outbox
/// job's, which a worker runs 30 s after the post (`data::FANOUT_DELAY`); the
/// rest is a worker's claim interval and the job's run.
pub const FEED_SETTLE: Duration = Duration::from_secs(40);

impl Default for VerifyOptions {
    fn default() -> VerifyOptions {
        BenchConfig::default().verify_options()
    }
}
