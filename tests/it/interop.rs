//! What browsers do that our peers must cope with, reproduced with the real
//! binaries: here, Chromium's mDNS-hidden host candidates.

use std::sync::Arc;

use crate::harness::*;

/// Rewrites every candidate a client sends the way Chromium hides
/// addresses: the host address becomes `<uuid>.local`.
fn hide_addresses(mut v: serde_json::Value) -> Vec<serde_json::Value> {
    if v["op"] == "emit" && v["data"]["type"] == "candidate" {
        if let Some(c) = v["data"]["candidate"]["candidate"].as_str() {
            let mut parts: Vec<String> = c.split(' ').map(str::to_owned).collect();
            if parts.len() > 4 {
                parts[4] = format!("{}.local", uuid::Uuid::new_v4());
            }
            v["data"]["candidate"]["candidate"] = serde_json::Value::String(parts.join(" "));
        }
    }
    vec![v]
}

#[tokio::test]
async fn peers_connect_when_every_candidate_of_one_side_is_an_mdns_name() {
    let relay = Relay::start(&[]).await;
    // The receiver's candidates all arrive at the sender as `.local` names,
    // as Chromium writes them without media permission.
    let proxy = tamper_proxy(relay.url.clone(), Arc::new(hide_addresses), unchanged()).await;
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
