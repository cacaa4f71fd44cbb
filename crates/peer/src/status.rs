//! `peer status`: the pool at a glance, from the pool view (every member's
//! stats, which carry its finished jobs per capability) and a minute of its
//! history (for rates), plus this daemon's own jobs. Pure: [`report`] turns
//! what it is given into a [`StatusReport`]; the daemon samples the view
//! every [`SAMPLE_EVERY`] into a [`History`].
//!
//! Attribution: a worker's slots can run any of its capabilities, so its
//! slots count under each of them (the totals at the top count them once).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use jobmesh_wire::{Capability, PeerId, PeerInfo};
use serde::{Deserialize, Serialize};

use crate::jobs::JobRecord;
use crate::view::PoolSnapshot;

/// How often the daemon samples the pool view for rates.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Rates are over (about) this window.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Workers listed as the slowest.
const SLOWEST: usize = 5;

/// Each worker's finished jobs per capability at one moment.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    finished: HashMap<PeerId, BTreeMap<Capability, [u64; 2]>>,
}

/// The last [`RATE_WINDOW`] of samples (bounded: one every
/// [`SAMPLE_EVERY`], older ones dropped).
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Records `pool` as seen at `now`.
    pub fn sample(&mut self, now: Instant, pool: &PoolSnapshot) {
        let finished = members(pool)
            .filter(|p| !p.stats.finished.is_empty())
            .map(|p| (p.id, p.stats.finished.clone()))
            .collect();
        self.samples.push_back(Sample { at: now, finished });
        // Keep the newest sample at least RATE_WINDOW old, and nothing older.
        while self.samples.len() > 1 && self.samples[1].at + RATE_WINDOW <= now {
            self.samples.pop_front();
        }
        let most = (RATE_WINDOW.as_secs() / SAMPLE_EVERY.as_secs().max(1)) as usize + 2;
        while self.samples.len() > most {
            self.samples.pop_front();
        }
    }

    /// The oldest sample, if it is at least a second old.
    fn oldest(&self, now: Instant) -> Option<&Sample> {
        self.samples
            .front()
            .filter(|s| now.saturating_duration_since(s.at) >= Duration::from_secs(1))
    }
}

/// The pool at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// This daemon is connected to its signal-server.
    pub connected: bool,
    /// The view is the whole pool (not still arriving).
    pub synced: bool,
    /// Members with slots.
    pub workers: u32,
    /// Of them, shutting down.
    pub draining: u32,
    /// Members without slots (they only submit).
    pub submitters: u32,
    /// Slots of all workers.
    pub slots: u64,
    /// Of them, running a job now.
    pub busy: u64,
    /// Jobs waiting in members' own queues for a worker.
    pub queued: u64,
    /// Jobs finished by all workers since they started.
    pub completed: u64,
    /// Of the finished, failed.
    pub failed: u64,
    /// The window rates are over, in seconds (none yet: rates are absent).
    pub rate_window_s: Option<f64>,
    /// Per capability, by name.
    pub capabilities: Vec<CapabilityStatus>,
    /// The workers with the longest mean run time of a capability.
    pub slowest: Vec<SlowWorker>,
    /// This daemon.
    pub me: OwnStatus,
}

/// One capability across the pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilityStatus {
    /// The capability.
    pub capability: Capability,
    /// Workers offering it (draining ones included).
    pub workers: u32,
    /// Their slots.
    pub slots: u64,
    /// Of them, running a job now (of any capability).
    pub busy: u64,
    /// Jobs of it completed since the workers started.
    pub completed: u64,
    /// Jobs of it failed since the workers started.
    pub failed: u64,
    /// Completed per minute over the rate window.
    pub completed_per_min: Option<f64>,
    /// Failed per minute over the rate window.
    pub failed_per_min: Option<f64>,
    /// Mean run time across workers, weighted by their finished jobs.
    pub mean_run_ms: Option<u64>,
}

/// A worker's mean run time of one capability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlowWorker {
    /// Its name.
    pub name: String,
    /// Its peer id.
    pub id: PeerId,
    /// The capability.
    pub capability: Capability,
    /// Its mean run time of it.
    pub mean_run_ms: u64,
    /// Jobs of it it finished.
    pub finished: u64,
}

/// This daemon's own jobs and journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnStatus {
    /// Its name.
    pub name: String,
    /// Its jobs not ended, by state (queued, dispatched, running).
    pub live: BTreeMap<String, u64>,
    /// Of its last ended jobs (up to 1,000), by state.
    pub recent: BTreeMap<String, u64>,
    /// Its journal file and its size in bytes, if it keeps one.
    pub journal: Option<(std::path::PathBuf, u64)>,
}

fn members(pool: &PoolSnapshot) -> impl Iterator<Item = &PeerInfo> {
    std::iter::once(&pool.me).chain(&pool.peers)
}

/// The report of `pool` now, with `history` for rates and this daemon's
/// `jobs` (live, then recent ones) and `journal`.
pub fn report(
    now: Instant,
    pool: &PoolSnapshot,
    history: &History,
    jobs: &[JobRecord],
    journal: Option<(std::path::PathBuf, u64)>,
) -> StatusReport {
    let then = history.oldest(now);
    let window = then.map(|s| now.saturating_duration_since(s.at));
    let mut caps: BTreeMap<Capability, CapabilityStatus> = BTreeMap::new();
    // Per capability: sum of mean × finished, and of finished, for the mean.
    let mut weighted: BTreeMap<Capability, (u128, u128)> = BTreeMap::new();
    // Per capability: finished within the window, [completed, failed].
    let mut recent: BTreeMap<Capability, [u64; 2]> = BTreeMap::new();
    let mut slow = Vec::new();
    let (mut workers, mut draining, mut submitters) = (0, 0, 0);
    let (mut slots, mut busy, mut queued, mut completed, mut failed) = (0, 0, 0, 0, 0);
    for p in members(pool) {
        let s = &p.stats;
        queued += u64::from(s.queued);
        if s.slots == 0 {
            submitters += 1;
            continue;
        }
        workers += 1;
        draining += u32::from(s.draining);
        slots += u64::from(s.slots);
        busy += u64::from(s.running);
        completed += s.completed;
        failed += s.failed;
        for cap in &p.capabilities {
            let c = caps.entry(cap.clone()).or_insert_with(|| CapabilityStatus {
                capability: cap.clone(),
                workers: 0,
                slots: 0,
                busy: 0,
                completed: 0,
                failed: 0,
                completed_per_min: None,
                failed_per_min: None,
                mean_run_ms: None,
            });
            c.workers += 1;
            c.slots += u64::from(s.slots);
            c.busy += u64::from(s.running);
        }
        let before = then.and_then(|t| t.finished.get(&p.id));
        for (cap, &[ok, bad]) in &s.finished {
            if let Some(c) = caps.get_mut(cap) {
                c.completed += ok;
                c.failed += bad;
            }
            // A worker that restarted counts from zero again.
            let [ok0, bad0] = before
                .and_then(|b| b.get(cap))
                .copied()
                .filter(|[o, b]| *o <= ok && *b <= bad)
                .unwrap_or([0, 0]);
            let r = recent.entry(cap.clone()).or_default();
            r[0] += ok - ok0;
            r[1] += bad - bad0;
            if let Some(&mean) = s.mean_run_ms.get(cap) {
                let n = u128::from(ok + bad);
                let w = weighted.entry(cap.clone()).or_default();
                w.0 += u128::from(mean) * n;
                w.1 += n;
                slow.push(SlowWorker {
                    name: p.name.clone(),
                    id: p.id,
                    capability: cap.clone(),
                    mean_run_ms: mean,
                    finished: ok + bad,
                });
            }
        }
    }
    for (cap, c) in &mut caps {
        if let Some(&(sum, n)) = weighted.get(cap).filter(|(_, n)| *n > 0) {
            c.mean_run_ms = u64::try_from(sum / n).ok();
        }
        if let Some(w) = window {
            let per_min = |n: u64| n as f64 * 60.0 / w.as_secs_f64();
            let [ok, bad] = recent.get(cap).copied().unwrap_or_default();
            c.completed_per_min = Some(per_min(ok));
            c.failed_per_min = Some(per_min(bad));
        }
    }
    slow.sort_by(|a, b| b.mean_run_ms.cmp(&a.mean_run_ms).then(a.name.cmp(&b.name)));
    slow.truncate(SLOWEST);
    let mut live = BTreeMap::new();
    let mut ended = BTreeMap::new();
    for j in jobs {
        let into = if matches!(j.state.as_str(), "queued" | "dispatched" | "running") {
            &mut live
        } else {
            &mut ended
        };
        *into.entry(j.state.clone()).or_insert(0) += 1;
    }
    StatusReport {
        connected: pool.connected,
        synced: pool.synced,
        workers,
        draining,
        submitters,
        slots,
        busy,
        queued,
        completed,
        failed,
        rate_window_s: window.map(|w| w.as_secs_f64()),
        capabilities: caps.into_values().collect(),
        slowest: slow,
        me: OwnStatus {
            name: pool.me.name.clone(),
            live,
            recent: ended,
            journal,
        },
    }
}

#[cfg(test)]
mod tests {
    use jobmesh_wire::Stats;

    use super::*;

    fn cap(s: &str) -> Capability {
        Capability::new(s).expect("valid")
    }

    fn worker(
        n: u128,
        caps: &[&str],
        slots: u32,
        running: u32,
        finished: &[(&str, [u64; 2], u64)],
    ) -> PeerInfo {
        PeerInfo {
            id: PeerId(uuid::Uuid::from_u128(n)),
            name: format!("w{n}"),
            capabilities: caps.iter().map(|c| cap(c)).collect(),
            stats: Stats {
                slots,
                running,
                completed: finished.iter().map(|f| f.1[0]).sum(),
                failed: finished.iter().map(|f| f.1[1]).sum(),
                finished: finished.iter().map(|f| (cap(f.0), f.1)).collect(),
                mean_run_ms: finished.iter().map(|f| (cap(f.0), f.2)).collect(),
                ..Stats::default()
            },
        }
    }

    fn pool(me: PeerInfo, peers: Vec<PeerInfo>) -> PoolSnapshot {
        PoolSnapshot {
            connected: true,
            synced: true,
            me,
            peers,
            refused: None,
            links: Default::default(),
            link_errors: Default::default(),
        }
    }

    #[test]
    fn counts_add_up_per_capability_and_rates_come_from_the_window() {
        let t = Instant::now();
        let me = PeerInfo {
            name: "me".into(),
            ..worker(9, &[], 0, 0, &[])
        };
        let before = pool(
            me.clone(),
            vec![
                worker(
                    1,
                    &["echo", "ocr"],
                    2,
                    1,
                    &[("echo", [10, 1], 4), ("ocr", [2, 0], 900)],
                ),
                worker(2, &["echo"], 4, 0, &[("echo", [5, 0], 2)]),
            ],
        );
        let mut history = History::default();
        history.sample(t, &before);
        let after = pool(
            me,
            vec![
                worker(
                    1,
                    &["echo", "ocr"],
                    2,
                    2,
                    &[("echo", [40, 1], 4), ("ocr", [2, 1], 1000)],
                ),
                // Restarted: its counters began again.
                worker(2, &["echo"], 4, 1, &[("echo", [3, 0], 2)]),
            ],
        );
        let now = t + Duration::from_secs(30);
        history.sample(now, &after);
        let r = report(now, &after, &history, &[], None);
        assert_eq!((r.workers, r.submitters, r.slots, r.busy), (2, 1, 6, 3));
        assert_eq!((r.completed, r.failed), (45, 2));
        let echo = &r.capabilities[0];
        assert_eq!(echo.capability, cap("echo"));
        assert_eq!((echo.workers, echo.slots, echo.busy), (2, 6, 3));
        assert_eq!((echo.completed, echo.failed), (43, 1));
        // 30 from w1 and 3 from the restarted w2 in 30 s.
        assert_eq!(echo.completed_per_min, Some(66.0));
        assert_eq!(echo.failed_per_min, Some(0.0));
        // (40+1)×4 + 3×2 over 44 jobs.
        assert_eq!(echo.mean_run_ms, Some(3));
        let ocr = &r.capabilities[1];
        assert_eq!(
            (ocr.workers, ocr.slots, ocr.completed, ocr.failed),
            (1, 2, 2, 1)
        );
        assert_eq!(ocr.failed_per_min, Some(2.0));
        assert_eq!(r.slowest[0].capability, cap("ocr"));
        assert_eq!(r.slowest[0].name, "w1");
        assert_eq!(r.rate_window_s, Some(30.0));
    }

    #[test]
    fn no_history_means_no_rates_and_history_stays_bounded() {
        let t = Instant::now();
        let p = pool(
            worker(1, &["echo"], 1, 0, &[("echo", [1, 0], 1)]),
            Vec::new(),
        );
        let mut history = History::default();
        let r = report(t, &p, &history, &[], None);
        assert_eq!(r.capabilities[0].completed_per_min, None);
        for i in 0..1000 {
            history.sample(t + SAMPLE_EVERY * i, &p);
        }
        assert!(history.samples.len() <= 14, "{}", history.samples.len());
        let now = t + SAMPLE_EVERY * 999;
        let window = now.saturating_duration_since(history.samples[0].at);
        assert!(
            window >= RATE_WINDOW && window <= RATE_WINDOW + SAMPLE_EVERY,
            "{window:?}"
        );
    }
}

/// The figure in docs/observability.md: `cargo test --release -p
/// jobmesh-peer --lib status::measure -- --ignored --nocapture`.
#[cfg(test)]
mod measure {
    use jobmesh_wire::Stats;

    use super::*;

    #[test]
    #[ignore = "a measurement, not a check: run it by name"]
    fn a_report_of_a_thousand_peers() {
        let caps: Vec<Capability> = ["echo", "sleep", "thumbnail", "ocr"]
            .iter()
            .map(|c| Capability::new(c).expect("valid"))
            .collect();
        let peer = |n: u128| PeerInfo {
            id: PeerId(uuid::Uuid::from_u128(n)),
            name: format!("worker-{n:04}"),
            capabilities: caps.clone(),
            stats: Stats {
                slots: 4,
                running: (n % 5) as u32,
                finished: caps.iter().map(|c| (c.clone(), [n as u64, 1])).collect(),
                mean_run_ms: caps.iter().map(|c| (c.clone(), n as u64 % 700)).collect(),
                ..Stats::default()
            },
        };
        let pool = PoolSnapshot {
            connected: true,
            synced: true,
            me: peer(0),
            peers: (1..1000).map(peer).collect(),
            refused: None,
            links: Default::default(),
            link_errors: Default::default(),
        };
        let mut history = History::default();
        let t = Instant::now();
        history.sample(t, &pool);
        let started = Instant::now();
        let rounds = 100;
        let mut bytes = 0;
        for _ in 0..rounds {
            let r = report(t + RATE_WINDOW, &pool, &history, &[], None);
            bytes = serde_json::to_vec(&r).map_or(0, |v| v.len());
        }
        println!(
            "status of 1,000 peers × 4 capabilities: {:.2} ms a report (JSON {bytes} bytes), {rounds} rounds",
            started.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds)
        );
    }
}
