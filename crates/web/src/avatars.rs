//! Profile photos: `PUT /api/v1/users/me/avatar` (multipart, a `photo` part) and
//! the settings page's form. The upload goes through the photo posts' pipeline:
//! validated and normalized here (a refused one stores nothing), stored, recorded
//! as the avatar with its `avatar` job, which makes the thumbnails and removes
//! the replaced avatar's objects once nothing names them.

use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::read_upload_with;
use crate::body::{content_length, is_multipart, multipart_error, upload_body_limit};
use crate::edges::MediaUrls;
use crate::error::ApiError;
use crate::service::{self, PhotoView, UserView};
use crate::state::AppState;
use crate::viewer::Authenticated;
use data::DataError;

/// Make `photo` (an upload's bytes) `user_id`'s avatar; the profile as it now is.
pub async fn set_avatar(
    state: &AppState,
    media: &MediaUrls,
    user_id: i64,
    photo: Vec<u8>,
) -> Result<UserView, ApiError> {
    let original = crate::media::store_upload(state, photo).await?;
    let max_attempts = state.config().media.max_attempts;
    state.data().set_avatar(user_id, original, max_attempts).await.map_err(|e| match e {
        DataError::NotFound => ApiError::Unauthenticated,
        e => e.into(),
    })?;
    service::invalidate_profile(state, user_id).await;
    let user = service::profile_by_id(state, user_id).await?;
    tracing::info!(user_id, "avatar accepted");
    Ok(with_avatar(service::user_view(&user, None), &user, media))
}

/// `view` with `user`'s avatar, its URLs chosen by `media`.
pub fn with_avatar(mut view: UserView, user: &data::UserRecord, media: &MediaUrls) -> UserView {
    view.avatar = user.avatar.as_ref().map(|p| service::photo_view(media, p));
    view
}

/// The image a page shows for an avatar: the smallest thumbnail at least
/// `side` pixels on its short side, else the largest, else the original.
pub fn avatar_image(avatar: &PhotoView, side: u32) -> &service::ImageView {
    avatar
        .thumbnails
        .iter()
        .find(|t| t.width.min(t.height) >= side)
        .or(avatar.thumbnails.last())
        .unwrap_or(&avatar.original)
}

/// `PUT /api/v1/users/me/avatar`: 202 with the profile (thumbnails to come).
pub(crate) async fn put_handler(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    media: MediaUrls,
    request: Request,
) -> Result<Response, ApiError> {
    if !is_multipart(request.headers()) {
        return Err(ApiError::UnsupportedMediaType(
            "expected multipart/form-data with a `photo` part".into(),
        ));
    }
    if content_length(request.headers()).is_some_and(|n| n > upload_body_limit(&state) as u64) {
        return Err(ApiError::TooLarge);
    }
    let mut multipart = Multipart::from_request(request, &state).await.map_err(multipart_error)?;
    let upload = read_upload_with(&mut multipart, state.config().media.max_upload_bytes, &[]).await?;
    if upload.caption.is_some() {
        return Err(ApiError::bad_request("invalid_body", "an avatar takes a `photo` part only"));
    }
    let Some(photo) = upload.photo else {
        return Err(ApiError::bad_request("missing_photo", "the upload needs a `photo` part"));
    };
    let user = set_avatar(&state, &media, s.user_id, photo).await?;
    Ok((StatusCode::ACCEPTED, Json(user)).into_response())
}
