//! Fan-out on write: a new post's id goes into its readers' cached timelines.
//!
//! Used by the web tier for text posts (at once) and by the workers for photo posts
//! (once processed). Fan-out is idempotent (a timeline is a set), so a job that runs
//! twice does no harm.
#![forbid(unsafe_code)]

use cache::{Invalidator, Timelines};
use data::Data;

/// Name of the cache of posts by id (invalidated when a worker finishes a photo).
pub const POST_CACHE: &str = "post";

/// Name of the cache of celebrities' newest post ids, merged into feeds at read time.
pub const CELEBRITY_POSTS_CACHE: &str = "celeb_posts";

/// What a fan-out did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanOut {
    /// Pushed into this many timelines (the author's own included).
    Pushed(usize),
    /// The author is a celebrity: only the author's own timeline got it, and the
    /// cached list of the author's newest posts was invalidated for read-time merging.
    Celebrity,
}

/// Put `post_id` by `author` into its readers' timelines. Users with at least
/// `celebrity_threshold` followers are not fanned out. Failures are logged, not
/// returned: the post is committed, and a timeline that missed it is rebuilt from
/// the database when it goes cold.
pub async fn fan_out(
    data: &Data,
    timelines: &Timelines,
    invalidator: &Invalidator,
    celebrity_threshold: i64,
    post_id: i64,
    author: i64,
    followers_count: i64,
) -> FanOut {
    let mut owners = vec![author];
    let outcome = if followers_count >= celebrity_threshold {
        invalidator.invalidate(CELEBRITY_POSTS_CACHE, &author.to_string()).await;
        FanOut::Celebrity
    } else {
        match data.followers(author).await {
            Ok(followers) => owners.extend(followers),
            Err(e) => {
                tracing::warn!(error = %e, "fan-out: could not list followers; their feeds rebuild later")
            }
        }
        FanOut::Pushed(owners.len())
    };
    if let Err(e) = timelines.push(post_id, &owners).await {
        tracing::warn!(error = %e, readers = owners.len(), "fan-out to timelines failed");
    }
    outcome
}
