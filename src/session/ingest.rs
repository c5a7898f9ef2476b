//! `p2p send --whip-listen ADDR`: a WHIP endpoint (RFC 9725) whose
//! publisher (OBS, GStreamer's `whipsink`, a browser) is the sender's
//! source. Its RTP goes out to the room's receivers as it came, without
//! decoding or re-encoding; key-frame requests from receivers go back to
//! it as PLIs. One publisher at a time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tokio::sync::mpsc;

use super::machine::PeerEvent;
use super::rtc::{self, Continuity, OnKeyframe, PeerHandle, Rtc, RtcEvent, TrackWriter};
use crate::media::{MediaKind, TrackSpec};
use crate::protocol::Candidate;
use crate::whip;
use crate::whip::serve::{self, refuse, reply};

/// Key-frame requests to the publisher: at most one this often, however
/// many receivers join at once.
const PLI_EVERY: Duration = Duration::from_millis(300);

/// What `--whip-listen` needs.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub listen: String,
    pub token: Option<String>,
    /// The tracks publishers must send (their codecs are the only ones
    /// accepted).
    pub specs: Vec<TrackSpec>,
    /// How long a publisher may take to connect before it is let go.
    pub connect_timeout: Duration,
    /// What the publisher is assumed to send, bit/s (where the
    /// receivers' estimates start): video, and audio (0 without).
    pub video_bps: f64,
    pub audio_bps: f64,
}

/// The publisher being forwarded.
struct Publisher {
    id: String,
    /// None while its connection is being made.
    handle: Option<PeerHandle>,
    /// The ICE ufrag of its offer: a PATCH with another is an ICE restart.
    ufrag: Option<String>,
    /// Its video SSRC, once its first video packet came.
    video_ssrc: Option<u32>,
}

struct Ingest {
    rtc: Rtc,
    token: Option<String>,
    specs: Vec<TrackSpec>,
    writers: Vec<TrackWriter>,
    continuity: Vec<Arc<Mutex<Continuity>>>,
    publisher: Mutex<Option<Publisher>>,
    last_pli: Mutex<Option<Instant>>,
    connect_timeout: Duration,
}

/// A running endpoint; the publisher is closed when it is dropped.
pub struct IngestServer {
    pub url: String,
    server: tokio::task::JoinHandle<()>,
    ingest: Arc<Ingest>,
}

impl Drop for IngestServer {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(handle) = self.ingest.take_publisher(None).and_then(|p| p.handle) {
            tokio::spawn(async move { handle.close().await });
        }
    }
}

/// Declares the tracks on `rtc` (for the room's receivers) and starts the
/// endpoint, whose publishers' connections `ingest` makes. Returns it and
/// the video track's writer.
pub async fn start(
    cfg: IngestConfig,
    rtc: &mut Rtc,
    ingest: Rtc,
    stream_id: &str,
) -> anyhow::Result<(IngestServer, Option<TrackWriter>)> {
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on --whip-listen {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let audio_bps = cfg.audio_bps;
    let tracks: Vec<(TrackSpec, Vec<f64>)> = cfg
        .specs
        .iter()
        .map(|s| {
            let bps = if s.kind == MediaKind::Video {
                cfg.video_bps
            } else {
                audio_bps
            };
            (s.clone(), vec![bps])
        })
        .collect();
    let slot: Arc<std::sync::OnceLock<std::sync::Weak<Ingest>>> = Arc::default();
    let weak = slot.clone();
    let on_keyframe: OnKeyframe = Arc::new(move |_, reason| {
        if let Some(ingest) = weak.get().and_then(std::sync::Weak::upgrade) {
            ingest.request_keyframe(reason);
        }
    });
    let send_bps = cfg.video_bps + audio_bps;
    let writers = rtc.set_local_tracks(&tracks, stream_id, on_keyframe, send_bps, audio_bps);
    let video = cfg
        .specs
        .iter()
        .position(|s| s.kind == MediaKind::Video)
        .map(|i| writers[i].clone());
    let ingest = Arc::new(Ingest {
        rtc: ingest,
        token: cfg.token.clone(),
        continuity: cfg.specs.iter().map(|_| Arc::default()).collect(),
        specs: cfg.specs.clone(),
        writers,
        publisher: Mutex::new(None),
        last_pli: Mutex::new(None),
        connect_timeout: cfg.connect_timeout,
    });
    let _ = slot.set(Arc::downgrade(&ingest));
    let app = axum::Router::new()
        .route("/whip", axum::routing::post(post).options(preflight))
        .route(
            "/whip/{id}",
            axum::routing::patch(patch)
                .delete(delete)
                .options(preflight),
        )
        // An offer is a few kilobytes; nothing bigger is read.
        .layer(axum::extract::DefaultBodyLimit::max(serve::MAX_BODY))
        .with_state(ingest.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("the WHIP endpoint stopped: {e}");
        }
    });
    let url = format!("http://{addr}/whip");
    if cfg.token.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            "anyone who can reach {addr} may publish into the room: pass --whip-token to ask \
             publishers for a token"
        );
    }
    let kinds: Vec<&str> = cfg.specs.iter().map(|s| s.mime.as_str()).collect();
    tracing::info!(
        "waiting for a WHIP publisher at {url} ({}), forwarded to every receiver as it comes",
        kinds.join(" + ")
    );
    Ok((
        IngestServer {
            url,
            server,
            ingest,
        },
        video,
    ))
}

impl Ingest {
    /// Takes the publisher away (if it is `id`, or whoever it is).
    fn take_publisher(&self, id: Option<&str>) -> Option<Publisher> {
        let mut slot = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
        if id.is_some_and(|id| slot.as_ref().is_none_or(|p| p.id != id)) {
            return None;
        }
        slot.take()
    }

    /// Changes the publisher, if it is still `id`.
    fn update(&self, id: &str, change: impl FnOnce(&mut Publisher)) {
        let mut slot = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = slot.as_mut().filter(|p| p.id == id) {
            change(p);
        }
    }

    fn request_keyframe(&self, reason: crate::media::KeyframeReason) {
        let target = {
            let slot = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
            slot.as_ref()
                .and_then(|p| Some((p.handle.clone()?, p.video_ssrc?)))
        };
        let Some((handle, ssrc)) = target else {
            return;
        };
        {
            let mut last = self.last_pli.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < PLI_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        if handle.request_keyframe(ssrc) {
            tracing::debug!("asked the WHIP publisher for a key frame ({reason:?})");
        }
    }
}

async fn post(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, offer: String) -> Response {
    if let Err(refusal) = serve::check_offer(ingest.token.as_deref(), &headers) {
        return refusal.into();
    }
    let id = uuid::Uuid::new_v4().to_string();
    // The endpoint is taken before anything costly is made for this offer.
    {
        let mut slot = ingest.publisher.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return refuse(
                StatusCode::CONFLICT,
                "a publisher is already live here; it must stop (DELETE) first",
            );
        }
        *slot = Some(Publisher {
            id: id.clone(),
            handle: None,
            ufrag: whip::ice_ufrag(&offer).map(str::to_owned),
            video_ssrc: None,
        });
    }
    // On a task of its own: a client that goes away meanwhile must not
    // leave the endpoint taken.
    match tokio::spawn(admit(ingest.clone(), id.clone(), offer)).await {
        Ok(r) => r,
        Err(e) => {
            ingest.take_publisher(Some(&id));
            refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
    }
}

/// Makes the connection for publisher `id` (which holds the endpoint)
/// and answers its offer; the endpoint is free again on any failure.
async fn admit(ingest: Arc<Ingest>, id: String, offer: String) -> Response {
    let fail = |status, why: String| {
        let ingest = ingest.clone();
        let id = id.clone();
        async move {
            if let Some(h) = ingest.take_publisher(Some(&id)).and_then(|p| p.handle) {
                h.close().await;
            }
            tracing::warn!("refused a WHIP publisher: {why}");
            refuse(status, &why)
        }
    };
    let (tx, mut events) = mpsc::channel(128);
    let handle = match ingest.rtc.ingest_peer(&id, tx, &ingest.specs).await {
        Ok(h) => h,
        Err(e) => {
            let why = format!("cannot create a peer connection: {e:#}");
            return fail(StatusCode::INTERNAL_SERVER_ERROR, why).await;
        }
    };
    ingest.update(&id, |p| p.handle = Some(handle.clone()));
    let answer = match super::whip::answer(&handle, &mut events, &offer).await {
        Ok(a) => a,
        Err(why) => {
            handle.close().await;
            return fail(StatusCode::BAD_REQUEST, why).await;
        }
    };
    let rejected = whip::rejected(&offer, &answer);
    if !rejected.is_empty() {
        handle.close().await;
        let what: Vec<String> = rejected.iter().map(|r| r.kind.clone()).collect();
        let takes: Vec<&str> = ingest.specs.iter().map(|s| s.mime.as_str()).collect();
        let why = format!(
            "this endpoint takes {}; the offer has none of them for its {} (p2p send \
             --video-codec picks the video codec)",
            takes.join(" and "),
            what.join(" and ")
        );
        return fail(StatusCode::UNPROCESSABLE_ENTITY, why).await;
    }
    tracing::info!("a WHIP publisher is connecting ({})", rtc::short(&id));
    tokio::spawn(watch(ingest.clone(), id.clone(), events));
    serve::created(&format!("/whip/{id}"), &id, answer)
}

/// Follows one publisher's connection: forwards its tracks, and frees the
/// endpoint when it goes, or when it has not connected in time.
async fn watch(ingest: Arc<Ingest>, id: String, mut events: mpsc::Receiver<(String, RtcEvent)>) {
    let deadline = tokio::time::sleep(ingest.connect_timeout);
    tokio::pin!(deadline);
    let mut connected = false;
    let why = loop {
        let ev = tokio::select! {
            () = &mut deadline, if !connected => break format!(
                "it did not connect within {} s",
                ingest.connect_timeout.as_secs_f64()
            ),
            ev = events.recv() => ev,
        };
        let Some((_, ev)) = ev else {
            break "its connection closed".to_owned();
        };
        match ev {
            RtcEvent::Track(track) => {
                let Some(i) = ingest.specs.iter().position(|s| s.kind == track.spec.kind) else {
                    continue;
                };
                if track.spec.kind == MediaKind::Video {
                    let ssrc = track.ssrc();
                    ingest.update(&id, |p| p.video_ssrc = Some(ssrc));
                    // Receivers already in the room need a picture to
                    // start from.
                    ingest.request_keyframe(crate::media::KeyframeReason::Join);
                }
                tracing::info!("forwarding the WHIP publisher's {}", track.spec.mime);
                tokio::spawn(rtc::relay(
                    track,
                    ingest.writers[i].clone(),
                    ingest.continuity[i].clone(),
                ));
            }
            RtcEvent::Peer(PeerEvent::Connected) => {
                connected = true;
                tracing::info!("the WHIP publisher is connected ({})", rtc::short(&id));
            }
            RtcEvent::Peer(PeerEvent::Failed(why)) => break why,
            _ => {}
        }
    };
    if let Some(p) = ingest.take_publisher(Some(&id)) {
        tracing::info!("the WHIP publisher is gone: {why}");
        if let Some(h) = p.handle {
            h.close().await;
        }
    }
}

async fn patch(
    State(ingest): State<Arc<Ingest>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !serve::authorized(ingest.token.as_deref(), &headers) {
        return refuse(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    let (handle, ufrag) = {
        let slot = ingest.publisher.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref().filter(|p| p.id == id) {
            Some(Publisher {
                handle: Some(h),
                ufrag,
                ..
            }) => (h.clone(), ufrag.clone()),
            _ => return refuse(StatusCode::NOT_FOUND, "no such session"),
        }
    };
    let request = (&headers, body.as_str());
    trickle_into(&handle, request, &id, ufrag.as_deref(), "publish again").await
}

/// Answers a trickle PATCH to session `id`, whose connection is `handle`
/// and whose offer had ICE ufrag `ufrag`: its candidates are added, or it
/// is refused (`again`: what the client does instead of an ICE restart).
pub(super) async fn trickle_into(
    handle: &PeerHandle,
    (headers, body): (&HeaderMap, &str),
    id: &str,
    ufrag: Option<&str>,
    again: &str,
) -> Response {
    let fragment = match serve::trickled(headers, body, id, ufrag, again) {
        Ok(f) => f,
        Err(refusal) => return refusal.into(),
    };
    for candidate in fragment.candidates {
        handle
            .add_candidate(Candidate {
                candidate,
                sdp_mid: fragment.mid.clone(),
                sdp_m_line_index: Some(0),
                username_fragment: fragment.ufrag.clone(),
            })
            .await;
    }
    reply(StatusCode::NO_CONTENT, &[], String::new())
}

async fn delete(
    State(ingest): State<Arc<Ingest>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !serve::authorized(ingest.token.as_deref(), &headers) {
        return refuse(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    match ingest.take_publisher(Some(&id)) {
        Some(p) => {
            tracing::info!("the WHIP publisher ended its session");
            if let Some(h) = p.handle {
                h.close().await;
            }
            reply(StatusCode::OK, &[], String::new())
        }
        None => refuse(StatusCode::NOT_FOUND, "no such session"),
    }
}

async fn preflight() -> Response {
    serve::preflight()
}
