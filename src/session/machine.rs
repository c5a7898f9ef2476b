//! The Sender and Receiver of the seed library as sans-IO state machines.
//!
//! They own no sockets, tasks or clock: the run loop feeds them signaling
//! messages, peer events and the current time, and carries out the
//! [`Action`]s they return, in order. Everything the protocol decides (who
//! gets an offer, which candidates wait, when a peer is given up, when to
//! ping) is here and unit-tested without a network.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::protocol::{Candidate, Description, Message, Namespace};

/// Candidates kept for a peer whose description has not arrived yet. A
/// browser trickles a handful per network interface; 64 is plenty, and
/// bounds what a stranger can make us hold.
const MAX_EARLY_CANDIDATES: usize = 64;

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
    ClosePeer {
        peer: String,
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
    /// ICE failed or disconnected, the connection closed, or a description
    /// could not be applied.
    Failed(String),
}

/// The receiver's `credentials` check: a receiver is accepted when its
/// credentials equal one of the accepted values.
#[derive(Debug, Clone, Default)]
pub struct Verify {
    pub accepted: Vec<Value>,
}

impl Verify {
    pub fn accepts(&self, credentials: Option<&Value>) -> bool {
        credentials.is_some_and(|c| self.accepted.iter().any(|a| a == c))
    }
}

#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub id: String,
    pub room: String,
    pub state: Map<String, Value>,
    /// Open a data channel per receiver.
    pub data: bool,
    pub verify: Option<Verify>,
    pub connection_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub id: String,
    pub room: String,
    pub credentials: Option<Value>,
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
    /// Receiver side: the sender's state.
    state: Map<String, Value>,
}

impl Peer {
    fn new(now: Instant) -> Self {
        Self {
            created: now,
            connected: false,
            remote_set: false,
            early: Vec::new(),
            state: Map::new(),
        }
    }
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

fn state_too_large(state: &Map<String, Value>) -> bool {
    serde_json::to_vec(state).map_or(true, |v| v.len() > MAX_STATE_BYTES)
}

/// The broadcasting side: one peer connection per receiver.
#[derive(Debug)]
pub struct Sender {
    cfg: SenderConfig,
    peers: HashMap<String, Peer>,
}

impl Sender {
    pub fn new(cfg: SenderConfig) -> Self {
        Self {
            cfg,
            peers: HashMap::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    pub fn state(&self) -> &Map<String, Value> {
        &self.cfg.state
    }

    /// Peers that exist (offered, connecting or connected).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Peers still connecting.
    pub fn connecting(&self) -> usize {
        self.peers.values().filter(|p| !p.connected).count()
    }

    fn own(&self) -> Namespace {
        Namespace::sender(&self.cfg.room, Some(&self.cfg.id))
    }

    fn to(&self, peer: &str) -> Namespace {
        Namespace::receiver(&self.cfg.room, Some(peer))
    }

    fn invoke(&self) -> Action {
        Action::Emit(
            Namespace::receiver(&self.cfg.room, None),
            Message::Invoke {
                id: self.cfg.id.clone(),
                credentials: None,
            },
        )
    }

    pub fn start(&mut self) -> Vec<Action> {
        vec![
            Action::Subscribe(Namespace::sender(&self.cfg.room, None)),
            Action::Subscribe(self.own()),
            self.invoke(),
        ]
    }

    /// The signaling transport is back after an outage: announce ourselves
    /// again so receivers that came meanwhile find us.
    pub fn reconnected(&mut self) -> Vec<Action> {
        vec![self.invoke()]
    }

    pub fn handle_signal(&mut self, now: Instant, data: &Value) -> Vec<Action> {
        let msg = match accept(&self.cfg.id, data) {
            Ok(Some(m)) => m,
            Ok(None) => return vec![],
            Err(ev) => return vec![Action::Event(ev)],
        };
        match msg {
            Message::Invoke { id, credentials } => {
                if self.peers.contains_key(&id) {
                    return vec![];
                }
                if let Some(verify) = &self.cfg.verify {
                    if !verify.accepts(credentials.as_ref()) {
                        return vec![Action::Event(Event::Rejected { id })];
                    }
                }
                self.peers.insert(id.clone(), Peer::new(now));
                vec![Action::CreateOffer {
                    peer: id,
                    data_channel: self.cfg.data,
                }]
            }
            Message::Answer { id, answer } => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return vec![unknown(&id, "answer")];
                };
                if peer.remote_set {
                    return vec![Action::Event(Event::Error {
                        id: Some(id),
                        error: "ignored a second answer".into(),
                    })];
                }
                peer.remote_set = true;
                let mut out = vec![Action::ApplyAnswer {
                    peer: id.clone(),
                    answer,
                }];
                out.extend(peer.early.drain(..).map(|candidate| Action::AddCandidate {
                    peer: id.clone(),
                    candidate,
                }));
                out
            }
            Message::Candidate { id, candidate } => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return vec![unknown(&id, "candidate")];
                };
                candidate_for(peer, id, candidate)
            }
            Message::Dispose { id, .. } => match self.peers.remove(&id) {
                Some(_) => vec![
                    Action::ClosePeer { peer: id.clone() },
                    Action::Event(Event::Dispose {
                        id,
                        reason: Some("receiver left".into()),
                    }),
                ],
                None => vec![],
            },
            // Other senders' traffic is not for us.
            Message::Offer { .. } | Message::Sync { .. } => vec![],
        }
    }

    pub fn handle_peer(&mut self, peer_id: &str, event: PeerEvent) -> Vec<Action> {
        let Some(peer) = self.peers.get_mut(peer_id) else {
            return vec![];
        };
        let id = self.cfg.id.clone();
        match event {
            PeerEvent::LocalDescription(offer) => vec![Action::Emit(
                self.to(peer_id),
                Message::Offer {
                    id,
                    offer,
                    state: self.cfg.state.clone(),
                },
            )],
            PeerEvent::LocalCandidate(candidate) => vec![Action::Emit(
                self.to(peer_id),
                Message::Candidate { id, candidate },
            )],
            PeerEvent::Connected => {
                if peer.connected {
                    return vec![];
                }
                peer.connected = true;
                vec![Action::Event(Event::Connect {
                    id: peer_id.to_owned(),
                    state: Map::new(),
                })]
            }
            PeerEvent::ChannelOpen => vec![Action::Event(Event::Channel {
                id: peer_id.to_owned(),
            })],
            PeerEvent::Failed(reason) => self.dispose(peer_id, Some(reason)),
        }
    }

    /// Gives up peers that did not connect within the timeout.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let late: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                !p.connected && now.duration_since(p.created) >= self.cfg.connection_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        late.into_iter()
            .flat_map(|id| self.dispose(&id, Some("did not connect in time".into())))
            .collect()
    }

    /// Replaces (or with `merge`, updates) the state and tells every receiver.
    pub fn sync(&mut self, state: Map<String, Value>, merge: bool) -> Vec<Action> {
        if merge {
            self.cfg.state.extend(state);
        } else {
            self.cfg.state = state;
        }
        let mut ids: Vec<&String> = self.peers.keys().collect();
        ids.sort();
        ids.into_iter()
            .map(|peer| {
                Action::Emit(
                    self.to(peer),
                    Message::Sync {
                        id: self.cfg.id.clone(),
                        state: self.cfg.state.clone(),
                    },
                )
            })
            .collect()
    }

    /// Closes one peer and tells its receiver.
    pub fn dispose(&mut self, peer_id: &str, reason: Option<String>) -> Vec<Action> {
        if self.peers.remove(peer_id).is_none() {
            return vec![];
        }
        vec![
            Action::ClosePeer {
                peer: peer_id.to_owned(),
            },
            Action::Emit(
                self.to(peer_id),
                Message::Dispose {
                    id: self.cfg.id.clone(),
                    state: Some(self.cfg.state.clone()),
                },
            ),
            Action::Event(Event::Dispose {
                id: peer_id.to_owned(),
                reason,
            }),
        ]
    }

    /// Disposes every peer and leaves the room.
    pub fn stop(&mut self) -> Vec<Action> {
        let mut ids: Vec<String> = self.peers.keys().cloned().collect();
        ids.sort();
        let mut out: Vec<Action> = ids.iter().flat_map(|id| self.dispose(id, None)).collect();
        out.push(Action::Unsubscribe(Namespace::sender(&self.cfg.room, None)));
        out.push(Action::Unsubscribe(self.own()));
        out
    }
}

fn unknown(id: &str, what: &str) -> Action {
    Action::Event(Event::Error {
        id: Some(id.to_owned()),
        error: format!("ignored a {what} from a peer we have no connection with"),
    })
}

/// A remote candidate: applied once the remote description is in, kept until
/// then, skipped when it is an mDNS name we cannot resolve.
fn candidate_for(peer: &mut Peer, id: String, candidate: Candidate) -> Vec<Action> {
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

/// The answering side: one peer connection per sender in the room.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    peers: HashMap<String, Peer>,
    /// Candidates from senders whose offer has not arrived yet, oldest
    /// peer first.
    early: VecDeque<(String, Vec<Candidate>)>,
    next_ping: Option<Instant>,
    pings_left: u32,
}

impl Receiver {
    pub fn new(cfg: ReceiverConfig) -> Self {
        let pings_left = cfg.ping_attempts;
        Self {
            cfg,
            peers: HashMap::new(),
            early: VecDeque::new(),
            next_ping: None,
            pings_left,
        }
    }

    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn connected(&self) -> usize {
        self.peers.values().filter(|p| p.connected).count()
    }

    pub fn state_of(&self, peer: &str) -> Option<&Map<String, Value>> {
        self.peers.get(peer).map(|p| &p.state)
    }

    fn own(&self) -> Namespace {
        Namespace::receiver(&self.cfg.room, Some(&self.cfg.id))
    }

    fn to(&self, peer: &str) -> Namespace {
        Namespace::sender(&self.cfg.room, Some(peer))
    }

    fn invoke(&self, to: Namespace) -> Action {
        Action::Emit(
            to,
            Message::Invoke {
                id: self.cfg.id.clone(),
                credentials: self.cfg.credentials.clone(),
            },
        )
    }

    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        // A start after a stop gets the full budget again.
        self.pings_left = self.cfg.ping_attempts;
        self.next_ping = Some(now + self.cfg.ping_interval);
        vec![
            Action::Subscribe(Namespace::receiver(&self.cfg.room, None)),
            Action::Subscribe(self.own()),
            self.invoke(Namespace::sender(&self.cfg.room, None)),
        ]
    }

    pub fn reconnected(&mut self) -> Vec<Action> {
        vec![self.invoke(Namespace::sender(&self.cfg.room, None))]
    }

    pub fn handle_signal(&mut self, now: Instant, data: &Value) -> Vec<Action> {
        let msg = match accept(&self.cfg.id, data) {
            Ok(Some(m)) => m,
            Ok(None) => return vec![],
            Err(ev) => return vec![Action::Event(ev)],
        };
        match msg {
            // A sender announced itself: ask it directly for an offer.
            Message::Invoke { id, .. } => vec![self.invoke(self.to(&id))],
            Message::Offer { id, offer, state } => {
                if state_too_large(&state) {
                    return vec![Action::Event(Event::Error {
                        id: Some(id),
                        error: format!(
                            "ignored an offer whose state is over {MAX_STATE_BYTES} bytes"
                        ),
                    })];
                }
                let mut out = Vec::new();
                if self.peers.contains_key(&id) {
                    // The sender started over with us (e.g. after a failed
                    // connection on its side): replace the old peer.
                    self.peers.remove(&id);
                    out.push(Action::ClosePeer { peer: id.clone() });
                }
                let mut peer = Peer::new(now);
                peer.remote_set = true;
                peer.state = state;
                self.peers.insert(id.clone(), peer);
                out.push(Action::AcceptOffer {
                    peer: id.clone(),
                    offer,
                });
                if let Some(pos) = self.early.iter().position(|(p, _)| *p == id) {
                    let (_, cands) = self.early.remove(pos).unwrap_or_default();
                    out.extend(cands.into_iter().map(|candidate| Action::AddCandidate {
                        peer: id.clone(),
                        candidate,
                    }));
                }
                out
            }
            Message::Candidate { id, candidate } => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    return candidate_for(peer, id, candidate);
                }
                if candidate.candidate.is_empty() || candidate.is_mdns() {
                    return vec![];
                }
                // Before the offer: keep it, bounded.
                match self.early.iter_mut().find(|(p, _)| *p == id) {
                    Some((_, list)) if list.len() < MAX_EARLY_CANDIDATES => list.push(candidate),
                    Some(_) => {}
                    None => {
                        if self.early.len() == MAX_EARLY_PEERS {
                            self.early.pop_front();
                        }
                        self.early.push_back((id, vec![candidate]));
                    }
                }
                vec![]
            }
            Message::Sync { id, state } => {
                if state_too_large(&state) {
                    return vec![Action::Event(Event::Error {
                        id: Some(id),
                        error: format!(
                            "ignored a sync whose state is over {MAX_STATE_BYTES} bytes"
                        ),
                    })];
                }
                let Some(peer) = self.peers.get_mut(&id) else {
                    return vec![];
                };
                peer.state = state.clone();
                vec![Action::Event(Event::Sync { id, state })]
            }
            Message::Dispose { id, .. } => {
                if !self.peers.contains_key(&id) {
                    return vec![];
                }
                self.remove(now, &id);
                vec![
                    Action::ClosePeer { peer: id.clone() },
                    Action::Event(Event::Dispose { id, reason: None }),
                ]
            }
            Message::Answer { .. } => vec![],
        }
    }

    pub fn handle_peer(&mut self, now: Instant, peer_id: &str, event: PeerEvent) -> Vec<Action> {
        let Some(peer) = self.peers.get_mut(peer_id) else {
            return vec![];
        };
        let id = self.cfg.id.clone();
        match event {
            PeerEvent::LocalDescription(answer) => vec![Action::Emit(
                self.to(peer_id),
                Message::Answer { id, answer },
            )],
            PeerEvent::LocalCandidate(candidate) => vec![Action::Emit(
                self.to(peer_id),
                Message::Candidate { id, candidate },
            )],
            PeerEvent::Connected => {
                if peer.connected {
                    return vec![];
                }
                peer.connected = true;
                vec![Action::Event(Event::Connect {
                    id: peer_id.to_owned(),
                    state: peer.state.clone(),
                })]
            }
            PeerEvent::ChannelOpen => vec![Action::Event(Event::Channel {
                id: peer_id.to_owned(),
            })],
            PeerEvent::Failed(reason) => self.dispose(now, peer_id, Some(reason)),
        }
    }

    fn remove(&mut self, now: Instant, peer_id: &str) {
        self.peers.remove(peer_id);
        if self.peers.is_empty() {
            // Look for the sender again: it may be restarting.
            self.pings_left = self.cfg.ping_attempts;
            self.next_ping = Some(now + self.cfg.ping_interval.min(Duration::from_secs(1)));
        }
    }

    /// Closes one peer and tells its sender we are gone.
    fn dispose(&mut self, now: Instant, peer_id: &str, reason: Option<String>) -> Vec<Action> {
        if !self.peers.contains_key(peer_id) {
            return vec![];
        }
        self.remove(now, peer_id);
        vec![
            Action::ClosePeer {
                peer: peer_id.to_owned(),
            },
            Action::Emit(
                self.to(peer_id),
                Message::Dispose {
                    id: self.cfg.id.clone(),
                    state: None,
                },
            ),
            Action::Event(Event::Dispose {
                id: peer_id.to_owned(),
                reason,
            }),
        ]
    }

    /// Connection timeouts and pings.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let late: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                !p.connected && now.duration_since(p.created) >= self.cfg.connection_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut out: Vec<Action> = late
            .into_iter()
            .flat_map(|id| self.dispose(now, &id, Some("did not connect in time".into())))
            .collect();
        if let Some(at) = self.next_ping {
            if now >= at {
                if !self.peers.is_empty() {
                    out.push(self.invoke(Namespace::sender(&self.cfg.room, None)));
                    self.pings_left = self.cfg.ping_attempts;
                } else if self.pings_left > 0 {
                    out.push(self.invoke(Namespace::sender(&self.cfg.room, None)));
                    self.pings_left -= 1;
                }
                self.next_ping = Some(now + self.cfg.ping_interval);
            }
        }
        out
    }

    /// Tells every sender we leave, closes every peer, leaves the room.
    pub fn stop(&mut self) -> Vec<Action> {
        // No more pings: an invoke after we left would make senders offer
        // to a receiver that is gone, each peer lingering until its timeout.
        self.next_ping = None;
        let mut ids: Vec<String> = self.peers.keys().cloned().collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            self.peers.remove(&id);
            out.push(Action::Emit(
                self.to(&id),
                Message::Dispose {
                    id: self.cfg.id.clone(),
                    state: None,
                },
            ));
            out.push(Action::ClosePeer { peer: id.clone() });
            out.push(Action::Event(Event::Dispose { id, reason: None }));
        }
        out.push(Action::Unsubscribe(Namespace::receiver(
            &self.cfg.room,
            None,
        )));
        out.push(Action::Unsubscribe(self.own()));
        out
    }
}

#[cfg(test)]
#[path = "machine_tests/mod.rs"]
mod tests;
