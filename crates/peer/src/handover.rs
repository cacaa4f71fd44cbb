//! Same-host handover: two daemons of one user on one host hand blobs to
//! each other as files in a shared directory instead of chunks over their
//! data channel (DTLS and SCTP move ~300 MB/s here; a file in `/dev/shm`
//! moves at memory speed).
//!
//! * The directory (default `/dev/shm/jobmesh-<uid>`, `--handover-dir`) is
//!   created private to its user (mode 0700) and refused if anyone else
//!   owns it or may write to it. Its `token` file holds a random token,
//!   written by the first daemon that opens the directory; every daemon
//!   that reads the same token shares the directory. Daemons tell each
//!   other their token when a link opens (`handover`); the node decides
//!   per link from that.
//! * The sender writes a set's blobs as new files (`create_new`, mode 0600)
//!   and sends one `blob_files` message in place of the chunks. It keeps
//!   the files until the attempt ends on its side (a [`Handed`] guard), and
//!   at most [`HANDOVER_BUDGET`] bytes in the directory at once: a set that
//!   does not fit goes as chunks.
//! * The receiver opens each file without following links, refuses
//!   anything but a regular file, and feeds its bytes through the same
//!   bookkeeping, digest check and spool as chunks, in pieces of
//!   [`PIECE`] bytes on a bounded queue; then removes it. A file it cannot
//!   read fails the set (retryably) and the link falls back to chunks.
//!
//! The digest check stands as for chunks: the receiver runs a handler on
//! (or returns to its caller) only bytes whose BLAKE3 digest the sender
//! announced, read into its own spool or memory, never the shared file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use jobmesh_wire::blob::{ChunkHeader, Direction};
use jobmesh_wire::dc::{valid_handover_token, JobId, HANDOVER_TOKEN_LEN};
use jobmesh_wire::PeerId;
use tokio::sync::mpsc;
use tracing::debug;

use crate::blobs::{Prepared, Source};

/// Most bytes this daemon keeps handed over at once (files in the
/// directory not yet released by their attempt's end); past it, sets go
/// as chunks. `/dev/shm` is memory.
pub const HANDOVER_BUDGET: u64 = 256 * 1024 * 1024;
/// Bytes of a handed-over file read at a time and queued for the daemon.
pub const PIECE: usize = 256 * 1024;
/// Pieces queued between the readers and the daemon (at most 2 MiB).
/// Full: readers wait.
pub const READ_QUEUE: usize = 8;

/// The default directory: `/dev/shm/jobmesh-<uid>` where `/dev/shm` exists.
pub fn default_dir() -> Option<PathBuf> {
    let shm = Path::new("/dev/shm");
    shm.is_dir()
        .then(|| shm.join(format!("jobmesh-{}", nix::unistd::getuid())))
}

/// An open handover directory.
#[derive(Debug)]
pub struct HandoverDir {
    path: PathBuf,
    token: String,
    /// This daemon's file names start with it (its peer id).
    prefix: String,
    /// Bytes handed over and not yet released.
    in_use: AtomicU64,
}

impl HandoverDir {
    /// Opens (creating) the directory at `path` for the daemon `me`: checks
    /// it is private to this user, reads or writes its token, and removes
    /// files an earlier run of `me` left.
    pub fn open(path: &Path, me: &PeerId) -> io::Result<Self> {
        match fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = fs::symlink_metadata(path)?;
        let uid = nix::unistd::getuid().as_raw();
        if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} must be a directory of user {uid} that nobody else may read or write (mode 0700)",
                    path.display()
                ),
            ));
        }
        let token = token(path)?;
        let prefix = format!("{me}.");
        for entry in fs::read_dir(path)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            path: path.to_owned(),
            token,
            prefix,
            in_use: AtomicU64::new(0),
        })
    }

    /// The token daemons sharing the directory read from it.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `blobs` as files for the recipient, if they fit the budget;
    /// `Ok(None)` when they do not. On an error nothing is left behind.
    pub(crate) fn hand_over(
        self: &Arc<Self>,
        job_id: JobId,
        attempt: u32,
        direction: Direction,
        blobs: &[Prepared],
    ) -> io::Result<Option<Handed>> {
        let bytes: u64 = blobs.iter().map(|b| b.meta.size).sum();
        let reserved = self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|n| *n <= HANDOVER_BUDGET)
            });
        if reserved.is_err() {
            return Ok(None);
        }
        let mut handed = Handed {
            dir: self.clone(),
            bytes,
            files: Vec::with_capacity(blobs.len()),
        };
        let way = match direction {
            Direction::Input => "in",
            Direction::Output => "out",
        };
        for b in blobs {
            let name = format!(
                "{}{}.{attempt}.{way}.{}",
                self.prefix,
                job_id.simple(),
                b.meta.index
            );
            let path = self.path.join(&name);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            handed.files.push((name, path));
            match &b.source {
                Source::Bytes(bytes) => file.write_all(bytes)?,
                Source::File(from) => {
                    io::copy(&mut File::open(from)?, &mut file)?;
                }
            }
        }
        Ok(Some(handed))
    }
}

/// Reads the directory's token, writing a fresh one if it has none (two
/// daemons starting at once agree: the file appears whole, once).
fn token(dir: &Path) -> io::Result<String> {
    let path = dir.join("token");
    let read = |path: &Path| -> io::Result<Option<String>> {
        match fs::read_to_string(path) {
            Ok(t) => {
                let t = t.trim().to_owned();
                if valid_handover_token(&t) {
                    Ok(Some(t))
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is not a handover token; remove it", path.display()),
                    ))
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    if let Some(t) = read(&path)? {
        return Ok(t);
    }
    let fresh: [u8; HANDOVER_TOKEN_LEN / 2] = rand::random();
    let fresh: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
    // Unique per attempt: two daemons of one process may race here too.
    let tmp = dir.join(format!(".token.{}.{fresh}", std::process::id()));
    fs::write(&tmp, &fresh)?;
    // A hard link never replaces: whoever links first wrote the token.
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(fresh),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read(&path)?.ok_or_else(|| io::Error::other("the handover token vanished"))
        }
        Err(e) => Err(e),
    }
}

/// Files handed over for one transfer: removed (if the recipient has not
/// yet) and their bytes released from the budget when dropped.
#[derive(Debug)]
pub(crate) struct Handed {
    dir: Arc<HandoverDir>,
    bytes: u64,
    files: Vec<(String, PathBuf)>,
}

impl Handed {
    /// The file names, in blob order, for the `blob_files` message.
    pub(crate) fn names(&self) -> Vec<String> {
        self.files.iter().map(|(n, _)| n.clone()).collect()
    }
}

impl Drop for Handed {
    fn drop(&mut self) {
        for (_, path) in &self.files {
            let _ = fs::remove_file(path);
        }
        self.dir.in_use.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// What a reader of handed-over files tells the daemon.
#[derive(Debug)]
pub(crate) enum FileRead {
    /// Bytes of one file, as a chunk of its blob from `from`.
    Piece {
        from: PeerId,
        header: ChunkHeader,
        bytes: Bytes,
    },
    /// Every file was read (the set may still be short).
    Done { from: PeerId, header: ChunkHeader },
    /// A file could not be read.
    Failed {
        from: PeerId,
        header: ChunkHeader,
        error: String,
    },
}

/// Reads `files` of `dir` in order on the calling (blocking) thread,
/// queueing their bytes as pieces of the blobs of `header`'s transfer, and
/// removes each once read. Stops when the daemon's queue closes.
pub(crate) fn read_files(
    dir: &Path,
    files: &[String],
    from: PeerId,
    header: ChunkHeader,
    tx: &mpsc::Sender<FileRead>,
) {
    for (index, name) in files.iter().enumerate() {
        let header = ChunkHeader {
            blob: u16::try_from(index).unwrap_or(u16::MAX),
            offset: 0,
            ..header
        };
        let path = dir.join(name);
        let read = read_file(&path, from, header, tx);
        let _ = fs::remove_file(&path);
        match read {
            Ok(true) => {}
            Ok(false) => return, // the daemon is gone
            Err(e) => {
                let error = format!(
                    "cannot read the handed-over blob file {}: {e}",
                    path.display()
                );
                let _ = tx.blocking_send(FileRead::Failed {
                    from,
                    header,
                    error,
                });
                return;
            }
        }
    }
    let _ = tx.blocking_send(FileRead::Done { from, header });
}

/// One file; `Ok(false)` when the daemon's queue closed.
fn read_file(
    path: &Path,
    from: PeerId,
    mut header: ChunkHeader,
    tx: &mpsc::Sender<FileRead>,
) -> io::Result<bool> {
    // Not a link, not a FIFO or device (O_NONBLOCK: opening a FIFO must not wait).
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    loop {
        // Not zeroed first: `read_to_end` reads into the spare capacity.
        let mut buf = Vec::with_capacity(PIECE);
        let n = (&mut file).take(PIECE as u64).read_to_end(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        let piece = FileRead::Piece {
            from,
            header,
            bytes: Bytes::from(buf),
        };
        if tx.blocking_send(piece).is_err() {
            debug!("handover reader stopped: the daemon is gone");
            return Ok(false);
        }
        header.offset += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> PeerId {
        jobmesh_identity::Identity::generate().peer_id()
    }

    #[test]
    fn two_daemons_opening_one_directory_read_the_same_token() {
        let tmp = tempfile::tempdir().expect("ok");
        let dir = tmp.path().join("h");
        let a = HandoverDir::open(&dir, &me()).expect("ok");
        let b = HandoverDir::open(&dir, &me()).expect("ok");
        assert_eq!(a.token(), b.token());
        assert_eq!(a.token().len(), HANDOVER_TOKEN_LEN);
        let other = HandoverDir::open(&tmp.path().join("other"), &me()).expect("ok");
        assert_ne!(a.token(), other.token());
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let tmp = tempfile::tempdir().expect("ok");
        let dir = tmp.path().join("h");
        fs::create_dir(&dir).expect("ok");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("ok");
        let e = HandoverDir::open(&dir, &me()).expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    }

    #[test]
    fn an_earlier_runs_files_are_removed_and_others_kept() {
        let tmp = tempfile::tempdir().expect("ok");
        let dir = tmp.path().join("h");
        let me = me();
        HandoverDir::open(&dir, &me).expect("ok");
        fs::write(dir.join(format!("{me}.x.1.in.0")), b"old").expect("ok");
        fs::write(dir.join("someone-else.x.1.in.0"), b"theirs").expect("ok");
        HandoverDir::open(&dir, &me).expect("ok");
        assert!(!dir.join(format!("{me}.x.1.in.0")).exists());
        assert!(dir.join("someone-else.x.1.in.0").exists());
    }

    fn prepared(bytes: &'static [u8]) -> Prepared {
        Prepared {
            meta: jobmesh_wire::blob::BlobMeta {
                index: 0,
                size: bytes.len() as u64,
                blake3: blake3::hash(bytes).to_hex().to_string(),
                name: None,
            },
            source: Source::Bytes(Bytes::from_static(bytes)),
            _dir: None,
        }
    }

    fn header() -> ChunkHeader {
        ChunkHeader {
            direction: Direction::Input,
            job_id: JobId::new_v4(),
            attempt: 1,
            blob: 0,
            offset: 0,
        }
    }

    #[test]
    fn handed_files_are_read_in_pieces_removed_and_released() {
        let tmp = tempfile::tempdir().expect("ok");
        let dir = Arc::new(HandoverDir::open(&tmp.path().join("h"), &me()).expect("ok"));
        let h = header();
        let handed = dir
            .hand_over(h.job_id, 1, Direction::Input, &[prepared(b"hello")])
            .expect("ok")
            .expect("ok");
        assert_eq!(dir.in_use.load(Ordering::Acquire), 5);
        let (tx, mut rx) = mpsc::channel(READ_QUEUE);
        let from = me();
        read_files(dir.path(), &handed.names(), from, h, &tx);
        match rx.try_recv().expect("ok") {
            FileRead::Piece { bytes, header, .. } => {
                assert_eq!(&bytes[..], b"hello");
                assert_eq!((header.blob, header.offset), (0, 0));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(rx.try_recv().expect("ok"), FileRead::Done { .. }));
        assert!(
            !dir.path().join(&handed.names()[0]).exists(),
            "the reader removes it"
        );
        drop(handed);
        assert_eq!(dir.in_use.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_set_over_the_budget_is_not_handed_over() {
        let tmp = tempfile::tempdir().expect("ok");
        let dir = Arc::new(HandoverDir::open(&tmp.path().join("h"), &me()).expect("ok"));
        dir.in_use.store(HANDOVER_BUDGET - 2, Ordering::Release);
        let h = header();
        let none = dir.hand_over(h.job_id, 1, Direction::Input, &[prepared(b"abc")]);
        assert!(none.expect("ok").is_none());
    }

    #[test]
    fn a_link_or_a_fifo_is_not_read() {
        let tmp = tempfile::tempdir().expect("ok");
        let dir = HandoverDir::open(&tmp.path().join("h"), &me()).expect("ok");
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).expect("ok");
        nix::unistd::mkfifo(&dir.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).expect("ok");
        for name in ["link", "fifo", "missing"] {
            let (tx, mut rx) = mpsc::channel(READ_QUEUE);
            read_files(dir.path(), &[name.to_owned()], me(), header(), &tx);
            match rx.try_recv().expect("ok") {
                FileRead::Failed { error, .. } => assert!(error.contains(name), "{error}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
