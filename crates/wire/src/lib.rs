//! jobmesh messages on both wires, and nothing else: no I/O, no clock.
//!
//! * [`signal`]: peer ⇄ `signal-server` over a WebSocket (text frames, JSON).
//!   Discovery (hello, pool snapshot, joined/left/stats deltas) and the relay of
//!   WebRTC handshake messages between two peers of the same pool.
//! * [`dc`]: peer ⇄ peer over a WebRTC data channel (JSON): job submit,
//!   accepted/rejected, progress, result.
//! * [`link`]: the handshake that opens every data channel: each side
//!   proves its key, bound to the connection's DTLS fingerprints.
//! * [`blob`]: binary payloads on the data channel: descriptions and the
//!   binary chunk frames that carry their bytes. The signalling wire has no message that can carry
//!   a job payload, by construction.
//! * [`param`]: the wording the built-in handlers' parameter errors share
//!   (JSON type names, echoed values cut short).
//!
//! Every decoder here checks the size first, then the JSON, then the fields, and
//! returns a [`DecodeError`] naming the problem. Decoding never panics, whatever
//! the bytes (proptest in `tests`).

pub mod blob;
pub mod dc;
mod error;
pub mod link;
pub mod param;
pub mod signal;
mod types;

pub use error::DecodeError;
pub use jobmesh_identity::PeerId;
pub use types::{Capability, PeerInfo, Stats, MAX_CAPABILITIES, MAX_NAME_LEN};

/// Version of both wires. A hello with any other version is refused.
/// 2: the pool view as paged, coalesced `view` frames (was: a welcome listing
/// the pool, then one message per change).
/// 3: workers send heartbeats (an empty `progress`) and submitters hold each
/// attempt to a lease.
/// 4: a worker keeps each result until the submitter says `received`, and
/// the jobs of a submitter whose link closed run on; it says `held` when a
/// link opens again, and a submit of a held job re-attaches to it.
/// 5: peer ids are derived from Ed25519 keys; the server opens with a
/// `challenge` and the hello carries the key and a proof over its nonce.
/// 6: every data channel opens with the link handshake ([`link`]): no job
/// message before both sides proved their keys over the connection.
/// 7: `handover` and `blob_files`: peers sharing a handover directory (one
/// host, one user) hand blobs over as files instead of chunks.
pub const PROTOCOL_VERSION: u32 = 7;

/// Reads the `"type"` tag of a JSON object and checks it is one of `known`,
/// so an unknown type gets its own error rather than a generic serde one.
fn decode_tagged<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    max: usize,
    known: &[&str],
) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::BadJson(e.to_string()))?;
    let ty = value
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or(DecodeError::MissingType)?;
    if !known.contains(&ty) {
        return Err(DecodeError::UnknownType(truncate(ty, 64)));
    }
    // A hello of another protocol version may lack fields of this one: its
    // version is the error to report, not a missing field.
    if ty == "hello" {
        if let Some(got) = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .filter(|v| *v != u64::from(PROTOCOL_VERSION))
        {
            return Err(DecodeError::WrongVersion {
                got: u32::try_from(got).unwrap_or(u32::MAX),
                want: PROTOCOL_VERSION,
            });
        }
    }
    serde_json::from_value(value).map_err(|e| DecodeError::BadField(e.to_string()))
}

/// Whether `s` is exactly `len` lowercase hex digits (digests, tokens).
pub(crate) fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Cuts a string from the network to at most `max` bytes (on a char boundary)
/// before it goes into an error message or a log line.
pub fn truncate(s: &str, max: usize) -> String {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    cut_at(s, end)
}

/// `s` up to byte `end` (a char boundary) followed by `…`, or all of `s` if
/// `end` is its length.
fn cut_at(s: &str, end: usize) -> String {
    if end >= s.len() {
        s.to_owned()
    } else {
        format!("{}…", &s[..end])
    }
}
