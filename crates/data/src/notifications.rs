//! Notifications: someone followed a user, liked or commented on their post.
//!
//! A notification is produced through the job queue, never inline in the
//! request: the statement that writes the follow edge (the followee's side), the
//! like or the comment also enqueues a [`NOTIFY_JOB`] on that same shard, only
//! when it created the row (an idempotent repeat enqueues nothing) and never for
//! oneself. A worker then delivers it ([`Data::deliver_notification`]) on the
//! recipient's shard, idempotently: the row's key (`dedup`) names the event, so a
//! job that runs twice inserts one row.
//!
//! The job's payload ([`Notify`], JSON):
//!
//! ```json
//! {"kind": "follow" | "like" | "comment", "recipient": 123, "actor": 456,
//!  "post_id": 789, "comment_id": 1011}
//! ```
//!
//! `post_id` is required for `like` and `comment` (absent for `follow`),
//! `comment_id` for `comment` only. The job's own `user_id` is the owner of the
//! row that enqueued it (the job lives, and moves, with that row's bucket); the
//! recipient's shard is found from the payload. A statement enqueues it with the
//! SQL of [`enqueue_notify_sql`].
//!
//! Unfollowing or unliking does not take a notification back: it was true when
//! it was sent, and the `dedup` key keeps a follow-unfollow-follow (or like
//! again) from notifying twice.
//!
//! Read state: each row has `seen`; the unread count is counted up to
//! [`UNREAD_CAP`] (the top bar shows "99+" past it), through the index of unseen
//! rows, and cached by the web tier under [`UNREAD_CACHE`], which the worker
//! invalidates after each delivery.

use serde::{Deserialize, Serialize};
use sharding::user_bucket;
use tokio_postgres::Row;

use crate::error::{DataError, QueryError};
use crate::load::ReadOf;
use crate::model::Change;
use crate::route::{Data, Lsn, Place};
use crate::rows::rows;

/// The job kind that delivers a notification.
pub const NOTIFY_JOB: &str = "notify";

/// Attempts a notify job gets before it is a dead letter: a delivery only fails
/// while the recipient's shard is unreachable, so it is given time to return.
pub const NOTIFY_MAX_ATTEMPTS: i32 = 10;

/// The name of the cache of each user's unread count (keyed by user id), which
/// web servers read through and workers invalidate after a delivery.
pub const UNREAD_CACHE: &str = "unread";

/// Unread notifications are counted up to this many: a count of `UNREAD_CAP`
/// means "at least that many". Keeps the count one bounded index scan whatever
/// a celebrity's backlog.
pub const UNREAD_CAP: i64 = 100;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationKind {
    /// The actor started following the recipient.
    Follow,
    /// The actor liked the recipient's post.
    Like,
    /// The actor commented on the recipient's post.
    Comment,
}

impl NotificationKind {
    /// The name stored in the table and the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Follow => "follow",
            NotificationKind::Like => "like",
            NotificationKind::Comment => "comment",
        }
    }

    fn parse(s: &str) -> Option<NotificationKind> {
        match s {
            "follow" => Some(NotificationKind::Follow),
            "like" => Some(NotificationKind::Like),
            "comment" => Some(NotificationKind::Comment),
            _ => None,
        }
    }
}

/// A [`NOTIFY_JOB`]'s payload: one event to tell one user about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// What happened.
    pub kind: NotificationKind,
    /// Who is told (the followee, the post's author).
    pub recipient: i64,
    /// Who did it (the follower, the liker, the commenter).
    pub actor: i64,
    /// The post liked or commented on (`like`, `comment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_id: Option<i64>,
    /// The comment (`comment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<i64>,
}

impl Notify {
    /// Read and check a job's payload; the reason when it is not a valid one
    /// (no attempt will ever deliver it).
    pub fn from_payload(payload: &serde_json::Value) -> Result<Notify, String> {
        let n: Notify = serde_json::from_value(payload.clone())
            .map_err(|e| format!("bad notify payload {payload}: {e}"))?;
        n.check()?;
        Ok(n)
    }

    /// Whether the fields fit the kind (what the table's checks also require).
    fn check(&self) -> Result<(), String> {
        let (post, comment) = (self.post_id.is_some(), self.comment_id.is_some());
        let fits = match self.kind {
            NotificationKind::Follow => !post && !comment,
            NotificationKind::Like => post && !comment,
            NotificationKind::Comment => post && comment,
        };
        if !fits {
            return Err(format!(
                "a {} notification with post_id {:?}, comment_id {:?}",
                self.kind.as_str(),
                self.post_id,
                self.comment_id
            ));
        }
        if self.recipient == self.actor {
            return Err("a notification to its own actor".into());
        }
        Ok(())
    }

    /// The event's deterministic key: one row per event, however often delivered.
    fn dedup(&self) -> String {
        match self.kind {
            NotificationKind::Follow => format!("follow:{}", self.actor),
            NotificationKind::Like => format!("like:{}:{}", self.post_id.unwrap_or_default(), self.actor),
            NotificationKind::Comment => format!("comment:{}", self.comment_id.unwrap_or_default()),
        }
    }
}

/// One stored notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// Time-ordered id, unique per recipient: pages are ordered and cursored by it.
    pub notification_id: i64,
    /// What happened.
    pub kind: NotificationKind,
    /// Who did it.
    pub actor_id: i64,
    /// The post, for likes and comments.
    pub post_id: Option<i64>,
    /// The comment, for comments.
    pub comment_id: Option<i64>,
    /// Whether the recipient has seen it (marked read).
    pub seen: bool,
    /// When it was delivered, milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// What a notification query selects, in the names [`notification_from`] reads.
const NOTIFICATION_COLUMNS: &str = "notification_id, kind, actor_id, post_id, comment_id, seen, \
     (extract(epoch from created_at) * 1000)::int8 AS created_ms";

fn notification_from(row: &Row) -> NotificationRecord {
    NotificationRecord {
        notification_id: row.get("notification_id"),
        // The table's CHECK allows only the three kinds.
        kind: NotificationKind::parse(row.get("kind")).unwrap_or(NotificationKind::Follow),
        actor_id: row.get("actor_id"),
        post_id: row.get("post_id"),
        comment_id: row.get("comment_id"),
        seen: row.get("seen"),
        created_ms: row.get("created_ms"),
    }
}

/// The SQL of a statement's CTE that enqueues one [`NOTIFY_JOB`] per row of
/// `source` (a CTE or table of the same statement: the rows just created, so an
/// idempotent repeat that created none enqueues none), skipping rows whose
/// recipient is their actor (liking one's own post). Each argument is an SQL
/// expression over `source`'s columns: `owner` the job's owner (the user whose
/// row enqueued it, so the job is on that row's shard and moves with its
/// bucket), `recipient`, `actor`, and `post`/`comment` (`None`: not in the
/// payload); `request_id` the parameter carrying
/// [`telemetry::request_id::current`] (e.g. `$3`).
///
/// For instance a comment written on the commenter's shard, `c` returning it:
///
/// ```text
/// n AS ({enqueue_notify_sql(NotificationKind::Comment, "c", "c.user_id", "c.post_author_id",
///        "c.user_id", Some("c.post_id"), Some("c.comment_id"), "$5")})
/// ```
#[allow(clippy::too_many_arguments)]
pub(crate) fn enqueue_notify_sql(
    kind: NotificationKind,
    source: &str,
    owner: &str,
    recipient: &str,
    actor: &str,
    post: Option<&str>,
    comment: Option<&str>,
    request_id: &str,
) -> String {
    let post = post.map(|p| format!(", 'post_id', {p}")).unwrap_or_default();
    let comment = comment.map(|c| format!(", 'comment_id', {c}")).unwrap_or_default();
    format!(
        "INSERT INTO jobs (kind, user_id, payload, max_attempts, request_id) \
         SELECT '{NOTIFY_JOB}', {owner}, jsonb_build_object('kind', '{kind}', 'recipient', {recipient}, \
                'actor', {actor}{post}{comment}), {NOTIFY_MAX_ATTEMPTS}, {request_id}::text \
         FROM {source} WHERE {recipient} <> {actor}",
        kind = kind.as_str(),
    )
}

impl Data {
    /// Deliver `n` on its recipient's shard (the primary): insert it unless the
    /// same event was delivered before (`Unchanged`: a job run twice, or an event
    /// repeated), or the recipient does not exist (`Unchanged`, nothing stored).
    pub async fn deliver_notification(&self, n: &Notify) -> Result<Change, DataError> {
        n.check().map_err(|_| DataError::Conflict("not a valid notification"))?;
        let recipient = n.recipient;
        let (dedup, kind) = (n.dedup(), n.kind.as_str());
        let (actor, post, comment) = (n.actor, n.post_id, n.comment_id);
        let sql = "INSERT INTO notifications (user_id, dedup, notification_id, kind, actor_id, post_id, comment_id) \
                   SELECT user_id, $2, $3, $4, $5, $6, $7 FROM users WHERE user_id = $1 \
                   ON CONFLICT (user_id, dedup) DO NOTHING RETURNING 1";
        let (dedup, kind) = (&dedup, &kind);
        let inserted = self
            .write("deliver_notification", Place::user(recipient), Lsn::Track, |client| async move {
                let stmt = client.prepare_cached(sql).await?;
                // Another delivery to this recipient may, very rarely, have drawn
                // the same time-ordered id in the same millisecond: draw again.
                for _ in 0..4 {
                    let id = self.next_post_id(recipient);
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
                        [&recipient, dedup, &id, kind, &actor, &post, &comment];
                    match client.query_opt(&stmt, &params).await.map_err(QueryError::from) {
                        Ok(row) => return Ok(row.is_some()),
                        Err(e) if e.is_unique_violation() => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(DataError::Conflict("could not draw a free notification id").into())
            })
            .await?;
        Ok(if inserted { Change::Changed } else { Change::Unchanged })
    }

    /// A user's notifications, newest first, older than `before` (a
    /// `notification_id`) if given.
    pub async fn notifications(
        &self,
        user_id: i64,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<NotificationRecord>, DataError> {
        let shard = self.shard_map().shard_of_user(user_id);
        let before = before.unwrap_or(i64::MAX);
        let sql = &format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE user_id = $1 AND notification_id < $2 \
             ORDER BY notification_id DESC LIMIT $3"
        );
        let of = ReadOf::Bucket(user_bucket(user_id));
        let rows =
            self.read("notifications", shard, of, |c| async move {
                rows(&c, sql, &[&user_id, &before, &limit]).await
            })
            .await?;
        Ok(rows.iter().map(notification_from).collect())
    }

    /// How many of a user's notifications are unseen, counted up to [`UNREAD_CAP`].
    pub async fn unread_notifications(&self, user_id: i64) -> Result<i64, DataError> {
        let shard = self.shard_map().shard_of_user(user_id);
        let sql =
            "SELECT count(*) FROM (SELECT 1 FROM notifications WHERE user_id = $1 AND NOT seen LIMIT $2) n";
        let of = ReadOf::Bucket(user_bucket(user_id));
        let rows = self
            .read("unread_notifications", shard, of, |c| async move {
                rows(&c, sql, &[&user_id, &UNREAD_CAP]).await
            })
            .await?;
        Ok(rows.first().map_or(0, |r| r.get(0)))
    }

    /// Mark a user's notifications seen: all of them, or those up to `up_to` (a
    /// `notification_id`: what a page showed, so one delivered meanwhile stays
    /// unread). Returns how many were unseen.
    pub async fn mark_notifications_seen(&self, user_id: i64, up_to: Option<i64>) -> Result<u64, DataError> {
        let up_to = up_to.unwrap_or(i64::MAX);
        let sql =
            "UPDATE notifications SET seen = true WHERE user_id = $1 AND NOT seen AND notification_id <= $2";
        self.write("mark_notifications_seen", Place::user(user_id), Lsn::Track, |c| async move {
            let stmt = c.prepare_cached(sql).await?;
            Ok(c.execute(&stmt, &[&user_id, &up_to]).await?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_checked_against_their_kind() {
        let ok = serde_json::json!({"kind": "like", "recipient": 1, "actor": 2, "post_id": 3});
        let n = Notify::from_payload(&ok).unwrap();
        assert_eq!(n.dedup(), "like:3:2");
        assert_eq!(serde_json::to_value(&n).unwrap(), ok, "round trip");
        for bad in [
            serde_json::json!({"kind": "like", "recipient": 1, "actor": 2}),
            serde_json::json!({"kind": "follow", "recipient": 1, "actor": 2, "post_id": 3}),
            serde_json::json!({"kind": "comment", "recipient": 1, "actor": 2, "post_id": 3}),
            serde_json::json!({"kind": "follow", "recipient": 1, "actor": 1}),
            serde_json::json!({"kind": "poke", "recipient": 1, "actor": 2}),
            serde_json::json!({"kind": "follow", "recipient": 1, "actor": 2, "extra": true}),
        ] {
            assert!(Notify::from_payload(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_enqueue_sql_names_only_the_fields_given() {
        let sql = enqueue_notify_sql(NotificationKind::Follow, "e", "$1", "$1", "$2", None, None, "$3");
        assert!(sql.contains("'kind', 'follow', 'recipient', $1, 'actor', $2)"), "{sql}");
        assert!(sql.contains("FROM e WHERE $1 <> $2"), "{sql}");
        let sql =
            enqueue_notify_sql(NotificationKind::Like, "e", "e.o", "e.o", "e.a", Some("e.p"), None, "$3");
        assert!(sql.contains("'post_id', e.p)"), "{sql}");
    }
}
