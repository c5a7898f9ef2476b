//! Capture and encode once: one pipeline per sender, whatever the number of
//! receivers, ending in appsinks that hand RTP packets to the session.

mod branch;
mod sink;
mod source;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::mpsc;

use super::{KeyframeReason, MediaError, MediaKind, TrackSpec, VideoCodec};
use branch::{audio_branch, video_branch};
use sink::rtp_sink;
use source::{check_devices, file_source, watch_loop};
pub use source::{probe_file, FileInfo};

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
    /// How long the file plays, when known (for the log).
    pub file_duration: Option<Duration>,
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
/// bits). Every layer keeps the full frame rate: halving it for the
/// smallest was measured to save nothing, as each frame of a moving
/// picture then differs more from the last (a 320×180 zone plate at
/// 125 kbit/s: 137 of 150 frames kept at 15 fps, 128 of 300 at 30, and
/// 288 of 300 at 250 kbit/s, which the smallest layer's target reaches
/// when its viewers' paths allow, see `simulcast::bottom_target`). VP9
/// is sent as one layer: the forwarder switches only VP8 and H.264.
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
    layers
}

fn even(n: u32) -> u32 {
    (n & !1).max(2)
}

/// The picture size sent when neither the flags nor the source say.
pub const DEFAULT_SIZE: (u32, u32) = (640, 480);

/// A file's own picture is sent as it is up to 720p (its longer side and
/// its shorter), and scaled down to fit beyond: three layers of 1080p take
/// more than a small machine's cores.
const MAX_FILE_BOX: (u32, u32) = (1280, 720);

/// The picture size to encode, from `--width`/`--height` as given and the
/// source's own size when it has one (a file). Both given: those, and a
/// picture of another shape is letterboxed, never stretched. One given:
/// the other follows the source's shape (4:3 without a source). Neither:
/// the source's size, scaled down to fit [`MAX_FILE_BOX`] but never up, or
/// [`DEFAULT_SIZE`].
pub fn frame_size(asked: (Option<u32>, Option<u32>), source: Option<(u32, u32)>) -> (u32, u32) {
    let (sw, sh) = source.map_or((4, 3), |(w, h)| (u64::from(w.max(1)), u64::from(h.max(1))));
    let scaled = |n: u32, num: u64, den: u64| even((u64::from(n) * num / den).min(16_384) as u32);
    match asked {
        (Some(w), Some(h)) => (w, h),
        (Some(w), None) => (w, scaled(w, sh, sw)),
        (None, Some(h)) => (scaled(h, sw, sh), h),
        (None, None) => {
            let Some((w, h)) = source else {
                return DEFAULT_SIZE;
            };
            // Within 1280×720, or 720×1280 for a picture taller than wide.
            let (long, short) = MAX_FILE_BOX;
            let (bw, bh) = if w >= h { (long, short) } else { (short, long) };
            let k = (f64::from(bw) / f64::from(w))
                .min(f64::from(bh) / f64::from(h))
                .min(1.0);
            (even((w as f64 * k) as u32), even((h as f64 * k) as u32))
        }
    }
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
    /// A file waits, paused on its first frames, until [`Capture::play`].
    waiting: AtomicBool,
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The track a video codec is sent as.
pub fn video_spec(codec: VideoCodec) -> TrackSpec {
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

/// The track Opus is sent as.
pub fn audio_spec() -> TrackSpec {
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

        let from_file =
            cfg.video == Some(VideoSource::File) || cfg.audio == Some(AudioSource::File);
        if from_file {
            // A file is read up to its first frames now, so what cannot be
            // decoded fails here, naming the file; it plays from `play`.
            let opened = pipeline.set_state(gst::State::Paused).is_ok()
                && pipeline.state(gst::ClockTime::from_seconds(10)).0.is_ok();
            if let Some(err) = first_error(&pipeline)
                .or_else(|| (!opened).then(|| "the file could not be opened".to_owned()))
            {
                let _ = pipeline.set_state(gst::State::Null);
                let shown = cfg
                    .file
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display();
                return Err(MediaError::Pipeline(format!("--file {shown}: {err}")));
            }
            if cfg.looped {
                // Looping plays the file as segments: a flushing seek at
                // each end would restart the running time, and with it the
                // RTP timestamps every receiver plays and records by.
                pipeline
                    .seek_simple(
                        gst::SeekFlags::FLUSH | gst::SeekFlags::SEGMENT,
                        gst::ClockTime::ZERO,
                    )
                    .map_err(|_| {
                        MediaError::Pipeline("--loop: the file cannot be seeked".into())
                    })?;
                watch_loop(&pipeline);
            }
        } else {
            let started = pipeline.set_state(gst::State::Playing).is_ok();
            // A device that cannot be opened fails within the first
            // moments (the state change may return before it says why).
            let wait = Duration::from_millis(if started { 300 } else { 500 });
            let err = wait_for_error(&pipeline, wait)
                .or_else(|| (!started).then(|| "capture pipeline failed to start".to_owned()));
            if let Some(err) = err {
                let _ = pipeline.set_state(gst::State::Null);
                return Err(MediaError::Pipeline(device_error(cfg, &err)));
            }
        }
        Ok((
            Self {
                pipeline,
                last_keyframe: Mutex::new(vec![Keyframes::default(); video_sinks.len()]),
                video_sinks,
                layers,
                stats,
                waiting: AtomicBool::new(from_file),
            },
            outputs,
        ))
    }

    /// Starts a file that was waiting (for its first receiver); returns
    /// whether it was. A live source plays from the start.
    pub fn play(&self) -> bool {
        if !self.waiting.swap(false, Ordering::Relaxed) {
            return false;
        }
        if self.pipeline.set_state(gst::State::Playing).is_err() {
            tracing::warn!("the file would not start playing");
        }
        true
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

/// A capture failure in the user's terms: which device (as they named it)
/// could not be opened, and where to look. `err` is "element: message".
fn device_error(cfg: &CaptureConfig, err: &str) -> String {
    let (element, why) = err.split_once(": ").unwrap_or(("", err));
    let named = |d: &Option<String>| d.clone().unwrap_or_else(|| "default".into());
    if element.starts_with("asrc") {
        if let Some(AudioSource::Mic(dev)) = &cfg.audio {
            return format!(
                "--mic {}: cannot open the microphone ({}); list devices with `pactl list short sources` or `arecord -l`, or leave it out with --no-audio",
                named(dev),
                why.trim_end_matches('.')
            );
        }
    }
    if element.starts_with("vsrc") {
        if let Some(VideoSource::Camera(dev)) = &cfg.video {
            return format!(
                "--camera {}: cannot open the camera ({}); list devices with `v4l2-ctl --list-devices`, or leave it out with --no-video",
                named(dev),
                why.trim_end_matches('.')
            );
        }
    }
    err.to_owned()
}

fn first_error(pipeline: &gst::Pipeline) -> Option<String> {
    wait_for_error(pipeline, Duration::ZERO)
}

fn wait_for_error(pipeline: &gst::Pipeline, wait: Duration) -> Option<String> {
    super::pipeline_error(pipeline, wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_given_in_full_is_kept_whatever_the_source() {
        assert_eq!(
            frame_size((Some(320), Some(240)), Some((1920, 1080))),
            (320, 240)
        );
        assert_eq!(frame_size((Some(320), Some(240)), None), (320, 240));
    }

    #[test]
    fn one_side_given_keeps_the_pictures_shape() {
        assert_eq!(frame_size((Some(640), None), Some((1280, 720))), (640, 360));
        assert_eq!(frame_size((None, Some(360)), Some((1280, 720))), (640, 360));
        // No source to follow: 4:3.
        assert_eq!(frame_size((Some(800), None), None), (800, 600));
        // Portrait, and sizes rounded down to even numbers.
        assert_eq!(frame_size((Some(360), None), Some((720, 1280))), (360, 640));
        assert_eq!(frame_size((None, Some(100)), Some((853, 480))), (176, 100));
    }

    #[test]
    fn a_files_own_size_is_kept_up_to_720p_and_never_enlarged() {
        assert_eq!(frame_size((None, None), None), DEFAULT_SIZE);
        assert_eq!(frame_size((None, None), Some((320, 240))), (320, 240));
        assert_eq!(frame_size((None, None), Some((1280, 720))), (1280, 720));
        assert_eq!(frame_size((None, None), Some((1920, 1080))), (1280, 720));
        assert_eq!(frame_size((None, None), Some((3840, 2160))), (1280, 720));
        // Portrait 1080×1920: 720p on its side.
        assert_eq!(frame_size((None, None), Some((1080, 1920))), (720, 1280));
        // Odd sizes become even; a 4:3 picture stays 4:3.
        assert_eq!(frame_size((None, None), Some((321, 241))), (320, 240));
        assert_eq!(frame_size((None, None), Some((1440, 1080))), (960, 720));
    }
}
