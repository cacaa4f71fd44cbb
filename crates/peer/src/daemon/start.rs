//! Starting a daemon: its handlers, spool and journal, the node, the
//! signal task, every channel (with its bound), and the loop's task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobmesh_core::Strategy;
use jobmesh_identity::Identity;
use jobmesh_journal::Stopped;
use jobmesh_node::{Node, NodeConfig, UnixClock};
use jobmesh_transport::signal::{self as signal_client, SignalConfig};
use jobmesh_trust::{Credential, Role};
use jobmesh_wire::signal::{ClientMsg, Join};
use jobmesh_wire::{Capability, PeerInfo};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, info_span, warn, Instrument};

use super::{blob_io, Daemon, Inputs};
use crate::api::{
    DaemonConfig, Extensions, Membership, Metrics, PeerHandle, PoolSnapshot, StartError,
    WATCH_QUEUE,
};
use crate::blobs::{MemoryBudget, Spool};
use crate::handlers::{self, SharedHandlers};
use crate::handover::HandoverDir;
use crate::jobs::{Clock, JobTable};
use crate::store::{Steps, Store};
use crate::telemetry::{JournalMetrics, Telemetry};

/// Capacity of the local command channel (submit, cancel, jobs). Full: callers wait.
const COMMAND_QUEUE: usize = 256;
/// Capacity of the link-event channel. Full: link readers wait (SCTP pushes back).
const LINK_EVENT_QUEUE: usize = 1024;
/// Capacity of the signal-event channel. Full: the signal task stops reading.
const SIGNAL_EVENT_QUEUE: usize = 256;
/// Capacity of the signal outgoing channel. Full: the message is dropped
/// (a stats update is superseded by the next; a handshake fails its deadline).
const SIGNAL_OUT_QUEUE: usize = 256;
/// Capacity of the handler-completion channel. Full: handler tasks wait; there
/// are at most `slots` of them.
const DONE_QUEUE: usize = 256;
/// Capacity of the handler-progress channel. Full: the report is dropped
/// (reports are coalesced; the next one carries the news).
const PROGRESS_QUEUE: usize = 1024;

/// Starts a daemon with the built-in handlers on the current tokio runtime.
/// It runs until `shutdown` is cancelled (or [`PeerHandle::shutdown`]), then drains.
pub fn spawn(config: DaemonConfig, shutdown: CancellationToken) -> Result<PeerHandle, StartError> {
    spawn_with(config, Extensions::default(), shutdown)
}

/// Starts a daemon with your own handlers and/or custom strategy.
pub fn spawn_with(
    config: DaemonConfig,
    mut ext: Extensions,
    shutdown: CancellationToken,
) -> Result<PeerHandle, StartError> {
    let missing: Vec<_> = config
        .capabilities
        .iter()
        .filter(|c| !ext.handlers.contains_key(*c))
        .cloned()
        .collect();
    ext.handlers.extend(handlers::builtin(&missing)?);
    let spool = Spool::new(config.spool_dir.as_deref()).map_err(|e| {
        StartError::Invalid(format!(
            "cannot create the blob spool directory{}: {e}",
            config
                .spool_dir
                .as_ref()
                .map(|d| format!(" in {}", d.display()))
                .unwrap_or_default()
        ))
    })?;
    let spool_path = spool.root().to_owned();
    let max_blob_size = config.blobs.max_blob_size;
    let queue_limit = config.dispatcher.queue_limit;
    let journal_metrics = JournalMetrics::default();
    let opened = config
        .data_dir
        .as_deref()
        .map(|dir| Store::open(dir, journal_metrics.observer()))
        .transpose()
        .map_err(StartError::Journal)?;
    let identity = match (config.identity.clone(), config.data_dir.as_deref()) {
        (Some(identity), _) => identity,
        (None, Some(dir)) => crate::store::identity(dir).map_err(StartError::Journal)?,
        (None, None) => Identity::generate(),
    };
    let me = identity.peer_id();
    let credential = membership(&config, &identity)?;
    let handover = config.handover_dir.as_deref().and_then(|dir| {
        HandoverDir::open(dir, &me)
            .inspect_err(|e| warn!(dir = %dir.display(), error = %e, "the handover directory is unusable: blobs to daemons on this host go over the data channel; fix it or pass --handover-dir off"))
            .ok()
            .map(Arc::new)
    });
    let config_data_dir = config.data_dir.clone();
    let join = Join {
        name: config.name.clone(),
        pool: config.pool.clone(),
        capabilities: config.capabilities.clone(),
        slots: config.slots,
        credential: credential.clone(),
        view: config.view.clone(),
    };
    // Validate name/pool with the same rules the server applies.
    let probe = jobmesh_wire::signal::encode(&ClientMsg::Hello(join.hello(&identity, "probe")));
    ClientMsg::decode(probe.as_bytes()).map_err(|e| StartError::Invalid(e.to_string()))?;

    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (signal_tx, signal_rx) = mpsc::channel(SIGNAL_EVENT_QUEUE);
    let (signal_out, signal_out_rx) = mpsc::channel(SIGNAL_OUT_QUEUE);
    let (link_tx, link_rx) = mpsc::channel(LINK_EVENT_QUEUE);
    let (opened_tx, opened_rx) = mpsc::channel(LINK_EVENT_QUEUE);
    let (done_tx, done_rx) = mpsc::channel(DONE_QUEUE);
    let (progress_tx, progress_rx) = mpsc::channel(PROGRESS_QUEUE);
    let (transfer_tx, transfer_rx) = mpsc::channel(blob_io::TRANSFER_QUEUE);
    let (file_read_tx, file_read_rx) = mpsc::channel(crate::handover::READ_QUEUE);
    let (watch_tx, _) = broadcast::channel(WATCH_QUEUE);
    let (observed_tx, _) = broadcast::channel(crate::api::OBSERVED_QUEUE);
    let journaled = opened.is_some();
    // The daemon's handlers, which the node's input checks read too: one
    // map, changed at run time by `PeerHandle::add_capability` and
    // `remove_capability`.
    let handlers = Arc::new(std::sync::RwLock::new(std::mem::take(&mut ext.handlers)));
    let grant = credential.as_ref().map(|c| c.grant().clone());
    let node = new_node(
        &config,
        identity.clone(),
        credential,
        journaled,
        handlers.clone(),
        ext.strategy.take(),
        handover.as_ref().map(|h| h.token().to_owned()),
    );
    let (capabilities_tx, capabilities_rx) = watch::channel(config.capabilities.clone());
    let me_info = PeerInfo {
        id: me,
        name: config.name.clone(),
        capabilities: config.capabilities.clone(),
        stats: node.stats().clone(),
    };
    let (pool_tx, pool_rx) = watch::channel(PoolSnapshot {
        connected: false,
        synced: false,
        me: me_info,
        peers: Vec::new(),
        refused: None,
        links: Default::default(),
        link_errors: Default::default(),
    });
    let stopped = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let traffic = config.rtc.traffic.clone();
    let telemetry = Arc::new(Telemetry::new(
        crate::telemetry::Now {
            pool: pool_rx.clone(),
            counters: metrics.clone(),
            traffic: traffic.clone(),
        },
        &journal_metrics,
    ));
    let tracker = TaskTracker::new();
    let signal_cancel = CancellationToken::new();

    let mut signal = SignalConfig::new(config.signal_url.clone(), join.clone(), identity.clone());
    signal.fallbacks.clone_from(&config.signal_fallbacks);
    signal.persist = config.persist;
    signal.capabilities = Some(capabilities_rx);
    if config.signal_url.starts_with("wss:") {
        let tls = signal_client::tls_config(config.ca.as_deref()).map_err(StartError::Invalid)?;
        signal.tls = Some(tls);
    }
    if join.credential.is_some() && signal_client::in_clear(&config.signal_url) {
        warn!(url = %config.signal_url, "joining a closed pool over plain ws:// across the network: anyone on the path sees who is in the pool (proofs and credentials are not secrets, but use wss:// — signal-server --tls-cert — or a TLS proxy)");
    }
    let span = info_span!("peer", id = %me.short(), name = %config.name);
    tracker.spawn(
        signal_client::run(signal, signal_tx, signal_out_rx, signal_cancel.clone())
            .instrument(span.clone()),
    );

    let (store, journal_stopped, resume) = match opened {
        Some(d) => (Some(d.store), Some(d.stopped), d.resume),
        None => (None, None, Vec::new()),
    };
    if !resume.is_empty() {
        info!(
            jobs = resume.len(),
            "resuming the journal's unfinished jobs"
        );
    }
    let api_store = Arc::new(std::sync::Mutex::new(store.clone()));
    let mut daemon = Daemon {
        me,
        journal: store.map(Steps::new),
        node,
        handlers,
        grant,
        capabilities: capabilities_tx,
        links: HashMap::new(),
        waiters: HashMap::new(),
        running: HashMap::new(),
        signal_out,
        link_tx,
        opened_tx,
        done_tx,
        progress_tx,
        pool_tx,
        watch: watch_tx.clone(),
        observed: observed_tx.clone(),
        observing: false,
        table: JobTable::default(),
        clock: Clock::now(),
        connected: false,
        tracker: tracker.clone(),
        jobs_cancel: CancellationToken::new(),
        draining: false,
        metrics: metrics.clone(),
        telemetry: telemetry.clone(),
        spool: Arc::new(spool),
        budget: MemoryBudget::new(config.blobs.memory_budget),
        job_blobs: HashMap::new(),
        receivers: HashMap::new(),
        sending: HashMap::new(),
        outputs: HashMap::new(),
        results: HashMap::new(),
        link_permits: HashMap::new(),
        transfer_tx,
        handover,
        handed: HashMap::new(),
        file_read_tx,
        config,
    };
    let inputs = Inputs {
        commands: cmd_rx,
        signal: signal_rx,
        links: link_rx,
        opened: opened_rx,
        done: done_rx,
        progress: progress_rx,
        transfers: transfer_rx,
        file_reads: file_read_rx,
    };
    // Queued now. Until the pool view is complete the dispatcher concludes
    // nothing about capable workers, and offers a job whose journaled worker
    // the view may yet show to no one else (this peer's own worker included).
    for r in resume {
        daemon.resume(Instant::now(), r);
    }
    // A minute of the pool view for `status`; ends with the daemon.
    let history = Arc::new(std::sync::Mutex::new(crate::status::History::default()));
    tokio::spawn({
        let (history, pool, stop) = (history.clone(), pool_rx.clone(), stopped.clone());
        async move {
            let mut every = tokio::time::interval(crate::status::SAMPLE_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    at = every.tick() => crate::lock(&history).sample(at.into_std(), &pool.borrow()),
                }
            }
        }
    });
    tokio::spawn(
        run_and_close(
            daemon,
            inputs,
            Closing {
                shutdown: shutdown.clone(),
                signal_cancel,
                tracker,
                store: api_store.clone(),
                journal_stopped,
                stopped: stopped.clone(),
            },
        )
        .instrument(span),
    );
    Ok(PeerHandle {
        metrics,
        telemetry,
        traffic,
        id: me,
        key: identity.public(),
        commands: cmd_tx,
        pool: pool_rx,
        watch: watch_tx,
        observed: observed_tx,
        shutdown,
        stopped,
        max_blob_size,
        spool: spool_path,
        store: api_store,
        data_dir: config_data_dir,
        places: Arc::default(),
        history,
        queue_limit,
        available: Arc::new(std::sync::RwLock::new(ext.available)),
    })
}

/// The node of a daemon: its config and handlers' input checks.
fn new_node(
    config: &DaemonConfig,
    identity: Identity,
    credential: Option<Credential>,
    journaled: bool,
    handlers: SharedHandlers,
    strategy: Option<Box<dyn Strategy>>,
    handover: Option<String>,
) -> Node {
    let check = handlers;
    Node::new(NodeConfig {
        identity,
        name: config.name.clone(),
        capabilities: config.capabilities.clone(),
        slots: config.slots,
        progress_interval: config.progress_interval,
        stats_interval: config.stats_interval,
        dispatcher: jobmesh_core::DispatcherConfig {
            view: config.view.clone(),
            ..config.dispatcher.clone()
        },
        strategy,
        max_blob_size: config.blobs.max_blob_size,
        spool: config.blobs.spool,
        journaled,
        // Dial tags differ across restarts under the same peer id.
        seed: rand::random(),
        input_check: Box::new(move |capability, input| {
            let handler = crate::read(&check).get(capability).cloned();
            handler.map_or(Ok(()), |h| h.validate(input))
        }),
        credential,
        allow: config.allow.clone(),
        clock: UnixClock {
            at: Instant::now(),
            unix: crate::store::unix_now(),
        },
        handover,
    })
}

/// This daemon's credential in its pool (`None`: an open pool), checked:
/// for this pool, unexpired, and granting the worker role for every
/// capability it offers.
fn membership(
    config: &DaemonConfig,
    identity: &Identity,
) -> Result<Option<Credential>, StartError> {
    let no = |why: String| StartError::Membership(why);
    let pool = &config.pool;
    let credential = match &config.membership {
        Membership::Open if config.slots == 0 => {
            // Nobody can run anything on a peer without slots: nothing to warn of.
            info!(%pool, "pool {pool:?} is open (this peer only submits)");
            return Ok(None);
        }
        Membership::Open => {
            warn!(%pool, "pool {pool:?} is OPEN: any peer that reaches the signal-server can join it, see its members and submit jobs to this peer. For development only; closed pools: peer pool init / invite, then --token");
            return Ok(None);
        }
        Membership::Credential(c) => c.clone(),
        Membership::Invited(invitation) => {
            let c = invitation.redeem(&identity.public());
            if let Some(dir) = &config.data_dir {
                crate::store::keep_credential(dir, &c).map_err(no)?;
            }
            c
        }
        Membership::Kept => {
            let kept = match &config.data_dir {
                Some(dir) => crate::store::credential(dir).map_err(no)?,
                None => None,
            };
            kept.ok_or_else(|| {
                no(format!(
                    "pool {pool:?} is closed and this peer holds no credential for it: pass --token FILE (an invitation from the pool's owner: peer pool invite) once, or --open for an open development pool"
                ))
            })?
        }
    };
    let grant = credential
        .verify(
            pool,
            &credential.grant().pool_key,
            &identity.public(),
            crate::store::unix_now(),
            None,
        )
        .map_err(|e| no(format!("this peer's credential for pool {pool:?}: {e}")))?;
    if !config.capabilities.is_empty() {
        grant
            .require(
                Role::Worker,
                config.capabilities.iter().map(Capability::as_str),
            )
            .map_err(|e| {
                no(format!(
                    "this peer offers capabilities, but its credential for pool {pool:?} is refused ({e}): ask the pool's owner for an invitation with the worker role (peer pool invite --role worker --capabilities ...)"
                ))
            })?;
    }
    Ok(Some(credential))
}

/// What a daemon's task closes once its loop has ended, in order.
struct Closing {
    shutdown: CancellationToken,
    signal_cancel: CancellationToken,
    tracker: TaskTracker,
    /// The API's way to the journal: taken so that no submit reaches it.
    store: Arc<std::sync::Mutex<Option<Store>>>,
    journal_stopped: Option<Stopped>,
    /// Cancelled last: the daemon has stopped.
    stopped: CancellationToken,
}

/// Runs the daemon's loop until it has drained, then stops its tasks, the
/// signal connection and the journal, each within 5 s.
async fn run_and_close(daemon: Daemon, inputs: Inputs, c: Closing) {
    daemon.run(inputs, c.shutdown).await;
    c.signal_cancel.cancel();
    c.tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), c.tracker.wait())
        .await
        .is_err()
    {
        warn!("some tasks did not stop within 5 s of shutdown");
    }
    // The journal closes once no submit can reach it any more.
    crate::lock(&c.store).take();
    if let Some(closed) = c.journal_stopped {
        if tokio::time::timeout(Duration::from_secs(5), closed.wait())
            .await
            .is_err()
        {
            warn!("the journal did not close within 5 s of shutdown");
        }
    }
    info!("stopped");
    c.stopped.cancel();
}
