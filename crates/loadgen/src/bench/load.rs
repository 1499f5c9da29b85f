//! The open-loop send loop: each request started at its intended time whether or
//! not earlier ones have answered, a due request beyond `max_in_flight` counted as
//! `overloaded` instead of waited for, a progress line about every second, and the
//! wait for the last answers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::config::BenchConfig;
use super::ops;
use super::schedule::{Job, Schedule};
use super::state::Shared;

/// When a run's phases begin and end.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    /// The first request is due (the warm-up begins).
    pub(super) start: Instant,
    /// The measured window begins (requests due before are not recorded).
    pub(super) measure_from: Instant,
    /// No request is due from here on.
    pub(super) end: Instant,
}

impl Clock {
    /// The phases of `config`, starting right away.
    pub(super) fn starting_now(config: &BenchConfig) -> Clock {
        let start = Instant::now() + Duration::from_millis(10);
        let measure_from = start + config.warmup;
        Clock { start, measure_from, end: measure_from + config.duration }
    }
}

/// Send the schedule's requests from `clock.start` until `clock.end`, then wait
/// for the answers still due (each is bounded by the request timeout).
pub(super) async fn send_load(
    config: &BenchConfig,
    shared: &Arc<Shared>,
    clock: Clock,
    progress: &impl Fn(&str),
) {
    let mut schedule = Schedule::new(config);
    let mut next_progress = clock.start + Duration::from_secs(1);
    let step = match &config.step {
        Some(s) => format!(
            ", {:.1} requests/s from {:?} to {:?} into it (added: {})",
            s.rate,
            s.from,
            s.to,
            s.op.map_or("the mix", |op| op.name())
        ),
        None => String::new(),
    };
    progress(&format!(
        "sending {:.1} requests/s for {:?} after {:?} of warm-up{step}, mix {}",
        config.rate, config.duration, config.warmup, config.mix
    ));
    let mut behind = 0u32;
    loop {
        let intended = clock.start + Duration::from_secs_f64(schedule.due());
        if intended >= clock.end {
            break;
        }
        if Instant::now() >= intended {
            // Behind schedule: send without sleeping, but let other tasks run now
            // and then (the runtime may have a single thread).
            behind = behind.wrapping_add(1);
            if behind.is_multiple_of(64) {
                tokio::task::yield_now().await;
            }
        } else if next_progress < intended {
            tokio::time::sleep_until(next_progress).await;
        } else {
            tokio::time::sleep_until(intended).await;
        }
        let now = Instant::now();
        if now >= next_progress {
            let phase = if now < clock.measure_from { "warm-up" } else { "running" };
            progress(&shared.progress_line(phase, now - clock.start));
            next_progress += Duration::from_secs(1);
            continue;
        }
        if now < intended {
            continue;
        }
        // Due: draw the request, then send it (or drop it as overloaded).
        let job = schedule.next(config);
        send_due(config, shared, job, intended);
    }
    drain(shared, clock, next_progress, progress).await;
}

/// Start `job`, due at `intended`, unless `max_in_flight` requests are already
/// outstanding: then it counts as `overloaded` (the generator never waits).
fn send_due(config: &BenchConfig, shared: &Arc<Shared>, job: Job, intended: Instant) {
    shared.due(intended);
    if shared.in_flight.load(Ordering::Acquire) >= config.max_in_flight {
        shared.record(job.op, intended, Err("overloaded"), None);
        return;
    }
    shared.in_flight.fetch_add(1, Ordering::AcqRel);
    shared.sent.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(ops::execute(shared.clone(), job, intended));
}

/// Wait for the answers still due, with a progress line about every second.
async fn drain(shared: &Shared, clock: Clock, mut next_progress: Instant, progress: &impl Fn(&str)) {
    while shared.in_flight.load(Ordering::Acquire) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = Instant::now();
        if now >= next_progress {
            progress(&shared.progress_line("draining", now - clock.start));
            next_progress += Duration::from_secs(1);
        }
    }
}
