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
    let mut rx = Spawn::new(
        "recorder",
        &[
            "receive",
            "--signal",
            &relay.url,
            "--room",
            "climb",
            "--events",
            "json",
            "--record",
            template.to_str().unwrap(),
        ],
    )
    .spawn();
    let proxy = sender_named(&relay, "../victim-home/important").await;
    let _tx = Spawn::new(
        "sender",
        &[
            "send",
            "--signal",
            &proxy,
            "--room",
            "climb",
            "--events",
            "json",
            "--test-source",
        ],
    )
    .spawn();
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
