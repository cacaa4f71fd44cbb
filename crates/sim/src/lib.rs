//! A deterministic simulator of a jobmesh pool.
//!
//! N [`Node`]s, the signal-server's real pure [`Registry`], virtual links and
//! virtual time, all in one thread: no socket, no task, no clock (the epoch
//! is one `Instant` taken at the start; everything after is arithmetic).
//! Time jumps to the earliest of the next scheduled event and every node's
//! [`Node::poll_timeout`]. Randomness comes from one seeded RNG, so the same
//! seed and schedule give the same run (see [`Sim::trace_hash`]).
//!
//! What it models, and how:
//! * **Signal-server**: hello → `welcome` + view pages read from each peer's
//!   cursor, stats, relayed handshakes; an outage disconnects every peer and
//!   the server that returns starts empty (peers join again). A peer's
//!   WebSocket is one ordered stream each way (random latency never reorders
//!   it), and what was sent on a closed one never arrives.
//! * **Links**: a dial relays an offer through the server; the answer comes
//!   back the same way; the link opens at both ends a round trip later, or
//!   the dial fails after [`SimConfig::connect_timeout`]. A data channel is
//!   ordered and reliable: a lost packet shows up as a retransmission delay
//!   (SCTP's 1 s minimum, doubling), and past [`SimConfig::max_retransmits`]
//!   the link closes at both ends.
//! * **Faults** ([`Action`]): a peer killed (its links close at the remote
//!   ends after [`SimConfig::dead_link_after`], the server sees its socket
//!   close at once) and restarted with its journal; a peer frozen (nothing
//!   reaches it, its timers stop); a peer cut off from everyone for a while
//!   (traffic waits, links close if the cut outlasts `dead_link_after`);
//!   signal-server down and up; SIGTERM drains.
//! * **Handlers**: `{"ms": N}` runs N virtual ms; `"fail": "retryable" |
//!   "permanent" | "panic"` fails it. A completed job's value names the peer
//!   that ran it, which lets the checker verify the envelope's worker.
//! * **Blobs**: a job submitted with `"in_kib": N` carries an input blob of
//!   N KiB, and its handler attaches an output blob of `"out_kib": M`. A set
//!   moves over its link in order with the link's messages, at
//!   [`SimConfig::bandwidth`]; it counts at the receiver only if the node
//!   still wants it ([`Node::wants_chunk`]), and its upload ends (sent, or
//!   its link closed) when it arrives.
//!
//! The checker is the fault suite's ([`check::History`]); beside it the
//! simulator logs handler runs, faults, retries and receipts, and checks
//! that no job ran again without a reason, that no worker ran again a job it
//! had finished, and that no job ended "cancelled" unasked ([`audit`]).

pub mod audit;
pub mod check;
pub mod swarm;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use jobmesh_core::{DispatcherConfig, EventKind, JobError, JobOptions, JobSpec};
use jobmesh_identity::{Identity, Nonce};
use jobmesh_node::{
    JournalOp, LinkId, Node, NodeConfig, NodeInput, NodeOutput, SpoolLimits, UnixClock,
};
use jobmesh_signal_server::{Registry, MAX_PEERS_PER_POOL};
use jobmesh_wire::blob::{BlobMeta, ChunkHeader, Direction};
use jobmesh_wire::dc::{DcMsg, JobId};
use jobmesh_wire::link::{Binding, Fingerprint};
use jobmesh_wire::signal::{Handshake, Join, ServerMsg};
use jobmesh_wire::{Capability, PeerId, Stats};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

use audit::{Allowances, Audit, Dispatch, Fault, FaultKind, ReceiptSeen, Retry, RunEnd};
use check::{Delivered, History};

/// The pool every simulated peer joins.
const POOL: &str = "sim";
/// The wall-clock time (Unix seconds) at a run's start.
const SIM_UNIX_EPOCH: u64 = 1_800_000_000;
/// A view page's size, as the real server's.
const PAGE_BYTES: usize = 16 * 1024;
/// Steps one run may take: far more than any scenario needs, so reaching
/// it means the pool stopped making progress (a timer that never moves on).
const MAX_STEPS: u64 = 200_000;
/// How long a settled pool runs on before its slots are checked: past the
/// orphan grace and the time kept results are kept.
const QUIET: Duration = Duration::from_secs(700);
/// The error a simulated handler stops with when its node cancels it.
const HANDLER_CANCELLED: &str = "cancelled";
/// A resumed job's attempts jump this far past the journaled one (as `peer`'s).
const RESUME_ATTEMPT_GAP: u32 = 16;

/// The network and timing model.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// One-way latency of every message, drawn uniformly from this range.
    pub latency: (Duration, Duration),
    /// Chance that a data-channel message needs a retransmission (each one
    /// costs an RTO: 1 s, doubling).
    pub loss: f64,
    /// Retransmissions of one message before SCTP gives the link up.
    pub max_retransmits: u32,
    /// A dial not open after this fails.
    pub connect_timeout: Duration,
    /// A link whose remote is dead or cut off closes after this.
    pub dead_link_after: Duration,
    /// Bytes per second a link moves a set of blobs at.
    pub bandwidth: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            latency: (Duration::from_micros(200), Duration::from_millis(5)),
            loss: 0.0,
            max_retransmits: 6,
            connect_timeout: Duration::from_secs(10),
            dead_link_after: Duration::from_secs(8),
            bandwidth: 50_000_000,
        }
    }
}

/// One peer of the pool.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// Its name.
    pub name: String,
    /// What it runs (empty: submit-only).
    pub capabilities: Vec<Capability>,
    /// Jobs it runs at once.
    pub slots: u32,
    /// Whether it runs its own jobs when it is the best candidate.
    pub self_dispatch: bool,
    /// Its handlers take this many times longer than asked.
    pub slowness: u32,
    /// Most jobs it holds as a submitter (`--queue-limit`).
    pub queue_limit: usize,
}

impl PeerSpec {
    /// A worker of `capabilities` with `slots`.
    pub fn worker(name: &str, capabilities: &[&str], slots: u32) -> Self {
        Self {
            name: name.to_owned(),
            capabilities: capabilities.iter().map(|c| cap(c)).collect(),
            slots,
            self_dispatch: true,
            slowness: 1,
            queue_limit: DispatcherConfig::default().queue_limit,
        }
    }

    /// A peer that only submits.
    pub fn submitter(name: &str) -> Self {
        Self::worker(name, &[], 0)
    }
}

/// A capability by name (the simulator's are all valid).
pub fn cap(name: &str) -> Capability {
    Capability::new(name).unwrap_or_else(|_| panic!("invalid capability name {name:?}"))
}

/// The job events observing peers received ([`Action::Observe`]).
#[derive(Debug, Default)]
pub struct Observed {
    /// (observer, worker, event), in arrival order.
    pub events: Vec<(usize, PeerId, jobmesh_wire::dc::ObservedEvent)>,
    /// Events the workers dropped for a slow observer.
    pub dropped: u64,
}

/// Something the schedule makes happen.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Peer `peer` submits a job.
    Submit {
        /// Which peer (index).
        peer: usize,
        /// What it needs.
        capability: Capability,
        /// Handler input (`{"ms": N, "fail": ...}`).
        input: Value,
        /// Its options.
        options: JobOptions,
    },
    /// `kill -9`.
    Crash(usize),
    /// Start again on the same data dir (journal).
    Restart(usize),
    /// `kill -9`, and start again on the same data dir this much later.
    Kill(usize, Duration),
    /// SIGSTOP for this long.
    Freeze(usize, Duration),
    /// Cut off from everyone (peers and server) for this long.
    Isolate(usize, Duration),
    /// The signal-server stops.
    SignalDown,
    /// A signal-server starts (empty).
    SignalUp,
    /// The signal-server is down for this long.
    SignalOutage(Duration),
    /// SIGTERM: the peer drains (it stops taking jobs).
    Drain(usize),
    /// The peer observes the pool (true) or stops (false).
    Observe(usize, bool),
    /// The peer runs up to this many jobs at once from now on (`peer scale`).
    Scale(usize, u32),
    /// The peer runs these capabilities from now on (`peer capabilities`);
    /// its driver tells the signal-server.
    SetCapabilities(usize, Vec<Capability>),
}

/// One simulated peer.
struct Peer {
    spec: PeerSpec,
    /// Its key, drawn from the seed; `id` is the key's.
    identity: Identity,
    id: PeerId,
    /// None while crashed.
    node: Option<Node>,
    /// Bumped at each crash: events of an earlier life are dropped.
    life: u32,
    /// Its WebSocket to the current signal-server, while joined.
    signal: Option<SignalSocket>,
    frozen_until: Option<Instant>,
    isolated_until: Option<Instant>,
    journal: Journal,
    /// Handler runs: job → run id.
    running: HashMap<JobId, u64>,
    /// The newest attempt of each job offered to its worker side (a
    /// handler it starts runs that one).
    offered: HashMap<JobId, u32>,
    /// Links dialled or answered and not open yet.
    connecting: BTreeSet<LinkId>,
    /// Dials: link → (remote, tag).
    dials: HashMap<LinkId, (PeerId, u64)>,
    /// Answers given: (remote, tag) → our link.
    answered: HashMap<(PeerId, u64), LinkId>,
    /// Sets of blobs the node receives: (job, direction) → total bytes.
    receiving: HashMap<(JobId, Direction), u64>,
    /// Uploads under way: (job, direction) → upload id.
    sending: HashMap<(JobId, Direction), u64>,
    /// Blobs held by the driver: a job's inputs (submitter) and the outputs
    /// its handler attached (worker), in bytes.
    inputs: HashMap<JobId, u64>,
    outputs: HashMap<JobId, u64>,
}

/// A peer's WebSocket to the signal-server: one ordered stream each way.
struct SignalSocket {
    /// Unique over the run: a message sent on an earlier socket (closed
    /// since, with the server or the process) is dropped.
    id: u64,
    /// The view cursor the server reads pages from.
    cursor: u64,
    /// When the last message from the server reaches the peer; the next one
    /// cannot arrive earlier.
    down_last: Instant,
    /// When the last message from the peer reaches the server.
    up_last: Instant,
}

/// What a peer's journal holds: jobs not ended, with their newest attempt.
#[derive(Debug, Default, Clone)]
struct Journal {
    open: BTreeMap<JobId, (JobSpec, Option<(u32, PeerId)>)>,
}

/// A virtual data channel between two link ends.
struct Conn {
    ends: [(usize, LinkId); 2],
    /// Each end's DTLS certificate fingerprint (drawn from the seed).
    fingerprints: [Fingerprint; 2],
    /// When the last message each way arrives (ordered channel).
    last: [Instant; 2],
    closed: bool,
}

#[derive(Debug)]
enum Event {
    Action(Action),
    /// A data-channel message arrives at side `to` of `conn`.
    Deliver {
        conn: usize,
        to: usize,
        msg: DcMsg,
    },
    LinkOpened {
        peer: usize,
        life: u32,
        link: LinkId,
    },
    LinkClosed {
        peer: usize,
        life: u32,
        link: LinkId,
    },
    DialTimeout {
        peer: usize,
        life: u32,
        link: LinkId,
    },
    FromServer {
        peer: usize,
        /// The [`SignalSocket`] it travels on.
        socket: u64,
        msg: ServerMsg,
    },
    StatsToServer {
        peer: usize,
        /// The [`SignalSocket`] it travels on.
        socket: u64,
        stats: Stats,
    },
    RelayToServer {
        peer: usize,
        /// The [`SignalSocket`] it travels on.
        socket: u64,
        to: PeerId,
        signal: Handshake,
    },
    Join {
        peer: usize,
        life: u32,
    },
    HandlerDone {
        peer: usize,
        life: u32,
        job_id: JobId,
        run: u64,
        result: Result<Value, (String, bool)>,
    },
    Thaw(usize),
    /// A whole set of blobs arrives at side `to` of `conn`.
    BlobsArrive {
        conn: usize,
        to: usize,
        job_id: JobId,
        direction: Direction,
        attempt: u32,
    },
    /// An upload's last byte left (or its link died under it).
    BlobsSent {
        peer: usize,
        life: u32,
        /// None: there was no connection to send on.
        conn: Option<usize>,
        upload: u64,
        job_id: JobId,
        direction: Direction,
        to: PeerId,
        attempt: u32,
    },
}

impl Event {
    /// The peer it must reach (held while that peer is frozen).
    fn target(&self) -> Option<usize> {
        match self {
            Event::LinkOpened { peer, .. }
            | Event::LinkClosed { peer, .. }
            | Event::DialTimeout { peer, .. }
            | Event::FromServer { peer, .. }
            | Event::HandlerDone { peer, .. }
            | Event::BlobsSent { peer, .. } => Some(*peer),
            _ => None,
        }
    }
}

/// Something the checker found wrong beyond lost / duplicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// When, since the start.
    pub at: Duration,
    /// What.
    pub what: String,
}

/// The simulated pool.
pub struct Sim {
    config: SimConfig,
    epoch: Instant,
    now: Instant,
    rng: StdRng,
    peers: Vec<Peer>,
    /// None while the signal-server is down.
    registry: Option<Registry>,
    /// The registry changed: views need pages.
    views_dirty: bool,
    conns: Vec<Conn>,
    /// (peer, link) → connection.
    by_end: HashMap<(usize, LinkId), usize>,
    events: BinaryHeap<Reverse<(Instant, u64)>>,
    payloads: HashMap<u64, Event>,
    seq: u64,
    next_run: u64,
    /// What the checker judges.
    pub history: History,
    /// Envelope mismatches and other broken promises.
    pub violations: Vec<Violation>,
    /// Handler runs, faults, retries and receipts, for the checks of
    /// [`audit`].
    pub audit: Audit,
    /// The known product bugs [`run`](Self::run)'s checks tolerate.
    pub allowances: Allowances,
    /// What observing peers received.
    pub observed: Observed,
    /// Since when the signal-server is down.
    signal_down_since: Option<Duration>,
    trace: Option<Vec<String>>,
    hash: u64,
    steps: u64,
}

impl Sim {
    /// A pool of `peers` (their ids are derived from the seed), the
    /// signal-server up, every peer joining at once.
    pub fn new(seed: u64, config: SimConfig, peers: Vec<PeerSpec>) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let epoch = Instant::now();
        let peers = peers
            .into_iter()
            .map(|spec| {
                let identity = Identity::from_seed(&rng.random());
                Peer {
                    spec,
                    id: identity.peer_id(),
                    identity,
                    node: None,
                    life: 0,
                    signal: None,
                    frozen_until: None,
                    isolated_until: None,
                    journal: Journal::default(),
                    running: HashMap::new(),
                    offered: HashMap::new(),
                    connecting: BTreeSet::new(),
                    dials: HashMap::new(),
                    answered: HashMap::new(),
                    receiving: HashMap::new(),
                    sending: HashMap::new(),
                    inputs: HashMap::new(),
                    outputs: HashMap::new(),
                }
            })
            .collect();
        let mut sim = Self {
            config,
            epoch,
            now: epoch,
            rng,
            peers,
            registry: Some(Registry::new(MAX_PEERS_PER_POOL)),
            views_dirty: false,
            conns: Vec::new(),
            by_end: HashMap::new(),
            events: BinaryHeap::new(),
            payloads: HashMap::new(),
            seq: 0,
            next_run: 0,
            history: History::default(),
            violations: Vec::new(),
            audit: Audit::default(),
            allowances: Allowances::default(),
            observed: Observed::default(),
            signal_down_since: None,
            trace: None,
            hash: 0xcbf2_9ce4_8422_2325,
            steps: 0,
        };
        for p in 0..sim.peers.len() {
            sim.start_peer(p);
        }
        sim
    }

    /// Keeps a readable trace of every step (for a failing seed).
    pub fn with_trace(mut self) -> Self {
        self.trace = Some(Vec::new());
        self
    }

    /// The trace kept by [`with_trace`](Self::with_trace).
    pub fn trace(&self) -> &[String] {
        self.trace.as_deref().unwrap_or_default()
    }

    /// A hash of every step taken: equal for equal runs.
    pub fn trace_hash(&self) -> u64 {
        self.hash
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// Tells the audit that `peer` suffers `kind` from now for `lasting`.
    fn fault_from_now(&mut self, peer: usize, kind: FaultKind, lasting: Duration) {
        let from = self.elapsed();
        self.audit.fault(Fault {
            peer: Some(peer),
            kind,
            from,
            until: from + lasting,
        });
    }

    /// A peer's id.
    pub fn peer_id(&self, peer: usize) -> PeerId {
        self.peers[peer].id
    }

    /// Makes `action` happen `after` the start.
    pub fn schedule(&mut self, after: Duration, action: Action) {
        let at = self.epoch + after;
        self.push(at.max(self.now), Event::Action(action));
    }

    /// A job as [`Action::Submit`] for `peer`: `ms` long, default options
    /// with `timeout`.
    pub fn job(peer: usize, capability: &str, ms: u64, timeout: Duration) -> Action {
        Action::Submit {
            peer,
            capability: cap(capability),
            input: json!({ "ms": ms }),
            options: JobOptions {
                timeout,
                ..JobOptions::default()
            },
        }
    }

    /// Runs until every acknowledged job was delivered (and nothing is
    /// scheduled), or `limit` of virtual time has passed.
    /// Then it runs on for [`QUIET`] (handlers of abandoned attempts end,
    /// kept results expire) and checks that the quiet pool holds no slot and
    /// no connection its nodes do not know, and that no job ran again
    /// without a reason ([`audit`], under [`Self::allowances`]).
    pub fn run(&mut self, limit: Duration) {
        let settled = self.run_until(limit, true);
        self.check_links();
        if settled {
            let quiet = self.elapsed() + QUIET;
            self.run_until(quiet, false);
            self.check_slots();
        }
        let allow = self.allowances;
        let reruns = self.audit.unexplained_reruns(allow);
        let after_ok = self.audit.reruns_after_ok(allow);
        self.violations.extend(reruns.into_iter().chain(after_ok));
    }

    /// Steps until `limit`, or (`until_settled`) until every acknowledged
    /// job was delivered and nothing more is scheduled; returns whether it
    /// settled.
    fn run_until(&mut self, limit: Duration, until_settled: bool) -> bool {
        let deadline = self.epoch + limit;
        loop {
            let settled = self.history.undelivered().is_empty()
                && !self
                    .payloads
                    .values()
                    .any(|e| matches!(e, Event::Action(_)));
            if settled && until_settled {
                return true;
            }
            let next_event = self.events.peek().map(|Reverse((t, _))| *t);
            let next_timer = self
                .peers
                .iter()
                .enumerate()
                .filter(|(_, p)| p.frozen_until.is_none())
                .filter_map(|(i, p)| Some((p.node.as_ref()?.poll_timeout()?, i)))
                .min();
            let at = match (next_event, next_timer) {
                (None, None) => return settled,
                (Some(e), Some((t, _))) => e.min(t),
                (Some(e), None) => e,
                (None, Some((t, _))) => t,
            };
            if at > deadline {
                self.now = deadline;
                return settled;
            }
            if self.steps >= MAX_STEPS {
                self.violations.push(Violation {
                    at: self.elapsed(),
                    what: format!("no progress: {MAX_STEPS} steps taken (a livelock?)"),
                });
                return false;
            }
            self.now = self.now.max(at);
            self.steps += 1;
            match next_timer {
                Some((t, p)) if next_event.is_none_or(|e| t <= e) => {
                    self.record(format_args!("timeout {p}"));
                    self.input(p, NodeInput::Timeout);
                }
                _ => {
                    let Some(Reverse((_, seq))) = self.events.pop() else {
                        return settled;
                    };
                    if let Some(ev) = self.payloads.remove(&seq) {
                        self.handle(ev);
                    }
                }
            }
            if self.views_dirty {
                self.send_views();
            }
        }
    }

    /// A quiet pool holds no slot: every job a worker took has ended there
    /// (a slot kept by a job that ended elsewhere would refuse work forever).
    fn check_slots(&mut self) {
        let at = self.elapsed();
        for (p, peer) in self.peers.iter().enumerate() {
            let held = peer.node.as_ref().map_or(0, |n| n.worker().running());
            if held > 0 {
                self.violations.push(Violation {
                    at,
                    what: format!("peer {p} still holds {held} slots in a quiet pool"),
                });
            }
        }
    }

    /// Every connection the network holds open, and every handshake under
    /// way, must belong to a link its node still has: one that left a node's
    /// table without `CloseLink` would keep its connection (in the daemon:
    /// its UDP sockets) for good.
    fn check_links(&mut self) {
        let mut leaks = Vec::new();
        for conn in self.conns.iter().filter(|c| !c.closed) {
            for (i, &(p, link)) in conn.ends.iter().enumerate() {
                let remote = self.peers[conn.ends[1 - i].0].id;
                if let Some(node) = &self.peers[p].node {
                    if !node.is_current_link(&remote, link) {
                        leaks.push(format!("peer {p} keeps the open connection of link {link}, which its node dropped"));
                    }
                }
            }
        }
        for (p, peer) in self.peers.iter().enumerate() {
            let Some(node) = &peer.node else {
                continue;
            };
            for &link in &peer.connecting {
                let current = self
                    .remote_of(p, link)
                    .is_some_and(|remote| node.is_current_link(&remote, link));
                if !current {
                    leaks.push(format!(
                        "peer {p} keeps the handshake of link {link}, which its node dropped"
                    ));
                }
            }
        }
        let at = self.elapsed();
        self.violations
            .extend(leaks.into_iter().map(|what| Violation { at, what }));
    }

    // ---- events ----

    fn push(&mut self, at: Instant, ev: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq)));
        self.payloads.insert(self.seq, ev);
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.config.latency;
        if hi <= lo {
            return lo;
        }
        self.rng.random_range(lo..=hi)
    }

    fn record(&mut self, what: std::fmt::Arguments<'_>) {
        let line = format!("{:>10.3} {what}", self.elapsed().as_secs_f64());
        for b in line.bytes() {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x100_0000_01b3);
        }
        if let Some(t) = &mut self.trace {
            t.push(line);
        }
    }

    fn alive(&self, peer: usize, life: u32) -> bool {
        let p = &self.peers[peer];
        p.life == life && p.node.is_some()
    }

    fn handle(&mut self, ev: Event) {
        if let Some(peer) = ev.target() {
            if let Some(until) = self.peers[peer].frozen_until {
                // Nothing reaches a frozen process; it reads on when thawed.
                self.push(until, ev);
                return;
            }
        }
        self.record(format_args!("{ev:?}"));
        match ev {
            Event::Action(a) => self.act(a),
            Event::Deliver { conn, to, msg } => {
                let c = &self.conns[conn];
                if c.closed {
                    return;
                }
                let (peer, link) = c.ends[to];
                let from = self.peers[c.ends[1 - to].0].id;
                if let DcMsg::Submit {
                    job_id, attempt, ..
                } = &msg
                {
                    self.peers[peer].offered.insert(*job_id, *attempt);
                }
                if let DcMsg::Received { receipts } = &msg {
                    let at = self.elapsed();
                    for r in receipts {
                        self.audit.receipts.push(ReceiptSeen {
                            job_id: r.job_id,
                            worker: peer,
                            at,
                        });
                    }
                }
                self.input(peer, NodeInput::Message { from, link, msg });
            }
            Event::LinkOpened { peer, life, link } => {
                if self.alive(peer, life) && self.peers[peer].connecting.remove(&link) {
                    if let Some((remote, binding)) = self.binding(peer, link) {
                        self.input(
                            peer,
                            NodeInput::LinkOpened {
                                peer: remote,
                                link,
                                binding,
                            },
                        );
                    }
                }
            }
            Event::LinkClosed { peer, life, link } => {
                if self.alive(peer, life) {
                    if let Some(remote) = self.remote_of(peer, link) {
                        self.input(peer, NodeInput::LinkClosed { peer: remote, link });
                    }
                }
            }
            Event::DialTimeout { peer, life, link } => {
                if self.alive(peer, life) && self.peers[peer].connecting.remove(&link) {
                    if let Some(remote) = self.remote_of(peer, link) {
                        let why = "the data channel did not open in time (simulated)".to_owned();
                        let failed = NodeInput::LinkFailed {
                            peer: remote,
                            link,
                            why,
                        };
                        self.input(peer, failed);
                    }
                }
            }
            Event::FromServer { peer, socket, msg } => {
                if self.on_socket(peer, socket) {
                    self.input(peer, NodeInput::Signal(&msg));
                }
            }
            Event::StatsToServer {
                peer,
                socket,
                stats,
            } => {
                let id = self.peers[peer].id;
                if self.on_socket(peer, socket) {
                    if let Some(r) = &mut self.registry {
                        r.update_stats(&id, stats);
                        self.views_dirty = true;
                    }
                }
            }
            Event::RelayToServer {
                peer,
                socket,
                to,
                signal,
            } => {
                let from = self.peers[peer].id;
                if !self.on_socket(peer, socket) {
                    return;
                }
                let same = self
                    .registry
                    .as_ref()
                    .is_some_and(|r| r.same_pool(&from, &to));
                let target = self.peers.iter().position(|p| p.id == to);
                if let (true, Some(t)) = (same, target) {
                    self.server_sends(t, ServerMsg::Relayed { from, signal });
                }
            }
            Event::Join { peer, life } => self.join(peer, life),
            Event::HandlerDone {
                peer,
                life,
                job_id,
                run,
                result,
            } => {
                if self.alive(peer, life) && self.peers[peer].running.get(&job_id) == Some(&run) {
                    self.peers[peer].running.remove(&job_id);
                    let end = match &result {
                        Ok(_) => RunEnd::Ok,
                        Err((_, true)) => RunEnd::Retryable,
                        Err((e, false)) if e == HANDLER_CANCELLED => RunEnd::Cancelled,
                        Err(_) => RunEnd::Failed,
                    };
                    let at = self.elapsed();
                    self.audit.run_ended(job_id, peer, at, end);
                    let out_bytes = match &result {
                        Ok(v) => v.get("out_kib").and_then(Value::as_u64).unwrap_or(0) * 1024,
                        Err(_) => 0,
                    };
                    let outputs = if out_bytes > 0 {
                        self.peers[peer].outputs.insert(job_id, out_bytes);
                        vec![blob(out_bytes)]
                    } else {
                        Vec::new()
                    };
                    let done = NodeInput::HandlerDone {
                        job_id,
                        result,
                        outputs,
                    };
                    self.input(peer, done);
                }
            }
            Event::BlobsArrive {
                conn,
                to,
                job_id,
                direction,
                attempt,
            } => {
                let c = &self.conns[conn];
                if c.closed {
                    return;
                }
                let (peer, _) = c.ends[to];
                let from = self.peers[c.ends[1 - to].0].id;
                let header = ChunkHeader {
                    direction,
                    job_id,
                    attempt,
                    blob: 0,
                    offset: 0,
                };
                let wanted = self.peers[peer]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.wants_chunk(&from, &header))
                    && self.peers[peer]
                        .receiving
                        .contains_key(&(job_id, direction));
                if wanted {
                    self.blobs_arrived(peer, job_id, direction);
                }
            }
            Event::BlobsSent {
                peer,
                life,
                conn,
                upload,
                job_id,
                direction,
                to,
                attempt,
            } => {
                if !self.alive(peer, life)
                    || self.peers[peer].sending.get(&(job_id, direction)) != Some(&upload)
                {
                    return;
                }
                self.peers[peer].sending.remove(&(job_id, direction));
                let result = if conn.is_none_or(|c| self.conns[c].closed) {
                    Err(("the link closed".to_owned(), true))
                } else {
                    Ok(())
                };
                let sent = NodeInput::BlobsSent {
                    job_id,
                    direction,
                    to,
                    attempt,
                    result,
                };
                self.input(peer, sent);
            }
            Event::Thaw(peer) => {
                if self.peers[peer].frozen_until.is_some_and(|t| t <= self.now) {
                    self.peers[peer].frozen_until = None;
                }
            }
        }
    }

    /// Whether `socket` is `peer`'s current socket to the signal-server.
    fn on_socket(&self, peer: usize, socket: u64) -> bool {
        let p = &self.peers[peer];
        p.node.is_some() && p.signal.as_ref().is_some_and(|s| s.id == socket)
    }

    /// The signal-server sends `msg` to `peer` on its socket (if it has
    /// one): it arrives after the latency, but not before what the server
    /// sent it earlier.
    fn server_sends(&mut self, peer: usize, msg: ServerMsg) {
        let at = self.arrival(peer, true);
        let Some(socket) = self.peers[peer].signal.as_mut() else {
            return;
        };
        let at = at.max(socket.down_last);
        socket.down_last = at;
        let socket = socket.id;
        self.push(at, Event::FromServer { peer, socket, msg });
    }

    /// `peer` sends the signal-server `ev` (made for its socket): it arrives
    /// after the latency, but not before what the peer sent it earlier. Not
    /// joined: nothing is sent.
    fn peer_sends(&mut self, peer: usize, ev: impl FnOnce(u64) -> Event) {
        let at = self.arrival(peer, false);
        let Some(socket) = self.peers[peer].signal.as_mut() else {
            return;
        };
        let at = at.max(socket.up_last);
        socket.up_last = at;
        let ev = ev(socket.id);
        self.push(at, ev);
    }

    /// When a message sent now reaches `peer` (or leaves it: `inbound`
    /// false): after the latency, or after a cut that isolates it.
    fn arrival(&mut self, peer: usize, _inbound: bool) -> Instant {
        let at = self.now + self.latency();
        match self.peers[peer].isolated_until {
            Some(until) if until > self.now => at.max(until) + self.latency(),
            _ => at,
        }
    }

    /// The remote of a connected link and this end's view of the
    /// connection, with a fresh nonce.
    fn binding(&mut self, peer: usize, link: LinkId) -> Option<(PeerId, Binding)> {
        let conn = &self.conns[*self.by_end.get(&(peer, link))?];
        let (me, other) = if conn.ends[0] == (peer, link) {
            (0, 1)
        } else {
            (1, 0)
        };
        let remote = self.peers[conn.ends[other].0].id;
        let (local, remote_fp) = (conn.fingerprints[me], conn.fingerprints[other]);
        let nonce = Nonce::from_bytes(self.rng.random());
        Some((
            remote,
            Binding {
                local,
                remote: remote_fp,
                nonce,
            },
        ))
    }

    fn remote_of(&self, peer: usize, link: LinkId) -> Option<PeerId> {
        if let Some(&c) = self.by_end.get(&(peer, link)) {
            let conn = &self.conns[c];
            let other = if conn.ends[0] == (peer, link) { 1 } else { 0 };
            return Some(self.peers[conn.ends[other].0].id);
        }
        let p = &self.peers[peer];
        p.dials.get(&link).map(|d| d.0).or_else(|| {
            p.answered
                .iter()
                .find(|(_, l)| **l == link)
                .map(|((r, _), _)| *r)
        })
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Submit {
                peer,
                capability,
                input,
                options,
            } => self.submit(peer, capability, input, options),
            Action::Crash(p) => self.crash(p),
            Action::Kill(p, down) => {
                // Its remotes see its links close after `dead_link_after`.
                let lasting = down.max(self.config.dead_link_after);
                self.fault_from_now(p, FaultKind::Kill, lasting);
                self.crash(p);
                let at = self.now + down;
                self.push(at, Event::Action(Action::Restart(p)));
            }
            Action::SignalOutage(down) => {
                self.act(Action::SignalDown);
                let at = self.now + down;
                self.push(at, Event::Action(Action::SignalUp));
            }
            Action::Restart(p) => {
                if self.peers[p].node.is_none() {
                    self.start_peer(p);
                }
            }
            Action::Freeze(p, d) => {
                self.fault_from_now(p, FaultKind::Freeze, d);
                let until = self.now + d;
                self.peers[p].frozen_until = Some(until);
                self.push(until, Event::Thaw(p));
            }
            Action::Isolate(p, d) => {
                self.fault_from_now(p, FaultKind::Isolate, d);
                let until = self.now + d;
                self.peers[p].isolated_until = Some(until);
                if d >= self.config.dead_link_after {
                    let at = self.now + self.config.dead_link_after;
                    for c in 0..self.conns.len() {
                        if self.conns[c].ends.iter().any(|e| e.0 == p) && !self.conns[c].closed {
                            self.close_conn_at(c, at);
                        }
                    }
                }
            }
            Action::SignalDown => {
                if self.registry.is_some() {
                    self.signal_down_since = Some(self.elapsed());
                }
                self.registry = None;
                for p in 0..self.peers.len() {
                    if self.peers[p].signal.take().is_some() && self.peers[p].node.is_some() {
                        self.input(p, NodeInput::SignalDisconnected);
                    }
                }
            }
            Action::SignalUp => {
                if self.registry.is_none() {
                    if let Some(from) = self.signal_down_since.take() {
                        let until = self.elapsed();
                        self.audit.fault(Fault {
                            peer: None,
                            kind: FaultKind::SignalOutage,
                            from,
                            until,
                        });
                    }
                    self.registry = Some(Registry::new(MAX_PEERS_PER_POOL));
                    for p in 0..self.peers.len() {
                        if self.peers[p].node.is_some() {
                            // Reconnect backoff: within a second.
                            let at =
                                self.now + Duration::from_millis(self.rng.random_range(50..1000));
                            let life = self.peers[p].life;
                            self.push(at, Event::Join { peer: p, life });
                        }
                    }
                }
            }
            Action::Drain(p) => self.input(p, NodeInput::Drain),
            Action::Observe(p, on) => self.input(p, NodeInput::Observe(on)),
            Action::Scale(p, slots) => self.input(p, NodeInput::SetSlots(slots)),
            Action::SetCapabilities(p, capabilities) => {
                self.peers[p].spec.capabilities.clone_from(&capabilities);
                let id = self.peers[p].id;
                let connected = self.peers[p].signal.is_some();
                self.input(p, NodeInput::SetCapabilities(capabilities.clone()));
                if let (true, Some(r)) = (connected, &mut self.registry) {
                    r.update_capabilities(&id, capabilities);
                    self.views_dirty = true;
                }
            }
        }
    }

    fn submit(&mut self, peer: usize, capability: Capability, input: Value, options: JobOptions) {
        let job_id = Uuid::from_u128(self.rng.random());
        if self.peers[peer].node.is_none() {
            // Nobody answers a submit to a dead daemon: the client sees an error.
            self.history.refused("the daemon is not running");
            return;
        }
        let in_bytes = input.get("in_kib").and_then(Value::as_u64).unwrap_or(0) * 1024;
        let blobs = if in_bytes > 0 {
            vec![blob(in_bytes)]
        } else {
            Vec::new()
        };
        let spec = JobSpec {
            job_id,
            capability,
            input,
            options,
        };
        // Journaled (synced) before the node hears of it, as by `peer`.
        self.peers[peer]
            .journal
            .open
            .insert(job_id, (spec.clone(), None));
        let now = self.now;
        let refused = self.peers[peer]
            .node
            .as_mut()
            .map(|n| n.handle_input(now, NodeInput::Submit { spec, blobs }));
        if let Some(Err(e)) = refused {
            self.peers[peer].journal.open.remove(&job_id);
            self.history.refused(e.to_string());
        } else {
            if in_bytes > 0 {
                self.peers[peer].inputs.insert(job_id, in_bytes);
            }
            self.audit.submitters.insert(job_id, peer);
            self.history.submitted(job_id);
        }
        self.drain_outputs(peer);
    }

    fn start_peer(&mut self, p: usize) {
        let spec = self.peers[p].spec.clone();
        let seed = self.rng.random();
        let node = Node::new(NodeConfig {
            identity: self.peers[p].identity.clone(),
            name: spec.name.clone(),
            capabilities: spec.capabilities.clone(),
            slots: spec.slots,
            progress_interval: Duration::from_millis(100),
            stats_interval: Duration::from_millis(250),
            dispatcher: DispatcherConfig {
                self_dispatch: spec.self_dispatch,
                queue_limit: spec.queue_limit,
                seed,
                ..DispatcherConfig::default()
            },
            strategy: None,
            max_blob_size: 1 << 30,
            spool: SpoolLimits::default(),
            journaled: true,
            seed,
            input_check: Box::new(|_, input| match input.get("ms") {
                Some(v) if !v.is_u64() => Err("ms must be a whole number".into()),
                _ => Ok(()),
            }),
            credential: None,
            allow: HashMap::new(),
            clock: UnixClock {
                at: self.epoch,
                unix: SIM_UNIX_EPOCH,
            },
            handover: None,
        });
        let peer = &mut self.peers[p];
        peer.node = Some(node);
        peer.running.clear();
        peer.connecting.clear();
        peer.dials.clear();
        peer.answered.clear();
        peer.receiving.clear();
        peer.sending.clear();
        peer.outputs.clear();
        let life = peer.life;
        // Resume what the journal holds, once the pool view is complete
        // (the node's dispatcher waits for it).
        let resume: Vec<_> = peer.journal.open.values().cloned().collect();
        let now = self.now;
        for (spec, attempt) in resume {
            let in_bytes = spec
                .input
                .get("in_kib")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                * 1024;
            let blobs = if in_bytes > 0 {
                self.peers[p].inputs.insert(spec.job_id, in_bytes);
                vec![blob(in_bytes)]
            } else {
                Vec::new()
            };
            let input = NodeInput::Resume {
                spec,
                blobs,
                attempts_before: attempt.map_or(0, |a| a.0 + RESUME_ATTEMPT_GAP),
                held_by: attempt.map(|a| a.1),
            };
            if let Some(node) = self.peers[p].node.as_mut() {
                let _ = node.handle_input(now, input);
            }
        }
        self.drain_outputs(p);
        if self.registry.is_some() {
            let at = self.now + self.latency();
            self.push(at, Event::Join { peer: p, life });
        }
    }

    fn join(&mut self, p: usize, life: u32) {
        if !self.alive(p, life) || self.peers[p].signal.is_some() {
            return;
        }
        let peer = &self.peers[p];
        // The server's check of the hello's proof is not simulated (peer
        // ids come from seeded keys, and links run the real handshake).
        let join = Join {
            name: peer.spec.name.clone(),
            pool: POOL.into(),
            capabilities: peer.spec.capabilities.clone(),
            slots: peer.spec.slots,
            credential: None,
            view: None,
        };
        let id = peer.id;
        let Some(registry) = &mut self.registry else {
            return;
        };
        if registry.join(self.now, id, &join).is_err() {
            return;
        }
        let id = self.new_run();
        self.peers[p].signal = Some(SignalSocket {
            id,
            cursor: 0,
            down_last: self.now,
            up_last: self.now,
        });
        self.views_dirty = true;
        self.input(p, NodeInput::SignalConnected);
        let welcome = ServerMsg::Welcome {
            pool: POOL.into(),
            heartbeat_ms: 5000,
            ice_servers: Vec::new(),
        };
        self.server_sends(p, welcome);
    }

    /// Every joined peer reads its view from its cursor.
    fn send_views(&mut self) {
        self.views_dirty = false;
        for p in 0..self.peers.len() {
            let id = self.peers[p].id;
            let Some(mut cursor) = self.peers[p].signal.as_ref().map(|s| s.cursor) else {
                continue;
            };
            while let Some(page) = self
                .registry
                .as_ref()
                .and_then(|r| r.page(&id, cursor, PAGE_BYTES))
            {
                cursor = page.cursor;
                if let Some(msg) = page
                    .json
                    .as_deref()
                    .and_then(|j| ServerMsg::decode(j.as_bytes()).ok())
                {
                    self.server_sends(p, msg);
                }
            }
            if let Some(socket) = self.peers[p].signal.as_mut() {
                socket.cursor = cursor;
            }
        }
    }

    fn crash(&mut self, p: usize) {
        if self.peers[p].node.take().is_none() {
            return;
        }
        let at = self.elapsed();
        self.audit.peer_killed(p, at);
        let id = self.peers[p].id;
        let peer = &mut self.peers[p];
        peer.life += 1;
        peer.frozen_until = None;
        // Its handshakes and handlers die with it; link ids start afresh in
        // its next life.
        peer.running.clear();
        peer.connecting.clear();
        peer.dials.clear();
        peer.answered.clear();
        peer.receiving.clear();
        peer.sending.clear();
        peer.outputs.clear();
        self.by_end.retain(|(q, _), _| *q != p);
        if self.peers[p].signal.take().is_some() {
            if let Some(r) = &mut self.registry {
                // Its socket closes with the process: the server sees it at once.
                r.leave(&id);
                self.views_dirty = true;
            }
        }
        // The remote ends learn of it only when their link times out.
        let at = self.now + self.config.dead_link_after;
        for c in 0..self.conns.len() {
            if self.conns[c].ends.iter().any(|e| e.0 == p) && !self.conns[c].closed {
                self.close_conn_at(c, at);
            }
        }
    }

    /// Closes a connection: each live end hears `LinkClosed` at `at`.
    fn close_conn_at(&mut self, c: usize, at: Instant) {
        self.conns[c].closed = true;
        for (peer, link) in self.conns[c].ends {
            self.link_closed_at(peer, link, at);
        }
    }

    /// `peer` hears at `at` that its `link` closed, if it is alive now. A
    /// dead end hears nothing: its crash bumped its life already, and its
    /// next life numbers links afresh, so a close tagged with that life
    /// would close the restarted node's new link of the same id.
    fn link_closed_at(&mut self, peer: usize, link: LinkId, at: Instant) {
        if self.peers[peer].node.is_none() {
            return;
        }
        let life = self.peers[peer].life;
        self.push(at, Event::LinkClosed { peer, life, link });
    }

    // ---- a node's inputs and outputs ----

    fn input(&mut self, p: usize, input: NodeInput<'_>) {
        let now = self.now;
        if let Some(node) = self.peers[p].node.as_mut() {
            let _ = node.handle_input(now, input);
        }
        self.drain_outputs(p);
    }

    fn drain_outputs(&mut self, p: usize) {
        loop {
            let Some(out) = self.peers[p].node.as_mut().and_then(Node::poll_output) else {
                return;
            };
            self.output(p, out);
        }
    }

    fn output(&mut self, p: usize, out: NodeOutput) {
        match out {
            NodeOutput::Send { link, msg, .. } => self.send(p, link, msg),
            NodeOutput::Dial { peer, link, tag } => {
                self.peers[p].dials.insert(link, (peer, tag));
                let offer = Handshake::Offer {
                    sdp: "sim-offer".into(),
                    dial: tag,
                };
                self.handshake(p, peer, link, offer);
            }
            NodeOutput::Answer {
                peer, link, tag, ..
            } => {
                self.peers[p].answered.insert((peer, tag), link);
                let answer = Handshake::Answer {
                    sdp: "sim-answer".into(),
                    dial: tag,
                };
                self.handshake(p, peer, link, answer);
            }
            NodeOutput::DeliverAnswer { link, .. } => self.connect(p, link),
            NodeOutput::CloseLink { link, .. } => {
                self.peers[p].connecting.remove(&link);
                if let Some(c) = self.by_end.remove(&(p, link)) {
                    if !self.conns[c].closed {
                        // The remote end hears the close a moment later.
                        self.conns[c].closed = true;
                        let other = self.conns[c].ends.into_iter().find(|e| *e != (p, link));
                        if let Some((peer, link)) = other {
                            let at = self.arrival(peer, true);
                            self.link_closed_at(peer, link, at);
                        }
                    }
                }
            }
            NodeOutput::StartHandler {
                job_id,
                input,
                timeout,
                ..
            } => self.start_handler(p, job_id, &input, timeout),
            NodeOutput::CancelHandler { job_id } => {
                if self.peers[p].running.contains_key(&job_id) {
                    // The handler stops soon after its token fires.
                    let result = Err((HANDLER_CANCELLED.to_owned(), false));
                    self.end_handler_after(p, job_id, Duration::from_millis(1), result);
                }
            }
            NodeOutput::ForgetResult { job_id } | NodeOutput::LocalResultBlobs { job_id, .. } => {
                self.peers[p].outputs.remove(&job_id);
            }
            NodeOutput::ReceiveBlobs {
                job_id,
                direction,
                blobs,
                ..
            } => {
                let total = blobs.iter().map(|b| b.size).sum();
                self.peers[p].receiving.insert((job_id, direction), total);
                if total == 0 {
                    self.blobs_arrived(p, job_id, direction);
                }
            }
            NodeOutput::DropBlobs { job_id, direction } => {
                self.peers[p].receiving.remove(&(job_id, direction));
            }
            NodeOutput::SendBlobs {
                job_id,
                direction,
                to,
                link,
                attempt,
                // Always false: simulated peers have no handover directory.
                handover: _,
            } => self.send_blobs(p, job_id, direction, to, link, attempt),
            // Never asked for, for the same reason.
            NodeOutput::ReadBlobFiles { .. } => {}
            NodeOutput::StopSending { job_id, direction } => {
                self.peers[p].sending.remove(&(job_id, direction));
            }
            NodeOutput::ResultBlobs { .. } => {}
            NodeOutput::Event(event) => {
                let at = self.elapsed();
                match event.kind {
                    EventKind::Retrying {
                        attempt, outcome, ..
                    } => {
                        self.record(format_args!("p{p} retries {}: {outcome}", event.job_id));
                        self.audit.retries.push(Retry {
                            job_id: event.job_id,
                            attempt,
                            at,
                            outcome,
                        });
                    }
                    EventKind::Dispatched { worker, attempt } => {
                        if worker == self.peers[p].id {
                            // Self-dispatched: no message carries it.
                            self.peers[p].offered.insert(event.job_id, attempt);
                        }
                        if let Some(worker) = self.peers.iter().position(|q| q.id == worker) {
                            self.audit.dispatches.push(Dispatch {
                                job_id: event.job_id,
                                attempt,
                                worker,
                                at,
                            });
                        }
                    }
                    _ => {}
                }
            }
            NodeOutput::Finished(end) => {
                self.peers[p].journal.open.remove(&end.job_id);
                self.peers[p].inputs.remove(&end.job_id);
                if let Err(e) = &end.result {
                    let cancelled = match e {
                        JobError::Cancelled => true,
                        JobError::Failed { message, .. } => message == HANDLER_CANCELLED,
                        _ => false,
                    };
                    if cancelled {
                        // No client cancels in the simulator: a stopped
                        // handler's answer belongs to an attempt given up.
                        self.violations.push(Violation {
                            at: self.elapsed(),
                            what: format!(
                                "job {} ended \"{e}\" on its submitter p{p} at {:.3} s, but nobody cancelled it",
                                end.job_id,
                                self.elapsed().as_secs_f64()
                            ),
                        });
                    }
                }
                let delivered = match &end.result {
                    Ok(value) => {
                        let ran = value.get("by").and_then(Value::as_str);
                        let named = end.worker.map(|w| w.to_string());
                        if ran != named.as_deref() {
                            self.violations.push(Violation {
                                at: self.elapsed(),
                                what: format!(
                                    "job {} ran on {ran:?} but its envelope names {named:?}",
                                    end.job_id
                                ),
                            });
                        }
                        Delivered::Completed
                    }
                    Err(e) => Delivered::Failed(e.to_string()),
                };
                self.record(format_args!("finished {} {delivered:?}", end.job_id));
                self.history.delivered(end.job_id, delivered);
            }
            NodeOutput::Journal(op) => {
                if let JournalOp::Attempt {
                    job_id,
                    attempt,
                    worker,
                } = op
                {
                    if let Some(j) = self.peers[p].journal.open.get_mut(&job_id) {
                        j.1 = Some((attempt, worker));
                    }
                }
            }
            NodeOutput::PublishStats(stats) => {
                self.peer_sends(p, |socket| Event::StatsToServer {
                    peer: p,
                    socket,
                    stats,
                });
            }
            NodeOutput::Observed {
                worker,
                events,
                dropped,
            } => {
                self.observed.dropped += dropped;
                for e in events {
                    self.observed.events.push((p, worker, e));
                }
            }
        }
    }

    /// A whole set arrived intact at `p`.
    fn blobs_arrived(&mut self, p: usize, job_id: JobId, direction: Direction) {
        let Some(total) = self.peers[p].receiving.remove(&(job_id, direction)) else {
            return;
        };
        let progress = NodeInput::BlobsProgress {
            job_id,
            direction,
            received: total,
            total,
        };
        self.input(p, progress);
        self.input(p, NodeInput::BlobsReceived { job_id, direction });
    }

    /// An upload: the set travels in order with the link's messages, at
    /// the link's bandwidth.
    fn send_blobs(
        &mut self,
        p: usize,
        job_id: JobId,
        direction: Direction,
        to: PeerId,
        link: LinkId,
        attempt: u32,
    ) {
        let upload = self.new_run();
        let life = self.peers[p].life;
        self.peers[p].sending.insert((job_id, direction), upload);
        let bytes = match direction {
            Direction::Input => self.peers[p].inputs.get(&job_id),
            Direction::Output => self.peers[p].outputs.get(&job_id),
        }
        .copied()
        .unwrap_or(0);
        let conn = self.by_end.get(&(p, link)).copied();
        let Some(c) = conn.filter(|c| !self.conns[*c].closed) else {
            // No connection any more: the upload fails at once.
            let sent = Event::BlobsSent {
                peer: p,
                life,
                conn: None,
                upload,
                job_id,
                direction,
                to,
                attempt,
            };
            self.push(self.now, sent);
            return;
        };
        let side = if self.conns[c].ends[0] == (p, link) {
            1
        } else {
            0
        };
        let receiver = self.conns[c].ends[side].0;
        let took = Duration::from_secs_f64(bytes as f64 / self.config.bandwidth.max(1) as f64);
        let at = (self.arrival(p, false).max(self.arrival(receiver, true)) + took)
            .max(self.conns[c].last[side]);
        self.conns[c].last[side] = at;
        self.push(
            at,
            Event::BlobsArrive {
                conn: c,
                to: side,
                job_id,
                direction,
                attempt,
            },
        );
        self.push(
            at,
            Event::BlobsSent {
                peer: p,
                life,
                conn: Some(c),
                upload,
                job_id,
                direction,
                to,
                attempt,
            },
        );
    }

    fn new_run(&mut self) -> u64 {
        self.next_run += 1;
        self.next_run
    }

    fn start_handler(&mut self, p: usize, job_id: JobId, input: &Value, timeout: Duration) {
        self.history.executed(job_id);
        self.record(format_args!("p{p} runs {job_id}"));
        let at = self.elapsed();
        let attempt = self.peers[p].offered.get(&job_id).copied();
        self.audit.run_started(job_id, attempt, p, at);
        let ms = input.get("ms").and_then(Value::as_u64).unwrap_or(10);
        let took = Duration::from_millis(ms) * self.peers[p].spec.slowness;
        let by = self.peers[p].id.to_string();
        let (after, result) = if took > timeout {
            let why = format!("timed out on the worker after {} ms", timeout.as_millis());
            (timeout, Err((why, true)))
        } else {
            let result = match input.get("fail").and_then(Value::as_str) {
                Some("retryable") => Err(("failed (retryable)".to_owned(), true)),
                Some("permanent") => Err(("failed".to_owned(), false)),
                Some("panic") => Err(("the handler panicked".to_owned(), false)),
                _ => Ok(json!({ "by": by, "ms": ms, "out_kib": input.get("out_kib") })),
            };
            (took, result)
        };
        self.end_handler_after(p, job_id, after, result);
    }

    /// The handler of `job_id` on `p` ends `after` from now with `result`;
    /// a run started since (or a cancel) supersedes it.
    fn end_handler_after(
        &mut self,
        p: usize,
        job_id: JobId,
        after: Duration,
        result: Result<Value, (String, bool)>,
    ) {
        let run = self.new_run();
        self.peers[p].running.insert(job_id, run);
        let life = self.peers[p].life;
        self.push(
            self.now + after,
            Event::HandlerDone {
                peer: p,
                life,
                job_id,
                run,
                result,
            },
        );
    }

    /// Link `link` of `p` starts its handshake with `signal`: it fails
    /// unless open within the connect timeout.
    fn handshake(&mut self, p: usize, to: PeerId, link: LinkId, signal: Handshake) {
        self.peers[p].connecting.insert(link);
        let life = self.peers[p].life;
        let at = self.now + self.config.connect_timeout;
        self.push(
            at,
            Event::DialTimeout {
                peer: p,
                life,
                link,
            },
        );
        self.relay(p, to, signal);
    }

    /// A handshake message through the signal-server.
    fn relay(&mut self, p: usize, to: PeerId, signal: Handshake) {
        // Not connected: nothing is sent, and the dial fails its deadline.
        self.peer_sends(p, |socket| Event::RelayToServer {
            peer: p,
            socket,
            to,
            signal,
        });
    }

    /// The dialler of `link` got its answer: the two ends connect.
    fn connect(&mut self, p: usize, link: LinkId) {
        let Some(&(remote, tag)) = self.peers[p].dials.get(&link) else {
            return;
        };
        let me = self.peers[p].id;
        let Some(r) = self.peers.iter().position(|x| x.id == remote) else {
            return;
        };
        if self.peers[r].node.is_none() {
            return; // it died after answering
        }
        let Some(&rlink) = self.peers[r].answered.get(&(me, tag)) else {
            return;
        };
        if !self.peers[r].connecting.contains(&rlink) {
            return;
        }
        let c = self.conns.len();
        let fingerprints = [
            Fingerprint(self.rng.random()),
            Fingerprint(self.rng.random()),
        ];
        self.conns.push(Conn {
            ends: [(p, link), (r, rlink)],
            fingerprints,
            last: [self.now; 2],
            closed: false,
        });
        self.by_end.insert((p, link), c);
        self.by_end.insert((r, rlink), c);
        // ICE and DTLS take about a round trip.
        for (peer, link) in [(p, link), (r, rlink)] {
            let life = self.peers[peer].life;
            let at = self.arrival(peer, true) + self.latency();
            self.push(at, Event::LinkOpened { peer, life, link });
        }
    }

    /// A message from `p` to `receiver` needed retransmissions: it (and what
    /// follows it on the link) arrives, or the link closes, at `at`.
    fn link_loss(&mut self, p: usize, receiver: usize, at: Instant) {
        let from = self.elapsed();
        let until = at - self.epoch;
        for peer in [p, receiver] {
            self.audit.fault(Fault {
                peer: Some(peer),
                kind: FaultKind::LinkLoss,
                from,
                until,
            });
        }
    }

    /// A message on a link: ordered and reliable, loss shows up as delay;
    /// past the retransmission limit the link closes.
    fn send(&mut self, p: usize, link: LinkId, msg: DcMsg) {
        let Some(&c) = self.by_end.get(&(p, link)) else {
            return; // its close is on its way to the node
        };
        if self.conns[c].closed {
            return;
        }
        let to = if self.conns[c].ends[0] == (p, link) {
            1
        } else {
            0
        };
        let receiver = self.conns[c].ends[to].0;
        let mut at = self.arrival(p, false).max(self.arrival(receiver, true));
        let mut rto = Duration::from_secs(1);
        let mut retransmits = 0;
        while self.config.loss > 0.0 && self.rng.random_bool(self.config.loss.min(1.0)) {
            retransmits += 1;
            if retransmits > self.config.max_retransmits {
                let at = self.now + rto;
                self.link_loss(p, receiver, at);
                self.close_conn_at(c, at);
                return;
            }
            at += rto;
            rto = (rto * 2).min(Duration::from_secs(60));
        }
        let at = at.max(self.conns[c].last[to]);
        if retransmits > 0 {
            self.link_loss(p, receiver, at);
        }
        self.conns[c].last[to] = at;
        self.push(at, Event::Deliver { conn: c, to, msg });
    }
}

/// A blob of `size` bytes (its digest is never checked in the simulator).
fn blob(size: u64) -> BlobMeta {
    BlobMeta {
        index: 0,
        size,
        blake3: "0".repeat(64),
        name: None,
    }
}
