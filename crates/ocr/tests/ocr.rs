//! Runs the real `tesseract` on `tests/fixtures/scan.png`.
//!
//! These tests need `tesseract-ocr` and `tesseract-ocr-eng` installed; they fail
//! (rather than skip) when it is missing, because CI installs it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobmesh_ocr::{check_installed, recognise, OcrError, Options};
use tokio_util::sync::CancellationToken;

const SCAN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/scan.png");

fn require_tesseract() {
    let ok = std::process::Command::new("tesseract")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "tesseract is not installed; install it with: \
         apt-get install tesseract-ocr tesseract-ocr-eng (CI installs it)"
    );
}

fn no_progress(_: u8, _: &str) {}

fn opts(words: bool) -> Options {
    Options {
        lang: "eng".to_owned(),
        words,
    }
}

#[tokio::test]
async fn fixture_sentence_is_recognised_with_progress_stages() {
    require_tesseract();
    let work = tempfile::tempdir().expect("tempdir");
    let stages = Mutex::new(Vec::new());
    let progress = |pct: u8, stage: &str| {
        stages.lock().expect("lock").push((pct, stage.to_owned()));
    };
    let result = recognise(
        Path::new(SCAN),
        work.path(),
        &opts(false),
        &CancellationToken::new(),
        &progress,
    )
    .await
    .expect("ocr");

    let lines: Vec<&str> = result.text.lines().collect();
    assert_eq!(
        lines,
        ["The quick brown fox jumps", "over the lazy dog 1234"],
        "text was {:?}",
        result.text
    );
    assert!(result.mean_confidence > 80.0, "{}", result.mean_confidence);
    assert_eq!(result.words, None);
    let stages = stages.into_inner().expect("lock");
    let expected: Vec<(u8, String)> = [
        (0, "received"),
        (10, "preprocessing"),
        (30, "recognising"),
        (100, "done"),
    ]
    .into_iter()
    .map(|(p, s)| (p, s.to_owned()))
    .collect();
    assert_eq!(stages, expected);
    assert!(
        !work.path().join("ocr.tsv").exists(),
        "transient TSV is removed"
    );
}

#[tokio::test]
async fn words_option_gives_boxes_inside_the_image() {
    require_tesseract();
    let work = tempfile::tempdir().expect("tempdir");
    let result = recognise(
        Path::new(SCAN),
        work.path(),
        &opts(true),
        &CancellationToken::new(),
        &no_progress,
    )
    .await
    .expect("ocr");
    let json = serde_json::to_value(&result).expect("ser");
    let words = result.words.expect("words requested");
    let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
    assert_eq!(
        texts,
        ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "1234"]
    );
    for w in &words {
        assert!(w.width > 0 && w.height > 0, "{w:?}");
        assert!(w.left + w.width <= 1400 && w.top + w.height <= 300, "{w:?}");
        assert!((0.0..=100.0).contains(&w.confidence), "{w:?}");
    }
    // "The" starts near where it was drawn (+40 on the first baseline at 120).
    assert!(
        words[0].left.abs_diff(40) <= 8 && words[0].top < 120,
        "{:?}",
        words[0]
    );
    // Second line is below the first.
    assert!(words[5].top > words[0].top + 50);
    assert!(json["words"][0]["left"].is_u64(), "{json}");
}

/// Tesseract children of this process whose command line mentions `needle`.
fn tesseract_children(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if comm == "tesseract"
            && ppid == Some(me)
            && String::from_utf8_lossy(&cmdline).contains(needle)
        {
            found.push(pid);
        }
    }
    found
}

/// A page big enough that tesseract takes seconds: the fixture tiled 3×10.
fn big_page(dir: &Path) -> PathBuf {
    let scan = image::open(SCAN).expect("open fixture").into_luma8();
    let (w, h) = scan.dimensions();
    let mut page = image::GrayImage::new(w * 3, h * 10);
    for ty in 0..10 {
        for tx in 0..3 {
            image::imageops::replace(&mut page, &scan, i64::from(tx * w), i64::from(ty * h));
        }
    }
    let path = dir.join("big.png");
    page.save(&path).expect("save big page");
    path
}

#[tokio::test]
async fn cancel_kills_and_reaps_the_running_tesseract() {
    require_tesseract();
    let dir = tempfile::tempdir().expect("tempdir");
    let image = big_page(dir.path());
    let work = dir.path().join("work-cancel");
    let needle = work.to_string_lossy().into_owned();
    let cancel = CancellationToken::new();

    let watcher = {
        let cancel = cancel.clone();
        let needle = needle.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let pids = tesseract_children(&needle);
                if !pids.is_empty() {
                    cancel.cancel();
                    return pids;
                }
                assert!(Instant::now() < deadline, "tesseract never started");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let started = Instant::now();
    let result = recognise(&image, &work, &opts(false), &cancel, &no_progress).await;
    let pids = watcher.await.expect("watcher");

    assert!(matches!(result, Err(OcrError::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(pids.len(), 1, "one tesseract process per image");
    // Killed *and* reaped: not even a zombie remains.
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "tesseract {pid} is still there"
        );
    }
    assert!(tesseract_children(&needle).is_empty());
}

#[tokio::test]
async fn already_cancelled_token_runs_nothing() {
    let work = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    cancel.cancel();
    let result = recognise(
        Path::new(SCAN),
        work.path(),
        &opts(false),
        &cancel,
        &no_progress,
    )
    .await;
    assert!(matches!(result, Err(OcrError::Cancelled)), "{result:?}");
}

#[test]
fn check_installed_accepts_eng_and_names_the_package_for_a_missing_language() {
    require_tesseract();
    check_installed("eng").expect("eng is installed");
    let e = check_installed("zzz").expect_err("no such language");
    assert!(matches!(e, OcrError::LanguageMissing { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("apt-get install tesseract-ocr tesseract-ocr-zzz"),
        "{msg}"
    );
    assert!(msg.contains("eng"), "lists what is installed: {msg}");
    let e = check_installed("eng+qqq").expect_err("second part missing");
    assert!(e.to_string().contains("tesseract-ocr-qqq"), "{e}");
    let e = check_installed("bad lang").expect_err("invalid");
    assert!(matches!(e, OcrError::Options(_)), "{e}");
}

#[tokio::test]
async fn missing_language_at_run_time_names_the_package() {
    require_tesseract();
    let work = tempfile::tempdir().expect("tempdir");
    let o = Options {
        lang: "zzz".to_owned(),
        words: false,
    };
    let e = recognise(
        Path::new(SCAN),
        work.path(),
        &o,
        &CancellationToken::new(),
        &no_progress,
    )
    .await
    .expect_err("no zzz data");
    assert!(matches!(e, OcrError::LanguageMissing { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("apt-get install tesseract-ocr tesseract-ocr-zzz"),
        "{e}"
    );
}

#[tokio::test]
async fn garbage_and_missing_images_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    let cancel = CancellationToken::new();

    // Text is refused before tesseract sees it (it would read it as a file list).
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"not an image at all\n/etc/passwd\n").expect("write");
    let e = recognise(&garbage, &work, &opts(false), &cancel, &no_progress)
        .await
        .expect_err("garbage");
    assert!(matches!(e, OcrError::UnsupportedImage { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("is not a supported image (PNG, JPEG"),
        "{e}"
    );

    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").expect("write");
    let e = recognise(&empty, &work, &opts(false), &cancel, &no_progress)
        .await
        .expect_err("empty");
    assert!(e.to_string().ends_with("is empty"), "{e}");

    let missing = dir.path().join("missing.png");
    let e = recognise(&missing, &work, &opts(false), &cancel, &no_progress)
        .await
        .expect_err("missing");
    assert!(matches!(e, OcrError::ReadImage { .. }), "{e}");
    assert!(e.to_string().contains("missing.png"), "{e}");

    let e = recognise(dir.path(), &work, &opts(false), &cancel, &no_progress)
        .await
        .expect_err("directory");
    assert!(e.to_string().contains("is not a regular file"), "{e}");
}

#[tokio::test]
async fn corrupt_png_is_reported_with_tesseracts_stderr() {
    require_tesseract();
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = std::fs::read(SCAN).expect("fixture");
    let corrupt = dir.path().join("corrupt.png");
    // A real PNG signature and header (the fixture's size), then rubbish.
    let mut data = bytes[..33].to_vec();
    data.extend(std::iter::repeat_n(0xA5u8, 4096));
    std::fs::write(&corrupt, &data).expect("write");
    let e = recognise(
        &corrupt,
        &dir.path().join("work"),
        &opts(false),
        &CancellationToken::new(),
        &no_progress,
    )
    .await
    .expect_err("corrupt");
    match &e {
        OcrError::Failed { status, stderr } => {
            assert!(status.contains("exit code"), "{e}");
            assert!(!stderr.is_empty() && stderr.lines().count() <= 20, "{e}");
        }
        other => panic!("expected Failed, got {other}"),
    }
}

#[tokio::test]
async fn an_image_of_too_many_pixels_is_refused_before_tesseract_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The fixture's header, claiming 20000 × 20000 pixels: a few bytes that
    // would decode to 400 megapixels.
    let mut data = std::fs::read(SCAN).expect("fixture");
    data[16..20].copy_from_slice(&20_000u32.to_be_bytes());
    data[20..24].copy_from_slice(&20_000u32.to_be_bytes());
    let bomb = dir.path().join("bomb.png");
    std::fs::write(&bomb, &data).expect("write");
    let e = recognise(
        &bomb,
        &dir.path().join("work"),
        &opts(false),
        &CancellationToken::new(),
        &no_progress,
    )
    .await
    .expect_err("too many pixels");
    assert!(matches!(e, OcrError::BadImage { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("20000 × 20000 pixels; the limit is 100000000"),
        "{e}"
    );
    assert!(!dir.path().join("work").join("ocr.tsv").exists());
}

#[tokio::test]
async fn invalid_options_are_refused_before_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Options {
        lang: "-psm 0".to_owned(),
        words: false,
    };
    let e = recognise(
        Path::new(SCAN),
        dir.path(),
        &o,
        &CancellationToken::new(),
        &no_progress,
    )
    .await
    .expect_err("invalid lang");
    assert!(matches!(e, OcrError::Options(_)), "{e}");
}
