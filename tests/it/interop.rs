//! What browsers do that our peers must cope with, reproduced with the real
//! binaries: here, Chromium's mDNS-hidden host candidates.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// Rewrites every candidate in a frame the way Chromium hides addresses:
/// the host address becomes `<uuid>.local`.
fn hide_addresses(frame: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(frame) else {
        return frame.to_owned();
    };
    if v["op"] == "emit" && v["data"]["type"] == "candidate" {
        if let Some(c) = v["data"]["candidate"]["candidate"].as_str() {
            let mut parts: Vec<String> = c.split(' ').map(str::to_owned).collect();
            if parts.len() > 4 {
                parts[4] = format!("{}.local", uuid::Uuid::new_v4());
            }
            v["data"]["candidate"]["candidate"] = serde_json::Value::String(parts.join(" "));
        }
    }
    v.to_string()
}

/// A WebSocket proxy in front of the relay that hides the addresses in the
/// candidates its client sends.
async fn mdns_proxy(relay_url: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let relay_url = relay_url.clone();
            tokio::spawn(async move {
                let Ok(client) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let Ok((upstream, _)) = tokio_tungstenite::connect_async(relay_url.as_str()).await
                else {
                    return;
                };
                let (mut c_tx, mut c_rx) = client.split();
                let (mut u_tx, mut u_rx) = upstream.split();
                let up = async {
                    while let Some(Ok(Message::Text(t))) = c_rx.next().await {
                        if u_tx
                            .send(Message::Text(hide_addresses(t.as_str()).into()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                };
                let down = async {
                    while let Some(Ok(m)) = u_rx.next().await {
                        if c_tx.send(m).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::select! { () = up => {}, () = down => {} }
            });
        }
    });
    url
}

#[tokio::test]
async fn peers_connect_when_every_candidate_of_one_side_is_an_mdns_name() {
    let relay = Relay::start(&[]).await;
    // The receiver's candidates all arrive at the sender as `.local` names,
    // as Chromium writes them without media permission.
    let proxy = mdns_proxy(relay.url.clone()).await;
    let mut tx = Spawn::new(
        "sender",
        &[
            "send", "--signal", &relay.url, "--room", "mdns", "--events", "json",
        ],
    )
    .spawn();
    let mut rx = Spawn::new(
        "receiver",
        &[
            "receive", "--signal", &proxy, "--room", "mdns", "--events", "json",
        ],
    )
    .spawn();
    tx.wait_stderr(r#""event":"channel""#).await;
    tx.write_stdin(b"through prflx\n").await;
    assert_eq!(rx.line().await, "through prflx");
    // The sender really saw the hidden candidates (they may trickle in after
    // the connection is up) and skipped them.
    tx.wait_stderr("skipping an mDNS (.local) candidate").await;
}
