use std::time::Duration;

use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, SignalGuard};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_submitter_keeps_running_jobs_without_the_signal_server() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let _worker = PeerGuard::start(server.url(), "t5", "worker", &["echo", "sleep"], 2);
    let sub = PeerGuard::start(server.url(), "t5", "sub", &[], 0);
    sub.wait_capable("echo", 1).await;
    // The first job opens the data channel.
    let r = within(
        "the first job",
        sub.handle
            .run(cap("echo"), json!(1), Duration::from_secs(15)),
    )
    .await
    .expect("answer");
    assert_eq!(r.result, Ok(json!(1)));

    // A job in flight when the server goes away finishes too.
    let h = sub.handle.clone();
    let in_flight = tokio::spawn(async move {
        h.run(cap("sleep"), json!({"ms": 300}), Duration::from_secs(15))
            .await
    });
    server.stop().await;
    sub.wait_pool("the signal-server connection to drop", |s| !s.connected)
        .await;

    let r = within(
        "a job with no signal-server",
        sub.handle
            .run(cap("echo"), json!(2), Duration::from_secs(15)),
    )
    .await
    .expect("answer");
    assert_eq!(r.result, Ok(json!(2)));
    let r = within("the in-flight job", in_flight)
        .await
        .expect("task")
        .expect("answer");
    assert_eq!(r.result, Ok(json!({"slept_ms": 300})));
}
