//! The JSON API under `/api/v1`.

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, Multipart, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::auth;
use crate::avatars;
use crate::body::{
    ReadError, content_length, is_multipart, multipart_error, read_limited, upload_body_limit,
};
use crate::client::Client;
use crate::comments;
use crate::edges::MediaUrls;
use crate::error::ApiError;
use crate::notifications;
use crate::people;
use crate::post_deletion;
use crate::service;
use crate::state::AppState;
use crate::viewer::{Authenticated, Viewer};

/// The OpenAPI document describing this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Routes of the JSON API (to be nested under `/api/v1`); `upload_limit` bounds the
/// body of `POST /posts` (photos), the server-wide limit every other body.
pub fn routes(upload_limit: usize) -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/users", post(signup))
        .route("/users/me", get(people::me).patch(people::edit_me))
        .route("/users/me/avatar", put(avatars::put_handler).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/users/{username}", get(get_user))
        .route("/users/{username}/follow", put(follow).delete(unfollow))
        .route("/users/{username}/posts", get(user_posts))
        .route("/users/{username}/followers", get(people::followers))
        .route("/users/{username}/following", get(people::following))
        .route("/sessions", post(login))
        .route("/sessions/current", axum::routing::delete(logout))
        .route("/posts", post(create_post).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/posts/{id}", get(get_post).delete(post_deletion::delete_handler))
        .route("/posts/{id}/like", put(like).delete(unlike))
        .route("/posts/{id}/comments", get(comments::list_handler).post(comments::create_handler))
        .route("/comments/{id}", axum::routing::delete(comments::delete_handler))
        .route("/feed", get(feed))
        .route("/search/users", get(crate::directory::search_handler))
        .route("/suggestions", get(crate::directory::suggestions_handler))
        .route("/explore", get(crate::directory::explore_handler))
        .route("/notifications", get(notifications::list))
        .route("/notifications/unread", get(notifications::unread))
        .route("/notifications/read", post(notifications::read))
        .fallback(|| async { ApiError::NotFound("no such API route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

/// A JSON body whose every rejection is an [`ApiError`].
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    /// The body must be declared JSON and be a JSON object: serde would otherwise
    /// read a struct from an array, field by position (`["name","password"]`).
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType("expected Content-Type: application/json".into()));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::bad_request("invalid_body", e.body_text())
            }
        })?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(ApiError::bad_request(
                "invalid_body",
                "the body must be a JSON object, not an array",
            ));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Whether the request says its body is JSON: `application/json`, or an
/// `application/*+json` type, parameters ignored (what axum's `Json` accepts).
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Path parameters whose every rejection (a segment that is not UTF-8 once
/// percent-decoded, or does not parse as `T`) is an [`ApiError`] (400 `invalid_path`).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(r: PathRejection) -> ApiError {
    match r {
        PathRejection::FailedToDeserializePathParams(e) => {
            ApiError::bad_request("invalid_path", e.body_text())
        }
        // No parameters where the route has some: a routing bug, not the client's.
        other => ApiError::Internal { reason: other.body_text() },
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => ApiError::bad_request("invalid_body", e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("invalid_json", e.body_text()),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

/// `limit` and `cursor` of paged reads.
#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    /// Page size.
    limit: Option<String>,
    /// Opaque position from a previous page.
    cursor: Option<String>,
}

pub(crate) fn page_params(
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<(Option<data::PostId>, usize), ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    Ok((service::parse_cursor(q.cursor.as_deref())?, service::parse_limit(q.limit.as_deref())?))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignupBody {
    username: String,
    password: String,
    display_name: Option<String>,
}

async fn signup(
    State(state): State<AppState>,
    client: Client,
    ApiJson(body): ApiJson<SignupBody>,
) -> Result<Response, ApiError> {
    let display_name = body.display_name.as_deref();
    let user = service::signup(&state, &body.username, body.password, display_name, client).await?;
    let location = format!("/api/v1/users/{}", user.username);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(user)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let device = auth::device_token(&headers);
    let done = service::login(&state, &body.username, body.password, client, device.as_deref()).await?;
    let cookies = auth::login_cookies(&state, &done);
    let body = serde_json::json!({ "token": done.token, "user": done.user });
    Ok((StatusCode::CREATED, AppendHeaders(cookies), Json(body)).into_response())
}

async fn logout(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
) -> Result<Response, ApiError> {
    service::logout(&state, &session.token).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::clear_session_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

async fn get_user(
    State(state): State<AppState>,
    Viewer(viewer): Viewer,
    media: MediaUrls,
    ApiPath(username): ApiPath<String>,
) -> Result<Response, ApiError> {
    let user = service::profile(&state, &media, &username, viewer.map(|s| s.user_id)).await?;
    Ok(Json(user).into_response())
}

async fn follow(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    ApiPath(username): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(service::set_follow(&state, s.user_id, &username, true).await?).into_response())
}

async fn unfollow(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    ApiPath(username): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(service::set_follow(&state, s.user_id, &username, false).await?).into_response())
}

async fn user_posts(
    State(state): State<AppState>,
    Viewer(viewer): Viewer,
    headers: HeaderMap,
    media: MediaUrls,
    ApiPath(username): ApiPath<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (cursor, limit) = page_params(query)?;
    let viewer = viewer.map(|s| s.user_id);
    let source =
        if asks_no_cache(&headers) { service::PageSource::Shard } else { service::PageSource::Cache };
    let page = service::user_posts(&state, &media, &username, viewer, source, cursor, limit).await?;
    Ok(Json(page).into_response())
}

/// Whether the request's `Cache-Control` has the `no-cache` directive.
fn asks_no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    caption: String,
}

/// Read `request`'s body, refusing it (413) as soon as it is declared or grows
/// larger than `limit` bytes, and hand the request back with the body in memory.
async fn limit_body(request: Request, limit: usize) -> Result<Request, ApiError> {
    if content_length(request.headers()).is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge);
    }
    let (parts, body) = request.into_parts();
    let bytes = read_limited(body, limit).await.map_err(|e| match e {
        ReadError::TooLarge => ApiError::TooLarge,
        ReadError::Unreadable(e) => ApiError::bad_request("invalid_body", format!("reading the body: {e}")),
    })?;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// `POST /posts`: a JSON caption (201, ready at once), or multipart with a `photo`
/// part and an optional `caption` (202, processed by a worker).
async fn create_post(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    media: MediaUrls,
    request: Request,
) -> Result<Response, ApiError> {
    if !is_multipart(request.headers()) {
        // This route's body limit is the upload's; a JSON body gets the server-wide
        // one, whether its length is declared or not (chunked).
        let request = limit_body(request, state.config().http.max_body_bytes).await?;
        let ApiJson(body) = ApiJson::<PostBody>::from_request(request, &state).await?;
        let post = service::create_post(&state, s.user_id, &body.caption).await?;
        let location = format!("/api/v1/posts/{}", post.id);
        return Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(post)).into_response());
    }
    // Refuse an oversized upload from its declared length, before reading it.
    if content_length(request.headers()).is_some_and(|n| n > upload_body_limit(&state) as u64) {
        return Err(ApiError::TooLarge);
    }
    let mut multipart = Multipart::from_request(request, &state).await.map_err(multipart_error)?;
    let upload = read_upload(&mut multipart, state.config().media.max_upload_bytes).await?;
    let Some(photo) = upload.photo else {
        return Err(ApiError::bad_request("missing_photo", "a multipart post needs a `photo` part"));
    };
    let post =
        service::create_photo_post(&state, &media, s.user_id, upload.caption.as_deref(), photo).await?;
    let location = format!("/api/v1/posts/{}", post.id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(post)).into_response())
}

/// The parts of a photo upload.
#[derive(Debug, Default)]
pub struct Upload {
    /// The photo's bytes.
    pub photo: Option<Vec<u8>>,
    /// The caption.
    pub caption: Option<String>,
    /// Any other text fields (the HTML form's `csrf`).
    pub other: Vec<(String, String)>,
}

/// Read a multipart upload, refusing a photo over `max_photo` bytes as soon as it
/// grows past it, and text fields over 16 KiB. `allowed_text` names the text fields
/// besides `caption` that are accepted.
pub async fn read_upload_with(
    multipart: &mut Multipart,
    max_photo: usize,
    allowed_text: &[&str],
) -> Result<Upload, ApiError> {
    const MAX_TEXT: usize = 16 * 1024;
    let mut upload = Upload::default();
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        let limit = match name.as_str() {
            "photo" if upload.photo.is_none() => max_photo,
            "caption" if upload.caption.is_none() => MAX_TEXT,
            n if allowed_text.contains(&n) => MAX_TEXT,
            "photo" | "caption" => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    format!("the part `{name}` appears twice"),
                ));
            }
            _ => return Err(ApiError::bad_request("invalid_body", format!("unknown part `{name}`"))),
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            if bytes.len() + chunk.len() > limit {
                return Err(if name == "photo" {
                    ApiError::TooLarge
                } else {
                    ApiError::invalid("invalid_caption", format!("`{name}` is too long"))
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if name == "photo" {
            upload.photo = Some(bytes);
        } else {
            let text = String::from_utf8(bytes)
                .map_err(|_| ApiError::bad_request("invalid_body", format!("`{name}` is not UTF-8 text")))?;
            if name == "caption" {
                upload.caption = Some(text);
            } else {
                upload.other.push((name, text));
            }
        }
    }
    Ok(upload)
}

async fn read_upload(multipart: &mut Multipart, max_photo: usize) -> Result<Upload, ApiError> {
    read_upload_with(multipart, max_photo, &[]).await
}

async fn get_post(
    State(state): State<AppState>,
    Viewer(viewer): Viewer,
    media: MediaUrls,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = service::parse_post_id(&id)?;
    Ok(Json(service::post(&state, &media, id, viewer.map(|s| s.user_id)).await?).into_response())
}

async fn like(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = service::parse_post_id(&id)?;
    Ok(Json(service::set_like(&state, s.user_id, id, true).await?).into_response())
}

async fn unlike(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = service::parse_post_id(&id)?;
    Ok(Json(service::set_like(&state, s.user_id, id, false).await?).into_response())
}

async fn feed(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    media: MediaUrls,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (cursor, limit) = page_params(query)?;
    Ok(Json(service::home_feed(&state, &media, s.user_id, cursor, limit).await?).into_response())
}
