//! A run with a step in its rate, second by second: each second of the measured
//! window's requests (by their intended time, as latency is measured from it),
//! errors, p50 and p99, and the requests before, during and after the step.
//!
//! A second's histogram lives only while requests due in it are still out: once
//! the send loop is past it and every request due in it is counted, it is summed
//! up into its percentiles and dropped (a histogram is ~190 KB, a day-long run
//! has 86 400 seconds).

use std::time::Duration;

use hdrhistogram::Histogram;

use super::config::Step;
use super::report::{Phase, Second, StepReport};
use super::state::histogram;

/// The step's phases in [`Timeline::phases`]: before it, during it, after it.
const BEFORE: usize = 0;
/// See [`BEFORE`].
const DURING: usize = 1;
/// See [`BEFORE`].
const AFTER: usize = 2;

/// One second of the measured window, while its requests are answered.
#[derive(Default)]
struct SecondTally {
    /// Requests the send loop found due in it so far.
    due: u64,
    /// Requests due in it counted so far (answered, failed or dropped).
    counted: u64,
    /// Of those, failed (`overloaded` included).
    errors: u64,
    /// Latencies of its answered requests, microseconds; created at the
    /// first, dropped when the second is summed up.
    latency: Option<Histogram<u64>>,
    /// Its `(p50, p99)` in milliseconds once summed up (0 without answers).
    summed: Option<(f64, f64)>,
}

impl SecondTally {
    /// Sum the second up and drop its histogram (once).
    fn sum_up(&mut self) {
        if self.summed.is_some() {
            return;
        }
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        self.summed = Some(match self.latency.take() {
            Some(h) if !h.is_empty() => (ms(&h, 0.50), ms(&h, 0.99)),
            _ => (0.0, 0.0),
        });
    }
}

/// The requests of one phase of the step.
struct PhaseTally {
    /// Requests due in it.
    requests: u64,
    /// Of those, failed.
    errors: u64,
    /// Latencies of the answered ones, microseconds.
    latency: Histogram<u64>,
}

impl PhaseTally {
    /// Nothing yet.
    fn new() -> PhaseTally {
        PhaseTally { requests: 0, errors: 0, latency: histogram() }
    }

    /// As reported.
    fn phase(&self) -> Phase {
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &self.latency;
        let (p50_ms, p99_ms, max_ms) = if h.is_empty() {
            (0.0, 0.0, 0.0)
        } else {
            (ms(h.value_at_quantile(0.50)), ms(h.value_at_quantile(0.99)), ms(h.max()))
        };
        Phase { requests: self.requests, errors: self.errors, p50_ms, p99_ms, max_ms }
    }
}

/// The measured window of a run with a step, second by second, and the step's
/// phases; times are seconds into the measured window.
pub(super) struct Timeline {
    /// When the step starts.
    from: f64,
    /// When it ends (excluded).
    to: f64,
    /// Each second of the measured window (the last one partial when the
    /// duration is not whole seconds).
    seconds: Vec<SecondTally>,
    /// The send loop is past the seconds before this one: no request becomes
    /// due in them any more, so each is summed up once its requests are
    /// counted.
    open_from: usize,
    /// Before, during and after the step ([`BEFORE`], [`DURING`], [`AFTER`]).
    phases: [PhaseTally; 3],
}

impl Timeline {
    /// Empty, for a measured window of `duration` with `step`.
    pub(super) fn new(duration: Duration, step: &Step) -> Timeline {
        let seconds = (duration.as_secs_f64().ceil() as usize).max(1);
        Timeline {
            from: step.from.as_secs_f64(),
            to: step.to.as_secs_f64(),
            seconds: (0..seconds).map(|_| SecondTally::default()).collect(),
            open_from: 0,
            phases: [PhaseTally::new(), PhaseTally::new(), PhaseTally::new()],
        }
    }

    /// The second a request due at `at` falls in.
    fn second(&self, at: f64) -> usize {
        (at.max(0.0) as usize).min(self.seconds.len() - 1)
    }

    /// The phase a request due at `at` falls in.
    fn phase(&self, at: f64) -> usize {
        if at < self.from {
            BEFORE
        } else if at < self.to {
            DURING
        } else {
            AFTER
        }
    }

    /// A request is due at `at` (the send loop's times only grow): the seconds
    /// before its own get no more, and those whose requests are all counted
    /// are summed up.
    pub(super) fn due(&mut self, at: f64) {
        let s = self.second(at);
        self.seconds[s].due += 1;
        for past in self.open_from..s {
            let t = &mut self.seconds[past];
            if t.counted >= t.due {
                t.sum_up();
            }
        }
        self.open_from = self.open_from.max(s);
    }

    /// Count a request due at `at`: failed or not, and its latency in
    /// microseconds if it was answered (a dropped one has none).
    pub(super) fn record(&mut self, at: f64, failed: bool, latency_us: Option<u64>) {
        let s = self.second(at);
        let open_from = self.open_from;
        let t = &mut self.seconds[s];
        t.counted += 1;
        t.errors += u64::from(failed);
        if let Some(us) = latency_us
            && t.summed.is_none()
        {
            t.latency.get_or_insert_with(histogram).saturating_record(us);
        }
        if s < open_from && t.counted >= t.due {
            t.sum_up();
        }
        let p = self.phase(at);
        let phase = &mut self.phases[p];
        phase.requests += 1;
        phase.errors += u64::from(failed);
        if let Some(us) = latency_us {
            phase.latency.saturating_record(us);
        }
    }

    /// Seconds whose histogram is still held.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.seconds.iter().filter(|t| t.latency.is_some()).count()
    }

    /// Once every request is counted: each second, and the step's report for
    /// a base rate of `base_rate`.
    pub(super) fn finish(&mut self, step: &Step, base_rate: f64) -> (Vec<Second>, StepReport) {
        let seconds = self
            .seconds
            .iter_mut()
            .enumerate()
            .map(|(i, t)| {
                t.sum_up();
                let (p50_ms, p99_ms) = t.summed.unwrap_or_default();
                Second { second: i as u32, requests: t.counted, errors: t.errors, p50_ms, p99_ms }
            })
            .collect();
        let report = StepReport {
            from_secs: self.from,
            to_secs: self.to,
            base_rate,
            step_rate: step.rate,
            op: step.op.map(|op| op.name().to_owned()),
            before: self.phases[BEFORE].phase(),
            during: self.phases[DURING].phase(),
            after: self.phases[AFTER].phase(),
        };
        (seconds, report)
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::Op;
    use super::*;

    fn step(from: f64, to: f64) -> Step {
        Step {
            from: Duration::from_secs_f64(from),
            to: Duration::from_secs_f64(to),
            rate: 40.0,
            op: Some(Op::PhotoPost),
        }
    }

    /// `requests` due at `at`, each answered in its latency (ms) or failed
    /// (`None`: dropped, with no latency; a negative latency: failed after it).
    fn run(timeline: &mut Timeline, requests: &[(f64, Option<f64>)]) {
        for &(at, _) in requests {
            timeline.due(at);
        }
        for &(at, latency) in requests {
            let failed = latency.is_none_or(|ms| ms < 0.0);
            timeline.record(at, failed, latency.map(|ms| (ms.abs() * 1000.0) as u64));
        }
    }

    #[test]
    fn requests_are_bucketed_by_their_second_and_split_at_the_step() {
        // 3.5 s measured, the step from 1.5 s to 2.5 s.
        let mut timeline = Timeline::new(Duration::from_secs_f64(3.5), &step(1.5, 2.5));
        run(
            &mut timeline,
            &[
                (0.0, Some(10.0)),
                (0.5, Some(20.0)),
                (0.99, Some(30.0)),
                (1.2, Some(100.0)),
                (1.6, Some(200.0)),
                (1.7, None),
                (2.0, Some(-300.0)),
                (2.4, Some(400.0)),
                (2.6, Some(5.0)),
                (3.4, Some(7.0)),
            ],
        );
        let (seconds, report) = timeline.finish(&step(1.5, 2.5), 10.0);
        let rows: Vec<(u32, u64, u64)> = seconds.iter().map(|s| (s.second, s.requests, s.errors)).collect();
        // Four seconds for 3.5 s; 1.7 (dropped) and 2.0 (failed) are errors.
        assert_eq!(rows, [(0, 3, 0), (1, 3, 1), (2, 3, 1), (3, 1, 0)]);
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.001 + 1e-9;
        let (p50, p99): (Vec<f64>, Vec<f64>) = seconds.iter().map(|s| (s.p50_ms, s.p99_ms)).unzip();
        for (got, want) in p50.iter().zip([20.0, 100.0, 300.0, 7.0]) {
            assert!(close(*got, want), "p50 {p50:?}");
        }
        for (got, want) in p99.iter().zip([30.0, 200.0, 400.0, 7.0]) {
            assert!(close(*got, want), "p99 {p99:?}");
        }

        assert_eq!((report.from_secs, report.to_secs), (1.5, 2.5));
        assert_eq!((report.base_rate, report.step_rate), (10.0, 40.0));
        assert_eq!(report.op.as_deref(), Some("photo_post"));
        // Before 1.5 s: 0.0, 0.5, 0.99, 1.2; during: 1.6, 1.7, 2.0, 2.4; after: 2.6, 3.4.
        let phases = [&report.before, &report.during, &report.after];
        let counts: Vec<(u64, u64)> = phases.iter().map(|p| (p.requests, p.errors)).collect();
        assert_eq!(counts, [(4, 0), (4, 2), (2, 0)]);
        assert!(close(report.before.max_ms, 100.0) && close(report.before.p50_ms, 20.0), "{report:?}");
        // The dropped request has no latency: the others' are 200, 300 and 400.
        assert!(close(report.during.p50_ms, 300.0) && close(report.during.max_ms, 400.0), "{report:?}");
        assert!(close(report.during.p99_ms, 400.0), "{report:?}");
        assert!(close(report.after.p99_ms, 7.0) && close(report.after.max_ms, 7.0), "{report:?}");
        // Every request is in one second and one phase.
        let total: u64 = seconds.iter().map(|s| s.requests).sum();
        assert_eq!(total, phases.iter().map(|p| p.requests).sum::<u64>());
    }

    #[test]
    fn a_second_is_summed_up_once_the_loop_is_past_it_and_its_requests_are_counted() {
        let mut timeline = Timeline::new(Duration::from_secs(10), &step(2.0, 4.0));
        timeline.due(0.1);
        timeline.due(0.6);
        timeline.record(0.1, false, Some(1_000));
        assert_eq!(timeline.held(), 1, "second 0 is still open");
        // The loop moves to second 1: second 0 still has a request out.
        timeline.due(1.2);
        assert_eq!(timeline.held(), 1);
        timeline.record(1.2, false, Some(2_000));
        assert_eq!(timeline.held(), 2);
        // Its last request counted, second 0 is summed up and its histogram dropped.
        timeline.record(0.6, false, Some(1_500));
        assert_eq!(timeline.held(), 1);
        // Second 1 is counted already: it goes when the loop is past it, and
        // a second with nothing due is summed up empty.
        timeline.due(3.5);
        assert_eq!(timeline.held(), 0);
        timeline.record(3.5, true, None);
        // Below 2048 µs the histogram is exact.
        let (seconds, _) = timeline.finish(&step(2.0, 4.0), 1.0);
        assert_eq!(seconds.len(), 10);
        assert_eq!((seconds[0].requests, seconds[0].p50_ms, seconds[0].p99_ms), (2, 1.0, 1.5));
        assert_eq!((seconds[1].requests, seconds[1].p99_ms), (1, 2.0));
        assert_eq!((seconds[2].requests, seconds[2].p99_ms), (0, 0.0));
        assert_eq!((seconds[3].requests, seconds[3].errors, seconds[3].p99_ms), (1, 1, 0.0));
    }
}
