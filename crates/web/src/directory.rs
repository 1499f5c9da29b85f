//! Finding people and photos: the user directory (search by username or
//! display-name prefix), "suggested for you" (friends of friends, popular
//! accounts) and the explore page (recent photo posts by likes) — the
//! operations, shared by the JSON API and the pages, and the API's handlers.
//!
//! The directory is term-partitioned in Redis (ADR 0023): one sorted set per
//! lowercase name prefix (a *partition*, from two characters), its members
//! `term \0 user_id` with score 0, so `ZRANGEBYLEX` lists a prefix's names in
//! order. A partition holds every name under its prefix (*complete*) or, past
//! [`PARTITION_CAP`] names, only the first [`PARTITION_CAP`] (*split*): a longer
//! query then reads the partition one character longer. A partition's state is a
//! member of its own set (as a timeline's is, ADR 0013), so an evicted or lapsed
//! partition is simply missing, and a missing one is filled once from the
//! shards (one bounded index range scan per shard) under a *filling* mark that
//! a racing signup writes into. Every name found is checked against the user's
//! current profile before it is shown: a stale entry (a renamed user) is never
//! shown, and is removed.

use std::collections::{BTreeSet, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use data::{DirectoryEntry, Ranked};
use redis::Script;
use serde::{Deserialize, Serialize};

use crate::edges::MediaUrls;
use crate::error::ApiError;
use crate::service::{self, PostView, UserView};
use crate::state::AppState;
use crate::viewer::Viewer;

/// Shortest query, in characters: a partition's prefix is at least this long, so
/// one partition answers any query.
pub const MIN_QUERY: usize = 2;
/// Longest query, in characters (a display name's length).
pub const MAX_QUERY: usize = service::MAX_DISPLAY_NAME;
/// Most names a partition keeps; a prefix with more is split (its first names
/// kept, longer queries read the longer prefix's partition).
pub const PARTITION_CAP: usize = 1000;
/// How long a filled partition lives: it is not renewed by reads, so what was
/// written into the shards without the web tier (the seed's `COPY`) shows up
/// within it.
pub const PARTITION_TTL: Duration = Duration::from_secs(600);
/// How long a partition marked as being filled lives unless the fill ends:
/// longer than the fill's shard reads.
const FILL_MARK_TTL: Duration = Duration::from_secs(30);
/// Most followees whose own followees are read for friends of friends.
pub const FOF_SOURCES: usize = 50;
/// Most followees read of each of them (their newest).
pub const FOF_PER_SOURCE: i64 = 100;
/// How many popular accounts and friends of friends are kept per cached list.
const KEPT: i64 = 100;
/// How long a cached suggestion or explore list lives in Redis.
pub const LISTS_TTL: Duration = Duration::from_secs(60);
/// How recent the explore page's photos are.
pub const EXPLORE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most posts on the explore page.
pub const EXPLORE_MAX: usize = 60;

// A partition's state is a member of its own set, a single control byte that
// sorts before every name (names never start with a control character), read
// and written only by the scripts below: `\1` complete, `\2` split (only its
// first names kept), `\3` being filled from the shards.

/// Walk a query's partitions, shortest first. KEYS: the partitions of the
/// query's prefixes (2, 3, … characters); ARGV: range start, range end, count.
/// Answers `{state, level, members...}`: state `missing` (that level must be
/// filled) or `found`.
static WALK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        for i = 1, #KEYS do
          local k = KEYS[i]
          local split = redis.call('ZSCORE', k, '\2')
          if redis.call('ZSCORE', k, '\1') or (split and i == #KEYS) then
            local found = redis.call('ZRANGEBYLEX', k, ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[3])
            table.insert(found, 1, tostring(i))
            table.insert(found, 1, 'found')
            return found
          end
          if not split then return {'missing', tostring(i)} end
        end
        return {'missing', tostring(#KEYS)}",
    )
});

/// Mark a partition as being filled. KEYS: the partition; ARGV: the mark's
/// lifetime. 0 if it is already filled (another reader did).
static BEGIN_FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('ZSCORE', KEYS[1], '\1') or redis.call('ZSCORE', KEYS[1], '\2') then return 0 end
        redis.call('ZADD', KEYS[1], 0, '\3')
        if redis.call('TTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
        return 1",
    )
});

/// End a fill. KEYS: the partition; ARGV: cap, lifetime, split (`1`: the shards
/// had more names than the cap), the names... Only into a partition still being
/// filled (an evicted one may have missed writes); what signups wrote into it
/// meanwhile is kept. 1 if stored.
static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local k = KEYS[1]
        if not redis.call('ZSCORE', k, '\3') then return 0 end
        local cap = tonumber(ARGV[1])
        for i = 4, #ARGV do redis.call('ZADD', k, 0, ARGV[i]) end
        redis.call('ZREM', k, '\3')
        if ARGV[3] == '1' or redis.call('ZCARD', k) > cap then
          redis.call('ZADD', k, 0, '\2')
          redis.call('ZREMRANGEBYRANK', k, cap + 1, -1)
        else
          redis.call('ZADD', k, 0, '\1')
        end
        redis.call('EXPIRE', k, ARGV[2])
        return 1",
    )
});

/// Add a user's names to the partitions that exist. KEYS: partitions; ARGV: the
/// member for each, then the cap. A complete partition takes it (and is split
/// if it grows past the cap), a split one only if it sorts among its first
/// names, one being filled always.
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local cap = tonumber(ARGV[#ARGV])
        for i = 1, #KEYS do
          local k, m = KEYS[i], ARGV[i]
          if redis.call('ZSCORE', k, '\1') then
            redis.call('ZADD', k, 0, m)
            if redis.call('ZCARD', k) > cap + 1 then
              redis.call('ZREM', k, '\1')
              redis.call('ZADD', k, 0, '\2')
              redis.call('ZREMRANGEBYRANK', k, cap + 1, -1)
            end
          elseif redis.call('ZSCORE', k, '\2') then
            local added = redis.call('ZADD', k, 0, m)
            if added == 1 and redis.call('ZRANK', k, m) == redis.call('ZCARD', k) - 1 then
              redis.call('ZREM', k, m)
            end
            redis.call('ZREMRANGEBYRANK', k, cap + 1, -1)
          elseif redis.call('ZSCORE', k, '\3') then
            redis.call('ZADD', k, 0, m)
          end
        end
        return 1",
    )
});

/// Take stale names out of a partition. KEYS: the partition; ARGV: the cap,
/// the members. A split partition left with under half its names is dropped
/// (refilled when next read): its first names must cover a page.
static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local k = KEYS[1]
        for i = 2, #ARGV do redis.call('ZREM', k, ARGV[i]) end
        if redis.call('ZSCORE', k, '\2') and redis.call('ZCARD', k) - 1 < tonumber(ARGV[1]) / 2 then
          redis.call('DEL', k)
        end
        return 1",
    )
});

/// A name as the directory matches it: lowercase.
pub fn fold(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Trim, lowercase and check a search query: [`MIN_QUERY`] to [`MAX_QUERY`]
/// printable characters.
pub fn parse_query(raw: Option<&str>) -> Result<String, ApiError> {
    let Some(raw) = raw else {
        return Err(ApiError::bad_request("invalid_query", "give the start of a name as `q`"));
    };
    let q = fold(raw);
    let n = q.chars().count();
    if !(MIN_QUERY..=MAX_QUERY).contains(&n) || service::has_control_chars(&q, false) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`q` is {MIN_QUERY} to {MAX_QUERY} printable characters"),
        ));
    }
    Ok(q)
}

/// The first `len` characters of `term`.
fn head(term: &str, len: usize) -> &str {
    term.char_indices().nth(len).map_or(term, |(i, _)| &term[..i])
}

/// The Redis key of the partition of `prefix`.
fn partition_key(state: &AppState, prefix: &str) -> String {
    state.redis().key(&format!("dir:{prefix}"))
}

/// A directory member: the name, a NUL, the user's id.
fn member(term: &str, user_id: i64) -> String {
    format!("{term}\0{user_id}")
}

/// A member's name and user id.
fn parse_member(m: &str) -> Option<(&str, i64)> {
    let (term, id) = m.split_once('\0')?;
    Some((term, id.parse().ok()?))
}

/// A user's names as the directory keeps them (the lowercase username and
/// display name, once each if they are the same).
fn terms(username: &str, display_name: &str) -> Vec<String> {
    let mut terms = vec![fold(username), fold(display_name)];
    terms.dedup();
    terms.retain(|t| t.chars().count() >= MIN_QUERY && !t.starts_with(char::is_control));
    terms
}

/// Put a user's current names into every data center's directory (the
/// partitions that exist there; a missing one is filled from the shards when
/// read). Called by a signup, and to be called when a display name changes
/// (the old name is left to be found stale and removed when read). Failures are
/// logged: the directory is derived from the shards.
pub async fn record_user(state: &AppState, user_id: i64, username: &str, display_name: &str) {
    let mut inv = RECORD.prepare_invoke();
    for term in terms(username, display_name) {
        let m = member(&term, user_id);
        for len in MIN_QUERY..=term.chars().count().min(MAX_QUERY) {
            inv.key(partition_key(state, head(&term, len))).arg(&m);
        }
    }
    inv.arg(PARTITION_CAP);
    let inv = &inv;
    let written = state
        .redis()
        .run_everywhere("directory record", |server| async move {
            server.run(|mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await
        })
        .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, user_id, "a user's names not recorded in every directory");
    }
}

/// What a walk of a query's partitions found.
enum Walk {
    /// The level of the partition that answers (1: the shortest prefix), and
    /// its members under the query (in name order).
    Found(usize, Vec<String>),
    /// The partition at this level (1: the shortest) must be filled first.
    Missing(usize),
}

/// Read `q`'s answering partition: its first `count` members from `q` on.
async fn walk(state: &AppState, q: &str, count: usize) -> Result<Walk, redis::RedisError> {
    let levels = q.chars().count();
    let mut inv = WALK.prepare_invoke();
    for len in MIN_QUERY..=levels {
        inv.key(partition_key(state, head(q, len)));
    }
    let mut end = Vec::with_capacity(q.len() + 2);
    end.push(b'[');
    end.extend_from_slice(q.as_bytes());
    end.push(0xff);
    inv.arg(format!("[{q}")).arg(end).arg(count);
    let inv = &inv;
    let mut reply: Vec<String> =
        state.redis().run(|mut c| async move { inv.invoke_async::<Vec<String>>(&mut c).await }).await?;
    let level = reply.get(1).and_then(|l| l.parse::<usize>().ok()).unwrap_or(1);
    Ok(match reply.first().map(String::as_str) {
        Some("found") => Walk::Found(level, reply.split_off(2)),
        _ => Walk::Missing(level),
    })
}

/// Fill the partition of `prefix` from the shards' primaries; returns its
/// members (sorted, at most the cap), whether it is split and whether it was
/// stored (only if every shard's primary answered and no eviction intervened);
/// `None` if another reader filled it meanwhile (read it instead).
async fn fill(state: &AppState, prefix: &str) -> Result<Option<(Vec<String>, bool, bool)>, ApiError> {
    let key = partition_key(state, prefix);
    let mark_ttl = FILL_MARK_TTL.as_secs();
    let marked = state
        .redis()
        .run(|mut c| {
            let key = &key;
            async move { BEGIN_FILL.key(key).arg(mark_ttl).invoke_async::<i64>(&mut c).await }
        })
        .await;
    if matches!(marked, Ok(0)) {
        return Ok(None);
    }
    let (found, served) =
        data::fill_reads(state.data().users_with_prefix(prefix, PARTITION_CAP as i64 + 1)).await;
    let (members, split) = members_of(&found?, prefix);
    let mut stored = false;
    if matches!(marked, Ok(1)) && served == data::Served::Primary {
        let ttl = jittered(PARTITION_TTL).as_secs();
        let mut inv = FILL.prepare_invoke();
        inv.key(&key).arg(PARTITION_CAP).arg(ttl).arg(if split { "1" } else { "0" });
        for m in &members {
            inv.arg(m);
        }
        let inv = &inv;
        match state.redis().run(|mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await {
            Ok(n) => stored = n == 1,
            Err(e) => tracing::warn!(error = %e, prefix, "a directory partition not stored"),
        }
    }
    Ok(Some((members, split, stored)))
}

/// The shards' users as a partition's members: each name of theirs under
/// `prefix`, sorted, at most the cap; and whether there were more (split).
fn members_of(entries: &[DirectoryEntry], prefix: &str) -> (Vec<String>, bool) {
    let all: BTreeSet<String> = entries
        .iter()
        .flat_map(|e| {
            terms(&e.username, &e.display_name)
                .into_iter()
                .filter(|t| t.starts_with(prefix))
                .map(|t| member(&t, e.user_id))
                .collect::<Vec<_>>()
        })
        .collect();
    let split = all.len() > PARTITION_CAP;
    (all.into_iter().take(PARTITION_CAP).collect(), split)
}

/// `ttl` ± 10%, so partitions filled together do not lapse together.
fn jittered(ttl: Duration) -> Duration {
    ttl.mul_f64(0.9 + rand::random::<f64>() * 0.2)
}

/// The members under `q` (name order), at most `count`: from the directory,
/// filling the partitions it lacks; from the shards if Redis cannot help.
async fn candidates(state: &AppState, q: &str, count: usize) -> Result<Vec<(String, String)>, ApiError> {
    let levels = q.chars().count();
    // Each round fills one level; a query has at most MAX_QUERY levels.
    for _ in MIN_QUERY..=levels + 1 {
        match walk(state, q, count).await {
            Ok(Walk::Found(level, members)) => {
                let key = partition_key(state, head(q, MIN_QUERY + level - 1));
                return Ok(members.into_iter().map(|m| (m, key.clone())).collect());
            }
            Ok(Walk::Missing(level)) => {
                let prefix = head(q, MIN_QUERY + level - 1);
                let Some((members, split, stored)) = fill(state, prefix).await? else { continue };
                // This partition answers: from what was just read.
                if !split || prefix.chars().count() == levels {
                    let key = partition_key(state, prefix);
                    return Ok(members
                        .into_iter()
                        .filter(|m| m.starts_with(q))
                        .take(count)
                        .map(|m| (m, key.clone()))
                        .collect());
                }
                if !stored {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the directory is unreadable; searching the shards");
                break;
            }
        }
    }
    // The shards directly: every shard's first names under `q`.
    let (found, _) = data::fill_reads(state.data().users_with_prefix(q, count as i64)).await;
    let (members, _) = members_of(&found?, q);
    Ok(members.into_iter().take(count).map(|m| (m, String::new())).collect())
}

/// Users whose username or display name starts with `q` (case-insensitively),
/// in name order, at most `limit`, as `viewer` sees them.
pub async fn search(
    state: &AppState,
    media: &MediaUrls,
    q: &str,
    limit: usize,
    viewer: Option<i64>,
) -> Result<Vec<UserView>, ApiError> {
    // Room for stale names and a user matched by both names.
    let found = candidates(state, q, 2 * limit + 10).await?;
    let mut ids: Vec<i64> = Vec::new();
    for (m, _) in &found {
        if let Some((_, id)) = parse_member(m)
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    let data = state.data();
    let profiles = service::batch_by_id(&state.caches().profiles, &ids, |ids| async move {
        Ok(data.profiles(&ids).await?.into_iter().map(|u| (u.user_id, u)).collect())
    })
    .await?;
    let current: std::collections::HashMap<i64, _> =
        profiles.into_iter().flatten().map(|u| (u.user_id, u)).collect();
    // Names that no longer are a user's: out of their partition.
    let stale: Vec<&(String, String)> = found
        .iter()
        .filter(|(m, key)| {
            !key.is_empty()
                && parse_member(m).is_some_and(|(term, id)| {
                    current
                        .get(&id)
                        .is_none_or(|u| !terms(&u.username, &u.display_name).iter().any(|t| t == term))
                })
        })
        .collect();
    if let Some((_, key)) = stale.first() {
        let mut inv = FORGET.prepare_invoke();
        inv.key(key).arg(PARTITION_CAP);
        for (m, _) in &stale {
            inv.arg(m);
        }
        let inv = &inv;
        if let Err(e) = state.redis().run(|mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await
        {
            tracing::warn!(error = %e, "stale directory names not removed");
        }
    }
    let followees = match viewer {
        Some(v) => Some(service::viewer_followees(state, v).await?),
        None => None,
    };
    let mut shown = HashSet::new();
    Ok(ids
        .iter()
        .filter_map(|id| current.get(id))
        .filter(|u| terms(&u.username, &u.display_name).iter().any(|t| t.starts_with(q)))
        .filter(|u| shown.insert(u.user_id))
        .take(limit)
        .map(|u| user_for(u, viewer, followees.as_deref(), media))
        .collect())
}

/// `u` as `viewer` sees them (`followed_by_me` from the viewer's followees).
fn user_for(
    u: &data::UserRecord,
    viewer: Option<i64>,
    followees: Option<&Vec<i64>>,
    media: &MediaUrls,
) -> UserView {
    let followed = match (viewer, followees) {
        (Some(v), _) if v == u.user_id => Some(false),
        (Some(_), Some(f)) => Some(f.contains(&u.user_id)),
        _ => None,
    };
    crate::avatars::with_avatar(service::user_view(u, followed), u, media)
}

/// A list kept in this DC's Redis for [`LISTS_TTL`] (derived from the shards,
/// refreshed when it lapses or is evicted; read from the shards if Redis fails).
async fn kept_list<F, Fut>(state: &AppState, name: &str, load: F) -> Result<Vec<Ranked>, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Vec<Ranked>, data::DataError>>,
{
    let key = state.redis().key(&format!("dirlist:{name}"));
    let key = &key;
    let cached = state
        .redis()
        .run(|mut c| async move { redis::cmd("GET").arg(key).query_async::<Option<String>>(&mut c).await })
        .await;
    if let Ok(Some(json)) = &cached
        && let Ok(list) = serde_json::from_str::<Vec<(i64, i64)>>(json)
    {
        return Ok(list.into_iter().map(|(id, score)| Ranked { id, score }).collect());
    }
    let list = load().await?;
    if cached.is_ok() {
        let json = serde_json::to_string(&list.iter().map(|r| (r.id, r.score)).collect::<Vec<_>>())
            .unwrap_or_default();
        let ttl = LISTS_TTL.as_secs();
        let stored = state
            .redis()
            .run(|mut c| async move {
                redis::cmd("SET").arg(key).arg(json).arg("EX").arg(ttl).query_async::<()>(&mut c).await
            })
            .await;
        if let Err(e) = stored {
            tracing::warn!(error = %e, list = name, "a suggestion list not kept");
        }
    }
    Ok(list)
}

/// A suggested account.
#[derive(Debug, Clone, Serialize)]
pub struct Suggested {
    /// The account.
    pub user: UserView,
    /// Why it is suggested: `followed_by_followees` or `popular`.
    pub reason: &'static str,
    /// For `followed_by_followees`: how many of the viewer's (sampled)
    /// followees follow it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutual_count: Option<i64>,
}

/// The answer of `GET /suggestions`.
#[derive(Debug, Clone, Serialize)]
pub struct Suggestions {
    /// Friends of friends first, then popular accounts; never the viewer or
    /// someone the viewer follows.
    pub users: Vec<Suggested>,
}

/// Accounts to follow for `viewer` (popular ones only when signed out): the
/// followees of up to [`FOF_SOURCES`] of the viewer's followees, ranked by how
/// many of them follow each, then the most followed accounts.
pub async fn suggestions(
    state: &AppState,
    media: &MediaUrls,
    viewer: Option<i64>,
    limit: usize,
) -> Result<Suggestions, ApiError> {
    let followees = match viewer {
        Some(v) => service::followees_of(state, v).await?,
        None => Default::default(),
    };
    let mut picks: Vec<(i64, &'static str, Option<i64>)> = Vec::new();
    let excluded = |id: i64| Some(id) == viewer || followees.contains(&id);
    if let Some(v) = viewer
        && !followees.is_empty()
    {
        // A stable sample per viewer: the followees that hash lowest with them.
        let mut sample = followees.as_ref().clone();
        sample.sort_by_key(|f| sharding::fmix64((*f as u64) ^ (v as u64)));
        sample.truncate(FOF_SOURCES);
        let data = state.data();
        let fof = kept_list(state, &format!("fof:{v}"), || async move {
            data.followees_of_many(&sample, FOF_PER_SOURCE, KEPT).await
        })
        .await?;
        picks.extend(
            fof.iter().filter(|r| !excluded(r.id)).map(|r| (r.id, "followed_by_followees", Some(r.score))),
        );
    }
    let data = state.data();
    let popular = kept_list(state, "popular", || async move { data.popular_users(KEPT).await }).await?;
    for r in popular {
        if !excluded(r.id) && !picks.iter().any(|p| p.0 == r.id) {
            picks.push((r.id, "popular", None));
        }
    }
    picks.truncate(limit);
    let ids: Vec<i64> = picks.iter().map(|p| p.0).collect();
    let profiles = service::batch_by_id(&state.caches().profiles, &ids, |ids| async move {
        Ok(data.profiles(&ids).await?.into_iter().map(|u| (u.user_id, u)).collect())
    })
    .await?;
    let users = picks
        .iter()
        .zip(profiles)
        .filter_map(|((_, reason, mutual), user)| {
            let user = user?;
            Some(Suggested {
                user: user_for(&user, viewer, viewer.map(|_| followees.as_ref()), media),
                reason,
                mutual_count: *mutual,
            })
        })
        .collect();
    Ok(Suggestions { users })
}

/// The answer of `GET /explore`.
#[derive(Debug, Clone, Serialize)]
pub struct Explore {
    /// Ready photo posts of the last week, most liked first.
    pub posts: Vec<PostView>,
}

/// The most liked ready photo posts of the last [`EXPLORE_WINDOW`], at most
/// `limit`, over every shard (the list kept for [`LISTS_TTL`]).
pub async fn explore(state: &AppState, media: &MediaUrls, limit: usize) -> Result<Explore, ApiError> {
    let data = state.data();
    let ranked = kept_list(state, "explore", || async move {
        data.popular_photo_posts(EXPLORE_WINDOW, EXPLORE_MAX as i64).await
    })
    .await?;
    let reads =
        ranked.iter().take(limit).filter_map(|r| data::PostId::from_i64(r.id).ok()).map(|id| async move {
            match service::post(state, media, id, None).await {
                Ok(post) => Ok(Some(post)),
                Err(ApiError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        });
    let posts = futures::future::try_join_all(reads).await?.into_iter().flatten().collect();
    Ok(Explore { posts })
}

/// The query of `GET /search/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchQuery {
    /// The start of a username or display name.
    q: Option<String>,
    /// Most users returned.
    limit: Option<String>,
}

/// The answer of `GET /search/users`.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResults {
    /// Matching users, in name order.
    pub users: Vec<UserView>,
}

/// `GET /search/users?q=&limit=`.
pub(crate) async fn search_handler(
    State(state): State<AppState>,
    Viewer(viewer): Viewer,
    media: MediaUrls,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = service::parse_limit(q.limit.as_deref())?;
    let q = parse_query(q.q.as_deref())?;
    let users = search(&state, &media, &q, limit, viewer.map(|s| s.user_id)).await?;
    Ok(Json(SearchResults { users }).into_response())
}

/// The query of `GET /suggestions` and `GET /explore`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitQuery {
    /// Most items returned.
    limit: Option<String>,
}

fn limit_of(query: Result<Query<LimitQuery>, QueryRejection>) -> Result<usize, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    service::parse_limit(q.limit.as_deref())
}

/// `GET /suggestions?limit=`.
pub(crate) async fn suggestions_handler(
    State(state): State<AppState>,
    Viewer(viewer): Viewer,
    media: MediaUrls,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let limit = limit_of(query)?;
    Ok(Json(suggestions(&state, &media, viewer.map(|s| s.user_id), limit).await?).into_response())
}

/// `GET /explore?limit=`.
pub(crate) async fn explore_handler(
    State(state): State<AppState>,
    media: MediaUrls,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let limit = limit_of(query)?.min(EXPLORE_MAX);
    Ok(Json(explore(&state, &media, limit).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_folded_and_bounded() {
        assert_eq!(parse_query(Some("  AdA Lo ")).unwrap(), "ada lo");
        for bad in [None, Some(""), Some("a"), Some("  b "), Some("bell\u{7}x")] {
            assert!(parse_query(bad).is_err(), "{bad:?}");
        }
        assert!(parse_query(Some(&"x".repeat(MAX_QUERY))).is_ok());
        assert!(parse_query(Some(&"x".repeat(MAX_QUERY + 1))).is_err());
    }

    #[test]
    fn members_hold_their_name_and_user() {
        let m = member("ada lovelace", 42);
        assert_eq!(parse_member(&m), Some(("ada lovelace", 42)));
        assert_eq!(head("ñandú", 2), "ña");
        assert_eq!(head("ab", 5), "ab");
        assert_eq!(terms("ada", "ADA"), vec!["ada".to_owned()]);
        assert_eq!(terms("ada", "X"), vec!["ada".to_owned()], "a one-letter name is not kept");
    }

    #[test]
    fn a_prefix_with_more_names_than_the_cap_is_split() {
        let entries: Vec<DirectoryEntry> = (0..PARTITION_CAP as i64 + 5)
            .map(|i| DirectoryEntry {
                user_id: i,
                username: format!("user{i}"),
                display_name: format!("Zed {i}"),
            })
            .collect();
        let (members, split) = members_of(&entries, "us");
        assert!(split);
        assert_eq!(members.len(), PARTITION_CAP);
        assert!(members.windows(2).all(|w| w[0] < w[1]), "in name order");
        let (members, split) = members_of(&entries[..3], "ze");
        assert!(!split);
        assert_eq!(members, vec![member("zed 0", 0), member("zed 1", 1), member("zed 2", 2)]);
    }
}
