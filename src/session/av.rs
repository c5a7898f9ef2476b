//! Media in sessions: joins the capture pipeline to the peer connections on
//! the sender, and remote tracks to recorders on the receiver. Speaks to
//! GStreamer only through [`crate::media`] and to webrtc-rs only through
//! [`super::rtc`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinSet;

use super::keyframes::KeyframeRequests;
use super::latency::Latency;
use super::report::Reporter;
use super::rtc::{short, OnKeyframe, PeerHandle, RemoteTrack, Rtc, TrackWriter};
use crate::media::capture::{Capture, CaptureConfig};
use crate::media::record::{is_stdout, RecordConfig, Recorder, TrackInput};
use crate::media::MediaKind;

/// How long a receiver waits for all of a sender's tracks before it starts
/// recording the ones it has.
const TRACK_WAIT: Duration = Duration::from_secs(3);

/// How long the recording of a sender whose connection was lost (not one
/// that left) stays open for it to come back on a new connection: then
/// it goes on in the same file, the time away a gap in it. A sender that
/// lost its path comes back within seconds of its connection being given
/// up (a new invoke, a new offer).
const COME_BACK_WAIT: Duration = Duration::from_secs(20);

/// The tasks writing each track's packets to the peer connections. They
/// end when the capture does (a file's end), after its last packet.
pub struct MediaEnd(JoinSet<()>);

impl MediaEnd {
    /// Resolves once every track has written its last packet; never while
    /// a live source runs.
    pub async fn ended(&mut self) {
        while self.0.join_next().await.is_some() {}
    }
}

/// Starts capture and encoding, and declares the encoded tracks to `rtc`
/// so that every peer connection carries them. Returns the pipeline, the
/// video track's writer (which knows each receiver's layer) and the end of
/// the media.
pub fn start_sender_media(
    cfg: &CaptureConfig,
    rtc: &mut Rtc,
    stream_id: &str,
) -> anyhow::Result<(Arc<Capture>, Option<TrackWriter>, MediaEnd)> {
    let (capture, outputs) = Capture::start(cfg)?;
    let capture = Arc::new(capture);
    let weak = Arc::downgrade(&capture);
    let on_keyframe: OnKeyframe = Arc::new(move |layer, reason| {
        if let Some(c) = weak.upgrade() {
            if c.request_keyframe(layer, reason) {
                tracing::debug!("key frame requested for layer {layer} ({reason:?})");
            }
        }
    });
    let layers = capture.layers().to_vec();
    let audio_bps = if cfg.audio.is_some() {
        f64::from(cfg.audio_kbps) * 1000.0
    } else {
        0.0
    };
    let tracks: Vec<_> = outputs
        .iter()
        .map(|o| {
            let targets = if o.spec.kind == MediaKind::Video {
                layers.iter().map(|l| f64::from(l.kbps) * 1000.0).collect()
            } else {
                vec![audio_bps]
            };
            (o.spec.clone(), targets)
        })
        .collect();
    let video_bps = layers.first().map_or(0.0, |l| f64::from(l.kbps) * 1000.0);
    let writers = rtc.set_local_tracks(
        &tracks,
        stream_id,
        on_keyframe,
        video_bps + audio_bps,
        audio_bps,
    );
    let mut tasks = JoinSet::new();
    for (mut out, writer) in outputs.into_iter().zip(writers.clone()) {
        tasks.spawn(async move {
            while let Some(packet) = out.packets.recv().await {
                writer
                    .write(&packet.data, packet.captured, packet.layer)
                    .await;
            }
        });
    }
    let kinds: Vec<String> = tracks.iter().map(|(s, _)| s.mime.clone()).collect();
    if layers.len() > 1 {
        let sizes: Vec<String> = layers
            .iter()
            .map(|l| format!("{}x{}@{} {} kbit/s", l.width, l.height, l.fps, l.kbps))
            .collect();
        tracing::info!(
            "sending {} in {} layers ({}), each encoded once for every receiver",
            kinds.join(" + "),
            layers.len(),
            sizes.join(", ")
        );
    } else {
        tracing::info!(
            "sending {} (encoded once for every receiver)",
            kinds.join(" + ")
        );
    }
    if let Some(path) = &cfg.file {
        let length = cfg
            .file_duration
            .map(|d| format!(" ({:.1} s)", d.as_secs_f64()))
            .unwrap_or_default();
        let then = if cfg.looped {
            "and plays it over and over"
        } else {
            "and leaves when it ends"
        };
        tracing::info!(
            "--file {}{length}: starts when the first receiver connects, {then}",
            path.display()
        );
    }
    let video = tracks
        .iter()
        .position(|(s, _)| s.kind == MediaKind::Video)
        .map(|i| writers[i].clone());
    Ok((capture, video, MediaEnd(tasks)))
}

/// Media sections in an SDP offer: the tracks a sender will send.
pub fn media_sections(sdp: &str) -> usize {
    sdp.lines()
        .filter(|l| l.starts_with("m=audio") || l.starts_with("m=video"))
        .count()
}

/// One recording, as the user sees it.
#[derive(Debug, Clone)]
pub struct RecordingStatus {
    pub sender: String,
    pub path: Option<PathBuf>,
    pub seconds: f64,
    /// RTP bytes received.
    pub bytes: u64,
    pub lost: u64,
    /// Capture-to-arrival latency of video frames since the recording
    /// started: (p50, p95) in ms, and how many frames that covers.
    pub latency: Option<(f64, f64)>,
    pub frames: u64,
    /// Video frames received whole (last packet arrived), and the picture
    /// size of the latest key frame (VP8).
    pub video_frames: u64,
    pub size: Option<(u32, u32)>,
}

/// What a video track's pump keeps up to date: frame latencies, and the
/// picture.
struct VideoWatch {
    latency: Arc<Mutex<Latency>>,
    picture: Arc<Mutex<Picture>>,
    /// Told when a key frame arrives.
    requests: Arc<Mutex<KeyframeRequests>>,
}

/// What the video of one recording looks like as it arrives.
#[derive(Debug, Default)]
struct Picture {
    frames: u64,
    size: Option<(u32, u32)>,
}

struct Pending {
    expected: usize,
    tracks: Vec<RemoteTrack>,
    first: Option<Instant>,
}

struct Active {
    recorder: Recorder,
    sender: String,
    started: Instant,
    latency: Arc<Mutex<Latency>>,
    picture: Arc<Mutex<Picture>>,
    /// What each input records: a returning sender's tracks are matched
    /// to them.
    specs: Vec<crate::media::TrackSpec>,
    /// Where the video's key-frame requests go: the connection of the
    /// moment.
    route: Option<Route>,
}

/// The connection and SSRC a recording's key-frame requests go to.
type Route = Arc<Mutex<(PeerHandle, u32)>>;

/// The receiver's recordings, one per sender.
pub struct Recordings {
    cfg: RecordConfig,
    reporter: Reporter,
    pending: HashMap<String, Pending>,
    active: HashMap<String, Active>,
    /// Recordings of senders whose connection was lost, kept open for
    /// [`COME_BACK_WAIT`] from when.
    parked: HashMap<String, (Active, Instant)>,
    /// Every path this session has recorded to: a sender that reconnects
    /// (same id) gets a new file, never overwrites its earlier one.
    used: std::collections::HashSet<PathBuf>,
    finishing: JoinSet<()>,
    /// Whether the user was told that media arrives and nothing keeps it
    /// (no `--record`, no `--display`).
    told_unkept: bool,
    /// Where a recording to stdout (`--record -`) stands.
    stdout: StdoutStream,
}

/// A recording to stdout (`--record -`): it carries one sender, and the
/// run ends with it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum StdoutStream {
    /// Not begun (or not asked for).
    #[default]
    Waiting,
    /// Begun; going on while its sender's recording is active or parked.
    Begun,
    /// Its program stopped reading.
    ReaderLeft,
    /// It could not be written on (the error).
    Failed(String),
}

/// The name of the recorder's stdout sink, which errors name first.
const STDOUT_SINK: &str = "stdout:";

impl Recordings {
    pub fn new(cfg: RecordConfig, reporter: Reporter) -> Self {
        Self {
            cfg,
            reporter,
            pending: HashMap::new(),
            active: HashMap::new(),
            parked: HashMap::new(),
            used: Default::default(),
            finishing: JoinSet::new(),
            told_unkept: false,
            stdout: StdoutStream::Waiting,
        }
    }

    /// Whether a recording to stdout has ended (its sender left for good,
    /// its reader left, or it failed), and if it failed, why.
    pub fn stdout_ended(&self) -> Option<Result<(), String>> {
        let recording = |a: &Active| a.recorder.path.as_deref().is_some_and(is_stdout);
        match &self.stdout {
            StdoutStream::Waiting => None,
            StdoutStream::Begun => {
                let going = self.active.values().any(recording)
                    || self.parked.values().any(|(a, _)| recording(a));
                (!going).then_some(Ok(()))
            }
            StdoutStream::ReaderLeft => Some(Ok(())),
            StdoutStream::Failed(e) => Some(Err(e.clone())),
        }
    }

    pub fn enabled(&self) -> bool {
        self.cfg.path.is_some() || self.cfg.display
    }

    /// A sender offered `sections` media tracks.
    pub fn expect(&mut self, peer: &str, sections: usize) {
        if sections == 0 || !self.enabled() {
            return;
        }
        self.pending.insert(
            peer.to_owned(),
            Pending {
                expected: sections,
                tracks: Vec::new(),
                first: None,
            },
        );
    }

    /// A track of `peer` started; the recording begins once all are there.
    pub fn track(&mut self, peer: &str, track: RemoteTrack, handle: Option<&PeerHandle>) {
        self.reporter.track(
            peer,
            &track.spec.kind.to_string(),
            &track.spec.encoding_name(),
        );
        if !self.enabled() && !self.told_unkept {
            self.told_unkept = true;
            tracing::info!(
                "sender {} sends {} ({}): not kept; give --record FILE or --display to keep it",
                short(peer),
                track.spec.kind,
                track.spec.encoding_name()
            );
        }
        let Some(p) = self.pending.get_mut(peer) else {
            return;
        };
        p.first.get_or_insert_with(Instant::now);
        p.tracks.push(track);
        if p.tracks.len() >= p.expected {
            self.start(peer, handle);
        }
    }

    /// Starts recordings whose missing tracks did not come in time.
    pub fn tick(&mut self, peers: &HashMap<String, PeerHandle>) {
        let late: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.first.is_some_and(|t| t.elapsed() >= TRACK_WAIT))
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            tracing::warn!(
                "sender {}: not every announced track arrived; recording what did",
                short(&id)
            );
            self.start(&id, peers.get(&id));
        }
        let failed: Vec<(String, String)> = self
            .active
            .iter()
            .filter_map(|(id, a)| a.recorder.poll_error().map(|e| (id.clone(), e)))
            .collect();
        for (id, error) in failed {
            let a = self.active.remove(&id);
            let to_stdout = a.is_some_and(|a| a.recorder.path.as_deref().is_some_and(is_stdout));
            if to_stdout && error.starts_with(STDOUT_SINK) {
                // The program reading the stream went away (`| head -c`,
                // a player closed): the end of the run, as for data.
                tracing::info!("stdout closed ({error}): the recording's reader left");
                self.stdout = StdoutStream::ReaderLeft;
            } else if to_stdout {
                tracing::error!("sender {}: recording to stdout failed: {error}", short(&id));
                self.stdout = StdoutStream::Failed(error);
            } else {
                tracing::error!("sender {}: recording failed: {error}", short(&id));
            }
        }
        let gone: Vec<String> = self
            .parked
            .iter()
            .filter(|(_, (_, at))| at.elapsed() >= COME_BACK_WAIT)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some((a, _)) = self.parked.remove(&id) {
                self.finishing.spawn(finish(a));
            }
        }
    }

    /// Where `peer`'s recording goes. The user named the first one; any
    /// other name carries the sender's id, which a remote peer chose: it
    /// goes in only as [`file_id`] makes it, and never over a file that is
    /// already there.
    fn path_for(&mut self, peer: &str) -> Option<PathBuf> {
        let base = self.cfg.path.as_ref()?;
        if is_stdout(base) {
            // stdout holds one stream: the first sender's.
            let first = self.used.insert(base.clone());
            if first {
                self.stdout = StdoutStream::Begun;
            }
            return first.then(|| base.clone());
        }
        let text = base.to_string_lossy();
        let id = file_id(peer);
        let (first, named_by_peer) = if text.contains("{id}") {
            (PathBuf::from(text.replace("{id}", &id)), true)
        } else if self.used.is_empty() {
            (base.clone(), false)
        } else {
            (with_suffix(base, short(&id)), true)
        };
        let mut path = first.clone();
        for n in 2.. {
            let taken = self.used.contains(&path)
                || (named_by_peer && std::fs::symlink_metadata(&path).is_ok());
            if !taken {
                break;
            }
            path = with_suffix(&first, &n.to_string());
        }
        self.used.insert(path.clone());
        Some(path)
    }

    fn start(&mut self, peer: &str, handle: Option<&PeerHandle>) {
        let Some(p) = self.pending.remove(peer) else {
            return;
        };
        let p = match self.parked.remove(peer) {
            Some((active, since)) => match self.resume(peer, active, since, p, handle) {
                Ok(()) => return,
                Err(p) => p,
            },
            None => p,
        };
        let path = self.path_for(peer);
        if path.is_none() && !self.cfg.display {
            // Only `--record -` gets here: stdout already carries another
            // sender's recording.
            tracing::warn!(
                "sender {} is not recorded: --record - writes one sender to stdout, and it carries another's; record to a file (--record 'out-{{id}}.webm') to keep every sender",
                short(peer)
            );
            return;
        }
        let cfg = RecordConfig {
            path: path.clone(),
            display: self.cfg.display,
            round_trip: self.reporter.round_trip(peer).unwrap_or_default(),
        };
        tracing::debug!(
            peer = %short(peer),
            "jitter buffers wait {} ms for a packet (round trip {} ms)",
            cfg.jitter_latency().as_millis(),
            cfg.round_trip.as_millis()
        );
        let specs: Vec<_> = p.tracks.iter().map(|t| t.spec.clone()).collect();
        let (mut recorder, inputs) = match Recorder::start(&cfg, &specs) {
            Ok(r) => r,
            Err(e) => {
                // The session goes on (data, other senders); only this
                // recording is lost, and the user is told why.
                match &path {
                    Some(p) => tracing::error!(
                        "sender {}: cannot record to {}: {e}",
                        short(peer),
                        p.display()
                    ),
                    None => tracing::error!("sender {}: cannot play: {e}", short(peer)),
                }
                return;
            }
        };
        if let Some(path) = &path {
            let names: Vec<String> = specs.iter().map(|s| s.encoding_name()).collect();
            tracing::info!(
                "recording sender {} ({}) to {}",
                short(peer),
                names.join(" + "),
                path.display()
            );
        }
        let latency = Arc::new(Mutex::new(Latency::default()));
        let picture = Arc::new(Mutex::new(Picture::default()));
        let mut route = None;
        for (track, input) in p.tracks.into_iter().zip(inputs) {
            let video = input.kind == MediaKind::Video;
            let requests = Arc::new(Mutex::new(KeyframeRequests::new(cfg.jitter_latency())));
            if video {
                if let Some(h) = handle {
                    let to: Route = Arc::new(Mutex::new((h.clone(), track.ssrc())));
                    spawn_keyframe_requests(
                        to.clone(),
                        (recorder.keyframe_seen(), recorder.take_keyframe_requests()),
                        requests.clone(),
                        (self.reporter.clone(), peer.to_owned()),
                    );
                    route = Some(to);
                }
            }
            let watch = video.then(|| VideoWatch {
                latency: latency.clone(),
                picture: picture.clone(),
                requests,
            });
            tokio::spawn(pump(track, input, watch));
        }
        self.active.insert(
            peer.to_owned(),
            Active {
                recorder,
                sender: peer.to_owned(),
                started: Instant::now(),
                latency,
                picture,
                specs,
                route,
            },
        );
    }

    /// `peer` came back on a new connection with tracks `p`: its recording
    /// goes on, if they are what it recorded (else `p` is handed back and
    /// the old recording finalised).
    fn resume(
        &mut self,
        peer: &str,
        active: Active,
        since: Instant,
        p: Pending,
        handle: Option<&PeerHandle>,
    ) -> Result<(), Pending> {
        let same = |a: &crate::media::TrackSpec, b: &crate::media::TrackSpec| {
            a.kind == b.kind && a.encoding_name() == b.encoding_name()
        };
        let inputs = active.recorder.inputs();
        let mut pairs = Vec::new();
        for track in &p.tracks {
            match active
                .specs
                .iter()
                .position(|s| same(s, &track.spec))
                .filter(|i| !pairs.iter().any(|(_, j)| j == i))
            {
                Some(i) => pairs.push((track.ssrc(), i)),
                None => break,
            }
        }
        if pairs.len() != p.tracks.len() || pairs.len() != active.specs.len() {
            tracing::info!(
                "sender {} is back with other tracks: a new recording",
                short(peer)
            );
            self.finishing.spawn(finish(active));
            return Err(p);
        }
        if let Some(path) = &active.recorder.path {
            tracing::info!(
                "sender {} is back after {:.1} s: recording goes on in {}",
                short(peer),
                since.elapsed().as_secs_f64(),
                path.display()
            );
        }
        let jitter = self.cfg.jitter_latency();
        for (track, (ssrc, i)) in p.tracks.into_iter().zip(pairs) {
            let input = inputs[i].clone();
            input.join_new_stream();
            let video = input.kind == MediaKind::Video;
            let requests = Arc::new(Mutex::new(KeyframeRequests::new(jitter)));
            if let (true, Some(route), Some(h)) = (video, &active.route, handle) {
                *route.lock().unwrap_or_else(|e| e.into_inner()) = (h.clone(), ssrc);
                // The new stream starts with a key frame only if asked.
                h.request_keyframe(ssrc);
            }
            let watch = video.then(|| VideoWatch {
                latency: active.latency.clone(),
                picture: active.picture.clone(),
                requests,
            });
            tokio::spawn(pump(track, input, watch));
        }
        self.active.insert(peer.to_owned(), active);
        Ok(())
    }

    /// The sender left (`lost`: its connection was given up) or was
    /// closed: finalise its file in the background; after a loss, only
    /// once it has had [`COME_BACK_WAIT`] to come back.
    pub fn close(&mut self, peer: &str, lost: bool) {
        self.pending.remove(peer);
        if let Some(a) = self.active.remove(peer) {
            if lost {
                if let Some(path) = &a.recorder.path {
                    tracing::info!(
                        "sender {}: its connection was lost; {} stays open {} s for it to come back",
                        short(peer),
                        path.display(),
                        COME_BACK_WAIT.as_secs()
                    );
                }
                self.parked.insert(peer.to_owned(), (a, Instant::now()));
            } else {
                self.finishing.spawn(finish(a));
            }
        }
    }

    /// Finalises every recording and waits for all of them.
    pub async fn finish_all(&mut self) {
        let ids: Vec<String> = self.active.keys().cloned().collect();
        for id in ids {
            self.close(&id, false);
        }
        for (_, (a, _)) in self.parked.drain() {
            self.finishing.spawn(finish(a));
        }
        while self.finishing.join_next().await.is_some() {}
    }

    /// Where each recording stands, for the status line and stats events.
    pub fn summary(&self) -> Vec<RecordingStatus> {
        let mut out: Vec<RecordingStatus> = self
            .active
            .values()
            .map(|a| {
                let latency = a.latency.lock().unwrap_or_else(|e| e.into_inner());
                let picture = a.picture.lock().unwrap_or_else(|e| e.into_inner());
                RecordingStatus {
                    sender: a.sender.clone(),
                    path: a.recorder.path.clone(),
                    seconds: a.started.elapsed().as_secs_f64(),
                    bytes: a
                        .recorder
                        .stats
                        .bytes
                        .load(std::sync::atomic::Ordering::Relaxed),
                    lost: a.recorder.packets_lost(),
                    latency: latency.percentile(50.0).zip(latency.percentile(95.0)),
                    frames: latency.frames(),
                    video_frames: picture.frames,
                    size: picture.size,
                }
            })
            .collect();
        out.sort_by(|a, b| a.sender.cmp(&b.sender));
        out
    }
}

async fn finish(a: Active) {
    let path = a.recorder.path.clone();
    let secs = a.started.elapsed().as_secs_f64();
    let started = a.recorder.started();
    let media = a.recorder.media_duration().as_secs_f64();
    let bytes = a
        .recorder
        .stats
        .bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    match a.recorder.finish().await {
        Ok(()) if !started => {
            // Ended before the first key frame: the file holds no picture
            // and no sound, only headers no player opens. Say so and leave
            // nothing behind.
            if path.as_deref().is_some_and(is_stdout) {
                tracing::warn!(
                    "nothing recorded from sender {}: no key frame arrived in the {:.1} s it was recorded",
                    short(&a.sender),
                    secs
                );
            } else if let Some(path) = path {
                let _ = std::fs::remove_file(&path);
                tracing::warn!(
                    "nothing saved from sender {}: no key frame arrived in the {:.1} s it was recorded ({} not kept)",
                    short(&a.sender),
                    secs,
                    path.display()
                );
            }
        }
        Ok(()) => {
            if path.as_deref().is_some_and(is_stdout) {
                tracing::info!(
                    "sender {}'s recording on stdout ended ({:.1} s, {:.1} MB received)",
                    short(&a.sender),
                    media,
                    bytes as f64 / 1e6
                );
            } else if let Some(path) = path {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                tracing::info!(
                    "saved {} ({:.1} s, {:.1} MB) from sender {}",
                    path.display(),
                    media,
                    size as f64 / 1e6,
                    short(&a.sender)
                );
            }
        }
        Err(e) => tracing::error!("sender {}: {e}", short(&a.sender)),
    }
}

/// A sender id as it may appear in a file name. Ids are chosen by the
/// remote peer, so only what a UUID or a hex id is made of (ASCII letters,
/// digits, `-`, `_`; at most 64 of them, not starting with `-`) goes in as
/// it is; any other id becomes a hash of itself. No id can name a
/// directory, climb out of one (`..`) or start an option.
fn file_id(id: &str) -> std::borrow::Cow<'_, str> {
    let plain = (1..=64).contains(&id.len())
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        return id.into();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("id-{hex}").into()
}

/// `out.webm` → `out-1a2b3c4d.webm`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{suffix}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{suffix}"),
    };
    path.with_file_name(name)
}

/// Feeds a track into its recorder; for video, times each frame from
/// capture to the arrival of its last packet, counts frames, reads the
/// picture size from key frames and tells the key-frame requests when one
/// arrives.
async fn pump(track: RemoteTrack, input: TrackInput, video: Option<VideoWatch>) {
    let payload = super::simulcast::Payload::from_mime(&track.spec.mime);
    while let Some(packet) = track.read().await {
        if let Some(v) = &video {
            if let (Some(at), true) = (packet.captured, packet.marker) {
                let d = SystemTime::now().duration_since(at).unwrap_or_default();
                v.latency.lock().unwrap_or_else(|e| e.into_inner()).add(d);
            }
            let keyframe = super::simulcast::rtp_payload(&packet.rtp)
                .is_some_and(|p| payload.starts_keyframe(p));
            if keyframe {
                v.requests
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .arrived(Instant::now());
            }
            let size = keyframe
                .then(|| super::simulcast::vp8_keyframe_size(&packet.rtp))
                .flatten();
            if packet.marker || size.is_some() {
                let mut p = v.picture.lock().unwrap_or_else(|e| e.into_inner());
                p.frames += u64::from(packet.marker);
                if size.is_some() {
                    p.size = size;
                }
            }
        }
        input.push(packet.rtp);
    }
}

/// webrtc-rs receivers do not ask for key frames by themselves: ask when
/// the track starts and until one has been recorded; afterwards, whenever
/// the recorder lost a frame that retransmission did not recover. Each
/// time only if `requests` finds no key frame on its way.
fn spawn_keyframe_requests(
    route: Route,
    (mut seen, lost): (
        tokio::sync::watch::Receiver<bool>,
        Option<tokio::sync::mpsc::Receiver<()>>,
    ),
    requests: Arc<Mutex<KeyframeRequests>>,
    (reporter, peer): (Reporter, String),
) {
    // Whether it asked. A connection that is gone is not asked; the
    // recording may go on with the sender's next one (the route).
    let ask = move |requests: &Mutex<KeyframeRequests>| -> Option<bool> {
        let mut r = requests.lock().unwrap_or_else(|e| e.into_inner());
        if !r.ask(Instant::now()) {
            return Some(false);
        }
        let (handle, ssrc) = route.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some(handle.request_keyframe(ssrc))
    };
    tokio::spawn(async move {
        while !*seen.borrow() {
            ask(&requests)?;
            let next = requests.lock().unwrap_or_else(|e| e.into_inner()).next();
            let until = tokio::time::Instant::from_std(next.unwrap_or_else(Instant::now));
            if let Ok(Err(_)) = tokio::time::timeout_at(until, seen.changed()).await {
                return None; // the recording is gone
            }
        }
        reporter.keyframe(&peer);
        let mut lost = lost?;
        // Ends when the recording is finalised (the channel closes) or the
        // peer is gone.
        while lost.recv().await.is_some() {
            if ask(&requests)? {
                tracing::debug!(peer = %short(&peer), "video frame lost; asked for a key frame");
            }
        }
        Some(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_senders_get_their_own_files() {
        let reporter = || Reporter::new("sender", crate::cli::EventFormat::Human, None).unwrap();
        let mut r = Recordings::new(
            RecordConfig {
                path: Some(PathBuf::from("/tmp/out.webm")),
                display: false,
                round_trip: Duration::ZERO,
            },
            reporter(),
        );
        assert_eq!(
            r.path_for("aaaaaaaa-1111"),
            Some(PathBuf::from("/tmp/out.webm"))
        );
        assert_eq!(
            r.path_for("bbbbbbbb-2222"),
            Some(PathBuf::from("/tmp/out-bbbbbbbb.webm"))
        );
        let mut r = Recordings::new(
            RecordConfig {
                path: Some(PathBuf::from("rec-{id}.mkv")),
                display: false,
                round_trip: Duration::ZERO,
            },
            reporter(),
        );
        assert_eq!(r.path_for("x1"), Some(PathBuf::from("rec-x1.mkv")));
        assert_eq!(r.path_for("x2"), Some(PathBuf::from("rec-x2.mkv")));
    }

    #[test]
    fn a_sender_that_reconnects_gets_a_new_file_each_time() {
        let reporter = Reporter::new("sender", crate::cli::EventFormat::Human, None).unwrap();
        let cfg = |p: &str| RecordConfig {
            path: Some(PathBuf::from(p)),
            display: false,
            round_trip: Duration::ZERO,
        };
        let mut r = Recordings::new(cfg("out.webm"), reporter.clone());
        let paths: Vec<_> = (0..3)
            .map(|_| r.path_for("aaaaaaaa-1111").unwrap())
            .collect();
        assert_eq!(
            paths,
            ["out.webm", "out-aaaaaaaa.webm", "out-aaaaaaaa-2.webm"].map(PathBuf::from)
        );
        let mut r = Recordings::new(cfg("rec-{id}.mkv"), reporter);
        let paths: Vec<_> = (0..2).map(|_| r.path_for("x1").unwrap()).collect();
        assert_eq!(paths, ["rec-x1.mkv", "rec-x1-2.mkv"].map(PathBuf::from));
    }

    #[test]
    fn an_id_never_leaves_the_directory_the_user_named() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new("sender", crate::cli::EventFormat::Human, None).unwrap();
        let template = dir.path().join("rec").join("{id}.webm");
        let mut r = Recordings::new(
            RecordConfig {
                path: Some(template.clone()),
                display: false,
                round_trip: Duration::ZERO,
            },
            reporter.clone(),
        );
        let hostile = [
            "../../../victim-home/important",
            "..",
            ".",
            "/etc/passwd",
            "a/b",
            "a\\b",
            "-rf",
            "",
            "x\0y",
            "\u{202e}gpj.exe",
            &"a".repeat(65),
        ];
        let mut seen = std::collections::HashSet::new();
        for id in hostile {
            let path = r.path_for(id).unwrap();
            assert_eq!(path.parent(), template.parent(), "{id:?} → {path:?}");
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with("id-") && name.ends_with(".webm"), "{name}");
            assert!(seen.insert(path));
        }
        // UUIDs and hex ids, which p2p and the seed library use, stay readable.
        let uuid = "3f0c1d2e-aaaa-4bbb-8ccc-0123456789ab";
        assert_eq!(
            r.path_for(uuid),
            Some(dir.path().join("rec").join(format!("{uuid}.webm")))
        );
        // The suffix for a second sender without {id} is made the same way.
        let mut r = Recordings::new(
            RecordConfig {
                path: Some(dir.path().join("out.webm")),
                display: false,
                round_trip: Duration::ZERO,
            },
            reporter,
        );
        r.path_for("first");
        let second = r.path_for("../../x").unwrap();
        assert_eq!(second.parent(), Some(dir.path()));
    }

    #[test]
    fn a_name_made_from_an_id_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new("sender", crate::cli::EventFormat::Human, None).unwrap();
        std::fs::write(dir.path().join("cafe.webm"), b"yesterday").unwrap();
        let mut r = Recordings::new(
            RecordConfig {
                path: Some(dir.path().join("{id}.webm")),
                display: false,
                round_trip: Duration::ZERO,
            },
            reporter,
        );
        assert_eq!(r.path_for("cafe"), Some(dir.path().join("cafe-2.webm")));
    }

    #[test]
    fn counts_media_sections() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        assert_eq!(media_sections(sdp), 2);
        assert_eq!(media_sections("v=0\r\nm=application 9 x\r\n"), 0);
    }
}
