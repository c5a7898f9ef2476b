//! stdin → messages, messages → stdout.
//!
//! Text mode: one message per line (without its newline). Binary mode: the
//! bytes as they come, in chunks no larger than a data channel takes.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::sync::mpsc;

use crate::session::rtc::{Payload, CHUNK};

/// Messages read ahead of the sender. Small: the point is to let stdin wait
/// while the channels are busy.
const READ_AHEAD: usize = 16;

/// Reads `input` into messages until EOF, counting the bytes read in
/// `read`. The channel closes at EOF.
pub fn spawn_reader<R>(input: R, binary: bool, read: Arc<AtomicU64>) -> mpsc::Receiver<Payload>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::spawn(async move {
        let input = Counted { inner: input, read };
        let result = if binary {
            read_chunks(input, &tx).await
        } else {
            read_lines(input, &tx).await
        };
        if let Err(e) = result {
            tracing::error!("reading stdin failed: {e}");
        }
    });
    rx
}

/// stdin's size when it is a regular file (`p2p send < file`), for a
/// progress line with a total; `None` for a pipe or a terminal.
pub fn stdin_size() -> Option<u64> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    meta.is_file().then_some(meta.len())
}

/// An input that counts what was read from it.
struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

async fn read_chunks<R: AsyncRead + Unpin>(
    mut input: R,
    tx: &mpsc::Sender<Payload>,
) -> std::io::Result<()> {
    loop {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let n = input.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if tx.send(Payload::Binary(buf.freeze())).await.is_err() {
            return Ok(());
        }
    }
}

async fn read_lines<R: AsyncRead + Unpin>(
    input: R,
    tx: &mpsc::Sender<Payload>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        for part in split_text(text) {
            if tx.send(Payload::Text(part)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// A line longer than one message is sent as several, split on character
/// boundaries.
fn split_text(text: String) -> Vec<String> {
    if text.len() <= CHUNK {
        return vec![text];
    }
    tracing::warn!(
        "a line of {} bytes is over the {} byte message limit: sent in pieces (use --binary for raw data)",
        text.len(),
        CHUNK
    );
    let mut parts = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let mut end = rest.len().min(CHUNK);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        parts.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    parts
}

/// Writes one message to `out`: text with a newline, bytes as they are.
/// What the receiver gathers before writing to stdout while messages keep
/// coming (it flushes whenever none is waiting, so lines are not held).
pub const OUT_BUFFER: usize = 1024 * 1024;

/// Pipe size asked for when stdout is a pipe. Linux's default, 64 KiB, is
/// one `--binary` message: every message was a write that waited for the
/// reader (45 MB/s into `wc -c`). 1 MiB is what an unprivileged process
/// may ask for by default (`/proc/sys/fs/pipe-max-size`).
#[cfg(target_os = "linux")]
const PIPE_SIZE: libc::c_int = 1024 * 1024;

/// Widens stdout's pipe, if it is one; anything else is left alone.
pub fn widen_stdout_pipe() {
    #[cfg(target_os = "linux")]
    // SAFETY: fcntl on fd 1 with F_SETPIPE_SZ takes an int and touches no
    // memory of ours; on a non-pipe it fails with EBADF/EINVAL, ignored.
    unsafe {
        libc::fcntl(1, libc::F_SETPIPE_SZ, PIPE_SIZE);
    }
}

pub async fn write_payload<W: AsyncWrite + Unpin>(
    out: &mut W,
    payload: &Payload,
) -> std::io::Result<()> {
    match payload {
        Payload::Text(t) => {
            out.write_all(t.as_bytes()).await?;
            out.write_all(b"\n").await
        }
        Payload::Binary(b) => out.write_all(b).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_become_messages() {
        let input: &[u8] = b"one\r\ntwo\n\nthree";
        let mut rx = spawn_reader(input, false, Default::default());
        let mut got = Vec::new();
        while let Some(p) = rx.recv().await {
            got.push(p);
        }
        let text = |s: &str| Payload::Text(s.into());
        assert_eq!(got, vec![text("one"), text("two"), text(""), text("three")]);
    }

    #[tokio::test]
    async fn bytes_arrive_whole_in_bounded_chunks() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let read = Arc::new(AtomicU64::new(0));
        let mut rx = spawn_reader(std::io::Cursor::new(data.clone()), true, read.clone());
        let mut got = Vec::new();
        while let Some(Payload::Binary(b)) = rx.recv().await {
            assert!(b.len() <= CHUNK);
            got.extend_from_slice(&b);
        }
        assert_eq!(got, data);
        assert_eq!(
            read.load(Ordering::Relaxed),
            data.len() as u64,
            "bytes counted"
        );
    }

    #[test]
    fn long_lines_split_on_char_boundaries() {
        let line = "é".repeat(CHUNK); // 2 bytes each
        let parts = split_text(line.clone());
        assert!(parts.iter().all(|p| p.len() <= CHUNK));
        assert_eq!(parts.concat(), line);
    }
}
