use std::collections::HashMap;

use jobmesh_wire::dc::{JobId, RejectReason};
use jobmesh_wire::{Capability, PeerId, Stats};

/// The working side's admission control: a job is accepted only for a
/// capability this peer runs, while a slot is free and the peer is not
/// draining. The slots are the worker's backpressure.
#[derive(Debug)]
pub struct WorkerSlots {
    capabilities: Vec<Capability>,
    slots: u32,
    running: HashMap<JobId, PeerId>,
    draining: bool,
    completed: u64,
    failed: u64,
}

impl WorkerSlots {
    /// A worker running `capabilities` with `slots` jobs at once.
    pub fn new(capabilities: Vec<Capability>, slots: u32) -> Self {
        Self {
            capabilities,
            slots,
            running: HashMap::new(),
            draining: false,
            completed: 0,
            failed: 0,
        }
    }

    /// Offers a job from `from`; on `Ok` a slot is taken until [`finish`](Self::finish).
    pub fn offer(
        &mut self,
        from: PeerId,
        job_id: JobId,
        capability: &Capability,
    ) -> Result<(), (RejectReason, String)> {
        if self.draining {
            return Err((RejectReason::Draining, "worker is shutting down".into()));
        }
        if !self.capabilities.contains(capability) {
            return Err((
                RejectReason::UnknownCapability,
                format!("this worker does not run \"{capability}\""),
            ));
        }
        if self.running.contains_key(&job_id) {
            return Err((
                RejectReason::BadInput,
                format!("job {job_id} is already running here"),
            ));
        }
        if self.running.len() >= self.slots as usize {
            return Err((
                RejectReason::Busy,
                format!("all {} slots are busy", self.slots),
            ));
        }
        self.running.insert(job_id, from);
        Ok(())
    }

    /// Frees the job's slot; returns who submitted it (None if unknown).
    pub fn finish(&mut self, job_id: &JobId, ok: bool) -> Option<PeerId> {
        let from = self.running.remove(job_id)?;
        if ok {
            self.completed += 1;
        } else {
            self.failed += 1;
        }
        Some(from)
    }

    /// Who submitted a running job.
    pub fn submitter(&self, job_id: &JobId) -> Option<PeerId> {
        self.running.get(job_id).copied()
    }

    /// Stop admitting jobs.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Stats to report to the pool (`queued` is the submitter side's to fill in).
    pub fn stats(&self) -> Stats {
        Stats {
            slots: self.slots,
            // Bounded by `slots`, itself a u32.
            running: u32::try_from(self.running.len()).unwrap_or(u32::MAX),
            queued: 0,
            completed: self.completed,
            failed: self.failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn echo() -> Capability {
        Capability::new("echo").expect("valid")
    }

    #[test]
    fn admits_up_to_slots_then_rejects_busy() {
        let from = PeerId::random();
        let mut w = WorkerSlots::new(vec![echo()], 2);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert!(w.offer(from, a, &echo()).is_ok());
        assert!(w.offer(from, b, &echo()).is_ok());
        assert_eq!(
            w.offer(from, c, &echo()).map_err(|e| e.0),
            Err(RejectReason::Busy)
        );
        assert_eq!(w.finish(&a, true), Some(from));
        assert_eq!(w.finish(&a, true), None, "finishing twice frees once");
        assert!(w.offer(from, c, &echo()).is_ok());
        assert_eq!(w.stats().running, 2);
        assert_eq!(w.stats().completed, 1);
    }

    #[test]
    fn refuses_unknown_capability_duplicates_and_when_draining() {
        let from = PeerId::random();
        let mut w = WorkerSlots::new(vec![echo()], 2);
        let other = Capability::new("ocr").expect("valid");
        let id = Uuid::new_v4();
        assert_eq!(
            w.offer(from, id, &other).map_err(|e| e.0),
            Err(RejectReason::UnknownCapability)
        );
        assert!(w.offer(from, id, &echo()).is_ok());
        assert_eq!(
            w.offer(from, id, &echo()).map_err(|e| e.0),
            Err(RejectReason::BadInput)
        );
        w.drain();
        assert_eq!(
            w.offer(from, Uuid::new_v4(), &echo()).map_err(|e| e.0),
            Err(RejectReason::Draining)
        );
        assert_eq!(w.finish(&id, false), Some(from));
        assert_eq!(w.stats().failed, 1);
    }
}
