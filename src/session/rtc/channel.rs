//! Data channels: one task per channel turns webrtc-rs's event stream into
//! "open" once and a bounded queue of messages; sends wait for room.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::{DataChannel, DataChannelEvent};

use super::{short, Events, PeerEvent, RtcEvent};

/// Messages read from the network but not yet taken by the application.
/// When full, the channel's task stops reading; webrtc-rs keeps what it
/// could not deliver and closes the SCTP receive window, so a slow reader
/// slows the sender instead of growing memory.
const INBOX: usize = 64;

/// A data-channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Text(String),
    Binary(Bytes),
}

impl Payload {
    pub fn len(&self) -> usize {
        match self {
            Self::Text(s) => s.len(),
            Self::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An open data channel.
#[derive(Clone)]
pub struct Channel {
    raw: Arc<dyn DataChannel>,
    peer: String,
    inbox: Arc<Mutex<mpsc::Receiver<Payload>>>,
    closed: CancellationToken,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("peer", &self.peer).finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("data channel to {0} is closed")]
pub struct ChannelClosed(pub String);

/// Follows one channel's events: reports it once open, then queues its
/// messages until it closes.
pub(super) fn watch(raw: Arc<dyn DataChannel>, peer: String, events: Events) {
    tokio::spawn(async move {
        let (tx, rx) = mpsc::channel(INBOX);
        let closed = CancellationToken::new();
        let mut rx = Some(rx);
        while let Some(event) = raw.poll().await {
            match event {
                DataChannelEvent::OnOpen => {
                    let Some(rx) = rx.take() else { continue };
                    let channel = Channel {
                        raw: raw.clone(),
                        peer: peer.clone(),
                        inbox: Arc::new(Mutex::new(rx)),
                        closed: closed.clone(),
                    };
                    let _ = events
                        .send((peer.clone(), RtcEvent::Peer(PeerEvent::ChannelOpen)))
                        .await;
                    let _ = events
                        .send((peer.clone(), RtcEvent::Channel(channel)))
                        .await;
                }
                DataChannelEvent::OnMessage(m) => {
                    let payload = if m.is_string {
                        Payload::Text(String::from_utf8_lossy(&m.data).into_owned())
                    } else {
                        Payload::Binary(m.data.freeze())
                    };
                    // A full inbox makes this task wait, and webrtc-rs then
                    // keeps what it cannot deliver in SCTP's receive window:
                    // the sender slows down. An application that is gone is
                    // not waited for, so the connection is never held up.
                    let _ = tx.send(payload).await;
                }
                DataChannelEvent::OnClose => break,
                DataChannelEvent::OnError => {
                    tracing::debug!(peer = %short(&peer), "data channel error");
                }
                _ => {}
            }
        }
        // Dropping `tx` ends the reader after the messages already queued.
        closed.cancel();
    });
}

impl Channel {
    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Sends one message. webrtc-rs waits while the channel holds more than
    /// its send-buffer limit unacknowledged: a slow receiver slows the
    /// reader of stdin instead of growing memory.
    pub async fn send(&self, payload: &Payload) -> Result<(), ChannelClosed> {
        let sent = tokio::select! {
            r = async {
                match payload {
                    Payload::Text(s) => self.raw.send_text(s).await,
                    Payload::Binary(b) => self.raw.send(BytesMut::from(&b[..])).await,
                }
            } => r,
            () = self.closed.cancelled() => return Err(ChannelClosed(self.peer.clone())),
        };
        sent.map_err(|e| {
            tracing::debug!(peer = %short(&self.peer), "data channel write failed: {e}");
            self.closed.cancel();
            ChannelClosed(self.peer.clone())
        })
    }

    /// Waits until everything sent was acknowledged by the peer. Gives up
    /// only when the peer acknowledged nothing for `stall`: a slow or lossy
    /// path that still makes progress gets all the time it needs. Returns
    /// whether it all went.
    pub async fn drain(&self, stall: Duration) -> bool {
        let mut last = usize::MAX;
        let mut since = tokio::time::Instant::now();
        loop {
            let outstanding = match self.raw.outstanding_bytes().await {
                Ok(0) => return true,
                Ok(n) => n,
                Err(_) => return false,
            };
            if outstanding < last {
                last = outstanding;
                since = tokio::time::Instant::now();
            }
            if self.closed.is_cancelled() || since.elapsed() >= stall {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The next message; `None` once the channel is closed and everything
    /// that arrived before was read.
    pub async fn recv(&self) -> Option<Payload> {
        self.inbox.lock().await.recv().await
    }

    /// Ends the stream for the peer: waits until it acknowledged everything
    /// (see `drain`), resets the stream behind the data, and waits until the
    /// peer performed the reset, which it does once its application has
    /// taken every message sent before it (our patched rtc). Gives up when
    /// the peer made no progress for `stall`. Returns whether the peer has
    /// it all.
    pub async fn finish(&self, stall: Duration) -> bool {
        if !self.drain(stall).await {
            return false;
        }
        if self.raw.close().await.is_err() {
            return false;
        }
        tokio::time::timeout(stall, self.closed.cancelled())
            .await
            .is_ok()
    }

    /// Closes the channel (an SCTP stream reset: the peer reads everything
    /// sent before it, then end of stream).
    pub async fn close(&self) {
        if !self.closed.is_cancelled() {
            let _ = self.raw.close().await;
        }
        self.closed.cancel();
    }
}
