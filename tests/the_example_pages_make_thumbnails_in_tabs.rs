//! The example pages the signal-server serves, used as a person would in
//! headless Chromium: `/examples/thumbnail-worker.html` makes a tab a
//! `thumbnail` worker (the browser decodes and encodes, OffscreenCanvas),
//! which `peer submit thumbnail --file … --out …` reaches; and
//! `/examples/thumbnail-submit.html` sends picked images to the pool's
//! thumbnail workers, that tab and a Rust daemon, showing each thumbnail.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use jobmesh_testkit::process::{
    browser_script, daemon, expect_exit, run_peer, signal_server, stdout_json, wait_capable,
};
use serde_json::{json, Value};

/// A 1200×800 photo-like JPEG.
fn write_photo(path: &Path) {
    let img = image::RgbImage::from_fn(1200, 800, |x, y| {
        image::Rgb([(x / 5) as u8, (y / 4) as u8, ((x ^ y) & 0xff) as u8])
    });
    img.save_with_format(path, image::ImageFormat::Jpeg)
        .expect("write jpeg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_pages_make_thumbnails_in_tabs() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _s = daemon(&url, "pics", "s", "", dir.path(), &[]);
    let base = url.trim_end_matches("/ws").replacen("ws://", "http://", 1);
    let (mut pages, answers) = browser_script("example.mjs", &[base.as_ref()]);
    let mut step = |step: Value| -> Value {
        let stdin = pages.stdin.as_mut().expect("piped");
        writeln!(stdin, "{step}").expect("send the step");
        let line = answers
            .recv_timeout(std::time::Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("no answer to {step}: {e}"));
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("error").is_none(), "{step}: {v}");
        v
    };

    // The worker page: a tab that makes thumbnails for `peer submit`.
    let status = step(json!({ "op": "worker", "pool": "pics", "name": "tab-thumbs" }));
    assert!(
        status["status"]
            .as_str()
            .is_some_and(|s| s.contains("tab-thumbs")),
        "{status}"
    );
    let control = dir.path().join("s.sock");
    wait_capable(&control, "thumbnail", 1).await;
    let photo = dir.path().join("photo.jpg");
    write_photo(&photo);
    let thumb = dir.path().join("thumb.jpg");
    let out = run_peer(&[
        "submit",
        "thumbnail",
        "--file",
        photo.to_str().expect("utf-8"),
        "--param",
        "width=64",
        "--out",
        thumb.to_str().expect("utf-8"),
        "--json",
        "--control",
        control.to_str().expect("utf-8"),
    ]);
    expect_exit(&out, 0);
    let envelope = stdout_json(&out);
    assert_eq!(envelope["worker"]["name"], "tab-thumbs", "{envelope}");
    assert_eq!(envelope["result"]["format"], "jpeg", "{envelope}");
    let decoded = image::open(&thumb).expect("the tab's thumbnail decodes");
    assert_eq!((decoded.width(), decoded.height()), (64, 43));
    assert_eq!(
        envelope["result"]["bytes"],
        std::fs::read(&thumb).expect("read").len()
    );

    // The submitter page: four images to the pool's thumbnail workers, the
    // tab and a Rust daemon.
    let _w = daemon(&url, "pics", "w", "thumbnail", dir.path(), &[]);
    wait_capable(&control, "thumbnail", 2).await;
    let files: Vec<String> = (0..4)
        .map(|i| {
            let p = dir.path().join(format!("photo-{i}.jpg"));
            write_photo(&p);
            p.to_str().expect("utf-8").to_owned()
        })
        .collect();
    let got = step(json!({ "op": "submit", "pool": "pics", "files": files, "width": 30 }));
    let results = got["results"].as_array().expect("results");
    assert_eq!(results.len(), 4, "{got}");
    for r in results {
        assert_eq!(r["state"], "done", "{r}");
        assert_eq!(
            (r["width"].as_u64(), r["height"].as_u64()),
            (Some(30), Some(20)),
            "{r}"
        );
    }
    let workers: BTreeSet<&str> = results
        .iter()
        .filter_map(|r| r["worker"].as_str())
        .collect();
    assert!(workers.is_subset(&["tab-thumbs", "w"].into()), "{got}");
    let _ = pages.kill();
    let _ = pages.wait();
}
