//! The daemon: the driver of a peer's sans-IO [`Node`].
//!
//! The [`Node`] decides (both cores, self-dispatch, the link table, blob
//! transfer sets); this loop `select!`s over its input channels and one
//! timer, turns what it learns into [`NodeInput`]s, and carries out the
//! [`NodeOutput`]s without ever awaiting a slow consumer: every outward send
//! is a `try_send` with a written overflow policy. It keeps handles (link
//! connections, handler tasks, receivers and uploads, spool files) keyed by
//! the node's ids. Beside it: `start` (the channels and tasks a daemon
//! starts with), `links` (connections), `handler_tasks`, `blob_io` (the
//! bytes of transfers); the journal's writes go through `store`.
//!
//! Inputs, in priority order (local work before new remote work): shutdown;
//! handler progress; handler completions; upload ends; link messages and
//! closes; dial/answer results; signal-server events; local commands; the
//! timer (the node's deadline, the journal batch).

mod blob_io;
mod handler_tasks;
mod links;
mod start;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobmesh_core::{EventKind, JobEnd, JobEvent};
use jobmesh_node::{LinkId, Node, NodeInput, NodeOutput};
use jobmesh_transport::rtc::{self, LinkEvent, LinkHandle};
use jobmesh_transport::signal::SignalEvent;
use jobmesh_wire::blob::{Direction, Frame};
use jobmesh_wire::dc::{DcMsg, JobId, Progress};
use jobmesh_wire::signal::{ClientMsg, IceServer, ServerMsg};
use jobmesh_wire::PeerId;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::api::CapabilityChange;
use crate::api::{
    Command, DaemonConfig, DaemonError, JobReport, Metrics, PoolSnapshot, QueuePlace,
};
use crate::blobs::{MemoryBudget, Prepared, ReceivedBlob, Receiver, Spool};
use crate::handlers::{HandlerError, SharedHandlers};
use crate::jobs::{Clock, JobTable, WatchEvent};
use crate::store::{Resume, Steps};
use blob_io::TransferDone;
use jobmesh_wire::Capability;
pub use start::{spawn, spawn_with};

struct Inputs {
    commands: mpsc::Receiver<Command>,
    signal: mpsc::Receiver<SignalEvent>,
    links: mpsc::Receiver<LinkEvent>,
    opened: mpsc::Receiver<Connected>,
    done: mpsc::Receiver<JobDone>,
    progress: mpsc::Receiver<(JobId, Progress)>,
    transfers: blob_io::TransferRx,
    /// Pieces of handed-over files. Overflow: their readers wait.
    file_reads: mpsc::Receiver<crate::handover::FileRead>,
}

/// A dial or answer task's result.
struct Connected {
    peer: PeerId,
    link_id: LinkId,
    result: Result<LinkHandle, rtc::LinkError>,
    /// From the start of the dial or answer to this result.
    took: std::time::Duration,
}

/// A handler task's result.
struct JobDone {
    job_id: JobId,
    result: Result<Value, HandlerError>,
    /// Blobs the handler attached, described and ready to send.
    outputs: Vec<Prepared>,
}

/// The connection behind one of the node's links. Dropping a `Connecting`
/// stops its dial or answer (and closes its peer connection); dropping an
/// `Open` closes the link. Removed only when the node says `CloseLink`.
enum Connection {
    Connecting {
        /// Where the dialler waits for the remote's answer (None when answering).
        answer: Option<oneshot::Sender<String>>,
        _abort: DropGuard,
    },
    Open(LinkHandle),
}

struct Waiter {
    reply: oneshot::Sender<Result<JobReport, DaemonError>>,
    /// Overflow: try_send; a full queue drops the event (the outcome still
    /// arrives). None when the caller does not listen.
    events: Option<mpsc::Sender<JobEvent>>,
    started: Instant,
    /// Given back before the caller hears the outcome, so that it may submit
    /// again at once.
    place: QueuePlace,
}

struct Daemon {
    me: PeerId,
    /// The journal's batch of job steps, when the daemon has a data dir.
    journal: Option<Steps>,
    config: DaemonConfig,
    /// Every decision of this peer.
    node: Node,
    /// By capability; the node's input checks read the same map.
    handlers: SharedHandlers,
    /// The pool credential's grant, if the pool is closed: what capabilities
    /// may be added.
    grant: Option<jobmesh_trust::Grant>,
    /// What this peer runs, as the signal client announces it.
    capabilities: watch::Sender<Vec<Capability>>,
    /// The connections of the node's links.
    links: HashMap<LinkId, Connection>,
    waiters: HashMap<JobId, Waiter>,
    /// Worker side: cancel tokens of running handler tasks.
    running: HashMap<JobId, CancellationToken>,
    signal_out: mpsc::Sender<ClientMsg>,
    link_tx: mpsc::Sender<LinkEvent>,
    opened_tx: mpsc::Sender<Connected>,
    done_tx: mpsc::Sender<JobDone>,
    progress_tx: mpsc::Sender<(JobId, Progress)>,
    pool_tx: watch::Sender<PoolSnapshot>,
    /// Overflow: a lagging subscriber misses events; sending never waits.
    watch: broadcast::Sender<WatchEvent>,
    /// Observed job events of the pool, to `observe` subscribers.
    observed: broadcast::Sender<crate::api::ObservedBatch>,
    /// Whether the node observes the pool (while anyone subscribes).
    observing: bool,
    table: JobTable,
    clock: Clock,
    connected: bool,
    tracker: TaskTracker,
    /// Parent of every handler's token: cancelled when the grace period ends.
    jobs_cancel: CancellationToken,
    draining: bool,
    metrics: Arc<Metrics>,
    /// Prometheus job metrics, counted as events pass.
    telemetry: Arc<crate::telemetry::Telemetry>,
    /// Where received blobs and handlers' work dirs live.
    spool: Arc<Spool>,
    /// Bytes of blobs held in memory while received.
    budget: Arc<MemoryBudget>,
    /// Submitter side: input blobs of our jobs, until they end.
    job_blobs: HashMap<JobId, Arc<Vec<Prepared>>>,
    /// Sets of blobs being received (a job's inputs, a result's), by job
    /// and direction, while the node expects them.
    receivers: HashMap<(JobId, Direction), Receiver>,
    /// Upload tasks, by job and direction; dropping a guard stops one.
    sending: HashMap<(JobId, Direction), DropGuard>,
    /// Worker side: the blobs handlers attached to their results, until the
    /// node forgets the result (delivered, expired, failed).
    outputs: HashMap<JobId, Arc<Vec<Prepared>>>,
    /// Submitter side: blobs of results, with their attempt, until the job's
    /// end is reported (they belong to it only if that attempt completed it).
    results: HashMap<JobId, (u32, Vec<ReceivedBlob>)>,
    /// Per link: blob transfers sent at once (`BlobLimits::transfers_per_link`).
    link_permits: HashMap<LinkId, Arc<Semaphore>>,
    /// Upload completions. Overflow: the upload task waits.
    transfer_tx: mpsc::Sender<TransferDone>,
    /// The same-host handover directory, if usable.
    handover: Option<Arc<crate::handover::HandoverDir>>,
    /// Files handed over, by job and direction, until the attempt ends on
    /// this side (input) or the node forgets the result (output).
    handed: HashMap<(JobId, Direction), crate::handover::Handed>,
    /// Readers of handed-over files queue their pieces here.
    file_read_tx: mpsc::Sender<crate::handover::FileRead>,
}

impl Daemon {
    async fn run(mut self, mut inputs: Inputs, shutdown: CancellationToken) {
        let grace = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
        tokio::pin!(grace);
        // The node hears of this peer's worker side and its stats.
        self.feed(Instant::now(), NodeInput::Timeout);
        self.after_turn(Instant::now());
        loop {
            let next = [
                self.node.poll_timeout(),
                // Journal changes gathered for a batch.
                self.journal.as_ref().and_then(Steps::deadline),
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
                    info!(running = self.node.worker().running(), submitted = self.node.dispatcher().len(),
                        grace_s = self.config.grace.as_secs(), "shutting down: draining");
                    self.draining = true;
                    self.feed(Instant::now(), NodeInput::Drain);
                    grace.as_mut().reset((Instant::now() + self.config.grace).into());
                }
                () = &mut grace, if self.draining => {
                    warn!(running = self.node.worker().running(), "grace period over: cancelling jobs");
                    break;
                }
                // Progress before completions: a handler's last report was
                // sent before its result, and must reach the submitter first.
                Some((job_id, progress)) = inputs.progress.recv() => {
                    self.feed(Instant::now(), NodeInput::HandlerProgress { job_id, progress });
                }
                Some(done) = inputs.done.recv() => self.on_job_done(Instant::now(), done),
                Some(t) = inputs.transfers.recv() => self.on_transfer_done(Instant::now(), t),
                Some(r) = inputs.file_reads.recv() => self.on_file_read(Instant::now(), r),
                Some(ev) = inputs.links.recv() => self.on_link_event(Instant::now(), ev),
                Some(op) = inputs.opened.recv() => self.on_opened(Instant::now(), op),
                Some(ev) = inputs.signal.recv() => self.on_signal(Instant::now(), ev),
                Some(cmd) = inputs.commands.recv() => self.on_command(Instant::now(), cmd),
                () = timer => {
                    let now = Instant::now();
                    self.feed(now, NodeInput::Timeout);
                }
            }
            self.after_turn(Instant::now());
            if self.draining && self.node.is_idle() {
                info!("drained");
                break;
            }
        }
        self.jobs_cancel.cancel();
        // Without a journal, jobs of ours still queued or out on other workers
        // end `cancelled` (the cancel messages go out with the outputs
        // below). With one they stay unfinished in it, and the workers keep
        // running them (for their orphan grace, results kept) so that the
        // next start re-attaches to them.
        let now = Instant::now();
        if self.journal.is_none() {
            for job_id in self.node.dispatcher().job_ids() {
                self.feed(now, NodeInput::Cancel(job_id));
            }
        }
        self.apply_outputs(now);
        for (_, w) in self.waiters.drain() {
            let _ = w.reply.send(Err(DaemonError::Stopped));
        }
        if let Some(steps) = self.journal.take() {
            steps.close().await;
        }
        // Close every link after it has flushed what is queued (a result finished
        // during the drain, say), then the signal task closes the WebSocket and
        // the server announces our departure.
        let open = self.links.drain().filter_map(|(_, link)| match link {
            Connection::Open(h) => Some(h.close_flushed()),
            Connection::Connecting { .. } => None,
        });
        futures_util::future::join_all(open).await;
    }

    /// Hands the node one fact; its outputs are carried out at the end of
    /// the loop's turn (`after_turn`), in order. (Only a submit or resume
    /// can be refused, and those go through `admit`.)
    fn feed(&mut self, now: Instant, input: NodeInput<'_>) {
        let _ = self.node.handle_input(now, input);
    }

    /// Carries out the node's outputs, then publishes this peer's stats and
    /// counters and hands due journal changes over. Counters go out before
    /// the outputs too: whoever sees an effect (a refusal sent, say) finds it
    /// counted.
    fn after_turn(&mut self, now: Instant) {
        self.publish_counters();
        self.apply_outputs(now);
        self.publish_counters();
        let stats = self.node.stats().clone();
        // This peer's own view is exact; only what goes to the pool is coalesced.
        self.pool_tx.send_if_modified(|s| {
            let changed = s.me.stats != stats;
            if changed {
                s.me.stats = stats;
            }
            changed
        });
        if let Some(steps) = &mut self.journal {
            steps.flush(now);
        }
    }

    fn publish_counters(&self) {
        let (m, c, d) = (&self.metrics, self.node.counters(), self.node.dispatcher());
        Metrics::set(&m.submits_received, c.submits_received);
        Metrics::set(&m.rejected, c.rejected);
        Metrics::set(&m.malformed_messages, c.malformed);
        Metrics::set(&m.links_refused, c.links_refused);
        Metrics::set(&m.key_changes, c.key_changes);
        Metrics::set(&m.stale_messages, d.stale_messages());
        Metrics::set(&m.leases_expired, d.leases_expired());
    }

    /// Carries out the node's outputs until it has none (an effect may feed
    /// it again: a spool that cannot be created ends the job at once, say).
    fn apply_outputs(&mut self, now: Instant) {
        while let Some(out) = self.node.poll_output() {
            match out {
                NodeOutput::Send { to, link, msg } => self.send_bytes(now, to, link, msg.encode()),
                NodeOutput::Dial { peer, link, tag } => self.start_link(peer, link, tag, None),
                NodeOutput::Answer {
                    peer,
                    link,
                    tag,
                    sdp,
                } => self.start_link(peer, link, tag, Some(sdp)),
                NodeOutput::DeliverAnswer { link, sdp } => self.deliver_answer(link, sdp),
                NodeOutput::CloseLink { link, .. } => {
                    // Dropping the connection closes it, or stops its dial.
                    if let Some(Connection::Open(_)) = self.links.remove(&link) {
                        self.telemetry.link_closed();
                        self.publish_links();
                    }
                    self.link_permits.remove(&link);
                }
                NodeOutput::StartHandler {
                    job_id,
                    capability,
                    input,
                    timeout,
                    inputs,
                } => {
                    let inputs = self.handler_inputs(job_id, inputs);
                    self.launch(job_id, capability, input, timeout, inputs);
                }
                NodeOutput::CancelHandler { job_id } => {
                    // It ends when its handler returns (or has returned:
                    // its completion is on its way).
                    if let Some(token) = self.running.get(&job_id) {
                        info!(%job_id, "cancelling the job's handler");
                        token.cancel();
                    }
                }
                NodeOutput::ForgetResult { job_id } => {
                    self.outputs.remove(&job_id);
                    self.handed.remove(&(job_id, Direction::Output));
                }
                NodeOutput::ReceiveBlobs {
                    job_id,
                    direction,
                    blobs,
                    ..
                } => self.receive_blobs(now, job_id, direction, blobs),
                NodeOutput::DropBlobs { job_id, direction } => {
                    self.receivers.remove(&(job_id, direction));
                }
                NodeOutput::SendBlobs {
                    job_id,
                    direction,
                    to,
                    link,
                    attempt,
                    handover,
                } => self.send_blobs(job_id, direction, to, link, attempt, handover),
                NodeOutput::ReadBlobFiles {
                    job_id,
                    direction,
                    from,
                    attempt,
                    files,
                } => self.read_blob_files(job_id, direction, from, attempt, files),
                NodeOutput::StopSending { job_id, direction } => {
                    self.sending.remove(&(job_id, direction));
                    self.handed.remove(&(job_id, direction));
                }
                NodeOutput::ResultBlobs { job_id, attempt } => self.result_blobs(job_id, attempt),
                NodeOutput::LocalResultBlobs { job_id, attempt } => {
                    self.local_result_blobs(job_id, attempt);
                }
                NodeOutput::Event(e) => self.on_event(e),
                NodeOutput::Finished(end) => self.finished(now, end),
                NodeOutput::Journal(op) => {
                    if let Some(steps) = &mut self.journal {
                        steps.node_op(now, op);
                    }
                }
                NodeOutput::Observed {
                    worker,
                    events,
                    dropped,
                } => {
                    // A lagging subscriber misses batches; sending never waits.
                    let sent = self.observed.send(crate::api::ObservedBatch {
                        worker,
                        events,
                        dropped,
                    });
                    if sent.is_err() && self.observing {
                        // Nobody listens any more (a lost nudge): stop.
                        self.observing = false;
                        self.feed(now, NodeInput::Observe(false));
                    }
                }
                NodeOutput::PublishStats(stats) => {
                    // Overflow: dropped; the node's coalescer sends the latest
                    // value on the next change.
                    let _ = self.signal_out.try_send(ClientMsg::Stats { stats });
                }
            }
        }
    }

    fn on_event(&mut self, e: JobEvent) {
        self.table.apply(&e, &self.clock);
        self.telemetry.record(&e, &self.table);
        if self.watch.receiver_count() > 0 {
            // A lagging subscriber misses events; sending never waits.
            let _ = self.watch.send(WatchEvent::from_event(&e, &self.clock));
        }
        if let Some(events) = self.waiters.get(&e.job_id).and_then(|w| w.events.as_ref()) {
            // Overflow: the event is dropped; the outcome still arrives.
            let _ = events.try_send(e.clone());
        }
        if let EventKind::Dispatched { worker, attempt } = &e.kind {
            debug!(job_id = %e.job_id, worker = %worker.short(), attempt, "job dispatched");
        }
    }

    fn finished(&mut self, now: Instant, end: JobEnd) {
        let worker = end.worker.map(|w| {
            let name = if w == self.me {
                self.config.name.clone()
            } else {
                self.node
                    .pool()
                    .get(&w)
                    .map_or_else(|| "?".to_owned(), |p| p.name.clone())
            };
            (w, name)
        });
        let completed_by = end
            .attempts
            .last()
            .filter(|_| end.result.is_ok())
            .map(|a| a.number);
        self.job_blobs.remove(&end.job_id);
        let blobs = self
            .results
            .remove(&end.job_id)
            .filter(|(attempt, _)| Some(*attempt) == completed_by)
            .map(|(_, blobs)| blobs)
            .unwrap_or_default();
        // A resumed or detached job has no caller waiting (or one that left).
        let waiter = self.waiters.remove(&end.job_id);
        let elapsed = waiter
            .as_ref()
            .map_or_else(|| end.submitted_at.elapsed(), |w| w.started.elapsed());
        match &end.result {
            Ok(_) => info!(job_id = %end.job_id, worker = ?worker.as_ref().map(|w| &w.1),
                attempts = end.attempts.len(), elapsed_ms = elapsed.as_millis() as u64, "job completed"),
            Err(e) => info!(job_id = %end.job_id, worker = ?worker.as_ref().map(|w| &w.1),
                attempts = end.attempts.len(), error = %e, "job ended without a result"),
        }
        let report = JobReport {
            job_id: end.job_id,
            worker,
            result: end.result,
            blobs,
            attempts: end.attempts,
            elapsed,
        };
        let waiting = waiter.as_ref().is_some_and(|w| !w.reply.is_closed());
        if let Some(keep) = self
            .journal
            .as_mut()
            .and_then(|steps| steps.end(now, &report, waiting))
        {
            self.tracker.spawn(keep);
        }
        if let Some(Waiter { reply, place, .. }) = waiter {
            drop(place);
            // The caller may have gone away; nothing to do then.
            let _ = reply.send(Ok(report));
        }
    }

    /// Takes a journaled job that had not ended back into the node.
    fn resume(&mut self, now: Instant, r: Resume) {
        let job_id = r.spec.job_id;
        let blobs = r.blobs.iter().map(|b| b.meta.clone()).collect();
        let resume = NodeInput::Resume {
            spec: r.spec,
            blobs,
            attempts_before: r.attempts_before,
            held_by: r.held_by,
        };
        self.admit(now, job_id, r.blobs, resume);
    }

    /// Hands a job (`Submit` or `Resume`) to the node and keeps its input
    /// blobs; a refusal (queue full, too large, ...) ends it at once.
    fn admit(&mut self, now: Instant, job_id: JobId, blobs: Vec<Prepared>, input: NodeInput<'_>) {
        if !blobs.is_empty() {
            self.job_blobs.insert(job_id, Arc::new(blobs));
        }
        if let Err(e) = self.node.handle_input(now, input) {
            self.job_blobs.remove(&job_id);
            self.finished(
                now,
                JobEnd {
                    job_id,
                    worker: None,
                    result: Err(e),
                    attempts: Vec::new(),
                    submitted_at: now,
                },
            );
        }
    }

    fn on_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Submit {
                spec,
                blobs,
                events,
                reply,
                place,
            } => {
                // With a journal the job is already on disk and its caller
                // may hold its id (a detached submit answers before this
                // point): a draining daemon keeps it like the jobs it already
                // holds, to run now or resume at the next start.
                if self.draining && self.journal.is_none() {
                    let _ = reply.send(Err(DaemonError::Draining));
                    return;
                }
                let job_id = spec.job_id;
                info!(%job_id, capability = %spec.capability, priority = spec.options.priority,
                    blobs = blobs.len(), "job submitted");
                self.waiters.insert(
                    job_id,
                    Waiter {
                        reply,
                        events,
                        started: Instant::now(),
                        place,
                    },
                );
                let metas = blobs.iter().map(|b| b.meta.clone()).collect();
                let submit = NodeInput::Submit { spec, blobs: metas };
                self.admit(now, job_id, blobs, submit);
            }
            Command::Cancel { job_id, reply } => {
                let live = self.node.dispatcher().state(&job_id).is_some();
                self.feed(now, NodeInput::Cancel(job_id));
                let _ = reply.send(live);
            }
            Command::Jobs { reply } => {
                let _ = reply.send(self.table.list());
            }
            Command::Connect { peer, reply } => {
                // A stale error must not answer for the dial about to start.
                self.pool_tx
                    .send_if_modified(|s| s.link_errors.remove(&peer).is_some());
                self.feed(now, NodeInput::Connect(peer));
                let _ = reply.send(());
            }
            Command::Network { reply } => {
                let rtc = &self.config.rtc;
                let ice_override = !rtc.ice_servers.is_empty();
                let ice_servers = if ice_override {
                    vec![IceServer {
                        urls: rtc.ice_servers.clone(),
                        username: None,
                        credential: None,
                    }]
                } else {
                    rtc.offered_ice_servers.clone()
                };
                let pool = self.pool_tx.borrow();
                let _ = reply.send(crate::api::NetworkReport {
                    signal_url: self.config.signal_url.clone(),
                    signal_fallbacks: self.config.signal_fallbacks.clone(),
                    ca: self.config.ca.clone(),
                    connected: self.connected,
                    refused: pool.refused.clone(),
                    ice_servers,
                    ice_override,
                });
            }
            Command::Scale { slots, reply } => {
                let before = self.node.worker().stats().slots;
                self.feed(now, NodeInput::SetSlots(slots));
                info!(slots, before, "scaled");
                let _ = reply.send(before);
            }
            Command::Capability { change, reply } => {
                let _ = reply.send(self.change_capability(now, change));
            }
            Command::Observe => {
                let wanted = self.observed.receiver_count() > 0;
                if wanted != self.observing {
                    self.observing = wanted;
                    self.feed(now, NodeInput::Observe(wanted));
                }
            }
        }
    }

    /// Adds or removes a capability: the handler map, the node (admission
    /// and self-dispatch), the signal-server (through the signal client)
    /// and this peer's own view. Returns the capabilities now.
    fn change_capability(
        &mut self,
        now: Instant,
        change: CapabilityChange,
    ) -> Result<Vec<Capability>, DaemonError> {
        let mut capabilities = self.capabilities.borrow().clone();
        match change {
            CapabilityChange::Add(capability, handler) => {
                if self.node.worker().stats().slots == 0 {
                    return Err(DaemonError::Invalid(format!(
                        "this daemon has no slots to run {capability:?} in: `peer scale --slots N` first"
                    )));
                }
                if let Some(grant) = &self.grant {
                    grant
                        .require(
                            jobmesh_trust::Role::Worker,
                            std::iter::once(capability.as_str()),
                        )
                        .map_err(|e| {
                            DaemonError::Invalid(format!(
                                "this peer's credential does not let it run {capability:?}: {e}"
                            ))
                        })?;
                }
                crate::write(&self.handlers).insert(capability.clone(), handler);
                if !capabilities.contains(&capability) {
                    capabilities.push(capability);
                }
            }
            CapabilityChange::Remove(capability) => {
                if !capabilities.contains(&capability) {
                    return Err(DaemonError::Invalid(format!(
                        "this peer does not run {capability:?} (it runs {})",
                        names(&capabilities)
                    )));
                }
                capabilities.retain(|c| *c != capability);
                // Running jobs hold their own handle to the handler.
                crate::write(&self.handlers).remove(&capability);
            }
        }
        info!(capabilities = %names(&capabilities), "capabilities changed");
        self.feed(now, NodeInput::SetCapabilities(capabilities.clone()));
        self.pool_tx
            .send_modify(|s| s.me.capabilities.clone_from(&capabilities));
        self.capabilities.send_replace(capabilities.clone());
        Ok(capabilities)
    }

    /// The STUN and TURN servers of a welcome or a renewal, for the links
    /// dialled or answered from now on (unless `--ice-server` overrides
    /// them).
    fn offered_ice(&mut self, servers: &[IceServer]) {
        if servers == self.config.rtc.offered_ice_servers.as_slice() {
            return;
        }
        let urls: Vec<&str> = servers
            .iter()
            .flat_map(|s| &s.urls)
            .map(String::as_str)
            .collect();
        if !self.config.rtc.ice_servers.is_empty() {
            debug!(
                ?urls,
                "the signal-server offers ICE servers; --ice-server overrides them"
            );
        } else if !urls.is_empty() {
            // A renewal changes only the credentials: not worth an info line.
            let same_urls = self
                .config
                .rtc
                .offered_ice_servers
                .iter()
                .flat_map(|s| &s.urls)
                .eq(servers.iter().flat_map(|s| &s.urls));
            if same_urls {
                debug!("the signal-server renewed the TURN credentials");
            } else {
                info!(?urls, "using the ICE servers the signal-server offers");
            }
        }
        self.config.rtc.offered_ice_servers = servers.to_vec();
    }

    fn on_signal(&mut self, now: Instant, ev: SignalEvent) {
        match ev {
            SignalEvent::Connected => {
                self.connected = true;
                // The node re-announces our stats to the (possibly new) server.
                self.feed(now, NodeInput::SignalConnected);
            }
            SignalEvent::Disconnected { .. } => {
                // The node keeps the pool view and the links: jobs keep
                // flowing peer to peer.
                self.connected = false;
                self.feed(now, NodeInput::SignalDisconnected);
            }
            SignalEvent::Message(msg) => {
                if let ServerMsg::Welcome { ice_servers, .. }
                | ServerMsg::IceServers { ice_servers } = &msg
                {
                    self.offered_ice(ice_servers);
                }
                self.feed(now, NodeInput::Signal(&msg));
            }
            SignalEvent::Refused { reason } => {
                self.connected = false;
                self.feed(now, NodeInput::SignalDisconnected);
                self.pool_tx.send_modify(|s| s.refused = Some(reason));
            }
        }
        let pool = self.node.pool();
        let connected = self.connected;
        let synced = connected && pool.is_synced();
        self.pool_tx.send_if_modified(|s| {
            let changed =
                s.connected != connected || s.synced != synced || !s.peers.iter().eq(pool.peers());
            if changed {
                s.peers = pool.peers().cloned().collect();
                s.connected = connected;
                s.synced = synced;
            }
            changed
        });
    }

    fn on_dc_bytes(&mut self, now: Instant, peer: PeerId, link: LinkId, data: &[u8]) {
        for frame in Frame::split(data) {
            self.on_frame(now, peer, link, frame);
        }
    }

    fn on_frame(&mut self, now: Instant, peer: PeerId, link: LinkId, data: &[u8]) {
        match Frame::decode(data) {
            Ok(Frame::Msg(msg)) => {
                self.feed(
                    now,
                    NodeInput::Message {
                        from: peer,
                        link,
                        msg,
                    },
                );
            }
            Ok(Frame::Chunk(h, payload)) => self.on_chunk(now, peer, h, payload),
            Err(e) => self.feed(
                now,
                NodeInput::Malformed {
                    from: peer,
                    link,
                    job_id: DcMsg::peek_job_id(data),
                    error: e.to_string(),
                },
            ),
        }
    }
}

/// `a, b, c`, or `nothing`.
fn names(capabilities: &[Capability]) -> String {
    if capabilities.is_empty() {
        return "nothing".into();
    }
    capabilities
        .iter()
        .map(Capability::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
