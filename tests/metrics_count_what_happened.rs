//! Prometheus metrics on both binaries, scraped during a real run: the
//! counters say what happened (20 jobs completed → 20), the signal-server's
//! endpoint needs its admin token, and `promtool check metrics` (Debian's
//! prometheus) accepts both expositions.

use std::io::{Read, Write};
use std::process::Stdio;

use jobmesh_testkit::process::{
    daemon, expect_exit, peer, run_peer, signal_server_with, submit_each, submit_timing_out,
    wait_capable, Proc,
};

/// `GET path` on `addr` over plain HTTP/1.0: (status line, body).
fn get(addr: &str, path: &str, token: Option<&str>) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The value of the sample `series` (name and labels, exactly) in `text`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

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
    let (_submitter, ready) = Proc::spawn(&mut peer(&[
        "--signal",
        &url,
        "--pool",
        "metrics",
        "--name",
        "s",
        "--open",
        "--no-self-dispatch",
        "--control",
        sock.to_str().expect("utf-8"),
        "--data-dir",
        dir.path().join("s.data").to_str().expect("utf-8"),
        "--metrics",
        "127.0.0.1:0",
    ]));
    let metrics = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://")?.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in the ready line {ready:?}"))
        .to_owned();
    wait_capable(&sock, "echo", 1).await;
    let control = sock.to_str().expect("utf-8");
    // 20 that complete, 2 that time out, 1 that no worker can run.
    assert_eq!(submit_each(control, "echo", 20), Some(0));
    submit_timing_out(control);
    submit_timing_out(control);
    expect_exit(&run_peer(&["submit", "nope", "--control", control]), 3);

    let (status, text) = get(&metrics, "/metrics", None);
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        sample(&text, r#"jobmesh_jobs_submitted_total{capability="echo"}"#),
        20.0
    );
    assert_eq!(
        sample(&text, r#"jobmesh_jobs_completed_total{capability="echo"}"#),
        20.0
    );
    assert_eq!(
        sample(&text, r#"jobmesh_jobs_timed_out_total{capability="sleep"}"#),
        2.0
    );
    assert_eq!(
        sample(&text, r#"jobmesh_jobs_failed_total{capability="nope"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"jobmesh_job_run_time_seconds_count{capability="echo"}"#
        ),
        20.0
    );
    // Each submit is on disk before it is acknowledged: the 20 pipelined
    // ones share transactions, the other three have one each at least.
    let synced = sample(
        &text,
        r#"jobmesh_journal_commits_total{durability="synced"}"#,
    );
    assert!(synced >= 4.0, "{synced}");
    assert!(
        sample(
            &text,
            r#"jobmesh_journal_commit_seconds_count{durability="synced"}"#
        ) >= 1.0
    );
    assert!(sample(&text, "jobmesh_link_setups_total") >= 1.0);
    assert!(sample(&text, "jobmesh_links_open") >= 1.0, "to the worker");
    assert!(sample(&text, "jobmesh_link_setup_seconds_count") >= 1.0);
    assert!(sample(&text, "jobmesh_data_channel_sent_bytes_total") > 0.0);
    assert_eq!(sample(&text, "jobmesh_signal_connected"), 1.0);
    promtool_accepts(&text);

    // The signal-server's: its admin token, or nothing.
    let server = url
        .strip_prefix("ws://")
        .and_then(|u| u.strip_suffix("/ws"))
        .expect("a ws:// url");
    let (status, body) = get(server, "/metrics", None);
    assert!(status.contains("401"), "{status}: {body}");
    let (status, text) = get(server, "/metrics", Some("metrics-test-token"));
    assert!(status.contains("200"), "{status}");
    assert_eq!(sample(&text, "jobmesh_signal_peers"), 2.0);
    assert_eq!(sample(&text, "jobmesh_signal_pools"), 1.0);
    assert!(
        sample(&text, "jobmesh_signal_relays_total") >= 2.0,
        "an offer and an answer"
    );
    assert!(sample(&text, "jobmesh_signal_frames_sent_total") >= 4.0);
    // Members joined and changed stats after one another: views went out.
    assert!(sample(&text, "jobmesh_signal_view_fan_out_seconds_count") >= 1.0);
    promtool_accepts(&text);
}
