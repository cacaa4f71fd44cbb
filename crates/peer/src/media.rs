//! The built-in media handlers: `thumbnail` (decode, resize, encode in this
//! process, on a blocking thread) and `ocr` (the `tesseract` program as a
//! child process). Both take their image as input blob 0.
//!
//! Each is behind the cargo feature of its name (`media`: both), off by
//! default; this module exists when one of them is on. It implements the
//! handler API and is registered by `handlers::builtin`.

#[cfg(feature = "ocr")]
use jobmesh_ocr::OcrError;
#[cfg(feature = "thumbnail")]
use jobmesh_thumbnail::{Limits, Params, ThumbError};
use serde_json::Value;

#[cfg(feature = "thumbnail")]
use crate::blobs::Blob;
use crate::handler::{Handler, HandlerError, JobContext};

/// Memory the thumbnail jobs of one worker may take at once: 1 GiB, of
/// decoded pixels and their copies as estimated from each image's header
/// ([`jobmesh_thumbnail::memory_estimate`]). A job waits for its share; one
/// that needs more than the whole waits to run alone.
#[cfg(feature = "thumbnail")]
pub const THUMBNAIL_MEMORY: u64 = 1 << 30;

#[cfg(feature = "thumbnail")]
const MIB: u64 = 1 << 20;

#[cfg(feature = "thumbnail")]
/// `thumbnail`: one image (JPEG, PNG, WebP, GIF) in blob 0; params `width`,
/// `height`, `fit`, `format`, `quality`; the thumbnail comes back as blob 0
/// and `{width, height, format, bytes}` as the result.
#[derive(Debug)]
pub struct Thumbnail {
    /// Decompression-bomb and input-size limits.
    pub limits: Limits,
    /// [`THUMBNAIL_MEMORY`], in MiB permits.
    memory: std::sync::Arc<tokio::sync::Semaphore>,
}

#[cfg(feature = "thumbnail")]
impl Default for Thumbnail {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            memory: std::sync::Arc::new(tokio::sync::Semaphore::new(
                (THUMBNAIL_MEMORY / MIB) as usize,
            )),
        }
    }
}

#[cfg(feature = "thumbnail")]
#[async_trait::async_trait]
impl Handler for Thumbnail {
    fn validate(&self, input: &Value) -> Result<(), String> {
        Params::from_json(input)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn run(&self, input: Value, ctx: JobContext) -> Result<Value, HandlerError> {
        let params =
            Params::from_json(&input).map_err(|e| HandlerError::permanent(e.to_string()))?;
        let image = first_blob(&ctx, "thumbnail")?;
        // Unreadable header: assume the worst (the decode will say why).
        let needed = jobmesh_thumbnail::memory_estimate(&image, &params).unwrap_or(u64::MAX);
        let permits = needed.div_ceil(MIB).clamp(1, THUMBNAIL_MEMORY / MIB) as u32;
        let memory = tokio::select! {
            held = self.memory.clone().acquire_many_owned(permits) => held
                .map_err(|_| HandlerError::transient("the thumbnail memory budget is closed"))?,
            () = ctx.cancelled().cancelled() => return Err(HandlerError::permanent("cancelled")),
        };
        ctx.progress(Some(10), Some("decoding"), None);
        let dir = ctx
            .work_dir()
            .map_err(|e| HandlerError::transient(format!("no work dir: {e}")))?
            .to_owned();
        let out = dir.join(format!("thumbnail.{}", params.format.as_str()));
        let limits = self.limits;
        let target = out.clone();
        let made = tokio::task::spawn_blocking(move || {
            let made = jobmesh_thumbnail::make_thumbnail(&image, &target, &params, &limits);
            drop(memory);
            made
        })
        .await
        .map_err(|e| HandlerError::permanent(format!("the thumbnail task failed: {e}")))?;
        let thumb = made.map_err(|e| match e {
            ThumbError::WriteOutput { .. } => HandlerError::transient(e.to_string()),
            other => HandlerError::permanent(other.to_string()),
        })?;
        ctx.attach(Blob::from_file(&out));
        ctx.progress(Some(100), Some("done"), None);
        serde_json::to_value(thumb).map_err(|e| HandlerError::permanent(e.to_string()))
    }
}

#[cfg(feature = "ocr")]
/// `ocr`: one image in blob 0; params `lang` (default `eng`) and `words`;
/// the result is `{text, mean_confidence}` plus word boxes with `words`.
#[derive(Debug, Default)]
pub struct Ocr;

#[cfg(feature = "ocr")]
impl Ocr {
    /// Checks that `tesseract` and its English data are installed.
    pub fn check() -> Result<(), String> {
        jobmesh_ocr::check_installed(jobmesh_ocr::DEFAULT_LANG).map_err(|e| e.to_string())
    }
}

#[cfg(feature = "ocr")]
#[async_trait::async_trait]
impl Handler for Ocr {
    fn validate(&self, input: &Value) -> Result<(), String> {
        jobmesh_ocr::Options::from_json(input)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn run(&self, input: Value, ctx: JobContext) -> Result<Value, HandlerError> {
        let opts = jobmesh_ocr::Options::from_json(&input)
            .map_err(|e| HandlerError::permanent(e.to_string()))?;
        let image = first_blob(&ctx, "ocr")?;
        let dir = ctx
            .work_dir()
            .map_err(|e| HandlerError::transient(format!("no work dir: {e}")))?
            .to_owned();
        let progress = |pct: u8, stage: &str| ctx.progress(Some(pct), Some(stage), None);
        let result = jobmesh_ocr::recognise(&image, &dir, &opts, ctx.cancelled(), &progress)
            .await
            .map_err(|e| match e {
                OcrError::Cancelled => HandlerError::permanent("cancelled"),
                OcrError::Spawn { .. } | OcrError::WorkDir { .. } => {
                    HandlerError::transient(e.to_string())
                }
                other => HandlerError::permanent(other.to_string()),
            })?;
        serde_json::to_value(result).map_err(|e| HandlerError::permanent(e.to_string()))
    }
}

/// The job's first input blob, or an error saying the handler needs one.
fn first_blob(ctx: &JobContext, name: &str) -> Result<std::path::PathBuf, HandlerError> {
    ctx.blobs().first().map(|b| b.path.clone()).ok_or_else(|| {
        HandlerError::permanent(format!(
            "{name} needs an image as input blob 0 (peer submit {name} --file IMAGE)"
        ))
    })
}

#[cfg(all(test, feature = "thumbnail"))]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::blobs::{InputBlob, Spool};
    use crate::handler::JobFiles;

    /// A context whose input blob 0 is the test fixture's scan (a PNG).
    fn ctx(dir: &std::path::Path, cancel: CancellationToken) -> JobContext {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/scan.png");
        let input = InputBlob {
            name: None,
            size: std::fs::metadata(&path).expect("meta").len(),
            path,
        };
        let spool = Arc::new(Spool::new(Some(dir)).expect("spool"));
        let files = Arc::new(JobFiles::new(vec![input], spool, None));
        let (tx, _rx) = mpsc::channel(64);
        JobContext::with_files(uuid::Uuid::new_v4(), cancel, tx, files)
    }

    #[tokio::test]
    async fn a_thumbnail_waits_for_its_memory_and_can_be_cancelled_meanwhile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let thumb = Thumbnail::default();
        let input = serde_json::json!({"width": 8});
        // Other jobs hold the whole budget.
        let all = (THUMBNAIL_MEMORY / MIB) as u32;
        let held = thumb
            .memory
            .clone()
            .acquire_many_owned(all)
            .await
            .expect("permits");
        let cancel = CancellationToken::new();
        let waiting = thumb.run(input.clone(), ctx(dir.path(), cancel.clone()));
        tokio::pin!(waiting);
        assert!(
            futures_util::poll!(waiting.as_mut()).is_pending(),
            "waits for memory"
        );
        cancel.cancel();
        let e = waiting.await.expect_err("cancelled while waiting");
        assert_eq!(e.message, "cancelled");
        // Once the memory is free, a job runs, and gives its share back.
        drop(held);
        let done = thumb
            .run(input, ctx(dir.path(), CancellationToken::new()))
            .await
            .expect("a thumbnail");
        assert_eq!(done["width"], 8);
        assert_eq!(thumb.memory.available_permits(), all as usize);
    }
}
