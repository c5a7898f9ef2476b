//! `p2p send --verify`: whose credentials a sender accepts.

use super::*;

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
        s.handle_signal(now, None, &invoke("r-bad", Some(json!({"token": "bad"})))),
        rejected("r-bad")
    );
    assert_eq!(
        s.handle_signal(now, None, &invoke("r-none", None)),
        rejected("r-none")
    );
    // `credentials: null` is no credentials.
    assert_eq!(
        s.handle_signal(
            now,
            None,
            &json!({"type": "invoke", "id": "r-null", "credentials": null})
        ),
        rejected("r-null")
    );
    // Close is not equal.
    assert_eq!(
        s.handle_signal(
            now,
            None,
            &invoke("r-extra", Some(json!({"token": "good", "x": 1})))
        ),
        rejected("r-extra")
    );
    assert_eq!(s.peer_count(), 0, "no peer for a rejected receiver");

    assert_eq!(
        s.handle_signal(now, None, &invoke("r-good", Some(json!({"token": "good"})))),
        vec![Action::CreateOffer {
            peer: "r-good".into(),
            data_channel: true
        }]
    );
    assert_eq!(
        s.handle_signal(now, None, &invoke("r-good2", Some(json!("also-good")))),
        vec![Action::CreateOffer {
            peer: "r-good2".into(),
            data_channel: true
        }]
    );
    // A rejected receiver that comes back with the right credentials is let in.
    assert_eq!(
        s.handle_signal(now, None, &invoke("r-bad", Some(json!("also-good")))),
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
        s.handle_signal(now, None, &invoke(RID, Some(json!({"anything": true})))),
        vec![Action::CreateOffer {
            peer: RID.into(),
            data_channel: true
        }]
    );
}

/// A sender that accepts `{"token": "t0ken"}`, the test receiver's.
fn verifying_sender() -> Sender {
    let mut s = Sender::new(SenderConfig {
        verify: Some(Verify {
            accepted: vec![json!("other"), json!({"token": "t0ken"})],
        }),
        ..sender_cfg()
    });
    s.start();
    s
}

/// A receiver that proves its credentials, on relay connection `stamp`.
fn proving_receiver(now: Instant, stamp: &str) -> Receiver {
    let mut r = Receiver::new(ReceiverConfig {
        plain_credentials: false,
        ..receiver_cfg()
    });
    r.set_stamp(stamp.into());
    r.start(now);
    r
}

/// The one message emitted in `out`, as JSON.
fn emitted(out: &[Action]) -> Value {
    match out {
        [Action::Emit(_, m)] => m.to_value(),
        other => panic!("expected one emit, got {other:?}"),
    }
}

#[test]
fn a_receiver_proves_its_credentials_without_sending_them() {
    let now = Instant::now();
    let mut r = proving_receiver(now, "relay.1");
    let start = r.start(now);
    let Action::Emit(_, invoke) = &start[2] else {
        panic!("{start:?}")
    };
    let invoke = invoke.to_value();
    assert_eq!(
        invoke,
        json!({"type": "invoke", "id": RID, "prove": "hmac-sha256", "restarts": true})
    );
    assert!(!invoke.to_string().contains("t0ken"));

    let mut s = verifying_sender();
    let challenge = emitted(&s.handle_signal(now, Some("relay.1"), &invoke));
    assert_eq!(challenge["type"], "challenge");
    let answer = emitted(&r.handle_signal(now, Some("relay.7"), &challenge));
    assert!(answer["proof"].is_string() && !answer.to_string().contains("t0ken"));
    assert_eq!(
        s.handle_signal(now, Some("relay.1"), &answer),
        vec![Action::CreateOffer {
            peer: RID.into(),
            data_channel: true
        }]
    );
}

#[test]
fn a_proof_seen_by_others_gets_them_nothing() {
    let now = Instant::now();
    let rejected = |id: &str| vec![event(Event::Rejected { id: id.into() })];
    let able = json!({"type": "invoke", "id": RID, "prove": "hmac-sha256", "restarts": true});

    // Sent from another connection than the one challenged.
    let mut s = verifying_sender();
    let mut r = proving_receiver(now, "relay.1");
    let challenge = emitted(&s.handle_signal(now, Some("relay.1"), &able));
    let answer = emitted(&r.handle_signal(now, None, &challenge));
    assert_eq!(
        s.handle_signal(now, Some("relay.9"), &answer),
        rejected(RID)
    );
    // Replayed once used: the receiver got in with it, left, and its proof
    // is sent again.
    assert!(matches!(
        s.handle_signal(now, Some("relay.1"), &answer)[..],
        [Action::CreateOffer { .. }]
    ));
    s.dispose(RID, None);
    assert_eq!(
        s.handle_signal(now, Some("relay.1"), &answer),
        rejected(RID)
    );
    // Sent after the challenge expired.
    let challenge = emitted(&s.handle_signal(now, Some("relay.1"), &able));
    let answer = emitted(&r.handle_signal(now, None, &challenge));
    let late = now + Duration::from_secs(11);
    assert_eq!(
        s.handle_signal(late, Some("relay.1"), &answer),
        rejected(RID)
    );

    // Relayed: an attacker on relay.9 asks the sender for a challenge in
    // the victim's name and has the victim answer it, posing as the sender.
    // The victim binds its answer to its own connection: no use on relay.9.
    let mut s = verifying_sender();
    let challenge = emitted(&s.handle_signal(now, Some("relay.9"), &able));
    let answer = emitted(&r.handle_signal(now, Some("relay.9"), &challenge));
    assert_eq!(
        s.handle_signal(now, Some("relay.9"), &answer),
        rejected(RID)
    );

    // Wrong credentials prove nothing; nor does garbage.
    let mut wrong = Receiver::new(ReceiverConfig {
        credentials: Some(json!({"token": "guess"})),
        plain_credentials: false,
        ..receiver_cfg()
    });
    wrong.set_stamp("relay.1".into());
    let challenge = emitted(&s.handle_signal(now, Some("relay.1"), &able));
    let answer = emitted(&wrong.handle_signal(now, None, &challenge));
    assert_eq!(
        s.handle_signal(now, Some("relay.1"), &answer),
        rejected(RID)
    );
    s.handle_signal(now, Some("relay.1"), &able);
    let garbage = json!({"type": "invoke", "id": RID, "proof": "zz"});
    assert_eq!(
        s.handle_signal(now, Some("relay.1"), &garbage),
        rejected(RID)
    );
    assert_eq!(s.peer_count(), 0);
}

#[test]
fn plain_credentials_are_sent_as_the_seed_library_expects() {
    let now = Instant::now();
    let mut r = receiver();
    let start = r.start(now);
    let Action::Emit(_, invoke) = &start[2] else {
        panic!("{start:?}")
    };
    assert_eq!(
        invoke.to_value(),
        json!({"type": "invoke", "id": RID, "credentials": {"token": "t0ken"}, "restarts": true})
    );
    // And a challenge gets no answer: the credentials went already.
    let challenge = json!({"type": "challenge", "id": SID, "nonce": "00"});
    assert_eq!(r.handle_signal(now, None, &challenge), vec![]);
}

#[test]
fn a_wrong_answer_does_not_use_up_the_challenge_and_asking_twice_gets_one_nonce() {
    let now = Instant::now();
    let able = json!({"type": "invoke", "id": RID, "prove": "hmac-sha256", "restarts": true});
    let mut s = verifying_sender();
    let mut r = proving_receiver(now, "relay.1");
    let first = emitted(&s.handle_signal(now, Some("relay.1"), &able));
    let again = emitted(&s.handle_signal(now, Some("relay.1"), &able));
    assert_eq!(first["nonce"], again["nonce"]);
    // Someone sends the receiver junk challenges in this sender's name; it
    // answers them, and the answers reach the sender first.
    let junk = json!({"type": "challenge", "id": SID, "nonce": "00"});
    let junk_answer = emitted(&r.handle_signal(now, Some("relay.9"), &junk));
    assert_eq!(
        s.handle_signal(now, Some("relay.1"), &junk_answer),
        vec![event(Event::Rejected { id: RID.into() })]
    );
    // The real answer still passes.
    let answer = emitted(&r.handle_signal(now, None, &first));
    assert!(matches!(
        s.handle_signal(now, Some("relay.1"), &answer)[..],
        [Action::CreateOffer { .. }]
    ));
}

#[test]
fn where_no_relay_stamps_the_prover_names_its_connection() {
    // The receiver on a relay, the sender on NATS: the sender sees no
    // `from`, and checks the proof against the stamp the receiver names.
    let now = Instant::now();
    let able = json!({"type": "invoke", "id": RID, "prove": "hmac-sha256", "restarts": true});
    let mut s = verifying_sender();
    let mut r = proving_receiver(now, "relay.1");
    let challenge = emitted(&s.handle_signal(now, None, &able));
    let answer = emitted(&r.handle_signal(now, None, &challenge));
    assert_eq!(answer["stamp"], "relay.1");
    assert!(matches!(
        s.handle_signal(now, None, &answer)[..],
        [Action::CreateOffer { .. }]
    ));
}
