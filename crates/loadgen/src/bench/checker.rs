//! The checker: every acknowledged write must be readable through the API, from
//! the database rather than from a cache where the API allows it; and the
//! read-your-writes read-back a writer makes right after an acknowledgement.
//!
//! Which read shows what (see `crates/web/src/service.rs`):
//! - a post: `GET /users/{author}/posts`, asked with `Cache-Control: no-cache`
//!   (as every read of the verification is), lists post ids from a query on the
//!   author's shard (a replica within the lag bound, under the session's floor)
//!   rather than from the author's cached newest ids; only the posts' contents
//!   come from the post cache. A post deleted in the database is missing from
//!   that list at once, cached or not. The writer's read-back asks as a user
//!   does, without it: what the author sees of their own post is the cached ids,
//!   read past the web server's own copy.
//! - a like: `liked_by_me` of `GET /posts/{id}` reads the `likes` table (a
//!   replica, under the floor), never a cache.
//! - a follow: `followed_by_me` of `GET /users/{name}` comes from the follower's
//!   cached followee list (filled from the primary, invalidated on every
//!   follow), and the followee's `followers_count` from its cached profile: the
//!   API has no uncached read of a follow edge, so both sides are checked
//!   through those.
//! - a comment: `GET /posts/{id}/comments` merges the post's comments from every
//!   shard (replicas within the lag bound, under the session's floor), newest
//!   first, paged down to the comment's id.
//! - a deletion: `GET /posts/{id}` answers 404 (its cache entry is invalidated
//!   on deletion) and the author's timeline (a query, as for a post) no longer
//!   lists it. A deleted post's likes and comments go with it: a post, like or
//!   comment on a post this run deleted is not required.
//!
//! And a post's delivery, which no write's own read shows: the home feeds (`GET
//! /feed`, the cached timelines the fan-out pushes into) of the run's most active
//! writers — under Zipf the users who read their feeds most, so theirs are the
//! cached ones — must list every post found above whose author they followed
//! before the run, and their own.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use tokio::time::Instant;

use super::config::VerifyOptions;
use super::error::BenchError;
use super::failure::Failure;
use super::http::Http;
use super::report::{AckedComment, AckedPost, CheckReport, LISTED_LOST, Writes};

/// How many times in a row a read may fail (other than "not there") before the
/// write is called unverifiable.
const ATTEMPTS: usize = 3;
/// Page size of the timeline reads.
const PAGE: usize = 100;
/// Most pages of one author's timeline read to find its acknowledged posts.
const MAX_PAGES: usize = 1000;
/// Longest pause between two re-reads of a write not seen yet.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Most readers whose home feeds are checked.
const FEED_READERS: usize = 16;
/// Most pages of a reader's followee list read (a longer list is checked in part).
const MAX_FOLLOWING_PAGES: usize = 50;

/// What the checker concluded about one acknowledged write.
enum WriteVerdict {
    /// Found as written (and, for a photo, processed).
    Verified,
    /// Missing or different, what.
    Lost(String),
    /// A photo post found but not `ready` by the deadline, `id: status`.
    NotReady(String),
    /// The reads kept failing, why.
    Unverifiable(String),
}

/// What one read of a write showed.
enum Seen<T> {
    /// As written; `T` is what else the read showed.
    Yes(T),
    /// Not (yet) there.
    No(String),
}

/// Re-read until the write is seen, `deadline` passes (lost) or reads fail
/// [`ATTEMPTS`] times in a row (unverifiable).
async fn until_seen<T, F, Fut>(deadline: Instant, mut read: F) -> (WriteVerdict, Option<T>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Seen<T>, String>>,
{
    let mut failures = 0;
    let mut wait = Duration::from_millis(100);
    loop {
        match read().await {
            Ok(Seen::Yes(t)) => return (WriteVerdict::Verified, Some(t)),
            Ok(Seen::No(what)) => {
                failures = 0;
                if Instant::now() >= deadline {
                    return (WriteVerdict::Lost(what), None);
                }
            }
            Err(e) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    return (WriteVerdict::Unverifiable(e), None);
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// A post as a timeline lists it.
struct Listed {
    /// Its caption, compared with the acknowledged one.
    caption: String,
    /// Its processing status (`ready` once a photo is processed).
    status: String,
}

/// The posts of `author`'s timeline from the newest down to (at least) post id
/// `oldest`, read with `token` if given. A user that does not exist has none.
async fn author_posts(
    http: &Http,
    target: (u64, &str),
    author: &str,
    oldest: i64,
    token: Option<&str>,
) -> Result<HashMap<i64, Listed>, Failure> {
    let mut found = HashMap::new();
    let read = read_pages(http, target, &format!("/api/v1/users/{author}/posts"), token, MAX_PAGES, |page| {
        let posts =
            page["posts"].as_array().ok_or_else(|| Failure::BadBody("no posts in the page".into()))?;
        let mut last = i64::MAX;
        for p in posts {
            let Some(id) = p["id"].as_str().and_then(|s| s.parse::<i64>().ok()) else { continue };
            last = last.min(id);
            found.insert(
                id,
                Listed {
                    caption: p["caption"].as_str().unwrap_or_default().to_owned(),
                    status: p["status"].as_str().unwrap_or_default().to_owned(),
                },
            );
        }
        Ok(last > oldest)
    })
    .await;
    match read {
        Ok(()) | Err(Failure::Status(StatusCode::NOT_FOUND)) => Ok(found),
        Err(e) => Err(e),
    }
}

/// Read the pages of `path` (under `target`, taking `limit` and `cursor`) up to
/// `max` of them, with `token` if given and `Cache-Control: no-cache` (a page the
/// server could serve from a cache is read from the shards): `each` takes a page
/// and says whether to read on (when the page names a next one). The first
/// failure ends the reading.
async fn read_pages(
    http: &Http,
    (entry, target): (u64, &str),
    path: &str,
    token: Option<&str>,
    max: usize,
    mut each: impl FnMut(&serde_json::Value) -> Result<bool, Failure>,
) -> Result<(), Failure> {
    let mut cursor: Option<String> = None;
    for _ in 0..max {
        let mut url = format!("{target}{path}?limit={PAGE}");
        if let Some(c) = &cursor {
            url.push_str("&cursor=");
            url.push_str(c);
        }
        let mut req = http.client(entry).get(url).header(reqwest::header::CACHE_CONTROL, "no-cache");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let page = http.json(req).await?;
        let read_on = each(&page)?;
        match page["next_cursor"].as_str() {
            Some(next) if read_on => cursor = Some(next.to_owned()),
            _ => break,
        }
    }
    Ok(())
}

/// Verify one author's acknowledged posts: each must be listed in the author's
/// timeline with its caption (re-read until `settle` passes), and each photo post
/// must reach `ready` (re-read until `photo_deadline`).
async fn check_author(
    http: &Http,
    target: (u64, &str),
    author: &str,
    posts: &[(usize, &AckedPost)],
    settle: Instant,
    photo_deadline: Instant,
) -> Vec<(usize, WriteVerdict)> {
    let ids: Vec<(usize, &AckedPost, Option<i64>)> =
        posts.iter().map(|&(i, p)| (i, p, p.id.parse::<i64>().ok())).collect();
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for (i, p, id) in ids {
        match id {
            Some(id) => pending.push((i, p, id)),
            None => out.push((i, WriteVerdict::Lost(format!("{} (not a post id)", p.id)))),
        }
    }
    let mut failures = 0;
    let mut wait = Duration::from_millis(100);
    while !pending.is_empty() {
        let oldest = pending.iter().map(|(_, _, id)| *id).min().unwrap_or(0);
        match author_posts(http, target, author, oldest, None).await {
            Ok(listed) => {
                failures = 0;
                let now = Instant::now();
                pending.retain(|&(i, p, id)| {
                    let verdict = match listed.get(&id) {
                        None if now >= settle => WriteVerdict::Lost(p.id.clone()),
                        None => return true,
                        Some(l) if l.caption != p.caption => {
                            WriteVerdict::Lost(format!("{} (caption {:?})", p.id, l.caption))
                        }
                        Some(l) if !p.photo || l.status == "ready" => WriteVerdict::Verified,
                        Some(l) if l.status == "failed" || now >= photo_deadline => {
                            WriteVerdict::NotReady(format!("{}: {}", p.id, l.status))
                        }
                        Some(_) => return true,
                    };
                    out.push((i, verdict));
                    false
                });
            }
            Err(e) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    for (i, p, _) in pending.drain(..) {
                        out.push((i, WriteVerdict::Unverifiable(format!("{} by {author}: {e}", p.id))));
                    }
                }
            }
        }
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
    out
}

/// The ids of post `post_id`'s comments from the newest down to (at least)
/// comment id `oldest`, with their texts; `None` when the post does not exist.
async fn post_comments(
    http: &Http,
    target: (u64, &str),
    post_id: &str,
    oldest: i64,
) -> Result<Option<HashMap<i64, String>>, Failure> {
    let mut found = HashMap::new();
    let read =
        read_pages(http, target, &format!("/api/v1/posts/{post_id}/comments"), None, MAX_PAGES, |page| {
            let (listed, last) = comment_ids(page)?;
            found.extend(listed);
            Ok(last > oldest)
        })
        .await;
    match read {
        Ok(()) => Ok(Some(found)),
        Err(Failure::Status(StatusCode::NOT_FOUND)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The comments of a page of `GET /posts/{id}/comments` (id to text) and the
/// oldest id on it (`i64::MAX` for an empty page); a page without `comments`
/// is refused.
fn comment_ids(page: &serde_json::Value) -> Result<(HashMap<i64, String>, i64), Failure> {
    let comments =
        page["comments"].as_array().ok_or_else(|| Failure::BadBody("no comments in the page".into()))?;
    let mut last = i64::MAX;
    let mut found = HashMap::new();
    for c in comments {
        let Some(id) = c["id"].as_str().and_then(|s| s.parse::<i64>().ok()) else { continue };
        last = last.min(id);
        found.insert(id, c["body"].as_str().unwrap_or_default().to_owned());
    }
    Ok((found, last))
}

/// Verify the acknowledged comments on one post: each must be listed under it
/// with its text (re-read until `settle` passes).
async fn check_post_comments(
    http: &Http,
    target: (u64, &str),
    post_id: &str,
    comments: &[&AckedComment],
    settle: Instant,
) -> Vec<WriteVerdict> {
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for &c in comments {
        match c.id.parse::<i64>() {
            Ok(id) => pending.push((c, id)),
            Err(_) => out.push(WriteVerdict::Lost(format!("{} (not a comment id)", c.id))),
        }
    }
    let mut failures = 0;
    let mut wait = Duration::from_millis(100);
    while !pending.is_empty() {
        let oldest = pending.iter().map(|(_, id)| *id).min().unwrap_or(0);
        match post_comments(http, target, post_id, oldest).await {
            Ok(listed) => {
                failures = 0;
                let now = Instant::now();
                let gone = if listed.is_none() { " (the post is gone)" } else { "" };
                let listed = listed.unwrap_or_default();
                pending.retain(|&(c, id)| {
                    let verdict = match listed.get(&id) {
                        None if now >= settle => WriteVerdict::Lost(format!("{} on {post_id}{gone}", c.id)),
                        None => return true,
                        Some(body) if *body != c.body => {
                            WriteVerdict::Lost(format!("{} on {post_id} (body {body:?})", c.id))
                        }
                        Some(_) => WriteVerdict::Verified,
                    };
                    out.push(verdict);
                    false
                });
            }
            Err(e) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    for (c, _) in pending.drain(..) {
                        out.push(WriteVerdict::Unverifiable(format!("comment {} on {post_id}: {e}", c.id)));
                    }
                }
            }
        }
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
    out
}

/// The usernames `reader` follows, newest edge first, up to
/// [`MAX_FOLLOWING_PAGES`] pages of them.
async fn followees(http: &Http, target: (u64, &str), reader: &str) -> Result<HashSet<String>, Failure> {
    let mut found = HashSet::new();
    let path = format!("/api/v1/users/{reader}/following");
    read_pages(http, target, &path, None, MAX_FOLLOWING_PAGES, |page| {
        let users =
            page["users"].as_array().ok_or_else(|| Failure::BadBody("no users in the page".into()))?;
        found.extend(users.iter().filter_map(|u| u["username"].as_str().map(str::to_owned)));
        Ok(true)
    })
    .await?;
    Ok(found)
}

/// What a home feed's first page (`page`: its post ids, newest first; `more`:
/// whether a next page follows) shows of the `required` post ids: how many are
/// below it (older than its oldest post, with more pages to come: not required,
/// as for a writer's read-back) and which are missing. The page's length says
/// nothing: posts gone since they were pushed are left out of it.
fn feed_gaps(page: &[i64], more: bool, required: &[i64]) -> (u64, Vec<i64>) {
    let shown: HashSet<i64> = page.iter().copied().collect();
    let oldest = page.iter().copied().min().unwrap_or(i64::MAX);
    let (mut hidden, mut missing) = (0, Vec::new());
    for &id in required {
        if shown.contains(&id) {
            continue;
        }
        if more && oldest > id {
            hidden += 1;
        } else {
            missing.push(id);
        }
    }
    (hidden, missing)
}

/// One reader's home feed checked against the posts it must list.
#[derive(Default)]
struct FeedCheck {
    /// Posts the feed had to list (or hide below its first page).
    checked: u64,
    /// Of those, below the first page (more pages follow): not required.
    hidden: u64,
    /// Missing at the deadline, `post_id by author from reader's feed`.
    missing: Vec<String>,
    /// The reads kept failing, why.
    unverifiable: Option<String>,
}

/// Check `reader`'s home feed (read with `token`) against `posts`, acknowledged
/// posts found in their authors' timelines: those by the reader and by the
/// users it follows must be listed, re-read until `deadline`. Those by a user it
/// followed during this run are left out (the follow has its own check, and the
/// feed is rebuilt after it).
async fn check_feed(
    http: &Http,
    (entry, target): (u64, &str),
    reader: &str,
    token: Result<String, String>,
    posts: &[&AckedPost],
    followed_in_run: &HashSet<&str>,
    deadline: Instant,
) -> FeedCheck {
    let token = match token {
        Ok(t) => t,
        Err(e) => return FeedCheck { unverifiable: Some(e), ..FeedCheck::default() },
    };
    let mut failures = 0;
    let follows = loop {
        match followees(http, (entry, target), reader).await {
            Ok(f) => break f,
            Err(e) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    let why = format!("{reader}'s followees: {e}");
                    return FeedCheck { unverifiable: Some(why), ..FeedCheck::default() };
                }
            }
        }
    };
    let required: Vec<(i64, &str)> = posts
        .iter()
        .filter(|p| {
            p.author == reader
                || (follows.contains(&p.author) && !followed_in_run.contains(p.author.as_str()))
        })
        .filter_map(|p| Some((p.id.parse::<i64>().ok()?, p.author.as_str())))
        .collect();
    if required.is_empty() {
        return FeedCheck::default();
    }
    let ids: Vec<i64> = required.iter().map(|(id, _)| *id).collect();
    let url = format!("{target}/api/v1/feed?limit={PAGE}");
    let gaps = std::sync::Mutex::new(Vec::new());
    let (verdict, hidden) = until_seen(deadline, || {
        let (url, token, ids, gaps) = (&url, &token, &ids, &gaps);
        async move {
            let page = http
                .json(http.client(entry).get(url).bearer_auth(token))
                .await
                .map_err(|e| format!("{reader}'s feed: {e}"))?;
            let shown: Vec<i64> = page["posts"]
                .as_array()
                .ok_or_else(|| format!("{reader}'s feed: no posts in the page"))?
                .iter()
                .filter_map(|p| p["id"].as_str()?.parse().ok())
                .collect();
            let (hidden, missing) = feed_gaps(&shown, page["next_cursor"].is_string(), ids);
            let seen = if missing.is_empty() { Seen::Yes(hidden) } else { Seen::No(String::new()) };
            *gaps.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = missing;
            Ok(seen)
        }
    })
    .await;
    let mut check =
        FeedCheck { checked: ids.len() as u64, hidden: hidden.unwrap_or(0), ..FeedCheck::default() };
    match verdict {
        WriteVerdict::Verified => {}
        WriteVerdict::Unverifiable(why) => check.unverifiable = Some(why),
        WriteVerdict::Lost(_) | WriteVerdict::NotReady(_) => {
            let author = |id: i64| required.iter().find(|(p, _)| *p == id).map_or("?", |(_, a)| *a);
            check.missing = gaps
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .into_iter()
                .map(|id| format!("{id} by {} from {reader}'s feed", author(id)))
                .collect();
        }
    }
    check
}

/// The run's most active writers (by acknowledged writes, then by name), up to
/// [`FEED_READERS`]: whose home feeds are checked.
fn feed_readers(writes: &Writes) -> Vec<&str> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    let actors = (writes.posts.iter().map(|p| p.author.as_str()))
        .chain(writes.likes.iter().map(|l| l.liker.as_str()))
        .chain(writes.follows.iter().map(|f| f.follower.as_str()))
        .chain(writes.comments.iter().map(|c| c.author.as_str()))
        .chain(writes.deletions.iter().map(|d| d.author.as_str()));
    for name in actors {
        *count.entry(name).or_default() += 1;
    }
    let mut ranked: Vec<(&str, usize)> = count.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.into_iter().take(FEED_READERS).map(|(name, _)| name).collect()
}

/// Verify every write in `writes` through the API at `targets`. Likers and
/// followers are logged in with `password` (their sessions from the run may be
/// gone). The read-your-writes fields of the result are left at zero.
pub async fn verify(
    writes: &Writes,
    targets: &[String],
    password: &str,
    options: &VerifyOptions,
) -> Result<CheckReport, BenchError> {
    verify_via(&Http::new(Duration::from_secs(10), None, &[], None)?, writes, targets, password, options)
        .await
}

/// [`verify`] through `http` (in DNS mode, its regions' clients: entry `i` is
/// region `i`'s).
pub(crate) async fn verify_via(
    http: &Http,
    writes: &Writes,
    targets: &[String],
    password: &str,
    options: &VerifyOptions,
) -> Result<CheckReport, BenchError> {
    if targets.is_empty() {
        return Err(BenchError::Invalid("no targets to verify against".into()));
    }
    let concurrency = options.concurrency.max(1);
    let start = Instant::now();
    let settle = start + options.settle;
    let photo_deadline = start + options.photo_ready_timeout.max(options.settle);
    let deleted = writes.deleted_posts();
    // A post this run deleted takes its likes and comments along.
    let all_likes: BTreeSet<_> = writes.likes.iter().collect();
    let likes: BTreeSet<_> =
        all_likes.iter().copied().filter(|l| !deleted.contains(l.post_id.as_str())).collect();
    let follows: BTreeSet<_> = writes.follows.iter().collect();
    let deletions: BTreeSet<_> = writes.deletions.iter().collect();
    let mut gone = (all_likes.len() - likes.len()) as u64;

    // Log in everyone whose view is checked.
    let mut names: BTreeSet<&str> = likes.iter().map(|l| l.liker.as_str()).collect();
    names.extend(follows.iter().map(|f| f.follower.as_str()));
    let readers = feed_readers(writes);
    names.extend(readers.iter().copied());
    let order: HashMap<&str, usize> = names.iter().enumerate().map(|(i, name)| (*name, i)).collect();
    let tokens: HashMap<&str, Result<String, String>> = futures::stream::iter(names)
        .map(|name| {
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
    let token_of = |name: &str, what: &str| match tokens.get(name) {
        Some(Ok(t)) => Ok(t.clone()),
        Some(Err(e)) => Err(format!("{what}: {e}")),
        None => Err(format!("{what}: no session")),
    };

    // Posts, by author.
    let mut by_author: BTreeMap<&str, Vec<(usize, &AckedPost)>> = BTreeMap::new();
    for (i, p) in writes.posts.iter().enumerate() {
        if deleted.contains(p.id.as_str()) {
            gone += 1;
            continue;
        }
        by_author.entry(p.author.as_str()).or_default().push((i, p));
    }
    let post_verdicts: Vec<Vec<(usize, WriteVerdict)>> = futures::stream::iter(by_author.iter().enumerate())
        .map(|(k, (author, posts))| {
            let entry = k % targets.len();
            check_author(http, (entry as u64, targets[entry].as_str()), author, posts, settle, photo_deadline)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut post_verdicts: Vec<(usize, WriteVerdict)> = post_verdicts.into_iter().flatten().collect();
    post_verdicts.sort_by_key(|(i, _)| *i);

    // Deliveries: the readers' home feeds list the posts found above (a
    // photo post once ready) by themselves and by whom they followed.
    let found: Vec<&AckedPost> = post_verdicts
        .iter()
        .filter(|(_, v)| matches!(v, WriteVerdict::Verified))
        .map(|(i, _)| &writes.posts[*i])
        .collect();
    // From now, not from the checker's start: the photos' checks above may have
    // taken longer than that, and a photo seen `ready` is fanned out just after.
    let feed_deadline = Instant::now() + options.feed_settle.max(options.settle);
    let feed_checks: Vec<FeedCheck> = futures::stream::iter(readers.iter())
        .map(|reader| {
            let followed: HashSet<&str> =
                follows.iter().filter(|f| f.follower == *reader).map(|f| f.followee.as_str()).collect();
            let (found, token) = (&found, token_of(reader, &format!("{reader}'s feed")));
            let target = login_target(targets, &order, reader);
            async move { check_feed(http, target, reader, token, found, &followed, feed_deadline).await }
        })
        .buffered(concurrency)
        .collect()
        .await;

    // Likes: the liker's `liked_by_me`, from the likes table.
    let like_verdicts: Vec<WriteVerdict> = futures::stream::iter(likes.iter())
        .map(|l| {
            let (entry, target) = login_target(targets, &order, &l.liker);
            let what = format!("{} by {}", l.post_id, l.liker);
            let token = token_of(&l.liker, &what);
            async move {
                let token = match token {
                    Ok(t) => t,
                    Err(e) => return WriteVerdict::Unverifiable(e),
                };
                let url = format!("{target}/api/v1/posts/{}", l.post_id);
                until_seen(settle, || {
                    let (url, token, what) = (&url, &token, &what);
                    async move {
                        match http.json(http.client(entry).get(url).bearer_auth(token)).await {
                            Ok(v) if v["liked_by_me"].as_bool() == Some(true) => Ok(Seen::Yes(())),
                            Ok(_) => Ok(Seen::No(what.clone())),
                            Err(Failure::Status(StatusCode::NOT_FOUND)) => {
                                Ok(Seen::No(format!("{what} (the post is gone)")))
                            }
                            Err(e) => Err(format!("{what}: {e}")),
                        }
                    }
                })
                .await
                .0
            }
        })
        .buffered(concurrency)
        .collect()
        .await;

    // Follows: the follower's `followed_by_me`, and the followee's count.
    let follow_verdicts: Vec<(WriteVerdict, Option<i64>)> = futures::stream::iter(follows.iter())
        .map(|f| {
            let (entry, target) = login_target(targets, &order, &f.follower);
            let what = format!("{} -> {}", f.follower, f.followee);
            let token = token_of(&f.follower, &what);
            async move {
                let token = match token {
                    Ok(t) => t,
                    Err(e) => return (WriteVerdict::Unverifiable(e), None),
                };
                let url = format!("{target}/api/v1/users/{}", f.followee);
                until_seen(settle, || {
                    let (url, token, what) = (&url, &token, &what);
                    async move {
                        match http.json(http.client(entry).get(url).bearer_auth(token)).await {
                            Ok(v) if v["followed_by_me"].as_bool() == Some(true) => {
                                Ok(Seen::Yes(v["followers_count"].as_i64().unwrap_or(0)))
                            }
                            Ok(_) => Ok(Seen::No(what.clone())),
                            Err(Failure::Status(StatusCode::NOT_FOUND)) => {
                                Ok(Seen::No(format!("{what} (no such user)")))
                            }
                            Err(e) => Err(format!("{what}: {e}")),
                        }
                    }
                })
                .await
            }
        })
        .buffered(concurrency)
        .collect()
        .await;

    // Comments, by post: listed under it, read without a session.
    let mut by_post: BTreeMap<&str, Vec<&AckedComment>> = BTreeMap::new();
    for c in &writes.comments {
        if deleted.contains(c.post_id.as_str()) {
            gone += 1;
            continue;
        }
        by_post.entry(c.post_id.as_str()).or_default().push(c);
    }
    let comment_verdicts: Vec<Vec<WriteVerdict>> = futures::stream::iter(by_post.iter().enumerate())
        .map(|(k, (post_id, comments))| {
            let entry = k % targets.len();
            check_post_comments(http, (entry as u64, targets[entry].as_str()), post_id, comments, settle)
        })
        .buffered(concurrency)
        .collect()
        .await;

    // Deletions: the post answers 404 and is not in its author's timeline.
    let deletion_verdicts: Vec<WriteVerdict> = futures::stream::iter(deletions.iter().enumerate())
        .map(|(k, d)| {
            let entry = k % targets.len();
            let target = targets[entry].as_str();
            let what = format!("{} by {}", d.post_id, d.author);
            async move {
                let Ok(id) = d.post_id.parse::<i64>() else {
                    return WriteVerdict::Lost(format!("{what} (not a post id)"));
                };
                let url = format!("{target}/api/v1/posts/{}", d.post_id);
                until_seen(settle, || {
                    let (url, what) = (&url, &what);
                    async move {
                        match http.send(http.client(entry as u64).get(url)).await {
                            Ok(_) => return Ok(Seen::No(format!("{what} (the post still answers)"))),
                            Err(Failure::Status(StatusCode::NOT_FOUND)) => {}
                            Err(e) => return Err(format!("{what}: {e}")),
                        }
                        match author_posts(http, (entry as u64, target), &d.author, id, None).await {
                            Ok(listed) if listed.contains_key(&id) => {
                                Ok(Seen::No(format!("{what} (still in the author's timeline)")))
                            }
                            Ok(_) => Ok(Seen::Yes(())),
                            Err(e) => Err(format!("{what}: {e}")),
                        }
                    }
                })
                .await
                .0
            }
        })
        .buffered(concurrency)
        .collect()
        .await;

    let photos = writes.posts.iter().filter(|p| p.photo && !deleted.contains(p.id.as_str())).count() as u64;
    let mut report = CheckReport {
        ran: true,
        posts_acknowledged: by_author.values().map(|p| p.len() as u64).sum(),
        photos_acknowledged: photos,
        likes_acknowledged: likes.len() as u64,
        follows_acknowledged: follows.len() as u64,
        comments_acknowledged: by_post.values().map(|c| c.len() as u64).sum(),
        deletions_acknowledged: deletions.len() as u64,
        gone_with_deleted_posts: gone,
        ..CheckReport::default()
    };
    report.writes_acknowledged = report.posts_acknowledged
        + report.likes_acknowledged
        + report.follows_acknowledged
        + report.comments_acknowledged
        + report.deletions_acknowledged;
    for (i, verdict) in post_verdicts {
        if writes.posts[i].photo && matches!(verdict, WriteVerdict::Verified) {
            report.photos_ready += 1;
        }
        tally(&mut report, "post", verdict, |r| &mut r.lost_posts);
    }
    for verdict in like_verdicts {
        tally(&mut report, "like", verdict, |r| &mut r.lost_likes);
    }
    for check in feed_checks {
        report.feed_deliveries_checked += check.checked;
        report.feed_deliveries_hidden += check.hidden;
        report.feed_deliveries_missing_count += check.missing.len() as u64;
        let room = LISTED_LOST.saturating_sub(report.feed_deliveries_missing.len());
        report.feed_deliveries_missing.extend(check.missing.into_iter().take(room));
        if let Some(why) = check.unverifiable {
            report.feeds_unverifiable += 1;
            if report.unverifiable_reasons.len() < LISTED_LOST {
                report.unverifiable_reasons.push(why);
            }
        }
    }
    for verdict in comment_verdicts.into_iter().flatten() {
        tally(&mut report, "comment", verdict, |r| &mut r.lost_comments);
    }
    for verdict in deletion_verdicts {
        tally(&mut report, "delete_post", verdict, |r| &mut r.lost_deletions);
    }
    // The followee's side: at least as many followers as distinct followers
    // whose follow was acknowledged (nobody unfollows during a bench).
    let mut counts: BTreeMap<&str, (u64, i64)> = BTreeMap::new();
    for (f, (verdict, count)) in follows.iter().zip(follow_verdicts) {
        let e = counts.entry(f.followee.as_str()).or_default();
        e.0 += 1;
        e.1 = e.1.max(count.unwrap_or(i64::MAX));
        tally(&mut report, "follow", verdict, |r| &mut r.lost_follows);
    }
    for (followee, (acknowledged, counted)) in counts {
        if counted < acknowledged as i64 {
            report.short_follower_counts_count += 1;
            if report.short_follower_counts.len() < LISTED_LOST {
                report.short_follower_counts.push(format!("{followee}: {counted} < {acknowledged}"));
            }
        }
    }
    report.settle();
    Ok(report)
}

/// Count one write of `kind` (`post`, `like`, `follow`, `comment`,
/// `delete_post`) by its verdict, a lost one also in its kind's `lost` list.
fn tally(
    report: &mut CheckReport,
    kind: &str,
    verdict: WriteVerdict,
    lost: impl Fn(&mut CheckReport) -> &mut Vec<String>,
) {
    match verdict {
        WriteVerdict::Verified => report.verified += 1,
        WriteVerdict::Lost(what) => {
            report.lost += 1;
            *report.lost_by_kind.entry(kind.to_owned()).or_default() += 1;
            let list = lost(report);
            if list.len() < LISTED_LOST {
                list.push(what);
            }
        }
        WriteVerdict::NotReady(what) => {
            report.photos_not_ready_count += 1;
            if report.photos_not_ready.len() < LISTED_LOST {
                report.photos_not_ready.push(what);
            }
        }
        WriteVerdict::Unverifiable(why) => {
            report.unverifiable += 1;
            if report.unverifiable_reasons.len() < LISTED_LOST {
                report.unverifiable_reasons.push(why);
            }
        }
    }
}

/// The entry (its index and URL) through which `name` is logged in for the check.
fn login_target<'a>(targets: &'a [String], order: &HashMap<&str, usize>, name: &str) -> (u64, &'a str) {
    let i = order.get(name).copied().unwrap_or(0) % targets.len();
    (i as u64, &targets[i])
}

/// A write just acknowledged, as its writer reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// A post (text or photo) by `author`.
    Post {
        /// The author (the reader).
        author: String,
        /// The new post.
        id: String,
        /// Whether it is a photo post (only changes how it is counted).
        photo: bool,
    },
    /// A like of `post_id` by the reader.
    Like {
        /// The liked post.
        post_id: String,
    },
    /// A follow of `followee` by the reader.
    Follow {
        /// Whom the reader followed.
        followee: String,
    },
    /// A comment `id` by the reader on `post_id`.
    Comment {
        /// The post commented on (whose first page must list it).
        post_id: String,
        /// The new comment.
        id: String,
    },
    /// The deletion of the reader's post `post_id`.
    Deletion {
        /// The deleted post (which must answer 404).
        post_id: String,
    },
}

impl Written {
    /// Its kind in reports: `post`, `photo_post`, `like`, `follow`, `comment`
    /// or `delete_post`.
    pub fn kind(&self) -> &'static str {
        match self {
            Written::Post { photo: false, .. } => "post",
            Written::Post { photo: true, .. } => "photo_post",
            Written::Like { .. } => "like",
            Written::Follow { .. } => "follow",
            Written::Comment { .. } => "comment",
            Written::Deletion { .. } => "delete_post",
        }
    }

    /// The post a post, like or comment is on (which this run may delete).
    pub fn on_post(&self) -> Option<&str> {
        match self {
            Written::Post { id, .. } => Some(id),
            Written::Like { post_id } | Written::Comment { post_id, .. } => Some(post_id),
            Written::Follow { .. } | Written::Deletion { .. } => None,
        }
    }

    /// What it is about, for listing a violation.
    pub fn subject(&self) -> &str {
        match self {
            Written::Post { id, .. } => id,
            Written::Like { post_id } => post_id,
            Written::Follow { followee } => followee,
            Written::Comment { id, .. } => id,
            Written::Deletion { post_id } => post_id,
        }
    }
}

/// What a writer's read-back showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadBack {
    /// The write is visible.
    Seen,
    /// The read succeeded and does not show the write: a read-your-writes
    /// violation.
    Violation(String),
    /// The read failed or could not tell (not a violation).
    Failed(String),
}

/// Read `written` back at once as its writer (session `token`) through
/// `target`, as a user reads it: the post in the author's own timeline (their
/// cached newest ids, read past the web server's copy); the like in
/// `liked_by_me` (the likes table, on a replica under the session's
/// read-your-writes floor); the follow in `followed_by_me`; the comment in its
/// post's first page of comments; the deletion as a 404 of the post.
pub async fn read_back(client: &reqwest::Client, target: &str, token: &str, written: &Written) -> ReadBack {
    let http = Http::with_client(client.clone());
    match written {
        Written::Post { author, id, .. } => {
            let Ok(num) = id.parse::<i64>() else {
                return ReadBack::Failed(format!("{id} is not a post id"));
            };
            let url = format!("{target}/api/v1/users/{author}/posts?limit={PAGE}");
            match http.json(client.get(url).bearer_auth(token)).await {
                Ok(page) => {
                    let ids: Vec<i64> = page["posts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["id"].as_str().and_then(|s| s.parse().ok()))
                        .collect();
                    if ids.contains(&num) {
                        ReadBack::Seen
                    } else if ids.len() >= PAGE && ids.iter().all(|&i| i > num) {
                        ReadBack::Failed(format!("{id}: {PAGE} newer posts hide it"))
                    } else {
                        ReadBack::Violation(format!("post {id} is not in {author}'s timeline"))
                    }
                }
                Err(e) => ReadBack::Failed(format!("{id}: {e}")),
            }
        }
        Written::Like { post_id } => {
            let url = format!("{target}/api/v1/posts/{post_id}");
            match http.json(client.get(url).bearer_auth(token)).await {
                Ok(v) if v["liked_by_me"].as_bool() == Some(true) => ReadBack::Seen,
                Ok(_) => ReadBack::Violation(format!("post {post_id} is not liked_by_me")),
                Err(Failure::Status(StatusCode::NOT_FOUND)) => {
                    ReadBack::Violation(format!("liked post {post_id} is not found"))
                }
                Err(e) => ReadBack::Failed(format!("{post_id}: {e}")),
            }
        }
        Written::Follow { followee } => {
            let url = format!("{target}/api/v1/users/{followee}");
            match http.json(client.get(url).bearer_auth(token)).await {
                Ok(v) if v["followed_by_me"].as_bool() == Some(true) => ReadBack::Seen,
                Ok(_) => ReadBack::Violation(format!("{followee} is not followed_by_me")),
                Err(e) => ReadBack::Failed(format!("{followee}: {e}")),
            }
        }
        Written::Comment { post_id, id } => {
            let Ok(num) = id.parse::<i64>() else {
                return ReadBack::Failed(format!("{id} is not a comment id"));
            };
            let url = format!("{target}/api/v1/posts/{post_id}/comments?limit={PAGE}");
            match http.json(client.get(url).bearer_auth(token)).await {
                Ok(page) => match comment_ids(&page) {
                    Ok((listed, oldest)) => {
                        first_page_verdict(listed.contains_key(&num), listed.len(), oldest, num, || {
                            format!("comment {id} is not in post {post_id}'s comments")
                        })
                    }
                    Err(e) => ReadBack::Failed(format!("{id}: {e}")),
                },
                // The post's author may have deleted it since (its comments went along).
                Err(Failure::Status(StatusCode::NOT_FOUND)) => {
                    ReadBack::Failed(format!("{id}: post {post_id} is gone"))
                }
                Err(e) => ReadBack::Failed(format!("{id}: {e}")),
            }
        }
        Written::Deletion { post_id } => {
            let url = format!("{target}/api/v1/posts/{post_id}");
            match http.send(client.get(url).bearer_auth(token)).await {
                Err(Failure::Status(StatusCode::NOT_FOUND)) => ReadBack::Seen,
                Ok(_) => ReadBack::Violation(format!("deleted post {post_id} still answers")),
                Err(e) => ReadBack::Failed(format!("{post_id}: {e}")),
            }
        }
    }
}

/// What a first page of `len` items down to id `oldest` tells of item `id`:
/// seen if `found`; hidden behind newer ones (not a violation) if the page is
/// full and all newer; else missing, as `missing` says.
fn first_page_verdict(
    found: bool,
    len: usize,
    oldest: i64,
    id: i64,
    missing: impl FnOnce() -> String,
) -> ReadBack {
    if found {
        ReadBack::Seen
    } else if len >= PAGE && oldest > id {
        ReadBack::Failed(format!("{id}: {PAGE} newer items hide it"))
    } else {
        ReadBack::Violation(missing())
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::{AckedComment, AckedDeletion, AckedLike};
    use super::*;

    #[test]
    fn a_page_of_comments_gives_its_ids_texts_and_oldest_id() {
        let page = serde_json::json!({
            "comments": [
                {"id": "30", "body": "newest"},
                {"id": "not a number", "body": "skipped"},
                {"id": "12", "body": "oldest"},
            ],
            "next_cursor": null,
        });
        let (listed, oldest) = comment_ids(&page).unwrap();
        assert_eq!(oldest, 12);
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[&30], "newest");
        let (empty, oldest) = comment_ids(&serde_json::json!({"comments": []})).unwrap();
        assert!(empty.is_empty() && oldest == i64::MAX);
        assert!(comment_ids(&serde_json::json!({"posts": []})).is_err());
    }

    #[test]
    fn a_first_page_without_the_item_is_a_violation_unless_full_of_newer_ones() {
        let missing = || "missing".to_owned();
        assert_eq!(first_page_verdict(true, 1, 5, 5, missing), ReadBack::Seen);
        assert_eq!(first_page_verdict(false, 3, 1, 5, missing), ReadBack::Violation("missing".into()));
        assert!(matches!(first_page_verdict(false, PAGE, 6, 5, missing), ReadBack::Failed(_)));
        // A full page reaching below the item: it should have been there.
        assert_eq!(first_page_verdict(false, PAGE, 4, 5, missing), ReadBack::Violation("missing".into()));
    }

    #[test]
    fn a_feed_page_shows_its_posts_and_hides_older_ones_only_when_more_pages_follow() {
        // Newest first: 50..40, the last page.
        let page: Vec<i64> = (40..=50).rev().collect();
        assert_eq!(feed_gaps(&page, false, &[50, 45, 40]), (0, vec![]));
        // Not on the last page: missing, older or newer than what it shows.
        assert_eq!(feed_gaps(&page, false, &[51, 44, 39, 12]), (0, vec![51, 39, 12]));
        assert_eq!(feed_gaps(&[], false, &[7]), (0, vec![7]));
        // With more pages to come, an older one is below this page (short of
        // PAGE or not: posts gone since are left out of it); a newer one, or one
        // inside the page's range, is still missing.
        assert_eq!(feed_gaps(&[50, 48, 46, 40], true, &[39, 5, 60, 47]), (2, vec![60, 47]));
        let full: Vec<i64> = (1000..1000 + PAGE as i64).rev().collect();
        assert_eq!(feed_gaps(&full, true, &[999, 1001, 1050]), (1, vec![]));
    }

    #[test]
    fn the_most_active_writers_are_the_feeds_checked() {
        let post = |author: &str| AckedPost {
            id: "1".into(),
            author: author.into(),
            caption: String::new(),
            photo: false,
        };
        let mut writes = Writes::default();
        writes.posts.extend([post("b"), post("c"), post("c")]);
        writes.likes.push(AckedLike { post_id: "1".into(), liker: "a".into() });
        writes.deletions.push(AckedDeletion { post_id: "1".into(), author: "c".into() });
        // c: 3 writes, then a and b (1 each) by name.
        assert_eq!(feed_readers(&writes), ["c", "a", "b"]);
        for i in 0..FEED_READERS + 5 {
            writes.posts.push(post(&format!("u{i:02}")));
        }
        let readers = feed_readers(&writes);
        assert_eq!(readers.len(), FEED_READERS);
        assert_eq!(readers[0], "c");
        assert_eq!(feed_readers(&Writes::default()), Vec::<&str>::new());
    }

    #[test]
    fn writes_on_deleted_posts_are_known_and_lost_ones_counted_by_kind() {
        let mut writes = Writes::default();
        writes.deletions.push(AckedDeletion { post_id: "1".into(), author: "a".into() });
        writes.maybe_deleted.push("2".into());
        writes.likes.push(AckedLike { post_id: "1".into(), liker: "b".into() });
        writes.comments.push(AckedComment {
            id: "9".into(),
            post_id: "3".into(),
            author: "b".into(),
            body: "hi".into(),
        });
        // A failed deletion is not a write; the like, comment and deletion are.
        assert_eq!(writes.len(), 3);
        assert_eq!(writes.deleted_posts().into_iter().collect::<Vec<_>>(), ["1", "2"]);

        let mut report = CheckReport::default();
        tally(&mut report, "comment", WriteVerdict::Lost("9 on 3".into()), |r| &mut r.lost_comments);
        tally(&mut report, "delete_post", WriteVerdict::Lost("1 by a".into()), |r| &mut r.lost_deletions);
        tally(&mut report, "comment", WriteVerdict::Verified, |r| &mut r.lost_comments);
        assert_eq!((report.lost, report.verified), (2, 1));
        assert_eq!(report.lost_comments, ["9 on 3"]);
        assert_eq!(report.lost_deletions, ["1 by a"]);
        assert_eq!(report.lost_by_kind, BTreeMap::from([("comment".into(), 1), ("delete_post".into(), 1)]));
    }

    #[test]
    fn comments_and_deletions_name_their_kind_and_post() {
        let c = Written::Comment { post_id: "7".into(), id: "70".into() };
        assert_eq!((c.kind(), c.subject(), c.on_post()), ("comment", "70", Some("7")));
        let d = Written::Deletion { post_id: "8".into() };
        assert_eq!((d.kind(), d.subject(), d.on_post()), ("delete_post", "8", None));
        let l = Written::Like { post_id: "9".into() };
        assert_eq!(l.on_post(), Some("9"));
        assert_eq!(Written::Follow { followee: "x".into() }.on_post(), None);
    }
}
