//! Sender and Receiver sessions: the run loops that feed the state machines
//! ([`machine`]) and carry out their actions on signaling and on peer
//! connections ([`rtc`], the only place webrtc-rs is used).

pub mod av;
pub mod fanout;
pub mod ingest;
mod keyframes;
mod latency;
pub mod machine;
mod netwatch;
mod output;
pub mod report;
pub mod rtc;
mod run;
pub mod settings;
pub mod simulcast;
mod status;
pub mod stdio;
mod throttle;
pub mod viewers;
pub mod whep;
pub mod whip;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::media::capture::Capture;
use crate::signaling::{self, SignalEvent, Signaling};
use machine::{Action, PeerEvent};
use output::{read_channel, Reader};
use report::Reporter;
use rtc::{Channel, Payload, PeerHandle, Rtc, RtcEvent};
pub use run::{run_receiver, run_sender};
use status::{Status, STATUS_EVERY};

/// How long a receiver waits for a leaving sender's channel to end before
/// it closes the connection: a sender that left closed its channel first,
/// so this bounds only a peer that does not.
const LAST_DATA_WAIT: Duration = Duration::from_secs(10);

/// Which machine a run loop drives.
enum Machine {
    Sender(machine::Sender),
    Receiver(machine::Receiver),
}

impl Machine {
    fn signal(&mut self, now: Instant, from: Option<&str>, data: &Value) -> Vec<Action> {
        match self {
            Self::Sender(m) => m.handle_signal(now, from, data),
            Self::Receiver(m) => m.handle_signal(now, from, data),
        }
    }

    fn peer(&mut self, now: Instant, id: &str, ev: PeerEvent) -> Vec<Action> {
        match self {
            Self::Sender(m) => m.handle_peer(now, id, ev),
            Self::Receiver(m) => m.handle_peer(now, id, ev),
        }
    }

    fn tick(&mut self, now: Instant) -> Vec<Action> {
        match self {
            Self::Sender(m) => m.tick(now),
            Self::Receiver(m) => m.tick(now),
        }
    }

    fn network_changed(&mut self, now: Instant) -> Vec<Action> {
        match self {
            Self::Sender(m) => m.network_changed(now),
            Self::Receiver(m) => m.network_changed(now),
        }
    }

    fn reconnected(&mut self, now: Instant) -> Vec<Action> {
        match self {
            Self::Sender(m) => m.reconnected(now),
            Self::Receiver(m) => m.reconnected(now),
        }
    }

    fn stop(&mut self) -> Vec<Action> {
        match self {
            Self::Sender(m) => m.stop(),
            Self::Receiver(m) => m.stop(),
        }
    }

    /// Peers whose connection is up.
    fn connected_peers(&self) -> usize {
        match self {
            Self::Sender(m) => m.peer_count() - m.connecting(),
            Self::Receiver(m) => m.connected(),
        }
    }
}

/// The IO around one state machine.
struct Runner {
    machine: Machine,
    signaling: Signaling,
    rtc: Rtc,
    rtc_events: mpsc::Sender<(String, RtcEvent)>,
    peers: HashMap<String, PeerHandle>,
    channels: HashMap<String, Channel>,
    reporter: Reporter,
    /// Sender: peer changes for the fan-out.
    fanout: Option<mpsc::Sender<fanout::Ctl>>,
    /// Receiver: where channel readers put messages.
    output: Option<mpsc::Sender<(String, Payload)>>,
    readers: HashMap<String, Reader>,
    /// Receiver: readers of peers being closed, and their closes; the run
    /// waits for them before it flushes stdout.
    closing: Vec<tokio::task::JoinHandle<()>>,
    /// Receiver: senders whose connection was lost before their stream
    /// ended, and that have not come back since.
    incomplete: std::collections::HashSet<String>,
    ever_connected: bool,
    /// Since when the relay has been out of reach, and why; `None` while
    /// it is connected.
    relay_down: Option<(Instant, String)>,
    /// Sender: the capture pipeline, asked for key frames as peers join.
    capture: Option<Arc<Capture>>,
    /// Sender: the video track's writer (each receiver's estimate and layer).
    video: Option<rtc::TrackWriter>,
    /// Sender: what audio takes from every path, bit/s.
    audio_bps: f64,
    /// Receiver: recordings per sender.
    recordings: Option<av::Recordings>,
    status: Status,
    /// This host's addresses, looked at every [`netwatch::EVERY`].
    addresses: netwatch::Watch,
}

impl Runner {
    /// A session with no peers yet; the caller adds the side's own parts.
    fn new(
        machine: Machine,
        signaling: Signaling,
        rtc: Rtc,
        rtc_events: mpsc::Sender<(String, RtcEvent)>,
        reporter: &Reporter,
    ) -> Self {
        Self {
            machine,
            signaling,
            rtc,
            rtc_events,
            peers: HashMap::new(),
            channels: HashMap::new(),
            reporter: reporter.clone(),
            fanout: None,
            output: None,
            readers: HashMap::new(),
            closing: Vec::new(),
            incomplete: Default::default(),
            ever_connected: false,
            relay_down: None,
            capture: None,
            video: None,
            audio_bps: 0.0,
            recordings: None,
            status: Status::new(false, ""),
            addresses: netwatch::Watch::new(),
        }
    }

    /// Carries out actions in order; peer failures feed back into the machine.
    async fn exec(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Subscribe(ns) => self.sig(self.signaling.on(ns).await),
                Action::Unsubscribe(ns) => self.sig(self.signaling.off(ns).await),
                Action::Emit(ns, msg) => self.sig(self.signaling.emit(ns, msg.to_value()).await),
                Action::CreateOffer { peer, data_channel } => {
                    tracing::debug!(peer = %rtc::short(&peer), "making an offer");
                    match self.rtc.peer(&peer, self.rtc_events.clone()).await {
                        Ok(h) => {
                            h.create_offer(data_channel).await;
                            self.peers.insert(peer.clone(), h);
                            if let Some(f) = &self.fanout {
                                let _ = f.send(fanout::Ctl::Added(peer)).await;
                            }
                        }
                        Err(e) => {
                            let failed = PeerEvent::Failed(format!(
                                "cannot create a peer connection: {e:#}"
                            ));
                            queue.extend(self.machine.peer(Instant::now(), &peer, failed));
                        }
                    }
                }
                Action::AcceptOffer { peer, offer } => {
                    if let Some(r) = &mut self.recordings {
                        r.expect(&peer, av::media_sections(&offer.sdp));
                    }
                    match self.rtc.peer(&peer, self.rtc_events.clone()).await {
                        Ok(h) => {
                            h.accept_offer(offer).await;
                            self.peers.insert(peer, h);
                        }
                        Err(e) => {
                            let failed = PeerEvent::Failed(format!(
                                "cannot create a peer connection: {e:#}"
                            ));
                            queue.extend(self.machine.peer(Instant::now(), &peer, failed));
                        }
                    }
                }
                Action::ApplyAnswer { peer, answer } => {
                    if let Some(h) = self.peers.get(&peer) {
                        h.apply_answer(answer).await;
                    }
                }
                Action::RestartIce { peer } => {
                    if let Some(h) = self.peers.get(&peer) {
                        h.restart_ice().await;
                    }
                }
                Action::Renegotiate { peer, offer } => {
                    if let Some(h) = self.peers.get(&peer) {
                        h.accept_offer(offer).await;
                    }
                }
                Action::AddCandidate { peer, candidate } => {
                    if let Some(h) = self.peers.get(&peer) {
                        h.add_candidate(candidate).await;
                    }
                }
                Action::ClosePeer { peer, lost } => self.close_peer(&peer, lost).await,
                Action::Event(ev) => {
                    if matches!(ev, machine::Event::Connect { .. }) {
                        self.ever_connected = true;
                        if self.capture.as_ref().is_some_and(|c| c.play()) {
                            tracing::debug!("the first receiver connected: the file plays");
                        }
                    }
                    self.reporter.event(&ev);
                }
            }
        }
    }

    fn sig(&self, r: Result<(), signaling::SignalError>) {
        if let Err(e) = r {
            tracing::warn!("signaling: {e}");
        }
    }

    /// Closes one peer. A receiver first lets the peer's reader take what
    /// the sender sent: a sender that left ends its stream (closes its
    /// channel) first, so the reader ends by itself. A `lost` peer's
    /// connection is gone and nothing more can arrive.
    async fn close_peer(&mut self, peer: &str, lost: bool) {
        if let Some(r) = &mut self.recordings {
            r.close(peer, lost);
        }
        let handle = self.peers.remove(peer);
        if let Some(h) = &handle {
            // Given up: what it still reports (its close, a late ICE state)
            // is not about a new connection with the same peer.
            h.mute();
        }
        if let Some(f) = &self.fanout {
            let _ = f.send(fanout::Ctl::Gone(peer.to_owned())).await;
        }
        let channel = self.channels.remove(peer);
        // A long-running receiver sees senders come and go: keep only what
        // is still closing.
        self.closing.retain(|t| !t.is_finished());
        match self.readers.remove(peer) {
            Some(reader) if lost && !reader.task.is_finished() => {
                // Its stream never ended: what it sent after the last
                // message that arrived is missing.
                tracing::warn!(
                    "sender {}: connection lost before its data ended; the output is incomplete",
                    rtc::short(peer)
                );
                self.incomplete.insert(peer.to_owned());
                if let Some(ch) = channel {
                    ch.close().await;
                }
                if let Some(h) = handle {
                    h.close().await;
                }
                // The reader ends with the channel, after what was queued.
                self.closing.push(reader.task);
            }
            Some(reader) => {
                let task = tokio::spawn(async move {
                    if tokio::time::timeout(LAST_DATA_WAIT, reader.task)
                        .await
                        .is_err()
                    {
                        tracing::warn!(
                            "a leaving sender's data channel did not end within {} s; closing it",
                            LAST_DATA_WAIT.as_secs()
                        );
                    }
                    if let Some(ch) = channel {
                        ch.close().await;
                    }
                    if let Some(h) = handle {
                        h.close().await;
                    }
                });
                self.closing.push(task);
            }
            None => {
                if let Some(ch) = channel {
                    // Wakes a fan-out blocked on this channel.
                    ch.close().await;
                }
                if let Some(h) = handle {
                    h.close().await;
                }
            }
        }
    }

    async fn on_rtc(&mut self, peer: String, ev: RtcEvent) {
        match ev {
            RtcEvent::Peer(pe) => {
                if pe == PeerEvent::Connected {
                    if let Some(c) = &self.capture {
                        // No key frame yet: one now would come before the
                        // receiver's track is bound and be wasted. Its first
                        // PLI (or, with layers, its forwarder) asks for one.
                        c.dump_graph(&format!("p2p-send-{}-peers", self.peers.len()));
                    }
                }
                let actions = self.machine.peer(Instant::now(), &peer, pe);
                self.exec(actions).await;
            }
            RtcEvent::Ice(summary) => self.reporter.ice(&peer, summary),
            RtcEvent::Gathered => {}
            RtcEvent::Track(track) => {
                if let Some(r) = &mut self.recordings {
                    r.track(&peer, track, self.peers.get(&peer));
                }
            }
            RtcEvent::Channel(ch) => {
                if !self.peers.contains_key(&peer) {
                    ch.close().await;
                    return;
                }
                // A sender that was lost and came back goes on with its stream.
                self.incomplete.remove(&peer);
                self.channels.insert(peer.clone(), ch.clone());
                if let Some(f) = &self.fanout {
                    let _ = f.send(fanout::Ctl::Open(ch)).await;
                } else if let Some(out) = &self.output {
                    let out = out.clone();
                    let counter = self.status.data_bytes.clone();
                    let task = tokio::spawn(read_channel(ch, out, counter));
                    self.readers.insert(peer, Reader { task });
                }
            }
        }
    }

    async fn on_signal(&mut self, ev: SignalEvent) {
        let actions = match ev {
            SignalEvent::Message { from, data, .. } => {
                self.machine.signal(Instant::now(), from.as_deref(), &data)
            }
            SignalEvent::Stamp(stamp) => {
                if let Machine::Receiver(m) = &mut self.machine {
                    m.set_stamp(stamp);
                }
                vec![]
            }
            SignalEvent::Connected { reconnect } => {
                if let Some((since, _)) = self.relay_down.take() {
                    tracing::info!(
                        "reached the relay after {:.0} s",
                        since.elapsed().as_secs_f64()
                    );
                }
                if reconnect {
                    self.machine.reconnected(Instant::now())
                } else {
                    vec![]
                }
            }
            SignalEvent::Disconnected { reason } => {
                self.relay_down.get_or_insert((Instant::now(), reason));
                vec![]
            }
            SignalEvent::RelayError(_) => vec![],
            SignalEvent::IceServers(servers) => {
                let urls: Vec<&str> = servers
                    .iter()
                    .flat_map(|s| s.urls.iter().map(String::as_str))
                    .collect();
                tracing::info!(
                    "the relay handed us TURN credentials for {}",
                    urls.join(", ")
                );
                self.rtc.set_issued_ice_servers(&servers);
                vec![]
            }
        };
        self.exec(actions).await;
    }

    /// An error once the relay has been out of reach for `limit` and no
    /// peer is connected: nobody can join us, and waiting longer would only
    /// look like an empty room.
    fn relay_gone(&self, limit: std::time::Duration, url: &str) -> Option<anyhow::Error> {
        let (since, reason) = self.relay_down.as_ref()?;
        if since.elapsed() < limit || self.machine.connected_peers() > 0 {
            return None;
        }
        Some(anyhow::anyhow!(
            "cannot reach the relay at {url} for {:.0} s ({reason}): is `p2p signal` running there? \
             (--connection-timeout sets how long to keep trying)",
            limit.as_secs_f64()
        ))
    }

    /// Timeouts, pings, recordings; a capture failure ends the sender.
    async fn tick(&mut self) -> anyhow::Result<()> {
        let actions = self.machine.tick(Instant::now());
        self.exec(actions).await;
        self.watch_addresses().await;
        if let Some(r) = &mut self.recordings {
            r.tick(&self.peers);
        }
        if let Some(c) = &self.capture {
            if let Some(e) = c.poll_error() {
                anyhow::bail!("capture failed: {e}");
            }
        }
        if self.status.last.elapsed() >= STATUS_EVERY {
            self.refresh_status();
        }
        Ok(())
    }

    /// When this host's addresses changed, the relay connection is made
    /// again if it left from one that is gone, and where any is gone every
    /// peer connection restarts ICE.
    async fn watch_addresses(&mut self) {
        let now = Instant::now();
        if !self.addresses.due(now) {
            return;
        }
        let Some(change) = self.addresses.observe(now, rtc::local_addresses()) else {
            return;
        };
        let list = |a: &[std::net::IpAddr]| {
            a.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (change.gone.is_empty(), change.added.is_empty()) {
            (false, false) => tracing::info!(
                "this host's address changed: {} gone, {} new",
                list(&change.gone),
                list(&change.added)
            ),
            (false, true) => {
                tracing::info!("this host's address {} is gone", list(&change.gone))
            }
            _ => tracing::debug!("this host has a new address: {}", list(&change.added)),
        }
        self.signaling.addresses_changed(change.now).await;
        if !change.gone.is_empty() {
            let actions = self.machine.network_changed(now);
            self.exec(actions).await;
        }
    }

    /// Leaves the room: disposes every peer, tells the others, closes
    /// signaling after what was queued went out.
    async fn stop(&mut self) {
        self.reporter.leaving();
        let actions = self.machine.stop();
        self.exec(actions).await;
        self.signaling.close().await;
        // The driver sends queued frames before closing; give it a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
