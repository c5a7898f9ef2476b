//! The handshake: invoke, offer, answer, and the messages each machine
//! ignores or reports on the way.

use super::*;

#[test]
fn sender_offers_to_an_invoking_receiver_with_the_data_flag() {
    let now = Instant::now();
    for data in [true, false] {
        let mut s = Sender::new(SenderConfig {
            data,
            ..sender_cfg()
        });
        s.start();
        assert_eq!(
            s.handle_signal(now, None, &invoke(RID, None)),
            vec![Action::CreateOffer {
                peer: RID.into(),
                data_channel: data
            }],
            "data = {data}"
        );
        assert_eq!(s.peer_count(), 1);
        assert_eq!(s.connecting(), 1);
    }
}

#[test]
fn sender_ignores_a_duplicate_invoke() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    assert_eq!(s.handle_signal(now, None, &invoke(RID, None)), vec![]);
    assert_eq!(
        s.handle_signal(
            now + Duration::from_secs(1),
            None,
            &invoke(RID, Some(json!("x")))
        ),
        vec![]
    );
    assert_eq!(s.peer_count(), 1);
    // A different receiver still gets its own peer.
    assert_eq!(
        s.handle_signal(now, None, &invoke("receiver-2", None)),
        vec![Action::CreateOffer {
            peer: "receiver-2".into(),
            data_channel: true
        }]
    );
    assert_eq!(s.peer_count(), 2);
}

#[test]
fn sender_ignores_its_own_messages() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    for m in [
        invoke(SID, None),
        answer(SID),
        candidate(SID, cand(1)),
        dispose_msg(SID),
        offer(SID, json!({})),
        sync_msg(SID, json!({})),
    ] {
        assert_eq!(s.handle_signal(now, None, &m), vec![], "{m}");
    }
    assert_eq!(s.peer_count(), 1);
}

#[test]
fn sender_ignores_other_senders_offers_and_syncs() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    assert_eq!(
        s.handle_signal(now, None, &offer("sender-2", json!({}))),
        vec![]
    );
    assert_eq!(
        s.handle_signal(now, None, &sync_msg("sender-2", json!({}))),
        vec![]
    );
    assert_eq!(s.peer_count(), 1);
}

#[test]
fn sender_emits_its_offer_with_the_current_state() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    // The state changes between the invoke and the offer being ready.
    s.sync(obj(json!({"muted": true})), true);
    assert_eq!(
        s.handle_peer(
            Instant::now(),
            RID,
            PeerEvent::LocalDescription(offer_desc())
        ),
        vec![Action::Emit(
            to_receiver(RID),
            Message::Offer {
                id: SID.into(),
                offer: offer_desc(),
                state: obj(json!({"nick": "cam", "muted": true})),
                restarts: true,
            }
        )]
    );
    assert_eq!(
        s.handle_peer(Instant::now(), RID, PeerEvent::LocalCandidate(cand(1))),
        vec![Action::Emit(
            to_receiver(RID),
            Message::Candidate {
                id: SID.into(),
                candidate: cand(1)
            }
        )]
    );
    // Events for a peer we do not have are dropped.
    assert_eq!(
        s.handle_peer(
            Instant::now(),
            "nobody",
            PeerEvent::LocalDescription(offer_desc())
        ),
        vec![]
    );
    assert_eq!(
        s.handle_peer(Instant::now(), "nobody", PeerEvent::LocalCandidate(cand(1))),
        vec![]
    );
    assert_eq!(
        s.handle_peer(Instant::now(), "nobody", PeerEvent::Connected),
        vec![]
    );
    assert_eq!(
        s.handle_peer(Instant::now(), "nobody", PeerEvent::Failed("x".into())),
        vec![]
    );
}

#[test]
fn sender_ignores_a_second_answer() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    assert_eq!(s.handle_signal(now, None, &answer(RID)).len(), 1);
    let out = s.handle_signal(now, None, &answer(RID));
    let (id, error) = single_error(&out);
    assert_eq!(id.as_deref(), Some(RID));
    assert!(error.contains("second answer"), "{error}");
    // The peer is still there and still takes candidates.
    assert_eq!(s.peer_count(), 1);
    assert_eq!(
        s.handle_signal(now, None, &candidate(RID, cand(1))),
        vec![add(RID, cand(1))]
    );
}

#[test]
fn sender_reports_answers_and_candidates_from_unknown_peers() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    for (m, what) in [
        (answer("stranger"), "answer"),
        (candidate("stranger", cand(1)), "candidate"),
    ] {
        let out = s.handle_signal(now, None, &m);
        let (id, error) = single_error(&out);
        assert_eq!(id.as_deref(), Some("stranger"));
        assert!(error.contains(what), "{error}");
    }
    // A dispose from a stranger is silently ignored.
    assert_eq!(s.handle_signal(now, None, &dispose_msg("stranger")), vec![]);
    assert_eq!(s.peer_count(), 1);
    // And the real peer's queue is untouched: its answer flushes nothing.
    assert_eq!(
        s.handle_signal(now, None, &answer(RID)),
        vec![Action::ApplyAnswer {
            peer: RID.into(),
            answer: answer_desc()
        }]
    );
}

#[test]
fn receiver_answers_a_sender_announcement_directly() {
    let now = Instant::now();
    let mut r = receiver();
    r.start(now);
    assert_eq!(
        r.handle_signal(now, None, &invoke(SID, None)),
        vec![Action::Emit(
            to_sender(SID),
            Message::Invoke {
                id: RID.into(),
                credentials: Some(json!({"token": "t0ken"})),
                proof: None,
                restarts: true,
            }
        )]
    );
    assert_eq!(r.peer_count(), 0, "an invoke alone makes no peer");
    // Its own invoke (echoed by the relay) is ignored.
    assert_eq!(r.handle_signal(now, None, &invoke(RID, None)), vec![]);
}

#[test]
fn receiver_emits_its_answer_and_candidates_to_the_sender() {
    let now = Instant::now();
    let mut r = receiver_with_peer(now, SID);
    assert_eq!(
        r.handle_peer(now, SID, PeerEvent::LocalDescription(answer_desc())),
        vec![Action::Emit(
            to_sender(SID),
            Message::Answer {
                id: RID.into(),
                answer: answer_desc()
            }
        )]
    );
    assert_eq!(
        r.handle_peer(now, SID, PeerEvent::LocalCandidate(cand(2))),
        vec![Action::Emit(
            to_sender(SID),
            Message::Candidate {
                id: RID.into(),
                candidate: cand(2)
            }
        )]
    );
    assert_eq!(
        r.handle_peer(now, "nobody", PeerEvent::LocalCandidate(cand(2))),
        vec![]
    );
}

#[test]
fn receiver_replaces_the_peer_on_a_second_offer() {
    let t0 = Instant::now();
    let mut r = receiver_with_peer(t0, SID);
    r.handle_peer(t0, SID, PeerEvent::Connected);
    assert_eq!(r.connected(), 1);
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(
        r.handle_signal(t1, None, &offer(SID, json!({"nick": "restarted"}))),
        vec![
            // Its side gave the connection up: lost, so what it was
            // recording goes on.
            give_up(SID),
            Action::AcceptOffer {
                peer: SID.into(),
                offer: offer_desc()
            },
        ]
    );
    assert_eq!(r.peer_count(), 1);
    assert_eq!(r.connected(), 0, "the new peer is not connected yet");
    assert_eq!(r.state_of(SID), Some(&obj(json!({"nick": "restarted"}))));
    // The new peer connects and reports once more.
    assert_eq!(
        r.handle_peer(t1, SID, PeerEvent::Connected),
        vec![event(Event::Connect {
            id: SID.into(),
            state: obj(json!({"nick": "restarted"}))
        })]
    );
}

#[test]
fn receiver_ignores_answers_and_its_own_messages() {
    let now = Instant::now();
    let mut r = receiver_with_peer(now, SID);
    assert_eq!(r.handle_signal(now, None, &answer(SID)), vec![]);
    assert_eq!(r.handle_signal(now, None, &answer("sender-2")), vec![]);
    for m in [
        offer(RID, json!({})),
        candidate(RID, cand(1)),
        sync_msg(RID, json!({})),
        dispose_msg(RID),
    ] {
        assert_eq!(r.handle_signal(now, None, &m), vec![], "{m}");
    }
    assert_eq!(r.peer_count(), 1);
}
