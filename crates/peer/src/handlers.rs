//! Job handlers: what a worker runs for each capability it advertises.
//!
//! A handler validates its input before the job is accepted (so bad input is
//! a rejection, not a failed run) and then runs with a [`JobContext`]: a
//! cancellation token that fires on cancel, timeout or shutdown, and a way to
//! report progress.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jobmesh_wire::dc::{JobId, Progress};
use jobmesh_wire::Capability;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
}

impl JobContext {
    /// A context for `job_id` reporting progress into `progress`.
    pub fn new(
        job_id: JobId,
        cancel: CancellationToken,
        progress: mpsc::Sender<(JobId, Progress)>,
    ) -> Self {
        Self {
            job_id,
            cancel,
            progress,
        }
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

/// `echo`: returns its input.
#[derive(Debug)]
pub struct Echo;

#[async_trait::async_trait]
impl Handler for Echo {
    async fn run(&self, input: Value, _ctx: JobContext) -> Result<Value, HandlerError> {
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
pub const BUILTIN: &[&str] = &["echo", "sleep"];

/// Why a capability list was refused at start.
#[derive(Debug, thiserror::Error)]
#[error("unknown capability {name:?}; built in: {}; or declare it as an exec handler in --config", BUILTIN.join(", "))]
pub struct UnknownCapability {
    /// The name given.
    pub name: String,
}

/// The handlers a daemon runs, by capability.
pub type Handlers = HashMap<Capability, Arc<dyn Handler>>;

/// Built-in handlers for the given capabilities, or the first unknown name.
pub fn builtin(caps: &[Capability]) -> Result<Handlers, UnknownCapability> {
    caps.iter()
        .map(|c| {
            let h: Arc<dyn Handler> = match c.as_str() {
                "echo" => Arc::new(Echo),
                "sleep" => Arc::new(Sleep),
                other => {
                    return Err(UnknownCapability {
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
        let caps = [Capability::new("ocr").expect("valid")];
        let err = builtin(&caps).err().expect("refused");
        assert!(err.to_string().contains("\"ocr\""), "{err}");
        assert!(err.to_string().contains("echo, sleep"), "{err}");
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
