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

#[cfg(feature = "thumbnail")]
/// `thumbnail`: one image (JPEG, PNG, WebP, GIF) in blob 0; params `width`,
/// `height`, `fit`, `format`, `quality`; the thumbnail comes back as blob 0
/// and `{width, height, format, bytes}` as the result.
#[derive(Debug, Default)]
pub struct Thumbnail {
    /// Decompression-bomb and input-size limits.
    pub limits: Limits,
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
        ctx.progress(Some(10), Some("decoding"), None);
        let dir = ctx
            .work_dir()
            .map_err(|e| HandlerError::transient(format!("no work dir: {e}")))?
            .to_owned();
        let out = dir.join(format!("thumbnail.{}", params.format.as_str()));
        let limits = self.limits;
        let target = out.clone();
        let made = tokio::task::spawn_blocking(move || {
            jobmesh_thumbnail::make_thumbnail(&image, &target, &params, &limits)
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
