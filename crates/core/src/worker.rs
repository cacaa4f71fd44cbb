//! The working side as a state machine: admission against slots and
//! capabilities, the attempt each job belongs to, cancel, coalesced progress,
//! and the worker's stats.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use jobmesh_wire::dc::{DcMsg, JobId, Load, Outcome, Progress, RejectReason, MAX_ERROR_LEN};
use jobmesh_wire::{Capability, PeerId, Stats};

/// What the worker core asks the daemon to do.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum WorkerOutput {
    /// Send a message to a submitter (this peer itself under self-dispatch).
    Send {
        /// Recipient.
        to: PeerId,
        /// Message.
        msg: DcMsg,
    },
    /// Run the job's handler with a fresh cancel token, under `timeout`.
    Start {
        /// The job.
        job_id: JobId,
        /// Its handler.
        capability: Capability,
        /// Its input.
        input: serde_json::Value,
        /// Stop it after this long.
        timeout: Duration,
    },
    /// Fire the job's cancel token: its handler should stop.
    Cancel {
        /// The job.
        job_id: JobId,
    },
    /// A kept result is wanted again (its submitter re-attached under a new
    /// attempt): finish the job once more with `result` and the output
    /// blobs the daemon kept, as if its handler had just returned.
    Restore {
        /// The job.
        job_id: JobId,
        /// What its handler returned.
        result: Result<serde_json::Value, (String, bool)>,
    },
    /// A kept result is no longer wanted (delivered, refused, expired or
    /// pushed out): drop what the daemon kept with it.
    Forget {
        /// The job.
        job_id: JobId,
    },
}

/// How long a job whose submitter's link closed runs on, waiting for the
/// submitter to come back (a restart keeps its peer id) and re-attach.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(30);
/// How long a result is kept for a submitter that has not said `received`
/// (it was away, or its link died under the result).
pub const KEEP_RESULTS_FOR: Duration = Duration::from_secs(600);
/// Most results kept at once (a link's results in flight, and those of
/// submitters away); past it the oldest is dropped (its job runs again if
/// its submitter comes back: at-least-once still holds).
pub const MAX_KEPT_RESULTS: usize = 1024;

#[derive(Debug)]
struct Running {
    from: PeerId,
    attempt: u32,
    capability: Capability,
    started_at: Instant,
    last_progress_at: Option<Instant>,
    pending_progress: Option<Progress>,
    /// When the submitter last heard from us about this job (accepted,
    /// progress or a heartbeat).
    last_sent_at: Instant,
    /// Since when its submitter's link has been closed (it runs on for
    /// [`ORPHAN_GRACE`]).
    orphaned_at: Option<Instant>,
    /// Its cancel token fired (its submitter asked, or the grace ran out).
    cancelling: bool,
    /// Finishing a kept result again: it was counted when it first finished.
    restored: bool,
}

/// What [`WorkerCore::handle_submit`] did with a submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Refused (a `rejected` went back).
    Refused,
    /// Taken: its handler starts (after its input blobs, if any).
    Started,
    /// A job held here for the same submitter, now under the new attempt:
    /// nothing starts and no input is wanted.
    Reattached,
}

/// A finished job's result, kept until its submitter says it has it (or,
/// if it was away, until it comes back).
#[derive(Debug)]
struct Kept {
    from: PeerId,
    attempt: u32,
    capability: Capability,
    result: Result<serde_json::Value, (String, bool)>,
    until: Instant,
}

/// The working side of jobmesh.
///
/// A job is admitted only for a capability this peer runs, with a valid
/// input, while a slot is free and the peer is not draining; the slots are
/// the worker's backpressure. Progress from a handler goes out at most once
/// per `progress_interval` per job (the latest report wins), and any pending
/// report is flushed before the result, so the submitter sees them in order.
#[derive(Debug)]
pub struct WorkerCore {
    capabilities: Vec<Capability>,
    slots: u32,
    progress_interval: Duration,
    heartbeat_interval: Duration,
    running: HashMap<JobId, Running>,
    kept: HashMap<JobId, Kept>,
    /// `kept` by expiry, oldest first.
    kept_until: BTreeSet<(Instant, JobId)>,
    draining: bool,
    completed: u64,
    failed: u64,
    /// Per capability: finished jobs and their total run time, for the mean.
    run_time: BTreeMap<Capability, (u64, Duration)>,
    /// Per capability: jobs completed, jobs failed.
    finished: BTreeMap<Capability, [u64; 2]>,
    /// Bumped on every change of `running`; see [`Stats::seq`].
    seq: u64,
    out: VecDeque<WorkerOutput>,
}

impl WorkerCore {
    /// A worker running `capabilities` with `slots` jobs at once.
    pub fn new(capabilities: Vec<Capability>, slots: u32, progress_interval: Duration) -> Self {
        Self {
            capabilities,
            slots,
            progress_interval,
            heartbeat_interval: Duration::from_millis(jobmesh_wire::dc::HEARTBEAT_INTERVAL_MS),
            running: HashMap::new(),
            kept: HashMap::new(),
            kept_until: BTreeSet::new(),
            draining: false,
            completed: 0,
            failed: 0,
            run_time: BTreeMap::new(),
            finished: BTreeMap::new(),
            seq: 0,
            out: VecDeque::new(),
        }
    }

    /// A submit from `from`. `check` is the caller's verdict on the
    /// submitter's permission and the input (`Err((reason, why))` rejects
    /// the job: `Forbidden`, `BadInput`).
    #[allow(clippy::too_many_arguments)]
    pub fn handle_submit(
        &mut self,
        now: Instant,
        from: PeerId,
        job_id: JobId,
        attempt: u32,
        capability: Capability,
        input: serde_json::Value,
        timeout_ms: u64,
        check: Result<(), (RejectReason, String)>,
    ) -> Admission {
        if self.reattach(now, from, job_id, attempt) {
            return Admission::Reattached;
        }
        let refusal = if self.draining {
            Some((RejectReason::Draining, "worker is shutting down".to_owned()))
        } else if !self.capabilities.contains(&capability) {
            Some((
                RejectReason::UnknownCapability,
                format!("this worker does not run \"{capability}\""),
            ))
        } else if let Err(refusal) = check {
            Some(refusal)
        } else if self.running.contains_key(&job_id) || self.kept.contains_key(&job_id) {
            Some((
                RejectReason::Busy,
                format!("job {job_id} is already held here (an earlier attempt is still stopping, or its result is kept for another submitter)"),
            ))
        } else if self.running.len() >= self.slots as usize {
            Some((
                RejectReason::Busy,
                format!("all {} slots are busy", self.slots),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = refusal {
            self.send(
                from,
                DcMsg::Rejected {
                    job_id,
                    attempt,
                    reason,
                    message: jobmesh_wire::truncate(&message, MAX_ERROR_LEN),
                },
            );
            return Admission::Refused;
        }
        self.take(now, from, job_id, attempt, capability.clone(), false);
        self.out.push_back(WorkerOutput::Start {
            job_id,
            capability,
            input,
            timeout: Duration::from_millis(timeout_ms),
        });
        Admission::Started
    }

    /// Takes a slot for `job_id` and says `accepted`.
    fn take(
        &mut self,
        now: Instant,
        from: PeerId,
        job_id: JobId,
        attempt: u32,
        capability: Capability,
        restored: bool,
    ) {
        let r = Running {
            from,
            attempt,
            capability,
            started_at: now,
            last_progress_at: None,
            pending_progress: None,
            last_sent_at: now,
            orphaned_at: None,
            cancelling: false,
            restored,
        };
        self.running.insert(job_id, r);
        self.seq += 1;
        self.send(from, DcMsg::Accepted { job_id, attempt });
    }

    /// A submit of a job this worker holds for the same submitter: a running
    /// one goes on under the new attempt, a kept result is delivered under
    /// it. Works while draining (nothing new is taken on). `false`: not held.
    fn reattach(&mut self, now: Instant, from: PeerId, job_id: JobId, attempt: u32) -> bool {
        if let Some(r) = self
            .running
            .get_mut(&job_id)
            .filter(|r| r.from == from && !r.cancelling)
        {
            r.attempt = attempt;
            r.orphaned_at = None;
            r.last_sent_at = now;
            self.send(from, DcMsg::Accepted { job_id, attempt });
            return true;
        }
        if self.kept.get(&job_id).is_none_or(|k| k.from != from) {
            return false;
        }
        let Some(k) = self.unkeep(job_id) else {
            return false;
        };
        self.take(now, from, job_id, attempt, k.capability, true);
        self.out.push_back(WorkerOutput::Restore {
            job_id,
            result: k.result,
        });
        true
    }

    /// Sends a heartbeat for a running job after `interval` without any
    /// other word to its submitter (default [`HEARTBEAT_INTERVAL_MS`](jobmesh_wire::dc::HEARTBEAT_INTERVAL_MS)).
    #[must_use]
    pub fn with_heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Who submitted a running job, and which attempt of it runs here.
    pub fn submitter(&self, job_id: &JobId) -> Option<(PeerId, u32)> {
        self.running.get(job_id).map(|r| (r.from, r.attempt))
    }

    /// The submitter cancels its attempt of a running job. Anything not
    /// matching the job's submitter and attempt is ignored, and so is a
    /// kept result: an attempt given up (its lease ran out on a silent
    /// link) may be followed by a new one that wants it.
    pub fn handle_cancel(&mut self, from: PeerId, job_id: JobId, attempt: u32) {
        if let Some(r) = self
            .running
            .get_mut(&job_id)
            .filter(|r| r.from == from && r.attempt == attempt)
        {
            r.cancelling = true;
            self.out.push_back(WorkerOutput::Cancel { job_id });
        }
    }

    /// The submitter has the result of `attempt`, or does not hold the job
    /// any more: its kept copy is dropped.
    pub fn handle_received(&mut self, from: PeerId, job_id: JobId, attempt: u32) {
        if self
            .kept
            .get(&job_id)
            .is_some_and(|k| k.from == from && k.attempt == attempt)
        {
            self.unkeep(job_id);
            self.out.push_back(WorkerOutput::Forget { job_id });
        }
    }

    /// Takes a kept result out of the map and its expiry index.
    fn unkeep(&mut self, job_id: JobId) -> Option<Kept> {
        let k = self.kept.remove(&job_id)?;
        self.kept_until.remove(&(k.until, job_id));
        Some(k)
    }

    /// The link to `peer` is gone: its jobs here run on for the orphan grace,
    /// in case it comes back; their results are kept meanwhile.
    pub fn handle_link_closed(&mut self, now: Instant, peer: PeerId) {
        for r in self.running.values_mut().filter(|r| r.from == peer) {
            r.orphaned_at.get_or_insert(now);
        }
    }

    /// A link to `peer` opened: it hears, in job order, of every job of its
    /// that this worker held while it was away (see [`DcMsg::Held`]).
    pub fn handle_link_opened(&mut self, peer: PeerId) {
        let mut held: Vec<(JobId, u32)> = self
            .running
            .iter_mut()
            .filter(|(_, r)| r.from == peer && !r.cancelling)
            .filter_map(|(id, r)| r.orphaned_at.take().map(|_| (*id, r.attempt)))
            .chain(
                self.kept
                    .iter()
                    .filter(|(_, k)| k.from == peer)
                    .map(|(id, k)| (*id, k.attempt)),
            )
            .collect();
        held.sort();
        for (job_id, attempt) in held {
            self.send(peer, DcMsg::Held { job_id, attempt });
        }
    }

    /// The submitters that this worker holds jobs for and has not told
    /// (the daemon dials them when they are seen in the pool again).
    pub fn away_submitters(&self) -> std::collections::BTreeSet<PeerId> {
        self.running
            .values()
            .filter(|r| r.orphaned_at.is_some() && !r.cancelling)
            .map(|r| r.from)
            .chain(self.kept.values().map(|k| k.from))
            .collect()
    }

    /// Whether `job_id` runs for a submitter whose link is closed (its
    /// result, when it comes, is kept rather than sent).
    pub fn is_orphaned(&self, job_id: &JobId) -> bool {
        self.running
            .get(job_id)
            .is_some_and(|r| r.orphaned_at.is_some())
    }

    /// A handler reported progress.
    pub fn handle_progress(&mut self, now: Instant, job_id: JobId, progress: Progress) {
        let interval = self.progress_interval;
        let Some(r) = self.running.get_mut(&job_id) else {
            return;
        };
        let due = r
            .last_progress_at
            .is_none_or(|t| now.saturating_duration_since(t) >= interval);
        if due {
            r.last_progress_at = Some(now);
            r.last_sent_at = now;
            r.pending_progress = None;
            let (to, attempt) = (r.from, r.attempt);
            self.send(
                to,
                DcMsg::Progress {
                    job_id,
                    attempt,
                    progress,
                },
            );
        } else {
            r.pending_progress = Some(progress);
        }
    }

    /// A handler finished. `Err((message, retryable))` for a failure.
    pub fn handle_done(
        &mut self,
        now: Instant,
        job_id: JobId,
        result: Result<serde_json::Value, (String, bool)>,
    ) {
        let Some(mut r) = self.running.remove(&job_id) else {
            return;
        };
        if !r.restored {
            self.count_finished(now, &r, result.is_ok());
        }
        self.seq += 1;
        let result = result.map_err(|(message, retryable)| {
            (jobmesh_wire::truncate(&message, MAX_ERROR_LEN), retryable)
        });
        // A result of an attempt its submitter gave up on (a lease that ran
        // out on a silent link, say) is kept, not sent: it would be stale,
        // and a new attempt of the job from the same submitter re-attaches
        // to it. A stopped handler's error is worth nothing.
        let given_up = r.cancelling && result.is_ok();
        // With its submitter away there is nobody to tell now.
        if r.orphaned_at.is_none() && !given_up {
            if let Some(progress) = r.pending_progress.take() {
                let attempt = r.attempt;
                self.send(
                    r.from,
                    DcMsg::Progress {
                        job_id,
                        attempt,
                        progress,
                    },
                );
            }
            let outcome = match &result {
                Ok(value) => Outcome::Ok {
                    value: value.clone(),
                },
                Err((message, retryable)) => Outcome::Err {
                    message: message.clone(),
                    retryable: *retryable,
                },
            };
            let load = Load {
                running: u32::try_from(self.running.len()).unwrap_or(u32::MAX),
                slots: self.slots,
                seq: self.seq,
            };
            self.send(
                r.from,
                DcMsg::Result {
                    job_id,
                    attempt: r.attempt,
                    outcome,
                    load: Some(load),
                },
            );
        }
        if r.cancelling && !given_up {
            // Its submitter (or the orphan grace) stopped it: nothing to keep.
            self.out.push_back(WorkerOutput::Forget { job_id });
        } else {
            // Until the submitter says it has it: the link may die under it,
            // or be gone already.
            self.keep(now, job_id, r, result);
        }
    }

    fn count_finished(&mut self, now: Instant, r: &Running, ok: bool) {
        let ran = now.saturating_duration_since(r.started_at);
        let entry = self.run_time.entry(r.capability.clone()).or_default();
        entry.0 += 1;
        entry.1 += ran;
        let finished = self.finished.entry(r.capability.clone()).or_default();
        if ok {
            self.completed += 1;
            finished[0] += 1;
        } else {
            self.failed += 1;
            finished[1] += 1;
        }
    }

    /// Keeps a finished job's result for its submitter, pushing out the
    /// oldest kept one past [`MAX_KEPT_RESULTS`].
    fn keep(
        &mut self,
        now: Instant,
        job_id: JobId,
        r: Running,
        result: Result<serde_json::Value, (String, bool)>,
    ) {
        while self.kept.len() >= MAX_KEPT_RESULTS {
            let Some(&(_, oldest)) = self.kept_until.first() else {
                break;
            };
            self.unkeep(oldest);
            self.out.push_back(WorkerOutput::Forget { job_id: oldest });
        }
        let until = now + KEEP_RESULTS_FOR;
        self.kept_until.insert((until, job_id));
        self.kept.insert(
            job_id,
            Kept {
                from: r.from,
                attempt: r.attempt,
                capability: r.capability,
                result,
                until,
            },
        );
    }

    /// Flushes progress whose interval has passed, and sends a heartbeat
    /// (an empty progress) for every job its submitter has not heard about
    /// for a heartbeat interval.
    pub fn handle_timeout(&mut self, now: Instant) {
        let interval = self.progress_interval;
        let heartbeat = self.heartbeat_interval;
        let mut due: Vec<(JobId, PeerId, u32, Progress)> = Vec::new();
        let mut stop: Vec<JobId> = Vec::new();
        for (id, r) in &mut self.running {
            if let Some(since) = r.orphaned_at {
                // Nobody to tell; its submitter has the grace to come back.
                if !r.cancelling && now.saturating_duration_since(since) >= ORPHAN_GRACE {
                    r.cancelling = true;
                    stop.push(*id);
                }
                continue;
            }
            let ready = r
                .last_progress_at
                .is_none_or(|t| now.saturating_duration_since(t) >= interval);
            let progress = if ready {
                r.pending_progress.take()
            } else {
                None
            };
            if let Some(p) = progress {
                r.last_progress_at = Some(now);
                r.last_sent_at = now;
                due.push((*id, r.from, r.attempt, p));
            } else if now.saturating_duration_since(r.last_sent_at) >= heartbeat {
                r.last_sent_at = now;
                due.push((*id, r.from, r.attempt, Progress::default()));
            }
        }
        due.sort_by_key(|d| d.0);
        for (job_id, to, attempt, progress) in due {
            self.send(
                to,
                DcMsg::Progress {
                    job_id,
                    attempt,
                    progress,
                },
            );
        }
        stop.sort();
        for job_id in stop {
            self.out.push_back(WorkerOutput::Cancel { job_id });
        }
        while let Some(&(until, job_id)) = self.kept_until.first() {
            if until > now {
                break;
            }
            self.unkeep(job_id);
            self.out.push_back(WorkerOutput::Forget { job_id });
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due: pending
    /// progress, a job's heartbeat, an orphan's grace, a kept result's expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let running = self.running.values().filter_map(|r| match r.orphaned_at {
            Some(_) if r.cancelling => None,
            Some(since) => Some(since + ORPHAN_GRACE),
            None => {
                let beat = r.last_sent_at + self.heartbeat_interval;
                Some(match (&r.pending_progress, r.last_progress_at) {
                    (Some(_), Some(t)) => beat.min(t + self.progress_interval),
                    _ => beat,
                })
            }
        });
        let kept = self.kept_until.first().map(|(until, _)| *until);
        running.chain(kept).min()
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<WorkerOutput> {
        self.out.pop_front()
    }

    fn send(&mut self, to: PeerId, msg: DcMsg) {
        self.out.push_back(WorkerOutput::Send { to, msg });
    }

    /// Stop admitting jobs.
    pub fn drain(&mut self) {
        if !self.draining {
            self.draining = true;
            self.seq += 1;
        }
    }

    /// Runs up to `slots` jobs at once from now on. Fewer than run now
    /// cancels nothing: new jobs are refused until enough have ended.
    pub fn set_slots(&mut self, slots: u32) {
        if slots != self.slots {
            self.slots = slots;
            self.seq += 1;
        }
    }

    /// Runs these capabilities from now on. Jobs of one no longer run go on
    /// to their end; new ones are refused as `UnknownCapability`.
    pub fn set_capabilities(&mut self, capabilities: Vec<Capability>) {
        if capabilities != self.capabilities {
            self.capabilities = capabilities;
            self.seq += 1;
        }
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// The mean run time of finished jobs, per capability, in milliseconds.
    pub fn mean_run_ms(&self) -> BTreeMap<Capability, u64> {
        self.run_time
            .iter()
            .filter(|(_, (n, _))| *n > 0)
            .map(|(c, (n, total))| {
                let mean = total.as_millis() / u128::from(*n);
                (c.clone(), u64::try_from(mean).unwrap_or(u64::MAX))
            })
            .collect()
    }

    /// Stats to report to the pool (`queued` is the submitter side's to fill in).
    pub fn stats(&self) -> Stats {
        Stats {
            slots: self.slots,
            // Bounded by `slots`, itself a u32.
            running: u32::try_from(self.running.len()).unwrap_or(u32::MAX),
            queued: 0,
            completed: self.completed,
            failed: self.failed,
            seq: self.seq,
            mean_run_ms: self.mean_run_ms(),
            finished: self.finished.clone(),
            draining: self.draining,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    const MS: Duration = Duration::from_millis(1);

    fn echo() -> Capability {
        Capability::new("echo").expect("valid")
    }

    fn core() -> WorkerCore {
        WorkerCore::new(vec![echo()], 2, 100 * MS)
    }

    fn drain(w: &mut WorkerCore) -> Vec<WorkerOutput> {
        std::iter::from_fn(|| w.poll_output()).collect()
    }

    fn submit(
        w: &mut WorkerCore,
        t: Instant,
        from: PeerId,
        id: JobId,
        cap: Capability,
        check: Result<(), String>,
    ) {
        let check = check.map_err(|why| (RejectReason::BadInput, why));
        w.handle_submit(t, from, id, 1, cap, json!(1), 1000, check);
    }

    fn reason(out: &[WorkerOutput]) -> Option<RejectReason> {
        out.iter().find_map(|o| match o {
            WorkerOutput::Send {
                msg: DcMsg::Rejected { reason, .. },
                ..
            } => Some(*reason),
            _ => None,
        })
    }

    #[test]
    fn admits_up_to_slots_then_rejects_busy() {
        let (t, from) = (Instant::now(), PeerId::random());
        let mut w = core();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        submit(&mut w, t, from, a, echo(), Ok(()));
        submit(&mut w, t, from, b, echo(), Ok(()));
        let out = drain(&mut w);
        assert_eq!(out.len(), 4, "accepted + start, twice");
        assert!(matches!(out[1], WorkerOutput::Start { .. }));
        submit(&mut w, t, from, c, echo(), Ok(()));
        assert_eq!(reason(&drain(&mut w)), Some(RejectReason::Busy));
        w.handle_done(t + 10 * MS, a, Ok(json!(1)));
        let out = drain(&mut w);
        assert!(matches!(
            &out[0],
            WorkerOutput::Send {
                msg: DcMsg::Result { attempt: 1, .. },
                ..
            }
        ));
        submit(&mut w, t, from, c, echo(), Ok(()));
        assert_eq!(reason(&drain(&mut w)), None);
        assert_eq!(w.stats().running, 2);
        assert_eq!(w.stats().completed, 1);
        assert_eq!(w.stats().finished.get(&echo()), Some(&[1, 0]));
        assert_eq!(w.mean_run_ms().get(&echo()), Some(&10));
    }

    #[test]
    fn refuses_unknown_capability_bad_input_and_when_draining() {
        let (t, from) = (Instant::now(), PeerId::random());
        let mut w = core();
        let ocr = Capability::new("ocr").expect("valid");
        submit(&mut w, t, from, Uuid::new_v4(), ocr, Ok(()));
        assert_eq!(
            reason(&drain(&mut w)),
            Some(RejectReason::UnknownCapability)
        );
        submit(&mut w, t, from, Uuid::new_v4(), echo(), Err("no".into()));
        assert_eq!(reason(&drain(&mut w)), Some(RejectReason::BadInput));
        w.drain();
        submit(&mut w, t, from, Uuid::new_v4(), echo(), Ok(()));
        assert_eq!(reason(&drain(&mut w)), Some(RejectReason::Draining));
    }

    #[test]
    fn cancel_must_name_the_submitter_and_the_attempt() {
        let (t, from) = (Instant::now(), PeerId::random());
        let mut w = core();
        let id = Uuid::new_v4();
        submit(&mut w, t, from, id, echo(), Ok(()));
        drain(&mut w);
        w.handle_cancel(PeerId::random(), id, 1);
        w.handle_cancel(from, id, 2);
        assert!(
            drain(&mut w).is_empty(),
            "a stranger or an old attempt cannot cancel"
        );
        w.handle_cancel(from, id, 1);
        assert_eq!(drain(&mut w), vec![WorkerOutput::Cancel { job_id: id }]);
        // The stopped job's result goes out, and is not kept to be offered
        // again.
        w.handle_done(t, id, Err(("cancelled".into(), false)));
        let outs = drain(&mut w);
        assert!(
            outs.contains(&WorkerOutput::Forget { job_id: id }),
            "{outs:?}"
        );
        w.handle_link_closed(t, from);
        w.handle_link_opened(from);
        assert!(drain(&mut w).is_empty(), "nothing held");
    }

    #[test]
    fn progress_is_coalesced_and_flushed_before_the_result() {
        let (t, from) = (Instant::now(), PeerId::random());
        let mut w = core();
        let id = Uuid::new_v4();
        submit(&mut w, t, from, id, echo(), Ok(()));
        drain(&mut w);
        let p = |n: u8| Progress {
            percent: Some(n),
            ..Progress::default()
        };
        w.handle_progress(t, id, p(10));
        w.handle_progress(t + MS, id, p(20));
        w.handle_progress(t + 2 * MS, id, p(30));
        let sent = |out: Vec<WorkerOutput>| -> Vec<u8> {
            out.into_iter()
                .filter_map(|o| match o {
                    WorkerOutput::Send {
                        msg: DcMsg::Progress { progress, .. },
                        ..
                    } => progress.percent,
                    _ => None,
                })
                .collect()
        };
        assert_eq!(sent(drain(&mut w)), vec![10], "the first goes at once");
        assert_eq!(w.poll_timeout(), Some(t + 100 * MS));
        w.handle_timeout(t + 50 * MS);
        assert!(drain(&mut w).is_empty());
        w.handle_timeout(t + 100 * MS);
        assert_eq!(sent(drain(&mut w)), vec![30], "the latest wins");
        w.handle_progress(t + 110 * MS, id, p(90));
        w.handle_done(t + 120 * MS, id, Err(("boom".into(), true)));
        let out = drain(&mut w);
        assert!(matches!(
            &out[0],
            WorkerOutput::Send {
                msg: DcMsg::Progress { .. },
                ..
            }
        ));
        assert!(matches!(
            &out[1],
            WorkerOutput::Send {
                msg: DcMsg::Result {
                    outcome: Outcome::Err {
                        retryable: true,
                        ..
                    },
                    ..
                },
                ..
            }
        ));
        assert_eq!(w.stats().failed, 1);
    }

    #[test]
    fn a_running_job_gets_a_heartbeat_when_its_submitter_has_heard_nothing_for_an_interval() {
        let mut w = core().with_heartbeat(1000 * MS);
        let t0 = Instant::now();
        let (from, id) = (PeerId::random(), Uuid::new_v4());
        submit(&mut w, t0, from, id, echo(), Ok(()));
        drain(&mut w);
        assert_eq!(
            w.poll_timeout(),
            Some(t0 + 1000 * MS),
            "accepted counts as word"
        );
        w.handle_timeout(t0 + 999 * MS);
        assert!(drain(&mut w).is_empty());
        w.handle_timeout(t0 + 1000 * MS);
        let beat = DcMsg::Progress {
            job_id: id,
            attempt: 1,
            progress: Progress::default(),
        };
        assert_eq!(
            drain(&mut w),
            vec![WorkerOutput::Send {
                to: from,
                msg: beat.clone()
            }]
        );
        // Real progress also tells the submitter the job lives: the next
        // heartbeat is an interval after it.
        let p = Progress {
            percent: Some(50),
            ..Progress::default()
        };
        w.handle_progress(t0 + 1500 * MS, id, p);
        drain(&mut w);
        assert_eq!(w.poll_timeout(), Some(t0 + 2500 * MS));
        w.handle_timeout(t0 + 2500 * MS);
        assert_eq!(drain(&mut w).len(), 1);
        // A finished job gets no more heartbeats; its result is kept until
        // it is received.
        w.handle_done(t0 + 2600 * MS, id, Ok(json!(1)));
        drain(&mut w);
        assert_eq!(w.poll_timeout(), Some(t0 + 2600 * MS + KEEP_RESULTS_FOR));
        w.handle_received(from, id, 1);
        assert_eq!(w.poll_timeout(), None);
    }

    fn sent(out: &[WorkerOutput]) -> Vec<DcMsg> {
        out.iter()
            .filter_map(|o| match o {
                WorkerOutput::Send { msg, .. } => Some(msg.clone()),
                _ => None,
            })
            .collect()
    }

    /// Submits `id` again from `from` as `attempt` and checks it re-attaches
    /// to a kept result `value`: accepted, and the daemon told to restore it.
    fn resubmit_restores(
        w: &mut WorkerCore,
        t: Instant,
        from: PeerId,
        id: JobId,
        attempt: u32,
        value: serde_json::Value,
    ) {
        w.handle_submit(t, from, id, attempt, echo(), json!(1), 1000, Ok(()));
        let outs = drain(w);
        assert_eq!(
            sent(&outs),
            vec![DcMsg::Accepted {
                job_id: id,
                attempt
            }]
        );
        assert!(outs.contains(&WorkerOutput::Restore {
            job_id: id,
            result: Ok(value)
        }));
    }

    #[test]
    fn an_orphaned_job_runs_on_silently_then_stops_after_the_grace() {
        let mut w = core();
        let t0 = Instant::now();
        let (from, id) = (PeerId::random(), Uuid::new_v4());
        submit(&mut w, t0, from, id, echo(), Ok(()));
        drain(&mut w);
        w.handle_link_closed(t0, from);
        assert!(drain(&mut w).is_empty(), "no cancel at once");
        assert!(w.is_orphaned(&id) && w.away_submitters().contains(&from));
        // No heartbeats to a submitter that is not there: the next timer is
        // the grace.
        assert_eq!(w.poll_timeout(), Some(t0 + ORPHAN_GRACE));
        w.handle_timeout(t0 + ORPHAN_GRACE - MS);
        assert!(drain(&mut w).is_empty());
        w.handle_timeout(t0 + ORPHAN_GRACE);
        assert_eq!(drain(&mut w), vec![WorkerOutput::Cancel { job_id: id }]);
        assert!(
            w.away_submitters().is_empty(),
            "a stopping job is not offered"
        );
        w.handle_link_opened(from);
        assert!(drain(&mut w).is_empty(), "nothing held to announce");
        // Its end is not sent, and nothing is kept.
        w.handle_done(t0 + ORPHAN_GRACE, id, Err(("cancelled".into(), false)));
        assert_eq!(drain(&mut w), vec![WorkerOutput::Forget { job_id: id }]);
        assert_eq!(w.running(), 0);
        assert_eq!(w.poll_timeout(), None);
    }

    #[test]
    fn a_result_finished_while_its_submitter_was_away_is_kept_announced_and_delivered_once() {
        let mut w = core();
        let t0 = Instant::now();
        let (from, id) = (PeerId::random(), Uuid::new_v4());
        submit(&mut w, t0, from, id, echo(), Ok(()));
        drain(&mut w);
        w.handle_link_closed(t0, from);
        w.handle_done(t0 + MS, id, Ok(json!("done")));
        assert!(drain(&mut w).is_empty(), "kept, not sent");
        assert_eq!(w.running(), 0, "a kept result holds no slot");
        assert_eq!(w.stats().completed, 1);
        // A stranger cannot claim it.
        w.handle_submit(t0, PeerId::random(), id, 5, echo(), json!(1), 1000, Ok(()));
        assert_eq!(reason(&drain(&mut w)), Some(RejectReason::Busy));
        // Its submitter is back: it hears of the job.
        w.handle_link_opened(from);
        assert_eq!(
            sent(&drain(&mut w)),
            vec![DcMsg::Held {
                job_id: id,
                attempt: 1
            }]
        );
        // It submits again, under attempt 18: accepted and restored.
        resubmit_restores(&mut w, t0, from, id, 18, json!("done"));
        // The daemon finishes it again: the result goes out under attempt 18,
        // counted once.
        w.handle_done(t0 + 2 * MS, id, Ok(json!("done")));
        let msgs = sent(&drain(&mut w));
        assert!(
            matches!(
                msgs.as_slice(),
                [DcMsg::Result {
                    attempt: 18,
                    outcome: Outcome::Ok { .. },
                    ..
                }]
            ),
            "{msgs:?}"
        );
        assert_eq!(w.stats().completed, 1);
        // Kept until the submitter says it has it, then nothing is held.
        w.handle_received(from, id, 17);
        assert!(drain(&mut w).is_empty(), "not the delivered attempt");
        w.handle_received(from, id, 18);
        assert_eq!(drain(&mut w), vec![WorkerOutput::Forget { job_id: id }]);
        w.handle_link_opened(from);
        assert!(drain(&mut w).is_empty());
    }

    #[test]
    fn a_running_orphan_reattaches_under_the_new_attempt() {
        let mut w = core();
        let t0 = Instant::now();
        let (from, id) = (PeerId::random(), Uuid::new_v4());
        submit(&mut w, t0, from, id, echo(), Ok(()));
        drain(&mut w);
        w.handle_link_closed(t0, from);
        w.handle_submit(t0 + MS, from, id, 17, echo(), json!(1), 1000, Ok(()));
        assert_eq!(
            sent(&drain(&mut w)),
            vec![DcMsg::Accepted {
                job_id: id,
                attempt: 17
            }],
            "no second start"
        );
        assert!(!w.is_orphaned(&id));
        assert_eq!(w.submitter(&id), Some((from, 17)));
        w.handle_done(t0 + 2 * MS, id, Ok(json!(1)));
        let msgs = sent(&drain(&mut w));
        assert!(
            matches!(msgs.as_slice(), [DcMsg::Result { attempt: 17, .. }]),
            "{msgs:?}"
        );
    }

    #[test]
    fn a_kept_result_is_dropped_when_refused_or_expired_and_the_oldest_past_the_cap() {
        let mut w = WorkerCore::new(vec![echo()], 2000, 100 * MS);
        let t0 = Instant::now();
        let from = PeerId::random();
        let ids: Vec<JobId> = (0..MAX_KEPT_RESULTS + 2).map(|_| Uuid::new_v4()).collect();
        for (i, id) in ids.iter().enumerate() {
            let t = t0 + MS * u32::try_from(i).expect("small");
            submit(&mut w, t, from, *id, echo(), Ok(()));
            w.handle_link_closed(t, from);
            w.handle_done(t, *id, Ok(json!(i)));
        }
        let forgotten: Vec<WorkerOutput> = drain(&mut w)
            .into_iter()
            .filter(|o| matches!(o, WorkerOutput::Forget { .. }))
            .collect();
        assert_eq!(
            forgotten,
            vec![
                WorkerOutput::Forget { job_id: ids[0] },
                WorkerOutput::Forget { job_id: ids[1] }
            ],
            "the oldest two pushed out"
        );
        // A cancel does not drop one (a next attempt may want it); the
        // submitter's receipt does.
        w.handle_cancel(from, ids[2], 1);
        assert!(drain(&mut w).is_empty());
        w.handle_received(from, ids[2], 1);
        assert_eq!(drain(&mut w), vec![WorkerOutput::Forget { job_id: ids[2] }]);
        // The rest expire.
        let next = w.poll_timeout().expect("an expiry");
        assert_eq!(next, t0 + 3 * MS + KEEP_RESULTS_FOR);
        w.handle_timeout(t0 + KEEP_RESULTS_FOR + MS * 10_000);
        assert_eq!(drain(&mut w).len(), MAX_KEPT_RESULTS - 1);
        assert!(w.away_submitters().is_empty());
        assert_eq!(w.poll_timeout(), None);
    }

    #[test]
    fn a_result_finished_after_its_attempt_was_given_up_is_kept_for_the_next_attempt() {
        let mut w = core();
        let t0 = Instant::now();
        let (from, id) = (PeerId::random(), Uuid::new_v4());
        submit(&mut w, t0, from, id, echo(), Ok(()));
        drain(&mut w);
        // The submitter gives attempt 1 up (its lease ran out on a silent
        // link), but the handler had finished.
        w.handle_cancel(from, id, 1);
        drain(&mut w);
        w.handle_done(t0 + MS, id, Ok(json!("done")));
        assert!(
            sent(&drain(&mut w)).is_empty(),
            "a stale result is not sent"
        );
        // Its next attempt re-attaches to the kept result.
        resubmit_restores(&mut w, t0 + 2 * MS, from, id, 2, json!("done"));
    }
}
