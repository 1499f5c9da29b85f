//! What the WAN does to the bytes between this DC and one peer DC: one-way delay,
//! jitter, loss (as retransmission delay) and cuts. The same rules check them in
//! the configuration file and in the admin API, so a value refused at start is
//! refused at runtime too.

use serde::{Deserialize, Serialize};

/// The largest delay, jitter or loss penalty accepted, in milliseconds: beyond a
/// few seconds a setting is a typo (a second for a millisecond), not a WAN.
pub const MAX_DELAY_MS: u64 = 10_000;

/// The retransmission delay of a lost chunk unless set: about TCP's first
/// retransmission timeout (200 ms minimum on Linux).
pub const DEFAULT_LOSS_PENALTY_MS: u64 = 200;

/// The conditions of the links to one peer DC.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Conditions {
    /// One-way delay added to every byte in each direction, in milliseconds, so a
    /// round trip grows by twice this. A new connection's set-up (the SYN's trip)
    /// costs it once too.
    pub delay_ms: u64,
    /// Uniform variation of each chunk's delay (± this many milliseconds); order is
    /// kept: a chunk is never due before the one ahead of it.
    pub jitter_ms: u64,
    /// Probability (0 to 1) that a chunk is lost. Both ends speak TCP, which would
    /// resend it, so a loss is a delay of `loss_penalty_ms` on that chunk and on
    /// everything behind it in its direction (head-of-line blocking); no byte is
    /// ever dropped or reordered.
    pub loss: f64,
    /// The retransmission delay a lost chunk costs, in milliseconds.
    pub loss_penalty_ms: u64,
    /// The link is cut: no byte moves either way on open connections (they are
    /// held, not dropped), and new connections wait to reach their target.
    pub cut: bool,
}

impl Default for Conditions {
    fn default() -> Self {
        Conditions {
            delay_ms: 0,
            jitter_ms: 0,
            loss: 0.0,
            loss_penalty_ms: DEFAULT_LOSS_PENALTY_MS,
            cut: false,
        }
    }
}

/// A change to some of a peer DC's conditions (`PUT /admin/conditions/{peer_dc}`):
/// the fields given replace the current ones, the others stay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionsUpdate {
    /// New one-way delay, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// New jitter, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    /// New loss probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// New retransmission delay of a lost chunk, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_penalty_ms: Option<u64>,
    /// Cut (`true`) or heal (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<bool>,
}

/// A condition out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} {message}")]
pub struct InvalidCondition {
    /// The condition's name (`delay_ms`, `loss`, ...).
    pub field: &'static str,
    /// What is wrong with its value.
    pub message: String,
}

impl InvalidCondition {
    /// The condition's name as a setting of the configuration file.
    pub fn setting(&self) -> &'static str {
        match self.field {
            "delay_ms" => "conditions.delay_ms",
            "jitter_ms" => "conditions.jitter_ms",
            "loss" => "conditions.loss",
            "loss_penalty_ms" => "conditions.loss_penalty_ms",
            _ => "conditions",
        }
    }
}

impl Conditions {
    /// Check every value.
    pub fn check(&self) -> Result<(), InvalidCondition> {
        let over = |field: &'static str, value: u64| {
            (value > MAX_DELAY_MS).then(|| InvalidCondition {
                field,
                message: format!("must be at most {MAX_DELAY_MS} ms, got {value}"),
            })
        };
        if let Some(e) = over("delay_ms", self.delay_ms)
            .or_else(|| over("jitter_ms", self.jitter_ms))
            .or_else(|| over("loss_penalty_ms", self.loss_penalty_ms))
        {
            return Err(e);
        }
        // `contains` is false for NaN too.
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(InvalidCondition {
                field: "loss",
                message: format!("must be a probability between 0 and 1, got {}", self.loss),
            });
        }
        Ok(())
    }

    /// These conditions with `update`'s fields replaced (not checked).
    pub fn updated(&self, update: &ConditionsUpdate) -> Conditions {
        Conditions {
            delay_ms: update.delay_ms.unwrap_or(self.delay_ms),
            jitter_ms: update.jitter_ms.unwrap_or(self.jitter_ms),
            loss: update.loss.unwrap_or(self.loss),
            loss_penalty_ms: update.loss_penalty_ms.unwrap_or(self.loss_penalty_ms),
            cut: update.cut.unwrap_or(self.cut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        assert!(Conditions::default().check().is_ok());
        let bad = |c: Conditions| c.check().unwrap_err().field;
        assert_eq!(bad(Conditions { delay_ms: MAX_DELAY_MS + 1, ..Default::default() }), "delay_ms");
        assert_eq!(bad(Conditions { jitter_ms: MAX_DELAY_MS + 1, ..Default::default() }), "jitter_ms");
        assert_eq!(bad(Conditions { loss_penalty_ms: u64::MAX, ..Default::default() }), "loss_penalty_ms");
        for loss in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert_eq!(bad(Conditions { loss, ..Default::default() }), "loss", "{loss}");
        }
        assert!(Conditions { loss: 1.0, delay_ms: MAX_DELAY_MS, ..Default::default() }.check().is_ok());
    }

    #[test]
    fn an_update_replaces_only_what_it_names() {
        let c = Conditions { delay_ms: 40, jitter_ms: 5, ..Default::default() };
        let u: ConditionsUpdate = serde_json::from_str(r#"{"cut": true, "loss": 0.5}"#).unwrap();
        assert_eq!(c.updated(&u), Conditions { cut: true, loss: 0.5, ..c });
        assert!(serde_json::from_str::<ConditionsUpdate>(r#"{"delay": 1}"#).is_err());
    }
}
