//! The operations of the mix: making one due request (one function per
//! operation), counting its outcome, and the writer's read-back of an
//! acknowledged write.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::checker::{ReadBack, Written, read_back};
use super::config::Op;
use super::failure::Failure;
use super::photo::photo_jpeg;
use super::report::{AckedFollow, AckedLike, AckedPost, LISTED_LOST};
use super::schedule::Job;
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

/// Make the request; returns the operation it became (a like with no post known
/// yet becomes a post, a photo view with no photo known a timeline read) and,
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
    Pool::push(&mut lock(&shared.pool).posts, id);
    job.ryw.then_some(ReadBackDue { written, token })
}

/// `PUT /api/v1/posts/{id}/like` of a known post; acknowledged only as `liked`.
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
        .await?;
    if v["liked"].as_bool() != Some(true) {
        return Err(Failure::BadBody("the like was not acknowledged as liked".into()));
    }
    lock(&shared.writes).likes.push(AckedLike { post_id: post_id.clone(), liker: shared.username(job.user) });
    Ok(job.ryw.then_some(ReadBackDue { written: Written::Like { post_id }, token }))
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
    let result = read_back(&shared.http.client(user), target, &due.token, written).await;
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
