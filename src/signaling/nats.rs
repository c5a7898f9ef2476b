//! `nats://HOST:PORT` (also `tls://`, several comma-separated) — signaling
//! over a NATS cluster (PROTOCOL.md §4): subject = hex SHA-256 of the
//! namespace, body = the JSON text (or sealed bytes with a secret), no echo.
//! async-nats reconnects with backoff and restores subscriptions itself.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::secret::subject;
use super::{Command, SignalError, SignalEvent, SignalOptions};
use crate::protocol::Namespace;

/// Options for connecting to NATS, from the URL list and `--token`.
/// How to authenticate to NATS, besides what the URL carries.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NatsAuth<'a> {
    pub token: Option<&'a str>,
    /// A `.creds` file (JWT + NKey seed), as `nsc` writes them.
    pub creds: Option<&'a std::path::Path>,
    pub ca_file: Option<&'a std::path::Path>,
}

pub(crate) async fn connect_client(
    url: &str,
    auth: NatsAuth<'_>,
    events: Option<mpsc::Sender<SignalEvent>>,
) -> Result<async_nats::Client, SignalError> {
    let bad = |reason: String| SignalError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let mut servers = Vec::new();
    let mut opts = async_nats::ConnectOptions::new()
        .name("p2p")
        .no_echo()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5));
    for part in url.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = url::Url::parse(part).map_err(|e| bad(format!("{part}: {e}")))?;
        if !matches!(parsed.scheme(), "nats" | "tls") || parsed.host_str().is_none_or(str::is_empty)
        {
            return Err(bad(format!(
                "{part}: expected nats://HOST:PORT or tls://HOST:PORT"
            )));
        }
        // nats://user:pass@host or nats://token@host
        if !parsed.username().is_empty() {
            let user = urlencoding_decode(parsed.username());
            match parsed.password() {
                Some(pass) => opts = opts.user_and_password(user, urlencoding_decode(pass)),
                None => opts = opts.token(user),
            }
        }
        let host = parsed.host_str().unwrap_or_default();
        let port = parsed.port().unwrap_or(4222);
        let scheme = parsed.scheme();
        let server: async_nats::ServerAddr = format!("{scheme}://{host}:{port}")
            .parse()
            .map_err(|e| bad(format!("{part}: {e}")))?;
        servers.push(server);
    }
    if servers.is_empty() {
        return Err(bad("no server".into()));
    }
    if let Some(t) = auth.token {
        opts = opts.token(t.to_owned());
    }
    if let Some(creds) = auth.creds {
        opts = opts.credentials_file(creds).await.map_err(|e| {
            SignalError::Config(format!("cannot use --nats-creds {}: {e}", creds.display()))
        })?;
    }
    if servers.iter().any(|s| s.tls_required()) {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = auth.ca_file {
        opts = opts.add_root_certificates(ca.to_path_buf());
    }
    if let Some(events) = events {
        let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        opts = opts.event_callback(move |event| {
            let events = events.clone();
            let first = first.clone();
            async move {
                let ev = match event {
                    async_nats::Event::Connected => {
                        let reconnect = !first.swap(false, std::sync::atomic::Ordering::Relaxed);
                        if reconnect {
                            tracing::info!("reconnected to NATS");
                        }
                        SignalEvent::Connected { reconnect }
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("lost NATS; reconnecting");
                        SignalEvent::Disconnected {
                            reason: "NATS disconnected".into(),
                        }
                    }
                    other => {
                        tracing::warn!("NATS: {other}");
                        return;
                    }
                };
                let _ = events.send(ev).await;
            }
        });
    } else {
        opts = opts.event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                other => tracing::warn!("NATS: {other}"),
            }
        });
    }
    opts.connect(servers)
        .await
        .map_err(|e| SignalError::Refused {
            url: url.to_owned(),
            reason: e.to_string(),
        })
}

/// Percent-decoding for credentials in URLs (`p%40ss` → `p@ss`).
fn urlencoding_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A NATS body as a driver event's `data`: JSON when it parses, otherwise
/// (sealed bytes) the base64 string the secret layer opens.
pub(crate) fn body_to_value(body: &[u8]) -> Value {
    match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
    }
}

/// A NATS body as the JSON text of a relay's `message` frame, the same
/// choice as [`body_to_value`] without parsing: a body that is one JSON value
/// is passed on byte for byte (only whitespace around it dropped); other
/// bytes become a base64 JSON string.
pub(crate) fn body_as_json(body: &[u8]) -> Cow<'_, str> {
    match serde_json::from_slice::<&RawValue>(body) {
        Ok(raw) => Cow::Borrowed(raw.get()),
        // The base64 alphabet needs no escaping inside a JSON string.
        Err(_) => Cow::Owned(format!(
            "\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(body)
        )),
    }
}

pub(super) async fn spawn(
    url: &str,
    opts: SignalOptions,
    mut rx: mpsc::Receiver<Command>,
    events: mpsc::Sender<SignalEvent>,
) -> Result<(), SignalError> {
    let auth = NatsAuth {
        token: opts.token.as_deref(),
        creds: opts.nats_creds.as_deref(),
        ca_file: opts.ca_file.as_deref(),
    };
    let client = connect_client(url, auth, Some(events.clone())).await?;
    tokio::spawn(async move {
        let mut subs: HashMap<Namespace, JoinHandle<()>> = HashMap::new();
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Command::On(ns) => {
                    if subs.contains_key(&ns) {
                        continue;
                    }
                    match client.subscribe(subject(&ns)).await {
                        Ok(mut sub) => {
                            let (events, ns2) = (events.clone(), ns.clone());
                            let task = tokio::spawn(async move {
                                while let Some(msg) = sub.next().await {
                                    let ev = SignalEvent::Message {
                                        ns: ns2.clone(),
                                        from: None,
                                        data: body_to_value(&msg.payload),
                                    };
                                    if events.send(ev).await.is_err() {
                                        break;
                                    }
                                }
                            });
                            subs.insert(ns, task);
                        }
                        Err(e) => tracing::warn!("NATS subscribe failed: {e}"),
                    }
                }
                Command::Off(ns) => {
                    // Dropping the subscriber unsubscribes.
                    if let Some(task) = subs.remove(&ns) {
                        task.abort();
                    }
                }
                Command::Emit(ns, data) => {
                    let body = data.to_string();
                    if let Err(e) = client.publish(subject(&ns), body.into()).await {
                        tracing::warn!("NATS publish failed: {e}");
                    }
                }
                Command::EmitRaw(ns, body) => {
                    if let Err(e) = client.publish(subject(&ns), body.into()).await {
                        tracing::warn!("NATS publish failed: {e}");
                    }
                }
                Command::AddressesChanged(_) => {
                    // The client's own pings would find a dead connection
                    // in minutes; a changed address says it now.
                    tracing::debug!("this host's addresses changed: reconnecting to NATS");
                    if let Err(e) = client.force_reconnect().await {
                        tracing::debug!("NATS reconnect: {e}");
                    }
                }
                Command::Close => break,
            }
        }
        for (_, task) in subs {
            task.abort();
        }
        let _ = client.flush().await;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(urlencoding_decode("p%40ss"), "p@ss");
        assert_eq!(urlencoding_decode("plain"), "plain");
        assert_eq!(urlencoding_decode("bad%zz"), "bad%zz");
        assert_eq!(urlencoding_decode("end%4"), "end%4");
    }

    #[test]
    fn bodies_become_values() {
        assert_eq!(body_to_value(br#"{"a":1}"#), serde_json::json!({"a":1}));
        let v = body_to_value(&[0xff, 0x00, 0x10]);
        assert_eq!(v, Value::String("/wAQ".into()));
    }

    #[test]
    fn bodies_pass_on_as_json_text_unchanged() {
        let body = r#"{"b":1, "a":[9007199254740993,"\u00e9"]}"#;
        assert_eq!(body_as_json(format!(" {body}\n").as_bytes()), body);
        for sealed in [&[0xff, 0x00, 0x10][..], b"{\"a\":", b"1 2"] {
            assert_eq!(
                body_as_json(sealed),
                body_to_value(sealed).to_string(),
                "{sealed:?}"
            );
        }
    }
}
