//! What the user sees while a session runs: a status line per peer on a
//! terminal, and `stats` events for scripts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::rtc::short;
use super::{simulcast, Machine, Runner};

/// What the user sees while the session runs: status lines on a terminal,
/// `stats` events for scripts; refreshed every [`STATUS_EVERY`].
pub(super) struct Status {
    show: bool,
    room: String,
    lines: HashMap<String, crate::progress::StatusLine>,
    pub(super) last: Instant,
    /// Byte counters at the last refresh, by key.
    before: HashMap<String, u64>,
    /// Data bytes sent or received over channels.
    pub(super) data_bytes: Arc<AtomicU64>,
    /// Sender, `--binary`: bytes read from stdin, and stdin's size when it
    /// is a file (a progress line with a total and the time left).
    pub(super) input_read: Arc<AtomicU64>,
    pub(super) input_total: Option<u64>,
}

pub(super) const STATUS_EVERY: Duration = Duration::from_secs(1);

impl Status {
    pub(super) fn new(show: bool, room: &str) -> Self {
        Self {
            show,
            room: room.to_owned(),
            lines: HashMap::new(),
            last: Instant::now(),
            // Input is counted from the start, not from the first refresh.
            before: HashMap::from([("input".to_owned(), 0)]),
            data_bytes: Arc::new(AtomicU64::new(0)),
            input_read: Arc::new(AtomicU64::new(0)),
            input_total: None,
        }
    }

    /// Bits per second for byte counter `key` since the last refresh.
    fn rate(&mut self, key: &str, bytes: u64, secs: f64) -> f64 {
        self.per_second(key, bytes, secs) * 8.0
    }

    /// Counter `key`'s increase per second since the last refresh.
    fn per_second(&mut self, key: &str, count: u64, secs: f64) -> f64 {
        let prev = self.before.insert(key.to_owned(), count).unwrap_or(count);
        count.saturating_sub(prev) as f64 / secs.max(0.001)
    }

    fn line(&mut self, key: &str, msg: String) {
        if !self.show {
            return;
        }
        self.lines.entry(key.to_owned()).or_default().set(msg);
    }

    /// Drops the lines of keys not in `keep`.
    fn retain(&mut self, keep: &[String]) {
        self.lines.retain(|k, _| keep.contains(k));
    }
}

impl Runner {
    /// Sender: the layers being sent, and each receiver's estimate, loss
    /// and layer, as `stats` fields; one status line per receiver. The
    /// worst loss a receiver reports sets the audio's FEC.
    fn receiver_media(&mut self) -> (Value, Value) {
        let (Some(video), Some(capture)) = (&self.video, &self.capture) else {
            return (Value::Null, Value::Null);
        };
        let rates = video.layer_rates();
        let targets = video.targets();
        let layers = capture.layers();
        let layer_json: Vec<Value> = layers
            .iter()
            .zip(&rates)
            .zip(&targets)
            .map(|((l, r), t)| {
                serde_json::json!({
                    "width": l.width, "height": l.height, "fps": l.fps,
                    "target_bitrate": t.round(), "bitrate": r.round(),
                })
            })
            .collect();
        let mut keys = vec!["sender".to_owned()];
        let mut worst = 0.0f64;
        let mut peers = Vec::new();
        // One snapshot serves the lines, the JSON and both targets.
        let receivers = video.peers();
        for p in &receivers {
            worst = worst.max(p.loss);
            let size = p
                .layer
                .and_then(|k| layers.get(k))
                .map(|l| format!("{}×{}", l.width, l.height));
            let estimate = p
                .estimate
                .map_or_else(|| "no estimate".to_owned(), crate::progress::bitrate);
            // GCC's estimate only climbs while a path carries all it is
            // sent: what it carried when last full says more.
            let full = match (p.carried, p.capacity) {
                (Some(c), _) => format!(" · full at {}", crate::progress::bitrate(c)),
                (None, Some(c)) => format!(" · carried {} when full", crate::progress::bitrate(c)),
                (None, None) => String::new(),
            };
            let probed = p.probed.map_or_else(String::new, |r| {
                format!(" · probed {}", crate::progress::bitrate(r))
            });
            self.status.line(
                &p.peer,
                format!(
                    "  receiver {} · {} · path {estimate}{full}{probed} · loss {:.0} %",
                    short(&p.peer),
                    size.as_deref().unwrap_or("waiting for a key frame"),
                    p.loss * 100.0
                ),
            );
            keys.push(p.peer.clone());
            peers.push(serde_json::json!({
                "id": p.peer,
                "estimate": p.estimate.map(f64::round),
                "carried": p.carried.map(f64::round),
                "capacity": p.capacity.map(f64::round),
                "probed": p.probed.map(f64::round),
                "resent_bytes": p.resends.0,
                "resends_dropped": p.resends.1,
                "resends_repeated": p.resends.2,
                "loss": (p.loss * 1000.0).round() / 1000.0,
                "layer": p.layer,
                "width": p.layer.and_then(|k| layers.get(k)).map(|l| l.width),
                "height": p.layer.and_then(|k| layers.get(k)).map(|l| l.height),
            }));
        }
        self.status.retain(&keys);
        capture.set_audio_loss((worst * 100.0).round() as u32);
        if layers.len() > 1 {
            let estimates: Vec<f64> = receivers.iter().filter_map(|p| p.estimate).collect();
            let kbps = |l: &crate::media::capture::Layer| f64::from(l.kbps) * 1000.0;
            let top = simulcast::top_target(
                &estimates,
                self.audio_bps,
                kbps(&layers[0]),
                2.0 * kbps(&layers[1]),
            );
            capture.set_layer_bitrate(0, (top / 1000.0) as u32);
            video.set_target(0, top);
            let lowest = layers.len() - 1;
            let paths: Vec<f64> = receivers
                .iter()
                .filter(|p| p.layer == Some(lowest))
                .filter_map(|p| match (p.estimate, p.capacity) {
                    (Some(e), Some(c)) => Some(e.min(c)),
                    (e, c) => e.or(c),
                })
                .collect();
            let bottom = simulcast::bottom_target(
                &paths,
                self.audio_bps,
                kbps(&layers[lowest]),
                kbps(&layers[lowest - 1]) / 2.0,
            );
            capture.set_layer_bitrate(lowest, (bottom / 1000.0) as u32);
            video.set_target(lowest, bottom);
        }
        (Value::Array(layer_json), Value::Array(peers))
    }

    /// What the status line says while the relay is out of reach: without
    /// it, an unreachable relay looks like an empty room.
    fn relay_note(&self) -> String {
        match &self.relay_down {
            Some((since, _)) => format!(
                " · relay unreachable for {:.0} s, retrying",
                since.elapsed().as_secs_f64()
            ),
            None => String::new(),
        }
    }

    pub(super) fn refresh_status(&mut self) {
        let secs = self.status.last.elapsed().as_secs_f64();
        self.status.last = Instant::now();
        let data = self.status.data_bytes.load(Ordering::Relaxed);
        let data_rate = self.status.rate("data", data, secs);
        let (layers, peers) = self.receiver_media();
        match &self.machine {
            Machine::Sender(m) => {
                let (media, dropped, keyframes) = self.capture.as_ref().map_or((0, 0, 0), |c| {
                    (
                        c.stats.bytes.load(Ordering::Relaxed),
                        c.stats.dropped.load(Ordering::Relaxed),
                        c.stats.keyframes_requested.load(Ordering::Relaxed),
                    )
                });
                let media_rate = self.status.rate("media", media, secs);
                let receivers = m.peer_count() - m.connecting();
                let mut msg = format!(
                    "room {} · {receivers} receiver{}{}{}",
                    self.status.room,
                    if receivers == 1 { "" } else { "s" },
                    reconnecting_note(m.reconnecting()),
                    self.relay_note()
                );
                if self.capture.is_some() {
                    msg.push_str(&format!(
                        " · media ↑ {}",
                        crate::progress::bitrate(media_rate)
                    ));
                }
                if let Some(total) = self.status.input_total {
                    let read = self.status.input_read.load(Ordering::Relaxed);
                    let per_second = self.status.per_second("input", read, secs);
                    msg.push_str(&format!(
                        " · {}",
                        crate::progress::transfer(read, total, per_second)
                    ));
                } else if self.fanout.is_some() {
                    msg.push_str(&format!(
                        " · data {} sent, {}",
                        crate::progress::size(data),
                        crate::progress::bitrate(data_rate)
                    ));
                }
                self.status.line("sender", msg);
                self.reporter.stats(serde_json::json!({
                    "role": "sender",
                    "receivers": receivers,
                    "connecting": m.connecting(),
                    "reconnecting": m.reconnecting(),
                    "media_bytes": media,
                    "media_bitrate": media_rate.round(),
                    "media_packets_dropped": dropped,
                    "keyframes": keyframes,
                    "layers": layers,
                    "peers": peers,
                    "data_bytes": data,
                    "data_bitrate": data_rate.round(),
                }));
            }
            Machine::Receiver(m) => {
                let recordings = self
                    .recordings
                    .as_ref()
                    .map(|r| r.summary())
                    .unwrap_or_default();
                let mut keys = vec!["room".to_owned()];
                self.status.line(
                    "room",
                    format!(
                        "room {} · {} sender{}{}{} · data {} received",
                        self.status.room,
                        m.connected(),
                        if m.connected() == 1 { "" } else { "s" },
                        reconnecting_note(m.reconnecting()),
                        self.relay_note(),
                        crate::progress::size(data)
                    ),
                );
                for r in &recordings {
                    let rate = self.status.rate(&r.sender, r.bytes, secs);
                    let target = r
                        .path
                        .as_ref()
                        .map_or_else(|| "playing".to_owned(), |p| p.display().to_string());
                    let delay = r
                        .latency
                        .map(|(p50, _)| format!(" · latency {p50:.0} ms"))
                        .unwrap_or_default();
                    let fps = self.status.per_second(
                        &format!("{}/frames", r.sender),
                        r.video_frames,
                        secs,
                    );
                    let picture = r
                        .size
                        .map(|(w, h)| format!(" · {w}×{h} {fps:.0} fps"))
                        .unwrap_or_default();
                    self.status.line(
                        &r.sender,
                        format!(
                            "  sender {} → {target} · {:.1} s{picture} · {} · {} · lost {}{delay}",
                            short(&r.sender),
                            r.seconds,
                            crate::progress::size(r.bytes),
                            crate::progress::bitrate(rate),
                            r.lost
                        ),
                    );
                    keys.push(r.sender.clone());
                    self.reporter.stats(serde_json::json!({
                        "role": "receiver",
                        "id": r.sender,
                        "path": r.path,
                        "recorded": (r.seconds * 10.0).round() / 10.0,
                        "bytes": r.bytes,
                        "bitrate": rate.round(),
                        "packets_lost": r.lost,
                        "fps": (fps * 10.0).round() / 10.0,
                        "width": r.size.map(|s| s.0),
                        "height": r.size.map(|s| s.1),
                        "latency_ms": r.latency.map(|(p50, p95)| serde_json::json!({
                            "p50": (p50 * 10.0).round() / 10.0,
                            "p95": (p95 * 10.0).round() / 10.0,
                            "frames": r.frames,
                        })),
                    }));
                }
                self.status.retain(&keys);
                self.reporter.stats(serde_json::json!({
                    "role": "receiver",
                    "senders": m.connected(),
                    "reconnecting": m.reconnecting(),
                    "data_bytes": data,
                    "data_bitrate": data_rate.round(),
                }));
            }
        }
    }
}

/// "(1 reconnecting)" while connections are without a path.
fn reconnecting_note(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} reconnecting)")
    }
}
