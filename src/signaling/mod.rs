//! Signaling drivers: the seed library's `on` / `off` / `emit` contract, over
//! any transport.
//!
//! A driver is a [`Signaling`] handle (commands down) and a stream of
//! [`SignalEvent`]s (messages and connection status up). The session layer
//! uses only these two and never learns the transport. [`connect`] picks the
//! driver by the URL's scheme.
//!
//! Every driver keeps the relay's rules: a message reaches every *other*
//! client subscribed to exactly its namespace, in emit order.

mod memory;
pub(crate) mod nats;
pub mod secret;
mod ws;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::protocol::Namespace;

/// Commands queued from the session to a driver. Signaling is a trickle of
/// small messages; 256 covers a burst of candidates for dozens of peers
/// without letting a stalled transport buffer without bound.
const COMMAND_CAPACITY: usize = 256;

/// Events queued from a driver to the session, same reasoning.
const EVENT_CAPACITY: usize = 1024;

/// The URL schemes [`connect`] accepts, for error messages and `--help`.
pub const SCHEMES: &str = "ws://, wss://, nats://, tls:// (NATS), memory:";

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("bad signaling URL {url:?}: {reason} (accepted: {SCHEMES})")]
    BadUrl { url: String, reason: String },
    #[error("relay at {url} refused the connection: {reason}")]
    Refused { url: String, reason: String },
    #[error("{0}")]
    Config(String),
    #[error("signaling driver stopped")]
    Closed,
}

/// Options every driver understands.
#[derive(Debug, Clone, Default)]
pub struct SignalOptions {
    /// Bearer token the relay asks for (`p2p signal --token`), or the NATS
    /// token.
    pub token: Option<String>,
    /// End-to-end secret (PROTOCOL.md §3): namespaces hashed, payloads
    /// sealed; the relay or broker sees neither.
    pub secret: Option<String>,
    /// An extra CA certificate (PEM) to trust for TLS.
    pub ca_file: Option<std::path::PathBuf>,
    /// NATS credentials file (JWT + NKey).
    pub nats_creds: Option<std::path::PathBuf>,
}

/// What a driver reports to its user.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalEvent {
    /// A message emitted by another client to a namespace we hold; `from`
    /// is the name the relay gave that client's connection, where the
    /// transport says (a `p2p signal` relay, the memory driver; not NATS).
    Message {
        ns: Namespace,
        from: Option<String>,
        data: Value,
    },
    /// The transport is (again) connected and every subscription is back in
    /// place. `reconnect` is false the first time.
    Connected { reconnect: bool },
    /// The transport was lost; the driver is reconnecting by itself.
    Disconnected { reason: String },
    /// The relay's name for our connection (what it stamps our messages
    /// with), after each (re)connection, where the transport says.
    Stamp(String),
    /// The relay reported an error about something we sent.
    RelayError(String),
    /// The relay handed us ICE servers with credentials of our own
    /// (`p2p signal --turn-secret`): they replace any it sent before.
    IceServers(Vec<crate::protocol::IceServerJson>),
}

#[derive(Debug)]
pub(crate) enum Command {
    On(Namespace),
    Off(Namespace),
    Emit(Namespace, Value),
    /// Sealed bytes as the raw body (NATS with a secret).
    EmitRaw(Namespace, Vec<u8>),
    /// This host's addresses changed; these are the ones it has now. A
    /// connection from an address that went away is dead: it is made
    /// again at once, not when a heartbeat finally misses.
    AddressesChanged(Vec<std::net::IpAddr>),
    Close,
}

/// The commanding half of a driver. Cheap to clone; the driver stops when the
/// last clone is dropped or [`Signaling::close`] is called.
#[derive(Debug, Clone)]
pub struct Signaling {
    tx: mpsc::Sender<Command>,
    seal: Option<Seal>,
}

/// How a secret changes what goes out.
#[derive(Debug, Clone)]
struct Seal {
    secret: Arc<secret::Secret>,
    /// On a relay, namespaces are hashed here; NATS hashes every subject
    /// itself.
    hash_namespaces: bool,
}

impl Signaling {
    /// Subscribes to `ns`: messages emitted there by others arrive as
    /// [`SignalEvent::Message`].
    pub async fn on(&self, ns: Namespace) -> Result<(), SignalError> {
        let ns = self.namespace(ns);
        self.send(Command::On(ns)).await
    }

    pub async fn off(&self, ns: Namespace) -> Result<(), SignalError> {
        let ns = self.namespace(ns);
        self.send(Command::Off(ns)).await
    }

    /// This host's addresses changed to `now`: a driver whose connection
    /// left from an address that is gone reconnects at once.
    pub async fn addresses_changed(&self, now: Vec<std::net::IpAddr>) {
        let _ = self.send(Command::AddressesChanged(now)).await;
    }

    pub async fn emit(&self, ns: Namespace, data: Value) -> Result<(), SignalError> {
        let cmd = match &self.seal {
            None => Command::Emit(ns, data),
            Some(s) if s.hash_namespaces => Command::Emit(
                s.secret.hashed(&ns),
                Value::String(s.secret.seal_value(&data)),
            ),
            Some(s) => Command::EmitRaw(ns, s.secret.seal(data.to_string().as_bytes())),
        };
        self.send(cmd).await
    }

    fn namespace(&self, ns: Namespace) -> Namespace {
        match &self.seal {
            Some(s) if s.hash_namespaces => s.secret.hashed(&ns),
            _ => ns,
        }
    }

    /// Flushes what was queued before, then closes the transport.
    pub async fn close(&self) {
        let _ = self.send(Command::Close).await;
    }

    async fn send(&self, cmd: Command) -> Result<(), SignalError> {
        self.tx.send(cmd).await.map_err(|_| SignalError::Closed)
    }
}

/// A relay given as `HOST:PORT` (or `HOST`), with no scheme, is reached
/// over `ws://`, as the default one is. (Parsed as it is, `127.0.0.1:8000`
/// was "relative URL without a base" and `localhost:8000` the unknown
/// scheme `localhost`.)
fn with_scheme(url: &str) -> std::borrow::Cow<'_, str> {
    if url.contains("://") || url.starts_with("memory:") {
        url.into()
    } else {
        format!("ws://{url}").into()
    }
}

/// Checks a signaling URL without connecting, so a bad one is refused with
/// the other unusable options, before anything starts.
pub fn check_url(url: &str) -> Result<(), SignalError> {
    let full = with_scheme(url);
    let url = full.as_ref();
    if url.starts_with("memory:") || url.starts_with("nats://") || url.starts_with("tls://") {
        return Ok(());
    }
    relay_url(url).map(drop)
}

/// A `ws://` or `wss://` relay URL with a host.
fn relay_url(url: &str) -> Result<url::Url, SignalError> {
    let bad = |reason: &str| SignalError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    match parsed.scheme() {
        "ws" | "wss" if parsed.host_str().is_none_or(str::is_empty) => Err(bad("no host")),
        "ws" | "wss" => Ok(parsed),
        other => Err(bad(&format!("unknown scheme \"{other}\""))),
    }
}

/// Connects to the signaling service at `url`, by scheme:
/// - `ws://HOST:PORT` / `wss://…`: a `p2p signal` relay (or any relay that
///   speaks PROTOCOL.md §2); `HOST:PORT` alone means `ws://HOST:PORT`;
/// - `memory:` or `memory:NAME`: an in-process hub, for tests.
///
/// A relay that cannot be reached is retried in the background (the
/// returned driver reports [`SignalEvent::Connected`] once it is); a relay
/// that refuses us (wrong token) is an error here.
pub async fn connect(
    url: &str,
    opts: SignalOptions,
) -> Result<(Signaling, mpsc::Receiver<SignalEvent>), SignalError> {
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_CAPACITY);
    let secret = opts
        .secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(secret::Secret::new);
    let hash_namespaces;
    let full = with_scheme(url);
    let url = full.as_ref();
    if let Some(name) = url.strip_prefix("memory:") {
        memory::spawn(name, rx, ev_tx);
        hash_namespaces = true;
    } else {
        let scheme = url.split("://").next().unwrap_or_default();
        match scheme {
            "nats" | "tls" => {
                nats::spawn(url, opts.clone(), rx, ev_tx).await?;
                hash_namespaces = false;
            }
            _ => {
                ws::spawn(relay_url(url)?, opts, rx, ev_tx).await?;
                hash_namespaces = true;
            }
        }
    }
    let Some(secret) = secret else {
        return Ok((Signaling { tx, seal: None }, ev_rx));
    };
    let secret = Arc::new(secret);
    let opened = open_events(secret.clone(), ev_rx);
    Ok((
        Signaling {
            tx,
            seal: Some(Seal {
                secret,
                hash_namespaces,
            }),
        },
        opened,
    ))
}

/// Failures to decrypt are reported at most this often: a stranger (or a
/// peer with another secret) must not flood the logs.
const DECRYPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// Decrypts incoming messages; what does not decrypt is dropped, never
/// delivered.
fn open_events(
    secret: Arc<secret::Secret>,
    mut raw: mpsc::Receiver<SignalEvent>,
) -> mpsc::Receiver<SignalEvent> {
    let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
    tokio::spawn(async move {
        let mut dropped = 0u64;
        let mut last_warn: Option<Instant> = None;
        while let Some(ev) = raw.recv().await {
            let ev = match ev {
                SignalEvent::Message { ns, from, data } => match secret.open_value(&data) {
                    Ok(data) => SignalEvent::Message { ns, from, data },
                    Err(e) => {
                        dropped += 1;
                        if last_warn.is_none_or(|t| t.elapsed() >= DECRYPT_WARN_EVERY) {
                            tracing::warn!(
                                "dropped {dropped} signaling message(s) that did not decrypt: {e} (do both sides use the same --secret?)"
                            );
                            last_warn = Some(Instant::now());
                            dropped = 0;
                        }
                        continue;
                    }
                },
                other => other,
            };
            if tx.send(ev).await.is_err() {
                break;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_without_a_scheme_is_reached_over_ws() {
        assert_eq!(with_scheme("127.0.0.1:8000"), "ws://127.0.0.1:8000");
        assert_eq!(with_scheme("localhost:8000"), "ws://localhost:8000");
        assert_eq!(with_scheme("relay.lan"), "ws://relay.lan");
        for kept in [
            "ws://h:1",
            "wss://h",
            "nats://h:4222",
            "memory:",
            "memory:x",
        ] {
            assert_eq!(with_scheme(kept), kept);
        }
    }

    #[tokio::test]
    async fn bad_urls_name_the_accepted_schemes() {
        for url in [
            "foo://x",
            "not a url",
            "ws://",
            "http://localhost:8000",
            "nats://",
        ] {
            let err = connect(url, SignalOptions::default()).await.unwrap_err();
            let text = err.to_string();
            assert!(text.contains("ws://, wss://"), "{url}: {text}");
            assert!(!text.contains('\n'), "one line: {text}");
        }
    }
}
