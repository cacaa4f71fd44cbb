//! Job handlers: what a worker runs for each capability it advertises.
//!
//! A handler validates its input before the job is accepted (so bad input is
//! a rejection, not a failed run) and then runs with a cancellation token that
//! fires on cancel, timeout or shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jobmesh_wire::Capability;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// A handler's failure, reported to the submitter as the job's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

/// One capability's implementation.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Checks the input; `Err` rejects the job with `bad_input`.
    fn validate(&self, input: &Value) -> Result<(), String> {
        let _ = input;
        Ok(())
    }

    /// Runs the job. Should return soon after `cancel` fires.
    async fn run(&self, input: Value, cancel: CancellationToken) -> Result<Value, HandlerError>;
}

/// `echo`: returns its input.
#[derive(Debug)]
pub struct Echo;

#[async_trait::async_trait]
impl Handler for Echo {
    async fn run(&self, input: Value, _cancel: CancellationToken) -> Result<Value, HandlerError> {
        Ok(input)
    }
}

/// `sleep`: `{"ms": N}` waits N milliseconds (at most an hour), returns `{"slept_ms": N}`.
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

    async fn run(&self, input: Value, cancel: CancellationToken) -> Result<Value, HandlerError> {
        let ms = sleep_ms(&input).map_err(HandlerError)?;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!({ "slept_ms": ms })),
            () = cancel.cancelled() => Err(HandlerError("cancelled".into())),
        }
    }
}

/// The capabilities this build can run.
pub const BUILTIN: &[&str] = &["echo", "sleep"];

/// Why a capability list was refused at start.
#[derive(Debug, thiserror::Error)]
#[error("unknown capability {name:?}; this peer can run: {}", BUILTIN.join(", "))]
pub struct UnknownCapability {
    /// The name given.
    pub name: String,
}

/// Handlers for the given capabilities, or the first unknown name.
pub fn registry(
    caps: &[Capability],
) -> Result<HashMap<Capability, Arc<dyn Handler>>, UnknownCapability> {
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
        let err = registry(&caps).err().expect("refused");
        assert!(err.to_string().contains("\"ocr\""), "{err}");
        assert!(err.to_string().contains("echo, sleep"), "{err}");
    }

    #[tokio::test]
    async fn sleep_stops_on_cancel() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let r = Sleep.run(json!({"ms": MAX_SLEEP_MS}), cancel).await;
        assert_eq!(r, Err(HandlerError("cancelled".into())));
    }
}
