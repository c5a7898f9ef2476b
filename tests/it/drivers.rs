//! The signaling driver contract, one suite run against each driver: the
//! in-process `memory:` hub and `ws://` against the real relay.

use std::time::Duration;

use p2p::protocol::Namespace;
use p2p::signaling::{connect, SignalEvent, SignalOptions, Signaling};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::harness::*;

type Client = (Signaling, mpsc::Receiver<SignalEvent>);

async fn client(url: &str) -> Client {
    let c = connect(url, SignalOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    c
}

fn ns(parts: &[&str]) -> Namespace {
    Namespace::new(parts.iter().copied()).unwrap()
}

/// Next message event, skipping status events; None after `wait`.
async fn next_message(
    rx: &mut mpsc::Receiver<SignalEvent>,
    wait: Duration,
) -> Option<(Namespace, Value)> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await.ok()?? {
            SignalEvent::Message { ns, data, .. } => return Some((ns, data)),
            _ => continue,
        }
    }
}

/// Emits on `ns` from `from` until `to` sees it: every earlier `on` of `to`
/// is then in effect (drivers apply one client's commands in order).
async fn settle(from: &Signaling, to: &mut mpsc::Receiver<SignalEvent>, n: &Namespace) {
    for _ in 0..100 {
        from.emit(n.clone(), json!("settle")).await.unwrap();
        if let Some((got, _)) = next_message(to, Duration::from_millis(100)).await {
            if &got == n {
                // Drain duplicates of the settle message.
                while next_message(to, Duration::from_millis(50)).await.is_some() {}
                return;
            }
        }
    }
    panic!("subscription never took effect");
}

async fn contract(url: &str) {
    let (a, mut a_rx) = client(url).await;
    let (b, mut b_rx) = client(url).await;
    let (c, mut c_rx) = client(url).await;
    let room = ns(&["receiver", "contract"]);
    let longer = ns(&["receiver", "contract", "id"]);
    a.on(room.clone()).await.unwrap();
    b.on(room.clone()).await.unwrap();
    c.on(longer.clone()).await.unwrap();
    settle(&c, &mut a_rx, &room).await;
    settle(&c, &mut b_rx, &room).await;
    settle(&a, &mut c_rx, &longer).await;
    for rx in [&mut a_rx, &mut b_rx, &mut c_rx] {
        while next_message(rx, Duration::from_millis(100)).await.is_some() {}
    }

    // Delivery to every other subscriber of exactly that namespace.
    a.emit(room.clone(), json!({"type":"invoke","id":"a"}))
        .await
        .unwrap();
    let (got_ns, data) = next_message(&mut b_rx, WAIT).await.expect("b got nothing");
    assert_eq!(
        (got_ns, data),
        (room.clone(), json!({"type":"invoke","id":"a"}))
    );
    assert!(
        next_message(&mut a_rx, Duration::from_millis(200))
            .await
            .is_none(),
        "echo"
    );
    assert!(
        next_message(&mut c_rx, Duration::from_millis(200))
            .await
            .is_none(),
        "prefix matched"
    );

    // Order.
    for i in 0..500 {
        a.emit(room.clone(), json!(i)).await.unwrap();
    }
    for i in 0..500 {
        let (_, d) = next_message(&mut b_rx, WAIT)
            .await
            .expect("missing message");
        assert_eq!(d, json!(i));
    }

    // off stops delivery.
    b.off(room.clone()).await.unwrap();
    b.on(longer.clone()).await.unwrap();
    settle(&a, &mut b_rx, &longer).await;
    a.emit(room.clone(), json!("after off")).await.unwrap();
    assert!(next_message(&mut b_rx, Duration::from_millis(300))
        .await
        .is_none());

    // Closing a client ends its subscriptions; others keep working.
    c.close().await;
    a.emit(longer.clone(), json!("to b")).await.unwrap();
    let (_, d) = next_message(&mut b_rx, WAIT)
        .await
        .expect("b lost delivery");
    assert_eq!(d, json!("to b"));
}

#[tokio::test]
async fn memory_driver_keeps_the_contract() {
    contract(&format!("memory:{}", uuid::Uuid::new_v4())).await;
}

#[tokio::test]
async fn ws_driver_keeps_the_contract() {
    let relay = Relay::start(&[]).await;
    contract(&relay.url).await;
}

#[tokio::test]
async fn ws_driver_survives_a_relay_restart() {
    let mut relay = Relay::start(&[]).await;
    let port = relay.port();
    let url = relay.url.clone();
    let (a, mut a_rx) = client(&url).await;
    let (b, mut b_rx) = client(&url).await;
    let n = ns(&["sender", "restart"]);
    a.on(n.clone()).await.unwrap();
    settle(&b, &mut a_rx, &n).await;

    relay.proc.child.kill().await.unwrap();
    // Both drivers notice.
    for rx in [&mut a_rx, &mut b_rx] {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(SignalEvent::Disconnected { .. })) => break,
                Ok(Some(_)) => continue,
                _ => panic!("no Disconnected event"),
            }
        }
    }
    let _relay = Relay::start_on(&format!("127.0.0.1:{port}"), &[]).await;
    for rx in [&mut a_rx, &mut b_rx] {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(SignalEvent::Connected { reconnect: true })) => break,
                Ok(Some(_)) => continue,
                _ => panic!("no reconnect"),
            }
        }
    }
    // a's subscription is back without a new `on` (settle retries until
    // the relay has processed a's re-subscription on its own socket).
    settle(&b, &mut a_rx, &n).await;
    b.emit(n.clone(), json!("after restart")).await.unwrap();
    let (_, d) = next_message(&mut a_rx, WAIT)
        .await
        .expect("nothing after restart");
    assert_eq!(d, json!("after restart"));
}

/// Waits for the first event `want` accepts, failing after `WAIT`.
async fn wait_for(
    rx: &mut mpsc::Receiver<SignalEvent>,
    what: &str,
    want: fn(&SignalEvent) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) if want(&ev) => return,
            Ok(Some(_)) => continue,
            _ => panic!("no {what}"),
        }
    }
}

/// A relay that stops answering without closing anything (frozen here;
/// the same as a network path that died under the connection) is noticed
/// by the heartbeat within seconds, not TCP's minutes, and the driver
/// connects again, with its subscriptions, once the relay answers.
#[tokio::test]
async fn ws_driver_notices_a_relay_that_stops_answering() {
    let relay = Relay::start(&[]).await;
    let (a, mut a_rx) = client(&relay.url).await;
    let (b, mut b_rx) = client(&relay.url).await;
    let n = ns(&["sender", "frozen"]);
    a.on(n.clone()).await.unwrap();
    settle(&b, &mut a_rx, &n).await;
    // A healthy relay answers the pings: an idle connection stays up well
    // past the silence that ends a dead one.
    let idle = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            if let Some(SignalEvent::Disconnected { reason }) = a_rx.recv().await {
                return reason;
            }
        }
    })
    .await;
    assert!(
        idle.is_err(),
        "an idle healthy connection was dropped: {idle:?}"
    );

    relay.proc.signal("STOP");
    let stopped = std::time::Instant::now();
    wait_for(&mut a_rx, "Disconnected", |e| {
        matches!(e, SignalEvent::Disconnected { .. })
    })
    .await;
    let noticed = stopped.elapsed();
    assert!(
        noticed < Duration::from_secs(10),
        "noticed after {noticed:?}"
    );
    wait_for(&mut b_rx, "Disconnected", |e| {
        matches!(e, SignalEvent::Disconnected { .. })
    })
    .await;

    relay.proc.signal("CONT");
    for rx in [&mut a_rx, &mut b_rx] {
        wait_for(rx, "reconnect", |e| {
            matches!(e, SignalEvent::Connected { reconnect: true })
        })
        .await;
    }
    settle(&b, &mut a_rx, &n).await;
    b.emit(n.clone(), json!("after the freeze")).await.unwrap();
    let (_, d) = next_message(&mut a_rx, WAIT)
        .await
        .expect("nothing after the freeze");
    assert_eq!(d, json!("after the freeze"));
}

#[tokio::test]
async fn ws_driver_reports_a_wrong_token_in_one_line() {
    let relay = Relay::start(&["--token", "right"]).await;
    let err = connect(
        &relay.url,
        SignalOptions {
            token: Some("wrong".into()),
            ..Default::default()
        },
    )
    .await
    .expect_err("accepted a wrong token");
    let text = err.to_string();
    assert!(text.contains("401") && text.contains("--token"), "{text}");
    let ok = connect(
        &relay.url,
        SignalOptions {
            token: Some("right".into()),
            ..Default::default()
        },
    )
    .await;
    assert!(ok.is_ok());
}
