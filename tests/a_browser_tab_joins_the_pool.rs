//! Browser tabs in a pool: headless Chromium imports the signal-server's
//! /js/jobmesh.js (clients/js), proves its Ed25519 key in its hello
//! (WebCrypto) and holds the pool's view; a Rust daemon's `peer peers`
//! lists the tab, and stops listing it when the tab leaves. A tab with a
//! handler is a worker: `peer submit` runs a job on it over a WebRTC data
//! channel, after the link handshake binds the tab's key to the
//! connection. And a tab submits to a Rust worker: results, progress, and
//! the errors of a job no worker can run or that fails.

use std::io::Write;
use std::time::Duration;

use jobmesh_testkit::process::{
    browser_script, daemon, expect_exit, run_peer, signal_server, stdout_json,
};
use serde_json::{json, Value};

/// The tab: tests/browser/tab.mjs under node, steps in, answers out.
struct Tab {
    child: std::process::Child,
    answers: std::sync::mpsc::Receiver<String>,
}

impl Tab {
    fn open(base: &str) -> Self {
        let (child, answers) = browser_script("tab.mjs", &[base.as_ref()]);
        Self { child, answers }
    }

    fn step(&mut self, step: Value) -> Value {
        let stdin = self.child.stdin.as_mut().expect("piped");
        writeln!(stdin, "{step}").expect("send the step");
        let line = self
            .answers
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no answer to {step}: {e}"));
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("error").is_none(), "{step}: {v}");
        v
    }
}

impl Drop for Tab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The names `peer peers --json` lists, from the daemon at `control`.
fn listed(control: &str) -> Vec<(String, String)> {
    let out = run_peer(&["peers", "--json", "--control", control]);
    expect_exit(&out, 0);
    stdout_json(&out)["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_joins_the_pool_and_the_daemons_see_it_come_and_go() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _w = daemon(&url, "tabs", "w1", "echo", dir.path(), &[]);
    let control = dir.path().join("w1.sock");
    let control_str = control.to_str().expect("utf-8").to_owned();

    let base = url.trim_end_matches("/ws").replacen("ws://", "http://", 1);
    let mut tab = Tab::open(&base);
    let joined = tab.step(json!({ "op": "join", "pool": "tabs" }));
    let id = joined["id"].as_str().expect("its peer id").to_owned();
    jobmesh_testkit::eventually("the tab sees the worker", || {
        tab.step(json!({ "op": "workers" }))["workers"] == json!(["w1"])
    })
    .await;

    jobmesh_testkit::eventually("the daemon lists the tab", || {
        listed(&control_str)
            .iter()
            .any(|(name, pid)| *pid == id && name.starts_with("tab-"))
    })
    .await;

    assert_eq!(tab.step(json!({ "op": "close" }))["closed"], true);
    jobmesh_testkit::eventually("the daemon no longer lists the tab", || {
        !listed(&control_str).iter().any(|(_, pid)| *pid == id)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_is_a_worker_that_peer_submit_reaches() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _s = daemon(&url, "tabwork", "s", "", dir.path(), &[]);
    let control = dir.path().join("s.sock");
    let control = control.to_str().expect("utf-8").to_owned();
    let base = url.trim_end_matches("/ws").replacen("ws://", "http://", 1);
    let mut tab = Tab::open(&base);
    let worker = tab.step(json!({ "op": "work", "pool": "tabwork" }));
    let name = worker["name"].as_str().expect("its name").to_owned();
    jobmesh_testkit::process::wait_capable(std::path::Path::new(&control), "echo", 1).await;

    for i in 0..3 {
        let input = json!({ "from": "the cli", "i": i }).to_string();
        let out = run_peer(&[
            "submit",
            "echo",
            "--input",
            &input,
            "--json",
            "--control",
            &control,
        ]);
        expect_exit(&out, 0);
        let envelope = stdout_json(&out);
        assert_eq!(envelope["status"], "completed", "{envelope}");
        assert_eq!(envelope["result"], json!({ "from": "the cli", "i": i }));
        assert_eq!(envelope["worker"]["name"], name.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_submits_to_a_rust_worker() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _w = daemon(&url, "tabsub", "w1", "echo,sleep", dir.path(), &[]);
    let base = url.trim_end_matches("/ws").replacen("ws://", "http://", 1);
    let mut tab = Tab::open(&base);
    tab.step(json!({ "op": "join", "pool": "tabsub" }));
    jobmesh_testkit::eventually("the tab sees the worker", || {
        tab.step(json!({ "op": "workers" }))["workers"] == json!(["w1"])
    })
    .await;

    let got = tab.step(json!({ "op": "submit", "type": "echo", "payload": { "from": "a tab" } }));
    assert_eq!(got["result"], json!({ "from": "a tab" }), "{got}");
    // Progress from the Rust handler reaches the tab (sleep reports it).
    let got = tab.step(json!({ "op": "submit", "type": "sleep", "payload": { "ms": 600 } }));
    assert_eq!(got["result"]["slept_ms"], 600, "{got}");
    let percents: Vec<u64> = got["progress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["percent"].as_u64())
        .collect();
    assert!(
        !percents.is_empty() && percents.windows(2).all(|w| w[0] <= w[1]),
        "{got}"
    );
    // Errors: nobody runs it; the worker refuses its input.
    let got = tab.step(json!({ "op": "submit", "type": "ocr", "payload": {} }));
    assert_eq!(got["failed"], "no_worker", "{got}");
    let got = tab.step(json!({ "op": "submit", "type": "sleep", "payload": { "ms": "long" } }));
    assert_eq!(got["failed"], "rejected", "{got}");
}
