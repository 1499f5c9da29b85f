//! The schema's columns, for bulk loaders.
//!
//! A bulk loader (`millions seed`) writes rows with `COPY ... FROM STDIN` rather
//! than through [`crate::Data`], so it needs the tables' names and the columns it
//! fills. They are named here, beside the migrations, and a test runs every
//! statement below against a migrated database: a migration that renames or adds
//! a required column breaks that test, not the seed.
//!
//! A loader sends each row in `COPY`'s text format — one line, fields separated
//! by tabs — with the fields in the order of [`Table::columns`].

/// One table as a bulk loader fills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// The table's name, for messages and statements.
    name: &'static str,
    /// The columns a loader writes, in the order each row gives them.
    columns: &'static str,
    /// `COPY name (columns) FROM STDIN`, built once at compile time.
    copy_sql: &'static str,
}

/// A [`Table`] constant whose statements are spelled out from its name and
/// columns at compile time.
macro_rules! table {
    ($name:literal, $columns:literal) => {
        Table {
            name: $name,
            columns: $columns,
            copy_sql: concat!("COPY ", $name, " (", $columns, ") FROM STDIN"),
        }
    };
}

/// Users with their counters and their creation time.
pub const USERS: Table = table!(
    "users",
    "user_id, username, display_name, password_hash, followers_count, following_count, posts_count, \
     created_at"
);

/// Follow edges on the follower's shard.
pub const FOLLOWS_OUT: Table = table!("follows_out", "user_id, followee_id");

/// Follow edges on the followee's shard.
pub const FOLLOWS_IN: Table = table!("follows_in", "user_id, follower_id");

/// Posts with their like counters and their creation time.
pub const POSTS: Table = table!("posts", "post_id, user_id, caption, like_count, created_at");

/// Likes, on the post's shard.
pub const LIKES: Table = table!("likes", "post_id, user_id, liker_id");

/// Every table of the social graph a loader may fill.
pub const ALL: [Table; 5] = [USERS, POSTS, FOLLOWS_OUT, FOLLOWS_IN, LIKES];

/// Given the names a loader would create (`$1`, a text array), one of them that a
/// shard already has, if any: a loader writes beside what is there, never over it.
pub const USERNAME_TAKEN_SQL: &str = "SELECT username FROM users WHERE username = ANY($1::text[]) LIMIT 1";

/// First in each copy's transaction: no bucket move may start on the shard
/// until the copy commits (a move lists its buckets in `bucket_moves`; ADR 0020).
pub const LOCK_MOVES_SQL: &str = "LOCK TABLE bucket_moves IN SHARE MODE";

/// Then: whether the copy may skip the tables' triggers (`true` or `false`).
/// The only ones are the bucket-move capture triggers, which cost each row a few
/// µs and have nothing to capture or refuse while no bucket ever left the shard;
/// skipping them needs a superuser.
pub const MAY_SKIP_TRIGGERS_SQL: &str = "SELECT coalesce((SELECT rolsuper FROM pg_roles \
     WHERE rolname = current_user), false) AND NOT EXISTS (SELECT 1 FROM bucket_moves)";

/// Then, if it may: the rest of the transaction fires no trigger.
pub const SKIP_TRIGGERS_SQL: &str = "SET LOCAL session_replication_role = replica";

impl Table {
    /// The table's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The columns a loader writes, comma-separated, in the order each row
    /// gives them.
    pub fn columns(&self) -> &'static str {
        self.columns
    }

    /// The `COPY ... FROM STDIN` statement that loads rows of [`Table::columns`]
    /// in text format.
    pub fn copy_sql(&self) -> &'static str {
        self.copy_sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_spelled_from_name_and_columns() {
        assert_eq!(FOLLOWS_OUT.copy_sql(), "COPY follows_out (user_id, followee_id) FROM STDIN");
        assert!(USERS.columns().ends_with("posts_count, created_at"), "{}", USERS.columns());
    }
}
