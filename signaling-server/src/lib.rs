//! jobmesh's discovery server: who is in each pool, what each peer can run and
//! how busy it is, and a relay for WebRTC handshakes between two peers of the
//! same pool. It never carries a job payload: the wire has no message for one.
//!
//! * [`Registry`]: pure pools/members/stats/liveness, told the time.
//! * [`run`]: the axum server. One task per WebSocket; a sweep task every
//!   heartbeat; state behind a `std::sync::Mutex` never held across an await.
//!
//! Bounds: each client has an outbound queue of [`ServerConfig::client_queue`]
//! messages (default [`CLIENT_QUEUE`]); fan-out uses `try_send` and a full queue
//! drops that client (counted). A send to a socket that does not complete within
//! one heartbeat ends that connection. Frames above `MAX_SIGNAL_MESSAGE` get an
//! error naming the limit; pools hold at most `max_peers_per_pool`.

mod registry;
mod server;

pub use registry::{JoinError, PoolSummary, Registry, MAX_PEERS_PER_POOL};
pub use server::{run, Counters, ServerConfig, CLIENT_QUEUE};
