//! One handler: the [`Handler`] trait a capability's implementation
//! implements, and the [`JobContext`] it runs with.
//!
//! A handler validates its input before the job is accepted (so bad input is
//! a rejection, not a failed run) and then runs with a [`JobContext`]: a
//! cancellation token that fires on cancel, timeout or shutdown, a way to
//! report progress, the job's input blobs as files, a private work directory,
//! and a way to attach output blobs to the result.
//!
//! Every handler imports this module: the built-ins (`handlers`, `media`)
//! and `exec`; it imports only [`crate::blobs`] and the crates underneath.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use jobmesh_wire::dc::{JobId, Progress};
use jobmesh_wire::Capability;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::blobs::{Blob, InputBlob, Spool, SpoolDir};

/// A handler's failure, reported to the submitter as the job's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// What went wrong.
    pub message: String,
    /// Whether running the job again (perhaps elsewhere) might succeed.
    pub retryable: bool,
}

impl HandlerError {
    /// A failure a retry will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure a retry may fix.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }
}

/// What a running handler gets besides its input.
#[derive(Debug, Clone)]
pub struct JobContext {
    job_id: JobId,
    cancel: CancellationToken,
    progress: mpsc::Sender<(JobId, Progress)>,
    files: Arc<JobFiles>,
}

/// A job's files: input blobs, work directory, attached outputs.
#[derive(Debug, Default)]
pub(crate) struct JobFiles {
    pub(crate) inputs: Vec<InputBlob>,
    /// Where the work directory is made (a private spool of its own when
    /// the context was built without one).
    spool: OnceLock<Arc<Spool>>,
    /// Created on first use; holds the input blobs when they came over a link.
    pub(crate) dir: OnceLock<Arc<SpoolDir>>,
    outputs: Mutex<Vec<Blob>>,
}

impl JobFiles {
    pub(crate) fn new(
        inputs: Vec<InputBlob>,
        spool: Arc<Spool>,
        dir: Option<Arc<SpoolDir>>,
    ) -> Self {
        let cell = OnceLock::new();
        if let Some(d) = dir {
            let _ = cell.set(d);
        }
        Self {
            inputs,
            spool: OnceLock::from(spool),
            dir: cell,
            outputs: Mutex::default(),
        }
    }

    pub(crate) fn take_outputs(&self) -> Vec<Blob> {
        std::mem::take(&mut *crate::lock(&self.outputs))
    }
}

impl JobContext {
    /// A context for `job_id` reporting progress into `progress`, without
    /// blobs (for tests of handlers; the daemon builds richer ones).
    pub fn new(
        job_id: JobId,
        cancel: CancellationToken,
        progress: mpsc::Sender<(JobId, Progress)>,
    ) -> Self {
        Self::with_files(job_id, cancel, progress, Arc::default())
    }

    pub(crate) fn with_files(
        job_id: JobId,
        cancel: CancellationToken,
        progress: mpsc::Sender<(JobId, Progress)>,
        files: Arc<JobFiles>,
    ) -> Self {
        Self {
            job_id,
            cancel,
            progress,
            files,
        }
    }

    /// The job's input blobs, as files (read them; they are removed when the job ends).
    pub fn blobs(&self) -> &[InputBlob] {
        &self.files.inputs
    }

    /// A private directory for this job's files, removed with everything in
    /// it when the job ends (also on failure, cancel and timeout).
    pub fn work_dir(&self) -> io::Result<&Path> {
        if let Some(d) = self.files.dir.get() {
            return Ok(d.path());
        }
        let spool = match self.files.spool.get() {
            Some(s) => s,
            None => {
                let own = Arc::new(Spool::new(None)?);
                self.files.spool.get_or_init(|| own)
            }
        };
        let dir = spool.dir(self.job_id, "work")?;
        Ok(self.files.dir.get_or_init(|| dir).path())
    }

    /// Attaches a blob to the job's result. A file should live in
    /// [`work_dir`](Self::work_dir) (or stay put until the job ended): it is
    /// read when the result is sent.
    pub fn attach(&self, blob: Blob) {
        crate::lock(&self.files.outputs).push(blob);
    }

    /// The job's id.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// Fires when the job is cancelled, times out, or the worker shuts down.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Reports progress. Never waits: when the daemon is behind, the report is
    /// dropped (reports are coalesced anyway; the next one carries the news).
    pub fn progress(&self, percent: Option<u8>, stage: Option<&str>, message: Option<&str>) {
        let p = Progress {
            percent: percent.map(|p| p.min(100)),
            stage: stage
                .map(|s| jobmesh_wire::truncate(s, jobmesh_wire::dc::MAX_PROGRESS_TEXT - 4)),
            message: message
                .map(|s| jobmesh_wire::truncate(s, jobmesh_wire::dc::MAX_PROGRESS_TEXT - 4)),
        };
        let _ = self.progress.try_send((self.job_id, p));
    }
}

/// One capability's implementation.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Checks the input; `Err` rejects the job with `bad_input`.
    fn validate(&self, input: &Value) -> Result<(), String> {
        let _ = input;
        Ok(())
    }

    /// Runs the job. Should return soon after `ctx.cancelled()` fires.
    async fn run(&self, input: Value, ctx: JobContext) -> Result<Value, HandlerError>;
}

/// A handler made of an async function, for [`handler_fn`].
pub struct FnHandler<F> {
    f: F,
}

/// Wraps an async function `(input, ctx) -> Result<Value, HandlerError>` as a [`Handler`].
pub fn handler_fn<F, Fut>(f: F) -> FnHandler<F>
where
    F: Fn(Value, JobContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    FnHandler { f }
}

#[async_trait::async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Value, JobContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    async fn run(&self, input: Value, ctx: JobContext) -> Result<Value, HandlerError> {
        (self.f)(input, ctx).await
    }
}

/// The handlers a daemon runs, by capability.
pub type Handlers = HashMap<Capability, Arc<dyn Handler>>;

/// [`Handlers`] shared by a daemon and its node's input checks, changed at
/// run time (`PeerHandle::add_capability`); held only for a lookup or an
/// insert.
pub type SharedHandlers = Arc<std::sync::RwLock<Handlers>>;
