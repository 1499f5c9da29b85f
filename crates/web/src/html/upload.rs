//! The new-post page and `POST /upload`: the multipart form with a caption and an
//! optional photo, or a caption-only urlencoded form.
//!
//! The multipart form's CSRF token is a part of its own, and it must come before
//! the photo (browsers send fields in document order, and the form puts the token
//! first): it is checked as soon as it is read, and a photo arriving before a valid
//! token is refused (403) without being read. So a forged upload costs no photo
//! decoding and stores nothing.

use axum::extract::multipart::Field;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{new_post_form, size_label};
use super::{Ctx, HtmlError, LoggedIn, Me, csrf_checked_form, is_urlencoded_form};
use crate::auth::CsrfToken;
use crate::body::{
    ReadError, content_length, is_multipart, multipart_error, read_limited, upload_body_limit,
};
use crate::error::ApiError;
use crate::service;
use crate::state::AppState;

/// Longest `caption` part, in bytes: room for the longest caption the rules
/// allow, in any script.
const MAX_CAPTION_BYTES: usize = 16 * 1024;
/// Longest `csrf` part: a token is 43 characters; anything much longer is no token.
const MAX_TOKEN_BYTES: usize = 256;

/// The new-post page's body: the form, with `caption` kept and `error` shown.
fn form_page(state: &AppState, ctx: &Ctx, caption: &str, error: Option<&str>) -> Markup {
    html! {
        h1 { "New post" }
        (new_post_form(&ctx.csrf.token, caption, error, true, state.config().media.max_upload_bytes))
    }
}

pub(super) async fn upload_page(State(state): State<AppState>, LoggedIn { ctx, .. }: LoggedIn) -> Response {
    ctx.render(StatusCode::OK, "New post", form_page(&state, &ctx, "", None))
}

/// The caption-only form (urlencoded).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UploadForm {
    /// Checked before the form is deserialized.
    #[serde(rename = "csrf")]
    _csrf: String,
    caption: String,
}

/// `POST /upload`: publish a post and go to its page (303). A logged-out visitor
/// is sent to `/login` before the body is looked at.
pub(super) async fn upload(
    State(state): State<AppState>,
    LoggedIn { me, ctx }: LoggedIn,
    request: Request,
) -> Result<Response, HtmlError> {
    if is_multipart(request.headers()) {
        return multipart_upload(&state, &me, &ctx, request).await;
    }
    if !is_urlencoded_form(request.headers()) {
        return Err(ApiError::UnsupportedMediaType(
            "expected a form body (multipart/form-data or application/x-www-form-urlencoded)".into(),
        )
        .into());
    }
    // The route takes photo-sized bodies; a form without a photo gets the usual limit.
    let max = state.config().http.max_body_bytes;
    let (parts, body) = request.into_parts();
    if content_length(&parts.headers).is_some_and(|n| n > max as u64) {
        return Err(ApiError::TooLarge.into());
    }
    let body = read_limited(body, max).await.map_err(|e| match e {
        ReadError::TooLarge => ApiError::TooLarge,
        ReadError::Unreadable(_) => ApiError::bad_request("invalid_form", "the form could not be read"),
    })?;
    let form: UploadForm = csrf_checked_form(&parts.headers, body).await?;
    publish(&state, &me, &ctx, form.caption, None).await
}

/// Create the post (a photo post when there is a photo) and redirect to its page.
async fn publish(
    state: &AppState,
    me: &Me,
    ctx: &Ctx,
    caption: String,
    photo: Option<Vec<u8>>,
) -> Result<Response, HtmlError> {
    let created = match photo {
        Some(photo) => {
            service::create_photo_post(state, &state.edges().urls(false), me.id, Some(&caption), photo).await
        }
        None => service::create_post(state, me.id, &caption).await,
    };
    match created {
        Ok(p) => Ok(Redirect::to(&format!("/p/{}", p.id)).into_response()),
        Err(e) => refused(state, ctx, &caption, e),
    }
}

/// A refusal the author can fix (the caption, the photo's format, size or pixels)
/// re-renders the form with the message, the error's status and the caption
/// kept; anything else is an error page.
fn refused(state: &AppState, ctx: &Ctx, caption: &str, e: ApiError) -> Result<Response, HtmlError> {
    let message = match &e {
        ApiError::Invalid { .. } | ApiError::UnsupportedMediaType(_) => e.to_string(),
        ApiError::TooLarge => format!(
            "the photo is too large: photos are at most {}",
            size_label(state.config().media.max_upload_bytes)
        ),
        _ => return Err(e.into()),
    };
    let (status, _) = e.status_and_code();
    Ok(ctx.render(status, "New post", form_page(state, ctx, caption, Some(&message))))
}

/// The multipart form, as far as it has been read.
#[derive(Debug, Default)]
struct PhotoForm {
    /// A `csrf` part matched the CSRF cookie.
    verified: bool,
    /// The `caption` part.
    caption: Option<String>,
    /// A `photo` part was seen (even an empty one).
    photo_seen: bool,
    /// The photo's bytes; `None` when the file input was left empty.
    photo: Option<Vec<u8>>,
}

async fn multipart_upload(
    state: &AppState,
    me: &Me,
    ctx: &Ctx,
    request: Request,
) -> Result<Response, HtmlError> {
    // Refuse an oversized upload from its declared length, before reading any of it.
    if content_length(request.headers()).is_some_and(|n| n > upload_body_limit(state) as u64) {
        return refused(state, ctx, "", ApiError::TooLarge);
    }
    let headers = request.headers().clone();
    let mut multipart = Multipart::from_request(request, state).await.map_err(multipart_error)?;
    let mut form = PhotoForm::default();
    let read = read_form(&headers, &mut multipart, state.config().media.max_upload_bytes, &mut form).await;
    let caption = form.caption.take().unwrap_or_default();
    match read {
        Ok(()) => {}
        // Past the token, what the author can fix re-renders the form.
        Err(e) if form.verified => return refused(state, ctx, &caption, e),
        Err(e) => return Err(e.into()),
    }
    if form.photo.is_none() && caption.trim().is_empty() {
        let e = ApiError::invalid("empty_post", "write a caption or choose a photo");
        return refused(state, ctx, &caption, e);
    }
    publish(state, me, ctx, caption, form.photo).await
}

/// Read the multipart new-post form into `form`: `csrf` (checked at once, before
/// anything else but the caption is read), `caption`, `photo` (at most `max_photo`
/// bytes; an empty, unnamed file means none was chosen). Any part other than the
/// caption arriving before a valid token is a 403, unread; so is a form with no
/// token, or two.
async fn read_form(
    headers: &HeaderMap,
    multipart: &mut Multipart,
    max_photo: usize,
    form: &mut PhotoForm,
) -> Result<(), ApiError> {
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "csrf" => {
                if form.verified {
                    return Err(ApiError::Csrf);
                }
                let token = read_part(&mut field, MAX_TOKEN_BYTES, || ApiError::Csrf).await?;
                let token = String::from_utf8(token).map_err(|_| ApiError::Csrf)?;
                CsrfToken::verify(headers, &token)?;
                form.verified = true;
            }
            "caption" if form.caption.is_none() => {
                let verified = form.verified;
                let too_long = || {
                    if !verified {
                        return ApiError::Csrf;
                    }
                    let max = service::MAX_CAPTION;
                    ApiError::invalid("invalid_caption", format!("captions are at most {max} characters"))
                };
                let text = read_part(&mut field, MAX_CAPTION_BYTES, too_long).await?;
                let text = String::from_utf8(text).map_err(|_| {
                    if verified {
                        ApiError::bad_request("invalid_form", "the caption is not UTF-8 text")
                    } else {
                        ApiError::Csrf
                    }
                })?;
                form.caption = Some(text);
            }
            // Nothing else is read before the token has been checked.
            _ if !form.verified => return Err(ApiError::Csrf),
            "photo" if !form.photo_seen => {
                form.photo_seen = true;
                let unnamed = field.file_name().is_none_or(str::is_empty);
                let bytes = read_part(&mut field, max_photo, || ApiError::TooLarge).await?;
                // A file input left empty still sends its part: empty and unnamed.
                if !(bytes.is_empty() && unnamed) {
                    form.photo = Some(bytes);
                }
            }
            "caption" | "photo" => {
                return Err(ApiError::bad_request(
                    "invalid_form",
                    format!("the part `{name}` appears twice"),
                ));
            }
            _ => return Err(ApiError::bad_request("invalid_form", format!("unknown part `{name}`"))),
        }
    }
    if !form.verified {
        return Err(ApiError::Csrf);
    }
    Ok(())
}

/// A part's bytes, refused with `too_long()` as soon as they pass `limit`.
async fn read_part(
    field: &mut Field<'_>,
    limit: usize,
    too_long: impl FnOnce() -> ApiError,
) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > limit {
            return Err(too_long());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
