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
        if op == Op::Search {
            // The searched user's rank, and the prefix's length above it.
            let len = rng.random_range(SEARCH_PREFIX.clone());
            other = search_draw(self.zipf.sample(|| rng.random()), len);
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

/// Lengths of a search's name prefix, in characters.
pub(super) const SEARCH_PREFIX: std::ops::RangeInclusive<u64> = 2..=4;

/// A search's draw in [`Job::other`]: the searched user's rank in the low 48
/// bits, the prefix length above them.
fn search_draw(rank: u64, len: u64) -> u64 {
    (len << 48) | (rank & ((1 << 48) - 1))
}

/// A search's `(rank, prefix length)` from [`Job::other`].
pub(super) fn search_of(other: u64) -> (u64, usize) {
    (other & ((1 << 48) - 1), (other >> 48) as usize)
}

/// One request to make.
#[derive(Debug, Clone, Copy)]
pub(super) struct Job {
    /// The operation drawn.
    pub(super) op: Op,
    /// The user acting (a Zipf draw).
    pub(super) user: u64,
    /// The followee, the searched user and prefix length ([`search_of`]), or a
    /// draw to pick a post or photo with.
    pub(super) other: u64,
    /// Read the write back at once (if it is one).
    pub(super) ryw: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_draw_gives_back_its_rank_and_length() {
        for (rank, len) in [(0, 2), (7, 3), (999_999, 4)] {
            assert_eq!(search_of(search_draw(rank, len)), (rank, len as usize));
        }
    }

    #[test]
    fn searches_draw_prefixes_of_two_to_four_characters_of_existing_users() {
        let mix = super::super::config::Mix::parse("search=1").unwrap();
        let config = BenchConfig { users: 10, mix, ..BenchConfig::default() };
        let mut schedule = Schedule::new(&config);
        let mut lens = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let (_, job) = schedule.next(&config);
            assert_eq!(job.op, Op::Search);
            let (rank, len) = search_of(job.other);
            assert!(rank < 10 && (2..=4).contains(&len), "{rank} {len}");
            lens.insert(len);
        }
        assert_eq!(lens.into_iter().collect::<Vec<_>>(), [2, 3, 4]);
    }
}
