//! Media tracks: the sender's encoded RTP written to every peer, and the
//! tracks a receiver gets.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtp::packet::Packet as RtpPacket;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::{Marshal, Unmarshal};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

use super::{short, Events, OnKeyframe, RtcEvent};
use crate::media::{KeyframeReason, MediaKind, TrackSpec};
use crate::session::simulcast::{self, Chooser, Forward, Forwarder};

/// How long after a receiver's track is bound its key-frame requests count
/// as its start, not as repairs (see `KeyframeReason`).
const JOINING: Duration = Duration::from_secs(2);

/// Packets a binding holds for its peer between the answer and the
/// connection coming up (~2.5 s of the best layer at 1 Mbit/s, 5 s of
/// audio). Past that it starts over, and a layered peer starts from a key
/// frame asked for when it is up.
const HOLD: usize = 256;

/// The header extension that carries when a frame was captured
/// (webrtc.org's abs-capture-time; Chromium reads it too).
pub(super) const ABS_CAPTURE_TIME: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Packets of one remote track read from the network but not yet taken
/// by the recorder (about a second of 720p video).
const TRACK_QUEUE: usize = 512;

/// How often a receiver's layer is chosen again from its estimate: often
/// enough to step down within a few frames of the estimate falling.
const CHOOSE_EVERY: Duration = Duration::from_millis(100);

/// Window over which each layer's sent rate is measured.
const RATE_WINDOW: Duration = Duration::from_millis(500);

/// What one receiver's feedback says about its path, written by the
/// connection's interceptors and read by the tracks' writers.
#[derive(Debug, Default)]
pub struct Feedback {
    /// Bandwidth estimate in bit/s (as f64 bits); 0 until the first
    /// transport-wide feedback.
    estimate: AtomicU64,
    /// Fraction lost in the latest receiver report, in 1/256.
    loss: AtomicU32,
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
}

pub(super) fn codec_kind(kind: MediaKind) -> RtpCodecKind {
    match kind {
        MediaKind::Video => RtpCodecKind::Video,
        MediaKind::Audio => RtpCodecKind::Audio,
    }
}

/// One peer's copy of one local track: packets get its SSRC and the
/// payload type its answer settled on.
struct Binding {
    peer: String,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    /// The id this peer gave abs-capture-time, if it takes it.
    capture_ext: Option<u8>,
    feedback: Arc<Feedback>,
    /// The layer this peer is forwarded (for its key-frame requests).
    layer: Arc<AtomicUsize>,
    /// Layer choice and renumbering, when the track has several layers.
    switch: Option<Mutex<Switch>>,
    /// Whether the connection is up: RTP written to the track before
    /// that is lost.
    live: AtomicBool,
    /// Until `live`, the packets since the answer came (for a layered
    /// track, from the key frame asked for then): the peer gets them the
    /// moment it is up, instead of waiting for a key frame asked for then
    /// (one capture interval plus an encode later) and for its first
    /// audio packet before its recording can start.
    held: tokio::sync::Mutex<Vec<RtpPacket>>,
}

struct Switch {
    chooser: Chooser,
    forwarder: Forwarder,
    next_choice: Instant,
}

/// Every peer's copy of one encoded track.
#[derive(Clone, Default)]
pub(super) struct Bindings(Arc<RwLock<Vec<Arc<Binding>>>>);

impl Bindings {
    fn snapshot(&self) -> Vec<Arc<Binding>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn add(&self, binding: Binding) {
        let mut all = self.0.write().unwrap_or_else(|e| e.into_inner());
        all.retain(|b| b.peer != binding.peer);
        all.push(Arc::new(binding));
    }

    fn find(&self, track: &Arc<TrackLocalStaticRTP>) -> Option<Arc<Binding>> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|b| Arc::ptr_eq(&b.track, track))
            .cloned()
    }

    /// Stops writing `track` (one connection's copy). A peer that came
    /// back under the same id keeps its new connection's copy.
    fn remove(&self, track: &Arc<TrackLocalStaticRTP>) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|b| !Arc::ptr_eq(&b.track, track));
    }
}

/// The sender's tracks, shared by every peer connection: each packet is
/// encoded once (per layer) and written to all of them.
#[derive(Clone)]
pub(super) struct LocalMedia {
    pub specs: Vec<TrackSpec>,
    pub writers: Vec<TrackWriter>,
    pub stream_id: String,
}

/// A peer's tracks, added to its connection but not yet negotiated.
pub(super) struct PendingTracks {
    tracks: Vec<(TrackSpec, TrackWriter, Arc<TrackLocalStaticRTP>, u32)>,
    feedback: Arc<Feedback>,
    layer: Arc<AtomicUsize>,
    /// Whether the connection is up; bindings made after that are live
    /// at once.
    up: tokio::sync::Mutex<bool>,
}

impl LocalMedia {
    /// Adds one track per spec to `pc`, each with an SSRC of its own. PLI
    /// and FIR from the peer become key-frame requests.
    pub async fn add_to(
        &self,
        pc: &dyn PeerConnection,
        feedback: Arc<Feedback>,
    ) -> anyhow::Result<PendingTracks> {
        let mut pending = Vec::new();
        let layer = Arc::new(AtomicUsize::new(0));
        for (spec, writer) in self.specs.iter().zip(&self.writers) {
            let ssrc = rand::random::<u32>();
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                self.stream_id.clone(),
                format!("{}-{}", spec.kind, self.stream_id),
                spec.kind.to_string(),
                codec_kind(spec.kind),
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: codec_of(spec),
                    ..Default::default()
                }],
            )));
            pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
            let (track2, on_keyframe) = (track.clone(), writer.on_keyframe.clone());
            let layer2 = layer.clone();
            tokio::spawn(async move {
                // A receiver's requests in its first seconds are its start
                // (a decoder, or a recorder, with nothing to begin with
                // yet); later ones are repairs.
                let joined = Instant::now();
                // Ends when the connection closes (the track is unbound).
                while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = track2.poll().await {
                    if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                        let reason = if joined.elapsed() < JOINING {
                            KeyframeReason::Join
                        } else {
                            KeyframeReason::Repair
                        };
                        on_keyframe(layer2.load(Ordering::Relaxed), reason);
                    }
                }
            });
            pending.push((spec.clone(), writer.clone(), track, ssrc));
        }
        Ok(PendingTracks {
            tracks: pending,
            feedback,
            layer,
            up: tokio::sync::Mutex::new(false),
        })
    }
}

impl PendingTracks {
    /// Once negotiated, starts writing to this peer with the payload types
    /// its description settled on.
    pub async fn bind(&self, pc: &dyn PeerConnection, peer: &str) {
        let senders = pc.get_senders().await;
        let up = self.up.lock().await;
        for (spec, writer, track, ssrc) in &self.tracks {
            let Some((payload_type, capture_ext)) = negotiated(&senders, spec).await else {
                tracing::warn!(peer = %short(peer), "{} ({}) was not accepted by the peer", spec.kind, spec.mime);
                continue;
            };
            let switch = (writer.layers > 1).then(|| {
                Mutex::new(Switch {
                    chooser: Chooser::default(),
                    forwarder: Forwarder::new(simulcast::Payload::from_mime(&spec.mime)),
                    next_choice: Instant::now(),
                })
            });
            writer.bindings.add(Binding {
                peer: peer.to_owned(),
                track: track.clone(),
                ssrc: *ssrc,
                payload_type,
                capture_ext,
                feedback: self.feedback.clone(),
                layer: self.layer.clone(),
                switch,
                live: AtomicBool::new(*up),
                held: tokio::sync::Mutex::new(Vec::new()),
            });
            if spec.kind == MediaKind::Video {
                // The picture this peer starts with: encoded while its
                // connection comes up, held until then.
                (writer.on_keyframe)(self.layer.load(Ordering::Relaxed), KeyframeReason::Join);
            }
        }
    }

    /// The connection is up: each track's held packets go out, in order
    /// and ahead of any later one, and tracks with nothing to start from
    /// ask for a key frame now.
    pub async fn go_live(&self) {
        let mut up = self.up.lock().await;
        *up = true;
        for (spec, writer, track, _) in &self.tracks {
            let Some(b) = writer.bindings.find(track) else {
                continue; // not negotiated
            };
            let mut held = b.held.lock().await;
            if !held.is_empty() {
                tracing::debug!(peer = %short(&b.peer), "connected: {} {} packets held for it go out", held.len(), spec.kind);
            }
            for p in held.drain(..) {
                if let Err(e) = b.track.write_rtp(p).await {
                    tracing::trace!(peer = %short(&b.peer), "RTP not written: {e}");
                }
            }
            b.live.store(true, Ordering::Release);
            let waiting = b.switch.as_ref().is_none_or(|s| {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .forwarder
                    .waiting()
            });
            if spec.kind == MediaKind::Video && waiting {
                (writer.on_keyframe)(self.layer.load(Ordering::Relaxed), KeyframeReason::Join);
            }
        }
    }

    pub fn unbind(&self) {
        for (_, writer, track, _) in &self.tracks {
            writer.bindings.remove(track);
        }
    }
}

/// The payload type the peer's description settled on for `spec`, and the
/// id it gave abs-capture-time.
async fn negotiated(senders: &[Arc<dyn RtpSender>], spec: &TrackSpec) -> Option<(u8, Option<u8>)> {
    for sender in senders {
        let Ok(params) = sender.get_parameters().await else {
            continue;
        };
        let found = params.rtp_parameters.codecs.iter().find(|c| {
            c.rtp_codec.mime_type.eq_ignore_ascii_case(&spec.mime)
                && (spec.fmtp.is_empty() || fmtp_matches(&c.rtp_codec.sdp_fmtp_line, &spec.fmtp))
        });
        if let Some(c) = found {
            let ext = params
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == ABS_CAPTURE_TIME)
                .and_then(|e| u8::try_from(e.id).ok());
            return Some((c.payload_type, ext));
        }
    }
    None
}

/// H.264's profile and packetization mode must match; other parameters
/// (level, ordering) may differ.
fn fmtp_matches(negotiated: &str, ours: &str) -> bool {
    let get = |fmtp: &str, key: &str| {
        fmtp.split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let profile = |f: &str| get(f, "profile-level-id").map(|p| p.get(..4).unwrap_or("").to_owned());
    profile(negotiated) == profile(ours)
        && get(negotiated, "packetization-mode") == get(ours, "packetization-mode")
}

pub(super) fn codec_of(spec: &TrackSpec) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: spec.mime.clone(),
        clock_rate: spec.clock_rate,
        channels: spec.channels,
        sdp_fmtp_line: spec.fmtp.clone(),
        rtcp_feedback: vec![],
    }
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Writes one encoded track's RTP packets to every peer connection; with
/// several layers, each peer gets the one its path carries.
#[derive(Clone)]
pub struct TrackWriter {
    pub(super) bindings: Bindings,
    /// Layers encoded for this track (1 for audio).
    layers: usize,
    /// Each layer's encoder target, bit/s (the best layer's follows the
    /// receivers).
    targets: Arc<RwLock<Vec<f64>>>,
    meter: Arc<Mutex<LayerMeter>>,
    /// Asks a layer's encoder for a key frame.
    on_keyframe: OnKeyframe,
    /// What the other tracks (audio) take from each path, in bit/s.
    others_bps: f64,
}

/// One receiver as its video writer sees it.
#[derive(Debug, Clone)]
pub struct PeerMedia {
    pub peer: String,
    /// Bandwidth estimate, bit/s, once the receiver sends feedback.
    pub estimate: Option<f64>,
    /// Fraction lost in its latest report.
    pub loss: f64,
    /// Layer it is forwarded (0: the best), once it gets one.
    pub layer: Option<usize>,
}

/// Each layer's sent rate, measured over [`RATE_WINDOW`].
struct LayerMeter {
    bytes: Vec<u64>,
    rates: Vec<f64>,
    since: Instant,
}

impl LayerMeter {
    fn new(layers: usize) -> Self {
        Self {
            bytes: vec![0; layers],
            rates: vec![0.0; layers],
            since: Instant::now(),
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
    pub(super) fn new(targets: Vec<f64>, on_keyframe: OnKeyframe, others_bps: f64) -> Self {
        let layers = targets.len().max(1);
        Self {
            bindings: Bindings::default(),
            layers,
            targets: Arc::new(RwLock::new(targets)),
            meter: Arc::new(Mutex::new(LayerMeter::new(layers))),
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
                    loss: b.feedback.loss(),
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
            if !b.live.load(Ordering::Acquire) && self.hold(&b, p.clone()).await {
                continue;
            }
            if let Err(e) = b.track.write_rtp(p).await {
                tracing::trace!(peer = %short(&b.peer), "RTP not written: {e}");
            }
        }
    }

    /// Keeps one packet for a peer whose connection is not up yet (past
    /// [`HOLD`], starts over: a layered peer then starts from a key frame
    /// asked for when it is up). False if the connection came up
    /// meanwhile: send it.
    async fn hold(&self, b: &Binding, p: RtpPacket) -> bool {
        let mut held = b.held.lock().await;
        if b.live.load(Ordering::Acquire) {
            return false;
        }
        if held.len() < HOLD {
            held.push(p);
        } else {
            held.clear();
            if let Some(switch) = &b.switch {
                switch
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .forwarder
                    .restart();
            }
        }
        true
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
        if now >= s.next_choice {
            s.next_choice = now + CHOOSE_EVERY;
            let target = s
                .chooser
                .update(now, b.feedback.estimate(), rates, self.others_bps);
            s.forwarder.set_target(target);
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
        if s.forwarder.waiting() && p.header.marker && b.live.load(Ordering::Relaxed) {
            // Once per frame until it comes; the encoder rate-limits.
            // (Before the connection is up, the one asked for at binding
            // will do.)
            (self.on_keyframe)(s.chooser.layer(), KeyframeReason::Join);
        }
        decision
    }
}

/// A sender's view of one receiver's RTCP: marks key-frame requests for
/// delivery to the application (webrtc-rs keeps RTCP to its interceptors
/// otherwise), and keeps the bandwidth estimate that congestion control
/// attaches to transport feedback, and the loss receiver reports tell.
/// Sits application-ward of congestion control, so it sees the estimate.
pub(super) struct SenderFeedback {
    feedback: Arc<Feedback>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl SenderFeedback {
    pub fn new(feedback: Arc<Feedback>) -> Self {
        Self {
            feedback,
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

/// abs-capture-time's payload: the capture instant as a 64-bit NTP
/// timestamp (32.32 fixed point). The optional clock offset is not sent.
struct AbsCaptureTime(SystemTime);

impl AbsCaptureTime {
    fn ntp(&self) -> u64 {
        let d = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = (d.as_secs() + NTP_UNIX_OFFSET) << 32;
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        secs | frac
    }

    fn parse(payload: &[u8]) -> Option<SystemTime> {
        let ntp = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
        let secs = (ntp >> 32).checked_sub(NTP_UNIX_OFFSET)?;
        let nanos = ((ntp & 0xffff_ffff) * 1_000_000_000) >> 32;
        Some(UNIX_EPOCH + Duration::new(secs, nanos as u32))
    }
}

/// The id `sdp` gives abs-capture-time (`a=extmap:ID[/dir] URI`).
pub(super) fn capture_ext_id(sdp: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let rest = l.strip_prefix("a=extmap:")?;
        let (id, uri) = rest.split_once(' ')?;
        let uri = uri.split_whitespace().next()?;
        if uri != ABS_CAPTURE_TIME {
            return None;
        }
        id.split('/').next()?.parse().ok()
    })
}

/// A track arriving from a sender.
pub struct RemoteTrack {
    pub spec: TrackSpec,
    ssrc: u32,
    packets: tokio::sync::Mutex<mpsc::Receiver<Received>>,
}

/// One RTP packet from a remote track.
pub struct Received {
    pub rtp: Bytes,
    /// Last packet of a video frame.
    pub marker: bool,
    /// When the sender captured this media (abs-capture-time).
    pub captured: Option<SystemTime>,
}

impl std::fmt::Debug for RemoteTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTrack")
            .field("spec", &self.spec)
            .finish()
    }
}

impl RemoteTrack {
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The next RTP packet; `None` once the track ended.
    pub async fn read(&self) -> Option<Received> {
        self.packets.lock().await.recv().await
    }
}

/// Follows one remote track: reports it with its first packet (which
/// settles its payload type), then queues its packets until it ends.
pub(super) fn watch_remote(
    track: Arc<dyn TrackRemote>,
    peer: String,
    events: Events,
    capture_ext: Option<u8>,
    tracks: super::RemoteTracks,
) {
    tokio::spawn(async move {
        let mut tx: Option<mpsc::Sender<Received>> = None;
        while let Some(event) = track.poll().await {
            let TrackRemoteEvent::OnRtpPacket(packet) = event else {
                if matches!(event, TrackRemoteEvent::OnEnded) {
                    break;
                }
                continue;
            };
            let received = Received {
                marker: packet.header.marker,
                captured: capture_ext
                    .and_then(|id| packet.header.get_extension(id))
                    .and_then(|p| AbsCaptureTime::parse(&p)),
                rtp: match packet.marshal() {
                    Ok(b) => b.freeze(),
                    Err(_) => continue,
                },
            };
            if tx.is_none() {
                let ssrc = packet.header.ssrc;
                let Some(spec) = remote_spec(&*track, ssrc, packet.header.payload_type).await
                else {
                    continue;
                };
                tracing::debug!(peer = %short(&peer), "receiving {} ({})", spec.kind, spec.mime);
                tracks.insert(ssrc, track.clone());
                let (t, rx) = mpsc::channel(TRACK_QUEUE);
                tx = Some(t);
                let remote = RemoteTrack {
                    spec,
                    ssrc,
                    packets: tokio::sync::Mutex::new(rx),
                };
                let _ = events.send((peer.clone(), RtcEvent::Track(remote))).await;
            }
            if let Some(t) = &tx {
                // A recorder that stopped reading loses packets, not memory.
                let _ = t.try_send(received);
            }
        }
    });
}

async fn remote_spec(track: &dyn TrackRemote, ssrc: u32, payload_type: u8) -> Option<TrackSpec> {
    let codec = track.codec(ssrc).await?;
    let kind = match track.kind().await {
        RtpCodecKind::Video => MediaKind::Video,
        RtpCodecKind::Audio => MediaKind::Audio,
        _ => return None,
    };
    Some(TrackSpec {
        kind,
        mime: codec.mime_type,
        clock_rate: codec.clock_rate,
        channels: codec.channels,
        fmtp: codec.sdp_fmtp_line,
        payload_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_time_survives_the_ntp_round_trip() {
        let at = UNIX_EPOCH + Duration::new(1_795_648_000, 123_456_789);
        let buf = AbsCaptureTime(at).ntp().to_be_bytes();
        // 1970 is 2,208,988,800 s after 1900 on the NTP clock.
        assert_eq!(u64::from_be_bytes(buf) >> 32, 1_795_648_000 + 2_208_988_800);
        let back = AbsCaptureTime::parse(&buf).unwrap();
        let err = back.duration_since(at).unwrap_or_else(|e| e.duration());
        assert!(err < Duration::from_nanos(2), "{err:?}");
        assert!(AbsCaptureTime::parse(&buf[..7]).is_none());
    }

    #[test]
    fn capture_extension_id_is_read_from_the_description() {
        let sdp = "v=0\r\na=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
                   a=extmap:7/sendonly http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time\r\n";
        assert_eq!(capture_ext_id(sdp), Some(7));
        assert_eq!(capture_ext_id("a=extmap:3 urn:x\r\n"), None);
    }

    #[test]
    fn h264_matches_on_profile_and_packetization_mode() {
        let ours = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
        assert!(fmtp_matches(
            "profile-level-id=42e034;packetization-mode=1",
            ours
        ));
        assert!(!fmtp_matches(
            "profile-level-id=42e01f;packetization-mode=0",
            ours
        ));
        assert!(!fmtp_matches(
            "profile-level-id=640c1f;packetization-mode=1",
            ours
        ));
    }
}
