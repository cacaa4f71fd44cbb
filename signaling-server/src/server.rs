//! The axum server around the [`Registry`]: one task per WebSocket, one sweep
//! task for liveness, and two HTTP endpoints.
//!
//! Shape: the caller binds the listener, builds a [`ServerConfig`] (keeping a
//! clone of its `counters` to read later) and awaits [`run`] with a
//! [`CancellationToken`]; cancelling the token is the only way to stop it.
//!
//! All shared state (the registry, each client's relay queue and each pool's
//! head watch) is one `std::sync::Mutex<Inner>`: every critical section is a
//! few map operations, a `try_send` or one page's worth of copying, never an
//! `.await`, so a blocking mutex is cheaper than an async one and cannot
//! deadlock across a yield.
//!
//! Fan-out: a change to a pool bumps its head in a `watch` channel; each
//! client's task wakes, reads [`Registry::page`]s from its own cursor until
//! it is synced and writes them. Nothing is queued per client for the view,
//! so a burst of joins or stats costs no memory per client, and a client
//! that reads slowly gets fewer, fuller pages (each member once, as it is
//! now) instead of being dropped.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use jobmesh_wire::signal::{
    encode, ClientMsg, ErrorCode, Handshake, Hello, ServerMsg, CHALLENGE_BYTES,
    DEFAULT_HEARTBEAT_MS, HELLO_TIMEOUT_MS, MAX_SIGNAL_MESSAGE, MISSED_HEARTBEATS, VIEW_PAGE_BYTES,
};
use jobmesh_wire::{DecodeError, PeerId};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, field, info, info_span, warn, Instrument, Span};

use crate::admission::Admission;
use crate::limits::{GuardedListener, Limits};
use crate::registry::{JoinError, MemberPage, PoolSummary, Registry, MAX_PEERS_PER_POOL};
use crate::tls::TlsListener;
use axum::serve::ListenerExt;
use futures_util::future::BoxFuture;
use jobmesh_trust::{Credential, Revocations};

/// Default queue of relayed handshake messages per client. Overflow: the
/// relay is dropped and its sender gets `error{peer_busy}` (the recipient is
/// not punished for what others send it).
pub const CLIENT_QUEUE: usize = 256;
/// Default least time between two view updates to one client (see
/// [`ServerConfig::view_interval`]).
pub const VIEW_INTERVAL: Duration = Duration::from_millis(50);
/// Default view updates per second a pool's clients get in all (see
/// [`ServerConfig::view_rate`]).
pub const VIEW_RATE: u32 = 20_000;
/// Default relays one connection may send per second (bursts of twice as
/// many): far above a daemon opening links to a whole pool at once, far
/// below a flood.
pub const RELAY_RATE: u32 = 100;

/// A connection's relay allowance: a token bucket of `2 × rate` tokens
/// refilled at `rate` per second.
struct RelayBudget {
    rate: f64,
    tokens: f64,
    last: Instant,
    /// When the sender was last told it is over its rate.
    told: Option<Instant>,
}

impl RelayBudget {
    fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            tokens: 2.0 * rate,
            last: now,
            told: None,
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(2.0 * self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether to tell the sender now (at most once a second).
    fn tell(&mut self, now: Instant) -> bool {
        let due = self
            .told
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if due {
            self.told = Some(now);
        }
        due
    }
}

/// After cancellation, how long [`run`] waits for open HTTP connections, and
/// then again for the WebSocket tasks, before it returns anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// The WebSocket layer reads whole frames and messages up to this size, so a
/// slightly oversized one reaches `ClientMsg::decode`, which names the size
/// and the limit. Anything bigger is refused from its header, unbuffered,
/// and gets the same error on a best-effort basis.
const READ_LIMIT: usize = 2 * MAX_SIGNAL_MESSAGE;
/// The WebSocket read buffer a connection starts with (tungstenite's default
/// is 128 KiB, which 10,000 idle clients would turn into over 1 GiB). Client
/// frames are small; a larger one grows it.
const READ_BUFFER: usize = 4 * 1024;
/// How long the last error and close frame may take to send when a
/// connection ends, and how long the server then waits for the client's
/// close reply before dropping the socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Close code for a policy violation (a refused frame or hello).
const CLOSE_POLICY: u16 = 1008;
/// Close code for server shutdown.
const CLOSE_GOING_AWAY: u16 = 1001;

/// Server settings. `Default` gives the production values.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Ping interval and sweep period; a peer silent for
    /// [`MISSED_HEARTBEATS`] of them is removed. At least 1 ms.
    pub heartbeat: Duration,
    /// A socket must say hello within this long.
    pub hello_timeout: Duration,
    /// Most peers in one pool; at least 1.
    pub max_peers_per_pool: usize,
    /// Per-client queue of relayed handshake messages; at least 1.
    pub client_queue: usize,
    /// Least time between two view updates to one client. The first change
    /// after a quiet spell goes out at once; changes within this time of the
    /// last update wait for its end and go out together, as one page. This
    /// bounds the frames a burst of joins or stats costs (each client gets
    /// at most one update per interval instead of one per change) for at
    /// most this much delay. Zero: every change goes out at once.
    pub view_interval: Duration,
    /// View updates per second the clients of one pool get in all, at most:
    /// in a pool of N members a client's interval is at least N / `view_rate`
    /// seconds (10,000 members: 0.5 s), so fan-out work per second stays
    /// flat as pools grow instead of growing with N². At least 1.
    pub view_rate: u32,
    /// Test hook: a copy of every text frame received, before decoding.
    /// Overflow: `try_send`; a frame that does not fit is dropped and counted
    /// in [`Counters::tap_dropped`].
    pub tap: Option<mpsc::Sender<Vec<u8>>>,
    /// Where the server counts what it does. Clone the `Arc` before calling
    /// [`run`] to read them while it runs.
    pub counters: Arc<Counters>,
    /// Who may join which pool. The default admits nobody: give pool keys,
    /// or open mode ([`ServerConfig::open`]) for development.
    pub admission: Admission,
    /// The bearer token `GET /api/pools` needs. `None` (the default): the
    /// API answers nobody (401).
    pub admin_token: Option<String>,
    /// Connections in total and per IP, and the request-head deadline.
    pub limits: Limits,
    /// `nats://…` of the NATS server this signal-server shares its pools
    /// through with the others of its cluster; None: it runs alone.
    pub cluster: Option<String>,
    /// This server's name in its cluster, the same across restarts; None:
    /// a new one each run.
    pub server_id: Option<String>,
    /// Relays one connection may send per second (a burst of twice as
    /// many); past it they are dropped and counted, and the sender is told
    /// at most once a second. At least 1.
    pub relay_rate: u32,
    /// Serve `wss://` with this TLS config ([`crate::tls::load`]); `None`:
    /// plain `ws://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The closed pools' owner-signed revocation lists, as the operator
    /// last loaded them (`signal-server --revocations FILE`, re-read on
    /// SIGHUP). A list newer than the one held (higher `seq`, verified with
    /// its pool's key) is applied at once: its members are refused at hello,
    /// those connected are disconnected, and every member gets the list.
    pub revocations: Option<watch::Receiver<Vec<Revocations>>>,
    /// The STUN and TURN servers offered in each welcome, TURN with a
    /// credential minted for the peer (`signal-server --turn-secret-file`).
    pub ice: crate::ice::IceOffer,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(DEFAULT_HEARTBEAT_MS),
            hello_timeout: Duration::from_millis(HELLO_TIMEOUT_MS),
            max_peers_per_pool: MAX_PEERS_PER_POOL,
            client_queue: CLIENT_QUEUE,
            view_interval: VIEW_INTERVAL,
            view_rate: VIEW_RATE,
            tap: None,
            admission: Admission::default(),
            admin_token: None,
            revocations: None,
            ice: crate::ice::IceOffer::default(),
            tls: None,
            limits: Limits::default(),
            relay_rate: RELAY_RATE,
            counters: Arc::default(),
            cluster: None,
            server_id: None,
        }
    }
}

impl ServerConfig {
    /// The defaults in open mode: any pool admits anyone who proves its
    /// key. For development and tests on one machine.
    pub fn open() -> Self {
        Self {
            admission: Admission::open(),
            ..Self::default()
        }
    }

    fn validate(&self) -> std::io::Result<()> {
        let invalid = |what: &str| {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid signal-server config: {what}"),
            ))
        };
        if self.heartbeat < Duration::from_millis(1) {
            return invalid("heartbeat must be at least 1 ms");
        }
        if self.max_peers_per_pool == 0 {
            return invalid("max_peers_per_pool must be at least 1");
        }
        if self.client_queue == 0 {
            return invalid("client_queue must be at least 1");
        }
        if self.view_rate == 0 {
            return invalid("view_rate must be at least 1");
        }
        if self.relay_rate == 0 {
            return invalid("relay_rate must be at least 1");
        }
        if self.limits.max_connections == 0 || self.limits.max_per_ip == 0 {
            return invalid("connection limits must be at least 1");
        }
        Ok(())
    }
}

/// What the server has done since it started. Every field only grows; read
/// with `load(Ordering::Relaxed)`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Data frames (text or binary) received.
    pub frames_in: AtomicU64,
    /// Data frames sent (all but the error frame that ends a connection).
    pub frames_out: AtomicU64,
    /// Bytes of data frames received.
    pub bytes_in: AtomicU64,
    /// Frames refused (undecodable, binary, oversized, not a hello first, a
    /// second hello); each one ended its connection.
    pub rejected_frames: AtomicU64,
    /// Handshake messages relayed to a peer of the sender's pool.
    pub relays: AtomicU64,
    /// Relays dropped because the recipient's queue was full (the sender
    /// was told `peer_busy`).
    pub relays_dropped_busy: AtomicU64,
    /// Clients dropped because a frame to them could not be written within
    /// a heartbeat (they stopped reading).
    pub clients_dropped_slow: AtomicU64,
    /// Clients removed for silence (no frame for `MISSED_HEARTBEATS` heartbeats).
    pub clients_expired: AtomicU64,
    /// Tapped frames dropped because the tap was full.
    pub tap_dropped: AtomicU64,
    /// Hellos refused because their pool admits only members with a valid
    /// credential and they showed none.
    pub not_admitted: AtomicU64,
    /// Connections closed at once because a connection limit was reached.
    pub connections_refused: AtomicU64,
    /// Relays dropped because their sender exceeded its relay rate.
    pub relays_rate_limited: AtomicU64,
    /// The cluster's side: zero for a server alone.
    pub cluster: ClusterCounters,
}

/// What a clustered server's backplane did (`jobmesh_signal_cluster_*`).
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Other servers heard from and not gone (a gauge).
    pub servers: AtomicU64,
    /// Batches of this server's own changes published.
    pub batches_published: AtomicU64,
    /// Changes of other servers' members applied here.
    pub changes_applied: AtomicU64,
    /// Snapshots asked of other servers (a gap, a new server or epoch).
    pub snapshots_requested: AtomicU64,
    /// Snapshots sent to other servers.
    pub snapshots_sent: AtomicU64,
    /// Handshakes published for peers of other servers.
    pub relays_out: AtomicU64,
    /// Handshakes from peers of other servers delivered here.
    pub relays_in: AtomicU64,
    /// Messages NATS did not take in time (or refused): dropped.
    pub publishes_dropped: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Serves signalling on `listener` until `shutdown` is cancelled.
///
/// Then it stops accepting, sends every WebSocket an `error{going_away}` and
/// a close frame with code 1001, and returns once every connection task has
/// ended — or after [`SHUTDOWN_GRACE`] for the HTTP connections plus
/// [`SHUTDOWN_GRACE`] for the WebSocket tasks, whichever comes first.
///
/// Errors: `InvalidInput` for an invalid config (nothing is served), or the
/// listener's error. Dropping the future stops accepting and cancels the
/// connections (through a child of `shutdown`).
pub async fn run(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    config.validate()?;
    let local = listener.local_addr()?;
    // A child, so an early return (or a drop) of this future also stops the
    // connections without cancelling the caller's token.
    let stop = shutdown.child_token();
    let _stop_on_return = stop.clone().drop_guard();
    let mut registry = Registry::new(config.max_peers_per_pool);
    let mut cluster = None;
    if let Some(url) = &config.cluster {
        // Connects in the background: a server serves its own peers while
        // NATS is away.
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(url.as_str())
            .await
            .map_err(|e| std::io::Error::other(format!("--cluster {url}: {e}")))?;
        let (relays, relay_rx) = tokio::sync::mpsc::channel(crate::backplane::RELAY_QUEUE);
        // A named server is the same server after a restart (a newer
        // epoch: the others drop what its previous run had at once); an
        // unnamed one is a new server each run (its old id expires).
        let me = config
            .server_id
            .as_deref()
            .map_or_else(uuid::Uuid::new_v4, |name| {
                uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes())
            });
        let link = crate::backplane::Link {
            me,
            relays,
            local_changes: Arc::default(),
        };
        cluster = Some((client, link, relay_rx));
        registry = registry.clustered();
    }
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            registry,
            clients: HashMap::new(),
            heads: HashMap::new(),
            revoked: HashMap::new(),
            cluster: cluster.as_ref().map(|(_, link, _)| link.clone()),
        }),
        next_conn: AtomicU64::new(0),
        config,
        stop: stop.clone(),
        tracker: TaskTracker::new(),
        // 1 ms to ~65 s, doubling: the view interval alone is 100s of ms.
        fan_out: prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17),
        ),
    });
    if let Some((client, link, relay_rx)) = cluster {
        let task = crate::backplane::run(shared.clone(), client, link.clone(), relay_rx);
        shared
            .tracker
            .spawn(task.instrument(info_span!("cluster", server = %link.me)));
    }
    shared
        .tracker
        .spawn(sweep(shared.clone()).instrument(info_span!("sweep")));
    if let Some(lists) = shared.config.revocations.clone() {
        shared
            .tracker
            .spawn(revocations(shared.clone(), lists).instrument(info_span!("revocations")));
    }
    let app = Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/js/jobmesh.js", get(browser_client))
        .route("/examples/", get(|| async { example_file("index.html") }))
        .route("/examples/{file}", get(example))
        .route("/metrics", get(metrics))
        .route("/api/pools", get(pools))
        .route("/api/pools/{name}", get(pool_members))
        .with_state(shared.clone());
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let stopped = stop.clone().cancelled_owned();
    let (limits, counters) = (shared.config.limits, shared.config.counters.clone());
    // `tap_io` only so that axum's `ConnectInfo<SocketAddr>` applies.
    let serve = match shared.config.tls.clone() {
        Some(tls) => {
            info!(%local, "signal-server serving wss://");
            let tls = TlsListener::new(listener, tls, stop.clone())?;
            let listener = GuardedListener::new(tls, limits, counters).tap_io(|_| {});
            let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
            Box::pin(serve.into_future()) as BoxFuture<'static, std::io::Result<()>>
        }
        None => {
            info!(%local, "signal-server serving ws://");
            let listener = GuardedListener::new(listener, limits, counters).tap_io(|_| {});
            let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
            Box::pin(serve.into_future())
        }
    };
    let served = tokio::select! {
        served = serve => served,
        () = async { stop.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            warn!("HTTP connections still open {SHUTDOWN_GRACE:?} after shutdown; leaving them");
            Ok(())
        }
    };
    stop.cancel();
    shared.tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, shared.tracker.wait())
        .await
        .is_err()
    {
        warn!(
            tasks = shared.tracker.len(),
            "some connections did not close within {SHUTDOWN_GRACE:?} of shutdown"
        );
    }
    info!("signal-server stopped");
    served
}

/// One connected, joined client.
struct Client {
    /// Tells this client's connection apart from a later one with the same
    /// peer id, so a finishing connection never removes its successor.
    conn: u64,
    /// Relayed handshakes for it (bounded by `client_queue`). Overflow: see
    /// [`Inner::relay`].
    tx: mpsc::Sender<ServerMsg>,
    /// Cancelled to end its connection at once (silent).
    kick: CancellationToken,
    /// Its pool.
    pool: String,
    /// The credential it joined with (a closed pool's).
    credential: Option<Box<Credential>>,
}

/// Everything behind the lock. Invariants: a peer id is a local member of
/// `registry` if and only if it is in `clients` (remote members, of other
/// servers of a cluster, have no client here); a pool has a head watch
/// while it has members.
pub(crate) struct Inner {
    pub(crate) registry: Registry,
    clients: HashMap<PeerId, Client>,
    /// Per pool, its head version; its members' tasks watch it.
    heads: HashMap<String, watch::Sender<Head>>,
    /// Per closed pool, the newest revocation list (verified).
    revoked: HashMap<String, Arc<Revocations>>,
    /// The other servers of the cluster, when there are any: where relays
    /// to their peers go, and whom to wake for local changes.
    cluster: Option<crate::backplane::Link>,
}

pub(crate) struct Shared {
    /// `std` mutex: never held across an `.await` (clippy's
    /// `await_holding_lock` is denied workspace-wide).
    inner: Mutex<Inner>,
    next_conn: AtomicU64,
    config: ServerConfig,
    /// Cancelled when the server stops.
    pub(crate) stop: CancellationToken,
    /// Every connection task and the sweep task.
    tracker: TaskTracker,
    /// From a change of a pool to a member's view holding it.
    fan_out: prometheus_client::metrics::histogram::Histogram,
}

/// A pool's latest version, and when it changed.
type Head = (u64, Instant);

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind, whose
        // invariant holds between statements; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.config.counters
    }
}

/// Why a relay was not queued.
#[derive(Debug)]
pub(crate) enum RelayRefused {
    /// The recipient is not in the sender's pool.
    Unknown,
    /// The recipient's queue is full.
    Busy,
}

impl Inner {
    /// Takes `list` if it is a closed pool's, signed by its key, and newer
    /// than the one held: refuses the members it withdraws (their
    /// connections end with `not_admitted`) and sends it to the others.
    /// Overflow: a member whose queue is full misses the list until it
    /// reconnects (it gets it after its welcome); a withdrawn one is kicked.
    fn revoke(&mut self, admission: &Admission, list: Revocations) {
        let pool = list.pool.clone();
        let Some(key) = admission.pools.get(&pool) else {
            warn!(%pool, "a revocation list for a pool without --pool-key; ignored");
            return;
        };
        if let Err(e) = list.verify(&pool, key) {
            warn!(%pool, error = %e, "a revocation list that does not verify; ignored");
            return;
        }
        if self
            .revoked
            .get(&pool)
            .is_some_and(|held| held.seq >= list.seq)
        {
            return;
        }
        info!(%pool, seq = list.seq, invites = list.invites.len(), members = list.members.len(), "revocation list applied");
        let list = Arc::new(list);
        self.revoked.insert(pool.clone(), list.clone());
        for client in self.clients.values().filter(|c| c.pool == pool) {
            let withdrawn = client
                .credential
                .as_deref()
                .is_some_and(|c| list.revokes(c));
            let msg = if withdrawn {
                ServerMsg::Error {
                    code: ErrorCode::NotAdmitted,
                    message: format!("not admitted to pool {pool:?}: the pool's owner revoked this peer's credential"),
                }
            } else {
                ServerMsg::Revocations {
                    list: Box::new((*list).clone()),
                }
            };
            if client.tx.try_send(msg).is_err() && withdrawn {
                client.kick.cancel();
            }
        }
    }

    /// Wakes the members of `pool` after a change (or forgets its watch once
    /// the pool is gone), and the cluster's task.
    pub(crate) fn changed(&mut self, pool: &str) {
        if let Some(link) = &self.cluster {
            link.local_changes.notify_one();
        }
        match self.registry.head(pool) {
            0 => {
                self.heads.remove(pool);
            }
            head => {
                if let Some(tx) = self.heads.get(pool) {
                    tx.send_replace((head, Instant::now()));
                }
            }
        }
    }

    /// Queues a relay from `from` to `to`: for a peer of this server, on its
    /// connection; for a peer of another server of the cluster, on the
    /// backplane's queue. Overflow policy: `try_send`; a full queue drops
    /// the relay and the caller tells the sender.
    fn relay(&self, from: PeerId, to: PeerId, signal: Handshake) -> Result<(), RelayRefused> {
        let remote = match (self.registry.owner(&to), &self.cluster) {
            (Some(Some(server)), Some(link)) if self.registry.same_pool(&from, &to) => {
                Some((Some(server), link))
            }
            // Not known here yet: a peer that just joined another server
            // (the views converge within a batch). Every server is asked;
            // the one it is connected to checks the pool.
            (None, Some(link)) => Some((None, link)),
            _ => None,
        };
        let Some((server, link)) = remote else {
            if !self.registry.same_pool(&from, &to) {
                return Err(RelayRefused::Unknown);
            }
            return self.deliver_to(from, to, signal);
        };
        let pool = self
            .registry
            .pool_of(&from)
            .ok_or(RelayRefused::Unknown)?
            .to_owned();
        let relay = crate::backplane::RemoteRelay {
            via: link.me,
            pool,
            from,
            to,
            signal,
        };
        link.relays
            .try_send((server, relay))
            .map_err(|_| RelayRefused::Busy)
    }

    /// Hands a relay to `to`'s connection here (the caller checked the pool).
    pub(crate) fn deliver_to(
        &self,
        from: PeerId,
        to: PeerId,
        signal: Handshake,
    ) -> Result<(), RelayRefused> {
        let client = self.clients.get(&to).ok_or(RelayRefused::Unknown)?;
        client
            .tx
            .try_send(ServerMsg::Relayed { from, signal })
            .map_err(|_| RelayRefused::Busy)
    }

    /// A member is gone from the registry (`pool` is where it was): ends its
    /// connection unless that is already ending, and tells the pool.
    fn forget(&mut self, id: PeerId, pool: &str) {
        if let Some(c) = self.clients.remove(&id) {
            c.kick.cancel();
        }
        self.changed(pool);
    }

    /// A connection ended: removes its peer unless the server already did
    /// (silent) and, when `announce`, tells the pool.
    fn depart(&mut self, id: PeerId, conn: u64, announce: bool) {
        if self.clients.get(&id).map(|c| c.conn) != Some(conn) {
            return;
        }
        self.clients.remove(&id);
        if let Some(pool) = self.registry.leave(&id) {
            if announce {
                self.changed(&pool);
            }
        }
    }
}

/// Entries on one page of the admin API unless `limit` says otherwise.
pub(crate) const API_PAGE: usize = 100;
/// Most entries on one page of the admin API.
pub(crate) const MAX_API_PAGE: usize = 1000;

#[derive(Serialize)]
struct PoolsResponse {
    pools: Vec<PoolSummary>,
    next: Option<String>,
}

/// `?after=…&limit=…` of the admin API.
#[derive(serde::Deserialize)]
struct PageQuery {
    after: Option<String>,
    /// Read as text, so that a bad one gets this API's JSON error.
    limit: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit.as_deref().map_or(Ok(API_PAGE), str::parse) {
            Ok(n @ 1..=MAX_API_PAGE) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit must be 1..={MAX_API_PAGE}"
            ))),
        }
    }
}

/// An admin API error: a status, a stable code and what to do.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn bad_request(message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

/// The browser client (clients/js, bundled into one ES module), embedded:
/// a page imports it from its pool's own server. It holds no secret and
/// speaks only what any peer may, so it is served without a token.
const BROWSER_CLIENT: &str = include_str!("../../clients/js/dist/jobmesh.js");

async fn browser_client() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        BROWSER_CLIENT,
    )
        .into_response()
}

/// The example pages of `examples/browser`, embedded: a tab that becomes a
/// `thumbnail` worker, and one that submits images. Static, public, same
/// origin as the pool's server and its /js/jobmesh.js.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "index.html",
        include_str!("../../examples/browser/index.html"),
    ),
    ("page.css", include_str!("../../examples/browser/page.css")),
    (
        "thumbnail.js",
        include_str!("../../examples/browser/thumbnail.js"),
    ),
    (
        "thumbnail-worker.html",
        include_str!("../../examples/browser/thumbnail-worker.html"),
    ),
    (
        "thumbnail-worker.js",
        include_str!("../../examples/browser/thumbnail-worker.js"),
    ),
    (
        "thumbnail-submit.html",
        include_str!("../../examples/browser/thumbnail-submit.html"),
    ),
    (
        "thumbnail-submit.js",
        include_str!("../../examples/browser/thumbnail-submit.js"),
    ),
];

/// What the example pages may do: scripts from this server only, the
/// heartbeat ticker's `blob:` worker, WebSockets to it, images they made.
const EXAMPLE_CSP: &str = "default-src 'self'; script-src 'self'; worker-src blob:; \
     connect-src 'self' ws: wss:; img-src 'self' blob: data:; style-src 'self'; frame-ancestors 'none'";

async fn example(Path(file): Path<String>) -> Response {
    example_file(&file)
}

fn example_file(file: &str) -> Response {
    let Some((_, body)) = EXAMPLES.iter().find(|(name, _)| *name == file) else {
        return (StatusCode::NOT_FOUND, "no such example page\n").into_response();
    };
    let kind = match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "text/javascript; charset=utf-8",
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, EXAMPLE_CSP),
        ],
        *body,
    )
        .into_response()
}

/// Whether the request carries the admin token; a 401 otherwise. Anyone
/// without it learns nothing, not even whether a pool exists.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (&shared.config.admin_token, presented) {
        (Some(want), Some(got)) if bool::from(want.as_bytes().ct_eq(got.as_bytes())) => Ok(()),
        _ => Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "this API needs the server's admin token: Authorization: Bearer <token> (signal-server --admin-token-file)".to_owned(),
        }),
    }
}

/// `GET /metrics`: Prometheus text, for an administrator (the admin token).
async fn metrics(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&shared, &headers)?;
    let now = {
        let inner = shared.lock();
        crate::metrics::Now {
            connections: inner.clients.len(),
            peers: inner.registry.len(),
            pools: inner.registry.pool_count(),
        }
    };
    let text = crate::metrics::render(now, shared.counters(), &shared.fan_out);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `GET /api/pools?after=NAME&limit=N`: pools in name order with their
/// member counts, a page at a time, for an administrator.
async fn pools(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Json<PoolsResponse>, ApiError> {
    authorize(&shared, &headers)?;
    let limit = q.limit()?;
    // Only the page is built under the lock; it is encoded after.
    let (pools, next) = shared.lock().registry.pool_page(q.after.as_deref(), limit);
    Ok(Json(PoolsResponse { pools, next }))
}

/// `GET /api/pools/{name}?after=ID&limit=N`: one pool's members in id order,
/// a page at a time, for an administrator.
async fn pool_members(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<MemberPage>, ApiError> {
    authorize(&shared, &headers)?;
    let limit = q.limit()?;
    let after = q
        .after
        .as_deref()
        .map(|s| s.parse::<uuid::Uuid>().map(PeerId))
        .transpose()
        .map_err(|_| {
            ApiError::bad_request("after must be a peer id (the previous page's next)".to_owned())
        })?;
    let page = shared.lock().registry.member_page(&name, after, limit);
    page.map(Json).ok_or_else(|| ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: format!("no pool {name:?} has members on this server"),
    })
}

async fn ws_upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    State(shared): State<Arc<Shared>>,
) -> impl IntoResponse {
    ws.max_message_size(READ_LIMIT)
        .max_frame_size(READ_LIMIT)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            let span = info_span!("client", %addr, peer = field::Empty, pool = field::Empty);
            let tracker = shared.tracker.clone();
            tracker.track_future(connection(socket, shared).instrument(span))
        })
}

/// Applies each set of revocation lists the operator loads, until the
/// server stops.
async fn revocations(shared: Arc<Shared>, mut lists: watch::Receiver<Vec<Revocations>>) {
    loop {
        let current = lists.borrow_and_update().clone();
        for list in current {
            shared.lock().revoke(&shared.config.admission, list);
        }
        tokio::select! {
            () = shared.stop.cancelled() => return,
            changed = lists.changed() => if changed.is_err() { return },
        }
    }
}

/// Every heartbeat: removes the members silent for too long, ends their
/// connections (no close frame: they are not reading) and announces them.
async fn sweep(shared: Arc<Shared>) {
    let heartbeat = shared.config.heartbeat;
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut inner = shared.lock();
        for (id, pool) in inner.registry.expire(Instant::now(), heartbeat) {
            info!(
                peer = %id.short(),
                %pool,
                "no frame for {MISSED_HEARTBEATS} heartbeats; removing the peer"
            );
            bump(&shared.counters().clients_expired);
            inner.forget(id, &pool);
        }
    }
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The client closed it, or the socket failed.
    Closed,
    /// The client sent something refused: error message, then close 1008.
    /// `drained`: false when the WebSocket layer can no longer read (an
    /// over-limit frame), so the close reply cannot be awaited.
    Fatal {
        code: ErrorCode,
        message: String,
        drained: bool,
    },
    /// The server dropped it (silent): no goodbye, the socket is dropped.
    Kicked,
    /// A frame to it could not be written within a heartbeat: it stopped
    /// reading. No goodbye, the socket is dropped.
    Slow,
    /// The server is stopping: `going_away`, then close 1001.
    Shutdown,
}

impl End {
    fn fatal(code: ErrorCode, message: impl Into<String>) -> Self {
        End::Fatal {
            code,
            message: message.into(),
            drained: true,
        }
    }

    fn refused(e: &DecodeError) -> Self {
        let code = match e {
            DecodeError::WrongVersion { .. } => ErrorCode::WrongVersion,
            _ => ErrorCode::BadMessage,
        };
        End::fatal(code, e.to_string())
    }

    fn reason(&self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Fatal { .. } => "refused frame",
            End::Kicked => "dropped by the server",
            End::Slow => "not reading",
            End::Shutdown => "server shutdown",
        }
    }
}

/// Seconds since the Unix epoch (0 on a clock before it).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One WebSocket from upgrade to close. Runs inside the `client` span.
async fn connection(socket: WebSocket, shared: Arc<Shared>) {
    let (mut sink, mut stream) = socket.split();
    // A nonce for this connection alone: the hello's proof signs it, so a
    // hello captured elsewhere is worthless here.
    let nonce = jobmesh_identity::random_nonce(CHALLENGE_BYTES);
    let challenge = ServerMsg::Challenge {
        nonce: nonce.clone(),
    };
    // Nobody kicks a socket before its hello; a client that does not read
    // its challenge within a heartbeat is dropped as slow.
    let no_kick = CancellationToken::new();
    bump(&shared.counters().frames_out);
    if let Err(end) = send_text(&mut sink, &challenge, &no_kick, shared.config.heartbeat).await {
        return close(sink, stream, end).await;
    }
    let hello = match await_hello(&mut stream, &shared).await {
        Ok(h) => h,
        Err(end) => return close(sink, stream, end).await,
    };
    if let Err(e) = hello.verify(&nonce) {
        bump(&shared.counters().rejected_frames);
        info!(peer = %hello.peer_id.short(), error = %e, "hello refused: its proof of identity does not verify");
        return close(sink, stream, End::fatal(ErrorCode::BadProof, e.to_string())).await;
    }
    let revoked = shared.lock().revoked.get(&hello.pool).cloned();
    if let Err(why) = shared
        .config
        .admission
        .check(&hello, unix_now(), revoked.as_deref())
    {
        bump(&shared.counters().not_admitted);
        info!(peer = %hello.peer_id.short(), pool = %hello.pool, %why, "hello refused: not a member");
        return close(sink, stream, End::fatal(ErrorCode::NotAdmitted, why)).await;
    }
    let span = Span::current();
    span.record("peer", field::display(hello.peer_id.short()));
    span.record("pool", field::display(&hello.pool));
    let me = hello.peer_id;
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel(shared.config.client_queue);
    let kick = CancellationToken::new();
    let joined = {
        let mut inner = shared.lock();
        // The hello proved the key, so this is the same peer again: its new
        // connection replaces the old one (which may be dead without the
        // server having noticed yet, or held by a squatter no more).
        if let Some(old) = inner.clients.remove(&me) {
            old.kick.cancel();
            info!("a new connection of this peer replaces its old one");
        }
        if let Some(pool) = inner.registry.leave(&me) {
            inner.changed(&pool);
        }
        inner
            .registry
            .join(Instant::now(), me, &hello.join())
            .map(|()| {
                if let Some(list) = inner.revoked.get(&hello.pool) {
                    // Queued first: it goes out right after the welcome.
                    let _ = tx.try_send(ServerMsg::Revocations {
                        list: Box::new((**list).clone()),
                    });
                }
                let client = Client {
                    conn,
                    tx,
                    kick: kick.clone(),
                    pool: hello.pool.clone(),
                    credential: hello.credential.clone(),
                };
                inner.clients.insert(me, client);
                let view = inner
                    .heads
                    .entry(hello.pool.clone())
                    .or_insert_with(|| watch::Sender::new((0, Instant::now())))
                    .subscribe();
                inner.changed(&hello.pool);
                view
            })
    };
    let mut view = match joined {
        Ok(view) => view,
        Err(e) => {
            let code = match e {
                JoinError::PoolFull { .. } => ErrorCode::PoolFull,
                JoinError::Duplicate(_) => ErrorCode::DuplicatePeer,
                JoinError::NameTaken { .. } => ErrorCode::NameTaken,
            };
            info!(error = %e, "hello refused");
            return close(sink, stream, End::fatal(code, e.to_string())).await;
        }
    };
    info!(
        name = %hello.name,
        capabilities = hello.capabilities.len(),
        "peer joined"
    );
    let welcome = ServerMsg::Welcome {
        pool: hello.pool.clone(),
        heartbeat_ms: u64::try_from(shared.config.heartbeat.as_millis()).unwrap_or(u64::MAX),
        ice_servers: shared.config.ice.for_peer(&hello.peer_id, unix_now()),
    };
    // The welcome goes first: relays queued for this peer meanwhile wait in
    // `rx`, and the view follows from `serve`.
    let client = ClientIo {
        rx: &mut rx,
        view: &mut view,
        kick: &kick,
        me,
        hello: &hello,
    };
    bump(&shared.counters().frames_out);
    let end = match send_text(&mut sink, &welcome, &kick, shared.config.heartbeat).await {
        Ok(()) => serve(&mut sink, &mut stream, client, &shared).await,
        Err(end) => end,
    };
    if matches!(end, End::Slow) {
        warn!("a frame could not be written within a heartbeat; dropping the client");
        bump(&shared.counters().clients_dropped_slow);
    }
    let announce = !matches!(end, End::Shutdown);
    shared.lock().depart(me, conn, announce);
    info!(reason = end.reason(), "peer left");
    close(sink, stream, end).await;
}

/// Waits for the first data frame, which must be a valid hello.
async fn await_hello(stream: &mut Stream, shared: &Shared) -> Result<Hello, End> {
    let timeout = shared.config.hello_timeout;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        let frame = tokio::select! {
            () = shared.stop.cancelled() => return Err(End::Shutdown),
            () = &mut deadline => {
                return Err(End::fatal(
                    ErrorCode::HelloTimeout,
                    format!(
                        "no hello within {} ms of connecting; send hello first",
                        timeout.as_millis()
                    ),
                ));
            }
            f = stream.next() => f,
        };
        match read_frame(frame, shared)? {
            None => continue,
            Some(ClientMsg::Hello(h)) => return Ok(h),
            Some(_) => {
                bump(&shared.counters().rejected_frames);
                return Err(End::fatal(
                    ErrorCode::ExpectedHello,
                    "the first message must be a hello",
                ));
            }
        }
    }
}

/// Turns one read from the socket into a message. `Ok(None)`: a control
/// frame, nothing to do. Counts, taps and decodes data frames.
fn read_frame(
    frame: Option<Result<Message, axum::Error>>,
    shared: &Shared,
) -> Result<Option<ClientMsg>, End> {
    let counters = shared.counters();
    let text = match frame {
        None | Some(Ok(Message::Close(_))) => return Err(End::Closed),
        Some(Err(e)) => return Err(read_error(e, counters)),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Ok(None),
        Some(Ok(Message::Binary(b))) => {
            bump(&counters.frames_in);
            counters
                .bytes_in
                .fetch_add(b.len() as u64, Ordering::Relaxed);
            bump(&counters.rejected_frames);
            return Err(End::refused(&DecodeError::Binary));
        }
        Some(Ok(Message::Text(t))) => t,
    };
    bump(&counters.frames_in);
    counters
        .bytes_in
        .fetch_add(text.len() as u64, Ordering::Relaxed);
    if let Some(tap) = &shared.config.tap {
        // Overflow: dropped and counted; the tap never slows the server.
        if tap.try_send(text.as_bytes().to_vec()).is_err() {
            bump(&counters.tap_dropped);
        }
    }
    ClientMsg::decode(text.as_bytes()).map(Some).map_err(|e| {
        bump(&counters.rejected_frames);
        End::refused(&e)
    })
}

/// A read the WebSocket layer refused. Over-limit frames, invalid UTF-8 and
/// protocol violations are the client's fault and get an error; anything
/// else is a dead socket.
fn read_error(e: axum::Error, counters: &Counters) -> End {
    use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
    let Ok(e) = e.into_inner().downcast::<WsError>() else {
        return End::Closed;
    };
    let message = match *e {
        WsError::Capacity(CapacityError::MessageTooLong { size, .. }) => DecodeError::TooLarge {
            size,
            max: MAX_SIGNAL_MESSAGE,
        }
        .to_string(),
        WsError::Utf8(_) => "a text frame was not valid UTF-8".to_owned(),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return End::Closed,
        WsError::Protocol(p) => format!("WebSocket protocol error: {p}"),
        _ => return End::Closed,
    };
    bump(&counters.rejected_frames);
    End::Fatal {
        code: ErrorCode::BadMessage,
        message,
        drained: false,
    }
}

/// What a joined client's task reads besides its socket.
struct ClientIo<'a> {
    /// Relays for it.
    rx: &'a mut mpsc::Receiver<ServerMsg>,
    /// Its pool's head version.
    view: &'a mut watch::Receiver<Head>,
    kick: &'a CancellationToken,
    me: PeerId,
    /// The hello it was admitted with (a capabilities update is admitted
    /// as that hello with the new capabilities would be).
    hello: &'a Hello,
}

/// The main loop of a joined client. Order of priority: stop, kick, relays
/// for it, its next frame, its view (a page at a time, so relays and reads
/// interleave with a long catch-up), then the ping. A client that floods us
/// only delays its own view, and is slowed by TCP rather than growing our
/// queues.
async fn serve(sink: &mut Sink, stream: &mut Stream, io: ClientIo<'_>, shared: &Shared) -> End {
    let ClientIo {
        rx,
        view,
        kick,
        me,
        hello,
    } = io;
    let heartbeat = shared.config.heartbeat;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The client has been told everything up to `cursor`; 0: nothing yet.
    let mut cursor = 0;
    let mut budget = RelayBudget::new(shared.config.relay_rate, Instant::now());
    // Fresh TURN credentials before the welcome's expire (never without TURN).
    let renew_every = shared.config.ice.renew_every();
    let mut renew = tokio::time::interval_at(
        tokio::time::Instant::now() + renew_every.unwrap_or(Duration::MAX / 4),
        renew_every.unwrap_or(Duration::MAX / 4),
    );
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut behind = true;
    // When the oldest change this client has not been shown happened.
    let mut changed_at: Option<Instant> = None;
    // No view page before this: the end of the interval after the last update.
    let rest = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(rest);
    loop {
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return End::Shutdown,
            () = kick.cancelled() => return End::Kicked,
            out = rx.recv() => {
                // `None` cannot happen while the connection holds its entry;
                // treat it as being dropped.
                let Some(out) = out else { return End::Kicked };
                if let ServerMsg::Error { code: code @ ErrorCode::NotAdmitted, message } = out {
                    // Its credential was revoked: the close says so.
                    return End::fatal(code, message);
                }
                bump(&shared.counters().frames_out);
                if let Err(end) = send_text(sink, &out, kick, heartbeat).await {
                    return end;
                }
            }
            _ = renew.tick(), if renew_every.is_some() => {
                let fresh = ServerMsg::IceServers {
                    ice_servers: shared.config.ice.for_peer(&hello.peer_id, unix_now()),
                };
                bump(&shared.counters().frames_out);
                if let Err(end) = send_text(sink, &fresh, kick, heartbeat).await {
                    return end;
                }
            }
            frame = stream.next() => {
                // Any frame, pongs included, proves the client alive.
                shared.lock().registry.touch(Instant::now(), &me);
                match read_frame(frame, shared) {
                    Err(end) => return end,
                    Ok(None) => {}
                    Ok(Some(msg)) => {
                        if let Some(end) = handle(sink, msg, me, hello, kick, shared, &mut budget).await {
                            return end;
                        }
                    }
                }
            }
            () = &mut rest, if behind => {
                let page = shared.lock().registry.page(&me, cursor, VIEW_PAGE_BYTES);
                let Some(page) = page else {
                    behind = false;
                    continue;
                };
                cursor = page.cursor;
                behind = !page.synced;
                if page.synced {
                    // The client's view holds every change up to now.
                    if let Some(since) = changed_at.take() {
                        shared.fan_out.observe(since.elapsed().as_secs_f64());
                    }
                    let c = &shared.config;
                    let share = Duration::from_secs(1).mul_f64(page.pool_size as f64 / f64::from(c.view_rate));
                    rest.as_mut().reset(tokio::time::Instant::now() + c.view_interval.max(share));
                }
                let Some(json) = page.json else { continue };
                bump(&shared.counters().frames_out);
                if let Err(end) = send(sink, Message::Text(Utf8Bytes::from(json)), kick, heartbeat).await {
                    return end;
                }
            }
            changed = view.changed(), if !behind => {
                // The pool's watch is gone only with its last member: this
                // client has been removed.
                if changed.is_err() {
                    return End::Kicked;
                }
                changed_at.get_or_insert(view.borrow_and_update().1);
                behind = true;
            }
            _ = ping.tick() => {
                let ping = Message::Ping(Default::default());
                if let Err(end) = send(sink, ping, kick, heartbeat).await {
                    return end;
                }
            }
        }
    }
}

/// Acts on one message of a joined peer; `Some` ends the connection.
async fn handle(
    sink: &mut Sink,
    msg: ClientMsg,
    me: PeerId,
    hello: &Hello,
    kick: &CancellationToken,
    shared: &Shared,
    budget: &mut RelayBudget,
) -> Option<End> {
    let counters = shared.counters();
    match msg {
        ClientMsg::Hello(_) => {
            bump(&counters.rejected_frames);
            Some(End::fatal(
                ErrorCode::ExpectedHello,
                "hello may be sent only once per connection",
            ))
        }
        ClientMsg::Stats { stats } => {
            let mut inner = shared.lock();
            if let Some(pool) = inner.registry.update_stats(&me, stats).map(str::to_owned) {
                inner.changed(&pool);
            }
            None
        }
        ClientMsg::Capabilities { capabilities } => {
            let now_as = Hello {
                capabilities: capabilities.clone(),
                ..hello.clone()
            };
            let revoked = shared.lock().revoked.get(&hello.pool).cloned();
            if let Err(why) = shared
                .config
                .admission
                .check(&now_as, unix_now(), revoked.as_deref())
            {
                bump(&counters.rejected_frames);
                info!(%why, "capabilities refused");
                let err = ServerMsg::Error {
                    code: ErrorCode::CapabilitiesRefused,
                    message: format!("capabilities refused, the pool sees the ones before: {why}"),
                };
                bump(&counters.frames_out);
                return send_text(sink, &err, kick, shared.config.heartbeat)
                    .await
                    .err();
            }
            info!(capabilities = capabilities.len(), "capabilities changed");
            let mut inner = shared.lock();
            if let Some(pool) = inner
                .registry
                .update_capabilities(&me, capabilities)
                .map(str::to_owned)
            {
                inner.changed(&pool);
            }
            None
        }
        ClientMsg::Relay { to, signal } => {
            let now = Instant::now();
            if !budget.take(now) {
                bump(&counters.relays_rate_limited);
                if !budget.tell(now) {
                    return None;
                }
                let err = ServerMsg::Error {
                    code: ErrorCode::RateLimited,
                    message: format!(
                        "more than {} relays per second: relays are being dropped; slow down",
                        shared.config.relay_rate
                    ),
                };
                bump(&shared.counters().frames_out);
                return send_text(sink, &err, kick, shared.config.heartbeat)
                    .await
                    .err();
            }
            let refused = shared.lock().relay(me, to, signal);
            let err = match refused {
                Ok(()) => {
                    bump(&counters.relays);
                    return None;
                }
                Err(RelayRefused::Unknown) => {
                    debug!(to = %to.short(), "relay to a peer outside the pool refused");
                    ServerMsg::Error {
                        code: ErrorCode::UnknownPeer,
                        message: format!(
                            "peer {to} is not in your pool; relays stay within a pool"
                        ),
                    }
                }
                Err(RelayRefused::Busy) => {
                    bump(&counters.relays_dropped_busy);
                    debug!(to = %to.short(), "relay dropped: the recipient's queue is full");
                    ServerMsg::Error {
                        code: ErrorCode::PeerBusy,
                        message: format!(
                            "peer {to} has {} handshake messages waiting; this one was dropped, try again later",
                            shared.config.client_queue
                        ),
                    }
                }
            };
            bump(&shared.counters().frames_out);
            send_text(sink, &err, kick, shared.config.heartbeat)
                .await
                .err()
        }
    }
}

/// Sends one frame, giving up when the client is kicked or the frame cannot
/// be written within `limit` (a client that cannot take a frame within a
/// heartbeat is treated as gone).
async fn send(
    sink: &mut Sink,
    msg: Message,
    kick: &CancellationToken,
    limit: Duration,
) -> Result<(), End> {
    tokio::select! {
        biased;
        () = kick.cancelled() => Err(End::Kicked),
        sent = tokio::time::timeout(limit, sink.send(msg)) => match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Closed),
            Err(_) => Err(End::Slow),
        }
    }
}

async fn send_text(
    sink: &mut Sink,
    msg: &ServerMsg,
    kick: &CancellationToken,
    limit: Duration,
) -> Result<(), End> {
    send(
        sink,
        Message::Text(Utf8Bytes::from(encode(msg))),
        kick,
        limit,
    )
    .await
}

/// Ends a connection: the error message when there is one, then the close
/// frame, then (bounded) the client's close reply, then the socket is dropped.
async fn close(mut sink: Sink, mut stream: Stream, end: End) {
    let never = CancellationToken::new();
    let (code, reason, drained) = match end {
        // A client that closed or failed needs nothing more; a kicked one is
        // not reading, so a close frame would only wait.
        End::Closed | End::Kicked | End::Slow => return,
        End::Fatal {
            code,
            message,
            drained,
        } => {
            debug!(?code, %message, "refusing the client");
            let msg = ServerMsg::Error { code, message };
            let _ = send_text(&mut sink, &msg, &never, CLOSE_TIMEOUT).await;
            (CLOSE_POLICY, "protocol error", drained)
        }
        End::Shutdown => {
            let msg = ServerMsg::Error {
                code: ErrorCode::GoingAway,
                message: "signal-server is shutting down".into(),
            };
            let _ = send_text(&mut sink, &msg, &never, CLOSE_TIMEOUT).await;
            (CLOSE_GOING_AWAY, "server shutting down", true)
        }
    };
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    if send(
        &mut sink,
        Message::Close(Some(frame)),
        &never,
        CLOSE_TIMEOUT,
    )
    .await
    .is_err()
    {
        return;
    }
    // Wait for the client's close reply (or its socket closing) so that the
    // socket is not dropped with unread input, which would reset the
    // connection and could discard the error before the client reads it.
    // When the WebSocket layer can no longer read, just give the client the
    // same time to read and hang up.
    let linger = async {
        if drained {
            while let Some(Ok(_)) = stream.next().await {}
        } else {
            std::future::pending::<()>().await;
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, linger).await;
}
