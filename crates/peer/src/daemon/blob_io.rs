//! The bytes of blob transfers: the node decides which sets move for which
//! attempt and what their end means (`jobmesh_node`, `transfers`); this
//! spools what arrives, checks digests, runs the upload tasks, and reports
//! each fact back to the node.
//!
//! Handles, keyed like the node's transfers: receivers by job and
//! direction, upload tasks (dropping the guard stops one) by job and
//! direction, the output blobs of results by job (from the handler's end
//! until the node forgets the result), the input blobs of this peer's jobs
//! by job (until they end).

use std::sync::Arc;
use std::time::Instant;

use jobmesh_node::{HandlerInputs, LinkId, NodeInput};
use jobmesh_transport::rtc::BulkSender;
use jobmesh_wire::blob::{ChunkHeader, Direction};
use jobmesh_wire::dc::{DcMsg, JobId};
use jobmesh_wire::PeerId;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::{Connection, Daemon};
use crate::api::Metrics;
use crate::blobs::{self, InputBlob, Prepared, ReceivedBlob, Receiver, SendBlobError, Source};
use crate::handlers::JobFiles;
use crate::handover::{self, FileRead, Handed, HandoverDir};

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
    /// The files, when the set was handed over.
    handed: Option<Handed>,
}

/// What a handler's task needs to give the handler its input blobs.
pub(super) enum HandlerFiles {
    /// No blobs, or already on disk.
    Ready(Arc<JobFiles>),
    /// Self-dispatched: the submitter's own blobs, written out by the task
    /// when they are in memory.
    Local(Arc<Vec<Prepared>>),
}

impl Daemon {
    /// Starts receiving a set of blobs the node expects.
    pub(super) fn receive_blobs(
        &mut self,
        now: Instant,
        job_id: JobId,
        direction: Direction,
        blobs: Vec<jobmesh_wire::blob::BlobMeta>,
    ) {
        let (what, files) = match direction {
            Direction::Input => ("in", true),
            Direction::Output => ("out", false),
        };
        let rx = self
            .spool
            .dir(job_id, what)
            .and_then(|dir| Receiver::new(blobs, dir, &self.budget, files));
        match rx {
            Ok(rx) => {
                self.receivers.insert((job_id, direction), rx);
                // An empty set is complete before any chunk.
                self.blobs_progress(now, job_id, direction);
            }
            Err(e) => {
                let error = match direction {
                    Direction::Input => format!(
                        "cannot spool the input blobs: {e}; check the temp dir's space and permissions"
                    ),
                    Direction::Output => format!("cannot spool the result's blobs: {e}"),
                };
                warn!(%job_id, %error);
                let failed = NodeInput::BlobsFailed {
                    job_id,
                    direction,
                    error,
                };
                self.feed(now, failed);
            }
        }
    }

    /// A chunk from `peer`: stored if the node wants it, else stale.
    pub(super) fn on_chunk(&mut self, now: Instant, peer: PeerId, h: ChunkHeader, payload: &[u8]) {
        let key = (h.job_id, h.direction);
        let rx = self
            .receivers
            .get_mut(&key)
            .filter(|_| self.node.wants_chunk(&peer, &h));
        let Some(rx) = rx else {
            // Normal after a cancel or retry (chunks were in flight); never answered.
            Metrics::bump(&self.metrics.stale_chunks);
            debug!(job_id = %h.job_id, attempt = h.attempt, peer = %peer.short(), "stale blob chunk dropped");
            return;
        };
        rx.on_chunk(h.blob, h.offset, payload);
        self.blobs_progress(now, h.job_id, h.direction);
    }

    /// Tells the node how a set being received stands.
    fn blobs_progress(&mut self, now: Instant, job_id: JobId, direction: Direction) {
        let Some(rx) = self.receivers.get(&(job_id, direction)) else {
            return;
        };
        if let Some(why) = rx.failed() {
            let error = match direction {
                Direction::Input => format!("receiving the input blobs failed: {why}"),
                Direction::Output => why.to_owned(),
            };
            self.receivers.remove(&(job_id, direction));
            let failed = NodeInput::BlobsFailed {
                job_id,
                direction,
                error,
            };
            self.feed(now, failed);
            return;
        }
        let ((received, total), complete) = (rx.progress(), rx.is_complete());
        let progress = NodeInput::BlobsProgress {
            job_id,
            direction,
            received,
            total,
        };
        self.feed(now, progress);
        if complete {
            self.feed(now, NodeInput::BlobsReceived { job_id, direction });
        }
    }

    /// The node starts a job's handler: where its input blobs are.
    pub(super) fn handler_inputs(&mut self, job_id: JobId, inputs: HandlerInputs) -> HandlerFiles {
        match inputs {
            HandlerInputs::Local => {
                let blobs = self.job_blobs.get(&job_id).cloned().unwrap_or_default();
                HandlerFiles::Local(blobs)
            }
            HandlerInputs::None => HandlerFiles::Ready(Arc::new(JobFiles::new(
                Vec::new(),
                self.spool.clone(),
                None,
            ))),
            HandlerInputs::Received => {
                let rx = self.receivers.remove(&(job_id, Direction::Input));
                let (dir, received) = match rx {
                    Some(rx) => (Some(rx.dir()), rx.finish().unwrap_or_default()),
                    None => (None, Vec::new()),
                };
                self.telemetry.blobs_received(&received);
                let inputs = received
                    .iter()
                    .filter_map(|b| {
                        b.path().map(|p| InputBlob {
                            name: b.name().map(str::to_owned),
                            size: b.size(),
                            path: p.to_owned(),
                        })
                    })
                    .collect();
                HandlerFiles::Ready(Arc::new(JobFiles::new(inputs, self.spool.clone(), dir)))
            }
        }
    }

    /// Reads a set handed over as files (the node checked it is the set
    /// under way) on a blocking thread, whose pieces come back as chunks.
    pub(super) fn read_blob_files(
        &mut self,
        job_id: JobId,
        direction: Direction,
        from: PeerId,
        attempt: u32,
        files: Vec<String>,
    ) {
        let header = ChunkHeader {
            direction,
            job_id,
            attempt,
            blob: 0,
            offset: 0,
        };
        let Some(dir) = &self.handover else {
            // The node accepts files only while it has a token.
            return;
        };
        let (dir, tx) = (dir.path().to_owned(), self.file_read_tx.clone());
        let span = tracing::info_span!("handover", %job_id, ?direction, from = %from.short());
        self.tracker.spawn_blocking(move || {
            let _span = span.enter();
            handover::read_files(&dir, &files, from, header, &tx);
        });
    }

    /// A piece of a handed-over file, its reader's end or its failure.
    pub(super) fn on_file_read(&mut self, now: Instant, read: FileRead) {
        match read {
            FileRead::Piece {
                from,
                header,
                bytes,
            } => self.on_chunk(now, from, header, &bytes),
            FileRead::Done { from, header } => {
                // Every file read and the set still short: they were cut.
                if self.node.wants_chunk(&from, &header) {
                    let error =
                        "the handed-over blob files were shorter than their blobs".to_owned();
                    self.file_read_failed(now, from, header, error);
                }
            }
            FileRead::Failed {
                from,
                header,
                error,
            } => {
                if self.node.wants_chunk(&from, &header) {
                    self.file_read_failed(now, from, header, error);
                }
            }
        }
    }

    fn file_read_failed(&mut self, now: Instant, from: PeerId, h: ChunkHeader, error: String) {
        self.receivers.remove(&(h.job_id, h.direction));
        let failed = NodeInput::BlobFilesFailed {
            from,
            job_id: h.job_id,
            direction: h.direction,
            error,
        };
        self.feed(now, failed);
    }

    /// The received blobs of a result of ours belong to its `attempt`.
    pub(super) fn result_blobs(&mut self, job_id: JobId, attempt: u32) {
        let Some(rx) = self.receivers.remove(&(job_id, Direction::Output)) else {
            return;
        };
        match rx.finish() {
            Ok(blobs) => {
                self.telemetry.blobs_received(&blobs);
                self.results.insert(job_id, (attempt, blobs));
            }
            Err(why) => warn!(%job_id, %why, "a complete set of result blobs would not open"),
        }
    }

    /// A self-dispatched job's output blobs are its result's.
    pub(super) fn local_result_blobs(&mut self, job_id: JobId, attempt: u32) {
        let Some(outputs) = self.outputs.remove(&job_id) else {
            return;
        };
        let outputs = Arc::try_unwrap(outputs).unwrap_or_else(|o| (*o).clone());
        let blobs = outputs
            .into_iter()
            .map(ReceivedBlob::from_prepared)
            .collect();
        self.results.insert(job_id, (attempt, blobs));
    }

    /// Streams a job's blobs (its inputs, or its result's) to `to` on
    /// `link` in a task, or hands them over as files when `handover` (the
    /// node's word that `to` shares the directory) and they fit; dropping
    /// its guard (`StopSending`) stops it.
    pub(super) fn send_blobs(
        &mut self,
        job_id: JobId,
        direction: Direction,
        to: PeerId,
        link_id: LinkId,
        attempt: u32,
        handover: bool,
    ) {
        let blobs = match direction {
            Direction::Input => self.job_blobs.get(&job_id),
            Direction::Output => self.outputs.get(&job_id),
        };
        let (Some(blobs), Some(Connection::Open(link))) =
            (blobs.cloned(), self.links.get(&link_id))
        else {
            let _ = self.transfer_tx.try_send(TransferDone {
                job_id,
                direction,
                to,
                attempt,
                result: Err(SendBlobError::Closed),
                handed: None,
            });
            return;
        };
        let handover = self.handover.clone().filter(|_| handover);
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
                    let handed = match handover {
                        Some(dir) => {
                            hand_over(dir, &bulk, direction, job_id, attempt, &blobs).await
                        }
                        None => None,
                    };
                    let r = match handed {
                        Some(Ok(handed)) => Ok(Some(handed)),
                        Some(Err(e)) => Err(e),
                        None => blobs::send(&bulk, direction, job_id, attempt, &blobs)
                            .await
                            .map(|()| None),
                    };
                    let secs = started.elapsed().as_secs_f64().max(1e-6);
                    info!(
                        bytes,
                        mb_per_s = bytes as f64 / secs / 1e6,
                        ok = r.is_ok(),
                        as_files = matches!(r, Ok(Some(_))),
                        "blobs sent"
                    );
                    r
                };
                let (result, handed) = match tokio::select! {
                    () = stop.cancelled() => return,
                    r = send => r,
                } {
                    Ok(handed) => (Ok(()), handed),
                    Err(e) => (Err(e), None),
                };
                // Overflow: waits; at most `transfers_per_link` per link.
                let _ = done
                    .send(TransferDone {
                        job_id,
                        direction,
                        to,
                        attempt,
                        result,
                        handed,
                    })
                    .await;
            }
            .instrument(tracing::info_span!("upload", %job_id, ?direction, to = %to.short())),
        );
        self.sending
            .insert((job_id, direction), cancel.drop_guard());
    }

    /// An upload task ended: the node hears how.
    pub(super) fn on_transfer_done(&mut self, now: Instant, t: TransferDone) {
        self.sending.remove(&(t.job_id, t.direction));
        if let Some(handed) = t.handed {
            Metrics::bump(&self.metrics.blob_sets_handed_over);
            self.handed.insert((t.job_id, t.direction), handed);
        }
        let result = match t.result {
            Ok(()) => Ok(()),
            Err(SendBlobError::Closed) => Err(("the link closed".to_owned(), true)),
            Err(e) => Err((e.to_string(), false)),
        };
        let sent = NodeInput::BlobsSent {
            job_id: t.job_id,
            direction: t.direction,
            to: t.to,
            attempt: t.attempt,
            result,
        };
        self.feed(now, sent);
    }
}

/// Writes `blobs` as files in the handover directory (on a blocking
/// thread) and sends the `blob_files` message in place of their chunks.
/// `None`: they did not fit its budget, or could not be written; the
/// caller sends chunks.
async fn hand_over(
    dir: Arc<HandoverDir>,
    bulk: &BulkSender,
    direction: Direction,
    job_id: JobId,
    attempt: u32,
    blobs: &Arc<Vec<Prepared>>,
) -> Option<Result<Handed, SendBlobError>> {
    let files = blobs.clone();
    let written =
        tokio::task::spawn_blocking(move || dir.hand_over(job_id, attempt, direction, &files))
            .await;
    let handed = match written {
        Ok(Ok(Some(handed))) => handed,
        Ok(Ok(None)) => {
            debug!(%job_id, "over the handover budget: the blobs go as chunks");
            return None;
        }
        Ok(Err(e)) => {
            warn!(%job_id, error = %e, "cannot write to the handover directory: the blobs go as chunks");
            return None;
        }
        Err(_) => return None,
    };
    let msg = DcMsg::BlobFiles {
        job_id,
        attempt,
        direction,
        files: handed.names(),
    };
    // Behind the bulk queue like chunks, and on the wire before the result.
    let sent = async {
        bulk.send(msg.encode()).await?;
        bulk.flush().await
    };
    Some(
        sent.await
            .map(|()| handed)
            .map_err(|_| SendBlobError::Closed),
    )
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
