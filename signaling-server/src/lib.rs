//! jobmesh's discovery server. Its one job: tell the peers of each pool who
//! else is there (what they can run, how busy they are), and relay WebRTC
//! handshake messages between two peers of the same pool. It never carries a
//! job payload: the signalling wire has no message for one, and frames are
//! capped at `MAX_SIGNAL_MESSAGE` (64 KiB).
//!
//! * [`Registry`]: pure pools → members (info, stats, last seen) and the
//!   versioned view clients read in pages. No I/O and no clock: every
//!   method that needs the time takes `now: Instant`.
//! * [`run`]: the axum server around it, until a `CancellationToken` is
//!   cancelled. `GET /ws` (the WebSocket), `GET /healthz`, `GET /api/pools`.
//!
//! # Tasks
//!
//! * The axum accept loop (stopped by the token, graceful).
//! * One task per WebSocket, in a `TaskTracker`: waits for the hello (within
//!   `hello_timeout`), sends the welcome, then loops over, in priority order,
//!   shutdown, its kick token, its relay queue, its next frame, its view
//!   (one page per turn while it is behind its pool's head; otherwise a wait
//!   on the pool's head watch) and its ping timer (every `heartbeat`).
//! * One sweep task: every `heartbeat`, removes the members silent (no frame
//!   at all, pongs included) for more than `MISSED_HEARTBEATS` heartbeats,
//!   kicks their connections and wakes their pools.
//!
//! # Channels, bounds and overflow policies
//!
//! * The view: no queue. Each pool keeps each member once (under the
//!   version of its latest change) plus at most [`MAX_DEPARTURES`] recent
//!   departures; each client keeps a cursor. A change bumps the pool's head
//!   in a `tokio::sync::watch` (one value, never full). A client behind
//!   further than the departures reach is sent the pool afresh (`reset`).
//!   Pages are at most `VIEW_PAGE_BYTES` (16 KiB) of members plus one. A
//!   client gets at most one update per [`ServerConfig::view_interval`]
//!   (default [`VIEW_INTERVAL`], 50 ms), or per N / [`ServerConfig::view_rate`]
//!   seconds in a pool of N (default [`VIEW_RATE`], 20,000/s: 0.5 s at
//!   10,000 members), whichever is longer; the first change after a quiet
//!   spell goes out at once. So a burst of N joins costs each client a few
//!   pages rather than N frames, and fan-out work per second stays flat as
//!   a pool grows.
//! * Per-client relay queue: `tokio::sync::mpsc`, [`ServerConfig::client_queue`]
//!   handshake messages (default [`CLIENT_QUEUE`]). Overflow: the relay is
//!   dropped, counted in [`Counters::relays_dropped_busy`], and its sender
//!   gets `error{peer_busy}`; the recipient stays.
//! * Socket writes: each frame must be written within one heartbeat, or the
//!   client is dropped as not reading (counted in
//!   [`Counters::clients_dropped_slow`], logged at warn) and its pool is told.
//!   The server never waits for one client on behalf of another.
//! * WebSocket buffers: 4 KiB read buffer (grows for a larger frame), no
//!   write batching: a frame is written as it is sent.
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
//! The registry, the clients' relay senders and the pools' head watches sit
//! behind one `std::sync::Mutex`, never held across an `.await`; each
//! critical section is a few map operations, a `try_send`, or building one
//! page (a copy of at most ~16 KiB).
//!
//! # Errors and shutdown
//!
//! A frame that cannot be decoded, a binary frame, a first frame that is not a
//! hello or a second hello gets `error{bad_message | wrong_version |
//! expected_hello}` with the decoder's text, then close 1008. On cancellation
//! every connection gets `error{going_away}` and close 1001, and [`run`]
//! returns once all connection tasks ended (bounded by [`SHUTDOWN_GRACE`]
//! per phase).

mod admission;
mod backplane;
pub mod cluster;
pub mod ice;
pub mod limits;
mod metrics;
mod registry;
mod server;
pub mod tls;

pub use admission::Admission;
pub use registry::{JoinError, Page, PoolSummary, Registry, MAX_DEPARTURES, MAX_PEERS_PER_POOL};
pub use server::{
    run, Counters, ServerConfig, CLIENT_QUEUE, RELAY_RATE, SHUTDOWN_GRACE, VIEW_INTERVAL, VIEW_RATE,
};
