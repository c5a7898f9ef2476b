//! The sending side's tracks on one connection: added to it, bound to
//! the payload types its answer settled on, and held until it is up.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

use super::{
    codec_kind, codec_of, fmtp_matches, is_keyframe_request, Binding, Feedback, Held, Switch,
    TrackWriter, ABS_CAPTURE_TIME,
};
use crate::media::{KeyframeReason, MediaKind, TrackSpec};
use crate::session::rtc::short;
use crate::session::simulcast::{self, Chooser, Forwarder};

/// How long after a receiver's track is bound its key-frame requests count
/// as its start, not as repairs (see `KeyframeReason`).
const JOINING: Duration = Duration::from_secs(2);

/// The sender's tracks, shared by every peer connection: each packet is
/// encoded once (per layer) and written to all of them.
#[derive(Clone)]
pub(in crate::session::rtc) struct LocalMedia {
    pub specs: Vec<TrackSpec>,
    pub writers: Vec<TrackWriter>,
    pub stream_id: String,
}

/// A peer's tracks, added to its connection but not yet negotiated.
pub(in crate::session::rtc) struct PendingTracks {
    tracks: Vec<(TrackSpec, TrackWriter, Arc<TrackLocalStaticRTP>, u32)>,
    pub feedback: Arc<Feedback>,
    layer: Arc<AtomicUsize>,
    /// Whether the connection is up; bindings made after that are live
    /// at once.
    up: tokio::sync::Mutex<bool>,
}

impl LocalMedia {
    /// Adds one track per spec to `pc`, each with an SSRC of its own. PLI
    /// and FIR from the peer become key-frame requests. `send_only`: the
    /// offer says so (WHIP asks for it); otherwise the tracks are offered
    /// as webrtc-rs adds them, send-receive.
    pub async fn add_to(
        &self,
        pc: &dyn PeerConnection,
        feedback: Arc<Feedback>,
        send_only: bool,
    ) -> anyhow::Result<PendingTracks> {
        let mut pending = Vec::new();
        // The layer a receiver starts on: its first key frame is asked for
        // at binding, before its chooser has run.
        let start = self
            .specs
            .iter()
            .zip(&self.writers)
            .find(|(spec, _)| spec.kind == MediaKind::Video)
            .map_or(0, |(spec, w)| start_layer(spec, w));
        if let Some(w) = self.writers.iter().find(|w| w.layers > 1) {
            tracing::debug!(
                "a new receiver starts on layer {start} (latest key frames, bytes: {:?})",
                w.keyframe_sizes()
            );
        }
        let layer = Arc::new(AtomicUsize::new(start));
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
            if send_only {
                let init = RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    send_encodings: vec![],
                };
                pc.add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, Some(init))
                    .await?;
            } else {
                pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
            }
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

/// The layer a receiver of `writer`'s track starts on.
fn start_layer(spec: &TrackSpec, writer: &TrackWriter) -> usize {
    simulcast::start_layer(
        writer.layers,
        simulcast::Payload::from_mime(&spec.mime),
        &writer.keyframe_sizes(),
    )
}

impl PendingTracks {
    /// Once negotiated, starts writing to this peer with the payload types
    /// its description settled on.
    pub async fn bind(&self, pc: &dyn PeerConnection, peer: &str) {
        let senders = pc.get_senders().await;
        let up = self.up.lock().await;
        for (spec, writer, track, ssrc) in &self.tracks {
            // Bound at the first answer. An ICE restart's answer changes
            // the path, not the media: binding again would start a new
            // forwarder, whose sequence numbers start over, and a browser
            // drops what looks that old (no picture after the restart).
            if writer.bindings.find(track).is_some() {
                continue;
            }
            let Some((payload_type, capture_ext)) = negotiated(&senders, spec).await else {
                tracing::warn!(peer = %short(peer), "{} ({}) was not accepted by the peer", spec.kind, spec.mime);
                continue;
            };
            let switch = (writer.layers > 1).then(|| {
                let start = start_layer(spec, writer);
                let mut forwarder = Forwarder::new(simulcast::Payload::from_mime(&spec.mime));
                forwarder.set_target(start);
                Mutex::new(Switch {
                    chooser: Chooser::starting_at(start),
                    forwarder,
                    next_choice: Instant::now(),
                    path_carried: None,
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
                held: tokio::sync::Mutex::new(Held::default()),
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
            if let (Some(first), Some(last)) = (held.packets.first(), held.packets.last()) {
                let span = last.header.timestamp.wrapping_sub(first.header.timestamp);
                let ms = f64::from(span) * 1000.0 / f64::from(spec.clock_rate.max(1));
                let bytes: usize = held.packets.iter().map(|p| p.payload.len()).sum();
                tracing::debug!(
                    peer = %short(&b.peer),
                    "connected: {} {} packets held for it go out ({bytes} bytes, {ms:.0} ms of media)",
                    held.packets.len(),
                    spec.kind
                );
            }
            held.since = None;
            for p in held.packets.drain(..) {
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

    /// The connection is up again after its path was lost (an ICE
    /// restart, or ICE finding the path again): what was sent meanwhile
    /// never arrived, and the receiver's decoder has nothing to go on
    /// from, so its layer's next key frame is asked for now. Left to the
    /// receiver, our page in Chromium asked 1.7 s after the path was back
    /// (it tried NACKs for the whole gap first).
    pub fn came_back(&self) {
        for (spec, writer, track, _) in &self.tracks {
            if spec.kind == MediaKind::Video && writer.bindings.find(track).is_some() {
                (writer.on_keyframe)(self.layer.load(Ordering::Relaxed), KeyframeReason::Repair);
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
