//! The checker: every acknowledged write must be readable through the API.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

use super::report::{CheckReport, LISTED_LOST, Writes};
use super::{BenchError, Failure, Http};

/// How many times a read that fails for a reason other than "not there" is tried.
const ATTEMPTS: usize = 3;

enum Verdict {
    Verified,
    Lost(String),
    Unverifiable(String),
}

enum Check<'a> {
    Post { id: &'a str, caption: &'a str },
    Like { post_id: &'a str, liker: &'a str },
    Follow { follower: &'a str, followee: &'a str },
}

/// Verify every write in `writes` through the API at `targets` (round-robin), with
/// at most `concurrency` requests at once. Likers and followers are logged in with
/// `password` (their sessions from the run may be gone). The read-your-writes
/// fields of the result are left at zero.
pub async fn verify(
    writes: &Writes,
    targets: &[String],
    password: &str,
    concurrency: usize,
) -> Result<CheckReport, BenchError> {
    if targets.is_empty() {
        return Err(BenchError::Invalid("no targets to verify against".into()));
    }
    let http = Http::new(Duration::from_secs(10))?;
    let concurrency = concurrency.max(1);
    let likes: BTreeSet<_> = writes.likes.iter().collect();
    let follows: BTreeSet<_> = writes.follows.iter().collect();

    // Log in everyone whose view is checked.
    let mut names: BTreeSet<&str> = likes.iter().map(|l| l.liker.as_str()).collect();
    names.extend(follows.iter().map(|f| f.follower.as_str()));
    let order: HashMap<&str, usize> = names.iter().enumerate().map(|(i, name)| (*name, i)).collect();
    let tokens: HashMap<&str, Result<String, String>> = futures::stream::iter(names)
        .map(|name| {
            let http = &http;
            let target = login_target(targets, &order, name);
            async move {
                let mut last = String::new();
                for _ in 0..ATTEMPTS {
                    match http.login(target, name, password).await {
                        Ok(token) => return (name, Ok(token)),
                        Err(e) => last = format!("logging in {name}: {e}"),
                    }
                }
                (name, Err(last))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;

    let mut checks: Vec<Check<'_>> = Vec::new();
    checks.extend(writes.posts.iter().map(|p| Check::Post { id: &p.id, caption: &p.caption }));
    checks.extend(likes.iter().map(|l| Check::Like { post_id: &l.post_id, liker: &l.liker }));
    checks.extend(follows.iter().map(|f| Check::Follow { follower: &f.follower, followee: &f.followee }));

    let verdicts: Vec<(usize, Verdict)> = futures::stream::iter(checks.iter().enumerate())
        .map(|(i, check)| {
            let http = &http;
            let tokens = &tokens;
            // A session lives in the data center it was made in: a user's view
            // is read through the entry that user logged in through.
            let viewer = match check {
                Check::Like { liker, .. } => Some(*liker),
                Check::Follow { follower, .. } => Some(*follower),
                Check::Post { .. } => None,
            };
            let target = viewer
                .map_or(targets[i % targets.len()].as_str(), |name| login_target(targets, &order, name));
            async move { (i, check_one(http, target, tokens, check).await) }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;

    let mut report = CheckReport {
        ran: true,
        posts_acknowledged: writes.posts.len() as u64,
        likes_acknowledged: likes.len() as u64,
        follows_acknowledged: follows.len() as u64,
        ..CheckReport::default()
    };
    report.writes_acknowledged =
        report.posts_acknowledged + report.likes_acknowledged + report.follows_acknowledged;
    let mut verdicts = verdicts;
    verdicts.sort_by_key(|(i, _)| *i);
    for (i, verdict) in verdicts {
        match verdict {
            Verdict::Verified => report.verified += 1,
            Verdict::Lost(what) => {
                report.lost += 1;
                let list = match checks[i] {
                    Check::Post { .. } => &mut report.lost_posts,
                    Check::Like { .. } => &mut report.lost_likes,
                    Check::Follow { .. } => &mut report.lost_follows,
                };
                if list.len() < LISTED_LOST {
                    list.push(what);
                }
            }
            Verdict::Unverifiable(why) => {
                report.unverifiable += 1;
                if report.unverifiable_reasons.len() < LISTED_LOST {
                    report.unverifiable_reasons.push(why);
                }
            }
        }
    }
    report.settle();
    Ok(report)
}

async fn check_one(
    http: &Http,
    target: &str,
    tokens: &HashMap<&str, Result<String, String>>,
    check: &Check<'_>,
) -> Verdict {
    let (url, token, what) = match *check {
        Check::Post { id, .. } => (format!("{target}/api/v1/posts/{id}"), None, id.to_owned()),
        Check::Like { post_id, liker } => {
            (format!("{target}/api/v1/posts/{post_id}"), Some(liker), format!("{post_id} by {liker}"))
        }
        Check::Follow { follower, followee } => {
            (format!("{target}/api/v1/users/{followee}"), Some(follower), format!("{follower} -> {followee}"))
        }
    };
    let token = match token.map(|name| tokens.get(name)) {
        None => None,
        Some(Some(Ok(t))) => Some(t.as_str()),
        Some(Some(Err(e))) => return Verdict::Unverifiable(format!("{what}: {e}")),
        Some(None) => return Verdict::Unverifiable(format!("{what}: no session")),
    };
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
        }
        let mut req = http.client.get(&url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let body = match http.send(req).await {
            Ok(body) => body,
            Err(Failure::Status(StatusCode::NOT_FOUND)) => return Verdict::Lost(what),
            Err(e) => {
                last = format!("{what}: {e}");
                continue;
            }
        };
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            last = format!("{what}: the answer is not JSON");
            continue;
        };
        let ok = match *check {
            Check::Post { caption, .. } => v["caption"].as_str() == Some(caption),
            Check::Like { .. } => v["liked_by_me"].as_bool() == Some(true),
            Check::Follow { .. } => v["followed_by_me"].as_bool() == Some(true),
        };
        return if ok { Verdict::Verified } else { Verdict::Lost(what) };
    }
    Verdict::Unverifiable(last)
}

/// The entry through which `name` is logged in for the check.
fn login_target<'a>(targets: &'a [String], order: &HashMap<&str, usize>, name: &str) -> &'a str {
    &targets[order.get(name).copied().unwrap_or(0) % targets.len()]
}
