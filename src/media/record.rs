//! Record (and/or play) what one sender sends, without re-encoding: RTP in
//! through appsrcs, depayloaded, muxed into a file that starts at a key
//! frame and is finalised (EOS through the muxer) when the session ends.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::{mpsc, watch};

use super::{chain, make, set, MediaError, MediaKind, TrackSpec};

/// How long the jitter buffer waits for a missing packet (late, reordered
/// or retransmitted) before giving it up, when the picture is shown live
/// (`--display`), beyond the sender's round trip: one resend, with room
/// for queueing. Packets that arrive in order are passed on at once.
const JITTER_LATENCY_MS: u64 = 100;

/// The same wait for a recording only: a file loses nothing by a frame
/// coming half a second late, and a resend asked for behind a full queue
/// comes later than 100 ms. Behind a 1 Mbit/s shaper with a 100 ms queue,
/// a 100 ms wait gave up 24–41 resends a 20 s run, each a lost frame, a
/// key frame asked for and a freeze of up to 1.9 s while it came.
/// Beyond it, [`RECORD_REPAIRS`] round trips.
const RECORD_JITTER_LATENCY_MS: u64 = 500;

/// Round trips a recording's wait adds: a resend lost behind the queue
/// that dropped the original is asked for again after a repair time
/// (round trip and queueing), and comes another round trip later. At a
/// 150 ms round trip behind a full 100 ms queue, a second resend came
/// ~0.7 s after the loss: with 500 ms, the frame was given up, a key
/// frame asked for, and the picture froze for ~1 s.
const RECORD_REPAIRS: u32 = 3;

/// The most a display waits, whatever the round trip: it shows the
/// picture that late.
const DISPLAY_JITTER_MAX: Duration = Duration::from_millis(500);

/// The most a recording waits, whatever the round trip.
const RECORD_JITTER_MAX: Duration = Duration::from_secs(2);

/// Consecutive packets after the first that let the jitter buffer start at
/// once. Without it, it holds the very first packet for the whole latency,
/// and the first key frame reached the file 100 ms later than it could
/// (182 ms after `p2p receive` started, against ~80 ms). At 2, a key frame
/// of two packets (a simple picture at 640x480) waited for the next frame's
/// first packet, one frame interval (GST_DEBUG=rtpjitterbuffer:6: "found 1
/// consecutive packet, start now" comes with the second packet).
const JITTER_FASTSTART_PACKETS: u32 = 1;

/// RTP bytes an appsrc may hold before new packets are dropped: a stalled
/// muxer (full disk) must not grow memory.
const APPSRC_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// How long finalising may take: EOS through jitter buffer and muxer.
const FINALISE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Webm,
    Matroska,
    Mp4,
}

/// Whether `--record` names stdout (`-`): the recording goes there as a
/// live Matroska stream, for a player or another program to read as it
/// is written.
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

impl Container {
    fn for_path(path: &Path) -> Result<Self, MediaError> {
        if is_stdout(path) {
            return Ok(Self::Matroska);
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        match ext.as_str() {
            "webm" | "" => Ok(Self::Webm),
            "mkv" => Ok(Self::Matroska),
            "mp4" | "m4v" => Ok(Self::Mp4),
            other => Err(MediaError::Pipeline(format!(
                "cannot record to .{other}: use .webm, .mkv or .mp4"
            ))),
        }
    }

    fn accepts(self, spec: &TrackSpec) -> bool {
        let name = spec.encoding_name();
        match self {
            Self::Matroska => true,
            Self::Webm => matches!(name.as_str(), "VP8" | "VP9" | "OPUS"),
            Self::Mp4 => matches!(name.as_str(), "H264" | "VP9" | "OPUS"),
        }
    }

    fn muxer(self) -> Result<gst::Element, MediaError> {
        Ok(match self {
            Self::Webm => make("webmmux", "mux")?,
            Self::Matroska => make("matroskamux", "mux")?,
            Self::Mp4 => {
                let m = make("mp4mux", "mux")?;
                // Fragmented: a crash still leaves a playable file.
                set(&m, "fragment-duration", "1000");
                m
            }
        })
    }
}

/// Checks that `path`'s extension names a container p2p records to, so a
/// bad `--record` fails at start rather than when a sender arrives.
pub fn check_container(path: &Path) -> Result<(), MediaError> {
    Container::for_path(path).map(|_| ())
}

#[derive(Debug, Clone)]
pub struct RecordConfig {
    pub path: Option<PathBuf>,
    pub display: bool,
    /// The sender's round trip, when known (zero if not).
    pub round_trip: Duration,
}

impl RecordConfig {
    /// How long the jitter buffers wait for a missing packet: time for
    /// resends, one round trip each. On a display, one; a recording,
    /// where being late costs nothing, waits for [`RECORD_REPAIRS`].
    pub fn jitter_latency(&self) -> Duration {
        if self.display {
            (Duration::from_millis(JITTER_LATENCY_MS) + self.round_trip).min(DISPLAY_JITTER_MAX)
        } else {
            (Duration::from_millis(RECORD_JITTER_LATENCY_MS) + self.round_trip * RECORD_REPAIRS)
                .min(RECORD_JITTER_MAX)
        }
    }
}

/// What the progress display shows.
#[derive(Debug, Default)]
pub struct RecordStats {
    pub bytes: AtomicU64,
    pub packets: AtomicU64,
    pub dropped: AtomicU64,
    /// The earliest and latest media time kept, in ns of running time.
    span: std::sync::Mutex<Option<(u64, u64)>>,
}

impl RecordStats {
    fn kept(&self, pts: Option<gst::ClockTime>) {
        let Some(t) = pts.map(gst::ClockTime::nseconds) else {
            return;
        };
        let mut span = self.span.lock().unwrap_or_else(|e| e.into_inner());
        *span = Some(span.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
    }
}

/// An RTP packet's timestamp (bytes 4..8 of its header).
fn rtp_timestamp(buffer: &gst::BufferRef) -> Option<u32> {
    let map = buffer.map_readable().ok()?;
    let b = map.as_slice().get(4..8)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Feeds one track's RTP packets into the pipeline.
#[derive(Clone)]
pub struct TrackInput {
    src: gst_app::AppSrc,
    pub kind: MediaKind,
    stats: Arc<RecordStats>,
    /// Joins a sender's new stream (after a new connection) onto the old.
    splice: Arc<std::sync::Mutex<super::gap::Splice>>,
}

impl TrackInput {
    /// The packets pushed from now on are a new stream of the same track
    /// (the sender came back on a new connection): they are written as
    /// the old stream's continuation, after the gap.
    pub fn join_new_stream(&self) {
        self.splice.lock().unwrap_or_else(|e| e.into_inner()).join();
    }

    pub fn push(&self, rtp: Bytes) {
        let mut rtp = rtp;
        {
            let now = std::time::Instant::now();
            let mut splice = self.splice.lock().unwrap_or_else(|e| e.into_inner());
            if splice.active() {
                let mut copy = rtp.to_vec();
                splice.rewrite(now, &mut copy);
                rtp = Bytes::from(copy);
            } else if let Some(head) = rtp.get(..12) {
                // Only remembered: where a stream joined later goes on.
                let mut head: [u8; 12] = head.try_into().unwrap_or([0; 12]);
                splice.rewrite(now, &mut head);
            }
        }
        self.stats.packets.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes
            .fetch_add(rtp.len() as u64, Ordering::Relaxed);
        if self.src.current_level_bytes() > APPSRC_MAX_BYTES {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let _ = self.src.push_buffer(gst::Buffer::from_slice(rtp));
    }
}

/// One sender's recording (and/or playback) pipeline.
pub struct Recorder {
    pipeline: gst::Pipeline,
    /// One per track, kept for their statistics.
    jitters: Vec<gst::Element>,
    inputs: Vec<TrackInput>,
    keyframe: watch::Receiver<bool>,
    /// False until the file has its first picture (always true without
    /// video): until then nothing at all goes into the file.
    started: Arc<AtomicBool>,
    /// Signalled when a video depayloader lost a frame it could not
    /// repair (see [`Recorder::take_keyframe_requests`]).
    keyframe_wanted: Option<mpsc::Receiver<()>>,
    pub path: Option<PathBuf>,
    pub stats: Arc<RecordStats>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn rtp_caps(spec: &TrackSpec) -> gst::Caps {
    let name = spec.encoding_name();
    let mut b = gst::Caps::builder("application/x-rtp")
        .field("media", spec.kind.to_string())
        .field("encoding-name", name.as_str())
        .field("clock-rate", spec.clock_rate as i32)
        .field("payload", spec.payload_type as i32);
    if spec.kind == MediaKind::Audio && name == "OPUS" {
        // Without these rtpopusdepay's caps lack what webmmux needs and the
        // file never finalises.
        b = b
            .field("encoding-params", spec.channels.max(1).to_string())
            .field("sprop-maxcapturerate", "48000")
            .field("sprop-stereo", if spec.channels >= 2 { "1" } else { "0" });
    }
    if name == "H264" {
        b = b.field("packetization-mode", "1");
    }
    b.build()
}

fn depayloader(spec: &TrackSpec, n: usize) -> Result<Vec<gst::Element>, MediaError> {
    let name = spec.encoding_name();
    Ok(match name.as_str() {
        "VP8" => vec![video_depay("rtpvp8depay", n)?],
        "VP9" => vec![video_depay("rtpvp9depay", n)?],
        "H264" => vec![
            video_depay("rtph264depay", n)?,
            make("h264parse", &format!("parse{n}"))?,
        ],
        "OPUS" => vec![make("rtpopusdepay", &format!("depay{n}"))?],
        other => {
            return Err(MediaError::Pipeline(format!(
                "cannot record {other}: p2p records VP8, VP9, H.264 and Opus"
            )))
        }
    })
}

/// A video depayloader that never writes a frame whose data or reference
/// was lost: after a gap the jitter buffer could not fill (retransmission
/// came too late or not at all) it drops frames until the next key frame,
/// and asks for one (an upstream force-key-unit event, which the recorder
/// turns into a PLI to the sender).
fn video_depay(factory: &str, n: usize) -> Result<gst::Element, MediaError> {
    let depay = make(factory, &format!("depay{n}"))?;
    set(&depay, "wait-for-keyframe", "true");
    set(&depay, "request-keyframe", "true");
    Ok(depay)
}

impl Recorder {
    /// Loads the plugins a recording into `cfg` may need (GStreamer
    /// opens each plugin's library on its first use): run while the first
    /// peer connects, it takes ~15 ms off the first recording's start,
    /// which is on the path to the first picture.
    pub fn warm_up(cfg: &RecordConfig) {
        if super::init().is_err() {
            return; // Recorder::start says why, if it comes to that
        }
        let mut names = vec![
            "appsrc",
            "rtpjitterbuffer",
            "rtpvp8depay",
            "rtpvp9depay",
            "rtph264depay",
            "h264parse",
            "rtpopusdepay",
            "tee",
            "queue",
        ];
        if let Some(path) = &cfg.path {
            names.push(if is_stdout(path) {
                "fdsink"
            } else {
                "filesink"
            });
            names.push(match Container::for_path(path) {
                Ok(Container::Matroska) => "matroskamux",
                Ok(Container::Mp4) => "mp4mux",
                _ => "webmmux",
            });
        }
        for name in names {
            if let Some(factory) = gst::ElementFactory::find(name) {
                let _ = factory.load();
            }
        }
    }

    /// Builds the pipeline for these tracks and starts it.
    pub fn start(
        cfg: &RecordConfig,
        tracks: &[TrackSpec],
    ) -> Result<(Self, Vec<TrackInput>), MediaError> {
        super::init()?;
        let pipeline = gst::Pipeline::with_name("p2p-record");
        let stats = Arc::new(RecordStats::default());
        let has_video = tracks.iter().any(|t| t.kind == MediaKind::Video);
        let (kf_tx, kf_rx) = watch::channel(false);
        let kf_tx = Arc::new(kf_tx);
        let video_started = Arc::new(AtomicBool::new(!has_video));
        // Coalesced: one pending request is enough.
        let (want_tx, want_rx) = mpsc::channel(1);

        let (container, mux) = match &cfg.path {
            Some(path) => {
                let c = Container::for_path(path)?;
                for t in tracks {
                    if !c.accepts(t) {
                        return Err(MediaError::Pipeline(format!(
                            "cannot put {} in {}: use .mkv",
                            t.encoding_name(),
                            path.display()
                        )));
                    }
                }
                let mux = c.muxer()?;
                // Crash safety: clusters of at most a second, written
                // through at once, so a killed receiver loses at most the
                // last second (the file still decodes; only its index and
                // duration header are missing).
                set(&mux, "max-cluster-duration", "1000000000");
                let sink = if is_stdout(path) {
                    // A stream read as it is written: no index or duration
                    // to go back for (stdout cannot seek), each cluster
                    // out as soon as it is made.
                    set(&mux, "streamable", "true");
                    let sink = make("fdsink", "stdout")?;
                    set(&sink, "fd", "1");
                    set(&sink, "sync", "false");
                    sink
                } else {
                    let sink = make("filesink", "file")?;
                    sink.set_property("location", path.to_string_lossy().as_ref());
                    set(&sink, "buffer-mode", "unbuffered");
                    sink
                };
                set(&sink, "async", "false");
                chain(&pipeline, &[&mux, &sink])?;
                (Some(c), Some(mux))
            }
            None => (None, None),
        };
        let _ = container;

        let mut inputs = Vec::new();
        let mut jitters = Vec::new();
        for (n, spec) in tracks.iter().enumerate() {
            let src = gst_app::AppSrc::builder()
                .name(format!("rtp{n}"))
                .caps(&rtp_caps(spec))
                .format(gst::Format::Time)
                .is_live(true)
                .do_timestamp(true)
                .build();
            let jitter = make("rtpjitterbuffer", &format!("jitter{n}"))?;
            // The first packet goes through at once, whatever follows it:
            // at the full latency, fast start still waits for a second
            // packet, and a one-packet first key frame (a simple picture)
            // sat until the next frame's. The latency is set once the first
            // packet is through.
            set(&jitter, "latency", "0");
            let latency = u32::try_from(cfg.jitter_latency().as_millis()).unwrap_or(u32::MAX);
            let weak = jitter.downgrade();
            jitter
                .static_pad("src")
                .ok_or_else(|| MediaError::Pipeline("jitter buffer has no src pad".into()))?
                .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    if let Some(j) = weak.upgrade() {
                        j.set_property("latency", latency);
                    }
                    gst::PadProbeReturn::Remove
                });
            if !cfg.display {
                // Across a gap (a lost path, an ICE restart) the jitter
                // buffer starts its clock over: put the times back.
                let clock = std::sync::Mutex::new(super::gap::GapClock::new(spec.clock_rate));
                jitter
                    .static_pad("src")
                    .ok_or_else(|| MediaError::Pipeline("jitter buffer has no src pad".into()))?
                    .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                        let Some(buffer) = info.buffer_mut() else {
                            return gst::PadProbeReturn::Ok;
                        };
                        let (Some(pts), Some(rtp)) = (buffer.pts(), rtp_timestamp(buffer)) else {
                            return gst::PadProbeReturn::Ok;
                        };
                        let t = clock
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .map(pts.nseconds(), rtp);
                        if t != pts.nseconds() {
                            let b = buffer.make_mut();
                            b.set_pts(gst::ClockTime::from_nseconds(t));
                            b.set_dts(gst::ClockTime::NONE);
                        }
                        gst::PadProbeReturn::Ok
                    });
                // A file's timestamps come from the sender's RTP clock
                // alone. Slaving them to arrival (the default, for live
                // play) bunched frames that arrived in a burst after
                // congestion into the same millisecond, and once stepped
                // back 121 ms: players and ffmpeg complain of
                // non-monotonic timestamps.
                set(&jitter, "mode", "none");
            }
            set(
                &jitter,
                "faststart-min-packets",
                &JITTER_FASTSTART_PACKETS.to_string(),
            );
            jitters.push(jitter.clone());
            let depay = depayloader(spec, n)?;
            let tee = make("tee", &format!("tee{n}"))?;
            let mut elements: Vec<gst::Element> = vec![src.clone().upcast(), jitter];
            elements.extend(depay);
            elements.push(tee.clone());
            let refs: Vec<&gst::Element> = elements.iter().collect();
            chain(&pipeline, &refs)?;

            if spec.kind == MediaKind::Video {
                // The depayloader's key-frame requests, on their way
                // upstream to an appsrc that cannot act on them.
                let pad = elements[2]
                    .static_pad("sink")
                    .ok_or_else(|| MediaError::Pipeline("depayloader has no sink pad".into()))?;
                let want = want_tx.clone();
                pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
                    let is_request = info.event().is_some_and(|e| {
                        e.structure().is_some_and(|s| s.name() == "GstForceKeyUnit")
                    });
                    if is_request {
                        let _ = want.try_send(());
                    }
                    gst::PadProbeReturn::Ok
                });
            }

            // Start at a key frame: drop video until the first one, and
            // audio until video has started, so the file opens on a picture.
            let last_depay = &elements[elements.len() - 2];
            let pad = last_depay
                .static_pad("src")
                .ok_or_else(|| MediaError::Pipeline("depayloader has no src pad".into()))?;
            let (kind, kf, started) = (spec.kind, kf_tx.clone(), video_started.clone());
            let kept = stats.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                let Some(buffer) = info.buffer() else {
                    return gst::PadProbeReturn::Ok;
                };
                let keep = match kind {
                    MediaKind::Video if started.load(Ordering::Relaxed) => true,
                    MediaKind::Video if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) => {
                        false
                    }
                    MediaKind::Video => {
                        started.store(true, Ordering::Relaxed);
                        let _ = kf.send(true);
                        true
                    }
                    MediaKind::Audio => started.load(Ordering::Relaxed),
                };
                if !keep {
                    return gst::PadProbeReturn::Drop;
                }
                kept.kept(buffer.pts());
                gst::PadProbeReturn::Ok
            });

            if let Some(mux) = &mux {
                let q = make("queue", &format!("muxq{n}"))?;
                pipeline
                    .add(&q)
                    .map_err(|e| MediaError::Pipeline(e.to_string()))?;
                tee.link(&q)
                    .map_err(|_| MediaError::Pipeline("cannot link tee".into()))?;
                let template = match spec.kind {
                    MediaKind::Video => "video_%u",
                    MediaKind::Audio => "audio_%u",
                };
                let mux_pad = mux.request_pad_simple(template).ok_or_else(|| {
                    MediaError::Pipeline(format!("the muxer takes no {} track", spec.kind))
                })?;
                q.static_pad("src")
                    .ok_or_else(|| MediaError::Pipeline("queue has no src pad".into()))?
                    .link(&mux_pad)
                    .map_err(|e| {
                        MediaError::Pipeline(format!(
                            "cannot record {} into this container: {e:?}",
                            spec.encoding_name()
                        ))
                    })?;
            }
            if cfg.display {
                display_branch(&pipeline, &tee, spec.kind, n)?;
            }
            inputs.push(TrackInput {
                src,
                kind: spec.kind,
                stats: stats.clone(),
                splice: Arc::new(std::sync::Mutex::new(super::gap::Splice::new(
                    spec.clock_rate,
                ))),
            });
        }

        pipeline.set_state(gst::State::Playing).map_err(|_| {
            // The element that failed posts its reason on the bus, maybe a
            // moment after the state change returned.
            let reason = super::pipeline_error(&pipeline, std::time::Duration::from_millis(500));
            let _ = pipeline.set_state(gst::State::Null);
            MediaError::Pipeline(
                reason.unwrap_or_else(|| "recording pipeline failed to start".into()),
            )
        })?;
        Ok((
            Self {
                pipeline,
                jitters,
                inputs: inputs.clone(),
                keyframe: kf_rx,
                started: video_started,
                keyframe_wanted: has_video.then_some(want_rx),
                path: cfg.path.clone(),
                stats,
            },
            inputs,
        ))
    }

    /// Becomes true once the first video key frame went into the file.
    pub fn keyframe_seen(&self) -> watch::Receiver<bool> {
        self.keyframe.clone()
    }

    /// How much media time the recording holds: from its first frame to
    /// its last (not how long the sender was connected).
    pub fn media_duration(&self) -> Duration {
        let span = *self.stats.span.lock().unwrap_or_else(|e| e.into_inner());
        span.map_or(Duration::ZERO, |(a, b)| Duration::from_nanos(b - a))
    }

    /// Whether anything went into the file: with video, nothing does
    /// before the first key frame.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// Where each track's packets go in, in the order of its tracks.
    pub fn inputs(&self) -> Vec<TrackInput> {
        self.inputs.clone()
    }

    /// Fires each time the video lost a frame that retransmission did not
    /// bring back, while the recording waits for the next key frame (at
    /// most one pending signal; `None` after the first call, or without
    /// video). The channel closes when the recorder is finalised.
    pub fn take_keyframe_requests(&mut self) -> Option<mpsc::Receiver<()>> {
        self.keyframe_wanted.take()
    }

    /// The jitter buffers' counters, summed over tracks, or per track.
    fn jitter_counter(e: &gst::Element, name: &str) -> u64 {
        e.property::<gst::Structure>("stats")
            .get::<u64>(name)
            .unwrap_or(0)
    }

    /// Packets lost in transit, over all tracks, as the jitter buffers
    /// count them.
    pub fn packets_lost(&self) -> u64 {
        self.jitters
            .iter()
            .map(|e| Self::jitter_counter(e, "num-lost"))
            .sum()
    }

    /// Per track: packets pushed, lost and late, as the jitter buffers count
    /// them.
    pub fn jitter_stats(&self) -> Vec<String> {
        self.jitters
            .iter()
            .map(|e| {
                format!(
                    "{}: pushed {} lost {} late {}",
                    e.name(),
                    Self::jitter_counter(e, "num-pushed"),
                    Self::jitter_counter(e, "num-lost"),
                    Self::jitter_counter(e, "num-late")
                )
            })
            .collect()
    }

    /// An error the pipeline reported (e.g. the disk is full), if any.
    pub fn poll_error(&self) -> Option<String> {
        pop_error(&self.pipeline)
    }

    /// Ends every track and waits until the muxer has written its index and
    /// duration. The file is valid afterwards.
    pub async fn finish(self) -> Result<(), MediaError> {
        for stats in self.jitter_stats() {
            tracing::debug!("jitter buffer: {stats}");
        }
        for input in &self.inputs {
            let _ = input.src.end_of_stream();
        }
        let pipeline = self.pipeline.clone();
        let done = tokio::task::spawn_blocking(move || {
            let bus = pipeline.bus()?;
            let msg = bus.timed_pop_filtered(
                gst::ClockTime::from_nseconds(FINALISE_TIMEOUT.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )?;
            match msg.view() {
                gst::MessageView::Error(e) => Some(Err(e.error().to_string())),
                _ => Some(Ok(())),
            }
        })
        .await
        .ok()
        .flatten();
        let _ = self.pipeline.set_state(gst::State::Null);
        match done {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(MediaError::Pipeline(format!(
                "finalising the recording: {e}"
            ))),
            None => Err(MediaError::Pipeline(
                "finalising the recording timed out: the file may lack its index".into(),
            )),
        }
    }
}

/// Decode and play one track in a window / on the speakers.
fn display_branch(
    pipeline: &gst::Pipeline,
    tee: &gst::Element,
    kind: MediaKind,
    n: usize,
) -> Result<(), MediaError> {
    let q = make("queue", &format!("showq{n}"))?;
    let decode = make("decodebin", &format!("decode{n}"))?;
    let (convert, sink) = match kind {
        MediaKind::Video => (
            make("videoconvert", &format!("showconv{n}"))?,
            make("autovideosink", &format!("show{n}"))?,
        ),
        MediaKind::Audio => (
            make("audioconvert", &format!("showconv{n}"))?,
            make("autoaudiosink", &format!("show{n}"))?,
        ),
    };
    pipeline
        .add_many([&q, &decode, &convert, &sink])
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    gst::Element::link_many([tee, &q, &decode])
        .map_err(|_| MediaError::Pipeline("cannot link display".into()))?;
    convert
        .link(&sink)
        .map_err(|_| MediaError::Pipeline("cannot link display sink".into()))?;
    let convert_weak = convert.downgrade();
    decode.connect_pad_added(move |_, pad| {
        if let Some(convert) = convert_weak.upgrade() {
            if let Some(sink) = convert.static_pad("sink") {
                let _ = pad.link(&sink);
            }
        }
    });
    Ok(())
}

fn pop_error(pipeline: &gst::Pipeline) -> Option<String> {
    // The recorder's bus has no other reader until `finish`.
    super::queued_error(pipeline)
}
