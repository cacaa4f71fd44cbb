//! What a service manager relies on, checked on the real binaries: both
//! tell `$NOTIFY_SOCKET` they are ready (the signal-server once it listens,
//! a daemon once it has joined its pool, saying what it waits for before)
//! and that they are stopping on SIGTERM; `--log-format json` writes one
//! JSON object a line; and `systemd-analyze verify` accepts the units in
//! deploy/systemd (with their binaries pointed at this build).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use jobmesh_testkit::process::{bin, lines_of, peer, sigterm_and_wait};

/// A notify socket: what the binaries send to it, one datagram a message.
struct Notify {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Notify {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a read timeout");
        Self {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The next message (its `KEY=VALUE` lines), within the read timeout.
    fn next(&self) -> String {
        let mut buf = vec![0; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("a notify message in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Messages until one holds `want`; returns them all.
    fn until(&self, want: &str) -> Vec<String> {
        let mut seen = Vec::new();
        while !seen.last().is_some_and(|m: &String| m.contains(want)) {
            seen.push(self.next());
        }
        seen
    }
}

#[test]
fn the_signal_server_and_a_daemon_tell_systemd_when_they_are_ready_and_stopping() {
    let notify = Notify::new();
    let server = std::process::Command::new(bin("signal-server"))
        .args(["--listen", "127.0.0.1:0", "--open", "--log-format", "json"])
        .env("NOTIFY_SOCKET", &notify.path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("signal-server runs");
    let mut server = jobmesh_testkit::process::Proc::adopt(server);
    let ready = lines_of(server.0.stdout.take().expect("piped"))
        .recv_timeout(Duration::from_secs(30))
        .expect("the ready line");
    let url = ready
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .expect("a url")
        .to_owned();
    assert!(notify
        .until("READY=1")
        .iter()
        .any(|m| m.contains("READY=1")));
    // JSON logs: every stderr line an object with a level and a message.
    let logs = lines_of(server.0.stderr.take().expect("piped"));
    let line = logs
        .recv_timeout(Duration::from_secs(30))
        .expect("a log line");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(
        v["level"].is_string() && v["fields"]["message"].is_string(),
        "{line}"
    );

    // A daemon: first what it waits for, then ready once it has joined.
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = peer(&[
        "--signal",
        &url,
        "--open",
        "--name",
        "w1",
        "--capabilities",
        "echo",
        "--data-dir",
        dir.path().join("data").to_str().expect("utf-8"),
        "--control",
        dir.path().join("w1.sock").to_str().expect("utf-8"),
    ])
    .env("NOTIFY_SOCKET", &notify.path)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("peer runs");
    let said = notify.until("READY=1");
    assert!(
        said[0].contains("STATUS=joining pool default at ws://"),
        "{said:?}"
    );
    assert!(
        said.last()
            .is_some_and(|m| m.contains("STATUS=member of pool default")),
        "{said:?}"
    );
    let status = sigterm_and_wait(daemon);
    assert!(status.success(), "{status:?}");
    assert!(notify
        .until("STOPPING=1")
        .last()
        .is_some_and(|m| m.contains("STOPPING=1")));
    drop(server);
}

#[test]
fn systemd_analyze_accepts_the_units() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        panic!("systemd-analyze is missing: scripts/setup installs it (Debian's systemd package)");
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let root = env!("CARGO_MANIFEST_DIR");
    for unit in ["jobmesh-signal.service", "jobmesh-peer.service"] {
        let text =
            std::fs::read_to_string(format!("{root}/deploy/systemd/{unit}")).expect("the unit");
        // Its binaries are this build's; `verify` checks that they exist.
        let text = text
            .replace("/usr/local/bin/peer", &bin("peer").display().to_string())
            .replace(
                "/usr/local/bin/signal-server",
                &bin("signal-server").display().to_string(),
            );
        std::fs::write(dir.path().join(unit), text).expect("write the unit");
    }
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("jobmesh-signal.service"))
        .arg(dir.path().join("jobmesh-peer.service"))
        .output()
        .expect("systemd-analyze runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}
