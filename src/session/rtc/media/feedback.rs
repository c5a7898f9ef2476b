//! What a sender learns from each receiver's RTCP: [`Feedback`], the
//! [`SenderFeedback`] interceptor that fills most of it in, and
//! [`Estimator`], congestion control that also tells what the path
//! delivers.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, BandwidthEstimator, EstimatorStats, Gcc, Interceptor, Packet, PacketReport,
    StreamInfo, TaggedPacket,
};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

use super::is_keyframe_request;
use super::probe::{self, ProbeState};
use super::retransmit::{RecentResends, RetransmitBudget};

/// What one receiver's feedback says about its path, written by the
/// connection's interceptors and read by the tracks' writers.
#[derive(Debug, Default)]
pub struct Feedback {
    /// Bandwidth estimate in bit/s (as f64 bits); 0 until the first
    /// transport-wide feedback.
    estimate: AtomicU64,
    /// Fraction lost in the latest receiver report, in 1/256.
    loss: AtomicU32,
    /// While the path is full: the most that arrived (over
    /// [`BUSY_WINDOW`] of the receiver's clock) in the last
    /// [`FULL_MEMORY`], in bit/s
    /// (as f64 bits); 0 otherwise.
    carried: AtomicU64,
    /// What the path carried when it was last full, bit/s (as f64 bits):
    /// the middle of the readings `carried` is the most of, remembered; 0
    /// until the path has been full once.
    capacity: AtomicU64,
    /// What the receiver reported arriving over the last
    /// [`DELIVERED_WINDOW`] of its clock, bit/s (as f64 bits); 0 until
    /// known.
    delivered: AtomicU64,
    /// NACK answers: bytes sent again, and answers dropped over budget
    /// (see `RetransmitBudget`).
    resent_bytes: AtomicU64,
    resends_dropped: AtomicU64,
    /// NACKs not answered because the last answer for the same packet
    /// could not have arrived yet (see `RecentResends`).
    resends_repeated: AtomicU64,
    /// The path's round trip as ICE measured it at connection, in µs
    /// plus one; 0 until known.
    round_trip_us: AtomicU64,
    /// The receiver is being moved to a smaller layer: what it is sent
    /// again of the layer it leaves would only queue ahead of the new
    /// layer's key frame, so NACKs go unanswered meanwhile.
    stepping_down: AtomicBool,
    /// Probing this receiver's path (see `probe.rs`), and whether a probe
    /// is asked for (read without the lock, for every packet sent).
    probe: Mutex<ProbeState>,
    pub(super) probe_asked: AtomicBool,
    /// The rate the receiver's video is paced at, bit/s (as f64 bits); 0:
    /// not paced (see `pacer.rs`).
    pace: AtomicU64,
    /// The queue standing in front of the receiver (see [`QueueMeter`]),
    /// in µs plus one; 0 until the first report.
    queue_us: AtomicU64,
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

    /// Bytes sent again on NACKs, NACK answers dropped over budget, and
    /// NACKs not answered as the last answer was still on its way.
    pub fn resends(&self) -> (u64, u64, u64) {
        (
            self.resent_bytes.load(Ordering::Relaxed),
            self.resends_dropped.load(Ordering::Relaxed),
            self.resends_repeated.load(Ordering::Relaxed),
        )
    }

    /// The path's round trip, as ICE measured it at connection.
    pub fn set_round_trip(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX - 1);
        self.round_trip_us.store(us + 1, Ordering::Relaxed);
    }

    /// How long an answer to a NACK takes to reach the receiver: the round
    /// trip and the queue standing in front of the receiver, and a
    /// quarter more for the pacer and the receiver's own timing.
    fn repair_time(&self) -> Duration {
        let rtt = match self.round_trip_us.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            us => Duration::from_micros(us - 1),
        };
        (rtt + self.queue().unwrap_or_default()) * 5 / 4
    }

    /// What the receiver reported arriving lately, bit/s.
    pub fn delivered(&self) -> Option<f64> {
        let d = f64::from_bits(self.delivered.load(Ordering::Relaxed));
        (d > 0.0).then_some(d)
    }

    /// What the path carries, bit/s, when it is full: lately it lost more
    /// than [`FULL_LOSS`] of what it was sent beyond what it loses anyway,
    /// so what it delivered is all it takes. `None` while it delivers (nearly) everything.
    pub fn carried(&self) -> Option<f64> {
        let d = f64::from_bits(self.carried.load(Ordering::Relaxed));
        (d > 0.0).then_some(d)
    }

    /// Says whether the receiver is being moved to a smaller layer (see
    /// `stepping_down`).
    pub fn set_stepping_down(&self, yes: bool) {
        // Called for every packet forwarded: write only a change.
        if self.stepping_down.load(Ordering::Relaxed) != yes {
            self.stepping_down.store(yes, Ordering::Relaxed);
        }
    }

    /// What the path carried the last time it was full, bit/s: a path that lets all
    /// it is sent through says nothing of how much more it could take
    /// (GCC's estimate then only climbs), so this is the best known bound
    /// on it (probes tell more: `probed`). `None` until it has been full once.
    pub fn capacity(&self) -> Option<f64> {
        let c = f64::from_bits(self.capacity.load(Ordering::Relaxed));
        (c > 0.0).then_some(c)
    }

    /// The queue standing in front of the receiver at the last report
    /// (its least one-way delay over the least of the last
    /// [`FLOOR_MEMORY`]), if reported yet.
    pub fn queue(&self) -> Option<Duration> {
        match self.queue_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us - 1)),
        }
    }

    /// Paces the receiver's video at `bps` (see `pacer.rs`).
    pub fn set_pace(&self, bps: f64) {
        // Called for every packet forwarded: write only a change.
        let bits = bps.to_bits();
        if self.pace.load(Ordering::Relaxed) != bits {
            self.pace.store(bits, Ordering::Relaxed);
        }
    }

    /// The rate the receiver's video is paced at, bit/s, if it is.
    pub fn pace(&self) -> Option<f64> {
        let p = f64::from_bits(self.pace.load(Ordering::Relaxed));
        (p > 0.0).then_some(p)
    }

    pub(super) fn probe(&self) -> MutexGuard<'_, ProbeState> {
        self.probe.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Share of what was sent over [`DELIVERED_WINDOW`] that a path must
/// lose, beyond its background loss, to count as full. A bottleneck's queue overflowing loses a large
/// share (a 2.5 Mbit/s layer into 1 Mbit/s: over half, into 300 kbit/s:
/// 85 %; the 0.6 Mbit/s layer into 600 kbit/s: ~15 %); random loss on a
/// path with room, a few percent. (Chromium's NACK storm, before
/// `RetransmitBudget`, made paths with room lose 15–25 %.)
const FULL_LOSS: f64 = 0.1;

/// How long a path's least one-way delay is remembered as its floor: the
/// delay with no queue in front of the receiver. (The clocks of sender and
/// receiver drift apart by parts per million: microseconds over this.)
const FLOOR_MEMORY: Duration = Duration::from_secs(10);

/// The queue standing in front of a receiver: the least one-way delay of
/// the latest report above the least of the last [`FLOOR_MEMORY`]. The
/// least of a report, not its mean: the first packet of a frame finds the
/// queue a burst has not filled yet, so only a queue that stays between
/// frames shows.
#[derive(Debug, Default)]
struct QueueMeter {
    /// Each report's least one-way delay (seconds, any origin), and when.
    least: VecDeque<(Instant, f64)>,
}

impl QueueMeter {
    /// A report at `now` whose least one-way delay was `least`: the queue
    /// standing now.
    fn add(&mut self, now: Instant, least: f64) -> Duration {
        self.least.push_back((now, least));
        while self
            .least
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > FLOOR_MEMORY)
        {
            self.least.pop_front();
        }
        let floor = self
            .least
            .iter()
            .map(|(_, d)| *d)
            .fold(f64::INFINITY, f64::min);
        Duration::from_secs_f64((least - floor).max(0.0))
    }
}

/// While a path is full, what it carries is the most it delivered over
/// this long: long enough to span a step down (after which it delivers
/// only what is sent, while the loss before it is still being reported:
/// up to the [`DELIVERED_WINDOW`] plus a queue's delay and a feedback
/// interval), short enough that a reading taken as a link narrowed
/// leaves soon.
const FULL_MEMORY: Duration = Duration::from_millis(1000);

/// While a path is full, what it delivers is read over this much of the
/// receiver's clock: short, so that a reading soon after a link narrowed
/// holds only what came through the narrower link.
const BUSY_WINDOW: Duration = Duration::from_millis(250);

/// How far back the sent and delivered rates look: long enough to span
/// several feedback reports (one per 100 ms), short enough that a path
/// stops counting as full soon after the sender stepped down.
const DELIVERED_WINDOW: Duration = Duration::from_millis(500);

/// What the feedback on one path says of the packets sent over it lately,
/// timed by each packet's own departure (our clock) and arrival (the
/// receiver's), not by when the feedback came: a loss is reported one
/// feedback interval and a queue's delay after the packet left, so rates
/// taken at report time mix packets sent before a step down with those
/// after it, and a path that delivers 1 Mbit/s could read as 0.6 for a
/// moment right after the sender stepped down to 0.7.
#[derive(Debug, Default)]
struct PathMeter {
    /// Reported packets, in send order: when each left, its size, and
    /// when it arrived (`None`: lost). Kept for twice the window.
    packets: VecDeque<(Instant, usize, Option<Duration>)>,
}

impl PathMeter {
    fn add(&mut self, departure: Instant, size: usize, arrival: Option<Duration>) {
        self.packets.push_back((departure, size, arrival));
        let newest = departure;
        while self
            .packets
            .front()
            .is_some_and(|p| newest.saturating_duration_since(p.0) > 2 * DELIVERED_WINDOW)
        {
            self.packets.pop_front();
        }
    }

    /// The share (by bytes) of the packets sent over the last window that
    /// the receiver reported lost.
    #[cfg(test)]
    fn loss(&self) -> Option<f64> {
        self.window_loss().map(|w| w.share)
    }

    /// What the receiver reported lost of the packets sent over the last
    /// window.
    fn window_loss(&self) -> Option<WindowLoss> {
        let newest = self.packets.iter().map(|p| p.0).max()?;
        let (mut sent, mut lost, mut packets, mut lost_packets) = (0usize, 0usize, 0usize, 0usize);
        for &(departure, size, arrival) in &self.packets {
            if newest.saturating_duration_since(departure) <= DELIVERED_WINDOW {
                sent += size;
                packets += 1;
                if arrival.is_none() {
                    lost += size;
                    lost_packets += 1;
                }
            }
        }
        (sent > 0).then(|| WindowLoss {
            share: lost as f64 / sent as f64,
            packets,
            lost: lost_packets,
        })
    }

    /// What arrived over the last `window` of the receiver's clock,
    /// bit/s: while the path is full, the rate its bottleneck lets
    /// through. `None` until arrivals span [`MIN_SPAN`].
    fn delivered(&self, window: Duration) -> Option<f64> {
        const MIN_SPAN: Duration = Duration::from_millis(50);
        let newest = self.packets.iter().filter_map(|p| p.2).max()?;
        // The earliest packet's bytes arrived before the span starts.
        let mut first: Option<(Duration, usize)> = None;
        let mut bytes = 0usize;
        for &(_, size, arrival) in &self.packets {
            let Some(at) = arrival.filter(|&at| newest.saturating_sub(at) <= window) else {
                continue;
            };
            bytes += size;
            if first.is_none_or(|(f, _)| at < f) {
                first = Some((at, size));
            }
        }
        let (first, first_size) = first?;
        let bytes = bytes - first_size;
        let span = newest.saturating_sub(first);
        (span >= MIN_SPAN).then(|| bytes as f64 * 8.0 / span.as_secs_f64())
    }
}

/// The loss over a [`PathMeter`]'s window: by bytes, and in packets.
#[derive(Debug, Clone, Copy)]
struct WindowLoss {
    share: f64,
    packets: usize,
    lost: usize,
}

impl WindowLoss {
    /// Whether the path is turning packets away (full), not only losing
    /// what it loses anyway: it lost more than [`FULL_LOSS`] beyond its
    /// `background` loss, and more packets than that background loses by
    /// chance ([`CHANCE_SIGMAS`] standard deviations of its binomial).
    ///
    /// A fixed 10 % read 5 % random loss as a full path: over the middle
    /// layer's ~35 packets in half a second it loses 10 % about one time
    /// in fifteen. The path then "carried" what it was sent, the chooser
    /// stepped down below it, and a receiver at 5 % loss sank to the
    /// smallest layer within seconds of reaching the full one (the link
    /// matrix's 5 % loss cell, p2p → p2p and our page).
    fn overflowing(&self, background: f64) -> bool {
        let background = background.clamp(0.0, probe::MAX_BACKGROUND_LOSS);
        // Random loss too rare to have been seen still happens.
        let p = background.max(MIN_CHANCE_LOSS);
        let n = self.packets as f64;
        let by_chance = n * p + CHANCE_SIGMAS * (n * p * (1.0 - p)).sqrt();
        self.share > FULL_LOSS + background && self.lost as f64 > by_chance
    }
}

/// How far above the loss a path's background loss explains, in standard
/// deviations, a window's lost packets must be to say the path is full:
/// at 3, 5 % random loss reads full about once in 250 windows of the
/// middle layer, once in thousands of the full one.
const CHANCE_SIGMAS: f64 = 3.0;

/// The least random loss assumed when telling a full path from bad luck
/// (see [`WindowLoss::overflowing`]): a path whose loss has not been
/// learnt yet may still lose a little.
const MIN_CHANCE_LOSS: f64 = 0.01;

/// Google Congestion Control (webrtc-rs's) that also tells, into
/// [`Feedback`], what a full path carries: what the receiver reports
/// arriving while much of what was sent is lost. That lets the layer
/// chooser tell a layer the path just proved too big from one it only
/// passed on the way down.
pub(in crate::session::rtc) struct Estimator {
    gcc: Gcc,
    path: PathMeter,
    queue: QueueMeter,
    /// While the path is full, what it delivered, at each report.
    full: VecDeque<(Instant, f64)>,
    feedback: Arc<Feedback>,
    /// Where one-way delays are counted from (only their changes count).
    origin: Instant,
    /// The path's loss outside probes, smoothed over reports (see
    /// [`BACKGROUND_WEIGHT`]): what a probe's own loss is weighed against.
    background_loss: f64,
    /// Reports the background loss has taken.
    background_reports: u32,
}

/// Weight of each report's loss in the background loss: ~20 reports
/// (~2 s) make it, so a burst of congestion moves it little while random
/// loss sets it. The first reports weigh more (the first a quarter, then
/// a fifth, …, down to this), so a path that loses 5 % is known to within
/// about its first second, when a receiver's first probes go.
const BACKGROUND_WEIGHT: f64 = 0.05;

impl Estimator {
    /// Starts at `start` bit/s, within `min..=max`.
    pub fn new(start: f64, min: f64, max: f64, feedback: Arc<Feedback>) -> Self {
        Self {
            gcc: Gcc::new(start, min, max),
            path: PathMeter::default(),
            queue: QueueMeter::default(),
            full: VecDeque::new(),
            feedback,
            origin: Instant::now(),
            background_loss: 0.0,
            background_reports: 0,
        }
    }

    /// Whether the path is turning packets away now (see
    /// [`WindowLoss::overflowing`]).
    fn overflowing(&self) -> bool {
        self.path
            .window_loss()
            .is_some_and(|w| w.overflowing(self.background_loss))
    }

    /// Judges the probe awaiting its verdict, if any, on what the
    /// receiver reported of its packets.
    fn judge_probe(&self, now: Instant) {
        let Some(cluster) = self.feedback.probe_cluster() else {
            return;
        };
        let origin = self.origin;
        let since = |t: Instant| match t.checked_duration_since(origin) {
            Some(d) => d.as_secs_f64(),
            None => -origin.duration_since(t).as_secs_f64(),
        };
        let packets = self
            .path
            .packets
            .iter()
            .map(move |&(departure, size, arrival)| {
                let delay = arrival.map(|a| a.as_secs_f64() - since(departure));
                (departure, size, delay)
            });
        if let Some(outcome) = probe::judge(&cluster, packets, now, self.background_loss) {
            tracing::debug!(
                "probe at {:.0} kbit/s: {}",
                cluster.rate / 1e3,
                if outcome.passed {
                    "passed"
                } else if outcome.lossy {
                    "failed with loss"
                } else {
                    "failed (queue grew)"
                }
            );
            self.feedback.end_probe(outcome);
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
        // The estimate, from the first report on: GCC announces a target
        // only when it changes, and one that holds its start (it does
        // while loss stays between 2 and 10 %: random loss of 5 %) was
        // never announced, so the layer chooser went on as if the
        // receiver sent no feedback at all.
        self.feedback
            .estimate
            .store(self.gcc.target_bitrate().to_bits(), Ordering::Relaxed);
        let origin = self.origin;
        // Loss outside probes, and while the path is not full (turning
        // packets away, FULL_LOSS): what this path loses anyway. Loss on a
        // full one-packet bucket is the path saying no, and taken as
        // background it let probes pass that froze the video for seconds.
        let full = self.overflowing() || !self.full.is_empty();
        if self.feedback.probe_cluster().is_none() && !full {
            let (sent, lost) = reports.iter().fold((0usize, 0usize), |(s, l), r| {
                (s + r.size, l + if r.arrived { 0 } else { r.size })
            });
            if sent > 0 {
                let loss = lost as f64 / sent as f64;
                self.background_reports = self.background_reports.saturating_add(1);
                let weight = BACKGROUND_WEIGHT.max(1.0 / f64::from(self.background_reports + 3));
                self.background_loss += weight * (loss - self.background_loss);
            }
        }
        let mut least: Option<f64> = None;
        for r in reports {
            let arrival = r.arrival.filter(|_| r.arrived);
            self.path.add(r.departure, r.size, arrival);
            if let Some(a) = arrival {
                let sent = match r.departure.checked_duration_since(origin) {
                    Some(d) => d.as_secs_f64(),
                    None => -origin.duration_since(r.departure).as_secs_f64(),
                };
                let delay = a.as_secs_f64() - sent;
                least = Some(least.map_or(delay, |l: f64| l.min(delay)));
            }
        }
        if let Some(least) = least {
            let queue = self.queue.add(now, least);
            let us = u64::try_from(queue.as_micros()).unwrap_or(u64::MAX - 1);
            self.feedback.queue_us.store(us + 1, Ordering::Relaxed);
        }
        let delivered = self.path.delivered(DELIVERED_WINDOW);
        // While full, the most it delivered lately: a step down empties
        // the bottleneck's queue, and what arrives then is what was sent,
        // not what the path takes.
        match (self.overflowing(), self.path.delivered(BUSY_WINDOW)) {
            (true, Some(d)) => self.full.push_back((now, d)),
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
        // What it carries, for later: the middle reading, not the most (a
        // token bucket's burst can inflate one), nor the last (after a
        // step down, what was sent).
        if !self.full.is_empty() {
            let mut readings: Vec<f64> = self.full.iter().map(|(_, d)| *d).collect();
            readings.sort_by(f64::total_cmp);
            let median = readings[readings.len() / 2];
            self.feedback
                .capacity
                .store(median.to_bits(), Ordering::Relaxed);
        }
        self.judge_probe(now);
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
    recent: RecentResends,
    /// The RTX streams' SSRCs: their packets carry the original sequence
    /// number in front of the payload.
    rtx: HashSet<u32>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl SenderFeedback {
    pub fn new(feedback: Arc<Feedback>) -> Self {
        Self {
            feedback,
            budget: RetransmitBudget::default(),
            recent: RecentResends::default(),
            rtx: HashSet::new(),
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
                let seq = match (self.rtx.contains(&p.header.ssrc), &p.payload[..]) {
                    (true, [hi, lo, ..]) => u16::from_be_bytes([*hi, *lo]),
                    _ => p.header.sequence_number,
                };
                let wait = self.feedback.repair_time();
                if self.recent.too_soon((p.header.ssrc, seq), msg.now, wait) {
                    self.feedback
                        .resends_repeated
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                let size = p.marshal_size();
                if self.feedback.stepping_down.load(Ordering::Relaxed)
                    || !self.budget.spend(&self.feedback, msg.now, size)
                {
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
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.rtx.extend(info.ssrc_rtx);
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.rtx.remove(&rtx);
        }
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One feedback's view: seconds since the start, the delivered rate
    /// over [`DELIVERED_WINDOW`] and over [`BUSY_WINDOW`], and the loss.
    #[derive(Debug, Clone, Copy)]
    struct Reading {
        t: f64,
        delivered: f64,
        busy: f64,
        loss: f64,
    }

    /// A sender that sends `send(t)` bit/s in 1,200-byte packets into a
    /// bottleneck of `link` bit/s with a queue of `queue` bytes, fed back
    /// every 100 ms: the meter's delivered rate and loss after each
    /// feedback, with the time since the start.
    fn bottleneck(
        seconds: f64,
        link: impl Fn(f64) -> f64,
        queue: usize,
        send: impl Fn(f64) -> f64,
    ) -> Vec<Reading> {
        const SIZE: usize = 1200;
        let t0 = Instant::now();
        let mut meter = PathMeter::default();
        let (mut t, mut queued, mut drained_at) = (0.0f64, 0.0f64, 0.0f64);
        let mut pending = VecDeque::new();
        let mut out = Vec::new();
        let mut next_feedback = 0.1;
        while t < seconds {
            // The link drains the queue; a packet that does not fit is lost.
            let rate = link(t);
            queued = (queued - (t - drained_at) * rate / 8.0).max(0.0);
            drained_at = t;
            let arrival = (queued + SIZE as f64 <= queue as f64).then(|| {
                queued += SIZE as f64;
                Duration::from_secs_f64(t + queued * 8.0 / rate)
            });
            pending.push_back((t0 + Duration::from_secs_f64(t), arrival));
            t += SIZE as f64 * 8.0 / send(t);
            if t >= next_feedback {
                // Feedback names the packets that arrived by now, and
                // those lost before them.
                let now = Duration::from_secs_f64(t);
                while let Some(&(departure, arrival)) = pending.front() {
                    if arrival.is_some_and(|a| a > now) {
                        break;
                    }
                    pending.pop_front();
                    meter.add(departure, SIZE, arrival);
                }
                out.push(Reading {
                    t,
                    delivered: meter.delivered(DELIVERED_WINDOW).unwrap_or(0.0),
                    busy: meter.delivered(BUSY_WINDOW).unwrap_or(0.0),
                    loss: meter.loss().unwrap_or(0.0),
                });
                next_feedback += 0.1;
            }
        }
        out
    }

    #[test]
    fn a_standing_queue_reads_above_the_least_delay_of_the_last_ten_seconds() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut q = QueueMeter::default();
        // Any origin: 5.000 s is an empty queue.
        assert_eq!(q.add(at(0.0), 5.000), Duration::ZERO);
        assert_eq!(q.add(at(0.1), 5.002), Duration::from_millis(2));
        // A probe filled 400 ms of queue; it drains.
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0).round();
        assert_eq!(ms(q.add(at(1.0), 5.400)), 400.0);
        assert_eq!(ms(q.add(at(2.0), 5.050)), 50.0);
        assert_eq!(q.add(at(3.0), 5.000), Duration::ZERO);
        // The floor is forgotten after 10 s: a path whose delay rose
        // for good (a longer route) reads empty again.
        for s in 4..=13 {
            q.add(at(f64::from(s)), 5.030);
        }
        assert_eq!(q.add(at(13.5), 5.030), Duration::ZERO);
    }

    #[test]
    fn a_full_path_reads_at_its_bottleneck_rate_and_stops_being_full_after_a_step_down() {
        // 2.5 Mbit/s into 1 Mbit/s for 2 s, then 0.7 Mbit/s.
        let reads = bottleneck(
            4.0,
            |_| 1e6,
            19_000,
            |t| if t < 2.0 { 2.5e6 } else { 0.7e6 },
        );
        for r in reads {
            let (t, d) = (r.t, r.delivered);
            if (0.6..2.0).contains(&t) {
                assert!((0.9e6..1.1e6).contains(&d), "{t:.1}s: delivered {d}");
                assert!((0.9e6..1.1e6).contains(&r.busy), "{t:.1}s: {r:?}");
                assert!(r.loss > 0.4, "{t:.1}s: {r:?}");
            }
            // Full for as long as what was sent over the window lost much:
            // delivering all the while at the bottleneck's rate, however
            // late the loss is reported.
            if (2.0..3.0).contains(&t) && r.loss > FULL_LOSS {
                assert!(d > 0.9e6, "{t:.1}s: full, {r:?}");
            }
            if t > 2.8 {
                assert!(r.loss < FULL_LOSS, "{t:.1}s: {r:?} after the step down");
                assert!((0.6e6..0.8e6).contains(&d), "{t:.1}s: {r:?}");
            }
        }
    }

    #[test]
    fn a_link_that_narrows_reads_narrow_as_soon_as_it_counts_as_full() {
        // 2.5 Mbit/s through a link that falls from 10 to 0.6 Mbit/s at 1 s:
        // the first reading that finds the path full already holds only
        // what the narrow link let through (the half-second window still
        // holds arrivals from before).
        let reads = bottleneck(
            2.0,
            |t| if t < 1.0 { 10e6 } else { 0.6e6 },
            11_000,
            |_| 2.5e6,
        );
        let first = reads
            .iter()
            .find(|r| r.loss > FULL_LOSS)
            .expect("the path never counted as full");
        assert!(first.t > 1.0, "full before the link narrowed: {first:?}");
        assert!(
            (0.5e6..0.7e6).contains(&first.busy),
            "the first full reading: {first:?}"
        );
        assert!(first.delivered > first.busy, "{first:?}");
    }

    /// Feeds an estimator `seconds` of a stream of `send` bit/s in
    /// 1,200-byte packets through a link of `link` bit/s with `queue`
    /// bytes of queue, that also drops `random` of the packets at random
    /// (a fixed seed), fed back every 100 ms. Returns, at each report, the
    /// time and whether the path read full.
    fn estimator_on(
        seconds: f64,
        link: f64,
        queue: usize,
        random: f64,
        send: f64,
    ) -> Vec<(f64, bool)> {
        use rand::{Rng, SeedableRng};
        use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;
        const SIZE: usize = 1200;
        let mut rng = rand::rngs::StdRng::seed_from_u64(23);
        let feedback = Arc::new(Feedback::default());
        let mut est = Estimator::new(send, 30e3, 10e6, Arc::clone(&feedback));
        let t0 = Instant::now();
        let (mut t, mut queued, mut drained_at, mut id) = (0.0f64, 0.0f64, 0.0f64, 0u64);
        let (mut pending, mut out) = (Vec::new(), Vec::new());
        let mut next_feedback = 0.1;
        while t < seconds {
            queued = (queued - (t - drained_at) * link / 8.0).max(0.0);
            drained_at = t;
            let arrival =
                (queued + SIZE as f64 <= queue as f64 && !rng.random_bool(random)).then(|| {
                    queued += SIZE as f64;
                    Duration::from_secs_f64(t + queued * 8.0 / link)
                });
            pending.push(PacketReport {
                ssrc: 1,
                id,
                rtp_sequence_number: id as u16,
                is_twcc: true,
                twcc_sequence_number: id as u16,
                size: SIZE,
                arrived: arrival.is_some(),
                departure: t0 + Duration::from_secs_f64(t),
                arrival,
                ecn: Ecn::NotEct,
            });
            id += 1;
            t += SIZE as f64 * 8.0 / send;
            if t >= next_feedback {
                let now = Duration::from_secs_f64(t);
                let (due, later): (Vec<_>, Vec<_>) = pending
                    .drain(..)
                    .partition(|r: &PacketReport| r.arrival.is_none_or(|a| a <= now));
                pending = later;
                est.on_reports(t0 + now, &due);
                out.push((t, feedback.carried().is_some()));
                next_feedback += 0.1;
            }
        }
        out
    }

    #[test]
    fn random_loss_on_a_path_with_room_is_not_a_full_path() {
        // The middle layer (~65 packets a second) and the full one (~260)
        // through 5 % random loss, a minute each: never full. With a
        // fixed 10 % bar, the middle layer read full every few seconds.
        for send in [0.625e6, 2.5e6] {
            let full: Vec<f64> = estimator_on(60.0, 100e6, 1 << 20, 0.05, send)
                .into_iter()
                .filter_map(|(t, full)| full.then_some(t))
                .collect();
            assert!(full.is_empty(), "{send} bit/s read full at {full:?}");
        }
    }

    #[test]
    fn a_full_path_through_random_loss_still_reads_full() {
        // 2.5 Mbit/s into 1 Mbit/s with 5 % random loss besides: full from
        // its first half second on, whatever the background loss learnt.
        let reads = estimator_on(10.0, 1e6, 19_000, 0.05, 2.5e6);
        let late: Vec<_> = reads.iter().filter(|(t, full)| *t > 1.0 && !full).collect();
        assert!(late.is_empty(), "not full at {late:?}");
        // And 0.9 Mbit/s into 1 Mbit/s with the same loss never is.
        let room = estimator_on(10.0, 1e6, 19_000, 0.05, 0.9e6);
        assert!(room.iter().all(|(_, full)| !full), "{room:?}");
    }

    #[test]
    fn a_path_a_little_too_narrow_reads_full() {
        // 0.7 Mbit/s into 0.6 with a 10 KB queue: ~15 % lost once the
        // queue is full (within a second), none of it random. Its loss
        // must not be learnt as background (which raises the bar past it).
        let reads = estimator_on(10.0, 0.6e6, 10_000, 0.0, 0.7e6);
        let after: Vec<_> = reads.iter().filter(|(t, _)| *t > 2.0).collect();
        let full = after.iter().filter(|(_, full)| *full).count();
        assert!(
            full * 10 >= after.len() * 9,
            "full in {full} of {} reads",
            after.len()
        );
    }

    #[test]
    fn a_path_with_room_loses_nothing_and_delivers_what_is_sent() {
        let reads = bottleneck(2.0, |_| 5e6, 50_000, |_| 1e6);
        let r = reads.last().copied().unwrap();
        assert_eq!(r.loss, 0.0);
        assert!((0.9e6..1.1e6).contains(&r.delivered), "{r:?}");
    }
}
