//! Ctrl-C on `peer submit` closes its control connection; the daemon then
//! cancels the job, and the worker's handler sees the cancel.

use jobmesh_peer::control::{self, Request};
use jobmesh_peer::Metrics;
use jobmesh_testkit::{cap, init_tracing, next_event_named, within, PeerGuard, SignalGuard};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_control_connection_cancels_the_job() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let worker = PeerGuard::start(server.url(), "cc", "w", &["sleep"], 1);
    let sub = PeerGuard::start(server.url(), "cc", "sub", &[], 0);
    sub.wait_capable("sleep", 1).await;
    let control = sub.serve_control().await;
    let path = control.path.clone();
    let mut watch = sub.handle.watch();

    let mut req = Request::submit(cap("sleep"), json!({"ms": 60_000}));
    if let Request::Submit { events, .. } = &mut req {
        *events = true;
    }
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let (read, mut write) = stream.into_split();
    let line = format!("{}\n", serde_json::to_string(&req).expect("json"));
    write.write_all(line.as_bytes()).await.expect("write");
    let mut lines = BufReader::new(read).lines();
    // Wait until the worker runs it, then leave.
    within("the job to start", async {
        loop {
            let l = lines.next_line().await.expect("read").expect("a line");
            let v: serde_json::Value = serde_json::from_str(&l).expect("json");
            if v["event"]["event"] == "started" {
                break;
            }
        }
    })
    .await;
    drop(lines);
    drop(write);

    let finished = next_event_named(&mut watch, "finished").await;
    assert_eq!(finished.state.as_deref(), Some("cancelled"));
    let wid = worker.handle.id();
    sub.wait_pool("the worker's slot to free", |s| {
        s.peers
            .iter()
            .any(|p| p.id == wid && p.stats.running == 0 && p.stats.failed == 1)
    })
    .await;
    assert_eq!(Metrics::get(&worker.handle.metrics().handlers_cancelled), 1);
    // The daemon still serves the next client.
    let r = control::request(&path, &Request::submit(cap("sleep"), json!({"ms": 1})))
        .await
        .expect("answer");
    assert_eq!(r["status"], "completed");
    drop(control);
    server.stop().await;
}
