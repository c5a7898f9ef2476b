//! The one adapter to webrtc-rs: every `webrtc` type stays in this module.
//!
//! Each peer connection is driven by one task that applies commands in the
//! order the state machine issued them (so a candidate never overtakes the
//! description it belongs to), and reports [`PeerEvent`]s, tagged with the
//! peer id, on one shared channel.

mod channel;
mod media;
mod net;
mod path;
mod turn_tcp;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{
    CongestionControlBuilder, Gcc, NackGeneratorBuilder, NackResponderBuilder, Registry, Slot,
    TwccSenderBuilder,
};
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use tokio::sync::mpsc;
use webrtc::data_channel::RTCDataChannelInit;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    configure_rtcp_reports, configure_twcc_receiver_only, MediaEngine, PeerConnection,
    PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfiguration, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceServer, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription, SettingEngine, SettingEngineBuilder,
};

pub use channel::{Channel, ChannelClosed, Payload};
use media::{Feedback, LocalMedia, PendingTracks, ABS_CAPTURE_TIME};
pub use media::{PeerMedia, Received, RemoteTrack, TrackWriter};
pub use path::IceSummary;

use super::machine::PeerEvent;
use crate::media::TrackSpec;
use crate::protocol::{Candidate, Description};

/// Size of the chunks `--binary` sends: webrtc-rs and browsers both accept
/// 64 KiB without negotiation (RFC 8841's default max-message-size).
pub const CHUNK: usize = 64 * 1024;

/// Bytes a channel may have unacknowledged before `send` waits. Enough to
/// keep a loopback or LAN path busy, small enough that a stalled receiver
/// pins little memory.
const SEND_BUFFER: usize = 4 * 1024 * 1024;

/// SCTP receive window: how much the peer may send ahead of our reading.
/// webrtc-rs's default (1 MiB) halves loopback throughput.
const SCTP_RECEIVE_BUFFER: u32 = 4 * 1024 * 1024;

/// Floor under SCTP's retransmission timeout. RFC 9260's 1 s bounded a data
/// channel over 5 % loss on a LAN to ~65 KB/s: every lost retransmission
/// and every loss at the tail of a burst (too few packets follow it to
/// trigger a fast retransmit) waited the full second. Throughput there goes
/// as the inverse of the floor (200 MB: 167 s at 50 ms, 76 s at 20 ms); the
/// RTO itself still follows the path's RTT samples, so a slow or jittery
/// path keeps a long one. A lone message answered by the peer's 200 ms
/// delayed SACK is sent again a few times until those samples raise the
/// RTO past it. Needs `third_party/rtc*-rto-min.patch` (bench/NOTES.md).
const SCTP_RTO_MIN: Duration = Duration::from_millis(20);

/// How often a receiver asks again for the video packets it is missing
/// (NACK). webrtc-rs's default, 100 ms, is the recorder's whole jitter
/// buffer latency: half the retransmissions came too late to be used. At
/// 20 ms a lost packet (or a lost retransmission) is asked for again well
/// inside it on a LAN or a continent.
const NACK_INTERVAL: Duration = Duration::from_millis(20);

/// How many times a receiver asks for one lost packet. Unlimited (the
/// default) turned a congested path into a storm: every packet the
/// bottleneck dropped was asked for every 20 ms, each answer dropped in
/// turn, until retransmissions alone filled the link (measured: 15,000
/// packets a second dropped on a 1 Mbit/s link carrying 200 kbit/s of
/// video). Three tries spread over 60 ms recover a packet lost at 5 %
/// all but once in 8,000.
const NACKS_PER_PACKET: u16 = 3;

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

/// ICE: time between connectivity checks, and how many a candidate pair
/// gets. webrtc-rs's 200 ms tick also paces every handshake step after
/// ICE (DTLS, SCTP, the channel's open): a data channel took 400–600 ms
/// to open. At 20 ms it opens in 50–70 ms; 100 checks keep a pair alive
/// for the same 2 s a slow path needs.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(20);
const ICE_CHECKS_PER_PAIR: u16 = 100;

/// Interceptor slot of [`media::SenderFeedback`] (past the built-in ones,
/// so application-ward of congestion control).
const FEEDBACK_SLOT: usize = 14_000;

/// The transport-wide congestion control extension and feedback.
const TRANSPORT_CC: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Lowest bandwidth estimate: below it, even audio and the smallest
/// layer do not fit, and a lower number would only slow the recovery.
const MIN_ESTIMATE: f64 = 100_000.0;

/// Events queued from one connection's callbacks to the shared channel.
const RTC_EVENTS_PER_PEER: usize = 128;

/// How long ICE waits before it may take a server-reflexive or a relayed
/// pair (see `settings`).
const SRFLX_ACCEPTANCE: Duration = Duration::from_millis(100);
const RELAY_ACCEPTANCE: Duration = Duration::from_millis(250);

/// Commands queued for one peer: a handful per negotiation plus trickled
/// candidates.
const PEER_COMMANDS: usize = 128;

/// Asks the encoder of a video layer for a key frame, saying why.
pub type OnKeyframe = Arc<dyn Fn(usize, crate::media::KeyframeReason) + Send + Sync>;

/// An ICE server as the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
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
    /// What ICE tried and chose: sent just before `Connected`, and before
    /// the `Failed` of a connection that never came up.
    Ice(IceSummary),
}

pub type Events = mpsc::Sender<(String, RtcEvent)>;

/// Builds peer connections with the settings measured to work here.
pub struct Rtc {
    ice_servers: Vec<RTCIceServer>,
    /// Handed to us by the relay (`p2p signal --turn-secret`), used beside
    /// the user's own.
    issued: Vec<RTCIceServer>,
    /// Loopback bridges to TURN servers over TCP or TLS, by URL (see
    /// [`turn_tcp`]); the servers above name the bridge instead.
    bridges: HashMap<String, turn_tcp::TurnBridge>,
    /// Trust for `turns:` servers (`--ca-file`).
    tls: Option<Arc<rustls::ClientConfig>>,
    ca_file: Option<std::path::PathBuf>,
    receives_media: bool,
    local: Option<LocalMedia>,
    /// What the sender sends at its best, bit/s: where each receiver's
    /// bandwidth estimate starts.
    send_bps: f64,
    runtime: Arc<dyn webrtc::runtime::Runtime>,
}

impl Rtc {
    /// `receives_media`: this side takes media in (a receiver), so it
    /// asks for lost packets and reports congestion; a sender only answers.
    /// `ca_file`: extra trust for `turns:` servers.
    pub fn new(
        ice_servers: &[IceServer],
        ca_file: Option<&std::path::Path>,
        receives_media: bool,
    ) -> anyhow::Result<Self> {
        let mut rtc = Self {
            ice_servers: Vec::new(),
            issued: Vec::new(),
            bridges: HashMap::new(),
            tls: None,
            ca_file: ca_file.map(Into::into),
            receives_media,
            local: None,
            send_bps: 0.0,
            runtime: net::Net::runtime(),
        };
        let given = ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: vec![s.url.clone()],
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect();
        rtc.ice_servers = rtc.bridged(given)?;
        // Fail at start, not at the first peer, on a bad setting.
        rtc.engines(&Default::default())?;
        Ok(rtc)
    }

    /// ICE servers the relay handed us: peers created from now on use
    /// them (with the user's `--ice-server`s); they replace earlier ones.
    pub fn set_issued_ice_servers(&mut self, servers: &[crate::protocol::IceServerJson]) {
        let issued = servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect();
        match self.bridged(issued) {
            Ok(issued) => self.issued = issued,
            Err(e) => tracing::warn!("cannot use the ICE servers the relay handed us: {e:#}"),
        }
    }

    /// `servers` with every TURN URL over TCP or TLS replaced by a loopback
    /// bridge to it (one per URL, kept for later peers).
    fn bridged(&mut self, servers: Vec<RTCIceServer>) -> anyhow::Result<Vec<RTCIceServer>> {
        let mut out = Vec::with_capacity(servers.len());
        for mut server in servers {
            for url in &mut server.urls {
                let Some(target) = turn_tcp::stream_server(url) else {
                    continue;
                };
                if !self.bridges.contains_key(url.as_str()) {
                    let transport = if target.tls {
                        if self.tls.is_none() {
                            let config = crate::tls::client_config(self.ca_file.as_deref())
                                .map_err(anyhow::Error::msg)?;
                            self.tls = Some(config);
                        }
                        let name = rustls_pki_types::ServerName::try_from(target.host.clone())
                            .map_err(|e| anyhow::anyhow!("bad TURN host in {url}: {e}"))?;
                        turn_tcp::Transport::Tls {
                            name,
                            config: self.tls.clone().expect("set above"),
                        }
                    } else {
                        turn_tcp::Transport::Tcp
                    };
                    let bridge = turn_tcp::TurnBridge::start(&target, transport).map_err(|e| {
                        anyhow::anyhow!("cannot open a local port for TURN over TCP: {e}")
                    })?;
                    tracing::debug!(
                        "TURN over {} to {} through {}",
                        if target.tls { "TLS" } else { "TCP" },
                        target.addr,
                        bridge.local_addr()
                    );
                    self.bridges.insert(url.clone(), bridge);
                }
                *url = self.bridges[url.as_str()].engine_url();
            }
            out.push(server);
        }
        Ok(out)
    }

    fn configuration(&self) -> RTCConfiguration {
        let mut servers = self.ice_servers.clone();
        servers.extend(self.issued.iter().cloned());
        RTCConfigurationBuilder::new()
            .with_ice_servers(servers)
            .build()
    }

    /// Codecs, header extensions and interceptors, split by direction.
    /// Both sides: RTCP sender and receiver reports, and video codecs with
    /// `nack`, `nack pli` and `ccm fir` feedback. The sending side keeps
    /// what it sent to answer NACKs, hands key-frame requests to the
    /// encoder, numbers its packets for transport-wide feedback and runs
    /// Google Congestion Control on that feedback, one estimate per
    /// receiver (into `feedback`). The receiving side asks for what it lost
    /// and sends that transport-wide feedback. Each of those two wakes up
    /// on a timer per connection (NACK every 20 ms, TWCC every 100 ms)
    /// whether or not media comes in: on a sender with 20 receivers that
    /// was 1,200 idle wake-ups a second, so a sender runs neither.
    ///
    /// No pacer: packets leave as the encoder makes them, and each
    /// receiver is kept under its estimate by the layer it is forwarded,
    /// not by queueing (which would add delay to every frame).
    fn engines(&self, feedback: &Arc<Feedback>) -> anyhow::Result<(MediaEngine, Registry)> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
            media.register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: ABS_CAPTURE_TIME.into(),
                },
                kind,
                None,
            )?;
        }
        for parameter in ["", "pli"] {
            media.register_feedback(
                RTCPFeedback {
                    typ: "nack".into(),
                    parameter: parameter.into(),
                },
                RtpCodecKind::Video,
            );
        }
        let registry = configure_rtcp_reports(Registry::new());
        if !self.receives_media {
            let mut registry = registry
                .with(Slot::NackResponder, NackResponderBuilder::new().build())
                .with(
                    Slot::from(FEEDBACK_SLOT),
                    media::SenderFeedback::new(feedback.clone()),
                );
            if self.send_bps > 0.0 {
                for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
                    media.register_feedback(
                        RTCPFeedback {
                            typ: "transport-cc".into(),
                            parameter: String::new(),
                        },
                        kind,
                    );
                    media.register_header_extension(
                        RTCRtpHeaderExtensionCapability {
                            uri: TRANSPORT_CC.into(),
                        },
                        kind,
                        None,
                    )?;
                }
                // Starts above the full rate: a path is assumed to carry
                // the stream until its feedback shows otherwise (GCC has no
                // probing here, and ramping up from a guess takes tens of
                // seconds), with room for the first key frames' burst.
                let start = (self.send_bps * 2.0).max(MIN_ESTIMATE);
                let gcc = Gcc::new(start, MIN_ESTIMATE, start * 2.0);
                registry = registry
                    .with(
                        Slot::CongestionControl,
                        CongestionControlBuilder::new(gcc).build(),
                    )
                    .with(Slot::TwccSender, TwccSenderBuilder::new().build());
            }
            return Ok((media, registry));
        }
        let registry = registry.with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_interval(NACK_INTERVAL)
                .with_max_nacks_per_packet(NACKS_PER_PACKET)
                .build(),
        );
        let registry = configure_twcc_receiver_only(registry, &mut media)?;
        Ok((media, registry))
    }

    pub(crate) fn settings() -> SettingEngine {
        SettingEngineBuilder::new()
            // No multicast: nothing leaves this machine unless told to.
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            // Two processes on one machine meet over loopback.
            .with_include_loopback_candidate(true)
            // Browsers that hide their addresses show up as peer-reflexive
            // candidates; accept them at once instead of after 1 s.
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            // A working server-reflexive pair is taken 0.1 s after ICE
            // starts, a relayed one after 0.25 s, not after webrtc-rs's
            // defaults of 0.5 s and 2 s: across NATs those waits were most
            // of the time to connect (bench/NOTES.md, "TURN"; Chromium does
            // not wait at all). A host pair that works is found within
            // milliseconds on one network, and a relayed pair needs an
            // allocation and a permission first, so a better pair that
            // works has almost always been found by then.
            .with_srflx_acceptance_min_wait(Some(SRFLX_ACCEPTANCE))
            .with_relay_acceptance_min_wait(Some(RELAY_ACCEPTANCE))
            .with_ice_timeouts(
                Some(ICE_DISCONNECTED),
                Some(ICE_FAILED),
                Some(ICE_KEEPALIVE),
            )
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_CHECKS_PER_PAIR))
            .with_sctp_max_receive_buffer_size(SCTP_RECEIVE_BUFFER)
            .with_sctp_rto_min(SCTP_RTO_MIN)
            // Answer as the DTLS server, so the offerer (a sender) is the
            // side that finishes the handshake last: webrtc-rs takes its
            // SRTP keys in an event handled after the rest of the packets
            // read with the last flight, and SRTP that arrives with it is
            // dropped. A sender that finished first sent its first picture
            // into that gap; the receiver then waited ~0.5 s for another
            // (bench/NOTES.md, "first key frame").
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .build()
    }

    /// Declares the sender's encoded tracks, each with its simulcast
    /// layers' target bit/s (one for a single encoding); every later peer
    /// connection carries them.
    /// `on_keyframe(layer)` is called on each PLI/FIR from a receiver, and
    /// when a receiver switching layers waits for one. `audio_bps` is what
    /// the tracks other than video take from every path.
    pub fn set_local_tracks(
        &mut self,
        tracks: &[(TrackSpec, Vec<f64>)],
        stream_id: &str,
        on_keyframe: OnKeyframe,
        send_bps: f64,
        audio_bps: f64,
    ) -> Vec<TrackWriter> {
        let writers: Vec<TrackWriter> = tracks
            .iter()
            .map(|(spec, targets)| {
                let others = if spec.kind == crate::media::MediaKind::Video {
                    audio_bps
                } else {
                    0.0
                };
                TrackWriter::new(targets.clone(), on_keyframe.clone(), others)
            })
            .collect();
        self.local = Some(LocalMedia {
            specs: tracks.iter().map(|(s, _)| s.clone()).collect(),
            writers: writers.clone(),
            stream_id: stream_id.to_owned(),
        });
        self.send_bps = send_bps;
        writers
    }

    /// Creates the peer connection for `peer` and the task that drives it.
    pub async fn peer(&self, peer: &str, events: Events) -> anyhow::Result<PeerHandle> {
        let muted = Arc::new(AtomicBool::new(false));
        let unmuted = events.clone();
        let events = gate(events, muted.clone());
        let shared = Shared::default();
        let (states_tx, states) = mpsc::unbounded_channel();
        let handler = Handler {
            peer: peer.to_owned(),
            events: events.clone(),
            shared: shared.clone(),
            states: states_tx,
        };
        let feedback = Arc::new(Feedback::default());
        let (media, registry) = self.engines(&feedback)?;
        // The wildcard binds every interface but loopback; loopback too, so
        // two processes on one machine meet without a network.
        let addrs = vec!["0.0.0.0:0".to_owned(), "127.0.0.1:0".to_owned()];
        let pc = PeerConnectionBuilder::new()
            .with_configuration(self.configuration())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(Self::settings())
            .with_runtime(self.runtime.clone())
            .with_handler(Arc::new(handler))
            .with_udp_addrs(addrs)
            .with_data_channel_send_buffer_limit(SEND_BUFFER)
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let pending = match &self.local {
            Some(media) => Some(media.add_to(&*pc, feedback).await?),
            None => None,
        };
        let (tx, rx) = mpsc::channel(PEER_COMMANDS);
        let driver = Driver {
            pc,
            peer: peer.to_owned(),
            events,
            unmuted,
            shared,
            pending,
            relays: Arc::new(
                self.bridges
                    .values()
                    .map(|b| (b.local_addr().to_string(), b.transport_name()))
                    .collect(),
            ),
        };
        tokio::spawn(driver.run(rx, states));
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

/// Remote tracks by SSRC, for the PLIs sent about them.
#[derive(Clone, Default)]
pub(crate) struct RemoteTracks(Arc<Mutex<HashMap<u32, Arc<dyn TrackRemote>>>>);

impl RemoteTracks {
    fn insert(&self, ssrc: u32, track: Arc<dyn TrackRemote>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ssrc, track);
    }

    fn get(&self, ssrc: u32) -> Option<Arc<dyn TrackRemote>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ssrc)
            .cloned()
    }
}

/// What the event handler and the driver task share: from the
/// descriptions, the first media section's mid and our ICE ufrag (for the
/// candidates we trickle) and the remote abs-capture-time id; the remote
/// tracks.
#[derive(Clone, Default)]
struct Shared {
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
struct Handler {
    peer: String,
    events: Events,
    shared: Shared,
    /// Connected and failed go to the driver, which reads the statistics
    /// first (a callback must not call back into its connection).
    states: mpsc::UnboundedSender<RTCPeerConnectionState>,
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

    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        tracing::debug!(peer = %short(&self.peer), "peer connection {s}");
        let event = match s {
            RTCPeerConnectionState::Connected | RTCPeerConnectionState::Failed => {
                let _ = self.states.send(s);
                return;
            }
            RTCPeerConnectionState::Disconnected => {
                PeerEvent::Failed("connection lost (ICE disconnected)".into())
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
struct Driver {
    pc: Arc<dyn PeerConnection>,
    peer: String,
    events: Events,
    /// Past the mute: why a connection never came up is still worth
    /// saying once its peer has left.
    unmuted: Events,
    shared: Shared,
    /// The sender's tracks, until the answer says how to send them.
    pending: Option<PendingTracks>,
    /// How each TURN bridge reaches its server, by its loopback address,
    /// for the path report.
    relays: Arc<path::RelayTransports>,
}

/// A connection that never came up is explained when it is closed after
/// this long (shorter attempts were just peers coming and going).
const EXPLAIN_AFTER: Duration = Duration::from_secs(3);

impl Driver {
    async fn run(
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
                    if up && !connected {
                        if let Some(pending) = &self.pending {
                            pending.go_live().await;
                        }
                    }
                    if up || !connected {
                        let summary = path::summarize(&*self.pc, &self.relays).await;
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
                        let summary = path::summarize(&*self.pc, &self.relays).await;
                        if summary.gathered() {
                            let ice = (self.peer.clone(), RtcEvent::Ice(summary));
                            let _ = self.unmuted.send(ice).await;
                        }
                    }
                    break;
                }
                Command::CreateOffer { data_channel } => self.create_offer(data_channel).await,
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
        let desc = PeerEvent::LocalDescription(Description {
            kind: kind.into(),
            sdp,
        });
        self.send(RtcEvent::Peer(desc)).await;
    }
}

/// The runtime p2p gives webrtc-rs (large UDP socket buffers), for
/// `examples/dc_loopback`'s measure of the engine alone.
#[doc(hidden)]
pub fn engine_runtime() -> Arc<dyn webrtc::runtime::Runtime> {
    net::Net::runtime()
}

/// The settings p2p gives webrtc-rs, likewise.
#[doc(hidden)]
pub fn engine_settings() -> SettingEngine {
    Rtc::settings()
}

/// The first 8 characters of an id, for logs.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
