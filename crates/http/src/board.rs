//! What the dashboard shows, kept from three sources: the pool view (who
//! is in, joins and leaves), the observers' stream (every worker's job
//! events: the task stream, run times, failures, lost jobs) and this
//! daemon's own jobs (queue wait). Pure: no clock, no I/O; the HTTP layer
//! feeds it and renders a [`Snapshot`] once a second.
//!
//! Everything is bounded: [`TASKS`] spans, [`RUN_SAMPLES`] run times per
//! capability for at most [`MAX_CAPABILITIES`] capabilities, the last
//! [`FAILURES`] failures and [`EVENTS`] pool events. Past a bound the
//! oldest go.

use std::collections::{BTreeMap, HashMap, VecDeque};

use jobmesh_peer::jobs::JobRecord;
use jobmesh_peer::status::{CapabilityStatus, StatusReport};
use jobmesh_peer::{ObservedBatch, PoolSnapshot};
use jobmesh_wire::dc::{JobId, ObservedKind};
use jobmesh_wire::{Capability, PeerId, PeerInfo};
use serde::Serialize;

/// Task-stream spans kept (running and ended).
pub const TASKS: usize = 600;
/// The task stream shows this much time, in milliseconds.
pub const TASK_WINDOW_MS: u64 = 60_000;
/// Run times kept per capability, for its percentiles.
pub const RUN_SAMPLES: usize = 1_000;
/// Capabilities whose run times are kept; others are not sampled.
pub const MAX_CAPABILITIES: usize = 64;
/// Recent failures shown.
pub const FAILURES: usize = 20;
/// Recent pool events (joins, leaves, lost jobs) shown.
pub const EVENTS: usize = 50;
/// Workers listed by name in the peers panel; the rest are counted.
pub const LISTED_WORKERS: usize = 100;
/// Data-moved samples kept for its rate (one per snapshot).
const TRAFFIC_SAMPLES: usize = 8;

/// One job attempt on the task stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    /// The worker's row in [`TaskStream::workers`].
    pub worker: usize,
    /// The job.
    pub job: JobId,
    /// Its capability.
    pub capability: Capability,
    /// When it started (worker's clock, Unix ms).
    pub start_ms: u64,
    /// When it ended; none while it runs.
    pub end_ms: Option<u64>,
    /// running, completed, failed, cancelled or lost.
    pub state: &'static str,
}

#[derive(Debug, Clone)]
struct Task {
    worker: PeerId,
    job: JobId,
    attempt: u32,
    capability: Capability,
    start_ms: u64,
    end_ms: Option<u64>,
    state: &'static str,
}

/// A failure, as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// When (worker's clock, Unix ms).
    pub at_ms: u64,
    /// The worker's name.
    pub worker: String,
    /// The job.
    pub job: JobId,
    /// Its capability.
    pub capability: Capability,
    /// Why, as the worker said.
    pub error: String,
}

/// A change of the pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolEvent {
    /// When (this daemon's clock for joins and leaves, Unix ms).
    pub at_ms: u64,
    /// joined, left or lost.
    pub kind: &'static str,
    /// The member's name.
    pub name: String,
    /// What else: its capabilities (joined), the jobs lost with it (lost).
    pub detail: String,
}

/// Nearest-rank percentiles of some durations, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// How many durations.
    pub n: usize,
    /// The median.
    pub p50: u64,
    /// The 90th percentile.
    pub p90: u64,
    /// The 99th percentile.
    pub p99: u64,
}

impl Percentiles {
    /// Of `values` (none: `None`).
    pub fn of(values: impl IntoIterator<Item = u64>) -> Option<Self> {
        let mut v: Vec<u64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = |p: usize| v[(v.len() * p).div_ceil(100).max(1) - 1];
        Some(Self {
            n: v.len(),
            p50: rank(50),
            p90: rank(90),
            p99: rank(99),
        })
    }
}

/// Panels 1, 2 and 4: one capability across the pool (as `peer status`
/// reports it) and its percentiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapabilityRow {
    /// Workers, slots, finished jobs and their rates.
    #[serde(flatten)]
    pub pool: CapabilityStatus,
    /// Run times the observers heard (pool-wide, last [`RUN_SAMPLES`]).
    pub run_ms: Option<Percentiles>,
    /// Queue wait of the jobs submitted through this daemon (its last
    /// 1,000 ended ones).
    pub queue_ms: Option<Percentiles>,
}

/// A worker, for panel 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRow {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: PeerId,
    /// What it runs.
    pub capabilities: Vec<Capability>,
    /// Its slots.
    pub slots: u32,
    /// Of them, busy.
    pub busy: u32,
    /// It is shutting down.
    pub draining: bool,
}

/// Panel 2: jobs by state, pool-wide.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobCounts {
    /// Running on workers now.
    pub running: u64,
    /// Waiting in members' queues.
    pub queued: u64,
    /// Completed since the workers started.
    pub completed: u64,
    /// Failed since the workers started.
    pub failed: u64,
    /// Completed per minute over the last minute.
    pub completed_per_min: Option<f64>,
    /// Failed per minute over the last minute.
    pub failed_per_min: Option<f64>,
    /// Lost with their worker, heard since this page's stream began.
    pub lost: u64,
    /// Cancelled or timed out on their worker, heard since then.
    pub cancelled: u64,
}

/// Panel 3: who ran what, over the last [`TASK_WINDOW_MS`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskStream {
    /// The window's start (Unix ms).
    pub from_ms: u64,
    /// Its end: now.
    pub to_ms: u64,
    /// One row per worker: (name, id).
    pub workers: Vec<(String, PeerId)>,
    /// The spans in the window, oldest first.
    pub spans: Vec<Span>,
}

/// Panel 5: bytes over this daemon's data channels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataMoved {
    /// Sent since the daemon started.
    pub sent: u64,
    /// Received since the daemon started.
    pub received: u64,
    /// Sent per second over the last few seconds.
    pub sent_per_s: Option<f64>,
    /// Received per second over the last few seconds.
    pub received_per_s: Option<f64>,
}

/// All the dashboard shows, at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// When (this daemon's clock, Unix ms).
    pub at_ms: u64,
    /// The daemon serving the page.
    pub me: String,
    /// It is connected to its signal-server.
    pub connected: bool,
    /// Its view is the whole pool.
    pub synced: bool,
    /// Members with slots.
    pub workers: u32,
    /// Members without (they only submit).
    pub submitters: u32,
    /// Of the workers, shutting down.
    pub draining: u32,
    /// All workers' slots.
    pub slots: u64,
    /// Of them, busy.
    pub busy: u64,
    /// Panel 1 (with panel 4's percentiles).
    pub capabilities: Vec<CapabilityRow>,
    /// Panel 1: the workers, by name (at most [`LISTED_WORKERS`]).
    pub worker_list: Vec<WorkerRow>,
    /// Workers left out of `worker_list`.
    pub more_workers: usize,
    /// Panel 2.
    pub jobs: JobCounts,
    /// Panel 3.
    pub tasks: TaskStream,
    /// Panel 5.
    pub data: DataMoved,
    /// Panel 6: the last failures, newest first.
    pub failures: Vec<Failure>,
    /// Panel 6: the last pool events, newest first.
    pub events: Vec<PoolEvent>,
    /// Observed events the workers dropped because this stream fell behind.
    pub dropped: u64,
}

/// The dashboard's memory of the pool, for one viewer's stream.
#[derive(Debug, Default)]
pub struct Board {
    /// Names of the members, and of departed workers with spans still kept.
    names: HashMap<PeerId, String>,
    /// The members of the last synced view, to tell joins and leaves.
    members: Option<BTreeMap<PeerId, PeerInfo>>,
    /// Spans, oldest first; `first_seq` is the sequence number of the front.
    tasks: VecDeque<Task>,
    first_seq: u64,
    /// (job, attempt) → the span's sequence number.
    task_index: HashMap<(JobId, u32), u64>,
    runs: BTreeMap<Capability, VecDeque<u64>>,
    failures: VecDeque<Failure>,
    events: VecDeque<PoolEvent>,
    lost: u64,
    cancelled: u64,
    dropped: u64,
    traffic: VecDeque<(u64, u64, u64)>,
}

impl Board {
    /// A new, empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pool view at `now_ms`: remembers names, and says who joined or
    /// left since the last synced view (the first one only sets the base).
    pub fn on_pool(&mut self, now_ms: u64, pool: &PoolSnapshot) {
        // The members' names, and those of departed workers still drawn.
        let mut names: HashMap<PeerId, String> = std::iter::once(&pool.me)
            .chain(&pool.peers)
            .map(|p| (p.id, p.name.clone()))
            .collect();
        for t in &self.tasks {
            if let Some(name) = self.names.get(&t.worker) {
                names.entry(t.worker).or_insert_with(|| name.clone());
            }
        }
        self.names = names;
        if !pool.synced {
            return;
        }
        let now: BTreeMap<PeerId, PeerInfo> =
            pool.peers.iter().map(|p| (p.id, p.clone())).collect();
        if let Some(before) = &self.members {
            let mut changes = Vec::new();
            for (id, p) in &now {
                if !before.contains_key(id) {
                    let caps: Vec<&str> = p.capabilities.iter().map(Capability::as_str).collect();
                    let detail = if caps.is_empty() {
                        "submits only".to_string()
                    } else {
                        caps.join(", ")
                    };
                    changes.push(("joined", p.name.clone(), detail));
                }
            }
            for (id, p) in before {
                if !now.contains_key(id) {
                    changes.push(("left", p.name.clone(), String::new()));
                }
            }
            for (kind, name, detail) in changes {
                self.event(PoolEvent {
                    at_ms: now_ms,
                    kind,
                    name,
                    detail,
                });
            }
        }
        self.members = Some(now);
    }

    /// Events from one worker's stream.
    pub fn on_batch(&mut self, batch: &ObservedBatch) {
        self.dropped = self.dropped.saturating_add(batch.dropped);
        // Jobs of this worker heard lost in this batch: when, how many.
        let mut lost: Option<(u64, u64)> = None;
        for e in &batch.events {
            let state = match e.event {
                ObservedKind::Started => {
                    self.start(Task {
                        worker: batch.worker,
                        job: e.job_id,
                        attempt: e.attempt,
                        capability: e.capability.clone(),
                        start_ms: e.at_ms,
                        end_ms: None,
                        state: "running",
                    });
                    continue;
                }
                ObservedKind::Progress => continue,
                ObservedKind::Completed => "completed",
                ObservedKind::Failed => "failed",
                ObservedKind::Cancelled => "cancelled",
                ObservedKind::Lost => "lost",
            };
            self.end(batch.worker, e, state);
            match e.event {
                ObservedKind::Completed | ObservedKind::Failed => {
                    if let Some(ms) = e.run_ms {
                        self.sample_run(&e.capability, ms);
                    }
                }
                ObservedKind::Cancelled => self.cancelled += 1,
                ObservedKind::Lost => {
                    self.lost += 1;
                    lost.get_or_insert((e.at_ms, 0)).1 += 1;
                }
                ObservedKind::Started | ObservedKind::Progress => {}
            }
            if e.event == ObservedKind::Failed {
                if self.failures.len() == FAILURES {
                    self.failures.pop_front();
                }
                self.failures.push_back(Failure {
                    at_ms: e.at_ms,
                    worker: self.name(&batch.worker),
                    job: e.job_id,
                    capability: e.capability.clone(),
                    error: e.error.clone().unwrap_or_default(),
                });
            }
        }
        if let Some((at_ms, n)) = lost {
            let name = self.name(&batch.worker);
            let jobs = if n == 1 { "job" } else { "jobs" };
            self.event(PoolEvent {
                at_ms,
                kind: "lost",
                name,
                detail: format!("{n} running {jobs} lost with it"),
            });
        }
    }

    /// Events a lagging stream missed entirely (not even counted by a
    /// worker): shown with the dropped ones.
    pub fn missed(&mut self, batches: u64) {
        self.dropped = self.dropped.saturating_add(batches);
    }

    /// What to show at `now_ms`, from `status`, this daemon's `jobs`
    /// (for queue wait), its `pool` view and its data-channel byte
    /// counters `(sent, received)`.
    pub fn snapshot(
        &mut self,
        now_ms: u64,
        status: &StatusReport,
        pool: &PoolSnapshot,
        jobs: &[JobRecord],
        bytes: (u64, u64),
    ) -> Snapshot {
        let data = self.data_moved(now_ms, bytes);
        let mut waits: BTreeMap<&Capability, Vec<u64>> = BTreeMap::new();
        for j in jobs {
            if let Some(ms) = j.queued_ms {
                waits.entry(&j.capability).or_default().push(ms);
            }
        }
        let rows: Vec<CapabilityRow> = status
            .capabilities
            .iter()
            .map(|c| CapabilityRow {
                pool: c.clone(),
                run_ms: self
                    .runs
                    .get(&c.capability)
                    .and_then(|r| Percentiles::of(r.iter().copied())),
                queue_ms: waits
                    .get(&c.capability)
                    .and_then(|w| Percentiles::of(w.iter().copied())),
            })
            .collect();
        let sum =
            |f: fn(&CapabilityRow) -> Option<f64>| rows.iter().filter_map(f).reduce(|a, b| a + b);
        let jobs_counts = JobCounts {
            running: status.busy,
            queued: status.queued,
            completed: status.completed,
            failed: status.failed,
            completed_per_min: sum(|r| r.pool.completed_per_min),
            failed_per_min: sum(|r| r.pool.failed_per_min),
            lost: self.lost,
            cancelled: self.cancelled,
        };
        let mut workers: Vec<&PeerInfo> = std::iter::once(&pool.me)
            .chain(&pool.peers)
            .filter(|p| p.stats.slots > 0)
            .collect();
        workers.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let more_workers = workers.len().saturating_sub(LISTED_WORKERS);
        let worker_list = workers
            .iter()
            .take(LISTED_WORKERS)
            .map(|p| WorkerRow {
                name: p.name.clone(),
                id: p.id,
                capabilities: p.capabilities.clone(),
                slots: p.stats.slots,
                busy: p.stats.running,
                draining: p.stats.draining,
            })
            .collect();
        Snapshot {
            at_ms: now_ms,
            me: status.me.name.clone(),
            connected: status.connected,
            synced: status.synced,
            workers: status.workers,
            submitters: status.submitters,
            draining: status.draining,
            slots: status.slots,
            busy: status.busy,
            capabilities: rows,
            worker_list,
            more_workers,
            jobs: jobs_counts,
            tasks: self.task_stream(now_ms),
            data,
            failures: self.failures.iter().rev().cloned().collect(),
            events: self.events.iter().rev().cloned().collect(),
            dropped: self.dropped,
        }
    }

    fn name(&self, id: &PeerId) -> String {
        self.names.get(id).cloned().unwrap_or_else(|| id.short())
    }

    fn event(&mut self, e: PoolEvent) {
        if self.events.len() == EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    fn start(&mut self, task: Task) {
        let key = (task.job, task.attempt);
        if self.task_index.contains_key(&key) {
            return; // heard twice (history after a reconnect)
        }
        if self.tasks.len() == TASKS {
            if let Some(old) = self.tasks.pop_front() {
                self.task_index.remove(&(old.job, old.attempt));
            }
            self.first_seq += 1;
        }
        let seq = self.first_seq + self.tasks.len() as u64;
        self.tasks.push_back(task);
        self.task_index.insert(key, seq);
    }

    fn end(&mut self, worker: PeerId, e: &jobmesh_wire::dc::ObservedEvent, state: &'static str) {
        let key = (e.job_id, e.attempt);
        let slot = self
            .task_index
            .get(&key)
            .and_then(|seq| usize::try_from(seq - self.first_seq).ok());
        match slot.and_then(|i| self.tasks.get_mut(i)) {
            Some(t) => {
                if t.end_ms.is_none() {
                    t.end_ms = Some(e.at_ms.max(t.start_ms));
                    t.state = state;
                }
            }
            None => {
                // Its start was not heard (before this stream, or dropped).
                let start_ms = e.at_ms.saturating_sub(e.run_ms.unwrap_or(0));
                self.start(Task {
                    worker,
                    job: e.job_id,
                    attempt: e.attempt,
                    capability: e.capability.clone(),
                    start_ms,
                    end_ms: Some(e.at_ms),
                    state,
                });
            }
        }
    }

    fn sample_run(&mut self, capability: &Capability, ms: u64) {
        if !self.runs.contains_key(capability) && self.runs.len() >= MAX_CAPABILITIES {
            return;
        }
        let runs = self.runs.entry(capability.clone()).or_default();
        if runs.len() == RUN_SAMPLES {
            runs.pop_front();
        }
        runs.push_back(ms);
    }

    fn task_stream(&self, now_ms: u64) -> TaskStream {
        let from_ms = now_ms.saturating_sub(TASK_WINDOW_MS);
        let mut rows: Vec<(String, PeerId)> = Vec::new();
        let mut row_of: HashMap<PeerId, usize> = HashMap::new();
        let mut spans = Vec::new();
        for t in &self.tasks {
            if t.end_ms.is_some_and(|end| end < from_ms) {
                continue;
            }
            let worker = *row_of.entry(t.worker).or_insert_with(|| {
                rows.push((self.name(&t.worker), t.worker));
                rows.len() - 1
            });
            spans.push(Span {
                worker,
                job: t.job,
                capability: t.capability.clone(),
                start_ms: t.start_ms,
                end_ms: t.end_ms,
                state: t.state,
            });
        }
        // Rows in name order, spans pointing at them.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|a, b| rows[*a].cmp(&rows[*b]));
        let mut new_index = vec![0; rows.len()];
        for (new, old) in order.iter().enumerate() {
            new_index[*old] = new;
        }
        for s in &mut spans {
            s.worker = new_index[s.worker];
        }
        let workers = order.into_iter().map(|i| rows[i].clone()).collect();
        TaskStream {
            from_ms,
            to_ms: now_ms,
            workers,
            spans,
        }
    }

    fn data_moved(&mut self, now_ms: u64, (sent, received): (u64, u64)) -> DataMoved {
        if self.traffic.len() == TRAFFIC_SAMPLES {
            self.traffic.pop_front();
        }
        self.traffic.push_back((now_ms, sent, received));
        let rate = |pick: fn(&(u64, u64, u64)) -> u64| {
            let first = self.traffic.front()?;
            let last = self.traffic.back()?;
            let secs = last.0.checked_sub(first.0).filter(|ms| *ms > 0)? as f64 / 1000.0;
            Some(pick(last).saturating_sub(pick(first)) as f64 / secs)
        };
        DataMoved {
            sent,
            received,
            sent_per_s: rate(|s| s.1),
            received_per_s: rate(|s| s.2),
        }
    }
}

#[cfg(test)]
mod tests;
