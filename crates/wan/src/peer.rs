//! A peer DC as the gateway sees it: the conditions in force on every link to it,
//! published to the links' connections through a watch channel, so a change
//! reaches every open connection at once.

use tokio::sync::watch;

use crate::conditions::{Conditions, ConditionsUpdate, InvalidCondition};
use crate::metrics::PeerGauges;

/// One peer DC.
#[derive(Debug)]
pub(crate) struct Peer {
    /// The DC's name (`dc2`).
    pub(crate) name: String,
    /// The conditions in force; each connection's delay lines and connect wait
    /// hold a receiver. Kept here for as long as any link refers to the peer, so a
    /// receiver never sees the channel closed.
    conditions: watch::Sender<Conditions>,
    /// The metrics showing the conditions in force.
    gauges: PeerGauges,
}

impl Peer {
    /// A peer DC with `initial` conditions.
    pub(crate) fn new(name: &str, initial: Conditions, gauges: PeerGauges) -> Peer {
        gauges.show(&initial);
        Peer { name: name.to_owned(), conditions: watch::Sender::new(initial), gauges }
    }

    /// The conditions in force.
    pub(crate) fn conditions(&self) -> Conditions {
        *self.conditions.borrow()
    }

    /// Apply `update` if the result passes [`Conditions::check`]; returns the
    /// conditions now in force. Read, check and write happen under the channel's
    /// lock, so two changes racing cannot undo each other's fields, and the gauges
    /// show what is in force.
    pub(crate) fn update(&self, update: &ConditionsUpdate) -> Result<Conditions, InvalidCondition> {
        let mut outcome = None;
        self.conditions.send_if_modified(|current| {
            let next = current.updated(update);
            let checked = next.check();
            let changed = checked.is_ok();
            if changed {
                *current = next;
                self.gauges.show(&next);
            }
            outcome = Some(checked.map(|()| next));
            changed
        });
        outcome.expect("send_if_modified runs its closure")
    }

    /// A receiver of the conditions in force and of every change.
    pub(crate) fn watch(&self) -> watch::Receiver<Conditions> {
        self.conditions.subscribe()
    }
}
