//! Starting and stopping: what each machine subscribes to and announces,
//! and what it tells its peers when it leaves.

use super::*;

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
                    credentials: None,
                    proof: None,
                    restarts: false,
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
        s.reconnected(Instant::now()),
        vec![Action::Emit(
            Namespace::receiver(ROOM, None),
            Message::Invoke {
                id: SID.into(),
                credentials: None,
                proof: None,
                restarts: false,
            }
        )]
    );
    assert_eq!(s.peer_count(), 0);
}

#[test]
fn sender_stop_disposes_every_peer_and_leaves() {
    let now = Instant::now();
    let mut s = sender_with_peer(now, "rb");
    s.handle_signal(now, None, &invoke("ra", None));
    s.handle_peer(Instant::now(), "rb", PeerEvent::Connected);
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
fn receiver_start_subscribes_and_invokes_with_credentials() {
    let now = Instant::now();
    let mut r = receiver();
    assert_eq!(r.id(), RID);
    let invoke_all = Action::Emit(
        Namespace::sender(ROOM, None),
        Message::Invoke {
            id: RID.into(),
            credentials: Some(json!({"token": "t0ken"})),
            proof: None,
            restarts: true,
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
    assert_eq!(r.reconnected(Instant::now()), vec![invoke_all]);

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
                credentials: None,
                proof: None,
                restarts: true,
            }
        )
    );
}

#[test]
fn receiver_stop_tells_every_sender_and_leaves() {
    let now = Instant::now();
    let mut r = receiver_with_peer(now, "sb");
    r.handle_signal(now, None, &offer("sa", json!({})));
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
