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

/// How long after start a sender whose stdin already ended waits at most
/// for the room's receivers to answer its invoke, when none answered.
const DISCOVERY: Duration = Duration::from_secs(1);

/// Once one receiver answered, the others in the room answer within a few
/// times that delay: they got the same invoke through the same relay. Not
/// less than `DISCOVERY_MIN`, for a relay on this machine whose first
/// answer came in a millisecond.
const DISCOVERY_ANSWERS: u32 = 4;
const DISCOVERY_MIN: Duration = Duration::from_millis(100);

/// Whether the receivers in the room had their chance to answer our invoke,
/// `elapsed` after start, given when the first answer came (if one did).
fn discovered(elapsed: Duration, first_answer: Option<Duration>) -> bool {
    let window = match first_answer {
        Some(first) => (first * DISCOVERY_ANSWERS).clamp(DISCOVERY_MIN, DISCOVERY),
        None => DISCOVERY,
    };
    elapsed >= window
}

/// At the end, how long a receiver may take nothing before the sender
/// stops waiting for it (a lossy path or a slow reader that still makes
/// progress gets all the time it needs).
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
    /// When the first receiver answered, after start.
    first_answer: Option<Duration>,
    started: Instant,
}

/// Runs until stdin ended and everything read was delivered to the
/// receivers that were there (or forever with `keep_open`).
pub async fn run(
    cfg: FanoutConfig,
    mut input: mpsc::Receiver<Payload>,
    mut ctl: mpsc::Receiver<Ctl>,
) {
    let mut f = Fanout {
        cfg,
        peers: HashMap::new(),
        backlog: VecDeque::new(),
        ever_open: false,
        read_any: false,
        first_answer: None,
        started: Instant::now(),
    };
    let mut input_open = true;
    let mut said_waiting = false;
    loop {
        // Read stdin only once the receivers in the room had a chance to
        // connect: the ones that answer our invoke within the discovery
        // window get everything from the first line. Binary data is a stream,
        // never queued and dropped: it waits for a receiver.
        let found = f.discovered();
        let settled = f.open_count() > 0 && (f.connecting() == 0 || found);
        let can_read = input_open && (settled || (!f.cfg.binary && found));
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
        if !f.discovered() || f.connecting() > 0 {
            continue;
        }
        f.finish().await;
        return;
    }
}

impl Fanout {
    /// Whether the room's receivers had their chance to answer our invoke.
    fn discovered(&self) -> bool {
        discovered(self.started.elapsed(), self.first_answer)
    }

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
                self.first_answer
                    .get_or_insert_with(|| self.started.elapsed());
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

    /// Ends every open channel's stream, all at once, and waits until each
    /// receiver has taken everything (`Channel::finish`): the receiver's
    /// channel then ends after its last message, and the session can close.
    async fn finish(&mut self) {
        let channels: Vec<Channel> = self
            .peers
            .values()
            .filter_map(|p| p.channel.clone())
            .collect();
        let done = futures_util::future::join_all(channels.iter().map(|ch| async move {
            let all = ch.finish(DRAIN_STALL).await;
            (ch, all)
        }))
        .await;
        for (ch, all) in done {
            if !all {
                tracing::warn!(
                    "receiver {}: not everything reached it (it left, or took nothing for {} s)",
                    short(ch.peer()),
                    DRAIN_STALL.as_secs()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_room_had_its_chance_a_few_first_answers_after_start() {
        // A relay on this machine: the floor.
        assert!(!discovered(ms(99), Some(ms(2))));
        assert!(discovered(ms(100), Some(ms(2))));
        // A relay 60 ms away: four times its answer.
        assert!(!discovered(ms(239), Some(ms(60))));
        assert!(discovered(ms(240), Some(ms(60))));
        // Never longer than when nobody answers.
        assert!(discovered(ms(1000), Some(ms(900))));
        assert!(!discovered(ms(999), None));
        assert!(discovered(ms(1000), None));
    }
}
