//! The fault suite's bookkeeping, in the style of Jepsen's queue checker:
//! every submit is logged as ok (with the job id), failed (with the error)
//! or unknown (the answer was lost with a killed process); every outcome a
//! client is handed is logged; every execution a handler makes is logged by
//! the handler itself. [`History::check`] turns that into the counts the
//! promise is judged by: lost (an ok submit that never got an outcome) and
//! duplicated-delivered (a job handed to its client more than once) must
//! both be 0.

use std::collections::HashMap;
use std::fmt;

use uuid::Uuid;

/// How a job ended, as the client was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// It completed.
    Completed,
    /// It ended with an explicit error.
    Failed(String),
}

/// What one scenario saw.
#[derive(Debug, Default)]
pub struct History {
    /// Submits answered with a job id.
    ok: Vec<Uuid>,
    /// Submits refused with an error (nothing to deliver later).
    refused: Vec<String>,
    /// Submits whose answer never came (the daemon died meanwhile).
    unknown: usize,
    delivered: HashMap<Uuid, Vec<Delivered>>,
    executions: HashMap<Uuid, u32>,
}

impl History {
    /// A submit answered with `job_id`.
    pub fn submitted(&mut self, job_id: Uuid) {
        self.ok.push(job_id);
    }

    /// A submit refused with `error`.
    pub fn refused(&mut self, error: impl Into<String>) {
        self.refused.push(error.into());
    }

    /// A submit whose answer was lost.
    pub fn unknown(&mut self) {
        self.unknown += 1;
    }

    /// The client was handed `outcome` for `job_id`.
    pub fn delivered(&mut self, job_id: Uuid, outcome: Delivered) {
        self.delivered.entry(job_id).or_default().push(outcome);
    }

    /// A handler ran `job_id` once more.
    pub fn executed(&mut self, job_id: Uuid) {
        *self.executions.entry(job_id).or_default() += 1;
    }

    /// The ids of every acknowledged submit, in order.
    pub fn acknowledged(&self) -> &[Uuid] {
        &self.ok
    }

    /// The verdict.
    pub fn check(&self, scenario: &str) -> Summary {
        let mut s = Summary {
            scenario: scenario.to_owned(),
            submitted: self.ok.len() + self.refused.len() + self.unknown,
            failed: self.refused.len(),
            unknown: self.unknown,
            ..Summary::default()
        };
        let mut executions = Vec::new();
        for id in &self.ok {
            match self.delivered.get(id).map(Vec::as_slice) {
                None | Some([]) => s.lost += 1,
                Some(outcomes) => {
                    if outcomes.len() > 1 {
                        s.duplicated += 1;
                    }
                    match &outcomes[0] {
                        Delivered::Completed => s.completed += 1,
                        Delivered::Failed(_) => s.failed += 1,
                    }
                }
            }
            executions.push(self.executions.get(id).copied().unwrap_or(0));
        }
        s.executions_max = executions.iter().copied().max().unwrap_or(0);
        s.executions_mean = if executions.is_empty() {
            0.0
        } else {
            f64::from(executions.iter().sum::<u32>()) / executions.len() as f64
        };
        s.never_ran = executions.iter().filter(|&&n| n == 0).count();
        s
    }
}

/// One scenario's counts.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Its name.
    pub scenario: String,
    /// Submits made.
    pub submitted: usize,
    /// Jobs delivered as completed.
    pub completed: usize,
    /// Jobs that ended with an explicit error (refused submits included).
    pub failed: usize,
    /// Submits whose answer was lost with a killed process.
    pub unknown: usize,
    /// Jobs acknowledged but never delivered: must be 0.
    pub lost: usize,
    /// Jobs delivered more than once: must be 0.
    pub duplicated: usize,
    /// Executions per acknowledged job: mean.
    pub executions_mean: f64,
    /// ... and most.
    pub executions_max: u32,
    /// Acknowledged jobs no handler ran (failed before running, or lost).
    pub never_ran: usize,
}

impl Summary {
    /// The header of [`Summary`]'s table rows.
    pub const HEADER: &'static str = "scenario                                  submitted completed failed unknown lost duplicated executions/job (mean, max)";
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<41} {:>9} {:>9} {:>6} {:>7} {:>4} {:>10} {:.2}, {}",
            self.scenario,
            self.submitted,
            self.completed,
            self.failed,
            self.unknown,
            self.lost,
            self.duplicated,
            self.executions_mean,
            self.executions_max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_duplicated_and_executions_are_counted_per_acknowledged_job() {
        let mut h = History::default();
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            h.submitted(*id);
        }
        h.refused("queue full");
        h.unknown();
        h.delivered(ids[0], Delivered::Completed);
        h.delivered(ids[1], Delivered::Failed("bad input".into()));
        h.delivered(ids[2], Delivered::Completed);
        h.delivered(ids[2], Delivered::Completed);
        // ids[3] never delivered: lost.
        h.executed(ids[0]);
        h.executed(ids[2]);
        h.executed(ids[2]);
        h.executed(ids[3]);
        let s = h.check("example");
        assert_eq!(
            (
                s.submitted,
                s.completed,
                s.failed,
                s.unknown,
                s.lost,
                s.duplicated
            ),
            (6, 2, 2, 1, 1, 1)
        );
        assert_eq!((s.executions_max, s.never_ran), (2, 1));
        assert!((s.executions_mean - 1.0).abs() < 1e-9);
        assert!(s.to_string().starts_with("example"));
    }
}
