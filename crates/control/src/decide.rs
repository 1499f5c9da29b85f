//! The controller's decisions about a shard, as pure functions of what it
//! observed: is a primary lost, which member is promoted, which replicas serve
//! reads, and how a PostgreSQL node rejoins its shard. The failover watcher and
//! the node starter gather the facts, ask here, and act.

use std::collections::HashSet;
use std::time::Instant;

/// Failed probes in a row that confirm a primary lost.
pub(crate) const CONFIRM_PROBES: u32 = 3;

/// What one probe of a shard's primary found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrimaryProbe {
    /// It answered and is a primary (not in recovery).
    Primary,
    /// It answered, but as a standby: it is not the primary any more.
    InRecovery,
    /// No answer in time (down, hung, or cut off).
    Unreachable,
}

/// What the watcher concludes about a shard's primary after a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrimaryVerdict {
    /// It answered as a primary.
    Healthy,
    /// It failed this many probes in a row, fewer than [`CONFIRM_PROBES`].
    Suspect(u32),
    /// It failed [`CONFIRM_PROBES`] in a row, the first at `since`: fail over.
    Lost {
        /// When the first failed probe of the run was.
        since: Instant,
    },
}

/// Counts a primary's failed probes in a row.
#[derive(Debug, Default, Clone)]
pub(crate) struct PrimaryWatch {
    /// Failed probes in a row.
    failures: u32,
    /// When the first of them was.
    first_failure: Option<Instant>,
}

impl PrimaryWatch {
    /// Take one probe's outcome at `now`. A lost verdict resets the count, so a
    /// failover that fails is tried again only after new confirmation.
    pub(crate) fn observe(&mut self, probe: PrimaryProbe, now: Instant) -> PrimaryVerdict {
        if probe == PrimaryProbe::Primary {
            *self = PrimaryWatch::default();
            return PrimaryVerdict::Healthy;
        }
        self.failures += 1;
        let since = *self.first_failure.get_or_insert(now);
        if self.failures >= CONFIRM_PROBES {
            *self = PrimaryWatch::default();
            return PrimaryVerdict::Lost { since };
        }
        PrimaryVerdict::Suspect(self.failures)
    }

    /// Forget the failures (the primary was stopped on purpose, or replaced).
    pub(crate) fn reset(&mut self) {
        *self = PrimaryWatch::default();
    }
}

/// What a failover found a member that could replace the lost primary to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Candidate {
    /// A standby holding WAL up to `lsn` (received or replayed, the further).
    Standby {
        /// Its WAL position, as a number.
        lsn: i64,
    },
    /// Out of recovery already: an earlier attempt of this failover promoted it.
    Promoted,
    /// It did not answer.
    Unreachable,
    /// Stopped by an operator: never promoted.
    StoppedOnPurpose,
}

/// Whom a failover makes the shard's primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Promotion {
    /// Promote this standby: it holds the most WAL (with synchronous replication,
    /// every acknowledged commit). Ties go to the member listed first.
    Promote(String),
    /// This member is already promoted (an earlier attempt got that far): finish
    /// that failover, whatever the others hold.
    Finish(String),
    /// More than one member is out of recovery: two primaries. Nothing is decided;
    /// an operator must choose which history to keep.
    SplitBrain(Vec<String>),
    /// No member can take over.
    Nobody,
}

/// Choose the new primary among `candidates` (name and what was found), in the
/// shard's member order.
pub(crate) fn choose_promotion(candidates: &[(String, Candidate)]) -> Promotion {
    let promoted: Vec<String> =
        candidates.iter().filter(|(_, c)| *c == Candidate::Promoted).map(|(n, _)| n.clone()).collect();
    match promoted.len() {
        0 => {}
        1 => return Promotion::Finish(promoted[0].clone()),
        _ => return Promotion::SplitBrain(promoted),
    }
    let mut best: Option<(&String, i64)> = None;
    for (name, c) in candidates {
        if let Candidate::Standby { lsn } = c
            && best.is_none_or(|(_, b)| *lsn > b)
        {
            best = Some((name, *lsn));
        }
    }
    best.map_or(Promotion::Nobody, |(name, _)| Promotion::Promote(name.clone()))
}

/// The replicas that serve reads: the members other than `primary` that stream
/// from it, in member order.
pub(crate) fn read_replicas(members: &[String], primary: &str, streaming: &HashSet<String>) -> Vec<String> {
    members.iter().filter(|m| *m != primary && streaming.contains(*m)).cloned().collect()
}

/// What changed in the read set since the last probe: members that stopped
/// streaming (`lost`) and members that stream again (`back`). `known_lost` is
/// updated, so each change is reported once.
pub(crate) fn replica_changes(
    members: &[String],
    primary: &str,
    streaming: &HashSet<String>,
    known_lost: &mut HashSet<String>,
) -> (Vec<String>, Vec<String>) {
    let (mut lost, mut back) = (vec![], vec![]);
    for m in members.iter().filter(|m| *m != primary) {
        if !streaming.contains(m) {
            if known_lost.insert(m.clone()) {
                lost.push(m.clone());
            }
        } else if known_lost.remove(m) {
            back.push(m.clone());
        }
    }
    (lost, back)
}

/// How a PostgreSQL node that is not its shard's primary starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejoin {
    /// It has no data: copy the primary (pg_basebackup).
    Copy,
    /// It last ran as a primary (an old, fenced primary): rewind it onto the
    /// current primary's history (pg_rewind), then follow; if the rewind fails,
    /// copy instead.
    Rewind,
    /// It was a standby: follow the current primary.
    Follow,
}

/// How a node rejoins, from its data directory: whether it holds a cluster
/// (`PG_VERSION`) and whether it was a standby (`standby.signal`).
pub(crate) fn rejoin(has_data: bool, was_standby: bool) -> Rejoin {
    match (has_data, was_standby) {
        (false, _) => Rejoin::Copy,
        (true, false) => Rejoin::Rewind,
        (true, true) => Rejoin::Follow,
    }
}

/// Whether a switchover's target has every commit of the old primary, stopped
/// cleanly: it received WAL past the old primary's shutdown checkpoint (its last
/// record). `None`: it received nothing by streaming.
pub(crate) fn caught_up(target_received: Option<i64>, old_checkpoint: u64) -> bool {
    target_received.is_some_and(|r| r >= 0 && r as u64 > old_checkpoint)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_primary_is_lost_after_the_confirming_probes_in_a_row_and_only_then() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = PrimaryWatch::default();
        assert_eq!(w.observe(PrimaryProbe::Unreachable, at(0)), PrimaryVerdict::Suspect(1));
        assert_eq!(w.observe(PrimaryProbe::Unreachable, at(200)), PrimaryVerdict::Suspect(2));
        // One good answer and the count starts over.
        assert_eq!(w.observe(PrimaryProbe::Primary, at(400)), PrimaryVerdict::Healthy);
        assert_eq!(w.observe(PrimaryProbe::Unreachable, at(600)), PrimaryVerdict::Suspect(1));
        assert_eq!(w.observe(PrimaryProbe::Unreachable, at(800)), PrimaryVerdict::Suspect(2));
        // The loss is dated from the first failure of the run.
        assert_eq!(w.observe(PrimaryProbe::Unreachable, at(1000)), PrimaryVerdict::Lost { since: at(600) });
        // After a verdict, a new confirmation is needed.
        assert_eq!(w.observe(PrimaryProbe::Unreachable, at(1200)), PrimaryVerdict::Suspect(1));
        w.reset();
        assert_eq!(w.observe(PrimaryProbe::Unreachable, at(1400)), PrimaryVerdict::Suspect(1));
    }

    #[test]
    fn a_primary_that_answers_as_a_standby_is_as_lost_as_a_silent_one() {
        let t0 = Instant::now();
        let mut w = PrimaryWatch::default();
        let outcomes = [PrimaryProbe::InRecovery, PrimaryProbe::Unreachable, PrimaryProbe::InRecovery];
        let verdicts: Vec<_> = outcomes.iter().map(|p| w.observe(*p, t0)).collect();
        assert_eq!(
            verdicts,
            [PrimaryVerdict::Suspect(1), PrimaryVerdict::Suspect(2), PrimaryVerdict::Lost { since: t0 }]
        );
    }

    fn c(name: &str, candidate: Candidate) -> (String, Candidate) {
        (name.to_owned(), candidate)
    }

    #[test]
    fn the_standby_holding_the_most_wal_is_promoted() {
        let found = [
            c("pg-2", Candidate::Standby { lsn: 100 }),
            c("pg-3", Candidate::Standby { lsn: 250 }),
            c("pg-4", Candidate::Standby { lsn: 90 }),
        ];
        assert_eq!(choose_promotion(&found), Promotion::Promote("pg-3".into()));
    }

    #[test]
    fn equally_advanced_standbys_go_to_the_first_listed() {
        let found = [c("pg-2", Candidate::Standby { lsn: 7 }), c("pg-3", Candidate::Standby { lsn: 7 })];
        assert_eq!(choose_promotion(&found), Promotion::Promote("pg-2".into()));
    }

    #[test]
    fn unreachable_and_stopped_members_are_never_promoted() {
        let found = [
            c("pg-2", Candidate::Unreachable),
            c("pg-3", Candidate::StoppedOnPurpose),
            c("pg-4", Candidate::Standby { lsn: 0 }),
        ];
        assert_eq!(choose_promotion(&found), Promotion::Promote("pg-4".into()));
        let none = [c("pg-2", Candidate::Unreachable), c("pg-3", Candidate::StoppedOnPurpose)];
        assert_eq!(choose_promotion(&none), Promotion::Nobody);
        assert_eq!(choose_promotion(&[]), Promotion::Nobody, "no replica left at all");
    }

    #[test]
    fn an_already_promoted_member_is_kept_whatever_the_others_hold() {
        let found = [c("pg-2", Candidate::Standby { lsn: 999 }), c("pg-3", Candidate::Promoted)];
        assert_eq!(choose_promotion(&found), Promotion::Finish("pg-3".into()));
    }

    #[test]
    fn two_members_out_of_recovery_is_split_brain_and_nothing_is_chosen() {
        let found = [
            c("pg-2", Candidate::Promoted),
            c("pg-3", Candidate::Standby { lsn: 5 }),
            c("pg-4", Candidate::Promoted),
        ];
        assert_eq!(choose_promotion(&found), Promotion::SplitBrain(vec!["pg-2".into(), "pg-4".into()]));
    }

    #[test]
    fn reads_go_to_the_streaming_members_and_changes_are_reported_once() {
        let members: Vec<String> = ["pg-1", "pg-2", "pg-3"].map(String::from).to_vec();
        let streaming: HashSet<String> = ["pg-3", "pg-1"].map(String::from).into();
        assert_eq!(read_replicas(&members, "pg-1", &streaming), ["pg-3"], "never the primary itself");
        let mut lost = HashSet::new();
        assert_eq!(replica_changes(&members, "pg-1", &streaming, &mut lost), (vec!["pg-2".into()], vec![]));
        assert_eq!(replica_changes(&members, "pg-1", &streaming, &mut lost), (vec![], vec![]), "once");
        let all: HashSet<String> = members.iter().cloned().collect();
        assert_eq!(replica_changes(&members, "pg-1", &all, &mut lost), (vec![], vec!["pg-2".into()]));
        assert!(lost.is_empty());
        assert!(read_replicas(&members, "pg-1", &HashSet::new()).is_empty());
    }

    #[test]
    fn a_switchover_target_must_be_past_the_old_primarys_last_record() {
        assert!(caught_up(Some(101), 100));
        assert!(!caught_up(Some(100), 100), "at the checkpoint record's start, not past it");
        assert!(!caught_up(Some(50), 100));
        assert!(!caught_up(None, 100), "nothing received by streaming");
        assert!(!caught_up(Some(-1), 0));
    }

    #[test]
    fn a_node_rejoins_by_copy_rewind_or_follow_from_its_data() {
        assert_eq!(rejoin(false, false), Rejoin::Copy);
        assert_eq!(rejoin(false, true), Rejoin::Copy, "a standby.signal without data is no cluster");
        assert_eq!(rejoin(true, false), Rejoin::Rewind, "it last ran as a primary");
        assert_eq!(rejoin(true, true), Rejoin::Follow);
    }
}
