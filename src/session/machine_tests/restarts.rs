//! ICE restarts: a connection that loses its path (an address changed, a
//! link went quiet) is restarted over signaling and carries on; one whose
//! other side cannot restart, or whose restarts find nothing, is given up
//! as before, so the peers fall back to a new connection.

use super::*;

fn restart_offer(id: &str) -> Value {
    Message::Restart {
        id: id.into(),
        offer: Some(offer_desc()),
    }
    .to_value()
}

fn restart_request(id: &str) -> Value {
    Message::Restart {
        id: id.into(),
        offer: None,
    }
    .to_value()
}

/// A sender connected to `rid`, which said it takes restarts.
fn connected_sender(now: Instant, rid: &str) -> Sender {
    let mut s = sender();
    s.start();
    let mut inv = invoke(rid, None);
    inv["restarts"] = true.into();
    s.handle_signal(now, None, &inv);
    s.handle_peer(now, rid, PeerEvent::LocalDescription(offer_desc()));
    s.handle_signal(now, None, &answer(rid));
    s.handle_peer(now, rid, PeerEvent::Connected);
    s
}

#[test]
fn a_sender_restarts_a_quiet_connection_and_takes_the_new_answer() {
    let t0 = Instant::now();
    let mut s = connected_sender(t0, RID);
    let out = s.handle_peer(t0, RID, PeerEvent::Disconnected("quiet".into()));
    assert_eq!(
        out,
        vec![
            Action::RestartIce { peer: RID.into() },
            event(Event::Reconnecting {
                id: RID.into(),
                reason: "quiet".into()
            }),
        ]
    );
    // The restart's offer goes out as a restart, not as a new offer.
    let out = s.handle_peer(t0, RID, PeerEvent::LocalDescription(offer_desc()));
    assert_eq!(
        out,
        vec![Action::Emit(
            to_receiver(RID),
            Message::Restart {
                id: SID.into(),
                offer: Some(offer_desc())
            }
        )]
    );
    // Its answer is taken (a second answer to the first offer would not
    // be), and the path coming back is reported with the gap.
    assert_eq!(
        s.handle_signal(t0, None, &answer(RID)),
        vec![Action::ApplyAnswer {
            peer: RID.into(),
            answer: answer_desc()
        }]
    );
    assert_eq!(
        single_error(&s.handle_signal(t0, None, &answer(RID))).1,
        "ignored a second answer"
    );
    let back = t0 + Duration::from_millis(1500);
    assert_eq!(
        s.handle_peer(back, RID, PeerEvent::Connected),
        vec![event(Event::Reconnected {
            id: RID.into(),
            after: Duration::from_millis(1500)
        })]
    );
    assert_eq!(s.peer_count(), 1);
    assert_eq!(s.tick(back + RESTART_GIVE_UP), vec![]);
}

#[test]
fn a_sender_gives_up_a_connection_its_restarts_do_not_bring_back() {
    let t0 = Instant::now();
    let mut s = connected_sender(t0, RID);
    s.handle_peer(t0, RID, PeerEvent::Disconnected("quiet".into()));
    // Asked at once by the receiver too: the same restart.
    let soon = t0 + Duration::from_millis(200);
    assert_eq!(s.handle_signal(soon, None, &restart_request(RID)), vec![]);
    // Still no path: tried again after RESTART_RETRY.
    let retry = t0 + RESTART_RETRY;
    assert_eq!(s.tick(retry), vec![Action::RestartIce { peer: RID.into() }]);
    let out = s.tick(t0 + RESTART_GIVE_UP);
    assert_eq!(out[0], give_up(RID));
    // No dispose goes to a receiver out of reach: it gives up by itself.
    assert!(
        !out.iter().any(|a| matches!(a, Action::Emit(..))),
        "{out:?}"
    );
    assert_eq!(s.peer_count(), 0);
    // Back (a laptop that slept), it asks to restart a connection we no
    // longer have: it is told to start over.
    let out = s.handle_signal(t0 + Duration::from_secs(30), None, &restart_request(RID));
    assert!(
        matches!(&out[..], [Action::Emit(ns, Message::Dispose { .. })] if *ns == to_receiver(RID)),
        "{out:?}"
    );
}

#[test]
fn a_dispose_while_the_path_is_lost_is_a_loss_not_a_leave() {
    // The recording stays open for the sender to come back.
    let t0 = Instant::now();
    let mut r = receiver_with_peer(t0, SID);
    r.handle_peer(t0, SID, PeerEvent::Connected);
    r.handle_peer(t0, SID, PeerEvent::Disconnected("quiet".into()));
    let out = r.handle_signal(t0, None, &dispose_msg(SID));
    assert_eq!(out[0], give_up(SID));
    // And it looks for the sender again soon.
    let pinged = r.tick(t0 + Duration::from_secs(1));
    assert!(
        pinged
            .iter()
            .any(|a| matches!(a, Action::Emit(_, Message::Invoke { .. }))),
        "{pinged:?}"
    );
    // A dispose on a working path is the sender leaving.
    let mut r = receiver_with_peer(t0, SID);
    r.handle_peer(t0, SID, PeerEvent::Connected);
    assert_eq!(r.handle_signal(t0, None, &dispose_msg(SID))[0], close(SID));
}

#[test]
fn a_sender_disposes_a_receiver_that_cannot_restart() {
    // The seed library's receiver does not say it takes restarts.
    let t0 = Instant::now();
    let mut s = sender_with_peer(t0, RID);
    s.handle_peer(t0, RID, PeerEvent::LocalDescription(offer_desc()));
    s.handle_signal(t0, None, &answer(RID));
    s.handle_peer(t0, RID, PeerEvent::Connected);
    let out = s.handle_peer(t0, RID, PeerEvent::Disconnected("quiet".into()));
    assert_eq!(out[0], give_up(RID));
    assert_eq!(s.peer_count(), 0);
}

#[test]
fn a_changed_address_restarts_every_connection_once() {
    let t0 = Instant::now();
    let mut s = connected_sender(t0, RID);
    let out = s.network_changed(t0);
    assert_eq!(out[0], Action::RestartIce { peer: RID.into() });
    // The receiver's own request for the same change adds nothing.
    assert_eq!(s.handle_signal(t0, None, &restart_request(RID)), vec![]);
}

#[test]
fn a_restart_request_from_another_relay_connection_is_forged() {
    let t0 = Instant::now();
    let mut s = sender();
    s.start();
    let mut inv = invoke(RID, None);
    inv["restarts"] = true.into();
    s.handle_signal(t0, Some("relay.1"), &inv);
    s.handle_peer(t0, RID, PeerEvent::LocalDescription(offer_desc()));
    s.handle_signal(t0, Some("relay.1"), &answer(RID));
    s.handle_peer(t0, RID, PeerEvent::Connected);
    let out = s.handle_signal(t0, Some("relay.9"), &restart_request(RID));
    assert!(
        single_error(&out).1.contains("another relay connection"),
        "{out:?}"
    );
    // From its own connection it works.
    let out = s.handle_signal(t0, Some("relay.1"), &restart_request(RID));
    assert_eq!(out[0], Action::RestartIce { peer: RID.into() });
}

#[test]
fn a_receiver_asks_for_a_restart_keeps_its_peer_and_applies_the_offer() {
    let t0 = Instant::now();
    let mut r = receiver_with_peer(t0, SID);
    r.handle_peer(t0, SID, PeerEvent::Connected);
    let out = r.handle_peer(t0, SID, PeerEvent::Disconnected("quiet".into()));
    assert_eq!(
        out,
        vec![
            Action::Emit(
                to_sender(SID),
                Message::Restart {
                    id: RID.into(),
                    offer: None
                }
            ),
            event(Event::Reconnecting {
                id: SID.into(),
                reason: "quiet".into()
            }),
        ]
    );
    // The restart offer renegotiates the same connection: no close.
    assert_eq!(
        r.handle_signal(t0, None, &restart_offer(SID)),
        vec![Action::Renegotiate {
            peer: SID.into(),
            offer: offer_desc()
        }]
    );
    let back = t0 + Duration::from_secs(1);
    assert_eq!(
        r.handle_peer(back, SID, PeerEvent::Connected),
        vec![event(Event::Reconnected {
            id: SID.into(),
            after: Duration::from_secs(1)
        })]
    );
    assert_eq!(r.connected(), 1);
    // A sender that is trying (its restart offers come) is waited for
    // longer than one that sends none.
    r.handle_peer(back, SID, PeerEvent::Disconnected("quiet again".into()));
    r.handle_signal(back, None, &restart_offer(SID));
    assert!(r
        .tick(back + RESTART_UNANSWERED)
        .iter()
        .all(|a| !matches!(a, Action::ClosePeer { .. })));
    let out = r.tick(back + RESTART_GIVE_UP);
    assert!(out.contains(&give_up(SID)), "{out:?}");
}

#[test]
fn a_receiver_whose_sender_never_restarts_falls_back_soon() {
    // The seed library's sender ignores restart requests; a crashed one
    // cannot answer them.
    let t0 = Instant::now();
    let mut r = receiver_with_peer(t0, SID);
    r.handle_peer(t0, SID, PeerEvent::Connected);
    r.handle_peer(t0, SID, PeerEvent::Disconnected("quiet".into()));
    assert!(r.tick(t0 + Duration::from_secs(1)).is_empty());
    let out = r.tick(t0 + RESTART_UNANSWERED);
    assert_eq!(out[0], give_up(SID));
    assert_eq!(r.peer_count(), 0);
}

#[test]
fn a_restart_offer_for_no_peer_or_from_elsewhere_changes_nothing() {
    let t0 = Instant::now();
    let mut r = receiver();
    r.start(t0);
    assert_eq!(r.handle_signal(t0, None, &restart_offer(SID)), vec![]);
    r.handle_signal(t0, Some("relay.1"), &offer(SID, json!({})));
    let out = r.handle_signal(t0, Some("relay.2"), &restart_offer(SID));
    assert!(
        single_error(&out).1.contains("another relay connection"),
        "{out:?}"
    );
}

#[test]
fn a_receiver_whose_address_changed_asks_every_sender_and_waits_for_those_that_restart() {
    let t0 = Instant::now();
    let mut r = receiver();
    r.start(t0);
    let mut restarting = offer(SID, json!({}));
    restarting["restarts"] = true.into();
    r.handle_signal(t0, None, &restarting);
    r.handle_signal(t0, None, &offer("seed-sender", json!({})));
    r.handle_peer(t0, SID, PeerEvent::Connected);
    r.handle_peer(t0, "seed-sender", PeerEvent::Connected);
    let out = r.network_changed(t0);
    // Both are asked; only the one that restarts is counted as lost (the
    // other's path may be fine: ICE will say).
    let asked: Vec<&Namespace> = out
        .iter()
        .filter_map(|a| match a {
            Action::Emit(ns, Message::Restart { offer: None, .. }) => Some(ns),
            _ => None,
        })
        .collect();
    assert_eq!(asked, vec![&to_sender("seed-sender"), &to_sender(SID)]);
    assert!(out.contains(&event(Event::Reconnecting {
        id: SID.into(),
        reason: "this host's addresses changed".into()
    })));
    assert_eq!(out.len(), 3, "{out:?}");
    // The one that restarts sends its offer; the connection is kept (at
    // most the restart is asked for again, the path being still down).
    r.handle_signal(t0, None, &restart_offer(SID));
    let out = r.tick(t0 + RESTART_UNANSWERED);
    assert!(
        out.iter()
            .all(|a| matches!(a, Action::Emit(_, Message::Restart { offer: None, .. }))),
        "{out:?}"
    );
    assert_eq!(r.connected(), 2);
}

#[test]
fn both_sides_restart_at_once_when_their_relay_connection_is_back() {
    // The offer and the request made while the relay was out of reach
    // may be gone with the old relay connection.
    let t0 = Instant::now();
    let mut s = connected_sender(t0, RID);
    s.handle_peer(t0, RID, PeerEvent::Disconnected("quiet".into()));
    let later = t0 + Duration::from_millis(100);
    let out = s.reconnected(later);
    assert!(
        out.contains(&Action::RestartIce { peer: RID.into() }),
        "{out:?}"
    );
    // Once its offer is made, the relay's return sends it again as it
    // was: a second restart would cross its answer.
    s.handle_peer(later, RID, PeerEvent::LocalDescription(offer_desc()));
    let again = s.reconnected(later);
    assert!(
        !again.contains(&Action::RestartIce { peer: RID.into() }),
        "{again:?}"
    );
    assert!(
        again.contains(&Action::Emit(
            to_receiver(RID),
            Message::Restart {
                id: SID.into(),
                offer: Some(offer_desc())
            }
        )),
        "{again:?}"
    );

    let mut r = receiver_with_peer(t0, SID);
    r.handle_peer(t0, SID, PeerEvent::Connected);
    r.handle_peer(t0, SID, PeerEvent::Disconnected("quiet".into()));
    let out = r.reconnected(later);
    assert!(
        out.contains(&Action::Emit(
            to_sender(SID),
            Message::Restart {
                id: RID.into(),
                offer: None
            }
        )),
        "{out:?}"
    );
    // A request that comes while that offer's answer is awaited gets the
    // same offer again (the receiver did not have it), not a new one
    // whose answer would cross the first's.
    let asked = later + RESTART_ASKED_AGAIN;
    assert_eq!(
        s.handle_signal(asked, None, &restart_request(RID)),
        vec![Action::Emit(
            to_receiver(RID),
            Message::Restart {
                id: SID.into(),
                offer: Some(offer_desc())
            }
        )]
    );
    // Once it is answered, a request restarts again.
    s.handle_signal(asked, None, &answer(RID));
    let much_later = asked + RESTART_AGAIN;
    assert_eq!(
        s.handle_signal(much_later, None, &restart_request(RID)),
        vec![Action::RestartIce { peer: RID.into() }]
    );
}

#[test]
fn a_receiver_that_lost_a_connection_looks_for_its_sender_every_second() {
    // Even with another sender still connected: the next ordinary ping is
    // half a minute away.
    let t0 = Instant::now();
    let mut r = receiver_with_peer(t0, SID);
    r.handle_signal(t0, None, &offer("other", json!({})));
    r.handle_peer(t0, SID, PeerEvent::Connected);
    r.handle_peer(t0, "other", PeerEvent::Connected);
    r.handle_peer(t0, SID, PeerEvent::Disconnected("quiet".into()));
    let out = r.tick(t0 + RESTART_UNANSWERED);
    assert!(out.contains(&give_up(SID)), "{out:?}");
    let mut invokes = 0;
    for s in 1..=5u64 {
        let out = r.tick(t0 + RESTART_UNANSWERED + Duration::from_secs(s));
        invokes += out
            .iter()
            .filter(|a| matches!(a, Action::Emit(_, Message::Invoke { .. })))
            .count();
    }
    assert!(invokes >= 4, "{invokes} invokes in 5 s");
}
