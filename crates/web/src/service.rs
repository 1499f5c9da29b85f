//! What the app does, shared by the JSON API and the HTML pages: validation, the
//! data layer, cache reads and invalidations, fan-out and feeds.
//!
//! Every shared-cache loader reads through `fill` ([`data::fill_reads`]): on
//! the primaries, because a fill must never store a value older than the
//! invalidation that emptied the entry, and a lagging replica could serve
//! exactly that. While a shard's primary is being replaced, its reads go to a
//! replica instead of failing, and what they found is served but not cached.
//! A timeline rebuild reads the same way (it fills a timeline shared by every
//! later read). Reads that fill nothing shared (a user's posts, likes) may use
//! replicas, under the session's read-your-writes floor.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use data::{Change, DataError, PostId, PostRecord, UserRecord};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::Lane;
use crate::client::Client;
use crate::edges::MediaUrls;
use crate::error::{ApiError, Limit};
use crate::hotkeys::Kind;
use crate::state::AppState;

/// Longest caption, in characters (Instagram's limit).
pub const MAX_CAPTION: usize = 2200;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME: usize = 50;
/// Password length bounds, in characters.
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 8..=128;
/// Username length bounds.
pub const USERNAME_LEN: std::ops::RangeInclusive<usize> = 3..=30;
/// Page size bounds and default.
pub const LIMIT_RANGE: std::ops::RangeInclusive<usize> = 1..=100;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: usize = 20;
/// How many of an author's newest post ids are cached ([`author_recent`]): a
/// celebrity's are merged into followers' feeds at read time from them, and an
/// author's pages are served from them as far as they reach.
const AUTHOR_RECENT: i64 = 200;

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    /// Id, as a string (64-bit ids do not fit JavaScript numbers).
    pub id: String,
    /// Unique, lowercase name.
    pub username: String,
    /// Shown name.
    pub display_name: String,
    /// What the user says about themselves (empty when nothing).
    pub bio: String,
    /// Followers.
    pub followers_count: i64,
    /// Followees.
    pub following_count: i64,
    /// Posts.
    pub posts_count: i64,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Whether the viewer follows this user (absent when not logged in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub followed_by_me: Option<bool>,
    /// The profile's photo (absent when there is none, and in lists), its URLs
    /// chosen for the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar: Option<PhotoView>,
}

/// A post's author, as embedded in a post.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorView {
    /// Author's id.
    pub id: String,
    /// Author's name.
    pub username: String,
    /// Author's shown name.
    pub display_name: String,
}

/// A post as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PostView {
    /// Id, as a string.
    pub id: String,
    /// Who wrote it.
    pub author: AuthorView,
    /// Caption text.
    pub caption: String,
    /// Likes.
    pub like_count: i64,
    /// Comments (counted on the post's shard as they are written: see ADR 0024).
    pub comment_count: i64,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// `processing` (a photo being processed), `ready` or `failed`; text posts are
    /// `ready` at once.
    pub status: String,
    /// The photo, on photo posts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub photo: Option<PhotoView>,
    /// Whether the viewer likes it (only on single-post reads by a logged-in viewer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liked_by_me: Option<bool>,
}

/// An image with its immutable, versioned URL.
#[derive(Debug, Clone, Serialize)]
pub struct ImageView {
    /// Content-addressed URL, cacheable forever: `/media/{key}` at a healthy CDN
    /// edge, or at the origin while none is ([`MediaUrls`]).
    pub url: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A post's photo.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoView {
    /// The normalized original (orientation applied, metadata stripped).
    pub original: ImageView,
    /// Thumbnails, smallest first (160, 640, 1280 px on the long side, never
    /// upscaled); empty while processing.
    pub thumbnails: Vec<ImageView>,
}

/// One page of posts.
#[derive(Debug, Clone)]
pub struct PostPage {
    /// Newest first.
    pub posts: Vec<ShownPost>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
    /// Where the posts' photo URLs point, chosen for this request (not
    /// serialized: the photos' URLs are).
    pub media: MediaUrls,
}

impl Serialize for PostPage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut page = serializer.serialize_struct("PostPage", 2)?;
        page.serialize_field("posts", &PostsJson(&self.posts, &self.media))?;
        page.serialize_field("next_cursor", &self.next_cursor)?;
        page.end()
    }
}

/// A page's posts as JSON, with their photos' URLs.
struct PostsJson<'a>(&'a [ShownPost], &'a MediaUrls);

impl Serialize for PostsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|post| PostJson(post, self.1)))
    }
}

/// One post of a page as JSON: its kept JSON as it is (no photo), or its kept
/// fields and then its photo with URLs chosen now.
struct PostJson<'a>(&'a ShownPost, &'a MediaUrls);

impl Serialize for PostJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let PostJson(post, media) = *self;
        match (&post.rendered().json, &post.record().photo) {
            (RenderedJson::Fields(fields), Some(photo)) => {
                let mut map = serializer.serialize_map(Some(fields.len() + 1))?;
                for (name, value) in fields {
                    map.serialize_entry(name, value)?;
                }
                map.serialize_entry("photo", &PhotoJson(photo, media))?;
                map.end()
            }
            (RenderedJson::Whole(json), _) => json.serialize(serializer),
            (RenderedJson::Fields(_), None) => unreachable!("fields are kept only for photo posts"),
        }
    }
}

/// A photo as JSON ([`PhotoView`]'s shape), its URLs written as they are chosen.
struct PhotoJson<'a>(&'a data::Photo, &'a MediaUrls);

impl Serialize for PhotoJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let PhotoJson(photo, media) = *self;
        let mut json = serializer.serialize_struct("PhotoView", 2)?;
        json.serialize_field("original", &ImageJson(&photo.original, media))?;
        json.serialize_field("thumbnails", &ImagesJson(&photo.thumbnails, media))?;
        json.end()
    }
}

struct ImagesJson<'a>(&'a [data::StoredImage], &'a MediaUrls);

impl Serialize for ImagesJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|image| ImageJson(image, self.1)))
    }
}

/// An image as JSON ([`ImageView`]'s shape), its URL formatted straight into
/// the output.
struct ImageJson<'a>(&'a data::StoredImage, &'a MediaUrls);

impl Serialize for ImageJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Url<'a>(crate::edges::MediaUrl<'a>);
        impl Serialize for Url<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&self.0)
            }
        }
        let ImageJson(image, media) = *self;
        let mut json = serializer.serialize_struct("ImageView", 3)?;
        json.serialize_field("url", &Url(media.display(&image.key)))?;
        json.serialize_field("width", &image.width)?;
        json.serialize_field("height", &image.height)?;
        json.end()
    }
}

/// A post's view with its JSON, made once per version of the post (see
/// [`CachedPost`]), without its photo: which CDN edge (or the origin) a photo's
/// URL names depends on the edges' health and the request's scheme, so photo
/// URLs are made per request ([`PostJson`], [`ShownPost::photo`]) and never kept.
///
/// Profiling the home feed showed building each post's view (string copies,
/// its time formatted) and serializing it on every read as a tenth of the
/// request's CPU; a page now copies each post's JSON as it is.
#[derive(Debug)]
struct Rendered {
    /// What the HTML pages read (`photo` is always `None`).
    view: PostView,
    /// `view` as JSON, what the API writes.
    json: RenderedJson,
}

/// A post's kept JSON.
#[derive(Debug)]
enum RenderedJson {
    /// The whole post (it has no photo).
    Whole(Box<serde_json::value::RawValue>),
    /// Each field but the photo, in the view's order (the photo comes last).
    Fields(Box<[(&'static str, Box<serde_json::value::RawValue>)]>),
}

impl Rendered {
    /// `view` (without its photo) rendered; `has_photo`: the post has one, to be
    /// added to its JSON per request.
    fn new(view: PostView, has_photo: bool) -> Rendered {
        debug_assert!(view.photo.is_none() && view.liked_by_me.is_none());
        fn raw<T: Serialize + ?Sized>(value: &T) -> Box<serde_json::value::RawValue> {
            serde_json::value::to_raw_value(value).expect("a post view serializes")
        }
        let json = if has_photo {
            RenderedJson::Fields(Box::new([
                ("id", raw(&view.id)),
                ("author", raw(&view.author)),
                ("caption", raw(&view.caption)),
                ("like_count", raw(&view.like_count)),
                ("comment_count", raw(&view.comment_count)),
                ("created_at", raw(&view.created_at)),
                ("status", raw(&view.status)),
            ]))
        } else {
            RenderedJson::Whole(raw(&view))
        };
        Rendered { view, json }
    }
}

/// A post as pages of posts show it (no viewer-specific field): usually the
/// rendering kept in its cache entry, read without a lock or a reference count
/// of its own (requests of one feed read the same entries from every thread).
#[derive(Debug, Clone)]
pub struct ShownPost(Shown);

#[derive(Debug, Clone)]
enum Shown {
    /// The entry's own rendering.
    Kept(Arc<CachedPost>),
    /// Made for this read: the entry was rendered before its author changed
    /// their name or shown name (until the entry is refreshed, at most the L1
    /// lifetime).
    Made(Arc<Rendered>, Arc<CachedPost>),
}

impl ShownPost {
    fn rendered(&self) -> &Rendered {
        match &self.0 {
            Shown::Kept(post) => post.shown.get().expect("kept only once rendered"),
            Shown::Made(rendered, _) => rendered,
        }
    }

    fn record(&self) -> &PostRecord {
        match &self.0 {
            Shown::Kept(post) | Shown::Made(_, post) => &post.record,
        }
    }

    /// The post's photo, its URLs chosen by `media` (the view this derefs to
    /// has none: URLs are never kept).
    pub fn photo(&self, media: &MediaUrls) -> Option<PhotoView> {
        self.record().photo.as_ref().map(|photo| photo_view(media, photo))
    }
}

impl std::ops::Deref for ShownPost {
    type Target = PostView;

    fn deref(&self) -> &PostView {
        &self.rendered().view
    }
}

/// A post in the `post` cache: the record (what L2 stores, unchanged), and its
/// rendering. A new version of the post is a new cache entry; the author's part
/// of the rendering (name and shown name) is checked against the author's
/// current profile on every read, by value: a profile entry refreshed with the
/// same content (every L1 lifetime) keeps the rendering valid.
#[derive(Debug, serde::Deserialize, Serialize)]
#[serde(transparent)]
pub struct CachedPost {
    /// The post.
    record: PostRecord,
    /// The post rendered with its author as they were then, set once.
    #[serde(skip)]
    shown: std::sync::OnceLock<Rendered>,
}

impl From<PostRecord> for CachedPost {
    fn from(record: PostRecord) -> CachedPost {
        CachedPost { record, shown: std::sync::OnceLock::new() }
    }
}

impl std::ops::Deref for CachedPost {
    type Target = PostRecord;

    fn deref(&self) -> &PostRecord {
        &self.record
    }
}

/// `post` as shown with `author` (its current profile), its photo aside.
fn shown(post: Arc<CachedPost>, author: &UserRecord) -> ShownPost {
    let render = || {
        let view = post_view_without_photo(&post.record, author, None);
        Rendered::new(view, post.record.photo.is_some())
    };
    let kept = post.shown.get_or_init(render);
    let with = &kept.view.author;
    if with.username == author.username && with.display_name == author.display_name {
        return ShownPost(Shown::Kept(post));
    }
    let made = Arc::new(render());
    ShownPost(Shown::Made(made, post))
}

/// Result of a follow or unfollow.
#[derive(Debug, Clone, Serialize)]
pub struct FollowView {
    /// Whether the viewer now follows the user.
    pub following: bool,
    /// The followed user, with fresh counters.
    pub user: UserView,
}

/// Result of a like or unlike.
#[derive(Debug, Clone, Serialize)]
pub struct LikeView {
    /// Whether the viewer now likes the post.
    pub liked: bool,
    /// The post's like count.
    pub like_count: i64,
}

pub(crate) fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub(crate) fn user_view(u: &UserRecord, followed_by_me: Option<bool>) -> UserView {
    UserView {
        id: u.user_id.to_string(),
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        bio: u.bio.clone(),
        followers_count: u.followers_count,
        following_count: u.following_count,
        posts_count: u.posts_count,
        created_at: rfc3339(u.created_ms),
        followed_by_me,
        avatar: None,
    }
}

fn image_view(media: &MediaUrls, image: &data::StoredImage) -> ImageView {
    ImageView { url: media.url(&image.key), width: image.width, height: image.height }
}

pub(crate) fn photo_view(media: &MediaUrls, photo: &data::Photo) -> PhotoView {
    PhotoView {
        original: image_view(media, &photo.original),
        thumbnails: photo.thumbnails.iter().map(|t| image_view(media, t)).collect(),
    }
}

/// `p` as the API shows it, its photo's URLs chosen by `media`.
fn post_view(media: &MediaUrls, p: &PostRecord, author: &UserRecord, liked_by_me: Option<bool>) -> PostView {
    PostView {
        photo: p.photo.as_ref().map(|photo| photo_view(media, photo)),
        ..post_view_without_photo(p, author, liked_by_me)
    }
}

/// `p` as the API shows it but for its photo (`None`).
fn post_view_without_photo(p: &PostRecord, author: &UserRecord, liked_by_me: Option<bool>) -> PostView {
    PostView {
        id: p.post_id.to_string(),
        author: AuthorView {
            id: author.user_id.to_string(),
            username: author.username.clone(),
            display_name: author.display_name.clone(),
        },
        caption: p.caption.clone(),
        like_count: p.like_count,
        comment_count: p.comment_count,
        created_at: rfc3339(p.created_ms),
        status: p.status.clone(),
        photo: None,
        liked_by_me,
    }
}

pub(crate) fn has_control_chars(s: &str, allow_newlines: bool) -> bool {
    s.chars().any(|c| c.is_control() && !(allow_newlines && (c == '\n' || c == '\r' || c == '\t')))
}

/// Lowercase and check a username: 3–30 of `a-z`, `0-9`, `_`.
pub fn normalize_username(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim().to_ascii_lowercase();
    if !USERNAME_LEN.contains(&name.len()) {
        return Err(ApiError::invalid("invalid_username", "usernames are 3 to 30 characters long"));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(ApiError::invalid(
            "invalid_username",
            "usernames use only letters a-z, digits and underscores",
        ));
    }
    Ok(name)
}

fn check_password(p: &str) -> Result<(), ApiError> {
    if !PASSWORD_LEN.contains(&p.chars().count()) {
        return Err(ApiError::invalid("invalid_password", "passwords are 8 to 128 characters long"));
    }
    Ok(())
}

pub(crate) fn check_display_name(d: &str) -> Result<String, ApiError> {
    let d = d.trim();
    if d.is_empty() || d.chars().count() > MAX_DISPLAY_NAME || has_control_chars(d, false) {
        return Err(ApiError::invalid(
            "invalid_display_name",
            format!("display names are 1 to {MAX_DISPLAY_NAME} printable characters"),
        ));
    }
    Ok(d.to_owned())
}

fn check_caption(c: &str) -> Result<String, ApiError> {
    let c = c.trim();
    if c.is_empty() {
        return Err(ApiError::invalid("invalid_caption", "a caption cannot be empty"));
    }
    if c.chars().count() > MAX_CAPTION {
        return Err(ApiError::invalid(
            "invalid_caption",
            format!("captions are at most {MAX_CAPTION} characters"),
        ));
    }
    if has_control_chars(c, true) {
        return Err(ApiError::invalid("invalid_caption", "captions cannot contain control characters"));
    }
    Ok(c.to_owned())
}

/// Parse a `limit` query value.
pub fn parse_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else { return Ok(DEFAULT_LIMIT) };
    match raw.parse::<usize>() {
        Ok(n) if LIMIT_RANGE.contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request("invalid_limit", "limit must be a whole number from 1 to 100")),
    }
}

/// Parse an opaque `cursor` query value.
pub fn parse_cursor(raw: Option<&str>) -> Result<Option<PostId>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let bad = || ApiError::bad_request("invalid_cursor", "cursor is not one this server issued");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| bad())?;
    PostId::from_i64(i64::from_be_bytes(bytes)).map(Some).map_err(|_| bad())
}

pub(crate) fn encode_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(id.to_be_bytes())
}

/// Parse a post id from a path.
pub fn parse_post_id(raw: &str) -> Result<PostId, ApiError> {
    raw.parse::<i64>()
        .ok()
        .and_then(|n| PostId::from_i64(n).ok())
        .ok_or_else(|| ApiError::bad_request("invalid_post_id", "post ids are positive whole numbers"))
}

/// Create an account.
pub async fn signup(
    state: &AppState,
    username: &str,
    password: String,
    display_name: Option<&str>,
    client: Client,
) -> Result<UserView, ApiError> {
    let username = normalize_username(username)?;
    check_password(&password)?;
    let display_name = match display_name {
        Some(d) => check_display_name(d)?,
        None => username.clone(),
    };
    signup_allowed(state, client).await?;
    let hash = state.passwords().hash(password).await?;
    let user = state.data().create_user(&username, &display_name, &hash).await.map_err(|e| match e {
        DataError::Conflict(_) => ApiError::Conflict {
            code: "username_taken",
            message: format!("the username {username} is taken"),
        },
        e => e.into(),
    })?;
    state.business().signups.inc();
    crate::directory::record_user(state, user.user_id, &user.username, &user.display_name).await;
    tracing::info!(user_id = user.user_id, "signup");
    Ok(user_view(&user, None))
}

/// A started session.
#[derive(Debug)]
pub struct LoggedIn {
    /// The session token.
    pub token: String,
    /// Who logged in.
    pub user: UserView,
    /// A new known-device token for the `did` cookie (none when the device was
    /// known already, or devices are not remembered).
    pub device: Option<String>,
}

/// Check credentials and start a session. `device` is the request's known-device
/// token (`did` cookie), if any: known for this account, the login skips the
/// failed-login limits and gets the next free hashing thread first; failed, the device is
/// forgotten.
pub async fn login(
    state: &AppState,
    username: &str,
    password: String,
    client: Client,
    device: Option<&str>,
) -> Result<LoggedIn, ApiError> {
    // Only a possible name has an account (and a counter of its own, its Redis key
    // bounded in size: an impossible name of 60 KB must not become a key).
    let account = normalize_username(username).ok();
    let known = match &account {
        Some(name) => KnownDevice::of(state, device, name).await,
        None => None,
    };
    // Counted, or refused, before the database is asked or a hash is computed.
    let limit = LoginLimit::of(state, account.as_deref(), client);
    if known.is_none() {
        limit.admit().await?;
    }
    // An impossible name still costs a hash verification, like a wrong password.
    let creds = match &account {
        Some(name) => state.data().credentials(name).await?,
        None => None,
    };
    let (user_id, hash) = match creds {
        Some(c) => (Some(c.user_id), Some(c.password_hash)),
        None => (None, None),
    };
    let lane = if known.is_some() { Lane::KnownDevice } else { Lane::Other };
    if !state.passwords().verify(password, hash, lane).await? || user_id.is_none() {
        // Other attempts were counted when admitted.
        if let Some(known) = known {
            limit.failed().await;
            known.forget().await;
        }
        return Err(ApiError::BadCredentials);
    }
    // A known device's success leaves the account's count alone: its owner logging
    // in must not give whoever locked the account a fresh set of guesses.
    if known.is_none() {
        limit.succeeded().await;
    }
    let user_id = user_id.ok_or(ApiError::BadCredentials)?;
    let profile = profile_by_id(state, user_id).await?;
    let token = state.sessions().create(user_id).await?;
    let device = match (known, &account) {
        (None, Some(name)) => KnownDevice::remember(state, name).await,
        _ => None,
    };
    tracing::info!(user_id, "login");
    Ok(LoggedIn { token, user: user_view(&profile, None), device })
}

/// A device known for an account: it logged in to it before (`abuse.known_device_secs`
/// ago at most) and has not failed since. Kept in this DC's Redis as `dv:{token}` →
/// the account's name; a device is known in the DC it logged in through.
struct KnownDevice<'a> {
    /// The app.
    state: &'a AppState,
    /// Its Redis key.
    key: String,
}

impl<'a> KnownDevice<'a> {
    /// The device of `token`, if it is known for `account`. If Redis cannot say,
    /// it is not known (the login takes the ordinary way).
    async fn of(state: &'a AppState, token: Option<&str>, account: &str) -> Option<KnownDevice<'a>> {
        let token = token.filter(|_| state.config().abuse.known_device_secs > 0)?;
        let key = state.redis().key(&format!("dv:{token}"));
        let k = key.clone();
        let owner = state
            .redis()
            .run(|mut c| async move { redis::cmd("GET").arg(&k).query_async::<Option<String>>(&mut c).await })
            .await;
        match owner {
            Ok(Some(owner)) if owner == account => Some(KnownDevice { state, key }),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up a known device; treating it as unknown");
                None
            }
        }
    }

    /// Remember a new device for `account`; returns its token for the cookie.
    async fn remember(state: &AppState, account: &str) -> Option<String> {
        let ttl = state.config().abuse.known_device_secs;
        if ttl == 0 {
            return None;
        }
        let token = crate::auth::random_token();
        let key = state.redis().key(&format!("dv:{token}"));
        let account = account.to_owned();
        let set = state
            .redis()
            .run(|mut c| async move {
                redis::cmd("SET").arg(&key).arg(&account).arg("EX").arg(ttl).query_async::<()>(&mut c).await
            })
            .await;
        match set {
            Ok(()) => Some(token),
            Err(e) => {
                tracing::warn!(error = %e, "cannot remember a known device");
                None
            }
        }
    }

    /// A failed login from it: it is known no more.
    async fn forget(self) {
        let key = self.key;
        if let Err(e) = self
            .state
            .redis()
            .run(|mut c| async move { redis::cmd("DEL").arg(&key).query_async::<()>(&mut c).await })
            .await
        {
            tracing::warn!(error = %e, "cannot forget a known device");
        }
    }
}

/// The login limits a request is under, counted in this DC's Redis over fixed
/// windows: failed logins of the account (`passwords.max_failed_logins` per
/// `passwords.lockout_secs`) and of the client address
/// (`abuse.failed_logins_per_addr` per `abuse.failed_login_window_secs`). If Redis
/// cannot count, logins are not limited (the load balancer's per-client rate limit
/// and the bounded hashing pool remain).
struct LoginLimit<'a> {
    /// The app.
    state: &'a AppState,
    /// Each limit in force: which, its counter's key, its maximum, its window.
    counters: Vec<(Limit, String, u32, u64)>,
}

impl<'a> LoginLimit<'a> {
    /// The limits of a login to `account` (normalized like usernames, so `Alice`
    /// and `alice` share a count; none for an impossible name, which never logs
    /// in) from `client`.
    fn of(state: &'a AppState, account: Option<&str>, client: Client) -> LoginLimit<'a> {
        let (p, a) = (&state.config().passwords, &state.config().abuse);
        let mut counters = Vec::with_capacity(2);
        if let Some(account) = account
            && p.max_failed_logins > 0
        {
            let key = state.redis().key(&format!("lf:{account}"));
            counters.push((Limit::AccountLogins, key, p.max_failed_logins, p.lockout_secs));
        }
        if a.failed_logins_per_addr > 0 && !client.operator {
            let key = state.redis().key(&format!("la:{}", client.addr.limit_key()));
            counters.push((Limit::AddressLogins, key, a.failed_logins_per_addr, a.failed_login_window_secs));
        }
        LoginLimit { state, counters }
    }

    /// Count this attempt against every limit, and refuse it if that is one too
    /// many (one round trip for both). Counted before the password is checked, so
    /// that concurrent guesses cannot all pass a check made before any of them
    /// failed; a success takes its count back ([`LoginLimit::succeeded`]).
    async fn admit(&self) -> Result<(), ApiError> {
        if self.counters.is_empty() {
            return Ok(());
        }
        let counted = match count(self.state, self.counters.iter().map(|(_, k, _, w)| (k, *w))).await {
            Ok(counted) => counted,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count a login attempt; not limiting");
                return Ok(());
            }
        };
        for ((limit, _, max, _), (attempts, ttl)) in self.counters.iter().zip(counted) {
            if attempts > i64::from(*max) {
                return Err(too_many(*limit, ttl));
            }
        }
        Ok(())
    }

    /// Count a failed login against every limit (a known device's, which
    /// [`LoginLimit::admit`] did not count).
    async fn failed(&self) {
        if let Err(e) = count(self.state, self.counters.iter().map(|(_, k, _, w)| (k, *w))).await {
            tracing::warn!(error = %e, "cannot count a failed login");
        }
    }

    /// An admitted login succeeded: the account's count is cleared, and the
    /// address's gives this attempt back (not more: one good account must not reset
    /// a guesser's count).
    async fn succeeded(&self) {
        static GIVE_BACK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            // Only while the window lasts: a DECR of an expired key would make a
            // count of -1 that never expires.
            redis::Script::new("if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end")
        });
        for (limit, key, _, _) in &self.counters {
            let key = key.clone();
            let done = match limit {
                Limit::AccountLogins => self
                    .state
                    .redis()
                    .run(|mut c| async move { redis::cmd("DEL").arg(&key).query_async::<()>(&mut c).await })
                    .await,
                _ => {
                    self.state
                        .redis()
                        .run(|mut c| async move { GIVE_BACK.key(&key).invoke_async::<()>(&mut c).await })
                        .await
                }
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "cannot clear a login count");
            }
        }
    }
}

/// Add one to each of `counters` (key, window in seconds; the window starts with
/// the first count) in one round trip; returns each new count and its seconds left.
async fn count<'k>(
    state: &AppState,
    counters: impl Iterator<Item = (&'k String, u64)>,
) -> Result<Vec<(i64, i64)>, cache::RedisError> {
    let mut pipe = redis::pipe();
    for (key, window) in counters {
        pipe.incr(key, 1).expire(key, window as i64).arg("NX").ignore().ttl(key);
    }
    state.redis().run(|mut c| async move { pipe.query_async::<Vec<(i64, i64)>>(&mut c).await }).await
}

/// The refusal of `limit`, retrying after `ttl` seconds (at least one).
fn too_many(limit: Limit, ttl: i64) -> ApiError {
    ApiError::TooManyAttempts { limit, retry_after_secs: u64::try_from(ttl).unwrap_or(1).max(1) }
}

/// Count a signup from `client`; refuse it once the address has made
/// `abuse.signups_per_addr` in the window. If Redis cannot count, signups are not
/// limited; the operator's tools are not.
async fn signup_allowed(state: &AppState, client: Client) -> Result<(), ApiError> {
    let a = &state.config().abuse;
    if a.signups_per_addr == 0 || client.operator {
        return Ok(());
    }
    let key = state.redis().key(&format!("su:{}", client.addr.limit_key()));
    match count(state, std::iter::once((&key, a.signup_window_secs))).await.as_deref() {
        Ok([(made, ttl)]) if *made > i64::from(a.signups_per_addr) => {
            Err(too_many(Limit::AddressSignups, *ttl))
        }
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot count a signup; not limiting");
            Ok(())
        }
    }
}

/// End a session.
pub async fn logout(state: &AppState, token: &str) -> Result<(), ApiError> {
    state.sessions().destroy(token).await
}

/// Run a shared-cache loader's reads ([`data::fill_reads`]): on the primaries,
/// or, while a shard's primary is being replaced, on one of its replicas — then
/// the value is served but cached nowhere ([`cache::Loaded::ServeOnly`]).
pub(crate) async fn fill<T, E>(
    load: impl Future<Output = Result<Option<T>, E>>,
) -> Result<cache::Loaded<T>, E> {
    let (found, served) = data::fill_reads(load).await;
    let found = found?;
    Ok(match served {
        data::Served::Primary => cache::Loaded::Keep(found),
        data::Served::Replica => cache::Loaded::ServeOnly(found),
    })
}

/// The id of a user, by name (404 if none).
pub async fn user_id_of(state: &AppState, username: &str) -> Result<i64, ApiError> {
    let not_found = ApiError::NotFound("no such user");
    let Ok(name) = normalize_username(username) else { return Err(not_found) };
    let data = state.data().clone();
    let found = state
        .caches()
        .user_ids
        .get_or_fill(&name, || {
            let name = name.clone();
            fill(async move { data.user_id_by_username(&name).await })
        })
        .await?;
    found.map(|id| *id).ok_or(not_found)
}

/// A profile by id, through the cache (404 if none).
pub async fn profile_by_id(state: &AppState, user_id: i64) -> Result<Arc<UserRecord>, ApiError> {
    let data = state.data().clone();
    state
        .caches()
        .profiles
        .get_or_fill(itoa::Buffer::new().format(user_id), || fill(async move { data.profile(user_id).await }))
        .await?
        .ok_or(ApiError::NotFound("no such user"))
}

/// A profile by id for `viewer`: its hot copy if it has one the viewer may be
/// served ([`crate::hotkeys::HotKeys::profile`]), else through the cache. The
/// read is counted.
async fn hot_profile(
    state: &AppState,
    user_id: i64,
    viewer: Option<i64>,
) -> Result<Arc<UserRecord>, ApiError> {
    let hot = state.hotkeys();
    hot.note(Kind::Profile, user_id);
    match hot.profile(user_id, viewer) {
        Some(user) => Ok(user),
        None => profile_by_id(state, user_id).await,
    }
}

/// A post by id, through the cache (404 if none).
pub async fn post_by_id(state: &AppState, id: PostId) -> Result<Arc<CachedPost>, ApiError> {
    let data = state.data().clone();
    state
        .caches()
        .posts
        .get_or_fill(itoa::Buffer::new().format(id.get()), || {
            fill(async move { data.post(id).await.map(|p| p.map(CachedPost::from)) })
        })
        .await?
        .ok_or(ApiError::NotFound("no such post"))
}

/// Forget a profile this process changed: the shared cache everywhere, then its
/// hot copy here (after, so that no refresh reads the old value back).
pub(crate) async fn invalidate_profile(state: &AppState, user_id: i64) {
    state.caches().profiles.invalidate(itoa::Buffer::new().format(user_id)).await;
    state.hotkeys().forget(Kind::Profile, user_id);
}

/// Forget what an author's new or deleted post changed: their profile (its post
/// count) and their cached newest post ids ([`author_recent`]), before the write
/// is acknowledged.
pub(crate) async fn invalidate_author(state: &AppState, author: i64) {
    invalidate_profile(state, author).await;
    state.caches().author_posts.invalidate(itoa::Buffer::new().format(author)).await;
}

/// Forget a post this process changed, as [`invalidate_profile`].
pub(crate) async fn invalidate_post(state: &AppState, post_id: i64) {
    state.caches().posts.invalidate(itoa::Buffer::new().format(post_id)).await;
    state.hotkeys().forget(Kind::Post, post_id);
}

/// Whom a user follows, through the cache.
pub async fn followees_of(state: &AppState, user_id: i64) -> Result<Arc<Vec<i64>>, ApiError> {
    followees(state, user_id, Level::L1).await
}

/// Where a cached read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// This process's copy, if it holds one.
    L1,
    /// Redis, past this process's copy ([`cache::ReadThrough::get_or_fill_shared`]).
    Shared,
}

/// Whom `user_id` follows, read from `level` down.
async fn followees(state: &AppState, user_id: i64, level: Level) -> Result<Arc<Vec<i64>>, ApiError> {
    let data = state.data().clone();
    id_list(&state.caches().followees, user_id, level, move || async move {
        data.followees(user_id).await.map(Some)
    })
    .await
}

/// The list of ids `cache` holds for `id`, read from `level` down; on a miss
/// `load` reads it as a cache fill does ([`fill`]). No list is an empty one.
async fn id_list<F, Fut>(
    cache: &cache::ReadThrough<Vec<i64>>,
    id: i64,
    level: Level,
    load: F,
) -> Result<Arc<Vec<i64>>, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Option<Vec<i64>>, DataError>>,
{
    let load = || fill(load());
    let mut buffer = itoa::Buffer::new();
    let key = buffer.format(id);
    let found = match level {
        Level::L1 => cache.get_or_fill(key, load).await?,
        Level::Shared => cache.get_or_fill_shared(key, load).await?,
    };
    Ok(found.unwrap_or_default())
}

/// The users `viewer` follows, for showing them their own follows
/// (`followed_by_me`): read past this process's L1 ([`cache::ReadThrough::get_or_fill_shared`]),
/// so that it holds every follow and unfollow of theirs already acknowledged.
/// Only the viewer's own follow or unfollow changes the list, and that write
/// invalidates it in Redis (`set_follow`) before it is acknowledged; generations
/// (ADR 0003) keep a load that raced the write out of both cache levels. From L1,
/// another web server would answer from its copy until the invalidation message
/// reached it, which under load was seen to come after the client's next request
/// (a read-your-writes violation in a bench run). One Redis round trip, not a
/// query of the edge (`Data::is_following`) per user shown.
pub async fn viewer_followees(state: &AppState, viewer: i64) -> Result<Arc<Vec<i64>>, ApiError> {
    followees(state, viewer, Level::Shared).await
}

/// A user's profile as seen by `viewer` (`followed_by_me` from
/// [`viewer_followees`]).
///
/// The read is counted ([`crate::hotkeys`]); a protected profile is served from
/// its hot copy unless the viewer wrote since it was read.
/// The avatar's URLs are chosen by `media`.
pub async fn profile(
    state: &AppState,
    media: &MediaUrls,
    username: &str,
    viewer: Option<i64>,
) -> Result<UserView, ApiError> {
    let user_id = user_id_of(state, username).await?;
    let user = hot_profile(state, user_id, viewer).await?;
    let followed = match viewer {
        Some(v) if v != user_id => Some(viewer_followees(state, v).await?.contains(&user_id)),
        Some(_) => Some(false),
        None => None,
    };
    Ok(crate::avatars::with_avatar(user_view(&user, followed), &user, media))
}

/// Follow (`on`) or unfollow a user; idempotent.
pub async fn set_follow(
    state: &AppState,
    viewer: i64,
    username: &str,
    on: bool,
) -> Result<FollowView, ApiError> {
    let target = user_id_of(state, username).await?;
    if target == viewer {
        return Err(ApiError::invalid("cannot_follow_self", "you cannot follow yourself"));
    }
    let data = state.data();
    let change = if on { data.follow(viewer, target).await } else { data.unfollow(viewer, target).await }
        .map_err(|e| match e {
            DataError::NotFound => ApiError::NotFound("no such user"),
            e => e.into(),
        })?;
    if change == Change::Changed && on {
        state.business().follows.inc();
    }
    // An unchanged edge may still have left the caches behind: an earlier attempt
    // of this request can have committed and then failed before invalidating
    // (its primary lost mid-commit, its web server killed), and the client's retry
    // finds nothing to change. If the viewer's cached followees disagree with the
    // edge, the caches are mended as for a change.
    let stale = change == Change::Unchanged && followees_of(state, viewer).await?.contains(&target) != on;
    if stale {
        tracing::info!(viewer, target, on, "a repeated follow change found stale caches; invalidating");
    }
    if change == Change::Changed || stale {
        invalidate_profile(state, viewer).await;
        invalidate_profile(state, target).await;
        state.caches().followees.invalidate(&viewer.to_string()).await;
        // The target's pushes reach the viewer's timeline from now on, or no
        // longer (the rebuild below registers it too, but its followee list may be
        // a cached one from before this change).
        let readers = if on {
            state.timelines().add_reader(target, viewer).await
        } else {
            state.timelines().remove_reader(target, viewer).await
        };
        let registered = match readers {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not update the target's readers after a follow change");
                false
            }
        };
        // The viewer's feed gains this user's posts (merged into its timeline
        // where it exists, no rebuild), or loses them (rebuilt on next read).
        let merged = on && registered && merge_followed(state, viewer, target).await;
        if !merged && let Err(e) = state.timelines().drop_timeline(viewer).await {
            tracing::warn!(error = %e, "could not drop a timeline after a follow change");
        }
    }
    let user = profile_by_id(state, target).await?;
    if change == Change::Changed || stale {
        let threshold = state.config().feed.celebrity_threshold;
        let crossed = if on { threshold } else { threshold - 1 };
        if user.followers_count == crossed {
            state.caches().celebrities.invalidate("all").await;
        }
    }
    Ok(FollowView { following: on, user: user_view(&user, Some(on)) })
}

/// After `viewer` followed `target` and joined its readers: `target`'s newest
/// posts, read as a rebuild reads them (on its shard's primary, so none committed
/// before the registration is missed, as a lagging replica might), merged into
/// `viewer`'s timeline wherever it exists. `false` if either step failed or the
/// read came from a replica (a primary being replaced): the caller drops the
/// timeline instead, and the next read rebuilds it.
async fn merge_followed(state: &AppState, viewer: i64, target: i64) -> bool {
    let cap = state.timelines().cap() as i64;
    let (read, served) = data::fill_reads(state.data().recent_post_ids(&[target], cap, None)).await;
    let ids = match read {
        Ok(_) if served == data::Served::Replica => {
            tracing::debug!(
                viewer,
                target,
                "a new followee's posts read from a replica; the timeline is rebuilt"
            );
            return false;
        }
        Ok(ids) => ids.into_iter().map(PostId::get).collect::<Vec<i64>>(),
        Err(e) => {
            tracing::warn!(error = %e, viewer, target, "could not read a new followee's posts; the timeline is rebuilt");
            return false;
        }
    };
    match state.timelines().merge(viewer, &ids).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, viewer, target, "could not merge a new followee's posts; the timeline is rebuilt");
            false
        }
    }
}

/// Publish a text post and fan it out.
///
/// The post and its `fanout` job (the outbox, due in `data::FANOUT_DELAY`) commit
/// together. The fan-out runs here at once; when it succeeds the job is deleted
/// (one statement). When it fails, or this server dies after the commit, a worker
/// runs the job later, so no follower's timeline misses the post.
pub async fn create_post(state: &AppState, author: i64, caption: &str) -> Result<PostView, ApiError> {
    let caption = check_caption(caption)?;
    let (post, job) = state.data().create_post_queued(author, &caption).await?;
    state.business().posts.inc();
    invalidate_author(state, author).await;
    let profile = profile_by_id(state, author).await?;
    fan_out(state, &post, &profile, &job).await;
    Ok(post_view_without_photo(&post, &profile, Some(false)))
}

/// Fan a new text post out now and, once done, drop its outbox job; on failure the
/// job stays for a worker.
async fn fan_out(state: &AppState, post: &PostRecord, author: &UserRecord, job: &data::QueuedJob) {
    let threshold = state.config().feed.celebrity_threshold;
    let (data, timelines, invalidator) = (state.data(), state.timelines(), &state.caches().invalidator);
    let fanned = feed::fan_out(
        data,
        timelines,
        invalidator,
        threshold,
        post.post_id,
        author.user_id,
        author.followers_count,
    )
    .await;
    match fanned {
        Ok(done) => {
            state.business().fan_out.record(&done);
            if let Err(e) = data.delete_queued_job(job).await {
                tracing::warn!(error = %e, job_id = job.job_id, "could not drop a done fan-out job; a worker repeats it (harmless)");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, post_id = post.post_id, job_id = job.job_id, "fan-out failed; a worker runs its job later");
        }
    }
}

/// Publish a photo post: validate and store the photo, then write the post (state
/// `processing`) and its processing job in one shard transaction. A worker makes the
/// thumbnails, marks the post ready and fans it out. The answer's photo URL is
/// chosen by `media`.
pub async fn create_photo_post(
    state: &AppState,
    media: &MediaUrls,
    author: i64,
    caption: Option<&str>,
    photo: Vec<u8>,
) -> Result<PostView, ApiError> {
    let caption = match caption.map(str::trim) {
        None | Some("") => String::new(),
        Some(c) => check_caption(c)?,
    };
    let original = crate::media::store_upload(state, photo).await?;
    let max_attempts = state.config().media.max_attempts;
    let post = state.data().create_photo_post(author, &caption, original, max_attempts).await?;
    state.business().posts.inc();
    state.business().photos.inc();
    invalidate_author(state, author).await;
    let profile = profile_by_id(state, author).await?;
    tracing::info!(post_id = post.post_id, "photo post accepted");
    Ok(post_view(media, &post, &profile, Some(false)))
}

/// One post as seen by `viewer`, its photo's URLs chosen by `media`. The reads of
/// the post and of its author are counted ([`crate::hotkeys`]); a protected post,
/// and a protected author, are served from their hot copies unless the viewer
/// wrote since they were read.
pub async fn post(
    state: &AppState,
    media: &MediaUrls,
    id: PostId,
    viewer: Option<i64>,
) -> Result<PostView, ApiError> {
    let hot = state.hotkeys();
    hot.note(Kind::Post, id.get());
    let post = match hot.post(id.get(), viewer) {
        Some(post) => post,
        None => post_by_id(state, id).await?,
    };
    // The author is read with every post: a hot post makes its author hot.
    let author = hot_profile(state, post.user_id, viewer).await?;
    let liked = match viewer {
        Some(v) => Some(state.data().likes(id, v).await?),
        None => None,
    };
    Ok(post_view(media, &post, &author, liked))
}

/// Like (`on`) or unlike a post; idempotent.
pub async fn set_like(state: &AppState, viewer: i64, id: PostId, on: bool) -> Result<LikeView, ApiError> {
    let data = state.data();
    let (change, like_count) = if on { data.like(id, viewer).await } else { data.unlike(id, viewer).await }
        .map_err(|e| match e {
        DataError::NotFound => ApiError::NotFound("no such post"),
        e => e.into(),
    })?;
    if change == Change::Changed && on {
        state.business().likes.inc();
    }
    // Also when unchanged: a retry of a like that committed and then failed before
    // this invalidation finds nothing to change, and the cached count would stay
    // behind. A repeated like is rare; one invalidation is cheap.
    invalidate_post(state, id.get()).await;
    Ok(LikeView { liked: on, like_count })
}

/// The ids (as the views spell them) of the posts of `page` that `viewer`
/// likes: the feed's like buttons. One query per shard the page's posts are on.
pub async fn liked_among(
    state: &AppState,
    viewer: i64,
    page: &PostPage,
) -> Result<std::collections::HashSet<String>, ApiError> {
    let ids: Vec<PostId> =
        page.posts.iter().filter_map(|p| p.id.parse().ok().and_then(|n| PostId::from_i64(n).ok())).collect();
    if ids.is_empty() {
        return Ok(Default::default());
    }
    Ok(state.data().liked_among(viewer, &ids).await?.into_iter().map(|id| id.to_string()).collect())
}

/// Posts by ids, newest first, through the cache; missing ones are skipped.
///
/// Every post and author this process holds (L1) is taken first, one after the
/// other: on a warm feed that is all of them, and no load's state is ever built.
/// What L1 lacks is looked up in two batches (the posts, then their authors),
/// each one Redis round trip and, for what Redis lacks too, one query per shard.
async fn hydrate(state: &AppState, ids: &[i64]) -> Result<Vec<ShownPost>, ApiError> {
    let (caches, data) = (state.caches(), state.data());
    // The usual page is all in L1: no allocation beyond the views.
    let mut posts: Vec<Option<Arc<CachedPost>>> =
        ids.iter().map(|id| caches.posts.cached(itoa::Buffer::new().format(*id))).collect();
    if posts.iter().any(Option::is_none) {
        posts = batch_by_id(&caches.posts, ids, |ids| async move {
            let valid: Vec<PostId> = ids.iter().filter_map(|id| PostId::from_i64(*id).ok()).collect();
            Ok(data.posts(&valid).await?.into_iter().map(|p| (p.post_id, CachedPost::from(p))).collect())
        })
        .await?;
    }
    let mut authors: Vec<Option<Arc<UserRecord>>> = posts
        .iter()
        .map(|p| p.as_ref().and_then(|p| caches.profiles.cached(itoa::Buffer::new().format(p.user_id))))
        .collect();
    if posts.iter().zip(&authors).any(|(p, a)| p.is_some() && a.is_none()) {
        // The authors of the posts found (a post that is gone has none to ask for).
        let found: Vec<(usize, i64)> =
            posts.iter().enumerate().filter_map(|(i, p)| Some((i, p.as_ref()?.user_id))).collect();
        let author_ids: Vec<i64> = found.iter().map(|(_, id)| *id).collect();
        let loaded = batch_by_id(&caches.profiles, &author_ids, |ids| async move {
            Ok(data.profiles(&ids).await?.into_iter().map(|u| (u.user_id, u)).collect())
        })
        .await?;
        for ((i, _), author) in found.into_iter().zip(loaded) {
            authors[i] = author;
        }
    }
    // A post whose author is gone is left out, as one that is gone.
    Ok(posts
        .into_iter()
        .zip(authors)
        .filter_map(|(post, author)| Some(shown(post?, author.as_deref()?)))
        .collect())
}

/// The values of `cache` for `ids` (some not in L1), looked up as one batch (one
/// Redis round trip; one query per shard for what Redis lacks too): `load` reads
/// the records of the ids it is given, by id, on the shards' primaries, as
/// [`fill`] does for one key.
pub(crate) async fn batch_by_id<T, F, Fut>(
    cache: &cache::ReadThrough<T>,
    ids: &[i64],
    load: F,
) -> Result<Vec<Option<Arc<T>>>, ApiError>
where
    T: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    F: Fn(Vec<i64>) -> Fut,
    Fut: Future<Output = Result<std::collections::HashMap<i64, T>, DataError>>,
{
    let keys: Vec<String> = ids.iter().map(i64::to_string).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let load = &load;
    Ok(cache
        .get_many_or_fill(&keys, |asked| async move {
            let asked: Vec<i64> = asked.iter().map(|i| ids[*i]).collect();
            let (found, served) = data::fill_reads(load(asked.clone())).await;
            let mut found = found?;
            Ok::<_, DataError>(cache::LoadedMany {
                values: asked.iter().map(|id| found.remove(id)).collect(),
                keep: served == data::Served::Primary,
            })
        })
        .await?)
}

fn page_of(mut ids: Vec<i64>, limit: usize) -> (Vec<i64>, Option<String>) {
    let next = (ids.len() > limit).then(|| encode_cursor(ids[limit - 1]));
    ids.truncate(limit);
    (ids, next)
}

/// A user's own posts as `viewer` sees them; the page's photo URLs are chosen by
/// `media` when it is rendered or serialized.
///
/// A page within the author's cached newest ids (`author_recent`; the usual
/// first page) is served from them, with no query; a deeper one reads the
/// author's shard. The author's own read starts past L1, in Redis, which their
/// post or deletion invalidated before it was acknowledged, as
/// [`viewer_followees`] does for follows: another web server's copy may not have
/// heard of it yet.
pub async fn user_posts(
    state: &AppState,
    media: &MediaUrls,
    username: &str,
    viewer: Option<i64>,
    source: PageSource,
    cursor: Option<PostId>,
    limit: usize,
) -> Result<PostPage, ApiError> {
    let user_id = user_id_of(state, username).await?;
    let cached = match source {
        PageSource::Cache => {
            let level = if viewer == Some(user_id) { Level::Shared } else { Level::L1 };
            page_within(&author_recent(state, user_id, level).await?, cursor.map(PostId::get), limit + 1)
        }
        PageSource::Shard => None,
    };
    let ids = match cached {
        Some(ids) => ids,
        None => {
            let rows = state.data().user_posts(user_id, cursor, limit as i64 + 1).await?;
            rows.iter().map(|p| p.post_id).collect()
        }
    };
    let (ids, next_cursor) = page_of(ids, limit);
    Ok(PostPage { posts: hydrate(state, &ids).await?, next_cursor, media: media.clone() })
}

/// Where the ids of a page of an author's posts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSource {
    /// The author's cached newest ids while the page is within them, else the
    /// author's shard.
    Cache,
    /// The author's shard, always: what a client asking with `Cache-Control:
    /// no-cache` gets. The bench's checker asks so: its proof that no
    /// acknowledged post was lost must rest on the shards, not on a cache.
    Shard,
}

/// The `want` ids of `recent` (an author's newest, newest first, as
/// [`author_recent`] keeps them) older than `before`, if `recent` holds them all:
/// it holds every id it reaches down to, and all of the author's posts when it is
/// shorter than [`AUTHOR_RECENT`]. `None`: the page reaches past it.
fn page_within(recent: &[i64], before: Option<i64>, want: usize) -> Option<Vec<i64>> {
    let start = before.map_or(0, |b| recent.partition_point(|id| *id >= b));
    let rest = &recent[start..];
    let all = (recent.len() as i64) < AUTHOR_RECENT;
    (rest.len() >= want || all).then(|| rest.iter().take(want).copied().collect())
}

/// The viewer's home feed: the cached timeline (rebuilt from the database when cold)
/// merged with the newest posts of the celebrities the viewer follows; the page's
/// photo URLs are chosen by `media` when it is rendered or serialized.
pub async fn home_feed(
    state: &AppState,
    media: &MediaUrls,
    viewer: i64,
    cursor: Option<PostId>,
    limit: usize,
) -> Result<PostPage, ApiError> {
    let before = cursor.map(PostId::get);
    let mut ids = match state.timelines().page(viewer, before, limit + 1).await {
        Ok(Some(ids)) => {
            state.timeline_reads().warm.inc();
            ids
        }
        Ok(None) => {
            state.timeline_reads().cold.inc();
            rebuild_timeline(state, viewer, before, limit + 1).await?
        }
        Err(e) => {
            state.timeline_reads().unreadable.inc();
            // The timelines' Redis is down: read the feed from the shards instead.
            tracing::warn!(error = %e, user_id = viewer, "timeline unreadable; feed read from the shards");
            let mut authors = followees_of(state, viewer).await?.as_ref().clone();
            authors.push(viewer);
            let ids = state.data().recent_post_ids(&authors, limit as i64 + 1, cursor).await?;
            ids.into_iter().map(PostId::get).collect()
        }
    };
    let followees = followees_of(state, viewer).await?;
    if !followees.is_empty() {
        let celebrities = celebrities(state).await?;
        for celeb in followees.iter().filter(|f| celebrities.contains(f)) {
            let recent = author_recent(state, *celeb, Level::L1).await?;
            ids.extend(recent.iter().copied().filter(|id| before.is_none_or(|b| *id < b)).take(limit + 1));
        }
    }
    let merged: BTreeSet<i64> = ids.into_iter().collect();
    let ids: Vec<i64> = merged.into_iter().rev().take(limit + 1).collect();
    let (ids, next_cursor) = page_of(ids, limit);
    Ok(PostPage { posts: hydrate(state, &ids).await?, next_cursor, media: media.clone() })
}

/// Rebuild `viewer`'s cached timeline from the shards (its followees' and its own
/// newest posts, up to the timeline's cap) and return its page of `limit` ids
/// older than `before`. The page is served even if the timeline cannot be stored.
async fn rebuild_timeline(
    state: &AppState,
    viewer: i64,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<i64>, ApiError> {
    // From here on, fan-out pushes into this timeline too (no post is lost
    // between the database read below and the fill).
    if let Err(e) = state.timelines().begin_rebuild(viewer).await {
        tracing::warn!(error = %e, user_id = viewer, "timeline rebuild not marked");
    }
    let mut authors = followees_of(state, viewer).await?.as_ref().clone();
    authors.push(viewer);
    // And from here on, pushes that ask their author's readers find this one
    // (before the read below, so a post it misses is pushed). Unregistered, the
    // timeline must not be stored: those authors' pushes would pass it by.
    let registered = match state.timelines().register(viewer, &authors).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, user_id = viewer, "timeline reader not registered; the rebuild is served, not stored");
            false
        }
    };
    // On the primaries, as a cache fill reads (ADR 0006): a post pushed before
    // the mark above did not reach this timeline, so the read must hold it, and a
    // lagging replica may not. Read from a replica (a primary being replaced),
    // the page is served but not stored.
    let cap = state.timelines().cap() as i64;
    let (read, served) = data::fill_reads(state.data().recent_post_ids(&authors, cap, None)).await;
    let ids: Vec<i64> = read?.into_iter().map(PostId::get).collect();
    if served == data::Served::Replica {
        tracing::debug!(user_id = viewer, "timeline rebuilt from a replica; served, not stored");
    }
    if registered && served == data::Served::Primary {
        match state.timelines().fill(viewer, &ids).await {
            Ok(true) => tracing::debug!(user_id = viewer, posts = ids.len(), "timeline rebuilt"),
            Ok(false) => {
                tracing::debug!(
                    user_id = viewer,
                    "timeline dropped or evicted during its rebuild; not stored"
                )
            }
            Err(e) => tracing::warn!(error = %e, user_id = viewer, "rebuilt timeline not stored"),
        }
    }
    Ok(ids.into_iter().filter(|id| before.is_none_or(|b| *id < b)).take(limit).collect())
}

async fn celebrities(state: &AppState) -> Result<Arc<Vec<i64>>, ApiError> {
    let data = state.data().clone();
    let threshold = state.config().feed.celebrity_threshold;
    Ok(state
        .caches()
        .celebrities
        .get_or_fill("all", || fill(async move { data.celebrities(threshold).await.map(Some) }))
        .await?
        .unwrap_or_default())
}

/// An author's newest [`AUTHOR_RECENT`] post ids, newest first, read from `level`
/// down. Invalidated where a post is written or deleted ([`invalidate_author`]),
/// by a celebrity's fan-out and by a deletion's retraction (`feed`).
async fn author_recent(state: &AppState, user_id: i64, level: Level) -> Result<Arc<Vec<i64>>, ApiError> {
    let data = state.data().clone();
    id_list(&state.caches().author_posts, user_id, level, move || async move {
        let ids = data.recent_post_ids(&[user_id], AUTHOR_RECENT, None).await?;
        Ok(Some(ids.into_iter().map(PostId::get).collect()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_comes_from_the_cached_ids_while_they_reach() {
        let full: Vec<i64> = (1..=AUTHOR_RECENT).rev().collect();
        assert_eq!(page_within(&full, None, 3), Some(vec![200, 199, 198]));
        assert_eq!(page_within(&full, Some(5), 4), Some(vec![4, 3, 2, 1]));
        assert_eq!(page_within(&full, Some(5), 5), None, "older posts may exist past the cached ids");
        let all = [30, 20, 10];
        assert_eq!(page_within(&all, Some(20), 5), Some(vec![10]), "fewer than cached: all of them");
        assert_eq!(page_within(&all, Some(10), 5), Some(vec![]));
        assert_eq!(page_within(&all, Some(25), 1), Some(vec![20]), "a cursor not listed (a deleted post)");
        assert_eq!(page_within(&[], None, 21), Some(vec![]), "no posts");
    }

    fn origin_only() -> MediaUrls {
        Arc::new(crate::edges::Edges::new(&crate::config::MediaConfig::default(), &Default::default()))
            .urls(false)
    }

    fn page(posts: Vec<ShownPost>, media: &MediaUrls) -> serde_json::Value {
        serde_json::to_value(PostPage { posts, next_cursor: None, media: media.clone() }).unwrap()
    }

    #[test]
    fn a_post_is_rendered_once_and_again_only_for_an_author_who_changed_their_names() {
        let author = UserRecord {
            user_id: 7,
            username: "ada".into(),
            display_name: "Ada".into(),
            bio: String::new(),
            followers_count: 1,
            following_count: 2,
            posts_count: 3,
            created_ms: 1_700_000_000_000,
            avatar: None,
        };
        let record = PostRecord {
            post_id: 99,
            user_id: 7,
            caption: "hi \"there\"".into(),
            like_count: 4,
            comment_count: 0,
            created_ms: 1_700_000_000_000,
            status: "ready".into(),
            photo: None,
        };
        let media = origin_only();
        let post = Arc::new(CachedPost::from(record.clone()));
        let first = shown(post.clone(), &author);
        let expected = serde_json::to_value(post_view(&media, &record, &author, None)).unwrap();
        assert_eq!(page(vec![first.clone()], &media)["posts"][0], expected, "the kept JSON is the view's");
        assert_eq!(first.caption, "hi \"there\"", "pages read the view");
        // The profile refreshed with other counters: the rendering stays valid.
        let refreshed = UserRecord { followers_count: 100, ..author.clone() };
        assert!(matches!(shown(post.clone(), &refreshed).0, Shown::Kept(_)));
        // A new shown name: rendered for this read, with it.
        let renamed = UserRecord { display_name: "Ada L.".into(), ..author.clone() };
        let again = shown(post.clone(), &renamed);
        assert!(matches!(again.0, Shown::Made(..)));
        assert_eq!(page(vec![again], &media)["posts"][0]["author"]["display_name"], "Ada L.");
        assert_eq!(page(vec![first], &media)["posts"][0]["author"]["display_name"], "Ada", "kept as it was");
    }

    #[test]
    fn a_kept_photo_post_names_the_edge_chosen_for_each_read() {
        let author = UserRecord {
            user_id: 7,
            username: "ada".into(),
            display_name: "Ada".into(),
            bio: String::new(),
            followers_count: 1,
            following_count: 2,
            posts_count: 3,
            created_ms: 1_700_000_000_000,
            avatar: None,
        };
        let image = |key: &str, side| data::StoredImage { key: key.into(), width: side, height: side };
        let record = PostRecord {
            post_id: 99,
            user_id: 7,
            caption: "a <cat>".into(),
            like_count: 4,
            comment_count: 0,
            created_ms: 1_700_000_000_000,
            status: "ready".into(),
            photo: Some(data::Photo {
                original: image("aa.jpg", 2000),
                thumbnails: vec![image("bb.jpg", 160), image("cc.jpg", 640)],
            }),
        };
        let media = crate::config::MediaConfig {
            cdn: crate::config::CdnConfig {
                edges: vec![crate::config::CdnEdge {
                    name: "e".into(),
                    dc: "dc1".into(),
                    http: "10.0.0.1:8000".into(),
                    https: Some("10.0.0.1:8443".into()),
                    health: "http://10.0.0.1:8001/readyz".into(),
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let edges = Arc::new(crate::edges::Edges::new(&media, &Default::default()));
        let post = Arc::new(CachedPost::from(record.clone()));
        let check = |media: &MediaUrls, url: &str| {
            let shown = shown(post.clone(), &author);
            let json = page(vec![shown.clone()], media);
            let expected = serde_json::to_value(post_view(media, &record, &author, None)).unwrap();
            assert_eq!(json["posts"][0], expected, "a page's post is the single post's view");
            assert_eq!(json["posts"][0]["photo"]["thumbnails"][1]["url"], url);
            assert_eq!(shown.photo(media).unwrap().thumbnails[1].url, url, "pages name the same");
            assert!(shown.photo.is_none(), "the kept view holds no URL");
        };
        check(&edges.urls(true), "/media/cc.jpg");
        edges.set_health("e", true);
        check(&edges.urls(true), "https://10.0.0.1:8443/media/cc.jpg");
        check(&edges.urls(false), "http://10.0.0.1:8000/media/cc.jpg");
        edges.set_health("e", false);
        check(&edges.urls(false), "/media/cc.jpg");
    }

    #[test]
    fn usernames_are_normalized_and_checked() {
        assert_eq!(normalize_username(" Alice_1 ").unwrap(), "alice_1");
        for bad in ["ab", "a-b-c", "ünïcode", &"x".repeat(31), "with space"] {
            assert!(normalize_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = PostId::from_i64(123_456_789).unwrap();
        assert_eq!(parse_cursor(Some(&encode_cursor(id.get()))).unwrap(), Some(id));
        for bad in ["", "!!", "AAAA", &encode_cursor(0), &encode_cursor(-5)] {
            assert!(parse_cursor(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(parse_limit(Some("100")).unwrap(), 100);
        for bad in ["0", "101", "-1", "ten", ""] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn captions_are_checked() {
        assert_eq!(check_caption("  hi  ").unwrap(), "hi");
        assert!(check_caption("   ").is_err());
        assert!(check_caption(&"x".repeat(MAX_CAPTION + 1)).is_err());
        assert!(check_caption("bell\u{7}").is_err());
        assert!(check_caption("two\nlines").is_ok());
    }
}
