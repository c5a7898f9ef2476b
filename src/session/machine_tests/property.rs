//! Property test: any sequence of messages, peer events and ticks leaves
//! both machines consistent with what an adapter would hold.

use super::*;
use proptest::prelude::*;
use std::collections::HashSet;

const IDS: [&str; 4] = [SID, RID, "sender-2", "receiver-2"];
const KEYS: [&str; 10] = [
    "type",
    "id",
    "offer",
    "answer",
    "candidate",
    "state",
    "sdp",
    "credentials",
    "sdpMid",
    "sdpMLineIndex",
];

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "invoke", "offer", "answer", "candidate", "sync", "dispose", "",
            "v=0", "candidate:1 1 udp 2122 10.0.0.1 5000 typ host",
            "candidate:2 1 udp 2122 abc.local 5000 typ host",
        ])
        .prop_map(str::to_owned),
        2 => prop::sample::select(IDS.to_vec()).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Any JSON, biased towards the words of the protocol.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0u64..70_000).prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..7).prop_map(
                |kv| { Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()) }
            ),
        ]
    })
}

fn arb_candidate() -> impl Strategy<Value = Candidate> {
    prop_oneof![
        4 => (1u8..5).prop_map(cand),
        1 => Just(mdns_cand()),
        1 => Just(end_of_candidates()),
    ]
}

/// Messages that are well-formed more often than not, so that the
/// machines get deep into their states.
fn arb_message(id: &'static str) -> impl Strategy<Value = Value> {
    let kind = prop::sample::select(vec![
        "invoke",
        "offer",
        "offer",
        "answer",
        "answer",
        "candidate",
        "candidate",
        "candidate",
        "sync",
        "dispose",
        "restart",
        "restart",
    ]);
    // 0: the description the type calls for, 1: the other one, 2: noise.
    let desc = prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)];
    let state = prop_oneof![
        2 => Just(json!({"nick": "x"})),
        1 => Just(json!({})),
        1 => arb_json(),
    ];
    let cand = prop_oneof![
        6 => arb_candidate().prop_map(|c| serde_json::to_value(c).unwrap()),
        1 => arb_json(),
    ];
    let creds = prop_oneof![
        3 => Just(Some(json!({"token": "t0ken"}))),
        1 => Just(Some(json!(1))),
        1 => Just(None),
        1 => arb_json().prop_map(Some),
    ];
    (kind, desc, arb_json(), cand, state, creds).prop_map(
        move |(kind, desc, noise, cand, state, creds)| {
            let description = |wanted: &str| match (desc, wanted) {
                (0, "offer") | (1, "answer") => json!({"type": "offer", "sdp": "v=0 offer"}),
                (0, _) | (1, _) => json!({"type": "answer", "sdp": "v=0 answer"}),
                _ => noise.clone(),
            };
            let mut m = json!({"type": kind, "id": id});
            let o = m.as_object_mut().unwrap(); // built as an object above
            match kind {
                "offer" => {
                    o.insert("offer".into(), description("offer"));
                    o.insert("state".into(), state);
                }
                "answer" => {
                    o.insert("answer".into(), description("answer"));
                }
                "candidate" => {
                    o.insert("candidate".into(), cand);
                }
                "sync" | "dispose" => {
                    o.insert("state".into(), state);
                }
                "restart" => {
                    // A sender's carries an offer, a receiver's nothing.
                    if desc != 2 {
                        o.insert("offer".into(), description("offer"));
                    }
                }
                _ => {
                    if let Some(c) = creds {
                        o.insert("credentials".into(), c);
                    }
                }
            }
            m
        },
    )
}

fn arb_peer_event() -> impl Strategy<Value = PeerEvent> {
    prop_oneof![
        Just(PeerEvent::LocalDescription(offer_desc())),
        Just(PeerEvent::LocalDescription(answer_desc())),
        arb_candidate().prop_map(PeerEvent::LocalCandidate),
        Just(PeerEvent::Connected),
        Just(PeerEvent::ChannelOpen),
        Just(PeerEvent::Failed("failed".into())),
        Just(PeerEvent::Disconnected("quiet".into())),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    /// A message straight from the network to one machine.
    Signal {
        to_sender: bool,
        data: Value,
    },
    /// Deliver one of the messages the machines emitted, picked by
    /// index: the relay may reorder.
    Deliver(usize),
    Peer {
        to_sender: bool,
        peer: &'static str,
        event: PeerEvent,
    },
    /// Advance the clock by this many milliseconds and tick both.
    Tick(u64),
    Sync(bool),
    Reconnected,
}

/// Ids a machine's input comes from: mostly the other role's, sometimes
/// its own role's (or its own id, which it must ignore).
fn arb_from(to_sender: bool) -> impl Strategy<Value = &'static str> {
    let (peers, others) = if to_sender {
        ([RID, "receiver-2"], [SID, "sender-2"])
    } else {
        ([SID, "sender-2"], [RID, "receiver-2"])
    };
    prop_oneof![
        4 => prop::sample::select(peers.to_vec()),
        1 => prop::sample::select(others.to_vec()),
    ]
}

fn arb_step() -> impl Strategy<Value = Step> {
    let signal = any::<bool>().prop_flat_map(|to_sender| {
        let data = prop_oneof![
            1 => arb_json(),
            4 => arb_from(to_sender).prop_flat_map(arb_message),
        ];
        (Just(to_sender), data)
    });
    let peer = any::<bool>()
        .prop_flat_map(|to_sender| (Just(to_sender), arb_from(to_sender), arb_peer_event()));
    prop_oneof![
        6 => signal.prop_map(|(to_sender, data)| Step::Signal { to_sender, data }),
        4 => any::<usize>().prop_map(Step::Deliver),
        3 => peer.prop_map(|(to_sender, peer, event)| Step::Peer { to_sender, peer, event }),
        2 => (0u64..3_000).prop_map(Step::Tick),
        1 => (0u64..40_000).prop_map(Step::Tick),
        1 => any::<bool>().prop_map(Step::Sync),
        1 => Just(Step::Reconnected),
    ]
}

/// What the adapter would hold: the peers that exist on one side.
#[derive(Default)]
struct Model {
    live: HashSet<String>,
    remote_set: HashSet<String>,
    /// Sender: peers whose ICE-restart offer went out.
    restarting: HashSet<String>,
}

impl Model {
    fn check(
        &mut self,
        is_sender: bool,
        own: &str,
        actions: &[Action],
        outbox: &mut Vec<(Namespace, Value)>,
    ) -> Result<(), TestCaseError> {
        let (mine, theirs) = if is_sender {
            ("sender", "receiver")
        } else {
            ("receiver", "sender")
        };
        for a in actions {
            match a {
                Action::CreateOffer { peer, .. } => {
                    prop_assert!(is_sender, "receiver made an offer: {:?}", a);
                    prop_assert!(peer != own);
                    prop_assert!(self.live.insert(peer.clone()), "second peer {}", peer);
                }
                Action::AcceptOffer { peer, .. } => {
                    prop_assert!(!is_sender, "sender accepted an offer: {:?}", a);
                    prop_assert!(peer != own);
                    prop_assert!(
                        self.live.insert(peer.clone()),
                        "accepted over a live peer {} without closing it",
                        peer
                    );
                    self.remote_set.insert(peer.clone());
                }
                Action::ApplyAnswer { peer, .. } => {
                    prop_assert!(is_sender);
                    prop_assert!(self.live.contains(peer), "answer for no peer {}", peer);
                    prop_assert!(
                        self.remote_set.insert(peer.clone()) || self.restarting.remove(peer),
                        "two answers to one offer"
                    );
                }
                Action::AddCandidate { peer, candidate } => {
                    prop_assert!(self.live.contains(peer), "candidate for no peer {}", peer);
                    prop_assert!(
                        self.remote_set.contains(peer),
                        "candidate before the description for {}",
                        peer
                    );
                    prop_assert!(!candidate.candidate.is_empty());
                    prop_assert!(!candidate.is_mdns());
                }
                Action::RestartIce { peer } => {
                    prop_assert!(is_sender, "receiver restarted ICE: {:?}", a);
                    prop_assert!(self.remote_set.contains(peer), "restart before the answer");
                }
                Action::Renegotiate { peer, .. } => {
                    prop_assert!(!is_sender, "sender renegotiated: {:?}", a);
                    prop_assert!(
                        self.remote_set.contains(peer),
                        "restart offer for no peer {}",
                        peer
                    );
                }
                Action::ClosePeer { peer, .. } => {
                    prop_assert!(self.live.remove(peer), "closed unknown peer {}", peer);
                    self.remote_set.remove(peer);
                    self.restarting.remove(peer);
                }
                Action::Emit(ns, msg) => {
                    if let Message::Restart { offer: Some(_), .. } = msg {
                        prop_assert!(is_sender);
                        self.restarting.insert(ns.parts()[2].clone());
                    }
                    prop_assert_eq!(&ns.parts()[0], theirs);
                    prop_assert_eq!(&ns.parts()[1], ROOM);
                    prop_assert_eq!(msg.id(), own);
                    outbox.push((ns.clone(), msg.to_value()));
                }
                Action::Subscribe(ns) | Action::Unsubscribe(ns) => {
                    prop_assert_eq!(&ns.parts()[0], mine);
                }
                Action::Event(_) => {}
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn machines_survive_any_input(steps in prop::collection::vec(arb_step(), 0..80)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut s = Sender::new(SenderConfig {
            verify: Some(Verify { accepted: vec![json!({"token": "t0ken"}), json!(1)] }),
            ..sender_cfg()
        });
        let mut r = Receiver::new(ReceiverConfig {
            ping_interval: Duration::from_secs(5),
            ping_attempts: 2,
            connection_timeout: Duration::from_secs(20),
            ..receiver_cfg()
        });
        let (mut ms, mut mr) = (Model::default(), Model::default());
        let mut outbox: Vec<(Namespace, Value)> = Vec::new();
        let a = s.start();
        ms.check(true, SID, &a, &mut outbox)?;
        let a = r.start(now);
        mr.check(false, RID, &a, &mut outbox)?;

        for step in steps {
            let (to_sender, actions) = match step {
                Step::Signal { to_sender: true, data } => (true, s.handle_signal(now, None, &data)),
                Step::Signal { to_sender: false, data } => (false, r.handle_signal(now, None, &data)),
                Step::Deliver(i) => {
                    if outbox.is_empty() {
                        continue;
                    }
                    let (ns, data) = outbox.remove(i % outbox.len());
                    let for_us = |id: &str| ns.parts().get(2).is_none_or(|p| p == id);
                    if ns.parts()[0] == "sender" && for_us(SID) {
                        (true, s.handle_signal(now, None, &data))
                    } else if ns.parts()[0] == "receiver" && for_us(RID) {
                        (false, r.handle_signal(now, None, &data))
                    } else {
                        continue;
                    }
                }
                Step::Peer { to_sender: true, peer, event } => (true, s.handle_peer(Instant::now(), peer, event)),
                Step::Peer { to_sender: false, peer, event } => {
                    (false, r.handle_peer(now, peer, event))
                }
                Step::Tick(dt) => {
                    now += Duration::from_millis(dt);
                    let a = s.tick(now);
                    ms.check(true, SID, &a, &mut outbox)?;
                    (false, r.tick(now))
                }
                Step::Sync(merge) => (true, s.sync(obj(json!({"n": now.duration_since(t0).as_millis() as u64})), merge)),
                Step::Reconnected => {
                    let a = s.reconnected(now);
                    ms.check(true, SID, &a, &mut outbox)?;
                    (false, r.reconnected(now))
                }
            };
            if to_sender {
                ms.check(true, SID, &actions, &mut outbox)?;
            } else {
                mr.check(false, RID, &actions, &mut outbox)?;
            }
            prop_assert_eq!(s.peer_count(), ms.live.len());
            prop_assert_eq!(r.peer_count(), mr.live.len());
            prop_assert!(s.connecting() <= s.peer_count());
            prop_assert!(r.connected() <= r.peer_count());
            for p in &mr.live {
                prop_assert!(r.state_of(p).is_some());
            }
        }

        let a = s.stop();
        ms.check(true, SID, &a, &mut outbox)?;
        let a = r.stop();
        mr.check(false, RID, &a, &mut outbox)?;
        prop_assert!(ms.live.is_empty(), "sender left peers open: {:?}", ms.live);
        prop_assert!(mr.live.is_empty(), "receiver left peers open: {:?}", mr.live);
        prop_assert_eq!(s.peer_count(), 0);
        prop_assert_eq!(r.peer_count(), 0);
    }
}
