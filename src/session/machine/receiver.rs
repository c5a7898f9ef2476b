//! The answering side's state machine.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::{
    accept, candidate_for, forged, ids_where, state_too_large, Action, Event, Peer, PeerEvent,
    ReceiverConfig, MAX_EARLY_CANDIDATES, MAX_EARLY_PEERS, MAX_STATE_BYTES, RESTART_AGAIN,
    RESTART_RETRY, RESTART_UNANSWERED, RETRY_AFTER_BUSY,
};
use crate::protocol::{Candidate, Message, Namespace, Proof};

/// Quick invokes after a lost connection (see [`Receiver::tick`]): for as
/// long as its sender may hold the old one (it gives a lost connection up
/// [`RESTART_GIVE_UP`](super::RESTART_GIVE_UP) after it went quiet, we after
/// [`RESTART_UNANSWERED`]), and a little more.
const QUICK_PINGS: u32 = 12;

/// The answering side: one peer connection per sender in the room.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    peers: HashMap<String, Peer>,
    /// Candidates from senders whose offer has not arrived yet, oldest
    /// peer first.
    early: VecDeque<(String, Option<String>, Vec<Candidate>)>,
    next_ping: Option<Instant>,
    pings_left: u32,
    /// Invokes still to go a second apart, after a connection was lost:
    /// its sender may be a few seconds from reaching the relay again, and
    /// the next ordinary ping is half a minute away.
    quick_pings: u32,
    /// Our relay connection's name, as the relay stamps what we send: what
    /// a proof of our credentials is bound to.
    stamp: Option<String>,
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
            quick_pings: 0,
            stamp: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Connected peers whose path is lost while ICE restarts.
    pub fn reconnecting(&self) -> usize {
        self.peers.values().filter(|p| p.lost.is_some()).count()
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

    /// The relay named our connection (again).
    pub fn set_stamp(&mut self, stamp: String) {
        self.stamp = Some(stamp);
    }

    /// An invoke: with our credentials in plain (`plain_credentials`), or
    /// offering to prove them, which keeps them from anyone else in the
    /// room.
    fn invoke(&self, to: Namespace) -> Action {
        let plain = self.cfg.plain_credentials;
        let credentials = self.cfg.credentials.clone().filter(|_| plain);
        let proof = (self.cfg.credentials.is_some() && !plain).then_some(Proof::Able);
        Action::Emit(
            to,
            Message::Invoke {
                id: self.cfg.id.clone(),
                credentials,
                proof,
                restarts: true,
            },
        )
    }

    /// Asks `peer_id`'s sender to restart ICE (`apart` from the last
    /// time).
    fn ask_restart(&mut self, now: Instant, peer_id: &str, apart: Duration) -> Option<Action> {
        let peer = self.peers.get_mut(peer_id)?;
        if !peer.may_restart(now, apart) {
            return None;
        }
        peer.restarted = Some(now);
        Some(Action::Emit(
            self.to(peer_id),
            Message::Restart {
                id: self.cfg.id.clone(),
                offer: None,
            },
        ))
    }

    /// This host's addresses changed and some it had are gone: every
    /// sender is asked to restart ICE with us, since our path to it may
    /// have left from one of them.
    pub fn network_changed(&mut self, now: Instant) -> Vec<Action> {
        let mut ids: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| p.connected)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.ask_restart(now, &id, RESTART_AGAIN));
            // A sender that restarts will: the gap is reported when the
            // path is back. Another's connection is left to ICE to judge.
            if let Some(peer) = self.peers.get_mut(&id).filter(|p| p.restarts) {
                if peer.lost.is_none() {
                    peer.lost = Some(now);
                    out.push(Action::Event(Event::Reconnecting {
                        id,
                        reason: "this host's addresses changed".into(),
                    }));
                }
            }
        }
        out
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

    /// The relay connection is back: look for senders again, and ask
    /// those whose connection has no path to restart it (what was asked
    /// before may have been lost with the old relay connection).
    pub fn reconnected(&mut self, now: Instant) -> Vec<Action> {
        let mut out = vec![self.invoke(Namespace::sender(&self.cfg.room, None))];
        let mut lost: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| p.lost.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        lost.sort();
        for id in lost {
            out.extend(self.ask_restart(now, &id, Duration::ZERO));
        }
        out
    }

    /// A signaling message, `from` the relay connection the relay says
    /// sent it.
    pub fn handle_signal(&mut self, now: Instant, from: Option<&str>, data: &Value) -> Vec<Action> {
        let msg = match accept(&self.cfg.id, data) {
            Ok(Some(m)) => m,
            Ok(None) => return vec![],
            Err(ev) => return vec![Action::Event(ev)],
        };
        match msg {
            // A sender announced itself: ask it directly for an offer.
            Message::Invoke { id, .. } => vec![self.invoke(self.to(&id))],
            Message::Offer {
                id,
                mut offer,
                state,
                restarts,
            } => {
                if state_too_large(&state) {
                    return vec![Action::Event(Event::Error {
                        id: Some(id),
                        error: format!(
                            "ignored an offer whose state is over {MAX_STATE_BYTES} bytes"
                        ),
                    })];
                }
                let mut out = Vec::new();
                if self.peers.get(&id).is_some_and(|p| !p.sent_by(from)) {
                    return vec![forged(&id, "offer")];
                }
                if self.peers.contains_key(&id) {
                    // The sender started over with us: its side gave the
                    // connection up (it failed there first, or we were
                    // suspended and have not noticed yet). The old peer is
                    // replaced as lost, not gone: what it was recording
                    // goes on with the new connection.
                    self.peers.remove(&id);
                    out.push(Action::ClosePeer {
                        peer: id.clone(),
                        lost: true,
                    });
                }
                let mut peer = Peer::new(now, from);
                peer.remote_set = true;
                peer.restarts = restarts;
                peer.state = state;
                let told = peer.take_description(&id, &mut offer);
                if let Some(pos) = self
                    .early
                    .iter()
                    .position(|(p, o, _)| *p == id && *o == peer.origin)
                {
                    if let Some((_, _, cands)) = self.early.remove(pos) {
                        peer.early = cands;
                    }
                }
                out.push(Action::AcceptOffer {
                    peer: id.clone(),
                    offer,
                });
                out.extend(told);
                out.extend(peer.flush_early(&id));
                self.peers.insert(id.clone(), peer);
                out
            }
            Message::Candidate { id, candidate } => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    return candidate_for(peer, from, id, candidate);
                }
                if candidate.candidate.is_empty() || candidate.is_mdns() {
                    return vec![];
                }
                // Before the offer: keep it, bounded, with who sent it (only
                // the offer's own connection's candidates go with it).
                let from = from.map(str::to_owned);
                match self
                    .early
                    .iter_mut()
                    .find(|(p, o, _)| *p == id && *o == from)
                {
                    Some((_, _, list)) if list.len() < MAX_EARLY_CANDIDATES => list.push(candidate),
                    Some(_) => {}
                    None => {
                        if self.early.len() == MAX_EARLY_PEERS {
                            self.early.pop_front();
                        }
                        self.early.push_back((id, from, vec![candidate]));
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
                if !peer.sent_by(from) {
                    return vec![forged(&id, "sync")];
                }
                peer.state = state.clone();
                vec![Action::Event(Event::Sync { id, state })]
            }
            Message::Dispose { id, .. } => {
                let Some(peer) = self.peers.get(&id) else {
                    // A sender we have no peer with turned us away while
                    // busy: ask again soon (a forged one costs an invoke).
                    let soon = now + RETRY_AFTER_BUSY;
                    if self.next_ping.is_none_or(|at| at > soon) {
                        self.next_ping = Some(soon);
                        self.pings_left = self.pings_left.max(1);
                    }
                    return vec![];
                };
                if !peer.sent_by(from) {
                    return vec![forged(&id, "dispose")];
                }
                // While the path is lost this is the sender giving the
                // connection up (or not knowing it any more), not leaving:
                // it may come back on a new one.
                let lost = peer.lost.is_some();
                self.remove(now, &id);
                vec![
                    Action::ClosePeer {
                        peer: id.clone(),
                        lost,
                    },
                    Action::Event(Event::Dispose {
                        id,
                        reason: lost.then(|| "connection lost; the sender gave it up".into()),
                    }),
                ]
            }
            Message::Challenge { id, nonce } => {
                let Some(credentials) = self.cfg.credentials.as_ref() else {
                    return vec![];
                };
                if self.cfg.plain_credentials {
                    return vec![];
                }
                let ids = (id.as_str(), self.cfg.id.as_str());
                let answer = super::proof(credentials, &nonce, ids, self.stamp.as_deref());
                vec![Action::Emit(
                    self.to(&id),
                    Message::Invoke {
                        id: self.cfg.id.clone(),
                        credentials: None,
                        proof: Some(Proof::Answer {
                            proof: answer,
                            stamp: self.stamp.clone(),
                        }),
                        restarts: true,
                    },
                )]
            }
            // The sender restarts ICE: the same connection, new paths.
            Message::Restart {
                id,
                offer: Some(mut offer),
            } => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return vec![];
                };
                if !peer.sent_by(from) {
                    return vec![forged(&id, "restart")];
                }
                peer.restarts = true;
                peer.offered_since_lost = true;
                let mut out = Vec::new();
                if peer.connected && peer.lost.is_none() {
                    // The sender found the path gone first.
                    peer.lost = Some(now);
                    out.push(Action::Event(Event::Reconnecting {
                        id: id.clone(),
                        reason: "the sender restarts ICE".into(),
                    }));
                }
                // A new ICE generation: its candidates count afresh.
                peer.candidates = 0;
                peer.over_cap = false;
                let told = peer.take_description(&id, &mut offer);
                out.insert(
                    0,
                    Action::Renegotiate {
                        peer: id.clone(),
                        offer,
                    },
                );
                out.extend(told);
                out
            }
            Message::Answer { .. } | Message::Restart { offer: None, .. } => vec![],
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
                    return match peer.restored(now) {
                        Some(after) => vec![Action::Event(Event::Reconnected {
                            id: peer_id.to_owned(),
                            after,
                        })],
                        None => vec![],
                    };
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
            // The path went quiet: keep the connection (its tracks, its
            // recording) and ask the sender for an ICE restart.
            PeerEvent::Disconnected(reason) if peer.connected => {
                let first = peer.lost.is_none();
                peer.lost.get_or_insert(now);
                let mut out: Vec<Action> = self
                    .ask_restart(now, peer_id, RESTART_AGAIN)
                    .into_iter()
                    .collect();
                if first {
                    out.push(Action::Event(Event::Reconnecting {
                        id: peer_id.to_owned(),
                        reason,
                    }));
                }
                out
            }
            PeerEvent::Disconnected(reason) | PeerEvent::Failed(reason) => {
                self.dispose(now, peer_id, Some(reason))
            }
        }
    }

    fn remove(&mut self, now: Instant, peer_id: &str) {
        let lost = self.peers.remove(peer_id).is_some_and(|p| p.lost.is_some());
        if lost {
            // Its sender is looked for again at once, whoever else is
            // here: a new connection is how it comes back.
            self.quick_pings = QUICK_PINGS;
            self.next_ping = Some(now + self.cfg.ping_interval.min(Duration::from_secs(1)));
        }
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
                lost: reason.is_some(),
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

    /// Connection timeouts, lost connections, and pings.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let timeout = self.cfg.connection_timeout;
        let why = |p: &Peer| {
            p.overdue(now, timeout).or_else(|| {
                (!p.offered_since_lost && p.lost_for(now).is_some_and(|d| d >= RESTART_UNANSWERED))
                    .then_some("connection lost (no ICE restart from the sender)")
            })
        };
        let late: Vec<(String, &str)> = ids_where(&self.peers, |p| why(p).is_some())
            .into_iter()
            .filter_map(|id| Some((id.clone(), why(self.peers.get(&id)?)?)))
            .collect();
        let mut out: Vec<Action> = late
            .into_iter()
            .flat_map(|(id, why)| self.dispose(now, &id, Some(why.into())))
            .collect();
        let again = ids_where(&self.peers, |p| p.retry_due(now));
        for id in again {
            out.extend(self.ask_restart(now, &id, RESTART_RETRY));
        }
        if let Some(at) = self.next_ping {
            if now >= at {
                if !self.peers.is_empty() {
                    out.push(self.invoke(Namespace::sender(&self.cfg.room, None)));
                    self.pings_left = self.cfg.ping_attempts;
                } else if self.pings_left > 0 {
                    out.push(self.invoke(Namespace::sender(&self.cfg.room, None)));
                    self.pings_left -= 1;
                }
                let quick = self.quick_pings > 0;
                self.quick_pings = self.quick_pings.saturating_sub(1);
                self.next_ping = Some(
                    now + if quick {
                        self.cfg.ping_interval.min(Duration::from_secs(1))
                    } else {
                        self.cfg.ping_interval
                    },
                );
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
            out.push(Action::ClosePeer {
                peer: id.clone(),
                lost: false,
            });
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
