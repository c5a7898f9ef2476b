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
//!
//! A sender that comes back on a new connection (its old one was given
//! up) starts a new RTP stream: another SSRC, other sequence numbers and
//! timestamps. [`Splice`] rewrites it as the old stream's continuation,
//! after a gap as long as the one on the wall clock, so its recording goes
//! on in the same file.

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

/// The last packet of a stream, as written.
#[derive(Debug, Clone, Copy)]
struct Last {
    seq: u16,
    ts: u32,
    ssrc: u32,
    at: std::time::Instant,
}

/// Rewrites a new RTP stream's packets as the continuation of the one
/// before it on the same track.
#[derive(Debug)]
pub struct Splice {
    clock_rate: u64,
    last: Option<Last>,
    /// What is added to the new stream's sequence numbers and timestamps,
    /// and the SSRC it takes.
    shift: Option<(u16, u32, u32)>,
    /// The next packet starts a new stream.
    joining: bool,
}

impl Splice {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: u64::from(clock_rate.max(1)),
            last: None,
            shift: None,
            joining: false,
        }
    }

    /// Whether packets are (or are about to be) rewritten.
    pub fn active(&self) -> bool {
        self.joining || self.shift.is_some()
    }

    /// Packets from now on belong to a new stream.
    pub fn join(&mut self) {
        self.joining = true;
    }

    /// Rewrites `rtp` (a whole packet) in place if it belongs to a joined
    /// stream, packet arriving `now`. Returns whether it changed it.
    pub fn rewrite(&mut self, now: std::time::Instant, rtp: &mut [u8]) -> bool {
        if rtp.len() < 12 {
            return false;
        }
        let seq = u16::from_be_bytes([rtp[2], rtp[3]]);
        let ts = u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]);
        if std::mem::take(&mut self.joining) {
            self.shift = self.last.map(|last| {
                let gap = now.saturating_duration_since(last.at);
                let ticks = (gap.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u32;
                // One number left out: the depayloader sees a packet
                // lost, and a video one waits for (and asks for) a key
                // frame instead of decoding the new stream's deltas
                // against pictures it never had.
                (
                    last.seq.wrapping_add(2).wrapping_sub(seq),
                    last.ts.wrapping_add(ticks.max(1)).wrapping_sub(ts),
                    last.ssrc,
                )
            });
        }
        let (seq, ts, ssrc, changed) = match self.shift {
            Some((s, t, ssrc)) => (seq.wrapping_add(s), ts.wrapping_add(t), ssrc, true),
            None => (
                seq,
                ts,
                u32::from_be_bytes([rtp[8], rtp[9], rtp[10], rtp[11]]),
                false,
            ),
        };
        if changed {
            rtp[2..4].copy_from_slice(&seq.to_be_bytes());
            rtp[4..8].copy_from_slice(&ts.to_be_bytes());
            rtp[8..12].copy_from_slice(&ssrc.to_be_bytes());
        }
        // Only a packet ahead of the last one moves the stream on (a
        // resend of an older one does not).
        let ahead = self
            .last
            .is_none_or(|l| seq.wrapping_sub(l.seq) < 0x8000 && seq != l.seq);
        if ahead {
            self.last = Some(Last {
                seq,
                ts,
                ssrc,
                at: now,
            });
        }
        changed
    }
}

fn clamp(t: i128) -> u64 {
    t.clamp(0, i128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn packet(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(b"payload");
        p
    }

    fn fields(p: &[u8]) -> (u16, u32, u32) {
        (
            u16::from_be_bytes([p[2], p[3]]),
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        )
    }

    #[test]
    fn a_new_stream_continues_the_old_one_after_the_wall_clock_gap() {
        let t0 = Instant::now();
        let mut s = Splice::new(90_000);
        // The old stream, untouched.
        for n in 0..3u16 {
            let mut p = packet(65_534u16.wrapping_add(n), 1000 + u32::from(n) * 3000, 7);
            assert!(!s.rewrite(t0 + Duration::from_millis(33) * u32::from(n), &mut p));
        }
        // 5 s later a new connection: another SSRC, numbers from anywhere;
        // one number is skipped at the join.
        s.join();
        let back = t0 + Duration::from_millis(66) + Duration::from_secs(5);
        let mut p = packet(40_000, 123_456, 99);
        assert!(s.rewrite(back, &mut p));
        assert_eq!(fields(&p), (2, 7000 + 5 * 90_000, 7));
        assert_eq!(&p[12..], b"payload");
        // Its next packets follow, a resend of an earlier one too.
        let mut p = packet(40_001, 126_456, 99);
        s.rewrite(back + Duration::from_millis(33), &mut p);
        assert_eq!(fields(&p), (3, 10_000 + 5 * 90_000, 7));
        let mut p = packet(39_999, 120_456, 99);
        s.rewrite(back + Duration::from_millis(40), &mut p);
        assert_eq!(fields(&p), (1, 4000 + 5 * 90_000, 7));
        // A second join starts from where the joined stream got to.
        s.join();
        let mut p = packet(5, 5, 5);
        s.rewrite(back + Duration::from_secs(1), &mut p);
        assert_eq!(fields(&p).0, 5);
    }

    #[test]
    fn a_join_with_nothing_before_changes_nothing() {
        let mut s = Splice::new(48_000);
        s.join();
        let mut p = packet(10, 20, 30);
        assert!(!s.rewrite(Instant::now(), &mut p));
        assert_eq!(fields(&p), (10, 20, 30));
        assert!(!s.rewrite(Instant::now(), &mut [0u8; 5]));
    }

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
