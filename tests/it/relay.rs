//! `p2p signal` as a client sees it: the real binary, real WebSocket clients.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn delivers_to_exact_namespace_subscribers_without_echo() {
    let relay = Relay::start(&[]).await;
    let mut a = WsClient::connect(&relay.url).await;
    let mut b = WsClient::connect(&relay.url).await;
    let mut c = WsClient::connect(&relay.url).await;
    let mut d = WsClient::connect(&relay.url).await;
    a.on(&["receiver", "demo"]).await;
    b.on(&["receiver", "demo"]).await;
    c.on(&["receiver", "demo", "x"]).await;
    d.on(&["receiver", "other"]).await;
    for cl in [&mut a, &mut b, &mut c, &mut d] {
        cl.barrier(&relay.url).await;
    }
    a.emit(&["receiver", "demo"], json!({"type":"invoke","id":"a"}))
        .await;
    let mut got = b.recv().await;
    // Stamped with the emitter's connection (PROTOCOL.md §2).
    let from = got["from"].take();
    assert!(from.as_str().is_some_and(|f| !f.is_empty()), "{from}");
    assert_eq!(
        got,
        json!({"op":"message","ns":["receiver","demo"],"from":null,"data":{"type":"invoke","id":"a"}})
    );
    assert_eq!(a.recv_within(QUIET).await, None, "emitter got an echo");
    assert_eq!(c.recv_within(QUIET).await, None, "longer namespace matched");
    assert_eq!(d.recv_within(QUIET).await, None, "other room matched");
}

#[tokio::test]
async fn relays_data_byte_for_byte() {
    let relay = Relay::start(&[]).await;
    let ns = ["receiver", "exact"];
    let mut rx = WsClient::connect(&relay.url).await;
    rx.on(&ns).await;
    rx.barrier(&relay.url).await;
    let mut tx = WsClient::connect(&relay.url).await;
    let (emit, message) = unusual_frames(&ns);
    tx.send_text(&emit).await;
    // The barrier's pings are on another namespace; skip any straggler.
    let got = loop {
        let text = rx.recv_text().await;
        if !text.contains("barrier-") {
            break text;
        }
    };
    // The frame is the unstamped one with `"from":"…"` before `data`.
    stamp_of(&got, &message);
}

#[tokio::test]
async fn the_relay_says_who_emitted_and_no_client_can_say_otherwise() {
    let relay = Relay::start(&[]).await;
    let ns = ["sender", "who"];
    let mut rx = WsClient::connect(&relay.url).await;
    rx.on(&ns).await;
    rx.barrier(&relay.url).await;
    let mut clients = [
        WsClient::connect(&relay.url).await,
        WsClient::connect(&relay.url).await,
    ];
    let mut stamps = Vec::new();
    for (c, n) in [(0, 1), (1, 2), (0, 3)] {
        let cl = &mut clients[c];
        // A client's own `from` (in the frame or in `data`) changes nothing.
        cl.send_text(&format!(
            r#"{{"op":"emit","ns":["sender","who"],"from":"forged","data":{{"n":{n},"from":"forged"}}}}"#
        ))
        .await;
        let got = loop {
            let v = rx.recv().await;
            if v["ns"][0] == "sender" {
                break v;
            }
        };
        assert_eq!(got["data"]["n"], n);
        let stamp = got["from"].as_str().unwrap().to_owned();
        assert_ne!(stamp, "forged");
        stamps.push(stamp);
    }
    assert_ne!(stamps[0], stamps[1], "two connections, one stamp");
    assert_eq!(stamps[0], stamps[2], "one connection, two stamps");
}

#[tokio::test]
async fn keeps_the_order_of_a_thousand_messages() {
    let relay = Relay::start(&[]).await;
    let mut rx = WsClient::connect(&relay.url).await;
    let mut rx2 = WsClient::connect(&relay.url).await;
    rx.on(&["r"]).await;
    rx2.on(&["r"]).await;
    rx.barrier(&relay.url).await;
    rx2.barrier(&relay.url).await;
    let mut tx = WsClient::connect(&relay.url).await;
    for i in 0..1000 {
        tx.emit(&["r"], json!({ "n": i })).await;
    }
    for cl in [&mut rx, &mut rx2] {
        for i in 0..1000 {
            let v = cl.recv().await;
            assert_eq!(v["data"]["n"], i, "message {i} out of order: {v}");
        }
    }
}

#[tokio::test]
async fn off_and_close_end_subscriptions() {
    let relay = Relay::start(&[]).await;
    let mut a = WsClient::connect(&relay.url).await;
    let mut b = WsClient::connect(&relay.url).await;
    a.on(&["n"]).await;
    a.barrier(&relay.url).await;
    b.emit(&["n"], json!(1)).await;
    assert_eq!(a.recv().await["data"], 1);
    a.off(&["n"]).await;
    a.barrier(&relay.url).await;
    b.emit(&["n"], json!(2)).await;
    assert_eq!(a.recv_within(QUIET).await, None, "delivered after off");

    // A closed connection's subscriptions are gone: the relay keeps serving
    // the namespace to the others and does not choke on the dead one.
    let mut c = WsClient::connect(&relay.url).await;
    c.on(&["n"]).await;
    c.barrier(&relay.url).await;
    a.on(&["n"]).await;
    a.barrier(&relay.url).await;
    drop(a);
    for i in 0..50 {
        b.emit(&["n"], json!(i)).await;
    }
    for i in 0..50 {
        assert_eq!(c.recv().await["data"], i);
    }
}

#[tokio::test]
async fn answers_bad_input_with_errors_and_keeps_the_connection() {
    let relay = Relay::start(&["--max-frame", "1024", "--max-subscriptions", "3"]).await;
    let mut bad = WsClient::connect(&relay.url).await;
    let mut peer = WsClient::connect(&relay.url).await;
    peer.on(&["ok"]).await;
    peer.barrier(&relay.url).await;

    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "not valid JSON"),
        (r#"{"op":"shout","ns":["a"]}"#.into(), "unknown op"),
        (r#"{"op":"on","ns":[]}"#.into(), "\"ns\""),
        (r#"{"op":"on","ns":["a",""]}"#.into(), "\"ns\""),
        (
            r#"{"op":"on","ns":["1","2","3","4","5","6","7","8","9"]}"#.into(),
            "\"ns\"",
        ),
        (r#"{"op":"on","ns":"a"}"#.into(), "\"ns\""),
        (r#"{"op":"emit","ns":["a"]}"#.into(), "\"data\""),
        (
            format!(
                r#"{{"op":"emit","ns":["ok"],"data":"{}"}}"#,
                "x".repeat(2000)
            ),
            "over the limit",
        ),
    ];
    for (frame, expect) in &cases {
        bad.send_text(frame).await;
        let reply = bad.recv().await;
        assert_eq!(reply["op"], "error", "{frame}: {reply}");
        let text = reply["error"].as_str().unwrap();
        assert!(text.contains(expect), "{frame}: {text}");
    }
    // Binary frames too.
    use futures_util::SinkExt;
    bad.ws
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            vec![1, 2, 3].into(),
        ))
        .await
        .unwrap();
    assert_eq!(bad.recv().await["op"], "error");

    // Subscription cap.
    for ns in ["s1", "s2", "s3"] {
        bad.on(&[ns]).await;
    }
    bad.on(&["s4"]).await;
    let reply = bad.recv().await;
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("too many subscriptions"),
        "{reply}"
    );

    // The oversized frame reached nobody, and the connection still works.
    bad.emit(&["ok"], json!("after")).await;
    let got = peer.recv().await;
    assert_eq!(got["data"], "after", "{got}");
}

#[tokio::test]
async fn token_is_required_when_set() {
    let relay = Relay::start(&["--token", "s3cret"]).await;
    let err = tokio_tungstenite::connect_async(relay.url.as_str())
        .await
        .expect_err("connected without a token");
    assert!(err.to_string().contains("401"), "{err}");
    let wrong = format!("{}/?token=nope", relay.url);
    let err = tokio_tungstenite::connect_async(wrong.as_str())
        .await
        .expect_err("connected with a wrong token");
    assert!(err.to_string().contains("401"), "{err}");

    let mut a = WsClient::connect(&format!("{}/?token=s3cret", relay.url)).await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = relay.url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("bearer accepted");
    let mut b = WsClient { ws };
    a.on(&["t"]).await;
    a.barrier(&format!("{}/?token=s3cret", relay.url)).await;
    b.emit(&["t"], json!("hi")).await;
    assert_eq!(a.recv().await["data"], "hi");
    assert!(
        !relay.proc.stderr().contains("s3cret"),
        "token leaked into the logs"
    );
}

#[tokio::test]
async fn cuts_off_a_client_that_never_reads_and_keeps_serving_others() {
    // No rate limit here: the point is a reader that stalls, not a writer
    // that floods.
    let relay = Relay::start(&["--rate-limit", "0"]).await;
    let mut stalled = WsClient::connect(&relay.url).await;
    stalled.on(&["flood"]).await;
    let mut healthy = WsClient::connect(&relay.url).await;
    healthy.on(&["flood"]).await;
    healthy.on(&["side"]).await;
    healthy.barrier(&relay.url).await;
    stalled.barrier(&relay.url).await;

    let mut tx = WsClient::connect(&relay.url).await;
    let blob = "x".repeat(32 * 1024);
    // ~100 MB: more than socket buffers plus the relay's outbox can hold.
    let total = 3000;
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < total {
            let v = healthy.recv().await;
            if v["ns"][0] == "flood" {
                n += 1;
            }
        }
        healthy
    });
    for _ in 0..total {
        tx.emit(&["flood"], json!(blob)).await;
    }
    relay.proc.wait_stderr("client is not reading").await;
    let mut healthy = tokio::time::timeout(WAIT, reader)
        .await
        .expect("healthy client did not get every message")
        .unwrap();
    // Still prompt for the healthy one afterwards.
    let start = std::time::Instant::now();
    tx.emit(&["side"], json!("prompt")).await;
    assert_eq!(healthy.recv().await["data"], "prompt");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn serves_the_page_on_plain_get() {
    let relay = Relay::start(&[]).await;
    let url = format!("{}/", relay.http_url());
    let out = std::process::Command::new("curl")
        .args(["-s", "-i", &url])
        .output();
    // curl may be absent on a minimal machine; use a raw request instead.
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => raw_get(relay.port()).await,
    };
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_lowercase().contains("content-type: text/html"),
        "{text}"
    );
    assert!(text.contains("<html"), "{text}");
}

async fn raw_get(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn exits_cleanly_on_sigterm_and_closes_clients() {
    let mut relay = Relay::start(&[]).await;
    let mut a = WsClient::connect(&relay.url).await;
    a.on(&["x"]).await;
    a.barrier(&relay.url).await;
    relay.proc.signal("TERM");
    let status = relay.proc.wait_exit().await;
    assert!(status.success(), "relay exited with {status}");
    assert_eq!(a.recv_within(WAIT).await, None, "client not closed");
}

#[tokio::test]
async fn a_flooding_client_neither_delays_others_nor_grows_the_relay() {
    let relay = Relay::start(&[]).await;
    let pid = relay.proc.child.id().unwrap();
    let mut watcher = WsClient::connect(&relay.url).await;
    watcher.on(&["room", "shared"]).await;
    watcher.barrier(&relay.url).await;
    let base = vm_kib(pid, "VmRSS:");

    // The flood: as fast as one client can write, into the same namespace.
    let url = relay.url.clone();
    let flood = tokio::spawn(async move {
        let mut f = WsClient::connect(&url).await;
        let blob = "f".repeat(1000);
        let end = std::time::Instant::now() + Duration::from_secs(4);
        let mut sent = 0u64;
        while std::time::Instant::now() < end {
            f.emit(&["room", "shared"], serde_json::json!({ "flood": blob }))
                .await;
            sent += 1;
        }
        sent
    });
    // A well-behaved client meanwhile: 100 messages, 20 ms apart.
    let mut polite = WsClient::connect(&relay.url).await;
    let start = std::time::Instant::now();
    let sender = tokio::spawn(async move {
        for i in 0..100u64 {
            let at = start.elapsed().as_micros() as u64;
            polite
                .emit(&["room", "shared"], serde_json::json!({"n": i, "at": at}))
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        polite
    });
    let mut next = 0u64;
    let mut worst = Duration::ZERO;
    while next < 100 {
        let v = watcher.recv().await;
        if v["op"] == "message" && v["data"]["n"].is_u64() {
            assert_eq!(v["data"]["n"], next, "polite messages out of order");
            let sent_at = Duration::from_micros(v["data"]["at"].as_u64().unwrap());
            worst = worst.max(start.elapsed().saturating_sub(sent_at));
            next += 1;
        }
    }
    let _polite = sender.await.unwrap();
    let sent = flood.await.unwrap();
    assert!(
        worst < Duration::from_secs(1),
        "a polite message took {worst:?}"
    );
    let peak = vm_kib(pid, "VmHWM:");
    assert!(
        peak < base + 64 * 1024,
        "relay grew from {base} KiB to a peak of {peak} KiB during a flood of {sent} frames"
    );
    relay.proc.wait_stderr("over the rate limit").await;
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Arbitrary text as frames never takes the relay down, and it keeps
    /// routing for everyone else.
    #[test]
    fn arbitrary_frames_never_break_the_relay(frames in proptest::collection::vec(".{0,300}", 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let guard = case_relay();
        rt.block_on(async {
            let relay = guard.1.clone();
            let mut bad = WsClient::connect(&relay).await;
            for f in &frames {
                bad.send_text(f).await;
            }
            let mut a = WsClient::connect(&relay).await;
            let ns = uuid::Uuid::new_v4().to_string();
            a.on(&[&ns]).await;
            a.barrier(&relay).await;
            bad.emit(&[&ns], serde_json::json!("still routed")).await;
            loop {
                let v = a.recv().await;
                if v["data"] == "still routed" {
                    break;
                }
            }
        });
    }
}

/// A relay process for one proptest case, killed when dropped.
struct CaseRelay(std::process::Child, String);

impl Drop for CaseRelay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn case_relay() -> CaseRelay {
    let mut child = std::process::Command::new(BIN)
        .args(["signal", "--listen", "127.0.0.1:0", "--rate-limit", "0"])
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    CaseRelay(child, line.trim().to_owned())
}

#[tokio::test]
async fn serves_wss_with_a_certificate_and_clients_trust_it_with_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "DNS:localhost,IP:127.0.0.1");
    let relay = Relay::start_tls(&cert, &key).await;
    assert!(relay.url.starts_with("wss://"), "{}", relay.url);
    let ca = cert.to_str().unwrap();

    // Without the CA: one clear line, not a hang.
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(BIN)
            .args(["receive", "--signal", &relay.url, "--room", "tls"])
            .env_clear()
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the receiver did not give up on an untrusted certificate")
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca-file"), "{err}");

    let mut rx = Spawn::new(
        "receiver",
        &[
            "receive",
            "--signal",
            &relay.url,
            "--room",
            "tls",
            "--ca-file",
            ca,
        ],
    )
    .spawn();
    let mut tx = Spawn::new(
        "sender",
        &[
            "send",
            "--signal",
            &relay.url,
            "--room",
            "tls",
            "--ca-file",
            ca,
            "--events",
            "json",
        ],
    )
    .spawn();
    tx.wait_stderr(r#""event":"channel""#).await;
    tx.write_stdin(b"over wss\n").await;
    assert_eq!(rx.line().await, "over wss");
}

/// A client that answers no ping (its network went away) is disconnected
/// after --idle-timeout; one that only listens (its WebSocket answers pings
/// by itself) stays, however long it says nothing.
#[tokio::test]
async fn a_client_that_answers_no_ping_is_disconnected_and_a_quiet_one_is_not() {
    let relay = Relay::start(&["--idle-timeout", "3", "-v"]).await;
    let mut silent = WsClient::connect(&relay.url).await;
    silent.on(&["idle", "a"]).await;
    let mut quiet = WsClient::connect(&relay.url).await;
    quiet.on(&["idle", "a"]).await;
    quiet.barrier(&relay.url).await;
    // The quiet one reads (and so answers pings) for two deadlines; the
    // silent one never reads.
    assert_eq!(quiet.recv_text_within(Duration::from_secs(6)).await, None);
    wait_count(&relay.proc, "pings unanswered: disconnecting it", 1).await;
    assert_eq!(
        relay.proc.stderr_count("pings unanswered"),
        1,
        "only the silent client is cut:\n{}",
        relay.proc.stderr()
    );
    let mut emitter = WsClient::connect(&relay.url).await;
    emitter.emit(&["idle", "a"], json!({"still": "here"})).await;
    assert_eq!(quiet.recv().await["data"], json!({"still": "here"}));
    // The silent one finds its connection closed when it reads at last,
    // and nothing sent after that.
    let mut texts = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(WAIT, silent.ws.next()).await {
        match msg {
            Message::Text(t) => texts.push(t.to_string()),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(texts.is_empty(), "a client cut off got {texts:?}");
}
