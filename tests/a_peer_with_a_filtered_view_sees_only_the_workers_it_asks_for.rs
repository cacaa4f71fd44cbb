//! `peer --view`: in a large pool a peer need not learn of every member.
//! Real daemons on a real signal-server: a submitter with `--view echo`
//! sees only the echo worker and runs echo jobs; a job of a kind outside
//! its view fails at once saying so (exit 3, as no worker); a worker with `--view none` sees
//! nobody and still runs the jobs of a submitter that sees it.

use jobmesh_testkit::process::{
    daemon, expect_exit, run_peer, signal_server, stdout_json, wait_capable,
};

/// The names in the pool view of the daemon at `control` (`peer peers`).
fn names_seen(control: &str) -> Vec<String> {
    let out = run_peer(&["peers", "--json", "--control", control]);
    expect_exit(&out, 0);
    let mut names: Vec<String> = stdout_json(&out)["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_filtered_view_sees_only_the_workers_it_asks_for() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _echo = daemon(
        &url,
        "views",
        "echoer",
        "echo",
        dir.path(),
        &["--view", "none"],
    );
    let _sleep = daemon(&url, "views", "sleeper", "sleep", dir.path(), &[]);
    let _narrow = daemon(&url, "views", "narrow", "", dir.path(), &["--view", "echo"]);
    let _wide = daemon(&url, "views", "wide", "", dir.path(), &[]);
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    let control = |n: &str| sock(n).to_str().expect("utf-8").to_owned();

    // The full view sees all three others; the filtered one only the echo
    // worker (the sleeper and the submit-only peers offer no echo).
    wait_capable(&sock("wide"), "sleep", 1).await;
    wait_capable(&sock("wide"), "echo", 1).await;
    wait_capable(&sock("narrow"), "echo", 1).await;
    assert_eq!(
        names_seen(&control("wide")),
        ["echoer", "narrow", "sleeper"]
    );
    assert_eq!(names_seen(&control("narrow")), ["echoer"]);
    // A worker that never submits sees nobody.
    assert!(names_seen(&control("echoer")).is_empty());

    // The narrow view is enough for its jobs; a job of another kind finds
    // no worker in it.
    let out = run_peer(&[
        "submit",
        "echo",
        "--input",
        r#"{"n":1}"#,
        "--control",
        &control("narrow"),
    ]);
    expect_exit(&out, 0);
    let out = run_peer(&[
        "submit",
        "sleep",
        "--input",
        r#"{"ms":1}"#,
        "--timeout",
        "5",
        "--control",
        &control("narrow"),
    ]);
    expect_exit(&out, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sees only the workers of echo (--view)"),
        "{stderr}"
    );
    // The blind worker still runs jobs: submitters that see it dial it.
    let out = run_peer(&[
        "submit",
        "echo",
        "--json",
        "--input",
        r#"{"n":2}"#,
        "--control",
        &control("wide"),
    ]);
    expect_exit(&out, 0);
    assert_eq!(stdout_json(&out)["worker"]["name"], "echoer");
}
