//! Per-caller rate limit on events (not requests): a token bucket per API key name.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Events per second and burst per caller; `per_second == 0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Every caller's bucket.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes `events` tokens from `caller`'s bucket at `now`, or says how long until they would be
    /// there (nothing is taken then).
    pub fn take(&self, caller: &str, events: usize, now: Instant) -> Result<(), Duration> {
        if self.limit.per_second <= 0.0 {
            return Ok(());
        }
        let wanted = events as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket { tokens: self.limit.burst, at: now });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.limit.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.limit.burst);
        bucket.at = now;
        if bucket.tokens >= wanted {
            bucket.tokens -= wanted;
            Ok(())
        } else {
            // Saturating: a tiny rate must not turn the wait into a panic.
            Err(Duration::try_from_secs_f64((wanted - bucket.tokens) / self.limit.per_second)
                .unwrap_or(Duration::MAX))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(RateLimit { per_second: 100.0, burst: 200.0 });
        let t0 = Instant::now();
        assert_eq!(limiter.take("web", 150, t0), Ok(()));
        assert_eq!(limiter.take("web", 50, t0), Ok(()));
        // Empty: 100 events need a second.
        assert_eq!(limiter.take("web", 100, t0), Err(Duration::from_secs(1)));
        // Another caller has a bucket of its own.
        assert_eq!(limiter.take("pos", 200, t0), Ok(()));
        // Half a second refills 50.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(limiter.take("web", 50, later), Ok(()));
        assert!(limiter.take("web", 1, later).is_err());
        // Never more than the burst, however long the pause.
        let much_later = t0 + Duration::from_secs(3600);
        assert!(limiter.take("web", 201, much_later).is_err());
        assert_eq!(limiter.take("web", 200, much_later), Ok(()));
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let limiter = RateLimiter::new(RateLimit { per_second: 0.0, burst: 0.0 });
        assert_eq!(limiter.take("web", 1_000_000, Instant::now()), Ok(()));
    }
}
