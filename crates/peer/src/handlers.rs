//! The built-in handlers and the registry a daemon starts from: `echo`
//! and `sleep` here, `thumbnail` and `ocr` in `media` (cargo features), and
//! [`builtin`], which finds the handler of each capability asked for or
//! says why there is none.
//!
//! The handler API itself ([`Handler`], [`JobContext`], [`HandlerError`],
//! [`handler_fn`]) lives in a module below this one and `media`, and is
//! re-exported here: imports point one way, `handlers` → `media` →
//! the handler API.

use std::sync::Arc;
use std::time::Duration;

use jobmesh_wire::Capability;
use serde_json::{json, Value};

use crate::blobs::Blob;
pub(crate) use crate::handler::JobFiles;
pub use crate::handler::{
    handler_fn, FnHandler, Handler, HandlerError, Handlers, JobContext, SharedHandlers,
};

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

/// The built-in capabilities of this build: `echo` and `sleep`, and each of
/// [`OPTIONAL`] whose cargo feature is on.
pub const BUILTIN: &[&str] = &[
    "echo",
    "sleep",
    #[cfg(feature = "thumbnail")]
    "thumbnail",
    #[cfg(feature = "ocr")]
    "ocr",
];

/// The built-in capabilities behind a cargo feature of this crate, each
/// named after its feature (`media` turns on both). Without its feature a
/// capability is not compiled in, and [`builtin`] refuses it by name.
pub const OPTIONAL: &[&str] = &["thumbnail", "ocr"];

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
    /// A built-in handler left out of this build: its cargo feature is off.
    #[error("capability {name:?} is not in this build: it needs the cargo feature {feature:?} of jobmesh-peer (or \"media\"; the jobmesh crate has the same features)")]
    NotBuilt {
        /// The capability.
        name: String,
        /// The feature that builds it in.
        feature: &'static str,
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

/// Built-in handlers for the given capabilities, each checked to be able to
/// run here (`ocr` needs `tesseract`), or the first that cannot: unknown,
/// left out of this build ([`OPTIONAL`]), or missing its tools.
pub fn builtin(caps: &[Capability]) -> Result<Handlers, CapabilityError> {
    caps.iter()
        .map(|c| {
            let h: Arc<dyn Handler> = match c.as_str() {
                "echo" => Arc::new(Echo),
                "sleep" => Arc::new(Sleep),
                #[cfg(feature = "thumbnail")]
                "thumbnail" => Arc::new(crate::media::Thumbnail::default()),
                #[cfg(feature = "ocr")]
                "ocr" => {
                    crate::media::Ocr::check().map_err(|problem| CapabilityError::Unavailable {
                        name: c.to_string(),
                        problem,
                    })?;
                    Arc::new(crate::media::Ocr)
                }
                other => return Err(refused(other)),
            };
            Ok((c.clone(), h))
        })
        .collect()
}

/// Why `name` has no built-in handler in this build.
fn refused(name: &str) -> CapabilityError {
    match OPTIONAL.iter().find(|f| **f == name) {
        Some(feature) => CapabilityError::NotBuilt {
            name: name.to_owned(),
            feature,
        },
        None => CapabilityError::Unknown {
            name: name.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use jobmesh_wire::dc::{JobId, Progress};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

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
        assert!(err.to_string().contains(&BUILTIN.join(", ")), "{err}");
        assert!(err.to_string().contains("echo, sleep"), "{err}");
    }

    #[test]
    fn a_media_capability_left_out_of_the_build_is_refused_naming_its_feature() {
        for name in OPTIONAL {
            let err = refused(name);
            assert!(
                matches!(&err, CapabilityError::NotBuilt { feature, .. } if feature == name),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{name:?}")) && msg.contains("cargo feature"),
                "{msg}"
            );
        }
        assert!(matches!(refused("resize"), CapabilityError::Unknown { .. }));
    }

    #[cfg(not(feature = "thumbnail"))]
    #[test]
    fn without_its_feature_thumbnail_is_not_built_in() {
        let caps = [Capability::new("thumbnail").expect("valid")];
        let err = builtin(&caps).err().expect("refused");
        assert!(
            matches!(
                err,
                CapabilityError::NotBuilt {
                    feature: "thumbnail",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!BUILTIN.contains(&"thumbnail"));
    }

    #[cfg(feature = "thumbnail")]
    #[test]
    fn with_its_feature_thumbnail_is_built_in() {
        let caps = [Capability::new("thumbnail").expect("valid")];
        assert_eq!(builtin(&caps).expect("built in").len(), 1);
        assert!(BUILTIN.contains(&"thumbnail"));
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
