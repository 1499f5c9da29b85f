//! Request bodies with limits, shared by the JSON API and the HTML pages: the
//! declared length, the upload route's limit, recognizing a multipart body, reading
//! a whole body up to a limit, and mapping multipart failures to [`ApiError`].

use axum::body::Body;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use futures::StreamExt as _;

use crate::error::ApiError;
use crate::state::AppState;

/// Largest request body of a post upload (`POST /api/v1/posts`, `POST /upload`): a
/// photo and a caption with room for the multipart framing.
pub fn upload_body_limit(state: &AppState) -> usize {
    state.config().media.max_upload_bytes + 64 * 1024
}

/// The declared length of a request body, if any.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Whether the body is `multipart/form-data` (the media type alone, any case,
/// parameters ignored).
pub fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    /// It grew past the limit (413); the rest is not read.
    TooLarge,
    /// The connection failed while reading it.
    Unreadable(axum::Error),
}

/// Read a whole body, refusing it as soon as it grows past `limit` bytes.
pub async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ReadError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Unreadable)?;
        if bytes.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(bytes))
}

/// Map a multipart parsing failure: 413 where axum says the body is too large,
/// else 400 `invalid_body`.
pub fn multipart_error(e: impl std::fmt::Display + MultipartStatus) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge
    } else {
        ApiError::bad_request("invalid_body", e.to_string())
    }
}

/// The status axum assigns to a multipart failure.
pub trait MultipartStatus {
    /// That status.
    fn status(&self) -> StatusCode;
}

impl MultipartStatus for axum::extract::multipart::MultipartError {
    fn status(&self) -> StatusCode {
        axum::extract::multipart::MultipartError::status(self)
    }
}

impl MultipartStatus for axum::extract::multipart::MultipartRejection {
    fn status(&self) -> StatusCode {
        axum::extract::multipart::MultipartRejection::status(self)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn multipart_content_type_is_recognized() {
        let mut h = HeaderMap::new();
        assert!(!is_multipart(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("multipart/form-data; boundary=x"));
        assert!(is_multipart(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("Multipart/Form-Data;boundary=x"));
        assert!(is_multipart(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("multipart/mixed; boundary=x"));
        assert!(!is_multipart(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("multipart/form-dataX; boundary=x"));
        assert!(!is_multipart(&h));
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_its_limit_and_no_further() {
        let read = read_limited(Body::from(vec![7u8; 10]), 10).await;
        assert_eq!(read.expect("10 bytes fit a limit of 10").len(), 10);
        let read = read_limited(Body::from(vec![7u8; 11]), 10).await;
        assert!(matches!(read, Err(ReadError::TooLarge)), "{read:?}");
    }
}
