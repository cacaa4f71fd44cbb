//! The randomized swarm: a random pool, workload and fault schedule per
//! seed, run in the simulator and judged by the fault suite's checker.
//!
//! A seed that fails is replayed with one command
//! (`JOBMESH_SIM_SEED=N cargo test -p jobmesh-sim --test swarm replay -- --ignored --nocapture`)
//! and shrunk: schedule entries are dropped one at a time while the run
//! still fails, which leaves the smallest failing schedule it can find.

use std::time::Duration;

use jobmesh_core::JobOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::audit::Allowances;
use crate::check::Summary;
use crate::{cap, Action, PeerSpec, Sim, SimConfig, Violation};

/// The capabilities swarm peers draw from.
const CAPABILITIES: [&str; 3] = ["a", "b", "c"];
/// How long a run may take in virtual time before what is left counts lost.
pub const RUN_LIMIT: Duration = Duration::from_secs(900);

/// One generated run: who is in the pool, the network, and what happens when.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The peers.
    pub peers: Vec<PeerSpec>,
    /// The network.
    pub config: SimConfig,
    /// What happens, and when (from the start).
    pub schedule: Vec<(Duration, Action)>,
}

/// What a run gave.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The checker's counts.
    pub summary: Summary,
    /// Envelope mismatches and the like.
    pub violations: Vec<Violation>,
    /// Steps the simulator took.
    pub steps: u64,
    /// Virtual time the run took.
    pub elapsed: Duration,
    /// Hash of the run's trace.
    pub hash: u64,
}

impl Verdict {
    /// Why the run breaks the promise, if it does.
    pub fn failure(&self) -> Option<String> {
        let s = &self.summary;
        let mut why = Vec::new();
        if s.lost > 0 {
            why.push(format!("{} jobs lost", s.lost));
        }
        if s.duplicated > 0 {
            why.push(format!("{} jobs delivered more than once", s.duplicated));
        }
        why.extend(
            self.violations
                .iter()
                .map(|v| format!("at {:?}: {}", v.at, v.what)),
        );
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// The scenario of `seed`: 1–20 peers with mixed capabilities and slots
/// (some submit-only, most both submit and work), up to 60 jobs over the
/// first 20 s (a third with blobs in or out), and up to 4 faults.
pub fn generate(seed: u64) -> Scenario {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_5eed);
    let n = rng.random_range(1..=20);
    let peers: Vec<PeerSpec> = (0..n)
        .map(|i| {
            let caps: Vec<&str> = CAPABILITIES
                .iter()
                .copied()
                .filter(|_| rng.random_bool(0.5))
                .collect();
            let submit_only = caps.is_empty() || rng.random_bool(0.2);
            let mut spec = if submit_only {
                PeerSpec::submitter(&format!("p{i}"))
            } else {
                PeerSpec::worker(&format!("p{i}"), &caps, rng.random_range(1..=4))
            };
            spec.self_dispatch = rng.random_bool(0.8);
            spec.slowness = if rng.random_bool(0.1) { 4 } else { 1 };
            spec
        })
        .collect();
    let config = SimConfig {
        loss: [0.0, 0.0, 0.0, 0.01, 0.05, 0.2][rng.random_range(0..6)],
        ..SimConfig::default()
    };
    let mut schedule = Vec::new();
    for _ in 0..rng.random_range(1..=60) {
        let at = Duration::from_millis(rng.random_range(0..20_000));
        let fail = match rng.random_range(0..20) {
            0 => Some("retryable"),
            1 => Some("permanent"),
            2 => Some("panic"),
            _ => None,
        };
        let mut input = json!({ "ms": rng.random_range(1..3_000) });
        if let Some(f) = fail {
            input["fail"] = json!(f);
        }
        // A third of the jobs move blobs: in, out or both, up to 64 MiB.
        if rng.random_bool(0.33) {
            input["in_kib"] = json!(rng.random_range(0..65_536));
        }
        if rng.random_bool(0.33) {
            input["out_kib"] = json!(rng.random_range(0..65_536));
        }
        let options = JobOptions {
            timeout: Duration::from_secs(rng.random_range(5..=30)),
            max_retries: rng.random_range(0..=3),
            ..JobOptions::default()
        };
        let action = Action::Submit {
            peer: rng.random_range(0..n),
            capability: cap(CAPABILITIES[rng.random_range(0..CAPABILITIES.len())]),
            input,
            options,
        };
        schedule.push((at, action));
    }
    for _ in 0..rng.random_range(0..=4) {
        let at = Duration::from_millis(rng.random_range(0..25_000));
        let p = rng.random_range(0..n);
        let d = Duration::from_millis(rng.random_range(100..20_000));
        let fault = match rng.random_range(0..5) {
            0 => Action::Kill(p, d),
            1 => Action::Freeze(p, d),
            2 => Action::Isolate(p, d),
            3 => Action::SignalOutage(d),
            _ => Action::Drain(p),
        };
        schedule.push((at, fault));
    }
    schedule.sort_by_key(|(at, _)| *at);
    Scenario {
        peers,
        config,
        schedule,
    }
}

/// Runs `scenario` under `seed`, with the default [`Allowances`].
pub fn run(seed: u64, scenario: &Scenario, trace: bool) -> (Verdict, Sim) {
    run_with(seed, scenario, trace, Allowances::default())
}

/// Runs `scenario` under `seed`, its checks tolerating only `allow`
/// ([`Allowances::NONE`]: every check whole).
pub fn run_with(seed: u64, scenario: &Scenario, trace: bool, allow: Allowances) -> (Verdict, Sim) {
    let mut sim = Sim::new(seed, scenario.config.clone(), scenario.peers.clone());
    sim.allowances = allow;
    if trace {
        sim = sim.with_trace();
    }
    for (at, action) in &scenario.schedule {
        sim.schedule(*at, action.clone());
    }
    sim.run(RUN_LIMIT);
    let verdict = Verdict {
        summary: sim.history.check(&format!("seed {seed}")),
        violations: sim.violations.clone(),
        steps: sim.steps(),
        elapsed: sim.elapsed(),
        hash: sim.trace_hash(),
    };
    (verdict, sim)
}

/// The smallest schedule (dropping entries one at a time) under which
/// `seed` still fails, and its failure.
pub fn shrink(seed: u64, scenario: &Scenario) -> (Scenario, String) {
    let mut best = scenario.clone();
    let mut why = run(seed, &best, false).0.failure().unwrap_or_default();
    let mut i = 0;
    while i < best.schedule.len() {
        let mut smaller = best.clone();
        smaller.schedule.remove(i);
        match run(seed, &smaller, false).0.failure() {
            Some(w) => {
                best = smaller;
                why = w;
            }
            None => i += 1,
        }
    }
    (best, why)
}

/// The one-line command that replays `seed`.
pub fn replay_command(seed: u64) -> String {
    format!("JOBMESH_SIM_SEED={seed} cargo test -p jobmesh-sim --test swarm replay -- --ignored --nocapture")
}
