//! The signalling wire: peer ⇄ `signal-server`, JSON text frames on a WebSocket.
//!
//! ```text
//! peer                         signal-server
//!  | <---------------- challenge  |   first frame: a fresh random nonce
//!  | -- hello ------------------> |   within HELLO_TIMEOUT: key + proof over the nonce
//!  | <------------------ welcome  |   (or error + close)
//!  | <-- view {reset: true, peers, synced}  the pool, in pages
//!  | <-- view {peers, left, synced}         what changed since the last view
//!  | -- stats ------------------> |   on change, coalesced by the peer
//!  | -- relay {to, signal} -----> | -> relayed {from, signal} to `to`, same pool only
//!  | <-------------------- error  |   then close, for a bad frame
//! ```
//!
//! The pool view is a stream of [`ServerMsg::View`] pages, each at most
//! [`VIEW_PAGE_BYTES`] of members plus one. A page carries the *current*
//! description of every member that joined or changed since the previous
//! page (upserts) and the ids of members that left; a member changed twice
//! between two pages appears once, so a peer that reads slowly gets fewer,
//! fuller pages instead of a backlog. The first page after the welcome has
//! `reset`: the peer drops members not described again before `synced`.
//!
//! The hello proves that the peer holds the key its id is derived from: it
//! carries the public key and an Ed25519 signature (purpose
//! `SignalAdmission`) over [`admission_message`] of the server's nonce, the
//! pool and the id. A captured hello is worthless on another connection
//! (another nonce), and nobody can join under someone else's id.
//!
//! The server pings every heartbeat interval (WebSocket ping); a peer silent for
//! [`MISSED_HEARTBEATS`] intervals is dropped and its departure broadcast.

use jobmesh_identity::{Identity, PublicKey, Purpose, Signature};
use jobmesh_trust::{Credential, Revocations};
use serde::{Deserialize, Serialize};

use crate::types::{check_capabilities, check_name, check_slots};
use crate::{decode_tagged, Capability, DecodeError, PeerId, PeerInfo, Stats, PROTOCOL_VERSION};

/// Largest frame either side accepts on the signalling socket. An SDP with a
/// handful of candidates is 1–3 KiB; 64 KiB leaves room and still refuses
/// anything that looks like a payload.
pub const MAX_SIGNAL_MESSAGE: usize = 64 * 1024;
/// The server fills a [`ServerMsg::View`] page with members up to this many
/// bytes of JSON and then adds at most one more (~160 B for a typical member).
pub const VIEW_PAGE_BYTES: usize = 16 * 1024;
/// Largest frame a peer accepts from the server: a full view page plus one
/// member, which is at most what its hello and its stats (each under
/// [`MAX_SIGNAL_MESSAGE`]) describe.
pub const MAX_SERVER_MESSAGE: usize = VIEW_PAGE_BYTES + 2 * MAX_SIGNAL_MESSAGE;
/// Largest SDP or candidate string relayed.
pub const MAX_SDP_LEN: usize = 32 * 1024;
/// Heartbeat intervals without any frame before a peer is dropped.
pub const MISSED_HEARTBEATS: u32 = 3;
/// Default heartbeat interval, in milliseconds.
pub const DEFAULT_HEARTBEAT_MS: u64 = 5_000;
/// A socket must send its hello within this long, in milliseconds.
pub const HELLO_TIMEOUT_MS: u64 = 10_000;
/// Random bytes in a [`ServerMsg::Challenge`] nonce.
pub const CHALLENGE_BYTES: usize = 32;
/// Longest challenge nonce a peer signs, in characters.
const MAX_NONCE_LEN: usize = 128;

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
    /// Its public key: `peer_id` must be the id derived from it.
    pub key: PublicKey,
    /// Its signature of [`admission_message`] for this connection's nonce.
    pub proof: Signature,
    /// Its membership credential, for a closed pool (checked against the
    /// pool's key: `jobmesh_trust`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Box<Credential>>,
    /// Which members it wants in its view: those offering at least one of
    /// these capabilities (an empty list: none). Absent: every member. A
    /// large pool's peer that submits only some kinds of jobs, or none,
    /// need not learn of every worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<Vec<Capability>>,
}

/// What a peer asks of the signal-server when it joins: everything in its
/// hello but the proof, which is made afresh for each connection's nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// Human name.
    pub name: String,
    /// Pool to join.
    pub pool: String,
    /// What it can run (may be empty: a submit-only peer).
    pub capabilities: Vec<Capability>,
    /// How many jobs it runs at once.
    pub slots: u32,
    /// Its membership credential, for a closed pool.
    pub credential: Option<Credential>,
    /// Which members its view holds ([`Hello::view`]); None: all.
    pub view: Option<Vec<Capability>>,
}

impl Join {
    /// The hello of `identity` answering the challenge `nonce`.
    pub fn hello(&self, identity: &Identity, nonce: &str) -> Hello {
        let peer_id = identity.peer_id();
        Hello {
            version: PROTOCOL_VERSION,
            peer_id,
            name: self.name.clone(),
            pool: self.pool.clone(),
            capabilities: self.capabilities.clone(),
            slots: self.slots,
            key: identity.public(),
            proof: identity.sign(
                Purpose::SignalAdmission,
                &admission_message(nonce, &self.pool, &peer_id),
            ),
            credential: self.credential.clone().map(Box::new),
            view: self.view.clone(),
        }
    }
}

/// What a hello's proof signs: the server's nonce, the pool and the peer
/// id, each followed by a zero byte (none of them can hold one).
pub fn admission_message(nonce: &str, pool: &str, peer_id: &PeerId) -> Vec<u8> {
    let id = peer_id.to_string();
    let mut msg = Vec::with_capacity(nonce.len() + pool.len() + id.len() + 3);
    for part in [nonce, pool, &id] {
        msg.extend_from_slice(part.as_bytes());
        msg.push(0);
    }
    msg
}

/// Why a hello does not prove its peer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The id is not the one its key stands for.
    #[error("peer id {claimed} is not the id of the key {key} (which is {derived}): a peer id is derived from its key")]
    NotItsKey {
        /// The id the hello claimed.
        claimed: PeerId,
        /// The key it showed.
        key: PublicKey,
        /// The key's own id.
        derived: PeerId,
    },
    /// The signature does not verify for this connection's nonce.
    #[error("the hello's proof does not verify for this connection's challenge (a hello from another connection, or a wrong key)")]
    BadProof,
}

impl Hello {
    /// What it asks for, without its proof.
    pub fn join(&self) -> Join {
        Join {
            name: self.name.clone(),
            pool: self.pool.clone(),
            capabilities: self.capabilities.clone(),
            slots: self.slots,
            credential: self.credential.as_deref().cloned(),
            view: self.view.clone(),
        }
    }

    /// Checks that this hello proves its peer id on the connection whose
    /// challenge was `nonce`.
    pub fn verify(&self, nonce: &str) -> Result<(), AdmissionError> {
        let derived = self.key.peer_id();
        if derived != self.peer_id {
            return Err(AdmissionError::NotItsKey {
                claimed: self.peer_id,
                key: self.key,
                derived,
            });
        }
        let msg = admission_message(nonce, &self.pool, &self.peer_id);
        self.key
            .verify(Purpose::SignalAdmission, &msg, &self.proof)
            .map_err(|_| AdmissionError::BadProof)
    }
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
        /// A random tag of this dial, echoed by its answer, so an answer to
        /// an older offer (from before the dialler restarted under the same
        /// peer id) is told apart. 0: untagged.
        #[serde(default)]
        dial: u64,
    },
    /// An SDP answer.
    Answer {
        /// The SDP text.
        sdp: String,
        /// The tag of the offer it answers.
        #[serde(default)]
        dial: u64,
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
            Handshake::Offer { sdp, .. } | Handshake::Answer { sdp, .. } => sdp.len(),
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

/// The largest dial tag a jobmesh peer sends: 2^53 − 1, the largest
/// integer a JSON parser with double-precision numbers keeps exact.
/// (Receivers accept any u64 and echo it.)
pub const MAX_DIAL_TAG: u64 = (1 << 53) - 1;

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
    /// What I run changed (`peer capabilities add/remove`): the whole list
    /// as it is now. A closed pool's server checks it against the
    /// credential as it checked the hello's.
    Capabilities {
        /// Every capability this peer runs now.
        capabilities: Vec<Capability>,
    },
}

const CLIENT_TYPES: &[&str] = &["hello", "stats", "relay", "capabilities"];

/// Server → peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The first frame on every connection: the peer signs `nonce` in its
    /// hello. Base64url of [`CHALLENGE_BYTES`] random bytes.
    Challenge {
        /// Fresh for this connection.
        nonce: String,
    },
    /// Answer to hello. The pool follows as [`View`](Self::View) pages.
    Welcome {
        /// The pool joined.
        pool: String,
        /// The server's heartbeat interval, in milliseconds.
        heartbeat_ms: u64,
        /// STUN and TURN servers for this peer's links, TURN ones with
        /// short-lived credentials minted for it (none: the server has
        /// none to offer).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// A page of the pool view (never including the peer itself): see the
    /// module docs.
    View {
        /// Forget the view held so far: members not described by this page or
        /// the ones after it up to `synced` are gone. Set on the first page
        /// after a welcome, and when the peer fell too far behind.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reset: bool,
        /// Members that left since the previous page.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        left: Vec<PeerId>,
        /// Members that joined or changed since the previous page, each as
        /// it is now.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        peers: Vec<PeerInfo>,
        /// After this page the peer's view is the whole pool as the server
        /// held it when the page was made.
        synced: bool,
    },
    /// A handshake message from another peer of the pool.
    Relayed {
        /// Sender.
        from: PeerId,
        /// The message.
        signal: Handshake,
    },
    /// Fresh STUN and TURN servers for this peer, before the TURN
    /// credentials of the last welcome or of the last of these expire (at
    /// half their lifetime): links dialled or answered from then on use
    /// these. Links already open keep their allocation.
    IceServers {
        /// As in the welcome.
        ice_servers: Vec<IceServer>,
    },
    /// A closed pool's owner-signed revocation list: after the welcome when
    /// the pool has one, and whenever a newer one arrives. Each peer checks
    /// the owner's signature itself and closes its links to the members it
    /// withdraws.
    Revocations {
        /// The list.
        list: Box<Revocations>,
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
    "challenge",
    "welcome",
    "ice_servers",
    "view",
    "relayed",
    "revocations",
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
    /// Another live socket already uses this peer id. Fatal. (Since ids are
    /// proven, a second connection of the same key replaces the first; this
    /// code stays for older servers.)
    DuplicatePeer,
    /// The hello does not prove its peer id (see the message). Fatal.
    BadProof,
    /// The pool admits only members with a valid credential, and the hello
    /// has none (or one that is not valid: see the message). Fatal.
    NotAdmitted,
    /// Relay target is not in the sender's pool. Not fatal.
    UnknownPeer,
    /// Relay target has too many handshake messages waiting; the relay was
    /// dropped. Not fatal: try again later.
    PeerBusy,
    /// The sender relays faster than the server allows; relays are being
    /// dropped. Not fatal: sent at most once a second.
    RateLimited,
    /// The server is shutting down.
    GoingAway,
    /// Another live member of the pool has the hello's name. Fatal.
    NameTaken,
    /// A `capabilities` update the peer's credential does not cover (see
    /// the message). Not fatal: the pool keeps seeing what it ran before.
    CapabilitiesRefused,
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
                if let Some(view) = &h.view {
                    check_capabilities(view)?;
                }
                check_slots(h.slots)?;
            }
            ClientMsg::Stats { stats } => stats.validate()?,
            ClientMsg::Relay { signal, .. } => signal.validate()?,
            ClientMsg::Capabilities { capabilities } => check_capabilities(capabilities)?,
        }
        Ok(msg)
    }
}

/// Most ICE servers a welcome carries, and URLs per server.
pub const MAX_ICE_SERVERS: usize = 8;
/// Longest ICE server URL, username or credential, in bytes.
pub const MAX_ICE_FIELD: usize = 512;

/// One STUN or TURN server, as WebRTC's `RTCIceServer` has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port[?transport=udp|tcp]`, `turns:…`.
    pub urls: Vec<String>,
    /// TURN: the username (coturn's shared-secret scheme: `expiry:peer-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN: the password for `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl IceServer {
    /// Checks the limits and the URL schemes.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let bad = |reason: String| DecodeError::Invalid {
            field: "ice_servers",
            reason,
        };
        if self.urls.is_empty() || self.urls.len() > MAX_ICE_SERVERS {
            return Err(bad(format!("1 to {MAX_ICE_SERVERS} urls per server")));
        }
        for u in &self.urls {
            if u.len() > MAX_ICE_FIELD
                || !["stun:", "stuns:", "turn:", "turns:"]
                    .iter()
                    .any(|s| u.starts_with(s))
            {
                return Err(bad(format!("{u:.80?} is not a stun:, stuns:, turn: or turns: URL of at most {MAX_ICE_FIELD} bytes")));
            }
        }
        if [&self.username, &self.credential]
            .into_iter()
            .flatten()
            .any(|f| f.len() > MAX_ICE_FIELD)
        {
            return Err(bad(format!(
                "a username or credential over {MAX_ICE_FIELD} bytes"
            )));
        }
        Ok(())
    }
}

impl ServerMsg {
    /// Decodes and validates one frame from the server.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let msg: ServerMsg = decode_tagged(bytes, MAX_SERVER_MESSAGE, SERVER_TYPES)?;
        match &msg {
            ServerMsg::View { peers, .. } => {
                for p in peers {
                    check_capabilities(&p.capabilities)?;
                }
            }
            ServerMsg::Relayed { signal, .. } => signal.validate()?,
            ServerMsg::Welcome { ice_servers, .. } | ServerMsg::IceServers { ice_servers } => {
                if ice_servers.len() > MAX_ICE_SERVERS {
                    return Err(DecodeError::Invalid {
                        field: "ice_servers",
                        reason: format!("{} servers, at most {MAX_ICE_SERVERS}", ice_servers.len()),
                    });
                }
                ice_servers.iter().try_for_each(IceServer::validate)?;
            }
            ServerMsg::Challenge { nonce } if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN => {
                return Err(DecodeError::Invalid {
                    field: "nonce",
                    reason: format!("{} characters, 1 to {MAX_NONCE_LEN}", nonce.len()),
                });
            }
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
