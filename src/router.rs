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
    /// Connections that resumed another's name: the name they carry.
    names: HashMap<ConnId, String>,
    /// Resume tokens: the name each gives back, and the connection it was
    /// issued to.
    resumable: HashMap<String, (String, ConnId)>,
    /// The token each connection holds now.
    tokens: HashMap<ConnId, String>,
    /// Tokens of connections gone, oldest first: they stay good for
    /// [`RESUMABLE`] more disconnects.
    gone: VecDeque<String>,
    /// What resume tokens are signed with ([`Router::resume_key`]).
    key: [u8; 32],
    /// Tokens of earlier runs taken, oldest first: each works once.
    taken: VecDeque<String>,
}

/// Tokens of closed connections kept for a resume. A client that lost its
/// connection comes back within seconds; thousands of closes later its
/// token is forgotten, which bounds what a flood of connections can make
/// the relay keep.
pub const RESUMABLE: usize = 4096;

/// How long a resume token stays good in a later run of the relay, in
/// seconds (in the run that issued it, until used or forgotten).
pub const RESUME_TTL: u64 = 300;
/// How often the relay gives a connection a fresh resume token, so the
/// one it holds is always good in a later run.
pub const RESUME_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);
/// How far ahead of this relay's clock a token's time may be (a relay
/// restarted on another machine of a cluster).
const CLOCK_SKEW: u64 = 60;

impl Router {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            origin: format!("{:08x}", rand::random::<u32>()),
            key: rand::random(),
            ..Self::default()
        }
    }

    /// Signs resume tokens with `key`: a later run of the relay with the
    /// same key gives a client that reconnects with one its name back, so
    /// its peers keep taking its messages (an ICE restart after an
    /// address change works across a relay restart). Without it, the key
    /// is this run's own.
    pub fn resume_key(mut self, key: [u8; 32]) -> Self {
        self.key = key;
        self
    }

    /// The name `message` frames carry for `conn`'s emits: whoever
    /// receives one knows which connection sent it, whatever its `data`
    /// claims.
    pub fn stamp(&self, conn: ConnId) -> String {
        match self.names.get(&conn) {
            Some(name) => name.clone(),
            None => format!("{}.{conn}", self.origin),
        }
    }

    /// A new secret that lets a later connection of the same client take
    /// `conn`'s name ([`Router::resume`]): what keeps its peers bound to it
    /// across a lost connection (a changed address, a dead NAT mapping).
    /// Only `conn` is told it; it replaces any token `conn` held.
    /// `now`: seconds since the Unix epoch (a token is good in a later run
    /// for [`RESUME_TTL`]; the relay gives a connection a fresh one every
    /// [`RESUME_REFRESH`]).
    pub fn issue_resume(&mut self, conn: ConnId, now: u64) -> String {
        let name = self.stamp(conn);
        let token = resume::sign(&self.key, &self.origin, now, &name);
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
    ///
    /// A token of an earlier run of the relay (one this run did not issue,
    /// signed with its key, at most [`RESUME_TTL`] before `now`) works
    /// too: the client's peers still know it by that name. A token copied
    /// from a log is good for no longer.
    pub fn resume(&mut self, conn: ConnId, token: &str, now: u64) -> (bool, Option<ConnId>) {
        let (name, live) = match self.resumable.remove(token) {
            Some((name, holder)) => {
                self.gone.retain(|t| t != token);
                if self.tokens.get(&holder).is_some_and(|t| t == token) {
                    self.tokens.remove(&holder);
                }
                let live = (holder != conn && self.conns.contains_key(&holder)).then_some(holder);
                (name, live)
            }
            None => {
                // This run's tokens are all in the table until used.
                let earlier = resume::verify(&self.key, token)
                    .filter(|t| t.issuer != self.origin)
                    .filter(|t| t.issued <= now + CLOCK_SKEW && now <= t.issued + RESUME_TTL)
                    .map(|t| t.name.to_owned());
                let Some(name) = earlier else {
                    return (false, None);
                };
                if self.taken.iter().any(|t| t == token) {
                    return (false, None);
                }
                self.taken.push_back(token.to_owned());
                if self.taken.len() > RESUMABLE {
                    self.taken.pop_front();
                }
                // A name of another run is carried only by connections
                // that resumed it.
                let live = self
                    .names
                    .iter()
                    .find(|&(&c, n)| c != conn && *n == name && self.conns.contains_key(&c))
                    .map(|(&c, _)| c);
                (name, live)
            }
        };
        self.names.insert(conn, name);
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

/// Resume tokens that a later run of the relay can check: the run that
/// issued one, when (hex seconds), a nonce, the name it gives back, and an
/// HMAC-SHA-256 of the four under the relay's key, joined by `~` (safe in
/// a URL).
mod resume {
    use hmac::{Hmac, Mac as _};
    use sha2::Sha256;

    /// Longest name a token may carry (an origin, a dot and a number).
    const MAX_NAME: usize = 40;

    fn mac(key: &[u8; 32], parts: [&str; 4]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(b"p2p resume\0");
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        mac
    }

    pub fn sign(key: &[u8; 32], issuer: &str, now: u64, name: &str) -> String {
        let (issued, nonce) = (format!("{now:x}"), hex::encode(rand::random::<[u8; 8]>()));
        let parts = [issuer, issued.as_str(), nonce.as_str(), name];
        let tag = hex::encode(mac(key, parts).finalize().into_bytes());
        format!("{}~{tag}", parts.join("~"))
    }

    /// What a token signed with the key says.
    pub struct Token<'t> {
        pub issuer: &'t str,
        pub issued: u64,
        pub name: &'t str,
    }

    pub fn verify<'t>(key: &[u8; 32], token: &'t str) -> Option<Token<'t>> {
        let mut split = token.split('~');
        let mut parts = [""; 4];
        for part in &mut parts {
            *part = split.next()?;
        }
        let tag = hex::decode(split.next()?).ok()?;
        let plain = |s: &str, dot: bool| {
            !s.is_empty()
                && s.len() <= MAX_NAME
                && s.bytes()
                    .all(|b| b.is_ascii_hexdigit() || (dot && b == b'.'))
        };
        let [issuer, issued, nonce, name] = parts;
        if split.next().is_some()
            || !plain(issuer, false)
            || !plain(nonce, false)
            || !plain(name, true)
        {
            return None;
        }
        let issued = u64::from_str_radix(issued, 16).ok()?;
        mac(key, parts).verify_slice(&tag).ok()?;
        Some(Token {
            issuer,
            issued,
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    /// A time for tokens (seconds since the epoch).
    const T: u64 = 1_800_000_000;
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
        let token = r.issue_resume(1, T);
        // The old connection is still open (its client gave it up): the
        // new one takes its name and is told to close it.
        r.connect(2);
        assert_eq!(r.resume(2, &token, T), (true, Some(1)));
        assert_eq!(r.stamp(2), name);
        // Its next token names the same connection, after it closes too.
        let again = r.issue_resume(2, T);
        r.disconnect(1);
        r.disconnect(2);
        r.connect(3);
        assert_eq!(r.resume(3, &again, T), (true, None));
        assert_eq!(r.stamp(3), name);
        // Used once; a wrong token changes nothing.
        r.connect(4);
        assert_eq!(r.resume(4, &token, T), (false, None));
        assert_eq!(r.resume(4, &again, T), (false, None));
        assert_eq!(r.resume(4, "00", T), (false, None));
        assert_ne!(r.stamp(4), name);
    }

    #[test]
    fn a_token_of_an_earlier_run_with_the_same_key_gives_its_name_back_once() {
        let key = [7; 32];
        let mut before = Router::new(Limits::default()).resume_key(key);
        before.connect(5);
        let name = before.stamp(5);
        let token = before.issue_resume(5, T);
        // The relay restarts (same key): its connection numbers start over.
        let mut after = Router::new(Limits::default()).resume_key(key);
        after.connect(1);
        after.connect(5);
        assert_eq!(after.resume(5, &token, T), (true, None));
        assert_eq!(after.stamp(5), name);
        assert_ne!(after.stamp(1), name);
        // Once: a second client with the same token gets a name of its own.
        after.connect(6);
        assert_eq!(after.resume(6, &token, T), (false, None));
        assert_ne!(after.stamp(6), name);
        // The token this run gives for the name works across the next
        // restart, and hands the name over from a connection still open.
        let next = after.issue_resume(5, T);
        after.connect(7);
        assert_eq!(after.resume(7, &next, T), (true, Some(5)));
        assert_eq!(after.stamp(7), name);
        let again = after.issue_resume(7, T);
        let mut third = Router::new(Limits::default()).resume_key(key);
        third.connect(1);
        assert_eq!(third.resume(1, &again, T), (true, None));
        assert_eq!(third.stamp(1), name);
    }

    #[test]
    fn a_token_signed_with_another_key_or_altered_gives_no_name() {
        let mut before = Router::new(Limits::default()).resume_key([1; 32]);
        before.connect(1);
        let token = before.issue_resume(1, T);
        let mut other = Router::new(Limits::default()).resume_key([2; 32]);
        other.connect(1);
        assert_eq!(other.resume(1, &token, T), (false, None));
        // Another name under the same signature, or a broken one.
        let mut same = Router::new(Limits::default()).resume_key([1; 32]);
        same.connect(1);
        let mut parts: Vec<&str> = token.split('~').collect();
        let forged = format!("{}.9", &parts[3][..8]);
        parts[3] = &forged;
        assert_eq!(same.resume(1, &parts.join("~"), T), (false, None));
        for bad in [
            "",
            "~~~~",
            "a~b~c~d~e",
            "a~1~c~d~e~f",
            &token[..token.len() - 2],
        ] {
            assert_eq!(same.resume(1, bad, T), (false, None), "{bad:?}");
        }
        // Untouched, it works.
        assert_eq!(same.resume(1, &token, T), (true, None));
    }

    #[test]
    fn a_token_of_an_earlier_run_is_good_for_a_while_only() {
        let key = [4; 32];
        let mut before = Router::new(Limits::default()).resume_key(key);
        before.connect(1);
        let old = before.issue_resume(1, T);
        let fresh = before.issue_resume(1, T + 240);
        let ahead = before.issue_resume(1, T + 1000);
        let mut after = Router::new(Limits::default()).resume_key(key);
        let now = T + RESUME_TTL + 1;
        after.connect(1);
        assert_eq!(after.resume(1, &old, now), (false, None), "expired");
        assert_eq!(
            after.resume(1, &ahead, now),
            (false, None),
            "from the future"
        );
        assert_eq!(after.resume(1, &fresh, now), (true, None));
    }

    #[test]
    fn a_used_token_of_this_run_is_not_taken_again_as_an_earlier_runs() {
        let mut r = Router::new(Limits::default()).resume_key([3; 32]);
        r.connect(1);
        let name = r.stamp(1);
        let token = r.issue_resume(1, T);
        r.disconnect(1);
        r.connect(2);
        assert_eq!(r.resume(2, &token, T), (true, None));
        r.connect(3);
        assert_eq!(r.resume(3, &token, T), (false, None));
        assert_ne!(r.stamp(3), name);
    }

    #[test]
    fn tokens_of_closed_connections_are_kept_boundedly() {
        let mut r = Router::new(Limits::default());
        let first = {
            r.connect(0);
            let t = r.issue_resume(0, T);
            r.disconnect(0);
            t
        };
        for c in 1..=RESUMABLE as ConnId {
            r.connect(c);
            r.issue_resume(c, T);
            r.disconnect(c);
        }
        assert!(r.resumable.len() <= RESUMABLE);
        r.connect(99_999);
        assert_eq!(r.resume(99_999, &first, T), (false, None));
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
