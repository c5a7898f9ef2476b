//! `memory:NAME` — an in-process hub with the relay's exact routing, so
//! session logic can be tested fast and without sockets.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::mpsc;

use super::{Command, SignalEvent};
use crate::protocol::ClientFrame;
use crate::router::{ConnId, Limits, Router};

#[derive(Default)]
struct Hub {
    router: Router,
    clients: HashMap<ConnId, mpsc::Sender<SignalEvent>>,
    next_id: ConnId,
}

/// Hubs by name: every `memory:NAME` driver in the process with the same
/// NAME shares one.
static HUBS: LazyLock<Mutex<HashMap<String, Arc<Mutex<Hub>>>>> = LazyLock::new(Default::default);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Hub state is plain maps that stay consistent; a panic elsewhere while
    // holding the lock is a bug, not a reason to stop every other client.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn spawn(
    name: &str,
    mut rx: mpsc::Receiver<Command>,
    events: mpsc::Sender<SignalEvent>,
) {
    let hub = lock(&HUBS)
        .entry(name.to_owned())
        .or_insert_with(|| {
            Arc::new(Mutex::new(Hub {
                router: Router::new(Limits {
                    max_subscriptions: usize::MAX,
                    rate: 0,
                    ..Limits::default()
                }),
                ..Hub::default()
            }))
        })
        .clone();
    let conn = {
        let mut h = lock(&hub);
        h.next_id += 1;
        let id = h.next_id;
        h.router.connect(id);
        h.clients.insert(id, events.clone());
        id
    };
    let _ = events.try_send(SignalEvent::Stamp(lock(&hub).router.stamp(conn)));
    let _ = events.try_send(SignalEvent::Connected { reconnect: false });
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            let mut h = lock(&hub);
            match cmd {
                Command::On(ns) => {
                    h.router.handle(conn, ClientFrame::On(ns));
                }
                Command::Off(ns) => {
                    h.router.handle(conn, ClientFrame::Off(ns));
                }
                Command::EmitRaw(ns, body) => {
                    use base64::Engine as _;
                    let data = serde_json::Value::String(
                        base64::engine::general_purpose::STANDARD.encode(body),
                    );
                    deliver(&h, conn, ns, data);
                }
                Command::Emit(ns, data) => deliver(&h, conn, ns, data),
                Command::AddressesChanged(_) => {}
                Command::Close => break,
            }
        }
        let mut h = lock(&hub);
        h.router.disconnect(conn);
        h.clients.remove(&conn);
    });
}

fn deliver(h: &Hub, conn: ConnId, ns: crate::protocol::Namespace, data: serde_json::Value) {
    for to in h.router.subscribers(&ns, Some(conn)) {
        if let Some(tx) = h.clients.get(&to) {
            let ev = SignalEvent::Message {
                ns: ns.clone(),
                from: Some(h.router.stamp(conn)),
                data: data.clone(),
            };
            if tx.try_send(ev).is_err() {
                tracing::warn!(
                    conn = to,
                    "memory driver: client not reading, message dropped"
                );
            }
        }
    }
}
