//! Per-client token buckets: `per_second` sustained, `burst` at once.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets idle this long are forgotten (they would be full again anyway).
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Above this many clients, idle buckets are swept.
const SWEEP_ABOVE: usize = 10_000;

/// One client's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left (fractional: refilled continuously).
    tokens: f64,
    /// When `tokens` was computed.
    at: Instant,
}

/// Token buckets keyed by client.
#[derive(Debug)]
pub struct RateLimiter<K> {
    /// Tokens added per second.
    rate: f64,
    /// A bucket's capacity.
    burst: f64,
    /// The buckets.
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter of `per_second` requests sustained with bursts of `burst`.
    pub fn new(per_second: u32, burst: u32) -> RateLimiter<K> {
        RateLimiter {
            rate: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take a token for `key` at `now`: `Ok(())`, or `Err(wait)` with the time until
    /// the next token (what `Retry-After` says).
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("rate limiter poisoned");
        if buckets.len() > SWEEP_ABOVE {
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < FORGET_AFTER);
        }
        let b = buckets.entry(key.clone()).or_insert(Bucket { tokens: self.burst, at: now });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.rate;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0 || wait.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let l = RateLimiter::new(2, 3);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.check(&"a", t).is_ok());
        }
        let wait = l.check(&"a", t).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        assert!(l.check(&"b", t).is_ok(), "clients are separate");
        assert!(l.check(&"a", t + Duration::from_millis(500)).is_ok());
        assert!(l.check(&"a", t + Duration::from_millis(500)).is_err());
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2100)), 3);
    }
}
