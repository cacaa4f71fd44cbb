//! The pure registry of pools and their members: no I/O, no clock.
//!
//! Time comes in as `now: Instant` arguments and is compared with
//! `saturating_duration_since`, so tests drive it with `Instant + Duration`
//! arithmetic instead of sleeping. Every method is synchronous and cheap
//! (`O(log n)` per member, `O(pool)` for snapshots), so the server may call
//! it with its lock held.
//!
//! Invariants: a peer id is a member of at most one pool; a pool listed by
//! [`Registry::pools`] has at least one member; a pool never has more than
//! the configured maximum of members.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use jobmesh_wire::signal::{Hello, MISSED_HEARTBEATS};
use jobmesh_wire::{PeerId, PeerInfo, Stats};
use serde::Serialize;

/// Default most peers in one pool (`--max-peers-per-pool`).
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
    /// Its members, ordered by id.
    pub peers: Vec<PeerInfo>,
}

/// Pools, their members, each member's stats and when it was last heard from.
#[derive(Debug)]
pub struct Registry {
    max_per_pool: usize,
    members: BTreeMap<PeerId, Member>,
    /// Pool name → member ids. A pool is removed with its last member.
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

    /// Adds the peer of `hello` to its pool, heard from at `now`; returns the
    /// pool's other members (the welcome snapshot). The new member's stats
    /// start as `slots` from the hello and zeroes elsewhere.
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
        let snapshot = self.members(&hello.pool);
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

    /// Removes a peer; returns its pool if it was a member, `None` otherwise.
    pub fn leave(&mut self, id: &PeerId) -> Option<String> {
        let m = self.members.remove(id)?;
        self.unlist(id, &m.pool);
        Some(m.pool)
    }

    /// Replaces a member's stats; returns its pool, or `None` for a non-member.
    pub fn update_stats(&mut self, id: &PeerId, stats: Stats) -> Option<&str> {
        let m = self.members.get_mut(id)?;
        m.info.stats = stats;
        Some(&m.pool)
    }

    /// Records that the peer was heard from at `now`. Returns whether it is a
    /// member. Time never goes backwards: an older `now` is ignored.
    pub fn touch(&mut self, now: Instant, id: &PeerId) -> bool {
        match self.members.get_mut(id) {
            Some(m) => {
                m.last_seen = m.last_seen.max(now);
                true
            }
            None => false,
        }
    }

    /// Removes and returns (id, pool) of every member silent for more than
    /// [`MISSED_HEARTBEATS`] × `heartbeat` at `now`, ordered by id. Exactly
    /// that long is not yet too long.
    pub fn expire(&mut self, now: Instant, heartbeat: Duration) -> Vec<(PeerId, String)> {
        let limit = heartbeat.saturating_mul(MISSED_HEARTBEATS);
        let late: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(_, m)| now.saturating_duration_since(m.last_seen) > limit)
            .map(|(id, _)| *id)
            .collect();
        late.into_iter()
            .filter_map(|id| self.leave(&id).map(|pool| (id, pool)))
            .collect()
    }

    /// The peer's pool, if it is a member.
    pub fn pool_of(&self, id: &PeerId) -> Option<&str> {
        self.members.get(id).map(|m| m.pool.as_str())
    }

    /// Whether `a` and `b` are both members, of the same pool. This is the
    /// relay rule: a handshake goes only to a peer of the sender's pool.
    pub fn same_pool(&self, a: &PeerId, b: &PeerId) -> bool {
        matches!((self.pool_of(a), self.pool_of(b)), (Some(x), Some(y)) if x == y)
    }

    /// The ids of the members of `pool` other than `except`, ordered by id.
    pub fn others(&self, pool: &str, except: &PeerId) -> Vec<PeerId> {
        self.pools
            .get(pool)
            .map(|s| s.iter().filter(|id| *id != except).copied().collect())
            .unwrap_or_default()
    }

    /// The members of `pool` (empty for an unknown pool), ordered by id.
    pub fn members(&self, pool: &str) -> Vec<PeerInfo> {
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

    /// Every non-empty pool with its members, ordered by name (`GET /api/pools`).
    pub fn pools(&self) -> Vec<PoolSummary> {
        self.pools
            .keys()
            .map(|name| PoolSummary {
                name: name.clone(),
                peers: self.members(name),
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

    fn unlist(&mut self, id: &PeerId, pool: &str) {
        if let Some(set) = self.pools.get_mut(pool) {
            set.remove(id);
            if set.is_empty() {
                self.pools.remove(pool);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobmesh_wire::{Capability, PROTOCOL_VERSION};

    const HB: Duration = Duration::from_secs(5);
    const MS: Duration = Duration::from_millis(1);

    fn id(n: u128) -> PeerId {
        PeerId(uuid::Uuid::from_u128(n))
    }

    fn hello(n: u128, pool: &str) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            peer_id: id(n),
            name: format!("p{n}"),
            pool: pool.into(),
            capabilities: vec![Capability::new("echo").expect("valid capability")],
            slots: 3,
        }
    }

    fn ids(infos: &[PeerInfo]) -> Vec<PeerId> {
        infos.iter().map(|i| i.id).collect()
    }

    #[test]
    fn join_returns_the_others_and_starts_stats_from_the_hello() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        assert_eq!(r.join(t, &hello(1, "a")).expect("joins"), vec![]);
        let snap = r.join(t, &hello(2, "a")).expect("joins");
        assert_eq!(ids(&snap), vec![id(1)]);
        assert_eq!(snap[0].name, "p1");
        assert_eq!(
            snap[0].capabilities,
            vec![Capability::new("echo").expect("valid")]
        );
        assert_eq!(
            snap[0].stats,
            Stats {
                slots: 3,
                ..Stats::default()
            }
        );
        assert!(r.join(t, &hello(3, "b")).expect("joins").is_empty());
        assert_eq!(r.others("a", &id(1)), vec![id(2)]);
        assert_eq!(r.others("b", &id(3)), vec![]);
        assert_eq!(ids(&r.members("a")), vec![id(1), id(2)]);
        assert!(r.members("nope").is_empty());
        assert_eq!(r.pool_of(&id(3)), Some("b"));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn a_full_pool_is_refused_and_other_pools_are_not_affected() {
        let t = Instant::now();
        let mut r = Registry::new(2);
        r.join(t, &hello(1, "a")).expect("joins");
        r.join(t, &hello(2, "a")).expect("joins");
        let err = r.join(t, &hello(3, "a")).expect_err("pool a is full");
        assert_eq!(
            err,
            JoinError::PoolFull {
                pool: "a".into(),
                max: 2
            }
        );
        assert!(err.to_string().contains("full (2 peers)"), "{err}");
        assert_eq!(r.pool_of(&id(3)), None, "a refused peer is not a member");
        r.join(t, &hello(3, "b")).expect("another pool has room");
        // A departure makes room again.
        r.leave(&id(1));
        r.join(t, &hello(4, "a")).expect("room after a leave");
    }

    #[test]
    fn a_duplicate_live_peer_id_is_refused_even_in_another_pool() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        r.join(t, &hello(1, "a")).expect("joins");
        assert_eq!(r.join(t, &hello(1, "a")), Err(JoinError::Duplicate(id(1))));
        assert_eq!(r.join(t, &hello(1, "b")), Err(JoinError::Duplicate(id(1))));
        assert_eq!(r.pool_of(&id(1)), Some("a"));
        assert_eq!(r.len(), 1);
        // Once it has left, the id may join again.
        r.leave(&id(1));
        r.join(t, &hello(1, "b")).expect("rejoins");
    }

    #[test]
    fn a_zero_pool_limit_admits_nobody() {
        let mut r = Registry::new(0);
        assert!(matches!(
            r.join(Instant::now(), &hello(1, "a")),
            Err(JoinError::PoolFull { max: 0, .. })
        ));
        assert!(r.is_empty());
    }

    #[test]
    fn a_silent_peer_expires_after_three_intervals_and_not_before() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        r.join(t, &hello(1, "a")).expect("joins");
        assert!(r.expire(t, HB).is_empty());
        assert!(r.expire(t + HB, HB).is_empty());
        assert!(r.expire(t + HB * 2, HB).is_empty());
        assert!(
            r.expire(t + HB * 3, HB).is_empty(),
            "exactly 3 intervals is not yet late"
        );
        assert_eq!(r.pool_of(&id(1)), Some("a"));
        assert_eq!(r.expire(t + HB * 3 + MS, HB), vec![(id(1), "a".into())]);
        assert_eq!(r.pool_of(&id(1)), None, "expire removes the member");
        assert!(r.pools().is_empty());
        assert!(r.expire(t + HB * 10, HB).is_empty(), "expired only once");
    }

    #[test]
    fn touch_resets_the_silence() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        r.join(t, &hello(1, "a")).expect("joins");
        r.join(t, &hello(2, "b")).expect("joins");
        assert!(r.touch(t + HB * 2, &id(2)));
        assert_eq!(r.expire(t + HB * 3 + MS, HB), vec![(id(1), "a".into())]);
        assert!(
            r.expire(t + HB * 5, HB).is_empty(),
            "3 intervals after the touch"
        );
        assert!(r.touch(t + HB * 5, &id(2)));
        // A stale `now` does not move last_seen back.
        assert!(r.touch(t, &id(2)));
        assert!(r.expire(t + HB * 8, HB).is_empty());
        assert_eq!(r.expire(t + HB * 8 + MS, HB), vec![(id(2), "b".into())]);
        assert!(!r.touch(t + HB * 9, &id(2)), "touching a non-member");
        assert!(r.is_empty());
    }

    #[test]
    fn expire_takes_every_late_peer_of_every_pool_and_keeps_the_rest() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        for (n, pool) in [(1, "a"), (2, "a"), (3, "b"), (4, "b")] {
            r.join(t, &hello(n, pool)).expect("joins");
        }
        r.touch(t + HB, &id(2));
        let gone = r.expire(t + HB * 3 + MS, HB);
        assert_eq!(
            gone,
            vec![
                (id(1), "a".into()),
                (id(3), "b".into()),
                (id(4), "b".into())
            ]
        );
        let pools = r.pools();
        assert_eq!(pools.len(), 1, "pool b is gone with its last member");
        assert_eq!(pools[0].name, "a");
        assert_eq!(ids(&pools[0].peers), vec![id(2)]);
    }

    #[test]
    fn an_instant_before_the_join_is_not_silence() {
        let t = Instant::now() + HB * 10;
        let mut r = Registry::new(10);
        r.join(t, &hello(1, "a")).expect("joins");
        assert!(r.expire(t - HB * 5, HB).is_empty());
    }

    #[test]
    fn leave_of_an_unknown_peer_is_none_and_empty_pools_vanish() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        assert_eq!(r.leave(&PeerId::random()), None);
        r.join(t, &hello(1, "a")).expect("joins");
        r.join(t, &hello(2, "a")).expect("joins");
        assert_eq!(r.leave(&id(1)), Some("a".into()));
        assert_eq!(r.leave(&id(1)), None, "only once");
        assert_eq!(r.pools().len(), 1);
        assert_eq!(r.leave(&id(2)), Some("a".into()));
        assert!(r.pools().is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn relays_are_allowed_only_within_the_same_pool() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        r.join(t, &hello(1, "a")).expect("joins");
        r.join(t, &hello(2, "a")).expect("joins");
        r.join(t, &hello(3, "b")).expect("joins");
        assert!(r.same_pool(&id(1), &id(2)));
        assert!(r.same_pool(&id(2), &id(1)));
        assert!(!r.same_pool(&id(1), &id(3)));
        assert!(!r.same_pool(&id(1), &PeerId::random()));
        assert!(!r.same_pool(&PeerId::random(), &PeerId::random()));
        r.leave(&id(2));
        assert!(!r.same_pool(&id(1), &id(2)), "not after a leave");
    }

    #[test]
    fn stats_are_recorded_for_members_only_and_show_in_snapshots() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        r.join(t, &hello(1, "a")).expect("joins");
        let s = Stats {
            slots: 3,
            running: 2,
            seq: 7,
            ..Stats::default()
        };
        assert_eq!(r.update_stats(&id(1), s.clone()), Some("a"));
        assert_eq!(r.info(&id(1)).map(|i| &i.stats), Some(&s));
        assert_eq!(r.update_stats(&PeerId::random(), s.clone()), None);
        let snap = r.join(t, &hello(2, "a")).expect("joins");
        assert_eq!(
            snap[0].stats, s,
            "the welcome snapshot has the latest stats"
        );
        assert_eq!(r.pools()[0].peers[0].stats, s);
    }

    #[test]
    fn the_pool_summary_serialises_as_the_http_api_documents() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        r.join(t, &hello(1, "a")).expect("joins");
        let v = serde_json::to_value(r.pools()).expect("serialises");
        assert_eq!(v[0]["name"], "a");
        let peer = &v[0]["peers"][0];
        assert_eq!(peer["id"], id(1).to_string());
        assert_eq!(peer["name"], "p1");
        assert_eq!(peer["capabilities"], serde_json::json!(["echo"]));
        assert_eq!(peer["stats"]["slots"], 3);
    }
}
