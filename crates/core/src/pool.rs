use std::collections::BTreeMap;

use jobmesh_wire::dc::Load;
use jobmesh_wire::signal::ServerMsg;
use jobmesh_wire::{Capability, PeerId, PeerInfo};

/// The live peer list, as the signal-server last described it.
///
/// Kept in a `BTreeMap` so iteration order (and so round-robin and tie-breaks)
/// is deterministic.
#[derive(Debug, Default, Clone)]
pub struct PoolView {
    peers: BTreeMap<PeerId, PeerInfo>,
}

/// What a [`PoolView::apply`] changed, for the daemon's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolChange {
    /// The whole view was replaced (welcome after a (re)connect); these peers
    /// were in the old view and are not in the new one.
    Replaced {
        /// Peers that are gone.
        gone: Vec<PeerId>,
    },
    /// A peer joined.
    Joined(PeerId),
    /// A peer left.
    Left(PeerId),
    /// A peer's stats changed.
    Stats(PeerId),
    /// The message was not about the pool.
    None,
}

impl PoolView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one message from the signal-server.
    pub fn apply(&mut self, msg: &ServerMsg) -> PoolChange {
        match msg {
            ServerMsg::Welcome { peers, .. } => {
                let new: BTreeMap<PeerId, PeerInfo> =
                    peers.iter().map(|p| (p.id, p.clone())).collect();
                let gone = self
                    .peers
                    .keys()
                    .filter(|id| !new.contains_key(id))
                    .copied()
                    .collect();
                self.peers = new;
                PoolChange::Replaced { gone }
            }
            ServerMsg::PeerJoined { peer } => {
                self.peers.insert(peer.id, peer.clone());
                PoolChange::Joined(peer.id)
            }
            ServerMsg::PeerLeft { peer_id } => {
                if self.peers.remove(peer_id).is_some() {
                    PoolChange::Left(*peer_id)
                } else {
                    PoolChange::None
                }
            }
            ServerMsg::StatsChanged { peer_id, stats } => match self.peers.get_mut(peer_id) {
                // Older than what a result already told us: ignore.
                Some(p) if stats.seq < p.stats.seq => PoolChange::None,
                Some(p) => {
                    p.stats = stats.clone();
                    PoolChange::Stats(*peer_id)
                }
                None => PoolChange::None,
            },
            ServerMsg::Relayed { .. } | ServerMsg::Error { .. } => PoolChange::None,
        }
    }

    /// Applies a load report piggybacked on a result; `true` if it was newer
    /// than what the view had.
    pub fn apply_load(&mut self, id: &PeerId, load: &Load) -> bool {
        match self.peers.get_mut(id) {
            Some(p) if load.seq > p.stats.seq => {
                p.stats.running = load.running;
                p.stats.slots = load.slots;
                p.stats.seq = load.seq;
                true
            }
            _ => false,
        }
    }

    /// One peer.
    pub fn get(&self, id: &PeerId) -> Option<&PeerInfo> {
        self.peers.get(id)
    }

    /// Every peer, in id order.
    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.values()
    }

    /// Whether any peer advertises `cap`.
    pub fn anyone_can(&self, cap: &Capability) -> bool {
        self.peers.values().any(|p| p.capabilities.contains(cap))
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobmesh_wire::Stats;

    fn info(n: u128, caps: &[&str]) -> PeerInfo {
        PeerInfo {
            id: PeerId(uuid::Uuid::from_u128(n)),
            name: format!("p{n}"),
            capabilities: caps
                .iter()
                .map(|c| Capability::new(c).expect("valid"))
                .collect(),
            stats: Stats::default(),
        }
    }

    #[test]
    fn welcome_replaces_and_reports_who_is_gone() {
        let mut v = PoolView::new();
        v.apply(&ServerMsg::PeerJoined {
            peer: info(1, &["echo"]),
        });
        v.apply(&ServerMsg::PeerJoined { peer: info(2, &[]) });
        let change = v.apply(&ServerMsg::Welcome {
            pool: "p".into(),
            peers: vec![info(2, &[]), info(3, &["echo"])],
            heartbeat_ms: 1,
        });
        assert_eq!(
            change,
            PoolChange::Replaced {
                gone: vec![info(1, &[]).id]
            }
        );
        assert_eq!(v.len(), 2);
        assert!(v.anyone_can(&Capability::new("echo").expect("valid")));
    }

    #[test]
    fn deltas_update_and_unknown_peers_are_ignored() {
        let mut v = PoolView::new();
        let p = info(1, &["echo"]);
        assert_eq!(
            v.apply(&ServerMsg::PeerJoined { peer: p.clone() }),
            PoolChange::Joined(p.id)
        );
        let stats = Stats {
            slots: 4,
            running: 2,
            ..Stats::default()
        };
        assert_eq!(
            v.apply(&ServerMsg::StatsChanged {
                peer_id: p.id,
                stats: stats.clone()
            }),
            PoolChange::Stats(p.id)
        );
        assert_eq!(v.get(&p.id).map(|p| &p.stats), Some(&stats));
        let stranger = info(9, &[]).id;
        assert_eq!(
            v.apply(&ServerMsg::StatsChanged {
                peer_id: stranger,
                stats
            }),
            PoolChange::None
        );
        assert_eq!(
            v.apply(&ServerMsg::PeerLeft { peer_id: p.id }),
            PoolChange::Left(p.id)
        );
        assert_eq!(
            v.apply(&ServerMsg::PeerLeft { peer_id: p.id }),
            PoolChange::None
        );
        assert!(v.is_empty());
    }
}
