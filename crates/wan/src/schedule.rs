//! When a chunk read from one side is due on the other: the time it was read plus
//! the one-way delay, ± jitter, plus the loss penalty if it is lost — and never
//! before the chunk ahead of it, so jitter cannot reorder bytes and a lost chunk
//! holds back everything behind it (TCP's head-of-line blocking).

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::conditions::Conditions;

/// The due times of one direction of one connection, in order.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    /// The due time of the last chunk scheduled: no later chunk is due before it.
    last: Option<Instant>,
}

impl Schedule {
    /// The due time of a chunk read at `now` under `conditions`. With no delay, no
    /// jitter and no loss it is `now` (the chunk goes straight through, no timer),
    /// unless a chunk ahead of it is still waiting.
    pub(crate) fn due(&mut self, now: Instant, conditions: &Conditions, rng: &mut impl Rng) -> Instant {
        let mut ms = conditions.delay_ms as f64;
        if conditions.jitter_ms > 0 {
            let j = conditions.jitter_ms as f64;
            ms += rng.random_range(-j..=j);
        }
        if conditions.loss > 0.0 && rng.random::<f64>() < conditions.loss {
            ms += conditions.loss_penalty_ms as f64;
        }
        let due = if ms > 0.0 { now + Duration::from_secs_f64(ms / 1000.0) } else { now };
        let due = self.last.map_or(due, |last| last.max(due));
        self.last = Some(due);
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn no_delay_is_due_at_once() {
        let mut s = Schedule::default();
        let mut rng = SmallRng::seed_from_u64(1);
        let now = Instant::now();
        assert_eq!(s.due(now, &Conditions::default(), &mut rng), now);
        assert_eq!(s.due(now + ms(1), &Conditions::default(), &mut rng), now + ms(1));
    }

    #[test]
    fn delay_is_added_and_order_kept_under_jitter() {
        let mut s = Schedule::default();
        let mut rng = SmallRng::seed_from_u64(7);
        let c = Conditions { delay_ms: 50, jitter_ms: 40, ..Default::default() };
        let start = Instant::now();
        let mut last = start;
        for i in 0..1000 {
            let read = start + Duration::from_micros(i * 100);
            let due = s.due(read, &c, &mut rng);
            assert!(due >= last, "chunk {i} due before the one ahead of it");
            assert!(due >= read + ms(10), "jitter stays within ±jitter_ms");
            last = due;
        }
        assert!(last <= start + Duration::from_micros(999 * 100) + ms(90));
    }

    #[test]
    fn a_lost_chunk_holds_back_the_ones_behind_it() {
        let mut s = Schedule::default();
        let mut rng = SmallRng::seed_from_u64(3);
        let now = Instant::now();
        let lossy = Conditions { loss: 1.0, loss_penalty_ms: 200, ..Default::default() };
        assert_eq!(s.due(now, &lossy, &mut rng), now + ms(200));
        // Behind it, a chunk not lost waits for it all the same.
        assert_eq!(s.due(now + ms(1), &Conditions::default(), &mut rng), now + ms(200));
        // A chunk kept its due time when the delay went down: later ones wait.
        let slow = Conditions { delay_ms: 1000, ..Default::default() };
        let due = s.due(now + ms(2), &slow, &mut rng);
        assert_eq!(due, now + ms(1002));
        assert_eq!(s.due(now + ms(3), &Conditions::default(), &mut rng), due);
    }
}
