//! The Rust API of a peer daemon: start one with [`spawn`] or
//! [`spawn_with`], then use its [`PeerHandle`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jobmesh_core::{DispatcherConfig, JobError, JobEvent, JobOptions, Strategy};
use jobmesh_transport::rtc::RtcConfig;
use jobmesh_wire::dc::JobId;
use jobmesh_wire::{Capability, PeerId};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::blobs::{Blob, BlobError, BlobLimits, Prepared};
pub use crate::envelope::JobReport;
use crate::handlers::{CapabilityError, Handlers};
use crate::jobs::{JobRecord, WatchEvent};
use crate::store::{Store, StoredJob};
pub use crate::view::{Metrics, PoolSnapshot};
use jobmesh_identity::{Identity, PublicKey};
use jobmesh_trust::{Credential, Invitation};

/// Everything a daemon needs to start.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// `ws://host:port/ws` of the signal-server.
    pub signal_url: String,
    /// More signal-servers of the same cluster (`--signal a,b,c`): tried in
    /// turn when the current one cannot be reached or goes away.
    pub signal_fallbacks: Vec<String>,
    /// Human name shown in the pool.
    pub name: String,
    /// Pool to join.
    pub pool: String,
    /// Capabilities to run (may be empty: submit only).
    pub capabilities: Vec<Capability>,
    /// The workers this peer learns of: those offering one of these
    /// capabilities (empty: none); None: every member (`--view`).
    pub view: Option<Vec<Capability>>,
    /// Jobs run at once.
    pub slots: u32,
    /// WebRTC settings.
    pub rtc: RtcConfig,
    /// Dispatch settings (default strategy, self-dispatch, queue limit, backoff).
    pub dispatcher: DispatcherConfig,
    /// On shutdown, how long running jobs get to finish.
    pub grace: Duration,
    /// Stats go to the signal-server at most this often.
    pub stats_interval: Duration,
    /// Progress of one job goes to its submitter at most this often.
    pub progress_interval: Duration,
    /// Blob limits: size, memory budget, transfers per link.
    pub blobs: BlobLimits,
    /// Where the blob spool directory is made (default: the system temp dir).
    pub spool_dir: Option<PathBuf>,
    /// The same-host handover directory (default
    /// [`crate::handover::default_dir`]): blobs to and from daemons of this
    /// user that share it go as files in it instead of over the data
    /// channel. `None`: always chunks.
    pub handover_dir: Option<PathBuf>,
    /// The daemon's data dir, holding its journal: with one, a submit
    /// returns only once the job is on disk, and a restarted daemon resumes
    /// every job that had not ended and keeps results for
    /// [`PeerHandle::stored_result`]. `None` (the default): nothing is kept.
    pub data_dir: Option<PathBuf>,
    /// Who this peer is: its key, from which its peer id follows. `None`
    /// (the default): the data dir's `identity.key` (created owner-only on
    /// the first start), or a fresh key for a daemon without a data dir.
    pub identity: Option<Identity>,
    /// For a `wss://` signal-server: a PEM file of the CA (or self-signed
    /// server) certificate to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// Whether to keep trying to reach the signal-server when the first
    /// connection fails for a reason that may pass (nothing listening yet, an
    /// unreachable host): a daemon does (the default); a one-off command
    /// sets `false` and reports the reason at once
    /// ([`PeerHandle::wait_pool`] returns [`DaemonError::Refused`]). A wrong
    /// URL or an untrusted certificate is reported at once either way.
    pub persist: bool,
    /// How this peer belongs to its pool. The default,
    /// [`Membership::Kept`], is closed: a credential kept in the data dir.
    pub membership: Membership,
    /// Per capability, the only submitters whose jobs this worker runs
    /// (absent: every member with the submitter role). Exec handlers
    /// especially.
    pub allow: HashMap<Capability, HashSet<PeerId>>,
}

/// How a daemon belongs to its pool.
#[derive(Debug, Clone, Default)]
pub enum Membership {
    /// The credential kept in the data dir by an earlier start with an
    /// invitation. Without one the daemon does not start.
    #[default]
    Kept,
    /// Redeem this invitation: bind it to this peer's key and keep the
    /// credential in the data dir for the next start.
    Invited(Invitation),
    /// This credential (a library that keeps its own).
    Credential(Credential),
    /// An open pool: anyone the signal-server admits is a member and may
    /// submit to anyone. For development on a trusted machine; the daemon
    /// says so in a warning at start.
    Open,
}

impl DaemonConfig {
    /// Defaults for everything but the url, name and pool.
    pub fn new(
        signal_url: impl Into<String>,
        name: impl Into<String>,
        pool: impl Into<String>,
    ) -> Self {
        Self {
            signal_url: signal_url.into(),
            signal_fallbacks: Vec::new(),
            name: name.into(),
            pool: pool.into(),
            capabilities: Vec::new(),
            view: None,
            slots: 2,
            rtc: RtcConfig::default(),
            dispatcher: DispatcherConfig {
                seed: rand::random(),
                ..DispatcherConfig::default()
            },
            grace: Duration::from_secs(30),
            stats_interval: Duration::from_millis(250),
            progress_interval: Duration::from_millis(100),
            blobs: BlobLimits::default(),
            spool_dir: None,
            handover_dir: crate::handover::default_dir(),
            data_dir: None,
            identity: None,
            ca: None,
            persist: true,
            membership: Membership::default(),
            allow: HashMap::new(),
        }
    }
}

/// What [`spawn_with`] adds to a config: your own handlers and strategy.
#[derive(Default)]
pub struct Extensions {
    /// Handlers by capability. Every capability of the config needs one;
    /// built-ins are used for the ones not given here.
    pub handlers: Handlers,
    /// Handlers that [`PeerHandle::add_capability`] may start running by
    /// name at run time, besides the built-ins (the exec handlers of a
    /// settings file, say); [`PeerHandle::reload_handlers`] replaces them.
    pub available: Handlers,
    /// The strategy used for `custom` (and as the default if the config's
    /// default strategy is `custom`).
    pub strategy: Option<Box<dyn Strategy>>,
}

/// Why a daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A capability this build cannot run (or not on this machine) and no
    /// handler was given for.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    /// A bad name or pool.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The data dir or its journal cannot be used.
    #[error("{0}")]
    Journal(String),
    /// No valid membership of the pool.
    #[error("{0}")]
    Membership(String),
}

/// Why a request to the daemon failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The daemon stopped before answering.
    #[error("the peer daemon stopped")]
    Stopped,
    /// It is shutting down and takes no new jobs.
    #[error("the peer daemon is shutting down and takes no new jobs")]
    Draining,
    /// A wait ran out.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The job's blobs could not be read or break a limit; nothing was sent.
    #[error("{0}")]
    Blobs(String),
    /// The journal could not record or read the job; a submit was not taken.
    #[error("{0}")]
    Journal(String),
    /// The daemon keeps no journal (it has no data dir).
    #[error("this peer daemon keeps no journal (start it with a data dir)")]
    NoJournal,
    /// The signal-server refused this peer for good.
    #[error("{0}")]
    Refused(String),
    /// The request is not valid.
    #[error("{0}")]
    Invalid(String),
    /// No data channel to a member opened: why.
    #[error("{0}")]
    NoLink(String),
}

/// How long [`PeerHandle::link_to`] callers wait for a link to open or
/// fail: past a dial's own deadline (10 s), so the answer is the dial's.
pub const LINK_PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// How a daemon reaches the network: what `peer doctor` starts from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkReport {
    /// The signal-server's URL (the first of `--signal`).
    pub signal_url: String,
    /// The others it moves to when the one it uses goes away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signal_fallbacks: Vec<String>,
    /// The CA file trusted for a `wss://` signal-server, if one was given.
    pub ca: Option<PathBuf>,
    /// Whether the signal-server connection is up.
    pub connected: bool,
    /// Why the signal-server refused this peer for good, if it did.
    pub refused: Option<String>,
    /// The STUN and TURN servers links use now: `--ice-server`'s, else the
    /// signal-server's (TURN with this peer's credential).
    pub ice_servers: Vec<jobmesh_wire::signal::IceServer>,
    /// Whether they come from `--ice-server` rather than the signal-server.
    pub ice_override: bool,
}

impl From<BlobError> for DaemonError {
    fn from(e: BlobError) -> Self {
        DaemonError::Blobs(e.to_string())
    }
}

pub(crate) enum Command {
    Submit {
        spec: jobmesh_core::JobSpec,
        /// Input blobs, described; empty for most jobs.
        blobs: Vec<Prepared>,
        /// None when nobody listens (`PeerHandle::run`): no channel, no copies.
        events: Option<mpsc::Sender<JobEvent>>,
        reply: oneshot::Sender<Result<JobReport, DaemonError>>,
        /// Its place under the queue limit.
        place: QueuePlace,
    },
    Cancel {
        job_id: JobId,
        reply: oneshot::Sender<bool>,
    },
    Jobs {
        reply: oneshot::Sender<Vec<JobRecord>>,
    },
    /// The number of pool observers changed: observe while there are any.
    Observe,
    /// Open a link to a member if there is none (`peer doctor`); answers
    /// once the dial started.
    Connect {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    /// How this daemon reaches the network (`peer doctor`).
    Network {
        reply: oneshot::Sender<NetworkReport>,
    },
    /// Run up to `slots` jobs at once from now on; answers the slots before.
    Scale {
        slots: u32,
        reply: oneshot::Sender<u32>,
    },
    /// Add or remove a capability; answers the capabilities now.
    Capability {
        change: CapabilityChange,
        reply: oneshot::Sender<Result<Vec<Capability>, DaemonError>>,
    },
}

/// A change of what a daemon runs.
pub(crate) enum CapabilityChange {
    /// Run it, with this handler.
    Add(Capability, Arc<dyn crate::handlers::Handler>),
    /// Stop taking its jobs (running ones finish).
    Remove(Capability),
}

/// Most slots a daemon runs (`--slots`, [`PeerHandle::scale`]).
pub const MAX_SLOTS: u32 = 4096;

/// Events buffered per submitted job for its [`JobHandle`]. Overflow: the
/// event is dropped (progress mostly); the outcome never is.
pub(crate) const JOB_EVENT_QUEUE: usize = 256;
/// Events buffered per `watch` subscriber. Overflow: a slow watcher misses
/// events (and is told how many); the daemon never waits for it.
pub(crate) const WATCH_QUEUE: usize = 1024;
/// Batches of observed events buffered per pool watcher. Overflow: a slow
/// watcher misses batches (and is told how many); the daemon never waits.
pub(crate) const OBSERVED_QUEUE: usize = 1024;

/// Job events of one worker of the pool, as an observer receives them.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedBatch {
    /// The worker.
    pub worker: PeerId,
    /// What happened on it, oldest first.
    pub events: Vec<jobmesh_wire::dc::ObservedEvent>,
    /// Events the worker dropped before these (this observer fell behind).
    pub dropped: u64,
}

/// A subscription to the job events of every worker in the pool
/// ([`PeerHandle::observe`]). While one exists the daemon observes the pool;
/// dropping the last one stops it.
#[derive(Debug)]
pub struct Observation {
    /// `Some` until dropped.
    events: Option<broadcast::Receiver<ObservedBatch>>,
    commands: mpsc::Sender<Command>,
}

impl Observation {
    /// The next batch; `Err(n)`: this subscription fell behind and missed
    /// `n` batches; `Ok(None)`: the daemon stopped.
    pub async fn next(&mut self) -> Result<Option<ObservedBatch>, u64> {
        let Some(events) = &mut self.events else {
            return Ok(None);
        };
        match events.recv().await {
            Ok(b) => Ok(Some(b)),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(n),
            Err(broadcast::error::RecvError::Closed) => Ok(None),
        }
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        // Gone before the daemon counts the subscriptions left.
        drop(self.events.take());
        // Overflow: the daemon keeps observing until its next check.
        let _ = self.commands.try_send(Command::Observe);
    }
}

/// A running daemon. Clones share it. Dropping handles does not stop it; call
/// [`shutdown`](Self::shutdown) (or cancel the token given to [`spawn`]).
#[derive(Clone)]
pub struct PeerHandle {
    pub(crate) id: PeerId,
    pub(crate) key: PublicKey,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) pool: watch::Receiver<PoolSnapshot>,
    pub(crate) watch: broadcast::Sender<WatchEvent>,
    pub(crate) observed: broadcast::Sender<ObservedBatch>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) stopped: CancellationToken,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) telemetry: Arc<crate::telemetry::Telemetry>,
    pub(crate) traffic: jobmesh_transport::rtc::Traffic,
    pub(crate) max_blob_size: u64,
    pub(crate) spool: PathBuf,
    /// The journal, while the daemon runs (taken at shutdown so it can close).
    pub(crate) store: Arc<std::sync::Mutex<Option<Store>>>,
    pub(crate) data_dir: Option<PathBuf>,
    /// Submitted jobs not yet ended, each counted by its [`QueuePlace`].
    pub(crate) places: Arc<AtomicUsize>,
    /// A minute of the pool view, sampled for `status`'s rates.
    pub(crate) history: Arc<std::sync::Mutex<crate::status::History>>,
    /// The dispatcher's queue limit, which `places` is kept under.
    pub(crate) queue_limit: usize,
    /// Handlers `add_capability` may use by name ([`Extensions::available`]).
    pub(crate) available: crate::handlers::SharedHandlers,
}

/// A submitted job's place under the queue limit, taken before the job is
/// journaled and given back when it ends (when the daemon drops the job's
/// waiter) or is refused on the way.
#[derive(Debug)]
pub(crate) struct QueuePlace(Arc<AtomicUsize>);

impl QueuePlace {
    /// A place, if fewer than `limit` are taken.
    fn take(count: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count.clone()))
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for PeerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHandle").field("id", &self.id).finish()
    }
}

/// A submitted job: its events as they happen, its outcome, and cancel.
#[derive(Debug)]
pub struct JobHandle {
    job_id: JobId,
    /// `None` for a job submitted without events.
    events: Option<mpsc::Receiver<JobEvent>>,
    result: oneshot::Receiver<Result<JobReport, DaemonError>>,
    commands: mpsc::Sender<Command>,
}

impl JobHandle {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.job_id
    }

    /// The next event of this job (queued, dispatched, started, progress,
    /// retrying, finished), or `None` once it has ended.
    pub async fn next_event(&mut self) -> Option<JobEvent> {
        match &mut self.events {
            Some(events) => events.recv().await,
            None => None,
        }
    }

    /// Asks the daemon to cancel the job; `true` if it was still live.
    /// The outcome then arrives through [`result`](Self::result).
    pub async fn cancel(&self) -> bool {
        cancel(&self.commands, self.job_id).await
    }

    /// The outcome if the job ended at once (refused at submit), without
    /// waiting; the handle stays usable when it has not.
    pub fn ended_at_once(&mut self) -> Option<Result<JobReport, DaemonError>> {
        self.result.try_recv().ok()
    }

    /// Waits for the job's outcome.
    pub async fn result(self) -> Result<JobReport, DaemonError> {
        self.result.await.map_err(|_| DaemonError::Stopped)?
    }
}

async fn cancel(commands: &mpsc::Sender<Command>, job_id: JobId) -> bool {
    let (reply, rx) = oneshot::channel();
    if commands
        .send(Command::Cancel { job_id, reply })
        .await
        .is_err()
    {
        return false;
    }
    rx.await.unwrap_or(false)
}

impl PeerHandle {
    /// This peer's id.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// This daemon's public key (its peer id is derived from it).
    pub fn public_key(&self) -> PublicKey {
        self.key
    }

    /// The directory where this daemon keeps blobs in transit and handlers'
    /// work dirs (removed when the daemon stops).
    pub fn spool_dir(&self) -> &std::path::Path {
        &self.spool
    }

    /// The daemon's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// This daemon's Prometheus metrics, in the text format (version
    /// 0.0.4): its jobs per capability (submitted, completed, failed,
    /// timed out, lost, cancelled, retried; queue wait and run time
    /// histograms), what it runs and holds now, its links and data-channel
    /// bytes.
    pub fn metrics_text(&self) -> String {
        self.telemetry.render()
    }

    /// The largest blob this daemon sends or accepts, in bytes.
    pub fn max_blob_size(&self) -> u64 {
        self.max_blob_size
    }

    /// Bytes this daemon has sent and received on data channels, all links
    /// together, since it started: `(sent, received)`.
    pub fn data_channel_bytes(&self) -> (u64, u64) {
        (self.traffic.sent(), self.traffic.received())
    }

    /// Submits a job; its handle streams events and yields the outcome.
    pub async fn submit(
        &self,
        capability: Capability,
        input: Value,
        options: impl Into<JobOptions>,
    ) -> Result<JobHandle, DaemonError> {
        self.submit_with_blobs(capability, input, Vec::new(), options)
            .await
    }

    /// Submits a job with input blobs (files are read when sent; their size
    /// and digest are taken now, and a blob over a limit fails here, before
    /// anything is sent).
    pub async fn submit_with_blobs(
        &self,
        capability: Capability,
        input: Value,
        blobs: Vec<Blob>,
        options: impl Into<JobOptions>,
    ) -> Result<JobHandle, DaemonError> {
        self.submit_job(capability, input, blobs, options.into(), true)
            .await
    }

    /// [`submit_with_blobs`](Self::submit_with_blobs), with the job's event
    /// stream only when `events` (it costs a channel per job; without it
    /// [`JobHandle::next_event`] is always `None`).
    pub async fn submit_job(
        &self,
        capability: Capability,
        input: Value,
        blobs: Vec<Blob>,
        options: JobOptions,
        events: bool,
    ) -> Result<JobHandle, DaemonError> {
        let (events_tx, events) = if events {
            let (tx, rx) = mpsc::channel(JOB_EVENT_QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let (job_id, result) = self
            .send_submit(capability, input, blobs, options, events_tx)
            .await?;
        Ok(JobHandle {
            job_id,
            events,
            result,
            commands: self.commands.clone(),
        })
    }

    async fn send_submit(
        &self,
        capability: Capability,
        input: Value,
        blobs: Vec<Blob>,
        options: JobOptions,
        events: Option<mpsc::Sender<JobEvent>>,
    ) -> Result<(JobId, oneshot::Receiver<Result<JobReport, DaemonError>>), DaemonError> {
        let (reply, result) = oneshot::channel();
        let job_id = uuid::Uuid::new_v4();
        // A full queue refuses here, before the job costs a digest or a synced
        // journal write (the dispatcher's own limit also counts resumed jobs).
        let Some(place) = QueuePlace::take(&self.places, self.queue_limit) else {
            let _ = reply.send(Ok(JobReport {
                job_id,
                worker: None,
                result: Err(JobError::QueueFull {
                    limit: self.queue_limit,
                }),
                blobs: Vec::new(),
                attempts: Vec::new(),
                elapsed: Duration::ZERO,
            }));
            return Ok((job_id, result));
        };
        let blobs = if blobs.is_empty() {
            Vec::new()
        } else {
            crate::blobs::prepare(blobs, self.max_blob_size, None).await?
        };
        let spec = jobmesh_core::JobSpec {
            job_id,
            capability,
            input,
            options,
        };
        // The job's record is queued in the journal before the daemon hears
        // of it (so it is written before anything the daemon journals about
        // the job), and the job goes out while the disk syncs; the submit
        // returns only once the record is on disk. Its result, however early,
        // reaches the caller through the handle returned after that.
        let durable = self.journal_submit(&spec, &blobs).await?;
        self.commands
            .send(Command::Submit {
                spec,
                blobs,
                events,
                reply,
                place,
            })
            .await
            .map_err(|_| DaemonError::Stopped)?;
        if let Some(durable) = durable {
            if let Err(e) = durable.done().await {
                // Not on disk, so not accepted: the job is called off (it
                // may have run once already, which at-least-once allows).
                cancel(&self.commands, job_id).await;
                return Err(DaemonError::Journal(e.to_string()));
            }
        }
        Ok((job_id, result))
    }

    /// With a journal: queues the job's record, returning what resolves
    /// once it is on disk.
    async fn journal_submit(
        &self,
        spec: &jobmesh_core::JobSpec,
        blobs: &[crate::blobs::Prepared],
    ) -> Result<Option<jobmesh_journal::Committed>, DaemonError> {
        match self.store() {
            Some(store) => store
                .submit(spec, blobs)
                .await
                .map(Some)
                .map_err(DaemonError::Journal),
            // Without a data dir there is no journal; with one that has
            // closed, the daemon has stopped and the command below says so.
            None => Ok(None),
        }
    }

    /// Whether this daemon keeps a journal (it was given a data dir).
    pub fn keeps_journal(&self) -> bool {
        self.data_dir.is_some()
    }

    fn store(&self) -> Option<Store> {
        crate::lock(&self.store).clone()
    }

    /// A job of this daemon as its journal has it: the outcome envelope of
    /// an ended job (kept for [`RESULT_TTL`](crate::store::RESULT_TTL)),
    /// or where an unfinished one stands; `None` for a job it does not know
    /// (never submitted here, or expired).
    pub async fn stored_result(&self, job_id: JobId) -> Result<Option<StoredJob>, DaemonError> {
        match self.store() {
            Some(store) => store.stored(job_id).await.map_err(DaemonError::Journal),
            None if self.data_dir.is_some() => Err(DaemonError::Stopped),
            None => Err(DaemonError::NoJournal),
        }
    }

    /// Submits a job and waits for its outcome.
    pub async fn run(
        &self,
        capability: Capability,
        input: Value,
        options: impl Into<JobOptions>,
    ) -> Result<JobReport, DaemonError> {
        let (_, result) = self
            .send_submit(capability, input, Vec::new(), options.into(), None)
            .await?;
        result.await.map_err(|_| DaemonError::Stopped)?
    }

    /// Cancels a job this daemon submitted; `true` if it was still live.
    pub async fn cancel(&self, job_id: JobId) -> bool {
        cancel(&self.commands, job_id).await
    }

    /// Live jobs and recently ended ones, newest first.
    pub async fn jobs(&self) -> Result<Vec<JobRecord>, DaemonError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Jobs { reply })
            .await
            .map_err(|_| DaemonError::Stopped)?;
        rx.await.map_err(|_| DaemonError::Stopped)
    }

    /// Every job event of this daemon from now on. A subscriber that falls
    /// more than 1024 events behind misses events (`RecvError::Lagged`).
    pub fn watch(&self) -> broadcast::Receiver<WatchEvent> {
        self.watch.subscribe()
    }

    /// The pool as this daemon sees it now.
    pub fn pool(&self) -> PoolSnapshot {
        self.pool.borrow().clone()
    }

    /// Observes the pool: the job events of every worker (this one
    /// included), from their recent history on. The daemon subscribes to
    /// the workers while any observation exists.
    pub async fn observe(&self) -> Result<Observation, DaemonError> {
        let events = self.observed.subscribe();
        self.commands
            .send(Command::Observe)
            .await
            .map_err(|_| DaemonError::Stopped)?;
        Ok(Observation {
            events: Some(events),
            commands: self.commands.clone(),
        })
    }

    /// The pool at a glance: workers, slots and finished jobs per
    /// capability with their rates over the last minute, the slowest
    /// workers, and this daemon's own jobs and journal.
    pub async fn status(&self) -> Result<crate::status::StatusReport, DaemonError> {
        Ok(self.status_of(&self.jobs().await?))
    }

    /// [`status`](Self::status) with this daemon's `jobs` as
    /// [`jobs`](Self::jobs) listed them (for a caller that needs both).
    pub fn status_of(&self, jobs: &[JobRecord]) -> crate::status::StatusReport {
        let journal = self.data_dir.as_ref().map(|d| {
            let file = d.join(jobmesh_journal::FILE_NAME);
            let bytes = std::fs::metadata(&file).map_or(0, |m| m.len());
            (file, bytes)
        });
        let pool = self.pool();
        let history = crate::lock(&self.history);
        crate::status::report(std::time::Instant::now(), &pool, &history, jobs, journal)
    }

    /// Runs up to `slots` jobs at once from now on (at least 1, at most
    /// [`MAX_SLOTS`]); the pool sees the new capacity with the next stats.
    /// Scaling down cancels nothing: the extra slots retire as their jobs
    /// end. Returns the slots before.
    pub async fn scale(&self, slots: u32) -> Result<u32, DaemonError> {
        if slots == 0 || slots > MAX_SLOTS {
            return Err(DaemonError::Invalid(format!(
                "slots must be 1..={MAX_SLOTS} (to stop taking jobs, drain the daemon: SIGTERM)"
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Scale { slots, reply })
            .await
            .map_err(|_| DaemonError::Stopped)?;
        rx.await.map_err(|_| DaemonError::Stopped)
    }

    /// How this daemon reaches the network: its signal-server, and the
    /// STUN and TURN servers its links use now.
    pub async fn network(&self) -> Result<NetworkReport, DaemonError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Network { reply })
            .await
            .map_err(|_| DaemonError::Stopped)?;
        rx.await.map_err(|_| DaemonError::Stopped)
    }

    /// How the link to `peer` connected, opening one if there is none
    /// (within `timeout`): the candidate pair and the setup time, or why
    /// no data channel opened.
    pub async fn link_to(
        &self,
        peer: PeerId,
        timeout: Duration,
    ) -> Result<jobmesh_transport::path::LinkPath, DaemonError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Connect { peer, reply })
            .await
            .map_err(|_| DaemonError::Stopped)?;
        rx.await.map_err(|_| DaemonError::Stopped)?;
        let s = self
            .wait_pool(timeout, |s| {
                s.links.contains_key(&peer) || s.link_errors.contains_key(&peer)
            })
            .await?;
        match (s.links.get(&peer), s.link_errors.get(&peer)) {
            (Some(path), _) => Ok(*path),
            (None, Some(why)) => Err(DaemonError::NoLink(why.clone())),
            (None, None) => Err(DaemonError::Timeout("the link")),
        }
    }

    /// Runs `capability` from now on, with `handler` (`None`: the built-in
    /// one of that name). The pool sees it at once (the signal-server is
    /// told); a closed pool's credential must grant it. Returns every
    /// capability this daemon runs now.
    pub async fn add_capability(
        &self,
        capability: Capability,
        handler: Option<Arc<dyn crate::handlers::Handler>>,
    ) -> Result<Vec<Capability>, DaemonError> {
        let available = crate::read(&self.available).get(&capability).cloned();
        let handler = match handler.or(available) {
            Some(h) => h,
            None => crate::handlers::builtin(std::slice::from_ref(&capability))
                .map_err(|e| {
                    DaemonError::Invalid(format!(
                        "{e} (nor is it an exec handler of the settings file)"
                    ))
                })?
                .remove(&capability)
                .ok_or_else(|| DaemonError::Invalid(format!("no handler for {capability:?}")))?,
        };
        self.change_capability(CapabilityChange::Add(capability, handler))
            .await
    }

    /// Stops taking jobs of `capability`: running ones finish, new ones
    /// are refused as unknown (submitters go to other workers), and the
    /// pool no longer lists it here. Returns the capabilities left.
    pub async fn remove_capability(
        &self,
        capability: Capability,
    ) -> Result<Vec<Capability>, DaemonError> {
        self.change_capability(CapabilityChange::Remove(capability))
            .await
    }

    /// Replaces the handlers [`add_capability`](Self::add_capability) may
    /// use by name (a settings file read again, on SIGHUP); a capability
    /// this daemon runs whose handler is among them runs its new one from
    /// its next job. Returns the capabilities whose handler changed.
    pub async fn reload_handlers(
        &self,
        handlers: Handlers,
    ) -> Result<Vec<Capability>, DaemonError> {
        let running = self.pool().me.capabilities;
        let mut changed = Vec::new();
        for (capability, handler) in &handlers {
            if running.contains(capability) {
                self.change_capability(CapabilityChange::Add(capability.clone(), handler.clone()))
                    .await?;
                changed.push(capability.clone());
            }
        }
        *crate::write(&self.available) = handlers;
        Ok(changed)
    }

    async fn change_capability(
        &self,
        change: CapabilityChange,
    ) -> Result<Vec<Capability>, DaemonError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Capability { change, reply })
            .await
            .map_err(|_| DaemonError::Stopped)?;
        rx.await.map_err(|_| DaemonError::Stopped)?
    }

    /// Waits until `pred` holds for the pool view, or `timeout` passes.
    pub async fn wait_pool(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&PoolSnapshot) -> bool,
    ) -> Result<PoolSnapshot, DaemonError> {
        let mut rx = self.pool.clone();
        let r =
            tokio::time::timeout(timeout, rx.wait_for(|s| s.refused.is_some() || pred(s))).await;
        match r {
            Ok(Ok(s)) => match &s.refused {
                Some(reason) => Err(DaemonError::Refused(reason.clone())),
                None => Ok(s.clone()),
            },
            Ok(Err(_)) => Err(DaemonError::Stopped),
            Err(_) => Err(DaemonError::Timeout("the pool to reach the expected state")),
        }
    }

    /// Waits until the signal-server refuses this peer for good; returns
    /// why. Pending forever while it is admitted.
    pub async fn refused(&self) -> String {
        let mut rx = self.pool.clone();
        let reason = rx
            .wait_for(|s| s.refused.is_some())
            .await
            .map(|s| s.refused.clone().unwrap_or_default());
        match reason {
            Ok(reason) => reason,
            // Stopped: nothing more will be refused.
            Err(_) => std::future::pending().await,
        }
    }

    /// Starts a graceful shutdown: no new jobs, running ones get the grace period.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the daemon has fully stopped.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }
}
