//! How many receivers a sender serves: peers that never connect cannot
//! crowd out the ones that do, and `--max-receivers` is a hard cap.

use super::*;

fn created(out: &[Action]) -> bool {
    matches!(out.last(), Some(Action::CreateOffer { .. }))
}

fn refused(out: &[Action]) -> (String, bool) {
    let Some(Action::Event(Event::Error { error, .. })) = out.first() else {
        panic!("not refused: {out:?}")
    };
    let told = out
        .iter()
        .any(|a| matches!(a, Action::Emit(_, Message::Dispose { .. })));
    (error.clone(), told)
}

#[test]
fn one_relay_connection_opens_a_few_connecting_peers_at_most() {
    let now = Instant::now();
    let mut s = sender();
    s.start();
    let flood = Some("relay.5");
    for n in 0..MAX_CONNECTING_PER_ORIGIN {
        assert!(created(&s.handle_signal(
            now,
            flood,
            &invoke(&format!("f{n}"), None)
        )));
    }
    let (why, told) = refused(&s.handle_signal(now, flood, &invoke("f-more", None)));
    assert!(why.contains("relay connection"), "{why}");
    assert!(!told, "a flooder is not invited back");
    // Anyone else gets in at once.
    assert!(created(&s.handle_signal(
        now,
        Some("relay.6"),
        &invoke(RID, None)
    )));
    // Once one of the flooder's connects, it may open one more.
    s.handle_peer(Instant::now(), "f0", PeerEvent::Connected);
    assert!(created(&s.handle_signal(
        now,
        flood,
        &invoke("f-later", None)
    )));
}

#[test]
fn past_the_connecting_cap_the_oldest_unproven_peer_gives_way() {
    let t0 = Instant::now();
    let mut s = sender();
    s.start();
    for n in 0..MAX_CONNECTING {
        let from = format!("relay.{n}");
        let at = t0 + Duration::from_millis(n as u64);
        assert!(created(&s.handle_signal(
            at,
            Some(&from),
            &invoke(&format!("r{n}"), None)
        )));
    }
    // All are young: the newcomer is told to come back.
    let start = t0;
    let t0 = t0 + Duration::from_millis(MAX_CONNECTING as u64);
    let (why, told) = refused(&s.handle_signal(t0, Some("relay.x"), &invoke("new", None)));
    assert!(why.contains("connecting already"), "{why}");
    assert!(told);
    // Connected peers do not count.
    s.handle_peer(Instant::now(), "r1", PeerEvent::Connected);
    assert!(created(&s.handle_signal(
        t0,
        Some("relay.x"),
        &invoke("new", None)
    )));
    // Later the oldest peer still connecting (r0) gives way.
    let later = start + UNPROVEN_AFTER;
    let out = s.handle_signal(later, Some("relay.y"), &invoke("newer", None));
    assert_eq!(out[0], give_up("r0"));
    assert!(matches!(
        &out[2],
        Action::Event(Event::Dispose { id, reason: Some(r) }) if id == "r0" && r.contains("gave way")
    ));
    assert!(created(&out));
    assert_eq!(s.peer_count(), MAX_CONNECTING + 1);
}

#[test]
fn max_receivers_is_a_hard_cap_that_silent_peers_cannot_hold() {
    let now = Instant::now();
    let mut s = Sender::new(SenderConfig {
        max_receivers: Some(2),
        ..sender_cfg()
    });
    s.start();
    assert!(created(&s.handle_signal(now, None, &invoke("a", None))));
    assert!(created(&s.handle_signal(now, None, &invoke("b", None))));
    s.handle_peer(Instant::now(), "a", PeerEvent::Connected);
    // b is still connecting: c is told to ask again soon.
    let (why, told) = refused(&s.handle_signal(now, None, &invoke("c", None)));
    assert!(why.contains("--max-receivers"), "{why}");
    assert!(told);
    // b never connects: after its time, it gives way to c.
    let later = now + UNPROVEN_AFTER;
    let out = s.handle_signal(later, None, &invoke("c", None));
    assert_eq!(out[0], give_up("b"));
    assert!(created(&out));
    // Both connected: the room is full, and d is not invited back.
    s.handle_peer(Instant::now(), "c", PeerEvent::Connected);
    let (_, told) = refused(&s.handle_signal(later, None, &invoke("d", None)));
    assert!(!told);
    s.handle_signal(later, None, &dispose_msg("a"));
    assert!(created(&s.handle_signal(later, None, &invoke("d", None))));
}

#[test]
fn a_receiver_turned_away_asks_again_a_second_later() {
    let t0 = Instant::now();
    let mut r = receiver();
    r.start(t0);
    let invokes = |out: &[Action]| {
        out.iter()
            .filter(|a| matches!(a, Action::Emit(_, Message::Invoke { .. })))
            .count()
    };
    assert_eq!(r.handle_signal(t0, None, &dispose_msg(SID)), vec![]);
    assert_eq!(invokes(&r.tick(t0 + Duration::from_millis(500))), 0);
    assert_eq!(invokes(&r.tick(t0 + RETRY_AFTER_BUSY)), 1);
    // And then at its usual pace again.
    assert_eq!(invokes(&r.tick(t0 + RETRY_AFTER_BUSY * 2)), 0);
}
