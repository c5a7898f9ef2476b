//! A recording's timestamps across a gap in what arrived.
//!
//! The recorder times each track by the sender's RTP clock alone (the
//! jitter buffer's `mode=none`). When the timestamps jump by more than a
//! few seconds (the path was down, ICE restarted, the sender was
//! suspended) the jitter buffer starts its clock over from zero, and a
//! muxer handed times that step back keeps nothing after them: a 10 s cut
//! left a file of the 4 s before it. [`GapClock`] puts each packet back
//! where the sender's clock says it belongs, so the gap is a gap in time
//! and the file goes on after it.

/// A step back this large is the jitter buffer starting over, not
/// reordering (which it never passes on in this mode).
const RESET: u64 = 1_000_000_000;

/// One track's timeline, in nanoseconds.
#[derive(Debug)]
pub struct GapClock {
    clock_rate: u64,
    /// What the last packet was given, and its RTP timestamp.
    last: Option<(u64, u32)>,
    /// Added to what the jitter buffer gives, since its last reset.
    offset: i128,
}

impl GapClock {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: u64::from(clock_rate.max(1)),
            last: None,
            offset: 0,
        }
    }

    /// The time for a packet the jitter buffer timed `pts`, whose RTP
    /// timestamp is `rtp`.
    pub fn map(&mut self, pts: u64, rtp: u32) -> u64 {
        let mut out = clamp(i128::from(pts) + self.offset);
        if let Some((last_out, last_rtp)) = self.last {
            if out + RESET < last_out {
                // The sender's clock moved this far (as signed: a sender
                // that restarted its clock goes on just after).
                let ticks = i64::from(rtp.wrapping_sub(last_rtp) as i32).max(1) as u64;
                let step = ticks.saturating_mul(1_000_000_000) / self.clock_rate;
                let want = last_out.saturating_add(step);
                self.offset = i128::from(want) - i128::from(pts);
                out = want;
            }
        }
        self.last = Some((out, rtp));
        out
    }
}

fn clamp(t: i128) -> u64 {
    t.clamp(0, i128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_restarted_jitter_buffer_clock_is_put_back_after_the_gap() {
        // 90 kHz video: 30 fps, then 10 s without packets, after which the
        // jitter buffer times the next packet 0 again.
        let mut c = GapClock::new(90_000);
        let rtp0 = 4_000_000_000u32; // wraps during the gap
        for f in 0..120u64 {
            let t = f * 33 * MS;
            assert_eq!(c.map(t, rtp0.wrapping_add((f * 3000) as u32)), t);
        }
        let last = 119 * 33 * MS;
        let after_gap = rtp0.wrapping_add((119 * 3000 + 10 * 90_000) as u32);
        let t = c.map(0, after_gap);
        assert_eq!(t, last + 10_000 * MS);
        // And it keeps going from there.
        assert_eq!(c.map(33 * MS, after_gap.wrapping_add(3000)), t + 33 * MS);
    }

    #[test]
    fn ordinary_times_pass_unchanged() {
        let mut c = GapClock::new(48_000);
        for (pts, rtp) in [
            (0, 10u32),
            (20 * MS, 970),
            (40 * MS, 1930),
            (900 * MS, 43_210),
        ] {
            assert_eq!(c.map(pts, rtp), pts);
        }
    }

    #[test]
    fn a_sender_that_started_its_clock_over_goes_on_just_after() {
        let mut c = GapClock::new(90_000);
        c.map(5_000 * MS, 900_000);
        // Its timestamps went back: the file still only goes forward.
        let t = c.map(0, 1000);
        assert!(t > 5_000 * MS && t < 5_001 * MS, "{t}");
    }
}
