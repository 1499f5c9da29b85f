//! Passwords, cookies and CSRF tokens (the session store is [`crate::sessions`]).

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "sid";
/// Name of the CSRF cookie and form field.
pub const CSRF_COOKIE: &str = "csrf";

/// A fresh random 256-bit token, URL-safe base64 (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `s` has the shape of a [`random_token`]; anything else is refused unseen.
fn token_shaped(s: &str) -> bool {
    s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// argon2id hashing with the configured cost.
#[derive(Clone)]
pub struct Passwords {
    /// Cost parameters.
    params: Params,
    /// A hash of a random password, verified against when the user does not exist,
    /// so a login for an unknown name takes as long as one with a wrong password.
    dummy: String,
    /// One permit per hash computed at once.
    running: Arc<Semaphore>,
    /// One permit per hash computed or waiting: none left, the request is refused.
    admitted: Arc<Semaphore>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords")
    }
}

impl Passwords {
    /// Hashing with this cost (already validated by the config).
    pub fn new(config: &crate::config::PasswordConfig) -> Result<Passwords, argon2::Error> {
        let params = Params::new(config.memory_kib, config.iterations, config.parallelism, None)?;
        let dummy = hash_with(&params, &random_token()).map_err(|_| argon2::Error::AlgorithmInvalid)?;
        let running = match config.max_concurrent {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        Ok(Passwords {
            params,
            dummy,
            running: Arc::new(Semaphore::new(running)),
            admitted: Arc::new(Semaphore::new(running + config.max_waiting)),
        })
    }

    /// Run `work` (argon2id: tens of milliseconds of CPU) on a blocking thread,
    /// at most `max_concurrent` at once; refused at once (503) when as many are
    /// already waiting as allowed.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let Ok(_admitted) = self.admitted.clone().try_acquire_owned() else {
            return Err(ApiError::Unavailable { reason: "password hashing saturated".into() });
        };
        let _running =
            self.running.acquire().await.map_err(|e| ApiError::Internal { reason: e.to_string() })?;
        tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::Internal { reason: e.to_string() })
    }

    /// Hash a password.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let params = self.params.clone();
        self.run(move || hash_with(&params, &password))
            .await?
            .map_err(|e| ApiError::Internal { reason: format!("hashing: {e}") })
    }

    /// Whether `password` matches `hash`; with no hash, spend the same time and say
    /// no. An error only when hashing is saturated.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        let (hash, real) = match hash {
            Some(h) => (h, true),
            None => (self.dummy.clone(), false),
        };
        let params = self.params.clone();
        let ok = self
            .run(move || {
                let Ok(parsed) = PasswordHash::new(&hash) else { return false };
                Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .await?;
        Ok(ok && real)
    }
}

fn hash_with(params: &Params, password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// A cookie's value from the request headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// `Set-Cookie` value starting a session.
pub fn session_cookie(token: &str, ttl: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{secure}", ttl.as_secs())
}

/// `Set-Cookie` value ending a session.
pub fn clear_session_cookie() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0")
}

/// The request's CSRF token (double-submit cookie): the one in its cookie, or a new
/// one that the response must set.
#[derive(Debug, Clone)]
pub struct CsrfToken {
    /// The token to embed in forms.
    pub token: String,
    /// Whether the response must set the cookie.
    pub fresh: bool,
}

impl CsrfToken {
    /// `Set-Cookie` value for a fresh token; `secure` (served over HTTPS only) as
    /// the session cookie's.
    pub fn set_cookie(&self, secure: bool) -> Option<String> {
        let secure = if secure { "; Secure" } else { "" };
        self.fresh.then(|| format!("{CSRF_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{secure}", self.token))
    }

    /// Check a submitted form token against the cookie of the same request.
    pub fn verify(headers: &HeaderMap, submitted: &str) -> Result<(), ApiError> {
        let Some(expected) = cookie(headers, CSRF_COOKIE).filter(|c| token_shaped(c)) else {
            return Err(ApiError::Csrf);
        };
        if bool::from(expected.as_bytes().ct_eq(submitted.as_bytes())) { Ok(()) } else { Err(ApiError::Csrf) }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CsrfToken {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(match cookie(&parts.headers, CSRF_COOKIE).filter(|c| token_shaped(c)) {
            Some(token) => CsrfToken { token, fresh: false },
            None => CsrfToken { token: random_token(), fresh: true },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_cookie_is_secure_when_sessions_are_and_set_only_when_fresh() {
        let fresh = CsrfToken { token: "t".into(), fresh: true };
        assert_eq!(fresh.set_cookie(false).unwrap(), "csrf=t; HttpOnly; SameSite=Strict; Path=/");
        assert!(fresh.set_cookie(true).unwrap().ends_with("; Secure"));
        assert_eq!(CsrfToken { token: "t".into(), fresh: false }.set_cookie(true), None);
    }

    #[test]
    fn tokens_are_256_bit_and_shaped() {
        let a = random_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert!(token_shaped(&a));
        assert_ne!(a, random_token());
        assert!(!token_shaped("short"));
        assert!(!token_shaped(&format!("{}!", &a[..42])));
    }

    fn cheap(max_concurrent: usize, max_waiting: usize) -> Passwords {
        let config = crate::config::PasswordConfig {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            max_concurrent,
            max_waiting,
            ..Default::default()
        };
        Passwords::new(&config).unwrap()
    }

    #[tokio::test]
    async fn passwords_hash_with_argon2id_and_verify() {
        let p = cheap(0, 64);
        let h = p.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(p.verify("correct horse".into(), Some(h.clone())).await.unwrap());
        assert!(!p.verify("wrong".into(), Some(h)).await.unwrap());
        assert!(!p.verify("correct horse".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn hashing_beyond_its_bound_is_refused_at_once_and_admitted_again_after() {
        // One at a time, none waiting: a second hash while one runs is refused.
        let p = cheap(1, 0);
        let (first, second) = tokio::join!(p.hash("one".into()), p.hash("two".into()));
        assert!(first.is_ok());
        assert!(matches!(second, Err(ApiError::Unavailable { .. })), "{second:?}");
        assert!(matches!(p.verify("x".into(), None).await, Ok(false)), "admitted again once the first ended");
        // One waiting allowed: both are computed.
        let p = cheap(1, 1);
        let (first, second) = tokio::join!(p.hash("one".into()), p.hash("two".into()));
        assert!(first.is_ok() && second.is_ok());
    }

    #[test]
    fn csrf_needs_matching_cookie() {
        let t = random_token();
        let mut h = HeaderMap::new();
        assert!(CsrfToken::verify(&h, &t).is_err());
        h.insert(header::COOKIE, format!("a=b; csrf={t}").parse().unwrap());
        assert!(CsrfToken::verify(&h, &t).is_ok());
        assert!(CsrfToken::verify(&h, &random_token()).is_err());
    }
}
