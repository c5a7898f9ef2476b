//! `ws://` / `wss://` — a client of `p2p signal` (PROTOCOL.md §2).
//!
//! One task owns the socket. It keeps the set of subscriptions, so that after
//! the relay goes away it reconnects with backoff and puts every
//! subscription back before reporting [`SignalEvent::Connected`].

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use super::{Command, SignalError, SignalEvent, SignalOptions};
use crate::protocol::{ClientFrame, Namespace, ServerFrame};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Frames kept while the relay is unreachable, sent once it is back. Older
/// ones are dropped first: signaling is re-driven by pings anyway, and the
/// newest messages (candidates, answers) are the ones still worth having.
const PENDING_CAPACITY: usize = 256;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// At most this between attempts: a relay that comes back (or a link
/// that heals) is found within it, in time for connections that lost
/// their path to restart before they are given up
/// ([`crate::session::machine::RESTART_GIVE_UP`]).
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How long a connection attempt may take: the first, before we go on and
/// retry in the background, and each retry (a relay that accepts TCP but
/// never answers, stopped or overloaded, would hold a retry forever).
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A WebSocket ping goes to the relay this often, so a connection that
/// died without a word (an address that changed, a NAT that forgot it, a
/// relay frozen) is found: TCP alone would wait for minutes.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// Nothing heard from the relay for this long (not even a pong) and the
/// connection is given up and made again. Three heartbeats: one lost
/// pong on a busy link does not cut it.
const SILENT_FOR: Duration = Duration::from_secs(6);

struct Driver {
    url: Url,
    opts: SignalOptions,
    rx: mpsc::Receiver<Command>,
    events: mpsc::Sender<SignalEvent>,
    subs: BTreeSet<Namespace>,
    pending: VecDeque<String>,
    dropped: usize,
    /// The relay's secret for taking our connection's name back after we
    /// reconnect (PROTOCOL.md §2), so peers keep taking our messages.
    resume: Option<String>,
}

enum Attempt {
    Connected(Box<Socket>),
    /// Refused for good (HTTP 401/403): retrying will not help.
    Refused(String),
    Failed(String),
}

pub(super) async fn spawn(
    url: Url,
    opts: SignalOptions,
    rx: mpsc::Receiver<Command>,
    events: mpsc::Sender<SignalEvent>,
) -> Result<(), SignalError> {
    let driver = Driver {
        url,
        opts,
        rx,
        events,
        subs: BTreeSet::new(),
        pending: VecDeque::new(),
        dropped: 0,
        resume: None,
    };
    let first = match tokio::time::timeout(FIRST_CONNECT_TIMEOUT, driver.attempt()).await {
        Ok(a) => a,
        Err(_) => Attempt::Failed("timed out".into()),
    };
    let first = match first {
        Attempt::Refused(reason) => {
            return Err(SignalError::Refused {
                url: driver.url.to_string(),
                reason,
            })
        }
        Attempt::Connected(socket) => Some(socket),
        Attempt::Failed(reason) => {
            tracing::warn!(
                "cannot reach the relay at {}: {reason}; retrying in the background (is `p2p signal` running there?)",
                driver.url
            );
            // The session shows it, and gives up after its timeout.
            let _ = driver
                .events
                .send(SignalEvent::Disconnected { reason })
                .await;
            None
        }
    };
    tokio::spawn(driver.run(first));
    Ok(())
}

impl Driver {
    async fn attempt(&self) -> Attempt {
        // Ask for ICE servers with credentials of our own (PROTOCOL.md §2):
        // a relay with --turn-secret sends them first; others ignore this.
        // And for our own `from`, which proves to a `--verify` sender that
        // a proof of our credentials was made for this connection.
        let mut url = self.url.clone();
        url.query_pairs_mut()
            .append_pair("ice", "1")
            .append_pair("stamp", "1");
        if let Some(token) = &self.resume {
            url.query_pairs_mut().append_pair("resume", token);
        }
        let mut request = match url.as_str().into_client_request() {
            Ok(r) => r,
            Err(e) => return Attempt::Refused(e.to_string()),
        };
        if let Some(token) = &self.opts.token {
            match HeaderValue::from_str(&format!("Bearer {token}")) {
                Ok(v) => {
                    request.headers_mut().insert("authorization", v);
                }
                Err(_) => return Attempt::Refused("token is not a valid header value".into()),
            }
        }
        let connector = match self.tls_connector() {
            Ok(c) => c,
            Err(e) => return Attempt::Refused(e),
        };
        match tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector).await
        {
            Ok((socket, _)) => Attempt::Connected(Box::new(socket)),
            Err(tungstenite::Error::Http(resp))
                if matches!(
                    resp.status(),
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                ) =>
            {
                Attempt::Refused(format!(
                    "HTTP {}: wrong or missing --token",
                    resp.status().as_u16()
                ))
            }
            Err(e @ tungstenite::Error::Tls(_)) => Attempt::Refused(format!(
                "TLS: {e} (a self-signed relay? pass its CA with --ca-file)"
            )),
            // rustls reports a certificate it does not trust through IO.
            Err(tungstenite::Error::Io(e))
                if e.get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
                    || e.to_string().contains("certificate") =>
            {
                Attempt::Refused(format!(
                    "TLS: {e} (a self-signed relay? pass its CA with --ca-file)"
                ))
            }
            Err(e) => Attempt::Failed(e.to_string()),
        }
    }

    /// With `--ca-file`, trust that CA besides the usual public roots.
    fn tls_connector(&self) -> Result<Option<tokio_tungstenite::Connector>, String> {
        let Some(path) = &self.opts.ca_file else {
            return Ok(None);
        };
        Ok(Some(tokio_tungstenite::Connector::Rustls(
            crate::tls::client_config(Some(path))?,
        )))
    }

    async fn run(mut self, mut socket: Option<Box<Socket>>) {
        let mut backoff = BACKOFF_MIN;
        let mut connected_before = false;
        loop {
            if let Some(s) = socket.take() {
                backoff = BACKOFF_MIN;
                match self.session(*s, connected_before).await {
                    Ok(Stop::Closed) => return,
                    Ok(Stop::Lost(reason)) | Err(reason) => {
                        tracing::warn!("lost the relay at {}: {reason}; reconnecting", self.url);
                        let ev = SignalEvent::Disconnected { reason };
                        if self.events.send(ev).await.is_err() {
                            return;
                        }
                    }
                }
                connected_before = true;
            }
            // Wait out the backoff while still taking commands.
            let deadline = tokio::time::sleep(backoff);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    () = &mut deadline => break,
                    cmd = self.rx.recv() => match cmd {
                        None | Some(Command::Close) => return,
                        Some(cmd) => self.offline(cmd),
                    },
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            let attempt = tokio::time::timeout(FIRST_CONNECT_TIMEOUT, self.attempt())
                .await
                .unwrap_or_else(|_| Attempt::Failed("timed out".into()));
            match attempt {
                Attempt::Connected(s) => socket = Some(s),
                Attempt::Refused(reason) => {
                    tracing::error!("the relay at {} refused us: {reason}", self.url);
                    backoff = BACKOFF_MAX;
                }
                Attempt::Failed(reason) => {
                    tracing::debug!("reconnect to {} failed: {reason}", self.url);
                }
            }
        }
    }

    /// Applies a command while there is no socket.
    fn offline(&mut self, cmd: Command) {
        match cmd {
            Command::On(ns) => {
                self.subs.insert(ns);
            }
            Command::Off(ns) => {
                self.subs.remove(&ns);
            }
            Command::Emit(ns, data) => {
                if self.pending.len() == PENDING_CAPACITY {
                    self.pending.pop_front();
                    self.dropped += 1;
                }
                self.pending
                    .push_back(ClientFrame::Emit { ns, data }.to_json());
            }
            Command::EmitRaw(ns, body) => {
                // A relay carries text: raw bytes travel as base64.
                self.offline(Command::Emit(ns, raw_as_json(&body)));
            }
            Command::AddressesChanged(_) | Command::Close => {}
        }
    }

    async fn session(&mut self, mut socket: Socket, reconnect: bool) -> Result<Stop, String> {
        for ns in &self.subs {
            send(&mut socket, ClientFrame::On(ns.clone()).to_json()).await?;
        }
        if self.dropped > 0 {
            tracing::warn!(
                "{} signaling messages were dropped while the relay was unreachable",
                self.dropped
            );
            self.dropped = 0;
        }
        while let Some(frame) = self.pending.pop_front() {
            send(&mut socket, frame).await?;
        }
        if reconnect {
            tracing::info!(
                "reconnected to the relay at {} ({} subscriptions restored)",
                self.url,
                self.subs.len()
            );
        } else {
            tracing::debug!("connected to the relay at {}", self.url);
        }
        if self
            .events
            .send(SignalEvent::Connected { reconnect })
            .await
            .is_err()
        {
            return Ok(Stop::Closed);
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    if heard.elapsed() >= SILENT_FOR {
                        return Ok(Stop::Lost(format!(
                            "nothing heard from it for {} s",
                            heard.elapsed().as_secs()
                        )));
                    }
                    send_message(&mut socket, Message::Ping(Default::default())).await?;
                }
                cmd = self.rx.recv() => {
                    let frame = match cmd {
                        None | Some(Command::Close) => {
                            let _ = socket.close(None).await;
                            return Ok(Stop::Closed);
                        }
                        Some(Command::On(ns)) => {
                            if !self.subs.insert(ns.clone()) { continue; }
                            ClientFrame::On(ns)
                        }
                        Some(Command::Off(ns)) => {
                            if !self.subs.remove(&ns) { continue; }
                            ClientFrame::Off(ns)
                        }
                        Some(Command::Emit(ns, data)) => ClientFrame::Emit { ns, data },
                        Some(Command::EmitRaw(ns, body)) => ClientFrame::Emit { ns, data: raw_as_json(&body) },
                        Some(Command::AddressesChanged(now)) => {
                            match local_ip(&socket) {
                                Some(ip) if !ip.is_loopback() && !now.contains(&ip) => {
                                    return Ok(Stop::Lost(format!("this host no longer has the address {ip} it was connected from")));
                                }
                                _ => continue,
                            }
                        }
                    };
                    send(&mut socket, frame.to_json()).await?;
                }
                msg = socket.next() => {
                    let msg = match msg {
                        None => return Ok(Stop::Lost("connection closed".into())),
                        Some(Err(e)) => return Ok(Stop::Lost(e.to_string())),
                        Some(Ok(m)) => m,
                    };
                    heard = tokio::time::Instant::now();
                    let text = match msg {
                        Message::Text(t) => t,
                        Message::Close(frame) => {
                            let why = frame.map(|f| f.reason.to_string()).filter(|r| !r.is_empty());
                            return Ok(Stop::Lost(why.unwrap_or_else(|| "relay closed the connection".into())));
                        }
                        _ => continue,
                    };
                    let event = match ServerFrame::parse(text.as_str()) {
                        Ok(ServerFrame::Message { ns, from, data }) => SignalEvent::Message { ns, from, data },
                        Ok(ServerFrame::Stamp { from, resume }) => {
                            if resume.is_some() {
                                self.resume = resume;
                            }
                            SignalEvent::Stamp(from)
                        }
                        Ok(ServerFrame::Ice { ice_servers, ttl }) => {
                            tracing::debug!("the relay handed us ICE servers valid {ttl} s");
                            SignalEvent::IceServers(ice_servers)
                        }
                        Ok(ServerFrame::Error { error }) => {
                            tracing::warn!("relay says: {error}");
                            SignalEvent::RelayError(error)
                        }
                        Err(e) => {
                            tracing::warn!("ignoring a frame from the relay: {e}");
                            continue;
                        }
                    };
                    if self.events.send(event).await.is_err() {
                        let _ = socket.close(None).await;
                        return Ok(Stop::Closed);
                    }
                }
            }
        }
    }
}

/// The address our end of the relay connection has.
fn local_ip(socket: &Socket) -> Option<std::net::IpAddr> {
    let tcp = match socket.get_ref() {
        MaybeTlsStream::Plain(s) => s,
        MaybeTlsStream::Rustls(s) => s.get_ref().0,
        _ => return None,
    };
    tcp.local_addr().ok().map(|a| a.ip())
}

fn raw_as_json(body: &[u8]) -> serde_json::Value {
    use base64::Engine as _;
    serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(body))
}

enum Stop {
    /// The user closed the driver.
    Closed,
    /// The relay went away.
    Lost(String),
}

async fn send(socket: &mut Socket, frame: String) -> Result<(), String> {
    send_message(socket, Message::Text(frame.into())).await
}

/// Sends one message; a relay that takes nothing for [`SILENT_FOR`] (its
/// TCP window shut on a dead path) counts as gone.
async fn send_message(socket: &mut Socket, message: Message) -> Result<(), String> {
    match tokio::time::timeout(SILENT_FOR, socket.send(message)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("it took nothing for {} s", SILENT_FOR.as_secs())),
    }
}
