//! Pacing: each receiver's video leaves at a multiple of what its layer
//! needs, not in the burst the encoder made it in.
//!
//! An encoder hands over a frame at once, and a key frame is ten times a
//! delta frame or more. Sent as it comes, it reaches the path's
//! bottleneck as one burst, and a shaper whose bucket and queue hold less
//! than the frame drops its tail: on every try, since the key frame asked
//! for next is as big (1 Mbit/s behind a 4 KB bucket recorded nothing in
//! 3 of 6 runs). Spread over a few tens of milliseconds, the same frame
//! passes. libwebrtc paces every stream the same way.
//!
//! - [`Budget`] is the pure part: a leaky bucket that lets packets out
//!   while it is above zero and refills at the pacing rate.
//! - [`Pacer`], an interceptor on each sending connection, holds the
//!   video packets the budget does not allow yet and releases them on its
//!   timer. Audio passes at once (it is small, and late is useless) but
//!   spends the budget, so the video after it waits. Retransmissions are
//!   paced too, ahead of the video queued: a receiver that lost a key
//!   frame's tail asks for all of it at once, and answered in one burst
//!   the answers overran the same shallow queue again (a viewer behind a
//!   1 Mbit/s link with a 4 KB bucket lost a third of its first second,
//!   and its picture waited for a second key frame). The rate comes from
//!   the layer chooser through [`Feedback::set_pace`]; with none set,
//!   nothing is held.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

use super::Feedback;

/// How much faster than its layer (and the audio) a receiver's video
/// leaves: libwebrtc's factor. A key frame of five times the layer's
/// per-frame share crosses in about two frame intervals, and a delta frame
/// in under half of one.
pub(super) const PACE_FACTOR: f64 = 2.5;

/// The rate a receiver's video is paced at, bit/s, when what it is sent
/// needs `need` bit/s: [`PACE_FACTOR`] times that, but once its path has
/// been seen full, no faster than the path then carried (`capacity`),
/// and never slower than `need`. Paced at the factor, a key frame into a
/// path that is already full only adds to its queue: behind a 1 Mbit/s
/// link with a 4 KB bucket and a 100 ms queue, the key frame a viewer
/// asked for after losing its first one's tail (at 1.7 Mbit/s) lost its
/// own, and Chromium asked again, up to four times, before its first
/// picture (2.6 s after joining, against 1.0 s when nothing was lost).
pub(super) fn pace_rate(need: f64, capacity: Option<f64>) -> f64 {
    let paced = PACE_FACTOR * need;
    match capacity {
        Some(c) => paced.min(c.max(need)),
        None => paced,
    }
}

/// Most a budget saves up while nothing is sent: 15 ms at the pacing
/// rate is 37 ms of the layer's, about one average frame at 30 fps. A
/// delta frame leaves as it comes, with no wait added to it; a key frame
/// (3 to 9 average frames, see the encoder's `max-intra-bitrate`) is
/// spread. (At libwebrtc's 5 ms, every frame waited: ~13 ms a frame at
/// 2.5×, on the path of every picture.)
const BURST: Duration = Duration::from_millis(15);
/// But always one full packet, however low the rate.
const MIN_BURST_BITS: f64 = 12_000.0;

/// The longest the queue may hold a packet: past it, the queue drains
/// faster than the pacing rate. A receiver that joins gets the packets
/// held for it since the answer in one go (up to 256); at the pacing rate
/// alone they could keep its first frame back for half a second.
const MAX_QUEUE: Duration = Duration::from_millis(250);

/// The least time the queue is given to drain, however late it is.
const MIN_DRAIN: Duration = Duration::from_millis(10);

/// A leaky bucket in bits: packets leave while it is above zero (the last
/// one may take it below), and it refills at the rate it is given, up to
/// [`BURST`] of it.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    level: f64,
    at: Option<Instant>,
}

impl Budget {
    /// Brings the budget up to `now` at `rate` bit/s.
    pub fn refill(&mut self, now: Instant, rate: f64) {
        let cap = (rate * BURST.as_secs_f64()).max(MIN_BURST_BITS);
        let gained = match self.at {
            Some(at) => rate * now.saturating_duration_since(at).as_secs_f64(),
            None => cap,
        };
        self.level = (self.level + gained).min(cap);
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
    }

    pub fn spend(&mut self, bits: f64) {
        self.level -= bits;
    }

    pub fn allows(&self) -> bool {
        self.level > 0.0
    }

    /// Bits spent ahead of the rate (audio passes at once).
    pub fn debt(&self) -> f64 {
        (-self.level).max(0.0)
    }

    /// When it next allows a packet, at `rate` bit/s.
    pub fn ready_at(&self, rate: f64) -> Option<Instant> {
        let at = self.at?;
        if self.allows() {
            return Some(at);
        }
        // One bit past zero: a deadline at `at` itself would wake the
        // connection again and again with nothing to release.
        let wait = (1.0 - self.level) / rate.max(1.0);
        Some(at + Duration::from_secs_f64(wait))
    }
}

/// Holds one connection's video to its pacing rate (see the module's
/// doc). Sits wire-ward of what sends video and NACK answers, and
/// application-ward of the prober (whose copies fill what the paced video
/// leaves) and of transport-wide numbering (which records each packet's
/// release, so a wait here is not taken for the path's).
pub(in crate::session::rtc) struct Pacer {
    feedback: Arc<Feedback>,
    /// Primary SSRCs of the video streams.
    video: HashSet<u32>,
    budget: Budget,
    /// Retransmissions, which leave ahead of `queue`.
    resends: VecDeque<TaggedPacket>,
    queue: VecDeque<TaggedPacket>,
    /// What `resends` and `queue` hold.
    queued_bits: f64,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Pacer {
    pub fn new(feedback: Arc<Feedback>) -> Self {
        Self {
            feedback,
            video: HashSet::new(),
            budget: Budget::default(),
            resends: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bits: 0.0,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }

    /// The rate the queue drains at, at `now`, bit/s; `None`: not paced.
    /// What is queued, and what audio spent ahead of it,
    /// leave by the time the oldest packet has waited [`MAX_QUEUE`].
    fn rate(&self, now: Instant) -> Option<f64> {
        let pace = self.feedback.pace()?;
        let Some(oldest) = [self.resends.front(), self.queue.front()]
            .into_iter()
            .flatten()
            .map(|p| p.now)
            .min()
        else {
            return Some(pace);
        };
        let left = (oldest + MAX_QUEUE)
            .saturating_duration_since(now)
            .max(MIN_DRAIN);
        let behind = self.queued_bits + self.budget.debt();
        Some(pace.max(behind / left.as_secs_f64()))
    }

    /// Sends what the budget allows of the queue (all of it when pacing
    /// is off).
    fn release(&mut self, now: Instant) {
        let rate = self.rate(now);
        if let Some(rate) = rate {
            self.budget.refill(now, rate);
        }
        while rate.is_none() || self.budget.allows() {
            let Some(mut packet) = self.resends.pop_front().or_else(|| self.queue.pop_front())
            else {
                break;
            };
            let bits = bits_of(&packet);
            self.queued_bits = (self.queued_bits - bits).max(0.0);
            self.budget.spend(bits);
            // It leaves now: what is wire-ward (the send history
            // congestion control reads) must see this instant.
            packet.now = now;
            self.write.push_back(packet);
        }
        if self.is_empty() {
            self.queued_bits = 0.0;
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.resends.is_empty()
    }
}

fn bits_of(packet: &TaggedPacket) -> f64 {
    match &packet.message.packet {
        Packet::Rtp(p) => p.marshal_size() as f64 * 8.0,
        _ => 0.0,
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for Pacer {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let Packet::Rtp(p) = &msg.message.packet else {
            self.write.push_back(msg);
            return Ok(());
        };
        let resend = msg.message.has(&Attribute::Retransmission);
        let paced = resend || self.video.contains(&p.header.ssrc);
        let now = msg.now;
        let bits = bits_of(&msg);
        if !paced {
            if let Some(rate) = self.rate(now) {
                self.budget.refill(now, rate);
                self.budget.spend(bits);
            }
            self.write.push_back(msg);
            return Ok(());
        }
        self.queued_bits += bits;
        if resend {
            self.resends.push_back(msg);
        } else {
            self.queue.push_back(msg);
        }
        self.release(now);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        if !self.is_empty() {
            self.release(now);
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        if self.is_empty() {
            return None;
        }
        let at = self.budget.at?;
        match self.rate(at) {
            Some(rate) => self.budget.ready_at(rate),
            // Pacing was switched off with packets queued: at once.
            None => Some(at),
        }
    }
}

impl Interceptor for Pacer {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if info.mime_type.to_ascii_lowercase().starts_with("video/") {
            self.video.insert(info.ssrc);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.video.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `frames` of `(at ms, bytes)` in 1,200-byte packets through a
    /// budget at `rate`, as the pacer does, and gives each packet's
    /// departure in ms.
    fn pace(rate: f64, frames: &[(u64, usize)]) -> Vec<f64> {
        let t0 = Instant::now();
        let mut budget = Budget::default();
        let mut queue: VecDeque<f64> = VecDeque::new();
        let mut out = Vec::new();
        let mut now = t0;
        let mut arrivals: VecDeque<(u64, usize)> = frames.iter().copied().collect();
        loop {
            // The next instant something happens: a frame, or the budget.
            let next_frame = arrivals
                .front()
                .map(|(ms, _)| t0 + Duration::from_millis(*ms));
            let next_budget = (!queue.is_empty()).then(|| budget.ready_at(rate)).flatten();
            let Some(next) = [next_frame, next_budget].into_iter().flatten().min() else {
                break;
            };
            now = now.max(next);
            if next_frame.is_some_and(|f| f <= now) {
                let (_, bytes) = arrivals.pop_front().unwrap();
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(1_200);
                    queue.push_back(n as f64 * 8.0);
                    left -= n;
                }
            }
            budget.refill(now, rate);
            while budget.allows() {
                let Some(bits) = queue.pop_front() else {
                    break;
                };
                budget.spend(bits);
                out.push(now.duration_since(t0).as_secs_f64() * 1e3);
            }
        }
        out
    }

    #[test]
    fn a_key_frame_leaves_over_its_size_at_the_pacing_rate() {
        // 60 KB at 2.5 × 1 Mbit/s: ~190 ms less the burst, not one burst.
        let out = pace(2_500_000.0, &[(0, 60_000)]);
        assert_eq!(out.len(), 50);
        let last = *out.last().unwrap();
        assert!((165.0..200.0).contains(&last), "{last}");
        // No more than the burst (15 ms: ~4.7 KB) at once.
        let first_ms = out.iter().filter(|&&t| t < 1.0).count();
        assert!(first_ms <= 5, "{first_ms} packets at once");
    }

    #[test]
    fn an_average_frame_leaves_at_once() {
        // 2.5 Mbit/s at 30 fps: ~10 KB a frame, paced at 6.25 Mbit/s.
        let frames: Vec<(u64, usize)> = (0..30).map(|k| (k * 33, 10_000)).collect();
        let out = pace(6_250_000.0, &frames);
        let waited = out.iter().filter(|&&t| (t as u64) % 33 > 1).count();
        assert_eq!(waited, 0, "{out:?}");
    }

    #[test]
    fn a_path_seen_full_is_paced_no_faster_than_it_carried() {
        // Never seen full: the factor.
        assert_eq!(pace_rate(700_000.0, None), PACE_FACTOR * 700_000.0);
        // It carried 930 kbit/s when full: no faster than that.
        assert_eq!(pace_rate(700_000.0, Some(930_000.0)), 930_000.0);
        // Wide: the factor still.
        assert_eq!(pace_rate(700_000.0, Some(5e6)), PACE_FACTOR * 700_000.0);
        // Narrower than what is sent (a step down under way): what is
        // sent, or the queue would only grow.
        assert_eq!(pace_rate(700_000.0, Some(300_000.0)), 700_000.0);
    }

    #[test]
    fn an_idle_budget_saves_up_no_more_than_the_burst() {
        // A second of silence, then a key frame: still paced.
        let out = pace(1_000_000.0, &[(0, 1_200), (1_000, 12_000)]);
        let burst = out
            .iter()
            .filter(|&&t| (1_000.0..1_001.0).contains(&t))
            .count();
        assert!(burst <= 2, "{burst} packets at once after idling");
        let last = *out.last().unwrap();
        assert!(last > 1_070.0, "{last}");
    }

    /// An RTP packet of `size` payload bytes on `ssrc`, written at `now`.
    fn rtp(ssrc: u32, seq: u16, size: usize, now: Instant) -> TaggedPacket {
        use rtc::interceptor::AttributedPacket;
        use rtc::rtp::header::Header;
        use rtc::rtp::packet::Packet as RtpPacket;
        use rtc::shared::TransportContext;
        let packet = RtpPacket {
            header: Header {
                version: 2,
                ssrc,
                sequence_number: seq,
                ..Default::default()
            },
            payload: vec![0u8; size].into(),
        };
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)),
        }
    }

    /// A pacer on a connection with video on SSRC 1 and audio on 2,
    /// paced at `bps` (0: no pace set).
    fn pacer(bps: f64) -> Pacer {
        let feedback = Arc::new(Feedback::default());
        if bps > 0.0 {
            feedback.set_pace(bps);
        }
        let mut p = Pacer::new(feedback);
        for (ssrc, mime) in [(1, "video/VP8"), (2, "audio/opus")] {
            p.bind_local_stream(&StreamInfo {
                ssrc,
                mime_type: mime.into(),
                ..Default::default()
            });
        }
        p
    }

    /// Runs the pacer's timer until its queue is empty: each packet's
    /// (SSRC, sequence number, stamped departure, the instant it came out).
    fn drain(p: &mut Pacer, out: &mut Vec<(u32, u16, Instant, Instant)>, mut now: Instant) {
        let mut take = |p: &mut Pacer, now: Instant| {
            while let Some(m) = p.poll_write() {
                if let Packet::Rtp(r) = &m.message.packet {
                    out.push((r.header.ssrc, r.header.sequence_number, m.now, now));
                }
            }
        };
        take(p, now);
        for _ in 0..10_000 {
            let Some(at) = p.poll_timeout() else {
                return;
            };
            assert!(
                at > now || p.budget.allows(),
                "a deadline that does not move on"
            );
            now = now.max(at);
            p.handle_timeout(now).unwrap();
            take(p, now);
        }
        panic!("the queue never emptied");
    }

    #[test]
    fn the_pacer_holds_video_to_its_rate_and_lets_audio_pass() {
        let t0 = Instant::now();
        let mut p = pacer(1_000_000.0);
        // A 24 KB key frame and an audio packet right behind it.
        for seq in 0..20 {
            p.handle_write(rtp(1, seq, 1_188, t0)).unwrap();
        }
        p.handle_write(rtp(2, 0, 100, t0)).unwrap();
        let mut out = Vec::new();
        drain(&mut p, &mut out, t0);
        let video: Vec<_> = out.iter().filter(|o| o.0 == 1).collect();
        assert_eq!(
            video.iter().map(|o| o.1).collect::<Vec<_>>(),
            (0..20).collect::<Vec<u16>>(),
            "in order, all of it"
        );
        // Audio did not wait behind the frame.
        let audio = out.iter().find(|o| o.0 == 2).expect("audio passed");
        assert_eq!(audio.3, t0);
        // Each packet is stamped with when it left, and the frame took
        // about its size at the rate (192 kbit at 1 Mbit/s, less the
        // burst): not one burst.
        assert!(video.iter().all(|o| o.2 == o.3));
        let last = video.last().unwrap().3.duration_since(t0).as_secs_f64();
        assert!((0.15..0.2).contains(&last), "{last}");
    }

    #[test]
    fn retransmissions_are_paced_and_leave_ahead_of_queued_video() {
        let t0 = Instant::now();
        let mut p = pacer(1_000_000.0);
        // A 24 KB key frame, then a receiver asks again for ten packets
        // it lost of the frame before, on the RTX stream (SSRC 3).
        for seq in 0..20 {
            p.handle_write(rtp(1, seq, 1_188, t0)).unwrap();
        }
        let later = t0 + Duration::from_millis(20);
        for seq in 0..10 {
            let mut resend = rtp(3, seq, 1_190, later);
            resend.message = resend.message.with(Attribute::Retransmission);
            p.handle_write(resend).unwrap();
        }
        let mut out = Vec::new();
        drain(&mut p, &mut out, t0);
        assert_eq!(out.len(), 30);
        // Once asked for, they go before the rest of the frame (one video
        // packet may slip in while they are being written one by one).
        let first_resend = out.iter().position(|o| o.0 == 3).unwrap();
        let last_resend = out.iter().rposition(|o| o.0 == 3).unwrap();
        assert!(last_resend - first_resend <= 10, "{out:?}");
        assert!(out[last_resend + 1..].iter().all(|o| o.0 == 1));
        // And at the rate, not in one burst: 12 KB at 1 Mbit/s is ~95 ms.
        let spread = out[last_resend].3 - out[first_resend].3;
        assert!(spread >= Duration::from_millis(60), "{spread:?}");
    }

    #[test]
    fn a_long_queue_drains_within_its_limit() {
        let t0 = Instant::now();
        let mut p = pacer(300_000.0);
        // 120 KB held for a peer whose connection just came up: at
        // 300 kbit/s alone it would take 3.2 s.
        for seq in 0..100 {
            p.handle_write(rtp(1, seq, 1_188, t0)).unwrap();
        }
        let mut out = Vec::new();
        drain(&mut p, &mut out, t0);
        assert_eq!(out.len(), 100);
        let last = out.last().unwrap().3.duration_since(t0);
        assert!(last <= MAX_QUEUE + Duration::from_millis(5), "{last:?}");
        // Spread over that time, not sent at once.
        let first_half = out.iter().filter(|o| o.3 - t0 < MAX_QUEUE / 2).count();
        assert!(
            (40..=60).contains(&first_half),
            "{first_half} in the first half"
        );
    }

    #[test]
    fn without_a_pace_nothing_is_held() {
        let t0 = Instant::now();
        let mut p = pacer(0.0);
        for seq in 0..50 {
            p.handle_write(rtp(1, seq, 1_188, t0)).unwrap();
        }
        let mut n = 0;
        while p.poll_write().is_some() {
            n += 1;
        }
        assert_eq!(n, 50);
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn the_deadline_is_always_ahead_when_the_budget_is_spent() {
        let t0 = Instant::now();
        let mut b = Budget::default();
        b.refill(t0, 1_000_000.0);
        b.spend(100_000.0);
        let at = b.ready_at(1_000_000.0).unwrap();
        assert!(at > t0);
        b.refill(at, 1_000_000.0);
        assert!(b.allows());
    }
}
