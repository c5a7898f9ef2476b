//! Sender and Receiver sessions: the run loops that feed the state machines
//! ([`machine`]) and carry out their actions on signaling and on peer
//! connections ([`rtc`], the only place webrtc-rs is used).

pub mod av;
pub mod fanout;
mod latency;
pub mod machine;
pub mod report;
pub mod rtc;
pub mod settings;
pub mod simulcast;
pub mod stdio;

use std::collections::{HashMap, VecDeque};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::media::capture::Capture;
use crate::media::record::RecordConfig;
use crate::signaling::{self, SignalEvent, Signaling};
use machine::{Action, PeerEvent};
use report::Reporter;
use rtc::{short, Channel, Payload, PeerHandle, Rtc, RtcEvent};
use settings::{ReceiveConfig, SendConfig};

/// How often timeouts and pings are checked. Both are counted in seconds;
/// a tenth of one is precise enough and costs nothing.
const TICK: Duration = Duration::from_millis(100);

/// Events queued from peer connections to the run loop: candidates and state
/// changes for many peers at once.
const RTC_EVENTS: usize = 1024;

/// Messages from data channels waiting to be written to stdout. Small, so a
/// stdout that does not keep up holds back the channels (and the senders).
const OUTPUT_QUEUE: usize = 64;

/// How long a receiver waits for a leaving sender's last data before it
/// closes the connection.
const LAST_DATA_WAIT: Duration = Duration::from_secs(10);

/// How long a sender that is done waits for its receivers to close first
/// (see `Runner::leave`): a receiver waits up to `LAST_DATA_WAIT` for its
/// reader before it closes.
const LINGER: Duration = Duration::from_secs(8);

/// Which machine a run loop drives.
enum Machine {
    Sender(machine::Sender),
    Receiver(machine::Receiver),
}

impl Machine {
    fn signal(&mut self, now: Instant, data: &Value) -> Vec<Action> {
        match self {
            Self::Sender(m) => m.handle_signal(now, data),
            Self::Receiver(m) => m.handle_signal(now, data),
        }
    }

    fn peer(&mut self, now: Instant, id: &str, ev: PeerEvent) -> Vec<Action> {
        match self {
            Self::Sender(m) => m.handle_peer(id, ev),
            Self::Receiver(m) => m.handle_peer(now, id, ev),
        }
    }

    fn tick(&mut self, now: Instant) -> Vec<Action> {
        match self {
            Self::Sender(m) => m.tick(now),
            Self::Receiver(m) => m.tick(now),
        }
    }

    fn reconnected(&mut self) -> Vec<Action> {
        match self {
            Self::Sender(m) => m.reconnected(),
            Self::Receiver(m) => m.reconnected(),
        }
    }

    fn stop(&mut self) -> Vec<Action> {
        match self {
            Self::Sender(m) => m.stop(),
            Self::Receiver(m) => m.stop(),
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
    ever_connected: bool,
    /// Sender: the capture pipeline, asked for key frames as peers join.
    capture: Option<Arc<Capture>>,
    /// Sender: the video track's writer (each receiver's estimate and layer).
    video: Option<rtc::TrackWriter>,
    /// Sender: what audio takes from every path, bit/s.
    audio_bps: f64,
    /// Receiver: recordings per sender.
    recordings: Option<av::Recordings>,
    status: Status,
}

/// What the user sees while the session runs: status lines on a terminal,
/// `stats` events for scripts; refreshed every [`STATUS_EVERY`].
struct Status {
    show: bool,
    room: String,
    lines: HashMap<String, crate::progress::StatusLine>,
    last: Instant,
    /// Byte counters at the last refresh, by key.
    before: HashMap<String, u64>,
    /// Data bytes sent or received over channels.
    data_bytes: Arc<AtomicU64>,
}

const STATUS_EVERY: Duration = Duration::from_secs(1);

impl Status {
    fn new(show: bool, room: &str) -> Self {
        Self {
            show,
            room: room.to_owned(),
            lines: HashMap::new(),
            last: Instant::now(),
            before: HashMap::new(),
            data_bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bits per second for byte counter `key` since the last refresh.
    fn rate(&mut self, key: &str, bytes: u64, secs: f64) -> f64 {
        self.per_second(key, bytes, secs) * 8.0
    }

    /// Counter `key`'s increase per second since the last refresh.
    fn per_second(&mut self, key: &str, count: u64, secs: f64) -> f64 {
        let prev = self.before.insert(key.to_owned(), count).unwrap_or(count);
        count.saturating_sub(prev) as f64 / secs.max(0.001)
    }

    fn line(&mut self, key: &str, msg: String) {
        if !self.show {
            return;
        }
        self.lines.entry(key.to_owned()).or_default().set(msg);
    }

    /// Drops the lines of keys not in `keep`.
    fn retain(&mut self, keep: &[String]) {
        self.lines.retain(|k, _| keep.contains(k));
    }
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
            ever_connected: false,
            capture: None,
            video: None,
            audio_bps: 0.0,
            recordings: None,
            status: Status::new(false, ""),
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
                Action::AddCandidate { peer, candidate } => {
                    if let Some(h) = self.peers.get(&peer) {
                        h.add_candidate(candidate).await;
                    }
                }
                Action::ClosePeer { peer } => self.close_peer(&peer).await,
                Action::Event(ev) => {
                    if matches!(ev, machine::Event::Connect { .. }) {
                        self.ever_connected = true;
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

    async fn close_peer(&mut self, peer: &str) {
        if let Some(r) = &mut self.recordings {
            r.close(peer);
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
        match self.readers.remove(peer) {
            // Receiver: let the reader take what the sender sent before it
            // left (its channel ends after the last message), then close.
            Some(reader) => {
                reader.leaving.cancel();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(LAST_DATA_WAIT, reader.task).await;
                    if let Some(ch) = channel {
                        ch.close().await;
                    }
                    if let Some(h) = handle {
                        h.close().await;
                    }
                });
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
                self.channels.insert(peer.clone(), ch.clone());
                if let Some(f) = &self.fanout {
                    let _ = f.send(fanout::Ctl::Open(ch)).await;
                } else if let Some(out) = &self.output {
                    let out = out.clone();
                    let counter = self.status.data_bytes.clone();
                    let leaving = tokio_util::sync::CancellationToken::new();
                    let task = tokio::spawn(read_channel(ch, out, counter, leaving.clone()));
                    self.readers.insert(peer, Reader { task, leaving });
                }
            }
        }
    }

    async fn on_signal(&mut self, ev: SignalEvent) {
        let actions = match ev {
            SignalEvent::Message { data, .. } => self.machine.signal(Instant::now(), &data),
            SignalEvent::Connected { reconnect: true } => self.machine.reconnected(),
            SignalEvent::Connected { reconnect: false } => vec![],
            SignalEvent::Disconnected { .. } | SignalEvent::RelayError(_) => vec![],
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

    /// Timeouts, pings, recordings; a capture failure ends the sender.
    async fn tick(&mut self) -> anyhow::Result<()> {
        let actions = self.machine.tick(Instant::now());
        self.exec(actions).await;
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

    /// Sender: the layers being sent, and each receiver's estimate, loss
    /// and layer, as `stats` fields; one status line per receiver. The
    /// worst loss a receiver reports sets the audio's FEC.
    fn receiver_media(&mut self) -> (Value, Value) {
        let (Some(video), Some(capture)) = (&self.video, &self.capture) else {
            return (Value::Null, Value::Null);
        };
        let rates = video.layer_rates();
        let layers = capture.layers();
        let layer_json: Vec<Value> = layers
            .iter()
            .zip(&rates)
            .map(|(l, r)| {
                serde_json::json!({
                    "width": l.width, "height": l.height, "fps": l.fps,
                    "target_bitrate": l.kbps * 1000, "bitrate": r.round(),
                })
            })
            .collect();
        let mut keys = vec!["sender".to_owned()];
        let mut worst = 0.0f64;
        let mut peers = Vec::new();
        for p in video.peers() {
            worst = worst.max(p.loss);
            let size = p
                .layer
                .and_then(|k| layers.get(k))
                .map(|l| format!("{}×{}", l.width, l.height));
            let estimate = p
                .estimate
                .map_or_else(|| "no estimate".to_owned(), crate::progress::bitrate);
            self.status.line(
                &p.peer,
                format!(
                    "  receiver {} · {} · path {estimate} · loss {:.0} %",
                    short(&p.peer),
                    size.as_deref().unwrap_or("waiting for a key frame"),
                    p.loss * 100.0
                ),
            );
            keys.push(p.peer.clone());
            peers.push(serde_json::json!({
                "id": p.peer,
                "estimate": p.estimate.map(f64::round),
                "loss": (p.loss * 1000.0).round() / 1000.0,
                "layer": p.layer,
                "width": p.layer.and_then(|k| layers.get(k)).map(|l| l.width),
                "height": p.layer.and_then(|k| layers.get(k)).map(|l| l.height),
            }));
        }
        self.status.retain(&keys);
        capture.set_audio_loss((worst * 100.0).round() as u32);
        if layers.len() > 1 {
            let estimates: Vec<f64> = video.peers().iter().filter_map(|p| p.estimate).collect();
            let kbps = |l: &crate::media::capture::Layer| f64::from(l.kbps) * 1000.0;
            let top = simulcast::top_target(
                &estimates,
                self.audio_bps,
                kbps(&layers[0]),
                2.0 * kbps(&layers[1]),
            );
            capture.set_layer_bitrate(0, (top / 1000.0) as u32);
            video.set_target(0, top);
        }
        (Value::Array(layer_json), Value::Array(peers))
    }

    fn refresh_status(&mut self) {
        let secs = self.status.last.elapsed().as_secs_f64();
        self.status.last = Instant::now();
        let data = self.status.data_bytes.load(Ordering::Relaxed);
        let data_rate = self.status.rate("data", data, secs);
        let (layers, peers) = self.receiver_media();
        match &self.machine {
            Machine::Sender(m) => {
                let (media, dropped, keyframes) = self.capture.as_ref().map_or((0, 0, 0), |c| {
                    (
                        c.stats.bytes.load(Ordering::Relaxed),
                        c.stats.dropped.load(Ordering::Relaxed),
                        c.stats.keyframes_requested.load(Ordering::Relaxed),
                    )
                });
                let media_rate = self.status.rate("media", media, secs);
                let receivers = m.peer_count() - m.connecting();
                let mut msg = format!(
                    "room {} · {receivers} receiver{}",
                    self.status.room,
                    if receivers == 1 { "" } else { "s" }
                );
                if self.capture.is_some() {
                    msg.push_str(&format!(
                        " · media ↑ {}",
                        crate::progress::bitrate(media_rate)
                    ));
                }
                if self.fanout.is_some() {
                    msg.push_str(&format!(
                        " · data {} sent, {}",
                        crate::progress::size(data),
                        crate::progress::bitrate(data_rate)
                    ));
                }
                self.status.line("sender", msg);
                self.reporter.stats(serde_json::json!({
                    "role": "sender",
                    "receivers": receivers,
                    "connecting": m.connecting(),
                    "media_bytes": media,
                    "media_bitrate": media_rate.round(),
                    "media_packets_dropped": dropped,
                    "keyframes": keyframes,
                    "layers": layers,
                    "peers": peers,
                    "data_bytes": data,
                    "data_bitrate": data_rate.round(),
                }));
            }
            Machine::Receiver(m) => {
                let recordings = self
                    .recordings
                    .as_ref()
                    .map(|r| r.summary())
                    .unwrap_or_default();
                let mut keys = vec!["room".to_owned()];
                self.status.line(
                    "room",
                    format!(
                        "room {} · {} sender{} · data {} received",
                        self.status.room,
                        m.connected(),
                        if m.connected() == 1 { "" } else { "s" },
                        crate::progress::size(data)
                    ),
                );
                for r in &recordings {
                    let rate = self.status.rate(&r.sender, r.bytes, secs);
                    let target = r
                        .path
                        .as_ref()
                        .map_or_else(|| "playing".to_owned(), |p| p.display().to_string());
                    let delay = r
                        .latency
                        .map(|(p50, _)| format!(" · latency {p50:.0} ms"))
                        .unwrap_or_default();
                    let fps = self.status.per_second(
                        &format!("{}/frames", r.sender),
                        r.video_frames,
                        secs,
                    );
                    let picture = r
                        .size
                        .map(|(w, h)| format!(" · {w}×{h} {fps:.0} fps"))
                        .unwrap_or_default();
                    self.status.line(
                        &r.sender,
                        format!(
                            "  sender {} → {target} · {:.1} s{picture} · {} · {} · lost {}{delay}",
                            short(&r.sender),
                            r.seconds,
                            crate::progress::size(r.bytes),
                            crate::progress::bitrate(rate),
                            r.lost
                        ),
                    );
                    keys.push(r.sender.clone());
                    self.reporter.stats(serde_json::json!({
                        "role": "receiver",
                        "id": r.sender,
                        "path": r.path,
                        "recorded": (r.seconds * 10.0).round() / 10.0,
                        "bytes": r.bytes,
                        "bitrate": rate.round(),
                        "packets_lost": r.lost,
                        "fps": (fps * 10.0).round() / 10.0,
                        "width": r.size.map(|s| s.0),
                        "height": r.size.map(|s| s.1),
                        "latency_ms": r.latency.map(|(p50, p95)| serde_json::json!({
                            "p50": (p50 * 10.0).round() / 10.0,
                            "p95": (p95 * 10.0).round() / 10.0,
                            "frames": r.frames,
                        })),
                    }));
                }
                self.status.retain(&keys);
                self.reporter.stats(serde_json::json!({
                    "role": "receiver",
                    "senders": m.connected(),
                    "data_bytes": data,
                    "data_bitrate": data_rate.round(),
                }));
            }
        }
    }

    /// A sender done with its input leaves: it tells every receiver first
    /// and gives each up to `limit` to close the connection, which a
    /// receiver does once it has read everything, then closes what is left.
    /// Closing first lost the last lines a receiver still held: webrtc-rs
    /// drops the messages it has read out of SCTP but not yet handed to the
    /// application when the association is aborted (1,000 lines, loopback:
    /// 100–300 lost in about one run in five; through a TURN relay in most).
    async fn leave(&mut self, rtc_rx: &mut mpsc::Receiver<(String, RtcEvent)>, limit: Duration) {
        let (closes, rest): (Vec<Action>, Vec<Action>) = self
            .machine
            .stop()
            .into_iter()
            .partition(|a| matches!(a, Action::ClosePeer { .. }));
        let mut open: std::collections::HashSet<String> = closes
            .iter()
            .filter_map(|a| match a {
                Action::ClosePeer { peer } => Some(peer.clone()),
                _ => None,
            })
            .collect();
        self.exec(rest).await;
        let deadline = tokio::time::Instant::now() + limit;
        while !open.is_empty() {
            match tokio::time::timeout_at(deadline, rtc_rx.recv()).await {
                Ok(Some((peer, RtcEvent::Peer(PeerEvent::Failed(_))))) => {
                    open.remove(&peer);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if !open.is_empty() {
            tracing::debug!("{} receiver(s) did not close within {limit:?}", open.len());
        }
        self.exec(closes).await;
        self.signaling.close().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Leaves the room: disposes every peer, tells the others, closes
    /// signaling after what was queued went out.
    async fn stop(&mut self) {
        let actions = self.machine.stop();
        self.exec(actions).await;
        self.signaling.close().await;
        // The driver sends queued frames before closing; give it a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A receiver's task that moves one sender's messages to stdout.
struct Reader {
    task: JoinHandle<()>,
    /// Cancelled when the sender left: the task then ends once the channel
    /// has been quiet for `QUIET` (see `read_channel`).
    leaving: tokio_util::sync::CancellationToken,
}

/// A leaving sender's channel is read out once nothing came for this long.
/// Long, because what webrtc-rs 0.21 held back while this receiver was
/// behind (it parks the SCTP stream) moves again only at the connection's
/// next timer, the 2 s ICE keep-alive: measured, 200 ms lost the tail of
/// 1,000 lines in 4 runs of 10, 2.5 s in none of 8 (bench/NOTES.md).
const QUIET: Duration = Duration::from_millis(2500);

/// Moves `ch`'s messages to `out` until the channel ends, or, once the
/// sender said it is leaving (`leaving`), until nothing came for `QUIET`.
/// A sender leaves only when everything it sent was acknowledged, so what
/// is still to come is already in this process; the sender keeps the
/// connection open until we close it (`Runner::leave`).
async fn read_channel(
    ch: Channel,
    out: mpsc::Sender<(String, Payload)>,
    counter: Arc<AtomicU64>,
    leaving: tokio_util::sync::CancellationToken,
) {
    let peer = ch.peer().to_owned();
    loop {
        let next = if leaving.is_cancelled() {
            match tokio::time::timeout(QUIET, ch.recv()).await {
                Ok(p) => p,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                p = ch.recv() => p,
                () = leaving.cancelled() => continue,
            }
        };
        let Some(p) = next else { break };
        counter.fetch_add(p.len() as u64, Ordering::Relaxed);
        if out.send((peer.clone(), p)).await.is_err() {
            break;
        }
    }
    tracing::debug!(peer = %short(&peer), "data channel ended");
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn connect_signaling(
    cfg: &settings::PeerConfig,
) -> anyhow::Result<(Signaling, mpsc::Receiver<SignalEvent>)> {
    Ok(signaling::connect(&cfg.signal, cfg.signal_opts.clone()).await?)
}

/// `p2p send`: offers a data channel to every receiver in the room and
/// fans stdin out to them.
pub async fn run_sender(cfg: SendConfig) -> anyhow::Result<ExitCode> {
    let id = new_id();
    let reporter = Reporter::new("receiver", cfg.peer.events, cfg.peer.events_file.as_deref())?;
    let mut rtc = Rtc::new(
        &cfg.peer.ice_servers,
        cfg.peer.signal_opts.ca_file.as_deref(),
        false,
    )?;
    let (capture, video) = match &cfg.media {
        Some(m) => {
            let (capture, video) = av::start_sender_media(m, &mut rtc, &id)?;
            (Some(capture), video)
        }
        None => (None, None),
    };
    let (signaling, mut sig_rx) = connect_signaling(&cfg.peer).await?;
    let (rtc_tx, mut rtc_rx) = mpsc::channel(RTC_EVENTS);
    let (ctl_tx, ctl_rx) = mpsc::channel(RTC_EVENTS);
    let status = Status::new(crate::progress::wanted(cfg.peer.quiet), &cfg.peer.room);
    let data_bytes = status.data_bytes.clone();
    // With media, the session lasts until Ctrl-C; stdin feeds data channels
    // only when they are on.
    let mut fanout = if cfg.data {
        let input = stdio::spawn_reader(tokio::io::stdin(), cfg.peer.binary);
        tokio::spawn(fanout::run(
            fanout::FanoutConfig {
                queue_size: cfg.queue_size,
                to: cfg.to.clone(),
                binary: cfg.peer.binary,
                keep_open: cfg.keep_open || cfg.media.is_some(),
                sent: data_bytes.clone(),
            },
            input,
            ctl_rx,
        ))
    } else {
        drop(ctl_rx);
        tokio::spawn(std::future::pending::<()>())
    };
    let machine = machine::Sender::new(machine::SenderConfig {
        id: id.clone(),
        room: cfg.peer.room.clone(),
        state: cfg.state.clone(),
        data: cfg.data,
        verify: cfg.verify.clone(),
        connection_timeout: cfg.peer.connection_timeout,
    });
    let mut runner = Runner::new(Machine::Sender(machine), signaling, rtc, rtc_tx, &reporter);
    runner.fanout = cfg.data.then_some(ctl_tx);
    runner.capture = capture;
    runner.video = video;
    runner.audio_bps = cfg
        .media
        .as_ref()
        .filter(|m| m.audio.is_some())
        .map_or(0.0, |m| f64::from(m.audio_kbps) * 1000.0);
    runner.status = status;
    reporter.started("sender", &id, &cfg.peer.room);
    let start = match &mut runner.machine {
        Machine::Sender(m) => m.start(),
        Machine::Receiver(_) => unreachable!("built as a sender above"),
    };
    runner.exec(start).await;

    let mut hangup = hangup_signal();
    let mut tick = tokio::time::interval(TICK);
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    let mut left = false;
    loop {
        tokio::select! {
            Some(ev) = sig_rx.recv() => runner.on_signal(ev).await,
            Some((peer, ev)) = rtc_rx.recv() => runner.on_rtc(peer, ev).await,
            _ = tick.tick() => {
                if let Err(e) = runner.tick().await {
                    runner.stop().await;
                    return Err(e);
                }
            }
            _ = &mut fanout => {
                tracing::debug!("everything read from stdin was delivered");
                runner.leave(&mut rtc_rx, LINGER).await;
                left = true;
                break;
            }
            Some(()) = recv_hangup(&mut hangup) => {
                if let Some(path) = &cfg.state_file {
                    match settings::read_state_file(path) {
                        Ok(state) => {
                            tracing::info!("state reloaded from {}: {}", path.display(), serde_json::Value::Object(state.clone()));
                            if let Machine::Sender(m) = &mut runner.machine {
                                let actions = m.sync(state, false);
                                runner.exec(actions).await;
                            }
                        }
                        Err(e) => tracing::warn!("{e:#}; keeping the current state"),
                    }
                } else {
                    tracing::warn!("SIGHUP ignored: no --state-file to reload");
                }
            }
            () = &mut shutdown => break,
        }
    }
    if !left {
        runner.stop().await;
    }
    if let Some(c) = &runner.capture {
        use std::sync::atomic::Ordering::Relaxed;
        tracing::debug!(
            "sent {} RTP packets ({} bytes), {} dropped, {} key frames requested",
            c.stats.packets.load(Relaxed),
            c.stats.bytes.load(Relaxed),
            c.stats.dropped.load(Relaxed),
            c.stats.keyframes_requested.load(Relaxed)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `p2p receive`: answers every sender in the room and writes what arrives
/// to stdout.
pub async fn run_receiver(cfg: ReceiveConfig) -> anyhow::Result<ExitCode> {
    let id = new_id();
    let reporter = Reporter::new("sender", cfg.peer.events, cfg.peer.events_file.as_deref())?;
    let rtc = Rtc::new(
        &cfg.peer.ice_servers,
        cfg.peer.signal_opts.ca_file.as_deref(),
        true,
    )?;
    let (signaling, mut sig_rx) = connect_signaling(&cfg.peer).await?;
    let (rtc_tx, mut rtc_rx) = mpsc::channel(RTC_EVENTS);
    let (out_tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
    let mut writer = tokio::spawn(write_output(out_rx, reporter.clone()));
    let machine = machine::Receiver::new(machine::ReceiverConfig {
        id: id.clone(),
        room: cfg.peer.room.clone(),
        credentials: cfg.credentials.clone(),
        connection_timeout: cfg.peer.connection_timeout,
        ping_interval: cfg.ping_interval,
        ping_attempts: cfg.ping_attempts,
    });
    let mut runner = Runner::new(
        Machine::Receiver(machine),
        signaling,
        rtc,
        rtc_tx,
        &reporter,
    );
    runner.output = Some(out_tx);
    let record = RecordConfig {
        path: cfg.record.clone(),
        display: cfg.display,
    };
    if record.path.is_some() || record.display {
        let record = record.clone();
        tokio::task::spawn_blocking(move || crate::media::record::Recorder::warm_up(&record));
    }
    runner.recordings = Some(av::Recordings::new(record, reporter.clone()));
    runner.status = Status::new(crate::progress::wanted(cfg.peer.quiet), &cfg.peer.room);
    reporter.started("receiver", &id, &cfg.peer.room);
    let start = match &mut runner.machine {
        Machine::Receiver(m) => m.start(Instant::now()),
        Machine::Sender(_) => unreachable!("built as a receiver above"),
    };
    runner.exec(start).await;

    let mut tick = tokio::time::interval(TICK);
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    let mut write_result = None;
    loop {
        tokio::select! {
            Some(ev) = sig_rx.recv() => runner.on_signal(ev).await,
            Some((peer, ev)) = rtc_rx.recv() => runner.on_rtc(peer, ev).await,
            _ = tick.tick() => {
                if let Err(e) = runner.tick().await {
                    runner.stop().await;
                    return Err(e);
                }
            }
            r = &mut writer => {
                // stdout closed (e.g. `| head`): a normal end.
                write_result = Some(r);
                break;
            }
            () = &mut shutdown => break,
        }
        if cfg.once && runner.ever_connected && runner.peers.is_empty() {
            tracing::debug!("every sender has left (--once)");
            break;
        }
    }
    // Let readers finish what their senders sent, then flush stdout.
    let readers: Vec<JoinHandle<()>> = runner
        .readers
        .drain()
        .map(|(_, r)| {
            r.leaving.cancel();
            r.task
        })
        .collect();
    let closing = runner.peers.is_empty();
    if closing {
        for r in readers {
            let _ = tokio::time::timeout(LAST_DATA_WAIT, r).await;
        }
    }
    runner.stop().await;
    if let Some(r) = &mut runner.recordings {
        r.finish_all().await;
    }
    runner.output = None;
    let result = match write_result {
        Some(r) => r,
        None => match tokio::time::timeout(LAST_DATA_WAIT, &mut writer).await {
            Ok(r) => r,
            Err(_) => {
                writer.abort();
                Ok(Ok(()))
            }
        },
    };
    match result.context("stdout writer failed")? {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

async fn write_output(
    mut rx: mpsc::Receiver<(String, Payload)>,
    reporter: Reporter,
) -> std::io::Result<()> {
    stdio::widen_stdout_pipe();
    let mut out = tokio::io::BufWriter::with_capacity(stdio::OUT_BUFFER, tokio::io::stdout());
    while let Some((peer, p)) = rx.recv().await {
        reporter.message(&peer, &p);
        stdio::write_payload(&mut out, &p).await?;
        // Flush when nothing else is waiting: lines appear at once, bulk
        // data still goes out in large writes.
        if rx.is_empty() {
            out.flush().await?;
        }
    }
    out.flush().await
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    None
}

async fn recv_hangup(h: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(s) = h {
        return s.recv().await;
    }
    let _ = h;
    std::future::pending().await
}
