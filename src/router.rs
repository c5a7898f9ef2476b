//! The relay's routing, as a pure piece: frames in, deliveries out.
//!
//! The router owns who is subscribed to what. It owns no sockets: the server
//! around it feeds it the text of each frame with the connection it came
//! from, and carries out what [`Routed`] says.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Range;

use serde_json::value::RawValue;

use crate::protocol::{ClientFrame, Namespace, ServerFrame};
use crate::relay::grant::Grant;

/// A connection, as the server numbers them.
pub type ConnId = u64;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest text frame accepted, in bytes.
    pub max_frame: usize,
    /// Most namespaces one connection may be subscribed to at once.
    pub max_subscriptions: usize,
    /// Frames a second one connection may send (and in one burst);
    /// 0 for no limit.
    pub rate: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 64 * 1024,
            // A sender or receiver holds two; a browser page that is both,
            // four. 64 leaves room for apps with many rooms on one socket
            // while keeping one client from making the relay's maps huge.
            max_subscriptions: 64,
            // Signaling is a trickle: a sender offering to a hundred
            // receivers sends a few hundred frames. A flood far past this is
            // dropped at the door instead of fanned out.
            rate: 1000,
        }
    }
}

/// What the server must do with one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// Send `frame` (a serialized `message` frame) to each of `to`, in this
    /// order relative to the emitter's other frames.
    Deliver {
        ns: Namespace,
        to: Vec<ConnId>,
        frame: String,
        /// Where `data` lies in `frame`: the exact text the emitter sent,
        /// which a NATS bridge publishes.
        data: Range<usize>,
    },
    /// Answer the sender with this `error` frame; the connection stays open.
    Reply(String),
    /// A subscription was added; `first` when no connection held it before
    /// (a bridge subscribes upstream then).
    Subscribed { ns: Namespace, first: bool },
    /// A subscription was removed; `last` when no connection holds it now.
    Unsubscribed { ns: Namespace, last: bool },
    /// Nothing to do (e.g. `off` for a namespace not held).
    Nothing,
}

#[derive(Debug, Default)]
pub struct Router {
    limits: Limits,
    /// This relay's part of every `from` it stamps, so connections of
    /// relays bridged through NATS never share a name.
    origin: String,
    subs: HashMap<Namespace, BTreeSet<ConnId>>,
    conns: HashMap<ConnId, HashSet<Namespace>>,
    /// What each connection's room token lets it do (`--token-secret`).
    grants: HashMap<ConnId, Grant>,
    /// Connections that resumed another's name: whose name they carry.
    names: HashMap<ConnId, ConnId>,
    /// Resume tokens: the name each gives back, and the connection it was
    /// issued to.
    resumable: HashMap<String, (ConnId, ConnId)>,
    /// The token each connection holds now.
    tokens: HashMap<ConnId, String>,
    /// Tokens of connections gone, oldest first: they stay good for
    /// [`RESUMABLE`] more disconnects.
    gone: VecDeque<String>,
}

/// Tokens of closed connections kept for a resume. A client that lost its
/// connection comes back within seconds; thousands of closes later its
/// token is forgotten, which bounds what a flood of connections can make
/// the relay keep.
pub const RESUMABLE: usize = 4096;

impl Router {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            origin: format!("{:08x}", rand::random::<u32>()),
            ..Self::default()
        }
    }

    /// The name `message` frames carry for `conn`'s emits: whoever
    /// receives one knows which connection sent it, whatever its `data`
    /// claims.
    pub fn stamp(&self, conn: ConnId) -> String {
        let name = self.names.get(&conn).unwrap_or(&conn);
        format!("{}.{name}", self.origin)
    }

    /// A new secret that lets a later connection of the same client take
    /// `conn`'s name ([`Router::resume`]): what keeps its peers bound to it
    /// across a lost connection (a changed address, a dead NAT mapping).
    /// Only `conn` is told it; it replaces any token `conn` held.
    pub fn issue_resume(&mut self, conn: ConnId) -> String {
        let token = hex::encode(rand::random::<[u8; 16]>());
        let name = *self.names.get(&conn).unwrap_or(&conn);
        if let Some(old) = self.tokens.insert(conn, token.clone()) {
            self.resumable.remove(&old);
        }
        self.resumable.insert(token.clone(), (name, conn));
        token
    }

    /// `conn` presents `token`: from now on it carries the name the token
    /// was issued for. Each token works once. Returns whether it was good,
    /// and the connection that held it if it is still here (a connection
    /// its client has given up: the caller closes it).
    pub fn resume(&mut self, conn: ConnId, token: &str) -> (bool, Option<ConnId>) {
        let Some((name, holder)) = self.resumable.remove(token) else {
            return (false, None);
        };
        self.gone.retain(|t| t != token);
        if self.tokens.get(&holder).is_some_and(|t| t == token) {
            self.tokens.remove(&holder);
        }
        self.names.insert(conn, name);
        let live = (holder != conn && self.conns.contains_key(&holder)).then_some(holder);
        (true, live)
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn connect(&mut self, conn: ConnId) {
        self.conns.entry(conn).or_default();
    }

    /// `conn` may act only as `grant` allows from now on.
    pub fn grant(&mut self, conn: ConnId, grant: Grant) {
        self.grants.insert(conn, grant);
    }

    /// Forgets a connection and returns the namespaces nobody holds any more.
    pub fn disconnect(&mut self, conn: ConnId) -> Vec<Namespace> {
        self.grants.remove(&conn);
        self.names.remove(&conn);
        if let Some(token) = self.tokens.remove(&conn) {
            self.gone.push_back(token);
            if self.gone.len() > RESUMABLE {
                if let Some(old) = self.gone.pop_front() {
                    self.resumable.remove(&old);
                }
            }
        }
        let mut emptied = Vec::new();
        for ns in self.conns.remove(&conn).unwrap_or_default() {
            if self.remove_sub(&ns, conn) {
                emptied.push(ns);
            }
        }
        emptied
    }

    /// Handles one text frame from `conn`.
    pub fn handle_text(&mut self, conn: ConnId, text: &str) -> Routed {
        match ClientFrame::parse_exact(text, self.limits.max_frame) {
            Ok(frame) => self.handle(conn, frame),
            Err(e) => Routed::Reply(ServerFrame::error(e).to_json()),
        }
    }

    pub fn handle(&mut self, conn: ConnId, frame: ClientFrame<&RawValue>) -> Routed {
        match frame {
            ClientFrame::On(ns) => {
                if let Some(Err(e)) = self.grants.get(&conn).map(|g| g.check_listen(&ns)) {
                    return Routed::Reply(ServerFrame::error(e).to_json());
                }
                let held = self.conns.entry(conn).or_default();
                if held.contains(&ns) {
                    return Routed::Nothing;
                }
                if held.len() >= self.limits.max_subscriptions {
                    return Routed::Reply(
                        ServerFrame::error(format!(
                            "too many subscriptions: at most {} per connection",
                            self.limits.max_subscriptions
                        ))
                        .to_json(),
                    );
                }
                held.insert(ns.clone());
                let set = self.subs.entry(ns.clone()).or_default();
                let first = set.is_empty();
                set.insert(conn);
                Routed::Subscribed { ns, first }
            }
            ClientFrame::Off(ns) => {
                let removed = self.conns.get_mut(&conn).is_some_and(|h| h.remove(&ns));
                if !removed {
                    return Routed::Nothing;
                }
                let last = self.remove_sub(&ns, conn);
                Routed::Unsubscribed { ns, last }
            }
            ClientFrame::Emit { ns, data } => {
                if let Some(Err(e)) = self.grants.get(&conn).map(|g| g.check_emit(&ns)) {
                    return Routed::Reply(ServerFrame::error(e).to_json());
                }
                let to = self.subscribers(&ns, Some(conn));
                let (frame, data) = message_frame(&ns, Some(&self.stamp(conn)), data.get());
                Routed::Deliver {
                    ns,
                    to,
                    frame,
                    data,
                }
            }
        }
    }

    /// Connections subscribed to exactly `ns`, but `except`.
    pub fn subscribers(&self, ns: &Namespace, except: Option<ConnId>) -> Vec<ConnId> {
        self.subs
            .get(ns)
            .map(|s| s.iter().copied().filter(|c| Some(*c) != except).collect())
            .unwrap_or_default()
    }

    /// Returns true when `ns` has no subscriber left.
    fn remove_sub(&mut self, ns: &Namespace, conn: ConnId) -> bool {
        let Some(set) = self.subs.get_mut(ns) else {
            return false;
        };
        set.remove(&conn);
        if set.is_empty() {
            self.subs.remove(ns);
            true
        } else {
            false
        }
    }
}

/// A `message` frame around `data`, JSON text passed on as it is, stamped
/// with the emitter's name when there is one: built once, however many
/// receive it. Returns the frame and where `data` lies in it.
pub fn message_frame(ns: &Namespace, from: Option<&str>, data: &str) -> (String, Range<usize>) {
    const HEAD: &str = r#"{"op":"message","ns":"#;
    const FROM: &str = r#","from":"#;
    const DATA: &str = r#","data":"#;
    // A namespace is a list of strings, a stamp a string: both serialize.
    let ns = serde_json::to_string(ns).expect("namespace serializes");
    let from = from.map(|f| serde_json::to_string(f).expect("a string serializes"));
    let from_len = from.as_ref().map_or(0, |f| FROM.len() + f.len());
    let mut frame =
        String::with_capacity(HEAD.len() + ns.len() + from_len + DATA.len() + data.len() + 1);
    frame.push_str(HEAD);
    frame.push_str(&ns);
    if let Some(from) = &from {
        frame.push_str(FROM);
        frame.push_str(from);
    }
    frame.push_str(DATA);
    let start = frame.len();
    frame.push_str(data);
    let range = start..frame.len();
    frame.push('}');
    (frame, range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn on(r: &mut Router, c: ConnId, ns: &[&str]) -> Routed {
        r.handle_text(c, &json!({"op":"on","ns":ns}).to_string())
    }

    fn emit(r: &mut Router, c: ConnId, ns: &[&str], data: serde_json::Value) -> Routed {
        r.handle_text(c, &json!({"op":"emit","ns":ns,"data":data}).to_string())
    }

    fn targets(r: Routed) -> Vec<ConnId> {
        match r {
            Routed::Deliver { to, .. } => to,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    #[test]
    fn delivers_to_exact_namespace_without_echo() {
        let mut r = Router::default();
        for c in 1..=4 {
            r.connect(c);
        }
        on(&mut r, 1, &["receiver", "demo"]);
        on(&mut r, 2, &["receiver", "demo"]);
        on(&mut r, 3, &["receiver", "demo", "x"]);
        on(&mut r, 4, &["receiver"]);
        assert_eq!(
            targets(emit(&mut r, 1, &["receiver", "demo"], json!(1))),
            vec![2]
        );
        assert_eq!(
            targets(emit(&mut r, 4, &["receiver", "demo"], json!(1))),
            vec![1, 2]
        );
        assert_eq!(
            targets(emit(&mut r, 1, &["receiver", "demo", "x"], json!(1))),
            vec![3]
        );
        assert!(targets(emit(&mut r, 1, &["nobody"], json!(1))).is_empty());
    }

    #[test]
    fn message_frame_carries_data_byte_for_byte() {
        let mut r = Router::default();
        on(&mut r, 2, &["a"]);
        let data = r#"{"type":"offer", "nested":{"x":[1,2,{"y":null}]},"big":9007199254740993,"u":"ü\u00fc"}"#;
        let emitted = format!(r#"{{"op":"emit","ns":["a"],"data": {data} }}"#);
        let Routed::Deliver {
            frame, data: at, ..
        } = r.handle_text(1, &emitted)
        else {
            panic!("no delivery")
        };
        assert_eq!(&frame[at], data);
        let from = r.stamp(1);
        assert_eq!(
            frame,
            format!(r#"{{"op":"message","ns":["a"],"from":"{from}","data":{data}}}"#)
        );
        let parsed = ServerFrame::parse(&frame).unwrap();
        assert_eq!(
            parsed,
            ServerFrame::Message {
                ns: Namespace::new(["a"]).unwrap(),
                from: Some(from),
                data: serde_json::from_str(data).unwrap()
            }
        );
        // Without a stamp (from NATS), the frame has no `from`.
        let (bare, at) = message_frame(&Namespace::new(["a"]).unwrap(), None, data);
        assert_eq!(
            bare,
            format!(r#"{{"op":"message","ns":["a"],"data":{data}}}"#)
        );
        assert_eq!(&bare[at], data);
    }

    #[test]
    fn every_connection_has_its_own_stamp_and_relays_differ() {
        let (a, b) = (
            Router::new(Limits::default()),
            Router::new(Limits::default()),
        );
        assert_ne!(a.stamp(1), a.stamp(2));
        assert_ne!(a.stamp(1), b.stamp(1));
    }

    #[test]
    fn a_resume_token_gives_its_name_back_once_and_to_no_guesser() {
        let mut r = Router::new(Limits::default());
        r.connect(1);
        let name = r.stamp(1);
        let token = r.issue_resume(1);
        // The old connection is still open (its client gave it up): the
        // new one takes its name and is told to close it.
        r.connect(2);
        assert_eq!(r.resume(2, &token), (true, Some(1)));
        assert_eq!(r.stamp(2), name);
        // Its next token names the same connection, after it closes too.
        let again = r.issue_resume(2);
        r.disconnect(1);
        r.disconnect(2);
        r.connect(3);
        assert_eq!(r.resume(3, &again), (true, None));
        assert_eq!(r.stamp(3), name);
        // Used once; a wrong token changes nothing.
        r.connect(4);
        assert_eq!(r.resume(4, &token), (false, None));
        assert_eq!(r.resume(4, &again), (false, None));
        assert_eq!(r.resume(4, "00"), (false, None));
        assert_ne!(r.stamp(4), name);
    }

    #[test]
    fn tokens_of_closed_connections_are_kept_boundedly() {
        let mut r = Router::new(Limits::default());
        let first = {
            r.connect(0);
            let t = r.issue_resume(0);
            r.disconnect(0);
            t
        };
        for c in 1..=RESUMABLE as ConnId {
            r.connect(c);
            r.issue_resume(c);
            r.disconnect(c);
        }
        assert!(r.resumable.len() <= RESUMABLE);
        r.connect(99_999);
        assert_eq!(r.resume(99_999, &first), (false, None));
    }

    #[test]
    fn off_and_disconnect_remove_subscriptions() {
        let mut r = Router::default();
        assert!(matches!(
            on(&mut r, 1, &["a"]),
            Routed::Subscribed { first: true, .. }
        ));
        assert!(matches!(
            on(&mut r, 2, &["a"]),
            Routed::Subscribed { first: false, .. }
        ));
        assert_eq!(on(&mut r, 2, &["a"]), Routed::Nothing, "duplicate on");
        let off = r.handle_text(2, r#"{"op":"off","ns":["a"]}"#);
        assert!(matches!(off, Routed::Unsubscribed { last: false, .. }));
        assert_eq!(
            r.handle_text(2, r#"{"op":"off","ns":["a"]}"#),
            Routed::Nothing
        );
        assert!(targets(emit(&mut r, 1, &["a"], json!(0))).is_empty());
        on(&mut r, 1, &["b"]);
        let emptied = r.disconnect(1);
        assert_eq!(emptied.len(), 2);
        assert!(targets(emit(&mut r, 3, &["a"], json!(0))).is_empty());
        assert!(r.subs.is_empty(), "namespaces left: {:?}", r.subs);
        assert_eq!(r.connections(), 1, "only connection 2 remains");
    }

    #[test]
    fn bad_frames_get_error_replies() {
        let mut r = Router::new(Limits {
            max_frame: 100,
            max_subscriptions: 2,
            rate: 0,
        });
        for bad in [
            "{",
            r#"{"op":"nope","ns":["a"]}"#,
            r#"{"op":"on","ns":[]}"#,
            &"x".repeat(101),
        ] {
            let Routed::Reply(text) = r.handle_text(1, bad) else {
                panic!("no error for {bad}")
            };
            assert!(matches!(
                ServerFrame::parse(&text),
                Ok(ServerFrame::Error { .. })
            ));
        }
        on(&mut r, 1, &["a"]);
        on(&mut r, 1, &["b"]);
        let Routed::Reply(text) = on(&mut r, 1, &["c"]) else {
            panic!("subscription cap not enforced")
        };
        assert!(text.contains("too many subscriptions"), "{text}");
        // Still usable afterwards.
        on(&mut r, 2, &["a"]);
        assert_eq!(targets(emit(&mut r, 1, &["a"], json!(1))), vec![2]);
    }
}
