//! Faults a broadcaster meets unattended: the relay restarting, a sender
//! crashing and coming back, a recording path that stops being writable.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::mediafile::inspect;

const CHANNEL: &str = r#""event":"channel""#;
const CONNECT: &str = r#""event":"connect""#;

fn peer(relay_url: &str, cmd: &str, room: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        cmd, "--signal", relay_url, "--room", room, "--events", "json",
    ];
    args.extend_from_slice(extra);
    Spawn::new(cmd, &args).spawn()
}

#[tokio::test]
async fn a_relay_restart_keeps_sessions_flowing_and_lets_new_receivers_in() {
    let mut relay = Relay::start(&[]).await;
    let port = relay.port();
    let url = relay.url.clone();
    let mut rx = peer(&url, "receive", "restart", &[]);
    let mut tx = peer(&url, "send", "restart", &[]);
    wait_count(&tx, CHANNEL, 1).await;
    tx.write_stdin(b"one\n").await;
    assert_eq!(rx.line().await, "one");

    relay.proc.child.kill().await.unwrap();
    // Peer to peer: no relay needed for what is already connected.
    tx.write_stdin(b"two\n").await;
    assert_eq!(rx.line().await, "two");

    let _relay = Relay::start_on(&format!("127.0.0.1:{port}"), &[]).await;
    tx.wait_stderr("reconnected to the relay").await;
    let mut late = peer(&url, "receive", "restart", &[]);
    wait_count(&tx, CHANNEL, 2).await;
    tx.write_stdin(b"three\n").await;
    assert_eq!(rx.line().await, "three");
    assert_eq!(late.line().await, "three");
}

#[tokio::test]
async fn a_crashed_sender_is_replaced_and_its_recording_finalised() {
    let relay = Relay::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cam.webm");
    let mut rx = peer(
        &relay.url,
        "receive",
        "crash",
        &["--record", path.to_str().unwrap(), "--ping-interval", "1"],
    );
    let mut first = peer(&relay.url, "send", "crash", &["--test-source"]);
    rx.wait_stderr(r#""event":"keyframe""#).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    first.child.kill().await.unwrap();
    let killed = Instant::now();

    // The old peer is disposed when ICE notices; its file stays open a
    // while in case the sender comes back.
    wait_count(&rx, r#""event":"dispose""#, 1).await;
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "took {:?}",
        killed.elapsed()
    );
    rx.wait_stderr("stays open").await;

    // The restarted sender (a new id) is found again without user action,
    // into a new file.
    let _second = peer(&relay.url, "send", "crash", &["--test-source"]);
    wait_count(&rx, CONNECT, 2).await;
    wait_count(&rx, r#""event":"keyframe""#, 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rx.signal("INT");
    assert!(rx.wait_exit().await.success());
    assert!(
        rx.stderr().contains(&format!("saved {}", path.display())),
        "{}",
        rx.stderr()
    );
    inspect(&path).assert_valid("VP8", Some("Opus"), 3.5, 30.0);
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| *p != path)
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    inspect(&files[0]).assert_valid("VP8", Some("Opus"), 2.5, 30.0);
}

#[tokio::test]
async fn a_record_path_that_fails_later_is_reported_and_data_keeps_flowing() {
    let relay = Relay::start(&[]).await;
    // A directory missing at start is refused at once (cli.rs); this one is
    // there when the receiver starts and gone when the sender arrives.
    let tmp = tempfile::tempdir().unwrap();
    let gone = tmp.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let path = gone.join("out.webm");
    let mut rx = peer(
        &relay.url,
        "receive",
        "nodisk",
        &["--record", path.to_str().unwrap()],
    );
    rx.wait_stderr("connected to the relay").await;
    std::fs::remove_dir(&gone).unwrap();
    let mut tx = peer(&relay.url, "send", "nodisk", &["--test-source", "--data"]);
    wait_count(&tx, CHANNEL, 1).await;
    rx.wait_stderr("cannot record").await;
    tx.write_stdin(b"still delivered\n").await;
    assert_eq!(rx.line().await, "still delivered");
    assert!(rx.child.try_wait().unwrap().is_none(), "receiver died");
    let line = rx
        .stderr()
        .lines()
        .find(|l| l.contains("cannot record"))
        .unwrap()
        .to_owned();
    assert!(
        line.contains(path.to_str().unwrap()),
        "the error names the path: {line}"
    );
}

/// A receiver suspended for 30 s (a laptop's lid closed, SIGSTOP here)
/// comes back to a sender that gave its connection up meanwhile: it is
/// told, gets a new connection within seconds, and its recording goes on
/// in the same file, the 30 s a gap in it. Text written after the wake
/// arrives.
#[tokio::test]
async fn a_receiver_suspended_for_thirty_seconds_comes_back_to_the_same_recording() {
    let relay = Relay::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lid.webm");
    let mut rx = peer(
        &relay.url,
        "receive",
        "lid",
        &["--record", path.to_str().unwrap()],
    );
    let mut tx = peer(&relay.url, "send", "lid", &["--test-source", "--data"]);
    rx.wait_stderr(r#""event":"keyframe""#).await;
    wait_count(&tx, CHANNEL, 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    rx.signal("STOP");
    tokio::time::sleep(Duration::from_secs(30)).await;
    rx.signal("CONT");
    let woke = Instant::now();
    rx.wait_stderr("recording goes on in").await;
    wait_count(&tx, CHANNEL, 2).await;
    let back = woke.elapsed();
    eprintln!("new connection {:.1} s after the wake", back.as_secs_f64());
    // Issue 27's bound (measured: 0.2 s; the old connection failed while
    // the receiver slept, and it is made anew at once).
    assert!(
        back <= Duration::from_secs(5),
        "back only {back:?} after the wake:\n{}",
        rx.stderr()
    );
    tx.write_stdin(b"after the lid\n").await;
    while rx.line().await != "after the lid" {}
    tokio::time::sleep(Duration::from_secs(3)).await;
    rx.signal("INT");
    assert!(rx.wait_exit().await.success(), "receiver exit status");

    let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files, vec![path.clone()], "one recording");
    inspect(&path).assert_goes_on_after_a_gap(33.0, 2.0);
}
