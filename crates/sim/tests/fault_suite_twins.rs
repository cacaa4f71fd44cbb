//! The fault suite's scenarios (`tests/fault_suite*.rs`, real processes and
//! network namespaces) as simulator twins: the same pools, faults and
//! checker, in virtual time, each in well under a second and without root.

use std::time::Duration;

use jobmesh_sim::check::Summary;
use jobmesh_sim::{Action, PeerSpec, Sim, SimConfig};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
const LIMIT: Duration = Duration::from_secs(900);

/// Runs `sim` to the end and checks the promise: nothing lost, nothing
/// delivered twice, every envelope naming the worker that ran the job.
fn finish(mut sim: Sim, name: &str) -> Summary {
    sim.run(LIMIT);
    let summary = sim.history.check(name);
    println!("\n{}\n{summary}", Summary::HEADER);
    for (error, jobs) in sim.history.errors() {
        println!("  {jobs} failed: {error}");
    }
    assert_eq!(summary.lost, 0, "{name}: jobs lost");
    assert_eq!(summary.duplicated, 0, "{name}: jobs delivered twice");
    assert_eq!(sim.violations, Vec::new(), "{name}");
    summary
}

/// `jobs` jobs of `ms` from `peer`, one every `every` once the pool has
/// formed (as the real suite waits for its workers).
fn submit_many(sim: &mut Sim, peer: usize, jobs: usize, ms: u64, every: Duration) {
    submit_with(sim, peer, jobs, ms, every, 2);
}

/// ... with `retries`.
fn submit_with(sim: &mut Sim, peer: usize, jobs: usize, ms: u64, every: Duration, retries: u32) {
    for i in 0..jobs {
        let mut job = Sim::job(peer, "record", ms, 30 * S);
        if let Action::Submit { options, .. } = &mut job {
            options.max_retries = retries;
        }
        sim.schedule(100 * MS + every * i as u32, job);
    }
}

/// Scenario 1 and 2: workers killed while blobs go in, while jobs run and
/// while results' blobs go out (256 KiB each way, on a 2 MB/s link so the
/// transfers take a while); each comes back on its data dir.
#[test]
fn workers_killed_during_upload_run_and_delivery_lose_nothing() {
    let peers = vec![
        PeerSpec::submitter("s"),
        PeerSpec::worker("w1", &["record"], 4),
        PeerSpec::worker("w2", &["record"], 4),
    ];
    let config = SimConfig {
        bandwidth: 2_000_000,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(1, config, peers);
    for i in 0..40u32 {
        let mut job = Sim::job(0, "record", 300, 30 * S);
        if let Action::Submit { input, options, .. } = &mut job {
            input["in_kib"] = 256.into();
            input["out_kib"] = 256.into();
            options.max_retries = 5;
        }
        sim.schedule(100 * MS + 120 * MS * i, job);
    }
    // One worker down at a time, as in the real suite: while jobs run on
    // it, and as results go out.
    sim.schedule(500 * MS, Action::Kill(1, 2 * S));
    sim.schedule(2_700 * MS, Action::Kill(2, S));
    sim.schedule(4_000 * MS, Action::Kill(1, S));
    let s = finish(sim, "twin: workers killed (upload, run, delivery)");
    assert_eq!(s.completed, 40);
}

/// Scenario 3: the submitting daemon killed and restarted while its jobs
/// run: they re-attach, so each runs once.
#[test]
fn a_submitter_killed_and_restarted_runs_each_job_once() {
    let peers = vec![
        PeerSpec::submitter("s"),
        PeerSpec::worker("w1", &["record"], 8),
        PeerSpec::worker("w2", &["record"], 8),
    ];
    let mut sim = Sim::new(3, SimConfig::default(), peers);
    submit_many(&mut sim, 0, 12, 3_000, 10 * MS);
    sim.schedule(S, Action::Kill(0, 2 * S));
    let s = finish(sim, "twin: submitter killed and restarted");
    assert_eq!(s.completed, 12);
    assert_eq!(s.executions_max, 1, "a re-attached job ran again");
}

/// The bug that hid in the daemon: a peer that both submits and works,
/// killed and restarted while another worker runs one of its jobs, must not
/// run that job again itself (and the envelope names the worker that ran
/// it). Its one slot is busy with a job only it runs (`own`) when the
/// second goes to `w`; that first job ends before the kill, so after the
/// restart its own slot is free while the pool view fills.
#[test]
fn a_submitter_that_also_works_does_not_rerun_a_job_another_worker_holds() {
    for seed in 0..8 {
        let peers = vec![
            PeerSpec::worker("sw", &["own", "record"], 1),
            PeerSpec::worker("w", &["record"], 4),
        ];
        let mut sim = Sim::new(seed, SimConfig::default(), peers);
        sim.schedule(100 * MS, Sim::job(0, "own", 1_000, 30 * S));
        sim.schedule(200 * MS, Sim::job(0, "record", 6_000, 30 * S));
        sim.schedule(2 * S, Action::Kill(0, 500 * MS));
        let s = finish(
            sim,
            &format!("twin: a submitting worker killed (seed {seed})"),
        );
        assert_eq!(s.completed, 2);
        assert_eq!(s.executions_max, 1, "seed {seed}: a held job ran again");
    }
}

/// A worker frozen (SIGSTOP) past its lease: the job runs again elsewhere,
/// and its late result is refused.
#[test]
fn a_frozen_worker_loses_its_lease_and_its_late_result_is_refused() {
    let peers = vec![
        PeerSpec::submitter("s"),
        PeerSpec::worker("w1", &["record"], 4),
        PeerSpec::worker("w2", &["record"], 4),
    ];
    let mut sim = Sim::new(4, SimConfig::default(), peers);
    submit_many(&mut sim, 0, 8, 1_000, 10 * MS);
    sim.schedule(300 * MS, Action::Freeze(1, 12 * S));
    sim.schedule(300 * MS, Action::Freeze(2, 2 * S));
    let s = finish(sim, "twin: frozen worker past its lease");
    assert_eq!(s.completed, 8);
}

/// The 13 s network cut (`fault_suite_lossy_links.rs`): the worker is cut
/// off from everyone while 4 jobs of 6 s run on it; retries outlast the cut.
#[test]
fn a_13_s_network_cut_loses_and_duplicates_nothing() {
    let peers = vec![
        PeerSpec::submitter("s"),
        PeerSpec::worker("w", &["record"], 4),
    ];
    let mut sim = Sim::new(5, SimConfig::default(), peers);
    submit_with(&mut sim, 0, 4, 6_000, 10 * MS, 20);
    sim.schedule(S, Action::Isolate(1, 13 * S));
    let s = finish(sim, "twin: 13 s network cut, 4 x 6 s jobs");
    assert_eq!(s.completed, 4);
    assert!(s.executions_max <= 2, "{s}");
}

/// Heavy loss (scenario 5): 5 % and 20 % of messages retransmitted.
#[test]
fn heavy_loss_shows_up_as_delay_and_loses_nothing() {
    for (seed, loss) in [(6, 0.05), (7, 0.2)] {
        let peers = vec![
            PeerSpec::submitter("s"),
            PeerSpec::worker("w", &["record"], 4),
        ];
        let config = SimConfig {
            loss,
            ..SimConfig::default()
        };
        let mut sim = Sim::new(seed, config, peers);
        submit_many(&mut sim, 0, 20, 200, 100 * MS);
        finish(sim, &format!("twin: {:.0} % loss", loss * 100.0));
    }
}

/// Scenario 4: the signal-server down for 30 s while jobs flow on open
/// links and new ones are submitted.
#[test]
fn jobs_flow_while_the_signal_server_is_down() {
    let peers = vec![
        PeerSpec::submitter("s"),
        PeerSpec::worker("w1", &["record"], 4),
        PeerSpec::worker("w2", &["record"], 4),
    ];
    let mut sim = Sim::new(8, SimConfig::default(), peers);
    submit_many(&mut sim, 0, 60, 300, 500 * MS);
    sim.schedule(2 * S, Action::SignalOutage(30 * S));
    let s = finish(sim, "twin: signal-server down 30 s");
    assert_eq!(s.completed, 60);
}

/// Scenario 6 (flood): submits past the queue limit are refused at once;
/// every one accepted ends.
#[test]
fn a_flood_of_submits_meets_the_queue_limit() {
    let mut s = PeerSpec::submitter("s");
    s.queue_limit = 50;
    let peers = vec![s, PeerSpec::worker("w", &["record"], 4)];
    let mut sim = Sim::new(9, SimConfig::default(), peers);
    submit_many(&mut sim, 0, 500, 100, MS);
    let summary = finish(sim, "twin: flood against a queue limit of 50");
    assert!(
        summary.failed > 0,
        "the flood should meet the limit: {summary}"
    );
}

/// Scenario 6 (worker half): SIGTERM on a worker running jobs: they finish
/// and are delivered; later jobs go to the other worker.
#[test]
fn a_draining_worker_finishes_its_jobs_and_the_rest_go_elsewhere() {
    let peers = vec![
        PeerSpec::submitter("s"),
        PeerSpec::worker("w1", &["record"], 2),
        PeerSpec::worker("w2", &["record"], 2),
    ];
    let mut sim = Sim::new(10, SimConfig::default(), peers);
    submit_many(&mut sim, 0, 4, 2_000, 10 * MS);
    sim.schedule(500 * MS, Action::Drain(1));
    for i in 0..4 {
        sim.schedule(S + 10 * MS * i, Sim::job(0, "record", 500, 30 * S));
    }
    let s = finish(sim, "twin: worker drains on SIGTERM");
    assert_eq!(s.completed, 8);
    assert_eq!(s.executions_max, 1);
}
