//! `p2p send --whip-listen`: a real WHIP publisher not written in Rust
//! (headless Chromium's fake camera and microphone, `fetch` from its page)
//! publishes into p2p, which forwards it to the room without re-encoding;
//! `p2p receive --record` records it.

use std::path::Path;
use std::time::Duration;

use crate::harness::{http, page_lines, page_script_in, Proc, Relay, Spawn};
use crate::mediafile::{ffmpeg_errors, inspect};
use serde_json::Value;

/// Chromium's fake camera: 20 frames a second.
const CAMERA_FPS: f64 = 20.0;

/// `p2p send --whip-listen` in `room`; its WHIP URL (printed on stdout).
async fn ingest(relay: &Relay, room: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "send",
        "--signal",
        &relay.url,
        "--room",
        room,
        "--whip-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let mut p = Spawn::new("ingest", &args).spawn();
    let url = p.line().await;
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/whip"),
        "{url}"
    );
    (p, url)
}

fn record(relay: &Relay, room: &str, path: &Path) -> Proc {
    let args = [
        "receive",
        "--signal",
        &relay.url,
        "--room",
        room,
        "--record",
        path.to_str().unwrap(),
    ];
    Spawn::new("recorder", &args).spawn()
}

/// The publisher page, run to its end: its JSON lines.
async fn publish(url: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec![url];
    all.extend_from_slice(args);
    page_lines("whip-publish-page.mjs", &all, "the publisher").await
}

fn event<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["event"] == name)
        .unwrap_or_else(|| panic!("no {name} event in {lines:?}"))
}

/// Checks a recording of Chromium's fake camera and microphone: VP8 and
/// Opus, at least `secs` long, the camera's frame rate, clean for both
/// GStreamer and ffmpeg.
fn assert_recording(path: &Path, secs: f64) {
    let report = inspect(path);
    report.assert_valid("VP8", Some("Opus"), secs, CAMERA_FPS);
    let errors = ffmpeg_errors(path);
    if !errors.is_empty() {
        let kept = std::env::temp_dir().join(format!(
            "p2p-failed-{}",
            path.file_name().unwrap().to_string_lossy()
        ));
        let _ = std::fs::copy(path, &kept);
        panic!("ffmpeg: {errors} (the file is kept as {})", kept.display());
    }
    eprintln!(
        "{}: {:.1} s, {} video frames, {} audio buffers",
        path.display(),
        report.duration,
        report.video_frames,
        report.audio_buffers
    );
}

#[tokio::test]
async fn a_browser_publishes_over_whip_and_receivers_record_it_untouched() {
    let relay = Relay::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut tx, url) = ingest(&relay, "wl", &["--whip-token", "t0ken"]).await;

    // Trickled candidates (PATCH with If-Match), then a full offer, each
    // into a recorder of its own: the second publisher continues the same
    // outgoing stream.
    for (mode, name) in [("--trickle", "trickle.webm"), ("--full", "full.webm")] {
        let path = dir.path().join(name);
        let mut rx = record(&relay, "wl", &path);
        rx.wait_stderr("connected").await;
        let lines = publish(&url, &[mode, "--token", "t0ken", "--seconds", "7"]).await;
        let created = event(&lines, "created");
        assert_eq!(created["status"], 201, "{lines:?}");
        assert_eq!(created["acceptPatch"], "application/trickle-ice-sdpfrag");
        assert!(created["etag"].is_string(), "{lines:?}");
        if mode == "--trickle" {
            assert!(
                lines
                    .iter()
                    .any(|l| l["event"] == "patched" && l["status"] == 204),
                "{lines:?}"
            );
        }
        assert_eq!(event(&lines, "done")["deleted"], 200, "{lines:?}");
        tx.wait_stderr("the WHIP publisher ended its session").await;
        rx.signal("INT");
        assert!(rx.wait_exit().await.success(), "{}", rx.stderr());
        assert_recording(&path, 5.0);
    }
    assert!(
        tx.stderr()
            .contains("forwarding the WHIP publisher's video/VP8"),
        "{}",
        tx.stderr()
    );
    tx.signal("INT");
    assert!(tx.wait_exit().await.success(), "{}", tx.stderr());
}

#[tokio::test]
async fn one_publisher_at_a_time_a_bad_token_gets_401_and_a_vanished_one_is_let_go() {
    let relay = Relay::start(&[]).await;
    let (tx, url) = ingest(&relay, "wl2", &["--whip-token", "t0ken"]).await;
    let path = url.trim_start_matches("http://").split_once('/').unwrap().1;
    let path = format!("/{path}");
    let sdp = ["Content-Type: application/sdp"];

    let (head, body) = http(&url, "POST", &path, &sdp, "v=0\r\n").await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert!(body.contains("bearer token"), "{body}");
    let auth = "Authorization: Bearer t0ken";
    let (head, _) = http(
        &url,
        "POST",
        &path,
        &[auth, "Content-Type: text/plain"],
        "v=0",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 415"), "{head}");
    let (head, _) = http(&url, "OPTIONS", &path, &[], "").await;
    assert!(
        head.starts_with("HTTP/1.1 204") && head.contains("access-control-allow-origin: *"),
        "{head}"
    );

    // A publisher that is killed (no DELETE): the second one is refused
    // while the first holds the endpoint, and gets in once ICE has noticed.
    let page = format!(
        "{}/tests/browser/whip-publish-page.mjs",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut first = tokio::process::Command::new("node")
        .args([&page, &url, "--token", "t0ken", "--seconds", "60"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tx.wait_stderr("the WHIP publisher is connected").await;
    let (head, body) = http(&url, "POST", &path, &[auth, sdp[0]], "v=0\r\n").await;
    assert!(head.starts_with("HTTP/1.1 409"), "{head}");
    assert!(body.contains("already live"), "{body}");
    first.kill().await.unwrap();
    let killed = tokio::time::Instant::now();
    tx.wait_stderr("the WHIP publisher is gone").await;
    eprintln!(
        "endpoint free {:?} after the publisher was killed",
        killed.elapsed()
    );
    let lines = publish(&url, &["--token", "t0ken", "--seconds", "2"]).await;
    assert_eq!(event(&lines, "created")["status"], 201, "{lines:?}");
    tx.wait_stderr("the WHIP publisher ended its session").await;

    // H.264 only, into an endpoint that forwards VP8: refused, and said why.
    let (ok, refused) = page_script_in(
        None,
        "whip-publish-page.mjs",
        &[&url, "--token", "t0ken", "--codec", "h264", "--codec-only"],
        Duration::from_secs(90),
    )
    .await;
    assert!(!ok, "{refused}");
    assert_eq!(refused["status"], 422, "{refused}");
    let body = refused["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("video/VP8") && body.contains("--video-codec"),
        "{body}"
    );
    // And the endpoint is free again.
    let lines = publish(&url, &["--token", "t0ken", "--seconds", "1"]).await;
    assert_eq!(event(&lines, "created")["status"], 201, "{lines:?}");
}
