//! The receiver's data path: a task per sender that reads its data channel,
//! and the writer that puts what they read on stdout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::report::Reporter;
use super::rtc::{short, Channel, Payload};
use super::stdio;

/// A receiver's task that moves one sender's messages to stdout.
pub(super) struct Reader {
    pub(super) task: JoinHandle<()>,
}

/// Moves `ch`'s messages to `out` until the channel ends. A sender ends
/// its stream by closing its channel once everything is sent; the channel
/// ends here after the last message (our patched rtc delivers the close
/// behind them), so nothing is waited for that cannot come.
pub(super) async fn read_channel(
    ch: Channel,
    out: mpsc::Sender<(String, Payload)>,
    counter: Arc<AtomicU64>,
) {
    let peer = ch.peer().to_owned();
    while let Some(p) = ch.recv().await {
        counter.fetch_add(p.len() as u64, Ordering::Relaxed);
        if out.send((peer.clone(), p)).await.is_err() {
            break;
        }
    }
    tracing::debug!(peer = %short(&peer), "data channel ended");
}

/// Writes each sender's messages to stdout, unless stdout carries a
/// recording (`--record -`, `data_to_stdout` false): then they are only
/// reported (`--events`), and the user is told once that they go nowhere
/// else.
pub(super) async fn write_output(
    mut rx: mpsc::Receiver<(String, Payload)>,
    reporter: Reporter,
    data_to_stdout: bool,
) -> std::io::Result<()> {
    stdio::widen_stdout_pipe();
    if !data_to_stdout {
        let mut told = false;
        while let Some((peer, p)) = rx.recv().await {
            reporter.message(&peer, &p);
            if !told {
                told = true;
                tracing::warn!(
                    "sender {} sends data, which is not written: stdout carries the recording (--record -); --events json shows the messages",
                    short(&peer)
                );
            }
        }
        return Ok(());
    }
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
