use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use jobmesh_wire::dc::{DcMsg, JobId, Outcome, RejectReason, MAX_DC_MESSAGE};
use jobmesh_wire::signal::ServerMsg;
use jobmesh_wire::{Capability, PeerId};

use crate::pool::{PoolChange, PoolView};
use crate::strategy::{Candidate, Strategy};

/// A job as the caller submits it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Its id (random v4, chosen by the caller so it can be logged before submit).
    pub job_id: JobId,
    /// Which handler it needs.
    pub capability: Capability,
    /// The handler's input.
    pub input: serde_json::Value,
    /// How long the submitter waits for its result, all attempts included.
    pub timeout: Duration,
}

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Most jobs this peer holds at once (queued or in flight). Past it a
    /// submit fails with [`JobError::QueueFull`].
    pub queue_limit: usize,
    /// Most workers one job is handed to when workers are lost under it.
    pub max_attempts: u32,
    /// When every capable worker refused a job as busy, wait this long before
    /// offering it again (a stats change or a freed slot retries sooner).
    pub busy_retry: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            queue_limit: 10_000,
            max_attempts: 3,
            busy_retry: Duration::from_millis(100),
        }
    }
}

/// Why a job did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// No peer in the pool advertises the capability.
    #[error("no worker in the pool runs \"{capability}\"; start one with `peer --capabilities {capability}`")]
    NoCapableWorker {
        /// The capability asked for.
        capability: Capability,
    },
    /// The submitter's job table is full.
    #[error("submit queue full ({limit} jobs); wait for jobs to finish or raise the limit")]
    QueueFull {
        /// The limit.
        limit: usize,
    },
    /// The job's submit message would not fit in one data-channel message.
    #[error("job input too large: the submit message is {size} bytes, the limit is {max}; send less or pass a reference (file path, URL) instead")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A job with this id is already held.
    #[error("job {0} was already submitted")]
    Duplicate(JobId),
    /// No result within the job's timeout.
    #[error("timed out after {after_ms} ms{}", on_worker(.worker))]
    TimedOut {
        /// The timeout.
        after_ms: u64,
        /// The worker it was on, if any.
        worker: Option<PeerId>,
    },
    /// The handler failed on the worker.
    #[error("failed on worker {worker}: {message}")]
    Failed {
        /// Where.
        worker: PeerId,
        /// The handler's error.
        message: String,
    },
    /// A worker refused the job for a reason no other worker would fix.
    #[error("rejected by worker {worker} ({reason:?}): {message}")]
    Rejected {
        /// Who refused.
        worker: PeerId,
        /// Why.
        reason: RejectReason,
        /// Its words.
        message: String,
    },
    /// Workers were lost under the job `attempts` times.
    #[error("lost: the worker went away {attempts} times; the job may have run partly")]
    Lost {
        /// How many workers were lost.
        attempts: u32,
    },
    /// The caller cancelled it.
    #[error("cancelled")]
    Cancelled,
    /// The worker could not read what this peer sent.
    #[error("protocol error from worker {worker}: {message}")]
    Protocol {
        /// Who complained.
        worker: PeerId,
        /// What it said.
        message: String,
    },
}

fn on_worker(w: &Option<PeerId>) -> String {
    w.map(|w| format!(" on worker {}", w.short()))
        .unwrap_or_default()
}

impl JobError {
    /// Whether the failure means "nobody could take it" (exit code 3) rather
    /// than "it ran and failed" (exit code 1).
    pub fn is_unplaced(&self) -> bool {
        matches!(
            self,
            JobError::NoCapableWorker { .. }
                | JobError::TimedOut { .. }
                | JobError::QueueFull { .. }
        )
    }
}

/// How a job ended: exactly one per submitted job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEnd {
    /// Which job.
    pub job_id: JobId,
    /// The worker that produced the outcome (or was last tried).
    pub worker: Option<PeerId>,
    /// The result value or the error.
    pub result: Result<serde_json::Value, JobError>,
    /// Workers the job was handed to.
    pub attempts: u32,
}

/// What the dispatcher asks the daemon to do.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Output {
    /// Send a message to a peer over its data channel (dialling it first if
    /// needed). If that fails, tell the dispatcher with `handle_link_closed`.
    Send {
        /// Recipient.
        to: PeerId,
        /// Message.
        msg: DcMsg,
    },
    /// A job ended; hand the outcome to whoever waits for it.
    Finished(JobEnd),
}

#[derive(Debug)]
enum State {
    /// Waiting for a worker; not offered again before `not_before`.
    Queued { not_before: Instant },
    /// Sent to `worker`, no answer yet.
    Offered { worker: PeerId },
    /// `worker` accepted it.
    Running { worker: PeerId },
}

#[derive(Debug)]
struct Job {
    spec: JobSpec,
    deadline: Instant,
    state: State,
    /// Workers that refused this job since it was last queued afresh.
    refused_by: Vec<PeerId>,
    /// Workers it was handed to (accepted or not).
    attempts: u32,
    /// Workers lost under it.
    lost: u32,
    last_worker: Option<PeerId>,
}

impl Job {
    fn worker(&self) -> Option<PeerId> {
        match self.state {
            State::Offered { worker } | State::Running { worker } => Some(worker),
            State::Queued { .. } => None,
        }
    }
}

/// The submitting side of jobmesh, as a state machine.
///
/// Feed it: [`handle_signal`](Self::handle_signal) (pool changes),
/// [`submit`](Self::submit), [`handle_dc`](Self::handle_dc) (replies from
/// workers), [`handle_link_closed`](Self::handle_link_closed),
/// [`cancel`](Self::cancel) and [`handle_timeout`](Self::handle_timeout) at
/// [`poll_timeout`](Self::poll_timeout). Drain [`poll_output`](Self::poll_output)
/// after each.
///
/// Invariant: every job accepted by `submit` ends in exactly one
/// [`Output::Finished`]; it is then forgotten, so any later message about it
/// is counted in [`stale_messages`](Self::stale_messages) and ignored.
pub struct Dispatcher {
    me: PeerId,
    config: DispatcherConfig,
    pool: PoolView,
    strategy: Box<dyn Strategy>,
    /// Keyed by id; FIFO order of queued jobs is kept in `queue`.
    jobs: HashMap<JobId, Job>,
    queue: VecDeque<JobId>,
    /// This peer's jobs offered or running at each worker.
    in_flight: BTreeMap<PeerId, u32>,
    out: VecDeque<Output>,
    stale: u64,
}

impl Dispatcher {
    /// A dispatcher for peer `me` (never dispatches to itself).
    pub fn new(me: PeerId, config: DispatcherConfig, strategy: Box<dyn Strategy>) -> Self {
        Self {
            me,
            config,
            pool: PoolView::new(),
            strategy,
            jobs: HashMap::new(),
            queue: VecDeque::new(),
            in_flight: BTreeMap::new(),
            out: VecDeque::new(),
            stale: 0,
        }
    }

    /// The pool as last described by the signal-server.
    pub fn pool(&self) -> &PoolView {
        &self.pool
    }

    /// Jobs held (queued or in flight).
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job is held.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Messages about jobs that had already ended or moved on, ignored.
    pub fn stale_messages(&self) -> u64 {
        self.stale
    }

    /// Applies a message from the signal-server.
    pub fn handle_signal(&mut self, now: Instant, msg: &ServerMsg) {
        match self.pool.apply(msg) {
            PoolChange::Replaced { gone } => {
                for peer in gone {
                    self.lose_jobs_on(now, peer);
                }
            }
            PoolChange::Left(peer) => self.lose_jobs_on(now, peer),
            PoolChange::Joined(_) | PoolChange::Stats(_) | PoolChange::None => {}
        }
        self.pump(now);
    }

    /// Takes a job. Refusals that need no worker (full queue, duplicate id)
    /// come back at once as `Err`; everything else ends in `Output::Finished`.
    pub fn submit(&mut self, now: Instant, spec: JobSpec) -> Result<(), JobError> {
        if self.jobs.len() >= self.config.queue_limit {
            return Err(JobError::QueueFull {
                limit: self.config.queue_limit,
            });
        }
        if self.jobs.contains_key(&spec.job_id) {
            return Err(JobError::Duplicate(spec.job_id));
        }
        let size = submit_msg(&spec, spec.timeout).encode().len();
        if size > MAX_DC_MESSAGE {
            return Err(JobError::TooLarge {
                size,
                max: MAX_DC_MESSAGE,
            });
        }
        let id = spec.job_id;
        let deadline = now + spec.timeout;
        self.jobs.insert(
            id,
            Job {
                spec,
                deadline,
                state: State::Queued { not_before: now },
                refused_by: Vec::new(),
                attempts: 0,
                lost: 0,
                last_worker: None,
            },
        );
        self.queue.push_back(id);
        self.pump(now);
        Ok(())
    }

    /// The caller gives up on a job. Unknown ids are ignored (it may have just ended).
    pub fn cancel(&mut self, now: Instant, job_id: JobId) {
        if self.jobs.contains_key(&job_id) {
            self.finish(job_id, Err(JobError::Cancelled), true);
            self.pump(now);
        }
    }

    /// A message from `from`'s data channel. Messages for the worker side
    /// (`Submit`, `Cancel`) are not the dispatcher's and are ignored here.
    pub fn handle_dc(&mut self, now: Instant, from: PeerId, msg: &DcMsg) {
        let (job_id, reply) = match msg {
            DcMsg::Accepted { job_id } => (job_id, Reply::Accepted),
            DcMsg::Rejected {
                job_id,
                reason,
                message,
            } => (job_id, Reply::Rejected(*reason, message)),
            DcMsg::Result { job_id, outcome } => (job_id, Reply::Result(outcome)),
            DcMsg::Error {
                job_id: Some(job_id),
                message,
            } => (job_id, Reply::Error(message)),
            DcMsg::Error { job_id: None, .. } | DcMsg::Submit { .. } | DcMsg::Cancel { .. } => {
                return
            }
        };
        let Some(job) = self.jobs.get_mut(job_id) else {
            self.stale += 1;
            return;
        };
        if job.worker() != Some(from) {
            self.stale += 1;
            return;
        }
        let job_id = *job_id;
        match reply {
            Reply::Accepted => match job.state {
                State::Offered { worker } => job.state = State::Running { worker },
                _ => self.stale += 1,
            },
            Reply::Rejected(reason, message) => {
                if reason.try_elsewhere() {
                    job.refused_by.push(from);
                    self.requeue(now, job_id, now);
                } else {
                    self.finish(
                        job_id,
                        Err(JobError::Rejected {
                            worker: from,
                            reason,
                            message: message.clone(),
                        }),
                        false,
                    );
                }
            }
            Reply::Result(Outcome::Ok { value }) => {
                self.finish(job_id, Ok(value.clone()), false);
            }
            Reply::Result(Outcome::Err { message }) => {
                let err = JobError::Failed {
                    worker: from,
                    message: message.clone(),
                };
                self.finish(job_id, Err(err), false);
            }
            Reply::Error(message) => {
                let err = JobError::Protocol {
                    worker: from,
                    message: message.clone(),
                };
                self.finish(job_id, Err(err), false);
            }
        }
        self.pump(now);
    }

    /// The data channel to `peer` closed or could not be opened.
    pub fn handle_link_closed(&mut self, now: Instant, peer: PeerId) {
        self.lose_jobs_on(now, peer);
        self.pump(now);
    }

    /// Time has reached (or passed) [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            let err = JobError::TimedOut {
                after_ms: u64::try_from(job.spec.timeout.as_millis()).unwrap_or(u64::MAX),
                worker: job.worker(),
            };
            self.finish(id, Err(err), true);
        }
        self.pump(now);
    }

    /// The earliest instant at which `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.jobs
            .values()
            .map(|j| match j.state {
                State::Queued { not_before } => j.deadline.min(not_before),
                _ => j.deadline,
            })
            .min()
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn lose_jobs_on(&mut self, now: Instant, peer: PeerId) {
        let lost: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.worker() == Some(peer))
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            job.lost += 1;
            // Prefer other workers next; once all are ruled out they are asked again later.
            job.refused_by.push(peer);
            if job.lost >= self.config.max_attempts {
                let attempts = job.lost;
                self.finish(id, Err(JobError::Lost { attempts }), false);
            } else {
                self.requeue(now, id, now);
            }
        }
    }

    /// Moves a job back to the queue (front: it has waited longest).
    fn requeue(&mut self, _now: Instant, id: JobId, not_before: Instant) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if let Some(w) = job.worker() {
            release(&mut self.in_flight, w);
        }
        job.state = State::Queued { not_before };
        self.queue.push_front(id);
    }

    fn finish(&mut self, id: JobId, result: Result<serde_json::Value, JobError>, cancel: bool) {
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        match job.worker() {
            Some(w) => {
                release(&mut self.in_flight, w);
                if cancel {
                    self.out.push_back(Output::Send {
                        to: w,
                        msg: DcMsg::Cancel { job_id: id },
                    });
                }
            }
            None => self.queue.retain(|q| *q != id),
        }
        self.out.push_back(Output::Finished(JobEnd {
            job_id: id,
            worker: job.worker().or(job.last_worker),
            result,
            attempts: job.attempts,
        }));
    }

    /// Offers every queued job whose time has come to a worker, in FIFO order.
    fn pump(&mut self, now: Instant) {
        let mut still_queued = VecDeque::with_capacity(self.queue.len());
        while let Some(id) = self.queue.pop_front() {
            match self.try_place(now, id) {
                Placed::Yes | Placed::Ended => {}
                Placed::No => still_queued.push_back(id),
            }
        }
        self.queue = still_queued;
    }

    fn try_place(&mut self, now: Instant, id: JobId) -> Placed {
        let Some(job) = self.jobs.get_mut(&id) else {
            return Placed::Ended;
        };
        match job.state {
            State::Queued { not_before } if not_before <= now => {}
            _ => return Placed::No,
        }
        let cap = job.spec.capability.clone();
        let capable: Vec<_> = self
            .pool
            .peers()
            .filter(|p| p.id != self.me && p.capabilities.contains(&cap) && p.stats.slots > 0)
            .collect();
        if capable.is_empty() {
            self.finish(
                id,
                Err(JobError::NoCapableWorker { capability: cap }),
                false,
            );
            return Placed::Ended;
        }
        let candidates: Vec<Candidate> = capable
            .iter()
            .filter(|p| !job.refused_by.contains(&p.id))
            .map(|p| Candidate {
                id: p.id,
                slots: p.stats.slots,
                busy: p
                    .stats
                    .running
                    .max(self.in_flight.get(&p.id).copied().unwrap_or(0)),
            })
            .filter(|c| c.busy < c.slots)
            .collect();
        let pick = self
            .strategy
            .pick(&cap, &candidates)
            .filter(|p| candidates.iter().any(|c| c.id == *p));
        let Some(worker) = pick else {
            if capable.iter().all(|p| job.refused_by.contains(&p.id)) {
                // Every capable worker refused: wait, then ask them all again.
                job.refused_by.clear();
                job.state = State::Queued {
                    not_before: now + self.config.busy_retry,
                };
            }
            return Placed::No;
        };
        job.state = State::Offered { worker };
        job.attempts += 1;
        job.last_worker = Some(worker);
        *self.in_flight.entry(worker).or_default() += 1;
        let remaining = job.deadline.saturating_duration_since(now);
        self.out.push_back(Output::Send {
            to: worker,
            msg: submit_msg(&job.spec, remaining),
        });
        Placed::Yes
    }
}

/// The submit message for `spec`, asking the worker to give up after `timeout`.
fn submit_msg(spec: &JobSpec, timeout: Duration) -> DcMsg {
    DcMsg::Submit {
        job_id: spec.job_id,
        capability: spec.capability.clone(),
        input: spec.input.clone(),
        timeout_ms: u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1),
    }
}

enum Reply<'a> {
    Accepted,
    Rejected(RejectReason, &'a String),
    Result(&'a Outcome),
    Error(&'a String),
}

enum Placed {
    Yes,
    No,
    Ended,
}

fn release(in_flight: &mut BTreeMap<PeerId, u32>, worker: PeerId) {
    if let Some(n) = in_flight.get_mut(&worker) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            in_flight.remove(&worker);
        }
    }
}

#[cfg(test)]
mod tests;
