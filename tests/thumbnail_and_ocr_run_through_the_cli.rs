//! The user's own example, with the real binaries: `peer --capabilities
//! thumbnail,ocr`, then `peer submit thumbnail --file … --param width=256
//! --out …` and `peer submit ocr --file scan.png`. Bad images fail their job
//! with a clear error and the worker stays up; a peer refuses to start `ocr`
//! where `tesseract` is missing, saying what to install.

use std::path::Path;

use jobmesh_testkit::process::{daemon, expect_exit, peer, run_peer, signal_server, stdout_json};
use jobmesh_testkit::{init_tracing, PeerGuard};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

use crate::photo::write_photo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnail_and_ocr_jobs_run_on_a_worker_from_the_cli() {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let (_server, url) = signal_server();
    let start = |name: &str, caps: &str| daemon(&url, "media", name, caps, dir.path(), &[]);
    let _worker = start("w", "thumbnail,ocr");
    let _submitter = start("s", "");
    let watcher = PeerGuard::start(&url, "media", "watcher", &[], 0);
    watcher.wait_capable("ocr", 1).await;
    let s = p("s.sock");

    // A JPEG at most 256 px wide, with the photo's 3:2 aspect ratio.
    write_photo(Path::new(&p("photo.jpg")));
    let out = run_peer(&[
        "submit",
        "thumbnail",
        "--file",
        &p("photo.jpg"),
        "--param",
        "width=256",
        "--out",
        &p("thumb.jpg"),
        "--control",
        &s,
    ]);
    expect_exit(&out, 0);
    let result = stdout_json(&out);
    assert_eq!(result["format"], "jpeg", "{result}");
    assert_eq!(
        (result["width"].as_u64(), result["height"].as_u64()),
        (Some(256), Some(171))
    );
    let thumb = image::open(p("thumb.jpg")).expect("the thumbnail decodes");
    assert_eq!((thumb.width(), thumb.height()), (256, 171));
    let bytes = std::fs::read(p("thumb.jpg")).expect("read");
    assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
    assert_eq!(result["bytes"], bytes.len());

    // PNG out, to stdout.
    let out = run_peer(&[
        "submit",
        "thumbnail",
        "--file",
        &p("photo.jpg"),
        "--param",
        "height=100",
        "--param",
        "format=png",
        "--out",
        "-",
        "--control",
        &s,
    ]);
    expect_exit(&out, 0);
    assert_eq!(
        &out.stdout[..8],
        b"\x89PNG\r\n\x1a\n",
        "the blob goes to stdout"
    );
    let png = image::load_from_memory(&out.stdout).expect("decodes");
    assert_eq!((png.width(), png.height()), (150, 100));

    // The printed page's text.
    let out = run_peer(&[
        "submit",
        "ocr",
        "--file",
        &fixture("scan.png"),
        "--control",
        &s,
    ]);
    expect_exit(&out, 0);
    let result = stdout_json(&out);
    let text = result["text"].as_str().unwrap_or_default();
    assert!(text.contains("The quick brown fox jumps"), "{result}");
    assert!(text.contains("over the lazy dog"), "{result}");

    // Garbage fails its job with a clear error; the worker stays up.
    std::fs::write(p("garbage.jpg"), b"this is not an image at all").expect("write");
    let out = run_peer(&[
        "submit",
        "thumbnail",
        "--file",
        &p("garbage.jpg"),
        "--param",
        "width=64",
        "--control",
        &s,
    ]);
    expect_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a supported image"), "{stderr}");
    // Bad params are refused before anything runs.
    let out = run_peer(&[
        "submit",
        "thumbnail",
        "--file",
        &p("photo.jpg"),
        "--param",
        "fit=squash",
        "--control",
        &s,
    ]);
    expect_exit(&out, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fit"),
        "names the bad param"
    );
    let out = run_peer(&[
        "submit",
        "thumbnail",
        "--file",
        &p("photo.jpg"),
        "--param",
        "width=32",
        "--control",
        &s,
    ]);
    expect_exit(&out, 0);
}

#[test]
fn a_peer_without_tesseract_refuses_to_start_ocr_and_says_what_to_install() {
    let out = peer(&["--capabilities", "ocr", "--signal", "ws://127.0.0.1:9/ws"])
        .env("PATH", "/nonexistent")
        .output()
        .expect("run peer");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("apt-get install tesseract-ocr"), "{stderr}");
}
