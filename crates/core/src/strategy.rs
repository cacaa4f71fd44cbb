use jobmesh_wire::{Capability, PeerId};

/// A worker the dispatcher may send a job to: it advertises the capability,
/// has a free slot as far as this peer knows, and has not refused this job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The worker.
    pub id: PeerId,
    /// Its advertised slots (always > 0 for a candidate).
    pub slots: u32,
    /// Jobs believed running on it: the larger of its last broadcast `running`
    /// and this peer's own jobs in flight there.
    pub busy: u32,
}

/// How a submitter chooses among candidates. Implementations are pure: the
/// dispatcher hands them the candidates (sorted by id) and uses the answer.
/// Returning `None` (or an id not among the candidates) leaves the job queued.
pub trait Strategy: Send {
    /// Chooses a worker for a job needing `capability`.
    fn pick(&mut self, capability: &Capability, candidates: &[Candidate]) -> Option<PeerId>;
}

/// The default strategy: the lowest `busy / slots`, ties broken round-robin.
#[derive(Debug, Default)]
pub struct LeastLoaded {
    next: usize,
}

impl LeastLoaded {
    /// A fresh strategy.
    pub fn new() -> Self {
        Self::default()
    }

    /// A strategy whose first tie-break starts at `offset` (the daemon passes a
    /// random one, so short-lived submitters do not all pick the same worker).
    pub fn starting_at(offset: usize) -> Self {
        Self { next: offset }
    }
}

impl Strategy for LeastLoaded {
    fn pick(&mut self, _capability: &Capability, candidates: &[Candidate]) -> Option<PeerId> {
        // Compare busy/slots as fractions without floats: a/b < c/d ⇔ a·d < c·b.
        let load = |c: &Candidate| (u64::from(c.busy), u64::from(c.slots.max(1)));
        let least = candidates
            .iter()
            .map(load)
            .min_by(|(a, b), (c, d)| (a * d).cmp(&(c * b)))?;
        let tied: Vec<PeerId> = candidates
            .iter()
            .filter(|c| {
                let (a, b) = load(c);
                a * least.1 == least.0 * b
            })
            .map(|c| c.id)
            .collect();
        let pick = tied[self.next % tied.len()];
        self.next = self.next.wrapping_add(1);
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(n: u128, slots: u32, busy: u32) -> Candidate {
        Candidate {
            id: PeerId(uuid::Uuid::from_u128(n)),
            slots,
            busy,
        }
    }

    fn cap() -> Capability {
        Capability::new("echo").expect("valid")
    }

    #[test]
    fn picks_the_lowest_ratio() {
        let mut s = LeastLoaded::new();
        // 1/4 beats 1/2 and 3/8.
        let cs = [cand(1, 2, 1), cand(2, 4, 1), cand(3, 8, 3)];
        for _ in 0..5 {
            assert_eq!(s.pick(&cap(), &cs), Some(cs[1].id));
        }
    }

    #[test]
    fn ties_rotate() {
        let mut s = LeastLoaded::new();
        let cs = [cand(1, 2, 0), cand(2, 4, 0), cand(3, 1, 1)];
        let picks: Vec<_> = (0..4).filter_map(|_| s.pick(&cap(), &cs)).collect();
        assert_eq!(picks, vec![cs[0].id, cs[1].id, cs[0].id, cs[1].id]);
    }

    #[test]
    fn nothing_to_pick_from() {
        assert_eq!(LeastLoaded::new().pick(&cap(), &[]), None);
    }
}
