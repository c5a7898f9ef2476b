//! Relays sharing rooms through NATS (`p2p signal --nats`).
//!
//! A relay subscribes on NATS only to the namespaces its own clients hold,
//! and drops the subscription when the last of them leaves, so no relay
//! receives the whole world's traffic. Messages its clients emit are
//! published under the same subjects the `nats://` driver uses (hex SHA-256
//! of the namespace, JSON body), so relay clients and NATS clients meet too.
//! `data` crosses byte for byte both ways, as it does through one relay.
//! What comes from NATS carries no `from`: any NATS client could write
//! any header, so no stamp is passed on that the relay cannot vouch for.
//!
//! The bridge knows nothing of the server that owns it: it hands what
//! arrives from NATS to a [`Deliver`], which the server implements.

use std::collections::HashMap;
use std::sync::Weak;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::protocol::Namespace;
use crate::router::message_frame;
use crate::signaling::nats::{body_as_json, connect_client, NatsAuth};
use crate::signaling::secret::subject;

/// Commands queued for the bridge: subscription changes and publications.
/// Generous, since a burst of emits from many clients lands here at once;
/// past it, messages are dropped with a warning rather than block the hub.
const BRIDGE_QUEUE: usize = 16 * 1024;

enum Cmd {
    Sub(Namespace),
    Unsub(Namespace),
    Pub(Namespace, Bytes),
}

/// Where messages from NATS go: to this relay's own subscribers of `ns`.
pub(super) trait Deliver: Send + Sync + 'static {
    /// Queues `frame`, a `message` frame, for every local subscriber of
    /// `ns`. Called from the bridge's tasks, never with the hub locked.
    fn deliver(&self, ns: &Namespace, frame: Utf8Bytes);
}

/// Queues bridge work from inside the hub's lock, without waiting.
pub(super) struct BridgeHandle {
    tx: mpsc::Sender<Cmd>,
}

impl BridgeHandle {
    fn send(&self, cmd: Cmd) {
        if self.tx.try_send(cmd).is_err() {
            tracing::warn!("NATS bridge is behind: a message or subscription change was dropped");
        }
    }

    pub(super) fn subscribe(&self, ns: Namespace) {
        self.send(Cmd::Sub(ns));
    }

    pub(super) fn unsubscribe(&self, ns: Namespace) {
        self.send(Cmd::Unsub(ns));
    }

    /// Publishes `body`, the JSON text of an emitted `data`.
    pub(super) fn publish(&self, ns: Namespace, body: Bytes) {
        self.send(Cmd::Pub(ns, body));
    }
}

/// Connects to NATS. Messages for namespaces the bridge is subscribed to go
/// to `relay` for as long as it lives.
pub(super) async fn start<D: Deliver>(
    url: &str,
    creds: Option<std::path::PathBuf>,
    relay: Weak<D>,
) -> anyhow::Result<BridgeHandle> {
    let auth = NatsAuth {
        creds: creds.as_deref(),
        ..NatsAuth::default()
    };
    let client = connect_client(url, auth, None).await?;
    let (tx, mut rx) = mpsc::channel(BRIDGE_QUEUE);
    tokio::spawn(async move {
        let mut subs: HashMap<Namespace, JoinHandle<()>> = HashMap::new();
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Sub(ns) => {
                    if subs.contains_key(&ns) {
                        continue;
                    }
                    let mut sub = match client.subscribe(subject(&ns)).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("NATS subscribe failed: {e}");
                            continue;
                        }
                    };
                    let (relay, ns2) = (relay.clone(), ns.clone());
                    subs.insert(
                        ns,
                        tokio::spawn(async move {
                            while let Some(msg) = sub.next().await {
                                let Some(relay) = relay.upgrade() else { return };
                                // A NATS client's body is JSON; sealed bytes
                                // become a base64 string, as on a relay.
                                let body = body_as_json(&msg.payload);
                                let (frame, _) = message_frame(&ns2, None, &body);
                                relay.deliver(&ns2, Utf8Bytes::from(frame));
                            }
                        }),
                    );
                }
                Cmd::Unsub(ns) => {
                    if let Some(task) = subs.remove(&ns) {
                        task.abort();
                    }
                }
                Cmd::Pub(ns, body) => {
                    if let Err(e) = client.publish(subject(&ns), body).await {
                        tracing::warn!("NATS publish failed: {e}");
                    }
                }
            }
        }
    });
    Ok(BridgeHandle { tx })
}
