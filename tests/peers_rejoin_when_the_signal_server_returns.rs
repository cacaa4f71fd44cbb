use std::time::Duration;

use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, SignalGuard};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_reconnect_and_reannounce_after_a_signal_server_restart() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let worker = PeerGuard::start(server.url(), "t11", "worker", &["echo"], 2);
    let sub = PeerGuard::start(server.url(), "t11", "sub", &[], 0);
    sub.wait_capable("echo", 1).await;

    server.stop().await;
    sub.wait_pool("the server to go", |s| !s.connected).await;
    worker.wait_pool("the server to go", |s| !s.connected).await;

    // A new, empty server on the same address: both peers find it, say hello
    // again, and see each other with their capabilities.
    let mut server = SignalGuard::restart_on(&server).await;
    sub.wait_capable("echo", 1).await;
    let w = worker.handle.id();
    sub.wait_pool("the worker's stats again", |s| {
        s.peers.iter().any(|p| p.id == w && p.stats.slots == 2)
    })
    .await;
    // A submitter that never had a link to the worker can reach it now.
    let fresh = PeerGuard::start(server.url(), "t11", "fresh", &[], 0);
    fresh.wait_capable("echo", 1).await;
    let r = within(
        "a job after the restart",
        fresh
            .handle
            .run(cap("echo"), json!("back"), Duration::from_secs(15)),
    )
    .await
    .expect("answer");
    assert_eq!(r.result, Ok(json!("back")));
    server.stop().await;
}
