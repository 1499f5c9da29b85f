//! The fan-out's cost per post in `/metrics`: posts by mode, timelines offered,
//! timelines written in this data center's Redis.

mod common;

use common::*;
use reqwest::StatusCode;
use testkit::TestEnv;

/// The value of the sample `line_start` (`name{labels}` or `name`) in `/metrics`.
async fn metric(app: &testkit::TestApp, line_start: &str) -> u64 {
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    let value = text.lines().find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '));
    value.unwrap_or_else(|| panic!("no {line_start} in:\n{text}")).parse().unwrap()
}

/// (push posts, pull posts, timelines offered, timelines written).
async fn fanout(app: &testkit::TestApp) -> (u64, u64, u64, u64) {
    (
        metric(app, r#"millions_fanout_posts_total{mode="push"}"#).await,
        metric(app, r#"millions_fanout_posts_total{mode="pull"}"#).await,
        metric(app, "millions_fanout_timelines_offered_total").await,
        metric(app, "millions_fanout_timeline_writes_total").await,
    )
}

#[tokio::test]
async fn a_post_counts_the_timelines_offered_and_those_written() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let author = signup(&app, "author").await;
    let readers = [signup(&app, "reader_one").await, signup(&app, "reader_two").await];
    let idle = signup(&app, "idle").await;
    for f in readers.iter().chain([&idle]) {
        call(&app, "PUT", "/api/v1/users/author/follow", Some(f), None, StatusCode::OK).await;
    }
    // Two followers read their feeds (their timelines exist); one never does,
    // nor does the author.
    for r in &readers {
        assert!(feed_ids(&app, r, "").await.0.is_empty());
    }
    assert_eq!(fanout(&app).await, (0, 0, 0, 0), "nothing fanned out yet");

    // The fan-out runs inline, before the answer: counted by then.
    let post = post_text(&app, &author, "hello").await;
    assert_eq!(fanout(&app).await, (1, 0, 4, 2), "3 followers and the author offered, 2 written");
    for r in &readers {
        assert_eq!(feed_ids(&app, r, "").await.0, vec![post]);
    }
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(text.contains("# TYPE millions_fanout_timeline_writes_total counter\n"), "{text}");
    assert!(text.contains("write amplification per post"), "{text}");

    // The first post made the author's readers set; the author reads their feed
    // too (its rebuild registers it): the next post is offered to those three
    // only, not to the follower who never reads.
    feed_ids(&app, &author, "").await;
    post_text(&app, &author, "again").await;
    assert_eq!(fanout(&app).await, (2, 0, 7, 5));
    assert_eq!(
        metric(&app, "millions_fanout_full_pushes_total").await,
        1,
        "only the first listed the followers"
    );

    // An unfollow takes reader_two out; a new follower who reads is in: the
    // next post reaches reader_one, the newcomer and the author.
    call(&app, "DELETE", "/api/v1/users/author/follow", Some(&readers[1]), None, StatusCode::OK).await;
    let newcomer = signup(&app, "newcomer").await;
    call(&app, "PUT", "/api/v1/users/author/follow", Some(&newcomer), None, StatusCode::OK).await;
    assert_eq!(feed_ids(&app, &newcomer, "").await.0.len(), 2, "rebuilt from the shards");
    assert!(feed_ids(&app, &readers[1], "").await.0.is_empty(), "rebuilt without the author's posts");
    let third = post_text(&app, &author, "third").await;
    assert_eq!(fanout(&app).await, (3, 0, 10, 8), "3 readers offered (the unfollower not), 3 written");
    assert_eq!(feed_ids(&app, &newcomer, "").await.0[0], third);
    assert_eq!(feed_ids(&app, &readers[0], "").await.0[0], third);
    assert!(feed_ids(&app, &readers[1], "").await.0.is_empty(), "the unfollower's timeline got nothing");
}

#[tokio::test]
async fn a_celebritys_post_is_pulled_and_writes_no_follower_timeline() {
    let env = TestEnv::new().await;
    let app = env.spawn_with(|c| c.feed.celebrity_threshold = 2).await;
    let star = signup(&app, "star").await;
    let fans = [signup(&app, "fan_one").await, signup(&app, "fan_two").await];
    for f in &fans {
        call(&app, "PUT", "/api/v1/users/star/follow", Some(f), None, StatusCode::OK).await;
        assert!(feed_ids(&app, f, "").await.0.is_empty(), "the fan's timeline exists");
    }
    let post = post_text(&app, &star, "from the stage").await;
    assert_eq!(
        fanout(&app).await,
        (0, 1, 1, 0),
        "pulled: only the author offered, whose timeline does not exist"
    );
    for f in &fans {
        assert_eq!(app.state.timelines().page(f.id, None, 10).await.unwrap(), Some(vec![]), "not pushed");
        assert_eq!(feed_ids(&app, f, "").await.0, vec![post], "merged at read time");
    }
    // With the star's own timeline read, a post writes that one only.
    feed_ids(&app, &star, "").await;
    post_text(&app, &star, "encore").await;
    assert_eq!(fanout(&app).await, (0, 2, 2, 1));
}

/// A follow merges the followee's posts into the follower's timeline where it
/// exists: the next read is a warm one (no rebuild from the shards) and lists
/// them, and the followee's later posts are pushed to it. Where the follower has
/// no timeline, none is made: its first read rebuilds, followee included. An
/// unfollow still drops the timeline.
#[tokio::test]
async fn a_follow_merges_the_followees_posts_into_a_timeline_that_exists() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let author = signup(&app, "merged_author").await;
    let older: Vec<i64> = [post_text(&app, &author, "one").await, post_text(&app, &author, "two").await]
        .into_iter()
        .rev()
        .collect();
    let reader = signup(&app, "merged_reader").await;
    let idle = signup(&app, "merged_idle").await;
    assert!(feed_ids(&app, &reader, "").await.0.is_empty(), "the reader's timeline is built, empty");
    let reads = app.state.timeline_reads();
    let (warm, cold) = (reads.warm.get(), reads.cold.get());

    for u in [&reader, &idle] {
        call(&app, "PUT", "/api/v1/users/merged_author/follow", Some(u), None, StatusCode::OK).await;
    }
    assert_eq!(
        app.state.timelines().page(reader.id, None, 10).await.unwrap(),
        Some(older.clone()),
        "merged into the cached timeline"
    );
    assert_eq!(app.state.timelines().page(idle.id, None, 10).await.unwrap(), None, "no timeline made");
    assert_eq!(feed_ids(&app, &reader, "").await.0, older);
    assert_eq!((reads.warm.get(), reads.cold.get()), (warm + 1, cold), "a warm read, no rebuild");
    assert_eq!(feed_ids(&app, &idle, "").await.0, older, "rebuilt with the new followee");
    assert_eq!(reads.cold.get(), cold + 1);

    let newer = post_text(&app, &author, "three").await;
    assert_eq!(feed_ids(&app, &reader, "").await.0, [vec![newer], older.clone()].concat(), "pushed");
    call(&app, "DELETE", "/api/v1/users/merged_author/follow", Some(&reader), None, StatusCode::OK).await;
    assert_eq!(app.state.timelines().page(reader.id, None, 10).await.unwrap(), None, "dropped on unfollow");
    assert!(feed_ids(&app, &reader, "").await.0.is_empty());
}
