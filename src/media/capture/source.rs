//! Where the media comes from: the devices checked before starting, and a
//! `--file` probed, decoded (and looped) into the branches.

use std::path::Path;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_pbutils as pbutils;

use super::{AudioSource, CaptureConfig, VideoSource};
use crate::media::{make, MediaError, MediaKind};

/// How long probing a `--file` may take: a local file answers in
/// milliseconds; this bounds a stuck demuxer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a `--file` holds, as far as choosing its tracks and picture size
/// needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// The first video stream's picture as shown: its width with the pixel
    /// aspect applied, and its height. `None` without video.
    pub video: Option<(u32, u32)>,
    pub audio: bool,
    pub duration: Option<Duration>,
}

/// Reads what `path` holds before anything is built, so a file that is not
/// media, or lacks what was asked for, is refused (or its tracks chosen)
/// with the file named, rather than failing inside the pipeline.
pub fn probe_file(path: &Path) -> Result<FileInfo, MediaError> {
    let shown = path.display();
    let fail = |why: String| MediaError::Pipeline(format!("--file {shown}: {why}"));
    if path.is_dir() {
        return Err(fail("is a directory: name a media file".into()));
    }
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    crate::media::init()?;
    let full = std::fs::canonicalize(path).map_err(|e| fail(e.to_string()))?;
    let uri = gst::glib::filename_to_uri(&full, None).map_err(|e| fail(e.to_string()))?;
    let discoverer = pbutils::Discoverer::new(gst::ClockTime::from_nseconds(
        PROBE_TIMEOUT.as_nanos() as u64,
    ))
    .map_err(|e| fail(e.to_string()))?;
    let info = discoverer
        .discover_uri(&uri)
        .map_err(|e| fail(unreadable(&e)))?;
    match info.result() {
        pbutils::DiscovererResult::Ok => {}
        pbutils::DiscovererResult::MissingPlugins => {
            return Err(fail(missing_decoders(&info)));
        }
        pbutils::DiscovererResult::Timeout => {
            return Err(fail(format!(
                "reading it took over {} s; is it a complete media file?",
                PROBE_TIMEOUT.as_secs()
            )));
        }
        other => return Err(fail(format!("cannot be read ({other:?})"))),
    }
    let video = info.video_streams().first().map(|v| {
        let par = v.par();
        let (n, d) = (par.numer().max(1) as u64, par.denom().max(1) as u64);
        let width = (u64::from(v.width()) * n / d).clamp(2, 16_384) as u32;
        (width, v.height().max(2))
    });
    Ok(FileInfo {
        video,
        audio: !info.audio_streams().is_empty(),
        duration: info.duration().map(|d| Duration::from_nanos(d.nseconds())),
    })
}

/// One line for why GStreamer could not read a file at all.
fn unreadable(e: &gst::glib::Error) -> String {
    match e.kind::<gst::StreamError>() {
        Some(gst::StreamError::TypeNotFound | gst::StreamError::WrongType) => {
            "not a media file GStreamer can read (its type was not recognised)".into()
        }
        Some(gst::StreamError::CodecNotFound) => {
            "GStreamer has no decoder for it: install gstreamer1.0-plugins-bad, -ugly or gstreamer1.0-libav".into()
        }
        _ => format!("cannot be read: {e}"),
    }
}

/// Which decoders a file needs and this machine lacks, from GStreamer's
/// installer details ("gstreamer|1.0|app|H.265 (Main Profile) decoder|…").
fn missing_decoders(info: &pbutils::DiscovererInfo) -> String {
    let names: Vec<String> = info
        .missing_elements_installer_details()
        .iter()
        .filter_map(|d| d.split('|').nth(3).map(str::to_owned))
        .collect();
    let what = if names.is_empty() {
        "a plugin".to_owned()
    } else {
        names.join(", ")
    };
    format!(
        "GStreamer lacks {what} to play it: install gstreamer1.0-plugins-bad, -ugly or gstreamer1.0-libav"
    )
}

pub(super) fn check_devices(cfg: &CaptureConfig) -> Result<(), MediaError> {
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
    if let Some(AudioSource::Mic(None)) = &cfg.audio {
        if default_mic().is_none() {
            return Err(MediaError::Pipeline(
                "no microphone found (no sound server and no /dev/snd capture device): plug one in, name it with --mic DEVICE, leave it out with --no-audio, or use --test-source".into(),
            ));
        }
    }
    Ok(())
}

/// Where a microphone named by nothing comes from: PulseAudio (or
/// PipeWire's Pulse server) when one answers here, else ALSA's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DefaultMic {
    Pulse,
    Alsa,
}

/// The default microphone's way in, or `None` when this machine has
/// neither a sound server nor an ALSA capture device.
pub(super) fn default_mic() -> Option<DefaultMic> {
    if pulse_server() {
        return Some(DefaultMic::Pulse);
    }
    alsa_capture_device().then_some(DefaultMic::Alsa)
}

fn pulse_server() -> bool {
    if std::env::var_os("PULSE_SERVER").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| format!("/run/user/{}", current_uid()).into());
    runtime.join("pulse/native").exists()
}

fn current_uid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

/// An ALSA capture PCM (`/dev/snd/pcmC0D0c`).
fn alsa_capture_device() -> bool {
    std::fs::read_dir("/dev/snd")
        .map(|d| {
            d.filter_map(Result::ok).any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("pcmC") && name.ends_with('c')
            })
        })
        .unwrap_or(false)
}

fn has_video_device() -> bool {
    std::fs::read_dir("/dev")
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("video"))
        })
        .unwrap_or(false)
}

/// `--file`: decode the file and link its streams to the branches.
pub(super) fn file_source(
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
pub(super) fn watch_loop(pipeline: &gst::Pipeline) {
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
