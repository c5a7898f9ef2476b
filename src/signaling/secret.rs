//! End-to-end encrypted signaling (PROTOCOL.md §3): namespaces hashed,
//! payloads sealed with AES-256-GCM under SHA-256(secret), so the relay or
//! broker learns neither room names nor SDP. It still sees timing, sizes and
//! who talks to which hashed namespace.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::protocol::Namespace;

const IV_LEN: usize = 12;
/// GCM's authentication tag, appended to the ciphertext.
const TAG_LEN: usize = 16;

/// Lowercase hex SHA-256 of `ns.join(":")`: the NATS subject, and the one
/// namespace string a secret-holding client uses on a relay.
pub fn subject(ns: &Namespace) -> String {
    hex(&Sha256::digest(ns.joined().as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("message too short to be encrypted")]
    TooShort,
    #[error("not base64")]
    NotBase64,
    #[error("decryption failed (wrong --secret, or tampered)")]
    Decrypt,
    #[error("decrypted message is not JSON: {0}")]
    NotJson(String),
}

/// A shared secret, ready to seal and open messages.
#[derive(Clone)]
pub struct Secret {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)") // never print key material
    }
}

impl Secret {
    pub fn new(secret: &str) -> Self {
        let key = Sha256::digest(secret.as_bytes());
        Self {
            cipher: Aes256Gcm::new(&key),
        }
    }

    /// The namespace a relay sees: one string, the hash.
    pub fn hashed(&self, ns: &Namespace) -> Namespace {
        // A 64-character hex string is a valid one-part namespace.
        Namespace::new([subject(ns)]).expect("a hex digest is a non-empty string")
    }

    /// IV ‖ ciphertext ‖ tag, with a fresh random IV.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut iv = [0u8; IV_LEN];
        rand::rng().fill_bytes(&mut iv);
        self.seal_with_iv(plaintext, iv)
    }

    fn seal_with_iv(&self, plaintext: &[u8], iv: [u8; IV_LEN]) -> Vec<u8> {
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&iv), plaintext)
            // AES-GCM encryption fails only past 64 GiB per message.
            .expect("AES-GCM encryption of a signaling message");
        let mut out = Vec::with_capacity(IV_LEN + ct.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, wire: &[u8]) -> Result<Vec<u8>, OpenError> {
        if wire.len() < IV_LEN + TAG_LEN {
            return Err(OpenError::TooShort);
        }
        let (iv, ct) = wire.split_at(IV_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(iv), ct)
            .map_err(|_| OpenError::Decrypt)
    }

    /// A JSON value sealed and base64-encoded: the `data` of a WebSocket
    /// frame.
    pub fn seal_value(&self, value: &serde_json::Value) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.seal(value.to_string().as_bytes()))
    }

    /// The inverse of [`Secret::seal_value`].
    pub fn open_value(&self, data: &serde_json::Value) -> Result<serde_json::Value, OpenError> {
        let text = data.as_str().ok_or(OpenError::NotBase64)?;
        let wire = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| OpenError::NotBase64)?;
        self.open_json(&wire)
    }

    /// Opens raw sealed bytes (a NATS body) into JSON.
    pub fn open_json(&self, wire: &[u8]) -> Result<serde_json::Value, OpenError> {
        let plain = self.open(wire)?;
        serde_json::from_slice(&plain).map_err(|e| OpenError::NotJson(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The shared vectors, computed with WebCrypto (PROTOCOL.md §3/§4).
    fn vectors() -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/e2e.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("tests/vectors/e2e.json"))
            .unwrap()
    }

    #[test]
    fn subjects_match_the_vectors() {
        let v = vectors();
        for case in v["namespaces"].as_array().unwrap() {
            let parts: Vec<String> = serde_json::from_value(case["ns"].clone()).unwrap();
            let ns = Namespace::new(parts).unwrap();
            assert_eq!(ns.joined(), case["joined"].as_str().unwrap());
            assert_eq!(subject(&ns), case["subject"].as_str().unwrap(), "{ns}");
        }
    }

    #[test]
    fn payloads_open_and_seal_like_webcrypto() {
        let v = vectors();
        for case in v["payloads"].as_array().unwrap() {
            let secret = Secret::new(case["secret"].as_str().unwrap());
            let key = Sha256::digest(case["secret"].as_str().unwrap().as_bytes());
            assert_eq!(hex(&key), case["key_sha256_hex"].as_str().unwrap());
            let wire = from_hex(case["wire_hex"].as_str().unwrap());
            let plain = secret.open(&wire).expect("vector decrypts");
            assert_eq!(plain, case["plaintext"].as_str().unwrap().as_bytes());
            // Our sealing with the same IV gives the same bytes.
            let iv: [u8; IV_LEN] = from_hex(case["iv_hex"].as_str().unwrap())
                .try_into()
                .unwrap();
            assert_eq!(secret.seal_with_iv(&plain, iv), wire);
            // And the base64 form is what travels over WebSocket.
            let b64 = serde_json::Value::String(case["wire_base64"].as_str().unwrap().into());
            let value = secret.open_value(&b64).unwrap();
            assert_eq!(value.to_string().len(), plain.len());
            // Round trip with a random IV.
            let sealed = secret.seal_value(&value);
            assert_eq!(
                secret
                    .open_value(&serde_json::Value::String(sealed))
                    .unwrap(),
                value
            );
        }
    }

    #[test]
    fn tampered_and_wrong_key_messages_fail() {
        let v = vectors();
        for case in v["must_fail"].as_array().unwrap() {
            let secret = Secret::new(case["secret"].as_str().unwrap());
            let wire = from_hex(case["wire_hex"].as_str().unwrap());
            assert!(secret.open(&wire).is_err(), "{}", case["why"]);
        }
        let s = Secret::new("x");
        assert_eq!(s.open(&[0u8; 5]), Err(OpenError::TooShort));
        assert_eq!(
            s.open_value(&serde_json::json!("%%%")),
            Err(OpenError::NotBase64)
        );
        assert!(format!("{s:?}").contains(".."), "no key in Debug");
    }
}
