//! Every failure a request can meet, and the one place it becomes an HTTP response.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use data::DataError;

/// A request failure. API routes render it as `{"error":{"code","message"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad JSON, bad query, bad path parameter).
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// What is wrong, for people.
        message: String,
    },
    /// The request is well-formed but a value breaks a rule.
    #[error("{message}")]
    Invalid {
        /// Machine-readable code.
        code: &'static str,
        /// What is wrong, for people.
        message: String,
    },
    /// No valid session or token.
    #[error("authentication required")]
    Unauthenticated,
    /// Wrong username or password.
    #[error("wrong username or password")]
    BadCredentials,
    /// A form lacked a valid CSRF token.
    #[error("the form expired or came from another site; reload the page and try again")]
    Csrf,
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(&'static str),
    /// The viewer may not do this to that (delete someone else's comment).
    #[error("{0}")]
    Forbidden(&'static str),
    /// The request conflicts with existing state.
    #[error("{message}")]
    Conflict {
        /// Machine-readable code.
        code: &'static str,
        /// What is wrong, for people.
        message: String,
    },
    /// The body is larger than allowed.
    #[error("request body too large")]
    TooLarge,
    /// The route exists but not with this method.
    #[error("this route does not accept that method")]
    MethodNotAllowed,
    /// The body is not of the expected media type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too many attempts (failed logins of one account or from one address,
    /// signups from one address): refused until the window ends.
    #[error("{} retry in {retry_after_secs} s", .limit.what())]
    TooManyAttempts {
        /// Which limit was reached.
        limit: Limit,
        /// Seconds until the window ends (`Retry-After`).
        retry_after_secs: u64,
    },
    /// A dependency is down or overloaded; the same request may succeed shortly.
    #[error("temporarily unavailable, retry shortly")]
    Unavailable {
        /// Why, for the log.
        reason: String,
    },
    /// A bug or an unexpected failure.
    #[error("internal error")]
    Internal {
        /// Why, for the log.
        reason: String,
    },
}

/// The abuse limits a request can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `passwords.max_failed_logins` of one account.
    AccountLogins,
    /// `abuse.failed_logins_per_addr` of one client address.
    AddressLogins,
    /// `abuse.signups_per_addr` of one client address.
    AddressSignups,
}

impl Limit {
    /// What was too many, for people.
    fn what(self) -> &'static str {
        match self {
            Limit::AccountLogins => "too many failed logins for this account;",
            Limit::AddressLogins => "too many failed logins from your address;",
            Limit::AddressSignups => "too many accounts made from your address;",
        }
    }
}

impl ApiError {
    /// Seconds after which the same request may succeed (`Retry-After`), if known.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::TooManyAttempts { retry_after_secs, .. } => Some(*retry_after_secs),
            ApiError::Unavailable { .. } => Some(1),
            _ => None,
        }
    }

    /// A malformed-request error.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest { code, message: message.into() }
    }

    /// A rule-breaking-value error.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid { code, message: message.into() }
    }

    /// The status and code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Invalid { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::BadCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            ApiError::Csrf => (StatusCode::FORBIDDEN, "csrf_failed"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::TooManyAttempts { limit: Limit::AddressSignups, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_signups")
            }
            ApiError::TooManyAttempts { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// Log server-side failures where they are turned into responses.
    fn log(&self) {
        match self {
            ApiError::Internal { reason } => tracing::error!(%reason, "request failed"),
            ApiError::Unavailable { reason } => tracing::warn!(%reason, "dependency unavailable"),
            _ => {}
        }
    }
}

impl From<DataError> for ApiError {
    fn from(e: DataError) -> ApiError {
        ApiError::from(&e)
    }
}

impl From<&DataError> for ApiError {
    fn from(e: &DataError) -> ApiError {
        match e {
            DataError::NotFound => ApiError::NotFound("not found"),
            DataError::Conflict(m) => ApiError::Conflict { code: "conflict", message: (*m).to_owned() },
            e if e.is_retryable() => ApiError::Unavailable { reason: e.to_string() },
            e => ApiError::Internal { reason: e.to_string() },
        }
    }
}

impl From<Arc<DataError>> for ApiError {
    fn from(e: Arc<DataError>) -> ApiError {
        ApiError::from(&*e)
    }
}

impl From<cache::RedisError> for ApiError {
    fn from(e: cache::RedisError) -> ApiError {
        ApiError::Unavailable { reason: format!("redis: {e}") }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({ "error": { "code": code, "message": self.to_string() } });
        let mut response = (status, Json(body)).into_response();
        set_retry_after(&mut response, &self);
        response
    }
}

/// `Retry-After` on `response` when `error` knows when to retry.
pub fn set_retry_after(response: &mut Response, error: &ApiError) {
    if let Some(secs) = error.retry_after_secs() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}
