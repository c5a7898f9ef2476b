//! Unit tests of the Sender and Receiver state machines: every test feeds
//! inputs and checks the exact actions that come back. One file per
//! behaviour; the helpers they share are here.

use super::*;

use serde_json::json;

const ROOM: &str = "demo";
const SID: &str = "sender-1";
const RID: &str = "receiver-1";
const TIMEOUT: Duration = Duration::from_secs(30);

mod candidates;
mod capacity;
mod connections;
mod forgery;
mod join;
mod malformed;
mod offers;
mod pings;
mod property;
mod restarts;
mod state;
mod through_a_router;
mod verify;

fn sender_cfg() -> SenderConfig {
    SenderConfig {
        id: SID.into(),
        room: ROOM.into(),
        state: obj(json!({"nick": "cam"})),
        data: true,
        verify: None,
        max_receivers: None,
        connection_timeout: TIMEOUT,
    }
}

fn sender() -> Sender {
    Sender::new(sender_cfg())
}

fn receiver_cfg() -> ReceiverConfig {
    ReceiverConfig {
        id: RID.into(),
        room: ROOM.into(),
        credentials: Some(json!({"token": "t0ken"})),
        plain_credentials: true,
        connection_timeout: TIMEOUT,
        ping_interval: Duration::from_secs(30),
        ping_attempts: 10,
    }
}

fn receiver() -> Receiver {
    Receiver::new(receiver_cfg())
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn desc(kind: &str, sdp: &str) -> Description {
    Description {
        kind: kind.into(),
        sdp: sdp.into(),
    }
}

fn offer_desc() -> Description {
    desc("offer", "v=0 offer")
}

fn answer_desc() -> Description {
    desc("answer", "v=0 answer")
}

/// A host candidate with a distinct address per `n`.
fn cand(n: u8) -> Candidate {
    Candidate {
        candidate: format!("candidate:{n} 1 udp 2122260223 192.168.1.{n} 5000{n} typ host"),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("ufrag".into()),
    }
}

fn mdns_cand() -> Candidate {
    Candidate {
        candidate:
            "candidate:9 1 udp 2122260223 3f0c1a2b-1111-2222-3333-444455556666.local 50000 typ host"
                .into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: None,
    }
}

fn end_of_candidates() -> Candidate {
    Candidate {
        candidate: String::new(),
        sdp_mid: Some("0".into()),
        ..Default::default()
    }
}

fn invoke(id: &str, credentials: Option<Value>) -> Value {
    Message::Invoke {
        id: id.into(),
        credentials,
        proof: None,
        restarts: false,
    }
    .to_value()
}

fn answer(id: &str) -> Value {
    Message::Answer {
        id: id.into(),
        answer: answer_desc(),
    }
    .to_value()
}

fn offer(id: &str, state: Value) -> Value {
    Message::Offer {
        id: id.into(),
        offer: offer_desc(),
        state: obj(state),
        restarts: false,
    }
    .to_value()
}

fn candidate(id: &str, c: Candidate) -> Value {
    Message::Candidate {
        id: id.into(),
        candidate: c,
    }
    .to_value()
}

fn sync_msg(id: &str, state: Value) -> Value {
    Message::Sync {
        id: id.into(),
        state: obj(state),
    }
    .to_value()
}

fn dispose_msg(id: &str) -> Value {
    Message::Dispose {
        id: id.into(),
        state: None,
    }
    .to_value()
}

fn to_receiver(rid: &str) -> Namespace {
    Namespace::receiver(ROOM, Some(rid))
}

fn to_sender(sid: &str) -> Namespace {
    Namespace::sender(ROOM, Some(sid))
}

fn add(peer: &str, c: Candidate) -> Action {
    Action::AddCandidate {
        peer: peer.into(),
        candidate: c,
    }
}

/// A peer closed because it (or we) left.
fn close(peer: &str) -> Action {
    Action::ClosePeer {
        peer: peer.into(),
        lost: false,
    }
}

/// A peer given up: its connection failed or never came up.
fn give_up(peer: &str) -> Action {
    Action::ClosePeer {
        peer: peer.into(),
        lost: true,
    }
}

fn event(e: Event) -> Action {
    Action::Event(e)
}

/// The one `Error` event in `actions`, or a panic that shows them.
fn single_error(actions: &[Action]) -> (Option<String>, String) {
    match actions {
        [Action::Event(Event::Error { id, error })] => (id.clone(), error.clone()),
        other => panic!("expected exactly one Error event, got {other:?}"),
    }
}

/// A sender with one peer `rid` that has been offered (invoke handled).
fn sender_with_peer(now: Instant, rid: &str) -> Sender {
    let mut s = sender();
    s.start();
    let out = s.handle_signal(now, None, &invoke(rid, None));
    assert_eq!(
        out,
        vec![Action::CreateOffer {
            peer: rid.into(),
            data_channel: true
        }]
    );
    s
}

/// A receiver that has accepted an offer from `sid`.
fn receiver_with_peer(now: Instant, sid: &str) -> Receiver {
    let mut r = receiver();
    r.start(now);
    let out = r.handle_signal(now, None, &offer(sid, json!({"nick": "cam"})));
    assert_eq!(
        out,
        vec![Action::AcceptOffer {
            peer: sid.into(),
            offer: offer_desc()
        }]
    );
    r
}
