//! The real `signal-server` binary: ready line, health check, SIGTERM → exit 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

#[test]
fn signal_server_prints_its_url_serves_healthz_and_exits_0_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_signal-server"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn signal-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert!(
        line.starts_with("signal-server listening on ws://127.0.0.1:"),
        "{line:?}"
    );
    let url = line.trim().rsplit(' ').next().expect("url").to_owned();
    let addr = url.trim_start_matches("ws://").trim_end_matches("/ws");
    assert!(!addr.ends_with(":0"), "the real port is printed: {addr}");

    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(jobmesh_testkit::DEADLINE))
        .expect("timeout");
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("ok"), "{resp}");

    let exit = jobmesh_testkit::process::sigterm_and_wait(child);
    assert_eq!(exit.code(), Some(0));
}
