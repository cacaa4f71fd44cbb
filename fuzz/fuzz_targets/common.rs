//! Fixed keys, fingerprints and nonces the targets check signatures with.
//! Deterministic, so a crash replays the same way. Shared by the targets
//! (`mod common;`); not a fuzz target itself.
#![allow(dead_code)]

use std::sync::LazyLock;

use jobmesh_identity::{Identity, Nonce, PeerId, PublicKey};
use jobmesh_wire::link::Fingerprint;

/// The owner of the fixed pool ([`POOL`]).
pub static POOL_OWNER: LazyLock<Identity> = LazyLock::new(|| Identity::from_seed(&[1; 32]));
/// The fixed pool's key.
pub static POOL_KEY: LazyLock<PublicKey> = LazyLock::new(|| POOL_OWNER.public());
/// The fixed pool's name.
pub const POOL: &str = "fuzz-pool";

/// "This side" of a link or of a signalling connection.
pub static LOCAL: LazyLock<Identity> = LazyLock::new(|| Identity::from_seed(&[2; 32]));
/// This side's peer id.
pub static LOCAL_ID: LazyLock<PeerId> = LazyLock::new(|| LOCAL.peer_id());
/// "The remote side": the key the seeds' hellos and proofs carry.
pub static REMOTE: LazyLock<Identity> = LazyLock::new(|| Identity::from_seed(&[3; 32]));

/// This side's DTLS fingerprint.
pub const LOCAL_FP: Fingerprint = Fingerprint([0xAA; 32]);
/// The remote's DTLS fingerprint, as this side sees it.
pub const REMOTE_FP: Fingerprint = Fingerprint([0xBB; 32]);
/// This side's link nonce.
pub const LOCAL_NONCE: [u8; 32] = [0xCC; 32];

/// This side's link nonce as a [`Nonce`].
pub fn local_nonce() -> Nonce {
    Nonce::from_bytes(LOCAL_NONCE)
}

/// The signal-server's challenge for the fixed connection.
pub const CHALLENGE: &str = "ZnV6ei1jaGFsbGVuZ2UtZnV6ei1jaGFsbGVuZ2UtZnV6";

/// A Unix time inside every seed credential's validity.
pub const NOW: u64 = 1_800_000_000;
