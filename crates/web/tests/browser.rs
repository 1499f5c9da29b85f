//! The HTML pages in a real browser: headless Chromium, driven over WebDriver
//! (chromedriver + fantoccini), against a web server on real PostgreSQL and Redis.
//!
//! Where `html.rs` replays forms by hand, this test types into the inputs and clicks
//! the buttons: it proves the pages, forms, cookies and redirects work as a browser
//! sees them (CSP, SameSite cookies and all). Needs the Debian packages `chromium`
//! and `chromium-driver` (`scripts/setup.sh test` installs them).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tempfile::TempDir;
use testkit::TestApp;

mod common;
use common::jpeg;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const PASSWORD: &str = "correct horse battery";
/// How long any one page condition may take to come true.
const PATIENCE: Duration = Duration::from_secs(10);

/// A chromedriver process (and every browser it starts: they share its process
/// group), killed on drop.
struct ChromeDriver {
    child: Child,
    /// `http://127.0.0.1:port`.
    url: String,
    /// Holds its log and the browsers' profiles (removed after they are killed).
    dir: TempDir,
    /// Browsers started so far.
    browsers: AtomicUsize,
}

impl ChromeDriver {
    /// Starts chromedriver on a free port and waits until it says it is ready.
    async fn start() -> ChromeDriver {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "{CHROMEDRIVER} or {CHROMIUM} is missing: install the Debian packages chromium and \
             chromium-driver (scripts/setup.sh test does)"
        );
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
            listener.local_addr().expect("its address").port()
        };
        let dir = tempfile::Builder::new().prefix("millions-chromedriver.").tempdir().expect("a temp dir");
        let log = dir.path().join("chromedriver.log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that drop takes the browsers down with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}"));
        let mut driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            browsers: AtomicUsize::new(0),
        };
        driver.wait_ready().await;
        driver
    }

    /// Polls `/status` until it reports `ready`, the process dies, or time runs out.
    async fn wait_ready(&mut self) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().expect("a client");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromedriver exited ({status}) before it was ready; log:\n{}", self.log());
            }
            let last = match http.get(format!("{}/status", self.url)).send().await {
                Ok(r) => match r.json::<Value>().await {
                    Ok(v) if v["value"]["ready"] == json!(true) => return,
                    Ok(v) => v.to_string(),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready after {PATIENCE:?} ({last}); log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A new browser: a new WebDriver session with a fresh profile (its own cookie jar).
    async fn browser(&self, app: &TestApp) -> Browser {
        let n = self.browsers.fetch_add(1, Ordering::Relaxed);
        let profile = self.dir.path().join(format!("profile-{n}"));
        std::fs::create_dir(&profile).expect("a profile directory");
        let args = [
            "--headless=new",
            "--no-sandbox", // we may run as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1000,1000",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "timeouts": { "pageLoad": 15_000, "script": 5_000 },
        });
        let Value::Object(caps) = caps else { unreachable!() };
        // chromedriver speaks plain HTTP on loopback: no TLS connector needed.
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| {
                panic!("starting a Chromium session: {e}; chromedriver log:\n{}", self.log())
            });
        Browser { client, base: app.base.clone() }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The group id is chromedriver's pid (process_group(0)); Chromium and its
        // helpers inherit it, so nothing outlives the test even after a panic.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// One browser session, with helpers that fail with the page in the message.
struct Browser {
    client: Client,
    base: String,
}

impl Browser {
    /// Where the browser is and what it shows, for failure messages.
    async fn describe(&self) -> String {
        let url = self.client.current_url().await.map(|u| u.to_string()).unwrap_or_else(|e| e.to_string());
        let text = match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_else(|e| e.to_string()),
            Err(e) => e.to_string(),
        };
        format!("at {url}, the page reads:\n{text}")
    }

    async fn open(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("opening {path}: {e}"));
    }

    /// The path (and query) of the current page.
    async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("the current URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits (polling, up to [`PATIENCE`]) until an element matching `css` is on the page.
    async fn wait_for(&self, css: &str) -> Element {
        self.wait_for_within(css, PATIENCE).await
    }

    /// Waits (polling, up to `patience`) until an element matching `css` is on the page.
    async fn wait_for_within(&self, css: &str, patience: Duration) -> Element {
        match self
            .client
            .wait()
            .at_most(patience)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!("waiting for `{css}`: {e}; {}", self.describe().await),
        }
    }

    /// Waits until the browser is at `path` (on this site).
    async fn wait_for_path(&self, path: &str) {
        let here = self.client.current_url().await.expect("the current URL");
        let url = here.join(path).unwrap_or_else(|e| panic!("{here} + {path}: {e}"));
        if let Err(e) =
            self.client.wait().at_most(PATIENCE).every(Duration::from_millis(50)).for_url(&url).await
        {
            panic!("waiting to be at {path}: {e}; {}", self.describe().await);
        }
    }

    async fn text(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.unwrap_or_else(|e| panic!("text of `{css}`: {e}"))
    }

    async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap_or_else(|e| panic!("finding `{css}`: {e}")).len()
    }

    /// Types `text` into the field matching `css`, key by key.
    async fn type_into(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field.clear().await.unwrap_or_else(|e| panic!("clearing `{css}`: {e}"));
        field.send_keys(text).await.unwrap_or_else(|e| panic!("typing into `{css}`: {e}"));
    }

    async fn click(&self, css: &str) {
        let button = self.wait_for(css).await;
        if let Err(e) = button.click().await {
            panic!("clicking `{css}`: {e}; {}", self.describe().await);
        }
    }

    /// Signs up through the form; lands on the home page, logged in.
    async fn sign_up(&self, username: &str) {
        self.open("/signup").await;
        self.type_into("form[action='/signup'] input[name='username']", username).await;
        self.type_into("form[action='/signup'] input[name='password']", PASSWORD).await;
        self.click("form[action='/signup'] button[type='submit']").await;
        self.wait_for_path("/").await;
        let greeting = self.text("main h1").await;
        assert_eq!(greeting, format!("Hi, {username}"), "{}", self.describe().await);
        let me = self.text(&format!("header a[href='/u/{username}']")).await;
        assert_eq!(me, format!("@{username}"));
    }

    /// Writes a post in the new-post form of the current page; returns its path (`/p/{id}`).
    async fn publish(&self, caption: &str) -> String {
        self.type_into("form[action='/upload'] textarea[name='caption']", caption).await;
        self.click("form[action='/upload'] button[type='submit']").await;
        // Only a post page has a like form.
        self.wait_for("article.post.single form[action$='/like']").await;
        let path = self.path().await;
        let id = path.strip_prefix("/p/").unwrap_or_else(|| panic!("after posting, at {path}"));
        assert!(id.parse::<i64>().is_ok_and(|id| id > 0), "after posting, at {path}");
        path
    }

    /// The captions of the posts listed on the current page, top to bottom.
    async fn captions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.client.find_all(Locator::Css("article.post .caption")).await.expect("finding captions")
        {
            out.push(p.text().await.expect("a caption's text"));
        }
        out
    }

    async fn close(self) {
        self.client.close().await.expect("closing the browser session");
    }
}

/// An element's DOM property as a string (`None` if unset).
async fn prop(element: &Element, name: &str) -> Option<String> {
    element.prop(name).await.unwrap_or_else(|e| panic!("reading the property {name}: {e}"))
}

async fn posts_count(app: &TestApp, username: &str) -> i64 {
    let r = reqwest::get(app.url(&format!("/api/v1/users/{username}"))).await.expect("GET a user");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    r.json::<Value>().await.expect("a user as JSON")["posts_count"].as_i64().expect("posts_count")
}

/// Where the screenshot of a logged-in home page goes (outside the repository).
fn screenshot_path() -> PathBuf {
    std::env::temp_dir().join("millions-browser-home.png")
}

#[tokio::test]
async fn chromium_signs_up_posts_likes_follows_and_logs_out() {
    let started = Instant::now();
    let app = testkit::spawn_app().await;
    let driver = ChromeDriver::start().await;

    // Alice signs up through the form and lands on her home page, greeted by name.
    let alice = driver.browser(&app).await;
    alice.sign_up("alice").await;
    assert_eq!(alice.client.title().await.unwrap(), "Home · Millions");
    assert!(alice.text("main").await.contains("Nothing here yet"), "an empty feed says so");

    // She posts from the home page's form; markup in a caption is shown as text.
    let caption = "Hello from a real browser: <b>not bold</b> & more";
    let post = alice.publish(caption).await;
    assert_eq!(alice.text("article.post.single .caption").await, caption);
    assert_eq!(alice.count("article.post .caption b").await, 0, "the caption's <b> is not an element");
    let inner = alice.wait_for(".caption").await.html(true).await.unwrap();
    assert!(inner.contains("&lt;b&gt;not bold&lt;/b&gt; &amp; more"), "{inner}");
    assert_eq!(alice.text("article.post.single .likes").await, "0 likes");
    assert_eq!(alice.text("button[aria-pressed='false']").await, "♡ Like");
    assert_eq!(alice.client.title().await.unwrap(), "Post by @alice · Millions");

    // Like: the count goes up and the button turns into Unlike.
    alice.click("form[action$='/like'] button[type='submit']").await;
    alice.wait_for_path(&post).await;
    assert_eq!(alice.text("button[aria-pressed='true']").await, "♥ Unlike");
    assert_eq!(alice.text("article.post.single .likes").await, "1 like");

    // A second post from the new-post page in the top bar; both are in her feed.
    alice.click("header a[href='/upload']").await;
    alice.wait_for_path("/upload").await;
    let second = alice.publish("Second post, typed key by key.\nWith a second line.").await;
    assert_ne!(second, post);
    alice.click("header a.brand").await;
    alice.wait_for_path("/").await;
    alice.wait_for(&format!("article.post a[href='{post}']")).await;
    assert_eq!(
        alice.captions().await,
        ["Second post, typed key by key.\nWith a second line.", caption],
        "newest first"
    );
    assert_eq!(alice.text(&format!("article.post:has(a[href='{post}']) .likes")).await, "1 like");
    let png = alice.client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    std::fs::write(screenshot_path(), &png).expect("writing the screenshot");
    eprintln!("screenshot of the home page: {}", screenshot_path().display());

    // Without the CSRF cookie (as a form posted from another site would be), the
    // post form is refused with a 403 page and nothing is created.
    alice.client.get_named_cookie("csrf").await.expect("the page set a csrf cookie");
    alice.client.delete_cookie("csrf").await.expect("deleting the csrf cookie");
    alice.type_into("form[action='/upload'] textarea[name='caption']", "forged: no csrf cookie").await;
    alice.click("form[action='/upload'] button[type='submit']").await;
    let error = alice.text(".error-page").await;
    assert!(error.starts_with("403 · Forbidden"), "{error}");
    assert!(error.contains("reload the page"), "{error}");
    assert_eq!(alice.client.title().await.unwrap(), "Forbidden · Millions");
    assert_eq!(posts_count(&app, "alice").await, 2, "the forged post was not created");
    // Back home, the page hands out a new cookie and the feed is unchanged.
    alice.click(".error-page a[href='/']").await;
    alice.wait_for_path("/").await;
    alice.wait_for("form[action='/logout']").await;
    assert_eq!(alice.count("article.post").await, 2);
    assert!(!alice.text("main").await.contains("forged"));

    // Log out with the top-bar button: the welcome page, with ways back in.
    alice.click("header form[action='/logout'] button[type='submit']").await;
    alice.wait_for("section.hero").await;
    assert_eq!(alice.path().await, "/");
    assert_eq!(alice.client.title().await.unwrap(), "Welcome · Millions");
    assert!(
        alice.count("header a[href='/signup']").await == 1
            && alice.count("header a[href='/login']").await == 1
    );
    assert_eq!(alice.count("form[action='/logout']").await, 0);
    alice.close().await;

    // Bob, in another browser (another cookie jar), follows Alice from her profile.
    let bob = driver.browser(&app).await;
    assert!(bob.client.get_all_cookies().await.unwrap().is_empty(), "a fresh cookie jar");
    bob.sign_up("bob").await;
    assert!(bob.captions().await.is_empty(), "not following anyone yet");
    bob.open("/u/alice").await;
    assert_eq!(bob.text(".profile-head h1").await, "alice");
    assert_eq!(bob.text("ul.counts li:nth-child(1)").await.replace('\n', " "), "2 posts");
    assert_eq!(bob.text("ul.counts li:nth-child(2)").await.replace('\n', " "), "0 followers");
    bob.click("form[action='/u/alice/follow'] button[type='submit']").await;
    bob.wait_for("form[action='/u/alice/follow'] input[name='action'][value='unfollow']").await;
    assert_eq!(bob.path().await, "/u/alice");
    assert_eq!(bob.text("ul.counts li:nth-child(2)").await.replace('\n', " "), "1 follower");
    assert_eq!(bob.text("form[action='/u/alice/follow'] button").await, "Unfollow");

    // Alice's posts are now in Bob's feed.
    bob.click("header a[href='/']").await;
    bob.wait_for_path("/").await;
    bob.wait_for(&format!("article.post a[href='{post}']")).await;
    assert_eq!(bob.captions().await.len(), 2);
    assert!(bob.captions().await.contains(&caption.to_owned()));

    // Bob posts a photo: he chooses a real JPEG file in the new-post page's file
    // input, as a person would, and submits.
    let photo_file = driver.dir.path().join("holiday.jpg");
    std::fs::write(&photo_file, jpeg(800, 600)).expect("writing the photo file");
    bob.click("header a[href='/upload']").await;
    bob.wait_for_path("/upload").await;
    bob.type_into("form[action='/upload'] textarea[name='caption']", "Holiday photo").await;
    let file_input = bob.wait_for("form[action='/upload'] input[type='file'][name='photo']").await;
    file_input
        .send_keys(&photo_file.display().to_string())
        .await
        .unwrap_or_else(|e| panic!("choosing the photo file: {e}"));
    bob.click("form[action='/upload'] button[type='submit']").await;
    // No worker runs yet: the post page says the photo is being processed.
    bob.wait_for("article.post.single").await;
    let photo_post = bob.path().await;
    assert!(photo_post.starts_with("/p/"), "after uploading, at {photo_post}");
    assert!(bob.text("article.post.single .notice").await.contains("Processing your photo…"));
    assert_eq!(bob.text("article.post.single .caption").await, "Holiday photo");
    assert_eq!(bob.count("article.post.single img").await, 0);
    assert_eq!(posts_count(&app, "bob").await, 1);

    // A worker makes the thumbnails; the page refreshes itself and shows the photo.
    let worker = app.env.spawn_worker().await;
    let img = bob.wait_for_within("article.post.single figure.photo img", Duration::from_secs(60)).await;
    assert_eq!(bob.path().await, photo_post, "the same page, refreshed");
    assert_eq!(bob.count("article.post.single .notice").await, 0, "no longer processing");
    let src = img.attr("src").await.unwrap().expect("the img has a src");
    assert!(src.starts_with("/media/") && src.ends_with(".jpg"), "{src}");
    assert_eq!(img.attr("width").await.unwrap().as_deref(), Some("640"), "the 640 px thumbnail is shown");
    // The browser fetched and decoded the image it chose from the srcset.
    testkit::eventually("the browser has loaded the photo", || async {
        let width = bob
            .client
            .execute("return arguments[0].complete && arguments[0].naturalWidth", vec![json!(img)])
            .await
            .unwrap_or_else(|e| panic!("reading the image's naturalWidth: {e}"));
        width.as_u64().is_some_and(|w| w > 0)
    })
    .await;
    let current = prop(&img, "currentSrc").await.expect("the img has a current source");
    for url in [app.url(&src), current] {
        let r = reqwest::get(&url).await.expect("GET the thumbnail");
        assert_eq!(r.status(), reqwest::StatusCode::OK, "{url}");
        assert_eq!(r.headers()["content-type"], "image/jpeg", "{url}");
        assert!(r.bytes().await.unwrap().starts_with(&[0xFF, 0xD8]), "{url} is a JPEG");
    }
    worker.stop().await;
    bob.close().await;

    drop(driver);
    eprintln!("browser test took {:?}", started.elapsed());
}

/// A screenshot of what `browser` shows, checked: a PNG of the window's size that
/// is not blank (a page was painted), kept outside the repository as `name`.
async fn screenshot(browser: &Browser, name: &str) {
    let png = browser.client.screenshot().await.expect("a screenshot");
    let image = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("{name}: the screenshot is not a PNG: {e}"))
        .to_rgb8();
    assert!(image.width() > 300 && image.height() > 300, "{name}: {}x{}", image.width(), image.height());
    let first = *image.get_pixel(0, 0);
    let differing = image.pixels().filter(|p| **p != first).count();
    assert!(differing > 1000, "{name}: the screenshot is blank ({differing} pixels differ)");
    let path = std::env::temp_dir().join(format!("millions-walk-{name}.png"));
    std::fs::write(&path, &png).expect("writing the screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// Types `prefix` into the top bar's search box, submits it (Enter), and opens
/// `username`'s profile from the results.
async fn find_and_open_profile(browser: &Browser, prefix: &str, username: &str) {
    browser.type_into("header form.topsearch input[name='q']", &format!("{prefix}\u{E007}")).await;
    let result = format!("article.person a.who[href='/u/{username}']");
    browser.wait_for(&result).await;
    assert!(browser.path().await.starts_with("/search?q="), "{}", browser.describe().await);
    browser.click(&result).await;
    browser.wait_for_path(&format!("/u/{username}")).await;
}

/// Whether the element matching `css` is on the page and shown.
async fn shown(browser: &Browser, css: &str) -> bool {
    browser.wait_for(css).await.is_displayed().await.unwrap_or_else(|e| panic!("is `{css}` shown: {e}"))
}

/// Whether the page fits the window's width (nothing to scroll sideways).
async fn fits_width(browser: &Browser) -> bool {
    let fits = browser
        .client
        .execute("return document.documentElement.scrollWidth <= window.innerWidth", vec![])
        .await
        .expect("measuring the page");
    fits == json!(true)
}

/// The walk of issue 17, as people would take it, on a phone-sized window for
/// one of them: find someone, follow, comment and like from the feed without a
/// page load, see the notifications, delete a post. Screenshots at each step.
#[tokio::test]
async fn chromium_walks_search_follow_comment_like_notify_and_delete() {
    let app = testkit::spawn_app().await;
    let worker = app.env.spawn_worker().await;
    let driver = ChromeDriver::start().await;

    // Bob signs up and posts.
    let bob = driver.browser(&app).await;
    bob.sign_up("bob").await;
    let post = bob.publish("Bob's first post").await;
    let post_id = post.strip_prefix("/p/").unwrap().to_owned();

    // Carol, on a phone-sized window, finds him by searching.
    let carol = driver.browser(&app).await;
    carol.client.set_window_size(390, 844).await.expect("a phone-sized window");
    carol.sign_up("carol").await;
    assert!(fits_width(&carol).await, "the home page fits a phone's width");
    find_and_open_profile(&carol, "bo", "bob").await;
    screenshot(&carol, "1-found").await;
    carol.click("form[action='/u/bob/follow'] button[type='submit']").await;
    carol.wait_for("form[action='/u/bob/follow'] input[name='action'][value='unfollow']").await;

    // From her feed: a comment and a like on Bob's post, each without a page load.
    carol.click("header a[href='/']").await;
    carol.wait_for_path("/").await;
    let card = format!("article.post[data-post='{post_id}']");
    carol.wait_for(&card).await;
    assert!(fits_width(&carol).await, "the feed fits a phone's width");
    // A marker on the page's window: a page load would drop it.
    carol.client.execute("window.stayed = true", vec![]).await.unwrap();
    carol.type_into(&format!("{card} form.comment-form input[name='body']"), "Nice one, Bob!").await;
    carol.click(&format!("{card} form.comment-form button[type='submit']")).await;
    carol.wait_for(&format!("{card} .comment-list li.comment")).await;
    testkit::eventually("the card counts the comment", || async {
        carol.text(&format!("{card} .comment-count")).await == "1 comment"
    })
    .await;
    carol.click(&format!("{card} form.like-form button[type='submit']")).await;
    carol.wait_for(&format!("{card} form.like-form button[aria-pressed='true']")).await;
    assert_eq!(carol.text(&format!("{card} .likes")).await, "1 like");
    let stayed = carol.client.execute("return window.stayed === true", vec![]).await.unwrap();
    assert_eq!(stayed, json!(true), "the comment and the like were sent in place");
    assert!(shown(&carol, &format!("{card} .comment-list li.comment")).await);
    screenshot(&carol, "2-commented-and-liked").await;

    // Bob is told: follow, comment and like, through the queue.
    testkit::eventually("bob's top bar counts three notifications", || async {
        bob.open("/").await;
        match bob.client.find(Locator::Css("header .badge")).await {
            Ok(badge) => badge.text().await.is_ok_and(|t| t == "3"),
            Err(_) => false,
        }
    })
    .await;
    screenshot(&bob, "3-badge").await;
    bob.click("header a[href='/notifications']").await;
    bob.wait_for_path("/notifications").await;
    let list = bob.text("main").await;
    for what in ["started following you", "liked your post", "commented on your post"] {
        assert!(list.contains(what), "`{what}` in: {list}");
    }
    screenshot(&bob, "4-notifications").await;
    bob.open("/").await;
    assert_eq!(bob.count("header .badge").await, 0, "seen: the badge is gone");

    // Bob deletes his post from its page; it leaves Carol's feed.
    bob.open(&post).await;
    bob.click("form.delete-post button[type='submit']").await;
    bob.wait_for_path("/u/bob").await;
    assert_eq!(bob.text("ul.counts li:nth-child(1)").await.replace('\n', " "), "0 posts");
    screenshot(&bob, "5-deleted").await;
    carol.open("/").await;
    carol.wait_for("form[action='/logout']").await;
    assert_eq!(carol.count(&card).await, 0, "gone from the follower's feed");

    worker.stop().await;
    bob.close().await;
    carol.close().await;
}
