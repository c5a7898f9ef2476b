//! `p2p receive --whep URL`: watching a WHEP endpoint (WHIP's playback
//! twin: an SFU, MediaMTX, another `p2p send --whep-listen`). One peer
//! connection offers to receive audio and video, the offer is POSTed, and
//! what arrives is recorded or shown as a room sender's is, without
//! re-encoding. Ctrl-C ends the session on the server (DELETE).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::av::Recordings;
use super::machine::PeerEvent;
use super::report::Reporter;
use super::rtc::{PeerHandle, Rtc, RtcEvent};
use super::settings::ReceiveConfig;
use super::whip::{as_json, described, Events, Trickle, DELETE_WAIT, GATHER_WAIT};
use crate::media::record::RecordConfig;
use crate::media::MediaKind;
use crate::protocol::Description;
use crate::whip::{self, Client, Created, Kind};

/// How often the recordings are looked after.
const TICK: Duration = Duration::from_millis(100);

/// The peer id of the WHEP connection, in logs, files and stats.
pub const PEER: &str = "whep";

/// What `--whep` needs.
#[derive(Debug, Clone)]
pub struct WhepConfig {
    pub url: String,
    pub token: Option<String>,
    pub ca_file: Option<std::path::PathBuf>,
}

/// How a session that did not fail ended.
enum Ended {
    /// Ctrl-C, or the program reading `--record -` left.
    Stopped,
    /// The endpoint closed the connection: the stream is over.
    StreamEnded,
}

/// `p2p receive --whep URL`: watches until Ctrl-C or the stream's end.
pub async fn run(cfg: ReceiveConfig, whep: WhepConfig) -> anyhow::Result<ExitCode> {
    let id = uuid::Uuid::new_v4().to_string();
    let reporter = Reporter::new("sender", cfg.peer.events, cfg.peer.events_file.as_deref())?;
    let mut rtc = Rtc::new(
        &cfg.peer.ice_servers,
        cfg.peer.signal_opts.ca_file.as_deref(),
        true,
    )?;
    let client = Client::new(Kind::Whep, &whep.url, whep.token.clone(), whep.ca_file)?;
    let record = RecordConfig {
        path: cfg.record.clone(),
        display: cfg.display,
        round_trip: Duration::ZERO,
    };
    if record.path.is_none() && !record.display {
        tracing::info!(
            "watching without keeping anything: give --record FILE (or -) or --display to keep it"
        );
    }
    let mut recordings = Recordings::new(record, reporter.clone());
    reporter.started_alone("receiver", &id, &format!("watching {}", client.endpoint()));
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        stopper.cancel();
    });
    let servers = client.preflight().await;
    if !servers.is_empty() {
        let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
        tracing::info!("WHEP: using the endpoint's ICE servers {}", urls.join(", "));
        rtc.set_issued_ice_servers(&as_json(&servers));
    }
    let (tx, mut events) = mpsc::channel(128);
    let peer = rtc.peer(PEER, tx).await?;
    peer.offer_to_receive(vec![MediaKind::Audio, MediaKind::Video])
        .await;
    let result = async {
        let described = described(&peer, &mut events, GATHER_WAIT, &stop).await;
        let described =
            described.map_err(|why| anyhow::anyhow!("cannot make the WHEP offer: {why}"))?;
        let Some((offer, found)) = described else {
            return Ok((None, Ended::Stopped));
        };
        let created = tokio::select! {
            c = client.post_offer(&offer) => c?,
            () = stop.cancelled() => return Ok((None, Ended::Stopped)),
        };
        tracing::debug!("WHEP offer:\n{offer}\nWHEP answer:\n{}", created.answer);
        tracing::info!(
            "WHEP: {} accepted the offer; the session is {}",
            client.endpoint(),
            created.resource
        );
        let ended = session(
            (&client, &created),
            &peer,
            &mut events,
            (&offer, found),
            &mut recordings,
            cfg.peer.connection_timeout,
            &stop,
        )
        .await;
        Ok((Some(created), ended?))
    }
    .await;
    let created = result.as_ref().ok().and_then(|(c, _)| c.as_ref());
    if let Some(created) = created {
        match tokio::time::timeout(DELETE_WAIT, client.delete(&created.resource)).await {
            Ok(Ok(())) => tracing::info!("WHEP: session {} ended", created.resource),
            Ok(Err(e)) => tracing::warn!("could not end the WHEP session: {e:#}"),
            Err(_) => tracing::warn!("could not end the WHEP session: no answer to DELETE"),
        }
    }
    peer.close().await;
    reporter.leaving();
    recordings.close(PEER, false);
    recordings.finish_all().await;
    if let Some(Err(e)) = recordings.stdout_ended() {
        bail!("the recording to stdout failed: {e}");
    }
    match result {
        Ok((_, Ended::StreamEnded)) => {
            tracing::info!("the WHEP stream ended");
            Ok(ExitCode::SUCCESS)
        }
        Ok((_, Ended::Stopped)) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e),
    }
}

/// The created session until Ctrl-C, the stream's end or a failure: the
/// answer applied, candidates trickled, what arrives recorded.
async fn session(
    (client, created): (&Client, &Created),
    peer: &PeerHandle,
    events: &mut Events,
    (offer, found): (&str, Vec<String>),
    recordings: &mut Recordings,
    timeout: Duration,
    stop: &CancellationToken,
) -> anyhow::Result<Ended> {
    let sections = whip::sending_sections(&created.answer);
    if sections == 0 {
        let rejected: Vec<String> = whip::rejected(offer, &created.answer)
            .iter()
            .map(ToString::to_string)
            .collect();
        bail!(
            "the WHEP endpoint {} sends nothing p2p can take (it turned down {}): it may \
             send a codec p2p does not record",
            client.endpoint(),
            rejected.join(" and ")
        );
    }
    recordings.expect(PEER, sections);
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
    let peers = HashMap::from([(PEER.to_owned(), peer.clone())]);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(TICK);
    let mut connected = false;
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => return Ok(Ended::Stopped),
            () = &mut deadline, if !connected => bail!(
                "the WHEP connection to {} did not come up within {} s (no ICE path: \
                 --ice-server may help)",
                client.endpoint(),
                timeout.as_secs_f64()
            ),
            _ = tick.tick() => {
                recordings.tick(&peers);
                if recordings.stdout_ended().is_some() {
                    return Ok(Ended::Stopped);
                }
                continue;
            }
            ev = events.recv() => ev,
        };
        let Some((_, ev)) = ev else {
            bail!("the WHEP connection closed");
        };
        match ev {
            RtcEvent::Track(track) => recordings.track(PEER, track, Some(peer)),
            RtcEvent::Peer(PeerEvent::Connected) => {
                connected = true;
                tracing::info!("WHEP: watching {}", client.endpoint());
            }
            RtcEvent::Peer(PeerEvent::Disconnected(why)) => {
                // WHEP has no goodbye but DTLS's: a server that ended the
                // stream closed it; otherwise the path was lost.
                if peer.closed_by_peer().await {
                    return Ok(Ended::StreamEnded);
                }
                tracing::warn!("WHEP: {why}; waiting for the path to come back");
            }
            RtcEvent::Peer(PeerEvent::Failed(why)) if connected && why == "connection closed" => {
                return Ok(Ended::StreamEnded)
            }
            RtcEvent::Peer(PeerEvent::Failed(why)) => {
                bail!("the WHEP connection to {} failed: {why}", client.endpoint())
            }
            RtcEvent::Ice(summary) => tracing::debug!("WHEP ICE: {summary:?}"),
            ev => {
                tokio::select! {
                    () = trickle.event(&ev) => {}
                    () = stop.cancelled() => return Ok(Ended::Stopped),
                }
            }
        }
    }
}
