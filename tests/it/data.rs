//! Text and bytes piped through `p2p send` → `p2p receive`: real binaries,
//! a real relay, real webrtc-rs peers on this machine.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::harness::*;

const CHANNEL: &str = r#""event":"channel""#;
const DISPOSE: &str = r#""event":"dispose""#;

fn sender(relay: &Relay, room: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "send", "--signal", &relay.url, "--room", room, "--events", "json",
    ];
    args.extend_from_slice(extra);
    Spawn::new("sender", &args).spawn()
}

fn receiver(relay: &Relay, room: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "receive", "--signal", &relay.url, "--room", room, "--events", "json",
    ];
    args.extend_from_slice(extra);
    Spawn::new("receiver", &args).spawn()
}

#[tokio::test]
async fn a_thousand_lines_reach_three_receivers_in_order() {
    let relay = Relay::start(&[]).await;
    let mut receivers: Vec<Proc> = (0..3).map(|_| receiver(&relay, "lines", &[])).collect();
    let mut tx = sender(&relay, "lines", &[]);
    wait_count(&tx, CHANNEL, 3).await;
    let text: String = (0..1000).map(|i| format!("line {i} ✓\n")).collect();
    tx.write_stdin(text.as_bytes()).await;
    tx.close_stdin();
    for rx in &mut receivers {
        for i in 0..1000 {
            let line = rx.line().await;
            assert_eq!(line, format!("line {i} ✓"), "receiver {}", rx.name);
        }
    }
    // The sender leaves once everything is delivered; receivers see it go.
    let status = tx.wait_exit().await;
    assert!(status.success(), "sender exited with {status}");
    for rx in &receivers {
        rx.wait_stderr(DISPOSE).await;
    }
}

#[tokio::test]
async fn late_receivers_and_late_senders_find_each_other() {
    let relay = Relay::start(&[]).await;
    // Sender first; a receiver joins later.
    let mut tx = sender(&relay, "late", &[]);
    tx.write_stdin(b"before anyone\n").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut rx = receiver(&relay, "late", &["--ping-interval", "0.5"]);
    // Nobody was there: the seed's queue keeps the message for the first
    // receiver.
    assert_eq!(rx.line().await, "before anyone");
    tx.write_stdin(b"hello\n").await;
    assert_eq!(rx.line().await, "hello");

    // Receivers first; a sender joins later. This pair takes its settings
    // from the environment, as a user's shell profile would give them.
    let mut rx2 = Spawn::new(
        "receiver",
        &["receive", "--events", "json", "--ping-interval", "0.5"],
    )
    .env("P2P_SIGNAL", &relay.url)
    .env("P2P_ROOM", "late2")
    .spawn();
    rx2.wait_stderr(r#""event":"start""#).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut tx2 = Spawn::new("sender", &["send", "--events", "json"])
        .env("P2P_SIGNAL", &relay.url)
        .env("P2P_ROOM", "late2")
        .spawn();
    wait_count(&tx2, CHANNEL, 1).await;
    tx2.write_stdin(b"late sender\n").await;
    assert_eq!(rx2.line().await, "late sender");
}

#[tokio::test]
async fn a_receiver_that_fails_verify_gets_nothing() {
    let relay = Relay::start(&[]).await;
    let mut good = receiver(&relay, "v", &["--credentials", "letmein"]);
    // As the seed library's Receiver sends them: in plain.
    let mut plain = receiver(
        &relay,
        "v",
        &["--credentials", "letmein", "--plain-credentials"],
    );
    let mut bad = receiver(&relay, "v", &["--credentials", "guess"]);
    let mut none = receiver(&relay, "v", &[]);
    let mut tx = sender(&relay, "v", &["--verify", "letmein"]);
    wait_count(&tx, CHANNEL, 2).await;
    wait_count(&tx, "credentials rejected", 2).await;
    tx.write_stdin(b"secret line\n").await;
    assert_eq!(good.line().await, "secret line");
    assert_eq!(plain.line().await, "secret line");
    tx.close_stdin();
    tx.wait_exit().await;
    for rx in [&mut bad, &mut none] {
        let got = tokio::time::timeout(Duration::from_millis(500), rx.stdout_lines.recv()).await;
        assert!(
            !matches!(got, Ok(Some(_))),
            "rejected receiver got data: {got:?}"
        );
        assert!(
            !rx.stderr().contains(r#""event":"connect""#),
            "rejected receiver connected"
        );
    }
    assert!(
        !tx.stderr().contains("letmein"),
        "credentials leaked into logs"
    );
}

#[tokio::test]
async fn binary_data_arrives_byte_exact_with_bounded_sender_memory() {
    use tokio::io::AsyncReadExt;
    let relay = Relay::start(&[]).await;
    let mut rx = Spawn::new(
        "receiver",
        &[
            "receive", "--signal", &relay.url, "--room", "bin", "--binary",
        ],
    )
    .raw_stdout()
    .spawn();
    let mut tx = sender(&relay, "bin", &["--binary"]);

    // 50 MB of incompressible bytes.
    let mut data = vec![0u8; 50 * 1024 * 1024];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let want = Sha256::digest(&data);
    let mut stdin = tx.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(&data).await.unwrap();
        // dropped: EOF
    });

    // Read a little, then pause the receiver's stdout for a while: the
    // sender must wait, not buffer the whole input.
    let mut out = rx.child.stdout.take().unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while got.len() < 1 << 20 {
        let n = tokio::time::timeout(WAIT, out.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "receiver stdout ended early");
        got.extend_from_slice(&buf[..n]);
    }
    let base = vm_kib(tx.child.id().unwrap(), "VmRSS:");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let paused = vm_kib(tx.child.id().unwrap(), "VmRSS:");
    tokio::time::timeout(WAIT * 3, out.read_to_end(&mut got))
        .await
        .expect("receiver did not finish")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), 50 * 1024 * 1024, "byte count");
    assert_eq!(Sha256::digest(&got), want, "SHA-256 differs");
    let peak = vm_kib(tx.child.id().unwrap_or(0), "VmHWM:");
    // Holding the input would take 50 MB on top of the base.
    assert!(
        paused < base + 20 * 1024,
        "sender grew from {base} KiB to {paused} KiB while the receiver was paused"
    );
    let _ = peak;
    assert!(rx.wait_exit().await.success(), "receiver exit status");
    assert!(tx.wait_exit().await.success(), "sender exit status");
}

#[tokio::test]
async fn sender_disposes_killed_and_leaving_receivers_and_serves_the_rest() {
    let relay = Relay::start(&[]).await;
    let mut keep = receiver(&relay, "k", &[]);
    let mut killed = receiver(&relay, "k", &[]);
    let leaving = receiver(&relay, "k", &[]);
    let mut tx = sender(&relay, "k", &[]);
    wait_count(&tx, CHANNEL, 3).await;

    // A clean leave is seen within a second.
    leaving.signal("INT");
    let start = std::time::Instant::now();
    wait_count(&tx, DISPOSE, 1).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );

    // SIGKILL: the sender notices through ICE and disposes.
    killed.child.kill().await.unwrap();
    wait_count(&tx, DISPOSE, 2).await;
    assert!(tx.child.try_wait().unwrap().is_none(), "sender died");

    tx.write_stdin(b"still here\n").await;
    assert_eq!(keep.line().await, "still here");
}

#[tokio::test]
async fn receiver_exits_cleanly_on_broken_pipe_and_sigterm() {
    let relay = Relay::start(&[]).await;
    // `p2p receive | head -1`: stdout closes after one line.
    let sh = format!(
        "{BIN} receive --signal {} --room bp | head -n 1; echo \"status=${{PIPESTATUS[0]}}\"",
        relay.url
    );
    let mut pipeline = tokio::process::Command::new("bash")
        .args(["-c", &sh])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut tx = sender(&relay, "bp", &[]);
    wait_count(&tx, CHANNEL, 1).await;
    tx.write_stdin(b"first\nsecond\nthird\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.write_stdin(b"more\n").await;
    let mut out = String::new();
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(
        WAIT,
        pipeline.stdout.take().unwrap().read_to_string(&mut out),
    )
    .await
    .expect("pipeline did not end")
    .unwrap();
    assert_eq!(out, "first\nstatus=0\n");

    let mut rx = receiver(&relay, "bp", &[]);
    wait_count(&tx, CHANNEL, 2).await;
    rx.signal("TERM");
    assert!(rx.wait_exit().await.success());
    // We left; the sender did not.
    assert!(
        !rx.stderr().contains(" left"),
        "the receiver says its sender left:
{}",
        rx.stderr()
    );
}

#[tokio::test]
async fn events_say_which_sender_sent_what() {
    let relay = Relay::start(&[]).await;
    let mut rx = receiver(&relay, "two", &[]);
    let mut a = sender(&relay, "two", &["--state", r#"{"nickname":"a"}"#]);
    let mut b = sender(&relay, "two", &["--state", r#"{"nickname":"b"}"#]);
    wait_count(&a, CHANNEL, 1).await;
    wait_count(&b, CHANNEL, 1).await;
    a.write_stdin(b"from a\n").await;
    b.write_stdin(b"from b\n").await;
    let mut lines = vec![rx.line().await, rx.line().await];
    lines.sort();
    assert_eq!(lines, ["from a", "from b"]);
    let id_of = |p: &Proc| -> String {
        let start = p
            .stderr()
            .lines()
            .find(|l| l.contains(r#""event":"start""#))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .unwrap();
        start["id"].as_str().unwrap().to_owned()
    };
    let (ida, idb) = (id_of(&a), id_of(&b));
    rx.wait_stderr("from b").await;
    let events: Vec<serde_json::Value> = rx
        .stderr()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let msg_from = |text: &str| {
        events
            .iter()
            .find(|e| e["event"] == "message" && e["message"] == text)
            .map(|e| e["id"].as_str().unwrap().to_owned())
    };
    assert_eq!(msg_from("from a"), Some(ida.clone()));
    assert_eq!(msg_from("from b"), Some(idb));
    // The state came with the offer.
    assert!(events.iter().any(|e| e["event"] == "connect"
        && e["id"] == ida.as_str()
        && e["state"]["nickname"] == "a"));
    a.close_stdin();
    b.close_stdin();
}

#[tokio::test]
async fn state_file_changes_reach_receivers_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    std::fs::write(&path, r#"{"nickname":"cam","video":true}"#).unwrap();
    let relay = Relay::start(&[]).await;
    let rx = receiver(&relay, "hup", &[]);
    let tx = sender(&relay, "hup", &["--state-file", path.to_str().unwrap()]);
    wait_count(&tx, CHANNEL, 1).await;
    std::fs::write(&path, r#"{"nickname":"cam","video":false}"#).unwrap();
    tx.signal("HUP");
    rx.wait_stderr(r#""event":"sync""#).await;
    let sync: serde_json::Value = rx
        .stderr()
        .lines()
        .find(|l| l.contains(r#""event":"sync""#))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    assert_eq!(sync["state"]["video"], false, "{sync}");
}

#[tokio::test]
async fn ctrl_c_stops_a_sender_whose_stdin_is_still_open() {
    let relay = Relay::start(&[]).await;
    for extra in [&[][..], &["--test-source", "--data"][..]] {
        let rx = receiver(&relay, "open", &[]);
        let mut tx = sender(&relay, "open", extra);
        wait_count(&tx, CHANNEL, 1).await;
        // stdin stays open (a terminal, `tail -f`): Ctrl-C must still end it.
        let start = std::time::Instant::now();
        tx.signal("INT");
        let status = tx.wait_exit().await;
        assert!(status.success(), "{status}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "took {:?}",
            start.elapsed()
        );
        rx.wait_stderr(DISPOSE).await;
    }
}

#[tokio::test]
async fn to_sends_to_one_receiver_only() {
    let relay = Relay::start(&[]).await;
    let mut chosen = receiver(&relay, "to", &[]);
    let mut other = receiver(&relay, "to", &[]);
    chosen.wait_stderr(r#""event":"start""#).await;
    let id = chosen
        .stderr()
        .lines()
        .find(|l| l.contains(r#""event":"start""#))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .unwrap();
    let mut tx = sender(&relay, "to", &["--to", &id]);
    wait_count(&tx, CHANNEL, 2).await;
    tx.write_stdin(b"just for you\n").await;
    assert_eq!(chosen.line().await, "just for you");
    let got = tokio::time::timeout(Duration::from_millis(500), other.stdout_lines.recv()).await;
    assert!(
        !matches!(got, Ok(Some(_))),
        "the other receiver got {got:?}"
    );
    tx.close_stdin();
    assert!(tx.wait_exit().await.success());
}

#[tokio::test]
async fn a_relay_given_as_host_and_port_is_reached_over_ws() {
    // `--signal 127.0.0.1:PORT`, as a user types it: no scheme.
    let relay = Relay::start(&[]).await;
    let bare = format!("127.0.0.1:{}", relay.port());
    let mut rx = in_room("receiver", "receive", &bare, "bare", &[]).spawn();
    let mut tx = in_room("sender", "send", &bare, "bare", &[]).spawn();
    tx.wait_stderr(CHANNEL).await;
    tx.write_stdin(b"no scheme needed\n").await;
    assert_eq!(rx.line().await, "no scheme needed");
    tx.close_stdin();
    assert!(tx.wait_exit().await.success());
}
