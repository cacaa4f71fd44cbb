//! The submitting side as a state machine: queue, placement, the claim
//! protocol with attempt numbers, retries with backoff, timeouts, cancel,
//! progress and events.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::time::{Duration, Instant};

use jobmesh_wire::dc::{
    DcMsg, JobId, Outcome, Progress, Receipt, RejectReason, MAX_DC_MESSAGE, MAX_RECEIPTS,
    RECEIPT_DELAY_MS,
};
use jobmesh_wire::signal::ServerMsg;
use jobmesh_wire::{Capability, PeerId, PeerInfo};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::job::{Attempt, AttemptOutcome, EventKind, JobEvent, JobSpec, JobState};
use observed::Observed;

mod observed;
use crate::pool::PoolView;
use crate::strategy::{
    Affinity, Candidate, LeastLoaded, PickRequest, Random, RoundRobin, Strategy, StrategyKind,
};

/// How long a peer whose link was refused ([`Input::LinkRefused`]) is no
/// candidate for any job, unless it leaves the pool and comes back. An
/// honest peer never fails the handshake, so this only slows down a
/// connection that is being tampered with; a job none other can run fails
/// with [`JobError::Unverified`].
pub const UNTRUSTED_FOR: Duration = Duration::from_secs(60);

/// How long a peer whose link could not be opened ([`Input::LinkFailed`])
/// is no candidate for any job: long enough that jobs go to reachable
/// workers instead of waiting out another dial, short enough that a
/// network that mends is tried again soon. A job none other can run fails
/// with [`JobError::Unreachable`], which says why.
pub const UNREACHABLE_FOR: Duration = Duration::from_secs(10);

/// A peer that is no candidate for a while, because of its link.
#[derive(Debug, Clone)]
struct PassedOver {
    until: Instant,
    why: String,
    /// Refused (its identity not proven) or unreachable (never opened).
    refused: bool,
}

impl PassedOver {
    fn refused(now: Instant, why: &str) -> Self {
        Self {
            until: now + UNTRUSTED_FOR,
            why: why.to_owned(),
            refused: true,
        }
    }

    fn unreachable(now: Instant, why: &str) -> Self {
        Self {
            until: now + UNREACHABLE_FOR,
            why: why.to_owned(),
            refused: false,
        }
    }

    /// What each attempt at the peer ended with.
    fn outcome(&self) -> AttemptOutcome {
        let why = self.why.clone();
        if self.refused {
            AttemptOutcome::Unverified { why }
        } else {
            AttemptOutcome::Unreachable { why }
        }
    }

    /// A job's error when only `worker` could have run it.
    fn error(&self, worker: PeerId) -> JobError {
        let why = self.why.clone();
        if self.refused {
            JobError::Unverified { worker, why }
        } else {
            JobError::Unreachable { worker, why }
        }
    }
}

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Most jobs this peer holds at once (queued or in flight). Past it a
    /// submit fails with [`JobError::QueueFull`].
    pub queue_limit: usize,
    /// When every capable worker refused a job as busy, wait this long before
    /// offering it again (a stats change or a freed slot retries sooner).
    pub busy_retry: Duration,
    /// Retry backoff: full jitter over `[0, min(cap, base · 2^retry)]`.
    pub backoff_base: Duration,
    /// Largest retry backoff.
    pub backoff_cap: Duration,
    /// Strategy for jobs that do not name one.
    pub default_strategy: StrategyKind,
    /// Whether this peer may run its own jobs when it is the best candidate.
    pub self_dispatch: bool,
    /// Seed of the dispatcher's RNG (random strategy, backoff jitter, tie-break start).
    pub seed: u64,
    /// An attempt whose worker has not been heard from for this long
    /// (about it: accepted, progress, heartbeats, result blob chunks; or
    /// anything else: a slow link can hold its messages behind others) is
    /// lost: the
    /// worker is told to cancel it and the job is retried like one whose
    /// link closed. Workers send a heartbeat every
    /// [`HEARTBEAT_INTERVAL_MS`](jobmesh_wire::dc::HEARTBEAT_INTERVAL_MS).
    pub lease: Duration,
    /// The capabilities whose workers this peer's view holds (`peer
    /// --view`); None: every member. A job of another capability that no
    /// worker in the view runs fails with [`JobError::OutsideView`].
    pub view: Option<Vec<Capability>>,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            queue_limit: 10_000,
            busy_retry: Duration::from_millis(100),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(10),
            default_strategy: StrategyKind::LeastLoaded,
            self_dispatch: true,
            seed: 0,
            lease: Duration::from_secs(5),
            view: None,
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
    /// This peer's view of the pool holds only the workers of some
    /// capabilities (`peer --view`), not this one's.
    #[error("this peer sees only the workers of {view} (--view), not of \"{capability}\": submit it through a peer whose --view includes it, or start this one with --view all")]
    OutsideView {
        /// The capability asked for.
        capability: Capability,
        /// The capabilities it sees, comma separated (or "none").
        view: String,
    },
    /// The submitter's job table is full.
    #[error("submit queue full ({limit} jobs); wait for jobs to finish or raise --queue-limit")]
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
    /// The job named a custom strategy, and none is installed.
    #[error("strategy \"custom\" was asked for, but no custom strategy is installed")]
    NoCustomStrategy,
    /// This peer's membership does not let it submit this job.
    #[error("not allowed to submit this job: this peer's credential: {why}; ask the pool's owner for an invitation with the submitter role (peer pool invite --role submitter)")]
    Forbidden {
        /// What the credential lacks.
        why: String,
    },
    /// No result within the timeout (after `attempts` attempts), or no worker
    /// free within it.
    #[error("timed out after {after_ms} ms{}", history(.attempts))]
    TimedOut {
        /// The timeout.
        after_ms: u64,
        /// Every attempt's outcome, oldest first.
        attempts: Vec<String>,
    },
    /// The handler failed (and retries, if any, are spent).
    #[error("failed: {message}{}", history(.attempts))]
    Failed {
        /// The last error.
        message: String,
        /// Every attempt's outcome, oldest first.
        attempts: Vec<String>,
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
    /// The worker went away and the job was not (or no longer) retried.
    #[error("lost: the worker went away; the job may have run partly{}", history(.attempts))]
    Lost {
        /// Every attempt's outcome, oldest first.
        attempts: Vec<String>,
    },
    /// The only workers that run its capability failed the link handshake.
    #[error("could not verify the identity of worker {worker}: {why}. The job was not sent to it. The signal-server or something on the network between may be tampering with connections (see docs/security.md)")]
    Unverified {
        /// The last worker refused.
        worker: PeerId,
        /// What failed.
        why: String,
    },
    /// The only workers that run its capability could not be reached: no
    /// data channel to them opened.
    #[error("could not reach worker {worker}: {why}. The job was not sent to it")]
    Unreachable {
        /// The last worker that could not be reached.
        worker: PeerId,
        /// Why the link did not open.
        why: String,
    },
    /// The caller cancelled it.
    #[error("cancelled")]
    Cancelled,
}

fn history(attempts: &[String]) -> String {
    if attempts.len() <= 1 {
        return String::new();
    }
    format!(" ({} attempts: {})", attempts.len(), attempts.join("; "))
}

impl JobError {
    /// Whether the failure means "nobody could take it" (exit code 3) rather
    /// than "it ran and failed" (exit code 1).
    pub fn is_unplaced(&self) -> bool {
        matches!(
            self,
            JobError::NoCapableWorker { .. }
                | JobError::OutsideView { .. }
                | JobError::TimedOut { .. }
                | JobError::Unreachable { .. }
                | JobError::QueueFull { .. }
        )
    }

    /// The terminal state this error puts a job in.
    pub fn state_name(&self) -> &'static str {
        match self {
            JobError::TimedOut { .. } => "timed_out",
            JobError::Lost { .. } => "lost",
            JobError::Cancelled => "cancelled",
            _ => "failed",
        }
    }
}

/// How a job ended: exactly one per submitted job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEnd {
    /// Which job.
    pub job_id: JobId,
    /// The worker of the last attempt, if any.
    pub worker: Option<PeerId>,
    /// The result value or the error.
    pub result: Result<serde_json::Value, JobError>,
    /// Every attempt, oldest first.
    pub attempts: Vec<Attempt>,
    /// When it was submitted.
    pub submitted_at: Instant,
}

/// What the dispatcher asks the daemon to do.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Output {
    /// Send a message to a peer over its data channel (dialling it first if
    /// needed; `to` may be this peer itself under self-dispatch). If that
    /// fails, tell the dispatcher with [`Input::LinkClosed`].
    Send {
        /// Recipient.
        to: PeerId,
        /// Message.
        msg: DcMsg,
    },
    /// Something happened to a job (for observers, timelines, stats).
    Event(JobEvent),
    /// A job ended; hand the outcome to whoever waits for it.
    Finished(JobEnd),
}

/// Everything the dispatcher reacts to.
#[derive(Debug)]
pub enum Input<'a> {
    /// A message from the signal-server (pool changes). A peer that leaves
    /// the view gets no new jobs; its attempts are lost at once unless its
    /// data channel is open, in which case the channel and the lease decide
    /// (a restarted signal-server's first view lacks the peers that have not
    /// rejoined yet: their jobs must not run twice).
    Signal(&'a ServerMsg),
    /// A new job.
    Submit(JobSpec),
    /// A job taken over from an earlier run of this peer (its journal) that
    /// had handed out `attempts_before` attempts: its attempts go on from
    /// there, so messages about an earlier attempt are recognised as stale.
    Resume {
        /// The job.
        spec: JobSpec,
        /// The highest attempt number it had.
        attempts_before: u32,
        /// The worker of its last attempt, which may still run it or keep
        /// its result: the job is offered there first (room or not: it holds
        /// the job's slot) if the pool shows it running the capability.
        /// Until the pool view is complete the job waits for it to show up,
        /// and goes nowhere else (not even to this peer's own worker).
        held_by: Option<PeerId>,
    },
    /// A message from a peer's data channel.
    Dc {
        /// Sender.
        from: PeerId,
        /// Message.
        msg: &'a DcMsg,
    },
    /// The data channel to a peer is open: while it is, the peer's attempts
    /// outlive its absence from the pool view (see [`Input::Signal`]).
    LinkOpened(PeerId),
    /// The data channel to a peer closed or could not be opened.
    LinkClosed(PeerId),
    /// The link to a peer was refused: it did not prove its identity. Its
    /// attempts go elsewhere (they never left this peer), and it is no
    /// candidate for [`UNTRUSTED_FOR`].
    LinkRefused {
        /// The peer.
        peer: PeerId,
        /// What failed, for the jobs' errors.
        why: &'a str,
    },
    /// The link to a peer could not be opened (no candidate pair worked, or
    /// the handshake timed out). Its attempts go elsewhere (they never left
    /// this peer), and it is no candidate for [`UNREACHABLE_FOR`].
    LinkFailed {
        /// The peer.
        peer: PeerId,
        /// Why, for the jobs' errors.
        why: &'a str,
    },
    /// Word from a worker about an attempt that is not a message the
    /// dispatcher reads (a chunk of the result's blobs): it renews the lease.
    Alive {
        /// The worker.
        from: PeerId,
        /// The job.
        job_id: JobId,
        /// The attempt.
        attempt: u32,
    },
    /// An attempt failed for a reason its worker did not send: its result's
    /// blobs did not all arrive intact, or this peer could not send its
    /// inputs. It counts as that worker's failed result.
    AttemptFailed {
        /// The worker.
        from: PeerId,
        /// The job.
        job_id: JobId,
        /// The attempt.
        attempt: u32,
        /// What went wrong.
        message: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// The caller gives up on a job.
    Cancel(JobId),
    /// This peer's own worker side, for self-dispatch (None: not a worker).
    LocalWorker(Option<PeerInfo>),
    /// Time passed; call at [`Dispatcher::poll_timeout`].
    Timeout,
}

#[derive(Debug)]
struct Job {
    spec: JobSpec,
    state: JobState,
    attempts: Vec<Attempt>,
    /// Attempt numbers used before this dispatcher took the job over (resume).
    attempt_base: u32,
    /// A worker that may hold the job from before a restart, tried first;
    /// the job waits for a complete pool view before it goes elsewhere.
    held_by: Option<PeerId>,
    /// While an attempt is out: when its lease ends unless the worker speaks.
    lease_until: Option<Instant>,
    submitted_at: Instant,
    /// When the current wait (queued) or attempt (dispatched/running) times out.
    deadline: Instant,
    /// When the current wait in the queue times out: a refused offer (busy)
    /// does not start a new one, so a job every worker refuses still ends.
    wait_deadline: Instant,
    /// Not offered before this (backoff, busy wait).
    not_before: Instant,
    /// Workers that refused it (busy) or were lost under it since it was last
    /// offered to everyone.
    refused_by: Vec<PeerId>,
    retries_left: u32,
    /// Its key in the queue while queued.
    queue_key: Option<QueueKey>,
    /// Its entry in the timer index.
    timer: Instant,
}

impl Job {
    /// When `Input::Timeout` next has work for this job.
    fn next_timer(&self) -> Instant {
        match self.state {
            JobState::Queued => self.deadline.min(self.not_before),
            _ => self
                .lease_until
                .map_or(self.deadline, |l| l.min(self.deadline)),
        }
    }
}

/// Higher priority first, then submission order.
type QueueKey = (Reverse<i32>, u64);

/// The built-in strategies plus the user's, one instance each.
struct Strategies {
    round_robin: RoundRobin,
    least_loaded: LeastLoaded,
    random: Random,
    affinity: Affinity,
    custom: Option<Box<dyn Strategy>>,
}

impl Strategies {
    fn get(&mut self, kind: StrategyKind) -> Option<&mut dyn Strategy> {
        Some(match kind {
            StrategyKind::RoundRobin => &mut self.round_robin,
            StrategyKind::LeastLoaded => &mut self.least_loaded,
            StrategyKind::Random => &mut self.random,
            StrategyKind::Affinity => &mut self.affinity,
            StrategyKind::Custom => self.custom.as_deref_mut()?,
        })
    }
}

/// The submitting side of jobmesh, as a state machine.
///
/// Feed it with [`handle_input`](Self::handle_input) and drain
/// [`poll_output`](Self::poll_output) after each input; call again with
/// [`Input::Timeout`] at [`poll_timeout`](Self::poll_timeout).
///
/// Invariants (checked by a reference-model property test):
/// * every job accepted by `Submit` ends in exactly one [`Output::Finished`],
///   and is then forgotten;
/// * a reply counts only if it names the job's current worker and attempt;
///   anything else is counted in [`stale_messages`](Self::stale_messages);
/// * this peer never has more attempts in flight at a worker than its slots
///   (save a resumed job re-attaching to the worker that held it, whose slot
///   that job already takes);
/// * every job held has a deadline, so `poll_timeout` is `Some` while any is held.
pub struct Dispatcher {
    me: PeerId,
    config: DispatcherConfig,
    pool: PoolView,
    local: Option<PeerInfo>,
    strategies: Strategies,
    rng: StdRng,
    jobs: HashMap<JobId, Job>,
    queue: BTreeMap<QueueKey, JobId>,
    seq: u64,
    in_flight: BTreeMap<PeerId, u32>,
    /// This peer's attempts in flight at each worker when its last stats
    /// arrived: those stats already count them (see [`Dispatcher::capable`]).
    in_flight_at_stats: HashMap<PeerId, u32>,
    /// Every held job's next timer, so `poll_timeout` and timeouts cost
    /// O(log n), not a scan of all jobs.
    timers: BTreeSet<(Instant, JobId)>,
    /// Queued jobs per capability, so a queue pass can stop once every
    /// capability in the queue is known to have no room.
    queued_caps: HashMap<Capability, usize>,
    out: VecDeque<Output>,
    /// When each worker was last heard from (any message or blob chunk):
    /// an attempt's lease lasts while its worker speaks at all.
    heard_from: HashMap<PeerId, Instant>,
    /// Peers whose data channel is open.
    linked: BTreeSet<PeerId>,
    /// Peers whose link was refused or could not be opened, until when, and
    /// why. At most one entry per pool member: an entry goes when its peer
    /// leaves the view.
    passed_over: BTreeMap<PeerId, PassedOver>,
    /// What each worker has shown of its capacity, against its claims.
    observed: Observed,
    /// Workers that refused a job as draining, before their stats said so.
    /// At most one entry per pool member: an entry goes when its peer
    /// leaves the view.
    draining: HashSet<PeerId>,
    /// Receipts of results not sent yet, per worker, and when they are due.
    receipts: BTreeMap<PeerId, Vec<Receipt>>,
    receipts_due: Option<Instant>,
    stale: u64,
    leases_expired: u64,
}

impl Dispatcher {
    /// A dispatcher for peer `me`, with an optional custom strategy.
    pub fn new(me: PeerId, config: DispatcherConfig, custom: Option<Box<dyn Strategy>>) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let strategies = Strategies {
            round_robin: RoundRobin::default(),
            least_loaded: LeastLoaded::starting_at(rng.random_range(0..1024)),
            random: Random,
            affinity: Affinity::default(),
            custom,
        };
        Self {
            me,
            config,
            pool: PoolView::new(),
            local: None,
            strategies,
            rng,
            jobs: HashMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            in_flight: BTreeMap::new(),
            in_flight_at_stats: HashMap::new(),
            timers: BTreeSet::new(),
            queued_caps: HashMap::new(),
            out: VecDeque::new(),
            heard_from: HashMap::new(),
            linked: BTreeSet::new(),
            passed_over: BTreeMap::new(),
            observed: Observed::default(),
            draining: HashSet::new(),
            receipts: BTreeMap::new(),
            receipts_due: None,
            stale: 0,
            leases_expired: 0,
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

    /// The ids of every job held.
    pub fn job_ids(&self) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self.jobs.keys().copied().collect();
        ids.sort();
        ids
    }

    /// A held job's state.
    pub fn state(&self, job_id: &JobId) -> Option<&JobState> {
        self.jobs.get(job_id).map(|j| &j.state)
    }

    /// This peer's attempts in flight at each worker.
    pub fn in_flight(&self) -> &BTreeMap<PeerId, u32> {
        &self.in_flight
    }

    /// Messages about jobs or attempts that had already ended or moved on, ignored.
    pub fn stale_messages(&self) -> u64 {
        self.stale
    }

    /// Attempts declared lost because their worker went silent past the lease.
    pub fn leases_expired(&self) -> u64 {
        self.leases_expired
    }

    /// Feeds one input. Only `Submit` can fail, and then nothing was queued:
    /// a full queue, a duplicate id, an input too large, a missing custom strategy.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), JobError> {
        // Deadlines that passed by `now` count before anything that arrives at
        // `now`: a result racing its own timeout loses to it.
        if !matches!(input, Input::Timeout) && self.poll_timeout().is_some_and(|t| t <= now) {
            self.on_timeout(now);
        }
        match input {
            Input::Signal(msg) => {
                let change = self.pool.apply(msg);
                for peer in change.left {
                    self.in_flight_at_stats.remove(&peer);
                    self.passed_over.remove(&peer);
                    if !self.linked.contains(&peer) {
                        self.lose_attempts_on(now, peer);
                    }
                    self.observed.forget(&peer);
                    self.draining.remove(&peer);
                }
                for id in change.updated {
                    self.note_stats(id);
                }
            }
            Input::Submit(spec) => self.submit(now, spec, 0, None)?,
            Input::Resume {
                spec,
                attempts_before,
                held_by,
            } => self.submit(now, spec, attempts_before, held_by)?,
            Input::Dc { from, msg } => {
                self.heard_from.insert(from, now);
                self.on_reply(now, from, msg);
            }
            Input::LinkOpened(peer) => {
                self.linked.insert(peer);
            }
            Input::LinkClosed(peer) => {
                // The worker offers what it kept again on the next link
                // (`held`); a receipt must not dial it.
                self.linked.remove(&peer);
                self.receipts.remove(&peer);
                self.heard_from.remove(&peer);
                self.lose_attempts_on(now, peer);
            }
            Input::LinkRefused { peer, why } => {
                self.pass_over(now, peer, PassedOver::refused(now, why));
            }
            Input::LinkFailed { peer, why } => {
                self.pass_over(now, peer, PassedOver::unreachable(now, why));
            }
            Input::Alive {
                from,
                job_id,
                attempt,
            } => {
                self.heard_from.insert(from, now);
                let current = self.jobs.get(&job_id).and_then(|j| j.state.attempt());
                if current == Some((from, attempt)) {
                    self.renew_lease(now, job_id);
                }
            }
            Input::AttemptFailed {
                from,
                job_id,
                attempt,
                message,
                retryable,
            } => {
                // The path of a failed result from the worker, its receipt
                // included (the worker drops what it kept for the attempt).
                let failed = DcMsg::Result {
                    job_id,
                    attempt,
                    outcome: Outcome::Err { message, retryable },
                    load: None,
                };
                self.on_reply(now, from, &failed);
            }
            Input::Cancel(job_id) => self.cancel(now, job_id),
            Input::LocalWorker(info) => self.local = info,
            Input::Timeout => self.on_timeout(now),
        }
        self.pump(now);
        Ok(())
    }

    /// The earliest instant at which [`Input::Timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let job = self.timers.first().map(|(t, _)| *t);
        job.into_iter().chain(self.receipts_due).min()
    }

    /// Tells `worker` within RECEIPT_DELAY_MS (many receipts in one message)
    /// that it may drop a result it keeps.
    fn receipt(&mut self, now: Instant, worker: PeerId, receipt: Receipt) {
        let pending = self.receipts.entry(worker).or_default();
        pending.push(receipt);
        if pending.len() >= MAX_RECEIPTS {
            self.send_receipts(Some(worker));
        } else if self.receipts_due.is_none() {
            self.receipts_due = Some(now + Duration::from_millis(RECEIPT_DELAY_MS));
        }
    }

    /// Sends the gathered receipts of results: to `only` that worker, or to
    /// every worker.
    fn send_receipts(&mut self, only: Option<PeerId>) {
        let peers: Vec<PeerId> = match only {
            Some(p) => vec![p],
            None => self.receipts.keys().copied().collect(),
        };
        for to in peers {
            if let Some(receipts) = self.receipts.remove(&to) {
                let msg = DcMsg::Received { receipts };
                self.out.push_back(Output::Send { to, msg });
            }
        }
        if self.receipts.is_empty() {
            self.receipts_due = None;
        }
    }

    /// A queued job whose wait (`not_before`) is over needs no timer but its
    /// deadline: the queue is tried again after every input (`pump`), and a
    /// timer left in the past would make the caller spin until the job is
    /// placed (a pool view still filling, every worker busy).
    fn park(&mut self, now: Instant, id: JobId) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if matches!(job.state, JobState::Queued) && job.not_before <= now && job.deadline > now {
            self.timers.remove(&(job.timer, id));
            job.timer = job.deadline;
            self.timers.insert((job.timer, id));
        }
    }

    /// Re-files a job's timer after its deadline, wait or state changed.
    fn refile_timer(&mut self, id: JobId) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        self.timers.remove(&(job.timer, id));
        job.timer = job.next_timer();
        self.timers.insert((job.timer, id));
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn event(&mut self, job_id: JobId, at: Instant, kind: EventKind) {
        self.out
            .push_back(Output::Event(JobEvent { job_id, at, kind }));
    }

    fn submit(
        &mut self,
        now: Instant,
        spec: JobSpec,
        attempt_base: u32,
        held_by: Option<PeerId>,
    ) -> Result<(), JobError> {
        if self.jobs.len() >= self.config.queue_limit {
            return Err(JobError::QueueFull {
                limit: self.config.queue_limit,
            });
        }
        if self.jobs.contains_key(&spec.job_id) {
            return Err(JobError::Duplicate(spec.job_id));
        }
        let strategy = spec
            .options
            .strategy
            .unwrap_or(self.config.default_strategy);
        if strategy == StrategyKind::Custom && self.strategies.custom.is_none() {
            return Err(JobError::NoCustomStrategy);
        }
        let size = submit_msg(&spec, 1, spec.options.timeout).encode().len();
        if size > MAX_DC_MESSAGE {
            return Err(JobError::TooLarge {
                size,
                max: MAX_DC_MESSAGE,
            });
        }
        let id = spec.job_id;
        let kind = EventKind::Queued {
            capability: spec.capability.clone(),
            priority: spec.options.priority,
        };
        let job = Job {
            deadline: now + spec.options.timeout,
            wait_deadline: now + spec.options.timeout,
            not_before: now,
            state: JobState::Queued,
            attempts: Vec::new(),
            attempt_base,
            held_by,
            lease_until: None,
            submitted_at: now,
            refused_by: Vec::new(),
            retries_left: spec.options.max_retries,
            queue_key: None,
            timer: now,
            spec,
        };
        self.jobs.insert(id, job);
        self.timers.insert((now, id));
        self.enqueue(id);
        self.refile_timer(id);
        self.event(id, now, kind);
        Ok(())
    }

    fn enqueue(&mut self, id: JobId) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        self.seq += 1;
        let key = (Reverse(job.spec.options.priority), self.seq);
        job.queue_key = Some(key);
        *self
            .queued_caps
            .entry(job.spec.capability.clone())
            .or_default() += 1;
        self.queue.insert(key, id);
    }

    fn cancel(&mut self, now: Instant, job_id: JobId) {
        if self.jobs.contains_key(&job_id) {
            self.end_attempt(now, job_id, AttemptOutcome::Cancelled, true);
            self.finish(now, job_id, JobState::Cancelled, Err(JobError::Cancelled));
        }
    }

    fn on_reply(&mut self, now: Instant, from: PeerId, msg: &DcMsg) {
        let (job_id, attempt) = match msg {
            DcMsg::Accepted { job_id, attempt }
            | DcMsg::Rejected {
                job_id, attempt, ..
            }
            | DcMsg::Progress {
                job_id, attempt, ..
            }
            | DcMsg::Result {
                job_id, attempt, ..
            } => (*job_id, *attempt),
            DcMsg::Held { job_id, attempt } => {
                self.on_held(now, from, *job_id, *attempt);
                return;
            }
            // Worker-side messages and undecodable-message reports are not ours.
            DcMsg::Submit { .. }
            | DcMsg::LinkHello { .. }
            | DcMsg::LinkProof { .. }
            | DcMsg::Cancel { .. }
            | DcMsg::Received { .. }
            | DcMsg::Error { .. }
            // Observers are the node's, not placement's.
            | DcMsg::Observe { .. }
            | DcMsg::Unobserve {}
            | DcMsg::Observed { .. }
            // Blob transfer is handled by the daemon, not by placement.
            | DcMsg::Blobs { .. }
            | DcMsg::Handover { .. }
            | DcMsg::BlobFiles { .. } => return,
        };
        if matches!(msg, DcMsg::Result { .. }) {
            // Current or stale, the worker need not keep it any longer.
            self.receipt(now, from, Receipt { job_id, attempt });
        }
        let current = self.jobs.get(&job_id).and_then(|j| j.state.attempt());
        if current != Some((from, attempt)) {
            self.stale += 1;
            return;
        }
        self.renew_lease(now, job_id);
        match msg {
            DcMsg::Accepted { .. } => {
                let running = JobState::Running {
                    worker: from,
                    attempt,
                    progress: None,
                };
                if self.set_state(job_id, running) {
                    if let Some(a) = self.current_attempt(job_id) {
                        a.started_at = Some(now);
                    }
                    self.event(
                        job_id,
                        now,
                        EventKind::Started {
                            worker: from,
                            attempt,
                        },
                    );
                }
            }
            // A heartbeat: the lease is renewed, nothing else changes.
            DcMsg::Progress { progress, .. } if *progress == Progress::default() => {}
            DcMsg::Progress { progress, .. } => {
                let running = JobState::Running {
                    worker: from,
                    attempt,
                    progress: Some(progress.clone()),
                };
                if self.set_state(job_id, running) {
                    let kind = EventKind::Progress {
                        attempt,
                        progress: progress.clone(),
                    };
                    self.event(job_id, now, kind);
                }
            }
            DcMsg::Rejected {
                reason, message, ..
            } => {
                let outcome = AttemptOutcome::Rejected {
                    reason: *reason,
                    message: message.clone(),
                };
                self.end_attempt(now, job_id, outcome, false);
                if *reason == RejectReason::Draining && self.pool.get(&from).is_some() {
                    // Its stats will say so too; until then no job goes there.
                    self.draining.insert(from);
                }
                if reason.try_elsewhere() {
                    // Not a retry: the job never ran. Ask someone else.
                    if let Some(job) = self.jobs.get_mut(&job_id) {
                        job.refused_by.push(from);
                    }
                    self.requeue(job_id, now, Wait::Continued);
                } else {
                    let err = JobError::Rejected {
                        worker: from,
                        reason: *reason,
                        message: message.clone(),
                    };
                    self.finish(now, job_id, JobState::Failed, Err(err));
                }
            }
            DcMsg::Result { outcome, .. } => match outcome {
                Outcome::Ok { value } => {
                    if self
                        .jobs
                        .get(&job_id)
                        .is_some_and(|j| matches!(j.state, JobState::Running { .. }))
                    {
                        self.end_attempt(now, job_id, AttemptOutcome::Completed, false);
                        self.finish(now, job_id, JobState::Completed, Ok(value.clone()));
                    } else {
                        // A result before `accepted`: the worker broke the protocol.
                        self.stale += 1;
                    }
                }
                Outcome::Err { message, retryable } => {
                    let outcome = AttemptOutcome::Failed {
                        message: message.clone(),
                        retryable: *retryable,
                    };
                    self.end_attempt(now, job_id, outcome, false);
                    if *retryable {
                        self.retry_or(now, job_id, |attempts| JobError::Failed {
                            message: message.clone(),
                            attempts,
                        });
                    } else {
                        let err = JobError::Failed {
                            message: message.clone(),
                            attempts: self.attempt_log(job_id),
                        };
                        self.finish(now, job_id, JobState::Failed, Err(err));
                    }
                }
            },
            DcMsg::Submit { .. }
            | DcMsg::Cancel { .. }
            | DcMsg::Error { .. }
            | DcMsg::LinkHello { .. }
            | DcMsg::LinkProof { .. }
            | DcMsg::Held { .. }
            | DcMsg::Received { .. }
            | DcMsg::Observe { .. }
            | DcMsg::Unobserve {}
            | DcMsg::Observed { .. }
            | DcMsg::Blobs { .. }
            | DcMsg::Handover { .. }
            | DcMsg::BlobFiles { .. } => {}
        }
        // A result carries the worker's load after it: fresher than its
        // broadcast stats, which may still count this very job.
        if let DcMsg::Result {
            load: Some(load), ..
        } = msg
        {
            if self.pool.apply_load(&from, load) {
                self.note_stats(from);
            }
        }
    }

    /// `from` holds attempt `attempt` of `job_id` from before its link
    /// closed, running or finished. A job still held here re-attaches: its
    /// current attempt elsewhere (if any) is superseded and cancelled, and a
    /// new attempt goes to `from`, which carries on with it or delivers the
    /// kept result. For a job no longer held here the worker gets a receipt.
    fn on_held(&mut self, now: Instant, from: PeerId, job_id: JobId, attempt: u32) {
        let Some(job) = self.jobs.get(&job_id) else {
            // Not ours any more: a receipt lets the worker drop it.
            self.receipt(now, from, Receipt { job_id, attempt });
            return;
        };
        match job.state.attempt() {
            // Already there (a resubmit crossed the worker's word).
            Some((worker, _)) if worker == from => return,
            Some(_) => {
                let outcome = AttemptOutcome::Superseded { by: from };
                self.end_attempt(now, job_id, outcome, true);
                self.requeue(job_id, now, Wait::Continued);
            }
            None => {}
        }
        self.dispatch(now, job_id, from);
    }

    /// Every job at `peer` lost its attempt.
    fn lose_attempts_on(&mut self, now: Instant, peer: PeerId) {
        let mut lost: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.state.attempt().is_some_and(|(w, _)| w == peer))
            .map(|(id, _)| *id)
            .collect();
        // In job order, not the map's: retries draw their backoff from the
        // seeded RNG, so the same inputs give the same run.
        lost.sort();
        for id in lost {
            self.lose_attempt(now, id, peer, false);
        }
    }

    /// `peer`'s link was refused or never opened: it is no candidate until
    /// `entry` ends, and every job at it goes back to the queue (none of
    /// them ran there: no message crossed the link).
    fn pass_over(&mut self, now: Instant, peer: PeerId, entry: PassedOver) {
        self.linked.remove(&peer);
        self.receipts.remove(&peer);
        self.heard_from.remove(&peer);
        let mut stopped: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.state.attempt().is_some_and(|(w, _)| w == peer))
            .map(|(id, _)| *id)
            .collect();
        stopped.sort();
        for id in stopped {
            self.end_attempt(now, id, entry.outcome(), false);
            self.requeue(id, now, Wait::Continued);
        }
        self.passed_over.insert(peer, entry);
    }

    /// The current attempt of `id`, at `worker`, is lost; with `tell_worker`
    /// (its lease ran out but the link may live) the worker is told to stop.
    fn lose_attempt(&mut self, now: Instant, id: JobId, worker: PeerId, tell_worker: bool) {
        self.end_attempt(now, id, AttemptOutcome::Lost, tell_worker);
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        // Prefer other workers next; once all are ruled out they are asked again.
        job.refused_by.push(worker);
        if job.spec.options.retry_on_disconnect {
            self.retry_or(now, id, |attempts| JobError::Lost { attempts });
        } else {
            let err = JobError::Lost {
                attempts: self.attempt_log(id),
            };
            self.finish(now, id, JobState::Lost, Err(err));
        }
    }

    /// The worker spoke about the current attempt: its lease starts over.
    fn renew_lease(&mut self, now: Instant, id: JobId) {
        let lease = self.config.lease;
        if let Some(job) = self.jobs.get_mut(&id) {
            if job.lease_until.is_some() {
                job.lease_until = Some(now + lease);
            }
        }
        self.refile_timer(id);
    }

    fn on_timeout(&mut self, now: Instant) {
        if self.receipts_due.is_some_and(|t| t <= now) {
            self.send_receipts(None);
        }
        let due: Vec<JobId> = self
            .timers
            .range(..=(now, JobId::max()))
            .map(|(_, id)| *id)
            .collect();
        for id in &due {
            self.park(now, *id);
        }
        let expired: Vec<JobId> = due
            .iter()
            .copied()
            .filter(|id| self.jobs.get(id).is_some_and(|j| j.deadline <= now))
            .collect();
        let leases_out: Vec<(JobId, PeerId)> = due
            .iter()
            .filter_map(|id| {
                let j = self.jobs.get(id)?;
                let (worker, _) = j.state.attempt()?;
                (j.deadline > now && j.lease_until.is_some_and(|l| l <= now))
                    .then_some((*id, worker))
            })
            .collect();
        for (id, worker) in leases_out {
            // Any word from the worker since proves it alive: on a slow or
            // lossy link the messages about this attempt may be stuck behind
            // others (blob chunks), so the lease runs from the last of them.
            let alive_until = self.heard_from.get(&worker).map(|t| *t + self.config.lease);
            if let Some(until) = alive_until.filter(|u| *u > now) {
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.lease_until = Some(until);
                }
                self.refile_timer(id);
                continue;
            }
            self.leases_expired += 1;
            self.lose_attempt(now, id, worker, true);
        }
        for id in expired {
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            let after_ms = u64::try_from(job.spec.options.timeout.as_millis()).unwrap_or(u64::MAX);
            if job.state == JobState::Queued {
                // Nobody took it in time: retrying would only wait longer.
                let err = JobError::TimedOut {
                    after_ms,
                    attempts: self.attempt_log(id),
                };
                self.finish(now, id, JobState::TimedOut, Err(err));
            } else {
                self.end_attempt(now, id, AttemptOutcome::TimedOut, true);
                self.retry_or(now, id, |attempts| JobError::TimedOut {
                    after_ms,
                    attempts,
                });
            }
        }
    }

    /// After a failed attempt: queue the job again after a backoff if it has
    /// retries left, else end it with `terminal`'s error.
    fn retry_or(
        &mut self,
        now: Instant,
        id: JobId,
        terminal: impl FnOnce(Vec<String>) -> JobError,
    ) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if job.retries_left == 0 {
            let err = terminal(self.attempt_log(id));
            let state = match err {
                JobError::TimedOut { .. } => JobState::TimedOut,
                JobError::Lost { .. } => JobState::Lost,
                _ => JobState::Failed,
            };
            self.finish(now, id, state, Err(err));
            return;
        }
        let retry = job.spec.options.max_retries - job.retries_left;
        let attempt = job.attempts.last().map_or(0, |a| a.number);
        let outcome = job
            .attempts
            .last()
            .and_then(|a| a.outcome.clone())
            .unwrap_or(AttemptOutcome::Lost);
        let unit: f64 = self.rng.random();
        let after = crate::backoff(
            retry,
            self.config.backoff_base,
            self.config.backoff_cap,
            unit,
        );
        if let Some(job) = self.jobs.get_mut(&id) {
            job.retries_left -= 1;
        }
        self.requeue(id, now + after, Wait::Fresh);
        self.event(
            id,
            now,
            EventKind::Retrying {
                attempt,
                outcome,
                after,
            },
        );
    }

    /// Back to the queue, offered again from `not_before`: a fresh wait (a
    /// retry), or the wait it was in before its refused offer goes on.
    fn requeue(&mut self, id: JobId, not_before: Instant, wait: Wait) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.not_before = not_before;
        if wait == Wait::Fresh {
            job.wait_deadline = not_before + job.spec.options.timeout;
        }
        job.deadline = job.wait_deadline;
        job.lease_until = None;
        if self.set_state(id, JobState::Queued) {
            self.enqueue(id);
        }
        self.refile_timer(id);
    }

    /// Closes the current attempt with `outcome`, releasing its slot; with
    /// `tell_worker`, the worker is told to stop it.
    fn end_attempt(&mut self, now: Instant, id: JobId, outcome: AttemptOutcome, tell_worker: bool) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let Some((worker, attempt)) = job.state.attempt() else {
            return;
        };
        match &outcome {
            AttemptOutcome::Completed | AttemptOutcome::Failed { .. } => {
                let in_flight = self.in_flight.get(&worker).copied().unwrap_or(0);
                self.observed.answered(worker, in_flight);
            }
            AttemptOutcome::TimedOut
            | AttemptOutcome::Lost
            | AttemptOutcome::Rejected {
                reason: RejectReason::UnknownCapability,
                ..
            } => self.observed.failed(worker),
            _ => {}
        }
        if let Some(a) = job.attempts.last_mut() {
            a.ended_at = Some(now);
            a.outcome = Some(outcome);
        }
        release(&mut self.in_flight, worker);
        if tell_worker {
            self.out.push_back(Output::Send {
                to: worker,
                msg: DcMsg::Cancel {
                    job_id: id,
                    attempt,
                },
            });
        }
    }

    fn current_attempt(&mut self, id: JobId) -> Option<&mut Attempt> {
        self.jobs.get_mut(&id)?.attempts.last_mut()
    }

    fn attempt_log(&self, id: JobId) -> Vec<String> {
        self.jobs
            .get(&id)
            .map(|j| {
                j.attempts
                    .iter()
                    .map(|a| {
                        let outcome = a
                            .outcome
                            .as_ref()
                            .map_or("unfinished".to_owned(), |o| o.to_string());
                        format!("#{} on {}: {outcome}", a.number, a.worker.short())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Moves a job through the one transition function. A refused transition
    /// is a bug in this file, not bad input: it is counted as stale and ignored.
    fn set_state(&mut self, id: JobId, to: JobState) -> bool {
        let Some(job) = self.jobs.get_mut(&id) else {
            return false;
        };
        if job.state.transition(to).is_ok() {
            true
        } else {
            self.stale += 1;
            false
        }
    }

    /// Ends a job: its one `Finished`. Any open attempt must be closed first.
    fn finish(
        &mut self,
        now: Instant,
        id: JobId,
        state: JobState,
        result: Result<serde_json::Value, JobError>,
    ) {
        if !self.set_state(id, state.clone()) {
            return;
        }
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        self.timers.remove(&(job.timer, id));
        if let Some(key) = job.queue_key {
            self.dequeue(key, &job.spec.capability);
        }
        let error = result.as_ref().err().map(|e| e.to_string());
        self.event(
            id,
            now,
            EventKind::Finished {
                state: state.name(),
                error,
            },
        );
        self.out.push_back(Output::Finished(JobEnd {
            job_id: id,
            worker: job.attempts.last().map(|a| a.worker),
            result,
            attempts: job.attempts,
            submitted_at: job.submitted_at,
        }));
    }

    /// Takes a job out of the queue.
    fn dequeue(&mut self, key: QueueKey, cap: &Capability) {
        if self.queue.remove(&key).is_some() {
            if let Some(n) = self.queued_caps.get_mut(cap) {
                *n -= 1;
                if *n == 0 {
                    self.queued_caps.remove(cap);
                }
            }
        }
    }

    /// Offers queued jobs whose time has come, highest priority first.
    fn pump(&mut self, now: Instant) {
        // Capabilities without a worker with room in this pass: later jobs
        // needing them are skipped, and the pass ends once every capability
        // in the queue is one of them (keeps a long queue cheap).
        let mut full: HashSet<Capability> = HashSet::new();
        let mut cursor: Option<QueueKey> = None;
        loop {
            if full.len() >= self.queued_caps.len() {
                break;
            }
            let next = match cursor {
                None => self.queue.iter().next(),
                Some(c) => self
                    .queue
                    .range((Bound::Excluded(c), Bound::Unbounded))
                    .next(),
            };
            let Some((key, id)) = next.map(|(k, v)| (*k, *v)) else {
                break;
            };
            cursor = Some(key);
            let Some(job) = self.jobs.get(&id) else {
                self.queue.remove(&key);
                continue;
            };
            if job.not_before > now || full.contains(&job.spec.capability) {
                continue;
            }
            let cap = job.spec.capability.clone();
            if self.try_place(now, id) == Placement::NoRoom {
                full.insert(cap);
            }
        }
    }

    /// Fresh stats from `id`: they count the attempts this peer had there now.
    fn note_stats(&mut self, id: PeerId) {
        let own = self.in_flight.get(&id).copied().unwrap_or(0);
        self.in_flight_at_stats.insert(id, own);
    }

    /// How busy a remote worker is believed to be: its last broadcast
    /// `running`, corrected by how this peer's own attempts there changed
    /// since (a job of ours that ended since frees a slot at once, one we
    /// sent since takes one), and never less than our own attempts there.
    fn believed_busy(&self, p: &PeerInfo) -> u32 {
        let own = self.in_flight.get(&p.id).copied().unwrap_or(0);
        if p.id == self.me {
            // Our own worker's stats are current: they are read every turn.
            return p.stats.running.max(own);
        }
        let at_stats = self.in_flight_at_stats.get(&p.id).copied().unwrap_or(0);
        (p.stats.running + own).saturating_sub(at_stats).max(own)
    }

    /// All capable workers (this peer included under self-dispatch), in id order.
    fn capable(&self, now: Instant, cap: &Capability) -> Vec<Candidate> {
        let local = self
            .local
            .as_ref()
            .filter(|_| self.config.self_dispatch)
            .map(|l| PeerInfo {
                id: self.me,
                ..l.clone()
            });
        let mut all: Vec<Candidate> = self
            .pool
            .peers()
            .filter(|p| p.id != self.me)
            .chain(local.as_ref())
            .filter(|p| p.capabilities.contains(cap) && p.stats.slots > 0)
            .filter(|p| !p.stats.draining && !self.draining.contains(&p.id))
            .filter(|p| self.trusted(now, &p.id))
            .map(|p| {
                let busy = self.believed_busy(p);
                if p.id == self.me {
                    return Candidate {
                        id: p.id,
                        slots: p.stats.slots,
                        busy,
                    };
                }
                // A claim of free slots counts only as far as this peer has
                // seen the worker answer (`observed`): past its window, the
                // worker is as good as full.
                let own = self.in_flight.get(&p.id).copied().unwrap_or(0);
                let window_room = self.observed.window(&p.id).saturating_sub(own);
                let claimed_room = p.stats.slots.saturating_sub(busy);
                Candidate {
                    id: p.id,
                    slots: p.stats.slots,
                    busy: p.stats.slots - claimed_room.min(window_room),
                }
            })
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// Whether `peer` may be offered jobs (its link was not refused, and
    /// did not fail to open, lately).
    fn trusted(&self, now: Instant, peer: &PeerId) -> bool {
        self.passed_over.get(peer).is_none_or(|p| p.until <= now)
    }

    /// Why no job for `cap` can be placed although a peer in the view runs
    /// it: the error of a peer passed over for its link.
    fn passed_over_with(&self, now: Instant, cap: &Capability) -> Option<JobError> {
        self.passed_over
            .iter()
            .filter(|(_, p)| p.until > now)
            .find(|(id, _)| {
                self.pool
                    .get(id)
                    .is_some_and(|p| p.capabilities.contains(cap))
            })
            .map(|(id, p)| p.error(*id))
    }

    /// Tries to offer one queued job.
    fn try_place(&mut self, now: Instant, id: JobId) -> Placement {
        let Some(job) = self.jobs.get(&id) else {
            return Placement::Ended;
        };
        let cap = job.spec.capability.clone();
        let capable = self.capable(now, &cap);
        if capable.is_empty() && !self.pool.is_synced() {
            // The view is still filling (a daemon just started or
            // reconnected): "nobody runs this" is not known yet. The job waits;
            // the pass after the view syncs places it or ends it.
            return Placement::NoRoom;
        }
        if let Some(w) = job.held_by {
            if capable.iter().any(|c| c.id == w) {
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.held_by = None;
                }
                return self.dispatch(now, id, w);
            }
            if !self.pool.is_synced() {
                // The view is still filling and may yet show the holder
                // (this peer's own worker is known at once, the pool is
                // not): placing the job now would run it a second time
                // while the holder still runs it or keeps its result. It
                // waits; jobs without a holder go on being placed.
                return if capable.iter().any(Candidate::has_room) {
                    Placement::Waiting
                } else {
                    Placement::NoRoom
                };
            }
            // Gone from the pool: whatever it held is lost with it.
            if let Some(job) = self.jobs.get_mut(&id) {
                job.held_by = None;
            }
        }
        let Some(job) = self.jobs.get(&id) else {
            return Placement::Ended;
        };
        if capable.is_empty() {
            let err = self
                .passed_over_with(now, &cap)
                .unwrap_or_else(|| match &self.config.view {
                    Some(view) if !view.contains(&cap) => JobError::OutsideView {
                        capability: cap,
                        view: match view.is_empty() {
                            true => "none".to_owned(),
                            false => view
                                .iter()
                                .map(Capability::as_str)
                                .collect::<Vec<_>>()
                                .join(","),
                        },
                    },
                    _ => JobError::NoCapableWorker { capability: cap },
                });
            self.finish(now, id, JobState::Failed, Err(err));
            return Placement::Ended;
        }
        let candidates: Vec<Candidate> = capable
            .iter()
            .copied()
            .filter(|c| !job.refused_by.contains(&c.id))
            .collect();
        let kind = job
            .spec
            .options
            .strategy
            .unwrap_or(self.config.default_strategy);
        let req = PickRequest {
            job_id: id,
            capability: &cap,
            affinity: job.spec.options.affinity.as_deref(),
        };
        let pick = match self.strategies.get(kind) {
            Some(s) => s.pick(&req, &candidates, &mut self.rng),
            None => None,
        }
        .filter(|p| candidates.iter().any(|c| c.id == *p && c.has_room()));
        let Some(worker) = pick else {
            if capable.iter().all(|c| job.refused_by.contains(&c.id)) {
                // Every capable worker refused: wait, then ask them all again.
                let wait = now + self.config.busy_retry;
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.refused_by.clear();
                    job.not_before = wait;
                }
                self.refile_timer(id);
            }
            // Other jobs may still be placed if any capable worker has room.
            return if capable.iter().any(Candidate::has_room) {
                Placement::Waiting
            } else {
                Placement::NoRoom
            };
        };
        self.dispatch(now, id, worker)
    }

    /// Offers queued job `id` to `worker` as its next attempt.
    fn dispatch(&mut self, now: Instant, id: JobId, worker: PeerId) -> Placement {
        let Some(job) = self.jobs.get(&id) else {
            return Placement::Ended;
        };
        let attempt = u32::try_from(job.attempts.len())
            .unwrap_or(u32::MAX)
            .saturating_add(job.attempt_base)
            .saturating_add(1)
            .min(u32::MAX - 1);
        let timeout = job.spec.options.timeout;
        let msg = submit_msg(&job.spec, attempt, timeout);
        if !self.set_state(id, JobState::Dispatched { worker, attempt }) {
            return Placement::Ended;
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            if let Some(key) = job.queue_key.take() {
                let cap = job.spec.capability.clone();
                self.dequeue(key, &cap);
            }
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            job.deadline = now + timeout;
            job.lease_until = Some(now + self.config.lease);
            job.attempts.push(Attempt {
                number: attempt,
                worker,
                dispatched_at: now,
                started_at: None,
                ended_at: None,
                outcome: None,
            });
        }
        self.refile_timer(id);
        *self.in_flight.entry(worker).or_default() += 1;
        self.out.push_back(Output::Send { to: worker, msg });
        self.event(id, now, EventKind::Dispatched { worker, attempt });
        Placement::Placed
    }
}

/// Whether a job going back to the queue starts a new wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A retry: its wait (and so its timeout) starts over.
    Fresh,
    /// An offer refused before it ran: the wait before it goes on.
    Continued,
}

/// What [`Dispatcher::try_place`] did with a queued job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Offered to a worker.
    Placed,
    /// Ended (no capable worker at all).
    Ended,
    /// Stays queued, though some capable worker has room (it refused this
    /// job, or the strategy declined): other jobs may still be placed.
    Waiting,
    /// Stays queued: no capable worker has room for anything.
    NoRoom,
}

/// The submit message for `spec`'s attempt `attempt`.
fn submit_msg(spec: &JobSpec, attempt: u32, timeout: Duration) -> DcMsg {
    DcMsg::Submit {
        job_id: spec.job_id,
        attempt,
        capability: spec.capability.clone(),
        input: spec.input.clone(),
        timeout_ms: u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1),
    }
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
