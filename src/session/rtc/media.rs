//! Media tracks: the sender's encoded RTP written to every peer, and the
//! tracks a receiver gets.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
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

use super::{short, Events, RtcEvent};
use crate::media::{MediaKind, TrackSpec};

/// The header extension that carries when a frame was captured
/// (webrtc.org's abs-capture-time; Chromium reads it too).
pub(super) const ABS_CAPTURE_TIME: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Packets of one remote track read from the network but not yet taken
/// by the recorder (about a second of 720p video).
const TRACK_QUEUE: usize = 512;

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
/// encoded once and written to all of them.
#[derive(Clone)]
pub(super) struct LocalMedia {
    pub specs: Vec<TrackSpec>,
    pub bindings: Vec<Bindings>,
    pub stream_id: String,
    pub on_keyframe: Arc<dyn Fn() + Send + Sync>,
}

/// A peer's tracks, added to its connection but not yet negotiated.
pub(super) struct PendingTracks(Vec<(TrackSpec, Bindings, Arc<TrackLocalStaticRTP>, u32)>);

impl LocalMedia {
    /// Adds one track per spec to `pc`, each with an SSRC of its own. PLI
    /// and FIR from the peer become key-frame requests.
    pub async fn add_to(&self, pc: &dyn PeerConnection) -> anyhow::Result<PendingTracks> {
        let mut pending = Vec::new();
        for (spec, bindings) in self.specs.iter().zip(&self.bindings) {
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
            let (track2, on_keyframe) = (track.clone(), self.on_keyframe.clone());
            tokio::spawn(async move {
                // Ends when the connection closes (the track is unbound).
                while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = track2.poll().await {
                    if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                        on_keyframe();
                    }
                }
            });
            pending.push((spec.clone(), bindings.clone(), track, ssrc));
        }
        Ok(PendingTracks(pending))
    }
}

impl PendingTracks {
    /// Once negotiated, starts writing to this peer with the payload types
    /// its description settled on.
    pub async fn bind(&self, pc: &dyn PeerConnection, peer: &str) {
        let senders = pc.get_senders().await;
        for (spec, bindings, track, ssrc) in &self.0 {
            let Some((payload_type, capture_ext)) = negotiated(&senders, spec).await else {
                tracing::warn!(peer = %short(peer), "{} ({}) was not accepted by the peer", spec.kind, spec.mime);
                continue;
            };
            bindings.add(Binding {
                peer: peer.to_owned(),
                track: track.clone(),
                ssrc: *ssrc,
                payload_type,
                capture_ext,
            });
        }
    }

    pub fn unbind(&self) {
        for (_, bindings, track, _) in &self.0 {
            bindings.remove(track);
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

/// Writes one encoded track's RTP packets to every peer connection.
#[derive(Clone)]
pub struct TrackWriter {
    pub(super) bindings: Bindings,
}

impl TrackWriter {
    /// Writes one RTP packet to every bound peer (each gets its own SSRC and
    /// payload type), stamped with its capture time when known.
    pub async fn write(&self, rtp: &[u8], captured: Option<SystemTime>) {
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
            p.header.ssrc = b.ssrc;
            p.header.payload_type = b.payload_type;
            if let (Some(id), Some(stamp)) = (b.capture_ext, &stamp) {
                let _ = p.header.set_extension(id, stamp.clone());
            }
            if let Err(e) = b.track.write_rtp(p).await {
                tracing::trace!(peer = %short(&b.peer), "RTP not written: {e}");
            }
        }
    }
}

/// Marks RTCP that asks for a key frame for delivery to the application
/// (webrtc-rs keeps RTCP to its interceptors otherwise).
pub(super) struct KeyframeRequests {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl KeyframeRequests {
    pub fn new() -> Self {
        Self {
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                msg.message.add(Attribute::DeliverToApplication);
            }
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

impl Interceptor for KeyframeRequests {
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
