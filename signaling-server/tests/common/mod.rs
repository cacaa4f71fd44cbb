//! Helpers shared by the integration tests: a real server on `127.0.0.1:0`
//! in this process behind a guard, raw WebSocket clients, and waits with
//! deadlines (never sleeps).

// Each test file uses a subset of these helpers.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use jobmesh_core::PoolView;
use jobmesh_identity::Identity;
use jobmesh_signal_server::{Counters, ServerConfig};
use jobmesh_wire::signal::{encode, ClientMsg, ErrorCode, Join, ServerMsg};
use jobmesh_wire::{Capability, PeerId, PeerInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// How long any single wait may take before the test fails. Generous: the
/// tests never assert on timing, this only turns a hang into a failure.
pub(crate) const DEADLINE: Duration = Duration::from_secs(15);

/// Awaits `fut` for at most [`DEADLINE`]; panics naming `what` otherwise.
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// Logs to the test's captured output; `JOBMESH_LOG` sets the filter.
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JOBMESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A server running in this process; cancelled on drop.
pub(crate) struct Server {
    /// `ws://127.0.0.1:PORT/ws`.
    pub(crate) url: String,
    /// `127.0.0.1:PORT`.
    pub(crate) addr: SocketAddr,
    /// The server's counters.
    pub(crate) counters: Arc<Counters>,
    cancel: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Binds `127.0.0.1:0` and runs the server with `config`.
    pub(crate) async fn start(config: ServerConfig) -> Self {
        init_tracing();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let counters = config.counters.clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(jobmesh_signal_server::run(listener, config, cancel.clone()));
        Self {
            url: format!("ws://{addr}/ws"),
            addr,
            counters,
            cancel,
            task: Some(task),
        }
    }

    /// Cancels the server and waits for `run` to return `Ok`.
    pub(crate) async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            within("run to return after cancellation", task)
                .await
                .expect("the server task did not panic")
                .expect("run returned Ok");
        }
    }

    /// A counter's current value.
    pub(crate) fn count(&self, pick: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64) -> u64 {
        pick(&self.counters).load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A raw client socket.
pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `url` (its challenge not read, no hello yet).
pub(crate) async fn connect(url: &str) -> Ws {
    within(
        "the WebSocket to open",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("WebSocket handshake")
    .0
}

/// A capability name known to be valid.
pub(crate) fn cap(name: &str) -> Capability {
    Capability::new(name).expect("test capability names are valid")
}

/// A valid hello of `identity` for the challenge `nonce`, in `pool`, named
/// `name`, able to run `echo`, 2 slots.
pub(crate) fn hello(identity: &Identity, nonce: &str, pool: &str, name: &str) -> ClientMsg {
    let join = Join {
        name: name.into(),
        pool: pool.into(),
        capabilities: vec![cap("echo")],
        slots: 2,
        credential: None,
        view: None,
    };
    ClientMsg::Hello(join.hello(identity, nonce))
}

/// Reads the server's first frame on a raw socket, its challenge; returns
/// the nonce.
pub(crate) async fn challenge(ws: &mut Ws) -> String {
    let frame = within("the server's challenge", ws.next()).await;
    match frame {
        Some(Ok(Message::Text(t))) => match ServerMsg::decode(t.as_bytes()) {
            Ok(ServerMsg::Challenge { nonce }) => nonce,
            other => panic!("expected a challenge first, got {other:?}"),
        },
        other => panic!("expected a challenge first, got {other:?}"),
    }
}

/// What the server said, as a reading client sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Heard {
    /// A decoded text frame.
    Msg(ServerMsg),
    /// A close frame with its code (`None`: no code), or the socket ending.
    Closed(Option<u16>),
}

/// A client that reads continuously in its own task (so it answers pings,
/// which tungstenite does only while reading) and hands over what it hears.
pub(crate) struct Peer {
    /// Its peer id (its identity's).
    pub(crate) id: PeerId,
    /// Its key.
    pub(crate) identity: Identity,
    /// Its connection's challenge.
    pub(crate) nonce: String,
    /// The pool as the `view` frames read so far describe it (the peers'
    /// own `PoolView`).
    pub(crate) view: PoolView,
    /// Messages other than views read while waiting for the view.
    pending: VecDeque<ServerMsg>,
    sink: SplitSink<Ws, Message>,
    heard: mpsc::Receiver<Heard>,
    /// Aborted on drop, so dropping a `Peer` drops its socket (the reader
    /// owns the other half of it).
    reader: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Frames a [`Peer`]'s reader task may hold before the test reads them.
const HEARD_QUEUE: usize = 1024;

impl Peer {
    /// Connects, says hello as `name` in `pool`, and waits for the welcome.
    pub(crate) async fn join(url: &str, pool: &str, name: &str) -> Self {
        let ws = connect(url).await;
        Self::join_on(ws, Identity::generate(), pool, name).await
    }

    /// Says hello as `identity` on an open socket and waits for the welcome
    /// and then for its view to be synced.
    pub(crate) async fn join_on(ws: Ws, identity: Identity, pool: &str, name: &str) -> Self {
        let mut peer = Self::reading(ws, identity).await;
        peer.send(&peer.hello(pool, name)).await;
        match peer.next().await {
            ServerMsg::Welcome {
                pool: p,
                heartbeat_ms,
                ..
            } => {
                assert_eq!(p, pool);
                assert!(heartbeat_ms > 0);
            }
            other => panic!("expected a welcome, got {other:?}"),
        }
        peer.wait_view("the first synced view", PoolView::is_synced)
            .await;
        peer
    }

    /// The members its view holds, in id order.
    pub(crate) fn members(&self) -> Vec<PeerInfo> {
        self.view.peers().cloned().collect()
    }

    /// Reads until `want` holds for its view; keeps other messages for
    /// [`next`](Self::next). Panics on a close.
    pub(crate) async fn wait_view(&mut self, what: &str, want: impl Fn(&PoolView) -> bool) {
        within(what, async {
            while !want(&self.view) {
                match self.heard.recv().await {
                    Some(Heard::Msg(m @ ServerMsg::View { .. })) => {
                        self.view.apply(&m);
                    }
                    Some(Heard::Msg(m)) => self.pending.push_back(m),
                    other => panic!("waiting for {what}: the socket closed ({other:?})"),
                }
            }
        })
        .await;
    }

    /// Waits until its view lists `id`; returns how it is described.
    pub(crate) async fn wait_member(&mut self, id: PeerId) -> PeerInfo {
        self.wait_view("a member to be listed", |v| v.get(&id).is_some())
            .await;
        self.view.get(&id).cloned().expect("listed")
    }

    /// Waits until its view no longer lists `id`.
    pub(crate) async fn wait_gone(&mut self, id: PeerId) {
        self.wait_view("a member to be gone", |v| v.get(&id).is_none())
            .await;
    }

    /// Its valid hello on this connection.
    pub(crate) fn hello(&self, pool: &str, name: &str) -> ClientMsg {
        hello(&self.identity, &self.nonce, pool, name)
    }

    /// Starts reading `ws` in a task and takes the server's challenge,
    /// without saying hello.
    pub(crate) async fn reading(ws: Ws, identity: Identity) -> Self {
        let (sink, mut stream) = ws.split();
        let (tx, heard) = mpsc::channel(HEARD_QUEUE);
        let reader = tokio::spawn(async move {
            // After a close frame, keep reading until the socket ends: that
            // flushes tungstenite's close reply, which the server waits for.
            let mut close_code = None;
            loop {
                let h = match stream.next().await {
                    Some(Ok(Message::Text(t))) => Heard::Msg(
                        ServerMsg::decode(t.as_bytes()).expect("the server sends valid messages"),
                    ),
                    Some(Ok(Message::Close(f))) => {
                        close_code = f.map(|f| u16::from(f.code));
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    None | Some(Err(_)) => Heard::Closed(close_code),
                };
                let end = matches!(h, Heard::Closed(_));
                if tx.send(h).await.is_err() || end {
                    return;
                }
            }
        });
        let mut peer = Self {
            id: identity.peer_id(),
            identity,
            nonce: String::new(),
            view: PoolView::new(),
            pending: VecDeque::new(),
            sink,
            heard,
            reader,
        };
        match peer.next().await {
            ServerMsg::Challenge { nonce } => peer.nonce = nonce,
            other => panic!("expected a challenge first, got {other:?}"),
        }
        peer
    }

    /// Sends one message as a text frame.
    pub(crate) async fn send(&mut self, msg: &ClientMsg) {
        self.send_raw(Message::text(encode(msg))).await;
    }

    /// Sends any frame.
    pub(crate) async fn send_raw(&mut self, frame: Message) {
        self.try_send_raw(frame).await.expect("send");
    }

    /// Sends any frame; the socket may fail.
    pub(crate) async fn try_send_raw(
        &mut self,
        frame: Message,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        within("a frame to be sent", self.sink.send(frame)).await
    }

    /// The next thing heard other than a view (views update
    /// [`view`](Self::view) as they pass).
    pub(crate) async fn heard(&mut self) -> Heard {
        if let Some(m) = self.pending.pop_front() {
            return Heard::Msg(m);
        }
        within("the server to say something", async {
            loop {
                match self.heard.recv().await {
                    Some(Heard::Msg(m @ ServerMsg::View { .. })) => {
                        self.view.apply(&m);
                    }
                    Some(h) => return h,
                    None => return Heard::Closed(None),
                }
            }
        })
        .await
    }

    /// The next message other than a view; panics on a close.
    pub(crate) async fn next(&mut self) -> ServerMsg {
        match self.heard().await {
            Heard::Msg(m) => m,
            Heard::Closed(code) => panic!("expected a message, the socket closed ({code:?})"),
        }
    }

    /// Skips messages until one matches `want`; panics on a close.
    pub(crate) async fn wait_for(
        &mut self,
        what: &str,
        want: impl Fn(&ServerMsg) -> bool,
    ) -> ServerMsg {
        within(what, async {
            loop {
                let m = self.next().await;
                if want(&m) {
                    return m;
                }
            }
        })
        .await
    }

    /// Expects an error with `code` whose text contains `needle`, then a close
    /// frame with `close_code`.
    pub(crate) async fn expect_error_then_close(
        &mut self,
        code: ErrorCode,
        needle: &str,
        close_code: u16,
    ) {
        match self.heard().await {
            Heard::Msg(ServerMsg::Error { code: c, message }) => {
                assert_eq!(c, code, "{message}");
                assert!(
                    message.contains(needle),
                    "{message:?} should mention {needle:?}"
                );
            }
            other => panic!("expected an error {code:?}, got {other:?}"),
        }
        assert_eq!(self.heard().await, Heard::Closed(Some(close_code)));
    }

    /// Closes the socket with a close handshake.
    pub(crate) async fn close(&mut self) {
        within("the close to be sent", self.sink.close())
            .await
            .expect("close");
    }
}

/// A plain HTTP/1.1 GET of `path`; returns (status line, body).
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    http_get_with(addr, path, "").await
}

/// [`http_get`] with extra header lines (each ending in `\r\n`).
pub(crate) async fn http_get_with(addr: SocketAddr, path: &str, headers: &str) -> (String, String) {
    within("the HTTP response", async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.expect("read");
        let (head, body) = buf.split_once("\r\n\r\n").expect("the headers end");
        (
            head.lines().next().unwrap_or_default().to_owned(),
            body.to_owned(),
        )
    })
    .await
}
