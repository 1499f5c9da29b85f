//! The HTTP client to the app's public API: sending a request and classifying its
//! outcome into a [`Failure`], and the session calls (sign up, log in) the bench
//! and the checker make.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::dns::{DnsMode, RegionClient, Traffic};
use super::error::BenchError;
use super::failure::Failure;

/// An HTTP client with the API calls the bench and the checker make.
pub(crate) struct Http {
    /// The pooled client every request goes through (timeouts set, redirects off),
    /// when the targets are addresses.
    client: reqwest::Client,
    /// In DNS mode, one client per client region (entry `i` is region `i`'s).
    regional: Vec<RegionClient>,
    /// In DNS mode, which DC answered, per second.
    pub(crate) traffic: Option<Arc<Traffic>>,
}

/// The header that carries the operator's token past the web tier's per-address
/// abuse limits (web's `abuse.bypass_token`): the generator signs up and logs in
/// thousands of users from one address.
pub const BYPASS_HEADER: &str = "x-bypass-limits";

impl Http {
    /// Clients with `timeout`, trusting `roots` beside their built-in ones (for
    /// HTTPS); in DNS mode (`dns`), one per client region. With `bypass`, every
    /// request carries it in [`BYPASS_HEADER`].
    pub(crate) fn new(
        timeout: Duration,
        dns: Option<&DnsMode>,
        roots: &[reqwest::Certificate],
        bypass: Option<&str>,
    ) -> Result<Http, BenchError> {
        let roots: Arc<[reqwest::Certificate]> = roots.into();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = bypass {
            let value = reqwest::header::HeaderValue::from_str(token)
                .map_err(|_| BenchError::Invalid("the bypass token is not a header value".into()))?;
            headers.insert(BYPASS_HEADER, value);
        }
        let builder = move || {
            let builder = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(4096)
                .default_headers(headers.clone());
            roots.iter().cloned().fold(builder, reqwest::ClientBuilder::add_root_certificate)
        };
        let client =
            builder().build().map_err(|e| BenchError::Setup(format!("building the HTTP client: {e}")))?;
        let (regional, traffic) = match dns {
            Some(mode) => (
                mode.regions
                    .iter()
                    .map(|r| RegionClient::new(mode, r, builder.clone()))
                    .collect::<Result<_, _>>()?,
                Some(Arc::new(Traffic::new(mode.dcs.clone()))),
            ),
            None => (Vec::new(), None),
        };
        Ok(Http { client, regional, traffic })
    }

    /// One client, for addresses.
    pub(crate) fn with_client(client: reqwest::Client) -> Http {
        Http { client, regional: Vec::new(), traffic: None }
    }

    /// The client of entry `i` (user `i`'s entry is `i mod` the entries): in DNS
    /// mode its region's, else the one client.
    pub(crate) fn client(&self, i: u64) -> reqwest::Client {
        if self.regional.is_empty() {
            self.client.clone()
        } else {
            self.regional[(i % self.regional.len() as u64) as usize].get()
        }
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
        if let Some(traffic) = &self.traffic {
            traffic.count(resp.remote_addr());
        }
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

    /// Log `username` in through `target` (entry `i`); its session token.
    pub(crate) async fn login(
        &self,
        (i, target): (u64, &str),
        username: &str,
        password: &str,
    ) -> Result<String, Failure> {
        let v = self
            .json(
                self.client(i)
                    .post(format!("{target}/api/v1/sessions"))
                    .json(&serde_json::json!({ "username": username, "password": password })),
            )
            .await?;
        v["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Failure::BadBody("no token in the session".into()))
    }

    /// Sign `username` up through `target` (entry `i`); an existing account is fine.
    pub(crate) async fn signup(
        &self,
        (i, target): (u64, &str),
        username: &str,
        password: &str,
    ) -> Result<(), Failure> {
        let req = self
            .client(i)
            .post(format!("{target}/api/v1/users"))
            .json(&serde_json::json!({ "username": username, "password": password }));
        match self.send(req).await {
            Ok(_) | Err(Failure::Status(StatusCode::CONFLICT)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
