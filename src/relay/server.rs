//! The relay's IO: HTTP (page + upgrade), WebSocket connections, shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::bridge::{self, BridgeHandle};
use super::door;
use crate::protocol::ServerFrame;
use crate::router::{ConnId, Limits, Routed, Router, RESUME_REFRESH};

/// Frames queued for one client before it counts as a slow consumer and is
/// disconnected. A session's whole handshake is a few dozen frames; 1,024
/// absorbs bursts (a room of receivers pinging at once).
const OUTBOX_CAPACITY: usize = 1024;

/// Bytes queued for one client before it counts as a slow consumer, whatever
/// the number of frames. Counting frames alone let a client that never
/// reads pin 1,024 × the frame limit (64 MiB): ten of them held 563 MB of a
/// relay.
const OUTBOX_BYTES: usize = 16 * 1024 * 1024;

/// Bytes queued for all clients together. Past it, the client with the
/// most queued is cut off: one that never reads has more queued than any
/// that does. A healthy reader behind a 100 MB burst lags a few MiB here
/// (`relay::cuts_off_a_client_that_never_reads…`, which a 1 MiB
/// per-client cap failed one run in three), and signaling is mostly frames
/// of a few KiB. Ten clients that never read grew the relay by ~617 MB
/// before; now by ~80 MB, this and what is in flight
/// (`hostile::subscribers_that_never_read…`).
const QUEUED_BYTES: usize = 32 * 1024 * 1024;

/// A client with less than this queued is never cut for the total: a
/// frame fanned out to many shares one buffer, but counts once for each
/// (a 60 KiB frame to 600 subscribers counts 35 MiB, in 60 KiB queues).
const CUT_FLOOR: usize = 1024 * 1024;

/// Bytes read from a socket at a time (see where it is used).
const READ_BUFFER: usize = 4 * 1024;

/// How long shutdown waits for connections to send their close frames.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The web app served on plain GETs. Kept in the binary: the relay is one
/// file to deploy.
const PAGE: &str = include_str!("../../web/index.html");
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/app.js"),
    ),
    (
        "/p2p.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/p2p.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../web/style.css"),
    ),
];

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub listen: String,
    pub token: Option<String>,
    pub limits: Limits,
    /// Share rooms with other relays through this NATS cluster.
    pub nats: Option<String>,
    pub nats_creds: Option<std::path::PathBuf>,
    /// Serve wss:// and https:// with this certificate chain and key (PEM).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Hand clients that ask (`?ice=1`) TURN credentials of their own.
    pub turn: Option<super::TurnIssuer>,
    /// Room tokens (`--token-secret`): required of every client, and what
    /// each may do.
    pub rooms: Option<super::Issuer>,
    /// Connections one address may hold at once; 0 for no cap.
    pub max_per_ip: usize,
    /// How long a connection has to send a whole request (and to finish
    /// its TLS handshake).
    pub handshake_timeout: Duration,
    /// How long a client may stay silent, pings unanswered, before it is
    /// disconnected; pings go every third of it.
    pub idle_timeout: Duration,
    /// What resume tokens are signed with (see [`resume_key`]); this run's
    /// own when `None`.
    pub resume_key: Option<[u8; 32]>,
}

/// The key resume tokens are signed with, from a secret the relay is given
/// again when it restarts (`--resume-secret`, or `--token-secret`).
pub fn resume_key(secret: &str) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(b"p2p resume key\0");
    hash.update(secret.as_bytes());
    hash.finalize().into()
}

struct Hub {
    router: Router,
    outboxes: HashMap<ConnId, Outbox>,
    /// Bytes queued for all clients (see [`QUEUED_BYTES`]).
    queued: Arc<AtomicUsize>,
    bridge: Option<BridgeHandle>,
}

/// What is queued for one client's writer, in frames and in bytes, and how
/// to stop that writer at once (a writer blocked on a client that does not
/// read would otherwise hold its queue until TCP gives up).
struct Outbox {
    tx: mpsc::Sender<Utf8Bytes>,
    bytes: Arc<Queued>,
    cut: CancellationToken,
    /// Why it was cut, for the close frame; "too slow" unless set first.
    why: Arc<std::sync::OnceLock<&'static str>>,
}

/// Bytes queued for one client, counted into the relay's total as well.
/// Every byte is taken off once: by the writer as it writes, or all that
/// is left when the client is cut off.
struct Queued {
    mine: AtomicUsize,
    all: Arc<AtomicUsize>,
}

impl Queued {
    /// Adds `n`; returns (this client's, everyone's) queue after.
    fn add(&self, n: usize) -> (usize, usize) {
        let all = self.all.fetch_add(n, Ordering::Relaxed) + n;
        (self.mine.fetch_add(n, Ordering::Relaxed) + n, all)
    }

    fn take(&self, n: usize) {
        let old = self
            .mine
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(n))
            })
            .unwrap_or_default();
        self.all.fetch_sub(old.min(n), Ordering::Relaxed);
    }

    fn clear(&self) {
        let old = self.mine.swap(0, Ordering::Relaxed);
        self.all.fetch_sub(old, Ordering::Relaxed);
    }

    fn get(&self) -> usize {
        self.mine.load(Ordering::Relaxed)
    }
}

impl Hub {
    /// Tells `conn` the name its messages carry, with a fresh resume token
    /// (replacing the one it held), if it is still here.
    fn stamp(&mut self, conn: ConnId) {
        if !self.outboxes.contains_key(&conn) {
            return;
        }
        let from = self.router.stamp(conn);
        let resume = Some(self.router.issue_resume(conn, unix_now()));
        self.push(conn, ServerFrame::Stamp { from, resume }.to_json().into());
    }

    /// Queues `frame` for `conn`; a full outbox (in frames or in bytes)
    /// disconnects the connection (the writer task sees its channel closed
    /// and closes the socket).
    fn push(&mut self, conn: ConnId, frame: Utf8Bytes) {
        let Some(out) = self.outboxes.get(&conn) else {
            return;
        };
        let (mine, all) = out.bytes.add(frame.len());
        if mine > OUTBOX_BYTES {
            tracing::warn!(
                conn,
                "client is not reading ({} KiB queued): disconnecting it",
                mine / 1024
            );
            self.drop_conn(conn);
            return;
        }
        if all > QUEUED_BYTES {
            let most = self
                .outboxes
                .iter()
                .map(|(c, o)| (o.bytes.get(), *c))
                .max()
                .map(|(bytes, c)| (c, bytes));
            if let Some((worst, bytes)) = most.filter(|(_, bytes)| *bytes >= CUT_FLOOR) {
                tracing::warn!(
                    conn = worst,
                    "client is not reading ({} KiB queued, the most while the relay holds {} MiB \
                     for all): disconnecting it",
                    bytes / 1024,
                    all >> 20
                );
                self.drop_conn(worst);
                if worst == conn {
                    return;
                }
            }
        }
        let Some(out) = self.outboxes.get(&conn) else {
            return;
        };
        match out.tx.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    conn,
                    "client is not reading ({OUTBOX_CAPACITY} frames queued): disconnecting it"
                );
                self.drop_conn(conn);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.drop_conn(conn),
        }
    }

    /// Closes `conn`, telling its client `why`.
    fn cut(&mut self, conn: ConnId, why: &'static str) {
        if let Some(out) = self.outboxes.get(&conn) {
            let _ = out.why.set(why);
        }
        self.drop_conn(conn);
    }

    fn drop_conn(&mut self, conn: ConnId) {
        if let Some(out) = self.outboxes.remove(&conn) {
            out.cut.cancel();
            out.bytes.clear();
        }
        let emptied = self.router.disconnect(conn);
        if let Some(b) = &self.bridge {
            for ns in emptied {
                b.unsubscribe(ns);
            }
        }
    }
}

struct Relay {
    hub: Mutex<Hub>,
    token: Option<String>,
    rooms: Option<super::Issuer>,
    limits: Limits,
    next_id: AtomicU64,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    turn: Option<super::TurnIssuer>,
    idle_timeout: Duration,
}

impl Relay {
    /// Locks the hub. A poisoned lock means a panic inside the router, a bug;
    /// its state is plain maps that stay consistent, so carry on.
    fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl bridge::Deliver for Relay {
    fn deliver(&self, ns: &crate::protocol::Namespace, frame: Utf8Bytes) {
        let mut hub = self.hub();
        for conn in hub.router.subscribers(ns, None) {
            hub.push(conn, frame.clone());
        }
    }
}

/// Runs the relay until Ctrl-C or SIGTERM.
pub async fn run(config: RelayConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let relay = Arc::new(Relay {
        hub: Mutex::new(Hub {
            router: match config.resume_key {
                Some(key) => Router::new(config.limits).resume_key(key),
                None => Router::new(config.limits),
            },
            outboxes: HashMap::new(),
            queued: Arc::default(),
            bridge: None,
        }),
        token: config.token.clone(),
        rooms: config.rooms.clone(),
        limits: config.limits,
        next_id: AtomicU64::new(1),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        turn: config.turn.clone(),
        idle_timeout: config.idle_timeout,
    });
    if let Some(url) = &config.nats {
        let handle = bridge::start(url, config.nats_creds.clone(), Arc::downgrade(&relay))
            .await
            .with_context(|| format!("cannot use NATS at {url}"))?;
        relay.hub().bridge = Some(handle);
        tracing::info!("sharing rooms with other relays through NATS at {url}");
    }
    if let Some(turn) = &config.turn {
        tracing::info!(
            "handing out TURN credentials valid {} s to clients that ask (?ice=1)",
            turn.ttl().as_secs()
        );
    }
    let app = axum::Router::new()
        .route("/", axum::routing::get(root))
        .fallback(asset)
        .with_state(relay.clone());

    let tls = match &config.tls {
        Some((cert, key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "cannot use --tls-cert {} / --tls-key {}",
                        cert.display(),
                        key.display()
                    )
                })?,
        ),
        None => None,
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let page = if tls.is_some() { "https" } else { "http" };

    // The one line scripts and tests wait for: the address really bound.
    println!("{scheme}://{addr}");
    tracing::info!(
        "relay listening on {scheme}://{addr}{}; page at {page}://{addr}/",
        if addr.ip().is_loopback() {
            " (loopback only: pass --listen 0.0.0.0:PORT to accept other machines)"
        } else {
            ""
        }
    );

    let shutdown = relay.shutdown.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        tracing::info!("shutting down: closing connections");
        shutdown.cancel();
    });
    let stop = relay.shutdown.clone();
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        h.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    // Frames are small and each is wanted at once: without TCP_NODELAY
    // they wait for the previous one's ACK (measured: p99 delivery 47 ms
    // with Nagle, 2 ms without).
    let door = door::PerIp::new(
        axum_server::accept::NoDelayAcceptor::new(),
        config.max_per_ip,
    );
    let mut server = axum_server::from_tcp(listener.into_std()?)?.handle(handle);
    // Every later request (keep-alive) gets its own header time.
    server
        .http_builder()
        .http1()
        .header_read_timeout(config.handshake_timeout);
    // hyper's header timer starts only once HTTP/1 or 2 is told apart, and
    // that takes the first bytes: a socket that sends nothing needs the
    // first-request timeout too.
    let server = server.first_request_timeout(config.handshake_timeout);
    match tls {
        None => server.acceptor(door).serve(service).await,
        Some(tls) => {
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
                .handshake_timeout(config.handshake_timeout)
                .acceptor(door);
            server.acceptor(acceptor).serve(service).await
        }
    }
    .context("relay server failed")?;
    relay.tasks.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, relay.tasks.wait()).await;
    Ok(())
}

async fn root(
    State(relay): State<Arc<Relay>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            Html(PAGE),
        )
            .into_response();
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = query.get("token").map(String::as_str).or(bearer);
    if let Some(expected) = &relay.token {
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
            tracing::warn!(%peer, "refused a connection without the right token");
            return (
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: pass ?token=... or Authorization: Bearer ...\n",
            )
                .into_response();
        }
    }
    let grant = match (&relay.rooms, given) {
        (None, _) => None,
        (Some(issuer), Some(token)) => match issuer.check(token) {
            Ok(grant) => Some(grant),
            Err(why) => {
                tracing::debug!(%peer, "refused a connection: {why}");
                return (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response();
            }
        },
        (Some(_), None) => {
            return (
                StatusCode::UNAUTHORIZED,
                "this relay needs a room token: pass ?token=... or Authorization: Bearer ...\n",
            )
                .into_response();
        }
    };
    // The transport accepts frames well past our limit so that an oversized
    // frame gets a polite `error` frame from the router instead of a dropped
    // connection; past this hard cap the socket is closed.
    let hard_cap = (relay.limits.max_frame * 4).max(1 << 20);
    let asks = |name: &str| query.get(name).is_some_and(|v| v == "1" || v == "true");
    let (wants_ice, wants_stamp) = (asks("ice"), asks("stamp"));
    let resume = query.get("resume").cloned();
    // tungstenite reads through a 128 KiB buffer per connection by default:
    // measured with massif, 96 % of an idle relay's heap. Signaling frames
    // are small; 4 KiB reads are plenty and keep 10,000 idle clients cheap.
    ws.read_buffer_size(READ_BUFFER)
        .max_message_size(hard_cap)
        .max_frame_size(hard_cap)
        .on_upgrade(move |socket| {
            let tasks = relay.tasks.clone();
            let asks = Asks {
                ice: wants_ice,
                stamp: wants_stamp,
                resume,
            };
            tasks.track_future(connection(relay, socket, peer, asks, grant))
        })
}

async fn asset(uri: axum::http::Uri) -> Response {
    match ASSETS.iter().find(|(path, _, _)| *path == uri.path()) {
        Some((_, mime, body)) => ([(header::CONTENT_TYPE, *mime)], *body).into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// Sends `conn` TURN credentials at once, then fresh ones every half TTL
/// for as long as it stays connected, so a long-lived client always holds
/// valid ones for its next peer.
/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Gives `conn` a fresh resume token every [`RESUME_REFRESH`], so the one
/// its client holds is good in a later run of the relay (tokens of an
/// earlier run are taken for a few minutes only).
async fn refresh_resume(relay: Arc<Relay>, conn: ConnId, gone: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(RESUME_REFRESH) => relay.hub().stamp(conn),
            () = gone.cancelled() => return,
        }
    }
}

async fn hand_out_credentials(
    relay: Arc<Relay>,
    conn: ConnId,
    turn: super::TurnIssuer,
    gone: CancellationToken,
) {
    let name = format!("p2p-{conn}");
    loop {
        let frame = ServerFrame::Ice {
            ice_servers: vec![turn.issue(unix_now(), &name)],
            ttl: turn.ttl().as_secs(),
        }
        .to_json();
        relay.hub().push(conn, frame.into());
        tokio::select! {
            () = tokio::time::sleep(turn.ttl() / 2) => {}
            () = gone.cancelled() => return,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a client asked for in its URL.
struct Asks {
    /// `?ice=1`: TURN credentials of its own.
    ice: bool,
    /// `?stamp=1`: the `from` its messages carry.
    stamp: bool,
    /// `?resume=…`: the name of an earlier connection of its own, by the
    /// token the relay gave it there.
    resume: Option<String>,
}

async fn connection(
    relay: Arc<Relay>,
    socket: WebSocket,
    peer: SocketAddr,
    asks: Asks,
    grant: Option<super::grant::Grant>,
) {
    let Asks {
        ice: wants_ice,
        stamp: wants_stamp,
        resume,
    } = asks;
    let conn = relay.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(OUTBOX_CAPACITY);
    let cut = CancellationToken::new();
    let why_cut: Arc<std::sync::OnceLock<&'static str>> = Arc::default();
    // A room token's rights end at its expiry, connected or not.
    let expires = grant.as_ref().map(|g| {
        let exp = std::time::UNIX_EPOCH + Duration::from_secs(g.exp);
        let left = exp
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        tokio::time::Instant::now() + left
    });
    let queued = {
        let mut hub = relay.hub();
        hub.router.connect(conn);
        if let Some(grant) = grant {
            hub.router.grant(conn, grant);
        }
        let bytes = Arc::new(Queued {
            mine: AtomicUsize::new(0),
            all: hub.queued.clone(),
        });
        let out = Outbox {
            tx,
            bytes: bytes.clone(),
            cut: cut.clone(),
            why: why_cut.clone(),
        };
        hub.outboxes.insert(conn, out);
        if let Some(token) = resume {
            match hub.router.resume(conn, &token, unix_now()) {
                (true, Some(old)) => {
                    // Its client has moved on: the old socket is dead or
                    // soon will be.
                    tracing::debug!(
                        conn,
                        old,
                        "resumed the name of a connection still open: closing it"
                    );
                    hub.cut(old, "resumed from another connection");
                }
                (true, None) => tracing::debug!(conn, "resumed an earlier connection's name"),
                (false, _) => tracing::debug!(
                    conn,
                    "a resume token that is not (or no longer) good: a new name"
                ),
            }
        }
        if wants_stamp {
            hub.stamp(conn);
        }
        bytes
    };
    tracing::debug!(conn, %peer, "client connected");
    let (mut sink, mut stream) = socket.split();

    // Ends the reader when the writer stops (slow consumer cut off, socket
    // gone), even if the client never sends another frame.
    let writer_done = CancellationToken::new();
    let done = writer_done.clone();
    let shutdown = relay.shutdown.clone();
    let ping_every = relay.idle_timeout / 3;
    let writer = tokio::spawn(async move {
        let _done = done.drop_guard();
        let close = |code, reason| {
            Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            }))
        };
        // Sent to a client that does not read, a close frame would wait
        // forever: each gets the shutdown grace.
        let grace = SHUTDOWN_GRACE;
        let mut ping = tokio::time::interval(ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        loop {
            tokio::select! {
                biased;
                () = cut.cancelled() => {
                    let why = why_cut.get().copied().unwrap_or("too slow: outbox full");
                    let frame = close(1008, why);
                    let _ = tokio::time::timeout(grace, sink.send(frame)).await;
                    break;
                }
                frame = rx.recv() => match frame {
                    Some(frame) => {
                        // Write what is queued in one go, then flush once:
                        // a burst costs one syscall, not one per frame.
                        let write = async {
                            queued.take(frame.len());
                            let mut ok = sink.feed(Message::Text(frame)).await.is_ok();
                            while ok {
                                match rx.try_recv() {
                                    Ok(next) => {
                                        queued.take(next.len());
                                        ok = sink.feed(Message::Text(next)).await.is_ok();
                                    }
                                    Err(_) => break,
                                }
                            }
                            ok && sink.flush().await.is_ok()
                        };
                        // Cut off while blocked on a client that does not
                        // read: stop now, and free what was queued for it.
                        let ok = tokio::select! {
                            ok = write => ok,
                            () = cut.cancelled() => false,
                        };
                        if !ok {
                            break;
                        }
                    }
                    // Dropped by the hub, which cancels `cut` first.
                    None => break,
                },
                () = shutdown.cancelled() => {
                    let frame = close(1001, "relay shutting down");
                    let _ = tokio::time::timeout(grace, sink.send(frame)).await;
                    break;
                }
                _ = ping.tick() => {
                    let send = sink.send(Message::Ping(Default::default()));
                    if !matches!(tokio::time::timeout(grace, send).await, Ok(Ok(()))) {
                        break;
                    }
                }
            }
        }
        let _ = tokio::time::timeout(grace, sink.close()).await;
    });

    if wants_stamp {
        tokio::spawn(refresh_resume(relay.clone(), conn, writer_done.clone()));
    }
    if let (true, Some(turn)) = (wants_ice, relay.turn.clone()) {
        tokio::spawn(hand_out_credentials(
            relay.clone(),
            conn,
            turn,
            writer_done.clone(),
        ));
    }

    let shutdown = relay.shutdown.clone();
    let mut bucket = super::limit::Bucket::new(relay.limits.rate, std::time::Instant::now());
    let mut over_limit = 0u64;
    let expiry = async {
        match expires {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    let idle = relay.idle_timeout;
    let silence = tokio::time::sleep(idle);
    tokio::pin!(silence);
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            () = shutdown.cancelled() => break,
            () = writer_done.cancelled() => break,
            () = &mut silence => {
                tracing::debug!(conn, %peer, "client silent for {} s, pings unanswered: disconnecting it", idle.as_secs());
                if let Some(out) = relay.hub().outboxes.get(&conn) {
                    let _ = out.why.set("no answer to pings");
                }
                break;
            }
            () = &mut expiry => {
                tracing::debug!(conn, %peer, "room token expired: closing the connection");
                if let Some(out) = relay.hub().outboxes.get(&conn) {
                    let _ = out.why.set("room token expired");
                }
                break;
            }
        };
        let Some(Ok(msg)) = msg else { break };
        silence.as_mut().reset(tokio::time::Instant::now() + idle);
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                let frame = ServerFrame::error(crate::protocol::ProtocolError::Binary).to_json();
                relay.hub().push(conn, frame.into());
                continue;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if !bucket.admit(std::time::Instant::now()) {
            // Dropped unread. One error frame per second of flooding is
            // enough for a client to learn why.
            over_limit += 1;
            if over_limit == 1 || over_limit.is_multiple_of(u64::from(relay.limits.rate.max(1))) {
                tracing::warn!(conn, %peer, "client over the rate limit: {over_limit} frames dropped");
                let frame = ServerFrame::error(format!(
                    "rate limit: at most {} frames a second; {over_limit} dropped",
                    relay.limits.rate
                ))
                .to_json();
                relay.hub().push(conn, frame.into());
            }
            continue;
        }
        let mut hub = relay.hub();
        if !hub.outboxes.contains_key(&conn) {
            break; // cut off as a slow consumer
        }
        match hub.router.handle_text(conn, text.as_str()) {
            Routed::Deliver {
                ns,
                to,
                frame,
                data,
            } => {
                let frame = Utf8Bytes::from(frame);
                for target in to {
                    hub.push(target, frame.clone());
                }
                if let Some(b) = &hub.bridge {
                    // The emitted bytes as they came, sliced out of the
                    // frame without a copy.
                    b.publish(ns, bytes::Bytes::from(frame).slice(data));
                }
            }
            Routed::Reply(error) => {
                tracing::debug!(conn, %error, "bad frame");
                hub.push(conn, error.into());
            }
            Routed::Subscribed { ns, first: true } => {
                if let Some(b) = &hub.bridge {
                    b.subscribe(ns);
                }
            }
            Routed::Unsubscribed { ns, last: true } => {
                if let Some(b) = &hub.bridge {
                    b.unsubscribe(ns);
                }
            }
            Routed::Subscribed { .. } | Routed::Unsubscribed { .. } | Routed::Nothing => {}
        }
    }
    relay.hub().drop_conn(conn);
    let _ = writer.await;
    tracing::debug!(conn, %peer, "client disconnected");
}
