//! The cluster state of several servers wired by an in-memory backplane
//! that can lose messages: views converge, gaps heal through snapshots,
//! restarts and silent servers drop their members.

use std::collections::BTreeMap;

use super::*;

fn peer(n: u128) -> PeerId {
    PeerId(uuid::Uuid::from_u128(n))
}

fn info(n: u128, slots: u32) -> PeerInfo {
    PeerInfo {
        id: peer(n),
        name: format!("p{n}"),
        capabilities: vec![Capability::new("echo").expect("capability")],
        stats: Stats {
            slots,
            ..Stats::default()
        },
    }
}

/// One server: its cluster state, its own members, and the remote members
/// its registry would hold (by owner).
struct Server {
    cluster: Cluster,
    local: BTreeMap<PeerId, (String, PeerInfo)>,
    remote: BTreeMap<PeerId, (ServerId, String, PeerInfo)>,
}

impl Server {
    fn new(n: u128, epoch: u64) -> Self {
        Self {
            cluster: Cluster::new(uuid::Uuid::from_u128(1000 + n), epoch),
            local: BTreeMap::new(),
            remote: BTreeMap::new(),
        }
    }

    fn id(&self) -> ServerId {
        self.cluster.id()
    }

    fn join(&mut self, now: Instant, pool: &str, info: PeerInfo) {
        self.local.insert(info.id, (pool.to_owned(), info.clone()));
        let pool = pool.to_owned();
        self.cluster
            .local_change(now, Change::Joined { pool, info });
    }

    fn leave(&mut self, now: Instant, id: PeerId) {
        self.local.remove(&id);
        self.cluster.local_change(now, Change::Left { id });
    }

    fn stats(&mut self, now: Instant, id: PeerId, slots: u32) {
        let Some((_, info)) = self.local.get_mut(&id) else {
            return;
        };
        info.stats.slots = slots;
        let stats = info.stats.clone();
        self.cluster.local_change(now, Change::Stats { id, stats });
    }

    /// The remote members it holds: (owner, pool, info) by id.
    fn view(&self) -> Vec<(PeerId, String, u32)> {
        self.remote
            .iter()
            .map(|(id, (_, pool, info))| (*id, pool.clone(), info.stats.slots))
            .collect()
    }

    fn apply(&mut self, server: ServerId, change: Change) {
        match change {
            Change::Joined { pool, info } => {
                self.remote.insert(info.id, (server, pool, info));
            }
            Change::Left { id } => {
                self.remote.remove(&id);
            }
            Change::Stats { id, stats } => {
                if let Some((_, _, info)) = self.remote.get_mut(&id) {
                    info.stats = stats;
                }
            }
            Change::Capabilities { id, capabilities } => {
                if let Some((_, _, info)) = self.remote.get_mut(&id) {
                    info.capabilities = capabilities;
                }
            }
        }
    }
}

/// Servers and the backplane between them.
struct Bus {
    servers: Vec<Server>,
    /// Broadcast batches to drop (by the sender's index), once each.
    lose_next_batch_of: Option<usize>,
    /// Servers cut off: nothing in or out.
    cut: Vec<usize>,
    /// A snapshot page to drop (by its index), once.
    lose_snapshot_page: Option<usize>,
}

impl Bus {
    fn new(servers: Vec<Server>) -> Self {
        Self {
            servers,
            lose_next_batch_of: None,
            cut: Vec::new(),
            lose_snapshot_page: None,
        }
    }

    /// Runs every server's timers at `now` and delivers everything until
    /// quiet.
    fn run(&mut self, now: Instant) {
        for s in &mut self.servers {
            s.cluster.handle_timeout(now);
        }
        loop {
            let mut moved = false;
            for i in 0..self.servers.len() {
                while let Some(out) = self.servers[i].cluster.poll_output() {
                    moved = true;
                    self.carry(now, i, out);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn carry(&mut self, now: Instant, from: usize, out: Output) {
        let cut = self.cut.contains(&from);
        match out {
            Output::Apply { server, change } => self.servers[from].apply(server, change),
            Output::SnapshotFor(to) => {
                let members = self.servers[from].local.values().cloned().collect();
                let pages = self.servers[from].cluster.snapshot(to, members);
                for (i, page) in pages.iter().enumerate() {
                    if cut || self.lose_snapshot_page.take_if(|p| *p == i).is_some() {
                        continue;
                    }
                    self.deliver(now, Some(to), from, page);
                }
            }
            Output::Broadcast(msg) => {
                if matches!(msg, ClusterMsg::Batch { .. })
                    && self.lose_next_batch_of.take_if(|i| *i == from).is_some()
                {
                    return;
                }
                if !cut {
                    self.deliver(now, None, from, &msg);
                }
            }
            Output::SendTo(to, msg) => {
                if !cut {
                    self.deliver(now, Some(to), from, &msg);
                }
            }
        }
    }

    fn deliver(&mut self, now: Instant, to: Option<ServerId>, from: usize, msg: &ClusterMsg) {
        // Over the wire: JSON both ways, as the glue does.
        let bytes = serde_json::to_vec(msg).expect("encode");
        for (i, s) in self.servers.iter_mut().enumerate() {
            if i == from || self.cut.contains(&i) || to.is_some_and(|t| t != s.id()) {
                continue;
            }
            let decoded: ClusterMsg = serde_json::from_slice(&bytes).expect("decode");
            s.cluster.handle_message(now, decoded);
        }
    }
}

fn t0() -> Instant {
    Instant::now()
}

/// Two servers in one epoch each; server 0 has peer 1 in "lab", and
/// server 1 knows it. The bus and the time.
fn two_servers_one_member() -> (Bus, Instant) {
    let now = t0();
    let mut bus = Bus::new(vec![Server::new(1, 1), Server::new(2, 1)]);
    bus.run(now);
    bus.servers[0].join(now, "lab", info(1, 2));
    let now = now + BATCH_DELAY;
    bus.run(now);
    assert_eq!(bus.servers[1].view(), [(peer(1), "lab".into(), 2)]);
    (bus, now)
}

#[test]
fn members_and_their_stats_reach_every_other_server() {
    let now = t0();
    let mut bus = Bus::new(vec![
        Server::new(1, 7),
        Server::new(2, 7),
        Server::new(3, 7),
    ]);
    bus.run(now);
    bus.servers[0].join(now, "lab", info(1, 2));
    bus.servers[1].join(now, "lab", info(2, 4));
    bus.servers[2].join(now, "other", info(3, 1));
    let now = now + BATCH_DELAY;
    bus.run(now);
    bus.servers[0].stats(now, peer(1), 8);
    bus.servers[1].leave(now, peer(2));
    let now = now + BATCH_DELAY;
    bus.run(now);
    assert_eq!(
        bus.servers[1].view(),
        [(peer(1), "lab".into(), 8), (peer(3), "other".into(), 1)]
    );
    assert_eq!(bus.servers[2].view(), [(peer(1), "lab".into(), 8)]);
    assert_eq!(bus.servers[0].view(), [(peer(3), "other".into(), 1)]);
}

#[test]
fn a_lost_batch_is_noticed_at_the_next_heartbeat_and_healed_by_a_snapshot() {
    let (mut bus, mut now) = two_servers_one_member();
    // After a quiet spell the join goes at once; the leave waits for the
    // next batch, which is lost.
    bus.servers[0].join(now, "lab", info(2, 2));
    bus.run(now);
    bus.lose_next_batch_of = Some(0);
    bus.servers[0].leave(now, peer(1));
    now += BATCH_DELAY;
    bus.run(now);
    // Lost: server 2 still holds peer 1.
    assert_eq!(
        bus.servers[1].view(),
        [(peer(1), "lab".into(), 2), (peer(2), "lab".into(), 2)]
    );
    now += HEARTBEAT;
    bus.run(now);
    assert_eq!(bus.servers[1].view(), [(peer(2), "lab".into(), 2)]);
    // And later batches apply in order after the snapshot.
    bus.servers[0].stats(now, peer(2), 3);
    now += BATCH_DELAY;
    bus.run(now);
    assert_eq!(bus.servers[1].view(), [(peer(2), "lab".into(), 3)]);
}

#[test]
fn a_restarted_server_has_none_of_its_old_members() {
    let now = t0();
    let mut bus = Bus::new(vec![Server::new(1, 1), Server::new(2, 1)]);
    bus.run(now);
    bus.servers[0].join(now, "lab", info(1, 2));
    bus.servers[0].join(now, "lab", info(2, 2));
    let mut now = now + BATCH_DELAY;
    bus.run(now);
    assert_eq!(bus.servers[1].view().len(), 2);
    // The same id, a new run: one member came back to it, one did not.
    bus.servers[0] = Server::new(1, 2);
    bus.servers[0].join(now, "lab", info(2, 5));
    now += BATCH_DELAY;
    bus.run(now);
    assert_eq!(bus.servers[1].view(), [(peer(2), "lab".into(), 5)]);
    // A late word from the old run changes nothing.
    let stale = ClusterMsg::Batch {
        from: bus.servers[0].id(),
        epoch: 1,
        seq: 99,
        changes: vec![Change::Joined {
            pool: "lab".into(),
            info: info(1, 2),
        }],
    };
    bus.servers[1].cluster.handle_message(now, stale);
    bus.run(now);
    assert_eq!(bus.servers[1].view(), [(peer(2), "lab".into(), 5)]);
}

#[test]
fn a_silent_server_loses_its_members_after_dead_after_and_is_met_again() {
    let (mut bus, mut now) = two_servers_one_member();
    bus.cut = vec![0];
    // Heartbeats every second keep coming from server 2 only.
    let cut_at = now;
    while now < cut_at + DEAD_AFTER - HEARTBEAT {
        now += HEARTBEAT;
        bus.run(now);
        assert_eq!(
            bus.servers[1].view().len(),
            1,
            "too soon at {:?}",
            now - cut_at
        );
    }
    now = cut_at + DEAD_AFTER + HEARTBEAT;
    bus.run(now);
    assert!(bus.servers[1].view().is_empty());
    assert_eq!(bus.servers[1].cluster.servers().count(), 0);
    // Mended: its next heartbeat makes it known again, with a snapshot.
    bus.cut.clear();
    now += HEARTBEAT;
    bus.run(now);
    assert_eq!(bus.servers[1].view(), [(peer(1), "lab".into(), 2)]);
}

#[test]
fn changes_go_out_in_bounded_batches_and_a_snapshot_covers_what_waited() {
    let now = t0();
    let mut s = Server::new(1, 1);
    for n in 0..(2 * MAX_BATCH as u128 + 10) {
        s.join(now, "lab", info(n, 1));
    }
    // The first change went at once, alone; then two full batches; nine
    // wait for the rest of the delay.
    assert_eq!(batches(&mut s), [(1, 1), (2, MAX_BATCH), (3, MAX_BATCH)]);
    assert_eq!(s.cluster.poll_timeout(), Some(now + BATCH_DELAY));
    let members = s.local.values().cloned().collect();
    let pages = s.cluster.snapshot(uuid::Uuid::nil(), members);
    let Some(Output::Broadcast(ClusterMsg::Batch {
        seq: 4, changes, ..
    })) = s.cluster.poll_output()
    else {
        panic!("the waiting changes first");
    };
    assert_eq!(changes.len(), 9);
    // 1,034 members: two pages, both of batch 3.
    let shape: Vec<(u64, u32, u32, usize)> = pages
        .iter()
        .map(|p| match p {
            ClusterMsg::Snapshot {
                seq,
                page,
                pages,
                members,
                ..
            } => (*seq, *page, *pages, members.len()),
            other => panic!("a snapshot page, not {other:?}"),
        })
        .collect();
    let rest = 2 * MAX_BATCH + 10 - SNAPSHOT_PAGE;
    assert_eq!(shape, [(4, 0, 2, SNAPSHOT_PAGE), (4, 1, 2, rest)]);
}

/// The batches `s` published: (sequence, changes).
fn batches(s: &mut Server) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    while let Some(o) = s.cluster.poll_output() {
        if let Output::Broadcast(ClusterMsg::Batch { seq, changes, .. }) = o {
            out.push((seq, changes.len()));
        }
    }
    out
}

#[test]
fn a_change_after_a_quiet_spell_goes_at_once_and_a_burst_waits_for_one_batch() {
    let start = t0();
    let mut now = start;
    let mut s = Server::new(1, 1);
    s.join(now, "lab", info(1, 1));
    assert_eq!(batches(&mut s), [(1, 1)], "a lone change is not delayed");
    now += Duration::from_millis(10);
    s.join(now, "lab", info(2, 1));
    s.join(now, "lab", info(3, 1));
    assert_eq!(batches(&mut s), [], "within the delay: they wait");
    let due = start + BATCH_DELAY;
    assert_eq!(s.cluster.poll_timeout(), Some(due));
    s.cluster.handle_timeout(due - Duration::from_millis(1));
    assert_eq!(batches(&mut s), []);
    s.cluster.handle_timeout(due);
    assert_eq!(batches(&mut s), [(2, 2)], "together, when due");
    // A quiet spell of more than the delay: the next change goes at once.
    now = due + BATCH_DELAY;
    s.stats(now, peer(1), 4);
    assert_eq!(batches(&mut s), [(3, 1)]);
}

#[test]
fn changes_lost_before_the_cluster_make_the_others_resync() {
    let (mut bus, mut now) = two_servers_one_member();
    // A join the registry's full queue dropped: only its member list has it.
    let lost = info(2, 3);
    bus.servers[0].local.insert(lost.id, ("lab".into(), lost));
    bus.servers[0].cluster.lost_changes();
    now += HEARTBEAT;
    bus.run(now);
    assert_eq!(
        bus.servers[1].view(),
        [(peer(1), "lab".into(), 2), (peer(2), "lab".into(), 3)]
    );
}

#[test]
fn a_large_snapshot_comes_in_pages_and_a_lost_page_is_asked_for_again() {
    let now = t0();
    let mut bus = Bus::new(vec![Server::new(1, 1), Server::new(2, 1)]);
    let n = 2 * SNAPSHOT_PAGE as u128 + 7;
    for i in 0..n {
        let member = info(i, 1);
        bus.servers[0]
            .local
            .insert(member.id, ("lab".into(), member));
    }
    let members = bus.servers[0].local.clone();
    // The last page of the first snapshot is lost: nothing is applied from
    // a torn snapshot, and server 2 asks again once it has waited long
    // enough, and gets all of it.
    bus.lose_snapshot_page = Some(2);
    bus.run(now);
    assert!(bus.servers[1].view().is_empty());
    let mut now = now;
    while now < t0() + SNAPSHOT_RETRY + HEARTBEAT {
        now += HEARTBEAT;
        bus.run(now);
    }
    assert_eq!(bus.servers[1].view().len(), n as usize);
    // A page out of order (the middle one lost) is asked for again at once.
    let mut bus = Bus::new(vec![Server::new(1, 1), Server::new(2, 1)]);
    bus.servers[0].local = members;
    bus.lose_snapshot_page = Some(1);
    bus.run(now);
    assert_eq!(bus.servers[1].view().len(), n as usize);
}
