//! The receiver's data path: a task per sender that reads its data channel,
//! and the writer that puts what they read on stdout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::report::Reporter;
use super::rtc::{short, Channel, Payload};
use super::stdio;

/// A receiver's task that moves one sender's messages to stdout.
pub(super) struct Reader {
    pub(super) task: JoinHandle<()>,
    /// Cancelled when the sender left: the task then ends once the channel
    /// has been quiet for `QUIET` (see `read_channel`).
    pub(super) leaving: tokio_util::sync::CancellationToken,
}

/// A leaving sender's channel is read out once nothing came for this long.
/// Long, because what webrtc-rs 0.21 held back while this receiver was
/// behind (it parks the SCTP stream) moves again only at the connection's
/// next timer, the 2 s ICE keep-alive: measured, 200 ms lost the tail of
/// 1,000 lines in 4 runs of 10, 2.5 s in none of 8 (bench/NOTES.md).
const QUIET: Duration = Duration::from_millis(2500);

/// Moves `ch`'s messages to `out` until the channel ends, or, once the
/// sender said it is leaving (`leaving`), until nothing came for `QUIET`.
/// A sender leaves only when everything it sent was acknowledged, so what
/// is still to come is already in this process; the sender keeps the
/// connection open until we close it (`Runner::leave`).
pub(super) async fn read_channel(
    ch: Channel,
    out: mpsc::Sender<(String, Payload)>,
    counter: Arc<AtomicU64>,
    leaving: tokio_util::sync::CancellationToken,
) {
    let peer = ch.peer().to_owned();
    loop {
        let next = if leaving.is_cancelled() {
            match tokio::time::timeout(QUIET, ch.recv()).await {
                Ok(p) => p,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                p = ch.recv() => p,
                () = leaving.cancelled() => continue,
            }
        };
        let Some(p) = next else { break };
        counter.fetch_add(p.len() as u64, Ordering::Relaxed);
        if out.send((peer.clone(), p)).await.is_err() {
            break;
        }
    }
    tracing::debug!(peer = %short(&peer), "data channel ended");
}

pub(super) async fn write_output(
    mut rx: mpsc::Receiver<(String, Payload)>,
    reporter: Reporter,
) -> std::io::Result<()> {
    stdio::widen_stdout_pipe();
    let mut out = tokio::io::BufWriter::with_capacity(stdio::OUT_BUFFER, tokio::io::stdout());
    while let Some((peer, p)) = rx.recv().await {
        reporter.message(&peer, &p);
        stdio::write_payload(&mut out, &p).await?;
        // Flush when nothing else is waiting: lines appear at once, bulk
        // data still goes out in large writes.
        if rx.is_empty() {
            out.flush().await?;
        }
    }
    out.flush().await
}
