//! A worker frozen past its lease (SIGSTOP, then SIGCONT): the submitter
//! declares the attempt lost while the link is still up, runs the job again
//! on the other worker, delivers that result once, and refuses the frozen
//! worker's late word about the old attempt.

use std::time::Duration;

use jobmesh_core::{AttemptOutcome, EventKind};
use jobmesh_peer::Metrics;
use jobmesh_testkit::process::{daemon, signal_server};
use jobmesh_testkit::{cap, eventually, init_tracing, within, PeerGuard};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_loses_its_lease_and_its_late_result_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, url) = signal_server();
    let workers = [
        (
            "w1",
            daemon(&url, "frozen", "w1", "sleep", dir.path(), &["--slots", "1"]),
        ),
        (
            "w2",
            daemon(&url, "frozen", "w2", "sleep", dir.path(), &["--slots", "1"]),
        ),
    ];
    let sub = PeerGuard::start_configured(&url, "frozen", "sub", &[], 0, |c| {
        c.dispatcher.lease = Duration::from_millis(1000);
    });
    sub.wait_capable("sleep", 2).await;

    let mut job = sub
        .handle
        .submit(cap("sleep"), json!({"ms": 1500}), Duration::from_secs(30))
        .await
        .expect("submitted");
    let first = within("the first attempt to start", async {
        loop {
            let e = job.next_event().await.expect("events until the end");
            if let EventKind::Started { worker, .. } = e.kind {
                return worker;
            }
        }
    })
    .await;
    let name = |id| {
        sub.handle
            .pool()
            .peers
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.name.clone())
            .expect("a known worker")
    };
    let frozen_name = name(first);
    let frozen = &workers
        .iter()
        .find(|(n, _)| *n == frozen_name)
        .expect("one of ours")
        .1;
    frozen.signal("STOP");

    let report = within("the job's one result", async {
        while job.next_event().await.is_some() {}
        job.result().await
    })
    .await
    .expect("the job ends");
    // Read before it wakes: nothing else can send a stale message meanwhile.
    let metrics = sub.handle.metrics();
    let stale = Metrics::get(&metrics.stale_messages);
    frozen.signal("CONT");
    assert_eq!(report.result, Ok(json!({"slept_ms": 1500})), "{report:?}");
    let (worker, worker_name) = report.worker.clone().expect("a worker");
    assert_ne!(worker, first, "the result comes from the re-dispatch");
    assert_ne!(worker_name, frozen_name);
    assert_eq!(report.attempts.len(), 2, "{:?}", report.attempts);
    assert_eq!(report.attempts[0].outcome, Some(AttemptOutcome::Lost));
    assert!(report.attempts[1].number > report.attempts[0].number);
    assert_eq!(Metrics::get(&metrics.leases_expired), 1);

    // Woken up, the frozen worker still speaks of the old attempt (its
    // heartbeat, or its result): refused as stale, and nothing else ends.
    eventually("the frozen worker's late word refused", || {
        Metrics::get(&metrics.stale_messages) > stale
    })
    .await;
}
