//! The jobmesh peer: a daemon that joins a pool, runs jobs for others and
//! submits jobs of its own, plus the local control API its CLI talks to.
//!
//! * [`daemon`]: the one event loop (see its docs for inputs and bounds) and
//!   [`PeerHandle`], the Rust library API.
//! * [`handlers`]: the built-in job handlers (`echo`, `sleep`).
//! * [`control`]: the unix-socket control API (`peer submit`, `peer peers`).

pub mod control;
pub mod daemon;
pub mod handlers;

pub use daemon::{
    spawn, DaemonConfig, DaemonError, JobReport, Metrics, PeerHandle, PoolSnapshot, StartError,
};

/// The default peer name: this host's name, cleaned to the characters a name
/// may hold (letters, digits, `_ . -`), or `peer`.
pub fn default_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(jobmesh_wire::MAX_NAME_LEN)
        .collect();
    if clean.is_empty() {
        "peer".into()
    } else {
        clean
    }
}
