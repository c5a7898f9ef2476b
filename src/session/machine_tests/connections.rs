//! Peer connections after the handshake: reported connected once, given
//! up when they fail or time out, closed when the other side leaves.

use super::*;

#[test]
fn sender_reports_a_connection_once() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    assert_eq!(s.connecting(), 1);
    assert_eq!(
        s.handle_peer(Instant::now(), RID, PeerEvent::Connected),
        vec![event(Event::Connect {
            id: RID.into(),
            state: Map::new()
        })]
    );
    assert_eq!(
        s.handle_peer(Instant::now(), RID, PeerEvent::Connected),
        vec![]
    );
    assert_eq!(s.connecting(), 0);
    assert_eq!(s.peer_count(), 1);
    assert_eq!(
        s.handle_peer(Instant::now(), RID, PeerEvent::ChannelOpen),
        vec![event(Event::Channel { id: RID.into() })]
    );
}

#[test]
fn sender_disposes_a_failed_peer_and_tells_the_receiver() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    s.handle_peer(Instant::now(), RID, PeerEvent::Connected);
    assert_eq!(
        s.handle_peer(Instant::now(), RID, PeerEvent::Failed("ice failed".into())),
        vec![
            give_up(RID),
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
    assert_eq!(
        s.handle_peer(Instant::now(), RID, PeerEvent::Connected),
        vec![]
    );
    assert_eq!(
        s.handle_peer(Instant::now(), RID, PeerEvent::Failed("again".into())),
        vec![]
    );
    assert_eq!(s.dispose(RID, None), vec![]);
    // The receiver may come back: a new invoke makes a new peer.
    assert_eq!(
        s.handle_signal(now, None, &invoke(RID, None)),
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
    s.handle_signal(t0, None, &invoke("fast", None));
    s.handle_peer(Instant::now(), "fast", PeerEvent::Connected);
    let t1 = t0 + Duration::from_secs(10);
    s.handle_signal(t1, None, &invoke("young", None));
    assert_eq!(s.peer_count(), 3);

    assert_eq!(s.tick(t0), vec![]);
    assert_eq!(s.tick(t0 + TIMEOUT - Duration::from_millis(1)), vec![]);
    assert_eq!(
        s.tick(t0 + TIMEOUT),
        vec![
            give_up("late"),
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
    assert_eq!(out.first(), Some(&give_up("young")));
    assert_eq!(out.len(), 3);
    // The connected peer stays, however long.
    assert_eq!(s.tick(t0 + TIMEOUT * 100), vec![]);
    assert_eq!(s.peer_count(), 1);
    // A time before the peer was created does not panic or dispose.
    assert_eq!(s.tick(t0), vec![]);
}

#[test]
fn sender_closes_the_peer_of_a_receiver_that_leaves() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, RID);
    s.handle_peer(Instant::now(), RID, PeerEvent::Connected);
    assert_eq!(
        s.handle_signal(now, None, &dispose_msg(RID)),
        vec![
            close(RID),
            event(Event::Dispose {
                id: RID.into(),
                reason: Some("receiver left".into())
            }),
        ]
    );
    assert_eq!(s.peer_count(), 0);
    assert_eq!(s.handle_signal(now, None, &dispose_msg(RID)), vec![]);
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
        r.handle_signal(now, None, &msg),
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
    assert_eq!(r.handle_signal(now, None, &msg), vec![]);
    assert_eq!(r.handle_peer(now, SID, PeerEvent::Connected), vec![]);
}

#[test]
fn receiver_disposes_a_failed_peer_and_tells_the_sender() {
    let now = Instant::now();
    let mut r = receiver_with_peer(now, SID);
    assert_eq!(
        r.handle_peer(now, SID, PeerEvent::Failed("ice failed".into())),
        vec![
            give_up(SID),
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
    r.handle_signal(t0, None, &offer("slow", json!({})));
    r.handle_signal(t0, None, &offer("fast", json!({})));
    r.handle_peer(t0, "fast", PeerEvent::Connected);
    assert_eq!(r.tick(t0 + TIMEOUT - Duration::from_millis(1)), vec![]);
    assert_eq!(
        r.tick(t0 + TIMEOUT),
        vec![
            give_up("slow"),
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
