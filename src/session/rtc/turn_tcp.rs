//! TURN over TCP and TLS, for an engine that speaks TURN over UDP only.
//!
//! webrtc-rs 0.21 gathers relay candidates through `turn:` URLs over UDP and
//! skips `?transport=tcp` and `turns:` ones, yet those are what gets through
//! a firewall that blocks UDP. So p2p puts a bridge on loopback in front of
//! each such server: webrtc-rs talks TURN over UDP to the bridge, and the
//! bridge carries every datagram over its own TCP (or TLS) connection to
//! the server, one connection per client socket (RFC 8656 §5: over a
//! stream, a STUN message is delimited by its length field, ChannelData by
//! its length padded to 4 bytes). The server sees an ordinary TURN client
//! over TCP; the relayed address it allocates is the same UDP address as
//! ever, so nothing changes for the peer at the other end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// How long a connection to the TURN server may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client that sent nothing for this long is gone: a TURN client
/// refreshes its allocation and permissions every few minutes.
const IDLE: Duration = Duration::from_secs(15 * 60);

/// Datagrams queued per client while its connection opens or is slow;
/// past it they are dropped, as UDP would.
const QUEUE: usize = 512;

/// How a bridge reaches its server.
#[derive(Clone)]
pub enum Transport {
    Tcp,
    Tls {
        name: rustls_pki_types::ServerName<'static>,
        config: Arc<rustls::ClientConfig>,
    },
}

/// A TURN server that needs TCP or TLS, as parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamServer {
    /// `host:port`, to connect to.
    pub addr: String,
    pub host: String,
    pub tls: bool,
}

/// `turn:HOST:PORT?transport=tcp` or `turns:HOST[:PORT]…`: a server the
/// engine cannot reach by itself. `None` for UDP TURN and STUN.
pub fn stream_server(url: &str) -> Option<StreamServer> {
    let (scheme, rest) = url.split_once(':')?;
    let (hostport, query) = match rest.split_once('?') {
        Some((h, q)) => (h, q),
        None => (rest, ""),
    };
    let tcp = query
        .split('&')
        .any(|kv| kv.eq_ignore_ascii_case("transport=tcp"));
    let tls = match scheme {
        "turns" => true,
        "turn" if tcp => false,
        _ => return None,
    };
    let default_port = if tls { 5349 } else { 3478 };
    // [v6]:port, host:port, or a bare host.
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        (h.to_owned(), port.unwrap_or(default_port))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (hostport.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return None;
    }
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Some(StreamServer { addr, host, tls })
}

/// A loopback UDP port that carries TURN to one server over TCP or TLS.
/// Stops when dropped.
pub struct TurnBridge {
    local: SocketAddr,
    tls: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TurnBridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TurnBridge {
    /// Binds the loopback port; connections open as clients first send.
    pub fn start(server: &StreamServer, transport: Transport) -> std::io::Result<Self> {
        let std = std::net::UdpSocket::bind("127.0.0.1:0")?;
        std.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std)?);
        let local = socket.local_addr()?;
        let tls = matches!(transport, Transport::Tls { .. });
        let task = tokio::spawn(accept(socket, server.addr.clone(), transport));
        Ok(Self { local, tls, task })
    }

    /// Where the engine sends its TURN datagrams.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The TURN URL the engine is given in place of the server's.
    pub fn engine_url(&self) -> String {
        format!("turn:{}?transport=udp", self.local)
    }

    /// How the bridge reaches the server: `tcp` or `tls`.
    pub fn transport_name(&self) -> &'static str {
        if self.tls {
            "tls"
        } else {
            "tcp"
        }
    }
}

/// Hands each client's datagrams to its own connection.
async fn accept(socket: Arc<UdpSocket>, server: String, transport: Transport) {
    let mut clients: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from an earlier send surface here; go on.
                tracing::trace!("TURN bridge: {e}");
                continue;
            }
        };
        let datagram = Bytes::copy_from_slice(&buf[..n]);
        if let Some(tx) = clients.get(&from) {
            match tx.try_send(datagram) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => continue,
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    // Its connection ended: a new one for what comes now.
                    clients.remove(&from);
                    open_client(&mut clients, &socket, &server, &transport, from, d);
                }
            }
        } else {
            clients.retain(|_, tx| !tx.is_closed());
            open_client(&mut clients, &socket, &server, &transport, from, datagram);
        }
    }
}

/// Opens a connection for a client not seen before, `first` its first
/// datagram.
fn open_client(
    clients: &mut HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    socket: &Arc<UdpSocket>,
    server: &str,
    transport: &Transport,
    from: SocketAddr,
    first: Bytes,
) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let _ = tx.try_send(first);
    clients.insert(from, tx);
    tokio::spawn(client(
        socket.clone(),
        from,
        server.to_owned(),
        transport.clone(),
        rx,
    ));
}

async fn client(
    socket: Arc<UdpSocket>,
    from: SocketAddr,
    server: String,
    transport: Transport,
    rx: mpsc::Receiver<Bytes>,
) {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&server)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            tracing::warn!("cannot reach the TURN server at {server} over TCP: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!("the TURN server at {server} did not accept a TCP connection in 10 s");
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let result = match transport {
        Transport::Tcp => carry(tcp, &socket, from, rx).await,
        Transport::Tls { name, config } => {
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await;
            match tls {
                Ok(tls) => carry(tls, &socket, from, rx).await,
                Err(e) => {
                    tracing::warn!(
                        "TLS with the TURN server at {server} failed: {e} (a self-signed certificate needs --ca-file)"
                    );
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!("TURN connection to {server} ended: {e}");
    }
}

/// Datagrams up the stream, frames of the stream back as datagrams.
async fn carry<S: AsyncRead + AsyncWrite>(
    stream: S,
    socket: &UdpSocket,
    to: SocketAddr,
    mut rx: mpsc::Receiver<Bytes>,
) -> std::io::Result<()> {
    let (mut r, mut w) = tokio::io::split(stream);
    let up = async {
        while let Ok(Some(datagram)) = tokio::time::timeout(IDLE, rx.recv()).await {
            w.write_all(&datagram).await?;
            let pad = stream_padding(&datagram);
            if pad > 0 {
                w.write_all(&[0u8; 3][..pad]).await?;
            }
        }
        let _ = w.shutdown().await;
        Ok::<_, std::io::Error>(())
    };
    let down = async {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            while let Some(len) = frame_len(&buf)? {
                if buf.len() < len {
                    break;
                }
                let frame = buf.split_to(len);
                socket.send_to(&frame, to).await?;
            }
            if r.read_buf(&mut buf).await? == 0 {
                return Ok::<_, std::io::Error>(());
            }
            // A frame longer than any TURN message is garbage.
            if buf.remaining() > 128 * 1024 {
                return Err(std::io::Error::other(
                    "oversized frame from the TURN server",
                ));
            }
        }
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

/// The length of the frame at the start of `buf`: a STUN message (first two
/// bits 00: 20-byte header plus its length) or ChannelData (01: 4-byte
/// header plus its length, padded to 4 on a stream). `None` while fewer
/// than 4 bytes are there; an error for anything else.
pub fn frame_len(buf: &[u8]) -> std::io::Result<Option<usize>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    match buf[0] >> 6 {
        0b00 => Ok(Some(20 + len)),
        0b01 => Ok(Some(4 + len.div_ceil(4) * 4)),
        _ => Err(std::io::Error::other(
            "the TURN server sent something that is neither STUN nor ChannelData",
        )),
    }
}

/// Zero bytes to add after `datagram` on a stream: ChannelData must end on
/// a 4-byte boundary there (STUN messages always do).
fn stream_padding(datagram: &[u8]) -> usize {
    let channel_data = datagram.first().is_some_and(|b| b >> 6 == 0b01);
    if channel_data {
        (4 - datagram.len() % 4) % 4
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tcp_and_tls_servers_need_a_bridge() {
        assert_eq!(stream_server("turn:10.0.0.1:3478"), None);
        assert_eq!(stream_server("turn:10.0.0.1:3478?transport=udp"), None);
        assert_eq!(stream_server("stun:10.0.0.1:3478"), None);
        assert_eq!(
            stream_server("turn:10.0.0.1:3478?transport=tcp"),
            Some(StreamServer {
                addr: "10.0.0.1:3478".into(),
                host: "10.0.0.1".into(),
                tls: false
            })
        );
        assert_eq!(
            stream_server("turns:turn.example.org"),
            Some(StreamServer {
                addr: "turn.example.org:5349".into(),
                host: "turn.example.org".into(),
                tls: true
            })
        );
        assert_eq!(
            stream_server("turns:[::1]:443?transport=tcp"),
            Some(StreamServer {
                addr: "[::1]:443".into(),
                host: "::1".into(),
                tls: true
            })
        );
        assert_eq!(stream_server("turn::3478?transport=tcp"), None);
    }

    #[test]
    fn frames_are_delimited_as_rfc_8656_says() {
        // Not enough to tell.
        assert_eq!(frame_len(&[0, 1, 0]).unwrap(), None);
        // A STUN Binding request with 8 bytes of attributes.
        assert_eq!(frame_len(&[0x00, 0x01, 0x00, 0x08]).unwrap(), Some(28));
        // ChannelData 0x4001 of 5 bytes: padded to 8 on a stream.
        assert_eq!(frame_len(&[0x40, 0x01, 0x00, 0x05]).unwrap(), Some(12));
        assert_eq!(frame_len(&[0x40, 0x01, 0x00, 0x08]).unwrap(), Some(12));
        // Neither: an RTP packet (first bits 10), or anything from 11.
        assert!(frame_len(&[0x80, 0x60, 0x00, 0x10]).is_err());
        assert!(frame_len(&[0xc0, 0x00, 0x00, 0x00]).is_err());
    }

    #[test]
    fn channel_data_is_padded_and_stun_is_not() {
        assert_eq!(stream_padding(&[0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]), 3);
        assert_eq!(stream_padding(&[0x40, 0x01, 0x00, 0x04, 1, 2, 3, 4]), 0);
        assert_eq!(stream_padding(&[0x00, 0x01, 0x00, 0x00]), 0);
    }
}
