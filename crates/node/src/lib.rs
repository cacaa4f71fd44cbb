//! One jobmesh peer as a sans-IO state machine.
//!
//! A [`Node`] owns every decision of one peer that ties its parts together:
//! the [`Dispatcher`] (jobs it submitted), the [`WorkerCore`] (jobs it runs),
//! the routing of messages between the two when the peer runs its own job
//! (self-dispatch: they never touch a socket), the link table (dial on first
//! use, the glare rule when both peers dial at once, link ids that fence a
//! replaced link's late events, messages held while a link opens, the link
//! handshake that proves each remote's key before any job message), the blob
//! transfer sets of each attempt (which blobs move, chunk fencing, input
//! deadlines, results held for their blobs), the stats it publishes and the
//! journal changes it wants written.
//!
//! Contract (str0m / quinn): no sockets, no tasks, no clock. Every input
//! comes with `now` through [`Node::handle_input`]; after each one, drain
//! [`Node::poll_output`] until it returns `None`; call again with
//! [`NodeInput::Timeout`] at [`Node::poll_timeout`]. The driver (the `peer`
//! daemon, or the simulator) turns I/O into inputs and outputs into effects,
//! and keeps only handles (tasks, connections, files) keyed by the same ids.

mod binding;
mod links;
mod observe;
use observe::{Observers, Watching};
pub use observe::{MAX_OBSERVERS, OBSERVER_QUEUE};
mod spool;
mod transfers;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use jobmesh_core::{
    Admission, Dispatcher, DispatcherConfig, Input, JobEnd, JobError, JobEvent, JobSpec, JobState,
    PoolView, StatsCoalescer, Strategy, WorkerCore, WorkerOutput,
};
use jobmesh_identity::{Identity, Signature};
use jobmesh_trust::{Credential, Revocations, Role};
use jobmesh_wire::blob::{BlobMeta, Direction};
use jobmesh_wire::dc::{
    DcMsg, JobId, ObservedEvent, Outcome, Progress, RejectReason, MAX_DC_MESSAGE,
};
use jobmesh_wire::link::{Binding, BINDING_TIMEOUT_MS};
use jobmesh_wire::signal::{Handshake, ServerMsg};
use jobmesh_wire::{Capability, PeerId, PeerInfo, Stats};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use spool::SpoolBudget;
use tracing::{debug, info, warn};
use transfers::Transfers;

pub use binding::Refusal;
use binding::RemoteHello;
use links::{Link, LinkTable};
pub use links::{LinkId, MAX_LINKS, PENDING_PER_LINK};
pub use spool::SpoolLimits;
pub use transfers::HandlerInputs;

/// A handler's verdict on a job's input, before it is admitted (`Err(why)`:
/// rejected as bad input). Pure: it must not block or do I/O.
pub type InputCheck = Box<dyn Fn(&Capability, &Value) -> Result<(), String> + Send>;

/// Everything a node is configured with.
pub struct NodeConfig {
    /// This peer's key; its id is the key's ([`Identity::peer_id`]).
    pub identity: Identity,
    /// Its name in the pool.
    pub name: String,
    /// What it runs (empty: a submit-only peer).
    pub capabilities: Vec<Capability>,
    /// Jobs it runs at once.
    pub slots: u32,
    /// Handler progress goes out at most this often per job.
    pub progress_interval: Duration,
    /// Stats go to the signal-server at most this often.
    pub stats_interval: Duration,
    /// The submitting side's settings.
    pub dispatcher: DispatcherConfig,
    /// A user's own strategy, for jobs that ask for `custom`.
    pub strategy: Option<Box<dyn Strategy>>,
    /// Largest input blob this worker takes (a larger one is rejected before
    /// any byte is sent).
    pub max_blob_size: u64,
    /// The disk budget for blobs received from other peers.
    pub spool: SpoolLimits,
    /// Whether the driver keeps a journal (then the node asks for attempts
    /// and requeues to be written: [`NodeOutput::Journal`]).
    pub journaled: bool,
    /// Seed of the node's own RNG (dial tags). The daemon passes a random
    /// one, so tags differ across restarts; the simulator passes its seed.
    pub seed: u64,
    /// Checks a job's input before it is admitted.
    pub input_check: InputCheck,
    /// This peer's credential in a closed pool: the pool's key comes from
    /// it, every remote must show one of its own in the link handshake, and
    /// roles are enforced. `None`: an open pool (anyone the signal-server
    /// admits is a member).
    pub credential: Option<Credential>,
    /// Per capability, the only submitters whose jobs this worker runs
    /// (absent: any submitter of the pool).
    pub allow: HashMap<Capability, HashSet<PeerId>>,
    /// Wall-clock time, which credentials expire in.
    pub clock: UnixClock,
    /// The token of this peer's handover directory (`DcMsg::Handover`):
    /// blobs to and from a peer whose directory has the same token are
    /// handed over as files in it. `None`: chunks only.
    pub handover: Option<String>,
}

/// Wall-clock time as the node derives it from `now`: the Unix time `unix`
/// (seconds) was read at `at`. The driver reads it once, at start.
#[derive(Debug, Clone, Copy)]
pub struct UnixClock {
    /// When `unix` was read.
    pub at: Instant,
    /// The Unix time then.
    pub unix: u64,
}

impl UnixClock {
    /// The Unix time at `now`.
    pub fn at(&self, now: Instant) -> u64 {
        self.unix
            .saturating_add(now.saturating_duration_since(self.at).as_secs())
    }

    /// The Unix time at `now`, in milliseconds.
    pub fn at_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.at).as_millis();
        self.unix
            .saturating_mul(1000)
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

/// Everything a node reacts to. Each is a fact the driver learned.
#[derive(Debug)]
pub enum NodeInput<'a> {
    /// A new job of this peer's, with the input blobs it carries (held by
    /// the driver; the node announces them to the worker before the submit).
    Submit {
        /// The job.
        spec: JobSpec,
        /// Its input blobs.
        blobs: Vec<BlobMeta>,
    },
    /// A job taken over from this peer's journal that had not ended.
    Resume {
        /// The job.
        spec: JobSpec,
        /// Its input blobs.
        blobs: Vec<BlobMeta>,
        /// The highest attempt number it may have handed out.
        attempts_before: u32,
        /// The worker of its last journaled attempt, which may still hold it.
        held_by: Option<PeerId>,
    },
    /// The caller gives up on a job.
    Cancel(JobId),
    /// The signal-server connection is up (its pool view follows).
    SignalConnected,
    /// The signal-server connection is down: the pool view and the links stay.
    SignalDisconnected,
    /// A message from the signal-server.
    Signal(&'a ServerMsg),
    /// A message from a peer on link `link`.
    Message {
        /// Sender.
        from: PeerId,
        /// The link it came on.
        link: LinkId,
        /// The message.
        msg: DcMsg,
    },
    /// Bytes from a peer that are not a valid message.
    Malformed {
        /// Sender.
        from: PeerId,
        /// The link they came on.
        link: LinkId,
        /// The job they seem to be about, if that much could be read.
        job_id: Option<JobId>,
        /// What is wrong with them.
        error: String,
    },
    /// Bytes of a job's blobs arrived and were stored: `received` of
    /// `total`. For a result's blobs it is also word from the worker (its
    /// lease holds).
    BlobsProgress {
        /// The job.
        job_id: JobId,
        /// Its inputs (worker side) or its result's (submitter side).
        direction: Direction,
        /// Bytes stored so far.
        received: u64,
        /// Bytes announced.
        total: u64,
    },
    /// Every blob of a set arrived and matched its digest.
    BlobsReceived {
        /// The job.
        job_id: JobId,
        /// Which set.
        direction: Direction,
    },
    /// A set could not be received (a damaged or misplaced chunk, a digest
    /// mismatch, the spool): `error` says what.
    BlobsFailed {
        /// The job.
        job_id: JobId,
        /// Which set.
        direction: Direction,
        /// What went wrong, as the job's error will say it.
        error: String,
    },
    /// The files of a [`NodeOutput::ReadBlobFiles`] could not be read (or
    /// were not what their transfer announced): the set fails, and the
    /// sender is told to send chunks from now on.
    BlobFilesFailed {
        /// The sender.
        from: PeerId,
        /// The job.
        job_id: JobId,
        /// Which set.
        direction: Direction,
        /// What went wrong.
        error: String,
    },
    /// An upload asked for with [`NodeOutput::SendBlobs`] ended.
    BlobsSent {
        /// The job.
        job_id: JobId,
        /// Which set.
        direction: Direction,
        /// The peer it went to.
        to: PeerId,
        /// The attempt it belonged to.
        attempt: u32,
        /// `Err((why, closed))`: `closed` when its link closed under it.
        result: Result<(), (String, bool)>,
    },
    /// A link this node asked for (dial or answer) has its data channel
    /// open: the link handshake starts (the link is not open for jobs yet).
    LinkOpened {
        /// The remote peer.
        peer: PeerId,
        /// Which link.
        link: LinkId,
        /// The connection's DTLS fingerprints as this side saw them, and a
        /// fresh nonce from the driver (the OS RNG; a simulator's seed).
        binding: Binding,
    },
    /// A link closed, or could not take a message.
    LinkClosed {
        /// The remote peer.
        peer: PeerId,
        /// Which link.
        link: LinkId,
    },
    /// A link never opened: no candidate pair worked, or the handshake
    /// timed out. The peer is passed over for a while
    /// ([`jobmesh_core::UNREACHABLE_FOR`]) and jobs that only it could run
    /// fail with `why`.
    LinkFailed {
        /// The remote peer.
        peer: PeerId,
        /// Which link.
        link: LinkId,
        /// What went wrong, in words for a job's error.
        why: String,
    },
    /// Open a link to this member if there is none (a diagnosis: `peer
    /// doctor`); jobs go on as ever.
    Connect(PeerId),
    /// A running handler reported progress.
    HandlerProgress {
        /// The job.
        job_id: JobId,
        /// The report.
        progress: Progress,
    },
    /// A job this peer ran ended: its handler returned, or its start failed
    /// (the spool). `Err((message, retryable))` for a failure.
    HandlerDone {
        /// The job.
        job_id: JobId,
        /// What it returned.
        result: Result<Value, (String, bool)>,
        /// The blobs it attached to its result (the driver holds them).
        outputs: Vec<BlobMeta>,
    },
    /// The peer is shutting down: its worker takes no new job.
    Drain,
    /// Run up to this many jobs at once from now on (`peer scale`): fewer
    /// than run now cancels none, the extra slots retire as their jobs end.
    SetSlots(u32),
    /// Run these capabilities from now on (`peer capabilities add/remove`):
    /// jobs of a capability dropped finish, new ones are refused as
    /// unknown, so submitters go elsewhere. The driver tells the
    /// signal-server.
    SetCapabilities(Vec<Capability>),
    /// Observe the pool (true) or stop (false): subscribe to the job events
    /// of every worker in the view, this one included, which arrive as
    /// [`NodeOutput::Observed`].
    Observe(bool),
    /// Time passed; call at [`Node::poll_timeout`].
    Timeout,
}

/// A change the journal should record (written without waiting; see
/// `docs/reliability.md`). The submit itself is journaled before the node
/// hears of it, and the outcome with its envelope when the node reports
/// [`NodeOutput::Finished`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalOp {
    /// An attempt of a job was handed to a worker.
    Attempt {
        /// The job.
        job_id: JobId,
        /// The attempt.
        attempt: u32,
        /// Its worker.
        worker: PeerId,
    },
    /// A job went back to the queue (a retry).
    Requeue {
        /// The job.
        job_id: JobId,
    },
}

/// What the node asks the driver to do.
#[derive(Debug, PartialEq)]
#[must_use]
pub enum NodeOutput {
    /// Send a message on an open link.
    Send {
        /// Recipient.
        to: PeerId,
        /// The link to send it on.
        link: LinkId,
        /// Message.
        msg: DcMsg,
    },
    /// Open a link to `peer` as the offerer; its offer carries `tag`.
    Dial {
        /// The remote peer.
        peer: PeerId,
        /// The new link.
        link: LinkId,
        /// The dial's tag.
        tag: u64,
    },
    /// Open a link to `peer` by answering its offer.
    Answer {
        /// The remote peer.
        peer: PeerId,
        /// The new link.
        link: LinkId,
        /// The offer's tag, echoed by the answer.
        tag: u64,
        /// The offer's SDP.
        sdp: String,
    },
    /// The remote's answer to dial `link`.
    DeliverAnswer {
        /// The dialling link.
        link: LinkId,
        /// The answer's SDP.
        sdp: String,
    },
    /// Release a link's connection (closed, failed, replaced or superseded).
    CloseLink {
        /// The remote peer.
        peer: PeerId,
        /// Which link.
        link: LinkId,
    },
    /// Run a job's handler under `timeout`, on its input blobs.
    StartHandler {
        /// The job.
        job_id: JobId,
        /// Its handler.
        capability: Capability,
        /// Its input.
        input: Value,
        /// Stop it after this long.
        timeout: Duration,
        /// Where its input blobs are.
        inputs: HandlerInputs,
    },
    /// Stop a job's handler.
    CancelHandler {
        /// The job.
        job_id: JobId,
    },
    /// The output blobs the driver holds for a job are no longer wanted
    /// (its result was delivered, refused, expired or failed).
    ForgetResult {
        /// The job.
        job_id: JobId,
    },
    /// Receive a set of blobs from `from` for `attempt` of a job (spool
    /// them, check their digests) and report `BlobsProgress`, then
    /// `BlobsReceived` or `BlobsFailed`. Only chunks [`Node::wants_chunk`]
    /// accepts belong to it.
    ReceiveBlobs {
        /// The job.
        job_id: JobId,
        /// Its inputs (worker side) or its result's (submitter side).
        direction: Direction,
        /// The sender.
        from: PeerId,
        /// The attempt they belong to.
        attempt: u32,
        /// What was announced.
        blobs: Vec<BlobMeta>,
    },
    /// Drop a set being received (and what arrived of it).
    DropBlobs {
        /// The job.
        job_id: JobId,
        /// Which set.
        direction: Direction,
    },
    /// Send a job's blobs (its inputs, or its result's, both held by the
    /// driver) to `to` on `link`, paced by the link; report `BlobsSent`.
    SendBlobs {
        /// The job.
        job_id: JobId,
        /// Which set.
        direction: Direction,
        /// The recipient.
        to: PeerId,
        /// The link to send on.
        link: LinkId,
        /// The attempt they belong to.
        attempt: u32,
        /// The recipient shares this peer's handover directory: the blobs
        /// may go as files in it (one `blob_files` message) instead of
        /// chunks. The driver still chooses chunks when it must (the
        /// directory is full or over its budget).
        handover: bool,
    },
    /// Read a set being received from these files in the handover
    /// directory, one per blob in order, as if their bytes came in chunks
    /// from `from`; then remove them. If one cannot be read, report
    /// [`NodeInput::BlobFilesFailed`].
    ReadBlobFiles {
        /// The job.
        job_id: JobId,
        /// Which set.
        direction: Direction,
        /// The sender.
        from: PeerId,
        /// The attempt they belong to.
        attempt: u32,
        /// Checked names (`jobmesh_wire::dc::valid_handover_file`).
        files: Vec<String>,
    },
    /// Stop sending a job's blobs (its attempt ended).
    StopSending {
        /// The job.
        job_id: JobId,
        /// Which set.
        direction: Direction,
    },
    /// The result blobs received for `attempt` of a job of ours are its
    /// result's: hold them until the job is reported finished.
    ResultBlobs {
        /// The job.
        job_id: JobId,
        /// The attempt they came with.
        attempt: u32,
    },
    /// A self-dispatched job's output blobs are its result's blobs for
    /// `attempt`: hold them until the job is reported finished.
    LocalResultBlobs {
        /// The job.
        job_id: JobId,
        /// The attempt.
        attempt: u32,
    },
    /// Something happened to a job of ours.
    Event(JobEvent),
    /// A job of ours ended: exactly one per job.
    Finished(JobEnd),
    /// Write this to the journal.
    Journal(JournalOp),
    /// Tell the signal-server this peer's stats (coalesced).
    PublishStats(Stats),
    /// Job events of a worker this peer observes (oldest first), and how
    /// many the worker dropped before them (this observer fell behind).
    Observed {
        /// The worker.
        worker: PeerId,
        /// What happened.
        events: Vec<ObservedEvent>,
        /// Missed events.
        dropped: u64,
    },
}

/// Counters of what the node saw, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NodeCounters {
    /// Submits received from peers (and from this peer itself).
    pub submits_received: u64,
    /// Submits this worker refused.
    pub rejected: u64,
    /// Messages that could not be read.
    pub malformed: u64,
    /// Links closed because the remote did not prove its identity.
    pub links_refused: u64,
    /// Known member names that came back with another key.
    pub key_changes: u64,
    /// Offers not answered because the node held [`MAX_LINKS`] links.
    pub offers_refused: u64,
}

/// Most member names whose key a node remembers (a pool's members, and
/// those seen since the node started).
pub const MAX_KNOWN_NAMES: usize = 65_536;

/// One peer's decisions. See the crate docs for the contract.
pub struct Node {
    identity: Identity,
    me: PeerId,
    name: String,
    capabilities: Vec<Capability>,
    max_blob_size: u64,
    spool: SpoolBudget,
    journaled: bool,
    input_check: InputCheck,
    dispatcher: Dispatcher,
    worker: WorkerCore,
    coalescer: StatsCoalescer,
    links: LinkTable,
    transfers: Transfers,
    rng: StdRng,
    /// Input blobs of this peer's jobs, announced before each remote submit.
    job_blobs: HashMap<JobId, Vec<BlobMeta>>,
    /// Blobs announced by each peer for its next submit here.
    announced: HashMap<PeerId, (JobId, u32, Vec<BlobMeta>)>,
    /// Messages from one core to the other on this peer (self-dispatch).
    /// Bounded by the work of one input: each answers an earlier message.
    loopback: VecDeque<DcMsg>,
    /// What the dispatcher was last told about this peer's worker side.
    local_info: Option<PeerInfo>,
    credential: Option<Credential>,
    /// The pool owner's newest revocation list (checked).
    revoked: Option<Revocations>,
    /// The credential each peer behind a link in handshake or open showed
    /// (in a closed pool).
    grants: HashMap<PeerId, Credential>,
    /// The peer id each member name was last seen with (at most
    /// [`MAX_KNOWN_NAMES`]).
    names: HashMap<String, PeerId>,
    allow: HashMap<Capability, HashSet<PeerId>>,
    clock: UnixClock,
    handover: Option<String>,
    /// This peer's exact stats after the last input.
    stats: Stats,
    counters: NodeCounters,
    /// Who observes this worker's jobs.
    observers: Observers,
    /// The workers this peer observes, while it observes the pool.
    watching: Option<Watching>,
    out: VecDeque<NodeOutput>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("me", &self.me)
            .field("jobs", &self.dispatcher.len())
            .field("running", &self.worker.running())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node with nothing to do yet.
    pub fn new(config: NodeConfig) -> Self {
        let worker = WorkerCore::new(
            config.capabilities.clone(),
            config.slots,
            config.progress_interval,
        );
        let stats = worker.stats();
        let me = config.identity.peer_id();
        Self {
            identity: config.identity,
            me,
            name: config.name,
            capabilities: config.capabilities,
            max_blob_size: config.max_blob_size,
            spool: SpoolBudget::new(config.spool),
            journaled: config.journaled,
            input_check: config.input_check,
            dispatcher: Dispatcher::new(me, config.dispatcher, config.strategy),
            worker,
            coalescer: StatsCoalescer::new(config.stats_interval),
            links: LinkTable::default(),
            transfers: Transfers::default(),
            rng: StdRng::seed_from_u64(config.seed),
            job_blobs: HashMap::new(),
            announced: HashMap::new(),
            loopback: VecDeque::new(),
            local_info: None,
            credential: config.credential,
            revoked: None,
            grants: HashMap::new(),
            names: HashMap::new(),
            allow: config.allow,
            handover: config.handover,
            clock: config.clock,
            stats,
            counters: NodeCounters::default(),
            observers: Observers::default(),
            watching: None,
            out: VecDeque::new(),
        }
    }

    // ---- getters ----

    /// This peer's id.
    pub fn id(&self) -> PeerId {
        self.me
    }

    /// The pool as the signal-server last described it.
    pub fn pool(&self) -> &PoolView {
        self.dispatcher.pool()
    }

    /// The submitting side, to read.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The working side, to read.
    pub fn worker(&self) -> &WorkerCore {
        &self.worker
    }

    /// This peer's exact stats (what goes to the pool is coalesced).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// What the node has counted.
    pub fn counters(&self) -> NodeCounters {
        self.counters
    }

    /// The open link to `peer`, if any.
    pub fn open_link(&self, peer: &PeerId) -> Option<LinkId> {
        self.links.open(peer)
    }

    /// Whether `link` is `peer`'s current link (events of any other are stale).
    pub fn is_current_link(&self, peer: &PeerId, link: LinkId) -> bool {
        self.links.is_current(peer, link)
    }

    /// Whether nothing is left to run or wait for (a draining peer may stop).
    pub fn is_idle(&self) -> bool {
        self.worker.running() == 0 && self.dispatcher.is_empty()
    }

    // ---- inputs ----

    /// Feeds one fact. `Err` only for a `Submit` or `Resume` that is refused
    /// at once (queue full, ...): that job is not held and no output names it.
    pub fn handle_input(&mut self, now: Instant, input: NodeInput<'_>) -> Result<(), JobError> {
        let result = self.input(now, input);
        self.settle(now);
        result
    }

    fn input(&mut self, now: Instant, input: NodeInput<'_>) -> Result<(), JobError> {
        match input {
            NodeInput::Submit { spec, blobs } => {
                let job_id = spec.job_id;
                if let Some(own) = &self.credential {
                    own.grant()
                        .require(Role::Submitter, [spec.capability.as_str()].into_iter())
                        .map_err(|e| JobError::Forbidden { why: e.to_string() })?;
                }
                self.admit(now, job_id, blobs, Input::Submit(spec))?;
            }
            NodeInput::Resume {
                spec,
                blobs,
                attempts_before,
                held_by,
            } => {
                let job_id = spec.job_id;
                let resume = Input::Resume {
                    spec,
                    attempts_before,
                    held_by,
                };
                self.admit(now, job_id, blobs, resume)?;
            }
            NodeInput::Cancel(job_id) => self.dispatcher_input(now, Input::Cancel(job_id)),
            NodeInput::SignalConnected => {
                self.coalescer.reset();
                self.redial_unanswered();
            }
            NodeInput::SignalDisconnected => {}
            NodeInput::Signal(ServerMsg::Relayed { from, signal }) => {
                self.on_handshake(now, *from, signal.clone());
            }
            NodeInput::Signal(ServerMsg::Revocations { list }) => self.on_revocations(now, list),
            NodeInput::Signal(msg) => {
                if let ServerMsg::View { peers, .. } = msg {
                    self.note_names(peers);
                }
                self.dispatcher_input(now, Input::Signal(msg));
                self.call_back_away_submitters();
                self.observe_workers(now);
            }
            NodeInput::Message { from, link, msg } => {
                if !self.links.is_current(&from, link) {
                    debug!(peer = %from.short(), link, "message of a replaced link dropped");
                } else if self.links.open(&from).is_some() {
                    self.on_message(now, from, msg);
                } else {
                    self.on_handshake_message(now, from, msg);
                }
            }
            NodeInput::Malformed {
                from,
                link,
                job_id,
                error,
            } => {
                if self.links.is_current(&from, link) && self.links.open(&from).is_none() {
                    self.counters.malformed += 1;
                    self.refuse_link(now, from, Refusal::OutOfOrder("an unreadable message"));
                } else if self.links.is_current(&from, link) {
                    self.counters.malformed += 1;
                    warn!(peer = %from.short(), %error, "malformed data-channel message");
                    self.send_to(
                        now,
                        from,
                        DcMsg::Error {
                            job_id,
                            message: error,
                        },
                    );
                }
            }
            NodeInput::BlobsProgress {
                job_id,
                direction,
                received,
                total,
            } => self.on_blobs_progress(now, job_id, direction, (received, total)),
            NodeInput::BlobsReceived { job_id, direction } => {
                self.on_blobs_received(now, job_id, direction);
            }
            NodeInput::BlobsFailed {
                job_id,
                direction,
                error,
            } => self.on_blobs_failed(now, job_id, direction, error),
            NodeInput::BlobFilesFailed {
                from,
                job_id,
                direction,
                error,
            } => self.on_blob_files_failed(now, from, job_id, direction, error),
            NodeInput::BlobsSent {
                job_id,
                direction,
                to,
                attempt,
                result,
            } => self.on_blobs_sent(now, job_id, direction, to, attempt, result),
            NodeInput::LinkOpened {
                peer,
                link,
                binding,
            } => self.on_channel_open(now, peer, link, binding),
            NodeInput::LinkClosed { peer, link } => {
                if self.links.is_current(&peer, link) {
                    info!(peer = %peer.short(), link, "link closed");
                    self.drop_link(now, peer, None);
                } else {
                    // A replaced link: make sure its connection is released.
                    self.out.push_back(NodeOutput::CloseLink { peer, link });
                }
            }
            NodeInput::LinkFailed { peer, link, why } => {
                if self.links.is_current(&peer, link) {
                    warn!(peer = %peer.short(), link, %why, "could not open a link");
                    self.drop_link(now, peer, Some(&why));
                } else {
                    // A replaced link: make sure its connection is released.
                    self.out.push_back(NodeOutput::CloseLink { peer, link });
                }
            }
            NodeInput::Connect(peer) => {
                if peer != self.me
                    && !self.links.contains(&peer)
                    && self.dispatcher.pool().get(&peer).is_some()
                {
                    info!(peer = %peer.short(), "opening a link on request");
                    self.dial(peer, Vec::new());
                }
            }
            NodeInput::HandlerProgress { job_id, progress } => {
                self.worker.handle_progress(now, job_id, progress);
            }
            NodeInput::HandlerDone {
                job_id,
                result,
                outputs,
            } => self.on_handler_done(now, job_id, result, outputs),
            NodeInput::Drain => self.worker.drain(),
            NodeInput::SetSlots(slots) => self.worker.set_slots(slots),
            NodeInput::SetCapabilities(capabilities) => {
                self.worker.set_capabilities(capabilities.clone());
                self.capabilities = capabilities;
            }
            NodeInput::Observe(true) => {
                if self.watching.is_none() {
                    self.watching = Some(Watching::default());
                    self.observe_workers(now);
                }
            }
            NodeInput::Observe(false) => {
                if let Some(mut w) = self.watching.take() {
                    for peer in w.take() {
                        self.send_to(now, peer, DcMsg::Unobserve {});
                    }
                }
            }
            NodeInput::Timeout => {
                self.observe_workers(now);
                self.dispatcher_input(now, Input::Timeout);
                self.worker.handle_timeout(now);
                self.expire_inputs(now);
                self.expire_handshakes(now);
                if let Some(stats) = self.coalescer.poll(now) {
                    self.out.push_back(NodeOutput::PublishStats(stats));
                }
            }
        }
        Ok(())
    }

    /// The earliest time the node has work to do without new input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.dispatcher.poll_timeout(),
            self.worker.poll_timeout(),
            self.coalescer.poll_timeout(),
            self.transfers_timeout(),
            self.links.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next thing to do; `None` when there is nothing left.
    pub fn poll_output(&mut self) -> Option<NodeOutput> {
        self.out.pop_front()
    }

    /// Closes every link (the peer stops): their `CloseLink`s follow.
    pub fn close_links(&mut self) {
        let links: Vec<(PeerId, LinkId)> = self.links.drain().map(|(p, l)| (p, l.id())).collect();
        for (peer, link) in links {
            self.out.push_back(NodeOutput::CloseLink { peer, link });
        }
    }

    // ---- the two cores ----

    fn admit(
        &mut self,
        now: Instant,
        job_id: JobId,
        blobs: Vec<BlobMeta>,
        input: Input<'_>,
    ) -> Result<(), JobError> {
        if !blobs.is_empty() {
            self.job_blobs.insert(job_id, blobs);
        }
        self.dispatcher.handle_input(now, input).inspect_err(|_| {
            self.job_blobs.remove(&job_id);
        })
    }

    /// An input the dispatcher may refuse; refusals of anything but a submit
    /// mean nothing (a cancel of a job it does not hold, say).
    fn dispatcher_input(&mut self, now: Instant, input: Input<'_>) {
        let _ = self.dispatcher.handle_input(now, input);
    }

    fn on_message(&mut self, now: Instant, from: PeerId, msg: DcMsg) {
        match msg {
            DcMsg::Submit {
                job_id,
                attempt,
                capability,
                input,
                timeout_ms,
            } => {
                self.counters.submits_received += 1;
                let announced = self.take_announced(from, job_id, attempt);
                let check = self
                    .may_submit(from, &capability)
                    .and_then(|()| match &announced {
                        Err(refusal) => Err(refusal.clone()),
                        Ok(_) => (self.input_check)(&capability, &input)
                            .map_err(|why| (RejectReason::BadInput, why)),
                    });
                let capability_seen = capability.clone();
                let admission = self.worker.handle_submit(
                    now, from, job_id, attempt, capability, input, timeout_ms, check,
                );
                if admission == Admission::Started {
                    let at = self.clock.at_ms(now);
                    self.observers
                        .started(now, at, job_id, attempt, capability_seen.clone(), from);
                }
                match (admission, announced) {
                    (Admission::Refused, _) => self.counters.rejected += 1,
                    (Admission::Started, Ok(Some(blobs))) => {
                        self.expect_inputs(from, job_id, attempt, blobs);
                    }
                    // Re-attached: its inputs are here already (chunks the
                    // submitter sends anyway are dropped as stale).
                    _ => {}
                }
            }
            DcMsg::Cancel { job_id, attempt } => self.worker.handle_cancel(from, job_id, attempt),
            DcMsg::Observe { history } => match self.may_observe(from) {
                Ok(()) if self.observers.subscribe(from, history) => {}
                Ok(()) => {
                    warn!(peer = %from.short(), "observe refused: this worker has as many observers as it serves")
                }
                Err(why) => warn!(peer = %from.short(), %why, "observe refused"),
            },
            DcMsg::Unobserve {} => self.observers.unsubscribe(&from),
            DcMsg::Observed { events, dropped } => {
                if let Some(w) = &mut self.watching {
                    w.seen(from, &events);
                    self.out.push_back(NodeOutput::Observed {
                        worker: from,
                        events,
                        dropped,
                    });
                }
            }
            DcMsg::Received { receipts } => {
                for r in receipts {
                    self.worker.handle_received(from, r.job_id, r.attempt);
                }
            }
            DcMsg::Error { job_id, message } => {
                warn!(peer = %from.short(), ?job_id, %message, "peer could not read our message");
            }
            DcMsg::Blobs {
                job_id,
                attempt,
                direction: Direction::Input,
                blobs,
            } => {
                // One per peer: the announcement travels right before its submit.
                self.announced.insert(from, (job_id, attempt, blobs));
            }
            DcMsg::Blobs {
                job_id,
                attempt,
                direction: Direction::Output,
                blobs,
            } => self.on_output_blobs(from, job_id, attempt, blobs),
            DcMsg::Handover { token } => {
                let shared = token.is_some() && token == self.handover;
                if shared {
                    info!(peer = %from.short(), "the peer shares our handover directory: blobs between us go as files");
                }
                self.links.set_handover(&from, shared);
            }
            DcMsg::BlobFiles {
                job_id,
                attempt,
                direction,
                files,
            } => self.on_blob_files(now, from, job_id, attempt, direction, files),
            other => {
                if let Some(msg) = self.check_result(now, from, other) {
                    self.dispatcher_input(now, Input::Dc { from, msg: &msg });
                }
            }
        }
    }

    /// The blobs announced for this submit, and whether they are acceptable.
    fn take_announced(
        &mut self,
        from: PeerId,
        job_id: JobId,
        attempt: u32,
    ) -> Result<Option<Vec<BlobMeta>>, (RejectReason, String)> {
        let Some((j, a, blobs)) = self.announced.remove(&from) else {
            return Ok(None);
        };
        if j != job_id || a != attempt {
            return Ok(None);
        }
        let limit = self.max_blob_size;
        if let Some(b) = blobs.iter().find(|b| b.size > limit) {
            return Err((
                RejectReason::BadInput,
                format!(
                    "input blob {} is {} bytes; this worker takes at most {limit}",
                    b.index, b.size
                ),
            ));
        }
        if let Err(over) = self.spool.check(from, &blobs) {
            // Over the per-job budget for good; over the others until
            // blobs held now are released.
            let reason = if over.is_temporary() {
                RejectReason::Busy
            } else {
                RejectReason::BadInput
            };
            return Err((reason, format!("input blobs refused: {over}")));
        }
        Ok(Some(blobs))
    }

    /// Carries the cores' outputs out until neither has any: messages to
    /// this peer are looped back in, and a changed local worker is reported
    /// to the dispatcher (a freed local slot may place jobs). Then stats.
    fn settle(&mut self, now: Instant) {
        loop {
            while let Some(out) = self.dispatcher.poll_output() {
                match out {
                    jobmesh_core::Output::Send { to, msg } => self.send_to(now, to, msg),
                    jobmesh_core::Output::Event(e) => self.on_event(e),
                    jobmesh_core::Output::Finished(end) => {
                        self.job_blobs.remove(&end.job_id);
                        self.out.push_back(NodeOutput::Finished(end));
                    }
                }
            }
            while let Some(out) = self.worker.poll_output() {
                match out {
                    WorkerOutput::Send { to, msg } => {
                        let at = self.clock.at_ms(now);
                        self.observers.on_worker_msg(now, at, &msg);
                        self.send_to(now, to, msg);
                    }
                    WorkerOutput::Start {
                        job_id,
                        capability,
                        input,
                        timeout,
                    } => self.start_job(now, job_id, capability, input, timeout),
                    WorkerOutput::Cancel { job_id } => {
                        let at = self.clock.at_ms(now);
                        self.observers.cancelled(now, at, job_id);
                        self.stop_work(now, job_id);
                    }
                    WorkerOutput::Restore { job_id, result } => self.restore(now, job_id, result),
                    WorkerOutput::Forget { job_id } => self.forget(job_id),
                }
            }
            // Observers hear of the job events so far in one batch each
            // (this peer itself through the loopback).
            for (peer, msg) in self.observers.flush() {
                self.send_to(now, peer, msg);
            }
            if let Some(msg) = self.loopback.pop_front() {
                self.on_message(now, self.me, msg);
                continue;
            }
            let local = self.local_worker();
            if local != self.local_info {
                self.local_info.clone_from(&local);
                self.dispatcher_input(now, Input::LocalWorker(local));
                continue;
            }
            break;
        }
        let mut stats = self.worker.stats();
        stats.queued = u32::try_from(self.dispatcher.queued()).unwrap_or(u32::MAX);
        if let Some(s) = self.coalescer.update(now, stats.clone()) {
            self.out.push_back(NodeOutput::PublishStats(s));
        }
        self.stats = stats;
    }

    fn on_event(&mut self, e: JobEvent) {
        self.on_own_event(&e);
        if self.journaled {
            use jobmesh_core::EventKind;
            match &e.kind {
                EventKind::Dispatched { worker, attempt } => {
                    self.out.push_back(NodeOutput::Journal(JournalOp::Attempt {
                        job_id: e.job_id,
                        attempt: *attempt,
                        worker: *worker,
                    }));
                }
                EventKind::Retrying { .. } => {
                    self.out
                        .push_back(NodeOutput::Journal(JournalOp::Requeue { job_id: e.job_id }));
                }
                _ => {}
            }
        }
        self.out.push_back(NodeOutput::Event(e));
    }

    /// This peer as a candidate for its own jobs (None if it runs nothing).
    fn local_worker(&self) -> Option<PeerInfo> {
        (!self.capabilities.is_empty()).then(|| PeerInfo {
            id: self.me,
            name: self.name.clone(),
            capabilities: self.capabilities.clone(),
            stats: self.worker.stats(),
        })
    }

    // ---- links ----

    /// Sends to a peer (dialling it first if needed), or loops back to this
    /// peer's other core.
    fn send_to(&mut self, now: Instant, to: PeerId, msg: DcMsg) {
        if to == self.me {
            self.loopback.push_back(msg);
            return;
        }
        if let DcMsg::Submit {
            job_id,
            attempt,
            capability,
            ..
        } = &msg
        {
            if self.links.open(&to).is_some() {
                if let Err(why) = self.may_work(to, capability) {
                    self.not_granted(now, to, *job_id, *attempt, why);
                    return;
                }
            }
            // The worker checks a job's blobs together with its submit.
            if let Some(blobs) = self.job_blobs.get(job_id) {
                let announce = DcMsg::Blobs {
                    job_id: *job_id,
                    attempt: *attempt,
                    direction: Direction::Input,
                    blobs: blobs.clone(),
                };
                self.send_on_link(now, to, announce);
            }
        }
        self.send_on_link(now, to, msg);
    }

    fn send_on_link(&mut self, now: Instant, to: PeerId, msg: DcMsg) {
        if let Some(link) = self.links.open(&to) {
            self.out.push_back(NodeOutput::Send { to, link, msg });
        } else if let Some(pending) = self.links.pending_mut(&to) {
            if pending.len() >= PENDING_PER_LINK {
                warn!(peer = %to.short(), "too many messages waiting for the link; dropping it");
                self.drop_link(now, to, None);
            } else {
                pending.push(msg);
            }
        } else {
            self.dial(to, vec![msg]);
        }
    }

    fn dial(&mut self, peer: PeerId, pending: Vec<DcMsg>) {
        let tag = dial_tag(&mut self.rng);
        let link = self.links.start(peer, tag, true, pending);
        self.out.push_back(NodeOutput::Dial { peer, link, tag });
    }

    /// Dials again every peer whose dial has had no answer, now that the
    /// signal-server is back: an offer sent while it was away was lost, and a
    /// dial that waits for its answer would also win the glare rule over the
    /// remote's own offer until its deadline. The messages it held move over.
    fn redial_unanswered(&mut self) {
        for peer in self.links.unanswered_dials() {
            if let Some(Link::Connecting { id, pending, .. }) = self.links.remove(&peer) {
                debug!(peer = %peer.short(), link = id, "signal-server back: dialling again");
                self.out.push_back(NodeOutput::CloseLink { peer, link: id });
                self.dial(peer, pending);
            }
        }
    }

    fn on_handshake(&mut self, now: Instant, from: PeerId, signal: Handshake) {
        match signal {
            Handshake::Offer { sdp, dial: tag } => {
                if !self.links.contains(&from) && self.links.len() >= MAX_LINKS {
                    self.counters.offers_refused += 1;
                    warn!(peer = %from.short(), "{MAX_LINKS} links already: offer not answered");
                    return;
                }
                let pending = match self.links.get(&from) {
                    Some(Link::Connecting {
                        awaiting_answer: true,
                        ..
                    }) if self.me < from => {
                        // Both dialled at once: the lower id's offer wins, so ours stands.
                        debug!(peer = %from.short(), "offer collision: keeping our offer");
                        return;
                    }
                    Some(Link::Connecting { .. }) => match self.links.remove(&from) {
                        Some(Link::Connecting { id, pending, .. }) => {
                            self.out.push_back(NodeOutput::CloseLink {
                                peer: from,
                                link: id,
                            });
                            pending
                        }
                        _ => Vec::new(),
                    },
                    Some(Link::Binding { .. } | Link::Open { .. }) => {
                        // The remote lost the link and dials again: ours is dead too.
                        self.drop_link(now, from, None);
                        Vec::new()
                    }
                    None => Vec::new(),
                };
                let link = self.links.start(from, tag, false, pending);
                self.out.push_back(NodeOutput::Answer {
                    peer: from,
                    link,
                    tag,
                    sdp,
                });
            }
            Handshake::Answer { sdp, dial } => match self.links.get_mut(&from) {
                // Only the answer to this dial's offer: one to an offer the
                // peer got from an earlier process under our id is stale.
                Some(Link::Connecting {
                    id,
                    tag,
                    awaiting_answer,
                    ..
                }) if *tag == dial && *awaiting_answer => {
                    *awaiting_answer = false;
                    let link = *id;
                    self.out.push_back(NodeOutput::DeliverAnswer { link, sdp });
                }
                _ => debug!(peer = %from.short(), dial, "stale answer ignored"),
            },
            Handshake::Candidate { .. } => {
                // Offers and answers carry every candidate (non-trickle).
                debug!(peer = %from.short(), "trickled candidate ignored");
            }
        }
    }

    /// The channel of `peer`'s link `link` is open: the handshake starts
    /// with this side's hello (and its proof, if the remote's hello came
    /// first).
    fn on_channel_open(&mut self, now: Instant, peer: PeerId, link: LinkId, binding: Binding) {
        if !matches!(self.links.get(&peer), Some(Link::Connecting { id, .. }) if *id == link) {
            // Superseded (collision or re-dial): its connection is released.
            self.out.push_back(NodeOutput::CloseLink { peer, link });
            return;
        }
        debug!(peer = %peer.short(), link, "data channel open; proving identities");
        let deadline = now + Duration::from_millis(BINDING_TIMEOUT_MS);
        let early = self.links.binding(peer, link, binding, deadline);
        let hello = DcMsg::LinkHello {
            key: self.identity.public(),
            nonce: binding.nonce,
            credential: self.credential.clone().map(Box::new),
        };
        self.out.push_back(NodeOutput::Send {
            to: peer,
            link,
            msg: hello,
        });
        if let Some(remote) = early {
            self.on_remote_hello(now, peer, remote);
        }
    }

    /// A message on a link that is not open yet: only the handshake's own
    /// are allowed, in order.
    fn on_handshake_message(&mut self, now: Instant, from: PeerId, msg: DcMsg) {
        debug!(peer = %from.short(), what = msg.type_name(), "link handshake message");
        match msg {
            DcMsg::LinkHello {
                key,
                nonce,
                credential,
            } => {
                let hello = RemoteHello {
                    key,
                    nonce,
                    credential,
                };
                self.on_remote_hello(now, from, hello);
            }
            DcMsg::LinkProof { sig } => self.on_remote_proof(now, from, &sig),
            DcMsg::Error { message, .. } => {
                self.refuse_link(now, from, Refusal::RemoteRefused(message));
            }
            other => {
                let what = other.type_name();
                self.refuse_link(now, from, Refusal::OutOfOrder(what));
            }
        }
    }

    fn on_remote_hello(&mut self, now: Instant, from: PeerId, remote: RemoteHello) {
        match self.links.get_mut(&from) {
            // Checked when the channel is reported open.
            Some(Link::Connecting {
                early: early @ None,
                ..
            }) => {
                *early = Some(remote);
                return;
            }
            Some(Link::Binding { remote: None, .. }) => {}
            _ => {
                self.refuse_link(now, from, Refusal::OutOfOrder("a second link_hello"));
                return;
            }
        }
        if let Err(why) = binding::check_key(from, &remote.key) {
            self.refuse_link(now, from, why);
            return;
        }
        if let Some(own) = &self.credential {
            match binding::check_member(own, &remote, self.clock.at(now), self.revoked.as_ref()) {
                Ok(credential) => {
                    self.grants.insert(from, credential);
                }
                Err(why) => {
                    self.refuse_link(now, from, why);
                    return;
                }
            }
        }
        let Some(Link::Binding {
            id,
            binding,
            remote: slot,
            early_proof,
            ..
        }) = self.links.get_mut(&from)
        else {
            return;
        };
        let sig = binding::prove(&self.identity, binding, &remote, from);
        *slot = Some(remote);
        let link = *id;
        let early_proof = early_proof.take();
        self.out.push_back(NodeOutput::Send {
            to: from,
            link,
            msg: DcMsg::LinkProof { sig },
        });
        if let Some(sig) = early_proof {
            self.on_remote_proof(now, from, &sig);
        }
    }

    fn on_remote_proof(&mut self, now: Instant, from: PeerId, sig: &Signature) {
        let checked = match self.links.get_mut(&from) {
            Some(Link::Binding {
                binding,
                remote: Some(remote),
                ..
            }) => binding::check_proof(self.me, binding, remote, sig),
            // A proof can only be checked against the hello's key: it waits
            // for the hello (each signs over both nonces, so their order
            // proves nothing). Seen between a tab and a daemon under load.
            Some(Link::Binding {
                id,
                remote: None,
                early_proof: early @ None,
                ..
            }) => {
                info!(peer = %from.short(), link = *id,
                    "the remote's link_proof came before its link_hello; it waits for the hello");
                *early = Some(*sig);
                return;
            }
            _ => Err(Refusal::OutOfOrder("a link_proof out of its place")),
        };
        match checked {
            Ok(()) => self.on_link_open(now, from),
            Err(why) => self.refuse_link(now, from, why),
        }
    }

    /// `peer` proved its key over this connection: the link is open.
    fn on_link_open(&mut self, now: Instant, peer: PeerId) {
        let held = self.links.opened(peer);
        let Some(link) = self.links.open(&peer) else {
            return;
        };
        info!(peer = %peer.short(), link, "link open: identity verified");
        if let Some(token) = &self.handover {
            let token = Some(token.clone());
            self.out.push_back(NodeOutput::Send {
                to: peer,
                link,
                msg: DcMsg::Handover { token },
            });
        }
        self.dispatcher_input(now, Input::LinkOpened(peer));
        let (held, not_granted) = self.still_wanted(peer, held);
        for msg in held {
            self.out.push_back(NodeOutput::Send {
                to: peer,
                link,
                msg,
            });
        }
        for (job_id, attempt, why) in not_granted {
            self.not_granted(now, peer, job_id, attempt, why);
        }
        // Jobs of this peer's held here while it was away.
        self.worker.handle_link_opened(peer);
    }

    /// Closes `peer`'s link because it failed the handshake: said to the
    /// remote, logged with both ids, counted, and its jobs go elsewhere.
    fn refuse_link(&mut self, now: Instant, peer: PeerId, why: Refusal) {
        self.counters.links_refused += 1;
        // Where the handshake stood, for the log (an out-of-order refusal
        // is a bug on one side or the other).
        let stood = match self.links.get(&peer) {
            Some(Link::Connecting {
                id,
                awaiting_answer,
                early,
                ..
            }) => format!(
                "link {id} connecting (awaiting its answer: {awaiting_answer}, hello early: {})",
                early.is_some()
            ),
            Some(Link::Binding { id, remote, .. }) => {
                format!("link {id} binding (remote hello: {})", remote.is_some())
            }
            Some(Link::Open { id, .. }) => format!("link {id} open"),
            None => "no link".to_owned(),
        };
        warn!(peer = %peer, me = %self.me, %why, %stood,
            "link refused: the remote did not prove its identity; closing it before any job message");
        if let Some(link) = self.links.remove(&peer) {
            if !matches!(why, Refusal::RemoteRefused(_)) {
                self.out.push_back(NodeOutput::Send {
                    to: peer,
                    link: link.id(),
                    msg: DcMsg::Error {
                        job_id: None,
                        message: format!("link refused by {}: {why}", self.me),
                    },
                });
            }
            self.out.push_back(NodeOutput::CloseLink {
                peer,
                link: link.id(),
            });
        }
        self.announced.remove(&peer);
        self.grants.remove(&peer);
        self.observers.unsubscribe(&peer);
        if let Some(w) = &mut self.watching {
            w.lost(&peer);
        }
        let why = why.to_string();
        self.dispatcher_input(now, Input::LinkRefused { peer, why: &why });
        self.worker.handle_link_closed(now, peer);
    }

    /// Remembers which peer id (so which key) each member name had, and
    /// warns when a known name comes back with another key: the same
    /// machine with a new data dir, or someone else using its name.
    fn note_names(&mut self, peers: &[PeerInfo]) {
        for p in peers {
            let room = self.names.len() < MAX_KNOWN_NAMES;
            match self.names.get_mut(&p.name) {
                Some(id) if *id != p.id => {
                    warn!(name = %p.name, was = %id, now = %p.id,
                        "a known peer name now belongs to another key: a new data dir, or someone else using this name; jobs go by peer id, never by name");
                    *id = p.id;
                    self.counters.key_changes += 1;
                }
                Some(_) => {}
                None if room => {
                    self.names.insert(p.name.clone(), p.id);
                }
                // Full: names not yet known are not remembered.
                None => {}
            }
        }
    }

    /// The pool owner's revocation list, as the signal-server relays it:
    /// checked against this peer's own pool key (the server cannot forge
    /// one), kept if newer, and every link to a member it withdraws is
    /// closed as refused.
    fn on_revocations(&mut self, now: Instant, list: &Revocations) {
        let Some(own) = &self.credential else {
            return;
        };
        let grant = own.grant();
        if let Err(e) = list.verify(&grant.pool, &grant.pool_key) {
            warn!(error = %e, "a revocation list that does not verify; ignored");
            return;
        }
        if self
            .revoked
            .as_ref()
            .is_some_and(|held| held.seq >= list.seq)
        {
            return;
        }
        info!(seq = list.seq, "the pool owner's revocation list");
        let mut withdrawn: Vec<PeerId> = self
            .grants
            .iter()
            .filter(|(_, c)| list.revokes(c))
            .map(|(p, _)| *p)
            .collect();
        withdrawn.sort();
        self.revoked = Some(list.clone());
        for peer in withdrawn {
            let why = Refusal::NotMember("the pool's owner revoked its credential".into());
            self.refuse_link(now, peer, why);
        }
    }

    /// Links whose handshake did not finish in time close like links that
    /// failed: a network that stalls is not a forgery.
    fn expire_handshakes(&mut self, now: Instant) {
        for peer in self.links.overdue(now) {
            warn!(peer = %peer.short(), "no link handshake within {BINDING_TIMEOUT_MS} ms; closing the link");
            self.drop_link(now, peer, None);
        }
    }

    /// The messages held for `peer` while its link opened, less those of
    /// attempts not to send: given up meanwhile (lease or timeout while the
    /// dial hung: a `submit` would start a job that is retried elsewhere or
    /// has ended), or, in a closed pool, for a capability `peer` was not
    /// granted (returned with why, to be refused). A dropped attempt's
    /// submit, its blobs' announcement and any `cancel` of it stay unsent.
    fn still_wanted(
        &self,
        peer: PeerId,
        held: Vec<DcMsg>,
    ) -> (Vec<DcMsg>, Vec<(JobId, u32, String)>) {
        let current = |job_id: &JobId, attempt: u32| {
            self.dispatcher.state(job_id).and_then(JobState::attempt) == Some((peer, attempt))
        };
        let mut dropped: HashSet<(JobId, u32)> = HashSet::new();
        let mut not_granted = Vec::new();
        for m in &held {
            if let DcMsg::Submit {
                job_id,
                attempt,
                capability,
                ..
            } = m
            {
                if !current(job_id, *attempt) {
                    dropped.insert((*job_id, *attempt));
                } else if let Err(why) = self.may_work(peer, capability) {
                    dropped.insert((*job_id, *attempt));
                    not_granted.push((*job_id, *attempt, why));
                }
            }
        }
        if dropped.len() > not_granted.len() {
            debug!(peer = %peer.short(), attempts = dropped.len() - not_granted.len(),
                "attempts given up while the link opened: their submits stay unsent");
        }
        let kept = held
            .into_iter()
            .filter(|m| match m {
                DcMsg::Submit {
                    job_id, attempt, ..
                }
                | DcMsg::Cancel { job_id, attempt }
                | DcMsg::Blobs {
                    job_id,
                    attempt,
                    direction: Direction::Input,
                    ..
                } => !dropped.contains(&(*job_id, *attempt)),
                _ => true,
            })
            .collect();
        (kept, not_granted)
    }

    /// Whether `from` may have this worker run `capability`: in a closed
    /// pool its credential must grant the submitter role for it, and the
    /// capability's allow-list (if any) must name it. This peer's own jobs
    /// were checked when submitted.
    fn may_submit(
        &self,
        from: PeerId,
        capability: &Capability,
    ) -> Result<(), (RejectReason, String)> {
        if from == self.me {
            return Ok(());
        }
        let forbidden = |why: String| Err((RejectReason::Forbidden, why));
        if self.credential.is_some() {
            let granted = self.grants.get(&from).map(|c| {
                c.grant()
                    .require(Role::Submitter, [capability.as_str()].into_iter())
            });
            match granted {
                Some(Ok(())) => {}
                Some(Err(e)) => return forbidden(format!("peer {from}'s credential: {e}")),
                None => return forbidden(format!("peer {from} showed no credential")),
            }
        }
        match self.allow.get(capability) {
            Some(allowed) if !allowed.contains(&from) => forbidden(format!(
                "peer {from} is not on this worker's allow-list for \"{capability}\""
            )),
            _ => Ok(()),
        }
    }

    /// Whether `from` may observe this worker's jobs: in a closed pool, its
    /// credential must grant the observer role.
    fn may_observe(&self, from: PeerId) -> Result<(), String> {
        if from == self.me || self.credential.is_none() {
            return Ok(());
        }
        match self.grants.get(&from) {
            Some(c) => c
                .grant()
                .require(Role::Observer, std::iter::empty::<&str>())
                .map_err(|e| format!("peer {from}'s credential: {e}")),
            None => Err(format!("peer {from} showed no credential")),
        }
    }

    /// While observing: subscribes to every worker of the view (this one
    /// included) not subscribed to yet.
    fn observe_workers(&mut self, now: Instant) {
        let at = self.clock.at_ms(now);
        let Some(watching) = &mut self.watching else {
            return;
        };
        let me = (self.worker.stats().slots > 0).then_some(self.me);
        let others = self
            .dispatcher
            .pool()
            .peers()
            .filter(|p| p.stats.slots > 0 && p.id != self.me)
            .map(|p| p.id);
        let workers: BTreeSet<PeerId> = me.into_iter().chain(others).collect();
        // Only a complete view says who left.
        if self.dispatcher.pool().is_synced() {
            for (worker, events) in watching.left(&workers, at) {
                self.out.push_back(NodeOutput::Observed {
                    worker,
                    events,
                    dropped: 0,
                });
            }
        }
        let new = watching.newly_subscribed(workers.into_iter());
        for peer in new {
            self.send_to(now, peer, DcMsg::Observe { history: true });
        }
    }

    /// In a closed pool: whether `to`'s credential grants it the worker
    /// role for `capability` (checked before a submit goes to it: a member
    /// cannot take jobs it was not granted, whatever the pool view says).
    fn may_work(&self, to: PeerId, capability: &Capability) -> Result<(), String> {
        if self.credential.is_none() || to == self.me {
            return Ok(());
        }
        match self.grants.get(&to) {
            Some(c) => c
                .grant()
                .require(Role::Worker, [capability.as_str()].into_iter())
                .map_err(|e| format!("worker {to}'s credential: {e}")),
            None => Err(format!("worker {to} showed no credential")),
        }
    }

    /// An attempt for `to` that may not go there ([`Self::may_work`]): the
    /// dispatcher hears it as a refusal of the capability, and places the
    /// job elsewhere.
    fn not_granted(&mut self, now: Instant, to: PeerId, job_id: JobId, attempt: u32, why: String) {
        warn!(peer = %to.short(), %job_id, %why, "not sending a job to a worker not granted its capability");
        let refusal = DcMsg::Rejected {
            job_id,
            attempt,
            reason: RejectReason::UnknownCapability,
            message: why,
        };
        self.dispatcher_input(
            now,
            Input::Dc {
                from: to,
                msg: &refusal,
            },
        );
    }

    /// Dials every submitter that this worker holds jobs for, now that the
    /// pool shows it again (a restart keeps its peer id), so that it hears
    /// of them (`held`) when the link opens.
    fn call_back_away_submitters(&mut self) {
        let away: Vec<PeerId> = self
            .worker
            .away_submitters()
            .into_iter()
            .filter(|p| !self.links.contains(p) && self.dispatcher.pool().get(p).is_some())
            .collect();
        for peer in away {
            info!(peer = %peer.short(), "a submitter we hold jobs for is back in the pool; dialling it");
            self.dial(peer, Vec::new());
        }
    }

    /// Forgets the link to `peer`: its jobs here are lost (and re-dispatched);
    /// jobs from it run on for the worker's orphan grace, their results kept
    /// for its return. `failed`: the link never opened, and why.
    fn drop_link(&mut self, now: Instant, peer: PeerId, failed: Option<&str>) {
        if let Some(link) = self.links.remove(&peer) {
            self.out.push_back(NodeOutput::CloseLink {
                peer,
                link: link.id(),
            });
        }
        self.announced.remove(&peer);
        self.grants.remove(&peer);
        let input = match failed {
            Some(why) => Input::LinkFailed { peer, why },
            None => Input::LinkClosed(peer),
        };
        self.dispatcher_input(now, input);
        self.worker.handle_link_closed(now, peer);
    }
}

/// A result as the submitter can get it: a value too large for one
/// data-channel message fails the job (it would never arrive).
pub(crate) fn fits(result: Result<Value, (String, bool)>) -> Result<Value, (String, bool)> {
    match result {
        Ok(value) if too_big(&value) => Err((
            format!("the result does not fit in one data-channel message ({MAX_DC_MESSAGE} bytes)"),
            false,
        )),
        other => other,
    }
}

/// Whether a result with `value` would exceed one data-channel message.
/// Counts the value's JSON bytes without building them, plus the largest
/// possible envelope around it (computed once).
fn too_big(value: &Value) -> bool {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static ENVELOPE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let envelope = *ENVELOPE.get_or_init(|| {
        let widest = DcMsg::Result {
            job_id: JobId::max(),
            attempt: u32::MAX,
            outcome: Outcome::Ok { value: Value::Null },
            load: Some(jobmesh_wire::dc::Load {
                running: u32::MAX,
                slots: u32::MAX,
                seq: u64::MAX,
            }),
        };
        widest.encode().len() - "null".len()
    });
    let mut count = Count(0);
    // Writing into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    envelope + count.0 > MAX_DC_MESSAGE
}

/// A fresh dial tag: random, 1 to 2^53 − 1, so a peer whose JSON numbers
/// are doubles (a browser) reads and echoes it exactly.
fn dial_tag(rng: &mut impl rand::Rng) -> u64 {
    (rng.random::<u64>() & jobmesh_wire::signal::MAX_DIAL_TAG).max(1)
}

#[cfg(test)]
mod tests;
