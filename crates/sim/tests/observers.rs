//! Pool-wide observers in the simulator: an observer hears every job of
//! every worker — its start and its end, from the worker that ran it —
//! including workers that join after it started observing, and a worker
//! nobody observes keeps nothing but a short history.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jobmesh_sim::{Action, PeerSpec, Sim, SimConfig};
use jobmesh_wire::dc::ObservedKind;
use jobmesh_wire::PeerId;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// Per job: the workers it was heard starting and ending on.
fn heard(sim: &Sim, observer: usize) -> HashMap<uuid::Uuid, (HashSet<PeerId>, Vec<ObservedKind>)> {
    let mut jobs: HashMap<uuid::Uuid, (HashSet<PeerId>, Vec<ObservedKind>)> = HashMap::new();
    for (o, worker, e) in &sim.observed.events {
        if *o == observer {
            let j = jobs.entry(e.job_id).or_default();
            j.0.insert(*worker);
            j.1.push(e.event);
        }
    }
    jobs
}

/// A submitter (0), two workers (1, 2) and a peer that observes (3).
fn two_workers_and_a_watcher() -> Vec<PeerSpec> {
    vec![
        PeerSpec::submitter("s"),
        PeerSpec::worker("w1", &["record"], 2),
        PeerSpec::worker("w2", &["record"], 2),
        PeerSpec::submitter("watcher"),
    ]
}

#[test]
fn an_observer_hears_every_job_of_every_worker_including_late_ones() {
    for seed in 0..8 {
        let mut sim = Sim::new(seed, SimConfig::default(), two_workers_and_a_watcher());
        // w2 is down when the observer starts, and joins 1.5 s later.
        sim.schedule(10 * MS, Action::Crash(2));
        sim.schedule(50 * MS, Action::Observe(3, true));
        sim.schedule(1500 * MS, Action::Restart(2));
        for i in 0..100 {
            sim.schedule(200 * MS + 25 * MS * i, Sim::job(0, "record", 30, 30 * S));
        }
        sim.run(Duration::from_secs(120));
        let jobs = heard(&sim, 3);
        let acknowledged = sim.history.acknowledged().to_vec();
        assert_eq!(acknowledged.len(), 100, "seed {seed}");
        for job in &acknowledged {
            let Some((workers, kinds)) = jobs.get(job) else {
                panic!("seed {seed}: job {job} never heard of");
            };
            assert_eq!(
                workers.len(),
                1,
                "seed {seed}: {job} heard from {workers:?}"
            );
            assert_eq!(
                kinds.first(),
                Some(&ObservedKind::Started),
                "seed {seed}: {job}: {kinds:?}"
            );
            assert_eq!(
                kinds.last(),
                Some(&ObservedKind::Completed),
                "seed {seed}: {job}: {kinds:?}"
            );
            assert_eq!(
                kinds
                    .iter()
                    .filter(|k| **k == ObservedKind::Completed)
                    .count(),
                1,
                "seed {seed}: {job}: {kinds:?}"
            );
        }
        // Both workers ran some, and were heard.
        let from: HashSet<PeerId> = sim.observed.events.iter().map(|(_, w, _)| *w).collect();
        assert!(
            from.contains(&sim.peer_id(1)) && from.contains(&sim.peer_id(2)),
            "seed {seed}"
        );
        assert_eq!(sim.observed.dropped, 0, "seed {seed}");
        // The submitter heard nothing: it did not observe.
        assert!(heard(&sim, 0).is_empty(), "seed {seed}");
    }
}

#[test]
fn an_observer_that_starts_late_gets_the_recent_history_and_stops_when_asked() {
    let peers = vec![
        PeerSpec::submitter("s"),
        PeerSpec::worker("w1", &["record"], 2),
        PeerSpec::submitter("watcher"),
    ];
    let mut sim = Sim::new(3, SimConfig::default(), peers);
    for i in 0..10 {
        sim.schedule(200 * MS + 25 * MS * i, Sim::job(0, "record", 10, 30 * S));
    }
    // Everything above has ended when it starts observing.
    sim.schedule(5 * S, Action::Observe(2, true));
    sim.schedule(10 * S, Action::Observe(2, false));
    for i in 0..5 {
        sim.schedule(12 * S + 25 * MS * i, Sim::job(0, "record", 10, 30 * S));
    }
    sim.run(Duration::from_secs(60));
    let jobs = heard(&sim, 2);
    let acknowledged = sim.history.acknowledged().to_vec();
    assert_eq!(acknowledged.len(), 15);
    for job in &acknowledged[..10] {
        let kinds = &jobs
            .get(job)
            .unwrap_or_else(|| panic!("{job}: no history"))
            .1;
        assert_eq!(kinds.last(), Some(&ObservedKind::Completed), "{kinds:?}");
    }
    for job in &acknowledged[10..] {
        assert!(
            !jobs.contains_key(job),
            "{job}: heard after it stopped observing"
        );
    }
}

#[test]
fn jobs_of_a_worker_that_dies_are_heard_lost_then_run_elsewhere() {
    for seed in 0..4 {
        let mut sim = Sim::new(seed, SimConfig::default(), two_workers_and_a_watcher());
        sim.schedule(50 * MS, Action::Observe(3, true));
        for i in 0..4 {
            sim.schedule(500 * MS + 10 * MS * i, Sim::job(0, "record", 3000, 60 * S));
        }
        // Both workers run two each; w1 dies with them.
        sim.schedule(1500 * MS, Action::Crash(1));
        sim.run(Duration::from_secs(120));
        let w1 = sim.peer_id(1);
        let lost: Vec<uuid::Uuid> = sim
            .observed
            .events
            .iter()
            .filter(|(o, w, e)| *o == 3 && *w == w1 && e.event == ObservedKind::Lost)
            .map(|(_, _, e)| e.job_id)
            .collect();
        let started_on_w1: HashSet<uuid::Uuid> = sim
            .observed
            .events
            .iter()
            .filter(|(o, w, e)| *o == 3 && *w == w1 && e.event == ObservedKind::Started)
            .map(|(_, _, e)| e.job_id)
            .collect();
        assert!(!started_on_w1.is_empty(), "seed {seed}: w1 ran nothing");
        assert_eq!(
            lost.iter().copied().collect::<HashSet<_>>(),
            started_on_w1,
            "seed {seed}: every job w1 started is heard lost"
        );
        // ... and then completed on w2 (the submitter retried them).
        let jobs = heard(&sim, 3);
        for job in &started_on_w1 {
            let (workers, kinds) = &jobs[job];
            assert!(workers.contains(&sim.peer_id(2)), "seed {seed}: {job}");
            assert_eq!(
                kinds.last(),
                Some(&ObservedKind::Completed),
                "seed {seed}: {kinds:?}"
            );
        }
    }
}
