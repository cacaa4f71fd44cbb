use std::time::Duration;

use jobmesh_peer::Metrics;
use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, SignalGuard};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_submitting_to_each_other_at_once_both_succeed() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    // Self-dispatch off: each one's only candidate is the other.
    let remote_only = |c: &mut jobmesh_peer::DaemonConfig| c.dispatcher.self_dispatch = false;
    let a = PeerGuard::start_configured(server.url(), "t9", "a", &["echo"], 2, remote_only);
    let b = PeerGuard::start_configured(server.url(), "t9", "b", &["echo"], 2, remote_only);
    a.wait_capable("echo", 1).await;
    b.wait_capable("echo", 1).await;
    // Each one's only capable peer is the other: both dial at the same moment.
    let (ra, rb) = within("both jobs", async {
        tokio::join!(
            a.handle
                .run(cap("echo"), json!("from a"), Duration::from_secs(15)),
            b.handle
                .run(cap("echo"), json!("from b"), Duration::from_secs(15)),
        )
    })
    .await;
    assert_eq!(ra.expect("answer").result, Ok(json!("from a")));
    assert_eq!(rb.expect("answer").result, Ok(json!("from b")));
    // Later jobs reuse the link: no new connections.
    let opened = Metrics::get(&a.handle.metrics().links_opened);
    for n in 0..5 {
        let r = within(
            "a reuse job",
            a.handle.run(cap("echo"), json!(n), Duration::from_secs(15)),
        )
        .await
        .expect("answer");
        assert_eq!(r.result, Ok(json!(n)));
    }
    assert_eq!(Metrics::get(&a.handle.metrics().links_opened), opened);
    server.stop().await;
}
