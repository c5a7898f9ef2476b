//! The sender's data path: messages from stdin to every receiver's channel.
//!
//! One task owns the per-peer queues, so ordering is simple: a peer's queued
//! messages always go out before anything newer. Messages for a peer whose
//! channel is not open yet wait in its queue (at most `queue_size`, oldest
//! dropped, as in the seed). Once open, a channel that is full makes this
//! task wait, which makes the stdin reader wait: backpressure, not memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::rtc::{short, Channel, Payload};

/// How long after start a sender whose stdin already ended still waits for
/// receivers in the room to answer its invoke: one signaling round trip is
/// milliseconds, a loaded relay or a slow peer a bit more.
const DISCOVERY: Duration = Duration::from_secs(1);

/// At the end, how long a receiver may acknowledge nothing before the
/// sender stops waiting for it (a lossy path that still makes progress
/// gets all the time it needs).
const DRAIN_STALL: Duration = Duration::from_secs(30);

/// What the run loop tells the fan-out about peers.
#[derive(Debug)]
pub enum Ctl {
    /// A peer connection is being set up for this receiver.
    Added(String),
    /// Its data channel is open.
    Open(Channel),
    /// It is gone.
    Gone(String),
}

#[derive(Debug, Clone)]
pub struct FanoutConfig {
    pub queue_size: usize,
    pub to: Option<String>,
    pub binary: bool,
    /// Keep running after stdin ends (the run loop stops us).
    pub keep_open: bool,
    /// Bytes handed to channels, for the status line.
    pub sent: Arc<AtomicU64>,
}

#[derive(Default)]
struct PeerData {
    queue: VecDeque<Payload>,
    channel: Option<Channel>,
    dropped: usize,
}

struct Fanout {
    cfg: FanoutConfig,
    peers: HashMap<String, PeerData>,
    /// Messages sent while no receiver was there at all.
    backlog: VecDeque<Payload>,
    ever_open: bool,
    read_any: bool,
}

/// Runs until stdin ended and everything read was delivered to the
/// receivers that were there (or forever with `keep_open`).
pub async fn run(
    cfg: FanoutConfig,
    mut input: mpsc::Receiver<Payload>,
    mut ctl: mpsc::Receiver<Ctl>,
) {
    let started = Instant::now();
    let mut f = Fanout {
        cfg,
        peers: HashMap::new(),
        backlog: VecDeque::new(),
        ever_open: false,
        read_any: false,
    };
    let mut input_open = true;
    let mut said_waiting = false;
    loop {
        // Read stdin only once the receivers in the room had a chance to
        // connect: the ones that answer our invoke within the discovery
        // window get everything from the first line. Binary data is a stream,
        // never queued and dropped: it waits for a receiver.
        let discovered = started.elapsed() >= DISCOVERY;
        let settled = f.open_count() > 0 && (f.connecting() == 0 || discovered);
        let can_read = input_open && (settled || (!f.cfg.binary && discovered));
        tokio::select! {
            biased;
            c = ctl.recv() => match c {
                Some(c) => f.control(c).await,
                None => return,
            },
            p = input.recv(), if can_read => match p {
                Some(p) => {
                    f.read_any = true;
                    f.deliver(p).await;
                }
                None => {
                    input_open = false;
                    tracing::debug!("stdin ended");
                }
            },
            () = tokio::time::sleep(Duration::from_millis(50)), if !can_read => {}
        }
        if input_open || f.cfg.keep_open {
            continue;
        }
        if !f.read_any {
            return; // empty input: nothing to deliver
        }
        if !f.ever_open {
            if !said_waiting {
                tracing::info!("stdin ended; waiting for a receiver to deliver what was read");
                said_waiting = true;
            }
            continue;
        }
        if started.elapsed() < DISCOVERY || f.connecting() > 0 {
            continue;
        }
        f.finish().await;
        return;
    }
}

impl Fanout {
    /// Peers whose channel is not open yet.
    fn connecting(&self) -> usize {
        self.peers.values().filter(|p| p.channel.is_none()).count()
    }

    fn open_count(&self) -> usize {
        self.peers.values().filter(|p| p.channel.is_some()).count()
    }

    fn wanted(&self, peer: &str) -> bool {
        self.cfg.to.as_deref().is_none_or(|to| to == peer)
    }

    async fn control(&mut self, c: Ctl) {
        match c {
            Ctl::Added(id) => {
                let mut data = PeerData::default();
                if !self.ever_open && self.wanted(&id) {
                    data.queue = self.backlog.clone();
                }
                self.peers.insert(id, data);
            }
            Ctl::Open(channel) => {
                let id = channel.peer().to_owned();
                let Some(data) = self.peers.get_mut(&id) else {
                    return;
                };
                self.ever_open = true;
                self.backlog.clear();
                if data.dropped > 0 {
                    tracing::warn!(
                        "receiver {}: {} messages dropped before its channel opened (--queue-size {})",
                        short(&id),
                        data.dropped,
                        self.cfg.queue_size
                    );
                }
                while let Some(p) = data.queue.pop_front() {
                    if channel.send(&p).await.is_err() {
                        return;
                    }
                }
                data.channel = Some(channel);
            }
            Ctl::Gone(id) => {
                if let Some(PeerData {
                    channel: Some(ch), ..
                }) = self.peers.remove(&id)
                {
                    ch.close().await;
                }
            }
        }
    }

    async fn deliver(&mut self, p: Payload) {
        let targets: Vec<String> = self
            .peers
            .keys()
            .filter(|id| self.wanted(id))
            .cloned()
            .collect();
        if targets.is_empty() {
            if self.backlog.len() == self.cfg.queue_size {
                self.backlog.pop_front();
            }
            self.backlog.push_back(p);
            return;
        }
        let queue_size = self.cfg.queue_size;
        for id in targets {
            let Some(data) = self.peers.get_mut(&id) else {
                continue;
            };
            match &data.channel {
                Some(ch) => {
                    self.cfg.sent.fetch_add(p.len() as u64, Ordering::Relaxed);
                    if ch.send(&p).await.is_err() {
                        data.channel = None;
                        tracing::debug!(peer = %short(&id), "channel closed while sending");
                    }
                }
                None => {
                    if data.queue.len() == queue_size {
                        data.queue.pop_front();
                        data.dropped += 1;
                    }
                    data.queue.push_back(p.clone());
                }
            }
        }
    }

    /// Waits until every open channel has had everything acknowledged.
    /// The channels stay open: the sender then tells each receiver it is
    /// leaving and waits for it to close the connection once it has read
    /// everything (`Runner::leave`). Closing them here (a stream reset) lost
    /// the last messages a receiver held back while its output was behind:
    /// rtc 0.21 can report the stream closed ahead of them.
    async fn finish(&mut self) {
        let channels: Vec<Channel> = self
            .peers
            .values()
            .filter_map(|p| p.channel.clone())
            .collect();
        for ch in &channels {
            if !ch.drain(DRAIN_STALL).await {
                tracing::warn!(
                    "receiver {}: not everything was acknowledged before leaving",
                    short(ch.peer())
                );
            }
        }
    }
}
