//! webrtc-rs's tokio runtime, with UDP socket buffers sized for bursts.
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
use std::time::Duration;

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

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
        self.0.wrap_udp_socket(socket)
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
