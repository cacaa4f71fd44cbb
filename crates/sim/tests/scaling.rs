//! Run-time scaling in the simulator: a worker's slots change while 200
//! jobs wait for it (1 → 8 → 2). Its concurrency follows each change —
//! never above the slots it had, 8 at once once it may — scaling down
//! cancels nothing (the extra slots retire as their jobs end), and every
//! job completes exactly once. Concurrency is read from a pool-wide
//! observer's stream, on the worker's own clock.

use std::time::Duration;

use jobmesh_sim::{Action, PeerSpec, Sim, SimConfig};
use jobmesh_wire::dc::ObservedKind;

const MS: Duration = Duration::from_millis(1);

/// Who ran each job, from the observer's stream: (index of the worker in
/// `workers`, start, end), in virtual ms. Any end but completion panics:
/// neither scaling nor a capability's removal may end a job otherwise.
fn runs(sim: &Sim, workers: &[jobmesh_wire::PeerId]) -> Vec<(usize, u64, u64)> {
    let mut started = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (_, worker, e) in &sim.observed.events {
        let w = workers
            .iter()
            .position(|x| x == worker)
            .expect("a known worker");
        match e.event {
            ObservedKind::Started => {
                started.insert(e.job_id, e.at_ms);
            }
            ObservedKind::Completed => {
                let s = started.remove(&e.job_id).expect("heard starting");
                out.push((w, s, e.at_ms));
            }
            ObservedKind::Progress => {}
            other => panic!("a job was {other:?}"),
        }
    }
    out
}

/// Most jobs running at once within [from, to) (virtual ms, Unix-based).
fn most_at_once(spans: &[(u64, u64)], from: u64, to: u64) -> usize {
    let mut edges: Vec<(u64, i64)> = Vec::new();
    for &(s, e) in spans {
        if e > from && s < to {
            edges.push((s.max(from), 1));
            edges.push((e.min(to), -1));
        }
    }
    edges.sort_by_key(|&(t, d)| (t, d));
    let (mut now, mut most) = (0i64, 0i64);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

fn ended_within(spans: &[(u64, u64)], from: u64, to: u64) -> usize {
    spans.iter().filter(|&&(_, e)| e >= from && e < to).count()
}

#[test]
fn a_workers_concurrency_follows_its_slots_and_no_job_is_lost_or_run_twice() {
    for seed in 0..6 {
        let mut sim = Sim::new(
            seed,
            SimConfig::default(),
            vec![
                PeerSpec::submitter("s"),
                PeerSpec::worker("w", &["record"], 1),
            ],
        );
        sim.schedule(10 * MS, Action::Observe(0, true));
        for _ in 0..200 {
            sim.schedule(
                100 * MS,
                Sim::job(0, "record", 200, Duration::from_secs(600)),
            );
        }
        sim.schedule(3_000 * MS, Action::Scale(1, 8));
        sim.schedule(6_000 * MS, Action::Scale(1, 2));
        sim.run(Duration::from_secs(600));

        let summary = sim.history.check("scale 1 → 8 → 2");
        assert_eq!(
            (
                summary.completed,
                summary.lost,
                summary.duplicated,
                summary.executions_max
            ),
            (200, 0, 0, 1),
            "seed {seed}: {summary:?}"
        );
        let spans: Vec<(u64, u64)> = runs(&sim, &[sim.peer_id(1)])
            .into_iter()
            .map(|(_, s, e)| (s, e))
            .collect();
        assert_eq!(
            spans.len(),
            200,
            "seed {seed}: every job heard start and end"
        );
        // Virtual time is a Unix clock from the start of the run.
        let t0 = spans.iter().map(|s| s.0).min().expect("spans") - 100;
        let at = |ms: u64| t0 + ms;
        let one = most_at_once(&spans, at(0), at(3_000));
        let eight = most_at_once(&spans, at(3_200), at(6_000));
        // After the scale-down, the 8 jobs running end within one job's time.
        let two = most_at_once(&spans, at(6_200), at(60_000));
        assert_eq!((one, eight, two), (1, 8, 2), "seed {seed}");
        // Throughput follows: jobs finished per second in each phase.
        let (p1, p2, p3) = (
            ended_within(&spans, at(1_000), at(3_000)),
            ended_within(&spans, at(4_000), at(6_000)),
            ended_within(&spans, at(7_000), at(9_000)),
        );
        assert!(
            p2 >= 6 * p1 && p3 >= 3 * p1 / 2 && p3 * 3 <= p2,
            "seed {seed}: finished per 2 s: {p1} at 1 slot, {p2} at 8, {p3} at 2"
        );
    }
}

#[test]
fn a_capability_removed_from_a_worker_sends_its_jobs_elsewhere_and_lets_its_running_ones_finish() {
    for seed in 0..6 {
        let mut sim = Sim::new(
            seed,
            SimConfig::default(),
            vec![
                PeerSpec::submitter("s"),
                PeerSpec::worker("w1", &["record"], 2),
                PeerSpec::worker("w2", &["record"], 2),
            ],
        );
        sim.schedule(10 * MS, Action::Observe(0, true));
        for i in 0..120 {
            sim.schedule(
                200 * MS + 50 * MS * i,
                Sim::job(0, "record", 300, Duration::from_secs(600)),
            );
        }
        sim.schedule(2_000 * MS, Action::SetCapabilities(1, vec![]));
        sim.schedule(
            4_000 * MS,
            Action::SetCapabilities(1, vec![jobmesh_sim::cap("record")]),
        );
        sim.run(Duration::from_secs(600));

        let summary = sim.history.check("remove, then add a capability");
        assert_eq!(
            (
                summary.completed,
                summary.lost,
                summary.duplicated,
                summary.executions_max
            ),
            (120, 0, 0, 1),
            "seed {seed}: {summary:?}"
        );
        let workers = [sim.peer_id(1), sim.peer_id(2)];
        let runs = runs(&sim, &workers);
        let t0 = runs.iter().map(|r| r.1).min().expect("runs") - 200;
        let at = |ms: u64| t0 + ms;
        // Jobs w1 ran when the capability went: they finished there.
        let finished_after_removal = runs
            .iter()
            .filter(|r| r.0 == 0 && r.1 < at(2_000) && r.2 > at(2_000))
            .count();
        // Nothing started on w1 while it did not run the capability (once
        // the submitter's view had it: a refusal sends a job on).
        let started_without = runs
            .iter()
            .filter(|r| r.0 == 0 && r.1 > at(2_100) && r.1 < at(4_000))
            .count();
        // w1 takes jobs again once it runs the capability again.
        let started_again = runs.iter().filter(|r| r.0 == 0 && r.1 > at(4_000)).count();
        assert!(
            finished_after_removal >= 1,
            "seed {seed}: w1 had no job running at the removal"
        );
        assert_eq!(started_without, 0, "seed {seed}");
        assert!(
            started_again >= 5,
            "seed {seed}: {started_again} jobs on w1 after it was added back"
        );
    }
}
