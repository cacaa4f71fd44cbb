//! The randomized swarm: random pools, workloads and fault schedules, one per
//! seed. `JOBMESH_SIM_SEEDS` (default 1000) seeds from `JOBMESH_SIM_FIRST`
//! (default 0); a failing seed prints the command that replays it and the
//! smallest schedule that still fails.

use std::time::Instant;

use jobmesh_sim::swarm::{generate, replay_command, run, shrink};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_pools_under_random_faults_lose_and_duplicate_nothing() {
    let first = env("JOBMESH_SIM_FIRST", 0);
    let count = env("JOBMESH_SIM_SEEDS", 1000);
    let started = Instant::now();
    let (mut steps, mut jobs, mut executions) = (0, 0, 0.0);
    for seed in first..first + count {
        let scenario = generate(seed);
        let (verdict, _) = run(seed, &scenario, false);
        steps += verdict.steps;
        jobs += verdict.summary.submitted;
        executions += verdict.summary.executions_mean * verdict.summary.submitted as f64;
        if let Some(why) = verdict.failure() {
            let (smallest, why_smallest) = shrink(seed, &scenario);
            panic!(
                "seed {seed} fails: {why}\n  replay: {}\n  smallest failing schedule ({} of {} entries): {why_smallest}\n{:#?}\n  peers: {:#?}",
                replay_command(seed),
                smallest.schedule.len(),
                scenario.schedule.len(),
                smallest.schedule,
                smallest.peers,
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{count} seeds in {secs:.1} s ({:.0} seeds/s, {:.0} steps/s); {jobs} jobs, {:.3} executions per job",
        count as f64 / secs,
        steps as f64 / secs,
        executions / jobs.max(1) as f64,
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    for seed in 0..env("JOBMESH_SIM_REPEATS", 20) {
        let scenario = generate(seed);
        let (a, _) = run(seed, &scenario, false);
        let (b, _) = run(seed, &scenario, false);
        assert_eq!(a.hash, b.hash, "seed {seed} ran differently twice");
        assert_eq!(a.steps, b.steps);
    }
}

#[test]
#[ignore = "replays one seed: JOBMESH_SIM_SEED=N cargo test -p jobmesh-sim --test swarm replay -- --ignored --nocapture"]
fn replay() {
    let seed = env("JOBMESH_SIM_SEED", 0);
    let scenario = generate(seed);
    println!(
        "peers: {:#?}\nschedule: {:#?}",
        scenario.peers, scenario.schedule
    );
    let (verdict, sim) = run(seed, &scenario, true);
    for line in sim.trace() {
        println!("{line}");
    }
    println!("{:#?}", verdict.summary);
    if let Some(why) = verdict.failure() {
        panic!("seed {seed}: {why}");
    }
}
