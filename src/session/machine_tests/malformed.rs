//! Malformed and odd messages: reported, never acted on.

use super::*;

fn malformed() -> Vec<Value> {
    let deep = (0..100).fold(json!("bottom"), |v, _| json!([v]));
    vec![
        json!(null),
        json!(true),
        json!(42),
        json!(1.5),
        json!("invoke"),
        json!(""),
        json!([]),
        json!([{"type": "invoke", "id": "x"}]),
        json!({}),
        json!({"id": "x"}),
        json!({"type": "invoke"}),
        json!({"type": "invoke", "id": ""}),
        json!({"type": "invoke", "id": 5}),
        json!({"type": "invoke", "id": null}),
        json!({"type": 1, "id": "x"}),
        json!({"type": "hello", "id": "x"}),
        json!({"type": "INVOKE", "id": "x"}),
        json!({"type": "offer", "id": SID}),
        json!({"type": "offer", "id": SID, "offer": null}),
        json!({"type": "offer", "id": SID, "offer": "v=0"}),
        json!({"type": "offer", "id": SID, "offer": {"type": "answer", "sdp": "v=0"}}),
        json!({"type": "offer", "id": SID, "offer": {"type": "offer"}}),
        json!({"type": "offer", "id": SID, "offer": {"type": "offer", "sdp": 1}}),
        json!({"type": "answer", "id": RID}),
        json!({"type": "answer", "id": RID, "answer": "sdp"}),
        json!({"type": "answer", "id": RID, "answer": {"type": "offer", "sdp": "v=0"}}),
        json!({"type": "answer", "id": RID, "answer": {"type": "pranswer", "sdp": "v=0"}}),
        json!({"type": "candidate", "id": SID}),
        json!({"type": "candidate", "id": SID, "candidate": null}),
        json!({"type": "candidate", "id": SID, "candidate": "candidate:1 1 udp"}),
        json!({"type": "candidate", "id": SID, "candidate": {"sdpMid": "0"}}),
        json!({"type": "candidate", "id": SID, "candidate": {"candidate": 5}}),
        json!({"type": "candidate", "id": SID, "candidate": {"candidate": "c", "sdpMLineIndex": 70000}}),
        json!({"type": "candidate", "id": SID, "candidate": {"candidate": "c", "sdpMLineIndex": -1}}),
        json!({"type": "candidate", "id": RID}),
        json!({"type": "candidate", "id": RID, "candidate": {"sdpMLineIndex": 0}}),
        json!({"type": "x".repeat(100_000), "id": "y".repeat(100_000)}),
        json!({"type": "offer", "id": SID, "offer": {"type": "answer", "sdp": "x".repeat(1 << 20)}}),
        Value::Array((0..10_000).map(Value::from).collect()),
        json!({"type": "candidate", "id": SID, "candidate": deep.clone()}),
        json!({"type": deep.clone(), "id": deep}),
    ]
}

/// Actions that touch a peer connection (everything the adapter would do).
fn is_peer_action(a: &Action) -> bool {
    matches!(
        a,
        Action::CreateOffer { .. }
            | Action::AcceptOffer { .. }
            | Action::ApplyAnswer { .. }
            | Action::AddCandidate { .. }
            | Action::ClosePeer { .. }
    )
}

/// Sends every malformed message to a machine with live peers: the answer
/// is nothing or one Error event, and no peer is touched.
#[test]
fn malformed_messages_are_reported_never_acted_on() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    let mut r = receiver_with_peer(now, SID);
    for m in malformed() {
        let short: String = m.to_string().chars().take(120).collect();
        for (who, out) in [
            ("sender", s.handle_signal(now, None, &m)),
            ("receiver", r.handle_signal(now, None, &m)),
        ] {
            assert!(
                !out.iter().any(is_peer_action),
                "{who} acted on {short}: {out:?}"
            );
            match out.as_slice() {
                [] => {}
                [Action::Event(Event::Error { id, .. })] => {
                    assert_eq!(
                        id.as_deref(),
                        m.get("id").and_then(Value::as_str),
                        "{who}: error id for {short}"
                    );
                }
                other => panic!("{who} answered {short} with {other:?}"),
            }
        }
        assert_eq!(s.peer_count(), 1);
        assert_eq!(r.peer_count(), 1);
    }
    // The machines still work normally afterwards.
    assert_eq!(
        s.handle_signal(now, None, &answer(RID)),
        vec![Action::ApplyAnswer {
            peer: RID.into(),
            answer: answer_desc()
        }]
    );
    assert_eq!(
        r.handle_signal(now, None, &candidate(SID, cand(1))),
        vec![add(SID, cand(1))]
    );
}

#[test]
fn malformed_messages_name_the_problem() {
    let now = Instant::now();
    let mut s = sender();
    let cases = [
        (json!(null), "not a JSON object"),
        (json!({"id": "x"}), "\"type\""),
        (json!({"type": "invoke"}), "\"id\""),
        (json!({"type": "hello", "id": "x"}), "unknown message type"),
        (
            json!({"type": "answer", "id": "x", "answer": {"type": "offer", "sdp": ""}}),
            "not \"answer\"",
        ),
        (
            json!({"type": "candidate", "id": "x", "candidate": {"sdpMid": "0"}}),
            "candidate",
        ),
    ];
    for (m, expect) in cases {
        let out = s.handle_signal(now, None, &m);
        let (_, error) = single_error(&out);
        assert!(error.contains(expect), "{m}: {error}");
    }
}

#[test]
fn unknown_fields_and_odd_states_are_tolerated() {
    let now = Instant::now();
    let mut r = receiver();
    r.start(now);
    // A non-object state counts as none; extra fields are ignored.
    let m = json!({
        "type": "offer", "id": SID, "extra": [1, 2],
        "offer": {"type": "offer", "sdp": "v=0 offer", "x": 1},
        "state": "not an object",
    });
    assert_eq!(
        r.handle_signal(now, None, &m),
        vec![Action::AcceptOffer {
            peer: SID.into(),
            offer: offer_desc()
        }]
    );
    assert_eq!(r.state_of(SID), Some(&Map::new()));
}
