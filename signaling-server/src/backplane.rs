//! The NATS glue of a clustered signal-server (`--cluster nats://…`): one
//! task that carries [`Cluster`]'s messages over NATS subjects, feeds it
//! what arrives, the registry's local changes and the time, applies what it
//! outputs to the registry, and forwards handshakes to peers connected to
//! other servers. Every decision is in [`crate::cluster`]; this only moves
//! bytes.
//!
//! Subjects: [`ALL`] (batches and heartbeats, to every server),
//! `jobmesh.cluster.to.<server-id>` (snapshot requests and snapshots, to
//! one), `jobmesh.cluster.relay.<server-id>` (handshakes for its peers) and
//! [`RELAY_ANY`] (a handshake for a peer the sender's server does not know
//! yet: it joined another server a moment ago).
//! Payloads are JSON.
//!
//! Bounds: relays to other servers wait in a queue of [`RELAY_QUEUE`]
//! (full: the relay is refused as busy, as a full local queue is); a
//! publish that NATS does not take within [`PUBLISH_WAIT`] is dropped (a
//! lost batch shows as a gap and heals by snapshot; a lost relay fails that
//! handshake's deadline). While NATS is away the server serves its own
//! peers as ever; the others' members go after [`crate::cluster::DEAD_AFTER`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use jobmesh_wire::signal::Handshake;
use jobmesh_wire::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

use crate::cluster::{Cluster, ClusterMsg, Output, ServerId, HEARTBEAT};
use crate::server::{bump, ClusterCounters, Shared};

/// Batches and heartbeats: every server.
pub(crate) const ALL: &str = "jobmesh.cluster.all";
/// Handshakes for a peer whose server is not known yet: every server.
const RELAY_ANY: &str = "jobmesh.cluster.relay.any";
/// Relays to other servers' peers waiting to be published.
pub(crate) const RELAY_QUEUE: usize = 1024;
/// How long a publish may wait for NATS before it is dropped.
const PUBLISH_WAIT: Duration = Duration::from_millis(200);

fn to_subject(server: ServerId) -> String {
    format!("jobmesh.cluster.to.{server}")
}

fn relay_subject(server: ServerId) -> String {
    format!("jobmesh.cluster.relay.{server}")
}

/// A handshake from a peer of one server to a peer of another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RemoteRelay {
    /// The server the sender is connected to (which admitted it).
    pub(crate) via: ServerId,
    /// The sender's pool, as its server says: the recipient must be of it.
    pub(crate) pool: String,
    /// The sender.
    pub(crate) from: PeerId,
    /// The recipient, connected to the server the relay is published to.
    pub(crate) to: PeerId,
    /// The handshake.
    pub(crate) signal: Handshake,
}

/// How a server reaches the cluster, for its connections' relays.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    /// This server in the cluster.
    pub(crate) me: ServerId,
    /// Relays for peers of other servers, by server (None: not known yet,
    /// to every server); bounded: [`RELAY_QUEUE`].
    pub(crate) relays: mpsc::Sender<(Option<ServerId>, RemoteRelay)>,
    /// Notified when the registry has local changes to publish (a wake-up
    /// not taken yet is kept once: nothing queues).
    pub(crate) local_changes: Arc<Notify>,
}

/// Runs the cluster of `shared` over `client` until the server stops.
pub(crate) async fn run(
    shared: Arc<Shared>,
    client: async_nats::Client,
    link: Link,
    mut relays: mpsc::Receiver<(Option<ServerId>, RemoteRelay)>,
) {
    let me = link.me;
    let counters = &shared.counters().cluster;
    // Later runs have later epochs (Unix milliseconds at start).
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut cluster = Cluster::new(me, epoch);
    let subscribe = async {
        let all = client.subscribe(ALL).await?;
        let mine = client.subscribe(to_subject(me)).await?;
        let relayed = client.subscribe(relay_subject(me)).await?;
        let any = client.subscribe(RELAY_ANY).await?;
        Ok::<_, async_nats::SubscribeError>((all, mine, relayed, any))
    };
    let (mut all, mut mine, mut relayed, mut any) = match subscribe.await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot subscribe to the cluster's subjects; serving alone");
            return;
        }
    };
    info!(server = %me, epoch, "joined the cluster");
    // The first heartbeat now: from then on the cluster always has a
    // deadline (the next heartbeat at the latest), so a wake-up below is
    // always due at a fixed instant, however often messages arrive.
    cluster.handle_timeout(Instant::now());
    loop {
        let wake = cluster
            .poll_timeout()
            .map_or_else(|| tokio::time::Instant::now() + HEARTBEAT, Into::into);
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            Some(m) = all.next() => receive(&mut cluster, &m.payload),
            Some(m) = mine.next() => receive(&mut cluster, &m.payload),
            Some(m) = relayed.next() => deliver(&shared, me, &m.payload),
            Some(m) = any.next() => deliver(&shared, me, &m.payload),
            Some((server, relay)) = relays.recv() => {
                let subject = server.map_or_else(|| RELAY_ANY.to_owned(), relay_subject);
                match serde_json::to_vec(&relay) {
                    Ok(bytes) => {
                        bump(&counters.relays_out);
                        publish(&client, counters, subject, bytes).await;
                    }
                    Err(e) => debug!(error = %e, "relay not encoded"),
                }
            }
            () = link.local_changes.notified() => {
                let (changes, lost) = shared.lock().registry.take_local_changes();
                let now = Instant::now();
                for change in changes {
                    cluster.local_change(now, change);
                }
                if lost {
                    warn!("local changes overflowed the cluster queue; the other servers will ask for a snapshot");
                    cluster.lost_changes();
                }
            }
            () = tokio::time::sleep_until(wake) => cluster.handle_timeout(Instant::now()),
        }
        while let Some(out) = cluster.poll_output() {
            match out {
                Output::Broadcast(msg) => {
                    if matches!(msg, ClusterMsg::Batch { .. }) {
                        bump(&counters.batches_published);
                    }
                    send(&client, counters, ALL.to_owned(), &msg).await;
                }
                Output::SendTo(to, msg) => {
                    if matches!(msg, ClusterMsg::SnapshotRequest { .. }) {
                        bump(&counters.snapshots_requested);
                    }
                    send(&client, counters, to_subject(to), &msg).await;
                }
                Output::SnapshotFor(to) => {
                    bump(&counters.snapshots_sent);
                    let members = shared.lock().registry.local_members();
                    for page in cluster.snapshot(to, members) {
                        send(&client, counters, to_subject(to), &page).await;
                    }
                }
                Output::Apply { server, change } => {
                    bump(&counters.changes_applied);
                    let mut inner = shared.lock();
                    for pool in inner.registry.apply_remote(server, change) {
                        inner.changed(&pool);
                    }
                }
            }
        }
        let servers = cluster.servers().count() as u64;
        counters.servers.store(servers, Ordering::Relaxed);
    }
}

fn receive(cluster: &mut Cluster, payload: &[u8]) {
    match serde_json::from_slice::<ClusterMsg>(payload) {
        Ok(msg) => cluster.handle_message(Instant::now(), msg),
        Err(e) => warn!(error = %e, "a cluster message that does not decode; ignored"),
    }
}

/// Hands a relay from another server's peer to this server's recipient, if
/// the recipient is connected here and of the pool the sender's server
/// vouches for, and the sender is not known here as someone else's (or as
/// this server's own) peer.
fn deliver(shared: &Shared, me: ServerId, payload: &[u8]) {
    let relay: RemoteRelay = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "a relay from the cluster that does not decode; ignored");
            return;
        }
    };
    if relay.via == me {
        return;
    }
    let inner = shared.lock();
    let registry = &inner.registry;
    if registry.owner(&relay.to) != Some(None)
        || registry.pool_of(&relay.to) != Some(relay.pool.as_str())
    {
        // For a peer of another server (a relay to every server), or of
        // another pool: not this server's to deliver.
        return;
    }
    let elsewhere = match registry.owner(&relay.from) {
        // Connected here: it cannot speak through another server.
        Some(None) => true,
        Some(Some(server)) => server != relay.via,
        // Not known here yet: its server vouches for it.
        None => false,
    };
    if elsewhere {
        debug!(from = %relay.from.short(), "relay from a peer another server owns here; dropped");
        return;
    }
    match inner.deliver_to(relay.from, relay.to, relay.signal) {
        Ok(()) => bump(&shared.counters().cluster.relays_in),
        Err(e) => debug!(to = %relay.to.short(), ?e, "relay from the cluster not delivered"),
    }
}

async fn send(
    client: &async_nats::Client,
    counters: &ClusterCounters,
    subject: String,
    msg: &ClusterMsg,
) {
    match serde_json::to_vec(msg) {
        Ok(bytes) => publish(client, counters, subject, bytes).await,
        Err(e) => debug!(error = %e, "cluster message not encoded"),
    }
}

async fn publish(
    client: &async_nats::Client,
    counters: &ClusterCounters,
    subject: String,
    bytes: Vec<u8>,
) {
    let publish = client.publish(subject, bytes.into());
    let dropped = match tokio::time::timeout(PUBLISH_WAIT, publish).await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => format!("publish failed: {e}"),
        Err(_) => "NATS did not take it in time".to_owned(),
    };
    bump(&counters.publishes_dropped);
    debug!(%dropped, "cluster message dropped");
}
