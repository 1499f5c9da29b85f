//! Rows as the rest of the system sees them.

use serde::{Deserialize, Serialize};

/// A user's public profile, with its denormalized counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user's id; its bucket decides the shard.
    pub user_id: i64,
    /// Normalized (lowercase) unique name.
    pub username: String,
    /// Free-form name shown beside the username.
    pub display_name: String,
    /// How many users follow this one.
    pub followers_count: i64,
    /// How many users this one follows.
    pub following_count: i64,
    /// How many posts this user made.
    pub posts_count: i64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// What logging in needs.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The user's id.
    pub user_id: i64,
    /// The argon2id PHC string.
    pub password_hash: String,
}

/// A post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostRecord {
    /// Time-ordered id carrying the author's bucket.
    pub post_id: i64,
    /// The author.
    pub user_id: i64,
    /// The caption text.
    pub caption: String,
    /// Denormalized like counter.
    pub like_count: i64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// What a follow or like call did, so callers know whether to invalidate caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The state changed.
    Changed,
    /// The state was already as asked (idempotent repeat).
    Unchanged,
}
