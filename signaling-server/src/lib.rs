//! jobmesh's discovery server. Its one job: tell the peers of each pool who
//! else is there (what they can run, how busy they are), and relay WebRTC
//! handshake messages between two peers of the same pool. It never carries a
//! job payload: the signalling wire has no message for one, and frames are
//! capped at `MAX_SIGNAL_MESSAGE` (64 KiB).
//!
//! * [`Registry`]: pure pools → members (info, stats, last seen). No I/O and
//!   no clock: every method that needs the time takes `now: Instant`.
//! * [`run`]: the axum server around it, until a `CancellationToken` is
//!   cancelled. `GET /ws` (the WebSocket), `GET /healthz`, `GET /api/pools`.
//!
//! # Tasks
//!
//! * The axum accept loop (stopped by the token, graceful).
//! * One task per WebSocket, in a `TaskTracker`: waits for the hello (within
//!   `hello_timeout`), then loops over, in priority order, shutdown, its kick
//!   token, its outbound queue, its ping timer (every `heartbeat`) and its
//!   next frame. Replies to its own client (welcome, `unknown_peer`, errors)
//!   are written directly; everything else arrives through its queue.
//! * One sweep task: every `heartbeat`, removes the members silent (no frame
//!   at all, pongs included) for more than `MISSED_HEARTBEATS` heartbeats,
//!   kicks their connections and announces `peer_left`.
//!
//! # Channels, bounds and overflow policies
//!
//! * Per-client outbound queue: `tokio::sync::mpsc`, [`ServerConfig::client_queue`]
//!   messages (default [`CLIENT_QUEUE`]). Fan-out (`peer_joined`, `peer_left`,
//!   `stats_changed`, `relayed`) only `try_send`s: a full queue drops that
//!   client at once (connection closed without a close frame, removed from
//!   its pool, `peer_left` broadcast), counted in
//!   [`Counters::clients_dropped_slow`] and logged at warn. The server never
//!   waits for one client.
//! * Socket writes: each frame must be written within one heartbeat, or the
//!   connection ends as dead.
//! * Tap ([`ServerConfig::tap`], a test hook): `try_send` of every text frame
//!   received; overflow drops the copy and counts it in
//!   [`Counters::tap_dropped`].
//! * Frames: axum reads whole frames up to 2 × `MAX_SIGNAL_MESSAGE` and
//!   `ClientMsg::decode` refuses anything over `MAX_SIGNAL_MESSAGE`; bigger
//!   frames are refused from their header, before their payload is buffered.
//!   Either way the client gets an `error` naming the size and the limit
//!   (best effort for the bigger ones), then a close.
//! * Pools hold at most [`ServerConfig::max_peers_per_pool`] members
//!   (default [`MAX_PEERS_PER_POOL`]); one more gets `pool_full`.
//!
//! # Shared state
//!
//! The registry and the clients' queue senders sit behind one
//! `std::sync::Mutex`, never held across an `.await`; each critical section is
//! a few map operations and `try_send`s.
//!
//! # Errors and shutdown
//!
//! A frame that cannot be decoded, a binary frame, a first frame that is not a
//! hello or a second hello gets `error{bad_message | wrong_version |
//! expected_hello}` with the decoder's text, then close 1008. On cancellation
//! every connection gets `error{going_away}` and close 1001, and [`run`]
//! returns once all connection tasks ended (bounded by [`SHUTDOWN_GRACE`]
//! per phase).

mod registry;
mod server;

pub use registry::{JoinError, PoolSummary, Registry, MAX_PEERS_PER_POOL};
pub use server::{run, Counters, ServerConfig, CLIENT_QUEUE, SHUTDOWN_GRACE};
