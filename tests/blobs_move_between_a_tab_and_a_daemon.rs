//! Blobs between a browser tab and a Rust worker daemon, both ways: the
//! tab submits a 1 MiB and a 50 MiB file to an exec handler that copies its
//! input to its output (`cat`); each travels to the daemon as chunk frames
//! paced by the data channel's buffered amount, is checked against its
//! BLAKE3 digest on arrival, and comes back the same way. The tab compares
//! the SHA-256 of what it sent and what it got.

use jobmesh_testkit::process::{daemon, signal_server, BrowserTab};
use serde_json::json;

use crate::blobs_stream_over_webrtc::CONFIG;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_sends_files_to_a_rust_worker_and_gets_them_back_intact() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("handlers.toml");
    std::fs::write(&config, CONFIG).expect("write the config");
    let extra = ["--config", config.to_str().expect("utf-8")];
    let _w = daemon(&url, "tabblobs", "w1", "copy", dir.path(), &extra);
    let mut tab = BrowserTab::open(&url);
    tab.step(json!({ "op": "join", "pool": "tabblobs" }));
    tab.wait_workers(&["w1"]).await;

    for bytes in [0, 1024 * 1024, 50 * 1024 * 1024] {
        let got =
            tab.step(json!({ "op": "submit", "type": "copy", "bytes": bytes, "timeout": 120 }));
        assert!(got.get("failed").is_none(), "{bytes} bytes: {got}");
        assert_eq!(got["got_size"], bytes, "{got}");
        assert_eq!(
            got["got"], got["sent"],
            "{bytes} bytes came back changed: {got}"
        );
        assert_eq!(got["got_name"], "stdout", "{got}");
    }
}
