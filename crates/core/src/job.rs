//! A job's lifecycle: its options, its one state enum with the one function
//! that changes it, its attempt history, and the events it emits.

use std::time::{Duration, Instant};

use jobmesh_wire::dc::{JobId, Progress, RejectReason};
use jobmesh_wire::{Capability, PeerId};

use crate::strategy::StrategyKind;

/// Per-job settings, with the defaults of `peer submit`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOptions {
    /// How long one attempt may take from dispatch to result, and how long
    /// the job may wait in the queue for a worker. Measured by the submitter.
    pub timeout: Duration,
    /// Higher runs first; FIFO within a priority.
    pub priority: i32,
    /// Further attempts after a retryable failure (lost worker, timeout,
    /// handler error marked retryable). Busy rejections do not count.
    pub max_retries: u32,
    /// Whether losing the worker mid-job retries it (else the job ends `Lost`).
    pub retry_on_disconnect: bool,
    /// The strategy for this job; `None` uses the dispatcher's default.
    pub strategy: Option<StrategyKind>,
    /// Key for the affinity strategy (default: the capability name).
    pub affinity: Option<String>,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            priority: 0,
            max_retries: 2,
            retry_on_disconnect: true,
            strategy: None,
            affinity: None,
        }
    }
}

impl From<Duration> for JobOptions {
    /// Defaults with this timeout.
    fn from(timeout: Duration) -> Self {
        Self {
            timeout,
            ..Self::default()
        }
    }
}

/// A job as the caller submits it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Its id (random v4, chosen by the caller so it can be logged before submit).
    pub job_id: JobId,
    /// Which handler it needs.
    pub capability: Capability,
    /// The handler's input.
    pub input: serde_json::Value,
    /// How it is run.
    pub options: JobOptions,
}

/// Where a job is in its life. Every change goes through [`JobState::transition`].
///
/// ```text
/// Queued ──▶ Dispatched ──▶ Running{progress} ──▶ Completed | Failed | TimedOut | Lost | Cancelled
///   ▲            │               │
///   └────────────┴───────────────┘  retry (a new attempt) or a busy worker
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// Waiting for a worker (first time, after a busy rejection, or before a retry).
    Queued,
    /// Offered to `worker` as attempt `attempt`; no answer yet.
    Dispatched {
        /// Where.
        worker: PeerId,
        /// Which attempt.
        attempt: u32,
    },
    /// The worker accepted and runs it.
    Running {
        /// Where.
        worker: PeerId,
        /// Which attempt.
        attempt: u32,
        /// The last progress report.
        progress: Option<Progress>,
    },
    /// Done, with a result.
    Completed,
    /// Ended with an error.
    Failed,
    /// Its last attempt (or its wait in the queue) ran out of time.
    TimedOut,
    /// Its worker went away and it was not retried.
    Lost,
    /// The caller cancelled it.
    Cancelled,
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal job transition {from} -> {to}")]
pub struct IllegalTransition {
    /// State name before.
    pub from: &'static str,
    /// State name asked for.
    pub to: &'static str,
}

impl JobState {
    /// The state's name as the CLI and events show it.
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Dispatched { .. } => "dispatched",
            JobState::Running { .. } => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::TimedOut => "timed_out",
            JobState::Lost => "lost",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job has ended.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobState::Completed
                | JobState::Failed
                | JobState::TimedOut
                | JobState::Lost
                | JobState::Cancelled
        )
    }

    /// The worker and attempt of a dispatched or running job.
    pub fn attempt(&self) -> Option<(PeerId, u32)> {
        match self {
            JobState::Dispatched { worker, attempt }
            | JobState::Running {
                worker, attempt, ..
            } => Some((*worker, *attempt)),
            _ => None,
        }
    }

    /// Moves to `to` if the lifecycle allows it; otherwise leaves `self` as it is.
    pub fn transition(&mut self, to: JobState) -> Result<(), IllegalTransition> {
        use JobState::*;
        let same_attempt = |a: &JobState, b: &JobState| a.attempt() == b.attempt();
        let legal = match (&*self, &to) {
            (from, _) if from.is_terminal() => false,
            (Queued, Dispatched { .. }) => true,
            // A queued job has run nowhere: it cannot complete or be lost.
            (Queued, Failed | TimedOut | Cancelled) => true,
            (Dispatched { .. }, Running { .. }) => same_attempt(self, &to),
            (Running { .. }, Running { .. }) => same_attempt(self, &to),
            (Dispatched { .. } | Running { .. }, Queued) => true,
            (Dispatched { .. }, Failed | TimedOut | Lost | Cancelled) => true,
            (Running { .. }, Completed | Failed | TimedOut | Lost | Cancelled) => true,
            _ => false,
        };
        if legal {
            *self = to;
            Ok(())
        } else {
            Err(IllegalTransition {
                from: self.name(),
                to: to.name(),
            })
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The worker returned a result.
    Completed,
    /// The handler failed.
    Failed {
        /// Its error.
        message: String,
        /// Whether it said a retry may help.
        retryable: bool,
    },
    /// The worker refused it.
    Rejected {
        /// Why.
        reason: RejectReason,
        /// Its words.
        message: String,
    },
    /// No result within the timeout.
    TimedOut,
    /// The worker or the link to it went away.
    Lost,
    /// The link to the worker was refused: it did not prove the identity
    /// the pool view announced (the job never left this peer).
    Unverified {
        /// What failed.
        why: String,
    },
    /// No data channel to the worker opened (the job never left this peer).
    Unreachable {
        /// Why.
        why: String,
    },
    /// Cancelled by the caller.
    Cancelled,
    /// Given up for a worker that held a finished or running attempt of the
    /// job from before its link closed (see `DcMsg::Held`).
    Superseded {
        /// The worker that held it.
        by: PeerId,
    },
}

impl std::fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptOutcome::Completed => f.write_str("completed"),
            AttemptOutcome::Failed { message, .. } => write!(f, "failed: {message}"),
            AttemptOutcome::Rejected { reason, message } => {
                write!(f, "rejected ({reason:?}): {message}")
            }
            AttemptOutcome::TimedOut => f.write_str("timed out"),
            AttemptOutcome::Lost => f.write_str("worker lost"),
            AttemptOutcome::Unverified { why } => write!(f, "identity not verified: {why}"),
            AttemptOutcome::Unreachable { why } => write!(f, "worker unreachable: {why}"),
            AttemptOutcome::Cancelled => f.write_str("cancelled"),
            AttemptOutcome::Superseded { by } => {
                write!(f, "superseded by worker {}, which held the job", by.short())
            }
        }
    }
}

/// One hand-over of a job to one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// From 1.
    pub number: u32,
    /// Where.
    pub worker: PeerId,
    /// When it was offered.
    pub dispatched_at: Instant,
    /// When the worker accepted it.
    pub started_at: Option<Instant>,
    /// When it ended.
    pub ended_at: Option<Instant>,
    /// How it ended (None while it runs).
    pub outcome: Option<AttemptOutcome>,
}

/// What happened to a job, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// Which job.
    pub job_id: JobId,
    /// When (the `now` of the input that caused it).
    pub at: Instant,
    /// What.
    pub kind: EventKind,
}

/// The kinds of [`JobEvent`].
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// Accepted by the dispatcher, waiting for a worker.
    Queued {
        /// Its capability.
        capability: Capability,
        /// Its priority.
        priority: i32,
    },
    /// Offered to a worker.
    Dispatched {
        /// Where.
        worker: PeerId,
        /// Attempt number.
        attempt: u32,
    },
    /// The worker accepted and started it.
    Started {
        /// Where.
        worker: PeerId,
        /// Attempt number.
        attempt: u32,
    },
    /// The worker reported progress.
    Progress {
        /// Attempt number.
        attempt: u32,
        /// The report.
        progress: Progress,
    },
    /// An attempt failed and the job waits to be tried again.
    Retrying {
        /// The attempt that failed.
        attempt: u32,
        /// How it failed.
        outcome: AttemptOutcome,
        /// Not offered again before this long.
        after: Duration,
    },
    /// The job ended.
    Finished {
        /// The terminal state's name (`completed`, `failed`, ...).
        state: &'static str,
        /// The error, unless completed.
        error: Option<String>,
    },
}

impl EventKind {
    /// A short name: `queued`, `dispatched`, `started`, `progress`, `retrying`, `finished`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Queued { .. } => "queued",
            EventKind::Dispatched { .. } => "dispatched",
            EventKind::Started { .. } => "started",
            EventKind::Progress { .. } => "progress",
            EventKind::Retrying { .. } => "retrying",
            EventKind::Finished { .. } => "finished",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(n: u128) -> PeerId {
        PeerId(uuid::Uuid::from_u128(n))
    }

    fn all(worker: PeerId, attempt: u32) -> Vec<JobState> {
        vec![
            JobState::Queued,
            JobState::Dispatched { worker, attempt },
            JobState::Running {
                worker,
                attempt,
                progress: None,
            },
            JobState::Completed,
            JobState::Failed,
            JobState::TimedOut,
            JobState::Lost,
            JobState::Cancelled,
        ]
    }

    #[test]
    fn the_transition_table_is_exactly_the_lifecycle() {
        let legal: &[(&str, &str)] = &[
            ("queued", "dispatched"),
            ("queued", "failed"),
            ("queued", "timed_out"),
            ("queued", "cancelled"),
            ("dispatched", "running"),
            ("dispatched", "queued"),
            ("dispatched", "failed"),
            ("dispatched", "timed_out"),
            ("dispatched", "lost"),
            ("dispatched", "cancelled"),
            ("running", "running"),
            ("running", "queued"),
            ("running", "completed"),
            ("running", "failed"),
            ("running", "timed_out"),
            ("running", "lost"),
            ("running", "cancelled"),
        ];
        for from in all(w(1), 1) {
            for to in all(w(1), 1) {
                let mut s = from.clone();
                let ok = s.transition(to.clone()).is_ok();
                let expected = legal.contains(&(from.name(), to.name()));
                assert_eq!(ok, expected, "{} -> {}", from.name(), to.name());
                assert_eq!(
                    s,
                    if ok { to.clone() } else { from.clone() },
                    "refused leaves state"
                );
            }
        }
    }

    #[test]
    fn running_and_starting_must_stay_on_the_same_attempt() {
        let mut s = JobState::Dispatched {
            worker: w(1),
            attempt: 1,
        };
        let other = JobState::Running {
            worker: w(1),
            attempt: 2,
            progress: None,
        };
        assert!(s.transition(other).is_err());
        let mut s = JobState::Running {
            worker: w(1),
            attempt: 1,
            progress: None,
        };
        let moved = JobState::Running {
            worker: w(2),
            attempt: 1,
            progress: None,
        };
        assert!(s.transition(moved).is_err());
    }
}
