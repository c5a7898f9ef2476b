//! ICE candidates: held until the remote description is set, then flushed
//! in arrival order; bounded; mDNS and end-of-candidates skipped.

use super::*;

#[test]
fn sender_queues_candidates_until_the_answer_then_flushes_in_order() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    for n in 1..=3 {
        assert_eq!(s.handle_signal(now, None, &candidate(RID, cand(n))), vec![]);
    }
    assert_eq!(
        s.handle_signal(now, None, &answer(RID)),
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
        s.handle_signal(now, None, &candidate(RID, cand(4))),
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
    s.handle_signal(now, None, &invoke("rb", None));
    let arrivals = [("ra", 5), ("rb", 1), ("ra", 3), ("rb", 2), ("ra", 4)];
    for (peer, n) in arrivals {
        assert_eq!(
            s.handle_signal(now, None, &candidate(peer, cand(n))),
            vec![]
        );
    }
    assert_eq!(
        s.handle_signal(now, None, &answer("rb")),
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
        s.handle_signal(now, None, &candidate("ra", cand(6))),
        vec![],
        "ra has no answer yet"
    );
    assert_eq!(
        s.handle_signal(now, None, &answer("ra")),
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
        assert_eq!(s.handle_signal(now, None, &candidate(RID, c)), vec![]);
    }
    let out = s.handle_signal(now, None, &answer(RID));
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
    assert_eq!(
        s.handle_signal(now, None, &candidate(RID, mdns_cand())),
        vec![]
    );
    assert_eq!(
        s.handle_signal(now, None, &candidate(RID, end_of_candidates())),
        vec![]
    );
    assert_eq!(s.handle_signal(now, None, &candidate(RID, cand(1))), vec![]);
    assert_eq!(
        s.handle_signal(now, None, &answer(RID)),
        vec![
            Action::ApplyAnswer {
                peer: RID.into(),
                answer: answer_desc()
            },
            add(RID, cand(1)),
        ]
    );
    // After the answer: not applied.
    assert_eq!(
        s.handle_signal(now, None, &candidate(RID, mdns_cand())),
        vec![]
    );
    assert_eq!(
        s.handle_signal(now, None, &candidate(RID, end_of_candidates())),
        vec![]
    );
}

#[test]
fn receiver_accepts_an_offer_and_flushes_early_candidates_in_order() {
    let now = Instant::now();
    let mut r = receiver();
    r.start(now);
    // Candidates overtook the offer; another sender's too.
    for (sid, n) in [(SID, 3), ("sender-2", 7), (SID, 1), (SID, 2)] {
        assert_eq!(r.handle_signal(now, None, &candidate(sid, cand(n))), vec![]);
    }
    // mDNS and end-of-candidates are not kept.
    assert_eq!(
        r.handle_signal(now, None, &candidate(SID, mdns_cand())),
        vec![]
    );
    assert_eq!(
        r.handle_signal(now, None, &candidate(SID, end_of_candidates())),
        vec![]
    );
    assert_eq!(r.peer_count(), 0);
    assert_eq!(
        r.handle_signal(now, None, &offer(SID, json!({"nick": "cam"}))),
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
        r.handle_signal(now, None, &candidate(SID, cand(4))),
        vec![add(SID, cand(4))]
    );
    assert_eq!(
        r.handle_signal(now, None, &candidate(SID, mdns_cand())),
        vec![]
    );
    // The other sender's early candidate waits for its own offer.
    assert_eq!(
        r.handle_signal(now, None, &offer("sender-2", json!({}))),
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
        r.handle_signal(now, None, &offer("sender-2", json!({}))),
        vec![
            give_up("sender-2"),
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
        r.handle_signal(now, None, &candidate(SID, c));
    }
    // Fill the table of early peers: the oldest (SID) is evicted.
    for p in 0..MAX_EARLY_PEERS {
        r.handle_signal(now, None, &candidate(&format!("s{p}"), cand(1)));
    }
    assert_eq!(
        r.handle_signal(now, None, &offer(SID, json!({}))),
        vec![Action::AcceptOffer {
            peer: SID.into(),
            offer: offer_desc()
        }]
    );
    // The newest are all kept.
    assert_eq!(
        r.handle_signal(now, None, &offer("s1", json!({}))),
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
        r.handle_signal(now, None, &candidate(SID, c));
    }
    let out = r.handle_signal(now, None, &offer(SID, json!({})));
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

/// An answer whose SDP carries `n` candidates, each at its own port.
fn answer_with_candidates(id: &str, n: usize) -> Value {
    let mut sdp = String::from("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n");
    for p in 0..n {
        sdp.push_str(&format!(
            "a=candidate:{p} 1 udp 2122260223 192.0.2.1 {} typ host\r\n",
            10000 + p
        ));
    }
    sdp.push_str("a=end-of-candidates\r\n");
    Message::Answer {
        id: id.into(),
        answer: desc("answer", &sdp),
    }
    .to_value()
}

#[test]
fn a_peer_gets_no_more_than_the_cap_of_candidates_in_all() {
    // 1,000 candidates in the answer, then more trickled: the first
    // MAX_REMOTE_CANDIDATES are kept, the peer is told once, the rest is
    // never handed to ICE.
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    let out = s.handle_signal(now, None, &answer_with_candidates(RID, 1000));
    let [Action::ApplyAnswer { answer, .. }, told] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(
        answer.sdp.matches("a=candidate:").count(),
        MAX_REMOTE_CANDIDATES
    );
    assert!(answer.sdp.ends_with("a=end-of-candidates\r\n"));
    assert!(answer.sdp.contains(" 10031 typ host\r\n"));
    assert!(!answer.sdp.contains(" 10032 typ host"));
    let (id, error) = single_error(std::slice::from_ref(told));
    assert_eq!(id.as_deref(), Some(RID));
    assert!(error.contains("ICE candidates"), "{error}");
    for n in 1..=50 {
        assert_eq!(s.handle_signal(now, None, &candidate(RID, cand(n))), vec![]);
    }
}

#[test]
fn trickled_and_described_candidates_share_one_cap() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    let early = 5;
    for n in 1..=early {
        s.handle_signal(now, None, &candidate(RID, cand(n)));
    }
    let described = MAX_REMOTE_CANDIDATES - 2;
    let out = s.handle_signal(now, None, &answer_with_candidates(RID, described));
    // Two of the early ones fit; then the peer is told.
    assert_eq!(out.len(), 1 + 2 + 1, "{out:?}");
    assert_eq!(out[1], add(RID, cand(1)));
    assert_eq!(out[2], add(RID, cand(2)));
    single_error(&out[3..]);
    assert_eq!(s.handle_signal(now, None, &candidate(RID, cand(9))), vec![]);

    // The receiver counts the offer's the same way.
    let mut r = receiver();
    r.start(now);
    for n in 1..=40 {
        let out = r.handle_signal(now, None, &candidate(SID, cand(n)));
        assert_eq!(out, vec![]);
    }
    let out = r.handle_signal(now, None, &offer(SID, json!({})));
    let adds = out
        .iter()
        .filter(|a| matches!(a, Action::AddCandidate { .. }))
        .count();
    assert_eq!(adds, MAX_REMOTE_CANDIDATES);
}
