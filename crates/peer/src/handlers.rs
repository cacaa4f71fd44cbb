//! Job handlers: what a worker runs for each capability it advertises.
//!
//! A handler validates its input before the job is accepted (so bad input is
//! a rejection, not a failed run) and then runs with a [`JobContext`]: a
//! cancellation token that fires on cancel, timeout or shutdown, a way to
//! report progress, the job's input blobs as files, a private work directory,
//! and a way to attach output blobs to the result.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jobmesh_wire::dc::{JobId, Progress};
use jobmesh_wire::Capability;
use serde_json::{json, Value};
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

/// `echo`: returns its input, blobs included.
#[derive(Debug)]
pub struct Echo;

#[async_trait::async_trait]
impl Handler for Echo {
    async fn run(&self, input: Value, ctx: JobContext) -> Result<Value, HandlerError> {
        for b in ctx.blobs() {
            ctx.attach(Blob::from_file(&b.path).named(b.name.clone()));
        }
        Ok(input)
    }
}

/// `sleep`: `{"ms": N}` waits N milliseconds (at most an hour), reporting
/// progress every tenth, and returns `{"slept_ms": N}`.
#[derive(Debug)]
pub struct Sleep;

const MAX_SLEEP_MS: u64 = 3_600_000;

fn sleep_ms(input: &Value) -> Result<u64, String> {
    input
        .get("ms")
        .and_then(Value::as_u64)
        .filter(|ms| *ms <= MAX_SLEEP_MS)
        .ok_or_else(|| format!("sleep needs {{\"ms\": N}} with 0 <= N <= {MAX_SLEEP_MS}"))
}

#[async_trait::async_trait]
impl Handler for Sleep {
    fn validate(&self, input: &Value) -> Result<(), String> {
        sleep_ms(input).map(|_| ())
    }

    async fn run(&self, input: Value, ctx: JobContext) -> Result<Value, HandlerError> {
        let ms = sleep_ms(&input).map_err(HandlerError::permanent)?;
        let tenth = Duration::from_millis(ms) / 10;
        for step in 0..10u8 {
            ctx.progress(Some(step * 10), Some("sleeping"), None);
            tokio::select! {
                () = tokio::time::sleep(tenth) => {}
                () = ctx.cancelled().cancelled() => return Err(HandlerError::permanent("cancelled")),
            }
        }
        ctx.progress(Some(100), Some("done"), None);
        Ok(json!({ "slept_ms": ms }))
    }
}

/// The capabilities this build can run.
pub const BUILTIN: &[&str] = &["echo", "sleep", "thumbnail", "ocr"];

/// Why a capability was refused at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CapabilityError {
    /// No such built-in handler.
    #[error("unknown capability {name:?}; built in: {}; or declare it as an exec handler in --config", BUILTIN.join(", "))]
    Unknown {
        /// The name given.
        name: String,
    },
    /// A built-in handler whose tools are missing on this machine.
    #[error("capability {name:?} cannot run here: {problem}")]
    Unavailable {
        /// The capability.
        name: String,
        /// What is missing and how to install it.
        problem: String,
    },
}

/// The handlers a daemon runs, by capability.
pub type Handlers = HashMap<Capability, Arc<dyn Handler>>;

/// Built-in handlers for the given capabilities, each checked to be able to
/// run here (`ocr` needs `tesseract`), or the first that cannot.
pub fn builtin(caps: &[Capability]) -> Result<Handlers, CapabilityError> {
    caps.iter()
        .map(|c| {
            let h: Arc<dyn Handler> = match c.as_str() {
                "echo" => Arc::new(Echo),
                "sleep" => Arc::new(Sleep),
                "thumbnail" => Arc::new(crate::media::Thumbnail::default()),
                "ocr" => {
                    crate::media::Ocr::check().map_err(|problem| CapabilityError::Unavailable {
                        name: c.to_string(),
                        problem,
                    })?;
                    Arc::new(crate::media::Ocr)
                }
                other => {
                    return Err(CapabilityError::Unknown {
                        name: other.to_owned(),
                    })
                }
            };
            Ok((c.clone(), h))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> (JobContext, mpsc::Receiver<(JobId, Progress)>) {
        let (tx, rx) = mpsc::channel(64);
        (
            JobContext::new(uuid::Uuid::nil(), CancellationToken::new(), tx),
            rx,
        )
    }

    #[test]
    fn sleep_validates_its_input() {
        assert!(Sleep.validate(&json!({"ms": 5})).is_ok());
        assert!(Sleep.validate(&json!({"ms": -1})).is_err());
        assert!(Sleep.validate(&json!({"ms": MAX_SLEEP_MS + 1})).is_err());
        assert!(Sleep.validate(&json!("x")).is_err());
    }

    #[test]
    fn unknown_capabilities_are_named() {
        let caps = [Capability::new("resize").expect("valid")];
        let err = builtin(&caps).err().expect("refused");
        assert!(err.to_string().contains("\"resize\""), "{err}");
        assert!(
            err.to_string().contains("echo, sleep, thumbnail, ocr"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn sleep_stops_on_cancel() {
        let (ctx, _rx) = ctx();
        ctx.cancelled().cancel();
        let r = Sleep.run(json!({"ms": MAX_SLEEP_MS}), ctx).await;
        assert_eq!(r, Err(HandlerError::permanent("cancelled")));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_reports_progress_in_order() {
        let (ctx, mut rx) = ctx();
        let r = Sleep.run(json!({"ms": 100}), ctx).await;
        assert_eq!(r, Ok(json!({"slept_ms": 100})));
        let mut percents = Vec::new();
        while let Ok((_, p)) = rx.try_recv() {
            percents.push(p.percent.unwrap_or_default());
        }
        assert_eq!(percents, vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    }
}
