//! Media tracks: the sender's encoded RTP written to every peer, and the
//! tracks a receiver gets.
//!
//! This file holds what both sides use: abs-capture-time, codec helpers,
//! and [`Binding`], one peer's copy of a local track (made in `local.rs`,
//! written in `writer.rs`).

mod feedback;
mod local;
mod pacer;
mod probe;
mod relay;
mod remote;
mod retransmit;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::packet::Packet as RtpPacket;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

pub use feedback::Feedback;
pub(super) use feedback::{Estimator, SenderFeedback};
pub(super) use local::{LocalMedia, PendingTracks};
pub(super) use pacer::Pacer;
pub(super) use probe::Prober;
pub use relay::{relay, Continuity};
pub(super) use remote::watch_remote;
pub use remote::{Received, RemoteTrack};
pub use writer::{PeerMedia, TrackWriter};

use crate::media::{MediaKind, TrackSpec};
use crate::session::simulcast::{Chooser, Forwarder};

/// The header extension that carries when a frame was captured
/// (webrtc.org's abs-capture-time; Chromium reads it too).
pub(super) const ABS_CAPTURE_TIME: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

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
    held: tokio::sync::Mutex<Held>,
}

/// Packets held for a peer whose connection is not up yet.
#[derive(Default)]
struct Held {
    packets: Vec<RtpPacket>,
    /// When the first of them was held.
    since: Option<std::time::Instant>,
}

struct Switch {
    chooser: Chooser,
    forwarder: Forwarder,
    next_choice: Instant,
    /// What the path carried when last full, or more if a probe since
    /// proved more, as of the last choice: the pace's ceiling.
    path_carried: Option<f64>,
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
