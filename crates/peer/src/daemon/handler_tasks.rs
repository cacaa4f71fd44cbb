//! Handler tasks: each job this peer runs, in a tracked task under its
//! timeout with a cancel token, a progress sender and its files; its end
//! goes back to the loop as a `JobDone`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobmesh_node::NodeInput;
use jobmesh_wire::dc::JobId;
use jobmesh_wire::Capability;
use serde_json::Value;
use tracing::{info, info_span, Instrument};

use super::blob_io::{self, HandlerFiles};
use super::{Daemon, JobDone};
use crate::api::Metrics;
use crate::handlers::{Handler, HandlerError, JobContext};

/// How long a timed-out handler gets to stop after its cancel token fires
/// (an exec handler needs up to its SIGTERM→SIGKILL grace).
const HANDLER_STOP_GRACE: Duration = Duration::from_secs(3);

impl Daemon {
    /// Runs a job's handler in a task, under its timeout.
    pub(super) fn launch(
        &mut self,
        job_id: JobId,
        capability: Capability,
        input: Value,
        timeout: Duration,
        inputs: HandlerFiles,
    ) {
        let handler = crate::read(&self.handlers).get(&capability).cloned();
        let Some(handler) = handler else {
            // Unreachable: the worker core admits only capabilities with handlers.
            let _ = self.done_tx.try_send(JobDone {
                job_id,
                result: Err(HandlerError::permanent("no handler")),
                outputs: Vec::new(),
            });
            return;
        };
        let token = self.jobs_cancel.child_token();
        self.running.insert(job_id, token.clone());
        let done = self.done_tx.clone();
        let progress = self.progress_tx.clone();
        let metrics = self.metrics.clone();
        let spool = self.spool.clone();
        let max_blob = self.config.blobs.max_blob_size;
        let timeout_ms = timeout.as_millis();
        self.tracker.spawn(
            async move {
                info!("job started");
                let files = match inputs {
                    HandlerFiles::Ready(files) => Ok(files),
                    HandlerFiles::Local(blobs) => {
                        blob_io::materialize(&spool, job_id, &blobs).await
                    }
                };
                let files = match files {
                    Ok(f) => f,
                    Err(e) => {
                        let result = Err(HandlerError::transient(format!(
                            "cannot spool the input blobs: {e}"
                        )));
                        let _ = done
                            .send(JobDone {
                                job_id,
                                result,
                                outputs: Vec::new(),
                            })
                            .await;
                        return;
                    }
                };
                let ctx = JobContext::with_files(job_id, token.clone(), progress, files.clone());
                let run = run_handler(handler, input, ctx);
                tokio::pin!(run);
                let result = tokio::select! {
                    r = &mut run => r,
                    () = tokio::time::sleep(timeout) => {
                        // Let the handler stop its work (kill its processes,
                        // remove its files) before the slot is freed, bounded.
                        token.cancel();
                        let _ = tokio::time::timeout(HANDLER_STOP_GRACE, &mut run).await;
                        Err(HandlerError::transient(format!(
                            "timed out on the worker after {timeout_ms} ms"
                        )))
                    }
                };
                if token.is_cancelled() {
                    Metrics::bump(&metrics.handlers_cancelled);
                }
                let attached = files.take_outputs();
                let (result, outputs) = match result {
                    Ok(value) if !attached.is_empty() => {
                        match crate::blobs::prepare(attached, max_blob, files.dir.get().cloned())
                            .await
                        {
                            Ok(outputs) => (Ok(value), outputs),
                            Err(e) => (
                                Err(HandlerError::permanent(format!(
                                    "the handler's output blobs: {e}"
                                ))),
                                Vec::new(),
                            ),
                        }
                    }
                    other => (other, Vec::new()),
                };
                drop(files);
                // Overflow: waits; at most `slots` handler tasks exist.
                let _ = done
                    .send(JobDone {
                        job_id,
                        result,
                        outputs,
                    })
                    .await;
            }
            .instrument(info_span!("job", %job_id, %capability)),
        );
    }

    pub(super) fn on_job_done(&mut self, now: Instant, done: JobDone) {
        let JobDone {
            job_id,
            result,
            outputs,
        } = done;
        self.running.remove(&job_id);
        info!(%job_id, ok = result.is_ok(), blobs = outputs.len(), "job finished");
        let metas = outputs.iter().map(|b| b.meta.clone()).collect();
        if !outputs.is_empty() {
            self.outputs.insert(job_id, Arc::new(outputs));
        }
        let done = NodeInput::HandlerDone {
            job_id,
            result: result.map_err(|e| (e.message, e.retryable)),
            outputs: metas,
        };
        self.feed(now, done);
    }
}

/// Runs a handler, turning a panic into a failed job rather than a dead task.
async fn run_handler(
    handler: Arc<dyn Handler>,
    input: Value,
    ctx: JobContext,
) -> Result<Value, HandlerError> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(handler.run(input, ctx))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(HandlerError::permanent("the handler panicked")))
}
