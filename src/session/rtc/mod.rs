//! The one adapter to webrtc-rs: every `webrtc` type stays in this module.
//!
//! Each peer connection is driven by one task that applies commands in the
//! order the state machine issued them (so a candidate never overtakes the
//! description it belongs to), and reports [`PeerEvent`]s, tagged with the
//! peer id, on one shared channel.

mod addrs;
mod channel;
mod driver;
mod guard;
mod media;
mod net;
mod path;
mod settings;
mod turn_tcp;

pub use addrs::local_addresses;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, RTCConfiguration, RTCConfigurationBuilder, RTCIceServer,
    SettingEngine,
};

pub use channel::{Channel, ChannelClosed, Payload};
use driver::{Driver, Handler, Shared};
pub use media::{relay, Continuity, PeerMedia, Received, RemoteTrack, TrackWriter};
use media::{Feedback, LocalMedia};
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

/// Events queued from one connection's callbacks to the shared channel.
const RTC_EVENTS_PER_PEER: usize = 128;

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
    /// Every local candidate has been found (and reported).
    Gathered,
}

pub type Events = mpsc::Sender<(String, RtcEvent)>;

/// Builds peer connections with the settings measured to work here.
pub struct Rtc {
    /// The user's ICE servers, as given, and as used (TCP and TLS TURN
    /// servers replaced by their bridges).
    given: Vec<IceServer>,
    ice_servers: Vec<RTCIceServer>,
    /// The relay's, as given.
    issued_given: Vec<RTCIceServer>,
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
    /// Offers its tracks send-only (a sibling's peers: WHIP).
    send_only: bool,
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
            given: ice_servers.to_vec(),
            ice_servers: Vec::new(),
            issued_given: Vec::new(),
            issued: Vec::new(),
            bridges: HashMap::new(),
            tls: None,
            ca_file: ca_file.map(Into::into),
            receives_media,
            send_only: false,
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

    /// A second builder with the same ICE servers and local tracks (each
    /// of its peers is one more receiver of the same encode), for peers
    /// outside the room: the WHIP publication. Its offers only send.
    pub fn sibling(&self) -> anyhow::Result<Self> {
        let mut rtc = Self::new(&self.given, self.ca_file.as_deref(), self.receives_media)?;
        rtc.issued = rtc.bridged(self.issued_given.clone())?;
        rtc.local = self.local.clone();
        rtc.send_bps = self.send_bps;
        rtc.send_only = true;
        Ok(rtc)
    }

    /// ICE servers the relay handed us: peers created from now on use
    /// them (with the user's `--ice-server`s); they replace earlier ones.
    pub fn set_issued_ice_servers(&mut self, servers: &[crate::protocol::IceServerJson]) {
        let issued: Vec<RTCIceServer> = servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect();
        self.issued_given.clone_from(&issued);
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
                let payload = crate::session::simulcast::Payload::from_mime(&spec.mime);
                TrackWriter::new(targets.clone(), payload, on_keyframe.clone(), others)
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
        let feedback = Arc::new(Feedback::default());
        let engines = self.engines(&feedback)?;
        self.build(peer, events, engines, Some(feedback)).await
    }

    /// A connection that takes a WHIP publisher's media in (it answers
    /// the publisher's offer): only the codecs of `specs`, none of our
    /// tracks.
    pub async fn ingest_peer(
        &self,
        peer: &str,
        events: Events,
        specs: &[TrackSpec],
    ) -> anyhow::Result<PeerHandle> {
        let engines = Self::ingest_engines(specs)?;
        self.build(peer, events, engines, None).await
    }

    /// `feedback`: the connection carries our local tracks, and its
    /// estimates go there.
    async fn build(
        &self,
        peer: &str,
        events: Events,
        (media, registry): (
            webrtc::peer_connection::MediaEngine,
            rtc::interceptor::Registry,
        ),
        feedback: Option<Arc<Feedback>>,
    ) -> anyhow::Result<PeerHandle> {
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
        let pending = match (&self.local, feedback) {
            (Some(media), Some(feedback)) => {
                Some(media.add_to(&*pc, feedback, self.send_only).await?)
            }
            _ => None,
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
    /// An offer that only receives these kinds (a WHEP viewer's).
    OfferToReceive(Vec<crate::media::MediaKind>),
    AcceptOffer(Description),
    ApplyAnswer(Description),
    AddCandidate(Candidate),
    /// Restart ICE and make the offer that says so.
    RestartIce,
    /// Ask the sender of this SSRC for a key frame.
    Pli(u32),
    /// The local description with the candidates gathered so far.
    LocalDescription(tokio::sync::oneshot::Sender<Option<String>>),
    /// Whether the peer ended the connection (DTLS close_notify).
    ClosedByPeer(tokio::sync::oneshot::Sender<bool>),
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

    /// Makes an offer that receives one track of each of `kinds` and
    /// sends nothing (WHEP), reported as a local description.
    pub async fn offer_to_receive(&self, kinds: Vec<crate::media::MediaKind>) {
        self.send(Command::OfferToReceive(kinds)).await;
    }

    pub async fn accept_offer(&self, offer: Description) {
        self.send(Command::AcceptOffer(offer)).await;
    }

    /// Restarts ICE (new credentials, local candidates gathered afresh
    /// from the addresses the host has now) and makes the offer for it,
    /// reported as a local description.
    pub async fn restart_ice(&self) {
        self.send(Command::RestartIce).await;
    }

    pub async fn apply_answer(&self, answer: Description) {
        self.send(Command::ApplyAnswer(answer)).await;
    }

    pub async fn add_candidate(&self, candidate: Candidate) {
        self.send(Command::AddCandidate(candidate)).await;
    }

    /// The local description (SDP) with every candidate gathered so far
    /// in it; None before there is one, or once the connection is gone.
    pub async fn local_description(&self) -> Option<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Command::LocalDescription(tx)).await;
        rx.await.ok().flatten()
    }

    /// Whether the peer ended the connection on purpose (it sent DTLS's
    /// close_notify), rather than its path being lost. The connection's
    /// state says neither: ICE only stops hearing it, seconds later.
    pub async fn closed_by_peer(&self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Command::ClosedByPeer(tx)).await;
        rx.await.unwrap_or(true)
    }

    pub async fn close(&self) {
        self.mute();
        self.send(Command::Close).await;
    }

    /// Resolves once the connection is closed and its task has ended
    /// (after `close`, what the peer must hear has been sent).
    pub async fn finished(&self) {
        self.tx.closed().await;
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
