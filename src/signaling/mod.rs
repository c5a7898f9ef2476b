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
mod ws;

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
pub const SCHEMES: &str = "ws://, wss://, memory:";

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("bad signaling URL {url:?}: {reason} (accepted: {SCHEMES})")]
    BadUrl { url: String, reason: String },
    #[error("relay at {url} refused the connection: {reason}")]
    Refused { url: String, reason: String },
    #[error("signaling driver stopped")]
    Closed,
}

/// Options every driver understands.
#[derive(Debug, Clone, Default)]
pub struct SignalOptions {
    /// Bearer token the relay asks for (`p2p signal --token`).
    pub token: Option<String>,
}

/// What a driver reports to its user.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalEvent {
    /// A message emitted by another client to a namespace we hold.
    Message { ns: Namespace, data: Value },
    /// The transport is (again) connected and every subscription is back in
    /// place. `reconnect` is false the first time.
    Connected { reconnect: bool },
    /// The transport was lost; the driver is reconnecting by itself.
    Disconnected { reason: String },
    /// The relay reported an error about something we sent.
    RelayError(String),
}

#[derive(Debug)]
pub(crate) enum Command {
    On(Namespace),
    Off(Namespace),
    Emit(Namespace, Value),
    Close,
}

/// The commanding half of a driver. Cheap to clone; the driver stops when the
/// last clone is dropped or [`Signaling::close`] is called.
#[derive(Debug, Clone)]
pub struct Signaling {
    tx: mpsc::Sender<Command>,
}

impl Signaling {
    /// Subscribes to `ns`: messages emitted there by others arrive as
    /// [`SignalEvent::Message`].
    pub async fn on(&self, ns: Namespace) -> Result<(), SignalError> {
        self.send(Command::On(ns)).await
    }

    pub async fn off(&self, ns: Namespace) -> Result<(), SignalError> {
        self.send(Command::Off(ns)).await
    }

    pub async fn emit(&self, ns: Namespace, data: Value) -> Result<(), SignalError> {
        self.send(Command::Emit(ns, data)).await
    }

    /// Flushes what was queued before, then closes the transport.
    pub async fn close(&self) {
        let _ = self.send(Command::Close).await;
    }

    async fn send(&self, cmd: Command) -> Result<(), SignalError> {
        self.tx.send(cmd).await.map_err(|_| SignalError::Closed)
    }
}

/// Connects to the signaling service at `url`, by scheme:
/// - `ws://HOST:PORT` / `wss://…`: a `p2p signal` relay (or any relay that
///   speaks PROTOCOL.md §2);
/// - `memory:` or `memory:NAME`: an in-process hub, for tests.
///
/// A relay that cannot be reached is retried in the background (the
/// returned driver reports [`SignalEvent::Connected`] once it is); a relay
/// that refuses us (wrong token) is an error here.
pub async fn connect(
    url: &str,
    opts: SignalOptions,
) -> Result<(Signaling, mpsc::Receiver<SignalEvent>), SignalError> {
    let bad = |reason: &str| SignalError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_CAPACITY);
    if let Some(name) = url.strip_prefix("memory:") {
        memory::spawn(name, rx, ev_tx);
        return Ok((Signaling { tx }, ev_rx));
    }
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    match parsed.scheme() {
        "ws" | "wss" => {
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(bad("no host"));
            }
            ws::spawn(parsed, opts, rx, ev_tx).await?;
            Ok((Signaling { tx }, ev_rx))
        }
        "nats" | "tls" => Err(bad("NATS signaling is not built yet")),
        other => Err(bad(&format!("unknown scheme \"{other}\""))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_urls_name_the_accepted_schemes() {
        for url in ["foo://x", "not a url", "ws://", "http://localhost:8000"] {
            let err = connect(url, SignalOptions::default()).await.unwrap_err();
            let text = err.to_string();
            assert!(text.contains("ws://, wss://"), "{url}: {text}");
            assert!(!text.contains('\n'), "one line: {text}");
        }
    }
}
