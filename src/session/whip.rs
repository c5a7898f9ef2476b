//! `p2p send --whip URL`: the sender's encoded tracks published to a WHIP
//! endpoint (an SFU) over one more peer connection, beside or instead of
//! the room's receivers. The connection is one more receiver of the same
//! encode: it gets the layer its bandwidth estimate carries, as a mesh
//! receiver does.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::bail;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::machine::PeerEvent;
use super::rtc::{PeerHandle, Rtc, RtcEvent};
use crate::protocol::{Description, IceServerJson};
use crate::whip::{self, Client, Created, Kind};

/// How long the offer waits for candidates before it is POSTed without
/// the rest (which are then trickled, if the endpoint takes them). With
/// host candidates only, gathering takes milliseconds.
pub(super) const GATHER_WAIT: Duration = Duration::from_secs(1);

/// How long ending the session (DELETE) may hold up the exit.
pub(super) const DELETE_WAIT: Duration = Duration::from_secs(2);

/// The peer id of the WHIP connection, in logs and stats.
pub const PEER: &str = "whip";

/// What `--whip` needs.
#[derive(Debug, Clone)]
pub struct WhipConfig {
    pub url: String,
    pub token: Option<String>,
    pub ca_file: Option<std::path::PathBuf>,
    pub connection_timeout: Duration,
}

/// A publication in progress.
pub struct Whip {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Whip {
    /// Starts publishing `rtc`'s local tracks (set by the caller) to the
    /// endpoint. A bad URL fails here.
    pub fn start(cfg: WhipConfig, rtc: Rtc) -> anyhow::Result<Self> {
        let client = Client::new(Kind::Whip, &cfg.url, cfg.token.clone(), cfg.ca_file.clone())?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(publish(client, rtc, cfg.connection_timeout, stop.clone()));
        Ok(Self { stop, task })
    }

    /// Resolves when the publication ends by itself, which is an error
    /// (the endpoint refused, the connection failed).
    pub async fn ended(&mut self) -> anyhow::Error {
        match (&mut self.task).await {
            Ok(Ok(())) => anyhow::anyhow!("the WHIP session ended"),
            Ok(Err(e)) => e,
            Err(e) => anyhow::anyhow!("the WHIP task failed: {e}"),
        }
    }

    /// Ends the publication: the session is deleted on the endpoint.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        match tokio::time::timeout(DELETE_WAIT * 2, self.task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(anyhow::anyhow!("the WHIP task failed: {e}")),
            Err(_) => Err(anyhow::anyhow!("the WHIP session did not end in time")),
        }
    }
}

pub(super) type Events = mpsc::Receiver<(String, RtcEvent)>;

/// Offers, POSTs, applies the answer and keeps the session until `stop`
/// or a failure; a session that was created is deleted on every way out.
/// ICE servers the endpoint names (`Link`) are used from the start when it
/// names them before the offer (OPTIONS); named only with the answer, they
/// are used if the connection does not come up without them: the session
/// is deleted and made again with them.
async fn publish(
    client: Client,
    mut rtc: Rtc,
    timeout: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut servers = client.preflight().await;
    // Made again once at most: an endpoint that names fresh credentials
    // with every answer must not be asked forever.
    let mut retry = true;
    loop {
        if !servers.is_empty() {
            let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
            tracing::info!("WHIP: using the endpoint's ICE servers {}", urls.join(", "));
            rtc.set_issued_ice_servers(&as_json(&servers));
        }
        match attempt(&client, &rtc, (&servers, retry), timeout, &stop).await? {
            Some(named) => {
                servers = named;
                retry = false;
            }
            None => return Ok(()),
        }
    }
}

/// One session. `Some(servers)`: it did not come up, and the answer named
/// ICE servers not `used` yet (looked for when `retry`); try again with
/// them.
async fn attempt(
    client: &Client,
    rtc: &Rtc,
    (used, retry): (&[whip::LinkServer], bool),
    timeout: Duration,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Vec<whip::LinkServer>>> {
    let (tx, mut events) = mpsc::channel(128);
    let peer = rtc.peer(PEER, tx).await?;
    peer.create_offer(false).await;
    let wait = std::env::var("P2P_WHIP_GATHER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(GATHER_WAIT, Duration::from_millis);
    let described = described(&peer, &mut events, wait, stop).await;
    let described = described.map_err(|why| anyhow::anyhow!("cannot make the WHIP offer: {why}"));
    let Some((offer, found)) = described? else {
        peer.close().await;
        return Ok(None);
    };
    let post = client.post_offer(&offer);
    tokio::pin!(post);
    let created = tokio::select! {
        r = &mut post => r,
        () = stop.cancelled() => {
            // The server may have made the session already: wait a little
            // for its answer, and end what it made.
            if let Ok(Ok(c)) = tokio::time::timeout(DELETE_WAIT, &mut post).await {
                let _ = tokio::time::timeout(DELETE_WAIT, client.delete(&c.resource)).await;
            }
            peer.close().await;
            return Ok(None);
        }
    };
    let created = match created {
        Ok(c) => c,
        Err(e) => {
            peer.close().await;
            return Err(e);
        }
    };
    tracing::debug!("WHIP offer:\n{offer}\nWHIP answer:\n{}", created.answer);
    tracing::info!(
        "WHIP: {} accepted the offer; the session is {}",
        client.endpoint(),
        created.resource
    );
    let urls = |servers: &[whip::LinkServer]| -> Vec<String> {
        servers.iter().map(|s| s.url.clone()).collect()
    };
    let unused =
        (retry && !created.ice_servers.is_empty() && urls(&created.ice_servers) != urls(used))
            .then(|| created.ice_servers.clone());
    let result = session(
        client,
        &created,
        &peer,
        &mut events,
        (&offer, found),
        (timeout, unused.is_some()),
        stop,
    )
    .await;
    let deleted = tokio::time::timeout(DELETE_WAIT, client.delete(&created.resource)).await;
    peer.close().await;
    match deleted {
        Ok(Ok(())) => tracing::info!("WHIP: session {} ended", created.resource),
        Ok(Err(e)) => tracing::warn!("could not end the WHIP session: {e:#}"),
        Err(_) => tracing::warn!("could not end the WHIP session: no answer to DELETE"),
    }
    match result? {
        Ended::Stopped => Ok(None),
        Ended::Retry => {
            tracing::info!(
                "WHIP: no connection without the ICE servers the endpoint named; trying again \
                 with them"
            );
            Ok(unused)
        }
    }
}

/// How a session that did not fail ended.
enum Ended {
    Stopped,
    /// Not up after `LINK_FALLBACK`, and the answer named ICE servers.
    Retry,
}

/// How long a session whose answer named ICE servers we did not use may
/// take to come up before it is made again with them.
const LINK_FALLBACK: Duration = Duration::from_secs(3);

/// The local description (offer or answer) once its candidates are in, or
/// `wait` has passed, and the candidates found meanwhile; None when
/// stopped first. With no wait at all, the description as made.
pub(super) async fn described(
    peer: &PeerHandle,
    events: &mut Events,
    wait: Duration,
    stop: &CancellationToken,
) -> Result<Option<(String, Vec<String>)>, String> {
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    let mut described = None;
    let mut found = Vec::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(None),
            () = &mut deadline, if described.is_some() => break,
            ev = events.recv() => match ev {
                Some((_, RtcEvent::Peer(PeerEvent::LocalDescription(d)))) => {
                    if wait.is_zero() {
                        // Not waiting at all (what tests of trickling
                        // use): every candidate goes separately.
                        return Ok(Some((d.sdp, found)));
                    }
                    described = Some(d.sdp);
                }
                Some((_, RtcEvent::Peer(PeerEvent::LocalCandidate(c)))) => found.push(c.candidate),
                Some((_, RtcEvent::Gathered)) if described.is_some() => break,
                Some((_, RtcEvent::Peer(PeerEvent::Failed(why)))) => return Err(why),
                Some(_) => {}
                None => return Err("the connection closed".into()),
            }
        }
    }
    match peer.local_description().await {
        Some(sdp) => Ok(Some((sdp, found))),
        None => Err("no local description".into()),
    }
}

/// Applies a client's `offer` to `peer` and returns our answer once its
/// candidates are in (or `GATHER_WAIT` has passed): what a WHIP or WHEP
/// endpoint sends back in its 201. Err: why the offer could not be used.
pub(super) async fn answer(
    peer: &PeerHandle,
    events: &mut Events,
    offer: &str,
) -> Result<String, String> {
    peer.accept_offer(Description {
        kind: "offer".into(),
        sdp: offer.to_owned(),
    })
    .await;
    let never = CancellationToken::new();
    let described = described(peer, events, GATHER_WAIT, &never).await?;
    Ok(described.map_or_else(String::new, |(sdp, _)| sdp))
}

/// The created session until `stop` or a failure: the answer applied,
/// candidates not in the offer trickled (`found` before it was sent, then
/// the later ones), the connection watched.
async fn session(
    client: &Client,
    created: &Created,
    peer: &PeerHandle,
    events: &mut Events,
    (offer, found): (&str, Vec<String>),
    (timeout, fallback): (Duration, bool),
    stop: &CancellationToken,
) -> anyhow::Result<Ended> {
    let rejected = whip::rejected(offer, &created.answer);
    if !rejected.is_empty() {
        let what: Vec<String> = rejected.iter().map(ToString::to_string).collect();
        let video = rejected.iter().any(|r| r.kind == "video");
        bail!(
            "the WHIP endpoint {} rejected the {}: the room or server does not take this codec; \
             {}",
            client.endpoint(),
            what.join(" and "),
            if video {
                "try another --video-codec, or --no-video"
            } else {
                "try --no-audio"
            }
        );
    }
    peer.apply_answer(Description {
        kind: "answer".into(),
        sdp: created.answer.clone(),
    })
    .await;
    let mut trickle = Trickle::new(client, created, offer);
    tokio::select! {
        () = trickle.early(found) => {}
        () = stop.cancelled() => return Ok(Ended::Stopped),
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let retry = tokio::time::sleep(LINK_FALLBACK);
    tokio::pin!(retry);
    let mut connected = false;
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => return Ok(Ended::Stopped),
            () = &mut retry, if fallback && !connected => return Ok(Ended::Retry),
            () = &mut deadline, if !connected => bail!(
                "the WHIP connection to {} did not come up within {} s (no ICE path: \
                 --ice-server may help)",
                client.endpoint(),
                timeout.as_secs_f64()
            ),
            ev = events.recv() => ev,
        };
        let Some((_, ev)) = ev else {
            bail!("the WHIP connection closed");
        };
        match ev {
            RtcEvent::Peer(PeerEvent::Connected) => {
                connected = true;
                tracing::info!("WHIP: publishing to {}", client.endpoint());
            }
            RtcEvent::Peer(PeerEvent::Failed(why)) => {
                bail!("the WHIP connection to {} failed: {why}", client.endpoint())
            }
            RtcEvent::Ice(summary) => tracing::debug!("WHIP ICE: {summary:?}"),
            ev => {
                // A slow server must not hold up the end of the session.
                tokio::select! {
                    () = trickle.event(&ev) => {}
                    () = stop.cancelled() => return Ok(Ended::Stopped),
                }
            }
        }
    }
}

/// Sends the endpoint our candidates its offer did not carry (PATCH, RFC
/// 8840), while it takes them.
pub(super) struct Trickle<'a> {
    client: &'a Client,
    created: &'a Created,
    offer: &'a str,
    /// Whether the endpoint takes them (`Accept-Patch`, and no 405).
    on: bool,
    sent: HashSet<String>,
}

impl<'a> Trickle<'a> {
    pub(super) fn new(client: &'a Client, created: &'a Created, offer: &'a str) -> Self {
        Self {
            client,
            created,
            offer,
            on: created.trickle,
            sent: HashSet::new(),
        }
    }

    /// Candidates found before the offer was sent and not in it.
    pub(super) async fn early(&mut self, found: Vec<String>) {
        let early: Vec<String> = found.into_iter().filter(|c| self.fresh(c)).collect();
        if self.on && !early.is_empty() {
            if let Some(fragment) = whip::candidate_fragment(self.offer, &early, false) {
                self.send(&fragment).await;
            }
        }
    }

    /// A candidate found later, or the end of gathering: sent.
    pub(super) async fn event(&mut self, ev: &RtcEvent) {
        let fragment = match ev {
            RtcEvent::Peer(PeerEvent::LocalCandidate(c)) => {
                if !(self.fresh(&c.candidate) && self.on) {
                    return;
                }
                whip::candidate_fragment(self.offer, std::slice::from_ref(&c.candidate), false)
            }
            RtcEvent::Gathered if self.on => whip::candidate_fragment(self.offer, &[], true),
            _ => return,
        };
        if let Some(fragment) = fragment {
            self.send(&fragment).await;
        }
    }

    /// Not sent before, and not in the offer.
    fn fresh(&mut self, candidate: &str) -> bool {
        !candidate.is_empty()
            && !self.offer.contains(candidate)
            && self.sent.insert(candidate.to_owned())
    }

    /// PATCHes candidates; off once the endpoint says it takes none.
    async fn send(&mut self, fragment: &str) {
        match self.client.trickle(self.created, fragment).await {
            Ok(accepted) => self.on = accepted,
            Err(e) => tracing::warn!("could not trickle a candidate: {e:#}"),
        }
    }
}

pub(super) fn as_json(servers: &[whip::LinkServer]) -> Vec<IceServerJson> {
    servers
        .iter()
        .map(|s| IceServerJson {
            urls: vec![s.url.clone()],
            username: s.username.clone(),
            credential: s.credential.clone(),
        })
        .collect()
}
