//! What a recording holds, as a user would check it: `gst-discoverer-1.0`
//! for codecs and duration, and a full decode that counts frames and fails
//! on any decoding error.

use std::path::Path;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

#[derive(Debug, Default)]
pub struct Report {
    pub video: Option<String>,
    pub audio: Option<String>,
    pub duration: f64,
    pub video_frames: u64,
    pub audio_buffers: u64,
    /// Presentation time of every decoded audio buffer.
    pub audio_pts: Vec<f64>,
    /// Presentation time of the first and last decoded video frame.
    pub first_pts: f64,
    pub last_pts: f64,
    /// Every decoded video frame: presentation time and picture size.
    pub frames: Vec<(f64, i32, i32)>,
    pub errors: Vec<String>,
    pub discoverer: String,
}

/// Runs `gst-discoverer-1.0` and decodes the whole file.
pub fn inspect(path: &Path) -> Report {
    let out = std::process::Command::new("gst-discoverer-1.0")
        .arg(path)
        .output()
        .expect("run gst-discoverer-1.0 (gstreamer1.0-plugins-base-apps)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut r = Report {
        discoverer: text.clone(),
        ..Report::default()
    };
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Duration: ") {
            r.duration = parse_clock(rest);
        } else if line.starts_with("video #") {
            r.video = line.split(": ").nth(1).map(str::to_owned);
        } else if line.starts_with("audio #") {
            r.audio = line.split(": ").nth(1).map(str::to_owned);
        }
    }
    decode(path, &mut r);
    r
}

/// Decodes the whole file with ffmpeg, an independent decoder: what it
/// reports at error level (empty when the file is clean).
pub fn ffmpeg_errors(path: &Path) -> String {
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        // Decoded frames are handed to the null output in milliseconds, as
        // the file keeps them. By default ffmpeg uses the nominal frame rate
        // as that time base, and two frames of a variable-rate source (a
        // browser's camera, forwarded as it sent them: 88 then 12 ms apart)
        // in the same 1/20 s made it complain of non-monotonic timestamps
        // in a file that decodes cleanly.
        .args(["-enc_time_base:v", "1:1000", "-f", "null", "-"])
        .output()
        .expect("run ffmpeg (apt-get install ffmpeg)");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        text.push_str(&format!("\nffmpeg exited with {}", out.status));
    }
    text
}

fn parse_clock(s: &str) -> f64 {
    let parts: Vec<f64> = s.split(':').filter_map(|p| p.trim().parse().ok()).collect();
    match parts.as_slice() {
        [h, m, sec] => h * 3600.0 + m * 60.0 + sec,
        _ => 0.0,
    }
}

fn decode(path: &Path, r: &mut Report) {
    gst::init().unwrap();
    let desc = format!(
        "filesrc location=\"{}\" ! decodebin name=d \
         d. ! queue ! videoconvert ! appsink name=v sync=false async=false \
         d. ! queue ! audioconvert ! appsink name=a sync=false async=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let video = pipeline
        .by_name("v")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let audio = pipeline
        .by_name("a")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    // A file without audio (or video) leaves one branch unlinked, and its
    // sink never prerolls: the sinks do not wait for one (async=false).
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut first = None;
    loop {
        if let Some(s) = video.try_pull_sample(gst::ClockTime::from_mseconds(10)) {
            let pts = s
                .buffer()
                .and_then(|b| b.pts())
                .map(|t| t.nseconds() as f64 / 1e9)
                .unwrap_or(0.0);
            first.get_or_insert(pts);
            r.last_pts = pts;
            r.video_frames += 1;
            let size = s
                .caps()
                .and_then(|c| c.structure(0))
                .and_then(|s| Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?)))
                .unwrap_or((0, 0));
            r.frames.push((pts, size.0, size.1));
        }
        while let Some(s) = audio.try_pull_sample(gst::ClockTime::ZERO) {
            r.audio_buffers += 1;
            if let Some(pts) = s.buffer().and_then(|b| b.pts()) {
                r.audio_pts.push(pts.nseconds() as f64 / 1e9);
            }
        }
        // With one kind of stream the pipeline never posts EOS (the other
        // sink waits): done when each kind the file has is.
        let (want_v, want_a) = (r.video.is_some(), r.audio.is_some());
        if (want_v || want_a) && (!want_v || video.is_eos()) && (!want_a || audio.is_eos()) {
            break;
        }
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
            if let gst::MessageView::Error(e) = msg.view() {
                let src = e.src().map(|s| s.name().to_string()).unwrap_or_default();
                // An unlinked optional branch is not a decode error.
                if !e.error().to_string().contains("not-linked") {
                    r.errors.push(format!("{src}: {}", e.error()));
                }
            }
            if video.is_eos()
                || !r.errors.is_empty()
                || matches!(msg.view(), gst::MessageView::Eos(_))
            {
                break;
            }
        }
        if std::time::Instant::now() > deadline {
            r.errors.push("decoding did not finish in time".into());
            break;
        }
    }
    while let Some(_s) = video.try_pull_sample(gst::ClockTime::ZERO) {
        r.video_frames += 1;
    }
    r.first_pts = first.unwrap_or(0.0);
    let _ = pipeline.set_state(gst::State::Null);
}

impl Report {
    /// The gaps in the audio longer than `over` s: where each began, and
    /// how long it was.
    pub fn audio_gaps(&self, over: f64) -> Vec<(f64, f64)> {
        self.audio_pts
            .windows(2)
            .filter(|w| w[1] - w[0] > over)
            .map(|w| (w[0], w[1] - w[0]))
            .collect()
    }

    /// Frames per second, and the longest gap between two frames in
    /// seconds, over the frames shown from `from` seconds on.
    pub fn fps_and_gap_from(&self, from: f64) -> (f64, f64) {
        let times: Vec<f64> = self
            .frames
            .iter()
            .map(|f| f.0)
            .filter(|&t| t >= from)
            .collect();
        let (Some(first), Some(last)) = (times.first(), times.last()) else {
            return (0.0, f64::INFINITY);
        };
        // The gap before the first frame of the window counts too.
        let mut gap = first - from;
        for w in times.windows(2) {
            gap = gap.max(w[1] - w[0]);
        }
        let span = (self.last_pts.max(*last) - from).max(0.001);
        (times.len() as f64 / span, gap)
    }

    /// Fails unless the file decodes, holds at least `span` s of media
    /// time (a gap in it counts: the time away), and plays at the full
    /// rate over its last `tail` s (loosely, ≥ 20 fps with no freeze of
    /// 0.5 s: a loaded machine makes the sender skip frames).
    pub fn assert_goes_on_after_a_gap(&self, span: f64, tail: f64) {
        assert!(self.errors.is_empty(), "decode errors: {:?}", self.errors);
        assert!(
            self.last_pts - self.first_pts >= span,
            "the recording spans {:.1}..{:.1} s",
            self.first_pts,
            self.last_pts
        );
        let (fps, gap) = self.fps_and_gap_from(self.last_pts - tail);
        assert!(fps >= 20.0, "{fps:.1} fps after the gap");
        assert!(gap < 0.5, "a {gap:.2} s freeze after the gap");
    }

    /// Fails with the whole report when the file is not what a user wants.
    pub fn assert_valid(&self, video: &str, audio: Option<&str>, min_secs: f64, fps: f64) {
        let ctx = format!(
            "{} video frames ({:.2}..{:.2} s), {} audio buffers, errors {:?}\n{}",
            self.video_frames,
            self.first_pts,
            self.last_pts,
            self.audio_buffers,
            self.errors,
            self.discoverer
        );
        assert!(self.errors.is_empty(), "decode errors: {ctx}");
        assert!(
            self.video.as_deref().is_some_and(|v| v.contains(video)),
            "video codec is not {video}: {ctx}"
        );
        if let Some(a) = audio {
            assert!(
                self.audio.as_deref().is_some_and(|v| v.contains(a)),
                "audio codec is not {a}: {ctx}"
            );
            assert!(self.audio_buffers > 0, "no audio decoded: {ctx}");
        }
        assert!(
            self.duration >= min_secs,
            "shorter than {min_secs} s: {ctx}"
        );
        let expected = self.duration * fps;
        assert!(
            self.video_frames as f64 >= 0.9 * expected,
            "{} frames decoded, expected about {expected:.0}: {ctx}",
            self.video_frames
        );
    }
}

/// The mean luma (0–255) of each row of the last picture in a file.
pub fn row_brightness(path: &Path) -> Vec<f64> {
    gst::init().unwrap();
    let desc = format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! video/x-raw,format=GRAY8 \
         ! appsink name=v sync=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("v")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut last = None;
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        last = Some(s);
    }
    let _ = pipeline.set_state(gst::State::Null);
    let sample = last.expect("no picture decoded");
    let info = gstreamer_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let map = sample.buffer().unwrap().map_readable().unwrap();
    let stride = info.stride()[0] as usize;
    (0..info.height() as usize)
        .map(|y| {
            let row = &map[y * stride..y * stride + info.width() as usize];
            row.iter().map(|&p| f64::from(p)).sum::<f64>() / row.len() as f64
        })
        .collect()
}
