//! Blob transfer sets: which blobs move for which attempt, and what a
//! transfer's end means for its job. The bytes (spooling, hashing, the
//! upload tasks) stay with the driver, which reports each fact back.
//!
//! ```text
//! submitter                                           worker
//!  | -- blobs{input} + submit ------------------------> |  limits checked: over one → rejected, no byte sent
//!  | <------------------------------------- accepted    |
//!  | == input chunks (SendBlobs) =====================> |  ReceiveBlobs at the handler's start; BlobsReceived
//!  |                                                    |  → StartHandler with what is left of the timeout
//!  | <============================ output chunks ====== |  HandlerDone with blobs → blobs{output} + SendBlobs
//!  | <--------------------------------------- result    |  BlobsSent → the result goes out
//! ```
//!
//! A chunk counts only for the current transfer of its job, direction,
//! sender and attempt ([`Node::wants_chunk`]); anything else is stale. A
//! damaged, short or oversized set fails the attempt (retryably, except over
//! a limit); a result whose blobs did not all arrive intact fails its
//! attempt, and its blobs are dropped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jobmesh_core::{EventKind, Input, JobEvent};
use jobmesh_wire::blob::{BlobMeta, ChunkHeader, Direction};
use jobmesh_wire::dc::{DcMsg, JobId, Outcome, Progress};
use jobmesh_wire::{Capability, PeerId};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::{fits, Node, NodeOutput};

/// Where a started job's input blobs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerInputs {
    /// It has none.
    None,
    /// They came over a link: the driver's receiver holds them.
    Received,
    /// Self-dispatched: the submitter's own blobs, which the driver holds.
    Local,
}

/// The transfer sets of one node.
#[derive(Debug, Default)]
pub(crate) struct Transfers {
    /// Worker side: admitted jobs whose input blobs come over a link.
    inbound: HashMap<JobId, Inbound>,
    /// Worker side: finished jobs whose result waits for its blobs to go out.
    outgoing: HashMap<JobId, Outgoing>,
    /// Worker side: the output blobs of results the worker core keeps, to
    /// send again when a kept result is restored.
    kept: HashMap<JobId, Vec<BlobMeta>>,
    /// Worker side: jobs whose handler runs.
    handling: std::collections::HashSet<JobId>,
    /// Submitter side: result blobs being received, by job.
    downloads: HashMap<JobId, Download>,
}

#[derive(Debug)]
struct Inbound {
    from: PeerId,
    attempt: u32,
    blobs: Vec<BlobMeta>,
    /// Receiving since the handler's start (which waits for the blobs).
    receiving: Option<Receiving>,
}

#[derive(Debug)]
struct Receiving {
    capability: Capability,
    input: Value,
    /// The job's timeout runs from its start, transfer included.
    deadline: Instant,
    percent: u8,
}

#[derive(Debug)]
struct Outgoing {
    value: Value,
    blobs: Vec<BlobMeta>,
}

#[derive(Debug)]
struct Download {
    from: PeerId,
    attempt: u32,
    /// How many blobs the set has.
    count: usize,
    /// The set comes as handed-over files, read on the driver's time: its
    /// result may arrive before the last byte is read, and waits here.
    from_files: bool,
    held_result: Option<DcMsg>,
    state: DownloadState,
    percent: u8,
    received: (u64, u64),
}

#[derive(Debug, PartialEq)]
enum DownloadState {
    Receiving,
    Complete,
    Failed(String),
}

/// Whole percent of `(done, total)`; 100 for an empty total.
pub(crate) fn percent((done, total): (u64, u64)) -> u8 {
    done.saturating_mul(100)
        .checked_div(total)
        .map_or(100, |p| u8::try_from(p).unwrap_or(100))
}

impl Node {
    /// Whether a chunk from `from` belongs to a transfer under way: the
    /// current one of its job and direction, from that sender, for that
    /// attempt. The driver stores the bytes of those only; the others are
    /// stale (normal after a cancel or a retry: chunks were in flight).
    pub fn wants_chunk(&self, from: &PeerId, h: &ChunkHeader) -> bool {
        self.receiving(from, &h.job_id, h.direction, h.attempt)
            .is_some()
    }

    /// How many blobs the transfer under way of this job and direction,
    /// from `from` for `attempt`, has; `None`: no such transfer.
    fn receiving(
        &self,
        from: &PeerId,
        job_id: &JobId,
        direction: Direction,
        attempt: u32,
    ) -> Option<usize> {
        let t = &self.transfers;
        match direction {
            Direction::Output => t
                .downloads
                .get(job_id)
                .filter(|d| {
                    d.from == *from && d.attempt == attempt && d.state == DownloadState::Receiving
                })
                .map(|d| d.count),
            Direction::Input => t
                .inbound
                .get(job_id)
                .filter(|u| u.from == *from && u.attempt == attempt && u.receiving.is_some())
                .map(|u| u.blobs.len()),
        }
    }

    /// `from` handed a set over as files: read them if they are the set
    /// under way and the link shares the directory; fail the set if they
    /// cannot be it.
    pub(crate) fn on_blob_files(
        &mut self,
        now: Instant,
        from: PeerId,
        job_id: JobId,
        attempt: u32,
        direction: Direction,
        files: Vec<String>,
    ) {
        let Some(count) = self.receiving(&from, &job_id, direction, attempt) else {
            // As a stale chunk (a cancel or retry crossed it); its sender
            // removes the files when the attempt ends on its side.
            debug!(%job_id, attempt, peer = %from.short(), "stale blob files ignored");
            return;
        };
        let error = if !self.links.handover(&from) {
            "the peer handed blobs over as files, but does not share this peer's handover directory"
        } else if files.len() != count {
            "the peer handed over a different number of files than it announced blobs"
        } else {
            if let Some(d) = self.transfers.downloads.get_mut(&job_id) {
                d.from_files = true;
            }
            self.out.push_back(NodeOutput::ReadBlobFiles {
                job_id,
                direction,
                from,
                attempt,
                files,
            });
            return;
        };
        self.on_blob_files_failed(now, from, job_id, direction, error.to_owned());
    }

    /// Handed-over files could not be read: the set fails (retryably), and
    /// `from` sends chunks from now on.
    pub(crate) fn on_blob_files_failed(
        &mut self,
        now: Instant,
        from: PeerId,
        job_id: JobId,
        direction: Direction,
        error: String,
    ) {
        if let Some(link) = self.links.open(&from) {
            if self.links.handover(&from) {
                warn!(peer = %from.short(), %error, "blob files from this peer failed: it sends chunks from now on");
                self.links.set_handover(&from, false);
                self.out.push_back(NodeOutput::Send {
                    to: from,
                    link,
                    msg: DcMsg::Handover { token: None },
                });
            }
        }
        self.on_blobs_failed(now, job_id, direction, error);
    }

    /// The earliest deadline of a job still receiving its inputs.
    pub(crate) fn transfers_timeout(&self) -> Option<Instant> {
        self.transfers
            .inbound
            .values()
            .filter_map(|u| u.receiving.as_ref().map(|r| r.deadline))
            .min()
    }

    /// Fails the jobs whose inputs did not arrive within their timeout.
    pub(crate) fn expire_inputs(&mut self, now: Instant) {
        let mut late: Vec<JobId> = self
            .transfers
            .inbound
            .iter()
            .filter(|(_, u)| u.receiving.as_ref().is_some_and(|r| r.deadline <= now))
            .map(|(id, _)| *id)
            .collect();
        late.sort();
        for job_id in late {
            warn!(%job_id, "input blobs did not arrive within the job's timeout");
            self.end_inbound(job_id);
            let why = "timed out on the worker waiting for the input blobs".to_owned();
            self.worker.handle_done(now, job_id, Err((why, true)));
        }
    }

    fn end_inbound(&mut self, job_id: JobId) {
        self.spool.release(job_id, Direction::Input);
        if self.transfers.inbound.remove(&job_id).is_some() {
            self.out.push_back(NodeOutput::DropBlobs {
                job_id,
                direction: Direction::Input,
            });
        }
    }

    fn end_download(&mut self, job_id: JobId) {
        self.spool.release(job_id, Direction::Output);
        if self.transfers.downloads.remove(&job_id).is_some() {
            self.out.push_back(NodeOutput::DropBlobs {
                job_id,
                direction: Direction::Output,
            });
        }
    }

    // ---- worker side ----

    /// An admitted job's announced input blobs, expected when it starts.
    pub(crate) fn expect_inputs(
        &mut self,
        from: PeerId,
        job_id: JobId,
        attempt: u32,
        blobs: Vec<BlobMeta>,
    ) {
        // Checked when the submit was admitted, a moment ago.
        let reserved = self.spool.reserve(job_id, Direction::Input, from, &blobs);
        debug_assert!(reserved.is_ok(), "{reserved:?}");
        let inbound = Inbound {
            from,
            attempt,
            blobs,
            receiving: None,
        };
        self.transfers.inbound.insert(job_id, inbound);
    }

    /// The worker core starts a job: at once, or once its blobs are in.
    pub(crate) fn start_job(
        &mut self,
        now: Instant,
        job_id: JobId,
        capability: Capability,
        input: Value,
        timeout: Duration,
    ) {
        let local = self
            .worker
            .submitter(&job_id)
            .is_some_and(|(from, _)| from == self.me)
            && self.job_blobs.contains_key(&job_id);
        let inputs = if local {
            HandlerInputs::Local
        } else {
            match self.transfers.inbound.get_mut(&job_id) {
                Some(u) => {
                    let (from, attempt, blobs) = (u.from, u.attempt, u.blobs.clone());
                    u.receiving = Some(Receiving {
                        capability,
                        input,
                        deadline: now + timeout,
                        percent: 0,
                    });
                    self.out.push_back(NodeOutput::ReceiveBlobs {
                        job_id,
                        direction: Direction::Input,
                        from,
                        attempt,
                        blobs,
                    });
                    return;
                }
                None => HandlerInputs::None,
            }
        };
        self.start_handler(job_id, capability, input, timeout, inputs);
    }

    fn start_handler(
        &mut self,
        job_id: JobId,
        capability: Capability,
        input: Value,
        timeout: Duration,
        inputs: HandlerInputs,
    ) {
        self.transfers.handling.insert(job_id);
        self.out.push_back(NodeOutput::StartHandler {
            job_id,
            capability,
            input,
            timeout,
            inputs,
        });
    }

    /// Bytes of a job's blobs arrived (and were stored): progress, and for
    /// a result's blobs, word from its worker (its lease holds).
    pub(crate) fn on_blobs_progress(
        &mut self,
        now: Instant,
        job_id: JobId,
        direction: Direction,
        received: (u64, u64),
    ) {
        let pct = percent(received);
        match direction {
            Direction::Input => {
                let Some(r) = self
                    .transfers
                    .inbound
                    .get_mut(&job_id)
                    .and_then(|u| u.receiving.as_mut())
                else {
                    return;
                };
                if pct != r.percent {
                    r.percent = pct;
                    let progress = Progress {
                        percent: Some(pct),
                        stage: Some("receiving input".into()),
                        message: None,
                    };
                    self.worker.handle_progress(now, job_id, progress);
                }
            }
            Direction::Output => {
                let Some(d) = self.transfers.downloads.get_mut(&job_id) else {
                    return;
                };
                d.received = received;
                let (from, attempt) = (d.from, d.attempt);
                let moved = pct != d.percent;
                d.percent = pct;
                self.dispatcher_input(
                    now,
                    Input::Alive {
                        from,
                        job_id,
                        attempt,
                    },
                );
                if moved {
                    let progress = Progress {
                        percent: Some(pct),
                        stage: Some("downloading".into()),
                        message: None,
                    };
                    self.out.push_back(NodeOutput::Event(JobEvent {
                        job_id,
                        at: now,
                        kind: EventKind::Progress { attempt, progress },
                    }));
                }
            }
        }
    }

    /// Every blob of a set arrived intact.
    pub(crate) fn on_blobs_received(&mut self, now: Instant, job_id: JobId, direction: Direction) {
        match direction {
            Direction::Input => {
                let Some(Inbound {
                    receiving: Some(r), ..
                }) = self.transfers.inbound.remove(&job_id)
                else {
                    return;
                };
                // What is left of the job's time runs the handler.
                let timeout = r.deadline.saturating_duration_since(now);
                self.start_handler(
                    job_id,
                    r.capability,
                    r.input,
                    timeout,
                    HandlerInputs::Received,
                );
            }
            Direction::Output => {
                if let Some(d) = self.transfers.downloads.get_mut(&job_id) {
                    d.state = DownloadState::Complete;
                }
                self.release_held_result(now, job_id);
            }
        }
    }

    /// A result that waited for its handed-over files to be read: the set
    /// is complete or failed now, and the result goes on as if it had just
    /// arrived.
    fn release_held_result(&mut self, now: Instant, job_id: JobId) {
        let held = self.transfers.downloads.get_mut(&job_id).and_then(|d| {
            let msg = d.held_result.take()?;
            Some((d.from, msg))
        });
        if let Some((from, msg)) = held {
            if let Some(msg) = self.check_result(now, from, msg) {
                self.dispatcher_input(now, jobmesh_core::Input::Dc { from, msg: &msg });
            }
        }
    }

    /// A set could not be received: a chunk out of order or past its size,
    /// a digest mismatch, the spool. `error` says what, for the job's error.
    pub(crate) fn on_blobs_failed(
        &mut self,
        now: Instant,
        job_id: JobId,
        direction: Direction,
        error: String,
    ) {
        match direction {
            Direction::Input => {
                if self.transfers.inbound.contains_key(&job_id) {
                    warn!(%job_id, %error, "input blobs failed");
                    self.end_inbound(job_id);
                    self.worker.handle_done(now, job_id, Err((error, true)));
                }
            }
            Direction::Output => {
                if let Some(d) = self.transfers.downloads.get_mut(&job_id) {
                    warn!(%job_id, %error, "result blobs failed");
                    d.state = DownloadState::Failed(error);
                    self.out
                        .push_back(NodeOutput::DropBlobs { job_id, direction });
                }
                self.release_held_result(now, job_id);
            }
        }
    }

    /// A job this peer ran ended; `outputs` are the blobs its handler
    /// attached (held by the driver).
    pub(crate) fn on_handler_done(
        &mut self,
        now: Instant,
        job_id: JobId,
        result: Result<Value, (String, bool)>,
        outputs: Vec<BlobMeta>,
    ) {
        self.transfers.handling.remove(&job_id);
        // Its input blobs are no longer needed.
        self.spool.release(job_id, Direction::Input);
        let result = fits(result);
        if outputs.is_empty() || result.is_err() {
            if !outputs.is_empty() {
                self.out.push_back(NodeOutput::ForgetResult { job_id });
            }
            self.worker.handle_done(now, job_id, result);
            return;
        }
        if self.worker.is_orphaned(&job_id) {
            // Its submitter is away: the worker core keeps the result, and
            // the driver its blobs, until it is back or they expire.
            self.transfers.kept.insert(job_id, outputs);
            self.worker.handle_done(now, job_id, result);
            return;
        }
        let Some((to, attempt)) = self.worker.submitter(&job_id) else {
            // Cancelled or timed out meanwhile.
            self.out.push_back(NodeOutput::ForgetResult { job_id });
            return;
        };
        let Ok(value) = result else { return };
        if to == self.me {
            self.out
                .push_back(NodeOutput::LocalResultBlobs { job_id, attempt });
            self.worker.handle_done(now, job_id, Ok(value));
            return;
        }
        let Some(link) = self.links.open(&to) else {
            self.out.push_back(NodeOutput::ForgetResult { job_id });
            let why = "the submitter's link closed before the result's blobs could be sent";
            self.worker
                .handle_done(now, job_id, Err((why.to_owned(), true)));
            return;
        };
        // The announcement goes out on the link before the first chunk.
        let announce = DcMsg::Blobs {
            job_id,
            attempt,
            direction: Direction::Output,
            blobs: outputs.clone(),
        };
        self.out.push_back(NodeOutput::Send {
            to,
            link,
            msg: announce,
        });
        self.out.push_back(NodeOutput::SendBlobs {
            job_id,
            direction: Direction::Output,
            to,
            link,
            attempt,
            handover: self.links.handover(&to),
        });
        let held = Outgoing {
            value,
            blobs: outputs,
        };
        self.transfers.outgoing.insert(job_id, held);
    }

    /// A kept result is delivered again: it goes out as if its handler had
    /// just returned, with the blobs kept with it.
    pub(crate) fn restore(
        &mut self,
        now: Instant,
        job_id: JobId,
        result: Result<Value, (String, bool)>,
    ) {
        info!(%job_id, "delivering a kept result to its returned submitter");
        let outputs = self.transfers.kept.remove(&job_id).unwrap_or_default();
        self.on_handler_done(now, job_id, result, outputs);
    }

    /// A kept result is no longer wanted.
    pub(crate) fn forget(&mut self, job_id: JobId) {
        self.transfers.kept.remove(&job_id);
        self.out.push_back(NodeOutput::ForgetResult { job_id });
    }

    /// The worker core cancels a job: its handler is told to stop, or, with
    /// none running, the job ends here. One still receiving its inputs
    /// fails; one whose result's blobs were going out keeps its result, so
    /// that a new attempt of the job from the same submitter re-attaches to
    /// it (`WorkerCore::handle_done`).
    pub(crate) fn stop_work(&mut self, now: Instant, job_id: JobId) {
        if self.transfers.handling.contains(&job_id) {
            // It ends when its handler returns (or has returned: its
            // completion is on its way).
            info!(%job_id, "cancelling the job's handler");
            self.out.push_back(NodeOutput::CancelHandler { job_id });
        } else if let Some(o) = self.transfers.outgoing.remove(&job_id) {
            info!(%job_id, "cancelled while its result's blobs went out; the result is kept");
            self.out.push_back(NodeOutput::StopSending {
                job_id,
                direction: Direction::Output,
            });
            self.transfers.kept.insert(job_id, o.blobs);
            self.worker.handle_done(now, job_id, Ok(o.value));
        } else {
            info!(%job_id, "cancelled while its input blobs came in");
            self.end_inbound(job_id);
            let why = ("cancelled".to_owned(), false);
            self.worker.handle_done(now, job_id, Err(why));
        }
    }

    // ---- both sides: an upload ended ----

    /// An upload of blobs to `to` ended: all sent, or not (`Err((why,
    /// closed))`: `closed` when its link closed under it).
    pub(crate) fn on_blobs_sent(
        &mut self,
        now: Instant,
        job_id: JobId,
        direction: Direction,
        to: PeerId,
        attempt: u32,
        result: Result<(), (String, bool)>,
    ) {
        match (direction, result) {
            (Direction::Output, result) => {
                let Some(o) = self.transfers.outgoing.remove(&job_id) else {
                    return;
                };
                match result {
                    Ok(()) => {
                        // Kept with the result until the submitter has it.
                        self.transfers.kept.insert(job_id, o.blobs);
                        self.worker.handle_done(now, job_id, Ok(o.value));
                    }
                    Err((_, true)) => {
                        // The link closed under the transfer (its close may
                        // not have reached the node yet, or a newer link is
                        // open already): the worker keeps the result for
                        // the submitter and offers it (`held`) on the open
                        // link, if there is one.
                        self.transfers.kept.insert(job_id, o.blobs);
                        self.worker.handle_link_closed(now, to);
                        self.worker.handle_done(now, job_id, Ok(o.value));
                        if self.links.open(&to).is_some() {
                            self.worker.handle_link_opened(to);
                        }
                    }
                    Err((why, false)) => {
                        self.out.push_back(NodeOutput::ForgetResult { job_id });
                        let why = format!("sending the result's blobs failed: {why}");
                        self.worker.handle_done(now, job_id, Err((why, true)));
                    }
                }
            }
            // A closed link fails the attempt by itself.
            (Direction::Input, Ok(()) | Err((_, true))) => {}
            (Direction::Input, Err((why, false))) => {
                // Our own file went missing or unreadable: the attempt fails,
                // for good, and the worker stops waiting for the blobs.
                warn!(%job_id, error = %why, "input blobs could not be sent");
                let message = format!("sending the input blobs failed: {why}");
                self.attempt_failed(now, to, job_id, attempt, message, false);
                self.send_to(now, to, DcMsg::Cancel { job_id, attempt });
            }
        }
    }

    // ---- submitter side ----

    /// A worker announced the blobs of a result of ours.
    pub(crate) fn on_output_blobs(
        &mut self,
        from: PeerId,
        job_id: JobId,
        attempt: u32,
        blobs: Vec<BlobMeta>,
    ) {
        if self.dispatcher.state(&job_id).is_none() {
            debug!(%job_id, "result blobs for a job no longer ours: ignored");
            return;
        }
        self.end_download(job_id);
        let limit = self.max_blob_size;
        let total = blobs.iter().map(|b| b.size).sum();
        let count = blobs.len();
        let refused = match blobs.iter().find(|b| b.size > limit) {
            Some(b) => Some(format!(
                "result blob {} is {} bytes, over this peer's limit of {limit}",
                b.index, b.size
            )),
            None => (self.spool.reserve(job_id, Direction::Output, from, &blobs))
                .err()
                .map(|over| format!("result blobs refused: {over}")),
        };
        let state = match refused {
            Some(why) => DownloadState::Failed(why),
            None => {
                self.out.push_back(NodeOutput::ReceiveBlobs {
                    job_id,
                    direction: Direction::Output,
                    from,
                    attempt,
                    blobs,
                });
                DownloadState::Receiving
            }
        };
        let download = Download {
            from,
            attempt,
            count,
            from_files: false,
            held_result: None,
            state,
            percent: 0,
            received: (0, total),
        };
        self.transfers.downloads.insert(job_id, download);
    }

    /// A result arrived from `from`: if blobs came with it, they must be
    /// complete and intact, or the attempt failed. Returns the result for
    /// the dispatcher, `None` when the node already told it.
    pub(crate) fn check_result(&mut self, now: Instant, from: PeerId, msg: DcMsg) -> Option<DcMsg> {
        let DcMsg::Result {
            job_id,
            attempt,
            outcome,
            ..
        } = &msg
        else {
            return Some(msg);
        };
        let (job_id, attempt) = (*job_id, *attempt);
        // Only the current attempt's download belongs to this result.
        let ours = self
            .transfers
            .downloads
            .get(&job_id)
            .is_some_and(|d| d.from == from && d.attempt == attempt);
        if !ours {
            return Some(msg);
        }
        if let Some(d) = self.transfers.downloads.get_mut(&job_id) {
            if d.from_files && d.state == DownloadState::Receiving && d.held_result.is_none() {
                d.held_result = Some(msg);
                return None;
            }
        }
        let Some(d) = self.transfers.downloads.remove(&job_id) else {
            return Some(msg);
        };
        self.spool.release(job_id, Direction::Output);
        if !matches!(outcome, Outcome::Ok { .. }) {
            self.out.push_back(NodeOutput::DropBlobs {
                job_id,
                direction: Direction::Output,
            });
            return Some(msg);
        }
        let why = match d.state {
            DownloadState::Complete => {
                self.out
                    .push_back(NodeOutput::ResultBlobs { job_id, attempt });
                return Some(msg);
            }
            DownloadState::Failed(why) => why,
            DownloadState::Receiving => {
                self.out.push_back(NodeOutput::DropBlobs {
                    job_id,
                    direction: Direction::Output,
                });
                format!(
                    "the blobs were cut short: {} of {} bytes arrived",
                    d.received.0, d.received.1
                )
            }
        };
        warn!(%job_id, attempt, %why, "result blobs failed");
        let message = format!("receiving the result's blobs failed: {why}");
        self.attempt_failed(now, from, job_id, attempt, message, true);
        None
    }

    /// Tells the dispatcher that `attempt` of `job_id` at `worker` failed.
    fn attempt_failed(
        &mut self,
        now: Instant,
        worker: PeerId,
        job_id: JobId,
        attempt: u32,
        message: String,
        retryable: bool,
    ) {
        self.dispatcher_input(
            now,
            Input::AttemptFailed {
                from: worker,
                job_id,
                attempt,
                message,
                retryable,
            },
        );
    }

    /// Starts, stops or ends transfers as a job of ours moves on.
    pub(crate) fn on_own_event(&mut self, e: &JobEvent) {
        let job_id = e.job_id;
        match &e.kind {
            EventKind::Started { worker, attempt } if *worker != self.me => {
                if !self.job_blobs.contains_key(&job_id) {
                    return;
                }
                if let Some(link) = self.links.open(worker) {
                    self.out.push_back(NodeOutput::SendBlobs {
                        job_id,
                        direction: Direction::Input,
                        to: *worker,
                        link,
                        attempt: *attempt,
                        handover: self.links.handover(worker),
                    });
                }
            }
            EventKind::Started { .. } | EventKind::Progress { .. } => {}
            _ => {
                // Retrying, requeued, redispatched or finished: the old
                // attempt's transfers end.
                self.out.push_back(NodeOutput::StopSending {
                    job_id,
                    direction: Direction::Input,
                });
                self.end_download(job_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_is_whole_and_bounded() {
        assert_eq!(super::percent((0, 10)), 0);
        assert_eq!(super::percent((5, 10)), 50);
        assert_eq!(super::percent((10, 10)), 100);
        assert_eq!(super::percent((0, 0)), 100);
    }
}
