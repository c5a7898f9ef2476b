//! The pipeline's branches: video (source → scale → tee → one encoder per
//! simulcast layer) and audio (source → opus), each ending in its appsinks.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{AudioSource, CaptureConfig, Layer, VideoSource};
use crate::media::{chain, make, set, MediaError, TestPattern, VideoCodec};

/// Payload sizes that fit any path's MTU after SRTP and UDP/IP headers.
const RTP_MTU: u32 = 1200;

/// Key frames come when a receiver asks (it joins, switches layer or lost
/// what it cannot repair), and at least this often, so a long recording
/// can be sought in. Not more often: behind a 1 Mbit/s link a key frame
/// of the 640×360 layer (~22 KB) takes ~0.2 s to cross, and our page in
/// Chromium froze for that long at every one (every 10 s, the interval
/// before); libwebrtc sends key frames only when asked.
const GOP_SECS: u32 = 60;

/// Builds source → scale → encode → pay → sink. For a file source, returns
/// the branch's first element, which the decoder's pad links to later.
pub(super) fn video_branch(
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
    // Square pixels: a picture of another shape than --width × --height
    // is letterboxed (videoscale adds the borders), not stretched.
    let mut want = gst::Caps::builder("video/x-raw")
        .field("width", cfg.width as i32)
        .field("height", cfg.height as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
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
            if cfg.pattern == TestPattern::ZonePlate {
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
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        );
        branch.extend([scale, caps]);
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
    let gop = (layer.fps * GOP_SECS).to_string();
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
            // bitrate, key frames on request (and at least every
            // GOP_SECS).
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
            // The smaller layers are what a receiver is switched to when
            // its path fills, and their key frames cross that full path:
            // at 3 average frames (the encoder's quantizer reaches its
            // limit near there), a 320×180 zone plate's is ~6 KB instead
            // of 12–19 KB, which a token bucket's queue at 600 kbit/s
            // (~11 KB) took only in part.
            set(
                &enc,
                "max-intra-bitrate",
                if k == 0 { "900" } else { "300" },
            );
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

pub(super) fn audio_branch(
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
                // Not autoaudiosrc: with no sound server it can settle on
                // OpenAL, which writes its own errors to stderr.
                None => match super::source::default_mic() {
                    Some(super::source::DefaultMic::Pulse) => make("pulsesrc", "asrc")?,
                    _ => {
                        let a = make("alsasrc", "asrc")?;
                        a.set_property("device", "default");
                        a
                    }
                },
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
