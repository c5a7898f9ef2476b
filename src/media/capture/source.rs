//! Where the media comes from: the devices checked before starting, and a
//! `--file` decoded (and looped) into the branches.

use gstreamer as gst;
use gstreamer::prelude::*;

use super::{CaptureConfig, VideoSource};
use crate::media::{make, MediaError, MediaKind};

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
