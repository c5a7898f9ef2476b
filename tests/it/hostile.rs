//! What a hostile room member can do, played by the real binaries behind a
//! [`tamper_proxy`]: each test is an attack and what it must not achieve.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::mediafile::inspect;

/// A sender whose signaling id is `fake`: its frames leave with `fake`
/// for its id (and in its own namespace), and what the relay delivers to
/// `fake`'s namespace comes back to it under its real id.
async fn sender_named(relay: &Relay, fake: &'static str) -> String {
    let real: Arc<Mutex<Option<String>>> = Arc::default();
    let learnt = real.clone();
    let up: Rewrite = Arc::new(move |mut v: Value| {
        if let Some(id) = v["data"]["id"].as_str() {
            learnt.lock().unwrap().get_or_insert_with(|| id.to_owned());
            v["data"]["id"] = fake.into();
        }
        if v["ns"][0] == "sender" && v["ns"].get(2).is_some() {
            v["ns"][2] = fake.into();
        }
        vec![v]
    });
    let down: Rewrite = Arc::new(move |mut v: Value| {
        if v["ns"][0] == "sender" && v["ns"][2] == fake {
            if let Some(id) = real.lock().unwrap().clone() {
                v["ns"][2] = id.into();
            }
        }
        vec![v]
    });
    tamper_proxy(relay.url.clone(), up, down).await
}

#[tokio::test]
async fn a_sender_id_cannot_write_outside_the_recording_directory() {
    let relay = Relay::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let victim = dir.path().join("victim-home");
    std::fs::create_dir_all(&rec).unwrap();
    std::fs::create_dir_all(&victim).unwrap();
    let important = victim.join("important.webm");
    std::fs::write(&important, b"precious").unwrap();

    let template = rec.join("{id}.webm");
    let mut rx = in_room(
        "recorder",
        "receive",
        &relay.url,
        "climb",
        &["--record", template.to_str().unwrap()],
    )
    .spawn();
    let proxy = sender_named(&relay, "../victim-home/important").await;
    let _tx = in_room("sender", "send", &proxy, "climb", &["--test-source"]).spawn();
    rx.wait_stderr("recording sender").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    rx.signal("INT");
    assert!(rx.wait_exit().await.success());

    assert_eq!(std::fs::read(&important).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
    let recorded: Vec<_> = std::fs::read_dir(&rec)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let name = recorded[0].file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("id-") && name.ends_with(".webm"), "{name}");
    // The hostile sender is still recorded, as any sender is: under a name
    // made from its id's hash, in the directory the user named.
    inspect(&recorded[0]).assert_valid("VP8", Some("Opus"), 2.0, 30.0);
}

/// `n` candidates a hostile peer sends after its answer, every one at
/// `port` on its own address of 127/8 (which a wildcard socket on this
/// machine receives), every third over TCP (`tcptype passive`, which our
/// side connects to).
fn flood_of_candidates(id: &str, ns: &Value, n: u32, port: u16) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let ip = format!("127.{}.{}.{}", 1 + i / 62500, (i / 250) % 250, 1 + i % 250);
            let line = if i % 3 == 2 {
                format!("candidate:{i} 1 tcp 1518280447 {ip} {port} typ host tcptype passive")
            } else {
                format!("candidate:{i} 1 udp 2122260223 {ip} {port} typ host")
            };
            serde_json::json!({
                "op": "emit",
                "ns": ns,
                "data": {
                    "type": "candidate",
                    "id": id,
                    "candidate": {"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0}
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn a_thousand_candidates_cannot_aim_the_sender_at_a_third_party() {
    // The third party: a UDP port and a TCP port on every 127/8 address.
    let victim_udp = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
    let port = victim_udp.local_addr().unwrap().port();
    let victim_tcp = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .unwrap();
    let packets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let connects = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (p, c) = (packets.clone(), connects.clone());
    let counting = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            tokio::select! {
                r = victim_udp.recv_from(&mut buf) => if r.is_ok() {
                    p.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                },
                r = victim_tcp.accept() => if r.is_ok() {
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                },
            }
        }
    });

    let relay = Relay::start(&[]).await;
    let mut tx = in_room("sender", "send", &relay.url, "aim", &[]).spawn();
    // A receiver that, with its answer, sends 1,000 candidates at the
    // third party.
    let up: Rewrite = Arc::new(move |v: Value| {
        if v["op"] == "emit" && v["data"]["type"] == "answer" {
            let id = v["data"]["id"].as_str().unwrap_or_default().to_owned();
            let ns = v["ns"].clone();
            let mut out = vec![v];
            out.extend(flood_of_candidates(&id, &ns, 1000, port));
            return out;
        }
        vec![v]
    });
    let proxy = tamper_proxy(relay.url.clone(), up, unchanged()).await;
    let mut rx = in_room("receiver", "receive", &proxy, "aim", &[]).spawn();
    tx.wait_stderr(r#""event":"channel""#).await;
    // webrtc-rs checks a pair up to 8 times, 200 ms apart: after 12 s every
    // check the flood could cause has been sent.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let sent = packets.load(std::sync::atomic::Ordering::Relaxed);
    let tcp = connects.load(std::sync::atomic::Ordering::Relaxed);
    counting.abort();
    eprintln!("third party got {sent} UDP packets and {tcp} TCP connects");
    // Without the cap and the budget: ~1,000 candidates × 2 local
    // addresses × 8 checks. Now at most the 32 candidates the cap lets in,
    // and no more than the budget's burst and rate allow.
    assert!(sent <= 400, "{sent} packets reached the third party");
    assert!(tcp <= 32, "{tcp} TCP connections reached the third party");
    assert!(
        tx.stderr().contains("ICE candidates: ignoring the rest"),
        "the sender did not say it ignored candidates"
    );
    // The hostile receiver was still served: data reaches it.
    tx.write_stdin(b"still here\n").await;
    assert_eq!(rx.line().await, "still here");
}

#[tokio::test]
async fn forged_disposes_offers_and_syncs_cost_a_viewer_nothing() {
    let relay = Relay::start(&[]).await;
    let room = "forge";
    // The attacker listens to the room to learn everyone's id.
    let mut spy = WsClient::connect(&relay.url).await;
    spy.on(&["sender", room]).await;
    spy.on(&["receiver", room]).await;
    spy.barrier(&relay.url).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.webm");
    let mut rx = in_room(
        "recorder",
        "receive",
        &relay.url,
        room,
        &["--record", path.to_str().unwrap()],
    )
    .spawn();
    let tx = in_room("sender", "send", &relay.url, room, &["--test-source"]).spawn();
    let (mut sid, mut rid) = (None, None);
    while sid.is_none() || rid.is_none() {
        let v = spy.recv().await;
        let id = v["data"]["id"].as_str().map(str::to_owned);
        match v["ns"][0].as_str() {
            Some("receiver") => sid = sid.or(id),
            Some("sender") => rid = rid.or(id),
            _ => {}
        }
    }
    let (sid, rid) = (sid.unwrap(), rid.unwrap());
    rx.wait_stderr("recording sender").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Every 2 s: a dispose each way, a sync and an offer in the sender's
    // name, from a connection that is neither.
    for _ in 0..3 {
        let to_rx = ["receiver", room, rid.as_str()];
        let to_tx = ["sender", room, sid.as_str()];
        spy.emit(&to_rx, serde_json::json!({"type": "dispose", "id": sid}))
            .await;
        spy.emit(&to_tx, serde_json::json!({"type": "dispose", "id": rid}))
            .await;
        spy.emit(
            &to_rx,
            serde_json::json!({"type": "sync", "id": sid, "state": {"nick": "evil"}}),
        )
        .await;
        spy.emit(
            &to_rx,
            serde_json::json!({"type": "offer", "id": sid, "state": {},
                "offer": {"type": "offer", "sdp": "v=0\r\n"}}),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    rx.signal("INT");
    assert!(rx.wait_exit().await.success());

    // One recording, never cut, as if nobody had interfered.
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "the recording was split: {files:?}");
    let report = inspect(&path);
    report.assert_valid("VP8", Some("Opus"), 8.0, 30.0);
    let (fps, gap) = report.fps_and_gap_from(report.first_pts + 1.0);
    assert!(gap < 1.0, "{gap:.2} s without a frame ({fps:.1} fps)");
    assert!(
        !rx.stderr().contains("evil"),
        "the forged state reached the user"
    );
    for (p, what) in [
        (&rx, "dispose"),
        (&rx, "offer"),
        (&rx, "sync"),
        (&tx, "dispose"),
    ] {
        let needle = format!("{what} in this peer's name from another relay connection");
        assert!(
            p.stderr().contains(&needle),
            "{} did not say: {needle}",
            p.name
        );
    }
}

#[tokio::test]
async fn subscribers_that_never_read_cannot_pin_the_relays_memory() {
    let relay = Relay::start(&["--rate-limit", "0"]).await;
    let pid = relay.proc.child.id().unwrap();
    // Ten members that subscribe and never read a byte, each on a
    // namespace of its own (so no two queue the same frame).
    let mut stalled = Vec::new();
    for i in 0..10 {
        let mut c = WsClient::connect(&relay.url).await;
        c.on(&["pin", &i.to_string()]).await;
        c.barrier(&relay.url).await;
        stalled.push(c);
    }
    let before = vm_kib(pid, "VmRSS");
    // 1,100 frames of 60 KiB to each: under the frame limit, 66 MB each.
    let mut tx = WsClient::connect(&relay.url).await;
    let blob = "y".repeat(60 * 1024);
    for _ in 0..1100 {
        for i in 0..10 {
            tx.emit(&["pin", &i.to_string()], serde_json::json!(blob))
                .await;
        }
    }
    wait_count(&relay.proc, "client is not reading", 10).await;
    let peak = vm_kib(pid, "VmHWM");
    eprintln!("relay RSS {before} KiB before, peak {peak} KiB");
    // Each could pin 1,024 frames (60 MiB) before: the relay grew by
    // ~617 MB. Now it queues at most 32 MiB for all clients together; with
    // what is in flight (frames read, half-written) it grew ~80 MB.
    assert!(
        peak.saturating_sub(before) < 128 * 1024,
        "the relay grew from {before} KiB to a peak of {peak} KiB"
    );
    // The relay still serves.
    let mut a = WsClient::connect(&relay.url).await;
    a.on(&["after"]).await;
    a.barrier(&relay.url).await;
    tx.emit(&["after"], serde_json::json!("served")).await;
    loop {
        let v = a.recv().await;
        if v["ns"][0] == "after" {
            assert_eq!(v["data"], "served");
            break;
        }
    }
    drop(stalled);
}

#[tokio::test]
async fn a_listener_in_the_room_learns_no_credentials_and_cannot_use_a_proof() {
    const SECRET: &str = "a-long-random-letmein";
    let relay = Relay::start(&[]).await;
    let room = "verified";
    // The attacker hears what senders hear, as a fake sender would.
    let mut spy = WsClient::connect(&relay.url).await;
    spy.on(&["sender", room]).await;
    spy.on(&["receiver", room]).await;
    spy.barrier(&relay.url).await;
    let mut tx = in_room("sender", "send", &relay.url, room, &["--verify", SECRET]).spawn();
    let sid = loop {
        let v = spy.recv().await;
        if v["ns"][0] == "receiver" && v["data"]["type"] == "invoke" {
            break v["data"]["id"].as_str().unwrap().to_owned();
        }
    };
    // And where receivers answer that sender.
    spy.on(&["sender", room, &sid]).await;
    spy.barrier(&relay.url).await;
    let mut heard = Vec::new();
    let mut rx = in_room(
        "receiver",
        "receive",
        &relay.url,
        room,
        &["--credentials", SECRET],
    )
    .spawn();
    tx.wait_stderr(r#""event":"channel""#).await;
    tx.write_stdin(b"for the verified\n").await;
    assert_eq!(rx.line().await, "for the verified");
    while let Some(text) = spy.recv_text_within(Duration::from_millis(300)).await {
        heard.push(text);
    }
    assert!(!heard.iter().any(|f| f.contains(SECRET)), "{heard:#?}");
    let proof = heard
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(f).ok())
        .find(|v| v["data"]["proof"].is_string())
        .unwrap_or_else(|| panic!("no proof went to the sender: {heard:#?}"));

    // The attacker asks in its own name, is challenged, and answers with
    // the receiver's proof: refused, and no offer comes.
    let me = "attacker-0001";
    spy.on(&["receiver", room, me]).await;
    spy.barrier(&relay.url).await;
    let to_tx = ["sender", room, sid.as_str()];
    spy.emit(
        &to_tx,
        serde_json::json!({"type": "invoke", "id": me, "prove": "hmac-sha256"}),
    )
    .await;
    let mut stolen = proof["data"].clone();
    stolen["id"] = me.into();
    spy.emit(&to_tx, stolen).await;
    wait_count(&tx, "credentials rejected", 1).await;
    while let Some(v) = spy.recv_within(Duration::from_secs(1)).await {
        assert_ne!(v["data"]["type"], "offer", "the attacker got an offer: {v}");
    }
    // The real receiver's own proof, sent again by the attacker, changes
    // nothing either: the receiver is still served.
    spy.emit(&to_tx, proof["data"].clone()).await;
    tx.write_stdin(b"still verified\n").await;
    assert_eq!(rx.line().await, "still verified");
}

#[tokio::test]
async fn a_real_receiver_gets_in_during_a_flood_of_receivers_that_never_connect() {
    let relay = Relay::start(&[]).await;
    let room = "flood";
    // A media sender on a machine whose limit is 1,024 open files.
    let mut tx = in_room(
        "sender",
        "send",
        &relay.url,
        room,
        &["--test-source", "--data"],
    )
    .limit_files(1024)
    .spawn();
    tx.wait_stderr(r#""event":"start""#).await;
    // 700 receivers in 10 s from 7 connections, none of which answers.
    let mut flooders = Vec::new();
    for _ in 0..7 {
        flooders.push(WsClient::connect(&relay.url).await);
    }
    let flood = tokio::spawn(async move {
        for _ in 0..100 {
            for c in &mut flooders {
                let id = uuid::Uuid::new_v4().to_string();
                c.emit(
                    &["sender", room],
                    serde_json::json!({"type": "invoke", "id": id}),
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        flooders
    });
    // Well into the flood: past where file descriptors ran out before.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let joined = std::time::Instant::now();
    let mut rx = in_room("receiver", "receive", &relay.url, room, &[]).spawn();
    rx.wait_stderr(r#""event":"channel""#).await;
    let took = joined.elapsed();
    tx.write_stdin(b"through the flood\n").await;
    assert_eq!(rx.line().await, "through the flood");
    eprintln!("the real receiver had its channel {took:?} after starting");
    // Before: 400 peer creations failed for want of file descriptors and
    // the real receiver got in after 30 s, when the first fakes timed out.
    assert!(took < Duration::from_secs(5), "{took:?}");
    let _flooders = flood.await.unwrap();
    assert!(
        !tx.stderr().contains("Too many open files"),
        "the sender ran out of file descriptors"
    );
    // The sender said what it refused.
    assert!(tx.stderr().contains("refused a receiver"));
}

#[tokio::test]
async fn a_flood_of_bad_messages_leaves_a_few_log_lines() {
    let relay = Relay::start(&["--rate-limit", "0"]).await;
    let room = "noise";
    let mut tx = in_room("sender", "send", &relay.url, room, &[]).spawn();
    let mut rx = in_room("receiver", "receive", &relay.url, room, &[]).spawn();
    tx.wait_stderr(r#""event":"channel""#).await;
    let before = tx.stderr().len();
    let mut spy = WsClient::connect(&relay.url).await;
    for i in 0..2000 {
        let bad = match i % 3 {
            0 => serde_json::json!({"type": "offer", "id": format!("x{i}")}),
            1 => serde_json::json!({"type": "teleport", "id": format!("x{i}")}),
            _ => serde_json::json!({"type": "answer", "id": format!("x{i}"), "answer": 5}),
        };
        spy.emit(&["sender", room], bad).await;
    }
    spy.barrier(&relay.url).await;
    // Every bad message was read: the one after them is answered.
    tx.write_stdin(b"after the noise\n").await;
    assert_eq!(rx.line().await, "after the noise");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grew = tx.stderr().len() - before;
    // One line each made ~110 KB here, and a flood goes on for as long
    // as someone sends it.
    assert!(
        grew < 16 * 1024,
        "stderr grew {grew} bytes:\n{}",
        &tx.stderr()[before..]
    );
    // Still told, a few times.
    assert!(tx.stderr()[before..].contains("ignored a signaling message"));
}

#[tokio::test]
async fn silent_sockets_cannot_lock_clients_out_of_the_relay() {
    use tokio::io::AsyncReadExt;
    // A relay limited to 1,024 open files, as on many machines.
    let relay = Relay::started(
        Spawn::new(
            "relay",
            &[
                "signal",
                "--listen",
                "127.0.0.1:0",
                "--max-per-ip",
                "64",
                "--handshake-timeout",
                "2",
            ],
        )
        .limit_files(1024),
    )
    .await;
    let addr = relay.url.trim_start_matches("ws://").to_owned();
    // 1,100 connections from one address that never send a byte.
    let mut silent = Vec::new();
    for _ in 0..1100 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Clients from other addresses are served meanwhile.
    let a: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let b: std::net::IpAddr = "127.0.0.3".parse().unwrap();
    let mut listener = WsClient::connect_from(&relay.url, a).await;
    listener.on(&["receiver", "door"]).await;
    let mut speaker = WsClient::connect_from(&relay.url, b).await;
    loop {
        speaker
            .emit(&["receiver", "door"], serde_json::json!("in"))
            .await;
        if let Some(v) = listener.recv_within(Duration::from_millis(200)).await {
            assert_eq!(v["data"], "in");
            break;
        }
    }
    // Every silent socket is closed: past the cap at once, the rest when
    // their time to send a request is up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    for (n, s) in silent.iter_mut().enumerate() {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout_at(deadline, s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "silent socket {n} still open after 6 s: {read:?}"
        );
    }
    assert!(relay
        .proc
        .stderr()
        .contains("too many connections from one address"));
}

/// `p2p signal token …`, run for real.
fn mint(secret: &str, room: &str, role: &str, ttl: &str) -> String {
    let out = std::process::Command::new(BIN)
        .args([
            "signal", "token", "--room", room, "--role", role, "--ttl", ttl,
        ])
        .env("P2P_TOKEN_SECRET", secret)
        .output()
        .expect("run p2p signal token");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn with_room_tokens_only_publishers_can_be_senders() {
    const KEY: &str = "relay-key-0123456789";
    let relay = Relay::start(&["--token-secret", KEY]).await;
    let peer = |name: &str, cmd: &str, token: &str| {
        in_room(name, cmd, &relay.url, "show", &["--token", token]).spawn()
    };
    let publish = mint(KEY, "show", "publish", "1h");
    let subscribe = mint(KEY, "show", "subscribe", "1h");
    let mut rx = peer("viewer", "receive", &subscribe);
    let mut tx = peer("sender", "send", &publish);
    tx.wait_stderr(r#""event":"channel""#).await;
    tx.write_stdin(b"from the stage\n").await;
    assert_eq!(rx.line().await, "from the stage");

    // A viewer's token used to publish: the relay refuses its every
    // namespace, and no viewer hears it.
    let mut fake = peer("fake sender", "send", &subscribe);
    fake.wait_stderr("to subscribe: not for sender:show").await;
    fake.write_stdin(b"from the audience\n").await;
    tx.write_stdin(b"still the stage\n").await;
    assert_eq!(rx.line().await, "still the stage");
    // Nor can it talk to the viewer directly as a sender would.
    let mut ws = WsClient::connect(&format!("{}/?token={subscribe}", relay.url)).await;
    ws.emit(
        &["receiver", "show"],
        serde_json::json!({"type":"invoke","id":"x"}),
    )
    .await;
    let refused = ws.recv().await;
    assert_eq!(refused["op"], "error", "{refused}");
    let _ = &mut fake;

    // Without a token, with another relay's, for another room, or expired:
    // refused at the door, or for everything in the room.
    let status = |url: String| async move {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
            other => panic!("{url}: {:?}", other.map(|_| "connected")),
        }
    };
    assert_eq!(status(relay.url.clone()).await, 401);
    let foreign = mint("another-key", "show", "both", "1h");
    assert_eq!(status(format!("{}/?token={foreign}", relay.url)).await, 401);
    // A token's rights end at its expiry: a connection holding it is
    // closed then, and it opens no new one.
    let brief = mint(KEY, "show", "both", "2s");
    let mut held = WsClient::connect(&format!("{}/?token={brief}", relay.url)).await;
    let closed = loop {
        use futures_util::StreamExt;
        match tokio::time::timeout(WAIT, held.ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => break f,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame at expiry: {other:?}"),
        }
    };
    assert_eq!(closed.unwrap().reason.as_str(), "room token expired");
    assert_eq!(status(format!("{}/?token={brief}", relay.url)).await, 401);
    let elsewhere = mint(KEY, "other", "both", "1h");
    let mut ws = WsClient::connect(&format!("{}/?token={elsewhere}", relay.url)).await;
    ws.on(&["receiver", "show"]).await;
    assert_eq!(ws.recv().await["op"], "error");
}
