//! Blobs: the binary payloads of jobs and results, and how a daemon holds,
//! sends and receives them.
//!
//! * Sending: a [`Blob`] (bytes or a file) is [`prepare`]d once — size and
//!   BLAKE3 digest, checked against the limits — then streamed in chunks of
//!   the link's message size by [`send`], which waits for room on the link's
//!   bulk queue (so memory stays at a few chunks whatever the blob's size).
//! * Receiving: a [`Receiver`] checks each chunk with the sans-IO
//!   [`Incoming`] bookkeeping, hashes it, and keeps it in memory (small
//!   blobs, within the daemon's [`MemoryBudget`]) or appends it to a file in
//!   a per-job [`SpoolDir`]. A finished blob whose digest differs fails the
//!   attempt (retryably).
//! * Cleanup: every file lives in a [`SpoolDir`], removed with everything in
//!   it when its last holder (a receiver, a running handler, an upload, a
//!   [`ReceivedBlob`]) lets go — on success, failure, cancel and timeout alike.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use jobmesh_core::chunking::{chunks, ChunkVerdict, Incoming};
use jobmesh_transport::rtc::BulkSender;
use jobmesh_wire::blob::{chunk_payload_max, BlobMeta, ChunkHeader, Direction, MAX_BLOBS_PER_JOB};
use jobmesh_wire::dc::JobId;
use tracing::warn;

use crate::lock;
use jobmesh_node::SpoolLimits;

/// Blobs up to this size may be held in memory while received; larger ones
/// always go to a spool file.
pub const MEMORY_THRESHOLD: u64 = 4 * 1024 * 1024;

/// Limits a daemon applies to blobs it sends and receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobLimits {
    /// Largest blob, in bytes (default and hard cap: 2 GiB).
    pub max_blob_size: u64,
    /// Bytes of blobs held in memory at once while being received (default
    /// 64 MiB). Past it, even small blobs are spooled to files.
    pub memory_budget: u64,
    /// Blob transfers sent at once on one link (default 4); more wait.
    pub transfers_per_link: usize,
    /// Disk the spool may fill with blobs from other peers (default 16 GiB
    /// in total, 8 per peer, 4 per job): a job past it is refused before
    /// a byte is sent.
    pub spool: SpoolLimits,
}

impl Default for BlobLimits {
    fn default() -> Self {
        Self {
            max_blob_size: jobmesh_wire::blob::MAX_BLOB_SIZE,
            memory_budget: 64 * 1024 * 1024,
            transfers_per_link: 4,
            spool: SpoolLimits::default(),
        }
    }
}

/// A binary payload to send with a job (or return from a handler).
#[derive(Debug, Clone)]
pub struct Blob {
    name: Option<String>,
    source: Source,
}

#[derive(Debug, Clone)]
pub(crate) enum Source {
    Bytes(Bytes),
    File(PathBuf),
}

impl Blob {
    /// A blob of these bytes. A `Vec<u8>` or a [`Bytes`] is taken without
    /// a copy, so one buffer can go out with many jobs.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        Self {
            name: None,
            source: Source::Bytes(bytes.into()),
        }
    }

    /// A blob read from this file when sent, named after it.
    pub fn from_file(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            name: path.file_name().and_then(|n| n.to_str()).map(str::to_owned),
            source: Source::File(path),
        }
    }

    /// Names the blob (a file name for humans and handlers, no path separators).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Gives the blob exactly this name, or none.
    #[must_use]
    pub(crate) fn named(mut self, name: Option<String>) -> Self {
        self.name = name;
        self
    }
}

/// Why blobs could not be prepared for sending.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Over a limit or badly named.
    #[error("{0}")]
    Invalid(String),
}

/// A blob described and ready to stream.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) meta: BlobMeta,
    pub(crate) source: Source,
    /// Keeps the spool directory its file is in (a handler's output) alive
    /// until it has been sent.
    pub(crate) _dir: Option<Arc<SpoolDir>>,
}

/// Sizes and hashes `blobs` (files on a blocking thread) and checks them
/// against the limits, before any byte is sent.
pub(crate) async fn prepare(
    blobs: Vec<Blob>,
    max_blob_size: u64,
    dir: Option<Arc<SpoolDir>>,
) -> Result<Vec<Prepared>, BlobError> {
    if blobs.len() > MAX_BLOBS_PER_JOB {
        return Err(BlobError::Invalid(format!(
            "{} blobs given; a job carries at most {MAX_BLOBS_PER_JOB}",
            blobs.len()
        )));
    }
    let mut out = Vec::with_capacity(blobs.len());
    for (i, blob) in blobs.into_iter().enumerate() {
        let source = blob.source;
        let (size, blake3) = match &source {
            Source::Bytes(b) => (b.len() as u64, blake3::hash(b).to_hex().to_string()),
            Source::File(path) => match dir.as_ref().and_then(|d| d.known(path)) {
                Some(known) => known,
                None => {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || hash_file(&path))
                        .await
                        .map_err(|e| BlobError::Invalid(format!("hashing failed: {e}")))??
                }
            },
        };
        let index = u16::try_from(i).unwrap_or(u16::MAX);
        out.push(Prepared {
            meta: BlobMeta {
                index,
                size,
                blake3,
                name: blob.name,
            },
            source,
            _dir: dir.clone(),
        });
    }
    let metas: Vec<BlobMeta> = out.iter().map(|p| p.meta.clone()).collect();
    BlobMeta::validate_all(&metas, max_blob_size).map_err(|e| BlobError::Invalid(e.to_string()))?;
    Ok(out)
}

fn hash_file(path: &Path) -> Result<(u64, String), BlobError> {
    let err = |source| BlobError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(err)?;
    if !file.metadata().map_err(err)?.is_file() {
        return Err(err(io::Error::other("not a regular file")));
    }
    let mut hasher = blake3::Hasher::new();
    let size = io::copy(
        &mut io::BufReader::with_capacity(1 << 16, file),
        &mut hasher,
    )
    .map_err(err)?;
    Ok((size, hasher.finalize().to_hex().to_string()))
}

/// Why a blob stopped streaming.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendBlobError {
    #[error("the link closed")]
    Closed,
    #[error("cannot read blob {index} ({path}): {source}")]
    Read {
        index: u16,
        path: PathBuf,
        source: io::Error,
    },
}

/// Streams every blob's chunks onto `bulk`, in order, and returns once the
/// last one has been handed to the data channel (the receiver reports
/// progress). Cancel-safe: dropping it stops between chunks.
pub(crate) async fn send(
    bulk: &BulkSender,
    direction: Direction,
    job_id: JobId,
    attempt: u32,
    blobs: &[Prepared],
) -> Result<(), SendBlobError> {
    let chunk = chunk_payload_max(bulk.max_message_size());
    for blob in blobs {
        let header = |offset| ChunkHeader {
            direction,
            job_id,
            attempt,
            blob: blob.meta.index,
            offset,
        };
        let index = blob.meta.index;
        match &blob.source {
            Source::Bytes(bytes) => {
                for (offset, len) in chunks(blob.meta.size, chunk) {
                    // In bounds: `size` is `bytes.len()` and chunks stay within it.
                    let at = usize::try_from(offset).unwrap_or(usize::MAX);
                    let part = bytes.get(at..at + len).unwrap_or_default();
                    bulk.send(header(offset).encode(part))
                        .await
                        .map_err(|_| SendBlobError::Closed)?;
                }
            }
            Source::File(path) => {
                let read_err = |source| SendBlobError::Read {
                    index,
                    path: path.clone(),
                    source,
                };
                let mut file = tokio::fs::File::open(path).await.map_err(read_err)?;
                for (offset, len) in chunks(blob.meta.size, chunk) {
                    let mut frame = header(offset).encode(&[]);
                    let start = frame.len();
                    frame.resize(start + len, 0);
                    tokio::io::AsyncReadExt::read_exact(&mut file, &mut frame[start..])
                        .await
                        .map_err(read_err)?;
                    bulk.send(frame).await.map_err(|_| SendBlobError::Closed)?;
                }
            }
        }
    }
    // Done means on the wire: a message sent after this comes after the chunks.
    bulk.flush().await.map_err(|_| SendBlobError::Closed)
}

/// A directory of spool files, removed with its contents when dropped.
#[derive(Debug)]
pub(crate) struct SpoolDir {
    path: PathBuf,
    /// Files received into it whose digest checked out, with their size and
    /// modification time then: sent on unchanged (a handler returning its
    /// input), they need no second hashing.
    verified: Mutex<HashMap<PathBuf, Verified>>,
}

#[derive(Debug)]
struct Verified {
    size: u64,
    modified: std::time::SystemTime,
    blake3: String,
}

impl SpoolDir {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            verified: Mutex::default(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Records that `path` (in this dir) has `blake3`, as it is now.
    fn remember(&self, path: &Path, blake3: String) {
        if let Ok(m) = std::fs::metadata(path) {
            if let Ok(modified) = m.modified() {
                let v = Verified {
                    size: m.len(),
                    modified,
                    blake3,
                };
                lock(&self.verified).insert(path.to_owned(), v);
            }
        }
    }

    /// (size, digest) of `path` if it was received here and is unchanged
    /// since (same size and modification time).
    fn known(&self, path: &Path) -> Option<(u64, String)> {
        let m = std::fs::metadata(path).ok()?;
        let verified = lock(&self.verified);
        let v = verified.get(path)?;
        (v.size == m.len() && m.modified().ok()? == v.modified).then(|| (v.size, v.blake3.clone()))
    }
}

impl Drop for SpoolDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "could not remove a spool directory")
            }
        }
    }
}

/// The daemon's spool: one private directory (mode 0700) holding a
/// [`SpoolDir`] per job attempt and direction; removed when the daemon stops
/// (and, after a crash, by the next daemon started on the same parent dir).
#[derive(Debug)]
pub(crate) struct Spool {
    root: tempfile::TempDir,
    next: AtomicU64,
}

impl Spool {
    /// Creates the spool under `parent` (default: the system temp dir),
    /// first removing spools left there by daemons that died without
    /// cleaning up (killed with SIGKILL, say).
    pub(crate) fn new(parent: Option<&Path>) -> io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_owned);
        remove_stale_spools(&parent);
        let root = tempfile::Builder::new()
            .prefix(&format!("{SPOOL_PREFIX}{}-", std::process::id()))
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(&parent)?;
        Ok(Self {
            root,
            next: AtomicU64::new(0),
        })
    }

    pub(crate) fn root(&self) -> &Path {
        self.root.path()
    }

    /// A fresh directory for one job attempt's blobs.
    pub(crate) fn dir(&self, job_id: JobId, what: &str) -> io::Result<Arc<SpoolDir>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.root.path().join(format!("{job_id}-{what}-{n}"));
        std::fs::create_dir(&path)?;
        Ok(Arc::new(SpoolDir::new(path)))
    }
}

/// Spool directories are named `jobmesh-spool-<pid>-<random>`.
const SPOOL_PREFIX: &str = "jobmesh-spool-";

/// Removes the spools in `parent` whose daemon process is gone (only ours:
/// same owner). A live process with that pid keeps its spool, whoever it is.
fn remove_stale_spools(parent: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    // Effective: the owner of the spools this process creates.
    let uid = nix::unistd::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SPOOL_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if ours && !Path::new(&format!("/proc/{pid}")).exists() {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => {
                    tracing::info!(path = %e.path().display(), "removed the spool of a daemon that is gone")
                }
                Err(err) => {
                    warn!(path = %e.path().display(), error = %err, "cannot remove a stale spool")
                }
            }
        }
    }
}

/// Bytes of blobs a daemon holds in memory while receiving, against a limit.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

/// A share of the [`MemoryBudget`], returned when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl MemoryBudget {
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Reserves `bytes`, or `None` when that would pass the limit.
    pub(crate) fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|n| *n <= self.limit)
            })
            .ok()
            .map(|_| Reservation {
                budget: self.clone(),
                bytes,
            })
    }

    #[cfg(test)]
    fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// A blob that arrived: in memory or in a spool file (removed when the last
/// clone is dropped; [`save`](Self::save) it to keep it).
#[derive(Debug, Clone)]
pub struct ReceivedBlob {
    meta: BlobMeta,
    held: Held,
}

#[derive(Debug, Clone)]
enum Held {
    Memory(Bytes),
    /// In a spool dir (removed with its last holder), or, with no dir, a
    /// file of the handler's own that stays where it is.
    File {
        path: PathBuf,
        _dir: Option<Arc<SpoolDir>>,
    },
}

impl PartialEq for ReceivedBlob {
    fn eq(&self, other: &Self) -> bool {
        self.meta == other.meta
    }
}

impl ReceivedBlob {
    /// A blob held in memory (for tests of what is done with one).
    #[cfg(test)]
    pub(crate) fn in_memory(meta: BlobMeta, bytes: Vec<u8>) -> Self {
        Self {
            meta,
            held: Held::Memory(Bytes::from(bytes)),
        }
    }

    /// Its description: index, size, BLAKE3 digest, name.
    pub fn meta(&self) -> &BlobMeta {
        &self.meta
    }

    /// Its name, if the sender gave one.
    pub fn name(&self) -> Option<&str> {
        self.meta.name.as_deref()
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.meta.size
    }

    /// The spool file holding it, when it is not in memory.
    pub fn path(&self) -> Option<&Path> {
        match &self.held {
            Held::Memory(_) => None,
            Held::File { path, .. } => Some(path),
        }
    }

    /// Its bytes, when it is held in memory (else see [`path`](Self::path)).
    pub fn bytes(&self) -> Option<&Bytes> {
        match &self.held {
            Held::Memory(b) => Some(b),
            Held::File { .. } => None,
        }
    }

    /// Reads it whole into memory.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        match &self.held {
            Held::Memory(b) => Ok(b.to_vec()),
            Held::File { path, .. } => std::fs::read(path),
        }
    }

    /// Copies it into `w`; returns the bytes written.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<u64> {
        match &self.held {
            Held::Memory(b) => w.write_all(b).map(|()| b.len() as u64),
            Held::File { path, .. } => io::copy(&mut File::open(path)?, w),
        }
    }

    /// Writes it to `to` (replacing a file there): a hard link when the
    /// spool is on the same file system, a copy otherwise.
    pub fn save(&self, to: &Path) -> io::Result<()> {
        match &self.held {
            Held::Memory(b) => std::fs::write(to, b),
            Held::File { path, .. } => {
                let _ = std::fs::remove_file(to);
                if std::fs::hard_link(path, to).is_ok() {
                    return Ok(());
                }
                std::fs::copy(path, to).map(|_| ())
            }
        }
    }

    /// A handler's output handed over without a network hop (self-dispatch).
    pub(crate) fn from_prepared(p: Prepared) -> Self {
        let held = match p.source {
            Source::Bytes(b) => Held::Memory(b),
            Source::File(path) => Held::File { path, _dir: p._dir },
        };
        Self { meta: p.meta, held }
    }
}

/// What a handler gets for each input blob: a file it may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputBlob {
    /// The sender's name for it, if any.
    pub name: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    /// Where it is.
    pub path: PathBuf,
}

/// The receiving end of one set of blobs (a job's inputs or a result's outputs).
#[derive(Debug)]
pub(crate) struct Receiver {
    incoming: Incoming,
    sinks: Vec<Sink>,
    dir: Arc<SpoolDir>,
    /// The first thing that went wrong; later chunks are ignored.
    failed: Option<String>,
    _memory: Option<Reservation>,
}

#[derive(Debug)]
enum Sink {
    Memory(Vec<u8>, blake3::Hasher),
    File(File, PathBuf, blake3::Hasher),
    Done(Held),
}

impl Receiver {
    /// Expects `blobs`. Small sets are held in memory when `budget` allows;
    /// otherwise (or when `files` is set) each blob goes to a file in `dir`,
    /// named after the blob when it has a name.
    pub(crate) fn new(
        blobs: Vec<BlobMeta>,
        dir: Arc<SpoolDir>,
        budget: &Arc<MemoryBudget>,
        files: bool,
    ) -> io::Result<Self> {
        let total: u64 = blobs.iter().map(|b| b.size).sum();
        let small = !files && blobs.iter().all(|b| b.size <= MEMORY_THRESHOLD);
        let memory = small.then(|| budget.reserve(total)).flatten();
        let mut sinks = Vec::with_capacity(blobs.len());
        for b in &blobs {
            sinks.push(if memory.is_some() {
                // At most MEMORY_THRESHOLD, and reserved from the budget above.
                let size = usize::try_from(b.size).unwrap_or(0);
                Sink::Memory(Vec::with_capacity(size), blake3::Hasher::new())
            } else {
                let path = dir.path().join(file_name(b));
                Sink::File(File::create(&path)?, path, blake3::Hasher::new())
            });
        }
        let mut r = Self {
            incoming: Incoming::new(blobs),
            sinks,
            dir,
            failed: None,
            _memory: memory,
        };
        // Empty blobs are complete before any chunk.
        for i in 0..r.sinks.len() {
            if r.incoming.blobs()[i].size == 0 {
                r.seal(i);
            }
        }
        Ok(r)
    }

    /// Takes one chunk. Errors are kept ([`failed`](Self::failed)); the
    /// attempt fails with the first.
    pub(crate) fn on_chunk(&mut self, index: u16, offset: u64, payload: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        let verdict = match self.incoming.accept(index, offset, payload.len()) {
            Ok(v) => v,
            Err(e) => {
                self.failed = Some(e.to_string());
                return;
            }
        };
        let i = usize::from(index);
        let written = match &mut self.sinks[i] {
            Sink::Memory(buf, h) => {
                buf.extend_from_slice(payload);
                h.update(payload);
                Ok(())
            }
            Sink::File(f, _, h) => {
                h.update(payload);
                f.write_all(payload)
            }
            Sink::Done(_) => Ok(()),
        };
        if let Err(e) = written {
            self.failed = Some(format!(
                "cannot write blob {index} to the spool ({}): {e}",
                self.dir.path().display()
            ));
            return;
        }
        if verdict == ChunkVerdict::BlobComplete {
            self.seal(i);
        }
    }

    fn seal(&mut self, i: usize) {
        let sink = std::mem::replace(&mut self.sinks[i], Sink::Done(Held::Memory(Bytes::new())));
        let (held, digest) = match sink {
            Sink::Memory(buf, h) => (Held::Memory(Bytes::from(buf)), h.finalize()),
            Sink::File(f, path, h) => {
                drop(f);
                (
                    Held::File {
                        path,
                        _dir: Some(self.dir.clone()),
                    },
                    h.finalize(),
                )
            }
            done @ Sink::Done(_) => {
                self.sinks[i] = done;
                return;
            }
        };
        let index = u16::try_from(i).unwrap_or(u16::MAX);
        let digest = digest.to_hex();
        match self.incoming.check_digest(index, &digest) {
            Err(e) => self.failed = Some(e.to_string()),
            Ok(()) => {
                if let Held::File { path, .. } = &held {
                    self.dir.remember(path, digest.to_string());
                }
            }
        }
        self.sinks[i] = Sink::Done(held);
    }

    /// The directory its files go to.
    pub(crate) fn dir(&self) -> Arc<SpoolDir> {
        self.dir.clone()
    }

    /// The first error, if any.
    pub(crate) fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Bytes received so far and the total announced.
    pub(crate) fn progress(&self) -> (u64, u64) {
        (self.incoming.received(), self.incoming.total())
    }

    /// Whether every blob arrived intact.
    pub(crate) fn is_complete(&self) -> bool {
        self.failed.is_none() && self.incoming.is_complete()
    }

    /// The blobs, if all arrived intact; else why not.
    pub(crate) fn finish(self) -> Result<Vec<ReceivedBlob>, String> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if !self.incoming.is_complete() {
            return Err(format!(
                "the blobs were cut short: {} of {} bytes arrived",
                self.incoming.received(),
                self.incoming.total()
            ));
        }
        let metas = self.incoming.blobs().to_vec();
        Ok(metas
            .into_iter()
            .zip(self.sinks)
            .map(|(meta, sink)| ReceivedBlob {
                meta,
                held: match sink {
                    Sink::Done(held) => held,
                    // Unreachable: a complete set has every sink sealed.
                    _ => Held::Memory(Bytes::new()),
                },
            })
            .collect())
    }
}

/// The spool file name of a blob: its own name when it has one (names are
/// validated: no separators), else `blob-N`.
pub(crate) fn file_name(meta: &BlobMeta) -> String {
    match &meta.name {
        Some(n) => format!("{}-{n}", meta.index),
        None => format!("blob-{}", meta.index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_of(index: u16, bytes: &[u8], name: Option<&str>) -> BlobMeta {
        BlobMeta {
            index,
            size: bytes.len() as u64,
            blake3: blake3::hash(bytes).to_hex().to_string(),
            name: name.map(str::to_owned),
        }
    }

    fn spool() -> Spool {
        Spool::new(None).expect("spool")
    }

    fn feed(r: &mut Receiver, index: u16, bytes: &[u8], chunk: usize) {
        for (i, part) in bytes.chunks(chunk).enumerate() {
            r.on_chunk(index, (i * chunk) as u64, part);
        }
    }

    #[tokio::test]
    async fn a_received_file_sent_on_unchanged_keeps_its_checked_digest_and_a_changed_one_is_hashed_again(
    ) {
        let spool = spool();
        let budget = MemoryBudget::new(0);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let dir = spool.dir(JobId::nil(), "in").expect("dir");
        let mut r = Receiver::new(vec![meta_of(0, &data, None)], dir.clone(), &budget, true)
            .expect("receiver");
        feed(&mut r, 0, &data, 4096);
        let got = r.finish().expect("intact");
        let path = got[0].path().expect("a file").to_owned();
        assert_eq!(dir.known(&path).map(|k| k.0), Some(100_000));

        let p = prepare(vec![Blob::from_file(&path)], 1 << 20, Some(dir.clone()))
            .await
            .expect("prepared");
        assert_eq!(p[0].meta.blake3, meta_of(0, &data, None).blake3);

        // Changed (another size): no longer known, hashed afresh.
        std::fs::write(&path, b"changed").expect("write");
        assert!(dir.known(&path).is_none());
        let p = prepare(vec![Blob::from_file(&path)], 1 << 20, Some(dir.clone()))
            .await
            .expect("prepared");
        assert_eq!(
            p[0].meta.blake3,
            blake3::hash(b"changed").to_hex().to_string()
        );
        assert_eq!(p[0].meta.size, 7);
    }

    #[test]
    fn small_blobs_arrive_in_memory_and_large_ones_in_files_that_are_removed() {
        let spool = spool();
        let budget = MemoryBudget::new(1 << 20);
        let a = vec![7u8; 1000];
        let b: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let metas = vec![meta_of(0, &a, Some("a.bin")), meta_of(1, &b, None)];

        let mut r = Receiver::new(
            metas.clone(),
            spool.dir(JobId::nil(), "t").expect("dir"),
            &budget,
            false,
        )
        .expect("receiver");
        assert_eq!(budget.used(), 301_000, "the whole set is reserved");
        feed(&mut r, 0, &a, 64);
        feed(&mut r, 1, &b, 65_000);
        assert!(r.is_complete());
        let got = r.finish().expect("intact");
        assert!(got.iter().all(|g| g.path().is_none()), "held in memory");
        assert_eq!(got[1].to_vec().expect("read"), b);
        assert_eq!(budget.used(), 0, "reservation returned");

        // Over the budget: files, named after the blob; gone with the last holder.
        let small = MemoryBudget::new(10);
        let mut r = Receiver::new(
            metas,
            spool.dir(JobId::nil(), "t").expect("dir"),
            &small,
            false,
        )
        .expect("receiver");
        feed(&mut r, 0, &a, 100);
        feed(&mut r, 1, &b, 4096);
        let got = r.finish().expect("intact");
        let path = got[0].path().expect("in a file").to_owned();
        assert!(path.ends_with("0-a.bin"));
        assert_eq!(got[1].to_vec().expect("read"), b);
        let out = spool.root().join("saved");
        got[1].save(&out).expect("save");
        drop(got);
        assert!(!path.exists(), "spool file removed with its last holder");
        assert_eq!(
            std::fs::read(&out).expect("saved copy"),
            b,
            "a saved copy stays"
        );
        std::fs::remove_file(out).expect("cleanup");
        assert_eq!(std::fs::read_dir(spool.root()).expect("ls").count(), 0);
    }

    #[test]
    fn damaged_reordered_and_short_transfers_fail_with_a_reason() {
        let spool = spool();
        let budget = MemoryBudget::new(1 << 20);
        let data = vec![1u8; 5000];
        let dir = || spool.dir(JobId::nil(), "t").expect("dir");

        let mut damaged = data.clone();
        damaged[4999] ^= 1;
        let mut r = Receiver::new(vec![meta_of(0, &data, None)], dir(), &budget, true).expect("rx");
        feed(&mut r, 0, &damaged, 1000);
        let err = r.finish().expect_err("digest");
        assert!(err.contains("digest mismatch"), "{err}");

        let mut r =
            Receiver::new(vec![meta_of(0, &data, None)], dir(), &budget, false).expect("rx");
        r.on_chunk(0, 1000, &data[..1000]);
        assert!(r
            .failed()
            .is_some_and(|e| e.contains("offset 1000, expected 0")));
        drop(r);

        let mut r =
            Receiver::new(vec![meta_of(0, &data, None)], dir(), &budget, false).expect("rx");
        r.on_chunk(0, 0, &data[..1000]);
        let err = r.finish().expect_err("short");
        assert!(err.contains("1000 of 5000"), "{err}");

        let r = Receiver::new(vec![meta_of(0, b"", None)], dir(), &budget, true).expect("rx");
        assert!(r.is_complete(), "an empty blob needs no chunk");
        drop(r);
        assert_eq!(std::fs::read_dir(spool.root()).expect("ls").count(), 0);
    }

    #[test]
    fn spools_of_dead_daemons_are_removed_and_live_ones_kept() {
        let parent = tempfile::tempdir().expect("parent");
        // No process has a pid above the kernel's maximum (2^22).
        let dead = parent.path().join(format!("{SPOOL_PREFIX}4999999-abc"));
        std::fs::create_dir_all(dead.join("job")).expect("dead spool");
        std::fs::write(dead.join("job/blob"), b"left behind").expect("file");
        let alive = parent
            .path()
            .join(format!("{SPOOL_PREFIX}{}-xyz", std::process::id()));
        std::fs::create_dir(&alive).expect("live spool");
        let other = parent.path().join("not-a-spool");
        std::fs::create_dir(&other).expect("other dir");

        let spool = Spool::new(Some(parent.path())).expect("spool");
        assert!(!dead.exists(), "a dead daemon's spool is removed");
        assert!(alive.exists() && other.exists(), "others are left alone");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(spool.root())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "private to the daemon's user");
    }

    #[test]
    fn the_memory_budget_is_never_exceeded() {
        let budget = MemoryBudget::new(100);
        let a = budget.reserve(60).expect("fits");
        assert!(budget.reserve(41).is_none());
        let b = budget.reserve(40).expect("fits exactly");
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn prepare_hashes_files_and_refuses_what_breaks_a_limit() {
        let spool = spool();
        let path = spool.root().join("in.dat");
        std::fs::write(&path, vec![3u8; 70_000]).expect("write");
        let p = prepare(
            vec![Blob::from_file(&path), Blob::from_bytes(b"hi".to_vec())],
            1 << 20,
            None,
        )
        .await
        .expect("prepared");
        assert_eq!(p[0].meta.size, 70_000);
        assert_eq!(p[0].meta.name.as_deref(), Some("in.dat"));
        assert_eq!(
            p[0].meta.blake3,
            blake3::hash(&[3u8; 70_000]).to_hex().as_str()
        );
        assert_eq!(p[1].meta.index, 1);

        let err = prepare(vec![Blob::from_file(&path)], 1000, None)
            .await
            .expect_err("too big");
        assert!(err.to_string().contains("the limit is 1000"), "{err}");
        let err = prepare(
            vec![Blob::from_file(spool.root().join("missing"))],
            1000,
            None,
        )
        .await
        .expect_err("missing");
        assert!(err.to_string().contains("cannot read"), "{err}");
        let many = vec![Blob::from_bytes(Vec::new()); MAX_BLOBS_PER_JOB + 1];
        assert!(prepare(many, 10, None).await.is_err());
    }
}
