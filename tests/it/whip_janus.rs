//! `p2p send --whip` into a real SFU: Janus 1.1 (Debian) with its VideoRoom
//! plugin, behind meetecho's simple-whip-server, both set up on this
//! machine by `scripts/janus-whip.sh`; a real subscriber on the Janus side
//! (headless Chromium with Janus's own janus.js) decodes what p2p sent.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Proc, Spawn, WAIT};

/// One Janus at a time: each test encodes, and Chromium decodes, on a
/// 2-core machine.
static ONE_JANUS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test source's frame rate.
const FPS: f64 = 30.0;

/// Seconds the subscriber decodes.
const WATCH: u32 = 5;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/janus-whip.sh")
}

/// Janus and simple-whip-server, stopped when dropped.
struct Janus {
    dir: tempfile::TempDir,
    ws: String,
    whip: String,
}

impl Janus {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(300),
            tokio::process::Command::new("bash")
                .arg(script())
                .arg("start")
                .arg(dir.path())
                .output(),
        )
        .await
        .expect("scripts/janus-whip.sh start took over 300 s")
        .expect("run bash");
        assert!(
            out.status.success(),
            "scripts/janus-whip.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {env}"))
                .to_owned()
        };
        Self {
            ws: var("JANUS_WS"),
            whip: var("WHIP_BASE"),
            dir,
        }
    }

    /// Creates a WHIP endpoint publishing into VideoRoom `room`; its URL.
    fn endpoint(&self, id: &str, room: u32) -> String {
        let body = format!(r#"{{"id":"{id}","room":{room}}}"#);
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-f",
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
            ])
            .arg(format!("{}/create", self.whip))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot create endpoint {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("{}/endpoint/{id}", self.whip)
    }

    /// Whether endpoint `id` has a publisher, as simple-whip-server says.
    fn in_use(&self, id: &str) -> bool {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-f"])
            .arg(format!("{}/endpoints", self.whip))
            .output()
            .unwrap();
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bad endpoint list: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        list.as_array()
            .expect("a list of endpoints")
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("no endpoint {id} in {list}"))["enabled"]
            == true
    }

    /// Waits until endpoint `id` is free again; how long that took.
    async fn freed(&self, id: &str, within: Duration) -> Duration {
        let start = tokio::time::Instant::now();
        while self.in_use(id) {
            assert!(
                start.elapsed() < within,
                "endpoint {id} still in use after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        start.elapsed()
    }

    /// Subscribes to the publisher of `room` with Chromium and janus.js and
    /// decodes for `WATCH` seconds: what the subscriber's statistics say.
    async fn watch(&self, room: u32) -> Value {
        let args = [self.ws.as_str(), &room.to_string(), &WATCH.to_string()];
        crate::harness::page_script_in(None, "janus-watch-page.mjs", &args, Duration::from_secs(60))
            .await
            .1
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

fn publisher(url: &str, extra: &[&str]) -> Spawn {
    let mut args = vec!["send", "--test-source", "--whip", url];
    args.extend_from_slice(extra);
    Spawn::new("send", &args)
}

/// Checks what the Janus subscriber decoded: `WATCH` seconds of `codec`
/// video at most 20 % short of the source's frame rate, and Opus audio.
fn assert_decoded(p: &Proc, got: &Value, codec: &str) {
    if got.get("error").is_some() {
        p.fail(&format!("the Janus subscriber failed: {got}"));
    }
    let frames = got["videoFrames"].as_f64().unwrap_or(0.0);
    let samples = got["audioSamples"].as_f64().unwrap_or(0.0);
    let least = 0.8 * FPS * f64::from(WATCH);
    let ok = got["videoCodec"] == codec
        && got["audioCodec"] == "audio/opus"
        && frames >= least
        && samples >= 0.9 * 48_000.0 * f64::from(WATCH);
    if !ok {
        p.fail(&format!(
            "expected {WATCH} s of {codec} (≥ {least} frames) and audio/opus through Janus: {got}"
        ));
    }
}

#[tokio::test]
async fn vp8_and_opus_reach_a_janus_subscriber_and_ctrl_c_frees_the_endpoint() {
    let _one = ONE_JANUS.lock().await;
    let janus = Janus::start().await;
    let url = janus.endpoint("cam", 1234);

    // A full offer (candidates in it).
    let mut p = publisher(&url, &[]).spawn();
    p.wait_stderr("WHIP: publishing to").await;
    let got = janus.watch(1234).await;
    assert_decoded(&p, &got, "video/VP8");
    assert!(janus.in_use("cam"));
    p.signal("INT");
    assert!(p.wait_exit().await.success(), "{}", p.stderr());
    let took = janus.freed("cam", Duration::from_secs(1)).await;
    eprintln!("Janus: {got}; endpoint free {took:?} after Ctrl-C");
    assert!(p.stderr().contains("WHIP: session"), "{}", p.stderr());

    // Free again at once: a second publisher, which trickles its
    // candidates by PATCH, gets it.
    let mut p = publisher(&url, &[]).env("P2P_WHIP_GATHER_MS", "0").spawn();
    p.wait_stderr("WHIP: publishing to").await;
    assert!(
        p.stderr().contains("WHIP PATCH"),
        "no candidate was trickled: {}",
        p.stderr()
    );
    p.signal("TERM");
    assert!(p.wait_exit().await.success(), "{}", p.stderr());
    janus.freed("cam", WAIT).await;
}

#[tokio::test]
async fn h264_reaches_an_h264_room_and_a_room_that_refuses_it_is_named() {
    let _one = ONE_JANUS.lock().await;
    let janus = Janus::start().await;

    let url = janus.endpoint("h264", 1235);
    let mut p = publisher(&url, &["--video-codec", "h264"]).spawn();
    p.wait_stderr("WHIP: publishing to").await;
    let got = janus.watch(1235).await;
    assert_decoded(&p, &got, "video/H264");
    p.signal("INT");
    assert!(p.wait_exit().await.success(), "{}", p.stderr());

    // Room 1234 takes VP8 only: Janus answers with the video section
    // rejected (port 0).
    let url = janus.endpoint("vp8only", 1234);
    let mut p = publisher(&url, &["--video-codec", "h264"]).spawn();
    let status = p.wait_exit().await;
    p.wait_stderr("p2p: error:").await;
    let err = p.stderr();
    let last = err.lines().last().unwrap_or("");
    assert!(
        !status.success()
            && last.starts_with("p2p: error:")
            && last.contains("rejected the video (H264)")
            && last.contains("--video-codec"),
        "{err}"
    );
    janus.freed("vp8only", Duration::from_secs(1)).await;
}

#[tokio::test]
async fn one_encode_goes_to_the_room_and_to_janus_at_once() {
    let _one = ONE_JANUS.lock().await;
    let janus = Janus::start().await;
    let url = janus.endpoint("both", 1234);
    let relay = crate::harness::Relay::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("room.webm");
    let mut rx = Spawn::new(
        "recorder",
        &[
            "receive",
            "--signal",
            &relay.url,
            "--room",
            "both",
            "--record",
            path.to_str().unwrap(),
        ],
    )
    .spawn();
    let mut p = publisher(&url, &["--signal", &relay.url, "--room", "both"]).spawn();
    p.wait_stderr("WHIP: publishing to").await;
    rx.wait_stderr("recording sender").await;
    let got = janus.watch(1234).await;
    assert_decoded(&p, &got, "video/VP8");
    rx.signal("INT");
    assert!(rx.wait_exit().await.success(), "{}", rx.stderr());
    crate::mediafile::inspect(&path).assert_valid("VP8", Some("Opus"), 5.0, FPS);
    // Encoded once: one encoder per layer, whatever the number of peers.
    assert_eq!(p.stderr_count("encoded once"), 1, "{}", p.stderr());
    p.signal("TERM");
    assert!(p.wait_exit().await.success(), "{}", p.stderr());
    janus.freed("both", Duration::from_secs(1)).await;
}
