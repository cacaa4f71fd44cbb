//! The journal's schema, one migration per version. `PRAGMA user_version`
//! holds the version a file is at; opening runs the missing migrations in
//! order, each in its own transaction. Migrations are append-only: a
//! released one is never edited.
//!
//! Kept hand-written (issue 17): no `rusqlite_migration` release builds with
//! our rusqlite 0.43 (its newest, 2.6.0, needs rusqlite 0.40, whose
//! `libsqlite3-sys` cannot be linked beside ours). It numbers versions as
//! this file does (migration `i` sets `user_version` to `i + 1`), so a later
//! swap would open existing journals as they are.

use rusqlite::Connection;

use crate::Failure;

/// Migration `i` takes a journal from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: submitted jobs, undelivered worker results, daemon facts.
    "CREATE TABLE jobs (
         job_id       TEXT PRIMARY KEY NOT NULL,
         spec         TEXT NOT NULL,
         blobs        TEXT NOT NULL,
         state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'ended')),
         attempt      INTEGER NOT NULL DEFAULT 0,
         worker       TEXT,
         outcome      TEXT,
         result_bytes INTEGER NOT NULL DEFAULT 0,
         submitted_ms INTEGER NOT NULL,
         ended_ms     INTEGER,
         fetched_ms   INTEGER
     );
     CREATE INDEX jobs_by_state ON jobs (state, ended_ms);
     CREATE TABLE undelivered (
         job_id      TEXT NOT NULL,
         attempt     INTEGER NOT NULL,
         submitter   TEXT NOT NULL,
         result      TEXT NOT NULL,
         blobs       TEXT NOT NULL,
         finished_ms INTEGER NOT NULL,
         PRIMARY KEY (job_id, attempt)
     );
     CREATE TABLE meta (
         key   TEXT PRIMARY KEY NOT NULL,
         value TEXT NOT NULL
     );",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn migrate(conn: &mut Connection) -> Result<(), Failure> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(Failure::Newer { found });
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::debug!(version, "journal schema migrated");
    }
    Ok(())
}
