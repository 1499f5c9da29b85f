//! The HTTP client to the app's public API: sending a request and classifying its
//! outcome into a [`Failure`], and the session calls (sign up, log in) the bench
//! and the checker make.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::error::BenchError;
use super::failure::Failure;

/// An HTTP client with the API calls the bench and the checker make.
pub(crate) struct Http {
    /// The pooled client every request goes through (timeouts set, redirects off).
    pub(crate) client: reqwest::Client,
}

impl Http {
    pub(crate) fn new(timeout: Duration) -> Result<Http, BenchError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(4096)
            .build()
            .map_err(|e| BenchError::Setup(format!("building the HTTP client: {e}")))?;
        Ok(Http { client })
    }

    /// Send, and return the body of a 2xx answer.
    pub(crate) async fn send(&self, req: reqwest::RequestBuilder) -> Result<Vec<u8>, Failure> {
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                Failure::Timeout
            } else if e.is_connect() {
                Failure::Connect
            } else {
                Failure::Request(e.to_string())
            }
        };
        let resp = req.send().await.map_err(classify)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(classify)?;
        if !status.is_success() {
            return Err(Failure::Status(status));
        }
        Ok(body.to_vec())
    }

    /// Send, and parse the body of a 2xx answer as JSON.
    pub(crate) async fn json(&self, req: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let body = self.send(req).await?;
        serde_json::from_slice(&body).map_err(|e| Failure::BadBody(e.to_string()))
    }

    /// Log `username` in through `target`; its session token.
    pub(crate) async fn login(
        &self,
        target: &str,
        username: &str,
        password: &str,
    ) -> Result<String, Failure> {
        let v = self
            .json(
                self.client
                    .post(format!("{target}/api/v1/sessions"))
                    .json(&serde_json::json!({ "username": username, "password": password })),
            )
            .await?;
        v["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Failure::BadBody("no token in the session".into()))
    }

    /// Sign `username` up through `target`; an existing account is fine.
    pub(crate) async fn signup(&self, target: &str, username: &str, password: &str) -> Result<(), Failure> {
        let req = self
            .client
            .post(format!("{target}/api/v1/users"))
            .json(&serde_json::json!({ "username": username, "password": password }));
        match self.send(req).await {
            Ok(_) | Err(Failure::Status(StatusCode::CONFLICT)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
