//! Signaling over a real `nats-server`, end-to-end encryption, and relays
//! bridged through NATS.

use std::time::Duration;

use futures_util::StreamExt;

use crate::harness::*;

const CHANNEL: &str = r#""event":"channel""#;

/// A `nats-server` on a free loopback port, killed on drop.
pub struct Nats {
    pub child: tokio::process::Child,
    pub port: u16,
}

fn nats_binary() -> String {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
    {
        let p = format!("{dir}/nats-server");
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    panic!("nats-server not found: scripts/install-deps.sh installs it");
}

impl Nats {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port).await
    }

    pub async fn start_on(port: u16) -> Self {
        let child = tokio::process::Command::new(nats_binary())
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, port }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

fn peer(cmd: &str, signal: &str, room: &str, extra: &[&str]) -> Proc {
    let mut args = vec![cmd, "--signal", signal, "--room", room, "--events", "json"];
    args.extend_from_slice(extra);
    Spawn::new(cmd, &args).spawn()
}

/// Lines through a sender and a receiver, both on `signal`.
async fn lines_through(signal: &str, room: &str, extra: &[&str], n: usize) {
    let mut rx = peer("receive", signal, room, extra);
    let mut tx = peer("send", signal, room, extra);
    wait_count(&tx, CHANNEL, 1).await;
    let text: String = (0..n).map(|i| format!("msg {i}\n")).collect();
    tx.write_stdin(text.as_bytes()).await;
    for i in 0..n {
        assert_eq!(rx.line().await, format!("msg {i}"));
    }
}

#[tokio::test]
async fn data_over_nats_with_and_without_secret_shows_the_broker_nothing() {
    let nats = Nats::start().await;
    // A plain subscriber on everything, as a curious broker would be.
    let spy = async_nats::connect(nats.url()).await.unwrap();
    let mut all = spy.subscribe(">").await.unwrap();
    spy.flush().await.unwrap();

    lines_through(&nats.url(), "plainroom", &[], 100).await;
    lines_through(&nats.url(), "secretroom", &["--secret", "hunter2"], 100).await;

    let mut subjects = Vec::new();
    let mut bodies = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(300), all.next()).await {
        subjects.push(msg.subject.to_string());
        bodies.push(msg.payload.to_vec());
    }
    assert!(
        subjects.len() > 4,
        "the spy saw {} messages",
        subjects.len()
    );
    for s in &subjects {
        assert!(
            s.len() == 64
                && s.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "subject is not a lowercase hex hash: {s}"
        );
    }
    let as_text: Vec<String> = bodies
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    // Without a secret the SDP is visible; with one, nothing is.
    assert!(
        as_text.iter().any(|t| t.contains("\"sdp\"")),
        "no plain message seen"
    );
    let secret_bodies: Vec<&String> = as_text
        .iter()
        .filter(|t| serde_json::from_str::<serde_json::Value>(t).is_err())
        .collect();
    assert!(!secret_bodies.is_empty(), "no sealed message seen");
    for t in secret_bodies {
        for word in ["secretroom", "sdp", "candidate", "invoke"] {
            assert!(!t.contains(word), "plaintext {word:?} in a sealed body");
        }
    }
    assert!(
        !as_text.iter().any(|t| t.contains("secretroom")),
        "the secret room's name leaked"
    );
}

#[tokio::test]
async fn a_wrong_secret_never_connects_and_both_keep_running() {
    let nats = Nats::start().await;
    // The receiver first: the sender's announcement reaches it, and its
    // pings reach the sender; neither can read the other.
    let mut rx = peer(
        "receive",
        &nats.url(),
        "w",
        &["--secret", "wrong", "--ping-interval", "0.5"],
    );
    rx.wait_stderr(r#""event":"start""#).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tx = peer("send", &nats.url(), "w", &["--secret", "right"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for p in [&tx, &rx] {
        assert!(
            !p.stderr().contains(r#""event":"connect""#),
            "{} connected",
            p.name
        );
    }
    rx.wait_stderr("did not decrypt").await;
    tx.wait_stderr("did not decrypt").await;
    assert!(tx.child.try_wait().unwrap().is_none(), "sender died");
    assert!(rx.child.try_wait().unwrap().is_none(), "receiver died");
    for p in [&tx, &rx] {
        for word in ["right", "wrong"] {
            assert!(
                !p.stderr().contains(&format!("\"{word}\"")),
                "the secret appears in the logs"
            );
        }
    }
    // The right secret still works in the same room.
    let mut good = peer("receive", &nats.url(), "w", &["--secret", "right"]);
    wait_count(&tx, CHANNEL, 1).await;
    tx.write_stdin(b"only for the right secret\n").await;
    assert_eq!(good.line().await, "only for the right secret");
    let nothing = tokio::time::timeout(Duration::from_millis(300), rx.stdout_lines.recv()).await;
    assert!(!matches!(nothing, Ok(Some(_))), "wrong secret got data");
}

#[tokio::test]
async fn secret_over_a_relay_hides_the_room_from_it() {
    let relay = Relay::start(&["-v"]).await;
    lines_through(&relay.url, "hiddenroom", &["--secret", "s3"], 20).await;
    let log = relay.proc.stderr();
    assert!(!log.contains("hiddenroom"), "relay saw the room name");
}

#[tokio::test]
async fn two_relays_bridged_by_nats_share_a_room() {
    let nats = Nats::start().await;
    let a = Relay::start(&["--nats", &nats.url()]).await;
    let b = Relay::start(&["--nats", &nats.url()]).await;
    let mut receivers: Vec<Proc> = (0..2)
        .map(|_| peer("receive", &b.url, "bridged", &[]))
        .collect();
    let mut tx = peer("send", &a.url, "bridged", &[]);
    wait_count(&tx, CHANNEL, 2).await;
    let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    tx.write_stdin(text.as_bytes()).await;
    for rx in &mut receivers {
        for i in 0..1000 {
            assert_eq!(rx.line().await, format!("line {i}"));
        }
    }
}

#[tokio::test]
async fn a_verified_receiver_proves_its_credentials_across_bridged_relays() {
    // The proof is bound to the receiver's connection on relay b; the
    // sender on relay a sees no `from` (it crossed NATS) and checks the
    // proof against the stamp the receiver names.
    let nats = Nats::start().await;
    let a = Relay::start(&["--nats", &nats.url()]).await;
    let b = Relay::start(&["--nats", &nats.url()]).await;
    let mut rx = peer(
        "receive",
        &b.url,
        "proved",
        &["--credentials", "open sesame"],
    );
    let mut tx = peer("send", &a.url, "proved", &["--verify", "open sesame"]);
    wait_count(&tx, CHANNEL, 1).await;
    tx.write_stdin(b"across\n").await;
    assert_eq!(rx.line().await, "across");
}

#[tokio::test]
async fn two_relays_bridged_by_nats_pass_data_byte_for_byte() {
    let nats = Nats::start().await;
    let spy = async_nats::connect(nats.url()).await.unwrap();
    let mut all = spy.subscribe(">").await.unwrap();
    spy.flush().await.unwrap();
    let a = Relay::start(&["--nats", &nats.url()]).await;
    let b = Relay::start(&["--nats", &nats.url()]).await;
    let ns = ["receiver", "exact"];
    let mut rx = WsClient::connect(&b.url).await;
    rx.on(&ns).await;
    let mut tx = WsClient::connect(&a.url).await;

    // Relay b subscribes on NATS once rx's `on` is in; until then what a
    // publishes reaches nobody. Ping until one crosses.
    let ping = serde_json::json!("ping");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ping crossed from relay a to relay b"
        );
        tx.emit(&ns, ping.clone()).await;
        if rx.recv_within(Duration::from_millis(200)).await.is_some() {
            break;
        }
    }
    let (emit, message) = unusual_frames(&ns);
    tx.send_text(&emit).await;
    let got = loop {
        let text = rx.recv_text().await;
        if !text.ends_with(r#""data":"ping"}"#) {
            break text;
        }
    };
    // Without a `from`: nobody vouches for who published on NATS.
    assert_eq!(got, message);

    // On NATS itself, the body is `data` as it was emitted.
    let body = loop {
        let msg = tokio::time::timeout(WAIT, all.next())
            .await
            .expect("nothing more on NATS")
            .expect("spy subscription ended");
        if msg.payload.as_ref() != br#""ping""# {
            break msg.payload;
        }
    };
    assert_eq!(std::str::from_utf8(&body).unwrap(), UNUSUAL_DATA);
}

#[tokio::test]
async fn sessions_survive_a_nats_restart_and_new_receivers_join_after() {
    let mut nats = Nats::start().await;
    let port = nats.port;
    let url = nats.url();
    let mut rx = peer("receive", &url, "r", &[]);
    let mut tx = peer("send", &url, "r", &[]);
    wait_count(&tx, CHANNEL, 1).await;
    tx.write_stdin(b"before\n").await;
    assert_eq!(rx.line().await, "before");

    nats.child.kill().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Peer to peer: the data keeps flowing without the broker.
    tx.write_stdin(b"during\n").await;
    assert_eq!(rx.line().await, "during");

    let _nats = Nats::start_on(port).await;
    tx.wait_stderr("reconnected to NATS").await;
    let mut late = peer("receive", &url, "r", &[]);
    wait_count(&tx, CHANNEL, 2).await;
    tx.write_stdin(b"after\n").await;
    assert_eq!(rx.line().await, "after");
    assert_eq!(late.line().await, "after");
}

#[tokio::test]
async fn media_over_nats_with_a_secret_records_a_valid_file() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nats.webm");
    let url = nats.url();
    let mut rx = peer(
        "receive",
        &url,
        "natsmedia",
        &["--secret", "k", "--record", path.to_str().unwrap()],
    );
    let _tx = peer(
        "send",
        &url,
        "natsmedia",
        &["--secret", "k", "--test-source"],
    );
    rx.wait_stderr(r#""event":"keyframe""#).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    rx.signal("INT");
    assert!(rx.wait_exit().await.success());
    crate::mediafile::inspect(&path).assert_valid("VP8", Some("Opus"), 3.0, 30.0);
}
