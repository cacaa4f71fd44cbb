//! The journal's one owner (`jobmesh-journal` underneath): every change
//! written to it and every read of it go through here, and no other module
//! names a journal operation.
//!
//! Who asks for what:
//! ```text
//! PeerHandle::submit_*  -> Store::submit     the job, synced before its id is handed out
//! Node (sans-IO)        -> Steps::node_op    an attempt handed out, a job taken back
//! daemon, a job ends    -> Steps::end        its outcome (result blobs kept first)
//! PeerHandle::stored_result -> Store::stored a read; marks an ended job fetched
//! daemon start          -> Store::open       the peer id, jobs to resume, expiry
//! ```
//!
//! Layout of a data dir:
//! ```text
//! <data dir>/identity.key      the peer's secret key (0600; its peer id follows from it)
//! <data dir>/journal.db        the journal (jobs, undelivered results, facts)
//! <data dir>/inputs/<job id>/  input blobs that were in memory when submitted
//! <data dir>/results/<job id>/ result blobs, kept with the result
//! ```
//! A job's input files given by path are not copied: the journal keeps the
//! path and the digest, and a file changed before a resumed job is sent
//! fails that job's digest check at the worker, with an error naming it.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jobmesh_core::JobSpec;
use jobmesh_identity::Identity;
use jobmesh_journal::{Durability, JobRow, Journal, JournalHandle, Op, Stopped};
use jobmesh_node::JournalOp;
use jobmesh_trust::Credential;
use jobmesh_wire::blob::BlobMeta;
use jobmesh_wire::dc::JobId;
use jobmesh_wire::{Capability, PeerId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{error, warn};

use crate::blobs::{Prepared, Source};
use crate::envelope::{save_blobs, Envelope, JobReport, SubmitOptions};

/// How long an ended job's result is kept for `peer result` (expiry runs
/// when the daemon starts).
pub const RESULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most bytes of kept results (values and blobs); past it the oldest go.
pub const RESULT_BYTES_CAP: u64 = 1 << 30;

/// How far a resumed job's attempt numbers jump past the last journaled one.
/// An attempt is journaled just after its submit goes out (the daemon loop
/// never waits for the disk), so a crash can leave the newest attempt or two
/// unrecorded; a new attempt of a job takes at least a worker's reply, so in
/// the milliseconds one journal commit takes no more than a few can be
/// handed out. Jumping past them keeps a resumed attempt from sharing a
/// number with one still running on a worker.
const RESUME_ATTEMPT_GAP: u32 = 16;

/// Milliseconds since the Unix epoch: the journal's clock, read at the edge.
/// The wall-clock time, Unix seconds (credentials expire in it).
pub fn unix_now() -> u64 {
    now_ms() / 1000
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A submitted job as the journal stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredSpec {
    pub(crate) capability: Capability,
    pub(crate) input: Value,
    pub(crate) options: SubmitOptions,
}

impl StoredSpec {
    pub(crate) fn of(spec: &JobSpec) -> Value {
        let stored = StoredSpec {
            capability: spec.capability.clone(),
            input: spec.input.clone(),
            options: SubmitOptions::of(&spec.options),
        };
        serde_json::to_value(stored).unwrap_or(Value::Null)
    }

    fn decode(row: &JobRow) -> Result<JobSpec, String> {
        let s: StoredSpec = serde_json::from_value(row.spec.clone()).map_err(|e| e.to_string())?;
        Ok(JobSpec {
            job_id: row.job_id,
            capability: s.capability,
            input: s.input,
            options: s.options.to_options()?,
        })
    }
}

/// An input or result blob as the journal stores it: its description and
/// the file holding its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredBlob {
    pub(crate) meta: BlobMeta,
    pub(crate) path: PathBuf,
}

/// The directory of a job's input blobs kept from memory.
fn inputs_dir(data_dir: &Path, job_id: JobId) -> PathBuf {
    data_dir.join("inputs").join(job_id.to_string())
}

/// The directory of a job's kept result blobs.
fn results_dir(data_dir: &Path, job_id: JobId) -> PathBuf {
    data_dir.join("results").join(job_id.to_string())
}

/// Writes the blobs that are in memory to the job's inputs dir (blocking)
/// and describes every blob with the file holding it.
fn persist_inputs(data_dir: &Path, job_id: JobId, blobs: &[Prepared]) -> io::Result<Value> {
    let mut stored = Vec::with_capacity(blobs.len());
    for b in blobs {
        let path = match &b.source {
            Source::File(p) => p.clone(),
            Source::Bytes(bytes) => {
                let dir = inputs_dir(data_dir, job_id);
                std::fs::create_dir_all(&dir)?;
                let p = dir.join(b.meta.index.to_string());
                write_synced(&p, bytes)?;
                p
            }
        };
        stored.push(StoredBlob {
            meta: b.meta.clone(),
            path,
        });
    }
    serde_json::to_value(stored).map_err(io::Error::other)
}

/// Writes `bytes` to `path` and syncs it, so the journal never points at a
/// file that a crash could leave short.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A journaled job to resume: its spec and input blobs.
#[derive(Debug)]
pub(crate) struct Resume {
    pub(crate) spec: JobSpec,
    pub(crate) blobs: Vec<Prepared>,
    /// The highest attempt the earlier run handed out: the next one is higher,
    /// so a late message of an earlier attempt is recognised as stale.
    pub(crate) attempts_before: u32,
    /// The worker of its newest journaled attempt, which may still hold it.
    pub(crate) held_by: Option<PeerId>,
}

/// Changes wait in the daemon at most this long before they go to the
/// journal thread together: one commit for a burst of jobs' steps instead of
/// one per step. They are all `Written` changes (a crash loses at most this
/// window, which only means jobs run again).
const STEPS_BATCH_DELAY: Duration = Duration::from_millis(5);
/// ... or until this many have gathered.
const STEPS_BATCH_OPS: usize = 512;

/// A daemon's journal and data dir. Cheap to clone: the journal thread is
/// shared.
#[derive(Clone)]
pub(crate) struct Store {
    handle: JournalHandle,
    data_dir: PathBuf,
}

/// A data dir opened at start: its store, the jobs to resume, and what
/// tells when the journal thread has closed.
pub(crate) struct Opened {
    pub(crate) store: Store,
    pub(crate) stopped: Stopped,
    pub(crate) resume: Vec<Resume>,
}

/// A job as the journal has it; see
/// [`PeerHandle::stored_result`](crate::PeerHandle::stored_result).
#[derive(Debug, Clone, PartialEq)]
pub enum StoredJob {
    /// It ended: its envelope, as `peer submit --json` prints it, with its
    /// result blobs kept in the data dir.
    Ended(Value),
    /// It has not ended yet.
    Unfinished {
        /// The newest attempt (0: not placed yet).
        attempt: u32,
        /// That attempt's worker.
        worker: Option<String>,
    },
}

impl Store {
    /// Opens (creating) the data dir and its journal: the jobs to resume,
    /// and the journal thread. Jobs whose record cannot be read end with an error
    /// saying so.
    pub(crate) fn open(
        data_dir: &Path,
        observer: jobmesh_journal::CommitObserver,
    ) -> Result<Opened, String> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("cannot create the data dir {}: {e}", data_dir.display()))?;
        restrict(data_dir);
        let opened = Journal::open(data_dir).map_err(|e| e.to_string())?;
        if let Some(moved) = &opened.moved_aside {
            error!(moved_to = %moved.display(),
                "the journal was corrupt: moved aside and a fresh one started; its jobs are not resumed");
        }
        if let Some((damage, copy)) = &opened.wal_damage {
            error!(%damage, copy = %copy.display(),
                "the journal's write-ahead log is damaged: jobs journaled after the damage are lost (a disk or file-system fault, or a file changed by hand); a copy of the log is kept");
        }
        let mut journal = opened.journal;
        expire(&mut journal, data_dir)?;
        let mut resume = Vec::new();
        let mut unreadable = Vec::new();
        for row in journal.unfinished().map_err(|e| e.to_string())? {
            match decode(&row) {
                Ok(r) => resume.push(r),
                Err(why) => {
                    warn!(job_id = %row.job_id, %why, "a journaled job cannot be resumed");
                    let envelope = Envelope {
                        status: "failed".into(),
                        error: Some(format!("the job's journal record cannot be resumed: {why}")),
                        attempts: row.attempt,
                        ..Envelope::submitted(row.job_id)
                    };
                    unreadable.push(end_op(row.job_id, &envelope, false));
                }
            }
        }
        journal.apply(&unreadable).map_err(|e| e.to_string())?;
        let (handle, stopped) = jobmesh_journal::spawn_observed(journal, observer)
            .map_err(|e| format!("cannot start the journal: {e}"))?;
        Ok(Opened {
            store: Store {
                handle,
                data_dir: data_dir.to_owned(),
            },
            stopped,
            resume,
        })
    }

    /// Records a submitted job (its in-memory blobs written to the data dir
    /// first): returns once its record is queued in the journal, ahead of
    /// anything the daemon writes about it later, with what resolves once
    /// it is on disk.
    pub(crate) async fn submit(
        &self,
        spec: &JobSpec,
        blobs: &[Prepared],
    ) -> Result<jobmesh_journal::Committed, String> {
        let job_id = spec.job_id;
        let in_memory = blobs.iter().any(|b| matches!(b.source, Source::Bytes(_)));
        let stored = if in_memory {
            let (dir, blobs) = (self.data_dir.clone(), blobs.to_vec());
            tokio::task::spawn_blocking(move || persist_inputs(&dir, job_id, &blobs))
                .await
                .map_err(|e| e.to_string())?
        } else {
            persist_inputs(&self.data_dir, job_id, blobs)
        }
        .map_err(|e| {
            format!(
                "cannot keep the job's input blobs in {}: {e}",
                self.data_dir.display()
            )
        })?;
        let submit = Op::Submit {
            job_id,
            spec: StoredSpec::of(spec),
            blobs: stored,
            at_ms: now_ms(),
        };
        self.handle
            .queue(vec![submit], Durability::Synced)
            .await
            .map_err(|e| e.to_string())
    }

    /// A job as the journal has it (`None`: never submitted here, or
    /// expired). Reading an ended job's outcome marks it fetched.
    pub(crate) async fn stored(&self, job_id: JobId) -> Result<Option<StoredJob>, String> {
        let row = self
            .handle
            .read(move |j| {
                let row = j.job(job_id)?;
                if row.as_ref().is_some_and(|r| r.outcome.is_some()) {
                    let fetched = Op::Fetched {
                        job_id,
                        at_ms: now_ms(),
                    };
                    j.apply_as(&[fetched], Durability::Written)?;
                }
                Ok(row)
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.map(|r| match r.outcome {
            Some(outcome) => StoredJob::Ended(outcome),
            None => StoredJob::Unfinished {
                attempt: r.attempt,
                worker: r.worker,
            },
        }))
    }
}

/// The daemon's side of the store: the steps of its jobs, gathered for a
/// batch (the daemon loop never waits for the disk).
pub(crate) struct Steps {
    store: Store,
    /// Changes not yet handed to the journal thread: gathering for a batch,
    /// or back because its queue was full. Bounded by the jobs held (a few
    /// changes each), since submits themselves wait for the journal.
    pending: Vec<Op>,
    /// When the batch is due.
    due: Option<Instant>,
}

impl Steps {
    pub(crate) fn new(store: Store) -> Self {
        Self {
            store,
            pending: Vec::new(),
            due: None,
        }
    }

    fn push(&mut self, now: Instant, op: Op) {
        self.due.get_or_insert(now + STEPS_BATCH_DELAY);
        self.pending.push(op);
    }

    /// What the node asks for: an attempt handed out, or a job taken back.
    pub(crate) fn node_op(&mut self, now: Instant, op: JournalOp) {
        let op = match op {
            JournalOp::Attempt {
                job_id,
                attempt,
                worker,
            } => Op::Attempt {
                job_id,
                attempt,
                worker: worker.to_string(),
            },
            JournalOp::Requeue { job_id } => Op::Requeue { job_id },
        };
        self.push(now, op);
    }

    /// A job's outcome; `fetched` when a caller is there to take it. With
    /// result blobs, returns the work that keeps them in the data dir (a
    /// hard link when the spool shares its file system) and then records the
    /// outcome naming them, for the caller to run in a task.
    pub(crate) fn end(
        &mut self,
        now: Instant,
        report: &JobReport,
        fetched: bool,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let job_id = report.job_id;
        let mut envelope = Envelope::from_report(report);
        if report.blobs.is_empty() {
            self.push(now, end_op(job_id, &envelope, fetched));
            return None;
        }
        let blobs = report.blobs.clone();
        let dir = results_dir(&self.store.data_dir, job_id);
        let handle = self.store.handle.clone();
        Some(async move {
            let saved = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                save_blobs(&blobs, None, Some(&dir))
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match saved {
                Ok(infos) => envelope.blobs = infos,
                Err(why) => {
                    warn!(%job_id, %why, "a result's blobs could not be kept for `peer result`");
                    envelope.error = Some(format!("the result's blobs were not kept: {why}"));
                }
            }
            let ops = vec![end_op(job_id, &envelope, fetched)];
            if let Err(e) = handle.commit(ops, Durability::Written).await {
                error!(%job_id, error = %e, "a job's outcome was not recorded");
            }
        })
    }

    /// Hands the gathered changes to the journal thread once they are due.
    pub(crate) fn flush(&mut self, now: Instant) {
        let due = self.due.is_some_and(|d| now >= d) || self.pending.len() >= STEPS_BATCH_OPS;
        if self.pending.is_empty() || !due {
            return;
        }
        // Written, not synced: losing them in a machine crash only means a
        // job runs again (its submit itself was synced).
        match self
            .store
            .handle
            .try_commit(std::mem::take(&mut self.pending), Durability::Written)
        {
            // Failures are logged by the journal thread; the daemon goes on
            // (a job whose end was not recorded is resumed after a restart).
            Ok(_) => self.due = None,
            // The queue is full: try again after another delay.
            Err(ops) => {
                self.pending = ops;
                self.due = Some(now + STEPS_BATCH_DELAY);
            }
        }
    }

    /// When gathered changes are due.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.due
    }

    /// At shutdown: waits until every change is on disk.
    pub(crate) async fn close(self) {
        if !self.pending.is_empty() {
            if let Err(e) = self
                .store
                .handle
                .commit(self.pending, Durability::Synced)
                .await
            {
                error!(error = %e, "the journal's last changes were not recorded");
            }
        }
    }
}

/// A job's outcome as the journal records it.
fn end_op(job_id: JobId, envelope: &Envelope, fetched: bool) -> Op {
    let outcome = serde_json::to_value(envelope).unwrap_or_default();
    let result_bytes =
        outcome.to_string().len() as u64 + envelope.blobs.iter().map(|b| b.size).sum::<u64>();
    Op::End {
        job_id,
        outcome,
        result_bytes,
        at_ms: now_ms(),
        fetched,
    }
}

/// The identity kept in a data dir (`identity.key`), created owner-only
/// (with the dir, if need be) the first time. A daemon restarted on its data
/// dir keeps its peer id, so workers holding results for it find it again.
pub fn identity(data_dir: &Path) -> Result<Identity, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create the data dir {}: {e}", data_dir.display()))?;
    restrict(data_dir);
    let path = data_dir.join(jobmesh_identity::KEY_FILE);
    let (identity, created) = Identity::load_or_create(&path).map_err(|e| e.to_string())?;
    if created {
        tracing::info!(peer_id = %identity.peer_id(), key = %identity.public(), file = %path.display(),
            "created this peer's identity key");
    }
    Ok(identity)
}

/// The credential file in a data dir.
pub const CREDENTIAL_FILE: &str = "credential.json";

/// The membership credential kept in `data_dir`, if any.
pub fn credential(data_dir: &Path) -> Result<Option<Credential>, String> {
    let path = data_dir.join(CREDENTIAL_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            format!(
                "{} is not a jobmesh credential: {e}; remove it and start again with --token",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Keeps `credential` in `data_dir` (owner-only, replacing any earlier
/// one atomically).
pub fn keep_credential(data_dir: &Path, credential: &Credential) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create the data dir {}: {e}", data_dir.display()))?;
    let path = data_dir.join(CREDENTIAL_FILE);
    let tmp = data_dir.join(format!("{CREDENTIAL_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // Plain data: serializing cannot fail.
        f.write_all(&serde_json::to_vec_pretty(credential).unwrap_or_default())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| format!("cannot keep the credential in {}: {e}", path.display()))
}

/// Drops kept results past [`RESULT_TTL`] or over [`RESULT_BYTES_CAP`], and
/// their files.
fn expire(journal: &mut Journal, data_dir: &Path) -> Result<(), String> {
    let ttl = u64::try_from(RESULT_TTL.as_millis()).unwrap_or(u64::MAX);
    let gone = journal
        .expire(now_ms(), ttl, RESULT_BYTES_CAP)
        .map_err(|e| e.to_string())?;
    for row in &gone {
        for dir in [
            inputs_dir(data_dir, row.job_id),
            results_dir(data_dir, row.job_id),
        ] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot remove an expired job's files")
                }
            }
        }
    }
    if !gone.is_empty() {
        tracing::info!(jobs = gone.len(), "expired kept results");
    }
    Ok(())
}

fn decode(row: &JobRow) -> Result<Resume, String> {
    let spec = StoredSpec::decode(row)?;
    let stored: Vec<StoredBlob> =
        serde_json::from_value(row.blobs.clone()).map_err(|e| format!("blobs: {e}"))?;
    let blobs = stored
        .into_iter()
        .map(|b| Prepared {
            meta: b.meta,
            source: Source::File(b.path),
            _dir: None,
        })
        .collect();
    Ok(Resume {
        spec,
        blobs,
        attempts_before: row.attempt.saturating_add(RESUME_ATTEMPT_GAP),
        held_by: row
            .worker
            .as_deref()
            .and_then(|w| w.parse().ok())
            .map(PeerId),
    })
}

/// The data dir holds job inputs and results: owner only.
fn restrict(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        warn!(dir = %dir.display(), error = %e, "cannot make the data dir private");
    }
}

/// The default data dir of a daemon: `$XDG_DATA_HOME/jobmesh/<pool>/<name>`,
/// else `~/.local/share/jobmesh/<pool>/<name>` (`dirs::data_dir`: a relative
/// `$XDG_DATA_HOME` is ignored, as the XDG spec says). `None` without a home.
pub fn default_data_dir(pool: &str, name: &str) -> Option<PathBuf> {
    Some(dirs::data_dir()?.join("jobmesh").join(pool).join(name))
}

#[cfg(test)]
mod tests {
    use jobmesh_core::{JobOptions, StrategyKind};
    use serde_json::json;

    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            job_id: uuid::Uuid::new_v4(),
            capability: Capability::new("echo").expect("valid"),
            input: json!({"n": [1, 2]}),
            options: JobOptions {
                timeout: Duration::from_millis(1500),
                priority: -3,
                max_retries: 5,
                retry_on_disconnect: false,
                strategy: Some(StrategyKind::Affinity),
                affinity: Some("k".into()),
            },
        }
    }

    fn row(spec_json: Value, blobs: Value, job_id: JobId) -> JobRow {
        JobRow {
            job_id,
            spec: spec_json,
            blobs,
            state: jobmesh_journal::JobState::Queued,
            attempt: 0,
            worker: None,
            outcome: None,
            result_bytes: 0,
            submitted_ms: 0,
            ended_ms: None,
            fetched_ms: None,
        }
    }

    /// Reads the environment, never sets it: tests share one process.
    #[test]
    fn the_default_data_dir_is_per_pool_and_name_in_the_xdg_data_dir() {
        let Some(dir) = default_data_dir("p", "n") else {
            return; // no home directory at all
        };
        let xdg = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .filter(|d| d.is_absolute());
        match xdg {
            Some(base) => assert_eq!(dir, base.join("jobmesh/p/n")),
            None => assert!(dir.ends_with(".local/share/jobmesh/p/n"), "{dir:?}"),
        }
    }

    #[test]
    fn a_spec_and_its_blobs_come_back_as_they_were_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = spec();
        let file = dir.path().join("given.bin");
        std::fs::write(&file, b"on disk").expect("write");
        let meta = |index: u16, bytes: &[u8]| BlobMeta {
            index,
            size: bytes.len() as u64,
            blake3: blake3::hash(bytes).to_hex().to_string(),
            name: None,
        };
        let blobs = vec![
            Prepared {
                meta: meta(0, b"in memory"),
                source: Source::Bytes(bytes::Bytes::from_static(b"in memory")),
                _dir: None,
            },
            Prepared {
                meta: meta(1, b"on disk"),
                source: Source::File(file.clone()),
                _dir: None,
            },
        ];
        let stored = persist_inputs(dir.path(), s.job_id, &blobs).expect("persist");
        let back = decode(&row(StoredSpec::of(&s), stored, s.job_id)).expect("decodes");
        assert_eq!(back.spec, s);
        let paths: Vec<PathBuf> = back
            .blobs
            .iter()
            .map(|b| match &b.source {
                Source::File(p) => p.clone(),
                Source::Bytes(_) => panic!("resumed blobs are files"),
            })
            .collect();
        // The in-memory blob was written to the data dir; the file stays where it is.
        assert_eq!(
            std::fs::read(&paths[0]).expect("kept"),
            b"in memory".to_vec()
        );
        assert!(paths[0].starts_with(inputs_dir(dir.path(), s.job_id)));
        assert_eq!(paths[1], file);
        assert_eq!(back.blobs[1].meta, blobs[1].meta);
    }

    #[tokio::test]
    async fn a_data_dir_keeps_its_identity_and_resumes_only_readable_jobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Store::open(dir.path(), std::sync::Arc::new(|_, _| {})).expect("opens");
        let (good, bad) = (spec(), uuid::Uuid::new_v4());
        first
            .store
            .handle
            .commit(
                vec![
                    Op::Submit {
                        job_id: good.job_id,
                        spec: StoredSpec::of(&good),
                        blobs: json!([]),
                        at_ms: 1,
                    },
                    Op::Submit {
                        job_id: bad,
                        spec: json!({"capability": "Not A Name"}),
                        blobs: json!([]),
                        at_ms: 2,
                    },
                ],
                jobmesh_journal::Durability::Synced,
            )
            .await
            .expect("journaled");
        let id = identity(dir.path()).expect("created").peer_id();
        drop(first.store);
        first.stopped.wait().await;

        let again = Store::open(dir.path(), std::sync::Arc::new(|_, _| {})).expect("reopens");
        assert_eq!(
            identity(dir.path()).expect("kept").peer_id(),
            id,
            "the peer id is kept"
        );
        assert_eq!(
            again
                .resume
                .iter()
                .map(|r| r.spec.job_id)
                .collect::<Vec<_>>(),
            vec![good.job_id]
        );
        let ended = again
            .store
            .handle
            .read(move |j| j.job(bad))
            .await
            .expect("read")
            .expect("kept");
        let outcome = ended.outcome.expect("ended");
        assert_eq!(outcome["status"], "failed");
        assert!(
            outcome["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot be resumed")),
            "{outcome}"
        );
    }
}
