//! The one adapter to webrtc-rs: every `webrtc` type stays in this file.
//!
//! Each peer connection is driven by one task that applies commands in the
//! order the state machine issued them (so a candidate never overtakes the
//! description it belongs to), and reports [`PeerEvent`]s, tagged with the
//! peer id, on one shared channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use webrtc::api::interceptor_registry::{configure_rtcp_reports, configure_twcc_receiver_only};
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::data::data_channel::DataChannel as RawChannel;
use webrtc::data_channel::data_channel_init::RTCDataChannelInit;
use webrtc::data_channel::RTCDataChannel;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::interceptor::nack::generator::Generator;
use webrtc::interceptor::nack::responder::Responder;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::extension::HeaderExtension;
use webrtc::rtp::packet::Packet as RtpPacket;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_receiver::RTCRtpReceiver;
use webrtc::rtp_transceiver::{RTCPFeedback, RTCRtpTransceiver};
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};
use webrtc::track::track_remote::TrackRemote;
use webrtc::util::{Marshal, MarshalSize, Unmarshal};

use super::machine::PeerEvent;
use crate::media::{MediaKind, TrackSpec};
use crate::protocol::{Candidate, Description};

/// Largest message we read from a data channel. Browsers send up to 256 KiB
/// (their default max-message-size); a larger one would fail the read, so
/// the buffer is that size.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// Size of the chunks `--binary` sends: webrtc-rs and browsers both accept
/// 64 KiB without negotiation (RFC 8841's default max-message-size).
pub const CHUNK: usize = 64 * 1024;

/// Bytes a channel may have in flight before `send` waits. Enough to keep a
/// loopback or LAN path busy (about 1 ms at 1 Gbit/s … ample), small enough
/// that a stalled receiver pins little memory.
const HIGH_WATER: usize = 1024 * 1024;
const LOW_WATER: usize = 256 * 1024;

/// How often a receiver asks again for the video packets it is missing
/// (NACK). webrtc-rs's default, 100 ms, is the recorder's whole jitter
/// buffer latency: half the retransmissions came too late to be used. At
/// 20 ms a lost packet (or a lost retransmission) is asked for again well
/// inside it on a LAN or a continent.
const NACK_INTERVAL: Duration = Duration::from_millis(20);

/// ICE: silence before a connection counts as lost (webrtc-rs's default;
/// the session gives the peer up then), and keep-alive interval (default).
const ICE_DISCONNECTED: Duration = Duration::from_secs(5);
const ICE_KEEPALIVE: Duration = Duration::from_secs(2);

/// ICE: added to `ICE_DISCONNECTED`, how long connectivity checks may go
/// without an answer before a new connection fails. webrtc-rs stops
/// retrying a candidate pair after a few unanswered checks, so an attempt
/// made while the network is down never connects once it is back; it
/// must fail for the peers to try again. webrtc-rs's default, 25 s, kept
/// sessions down for half a minute after a 10 s outage; 15 s in all is
/// still far beyond what checks take on any working path.
const ICE_FAILED: Duration = Duration::from_secs(10);

/// Events queued from one connection's callbacks to the shared channel.
const RTC_EVENTS_PER_PEER: usize = 128;

/// Commands queued for one peer: a handful per negotiation plus trickled
/// candidates.
const PEER_COMMANDS: usize = 128;

/// An ICE server as the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

/// A data-channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Text(String),
    Binary(Bytes),
}

impl Payload {
    pub fn len(&self) -> usize {
        match self {
            Self::Text(s) => s.len(),
            Self::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the adapter reports, tagged with the peer id.
#[derive(Debug)]
pub enum RtcEvent {
    /// For the state machine.
    Peer(PeerEvent),
    /// A data channel is open and ready to carry payloads.
    Channel(Channel),
    /// A remote media track started (its first packet arrived).
    Track(RemoteTrack),
}

pub type Events = mpsc::Sender<(String, RtcEvent)>;

/// Builds peer connections with the settings measured to work here.
pub struct Rtc {
    api: API,
    config: RTCConfiguration,
    local: Option<LocalMedia>,
}

/// The sender's tracks, shared by every peer connection: each packet is
/// encoded once and written to all of them.
#[derive(Clone)]
struct LocalMedia {
    tracks: Vec<Arc<TrackLocalStaticRTP>>,
    on_keyframe: Arc<dyn Fn() + Send + Sync>,
}

/// Writes one encoded track's RTP packets to every peer connection.
#[derive(Clone)]
pub struct TrackWriter {
    track: Arc<TrackLocalStaticRTP>,
}

impl TrackWriter {
    /// Writes one RTP packet to every bound peer (each gets its own SSRC and
    /// payload type), stamped with its capture time when known. Errors only
    /// mean no peer is bound yet.
    pub async fn write(&self, rtp: &[u8], captured: Option<SystemTime>) {
        let Some(at) = captured else {
            let _ = self.track.write(rtp).await;
            return;
        };
        let Ok(packet) = RtpPacket::unmarshal(&mut &rtp[..]) else {
            return;
        };
        let ext = HeaderExtension::Custom {
            uri: ABS_CAPTURE_TIME.into(),
            extension: Box::new(AbsCaptureTime(at)),
        };
        let _ = self.track.write_rtp_with_extensions(&packet, &[ext]).await;
    }
}

/// The header extension that carries when a frame was captured
/// (webrtc.org's abs-capture-time; Chromium reads it too).
const ABS_CAPTURE_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

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

impl MarshalSize for AbsCaptureTime {
    fn marshal_size(&self) -> usize {
        8
    }
}

impl Marshal for AbsCaptureTime {
    fn marshal_to(&self, buf: &mut [u8]) -> webrtc::util::Result<usize> {
        let out = buf
            .get_mut(..8)
            .ok_or(webrtc::util::Error::ErrBufferShort)?;
        out.copy_from_slice(&self.ntp().to_be_bytes());
        Ok(8)
    }
}

impl Rtc {
    /// `receives_media`: this side takes media in (a receiver), so it
    /// asks for lost packets and reports congestion; a sender only answers.
    pub fn new(ice_servers: &[IceServer], receives_media: bool) -> anyhow::Result<Self> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        for kind in [RTPCodecType::Video, RTPCodecType::Audio] {
            media.register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: ABS_CAPTURE_TIME.into(),
                },
                kind,
                None,
            )?;
        }
        let registry = interceptors(&mut media, receives_media)?;
        let mut settings = SettingEngine::default();
        // No multicast: nothing leaves this machine unless told to.
        settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
        // Two processes on one machine meet over loopback.
        settings.set_include_loopback_candidate(true);
        // Browsers that hide their addresses show up as peer-reflexive
        // candidates; accept them at once instead of after 1 s.
        settings.set_prflx_acceptance_min_wait(Some(Duration::ZERO));
        // Our own read loop: larger messages, backpressure to the sender.
        settings.detach_data_channels();
        settings.set_ice_timeouts(
            Some(ICE_DISCONNECTED),
            Some(ICE_FAILED),
            Some(ICE_KEEPALIVE),
        );
        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .build();
        let config = RTCConfiguration {
            ice_servers: ice_servers
                .iter()
                .map(|s| RTCIceServer {
                    urls: vec![s.url.clone()],
                    username: s.username.clone().unwrap_or_default(),
                    credential: s.credential.clone().unwrap_or_default(),
                })
                .collect(),
            ..Default::default()
        };
        Ok(Self {
            api,
            config,
            local: None,
        })
    }

    /// Declares the sender's encoded tracks; every later peer connection
    /// carries them. `on_keyframe` is called on each PLI/FIR from a receiver.
    pub fn set_local_tracks(
        &mut self,
        specs: &[TrackSpec],
        stream_id: &str,
        on_keyframe: Arc<dyn Fn() + Send + Sync>,
    ) -> Vec<TrackWriter> {
        let tracks: Vec<Arc<TrackLocalStaticRTP>> = specs
            .iter()
            .map(|spec| {
                Arc::new(TrackLocalStaticRTP::new(
                    RTCRtpCodecCapability {
                        mime_type: spec.mime.clone(),
                        clock_rate: spec.clock_rate,
                        channels: spec.channels,
                        sdp_fmtp_line: spec.fmtp.clone(),
                        rtcp_feedback: vec![],
                    },
                    spec.kind.to_string(),
                    stream_id.to_owned(),
                ))
            })
            .collect();
        let writers = tracks
            .iter()
            .map(|t| TrackWriter { track: t.clone() })
            .collect();
        self.local = Some(LocalMedia {
            tracks,
            on_keyframe,
        });
        writers
    }

    /// Creates the peer connection for `peer` and the task that drives it.
    pub async fn peer(&self, peer: &str, events: Events) -> anyhow::Result<PeerHandle> {
        let pc = Arc::new(self.api.new_peer_connection(self.config.clone()).await?);
        let (tx, rx) = mpsc::channel(PEER_COMMANDS);
        let id = peer.to_owned();
        let local = LocalInfo::default();
        let muted = Arc::new(AtomicBool::new(false));
        let events = gate(events, muted.clone());
        install_callbacks(&pc, &id, &events, &local);
        if let Some(media) = &self.local {
            add_local_tracks(&pc, media).await?;
        }
        tokio::spawn(drive(pc, id, rx, events, local));
        Ok(PeerHandle { tx, muted })
    }
}

/// Passes one connection's events on until it is muted. A peer that comes
/// back (same id, new connection) must not get the old connection's last
/// words: its "closed" once the delayed close happens, or a "connected"
/// when ICE recovers on a connection already given up.
fn gate(events: Events, muted: Arc<AtomicBool>) -> Events {
    let (tx, mut rx) = mpsc::channel(RTC_EVENTS_PER_PEER);
    tokio::spawn(async move {
        // Drains to the end, muted or not, so no callback ever blocks.
        while let Some(ev) = rx.recv().await {
            if !muted.load(Ordering::Acquire) {
                let _ = events.send(ev).await;
            }
        }
    });
    tx
}

/// webrtc-rs's default interceptors, split by direction, with a shorter
/// NACK interval. Both sides: RTCP sender and receiver reports, and video
/// codecs with `nack`, `nack pli` and `ccm fir` feedback. The sending side
/// keeps what it sent to answer NACKs; the receiving side asks for what it
/// lost and sends transport-wide congestion feedback. Each of those two
/// wakes up on a timer per connection (NACK every 20 ms, TWCC every
/// 100 ms) whether or not media comes in: on a sender with 20 receivers
/// that was 1,200 idle wake-ups a second.
fn interceptors(media: &mut MediaEngine, receives_media: bool) -> anyhow::Result<Registry> {
    for parameter in ["", "pli"] {
        media.register_feedback(
            RTCPFeedback {
                typ: "nack".into(),
                parameter: parameter.into(),
            },
            RTPCodecType::Video,
        );
    }
    let mut registry = configure_rtcp_reports(Registry::new());
    if !receives_media {
        registry.add(Box::new(Responder::builder()));
        return Ok(registry);
    }
    registry.add(Box::new(Generator::builder().with_interval(NACK_INTERVAL)));
    Ok(configure_twcc_receiver_only(registry, media)?)
}

#[derive(Debug)]
enum Command {
    CreateOffer {
        data_channel: bool,
    },
    AcceptOffer(Description),
    ApplyAnswer(Description),
    AddCandidate(Candidate),
    /// Ask the sender of this SSRC for a key frame.
    Pli(u32),
    Close,
}

/// Commands one peer connection.
#[derive(Debug, Clone)]
pub struct PeerHandle {
    tx: mpsc::Sender<Command>,
    muted: Arc<AtomicBool>,
}

impl PeerHandle {
    async fn send(&self, cmd: Command) {
        // A closed queue means the peer task ended (connection closed);
        // the state machine learns that through a Failed event.
        let _ = self.tx.send(cmd).await;
    }

    pub async fn create_offer(&self, data_channel: bool) {
        self.send(Command::CreateOffer { data_channel }).await;
    }

    pub async fn accept_offer(&self, offer: Description) {
        self.send(Command::AcceptOffer(offer)).await;
    }

    pub async fn apply_answer(&self, answer: Description) {
        self.send(Command::ApplyAnswer(answer)).await;
    }

    pub async fn add_candidate(&self, candidate: Candidate) {
        self.send(Command::AddCandidate(candidate)).await;
    }

    pub async fn close(&self) {
        self.mute();
        self.send(Command::Close).await;
    }

    /// Drops every later event of this connection: it was given up, and
    /// a new one with the same peer may follow before it is closed.
    pub fn mute(&self) {
        self.muted.store(true, Ordering::Release);
    }

    /// Sends a Picture Loss Indication: the sender answers with a key frame.
    /// Returns false once the peer connection is gone.
    pub fn request_keyframe(&self, ssrc: u32) -> bool {
        !matches!(
            self.tx.try_send(Command::Pli(ssrc)),
            Err(mpsc::error::TrySendError::Closed(_))
        )
    }
}

async fn add_local_tracks(pc: &Arc<RTCPeerConnection>, media: &LocalMedia) -> anyhow::Result<()> {
    for track in &media.tracks {
        let sender = pc
            .add_track(Arc::clone(track) as Arc<dyn TrackLocal + Send + Sync>)
            .await?;
        // RTCP must be read or it backs up; PLI and FIR become key frames.
        let on_keyframe = media.on_keyframe.clone();
        tokio::spawn(async move {
            while let Ok((packets, _)) = sender.read_rtcp().await {
                for p in packets {
                    let any = p.as_any();
                    if any.downcast_ref::<PictureLossIndication>().is_some()
                        || any.downcast_ref::<FullIntraRequest>().is_some()
                    {
                        on_keyframe();
                    }
                }
            }
        });
    }
    Ok(())
}

fn install_callbacks(pc: &Arc<RTCPeerConnection>, id: &str, events: &Events, local: &LocalInfo) {
    let (ev, peer, local) = (events.clone(), id.to_owned(), local.clone());
    // This runs on the ICE agent's event loop: it must not call back into
    // the peer connection (that can stall the agent's state updates while
    // the connection is being set up), so mid and ufrag come from `local`.
    pc.on_ice_candidate(Box::new(move |c: Option<RTCIceCandidate>| {
        let (ev, peer) = (ev.clone(), peer.clone());
        let (mid, ufrag) = local.get();
        Box::pin(async move {
            let Some(c) = c else { return };
            let Ok(init) = c.to_json() else { return };
            // webrtc-rs leaves sdpMid empty; browsers reject a mid that names
            // no media section, so name the first one (all are bundled).
            let cand = Candidate {
                candidate: init.candidate,
                sdp_mid: mid.or(init.sdp_mid),
                sdp_m_line_index: Some(0),
                username_fragment: ufrag,
            };
            let _ = ev
                .send((peer, RtcEvent::Peer(PeerEvent::LocalCandidate(cand))))
                .await;
        })
    }));

    let (ev, peer) = (events.clone(), id.to_owned());
    pc.on_peer_connection_state_change(Box::new(move |s: RTCPeerConnectionState| {
        let (ev, peer) = (ev.clone(), peer.clone());
        Box::pin(async move {
            tracing::debug!(peer = %short(&peer), "peer connection {s}");
            let event = match s {
                RTCPeerConnectionState::Connected => PeerEvent::Connected,
                RTCPeerConnectionState::Disconnected => {
                    PeerEvent::Failed("connection lost (ICE disconnected)".into())
                }
                RTCPeerConnectionState::Failed => {
                    PeerEvent::Failed("connection failed (ICE failed)".into())
                }
                RTCPeerConnectionState::Closed => PeerEvent::Failed("connection closed".into()),
                _ => return,
            };
            let _ = ev.send((peer, RtcEvent::Peer(event))).await;
        })
    }));

    // Receiver side: the sender's media arrives here.
    let (ev, peer) = (events.clone(), id.to_owned());
    pc.on_track(Box::new(
        move |track: Arc<TrackRemote>, receiver: Arc<RTCRtpReceiver>, _: Arc<RTCRtpTransceiver>| {
            let (ev, peer) = (ev.clone(), peer.clone());
            Box::pin(async move {
                let capture_ext = receiver
                    .get_parameters()
                    .await
                    .header_extensions
                    .iter()
                    .find(|e| e.uri == ABS_CAPTURE_TIME)
                    .and_then(|e| u8::try_from(e.id).ok());
                let codec = track.codec();
                let spec = TrackSpec {
                    kind: if track.kind() == RTPCodecType::Video {
                        MediaKind::Video
                    } else {
                        MediaKind::Audio
                    },
                    mime: codec.capability.mime_type.clone(),
                    clock_rate: codec.capability.clock_rate,
                    channels: codec.capability.channels,
                    fmtp: codec.capability.sdp_fmtp_line.clone(),
                    payload_type: codec.payload_type,
                };
                tracing::debug!(peer = %short(&peer), "receiving {} ({})", spec.kind, spec.mime);
                let remote = RemoteTrack {
                    track,
                    spec,
                    capture_ext,
                };
                let _ = ev.send((peer, RtcEvent::Track(remote))).await;
            })
        },
    ));

    // Receiver side: the sender's channel arrives here.
    let (ev, peer) = (events.clone(), id.to_owned());
    pc.on_data_channel(Box::new(move |dc: Arc<RTCDataChannel>| {
        on_channel(dc, peer.clone(), ev.clone());
        Box::pin(async {})
    }));
}

/// Reports the channel once open, detached for our own reading.
fn on_channel(dc: Arc<RTCDataChannel>, peer: String, events: Events) {
    let dc2 = dc.clone();
    dc.on_open(Box::new(move || {
        Box::pin(async move {
            match dc2.detach().await {
                Ok(raw) => {
                    let channel = Channel::new(raw, peer.clone());
                    let _ = events
                        .send((peer.clone(), RtcEvent::Peer(PeerEvent::ChannelOpen)))
                        .await;
                    let _ = events.send((peer, RtcEvent::Channel(channel))).await;
                }
                Err(e) => tracing::warn!(peer = %short(&peer), "data channel unusable: {e}"),
            }
        })
    }));
}

/// The first media section's mid and our ICE ufrag, read from the local
/// description before it is set, for the candidates we trickle.
#[derive(Clone, Default)]
struct LocalInfo(Arc<std::sync::Mutex<(Option<String>, Option<String>)>>);

impl LocalInfo {
    fn set_from(&self, sdp: &str) {
        let find = |prefix: &str| {
            sdp.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .map(|v| v.trim().to_owned())
        };
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = (find("a=mid:"), find("a=ice-ufrag:"));
    }

    fn get(&self) -> (Option<String>, Option<String>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

async fn drive(
    pc: Arc<RTCPeerConnection>,
    peer: String,
    mut rx: mpsc::Receiver<Command>,
    events: Events,
    local: LocalInfo,
) {
    while let Some(cmd) = rx.recv().await {
        let result = match cmd {
            Command::Close => break,
            Command::CreateOffer { data_channel } => {
                create_offer(&pc, &peer, data_channel, &events, &local).await
            }
            Command::AcceptOffer(offer) => accept_offer(&pc, offer, &peer, &events, &local).await,
            Command::ApplyAnswer(answer) => match RTCSessionDescription::answer(answer.sdp) {
                Ok(desc) => pc
                    .set_remote_description(desc)
                    .await
                    .map_err(|e| anyhow::anyhow!("bad answer: {e}")),
                Err(e) => Err(anyhow::anyhow!("bad answer: {e}")),
            },
            Command::Pli(ssrc) => {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: ssrc,
                };
                let _ = pc.write_rtcp(&[Box::new(pli)]).await;
                Ok(())
            }
            Command::AddCandidate(c) => {
                let init = RTCIceCandidateInit {
                    candidate: c.candidate,
                    sdp_mid: c.sdp_mid,
                    sdp_mline_index: c.sdp_m_line_index,
                    username_fragment: c.username_fragment,
                };
                if let Err(e) = pc.add_ice_candidate(init).await {
                    // One bad candidate is not fatal: others may work.
                    tracing::debug!(peer = %short(&peer), "ignored a candidate: {e}");
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            let _ = events
                .send((
                    peer.clone(),
                    RtcEvent::Peer(PeerEvent::Failed(format!("{e:#}"))),
                ))
                .await;
            break;
        }
    }
    if let Err(e) = pc.close().await {
        tracing::debug!(peer = %short(&peer), "closing the peer connection: {e}");
    }
}

async fn create_offer(
    pc: &Arc<RTCPeerConnection>,
    peer: &str,
    data_channel: bool,
    events: &Events,
    local: &LocalInfo,
) -> anyhow::Result<()> {
    if data_channel {
        let init = RTCDataChannelInit {
            ordered: Some(true),
            ..Default::default()
        };
        let dc = pc.create_data_channel(peer, Some(init)).await?;
        on_channel(dc, peer.to_owned(), events.clone());
    }
    let offer = pc.create_offer(None).await?;
    local.set_from(&offer.sdp);
    pc.set_local_description(offer.clone()).await?;
    let _ = events
        .send((
            peer.to_owned(),
            RtcEvent::Peer(PeerEvent::LocalDescription(Description {
                kind: "offer".into(),
                sdp: offer.sdp,
            })),
        ))
        .await;
    Ok(())
}

async fn accept_offer(
    pc: &Arc<RTCPeerConnection>,
    offer: Description,
    peer: &str,
    events: &Events,
    local: &LocalInfo,
) -> anyhow::Result<()> {
    let desc =
        RTCSessionDescription::offer(offer.sdp).map_err(|e| anyhow::anyhow!("bad offer: {e}"))?;
    pc.set_remote_description(desc)
        .await
        .map_err(|e| anyhow::anyhow!("bad offer: {e}"))?;
    let answer = pc.create_answer(None).await?;
    local.set_from(&answer.sdp);
    pc.set_local_description(answer.clone()).await?;
    let _ = events
        .send((
            peer.to_owned(),
            RtcEvent::Peer(PeerEvent::LocalDescription(Description {
                kind: "answer".into(),
                sdp: answer.sdp,
            })),
        ))
        .await;
    Ok(())
}

/// An open data channel, detached from webrtc-rs's own read loop.
#[derive(Clone)]
pub struct Channel {
    raw: Arc<RawChannel>,
    peer: String,
    low: Arc<Notify>,
    closed: CancellationToken,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("peer", &self.peer).finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("data channel to {0} is closed")]
pub struct ChannelClosed(pub String);

impl Channel {
    fn new(raw: Arc<RawChannel>, peer: String) -> Self {
        let low = Arc::new(Notify::new());
        raw.set_buffered_amount_low_threshold(LOW_WATER);
        let notify = low.clone();
        raw.on_buffered_amount_low(Box::new(move || {
            let notify = notify.clone();
            // notify_one keeps a permit when nobody waits yet, so a wake-up
            // between our check and our wait is not lost.
            Box::pin(async move { notify.notify_one() })
        }));
        Self {
            raw,
            peer,
            low,
            closed: CancellationToken::new(),
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    pub fn buffered(&self) -> usize {
        self.raw.buffered_amount()
    }

    /// Sends one message, first waiting while too much is in flight: a slow
    /// receiver slows the reader of stdin instead of growing memory.
    pub async fn send(&self, payload: &Payload) -> Result<(), ChannelClosed> {
        while self.raw.buffered_amount() > HIGH_WATER {
            if self.closed.is_cancelled() {
                return Err(ChannelClosed(self.peer.clone()));
            }
            // The notification can race with our check; the timeout makes
            // a missed one cost 50 ms, not a hang.
            tokio::select! {
                () = self.low.notified() => {}
                () = self.closed.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        let (data, is_string) = match payload {
            Payload::Text(s) => (Bytes::from(s.clone().into_bytes()), true),
            Payload::Binary(b) => (b.clone(), false),
        };
        match self.raw.write_data_channel(&data, is_string).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(peer = %short(&self.peer), "data channel write failed: {e}");
                self.closed.cancel();
                Err(ChannelClosed(self.peer.clone()))
            }
        }
    }

    /// Waits until everything sent was acknowledged by the peer, or
    /// `timeout`. Returns whether it all went.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.raw.buffered_amount() > 0 {
            if self.closed.is_cancelled() || tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Reads the next message; `None` once the channel is closed.
    pub async fn recv(&self, buf: &mut [u8]) -> Option<Payload> {
        let read = tokio::select! {
            r = self.raw.read_data_channel(buf) => r,
            () = self.closed.cancelled() => return None,
        };
        match read {
            // (0, binary) is the end of the stream; (0, text) an empty line.
            Ok((0, false)) | Err(_) => {
                self.closed.cancel();
                None
            }
            Ok((n, true)) => Some(Payload::Text(
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            )),
            Ok((n, false)) => Some(Payload::Binary(Bytes::copy_from_slice(&buf[..n]))),
        }
    }

    /// Closes the channel (an SCTP stream reset: the peer reads everything
    /// sent before it, then end of stream).
    pub async fn close(&self) {
        if !self.closed.is_cancelled() {
            let _ = self.raw.close().await;
        }
        self.closed.cancel();
    }
}

/// The first 8 characters of an id, for logs.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// A track arriving from a sender.
pub struct RemoteTrack {
    track: Arc<TrackRemote>,
    pub spec: TrackSpec,
    /// The negotiated id of abs-capture-time, if the sender stamps it.
    capture_ext: Option<u8>,
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
        self.track.ssrc()
    }

    /// The next RTP packet; `None` once the track ended.
    pub async fn read(&self) -> Option<Received> {
        let (packet, _) = self.track.read_rtp().await.ok()?;
        let captured = self
            .capture_ext
            .and_then(|id| packet.header.get_extension(id))
            .and_then(|p| AbsCaptureTime::parse(&p));
        Some(Received {
            marker: packet.header.marker,
            captured,
            rtp: packet.marshal().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_time_survives_the_ntp_round_trip() {
        let at = UNIX_EPOCH + Duration::new(1_795_648_000, 123_456_789);
        let ext = AbsCaptureTime(at);
        let mut buf = [0u8; 8];
        assert_eq!(ext.marshal_to(&mut buf).unwrap(), 8);
        // 1970 is 2,208,988,800 s after 1900 on the NTP clock.
        assert_eq!(u64::from_be_bytes(buf) >> 32, 1_795_648_000 + 2_208_988_800);
        let back = AbsCaptureTime::parse(&buf).unwrap();
        let err = back.duration_since(at).unwrap_or_else(|e| e.duration());
        assert!(err < Duration::from_nanos(2), "{err:?}");
        assert!(AbsCaptureTime::parse(&buf[..7]).is_none());
        assert!(ext.marshal_to(&mut [0u8; 4]).is_err());
    }
}
