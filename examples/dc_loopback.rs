//! The ceiling of webrtc-rs data channels on this machine: two peer
//! connections, one ordered, reliable channel, `MB` megabytes (default
//! 200) sent in `CHUNK`-byte messages (default 65536) with at most `HIGH`
//! bytes unacknowledged (default 4 MiB). No p2p session code in the path,
//! only the engine with the settings p2p gives it (UDP socket buffers, SCTP
//! receive window, ICE tick): compare its rate with `p2p send --binary`
//! (figure 4).
//!
//!   cargo run --release --example dc_loopback            # 200 MB
//!   MB=50 CHUNK=16384 HIGH=1048576 cargo run --release --example dc_loopback
//!   dc_loopback recv DIR & dc_loopback send DIR   # two processes, SDP via files
//!   PLAIN=1 …   # webrtc-rs defaults instead (no p2p settings)

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCSessionDescription,
};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reports the channel the other side opens, and when gathering is done.
struct Handler {
    channels: mpsc::Sender<Arc<dyn DataChannel>>,
    gathered: mpsc::Sender<()>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.channels.send(dc).await;
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }
}

struct Peer {
    pc: Arc<dyn PeerConnection>,
    channels: mpsc::Receiver<Arc<dyn DataChannel>>,
    gathered: mpsc::Receiver<()>,
}

async fn peer(high: usize) -> Res<Peer> {
    let (ctx, channels) = mpsc::channel(1);
    let (gtx, gathered) = mpsc::channel(1);
    let handler = Arc::new(Handler {
        channels: ctx,
        gathered: gtx,
    });
    let builder = PeerConnectionBuilder::new()
        .with_handler(handler)
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .with_data_channel_send_buffer_limit(high);
    let builder = if std::env::var_os("PLAIN").is_some() {
        builder
    } else {
        builder
            .with_runtime(p2p::session::rtc::engine_runtime())
            .with_setting_engine(p2p::session::rtc::engine_settings())
    };
    let pc: Arc<dyn PeerConnection> = Arc::new(builder.build().await?);
    Ok(Peer {
        pc,
        channels,
        gathered,
    })
}

/// Sets `desc` and waits until every candidate is in it (no trickle).
async fn set_local(p: &mut Peer, desc: RTCSessionDescription) -> Res<RTCSessionDescription> {
    p.pc.set_local_description(desc).await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), p.gathered.recv()).await;
    Ok(p.pc
        .local_description()
        .await
        .ok_or("no local description")?)
}

async fn offer(a: &mut Peer) -> Res<RTCSessionDescription> {
    let o = a.pc.create_offer(None).await?;
    set_local(a, o).await
}

async fn answer(b: &mut Peer, offer: RTCSessionDescription) -> Res<RTCSessionDescription> {
    b.pc.set_remote_description(offer).await?;
    let a = b.pc.create_answer(None).await?;
    set_local(b, a).await
}

/// Waits until `dc` is open.
async fn opened(dc: &Arc<dyn DataChannel>) -> Res<()> {
    while let Some(ev) = dc.poll().await {
        if matches!(ev, DataChannelEvent::OnOpen) {
            return Ok(());
        }
    }
    Err("channel closed before it opened".into())
}

fn main() -> Res<()> {
    // RT=current runs everything on one thread; WORKERS=n sizes the
    // multi-thread runtime (default: one per core).
    let mut rt = if std::env::var("RT").as_deref() == Ok("current") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = std::env::var("WORKERS").ok().and_then(|v| v.parse().ok()) {
            b.worker_threads(n);
        }
        b
    };
    rt.enable_all().build()?.block_on(run())
}

fn init() -> RTCDataChannelInit {
    RTCDataChannelInit {
        ordered: true,
        ..Default::default()
    }
}

async fn run() -> Res<()> {
    let total = env("MB", 200) * 1_000_000;
    let chunk = env("CHUNK", 65536);
    let high = env("HIGH", 4 << 20);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        // Two processes: `send DIR` and `recv DIR` swap SDP through files.
        Some("send") => {
            let dir = std::path::PathBuf::from(args.get(1).ok_or("send DIR")?);
            let mut a = peer(high).await?;
            let dc = a.pc.create_data_channel("data", Some(init())).await?;
            let o = offer(&mut a).await?;
            write_file(&dir.join("offer"), &serde_json::to_string(&o)?)?;
            let ans = wait_file(&dir.join("answer")).await?;
            a.pc.set_remote_description(serde_json::from_str(&ans)?)
                .await?;
            opened(&dc).await?;
            let t0 = Instant::now();
            send_all(&dc, total, chunk).await?;
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "sent {} MB in {secs:.2} s: {:.1} MB/s",
                total / 1_000_000,
                total as f64 / secs / 1e6
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = a.pc.close().await;
        }
        Some("recv") => {
            let dir = std::path::PathBuf::from(args.get(1).ok_or("recv DIR")?);
            let mut b = peer(high).await?;
            let o = wait_file(&dir.join("offer")).await?;
            let ans = answer(&mut b, serde_json::from_str(&o)?).await?;
            write_file(&dir.join("answer"), &serde_json::to_string(&ans)?)?;
            let dc = b.channels.recv().await.ok_or("no channel")?;
            let (got, secs) = recv_all(dc, total).await;
            let secs = secs.map_or(0.0, |d| d.as_secs_f64());
            println!(
                "received {} MB in {secs:.2} s: {:.1} MB/s",
                got / 1_000_000,
                got as f64 / secs / 1e6
            );
            // Let the last SACKs reach the sender before closing.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = b.pc.close().await;
        }
        _ => one_process(total, chunk, high).await?,
    }
    Ok(())
}

fn write_file(path: &std::path::Path, text: &str) -> Res<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

async fn wait_file(path: &std::path::Path) -> Res<String> {
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads until `total` bytes arrived; the time from the first message on.
async fn recv_all(dc: Arc<dyn DataChannel>, total: usize) -> (usize, Option<Duration>) {
    let mut got = 0usize;
    let mut first = None;
    while got < total {
        match dc.poll().await {
            Some(DataChannelEvent::OnMessage(m)) => {
                first.get_or_insert_with(Instant::now);
                got += m.data.len();
            }
            Some(DataChannelEvent::OnClose) | None => break,
            Some(_) => {}
        }
    }
    (got, first.map(|t| t.elapsed()))
}

/// Sends `total` bytes in `chunk`-byte messages (`send` waits while the
/// send buffer is full), then waits until all of it was acknowledged.
async fn send_all(dc: &Arc<dyn DataChannel>, total: usize, chunk: usize) -> Res<()> {
    let data = BytesMut::zeroed(chunk);
    let mut sent = 0;
    while sent < total {
        let len = chunk.min(total - sent);
        dc.send(BytesMut::from(&data[..len])).await?;
        sent += len;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while dc.outstanding_bytes().await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

async fn one_process(total: usize, chunk: usize, high: usize) -> Res<()> {
    let (mut a, mut b) = (peer(high).await?, peer(high).await?);
    let dc = a.pc.create_data_channel("data", Some(init())).await?;
    let o = offer(&mut a).await?;
    let ans = answer(&mut b, o).await?;
    a.pc.set_remote_description(ans).await?;
    let recv = b.channels.recv().await.ok_or("no channel")?;
    opened(&dc).await?;
    let t0 = Instant::now();
    let reader = tokio::spawn(recv_all(recv, total));
    send_all(&dc, total, chunk).await?;
    let (got, secs) = reader.await?;
    let secs = secs.unwrap_or_else(|| t0.elapsed()).as_secs_f64();
    println!(
        "{} MB in {:.2} s: {:.1} MB/s ({} B messages, {} B send buffer)",
        got / 1_000_000,
        secs,
        got as f64 / secs / 1e6,
        chunk,
        high
    );
    let _ = a.pc.close().await;
    let _ = b.pc.close().await;
    Ok(())
}
