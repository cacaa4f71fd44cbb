//! What this peer has seen of each worker, weighed against what the worker
//! claims.
//!
//! A worker's stats are claims: one advertising thousands of free slots
//! would otherwise be offered every job. So a submitter keeps, per worker,
//! a window of attempts it may have in flight there, whatever the claim:
//!
//! * It starts at [`INITIAL_WINDOW`].
//! * An attempt the worker answered (a result, of any outcome) proves the
//!   concurrency it ran at: the window becomes at least twice the largest
//!   number of this peer's attempts in flight there at such an answer.
//! * An attempt it lost or let time out, or a refusal of a capability it
//!   advertised, halves the window (down to 1); each answer undoes one
//!   halving.
//!
//! An honest worker's window grows as fast as it answers and never limits
//! it below its slots for long; a worker that takes jobs and never answers
//! holds at most the window's few attempts, each until its timeout, and
//! fewer after each one. A record goes when its worker leaves the pool view.

use std::collections::HashMap;

use jobmesh_wire::PeerId;

/// Attempts this peer sends a worker it has not seen answer yet.
pub(crate) const INITIAL_WINDOW: u32 = 16;
/// Halvings a window takes at most (then it is 1).
const MAX_PENALTY: u32 = 16;

#[derive(Debug, Default, Clone, Copy)]
struct Record {
    /// The most attempts in flight there at an answered attempt.
    proven: u32,
    /// Halvings for losses and time-outs not yet undone by answers.
    penalty: u32,
}

/// The records of every worker this peer has sent attempts to.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    records: HashMap<PeerId, Record>,
}

impl Observed {
    /// How many attempts of this peer may be in flight at `worker`.
    pub(crate) fn window(&self, worker: &PeerId) -> u32 {
        let r = self.records.get(worker).copied().unwrap_or_default();
        let base = INITIAL_WINDOW.max(r.proven.saturating_mul(2));
        (base >> r.penalty).max(1)
    }

    /// `worker` answered an attempt while `in_flight` of ours were there
    /// (that one included).
    pub(crate) fn answered(&mut self, worker: PeerId, in_flight: u32) {
        let r = self.records.entry(worker).or_default();
        r.proven = r.proven.max(in_flight);
        r.penalty = r.penalty.saturating_sub(1);
    }

    /// `worker` lost an attempt, let it time out, or refused a capability
    /// it advertises.
    pub(crate) fn failed(&mut self, worker: PeerId) {
        let r = self.records.entry(worker).or_default();
        r.penalty = (r.penalty + 1).min(MAX_PENALTY);
    }

    /// `worker` left the pool view.
    pub(crate) fn forget(&mut self, worker: &PeerId) {
        self.records.remove(worker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_widen_the_window_and_failures_halve_it() {
        let mut o = Observed::default();
        let w = PeerId::random();
        assert_eq!(o.window(&w), INITIAL_WINDOW);
        o.answered(w, 12);
        assert_eq!(o.window(&w), 24, "twice what it proved");
        o.answered(w, 3);
        assert_eq!(o.window(&w), 24, "the most it proved stands");
        o.failed(w);
        o.failed(w);
        assert_eq!(o.window(&w), 6);
        o.answered(w, 1);
        assert_eq!(o.window(&w), 12, "an answer undoes a halving");
        for _ in 0..40 {
            o.failed(w);
        }
        assert_eq!(o.window(&w), 1, "never closed entirely");
        o.forget(&w);
        assert_eq!(o.window(&w), INITIAL_WINDOW);
        o.answered(w, u32::MAX);
        assert_eq!(o.window(&w), u32::MAX);
    }
}
