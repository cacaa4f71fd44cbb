use std::time::Duration;

use jobmesh_peer::{DaemonError, Metrics};
use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, SignalGuard};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_shutting_down_finishes_running_jobs_then_leaves() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let worker = PeerGuard::start(server.url(), "t12", "worker", &["sleep"], 2);
    let sub = PeerGuard::start(server.url(), "t12", "sub", &[], 0);
    sub.wait_capable("sleep", 1).await;
    let h = sub.handle.clone();
    let job = tokio::spawn(async move {
        h.run(cap("sleep"), json!({"ms": 400}), Duration::from_secs(15))
            .await
    });
    // Once the worker reports the job running, ask it to stop.
    let w = worker.handle.id();
    sub.wait_pool("the job to run", |s| {
        s.peers.iter().any(|p| p.id == w && p.stats.running == 1)
    })
    .await;
    worker.handle.shutdown();
    // The pool hears at once that it drains: no submitter offers it a job.
    sub.wait_pool("the worker to say it drains", |s| {
        s.peers.iter().any(|p| p.id == w && p.stats.draining)
    })
    .await;
    assert_eq!(
        worker
            .handle
            .run(cap("sleep"), json!({"ms": 1}), Duration::from_secs(1))
            .await,
        Err(DaemonError::Draining),
        "a draining daemon takes no new local jobs"
    );
    let r = within("the running job", job)
        .await
        .expect("task")
        .expect("answer");
    assert_eq!(
        r.result,
        Ok(json!({"slept_ms": 400})),
        "the running job finished"
    );
    within("the worker to stop", worker.handle.stopped()).await;
    sub.wait_pool("the worker to leave", |s| s.peers.iter().all(|p| p.id != w))
        .await;
    assert_eq!(Metrics::get(&worker.handle.metrics().submits_received), 1);
    server.stop().await;
}
