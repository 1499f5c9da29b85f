//! The `notify` job: deliver one notification (a follow, a like, a comment) on
//! its recipient's shard, then drop the recipient's cached unread count so every
//! web server's top bar shows it.
//!
//! Idempotent: the notification's key names the event, so a job run twice (its
//! worker died after the insert, before completing the job) stores one row; the
//! invalidation runs on every attempt, so a run that died between the two still
//! leaves no stale count behind. This data center's Redis must take the
//! invalidation (else the job is retried); a peer data center's that does not is
//! only logged: its copy lapses with its TTL.

use data::{Change, Job, Notify, UNREAD_CACHE};

use crate::{Context, JobError};

/// Deliver the job's notification and invalidate the recipient's unread count.
pub(crate) async fn notify(ctx: &Context, job: &Job) -> Result<(), JobError> {
    let n = Notify::from_payload(&job.payload).map_err(JobError::Permanent)?;
    let change = ctx
        .data()
        .deliver_notification(&n)
        .await
        .map_err(|e| JobError::Retry(format!("delivering the notification: {e}")))?;
    match ctx.inner.invalidator.invalidate(UNREAD_CACHE, &n.recipient.to_string()).await {
        Ok(()) => {}
        Err(e) if e.is_local() => {
            return Err(JobError::Retry(format!("invalidating the unread count: {e}")));
        }
        // Another data center's Redis did not take it: its count catches up
        // within its entries' TTL (a peer that missed writes is cleared when it
        // is reached again, ADR 0012), as for a web server's invalidations. Not
        // worth holding the notification's job for, nor burying it.
        Err(e) => {
            tracing::warn!(error = %e, recipient = n.recipient, "a peer's unread count not invalidated")
        }
    }
    match change {
        Change::Changed => {
            tracing::info!(recipient = n.recipient, kind = n.kind.as_str(), "notification delivered")
        }
        Change::Unchanged => tracing::info!(
            recipient = n.recipient,
            kind = n.kind.as_str(),
            "notification already delivered (or no such recipient)"
        ),
    }
    Ok(())
}
