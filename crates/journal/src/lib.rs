//! jobmesh's job journal: what a daemon must not forget when it crashes.
//!
//! One embedded SQLite database per daemon (`journal.db` in its data dir),
//! in WAL mode with `synchronous = FULL`: a commit returns only once it is
//! on disk. It holds
//! * the jobs this daemon submitted, from the moment their id is handed out
//!   until their result has been fetched (or has expired), with the attempt
//!   in flight, so a restarted daemon resumes every job that had not ended;
//! * results this daemon produced as a worker that could not be delivered
//!   yet, to offer again when their submitter is back;
//! * small facts about the daemon itself (its peer id).
//!
//! The journal has no clock: every change carries its time (unix
//! milliseconds) from the caller. [`Journal`] is the synchronous store;
//! [`spawn`] runs it on its own thread behind a bounded queue and commits
//! whatever has queued up in one transaction (group commit), so many
//! submits share one disk sync.
//!
//! The schema is versioned (`PRAGMA user_version`) and migrated forward on
//! open. A journal written by a newer jobmesh is refused; a corrupt one is
//! moved aside (never emptied in place) and reported.

mod schema;
mod wal;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use serde_json::Value;
use uuid::Uuid;

pub use schema::SCHEMA_VERSION;
pub use wal::{DamageAt, WalDamage};
pub use writer::{
    spawn, spawn_observed, CommitObserver, Committed, JournalHandle, Stopped, JOURNAL_QUEUE,
};

/// How far a commit must have got before it counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk (`fsync`): survives a crash of the machine.
    Synced,
    /// Written to the database file's log but not synced: survives a crash
    /// of the process (the OS holds it), and becomes durable with the next
    /// synced commit, which syncs the log up to itself. For changes whose
    /// loss only means work is done again, never a job forgotten.
    Written,
}

/// The journal's file name inside a daemon's data dir.
pub const FILE_NAME: &str = "journal.db";

/// What went wrong with the journal. Every message names the file or the
/// job and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The database could not be opened or set up.
    #[error("cannot open the journal {path}: {source}; check that the data dir exists and is writable (--data-dir)")]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's reason.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// Another daemon has this journal open.
    #[error("the journal {path} is in use by another running peer; stop it, or give this one its own --data-dir (or --name)")]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// The file was written by a newer jobmesh.
    #[error("the journal {path} has schema version {found}, from a newer jobmesh (this one knows up to {supported}); run the newer jobmesh, or point --data-dir elsewhere")]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A corrupt journal could not be moved out of the way.
    #[error("the journal {path} is corrupt and could not be moved aside: {reason}; move it away by hand")]
    MoveAside {
        /// The database file.
        path: PathBuf,
        /// Why the rename failed.
        reason: String,
    },
    /// A change could not be written; it was not recorded.
    #[error("journal write failed: {0}; the change was not recorded (is the disk full?)")]
    Write(#[source] Arc<rusqlite::Error>),
    /// The journal could not be read.
    #[error("journal read failed: {0}")]
    Read(#[source] Arc<rusqlite::Error>),
    /// A stored record does not decode.
    #[error("journal record of job {job_id} is unreadable: {reason}")]
    Record {
        /// The job.
        job_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The journal's thread is gone (the daemon is stopping).
    #[error("the journal has stopped")]
    Stopped,
}

fn read_err(e: rusqlite::Error) -> JournalError {
    JournalError::Read(Arc::new(e))
}

/// Where a submitted job stands, as far as the journal knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for a worker (never placed, or its attempt was lost).
    Queued,
    /// An attempt is out with a worker.
    Running,
    /// It has its outcome.
    Ended,
}

impl JobState {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(JobState::Queued),
            "running" => Some(JobState::Running),
            "ended" => Some(JobState::Ended),
            _ => None,
        }
    }
}

/// One submitted job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    /// Its id.
    pub job_id: Uuid,
    /// What was submitted (capability, input, options), as the daemon encodes it.
    pub spec: Value,
    /// Its input blobs (descriptions and where their bytes are kept).
    pub blobs: Value,
    /// Where it stands.
    pub state: JobState,
    /// The newest attempt handed out (0: none yet).
    pub attempt: u32,
    /// The worker of that attempt.
    pub worker: Option<String>,
    /// Its outcome, once ended (result or error, and result blobs).
    pub outcome: Option<Value>,
    /// Bytes its stored result takes (value and blobs), for the size cap.
    pub result_bytes: u64,
    /// When it was submitted.
    pub submitted_ms: u64,
    /// When it ended.
    pub ended_ms: Option<u64>,
    /// When its result was first handed to a caller.
    pub fetched_ms: Option<u64>,
}

/// A result this daemon produced as a worker and could not deliver yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Undelivered {
    /// The job.
    pub job_id: Uuid,
    /// The attempt it answers.
    pub attempt: u32,
    /// The submitter's peer id.
    pub submitter: String,
    /// The result message, as the daemon encodes it.
    pub result: Value,
    /// Its output blobs (descriptions and where their bytes are kept).
    pub blobs: Value,
    /// When the handler finished.
    pub finished_ms: u64,
}

/// One change to the journal. A batch of them is one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A job was accepted for submission: stored as queued.
    Submit {
        /// Its id.
        job_id: Uuid,
        /// What was submitted.
        spec: Value,
        /// Its input blobs.
        blobs: Value,
        /// When.
        at_ms: u64,
    },
    /// An attempt was handed to a worker.
    Attempt {
        /// The job.
        job_id: Uuid,
        /// The attempt number.
        attempt: u32,
        /// The worker's peer id.
        worker: String,
    },
    /// The attempt in flight is over without an outcome; the job waits again.
    Requeue {
        /// The job.
        job_id: Uuid,
    },
    /// The job has its outcome.
    End {
        /// The job.
        job_id: Uuid,
        /// Result or error, and result blobs.
        outcome: Value,
        /// Bytes the stored result takes.
        result_bytes: u64,
        /// When.
        at_ms: u64,
        /// Whether a caller took the outcome as it ended.
        fetched: bool,
    },
    /// A caller has the result (it stays until it expires).
    Fetched {
        /// The job.
        job_id: Uuid,
        /// When.
        at_ms: u64,
    },
    /// The job is forgotten.
    Remove {
        /// The job.
        job_id: Uuid,
    },
    /// A worker's result waits for its submitter.
    KeepUndelivered(Undelivered),
    /// That result reached its submitter (or was given up).
    Delivered {
        /// The job.
        job_id: Uuid,
        /// The attempt.
        attempt: u32,
    },
    /// A fact about the daemon.
    SetMeta {
        /// Its name.
        key: String,
        /// Its value.
        value: String,
    },
}

/// What [`Journal::open`] found.
#[derive(Debug)]
pub struct Opened {
    /// The journal, ready.
    pub journal: Journal,
    /// Where a corrupt journal found at the path was moved (a fresh one was
    /// started). The caller must report it loudly: its jobs are not resumed.
    pub moved_aside: Option<PathBuf>,
    /// Damage in the write-ahead log that SQLite passes over in silence:
    /// transactions written after it are lost. A copy of the log was kept
    /// at the path given. The caller must report it loudly.
    pub wal_damage: Option<(WalDamage, PathBuf)>,
}

/// The journal store: one SQLite connection.
#[derive(Debug)]
pub struct Journal {
    conn: Connection,
    path: PathBuf,
    /// The connection's current `synchronous` setting.
    durability: Durability,
}

const JOB_COLUMNS: &str = "job_id, spec, blobs, state, attempt, worker, outcome, \
     result_bytes, submitted_ms, ended_ms, fetched_ms";

impl Journal {
    /// Opens (creating if needed) `dir/journal.db`, migrating it to this
    /// build's schema. A corrupt file is moved aside and a fresh journal
    /// started; see [`Opened::moved_aside`].
    pub fn open(dir: &Path) -> Result<Opened, JournalError> {
        let path = dir.join(FILE_NAME);
        // Before SQLite replays the log (and later overwrites it).
        let wal_damage = keep_damaged_wal(&path);
        match Self::open_at(&path) {
            Ok(journal) => Ok(Opened {
                journal,
                moved_aside: None,
                wal_damage,
            }),
            Err(Failure::Corrupt) => {
                let moved = move_aside(&path)?;
                let journal = Self::open_at(&path).map_err(|f| f.into_error(&path))?;
                Ok(Opened {
                    journal,
                    moved_aside: Some(moved),
                    wal_damage,
                })
            }
            Err(f) => {
                // Another daemon's log, read while it wrote: not ours to keep.
                if let Some((_, copy)) = wal_damage {
                    let _ = std::fs::remove_file(copy);
                }
                Err(f.into_error(&path))
            }
        }
    }

    fn open_at(path: &Path) -> Result<Self, Failure> {
        let conn = Connection::open(path)?;
        // One daemon per data dir: the connection keeps the database locked
        // from its first write on, and that write is made here, at once
        // (no busy wait), so a second daemon is told at start.
        conn.busy_timeout(std::time::Duration::ZERO)?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        // The first statements touch the file: a non-database fails here.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Failure::Sqlite(rusqlite::Error::InvalidQuery));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; BEGIN EXCLUSIVE; COMMIT;")?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(Failure::Corrupt);
        }
        let mut journal = Self {
            conn,
            path: path.to_owned(),
            durability: Durability::Synced,
        };
        schema::migrate(&mut journal.conn)?;
        Ok(journal)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `ops` as one transaction, on disk when this returns.
    pub fn apply(&mut self, ops: &[Op]) -> Result<(), JournalError> {
        self.apply_as(ops, Durability::Synced)
    }

    /// Applies `ops` as one transaction, as far as `durability` says.
    pub fn apply_as(&mut self, ops: &[Op], durability: Durability) -> Result<(), JournalError> {
        self.apply_iter(ops, durability)
    }

    pub(crate) fn apply_iter<'a>(
        &mut self,
        ops: impl IntoIterator<Item = &'a Op>,
        durability: Durability,
    ) -> Result<(), JournalError> {
        let write = |e| JournalError::Write(Arc::new(e));
        if self.durability != durability {
            let level = match durability {
                Durability::Synced => "FULL",
                Durability::Written => "NORMAL",
            };
            self.conn
                .pragma_update(None, "synchronous", level)
                .map_err(write)?;
            self.durability = durability;
        }
        let tx = self.conn.transaction().map_err(write)?;
        for op in ops {
            apply_one(&tx, op).map_err(write)?;
        }
        tx.commit().map_err(write)
    }

    /// Jobs that have not ended, oldest first: what a restarted daemon resumes.
    pub fn unfinished(&self) -> Result<Vec<JobRow>, JournalError> {
        self.jobs_where("state != 'ended' ORDER BY submitted_ms, rowid", [])
    }

    /// One job.
    pub fn job(&self, job_id: Uuid) -> Result<Option<JobRow>, JournalError> {
        Ok(self
            .jobs_where("job_id = ?1", [job_id.to_string()])?
            .into_iter()
            .next())
    }

    /// Results kept for a submitter (or every one), oldest first.
    pub fn undelivered(&self, submitter: Option<&str>) -> Result<Vec<Undelivered>, JournalError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT job_id, attempt, submitter, result, blobs, finished_ms FROM undelivered \
                 WHERE ?1 IS NULL OR submitter = ?1 ORDER BY finished_ms, rowid",
            )
            .map_err(read_err)?;
        let rows = stmt
            .query_map([submitter], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .map_err(read_err)?;
        rows.map(|row| {
            let (id, attempt, submitter, result, blobs, finished) = row.map_err(read_err)?;
            Ok(Undelivered {
                job_id: parse_id(&id)?,
                attempt,
                submitter,
                result: parse_json(&id, "result", &result)?,
                blobs: parse_json(&id, "blobs", &blobs)?,
                finished_ms: to_ms(finished),
            })
        })
        .collect()
    }

    /// A fact about the daemon.
    pub fn meta(&self, key: &str) -> Result<Option<String>, JournalError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(read_err)
    }

    /// Removes ended jobs whose result has been kept past `ttl_ms`, then the
    /// oldest ended jobs while the kept results exceed `max_bytes`. Returns
    /// the removed rows (their blob files are the caller's to delete).
    pub fn expire(
        &mut self,
        now_ms: u64,
        ttl_ms: u64,
        max_bytes: u64,
    ) -> Result<Vec<JobRow>, JournalError> {
        let cutoff = now_ms.saturating_sub(ttl_ms);
        let mut gone = self.jobs_where("state = 'ended' AND ended_ms < ?1", [to_sql_ms(cutoff)])?;
        let kept = self.jobs_where(
            "state = 'ended' AND ended_ms >= ?1 ORDER BY ended_ms, rowid",
            [to_sql_ms(cutoff)],
        )?;
        let mut total: u64 = kept.iter().map(|j| j.result_bytes).sum();
        for job in kept {
            if total <= max_bytes {
                break;
            }
            total -= job.result_bytes;
            gone.push(job);
        }
        if !gone.is_empty() {
            let ops: Vec<Op> = gone
                .iter()
                .map(|j| Op::Remove { job_id: j.job_id })
                .collect();
            self.apply(&ops)?;
        }
        Ok(gone)
    }

    fn jobs_where<P: rusqlite::Params>(
        &self,
        condition: &str,
        params: P,
    ) -> Result<Vec<JobRow>, JournalError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {condition}");
        let mut stmt = self.conn.prepare(&sql).map_err(read_err)?;
        let rows = stmt.query_map(params, RawJob::from_row).map_err(read_err)?;
        rows.map(|r| r.map_err(read_err)?.decode()).collect()
    }
}

fn apply_one(tx: &rusqlite::Transaction<'_>, op: &Op) -> rusqlite::Result<()> {
    // Statements are prepared once per connection and cached.
    macro_rules! exec {
        ($sql:expr, $params:expr $(,)?) => {
            tx.prepare_cached($sql)?.execute($params)
        };
    }
    match op {
        Op::Submit {
            job_id,
            spec,
            blobs,
            at_ms,
        } => exec!(
            "INSERT INTO jobs (job_id, spec, blobs, state, submitted_ms) VALUES (?1, ?2, ?3, 'queued', ?4)",
            params![job_id.to_string(), spec.to_string(), blobs.to_string(), to_sql_ms(*at_ms)],
        ),
        Op::Attempt {
            job_id,
            attempt,
            worker,
        } => exec!(
            "UPDATE jobs SET state = 'running', attempt = ?2, worker = ?3 WHERE job_id = ?1 AND state != 'ended'",
            params![job_id.to_string(), attempt, worker],
        ),
        Op::Requeue { job_id } => exec!(
            "UPDATE jobs SET state = 'queued', worker = NULL WHERE job_id = ?1 AND state != 'ended'",
            [job_id.to_string()],
        ),
        Op::End {
            job_id,
            outcome,
            result_bytes,
            at_ms,
            fetched,
        } => exec!(
            "UPDATE jobs SET state = 'ended', outcome = ?2, result_bytes = ?3, ended_ms = ?4, \
             fetched_ms = CASE WHEN ?5 THEN ?4 ELSE fetched_ms END \
             WHERE job_id = ?1 AND state != 'ended'",
            params![
                job_id.to_string(),
                outcome.to_string(),
                i64::try_from(*result_bytes).unwrap_or(i64::MAX),
                to_sql_ms(*at_ms),
                fetched
            ],
        ),
        Op::Fetched { job_id, at_ms } => exec!(
            "UPDATE jobs SET fetched_ms = COALESCE(fetched_ms, ?2) WHERE job_id = ?1",
            params![job_id.to_string(), to_sql_ms(*at_ms)],
        ),
        Op::Remove { job_id } => exec!("DELETE FROM jobs WHERE job_id = ?1", [job_id.to_string()]),
        Op::KeepUndelivered(u) => exec!(
            "INSERT OR REPLACE INTO undelivered (job_id, attempt, submitter, result, blobs, finished_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                u.job_id.to_string(),
                u.attempt,
                u.submitter,
                u.result.to_string(),
                u.blobs.to_string(),
                to_sql_ms(u.finished_ms)
            ],
        ),
        Op::Delivered { job_id, attempt } => exec!(
            "DELETE FROM undelivered WHERE job_id = ?1 AND attempt = ?2",
            params![job_id.to_string(), attempt],
        ),
        Op::SetMeta { key, value } => exec!(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        ),
    }
    .map(|_| ())
}

/// A job row as SQLite hands it over, before its JSON is checked.
struct RawJob {
    job_id: String,
    spec: String,
    blobs: String,
    state: String,
    attempt: u32,
    worker: Option<String>,
    outcome: Option<String>,
    result_bytes: i64,
    submitted_ms: i64,
    ended_ms: Option<i64>,
    fetched_ms: Option<i64>,
}

impl RawJob {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            job_id: r.get(0)?,
            spec: r.get(1)?,
            blobs: r.get(2)?,
            state: r.get(3)?,
            attempt: r.get(4)?,
            worker: r.get(5)?,
            outcome: r.get(6)?,
            result_bytes: r.get(7)?,
            submitted_ms: r.get(8)?,
            ended_ms: r.get(9)?,
            fetched_ms: r.get(10)?,
        })
    }

    fn decode(self) -> Result<JobRow, JournalError> {
        let id = &self.job_id;
        Ok(JobRow {
            job_id: parse_id(id)?,
            spec: parse_json(id, "spec", &self.spec)?,
            blobs: parse_json(id, "blobs", &self.blobs)?,
            state: JobState::parse(&self.state).ok_or_else(|| JournalError::Record {
                job_id: id.clone(),
                reason: format!("unknown state {:?}", self.state),
            })?,
            attempt: self.attempt,
            worker: self.worker,
            outcome: self
                .outcome
                .as_deref()
                .map(|o| parse_json(id, "outcome", o))
                .transpose()?,
            result_bytes: u64::try_from(self.result_bytes).unwrap_or(0),
            submitted_ms: to_ms(self.submitted_ms),
            ended_ms: self.ended_ms.map(to_ms),
            fetched_ms: self.fetched_ms.map(to_ms),
        })
    }
}

fn parse_id(id: &str) -> Result<Uuid, JournalError> {
    Uuid::parse_str(id).map_err(|e| JournalError::Record {
        job_id: id.to_owned(),
        reason: format!("bad job id: {e}"),
    })
}

fn parse_json(id: &str, field: &str, text: &str) -> Result<Value, JournalError> {
    serde_json::from_str(text).map_err(|e| JournalError::Record {
        job_id: id.to_owned(),
        reason: format!("{field}: {e}"),
    })
}

fn to_sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn to_ms(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// Why opening failed, before it is told to the caller.
enum Failure {
    Corrupt,
    InUse,
    Newer { found: i64 },
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Failure::Corrupt,
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Failure::InUse,
            _ => Failure::Sqlite(e),
        }
    }
}

impl Failure {
    fn into_error(self, path: &Path) -> JournalError {
        match self {
            Failure::Newer { found } => JournalError::NewerSchema {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            },
            Failure::InUse => JournalError::InUse {
                path: path.to_owned(),
            },
            Failure::Corrupt => JournalError::MoveAside {
                path: path.to_owned(),
                reason: "it is still corrupt after being moved aside".into(),
            },
            Failure::Sqlite(e) => JournalError::Open {
                path: path.to_owned(),
                source: Arc::new(e),
            },
        }
    }
}

/// Inspects the database's write-ahead log; if SQLite would drop frames
/// written after a damaged one, copies the log to the first free
/// `…-wal.damaged.N` and says so. Unreadable or uncopiable: nothing to add
/// (SQLite reports what it cannot read itself).
fn keep_damaged_wal(path: &Path) -> Option<(WalDamage, PathBuf)> {
    let wal = with_suffix(path, "-wal");
    let file = std::fs::File::open(&wal).ok()?;
    let damage = wal::inspect(std::io::BufReader::new(file)).ok()??;
    let copy = (1..10_000)
        .map(|n| with_suffix(&wal, &format!(".damaged.{n}")))
        .find(|t| !t.exists())?;
    std::fs::copy(&wal, &copy).ok()?;
    Some((damage, copy))
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Renames `path` (and its `-wal` and `-shm` files) to the first free
/// `path.corrupt.N`; returns the new database path.
fn move_aside(path: &Path) -> Result<PathBuf, JournalError> {
    let with = with_suffix;
    let fail = |reason: String| JournalError::MoveAside {
        path: path.to_owned(),
        reason,
    };
    let target = (1..10_000)
        .map(|n| with(path, &format!(".corrupt.{n}")))
        .find(|t| !t.exists())
        .ok_or_else(|| fail("no free name".into()))?;
    std::fs::rename(path, &target).map_err(|e| fail(e.to_string()))?;
    for side in ["-wal", "-shm"] {
        let from = with(path, side);
        if from.exists() {
            std::fs::rename(&from, with(&target, side)).map_err(|e| fail(e.to_string()))?;
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests;
