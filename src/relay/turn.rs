//! Time-limited TURN credentials, as coturn checks them with
//! `use-auth-secret` / `static-auth-secret` (the "TURN REST API" scheme):
//! the username is `EXPIRY:NAME` (EXPIRY in Unix seconds) and the password
//! is base64(HMAC-SHA1(secret, username)). The relay shares the secret with
//! the TURN server and hands each client its own pair, so no client ever
//! holds a long-lived TURN password. Pure: the clock is passed in.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac as _};

use crate::protocol::IceServerJson;

/// Issues credentials for the TURN servers that share `secret`.
#[derive(Clone)]
pub struct TurnIssuer {
    secret: String,
    urls: Vec<String>,
    ttl: Duration,
}

impl std::fmt::Debug for TurnIssuer {
    // The secret stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnIssuer")
            .field("urls", &self.urls)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TurnIssuer {
    /// `urls` are `turn:`/`turns:`/`stun:` URLs without credentials.
    pub fn new(secret: String, urls: Vec<String>, ttl: Duration) -> anyhow::Result<Self> {
        if secret.is_empty() {
            anyhow::bail!("--turn-secret must not be empty");
        }
        if urls.is_empty() {
            anyhow::bail!(
                "--turn-secret needs --turn-url turn:HOST:PORT (the TURN server that shares it)"
            );
        }
        for u in &urls {
            let scheme = u.split(':').next().unwrap_or_default();
            if !matches!(scheme, "turn" | "turns" | "stun" | "stuns") || !u.contains(':') {
                anyhow::bail!(
                    "bad --turn-url {u:?}: expected turn:HOST:PORT, turn:HOST:PORT?transport=tcp or turns:HOST:PORT"
                );
            }
            if u.contains('@') {
                anyhow::bail!("bad --turn-url {u:?}: no USER:PASS@ here, the relay derives them from --turn-secret");
            }
        }
        if ttl < Duration::from_secs(60) {
            anyhow::bail!("--turn-ttl must be at least 60 seconds");
        }
        Ok(Self { secret, urls, ttl })
    }

    /// How long issued credentials stay valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Fresh credentials for `name`, valid for the TTL from `now_unix`.
    pub fn issue(&self, now_unix: u64, name: &str) -> IceServerJson {
        let username = format!("{}:{name}", now_unix + self.ttl.as_secs());
        IceServerJson {
            urls: self.urls.clone(),
            credential: Some(password(&self.secret, &username)),
            username: Some(username),
        }
    }
}

/// base64(HMAC-SHA1(secret, username)): what coturn computes to check a
/// `use-auth-secret` username.
pub fn password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_base64_hmac_sha1_of_the_username() {
        // Reference value from Python, independently of this code:
        // base64.b64encode(hmac.new(b"north", b"1700000000:alice",
        // hashlib.sha1).digest())
        assert_eq!(
            password("north", "1700000000:alice"),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        );
    }

    #[test]
    fn issued_username_carries_the_expiry() {
        let issuer = TurnIssuer::new(
            "s".into(),
            vec!["turn:10.0.0.1:3478".into()],
            Duration::from_secs(3600),
        )
        .unwrap();
        let c = issuer.issue(1_000, "p2p");
        assert_eq!(c.username.as_deref(), Some("4600:p2p"));
        assert_eq!(
            c.credential.as_deref(),
            Some(password("s", "4600:p2p").as_str())
        );
        assert_eq!(c.urls, vec!["turn:10.0.0.1:3478".to_owned()]);
    }

    #[test]
    fn bad_settings_are_refused_with_what_to_fix() {
        let ttl = Duration::from_secs(3600);
        let e = TurnIssuer::new("s".into(), vec![], ttl).unwrap_err();
        assert!(e.to_string().contains("--turn-url"), "{e}");
        let e = TurnIssuer::new("s".into(), vec!["http://x".into()], ttl).unwrap_err();
        assert!(e.to_string().contains("turn:HOST:PORT"), "{e}");
        let e = TurnIssuer::new("s".into(), vec!["turn:u:p@h:1".into()], ttl).unwrap_err();
        assert!(e.to_string().contains("USER:PASS"), "{e}");
        let e = TurnIssuer::new("".into(), vec!["turn:h:1".into()], ttl).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn the_secret_stays_out_of_debug_output() {
        let issuer = TurnIssuer::new(
            "hunter2".into(),
            vec!["turn:h:1".into()],
            Duration::from_secs(3600),
        )
        .unwrap();
        assert!(!format!("{issuer:?}").contains("hunter2"));
    }
}
