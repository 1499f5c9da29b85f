//! The open-loop schedule: the run's requests in order (when each is due, what it
//! is, as whom), drawn from the seeded generator.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::config::{BenchConfig, Op};
use super::zipf::Zipf;

/// The run's requests in order, drawn from the seeded generator: the run loop and
/// the pre-run logins draw the same sequence, so every user the run will act as is
/// logged in before the clock starts.
pub(super) struct Schedule {
    /// The seeded generator.
    rng: StdRng,
    /// User popularity.
    zipf: Zipf,
    /// Mean seconds between requests.
    interval: f64,
    /// Exponential gaps instead of a fixed interval.
    poisson: bool,
    /// Users (for picking a followee distinct from the user).
    users: u64,
}

impl Schedule {
    pub(super) fn new(config: &BenchConfig) -> Self {
        Schedule {
            rng: StdRng::seed_from_u64(config.seed),
            zipf: Zipf::new(config.users, config.zipf_exponent),
            interval: 1.0 / config.rate,
            poisson: config.poisson,
            users: config.users,
        }
    }

    /// The gap before the request after this one (seconds), and this one.
    pub(super) fn next(&mut self, config: &BenchConfig) -> (f64, Job) {
        let rng = &mut self.rng;
        let gap =
            if self.poisson { -(1.0 - rng.random::<f64>()).ln() * self.interval } else { self.interval };
        let op = config.mix.pick(rng.random());
        let user = self.zipf.sample(|| rng.random());
        let mut other = rng.random::<u64>();
        if op == Op::Follow {
            other = self.zipf.sample(|| rng.random());
            if other == user {
                other = (user + 1) % self.users;
            }
        }
        let ryw = rng.random::<f64>() < config.read_your_writes_fraction;
        (gap, Job { op, user, other, ryw })
    }

    /// The distinct users acting in requests due before `span` (warm-up and
    /// measured window), most popular first.
    pub(super) fn acting_users(config: &BenchConfig, span: Duration) -> Vec<u64> {
        let mut schedule = Schedule::new(config);
        let (mut offset, mut seen) = (0.0f64, std::collections::BTreeSet::new());
        while offset < span.as_secs_f64() {
            let (gap, job) = schedule.next(config);
            seen.insert(job.user);
            offset += gap;
        }
        seen.into_iter().collect()
    }
}

/// One request to make.
#[derive(Debug, Clone, Copy)]
pub(super) struct Job {
    /// The operation drawn.
    pub(super) op: Op,
    /// The user acting (a Zipf draw).
    pub(super) user: u64,
    /// The followee, or a draw to pick a post or photo with.
    pub(super) other: u64,
    /// Read the write back at once (if it is one).
    pub(super) ryw: bool,
}
