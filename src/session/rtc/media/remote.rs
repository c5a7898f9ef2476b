//! The receiving side: each remote track, reported with its first packet
//! and read packet by packet.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::shared::marshal::Marshal;
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::AbsCaptureTime;
use crate::media::{MediaKind, TrackSpec};
use crate::session::rtc::{short, Events, RemoteTracks, RtcEvent};

/// Packets of one remote track read from the network but not yet taken
/// by the recorder (about a second of 720p video).
const TRACK_QUEUE: usize = 512;

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
pub(in crate::session::rtc) fn watch_remote(
    track: Arc<dyn TrackRemote>,
    peer: String,
    events: Events,
    capture_ext: Option<u8>,
    tracks: RemoteTracks,
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
