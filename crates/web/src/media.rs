//! Photos at the origin: uploads into the object store, and `/media/{key}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// `Cache-Control` of content-addressed objects: the URL changes when the content
/// does, so caches (browsers, the CDN) may keep them forever.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// `GET /media/{key}`: an object by its content address.
pub async fn serve(State(state): State<AppState>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    // A malformed key names nothing: 404, and never a path on disk.
    let Ok(key) = media::ObjectKey::parse(&key) else {
        return ApiError::NotFound("no such photo").into_response();
    };
    let etag = format!("\"{}\"", key.hash_hex());
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(header::CACHE_CONTROL, IMMUTABLE)]).into_response();
    }
    let store = state.store().clone();
    let lookup = key.clone();
    let bytes = match tokio::task::spawn_blocking(move || store.get(&lookup)).await {
        Ok(Ok(Some(bytes))) => bytes,
        Ok(Ok(None)) => return ApiError::NotFound("no such photo").into_response(),
        Ok(Err(e)) => return ApiError::Internal { reason: format!("object store: {e}") }.into_response(),
        Err(e) => return ApiError::Internal { reason: e.to_string() }.into_response(),
    };
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(key.content_type()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    response
}

/// Map a refused upload to its HTTP error.
pub fn refused(e: media::MediaError) -> ApiError {
    use media::MediaError as M;
    match e {
        M::Empty => ApiError::invalid("empty_upload", e.to_string()),
        M::TooLarge { .. } => ApiError::TooLarge,
        M::UnsupportedFormat { .. } => {
            ApiError::UnsupportedMediaType(format!("{e}; upload a JPEG, PNG or WebP"))
        }
        M::TooManyPixels { .. } => ApiError::invalid("too_many_pixels", e.to_string()),
        M::Corrupt(_) => ApiError::invalid("corrupt_image", e.to_string()),
        M::Encode(reason) => ApiError::Internal { reason },
    }
}

/// Validate and normalize an upload, then store the original. Nothing is stored if
/// the upload is refused.
pub async fn store_upload(state: &AppState, bytes: Vec<u8>) -> Result<data::StoredImage, ApiError> {
    let limits = media::Limits {
        max_bytes: state.config().media.max_upload_bytes,
        max_pixels: state.config().media.max_pixels,
        ..media::Limits::default()
    };
    let store: Arc<dyn media::ObjectStore> = state.store().clone();
    tokio::task::spawn_blocking(move || {
        let normalized = media::normalize(&bytes, &limits).map_err(refused)?;
        let key = store
            .put(&normalized.bytes, normalized.format)
            .map_err(|e| ApiError::Unavailable { reason: format!("object store: {e}") })?;
        Ok(data::StoredImage {
            key: key.as_str().to_owned(),
            width: normalized.width,
            height: normalized.height,
        })
    })
    .await
    .map_err(|e| ApiError::Internal { reason: e.to_string() })?
}
