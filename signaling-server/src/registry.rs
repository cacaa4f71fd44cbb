//! The pure registry of pools and their members: no I/O, no clock.
//!
//! Time comes in as `now: Instant` arguments and is compared with
//! `saturating_duration_since`, so tests drive it with `Instant + Duration`
//! arithmetic instead of sleeping. Every method is synchronous and cheap
//! (`O(log n)` per member, a page's worth of work for [`Registry::page`]), so
//! the server may call it with its lock held.
//!
//! # The versioned view
//!
//! Every change (a join, new stats, a departure) takes the next value of one
//! registry-wide version counter. A pool keeps each member once, under the
//! version of its latest change, plus its recent departures by version. A
//! client's whole state is a cursor: the version up to which it has been told
//! everything. Catching up is reading the pool from the cursor on
//! ([`Registry::page`]), so what a slow client gets is each changed member
//! once, as it is now, however often it changed, and the server keeps no
//! per-client backlog: memory is O(members + [`MAX_DEPARTURES`]) per pool
//! whatever the clients do. Each member is kept JSON-encoded, so a page is
//! encoded by copying, once per client and page, not per change.
//!
//! A client may ask for a filtered view (`view` in its hello: the members
//! offering one of some capabilities). Its pages skip the others; a member
//! whose capabilities changed after the client's cursor and no longer
//! match is sent as departed (it may have matched before).
//!
//! Departures are kept up to [`MAX_DEPARTURES`] per pool; a client whose
//! cursor is older than the oldest forgotten one is sent the pool afresh
//! (`reset`), as is a new client (cursor 0).
//!
//! # Clustered
//!
//! With other servers ([`crate::cluster`]), the registry also holds their
//! members (`origin`: the server that owns each), which clients see like
//! local ones; only their owner changes them ([`Registry::apply_remote`]),
//! and they never expire here (their server's silence removes them). Every
//! change to a local member is also queued for the cluster
//! ([`Registry::take_local_changes`]). A peer that moves here from another
//! server replaces the entry that server gave it.
//!
//! Invariants: a peer id is a member of at most one pool; a pool listed by
//! [`Registry::pools`] has at least one member; a pool never has more than
//! the configured maximum of members; a member's entry is newer than every
//! departure recorded for its id.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::{Duration, Instant};

use jobmesh_wire::signal::{Join, MISSED_HEARTBEATS};

use crate::cluster::{Change, ServerId};
use jobmesh_wire::{Capability, PeerId, PeerInfo, Stats};
use serde::Serialize;
use serde_json::value::RawValue;

/// Default most peers in one pool (`--max-peers-per-pool`).
pub const MAX_PEERS_PER_POOL: usize = 1024;
/// Departures a pool remembers for clients that are behind. Past this the
/// oldest is forgotten, and a client that had not yet been told about it is
/// sent the whole pool again instead.
pub const MAX_DEPARTURES: usize = 4096;

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
    /// Another live member of the pool has this name.
    #[error("pool {pool:?} already has a live member named {name:?} (peer {holder}): names are how people tell peers apart; start this one with another --name, or stop that one (a peer that vanished is forgotten after 3 missed heartbeats)")]
    NameTaken {
        /// The pool.
        pool: String,
        /// The name.
        name: String,
        /// Who has it.
        holder: PeerId,
    },
}

/// Local changes the cluster has not taken yet, at most; past it they are
/// dropped and [`Registry::take_local_changes`] says so (the cluster then
/// has the other servers ask for a snapshot).
pub(crate) const MAX_LOCAL_CHANGES: usize = 65_536;

#[derive(Debug)]
struct Member {
    info: PeerInfo,
    pool: String,
    /// The server that owns it; None: connected here.
    origin: Option<ServerId>,
    last_seen: Instant,
    /// Version of its latest change: its key in `Pool::members`.
    version: u64,
    /// The members it wants in its view (local members only); None: all.
    view: Option<Vec<Capability>>,
}

impl Member {
    fn encode(info: &PeerInfo) -> Box<RawValue> {
        // Invariant: PeerInfo is plain data with string keys; it always encodes.
        serde_json::value::to_raw_value(info).unwrap_or_default()
    }
}

/// A member as a pool's pages carry it.
#[derive(Debug)]
struct Entry {
    id: PeerId,
    /// Its description as JSON.
    json: Box<RawValue>,
    /// What it offers, for filtered views.
    capabilities: Vec<Capability>,
    /// The version at which its capabilities last changed (0: as it
    /// joined): a filtered view behind it may hold it wrongly.
    capabilities_changed: u64,
}

impl Entry {
    /// `info` as pages carry it; its capabilities last changed at version
    /// `capabilities_changed`.
    fn new(info: &PeerInfo, capabilities_changed: u64) -> Self {
        Self {
            id: info.id,
            json: Member::encode(info),
            capabilities: info.capabilities.clone(),
            capabilities_changed,
        }
    }

    /// Whether a view of `filter` (None: all) shows it.
    fn shown_to(&self, filter: Option<&[Capability]>) -> bool {
        filter.is_none_or(|f| self.capabilities.iter().any(|c| f.contains(c)))
    }
}

#[derive(Debug, Default)]
struct Pool {
    /// Members by the version of their latest change.
    members: BTreeMap<u64, Entry>,
    /// Recent departures by version, at most [`MAX_DEPARTURES`].
    departures: BTreeMap<u64, PeerId>,
    /// The newest departure forgotten: a cursor below it must reset.
    horizon: u64,
    /// The version of the pool's latest change.
    head: u64,
    /// Who holds each name: names are how people tell members apart.
    names: HashMap<String, PeerId>,
}

/// One pool as `GET /api/pools` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolSummary {
    /// Pool name.
    pub name: String,
    /// How many members it has.
    pub members: usize,
}

/// One page of a pool's members, as `GET /api/pools/{name}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberPage {
    /// Pool name.
    pub name: String,
    /// How many members it has in all.
    pub members: usize,
    /// Up to a page of them, ordered by id.
    pub peers: Vec<PeerInfo>,
    /// The last id on this page when more follow: the next page's `after`.
    pub next: Option<PeerId>,
}

/// A `view` frame for one client, and where its cursor goes once sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The encoded [`ServerMsg::View`](jobmesh_wire::signal::ServerMsg::View);
    /// `None` when there is nothing to tell (only the client's own changes),
    /// and the cursor moves on without a frame.
    pub json: Option<String>,
    /// The client's cursor after this page.
    pub cursor: u64,
    /// Whether the page brings the client up to the pool's head.
    pub synced: bool,
    /// Members in the pool now.
    pub pool_size: usize,
}

/// The wire shape of `ServerMsg::View` with members already encoded.
#[derive(Serialize)]
struct ViewFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    reset: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    left: Vec<PeerId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    peers: Vec<&'a RawValue>,
    synced: bool,
}

/// Pools, their members, each member's stats and when it was last heard from.
#[derive(Debug)]
pub struct Registry {
    max_per_pool: usize,
    members: HashMap<PeerId, Member>,
    pools: BTreeMap<String, Pool>,
    /// The last version handed out; 0 means "nothing yet", a new client's cursor.
    version: u64,
    /// Changes of local members for the cluster, when there is one.
    outbox: Option<Outbox>,
}

/// Local changes queued for the cluster.
#[derive(Debug, Default)]
struct Outbox {
    changes: Vec<Change>,
    /// Some were dropped past [`MAX_LOCAL_CHANGES`].
    overflowed: bool,
}

impl Registry {
    /// An empty registry allowing `max_per_pool` members per pool.
    pub fn new(max_per_pool: usize) -> Self {
        Self {
            max_per_pool,
            members: HashMap::new(),
            pools: BTreeMap::new(),
            version: 0,
            outbox: None,
        }
    }

    /// Queues every later change of a local member for the cluster.
    pub fn clustered(mut self) -> Self {
        self.outbox = Some(Outbox::default());
        self
    }

    /// The local changes since the last call, and whether some were lost
    /// on the way (the queue overflowed).
    pub fn take_local_changes(&mut self) -> (Vec<Change>, bool) {
        match &mut self.outbox {
            Some(o) => (
                std::mem::take(&mut o.changes),
                std::mem::take(&mut o.overflowed),
            ),
            None => (Vec::new(), false),
        }
    }

    /// Every local member, with its pool: a cluster snapshot.
    pub fn local_members(&self) -> Vec<(String, PeerInfo)> {
        let mut out: Vec<(String, PeerInfo)> = self
            .members
            .values()
            .filter(|m| m.origin.is_none())
            .map(|m| (m.pool.clone(), m.info.clone()))
            .collect();
        out.sort_unstable_by_key(|(_, i)| i.id);
        out
    }

    /// Which server owns member `id`: `Some(None)` this one, `Some(Some(s))`
    /// server `s`, `None` nobody (not a member).
    pub fn owner(&self, id: &PeerId) -> Option<Option<ServerId>> {
        self.members.get(id).map(|m| m.origin)
    }

    /// A change of a member of `server`, from the cluster; returns the pools
    /// whose view changed (two when a member moved pools).
    pub fn apply_remote(&mut self, server: ServerId, change: Change) -> Vec<String> {
        let owned =
            |r: &Self, id: &PeerId| r.members.get(id).is_some_and(|m| m.origin == Some(server));
        match change {
            Change::Joined { pool, info } => {
                let id = info.id;
                let mut changed = Vec::new();
                match self.members.get(&id) {
                    // Connected here now: this server speaks for it.
                    Some(m) if m.origin.is_none() => return changed,
                    Some(m) if m.pool == pool && m.origin == Some(server) => {
                        self.update(&id, |i| *i = info);
                        changed.push(pool);
                        return changed;
                    }
                    Some(_) => changed.extend(self.leave(&id)),
                    None => {}
                }
                if self
                    .insert(Instant::now(), Some(server), &pool, info, None)
                    .is_ok()
                {
                    changed.push(pool);
                }
                changed
            }
            Change::Left { id } if owned(self, &id) => self.leave(&id).into_iter().collect(),
            Change::Stats { id, stats } if owned(self, &id) => self
                .update(&id, |i| i.stats = stats)
                .map(str::to_owned)
                .into_iter()
                .collect(),
            Change::Capabilities { id, capabilities } if owned(self, &id) => self
                .update(&id, |i| i.capabilities = capabilities)
                .map(str::to_owned)
                .into_iter()
                .collect(),
            Change::Left { .. } | Change::Stats { .. } | Change::Capabilities { .. } => Vec::new(),
        }
    }

    /// Queues a change of local member `id` for the cluster.
    fn queue(&mut self, id: &PeerId, change: impl FnOnce(&Member) -> Change) {
        let Some(o) = &mut self.outbox else {
            return;
        };
        let Some(m) = self.members.get(id).filter(|m| m.origin.is_none()) else {
            return;
        };
        if o.changes.len() < MAX_LOCAL_CHANGES {
            o.changes.push(change(m));
        } else {
            o.overflowed = true;
        }
    }

    /// Adds peer `id` to the pool of `join`, heard from at `now` (the server
    /// has checked its hello's proof). Its stats start as `slots` from the
    /// hello and zeroes elsewhere.
    pub fn join(&mut self, now: Instant, id: PeerId, join: &Join) -> Result<(), JoinError> {
        match self.members.get(&id) {
            Some(m) if m.origin.is_none() => return Err(JoinError::Duplicate(id)),
            // It moved here from another server: this server speaks for it now.
            Some(_) => {
                self.leave(&id);
            }
            None => {}
        }
        if let Some(&holder) = self
            .pools
            .get(&join.pool)
            .and_then(|p| p.names.get(&join.name))
        {
            return Err(JoinError::NameTaken {
                pool: join.pool.clone(),
                name: join.name.clone(),
                holder,
            });
        }
        let info = PeerInfo {
            id,
            name: join.name.clone(),
            capabilities: join.capabilities.clone(),
            stats: Stats {
                slots: join.slots,
                ..Stats::default()
            },
        };
        self.insert(now, None, &join.pool, info, join.view.clone())?;
        let pool = join.pool.clone();
        self.queue(&id, |m| Change::Joined {
            pool,
            info: m.info.clone(),
        });
        Ok(())
    }

    /// Adds `info` to `pool`, owned by `origin` (None: here) and viewing
    /// `view`; a name held by another member stays its (a remote member's
    /// may collide: servers check names each for their own peers).
    fn insert(
        &mut self,
        now: Instant,
        origin: Option<ServerId>,
        pool_name: &str,
        info: PeerInfo,
        view: Option<Vec<Capability>>,
    ) -> Result<(), JoinError> {
        let size = self.pools.get(pool_name).map_or(0, |p| p.members.len());
        if size >= self.max_per_pool {
            return Err(JoinError::PoolFull {
                pool: pool_name.to_owned(),
                max: self.max_per_pool,
            });
        }
        self.version += 1;
        let version = self.version;
        let id = info.id;
        let pool = self.pools.entry(pool_name.to_owned()).or_default();
        pool.members.insert(version, Entry::new(&info, 0));
        pool.names.entry(info.name.clone()).or_insert(id);
        pool.head = version;
        self.members.insert(
            id,
            Member {
                info,
                pool: pool_name.to_owned(),
                origin,
                last_seen: now,
                version,
                view,
            },
        );
        Ok(())
    }

    /// Removes a peer; returns its pool if it was a member, `None` otherwise.
    pub fn leave(&mut self, id: &PeerId) -> Option<String> {
        self.queue(id, |m| Change::Left { id: m.info.id });
        let m = self.members.remove(id)?;
        let pool = self.pools.get_mut(&m.pool)?;
        pool.members.remove(&m.version);
        if pool.names.get(&m.info.name) == Some(id) {
            pool.names.remove(&m.info.name);
        }
        if pool.members.is_empty() {
            // Nobody is left to be told; a pool that comes back starts afresh.
            self.pools.remove(&m.pool);
            return Some(m.pool);
        }
        self.version += 1;
        pool.departures.insert(self.version, *id);
        pool.head = self.version;
        if pool.departures.len() > MAX_DEPARTURES {
            if let Some((forgotten, _)) = pool.departures.pop_first() {
                pool.horizon = forgotten;
            }
        }
        Some(m.pool)
    }

    /// Replaces a member's stats; returns its pool, or `None` for a non-member.
    pub fn update_stats(&mut self, id: &PeerId, stats: Stats) -> Option<&str> {
        self.update(id, |info| info.stats = stats)?;
        self.queue(id, |m| Change::Stats {
            id: m.info.id,
            stats: m.info.stats.clone(),
        });
        self.pool_of(id)
    }

    /// `id` runs `capabilities` now; returns its pool (`None`: not a member).
    pub fn update_capabilities(
        &mut self,
        id: &PeerId,
        capabilities: Vec<Capability>,
    ) -> Option<&str> {
        self.update(id, |info| info.capabilities = capabilities)?;
        self.queue(id, |m| Change::Capabilities {
            id: m.info.id,
            capabilities: m.info.capabilities.clone(),
        });
        self.pool_of(id)
    }

    /// Changes member `id` with `change`, as the newest change of its pool.
    fn update(&mut self, id: &PeerId, change: impl FnOnce(&mut PeerInfo)) -> Option<&str> {
        let m = self.members.get_mut(id)?;
        let pool = self.pools.get_mut(&m.pool)?;
        change(&mut m.info);
        self.version += 1;
        let old = pool.members.remove(&m.version);
        let capabilities_changed = match old {
            Some(old) if old.capabilities == m.info.capabilities => old.capabilities_changed,
            _ => self.version,
        };
        pool.members
            .insert(self.version, Entry::new(&m.info, capabilities_changed));
        pool.head = self.version;
        m.version = self.version;
        Some(&m.pool)
    }

    /// The next page of `me`'s view for a client whose cursor is `cursor`
    /// (0 for a new client): the departures and the members (other than
    /// `me`) changed after `cursor`, oldest first, filled up to `max_bytes`
    /// of member JSON and then one more member. `None` when the client is up
    /// to date or `me` is not a member.
    pub fn page(&self, me: &PeerId, cursor: u64, max_bytes: usize) -> Option<Page> {
        let member = self.members.get(me)?;
        let filter = member.view.as_deref();
        let pool = self.pools.get(&member.pool)?;
        if cursor >= pool.head {
            return None;
        }
        let reset = cursor == 0 || cursor < pool.horizon;
        let from = if reset { 0 } else { cursor };
        let mut members = pool.members.range(from + 1..).peekable();
        // After a reset the client drops whom it is not told about: no
        // departures needed.
        let mut departures = pool
            .departures
            .range(from + 1..)
            .filter(|_| !reset)
            .peekable();
        let mut frame = ViewFrame {
            kind: "view",
            reset,
            left: Vec::new(),
            peers: Vec::new(),
            synced: false,
        };
        let mut bytes = 0;
        let mut at = from;
        while bytes < max_bytes {
            let next_member = members.peek().map(|(v, _)| **v);
            let next_departure = departures.peek().map(|(v, _)| **v);
            match (next_member, next_departure) {
                (None, None) => break,
                (Some(m), d) if d.is_none_or(|d| m < d) => {
                    let Some((v, entry)) = members.next() else {
                        break;
                    };
                    at = *v;
                    if entry.id == *me {
                        // Its own entry: never in its view.
                    } else if entry.shown_to(filter) {
                        bytes += entry.json.get().len() + 1;
                        frame.peers.push(&entry.json);
                    } else if !reset && entry.capabilities_changed > from {
                        // It may have matched before its change.
                        bytes += 40;
                        frame.left.push(entry.id);
                    }
                }
                _ => {
                    let Some((v, id)) = departures.next() else {
                        break;
                    };
                    at = *v;
                    bytes += 40;
                    frame.left.push(*id);
                }
            }
        }
        let exhausted = members.peek().is_none() && departures.peek().is_none();
        let cursor = if exhausted { pool.head } else { at };
        frame.synced = exhausted;
        let news = reset || !frame.left.is_empty() || !frame.peers.is_empty();
        // Invariant: plain data with string keys; it always encodes.
        let json = news.then(|| serde_json::to_string(&frame).unwrap_or_default());
        Some(Page {
            json,
            cursor,
            synced: exhausted,
            pool_size: pool.members.len(),
        })
    }

    /// The version of the latest change in `pool` (0 for an unknown pool).
    pub fn head(&self, pool: &str) -> u64 {
        self.pools.get(pool).map_or(0, |p| p.head)
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
        let mut late: Vec<PeerId> = self
            .members
            .iter()
            // Remote members live as long as their server does.
            .filter(|(_, m)| m.origin.is_none())
            .filter(|(_, m)| now.saturating_duration_since(m.last_seen) > limit)
            .map(|(id, _)| *id)
            .collect();
        late.sort_unstable();
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

    /// The members of `pool` (empty for an unknown pool), ordered by id.
    pub fn members(&self, pool: &str) -> Vec<PeerInfo> {
        let mut infos: Vec<PeerInfo> = self
            .pools
            .get(pool)
            .map(|p| {
                p.members
                    .values()
                    .filter_map(|e| self.members.get(&e.id).map(|m| m.info.clone()))
                    .collect()
            })
            .unwrap_or_default();
        infos.sort_unstable_by_key(|i| i.id);
        infos
    }

    /// A member's public description.
    pub fn info(&self, id: &PeerId) -> Option<&PeerInfo> {
        self.members.get(id).map(|m| &m.info)
    }

    /// Up to `limit` pools named after `after`, in name order, and the
    /// last name when more follow (`GET /api/pools`). Costs the page, not
    /// the registry: it is built under the server's lock.
    pub fn pool_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<PoolSummary>, Option<String>) {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut pools = self.pools.range::<str, _>((from, Bound::Unbounded));
        let page: Vec<PoolSummary> = pools
            .by_ref()
            .take(limit)
            .map(|(name, pool)| PoolSummary {
                name: name.clone(),
                members: pool.members.len(),
            })
            .collect();
        let next = match (pools.next(), page.last()) {
            (Some(_), Some(last)) => Some(last.name.clone()),
            _ => None,
        };
        (page, next)
    }

    /// Up to `limit` members of `pool` with ids above `after`, in id order
    /// (`GET /api/pools/{name}`); `None` for a pool with no members. One
    /// pass over the pool's ids, and a copy of the page only.
    pub fn member_page(
        &self,
        pool: &str,
        after: Option<PeerId>,
        limit: usize,
    ) -> Option<MemberPage> {
        let p = self.pools.get(pool)?;
        let mut ids: Vec<PeerId> = p
            .members
            .values()
            .map(|e| e.id)
            .filter(|id| after.is_none_or(|after| *id > after))
            .collect();
        let more = ids.len() > limit;
        if more {
            ids.select_nth_unstable(limit);
            ids.truncate(limit);
        }
        ids.sort_unstable();
        let next = more.then(|| ids.last().copied()).flatten();
        let peers = ids
            .iter()
            .filter_map(|id| self.members.get(id).map(|m| m.info.clone()))
            .collect();
        Some(MemberPage {
            name: pool.to_owned(),
            members: p.members.len(),
            peers,
            next,
        })
    }

    /// Number of members in all pools.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Number of pools with members.
    pub fn pool_count(&self) -> usize {
        self.pools.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobmesh_core::PoolView;
    use jobmesh_wire::signal::ServerMsg;
    use jobmesh_wire::Capability;

    const HB: Duration = Duration::from_secs(5);
    const MS: Duration = Duration::from_millis(1);

    /// A pool and all its members, read through the pages the API serves.
    struct Listed {
        name: String,
        peers: Vec<PeerInfo>,
    }

    impl Registry {
        fn pools(&self) -> Vec<Listed> {
            let (pools, next) = self.pool_page(None, usize::MAX);
            assert_eq!(next, None);
            pools
                .into_iter()
                .map(|p| {
                    let page = self.member_page(&p.name, None, usize::MAX).expect("listed");
                    assert_eq!((page.members, page.next), (page.peers.len(), None));
                    Listed {
                        name: p.name,
                        peers: page.peers,
                    }
                })
                .collect()
        }
    }

    fn id(n: u128) -> PeerId {
        PeerId(uuid::Uuid::from_u128(n))
    }

    fn member(n: u128, pool: &str) -> Join {
        Join {
            name: format!("p{n}"),
            pool: pool.into(),
            capabilities: vec![Capability::new("echo").expect("valid capability")],
            slots: 3,
            credential: None,
            view: None,
        }
    }

    fn ids(infos: &[PeerInfo]) -> Vec<PeerId> {
        infos.iter().map(|i| i.id).collect()
    }

    /// Decodes a page the way a peer does.
    fn decode(page: &Page) -> ServerMsg {
        let json = page.json.as_deref().expect("the page has a frame");
        let msg = ServerMsg::decode(json.as_bytes()).expect("a page is a valid server message");
        match &msg {
            ServerMsg::View { synced, .. } => assert_eq!(*synced, page.synced),
            other => panic!("expected a view, got {other:?}"),
        }
        msg
    }

    /// Reads pages for `me` from `cursor` until synced, applying them to `view`.
    fn catch_up(
        r: &Registry,
        me: u128,
        cursor: &mut u64,
        view: &mut PoolView,
        max: usize,
    ) -> usize {
        let mut pages = 0;
        while let Some(page) = r.page(&id(me), *cursor, max) {
            assert!(page.cursor > *cursor, "a page moves the cursor");
            if page.json.is_some() {
                view.apply(&decode(&page));
            }
            *cursor = page.cursor;
            pages += 1;
            if page.synced {
                break;
            }
        }
        assert!(r.page(&id(me), *cursor, max).is_none(), "up to date");
        pages
    }

    fn view_ids(view: &PoolView) -> Vec<PeerId> {
        view.peers().map(|p| p.id).collect()
    }

    fn info_of(n: u128, slots: u32) -> PeerInfo {
        PeerInfo {
            id: id(n),
            name: format!("p{n}"),
            capabilities: vec![Capability::new("echo").expect("valid capability")],
            stats: Stats {
                slots,
                ..Stats::default()
            },
        }
    }

    #[test]
    fn a_clustered_registry_queues_its_local_changes_only() {
        let now = Instant::now();
        let other = uuid::Uuid::from_u128(77);
        let mut r = Registry::new(MAX_PEERS_PER_POOL).clustered();
        r.join(now, id(1), &member(1, "lab")).expect("join");
        r.update_stats(
            &id(1),
            Stats {
                slots: 9,
                ..Stats::default()
            },
        );
        r.apply_remote(
            other,
            Change::Joined {
                pool: "lab".into(),
                info: info_of(2, 1),
            },
        );
        r.update_stats(
            &id(2),
            Stats {
                slots: 5,
                ..Stats::default()
            },
        );
        r.leave(&id(1));
        let (changes, lost) = r.take_local_changes();
        assert!(!lost);
        let kinds: Vec<&str> = changes
            .iter()
            .map(|c| match c {
                Change::Joined { .. } => "joined",
                Change::Stats { .. } => "stats",
                Change::Capabilities { .. } => "capabilities",
                Change::Left { .. } => "left",
            })
            .collect();
        assert_eq!(kinds, ["joined", "stats", "left"]);
        assert_eq!(r.take_local_changes(), (Vec::new(), false));
        assert_eq!(r.local_members(), []);
        assert_eq!(r.owner(&id(2)), Some(Some(other)));
    }

    #[test]
    fn remote_members_are_in_the_view_and_only_their_server_changes_them() {
        let now = Instant::now();
        let (a, b) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        let mut r = Registry::new(MAX_PEERS_PER_POOL).clustered();
        r.join(now, id(1), &member(1, "lab")).expect("join");
        let changed = r.apply_remote(
            a,
            Change::Joined {
                pool: "lab".into(),
                info: info_of(2, 4),
            },
        );
        assert_eq!(changed, ["lab"]);
        let mut view = PoolView::default();
        let mut cursor = 0;
        catch_up(&r, 1, &mut cursor, &mut view, usize::MAX);
        assert_eq!(view_ids(&view), [id(2)]);
        // Another server cannot remove or change it; its owner can.
        assert!(r.apply_remote(b, Change::Left { id: id(2) }).is_empty());
        assert!(r
            .apply_remote(
                b,
                Change::Stats {
                    id: id(2),
                    stats: Stats::default()
                }
            )
            .is_empty());
        assert_eq!(r.info(&id(2)).map(|i| i.stats.slots), Some(4));
        r.apply_remote(a, Change::Left { id: id(2) });
        catch_up(&r, 1, &mut cursor, &mut view, usize::MAX);
        assert_eq!(view_ids(&view), []);
        // Remote members never expire here: their server's silence removes them.
        r.apply_remote(
            a,
            Change::Joined {
                pool: "lab".into(),
                info: info_of(3, 1),
            },
        );
        let expired = r.expire(now + HB * 100, HB);
        assert_eq!(expired, [(id(1), "lab".to_owned())]);
        assert_eq!(r.owner(&id(3)), Some(Some(a)));
    }

    #[test]
    fn a_peer_that_moves_here_replaces_what_its_old_server_said() {
        let now = Instant::now();
        let old = uuid::Uuid::from_u128(9);
        let mut r = Registry::new(MAX_PEERS_PER_POOL).clustered();
        r.apply_remote(
            old,
            Change::Joined {
                pool: "lab".into(),
                info: info_of(1, 2),
            },
        );
        // Same id, same name: not a duplicate, not a taken name.
        r.join(now, id(1), &member(1, "lab"))
            .expect("the peer moved here");
        assert_eq!(r.owner(&id(1)), Some(None));
        // The old server's late word about it changes nothing.
        assert!(r.apply_remote(old, Change::Left { id: id(1) }).is_empty());
        assert!(r
            .apply_remote(
                old,
                Change::Joined {
                    pool: "lab".into(),
                    info: info_of(1, 7)
                }
            )
            .is_empty());
        assert_eq!(r.owner(&id(1)), Some(None));
        assert_eq!(r.local_members().len(), 1);
        // Another peer cannot take a name a remote member holds.
        r.apply_remote(
            old,
            Change::Joined {
                pool: "lab".into(),
                info: info_of(2, 1),
            },
        );
        let mut clash = member(3, "lab");
        clash.name = "p2".into();
        assert!(matches!(
            r.join(now, id(3), &clash),
            Err(JoinError::NameTaken { .. })
        ));
    }

    #[test]
    fn a_full_outbox_says_changes_were_lost() {
        let now = Instant::now();
        let mut r = Registry::new(MAX_PEERS_PER_POOL).clustered();
        r.join(now, id(1), &member(1, "lab")).expect("join");
        for slots in 0..MAX_LOCAL_CHANGES as u32 {
            r.update_stats(
                &id(1),
                Stats {
                    slots,
                    ..Stats::default()
                },
            );
        }
        let (changes, lost) = r.take_local_changes();
        assert_eq!(changes.len(), MAX_LOCAL_CHANGES);
        assert!(lost);
    }

    #[test]
    fn a_new_client_gets_the_others_with_stats_from_their_hello() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        r.join(t, id(1), &member(1, "a")).expect("joins");
        assert_eq!(r.page(&id(1), 0, 1 << 20).map(|p| p.synced), Some(true));
        let first = r.page(&id(1), 0, 1 << 20).expect("a first page");
        assert_eq!(
            decode(&first),
            ServerMsg::View {
                reset: true,
                left: vec![],
                peers: vec![],
                synced: true
            },
            "alone in the pool: an empty reset page"
        );
        r.join(t, id(2), &member(2, "a")).expect("joins");
        r.join(t, id(3), &member(3, "b")).expect("joins");
        let ServerMsg::View { reset, peers, .. } =
            decode(&r.page(&id(2), 0, 1 << 20).expect("page"))
        else {
            unreachable!()
        };
        assert!(reset);
        assert_eq!(ids(&peers), vec![id(1)], "not itself, not pool b");
        assert_eq!(peers[0].name, "p1");
        assert_eq!(
            peers[0].capabilities,
            vec![Capability::new("echo").expect("valid")]
        );
        assert_eq!(
            peers[0].stats,
            Stats {
                slots: 3,
                ..Stats::default()
            }
        );
        assert_eq!(ids(&r.members("a")), vec![id(1), id(2)]);
        assert!(r.members("nope").is_empty());
        assert_eq!(r.pool_of(&id(3)), Some("b"));
        assert_eq!(r.len(), 3);
        assert!(r.page(&PeerId::random(), 0, 1).is_none(), "not a member");
    }

    #[test]
    fn a_filtered_view_holds_the_members_of_its_capabilities_as_they_change() {
        let t = Instant::now();
        let cap = |c: &str| Capability::new(c).expect("valid capability");
        let offering = |n: u128, caps: &[&str]| Join {
            capabilities: caps.iter().map(|c| cap(c)).collect(),
            ..member(n, "a")
        };
        let mut r = Registry::new(10);
        r.join(t, id(1), &offering(1, &["ocr"])).expect("joins");
        r.join(t, id(2), &offering(2, &["echo", "thumbnail"]))
            .expect("joins");
        r.join(t, id(3), &offering(3, &[])).expect("joins");
        let sees_thumbnails = Join {
            view: Some(vec![cap("thumbnail")]),
            ..offering(9, &["ocr"])
        };
        r.join(t, id(9), &sees_thumbnails).expect("joins");
        let blind = Join {
            view: Some(vec![]),
            ..member(8, "a")
        };
        r.join(t, id(8), &blind).expect("joins");
        let (mut cursor, mut view) = (0, PoolView::new());
        catch_up(&r, 9, &mut cursor, &mut view, usize::MAX);
        assert_eq!(view_ids(&view), [id(2)], "only the thumbnail worker");
        let (mut blind_cursor, mut blind_view) = (0, PoolView::new());
        catch_up(&r, 8, &mut blind_cursor, &mut blind_view, usize::MAX);
        assert!(blind_view.is_empty() && blind_view.is_synced());
        // Stats of a member outside the view: nothing to tell.
        r.update_stats(&id(1), info_of(1, 5).stats);
        let page = r.page(&id(9), cursor, usize::MAX).expect("a page");
        assert_eq!(page.json, None, "a change it does not see");
        cursor = page.cursor;
        // Worker 1 takes up thumbnails: it comes into the view; worker 2
        // gives them up: it leaves the view (though not the pool).
        r.update_capabilities(&id(1), vec![cap("thumbnail")]);
        r.update_capabilities(&id(2), vec![cap("echo")]);
        catch_up(&r, 9, &mut cursor, &mut view, usize::MAX);
        assert_eq!(view_ids(&view), [id(1)]);
        // Later stats of worker 2 do not list it as gone again.
        r.update_stats(&id(2), info_of(2, 7).stats);
        let page = r.page(&id(9), cursor, usize::MAX).expect("a page");
        assert_eq!(page.json, None);
        // An unfiltered client sees everyone.
        let (mut c, mut all) = (0, PoolView::new());
        catch_up(&r, 3, &mut c, &mut all, usize::MAX);
        assert_eq!(view_ids(&all).len(), 4);
    }

    #[test]
    fn pages_are_bounded_and_add_up_to_the_pool() {
        let t = Instant::now();
        let mut r = Registry::new(1000);
        for n in 1..=100 {
            r.join(t, id(n), &member(n, "a")).expect("joins");
        }
        let (mut cursor, mut view) = (0, PoolView::new());
        let pages = catch_up(&r, 50, &mut cursor, &mut view, 1024);
        assert!(
            pages >= 10,
            "~100 members of ~150 B in 1 KiB pages: {pages}"
        );
        assert_eq!(view.len(), 99);
        assert!(view.is_synced());
        let page = r.page(&id(50), 0, 1024).expect("page");
        let len = page.json.map_or(0, |j| j.len());
        assert!(len < 1024 + 400, "{len}");
        assert!(!page.synced);
    }

    #[test]
    fn a_member_changed_many_times_is_sent_once_as_it_is_now() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        r.join(t, id(1), &member(1, "a")).expect("joins");
        r.join(t, id(2), &member(2, "a")).expect("joins");
        let (mut cursor, mut view) = (0, PoolView::new());
        catch_up(&r, 1, &mut cursor, &mut view, 1 << 20);
        for seq in 1..=5 {
            let stats = Stats {
                running: u32::try_from(seq).expect("small"),
                seq,
                ..Stats::default()
            };
            r.update_stats(&id(2), stats).expect("member");
        }
        let page = r.page(&id(1), cursor, 1 << 20).expect("a change");
        let ServerMsg::View {
            reset,
            left,
            peers,
            synced,
        } = decode(&page)
        else {
            unreachable!()
        };
        assert!(!reset && left.is_empty() && synced);
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].stats.seq, 5);
        // Its own changes are not sent back to it: the cursor moves, no frame.
        r.update_stats(&id(1), Stats::default()).expect("member");
        let next = r
            .page(&id(1), page.cursor, 1 << 20)
            .expect("cursor moves past it");
        assert!(next.json.is_none() && next.synced && next.cursor > page.cursor);
    }

    #[test]
    fn departures_are_sent_and_a_client_behind_the_forgotten_ones_is_reset() {
        let t = Instant::now();
        let mut r = Registry::new(MAX_DEPARTURES + 10);
        r.join(t, id(1), &member(1, "a")).expect("joins");
        r.join(t, id(2), &member(2, "a")).expect("joins");
        let (mut cursor, mut view) = (0, PoolView::new());
        catch_up(&r, 1, &mut cursor, &mut view, 1 << 20);
        r.leave(&id(2));
        let ServerMsg::View { left, .. } = decode(&r.page(&id(1), cursor, 1 << 20).expect("page"))
        else {
            unreachable!()
        };
        assert_eq!(left, vec![id(2)]);
        catch_up(&r, 1, &mut cursor, &mut view, 1 << 20);
        assert!(view.is_empty());
        // Many more departures than a pool remembers: this client is sent
        // the pool afresh, and its view still ends right.
        let stale = cursor;
        let many = u128::try_from(MAX_DEPARTURES).expect("fits") + 5;
        for n in 10..10 + many {
            r.join(t, id(n), &member(n, "a")).expect("joins");
        }
        for n in 10..10 + many - 1 {
            r.leave(&id(n));
        }
        let page = r.page(&id(1), stale, 1 << 20).expect("page");
        assert!(matches!(decode(&page), ServerMsg::View { reset: true, .. }));
        catch_up(&r, 1, &mut cursor, &mut view, 4096);
        assert_eq!(view_ids(&view), vec![id(10 + many - 1)]);
    }

    proptest::proptest! {
        /// Whatever happens and however far behind a client reads, once it
        /// has caught up its view (the peers' own `PoolView`) is exactly the
        /// pool without itself.
        #[test]
        fn any_client_catching_up_sees_exactly_the_pool(
            ops in proptest::collection::vec((0u8..5, 1u128..12, 0u64..50), 1..200),
            page_bytes in 100usize..2000,
        ) {
            let t = Instant::now();
            let mut r = Registry::new(100);
            r.join(t, id(0), &member(0, "a")).expect("the observer joins");
            let (mut cursor, mut view) = (0, PoolView::new());
            // Peers number their stats reports upwards (a view keeps back
            // older ones), so `seq` only grows here too.
            let mut seq = 0;
            for (op, n, x) in ops {
                match op {
                    0 => { let _ = r.join(t, id(n), &member(n, if x % 4 == 0 { "b" } else { "a" })); }
                    1 => { r.leave(&id(n)); }
                    2 => {
                        seq += 1;
                        let stats = Stats { running: u32::try_from(x).expect("small"), seq, ..Stats::default() };
                        r.update_stats(&id(n), stats);
                    }
                    // Read one page now and then, not necessarily to the end.
                    _ => {
                        if let Some(page) = r.page(&id(0), cursor, page_bytes) {
                            if page.json.is_some() {
                                view.apply(&decode(&page));
                            }
                            cursor = page.cursor;
                        }
                    }
                }
            }
            catch_up(&r, 0, &mut cursor, &mut view, page_bytes);
            let mut want = r.members("a");
            want.retain(|p| p.id != id(0));
            let got: Vec<PeerInfo> = view.peers().cloned().collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_full_pool_is_refused_and_other_pools_are_not_affected() {
        let t = Instant::now();
        let mut r = Registry::new(2);
        r.join(t, id(1), &member(1, "a")).expect("joins");
        r.join(t, id(2), &member(2, "a")).expect("joins");
        let err = r
            .join(t, id(3), &member(3, "a"))
            .expect_err("pool a is full");
        assert_eq!(
            err,
            JoinError::PoolFull {
                pool: "a".into(),
                max: 2
            }
        );
        assert!(err.to_string().contains("full (2 peers)"), "{err}");
        assert_eq!(r.pool_of(&id(3)), None, "a refused peer is not a member");
        r.join(t, id(3), &member(3, "b"))
            .expect("another pool has room");
        // A departure makes room again.
        r.leave(&id(1));
        r.join(t, id(4), &member(4, "a"))
            .expect("room after a leave");
    }

    #[test]
    fn a_duplicate_live_peer_id_is_refused_even_in_another_pool() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        r.join(t, id(1), &member(1, "a")).expect("joins");
        assert_eq!(
            r.join(t, id(1), &member(1, "a")),
            Err(JoinError::Duplicate(id(1)))
        );
        assert_eq!(
            r.join(t, id(1), &member(1, "b")),
            Err(JoinError::Duplicate(id(1)))
        );
        assert_eq!(r.pool_of(&id(1)), Some("a"));
        assert_eq!(r.len(), 1);
        // Once it has left, the id may join again.
        r.leave(&id(1));
        r.join(t, id(1), &member(1, "b")).expect("rejoins");
    }

    #[test]
    fn a_zero_pool_limit_admits_nobody() {
        let mut r = Registry::new(0);
        assert!(matches!(
            r.join(Instant::now(), id(1), &member(1, "a")),
            Err(JoinError::PoolFull { max: 0, .. })
        ));
        assert!(r.is_empty());
    }

    #[test]
    fn a_silent_peer_expires_after_three_intervals_and_not_before() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        r.join(t, id(1), &member(1, "a")).expect("joins");
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
        r.join(t, id(1), &member(1, "a")).expect("joins");
        r.join(t, id(2), &member(2, "b")).expect("joins");
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
            r.join(t, id(n), &member(n, pool)).expect("joins");
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
        r.join(t, id(1), &member(1, "a")).expect("joins");
        assert!(r.expire(t - HB * 5, HB).is_empty());
    }

    #[test]
    fn a_name_belongs_to_one_live_member_of_a_pool() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        r.join(t, id(1), &member(1, "a")).expect("joins");
        // The same name under another id (another key): refused, naming the holder.
        let e = r.join(t, id(2), &member(1, "a")).expect_err("name taken");
        assert!(
            matches!(&e, JoinError::NameTaken { holder, .. } if *holder == id(1)),
            "{e}"
        );
        assert!(e.to_string().contains("another --name"), "{e}");
        // Another pool may use it; once its holder leaves, anyone may.
        r.join(t, id(3), &member(1, "b")).expect("another pool");
        r.leave(&id(1));
        r.join(t, id(2), &member(1, "a")).expect("free again");
    }

    #[test]
    fn leave_of_an_unknown_peer_is_none_and_empty_pools_vanish() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        assert_eq!(r.leave(&PeerId::random()), None);
        r.join(t, id(1), &member(1, "a")).expect("joins");
        r.join(t, id(2), &member(2, "a")).expect("joins");
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
        r.join(t, id(1), &member(1, "a")).expect("joins");
        r.join(t, id(2), &member(2, "a")).expect("joins");
        r.join(t, id(3), &member(3, "b")).expect("joins");
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
        r.join(t, id(1), &member(1, "a")).expect("joins");
        let s = Stats {
            slots: 3,
            running: 2,
            seq: 7,
            ..Stats::default()
        };
        assert_eq!(r.update_stats(&id(1), s.clone()), Some("a"));
        assert_eq!(r.info(&id(1)).map(|i| &i.stats), Some(&s));
        assert_eq!(r.update_stats(&PeerId::random(), s.clone()), None);
        r.join(t, id(2), &member(2, "a")).expect("joins");
        let ServerMsg::View { peers, .. } = decode(&r.page(&id(2), 0, 1 << 20).expect("page"))
        else {
            unreachable!()
        };
        assert_eq!(peers[0].stats, s, "a new client gets the latest stats");
        assert_eq!(r.pools()[0].peers[0].stats, s);
    }

    #[test]
    fn pools_and_members_come_in_pages_that_serialise_as_the_http_api_documents() {
        let t = Instant::now();
        let mut r = Registry::new(10);
        for n in 1..=5 {
            r.join(t, id(n), &member(n, "a")).expect("joins");
        }
        for pool in ["b", "c"] {
            r.join(t, PeerId::random(), &member(9, pool))
                .expect("joins");
        }
        let (page, next) = r.pool_page(None, 2);
        let v = serde_json::to_value(&page).expect("serialises");
        assert_eq!(
            v,
            serde_json::json!([{"name": "a", "members": 5}, {"name": "b", "members": 1}])
        );
        assert_eq!(next.as_deref(), Some("b"));
        let (page, next) = r.pool_page(next.as_deref(), 2);
        assert_eq!((page.len(), page[0].name.as_str(), next), (1, "c", None));

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = r.member_page("a", after, 2).expect("pool a");
            assert_eq!(page.members, 5);
            seen.extend(page.peers.iter().map(|p| p.id));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(
            seen,
            (1..=5).map(id).collect::<Vec<_>>(),
            "each once, in id order"
        );
        let v = serde_json::to_value(r.member_page("a", None, 1).expect("pool a")).expect("JSON");
        assert_eq!(v["name"], "a");
        assert_eq!(v["members"], 5);
        assert_eq!(v["next"], id(1).to_string());
        let peer = &v["peers"][0];
        assert_eq!(peer["id"], id(1).to_string());
        assert_eq!(peer["name"], "p1");
        assert_eq!(peer["capabilities"], serde_json::json!(["echo"]));
        assert_eq!(peer["stats"]["slots"], 3);
        assert_eq!(r.member_page("nope", None, 10), None);
    }
}
