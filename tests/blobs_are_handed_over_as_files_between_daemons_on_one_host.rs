//! Two daemons of one user on one host sharing a handover directory hand
//! blobs to each other as files (digest-checked, removed once read) instead
//! of sending them over their data channel; daemons with different
//! directories fall back to chunks. Real `peer` processes, real WebRTC.

use jobmesh_testkit::process::{
    daemon, daemon_serving, expect_exit, http_get, metric, run_peer, signal_server, stdout_json,
    wait_capable,
};

const MIB: usize = 1024 * 1024;

/// Submits `echo` with a `size`-byte file through `sock`; checks the output
/// is the input, byte for byte.
fn echo_blob(dir: &std::path::Path, sock: &std::path::Path, n: usize, size: usize) {
    let input = dir.join(format!("in{n}.bin"));
    let output = dir.join(format!("out{n}.bin"));
    let bytes: Vec<u8> = (0..size)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ n as u8)
        .collect();
    std::fs::write(&input, &bytes).expect("write the input");
    let out = run_peer(&[
        "submit",
        "echo",
        "--file",
        input.to_str().expect("utf-8"),
        "--out",
        output.to_str().expect("utf-8"),
        "--json",
        "--control",
        sock.to_str().expect("utf-8"),
    ]);
    expect_exit(&out, 0);
    assert_eq!(stdout_json(&out)["worker"]["name"], "w1");
    assert!(
        std::fs::read(&output).expect("the output") == bytes,
        "job {n}: the file came back changed"
    );
}

/// Bytes the submitter's daemon moved over data channels, and the sets it
/// handed over, from its metrics.
fn moved(metrics: &str) -> (f64, f64) {
    let (_, text) = http_get(metrics, "/metrics", None);
    let channel = metric(&text, "jobmesh_data_channel_sent_bytes_total")
        + metric(&text, "jobmesh_data_channel_received_bytes_total");
    (
        channel,
        metric(&text, "jobmesh_blob_sets_handed_over_total"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_sharing_a_directory_hand_blobs_over_as_files() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = dir.path().join("handover");
    let shared_arg = shared.to_str().expect("utf-8");
    let _worker = daemon(
        &url,
        "handover",
        "w1",
        "echo",
        dir.path(),
        &["--handover-dir", shared_arg],
    );
    let (_submitter, metrics) = daemon_serving(
        "--metrics",
        &url,
        "handover",
        "s",
        dir.path(),
        &["--handover-dir", shared_arg],
    );
    let sock = dir.path().join("s.sock");
    wait_capable(&sock, "echo", 1).await;
    for n in 0..3 {
        echo_blob(dir.path(), &sock, n, 2 * MIB);
    }
    let (channel, handed) = moved(&metrics);
    assert_eq!(handed, 3.0, "each job's input went as a file");
    // 12 MiB of blobs moved both ways; the channel carried only messages.
    assert!(
        channel < MIB as f64,
        "{channel} bytes went over the data channel"
    );
    // Read files are gone: only the directory's token is left.
    let left: Vec<String> = std::fs::read_dir(&shared)
        .expect("the directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["token"], "files left in the handover directory");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&shared).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "private to its user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_with_different_directories_send_chunks() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let theirs = dir.path().join("theirs");
    let ours = dir.path().join("ours");
    let _worker = daemon(
        &url,
        "no-handover",
        "w1",
        "echo",
        dir.path(),
        &["--handover-dir", theirs.to_str().expect("utf-8")],
    );
    let (_submitter, metrics) = daemon_serving(
        "--metrics",
        &url,
        "no-handover",
        "s",
        dir.path(),
        &["--handover-dir", ours.to_str().expect("utf-8")],
    );
    let sock = dir.path().join("s.sock");
    wait_capable(&sock, "echo", 1).await;
    echo_blob(dir.path(), &sock, 0, 2 * MIB);
    let (channel, handed) = moved(&metrics);
    assert_eq!(handed, 0.0);
    assert!(
        channel >= (4 * MIB) as f64,
        "the blobs went over the data channel: {channel} bytes"
    );
}
