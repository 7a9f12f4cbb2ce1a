//! Token-bucket rate limiting of failed logins, keyed by account and by
//! client address (Synapse's `rc_login.failed_attempts` semantics).

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::RateLimit;

/// Buckets that fill at `per_second` up to `burst_count`; a key is limited
/// while its bucket holds less than one action.
pub struct Limiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Limiter {
        Limiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn level(&self, stored: Option<&(f64, Instant)>, now: Instant) -> f64 {
        match stored {
            None => self.limit.burst_count,
            Some(&(tokens, at)) => (tokens
                + now.duration_since(at).as_secs_f64() * self.limit.per_second)
                .min(self.limit.burst_count),
        }
    }

    /// `Some(ms until allowed)` if `key` may not act now.
    pub fn check(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let buckets = self.buckets.lock();
        let tokens = self.level(buckets.get(key), now);
        (tokens < 1.0).then(|| (((1.0 - tokens) / self.limit.per_second) * 1000.0).ceil() as u64)
    }

    /// Spends one action of `key`.
    pub fn record(&self, key: &str) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let tokens = self.level(buckets.get(key), now);
        buckets.insert(key.to_owned(), ((tokens - 1.0).max(0.0), now));
        // Keep memory bounded: forget full buckets once the map grows.
        if buckets.len() > 100_000 {
            let limit = self.limit;
            buckets.retain(|_, (t, at)| {
                *t + now.duration_since(*at).as_secs_f64() * limit.per_second < limit.burst_count
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_with_a_wait() {
        let l = Limiter::new(RateLimit {
            per_second: 0.5,
            burst_count: 3.0,
        });
        for _ in 0..3 {
            assert_eq!(l.check("a"), None);
            l.record("a");
        }
        let wait = l.check("a").expect("limited after the burst");
        assert!(wait > 1000 && wait <= 2000, "{wait}");
        assert_eq!(l.check("b"), None, "other keys are independent");
    }
}
