use std::collections::HashMap;
use std::time::Duration;

use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, SignalGuard};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_jobs_use_both_workers() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let w1 = PeerGuard::start(server.url(), "t2", "w1", &["echo", "sleep"], 2);
    let w2 = PeerGuard::start(server.url(), "t2", "w2", &["echo", "sleep"], 2);
    let sub = PeerGuard::start(server.url(), "t2", "sub", &[], 0);
    sub.wait_capable("echo", 2).await;

    let jobs = (0..20).map(|n| {
        let h = sub.handle.clone();
        tokio::spawn(async move {
            h.run(cap("sleep"), json!({"ms": 20 + n}), Duration::from_secs(15))
                .await
        })
    });
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for (n, job) in jobs.enumerate() {
        let report = within("a sleep job", job)
            .await
            .expect("task")
            .expect("daemon answers");
        assert_eq!(report.result, Ok(json!({"slept_ms": 20 + n})));
        *per_worker
            .entry(report.worker.expect("ran somewhere").1)
            .or_default() += 1;
    }
    assert_eq!(per_worker.values().sum::<usize>(), 20);
    assert!(
        per_worker.contains_key("w1") && per_worker.contains_key("w2"),
        "both workers ran jobs: {per_worker:?}"
    );
    drop((w1, w2));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_worker_rejects_and_the_job_goes_to_another() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let w1 = PeerGuard::start(server.url(), "t2b", "w1", &["sleep"], 1);
    let w2 = PeerGuard::start(server.url(), "t2b", "w2", &["sleep"], 1);
    // Two submitters that cannot see each other's in-flight jobs: with one slot
    // each, some offers must land on a busy worker and be rejected.
    let a = PeerGuard::start(server.url(), "t2b", "a", &[], 0);
    let b = PeerGuard::start(server.url(), "t2b", "b", &[], 0);
    a.wait_capable("sleep", 2).await;
    b.wait_capable("sleep", 2).await;
    let mut tasks = Vec::new();
    for h in [a.handle.clone(), b.handle.clone()] {
        for _ in 0..3 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                h.run(cap("sleep"), json!({"ms": 150}), Duration::from_secs(20))
                    .await
            }));
        }
    }
    for t in tasks {
        let r = within("a sleep job", t)
            .await
            .expect("task")
            .expect("answer");
        assert_eq!(r.result, Ok(json!({"slept_ms": 150})));
    }
    let rejected = jobmesh_peer::Metrics::get(&w1.handle.metrics().rejected)
        + jobmesh_peer::Metrics::get(&w2.handle.metrics().rejected);
    assert!(
        rejected > 0,
        "six one-slot jobs from two blind submitters forced rejections"
    );
    server.stop().await;
}
