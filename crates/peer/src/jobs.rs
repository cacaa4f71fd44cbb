//! What a daemon remembers about jobs for people: the event records
//! `peer watch` streams and the recent-jobs table `peer jobs` lists.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jobmesh_core::{EventKind, JobEvent};
use jobmesh_wire::dc::{JobId, Progress};
use jobmesh_wire::Capability;
use serde::{Deserialize, Serialize};

/// Jobs `peer jobs` remembers after they end. Overflow: the oldest is forgotten.
pub const RECENT_JOBS: usize = 1000;

/// Converts the core's `Instant`s to wall-clock milliseconds since the epoch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    unix_ms: u64,
}

impl Clock {
    /// Pairs the two clocks now.
    pub fn now() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            instant: Instant::now(),
            unix_ms,
        }
    }

    /// `at` as Unix milliseconds.
    pub fn unix_ms(&self, at: Instant) -> u64 {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if at >= self.instant {
            self.unix_ms.saturating_add(ms(at - self.instant))
        } else {
            self.unix_ms.saturating_sub(ms(self.instant - at))
        }
    }
}

/// One job event as `peer watch --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The job.
    pub job_id: JobId,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// `queued`, `dispatched`, `started`, `progress`, `retrying` or `finished`.
    pub event: String,
    /// The worker (dispatched, started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The attempt number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The capability (queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<Capability>,
    /// Progress (progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The terminal state (finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// What went wrong (retrying, finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Backoff before the next attempt (retrying).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

impl WatchEvent {
    /// The record of `e`.
    pub fn from_event(e: &JobEvent, clock: &Clock) -> Self {
        let mut w = WatchEvent {
            job_id: e.job_id,
            at_ms: clock.unix_ms(e.at),
            event: e.kind.name().to_owned(),
            worker: None,
            attempt: None,
            capability: None,
            progress: None,
            state: None,
            error: None,
            retry_in_ms: None,
        };
        match &e.kind {
            EventKind::Queued { capability, .. } => w.capability = Some(capability.clone()),
            EventKind::Dispatched { worker, attempt } | EventKind::Started { worker, attempt } => {
                w.worker = Some(worker.to_string());
                w.attempt = Some(*attempt);
            }
            EventKind::Progress { attempt, progress } => {
                w.attempt = Some(*attempt);
                w.progress = Some(progress.clone());
            }
            EventKind::Retrying {
                attempt,
                outcome,
                after,
            } => {
                w.attempt = Some(*attempt);
                w.error = Some(outcome.to_string());
                w.retry_in_ms = Some(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
            }
            EventKind::Finished { state, error } => {
                w.state = Some((*state).to_owned());
                w.error.clone_from(error);
            }
        }
        w
    }
}

/// One job as `peer jobs` lists it, with its phase timings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job.
    pub job_id: JobId,
    /// Its capability.
    pub capability: Capability,
    /// Its state now.
    pub state: String,
    /// The worker of its last attempt.
    pub worker: Option<String>,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was submitted (Unix ms).
    pub submitted_ms: u64,
    /// Waiting for a worker, first dispatch included.
    pub queued_ms: Option<u64>,
    /// From the last dispatch to the worker's accept.
    pub claim_ms: Option<u64>,
    /// From the last accept to the end.
    pub run_ms: Option<u64>,
    /// From submit to the end.
    pub total_ms: Option<u64>,
    /// The error, if it ended without a result.
    pub error: Option<String>,
    #[serde(skip)]
    times: Times,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Times {
    submitted: Option<Instant>,
    first_dispatch: Option<Instant>,
    dispatched: Option<Instant>,
    started: Option<Instant>,
}

/// The live jobs and the last [`RECENT_JOBS`] ended ones.
#[derive(Debug, Default)]
pub struct JobTable {
    live: HashMap<JobId, JobRecord>,
    ended: VecDeque<JobRecord>,
}

impl JobTable {
    /// Applies one event.
    pub fn apply(&mut self, e: &JobEvent, clock: &Clock) {
        let ms =
            |a: Instant, b: Instant| u64::try_from(b.saturating_duration_since(a).as_millis()).ok();
        if let EventKind::Queued { capability, .. } = &e.kind {
            self.live.entry(e.job_id).or_insert_with(|| JobRecord {
                job_id: e.job_id,
                capability: capability.clone(),
                state: "queued".into(),
                worker: None,
                attempts: 0,
                submitted_ms: clock.unix_ms(e.at),
                queued_ms: None,
                claim_ms: None,
                run_ms: None,
                total_ms: None,
                error: None,
                times: Times {
                    submitted: Some(e.at),
                    ..Times::default()
                },
            });
        }
        let Some(r) = self.live.get_mut(&e.job_id) else {
            return;
        };
        match &e.kind {
            EventKind::Queued { .. } => {}
            EventKind::Dispatched { worker, attempt } => {
                r.state = "dispatched".into();
                r.worker = Some(worker.to_string());
                r.attempts = *attempt;
                r.times.dispatched = Some(e.at);
                if r.times.first_dispatch.is_none() {
                    r.times.first_dispatch = Some(e.at);
                    r.queued_ms = r.times.submitted.and_then(|s| ms(s, e.at));
                }
            }
            EventKind::Started { .. } => {
                r.state = "running".into();
                r.times.started = Some(e.at);
                r.claim_ms = r.times.dispatched.and_then(|d| ms(d, e.at));
            }
            EventKind::Progress { .. } => {}
            EventKind::Retrying { .. } => r.state = "queued".into(),
            EventKind::Finished { state, error } => {
                r.state = (*state).to_owned();
                r.error.clone_from(error);
                r.run_ms = r.times.started.and_then(|s| ms(s, e.at));
                r.total_ms = r.times.submitted.and_then(|s| ms(s, e.at));
                if let Some(done) = self.live.remove(&e.job_id) {
                    if self.ended.len() >= RECENT_JOBS {
                        self.ended.pop_front();
                    }
                    self.ended.push_back(done);
                }
            }
        }
    }

    /// A live job, or the one that ended last (as it was just now).
    pub fn get(&self, id: &JobId) -> Option<&JobRecord> {
        self.live
            .get(id)
            .or_else(|| self.ended.back().filter(|r| r.job_id == *id))
    }

    /// Live jobs then ended ones, newest first.
    pub fn list(&self) -> Vec<JobRecord> {
        let mut live: Vec<JobRecord> = self.live.values().cloned().collect();
        live.sort_by_key(|r| std::cmp::Reverse(r.submitted_ms));
        live.extend(self.ended.iter().rev().cloned());
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobmesh_wire::PeerId;

    #[test]
    fn the_table_records_phases_and_forgets_the_oldest() {
        let clock = Clock::now();
        let t = Instant::now();
        let ms = Duration::from_millis;
        let cap = Capability::new("echo").expect("valid");
        let w = PeerId::random();
        let mut table = JobTable::default();
        let id = uuid::Uuid::new_v4();
        let ev = |at, kind| JobEvent {
            job_id: id,
            at,
            kind,
        };
        table.apply(
            &ev(
                t,
                EventKind::Queued {
                    capability: cap.clone(),
                    priority: 0,
                },
            ),
            &clock,
        );
        table.apply(
            &ev(
                t + ms(5),
                EventKind::Dispatched {
                    worker: w,
                    attempt: 1,
                },
            ),
            &clock,
        );
        table.apply(
            &ev(
                t + ms(7),
                EventKind::Started {
                    worker: w,
                    attempt: 1,
                },
            ),
            &clock,
        );
        assert_eq!(table.list()[0].state, "running");
        let fin = EventKind::Finished {
            state: "completed",
            error: None,
        };
        table.apply(&ev(t + ms(20), fin), &clock);
        let r = &table.list()[0];
        assert_eq!(
            (r.queued_ms, r.claim_ms, r.run_ms, r.total_ms),
            (Some(5), Some(2), Some(13), Some(20))
        );
        assert_eq!(r.state, "completed");
        for _ in 0..RECENT_JOBS {
            let id = uuid::Uuid::new_v4();
            let e = |kind| JobEvent {
                job_id: id,
                at: t,
                kind,
            };
            table.apply(
                &e(EventKind::Queued {
                    capability: cap.clone(),
                    priority: 0,
                }),
                &clock,
            );
            table.apply(
                &e(EventKind::Finished {
                    state: "cancelled",
                    error: None,
                }),
                &clock,
            );
        }
        assert_eq!(table.list().len(), RECENT_JOBS);
        assert!(
            table.list().iter().all(|r| r.job_id != id),
            "the oldest is forgotten"
        );
    }
}
