//! The relay's door: who may hold a connection, and for how long without a
//! request. A stranger who opens TCP connections and says nothing, or says
//! it slowly, used to hold them for ever: 1,100 silent sockets against a
//! relay limited to 1,024 open files locked every client out.
//!
//! - [`PerIp`] counts connections by address and turns away those past the
//!   cap at once (a pure [`Counts`] decides, tested without sockets);
//! - hyper's header-read timeout and the TLS handshake timeout, set by the
//!   server, close connections that have not sent a whole request in time.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Connections held by address, capped. Pure.
#[derive(Debug, Default)]
pub struct Counts {
    max: usize,
    held: HashMap<IpAddr, usize>,
    refused: u64,
}

impl Counts {
    /// `max` connections per address; 0 for no cap.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// Takes a place for `ip`, or says no.
    pub fn take(&mut self, ip: IpAddr) -> bool {
        let n = self.held.entry(ip).or_default();
        if self.max != 0 && *n >= self.max {
            self.refused += 1;
            return false;
        }
        *n += 1;
        true
    }

    /// Gives back a place `ip` held.
    pub fn give(&mut self, ip: IpAddr) {
        if let Some(n) = self.held.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&ip);
            }
        }
    }

    /// Connections turned away so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// An acceptor that holds one of its address's places for each connection
/// it lets through, and turns away the rest before `inner` (TLS) sees them.
#[derive(Clone)]
pub struct PerIp<A> {
    inner: A,
    counts: Arc<Mutex<Counts>>,
}

impl<A> PerIp<A> {
    pub fn new(inner: A, max: usize) -> Self {
        Self {
            inner,
            counts: Arc::new(Mutex::new(Counts::new(max))),
        }
    }
}

fn lock(counts: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(|e| e.into_inner())
}

type Accepted<T, S> = Pin<Box<dyn Future<Output = io::Result<(T, S)>> + Send>>;

impl<A, S> Accept<TcpStream, S> for PerIp<A>
where
    A: Accept<TcpStream, S>,
    A::Future: Send + 'static,
    A::Stream: Unpin + Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Held<A::Stream>;
    type Service = A::Service;
    type Future = Accepted<Self::Stream, Self::Service>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let ip = match stream.peer_addr() {
            Ok(a) => a.ip(),
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let admitted = {
            let mut c = lock(&self.counts);
            let ok = c.take(ip);
            if !ok && c.refused() % 1000 == 1 {
                tracing::warn!(
                    %ip,
                    "too many connections from one address (--max-per-ip {}): turning \
                     the rest away ({} so far)",
                    c.max,
                    c.refused()
                );
            }
            ok
        };
        if !admitted {
            let e = io::Error::other(format!("too many connections from {ip}"));
            return Box::pin(std::future::ready(Err(e)));
        }
        let place = Place {
            counts: self.counts.clone(),
            ip,
        };
        let accepted = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((
                Held {
                    stream,
                    _place: place,
                },
                service,
            ))
        })
    }
}

/// A place held for as long as its connection lives.
struct Place {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        lock(&self.counts).give(self.ip);
    }
}

/// A connection and the place it holds.
pub struct Held<T> {
    stream: T,
    _place: Place,
}

impl<T: AsyncRead + Unpin> AsyncRead for Held<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Held<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_places_and_gives_them_back() {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut c = Counts::new(2);
        assert!(c.take(a) && c.take(a));
        assert!(!c.take(a), "a third from one address");
        assert!(c.take(b), "another address is not held up");
        c.give(a);
        assert!(c.take(a));
        assert_eq!(c.refused(), 1);
        // Every place given back leaves nothing behind.
        c.give(a);
        c.give(a);
        c.give(b);
        assert!(c.held.is_empty());
    }

    #[test]
    fn zero_is_no_cap() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mut c = Counts::new(0);
        assert!((0..10_000).all(|_| c.take(a)));
    }
}
