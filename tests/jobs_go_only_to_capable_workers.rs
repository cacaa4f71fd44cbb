use std::time::Duration;

use jobmesh_core::JobError;
use jobmesh_peer::Metrics;
use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, SignalGuard};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_capability_never_receives_the_job() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let echo = PeerGuard::start(server.url(), "t3", "echoer", &["echo"], 4);
    let sleeper = PeerGuard::start(server.url(), "t3", "sleeper", &["sleep"], 4);
    let sub = PeerGuard::start(server.url(), "t3", "sub", &[], 0);
    sub.wait_capable("echo", 1).await;
    sub.wait_capable("sleep", 1).await;
    for n in 0..10 {
        let r = within(
            "an echo job",
            sub.handle
                .run(cap("echo"), json!(n), Duration::from_secs(15)),
        )
        .await
        .expect("answer");
        assert_eq!(r.result, Ok(json!(n)));
        assert_eq!(r.worker.expect("worker").0, echo.handle.id());
    }
    assert_eq!(Metrics::get(&sleeper.handle.metrics().submits_received), 0);
    assert_eq!(Metrics::get(&sleeper.handle.metrics().links_opened), 0);
    assert_eq!(Metrics::get(&echo.handle.metrics().submits_received), 10);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_capable_worker_the_submitter_gets_a_clear_error() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let sleeper = PeerGuard::start(server.url(), "t3b", "sleeper", &["sleep"], 1);
    let sub = PeerGuard::start(server.url(), "t3b", "sub", &[], 0);
    sub.wait_capable("sleep", 1).await;
    let r = within(
        "the refusal",
        sub.handle
            .run(cap("echo"), json!(1), Duration::from_secs(15)),
    )
    .await
    .expect("answer");
    let err = r.result.expect_err("nobody runs echo");
    assert!(matches!(err, JobError::NoCapableWorker { .. }), "{err:?}");
    assert!(
        err.to_string().contains("peer --capabilities echo"),
        "{err}"
    );
    assert_eq!(Metrics::get(&sleeper.handle.metrics().submits_received), 0);
    server.stop().await;
}
