//! The real binaries, as a user runs them.

use std::collections::HashSet;
use std::process::Command;

use jobmesh_testkit::process::{bin, expect_exit, run_peer, signal_server, stdout_json, Proc};
use jobmesh_testkit::{init_tracing, PeerGuard};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_submit_prints_envelopes_and_exits_0_1_2_3() {
    init_tracing();
    let tmp = std::env::temp_dir().join(format!("jobmesh-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let (mut server, url) = signal_server();

    let sock = |n: &str| tmp.join(format!("{n}.sock")).to_string_lossy().into_owned();
    let data = |n: &str| tmp.join(format!("{n}.data")).to_string_lossy().into_owned();
    let mut workers = Vec::new();
    for name in ["w1", "w2"] {
        let (p, line) = Proc::spawn(Command::new(bin("peer")).args([
            "--signal",
            &url,
            "--open",
            "--capabilities",
            "echo,sleep",
            "--name",
            name,
            "--pool",
            "cli",
            "--control",
            &sock(name),
            "--data-dir",
            &data(name),
        ]));
        assert!(line.contains("running"), "{line}");
        workers.push(p);
    }
    let (_submitter, line) = Proc::spawn(Command::new(bin("peer")).args([
        "--signal",
        &url,
        "--open",
        "--capabilities",
        "",
        "--name",
        "s",
        "--pool",
        "cli",
        "--control",
        &sock("s"),
        "--data-dir",
        &data("s"),
    ]));
    assert!(line.contains("running"), "{line}");
    // Watch the pool in-process until both workers are announced.
    let watcher = PeerGuard::start(&url, "cli", "watcher", &[], 0);
    watcher.wait_capable("echo", 2).await;

    // Short-lived submitters through --signal: completed envelopes, both workers used.
    let mut names = HashSet::new();
    for i in 0..20 {
        let input = json!({ "n": i }).to_string();
        let out = run_peer(&[
            "submit", "echo", "--input", &input, "--signal", &url, "--open", "--pool", "cli",
            "--json",
        ]);
        expect_exit(&out, 0);
        let env = stdout_json(&out);
        assert_eq!(env["status"], "completed");
        assert_eq!(env["result"], json!({ "n": i }));
        assert!(env["error"].is_null());
        assert!(env["job_id"].as_str().is_some_and(|s| s.len() == 36));
        assert!(env["elapsed_ms"].is_u64());
        names.insert(
            env["worker"]["name"]
                .as_str()
                .expect("worker name")
                .to_owned(),
        );
    }
    assert_eq!(names, HashSet::from(["w1".to_owned(), "w2".to_owned()]));

    // Through the local daemon's control socket; plain output is the result JSON.
    let out = run_peer(&[
        "submit",
        "echo",
        "--input",
        r#"{"via":"control"}"#,
        "--control",
        &sock("s"),
    ]);
    expect_exit(&out, 0);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).expect("json"),
        json!({"via": "control"})
    );

    // Exit 1: the job ran into a failure (bad input is refused by the worker).
    let out = run_peer(&[
        "submit",
        "sleep",
        "--input",
        r#"{"ms":"soon"}"#,
        "--control",
        &sock("s"),
        "--json",
    ]);
    expect_exit(&out, 1);
    assert_eq!(stdout_json(&out)["status"], "rejected");

    // Exit 3: nobody runs it.
    let out = run_peer(&["submit", "ocr", "--control", &sock("s"), "--json"]);
    expect_exit(&out, 3);
    let env = stdout_json(&out);
    assert_eq!(env["status"], "no_worker");
    assert!(env["error"].as_str().is_some_and(|e| e.contains("ocr")));

    // Exit 3: timed out.
    let out = run_peer(&[
        "submit",
        "sleep",
        "--input",
        r#"{"ms":10000}"#,
        "--timeout",
        "0.3",
        "--control",
        &sock("s"),
        "--json",
    ]);
    expect_exit(&out, 3);
    assert_eq!(stdout_json(&out)["status"], "timed_out");

    // Exit 2: an input too large for one data-channel message, refused before sending.
    let huge = format!("\"{}\"", "x".repeat(70_000));
    let out = run_peer(&[
        "submit",
        "echo",
        "--input",
        &huge,
        "--control",
        &sock("s"),
        "--json",
    ]);
    expect_exit(&out, 2);
    let env = stdout_json(&out);
    assert_eq!(env["status"], "too_large");
    assert!(
        env["error"].as_str().is_some_and(|e| e.contains("65536")),
        "{env}"
    );

    // Exit 2: usage errors, with a message.
    let out = run_peer(&["submit"]);
    expect_exit(&out, 2);
    let out = run_peer(&[
        "submit",
        "echo",
        "--input",
        "{not json",
        "--control",
        &sock("s"),
    ]);
    expect_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--input"));
    let out = run_peer(&["--capabilities", "teleport", "--signal", &url]);
    expect_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("teleport"));

    // `peer peers` lists the pool.
    let out = run_peer(&["peers", "--control", &sock("s"), "--json"]);
    expect_exit(&out, 0);
    let peers = stdout_json(&out);
    let listed: HashSet<&str> = peers["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(listed.contains("w1") && listed.contains("w2"), "{peers}");

    // Kill the signal-server: the connected daemon keeps completing jobs.
    server.0.kill().expect("kill signal-server");
    let _ = server.0.wait();
    watcher
        .wait_pool("the signal-server to be gone", |s| !s.connected)
        .await;
    for i in 0..4 {
        let input = json!({ "after": i }).to_string();
        let out = run_peer(&[
            "submit",
            "echo",
            "--input",
            &input,
            "--control",
            &sock("s"),
            "--json",
        ]);
        expect_exit(&out, 0);
        assert_eq!(stdout_json(&out)["result"], json!({ "after": i }));
    }
    drop(workers);
    let _ = std::fs::remove_dir_all(&tmp);
}
