//! Test helpers for jobmesh: real servers and peers on `127.0.0.1:0`, each
//! behind a guard that stops it on drop, and waits with deadlines (never sleeps);
//! the fault suite's bookkeeping ([`faults`]) and, for root, a lossy or slow
//! link between network namespaces ([`netns`]).

use std::future::Future;
use std::time::Duration;

use jobmesh_identity::{Identity, Nonce, Purpose};
use jobmesh_peer::control;
use jobmesh_peer::jobs::WatchEvent;
use jobmesh_peer::Credential;
use jobmesh_peer::{DaemonConfig, PeerHandle, PoolSnapshot};
use jobmesh_transport::rtc::{self, LinkEvent, LinkHandle, RtcConfig};
use jobmesh_transport::signal::{self as signal_client, SignalConfig, SignalEvent};
use jobmesh_wire::dc::DcMsg;
use jobmesh_wire::link::binding_message;
use jobmesh_wire::signal::{ClientMsg, Handshake, Join, ServerMsg};
use jobmesh_wire::{Capability, PeerId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub mod faults;
pub mod mitm;
pub mod natlab;
pub mod netns;
pub mod process;
mod signal;
pub mod ws;
pub use signal::{SignalGuard, SilentClient};

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Logs to the test's captured output; `JOBMESH_LOG` sets the filter (default `warn`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JOBMESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,webrtc=error,rtc=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Awaits `fut` for at most [`DEADLINE`]; panics naming `what` otherwise.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// A capability name known to be valid.
pub fn cap(name: &str) -> Capability {
    Capability::new(name).expect("test capability names are valid")
}

/// RTC settings for tests: loopback only.
pub fn loopback_rtc() -> RtcConfig {
    RtcConfig {
        udp_addrs: vec!["127.0.0.1:0".into()],
        ..RtcConfig::default()
    }
}

/// A daemon running in this process; shut down on drop.
#[derive(Debug)]
pub struct PeerGuard {
    /// The library API of the daemon.
    pub handle: PeerHandle,
    /// Its name.
    pub name: String,
}

impl PeerGuard {
    /// Starts a daemon in `pool` with `caps` and `slots`.
    pub fn start(signal_url: &str, pool: &str, name: &str, caps: &[&str], slots: u32) -> Self {
        Self::start_configured(signal_url, pool, name, caps, slots, |_| {})
    }

    /// Like [`start`](Self::start), with `tweak` applied to the config.
    pub fn start_configured(
        signal_url: &str,
        pool: &str,
        name: &str,
        caps: &[&str],
        slots: u32,
        tweak: impl FnOnce(&mut DaemonConfig),
    ) -> Self {
        let mut config = DaemonConfig::new(signal_url, name, pool);
        config.membership = jobmesh_peer::Membership::Open;
        config.capabilities = caps.iter().map(|c| cap(c)).collect();
        config.slots = slots;
        config.rtc = loopback_rtc();
        config.grace = Duration::from_secs(2);
        // Blobs go over WebRTC, as between hosts (a tweak may hand over).
        config.handover_dir = None;
        tweak(&mut config);
        Self::start_with(config)
    }

    /// Starts a daemon with a full config.
    pub fn start_with(config: DaemonConfig) -> Self {
        let name = config.name.clone();
        let handle = jobmesh_peer::spawn(config, CancellationToken::new())
            .expect("test daemon config is valid");
        Self { handle, name }
    }

    /// Waits until this daemon sees `pred` true of its pool.
    pub async fn wait_pool(
        &self,
        what: &str,
        pred: impl FnMut(&PoolSnapshot) -> bool,
    ) -> PoolSnapshot {
        self.handle
            .wait_pool(DEADLINE, pred)
            .await
            .unwrap_or_else(|e| panic!("{}: {what}: {e}", self.name))
    }

    /// Waits until this daemon sees `n` other peers advertising `capability`.
    pub async fn wait_capable(&self, capability: &str, n: usize) {
        let c = cap(capability);
        self.wait_pool(&format!("{n} peers with {capability}"), |s| {
            s.connected
                && s.peers
                    .iter()
                    .filter(|p| p.capabilities.contains(&c))
                    .count()
                    >= n
        })
        .await;
    }

    /// Shuts down and waits until stopped.
    pub async fn stop(self) {
        self.handle.shutdown();
        within("the daemon to stop", self.handle.stopped()).await;
    }

    /// Serves this daemon's control socket, in a private temporary
    /// directory, until the guard is dropped.
    pub async fn serve_control(&self) -> ControlGuard {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join(format!("{}.sock", self.name));
        let listener = control::bind(&path).await.expect("bind the control socket");
        let stop = CancellationToken::new();
        tokio::spawn(control::serve(
            listener,
            path.clone(),
            self.handle.clone(),
            stop.clone(),
        ));
        ControlGuard {
            path,
            stop,
            _dir: dir,
        }
    }
}

/// A daemon's control socket being served; stops serving on drop.
pub struct ControlGuard {
    /// The socket.
    pub path: std::path::PathBuf,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for ControlGuard {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Reads `watch` until an event named `event` (`"started"`, `"finished"`, ...).
pub async fn next_event_named(
    watch: &mut tokio::sync::broadcast::Receiver<WatchEvent>,
    event: &str,
) -> WatchEvent {
    within(&format!("a {event} event"), async {
        loop {
            let e = watch.recv().await.expect("watching the daemon's events");
            if e.event == event {
                return e;
            }
        }
    })
    .await
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// A bare peer speaking the wires directly, for feeding hostile input to
/// daemons: it joins a pool and can open a raw data channel to any member.
pub struct RawPeer {
    /// Its id.
    pub id: PeerId,
    identity: Identity,
    credential: Option<Credential>,
    next_link: u64,
    out: mpsc::Sender<ClientMsg>,
    events: mpsc::Receiver<SignalEvent>,
    link_tx: mpsc::Sender<LinkEvent>,
    link_rx: mpsc::Receiver<LinkEvent>,
    /// Messages of a batch received, not yet returned.
    batched: std::collections::VecDeque<Vec<u8>>,
    cancel: CancellationToken,
}

impl RawPeer {
    /// Joins `pool` (submit-only) and waits for the welcome.
    pub async fn join(signal_url: &str, pool: &str) -> Self {
        Self::join_as(signal_url, pool, Identity::generate()).await
    }

    /// Joins `pool` as `identity`.
    pub async fn join_as(signal_url: &str, pool: &str, identity: Identity) -> Self {
        Self::join_with(signal_url, pool, identity, None).await
    }

    /// Joins `pool` as `identity`, showing `credential` (a closed pool's)
    /// to the server and in its link handshakes.
    pub async fn join_with(
        signal_url: &str,
        pool: &str,
        identity: Identity,
        credential: Option<Credential>,
    ) -> Self {
        let id = identity.peer_id();
        let join = Join {
            // Names are unique in a pool: several raw peers may share one.
            name: format!("raw-{}", id.0.simple()),
            pool: pool.into(),
            capabilities: Vec::new(),
            slots: 0,
            credential: credential.clone(),
            view: None,
        };
        let (ev_tx, mut events) = mpsc::channel(64);
        let (out, out_rx) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        tokio::spawn(signal_client::run(
            SignalConfig::new(signal_url.into(), join, identity.clone()),
            ev_tx,
            out_rx,
            cancel.clone(),
        ));
        within("the raw peer's welcome", async {
            loop {
                if let Some(SignalEvent::Message(ServerMsg::Welcome { .. })) = events.recv().await {
                    break;
                }
            }
        })
        .await;
        let (link_tx, link_rx) = mpsc::channel(64);
        Self {
            id,
            identity,
            credential,
            next_link: 0,
            out,
            events,
            link_tx,
            link_rx,
            batched: std::collections::VecDeque::new(),
            cancel,
        }
    }

    /// Opens a link to `peer` and passes its handshake, as a member would.
    pub async fn dial(&mut self, peer: PeerId) -> LinkHandle {
        let link = self.dial_unproven(peer).await;
        self.handshake(&link).await;
        link
    }

    /// Runs the link handshake (`jobmesh_wire::link`) on `link`, written
    /// from the protocol's definitions rather than the node's code: sends
    /// this peer's hello and proof, checks the remote's.
    pub async fn handshake(&mut self, link: &LinkHandle) {
        let fingerprints = link.fingerprints();
        let nonce = Nonce::random();
        let hello = DcMsg::LinkHello {
            key: self.identity.public(),
            nonce,
            credential: self.credential.clone().map(Box::new),
        };
        link.try_send(hello.encode()).expect("queued");
        let DcMsg::LinkHello {
            key, nonce: theirs, ..
        } = self.recv_msg().await
        else {
            panic!("the remote's first message is not its link_hello");
        };
        assert_eq!(key.peer_id(), link.peer(), "the remote holds its id's key");
        let mine = binding_message(
            &fingerprints.local,
            &fingerprints.remote,
            &nonce,
            &theirs,
            &link.peer(),
        );
        let sig = self.identity.sign(Purpose::ChannelBinding, &mine);
        link.try_send(DcMsg::LinkProof { sig }.encode())
            .expect("queued");
        let DcMsg::LinkProof { sig } = self.recv_msg().await else {
            panic!("the remote's second message is not its link_proof");
        };
        let its = binding_message(
            &fingerprints.remote,
            &fingerprints.local,
            &theirs,
            &nonce,
            &self.id,
        );
        key.verify(Purpose::ChannelBinding, &its, &sig)
            .expect("the remote's proof verifies");
    }

    /// Opens a data channel to `peer`, without the link handshake.
    pub async fn dial_unproven(&mut self, peer: PeerId) -> LinkHandle {
        let out = self.out.clone();
        let relay =
            move |signal: Handshake| out.try_send(ClientMsg::Relay { to: peer, signal }).is_ok();
        let (answer_tx, answer_rx) = oneshot::channel();
        let config = loopback_rtc();
        self.next_link += 1;
        let link_id = self.next_link;
        let dial = rtc::dial(
            &config,
            peer,
            link_id,
            relay,
            answer_rx,
            self.link_tx.clone(),
        );
        tokio::pin!(dial);
        let mut answer_tx = Some(answer_tx);
        within("the raw data channel to open", async {
            loop {
                tokio::select! {
                    r = &mut dial => return r.expect("raw dial succeeds"),
                    ev = self.events.recv() => {
                        if let Some(SignalEvent::Message(ServerMsg::Relayed { from, signal: Handshake::Answer { sdp, .. } })) = ev {
                            if from == peer {
                                if let Some(tx) = answer_tx.take() { let _ = tx.send(sdp); }
                            }
                        }
                    }
                }
            }
        })
        .await
    }

    /// Waits for an offer relayed to this peer; returns its sender, its dial
    /// tag and its SDP.
    pub async fn next_offer(&mut self) -> (PeerId, u64, String) {
        within("an offer", async {
            loop {
                if let Some(SignalEvent::Message(ServerMsg::Relayed {
                    from,
                    signal: Handshake::Offer { sdp, dial },
                })) = self.events.recv().await
                {
                    return (from, dial, sdp);
                }
            }
        })
        .await
    }

    /// Answers `peer`'s offer (`tag`, `sdp`); returns the link once its
    /// channel is open, without the link handshake.
    pub async fn answer(&mut self, peer: PeerId, tag: u64, sdp: String) -> LinkHandle {
        let out = self.out.clone();
        let relay = move |mut signal: Handshake| {
            if let Handshake::Answer { dial, .. } = &mut signal {
                *dial = tag;
            }
            out.try_send(ClientMsg::Relay { to: peer, signal }).is_ok()
        };
        self.next_link += 1;
        let config = loopback_rtc();
        let answer = rtc::answer(
            &config,
            peer,
            self.next_link,
            sdp,
            relay,
            self.link_tx.clone(),
        );
        within("the answered channel to open", answer)
            .await
            .expect("the answer succeeds")
    }

    /// Passes every data-channel message between links `a` and `b` both
    /// ways, as they come, until either closes; returns every message seen
    /// (batches split), in order.
    pub async fn pipe(&mut self, a: &LinkHandle, b: &LinkHandle) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        while let Some(ev) = within("a piped message", self.link_rx.recv()).await {
            match ev {
                LinkEvent::Message { link_id, data, .. } => {
                    seen.extend(jobmesh_wire::blob::Frame::split(&data).map(<[u8]>::to_vec));
                    let to = if link_id == a.link_id() { b } else { a };
                    if to.try_send(data.to_vec()).is_err() {
                        break;
                    }
                }
                LinkEvent::Closed { .. } => break,
            }
        }
        seen
    }

    /// Sends `n` relays of `signal` to `peer` as fast as the socket takes
    /// them, in the background.
    pub fn relay_flood(&self, peer: PeerId, n: usize, signal: Handshake) {
        let out = self.out.clone();
        tokio::spawn(async move {
            for _ in 0..n {
                let relay = ClientMsg::Relay {
                    to: peer,
                    signal: signal.clone(),
                };
                if out.send(relay).await.is_err() {
                    return;
                }
            }
        });
    }

    /// Waits until the pool view shows a member named `name`; returns its id.
    pub async fn member(&mut self, name: &str) -> PeerId {
        within("the member to show in the raw peer's view", async {
            loop {
                if let Some(SignalEvent::Message(ServerMsg::View { peers, .. })) =
                    self.events.recv().await
                {
                    if let Some(p) = peers.iter().find(|p| p.name == name) {
                        return p.id;
                    }
                }
            }
        })
        .await
    }

    /// Sends `peer` `n` offers of one real SDP, each under a new dial tag,
    /// each once the answer to the one before came back: every one makes
    /// `peer` start answering afresh, replacing the connection it was
    /// opening. The raw side never completes a handshake.
    pub async fn offer_flood(&mut self, peer: PeerId, n: u64) {
        let (sdp_tx, mut sdp_rx) = mpsc::channel(1);
        let relay = move |signal: Handshake| match signal {
            Handshake::Offer { sdp, .. } => sdp_tx.try_send(sdp).is_ok(),
            _ => true,
        };
        let (_answer_tx, answer_rx) = oneshot::channel();
        let config = loopback_rtc();
        // Pending for the whole flood: it only gives its offer.
        let dial = rtc::dial(&config, peer, 1, relay, answer_rx, self.link_tx.clone());
        tokio::pin!(dial);
        let sdp = within("a real offer", async {
            tokio::select! {
                r = &mut dial => panic!("the raw dial ended early: {:?}", r.err()),
                sdp = sdp_rx.recv() => sdp.expect("the offer"),
            }
        })
        .await;
        for tag in 1..=n {
            let offer = Handshake::Offer {
                sdp: sdp.clone(),
                dial: tag,
            };
            self.out
                .try_send(ClientMsg::Relay {
                    to: peer,
                    signal: offer,
                })
                .expect("the signal queue takes the offer");
            within("the answer to an offer", async {
                loop {
                    if let Some(SignalEvent::Message(ServerMsg::Relayed {
                        from,
                        signal: Handshake::Answer { dial, .. },
                    })) = self.events.recv().await
                    {
                        if from == peer && dial == tag {
                            return;
                        }
                    }
                }
            })
            .await;
        }
    }

    /// The next message received (one of a batch, or a data-channel
    /// message alone).
    async fn recv_frame(&mut self) -> Vec<u8> {
        if let Some(next) = self.batched.pop_front() {
            return next;
        }
        match within("a data-channel message", self.link_rx.recv()).await {
            Some(LinkEvent::Message { data, .. }) => {
                self.batched
                    .extend(jobmesh_wire::blob::Frame::split(&data).map(<[u8]>::to_vec));
                self.batched.pop_front().unwrap_or_default()
            }
            Some(LinkEvent::Closed { .. }) | None => panic!("raw link closed"),
        }
    }

    /// The next message received, decoded.
    pub async fn recv_msg(&mut self) -> DcMsg {
        DcMsg::decode(&self.recv_frame().await).expect("a valid data-channel message")
    }

    /// The next message received, decoded as JSON.
    pub async fn recv_json(&mut self) -> serde_json::Value {
        serde_json::from_slice(&self.recv_frame().await).expect("peers send JSON")
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts a daemon running every exec handler declared in the TOML file
/// `handlers` (added to `config`'s capabilities).
pub fn start_exec_worker(mut config: DaemonConfig, handlers: &std::path::Path) -> PeerHandle {
    let mut ext = jobmesh_peer::Extensions::default();
    for (c, h) in jobmesh_peer::exec::load(handlers).expect("a valid exec config") {
        config.capabilities.push(c.clone());
        ext.handlers.insert(c, std::sync::Arc::new(h));
    }
    jobmesh_peer::spawn_with(config, ext, CancellationToken::new()).expect("start the exec worker")
}

/// Waits until `cond` holds, checking every 10 ms, for at most [`DEADLINE`];
/// panics naming `what` otherwise. Only for states no event announces (a
/// file another task removes, a process exiting); everything else awaits
/// its event.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
