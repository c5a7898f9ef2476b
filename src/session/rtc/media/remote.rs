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
        let mut seen = Seen::default();
        while let Some(event) = track.poll().await {
            let TrackRemoteEvent::OnRtpPacket(packet) = event else {
                if matches!(event, TrackRemoteEvent::OnEnded) {
                    break;
                }
                continue;
            };
            // A sender's probes are copies of packets already sent (and a
            // retransmission may cross its original): one of each is
            // enough, and a copy counted as a frame would inflate the
            // frame rate.
            if !seen.first(packet.header.sequence_number) {
                continue;
            }
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

/// Which of the last [`Seen::SPAN`] sequence numbers of a stream arrived,
/// to tell a copy from the first arrival.
#[derive(Debug, Default)]
struct Seen {
    highest: Option<u16>,
    /// Bit k: `highest - k` arrived.
    bits: u128,
}

impl Seen {
    const SPAN: u16 = 128;

    /// Whether `seq` arrives for the first time (one too old to tell
    /// counts as first).
    fn first(&mut self, seq: u16) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.bits = 1;
            return true;
        };
        let ahead = seq.wrapping_sub(highest);
        if ahead != 0 && ahead < 0x8000 {
            self.bits = if ahead >= Self::SPAN {
                0
            } else {
                self.bits << ahead
            } | 1;
            self.highest = Some(seq);
            return true;
        }
        let behind = highest.wrapping_sub(seq);
        if behind >= Self::SPAN {
            return true;
        }
        let bit = 1u128 << behind;
        let first = self.bits & bit == 0;
        self.bits |= bit;
        first
    }
}

#[cfg(test)]
mod tests {
    use super::Seen;

    #[test]
    fn copies_are_told_from_first_arrivals_across_the_wrap() {
        let mut s = Seen::default();
        let arrivals = [65_534u16, 65_535, 1, 65_535, 0, 1, 2, 0, 65_534];
        let first: Vec<bool> = arrivals.iter().map(|&q| s.first(q)).collect();
        assert_eq!(
            first,
            [true, true, true, false, true, false, true, false, false]
        );
        // Far behind: cannot tell, so it passes.
        assert!(s.first(60_000));
        // A jump ahead forgets what came before.
        assert!(s.first(1_000));
        assert!(s.first(2));
    }
}
