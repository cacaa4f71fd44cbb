//! OCR for jobmesh: one `tesseract` process per image.
//!
//! [`recognise`] checks the image (a regular file, at most [`MAX_IMAGE_BYTES`]
//! and [`MAX_PIXELS`], with the signature of a format tesseract reads), runs
//! `tesseract IMAGE WORK_DIR/ocr -l LANG tsv` once, and rebuilds the text,
//! the mean word confidence and (optionally) the word boxes from the TSV, so
//! no second process is needed for plain text.
//!
//! The child process is bounded: stdin is null, stdout discarded, only the
//! last [`STDERR_TAIL_LINES`] lines of stderr are kept (for error messages),
//! `OMP_THREAD_LIMIT=1` stops tesseract's OpenMP from spinning every core,
//! and it runs in its own process group so a terminal's Ctrl-C reaches the
//! daemon, not the child. On cancellation the child is killed (SIGKILL) and
//! reaped before [`recognise`] returns [`OcrError::Cancelled`].
//!
//! [`check_installed`] tells the operator exactly which Debian package is
//! missing: `apt-get install tesseract-ocr tesseract-ocr-<lang>`.

mod options;
mod tsv;

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

pub use options::{Options, ParamError, ALLOWED_KEYS, DEFAULT_LANG, MAX_LANG_LEN};

/// The program that is run, looked up on `PATH`.
pub const TESSERACT: &str = "tesseract";
/// Largest image accepted, in bytes.
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;
/// Most pixels an image may have (width × height): tesseract holds several
/// copies of the page, so memory grows with pixels, not file size (a 88 KiB
/// PNG of 20000 × 20000 took 1.2 GB and 39 s). 100 megapixels is a page
/// of A3 at 600 dpi with room to spare. Checked from the header, before
/// tesseract starts.
pub const MAX_PIXELS: u64 = 100_000_000;
/// Bytes read from the front of an image to find its dimensions.
const HEADER_BYTES: usize = 256 * 1024;
/// Largest TSV output read back, in bytes.
pub const MAX_TSV_BYTES: u64 = 64 * 1024 * 1024;
/// How many trailing stderr lines are kept for error messages.
pub const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line kept; the rest of a longer line is dropped.
const STDERR_LINE_MAX: usize = 512;
/// How long [`check_installed`] waits for `tesseract --list-langs`.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Output base name inside the work directory (tesseract adds `.tsv`).
const OUT_BASE: &str = "ocr";

/// One recognised word.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    /// The word as recognised.
    pub text: String,
    /// Tesseract's confidence, 0–100 (-1 when it gave none).
    pub confidence: f32,
    /// Left edge of the bounding box, in image pixels.
    pub left: u32,
    /// Top edge of the bounding box, in image pixels.
    pub top: u32,
    /// Box width in pixels.
    pub width: u32,
    /// Box height in pixels.
    pub height: u32,
}

/// What [`recognise`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OcrResult {
    /// Recognised text: words joined by spaces, lines by `'\n'`.
    pub text: String,
    /// Mean confidence of the words that had one, 0–100 (0 with no words).
    pub mean_confidence: f32,
    /// Every word with its box, when [`Options::words`] was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<Word>>,
}

/// Why OCR failed. Messages say what was wrong and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OcrError {
    /// The options are invalid.
    #[error(transparent)]
    Options(#[from] ParamError),
    /// The `tesseract` program is not on `PATH`.
    #[error(
        "tesseract is not installed (no `{TESSERACT}` program on PATH); install it with: {install}"
    )]
    NotInstalled {
        /// The command that installs what is missing.
        install: String,
    },
    /// Tesseract has no data for a requested language.
    #[error("tesseract has no `{lang}` language data (installed: {available}); install it with: {install}")]
    LanguageMissing {
        /// The missing language.
        lang: String,
        /// The languages tesseract reported, comma-separated (or "unknown").
        available: String,
        /// The command that installs what is missing.
        install: String,
    },
    /// The image could not be read.
    #[error("cannot read image {}: {source}", path.display())]
    ReadImage {
        /// The image path as given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The image is not a regular file, is empty, or is too large.
    #[error("image {} {problem}", path.display())]
    BadImage {
        /// The image path as given.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The image does not start with the signature of a format tesseract reads.
    #[error(
        "image {} is not a supported image (PNG, JPEG, TIFF, BMP, GIF, WebP, PNM): \
         unrecognised file signature",
        path.display()
    )]
    UnsupportedImage {
        /// The image path as given.
        path: PathBuf,
    },
    /// The work directory could not be created or used.
    #[error("cannot use work directory {}: {source}", path.display())]
    WorkDir {
        /// The work directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Starting or waiting for the process failed.
    #[error("cannot run {TESSERACT}: {source}")]
    Spawn {
        /// The I/O error.
        source: std::io::Error,
    },
    /// Tesseract exited unsuccessfully.
    #[error("{TESSERACT} failed ({status}): {stderr}")]
    Failed {
        /// The exit code or signal, described.
        status: String,
        /// The last lines of its stderr.
        stderr: String,
    },
    /// `tesseract --list-langs` did not answer within [`CHECK_TIMEOUT`].
    #[error("`{TESSERACT} --list-langs` did not finish within {}s", CHECK_TIMEOUT.as_secs())]
    CheckTimedOut,
    /// Tesseract's output could not be read or parsed.
    #[error("cannot read {TESSERACT} output: {reason}")]
    Output {
        /// What was wrong.
        reason: String,
    },
    /// The cancellation token fired; the child (if any) was killed and reaped.
    #[error("ocr cancelled")]
    Cancelled,
}

/// The command that installs tesseract with the data for `lang`
/// (`"eng+deu"` → `apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu`).
pub fn install_command(lang: &str) -> String {
    let mut cmd = "apt-get install tesseract-ocr".to_owned();
    for part in lang.split('+').filter(|p| !p.is_empty()) {
        cmd.push_str(" tesseract-ocr-");
        // Debian names: chi_sim → tesseract-ocr-chi-sim.
        cmd.push_str(&part.to_ascii_lowercase().replace('_', "-"));
    }
    cmd
}

/// Checks that `tesseract` runs and has data for every language in `lang`
/// (`+`-separated), by running `tesseract --list-langs` for at most
/// [`CHECK_TIMEOUT`]. The error names the `apt-get install` command to run.
///
/// Blocking: call it at start-up or from `spawn_blocking`.
pub fn check_installed(lang: &str) -> Result<(), OcrError> {
    options::validate_lang(lang)?;
    let mut child = match std::process::Command::new(TESSERACT)
        .arg("--list-langs")
        .env("OMP_THREAD_LIMIT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OcrError::NotInstalled {
                install: install_command(lang),
            })
        }
        Err(source) => return Err(OcrError::Spawn { source }),
    };

    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(pipe) = pipe {
                // Bounded: a language list is a few kilobytes.
                let _ = pipe.take(1024 * 1024).read_to_end(&mut out);
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );

    let deadline = Instant::now() + CHECK_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(OcrError::CheckTimedOut);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(OcrError::Spawn { source });
            }
        }
    };
    // The child has exited, so its pipes close and the threads finish.
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(OcrError::Failed {
            status: describe(status),
            stderr: tail_of(&stderr),
        });
    }

    // Tesseract 4/5 print the list on stdout, 3.x on stderr.
    let available = parse_lang_list(&format!("{stdout}\n{stderr}"));
    match lang
        .split('+')
        .find(|part| !available.iter().any(|a| a == part))
    {
        None => Ok(()),
        Some(missing) => Err(OcrError::LanguageMissing {
            lang: missing.to_owned(),
            available: if available.is_empty() {
                "none".to_owned()
            } else {
                available.join(", ")
            },
            install: install_command(missing),
        }),
    }
}

/// The languages after the `List of available languages …` line.
fn parse_lang_list(out: &str) -> Vec<String> {
    out.lines()
        .skip_while(|l| !l.starts_with("List of available languages"))
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains(' '))
        .map(str::to_owned)
        .collect()
}

/// Recognises the text in `image` with one tesseract process.
///
/// `work_dir` is created if needed and receives the transient `ocr.tsv`
/// (removed afterwards). `progress` is called with `(0, "received")`,
/// `(10, "preprocessing")`, `(30, "recognising")` and `(100, "done")`.
///
/// Cancel-safety: firing `cancel` kills and reaps the child and returns
/// [`OcrError::Cancelled`]. Dropping the future instead also kills the child
/// (`kill_on_drop`), but tokio then reaps it in the background.
pub async fn recognise(
    image: &Path,
    work_dir: &Path,
    opts: &Options,
    cancel: &CancellationToken,
    progress: &(dyn Fn(u8, &str) + Send + Sync),
) -> Result<OcrResult, OcrError> {
    progress(0, "received");
    opts.validate()?;
    if cancel.is_cancelled() {
        return Err(OcrError::Cancelled);
    }

    progress(10, "preprocessing");
    let image_abs = check_image(image).await?;
    let work_err = |source| OcrError::WorkDir {
        path: work_dir.to_path_buf(),
        source,
    };
    tokio::fs::create_dir_all(work_dir)
        .await
        .map_err(work_err)?;
    // Absolute paths: nothing tesseract sees can look like an option or `stdin`.
    let work_abs = tokio::fs::canonicalize(work_dir).await.map_err(work_err)?;
    let out_base = work_abs.join(OUT_BASE);
    let tsv_path = work_abs.join(format!("{OUT_BASE}.tsv"));
    match tokio::fs::remove_file(&tsv_path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(work_err(source)),
    }

    progress(30, "recognising");
    let run = run_tesseract(&image_abs, &out_base, &opts.lang, cancel).await;
    let result = match run {
        Ok(()) => read_tsv(&tsv_path, opts.words).await,
        Err(e) => Err(e),
    };
    // Best effort: the work directory is the daemon's to clean, but leave it tidy.
    let _ = tokio::fs::remove_file(&tsv_path).await;
    let result = result?;
    progress(100, "done");
    Ok(result)
}

/// Known image signatures (leptonica's readers), checked before running anything:
/// tesseract treats a non-image input as a *list of file names*.
fn is_supported_signature(head: &[u8]) -> bool {
    let starts = |sig: &[u8]| head.starts_with(sig);
    starts(b"\x89PNG\r\n\x1a\n")
        || starts(b"\xFF\xD8\xFF")
        || starts(b"II*\x00")
        || starts(b"MM\x00*")
        || starts(b"BM")
        || starts(b"GIF87a")
        || starts(b"GIF89a")
        || (starts(b"RIFF") && head.get(8..12) == Some(b"WEBP"))
        || (head.len() >= 3
            && head[0] == b'P'
            && (b'1'..=b'6').contains(&head[1])
            && head[2].is_ascii_whitespace())
}

async fn check_image(image: &Path) -> Result<PathBuf, OcrError> {
    let read_err = |source| OcrError::ReadImage {
        path: image.to_path_buf(),
        source,
    };
    let bad = |problem: String| OcrError::BadImage {
        path: image.to_path_buf(),
        problem,
    };
    let abs = tokio::fs::canonicalize(image).await.map_err(read_err)?;
    let mut file = tokio::fs::File::open(&abs).await.map_err(read_err)?;
    let meta = file.metadata().await.map_err(read_err)?;
    if !meta.is_file() {
        return Err(bad("is not a regular file".to_owned()));
    }
    if meta.len() == 0 {
        return Err(bad("is empty".to_owned()));
    }
    if meta.len() > MAX_IMAGE_BYTES {
        return Err(bad(format!(
            "is {} bytes; the limit is {MAX_IMAGE_BYTES} bytes",
            meta.len()
        )));
    }
    let mut head = Vec::with_capacity(HEADER_BYTES);
    (&mut file)
        .take(HEADER_BYTES as u64)
        .read_to_end(&mut head)
        .await
        .map_err(read_err)?;
    if !is_supported_signature(&head) {
        return Err(OcrError::UnsupportedImage {
            path: image.to_path_buf(),
        });
    }
    let size = imagesize::blob_size(&head).map_err(|e| {
        bad(format!(
            "its dimensions cannot be read from its first {HEADER_BYTES} bytes ({e}); \
             they are checked against {MAX_PIXELS} pixels before tesseract runs"
        ))
    })?;
    let pixels = (size.width as u64).saturating_mul(size.height as u64);
    if pixels > MAX_PIXELS {
        return Err(bad(format!(
            "is {} × {} pixels; the limit is {MAX_PIXELS} pixels in total",
            size.width, size.height
        )));
    }
    Ok(abs)
}

async fn run_tesseract(
    image: &Path,
    out_base: &Path,
    lang: &str,
    cancel: &CancellationToken,
) -> Result<(), OcrError> {
    let mut cmd = tokio::process::Command::new(TESSERACT);
    cmd.arg(image)
        .arg(out_base)
        .arg("-l")
        .arg(lang)
        .arg("tsv")
        .env("OMP_THREAD_LIMIT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OcrError::NotInstalled {
                install: install_command(lang),
            })
        }
        Err(source) => return Err(OcrError::Spawn { source }),
    };
    tracing::debug!(pid = child.id(), image = %image.display(), lang, "tesseract started");
    let stderr = child.stderr.take();

    let finished = {
        let wait = async { tokio::join!(child.wait(), stderr_tail(stderr)) };
        tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            done = wait => Some(done),
        }
    };
    let Some((status, tail)) = finished else {
        // SIGKILL, then wait so no zombie is left behind.
        let _ = child.start_kill();
        let _ = child.wait().await;
        tracing::debug!("tesseract killed on cancel");
        return Err(OcrError::Cancelled);
    };
    let status = status.map_err(|source| OcrError::Spawn { source })?;
    tracing::debug!(%status, "tesseract exited");
    if status.success() {
        return Ok(());
    }
    let stderr = tail.join("\n");
    if let Some(missing) = failed_language(&stderr) {
        return Err(OcrError::LanguageMissing {
            install: install_command(&missing),
            lang: missing,
            available: "unknown".to_owned(),
        });
    }
    Err(OcrError::Failed {
        status: describe(status),
        stderr: if stderr.is_empty() {
            "no output on stderr".to_owned()
        } else {
            stderr
        },
    })
}

/// `Failed loading language 'xyz'` → `xyz`, if it is a plausible name.
fn failed_language(stderr: &str) -> Option<String> {
    let rest = stderr.split("Failed loading language '").nth(1)?;
    let name = rest.split('\'').next()?;
    options::validate_lang(name).ok()?;
    Some(name.to_owned())
}

/// Reads a pipe to its end, keeping only the last [`STDERR_TAIL_LINES`]
/// non-blank lines, each cut to [`STDERR_LINE_MAX`] bytes.
async fn stderr_tail(pipe: Option<tokio::process::ChildStderr>) -> Vec<String> {
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut buf = [0u8; 4096];
    let mut line = Vec::with_capacity(STDERR_LINE_MAX);
    let push = |line: &mut Vec<u8>, tail: &mut VecDeque<String>| {
        let text = clean_line(line);
        line.clear();
        if !text.is_empty() {
            if tail.len() == STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text);
        }
    };
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                push(&mut line, &mut tail);
            } else if line.len() < STDERR_LINE_MAX {
                line.push(b);
            }
        }
    }
    push(&mut line, &mut tail);
    tail.into()
}

/// Lossy UTF-8 with control characters replaced, trimmed.
fn clean_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn tail_of(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(|l| clean_line(l.as_bytes()))
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    let tail = lines[start..].join("\n");
    if tail.is_empty() {
        "no output on stderr".to_owned()
    } else {
        tail
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => status.to_string(),
    }
}

async fn read_tsv(path: &Path, want_words: bool) -> Result<OcrResult, OcrError> {
    let output_err = |reason: String| OcrError::Output { reason };
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| output_err(format!("tesseract wrote no {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_TSV_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| output_err(format!("{}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_TSV_BYTES {
        return Err(output_err(format!(
            "{} is larger than {MAX_TSV_BYTES} bytes",
            path.display()
        )));
    }
    let text = String::from_utf8_lossy(&bytes);
    tsv::parse(&text, want_words).map_err(|e| output_err(e.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_command_maps_debian_package_names() {
        assert_eq!(
            install_command("eng"),
            "apt-get install tesseract-ocr tesseract-ocr-eng"
        );
        assert_eq!(
            install_command("eng+chi_sim"),
            "apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim"
        );
    }

    #[test]
    fn lang_list_is_parsed_from_either_stream() {
        let out = "List of available languages in \"/usr/share/tesseract-ocr/5/tessdata/\" (2):\neng\nosd\n";
        assert_eq!(parse_lang_list(out), ["eng", "osd"]);
        assert!(parse_lang_list("nothing useful").is_empty());
    }

    #[test]
    fn signatures_accept_images_and_refuse_text() {
        assert!(is_supported_signature(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"));
        assert!(is_supported_signature(b"\xFF\xD8\xFF\xE0"));
        assert!(is_supported_signature(b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(is_supported_signature(b"P5\n10 10\n255\n"));
        assert!(!is_supported_signature(b"image1.png\nimage2.png\n"));
        assert!(!is_supported_signature(b"RIFF\0\0\0\0WAVEfmt "));
        assert!(!is_supported_signature(b""));
    }

    #[test]
    fn failed_language_is_extracted_from_stderr() {
        let err = "Error opening data file /x/xyz.traineddata\nFailed loading language 'xyz'\nTesseract couldn't load any languages!";
        assert_eq!(failed_language(err).as_deref(), Some("xyz"));
        assert_eq!(failed_language("Failed loading language '../evil'"), None);
        assert_eq!(failed_language("all good"), None);
    }

    #[test]
    fn result_serialises_without_words_when_none() {
        let r = OcrResult {
            text: "hi".to_owned(),
            mean_confidence: 90.0,
            words: None,
        };
        assert_eq!(
            serde_json::to_value(&r).expect("ser"),
            serde_json::json!({"text": "hi", "mean_confidence": 90.0})
        );
    }
}
