//! End of stream: a pipe through p2p ends when its data ends. The sender
//! closes each receiver's channel behind its last message and leaves once
//! the receiver has taken everything; the receiver writes the last byte and
//! exits once its senders' channels have ended. Real binaries, a real relay,
//! real webrtc-rs peers on this machine.

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::harness::*;

const CHANNEL: &str = r#""event":"channel""#;

/// `n` incompressible bytes, different for each `seed`.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15 ^ seed;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn binary_receiver(relay: &Relay, room: &str) -> Proc {
    Spawn::new(
        "receiver",
        &[
            "receive", "--signal", &relay.url, "--room", room, "--binary", "--events", "json",
        ],
    )
    .raw_stdout()
    .spawn()
}

fn sender(relay: &Relay, room: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "send", "--signal", &relay.url, "--room", room, "--events", "json",
    ];
    args.extend_from_slice(extra);
    Spawn::new("sender", &args).spawn()
}

/// Everything `p` writes on stdout until it closes it.
async fn read_to_end(p: &mut Proc) -> Vec<u8> {
    let mut out = p.child.stdout.take().expect("raw stdout");
    let mut got = Vec::new();
    if tokio::time::timeout(WAIT * 3, out.read_to_end(&mut got))
        .await
        .is_err()
    {
        p.fail(&format!("stdout still open after {} bytes", got.len()));
    }
    got
}

/// Writes `data` to `p`'s stdin from a task, then closes it (EOF).
fn feed(p: &mut Proc, data: Vec<u8>) -> tokio::task::JoinHandle<()> {
    let mut stdin = p.stdin.take().expect("stdin open");
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(&data).await;
    })
}

#[tokio::test]
async fn one_sender_to_three_receivers_every_byte_then_everyone_exits() {
    let relay = Relay::start(&[]).await;
    let mut receivers: Vec<Proc> = (0..3).map(|_| binary_receiver(&relay, "eos1")).collect();
    let mut tx = sender(&relay, "eos1", &["--binary"]);
    wait_count(&tx, CHANNEL, 3).await;
    let data = noise(3 * 1024 * 1024 + 17, 1);
    let want = Sha256::digest(&data);
    let writer = feed(&mut tx, data);

    // Two read at once; the third's reader stops for a while first, so the
    // end of the stream finds its data still queued in its process.
    let mut slow = receivers.pop().unwrap();
    let mut fast = Vec::new();
    for mut rx in receivers {
        fast.push(tokio::spawn(async move {
            let got = read_to_end(&mut rx).await;
            (rx, got)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let got = read_to_end(&mut slow).await;
    assert_eq!(
        got.len(),
        3 * 1024 * 1024 + 17,
        "slow receiver's byte count"
    );
    assert_eq!(Sha256::digest(&got), want, "slow receiver's bytes differ");
    for f in fast {
        let (mut rx, got) = f.await.unwrap();
        assert_eq!(Sha256::digest(&got), want, "{} bytes differ", got.len());
        let status = rx.wait_exit().await;
        assert!(status.success(), "receiver exited with {status}");
    }
    let status = slow.wait_exit().await;
    assert!(status.success(), "slow receiver exited with {status}");
    writer.await.unwrap();
    let status = tx.wait_exit().await;
    assert!(
        status.success(),
        "sender exited with {status}:\n{}",
        tx.stderr()
    );
}

#[tokio::test]
async fn a_receiver_of_two_senders_ends_after_both_with_every_line() {
    let relay = Relay::start(&[]).await;
    let mut rx = Spawn::new(
        "receiver",
        &[
            "receive", "--signal", &relay.url, "--room", "eos2", "--once", "--events", "json",
        ],
    )
    .spawn();
    let mut a = sender(&relay, "eos2", &[]);
    let mut b = sender(&relay, "eos2", &[]);
    wait_count(&a, CHANNEL, 1).await;
    wait_count(&b, CHANNEL, 1).await;
    let lines = |who: &str| -> String { (0..500).map(|i| format!("{who} {i}\n")).collect() };
    let wa = feed(&mut a, lines("a").into_bytes());
    let wb = feed(&mut b, lines("b").into_bytes());

    // Each sender's lines in its own order, all of them, then the end.
    let (mut next_a, mut next_b) = (0, 0);
    while next_a < 500 || next_b < 500 {
        let line = rx.line().await;
        match line.split_once(' ') {
            Some(("a", n)) => {
                assert_eq!(n.parse::<usize>().unwrap(), next_a, "a's order");
                next_a += 1;
            }
            Some(("b", n)) => {
                assert_eq!(n.parse::<usize>().unwrap(), next_b, "b's order");
                next_b += 1;
            }
            _ => rx.fail(&format!("unexpected line {line:?}")),
        }
    }
    wa.await.unwrap();
    wb.await.unwrap();
    for s in [&mut a, &mut b] {
        let status = s.wait_exit().await;
        assert!(status.success(), "sender exited with {status}");
    }
    let status = rx.wait_exit().await;
    assert!(status.success(), "receiver exited with {status}");
    assert!(
        tokio::time::timeout(
            std::time::Duration::from_millis(100),
            rx.stdout_lines.recv()
        )
        .await
        .is_ok_and(|l| l.is_none()),
        "more on stdout after both streams"
    );
}

#[tokio::test]
async fn a_sender_killed_mid_stream_makes_the_receiver_fail_and_say_so() {
    let relay = Relay::start(&[]).await;
    let mut rx = binary_receiver(&relay, "eos3");
    let mut tx = sender(&relay, "eos3", &["--binary"]);
    wait_count(&tx, CHANNEL, 1).await;
    // stdin stays open: the stream has not ended when the sender dies.
    tx.write_stdin(&noise(64 * 1024, 3)).await;
    let mut out = rx.child.stdout.take().unwrap();
    let mut got = vec![0u8; 64 * 1024];
    tokio::time::timeout(WAIT, out.read_exact(&mut got))
        .await
        .expect("the first bytes did not arrive")
        .unwrap();
    assert_eq!(got, noise(64 * 1024, 3), "bytes before the kill");
    tx.child.kill().await.unwrap();

    let status = tokio::time::timeout(WAIT * 2, rx.child.wait())
        .await
        .unwrap_or_else(|_| rx.fail("the receiver did not end after its sender was killed"))
        .unwrap();
    assert!(!status.success(), "receiver exited with {status}");
    let err = rx.stderr();
    assert!(
        err.contains("incomplete"),
        "the receiver did not say its output is incomplete:\n{err}"
    );
}

#[tokio::test]
async fn a_receiver_that_joins_after_stdin_ended_still_gets_it() {
    let relay = Relay::start(&[]).await;
    let mut tx = sender(&relay, "eos4", &[]);
    tx.write_stdin(b"one\ntwo\nthree\n").await;
    tx.close_stdin();
    tx.wait_stderr("waiting for a receiver").await;
    let mut rx = Spawn::new(
        "receiver",
        &[
            "receive", "--signal", &relay.url, "--room", "eos4", "--once", "--events", "json",
        ],
    )
    .spawn();
    for want in ["one", "two", "three"] {
        assert_eq!(rx.line().await, want);
    }
    let status = tx.wait_exit().await;
    assert!(status.success(), "sender exited with {status}");
    let status = rx.wait_exit().await;
    assert!(status.success(), "receiver exited with {status}");
}

#[tokio::test]
async fn a_file_sent_from_a_terminal_shows_how_far_it_is() {
    let relay = Relay::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    let data = noise(60 * 1000 * 1000, 5);
    std::fs::write(&file, &data).unwrap();
    let mut rx = binary_receiver(&relay, "eos5");
    // `script` gives the sender a terminal for stderr, as a user's shell would.
    let typescript = dir.path().join("typescript");
    // A wide terminal: the status line is cut at the terminal's width.
    let cmd = format!(
        "stty rows 50 cols 200; {BIN} send --signal {} --room eos5 --binary < {}",
        relay.url,
        file.display()
    );
    let mut tx = tokio::process::Command::new("script")
        .args(["-qfec", &cmd])
        .arg(&typescript)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run script(1)");
    // The receiver reads nothing for a while: the sender is part way.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let got = read_to_end(&mut rx).await;
    assert_eq!(Sha256::digest(&got), Sha256::digest(&data), "bytes differ");
    let status = tokio::time::timeout(WAIT, tx.wait())
        .await
        .expect("the sender did not exit")
        .unwrap();
    assert!(status.success(), "sender exited with {status}");
    let screen = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    assert!(
        screen.contains("of 60.0 MB (") && screen.contains(" left"),
        "no progress with a total and the time left on the terminal:\n{screen}"
    );
}
