//! Receivers on links slower than the stream: a sender encodes three
//! simulcast layers once, and every receiver is forwarded the layer its
//! own path carries, from the bandwidth estimate its transport feedback
//! gives the sender.
//!
//! A star of network namespaces this test creates: the relay and the
//! sender in the hub, each receiver in a leaf behind its own veth pair.
//! A slow link is a token bucket (`tc qdisc … tbf`) on the hub's side of a
//! leaf's pair, so it shapes what the sender sends to that receiver and
//! nothing else. Needs root and `ip`/`tc` (iproute2).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::mediafile::{ffmpeg_errors, inspect};

/// One 720p sender at a time: two at once on a 2-core machine starve each
/// other (and the tests running beside them) of CPU, and frame rates then
/// measure the machine, not the network.
static ONE_SENDER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Bucket depth and queue of every shaped link: a home router's, about
/// 150 ms of queue at the shaped rate.
const TBF: [&str; 4] = ["burst", "10kb", "latency", "150ms"];

/// A hub namespace and leaves, leaf `k` joined to the hub by a veth pair
/// on 10.233.{k+1}.0/24 (hub .1, leaf .2). Deleted when dropped.
struct Star {
    hub: String,
    leaves: Vec<String>,
}

impl Star {
    fn new(leaves: usize) -> Self {
        remove_leftover_netns();
        let star = Self {
            hub: netns_name("H"),
            leaves: (0..leaves).map(|k| netns_name(&format!("L{k}"))).collect(),
        };
        run(&["ip", "netns", "add", &star.hub], None);
        for (k, leaf) in star.leaves.iter().enumerate() {
            let dev = Self::dev(k);
            run(&["ip", "netns", "add", leaf], None);
            let leaf_addr = format!("10.233.{}.2", k + 1);
            veth_pair(
                (&star.hub, &dev, &Self::hub_addr(k)),
                (leaf, "eth0", &leaf_addr),
            );
        }
        star
    }

    /// Lifts leaf `k`'s limit.
    fn uncap(&self, k: usize) {
        let dev = Self::dev(k);
        run(
            &[
                "ip", "netns", "exec", &self.hub, "tc", "qdisc", "del", "dev", &dev, "root",
            ],
            None,
        );
    }

    /// Limits what leaf `k` sends to the hub to `rate`: its uplink.
    fn cap_uplink(&self, k: usize, rate: &str) {
        self.shape_uplink(k, rate, TBF[1], TBF[3]);
    }

    /// Lets the leaves reach each other through the hub.
    fn route_leaves(&self) {
        run(
            &[
                "ip",
                "netns",
                "exec",
                &self.hub,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
            None,
        );
        for (k, leaf) in self.leaves.iter().enumerate() {
            let via = Self::hub_addr(k);
            run(
                &[
                    "ip", "netns", "exec", leaf, "ip", "route", "add", "default", "via", &via,
                ],
                None,
            );
        }
    }

    /// Limits what leaf `k` sends to `rate`, with a token bucket of
    /// `burst` and a queue of `latency`.
    fn shape_uplink(&self, k: usize, rate: &str, burst: &str, latency: &str) {
        run(
            &[
                "ip",
                "netns",
                "exec",
                &self.leaves[k],
                "tc",
                "qdisc",
                "replace",
                "dev",
                "eth0",
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                burst,
                "latency",
                latency,
            ],
            None,
        );
    }

    /// Gives leaves their access links' delay, jitter, reordering and
    /// loss (`(k, "delay:25ms,jitter:5ms")`, examples/wan.rs): a user-space
    /// link in the hub holds every packet the hub forwards to or from them
    /// (a packet between two such leaves pays both). Runs until the
    /// returned process is dropped. Rates stay with [`Star::shape`].
    async fn wan(&self, hosts: &[(usize, &str)]) -> Proc {
        let hosts: Vec<String> = hosts
            .iter()
            .map(|(k, spec)| format!("10.233.{}.2={spec}", k + 1))
            .collect();
        let mut args = vec!["--dev", "wan0"];
        for h in &hosts {
            args.extend(["--host", h.as_str()]);
        }
        let mut wan = Spawn::example_in_netns(&self.hub, "wan", &args).spawn();
        assert_eq!(wan.line().await, "ready");
        let hub = self.hub.as_str();
        run(
            &[
                "ip",
                "netns",
                "exec",
                hub,
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.wan0.rp_filter=0",
            ],
            None,
        );
        run(
            &[
                "ip", "-n", hub, "route", "add", "default", "dev", "wan0", "table", "7",
            ],
            None,
        );
        // What the link writes back goes on by the main table; what comes
        // in from a leaf goes into the link first.
        run(
            &[
                "ip", "-n", hub, "rule", "add", "iif", "wan0", "lookup", "main", "pref", "100",
            ],
            None,
        );
        for k in 0..self.leaves.len() {
            let dev = Self::dev(k);
            run(
                &[
                    "ip", "-n", hub, "rule", "add", "iif", &dev, "lookup", "7", "pref", "200",
                ],
                None,
            );
        }
        wan
    }

    fn dev(k: usize) -> String {
        format!("leaf{k}")
    }

    fn hub_addr(k: usize) -> String {
        format!("10.233.{}.1", k + 1)
    }

    /// Limits what the hub sends to leaf `k` to `rate` (`1mbit`), or
    /// changes the limit already there.
    fn cap(&self, k: usize, rate: &str) {
        self.shape(k, rate, TBF[1], TBF[3]);
    }

    /// Limits what leaf `k` gets to `rate`, with a token bucket of
    /// `burst` and a queue of `latency`.
    fn shape(&self, k: usize, rate: &str, burst: &str, latency: &str) {
        let dev = Self::dev(k);
        run(
            &[
                "ip", "netns", "exec", &self.hub, "tc", "qdisc", "replace", "dev", &dev, "root",
                "tbf", "rate", rate, "burst", burst, "latency", latency,
            ],
            None,
        );
    }
}

impl Drop for Star {
    fn drop(&mut self) {
        for ns in std::iter::once(&self.hub).chain(&self.leaves) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

/// A 720p zone plate asked for 2.5 Mbit/s: the hardest thing to fit into
/// a slow link. In the hub, beside the relay.
fn sender(star: &Star, relay: &Relay, room: &str) -> Proc {
    let local = format!("ws://127.0.0.1:{}", relay.port());
    sender_in(&star.hub, &local, room)
}

/// The same sender in namespace `netns`, reaching the relay at `url`.
fn sender_in(netns: &str, url: &str, room: &str) -> Proc {
    Spawn::in_netns(
        netns,
        "sender",
        &[
            "send",
            "--signal",
            url,
            "--room",
            room,
            "--events",
            "json",
            "--test-source",
            "--test-pattern",
            "zone-plate",
            "--width",
            "1280",
            "--height",
            "720",
            "--video-bitrate",
            "2500",
        ],
    )
    .spawn()
}

fn receiver(star: &Star, k: usize, relay: &Relay, room: &str, record: &Path) -> Proc {
    let url = format!("ws://{}:{}", Star::hub_addr(k), relay.port());
    Spawn::in_netns(
        &star.leaves[k],
        &format!("receiver{k}"),
        &[
            "receive",
            "--signal",
            &url,
            "--room",
            room,
            "--events",
            "json",
            "--record",
            record.to_str().unwrap(),
        ],
    )
    .spawn()
}

/// The sender's `stats` events: (seconds since the first, that receiver's
/// entry in `peers`) for the receiver that connected `n`th… found by the
/// receiver's own id.
fn peer_stats(sender: &Proc, id: &str) -> Vec<(f64, Value)> {
    let stats: Vec<Value> = sender
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "stats")
        .collect();
    let t0 = stats.first().and_then(|v| v["ts"].as_f64()).unwrap_or(0.0);
    stats
        .iter()
        .filter_map(|v| {
            let p = v["peers"].as_array()?.iter().find(|p| p["id"] == id)?;
            Some(((v["ts"].as_f64()? - t0) / 1000.0, p.clone()))
        })
        .collect()
}

/// The id a process announced in its `start` event.
fn own_id(p: &Proc) -> String {
    p.stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "start")
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| p.fail("no start event"))
}

/// Stops a receiver as a user would and waits for its recording.
async fn stop(p: &mut Proc) {
    p.signal("INT");
    let status = p.wait_exit().await;
    if !status.success() {
        p.fail(&format!("receiver exit after SIGINT: {status}"));
    }
}

/// Bits per second of a whole recording, from its size and duration.
fn file_bitrate(path: &Path, duration: f64) -> f64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) as f64 * 8.0 / duration.max(0.001)
}

#[tokio::test]
async fn a_receiver_behind_a_slow_link_gets_a_smaller_layer_and_the_others_keep_the_best() {
    let _one = ONE_SENDER.lock().await;
    let star = Star::new(2);
    star.cap(1, "1mbit");
    let relay = Relay::start_in(&star.hub, "0.0.0.0:0").await;
    let dir = tempfile::tempdir().unwrap();
    let (fast_file, slow_file) = (dir.path().join("fast.webm"), dir.path().join("slow.webm"));
    let tx = sender(&star, &relay, "bw");
    let mut fast = receiver(&star, 0, &relay, "bw", &fast_file);
    let mut slow = receiver(&star, 1, &relay, "bw", &slow_file);
    fast.wait_stderr(r#""event":"track""#).await;
    slow.wait_stderr(r#""event":"track""#).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (fast_id, slow_id) = (own_id(&fast), own_id(&slow));
    stop(&mut fast).await;
    stop(&mut slow).await;

    let switches: Vec<String> = tx
        .stderr()
        .lines()
        .filter(|l| l.contains("layer ") && l.contains(" -> "))
        .map(str::to_owned)
        .collect();
    let context = |what: &str| {
        format!(
            "{what}\nthe sender's layer switches:\n{}\nsender's view of the slow receiver: {:?}\nof the fast one: {:?}",
            switches.join("\n"),
            peer_stats(&tx, &slow_id)
                .iter()
                .map(|(t, p)| format!("{t:.0}s {} L{}", p["estimate"], p["layer"]))
                .collect::<Vec<_>>(),
            peer_stats(&tx, &fast_id)
                .iter()
                .map(|(t, p)| format!("{t:.0}s {} L{}", p["estimate"], p["layer"]))
                .collect::<Vec<_>>(),
        )
    };

    // The slow receiver: a picture that keeps moving over the last 15 s,
    // decoded without error, smaller than the sender's best.
    let s = inspect(&slow_file);
    assert!(
        s.errors.is_empty(),
        "{}",
        context(&format!("decode errors: {:?}", s.errors))
    );
    let from = s.last_pts - 15.0;
    let (fps, gap) = s.fps_and_gap_from(from);
    assert!(
        fps >= 15.0 && gap <= 0.5,
        "{}",
        context(&format!(
            "slow receiver: {fps:.1} fps, longest gap {gap:.2} s over its last 15 s"
        ))
    );
    assert!(
        s.frames.iter().filter(|f| f.0 >= from).all(|f| f.1 < 1280),
        "{}",
        context("the slow receiver got full-size frames late in the session")
    );
    // What the sender's estimate says of that path: under the cap.
    let late: Vec<f64> = peer_stats(&tx, &slow_id)
        .iter()
        .filter_map(|(_, p)| p["estimate"].as_f64())
        .collect();
    assert!(
        !late.is_empty(),
        "{}",
        context("no estimate for the slow receiver")
    );

    let slow_rate = file_bitrate(&slow_file, s.duration);
    eprintln!(
        "slow receiver (1 Mbit/s): {fps:.1} fps, longest gap {gap:.2} s over its last 15 s, \
         {slow_rate:.0} bit/s recorded, sizes {:?}",
        s.frames
            .iter()
            .filter(|f| f.0 >= from)
            .map(|f| f.1)
            .collect::<std::collections::BTreeSet<_>>()
    );

    // The fast receiver: full size, full rate.
    let f = inspect(&fast_file);
    f.assert_valid("VP8", Some("Opus"), 25.0, 25.0);
    let (fps, gap) = f.fps_and_gap_from(f.last_pts - 15.0);
    let rate = file_bitrate(&fast_file, f.duration);
    assert!(
        fps >= 25.0 && gap <= 0.5 && rate >= 1_400_000.0,
        "{}",
        context(&format!(
            "fast receiver: {fps:.1} fps, gap {gap:.2} s, {rate:.0} bit/s"
        ))
    );
    eprintln!("fast receiver: {fps:.1} fps, longest gap {gap:.2} s, {rate:.0} bit/s recorded");
    assert!(
        f.frames
            .iter()
            .filter(|x| x.0 >= f.last_pts - 15.0)
            .all(|x| x.1 == 1280),
        "{}",
        context("the fast receiver did not stay at full size")
    );
    // Layer switches change the picture size inside one file: ffmpeg
    // decodes both files without an error as well. Its null muxer may
    // still note frames a millisecond apart around the first switch
    // (timestamps are not yet clean there; see bench/NOTES.md): that is
    // not a decoding error.
    for file in [&slow_file, &fast_file] {
        let errors = ffmpeg_errors(file);
        let decoding: Vec<&str> = errors
            .lines()
            .filter(|l| !l.contains("non monotonically increasing dts"))
            .filter(|l| !l.contains("Last message repeated"))
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(
            decoding.is_empty(),
            "ffmpeg on {}: {errors}",
            file.display()
        );
    }
    drop(tx);
}

/// Milliseconds since the Unix epoch, the clock of the events' `ts`.
fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64
}

#[tokio::test]
async fn when_the_link_narrows_and_widens_the_sender_follows_and_the_video_goes_on() {
    let _one = ONE_SENDER.lock().await;
    let star = Star::new(1);
    let relay = Relay::start_in(&star.hub, "0.0.0.0:0").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rx.webm");
    let tx = sender(&star, &relay, "narrow");
    let mut rx = receiver(&star, 0, &relay, "narrow", &file);
    rx.wait_stderr(r#""event":"track""#).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let capped = now_ms();
    star.cap(0, "600kbit");
    tokio::time::sleep(Duration::from_secs(12)).await;
    let uncapped = now_ms();
    star.uncap(0);
    // Full size comes back once probes show the path carries it: the
    // sender probes every 2 s while the better layers do not fit, in
    // stages, and steps up on a probe that passed (4.1–5.3 s measured;
    // without probing it waited out a 30 s back-off, ~21.5 s).
    let id = own_id(&rx);
    let back_to_full = async {
        loop {
            let full = peer_stats(&tx, &id)
                .last()
                .is_some_and(|(_, p)| p["layer"] == 0 && p["width"] == 1280);
            if full {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let returned = tokio::time::timeout(Duration::from_secs(40), back_to_full)
        .await
        .is_ok();
    let returned_after = (now_ms() - uncapped) / 1000.0;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop(&mut rx).await;

    // (ms, estimate, layer) as the sender reported them every second.
    let trace: Vec<(f64, f64, i64)> = tx
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "stats")
        .filter_map(|v| {
            let p = v["peers"]
                .as_array()?
                .iter()
                .find(|p| p["id"] == id)?
                .clone();
            Some((
                v["ts"].as_f64()?,
                p["estimate"].as_f64()?,
                p["layer"].as_i64().unwrap_or(-1),
            ))
        })
        .collect();
    let shown: Vec<String> = trace
        .iter()
        .map(|(t, e, l)| format!("{:+.0}s {:.0}k L{l}", (t - capped) / 1000.0, e / 1000.0))
        .collect();
    let within = |from: f64, secs: f64, ok: &dyn Fn(f64) -> bool| {
        trace
            .iter()
            .any(|(t, e, _)| *t >= from && *t <= from + secs * 1000.0 && ok(*e))
    };
    // Down within 5 s: the sender finds the path full (most of what it
    // sends is lost) and moves the receiver to what it carries, the
    // smallest layer, at once (measured: within 2 s). GCC's estimate then
    // has little left to measure and may stay high; before the full-path
    // rule it fell to 0.74–0.99 Mbit/s while the middle layer overfilled
    // the link and froze the picture for 2.5–6 s.
    let followed = |e: f64, l: i64| e <= 1_000_000.0 || l == 2;
    assert!(
        trace
            .iter()
            .any(|(t, e, l)| *t >= capped && *t <= capped + 5_000.0 && followed(*e, *l)),
        "the sender did not follow the link down to 600 kbit/s within 5 s: {shown:?}"
    );
    // Up again: measured 3–7 s (webrtc-rs's GCC grows about a quarter a
    // second once it has fallen; the aim is 5 s).
    assert!(
        within(uncapped, 9.0, &|e| e >= 1_500_000.0),
        "the estimate did not rise again within 9 s: {shown:?}"
    );

    let switches: Vec<String> = tx
        .stderr()
        .lines()
        .filter(|l| (l.contains("layer ") && l.contains(" -> ")) || l.contains("probe at"))
        .map(str::to_owned)
        .collect();
    eprintln!(
        "the sender's probes and layer switches:\n{}",
        switches.join("\n")
    );
    let r = inspect(&file);
    assert!(
        r.errors.is_empty(),
        "decode errors: {:?} ({shown:?})",
        r.errors
    );
    let (fps, gap) = r.fps_and_gap_from(r.first_pts + 2.0);
    eprintln!(
        "narrow and widen: {fps:.1} fps, longest gap {gap:.2} s, full size again \
         {returned_after:.1} s after the link widened; {shown:?}"
    );
    assert!(
        returned && returned_after <= 8.0,
        "full size did not come back within 8 s of the link widening \
         ({returned_after:.1} s): {shown:?}"
    );
    // The probes that showed it.
    let probed = peer_stats(&tx, &id)
        .last()
        .and_then(|(_, p)| p["probed"].as_f64())
        .unwrap_or(0.0);
    assert!(
        probed >= 2_500_000.0,
        "no probe showed room for the best layer: probed {probed}"
    );
    // The picture freezes while the sender finds out and the smallest
    // layer's key frame gets through the congested link: 0.57–1.27 s
    // measured (1.2–1.9 s when the sender stepped down through the middle
    // layer with bigger key frames, 2.5–6 s before the full-path rule; the
    // aim is well under a second, see bench/NOTES.md). It must come back and keep moving: the
    // smallest layer's encoder, on a 720p zone plate, keeps about half
    // its frames at the layer's share.
    assert!(
        gap <= 3.0 && fps >= 8.0,
        "video stopped: {fps:.1} fps, longest gap {gap:.2} s ({shown:?})"
    );
    drop(tx);
}

#[tokio::test]
async fn at_300_kbits_audio_plays_on_and_video_runs_at_the_smallest_layer() {
    let _one = ONE_SENDER.lock().await;
    let star = Star::new(1);
    star.cap(0, "300kbit");
    let relay = Relay::start_in(&star.hub, "0.0.0.0:0").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.webm");
    let tx = sender(&star, &relay, "bw300");
    let mut rx = receiver(&star, 0, &relay, "bw300", &file);
    rx.wait_stderr(r#""event":"track""#).await;
    // The start at full size fails at once, and the path, full, shows it
    // cannot carry the middle layer either: neither is tried again for
    // 30 s (the next trial, at ~30 s, is past the end). The last 12 s of
    // the 28 are judged.
    tokio::time::sleep(Duration::from_secs(28)).await;
    let id = own_id(&rx);
    stop(&mut rx).await;
    let trace: Vec<String> = peer_stats(&tx, &id)
        .iter()
        .map(|(t, p)| {
            format!(
                "{t:.0}s {} cap {} loss {} resent {}/{} L{}",
                p["estimate"],
                p["capacity"],
                p["loss"],
                p["resent_bytes"],
                p["resends_dropped"],
                p["layer"]
            )
        })
        .collect();

    let r = inspect(&file);
    assert!(
        r.errors.is_empty(),
        "decode errors: {:?} ({trace:?})",
        r.errors
    );
    let from = r.last_pts - 12.0;
    let (fps, gap) = r.fps_and_gap_from(from);
    let sizes: std::collections::BTreeSet<i32> = r
        .frames
        .iter()
        .filter(|f| f.0 >= from)
        .map(|f| f.1)
        .collect();
    eprintln!(
        "300 kbit/s: {fps:.1} fps, longest gap {gap:.2} s over the last 12 s, widths {sizes:?}, \
         {} audio buffers in {:.1} s (audio {:.2?}..{:.2?}, gaps {:.2?}, video from {:.2}); {trace:?}",
        r.audio_buffers,
        r.duration,
        r.audio_pts.first(),
        r.audio_pts.last(),
        r.audio_gaps(0.1),
        r.first_pts
    );
    // The smallest layer (a quarter size), its target grown into what the
    // path carried at the start: 10.8–17.0 fps measured on this 720p zone
    // plate (11.7–13.2 at the fixed share and half the frame rate), which
    // its encoder cannot keep whole below ~250 kbit/s; the target follows
    // how the start's full path was read.
    assert!(
        sizes.iter().all(|&w| w == 320) && fps >= 8.0 && gap <= 1.0,
        "video at 300 kbit/s: {fps:.1} fps, gap {gap:.2} s, widths {sizes:?} ({trace:?})"
    );
    // Audio: 20 ms Opus frames over the audio's own span, nearly all there,
    // with no gap a listener would hear as a drop-out. (Not against the
    // file's duration: twice in CI the video ran 2.4–3.4 s past the
    // audio's end, with no gap in either, and never in 15 runs on their
    // own, loaded or not. Each track is timed from its own first packet;
    // the recorder does not align tracks by the sender's clock. Open, in
    // bench/NOTES.md.)
    let (first, last) = (
        r.audio_pts.first().copied().unwrap_or(0.0),
        r.audio_pts.last().copied().unwrap_or(0.0),
    );
    let gaps = r.audio_gaps(0.1);
    let expected = (last - first) / 0.02;
    assert!(
        last - first >= 20.0
            && r.audio_buffers as f64 >= 0.9 * expected
            && gaps.iter().all(|&(_, g)| g <= 0.5),
        "audio at 300 kbit/s: {} buffers over {first:.2}..{last:.2} s (expected about \
         {expected:.0}), gaps {gaps:.2?}; video {:.2}..{:.2} s ({trace:?})",
        r.audio_buffers,
        r.first_pts,
        r.last_pts
    );
    drop(tx);
}

/// Our page in headless Chromium, in a leaf behind a 1 Mbit/s link,
/// watching the 720p sender: Chromium's transport feedback gives the
/// sender an estimate for it, and it is forwarded the layer that fits.
#[tokio::test]
async fn a_browser_behind_a_slow_link_plays_smoothly_under_the_cap() {
    let _one = ONE_SENDER.lock().await;
    let star = Star::new(1);
    star.cap(0, "1mbit");
    let relay = Relay::start_in(&star.hub, "0.0.0.0:0").await;
    let tx = sender(&star, &relay, "bwpage");
    let page = format!(
        "http://{}:{}/?room=bwpage&nick=viewer",
        Star::hub_addr(0),
        relay.port()
    );
    // 12 s to settle (the start at full size fails at once), then 10 s
    // watched.
    let (ok, result) = page_script(
        &star.leaves[0],
        "watch-page.mjs",
        &[&page, "12000", "10000"],
        Duration::from_secs(120),
    )
    .await;
    let layers: Vec<String> = tx
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "stats")
        .filter_map(|v| {
            let p = v["peers"].as_array()?.first()?.clone();
            Some(format!(
                "{} full {} L{} resent {}/{}",
                p["estimate"], p["carried"], p["layer"], p["resent_bytes"], p["resends_dropped"]
            ))
        })
        .collect();
    eprintln!("the page behind 1 Mbit/s: {result} (sender saw {layers:?})");
    assert!(ok, "the page failed: {result}");
    let frames = result["frames"].as_f64().unwrap_or(0.0);
    let gap = result["maxGapMs"].as_f64().unwrap_or(f64::MAX);
    let bps = result["videoBps"].as_f64().unwrap_or(f64::MAX);
    assert!(
        frames >= 150.0 && gap <= 1000.0,
        "the page played {frames} frames in 10 s, longest gap {gap} ms: {result} ({layers:?})"
    );
    assert!(
        bps < 1_000_000.0 && result["width"].as_u64() < Some(1280),
        "the page got {bps} bit/s of video (cap 1 Mbit/s): {result} ({layers:?})"
    );
}

/// The other direction: our page in headless Chromium publishes its fake
/// camera from behind a 400 kbit/s uplink to `p2p receive --record`. The
/// feedback p2p receive sends (transport-wide congestion control and
/// receiver reports) lets Chromium's own congestion control find the
/// path, and the recording stays watchable.
#[tokio::test]
async fn a_browser_publishing_through_a_slow_uplink_adapts_to_the_receivers_feedback() {
    let star = Star::new(1);
    star.cap_uplink(0, "400kbit");
    let relay = Relay::start_in(&star.hub, "0.0.0.0:0").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("from-browser.webm");
    let local = format!("ws://127.0.0.1:{}", relay.port());
    let mut rx = Spawn::in_netns(
        &star.hub,
        "receiver",
        &[
            "receive",
            "--signal",
            &local,
            "--room",
            "bwup",
            "--events",
            "json",
            "--record",
            file.to_str().unwrap(),
        ],
    )
    .spawn();
    let page = format!(
        "http://{}:{}/?room=bwup&nick=camera",
        Star::hub_addr(0),
        relay.port()
    );
    let (ok, result) = page_script(
        &star.leaves[0],
        "publish-page.mjs",
        &[&page, "20000"],
        Duration::from_secs(120),
    )
    .await;
    stop(&mut rx).await;
    eprintln!("Chromium publishing through 400 kbit/s: {result}");
    assert!(ok, "the page failed: {result}");
    // Chromium's estimate found the path (within half either way; 391–522k
    // measured over 10 runs), and its encoder kept under it.
    let estimate = result["estimateBps"].as_f64().unwrap_or(f64::MAX);
    let sent = result["videoBps"].as_f64().unwrap_or(f64::MAX);
    assert!(
        (200_000.0..=600_000.0).contains(&estimate) && sent < 400_000.0,
        "Chromium did not adapt to 400 kbit/s: {result}"
    );
    // The recording decodes, and its last 8 s move.
    let r = inspect(&file);
    assert!(
        r.errors.is_empty(),
        "decode errors: {:?} ({result})",
        r.errors
    );
    let (fps, gap) = r.fps_and_gap_from(r.last_pts - 8.0);
    eprintln!(
        "recorded {:.1} s, {fps:.1} fps and longest gap {gap:.2} s over the last 8 s",
        r.duration
    );
    assert!(
        r.duration >= 15.0 && fps >= 10.0 && gap <= 1.0,
        "recording through 400 kbit/s: {:.1} s, {fps:.1} fps, gap {gap:.2} s ({result})",
        r.duration
    );
}

/// The `ts` of a process's first JSON event named `event`.
fn event_ts(p: &Proc, event: &str) -> Option<f64> {
    p.stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == event)
        .and_then(|v| v["ts"].as_f64())
}

/// How a receiver that joined a running sender did: its first picture
/// after joining, and its recording's longest gap, and frame rate and
/// longest gap over its last 10 s.
struct Joined {
    first: f64,
    gap: f64,
    late_fps: f64,
    late_gap: f64,
    /// The sender's layer for it, once a second (for failure messages).
    layers: Vec<String>,
}

/// [`Joined`] for receiver `rx` (its sender `tx` knows it as `id`),
/// which recorded to `file`; printed under `what`. Fails on a file that
/// does not decode cleanly.
fn joined(what: &str, rx: &Proc, tx: &Proc, id: &str, file: &Path) -> Joined {
    let start = event_ts(rx, "start").unwrap_or_else(|| rx.fail("no start event"));
    let first = event_ts(rx, "keyframe")
        .map(|t| (t - start) / 1000.0)
        .unwrap_or_else(|| rx.fail("no key frame recorded"));
    let r = inspect(file);
    assert!(r.errors.is_empty(), "decode errors: {:?}", r.errors);
    let (fps, gap) = r.fps_and_gap_from(r.first_pts);
    let (late_fps, late_gap) = r.fps_and_gap_from(r.last_pts - 10.0);
    let layers: Vec<String> = peer_stats(tx, id)
        .iter()
        .map(|(t, p)| format!("{t:.0}s L{}", p["layer"]))
        .collect();
    eprintln!(
        "{what}: first frame {first:.2} s after joining, {fps:.1} fps, longest gap \
         {gap:.2} s; last 10 s: {late_fps:.1} fps, longest gap {late_gap:.2} s; {layers:?}"
    );
    Joined {
        first,
        gap,
        late_fps,
        late_gap,
        layers,
    }
}

#[tokio::test]
async fn behind_a_shallow_bucket_a_receiver_records_from_its_first_second() {
    // A home link's shaper: 1 Mbit/s with a 4 KB bucket and a 100 ms
    // queue. Sent in one burst, every key frame bigger than bucket and
    // queue (~16 KB) lost its tail, and so did the next one asked for: 3
    // of 6 runs recorded nothing in 30 s.
    let _one = ONE_SENDER.lock().await;
    let star = Star::new(1);
    star.shape(0, "1mbit", "4kb", "100ms");
    let relay = Relay::start_in(&star.hub, "0.0.0.0:0").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rx.webm");
    let tx = sender(&star, &relay, "shallow");
    tx.wait_stderr(r#""event":"start""#).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut rx = receiver(&star, 0, &relay, "shallow", &file);
    rx.wait_stderr(r#""event":"track""#).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let id = own_id(&rx);
    stop(&mut rx).await;

    let Joined {
        first,
        gap,
        late_fps,
        late_gap,
        layers,
    } = joined("shallow bucket", &rx, &tx, &id, &file);
    // Within 1 s of joining (0.25–0.28 s measured once a receiver started
    // on the middle layer; 1.1–1.8 s when it started at full size).
    assert!(first <= 1.0, "first frame {first:.2} s after joining");
    // Then it keeps moving: over the last 10 s, 28.3–30.1 fps with gaps
    // of 0.03 s (0.60 s in one CI run: a probe for full size that lost
    // packets, and the frame they belonged to) once a recording waited
    // 500 ms for resends; with 100 ms, 24–25 fps and freezes of 1.8 s
    // while key frames asked for one after another crossed the full
    // queue. Over the whole recording, 0.57–1.20 s (the first probe).
    assert!(
        late_fps >= 25.0 && late_gap <= 1.0 && gap <= 2.0,
        "the picture did not keep moving: {late_fps:.1} fps, longest gap {late_gap:.2} s \
         over the last 10 s, {gap:.2} s in all ({layers:?})"
    );
    drop(tx);
}

#[tokio::test]
async fn three_receivers_behind_the_senders_one_uplink_share_it() {
    // The mesh's everyday case: every viewer's copy crosses the sender's
    // one uplink, here 3 Mbit/s with a 4 KB bucket and a 100 ms queue.
    let _one = ONE_SENDER.lock().await;
    let star = Star::new(4);
    star.route_leaves();
    star.shape_uplink(0, "3mbit", "4kb", "100ms");
    let relay = Relay::start_in(&star.hub, "0.0.0.0:0").await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("ws://{}:{}", Star::hub_addr(0), relay.port());
    let tx = sender_in(&star.leaves[0], &url, "uplink");
    tx.wait_stderr(r#""event":"start""#).await;
    let files: Vec<_> = (1..4)
        .map(|k| dir.path().join(format!("rx{k}.webm")))
        .collect();
    let mut rxs: Vec<Proc> = (1..4)
        .map(|k| receiver(&star, k, &relay, "uplink", &files[k - 1]))
        .collect();
    for rx in &rxs {
        rx.wait_stderr(r#""event":"track""#).await;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let ids: Vec<String> = rxs.iter().map(own_id).collect();
    for rx in &mut rxs {
        stop(rx).await;
    }
    let mut total = 0.0;
    let mut lines = Vec::new();
    let mut moving = Vec::new();
    for (k, file) in files.iter().enumerate() {
        let r = inspect(file);
        assert!(
            r.errors.is_empty(),
            "receiver {k}: decode errors {:?}",
            r.errors
        );
        let from = r.last_pts - 15.0;
        let (fps, gap) = r.fps_and_gap_from(from);
        moving.push(fps >= 5.0 && gap <= 3.0);
        let rate = file_bitrate(file, r.duration);
        total += rate;
        let layers: Vec<String> = peer_stats(&tx, &ids[k])
            .iter()
            .map(|(t, p)| format!("{t:.0}s L{}", p["layer"]))
            .collect();
        lines.push(format!(
            "receiver {k}: {fps:.1} fps, longest gap {gap:.2} s over the last 15 s, \
             {:.0} kbit/s recorded; {layers:?}",
            rate / 1e3
        ));
    }
    let report = format!(
        "three behind one 3 Mbit/s uplink (4 KB bucket):\n{}\ntogether {:.0} kbit/s",
        lines.join("\n"),
        total / 1e3
    );
    eprintln!("{report}");
    // Every viewer's picture keeps moving. (Measured in 9 runs: 8.7–30
    // fps, longest gaps 0.03–1.77 s, 1.46–1.91 Mbit/s together, every one
    // on the middle layer: each receiver's probes for full size, and the
    // key frames any one of them asks for, cross the one queue all three
    // share. Issue 23 asks for 25 fps, no freeze over 0.5 s and half the
    // link or more together: not met yet.)
    assert!(moving.iter().all(|m| *m), "a picture stopped: {report}");
    drop(tx);
}

#[tokio::test]
async fn across_a_150_ms_round_trip_behind_a_shallow_bucket_a_receiver_records_within_1_5_s() {
    // The shallow-bucket link (1 Mbit/s, 4 KB bucket, 100 ms queue) with
    // the sender and the receiver 150 ms apart (examples/wan.rs). Before
    // the first picture: ~0.75 s of connection set-up (ICE and DTLS take
    // 2.5 round trips), a key frame asked for then, and its way across.
    let _one = ONE_SENDER.lock().await;
    let star = Star::new(2);
    star.route_leaves();
    star.shape(1, "1mbit", "4kb", "100ms");
    let _wan = star
        .wan(&[(0, "delay:40ms,jitter:2ms"), (1, "delay:35ms,jitter:2ms")])
        .await;
    let relay = Relay::start_in(&star.hub, "0.0.0.0:0").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rx.webm");
    let url = format!("ws://{}:{}", Star::hub_addr(0), relay.port());
    let tx = sender_in(&star.leaves[0], &url, "far");
    tx.wait_stderr(r#""event":"start""#).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut rx = receiver(&star, 1, &relay, "far", &file);
    rx.wait_stderr(r#""event":"track""#).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let id = own_id(&rx);
    stop(&mut rx).await;

    // The link really is 150 ms long (ICE's round trip at connection).
    let rtt = rx
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "connect")
        .and_then(|v| v["path"]["rtt_ms"].as_f64())
        .unwrap_or_else(|| rx.fail("no round trip in the connect event"));
    assert!(
        rtt >= 140.0,
        "round trip {rtt:.0} ms: the link is not in the path"
    );
    let Joined {
        first,
        gap,
        late_fps,
        late_gap,
        layers,
    } = joined("150 ms away", &rx, &tx, &id, &file);
    // 1.13–1.37 s measured (3.0 s while the key frame went out with the
    // 0.8 s of video held behind it during set-up).
    assert!(first <= 1.5, "first frame {first:.2} s after joining");
    // 30 fps over the last 10 s, gaps of 0.03 s, in 4 runs of 4. Before
    // probes above what the path carried went up by a quarter (not 2x),
    // and a recording waited 3 round trips beyond 500 ms for resends: a
    // freeze of 0.8–1.4 s in half the runs (a probe's overrun lost a
    // burst), and in every run with three NACKs per loss.
    assert!(
        late_fps >= 25.0 && late_gap <= 1.0 && gap <= 2.0,
        "the picture did not keep moving: {late_fps:.1} fps, longest gap {late_gap:.2} s \
         over the last 10 s, {gap:.2} s in all ({layers:?})"
    );
    drop(tx);
}
