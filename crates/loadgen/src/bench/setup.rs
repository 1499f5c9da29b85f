//! Before the clock starts: the users signed up (if asked), every user the run
//! will act as logged in, and posts and photos known for likes, comments and
//! photo views.

use futures::StreamExt;

use super::config::BenchConfig;
use super::error::BenchError;
use super::schedule::Schedule;
use super::state::Shared;

/// Concurrent requests while creating and logging in users.
const SETUP_CONCURRENCY: usize = 16;
/// Users whose timelines are read before the run (when the mix likes, comments,
/// reads comments or views photos) so that those have targets from the start.
const PRIME_USERS: u64 = 50;
/// Tries of one signup or login before the run is refused.
const TRIES: usize = 3;

/// Create (if asked) and log in the users before the run.
pub(super) async fn set_up_users(
    config: &BenchConfig,
    shared: &Shared,
    progress: &impl Fn(&str),
) -> Result<(), BenchError> {
    if config.create_users {
        create_users(config, shared, progress).await?;
    }
    log_in_acting_users(config, shared, progress).await?;
    let mix = &config.mix;
    if mix.like > 0.0 || mix.view_photo > 0.0 || mix.comment > 0.0 || mix.comments > 0.0 {
        prime_pool(config, shared, progress).await;
    }
    Ok(())
}

/// Sign every user up (an existing account is reused).
async fn create_users(
    config: &BenchConfig,
    shared: &Shared,
    progress: &impl Fn(&str),
) -> Result<(), BenchError> {
    progress(&format!("creating {} users ({}0…)", config.users, config.user_prefix));
    let failures: Vec<String> = futures::stream::iter(0..config.users)
        .map(|i| {
            let target = shared.target(i).to_owned();
            let name = config.username(i);
            async move {
                let mut last = None;
                for _ in 0..TRIES {
                    match shared.http.signup((i, &target), &name, &config.password).await {
                        Ok(()) => return None,
                        Err(e) => last = Some(format!("signing up {name}: {e}")),
                    }
                }
                last
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    if let Some(first) = failures.first() {
        return Err(BenchError::Setup(format!("{} signups failed; first: {first}", failures.len())));
    }
    Ok(())
}

/// Log in every user the schedule will act as, so that no login happens on the
/// clock.
async fn log_in_acting_users(
    config: &BenchConfig,
    shared: &Shared,
    progress: &impl Fn(&str),
) -> Result<(), BenchError> {
    let acting = Schedule::acting_users(config, config.warmup + config.duration);
    progress(&format!("logging in the {} users this run acts as", acting.len()));
    let failures: Vec<String> = futures::stream::iter(acting)
        .map(|i| {
            let target = shared.target(i).to_owned();
            async move {
                let mut last = None;
                for _ in 0..TRIES {
                    match shared.token(&target, i).await {
                        Ok(_) => return None,
                        Err(e) => last = Some(format!("logging in {}: {e}", shared.username(i))),
                    }
                }
                last
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    if let Some(first) = failures.first() {
        return Err(BenchError::Setup(format!("{} logins failed; first: {first}", failures.len())));
    }
    Ok(())
}

/// Known posts and photos for likes and photo views from the first request
/// (a failed read only means fewer known; substitutions are reported).
async fn prime_pool(config: &BenchConfig, shared: &Shared, progress: &impl Fn(&str)) {
    let primed = config.users.min(PRIME_USERS);
    progress(&format!("reading {primed} timelines for posts to like and photos to view"));
    futures::stream::iter(0..primed)
        .map(|i| async move {
            let url = format!("{}/api/v1/users/{}/posts?limit=20", shared.target(i), shared.username(i));
            if let Ok(page) = shared.http.json(shared.http.client(i).get(url)).await {
                shared.harvest(&page);
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}
