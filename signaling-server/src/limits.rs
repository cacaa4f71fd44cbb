//! What one client, or everyone together, may cost the server before a word
//! of the protocol: connections in total and per IP address, and how long a
//! connection may take to send its first HTTP request head (slowloris).
//!
//! [`GuardedListener`] wraps the listener axum serves (plain or TLS): past a
//! connection limit a new connection is closed at once; every accepted one
//! is a [`Guarded`] stream that gives its slot back when dropped and fails
//! its reads once [`Limits::header_timeout`] passes without a complete
//! request head (`\r\n\r\n`). After the head, the WebSocket's own hello
//! deadline and heartbeats take over.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tracing::debug;

use crate::server::Counters;

/// Default most connections at once.
pub const MAX_CONNECTIONS: usize = 20_000;
/// Default most connections at once from one IP address.
pub const MAX_CONNECTIONS_PER_IP: usize = 512;
/// Default longest wait for a connection's first HTTP request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections at once.
    pub max_connections: usize,
    /// Most connections at once from one IP address.
    pub max_per_ip: usize,
    /// Longest wait for the first request head.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            max_per_ip: MAX_CONNECTIONS_PER_IP,
            header_timeout: HEADER_TIMEOUT,
        }
    }
}

/// Connections held, in total and per IP.
#[derive(Debug, Default)]
struct Held {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The count of connections, shared by the listener and its streams.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    held: Mutex<Held>,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a connection from `ip`, if the limits allow.
    fn enter(&self, ip: IpAddr, limits: &Limits) -> bool {
        let mut held = self.lock();
        let from_ip = held.per_ip.get(&ip).copied().unwrap_or(0);
        if held.total >= limits.max_connections || from_ip >= limits.max_per_ip {
            return false;
        }
        held.total += 1;
        held.per_ip.insert(ip, from_ip + 1);
        true
    }

    fn leave(&self, ip: IpAddr) {
        let mut held = self.lock();
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                held.per_ip.remove(&ip);
            }
        }
    }
}

/// A listener that enforces [`Limits`].
pub struct GuardedListener<L> {
    inner: L,
    limits: Limits,
    gate: Arc<Gate>,
    /// Counts the connections refused at a limit.
    refused: Arc<Counters>,
}

impl<L> GuardedListener<L> {
    pub(crate) fn new(inner: L, limits: Limits, counters: Arc<Counters>) -> Self {
        Self {
            inner,
            limits,
            gate: Arc::default(),
            refused: counters,
        }
    }
}

impl<L> axum::serve::Listener for GuardedListener<L>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    type Io = Guarded<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = self.inner.accept().await;
            if !self.gate.enter(addr.ip(), &self.limits) {
                self.refused
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                debug!(%addr, "connection limit reached; closed");
                continue;
            }
            let guarded = Guarded {
                io,
                ip: addr.ip(),
                gate: self.gate.clone(),
                head: Some(HeadWatch {
                    deadline: Box::pin(tokio::time::sleep(self.limits.header_timeout)),
                    tail: 0,
                }),
            };
            return (guarded, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Watches for the end of the first request head, against its deadline.
struct HeadWatch {
    deadline: Pin<Box<Sleep>>,
    /// How many of `\r\n\r\n`'s bytes the data so far ends with.
    tail: usize,
}

impl HeadWatch {
    /// Scans newly read bytes; `true` once the head is complete.
    fn scan(&mut self, bytes: &[u8]) -> bool {
        const END: &[u8] = b"\r\n\r\n";
        for &b in bytes {
            self.tail = if b == END[self.tail] {
                self.tail + 1
            } else if b == END[0] {
                1
            } else {
                0
            };
            if self.tail == END.len() {
                return true;
            }
        }
        false
    }
}

/// An accepted connection under the limits: its slot is given back when it
/// is dropped, and its reads fail once the head deadline passes.
pub struct Guarded<I> {
    io: I,
    ip: IpAddr,
    gate: Arc<Gate>,
    /// `None` once the first request head is complete.
    head: Option<HeadWatch>,
}

impl<I> Drop for Guarded<I> {
    fn drop(&mut self) {
        self.gate.leave(self.ip);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(watch) = &mut this.head {
                    if watch.scan(&buf.filled()[before..]) {
                        this.head = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let late = this
                    .head
                    .as_mut()
                    .is_some_and(|watch| watch.deadline.as_mut().poll(cx).is_ready());
                if late {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no complete request head in time",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_head_ends_at_the_first_blank_line_even_split_across_reads() {
        let mut w = HeadWatch {
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
            tail: 0,
        };
        assert!(!w.scan(b"GET /ws HTTP/1.1\r\nHost: x\r"));
        assert!(!w.scan(b"\n\r"));
        assert!(w.scan(b"\nrest"));
        let mut w = HeadWatch {
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
            tail: 0,
        };
        assert!(!w.scan(b"a\r\n\r\r\nb"));
        assert!(w.scan(b"\r\n\r\n"));
    }

    #[test]
    fn the_gate_counts_per_ip_and_in_total() {
        let gate = Gate::default();
        let limits = Limits {
            max_connections: 3,
            max_per_ip: 2,
            header_timeout: HEADER_TIMEOUT,
        };
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        assert!(gate.enter(a, &limits));
        assert!(gate.enter(a, &limits));
        assert!(!gate.enter(a, &limits), "per IP");
        assert!(gate.enter(b, &limits));
        assert!(!gate.enter(b, &limits), "in total");
        gate.leave(a);
        assert!(gate.enter(b, &limits));
        gate.leave(a);
        gate.leave(b);
        gate.leave(b);
        assert_eq!(gate.lock().total, 0);
        assert!(gate.lock().per_ip.is_empty());
    }
}
