//! What a daemon shows of itself: the pool as it sees it, and the counters
//! it keeps. The API (`api`) hands them out; `status` and `telemetry` read
//! them, so they live apart from both (no module circle).

use std::sync::atomic::{AtomicU64, Ordering};

use std::collections::BTreeMap;

use jobmesh_transport::path::LinkPath;
use jobmesh_wire::{PeerId, PeerInfo};

/// The pool as this daemon sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSnapshot {
    /// Whether the signal-server connection is up.
    pub connected: bool,
    /// Whether `peers` is the whole pool as the signal-server last described
    /// it (false from a (re)connect until the server's view pages are in).
    pub synced: bool,
    /// This peer.
    pub me: PeerInfo,
    /// Everyone else, in id order.
    pub peers: Vec<PeerInfo>,
    /// The signal-server refused this peer for good (not admitted to the
    /// pool, say): why. It does not try again.
    pub refused: Option<String>,
    /// How each open data channel connected, by remote peer.
    pub links: BTreeMap<PeerId, LinkPath>,
    /// Why the last dial or answer to a member found no path, until a link
    /// to it opens or a new dial starts (at most [`MAX_LINK_ERRORS`]; past
    /// it, one is dropped).
    pub link_errors: BTreeMap<PeerId, String>,
}

impl PoolSnapshot {
    /// The member named `name_or_id`: its name, its peer id, or the short
    /// form of the id that `peer peers` shows.
    pub fn member(&self, name_or_id: &str) -> Option<&PeerInfo> {
        self.peers.iter().find(|p| {
            p.name == name_or_id || p.id.to_string() == name_or_id || p.id.short() == name_or_id
        })
    }
}

/// Link errors a [`PoolSnapshot`] keeps.
pub(crate) const MAX_LINK_ERRORS: usize = 256;

/// Counters a daemon keeps, for tests and observability. Monotonic.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `submit` messages received (from others or, self-dispatched, from itself).
    pub submits_received: AtomicU64,
    /// Jobs this worker refused.
    pub rejected: AtomicU64,
    /// Jobs whose handler saw its cancel token fire.
    pub handlers_cancelled: AtomicU64,
    /// Data-channel messages that failed to decode.
    pub malformed_messages: AtomicU64,
    /// Data channels opened (dialled or answered).
    pub links_opened: AtomicU64,
    /// Links closed because the remote did not prove its identity over the
    /// connection (a relayed, replayed or forged link handshake).
    pub links_refused: AtomicU64,
    /// Known member names seen again with another key (a warning is logged).
    pub key_changes: AtomicU64,
    /// Blob chunks dropped because no transfer of theirs is current (the
    /// attempt ended, was cancelled or was never announced).
    pub stale_chunks: AtomicU64,
    /// Blob sets handed over as files to a daemon sharing the handover
    /// directory (instead of sent in chunks).
    pub blob_sets_handed_over: AtomicU64,
    /// Messages about jobs of ours from an attempt that is no longer current
    /// (a late result of a lost or timed-out attempt, say), ignored.
    pub stale_messages: AtomicU64,
    /// Attempts of ours declared lost because their worker went silent past
    /// the lease.
    pub leases_expired: AtomicU64,
}

impl Metrics {
    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set(counter: &AtomicU64, value: u64) {
        counter.store(value, Ordering::Relaxed);
    }
}
