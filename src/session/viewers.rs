//! `p2p send --whep-listen ADDR`: a WHEP endpoint (WHIP's playback twin)
//! that players, browsers and servers watch the sender's media from. A
//! viewer POSTs a receive-only offer and gets the answer; its connection
//! is one more receiver of the same encode, on the layer its own path
//! carries, with the same congestion control and probing as the room's
//! receivers. DELETE ends it. Many viewers at once, each on its own path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tokio::sync::{mpsc, Notify};

use super::machine::PeerEvent;
use super::rtc::{self, PeerHandle, Rtc, RtcEvent};
use crate::whip;
use crate::whip::serve::{self, refuse, reply};

/// How long the exit waits for viewers' connections to close.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What `--whep-listen` needs.
#[derive(Debug, Clone)]
pub struct ViewersConfig {
    pub listen: String,
    pub token: Option<String>,
    /// Viewers served at once; more are refused (503) until one leaves.
    pub max: usize,
    /// How long a viewer may take to connect before it is let go.
    pub connect_timeout: Duration,
    /// What the sender sends (`video/VP8`, `audio/opus`): an offer
    /// whose section of a kind sent takes none of it is refused.
    pub sends: Vec<String>,
}

/// A viewer: its connection (None while it is being made), and the ICE
/// ufrag of its offer (a PATCH with another is an ICE restart).
struct Viewer {
    handle: Option<PeerHandle>,
    ufrag: Option<String>,
}

struct Endpoint {
    rtc: Rtc,
    cfg: ViewersConfig,
    viewers: Mutex<HashMap<String, Viewer>>,
    /// Viewers whose connection is up.
    watching: AtomicUsize,
    /// Told each time a viewer's connection comes up.
    connected: Arc<Notify>,
}

/// A running endpoint; its viewers' connections close when it is dropped.
pub struct ViewersServer {
    pub url: String,
    /// Told each time a viewer's connection comes up (a file waiting for
    /// its first receiver starts then).
    pub connected: Arc<Notify>,
    server: tokio::task::JoinHandle<()>,
    endpoint: Arc<Endpoint>,
}

impl ViewersServer {
    /// Ends every viewer's session: each connection is closed, so its
    /// viewer hears that the stream ended (DTLS close_notify) at once
    /// rather than losing the path seconds later.
    pub async fn close(self) {
        self.server.abort();
        let all: Vec<Viewer> = self.endpoint.lock().drain().map(|(_, v)| v).collect();
        let closing = all
            .into_iter()
            .filter_map(|v| v.handle)
            .map(|h| async move {
                h.close().await;
                let _ = tokio::time::timeout(CLOSE_WAIT, h.finished()).await;
            });
        futures_util::future::join_all(closing).await;
    }
}

impl Drop for ViewersServer {
    fn drop(&mut self) {
        self.server.abort();
        let all: Vec<Viewer> = self.endpoint.lock().drain().map(|(_, v)| v).collect();
        for handle in all.into_iter().filter_map(|v| v.handle) {
            tokio::spawn(async move { handle.close().await });
        }
    }
}

/// Starts the endpoint; each viewer's connection is made by `rtc`, which
/// carries the sender's tracks.
pub async fn start(cfg: ViewersConfig, rtc: Rtc) -> anyhow::Result<ViewersServer> {
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on --whep-listen {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    if cfg.token.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            "anyone who can reach {addr} may watch: pass --whep-token to ask viewers for a token"
        );
    }
    let connected = Arc::new(Notify::new());
    let endpoint = Arc::new(Endpoint {
        rtc,
        cfg,
        viewers: Mutex::default(),
        watching: AtomicUsize::new(0),
        connected: connected.clone(),
    });
    let app = axum::Router::new()
        .route("/whep", axum::routing::post(post).options(preflight))
        .route(
            "/whep/{id}",
            axum::routing::patch(patch)
                .delete(delete)
                .options(preflight),
        )
        .layer(axum::extract::DefaultBodyLimit::max(serve::MAX_BODY))
        .with_state(endpoint.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("the WHEP endpoint stopped: {e}");
        }
    });
    let url = format!("http://{addr}/whep");
    tracing::info!(
        "WHEP viewers watch at {url} ({})",
        endpoint.cfg.sends.join(" and ")
    );
    Ok(ViewersServer {
        url,
        connected,
        server,
        endpoint,
    })
}

impl Endpoint {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Viewer>> {
        self.viewers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets viewer `id` go: its connection closes. False if it was gone.
    async fn drop_viewer(&self, id: &str) -> bool {
        let Some(viewer) = self.lock().remove(id) else {
            return false;
        };
        if let Some(h) = viewer.handle {
            h.close().await;
        }
        true
    }
}

async fn preflight() -> Response {
    serve::preflight()
}

async fn post(State(ep): State<Arc<Endpoint>>, headers: HeaderMap, offer: String) -> Response {
    if let Err(refusal) = serve::check_offer(ep.cfg.token.as_deref(), &headers) {
        return refusal.into();
    }
    let id = uuid::Uuid::new_v4().to_string();
    // The place is taken before anything costly is made for this offer.
    {
        let mut viewers = ep.lock();
        if viewers.len() >= ep.cfg.max {
            let why = format!(
                "{} viewers are watching already, the most --max-receivers allows; try again later",
                viewers.len()
            );
            tracing::warn!("refused a WHEP viewer: {why}");
            let mut r = refuse(StatusCode::SERVICE_UNAVAILABLE, &why);
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
            return r;
        }
        viewers.insert(
            id.clone(),
            Viewer {
                handle: None,
                ufrag: whip::ice_ufrag(&offer).map(str::to_owned),
            },
        );
    }
    // On a task of its own: a client that goes away meanwhile must not
    // leave its place taken.
    match tokio::spawn(admit(ep.clone(), id.clone(), offer)).await {
        Ok(r) => r,
        Err(e) => {
            ep.drop_viewer(&id).await;
            refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
    }
}

/// Makes viewer `id`'s connection and answers its offer; its place is
/// free again on any failure.
async fn admit(ep: Arc<Endpoint>, id: String, offer: String) -> Response {
    let fail = |status, why: String| {
        let ep = ep.clone();
        let id = id.clone();
        async move {
            ep.drop_viewer(&id).await;
            tracing::warn!("refused a WHEP viewer: {why}");
            refuse(status, &why)
        }
    };
    if let Err(why) = takes(&offer, &ep.cfg.sends) {
        return fail(StatusCode::UNPROCESSABLE_ENTITY, why).await;
    }
    let (tx, mut events) = mpsc::channel(128);
    let handle = match ep.rtc.peer(&id, tx).await {
        Ok(h) => h,
        Err(e) => {
            let why = format!("cannot create a peer connection: {e:#}");
            return fail(StatusCode::INTERNAL_SERVER_ERROR, why).await;
        }
    };
    if let Some(v) = ep.lock().get_mut(&id) {
        v.handle = Some(handle.clone());
    }
    let answer = match super::whip::answer(&handle, &mut events, &offer).await {
        Ok(a) => a,
        Err(why) => return fail(StatusCode::BAD_REQUEST, format!("bad offer: {why}")).await,
    };
    if !whip::sends_media(&answer) {
        let why = format!(
            "this endpoint sends {}; the answer to the offer carries none of it",
            ep.cfg.sends.join(" and ")
        );
        return fail(StatusCode::UNPROCESSABLE_ENTITY, why).await;
    }
    tracing::info!("a WHEP viewer is connecting ({})", rtc::short(&id));
    tokio::spawn(watch(ep.clone(), id.clone(), events));
    serve::created(&format!("/whep/{id}"), &id, answer)
}

/// Whether a viewer's offer takes what we send (`sends`, as mime types):
/// it must receive some of it, and name our codec in every section of a
/// kind we send; a viewer would otherwise watch without it, unaware. The
/// refusal says what to change.
fn takes(offer: &str, sends: &[String]) -> Result<(), String> {
    if !whip::receives_media(offer) {
        return Err(
            "the offer receives no media: a WHEP viewer offers recvonly audio or video".into(),
        );
    }
    let mut taken = 0;
    for mime in sends {
        match whip::receives_codec(offer, mime) {
            Some(true) => taken += 1,
            Some(false) => {
                return Err(format!(
                    "this endpoint sends {}; the offer does not take {mime} (p2p send \
                     --video-codec picks the video codec)",
                    sends.join(" and ")
                ))
            }
            None => {}
        }
    }
    if taken == 0 {
        return Err(format!(
            "this endpoint sends {}; the offer receives none of these kinds",
            sends.join(" and ")
        ));
    }
    Ok(())
}

/// Follows one viewer's connection, and frees its place when it goes, or
/// when it has not connected in time.
async fn watch(ep: Arc<Endpoint>, id: String, mut events: mpsc::Receiver<(String, RtcEvent)>) {
    let deadline = tokio::time::sleep(ep.cfg.connect_timeout);
    tokio::pin!(deadline);
    let mut connected = false;
    let why = loop {
        let ev = tokio::select! {
            () = &mut deadline, if !connected => break format!(
                "it did not connect within {} s",
                ep.cfg.connect_timeout.as_secs_f64()
            ),
            ev = events.recv() => ev,
        };
        let Some((_, ev)) = ev else {
            break "its connection closed".to_owned();
        };
        match ev {
            RtcEvent::Peer(PeerEvent::Connected) if !connected => {
                connected = true;
                let n = ep.watching.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(
                    "a WHEP viewer is watching ({}); {n} watching",
                    rtc::short(&id)
                );
                ep.connected.notify_one();
            }
            RtcEvent::Peer(PeerEvent::Failed(why)) => break why,
            _ => {}
        }
    };
    let n = if connected {
        ep.watching.fetch_sub(1, Ordering::Relaxed) - 1
    } else {
        ep.watching.load(Ordering::Relaxed)
    };
    if ep.drop_viewer(&id).await {
        tracing::info!(
            "a WHEP viewer is gone ({}): {why}; {n} watching",
            rtc::short(&id)
        );
    }
}

async fn patch(
    State(ep): State<Arc<Endpoint>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !serve::authorized(ep.cfg.token.as_deref(), &headers) {
        return refuse(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    let (handle, ufrag) = match ep.lock().get(&id) {
        Some(Viewer {
            handle: Some(h),
            ufrag,
        }) => (h.clone(), ufrag.clone()),
        _ => return refuse(StatusCode::NOT_FOUND, "no such session"),
    };
    let request = (&headers, body.as_str());
    super::ingest::trickle_into(&handle, request, &id, ufrag.as_deref(), "watch again").await
}

async fn delete(
    State(ep): State<Arc<Endpoint>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !serve::authorized(ep.cfg.token.as_deref(), &headers) {
        return refuse(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    if ep.drop_viewer(&id).await {
        // Its watcher task says it is gone when the connection closes.
        tracing::info!("a WHEP viewer ended its session ({})", rtc::short(&id));
        reply(StatusCode::OK, &[], String::new())
    } else {
        refuse(StatusCode::NOT_FOUND, "no such session")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AV: &str =
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n\
                      m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n\
                      a=rtpmap:102 H264/90000\r\n";

    fn sends(mimes: &[&str]) -> Vec<String> {
        mimes.iter().map(|m| (*m).to_owned()).collect()
    }

    #[test]
    fn a_viewer_takes_what_it_names_of_what_we_send() {
        assert!(takes(AV, &sends(&["video/VP8", "audio/opus"])).is_ok());
        assert!(takes(AV, &sends(&["video/H264"])).is_ok());
        // Audio only offered, audio and video sent: it hears what it asked.
        let audio =
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(takes(audio, &sends(&["video/VP8", "audio/opus"])).is_ok());
        let why = takes(audio, &sends(&["video/VP8"])).unwrap_err();
        assert!(why.contains("none of these kinds"), "{why}");
    }

    #[test]
    fn a_viewer_without_our_codec_is_told_which_it_lacks() {
        let h264 = AV.replace("a=rtpmap:96 VP8/90000\r\n", "");
        let why = takes(&h264, &sends(&["video/VP8", "audio/opus"])).unwrap_err();
        assert!(why.contains("does not take video/VP8"), "{why}");
        assert!(why.contains("--video-codec"), "{why}");
        let publisher = AV.replace("recvonly", "sendonly");
        let why = takes(&publisher, &sends(&["video/VP8"])).unwrap_err();
        assert!(why.contains("recvonly"), "{why}");
    }
}
