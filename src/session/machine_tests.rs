//! Unit tests of the Sender and Receiver state machines: every test feeds
//! inputs and checks the exact actions that come back.

use super::*;

use serde_json::json;

const ROOM: &str = "demo";
const SID: &str = "sender-1";
const RID: &str = "receiver-1";
const TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- helpers

fn sender_cfg() -> SenderConfig {
    SenderConfig {
        id: SID.into(),
        room: ROOM.into(),
        state: obj(json!({"nick": "cam"})),
        data: true,
        verify: None,
        connection_timeout: TIMEOUT,
    }
}

fn sender() -> Sender {
    Sender::new(sender_cfg())
}

fn receiver_cfg() -> ReceiverConfig {
    ReceiverConfig {
        id: RID.into(),
        room: ROOM.into(),
        credentials: Some(json!({"token": "t0ken"})),
        connection_timeout: TIMEOUT,
        ping_interval: Duration::from_secs(30),
        ping_attempts: 10,
    }
}

fn receiver() -> Receiver {
    Receiver::new(receiver_cfg())
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn desc(kind: &str, sdp: &str) -> Description {
    Description {
        kind: kind.into(),
        sdp: sdp.into(),
    }
}

fn offer_desc() -> Description {
    desc("offer", "v=0 offer")
}

fn answer_desc() -> Description {
    desc("answer", "v=0 answer")
}

/// A host candidate with a distinct address per `n`.
fn cand(n: u8) -> Candidate {
    Candidate {
        candidate: format!("candidate:{n} 1 udp 2122260223 192.168.1.{n} 5000{n} typ host"),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("ufrag".into()),
    }
}

fn mdns_cand() -> Candidate {
    Candidate {
        candidate:
            "candidate:9 1 udp 2122260223 3f0c1a2b-1111-2222-3333-444455556666.local 50000 typ host"
                .into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: None,
    }
}

fn end_of_candidates() -> Candidate {
    Candidate {
        candidate: String::new(),
        sdp_mid: Some("0".into()),
        ..Default::default()
    }
}

fn invoke(id: &str, credentials: Option<Value>) -> Value {
    Message::Invoke {
        id: id.into(),
        credentials,
    }
    .to_value()
}

fn answer(id: &str) -> Value {
    Message::Answer {
        id: id.into(),
        answer: answer_desc(),
    }
    .to_value()
}

fn offer(id: &str, state: Value) -> Value {
    Message::Offer {
        id: id.into(),
        offer: offer_desc(),
        state: obj(state),
    }
    .to_value()
}

fn candidate(id: &str, c: Candidate) -> Value {
    Message::Candidate {
        id: id.into(),
        candidate: c,
    }
    .to_value()
}

fn sync_msg(id: &str, state: Value) -> Value {
    Message::Sync {
        id: id.into(),
        state: obj(state),
    }
    .to_value()
}

fn dispose_msg(id: &str) -> Value {
    Message::Dispose {
        id: id.into(),
        state: None,
    }
    .to_value()
}

fn to_receiver(rid: &str) -> Namespace {
    Namespace::receiver(ROOM, Some(rid))
}

fn to_sender(sid: &str) -> Namespace {
    Namespace::sender(ROOM, Some(sid))
}

fn add(peer: &str, c: Candidate) -> Action {
    Action::AddCandidate {
        peer: peer.into(),
        candidate: c,
    }
}

fn close(peer: &str) -> Action {
    Action::ClosePeer { peer: peer.into() }
}

fn event(e: Event) -> Action {
    Action::Event(e)
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

/// The one `Error` event in `actions`, or a panic that shows them.
fn single_error(actions: &[Action]) -> (Option<String>, String) {
    match actions {
        [Action::Event(Event::Error { id, error })] => (id.clone(), error.clone()),
        other => panic!("expected exactly one Error event, got {other:?}"),
    }
}

fn count_invokes(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Emit(_, Message::Invoke { .. })))
        .count()
}

/// A sender with one peer `rid` that has been offered (invoke handled).
fn sender_with_peer(now: Instant, rid: &str) -> Sender {
    let mut s = sender();
    s.start();
    let out = s.handle_signal(now, &invoke(rid, None));
    assert_eq!(
        out,
        vec![Action::CreateOffer {
            peer: rid.into(),
            data_channel: true
        }]
    );
    s
}

/// A receiver that has accepted an offer from `sid`.
fn receiver_with_peer(now: Instant, sid: &str) -> Receiver {
    let mut r = receiver();
    r.start(now);
    let out = r.handle_signal(now, &offer(sid, json!({"nick": "cam"})));
    assert_eq!(
        out,
        vec![Action::AcceptOffer {
            peer: sid.into(),
            offer: offer_desc()
        }]
    );
    r
}

// ----------------------------------------------------------------- sender

#[test]
fn sender_start_subscribes_and_announces() {
    let mut s = sender();
    assert_eq!(s.id(), SID);
    assert_eq!(
        s.start(),
        vec![
            Action::Subscribe(Namespace::sender(ROOM, None)),
            Action::Subscribe(Namespace::sender(ROOM, Some(SID))),
            Action::Emit(
                Namespace::receiver(ROOM, None),
                Message::Invoke {
                    id: SID.into(),
                    credentials: None
                }
            ),
        ]
    );
    // The namespaces are the ones of PROTOCOL.md §1, exactly.
    assert_eq!(
        Namespace::sender(ROOM, Some(SID)).parts(),
        ["sender", ROOM, SID]
    );
    assert_eq!(
        s.reconnected(),
        vec![Action::Emit(
            Namespace::receiver(ROOM, None),
            Message::Invoke {
                id: SID.into(),
                credentials: None
            }
        )]
    );
    assert_eq!(s.peer_count(), 0);
}

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
            s.handle_signal(now, &invoke(RID, None)),
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
    assert_eq!(s.handle_signal(now, &invoke(RID, None)), vec![]);
    assert_eq!(
        s.handle_signal(now + Duration::from_secs(1), &invoke(RID, Some(json!("x")))),
        vec![]
    );
    assert_eq!(s.peer_count(), 1);
    // A different receiver still gets its own peer.
    assert_eq!(
        s.handle_signal(now, &invoke("receiver-2", None)),
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
        assert_eq!(s.handle_signal(now, &m), vec![], "{m}");
    }
    assert_eq!(s.peer_count(), 1);
}

#[test]
fn sender_ignores_other_senders_offers_and_syncs() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    assert_eq!(s.handle_signal(now, &offer("sender-2", json!({}))), vec![]);
    assert_eq!(
        s.handle_signal(now, &sync_msg("sender-2", json!({}))),
        vec![]
    );
    assert_eq!(s.peer_count(), 1);
}

#[test]
fn sender_verify_rejects_wrong_and_missing_credentials() {
    let now = Instant::now();
    let mut s = Sender::new(SenderConfig {
        verify: Some(Verify {
            accepted: vec![json!({"token": "good"}), json!("also-good")],
        }),
        ..sender_cfg()
    });
    s.start();
    let rejected = |id: &str| vec![event(Event::Rejected { id: id.into() })];

    assert_eq!(
        s.handle_signal(now, &invoke("r-bad", Some(json!({"token": "bad"})))),
        rejected("r-bad")
    );
    assert_eq!(
        s.handle_signal(now, &invoke("r-none", None)),
        rejected("r-none")
    );
    // `credentials: null` is no credentials.
    assert_eq!(
        s.handle_signal(
            now,
            &json!({"type": "invoke", "id": "r-null", "credentials": null})
        ),
        rejected("r-null")
    );
    // Close is not equal.
    assert_eq!(
        s.handle_signal(
            now,
            &invoke("r-extra", Some(json!({"token": "good", "x": 1})))
        ),
        rejected("r-extra")
    );
    assert_eq!(s.peer_count(), 0, "no peer for a rejected receiver");

    assert_eq!(
        s.handle_signal(now, &invoke("r-good", Some(json!({"token": "good"})))),
        vec![Action::CreateOffer {
            peer: "r-good".into(),
            data_channel: true
        }]
    );
    assert_eq!(
        s.handle_signal(now, &invoke("r-good2", Some(json!("also-good")))),
        vec![Action::CreateOffer {
            peer: "r-good2".into(),
            data_channel: true
        }]
    );
    // A rejected receiver that comes back with the right credentials is let in.
    assert_eq!(
        s.handle_signal(now, &invoke("r-bad", Some(json!("also-good")))),
        vec![Action::CreateOffer {
            peer: "r-bad".into(),
            data_channel: true
        }]
    );
    assert_eq!(s.peer_count(), 3);
}

#[test]
fn verify_with_no_accepted_values_rejects_everyone() {
    let v = Verify::default();
    assert!(!v.accepts(None));
    assert!(!v.accepts(Some(&json!(null))));
    assert!(!v.accepts(Some(&json!("x"))));
    let v = Verify {
        accepted: vec![json!(1)],
    };
    assert!(v.accepts(Some(&json!(1))));
    assert!(!v.accepts(Some(&json!("1"))));
}

#[test]
fn sender_without_verify_ignores_credentials() {
    let now = Instant::now();
    let mut s = sender();
    s.start();
    assert_eq!(
        s.handle_signal(now, &invoke(RID, Some(json!({"anything": true})))),
        vec![Action::CreateOffer {
            peer: RID.into(),
            data_channel: true
        }]
    );
}

#[test]
fn sender_emits_its_offer_with_the_current_state() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    // The state changes between the invoke and the offer being ready.
    s.sync(obj(json!({"muted": true})), true);
    assert_eq!(
        s.handle_peer(RID, PeerEvent::LocalDescription(offer_desc())),
        vec![Action::Emit(
            to_receiver(RID),
            Message::Offer {
                id: SID.into(),
                offer: offer_desc(),
                state: obj(json!({"nick": "cam", "muted": true})),
            }
        )]
    );
    assert_eq!(
        s.handle_peer(RID, PeerEvent::LocalCandidate(cand(1))),
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
        s.handle_peer("nobody", PeerEvent::LocalDescription(offer_desc())),
        vec![]
    );
    assert_eq!(
        s.handle_peer("nobody", PeerEvent::LocalCandidate(cand(1))),
        vec![]
    );
    assert_eq!(s.handle_peer("nobody", PeerEvent::Connected), vec![]);
    assert_eq!(
        s.handle_peer("nobody", PeerEvent::Failed("x".into())),
        vec![]
    );
}

#[test]
fn sender_queues_candidates_until_the_answer_then_flushes_in_order() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    for n in 1..=3 {
        assert_eq!(s.handle_signal(now, &candidate(RID, cand(n))), vec![]);
    }
    assert_eq!(
        s.handle_signal(now, &answer(RID)),
        vec![
            Action::ApplyAnswer {
                peer: RID.into(),
                answer: answer_desc()
            },
            add(RID, cand(1)),
            add(RID, cand(2)),
            add(RID, cand(3)),
        ]
    );
    // After the answer, candidates go straight through.
    assert_eq!(
        s.handle_signal(now, &candidate(RID, cand(4))),
        vec![add(RID, cand(4))]
    );
}

#[test]
fn sender_flushes_reordered_candidates_per_peer_in_arrival_order() {
    // The relay delivered the receivers' candidates before their answers,
    // interleaved between two receivers: each peer gets its own, in the
    // order they came, right after its own answer.
    let now = Instant::now();
    let mut s = sender_with_peer(now, "ra");
    s.handle_signal(now, &invoke("rb", None));
    let arrivals = [("ra", 5), ("rb", 1), ("ra", 3), ("rb", 2), ("ra", 4)];
    for (peer, n) in arrivals {
        assert_eq!(s.handle_signal(now, &candidate(peer, cand(n))), vec![]);
    }
    assert_eq!(
        s.handle_signal(now, &answer("rb")),
        vec![
            Action::ApplyAnswer {
                peer: "rb".into(),
                answer: answer_desc()
            },
            add("rb", cand(1)),
            add("rb", cand(2)),
        ]
    );
    // ra's candidates still wait for ra's answer.
    assert_eq!(
        s.handle_signal(now, &candidate("ra", cand(6))),
        vec![],
        "ra has no answer yet"
    );
    assert_eq!(
        s.handle_signal(now, &answer("ra")),
        vec![
            Action::ApplyAnswer {
                peer: "ra".into(),
                answer: answer_desc()
            },
            add("ra", cand(5)),
            add("ra", cand(3)),
            add("ra", cand(4)),
            add("ra", cand(6)),
        ]
    );
}

#[test]
fn sender_keeps_a_bounded_number_of_early_candidates() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    for n in 0..(MAX_EARLY_CANDIDATES + 10) {
        let c = Candidate {
            candidate: format!("candidate:{n} 1 udp 1 10.0.0.1 {n} typ host"),
            ..Default::default()
        };
        assert_eq!(s.handle_signal(now, &candidate(RID, c)), vec![]);
    }
    let out = s.handle_signal(now, &answer(RID));
    assert_eq!(out.len(), 1 + MAX_EARLY_CANDIDATES);
    assert!(matches!(out[0], Action::ApplyAnswer { .. }));
    // The first ones are kept, in order.
    for (i, a) in out[1..].iter().enumerate() {
        let Action::AddCandidate { candidate, .. } = a else {
            panic!("not a candidate: {a:?}");
        };
        assert!(candidate.candidate.starts_with(&format!("candidate:{i} ")));
    }
}

#[test]
fn sender_skips_mdns_and_end_of_candidates() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    // Before the answer: not queued.
    assert_eq!(s.handle_signal(now, &candidate(RID, mdns_cand())), vec![]);
    assert_eq!(
        s.handle_signal(now, &candidate(RID, end_of_candidates())),
        vec![]
    );
    assert_eq!(s.handle_signal(now, &candidate(RID, cand(1))), vec![]);
    assert_eq!(
        s.handle_signal(now, &answer(RID)),
        vec![
            Action::ApplyAnswer {
                peer: RID.into(),
                answer: answer_desc()
            },
            add(RID, cand(1)),
        ]
    );
    // After the answer: not applied.
    assert_eq!(s.handle_signal(now, &candidate(RID, mdns_cand())), vec![]);
    assert_eq!(
        s.handle_signal(now, &candidate(RID, end_of_candidates())),
        vec![]
    );
}

#[test]
fn sender_ignores_a_second_answer() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    assert_eq!(s.handle_signal(now, &answer(RID)).len(), 1);
    let out = s.handle_signal(now, &answer(RID));
    let (id, error) = single_error(&out);
    assert_eq!(id.as_deref(), Some(RID));
    assert!(error.contains("second answer"), "{error}");
    // The peer is still there and still takes candidates.
    assert_eq!(s.peer_count(), 1);
    assert_eq!(
        s.handle_signal(now, &candidate(RID, cand(1))),
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
        let out = s.handle_signal(now, &m);
        let (id, error) = single_error(&out);
        assert_eq!(id.as_deref(), Some("stranger"));
        assert!(error.contains(what), "{error}");
    }
    // A dispose from a stranger is silently ignored.
    assert_eq!(s.handle_signal(now, &dispose_msg("stranger")), vec![]);
    assert_eq!(s.peer_count(), 1);
    // And the real peer's queue is untouched: its answer flushes nothing.
    assert_eq!(
        s.handle_signal(now, &answer(RID)),
        vec![Action::ApplyAnswer {
            peer: RID.into(),
            answer: answer_desc()
        }]
    );
}

#[test]
fn sender_reports_a_connection_once() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    assert_eq!(s.connecting(), 1);
    assert_eq!(
        s.handle_peer(RID, PeerEvent::Connected),
        vec![event(Event::Connect {
            id: RID.into(),
            state: Map::new()
        })]
    );
    assert_eq!(s.handle_peer(RID, PeerEvent::Connected), vec![]);
    assert_eq!(s.connecting(), 0);
    assert_eq!(s.peer_count(), 1);
    assert_eq!(
        s.handle_peer(RID, PeerEvent::ChannelOpen),
        vec![event(Event::Channel { id: RID.into() })]
    );
}

#[test]
fn sender_disposes_a_failed_peer_and_tells_the_receiver() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    s.handle_peer(RID, PeerEvent::Connected);
    assert_eq!(
        s.handle_peer(RID, PeerEvent::Failed("ice failed".into())),
        vec![
            close(RID),
            Action::Emit(
                to_receiver(RID),
                Message::Dispose {
                    id: SID.into(),
                    state: Some(obj(json!({"nick": "cam"}))),
                }
            ),
            event(Event::Dispose {
                id: RID.into(),
                reason: Some("ice failed".into())
            }),
        ]
    );
    assert_eq!(s.peer_count(), 0);
    // Late events of the closed peer are dropped, not resurrected.
    assert_eq!(s.handle_peer(RID, PeerEvent::Connected), vec![]);
    assert_eq!(
        s.handle_peer(RID, PeerEvent::Failed("again".into())),
        vec![]
    );
    assert_eq!(s.dispose(RID, None), vec![]);
    // The receiver may come back: a new invoke makes a new peer.
    assert_eq!(
        s.handle_signal(now, &invoke(RID, None)),
        vec![Action::CreateOffer {
            peer: RID.into(),
            data_channel: true
        }]
    );
}

#[test]
fn sender_tick_gives_up_unconnected_peers_only() {
    let t0 = Instant::now();
    let mut s = sender_with_peer(t0, "late");
    s.handle_signal(t0, &invoke("fast", None));
    s.handle_peer("fast", PeerEvent::Connected);
    let t1 = t0 + Duration::from_secs(10);
    s.handle_signal(t1, &invoke("young", None));
    assert_eq!(s.peer_count(), 3);

    assert_eq!(s.tick(t0), vec![]);
    assert_eq!(s.tick(t0 + TIMEOUT - Duration::from_millis(1)), vec![]);
    assert_eq!(
        s.tick(t0 + TIMEOUT),
        vec![
            close("late"),
            Action::Emit(
                to_receiver("late"),
                Message::Dispose {
                    id: SID.into(),
                    state: Some(obj(json!({"nick": "cam"})))
                }
            ),
            event(Event::Dispose {
                id: "late".into(),
                reason: Some("did not connect in time".into())
            }),
        ]
    );
    assert_eq!(s.peer_count(), 2);
    // "young" was created 10 s later and times out 10 s later.
    assert_eq!(s.tick(t1 + TIMEOUT - Duration::from_millis(1)), vec![]);
    let out = s.tick(t1 + TIMEOUT);
    assert_eq!(out.first(), Some(&close("young")));
    assert_eq!(out.len(), 3);
    // The connected peer stays, however long.
    assert_eq!(s.tick(t0 + TIMEOUT * 100), vec![]);
    assert_eq!(s.peer_count(), 1);
    // A time before the peer was created does not panic or dispose.
    assert_eq!(s.tick(t0), vec![]);
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
        s.handle_signal(now, &invoke(r, None));
    }
    s.handle_peer("ra", PeerEvent::Connected);
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
    s.handle_signal(now, &invoke("rc", None));
    assert_eq!(
        s.handle_peer("rc", PeerEvent::LocalDescription(offer_desc())),
        vec![Action::Emit(
            to_receiver("rc"),
            Message::Offer {
                id: SID.into(),
                offer: offer_desc(),
                state: replaced
            }
        )]
    );
}

#[test]
fn sender_stop_disposes_every_peer_and_leaves() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, "rb");
    s.handle_signal(now, &invoke("ra", None));
    s.handle_peer("rb", PeerEvent::Connected);
    let state = obj(json!({"nick": "cam"}));
    let dispose = |r: &str| {
        vec![
            close(r),
            Action::Emit(
                to_receiver(r),
                Message::Dispose {
                    id: SID.into(),
                    state: Some(state.clone()),
                },
            ),
            event(Event::Dispose {
                id: r.into(),
                reason: None,
            }),
        ]
    };
    let mut expect = dispose("ra");
    expect.extend(dispose("rb"));
    expect.push(Action::Unsubscribe(Namespace::sender(ROOM, None)));
    expect.push(Action::Unsubscribe(Namespace::sender(ROOM, Some(SID))));
    assert_eq!(s.stop(), expect);
    assert_eq!(s.peer_count(), 0);
    assert_eq!(s.tick(now + TIMEOUT * 2), vec![]);
}

#[test]
fn sender_closes_the_peer_of_a_receiver_that_leaves() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    s.handle_peer(RID, PeerEvent::Connected);
    assert_eq!(
        s.handle_signal(now, &dispose_msg(RID)),
        vec![
            close(RID),
            event(Event::Dispose {
                id: RID.into(),
                reason: Some("receiver left".into())
            }),
        ]
    );
    assert_eq!(s.peer_count(), 0);
    assert_eq!(s.handle_signal(now, &dispose_msg(RID)), vec![]);
}

// --------------------------------------------------------------- receiver

#[test]
fn receiver_start_subscribes_and_invokes_with_credentials() {
    let now = Instant::now();
    let mut r = receiver();
    assert_eq!(r.id(), RID);
    let invoke_all = Action::Emit(
        Namespace::sender(ROOM, None),
        Message::Invoke {
            id: RID.into(),
            credentials: Some(json!({"token": "t0ken"})),
        },
    );
    assert_eq!(
        r.start(now),
        vec![
            Action::Subscribe(Namespace::receiver(ROOM, None)),
            Action::Subscribe(Namespace::receiver(ROOM, Some(RID))),
            invoke_all.clone(),
        ]
    );
    assert_eq!(r.reconnected(), vec![invoke_all]);

    let mut anon = Receiver::new(ReceiverConfig {
        credentials: None,
        ..receiver_cfg()
    });
    assert_eq!(
        anon.start(now)[2],
        Action::Emit(
            Namespace::sender(ROOM, None),
            Message::Invoke {
                id: RID.into(),
                credentials: None
            }
        )
    );
}

#[test]
fn receiver_answers_a_sender_announcement_directly() {
    let now = Instant::now();
    let mut r = receiver();
    r.start(now);
    assert_eq!(
        r.handle_signal(now, &invoke(SID, None)),
        vec![Action::Emit(
            to_sender(SID),
            Message::Invoke {
                id: RID.into(),
                credentials: Some(json!({"token": "t0ken"}))
            }
        )]
    );
    assert_eq!(r.peer_count(), 0, "an invoke alone makes no peer");
    // Its own invoke (echoed by the relay) is ignored.
    assert_eq!(r.handle_signal(now, &invoke(RID, None)), vec![]);
}

#[test]
fn receiver_accepts_an_offer_and_flushes_early_candidates_in_order() {
    let now = Instant::now();
    let mut r = receiver();
    r.start(now);
    // Candidates overtook the offer; another sender's too.
    for (sid, n) in [(SID, 3), ("sender-2", 7), (SID, 1), (SID, 2)] {
        assert_eq!(r.handle_signal(now, &candidate(sid, cand(n))), vec![]);
    }
    // mDNS and end-of-candidates are not kept.
    assert_eq!(r.handle_signal(now, &candidate(SID, mdns_cand())), vec![]);
    assert_eq!(
        r.handle_signal(now, &candidate(SID, end_of_candidates())),
        vec![]
    );
    assert_eq!(r.peer_count(), 0);
    assert_eq!(
        r.handle_signal(now, &offer(SID, json!({"nick": "cam"}))),
        vec![
            Action::AcceptOffer {
                peer: SID.into(),
                offer: offer_desc()
            },
            add(SID, cand(3)),
            add(SID, cand(1)),
            add(SID, cand(2)),
        ]
    );
    assert_eq!(r.peer_count(), 1);
    assert_eq!(r.state_of(SID), Some(&obj(json!({"nick": "cam"}))));
    // After the offer, candidates are applied at once; mDNS still skipped.
    assert_eq!(
        r.handle_signal(now, &candidate(SID, cand(4))),
        vec![add(SID, cand(4))]
    );
    assert_eq!(r.handle_signal(now, &candidate(SID, mdns_cand())), vec![]);
    // The other sender's early candidate waits for its own offer.
    assert_eq!(
        r.handle_signal(now, &offer("sender-2", json!({}))),
        vec![
            Action::AcceptOffer {
                peer: "sender-2".into(),
                offer: offer_desc()
            },
            add("sender-2", cand(7)),
        ]
    );
    // Flushed once: a replacing offer does not replay them.
    assert_eq!(
        r.handle_signal(now, &offer("sender-2", json!({}))),
        vec![
            close("sender-2"),
            Action::AcceptOffer {
                peer: "sender-2".into(),
                offer: offer_desc()
            },
        ]
    );
}

#[test]
fn receiver_bounds_early_candidates_per_sender_and_senders() {
    let now = Instant::now();
    let mut r = receiver();
    r.start(now);
    for n in 0..(MAX_EARLY_CANDIDATES + 5) {
        let c = Candidate {
            candidate: format!("candidate:{n} 1 udp 1 10.0.0.1 {n} typ host"),
            ..Default::default()
        };
        r.handle_signal(now, &candidate(SID, c));
    }
    // Fill the table of early peers: the oldest (SID) is evicted.
    for p in 0..MAX_EARLY_PEERS {
        r.handle_signal(now, &candidate(&format!("s{p}"), cand(1)));
    }
    assert_eq!(
        r.handle_signal(now, &offer(SID, json!({}))),
        vec![Action::AcceptOffer {
            peer: SID.into(),
            offer: offer_desc()
        }]
    );
    // The newest are all kept.
    assert_eq!(
        r.handle_signal(now, &offer("s1", json!({}))),
        vec![
            Action::AcceptOffer {
                peer: "s1".into(),
                offer: offer_desc()
            },
            add("s1", cand(1)),
        ]
    );

    // Per sender, the first MAX_EARLY_CANDIDATES are kept.
    let mut r = receiver();
    r.start(now);
    for n in 0..(MAX_EARLY_CANDIDATES + 5) {
        let c = Candidate {
            candidate: format!("candidate:{n} 1 udp 1 10.0.0.1 {n} typ host"),
            ..Default::default()
        };
        r.handle_signal(now, &candidate(SID, c));
    }
    let out = r.handle_signal(now, &offer(SID, json!({})));
    assert_eq!(out.len(), 1 + MAX_EARLY_CANDIDATES);
    let Action::AddCandidate {
        candidate: last, ..
    } = out.last().unwrap()
    else {
        panic!("{out:?}")
    };
    assert!(last
        .candidate
        .starts_with(&format!("candidate:{} ", MAX_EARLY_CANDIDATES - 1)));
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
fn receiver_reports_a_connection_once_with_the_sender_state() {
    let now = Instant::now();
    let mut r = receiver_with_peer(now, SID);
    assert_eq!(r.connected(), 0);
    assert_eq!(
        r.handle_peer(now, SID, PeerEvent::Connected),
        vec![event(Event::Connect {
            id: SID.into(),
            state: obj(json!({"nick": "cam"}))
        })]
    );
    assert_eq!(r.handle_peer(now, SID, PeerEvent::Connected), vec![]);
    assert_eq!(r.connected(), 1);
    assert_eq!(
        r.handle_peer(now, SID, PeerEvent::ChannelOpen),
        vec![event(Event::Channel { id: SID.into() })]
    );
}

#[test]
fn receiver_sync_updates_the_state() {
    let now = Instant::now();
    let mut r = receiver_with_peer(now, SID);
    assert_eq!(
        r.handle_signal(now, &sync_msg(SID, json!({"muted": true}))),
        vec![event(Event::Sync {
            id: SID.into(),
            state: obj(json!({"muted": true}))
        })]
    );
    assert_eq!(r.state_of(SID), Some(&obj(json!({"muted": true}))));
    // A sync with no state (the seed's `undefined`) clears it.
    assert_eq!(
        r.handle_signal(now, &json!({"type": "sync", "id": SID})),
        vec![event(Event::Sync {
            id: SID.into(),
            state: Map::new()
        })]
    );
    assert_eq!(r.state_of(SID), Some(&Map::new()));
    // A sync from a sender we have no peer with is ignored.
    assert_eq!(
        r.handle_signal(now, &sync_msg("sender-2", json!({"x": 1}))),
        vec![]
    );
    assert_eq!(r.state_of("sender-2"), None);
    // The state reported on connect is the synced one.
    r.handle_signal(now, &sync_msg(SID, json!({"v": 2})));
    assert_eq!(
        r.handle_peer(now, SID, PeerEvent::Connected),
        vec![event(Event::Connect {
            id: SID.into(),
            state: obj(json!({"v": 2}))
        })]
    );
}

#[test]
fn receiver_closes_the_peer_when_the_sender_disposes() {
    let now = Instant::now();
    let mut r = receiver_with_peer(now, SID);
    r.handle_peer(now, SID, PeerEvent::Connected);
    let msg = Message::Dispose {
        id: SID.into(),
        state: Some(obj(json!({"nick": "cam"}))),
    }
    .to_value();
    assert_eq!(
        r.handle_signal(now, &msg),
        vec![
            close(SID),
            event(Event::Dispose {
                id: SID.into(),
                reason: None
            }),
        ]
    );
    assert_eq!(r.peer_count(), 0);
    assert_eq!(r.state_of(SID), None);
    assert_eq!(r.handle_signal(now, &msg), vec![]);
    assert_eq!(r.handle_peer(now, SID, PeerEvent::Connected), vec![]);
}

/// A state whose serialized form is exactly `len` bytes.
fn state_of_len(len: usize) -> Value {
    // {"k":"…"} is 8 bytes plus the string.
    let v = json!({ "k": "x".repeat(len - 8) });
    assert_eq!(serde_json::to_vec(&v).unwrap().len(), len);
    v
}

#[test]
fn receiver_rejects_oversized_state() {
    let now = Instant::now();
    let mut r = receiver();
    r.start(now);
    let out = r.handle_signal(now, &offer(SID, state_of_len(MAX_STATE_BYTES + 1)));
    let (id, error) = single_error(&out);
    assert_eq!(id.as_deref(), Some(SID));
    assert!(error.contains("offer"), "{error}");
    assert_eq!(r.peer_count(), 0);

    // At the limit is fine.
    assert_eq!(
        r.handle_signal(now, &offer(SID, state_of_len(MAX_STATE_BYTES))),
        vec![Action::AcceptOffer {
            peer: SID.into(),
            offer: offer_desc()
        }]
    );
    let out = r.handle_signal(now, &sync_msg(SID, state_of_len(MAX_STATE_BYTES + 1)));
    let (id, error) = single_error(&out);
    assert_eq!(id.as_deref(), Some(SID));
    assert!(error.contains("sync"), "{error}");
    // The old state is kept.
    assert_eq!(r.state_of(SID), Some(&obj(state_of_len(MAX_STATE_BYTES))));

    // A huge state in a replacing offer leaves the existing peer alone.
    let out = r.handle_signal(now, &offer(SID, state_of_len(MAX_STATE_BYTES * 4)));
    single_error(&out);
    assert_eq!(r.peer_count(), 1);
}

#[test]
fn receiver_replaces_the_peer_on_a_second_offer() {
    let t0 = Instant::now();
    let mut r = receiver_with_peer(t0, SID);
    r.handle_peer(t0, SID, PeerEvent::Connected);
    assert_eq!(r.connected(), 1);
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(
        r.handle_signal(t1, &offer(SID, json!({"nick": "restarted"}))),
        vec![
            close(SID),
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
fn receiver_disposes_a_failed_peer_and_tells_the_sender() {
    let now = Instant::now();
    let mut r = receiver_with_peer(now, SID);
    assert_eq!(
        r.handle_peer(now, SID, PeerEvent::Failed("ice failed".into())),
        vec![
            close(SID),
            Action::Emit(
                to_sender(SID),
                Message::Dispose {
                    id: RID.into(),
                    state: None
                }
            ),
            event(Event::Dispose {
                id: SID.into(),
                reason: Some("ice failed".into())
            }),
        ]
    );
    assert_eq!(r.peer_count(), 0);
    assert_eq!(
        r.handle_peer(now, SID, PeerEvent::Failed("again".into())),
        vec![]
    );
}

#[test]
fn receiver_tick_gives_up_unconnected_peers() {
    let t0 = Instant::now();
    let mut r = Receiver::new(ReceiverConfig {
        ping_interval: Duration::from_secs(1000),
        ..receiver_cfg()
    });
    r.start(t0);
    r.handle_signal(t0, &offer("slow", json!({})));
    r.handle_signal(t0, &offer("fast", json!({})));
    r.handle_peer(t0, "fast", PeerEvent::Connected);
    assert_eq!(r.tick(t0 + TIMEOUT - Duration::from_millis(1)), vec![]);
    assert_eq!(
        r.tick(t0 + TIMEOUT),
        vec![
            close("slow"),
            Action::Emit(
                to_sender("slow"),
                Message::Dispose {
                    id: RID.into(),
                    state: None
                }
            ),
            event(Event::Dispose {
                id: "slow".into(),
                reason: Some("did not connect in time".into())
            }),
        ]
    );
    assert_eq!(r.tick(t0 + TIMEOUT * 10), vec![]);
    assert_eq!(r.peer_count(), 1);
}

#[test]
fn receiver_ignores_answers_and_its_own_messages() {
    let now = Instant::now();
    let mut r = receiver_with_peer(now, SID);
    assert_eq!(r.handle_signal(now, &answer(SID)), vec![]);
    assert_eq!(r.handle_signal(now, &answer("sender-2")), vec![]);
    for m in [
        offer(RID, json!({})),
        candidate(RID, cand(1)),
        sync_msg(RID, json!({})),
        dispose_msg(RID),
    ] {
        assert_eq!(r.handle_signal(now, &m), vec![], "{m}");
    }
    assert_eq!(r.peer_count(), 1);
}

#[test]
fn receiver_stop_tells_every_sender_and_leaves() {
    let now = Instant::now();
    let mut r = receiver_with_peer(now, "sb");
    r.handle_signal(now, &offer("sa", json!({})));
    let mut expect = Vec::new();
    for s in ["sa", "sb"] {
        expect.push(Action::Emit(
            to_sender(s),
            Message::Dispose {
                id: RID.into(),
                state: None,
            },
        ));
        expect.push(close(s));
        expect.push(event(Event::Dispose {
            id: s.into(),
            reason: None,
        }));
    }
    expect.push(Action::Unsubscribe(Namespace::receiver(ROOM, None)));
    expect.push(Action::Unsubscribe(Namespace::receiver(ROOM, Some(RID))));
    assert_eq!(r.stop(), expect);
    assert_eq!(r.peer_count(), 0);
}

#[test]
fn receiver_does_not_ping_after_stop() {
    let t0 = Instant::now();
    let mut r = Receiver::new(ReceiverConfig {
        ping_interval: Duration::from_secs(10),
        ping_attempts: 3,
        ..receiver_cfg()
    });
    r.start(t0);
    r.stop();
    for s in 1..=100 {
        assert_eq!(r.tick(t0 + Duration::from_secs(s)), vec![], "at {s} s");
    }
}

#[test]
fn receiver_restarted_after_stop_pings_again() {
    let t0 = Instant::now();
    let mut r = Receiver::new(ReceiverConfig {
        ping_interval: Duration::from_secs(10),
        ping_attempts: 2,
        ..receiver_cfg()
    });
    r.start(t0);
    let used: usize = (1..=100)
        .map(|s| count_invokes(&r.tick(t0 + Duration::from_secs(s))))
        .sum();
    assert_eq!(used, 2);
    r.stop();
    let t1 = t0 + Duration::from_secs(200);
    assert_eq!(count_invokes(&r.start(t1)), 1);
    let again: usize = (1..=100)
        .map(|s| count_invokes(&r.tick(t1 + Duration::from_secs(s))))
        .sum();
    assert_eq!(again, 2, "a fresh start has the full ping budget");
}

// ------------------------------------------------------------------ pings

fn pinging_receiver(t0: Instant) -> Receiver {
    let mut r = Receiver::new(ReceiverConfig {
        ping_interval: Duration::from_secs(10),
        ping_attempts: 3,
        connection_timeout: Duration::from_secs(1000),
        ..receiver_cfg()
    });
    r.start(t0);
    r
}

fn ping() -> Action {
    Action::Emit(
        Namespace::sender(ROOM, None),
        Message::Invoke {
            id: RID.into(),
            credentials: Some(json!({"token": "t0ken"})),
        },
    )
}

#[test]
fn receiver_pings_a_limited_number_of_times_while_alone() {
    let t0 = Instant::now();
    let mut r = pinging_receiver(t0);
    assert_eq!(r.tick(t0), vec![]);
    assert_eq!(r.tick(t0 + Duration::from_secs(9)), vec![]);
    assert_eq!(r.tick(t0 + Duration::from_secs(10)), vec![ping()]);
    // Not again until another interval has passed.
    assert_eq!(r.tick(t0 + Duration::from_secs(15)), vec![]);
    assert_eq!(r.tick(t0 + Duration::from_secs(20)), vec![ping()]);
    assert_eq!(r.tick(t0 + Duration::from_secs(30)), vec![ping()]);
    // ping_attempts (3) used up.
    for s in 31..200 {
        assert_eq!(r.tick(t0 + Duration::from_secs(s)), vec![], "at {s} s");
    }
}

#[test]
fn receiver_pings_while_connected_and_a_few_times_after_the_last_peer() {
    let t0 = Instant::now();
    let mut r = pinging_receiver(t0);
    r.handle_signal(t0, &offer(SID, json!({})));
    r.handle_peer(t0, SID, PeerEvent::Connected);

    // Connected: one ping every interval, however long (well past
    // ping_attempts), ticking every second.
    let mut pings = Vec::new();
    for s in 1..=200u64 {
        let out = r.tick(t0 + Duration::from_secs(s));
        assert!(out.iter().all(|a| *a == ping()), "{out:?}");
        if !out.is_empty() {
            assert_eq!(out.len(), 1);
            pings.push(s);
        }
    }
    assert_eq!(pings, (1..=20).map(|i| i * 10).collect::<Vec<_>>());

    // The sender leaves at 205 s: look for it again soon, then every
    // interval, ping_attempts times in all.
    let gone = t0 + Duration::from_secs(205);
    r.handle_signal(gone, &dispose_msg(SID));
    let mut after = Vec::new();
    for ms in (0..=120_000u64).step_by(250) {
        let now = gone + Duration::from_millis(ms);
        if count_invokes(&r.tick(now)) == 1 {
            after.push(ms);
        }
    }
    assert_eq!(after, vec![1000, 11_000, 21_000]);
}

#[test]
fn receiver_ping_budget_is_restored_by_a_new_peer() {
    let t0 = Instant::now();
    let mut r = pinging_receiver(t0);
    // Use up the pings.
    let total: usize = (1..=100)
        .map(|s| count_invokes(&r.tick(t0 + Duration::from_secs(s))))
        .sum();
    assert_eq!(total, 3);
    // A sender shows up, then fails.
    let t1 = t0 + Duration::from_secs(100);
    r.handle_signal(t1, &offer(SID, json!({})));
    let out = r.handle_peer(t1, SID, PeerEvent::Failed("closed".into()));
    assert_eq!(
        out[1],
        Action::Emit(
            to_sender(SID),
            Message::Dispose {
                id: RID.into(),
                state: None
            }
        )
    );
    let total: usize = (1..=100)
        .map(|s| count_invokes(&r.tick(t1 + Duration::from_secs(s))))
        .sum();
    assert_eq!(total, 3, "ping_attempts again after the last peer is gone");
}

#[test]
fn receiver_with_zero_ping_attempts_pings_only_while_connected() {
    let t0 = Instant::now();
    let mut r = Receiver::new(ReceiverConfig {
        ping_interval: Duration::from_secs(10),
        ping_attempts: 0,
        ..receiver_cfg()
    });
    r.start(t0);
    assert_eq!(r.tick(t0 + Duration::from_secs(10)), vec![]);
    r.handle_signal(t0, &offer(SID, json!({})));
    r.handle_peer(t0, SID, PeerEvent::Connected);
    assert_eq!(r.tick(t0 + Duration::from_secs(20)), vec![ping()]);
    r.handle_peer(t0, SID, PeerEvent::Failed("x".into()));
    let total: usize = (21..=100)
        .map(|s| count_invokes(&r.tick(t0 + Duration::from_secs(s))))
        .sum();
    assert_eq!(total, 0);
}

#[test]
fn receiver_looks_for_its_sender_a_second_after_losing_the_connection() {
    // What recovery from a network cut rests on: the only sender's
    // connection is lost (ICE), the receiver invokes again within a second
    // (not after the ping interval), and the sender's new offer (same id)
    // becomes a new peer that connects.
    let t0 = Instant::now();
    let mut r = Receiver::new(ReceiverConfig {
        ping_interval: Duration::from_secs(30),
        ping_attempts: 10,
        connection_timeout: Duration::from_secs(1000),
        ..receiver_cfg()
    });
    r.start(t0);
    r.handle_signal(t0, &offer(SID, json!({})));
    r.handle_peer(t0, SID, PeerEvent::Connected);
    let lost = t0 + Duration::from_secs(100);
    let out = r.handle_peer(
        lost,
        SID,
        PeerEvent::Failed("connection lost (ICE disconnected)".into()),
    );
    assert_eq!(out[0], Action::ClosePeer { peer: SID.into() });
    assert_eq!(r.peer_count(), 0);
    assert_eq!(r.tick(lost + Duration::from_millis(900)), vec![]);
    assert_eq!(r.tick(lost + Duration::from_secs(1)), vec![ping()]);

    let back = lost + Duration::from_secs(2);
    let out = r.handle_signal(back, &offer(SID, json!({})));
    assert!(
        matches!(&out[0], Action::AcceptOffer { peer, .. } if peer == SID),
        "{out:?}"
    );
    let out = r.handle_peer(back, SID, PeerEvent::Connected);
    assert!(
        matches!(&out[..], [Action::Event(Event::Connect { id, .. })] if id == SID),
        "{out:?}"
    );
    assert_eq!(r.connected(), 1);
}

#[test]
fn receiver_does_not_ping_before_start() {
    let t0 = Instant::now();
    let mut r = receiver();
    assert_eq!(r.tick(t0 + Duration::from_secs(3600)), vec![]);
}

// ------------------------------------------------------ malformed messages

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
            ("sender", s.handle_signal(now, &m)),
            ("receiver", r.handle_signal(now, &m)),
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
        s.handle_signal(now, &answer(RID)),
        vec![Action::ApplyAnswer {
            peer: RID.into(),
            answer: answer_desc()
        }]
    );
    assert_eq!(
        r.handle_signal(now, &candidate(SID, cand(1))),
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
        let out = s.handle_signal(now, &m);
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
        r.handle_signal(now, &m),
        vec![Action::AcceptOffer {
            peer: SID.into(),
            offer: offer_desc()
        }]
    );
    assert_eq!(r.state_of(SID), Some(&Map::new()));
}

// ------------------------------------------- both machines through a relay

/// A minimal relay: delivers what each machine emits to the other when the
/// namespace matches one it subscribed to, and plays the peer-connection
/// adapter by answering CreateOffer/AcceptOffer with a description and one
/// candidate.
#[test]
fn sender_and_receiver_connect_through_a_router() {
    let now = Instant::now();
    let mut s = sender();
    let mut r = receiver();
    let mut subs: Vec<(bool, Namespace)> = Vec::new(); // (is_sender, ns)
    let mut queue: VecDeque<(bool, Action)> = VecDeque::new(); // (from_sender, action)
    let mut events: Vec<(bool, Event)> = Vec::new();
    let mut applied: Vec<(bool, String)> = Vec::new();
    // Both subscribe before either announces itself, so each one's invoke
    // reaches the other: the sender must still make only one peer.
    let started: Vec<(bool, Action)> = (r.start(now).into_iter().map(|a| (false, a)))
        .chain(s.start().into_iter().map(|a| (true, a)))
        .collect();
    let (subscribes, announces): (Vec<_>, Vec<_>) = started
        .into_iter()
        .partition(|(_, a)| matches!(a, Action::Subscribe(_)));
    queue.extend(subscribes);
    queue.extend(announces);

    let mut steps = 0;
    while let Some((from_sender, action)) = queue.pop_front() {
        steps += 1;
        assert!(steps < 1000, "the machines loop");
        let produced: Vec<(bool, Action)> = match action {
            Action::Subscribe(ns) => {
                subs.push((from_sender, ns));
                vec![]
            }
            Action::Unsubscribe(ns) => {
                subs.retain(|(w, n)| !(*w == from_sender && *n == ns));
                vec![]
            }
            Action::Emit(ns, msg) => {
                let data = msg.to_value();
                let mut out = Vec::new();
                for (to_sender, _) in subs.iter().filter(|(_, n)| *n == ns) {
                    let acts = if *to_sender {
                        s.handle_signal(now, &data)
                    } else {
                        r.handle_signal(now, &data)
                    };
                    out.extend(acts.into_iter().map(|a| (*to_sender, a)));
                }
                out
            }
            Action::CreateOffer { peer, .. } => {
                let mut out = s.handle_peer(&peer, PeerEvent::LocalDescription(offer_desc()));
                out.extend(s.handle_peer(&peer, PeerEvent::LocalCandidate(cand(1))));
                out.into_iter().map(|a| (true, a)).collect()
            }
            Action::AcceptOffer { peer, offer } => {
                assert_eq!(offer, offer_desc());
                let mut out = r.handle_peer(now, &peer, PeerEvent::LocalDescription(answer_desc()));
                out.extend(r.handle_peer(now, &peer, PeerEvent::LocalCandidate(cand(2))));
                out.into_iter().map(|a| (false, a)).collect()
            }
            Action::ApplyAnswer { peer, answer } => {
                assert_eq!(answer, answer_desc());
                applied.push((true, format!("answer {peer}")));
                vec![]
            }
            Action::AddCandidate { peer, candidate } => {
                applied.push((from_sender, format!("{} {peer}", candidate.candidate)));
                vec![]
            }
            Action::ClosePeer { peer } => panic!("closed {peer}"),
            Action::Event(e) => {
                events.push((from_sender, e));
                vec![]
            }
        };
        queue.extend(produced);
    }
    // Both sides applied the other's description and candidate.
    assert_eq!(
        applied,
        vec![
            (false, format!("{} {SID}", cand(1).candidate)),
            (true, format!("answer {RID}")),
            (true, format!("{} {RID}", cand(2).candidate)),
        ]
    );
    assert!(events.is_empty(), "{events:?}");
    // Only one peer on each side, though each side's invoke reached the other.
    assert_eq!(s.peer_count(), 1);
    assert_eq!(r.peer_count(), 1);
    assert_eq!(r.state_of(SID), Some(&obj(json!({"nick": "cam"}))));
    assert_eq!(
        s.handle_peer(RID, PeerEvent::Connected),
        vec![event(Event::Connect {
            id: RID.into(),
            state: Map::new()
        })]
    );
    assert_eq!(
        r.handle_peer(now, SID, PeerEvent::Connected),
        vec![event(Event::Connect {
            id: SID.into(),
            state: obj(json!({"nick": "cam"}))
        })]
    );
}

// -------------------------------------------------------------- proptest

mod property {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const IDS: [&str; 4] = [SID, RID, "sender-2", "receiver-2"];
    const KEYS: [&str; 10] = [
        "type",
        "id",
        "offer",
        "answer",
        "candidate",
        "state",
        "sdp",
        "credentials",
        "sdpMid",
        "sdpMLineIndex",
    ];

    fn arb_string() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec![
                "invoke", "offer", "answer", "candidate", "sync", "dispose", "",
                "v=0", "candidate:1 1 udp 2122 10.0.0.1 5000 typ host",
                "candidate:2 1 udp 2122 abc.local 5000 typ host",
            ])
            .prop_map(str::to_owned),
            2 => prop::sample::select(IDS.to_vec()).prop_map(str::to_owned),
            1 => any::<String>(),
        ]
    }

    /// Any JSON, biased towards the words of the protocol.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (0u64..70_000).prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            arb_string().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..7).prop_map(
                    |kv| {
                        Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                    }
                ),
            ]
        })
    }

    fn arb_candidate() -> impl Strategy<Value = Candidate> {
        prop_oneof![
            4 => (1u8..5).prop_map(cand),
            1 => Just(mdns_cand()),
            1 => Just(end_of_candidates()),
        ]
    }

    /// Messages that are well-formed more often than not, so that the
    /// machines get deep into their states.
    fn arb_message(id: &'static str) -> impl Strategy<Value = Value> {
        let kind = prop::sample::select(vec![
            "invoke",
            "offer",
            "offer",
            "answer",
            "answer",
            "candidate",
            "candidate",
            "candidate",
            "sync",
            "dispose",
        ]);
        // 0: the description the type calls for, 1: the other one, 2: noise.
        let desc = prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)];
        let state = prop_oneof![
            2 => Just(json!({"nick": "x"})),
            1 => Just(json!({})),
            1 => arb_json(),
        ];
        let cand = prop_oneof![
            6 => arb_candidate().prop_map(|c| serde_json::to_value(c).unwrap()),
            1 => arb_json(),
        ];
        let creds = prop_oneof![
            3 => Just(Some(json!({"token": "t0ken"}))),
            1 => Just(Some(json!(1))),
            1 => Just(None),
            1 => arb_json().prop_map(Some),
        ];
        (kind, desc, arb_json(), cand, state, creds).prop_map(
            move |(kind, desc, noise, cand, state, creds)| {
                let description = |wanted: &str| match (desc, wanted) {
                    (0, "offer") | (1, "answer") => json!({"type": "offer", "sdp": "v=0 offer"}),
                    (0, _) | (1, _) => json!({"type": "answer", "sdp": "v=0 answer"}),
                    _ => noise.clone(),
                };
                let mut m = json!({"type": kind, "id": id});
                let o = m.as_object_mut().unwrap(); // built as an object above
                match kind {
                    "offer" => {
                        o.insert("offer".into(), description("offer"));
                        o.insert("state".into(), state);
                    }
                    "answer" => {
                        o.insert("answer".into(), description("answer"));
                    }
                    "candidate" => {
                        o.insert("candidate".into(), cand);
                    }
                    "sync" | "dispose" => {
                        o.insert("state".into(), state);
                    }
                    _ => {
                        if let Some(c) = creds {
                            o.insert("credentials".into(), c);
                        }
                    }
                }
                m
            },
        )
    }

    fn arb_peer_event() -> impl Strategy<Value = PeerEvent> {
        prop_oneof![
            Just(PeerEvent::LocalDescription(offer_desc())),
            Just(PeerEvent::LocalDescription(answer_desc())),
            arb_candidate().prop_map(PeerEvent::LocalCandidate),
            Just(PeerEvent::Connected),
            Just(PeerEvent::ChannelOpen),
            Just(PeerEvent::Failed("failed".into())),
        ]
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A message straight from the network to one machine.
        Signal {
            to_sender: bool,
            data: Value,
        },
        /// Deliver one of the messages the machines emitted, picked by
        /// index: the relay may reorder.
        Deliver(usize),
        Peer {
            to_sender: bool,
            peer: &'static str,
            event: PeerEvent,
        },
        /// Advance the clock by this many milliseconds and tick both.
        Tick(u64),
        Sync(bool),
        Reconnected,
    }

    /// Ids a machine's input comes from: mostly the other role's, sometimes
    /// its own role's (or its own id, which it must ignore).
    fn arb_from(to_sender: bool) -> impl Strategy<Value = &'static str> {
        let (peers, others) = if to_sender {
            ([RID, "receiver-2"], [SID, "sender-2"])
        } else {
            ([SID, "sender-2"], [RID, "receiver-2"])
        };
        prop_oneof![
            4 => prop::sample::select(peers.to_vec()),
            1 => prop::sample::select(others.to_vec()),
        ]
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        let signal = any::<bool>().prop_flat_map(|to_sender| {
            let data = prop_oneof![
                1 => arb_json(),
                4 => arb_from(to_sender).prop_flat_map(arb_message),
            ];
            (Just(to_sender), data)
        });
        let peer = any::<bool>()
            .prop_flat_map(|to_sender| (Just(to_sender), arb_from(to_sender), arb_peer_event()));
        prop_oneof![
            6 => signal.prop_map(|(to_sender, data)| Step::Signal { to_sender, data }),
            4 => any::<usize>().prop_map(Step::Deliver),
            3 => peer.prop_map(|(to_sender, peer, event)| Step::Peer { to_sender, peer, event }),
            2 => (0u64..3_000).prop_map(Step::Tick),
            1 => (0u64..40_000).prop_map(Step::Tick),
            1 => any::<bool>().prop_map(Step::Sync),
            1 => Just(Step::Reconnected),
        ]
    }

    /// What the adapter would hold: the peers that exist on one side.
    #[derive(Default)]
    struct Model {
        live: HashSet<String>,
        remote_set: HashSet<String>,
    }

    impl Model {
        fn check(
            &mut self,
            is_sender: bool,
            own: &str,
            actions: &[Action],
            outbox: &mut Vec<(Namespace, Value)>,
        ) -> Result<(), TestCaseError> {
            let (mine, theirs) = if is_sender {
                ("sender", "receiver")
            } else {
                ("receiver", "sender")
            };
            for a in actions {
                match a {
                    Action::CreateOffer { peer, .. } => {
                        prop_assert!(is_sender, "receiver made an offer: {:?}", a);
                        prop_assert!(peer != own);
                        prop_assert!(self.live.insert(peer.clone()), "second peer {}", peer);
                    }
                    Action::AcceptOffer { peer, .. } => {
                        prop_assert!(!is_sender, "sender accepted an offer: {:?}", a);
                        prop_assert!(peer != own);
                        prop_assert!(
                            self.live.insert(peer.clone()),
                            "accepted over a live peer {} without closing it",
                            peer
                        );
                        self.remote_set.insert(peer.clone());
                    }
                    Action::ApplyAnswer { peer, .. } => {
                        prop_assert!(is_sender);
                        prop_assert!(self.live.contains(peer), "answer for no peer {}", peer);
                        prop_assert!(self.remote_set.insert(peer.clone()), "two answers");
                    }
                    Action::AddCandidate { peer, candidate } => {
                        prop_assert!(self.live.contains(peer), "candidate for no peer {}", peer);
                        prop_assert!(
                            self.remote_set.contains(peer),
                            "candidate before the description for {}",
                            peer
                        );
                        prop_assert!(!candidate.candidate.is_empty());
                        prop_assert!(!candidate.is_mdns());
                    }
                    Action::ClosePeer { peer } => {
                        prop_assert!(self.live.remove(peer), "closed unknown peer {}", peer);
                        self.remote_set.remove(peer);
                    }
                    Action::Emit(ns, msg) => {
                        prop_assert_eq!(&ns.parts()[0], theirs);
                        prop_assert_eq!(&ns.parts()[1], ROOM);
                        prop_assert_eq!(msg.id(), own);
                        outbox.push((ns.clone(), msg.to_value()));
                    }
                    Action::Subscribe(ns) | Action::Unsubscribe(ns) => {
                        prop_assert_eq!(&ns.parts()[0], mine);
                    }
                    Action::Event(_) => {}
                }
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn machines_survive_any_input(steps in prop::collection::vec(arb_step(), 0..80)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut s = Sender::new(SenderConfig {
                verify: Some(Verify { accepted: vec![json!({"token": "t0ken"}), json!(1)] }),
                ..sender_cfg()
            });
            let mut r = Receiver::new(ReceiverConfig {
                ping_interval: Duration::from_secs(5),
                ping_attempts: 2,
                connection_timeout: Duration::from_secs(20),
                ..receiver_cfg()
            });
            let (mut ms, mut mr) = (Model::default(), Model::default());
            let mut outbox: Vec<(Namespace, Value)> = Vec::new();
            let a = s.start();
            ms.check(true, SID, &a, &mut outbox)?;
            let a = r.start(now);
            mr.check(false, RID, &a, &mut outbox)?;

            for step in steps {
                let (to_sender, actions) = match step {
                    Step::Signal { to_sender: true, data } => (true, s.handle_signal(now, &data)),
                    Step::Signal { to_sender: false, data } => (false, r.handle_signal(now, &data)),
                    Step::Deliver(i) => {
                        if outbox.is_empty() {
                            continue;
                        }
                        let (ns, data) = outbox.remove(i % outbox.len());
                        let for_us = |id: &str| ns.parts().get(2).is_none_or(|p| p == id);
                        if ns.parts()[0] == "sender" && for_us(SID) {
                            (true, s.handle_signal(now, &data))
                        } else if ns.parts()[0] == "receiver" && for_us(RID) {
                            (false, r.handle_signal(now, &data))
                        } else {
                            continue;
                        }
                    }
                    Step::Peer { to_sender: true, peer, event } => (true, s.handle_peer(peer, event)),
                    Step::Peer { to_sender: false, peer, event } => {
                        (false, r.handle_peer(now, peer, event))
                    }
                    Step::Tick(dt) => {
                        now += Duration::from_millis(dt);
                        let a = s.tick(now);
                        ms.check(true, SID, &a, &mut outbox)?;
                        (false, r.tick(now))
                    }
                    Step::Sync(merge) => (true, s.sync(obj(json!({"n": now.duration_since(t0).as_millis() as u64})), merge)),
                    Step::Reconnected => {
                        let a = s.reconnected();
                        ms.check(true, SID, &a, &mut outbox)?;
                        (false, r.reconnected())
                    }
                };
                if to_sender {
                    ms.check(true, SID, &actions, &mut outbox)?;
                } else {
                    mr.check(false, RID, &actions, &mut outbox)?;
                }
                prop_assert_eq!(s.peer_count(), ms.live.len());
                prop_assert_eq!(r.peer_count(), mr.live.len());
                prop_assert!(s.connecting() <= s.peer_count());
                prop_assert!(r.connected() <= r.peer_count());
                for p in &mr.live {
                    prop_assert!(r.state_of(p).is_some());
                }
            }

            let a = s.stop();
            ms.check(true, SID, &a, &mut outbox)?;
            let a = r.stop();
            mr.check(false, RID, &a, &mut outbox)?;
            prop_assert!(ms.live.is_empty(), "sender left peers open: {:?}", ms.live);
            prop_assert!(mr.live.is_empty(), "receiver left peers open: {:?}", mr.live);
            prop_assert_eq!(s.peer_count(), 0);
            prop_assert_eq!(r.peer_count(), 0);
        }
    }
}
