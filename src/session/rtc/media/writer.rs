//! The sending side's packets: [`TrackWriter`] writes each one to every
//! bound peer, choosing each receiver's layer, and measures the layers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use rtc::rtp::packet::Packet as RtpPacket;
use rtc::shared::marshal::Unmarshal;
use webrtc::media_stream::track_local::TrackLocal;

use super::pacer::pace_rate;
use super::{AbsCaptureTime, Binding, Bindings, Switch};
use crate::media::KeyframeReason;
use crate::session::rtc::{short, OnKeyframe};
use crate::session::simulcast::{self, Forward, ProbeVerdict};

/// Packets a binding holds for its peer between the answer and the
/// connection coming up (~2.5 s of the best layer at 1 Mbit/s, 5 s of
/// audio). Past that it starts over, and a layered peer starts from a key
/// frame asked for when it is up.
const HOLD: usize = 256;

/// How long a layered peer's video is held before it starts over. What is
/// held goes out in one run when the connection comes up: on a LAN that
/// is the key frame asked for at the answer and a frame or two (set-up
/// takes ~40 ms), but at a 150 ms round trip set-up takes ~0.8 s, and a
/// key frame with 0.8 s of video behind it, paced for the layer, overran
/// a 1 Mbit/s link's 16 KB of bucket and queue: 43 % lost in its first
/// second, and the first picture 3 s after joining. A fresh key frame
/// asked for at connection costs one capture interval and an encode.
const HOLD_FOR: Duration = Duration::from_millis(200);

/// How often a receiver's layer is chosen again from its estimate: often
/// enough to step down within a few frames of the estimate falling.
const CHOOSE_EVERY: Duration = Duration::from_millis(100);

/// Window over which each layer's sent rate is measured.
const RATE_WINDOW: Duration = Duration::from_millis(500);

/// Writes one encoded track's RTP packets to every peer connection; with
/// several layers, each peer gets the one its path carries.
#[derive(Clone)]
pub struct TrackWriter {
    pub(super) bindings: Bindings,
    /// Layers encoded for this track (1 for audio).
    pub(super) layers: usize,
    /// Each layer's encoder target, bit/s (the best layer's follows the
    /// receivers).
    targets: Arc<RwLock<Vec<f64>>>,
    meter: Arc<Mutex<LayerMeter>>,
    payload: simulcast::Payload,
    /// Asks a layer's encoder for a key frame.
    pub(super) on_keyframe: OnKeyframe,
    /// What the other tracks (audio) take from each path, in bit/s.
    others_bps: f64,
}

/// One receiver as its video writer sees it.
#[derive(Debug, Clone)]
pub struct PeerMedia {
    pub peer: String,
    /// Bandwidth estimate, bit/s, once the receiver sends feedback.
    pub estimate: Option<f64>,
    /// What its path carries, bit/s, while it is full (loses a good
    /// share of what it is sent).
    pub carried: Option<f64>,
    /// What its path carried when it was last full, bit/s.
    pub capacity: Option<f64>,
    /// The rate of the last probe of its path that passed, bit/s.
    pub probed: Option<f64>,
    /// Fraction lost in its latest report.
    pub loss: f64,
    /// Bytes sent again on its NACKs, NACK answers dropped over budget,
    /// and NACKs left unanswered as the last answer was on its way.
    pub resends: (u64, u64, u64),
    /// Layer it is forwarded (0: the best), once it gets one.
    pub layer: Option<usize>,
}

/// Each layer's sent rate, measured over [`RATE_WINDOW`], and its latest
/// key frame (for where a new receiver starts): both per packet, under
/// one lock.
struct LayerMeter {
    bytes: Vec<u64>,
    rates: Vec<f64>,
    since: Instant,
    keyframes: simulcast::KeyframeSizes,
}

impl LayerMeter {
    fn new(layers: usize) -> Self {
        Self {
            bytes: vec![0; layers],
            rates: vec![0.0; layers],
            since: Instant::now(),
            keyframes: simulcast::KeyframeSizes::new(layers),
        }
    }

    fn add(&mut self, now: Instant, layer: usize, len: usize) {
        if let Some(b) = self.bytes.get_mut(layer) {
            *b += len as u64;
        }
        let elapsed = now.duration_since(self.since);
        if elapsed >= RATE_WINDOW {
            for (rate, bytes) in self.rates.iter_mut().zip(&mut self.bytes) {
                let now_rate = *bytes as f64 * 8.0 / elapsed.as_secs_f64();
                // Smoothed: one key frame does not make a layer "too big".
                *rate = if *rate == 0.0 {
                    now_rate
                } else {
                    0.5 * *rate + 0.5 * now_rate
                };
                *bytes = 0;
            }
            self.since = now;
        }
    }
}

impl TrackWriter {
    /// `targets`: each layer's encoder target in bit/s, best first.
    pub(in crate::session::rtc) fn new(
        targets: Vec<f64>,
        payload: simulcast::Payload,
        on_keyframe: OnKeyframe,
        others_bps: f64,
    ) -> Self {
        let layers = targets.len().max(1);
        Self {
            bindings: Bindings::default(),
            layers,
            targets: Arc::new(RwLock::new(targets)),
            meter: Arc::new(Mutex::new(LayerMeter::new(layers))),
            payload,
            on_keyframe,
            others_bps,
        }
    }

    /// What each layer needs of a path: its measured rate, but never more
    /// than its encoder's target (a burst of key frames is not the
    /// layer's rate), and the target until measured.
    fn needs(&self, measured: &[f64]) -> Vec<f64> {
        self.targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .zip(measured)
            .map(|(&t, &m)| if m > 0.0 { m.min(t) } else { t })
            .collect()
    }

    /// Records that `layer`'s encoder now aims at `bps`.
    pub fn set_target(&self, layer: usize, bps: f64) {
        if let Some(t) = self
            .targets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(layer)
        {
            *t = bps;
        }
    }

    /// Each layer's encoder target in bit/s, best first.
    pub fn targets(&self) -> Vec<f64> {
        self.targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Each layer's latest key frame in bytes, best first (`None` until
    /// one has gone by).
    pub fn keyframe_sizes(&self) -> Vec<Option<usize>> {
        self.meter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keyframes
            .sizes()
    }

    /// Each layer's sent rate in bit/s, best first.
    pub fn layer_rates(&self) -> Vec<f64> {
        self.meter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rates
            .clone()
    }

    /// The receivers, their estimates and layers.
    pub fn peers(&self) -> Vec<PeerMedia> {
        self.bindings
            .snapshot()
            .iter()
            .map(|b| {
                let layer = match &b.switch {
                    Some(s) => s
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .forwarder
                        .current(),
                    None => Some(0),
                };
                PeerMedia {
                    peer: b.peer.clone(),
                    estimate: b.feedback.estimate(),
                    carried: b.feedback.carried(),
                    capacity: b.feedback.capacity(),
                    probed: b.feedback.probed(),
                    loss: b.feedback.loss(),
                    resends: b.feedback.resends(),
                    layer,
                }
            })
            .collect()
    }

    /// Writes one RTP packet of `layer` to every bound peer that takes
    /// that layer (each gets its own SSRC and payload type), stamped with
    /// its capture time when known.
    pub async fn write(&self, rtp: &[u8], captured: Option<SystemTime>, layer: usize) {
        let now = Instant::now();
        let rates = {
            let mut meter = self.meter.lock().unwrap_or_else(|e| e.into_inner());
            meter.add(now, layer, rtp.len());
            // Only a layered track chooses per peer; the rest need no copy.
            if self.layers > 1 {
                if let (Some(payload), Some(ts)) = (simulcast::rtp_payload(rtp), rtp.get(4..8)) {
                    let ts = u32::from_be_bytes([ts[0], ts[1], ts[2], ts[3]]);
                    meter.keyframes.packet(self.payload, layer, ts, payload);
                }
                self.needs(&meter.rates)
            } else {
                Vec::new()
            }
        };
        let peers = self.bindings.snapshot();
        if peers.is_empty() {
            return;
        }
        let Ok(packet) = RtpPacket::unmarshal(&mut &rtp[..]) else {
            return;
        };
        // Built once per packet, whatever the number of peers.
        let stamp =
            captured.map(|at| Bytes::copy_from_slice(&AbsCaptureTime(at).ntp().to_be_bytes()));
        for b in peers {
            let mut p = packet.clone();
            if let Some(switch) = &b.switch {
                let forward = {
                    let mut s = switch.lock().unwrap_or_else(|e| e.into_inner());
                    self.forward(&mut s, &b, now, &rates, layer, &p)
                };
                match forward {
                    Forward::Drop => continue,
                    Forward::Send { seq, ts } => {
                        p.header.sequence_number = seq;
                        p.header.timestamp = ts;
                    }
                    Forward::SendWithPictureId {
                        seq,
                        ts,
                        offset,
                        id,
                        long,
                    } => {
                        p.header.sequence_number = seq;
                        p.header.timestamp = ts;
                        let mut payload = BytesMut::from(&p.payload[..]);
                        simulcast::set_picture_id(&mut payload, offset, id, long);
                        p.payload = payload.freeze();
                    }
                }
            } else if layer != 0 {
                continue;
            }
            p.header.ssrc = b.ssrc;
            p.header.payload_type = b.payload_type;
            if let (Some(id), Some(stamp)) = (b.capture_ext, &stamp) {
                let _ = p.header.set_extension(id, stamp.clone());
            }
            let p = if b.live.load(Ordering::Acquire) {
                p
            } else {
                match hold(&b, p).await {
                    Some(p) => p,
                    None => continue,
                }
            };
            if let Err(e) = b.track.write_rtp(p).await {
                tracing::trace!(peer = %short(&b.peer), "RTP not written: {e}");
            }
        }
    }

    /// Chooses this peer's layer again when due, and decides for one packet.
    fn forward(
        &self,
        s: &mut Switch,
        b: &Binding,
        now: Instant,
        rates: &[f64],
        layer: usize,
        p: &RtpPacket,
    ) -> Forward {
        // Chosen from when the connection is up: until then there is no
        // feedback to choose on, and the start layer's wait for the first
        // (see `Chooser`) would run out on a slow connection set-up (a
        // relayed path, a long round trip) and start it at full size.
        if now >= s.next_choice && b.live.load(Ordering::Acquire) {
            s.next_choice = now + CHOOSE_EVERY;
            let before = s.chooser.layer();
            let (estimate, carried) = (b.feedback.estimate(), b.feedback.carried());
            s.chooser.probing(b.feedback.can_probe());
            s.chooser.path_carried(b.feedback.capacity());
            // (Read here, not per packet: `probed` takes a lock.)
            s.path_carried = b
                .feedback
                .capacity()
                .map(|c| b.feedback.probed().map_or(c, |p| p.max(c)));
            s.chooser.path_queue(b.feedback.queue());
            if let Some(o) = b.feedback.take_probe_outcome() {
                s.chooser.probed(
                    now,
                    ProbeVerdict {
                        rate: o.rate,
                        passed: o.passed,
                        lossy: o.lossy,
                    },
                );
            }
            let target = s
                .chooser
                .update(now, estimate, carried, rates, self.others_bps);
            if let Some((rate, decides)) = s.chooser.take_probe() {
                b.feedback.ask_probe(rate, decides);
            }
            if target != before {
                tracing::debug!(
                    peer = %short(&b.peer),
                    "layer {before} -> {target}: estimate {estimate:?}, carried {carried:?}, \
                     delivered {:?}, layers need {rates:?}",
                    b.feedback.delivered()
                );
            }
            s.forwarder.set_target(target);
        }
        // Paced for the bigger of the layer it leaves and the one it goes
        // to, while it switches.
        let forwarded = s.forwarder.current().unwrap_or(s.chooser.layer());
        let need = [forwarded, s.chooser.layer()]
            .iter()
            .filter_map(|&l| rates.get(l))
            .fold(0.0, |a: f64, &r| a.max(r));
        if need > 0.0 {
            b.feedback
                .set_pace(pace_rate(need + self.others_bps, s.path_carried));
        }
        let decision = s.forwarder.packet(
            layer,
            p.header.sequence_number,
            p.header.timestamp,
            &p.payload,
        );
        if let Some(current) = s.forwarder.current() {
            b.layer.store(current, Ordering::Relaxed);
        }
        b.feedback.set_stepping_down(s.forwarder.holding());
        if s.forwarder.waiting() && p.header.marker && b.live.load(Ordering::Relaxed) {
            // Once per frame until it comes; the encoder rate-limits.
            // (Before the connection is up, the one asked for at binding
            // will do.)
            (self.on_keyframe)(s.chooser.layer(), KeyframeReason::Join);
        }
        decision
    }
}

/// Keeps one packet for a peer whose connection is not up yet. Past
/// [`HOLD`] packets, or for a layered peer [`HOLD_FOR`], starts over: the
/// peer then starts from a key frame asked for when it is up. Gives the
/// packet back if the connection came up meanwhile: send it.
async fn hold(b: &Binding, p: RtpPacket) -> Option<RtpPacket> {
    let mut held = b.held.lock().await;
    if b.live.load(Ordering::Acquire) {
        return Some(p);
    }
    let now = Instant::now();
    let since = *held.since.get_or_insert(now);
    let stale = b.switch.is_some() && now.duration_since(since) > HOLD_FOR;
    if held.packets.len() < HOLD && !stale {
        held.packets.push(p);
        return None;
    }
    held.packets.clear();
    held.since = None;
    if let Some(switch) = &b.switch {
        switch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forwarder
            .restart();
    }
    None
}
