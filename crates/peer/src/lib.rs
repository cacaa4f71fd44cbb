//! The jobmesh peer: a daemon that joins a pool, runs jobs for others and
//! submits jobs of its own, plus the local control API the `peer` binary
//! (crate `jobmesh-cli`) talks to. A library only: no flags, no log output.
//!
//! * the daemon: one event loop per peer (inputs, bounds and overflow
//!   policies in `docs/architecture.md`), started with [`spawn`] or
//!   [`spawn_with`]; [`PeerHandle`] and [`JobHandle`] are its Rust API.
//! * [`blobs`]: binary payloads of jobs and results: limits, spooling, transfer.
//! * [`handlers`]: the handler trait and the built-ins (`echo`, `sleep`).
//! * `media`: the built-in `thumbnail` and `ocr` handlers, each behind the
//!   cargo feature of its name (`media`: both; off by default, so a build
//!   without them compiles no image codecs and no ocr crate).
//! * [`exec`]: any command as a capability, from a TOML config.
//! * [`jobs`]: the event records of `peer watch` and the table of `peer jobs`.
//! * [`control`]: the unix-socket control API (`peer submit`, `peer peers`).
//! * [`store`]: the journal's one owner (with a data dir: jobs survive a
//!   crash of their submitter, results are kept for `peer result`).

mod api;
pub mod blobs;
pub mod control;
mod daemon;
pub mod envelope;
pub mod exec;
mod handler;
pub mod handlers;
pub mod handover;
pub mod jobs;
#[cfg(any(feature = "thumbnail", feature = "ocr"))]
pub mod media;
pub mod status;
pub mod store;
mod telemetry;
mod view;

pub use api::{
    DaemonConfig, DaemonError, Extensions, JobHandle, JobReport, Membership, Metrics,
    NetworkReport, Observation, ObservedBatch, PeerHandle, PoolSnapshot, StartError,
    LINK_PROBE_TIMEOUT, MAX_SLOTS,
};
pub use blobs::{Blob, BlobLimits, InputBlob, ReceivedBlob};
pub use daemon::{spawn, spawn_with};
pub use jobmesh_core::{JobError, JobEvent, JobOptions, Strategy, StrategyKind};
pub use jobmesh_identity::{Identity, PublicKey};
pub use jobmesh_node::SpoolLimits;
pub use jobmesh_trust::{Credential, Invitation, Revocations, Role};
pub use store::StoredJob;

/// Reads `l`, taking the guard even if a writer panicked (as [`lock`]).
pub fn read<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes `l`, taking the guard even if a holder panicked (as [`lock`]).
pub fn write<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Locks `m`, taking the guard even if a holder panicked.
///
/// For mutexes held only across one step that cannot leave their data half
/// changed (an insert, a remove, a push, a take): a poisoned one still holds
/// consistent data, so one panicking task does not take the others down.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The default peer name: this host's name, cleaned to the characters a name
/// may hold (letters, digits, `_ . -`), or `peer`.
pub fn default_name() -> String {
    clean_name(&gethostname::gethostname().to_string_lossy())
}

/// `raw` with every character a name may not hold made a `-`, cut to
/// [`jobmesh_wire::MAX_NAME_LEN`] characters; `peer` if nothing is left.
fn clean_name(raw: &str) -> String {
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
        .scan(0, |bytes, c| {
            // The limit is in bytes: a long non-ASCII host name stays valid.
            *bytes += c.len_utf8();
            (*bytes <= jobmesh_wire::MAX_NAME_LEN).then_some(c)
        })
        .collect();
    if clean.is_empty() {
        "peer".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_host_name_is_cleaned_into_a_peer_name() {
        assert_eq!(clean_name("build-01.example.org\n"), "build-01.example.org");
        assert_eq!(clean_name("my host:2"), "my-host-2");
        assert_eq!(clean_name("  \n"), "peer");
        assert_eq!(clean_name(""), "peer");
        let long = "a".repeat(jobmesh_wire::MAX_NAME_LEN + 10);
        assert_eq!(clean_name(&long).len(), jobmesh_wire::MAX_NAME_LEN);
        let wide = "é".repeat(40);
        assert_eq!(clean_name(&wide), "é".repeat(32), "at most 64 bytes");
        // The same name as when it was read from /proc.
        let proc = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        assert_eq!(default_name(), clean_name(&proc));
    }

    /// Reads the environment, never sets it: tests share one process.
    #[test]
    fn the_default_socket_is_in_the_runtime_dir_else_in_a_temp_dir_per_user() {
        let path = control::default_path("p", "n");
        assert_eq!(path.file_name(), Some("p-n.sock".as_ref()));
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_absolute());
        let expected = match runtime {
            Some(d) => d.join("jobmesh"),
            None => {
                // Our uid, as the kernel records it on a file we create.
                let mine = tempfile::NamedTempFile::new().expect("temp file");
                let uid = mine.as_file().metadata().expect("metadata").uid();
                std::env::temp_dir().join(format!("jobmesh-{uid}"))
            }
        };
        assert_eq!(path.parent(), Some(expected.as_path()));
    }
}
