//! Why one request failed, and the kind it is counted under in the report.

use reqwest::StatusCode;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// Answered with a status other than 2xx.
    Status(StatusCode),
    /// No answer within the request timeout.
    Timeout,
    /// No connection could be made.
    Connect,
    /// The request failed otherwise (reset, malformed answer, ...).
    Request(String),
    /// A 2xx answer whose body was not what the API promises.
    BadBody(String),
}

impl Failure {
    /// Its kind in the report's `errors` maps.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            // A signed-in user's session not honoured: told apart from other 4xx.
            Failure::Status(StatusCode::UNAUTHORIZED) => "http_401",
            Failure::Status(s) if s.is_client_error() => "http_4xx",
            Failure::Status(s) if s.is_server_error() => "http_5xx",
            Failure::Status(_) => "http_other",
            Failure::Timeout => "timeout",
            Failure::Connect => "connect",
            Failure::Request(_) => "request",
            Failure::BadBody(_) => "bad_body",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(s) => write!(f, "HTTP {s}"),
            Failure::Timeout => f.write_str("timed out"),
            Failure::Connect => f.write_str("could not connect"),
            Failure::Request(e) => write!(f, "request failed: {e}"),
            Failure::BadBody(e) => write!(f, "unexpected answer: {e}"),
        }
    }
}
