//! The operations of the mix: making one due request (one function per
//! operation), counting its outcome, and the writer's read-back of an
//! acknowledged write.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use reqwest::StatusCode;
use tokio::time::Instant;

use super::checker::{ReadBack, Written, read_back};
use super::config::Op;
use super::failure::Failure;
use super::photo::photo_jpeg;
use super::report::{AckedComment, AckedDeletion, AckedFollow, AckedLike, AckedPost, LISTED_LOST};
use super::schedule::{Job, search_of};
use super::state::{MAX_LATENCY_US, Pool, Shared, lock};

/// An acknowledged write its writer reads back at once.
pub(super) struct ReadBackDue {
    /// What was written.
    written: Written,
    /// The writer's session, the one that wrote it.
    token: String,
}

/// What an operation's request gives: a write to read back, if any.
type Outcome = Result<Option<ReadBackDue>, Failure>;

/// Make the request `job` due at `intended`, count it, read its write back if
/// asked; the request is no longer in flight afterwards.
pub(super) async fn execute(shared: Arc<Shared>, job: Job, intended: Instant) {
    if intended >= shared.measure_from {
        let lag = Instant::now().saturating_duration_since(intended);
        lock(&shared.lag).saturating_record((lag.as_micros() as u64).clamp(1, MAX_LATENCY_US));
    }
    let (user, target) = (job.user, shared.target(job.user).to_owned());
    let (op, result) = perform(&shared, &target, job).await;
    let latency = intended.elapsed();
    shared.record(op, intended, result.as_ref().map(|_| ()).map_err(|e| e.kind()), Some(latency));
    shared.completed.fetch_add(1, Ordering::Relaxed);
    if let Ok(Some(due)) = result {
        read_your_write(&shared, (user, &target), &due).await;
    }
    shared.in_flight.fetch_sub(1, Ordering::AcqRel);
}

/// Make the request; returns the operation it became (a like or comment with no
/// post known yet becomes a post, a photo view or comment read with no target
/// known a timeline read, a deletion by a user with no post of this run a post) and,
/// for a write to read back, what it was and the writer's token.
async fn perform(shared: &Shared, target: &str, job: Job) -> (Op, Outcome) {
    match job.op {
        Op::Like => {
            // Bound first: the pool's lock is released before any request.
            let known = Pool::pick(&lock(&shared.pool).posts, job.other);
            match known {
                Some(post_id) => (Op::Like, like(shared, target, job, post_id).await),
                None => {
                    shared.substituted(Op::Like, Op::Post);
                    (Op::Post, post(shared, target, job).await)
                }
            }
        }
        Op::ViewPhoto => {
            let known = Pool::pick(&lock(&shared.pool).photos, job.other);
            match known {
                Some(url) => (Op::ViewPhoto, view_photo(shared, (job.user, target), url).await),
                None => {
                    shared.substituted(Op::ViewPhoto, Op::Timeline);
                    (Op::Timeline, timeline(shared, target, job).await)
                }
            }
        }
        Op::Comment => {
            let known = Pool::pick(&lock(&shared.pool).posts, job.other);
            match known {
                Some(post_id) => (Op::Comment, comment(shared, target, job, post_id).await),
                None => {
                    shared.substituted(Op::Comment, Op::Post);
                    (Op::Post, post(shared, target, job).await)
                }
            }
        }
        Op::Comments => {
            let known = Pool::pick(&lock(&shared.pool).posts, job.other);
            match known {
                Some(post_id) => (Op::Comments, comments(shared, target, job, post_id).await),
                None => {
                    shared.substituted(Op::Comments, Op::Timeline);
                    (Op::Timeline, timeline(shared, target, job).await)
                }
            }
        }
        Op::DeletePost => match shared.take_own_post(job.user, job.other) {
            Some(post_id) => (Op::DeletePost, delete_post(shared, target, job, post_id).await),
            None => {
                shared.substituted(Op::DeletePost, Op::Post);
                (Op::Post, post(shared, target, job).await)
            }
        },
        Op::Notifications => (Op::Notifications, notifications(shared, target, job).await),
        Op::Search => (Op::Search, search(shared, target, job).await),
        Op::Feed => (Op::Feed, feed(shared, target, job).await),
        Op::Timeline => (Op::Timeline, timeline(shared, target, job).await),
        Op::Post => (Op::Post, post(shared, target, job).await),
        Op::PhotoPost => (Op::PhotoPost, photo_post(shared, target, job).await),
        Op::Follow => (Op::Follow, follow(shared, target, job).await),
    }
}

/// `GET /api/v1/feed` as the job's user; its posts and photos become known.
async fn feed(shared: &Shared, target: &str, job: Job) -> Outcome {
    let token = shared.token(target, job.user).await?;
    let page = shared
        .http
        .json(shared.http.client(job.user).get(format!("{target}/api/v1/feed?limit=20")).bearer_auth(token))
        .await?;
    shared.harvest(&page);
    Ok(None)
}

/// `GET /api/v1/users/{name}/posts` of the job's user, without a session; its
/// posts and photos become known.
async fn timeline(shared: &Shared, target: &str, job: Job) -> Outcome {
    let name = shared.username(job.user);
    let page = shared
        .http
        .json(shared.http.client(job.user).get(format!("{target}/api/v1/users/{name}/posts?limit=20")))
        .await?;
    shared.harvest(&page);
    Ok(None)
}

/// `GET` of a thumbnail seen in a page of posts (a path is on `target`).
async fn view_photo(shared: &Shared, (user, target): (u64, &str), url: String) -> Outcome {
    let url = if url.starts_with("http://") || url.starts_with("https://") {
        url
    } else {
        format!("{target}{url}")
    };
    shared.http.send(shared.http.client(user).get(url)).await?;
    Ok(None)
}

/// `POST /api/v1/posts` with a caption unique to this run.
async fn post(shared: &Shared, target: &str, job: Job) -> Outcome {
    let token = shared.token(target, job.user).await?;
    let name = shared.username(job.user);
    let n = shared.posted.fetch_add(1, Ordering::Relaxed);
    let caption = format!("bench {} #{n} by {name}", shared.tag);
    let v = shared
        .http
        .json(
            shared
                .http
                .client(job.user)
                .post(format!("{target}/api/v1/posts"))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "caption": caption })),
        )
        .await?;
    let id = v["id"].as_str().ok_or_else(|| Failure::BadBody("no id in the created post".into()))?.to_owned();
    Ok(acknowledged_post(shared, job, token, AckedPost { id, author: name, caption, photo: false }))
}

/// `POST /api/v1/posts` as multipart with a JPEG of its own.
async fn photo_post(shared: &Shared, target: &str, job: Job) -> Outcome {
    let token = shared.token(target, job.user).await?;
    let name = shared.username(job.user);
    let n = shared.posted.fetch_add(1, Ordering::Relaxed);
    let caption = format!("bench {} photo #{n} by {name}", shared.tag);
    let jpeg = photo_jpeg((shared.photo_salt << 32) ^ n);
    let part = reqwest::multipart::Part::bytes(jpeg)
        .file_name("bench.jpg")
        .mime_str("image/jpeg")
        .map_err(|e| Failure::Request(e.to_string()))?;
    let form = reqwest::multipart::Form::new().text("caption", caption.clone()).part("photo", part);
    let v = shared
        .http
        .json(
            shared
                .http
                .client(job.user)
                .post(format!("{target}/api/v1/posts"))
                .bearer_auth(&token)
                .multipart(form),
        )
        .await?;
    let id = v["id"]
        .as_str()
        .ok_or_else(|| Failure::BadBody("no id in the created photo post".into()))?
        .to_owned();
    Ok(acknowledged_post(shared, job, token, AckedPost { id, author: name, caption, photo: true }))
}

/// Remember an acknowledged post (for the checker, and to be liked), and whether
/// to read it back.
fn acknowledged_post(shared: &Shared, job: Job, token: String, post: AckedPost) -> Option<ReadBackDue> {
    let written = Written::Post { author: post.author.clone(), id: post.id.clone(), photo: post.photo };
    let id = post.id.clone();
    lock(&shared.writes).posts.push(post);
    lock(&shared.own_posts).entry(job.user).or_default().push(id.clone());
    Pool::push(&mut lock(&shared.pool).posts, id);
    job.ryw.then_some(ReadBackDue { written, token })
}

/// `PUT /api/v1/posts/{id}/like` of a known post; acknowledged only as `liked`
/// (a 404 from a post this run is deleting is not a failure, and no like).
async fn like(shared: &Shared, target: &str, job: Job, post_id: String) -> Outcome {
    let token = shared.token(target, job.user).await?;
    let v = shared
        .http
        .json(
            shared
                .http
                .client(job.user)
                .put(format!("{target}/api/v1/posts/{post_id}/like"))
                .bearer_auth(&token),
        )
        .await;
    let v = match v {
        Err(Failure::Status(StatusCode::NOT_FOUND)) if shared.is_deleting(&post_id) => return Ok(None),
        v => v?,
    };
    if v["liked"].as_bool() != Some(true) {
        return Err(Failure::BadBody("the like was not acknowledged as liked".into()));
    }
    lock(&shared.writes).likes.push(AckedLike { post_id: post_id.clone(), liker: shared.username(job.user) });
    Ok(job.ryw.then_some(ReadBackDue { written: Written::Like { post_id }, token }))
}

/// `POST /api/v1/posts/{id}/comments` on a known post with a text unique to
/// this run. A 404 from a post this run is deleting is the right answer to a
/// comment that raced the deletion: nothing acknowledged, nothing failed.
async fn comment(shared: &Shared, target: &str, job: Job, post_id: String) -> Outcome {
    let token = shared.token(target, job.user).await?;
    let name = shared.username(job.user);
    let n = shared.commented.fetch_add(1, Ordering::Relaxed);
    let body = format!("bench {} comment #{n} by {name}", shared.tag);
    let v = shared
        .http
        .json(
            shared
                .http
                .client(job.user)
                .post(format!("{target}/api/v1/posts/{post_id}/comments"))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "body": body })),
        )
        .await;
    let v = match v {
        Err(Failure::Status(StatusCode::NOT_FOUND)) if shared.is_deleting(&post_id) => return Ok(None),
        v => v?,
    };
    let id =
        v["id"].as_str().ok_or_else(|| Failure::BadBody("no id in the created comment".into()))?.to_owned();
    if v["body"].as_str() != Some(body.as_str()) || v["post_id"].as_str() != Some(post_id.as_str()) {
        return Err(Failure::BadBody(format!("comment {id} came back with another body or post")));
    }
    lock(&shared.writes).comments.push(AckedComment {
        id: id.clone(),
        post_id: post_id.clone(),
        author: name,
        body,
    });
    Ok(job.ryw.then_some(ReadBackDue { written: Written::Comment { post_id, id }, token }))
}

/// `GET /api/v1/posts/{id}/comments` of a known post: its first page, which must
/// be a list of comments (a 404 from a post this run is deleting is not a
/// failure).
async fn comments(shared: &Shared, target: &str, job: Job, post_id: String) -> Outcome {
    let token = shared.token(target, job.user).await?;
    let page = shared
        .http
        .json(
            shared
                .http
                .client(job.user)
                .get(format!("{target}/api/v1/posts/{post_id}/comments?limit=20"))
                .bearer_auth(token),
        )
        .await;
    let page = match page {
        Err(Failure::Status(StatusCode::NOT_FOUND)) if shared.is_deleting(&post_id) => return Ok(None),
        page => page?,
    };
    if !page["comments"].is_array() {
        return Err(Failure::BadBody("no comments in the page of comments".into()));
    }
    Ok(None)
}

/// `GET /api/v1/notifications` as the job's user: a page with its `unread`
/// count.
async fn notifications(shared: &Shared, target: &str, job: Job) -> Outcome {
    let token = shared.token(target, job.user).await?;
    let page = shared
        .http
        .json(
            shared
                .http
                .client(job.user)
                .get(format!("{target}/api/v1/notifications?limit=20"))
                .bearer_auth(token),
        )
        .await?;
    if !page["notifications"].is_array() || !page["unread"].is_i64() {
        return Err(Failure::BadBody("the notifications page lacks `notifications` or `unread`".into()));
    }
    Ok(None)
}

/// Most users a search asks for.
const SEARCH_LIMIT: usize = 20;

/// `GET /api/v1/search/users?q=` of a prefix of a Zipf-drawn user's name, as
/// the job's user: the answer must be well-formed ([`search_answer_ok`]).
async fn search(shared: &Shared, target: &str, job: Job) -> Outcome {
    let token = shared.token(target, job.user).await?;
    let (rank, len) = search_of(job.other);
    let name = shared.username(rank);
    let q: String = name.chars().take(len).collect();
    let answer = shared
        .http
        .json(
            shared
                .http
                .client(job.user)
                .get(format!("{target}/api/v1/search/users?q={q}&limit={SEARCH_LIMIT}"))
                .bearer_auth(token),
        )
        .await?;
    search_answer_ok(&answer, &q, SEARCH_LIMIT).map_err(Failure::BadBody)?;
    Ok(None)
}

/// Whether `answer` is a well-formed answer to a search for `q` (lowercase):
/// `users`, at most `limit` of them, each with an id and a username, and a
/// username or display name (trimmed, lowercased) that starts with `q`.
pub(super) fn search_answer_ok(answer: &serde_json::Value, q: &str, limit: usize) -> Result<(), String> {
    let users = answer["users"].as_array().ok_or("no users in the search answer")?;
    if users.len() > limit {
        return Err(format!("{} users for a limit of {limit}", users.len()));
    }
    for u in users {
        let (Some(_), Some(username)) = (u["id"].as_str(), u["username"].as_str()) else {
            return Err(format!("a found user without an id or username: {u}"));
        };
        let display = u["display_name"].as_str().unwrap_or_default().trim().to_lowercase();
        if !username.to_lowercase().starts_with(q) && !display.starts_with(q) {
            return Err(format!("{username} does not match {q:?}"));
        }
    }
    Ok(())
}

/// `DELETE /api/v1/posts/{id}` of the job's user's own post of this run (taken
/// out of the pool first); acknowledged by a 2xx.
async fn delete_post(shared: &Shared, target: &str, job: Job, post_id: String) -> Outcome {
    let token = shared.token(target, job.user).await?;
    shared
        .http
        .send(
            shared
                .http
                .client(job.user)
                .delete(format!("{target}/api/v1/posts/{post_id}"))
                .bearer_auth(&token),
        )
        .await
        .inspect_err(|_| {
            // Perhaps deleted anyway (an answer lost after the commit): the
            // checker requires neither the post nor its absence.
            lock(&shared.writes).maybe_deleted.push(post_id.clone());
        })?;
    lock(&shared.writes)
        .deletions
        .push(AckedDeletion { post_id: post_id.clone(), author: shared.username(job.user) });
    Ok(job.ryw.then_some(ReadBackDue { written: Written::Deletion { post_id }, token }))
}

/// `PUT /api/v1/users/{name}/follow` of the job's other user; acknowledged only
/// as `following`.
async fn follow(shared: &Shared, target: &str, job: Job) -> Outcome {
    let token = shared.token(target, job.user).await?;
    let followee = shared.username(job.other);
    let v = shared
        .http
        .json(
            shared
                .http
                .client(job.user)
                .put(format!("{target}/api/v1/users/{followee}/follow"))
                .bearer_auth(&token),
        )
        .await?;
    if v["following"].as_bool() != Some(true) {
        return Err(Failure::BadBody("the follow was not acknowledged as following".into()));
    }
    lock(&shared.writes)
        .follows
        .push(AckedFollow { follower: shared.username(job.user), followee: followee.clone() });
    Ok(job.ryw.then_some(ReadBackDue { written: Written::Follow { followee }, token }))
}

/// The writer reads its write back at once, with the same session, through
/// the same entry.
async fn read_your_write(shared: &Shared, (user, target): (u64, &str), due: &ReadBackDue) {
    let written = &due.written;
    let mut result = read_back(&shared.http.client(user), target, &due.token, written).await;
    // A write on a post this run deleted since went with it: not a violation.
    if let (ReadBack::Violation(what), Some(post_id)) = (&result, written.on_post())
        && shared.is_deleting(post_id)
    {
        result = ReadBack::Failed(format!("{what} (the post was deleted since)"));
    }
    let mut ryw = lock(&shared.ryw);
    let kind = ryw.by_kind.entry(written.kind().to_owned()).or_default();
    kind.checked += 1;
    match result {
        ReadBack::Seen => {}
        ReadBack::Violation(what) => {
            kind.violations += 1;
            if ryw.listed.len() < LISTED_LOST {
                ryw.listed.push(format!("{} {}: {what}", written.kind(), written.subject()));
            }
        }
        ReadBack::Failed(_) => kind.errors += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_answer_must_list_matching_users_within_the_limit() {
        let user = |name: &str, display: &str| serde_json::json!({"id": "1", "username": name, "display_name": display});
        let ok = serde_json::json!({"users": [user("user12", "x"), user("bob", "  User Twelve")]});
        assert_eq!(search_answer_ok(&ok, "us", 20), Ok(()));
        assert_eq!(search_answer_ok(&serde_json::json!({"users": []}), "us", 20), Ok(()));
        assert!(search_answer_ok(&ok, "us", 1).unwrap_err().contains("limit"));
        let other = serde_json::json!({"users": [user("bob", "Bob")]});
        assert!(search_answer_ok(&other, "us", 20).unwrap_err().contains("does not match"));
        let no_id = serde_json::json!({"users": [{"username": "user1"}]});
        assert!(search_answer_ok(&no_id, "us", 20).is_err());
        assert!(search_answer_ok(&serde_json::json!({"posts": []}), "us", 20).is_err());
    }
}
