//! Capture-to-arrival latency of video frames: how long after the sender's
//! camera took a frame its last packet reached us. Kept as a histogram so
//! hours of frames take constant memory.

use std::time::Duration;

/// Histogram resolution.
const STEP_US: u64 = 100;
/// Up to 2 s in 0.1 ms steps; slower frames land in the last bucket.
const BUCKETS: usize = 20_000;

#[derive(Debug, Clone)]
pub struct Latency {
    buckets: Vec<u32>,
    frames: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS + 1],
            frames: 0,
        }
    }
}

impl Latency {
    pub fn add(&mut self, d: Duration) {
        let i = ((d.as_micros() as u64) / STEP_US).min(BUCKETS as u64) as usize;
        self.buckets[i] = self.buckets[i].saturating_add(1);
        self.frames += 1;
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The `p`-th percentile (0–100) in milliseconds, at the middle of its
    /// bucket; `None` before the first frame.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.frames == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.frames as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= rank {
                return Some((i as f64 + 0.5) * STEP_US as f64 / 1000.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_frames() {
        let mut l = Latency::default();
        assert_eq!(l.percentile(50.0), None);
        for ms in 1..=100 {
            l.add(Duration::from_millis(ms));
        }
        assert_eq!(l.frames(), 100);
        let p50 = l.percentile(50.0).unwrap();
        let p95 = l.percentile(95.0).unwrap();
        assert!((p50 - 50.05).abs() < 0.01, "{p50}");
        assert!((p95 - 95.05).abs() < 0.01, "{p95}");
    }

    #[test]
    fn slow_frames_are_counted_not_lost() {
        let mut l = Latency::default();
        l.add(Duration::from_secs(30));
        l.add(Duration::from_millis(3));
        assert_eq!(l.frames(), 2);
        assert!(l.percentile(100.0).unwrap() >= 2000.0);
        assert!(l.percentile(50.0).unwrap() < 4.0);
    }
}
