//! Several signal-servers sharing their pools: the sans-IO state of one
//! server in a cluster (issue 22). No sockets, no clock: the NATS glue feeds
//! it what arrives and the time, and carries out what it outputs.
//!
//! # The model
//!
//! Each server owns the peers connected to it, and only it says anything
//! about them. It publishes its members' changes in batches, each tagged
//! with its server id, the epoch of this run of it and a sequence number
//! that grows by one per batch; and a heartbeat with its latest sequence
//! number (epochs grow from run to run: the glue takes the Unix time in
//! milliseconds at start). Every other server keeps, per remote server,
//! the epoch and sequence it has applied and the members it learnt from
//! it, and:
//!
//! * applies a batch whose sequence is the next one;
//! * ignores one it has applied already (NATS may redeliver nothing, but a
//!   snapshot can overtake batches);
//! * on a gap (a batch or heartbeat past the next sequence), on a server it
//!   has never heard, or on a new epoch (a restart: its old members are
//!   dropped at once), asks that server for a snapshot, and applies nothing
//!   more of it until the snapshot comes;
//! * drops a server whose heartbeats stopped for [`DEAD_AFTER`], with all
//!   its members (their peers reconnect to a server that is alive);
//! * asks again for a snapshot that did not arrive whole within
//!   [`SNAPSHOT_RETRY`] (snapshots come in pages of [`SNAPSHOT_PAGE`],
//!   applied only once all are in, in order).
//!
//! A snapshot replaces everything known of its server: members it lacks
//! leave, the others join or change. Its sequence is the server's latest,
//! so the batches after it apply in order.
//!
//! What this module outputs for the registry ([`Output::Apply`]) keeps
//! remote members apart from local ones: the glue inserts them with their
//! server as origin, and the view every client reads is local and remote
//! members alike.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use jobmesh_wire::{Capability, PeerId, PeerInfo, Stats};
use serde::{Deserialize, Serialize};

/// How often a server says it is alive (with its latest sequence number).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A server not heard from for this long is gone, with its members.
pub const DEAD_AFTER: Duration = Duration::from_secs(5);
/// At most one batch of local changes per this time: a change after a
/// quiet spell is published at once, later ones wait for the rest of it
/// and go together.
pub const BATCH_DELAY: Duration = Duration::from_millis(50);
/// Most changes in one batch; more are published at once in several.
pub const MAX_BATCH: usize = 512;
/// Members in one snapshot page: ~300 KB of JSON, well under NATS's 1 MiB
/// payload limit.
pub const SNAPSHOT_PAGE: usize = 1000;
/// How long a snapshot may take before it is asked for again.
pub const SNAPSHOT_RETRY: Duration = Duration::from_secs(2);
/// Most pages of one snapshot a server collects (a million members).
const MAX_SNAPSHOT_PAGES: u32 = 1000;

/// One server of the cluster, for this run of it.
pub type ServerId = uuid::Uuid;

/// A change to one of a server's own members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// It joined `pool`.
    Joined {
        /// Its pool.
        pool: String,
        /// As it is now.
        info: PeerInfo,
    },
    /// New stats.
    Stats {
        /// Who.
        id: PeerId,
        /// Its stats now.
        stats: Stats,
    },
    /// New capabilities.
    Capabilities {
        /// Who.
        id: PeerId,
        /// What it runs now.
        capabilities: Vec<Capability>,
    },
    /// It left (or its connection ended).
    Left {
        /// Who.
        id: PeerId,
    },
}

/// What servers say to each other over the backplane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClusterMsg {
    /// The changes of `from`'s members since its batch `seq - 1`.
    Batch {
        /// Whose.
        from: ServerId,
        /// Its run.
        epoch: u64,
        /// One more than its previous batch.
        seq: u64,
        /// In order.
        changes: Vec<Change>,
    },
    /// Page `page` of `pages` of every member of `from` as of its batch
    /// `seq`, for `to`. Applied once the last page is in, all pages in
    /// order; a missing page means asking again.
    Snapshot {
        /// Whose.
        from: ServerId,
        /// Its run.
        epoch: u64,
        /// Its latest batch.
        seq: u64,
        /// Who asked.
        to: ServerId,
        /// This page, from 0.
        page: u32,
        /// How many pages the snapshot has (at least 1).
        pages: u32,
        /// At most [`SNAPSHOT_PAGE`], each with its pool.
        members: Vec<(String, PeerInfo)>,
    },
    /// `from` is alive, and its latest batch is `seq`.
    Heartbeat {
        /// Who.
        from: ServerId,
        /// Its run.
        epoch: u64,
        /// Its latest batch.
        seq: u64,
    },
    /// `from` asks `to` for a [`ClusterMsg::Snapshot`].
    SnapshotRequest {
        /// Who asks.
        from: ServerId,
        /// Of whom.
        to: ServerId,
    },
}

/// What the glue does for this server's cluster state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Publish to every server.
    Broadcast(ClusterMsg),
    /// Publish to one server (its own subject).
    SendTo(ServerId, ClusterMsg),
    /// Answer `to` with [`Cluster::snapshot`] of this server's members.
    SnapshotFor(ServerId),
    /// Change the registry: a remote member of `server`.
    Apply {
        /// The member's owner.
        server: ServerId,
        /// What changed.
        change: Change,
    },
}

/// What this server knows of another.
#[derive(Debug)]
struct Remote {
    epoch: u64,
    /// The last batch applied.
    seq: u64,
    /// False from a gap or a new epoch until its snapshot arrives.
    synced: bool,
    last_heard: Instant,
    /// Its members, as applied.
    members: BTreeSet<PeerId>,
    /// The pages of a snapshot so far: its sequence and members.
    incoming: Option<(u64, Vec<(String, PeerInfo)>)>,
    /// When a snapshot was last asked for.
    asked: Option<Instant>,
}

/// One server's side of the cluster.
#[derive(Debug)]
pub struct Cluster {
    me: ServerId,
    epoch: u64,
    seq: u64,
    /// Local changes not published yet, and since when the oldest waits.
    pending: Vec<Change>,
    pending_since: Option<Instant>,
    /// When the last batch went out on time (not forced by its size).
    last_batch: Option<Instant>,
    next_heartbeat: Option<Instant>,
    remotes: BTreeMap<ServerId, Remote>,
    out: VecDeque<Output>,
}

impl Cluster {
    /// This server, `me`, in its run `epoch` (random at each start).
    pub fn new(me: ServerId, epoch: u64) -> Self {
        Self {
            me,
            epoch,
            seq: 0,
            pending: Vec::new(),
            pending_since: None,
            last_batch: None,
            next_heartbeat: None,
            remotes: BTreeMap::new(),
            out: VecDeque::new(),
        }
    }

    /// This server's id.
    pub fn id(&self) -> ServerId {
        self.me
    }

    /// Servers heard from and not yet gone.
    pub fn servers(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.remotes.keys().copied()
    }

    /// A change of one of this server's own members, to publish.
    pub fn local_change(&mut self, now: Instant, change: Change) {
        self.pending.push(change);
        self.pending_since.get_or_insert(now);
        if self.pending.len() >= MAX_BATCH {
            self.flush();
        } else {
            self.publish_due(now);
        }
    }

    /// When the pending changes are due: at once after a quiet spell,
    /// else [`BATCH_DELAY`] after the last batch.
    fn batch_due(&self) -> Option<Instant> {
        let since = self.pending_since?;
        Some(
            self.last_batch
                .map_or(since, |last| since.max(last + BATCH_DELAY)),
        )
    }

    /// Publishes the pending changes if they are due by `now`.
    fn publish_due(&mut self, now: Instant) {
        if self.batch_due().is_some_and(|due| due <= now) {
            self.last_batch = Some(now);
            self.flush();
        }
    }

    /// Local changes were lost before reaching this state (the registry's
    /// queue overflowed): the sequence skips one, so the next heartbeat
    /// shows every other server a gap, and each asks for a snapshot.
    pub fn lost_changes(&mut self) {
        self.flush();
        self.seq += 1;
    }

    /// A message from the backplane, at `now`.
    pub fn handle_message(&mut self, now: Instant, msg: ClusterMsg) {
        match msg {
            ClusterMsg::Batch {
                from,
                epoch,
                seq,
                changes,
            } => {
                let Some(remote) = self.heard(now, from, epoch) else {
                    return;
                };
                if !remote.synced || seq <= remote.seq {
                    return;
                }
                if seq != remote.seq + 1 {
                    remote.synced = false;
                    self.ask_snapshot(now, from);
                    return;
                }
                remote.seq = seq;
                for change in changes {
                    self.apply(from, change);
                }
            }
            ClusterMsg::Heartbeat { from, epoch, seq } => {
                let Some(remote) = self.heard(now, from, epoch) else {
                    return;
                };
                let behind = remote.synced && seq > remote.seq;
                // A snapshot asked for long ago never came whole (its
                // request, or a page, was lost): ask again.
                let stuck = !remote.synced
                    && remote
                        .asked
                        .is_none_or(|at| now.saturating_duration_since(at) >= SNAPSHOT_RETRY);
                if behind || stuck {
                    remote.synced = false;
                    remote.incoming = None;
                    self.ask_snapshot(now, from);
                }
            }
            ClusterMsg::Snapshot {
                from,
                epoch,
                seq,
                page,
                pages,
                members,
                ..
            } => {
                let Some(remote) = self.heard(now, from, epoch) else {
                    return;
                };
                if remote.synced && seq <= remote.seq {
                    return;
                }
                // Collect the pages in order; anything else starts over.
                let so_far = remote.incoming.take();
                let collected = match so_far {
                    _ if pages > MAX_SNAPSHOT_PAGES || page >= pages => None,
                    None if page == 0 => Some(members),
                    Some((s, mut got))
                        if s == seq && got.len() == page as usize * SNAPSHOT_PAGE =>
                    {
                        got.extend(members);
                        Some(got)
                    }
                    _ => None,
                };
                let Some(collected) = collected else {
                    remote.synced = false;
                    self.ask_snapshot(now, from);
                    return;
                };
                if page + 1 < pages {
                    remote.incoming = Some((seq, collected));
                    return;
                }
                let members = collected;
                remote.seq = seq;
                remote.synced = true;
                let keep: BTreeSet<PeerId> = members.iter().map(|(_, m)| m.id).collect();
                let gone: Vec<PeerId> = remote.members.difference(&keep).copied().collect();
                for id in gone {
                    self.apply(from, Change::Left { id });
                }
                for (pool, info) in members {
                    self.apply(from, Change::Joined { pool, info });
                }
            }
            ClusterMsg::SnapshotRequest { from, to } => {
                if to == self.me && from != self.me {
                    self.out.push_back(Output::SnapshotFor(from));
                }
            }
        }
    }

    /// The snapshot of this server's `members` (the registry's local ones)
    /// for `to`, in pages of [`SNAPSHOT_PAGE`]: pending changes are
    /// published first, so the snapshot's sequence covers them.
    pub fn snapshot(&mut self, to: ServerId, members: Vec<(String, PeerInfo)>) -> Vec<ClusterMsg> {
        self.flush();
        let chunks: Vec<Vec<(String, PeerInfo)>> = if members.is_empty() {
            vec![Vec::new()]
        } else {
            members.chunks(SNAPSHOT_PAGE).map(<[_]>::to_vec).collect()
        };
        let pages = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
        chunks
            .into_iter()
            .zip(0..)
            .map(|(members, page)| ClusterMsg::Snapshot {
                from: self.me,
                epoch: self.epoch,
                seq: self.seq,
                to,
                page,
                pages,
                members,
            })
            .collect()
    }

    /// Time passed: publishes a batch that is due, a heartbeat every
    /// [`HEARTBEAT`], and drops servers silent for [`DEAD_AFTER`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.publish_due(now);
        if self.next_heartbeat.is_none_or(|at| now >= at) {
            self.next_heartbeat = Some(now + HEARTBEAT);
            self.out.push_back(Output::Broadcast(ClusterMsg::Heartbeat {
                from: self.me,
                epoch: self.epoch,
                seq: self.seq,
            }));
        }
        let dead: Vec<ServerId> = self
            .remotes
            .iter()
            .filter(|(_, r)| now.saturating_duration_since(r.last_heard) >= DEAD_AFTER)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.forget(id);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let batch = self.batch_due();
        let dead = self
            .remotes
            .values()
            .map(|r| r.last_heard + DEAD_AFTER)
            .min();
        [batch, self.next_heartbeat, dead]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Notes that `from` (in `epoch`) spoke at `now`; the remote to apply
    /// its words to, or None when they are to be ignored (this server's own
    /// echo, or an older epoch).
    fn heard(&mut self, now: Instant, from: ServerId, epoch: u64) -> Option<&mut Remote> {
        if from == self.me {
            return None;
        }
        let known = self.remotes.get(&from).map(|r| r.epoch);
        match known {
            Some(e) if epoch < e => return None,
            Some(e) if epoch > e => {
                // A restart: what the old run had is gone.
                self.forget(from);
                self.meet(now, from, epoch);
            }
            Some(_) => {}
            None => self.meet(now, from, epoch),
        }
        let remote = self.remotes.get_mut(&from)?;
        remote.last_heard = now;
        Some(remote)
    }

    /// A server not known (or known in an older run): ask for its snapshot.
    fn meet(&mut self, now: Instant, from: ServerId, epoch: u64) {
        self.remotes.insert(
            from,
            Remote {
                epoch,
                seq: 0,
                synced: false,
                last_heard: now,
                members: BTreeSet::new(),
                incoming: None,
                asked: None,
            },
        );
        self.ask_snapshot(now, from);
    }

    fn ask_snapshot(&mut self, now: Instant, of: ServerId) {
        if let Some(remote) = self.remotes.get_mut(&of) {
            remote.asked = Some(now);
        }
        self.out.push_back(Output::SendTo(
            of,
            ClusterMsg::SnapshotRequest {
                from: self.me,
                to: of,
            },
        ));
    }

    /// Drops `server` and every member learnt from it.
    fn forget(&mut self, server: ServerId) {
        if let Some(remote) = self.remotes.remove(&server) {
            for id in remote.members {
                self.out.push_back(Output::Apply {
                    server,
                    change: Change::Left { id },
                });
            }
        }
    }

    /// Records and outputs a change of `server`'s member.
    fn apply(&mut self, server: ServerId, change: Change) {
        if let Some(remote) = self.remotes.get_mut(&server) {
            match &change {
                Change::Joined { info, .. } => {
                    remote.members.insert(info.id);
                }
                Change::Left { id } => {
                    remote.members.remove(id);
                }
                Change::Stats { .. } | Change::Capabilities { .. } => {}
            }
        }
        self.out.push_back(Output::Apply { server, change });
    }

    /// Publishes the pending changes as batches.
    fn flush(&mut self) {
        self.pending_since = None;
        while !self.pending.is_empty() {
            let rest = self.pending.split_off(self.pending.len().min(MAX_BATCH));
            let changes = std::mem::replace(&mut self.pending, rest);
            self.seq += 1;
            self.out.push_back(Output::Broadcast(ClusterMsg::Batch {
                from: self.me,
                epoch: self.epoch,
                seq: self.seq,
                changes,
            }));
        }
    }
}

#[cfg(test)]
mod tests;
