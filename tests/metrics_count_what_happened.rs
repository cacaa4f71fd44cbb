//! Prometheus metrics on both binaries, scraped during a real run: the
//! counters say what happened (20 jobs completed → 20), the signal-server's
//! endpoint needs its admin token, and `promtool check metrics` (Debian's
//! prometheus) accepts both expositions.

use std::io::Write;
use std::process::Stdio;

use jobmesh_testkit::process::{
    daemon, daemon_serving, expect_exit, http_get, metric, run_peer, signal_server_with,
    submit_each, submit_timing_out, wait_capable,
};

/// `promtool check metrics` on `text`: no errors (lint remarks are printed).
fn promtool_accepts(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/setup installs Debian's prometheus package)");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool refused the exposition: {said}\n{text}"
    );
    assert!(!said.contains("error"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_on_both_binaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "metrics-test-token\n").expect("write");
    let (_server, url) = signal_server_with(&[
        "--open",
        "--admin-token-file",
        token_file.to_str().expect("utf-8"),
    ]);
    let _worker = daemon(&url, "metrics", "w1", "echo,sleep", dir.path(), &[]);
    let sock = dir.path().join("s.sock");
    let (_submitter, metrics) = daemon_serving("--metrics", &url, "metrics", "s", dir.path(), &[]);
    wait_capable(&sock, "echo", 1).await;
    let control = sock.to_str().expect("utf-8");
    // 20 that complete, 2 that time out, 1 that no worker can run.
    assert_eq!(submit_each(control, "echo", 20), Some(0));
    submit_timing_out(control);
    submit_timing_out(control);
    expect_exit(&run_peer(&["submit", "nope", "--control", control]), 3);

    let (status, text) = http_get(&metrics, "/metrics", None);
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        metric(&text, r#"jobmesh_jobs_submitted_total{capability="echo"}"#),
        20.0
    );
    assert_eq!(
        metric(&text, r#"jobmesh_jobs_completed_total{capability="echo"}"#),
        20.0
    );
    assert_eq!(
        metric(&text, r#"jobmesh_jobs_timed_out_total{capability="sleep"}"#),
        2.0
    );
    assert_eq!(
        metric(&text, r#"jobmesh_jobs_failed_total{capability="nope"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"jobmesh_job_run_time_seconds_count{capability="echo"}"#
        ),
        20.0
    );
    // Each submit is on disk before it is acknowledged: the 20 pipelined
    // ones share transactions, the other three have one each at least.
    let synced = metric(
        &text,
        r#"jobmesh_journal_commits_total{durability="synced"}"#,
    );
    assert!(synced >= 4.0, "{synced}");
    assert!(
        metric(
            &text,
            r#"jobmesh_journal_commit_seconds_count{durability="synced"}"#
        ) >= 1.0
    );
    // Labelled by how they connected: on one host, directly.
    assert!(
        metric(
            &text,
            "jobmesh_link_setups_total{via=\"host\",protocol=\"udp\"}"
        ) >= 1.0
    );
    assert!(metric(&text, "jobmesh_links_open") >= 1.0, "to the worker");
    assert!(metric(&text, "jobmesh_link_setup_seconds_count") >= 1.0);
    assert!(metric(&text, "jobmesh_data_channel_sent_bytes_total") > 0.0);
    assert_eq!(metric(&text, "jobmesh_signal_connected"), 1.0);
    promtool_accepts(&text);

    // The signal-server's: its admin token, or nothing.
    let server = url
        .strip_prefix("ws://")
        .and_then(|u| u.strip_suffix("/ws"))
        .expect("a ws:// url");
    let (status, body) = http_get(server, "/metrics", None);
    assert!(status.contains("401"), "{status}: {body}");
    let (status, text) = http_get(server, "/metrics", Some("metrics-test-token"));
    assert!(status.contains("200"), "{status}");
    assert_eq!(metric(&text, "jobmesh_signal_peers"), 2.0);
    assert_eq!(metric(&text, "jobmesh_signal_pools"), 1.0);
    assert!(
        metric(&text, "jobmesh_signal_relays_total") >= 2.0,
        "an offer and an answer"
    );
    assert!(metric(&text, "jobmesh_signal_frames_sent_total") >= 4.0);
    // Members joined and changed stats after one another: views went out.
    assert!(metric(&text, "jobmesh_signal_view_fan_out_seconds_count") >= 1.0);
    promtool_accepts(&text);
}
