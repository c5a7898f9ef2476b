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
