//! Blob transfers around the two cores: the cores decide about jobs; this
//! moves their bytes.
//!
//! ```text
//! submitter                                           worker
//!  | -- blobs{input} + submit ------------------------> |  limits checked: over one → rejected, no byte sent
//!  | <------------------------------------- accepted    |
//!  | == input chunks (bulk queue, paced) =============> |  spooled to the job's dir, BLAKE3-checked
//!  |                                                    |  handler runs on the files
//!  | <============================ output chunks ====== |  after blobs{output}
//!  | <--------------------------------------- result    |  sent once the last chunk is queued
//! ```
//! A damaged, short or oversized set fails the attempt with a clear error
//! (retryable, except over a limit). Uploads are tasks that stop when their
//! guard is dropped: when the attempt ends, is retried, or the job is cancelled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobmesh_core::{EventKind, JobEvent};
use jobmesh_node::NodeInput;
use jobmesh_wire::blob::{BlobMeta, ChunkHeader, Direction};
use jobmesh_wire::dc::{DcMsg, JobId, Outcome, Progress};
use jobmesh_wire::{Capability, PeerId};
use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn, Instrument};

use super::{Daemon, JobDone, Link};
use crate::api::Metrics;
use crate::blobs::{self, InputBlob, Prepared, ReceivedBlob, Receiver, SendBlobError, Source};
use crate::handlers::JobFiles;

/// Capacity of the transfer-completion channel. Full: upload tasks wait
/// before reporting; there are at most `transfers_per_link` per link.
pub(super) const TRANSFER_QUEUE: usize = 256;

/// An upload task's end.
pub(super) struct TransferDone {
    job_id: JobId,
    direction: Direction,
    to: PeerId,
    attempt: u32,
    result: Result<(), SendBlobError>,
}

/// Submitter side: a result's blobs being received.
pub(super) struct Download {
    from: PeerId,
    attempt: u32,
    rx: Result<Receiver, String>,
    percent: u8,
}

/// Worker side: a job whose input blobs come over a link.
pub(super) struct Upload {
    from: PeerId,
    attempt: u32,
    state: UploadState,
}

pub(super) enum UploadState {
    /// Announced and admitted; receiving starts with the handler's start.
    Announced(Vec<BlobMeta>),
    /// Receiving; the handler starts when the last blob is in.
    Receiving {
        rx: Receiver,
        start: Deferred,
        percent: u8,
        /// The job's timeout runs from its start, transfer included.
        deadline: Instant,
    },
}

/// A handler start waiting for its input blobs.
pub(super) struct Deferred {
    pub(super) capability: Capability,
    pub(super) input: Value,
    pub(super) timeout: Duration,
}

/// Worker side: a result waiting for its output blobs to be sent.
pub(super) struct PendingResult {
    value: Value,
    /// Kept if the link closes under the transfer.
    outputs: Arc<Vec<Prepared>>,
    _upload: DropGuard,
}

/// What a handler's task needs to give the handler its input blobs.
pub(super) enum HandlerInputs {
    /// No blobs, or already on disk.
    Ready(Arc<JobFiles>),
    /// Self-dispatched: the submitter's own blobs, written out by the task
    /// when they are in memory.
    Local(Arc<Vec<Prepared>>),
}

impl Daemon {
    // ---- submitter side ----

    /// Starts, stops or finishes transfers as a job of ours moves on.
    pub(super) fn on_job_event(&mut self, e: &JobEvent) {
        match &e.kind {
            EventKind::Started { worker, attempt } if *worker != self.me => {
                let Some(blobs) = self.job_blobs.get(&e.job_id).cloned() else {
                    return;
                };
                let upload =
                    self.spawn_upload(e.job_id, *worker, *attempt, Direction::Input, blobs);
                if let Some(guard) = upload {
                    self.uploads.insert(e.job_id, guard);
                }
            }
            EventKind::Started { .. } | EventKind::Progress { .. } => {}
            EventKind::Finished { .. } => {
                self.uploads.remove(&e.job_id);
                self.job_blobs.remove(&e.job_id);
                self.downloads.remove(&e.job_id);
            }
            _ => {
                // Retrying, requeued or redispatched: the old attempt's transfers end.
                self.uploads.remove(&e.job_id);
                self.downloads.remove(&e.job_id);
            }
        }
    }

    /// A worker announced the blobs of a result of ours.
    pub(super) fn on_output_blobs(
        &mut self,
        from: PeerId,
        job_id: JobId,
        attempt: u32,
        metas: Vec<BlobMeta>,
    ) {
        let limit = self.config.blobs.max_blob_size;
        let rx = if let Some(b) = metas.iter().find(|b| b.size > limit) {
            Err(format!(
                "result blob {} is {} bytes, over this peer's limit of {limit}",
                b.index, b.size
            ))
        } else {
            self.spool
                .dir(job_id, "out")
                .and_then(|dir| Receiver::new(metas, dir, &self.budget, false))
                .map_err(|e| format!("cannot spool the result's blobs: {e}"))
        };
        self.downloads.insert(
            job_id,
            Download {
                from,
                attempt,
                rx,
                percent: 0,
            },
        );
    }

    /// A result arrived: if blobs came with it, they must be complete and
    /// intact, or the attempt failed.
    pub(super) fn check_result_blobs(&mut self, from: PeerId, mut msg: DcMsg) -> DcMsg {
        let DcMsg::Result {
            job_id,
            attempt,
            outcome,
            ..
        } = &mut msg
        else {
            return msg;
        };
        let (job_id, attempt) = (*job_id, *attempt);
        // Only the current attempt's download belongs to this result.
        let ours = self
            .downloads
            .get(&job_id)
            .is_some_and(|d| d.from == from && d.attempt == attempt);
        let Some(download) = ours.then(|| self.downloads.remove(&job_id)).flatten() else {
            return msg;
        };
        if matches!(outcome, Outcome::Ok { .. }) {
            match download.rx.and_then(Receiver::finish) {
                Ok(blobs) => {
                    self.results.insert(job_id, (attempt, blobs));
                }
                Err(why) => {
                    warn!(%job_id, attempt, %why, "result blobs failed");
                    *outcome = Outcome::Err {
                        message: format!("receiving the result's blobs failed: {why}"),
                        retryable: true,
                    };
                }
            }
        }
        msg
    }

    // ---- both sides ----

    pub(super) fn on_chunk(&mut self, now: Instant, peer: PeerId, h: ChunkHeader, payload: &[u8]) {
        let current = match h.direction {
            Direction::Output => self
                .downloads
                .get(&h.job_id)
                .is_some_and(|d| d.from == peer && d.attempt == h.attempt),
            Direction::Input => self.inbound.get(&h.job_id).is_some_and(|u| {
                u.from == peer
                    && u.attempt == h.attempt
                    && matches!(u.state, UploadState::Receiving { .. })
            }),
        };
        if !current {
            // Normal after a cancel or retry (chunks were in flight); never answered.
            Metrics::bump(&self.metrics.stale_chunks);
            debug!(job_id = %h.job_id, attempt = h.attempt, peer = %peer.short(), "stale blob chunk dropped");
            return;
        }
        match h.direction {
            Direction::Output => {
                let Some(d) = self.downloads.get_mut(&h.job_id) else {
                    return;
                };
                let Ok(rx) = &mut d.rx else { return };
                rx.on_chunk(h.blob, h.offset, payload);
                let pct = percent(rx.progress());
                let moved = pct != d.percent;
                d.percent = pct;
                // The worker is busy sending: its lease holds.
                let alive = NodeInput::Alive {
                    from: peer,
                    job_id: h.job_id,
                    attempt: h.attempt,
                };
                self.feed(now, alive);
                if moved {
                    let ev = JobEvent {
                        job_id: h.job_id,
                        at: now,
                        kind: EventKind::Progress {
                            attempt: h.attempt,
                            progress: Progress {
                                percent: Some(pct),
                                stage: Some("downloading".into()),
                                message: None,
                            },
                        },
                    };
                    self.on_event(ev);
                }
            }
            Direction::Input => {
                let Some(up) = self.inbound.get_mut(&h.job_id) else {
                    return;
                };
                let UploadState::Receiving { rx, percent: p, .. } = &mut up.state else {
                    return;
                };
                rx.on_chunk(h.blob, h.offset, payload);
                if let Some(why) = rx.failed() {
                    let why = format!("receiving the input blobs failed: {why}");
                    warn!(job_id = %h.job_id, %why, "input blobs failed");
                    self.inbound.remove(&h.job_id);
                    self.done(now, h.job_id, Err((why, true)));
                    return;
                }
                let pct = percent(rx.progress());
                let moved = pct != *p;
                *p = pct;
                let complete = rx.is_complete();
                if moved {
                    let progress = Progress {
                        percent: Some(pct),
                        stage: Some("receiving input".into()),
                        message: None,
                    };
                    let job_id = h.job_id;
                    self.feed(now, NodeInput::HandlerProgress { job_id, progress });
                }
                if complete {
                    self.inputs_complete(now, h.job_id);
                }
            }
        }
    }

    // ---- worker side ----

    /// Remembers an admitted job's announced blobs until its handler starts.
    pub(super) fn expect_inputs(
        &mut self,
        from: PeerId,
        job_id: JobId,
        attempt: u32,
        metas: Vec<BlobMeta>,
    ) {
        self.inbound.insert(
            job_id,
            Upload {
                from,
                attempt,
                state: UploadState::Announced(metas),
            },
        );
    }

    /// The worker core starts a job: at once, or once its blobs are in.
    pub(super) fn start_job(&mut self, now: Instant, job_id: JobId, start: Deferred) {
        let local = self
            .node
            .worker()
            .submitter(&job_id)
            .filter(|(from, _)| *from == self.me)
            .and_then(|_| self.job_blobs.get(&job_id).cloned());
        if let Some(blobs) = local {
            self.launch(job_id, start, HandlerInputs::Local(blobs));
            return;
        }
        let Some(up) = self.inbound.remove(&job_id) else {
            let files = Arc::new(JobFiles::new(Vec::new(), self.spool.clone(), None));
            self.launch(job_id, start, HandlerInputs::Ready(files));
            return;
        };
        let UploadState::Announced(metas) = up.state else {
            return;
        };
        let rx = self
            .spool
            .dir(job_id, "in")
            .and_then(|dir| Receiver::new(metas, dir, &self.budget, true));
        match rx {
            Ok(rx) => {
                self.inbound.insert(
                    job_id,
                    Upload {
                        state: UploadState::Receiving {
                            deadline: now + start.timeout,
                            rx,
                            start,
                            percent: 0,
                        },
                        ..up
                    },
                );
                self.inputs_complete(now, job_id);
            }
            Err(e) => {
                let why = format!(
                    "cannot spool the input blobs: {e}; check the temp dir's space and permissions"
                );
                warn!(%job_id, %why);
                self.done(now, job_id, Err((why, true)));
            }
        }
    }

    /// Starts the handler if every input blob is in.
    fn inputs_complete(&mut self, now: Instant, job_id: JobId) {
        let ready = matches!(
            self.inbound.get(&job_id),
            Some(Upload { state: UploadState::Receiving { rx, .. }, .. }) if rx.is_complete()
        );
        if !ready {
            return;
        }
        let Some(Upload {
            state:
                UploadState::Receiving {
                    rx,
                    mut start,
                    deadline,
                    ..
                },
            ..
        }) = self.inbound.remove(&job_id)
        else {
            return;
        };
        // What is left of the job's time runs the handler.
        start.timeout = deadline.saturating_duration_since(now);
        let dir = rx.dir();
        match rx.finish() {
            Ok(blobs) => {
                let inputs = blobs
                    .iter()
                    .filter_map(|b| {
                        b.path().map(|p| InputBlob {
                            name: b.name().map(str::to_owned),
                            size: b.size(),
                            path: p.to_owned(),
                        })
                    })
                    .collect();
                let files = Arc::new(JobFiles::new(inputs, self.spool.clone(), Some(dir)));
                self.launch(job_id, start, HandlerInputs::Ready(files));
            }
            Err(why) => self.done(now, job_id, Err((why, true))),
        }
    }

    /// A handler finished: send its output blobs first, then the result.
    pub(super) fn finish_job(&mut self, now: Instant, done: JobDone) {
        let JobDone {
            job_id,
            result,
            outputs,
        } = done;
        let result = result.map_err(|e| (e.message, e.retryable));
        if self.node.worker().is_orphaned(&job_id) {
            // Its submitter is away: the worker core keeps the result, and
            // this its blobs, until it is back or they expire.
            if result.is_ok() && !outputs.is_empty() {
                self.kept_outputs.insert(job_id, Arc::new(outputs));
            }
            self.done(now, job_id, result);
            return;
        }
        let (Ok(value), false) = (&result, outputs.is_empty()) else {
            self.done(now, job_id, result);
            return;
        };
        let Some((to, attempt)) = self.node.worker().submitter(&job_id) else {
            return; // cancelled or timed out meanwhile
        };
        if to == self.me {
            let blobs = outputs
                .into_iter()
                .map(ReceivedBlob::from_prepared)
                .collect();
            self.results.insert(job_id, (attempt, blobs));
            self.done(now, job_id, result);
            return;
        }
        let outputs = Arc::new(outputs);
        let upload = self.node.open_link(&to).and_then(|link| {
            // Queued before the upload task exists, so the announcement goes
            // out ahead of the first chunk.
            let msg = DcMsg::Blobs {
                job_id,
                attempt,
                direction: Direction::Output,
                blobs: outputs.iter().map(|b| b.meta.clone()).collect(),
            };
            self.send_bytes(now, to, link, msg.encode());
            self.spawn_upload(job_id, to, attempt, Direction::Output, outputs.clone())
        });
        match upload {
            Some(guard) => {
                self.pending_results.insert(
                    job_id,
                    PendingResult {
                        value: value.clone(),
                        outputs,
                        _upload: guard,
                    },
                );
            }
            None => self.done(
                now,
                job_id,
                Err((
                    "the submitter's link closed before the result's blobs could be sent".into(),
                    true,
                )),
            ),
        }
    }

    /// The earliest deadline of a job still receiving its inputs.
    pub(super) fn inputs_deadline(&self) -> Option<Instant> {
        self.inbound
            .values()
            .filter_map(|u| match &u.state {
                UploadState::Receiving { deadline, .. } => Some(*deadline),
                UploadState::Announced(_) => None,
            })
            .min()
    }

    /// Fails the jobs whose inputs did not arrive within their timeout.
    pub(super) fn expire_inputs(&mut self, now: Instant) {
        let late: Vec<JobId> = self
            .inbound
            .iter()
            .filter(|(_, u)| {
                matches!(u.state, UploadState::Receiving { deadline, .. } if deadline <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for job_id in late {
            self.inbound.remove(&job_id);
            warn!(%job_id, "input blobs did not arrive within the job's timeout");
            let why = "timed out on the worker waiting for the input blobs".to_owned();
            self.done(now, job_id, Err((why, true)));
        }
    }

    /// The worker core cancels a job: its handler is told to stop, or, with
    /// none running, the job ends here. One still receiving its inputs
    /// fails; one whose handler had finished (its result's blobs going out)
    /// keeps its result, so that a new attempt of the job from the same
    /// submitter re-attaches to it (`WorkerCore::handle_done`).
    pub(super) fn stop_work(&mut self, now: Instant, job_id: JobId) {
        self.inbound.remove(&job_id);
        let finished = self.pending_results.remove(&job_id);
        if let Some(token) = self.running.get(&job_id) {
            // It ends when its handler returns (or has returned: its
            // completion is on its way).
            info!(%job_id, "cancelling the job's handler");
            token.cancel();
        } else if let Some(p) = finished {
            info!(%job_id, "cancelled while its result's blobs went out; the result is kept");
            self.kept_outputs.insert(job_id, p.outputs);
            self.done(now, job_id, Ok(p.value));
        } else {
            info!(%job_id, "cancelled while its input blobs came in");
            let why = ("cancelled".to_owned(), false);
            self.done(now, job_id, Err(why));
        }
    }

    /// Tells the node that a job this peer ran has ended.
    fn done(&mut self, now: Instant, job_id: JobId, result: Result<Value, (String, bool)>) {
        self.feed(now, NodeInput::HandlerDone { job_id, result });
    }

    // ---- uploads ----

    /// Streams `blobs` to `to` in a task on its open link; `None` if there is
    /// none. Dropping the guard stops the task.
    fn spawn_upload(
        &mut self,
        job_id: JobId,
        to: PeerId,
        attempt: u32,
        direction: Direction,
        blobs: Arc<Vec<Prepared>>,
    ) -> Option<DropGuard> {
        let link_id = self.node.open_link(&to)?;
        let Some(Link::Open(link)) = self.links.get(&link_id) else {
            return None;
        };
        let bulk = link.bulk();
        let permits = self
            .link_permits
            .entry(link_id)
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.blobs.transfers_per_link)))
            .clone();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let done = self.transfer_tx.clone();
        let bytes: u64 = blobs.iter().map(|b| b.meta.size).sum();
        self.tracker.spawn(
            async move {
                let send = async {
                    // Past the per-link limit, a transfer waits for its turn.
                    let _permit = permits.acquire_owned().await;
                    let started = Instant::now();
                    let r = blobs::send(&bulk, direction, job_id, attempt, &blobs).await;
                    let secs = started.elapsed().as_secs_f64().max(1e-6);
                    info!(
                        bytes,
                        mb_per_s = bytes as f64 / secs / 1e6,
                        ok = r.is_ok(),
                        "blobs sent"
                    );
                    r
                };
                let result = tokio::select! {
                    () = stop.cancelled() => return,
                    r = send => r,
                };
                let _ = done
                    .send(TransferDone {
                        job_id,
                        direction,
                        to,
                        attempt,
                        result,
                    })
                    .await;
            }
            .instrument(tracing::info_span!("upload", %job_id, ?direction, to = %to.short())),
        );
        Some(cancel.drop_guard())
    }

    pub(super) fn on_transfer_done(&mut self, now: Instant, t: TransferDone) {
        match t.direction {
            Direction::Output => {
                let Some(pending) = self.pending_results.remove(&t.job_id) else {
                    return;
                };
                let result = match t.result {
                    Ok(()) => {
                        // Kept with the result until the submitter has it.
                        self.kept_outputs.insert(t.job_id, pending.outputs);
                        Ok(pending.value)
                    }
                    Err(SendBlobError::Closed) => {
                        // The link closed under the transfer: the node keeps
                        // the result for the submitter's return, as for any
                        // job of its.
                        self.kept_outputs.insert(t.job_id, pending.outputs);
                        let lost = NodeInput::ResultLinkLost {
                            peer: t.to,
                            job_id: t.job_id,
                            result: pending.value,
                        };
                        self.feed(now, lost);
                        return;
                    }
                    Err(e) => Err((format!("sending the result's blobs failed: {e}"), true)),
                };
                self.done(now, t.job_id, result);
            }
            Direction::Input => {
                self.uploads.remove(&t.job_id);
                match t.result {
                    Ok(()) | Err(SendBlobError::Closed) => {} // a closed link fails the attempt by itself
                    Err(e) => {
                        // Our own file went missing or unreadable: the attempt fails, for good.
                        warn!(job_id = %t.job_id, error = %e, "input blobs could not be sent");
                        let unsendable = NodeInput::InputsUnsendable {
                            to: t.to,
                            job_id: t.job_id,
                            attempt: t.attempt,
                            error: e.to_string(),
                        };
                        self.feed(now, unsendable);
                    }
                }
            }
        }
    }
}

/// Whole percent of `(done, total)`; 100 for an empty total.
fn percent((done, total): (u64, u64)) -> u8 {
    done.saturating_mul(100)
        .checked_div(total)
        .map_or(100, |p| u8::try_from(p).unwrap_or(100))
}

/// Writes self-dispatched in-memory blobs to files; files stay where they are.
pub(super) async fn materialize(
    spool: &Arc<blobs::Spool>,
    job_id: JobId,
    blobs: &[Prepared],
) -> std::io::Result<Arc<JobFiles>> {
    let mut dir = None;
    let mut inputs = Vec::with_capacity(blobs.len());
    for b in blobs {
        let path = match &b.source {
            Source::File(p) => p.clone(),
            Source::Bytes(bytes) => {
                let d = match &dir {
                    Some(d) => d,
                    None => dir.insert(spool.dir(job_id, "in")?),
                };
                let p = d.path().join(blobs::file_name(&b.meta));
                tokio::fs::write(&p, bytes).await?;
                p
            }
        };
        inputs.push(InputBlob {
            name: b.meta.name.clone(),
            size: b.meta.size,
            path,
        });
    }
    Ok(Arc::new(JobFiles::new(inputs, spool.clone(), dir)))
}

pub(super) type TransferRx = mpsc::Receiver<TransferDone>;

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
