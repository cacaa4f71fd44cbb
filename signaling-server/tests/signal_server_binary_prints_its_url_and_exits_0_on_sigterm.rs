//! The real `signal-server` binary: the ready line with the real port, a
//! health check, SIGTERM → exit 0; a busy address → exit 1 with a hint; a
//! bad flag → exit 2.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(15);

fn server(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_signal-server"));
    c.args(args)
        .env_remove("JOBMESH_LISTEN")
        .env_remove("JOBMESH_HEARTBEAT_MS");
    c
}

/// Waits at most [`DEADLINE`] for `child` to exit.
fn wait(mut child: Child) -> ExitStatus {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    rx.recv_timeout(DEADLINE)
        .expect("the process exits in time")
        .expect("wait for the process")
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill -TERM");
    assert!(status.success(), "kill -TERM failed");
}

/// Starts the binary on port 0 and returns it with its `IP:PORT`.
fn start() -> (Child, String) {
    let mut child = server(&["--listen", "127.0.0.1:0", "--open"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn signal-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("the ready line");
    assert!(
        line.starts_with("signal-server listening on ws://127.0.0.1:") && line.ends_with("/ws\n"),
        "{line:?}"
    );
    let addr = line
        .trim()
        .trim_start_matches("signal-server listening on ws://")
        .trim_end_matches("/ws")
        .to_owned();
    assert!(!addr.ends_with(":0"), "the real port is printed: {addr}");
    (child, addr)
}

#[test]
fn signal_server_prints_its_url_serves_healthz_and_exits_0_on_sigterm() {
    let (child, addr) = start();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("\r\n\r\nok"), "{resp}");

    sigterm(&child);
    assert_eq!(wait(child).code(), Some(0));
}

#[test]
fn a_busy_address_exits_1_with_a_hint() {
    let (child, addr) = start();
    let out = server(&["--listen", &addr, "--open"])
        .output()
        .expect("run a second signal-server");
    sigterm(&child);
    assert_eq!(wait(child).code(), Some(0));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}"))
            && stderr.contains("pick another with --listen"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no ready line");
}

#[test]
fn without_pool_keys_or_open_mode_it_refuses_to_start() {
    let out = server(&["--listen", "127.0.0.1:0"])
        .output()
        .expect("run signal-server");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no pool would admit anyone") && stderr.contains("--pool-key NAME=KEY"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no ready line");
    let out = server(&["--listen", "127.0.0.1:0", "--pool-key", "lab=not-a-key"])
        .output()
        .expect("run signal-server");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--pool-key \"lab=not-a-key\""), "{stderr}");
}

#[test]
fn bad_flags_exit_2() {
    for args in [
        &["--heartbeat-ms", "0"][..],
        &["--max-peers-per-pool", "0"],
        &["--no-such-flag"],
    ] {
        let out = server(args).output().expect("run signal-server");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
    }
}
