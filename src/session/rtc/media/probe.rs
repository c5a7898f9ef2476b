//! Probing a path before a receiver is moved up a layer: for a few
//! hundred milliseconds the sender sends that receiver as much as the
//! better layer would need, the gap filled with copies of recent video
//! packets on the retransmission (RTX, RFC 4588) stream, and the
//! receiver's transport-wide feedback tells whether the path carried it.
//!
//! A path that lets all it is sent through says nothing of how much more
//! it could take, and GCC (webrtc-rs's) sends no probes: without them, a
//! receiver moved down a layer by a link that narrowed could only be
//! tried on the better layer again, and a failed try freezes its picture
//! until the smaller layer's next key frame gets through. A failed probe
//! costs a little queueing instead.
//!
//! - [`Prober`], an interceptor on each sending connection, writes the
//!   probe when the layer chooser asks for one (through [`Feedback`]), and
//!   renumbers every RTX packet, its own and the NACK responder's, from
//!   one counter, so SRTP's replay protection sees no number twice.
//! - [`judge`] reads the feedback on the probe's packets (in the
//!   `Estimator`): it passes when the path lost almost nothing of them
//!   and their delay did not grow.
//!
//! The copies are of packets the receiver already has (or lost): a
//! receiver drops them as duplicates, or takes a lost one as a repair.
//! (libwebrtc probes with such copies too.)

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet as RtpPacket;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;
use rtc::shared::TransportContext;

use super::Feedback;

/// How long a probe sends at its rate: long enough that a queue shows
/// when the path is sent twice what it carries, short enough that a
/// failed probe costs ~0.1 s of queue. The probe that decides a step up
/// runs [`DECIDING`] times as long: a token bucket's burst (10 KB on the
/// test links) hides up to ~0.4 s of a path sent a few tenths more than
/// it carries.
const PROBE_LENGTH: Duration = Duration::from_millis(350);
const DECIDING: u32 = 2;

/// A running probe wakes when about this many bits are owed (a typical
/// copy), but no sooner than [`MIN_WAKE`] and no later than [`MAX_WAKE`]
/// after the last wake: each wake-up runs the connection's timers, so one
/// per copy, not a fixed fast tick.
const WAKE_BITS: f64 = 8_000.0;
const MIN_WAKE: Duration = Duration::from_millis(2);
const MAX_WAKE: Duration = Duration::from_millis(20);

/// Recent video packets kept to copy.
const KEEP: usize = 32;

/// A probe the layer chooser asked for, the one running, and the verdict
/// on the last one; kept in [`Feedback`], shared by the chooser, the
/// [`Prober`] and the `Estimator`.
#[derive(Debug, Default)]
pub struct ProbeState {
    /// Whether the connection can probe (the receiver took RTX).
    pub(super) ready: bool,
    /// Asked for: the rate, bit/s, the path should carry for a while,
    /// and whether the probe decides a step (it runs longer).
    pub(super) asked: Option<(f64, bool)>,
    /// Sent, or being sent, and not judged yet.
    pub(super) cluster: Option<Cluster>,
    /// The last verdict, until the chooser takes it.
    pub(super) outcome: Option<Outcome>,
    /// The rate of the last probe that passed.
    proven: Option<f64>,
}

/// One probe: the packets that left between `start` and `end`, meant to
/// cross the path at `rate` bit/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cluster {
    pub start: Instant,
    pub end: Instant,
    pub rate: f64,
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The rate it sent at, bit/s.
    pub rate: f64,
    pub passed: bool,
    /// It failed with loss, not only delay: trying again costs the
    /// receiver packets, so the next try waits longer.
    pub lossy: bool,
}

/// Loss (by bytes) over a probe's packets that still passes, over the
/// path's background loss: random loss on a path with room (a few percent
/// on Wi-Fi; the 5 % loss tests) is no sign the probe was too much. Taken
/// absolutely, a probe of ~40 packets through 5 % random loss failed
/// about one time in three, and a receiver started on the smallest layer
/// stayed there (15 fps, where the middle layer ran at 30).
const PASS_LOSS: f64 = 0.08;
/// Loss over the background above which a failure counts as lossy.
const LOSSY: f64 = 0.05;
/// The most of a path's loss taken as background: beyond it, loss is the
/// path turning packets away, not noise on it.
pub const MAX_BACKGROUND_LOSS: f64 = 0.1;
/// How much a probe's delay may grow, from just before it to its last
/// quarter, and still pass: a queue growing by that much means the path
/// was sent more than it carries.
const PASS_GROWTH: f64 = 0.04;
/// A running probe stops at once past these (it is failing, and more of
/// it would only fill the queue further). A queue that grew by
/// [`PASS_GROWTH`] fails the probe anyway; at 60 ms, a probe at 1.16
/// Mbit/s into a 1 Mbit/s link with a 4 KB bucket and a 100 ms queue ran
/// its whole 350 ms, filled the queue and lost 21 packets, and our page in
/// Chromium froze for 0.15–0.3 s on each such probe.
const ABORT_LOSS: f64 = 0.1;
const ABORT_GROWTH: f64 = PASS_GROWTH;
/// How far before a probe its baseline delay is read.
const BASELINE: Duration = Duration::from_millis(300);
/// A probe whose feedback has not come this long after it ended fails.
const GIVE_UP: Duration = Duration::from_secs(1);

/// The verdict on `cluster` from the reported packets `(departure, size,
/// one-way delay in seconds, or None if lost)` (the delay's origin is
/// arbitrary; only its changes count), at `now`, on a path that loses
/// `background` of what it is sent outside probes (see
/// [`MAX_BACKGROUND_LOSS`]). `None` while it cannot tell yet; a failure
/// before the probe's end stops it.
pub fn judge(
    cluster: &Cluster,
    packets: impl Iterator<Item = (Instant, usize, Option<f64>)> + Clone,
    now: Instant,
    background: f64,
) -> Option<Outcome> {
    let fail = |lossy| {
        Some(Outcome {
            rate: cluster.rate,
            passed: false,
            lossy,
        })
    };
    let baseline_from = cluster.start.checked_sub(BASELINE).unwrap_or(cluster.start);
    let mean = |it: &mut dyn Iterator<Item = f64>| {
        let (sum, n) = it.fold((0.0, 0usize), |(s, n), d| (s + d, n + 1));
        (n > 0).then(|| sum / n as f64)
    };
    let in_cluster = |d: Instant| d >= cluster.start && d <= cluster.end;
    let mut before = packets
        .clone()
        .filter(|p| p.0 >= baseline_from && p.0 < cluster.start)
        .filter_map(|p| p.2);
    let baseline = mean(&mut before).or_else(|| {
        // Nothing just before: its first packets, which found the queue
        // as it was.
        packets
            .clone()
            .filter(|p| in_cluster(p.0))
            .filter_map(|p| p.2)
            .take(3)
            .reduce(f64::min)
    });
    let (mut sent, mut lost, mut reported, mut newest) = (0usize, 0usize, 0usize, None);
    for (departure, size, delay) in packets.clone() {
        newest = newest.max(Some(departure));
        if in_cluster(departure) {
            reported += 1;
            sent += size;
            if delay.is_none() {
                lost += size;
            }
        }
    }
    let complete = newest.is_some_and(|n| n > cluster.end);
    if !complete && now > cluster.end + GIVE_UP {
        return fail(false);
    }
    let loss = if sent > 0 {
        lost as f64 / sent as f64
    } else {
        0.0
    };
    // What the probe lost beyond what the path loses anyway.
    let loss = (loss - background.clamp(0.0, MAX_BACKGROUND_LOSS)).max(0.0);
    if complete {
        let quarter = cluster.end - (cluster.end - cluster.start) / 4;
        let mut tail = packets
            .clone()
            .filter(|p| p.0 >= quarter && p.0 <= cluster.end)
            .filter_map(|p| p.2);
        let growth = match (baseline, mean(&mut tail)) {
            (Some(b), Some(t)) => t - b,
            // Nothing of its end arrived.
            _ => return fail(true),
        };
        let passed = loss <= PASS_LOSS && growth <= PASS_GROWTH;
        return Some(Outcome {
            rate: cluster.rate,
            passed,
            lossy: !passed && loss > LOSSY,
        });
    }
    // Still going: stop it early if it already fails.
    let mut latest: Vec<(Instant, f64)> = packets
        .filter(|p| in_cluster(p.0))
        .filter_map(|p| Some((p.0, p.2?)))
        .collect();
    latest.sort_by_key(|p| p.0);
    let recent = mean(&mut latest.iter().rev().take(5).map(|p| p.1));
    let growing = matches!((baseline, recent), (Some(b), Some(r)) if r - b > ABORT_GROWTH);
    if (reported >= 10 && loss > ABORT_LOSS) || growing {
        return fail(loss > LOSSY);
    }
    None
}

impl Feedback {
    /// Whether this receiver's path can be probed.
    pub fn can_probe(&self) -> bool {
        self.probe().ready
    }

    /// Asks for a probe at `rate` bit/s (unless one is asked for or
    /// running already); one that `decides` a step up runs longer.
    pub fn ask_probe(&self, rate: f64, decides: bool) {
        let mut p = self.probe();
        if p.ready && p.asked.is_none() && p.cluster.is_none() {
            p.asked = Some((rate, decides));
            self.probe_asked.store(true, Ordering::Release);
        }
    }

    /// The verdict on the last probe, once.
    pub fn take_probe_outcome(&self) -> Option<Outcome> {
        self.probe().outcome.take()
    }

    /// The probe that is running or awaits its verdict.
    pub(super) fn probe_cluster(&self) -> Option<Cluster> {
        self.probe().cluster
    }

    /// Records the verdict on the running probe (which stops it). (What
    /// the path carried when last full stays as it was: a short probe can
    /// pass on a token bucket's burst, and the smallest layer's encoder
    /// grows into that figure.)
    pub(super) fn end_probe(&self, outcome: Outcome) {
        let mut p = self.probe();
        p.cluster = None;
        p.outcome = Some(outcome);
        if outcome.passed {
            p.proven = Some(outcome.rate);
        }
    }

    /// The rate the last probe that passed sent at, bit/s.
    pub fn probed(&self) -> Option<f64> {
        self.probe().proven
    }
}

/// What a copy needs of a packet sent (no header allocation per packet).
struct Sent {
    seq: u16,
    timestamp: u32,
    marker: bool,
    payload: Bytes,
}

/// One video stream this connection sends, as the prober sees it.
struct Video {
    rtx_ssrc: u32,
    rtx_payload_type: u8,
    recent: VecDeque<Sent>,
    /// Which recent packet the next copy is of.
    next: usize,
}

/// A probe being sent: from `start` to `end`, everything the connection
/// sends (media, resends and copies) adds up to `rate`. Copies fill what
/// the media leaves, counted from the probe's own start: a baseline read
/// from what was sent before it would count the last probe's copies (a
/// probe right after another sent ~620 kbit/s when asked for 841 and
/// passed on a 600 kbit/s link) or a key frame's burst.
struct Running {
    start: Instant,
    end: Instant,
    rate: f64,
    /// Bits sent since `start`.
    sent: f64,
    /// When to send the next copies.
    wake: Instant,
}

/// Writes probes on one connection (see the module's doc) and numbers its
/// RTX packets. Sits wire-ward of the NACK responder (whose RTX packets
/// it renumbers) and application-ward of transport-wide numbering and
/// congestion control (so its packets are numbered and reported).
pub(in crate::session::rtc) struct Prober {
    feedback: Arc<Feedback>,
    /// By the primary SSRC.
    video: HashMap<u32, Video>,
    /// The next sequence number on each RTX SSRC.
    rtx_seq: HashMap<u32, u16>,
    running: Option<Running>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Prober {
    pub fn new(feedback: Arc<Feedback>) -> Self {
        Self {
            feedback,
            video: HashMap::new(),
            rtx_seq: HashMap::new(),
            running: None,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }

    /// Starts the probe asked for, if any.
    fn start(&mut self, now: Instant) {
        // (Every packet passes here: the lock only when a probe is asked.)
        let asked = &self.feedback.probe_asked;
        if self.running.is_some()
            || !asked.load(Ordering::Relaxed)
            || !asked.swap(false, Ordering::Acquire)
        {
            return;
        }
        let (rate, end) = {
            let mut p = self.feedback.probe();
            let Some((rate, decides)) = p.asked.take() else {
                return;
            };
            let end = now + PROBE_LENGTH * if decides { DECIDING } else { 1 };
            p.cluster = Some(Cluster {
                start: now,
                end,
                rate,
            });
            (rate, end)
        };
        self.running = Some(Running {
            start: now,
            end,
            rate,
            sent: 0.0,
            wake: now,
        });
    }

    /// An RTX copy of a recent video packet, numbered.
    fn copy(&mut self) -> Option<RtpPacket> {
        let video = self.video.values_mut().max_by_key(|v| v.recent.len())?;
        let n = video.recent.len();
        if n == 0 {
            return None;
        }
        // The biggest of the next few: fewer, fuller packets.
        let pick = (0..4)
            .map(|k| (video.next + k) % n)
            .max_by_key(|&i| video.recent[i].payload.len())?;
        video.next = (pick + 1) % n;
        let original = &video.recent[pick];
        let mut payload = Vec::with_capacity(2 + original.payload.len());
        payload.extend_from_slice(&original.seq.to_be_bytes());
        payload.extend_from_slice(&original.payload);
        let (ssrc, payload_type) = (video.rtx_ssrc, video.rtx_payload_type);
        let header = Header {
            version: 2,
            ssrc,
            payload_type,
            sequence_number: 0,
            timestamp: original.timestamp,
            marker: original.marker,
            ..Default::default()
        };
        let mut packet = RtpPacket {
            header,
            payload: payload.into(),
        };
        self.renumber(&mut packet);
        Some(packet)
    }

    fn renumber(&mut self, packet: &mut RtpPacket) {
        if let Some(seq) = self.rtx_seq.get_mut(&packet.header.ssrc) {
            packet.header.sequence_number = *seq;
            *seq = seq.wrapping_add(1);
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for Prober {
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

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(p) = &mut msg.message.packet {
            self.renumber(p);
            if let Some(video) = self.video.get_mut(&p.header.ssrc) {
                if video.recent.len() == KEEP {
                    video.recent.pop_front();
                }
                video.recent.push_back(Sent {
                    seq: p.header.sequence_number,
                    timestamp: p.header.timestamp,
                    marker: p.header.marker,
                    payload: p.payload.clone(),
                });
            }
            if let Some(running) = self.running.as_mut() {
                running.sent += p.marshal_size() as f64 * 8.0;
            }
            self.start(msg.now);
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        let Some(running) = self.running.as_mut() else {
            return Ok(());
        };
        // Stopped early (it failed), or over.
        if now >= running.end || self.feedback.probe_cluster().is_none() {
            let secs = now.saturating_duration_since(running.start).as_secs_f64();
            tracing::trace!(
                "probe at {:.0} kbit/s sent {:.0} kbit/s over {:.0} ms",
                running.rate / 1e3,
                running.sent / secs.max(1e-3) / 1e3,
                secs * 1e3
            );
            self.running = None;
            return Ok(());
        }
        let due = running.rate * now.saturating_duration_since(running.start).as_secs_f64();
        let mut owed = due - running.sent;
        while owed > 0.0 {
            let Some(packet) = self.copy() else {
                break;
            };
            let bits = packet.marshal_size() as f64 * 8.0;
            owed -= bits;
            if let Some(running) = self.running.as_mut() {
                running.sent += bits;
            }
            self.write.push_back(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtp(packet)).with(Attribute::Retransmission),
            });
        }
        if let Some(running) = self.running.as_mut() {
            let wait = if running.rate > 0.0 {
                Duration::from_secs_f64(((WAKE_BITS - owed) / running.rate).max(0.0))
            } else {
                MAX_WAKE
            };
            running.wake = now + wait.clamp(MIN_WAKE, MAX_WAKE);
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.running.as_ref().map(|r| r.wake.min(r.end))
    }
}

impl Interceptor for Prober {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let (Some(rtx_ssrc), Some(rtx_payload_type)) = (info.ssrc_rtx, info.payload_type_rtx)
        else {
            return;
        };
        self.rtx_seq.insert(rtx_ssrc, rand::random());
        self.video.insert(
            info.ssrc,
            Video {
                rtx_ssrc,
                rtx_payload_type,
                recent: VecDeque::new(),
                next: 0,
            },
        );
        self.feedback.probe().ready = true;
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(video) = self.video.remove(&info.ssrc) {
            self.rtx_seq.remove(&video.rtx_ssrc);
        }
        self.feedback.probe().ready = !self.video.is_empty();
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` packets of 1,200 bytes from `t0 + from` every `gap`, each with
    /// the delay `delay(k)` (None: lost).
    fn train(
        t0: Instant,
        from: Duration,
        n: usize,
        gap: Duration,
        delay: impl Fn(usize) -> Option<f64>,
    ) -> Vec<(Instant, usize, Option<f64>)> {
        (0..n)
            .map(|k| (t0 + from + gap * k as u32, 1200, delay(k)))
            .collect()
    }

    fn cluster(t0: Instant) -> Cluster {
        Cluster {
            start: t0 + Duration::from_millis(300),
            end: t0 + Duration::from_millis(300) + PROBE_LENGTH,
            rate: 1e6,
        }
    }

    #[test]
    fn a_probe_that_crossed_with_no_loss_and_no_queue_passes() {
        let t0 = Instant::now();
        let c = cluster(t0);
        let packets = train(t0, Duration::ZERO, 100, Duration::from_millis(8), |_| {
            Some(0.02)
        });
        let now = t0 + Duration::from_secs(1);
        let out = judge(&c, packets.iter().copied(), now, 0.0).expect("complete");
        assert!(out.passed, "{out:?}");
    }

    #[test]
    fn a_probe_is_pending_until_a_later_packet_is_reported() {
        let t0 = Instant::now();
        let c = cluster(t0);
        // Up to the probe's middle, all on time.
        let packets = train(t0, Duration::ZERO, 60, Duration::from_millis(8), |_| {
            Some(0.02)
        });
        assert_eq!(judge(&c, packets.iter().copied(), c.start, 0.0), None);
        // Nothing more for over a second after its end: it fails.
        let late = c.end + GIVE_UP + Duration::from_millis(1);
        let out = judge(&c, packets.iter().copied(), late, 0.0).unwrap();
        assert!(!out.passed && !out.lossy, "{out:?}");
    }

    #[test]
    fn a_growing_queue_fails_a_probe_without_loss() {
        let t0 = Instant::now();
        let c = cluster(t0);
        // Delay grows 2 ms a packet (every 8 ms) from the probe's start.
        let start = (c.start - t0).as_millis() as usize / 8;
        let packets = train(t0, Duration::ZERO, 100, Duration::from_millis(8), |k| {
            Some(0.02 + 0.002 * k.saturating_sub(start) as f64)
        });
        // Stopped while running, once the delay grew past what fails it
        // (its last five packets 40 ms over the baseline: ~200 ms in).
        let upto = |ms| -> Vec<_> {
            packets
                .iter()
                .copied()
                .filter(|p| p.0 < c.start + Duration::from_millis(ms))
                .collect()
        };
        assert_eq!(judge(&c, upto(150).into_iter(), c.start, 0.0), None);
        let early = judge(&c, upto(210).into_iter(), c.start, 0.0).expect("stops early");
        assert!(!early.passed && !early.lossy, "{early:?}");
        let out = judge(&c, packets.iter().copied(), c.end + PROBE_LENGTH, 0.0).unwrap();
        assert!(!out.passed && !out.lossy, "{out:?}");
    }

    #[test]
    fn a_probe_that_lost_a_share_fails_as_lossy() {
        let t0 = Instant::now();
        let c = cluster(t0);
        let packets = train(t0, Duration::ZERO, 100, Duration::from_millis(8), |k| {
            (k % 5 != 0).then_some(0.02)
        });
        // (The loss before it does not count; a fifth of its own does.)
        let out = judge(&c, packets.iter().copied(), c.end + PROBE_LENGTH, 0.0).unwrap();
        assert!(!out.passed && out.lossy, "{out:?}");
    }

    #[test]
    fn loss_the_path_has_anyway_does_not_fail_a_probe() {
        let t0 = Instant::now();
        let c = cluster(t0);
        // Every tenth packet lost, before the probe and during it.
        let packets = train(t0, Duration::ZERO, 100, Duration::from_millis(8), |k| {
            (k % 10 != 0).then_some(0.02)
        });
        let done = c.end + PROBE_LENGTH;
        // A path that loses 10 % anyway: the probe lost no more.
        let out = judge(&c, packets.iter().copied(), done, 0.1).unwrap();
        assert!(out.passed, "{out:?}");
        // A clean path: 10 % is the probe's doing.
        let out = judge(&c, packets.iter().copied(), done, 0.0).unwrap();
        assert!(!out.passed && out.lossy, "{out:?}");
        // Background beyond the cap is congestion, not noise: a probe that
        // lost a fifth fails on a path said to lose 30 %.
        let heavy = train(t0, Duration::ZERO, 100, Duration::from_millis(8), |k| {
            (k % 5 != 0).then_some(0.02)
        });
        let out = judge(&c, heavy.iter().copied(), done, 0.3).unwrap();
        assert!(!out.passed && out.lossy, "{out:?}");
    }
}
