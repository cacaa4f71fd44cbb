//! A webrtc runtime that gives every UDP socket large kernel buffers.
//!
//! webrtc 0.21 has no setting for them, and with Linux's default 208 KiB
//! receive buffer a bulk transfer drops datagrams, after which SCTP recovers
//! only by its 1 s retransmission timeout: 7–48 MB/s with stalls instead of
//! ~175 MB/s (`../shared/webrtc-notes.md`, pitfall 2). Everything else is
//! delegated to webrtc's own tokio runtime.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

/// Buffer size asked for, each way. The kernel caps it at
/// `net.core.rmem_max` / `wmem_max` (4 MiB on the project machine); the size
/// granted is logged once.
pub const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

static LOGGED: AtomicBool = AtomicBool::new(false);

/// [`TokioRuntime`] plus large UDP socket buffers.
#[derive(Debug)]
pub struct BufferedRuntime {
    inner: TokioRuntime,
}

impl BufferedRuntime {
    /// The runtime, shared.
    pub fn shared() -> Arc<dyn Runtime> {
        Arc::new(Self {
            inner: TokioRuntime,
        })
    }
}

/// Asks for `bytes` of send and receive buffer; returns what was granted.
pub fn enlarge_buffers(socket: &std::net::UdpSocket, bytes: usize) -> io::Result<(usize, usize)> {
    let s = socket2::SockRef::from(socket);
    s.set_recv_buffer_size(bytes)?;
    s.set_send_buffer_size(bytes)?;
    Ok((s.recv_buffer_size()?, s.send_buffer_size()?))
}

impl Runtime for BufferedRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        match enlarge_buffers(&socket, UDP_BUFFER_BYTES) {
            Ok((rcv, snd)) => {
                if !LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        asked = UDP_BUFFER_BYTES,
                        recv_granted = rcv,
                        send_granted = snd,
                        "UDP socket buffers (raise net.core.rmem_max/wmem_max if granted < asked)"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot enlarge UDP socket buffers; bulk transfers may stall")
            }
        }
        self.inner.wrap_udp_socket(socket)
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_grow_beyond_the_linux_default() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let before = socket2::SockRef::from(&socket)
            .recv_buffer_size()
            .expect("size");
        let (rcv, snd) = enlarge_buffers(&socket, UDP_BUFFER_BYTES).expect("set");
        // Linux doubles the value asked for bookkeeping and caps it at rmem_max;
        // either way it is larger than the default unless rmem_max forbids it.
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if rmem_max > before {
            assert!(
                rcv > before,
                "receive buffer {rcv} not above the default {before}"
            );
        }
        assert!(snd > 0);
    }
}
