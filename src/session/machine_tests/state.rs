//! The sender's state: sent with each offer, changed by sync, and bounded
//! in size on the receiver.

use super::*;

/// A state whose serialized form is exactly `len` bytes.
fn state_of_len(len: usize) -> Value {
    // {"k":"…"} is 8 bytes plus the string.
    let v = json!({ "k": "x".repeat(len - 8) });
    assert_eq!(serde_json::to_vec(&v).unwrap().len(), len);
    v
}

#[test]
fn sender_sync_merges_or_replaces_and_tells_every_peer() {
    let now = Instant::now();
    let mut s = Sender::new(SenderConfig {
        state: obj(json!({"a": 1, "b": 2})),
        ..sender_cfg()
    });
    s.start();
    // No peers: state changes, nothing is sent.
    assert_eq!(s.sync(obj(json!({"b": 3})), true), vec![]);
    assert_eq!(s.state(), &obj(json!({"a": 1, "b": 3})));

    for r in ["rb", "ra"] {
        s.handle_signal(now, None, &invoke(r, None));
    }
    s.handle_peer(Instant::now(), "ra", PeerEvent::Connected);
    let merged = obj(json!({"a": 1, "b": 4, "c": 5}));
    let expect = |state: &Map<String, Value>| {
        ["ra", "rb"]
            .iter()
            .map(|r| {
                Action::Emit(
                    to_receiver(r),
                    Message::Sync {
                        id: SID.into(),
                        state: state.clone(),
                    },
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(s.sync(obj(json!({"b": 4, "c": 5})), true), expect(&merged));
    assert_eq!(s.state(), &merged);

    let replaced = obj(json!({"c": 6}));
    assert_eq!(s.sync(replaced.clone(), false), expect(&replaced));
    assert_eq!(s.state(), &replaced);

    // Later offers carry the new state.
    s.handle_signal(now, None, &invoke("rc", None));
    assert_eq!(
        s.handle_peer(
            Instant::now(),
            "rc",
            PeerEvent::LocalDescription(offer_desc())
        ),
        vec![Action::Emit(
            to_receiver("rc"),
            Message::Offer {
                id: SID.into(),
                offer: offer_desc(),
                state: replaced,
                restarts: true,
            }
        )]
    );
}

#[test]
fn receiver_sync_updates_the_state() {
    let now = Instant::now();
    let mut r = receiver_with_peer(now, SID);
    assert_eq!(
        r.handle_signal(now, None, &sync_msg(SID, json!({"muted": true}))),
        vec![event(Event::Sync {
            id: SID.into(),
            state: obj(json!({"muted": true}))
        })]
    );
    assert_eq!(r.state_of(SID), Some(&obj(json!({"muted": true}))));
    // A sync with no state (the seed's `undefined`) clears it.
    assert_eq!(
        r.handle_signal(now, None, &json!({"type": "sync", "id": SID})),
        vec![event(Event::Sync {
            id: SID.into(),
            state: Map::new()
        })]
    );
    assert_eq!(r.state_of(SID), Some(&Map::new()));
    // A sync from a sender we have no peer with is ignored.
    assert_eq!(
        r.handle_signal(now, None, &sync_msg("sender-2", json!({"x": 1}))),
        vec![]
    );
    assert_eq!(r.state_of("sender-2"), None);
    // The state reported on connect is the synced one.
    r.handle_signal(now, None, &sync_msg(SID, json!({"v": 2})));
    assert_eq!(
        r.handle_peer(now, SID, PeerEvent::Connected),
        vec![event(Event::Connect {
            id: SID.into(),
            state: obj(json!({"v": 2}))
        })]
    );
}

#[test]
fn receiver_rejects_oversized_state() {
    let now = Instant::now();
    let mut r = receiver();
    r.start(now);
    let out = r.handle_signal(now, None, &offer(SID, state_of_len(MAX_STATE_BYTES + 1)));
    let (id, error) = single_error(&out);
    assert_eq!(id.as_deref(), Some(SID));
    assert!(error.contains("offer"), "{error}");
    assert_eq!(r.peer_count(), 0);

    // At the limit is fine.
    assert_eq!(
        r.handle_signal(now, None, &offer(SID, state_of_len(MAX_STATE_BYTES))),
        vec![Action::AcceptOffer {
            peer: SID.into(),
            offer: offer_desc()
        }]
    );
    let out = r.handle_signal(now, None, &sync_msg(SID, state_of_len(MAX_STATE_BYTES + 1)));
    let (id, error) = single_error(&out);
    assert_eq!(id.as_deref(), Some(SID));
    assert!(error.contains("sync"), "{error}");
    // The old state is kept.
    assert_eq!(r.state_of(SID), Some(&obj(state_of_len(MAX_STATE_BYTES))));

    // A huge state in a replacing offer leaves the existing peer alone.
    let out = r.handle_signal(now, None, &offer(SID, state_of_len(MAX_STATE_BYTES * 4)));
    single_error(&out);
    assert_eq!(r.peer_count(), 1);
}
