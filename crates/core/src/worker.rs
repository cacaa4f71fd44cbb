//! The working side as a state machine: admission against slots and
//! capabilities, the attempt each job belongs to, cancel, coalesced progress,
//! and the worker's stats.

use std::collections::{BTreeMap, HashMap, VecDeque};
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
}

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
    /// Stopped because the link to its submitter closed, not because it
    /// asked: whatever the handler says, the attempt may be run again.
    stopped_by_link: bool,
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
    draining: bool,
    completed: u64,
    failed: u64,
    /// Per capability: finished jobs and their total run time, for the mean.
    run_time: BTreeMap<Capability, (u64, Duration)>,
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
            draining: false,
            completed: 0,
            failed: 0,
            run_time: BTreeMap::new(),
            seq: 0,
            out: VecDeque::new(),
        }
    }

    /// A submit from `from`. `input_check` is the handler's verdict on the
    /// input (`Err(why)` rejects it as bad input).
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
        input_check: Result<(), String>,
    ) {
        let refusal = if self.draining {
            Some((RejectReason::Draining, "worker is shutting down".to_owned()))
        } else if !self.capabilities.contains(&capability) {
            Some((
                RejectReason::UnknownCapability,
                format!("this worker does not run \"{capability}\""),
            ))
        } else if let Err(why) = input_check {
            Some((RejectReason::BadInput, why))
        } else if self.running.contains_key(&job_id) {
            Some((
                RejectReason::Busy,
                format!("job {job_id} already runs here (an earlier attempt is still stopping)"),
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
            return;
        }
        self.running.insert(
            job_id,
            Running {
                from,
                attempt,
                capability: capability.clone(),
                started_at: now,
                last_progress_at: None,
                pending_progress: None,
                last_sent_at: now,
                stopped_by_link: false,
            },
        );
        self.seq += 1;
        self.send(from, DcMsg::Accepted { job_id, attempt });
        self.out.push_back(WorkerOutput::Start {
            job_id,
            capability,
            input,
            timeout: Duration::from_millis(timeout_ms),
        });
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

    /// The submitter cancels its attempt. Anything not matching a running
    /// job's submitter and attempt is ignored.
    pub fn handle_cancel(&mut self, from: PeerId, job_id: JobId, attempt: u32) {
        if self
            .running
            .get(&job_id)
            .is_some_and(|r| r.from == from && r.attempt == attempt)
        {
            self.out.push_back(WorkerOutput::Cancel { job_id });
        }
    }

    /// The link to `peer` is gone: its jobs here can no longer report, so they stop.
    pub fn handle_link_closed(&mut self, peer: PeerId) {
        let mut ids: Vec<JobId> = self
            .running
            .iter_mut()
            .filter(|(_, r)| r.from == peer)
            .map(|(id, r)| {
                r.stopped_by_link = true;
                *id
            })
            .collect();
        ids.sort();
        for job_id in ids {
            self.out.push_back(WorkerOutput::Cancel { job_id });
        }
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
        let Some(r) = self.running.remove(&job_id) else {
            return;
        };
        if let Some(progress) = r.pending_progress {
            self.send(
                r.from,
                DcMsg::Progress {
                    job_id,
                    attempt: r.attempt,
                    progress,
                },
            );
        }
        let ran = now.saturating_duration_since(r.started_at);
        let entry = self.run_time.entry(r.capability).or_default();
        entry.0 += 1;
        entry.1 += ran;
        let outcome = match result {
            Ok(value) => {
                self.completed += 1;
                Outcome::Ok { value }
            }
            // The submitter may be back on a new link (a restart keeps its
            // peer id): the stop was ours, so the job may run again.
            Err(_) if r.stopped_by_link => {
                self.failed += 1;
                Outcome::Err {
                    message: "stopped: the link to the submitter closed".into(),
                    retryable: true,
                }
            }
            Err((message, retryable)) => {
                self.failed += 1;
                Outcome::Err {
                    message: jobmesh_wire::truncate(&message, MAX_ERROR_LEN),
                    retryable,
                }
            }
        };
        self.seq += 1;
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

    /// Flushes progress whose interval has passed, and sends a heartbeat
    /// (an empty progress) for every job its submitter has not heard about
    /// for a heartbeat interval.
    pub fn handle_timeout(&mut self, now: Instant) {
        let interval = self.progress_interval;
        let heartbeat = self.heartbeat_interval;
        let mut due: Vec<(JobId, PeerId, u32, Progress)> = Vec::new();
        for (id, r) in &mut self.running {
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
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due: pending
    /// progress, or a job's heartbeat.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.running
            .values()
            .map(|r| {
                let beat = r.last_sent_at + self.heartbeat_interval;
                match (&r.pending_progress, r.last_progress_at) {
                    (Some(_), Some(t)) => beat.min(t + self.progress_interval),
                    _ => beat,
                }
            })
            .min()
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
        self.draining = true;
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
        w.handle_link_closed(from);
        assert_eq!(drain(&mut w), vec![WorkerOutput::Cancel { job_id: id }]);
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
        // A finished job gets no more heartbeats.
        w.handle_done(t0 + 2600 * MS, id, Ok(json!(1)));
        drain(&mut w);
        assert_eq!(w.poll_timeout(), None);
    }

    #[test]
    fn a_job_stopped_because_its_link_closed_reports_a_retryable_failure() {
        let mut w = core();
        let t0 = Instant::now();
        let (from, id) = (PeerId::random(), Uuid::new_v4());
        submit(&mut w, t0, from, id, echo(), Ok(()));
        drain(&mut w);
        w.handle_link_closed(from);
        assert_eq!(drain(&mut w), vec![WorkerOutput::Cancel { job_id: id }]);
        // The handler says "cancelled" (permanent), but the stop was ours.
        w.handle_done(t0, id, Err(("cancelled".into(), false)));
        let outs = drain(&mut w);
        assert!(
            outs.iter().any(|o| matches!(
                o,
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
            )),
            "{outs:?}"
        );
    }
}
