//! 5,000 sockets that send half a request and wait, and a member flooding
//! relays, against the real `signal-server` binary: its memory stays under
//! [`RSS_BOUND_MIB`], the idle sockets are closed at the head deadline, and
//! members keep working all along.

use std::time::Duration;

use jobmesh_testkit::process::signal_server_with;
use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, RawPeer};
use jobmesh_wire::signal::Handshake;
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// Idle sockets held against the server.
const IDLE_SOCKETS: usize = 5_000;
/// The server's resident memory must stay under this while they are held.
const RSS_BOUND_MIB: u64 = 128;

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signal_server_stays_small_under_idle_sockets_and_a_relay_flood() {
    init_tracing();
    // Every socket comes from 127.0.0.1 here: raise the per-address cap so
    // that all 5,000 are held (as they would be from 5,000 addresses).
    let (server, url) = signal_server_with(&[
        "--open",
        "--max-connections-per-ip",
        "10000",
        "--relay-rate",
        "50",
    ]);
    let pid = server.0.id();
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_owned();
    let before = rss_mib(pid);

    let mut idle = Vec::with_capacity(IDLE_SOCKETS);
    for _ in 0..IDLE_SOCKETS {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        idle.push(s);
    }
    // Members join and work while the sockets are held, and one of them
    // floods relays.
    let worker = PeerGuard::start(&url, "load", "worker", &["echo"], 2);
    let sub = PeerGuard::start(&url, "load", "sub", &[], 0);
    sub.wait_capable("echo", 1).await;
    let mut flooder = RawPeer::join(&url, "load").await;
    let w = flooder.member("worker").await;
    flooder.relay_flood(
        w,
        20_000,
        Handshake::Candidate {
            candidate: "x".into(),
            sdp_mid: None,
            sdp_mline_index: None,
        },
    );
    let held = rss_mib(pid);
    let r = within(
        "a job while the server is under load",
        sub.handle
            .run(cap("echo"), json!({"n": 1}), Duration::from_secs(15)),
    )
    .await
    .expect("accepted");
    assert_eq!(r.result, Ok(json!({"n": 1})));
    println!(
        "signal-server RSS: {before} MiB at start, {held} MiB with {IDLE_SOCKETS} idle sockets and a relay flood (bound {RSS_BOUND_MIB} MiB)"
    );
    assert!(held < RSS_BOUND_MIB, "{held} MiB");
    drop(idle);
    drop(worker);
}
