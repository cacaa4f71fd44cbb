//! Dispatch strategies: how a submitter chooses a worker among candidates.

use std::collections::HashMap;
use std::hash::Hasher;
use std::str::FromStr;

use jobmesh_wire::dc::JobId;
use jobmesh_wire::{Capability, PeerId};
use rand::RngCore;

/// A capable worker for a job: it advertises the capability, is alive as far
/// as this peer knows, and has not refused this job lately. It may be full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The worker (this peer itself when self-dispatch applies).
    pub id: PeerId,
    /// Its advertised slots (> 0).
    pub slots: u32,
    /// Jobs believed running on it: its last broadcast `running`, corrected
    /// by how this peer's own attempts there changed since that broadcast,
    /// and never less than this peer's own attempts there. For a remote
    /// worker, slots it claims free beyond what this peer has seen it
    /// answer count as busy (see `docs/security.md`).
    pub busy: u32,
}

impl Candidate {
    /// Whether it has a free slot.
    pub fn has_room(&self) -> bool {
        self.busy < self.slots
    }
}

/// What a strategy is asked.
#[derive(Debug, Clone, Copy)]
pub struct PickRequest<'a> {
    /// The job.
    pub job_id: JobId,
    /// Its capability.
    pub capability: &'a Capability,
    /// Its affinity key, if any.
    pub affinity: Option<&'a str>,
}

/// How a submitter chooses among candidates. Implementations are pure: the
/// dispatcher hands them the candidates (sorted by id) and a seeded RNG, and
/// uses the answer. A pick without room, or not among the candidates, or
/// `None`, leaves the job queued.
pub trait Strategy: Send {
    /// Chooses a worker.
    fn pick(
        &mut self,
        req: &PickRequest<'_>,
        candidates: &[Candidate],
        rng: &mut dyn RngCore,
    ) -> Option<PeerId>;
}

/// The built-in strategies by name, plus `custom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StrategyKind {
    /// Rotate through capable workers in id order.
    RoundRobin,
    /// Lowest busy/slots, ties rotate (the default).
    LeastLoaded,
    /// Uniformly random (seeded).
    Random,
    /// Same key → same worker while it is alive and has room (rendezvous hashing).
    Affinity,
    /// The library user's [`Strategy`].
    Custom,
}

impl StrategyKind {
    /// Every kind's name, for help texts.
    pub const NAMES: &'static str = "round-robin, least-loaded, random, affinity, custom";

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::RoundRobin => "round-robin",
            StrategyKind::LeastLoaded => "least-loaded",
            StrategyKind::Random => "random",
            StrategyKind::Affinity => "affinity",
            StrategyKind::Custom => "custom",
        }
    }
}

impl FromStr for StrategyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "round-robin" => StrategyKind::RoundRobin,
            "least-loaded" => StrategyKind::LeastLoaded,
            "random" => StrategyKind::Random,
            "affinity" => StrategyKind::Affinity,
            "custom" => StrategyKind::Custom,
            other => {
                return Err(format!(
                    "unknown strategy {other:?}; choose one of {}",
                    StrategyKind::NAMES
                ))
            }
        })
    }
}

/// Rotates through the capable workers with room, in id order, per capability.
#[derive(Debug, Default)]
pub struct RoundRobin {
    last: HashMap<Capability, PeerId>,
}

impl Strategy for RoundRobin {
    fn pick(
        &mut self,
        req: &PickRequest<'_>,
        candidates: &[Candidate],
        _rng: &mut dyn RngCore,
    ) -> Option<PeerId> {
        let free = || candidates.iter().filter(|c| c.has_room());
        let pick = match self.last.get(req.capability) {
            Some(last) => free().find(|c| c.id > *last).or_else(|| free().next()),
            None => free().next(),
        }?
        .id;
        self.last.insert(req.capability.clone(), pick);
        Some(pick)
    }
}

/// The lowest `busy / slots`, ties broken round-robin.
#[derive(Debug, Default)]
pub struct LeastLoaded {
    next: usize,
}

impl LeastLoaded {
    /// A strategy whose first tie-break starts at `offset` (the daemon passes a
    /// random one, so short-lived submitters do not all pick the same worker).
    pub fn starting_at(offset: usize) -> Self {
        Self { next: offset }
    }
}

impl Strategy for LeastLoaded {
    fn pick(
        &mut self,
        _req: &PickRequest<'_>,
        candidates: &[Candidate],
        _rng: &mut dyn RngCore,
    ) -> Option<PeerId> {
        // Compare busy/slots as fractions without floats: a/b < c/d ⇔ a·d < c·b.
        let load = |c: &Candidate| (u64::from(c.busy), u64::from(c.slots.max(1)));
        let free: Vec<&Candidate> = candidates.iter().filter(|c| c.has_room()).collect();
        let least = free
            .iter()
            .map(|c| load(c))
            .min_by(|(a, b), (c, d)| (a * d).cmp(&(c * b)))?;
        let tied: Vec<PeerId> = free
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

/// A uniformly random worker with room.
#[derive(Debug, Default)]
pub struct Random;

impl Strategy for Random {
    fn pick(
        &mut self,
        _req: &PickRequest<'_>,
        candidates: &[Candidate],
        rng: &mut dyn RngCore,
    ) -> Option<PeerId> {
        let free: Vec<PeerId> = candidates
            .iter()
            .filter(|c| c.has_room())
            .map(|c| c.id)
            .collect();
        if free.is_empty() {
            return None;
        }
        let i = (rng.next_u64() % free.len() as u64) as usize;
        Some(free[i])
    }
}

/// Rendezvous (highest-random-weight) hashing: a key always maps to the same
/// worker while that worker is a candidate with room, and only the keys of a
/// worker that leaves move. A full or missing top choice falls back to
/// [`LeastLoaded`]. Without a key, the capability name is the key.
#[derive(Debug, Default)]
pub struct Affinity {
    fallback: LeastLoaded,
}

impl Strategy for Affinity {
    fn pick(
        &mut self,
        req: &PickRequest<'_>,
        candidates: &[Candidate],
        rng: &mut dyn RngCore,
    ) -> Option<PeerId> {
        let key = req.affinity.unwrap_or(req.capability.as_str());
        let top = candidates
            .iter()
            .max_by_key(|c| (rendezvous_weight(key, &c.id), c.id))?;
        if top.has_room() {
            Some(top.id)
        } else {
            self.fallback.pick(req, candidates, rng)
        }
    }
}

/// FNV-1a (64-bit) over the key's bytes, a `0xff` (never in UTF-8, so the
/// key ends there) and the peer id's 16 bytes: stable across processes and
/// builds, so every submitter maps a key to the same worker. The bytes go to
/// `Hasher::write` directly (`Hash` impls would add length prefixes); the
/// `fnv` version is pinned, and the test below holds the values.
fn rendezvous_weight(key: &str, peer: &PeerId) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(key.as_bytes());
    h.write(&[0xff]);
    h.write(peer.0.as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cand(n: u128, slots: u32, busy: u32) -> Candidate {
        Candidate {
            id: PeerId(uuid::Uuid::from_u128(n)),
            slots,
            busy,
        }
    }

    fn req<'a>(cap: &'a Capability, affinity: Option<&'a str>) -> PickRequest<'a> {
        PickRequest {
            job_id: uuid::Uuid::nil(),
            capability: cap,
            affinity,
        }
    }

    fn echo() -> Capability {
        Capability::new("echo").expect("valid")
    }

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn least_loaded_picks_the_lowest_ratio_and_rotates_ties() {
        let mut s = LeastLoaded::default();
        let cs = [cand(1, 2, 1), cand(2, 4, 1), cand(3, 8, 3)];
        assert_eq!(s.pick(&req(&echo(), None), &cs, &mut rng()), Some(cs[1].id));
        let tied = [cand(1, 2, 0), cand(2, 4, 0), cand(3, 1, 1)];
        let picks: Vec<_> = (0..4)
            .filter_map(|_| s.pick(&req(&echo(), None), &tied, &mut rng()))
            .collect();
        assert_eq!(picks, vec![tied[1].id, tied[0].id, tied[1].id, tied[0].id]);
    }

    #[test]
    fn round_robin_rotates_in_id_order_and_skips_full_workers() {
        let mut s = RoundRobin::default();
        let cs = [cand(1, 1, 0), cand(2, 1, 1), cand(3, 1, 0)];
        let picks: Vec<_> = (0..4)
            .filter_map(|_| s.pick(&req(&echo(), None), &cs, &mut rng()))
            .collect();
        assert_eq!(picks, vec![cs[0].id, cs[2].id, cs[0].id, cs[2].id]);
        // Per capability: another capability starts from the beginning.
        let ocr = Capability::new("ocr").expect("valid");
        assert_eq!(s.pick(&req(&ocr, None), &cs, &mut rng()), Some(cs[0].id));
    }

    #[test]
    fn random_is_seeded_and_only_picks_workers_with_room() {
        let cs = [cand(1, 1, 0), cand(2, 1, 1), cand(3, 1, 0)];
        let run = |seed| {
            let mut r = rand::rngs::StdRng::seed_from_u64(seed);
            (0..50)
                .filter_map(|_| Random.pick(&req(&echo(), None), &cs, &mut r))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1), "same seed, same picks");
        let picks = run(1);
        assert!(picks.iter().all(|p| *p != cs[1].id));
        assert!(picks.contains(&cs[0].id) && picks.contains(&cs[2].id));
        assert_eq!(
            Random.pick(&req(&echo(), None), &[cand(1, 1, 1)], &mut rng()),
            None
        );
    }

    #[test]
    fn affinity_sticks_to_a_key_and_moves_only_when_its_worker_does() {
        let mut s = Affinity::default();
        let cs: Vec<Candidate> = (1..=5).map(|n| cand(n, 2, 0)).collect();
        let mut home = HashMap::new();
        for k in 0..40 {
            let key = format!("key-{k}");
            let a = s.pick(&req(&echo(), Some(&key)), &cs, &mut rng());
            let b = s.pick(&req(&echo(), Some(&key)), &cs, &mut rng());
            assert_eq!(a, b, "a key always maps to the same worker");
            home.insert(key, a.expect("a pick"));
        }
        let spread: std::collections::HashSet<_> = home.values().collect();
        assert!(spread.len() >= 3, "keys spread over workers: {spread:?}");
        // Worker 3 leaves: only its keys move.
        let gone = cs[2].id;
        let rest: Vec<Candidate> = cs.iter().copied().filter(|c| c.id != gone).collect();
        for (key, was) in &home {
            let now = s.pick(&req(&echo(), Some(key)), &rest, &mut rng());
            if *was != gone {
                assert_eq!(now, Some(*was), "{key} stayed");
            } else {
                assert_ne!(now, Some(gone));
            }
        }
    }

    /// The weights are part of the protocol in effect: every submitter, of
    /// any version, must map a key to the same worker. These values were
    /// computed by the hand-written FNV-1a the `fnv` crate replaced; a change of hash
    /// (or of the `fnv` crate's output) fails here.
    #[test]
    fn rendezvous_weights_and_choices_never_change() {
        let peer = |n: u128| PeerId(uuid::Uuid::from_u128(n));
        assert_eq!(rendezvous_weight("", &peer(0)), 0x0c2d_5ba4_c6d6_16ee);
        assert_eq!(rendezvous_weight("echo", &peer(1)), 0x1e6b_4fa2_b888_28ee);
        assert_eq!(rendezvous_weight("key-0", &peer(1)), 0x270a_604d_1722_d045);
        assert_eq!(rendezvous_weight("key-0", &peer(2)), 0x270a_5d4d_1722_cb2c);
        assert_eq!(rendezvous_weight("key-0", &peer(3)), 0x270a_5e4d_1722_ccdf);
        assert_eq!(
            rendezvous_weight("video-42", &peer(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)),
            0x569a_c1e9_0ba2_f17e
        );
        let mut s = Affinity::default();
        let cs: Vec<Candidate> = (1..=5).map(|n| cand(n, 2, 0)).collect();
        let homes: Vec<u128> = (0..10)
            .map(|k| {
                let key = format!("key-{k}");
                let home = s.pick(&req(&echo(), Some(&key)), &cs, &mut rng());
                home.expect("a pick").0.as_u128()
            })
            .collect();
        assert_eq!(homes, [1, 4, 3, 1, 5, 2, 5, 4, 1, 4]);
    }

    #[test]
    fn affinity_falls_back_when_its_worker_is_full() {
        let mut s = Affinity::default();
        let cs: Vec<Candidate> = (1..=3).map(|n| cand(n, 1, 0)).collect();
        let home = s
            .pick(&req(&echo(), Some("k")), &cs, &mut rng())
            .expect("pick");
        let full: Vec<Candidate> = cs
            .iter()
            .map(|c| {
                if c.id == home {
                    Candidate { busy: 1, ..*c }
                } else {
                    *c
                }
            })
            .collect();
        let other = s
            .pick(&req(&echo(), Some("k")), &full, &mut rng())
            .expect("pick");
        assert_ne!(other, home);
    }

    #[test]
    fn strategy_names_parse_and_unknown_ones_are_named() {
        for k in [
            StrategyKind::RoundRobin,
            StrategyKind::LeastLoaded,
            StrategyKind::Random,
            StrategyKind::Affinity,
            StrategyKind::Custom,
        ] {
            assert_eq!(k.name().parse::<StrategyKind>(), Ok(k));
        }
        let err = "fastest".parse::<StrategyKind>().expect_err("unknown");
        assert!(
            err.contains("fastest") && err.contains("round-robin"),
            "{err}"
        );
    }
}
