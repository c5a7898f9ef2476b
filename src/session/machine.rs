//! The Sender and Receiver of the seed library as sans-IO state machines.
//!
//! They own no sockets, tasks or clock: the run loop feeds them signaling
//! messages, peer events and the current time, and carries out the
//! [`Action`]s they return, in order. Everything the protocol decides (who
//! gets an offer, which candidates wait, when a peer is given up, when to
//! ping) is here and unit-tested without a network.

mod receiver;
mod sender;

use std::time::{Duration, Instant};

use hmac::Mac as _;
use serde_json::{Map, Value};

use crate::protocol::{Candidate, Description, Message, Namespace};
pub use receiver::Receiver;
pub use sender::Sender;

/// Remote candidates taken from one peer, in its description and trickled
/// together. A browser gathers a handful per network interface (host,
/// server-reflexive and relayed, over UDP and TCP); 32 is plenty. Each one
/// makes our ICE agent send up to eight checks to the address it names,
/// from each of our own candidates, so without a cap one answer with 1,000
/// candidates aimed us at a third party (100,000 packets in 15 s); what is
/// left is paced by `rtc::guard`.
pub const MAX_REMOTE_CANDIDATES: usize = 32;

/// Candidates kept for a peer whose description has not arrived yet: no
/// more than it may have in all.
const MAX_EARLY_CANDIDATES: usize = MAX_REMOTE_CANDIDATES;

/// Peers (by id) for which early candidates are kept, same reasoning.
const MAX_EARLY_PEERS: usize = 64;

/// Largest `state` object accepted from the network, serialized. A state is
/// a nickname and a few flags; anything this large is abuse.
pub const MAX_STATE_BYTES: usize = 16 * 1024;

/// What the run loop must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Subscribe(Namespace),
    Unsubscribe(Namespace),
    Emit(Namespace, Message),
    /// Sender: create a peer connection for `peer` (with a data channel
    /// labelled `peer` when `data_channel`), create and set the offer, and
    /// report it as [`PeerEvent::LocalDescription`].
    CreateOffer {
        peer: String,
        data_channel: bool,
    },
    /// Receiver: create a peer connection for `peer`, apply `offer`, create
    /// and set the answer, and report it as [`PeerEvent::LocalDescription`].
    AcceptOffer {
        peer: String,
        offer: Description,
    },
    ApplyAnswer {
        peer: String,
        answer: Description,
    },
    AddCandidate {
        peer: String,
        candidate: Candidate,
    },
    /// Sender: restart ICE on `peer`'s connection (new credentials, new
    /// local candidates), create and set the offer, and report it as
    /// [`PeerEvent::LocalDescription`].
    RestartIce {
        peer: String,
    },
    /// Receiver: apply `offer` to `peer`'s existing connection (an ICE
    /// restart), create and set the answer, and report it as
    /// [`PeerEvent::LocalDescription`].
    Renegotiate {
        peer: String,
        offer: Description,
    },
    ClosePeer {
        peer: String,
        /// Given up (its connection failed or never came up), not left:
        /// whatever it had still to send is not coming.
        lost: bool,
    },
    Event(Event),
}

/// What the user sees (the seed's events).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A peer connection is established.
    Connect {
        id: String,
        state: Map<String, Value>,
    },
    /// A data channel with the peer is open.
    Channel { id: String },
    /// The sender's state changed.
    Sync {
        id: String,
        state: Map<String, Value>,
    },
    /// The peer is gone; `reason` says why when it was not a clean leave.
    Dispose { id: String, reason: Option<String> },
    /// The connection lost its path (`reason`) and ICE is restarting;
    /// tracks, channels and recordings are kept meanwhile.
    Reconnecting { id: String, reason: String },
    /// The connection has a path again, `after` it was lost.
    Reconnected { id: String, after: Duration },
    /// A receiver was refused (failed `--verify`).
    Rejected { id: String },
    /// Something non-fatal went wrong with input from the network.
    Error { id: Option<String>, error: String },
}

/// Events from the peer-connection adapter.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    LocalDescription(Description),
    LocalCandidate(Candidate),
    Connected,
    ChannelOpen,
    /// ICE heard nothing from the peer for a while: the path may be gone
    /// (an address changed, a link went down) or may come back.
    Disconnected(String),
    /// ICE failed, the connection closed, or a description could not be
    /// applied.
    Failed(String),
}

/// The receiver's `credentials` check: a receiver is accepted when its
/// credentials equal one of the accepted values, or when it proves it holds
/// one ([`proof`]).
#[derive(Debug, Clone, Default)]
pub struct Verify {
    pub accepted: Vec<Value>,
}

impl Verify {
    pub fn accepts(&self, credentials: Option<&Value>) -> bool {
        credentials.is_some_and(|c| self.accepted.iter().any(|a| a == c))
    }

    /// Is `proof` (hex) what a holder of one accepted value would answer
    /// to `nonce`? Compared in constant time.
    pub fn accepts_proof(
        &self,
        proof: &str,
        nonce: &str,
        ids: (&str, &str),
        from: Option<&str>,
    ) -> bool {
        let Ok(proof) = hex::decode(proof) else {
            return false;
        };
        self.accepted
            .iter()
            .any(|a| prover(a, nonce, ids, from).verify_slice(&proof).is_ok())
    }
}

/// Peers still connecting that one relay connection may have opened. A
/// receiver opens one; a page that is several receivers, a few. 700
/// invokes from one connection, never answered, used to make a sender
/// build 700 peers, run out of file descriptors and keep a real receiver
/// out for 30 s.
pub const MAX_CONNECTING_PER_ORIGIN: usize = 4;

/// Peers still connecting at once, from all connections. Past it, the
/// oldest that has had [`UNPROVEN_AFTER`] to connect gives way to the
/// newcomer; if none has, the newcomer is refused and told with a
/// `dispose` (a p2p receiver asks again a second later; the seed library's
/// at its next ping).
pub const MAX_CONNECTING: usize = 64;

/// How soon a receiver that a busy sender turned away asks again.
pub const RETRY_AFTER_BUSY: Duration = Duration::from_secs(1);

/// How long a connecting peer is safe from giving way to a newer one. A
/// receiver on loopback connects in ~0.2 s, through TURN in a second or
/// two.
pub const UNPROVEN_AFTER: Duration = Duration::from_secs(3);

/// A lost connection is restarted (sender) or asked to be (receiver) at
/// most this often: a restart's checks take a round trip or two to find a
/// path, and each restart starts them over.
pub const RESTART_AGAIN: Duration = Duration::from_secs(2);

/// A receiver's request is taken this soon after a restart: it asks
/// because it has not had the offer (that went while its relay connection
/// was down, say).
pub const RESTART_ASKED_AGAIN: Duration = Duration::from_millis(500);

/// A restart that has not found a path in this long is made again (its
/// offer or answer may have been lost on the way, or the network changed
/// again meanwhile). A restart's checks run ~2 s (`rtc::settings`), so
/// a path that comes back is found within about this long: at 5 s, a 10 s
/// outage came back 0.1 s or 3 s after it healed, by where the retries
/// fell.
pub const RESTART_RETRY: Duration = Duration::from_millis(2500);

/// A connection that has had no path for this long is given up: the
/// peers fall back to a new connection (the seed protocol's invoke and
/// offer), and a receiver starts a new recording. With ICE's 3 s of
/// silence before it calls a path lost, a receiver that was killed is
/// given up 15 s after it went, as before restarts; a link down for 10 s
/// comes back within it when the relay connection is back in time (see
/// the ws driver's back-off).
pub const RESTART_GIVE_UP: Duration = Duration::from_secs(12);

/// A receiver whose sender has sent no restart offer since the path was
/// lost gives the connection up after this long: the sender is gone (a
/// crash), cannot restart (the seed library's), or cannot be reached
/// through the relay either. A new connection, when one can be made, is
/// the way back, and a recording goes on in the same file.
pub const RESTART_UNANSWERED: Duration = Duration::from_secs(4);

/// How long a challenge waits for its answer.
const CHALLENGE_TTL: Duration = Duration::from_secs(10);

/// Challenges a sender keeps waiting at once; the oldest gives way.
const MAX_CHALLENGES: usize = 256;

/// A receiver's answer to a sender's challenge (PROTOCOL.md §1,
/// "Credentials without sending them"): HMAC-SHA256, keyed with the
/// credentials' JSON text, over the nonce, the sender's and the receiver's
/// ids, and the receiver's relay connection as the relay stamps it. Whoever
/// reads it learns nothing it could send from elsewhere: not the
/// credentials, and not a proof that passes for another nonce, pair of ids
/// or connection.
pub fn proof(credentials: &Value, nonce: &str, ids: (&str, &str), from: Option<&str>) -> String {
    hex::encode(
        prover(credentials, nonce, ids, from)
            .finalize()
            .into_bytes(),
    )
}

fn prover(
    credentials: &Value,
    nonce: &str,
    (sid, rid): (&str, &str),
    from: Option<&str>,
) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac;
    let key = serde_json::to_string(credentials).unwrap_or_default();
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    for part in [
        "p2p credentials proof 1",
        nonce,
        sid,
        rid,
        from.unwrap_or(""),
    ] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    mac
}

#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub id: String,
    pub room: String,
    pub state: Map<String, Value>,
    /// Open a data channel per receiver.
    pub data: bool,
    pub verify: Option<Verify>,
    /// Receivers (connected or connecting) beyond which new ones are
    /// refused.
    pub max_receivers: Option<usize>,
    pub connection_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub id: String,
    pub room: String,
    pub credentials: Option<Value>,
    /// Send the credentials themselves, as the seed library's Sender
    /// expects, instead of proving them when challenged.
    pub plain_credentials: bool,
    pub connection_timeout: Duration,
    pub ping_interval: Duration,
    pub ping_attempts: u32,
}

#[derive(Debug)]
struct Peer {
    created: Instant,
    connected: bool,
    /// The remote description was handed to the adapter: candidates can
    /// follow it.
    remote_set: bool,
    early: Vec<Candidate>,
    /// Remote candidates taken so far (see [`MAX_REMOTE_CANDIDATES`]).
    candidates: usize,
    /// The peer was told it sent too many (once).
    over_cap: bool,
    /// The relay connection whose message opened this peer (a receiver's
    /// invoke, a sender's offer), as the relay named it. Answers,
    /// candidates, syncs, offers and disposes about the peer are taken
    /// from it alone: anyone in a room can write any `id`, only the relay
    /// says who wrote. `None` where the transport does not say (NATS).
    origin: Option<String>,
    /// Receiver side: the sender's state.
    state: Map<String, Value>,
    /// The other side takes ICE restarts: a receiver said so in its invoke;
    /// a sender showed it by sending one.
    restarts: bool,
    /// Since when the connection has had no path (it was up before).
    lost: Option<Instant>,
    /// When a restart was last made (sender) or asked for (receiver).
    restarted: Option<Instant>,
    /// Sender: a restart offer went out; its answer is awaited.
    restart_offered: bool,
    /// Sender: that offer, sent again to a receiver that asks meanwhile.
    restart_offer: Option<Description>,
    /// Receiver: a restart offer came since the path was lost (the
    /// sender is there and trying).
    offered_since_lost: bool,
}

impl Peer {
    fn new(now: Instant, origin: Option<&str>) -> Self {
        Self {
            origin: origin.map(str::to_owned),
            created: now,
            connected: false,
            remote_set: false,
            early: Vec::new(),
            candidates: 0,
            over_cap: false,
            state: Map::new(),
            restarts: false,
            lost: None,
            restarted: None,
            restart_offered: false,
            restart_offer: None,
            offered_since_lost: false,
        }
    }

    /// Why the peer is given up now, if it is: it never connected within
    /// `timeout`, or its path has been lost [`RESTART_GIVE_UP`].
    fn overdue(&self, now: Instant, timeout: Duration) -> Option<&'static str> {
        if !self.connected && now.duration_since(self.created) >= timeout {
            Some("did not connect in time")
        } else if self.lost_for(now).is_some_and(|d| d >= RESTART_GIVE_UP) {
            Some("connection lost, and ICE restarts found no path")
        } else {
            None
        }
    }

    /// How long the path has been lost, if it is.
    fn lost_for(&self, now: Instant) -> Option<Duration> {
        self.lost.map(|at| now.duration_since(at))
    }

    /// A lost path whose last restart (made or asked for) is
    /// [`RESTART_RETRY`] old: time to try again.
    fn retry_due(&self, now: Instant) -> bool {
        self.lost.is_some()
            && self
                .restarted
                .is_none_or(|at| now.duration_since(at) >= RESTART_RETRY)
    }

    /// May a restart be made (or asked for) now, `apart` from the last?
    fn may_restart(&self, now: Instant, apart: Duration) -> bool {
        self.restarted
            .is_none_or(|at| now.duration_since(at) >= apart)
    }

    /// The connection has a path again: how long it had none, if it had
    /// lost it.
    fn restored(&mut self, now: Instant) -> Option<Duration> {
        self.restart_offered = false;
        self.offered_since_lost = false;
        self.lost.take().map(|at| now.duration_since(at))
    }

    /// Did the connection that opened this peer send `from`'s message?
    fn sent_by(&self, from: Option<&str>) -> bool {
        self.origin.as_deref() == from
    }

    /// Takes one more remote candidate, if the cap allows.
    fn admit(&mut self) -> bool {
        let room = self.candidates < MAX_REMOTE_CANDIDATES;
        self.candidates += usize::from(room);
        room
    }

    fn over_cap(&mut self, id: &str) -> Option<Action> {
        if std::mem::replace(&mut self.over_cap, true) {
            return None;
        }
        Some(Action::Event(Event::Error {
            id: Some(id.to_owned()),
            error: format!(
                "peer sent over {MAX_REMOTE_CANDIDATES} ICE candidates: ignoring the rest \
                 (a browser sends a few per network interface)"
            ),
        }))
    }

    /// Keeps the first candidates of a remote description, up to the cap,
    /// and counts them; the rest are cut out of its SDP.
    fn take_description(&mut self, id: &str, desc: &mut Description) -> Option<Action> {
        let mut kept = String::with_capacity(desc.sdp.len());
        let mut cut = false;
        for line in desc.sdp.split_inclusive('\n') {
            if line.starts_with("a=candidate:") {
                if self.candidates >= MAX_REMOTE_CANDIDATES {
                    cut = true;
                    continue;
                }
                self.candidates += 1;
            }
            kept.push_str(line);
        }
        if !cut {
            return None;
        }
        desc.sdp = kept;
        self.over_cap(id)
    }

    /// The candidates that waited for the description, as far as the cap
    /// allows after those the description carried.
    fn flush_early(&mut self, id: &str) -> Vec<Action> {
        let early = std::mem::take(&mut self.early);
        let mut out = Vec::new();
        for candidate in early {
            if !self.admit() {
                out.extend(self.over_cap(id));
                break;
            }
            out.push(Action::AddCandidate {
                peer: id.to_owned(),
                candidate,
            });
        }
        out
    }
}

/// The ids of the peers `pick` picks, sorted (actions come out in a
/// stable order).
fn ids_where(
    peers: &std::collections::HashMap<String, Peer>,
    pick: impl Fn(&Peer) -> bool,
) -> Vec<String> {
    let mut ids: Vec<String> = peers
        .iter()
        .filter(|(_, p)| pick(p))
        .map(|(id, _)| id.clone())
        .collect();
    ids.sort();
    ids
}

/// Parses a message from a driver, dropping what is not for us. Returns the
/// message, or the event to report when it is malformed.
fn accept(own_id: &str, data: &Value) -> Result<Option<Message>, Event> {
    match Message::from_value(data) {
        Ok(m) if m.id() == own_id => Ok(None),
        Ok(m) => Ok(Some(m)),
        Err(e) => Err(Event::Error {
            id: data.get("id").and_then(Value::as_str).map(str::to_owned),
            error: format!("ignored a signaling message: {e}"),
        }),
    }
}

/// A message about `id` from another relay connection than the one that
/// opened the peer: someone else in the room wrote `id` into it.
fn forged(id: &str, what: &str) -> Action {
    Action::Event(Event::Error {
        id: Some(id.to_owned()),
        error: format!(
            "ignored a{} {what} in this peer's name from another relay connection than its own",
            if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "n"
            } else {
                ""
            }
        ),
    })
}

fn state_too_large(state: &Map<String, Value>) -> bool {
    serde_json::to_vec(state).map_or(true, |v| v.len() > MAX_STATE_BYTES)
}

/// A remote candidate: applied once the remote description is in, kept until
/// then, skipped when it is an mDNS name we cannot resolve.
fn candidate_for(
    peer: &mut Peer,
    from: Option<&str>,
    id: String,
    candidate: Candidate,
) -> Vec<Action> {
    if !peer.sent_by(from) {
        return vec![forged(&id, "candidate")];
    }
    if candidate.candidate.is_empty() {
        return vec![]; // end-of-candidates
    }
    if candidate.is_mdns() {
        // Chromium's hidden host address: the peer reaches us anyway and
        // shows up as a peer-reflexive candidate.
        tracing::debug!(peer = %id, "skipping an mDNS (.local) candidate");
        return vec![];
    }
    if peer.remote_set {
        if !peer.admit() {
            return peer.over_cap(&id).into_iter().collect();
        }
        return vec![Action::AddCandidate {
            peer: id,
            candidate,
        }];
    }
    if peer.early.len() < MAX_EARLY_CANDIDATES {
        peer.early.push(candidate);
    }
    vec![]
}

#[cfg(test)]
#[path = "machine_tests/mod.rs"]
mod tests;
