//! `peer submit --detach`, SIGKILL of the submitting daemon, a restart on the
//! same data dir, and `peer result` returns the job's result: the journal
//! kept the job, the restarted daemon resumed it.

use jobmesh_testkit::process::{
    await_result, daemon, expect_exit, run_peer, signal_server, stdout_json,
};
use jobmesh_testkit::{init_tracing, PeerGuard};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_job_survives_its_submitter_being_killed() {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, url) = signal_server();
    let _worker = daemon(&url, "det", "w", "echo,sleep", dir.path(), &[]);
    let submitter = daemon(&url, "det", "s", "", dir.path(), &[]);
    let watcher = PeerGuard::start(&url, "det", "watcher", &[], 0);
    watcher.wait_capable("sleep", 1).await;
    let sock = dir.path().join("s.sock");
    let sock = sock.to_str().expect("utf-8");

    // A daemon without a journal refuses --detach; this one has one.
    let out = run_peer(&[
        "submit",
        "sleep",
        "--input",
        r#"{"ms": 1500}"#,
        "--detach",
        "--control",
        sock,
    ]);
    expect_exit(&out, 0);
    let job_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(uuid::Uuid::parse_str(&job_id).is_ok(), "{job_id:?}");

    // Not ended yet: exit 4 and where it stands.
    let out = run_peer(&["result", &job_id, "--json", "--control", sock]);
    expect_exit(&out, 4);
    let pending = stdout_json(&out);
    assert!(
        matches!(pending["status"].as_str(), Some("queued" | "running")),
        "{pending}"
    );

    submitter.kill();
    let _submitter = daemon(&url, "det", "s", "", dir.path(), &[]);

    let envelope = await_result(sock, &job_id, &[]).await;
    assert_eq!(envelope["status"], "completed", "{envelope}");
    assert_eq!(envelope["result"], json!({"slept_ms": 1500}));
    assert_eq!(envelope["job_id"], job_id.as_str());

    // Fetching again gives the same kept result; an unknown id is an error.
    let out = run_peer(&["result", &job_id, "--control", sock]);
    expect_exit(&out, 0);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json"),
        json!({"slept_ms": 1500})
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    let out = run_peer(&["result", &unknown, "--control", sock]);
    expect_exit(&out, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not submitted here, or its result expired"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
