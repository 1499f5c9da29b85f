//! `millions bench`: open-loop, fixed-rate load through the public entry, and the
//! checker that every acknowledged write is readable afterwards.
//!
//! Open loop, no coordinated omission: the scheduler computes each request's
//! intended start time (a fixed interval of `1/rate`, or Poisson arrivals) and
//! starts it then, whether or not earlier requests have finished. Latency is
//! measured from the intended start, so a stalled server shows up as latency on
//! every request that was due during the stall, not as a lower rate. When
//! `max_in_flight` requests are outstanding, a due request is not sent and counts
//! as an `overloaded` error: the generator never slows down to match the server.
//!
//! Each operation has its own HDR histogram (microseconds); warm-up requests are
//! sent but not recorded (their acknowledged writes are still checked).
//!
//! The generator watches itself: how late each request's task began sending
//! it (intended start to send) goes into its own histogram, and the report
//! warns when the generator, not the system, was behind.
//!
//! Read-your-writes: right after an acknowledged write, the writer reads it back
//! with the same session through the same entry, on a read replicas serve under
//! the session's floor ([`read_back`]); violations are counted per kind. A
//! comment must be in its post's first page of comments; a post deletion (only
//! of a post this run created, by its author) must make the post answer 404.
//! A post, like or comment on a post this run deleted went with it: neither the
//! read-back nor the checker requires it.
//!
//! A run, in order: `setup` (users signed up and logged in before the clock),
//! `load` (the open-loop send loop over the seeded `schedule`, which follows a
//! step in the rate if one is asked), `ops` (one function per operation of the
//! mix, over the shared run `state` and, with a step, its `timeline` second by
//! second), `faults` (a `--scenario` fault injected under load, and the
//! recovery measured), `checker` (every acknowledged write read back),
//! `summary` (the tallies into a [`Report`]), `verdict` (whether the run
//! passed: its exit status). At the bottom, shared by all: `error`, `failure`,
//! `http`, `config`, `report`.

mod checker;
mod config;
mod dns;
mod error;
mod failure;
mod faults;
mod http;
mod load;
mod ops;
mod photo;
mod report;
mod schedule;
mod setup;
mod state;
mod summary;
mod timeline;
mod verdict;
mod zipf;

use std::sync::Arc;

pub use checker::{ReadBack, Written, read_back, verify};
pub use config::{
    BenchConfig, FEED_SETTLE, MAX_CREATED_USERS, MAX_DURATION, MAX_RATE, Mix, Op, Step, VerifyOptions,
};
pub use dns::{ClientRegion, DcRange, DnsMode, TrafficReport};
pub use error::BenchError;
pub use faults::{Fault, RECOVERY_QUIET};
pub use report::{
    AckedComment, AckedDeletion, AckedFollow, AckedLike, AckedPost, CheckReport, FaultReport, GeneratorLag,
    LISTED_LOST, Latency, OpReport, Phase, Report, RywKind, Second, StepReport, Writes,
};
pub use summary::GENERATOR_LAG_WARN;
pub use verdict::{Breach, Tolerance, Verdict};
pub use zipf::Zipf;

/// Run a bench: validate, set up users, send open-loop load for the warm-up and
/// the measured duration, wait for the last answers, then verify every
/// acknowledged write (unless `config.verify` is off) and judge the run
/// ([`Report::verdict`]). `progress` gets a line about every second.
pub async fn run(config: &BenchConfig, progress: impl Fn(&str)) -> Result<Report, BenchError> {
    run_with_fault(config, progress, None).await
}

/// [`run`], injecting `fault` (if any) under load and reporting how long the
/// system took to recover from it.
pub async fn run_with_fault(
    config: &BenchConfig,
    progress: impl Fn(&str),
    fault: Option<Fault>,
) -> Result<Report, BenchError> {
    config.validate()?;
    let mut shared = state::Shared::new(
        config,
        http::Http::new(
            config.request_timeout,
            config.dns.as_ref(),
            &config.roots()?,
            config.bypass_token.as_deref(),
        )?,
    );
    setup::set_up_users(config, &shared, &progress).await?;

    let clock = load::Clock::starting_now(config);
    let measured_from_unix_ms = (std::time::SystemTime::now()
        + clock.measure_from.saturating_duration_since(tokio::time::Instant::now()))
    .duration_since(std::time::UNIX_EPOCH)
    .map_or(0, |d| d.as_millis() as i64);
    shared.measure_from = clock.measure_from;
    let shared = Arc::new(shared);
    let pending = fault.map(|fault| faults::inject_at(fault, clock.measure_from));
    load::send_load(config, &shared, clock, &progress).await;

    let fault = match pending {
        Some(pending) => Some(faults::measure(pending, &shared, config.duration).await?),
        None => None,
    };
    if fault.is_some() {
        faults::wait_until_ready(&shared).await;
    }
    let writes = state::lock(&shared.writes).clone();
    let checker = summary::check(config, &shared, &writes, &progress).await?;
    let mut report = summary::report(config, &shared, summary::Findings { checker, writes, fault });
    report.measured_from_unix_ms = measured_from_unix_ms;
    Ok(report)
}
