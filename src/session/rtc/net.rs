//! webrtc-rs's tokio runtime, with UDP socket buffers sized for bursts
//! and ICE checks to strangers paced ([`super::guard`]).
//!
//! webrtc 0.21 sends in GSO batches. With the kernel's default receive
//! buffer (~208 KiB) a whole batch of SCTP packets is dropped at once
//! (`RcvbufErrors` rises), and the data channel stalls on retransmission
//! timers: 20–25 MB/s. With 1 MiB it moves 130–145 MB/s here, and a few
//! MiB also absorb a key frame's burst to many receivers. The kernel caps
//! what an unprivileged process gets at `net.core.rmem_max`/`wmem_max`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

use super::guard;

/// Asked for on every UDP socket; the kernel grants up to its maximum.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// The tokio runtime, but every UDP socket gets large buffers first.
#[derive(Debug)]
pub struct Net(TokioRuntime);

impl Net {
    pub fn runtime() -> Arc<dyn Runtime> {
        Arc::new(Self(TokioRuntime))
    }
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Runtime for Net {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.0.spawn(future)
    }

    fn spawn_reactor(
        &self,
        pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.0.spawn_reactor(pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let sock = socket2::SockRef::from(&socket);
        // Best effort: a smaller buffer only costs throughput.
        if let Err(e) = sock.set_recv_buffer_size(SOCKET_BUFFER) {
            tracing::debug!("UDP receive buffer: {e}");
        }
        if let Err(e) = sock.set_send_buffer_size(SOCKET_BUFFER) {
            tracing::debug!("UDP send buffer: {e}");
        }
        let loopback = socket.local_addr()?.ip().is_loopback();
        let inner = self.0.wrap_udp_socket(socket)?;
        Ok(Arc::new(Guarded { inner, loopback }))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.0.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Boxed<'a, io::Result<Arc<dyn AsyncTcpStream>>> {
        // ICE-TCP's active side connects to whatever a peer names.
        if !guard::may_check(remote_addr) {
            return Box::pin(std::future::ready(Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "ICE check budget spent",
            ))));
        }
        self.0.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(&'a self, host: &'a str) -> Boxed<'a, io::Result<Vec<SocketAddr>>> {
        self.0.resolve_host(host)
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.0.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.0.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.0.block_on(future)
    }

    fn now(&self) -> std::time::Instant {
        self.0.now()
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.0.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio (p2p socket buffers)"
    }
}

/// A UDP socket whose binding requests to addresses that never sent us
/// STUN are paced by [`guard`]; one that finds the budget empty is dropped
/// as a lossy network would (ICE sends it again later).
#[derive(Debug)]
struct Guarded {
    inner: Arc<dyn AsyncUdpSocket>,
    /// Bound to a loopback address: it reaches only this machine.
    loopback: bool,
}

impl AsyncUdpSocket for Guarded {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        if guard::is_binding_request(transmit.contents) && !guard::may_check(transmit.destination) {
            return Poll::Ready(Ok(transmit.contents.len()));
        }
        // ICE pairs our loopback candidate with the peer's every address;
        // the kernel refuses those sends (EINVAL), and webrtc-rs logs each
        // refusal as an error: 100 lines a second while a restart looks
        // for a path. Such a packet can never arrive; drop it quietly.
        if self.loopback && !transmit.destination.ip().is_loopback() {
            return Poll::Ready(Ok(transmit.contents.len()));
        }
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let polled = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(n)) = &polled {
            for (buf, m) in bufs.iter().zip(meta.iter()).take(*n) {
                if guard::is_stun(&buf[..m.len.min(buf.len())]) {
                    guard::budget().heard(m.addr);
                }
            }
        }
        polled
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}
