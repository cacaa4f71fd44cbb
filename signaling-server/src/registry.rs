//! The pure registry of pools and their members: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use jobmesh_wire::signal::{Hello, MISSED_HEARTBEATS};
use jobmesh_wire::{PeerId, PeerInfo, Stats};
use serde::Serialize;

/// Default most peers in one pool.
pub const MAX_PEERS_PER_POOL: usize = 1024;

/// Why a hello was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The pool has `max` members already.
    #[error("pool {pool:?} is full ({max} peers); use another pool or raise --max-peers-per-pool")]
    PoolFull {
        /// The pool.
        pool: String,
        /// Its limit.
        max: usize,
    },
    /// A live member already has this id.
    #[error(
        "peer id {0} is already connected; peer ids must be unique (a fresh v4 uuid per peer)"
    )]
    Duplicate(PeerId),
}

#[derive(Debug)]
struct Member {
    info: PeerInfo,
    pool: String,
    last_seen: Instant,
}

/// One pool as `GET /api/pools` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolSummary {
    /// Pool name.
    pub name: String,
    /// Its members.
    pub peers: Vec<PeerInfo>,
}

/// Pools, members, their stats and when each was last heard from.
#[derive(Debug)]
pub struct Registry {
    max_per_pool: usize,
    members: BTreeMap<PeerId, Member>,
    pools: BTreeMap<String, BTreeSet<PeerId>>,
}

impl Registry {
    /// An empty registry allowing `max_per_pool` members per pool.
    pub fn new(max_per_pool: usize) -> Self {
        Self {
            max_per_pool,
            members: BTreeMap::new(),
            pools: BTreeMap::new(),
        }
    }

    /// Adds the peer of `hello`; returns the other members (the welcome snapshot).
    pub fn join(&mut self, now: Instant, hello: &Hello) -> Result<Vec<PeerInfo>, JoinError> {
        if self.members.contains_key(&hello.peer_id) {
            return Err(JoinError::Duplicate(hello.peer_id));
        }
        let size = self.pools.get(&hello.pool).map_or(0, BTreeSet::len);
        if size >= self.max_per_pool {
            return Err(JoinError::PoolFull {
                pool: hello.pool.clone(),
                max: self.max_per_pool,
            });
        }
        let snapshot = self.members_of(&hello.pool);
        let info = PeerInfo {
            id: hello.peer_id,
            name: hello.name.clone(),
            capabilities: hello.capabilities.clone(),
            stats: Stats {
                slots: hello.slots,
                ..Stats::default()
            },
        };
        self.members.insert(
            hello.peer_id,
            Member {
                info,
                pool: hello.pool.clone(),
                last_seen: now,
            },
        );
        self.pools
            .entry(hello.pool.clone())
            .or_default()
            .insert(hello.peer_id);
        Ok(snapshot)
    }

    /// Removes a peer; returns its pool if it was a member.
    pub fn leave(&mut self, id: &PeerId) -> Option<String> {
        let m = self.members.remove(id)?;
        if let Some(set) = self.pools.get_mut(&m.pool) {
            set.remove(id);
            if set.is_empty() {
                self.pools.remove(&m.pool);
            }
        }
        Some(m.pool)
    }

    /// Records new stats; returns the peer's pool if it is a member.
    pub fn set_stats(&mut self, id: &PeerId, stats: Stats) -> Option<&str> {
        let m = self.members.get_mut(id)?;
        m.info.stats = stats;
        Some(&m.pool)
    }

    /// Records that the peer was heard from at `now`.
    pub fn touch(&mut self, now: Instant, id: &PeerId) {
        if let Some(m) = self.members.get_mut(id) {
            m.last_seen = now;
        }
    }

    /// Peers silent for more than `MISSED_HEARTBEATS` intervals at `now`.
    /// They stay members until [`leave`](Self::leave)d, so their departure is
    /// announced by the same path as any other.
    pub fn expired(&self, now: Instant, heartbeat: Duration) -> Vec<PeerId> {
        let limit = heartbeat * MISSED_HEARTBEATS;
        self.members
            .iter()
            .filter(|(_, m)| now.saturating_duration_since(m.last_seen) > limit)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The peer's pool.
    pub fn pool_of(&self, id: &PeerId) -> Option<&str> {
        self.members.get(id).map(|m| m.pool.as_str())
    }

    /// Whether two peers are members of the same pool.
    pub fn same_pool(&self, a: &PeerId, b: &PeerId) -> bool {
        matches!((self.pool_of(a), self.pool_of(b)), (Some(x), Some(y)) if x == y)
    }

    /// The members of `pool` other than `except`.
    pub fn others(&self, pool: &str, except: &PeerId) -> Vec<PeerId> {
        self.pools
            .get(pool)
            .map(|s| s.iter().filter(|id| *id != except).copied().collect())
            .unwrap_or_default()
    }

    /// The members of `pool`.
    fn members_of(&self, pool: &str) -> Vec<PeerInfo> {
        self.pools
            .get(pool)
            .map(|s| {
                s.iter()
                    .filter_map(|id| self.members.get(id).map(|m| m.info.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A member's public description.
    pub fn info(&self, id: &PeerId) -> Option<&PeerInfo> {
        self.members.get(id).map(|m| &m.info)
    }

    /// Every pool with its members.
    pub fn summary(&self) -> Vec<PoolSummary> {
        self.pools
            .keys()
            .map(|name| PoolSummary {
                name: name.clone(),
                peers: self.members_of(name),
            })
            .collect()
    }

    /// Number of members in all pools.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobmesh_wire::{Capability, PROTOCOL_VERSION};

    const HB: Duration = Duration::from_secs(5);

    fn hello(n: u128, pool: &str) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            peer_id: PeerId(uuid::Uuid::from_u128(n)),
            name: format!("p{n}"),
            pool: pool.into(),
            capabilities: vec![Capability::new("echo").expect("valid")],
            slots: 3,
        }
    }

    #[test]
    fn join_returns_the_others_and_starts_stats_from_the_hello() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        assert_eq!(r.join(t, &hello(1, "a")).expect("joins"), vec![]);
        let snap = r.join(t, &hello(2, "a")).expect("joins");
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].id, hello(1, "a").peer_id);
        assert_eq!(snap[0].stats.slots, 3);
        assert!(r.join(t, &hello(3, "b")).expect("joins").is_empty());
        assert_eq!(
            r.others("a", &hello(1, "a").peer_id),
            vec![hello(2, "a").peer_id]
        );
    }

    #[test]
    fn a_full_pool_and_a_duplicate_id_are_refused() {
        let t = Instant::now();
        let mut r = Registry::new(2);
        r.join(t, &hello(1, "a")).expect("joins");
        assert_eq!(
            r.join(t, &hello(1, "a")),
            Err(JoinError::Duplicate(hello(1, "a").peer_id))
        );
        r.join(t, &hello(2, "a")).expect("joins");
        assert!(matches!(
            r.join(t, &hello(3, "a")),
            Err(JoinError::PoolFull { max: 2, .. })
        ));
        // Other pools are unaffected.
        r.join(t, &hello(3, "b")).expect("joins");
    }

    #[test]
    fn a_silent_peer_expires_after_three_intervals_and_not_before() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        r.join(t, &hello(1, "a")).expect("joins");
        r.join(t, &hello(2, "a")).expect("joins");
        let one = hello(1, "a").peer_id;
        let two = hello(2, "a").peer_id;
        assert!(
            r.expired(t + HB * 3, HB).is_empty(),
            "exactly 3 intervals is not yet late"
        );
        r.touch(t + HB * 2, &two);
        assert_eq!(
            r.expired(t + HB * 3 + Duration::from_millis(1), HB),
            vec![one]
        );
        assert_eq!(r.expired(t + HB * 5, HB), vec![one]);
        assert_eq!(r.expired(t + HB * 6, HB), vec![one, two]);
        assert_eq!(r.leave(&one), Some("a".into()));
        assert_eq!(r.expired(t + HB * 6, HB), vec![two]);
    }

    #[test]
    fn leave_of_an_unknown_peer_is_none_and_empty_pools_vanish() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        assert_eq!(r.leave(&PeerId::random()), None);
        r.join(t, &hello(1, "a")).expect("joins");
        assert_eq!(r.summary().len(), 1);
        r.leave(&hello(1, "a").peer_id);
        assert!(r.summary().is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn relays_are_allowed_only_within_a_pool() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        r.join(t, &hello(1, "a")).expect("joins");
        r.join(t, &hello(2, "a")).expect("joins");
        r.join(t, &hello(3, "b")).expect("joins");
        let (one, two, three) = (
            hello(1, "a").peer_id,
            hello(2, "a").peer_id,
            hello(3, "b").peer_id,
        );
        assert!(r.same_pool(&one, &two));
        assert!(!r.same_pool(&one, &three));
        assert!(!r.same_pool(&one, &PeerId::random()));
    }

    #[test]
    fn stats_are_recorded_for_members_only() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        r.join(t, &hello(1, "a")).expect("joins");
        let one = hello(1, "a").peer_id;
        let s = Stats {
            slots: 3,
            running: 2,
            ..Stats::default()
        };
        assert_eq!(r.set_stats(&one, s.clone()), Some("a"));
        assert_eq!(r.info(&one).map(|i| &i.stats), Some(&s));
        assert_eq!(r.set_stats(&PeerId::random(), s), None);
    }
}
