//! The entry points, `p2p send` and `p2p receive`: each sets up its side's
//! parts around a `Runner` and runs its loop until the session ends.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::mpsc;

use super::output::write_output;
use super::report::Reporter;
use super::rtc::{self, Rtc};
use super::settings::{self, ReceiveConfig, SendConfig};
use super::status::Status;
use super::whip::Whip;
use super::{av, fanout, ingest, machine, stdio, viewers, Machine, Runner, LAST_DATA_WAIT};
use crate::media::record::RecordConfig;
use crate::signaling::{self, SignalEvent, Signaling};

/// How often timeouts and pings are checked. Both are counted in seconds;
/// a tenth of one is precise enough and costs nothing.
const TICK: Duration = Duration::from_millis(100);

/// Events queued from peer connections to the run loop: candidates and state
/// changes for many peers at once.
const RTC_EVENTS: usize = 1024;

/// Messages from data channels waiting to be written to stdout. Small, so a
/// stdout that does not keep up holds back the channels (and the senders).
const OUTPUT_QUEUE: usize = 64;

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn connect_signaling(
    cfg: &settings::PeerConfig,
) -> anyhow::Result<(Signaling, mpsc::Receiver<SignalEvent>)> {
    Ok(signaling::connect(&cfg.signal, cfg.signal_opts.clone()).await?)
}

/// `p2p send`: offers a data channel to every receiver in the room and
/// fans stdin out to them.
pub async fn run_sender(cfg: SendConfig) -> anyhow::Result<ExitCode> {
    let id = new_id();
    let reporter = Reporter::new("receiver", cfg.peer.events, cfg.peer.events_file.as_deref())?;
    let mut rtc = Rtc::new(
        &cfg.peer.ice_servers,
        cfg.peer.signal_opts.ca_file.as_deref(),
        false,
    )?;
    let (capture, mut video, mut media_end) = match &cfg.media {
        Some(m) => {
            let (capture, video, end) = av::start_sender_media(m, &mut rtc, &id)?;
            (Some(capture), video, Some(end))
        }
        None => (None, None, None),
    };
    // Lives as long as the session: dropping it closes the endpoint.
    let mut _ingest = None;
    if let Some(ing) = &cfg.ingest {
        let publishers = Rtc::new(
            &cfg.peer.ice_servers,
            cfg.peer.signal_opts.ca_file.as_deref(),
            true,
        )?;
        let (server, writer) = ingest::start(ing.clone(), &mut rtc, publishers, &id).await?;
        // The one line scripts wait for: where publishers go.
        println!("{}", server.url);
        video = writer;
        _ingest = Some(server);
    }
    // Likewise; after the tracks are set (by the capture or the ingest).
    let mut first_viewer = None;
    let viewers_server = match &cfg.viewers {
        Some(v) => {
            let server = viewers::start(v.clone(), rtc.sibling()?).await?;
            println!("{}", server.url);
            first_viewer = Some(server.connected.clone());
            Some(server)
        }
        None => None,
    };
    let (signaling, mut sig_rx) = if cfg.mesh {
        connect_signaling(&cfg.peer).await?
    } else {
        // Publishing only to WHIP or WHEP viewers: a room of our own, that
        // nobody joins.
        signaling::connect("memory:", Default::default()).await?
    };
    // After signaling is up, so no exit path skips ending the session.
    let mut whip = match &cfg.whip {
        Some(w) => Some(Whip::start(w.clone(), rtc.sibling()?)?),
        None => None,
    };
    if let (Some(c), Some(_)) = (&capture, &whip) {
        // The SFU is a receiver that is there from the start.
        c.play();
    }
    let (rtc_tx, mut rtc_rx) = mpsc::channel(RTC_EVENTS);
    let (ctl_tx, ctl_rx) = mpsc::channel(RTC_EVENTS);
    let mut status = Status::new(crate::progress::wanted(cfg.peer.quiet), &cfg.peer.room);
    let data_bytes = status.data_bytes.clone();
    if cfg.peer.binary {
        status.input_total = stdio::stdin_size();
    }
    let input_read = status.input_read.clone();
    // With media, the session lasts until Ctrl-C; stdin feeds data channels
    // only when they are on.
    let mut fanout = if cfg.data {
        let input = stdio::spawn_reader(tokio::io::stdin(), cfg.peer.binary, input_read);
        tokio::spawn(fanout::run(
            fanout::FanoutConfig {
                queue_size: cfg.queue_size,
                to: cfg.to.clone(),
                binary: cfg.peer.binary,
                keep_open: cfg.keep_open || cfg.media.is_some() || cfg.ingest.is_some(),
                sent: data_bytes.clone(),
            },
            input,
            ctl_rx,
        ))
    } else {
        drop(ctl_rx);
        tokio::spawn(std::future::pending::<()>())
    };
    let machine = machine::Sender::new(machine::SenderConfig {
        id: id.clone(),
        room: cfg.peer.room.clone(),
        state: cfg.state.clone(),
        data: cfg.data,
        verify: cfg.verify.clone(),
        max_receivers: cfg.max_receivers,
        connection_timeout: cfg.peer.connection_timeout,
    });
    let mut runner = Runner::new(Machine::Sender(machine), signaling, rtc, rtc_tx, &reporter);
    runner.fanout = cfg.data.then_some(ctl_tx);
    runner.capture = capture;
    runner.video = video;
    runner.audio_bps = match (&cfg.media, &cfg.ingest) {
        (Some(m), _) if m.audio.is_some() => f64::from(m.audio_kbps) * 1000.0,
        (None, Some(i)) => i.audio_bps,
        _ => 0.0,
    };
    runner.status = status;
    if cfg.mesh {
        reporter.started("sender", &id, &cfg.peer.room);
    } else {
        // Publishing only to WHIP or WHEP viewers: the in-process room is
        // not one anybody can join, and naming it would say otherwise.
        let why = match (&cfg.whip, &cfg.viewers) {
            (Some(_), Some(_)) => "publishing over WHIP, serving WHEP viewers",
            (Some(_), None) => "publishing over WHIP",
            _ => "serving WHEP viewers",
        };
        reporter.started_alone("sender", &id, &format!("{why} (--room serves a room too)"));
    }
    let start = match &mut runner.machine {
        Machine::Sender(m) => m.start(),
        Machine::Receiver(_) => unreachable!("built as a sender above"),
    };
    runner.exec(start).await;

    let mut hangup = hangup_signal();
    let mut tick = tokio::time::interval(TICK);
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            Some(ev) = sig_rx.recv() => runner.on_signal(ev).await,
            Some((peer, ev)) = rtc_rx.recv() => runner.on_rtc(peer, ev).await,
            _ = tick.tick() => {
                if let Err(e) = runner.tick().await {
                    runner.stop().await;
                    stop_whip(whip).await;
                    return Err(e);
                }
                if !cfg.keep_open {
                    if let Some(e) = runner.relay_gone(cfg.peer.connection_timeout, &cfg.peer.signal) {
                        runner.stop().await;
                        stop_whip(whip).await;
                        return Err(e);
                    }
                }
            }
            () = notified(&first_viewer) => {
                // A file waiting for its first receiver plays now.
                if runner.capture.as_ref().is_some_and(|c| c.play()) {
                    tracing::debug!("the first WHEP viewer connected: the file plays");
                }
                first_viewer = None;
            }
            e = whip_ended(&mut whip) => {
                whip = None;
                if !cfg.mesh && cfg.viewers.is_none() {
                    runner.stop().await;
                    return Err(e);
                }
                // The room's receivers and WHEP viewers do not depend on
                // the SFU.
                let whom = if cfg.mesh { "the room's receivers" } else { "WHEP viewers" };
                tracing::error!("{e:#}; still serving {whom}");
            }
            () = media_ended(&mut media_end) => {
                match cfg.media.as_ref().and_then(|m| m.file.as_ref()) {
                    Some(path) => tracing::info!("--file {} ended: leaving the room", path.display()),
                    None => tracing::warn!("the capture ended: leaving the room"),
                }
                break;
            }
            _ = &mut fanout => {
                // Every receiver's stream has ended after its last message:
                // nothing is left in flight, so the session can close.
                tracing::debug!("everything read from stdin was delivered");
                break;
            }
            Some(()) = recv_hangup(&mut hangup) => {
                if let Some(path) = &cfg.state_file {
                    match settings::read_state_file(path) {
                        Ok(state) => {
                            tracing::info!("state reloaded from {}: {}", path.display(), serde_json::Value::Object(state.clone()));
                            if let Machine::Sender(m) = &mut runner.machine {
                                let actions = m.sync(state, false);
                                runner.exec(actions).await;
                            }
                        }
                        Err(e) => tracing::warn!("{e:#}; keeping the current state"),
                    }
                } else {
                    tracing::warn!("SIGHUP ignored: no --state-file to reload");
                }
            }
            () = &mut shutdown => break,
        }
    }
    runner.stop().await;
    stop_whip(whip).await;
    if let Some(v) = viewers_server {
        v.close().await;
    }
    if let Some(c) = &runner.capture {
        use std::sync::atomic::Ordering::Relaxed;
        tracing::debug!(
            "sent {} RTP packets ({} bytes), {} dropped, {} key frames requested",
            c.stats.packets.load(Relaxed),
            c.stats.bytes.load(Relaxed),
            c.stats.dropped.load(Relaxed),
            c.stats.keyframes_requested.load(Relaxed)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves when the sender's media has ended and its last packets are
/// written (a file's end); never without one.
async fn media_ended(end: &mut Option<av::MediaEnd>) {
    match end {
        Some(e) => e.ended().await,
        None => std::future::pending().await,
    }
}

/// Resolves when `notify` is told; never without one.
async fn notified(notify: &Option<std::sync::Arc<tokio::sync::Notify>>) {
    match notify {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Resolves when a WHIP publication ends by itself (a failure); never
/// without one.
async fn whip_ended(whip: &mut Option<Whip>) -> anyhow::Error {
    match whip {
        Some(w) => w.ended().await,
        None => std::future::pending().await,
    }
}

/// Ends a WHIP publication, if there is one: its session is deleted.
async fn stop_whip(whip: Option<Whip>) {
    if let Some(w) = whip {
        if let Err(e) = w.stop().await {
            tracing::warn!("{e:#}");
        }
    }
}

/// `p2p receive`: answers every sender in the room and writes what arrives
/// to stdout.
pub async fn run_receiver(cfg: ReceiveConfig) -> anyhow::Result<ExitCode> {
    if let Some(whep) = cfg.whep.clone() {
        return super::whep::run(cfg, whep).await;
    }
    let id = new_id();
    let reporter = Reporter::new("sender", cfg.peer.events, cfg.peer.events_file.as_deref())?;
    let rtc = Rtc::new(
        &cfg.peer.ice_servers,
        cfg.peer.signal_opts.ca_file.as_deref(),
        true,
    )?;
    let (signaling, mut sig_rx) = connect_signaling(&cfg.peer).await?;
    let (rtc_tx, mut rtc_rx) = mpsc::channel(RTC_EVENTS);
    let (out_tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
    let data_to_stdout = !cfg
        .record
        .as_deref()
        .is_some_and(crate::media::record::is_stdout);
    let mut writer = tokio::spawn(write_output(out_rx, reporter.clone(), data_to_stdout));
    let machine = machine::Receiver::new(machine::ReceiverConfig {
        id: id.clone(),
        room: cfg.peer.room.clone(),
        credentials: cfg.credentials.clone(),
        plain_credentials: cfg.plain_credentials,
        connection_timeout: cfg.peer.connection_timeout,
        ping_interval: cfg.ping_interval,
        ping_attempts: cfg.ping_attempts,
    });
    let mut runner = Runner::new(
        Machine::Receiver(machine),
        signaling,
        rtc,
        rtc_tx,
        &reporter,
    );
    runner.output = Some(out_tx);
    let record = RecordConfig {
        path: cfg.record.clone(),
        display: cfg.display,
        round_trip: std::time::Duration::ZERO,
    };
    if record.path.is_some() || record.display {
        let record = record.clone();
        tokio::task::spawn_blocking(move || crate::media::record::Recorder::warm_up(&record));
    }
    runner.recordings = Some(av::Recordings::new(record, reporter.clone()));
    runner.status = Status::new(crate::progress::wanted(cfg.peer.quiet), &cfg.peer.room);
    reporter.started("receiver", &id, &cfg.peer.room);
    let start = match &mut runner.machine {
        Machine::Receiver(m) => m.start(Instant::now()),
        Machine::Sender(_) => unreachable!("built as a receiver above"),
    };
    runner.exec(start).await;

    let mut tick = tokio::time::interval(TICK);
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    let mut write_result = None;
    loop {
        tokio::select! {
            Some(ev) = sig_rx.recv() => runner.on_signal(ev).await,
            Some((peer, ev)) = rtc_rx.recv() => runner.on_rtc(peer, ev).await,
            _ = tick.tick() => {
                if let Err(e) = runner.tick().await {
                    runner.stop().await;
                    return Err(e);
                }
                if let Some(e) = runner.relay_gone(cfg.peer.connection_timeout, &cfg.peer.signal) {
                    runner.stop().await;
                    return Err(e);
                }
            }
            r = &mut writer => {
                // stdout closed (e.g. `| head`): a normal end.
                write_result = Some(r);
                break;
            }
            () = &mut shutdown => break,
        }
        if cfg.once && runner.ever_connected && runner.peers.is_empty() {
            tracing::debug!("every sender has left (--once)");
            break;
        }
        // A stream on stdout ends with its sender, or its reader.
        if runner
            .recordings
            .as_ref()
            .is_some_and(|r| r.stdout_ended().is_some())
        {
            break;
        }
    }
    // Senders that left: their readers end with their channels, after their
    // last message. Interrupted: what is still open is not waited for.
    let interrupted = !runner.peers.is_empty();
    if interrupted {
        for (_, r) in runner.readers.drain() {
            r.task.abort();
        }
    }
    runner.stop().await;
    if !interrupted {
        for task in std::mem::take(&mut runner.closing) {
            let _ = tokio::time::timeout(LAST_DATA_WAIT, task).await;
        }
    }
    if let Some(r) = &mut runner.recordings {
        r.finish_all().await;
    }
    runner.output = None;
    let result = match write_result {
        Some(r) => r,
        None => match tokio::time::timeout(LAST_DATA_WAIT, &mut writer).await {
            Ok(r) => r,
            Err(_) => {
                writer.abort();
                Ok(Ok(()))
            }
        },
    };
    if let Some(Err(e)) = runner.recordings.as_ref().and_then(|r| r.stdout_ended()) {
        return Err(anyhow::anyhow!("the recording to stdout failed: {e}"));
    }
    match result.context("stdout writer failed")? {
        // With --record -, data was never written: nothing is incomplete.
        Ok(()) if !runner.incomplete.is_empty() && data_to_stdout => {
            let mut lost: Vec<&str> = runner.incomplete.iter().map(|p| rtc::short(p)).collect();
            lost.sort_unstable();
            Err(anyhow::anyhow!(
                "the output is incomplete: the connection to sender {} was lost before its data ended",
                lost.join(", ")
            ))
        }
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    None
}

async fn recv_hangup(h: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(s) = h {
        return s.recv().await;
    }
    let _ = h;
    std::future::pending().await
}
