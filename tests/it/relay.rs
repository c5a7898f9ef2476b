//! `p2p signal` as a client sees it: the real binary, real WebSocket clients.

use std::time::Duration;

use serde_json::json;

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
    let got = b.recv().await;
    assert_eq!(
        got,
        json!({"op":"message","ns":["receiver","demo"],"data":{"type":"invoke","id":"a"}})
    );
    assert_eq!(a.recv_within(QUIET).await, None, "emitter got an echo");
    assert_eq!(c.recv_within(QUIET).await, None, "longer namespace matched");
    assert_eq!(d.recv_within(QUIET).await, None, "other room matched");
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
    let relay = Relay::start(&[]).await;
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
