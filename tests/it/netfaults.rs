//! Network faults between two real peers: random packet loss and a cut of
//! the link, made with nftables inside network namespaces this test creates
//! (a veth pair between them, addresses that never leave this machine).
//!
//! The relay and the sender run in namespace A, the receiver in B; every
//! fault is a pair of nftables rules, one at each end of the link, so it
//! hits both directions.
//! Needs root, `ip` (iproute2) and `nft` (nftables).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;
use crate::mediafile::inspect;

const ADDR_A: &str = "10.231.0.1";
const ADDR_B: &str = "10.231.0.2";
/// The veth end in each namespace (same name on both sides: each namespace
/// has its own interface names).
const LINK: &str = "p2pveth";
const TABLE: &str = "p2pfaults";

const CHANNEL: &str = r#""event":"channel""#;
const CONNECT: &str = r#""event":"connect""#;
const DISPOSE: &str = r#""event":"dispose""#;
const KEYFRAME: &str = r#""event":"keyframe""#;

/// Two network namespaces joined by a veth pair; deleted when dropped, also
/// when a test fails half-way.
struct Net {
    a: String,
    b: String,
}

impl Net {
    fn new() -> Self {
        remove_leftover_netns();
        let net = Self {
            a: netns_name("A"),
            b: netns_name("B"),
        };
        // `net` exists before the namespaces do, so a failure below still
        // deletes whatever was made.
        run(&["ip", "netns", "add", &net.a], None);
        run(&["ip", "netns", "add", &net.b], None);
        veth_pair((&net.a, LINK, ADDR_A), (&net.b, LINK, ADDR_B));
        net
    }

    /// Drops packets crossing the link that match `rule` (an nftables
    /// match, e.g. `meta l4proto udp numgen random mod 100 < 5`; empty for
    /// all), both ways. Each side drops what it receives: a packet dropped
    /// on its way out would fail the sender's `sendmsg` with EPERM, which
    /// no real network does.
    fn drop_packets(&self, rule: &str) {
        let script = format!(
            "table inet {TABLE} {{\n\
             chain in {{ type filter hook input priority 0; policy accept;\n\
             iifname \"{LINK}\" {rule} drop\n }}\n\
             }}\n"
        );
        for ns in [&self.a, &self.b] {
            run(
                &["ip", "netns", "exec", ns, "nft", "-f", "-"],
                Some(&script),
            );
        }
    }

    /// Removes every fault.
    fn heal(&self) {
        for ns in [&self.a, &self.b] {
            run(
                &[
                    "ip", "netns", "exec", ns, "nft", "delete", "table", "inet", TABLE,
                ],
                None,
            );
        }
    }

    /// Moves B to another network the way a laptop going from Wi-Fi to a
    /// phone's hotspot does: an address on a new subnet comes, with a
    /// default route through A (A's side of it is its router), and the
    /// old address goes.
    fn move_b(&self) {
        self.join_b_to_a_new_network();
        self.take_bs_old_address();
    }

    /// The first half of [`Net::move_b`]: B has an address on a new
    /// subnet and a default route through A, and keeps its old address.
    fn join_b_to_a_new_network(&self) {
        let (router, moved) = ("10.232.0.1", "10.232.0.2");
        let cidr = |a: &str| format!("{a}/24");
        run(
            &[
                "ip",
                "-n",
                &self.a,
                "addr",
                "add",
                &cidr(router),
                "dev",
                LINK,
            ],
            None,
        );
        run(
            &[
                "ip",
                "-n",
                &self.b,
                "addr",
                "add",
                &cidr(moved),
                "dev",
                LINK,
            ],
            None,
        );
        run(
            &[
                "ip", "-n", &self.b, "route", "add", "default", "via", router,
            ],
            None,
        );
    }

    /// The second half of [`Net::move_b`]: B's old address goes.
    fn take_bs_old_address(&self) {
        run(
            &[
                "ip",
                "-n",
                &self.b,
                "addr",
                "del",
                &format!("{ADDR_B}/24"),
                "dev",
                LINK,
            ],
            None,
        );
    }

    fn relay_listen(&self) -> String {
        format!("{ADDR_A}:0")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the pair.
        for ns in [&self.a, &self.b] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `p2p send` or `p2p receive` (`cmd`) in namespace `ns`, named `name` in
/// failure messages.
fn peer(ns: &str, name: &str, relay: &Relay, cmd: &str, room: &str, extra: &[&str]) -> Spawn {
    let mut args = vec![
        cmd, "--signal", &relay.url, "--room", room, "--events", "json",
    ];
    args.extend_from_slice(extra);
    Spawn::in_netns(ns, name, &args)
}

/// Waits until `p` has printed `needle` `n` times (for up to twice the
/// harness's wait: these tests start several media pipelines at once); on
/// failure shows what every process of the test printed, not only `p`.
async fn wait_for(p: &Proc, all: &[&Proc], needle: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + 2 * WAIT;
    while p.stderr_count(needle) < n {
        if tokio::time::Instant::now() > deadline {
            let others: String = all
                .iter()
                .filter(|o| o.name != p.name)
                .map(|o| format!("--- {} stderr ---\n{}\n", o.name, o.stderr()))
                .collect();
            p.fail(&format!(
                "{} printed {needle} {} times, wanted {n}\n{others}",
                p.name,
                p.stderr_count(needle)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Decodes a recording's video with `vp8dec` and counts frames; every
/// error and warning on the way (a frame the decoder found broken) is
/// returned.
fn decode_vp8(path: &Path) -> (u64, Vec<String>) {
    gst::init().unwrap();
    let desc = format!(
        "filesrc location=\"{}\" ! matroskademux name=d \
         d.video_0 ! queue ! vp8dec ! fakesink name=sink sync=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let frames = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = frames.clone();
    pipeline
        .by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut problems = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(100),
            &[
                gst::MessageType::Error,
                gst::MessageType::Warning,
                gst::MessageType::Eos,
            ],
        ) else {
            if Instant::now() > deadline {
                problems.push("decoding did not finish in time".into());
                break;
            }
            continue;
        };
        let src = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                problems.push(format!("error from {src}: {} ({:?})", e.error(), e.debug()));
                break;
            }
            gst::MessageView::Warning(w) => {
                problems.push(format!(
                    "warning from {src}: {} ({:?})",
                    w.error(),
                    w.debug()
                ));
            }
            _ => {}
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    (frames.load(Ordering::Relaxed), problems)
}

/// One video frame as stored in a recording (not decoded).
struct Stored {
    pts: f64,
    key: bool,
    /// Of the encoded bytes, which are the sender's own (no re-encoding).
    hash: u64,
}

fn stored_frames(path: &Path) -> Vec<Stored> {
    use std::hash::{Hash, Hasher};
    gst::init().unwrap();
    let desc = format!(
        "filesrc location=\"{}\" ! matroskademux name=d \
         d.video_0 ! appsink name=v sync=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("v")
        .unwrap()
        .downcast::<gstreamer_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut frames = Vec::new();
    loop {
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) else {
            if sink.is_eos() {
                break;
            }
            if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                panic!("{}: cannot demux: {msg:?}", path.display());
            }
            assert!(
                Instant::now() < deadline,
                "{}: demuxing hangs",
                path.display()
            );
            continue;
        };
        let Some(b) = sample.buffer() else { continue };
        let map = b.map_readable().unwrap();
        let mut h = std::hash::DefaultHasher::new();
        map.as_slice().hash(&mut h);
        frames.push(Stored {
            pts: b.pts().map_or(0.0, |t| t.nseconds() as f64 / 1e9),
            key: !b.flags().contains(gst::BufferFlags::DELTA_UNIT),
            hash: h.finish(),
        });
    }
    let _ = pipeline.set_state(gst::State::Null);
    frames
}

/// How `lossy` compares with `clean`, the same stream recorded at the
/// same time by a receiver without loss.
struct Comparison {
    /// Delta frames whose predecessor in the sender's sequence is not the
    /// frame stored before them: their reference was lost, they cannot
    /// decode as the sender encoded them.
    broken: Vec<String>,
    /// Leading frames from before the reference recording started.
    before_reference: usize,
    /// Frames after that which could not be judged (not in `clean`, or a
    /// delta frame following such a one).
    unjudged: usize,
}

fn compare(lossy: &[Stored], clean: &[Stored]) -> Comparison {
    let in_clean = |f: &Stored| clean.iter().any(|c| c.hash == f.hash);
    let before_reference = lossy.iter().position(in_clean).unwrap_or(lossy.len());
    let mut c = Comparison {
        broken: Vec::new(),
        before_reference,
        unjudged: 0,
    };
    // Where the previous frame of `lossy` is in `clean`.
    let mut prev: Option<usize> = None;
    for (i, f) in lossy.iter().enumerate().skip(before_reference) {
        let from = prev.map_or(0, |p| p + 1);
        let pos = clean[from.min(clean.len())..]
            .iter()
            .position(|c| c.hash == f.hash)
            .map(|k| from + k);
        match (pos, prev) {
            (None, _) => c.unjudged += 1,
            (Some(_), _) if f.key => {}
            (Some(p), Some(before)) if p == before + 1 => {}
            (Some(p), Some(before)) => c.broken.push(format!(
                "delta frame at {:.3} s follows the frame at {:.3} s, but {} frame(s) the sender sent between them are missing",
                f.pts,
                lossy[i - 1].pts,
                p - before - 1
            )),
            // The first frame compared, or one after an unjudged frame.
            (Some(_), None) if i == before_reference => {}
            (Some(_), None) => c.unjudged += 1,
        }
        prev = pos;
    }
    c
}

/// A recording made under loss: decodes without a broken frame (compared
/// with `clean`, the same stream recorded without loss), lasts about
/// `secs`, and holds at least 85 % of the frames a 30 fps source sent.
fn assert_clean_recording(path: &Path, clean: &Path, secs: f64) {
    let report = inspect(path);
    let (frames, problems) = decode_vp8(path);
    let stored = stored_frames(path);
    let Comparison {
        broken,
        before_reference,
        unjudged,
    } = compare(&stored, &stored_frames(clean));
    eprintln!(
        "{}: {} frames stored ({} key frames), {} broken, {before_reference} \
         from before the reference started, {unjudged} not comparable",
        path.display(),
        stored.len(),
        stored.iter().filter(|f| f.key).count(),
        broken.len()
    );
    let ctx = format!(
        "{}: {frames} frames decoded by vp8dec, problems {problems:?}; \
         decodebin: {} frames, errors {:?}\n{}",
        path.display(),
        report.video_frames,
        report.errors,
        report.discoverer
    );
    assert!(problems.is_empty(), "decoder problems: {ctx}");
    assert!(broken.is_empty(), "broken frames: {broken:#?}\n{ctx}");
    assert!(
        unjudged * 20 <= stored.len() && before_reference * 2 <= stored.len(),
        "{unjudged} of {} frames are not in the recording made without loss, \
         {before_reference} came before it started: {ctx}",
        stored.len()
    );
    assert!(report.errors.is_empty(), "decode errors: {ctx}");
    assert!(
        report.video.as_deref().is_some_and(|v| v.contains("VP8")),
        "no VP8 video: {ctx}"
    );
    assert!(
        report.audio.as_deref().is_some_and(|v| v.contains("Opus")),
        "no Opus audio: {ctx}"
    );
    assert!(
        (secs - 2.0..=secs + 3.0).contains(&report.duration),
        "duration {:.1} s, expected about {secs} s: {ctx}",
        report.duration
    );
    let expected = 30.0 * report.duration;
    assert!(
        frames as f64 >= 0.85 * expected,
        "{frames} frames, expected about {expected:.0}: {ctx}"
    );
}

fn recording_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn five_percent_loss_leaves_a_recording_without_broken_frames() {
    const SECS: u64 = 20;
    let net = Net::new();
    net.drop_packets("meta l4proto udp numgen random mod 100 < 5");
    let relay = Relay::start_in(&net.a, &net.relay_listen()).await;
    let dir = tempfile::tempdir().unwrap();
    let (lossy, clean) = (dir.path().join("lossy.webm"), dir.path().join("clean.webm"));
    // The same stream, recorded through the lossy link (B) and next to
    // the sender (A): the second is the reference for what was sent.
    let mut rx = peer(
        &net.b,
        "receiver",
        &relay,
        "receive",
        "loss",
        &["--record", lossy.to_str().unwrap()],
    )
    .spawn();
    let mut reference = peer(
        &net.a,
        "reference",
        &relay,
        "receive",
        "loss",
        &["--record", clean.to_str().unwrap()],
    )
    .spawn();
    // One layer: the lossy receiver's frames must be the reference's own
    // (under loss its estimate may move it to a smaller layer, which the
    // bandwidth tests cover).
    let tx = peer(
        &net.a,
        "sender",
        &relay,
        "send",
        "loss",
        &["--test-source", "--layers", "1"],
    )
    .spawn();
    wait_for(&reference, &[&rx, &reference, &tx], KEYFRAME, 1).await;
    wait_for(&rx, &[&rx, &reference, &tx], KEYFRAME, 1).await;
    tokio::time::sleep(Duration::from_secs(SECS)).await;
    // The reference stops last, so it holds every frame the other has.
    for p in [&mut rx, &mut reference] {
        p.signal("INT");
        assert!(p.wait_exit().await.success(), "{} exit status", p.name);
    }
    for (p, path) in [(&rx, &lossy), (&reference, &clean)] {
        assert!(
            p.stderr().contains(&format!("saved {}", path.display())),
            "recording not finalised:\n{}",
            p.stderr()
        );
    }
    eprintln!(
        "under 5 % loss: {}",
        rx.stderr()
            .lines()
            .filter_map(|l| l.split_once("jitter buffer: ").map(|(_, s)| s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(
        recording_files(dir.path()),
        vec![clean.clone(), lossy.clone()]
    );
    assert_clean_recording(&lossy, &clean, SECS as f64);
}

/// 200 MiB of random bytes through `--binary` over a link dropping 5 % of
/// the UDP packets each way arrive whole and in order. With SCTP's RFC
/// 9260 timer floor of 1 s this took ~55 min; with p2p's 20 ms, ~80 s.
#[tokio::test]
async fn five_percent_loss_still_delivers_every_byte() {
    const SIZE: usize = 200 * 1024 * 1024;
    let net = Net::new();
    net.drop_packets("meta l4proto udp numgen random mod 100 < 5");
    let relay = Relay::start_in(&net.a, &net.relay_listen()).await;
    let mut rx = peer(
        &net.b,
        "receiver",
        &relay,
        "receive",
        "lossbin",
        &["--binary"],
    )
    .raw_stdout()
    .spawn();
    let mut tx = peer(&net.a, "sender", &relay, "send", "lossbin", &["--binary"]).spawn();

    let mut data = vec![0u8; SIZE];
    rand::fill(&mut data[..]);
    let want = Sha256::digest(&data);
    let mut stdin = tx.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        stdin.write_all(&data).await.unwrap();
        // Dropped here: end of input.
    });
    let started = Instant::now();
    let mut out = rx.child.stdout.take().unwrap();
    let mut got = Vec::with_capacity(SIZE);
    if tokio::time::timeout(Duration::from_secs(300), out.read_to_end(&mut got))
        .await
        .is_err()
    {
        rx.fail(&format!(
            "only {} of {SIZE} bytes arrived in 300 s; sender said:\n{}",
            got.len(),
            tx.stderr()
        ));
    }
    eprintln!(
        "{} MB through 5 % loss in {:.1} s",
        SIZE >> 20,
        started.elapsed().as_secs_f64()
    );
    writer.await.unwrap();
    assert_eq!(got.len(), SIZE, "byte count");
    assert!(Sha256::digest(&got) == want, "SHA-256 differs");
    assert!(rx.wait_exit().await.success(), "receiver exit status");
    assert!(tx.wait_exit().await.success(), "sender exit status");
}

/// Reads the receiver's stdout until a line satisfying `want` arrives,
/// writing a numbered line to the sender every second meanwhile; returns
/// that line. Fails after `within`.
async fn until_line(
    tx: &mut Proc,
    rx: &mut Proc,
    within: Duration,
    want: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + within;
    let mut n = 0;
    loop {
        n += 1;
        tx.write_stdin(format!("after-{n}\n").as_bytes()).await;
        let tick = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
        while let Ok(line) = tokio::time::timeout_at(tick, rx.stdout_lines.recv()).await {
            match line {
                Some(l) if want(&l) => return l,
                Some(_) => {}
                None => rx.fail("receiver stdout closed"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            rx.fail(&format!(
                "nothing written after the restore arrived within {within:?}; \
                 sender said:\n{}",
                tx.stderr()
            ));
        }
    }
}

/// Cuts the link for 10 s (`rule` selects what is dropped), then restores
/// it. While signaling works (`signaling_up`) the peers keep the session:
/// the sender restarts ICE, the receiver asks it to, and once the link
/// heals the same connection carries on. When signaling is cut too, the
/// receiver hears no restart and gives the connection up; after the heal
/// the peers make a new one. Either way text written afterwards arrives,
/// both processes stay responsive, and the receiver ends with one
/// recording that decodes across the gap.
async fn cut_for_ten_seconds(rule: &str, room: &str, signaling_up: bool) {
    const RECONNECT: &str = r#""event":"reconnect""#;
    let net = Net::new();
    let relay = Relay::start_in(&net.a, &net.relay_listen()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.webm");
    let mut rx = peer(
        &net.b,
        "receiver",
        &relay,
        "receive",
        room,
        &["--record", path.to_str().unwrap()],
    )
    .spawn();
    let mut tx = peer(
        &net.a,
        "sender",
        &relay,
        "send",
        room,
        &["--test-source", "--data"],
    )
    .spawn();
    wait_for(&tx, &[&tx, &rx], CHANNEL, 1).await;
    wait_for(&rx, &[&tx, &rx], KEYFRAME, 1).await;
    tx.write_stdin(b"before\n").await;
    assert_eq!(rx.line().await, "before");
    tokio::time::sleep(Duration::from_secs(4)).await;

    net.drop_packets(rule);
    tokio::time::sleep(Duration::from_secs(10)).await;
    net.heal();
    let restored = Instant::now();

    // Lines written after the restore arrive.
    let line = until_line(&mut tx, &mut rx, Duration::from_secs(30), |l| {
        l.starts_with("after-")
    })
    .await;
    eprintln!(
        "{line:?} arrived {:.1} s after the restore",
        restored.elapsed().as_secs_f64()
    );
    if signaling_up {
        wait_for(&rx, &[&tx, &rx], RECONNECT, 1).await;
    } else {
        wait_for(&rx, &[&tx, &rx], CONNECT, 2).await;
    }
    // The session goes on: media is recorded, and text keeps arriving.
    tokio::time::sleep(Duration::from_secs(4)).await;
    tx.write_stdin(b"last\n").await;
    while rx.line().await != "last" {}
    let err = rx.stderr();
    if signaling_up {
        assert_eq!(
            (rx.stderr_count(CONNECT), rx.stderr_count(DISPOSE)),
            (1, 0),
            "the session was given up and replaced, not carried on:\n{err}"
        );
    } else {
        assert!(
            err.contains("recording goes on in"),
            "the recording did not go on:\n{err}"
        );
    }
    rx.signal("INT");
    assert!(rx.wait_exit().await.success(), "receiver exit status");
    assert!(
        tx.child.try_wait().unwrap().is_none(),
        "the sender ended:\n{}",
        tx.stderr()
    );
    tx.signal("INT");
    assert!(tx.wait_exit().await.success(), "sender exit status");

    let files = recording_files(dir.path());
    assert_eq!(files, vec![path.clone()], "one recording across the gap");
    assert!(
        rx.stderr().contains(&format!("saved {}", path.display())),
        "not finalised:\n{}",
        rx.stderr()
    );
    // It decodes; it holds the 4 s before the cut and the 4 after the
    // restore, the cut a gap in time; after the gap at the full rate
    // (loosely: a loaded machine makes the sender skip frames).
    inspect(&path).assert_goes_on_after_a_gap(14.0, 3.0);
}

#[tokio::test]
async fn a_ten_second_cut_of_all_traffic_is_survived() {
    // Media, data and signaling: the relay's TCP connection stalls too.
    cut_for_ten_seconds("", "cut-all", false).await;
}

#[tokio::test]
async fn a_ten_second_udp_blackout_is_survived() {
    // Media and data only: signaling stays up throughout, so the peers
    // retry while the link is still dead.
    cut_for_ten_seconds("meta l4proto udp", "cut-udp", true).await;
}

/// Writes `line-{n}` to the sender and keeps it in `sent`.
async fn write_line(tx: &mut Proc, sent: &mut Vec<String>, n: usize) {
    let line = format!("line-{n}");
    tx.write_stdin(format!("{line}\n").as_bytes()).await;
    sent.push(line);
}

/// One side's address changes mid-session (`receiver_moves`, else the
/// sender's), as when a laptop moves from one network to another: its
/// relay connection and its ICE path die at once. It notices, reconnects
/// to the relay under its old name, and ICE restarts: the same connection
/// carries on. Every line written meanwhile arrives, in order, and the
/// recording is one file that decodes across the gap.
/// What else happens as B's address changes.
#[derive(Clone, Copy, PartialEq)]
enum AlsoAtTheMove {
    Nothing,
    /// The relay is killed as B moves, and started again (with the same
    /// `--resume-secret`) half a second later.
    TheRelayRestarts,
}

async fn an_address_change(receiver_moves: bool, also: AlsoAtTheMove, room: &str) {
    const RECONNECT: &str = r#""event":"reconnect""#;
    const SECRET: &[&str] = &["--resume-secret", "a secret the relay is given each run"];
    let net = Net::new();
    let mut relay = Relay::start_in_with(&net.a, &net.relay_listen(), SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moved.webm");
    let (rx_ns, tx_ns) = if receiver_moves {
        (&net.b, &net.a)
    } else {
        (&net.a, &net.b)
    };
    let mut rx = peer(
        rx_ns,
        "receiver",
        &relay,
        "receive",
        room,
        &["--record", path.to_str().unwrap(), "-v"],
    )
    .spawn();
    let mut tx = peer(
        tx_ns,
        "sender",
        &relay,
        "send",
        room,
        &["--test-source", "--data", "-v"],
    )
    .spawn();
    wait_for(&tx, &[&tx, &rx], CHANNEL, 1).await;
    wait_for(&rx, &[&tx, &rx], KEYFRAME, 1).await;
    let mut sent = Vec::new();
    for n in 0..10 {
        write_line(&mut tx, &mut sent, n).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut restarted = None;
    if also == AlsoAtTheMove::TheRelayRestarts {
        relay.proc.child.kill().await.unwrap();
    }
    net.move_b();
    let moved = Instant::now();
    if also == AlsoAtTheMove::TheRelayRestarts {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let listen = format!("{ADDR_A}:{}", relay.port());
        restarted = Some(Relay::start_in_with(&net.a, &listen, SECRET).await);
    }
    // Lines keep being written while the path is down.
    let mut n = 10;
    while rx.stderr_count(RECONNECT) == 0 {
        if moved.elapsed() > 2 * WAIT {
            rx.fail(&format!(
                "no reconnect within {:?} of the move; sender said:\n{}",
                2 * WAIT,
                tx.stderr()
            ));
        }
        write_line(&mut tx, &mut sent, n).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let back = moved.elapsed();
    eprintln!(
        "media and data back {:.2} s after the address changed",
        back.as_secs_f64()
    );
    if restarted.is_some() {
        // The issue's bound for a change with more going on than one
        // address (the relay gone meanwhile, or NATs between).
        assert!(
            back <= Duration::from_secs(5),
            "back only {back:?} after the move and the relay's restart:\n{}\n{}",
            rx.stderr(),
            tx.stderr()
        );
    }
    // Four more seconds of the restored session.
    for _ in 0..20 {
        write_line(&mut tx, &mut sent, n).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        got.push(rx.line().await);
    }
    assert_eq!(got, sent, "lines lost or reordered across the change");

    let err = rx.stderr();
    assert_eq!(
        rx.stderr_count(CONNECT),
        1,
        "the session was replaced, not carried on:\n{err}"
    );
    assert_eq!(rx.stderr_count(DISPOSE), 0, "a peer was given up:\n{err}");
    let moved_side = if receiver_moves { &rx } else { &tx };
    assert!(
        moved_side.stderr().contains("address") && err.contains("reconnected after"),
        "the change and the gap are not told:\n{err}\n{}",
        tx.stderr()
    );
    rx.signal("INT");
    assert!(rx.wait_exit().await.success(), "receiver exit status");
    tx.signal("INT");
    assert!(tx.wait_exit().await.success(), "sender exit status");

    // One file, decoding across the gap: the seconds before the move and
    // the four after are in it, at the full rate after the gap.
    let files = recording_files(dir.path());
    assert_eq!(files, vec![path.clone()], "one recording");
    inspect(&path).assert_goes_on_after_a_gap(6.0, 3.0);
}

#[tokio::test]
async fn a_receiver_whose_address_changes_carries_on_in_the_same_session() {
    an_address_change(true, AlsoAtTheMove::Nothing, "moved-rx").await;
}

#[tokio::test]
async fn a_sender_whose_address_changes_carries_on_in_the_same_session() {
    an_address_change(false, AlsoAtTheMove::Nothing, "moved-tx").await;
}

/// The receiver's address changes while the relay restarts: both sides
/// come back to the new relay run under their old names (their resume
/// tokens are signed with the secret it is given again), so the ICE
/// restart's offer is taken as the sender's, not refused as a stranger's,
/// and the session carries on within 5 s. (Before, the new run gave new
/// names, and a new connection came ~15 s later.)
#[tokio::test]
async fn a_receiver_whose_address_changes_while_the_relay_restarts_carries_on() {
    an_address_change(true, AlsoAtTheMove::TheRelayRestarts, "moved-restart").await;
}

/// Our page in headless Chromium watching `p2p send`, when the page's
/// address changes (the laptop of the test above, with a browser): the
/// page sees its browser gather anew, makes its relay connection again
/// and asks the sender to restart ICE at once, so the picture is back
/// within 3 s of the change (the issue's aim on a LAN; before, 10–12 s:
/// the sender saw nothing until ICE's 5 s of silence, and its first
/// restart offer went to the page's dead relay connection).
#[tokio::test]
async fn a_page_whose_address_changes_plays_on_within_3_s() {
    let net = Net::new();
    let relay = Relay::start_in(&net.a, &net.relay_listen()).await;
    let room = "moved-page";
    let tx = peer(&net.a, "sender", &relay, "send", room, &["--test-source"]).spawn();
    let url = format!("http://{ADDR_A}:{}/?room={room}&nick=viewer", relay.port());
    // The page plays within ~3 s of its start and then settles 4 s; the
    // move comes ~4 s into the 16 s it watches, so the picture has
    // 10 s to come back in the window.
    let args = [url.as_str(), "4000", "16000"];
    let watch = page_script(&net.b, "watch-page.mjs", &args, Duration::from_secs(120));
    // The new network a second before the old one goes (a phone's
    // hotspot that comes up before the Wi-Fi fades): the browser tells of
    // the new address while the old one still works, and a relay
    // connection the page makes then leaves from the old address and dies
    // with it (in CI the page asked for its restart over such a
    // connection, and was refused a new one for 3 s).
    let move_later = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        net.join_b_to_a_new_network();
        tokio::time::sleep(Duration::from_secs(1)).await;
        net.take_bs_old_address();
    };
    let ((ok, result), ()) = tokio::join!(watch, move_later);
    eprintln!("the page across its address change: {result}");
    assert!(ok, "the page failed: {result}\n{}", tx.stderr());
    let gap = result["maxGapMs"].as_f64().unwrap_or(f64::MAX);
    let frames = result["frames"].as_f64().unwrap_or(0.0);
    assert!(
        gap <= 3000.0,
        "the picture stopped for {gap} ms across the change: {result}\nsender:\n{}",
        tx.stderr()
    );
    // Back at the full rate, not a picture now and then: the 16 s less
    // the freeze, at ~30 fps (a loaded machine makes the sender skip).
    assert!(
        frames >= 20.0 * (16.0 - gap / 1000.0),
        "{frames} frames in 16 s: {result}"
    );
    assert_eq!(
        tx.stderr_count(CONNECT),
        1,
        "the page's session was replaced, not carried on:\n{}",
        tx.stderr()
    );
}
