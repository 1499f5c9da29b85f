//! A worker process killed with SIGKILL in the middle of a job (its thumbnails
//! stored, not yet recorded): the job runs again on another worker, and exactly
//! one set of thumbnails is recorded and stored.

use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use testkit::{TestEnv, eventually, files_in};

/// A `millions worker` process, killed on drop.
struct WorkerProcess(Child);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_worker(
    env: &TestEnv,
    dir: &std::path::Path,
    name: &str,
    extra: &str,
    lease_secs: u64,
) -> WorkerProcess {
    let config = env
        .worker_config_toml()
        .replace("lease_secs = 30", &format!("lease_secs = {lease_secs}\nid = \"{name}\""))
        + extra;
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_millions"))
        .args(["worker", "--config", &path.to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    WorkerProcess(child)
}

#[tokio::test]
async fn a_worker_killed_mid_job_loses_nothing_and_duplicates_nothing() {
    let env = TestEnv::new().await;
    let app = env.spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let c = reqwest::Client::new();
    let creds = json!({"username": "victim", "password": "password123"});
    assert_eq!(
        c.post(app.url("/api/v1/users")).json(&creds).send().await.unwrap().status(),
        StatusCode::CREATED
    );
    let session: Value =
        c.post(app.url("/api/v1/sessions")).json(&creds).send().await.unwrap().json().await.unwrap();
    let token = session["token"].as_str().unwrap().to_owned();

    // Worker A claims the job, makes and stores the thumbnails, and holds before
    // recording them (the chaos flag file exists).
    let hold = dir.path().join("hold");
    std::fs::write(&hold, b"").unwrap();
    let chaos = format!("[chaos]\nhold_before_finish = {:?}\n", hold.display().to_string());
    let mut a = start_worker(&env, dir.path(), "worker-a", &chaos, 2);
    let img = image::RgbImage::from_fn(1400, 1050, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut jpeg = std::io::Cursor::new(Vec::new());
    img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let form = Form::new().part("photo", Part::bytes(jpeg.into_inner()).file_name("x.jpg"));
    let r = c.post(app.url("/api/v1/posts")).bearer_auth(&token).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    eventually("worker-a to store the thumbnails and hold", async || files_in(env.store.path()).len() == 4)
        .await;
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'running' AND locked_by = 'worker-a'").await,
        1,
        "worker-a holds the job"
    );
    let stored = files_in(env.store.path());

    // kill -9, between storing the thumbnails and recording them.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(a.0.id() as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    a.0.wait().unwrap();
    let post: Value =
        c.get(app.url(&format!("/api/v1/posts/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(post["status"], "processing", "killed before the thumbnails were recorded");

    // Worker B takes over once A's lease lapses (it would hold too while the
    // flag exists: it is gone now).
    std::fs::remove_file(&hold).unwrap();
    let _b = start_worker(&env, dir.path(), "worker-b", "", 30);
    eventually("the post to become ready", async || {
        let post: Value =
            c.get(app.url(&format!("/api/v1/posts/{id}"))).send().await.unwrap().json().await.unwrap();
        post["status"] == "ready"
    })
    .await;
    let post: Value =
        c.get(app.url(&format!("/api/v1/posts/{id}"))).send().await.unwrap().json().await.unwrap();
    let thumbs = post["photo"]["thumbnails"].as_array().unwrap();
    assert_eq!(thumbs.len(), 3, "one set of thumbnails");
    for t in thumbs {
        let name = t["url"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        assert!(stored.contains(&name), "{name}: the thumbnails worker-a stored, made again identically");
    }
    assert_eq!(files_in(env.store.path()), stored, "the original and three thumbnails, nothing twice");
    eventually("the job to complete and leave the queue", async || {
        env.count("SELECT count(*) FROM jobs").await == 0
    })
    .await;
}
