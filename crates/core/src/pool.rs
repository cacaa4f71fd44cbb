use std::collections::{BTreeMap, BTreeSet};

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
    /// Between a `reset` page and the next `synced` one: the members the
    /// server has described again since the reset. The others are dropped
    /// when the view is synced.
    confirming: Option<BTreeSet<PeerId>>,
    /// Whether the view is the whole pool as the server last held it.
    synced: bool,
}

/// What a [`PoolView::apply`] changed, for the daemon's bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolChange {
    /// Peers that joined or whose description or stats changed, in page order.
    pub updated: Vec<PeerId>,
    /// Peers that are gone.
    pub left: Vec<PeerId>,
}

impl PoolChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.updated.is_empty() && self.left.is_empty()
    }
}

impl PoolView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one message from the signal-server.
    pub fn apply(&mut self, msg: &ServerMsg) -> PoolChange {
        let mut change = PoolChange::default();
        let ServerMsg::View {
            reset,
            left,
            peers,
            synced,
        } = msg
        else {
            if let ServerMsg::Welcome { .. } = msg {
                // A new session: the view is stale until its first page syncs.
                self.synced = false;
            }
            return change;
        };
        if *reset {
            self.confirming = Some(BTreeSet::new());
        }
        for id in left {
            if self.peers.remove(id).is_some() {
                change.left.push(*id);
            }
        }
        for peer in peers {
            if let Some(seen) = &mut self.confirming {
                seen.insert(peer.id);
            }
            match self.peers.get_mut(&peer.id) {
                Some(old) if old == peer => continue,
                Some(old) => {
                    // Stats older than what a result already told us are
                    // kept back; the rest of the description is taken.
                    let stats = if peer.stats.seq < old.stats.seq {
                        old.stats.clone()
                    } else {
                        peer.stats.clone()
                    };
                    old.clone_from(peer);
                    old.stats = stats;
                }
                None => {
                    self.peers.insert(peer.id, peer.clone());
                }
            }
            change.updated.push(peer.id);
        }
        self.synced = *synced;
        if *synced {
            if let Some(seen) = self.confirming.take() {
                let gone: Vec<PeerId> = self
                    .peers
                    .keys()
                    .filter(|id| !seen.contains(id))
                    .copied()
                    .collect();
                for id in gone {
                    self.peers.remove(&id);
                    change.left.push(id);
                }
            }
        }
        change
    }

    /// Whether the view is the whole pool as the server last described it
    /// (false from a welcome until its pages are in).
    pub fn is_synced(&self) -> bool {
        self.synced
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

    fn page(reset: bool, left: &[&PeerInfo], peers: &[PeerInfo], synced: bool) -> ServerMsg {
        ServerMsg::View {
            reset,
            left: left.iter().map(|p| p.id).collect(),
            peers: peers.to_vec(),
            synced,
        }
    }

    #[test]
    fn a_reset_replaces_the_view_once_synced_and_reports_who_is_gone() {
        let mut v = PoolView::new();
        v.apply(&page(true, &[], &[info(1, &["echo"]), info(2, &[])], true));
        assert!(v.is_synced());
        let welcome = ServerMsg::Welcome {
            pool: "p".into(),
            heartbeat_ms: 1,
            ice_servers: Vec::new(),
        };
        assert!(v.apply(&welcome).is_empty());
        assert!(!v.is_synced());
        // Page 1 of the new session: 1 is not described yet, so nothing is gone.
        let change = v.apply(&page(true, &[], &[info(2, &[])], false));
        assert!(change.is_empty(), "{change:?}");
        assert_eq!(v.len(), 2);
        let change = v.apply(&page(false, &[], &[info(3, &["echo"])], true));
        assert_eq!(
            change,
            PoolChange {
                updated: vec![info(3, &[]).id],
                left: vec![info(1, &[]).id],
            }
        );
        assert_eq!(v.len(), 2);
        assert!(v.is_synced());
        assert!(v.anyone_can(&Capability::new("echo").expect("valid")));
    }

    #[test]
    fn pages_upsert_and_remove_and_unknown_or_unchanged_peers_change_nothing() {
        let mut v = PoolView::new();
        let p = info(1, &["echo"]);
        assert_eq!(
            v.apply(&page(false, &[], std::slice::from_ref(&p), true))
                .updated,
            vec![p.id]
        );
        assert!(v
            .apply(&page(false, &[], std::slice::from_ref(&p), true))
            .is_empty());
        let mut busy = p.clone();
        busy.stats = Stats {
            slots: 4,
            running: 2,
            seq: 5,
            ..Stats::default()
        };
        assert_eq!(
            v.apply(&page(false, &[], std::slice::from_ref(&busy), true))
                .updated,
            vec![p.id]
        );
        assert_eq!(v.get(&p.id).map(|p| &p.stats), Some(&busy.stats));
        // Older stats (a result already told us seq 5) are kept back.
        let mut stale = busy.clone();
        stale.stats.seq = 4;
        stale.stats.running = 0;
        stale.name = "renamed".into();
        v.apply(&page(false, &[], &[stale], true));
        assert_eq!(v.get(&p.id).map(|p| p.stats.running), Some(2));
        assert_eq!(v.get(&p.id).map(|p| p.name.as_str()), Some("renamed"));
        let stranger = info(9, &[]);
        assert!(v.apply(&page(false, &[&stranger], &[], true)).is_empty());
        assert_eq!(v.apply(&page(false, &[&p], &[], true)).left, vec![p.id]);
        assert!(v.apply(&page(false, &[&p], &[], true)).is_empty());
        assert!(v.is_empty());
    }
}
