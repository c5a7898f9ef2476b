//! When a receiver asks its sender for a key frame (a PLI), free of I/O.
//!
//! A receiver asks when its picture is missing (before the first key frame)
//! or broken (the recorder lost a frame that retransmission did not bring
//! back). Each request costs the path a key frame, the biggest thing a
//! sender sends, so [`KeyframeRequests`] asks once and then waits:
//!
//! - while a key frame it asked for may still be on its way: as long as
//!   one has taken to come (timed from each request to the arrival of a
//!   key frame's first packet), which follows the round trip, the encoder
//!   and the queue in front of the receiver;
//! - while a key frame that arrived is still in the jitter buffer: the
//!   recorder reports the frames before it as lost until it comes out.
//!
//! Asking at fixed intervals (500 ms for the first picture, then at most
//! every 250 ms) behind a 150 ms round trip and a 1 Mbit/s link asked for
//! a second key frame while the first was still crossing the link, and
//! asked again for each frame lost before it.

use std::time::{Duration, Instant};

/// How long the first request is given, before any key frame was timed.
const FIRST_WAIT: Duration = Duration::from_millis(500);

/// Least wait for a key frame asked for (a LAN's key frame comes in one
/// capture interval and an encode, ~40 ms; the sender limits key frames to
/// one per 300 ms anyway).
const MIN_WAIT: Duration = Duration::from_millis(250);

/// A key frame is given this much longer than it has taken on average,
/// for variation in the queue and the encoder.
const WAIT_FACTOR: u32 = 2;

/// Beyond the jitter buffer's latency, how long after a key frame arrived
/// the frames lost before it may still be reported.
const HOLD_SLACK: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct KeyframeRequests {
    /// How long the jitter buffer holds a frame before the recorder has it.
    hold: Duration,
    asked: Option<Instant>,
    arrived: Option<Instant>,
    /// Smoothed time from a request to the key frame's arrival.
    took: Option<Duration>,
}

impl KeyframeRequests {
    pub fn new(hold: Duration) -> Self {
        Self {
            hold,
            asked: None,
            arrived: None,
            took: None,
        }
    }

    /// A key frame's first packet arrived at `now` (asked for or not).
    pub fn arrived(&mut self, now: Instant) {
        if let Some(asked) = self.asked.filter(|&q| self.arrived.is_none_or(|a| a < q)) {
            let took = now.saturating_duration_since(asked);
            self.took = Some(self.took.map_or(took, |t| (t * 3 + took) / 4));
        }
        self.arrived = Some(now);
    }

    /// Whether to ask for a key frame at `now`, the picture being missing
    /// or broken; if so, it counts as asked.
    pub fn ask(&mut self, now: Instant) -> bool {
        if self.due(now) {
            self.asked = Some(now);
            true
        } else {
            false
        }
    }

    /// When asking next is allowed (`None`: now), if the picture is still
    /// missing then.
    pub fn next(&self) -> Option<Instant> {
        let after_arrival = self.arrived.map(|a| a + self.hold + HOLD_SLACK);
        let after_request = self
            .asked
            .filter(|_| !self.answered())
            .map(|q| q + self.wait());
        [after_arrival, after_request].into_iter().flatten().max()
    }

    fn due(&self, now: Instant) -> bool {
        self.next().is_none_or(|at| now >= at)
    }

    /// Whether a key frame arrived since the last request.
    fn answered(&self) -> bool {
        matches!((self.asked, self.arrived), (Some(q), Some(a)) if a >= q)
    }

    /// How long a key frame asked for is waited for.
    fn wait(&self) -> Duration {
        self.took
            .map_or(FIRST_WAIT, |t| (t * WAIT_FACTOR).max(MIN_WAIT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_millis(500);

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn the_first_request_goes_at_once_and_is_repeated_only_if_nothing_came() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::new(HOLD);
        assert!(k.ask(t0));
        assert!(!k.ask(ms(t0, 100)));
        assert!(!k.ask(ms(t0, 499)));
        assert!(k.ask(ms(t0, 500)), "nothing came in 500 ms: ask again");
    }

    #[test]
    fn frames_lost_before_an_arrived_key_frame_ask_for_nothing() {
        // A 150 ms round trip behind a slow link: the key frame arrives
        // 350 ms after the request, and sits in the jitter buffer for
        // 500 ms while the frames before it are reported lost.
        let t0 = Instant::now();
        let mut k = KeyframeRequests::new(HOLD);
        assert!(k.ask(t0));
        k.arrived(ms(t0, 350));
        for n in [360, 500, 800, 949] {
            assert!(!k.ask(ms(t0, n)), "asked again at {n} ms");
        }
        // Past its way out of the jitter buffer, a loss is a new one.
        assert!(k.ask(ms(t0, 950)));
    }

    #[test]
    fn the_wait_for_an_answer_follows_how_long_answers_took() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::new(Duration::ZERO);
        // Answers take 400 ms: a request is given 800 ms.
        assert!(k.ask(t0));
        k.arrived(ms(t0, 400));
        assert!(k.ask(ms(t0, 1000)));
        assert!(!k.ask(ms(t0, 1799)));
        assert!(k.ask(ms(t0, 1800)));
        // On a LAN, answers take 40 ms: never less than 250 ms apart.
        let mut k = KeyframeRequests::new(Duration::ZERO);
        assert!(k.ask(t0));
        k.arrived(ms(t0, 40));
        assert!(k.ask(ms(t0, 200)));
        assert!(!k.ask(ms(t0, 449)));
        assert!(k.ask(ms(t0, 450)));
    }

    #[test]
    fn a_key_frame_nobody_asked_for_is_no_timing() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::new(Duration::ZERO);
        k.arrived(t0);
        assert!(k.ask(ms(t0, 200)));
        k.arrived(ms(t0, 250));
        k.arrived(ms(t0, 2000)); // another receiver's, much later
        assert!(k.ask(ms(t0, 2200)));
        // Timed at 50 ms: waits 250 ms, not the 1.75 s of the unasked one.
        assert!(!k.ask(ms(t0, 2449)));
        assert!(k.ask(ms(t0, 2450)));
    }
}
