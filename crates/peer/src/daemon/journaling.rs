//! The daemon's journal writes: every step of a submitted job, queued
//! without waiting (the daemon loop never awaits the disk).
//!
//! A submit itself is journaled by the caller before the daemon sees it
//! (`PeerHandle::submit_*`), so its id is never handed out before it is
//! durable. Here: attempts, requeues, the outcome (with result blobs linked
//! or copied into the data dir) and whether a caller took it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jobmesh_journal::{Durability, JournalHandle, Op};
use jobmesh_node::JournalOp;
use tracing::{error, warn};

use super::Daemon;
use crate::api::JobReport;
use crate::control::{save_blobs, Envelope};
use crate::durable;

/// Changes wait in the loop at most this long before they go to the journal
/// thread together: one commit for a burst of jobs' steps instead of one per
/// step. They are all `Written` changes (a crash loses at most this window,
/// which only means jobs run again).
const JOURNAL_BATCH_DELAY: Duration = Duration::from_millis(5);
/// ... or until this many have gathered.
const JOURNAL_BATCH_OPS: usize = 512;

/// The journal as the daemon loop uses it.
pub(super) struct Journaling {
    pub(super) handle: JournalHandle,
    pub(super) data_dir: PathBuf,
    /// Changes not yet handed to the journal thread: gathering for a batch,
    /// or back because its queue was full. Bounded by the jobs held (a few
    /// changes each), since submits themselves wait for the journal.
    pub(super) pending: Vec<Op>,
    /// When the batch is due.
    pub(super) due: Option<Instant>,
}

impl Daemon {
    fn journal(&mut self, op: Op) {
        if let Some(j) = &mut self.journaling {
            j.due
                .get_or_insert_with(|| Instant::now() + JOURNAL_BATCH_DELAY);
            j.pending.push(op);
        }
    }

    /// Hands the gathered changes to the journal thread once they are due.
    pub(super) fn flush_journal(&mut self, now: Instant) {
        let Some(j) = &mut self.journaling else {
            return;
        };
        let due = j.due.is_some_and(|d| now >= d) || j.pending.len() >= JOURNAL_BATCH_OPS;
        if j.pending.is_empty() || !due {
            return;
        }
        // Written, not synced: losing them in a machine crash only means a
        // job runs again (its submit itself was synced).
        match j
            .handle
            .try_commit(std::mem::take(&mut j.pending), Durability::Written)
        {
            // Failures are logged by the journal thread; the daemon goes on
            // (a job whose end was not recorded is resumed after a restart).
            Ok(_) => j.due = None,
            // The queue is full: try again after another delay.
            Err(ops) => {
                j.pending = ops;
                j.due = Some(now + JOURNAL_BATCH_DELAY);
            }
        }
    }

    /// When gathered changes are due for the journal.
    pub(super) fn journal_deadline(&self) -> Option<Instant> {
        self.journaling.as_ref().and_then(|j| j.due)
    }

    /// At shutdown: waits until every change is on disk.
    pub(super) async fn close_journal(&mut self) {
        if let Some(j) = self.journaling.take() {
            if !j.pending.is_empty() {
                if let Err(e) = j.handle.commit(j.pending, Durability::Synced).await {
                    error!(error = %e, "the journal's last changes were not recorded");
                }
            }
        }
    }

    /// Journals what the node asks for: an attempt handed out or taken back.
    pub(super) fn journal_op(&mut self, op: JournalOp) {
        self.journal(match op {
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
        });
    }

    /// Journals a job's outcome; `fetched` when a caller is there to take it.
    pub(super) fn journal_end(&mut self, report: &JobReport, fetched: bool) {
        let Some(j) = &self.journaling else {
            return;
        };
        let job_id = report.job_id;
        let mut envelope = Envelope::from_report(report);
        if report.blobs.is_empty() {
            let outcome = serde_json::to_value(&envelope).unwrap_or_default();
            let bytes = outcome.to_string().len() as u64;
            self.journal(end_op(job_id, outcome, bytes, fetched));
            return;
        }
        // Result blobs go into the data dir first (a hard link when the spool
        // shares its file system), then the outcome naming them is recorded.
        let blobs = report.blobs.clone();
        let dir = durable::results_dir(&j.data_dir, job_id);
        let handle = j.handle.clone();
        self.tracker.spawn(async move {
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
            let outcome = serde_json::to_value(&envelope).unwrap_or_default();
            let bytes = outcome.to_string().len() as u64
                + envelope.blobs.iter().map(|b| b.size).sum::<u64>();
            let ops = vec![end_op(job_id, outcome, bytes, fetched)];
            if let Err(e) = handle.commit(ops, Durability::Written).await {
                error!(%job_id, error = %e, "a job's outcome was not recorded");
            }
        });
    }
}

fn end_op(
    job_id: jobmesh_wire::dc::JobId,
    outcome: serde_json::Value,
    bytes: u64,
    fetched: bool,
) -> Op {
    Op::End {
        job_id,
        outcome,
        result_bytes: bytes,
        at_ms: durable::now_ms(),
        fetched,
    }
}
