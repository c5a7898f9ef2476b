//! One peer connection at work: the [`Driver`] task that applies its
//! commands in order, the [`Handler`] for webrtc-rs's callbacks, and what
//! the two share.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use webrtc::data_channel::RTCDataChannelInit;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCIceGatheringState,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription,
};

use super::media::{self, PendingTracks};
use super::{channel, path, short, Command, Events, RemoteTracks, RtcEvent};
use crate::protocol::{Candidate, Description};
use crate::session::machine::PeerEvent;

/// What the event handler and the driver task share: from the
/// descriptions, the first media section's mid and our ICE ufrag (for the
/// candidates we trickle) and the remote abs-capture-time id; the remote
/// tracks.
#[derive(Clone, Default)]
pub(super) struct Shared {
    local: Arc<Mutex<(Option<String>, Option<String>)>>,
    capture_ext: Arc<Mutex<Option<u8>>>,
    tracks: RemoteTracks,
}

impl Shared {
    fn set_local(&self, sdp: &str) {
        let find = |prefix: &str| {
            sdp.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .map(|v| v.trim().to_owned())
        };
        *self.local.lock().unwrap_or_else(|e| e.into_inner()) =
            (find("a=mid:"), find("a=ice-ufrag:"));
    }

    fn local(&self) -> (Option<String>, Option<String>) {
        self.local.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_remote(&self, sdp: &str) {
        *self.capture_ext.lock().unwrap_or_else(|e| e.into_inner()) = media::capture_ext_id(sdp);
    }

    fn capture_ext(&self) -> Option<u8> {
        *self.capture_ext.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// webrtc-rs's callbacks for one connection. They run on the connection's
/// driver: each only queues an event.
pub(super) struct Handler {
    pub(super) peer: String,
    pub(super) events: Events,
    pub(super) shared: Shared,
    /// Connected and failed go to the driver, which reads the statistics
    /// first (a callback must not call back into its connection).
    pub(super) states: mpsc::UnboundedSender<RTCPeerConnectionState>,
}

impl Handler {
    async fn report(&self, event: RtcEvent) {
        let _ = self.events.send((self.peer.clone(), event)).await;
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let Ok(init) = event.candidate.to_json() else {
            return;
        };
        let (mid, ufrag) = self.shared.local();
        // Browsers reject a mid that names no media section, so name the
        // first one (all are bundled).
        let cand = Candidate {
            candidate: init.candidate,
            sdp_mid: mid.or(init.sdp_mid),
            sdp_m_line_index: Some(0),
            username_fragment: ufrag,
        };
        self.report(RtcEvent::Peer(PeerEvent::LocalCandidate(cand)))
            .await;
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.report(RtcEvent::Gathered).await;
        }
    }

    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        tracing::debug!(peer = %short(&self.peer), "peer connection {s}");
        let event = match s {
            RTCPeerConnectionState::Connected | RTCPeerConnectionState::Failed => {
                let _ = self.states.send(s);
                return;
            }
            RTCPeerConnectionState::Disconnected => {
                PeerEvent::Disconnected("connection lost (ICE disconnected)".into())
            }
            RTCPeerConnectionState::Closed => PeerEvent::Failed("connection closed".into()),
            _ => return,
        };
        self.report(RtcEvent::Peer(event)).await;
    }

    // Receiver side: the sender's media arrives here.
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        media::watch_remote(
            track,
            self.peer.clone(),
            self.events.clone(),
            self.shared.capture_ext(),
            self.shared.tracks.clone(),
        );
    }

    // Receiver side: the sender's channel arrives here.
    async fn on_data_channel(&self, dc: Arc<dyn webrtc::data_channel::DataChannel>) {
        channel::watch(dc, self.peer.clone(), self.events.clone());
    }
}

/// Applies one connection's commands in order.
pub(super) struct Driver {
    pub(super) pc: Arc<dyn PeerConnection>,
    pub(super) peer: String,
    pub(super) events: Events,
    /// Past the mute: why a connection never came up is still worth
    /// saying once its peer has left.
    pub(super) unmuted: Events,
    pub(super) shared: Shared,
    /// The sender's tracks, until the answer says how to send them.
    pub(super) pending: Option<PendingTracks>,
    /// How each TURN bridge reaches its server, by its loopback address,
    /// for the path report.
    pub(super) relays: Arc<path::RelayTransports>,
}

/// A connection that never came up is explained when it is closed after
/// this long (shorter attempts were just peers coming and going).
const EXPLAIN_AFTER: Duration = Duration::from_secs(3);

impl Driver {
    pub(super) async fn run(
        self,
        mut rx: mpsc::Receiver<Command>,
        mut states: mpsc::UnboundedReceiver<RTCPeerConnectionState>,
    ) {
        let started = tokio::time::Instant::now();
        let mut connected = false;
        loop {
            let cmd = tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => c,
                    None => break,
                },
                Some(state) = states.recv() => {
                    let up = state == RTCPeerConnectionState::Connected;
                    if let (true, Some(pending)) = (up, &self.pending) {
                        if connected {
                            pending.came_back();
                        } else {
                            pending.go_live().await;
                        }
                    }
                    if up || !connected {
                        let summary = path::summarize(&*self.pc, &self.relays, up).await;
                        if let (true, Some(pending), Some(rtt)) =
                            (up, &self.pending, summary.round_trip())
                        {
                            pending.feedback.set_round_trip(rtt);
                        }
                        let event = if up {
                            PeerEvent::Connected
                        } else {
                            PeerEvent::Failed("connection failed: no network path".into())
                        };
                        self.send(RtcEvent::Ice(summary)).await;
                        self.send(RtcEvent::Peer(event)).await;
                    } else {
                        let lost = "connection failed (ICE failed)".to_owned();
                        self.send(RtcEvent::Peer(PeerEvent::Failed(lost))).await;
                    }
                    connected |= up;
                    continue;
                }
            };
            let result = match cmd {
                Command::Close => {
                    if !connected && started.elapsed() >= EXPLAIN_AFTER {
                        let summary = path::summarize(&*self.pc, &self.relays, false).await;
                        if summary.gathered() {
                            let ice = (self.peer.clone(), RtcEvent::Ice(summary));
                            let _ = self.unmuted.send(ice).await;
                        }
                    }
                    break;
                }
                Command::CreateOffer { data_channel } => self.create_offer(data_channel).await,
                Command::RestartIce => self.restart_ice().await,
                Command::OfferToReceive(kinds) => self.offer_to_receive(kinds).await,
                Command::AcceptOffer(offer) => self.accept_offer(offer).await,
                Command::ApplyAnswer(answer) => self.apply_answer(answer).await,
                Command::Pli(ssrc) => {
                    if let Some(track) = self.shared.tracks.get(ssrc) {
                        let pli = PictureLossIndication {
                            sender_ssrc: 0,
                            media_ssrc: ssrc,
                        };
                        let _ = track.write_rtcp(vec![Box::new(pli)]).await;
                    }
                    Ok(())
                }
                Command::ClosedByPeer(reply) => {
                    let _ = reply.send(self.closed_by_peer().await);
                    Ok(())
                }
                Command::LocalDescription(reply) => {
                    let _ = reply.send(self.pc.local_description().await.map(|d| d.sdp));
                    Ok(())
                }
                Command::AddCandidate(c) => {
                    let init = RTCIceCandidateInit {
                        candidate: c.candidate,
                        sdp_mid: c.sdp_mid,
                        sdp_mline_index: c.sdp_m_line_index,
                        username_fragment: c.username_fragment,
                        url: None,
                    };
                    if let Err(e) = self.pc.add_ice_candidate(init).await {
                        // One bad candidate is not fatal: others may work.
                        tracing::debug!(peer = %short(&self.peer), "ignored a candidate: {e}");
                    }
                    Ok(())
                }
            };
            if let Err(e) = result {
                let failed = PeerEvent::Failed(format!("{e:#}"));
                self.send(RtcEvent::Peer(failed)).await;
                break;
            }
        }
        if let Some(pending) = &self.pending {
            pending.unbind();
        }
        if let Err(e) = self.pc.close().await {
            tracing::debug!(peer = %short(&self.peer), "closing the peer connection: {e}");
        }
    }

    async fn send(&self, event: RtcEvent) {
        let _ = self.events.send((self.peer.clone(), event)).await;
    }

    async fn create_offer(&self, data_channel: bool) -> anyhow::Result<()> {
        if data_channel {
            let init = RTCDataChannelInit {
                ordered: true,
                ..Default::default()
            };
            let dc = self.pc.create_data_channel(&self.peer, Some(init)).await?;
            channel::watch(dc, self.peer.clone(), self.events.clone());
        }
        let offer = self.pc.create_offer(None).await?;
        self.shared.set_local(&offer.sdp);
        self.pc.set_local_description(offer.clone()).await?;
        self.report_description("offer", offer.sdp).await;
        Ok(())
    }

    async fn offer_to_receive(&self, kinds: Vec<crate::media::MediaKind>) -> anyhow::Result<()> {
        for kind in kinds {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            };
            self.pc
                .add_transceiver_from_kind(media::codec_kind(kind), Some(init))
                .await?;
        }
        self.create_offer(false).await
    }

    async fn closed_by_peer(&self) -> bool {
        use rtc::peer_connection::transport::RTCDtlsTransportState;
        for receiver in self.pc.get_receivers().await {
            if let Ok(Some(dtls)) = receiver.transport().await {
                return matches!(dtls.state().await, Ok(RTCDtlsTransportState::Closed));
            }
        }
        false
    }

    async fn restart_ice(&self) -> anyhow::Result<()> {
        self.pc.restart_ice().await?;
        let offer = self.pc.create_offer(None).await?;
        self.shared.set_local(&offer.sdp);
        self.pc.set_local_description(offer.clone()).await?;
        tracing::debug!(peer = %short(&self.peer), "ICE restarts");
        self.report_description("offer", offer.sdp).await;
        Ok(())
    }

    /// Applies the peer's offer or answer; "bad offer: …" when it does not
    /// parse or apply.
    async fn set_remote(&self, desc: Description, offer: bool) -> anyhow::Result<()> {
        let kind = if offer { "offer" } else { "answer" };
        let bad = |e: webrtc::error::Error| anyhow::anyhow!("bad {kind}: {e}");
        self.shared.set_remote(&desc.sdp);
        let desc = if offer {
            RTCSessionDescription::offer(desc.sdp)
        } else {
            RTCSessionDescription::answer(desc.sdp)
        }
        .map_err(bad)?;
        self.pc.set_remote_description(desc).await.map_err(bad)
    }

    async fn accept_offer(&self, offer: Description) -> anyhow::Result<()> {
        self.set_remote(offer, true).await?;
        let answer = self.pc.create_answer(None).await?;
        self.shared.set_local(&answer.sdp);
        self.pc.set_local_description(answer.clone()).await?;
        self.bind_tracks().await;
        self.report_description("answer", answer.sdp).await;
        Ok(())
    }

    async fn apply_answer(&self, answer: Description) -> anyhow::Result<()> {
        self.set_remote(answer, false).await?;
        self.bind_tracks().await;
        Ok(())
    }

    async fn bind_tracks(&self) {
        if let Some(pending) = &self.pending {
            pending.bind(&*self.pc, &self.peer).await;
        }
    }

    async fn report_description(&self, kind: &str, sdp: String) {
        tracing::debug!(peer = %short(&self.peer), "{kind} made");
        let desc = PeerEvent::LocalDescription(Description {
            kind: kind.into(),
            sdp,
        });
        self.send(RtcEvent::Peer(desc)).await;
    }
}
