//! Fan-out on write: a new post's id goes into its readers' cached timelines.
//!
//! A push asks each data center's Redis for the author's readers (those of the
//! followers whose timelines it holds) and lists every follower from the database
//! only where one does not know them ([`cache::Timelines::push_to_readers`]).
//!
//! Used by the web tier for text posts (at once, with a `fanout` job written with
//! the post as its outbox: a worker runs it if the web's fan-out failed or the web
//! server died) and by the workers for photo posts (once processed) and for those
//! outbox jobs. Fan-out is idempotent (a timeline is a set), so a job that runs
//! twice does no harm; a failed fan-out is reported, so its job runs again.
//! With several data centers a fan-out writes every data center's Redis, and a
//! failure in any of them is reported (ADR 0008).
#![forbid(unsafe_code)]

use cache::{Invalidator, Timelines};
use data::Data;

/// Name of the cache of profiles by user id (invalidated when a worker records an
/// avatar's thumbnails).
pub const PROFILE_CACHE: &str = "profile";

/// Name of the cache of posts by id (invalidated when a worker finishes a photo).
pub const POST_CACHE: &str = "post";

/// Name of the cache of each author's newest post ids: a celebrity's are merged
/// into feeds at read time, and an author's pages are served from them. The web
/// tier invalidates it where a post is written or deleted; a celebrity's fan-out
/// and every retraction invalidate it too.
pub const AUTHOR_POSTS_CACHE: &str = "author_posts";

/// What a fan-out did, and what it cost: its timeline writes, counted in this
/// data center's Redis (every data center's Redis gets the same pushes, into its
/// own timelines, so the count is per data center).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanOut {
    /// Pushed to the author's readers and the author.
    Pushed {
        /// Timelines offered the post in this data center's Redis: the author's
        /// registered readers and the author, or, in a full push, every follower
        /// and the author.
        offered: usize,
        /// Those written: the offered timelines that exist (someone reads them).
        written: usize,
        /// Whether this data center's Redis did not know the author's readers, so
        /// every follower was listed and offered the post
        /// ([`cache::Timelines::push_to_readers`]).
        full: bool,
    },
    /// The author is a celebrity: only the author's own timeline got it, and the
    /// cached list of the author's newest posts was invalidated for read-time merging.
    Celebrity {
        /// The author's timeline, if it exists: 0 or 1.
        written: usize,
    },
}

impl FanOut {
    /// `push` (into followers' timelines) or `pull` (a celebrity's post, merged
    /// into feeds at read time): the `mode` label of the fan-out metrics.
    pub fn mode(&self) -> &'static str {
        match self {
            FanOut::Pushed { .. } => "push",
            FanOut::Celebrity { .. } => "pull",
        }
    }

    /// Timelines offered the post: the author's readers (every follower in a full
    /// push) and the author; a celebrity's: the author only.
    pub fn offered(&self) -> usize {
        match *self {
            FanOut::Pushed { offered, .. } => offered,
            FanOut::Celebrity { .. } => 1,
        }
    }

    /// Whether every follower was listed (this data center's Redis did not know
    /// the author's readers).
    pub fn full(&self) -> bool {
        matches!(self, FanOut::Pushed { full: true, .. })
    }

    /// Timelines written in this data center's Redis.
    pub fn written(&self) -> usize {
        match *self {
            FanOut::Pushed { written, .. } | FanOut::Celebrity { written } => written,
        }
    }
}

/// The fan-out metrics' names (without the `millions_` prefix the registry adds)
/// and help, the same in the web servers (inline fan-out) and the workers (photo
/// posts, outbox jobs): posts fanned out by `mode`, timelines offered, timelines
/// written, pushes that listed every follower. Write amplification per post =
/// writes ÷ posts.
pub const METRICS: [(&str, &str); 4] = [
    (
        "fanout_posts",
        "Posts fanned out, by mode: push (into followers' timelines) or pull (a celebrity's, merged at read time); \
         write amplification per post = millions_fanout_timeline_writes_total / this",
    ),
    (
        "fanout_timelines_offered",
        "Timelines offered a fanned-out post: its author's known readers (every follower where a data center's Redis \
         did not know them; none for a celebrity) and the author",
    ),
    (
        "fanout_timeline_writes",
        "Timelines a fan-out wrote in this data center's Redis (those that exist: someone reads them); \
         write amplification per post = this / millions_fanout_posts_total",
    ),
    (
        "fanout_full_pushes",
        "Pushes that listed every follower from the database because this data center's Redis did not know the \
         author's readers (no readers set, or one not yet complete); the rest offered the post to the known readers only",
    ),
];

/// Why a fan-out (or its retraction) did not reach every reader. The post is committed; fan-out is
/// idempotent, so the caller retries it (a worker job) rather than lose it until
/// the timelines' TTL.
#[derive(Debug, thiserror::Error)]
pub enum FanOutError {
    /// The author's followers could not be listed.
    #[error("listing the followers: {0}")]
    Followers(#[source] data::DataError),
    /// Pushing into the timelines failed, in this data center's Redis or in a
    /// peer's (whose readers would miss the post until it is pushed again).
    #[error("pushing into {readers} timelines: {source}")]
    Timelines {
        /// How many timelines were to get the post.
        readers: usize,
        /// Which Redis failed, and how.
        #[source]
        source: cache::SpreadError,
    },
    /// Taking a deleted post out of the timelines failed, in this data center's
    /// Redis or in a peer's.
    #[error("taking the post out of {readers} timelines: {source}")]
    Retraction {
        /// How many timelines were to lose the post.
        readers: usize,
        /// Which Redis failed, and how.
        #[source]
        source: cache::SpreadError,
    },
    /// A deleted post's cached copy could not be dropped in every data center.
    #[error("invalidating the cached post: {0}")]
    PostInvalidation(#[source] cache::SpreadError),
    /// The cached list of the author's newest posts could not be invalidated in
    /// every data center.
    #[error("invalidating the author's cached posts: {0}")]
    Invalidation(#[source] cache::SpreadError),
}

/// Put `post_id` by `author` into its readers' timelines. Users with at least
/// `celebrity_threshold` followers are not fanned out: their cached list of
/// newest posts is invalidated instead. Any failure is returned: the caller
/// must make sure the fan-out runs again (it is idempotent: a timeline is a set).
/// On success, what it did and the timelines it offered and wrote (in this data
/// center's Redis), for the caller's fan-out metrics ([`METRICS`]).
///
/// The timelines and invalidations reach every data center's Redis (the
/// `Timelines` and `Invalidator` carry the peers), in parallel; a peer that
/// failed is an error like a local failure, so the post reaches that data
/// center's readers when the fan-out is retried.
pub async fn fan_out(
    data: &Data,
    timelines: &Timelines,
    invalidator: &Invalidator,
    celebrity_threshold: i64,
    post_id: i64,
    author: i64,
    followers_count: i64,
) -> Result<FanOut, FanOutError> {
    if followers_count >= celebrity_threshold {
        invalidator
            .invalidate(AUTHOR_POSTS_CACHE, &author.to_string())
            .await
            .map_err(FanOutError::Invalidation)?;
        let written = timelines
            .push(post_id, &[author])
            .await
            .map_err(|source| FanOutError::Timelines { readers: 1, source })?;
        return Ok(FanOut::Celebrity { written });
    }
    // Each Redis is asked for the author's readers (the followers whose timelines
    // it holds); only where it does not know them are the followers listed — on
    // the primary: the readers set made from that list is trusted until it lapses,
    // so it must not miss a follow a lagging replica has not replayed yet.
    let followers = || data::primary_reads(data.followers(author));
    let pushed = timelines.push_to_readers(post_id, author, followers).await.map_err(|e| match e {
        cache::PushError::Followers(e) => FanOutError::Followers(e),
        cache::PushError::Timelines(source) => {
            FanOutError::Timelines { readers: usize::try_from(followers_count).unwrap_or(0) + 1, source }
        }
    })?;
    Ok(FanOut::Pushed { offered: pushed.offered, written: pushed.written, full: pushed.full })
}

/// Take a deleted post out of where fan-out put it: the author's and (unless a
/// celebrity's, never pushed) every follower's timeline, in every data center;
/// the cached copy of the post and the author's cached newest posts are dropped
/// everywhere. Idempotent, like the fan-out it undoes; any failure is returned
/// for the caller (the post's clean-up job) to run it again.
pub async fn retract(
    data: &Data,
    timelines: &Timelines,
    invalidator: &Invalidator,
    celebrity_threshold: i64,
    post_id: i64,
    author: i64,
    followers_count: i64,
) -> Result<(), FanOutError> {
    let mut owners = vec![author];
    if followers_count < celebrity_threshold {
        owners.extend(data.followers(author).await.map_err(FanOutError::Followers)?);
    }
    timelines
        .retract(post_id, &owners)
        .await
        .map_err(|source| FanOutError::Retraction { readers: owners.len(), source })?;
    invalidator.invalidate(POST_CACHE, &post_id.to_string()).await.map_err(FanOutError::PostInvalidation)?;
    invalidator
        .invalidate(AUTHOR_POSTS_CACHE, &author.to_string())
        .await
        .map_err(FanOutError::Invalidation)?;
    Ok(())
}
