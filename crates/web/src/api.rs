//! The JSON API under `/api/v1`.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::auth::{self, Authenticated, Viewer};
use crate::error::ApiError;
use crate::service;
use crate::state::AppState;

/// The OpenAPI document describing this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Routes of the JSON API (to be nested under `/api/v1`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/users", post(signup))
        .route("/users/{username}", get(get_user))
        .route("/users/{username}/follow", put(follow).delete(unfollow))
        .route("/users/{username}/posts", get(user_posts))
        .route("/sessions", post(login))
        .route("/sessions/current", axum::routing::delete(logout))
        .route("/posts", post(create_post))
        .route("/posts/{id}", get(get_post))
        .route("/posts/{id}/like", put(like).delete(unlike))
        .route("/feed", get(feed))
        .fallback(|| async { ApiError::NotFound("no such API route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

/// A JSON body whose every rejection is an [`ApiError`].
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
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
struct PageQuery {
    /// Page size.
    limit: Option<String>,
    /// Opaque position from a previous page.
    cursor: Option<String>,
}

fn page_params(
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
    ApiJson(body): ApiJson<SignupBody>,
) -> Result<Response, ApiError> {
    let user = service::signup(&state, &body.username, body.password, body.display_name.as_deref()).await?;
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
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let (token, user) = service::login(&state, &body.username, body.password).await?;
    let cfg = &state.config().sessions;
    let cookie = auth::session_cookie(&token, state.sessions().ttl(), cfg.secure_cookies);
    let body = serde_json::json!({ "token": token, "user": user });
    Ok((StatusCode::CREATED, [(header::SET_COOKIE, cookie)], Json(body)).into_response())
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
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    let user = service::profile(&state, &username, viewer.map(|s| s.user_id)).await?;
    Ok(Json(user).into_response())
}

async fn follow(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(service::set_follow(&state, s.user_id, &username, true).await?).into_response())
}

async fn unfollow(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(service::set_follow(&state, s.user_id, &username, false).await?).into_response())
}

async fn user_posts(
    State(state): State<AppState>,
    Path(username): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (cursor, limit) = page_params(query)?;
    Ok(Json(service::user_posts(&state, &username, cursor, limit).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    caption: String,
}

async fn create_post(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    ApiJson(body): ApiJson<PostBody>,
) -> Result<Response, ApiError> {
    let post = service::create_post(&state, s.user_id, &body.caption).await?;
    let location = format!("/api/v1/posts/{}", post.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(post)).into_response())
}

async fn get_post(
    State(state): State<AppState>,
    Viewer(viewer): Viewer,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = service::parse_post_id(&id)?;
    Ok(Json(service::post(&state, id, viewer.map(|s| s.user_id)).await?).into_response())
}

async fn like(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = service::parse_post_id(&id)?;
    Ok(Json(service::set_like(&state, s.user_id, id, true).await?).into_response())
}

async fn unlike(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = service::parse_post_id(&id)?;
    Ok(Json(service::set_like(&state, s.user_id, id, false).await?).into_response())
}

async fn feed(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (cursor, limit) = page_params(query)?;
    Ok(Json(service::home_feed(&state, s.user_id, cursor, limit).await?).into_response())
}
