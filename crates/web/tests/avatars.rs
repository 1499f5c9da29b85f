//! Profile photos: uploaded through the photo pipeline (the API and the settings
//! form), thumbnails made by a real worker, a replaced avatar's objects removed
//! once nothing names them; bad uploads store nothing.

mod common;

use common::*;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use testkit::{TestApp, TestEnv};

fn photo_part(bytes: Vec<u8>) -> Part {
    Part::bytes(bytes).file_name("me.jpg").mime_str("image/jpeg").unwrap()
}

async fn upload(app: &TestApp, user: Option<&User>, form: Form) -> reqwest::Response {
    let mut request = reqwest::Client::new().put(app.url("/api/v1/users/me/avatar")).multipart(form);
    if let Some(u) = user {
        request = request.bearer_auth(&u.token);
    }
    request.send().await.unwrap()
}

async fn profile(app: &TestApp, username: &str) -> Value {
    call(app, "GET", &format!("/api/v1/users/{username}"), None, None, StatusCode::OK).await
}

async fn thumbnails(app: &TestApp, username: &str) -> usize {
    profile(app, username).await["avatar"]["thumbnails"].as_array().map_or(0, Vec::len)
}

/// The object names (file names) an avatar's or a photo's JSON names.
fn objects(photo: &Value) -> Vec<String> {
    std::iter::once(&photo["original"])
        .chain(photo["thumbnails"].as_array().unwrap())
        .map(|i| i["url"].as_str().unwrap().rsplit('/').next().unwrap().to_owned())
        .collect()
}

fn stored_names(app: &TestApp) -> Vec<String> {
    stored_files(app).iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn an_avatar_is_processed_shown_and_replaced_without_leaving_objects_behind() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let ann = signup(&app, "ann").await;
    assert!(profile(&app, "ann").await.get("avatar").is_none(), "none yet");

    let first = jpeg(400, 300);
    let r = upload(&app, Some(&ann), Form::new().part("photo", photo_part(first.clone()))).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["username"], "ann");
    assert_eq!(body["avatar"]["thumbnails"], serde_json::json!([]), "thumbnails to come");
    assert_eq!(body["avatar"]["original"]["width"], 400);
    assert_eq!(env.count("SELECT count(*) FROM jobs WHERE kind = 'avatar'").await, 1);

    let worker = env.spawn_worker().await;
    eventually("the worker made the avatar's thumbnails", async || thumbnails(&app, "ann").await > 0).await;
    let first_objects = objects(&profile(&app, "ann").await["avatar"]);
    // The profile page shows it.
    let html = reqwest::get(app.url("/u/ann")).await.unwrap().text().await.unwrap();
    assert!(html.contains(r#"<img class="avatar""#), "{html}");

    // A post of the very same bytes shares every object (content-addressed, and
    // its thumbnails are made the same way): all kept when the avatar is replaced.
    let post = post_photo(&app, &ann, first, "").await;
    assert_eq!(objects(&post["photo"])[0], first_objects[0], "content-addressed: one object");
    let idle = async || env.count("SELECT count(*) FROM jobs").await == 0;
    eventually("the post's photo is processed", idle).await;

    let replace = async |bytes: Vec<u8>| {
        let r = upload(&app, Some(&ann), Form::new().part("photo", photo_part(bytes))).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        eventually("the new avatar is processed", async || idle().await && thumbnails(&app, "ann").await > 0)
            .await;
        objects(&profile(&app, "ann").await["avatar"])
    };
    let second_objects = replace(jpeg(300, 300)).await;
    let names = stored_names(&app);
    for o in &first_objects {
        assert!(names.contains(o), "the post still names {o}: kept");
    }
    // Replaced again: the second avatar's objects, named by nothing else, go.
    let third_objects = replace(jpeg(200, 360)).await;
    let names = stored_names(&app);
    for o in &second_objects {
        assert!(!names.contains(o), "the replaced avatar's {o} is removed");
    }
    for o in first_objects.iter().chain(&third_objects) {
        assert!(names.contains(o), "{o} is still named, and stored");
    }
    worker.stop().await;
    assert_eq!(env.count("SELECT count(*) FROM jobs WHERE state = 'dead'").await, 0);
}

#[tokio::test]
async fn bad_avatar_uploads_are_refused_and_store_nothing() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let ann = signup(&app, "ann").await;
    let cases: Vec<(&str, Option<&User>, Form, StatusCode, &str)> = vec![
        (
            "no photo part",
            Some(&ann),
            Form::new().text("other", "x"),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "a caption too",
            Some(&ann),
            Form::new().part("photo", photo_part(jpeg(50, 50))).text("caption", "hi"),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "not an image",
            Some(&ann),
            Form::new().part("photo", photo_part(b"this is text, not a photo".to_vec())),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "signed out",
            None,
            Form::new().part("photo", photo_part(jpeg(50, 50))),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
    ];
    for (what, user, form, status, code) in cases {
        let r = upload(&app, user, form).await;
        assert_eq!(r.status(), status, "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), code, "{what}: {body}");
    }
    // A JSON body is not an upload.
    let r = send(&app, "PUT", "/api/v1/users/me/avatar", Some(&ann), Some(serde_json::json!({"photo": "x"})))
        .await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(stored_files(&app).is_empty(), "nothing stored: {:?}", stored_files(&app));
    assert!(profile(&app, "ann").await.get("avatar").is_none());
    assert_eq!(env.count("SELECT count(*) FROM jobs WHERE kind = 'avatar'").await, 0);
}

#[tokio::test]
async fn the_settings_form_uploads_an_avatar_with_its_token_only() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    signup(&app, "ann").await;
    let browser = browser(&app, "ann").await;
    let html = page(&app, &browser, "/settings/profile").await;
    assert!(html.contains(r#"action="/settings/avatar" enctype="multipart/form-data""#), "{html}");
    let csrf = csrf_of(&html);
    // Without the token: refused, nothing stored.
    let form = Form::new().part("photo", photo_part(jpeg(80, 80)));
    let r = browser.post(app.url("/settings/avatar")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(stored_files(&app).is_empty());
    // With it: stored, and back to the profile.
    let form = Form::new().text("csrf", csrf).part("photo", photo_part(jpeg(80, 80)));
    let r = browser.post(app.url("/settings/avatar")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/u/ann");
    assert!(profile(&app, "ann").await["avatar"]["original"]["width"] == 80);
}
