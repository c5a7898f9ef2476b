//! The ceiling of webrtc-rs data channels on this machine: two peer
//! connections in one process, one detached, ordered, reliable channel,
//! `MB` megabytes (default 200) sent in `CHUNK`-byte messages (default
//! 65536) with at most `HIGH` bytes buffered (default 1 MiB). No p2p code
//! in the path: compare its rate with `p2p send --binary` (issue 7, figure 4).
//!
//!   cargo run --release --example dc_loopback            # 200 MB
//!   MB=50 CHUNK=16384 HIGH=4194304 cargo run --release --example dc_loopback
//!   dc_loopback recv DIR & dc_loopback send DIR   # two processes, SDP via files

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::data_channel::data_channel_init::RTCDataChannelInit;
use webrtc::data_channel::RTCDataChannel;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::RTCPeerConnection;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn peer() -> Res<Arc<RTCPeerConnection>> {
    let mut s = SettingEngine::default();
    s.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    s.set_include_loopback_candidate(true);
    s.detach_data_channels();
    let api = APIBuilder::new().with_setting_engine(s).build();
    Ok(Arc::new(
        api.new_peer_connection(RTCConfiguration::default()).await?,
    ))
}

/// Full (non-trickle) offer/answer between `a` and `b`.
async fn connect(a: &RTCPeerConnection, b: &RTCPeerConnection) -> Res<()> {
    let offer = a.create_offer(None).await?;
    let mut done = a.gathering_complete_promise().await;
    a.set_local_description(offer).await?;
    let _ = done.recv().await;
    b.set_remote_description(a.local_description().await.ok_or("no offer")?)
        .await?;
    let answer = b.create_answer(None).await?;
    let mut done = b.gathering_complete_promise().await;
    b.set_local_description(answer).await?;
    let _ = done.recv().await;
    a.set_remote_description(b.local_description().await.ok_or("no answer")?)
        .await?;
    Ok(())
}

type Raw = Arc<webrtc::data::data_channel::DataChannel>;

/// Detaches `dc` once it is open.
fn on_open(dc: Arc<RTCDataChannel>, tx: mpsc::Sender<Raw>) {
    let dc2 = dc.clone();
    dc.on_open(Box::new(move || {
        Box::pin(async move {
            if let Ok(raw) = dc2.detach().await {
                let _ = tx.send(raw).await;
            }
        })
    }));
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

async fn run() -> Res<()> {
    let total = env("MB", 200) * 1_000_000;
    let chunk = env("CHUNK", 65536);
    let high = env("HIGH", 1 << 20);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let init = RTCDataChannelInit {
        ordered: Some(true),
        ..Default::default()
    };
    match args.first().map(String::as_str) {
        // Two processes: `send DIR` and `recv DIR` swap SDP through files.
        Some("send") => {
            let dir = std::path::PathBuf::from(args.get(1).ok_or("send DIR")?);
            let a = peer().await?;
            let (tx, mut rx) = mpsc::channel(1);
            on_open(a.create_data_channel("data", Some(init)).await?, tx);
            let offer = a.create_offer(None).await?;
            let mut done = a.gathering_complete_promise().await;
            a.set_local_description(offer).await?;
            let _ = done.recv().await;
            let sdp = a.local_description().await.ok_or("no offer")?;
            std::fs::write(dir.join("offer.tmp"), serde_json::to_string(&sdp)?)?;
            std::fs::rename(dir.join("offer.tmp"), dir.join("offer"))?;
            let answer = wait_file(&dir.join("answer")).await?;
            a.set_remote_description(serde_json::from_str(&answer)?)
                .await?;
            let send = rx.recv().await.ok_or("channel never opened")?;
            let t0 = Instant::now();
            send_all(&send, total, chunk, high).await?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while send.buffered_amount() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "sent {} MB in {secs:.2} s: {:.1} MB/s",
                total / 1_000_000,
                total as f64 / secs / 1e6
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = a.close().await;
        }
        Some("recv") => {
            let dir = std::path::PathBuf::from(args.get(1).ok_or("recv DIR")?);
            let b = peer().await?;
            let (tx, mut rx) = mpsc::channel(1);
            b.on_data_channel(Box::new(move |dc| {
                on_open(dc, tx.clone());
                Box::pin(async {})
            }));
            let offer = wait_file(&dir.join("offer")).await?;
            b.set_remote_description(serde_json::from_str(&offer)?)
                .await?;
            let answer = b.create_answer(None).await?;
            let mut done = b.gathering_complete_promise().await;
            b.set_local_description(answer).await?;
            let _ = done.recv().await;
            let sdp = b.local_description().await.ok_or("no answer")?;
            std::fs::write(dir.join("answer.tmp"), serde_json::to_string(&sdp)?)?;
            std::fs::rename(dir.join("answer.tmp"), dir.join("answer"))?;
            let recv = rx.recv().await.ok_or("channel never opened")?;
            let (got, secs) = recv_all(recv, total).await;
            let secs = secs.map_or(0.0, |d| d.as_secs_f64());
            println!(
                "received {} MB in {secs:.2} s: {:.1} MB/s",
                got / 1_000_000,
                got as f64 / secs / 1e6
            );
            // Let the last SACKs reach the sender before closing.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = b.close().await;
        }
        _ => one_process(total, chunk, high, init).await?,
    }
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
async fn recv_all(recv: Raw, total: usize) -> (usize, Option<Duration>) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    let mut first = None;
    while got < total {
        match recv.read_data_channel(&mut buf).await {
            Ok((0, _)) | Err(_) => break,
            Ok((n, _)) => {
                first.get_or_insert_with(Instant::now);
                got += n;
            }
        }
    }
    (got, first.map(|t| t.elapsed()))
}

/// Sends `total` bytes in `chunk`-byte messages, never more than `high`
/// buffered.
async fn send_all(send: &Raw, total: usize, chunk: usize, high: usize) -> Res<()> {
    let low = Arc::new(Notify::new());
    send.set_buffered_amount_low_threshold(high / 4);
    let n = low.clone();
    send.on_buffered_amount_low(Box::new(move || {
        let n = n.clone();
        Box::pin(async move { n.notify_one() })
    }));
    let data = Bytes::from(vec![0u8; chunk]);
    let mut sent = 0;
    while sent < total {
        while send.buffered_amount() > high {
            tokio::select! {
                () = low.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        let len = chunk.min(total - sent);
        send.write_data_channel(&data.slice(..len), false).await?;
        sent += len;
    }
    Ok(())
}

async fn one_process(total: usize, chunk: usize, high: usize, init: RTCDataChannelInit) -> Res<()> {
    let (a, b) = (peer().await?, peer().await?);
    let (tx_a, mut rx_a) = mpsc::channel(1);
    let (tx_b, mut rx_b) = mpsc::channel(1);
    on_open(a.create_data_channel("data", Some(init)).await?, tx_a);
    b.on_data_channel(Box::new(move |dc| {
        on_open(dc, tx_b.clone());
        Box::pin(async {})
    }));
    connect(&a, &b).await?;
    let send = rx_a.recv().await.ok_or("sender channel never opened")?;
    let recv = rx_b.recv().await.ok_or("receiver channel never opened")?;
    let t0 = Instant::now();
    let reader = tokio::spawn(recv_all(recv, total));
    send_all(&send, total, chunk, high).await?;
    let (got, secs) = reader.await?;
    let secs = secs.unwrap_or_else(|| t0.elapsed()).as_secs_f64();
    println!(
        "{} MB in {:.2} s: {:.1} MB/s ({} B messages, {} B high water)",
        got / 1_000_000,
        secs,
        got as f64 / secs / 1e6,
        chunk,
        high
    );
    let _ = a.close().await;
    let _ = b.close().await;
    Ok(())
}
