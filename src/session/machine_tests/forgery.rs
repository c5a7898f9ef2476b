//! Messages in a peer's name from another relay connection than the one
//! that opened the peer: anyone in a room can write any `id`, so they are
//! ignored, and the real peer goes on.

use super::*;

const REAL: Option<&str> = Some("relay.1");
const OTHER: Option<&str> = Some("relay.9");

fn forged_error(out: &[Action], what: &str) {
    let (id, error) = single_error(out);
    assert!(id.is_some(), "{out:?}");
    assert!(
        error.contains(what) && error.contains("another relay connection"),
        "{error}"
    );
}

#[test]
fn a_sender_takes_a_receivers_messages_only_from_its_connection() {
    let now = Instant::now();
    let mut s = sender();
    s.start();
    s.handle_signal(now, REAL, &invoke(RID, None));
    // Someone else answers, trickles and leaves in the receiver's name.
    forged_error(&s.handle_signal(now, OTHER, &answer(RID)), "answer");
    forged_error(
        &s.handle_signal(now, OTHER, &candidate(RID, cand(1))),
        "candidate",
    );
    forged_error(&s.handle_signal(now, OTHER, &dispose_msg(RID)), "dispose");
    forged_error(&s.handle_signal(now, None, &dispose_msg(RID)), "dispose");
    assert_eq!(s.peer_count(), 1);
    // A second invoke in its name makes no second peer either.
    assert_eq!(s.handle_signal(now, OTHER, &invoke(RID, None)), vec![]);
    // The real receiver's answer is still the first one.
    assert_eq!(
        s.handle_signal(now, REAL, &answer(RID)),
        vec![Action::ApplyAnswer {
            peer: RID.into(),
            answer: answer_desc()
        }]
    );
    assert_eq!(
        s.handle_signal(now, REAL, &candidate(RID, cand(2))),
        vec![add(RID, cand(2))]
    );
    let out = s.handle_signal(now, REAL, &dispose_msg(RID));
    assert_eq!(out[0], close(RID));
    assert_eq!(s.peer_count(), 0);
}

#[test]
fn a_receiver_takes_a_senders_messages_only_from_its_connection() {
    let now = Instant::now();
    let mut r = receiver();
    r.start(now);
    // A stranger's early candidates in the sender's name wait apart.
    r.handle_signal(now, OTHER, &candidate(SID, cand(7)));
    r.handle_signal(now, REAL, &candidate(SID, cand(1)));
    let out = r.handle_signal(now, REAL, &offer(SID, json!({"nick": "cam"})));
    assert_eq!(
        out,
        vec![
            Action::AcceptOffer {
                peer: SID.into(),
                offer: offer_desc()
            },
            add(SID, cand(1)),
        ]
    );
    // An offer, a sync, a candidate and a dispose in the sender's name from
    // elsewhere: the peer stays as it is.
    forged_error(
        &r.handle_signal(now, OTHER, &offer(SID, json!({"nick": "evil"}))),
        "offer",
    );
    forged_error(
        &r.handle_signal(now, OTHER, &sync_msg(SID, json!({"nick": "evil"}))),
        "sync",
    );
    forged_error(
        &r.handle_signal(now, OTHER, &candidate(SID, cand(3))),
        "candidate",
    );
    forged_error(&r.handle_signal(now, OTHER, &dispose_msg(SID)), "dispose");
    assert_eq!(r.peer_count(), 1);
    assert_eq!(r.state_of(SID), Some(&obj(json!({"nick": "cam"}))));
    // The sender itself may still restart the peer, sync and leave.
    let out = r.handle_signal(now, REAL, &offer(SID, json!({"nick": "again"})));
    assert_eq!(out[0], give_up(SID));
    assert_eq!(r.state_of(SID), Some(&obj(json!({"nick": "again"}))));
    let out = r.handle_signal(now, REAL, &dispose_msg(SID));
    assert_eq!(out[0], close(SID));
    assert_eq!(r.peer_count(), 0);
    // Once the peer is gone, whoever offers next opens it.
    let out = r.handle_signal(now, OTHER, &offer(SID, json!({})));
    assert!(matches!(out[0], Action::AcceptOffer { .. }), "{out:?}");
}

#[test]
fn without_a_stamp_everything_is_taken_as_before() {
    // NATS says nothing of who sent a message: peers opened there take
    // messages as the seed library does.
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    assert!(matches!(
        s.handle_signal(now, None, &answer(RID))[0],
        Action::ApplyAnswer { .. }
    ));
}
