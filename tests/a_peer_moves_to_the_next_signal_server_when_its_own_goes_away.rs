//! `--signal a,b`: a peer whose signal-server goes away moves to the next
//! one of its list (with backoff and jitter per round of them, not per
//! server) and is seen there; jobs flow with the peers that were there.
//! The two servers here share nothing (no cluster): the worker is visible
//! on b only once it moved.

use std::time::Duration;

use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, SignalGuard};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_moves_to_the_next_signal_server_when_its_own_goes_away() {
    init_tracing();
    let mut a = SignalGuard::start().await;
    let mut b = SignalGuard::start().await;
    let b_url = b.url().to_owned();
    let worker = PeerGuard::start_configured(a.url(), "moves", "worker", &["echo"], 2, |c| {
        c.signal_fallbacks = vec![b_url.clone()];
    });
    let sub = PeerGuard::start(b.url(), "moves", "sub", &[], 0);
    // The worker takes the first server of its list.
    worker
        .wait_pool("the worker to join a", |s| s.connected && s.synced)
        .await;
    let on_b = sub.wait_pool("b's whole pool", |s| s.synced).await;
    assert!(
        on_b.peers.is_empty(),
        "the worker is on a: {:?}",
        on_b.peers
    );

    a.stop().await;
    sub.wait_capable("echo", 1).await;
    let r = within(
        "a job through the server the worker moved to",
        sub.handle
            .run(cap("echo"), json!("moved"), Duration::from_secs(15)),
    )
    .await
    .expect("answer");
    assert_eq!(r.result, Ok(json!("moved")));
    b.stop().await;
}
