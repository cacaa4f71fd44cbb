//! The daemon's side of the journal (`jobmesh-journal`): what a submitted
//! job, its input blobs and its outcome look like on disk, and how a
//! restarted daemon reads them back.
//!
//! Layout of a data dir:
//! ```text
//! <data dir>/journal.db        the journal (jobs, undelivered results, facts)
//! <data dir>/inputs/<job id>/  input blobs that were in memory when submitted
//! <data dir>/results/<job id>/ result blobs, kept with the result
//! ```
//! A job's input files given by path are not copied: the journal keeps the
//! path and the digest, and a file changed before a resumed job is sent
//! fails that job's digest check at the worker, with an error naming it.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobmesh_core::JobSpec;
use jobmesh_journal::{JobRow, Journal, JournalHandle, Op, Stopped};
use jobmesh_wire::blob::BlobMeta;
use jobmesh_wire::dc::JobId;
use jobmesh_wire::{Capability, PeerId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{error, warn};

use crate::blobs::{Prepared, Source};
use crate::envelope::{Envelope, SubmitOptions};

/// The journal's key for this daemon's peer id: kept across restarts, so
/// workers holding results for it find it again.
const PEER_ID: &str = "peer_id";

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
pub(crate) fn now_ms() -> u64 {
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
pub(crate) fn inputs_dir(data_dir: &Path, job_id: JobId) -> PathBuf {
    data_dir.join("inputs").join(job_id.to_string())
}

/// The directory of a job's kept result blobs.
pub(crate) fn results_dir(data_dir: &Path, job_id: JobId) -> PathBuf {
    data_dir.join("results").join(job_id.to_string())
}

/// Writes the blobs that are in memory to the job's inputs dir (blocking)
/// and describes every blob with the file holding it.
pub(crate) fn persist_inputs(
    data_dir: &Path,
    job_id: JobId,
    blobs: &[Prepared],
) -> io::Result<Value> {
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

/// The journal of a daemon, opened and read at start.
pub(crate) struct OpenedJournal {
    pub(crate) data_dir: PathBuf,
    pub(crate) handle: JournalHandle,
    pub(crate) stopped: Stopped,
    pub(crate) peer_id: PeerId,
    pub(crate) resume: Vec<Resume>,
}

/// Opens (creating) the data dir and its journal: the peer id kept there (a
/// new one is stored the first time), the jobs to resume, and the journal
/// thread. Jobs whose record cannot be read end with an error saying so.
pub(crate) fn open(data_dir: &Path) -> Result<OpenedJournal, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create the data dir {}: {e}", data_dir.display()))?;
    restrict(data_dir);
    let opened = Journal::open(data_dir).map_err(|e| e.to_string())?;
    if let Some(moved) = &opened.moved_aside {
        error!(moved_to = %moved.display(),
            "the journal was corrupt: moved aside and a fresh one started; its jobs are not resumed");
    }
    let mut journal = opened.journal;
    let stored_id = journal
        .meta(PEER_ID)
        .map_err(|e| e.to_string())?
        .and_then(|s| s.parse().ok())
        .map(PeerId);
    let peer_id = match stored_id {
        Some(id) => id,
        None => {
            let id = PeerId::random();
            journal
                .apply(&[Op::SetMeta {
                    key: PEER_ID.into(),
                    value: id.0.to_string(),
                }])
                .map_err(|e| e.to_string())?;
            id
        }
    };
    expire(&mut journal, data_dir)?;
    let mut resume = Vec::new();
    let mut unreadable = Vec::new();
    for row in journal.unfinished().map_err(|e| e.to_string())? {
        match decode(&row) {
            Ok(r) => resume.push(r),
            Err(why) => {
                warn!(job_id = %row.job_id, %why, "a journaled job cannot be resumed");
                unreadable.push(Op::End {
                    job_id: row.job_id,
                    outcome: serde_json::to_value(Envelope {
                        status: "failed".into(),
                        error: Some(format!("the job's journal record cannot be resumed: {why}")),
                        attempts: row.attempt,
                        ..Envelope::submitted(row.job_id)
                    })
                    .unwrap_or_default(),
                    result_bytes: 0,
                    at_ms: now_ms(),
                    fetched: false,
                });
            }
        }
    }
    journal.apply(&unreadable).map_err(|e| e.to_string())?;
    let (handle, stopped) =
        jobmesh_journal::spawn(journal).map_err(|e| format!("cannot start the journal: {e}"))?;
    Ok(OpenedJournal {
        data_dir: data_dir.to_owned(),
        handle,
        stopped,
        peer_id,
        resume,
    })
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
/// else `~/.local/share/jobmesh/<pool>/<name>`.
pub fn default_data_dir(pool: &str, name: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("jobmesh").join(pool).join(name))
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
    async fn a_data_dir_keeps_its_peer_id_and_resumes_only_readable_jobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = open(dir.path()).expect("opens");
        let (good, bad) = (spec(), uuid::Uuid::new_v4());
        first
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
        let id = first.peer_id;
        drop(first.handle);
        first.stopped.wait().await;

        let again = open(dir.path()).expect("reopens");
        assert_eq!(again.peer_id, id, "the peer id is kept");
        assert_eq!(
            again
                .resume
                .iter()
                .map(|r| r.spec.job_id)
                .collect::<Vec<_>>(),
            vec![good.job_id]
        );
        let ended = again
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
