//! What the simulator logs beyond the client's [`History`](crate::check::History),
//! and the checks over it that lost / duplicated cannot state:
//!
//! * **No unexplained re-run** ([`Audit::unexplained_reruns`]): every run of
//!   a job after its first follows an earlier run that failed retryably or
//!   timed out, or a fault that touched the job (one of its workers killed,
//!   frozen, cut off, or a link of theirs slowed or lost by
//!   retransmissions; its submitter frozen, cut off or on such a link).
//! * **No re-run of a finished result** ([`Audit::reruns_after_ok`]): a
//!   worker that finished a job Ok keeps its result until the submitter's
//!   receipt, so it never runs that job again unless it was killed since.
//!
//! (The third, no job ends "cancelled" when nobody cancelled it, is checked
//! as each job ends, in [`Sim`](crate::Sim).)
//!
//! Times are virtual, since the start. [`Allowances`] names the product
//! bugs a default run tolerates, each as narrowly as it can be told apart.

use std::collections::BTreeMap;
use std::time::Duration;

use jobmesh_core::{AttemptOutcome, KEEP_RESULTS_FOR};
use jobmesh_wire::dc::JobId;

use crate::Violation;

/// How long after a fault ends it may still explain a re-run. What the fault
/// held back (a dispatch, a result) is delivered just after it ends, and a
/// run it starts late may first wait for its input set (64 MiB at the
/// default 50 MB/s: 1.4 s) and a free slot; 5 s covers that with room.
pub const FAULT_SLACK: Duration = Duration::from_secs(5);

/// Faults of a worker that explain a re-run of what it ran.
const WORKER_FAULTS: &[FaultKind] = &[
    FaultKind::Kill,
    FaultKind::Freeze,
    FaultKind::Isolate,
    FaultKind::LinkLoss,
];
/// Faults of a submitter that explain a re-run of its job.
const SUBMITTER_FAULTS: &[FaultKind] =
    &[FaultKind::Freeze, FaultKind::Isolate, FaultKind::LinkLoss];

/// How a worker words a kept result whose blobs could not reach its
/// submitter (`jobmesh-node`'s transfers).
const RESULT_BLOBS_UNSENT: &str = "before the result's blobs could be sent";

/// After a signal-server restart, how long the first views may lack peers
/// that have not joined again: peers reconnect within a second (the
/// simulator's backoff draws 50–1000 ms), plus a message's latency.
pub const REJOIN_WINDOW: Duration = Duration::from_millis(1_100);

/// Product bugs a default run tolerates, each one narrowly. Every one is a
/// known bug written up in `docs/reliability.md`; switch it off (or remove
/// it) once the product is fixed, and the check it relaxes is whole again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowances {
    /// A restarted signal-server's first complete view lacks the peers that
    /// have not joined it again yet; the submitter takes them as gone and
    /// loses the attempts they run, although its links to them are open
    /// (the job runs twice). Allowed: a re-run after an attempt its
    /// submitter declared lost within [`REJOIN_WINDOW`] of a restart, or a
    /// resumed job of a killed submitter placed elsewhere within it. Since
    /// the node keeps attempts whose link is open, only the second remains
    /// (seed 3466 of 5,000): a resumed job waits for its holder only until
    /// the view is complete, and that view may lack the holder.
    pub lost_to_restarted_signal_view: bool,
    /// A dial begun while the signal-server is down is never relayed and
    /// hangs for its whole connect timeout (the node ignores
    /// `SignalDisconnected`); the attempts queued on it are given up (lease
    /// or timeout), yet their `Submit` stays queued on the link and goes
    /// out (with a `Cancel`, or alone) once a link to that worker opens: the
    /// worker runs an attempt given up, even of a job that ended. Likewise
    /// an attempt given up while its inputs upload: the upload goes on, and
    /// the worker starts the handler before the `Cancel` queued behind the
    /// blobs reaches it. Allowed: a re-run pair one of whose runs is of an
    /// attempt its submitter had given up (or replaced by a newer one)
    /// before the run started; each such run excuses one re-run. Since the
    /// node drops what a link held for attempts given up while it opened,
    /// only the upload case remains (seed 1473 of 5,000): bytes already in
    /// the channel cannot be recalled.
    pub submit_of_given_up_attempt: bool,
    /// A submitter killed while a worker's Ok result with output blobs goes
    /// out to it: once restarted, its new attempts re-attach to the kept
    /// result, which the worker now answers as a retryable failure ("the
    /// submitter's link closed before the result's blobs could be sent"),
    /// and the job runs again. Allowed: a re-run after the submitter, killed
    /// before, gave an attempt up with that failure.
    pub result_blobs_lost_with_submitter: bool,
    /// A stale Ok result that arrives while its job waits to be tried again
    /// is discarded and receipted, so the worker drops it and the next
    /// attempt there runs the job again. Allowed: a worker's re-run after
    /// an Ok whose receipt reached it after the submitter had retried.
    pub stale_result_receipted: bool,
}

impl Default for Allowances {
    /// Every known product bug allowed (the swarm stays green).
    fn default() -> Self {
        Self {
            lost_to_restarted_signal_view: true,
            submit_of_given_up_attempt: true,
            result_blobs_lost_with_submitter: true,
            stale_result_receipted: true,
        }
    }
}

impl Allowances {
    /// Nothing allowed: every check whole.
    pub const NONE: Self = Self {
        lost_to_restarted_signal_view: false,
        submit_of_given_up_attempt: false,
        result_blobs_lost_with_submitter: false,
        stale_result_receipted: false,
    };
}

/// How a handler run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// It returned a value.
    Ok,
    /// It failed and said a retry may help (a worker-side timeout too).
    Retryable,
    /// It failed for good.
    Failed,
    /// Its node told it to stop.
    Cancelled,
    /// Its process was killed under it.
    Killed,
}

/// One run of a job's handler.
#[derive(Debug, Clone)]
pub struct HandlerRun {
    /// The job.
    pub job_id: JobId,
    /// The attempt: the newest one offered the worker when it started.
    pub attempt: Option<u32>,
    /// The peer it ran on.
    pub peer: usize,
    /// When it started.
    pub started: Duration,
    /// When and how it ended (None: still running at the end).
    pub ended: Option<(Duration, RunEnd)>,
}

/// What a fault did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Killed and restarted on its journal.
    Kill,
    /// Frozen (SIGSTOP).
    Freeze,
    /// Cut off from everyone.
    Isolate,
    /// A message on one of its links needed retransmissions (it and what
    /// follows it arrive late), or too many and the link closed.
    LinkLoss,
    /// The signal-server was down (and came back empty).
    SignalOutage,
}

/// One fault, and how long its direct effects last.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The peer it hit (None: the signal-server).
    pub peer: Option<usize>,
    /// What.
    pub kind: FaultKind,
    /// From when.
    pub from: Duration,
    /// Until when: a kill until its remotes saw its links close and it came
    /// back, a loss until the late message arrived (or the link closed).
    pub until: Duration,
}

/// An attempt a submitter offered a worker.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// The job.
    pub job_id: JobId,
    /// Its number.
    pub attempt: u32,
    /// The worker.
    pub worker: usize,
    /// When.
    pub at: Duration,
}

/// How a submitter closed an attempt it will try again.
#[derive(Debug, Clone)]
pub struct Retry {
    /// The job.
    pub job_id: JobId,
    /// The attempt it gave up.
    pub attempt: u32,
    /// When.
    pub at: Duration,
    /// How the attempt ended.
    pub outcome: AttemptOutcome,
}

/// Receipts reaching a worker: it may drop the job's kept result.
#[derive(Debug, Clone)]
pub struct ReceiptSeen {
    /// The job.
    pub job_id: JobId,
    /// The worker.
    pub worker: usize,
    /// When.
    pub at: Duration,
}

/// Everything the checks here read, logged by the simulator as it runs.
#[derive(Debug, Default, Clone)]
pub struct Audit {
    /// Handler runs, in start order.
    pub runs: Vec<HandlerRun>,
    /// Faults, in start order.
    pub faults: Vec<Fault>,
    /// Attempts offered, as their submitter logged them.
    pub dispatches: Vec<Dispatch>,
    /// Attempts given up for another one, as their submitter logged them.
    pub retries: Vec<Retry>,
    /// Receipts, as they arrived.
    pub receipts: Vec<ReceiptSeen>,
    /// The peer each acknowledged job was submitted to.
    pub submitters: BTreeMap<JobId, usize>,
}

impl Audit {
    /// A handler run of `job_id` starts on `peer`.
    pub(crate) fn run_started(
        &mut self,
        job_id: JobId,
        attempt: Option<u32>,
        peer: usize,
        at: Duration,
    ) {
        self.runs.push(HandlerRun {
            job_id,
            attempt,
            peer,
            started: at,
            ended: None,
        });
    }

    /// The open run of `job_id` on `peer` ends.
    pub(crate) fn run_ended(&mut self, job_id: JobId, peer: usize, at: Duration, end: RunEnd) {
        let open = self
            .runs
            .iter_mut()
            .rev()
            .find(|r| r.job_id == job_id && r.peer == peer && r.ended.is_none());
        if let Some(run) = open {
            run.ended = Some((at, end));
        }
    }

    /// Every open run on `peer` dies with its process.
    pub(crate) fn peer_killed(&mut self, peer: usize, at: Duration) {
        for run in self
            .runs
            .iter_mut()
            .filter(|r| r.peer == peer && r.ended.is_none())
        {
            run.ended = Some((at, RunEnd::Killed));
        }
    }

    /// A fault; a link loss that touches the last one of the same peer
    /// extends it (heavy loss would log thousands).
    pub(crate) fn fault(&mut self, fault: Fault) {
        if fault.kind == FaultKind::LinkLoss {
            let last = self
                .faults
                .iter_mut()
                .rev()
                .find(|f| f.peer == fault.peer && f.kind == FaultKind::LinkLoss);
            if let Some(last) = last.filter(|l| l.until >= fault.from) {
                last.until = last.until.max(fault.until);
                return;
            }
        }
        self.faults.push(fault);
    }

    /// Runs of `job_id`, in start order.
    fn runs_of(&self) -> BTreeMap<JobId, Vec<&HandlerRun>> {
        let mut by_job: BTreeMap<JobId, Vec<&HandlerRun>> = BTreeMap::new();
        for run in &self.runs {
            by_job.entry(run.job_id).or_default().push(run);
        }
        by_job
    }

    /// Whether a fault of one of `kinds` hit `peer` before `until` with
    /// effects lasting past `since`.
    fn fault_between(
        &self,
        peer: usize,
        kinds: &[FaultKind],
        since: Duration,
        until: Duration,
    ) -> bool {
        self.faults.iter().any(|f| {
            f.peer == Some(peer)
                && kinds.contains(&f.kind)
                && f.from <= until
                && f.until + FAULT_SLACK >= since
        })
    }

    /// Check A: every run of a job after its first is explained. Run `k`
    /// (by start) is explained by a fault of the submitter or of the peer of
    /// any run up to `k` (a fault of the later worker explains a run its
    /// held dispatch started late) between the first run and run `k`; else
    /// by an earlier run that failed retryably or timed out (on its worker
    /// or as its submitter saw it; each explains one re-run); else by an
    /// allowance.
    pub fn unexplained_reruns(&self, allow: Allowances) -> Vec<Violation> {
        let mut out = Vec::new();
        for (job_id, runs) in self.runs_of() {
            let submitter = self.submitters.get(&job_id).copied();
            let first = runs[0].started;
            let mut reruns_explained = 0;
            let mut zombies_excused = 0;
            for k in 1..runs.len() {
                let run = runs[k];
                // A submitter killed and restarted re-attaches to the runs
                // it left: its kill explains nothing by itself.
                let worker_fault = runs[..=k]
                    .iter()
                    .any(|r| self.fault_between(r.peer, WORKER_FAULTS, first, run.started));
                let submitter_fault = submitter
                    .is_some_and(|s| self.fault_between(s, SUBMITTER_FAULTS, first, run.started));
                if worker_fault || submitter_fault {
                    continue;
                }
                // An attempt that ran before run `k` (its number known, or
                // else any given up since the first run).
                let ran = |attempt: u32, at: Duration| {
                    runs[..k].iter().any(|r| match r.attempt {
                        Some(a) => a == attempt,
                        None => at >= first,
                    })
                };
                let retried = runs[..k]
                    .iter()
                    .filter(|r| self.failed_retryably(r, run.started))
                    .count();
                if retried > reruns_explained {
                    reruns_explained += 1;
                    continue;
                }
                if allow.lost_to_restarted_signal_view
                    && (self.retries.iter().any(|r| {
                        r.job_id == job_id
                            && r.at <= run.started
                            && ran(r.attempt, r.at)
                            && self.lost_after_restart(r)
                    }) || submitter.is_some_and(|s| self.resumed_after_restart(s, run.started)))
                {
                    continue;
                }
                if allow.result_blobs_lost_with_submitter
                    && submitter.is_some_and(|s| self.result_blobs_lost(job_id, s, run.started))
                {
                    continue;
                }
                // A run of a given-up attempt makes a pair with the job's other
                // run, whichever started first; it excuses one re-run.
                let zombies = runs[..=k]
                    .iter()
                    .filter(|r| self.runs_given_up_attempt(r))
                    .count();
                if allow.submit_of_given_up_attempt && zombies > zombies_excused {
                    zombies_excused += 1;
                    continue;
                }
                let peers: Vec<String> = runs[..=k]
                    .iter()
                    .map(|r| format!("p{} at {:.3} s", r.peer, r.started.as_secs_f64()))
                    .collect();
                out.push(Violation {
                    at: run.started,
                    what: format!(
                        "job {job_id} (submitted on p{}) ran again on p{} at {:.3} s with no fault or retry to explain it (runs: {})",
                        submitter.map_or("?".to_owned(), |s| s.to_string()),
                        run.peer,
                        run.started.as_secs_f64(),
                        peers.join(", ")
                    ),
                });
            }
        }
        out
    }

    /// Whether `run` failed retryably before `by`: its handler said so (or
    /// timed out), or its submitter gave its attempt up as timed out or
    /// failed retryably.
    fn failed_retryably(&self, run: &HandlerRun, by: Duration) -> bool {
        let on_worker = matches!(run.ended, Some((at, RunEnd::Retryable)) if at <= by);
        let on_submitter = run.attempt.is_some_and(|attempt| {
            self.retries.iter().any(|r| {
                r.job_id == run.job_id
                    && r.attempt == attempt
                    && r.at <= by
                    && matches!(
                        r.outcome,
                        AttemptOutcome::TimedOut
                            | AttemptOutcome::Failed {
                                retryable: true,
                                ..
                            }
                    )
            })
        });
        on_worker || on_submitter
    }

    /// Whether `submitter`, killed before, gave an attempt of `job_id` up
    /// before `by` because a worker could not send it the result's blobs.
    fn result_blobs_lost(&self, job_id: JobId, submitter: usize, by: Duration) -> bool {
        self.retries.iter().any(|r| {
            let unsent = matches!(
                &r.outcome,
                AttemptOutcome::Failed { message, .. } if message.contains(RESULT_BLOBS_UNSENT)
            );
            r.job_id == job_id
                && r.at <= by
                && unsent
                && self.faults.iter().any(|f| {
                    f.peer == Some(submitter) && f.kind == FaultKind::Kill && f.from <= r.at
                })
        })
    }

    /// Whether a run that started at `at` may be a resumed job of `submitter`
    /// (killed before) placed within [`REJOIN_WINDOW`] of a signal-server's
    /// return: the view it waited for lacked the worker that held the job.
    fn resumed_after_restart(&self, submitter: usize, at: Duration) -> bool {
        let killed = self
            .faults
            .iter()
            .any(|f| f.peer == Some(submitter) && f.kind == FaultKind::Kill && f.from <= at);
        killed
            && self.faults.iter().any(|f| {
                f.kind == FaultKind::SignalOutage && f.until <= at && at <= f.until + REJOIN_WINDOW
            })
    }

    /// Whether `retry` gave its attempt up as lost within [`REJOIN_WINDOW`]
    /// of a signal-server's return.
    fn lost_after_restart(&self, retry: &Retry) -> bool {
        retry.outcome == AttemptOutcome::Lost
            && self.faults.iter().any(|f| {
                f.kind == FaultKind::SignalOutage
                    && f.until <= retry.at
                    && retry.at <= f.until + REJOIN_WINDOW
            })
    }

    /// Whether `run` is of an attempt its submitter had given up when it
    /// started: given up (lost, timed out, failed) or replaced by a newer
    /// attempt (a worker that held the job superseded it) before then.
    fn runs_given_up_attempt(&self, run: &HandlerRun) -> bool {
        let Some(attempt) = run.attempt else {
            return false;
        };
        let given_up = self
            .retries
            .iter()
            .any(|r| r.job_id == run.job_id && r.attempt == attempt && r.at < run.started);
        let replaced = self
            .dispatches
            .iter()
            .any(|d| d.job_id == run.job_id && d.attempt > attempt && d.at < run.started);
        given_up || replaced
    }

    /// Check D: a worker that finished a job Ok runs it again only if it was
    /// killed since (its kept results live in memory) or kept it longer than
    /// [`KEEP_RESULTS_FOR`]; else by an allowance.
    pub fn reruns_after_ok(&self, allow: Allowances) -> Vec<Violation> {
        let mut out = Vec::new();
        for (job_id, runs) in self.runs_of() {
            for (k, run) in runs.iter().enumerate() {
                let finished = runs[..k].iter().find_map(|r| match r.ended {
                    Some((at, RunEnd::Ok)) if r.peer == run.peer && at <= run.started => Some(at),
                    _ => None,
                });
                let Some(done) = finished else {
                    continue;
                };
                let killed = self.faults.iter().any(|f| {
                    f.peer == Some(run.peer)
                        && f.kind == FaultKind::Kill
                        && f.from >= done
                        && f.from <= run.started
                });
                if killed || done + KEEP_RESULTS_FOR <= run.started {
                    continue;
                }
                if allow.stale_result_receipted
                    && self.stale_receipt(job_id, run.peer, done, run.started)
                {
                    continue;
                }
                out.push(Violation {
                    at: run.started,
                    what: format!(
                        "job {job_id} ran again on p{} at {:.3} s, which finished it Ok at {:.3} s and was not killed since",
                        run.peer,
                        run.started.as_secs_f64(),
                        done.as_secs_f64()
                    ),
                });
            }
        }
        out
    }

    /// Whether `worker` got a receipt for `job_id` between `since` and
    /// `until` after its submitter had given an attempt of it up.
    fn stale_receipt(
        &self,
        job_id: JobId,
        worker: usize,
        since: Duration,
        until: Duration,
    ) -> bool {
        self.receipts.iter().any(|r| {
            r.job_id == job_id
                && r.worker == worker
                && r.at >= since
                && r.at <= until
                && self
                    .retries
                    .iter()
                    .any(|t| t.job_id == job_id && t.at <= r.at)
        })
    }
}
