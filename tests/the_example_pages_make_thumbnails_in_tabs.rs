//! The example pages the signal-server serves, used as a person would in
//! headless Chromium: `/examples/thumbnail-worker.html` makes a tab a
//! `thumbnail` worker (the browser decodes and encodes, OffscreenCanvas),
//! which `peer submit thumbnail --file … --out …` reaches; and
//! `/examples/thumbnail-submit.html` sends picked images to the pool's
//! thumbnail workers, that tab and a Rust daemon, showing each thumbnail.

use std::collections::BTreeSet;

use jobmesh_testkit::process::{
    daemon, expect_exit, run_peer, signal_server, stdout_json, wait_capable, BrowserTab,
};
use serde_json::json;

use crate::photo::write_photo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_pages_make_thumbnails_in_tabs() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _s = daemon(&url, "pics", "s", "", dir.path(), &[]);
    let mut pages = BrowserTab::open_script("example.mjs", &url);
    let mut step = |step| pages.step(step);

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
}
