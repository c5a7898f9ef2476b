//! What a sender learns from each receiver's RTCP: [`Feedback`], the
//! [`SenderFeedback`] interceptor that fills most of it in, and
//! [`Estimator`], congestion control that also tells what the path
//! delivers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, BandwidthEstimator, EstimatorStats, Gcc, Interceptor, Packet, PacketReport,
    RateCalculator, StreamInfo, TaggedPacket,
};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

use super::is_keyframe_request;
use super::retransmit::RetransmitBudget;

/// What one receiver's feedback says about its path, written by the
/// connection's interceptors and read by the tracks' writers.
#[derive(Debug, Default)]
pub struct Feedback {
    /// Bandwidth estimate in bit/s (as f64 bits); 0 until the first
    /// transport-wide feedback.
    estimate: AtomicU64,
    /// Fraction lost in the latest receiver report, in 1/256.
    loss: AtomicU32,
    /// While the path is full: the most the receiver reported arriving
    /// (over [`DELIVERED_WINDOW`]) in the last [`FULL_MEMORY`], in bit/s
    /// (as f64 bits); 0 otherwise.
    carried: AtomicU64,
    /// What the receiver reported arriving over the last
    /// [`DELIVERED_WINDOW`], bit/s (as f64 bits); 0 until known.
    delivered: AtomicU64,
    /// NACK answers: bytes sent again, and answers dropped over budget
    /// (see `RetransmitBudget`).
    resent_bytes: AtomicU64,
    resends_dropped: AtomicU64,
}

impl Feedback {
    pub fn estimate(&self) -> Option<f64> {
        let e = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        (e > 0.0).then_some(e)
    }

    /// Fraction of packets lost, 0..=1.
    pub fn loss(&self) -> f64 {
        f64::from(self.loss.load(Ordering::Relaxed)) / 256.0
    }

    /// A receiver whose feedback said `estimate` and `delivered` bit/s.
    #[cfg(test)]
    pub(super) fn reporting(estimate: f64, delivered: f64) -> Self {
        let f = Self::default();
        f.estimate.store(estimate.to_bits(), Ordering::Relaxed);
        f.delivered.store(delivered.to_bits(), Ordering::Relaxed);
        f
    }

    /// Bytes sent again on NACKs, and NACK answers dropped over budget.
    pub fn resends(&self) -> (u64, u64) {
        (
            self.resent_bytes.load(Ordering::Relaxed),
            self.resends_dropped.load(Ordering::Relaxed),
        )
    }

    /// What the receiver reported arriving lately, bit/s.
    pub fn delivered(&self) -> Option<f64> {
        let d = f64::from_bits(self.delivered.load(Ordering::Relaxed));
        (d > 0.0).then_some(d)
    }

    /// What the path carries, bit/s, when it is full: lately it lost more
    /// than [`FULL_LOSS`] of what it was sent, so what it delivered is all
    /// it takes. `None` while it delivers (nearly) everything.
    pub fn carried(&self) -> Option<f64> {
        let d = f64::from_bits(self.carried.load(Ordering::Relaxed));
        (d > 0.0).then_some(d)
    }
}

/// Share of what was sent over [`DELIVERED_WINDOW`] that a path must
/// lose to count as full. A bottleneck's queue overflowing loses a large
/// share (a 2.5 Mbit/s layer into 1 Mbit/s: over half, into 300 kbit/s:
/// 85 %; the 0.6 Mbit/s layer into 600 kbit/s: ~15 %); random loss on a
/// path with room, a few percent. (Chromium's NACK storm, before
/// `RetransmitBudget`, made paths with room lose 15–25 %.)
const FULL_LOSS: f64 = 0.1;

/// While a path is full, what it carries is the most it delivered over
/// this long: long enough to span a step down (after which it delivers
/// only what is sent), short enough that what came through before a link
/// narrowed has left it by the next step.
const FULL_MEMORY: Duration = Duration::from_millis(500);

/// How far back the sent and delivered rates look: long enough to span
/// several feedback reports (one per 100 ms), short enough that a path
/// stops counting as full soon after the sender stepped down.
const DELIVERED_WINDOW: Duration = Duration::from_millis(500);

/// Google Congestion Control (webrtc-rs's) that also tells, into
/// [`Feedback`], what a full path carries: what the receiver reports
/// arriving while much of what was sent is lost. That lets the layer
/// chooser tell a layer the path just proved too big from one it only
/// passed on the way down.
pub(in crate::session::rtc) struct Estimator {
    gcc: Gcc,
    sent: RateCalculator,
    delivered: RateCalculator,
    /// While the path is full, what it delivered, at each report.
    full: VecDeque<(Instant, f64)>,
    feedback: Arc<Feedback>,
}

impl Estimator {
    /// Starts at `start` bit/s, within `min..=max`.
    pub fn new(start: f64, min: f64, max: f64, feedback: Arc<Feedback>) -> Self {
        Self {
            gcc: Gcc::new(start, min, max),
            sent: RateCalculator::new(DELIVERED_WINDOW),
            delivered: RateCalculator::new(DELIVERED_WINDOW),
            full: VecDeque::new(),
            feedback,
        }
    }
}

impl BandwidthEstimator for Estimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        // webrtc-rs records every packet of every stream, for RFC 8888
        // feedback too, and reports a packet that transport-wide feedback
        // can never name (a stream the receiver took without the
        // transport-cc extension) as lost once a later one arrives.
        // Transport-wide feedback speaks only for the packets it numbers.
        // (Our receivers and Chromium number every stream; a receiver that
        // takes the extension for video only would otherwise show its
        // audio as loss.)
        let numbered: Vec<PacketReport>;
        let mixed = reports.iter().any(|r| r.is_twcc) && reports.iter().any(|r| !r.is_twcc);
        let reports = if mixed {
            numbered = reports.iter().filter(|r| r.is_twcc).cloned().collect();
            &numbered[..]
        } else {
            reports
        };
        self.gcc.on_reports(now, reports);
        for r in reports {
            self.sent.add(now, r.size);
            if r.arrived {
                self.delivered.add(now, r.size);
            }
        }
        let sent = self.sent.rate_bits_per_second(now);
        let delivered = self.delivered.rate_bits_per_second(now);
        // While full, the most it delivered lately: once the sender steps
        // down, the window still holds the loss, but what arrives is then
        // what was sent, not what the path takes.
        match (sent, delivered) {
            (Some(s), Some(d)) if d < s * (1.0 - FULL_LOSS) => self.full.push_back((now, d)),
            // Nothing arrived, or (nearly) everything: the estimate decides.
            _ => self.full.clear(),
        }
        while self
            .full
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > FULL_MEMORY)
        {
            self.full.pop_front();
        }
        self.feedback
            .delivered
            .store(delivered.unwrap_or(0.0).to_bits(), Ordering::Relaxed);
        let carried = self.full.iter().map(|(_, d)| *d).fold(0.0, f64::max);
        self.feedback
            .carried
            .store(carried.to_bits(), Ordering::Relaxed);
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.gcc.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.gcc.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

/// A sender's view of one receiver's RTCP: marks key-frame requests for
/// delivery to the application (webrtc-rs keeps RTCP to its interceptors
/// otherwise), and keeps the bandwidth estimate that congestion control
/// attaches to transport feedback, and the loss receiver reports tell.
/// On the way out, keeps the NACK responder's retransmissions within a
/// [`RetransmitBudget`]. Sits application-ward of congestion control, so
/// it sees the estimate, and wire-ward of the NACK responder, so its
/// retransmissions pass (and ahead of transport-wide numbering, so one
/// dropped leaves no gap in the numbers).
pub(in crate::session::rtc) struct SenderFeedback {
    feedback: Arc<Feedback>,
    budget: RetransmitBudget,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl SenderFeedback {
    pub fn new(feedback: Arc<Feedback>) -> Self {
        Self {
            feedback,
            budget: RetransmitBudget::default(),
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SenderFeedback {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        let mut deliver = false;
        if let Packet::Rtcp(packets) = &msg.message.packet {
            deliver = packets.iter().any(|p| is_keyframe_request(p.as_ref()));
            let lost = packets
                .iter()
                .filter_map(|p| p.as_any().downcast_ref::<ReceiverReport>())
                .flat_map(|rr| rr.reports.iter().map(|r| r.fraction_lost))
                .max();
            if let Some(lost) = lost {
                self.feedback.loss.store(u32::from(lost), Ordering::Relaxed);
            }
        }
        if deliver {
            msg.message.add(Attribute::DeliverToApplication);
        }
        let changed = Attribute::TargetBitrateChanged {
            bits_per_second: 0.0,
        };
        if let Some(Attribute::TargetBitrateChanged { bits_per_second }) = msg.message.get(&changed)
        {
            self.feedback
                .estimate
                .store(bits_per_second.to_bits(), Ordering::Relaxed);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(p) = &msg.message.packet {
            if msg.message.has(&Attribute::Retransmission) {
                let size = p.marshal_size();
                if !self.budget.spend(&self.feedback, msg.now, size) {
                    self.feedback
                        .resends_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                self.feedback
                    .resent_bytes
                    .fetch_add(size as u64, Ordering::Relaxed);
            }
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for SenderFeedback {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
