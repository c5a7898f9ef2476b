//! Wire types of `PROTOCOL.md` sections 1 and 2, shared by the relay, the
//! signaling drivers, the sessions and the tests.
//!
//! Parsing never panics: every function that reads bytes from the network
//! returns a [`ProtocolError`] that says, in one line, what was wrong.
//! Unknown fields are tolerated everywhere (browsers and future versions add
//! them); unknown message `type`s are an error value the caller logs and
//! ignores.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Most strings a namespace may have (PROTOCOL.md §2).
pub const MAX_NS_PARTS: usize = 8;

/// Why a frame or message was refused. The `Display` text is what the relay
/// sends back in an `error` frame and what clients log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame is not valid JSON: {0}")]
    Json(String),
    #[error("frame must be a JSON object with an \"op\" field")]
    NotAnObject,
    #[error("unknown op {0:?}: expected \"on\", \"off\" or \"emit\"")]
    UnknownOp(String),
    #[error("\"ns\" must be an array of 1 to 8 non-empty strings")]
    BadNamespace,
    #[error("\"emit\" needs a \"data\" field")]
    MissingData,
    #[error("frame of {size} bytes is over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("binary frames are not accepted: send UTF-8 JSON text frames")]
    Binary,
    #[error("message is not a JSON object")]
    MessageNotObject,
    #[error("message has no string \"type\"")]
    MissingType,
    #[error("message has no string \"id\"")]
    MissingId,
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("{kind} message is malformed: {reason}")]
    BadMessage { kind: &'static str, reason: String },
}

/// A validated namespace: 1 to [`MAX_NS_PARTS`] non-empty strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Namespace(Vec<String>);

impl Namespace {
    pub fn new<I, S>(parts: I) -> Result<Self, ProtocolError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let parts: Vec<String> = parts.into_iter().map(Into::into).collect();
        if parts.is_empty() || parts.len() > MAX_NS_PARTS || parts.iter().any(String::is_empty) {
            return Err(ProtocolError::BadNamespace);
        }
        Ok(Self(parts))
    }

    pub fn parts(&self) -> &[String] {
        &self.0
    }

    /// `ns.join(":")`, the form that PROTOCOL.md §3/§4 hash.
    pub fn joined(&self) -> String {
        self.0.join(":")
    }

    /// `["sender", room]` or `["sender", room, id]`.
    pub fn sender(room: &str, id: Option<&str>) -> Self {
        Self::role("sender", room, id)
    }

    /// `["receiver", room]` or `["receiver", room, id]`.
    pub fn receiver(room: &str, id: Option<&str>) -> Self {
        Self::role("receiver", room, id)
    }

    fn role(role: &str, room: &str, id: Option<&str>) -> Self {
        let mut parts = vec![role.to_owned(), room.to_owned()];
        parts.extend(id.map(str::to_owned));
        // Rooms and ids are validated non-empty where they enter (config,
        // parsed messages); an empty one here would be a bug upstream, and
        // the relay would answer it with an error frame rather than crash.
        Self(parts)
    }
}

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let parts = Vec::<String>::deserialize(d)?;
        Namespace::new(parts).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.0.join(", "))
    }
}

/// A frame from a client to the relay (PROTOCOL.md §2).
///
/// `D` is how `data` is held: a parsed [`Value`] on the client side, or
/// `&RawValue`, the exact text the frame carried, on the relay, which passes
/// `data` on byte for byte (keys in their order, numbers past 2^53, escapes
/// and whitespace as they were) instead of rewriting it.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame<D = Value> {
    On(Namespace),
    Off(Namespace),
    Emit { ns: Namespace, data: D },
}

impl<'a> ClientFrame<&'a RawValue> {
    /// Parses one text frame as the relay needs it: `op` and `ns` read and
    /// checked, `data` checked to be one JSON value and kept as the slice of
    /// `text` it was. The size is checked against `limit` first so an
    /// oversized frame is never parsed.
    pub fn parse_exact(text: &'a str, limit: usize) -> Result<Self, ProtocolError> {
        if text.len() > limit {
            return Err(ProtocolError::TooLarge {
                size: text.len(),
                limit,
            });
        }
        let fields: RawFields<'a> = match serde_json::from_str(text) {
            Ok(fields) => fields,
            // Only bad frames get here: parse them again as any JSON to tell
            // "not JSON" from "JSON, but not an object".
            Err(_) => {
                return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                    Ok(_) => ProtocolError::NotAnObject,
                    Err(e) => ProtocolError::Json(e.to_string()),
                })
            }
        };
        let op = fields
            .op
            .and_then(|op| json_str(op).ok())
            .ok_or(ProtocolError::NotAnObject)?;
        let ns = || -> Result<Namespace, ProtocolError> {
            let ns = fields.ns.ok_or(ProtocolError::BadNamespace)?;
            serde_json::from_str(ns.get()).map_err(|_| ProtocolError::BadNamespace)
        };
        match &*op {
            "on" => Ok(Self::On(ns()?)),
            "off" => Ok(Self::Off(ns()?)),
            "emit" => {
                let ns = ns()?;
                let data = fields.data.ok_or(ProtocolError::MissingData)?;
                Ok(Self::Emit { ns, data })
            }
            _ => Err(ProtocolError::UnknownOp(op.into_owned())),
        }
    }
}

impl ClientFrame {
    /// Parses one text frame with `data` as a [`Value`]; the same checks and
    /// errors as [`ClientFrame::parse_exact`].
    pub fn parse(text: &str, limit: usize) -> Result<Self, ProtocolError> {
        Ok(match ClientFrame::parse_exact(text, limit)? {
            ClientFrame::On(ns) => Self::On(ns),
            ClientFrame::Off(ns) => Self::Off(ns),
            ClientFrame::Emit { ns, data } => Self::Emit {
                ns,
                data: serde_json::from_str(data.get())
                    .map_err(|e| ProtocolError::Json(e.to_string()))?,
            },
        })
    }

    pub fn to_json(&self) -> String {
        let v = match self {
            Self::On(ns) => serde_json::json!({"op": "on", "ns": ns}),
            Self::Off(ns) => serde_json::json!({"op": "off", "ns": ns}),
            Self::Emit { ns, data } => serde_json::json!({"op": "emit", "ns": ns, "data": data}),
        };
        v.to_string()
    }
}

/// A JSON string's value, borrowed from the frame unless it has escapes.
fn json_str(raw: &RawValue) -> serde_json::Result<std::borrow::Cow<'_, str>> {
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(s) => Ok(s.into()),
        Err(_) => serde_json::from_str::<String>(raw.get()).map(Into::into),
    }
}

/// The members of a client frame the relay reads, each as the text it had.
/// Other members are checked as JSON and skipped; of a repeated member the
/// last counts, as when a frame is parsed into a [`Value`].
#[derive(Default)]
struct RawFields<'a> {
    op: Option<&'a RawValue>,
    ns: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum FrameKey {
    Op,
    Ns,
    Data,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = RawFields<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = RawFields::default();
                while let Some(key) = map.next_key()? {
                    let slot = match key {
                        FrameKey::Op => &mut fields.op,
                        FrameKey::Ns => &mut fields.ns,
                        FrameKey::Data => &mut fields.data,
                        FrameKey::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(fields)
            }
        }
        d.deserialize_map(Fields)
    }
}

/// A frame from the relay to a client (PROTOCOL.md §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ServerFrame {
    Message {
        ns: Namespace,
        /// The relay's name for the connection that emitted it (PROTOCOL.md
        /// §2): what a client binds a peer to. Absent from relays that do
        /// not stamp, and from NATS.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        data: Value,
    },
    Error {
        error: String,
    },
    /// The client's own `from`, as the relay stamps its messages: only to
    /// clients that asked with `?stamp=1` (PROTOCOL.md §2), first.
    Stamp {
        from: String,
        /// A secret that gives this name back to a later connection of the
        /// same client (`?resume=…`), so peers bound to it keep taking its
        /// messages after it reconnects. Only to that client.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<String>,
    },
    /// ICE servers with credentials of their own for this client, valid
    /// for `ttl` seconds (PROTOCOL.md §2, "ICE servers"): only to clients
    /// that asked with `?ice=1`.
    Ice {
        #[serde(rename = "iceServers")]
        ice_servers: Vec<IceServerJson>,
        ttl: u64,
    },
}

/// One entry of `RTCConfiguration.iceServers`, as browsers take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServerJson {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl ServerFrame {
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        serde_json::from_str(text).map_err(|e| ProtocolError::Json(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        // Serializing a Value-bearing enum with string keys cannot fail.
        serde_json::to_string(self).expect("ServerFrame serializes")
    }

    pub fn error(e: impl fmt::Display) -> Self {
        Self::Error {
            error: e.to_string(),
        }
    }
}

/// A session description as the browser's `RTCSessionDescription.toJSON()`
/// writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    #[serde(rename = "type")]
    pub kind: String,
    pub sdp: String,
}

/// An ICE candidate in the browser's `RTCIceCandidate.toJSON()` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

impl Candidate {
    /// Chromium hides host addresses behind `<uuid>.local` names; without
    /// mDNS we cannot resolve them, and the peer still connects through
    /// peer-reflexive candidates.
    pub fn is_mdns(&self) -> bool {
        self.candidate
            .split_whitespace()
            .nth(4)
            .is_some_and(|addr| addr.ends_with(".local"))
    }
}

/// The one way of proving credentials there is: HMAC-SHA256.
pub const PROOF: &str = "hmac-sha256";

/// What an invoke says about proving its credentials instead of sending
/// them (PROTOCOL.md §1, "Credentials without sending them").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// `"prove":"hmac-sha256"`: send me a challenge.
    Able,
    /// `"proof":"<hex>"`: the answer to the challenge this sender sent,
    /// and (`"stamp"`) the relay connection the prover made it for.
    Answer {
        proof: String,
        stamp: Option<String>,
    },
}

/// A signaling message of PROTOCOL.md §1.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Invoke {
        id: String,
        credentials: Option<Value>,
        proof: Option<Proof>,
        /// `"restarts":true`: this receiver takes [`Message::Restart`]
        /// offers. An extension of this project; the seed library's
        /// senders ignore it.
        restarts: bool,
    },
    /// An ICE restart (an extension of this project): from a sender, the
    /// offer with new ICE credentials for a connection that lost its path;
    /// from a receiver (no offer), a request for one, because its network
    /// changed or its path went quiet. Sent only to peers that said they
    /// take it; the connection, its tracks and channels carry on.
    Restart {
        id: String,
        offer: Option<Description>,
    },
    /// Sender to a receiver that can prove its credentials: the nonce to
    /// prove them over. An extension of this project.
    Challenge {
        id: String,
        nonce: String,
    },
    Offer {
        id: String,
        offer: Description,
        state: Map<String, Value>,
        /// `"restarts":true`: this sender restarts ICE when asked
        /// ([`Message::Restart`]). An extension of this project.
        restarts: bool,
    },
    Answer {
        id: String,
        answer: Description,
    },
    Candidate {
        id: String,
        candidate: Candidate,
    },
    Sync {
        id: String,
        state: Map<String, Value>,
    },
    Dispose {
        id: String,
        state: Option<Map<String, Value>>,
    },
}

impl Message {
    pub fn id(&self) -> &str {
        match self {
            Self::Invoke { id, .. }
            | Self::Challenge { id, .. }
            | Self::Restart { id, .. }
            | Self::Offer { id, .. }
            | Self::Answer { id, .. }
            | Self::Candidate { id, .. }
            | Self::Sync { id, .. }
            | Self::Dispose { id, .. } => id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invoke { .. } => "invoke",
            Self::Challenge { .. } => "challenge",
            Self::Restart { .. } => "restart",
            Self::Offer { .. } => "offer",
            Self::Answer { .. } => "answer",
            Self::Candidate { .. } => "candidate",
            Self::Sync { .. } => "sync",
            Self::Dispose { .. } => "dispose",
        }
    }

    /// Reads a message from any JSON value, as it arrives from a driver.
    pub fn from_value(value: &Value) -> Result<Self, ProtocolError> {
        let obj = value.as_object().ok_or(ProtocolError::MessageNotObject)?;
        let kind = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or(ProtocolError::MissingType)?;
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or(ProtocolError::MissingId)?
            .to_owned();
        fn field<T: serde::de::DeserializeOwned>(
            obj: &Map<String, Value>,
            kind: &'static str,
            name: &str,
        ) -> Result<T, ProtocolError> {
            let v = obj.get(name).ok_or_else(|| ProtocolError::BadMessage {
                kind,
                reason: format!("missing \"{name}\""),
            })?;
            T::deserialize(v).map_err(|e| ProtocolError::BadMessage {
                kind,
                reason: format!("\"{name}\": {e}"),
            })
        }
        fn state(obj: &Map<String, Value>) -> Map<String, Value> {
            // The seed sends `state: undefined` (absent) when none was set.
            match obj.get("state") {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            }
        }
        Ok(match kind {
            "invoke" => Self::Invoke {
                id,
                credentials: obj.get("credentials").filter(|v| !v.is_null()).cloned(),
                proof: match (obj.get("proof"), obj.get("prove")) {
                    (Some(Value::String(p)), _) => Some(Proof::Answer {
                        proof: p.clone(),
                        stamp: obj.get("stamp").and_then(Value::as_str).map(str::to_owned),
                    }),
                    (_, Some(Value::String(how))) if how == PROOF => Some(Proof::Able),
                    _ => None,
                },
                restarts: obj.get("restarts") == Some(&Value::Bool(true)),
            },
            "restart" => Self::Restart {
                id,
                offer: match obj.get("offer") {
                    None | Some(Value::Null) => None,
                    Some(_) => {
                        let offer: Description = field(obj, "restart", "offer")?;
                        if offer.kind != "offer" {
                            return Err(ProtocolError::BadMessage {
                                kind: "restart",
                                reason: format!(
                                    "description type is {:?}, not \"offer\"",
                                    offer.kind
                                ),
                            });
                        }
                        Some(offer)
                    }
                },
            },
            "challenge" => Self::Challenge {
                id,
                nonce: field(obj, "challenge", "nonce")?,
            },
            "offer" => {
                let offer: Description = field(obj, "offer", "offer")?;
                if offer.kind != "offer" {
                    return Err(ProtocolError::BadMessage {
                        kind: "offer",
                        reason: format!("description type is {:?}, not \"offer\"", offer.kind),
                    });
                }
                Self::Offer {
                    id,
                    offer,
                    state: state(obj),
                    restarts: obj.get("restarts") == Some(&Value::Bool(true)),
                }
            }
            "answer" => {
                let answer: Description = field(obj, "answer", "answer")?;
                if answer.kind != "answer" {
                    return Err(ProtocolError::BadMessage {
                        kind: "answer",
                        reason: format!("description type is {:?}, not \"answer\"", answer.kind),
                    });
                }
                Self::Answer { id, answer }
            }
            "candidate" => Self::Candidate {
                id,
                candidate: field(obj, "candidate", "candidate")?,
            },
            "sync" => Self::Sync {
                id,
                state: state(obj),
            },
            "dispose" => Self::Dispose {
                id,
                state: obj.get("state").and_then(Value::as_object).cloned(),
            },
            other => return Err(ProtocolError::UnknownType(other.to_owned())),
        })
    }

    pub fn to_value(&self) -> Value {
        use serde_json::json;
        match self {
            Self::Invoke {
                id,
                credentials,
                proof,
                restarts,
            } => {
                let mut v = json!({"type": "invoke", "id": id});
                if *restarts {
                    v["restarts"] = true.into();
                }
                if let Some(c) = credentials {
                    v["credentials"] = c.clone();
                }
                match proof {
                    Some(Proof::Able) => v["prove"] = PROOF.into(),
                    Some(Proof::Answer { proof, stamp }) => {
                        v["proof"] = proof.as_str().into();
                        if let Some(s) = stamp {
                            v["stamp"] = s.as_str().into();
                        }
                    }
                    None => {}
                }
                v
            }
            Self::Challenge { id, nonce } => {
                json!({"type": "challenge", "id": id, "nonce": nonce})
            }
            Self::Restart { id, offer } => match offer {
                Some(o) => json!({"type": "restart", "id": id, "offer": o}),
                None => json!({"type": "restart", "id": id}),
            },
            Self::Offer {
                id,
                offer,
                state,
                restarts,
            } => {
                let mut v = json!({"type": "offer", "id": id, "offer": offer, "state": state});
                if *restarts {
                    v["restarts"] = true.into();
                }
                v
            }
            Self::Answer { id, answer } => json!({"type": "answer", "id": id, "answer": answer}),
            Self::Candidate { id, candidate } => {
                json!({"type": "candidate", "id": id, "candidate": candidate})
            }
            Self::Sync { id, state } => json!({"type": "sync", "id": id, "state": state}),
            Self::Dispose { id, state } => match state {
                Some(s) => json!({"type": "dispose", "id": id, "state": s}),
                None => json!({"type": "dispose", "id": id}),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMIT: usize = 64 * 1024;

    #[test]
    fn parses_each_client_op() {
        let on = ClientFrame::parse(r#"{"op":"on","ns":["receiver","demo"]}"#, LIMIT).unwrap();
        assert_eq!(
            on,
            ClientFrame::On(Namespace::receiver("demo", None)),
            "on frame"
        );
        let off = ClientFrame::parse(r#"{"op":"off","ns":["a"],"extra":1}"#, LIMIT).unwrap();
        assert_eq!(off, ClientFrame::Off(Namespace::new(["a"]).unwrap()));
        let emit =
            ClientFrame::parse(r#"{"op":"emit","ns":["a","b"],"data":{"x":[1]}}"#, LIMIT).unwrap();
        assert_eq!(
            emit,
            ClientFrame::Emit {
                ns: Namespace::new(["a", "b"]).unwrap(),
                data: json!({"x":[1]})
            }
        );
        // round trip
        assert_eq!(ClientFrame::parse(&emit.to_json(), LIMIT).unwrap(), emit);
    }

    #[test]
    fn rejects_bad_frames_with_reasons() {
        let cases = [
            ("not json", "not valid JSON"),
            ("[1,2]", "JSON object"),
            (r#"{"ns":["a"]}"#, "JSON object"),
            (r#"{"op":"shout","ns":["a"]}"#, "unknown op"),
            (r#"{"op":"on"}"#, "\"ns\""),
            (r#"{"op":"on","ns":[]}"#, "\"ns\""),
            (r#"{"op":"on","ns":["a",""]}"#, "\"ns\""),
            (r#"{"op":"on","ns":["a",1]}"#, "\"ns\""),
            (r#"{"op":"on","ns":"a"}"#, "\"ns\""),
            (
                r#"{"op":"on","ns":["1","2","3","4","5","6","7","8","9"]}"#,
                "\"ns\"",
            ),
            (r#"{"op":"emit","ns":["a"]}"#, "\"data\""),
            ("[1,2", "not valid JSON"),
            (r#"{"op":"emit","ns":["a"],"data":[1,}"#, "not valid JSON"),
            (r#"{"op":"emit","ns":["a"],"data":1} x"#, "not valid JSON"),
            (r#"{"op":1,"ns":["a"]}"#, "JSON object"),
        ];
        for (frame, expect) in cases {
            let err = ClientFrame::parse(frame, LIMIT).unwrap_err().to_string();
            assert!(err.contains(expect), "{frame}: {err}");
        }
        let big = format!(
            r#"{{"op":"emit","ns":["a"],"data":"{}"}}"#,
            "x".repeat(LIMIT)
        );
        assert!(matches!(
            ClientFrame::parse(&big, LIMIT),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn relay_parse_keeps_data_byte_for_byte() {
        let data = r#"{ "z" :1,"a":[ true ,null],"big":9007199254740993,"u":"\u00e9\ud83d\ude00"
}"#;
        let frame = format!(
            r#"{{"x":{{"op":"on"}},"op":"emit","ns":["a"],"data":{ws}{data}  }}"#,
            ws = "\t\r\n "
        );
        let Ok(ClientFrame::Emit { ns, data: got }) = ClientFrame::parse_exact(&frame, LIMIT)
        else {
            panic!("{frame} did not parse as an emit");
        };
        assert_eq!(ns, Namespace::new(["a"]).unwrap());
        assert_eq!(got.get(), data);

        // As with a `Value`: escapes in names and the op are read through,
        // and of repeated members the last counts.
        let frame = r#"{"op":"on","\u006fp":"em\u0069t","ns":["a"],"data":1,"data":[2]}"#;
        let Ok(ClientFrame::Emit { data, .. }) = ClientFrame::parse_exact(frame, LIMIT) else {
            panic!("{frame} did not parse as an emit");
        };
        assert_eq!(data.get(), "[2]");
    }

    #[test]
    fn server_frames_round_trip() {
        let m = ServerFrame::Message {
            ns: Namespace::sender("demo", Some("x")),
            from: Some("ab12.7".into()),
            data: json!({"type":"invoke","id":"r"}),
        };
        assert_eq!(ServerFrame::parse(&m.to_json()).unwrap(), m);
        let e = ServerFrame::error("nope");
        assert_eq!(e.to_json(), r#"{"op":"error","error":"nope"}"#);
    }

    #[test]
    fn messages_parse_and_serialize() {
        let offer = json!({"type":"offer","id":"s","offer":{"type":"offer","sdp":"v=0"},"state":{"a":1},"x":2});
        let m = Message::from_value(&offer).unwrap();
        assert_eq!(m.kind(), "offer");
        assert_eq!(Message::from_value(&m.to_value()).unwrap(), m);

        let cand = json!({"type":"candidate","id":"r","candidate":{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"u"}});
        let m = Message::from_value(&cand).unwrap();
        let Message::Candidate { candidate, .. } = &m else {
            panic!("not a candidate: {m:?}")
        };
        assert_eq!(candidate.sdp_mid.as_deref(), Some("0"));
        assert_eq!(m.to_value()["candidate"], cand["candidate"]);

        let inv = Message::from_value(&json!({"type":"invoke","id":"r","credentials":{"k":"v"}}))
            .unwrap();
        assert_eq!(
            inv,
            Message::Invoke {
                id: "r".into(),
                credentials: Some(json!({"k":"v"})),
                proof: None,
                restarts: false,
            }
        );
        // A receiver that takes ICE restarts says so; the restart itself
        // carries an offer one way and nothing the other.
        let v = json!({"type":"invoke","id":"r","restarts":true});
        let m = Message::from_value(&v).unwrap();
        assert!(matches!(m, Message::Invoke { restarts: true, .. }));
        assert_eq!(m.to_value(), v);
        for v in [
            json!({"type":"restart","id":"r"}),
            json!({"type":"restart","id":"s","offer":{"type":"offer","sdp":"v=0"}}),
        ] {
            let m = Message::from_value(&v).unwrap();
            assert_eq!(m.kind(), "restart");
            assert_eq!(m.to_value(), v);
        }
        // Proving instead of sending, and the challenge it asks for.
        for (v, proof) in [
            (
                json!({"type":"invoke","id":"r","prove":"hmac-sha256"}),
                Proof::Able,
            ),
            (
                json!({"type":"invoke","id":"r","proof":"ab01","stamp":"c.1"}),
                Proof::Answer {
                    proof: "ab01".into(),
                    stamp: Some("c.1".into()),
                },
            ),
        ] {
            let m = Message::from_value(&v).unwrap();
            assert_eq!(
                m,
                Message::Invoke {
                    id: "r".into(),
                    credentials: None,
                    proof: Some(proof),
                    restarts: false,
                }
            );
            assert_eq!(m.to_value(), v);
        }
        let c = json!({"type":"challenge","id":"s","nonce":"00ff"});
        assert_eq!(Message::from_value(&c).unwrap().to_value(), c);
        // An unknown way of proving is no offer to prove.
        let m = Message::from_value(&json!({"type":"invoke","id":"r","prove":"md5"})).unwrap();
        assert!(matches!(m, Message::Invoke { proof: None, .. }));
        // The seed's offer may carry no state at all.
        let m = Message::from_value(
            &json!({"type":"offer","id":"s","offer":{"type":"offer","sdp":"v=0"}}),
        )
        .unwrap();
        assert!(matches!(m, Message::Offer { state, .. } if state.is_empty()));
    }

    #[test]
    fn malformed_messages_are_errors() {
        let cases = [
            json!(null),
            json!("invoke"),
            json!({"id":"x"}),
            json!({"type":"invoke"}),
            json!({"type":"invoke","id":""}),
            json!({"type":"invoke","id":5}),
            json!({"type":"hello","id":"x"}),
            json!({"type":"offer","id":"x"}),
            json!({"type":"offer","id":"x","offer":{"type":"answer","sdp":""}}),
            json!({"type":"answer","id":"x","answer":"sdp"}),
            json!({"type":"restart","id":"x","offer":{"type":"answer","sdp":""}}),
            json!({"type":"restart","id":"x","offer":"sdp"}),
            json!({"type":"candidate","id":"x","candidate":{"sdpMid":"0"}}),
        ];
        for c in cases {
            assert!(Message::from_value(&c).is_err(), "accepted {c}");
        }
    }

    #[test]
    fn recognises_mdns_candidates() {
        let c = |s: &str| Candidate {
            candidate: s.into(),
            ..Default::default()
        };
        assert!(c(
            "candidate:1 1 udp 2122 3f0c1a2b-1111-2222-3333-444455556666.local 5000 typ host"
        )
        .is_mdns());
        assert!(!c("candidate:1 1 udp 2122 192.168.1.2 5000 typ host").is_mdns());
        assert!(!c("").is_mdns());
    }
}
