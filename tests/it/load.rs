//! Load: many receivers on one sender, many rooms on one relay.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

const CHANNEL: &str = r#""event":"channel""#;

#[tokio::test]
async fn a_hundred_receivers_each_get_a_thousand_lines_in_order() {
    let relay = Relay::start(&[]).await;
    let mut receivers: Vec<Proc> = (0..100)
        .map(|i| {
            Spawn::new(
                &format!("receiver{i}"),
                &["receive", "--signal", &relay.url, "--room", "crowd", "-q"],
            )
            .spawn()
        })
        .collect();
    let mut tx = Spawn::new(
        "sender",
        &[
            "send", "--signal", &relay.url, "--room", "crowd", "--events", "json",
        ],
    )
    .spawn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while tx.stderr_count(CHANNEL) < 100 {
        if tokio::time::Instant::now() > deadline {
            tx.fail(&format!(
                "{} of 100 channels open",
                tx.stderr_count(CHANNEL)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    tx.write_stdin(text.as_bytes()).await;
    tx.close_stdin();
    for rx in &mut receivers {
        for i in 0..1000 {
            let line = rx.line().await;
            assert_eq!(line, format!("line {i}"), "{}", rx.name);
        }
    }
    assert!(tx.wait_exit().await.success());
}

#[tokio::test]
async fn a_thousand_rooms_on_one_relay_stay_apart() {
    // 2,004 clients from one address: no per-address cap here.
    let relay = Relay::start(&["--max-per-ip", "0"]).await;
    // Two clients per room: one listens, one speaks.
    let mut listeners = Vec::new();
    for room in 0..1000 {
        let mut c = WsClient::connect(&relay.url).await;
        c.on(&["receiver", &format!("room{room}")]).await;
        listeners.push(c);
    }
    // Every subscription is in before anyone speaks (one connection's
    // frames are handled in order, so the last listener's barrier is
    // enough only for itself: check them all).
    for c in listeners.iter_mut() {
        c.barrier(&relay.url).await;
    }
    // Four speakers, each well inside the per-connection rate limit.
    for part in 0..4 {
        let mut speaker = WsClient::connect(&relay.url).await;
        for room in (part * 250)..((part + 1) * 250) {
            let ns = format!("room{room}");
            speaker
                .emit(&["receiver", &ns], json!({ "room": room }))
                .await;
        }
    }
    for (room, c) in listeners.iter_mut().enumerate() {
        let v = c.recv().await;
        assert_eq!(v["data"]["room"], room, "room {room} got {v}");
        assert!(
            c.recv_within(Duration::from_millis(5)).await.is_none(),
            "room {room} got a second message"
        );
    }
}
