//! Browser tabs in a pool: headless Chromium imports the signal-server's
//! /js/jobmesh.js (clients/js), proves its Ed25519 key in its hello
//! (WebCrypto) and holds the pool's view; a Rust daemon's `peer peers`
//! lists the tab, and stops listing it when the tab leaves. A tab with a
//! handler is a worker: `peer submit` runs a job on it over a WebRTC data
//! channel, after the link handshake binds the tab's key to the
//! connection. And a tab submits to a Rust worker: results, progress, and
//! the errors of a job no worker can run or that fails.

use jobmesh_testkit::process::{
    await_result, daemon, expect_exit, run_peer, run_peer_elsewhere, signal_server,
    signal_server_on, stdout_json, wait_capable, BrowserTab as Tab,
};
use serde_json::{json, Value};

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

    let mut tab = Tab::open(&url);
    let joined = tab.step(json!({ "op": "join", "pool": "tabs" }));
    let id = joined["id"].as_str().expect("its peer id").to_owned();
    tab.wait_workers(&["w1"]).await;

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
    let mut tab = Tab::open(&url);
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

    // A blob job: the file goes to the tab in chunks and comes back whole.
    let input = dir.path().join("in.bin");
    let output = dir.path().join("out.bin");
    let bytes: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&input, &bytes).expect("write the input");
    // The first bulk transfer from a daemon to a fresh tab can stall for
    // seconds, now and then tens of them (docs/performance.md, "Browser
    // tabs"): the job gets two minutes rather than the default 30 s.
    let out = run_peer(&[
        "submit",
        "blob-echo",
        "--file",
        input.to_str().expect("utf-8"),
        "--out",
        output.to_str().expect("utf-8"),
        "--timeout",
        "120",
        "--json",
        "--control",
        &control,
    ]);
    expect_exit(&out, 0);
    assert_eq!(stdout_json(&out)["worker"]["name"], name.as_str());
    assert!(
        std::fs::read(&output).expect("the output") == bytes,
        "the file came back changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_submits_to_a_rust_worker() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _w = daemon(&url, "tabsub", "w1", "echo,sleep", dir.path(), &[]);
    let mut tab = Tab::open(&url);
    tab.step(json!({ "op": "join", "pool": "tabsub" }));
    tab.wait_workers(&["w1"]).await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_rejoins_when_the_signal_server_comes_back() {
    let (server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _s = daemon(&url, "rejoin", "s", "", dir.path(), &[]);
    let mut tab = Tab::open(&url);
    tab.step(json!({ "op": "work", "pool": "rejoin", "name": "tab-1" }));
    let control = dir.path().join("s.sock");
    wait_capable(&control, "echo", 1).await;

    // The server goes; a new one, empty, starts on the same address.
    drop(server);
    let listen = url.trim_start_matches("ws://").trim_end_matches("/ws");
    let (_server, again) = signal_server_on(listen, &["--open"]);
    assert_eq!(again, url);
    // The tab joins it again (asked of the new server itself), its worker with it.
    jobmesh_testkit::eventually("the new server lists the tab", || {
        let out = run_peer_elsewhere(&[
            "peers", "--json", "--signal", &url, "--pool", "rejoin", "--open",
        ]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"tab-1\"")
    })
    .await;
    wait_capable(&control, "echo", 1).await;
    let out = run_peer(&[
        "submit",
        "echo",
        "--input",
        "{\"after\":1}",
        "--json",
        "--control",
        control.to_str().expect("utf-8"),
    ]);
    expect_exit(&out, 0);
    assert_eq!(stdout_json(&out)["worker"]["name"], "tab-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_keeps_its_results_for_a_submitter_that_comes_back() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tab = Tab::open(&url);
    tab.step(json!({ "op": "work", "pool": "keep", "name": "tab-1" }));
    let submitter = daemon(&url, "keep", "s", "", dir.path(), &[]);
    let control = dir.path().join("s.sock");
    wait_capable(&control, "delay-copy", 1).await;
    let sock = control.to_str().expect("utf-8");
    let input = dir.path().join("in.bin");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&input, &bytes).expect("write the input");
    let submit = |args: &[&str]| {
        let mut all = vec!["submit"];
        all.extend_from_slice(args);
        all.extend(["--detach", "--control", sock]);
        let out = run_peer(&all);
        expect_exit(&out, 0);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // One job ends while its submitter is away (its result and file are
    // kept), one still runs when it comes back (it re-attaches).
    let file = input.to_str().expect("utf-8");
    let quick = submit(&["delay-copy", "--input", r#"{"ms":1500}"#, "--file", file]);
    let slow = submit(&["sleep", "--input", r#"{"ms":8000}"#]);
    let runs = |tab: &mut Tab| tab.step(json!({ "op": "runs" }));
    jobmesh_testkit::eventually("both jobs run on the tab", || {
        let r = runs(&mut tab);
        r["started"][&quick] == 1 && r["started"][&slow] == 1
    })
    .await;
    submitter.kill();
    jobmesh_testkit::eventually("the quick job ends while its submitter is away", || {
        runs(&mut tab)["ended"]
            .as_array()
            .is_some_and(|e| e.contains(&json!(quick)))
    })
    .await;
    let _submitter = daemon(&url, "keep", "s", "", dir.path(), &[]);

    let out = dir.path().join("quick.out");
    let envelope = await_result(sock, &quick, &["--out", out.to_str().expect("utf-8")]).await;
    assert_eq!(envelope["status"], "completed", "{envelope}");
    assert!(
        std::fs::read(&out).expect("the kept file") == bytes,
        "the kept file came back changed"
    );
    let envelope = await_result(sock, &slow, &[]).await;
    assert_eq!(envelope["status"], "completed", "{envelope}");
    assert_eq!(envelope["worker"]["name"], "tab-1", "{envelope}");
    let r = runs(&mut tab);
    assert_eq!(
        (r["started"][&quick].clone(), r["started"][&slow].clone()),
        (json!(1), json!(1)),
        "each ran once: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_with_mdns_host_candidates_reaches_the_daemons_both_ways() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _w = daemon(&url, "mdns", "w", "echo", dir.path(), &[]);
    let _s = daemon(&url, "mdns", "s", "", dir.path(), &[]);
    // A page's host candidates are random .local names (Chromium's
    // default), which the daemons do not resolve.
    let mut tab = Tab::open(&url);
    tab.step(json!({ "op": "work", "pool": "mdns", "name": "tab-1" }));
    let control = dir.path().join("s.sock");
    wait_capable(&control, "echo", 2).await;

    // The tab dials the daemon, and the daemon dials the tab.
    let got = tab.step(
        json!({ "op": "submit", "type": "echo", "payload": { "m": 1 }, "strategy": "round-robin" }),
    );
    let got2 = tab.step(
        json!({ "op": "submit", "type": "echo", "payload": { "m": 1 }, "strategy": "round-robin" }),
    );
    let by: Vec<&str> = [&got, &got2]
        .iter()
        .filter_map(|g| g["worker"].as_str())
        .collect();
    assert!(by.contains(&"w"), "{got} {got2}");
    let out = run_peer(&[
        "submit",
        "echo",
        "--input",
        "{}",
        "--json",
        "--strategy",
        "round-robin",
        "--control",
        control.to_str().expect("utf-8"),
    ]);
    let out2 = run_peer(&[
        "submit",
        "echo",
        "--input",
        "{}",
        "--json",
        "--strategy",
        "round-robin",
        "--control",
        control.to_str().expect("utf-8"),
    ]);
    expect_exit(&out, 0);
    expect_exit(&out2, 0);
    let names = [
        stdout_json(&out)["worker"]["name"].clone(),
        stdout_json(&out2)["worker"]["name"].clone(),
    ];
    assert!(names.contains(&json!("tab-1")), "{names:?}");

    // And its candidates were mDNS names indeed: the daemons learnt its
    // address from its connectivity checks (peer-reflexive candidates).
    let sdp = tab.step(json!({ "op": "sdp" }));
    let candidates: Vec<&str> = sdp["sdp"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .flat_map(|s| s.lines())
        .filter(|l| l.starts_with("a=candidate:") && l.contains(" typ host"))
        .collect();
    assert!(!candidates.is_empty(), "{sdp}");
    assert!(
        candidates.iter().all(|c| c.contains(".local ")),
        "{candidates:?}"
    );
}
