//! The fault suite's checker, shared by the real fault suite (`jobmesh-testkit`)
//! and the simulator, in the style of Jepsen's queue checker: every submit
//! is logged as ok (with the job id), failed (with the error) or unknown
//! (the answer was lost with a killed process); every outcome a client is
//! handed is logged; every execution a handler makes is logged.
//! [`History::check`] turns that into the counts the promise is judged by:
//! lost (an ok submit that never got an outcome) and duplicated-delivered (a
//! job handed to its client more than once) must both be 0.

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

    /// The acknowledged jobs not delivered yet, in order.
    pub fn undelivered(&self) -> Vec<Uuid> {
        self.ok
            .iter()
            .filter(|id| !self.delivered.contains_key(id))
            .copied()
            .collect()
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

impl History {
    /// The errors of the jobs delivered as failed, with how many jobs had each.
    pub fn errors(&self) -> Vec<(String, usize)> {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for outcomes in self.delivered.values() {
            if let Some(Delivered::Failed(e)) = outcomes.first() {
                *counts.entry(e).or_default() += 1;
            }
        }
        counts.into_iter().map(|(e, n)| (e.to_owned(), n)).collect()
    }
}
