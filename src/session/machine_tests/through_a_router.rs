//! Both machines end to end, through a minimal relay played by the test.

use std::collections::VecDeque;

use super::*;

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
                        s.handle_signal(now, None, &data)
                    } else {
                        r.handle_signal(now, None, &data)
                    };
                    out.extend(acts.into_iter().map(|a| (*to_sender, a)));
                }
                out
            }
            Action::CreateOffer { peer, .. } => {
                let mut out = s.handle_peer(
                    Instant::now(),
                    &peer,
                    PeerEvent::LocalDescription(offer_desc()),
                );
                out.extend(s.handle_peer(
                    Instant::now(),
                    &peer,
                    PeerEvent::LocalCandidate(cand(1)),
                ));
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
            Action::ClosePeer { peer, .. } => panic!("closed {peer}"),
            Action::RestartIce { peer } => panic!("restarted ICE with {peer}"),
            Action::Renegotiate { peer, .. } => panic!("renegotiated with {peer}"),
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
        s.handle_peer(Instant::now(), RID, PeerEvent::Connected),
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
