use std::time::Instant;

use jobmesh_peer::status::{report, History, StatusReport};
use jobmesh_wire::dc::ObservedEvent;
use jobmesh_wire::{Capability, Stats};

use super::*;

fn cap(s: &str) -> Capability {
    Capability::new(s).expect("a valid capability")
}

fn member(name: &str, caps: &[&str], slots: u32) -> PeerInfo {
    PeerInfo {
        id: PeerId::random(),
        name: name.into(),
        capabilities: caps.iter().map(|c| cap(c)).collect(),
        stats: Stats {
            slots,
            ..Stats::default()
        },
    }
}

fn pool(me: &PeerInfo, peers: &[&PeerInfo]) -> PoolSnapshot {
    PoolSnapshot {
        connected: true,
        synced: true,
        me: me.clone(),
        peers: peers.iter().map(|p| (*p).clone()).collect(),
        refused: None,
        links: Default::default(),
        link_errors: Default::default(),
    }
}

fn status(pool: &PoolSnapshot) -> StatusReport {
    report(Instant::now(), pool, &History::default(), &[], None)
}

fn ev(job: JobId, capability: &str, at_ms: u64, kind: ObservedKind) -> ObservedEvent {
    ObservedEvent {
        job_id: job,
        attempt: 1,
        capability: cap(capability),
        submitter: PeerId::random(),
        at_ms,
        event: kind,
        percent: None,
        run_ms: None,
        error: None,
    }
}

fn ended(
    job: JobId,
    capability: &str,
    at_ms: u64,
    kind: ObservedKind,
    run_ms: u64,
) -> ObservedEvent {
    ObservedEvent {
        run_ms: Some(run_ms),
        ..ev(job, capability, at_ms, kind)
    }
}

fn batch(worker: &PeerInfo, events: Vec<ObservedEvent>) -> ObservedBatch {
    ObservedBatch {
        worker: worker.id,
        events,
        dropped: 0,
    }
}

#[test]
fn percentiles_are_nearest_rank() {
    let p = Percentiles::of(1..=100).expect("some");
    assert_eq!((p.n, p.p50, p.p90, p.p99), (100, 50, 90, 99));
    let one = Percentiles::of([7]).expect("some");
    assert_eq!((one.p50, one.p90, one.p99), (7, 7, 7));
    let two = Percentiles::of([10, 1]).expect("some");
    assert_eq!((two.p50, two.p99), (1, 10));
    assert_eq!(Percentiles::of([]), None);
}

#[test]
fn a_job_heard_started_then_ended_is_one_span_and_one_run_time() {
    let me = member("me", &[], 0);
    let w = member("w1", &["echo"], 2);
    let p = pool(&me, &[&w]);
    let mut b = Board::new();
    b.on_pool(1_000, &p);
    let (ok, bad) = (JobId::new_v4(), JobId::new_v4());
    b.on_batch(&batch(
        &w,
        vec![
            ev(ok, "echo", 10_000, ObservedKind::Started),
            ev(bad, "echo", 10_001, ObservedKind::Started),
            ended(ok, "echo", 10_040, ObservedKind::Completed, 40),
            ObservedEvent {
                error: Some("boom: exit status 3".into()),
                ..ended(bad, "echo", 10_050, ObservedKind::Failed, 49)
            },
        ],
    ));
    let snap = b.snapshot(20_000, &status(&p), &p, &[], (0, 0));
    let spans = &snap.tasks.spans;
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!(snap.tasks.workers, vec![("w1".to_string(), w.id)]);
    assert_eq!(
        (spans[0].state, spans[0].start_ms, spans[0].end_ms),
        ("completed", 10_000, Some(10_040))
    );
    assert_eq!(spans[1].state, "failed");
    let echo = &snap.capabilities[0];
    assert_eq!(echo.pool.capability, cap("echo"));
    let run = echo.run_ms.expect("run times heard");
    assert_eq!((run.n, run.p50, run.p99), (2, 40, 49));
    assert_eq!(snap.failures.len(), 1);
    assert_eq!(snap.failures[0].worker, "w1");
    assert_eq!(snap.failures[0].error, "boom: exit status 3");
}

#[test]
fn an_end_without_its_start_is_drawn_from_its_run_time_and_a_start_heard_twice_once() {
    let me = member("me", &["echo"], 1);
    let p = pool(&me, &[]);
    let mut b = Board::new();
    let job = JobId::new_v4();
    let started = ev(job, "echo", 5_000, ObservedKind::Started);
    b.on_batch(&batch(&me, vec![started.clone(), started]));
    let other = JobId::new_v4();
    b.on_batch(&batch(
        &me,
        vec![ended(other, "echo", 9_000, ObservedKind::Completed, 300)],
    ));
    let snap = b.snapshot(10_000, &status(&p), &p, &[], (0, 0));
    let spans = &snap.tasks.spans;
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!((spans[0].state, spans[0].end_ms), ("running", None));
    assert_eq!((spans[1].start_ms, spans[1].end_ms), (8_700, Some(9_000)));
}

#[test]
fn lost_jobs_count_and_say_which_worker_went() {
    let me = member("me", &[], 0);
    let w = member("w1", &["sleep"], 4);
    let p = pool(&me, &[&w]);
    let mut b = Board::new();
    b.on_pool(0, &p);
    let jobs: Vec<JobId> = (0..3).map(|_| JobId::new_v4()).collect();
    b.on_batch(&batch(
        &w,
        jobs.iter()
            .map(|j| ev(*j, "sleep", 100, ObservedKind::Started))
            .collect(),
    ));
    b.on_batch(&batch(
        &w,
        jobs.iter()
            .map(|j| ev(*j, "sleep", 700, ObservedKind::Lost))
            .collect(),
    ));
    let snap = b.snapshot(1_000, &status(&p), &p, &[], (0, 0));
    assert_eq!(snap.jobs.lost, 3);
    assert_eq!(snap.events.len(), 1);
    assert_eq!(
        (snap.events[0].kind, snap.events[0].name.as_str()),
        ("lost", "w1")
    );
    assert!(snap.events[0].detail.starts_with("3 running jobs"));
    assert!(snap.tasks.spans.iter().all(|s| s.state == "lost"));
}

#[test]
fn joins_and_leaves_come_from_successive_synced_views() {
    let me = member("me", &[], 0);
    let (a, c) = (member("a", &["echo"], 1), member("c", &["ocr"], 1));
    let mut b = Board::new();
    let mut unsynced = pool(&me, &[]);
    unsynced.synced = false;
    b.on_pool(0, &unsynced);
    b.on_pool(1, &pool(&me, &[&a]));
    assert!(b.events.is_empty(), "the first synced view is the base");
    b.on_pool(2, &pool(&me, &[&c]));
    let kinds: Vec<(&str, &str, &str)> = b
        .events
        .iter()
        .map(|e| (e.kind, e.name.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(kinds, vec![("joined", "c", "ocr"), ("left", "a", "")]);
}

#[test]
fn the_task_stream_keeps_the_last_minute_within_its_bound() {
    let me = member("me", &["echo"], 1);
    let p = pool(&me, &[]);
    let mut b = Board::new();
    let n = TASKS + 50;
    for i in 0..n as u64 {
        let job = JobId::new_v4();
        b.on_batch(&batch(
            &me,
            vec![
                ev(job, "echo", i * 100, ObservedKind::Started),
                ended(job, "echo", i * 100 + 10, ObservedKind::Completed, 10),
            ],
        ));
    }
    assert_eq!(b.tasks.len(), TASKS);
    assert_eq!(b.task_index.len(), TASKS);
    let now = n as u64 * 100;
    let snap = b.snapshot(now, &status(&p), &p, &[], (0, 0));
    // Spans that ended more than a minute ago are left out.
    assert!(snap
        .tasks
        .spans
        .iter()
        .all(|s| s.end_ms.is_some_and(|e| e >= now - TASK_WINDOW_MS)));
    assert_eq!(snap.tasks.spans.len(), (TASK_WINDOW_MS / 100) as usize);
}

#[test]
fn queue_wait_comes_from_this_daemons_jobs_and_data_rates_from_successive_counts() {
    let me = member("me", &["echo"], 1);
    let p = pool(&me, &[]);
    let jobs: Vec<JobRecord> = [3u64, 9, 1]
        .iter()
        .map(|q| {
            serde_json::from_value(serde_json::json!({
                "job_id": JobId::new_v4(), "capability": "echo", "state": "completed",
                "worker": "me", "attempts": 1, "submitted_ms": 0, "queued_ms": q,
                "claim_ms": null, "run_ms": 1, "total_ms": 5, "error": null,
            }))
            .expect("a job record")
        })
        .collect();
    let mut b = Board::new();
    let first = b.snapshot(1_000, &status(&p), &p, &jobs, (100, 0));
    let q = first.capabilities[0].queue_ms.expect("queue waits");
    assert_eq!((q.n, q.p50, q.p99), (3, 3, 9));
    assert_eq!(first.data.sent_per_s, None, "one sample: no rate yet");
    let second = b.snapshot(3_000, &status(&p), &p, &jobs, (2_100, 500));
    assert_eq!(second.data.sent_per_s, Some(1_000.0));
    assert_eq!(second.data.received_per_s, Some(250.0));
}
