//! Capture and encode once: one pipeline per sender, whatever the number of
//! receivers, ending in appsinks that hand RTP packets to the session.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::mpsc;

use super::{chain, make, set, KeyframeReason, MediaError, MediaKind, TrackSpec, VideoCodec};

/// RTP packets queued between GStreamer's streaming thread and the task
/// that writes them to the peer connections: about half a second of 720p
/// video. Past that, packets are dropped (and counted) rather than let a
/// stalled writer grow memory.
const PACKET_QUEUE: usize = 512;

/// Key frames are expensive; a burst of receivers joining (or of PLIs) is
/// answered with one key frame per this interval.
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(300);

/// While requests keep coming (a lossy path asks again for every frame it
/// cannot decode), one key frame per this: at 300 ms, a path too slow for
/// its layer spent most of its rate on key frames that were lost in turn
/// (measured at 300 kbit/s: the smallest layer grew from 150 to 300
/// kbit/s, and nothing was ever decoded).
const KEYFRAME_INTERVAL_BUSY: Duration = Duration::from_secs(1);

/// One layer's key-frame requests that were passed on to its encoder.
#[derive(Debug, Clone, Copy, Default)]
struct Keyframes {
    last: Option<Instant>,
    /// The two latest repairs, older first.
    repairs: [Option<Instant>; 2],
}

/// Payload sizes that fit any path's MTU after SRTP and UDP/IP headers.
const RTP_MTU: u32 = 1200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoSource {
    /// A moving test pattern with a clock.
    Test,
    /// A V4L2 device, or the system's default camera.
    Camera(Option<String>),
    /// The video of a media file.
    File,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSource {
    /// A test tone.
    Test,
    /// A microphone: a PulseAudio/ALSA device, or the default.
    Mic(Option<String>),
    /// The audio of a media file.
    File,
}

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub video: Option<VideoSource>,
    pub audio: Option<AudioSource>,
    /// For `VideoSource::File` / `AudioSource::File`.
    pub file: Option<PathBuf>,
    pub looped: bool,
    pub pattern: super::TestPattern,
    pub codec: VideoCodec,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_kbps: u32,
    pub audio_kbps: u32,
    /// Simulcast layers asked for (1 = a single encoding); see [`ladder`].
    pub layers: usize,
}

/// One simulcast layer: its size and its encoder's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub kbps: u32,
}

/// Smallest layer worth sending: below this a picture says little.
const MIN_LAYER_WIDTH: u32 = 160;

/// The layers to encode, best first: full, half and quarter size, each
/// with a share of `--video-bitrate` close to what browsers give their
/// simulcast layers (a quarter of the pixels needs about a quarter of the
/// bits). The smallest of three also halves the frame rate, so a path of
/// a few hundred kbit/s still gets a picture that moves. VP9 is sent as one
/// layer: the forwarder switches only VP8 and H.264.
pub fn ladder(cfg: &CaptureConfig) -> Vec<Layer> {
    const SHARE: [f64; 3] = [1.0, 0.25, 0.05];
    let mut layers = Vec::new();
    let wanted = if cfg.codec == VideoCodec::Vp9 {
        1
    } else {
        cfg.layers.clamp(1, SHARE.len())
    };
    for (k, share) in SHARE.iter().enumerate().take(wanted) {
        let (width, height) = (even(cfg.width >> k), even(cfg.height >> k));
        if k > 0 && width < MIN_LAYER_WIDTH {
            break;
        }
        layers.push(Layer {
            width,
            height,
            fps: cfg.fps,
            kbps: ((f64::from(cfg.video_kbps) * share) as u32).max(30),
        });
    }
    if layers.len() == SHARE.len() {
        if let Some(last) = layers.last_mut() {
            last.fps = (cfg.fps / 2).max(1);
        }
    }
    layers
}

fn even(n: u32) -> u32 {
    (n & !1).max(2)
}

/// RTP out of the pipeline for one track.
pub struct Output {
    pub spec: TrackSpec,
    pub packets: mpsc::Receiver<RtpOut>,
}

/// One RTP packet and, when the pipeline clock tells, the wall-clock time
/// its media was captured (for the abs-capture-time header extension).
pub struct RtpOut {
    pub data: Bytes,
    pub captured: Option<SystemTime>,
    /// The simulcast layer it belongs to (0: the best; always 0 for audio).
    pub layer: usize,
}

#[derive(Debug, Default)]
pub struct CaptureStats {
    pub bytes: AtomicU64,
    pub packets: AtomicU64,
    pub dropped: AtomicU64,
    pub keyframes_requested: AtomicU64,
}

/// The running capture pipeline. Set to `Null` when dropped.
pub struct Capture {
    pipeline: gst::Pipeline,
    /// One per layer, best first.
    video_sinks: Vec<gst_app::AppSink>,
    /// Per layer: the last key frame request answered, and the one before.
    last_keyframe: Mutex<Vec<Keyframes>>,
    layers: Vec<Layer>,
    pub stats: Arc<CaptureStats>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn video_spec(codec: VideoCodec) -> TrackSpec {
    let (mime, fmtp) = match codec {
        VideoCodec::Vp8 => ("video/VP8", ""),
        VideoCodec::Vp9 => ("video/VP9", "profile-id=0"),
        // Constrained baseline, what every browser decodes.
        VideoCodec::H264 => (
            "video/H264",
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        ),
    };
    TrackSpec {
        kind: MediaKind::Video,
        mime: mime.into(),
        clock_rate: 90_000,
        channels: 0,
        fmtp: fmtp.into(),
        payload_type: 96,
    }
}

fn audio_spec() -> TrackSpec {
    TrackSpec {
        kind: MediaKind::Audio,
        mime: "audio/opus".into(),
        clock_rate: 48_000,
        channels: 2,
        fmtp: "minptime=10;useinbandfec=1".into(),
        payload_type: 111,
    }
}

impl Capture {
    /// Builds and starts the pipeline. Fails with a one-line reason when a
    /// device or element is missing.
    pub fn start(cfg: &CaptureConfig) -> Result<(Self, Vec<Output>), MediaError> {
        super::init()?;
        check_devices(cfg)?;
        let pipeline = gst::Pipeline::with_name("p2p-capture");
        let stats = Arc::new(CaptureStats::default());
        let mut outputs = Vec::new();
        let mut video_sinks = Vec::new();
        let mut decode_pads: Vec<(MediaKind, gst::Element)> = Vec::new();
        let layers = if cfg.video.is_some() {
            ladder(cfg)
        } else {
            vec![]
        };

        if let Some(src) = &cfg.video {
            let spec = video_spec(cfg.codec);
            let (tx, rx) = mpsc::channel::<RtpOut>(PACKET_QUEUE * layers.len());
            for k in 0..layers.len() {
                let name = format!("video-out{k}");
                video_sinks.push(rtp_sink(&name, &stats, *src != VideoSource::File, k, &tx));
            }
            let head = video_branch(&pipeline, cfg, src, &layers, &video_sinks)?;
            if let Some(head) = head {
                decode_pads.push((MediaKind::Video, head));
            }
            outputs.push(Output { spec, packets: rx });
        }
        if let Some(src) = &cfg.audio {
            let (tx, rx) = mpsc::channel::<RtpOut>(PACKET_QUEUE);
            let sink = rtp_sink("audio-out", &stats, *src != AudioSource::File, 0, &tx);
            if let Some(head) = audio_branch(&pipeline, cfg, src, &sink)? {
                decode_pads.push((MediaKind::Audio, head));
            }
            outputs.push(Output {
                spec: audio_spec(),
                packets: rx,
            });
        }
        if !decode_pads.is_empty() {
            file_source(&pipeline, cfg, decode_pads)?;
        }

        if cfg.looped {
            // Looping plays the file as segments: a flushing seek at each
            // end would restart the running time, and with it the RTP
            // timestamps every receiver plays and records by.
            pipeline.set_state(gst::State::Paused).map_err(|_| {
                MediaError::Pipeline(
                    first_error(&pipeline).unwrap_or_else(|| "cannot open --file".into()),
                )
            })?;
            let _ = pipeline.state(gst::ClockTime::from_seconds(10));
            pipeline
                .seek_simple(
                    gst::SeekFlags::FLUSH | gst::SeekFlags::SEGMENT,
                    gst::ClockTime::ZERO,
                )
                .map_err(|_| MediaError::Pipeline("--loop: the file cannot be seeked".into()))?;
        }
        pipeline.set_state(gst::State::Playing).map_err(|_| {
            MediaError::Pipeline(
                first_error(&pipeline).unwrap_or_else(|| "capture pipeline failed to start".into()),
            )
        })?;
        // A device that cannot be opened fails within the first moments.
        if let Some(err) = wait_for_error(&pipeline, Duration::from_millis(300)) {
            let _ = pipeline.set_state(gst::State::Null);
            return Err(MediaError::Pipeline(err));
        }
        if cfg.looped {
            watch_loop(&pipeline);
        }
        Ok((
            Self {
                pipeline,
                last_keyframe: Mutex::new(vec![Keyframes::default(); video_sinks.len()]),
                video_sinks,
                layers,
                stats,
            },
            outputs,
        ))
    }

    /// The simulcast layers being encoded, best first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Asks one layer's encoder for a key frame, at most once per
    /// [`KEYFRAME_INTERVAL`], or per [`KEYFRAME_INTERVAL_BUSY`] for repairs
    /// while repairs keep coming. A receiver that joins is not made to wait
    /// for others' repairs (it was: ~600 ms to a first picture whenever
    /// another receiver had joined in the last two seconds). Returns
    /// whether one was requested.
    pub fn request_keyframe(&self, layer: usize, reason: KeyframeReason) -> bool {
        let Some(sink) = self.video_sinks.get(layer) else {
            return false;
        };
        {
            let mut state = self.last_keyframe.lock().unwrap_or_else(|e| e.into_inner());
            let Keyframes { last, repairs } = &mut state[layer];
            let busy = reason == KeyframeReason::Repair
                && repairs[0].is_some_and(|t| t.elapsed() < KEYFRAME_INTERVAL_BUSY * 2);
            let gap = if busy {
                KEYFRAME_INTERVAL_BUSY
            } else {
                KEYFRAME_INTERVAL
            };
            if last.is_some_and(|t| t.elapsed() < gap) {
                return false;
            }
            let now = Instant::now();
            *last = Some(now);
            if reason == KeyframeReason::Repair {
                *repairs = [repairs[1], Some(now)];
            }
        }
        let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        self.stats
            .keyframes_requested
            .fetch_add(1, Ordering::Relaxed);
        sink.send_event(event)
    }

    /// Sets layer `layer`'s encoder target, in kbit/s (held within what
    /// the layer was configured with by the caller).
    pub fn set_layer_bitrate(&self, layer: usize, kbps: u32) {
        let Some(enc) = self.pipeline.by_name(&format!("venc{layer}")) else {
            return;
        };
        if enc.find_property("target-bitrate").is_some() {
            let bits = i32::try_from(u64::from(kbps) * 1000).unwrap_or(i32::MAX);
            if enc.property::<i32>("target-bitrate") != bits {
                enc.set_property("target-bitrate", bits);
            }
        } else if enc.find_property("bitrate").is_some() && enc.property::<u32>("bitrate") != kbps {
            enc.set_property("bitrate", kbps);
        }
    }

    /// Tells the audio encoder how much loss the receivers see, in
    /// percent, so its in-band FEC protects against that much.
    pub fn set_audio_loss(&self, percent: u32) {
        if let Some(enc) = self.pipeline.by_name("aenc") {
            let percent = percent.min(100) as i32;
            if enc.property::<i32>("packet-loss-percentage") != percent {
                enc.set_property("packet-loss-percentage", percent);
            }
        }
    }

    /// Video encoders in the pipeline: one per layer, however many
    /// receivers.
    pub fn video_encoders(&self) -> usize {
        self.pipeline
            .iterate_elements()
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| {
                e.factory()
                    .is_some_and(|f| f.has_type(gst::ElementFactoryType::VIDEO_ENCODER))
            })
            .count()
    }

    /// Writes the pipeline graph to `$GST_DEBUG_DUMP_DOT_DIR/NAME.dot` when
    /// that variable is set (GStreamer's own convention; a no-op otherwise).
    pub fn dump_graph(&self, name: &str) {
        self.pipeline
            .debug_to_dot_file(gst::DebugGraphDetails::all(), name);
    }

    /// An error the pipeline reported since the last call, if any.
    pub fn poll_error(&self) -> Option<String> {
        wait_for_error(&self.pipeline, Duration::ZERO)
    }
}

fn check_devices(cfg: &CaptureConfig) -> Result<(), MediaError> {
    if let Some(VideoSource::Camera(dev)) = &cfg.video {
        match dev {
            Some(path) if !std::path::Path::new(path).exists() => {
                return Err(MediaError::Pipeline(format!(
                    "camera {path} not found: check the device path (ls /dev/video*), or use --test-source"
                )));
            }
            None if !has_video_device() => {
                return Err(MediaError::Pipeline(
                    "no camera found (no /dev/video* device): plug one in, name it with --camera /dev/videoN, or use --test-source".into(),
                ));
            }
            _ => {}
        }
    }
    if let Some(path) = &cfg.file {
        if !path.is_file() {
            return Err(MediaError::Pipeline(format!(
                "--file {}: no such file",
                path.display()
            )));
        }
    }
    Ok(())
}

fn has_video_device() -> bool {
    std::fs::read_dir("/dev")
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("video"))
        })
        .unwrap_or(false)
}

/// An appsink handing RTP packets of `layer` to a bounded channel.
fn rtp_sink(
    name: &str,
    stats: &Arc<CaptureStats>,
    live: bool,
    layer: usize,
    tx: &mpsc::Sender<RtpOut>,
) -> gst_app::AppSink {
    let tx = tx.clone();
    let sink = gst_app::AppSink::builder()
        .name(name)
        .caps(&gst::Caps::builder("application/x-rtp").build())
        // Live sources are already paced, and waiting on the clock here
        // would only add latency; a file is paced here, in real time.
        .sync(!live)
        .build();
    let stats = stats.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(buffer) = sample.buffer() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Ok(map) = buffer.map_readable() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let data = Bytes::copy_from_slice(map.as_slice());
                stats.packets.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                let captured = capture_time(sink, &sample, buffer);
                match tx.try_send(RtpOut {
                    data,
                    captured,
                    layer,
                }) {
                    Ok(()) => Ok(gst::FlowSuccess::Ok),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        Ok(gst::FlowSuccess::Ok)
                    }
                    // Nobody reads any more: the session is ending.
                    Err(mpsc::error::TrySendError::Closed(_)) => Err(gst::FlowError::Eos),
                }
            })
            .build(),
    );
    sink
}

/// When the media in `buffer` was captured, on the wall clock: its running
/// time is when the source stamped it, and the pipeline clock tells how
/// long ago that was.
fn capture_time(
    sink: &gst_app::AppSink,
    sample: &gst::Sample,
    buffer: &gst::BufferRef,
) -> Option<SystemTime> {
    let clock = sink.clock()?;
    let base = sink.base_time()?;
    let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    let running = segment.to_running_time(buffer.pts()?)?;
    let age = clock.time().saturating_sub(base + running);
    SystemTime::now().checked_sub(Duration::from_nanos(age.nseconds()))
}

/// Builds source → scale → encode → pay → sink. For a file source, returns
/// the branch's first element, which the decoder's pad links to later.
fn video_branch(
    pipeline: &gst::Pipeline,
    cfg: &CaptureConfig,
    src: &VideoSource,
    layers: &[Layer],
    sinks: &[gst_app::AppSink],
) -> Result<Option<gst::Element>, MediaError> {
    let convert = make("videoconvert", "vconvert")?;
    let scale = make("videoscale", "vscale")?;
    let rate = make("videorate", "vrate")?;
    let caps = make("capsfilter", "vcaps")?;
    let mut want = gst::Caps::builder("video/x-raw")
        .field("width", cfg.width as i32)
        .field("height", cfg.height as i32);
    if *src == VideoSource::File {
        want = want.field("framerate", gst::Fraction::new(cfg.fps as i32, 1));
    } else {
        // A live source's frames go out as they come, at most --fps of
        // them. Making up missing frames would hold every frame back until
        // the next one arrived: measured, 35 ms of the 41 ms from capture
        // to the receiver at 720p30.
        set(&rate, "drop-only", "true");
        set(&rate, "max-rate", &cfg.fps.to_string());
    }
    caps.set_property("caps", want.build());

    let mut elements: Vec<gst::Element> = Vec::new();
    let head = match src {
        VideoSource::Test => {
            let test = make("videotestsrc", "vsrc")?;
            set(&test, "is-live", "true");
            set(&test, "pattern", cfg.pattern.nick());
            if cfg.pattern == super::TestPattern::ZonePlate {
                // Rings that move and tighten: ~0.7 Mbit/s of VP8 at
                // 640×480 with a 1 Mbit/s target, where the ball needs 0.13.
                for (k, v) in [("kt", "4"), ("kx2", "40"), ("ky2", "40")] {
                    set(&test, k, v);
                }
            }
            elements.push(test);
            None
        }
        VideoSource::Camera(dev) => {
            let cam = match dev {
                Some(path) => {
                    let v = make("v4l2src", "vsrc")?;
                    v.set_property("device", path);
                    v
                }
                None => make("autovideosrc", "vsrc")?,
            };
            elements.push(cam);
            None
        }
        VideoSource::File => None,
    };
    let is_file = matches!(src, VideoSource::File);
    elements.extend([convert.clone(), scale, rate, caps]);
    if matches!(src, VideoSource::Test) {
        let clock = make("clockoverlay", "vclock")?;
        set(&clock, "time-format", "%H:%M:%S");
        set(&clock, "shaded-background", "true");
        set(&clock, "font-desc", "Sans 36");
        let post = make("videoconvert", "vconvert2")?;
        elements.extend([clock, post]);
    }
    let tee = make("tee", "vtee")?;
    elements.push(tee.clone());
    let refs: Vec<&gst::Element> = elements.iter().collect();
    chain(pipeline, &refs)?;
    // The layers share one RTP clock, so a receiver switched between them
    // sees one timeline.
    let timestamp_offset = rand::random::<u32>().to_string();
    for (k, (layer, sink)) in layers.iter().zip(sinks).enumerate() {
        let branch = layer_branch(cfg, src, k, layer, sink, &timestamp_offset)?;
        let refs: Vec<&gst::Element> = branch.iter().collect();
        chain(pipeline, &refs)?;
        tee.link(&branch[0])
            .map_err(|_| MediaError::Pipeline(format!("cannot link layer {k}")))?;
    }
    Ok(is_file.then_some(convert).or(head))
}

/// One simulcast layer after the tee: queue → scale → encode → pay → sink.
fn layer_branch(
    cfg: &CaptureConfig,
    src: &VideoSource,
    k: usize,
    layer: &Layer,
    sink: &gst_app::AppSink,
    timestamp_offset: &str,
) -> Result<Vec<gst::Element>, MediaError> {
    // A live source never queues raw frames behind a busy encoder: the
    // oldest are dropped. A file waits instead (it is paced at the sink).
    let queue = make("queue", &format!("vqueue{k}"))?;
    if *src != VideoSource::File {
        set(&queue, "leaky", "downstream");
        set(&queue, "max-size-buffers", "2");
        set(&queue, "max-size-bytes", "0");
        set(&queue, "max-size-time", "0");
    }
    let mut branch = vec![queue];
    if (layer.width, layer.height) != (cfg.width, cfg.height) {
        let scale = make("videoscale", &format!("vscale{k}"))?;
        let caps = make("capsfilter", &format!("vcaps{k}"))?;
        caps.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("width", layer.width as i32)
                .field("height", layer.height as i32)
                .build(),
        );
        branch.extend([scale, caps]);
    }
    if layer.fps < cfg.fps {
        // Every n-th frame, counted, not `videorate`: its caps would
        // travel up through the tee and hold every layer to this rate.
        let keep_one_in = u64::from((cfg.fps / layer.fps.max(1)).max(1));
        let seen = AtomicU64::new(0);
        if let Some(pad) = branch[0].static_pad("src") {
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                if seen
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(keep_one_in)
                {
                    gst::PadProbeReturn::Ok
                } else {
                    gst::PadProbeReturn::Drop
                }
            });
        }
    }
    let (encoder, pay) = video_encoder(cfg, layer, k)?;
    set(&pay, "timestamp-offset", timestamp_offset);
    branch.extend(encoder);
    branch.push(pay);
    branch.push(sink.clone().upcast());
    Ok(branch)
}

fn video_encoder(
    cfg: &CaptureConfig,
    layer: &Layer,
    k: usize,
) -> Result<(Vec<gst::Element>, gst::Element), MediaError> {
    let gop = (layer.fps * 10).to_string();
    let bits = (layer.kbps * 1000).to_string();
    let (venc, vpay) = (format!("venc{k}"), format!("vpay{k}"));
    Ok(match cfg.codec {
        VideoCodec::Vp8 | VideoCodec::Vp9 => {
            let (enc, pay) = if cfg.codec == VideoCodec::Vp8 {
                (make("vp8enc", &venc)?, make("rtpvp8pay", &vpay)?)
            } else {
                (make("vp9enc", &venc)?, make("rtpvp9pay", &vpay)?)
            };
            // Realtime: no lookahead, a fast speed setting, constant
            // bitrate, key frames on request (and at least every 10 s).
            set(&enc, "deadline", "1");
            set(
                &enc,
                "cpu-used",
                if cfg.codec == VideoCodec::Vp8 {
                    "8"
                } else {
                    "7"
                },
            );
            set(&enc, "lag-in-frames", "0");
            set(&enc, "end-usage", "cbr");
            set(&enc, "target-bitrate", &bits);
            set(&enc, "keyframe-max-dist", &gop);
            set(&enc, "error-resilient", "default");
            // libvpx's worker threads spin while they wait for each other:
            // measured here, two 640x480 encoders with threads=2 on 2 cores
            // each burn a full core and drop to 16 fps; with one thread each
            // takes ~10 %. One thread is enough up to 720p.
            let threads = if layer.width * layer.height > 1280 * 720 {
                "2"
            } else {
                "1"
            };
            set(&enc, "threads", threads);
            // Rate control as libwebrtc sets libvpx for real time: a 1 s
            // buffer starting half full (the defaults, 4 s initial and 5 s
            // optimal, exceed the buffer itself and let the encoder spend
            // freely: measured 2.2–2.4 Mbit/s asked for 1), overshoot held to
            // 15 %, frames dropped when the buffer runs low rather than the
            // rate exceeded, and a key frame at most 9 average frames' worth
            // (on a lossy path, key frames asked for again and again were
            // the bulk of a small layer's rate).
            set(&enc, "buffer-size", "1000");
            set(&enc, "buffer-initial-size", "500");
            set(&enc, "buffer-optimal-size", "600");
            set(&enc, "overshoot", "15");
            set(&enc, "dropframe-threshold", "30");
            set(&enc, "max-intra-bitrate", "900");
            if cfg.codec == VideoCodec::Vp9 {
                set(&enc, "row-mt", "true");
            }
            set(&pay, "picture-id-mode", "15-bit");
            set(&pay, "mtu", &RTP_MTU.to_string());
            set(&pay, "pt", "96");
            (vec![enc], pay)
        }
        VideoCodec::H264 => {
            let enc = make("x264enc", &venc)?;
            set(&enc, "tune", "zerolatency");
            set(&enc, "speed-preset", "ultrafast");
            set(&enc, "bitrate", &layer.kbps.to_string());
            set(&enc, "key-int-max", &gop);
            set(&enc, "bframes", "0");
            let caps = make("capsfilter", &format!("h264caps{k}"))?;
            caps.set_property(
                "caps",
                gst::Caps::builder("video/x-h264")
                    .field("profile", "constrained-baseline")
                    .build(),
            );
            let pay = make("rtph264pay", &vpay)?;
            set(&pay, "config-interval", "-1");
            set(&pay, "aggregate-mode", "zero-latency");
            set(&pay, "mtu", &RTP_MTU.to_string());
            set(&pay, "pt", "96");
            (vec![enc, caps], pay)
        }
    })
}

fn audio_branch(
    pipeline: &gst::Pipeline,
    cfg: &CaptureConfig,
    src: &AudioSource,
    sink: &gst_app::AppSink,
) -> Result<Option<gst::Element>, MediaError> {
    let convert = make("audioconvert", "aconvert")?;
    let resample = make("audioresample", "aresample")?;
    let caps = make("capsfilter", "acaps")?;
    caps.set_property(
        "caps",
        gst::Caps::builder("audio/x-raw")
            .field("rate", 48_000i32)
            .field("channels", 2i32)
            .build(),
    );
    let queue = make("queue", "aqueue")?;
    let enc = make("opusenc", "aenc")?;
    set(&enc, "bitrate", &(cfg.audio_kbps * 1000).to_string());
    set(&enc, "frame-size", "20");
    // In-band FEC: a lost packet is rebuilt from the next one, at a cost
    // in bits that opus sizes from the loss the receivers report
    // (`set_audio_loss`); with no loss it costs nothing.
    set(&enc, "inband-fec", "true");
    let pay = make("rtpopuspay", "apay")?;
    set(&pay, "pt", "111");
    set(&pay, "mtu", &RTP_MTU.to_string());
    let mut elements: Vec<gst::Element> = Vec::new();
    match src {
        AudioSource::Test => {
            let tone = make("audiotestsrc", "asrc")?;
            set(&tone, "is-live", "true");
            set(&tone, "wave", "sine");
            set(&tone, "freq", "440");
            set(&tone, "volume", "0.2");
            elements.push(tone);
        }
        AudioSource::Mic(dev) => {
            let mic = match dev.as_deref() {
                Some(d) if d.starts_with("hw:") || d.starts_with("plughw:") || d == "default" => {
                    let a = make("alsasrc", "asrc")?;
                    a.set_property("device", d);
                    a
                }
                Some(d) => {
                    let p = make("pulsesrc", "asrc")?;
                    p.set_property("device", d);
                    p
                }
                None => make("autoaudiosrc", "asrc")?,
            };
            elements.push(mic);
        }
        AudioSource::File => {}
    }
    elements.extend([
        convert.clone(),
        resample,
        caps,
        queue,
        enc,
        pay,
        sink.clone().upcast(),
    ]);
    let refs: Vec<&gst::Element> = elements.iter().collect();
    chain(pipeline, &refs)?;
    Ok(matches!(src, AudioSource::File).then_some(convert))
}

/// `--file`: decode the file and link its streams to the branches.
fn file_source(
    pipeline: &gst::Pipeline,
    cfg: &CaptureConfig,
    heads: Vec<(MediaKind, gst::Element)>,
) -> Result<(), MediaError> {
    let path = cfg
        .file
        .as_ref()
        .ok_or_else(|| MediaError::Pipeline("a file source needs --file".into()))?;
    let path = std::fs::canonicalize(path)
        .map_err(|e| MediaError::Pipeline(format!("--file {}: {e}", path.display())))?;
    let uri = gst::glib::filename_to_uri(&path, None)
        .map_err(|e| MediaError::Pipeline(format!("--file {}: {e}", path.display())))?;
    let decode = make("uridecodebin", "filesrc")?;
    decode.set_property("uri", uri.as_str());
    pipeline
        .add(&decode)
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    decode.connect_pad_added(move |_, pad| {
        let Some(caps) = pad.current_caps().or_else(|| Some(pad.query_caps(None))) else {
            return;
        };
        let Some(s) = caps.structure(0) else { return };
        let kind = if s.name().starts_with("video/") {
            MediaKind::Video
        } else if s.name().starts_with("audio/") {
            MediaKind::Audio
        } else {
            return;
        };
        if let Some((_, head)) = heads.iter().find(|(k, _)| *k == kind) {
            if let Some(sink) = head.static_pad("sink") {
                if !sink.is_linked() {
                    if let Err(e) = pad.link(&sink) {
                        tracing::warn!("cannot use the file's {kind}: {e:?}");
                    }
                }
            }
        }
    });
    Ok(())
}

/// `--loop`: at the end of each pass, play the file again as the next
/// segment (no flush: time runs on).
fn watch_loop(pipeline: &gst::Pipeline) {
    let Some(bus) = pipeline.bus() else { return };
    let weak = pipeline.downgrade();
    std::thread::spawn(move || {
        for msg in bus.iter_timed(gst::ClockTime::NONE) {
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            match msg.view() {
                gst::MessageView::SegmentDone(_)
                    if pipeline
                        .seek_simple(gst::SeekFlags::SEGMENT, gst::ClockTime::ZERO)
                        .is_err() =>
                {
                    tracing::warn!("--loop: cannot seek back to the start");
                    return;
                }
                gst::MessageView::Error(_) => return,
                _ => {}
            }
        }
    });
}

fn first_error(pipeline: &gst::Pipeline) -> Option<String> {
    wait_for_error(pipeline, Duration::ZERO)
}

fn wait_for_error(pipeline: &gst::Pipeline, wait: Duration) -> Option<String> {
    super::pipeline_error(pipeline, wait)
}
