//! The axum server around the [`Registry`]: one task per WebSocket, a sweep
//! task for liveness, and two HTTP endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use jobmesh_wire::signal::{
    encode, ClientMsg, ErrorCode, Hello, ServerMsg, DEFAULT_HEARTBEAT_MS, HELLO_TIMEOUT_MS,
    MAX_SIGNAL_MESSAGE,
};
use jobmesh_wire::{DecodeError, PeerId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, field, info, info_span, warn, Instrument, Span};

use crate::registry::{JoinError, Registry, MAX_PEERS_PER_POOL};

/// Messages queued for one client. Full: the client is dropped (it is not
/// keeping up, and the others must not wait for it).
pub const CLIENT_QUEUE: usize = 256;
/// Close code for a policy violation (bad frame, too slow).
const CLOSE_POLICY: u16 = 1008;
/// Close code for server shutdown.
const CLOSE_GOING_AWAY: u16 = 1001;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Ping interval; a peer silent for 3 of them is removed.
    pub heartbeat: Duration,
    /// A socket must say hello within this long.
    pub hello_timeout: Duration,
    /// Most peers in one pool.
    pub max_peers_per_pool: usize,
    /// Per-client outbound queue, in messages.
    pub client_queue: usize,
    /// Test hook: a copy of every text frame received. Overflow: dropped and
    /// counted in [`Counters::tap_dropped`].
    pub tap: Option<mpsc::Sender<Vec<u8>>>,
    /// Where the server counts what it does.
    pub counters: Arc<Counters>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(DEFAULT_HEARTBEAT_MS),
            hello_timeout: Duration::from_millis(HELLO_TIMEOUT_MS),
            max_peers_per_pool: MAX_PEERS_PER_POOL,
            client_queue: CLIENT_QUEUE,
            tap: None,
            counters: Arc::default(),
        }
    }
}

/// What the server has done, since start. Monotonic.
#[derive(Debug, Default)]
pub struct Counters {
    /// Text frames received.
    pub frames_in: AtomicU64,
    /// Bytes of text frames received.
    pub bytes_in: AtomicU64,
    /// Frames refused as undecodable.
    pub rejected_frames: AtomicU64,
    /// Handshake messages relayed.
    pub relays: AtomicU64,
    /// Clients dropped because their queue was full.
    pub clients_dropped_slow: AtomicU64,
    /// Clients removed for silence.
    pub clients_expired: AtomicU64,
    /// Tapped frames dropped because the tap was full.
    pub tap_dropped: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Client {
    tx: mpsc::Sender<ServerMsg>,
    kick: CancellationToken,
}

struct Inner {
    registry: Registry,
    clients: HashMap<PeerId, Client>,
}

struct Shared {
    inner: Mutex<Inner>,
    config: ServerConfig,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Queues `msg` for each of `to`. Never waits: a full queue kicks that client.
    fn fan_out(&self, to: &[PeerId], msg: &ServerMsg, counters: &Counters) {
        for id in to {
            if let Some(c) = self.clients.get(id).filter(|c| !c.kick.is_cancelled()) {
                if let Err(mpsc::error::TrySendError::Full(_)) = c.tx.try_send(msg.clone()) {
                    warn!(peer = %id.short(), "client queue full; dropping the client");
                    bump(&counters.clients_dropped_slow);
                    c.kick.cancel();
                }
            }
        }
    }
}

/// Serves signalling on `listener` until `shutdown` is cancelled, then closes
/// every socket with 1001 (going away) and returns once all connections ended
/// (at most a few seconds later).
pub async fn run(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            registry: Registry::new(config.max_peers_per_pool),
            clients: HashMap::new(),
        }),
        config,
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
    });
    shared.tracker.spawn(sweep(shared.clone()));
    let app = Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/pools", get(pools))
        .with_state(shared.clone());
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .await;
    shared.tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), shared.tracker.wait())
        .await
        .is_err()
    {
        warn!("some connections did not close within 5 s of shutdown");
    }
    info!("signal-server stopped");
    served
}

async fn pools(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let summary = shared.lock().registry.summary();
    Json(serde_json::json!({ "pools": summary }))
}

async fn ws_upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    State(shared): State<Arc<Shared>>,
) -> impl IntoResponse {
    // Frames up to twice the limit are read whole so the client gets an error
    // naming the size; beyond that the socket is cut.
    ws.max_message_size(2 * MAX_SIGNAL_MESSAGE)
        .max_frame_size(2 * MAX_SIGNAL_MESSAGE)
        .on_upgrade(move |socket| {
            let span = info_span!("client", %addr, peer = field::Empty, pool = field::Empty);
            let tracker = shared.tracker.clone();
            tracker.track_future(connection(socket, shared).instrument(span))
        })
}

/// Removes members silent for too long, every heartbeat.
async fn sweep(shared: Arc<Shared>) {
    let heartbeat = shared.config.heartbeat;
    let mut tick = tokio::time::interval(heartbeat);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let inner = shared.lock();
        for id in inner.registry.expired(Instant::now(), heartbeat) {
            if let Some(c) = inner.clients.get(&id) {
                info!(peer = %id.short(), "no heartbeat for 3 intervals; removing the peer");
                bump(&shared.config.counters.clients_expired);
                c.kick.cancel();
            }
        }
    }
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// Why a connection ended.
enum End {
    Closed,
    Fatal(ErrorCode, String),
    Kicked,
    Shutdown,
}

async fn connection(socket: WebSocket, shared: Arc<Shared>) {
    let (mut sink, mut stream) = socket.split();
    let hello = match await_hello(&mut stream, &shared).await {
        Ok(h) => h,
        Err(end) => return close(&mut sink, end, shared.config.heartbeat).await,
    };
    let span = Span::current();
    span.record("peer", field::display(hello.peer_id.short()));
    span.record("pool", field::display(&hello.pool));
    let me = hello.peer_id;
    let (tx, mut rx) = mpsc::channel(shared.config.client_queue.max(1));
    let kick = CancellationToken::new();
    let joined = {
        let mut inner = shared.lock();
        let joined = inner.registry.join(Instant::now(), &hello);
        if joined.is_ok() {
            inner.clients.insert(
                me,
                Client {
                    tx,
                    kick: kick.clone(),
                },
            );
            if let Some(info) = inner.registry.info(&me).cloned() {
                let others = inner.registry.others(&hello.pool, &me);
                inner.fan_out(
                    &others,
                    &ServerMsg::PeerJoined { peer: info },
                    &shared.config.counters,
                );
            }
        }
        joined
    };
    let welcome = match joined {
        Ok(peers) => ServerMsg::Welcome {
            pool: hello.pool.clone(),
            peers,
            heartbeat_ms: u64::try_from(shared.config.heartbeat.as_millis()).unwrap_or(u64::MAX),
        },
        Err(e) => {
            let code = match e {
                JoinError::PoolFull { .. } => ErrorCode::PoolFull,
                _ => ErrorCode::DuplicatePeer,
            };
            return close(
                &mut sink,
                End::Fatal(code, e.to_string()),
                shared.config.heartbeat,
            )
            .await;
        }
    };
    info!(name = %hello.name, capabilities = hello.capabilities.len(), "peer joined");
    let end = match send(&mut sink, &welcome, shared.config.heartbeat).await {
        Ok(()) => serve(&mut sink, &mut stream, &mut rx, &kick, me, &shared).await,
        Err(()) => End::Closed,
    };
    {
        let mut inner = shared.lock();
        inner.clients.remove(&me);
        if let Some(pool) = inner.registry.leave(&me) {
            let others = inner.registry.others(&pool, &me);
            inner.fan_out(
                &others,
                &ServerMsg::PeerLeft { peer_id: me },
                &shared.config.counters,
            );
        }
    }
    info!("peer left");
    close(&mut sink, end, shared.config.heartbeat).await;
}

async fn await_hello(stream: &mut Stream, shared: &Shared) -> Result<Hello, End> {
    let deadline = tokio::time::sleep(shared.config.hello_timeout);
    tokio::pin!(deadline);
    loop {
        let frame = tokio::select! {
            () = shared.shutdown.cancelled() => return Err(End::Shutdown),
            () = &mut deadline => {
                return Err(End::Fatal(
                    ErrorCode::HelloTimeout,
                    format!("no hello within {} ms of connecting", shared.config.hello_timeout.as_millis()),
                ))
            }
            f = stream.next() => f,
        };
        match read_frame(frame, shared)? {
            None => continue,
            Some(ClientMsg::Hello(h)) => return Ok(h),
            Some(_) => {
                return Err(End::Fatal(
                    ErrorCode::ExpectedHello,
                    "the first message must be a hello".into(),
                ))
            }
        }
    }
}

/// Decodes one frame. `Ok(None)` for control frames.
fn read_frame(
    frame: Option<Result<Message, axum::Error>>,
    shared: &Shared,
) -> Result<Option<ClientMsg>, End> {
    let counters = &shared.config.counters;
    let text = match frame {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Err(End::Closed),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Ok(None),
        Some(Ok(Message::Binary(_))) => {
            bump(&counters.rejected_frames);
            return Err(fatal(DecodeError::Binary));
        }
        Some(Ok(Message::Text(t))) => t,
    };
    bump(&counters.frames_in);
    counters
        .bytes_in
        .fetch_add(text.len() as u64, Ordering::Relaxed);
    if let Some(tap) = &shared.config.tap {
        if tap.try_send(text.as_bytes().to_vec()).is_err() {
            bump(&counters.tap_dropped);
        }
    }
    ClientMsg::decode(text.as_bytes()).map(Some).map_err(|e| {
        bump(&counters.rejected_frames);
        fatal(e)
    })
}

fn fatal(e: DecodeError) -> End {
    let code = match e {
        DecodeError::WrongVersion { .. } => ErrorCode::WrongVersion,
        _ => ErrorCode::BadMessage,
    };
    End::Fatal(code, e.to_string())
}

async fn serve(
    sink: &mut Sink,
    stream: &mut Stream,
    rx: &mut mpsc::Receiver<ServerMsg>,
    kick: &CancellationToken,
    me: PeerId,
    shared: &Shared,
) -> End {
    let heartbeat = shared.config.heartbeat;
    let mut ping = tokio::time::interval(heartbeat);
    ping.tick().await;
    loop {
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return End::Shutdown,
            () = kick.cancelled() => return End::Kicked,
            _ = ping.tick() => {
                if timed_send(sink, Message::Ping(Default::default()), heartbeat).await.is_err() {
                    return End::Closed;
                }
            }
            out = rx.recv() => {
                let Some(out) = out else { return End::Kicked };
                // A kicked client may be stuck in this send: stop waiting at once.
                tokio::select! {
                    biased;
                    () = kick.cancelled() => return End::Kicked,
                    r = send(sink, &out, heartbeat) => if r.is_err() { return End::Closed },
                }
            }
            frame = stream.next() => {
                shared.lock().registry.touch(Instant::now(), &me);
                match read_frame(frame, shared) {
                    Err(end) => return end,
                    Ok(None) => {}
                    Ok(Some(msg)) => {
                        if let Some(end) = handle(sink, msg, me, shared).await {
                            return end;
                        }
                    }
                }
            }
        }
    }
}

/// Acts on one message of a joined peer; `Some` ends the connection.
async fn handle(sink: &mut Sink, msg: ClientMsg, me: PeerId, shared: &Shared) -> Option<End> {
    let counters = &shared.config.counters;
    match msg {
        ClientMsg::Hello(_) => Some(End::Fatal(
            ErrorCode::ExpectedHello,
            "hello may be sent only once per connection".into(),
        )),
        ClientMsg::Stats { stats } => {
            let mut inner = shared.lock();
            if let Some(pool) = inner
                .registry
                .set_stats(&me, stats.clone())
                .map(str::to_owned)
            {
                let others = inner.registry.others(&pool, &me);
                inner.fan_out(
                    &others,
                    &ServerMsg::StatsChanged { peer_id: me, stats },
                    counters,
                );
            }
            None
        }
        ClientMsg::Relay { to, signal } => {
            let delivered = {
                let inner = shared.lock();
                if inner.registry.same_pool(&me, &to) {
                    inner.fan_out(&[to], &ServerMsg::Relayed { from: me, signal }, counters);
                    bump(&counters.relays);
                    true
                } else {
                    false
                }
            };
            if delivered {
                return None;
            }
            debug!(to = %to.short(), "relay to a peer outside the pool refused");
            let err = ServerMsg::Error {
                code: ErrorCode::UnknownPeer,
                message: format!("peer {to} is not in your pool; relays stay within a pool"),
            };
            send(sink, &err, shared.config.heartbeat)
                .await
                .err()
                .map(|()| End::Closed)
        }
    }
}

async fn timed_send(sink: &mut Sink, msg: Message, limit: Duration) -> Result<(), ()> {
    // A client that cannot take a frame within a heartbeat is treated as gone.
    match tokio::time::timeout(limit, sink.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn send(sink: &mut Sink, msg: &ServerMsg, limit: Duration) -> Result<(), ()> {
    timed_send(sink, Message::Text(Utf8Bytes::from(encode(msg))), limit).await
}

/// Ends a connection: an error message first when there is one, then a close frame.
async fn close(sink: &mut Sink, end: End, limit: Duration) {
    let (code, reason) = match end {
        End::Closed => return,
        End::Fatal(code, message) => {
            debug!(?code, %message, "refusing client");
            let _ = send(sink, &ServerMsg::Error { code, message }, limit).await;
            (CLOSE_POLICY, "protocol error")
        }
        // A kicked client is not reading; a close frame would only wait. Dropping
        // the socket closes the connection.
        End::Kicked => return,
        End::Shutdown => {
            let msg = ServerMsg::Error {
                code: ErrorCode::GoingAway,
                message: "signal-server is shutting down".into(),
            };
            let _ = send(sink, &msg, limit).await;
            (CLOSE_GOING_AWAY, "server shutting down")
        }
    };
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = timed_send(sink, Message::Close(Some(frame)), limit).await;
}
