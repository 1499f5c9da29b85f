//! The open-loop schedule: the run's requests in order (when each is due, what it
//! is, as whom), drawn from the seeded generator.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::config::{BenchConfig, Op, Step};
use super::zipf::Zipf;

/// The run's requests in order, drawn from the seeded generator: the run loop and
/// the pre-run logins draw the same sequence, so every user the run will act as is
/// logged in before the clock starts.
pub(super) struct Schedule {
    /// The seeded generator.
    rng: StdRng,
    /// User popularity.
    zipf: Zipf,
    /// Mean seconds between requests outside the step.
    interval: f64,
    /// Exponential gaps instead of a fixed interval.
    poisson: bool,
    /// Users (for picking a followee distinct from the user).
    users: u64,
    /// When the next request is due, seconds after the warm-up's start: the
    /// step is counted from the end of the warm-up, so the gaps follow it.
    offset: f64,
    /// The step in the rate, in offsets from the warm-up's start, if any.
    step: Option<StepWindow>,
}

/// [`Step`] as the schedule uses it.
#[derive(Debug, Clone, Copy)]
struct StepWindow {
    /// When it starts, seconds after the warm-up's start.
    from: f64,
    /// When it ends (excluded).
    to: f64,
    /// Mean seconds between requests during it.
    interval: f64,
    /// Chance that a request due during it is one the step adds:
    /// `(step.rate - rate) / step.rate`.
    added: f64,
    /// The operation of an added request (`None`: the mix's pick).
    op: Option<Op>,
}

impl Schedule {
    pub(super) fn new(config: &BenchConfig) -> Self {
        let warmup = config.warmup.as_secs_f64();
        let step = config.step.as_ref().map(|s: &Step| StepWindow {
            from: warmup + s.from.as_secs_f64(),
            to: warmup + s.to.as_secs_f64(),
            interval: 1.0 / s.rate,
            added: (s.rate - config.rate) / s.rate,
            op: s.op,
        });
        Schedule {
            rng: StdRng::seed_from_u64(config.seed),
            zipf: Zipf::new(config.users, config.zipf_exponent),
            interval: 1.0 / config.rate,
            poisson: config.poisson,
            users: config.users,
            offset: 0.0,
            step,
        }
    }

    /// When the request [`Schedule::next`] gives next is due, seconds after
    /// the warm-up's start.
    pub(super) fn due(&self) -> f64 {
        self.offset
    }

    /// The step, if the request due at `offset` falls in it.
    fn step_at(&self, offset: f64) -> Option<StepWindow> {
        self.step.filter(|s| s.from <= offset && offset < s.to)
    }

    /// Mean seconds between requests at `offset`: `1/rate`, or `1/step.rate`
    /// in the step.
    fn interval_at(&self, offset: f64) -> f64 {
        self.step_at(offset).map_or(self.interval, |s| s.interval)
    }

    /// The first change of the rate after `offset` (the step's start or end).
    fn change_after(&self, offset: f64) -> Option<f64> {
        let s = self.step?;
        [s.from, s.to].into_iter().find(|&at| at > offset)
    }

    /// When the request after the one due at `from` is due, `requests` (1, or
    /// an exponential draw of mean 1 with `poisson`) intervals later at the
    /// rate of the time: `from + requests/rate` within one rate; a gap that
    /// crosses a change of the rate goes on at the new rate from the change,
    /// for what is left of it (so the step starts and ends on time, not up to
    /// an interval of the old rate late).
    fn after(&self, from: f64, mut requests: f64) -> f64 {
        let mut at = from;
        loop {
            let interval = self.interval_at(at);
            let end = at + requests * interval;
            match self.change_after(at) {
                Some(change) if end > change => {
                    requests = (requests - (change - at) / interval).max(0.0);
                    at = change;
                }
                _ => return end,
            }
        }
    }

    /// The next request (due at [`Schedule::due`]); the one after it is due
    /// `1/rate` later at the rate of the time, or an exponential draw of that
    /// mean with `poisson` ([`Schedule::after`]). The draws come in the same
    /// order whether or not the request falls in the step (only the draws of a
    /// follow and a search depend on the operation), so that the sequence is
    /// the seed's alone.
    pub(super) fn next(&mut self, config: &BenchConfig) -> Job {
        let in_step = self.step_at(self.offset);
        let rng = &mut self.rng;
        let requests = if self.poisson { -(1.0 - rng.random::<f64>()).ln() } else { 1.0 };
        // Whether the request is one the step adds: drawn for every request of
        // a run with a step (none without one, which keeps the sequence of a
        // run without a step what it always was).
        let added = self.step.is_some() && rng.random::<f64>() < in_step.map_or(0.0, |s| s.added);
        let mut op = config.mix.pick(rng.random());
        if added && let Some(step_op) = in_step.and_then(|s| s.op) {
            op = step_op;
        }
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
        self.offset = self.after(self.offset, requests);
        Job { op, user, other, ryw }
    }

    /// The distinct users acting in requests due before `span` (warm-up and
    /// measured window, the step's added requests included), most popular
    /// first.
    pub(super) fn acting_users(config: &BenchConfig, span: Duration) -> Vec<u64> {
        let mut schedule = Schedule::new(config);
        let mut seen = std::collections::BTreeSet::new();
        while schedule.due() < span.as_secs_f64() {
            seen.insert(schedule.next(config).user);
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
    use std::collections::BTreeSet;

    use super::super::config::Mix;
    use super::*;

    /// `Schedule::next` as it was before steps, on its own generator: the gap
    /// after the request, and the request.
    fn next_before_steps(rng: &mut StdRng, zipf: &Zipf, config: &BenchConfig) -> (f64, Job) {
        let interval = 1.0 / config.rate;
        let gap = if config.poisson { -(1.0 - rng.random::<f64>()).ln() * interval } else { interval };
        let op = config.mix.pick(rng.random());
        let user = zipf.sample(|| rng.random());
        let mut other = rng.random::<u64>();
        if op == Op::Follow {
            other = zipf.sample(|| rng.random());
            if other == user {
                other = (user + 1) % config.users;
            }
        }
        if op == Op::Search {
            let len = rng.random_range(SEARCH_PREFIX.clone());
            other = search_draw(zipf.sample(|| rng.random()), len);
        }
        let ryw = rng.random::<f64>() < config.read_your_writes_fraction;
        (gap, Job { op, user, other, ryw })
    }

    /// A step of `rate` from `from` to `to` seconds into the measured window.
    fn step(from: f64, to: f64, rate: f64, op: Option<Op>) -> Option<Step> {
        Some(Step { from: Duration::from_secs_f64(from), to: Duration::from_secs_f64(to), rate, op })
    }

    /// 100/s with 1 s of warm-up and 8 s measured, and `step`.
    fn stepped(step: Option<Step>, poisson: bool) -> BenchConfig {
        BenchConfig {
            rate: 100.0,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(8),
            poisson,
            step,
            ..BenchConfig::default()
        }
    }

    /// Every request of the run of `config` (warm-up and measured window):
    /// when it is due (seconds after the warm-up's start), and what it is.
    fn requests(config: &BenchConfig) -> Vec<(f64, Job)> {
        let end = (config.warmup + config.duration).as_secs_f64();
        let mut schedule = Schedule::new(config);
        let mut all = Vec::new();
        while schedule.due() < end {
            all.push((schedule.due(), schedule.next(config)));
        }
        all
    }

    /// How many of `requests` are due in `[from, to)`.
    fn due_in(requests: &[(f64, Job)], from: f64, to: f64) -> usize {
        requests.iter().filter(|(at, _)| (from..to).contains(at)).count()
    }

    #[test]
    fn without_a_step_the_sequence_is_the_one_it_always_was() {
        let mix = Mix::parse("feed=5,follow=2,search=2,post=1").unwrap();
        for poisson in [false, true] {
            let config = BenchConfig {
                rate: 250.0,
                users: 50,
                mix,
                poisson,
                read_your_writes_fraction: 0.5,
                seed: 11,
                step: None,
                ..BenchConfig::default()
            };
            let mut schedule = Schedule::new(&config);
            let mut rng = StdRng::seed_from_u64(config.seed);
            let zipf = Zipf::new(config.users, config.zipf_exponent);
            let (mut offset, mut ops) = (0.0f64, BTreeSet::new());
            for i in 0..3000 {
                assert_eq!(schedule.due(), offset, "request {i}");
                let job = schedule.next(&config);
                let (gap, before) = next_before_steps(&mut rng, &zipf, &config);
                assert_eq!(
                    (job.op, job.user, job.other, job.ryw),
                    (before.op, before.user, before.other, before.ryw),
                    "request {i}, poisson {poisson}"
                );
                if !poisson {
                    assert_eq!(gap, 1.0 / 250.0);
                }
                offset += gap;
                ops.insert(job.op);
            }
            assert_eq!(ops.len(), 4, "every operation of the mix drawn: {ops:?}");
        }
    }

    #[test]
    fn a_step_raises_the_rate_in_its_window_only() {
        // 100/s, 400/s from 2 s to 5 s into the measured window (3 s to 6 s
        // after the warm-up's start).
        let config = stepped(step(2.0, 5.0, 400.0, None), false);
        let all = requests(&config);
        let counts =
            [due_in(&all, 0.0, 1.0), due_in(&all, 1.0, 3.0), due_in(&all, 3.0, 6.0), due_in(&all, 6.0, 9.0)];
        for (got, want) in counts.into_iter().zip([100, 200, 1200, 300]) {
            assert!(got.abs_diff(want) <= 1, "{counts:?}, expected about 100, 200, 1200, 300");
        }
        // The interval is 1/400 s inside the window, 1/100 s outside it; a gap
        // across an edge goes on at the new rate from the edge.
        let mut crossing = 0;
        for pair in all.windows(2) {
            let (at, next) = (pair[0].0, pair[1].0);
            let edge = [3.0, 6.0].into_iter().find(|&e| at < e && e < next);
            let want = match edge {
                None if (3.0..6.0).contains(&at) => 1.0 / 400.0,
                None => 1.0 / 100.0,
                Some(3.0) => (3.0 - at) + (1.0 - (3.0 - at) * 100.0) / 400.0,
                Some(_) => (6.0 - at) + (1.0 - (6.0 - at) * 400.0) / 100.0,
            };
            crossing += usize::from(edge.is_some());
            assert!((next - at - want).abs() < 1e-9, "gap {} at {at}, not {want}", next - at);
        }
        assert!(crossing <= 2, "{crossing} gaps across the step's edges");
        // Poisson arrivals follow the step too, about as many.
        let all = requests(&stepped(step(2.0, 5.0, 400.0, None), true));
        let counts =
            [due_in(&all, 0.0, 1.0), due_in(&all, 1.0, 3.0), due_in(&all, 3.0, 6.0), due_in(&all, 6.0, 9.0)];
        for (got, want) in counts.into_iter().zip([100, 200, 1200, 300]) {
            assert!(got.abs_diff(want) * 100 <= want * 15, "{counts:?}, expected about 100, 200, 1200, 300");
        }
    }

    #[test]
    fn the_requests_a_step_adds_are_of_its_operation_or_the_mix() {
        // 100/s, 400/s from 1 s to 7 s with photo posts added: in the step,
        // 3/4 of the requests are added photo posts, and 1/4 the mix's (1% of
        // those photo posts).
        let share = |all: &[(f64, Job)], from: f64, to: f64, op: Op| {
            let inside: Vec<&Job> =
                all.iter().filter(|(at, _)| (from..to).contains(at)).map(|(_, j)| j).collect();
            inside.iter().filter(|j| j.op == op).count() as f64 / inside.len() as f64
        };
        let all = requests(&stepped(step(1.0, 7.0, 400.0, Some(Op::PhotoPost)), true));
        let during = share(&all, 2.0, 8.0, Op::PhotoPost);
        assert!((during - (0.75 + 0.25 * 0.01)).abs() < 0.03, "photo posts in the step: {during}");
        let outside = share(&all, 0.0, 2.0, Op::PhotoPost);
        assert!(outside < 0.04, "photo posts before the step: {outside}");
        // Added from the mix: the mix's shares throughout (57% feeds).
        let all = requests(&stepped(step(1.0, 7.0, 400.0, None), true));
        let feeds = share(&all, 2.0, 8.0, Op::Feed);
        assert!((feeds - 0.57).abs() < 0.04, "feeds in the step: {feeds}");
        let photos = share(&all, 2.0, 8.0, Op::PhotoPost);
        assert!(photos < 0.04, "photo posts in a step of the mix: {photos}");
    }

    #[test]
    fn the_acting_users_include_those_of_the_step() {
        // Uniform over many users: nearly every request acts as another user.
        let uniform = |step| BenchConfig { users: 1_000_000, zipf_exponent: 0.0, ..stepped(step, true) };
        let span = Duration::from_secs(9);
        let flat = Schedule::acting_users(&uniform(None), span);
        let config = uniform(step(2.0, 5.0, 2000.0, Some(Op::Post)));
        let acting: BTreeSet<u64> = Schedule::acting_users(&config, span).into_iter().collect();
        let all = requests(&config);
        let in_step: BTreeSet<u64> =
            all.iter().filter(|(at, _)| (3.0..6.0).contains(at)).map(|(_, j)| j.user).collect();
        assert!(in_step.len() > 5000, "{}", in_step.len());
        assert!(in_step.is_subset(&acting));
        assert_eq!(acting, all.iter().map(|(_, j)| j.user).collect());
        assert!(acting.len() > flat.len() + 5000, "{} with the step, {} without", acting.len(), flat.len());
    }

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
            let job = schedule.next(&config);
            assert_eq!(job.op, Op::Search);
            let (rank, len) = search_of(job.other);
            assert!(rank < 10 && (2..=4).contains(&len), "{rank} {len}");
            lens.insert(len);
        }
        assert_eq!(lens.into_iter().collect::<Vec<_>>(), [2, 3, 4]);
    }
}
