//! A per-connection token bucket: a client may send `rate` frames a second,
//! with bursts of up to `burst`. Pure (time is passed in), so it is tested
//! without sleeping.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// `rate` frames per second; 0 disables the limit.
    pub fn new(rate: u32, now: Instant) -> Self {
        // One second's worth: a sender offering to a room of receivers at
        // once sends a burst of offers and candidates.
        let burst = f64::from(rate);
        Self {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token; false when the client is over its rate.
    pub fn admit(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100, t0);
        let burst = (0..1000).filter(|_| b.admit(t0)).count();
        assert_eq!(burst, 100, "one second's worth at once");
        assert!(!b.admit(t0));
        // After half a second, 50 more.
        let t1 = t0 + Duration::from_millis(500);
        let more = (0..1000).filter(|_| b.admit(t1)).count();
        assert_eq!(more, 50);
    }

    #[test]
    fn zero_means_unlimited() {
        let t0 = Instant::now();
        let mut b = Bucket::new(0, t0);
        assert!((0..100_000).all(|_| b.admit(t0)));
    }
}
