//! The broadcasting side's state machine.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::{
    accept, candidate_for, forged, ids_where, Action, Event, Peer, PeerEvent, SenderConfig,
    CHALLENGE_TTL, MAX_CHALLENGES, MAX_CONNECTING, MAX_CONNECTING_PER_ORIGIN, RESTART_AGAIN,
    RESTART_ASKED_AGAIN, RESTART_RETRY, UNPROVEN_AFTER,
};
use crate::protocol::{Message, Namespace, Proof};

/// The broadcasting side: one peer connection per receiver.
#[derive(Debug)]
pub struct Sender {
    cfg: SenderConfig,
    peers: HashMap<String, Peer>,
    /// Nonces sent to receivers that offered to prove their credentials,
    /// by receiver id and relay connection, with when they were sent.
    challenges: HashMap<(String, Option<String>), (String, Instant)>,
}

impl Sender {
    pub fn new(cfg: SenderConfig) -> Self {
        Self {
            cfg,
            peers: HashMap::new(),
            challenges: HashMap::new(),
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

    /// Connected peers whose path is lost while ICE restarts.
    pub fn reconnecting(&self) -> usize {
        self.peers.values().filter(|p| p.lost.is_some()).count()
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
                proof: None,
                restarts: false,
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
    /// again so receivers that came meanwhile find us, and restart the
    /// connections still without a path whose restart offer is not on its
    /// way (one made while the relay was out of reach waited for it and
    /// goes now; a second would cross its answer). One sent into a
    /// connection that was dead already is made again when its receiver,
    /// back on the relay too, asks.
    pub fn reconnected(&mut self, now: Instant) -> Vec<Action> {
        let mut out = vec![self.invoke()];
        let mut lost: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| p.lost.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        lost.sort();
        for id in lost {
            match self.resend_restart(now, &id) {
                Some(a) => out.push(a),
                None => out.extend(self.restart(now, &id, "still no path", Duration::ZERO)),
            }
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
            Message::Invoke {
                id,
                credentials,
                proof,
                restarts,
            } => {
                if self.peers.contains_key(&id) {
                    return vec![];
                }
                if let Some(verify) = &self.cfg.verify {
                    let key = (id.clone(), from.map(str::to_owned));
                    let accepted = match (&credentials, proof) {
                        (Some(c), _) => verify.accepts(Some(c)),
                        (None, Some(Proof::Able)) => return vec![self.challenge(now, key)],
                        (None, Some(Proof::Answer { proof, stamp })) => {
                            // The proof is bound to the connection the
                            // relay saw; where no relay says (NATS), to
                            // the one the prover names.
                            let bound = match (from, stamp.as_deref()) {
                                (Some(f), Some(s)) if f != s => None,
                                (Some(f), _) => Some(Some(f)),
                                (None, s) => Some(s),
                            };
                            let ok = match (bound, self.challenges.get(&key)) {
                                (Some(bound), Some((nonce, sent)))
                                    if now.duration_since(*sent) < CHALLENGE_TTL =>
                                {
                                    verify.accepts_proof(&proof, nonce, (&self.cfg.id, &id), bound)
                                }
                                _ => false,
                            };
                            // Used once; a wrong answer (someone else's,
                            // or to a forged challenge) leaves it waiting.
                            if ok {
                                self.challenges.remove(&key);
                            }
                            ok
                        }
                        (None, None) => false,
                    };
                    if !accepted {
                        return vec![Action::Event(Event::Rejected { id })];
                    }
                }
                let mut out = match self.room_for(now, &id, from) {
                    Ok(out) => out,
                    Err((why, busy)) => {
                        let mut out = vec![Action::Event(Event::Error {
                            id: Some(id.clone()),
                            error: format!("refused a receiver: {why}"),
                        })];
                        if busy {
                            // Not a leave: "ask again soon".
                            out.push(Action::Emit(
                                self.to(&id),
                                Message::Dispose {
                                    id: self.cfg.id.clone(),
                                    state: None,
                                },
                            ));
                        }
                        return out;
                    }
                };
                let mut peer = Peer::new(now, from);
                peer.restarts = restarts;
                self.peers.insert(id.clone(), peer);
                out.push(Action::CreateOffer {
                    peer: id,
                    data_channel: self.cfg.data,
                });
                out
            }
            Message::Answer { id, mut answer } => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return vec![unknown(&id, "answer")];
                };
                if !peer.sent_by(from) {
                    return vec![forged(&id, "answer")];
                }
                if peer.remote_set && !peer.restart_offered {
                    return vec![Action::Event(Event::Error {
                        id: Some(id),
                        error: "ignored a second answer".into(),
                    })];
                }
                if peer.restart_offered {
                    // A new ICE generation: its candidates count afresh.
                    peer.restart_offered = false;
                    peer.candidates = 0;
                    peer.over_cap = false;
                }
                peer.remote_set = true;
                let told = peer.take_description(&id, &mut answer);
                let mut out = vec![Action::ApplyAnswer {
                    peer: id.clone(),
                    answer,
                }];
                out.extend(told);
                out.extend(peer.flush_early(&id));
                out
            }
            Message::Candidate { id, candidate } => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return vec![unknown(&id, "candidate")];
                };
                candidate_for(peer, from, id, candidate)
            }
            Message::Dispose { id, .. } => match self.peers.get(&id) {
                Some(peer) if !peer.sent_by(from) => vec![forged(&id, "dispose")],
                Some(_) => {
                    self.peers.remove(&id);
                    vec![
                        Action::ClosePeer {
                            peer: id.clone(),
                            lost: false,
                        },
                        Action::Event(Event::Dispose {
                            id,
                            reason: Some("receiver left".into()),
                        }),
                    ]
                }
                None => vec![],
            },
            // A receiver asks for an ICE restart: its network changed, or
            // it hears nothing from us.
            Message::Restart { id, offer: None } => match self.peers.get(&id) {
                Some(peer) if !peer.sent_by(from) => vec![forged(&id, "restart")],
                // Its answer is awaited: the same offer again (the
                // receiver may not have had it), not a new one, whose
                // answer would cross the first's.
                Some(peer)
                    if peer.restart_offered
                        && peer
                            .restarted
                            .is_some_and(|at| now.duration_since(at) < RESTART_RETRY) =>
                {
                    match &peer.restart_offer {
                        Some(offer) => vec![Action::Emit(
                            self.to(&id),
                            Message::Restart {
                                id: self.cfg.id.clone(),
                                offer: Some(offer.clone()),
                            },
                        )],
                        None => vec![],
                    }
                }
                Some(peer) if peer.connected => {
                    let why = "the receiver asked (its network changed or went quiet)";
                    self.restart(now, &id, why, RESTART_ASKED_AGAIN)
                }
                Some(_) => vec![],
                // A connection we gave up (it was away too long): say so,
                // and it starts over with a new one at once. Without our
                // state: anyone can ask in any id, and small requests must
                // not make us send large replies.
                None => vec![Action::Emit(
                    self.to(&id),
                    Message::Dispose {
                        id: self.cfg.id.clone(),
                        state: None,
                    },
                )],
            },
            // Other senders' traffic is not for us.
            Message::Offer { .. }
            | Message::Sync { .. }
            | Message::Challenge { .. }
            | Message::Restart { .. } => vec![],
        }
    }

    /// Whether a new receiver may have a peer: the actions that make room
    /// for it (an unproven peer giving way), or why not and whether only
    /// for now (busy).
    fn room_for(
        &mut self,
        now: Instant,
        id: &str,
        from: Option<&str>,
    ) -> Result<Vec<Action>, (String, bool)> {
        let connecting = || self.peers.values().filter(|p| !p.connected);
        if from.is_some() {
            let same = connecting().filter(|p| p.sent_by(from)).count();
            if same >= MAX_CONNECTING_PER_ORIGIN {
                let why = format!("its relay connection has {same} receivers connecting already");
                return Err((why, false));
            }
        }
        let full = match self.cfg.max_receivers {
            Some(max) if self.peers.len() >= max => {
                format!("{max} receivers already (--max-receivers)")
            }
            _ if connecting().count() >= MAX_CONNECTING => {
                format!("{MAX_CONNECTING} receivers are connecting already")
            }
            _ => return Ok(vec![]),
        };
        // Full: a peer that has had its time to connect and has not gives
        // way; else, while some are still connecting, ask again soon.
        let oldest = self
            .peers
            .iter()
            .filter(|(_, p)| !p.connected && now.duration_since(p.created) >= UNPROVEN_AFTER)
            .min_by_key(|(id, p)| (p.created, id.as_str()))
            .map(|(id, _)| id.clone());
        match oldest {
            Some(old) => {
                let why = format!("gave way to receiver {id}: {full}");
                Ok(self.dispose(&old, Some(why)))
            }
            None => Err((full, connecting().next().is_some())),
        }
    }

    /// Asks a receiver (`key`: its id and relay connection) to prove its
    /// credentials over a fresh nonce.
    fn challenge(&mut self, now: Instant, key: (String, Option<String>)) -> Action {
        self.challenges
            .retain(|_, (_, sent)| now.duration_since(*sent) < CHALLENGE_TTL);
        let to = self.to(&key.0);
        // Asked again while one waits (a broadcast and a direct invoke
        // cross): the same nonce, so either answer passes. Only a new one
        // makes the oldest waiting give way, never the one asked again.
        let nonce = match self.challenges.get(&key) {
            Some((nonce, _)) => nonce.clone(),
            None => {
                if self.challenges.len() >= MAX_CHALLENGES {
                    let oldest = self
                        .challenges
                        .iter()
                        .min_by_key(|(_, (_, sent))| *sent)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        self.challenges.remove(&k);
                    }
                }
                let nonce = hex::encode(rand::random::<[u8; 16]>());
                self.challenges.insert(key, (nonce.clone(), now));
                nonce
            }
        };
        Action::Emit(
            to,
            Message::Challenge {
                id: self.cfg.id.clone(),
                nonce,
            },
        )
    }

    /// Restarts ICE with a connected receiver that takes restarts (at most
    /// `apart` from the last); one that does not is given up, and comes
    /// back with a new connection.
    fn restart(&mut self, now: Instant, peer_id: &str, why: &str, apart: Duration) -> Vec<Action> {
        let Some(peer) = self.peers.get_mut(peer_id) else {
            return vec![];
        };
        if !peer.restarts || !peer.remote_set {
            return self.dispose(peer_id, Some(why.to_owned()));
        }
        let first = peer.lost.is_none();
        peer.lost.get_or_insert(now);
        if !peer.may_restart(now, apart) {
            return vec![];
        }
        peer.restarted = Some(now);
        let mut out = vec![Action::RestartIce {
            peer: peer_id.to_owned(),
        }];
        if first {
            out.push(Action::Event(Event::Reconnecting {
                id: peer_id.to_owned(),
                reason: why.to_owned(),
            }));
        }
        out
    }

    /// This host's addresses changed and some it had are gone: every
    /// connection may have been using one, so each restarts ICE (one
    /// whose receiver cannot is left to ICE's own timeouts).
    pub fn network_changed(&mut self, now: Instant) -> Vec<Action> {
        let mut ids: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| p.connected && p.restarts)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids.iter()
            .flat_map(|id| self.restart(now, id, "this host's addresses changed", RESTART_AGAIN))
            .collect()
    }

    pub fn handle_peer(&mut self, now: Instant, peer_id: &str, event: PeerEvent) -> Vec<Action> {
        let Some(peer) = self.peers.get_mut(peer_id) else {
            return vec![];
        };
        let id = self.cfg.id.clone();
        match event {
            // A description after the answer is an ICE restart's offer.
            PeerEvent::LocalDescription(offer) if peer.remote_set => {
                peer.restart_offered = true;
                peer.restart_offer = Some(offer.clone());
                vec![Action::Emit(
                    self.to(peer_id),
                    Message::Restart {
                        id,
                        offer: Some(offer),
                    },
                )]
            }
            PeerEvent::LocalDescription(offer) => vec![Action::Emit(
                self.to(peer_id),
                Message::Offer {
                    id,
                    offer,
                    state: self.cfg.state.clone(),
                    restarts: true,
                },
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
                    state: Map::new(),
                })]
            }
            PeerEvent::ChannelOpen => vec![Action::Event(Event::Channel {
                id: peer_id.to_owned(),
            })],
            PeerEvent::Disconnected(reason) if peer.connected => {
                self.restart(now, peer_id, &reason, RESTART_AGAIN)
            }
            PeerEvent::Disconnected(reason) | PeerEvent::Failed(reason) => {
                self.dispose(peer_id, Some(reason))
            }
        }
    }

    /// Gives up peers that did not connect within the timeout, and those
    /// whose restarts have not found a path in [`RESTART_GIVE_UP`](super::RESTART_GIVE_UP);
    /// restarts again those still looking.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let timeout = self.cfg.connection_timeout;
        let late: Vec<(String, &str)> =
            ids_where(&self.peers, |p| p.overdue(now, timeout).is_some())
                .into_iter()
                .filter_map(|id| Some((id.clone(), self.peers.get(&id)?.overdue(now, timeout)?)))
                .collect();
        let mut out: Vec<Action> = Vec::new();
        for (id, why) in late {
            let lost = self.peers.get(&id).is_some_and(|p| p.lost.is_some());
            if lost {
                // No dispose: the receiver, out of reach now, gives the
                // connection up by itself, and may come back (a laptop
                // that slept) on a new one; one that asks to restart a
                // connection we no longer have is told then.
                self.peers.remove(&id);
                out.push(Action::ClosePeer {
                    peer: id.clone(),
                    lost: true,
                });
                out.push(Action::Event(Event::Dispose {
                    id,
                    reason: Some(why.into()),
                }));
            } else {
                out.extend(self.dispose(&id, Some(why.into())));
            }
        }
        let again = ids_where(&self.peers, |p| p.retry_due(now));
        for id in again {
            // An offer whose answer never came goes again as it was: a
            // new one could have the first one's answer applied to it.
            match self.resend_restart(now, &id) {
                Some(a) => out.push(a),
                None => out.extend(self.restart(now, &id, "still no path", RESTART_RETRY)),
            }
        }
        out
    }

    /// The restart offer still awaiting its answer, sent again.
    fn resend_restart(&mut self, now: Instant, peer_id: &str) -> Option<Action> {
        let peer = self.peers.get_mut(peer_id)?;
        if !peer.restart_offered {
            return None;
        }
        let offer = peer.restart_offer.clone()?;
        peer.restarted = Some(now);
        Some(Action::Emit(
            self.to(peer_id),
            Message::Restart {
                id: self.cfg.id.clone(),
                offer: Some(offer),
            },
        ))
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
                lost: reason.is_some(),
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
