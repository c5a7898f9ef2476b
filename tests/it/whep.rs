//! `p2p send --whep-listen`: real WHEP viewers not written in Rust
//! (headless Chromium, `fetch` from its page, recvonly audio and video)
//! watch the sender, beside the room's receivers, and decode what comes.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{http, page_lines, page_script_in, Proc, Relay, Spawn};
use crate::mediafile::{ffmpeg_errors, inspect};

/// `p2p send --test-source --whep-listen` with `extra` and `env`; its
/// WHEP URL (printed on stdout).
async fn sender(extra: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
    let mut args = vec!["send", "--test-source", "--whep-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut spawn = Spawn::new("whep-sender", &args);
    for (k, v) in env {
        spawn = spawn.env(k, v);
    }
    let mut p = spawn.spawn();
    let url = p.line().await;
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/whep"),
        "{url}"
    );
    (p, url)
}

/// The viewer page, run to its end: its JSON lines, which must say it
/// succeeded.
async fn watch(url: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec![url];
    all.extend_from_slice(args);
    page_lines("whep-watch-page.mjs", &all, "the viewer").await
}

/// Viewer `i`'s `event` line.
fn event<'a>(lines: &'a [Value], i: usize, name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["event"] == name && l["viewer"] == i)
        .unwrap_or_else(|| panic!("no {name} event of viewer {i} in {lines:?}"))
}

/// Viewer `i` decoded the test source's VP8 picture and Opus tone for
/// about `secs`, and ended its session.
fn assert_watched(lines: &[Value], i: usize, secs: f64) {
    let created = event(lines, i, "created");
    assert_eq!(created["status"], 201, "{created}");
    assert!(created["etag"].is_string(), "{created}");
    let done = event(lines, i, "done");
    eprintln!("viewer {i}: {done}");
    assert_eq!(done["videoCodec"], "video/VP8", "{done}");
    // The test source runs at 30 fps; a viewer that keeps up shows most.
    let least = 30.0 * secs * 0.6;
    assert!(done["framesDecoded"].as_f64().unwrap() >= least, "{done}");
    assert!(done["frames"].as_f64().unwrap() >= least, "{done}");
    assert!(done["height"].as_u64().unwrap() >= 120, "{done}");
    assert_eq!(done["audioCodec"], "audio/opus", "{done}");
    // The tone was heard: not silence, and not mostly concealment.
    let samples = done["audioSamples"].as_f64().unwrap();
    assert!(samples >= 48_000.0 * secs * 0.6, "{done}");
    assert!(done["audioEnergy"].as_f64().unwrap() > 0.0, "{done}");
    assert!(
        done["concealedSamples"].as_f64().unwrap() < samples / 4.0,
        "{done}"
    );
    assert_eq!(done["deleted"], 200, "{done}");
}

#[tokio::test]
async fn browsers_watch_the_sender_over_whep_while_the_room_records_it() {
    let relay = Relay::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut tx, url) = sender(
        &[
            "--signal",
            &relay.url,
            "--room",
            "wh",
            "--whep-token",
            "s3cret",
        ],
        &[],
    )
    .await;
    let path = dir.path().join("room.webm");
    let mut rx = Spawn::new(
        "recorder",
        &[
            "receive",
            "--signal",
            &relay.url,
            "--room",
            "wh",
            "--record",
            path.to_str().unwrap(),
        ],
    )
    .spawn();
    rx.wait_stderr("connected").await;

    // Two viewers at once, then one whose candidates are trickled.
    let lines = watch(
        &url,
        &["--viewers", "2", "--token", "s3cret", "--seconds", "5"],
    )
    .await;
    assert_watched(&lines, 0, 5.0);
    assert_watched(&lines, 1, 5.0);
    let lines = watch(&url, &["--trickle", "--token", "s3cret", "--seconds", "3"]).await;
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "patched" && l["status"] == 204),
        "{lines:?}"
    );
    assert_watched(&lines, 0, 3.0);
    tx.wait_stderr("2 watching").await;
    // Each DELETE said so (the last line may still be in the pipe).
    let ended = "a WHEP viewer ended its session";
    for _ in 0..100 {
        if tx.stderr_count(ended) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tx.stderr_count(ended), 3, "{}", tx.stderr());

    // The room's receiver recorded throughout.
    rx.signal("INT");
    assert!(rx.wait_exit().await.success(), "{}", rx.stderr());
    let report = inspect(&path);
    report.assert_valid("VP8", Some("Opus"), 8.0, 30.0);
    tx.signal("INT");
    assert!(tx.wait_exit().await.success(), "{}", tx.stderr());
}

#[tokio::test]
async fn whep_refuses_what_it_cannot_serve_in_one_line_and_serves_on() {
    // The token from the environment, as a service's unit file sets it.
    let (mut tx, url) = sender(&["--max-receivers", "1"], &[("P2P_WHEP_TOKEN", "t0ken")]).await;
    let path = format!(
        "/{}",
        url.trim_start_matches("http://").split_once('/').unwrap().1
    );
    let sdp = "Content-Type: application/sdp";
    let auth = "Authorization: Bearer t0ken";

    let (head, body) = http(&url, "POST", &path, &[sdp], "v=0\r\n").await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert!(body.contains("bearer token"), "{body}");
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
    // An offer that only sends (a publisher at the wrong door).
    let publisher = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n";
    let (head, body) = http(&url, "POST", &path, &[auth, sdp], publisher).await;
    assert!(head.starts_with("HTTP/1.1 422"), "{head}");
    assert!(body.contains("recvonly"), "{body}");
    let (head, _) = http(&url, "DELETE", &format!("{path}/nobody"), &[auth], "").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // A viewer that takes only H.264, from a sender of VP8: told which.
    let (ok, refused) = page_script_in(
        None,
        "whep-watch-page.mjs",
        &[&url, "--token", "t0ken", "--codec", "h264"],
        Duration::from_secs(90),
    )
    .await;
    assert!(!ok, "{refused}");
    assert_eq!(refused["status"], 422, "{refused}");
    let body = refused["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("video/VP8") && body.contains("video"),
        "{body}"
    );
    tx.wait_stderr("refused a WHEP viewer").await;

    // One place (--max-receivers 1): a second viewer waits its turn; a
    // viewer that vanishes without DELETE gives its place back.
    let page = format!(
        "{}/tests/browser/whep-watch-page.mjs",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut first = tokio::process::Command::new("node")
        .args([&page, &url, "--token", "t0ken", "--seconds", "60"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tx.wait_stderr("1 watching").await;
    let (head, body) = http(&url, "POST", &path, &[auth, sdp], publisher).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
    assert!(body.contains("--max-receivers"), "{body}");
    first.kill().await.unwrap();
    let killed = tokio::time::Instant::now();
    tx.wait_stderr("a WHEP viewer is gone").await;
    eprintln!(
        "place free {:?} after the viewer was killed",
        killed.elapsed()
    );
    let lines = watch(&url, &["--token", "t0ken", "--seconds", "2"]).await;
    assert_watched(&lines, 0, 2.0);
    tx.signal("INT");
    assert!(tx.wait_exit().await.success(), "{}", tx.stderr());
}

/// A WHEP server on aiortc (tests/aiortc/whep_server.py), an independent
/// WebRTC stack, serving a live test picture and tone. Killed when dropped.
struct Aiortc {
    child: tokio::process::Child,
    url: String,
    events: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Aiortc {
    async fn start(args: &[&str]) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let root = env!("CARGO_MANIFEST_DIR");
        let python = std::env::var("P2P_TEST_PYTHON")
            .unwrap_or_else(|_| format!("{root}/target/aiortc-venv/bin/python"));
        let mut child = tokio::process::Command::new(&python)
            .arg(format!("{root}/tests/aiortc/whep_server.py"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {python}: {e} (scripts/test.sh installs aiortc there)")
            });
        let mut events = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), events.next_line())
            .await
            .expect("the aiortc server did not start")
            .unwrap()
            .expect("the aiortc server exited");
        Self { child, url, events }
    }

    /// The next event named `name` it prints.
    async fn event(&mut self, name: &str) -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.events.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {name} event from the aiortc server"))
                .unwrap()
                .unwrap_or_else(|| panic!("the aiortc server exited before {name}"));
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if v["event"] == name {
                return v;
            }
        }
    }
}

impl Drop for Aiortc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn receive_whep(url: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["receive", "--whep", url];
    args.extend_from_slice(extra);
    Spawn::new("whep-viewer", &args).spawn()
}

#[tokio::test]
async fn receive_records_a_whep_stream_from_aiortc_and_exits_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Aiortc::start(&["--token", "tok", "--seconds", "6"]).await;
    let path = dir.path().join("whep.webm");
    let mut rx = receive_whep(
        &server.url,
        &["--whep-token", "tok", "--record", path.to_str().unwrap()],
    );
    server.event("connected").await;
    server.event("ended").await;
    // The stream's end is the session's: a clean exit, a file that plays.
    let status = tokio::time::timeout(Duration::from_secs(15), rx.wait_exit())
        .await
        .expect("the receiver did not exit when the stream ended");
    assert!(status.success(), "{}", rx.stderr());
    rx.wait_stderr("the WHEP stream ended").await;
    let report = inspect(&path);
    report.assert_valid("VP8", Some("Opus"), 4.5, 30.0);
    let errors = ffmpeg_errors(&path);
    assert!(errors.is_empty(), "ffmpeg: {errors}");
    eprintln!(
        "{:.1} s, {} video frames, {} audio buffers",
        report.duration, report.video_frames, report.audio_buffers
    );
}

#[tokio::test]
async fn receive_whep_says_what_is_wrong_in_one_line() {
    let server = Aiortc::start(&["--token", "tok"]).await;
    // No token, then a wrong one: each names the flag to fix.
    for (extra, want) in [
        (&[][..], "wants a token (401): pass --whep-token"),
        (
            &["--whep-token", "nope"][..],
            "refused the token (401): check --whep-token",
        ),
    ] {
        let mut rx = receive_whep(&server.url, extra);
        let status = tokio::time::timeout(Duration::from_secs(15), rx.wait_exit())
            .await
            .expect("a refused viewer must exit");
        assert!(!status.success());
        // The last line may still be on its way from the pipe.
        rx.wait_stderr(want).await;
    }
    // Nothing there.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/whep", l.local_addr().unwrap())
    };
    let mut rx = receive_whep(&gone, &[]);
    let status = tokio::time::timeout(Duration::from_secs(15), rx.wait_exit())
        .await
        .expect("a viewer of nothing must exit");
    assert!(!status.success());
    rx.wait_stderr("refused").await;
    assert!(rx.stderr().contains(&gone), "{}", rx.stderr());
}

#[tokio::test]
async fn receive_whep_records_p2p_send_whep_listen_until_the_sender_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (mut tx, url) = sender(&[], &[]).await;
    let path = dir.path().join("p2p.mkv");
    let mut rx = receive_whep(&url, &["--record", path.to_str().unwrap()]);
    rx.wait_stderr("recording sender whep").await;
    tx.wait_stderr("1 watching").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    tx.signal("INT");
    assert!(tx.wait_exit().await.success(), "{}", tx.stderr());
    let status = tokio::time::timeout(Duration::from_secs(20), rx.wait_exit())
        .await
        .expect("the viewer did not exit when the sender stopped");
    assert!(status.success(), "{}", rx.stderr());
    let report = inspect(&path);
    report.assert_valid("VP8", Some("Opus"), 3.0, 30.0);
}
