//! Room tokens: what one connection to the relay may do.
//!
//! With `p2p signal --token-secret KEY`, every client presents a signed,
//! expiring token (a JWT, HS256, as LiveKit's access tokens are) that
//! names one room and a role. The relay lets a connection hold and emit to
//! that room's namespaces only, and only on its side: a subscriber cannot
//! act as a sender, so a token handed to viewers cannot publish. `p2p
//! signal token` mints them; a web backend can mint the same with any JWT
//! library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::protocol::Namespace;

/// What a token lets its holder be in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A sender (`p2p send`, a publishing page).
    Publish,
    /// A receiver (`p2p receive`, a watching page).
    Subscribe,
    /// Either.
    Both,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Both => "publish and subscribe",
        })
    }
}

impl Role {
    fn publishes(self) -> bool {
        matches!(self, Self::Publish | Self::Both)
    }

    fn subscribes(self) -> bool {
        matches!(self, Self::Subscribe | Self::Both)
    }
}

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub room: String,
    pub role: Role,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// Why a namespace is refused, said to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("this connection's token is for room {room:?} to {role}: not for {ns}")]
pub struct Denied {
    room: String,
    role: Role,
    ns: String,
}

impl Grant {
    /// May the holder subscribe to `ns`? A sender listens on the sender
    /// side of its room, a receiver on the receiver side.
    pub fn check_listen(&self, ns: &Namespace) -> Result<(), Denied> {
        self.check(ns, |side| match side {
            "sender" => self.role.publishes(),
            "receiver" => self.role.subscribes(),
            _ => false,
        })
    }

    /// May the holder emit to `ns`? A sender speaks to receivers, a
    /// receiver to senders.
    pub fn check_emit(&self, ns: &Namespace) -> Result<(), Denied> {
        self.check(ns, |side| match side {
            "receiver" => self.role.publishes(),
            "sender" => self.role.subscribes(),
            _ => false,
        })
    }

    fn check(&self, ns: &Namespace, side_ok: impl Fn(&str) -> bool) -> Result<(), Denied> {
        let ok = match ns.parts() {
            [side, room] | [side, room, _] => *room == self.room && side_ok(side),
            _ => false,
        };
        if ok {
            return Ok(());
        }
        Err(Denied {
            room: self.room.clone(),
            role: self.role,
            ns: ns.joined(),
        })
    }
}

/// Signs and checks tokens with one key.
#[derive(Clone)]
pub struct Issuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Issuer(…)")
    }
}

impl Issuer {
    pub fn new(secret: &str) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A token for `room` as `role`, valid `ttl` from `now`.
    pub fn mint(&self, room: &str, role: Role, ttl: Duration, now: SystemTime) -> String {
        let exp = now
            .checked_add(ttl)
            .unwrap_or(now)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let grant = Grant {
            room: room.to_owned(),
            role,
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &grant, &self.encoding)
            .expect("HS256 signs any claims")
    }

    /// The grant a token carries, if it is ours and has not expired.
    pub fn check(&self, token: &str) -> Result<Grant, String> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.required_spec_claims = ["exp".to_owned()].into();
        let grant = jsonwebtoken::decode::<Grant>(token, &self.decoding, &v)
            .map(|t| t.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".to_owned(),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "token not signed with this relay's --token-secret".to_owned()
                }
                _ => format!("not a room token: {e}"),
            })?;
        // Expired from its `exp` second on, as a connection holding it is
        // closed then (the library allows that second too).
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if grant.exp <= now {
            return Err("token expired".to_owned());
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(parts: &[&str]) -> Namespace {
        Namespace::new(parts.iter().copied()).unwrap()
    }

    #[test]
    fn a_subscriber_acts_only_as_a_receiver_in_its_room() {
        let g = Grant {
            room: "demo".into(),
            role: Role::Subscribe,
            exp: 0,
        };
        assert!(g.check_listen(&ns(&["receiver", "demo"])).is_ok());
        assert!(g.check_listen(&ns(&["receiver", "demo", "me"])).is_ok());
        assert!(g.check_emit(&ns(&["sender", "demo"])).is_ok());
        assert!(g.check_emit(&ns(&["sender", "demo", "s1"])).is_ok());
        // Not a sender: it cannot hear invokes or speak to receivers.
        assert!(g.check_listen(&ns(&["sender", "demo"])).is_err());
        assert!(g.check_emit(&ns(&["receiver", "demo", "r2"])).is_err());
        // Not another room, nor anything else.
        assert!(g.check_listen(&ns(&["receiver", "other"])).is_err());
        assert!(g.check_emit(&ns(&["sender", "demo", "s1", "x"])).is_err());
        assert!(g.check_listen(&ns(&["0123abcd"])).is_err());
        let e = g.check_listen(&ns(&["sender", "demo"])).unwrap_err();
        assert!(e.to_string().contains("room \"demo\""), "{e}");
    }

    #[test]
    fn a_publisher_acts_only_as_a_sender_and_both_as_either() {
        let p = Grant {
            room: "demo".into(),
            role: Role::Publish,
            exp: 0,
        };
        assert!(p.check_listen(&ns(&["sender", "demo", "me"])).is_ok());
        assert!(p.check_emit(&ns(&["receiver", "demo"])).is_ok());
        assert!(p.check_listen(&ns(&["receiver", "demo"])).is_err());
        assert!(p.check_emit(&ns(&["sender", "demo"])).is_err());
        let b = Grant {
            role: Role::Both,
            ..p
        };
        for side in ["sender", "receiver"] {
            assert!(b.check_listen(&ns(&[side, "demo"])).is_ok());
            assert!(b.check_emit(&ns(&[side, "demo"])).is_ok());
        }
    }

    #[test]
    fn tokens_are_checked_for_key_and_expiry() {
        let now = SystemTime::now();
        let issuer = Issuer::new("k1");
        let t = issuer.mint("demo", Role::Publish, Duration::from_secs(3600), now);
        let g = issuer.check(&t).unwrap();
        assert_eq!((g.room.as_str(), g.role), ("demo", Role::Publish));
        let other = Issuer::new("k2");
        assert!(other.check(&t).unwrap_err().contains("--token-secret"));
        let old = now - Duration::from_secs(7200);
        let expired = issuer.mint("demo", Role::Both, Duration::from_secs(60), old);
        assert_eq!(issuer.check(&expired).unwrap_err(), "token expired");
        assert!(issuer
            .check("not-a-jwt")
            .unwrap_err()
            .starts_with("not a room token"));
    }
}
