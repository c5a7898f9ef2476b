//! GStreamer: capture and encode once ([`capture`]), record and play what
//! arrives ([`record`]). Every GStreamer type stays inside this module; the
//! session layer sees RTP packets as bytes and tracks as [`TrackSpec`]s.

pub mod capture;
mod gap;
pub mod record;

use std::fmt;

use gstreamer as gst;
use gstreamer::prelude::*;

/// Why a key frame is asked for: the encoder answers a receiver that is
/// starting (or switching layers) at once, and throttles one whose
/// decoder keeps losing frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeReason {
    /// A receiver's first picture, or its first at a new layer.
    Join,
    /// A receiver lost a frame it could not repair (PLI/FIR).
    Repair,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Audio => "audio",
            Self::Video => "video",
        })
    }
}

/// Video codecs `p2p send` can encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
}

/// What `--test-source` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TestPattern {
    /// A bouncing ball: little motion, a low bitrate.
    #[default]
    Ball,
    /// Colour bars.
    Smpte,
    /// A moving zone plate: fine detail changing everywhere, so the
    /// encoder spends most of --video-bitrate (for load tests).
    ZonePlate,
}

impl TestPattern {
    /// videotestsrc's name for it.
    pub fn nick(self) -> &'static str {
        match self {
            Self::Ball => "ball",
            Self::Smpte => "smpte",
            Self::ZonePlate => "zone-plate",
        }
    }
}

/// One RTP stream, described the way SDP and GStreamer caps both need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSpec {
    pub kind: MediaKind,
    /// `video/VP8`, `audio/opus`, …
    pub mime: String,
    pub clock_rate: u32,
    pub channels: u16,
    /// The `a=fmtp` parameters.
    pub fmtp: String,
    /// RTP payload type (as negotiated, on the receiving side).
    pub payload_type: u8,
}

impl TrackSpec {
    /// The RTP encoding name GStreamer uses (`VP8`, `OPUS`, `H264`).
    pub fn encoding_name(&self) -> String {
        self.mime
            .split_once('/')
            .map_or(self.mime.as_str(), |(_, n)| n)
            .to_ascii_uppercase()
    }
}

/// Errors a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("GStreamer element \"{element}\" is missing: install {package}")]
    MissingElement {
        element: String,
        package: &'static str,
    },
    #[error("cannot start GStreamer: {0}")]
    Init(String),
    #[error("{0}")]
    Pipeline(String),
}

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), MediaError> {
    gst::init().map_err(|e| MediaError::Init(e.to_string()))
}

/// The Debian package that ships an element, for the error message.
fn package_of(element: &str) -> &'static str {
    match element {
        "vp8enc" | "vp9enc" | "rtpvp8pay" | "rtpvp9pay" | "rtpvp8depay" | "rtpvp9depay"
        | "rtpopuspay" | "rtpopusdepay" | "rtph264pay" | "rtph264depay" | "rtpjitterbuffer"
        | "webmmux" | "matroskamux" | "mp4mux" | "v4l2src" | "autovideosrc" | "autoaudiosrc"
        | "autovideosink" | "autoaudiosink" | "pulsesrc" => "gstreamer1.0-plugins-good",
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "h264parse" | "openh264enc" => "gstreamer1.0-plugins-bad",
        "avdec_h264" => "gstreamer1.0-libav",
        "alsasrc" => "gstreamer1.0-alsa",
        _ => "gstreamer1.0-plugins-base",
    }
}

/// Makes an element, naming the missing plugin package when it is absent.
pub(crate) fn make(factory: &str, name: &str) -> Result<gst::Element, MediaError> {
    gst::ElementFactory::make(factory)
        .name(name)
        .build()
        .map_err(|_| MediaError::MissingElement {
            element: factory.to_owned(),
            package: package_of(factory),
        })
}

/// Sets a property from its string form when the element has it (element
/// versions differ in what they offer).
pub(crate) fn set(el: &gst::Element, name: &str, value: &str) {
    if el.find_property(name).is_some() {
        el.set_property_from_str(name, value);
    } else {
        tracing::debug!("{} has no property {name}", el.name());
    }
}

/// Adds `elements` to `bin` and links them in order.
pub(crate) fn chain(bin: &gst::Pipeline, elements: &[&gst::Element]) -> Result<(), MediaError> {
    bin.add_many(elements.iter().copied())
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    gst::Element::link_many(elements.iter().copied()).map_err(|_| {
        let names: Vec<String> = elements.iter().map(|e| e.name().to_string()).collect();
        MediaError::Pipeline(format!("cannot link {}", names.join(" ! ")))
    })
}

/// The first error queued on a pipeline whose bus has no other reader,
/// without waiting. (`timed_pop_filtered` with no wait returns before it
/// looks at the queue: a recording to a stdout whose reader had gone ran
/// on, unnoticed, until it was finalised.) Other messages are dropped.
pub(crate) fn queued_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    std::iter::from_fn(|| bus.pop())
        .find(|m| m.type_() == gst::MessageType::Error)
        .and_then(|m| error_text(&m))
}

/// The first error a pipeline posted within `wait`, as "element: message".
pub(crate) fn pipeline_error(
    pipeline: &gst::Pipeline,
    wait: std::time::Duration,
) -> Option<String> {
    let bus = pipeline.bus()?;
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_nseconds(wait.as_nanos() as u64),
        &[gst::MessageType::Error],
    )?;
    error_text(&msg)
}

/// "element: reason" for an error message.
fn error_text(msg: &gst::Message) -> Option<String> {
    match msg.view() {
        gst::MessageView::Error(e) => Some(format!(
            "{}: {}",
            e.src().map(|s| s.name().to_string()).unwrap_or_default(),
            e.error()
        )),
        _ => None,
    }
}
