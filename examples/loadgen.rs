//! Load generator and measuring sinks for `scripts/bench.sh` (issue 7).
//!
//! Not part of the product: a Cargo example so it shares the crate's
//! dependencies (tokio-tungstenite, async-nats). Every subcommand prints one
//! JSON object on stdout when it is done.
//!
//! ```text
//! loadgen relay     --url ws://…   [--conns 100 --room-size 10 --size 200 --secs 10 --window 32]
//!                   [--rate R]     (R messages/s per connection, open loop, instead of the window)
//! loadgen nats      --url nats://… [same]
//! loadgen flood     --url ws://…   [--ns bench,r0 --size 200 --secs 10]
//!                   (one client writing `emit` frames as fast as its socket takes them)
//! loadgen idle-ws   --url ws://…   --conns N --pid PID   (prints RSS of PID with N idle clients)
//! loadgen idle-nats --url nats://… --conns N --pid PID
//! loadgen sink                        (stdin → counts bytes, times first..last byte)
//! loadgen lines-src --count N --rate R [--size 64] [--wait-file F]
//! loadgen lines-sink --count N        (one-way latency of lines from lines-src)
//! ```

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(cmd) = args.next() else {
        eprintln!(
            "usage: loadgen relay|nats|flood|idle-ws|idle-nats|sink|lines-src|lines-sink [--flag value]…"
        );
        std::process::exit(2);
    };
    let rest: Vec<String> = args.collect();
    let opts = Opts::parse(&rest);
    let result = match cmd.as_str() {
        "sink" => sink(),
        "lines-src" => lines_src(&opts),
        "lines-sink" => lines_sink(&opts),
        _ => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                match cmd.as_str() {
                    "relay" => fanout(&opts, Backend::Ws).await,
                    "nats" => fanout(&opts, Backend::Nats).await,
                    "flood" => flood(&opts).await,
                    "idle-ws" => idle(&opts, Backend::Ws).await,
                    "idle-nats" => idle(&opts, Backend::Nats).await,
                    other => Err(format!("unknown subcommand {other}").into()),
                }
            })
        }
    };
    match result {
        Ok(serde_json::Value::Null) => {}
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("loadgen {cmd}: {e}");
            std::process::exit(1);
        }
    }
}

struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Self {
        let mut m = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            if let Some(k) = k.strip_prefix("--") {
                m.insert(k.to_owned(), it.next().cloned().unwrap_or_default());
            }
        }
        Opts(m)
    }
    fn str(&self, k: &str) -> Res<String> {
        self.0
            .get(k)
            .cloned()
            .ok_or_else(|| format!("--{k} is required").into())
    }
    fn num(&self, k: &str, default: f64) -> f64 {
        self.0
            .get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

/// Nanoseconds since the first call, monotonic: timestamps inside one process.
fn mono_ns() -> u64 {
    static T0: OnceLock<Instant> = OnceLock::new();
    T0.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_kb(pid: u32) -> Res<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}

// ---------------------------------------------------------------- pub/sub load

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Ws,
    Nats,
}

/// Shared state of one fan-out run.
struct Run {
    /// Deliveries of each connection's messages (counted at every recipient).
    delivered: Vec<AtomicU64>,
    wake: Vec<Notify>,
    stop: AtomicBool,
    /// Deliveries inside the measurement window, and their latencies (ns).
    counted: AtomicU64,
    latencies: Mutex<Vec<u64>>,
    window_start: u64,
    window_end: u64,
}

fn payload(conn: usize, seq: u64, size: usize) -> String {
    let mut s = format!("{conn} {seq} {}", mono_ns());
    while s.len() < size {
        s.push('x');
    }
    s
}

/// Parses "conn seq ts …" and records the delivery. Returns false on garbage.
fn record(run: &Run, data: &str, local: &mut Vec<u64>) -> bool {
    let mut parts = data.split(' ');
    let (Some(c), Some(_), Some(ts)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(c), Ok(ts)) = (c.parse::<usize>(), ts.trim_end_matches('x').parse::<u64>()) else {
        return false;
    };
    let now = mono_ns();
    if now >= run.window_start && now < run.window_end {
        run.counted.fetch_add(1, Ordering::Relaxed);
        local.push(now.saturating_sub(ts));
    }
    if let Some(d) = run.delivered.get(c) {
        d.fetch_add(1, Ordering::Relaxed);
        run.wake[c].notify_one();
    }
    true
}

/// Open-loop pacing for `--rate`: connection `i` of `conns` sends one message
/// every 1/`rate` s, the connections' phases spread over that gap. None (closed
/// loop, `credit`) when `rate` is 0.
fn pacer(rate: f64, i: usize, conns: usize) -> Option<tokio::time::Interval> {
    if rate <= 0.0 {
        return None;
    }
    let gap = Duration::from_secs_f64(1.0 / rate);
    let phase = gap.mul_f64(i as f64 / conns.max(1) as f64);
    // Burst (the default): a late tick is caught up, so the offered rate holds.
    Some(tokio::time::interval_at(
        tokio::time::Instant::now() + phase,
        gap,
    ))
}

/// How many more messages connection `me` may send now, keeping at most
/// `window` messages per recipient not yet delivered.
fn credit(run: &Run, me: usize, sent: u64, peers: u64, window: u64) -> u64 {
    let delivered = run.delivered[me].load(Ordering::Relaxed);
    let outstanding = (sent * peers).saturating_sub(delivered);
    (window * peers).saturating_sub(outstanding) / peers.max(1)
}

async fn fanout(o: &Opts, backend: Backend) -> Res<serde_json::Value> {
    let url = o.str("url")?;
    let conns = o.num("conns", 100.0) as usize;
    let room_size = (o.num("room-size", 10.0) as usize).max(2);
    let size = o.num("size", 200.0) as usize;
    let secs = o.num("secs", 10.0);
    let warmup = o.num("warmup", 1.0);
    let window = o.num("window", 8.0) as u64;
    let rate = o.num("rate", 0.0);
    let peers = (room_size - 1) as u64;
    mono_ns();

    // Connect and subscribe everybody before anyone sends.
    let mut ws_conns = Vec::new();
    let mut nats_conns = Vec::new();
    for i in 0..conns {
        let room = format!("r{}", i / room_size);
        match backend {
            Backend::Ws => {
                // TCP_NODELAY, as async-nats sets it: the load generator's own
                // sockets must not hold small frames back (Nagle).
                let (mut ws, _) =
                    tokio_tungstenite::connect_async_with_config(url.as_str(), None, true).await?;
                let on = json!({"op": "on", "ns": ["bench", room]}).to_string();
                ws.send(Message::text(on)).await?;
                ws_conns.push((ws, room));
            }
            Backend::Nats => {
                let client = async_nats::ConnectOptions::new()
                    .no_echo()
                    .connect(url.as_str())
                    .await?;
                let sub = client.subscribe(format!("bench.{room}")).await?;
                client.flush().await?;
                nats_conns.push((client, sub, room));
            }
        }
    }
    // Let subscriptions settle (the relay handles `on` asynchronously).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let start = mono_ns();
    let window_start = start + (warmup * 1e9) as u64;
    let window_end = window_start + (secs * 1e9) as u64;
    let run = Arc::new(Run {
        delivered: (0..conns).map(|_| AtomicU64::new(0)).collect(),
        wake: (0..conns).map(|_| Notify::new()).collect(),
        stop: AtomicBool::new(false),
        counted: AtomicU64::new(0),
        latencies: Mutex::new(Vec::new()),
        window_start,
        window_end,
    });
    let sent_total = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();

    match backend {
        Backend::Ws => {
            for (i, (ws, room)) in ws_conns.into_iter().enumerate() {
                let (mut tx, mut rx) = ws.split();
                let r = run.clone();
                let errs = errors.clone();
                tasks.push(tokio::spawn(async move {
                    let mut local = Vec::new();
                    while let Some(msg) = rx.next().await {
                        let Ok(Message::Text(t)) = msg else {
                            if msg.is_err() {
                                errs.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            continue;
                        };
                        let Ok(v) = serde_json::from_str::<serde_json::Value>(t.as_str()) else {
                            errs.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        match v.get("data").and_then(|d| d.as_str()) {
                            Some(d) => {
                                record(&r, d, &mut local);
                            }
                            None => {
                                errs.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        if r.stop.load(Ordering::Relaxed) && mono_ns() > r.window_end {
                            break;
                        }
                    }
                    r.latencies.lock().unwrap().extend(local);
                }));
                let r = run.clone();
                let sent_total = sent_total.clone();
                let ns = json!(["bench", room]);
                let mut pace = pacer(rate, i, conns);
                tasks.push(tokio::spawn(async move {
                    let mut seq = 0u64;
                    while !r.stop.load(Ordering::Relaxed) {
                        let n = match pace.as_mut() {
                            Some(tick) => {
                                tick.tick().await;
                                1
                            }
                            None => credit(&r, i, seq, peers, window),
                        };
                        if n == 0 {
                            let _ = tokio::time::timeout(
                                Duration::from_millis(50),
                                r.wake[i].notified(),
                            )
                            .await;
                            continue;
                        }
                        for _ in 0..n {
                            let frame =
                                json!({"op": "emit", "ns": ns, "data": payload(i, seq, size)});
                            if tx.feed(Message::text(frame.to_string())).await.is_err() {
                                return;
                            }
                            seq += 1;
                        }
                        sent_total.fetch_add(n, Ordering::Relaxed);
                        if tx.flush().await.is_err() {
                            return;
                        }
                    }
                    let _ = tx.close().await;
                }));
            }
        }
        Backend::Nats => {
            for (i, (client, mut sub, room)) in nats_conns.into_iter().enumerate() {
                let r = run.clone();
                let errs = errors.clone();
                tasks.push(tokio::spawn(async move {
                    let mut local = Vec::new();
                    loop {
                        let next = tokio::time::timeout(Duration::from_millis(200), sub.next());
                        match next.await {
                            Ok(Some(m)) => match std::str::from_utf8(&m.payload) {
                                Ok(d) => {
                                    record(&r, d, &mut local);
                                }
                                Err(_) => {
                                    errs.fetch_add(1, Ordering::Relaxed);
                                }
                            },
                            Ok(None) => break,
                            Err(_) => {}
                        }
                        if r.stop.load(Ordering::Relaxed) && mono_ns() > r.window_end {
                            break;
                        }
                    }
                    r.latencies.lock().unwrap().extend(local);
                }));
                let r = run.clone();
                let sent_total = sent_total.clone();
                let subject = format!("bench.{room}");
                let mut pace = pacer(rate, i, conns);
                tasks.push(tokio::spawn(async move {
                    let mut seq = 0u64;
                    while !r.stop.load(Ordering::Relaxed) {
                        let n = match pace.as_mut() {
                            Some(tick) => {
                                tick.tick().await;
                                1
                            }
                            None => credit(&r, i, seq, peers, window),
                        };
                        if n == 0 {
                            let _ = tokio::time::timeout(
                                Duration::from_millis(50),
                                r.wake[i].notified(),
                            )
                            .await;
                            continue;
                        }
                        for _ in 0..n {
                            let p = payload(i, seq, size);
                            if client.publish(subject.clone(), p.into()).await.is_err() {
                                return;
                            }
                            seq += 1;
                        }
                        sent_total.fetch_add(n, Ordering::Relaxed);
                    }
                    let _ = client.flush().await;
                }));
            }
        }
    }

    let until_end = window_end.saturating_sub(mono_ns());
    tokio::time::sleep(Duration::from_nanos(until_end)).await;
    run.stop.store(true, Ordering::Relaxed);
    let deadline = tokio::time::sleep(Duration::from_secs(3));
    tokio::pin!(deadline);
    for t in tasks {
        tokio::select! {
            _ = t => {}
            _ = &mut deadline => break,
        }
    }
    let counted = run.counted.load(Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *run.latencies.lock().unwrap());
    lat.sort_unstable();
    Ok(json!({
        "backend": if backend == Backend::Ws { "p2p-signal" } else { "nats" },
        "conns": conns, "room_size": room_size, "size": size, "secs": secs, "window": window,
        "rate": rate,
        "sent": sent_total.load(Ordering::Relaxed),
        "delivered": counted,
        "msgs_per_s": counted as f64 / secs,
        "p50_ms": percentile(&lat, 0.50) as f64 / 1e6,
        "p99_ms": percentile(&lat, 0.99) as f64 / 1e6,
        "errors": errors.load(Ordering::Relaxed),
    }))
}

/// One misbehaving client: `emit` frames to `--ns` (comma-separated), each
/// carrying a `--size`-byte string, written back to back for `--secs` as fast
/// as the relay reads them. The frames are encoded (and masked) once and the
/// socket is fed 64 KiB at a time, so the flooder spends its CPU in the kernel
/// rather than on framing. Replies (the relay's rate-limit errors) are read
/// and the last "N dropped" count is reported.
async fn flood(o: &Opts) -> Res<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = o.str("url")?;
    let ns: Vec<String> = o
        .str("ns")
        .unwrap_or_else(|_| "bench,flood".to_owned())
        .split(',')
        .map(str::to_owned)
        .collect();
    let size = o.num("size", 200.0) as usize;
    let secs = o.num("secs", 10.0);
    let rest = url.strip_prefix("ws://").ok_or("flood needs a ws:// URL")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };

    let mut sock = tokio::net::TcpStream::connect(host).await?;
    sock.set_nodelay(true)?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: bG9hZGdlbiBmbG9vZGVyIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await?;
    // The response head, a byte at a time so that no frame byte is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = sock.read_u8().await?;
        head.push(b);
        if head.len() > 16 * 1024 {
            return Err("oversized handshake response".into());
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = String::from_utf8_lossy(&head);
        return Err(format!("upgrade refused: {}", line.lines().next().unwrap_or("")).into());
    }

    // One masked text frame, repeated to fill the write buffer.
    let mut data = String::from("F ");
    while data.len() < size {
        data.push('x');
    }
    let text = json!({"op": "emit", "ns": ns, "data": data}).to_string();
    let payload = text.as_bytes();
    let mask = [0x5a_u8, 0xc3, 0x0f, 0x96];
    let mut frame = vec![0x81_u8]; // FIN, text
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let per_buf = (64 * 1024 / frame.len()).max(1);
    let buf = frame.repeat(per_buf);

    let (mut rd, mut wr) = sock.into_split();
    let reader = tokio::spawn(async move {
        // Server frames are small and unmasked: scanning the bytes for the
        // error text ("…; N dropped") is enough to follow the relay's count.
        // The last bytes of each read are scanned again with the next one, in
        // case a message is split; taking the maximum makes that harmless.
        let mut chunk = vec![0u8; 64 * 1024];
        let mut text: Vec<u8> = Vec::new();
        let mut dropped = 0u64;
        loop {
            let n = match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return dropped,
                Ok(n) => n,
            };
            text.extend_from_slice(&chunk[..n]);
            let s = String::from_utf8_lossy(&text);
            for (at, _) in s.match_indices(" dropped") {
                let digits = s[..at].bytes().rev().take_while(u8::is_ascii_digit).count();
                if let Ok(d) = s[at - digits..at].parse::<u64>() {
                    dropped = dropped.max(d);
                }
            }
            let keep = text.len().min(64);
            text.drain(..text.len() - keep);
        }
    });

    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let mut writes = 0u64;
    let mut write_error = None;
    while Instant::now() < end {
        if let Err(e) = wr.write_all(&buf).await {
            write_error = Some(e.to_string());
            break;
        }
        writes += 1;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let _ = wr.shutdown().await;
    // The relay answers the shutdown by closing; the count is final then.
    let dropped = match tokio::time::timeout(Duration::from_secs(2), reader).await {
        Ok(Ok(d)) => d,
        _ => 0,
    };
    let sent = writes * per_buf as u64;
    Ok(json!({
        "ns": ns, "size": size, "frame_bytes": frame.len(),
        "sent": sent, "secs": elapsed, "frames_per_s": sent as f64 / elapsed.max(1e-9),
        "mb_per_s": (writes * buf.len() as u64) as f64 / elapsed.max(1e-9) / 1e6,
        "relay_dropped": dropped, "write_error": write_error,
    }))
}

/// Opens `conns` idle subscribed connections, then reports the RSS of `pid`.
async fn idle(o: &Opts, backend: Backend) -> Res<serde_json::Value> {
    let url = o.str("url")?;
    let conns = o.num("conns", 1000.0) as usize;
    let pid = o.num("pid", 0.0) as u32;
    let parallel = o.num("parallel", 64.0) as usize;
    let before = rss_kb(pid)?;
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut handles = Vec::with_capacity(conns);
    for i in 0..conns {
        let url = url.clone();
        let permit = sem.clone().acquire_owned().await?;
        handles.push(tokio::spawn(async move {
            let _permit = permit;
            let room = format!("idle{}", i / 10);
            let held: Res<Box<dyn std::any::Any + Send>> = async {
                match backend {
                    Backend::Ws => {
                        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
                        let on = json!({"op": "on", "ns": ["bench", room]}).to_string();
                        ws.send(Message::text(on)).await?;
                        Ok(Box::new(ws) as Box<dyn std::any::Any + Send>)
                    }
                    Backend::Nats => {
                        let client = async_nats::ConnectOptions::new()
                            .no_echo()
                            .connect(url.as_str())
                            .await?;
                        let sub = client.subscribe(format!("bench.{room}")).await?;
                        client.flush().await?;
                        Ok(Box::new((client, sub)) as Box<dyn std::any::Any + Send>)
                    }
                }
            }
            .await;
            held
        }));
    }
    let mut held = Vec::with_capacity(conns);
    let mut failed = 0usize;
    let mut first_err = String::new();
    for h in handles {
        match h.await? {
            Ok(c) => held.push(c),
            Err(e) => {
                failed += 1;
                if first_err.is_empty() {
                    first_err = e.to_string();
                }
            }
        }
    }
    // Let the server finish its per-connection set-up, then read its RSS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kb(pid)?;
    let result = json!({
        "backend": if backend == Backend::Ws { "p2p-signal" } else { "nats" },
        "conns": held.len(), "failed": failed, "first_error": first_err,
        "rss_before_kb": before, "rss_kb": after,
        "kb_per_conn": (after.saturating_sub(before)) as f64 / held.len().max(1) as f64,
    });
    drop(held);
    Ok(result)
}

// ---------------------------------------------------------------- stdio sinks

/// Reads stdin to the end; throughput from the first to the last byte.
fn sink() -> Res<serde_json::Value> {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut first: Option<(Instant, u64)> = None;
    let mut last = Instant::now();
    loop {
        let n = stdin.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let now = Instant::now();
        if first.is_none() {
            first = Some((now, n as u64));
        }
        total += n as u64;
        last = now;
    }
    let (t0, first_n) = first.ok_or("no input")?;
    let secs = last.duration_since(t0).as_secs_f64();
    // The first read's bytes arrived before t0: leave them out of the rate.
    let rate = (total - first_n) as f64 / secs.max(1e-9);
    Ok(json!({
        "bytes": total, "secs": secs,
        "mb_per_s": rate / 1e6, "gbit_per_s": rate * 8.0 / 1e9,
    }))
}

/// Writes `count` lines "UNIX_NS SEQ pad…" at `rate` per second (after
/// `--wait-file` exists), then ends stdout.
fn lines_src(o: &Opts) -> Res<serde_json::Value> {
    let count = o.num("count", 1000.0) as u64;
    let rate = o.num("rate", 200.0);
    let size = o.num("size", 64.0) as usize;
    if let Ok(f) = o.str("wait-file") {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::path::Path::new(&f).exists() {
            if Instant::now() > deadline {
                return Err(format!("{f} never appeared").into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut out = std::io::stdout().lock();
    let t0 = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / rate);
    for seq in 0..count {
        let due = t0 + gap * seq as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut line = format!("{} {seq} ", unix_ns());
        while line.len() < size {
            line.push('x');
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        out.flush()?;
    }
    // stdout is the data stream: nothing else goes there.
    Ok(serde_json::Value::Null)
}

/// Reads lines from lines-src and reports the one-way latency distribution.
fn lines_sink(o: &Opts) -> Res<serde_json::Value> {
    let count = o.num("count", 1000.0) as usize;
    let skip = o.num("skip", 0.0) as usize;
    let mut lat = Vec::with_capacity(count);
    let mut seen = 0usize;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let now = unix_ns();
        let Some(ts) = line.split(' ').next().and_then(|t| t.parse::<u64>().ok()) else {
            continue;
        };
        seen += 1;
        if seen > skip {
            lat.push(now.saturating_sub(ts));
        }
        if seen >= count {
            break;
        }
    }
    lat.sort_unstable();
    Ok(json!({
        "received": seen,
        "p50_ms": percentile(&lat, 0.50) as f64 / 1e6,
        "p99_ms": percentile(&lat, 0.99) as f64 / 1e6,
        "max_ms": lat.last().copied().unwrap_or(0) as f64 / 1e6,
    }))
}
