//! The receiver's pings (repeated invokes): how often, how many, and when
//! they stop or start again.

use super::*;

fn ping() -> Action {
    Action::Emit(
        Namespace::sender(ROOM, None),
        Message::Invoke {
            id: RID.into(),
            credentials: Some(json!({"token": "t0ken"})),
            proof: None,
            restarts: true,
        },
    )
}

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

fn count_invokes(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Emit(_, Message::Invoke { .. })))
        .count()
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
    r.handle_signal(t0, None, &offer(SID, json!({})));
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
    r.handle_signal(gone, None, &dispose_msg(SID));
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
    r.handle_signal(t1, None, &offer(SID, json!({})));
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
    r.handle_signal(t0, None, &offer(SID, json!({})));
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
    r.handle_signal(t0, None, &offer(SID, json!({})));
    r.handle_peer(t0, SID, PeerEvent::Connected);
    let lost = t0 + Duration::from_secs(100);
    let out = r.handle_peer(
        lost,
        SID,
        PeerEvent::Failed("connection lost (ICE disconnected)".into()),
    );
    assert_eq!(
        out[0],
        Action::ClosePeer {
            peer: SID.into(),
            lost: true
        }
    );
    assert_eq!(r.peer_count(), 0);
    assert_eq!(r.tick(lost + Duration::from_millis(900)), vec![]);
    assert_eq!(r.tick(lost + Duration::from_secs(1)), vec![ping()]);

    let back = lost + Duration::from_secs(2);
    let out = r.handle_signal(back, None, &offer(SID, json!({})));
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
