//! The signalling wire: peer ⇄ `signal-server`, JSON text frames on a WebSocket.
//!
//! ```text
//! peer                         signal-server
//!  | -- hello ------------------> |   first frame, within HELLO_TIMEOUT
//!  | <------------------ welcome  |   snapshot of the pool (or error + close)
//!  | <-- peer_joined / peer_left / stats_changed (deltas, in order)
//!  | -- stats ------------------> |   on change, coalesced by the peer
//!  | -- relay {to, signal} -----> | -> relayed {from, signal} to `to`, same pool only
//!  | <-------------------- error  |   then close, for a bad frame
//! ```
//!
//! The server pings every heartbeat interval (WebSocket ping); a peer silent for
//! [`MISSED_HEARTBEATS`] intervals is dropped and its departure broadcast.

use serde::{Deserialize, Serialize};

use crate::types::{check_capabilities, check_name, check_slots};
use crate::{decode_tagged, Capability, DecodeError, PeerId, PeerInfo, Stats, PROTOCOL_VERSION};

/// Largest frame either side accepts on the signalling socket. An SDP with a
/// handful of candidates is 1–3 KiB; 64 KiB leaves room and still refuses
/// anything that looks like a payload.
pub const MAX_SIGNAL_MESSAGE: usize = 64 * 1024;
/// Largest frame a peer accepts from the server. A `welcome` lists every
/// member of the pool (~160 B each), so it outgrows 64 KiB at ~400 members;
/// 4 MiB covers ~25,000.
pub const MAX_SERVER_MESSAGE: usize = 4 * 1024 * 1024;
/// Largest SDP or candidate string relayed.
pub const MAX_SDP_LEN: usize = 32 * 1024;
/// Heartbeat intervals without any frame before a peer is dropped.
pub const MISSED_HEARTBEATS: u32 = 3;
/// Default heartbeat interval, in milliseconds.
pub const DEFAULT_HEARTBEAT_MS: u64 = 5_000;
/// A socket must send its hello within this long, in milliseconds.
pub const HELLO_TIMEOUT_MS: u64 = 10_000;

/// The first frame a peer sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The peer's id.
    pub peer_id: PeerId,
    /// Human name.
    pub name: String,
    /// Pool to join.
    pub pool: String,
    /// What it can run (may be empty: a submit-only peer).
    pub capabilities: Vec<Capability>,
    /// How many jobs it runs at once.
    pub slots: u32,
}

/// Handshake messages relayed between two peers, opaque to the server apart
/// from their size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Handshake {
    /// An SDP offer (full, after ICE gathering).
    Offer {
        /// The SDP text.
        sdp: String,
    },
    /// An SDP answer.
    Answer {
        /// The SDP text.
        sdp: String,
    },
    /// A trickled ICE candidate.
    Candidate {
        /// The candidate line.
        candidate: String,
        /// Media id it belongs to.
        sdp_mid: Option<String>,
        /// Media line index it belongs to.
        sdp_mline_index: Option<u16>,
    },
}

impl Handshake {
    fn validate(&self) -> Result<(), DecodeError> {
        let len = match self {
            Handshake::Offer { sdp } | Handshake::Answer { sdp } => sdp.len(),
            Handshake::Candidate {
                candidate, sdp_mid, ..
            } => candidate.len() + sdp_mid.as_ref().map_or(0, |m| m.len()),
        };
        if len > MAX_SDP_LEN {
            return Err(DecodeError::Invalid {
                field: "signal",
                reason: format!("{len} bytes, at most {MAX_SDP_LEN}"),
            });
        }
        Ok(())
    }
}

/// Peer → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Join a pool. Must be the first frame, and only once.
    Hello(Hello),
    /// My stats changed.
    Stats {
        /// The new stats.
        stats: Stats,
    },
    /// Relay a handshake message to another peer of my pool.
    Relay {
        /// Recipient.
        to: PeerId,
        /// What to relay.
        signal: Handshake,
    },
}

const CLIENT_TYPES: &[&str] = &["hello", "stats", "relay"];

/// Server → peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Answer to hello: who is in the pool now (not including the peer itself).
    Welcome {
        /// The pool joined.
        pool: String,
        /// Everyone else in it.
        peers: Vec<PeerInfo>,
        /// The server's heartbeat interval, in milliseconds.
        heartbeat_ms: u64,
    },
    /// A peer joined the pool.
    PeerJoined {
        /// Who.
        peer: PeerInfo,
    },
    /// A peer left the pool (closed, timed out, or dropped).
    PeerLeft {
        /// Who.
        peer_id: PeerId,
    },
    /// A peer reported new stats.
    StatsChanged {
        /// Who.
        peer_id: PeerId,
        /// Its new stats.
        stats: Stats,
    },
    /// A handshake message from another peer of the pool.
    Relayed {
        /// Sender.
        from: PeerId,
        /// The message.
        signal: Handshake,
    },
    /// Something the peer sent was refused. Fatal errors are followed by a close.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// What went wrong and what to do.
        message: String,
    },
}

const SERVER_TYPES: &[&str] = &[
    "welcome",
    "peer_joined",
    "peer_left",
    "stats_changed",
    "relayed",
    "error",
];

/// Error codes the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame could not be decoded (see message). Fatal.
    BadMessage,
    /// Hello carried an unsupported protocol version. Fatal.
    WrongVersion,
    /// The first frame was not a hello, or a second hello came. Fatal.
    ExpectedHello,
    /// No hello within the deadline. Fatal.
    HelloTimeout,
    /// The pool is full. Fatal.
    PoolFull,
    /// Another live socket already uses this peer id. Fatal.
    DuplicatePeer,
    /// Relay target is not in the sender's pool. Not fatal.
    UnknownPeer,
    /// The server is shutting down.
    GoingAway,
}

impl ClientMsg {
    /// Decodes and validates one frame from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let msg: ClientMsg = decode_tagged(bytes, MAX_SIGNAL_MESSAGE, CLIENT_TYPES)?;
        match &msg {
            ClientMsg::Hello(h) => {
                if h.version != PROTOCOL_VERSION {
                    return Err(DecodeError::WrongVersion {
                        got: h.version,
                        want: PROTOCOL_VERSION,
                    });
                }
                check_name("name", &h.name)?;
                check_name("pool", &h.pool)?;
                check_capabilities(&h.capabilities)?;
                check_slots(h.slots)?;
            }
            ClientMsg::Stats { stats } => stats.validate()?,
            ClientMsg::Relay { signal, .. } => signal.validate()?,
        }
        Ok(msg)
    }
}

impl ServerMsg {
    /// Decodes and validates one frame from the server.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let msg: ServerMsg = decode_tagged(bytes, MAX_SERVER_MESSAGE, SERVER_TYPES)?;
        match &msg {
            ServerMsg::Welcome { peers, .. } => {
                for p in peers {
                    check_capabilities(&p.capabilities)?;
                }
            }
            ServerMsg::PeerJoined { peer } => check_capabilities(&peer.capabilities)?,
            ServerMsg::Relayed { signal, .. } => signal.validate()?,
            _ => {}
        }
        Ok(msg)
    }
}

/// Encodes any wire message as JSON text. Serialising these types cannot fail
/// (string keys, no maps with non-string keys), so this returns a `String`.
pub fn encode<T: Serialize>(msg: &T) -> String {
    // Invariant: all wire types are plain structs/enums with string keys.
    serde_json::to_string(msg).unwrap_or_else(|e| format!("{{\"encode_error\":\"{e}\"}}"))
}
