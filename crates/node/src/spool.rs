//! The disk budget for blobs received from other peers: what a job's
//! announcement may claim, per job, per sending peer and in total, before a
//! byte of it arrives.
//!
//! A blob announcement says how large each blob is, and a receiver refuses
//! any chunk past it, so the announced sizes bound what the spool can hold.
//! They are reserved when the job (or the result's download) is admitted and
//! released when its blobs are no longer needed: after the handler returned
//! or the transfer failed (inputs), when the result was handed over or
//! dropped (outputs). A job over a budget is refused before it starts.

use std::collections::HashMap;

use jobmesh_wire::blob::{BlobMeta, Direction};
use jobmesh_wire::dc::JobId;
use jobmesh_wire::PeerId;

const GIB: u64 = 1024 * 1024 * 1024;

/// How much blob data received from other peers the spool may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// One job's blobs, in bytes (default 4 GiB). A larger job is refused
    /// by this worker for good.
    pub per_job: u64,
    /// Blobs from one peer at once (default 8 GiB): no member fills the
    /// disk alone. Past it, its jobs are refused as busy.
    pub per_peer: u64,
    /// All received blobs at once (default 16 GiB). Past it, jobs are
    /// refused as busy and results with blobs fail.
    pub total: u64,
}

impl SpoolLimits {
    /// A total budget, of which one peer may hold half and one job a quarter.
    pub fn from_total(total: u64) -> Self {
        Self {
            per_job: total / 4,
            per_peer: total / 2,
            total,
        }
    }
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self::from_total(16 * GIB)
    }
}

/// Which budget a set of blobs would break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OverBudget {
    #[error("its blobs are {bytes} bytes, over this peer's limit of {limit} per job")]
    Job { bytes: u64, limit: u64 },
    #[error("this peer already holds {held} bytes of blobs from that peer; {bytes} more would pass its limit of {limit} per peer")]
    Peer { bytes: u64, held: u64, limit: u64 },
    #[error("this peer's spool already holds {held} bytes of received blobs; {bytes} more would pass its limit of {limit}")]
    Total { bytes: u64, held: u64, limit: u64 },
}

impl OverBudget {
    /// Whether the same blobs could fit later (once others are released).
    pub(crate) fn is_temporary(&self) -> bool {
        !matches!(self, OverBudget::Job { .. })
    }
}

/// The bytes reserved now, by transfer.
#[derive(Debug, Default)]
pub(crate) struct SpoolBudget {
    limits: SpoolLimits,
    held: HashMap<(JobId, Direction), (PeerId, u64)>,
    by_peer: HashMap<PeerId, u64>,
    total: u64,
}

impl SpoolBudget {
    pub(crate) fn new(limits: SpoolLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Whether blobs of these sizes from `from` fit now.
    pub(crate) fn check(&self, from: PeerId, blobs: &[BlobMeta]) -> Result<(), OverBudget> {
        let bytes = total(blobs);
        let l = self.limits;
        if bytes > l.per_job {
            return Err(OverBudget::Job {
                bytes,
                limit: l.per_job,
            });
        }
        let held = self.by_peer.get(&from).copied().unwrap_or(0);
        if held.saturating_add(bytes) > l.per_peer {
            return Err(OverBudget::Peer {
                bytes,
                held,
                limit: l.per_peer,
            });
        }
        if self.total.saturating_add(bytes) > l.total {
            return Err(OverBudget::Total {
                bytes,
                held: self.total,
                limit: l.total,
            });
        }
        Ok(())
    }

    /// Checks, then reserves the blobs of one transfer (replacing what the
    /// same job and direction held).
    pub(crate) fn reserve(
        &mut self,
        job_id: JobId,
        direction: Direction,
        from: PeerId,
        blobs: &[BlobMeta],
    ) -> Result<(), OverBudget> {
        self.release(job_id, direction);
        self.check(from, blobs)?;
        let bytes = total(blobs);
        self.held.insert((job_id, direction), (from, bytes));
        *self.by_peer.entry(from).or_default() += bytes;
        self.total += bytes;
        Ok(())
    }

    /// Gives back what one transfer held (nothing if it held nothing).
    pub(crate) fn release(&mut self, job_id: JobId, direction: Direction) {
        let Some((from, bytes)) = self.held.remove(&(job_id, direction)) else {
            return;
        };
        self.total -= bytes;
        if let Some(held) = self.by_peer.get_mut(&from) {
            *held -= bytes;
            if *held == 0 {
                self.by_peer.remove(&from);
            }
        }
    }

    /// Bytes reserved now, in total.
    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.total
    }
}

fn total(blobs: &[BlobMeta]) -> u64 {
    blobs.iter().fold(0u64, |sum, b| sum.saturating_add(b.size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(sizes: &[u64]) -> Vec<BlobMeta> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| BlobMeta {
                index: i as u16,
                size,
                blake3: String::new(),
                name: None,
            })
            .collect()
    }

    fn limits() -> SpoolLimits {
        SpoolLimits {
            per_job: 100,
            per_peer: 150,
            total: 200,
        }
    }

    #[test]
    fn each_budget_refuses_what_passes_it_and_release_gives_it_back() {
        let mut b = SpoolBudget::new(limits());
        let (p, q, r) = (PeerId::random(), PeerId::random(), PeerId::random());
        let (j1, j2, j3, j4) = (
            JobId::new_v4(),
            JobId::new_v4(),
            JobId::new_v4(),
            JobId::new_v4(),
        );
        let over = b.check(p, &blobs(&[60, 41])).expect_err("over");
        assert!(matches!(over, OverBudget::Job { bytes: 101, .. }) && !over.is_temporary());
        b.reserve(j1, Direction::Input, p, &blobs(&[100]))
            .expect("fits");
        let over = b
            .reserve(j2, Direction::Input, p, &blobs(&[51]))
            .expect_err("over");
        assert!(matches!(over, OverBudget::Peer { held: 100, .. }) && over.is_temporary());
        b.reserve(j2, Direction::Input, q, &blobs(&[100]))
            .expect("fits");
        let over = b
            .reserve(j3, Direction::Output, r, &blobs(&[1]))
            .expect_err("over");
        assert!(matches!(over, OverBudget::Total { held: 200, .. }) && over.is_temporary());
        // A refused reservation holds nothing.
        assert_eq!(b.held(), 200);
        b.release(j1, Direction::Input);
        b.release(j1, Direction::Input);
        b.reserve(j3, Direction::Output, r, &blobs(&[100]))
            .expect("fits");
        assert_eq!(b.held(), 200);
        // The same transfer reserved again replaces what it held.
        b.reserve(j3, Direction::Output, r, &blobs(&[10]))
            .expect("fits");
        assert_eq!(b.held(), 110);
        b.release(j2, Direction::Input);
        b.release(j3, Direction::Output);
        b.release(j4, Direction::Input);
        assert_eq!(b.held(), 0);
        assert!(b.by_peer.is_empty());
    }

    #[test]
    fn announced_sizes_cannot_overflow_the_sum() {
        let b = SpoolBudget::new(limits());
        let over = b
            .check(PeerId::random(), &blobs(&[u64::MAX, u64::MAX]))
            .expect_err("over");
        assert_eq!(
            over,
            OverBudget::Job {
                bytes: u64::MAX,
                limit: 100
            }
        );
    }
}
