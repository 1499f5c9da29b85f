//! Passwords, cookies and CSRF tokens (the session store is [`crate::sessions`]).

use std::collections::VecDeque;
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
use tokio::sync::{Semaphore, oneshot};

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

/// Who a hash is computed for: it decides who goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// A login from a device known for its account: given the next free hashing
    /// thread before anyone else.
    KnownDevice,
    /// Every other login, and every signup.
    Other,
}

/// argon2id hashing with the configured cost, on a bounded set of threads.
#[derive(Clone)]
pub struct Passwords {
    /// Cost parameters.
    params: Params,
    /// A hash of a random password, verified against when the user does not exist,
    /// so a login for an unknown name takes as long as one with a wrong password.
    dummy: String,
    /// The hashing threads, handed out known devices first.
    threads: Arc<Threads>,
    /// Per lane, one permit per hash computed or waiting: none left, the request is
    /// refused (a full queue of guesses does not refuse a known device).
    admitted: [Arc<Semaphore>; 2],
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords")
    }
}

/// Threads for hashing, `max_concurrent` of them: a free one goes to whoever
/// asks; when none is free, the next one freed goes to the longest-waiting known
/// device, else to the longest-waiting other request. Nothing is kept idle for a
/// lane that is not asking.
struct Threads {
    /// Free threads, and the waiters of each lane ([`Lane`] as index), oldest first.
    state: std::sync::Mutex<(usize, [VecDeque<oneshot::Sender<Thread>>; 2])>,
}

/// A hashing thread held; given back (to the next waiter) when dropped.
struct Thread {
    /// Where it goes back to.
    threads: Arc<Threads>,
    /// False once handed to a waiter that had gone: nothing to give back then.
    held: bool,
}

impl Threads {
    fn new(n: usize) -> Arc<Threads> {
        Arc::new(Threads { state: std::sync::Mutex::new((n, Default::default())) })
    }

    /// A thread for `lane`, when it is this request's turn.
    async fn acquire(self: &Arc<Self>, lane: Lane) -> Thread {
        let waiting = {
            let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.0 > 0 {
                state.0 -= 1;
                return Thread { threads: self.clone(), held: true };
            }
            let (tx, rx) = oneshot::channel();
            state.1[lane as usize].push_back(tx);
            rx
        };
        // The sender lives in the queue until it hands a thread over.
        waiting.await.unwrap_or_else(|_| unreachable!("a waiter's sender is only dropped by sending"))
    }

    /// A thread is free: to the next waiter, known devices first.
    fn release(self: &Arc<Self>) {
        loop {
            let next = {
                let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let (free, queues) = &mut *state;
                match queues[Lane::KnownDevice as usize]
                    .pop_front()
                    .or_else(|| queues[Lane::Other as usize].pop_front())
                {
                    Some(tx) => tx,
                    None => {
                        *free += 1;
                        return;
                    }
                }
            };
            match next.send(Thread { threads: self.clone(), held: true }) {
                Ok(()) => return,
                // That waiter is gone (its request ended): the next one.
                Err(mut thread) => thread.held = false,
            }
        }
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        if self.held {
            self.threads.release();
        }
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
        let admitted = || Arc::new(Semaphore::new(running + config.max_waiting));
        Ok(Passwords { params, dummy, threads: Threads::new(running), admitted: [admitted(), admitted()] })
    }

    /// Run `work` (argon2id: tens of milliseconds of CPU) on a blocking thread,
    /// at most `max_concurrent` at once, known devices first; refused at once
    /// (503) when as many are already waiting in `lane` as allowed.
    async fn run<T: Send + 'static>(
        &self,
        lane: Lane,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let Ok(_admitted) = self.admitted[lane as usize].clone().try_acquire_owned() else {
            return Err(ApiError::Unavailable { reason: "password hashing saturated".into() });
        };
        let _thread = self.threads.acquire(lane).await;
        tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::Internal { reason: e.to_string() })
    }

    /// Hash a password (a signup's: [`Lane::Other`]).
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let params = self.params.clone();
        self.run(Lane::Other, move || hash_with(&params, &password))
            .await?
            .map_err(|e| ApiError::Internal { reason: format!("hashing: {e}") })
    }

    /// Whether `password` matches `hash`; with no hash, spend the same time and say
    /// no. An error only when `lane` is saturated.
    pub async fn verify(&self, password: String, hash: Option<String>, lane: Lane) -> Result<bool, ApiError> {
        let (hash, real) = match hash {
            Some(h) => (h, true),
            None => (self.dummy.clone(), false),
        };
        let params = self.params.clone();
        let ok = self
            .run(lane, move || {
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

/// Name of the known-device cookie (`abuse.known_device_secs`).
pub const DEVICE_COOKIE: &str = "did";

/// `Set-Cookie` value naming this device as known for the account that just
/// logged in from it.
pub fn device_cookie(token: &str, ttl: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{DEVICE_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", ttl.as_secs())
}

/// The `Set-Cookie` values a login answers with: the session, and the device
/// cookie when the device became known.
pub fn login_cookies(
    state: &crate::state::AppState,
    done: &crate::service::LoggedIn,
) -> impl Iterator<Item = (header::HeaderName, String)> + use<> {
    let secure = state.config().sessions.secure_cookies;
    let session = session_cookie(&done.token, state.sessions().ttl(), secure);
    let device_ttl = Duration::from_secs(state.config().abuse.known_device_secs);
    let device = done.device.as_deref().map(|d| device_cookie(d, device_ttl, secure));
    std::iter::once(session).chain(device).map(|c| (header::SET_COOKIE, c))
}

/// The request's known-device token, if it has one of the right shape.
pub fn device_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, DEVICE_COOKIE).filter(|t| token_shaped(t))
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
        assert!(p.verify("correct horse".into(), Some(h.clone()), Lane::Other).await.unwrap());
        assert!(!p.verify("wrong".into(), Some(h), Lane::KnownDevice).await.unwrap());
        assert!(!p.verify("correct horse".into(), None, Lane::Other).await.unwrap());
    }

    #[tokio::test]
    async fn hashing_beyond_its_bound_is_refused_at_once_and_admitted_again_after() {
        // One at a time, none waiting: a second hash while one runs is refused.
        let p = cheap(1, 0);
        let (first, second) = tokio::join!(p.hash("one".into()), p.hash("two".into()));
        assert!(first.is_ok());
        assert!(matches!(second, Err(ApiError::Unavailable { .. })), "{second:?}");
        assert!(
            matches!(p.verify("x".into(), None, Lane::Other).await, Ok(false)),
            "admitted again once the first ended"
        );
        // One waiting allowed: both are computed.
        let p = cheap(1, 1);
        let (first, second) = tokio::join!(p.hash("one".into()), p.hash("two".into()));
        assert!(first.is_ok() && second.is_ok());
    }

    #[tokio::test]
    async fn the_next_free_thread_goes_to_a_known_device_before_earlier_guesses() {
        // One thread: a guess holds it, another guess waits, then a known device.
        let p = cheap(1, 4);
        let done = Arc::new(std::sync::Mutex::new(Vec::new()));
        let job = |name: &'static str| {
            let done = done.clone();
            move || done.lock().unwrap().push(name)
        };
        let (a, b, k) = tokio::join!(
            p.run(Lane::Other, job("first guess")),
            p.run(Lane::Other, job("second guess")),
            p.run(Lane::KnownDevice, job("known device")),
        );
        assert!(a.is_ok() && b.is_ok() && k.is_ok());
        assert_eq!(*done.lock().unwrap(), ["first guess", "known device", "second guess"]);
        // Nothing is kept idle: with two threads, two guesses get one each at once.
        use futures::FutureExt;
        let p = cheap(2, 0);
        let both =
            (p.threads.acquire(Lane::Other).now_or_never(), p.threads.acquire(Lane::Other).now_or_never());
        assert!(both.0.is_some() && both.1.is_some());
        drop(both);
        // A full queue of guesses does not refuse a known device.
        let _full = p.admitted[Lane::Other as usize].clone().try_acquire_many_owned(2).unwrap();
        let guess = p.verify("guess".into(), None, Lane::Other).await;
        assert!(matches!(guess, Err(ApiError::Unavailable { .. })), "{guess:?}");
        assert!(matches!(p.verify("mine".into(), None, Lane::KnownDevice).await, Ok(false)));
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_passes_its_turn_on() {
        let p = cheap(1, 4);
        let held = p.threads.acquire(Lane::Other).await;
        // A known device starts waiting, then its request ends.
        let gone =
            tokio::time::timeout(std::time::Duration::from_millis(10), p.threads.acquire(Lane::KnownDevice));
        assert!(gone.await.is_err(), "no thread was free");
        let next = tokio::spawn({
            let threads = p.threads.clone();
            async move { threads.acquire(Lane::Other).await }
        });
        tokio::task::yield_now().await;
        drop(held);
        let next = next.await.unwrap();
        drop(next);
        assert_eq!(p.threads.state.lock().unwrap().0, 1, "the thread is free again, not lost");
    }

    #[test]
    fn the_device_cookie_is_strict_and_only_a_token_shaped_value_is_read() {
        let t = random_token();
        assert_eq!(
            device_cookie(&t, Duration::from_secs(60), true),
            format!("did={t}; HttpOnly; SameSite=Strict; Path=/; Max-Age=60; Secure")
        );
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("a=b; did={t}").parse().unwrap());
        assert_eq!(device_token(&h), Some(t));
        h.insert(header::COOKIE, "did=../../etc".parse().unwrap());
        assert_eq!(device_token(&h), None);
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
