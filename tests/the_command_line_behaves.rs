//! The `peer` command line as a new user meets it (issue 17): each
//! friction point found by trying it, fixed and held here.

use std::process::Stdio;

use jobmesh_testkit::process::peer;

/// `peer jobs | head`: the reader goes away before the command writes. The
/// command ends quietly with status 0 instead of panicking ("Broken pipe",
/// status 101).
#[test]
fn a_command_whose_reader_went_away_ends_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = peer(&["id", "--data-dir", data_dir])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("peer id runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Where a result goes is settled before the job is submitted: `--out-dir`
/// is created, and an `--out` in a directory that does not exist is refused
/// (before, the job ran and its result was lost with exit 1).
#[test]
fn output_paths_are_settled_before_the_job_is_submitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nowhere = dir.path().join("no-daemon.sock");
    let nowhere = nowhere.to_str().expect("utf-8 path");
    let missing = dir.path().join("missing").join("out.png");
    let out = peer(&[
        "submit",
        "echo",
        "--out",
        missing.to_str().expect("utf-8"),
        "--control",
        nowhere,
    ])
    .output()
    .expect("peer submit runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(
        !stderr.contains("no-daemon.sock"),
        "refused before connecting: {stderr}"
    );

    let made = dir.path().join("results").join("today");
    let out = peer(&[
        "submit",
        "echo",
        "--out-dir",
        made.to_str().expect("utf-8"),
        "--control",
        nowhere,
    ])
    .output()
    .expect("peer submit runs");
    assert!(!out.status.success(), "no daemon to submit to");
    assert!(made.is_dir(), "--out-dir was created first");
}

/// A one-off submit to a wrong `--signal` URL says at once what is wrong
/// and what to do, for each kind of mistake (before: 8-10 warnings, a 10 s
/// wait, then "timed out waiting for the pool").
#[test]
fn a_wrong_signal_url_is_named_at_once() {
    let (_server, url) = jobmesh_testkit::process::signal_server();
    let host_port = url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_owned();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let free = closed.local_addr().expect("its address");
    drop(closed);
    for (url, says) in [
        (format!("http://{host_port}/ws"), "is not a WebSocket URL"),
        (
            format!("ws://{host_port}/nope"),
            "answered 404 Not Found for /nope",
        ),
        (
            format!("ws://{host_port}"),
            "the signal-server's WebSocket is at /ws",
        ),
        (
            format!("wss://{host_port}/ws"),
            "does not speak TLS: use ws://",
        ),
        (format!("ws://{free}/ws"), "nothing listens on"),
        ("ws:///ws".to_owned(), "names no host"),
    ] {
        let out = peer(&["submit", "echo", "--signal", &url, "--open", "--pool", "p"])
            .env_remove("JOBMESH_CONTROL")
            .env("XDG_RUNTIME_DIR", "/nonexistent-jobmesh-test")
            .output()
            .expect("peer submit runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {stderr}");
        assert!(stderr.contains(says), "{url}: {stderr}");
        assert!(!stderr.contains("timed out"), "{url}: {stderr}");
    }
}
