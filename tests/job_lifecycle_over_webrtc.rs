//! The job lifecycle end to end over real WebRTC data channels: strategies,
//! timeouts, cancel, progress, priority, self-dispatch.

use std::time::Duration;

use jobmesh_core::{EventKind, JobError, JobOptions, StrategyKind};
use jobmesh_peer::Metrics;
use jobmesh_testkit::{cap, init_tracing, within, PeerGuard, SignalGuard};
use serde_json::json;

fn opts(f: impl FnOnce(&mut JobOptions)) -> JobOptions {
    let mut o = JobOptions::from(Duration::from_secs(15));
    f(&mut o);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_and_affinity_sticks() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let w1 = PeerGuard::start(server.url(), "l1", "w1", &["echo"], 1);
    let w2 = PeerGuard::start(server.url(), "l1", "w2", &["echo"], 1);
    let sub = PeerGuard::start(server.url(), "l1", "sub", &[], 0);
    sub.wait_capable("echo", 2).await;
    let mut order = Vec::new();
    for n in 0..6 {
        let o = opts(|o| o.strategy = Some(StrategyKind::RoundRobin));
        let r = within("a job", sub.handle.run(cap("echo"), json!(n), o))
            .await
            .expect("answer");
        assert_eq!(r.result, Ok(json!(n)));
        order.push(r.worker.expect("worker").1);
    }
    assert!(
        order.windows(2).all(|p| p[0] != p[1]),
        "alternates: {order:?}"
    );
    let mut homes = Vec::new();
    for n in 0..4 {
        let o = opts(|o| {
            o.strategy = Some(StrategyKind::Affinity);
            o.affinity = Some("customer-42".into());
        });
        let r = within("a job", sub.handle.run(cap("echo"), json!(n), o))
            .await
            .expect("answer");
        homes.push(r.worker.expect("worker").1);
    }
    assert!(homes.windows(2).all(|p| p[0] == p[1]), "sticks: {homes:?}");
    drop((w1, w2));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_job_is_cancelled_on_the_worker_and_frees_its_slot() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let w = PeerGuard::start(server.url(), "l2", "w", &["sleep"], 1);
    let sub = PeerGuard::start(server.url(), "l2", "sub", &[], 0);
    sub.wait_capable("sleep", 1).await;
    let o = opts(|o| {
        o.timeout = Duration::from_millis(300);
        o.max_retries = 0;
    });
    let r = within(
        "the timeout",
        sub.handle.run(cap("sleep"), json!({"ms": 60_000}), o),
    )
    .await
    .expect("answer");
    assert!(
        matches!(r.result, Err(JobError::TimedOut { .. })),
        "{:?}",
        r.result
    );
    assert_eq!(r.attempts.len(), 1);
    // The worker's handler observed the cancel, and its only slot is free
    // again (the slot is held until the handler has really stopped, so an
    // offer racing the cancel may be refused once as busy and re-offered).
    let r = within(
        "the next job",
        sub.handle
            .run(cap("sleep"), json!({"ms": 1}), Duration::from_secs(15)),
    )
    .await
    .expect("answer");
    assert_eq!(r.result, Ok(json!({"slept_ms": 1})));
    assert_eq!(r.worker.expect("worker").0, w.handle.id());
    assert_eq!(Metrics::get(&w.handle.metrics().handlers_cancelled), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_worker_and_progress_arrives_in_order() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let w = PeerGuard::start(server.url(), "l3", "w", &["sleep"], 1);
    let sub = PeerGuard::start(server.url(), "l3", "sub", &[], 0);
    sub.wait_capable("sleep", 1).await;

    // Progress: a short sleep reports 0..100 in steps; they arrive in order.
    let mut job = sub
        .handle
        .submit(cap("sleep"), json!({"ms": 200}), Duration::from_secs(15))
        .await
        .expect("submitted");
    let mut kinds = Vec::new();
    let mut percents = Vec::new();
    while let Some(e) = within("an event", job.next_event()).await {
        if let EventKind::Progress { progress, .. } = &e.kind {
            percents.push(progress.percent.unwrap_or_default());
        }
        kinds.push(e.kind.name());
    }
    assert_eq!(kinds.first(), Some(&"queued"));
    assert_eq!(kinds.last(), Some(&"finished"));
    assert!(percents.len() >= 2, "progress arrived: {percents:?}");
    assert!(
        percents.windows(2).all(|p| p[0] < p[1]),
        "in order: {percents:?}"
    );
    assert_eq!(
        percents.last(),
        Some(&100),
        "the last report is flushed before the result"
    );
    assert_eq!(
        job.result().await.expect("answer").result,
        Ok(json!({"slept_ms": 200}))
    );

    // Cancel: once the worker runs it, cancelling ends it and stops the handler.
    let mut job = sub
        .handle
        .submit(cap("sleep"), json!({"ms": 60_000}), Duration::from_secs(60))
        .await
        .expect("submitted");
    loop {
        let e = within("the start", job.next_event()).await.expect("live");
        if matches!(e.kind, EventKind::Started { .. }) {
            break;
        }
    }
    assert!(job.cancel().await, "the job was live");
    let r = within("the cancel", job.result()).await.expect("answer");
    assert_eq!(r.result, Err(JobError::Cancelled));
    // The worker saw it: its slot frees and its handler counted the cancel.
    let wid = w.handle.id();
    sub.wait_pool("the worker's slot to free", |s| {
        s.peers
            .iter()
            .any(|p| p.id == wid && p.stats.running == 0 && p.stats.failed == 1)
    })
    .await;
    assert_eq!(Metrics::get(&w.handle.metrics().handlers_cancelled), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_all_slots_busy_jobs_queue_and_run_in_priority_order() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let _w = PeerGuard::start(server.url(), "l4", "w", &["sleep"], 1);
    let sub = PeerGuard::start(server.url(), "l4", "sub", &[], 0);
    sub.wait_capable("sleep", 1).await;
    let mut watch = sub.handle.watch();
    // A blocker takes the only slot while the others queue.
    let blocker = sub
        .handle
        .submit(cap("sleep"), json!({"ms": 400}), Duration::from_secs(30))
        .await
        .expect("submitted");
    let mut queued = Vec::new();
    for (n, priority) in [(1, 0), (2, 5), (3, -3), (4, 5), (5, 1)] {
        let o = opts(|o| {
            o.priority = priority;
            o.timeout = Duration::from_secs(30);
        });
        let job = sub
            .handle
            .submit(cap("sleep"), json!({"ms": n}), o)
            .await
            .expect("submitted");
        queued.push((job.id(), n));
    }
    let mut started = Vec::new();
    within("all jobs to start", async {
        while started.len() < 6 {
            let e = watch.recv().await.expect("watching");
            if e.event == "started" {
                started.push(e.job_id);
            }
        }
    })
    .await;
    assert_eq!(started[0], blocker.id());
    let order: Vec<i32> = started[1..]
        .iter()
        .map(|id| queued.iter().find(|(j, _)| j == id).expect("ours").1)
        .collect();
    assert_eq!(
        order,
        vec![2, 4, 5, 1, 3],
        "priority first, FIFO within a priority"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_its_own_job_locally_when_it_is_the_only_candidate() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let me = PeerGuard::start(server.url(), "l5", "solo", &["echo"], 2);
    me.wait_pool("connected", |s| s.connected).await;
    let r = within(
        "a self-dispatched job",
        me.handle
            .run(cap("echo"), json!("local"), Duration::from_secs(15)),
    )
    .await
    .expect("answer");
    assert_eq!(r.result, Ok(json!("local")));
    assert_eq!(r.worker.expect("worker").0, me.handle.id());
    assert_eq!(
        Metrics::get(&me.handle.metrics().links_opened),
        0,
        "no data channel for a local job"
    );
    let jobs = me.handle.jobs().await.expect("jobs");
    assert_eq!(jobs[0].state, "completed");
    assert!(jobs[0].total_ms.is_some());
    server.stop().await;
}
