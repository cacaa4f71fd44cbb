//! The daemon: the one event loop of a peer.
//!
//! It owns the sans-IO [`Dispatcher`] (jobs this peer submitted), the
//! [`WorkerSlots`] (jobs it runs), the link table, and the handler tasks. It
//! `select!`s over its input channels and one timer, feeds the core, and
//! carries out the core's outputs, without ever awaiting a slow consumer:
//! every outward send is a `try_send` with a written overflow policy.
//!
//! Inputs, in priority order (local work before new remote work):
//! 1. shutdown, 2. handler completions, 3. link messages and closes,
//! 4. dial/answer results, 5. signal-server events, 6. local commands, 7. the timer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobmesh_core::{
    Dispatcher, DispatcherConfig, JobEnd, JobError, JobSpec, LeastLoaded, Output, StatsCoalescer,
    WorkerSlots,
};
use jobmesh_transport::rtc::{self, LinkEvent, LinkHandle, LinkId, RtcConfig, LINK_SEND_QUEUE};
use jobmesh_transport::signal::{self as signal_client, SignalConfig, SignalEvent};
use jobmesh_wire::dc::{DcMsg, JobId, Outcome, RejectReason, MAX_DC_MESSAGE, MAX_ERROR_LEN};
use jobmesh_wire::signal::{ClientMsg, Handshake, Hello, ServerMsg};
use jobmesh_wire::{Capability, PeerId, PeerInfo, Stats, PROTOCOL_VERSION};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::handlers::{self, Handler, UnknownCapability};

/// Capacity of the local command channel (submit, peers). Full: callers wait.
const COMMAND_QUEUE: usize = 256;
/// Capacity of the link-event channel. Full: link readers wait (SCTP pushes back).
const LINK_EVENT_QUEUE: usize = 1024;
/// Capacity of the signal-event channel. Full: the signal task stops reading.
const SIGNAL_EVENT_QUEUE: usize = 256;
/// Capacity of the signal outgoing channel. Full: the message is dropped
/// (a stats update is superseded by the next; a handshake fails its deadline).
const SIGNAL_OUT_QUEUE: usize = 256;
/// Capacity of the handler-completion channel. Full: handler tasks wait; there
/// are at most `slots` of them.
const DONE_QUEUE: usize = 256;

/// Everything a daemon needs to start.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// `ws://host:port/ws` of the signal-server.
    pub signal_url: String,
    /// Human name shown in the pool.
    pub name: String,
    /// Pool to join.
    pub pool: String,
    /// Capabilities to run (may be empty: submit only).
    pub capabilities: Vec<Capability>,
    /// Jobs run at once.
    pub slots: u32,
    /// WebRTC settings.
    pub rtc: RtcConfig,
    /// Dispatch settings.
    pub dispatcher: DispatcherConfig,
    /// On shutdown, how long running jobs get to finish.
    pub grace: Duration,
    /// Stats go to the signal-server at most this often.
    pub stats_interval: Duration,
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
            name: name.into(),
            pool: pool.into(),
            capabilities: Vec::new(),
            slots: 2,
            rtc: RtcConfig::default(),
            dispatcher: DispatcherConfig::default(),
            grace: Duration::from_secs(30),
            stats_interval: Duration::from_millis(250),
        }
    }
}

/// Why a daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A capability this build cannot run.
    #[error(transparent)]
    UnknownCapability(#[from] UnknownCapability),
    /// A bad name or pool.
    #[error("invalid configuration: {0}")]
    Invalid(String),
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
}

/// How a job submitted through [`PeerHandle::submit`] ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    /// The job.
    pub job_id: JobId,
    /// The worker that gave the outcome (or was last tried): id and name.
    pub worker: Option<(PeerId, String)>,
    /// Result value or error.
    pub result: Result<Value, JobError>,
    /// From submit to outcome.
    pub elapsed: Duration,
}

/// The pool as this daemon sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSnapshot {
    /// Whether the signal-server connection is up.
    pub connected: bool,
    /// This peer.
    pub me: PeerInfo,
    /// Everyone else, in id order.
    pub peers: Vec<PeerInfo>,
}

/// Counters a daemon keeps, for tests and observability. Monotonic.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `submit` messages received from other peers (accepted or not).
    pub submits_received: AtomicU64,
    /// Jobs this worker refused.
    pub rejected: AtomicU64,
    /// Data-channel messages that failed to decode.
    pub malformed_messages: AtomicU64,
    /// Data channels opened (dialled or answered).
    pub links_opened: AtomicU64,
}

impl Metrics {
    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

enum Command {
    Submit {
        spec: JobSpec,
        reply: oneshot::Sender<Result<JobReport, DaemonError>>,
    },
}

/// A running daemon. Dropping the handle does not stop it; call
/// [`shutdown`](Self::shutdown) (or cancel the token given to [`spawn`]).
#[derive(Debug, Clone)]
pub struct PeerHandle {
    id: PeerId,
    commands: mpsc::Sender<Command>,
    pool: watch::Receiver<PoolSnapshot>,
    shutdown: CancellationToken,
    stopped: CancellationToken,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Submit { spec, .. } => write!(f, "Submit({})", spec.job_id),
        }
    }
}

impl PeerHandle {
    /// This peer's id.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// Submits a job and waits for its outcome (bounded by `timeout`).
    pub async fn submit(
        &self,
        capability: Capability,
        input: Value,
        timeout: Duration,
    ) -> Result<JobReport, DaemonError> {
        let (reply, rx) = oneshot::channel();
        let spec = JobSpec {
            job_id: uuid::Uuid::new_v4(),
            capability,
            input,
            timeout,
        };
        self.commands
            .send(Command::Submit { spec, reply })
            .await
            .map_err(|_| DaemonError::Stopped)?;
        rx.await.map_err(|_| DaemonError::Stopped)?
    }

    /// The daemon's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The pool as this daemon sees it now.
    pub fn pool(&self) -> PoolSnapshot {
        self.pool.borrow().clone()
    }

    /// Waits until `pred` holds for the pool view, or `timeout` passes.
    pub async fn wait_pool(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&PoolSnapshot) -> bool,
    ) -> Result<PoolSnapshot, DaemonError> {
        let mut rx = self.pool.clone();
        let r = tokio::time::timeout(timeout, rx.wait_for(|s| pred(s))).await;
        match r {
            Ok(Ok(s)) => Ok(s.clone()),
            Ok(Err(_)) => Err(DaemonError::Stopped),
            Err(_) => Err(DaemonError::Timeout("the pool to reach the expected state")),
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

/// Starts a daemon on the current tokio runtime. It runs until `shutdown` is
/// cancelled (or [`PeerHandle::shutdown`] is called), then drains.
pub fn spawn(config: DaemonConfig, shutdown: CancellationToken) -> Result<PeerHandle, StartError> {
    let handlers = handlers::registry(&config.capabilities)?;
    let me = PeerId::random();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        peer_id: me,
        name: config.name.clone(),
        pool: config.pool.clone(),
        capabilities: config.capabilities.clone(),
        slots: config.slots,
    };
    // Validate name/pool with the same rules the server applies.
    let probe = jobmesh_wire::signal::encode(&ClientMsg::Hello(hello.clone()));
    ClientMsg::decode(probe.as_bytes()).map_err(|e| StartError::Invalid(e.to_string()))?;

    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (signal_tx, signal_rx) = mpsc::channel(SIGNAL_EVENT_QUEUE);
    let (signal_out, signal_out_rx) = mpsc::channel(SIGNAL_OUT_QUEUE);
    let (link_tx, link_rx) = mpsc::channel(LINK_EVENT_QUEUE);
    let (opened_tx, opened_rx) = mpsc::channel(LINK_EVENT_QUEUE);
    let (done_tx, done_rx) = mpsc::channel(DONE_QUEUE);
    let slots = WorkerSlots::new(config.capabilities.clone(), config.slots);
    let me_info = PeerInfo {
        id: me,
        name: config.name.clone(),
        capabilities: config.capabilities.clone(),
        stats: slots.stats(),
    };
    let (pool_tx, pool_rx) = watch::channel(PoolSnapshot {
        connected: false,
        me: me_info,
        peers: Vec::new(),
    });
    let stopped = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let tracker = TaskTracker::new();
    let signal_cancel = CancellationToken::new();

    let span = info_span!("peer", id = %me.short(), name = %config.name);
    tracker.spawn(
        signal_client::run(
            SignalConfig::new(config.signal_url.clone(), hello),
            signal_tx,
            signal_out_rx,
            signal_cancel.clone(),
        )
        .instrument(span.clone()),
    );

    let daemon = Daemon {
        me,
        dispatcher: Dispatcher::new(
            me,
            config.dispatcher.clone(),
            Box::new(LeastLoaded::starting_at(rand::random::<u16>().into())),
        ),
        slots,
        handlers,
        links: HashMap::new(),
        next_link_id: 0,
        waiters: HashMap::new(),
        running: HashMap::new(),
        signal_out,
        link_tx,
        opened_tx,
        done_tx,
        coalescer: StatsCoalescer::new(config.stats_interval),
        pool_tx,
        connected: false,
        tracker: tracker.clone(),
        jobs_cancel: CancellationToken::new(),
        draining: false,
        metrics: metrics.clone(),
        config,
    };
    let inputs = Inputs {
        commands: cmd_rx,
        signal: signal_rx,
        links: link_rx,
        opened: opened_rx,
        done: done_rx,
    };
    let stopped2 = stopped.clone();
    let shutdown2 = shutdown.clone();
    tokio::spawn(
        async move {
            daemon.run(inputs, shutdown2).await;
            signal_cancel.cancel();
            tracker.close();
            if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
                .await
                .is_err()
            {
                warn!("some tasks did not stop within 5 s of shutdown");
            }
            info!("stopped");
            stopped2.cancel();
        }
        .instrument(span),
    );
    Ok(PeerHandle {
        metrics,
        id: me,
        commands: cmd_tx,
        pool: pool_rx,
        shutdown,
        stopped,
    })
}

struct Inputs {
    commands: mpsc::Receiver<Command>,
    signal: mpsc::Receiver<SignalEvent>,
    links: mpsc::Receiver<LinkEvent>,
    opened: mpsc::Receiver<Opened>,
    done: mpsc::Receiver<JobDone>,
}

/// A dial or answer task's result.
struct Opened {
    peer: PeerId,
    link_id: LinkId,
    result: Result<LinkHandle, rtc::LinkError>,
}

/// A handler task's result.
struct JobDone {
    job_id: JobId,
    result: Result<Value, String>,
}

/// One entry of the link table. Dropping a `Connecting` aborts its task;
/// dropping an `Open` closes the link.
enum Link {
    Connecting {
        link_id: LinkId,
        /// Where the dialler waits for the remote's answer (None when answering).
        answer: Option<oneshot::Sender<String>>,
        /// Messages to send once open; at most `LINK_SEND_QUEUE`.
        pending: Vec<Vec<u8>>,
        _abort: DropGuard,
    },
    Open(LinkHandle),
}

impl Link {
    fn id(&self) -> LinkId {
        match self {
            Link::Connecting { link_id, .. } => *link_id,
            Link::Open(h) => h.link_id(),
        }
    }
}

struct Waiter {
    reply: oneshot::Sender<Result<JobReport, DaemonError>>,
    started: Instant,
}

struct Daemon {
    me: PeerId,
    config: DaemonConfig,
    dispatcher: Dispatcher,
    slots: WorkerSlots,
    handlers: HashMap<Capability, Arc<dyn Handler>>,
    links: HashMap<PeerId, Link>,
    next_link_id: LinkId,
    waiters: HashMap<JobId, Waiter>,
    /// Worker side: cancel tokens of running handler tasks.
    running: HashMap<JobId, CancellationToken>,
    signal_out: mpsc::Sender<ClientMsg>,
    link_tx: mpsc::Sender<LinkEvent>,
    opened_tx: mpsc::Sender<Opened>,
    done_tx: mpsc::Sender<JobDone>,
    coalescer: StatsCoalescer,
    pool_tx: watch::Sender<PoolSnapshot>,
    connected: bool,
    tracker: TaskTracker,
    /// Parent of every handler's token: cancelled when the grace period ends.
    jobs_cancel: CancellationToken,
    draining: bool,
    metrics: Arc<Metrics>,
}

impl Daemon {
    async fn run(mut self, mut inputs: Inputs, shutdown: CancellationToken) {
        let grace = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(grace);
        loop {
            let next = [
                self.dispatcher.poll_timeout(),
                self.coalescer.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let timer = async move {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !self.draining => {
                    info!(running = self.slots.running(), submitted = self.dispatcher.len(),
                        grace_s = self.config.grace.as_secs(), "shutting down: draining");
                    self.draining = true;
                    self.slots.drain();
                    grace.as_mut().reset((Instant::now() + self.config.grace).into());
                }
                () = &mut grace, if self.draining => {
                    warn!(running = self.slots.running(), "grace period over: cancelling jobs");
                    break;
                }
                Some(done) = inputs.done.recv() => self.on_job_done(done),
                Some(ev) = inputs.links.recv() => self.on_link_event(Instant::now(), ev),
                Some(op) = inputs.opened.recv() => self.on_opened(Instant::now(), op),
                Some(ev) = inputs.signal.recv() => self.on_signal(Instant::now(), ev),
                Some(cmd) = inputs.commands.recv() => self.on_command(Instant::now(), cmd),
                () = timer => {
                    let now = Instant::now();
                    self.dispatcher.handle_timeout(now);
                    if let Some(stats) = self.coalescer.poll(now) {
                        self.send_stats(stats);
                    }
                }
            }
            self.flush(Instant::now());
            if self.draining && self.slots.running() == 0 && self.dispatcher.is_empty() {
                info!("drained");
                break;
            }
        }
        self.jobs_cancel.cancel();
        for (_, w) in self.waiters.drain() {
            let _ = w.reply.send(Err(DaemonError::Stopped));
        }
        // Close every link after it has flushed what is queued (a result finished
        // during the drain, say), then the signal task closes the WebSocket and
        // the server announces our departure.
        let open = self.links.drain().filter_map(|(_, link)| match link {
            Link::Open(h) => Some(h.close_flushed()),
            Link::Connecting { .. } => None,
        });
        futures_util::future::join_all(open).await;
    }

    /// Carries out the dispatcher's outputs and publishes changed stats.
    fn flush(&mut self, now: Instant) {
        while let Some(out) = self.dispatcher.poll_output() {
            match out {
                Output::Send { to, msg } => self.send_to(now, to, &msg),
                Output::Finished(end) => self.finished(end),
            }
        }
        let mut stats = self.slots.stats();
        stats.queued = u32::try_from(self.dispatcher.queued()).unwrap_or(u32::MAX);
        if let Some(s) = self.coalescer.update(now, stats) {
            self.send_stats(s);
        }
    }

    fn send_stats(&mut self, stats: Stats) {
        // Overflow: dropped; the coalescer sends the latest value on the next change.
        let _ = self.signal_out.try_send(ClientMsg::Stats { stats });
        self.pool_tx.send_modify(|s| s.me.stats = stats);
    }

    fn finished(&mut self, end: JobEnd) {
        let worker = end.worker.map(|w| {
            let name = self
                .dispatcher
                .pool()
                .get(&w)
                .map_or_else(|| "?".to_owned(), |p| p.name.clone());
            (w, name)
        });
        let Some(waiter) = self.waiters.remove(&end.job_id) else {
            return;
        };
        let elapsed = waiter.started.elapsed();
        match &end.result {
            Ok(_) => info!(job_id = %end.job_id, worker = ?worker.as_ref().map(|w| &w.1),
                elapsed_ms = elapsed.as_millis() as u64, "job completed"),
            Err(e) => info!(job_id = %end.job_id, worker = ?worker.as_ref().map(|w| &w.1),
                error = %e, "job ended without a result"),
        }
        // The caller may have gone away; nothing to do then.
        let _ = waiter.reply.send(Ok(JobReport {
            job_id: end.job_id,
            worker,
            result: end.result,
            elapsed,
        }));
    }

    fn on_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Submit { spec, reply } => {
                if self.draining {
                    let _ = reply.send(Err(DaemonError::Draining));
                    return;
                }
                let job_id = spec.job_id;
                info!(%job_id, capability = %spec.capability, "job submitted");
                self.waiters.insert(
                    job_id,
                    Waiter {
                        reply,
                        started: Instant::now(),
                    },
                );
                if let Err(e) = self.dispatcher.submit(now, spec) {
                    self.finished(JobEnd {
                        job_id,
                        worker: None,
                        result: Err(e),
                        attempts: 0,
                    });
                }
            }
        }
    }

    fn on_signal(&mut self, now: Instant, ev: SignalEvent) {
        match ev {
            SignalEvent::Connected => {
                self.connected = true;
                // Re-announce our stats to the (possibly new) server.
                self.coalescer.reset();
            }
            SignalEvent::Disconnected { .. } => {
                // Keep the pool view and the links: jobs keep flowing peer to peer.
                self.connected = false;
            }
            SignalEvent::Message(ServerMsg::Relayed { from, signal }) => {
                self.on_handshake(now, from, signal);
            }
            SignalEvent::Message(msg) => self.dispatcher.handle_signal(now, &msg),
        }
        let peers: Vec<PeerInfo> = self.dispatcher.pool().peers().cloned().collect();
        let connected = self.connected;
        self.pool_tx.send_if_modified(|s| {
            let changed = s.peers != peers || s.connected != connected;
            s.peers = peers;
            s.connected = connected;
            changed
        });
    }

    fn on_handshake(&mut self, now: Instant, from: PeerId, signal: Handshake) {
        match signal {
            Handshake::Offer { sdp } => {
                let pending = match self.links.remove(&from) {
                    Some(Link::Connecting {
                        answer: Some(answer),
                        link_id,
                        pending,
                        _abort,
                    }) if self.me < from => {
                        // Both dialled at once: the lower id's offer wins, so ours stands.
                        debug!(peer = %from.short(), "offer collision: keeping our offer");
                        self.links.insert(
                            from,
                            Link::Connecting {
                                link_id,
                                answer: Some(answer),
                                pending,
                                _abort,
                            },
                        );
                        return;
                    }
                    Some(Link::Connecting { pending, .. }) => pending,
                    Some(Link::Open(_)) => {
                        // The remote lost the link and dials again: ours is dead too.
                        self.dispatcher.handle_link_closed(now, from);
                        self.cancel_jobs_from(from);
                        Vec::new()
                    }
                    None => Vec::new(),
                };
                self.start_link(from, Some(sdp), pending);
            }
            Handshake::Answer { sdp } => match self.links.get_mut(&from) {
                Some(Link::Connecting { answer, .. }) => match answer.take() {
                    Some(tx) => {
                        let _ = tx.send(sdp);
                    }
                    None => debug!(peer = %from.short(), "unexpected answer ignored"),
                },
                _ => debug!(peer = %from.short(), "stale answer ignored"),
            },
            Handshake::Candidate { .. } => {
                // Offers and answers carry every candidate (non-trickle).
                debug!(peer = %from.short(), "trickled candidate ignored");
            }
        }
    }

    /// Starts dialling `peer` (no offer) or answering its `offer`.
    fn start_link(&mut self, peer: PeerId, offer: Option<String>, pending: Vec<Vec<u8>>) {
        self.next_link_id += 1;
        let link_id = self.next_link_id;
        let abort = CancellationToken::new();
        let signal_out = self.signal_out.clone();
        // Overflow: the handshake message is dropped and the dial fails its deadline.
        let relay = move |signal| {
            signal_out
                .try_send(ClientMsg::Relay { to: peer, signal })
                .is_ok()
        };
        let rtc_config = self.config.rtc.clone();
        let events = self.link_tx.clone();
        let opened = self.opened_tx.clone();
        let (answer_tx, answer_rx) = oneshot::channel();
        let dialling = offer.is_none();
        let task_abort = abort.clone();
        self.tracker.spawn(
            async move {
                let connect = async {
                    match offer {
                        None => {
                            rtc::dial(&rtc_config, peer, link_id, relay, answer_rx, events).await
                        }
                        Some(sdp) => {
                            rtc::answer(&rtc_config, peer, link_id, sdp, relay, events).await
                        }
                    }
                };
                let result = tokio::select! {
                    biased;
                    () = task_abort.cancelled() => return,
                    r = connect => r,
                };
                // Overflow: waits; the daemon drains this channel every loop.
                let _ = opened
                    .send(Opened {
                        peer,
                        link_id,
                        result,
                    })
                    .await;
            }
            .instrument(info_span!("connect", peer = %peer.short(), link_id, dialling)),
        );
        self.links.insert(
            peer,
            Link::Connecting {
                link_id,
                answer: dialling.then_some(answer_tx),
                pending,
                _abort: abort.drop_guard(),
            },
        );
    }

    fn on_opened(&mut self, now: Instant, op: Opened) {
        if self.links.get(&op.peer).map(Link::id) != Some(op.link_id) {
            // Superseded (collision or re-dial): dropping the handle closes it.
            return;
        }
        match op.result {
            Ok(handle) => {
                info!(peer = %op.peer.short(), link_id = op.link_id, "data channel open");
                Metrics::bump(&self.metrics.links_opened);
                let pending = match self.links.insert(op.peer, Link::Open(handle)) {
                    Some(Link::Connecting { pending, .. }) => pending,
                    _ => Vec::new(),
                };
                for data in pending {
                    self.send_bytes(now, op.peer, data);
                }
            }
            Err(e) => {
                warn!(peer = %op.peer.short(), error = %e, "could not open a data channel");
                self.drop_link(now, op.peer);
            }
        }
    }

    fn on_link_event(&mut self, now: Instant, ev: LinkEvent) {
        match ev {
            LinkEvent::Message {
                peer,
                link_id,
                data,
            } => {
                if self.links.get(&peer).map(Link::id) == Some(link_id) {
                    self.on_dc_bytes(now, peer, &data);
                }
            }
            LinkEvent::Closed { peer, link_id } => {
                if self.links.get(&peer).map(Link::id) == Some(link_id) {
                    info!(peer = %peer.short(), link_id, "data channel closed");
                    self.drop_link(now, peer);
                }
            }
        }
    }

    /// Forgets the link to `peer`: its jobs here are lost, jobs from it cancelled.
    fn drop_link(&mut self, now: Instant, peer: PeerId) {
        self.links.remove(&peer);
        self.dispatcher.handle_link_closed(now, peer);
        self.cancel_jobs_from(peer);
    }

    fn cancel_jobs_from(&mut self, peer: PeerId) {
        for (job_id, token) in &self.running {
            if self.slots.submitter(job_id) == Some(peer) {
                token.cancel();
            }
        }
    }

    fn send_to(&mut self, now: Instant, peer: PeerId, msg: &DcMsg) {
        self.send_bytes(now, peer, msg.encode());
    }

    fn send_bytes(&mut self, now: Instant, peer: PeerId, data: Vec<u8>) {
        match self.links.get_mut(&peer) {
            Some(Link::Open(h)) => {
                if let Err(e) = h.try_send(data) {
                    // Overflow policy: a peer that does not drain its link is dropped.
                    warn!(peer = %peer.short(), error = %e, "cannot send; dropping the link");
                    self.drop_link(now, peer);
                }
            }
            Some(Link::Connecting { pending, .. }) => {
                if pending.len() >= LINK_SEND_QUEUE {
                    warn!(peer = %peer.short(), "too many messages waiting for the link; dropping it");
                    self.drop_link(now, peer);
                } else {
                    pending.push(data);
                }
            }
            None => self.start_link(peer, None, vec![data]),
        }
    }

    fn on_dc_bytes(&mut self, now: Instant, peer: PeerId, data: &[u8]) {
        let msg = match DcMsg::decode(data) {
            Ok(m) => m,
            Err(e) => {
                Metrics::bump(&self.metrics.malformed_messages);
                warn!(peer = %peer.short(), error = %e, "malformed data-channel message");
                let reply = DcMsg::Error {
                    job_id: DcMsg::peek_job_id(data),
                    message: e.to_string(),
                };
                self.send_to(now, peer, &reply);
                return;
            }
        };
        match msg {
            DcMsg::Submit {
                job_id,
                capability,
                input,
                timeout_ms,
            } => self.on_submit(now, peer, job_id, capability, input, timeout_ms),
            DcMsg::Cancel { job_id } => {
                if self.slots.submitter(&job_id) == Some(peer) {
                    if let Some(token) = self.running.get(&job_id) {
                        info!(%job_id, "job cancelled by its submitter");
                        token.cancel();
                    }
                }
            }
            DcMsg::Error {
                job_id: None,
                message,
            } => {
                warn!(peer = %peer.short(), %message, "peer could not read our message");
            }
            other => self.dispatcher.handle_dc(now, peer, &other),
        }
    }

    fn on_submit(
        &mut self,
        now: Instant,
        peer: PeerId,
        job_id: JobId,
        capability: Capability,
        input: Value,
        timeout_ms: u64,
    ) {
        Metrics::bump(&self.metrics.submits_received);
        let reject = |reason, message: String| DcMsg::Rejected {
            job_id,
            reason,
            message,
        };
        if let Some(Err(why)) = self.handlers.get(&capability).map(|h| h.validate(&input)) {
            Metrics::bump(&self.metrics.rejected);
            self.send_to(now, peer, &reject(RejectReason::BadInput, why));
            return;
        }
        if let Err((reason, why)) = self.slots.offer(peer, job_id, &capability) {
            debug!(%job_id, ?reason, "job rejected");
            Metrics::bump(&self.metrics.rejected);
            self.send_to(now, peer, &reject(reason, why));
            return;
        }
        let Some(handler) = self.handlers.get(&capability).cloned() else {
            // Unreachable: WorkerSlots only admits capabilities we have handlers for.
            let _ = self.slots.finish(&job_id, false);
            return;
        };
        self.send_to(now, peer, &DcMsg::Accepted { job_id });
        let token = self.jobs_cancel.child_token();
        self.running.insert(job_id, token.clone());
        let done = self.done_tx.clone();
        let timeout = Duration::from_millis(timeout_ms);
        self.tracker.spawn(
            async move {
                info!("job started");
                let result =
                    match tokio::time::timeout(timeout, handler.run(input, token.clone())).await {
                        Ok(r) => r.map_err(|e| e.0),
                        Err(_) => {
                            token.cancel();
                            Err(format!("timed out on the worker after {timeout_ms} ms"))
                        }
                    };
                // Overflow: waits; at most `slots` handler tasks exist.
                let _ = done.send(JobDone { job_id, result }).await;
            }
            .instrument(info_span!("job", %job_id, from = %peer.short(), %capability)),
        );
    }

    fn on_job_done(&mut self, done: JobDone) {
        self.running.remove(&done.job_id);
        let Some(from) = self.slots.finish(&done.job_id, done.result.is_ok()) else {
            return;
        };
        let outcome = match done.result {
            Ok(value) => Outcome::Ok { value },
            Err(message) => Outcome::Err {
                message: jobmesh_wire::truncate(&message, MAX_ERROR_LEN),
            },
        };
        info!(job_id = %done.job_id, ok = matches!(outcome, Outcome::Ok { .. }), "job finished");
        let mut data = DcMsg::Result {
            job_id: done.job_id,
            outcome,
        }
        .encode();
        if data.len() > MAX_DC_MESSAGE {
            let too_big = Outcome::Err {
                message: format!(
                    "the result ({} bytes) does not fit in one data-channel message ({MAX_DC_MESSAGE} bytes)",
                    data.len()
                ),
            };
            data = DcMsg::Result {
                job_id: done.job_id,
                outcome: too_big,
            }
            .encode();
        }
        if self.links.contains_key(&from) {
            self.send_bytes(Instant::now(), from, data);
        } else {
            // No link to the submitter any more: it has re-dispatched the job.
            warn!(job_id = %done.job_id, "submitter gone; result dropped");
        }
    }
}
