use std::time::Duration;

use jobmesh_core::JobError;
use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, SignalGuard};
use serde_json::json;

/// A submitter holding at most two jobs refuses a third with `QueueFull`
/// at once (before it is journaled), takes a new one as soon as a held job
/// has ended, and a caller that waits for each outcome is never refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_and_a_finished_job_frees_its_place() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let _worker = PeerGuard::start(server.url(), "qf", "worker", &["sleep"], 3);
    let sub = PeerGuard::start_configured(server.url(), "qf", "sub", &[], 0, |c| {
        c.dispatcher.queue_limit = 2;
        c.data_dir = Some(data.path().to_owned());
    });
    sub.wait_capable("sleep", 1).await;
    let h = &sub.handle;
    let long = || h.submit(cap("sleep"), json!({"ms": 60_000}), Duration::from_secs(90));
    let first = long().await.expect("first taken");
    let _second = long().await.expect("second taken");
    let refused = within("a refusal", long().await.expect("a handle").result())
        .await
        .expect("an outcome");
    assert_eq!(refused.result, Err(JobError::QueueFull { limit: 2 }));
    assert!(
        h.stored_result(refused.job_id)
            .await
            .expect("journal")
            .is_none(),
        "a refused submit is not journaled"
    );

    // Ending a held job frees its place before its caller hears of it.
    assert!(first.cancel().await, "the first job was live");
    let ended = within("the cancelled job", first.result())
        .await
        .expect("an outcome");
    assert!(ended.result.is_err(), "{:?}", ended.result);
    let third = long().await.expect("a handle");
    assert!(third.cancel().await, "taken, not refused");
    within("the third job", third.result())
        .await
        .expect("an outcome");

    // One place left (the second job holds the other): a caller that waits
    // for each outcome always finds it free.
    for _ in 0..20 {
        let r = within(
            "a short job",
            h.run(cap("sleep"), json!({"ms": 1}), Duration::from_secs(15)),
        )
        .await
        .expect("an outcome");
        assert!(r.result.is_ok(), "{:?}", r.result);
    }
    server.stop().await;
}
