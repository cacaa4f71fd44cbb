//! WebRTC links: one peer connection with one reliable, ordered data channel
//! (`"jobmesh"`) per remote peer, signalled non-trickle (the full SDP, after ICE
//! gathering, in one offer and one answer).
//!
//! An open link is a [`LinkHandle`] plus two tasks:
//! * the **reader** is the one task that polls the data channel; it forwards each
//!   message to the daemon's bounded `events` channel with `send().await`, after
//!   taking its size in [`Credit`] from the daemon's byte budget
//!   ([`RtcConfig::receive_budget`], shared by all links), which the daemon
//!   gives back when it has handled the message: a slow daemon slows this
//!   link's reads (and SCTP flow control slows the remote) once either the
//!   message count or the bytes waiting reach their bound. It emits exactly
//!   one [`LinkEvent::Closed`] when the link ends, for any reason;
//! * the **writer** drains the handle's two bounded queues into `send()`,
//!   which waits while the connection's send buffer
//!   ([`RtcConfig::send_buffer_limit`]) is full: the control queue
//!   ([`LINK_SEND_QUEUE`] messages, `try_send`) always first, then the bulk
//!   queue ([`BULK_QUEUE`] blob chunks, [`BulkSender::send`] waits for room).
//!   A control message therefore waits behind at most one send buffer of blob
//!   bytes, never behind a whole blob. Control messages already queued
//!   together go out as one data-channel message, joined by `\n`
//!   ([`batch`]), up to the link's message size: under load one DTLS
//!   record and SCTP chunk carries many of them; alone, a message goes at
//!   once as before.
//!
//! Dropping the handle closes the link.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::rtc::peer_connection::configuration::RTCIceTransportPolicy;
use ::rtc::peer_connection::transport::{RTCIceCandidate, RTCIceProtocol};
use bytes::{Bytes, BytesMut};
use jobmesh_wire::link::Fingerprint;
use jobmesh_wire::signal::Handshake;
use jobmesh_wire::PeerId;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::path::{self, CandidateKind, LinkPath, Protocol};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder,
};

/// Messages one link's writer queue holds. The dispatcher keeps at most a
/// worker's slot count of jobs in flight per link, so a full queue means a
/// peer that stopped reading: the daemon then closes the link.
pub const LINK_SEND_QUEUE: usize = 1024;
/// Blob chunks one link's bulk queue holds (at most 64 KiB each). Full:
/// [`BulkSender::send`] waits, which paces every blob sender on the link.
pub const BULK_QUEUE: usize = 8;
/// The largest message sent between jobmesh peers: webrtc 0.21's default
/// SCTP maximum, and the fastest size measured (`docs/performance.md`).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// How long a closing link may take to flush what was queued before the close.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a closing link checks whether the remote acknowledged everything.
const FLUSH_POLL: Duration = Duration::from_millis(2);
/// The data channel's label.
const LABEL: &str = "jobmesh";

/// Identifies one link instance, so events of a link that was replaced are ignored.
pub type LinkId = u64;

/// Settings for every peer connection.
#[derive(Debug, Clone)]
pub struct RtcConfig {
    /// STUN/TURN server URLs (`stun:host:port`; `peer --ice-server`); none
    /// needed on one host or a LAN. When set, they replace
    /// [`offered_ice_servers`](Self::offered_ice_servers).
    pub ice_servers: Vec<String>,
    /// The STUN and TURN servers the signal-server offered in its last
    /// welcome, TURN with a credential minted for this peer.
    pub offered_ice_servers: Vec<jobmesh_wire::signal::IceServer>,
    /// Only relayed (TURN) candidates: every link goes through a TURN
    /// server. For tests and diagnosis.
    pub relay_only: bool,
    /// Local UDP addresses to bind. The default ([`default_udp_addrs`])
    /// binds every non-loopback interface (`0.0.0.0:0`), or loopback
    /// (`127.0.0.1:0`) on a host that has no other interface up.
    pub udp_addrs: Vec<String>,
    /// Bytes a data channel may hold unsent before `send` waits.
    pub send_buffer_limit: usize,
    /// Deadline for a whole dial or answer, handshake and channel open.
    pub connect_timeout: Duration,
    /// How long to wait for ICE gathering before sending what was gathered.
    pub gather_timeout: Duration,
    /// How often ICE sends connectivity checks while connecting (webrtc's
    /// default is 200 ms; 20 ms opens links sooner for a few extra packets).
    pub ice_check_interval: Duration,
    /// Fault injection for tests; inert unless a test arms it.
    pub faults: Arc<Faults>,
    /// Bytes of received messages the daemon has not handled yet, across all
    /// its links (clones of a config share it): [`RECEIVE_BUDGET`] by
    /// default. Full: link readers wait.
    pub receive_budget: ReceiveBudget,
    /// Bytes sent and received on data channels, by every link of the
    /// daemon (clones of a config share it): for its metrics.
    pub traffic: Traffic,
}

/// Bytes moved over the data channels of one daemon; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    sent: Arc<std::sync::atomic::AtomicU64>,
    received: Arc<std::sync::atomic::AtomicU64>,
}

impl Traffic {
    /// Bytes handed to data channels so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes received on data channels so far.
    pub fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn add(counter: &std::sync::atomic::AtomicU64, bytes: usize) {
        counter.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Default [`RtcConfig::receive_budget`]: 8 MiB, 128 blob chunks.
pub const RECEIVE_BUDGET: usize = 8 * 1024 * 1024;

/// A byte budget shared by the links of one daemon (see
/// [`RtcConfig::receive_budget`]); clones share it.
#[derive(Debug, Clone)]
pub struct ReceiveBudget {
    bytes: usize,
    available: Arc<Semaphore>,
}

impl ReceiveBudget {
    /// A budget of `bytes` (at least 1, at most `u32::MAX`).
    pub fn new(bytes: usize) -> Self {
        let bytes = bytes.clamp(1, u32::MAX as usize);
        Self {
            bytes,
            available: Arc::new(Semaphore::new(bytes)),
        }
    }

    /// Takes `len` bytes (all of it for a larger message), waiting for them.
    async fn take(&self, len: usize) -> Credit {
        let n = u32::try_from(len.min(self.bytes)).unwrap_or(u32::MAX);
        Credit {
            _permit: self.available.clone().acquire_many_owned(n).await.ok(),
        }
    }

    /// Bytes taken now (received, not yet handled).
    pub fn in_use(&self) -> usize {
        self.bytes - self.available.available_permits()
    }
}

impl Default for ReceiveBudget {
    fn default() -> Self {
        Self::new(RECEIVE_BUDGET)
    }
}

/// A received message's share of the daemon's receive budget, given back
/// when this is dropped (after the message is handled).
#[derive(Debug)]
pub struct Credit {
    _permit: Option<OwnedSemaphorePermit>,
}

/// Faults a test can arm on every link built from one [`RtcConfig`].
#[derive(Debug, Default)]
pub struct Faults {
    corrupt_chunks: AtomicU32,
}

impl Faults {
    /// Flips a payload byte of each of the next `n` bulk messages (blob
    /// chunks) sent, after their digest was computed: the receiver must
    /// notice.
    pub fn corrupt_next_chunks(&self, n: u32) {
        self.corrupt_chunks.store(n, Ordering::Relaxed);
    }

    fn apply(&self, data: &mut [u8]) {
        let armed = self
            .corrupt_chunks
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if armed {
            if let Some(last) = data.last_mut() {
                *last ^= 0xFF;
            }
        }
    }
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            offered_ice_servers: Vec::new(),
            relay_only: false,
            udp_addrs: default_udp_addrs(),
            // 1 MiB: bounds how long a control message can wait behind blob
            // chunks (~6 ms at 175 MB/s) and still keeps bulk at full speed.
            send_buffer_limit: 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            // A STUN answer takes one round trip, a TURN allocation four:
            // 3 s allows 750 ms ones. Each side waits it out when a server
            // does not answer, so both together stay well inside
            // `connect_timeout`, and links that need no server still open.
            gather_timeout: Duration::from_secs(3),
            ice_check_interval: Duration::from_millis(20),
            faults: Arc::default(),
            receive_budget: ReceiveBudget::default(),
            traffic: Traffic::default(),
        }
    }
}

/// The UDP addresses a daemon binds by default: the wildcard, whose host
/// candidates are the addresses of every non-loopback interface; loopback
/// only where there is no such interface (a bare container or network
/// namespace), so that peers on that host still link. Never both: a
/// loopback socket paired with a remote's public candidates can only fail
/// (EINVAL on every check), which webrtc logs as an error per attempt.
pub fn default_udp_addrs() -> Vec<String> {
    use nix::net::if_::InterfaceFlags;
    let other_interface = nix::ifaddrs::getifaddrs().is_ok_and(|mut all| {
        all.any(|i| {
            i.flags.contains(InterfaceFlags::IFF_UP)
                && !i.flags.contains(InterfaceFlags::IFF_LOOPBACK)
                && i.address
                    .as_ref()
                    .and_then(|a| a.as_sockaddr_in())
                    .is_some()
        })
    });
    let addr = if other_interface {
        "0.0.0.0:0"
    } else {
        "127.0.0.1:0"
    };
    vec![addr.to_owned()]
}

/// What a link reports to the daemon.
#[derive(Debug)]
pub enum LinkEvent {
    /// A data-channel message arrived.
    Message {
        /// From whom.
        peer: PeerId,
        /// On which link.
        link_id: LinkId,
        /// Its bytes.
        data: Bytes,
        /// Its share of the receive budget: drop it once handled.
        credit: Credit,
    },
    /// The link is gone (closed by either side, failed, or dropped).
    Closed {
        /// To whom.
        peer: PeerId,
        /// Which link.
        link_id: LinkId,
    },
}

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// webrtc refused an operation.
    #[error("webrtc: {0}")]
    Webrtc(#[from] webrtc::error::Error),
    /// The handshake or channel open did not finish, in time or at all:
    /// no candidate pair worked. `why` says what each side offered and the
    /// likeliest cause ([`crate::path::explain`]).
    #[error("no data channel with {peer} after {after:?} ({stage}): {why}")]
    NoPath {
        /// With whom.
        peer: PeerId,
        /// From the start of the dial or answer.
        after: Duration,
        /// How far it got.
        stage: &'static str,
        /// What was offered and what that suggests.
        why: String,
    },
    /// The signalling relay is not available.
    #[error("cannot relay the handshake: signal-server connection is down or busy")]
    Relay,
    /// The peer connection ended during setup.
    #[error("peer connection closed during setup ({0})")]
    Closed(&'static str),
    /// The connection's DTLS certificates could not be read, so the link
    /// handshake could not be bound to them.
    #[error("cannot read this connection's DTLS fingerprints ({0})")]
    NoFingerprint(&'static str),
}

/// A handle to an open link. Cloning is not offered: one owner, the daemon.
#[derive(Debug)]
pub struct LinkHandle {
    peer: PeerId,
    link_id: LinkId,
    fingerprints: Fingerprints,
    path: Option<LinkPath>,
    tx: mpsc::Sender<Vec<u8>>,
    bulk: BulkSender,
    cancel: CancellationToken,
    _close_on_drop: DropGuard,
    writer: tokio::task::JoinHandle<()>,
}

/// Why a message could not be queued on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The writer queue is full: the peer is not keeping up.
    #[error("link send queue full ({LINK_SEND_QUEUE} messages)")]
    Full,
    /// The link closed.
    #[error("link closed")]
    Closed,
}

impl LinkHandle {
    /// The remote peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// This link's id.
    pub fn link_id(&self) -> LinkId {
        self.link_id
    }

    /// The DTLS fingerprints of this connection: the link handshake signs
    /// them ([`jobmesh_wire::link`]).
    pub fn fingerprints(&self) -> Fingerprints {
        self.fingerprints
    }

    /// How this link connected: the candidate pair ICE selected and the
    /// setup time (None when webrtc did not say).
    pub fn path(&self) -> Option<LinkPath> {
        self.path
    }

    /// A sender for blob chunks on this link (clones share its queue).
    pub fn bulk(&self) -> BulkSender {
        self.bulk.clone()
    }

    /// Queues one message. Never waits.
    pub fn try_send(&self, data: Vec<u8>) -> Result<(), SendError> {
        self.tx.try_send(data).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// Closes the link; its reader then emits `Closed`. Messages already
    /// queued are still sent (for at most [`FLUSH_TIMEOUT`]).
    pub fn close(&self) {
        self.cancel.cancel();
    }

    /// Closes the link and waits until queued messages are flushed (or
    /// [`FLUSH_TIMEOUT`] passed) and the connection is closed.
    pub async fn close_flushed(self) {
        self.cancel.cancel();
        let _ = self.writer.await;
    }
}

/// The bulk (blob chunk) queue of one link.
#[derive(Debug, Clone)]
pub struct BulkSender {
    tx: mpsc::Sender<Bulk>,
    max_message_size: usize,
}

/// An entry of the bulk queue.
#[derive(Debug)]
enum Bulk {
    Data(Vec<u8>),
    /// Fired once everything queued before it went to the data channel.
    Flushed(oneshot::Sender<()>),
}

impl BulkSender {
    /// The largest message this link carries: [`MAX_MESSAGE_SIZE`], or less
    /// when the remote negotiated a smaller `max-message-size`.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Queues one message behind the link's control messages, waiting while
    /// the bulk queue is full. Cancel-safe: a cancelled send queued nothing.
    pub async fn send(&self, data: Vec<u8>) -> Result<(), SendError> {
        self.tx
            .send(Bulk::Data(data))
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Waits until every message queued before this call has been handed to
    /// the data channel, so a control message sent afterwards (a result
    /// after its blobs) arrives after them: the channel is ordered, but the
    /// writer serves control messages before queued bulk ones.
    pub async fn flush(&self) -> Result<(), SendError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Bulk::Flushed(tx))
            .await
            .map_err(|_| SendError::Closed)?;
        rx.await.map_err(|_| SendError::Closed)
    }
}

/// The SHA-256 fingerprints of the two DTLS certificates of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprints {
    /// This side's certificate, as its own SDP declares it.
    pub local: Fingerprint,
    /// The certificate the remote presented in the DTLS handshake, hashed
    /// here (webrtc has checked it against the remote SDP as well).
    pub remote: Fingerprint,
}

/// Reads the fingerprints of an open connection.
async fn fingerprints(pc: &Arc<dyn PeerConnection>) -> Result<Fingerprints, LinkError> {
    let local = pc
        .local_description()
        .await
        .and_then(|d| Fingerprint::from_sdp(&d.sdp))
        .ok_or(LinkError::NoFingerprint(
            "no sha-256 fingerprint in the local SDP",
        ))?;
    let sctp = pc
        .sctp()
        .await
        .ok_or(LinkError::NoFingerprint("no SCTP transport"))?;
    let certificates = sctp.transport().get_remote_certificates().await?;
    let der = certificates.first().ok_or(LinkError::NoFingerprint(
        "the remote presented no certificate",
    ))?;
    Ok(Fingerprints {
        local,
        remote: Fingerprint(Sha256::digest(der).into()),
    })
}

/// Forwards webrtc's callbacks into channels and a token; never awaits.
struct Forwarder {
    gathered: mpsc::Sender<()>,
    incoming: mpsc::Sender<Arc<dyn DataChannel>>,
    dead: CancellationToken,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Forwarder {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            // Capacity 1: a second Complete (after a restart) is redundant; drop it.
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        debug!(?state, "peer connection state");
        if matches!(
            state,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) {
            self.dead.cancel();
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        // Capacity 1: we expect exactly one channel; any extra is refused by being dropped.
        let _ = self.incoming.try_send(dc);
    }
}

struct Setup {
    pc: Arc<dyn PeerConnection>,
    gathered: mpsc::Receiver<()>,
    incoming: mpsc::Receiver<Arc<dyn DataChannel>>,
    dead: CancellationToken,
    /// Closes `pc` if the dial or answer is dropped half way.
    close: CloseOnDrop,
}

/// Closes a peer connection dropped before it became a link: a dial or an
/// answer abandoned mid-handshake (the daemon replaced it, or stopped).
/// webrtc keeps a connection's sockets and tasks until `close()`, so
/// dropping its last handle would leak them.
struct CloseOnDrop(Option<Arc<dyn PeerConnection>>);

impl CloseOnDrop {
    /// The connection lives on (as a link, or closed by its owner).
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let Some(pc) = self.0.take() else {
            return;
        };
        // Outside a runtime there is nothing left to close it on.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

/// The STUN and TURN servers a connection uses: `--ice-server` overrides
/// what the signal-server offered.
fn ice_servers(config: &RtcConfig) -> Vec<RTCIceServer> {
    if config.ice_servers.is_empty() {
        config
            .offered_ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect()
    } else {
        vec![RTCIceServer {
            urls: config.ice_servers.clone(),
            ..Default::default()
        }]
    }
}

async fn build(config: &RtcConfig) -> Result<Setup, LinkError> {
    let (gathered_tx, gathered) = mpsc::channel(1);
    let (incoming_tx, incoming) = mpsc::channel(1);
    let dead = CancellationToken::new();
    let handler = Arc::new(Forwarder {
        gathered: gathered_tx,
        incoming: incoming_tx,
        dead: dead.clone(),
    });
    let ice_servers = ice_servers(config);
    let settings = SettingEngineBuilder::default()
        // ICE checks every `ice_check_interval` (20 ms) instead of 200 ms while
        // connecting (../shared/webrtc-notes.md, pitfall 1): a few packets more.
        .with_ice_connection_attempts(Some(config.ice_check_interval), None)
        // A dead peer's connection fails after 10 s instead of 25 s.
        .with_ice_timeouts(None, Some(Duration::from_secs(10)), None)
        // jobmesh's candidates are IP addresses: no mDNS. With it on, a host
        // without a multicast route (no default gateway) fails every dial:
        // joining the mDNS group gives ENODEV.
        .with_multicast_dns_mode(::rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_ice_servers(ice_servers)
                .with_ice_transport_policy(if config.relay_only {
                    RTCIceTransportPolicy::Relay
                } else {
                    RTCIceTransportPolicy::All
                })
                .build(),
        )
        .with_setting_engine(settings)
        .with_runtime(crate::runtime::BufferedRuntime::shared())
        .with_handler(handler)
        .with_udp_addrs(config.udp_addrs.clone())
        .with_data_channel_send_buffer_limit(config.send_buffer_limit)
        .build()
        .await?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    Ok(Setup {
        close: CloseOnDrop(Some(pc.clone())),
        pc,
        gathered,
        incoming,
        dead,
    })
}

/// Waits for ICE gathering (bounded) and returns the local SDP.
async fn local_sdp(setup: &mut Setup, config: &RtcConfig) -> Result<String, LinkError> {
    if tokio::time::timeout(config.gather_timeout, setup.gathered.recv())
        .await
        .is_err()
    {
        warn!(after = ?config.gather_timeout, "ICE gathering incomplete; sending the candidates found so far");
    }
    setup
        .pc
        .local_description()
        .await
        .map(|d| d.sdp)
        .ok_or(LinkError::Closed("no local description"))
}

/// The offer a connection with `config` would send, its candidates
/// gathered (at most [`RtcConfig::gather_timeout`]); the connection is
/// closed again. For diagnosis: which candidates this host can offer.
pub async fn gathered_offer(config: &RtcConfig) -> Result<String, LinkError> {
    let mut setup = build(config).await?;
    let pc = setup.pc.clone();
    pc.create_data_channel(LABEL, None).await?;
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    let sdp = local_sdp(&mut setup, config).await;
    let _ = pc.close().await;
    setup.close.disarm();
    sdp
}

/// Messages a channel may deliver before its own open event, kept for the
/// link's reader. The remote's side can open first and send its link
/// handshake at once (hello, then its proof): the events reach this side in
/// either order. More than this before the open is refused.
const MAX_EARLY_MESSAGES: usize = 8;

/// Waits for `dc`'s open event; returns the messages that came before it.
async fn wait_open(dc: &Arc<dyn DataChannel>) -> Result<Vec<Bytes>, LinkError> {
    let mut early = Vec::new();
    loop {
        match dc.poll().await {
            Some(DataChannelEvent::OnOpen) => return Ok(early),
            Some(DataChannelEvent::OnMessage(m)) if !m.data.is_empty() => {
                if early.len() == MAX_EARLY_MESSAGES {
                    return Err(LinkError::Closed(
                        "more messages than a link handshake before the channel opened",
                    ));
                }
                early.push(m.data.freeze());
                debug!(
                    count = early.len(),
                    "a message came before the channel's open event"
                );
            }
            Some(DataChannelEvent::OnClose) | None => {
                return Err(LinkError::Closed("data channel closed before open"))
            }
            Some(_) => {}
        }
    }
}

/// The two SDPs of one dial or answer, kept to explain a failure.
#[derive(Default)]
struct Sdps {
    local: Option<String>,
    remote: Option<String>,
}

/// A dial's or answer's outcome within its deadline: a timeout, or a
/// connection that closed during setup, becomes [`LinkError::NoPath`] with
/// what the SDPs offered ([`path::explain`]).
fn no_path<T>(
    config: &RtcConfig,
    peer: PeerId,
    stage: &'static str,
    started: Instant,
    sdps: &Sdps,
    result: Result<Result<T, LinkError>, tokio::time::error::Elapsed>,
) -> Result<T, LinkError> {
    let closed = match result {
        Ok(Ok(t)) => return Ok(t),
        Ok(Err(LinkError::Closed(what))) => Some(what),
        Ok(Err(e)) => return Err(e),
        Err(_) => None,
    };
    let urls = ice_servers(config);
    let servers = path::Servers::of(urls.iter().flat_map(|s| s.urls.iter().map(String::as_str)));
    let explained = path::explain(
        servers,
        config.relay_only,
        sdps.local.as_deref(),
        sdps.remote.as_deref(),
    );
    Err(LinkError::NoPath {
        peer,
        after: started.elapsed(),
        stage,
        why: match closed {
            Some(what) => format!("{what}; {explained}"),
            None => explained,
        },
    })
}

/// Opens a link to `peer` as the offerer. `relay` carries the offer to the
/// signal-server (must not block); `answer` receives the remote SDP answer
/// that the daemon routes here.
pub async fn dial(
    config: &RtcConfig,
    peer: PeerId,
    link_id: LinkId,
    relay: impl Fn(Handshake) -> bool,
    answer: oneshot::Receiver<String>,
    events: mpsc::Sender<LinkEvent>,
) -> Result<LinkHandle, LinkError> {
    let started = Instant::now();
    let mut setup = build(config).await?;
    let pc = setup.pc.clone();
    let mut sdps = Sdps::default();
    let result = tokio::time::timeout(config.connect_timeout, async {
        let dc = pc.create_data_channel(LABEL, None).await?;
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let sdp = local_sdp(&mut setup, config).await?;
        sdps.local = Some(sdp.clone());
        if !relay(Handshake::Offer { sdp, dial: 0 }) {
            return Err(LinkError::Relay);
        }
        let answer = answer
            .await
            .map_err(|_| LinkError::Closed("dial abandoned"))?;
        sdps.remote = Some(answer.clone());
        pc.set_remote_description(RTCSessionDescription::answer(answer)?)
            .await?;
        let early = wait_open(&dc).await?;
        Ok((dc, early))
    })
    .await;
    let result = no_path(config, peer, "dial", started, &sdps, result);
    finish(config, setup, result, peer, link_id, started, events).await
}

/// Opens a link to `peer` as the answerer of its `offer`.
pub async fn answer(
    config: &RtcConfig,
    peer: PeerId,
    link_id: LinkId,
    offer: String,
    relay: impl Fn(Handshake) -> bool,
    events: mpsc::Sender<LinkEvent>,
) -> Result<LinkHandle, LinkError> {
    let started = Instant::now();
    let mut setup = build(config).await?;
    let pc = setup.pc.clone();
    let mut sdps = Sdps {
        local: None,
        remote: Some(offer.clone()),
    };
    let result = tokio::time::timeout(config.connect_timeout, async {
        pc.set_remote_description(RTCSessionDescription::offer(offer)?)
            .await?;
        let answer = pc.create_answer(None).await?;
        pc.set_local_description(answer).await?;
        let sdp = local_sdp(&mut setup, config).await?;
        sdps.local = Some(sdp.clone());
        if !relay(Handshake::Answer { sdp, dial: 0 }) {
            return Err(LinkError::Relay);
        }
        let dc = setup
            .incoming
            .recv()
            .await
            .ok_or(LinkError::Closed("no data channel"))?;
        let early = wait_open(&dc).await?;
        Ok((dc, early))
    })
    .await;
    let result = no_path(config, peer, "answer", started, &sdps, result);
    finish(config, setup, result, peer, link_id, started, events).await
}

/// The candidate pair ICE selected for `pc`, as a [`LinkPath`].
async fn selected_path(pc: &Arc<dyn PeerConnection>, started: Instant) -> Option<LinkPath> {
    let ice = pc.sctp().await?.transport().ice_transport();
    let pair = ice.get_selected_candidate_pair().await.ok()??;
    let kind = |c: &RTCIceCandidate| CandidateKind::parse(&c.typ.to_string());
    Some(LinkPath {
        local: kind(pair.local())?,
        remote: kind(pair.remote())?,
        protocol: match pair.local().protocol {
            RTCIceProtocol::Tcp => Protocol::Tcp,
            _ => Protocol::Udp,
        },
        setup_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

async fn finish(
    config: &RtcConfig,
    setup: Setup,
    result: Result<(Arc<dyn DataChannel>, Vec<Bytes>), LinkError>,
    peer: PeerId,
    link_id: LinkId,
    started: Instant,
    events: mpsc::Sender<LinkEvent>,
) -> Result<LinkHandle, LinkError> {
    let Setup {
        pc,
        dead,
        mut close,
        ..
    } = setup;
    close.disarm();
    let result = match result {
        Ok((dc, early)) => fingerprints(&pc).await.map(|f| (dc, early, f)),
        Err(e) => Err(e),
    };
    match result {
        Ok((dc, early, fingerprints)) => {
            let max_message_size = match pc.sctp().await {
                Some(sctp) => sctp.max_message_size().await.ok(),
                None => None,
            }
            .map_or(MAX_MESSAGE_SIZE, |m| (m as usize).min(MAX_MESSAGE_SIZE));
            let path = selected_path(&pc, started).await;
            match path {
                Some(path) => info!(%path, max_message_size, "data channel open"),
                None => debug!(
                    max_message_size,
                    "data channel open (no selected pair known)"
                ),
            }
            let link = Link {
                pc,
                dc,
                early,
                cancel: dead,
                peer,
                link_id,
                fingerprints,
                max_message_size,
                path,
            };
            Ok(spawn_link(
                link,
                events,
                config.faults.clone(),
                config.receive_budget.clone(),
                config.traffic.clone(),
            ))
        }
        Err(e) => {
            let _ = pc.close().await;
            Err(e)
        }
    }
}

/// An open connection and its channel, before its tasks start.
struct Link {
    pc: Arc<dyn PeerConnection>,
    dc: Arc<dyn DataChannel>,
    /// Messages that came before the open event, delivered first.
    early: Vec<Bytes>,
    cancel: CancellationToken,
    peer: PeerId,
    link_id: LinkId,
    fingerprints: Fingerprints,
    max_message_size: usize,
    path: Option<LinkPath>,
}

/// `first` and the JSON messages queued behind it, joined by `\n` into one
/// data-channel message of at most `max` bytes; the first that does not
/// fit, or is not JSON (a binary frame goes alone), is left in `carry`.
/// JSON text never holds a raw newline, so the receiver splits them apart
/// again (`jobmesh_wire::blob::Frame::split`).
fn batch(
    mut first: Vec<u8>,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    carry: &mut Option<Vec<u8>>,
    max: usize,
) -> Vec<u8> {
    let json = |m: &[u8]| m.first() == Some(&b'{');
    if !json(&first) {
        return first;
    }
    while first.len() < max {
        let Ok(next) = rx.try_recv() else { break };
        if !json(&next) || first.len() + 1 + next.len() > max {
            *carry = Some(next);
            break;
        }
        first.push(b'\n');
        first.extend_from_slice(&next);
    }
    first
}

fn spawn_link(
    link: Link,
    events: mpsc::Sender<LinkEvent>,
    faults: Arc<Faults>,
    budget: ReceiveBudget,
    traffic: Traffic,
) -> LinkHandle {
    let Link {
        pc,
        dc,
        early,
        cancel,
        peer,
        link_id,
        fingerprints,
        max_message_size,
        path,
    } = link;
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(LINK_SEND_QUEUE);
    let (bulk_tx, mut bulk_rx) = mpsc::channel::<Bulk>(BULK_QUEUE);
    let span = info_span!("link", peer = %peer.short(), link_id);

    let writer_dc = dc.clone();
    let writer_cancel = cancel.clone();
    let writer_traffic = traffic.clone();
    let writer = tokio::spawn(
        async move {
            // A control message that did not fit the last batch goes next.
            let mut carry = None;
            loop {
                // Control messages first: a job's submit or result never
                // queues behind another job's blob.
                let data = if let Some(d) = carry.take() {
                    batch(d, &mut rx, &mut carry, max_message_size)
                } else {
                    tokio::select! {
                    biased;
                    () = writer_cancel.cancelled() => break,
                    d = rx.recv() => match d {
                        Some(d) => batch(d, &mut rx, &mut carry, max_message_size),
                        None => break,
                    },
                    Some(b) = bulk_rx.recv() => match b {
                        Bulk::Data(mut d) => {
                            faults.apply(&mut d);
                            d
                        }
                        Bulk::Flushed(done) => {
                            let _ = done.send(());
                            continue;
                        }
                    },
                    }
                };
                Traffic::add(&writer_traffic.sent, data.len());
                if let Err(e) = writer_dc.send(BytesMut::from(&data[..])).await {
                    warn!(error = %e, "data channel send failed; closing link");
                    writer_cancel.cancel();
                    break;
                }
            }
            writer_cancel.cancel();
            // Whatever was queued before the close still goes out (a result
            // finished during shutdown, say), bounded by FLUSH_TIMEOUT; on a
            // dead link the sends fail at once.
            rx.close();
            let flush = async {
                loop {
                    let data = match carry.take() {
                        Some(d) => d,
                        None => match rx.recv().await {
                            Some(d) => d,
                            None => break,
                        },
                    };
                    Traffic::add(&writer_traffic.sent, data.len());
                    if writer_dc.send(BytesMut::from(&data[..])).await.is_err() {
                        return;
                    }
                }
                // SCTP acknowledges every second packet at once, but a lone
                // last one only when the remote's delayed-ack timer fires
                // (200 ms). An empty message, which receivers ignore, makes
                // the last packet one of a pair.
                if writer_dc.outstanding_bytes().await.unwrap_or(0) > 0 {
                    let _ = writer_dc.send(BytesMut::new()).await;
                }
                while writer_dc.outstanding_bytes().await.unwrap_or(0) > 0 {
                    tokio::time::sleep(FLUSH_POLL).await;
                }
            };
            if tokio::time::timeout(FLUSH_TIMEOUT, flush).await.is_err() {
                debug!("gave up flushing the link after {FLUSH_TIMEOUT:?}");
            }
            let _ = writer_dc.close().await;
            let _ = pc.close().await;
        }
        .instrument(span.clone()),
    );

    let reader_cancel = cancel.clone();
    tokio::spawn(
        async move {
            'read: {
                for data in early {
                    Traffic::add(&traffic.received, data.len());
                    let credit = tokio::select! {
                        () = reader_cancel.cancelled() => break 'read,
                        c = budget.take(data.len()) => c,
                    };
                    let msg = LinkEvent::Message {
                        peer,
                        link_id,
                        data,
                        credit,
                    };
                    if events.send(msg).await.is_err() {
                        break 'read;
                    }
                }
                loop {
                    tokio::select! {
                        biased;
                        () = reader_cancel.cancelled() => break,
                        ev = dc.poll() => match ev {
                            // Empty: a closing remote's nudge for acknowledgements.
                            Some(DataChannelEvent::OnMessage(m)) if m.data.is_empty() => {}
                            Some(DataChannelEvent::OnMessage(m)) => {
                                let data = m.data.freeze();
                                Traffic::add(&traffic.received, data.len());
                                let credit = tokio::select! {
                                    () = reader_cancel.cancelled() => break,
                                    c = budget.take(data.len()) => c,
                                };
                                let msg = LinkEvent::Message { peer, link_id, data, credit };
                                if events.send(msg).await.is_err() { break }
                            }
                            Some(DataChannelEvent::OnClose) | None => break,
                            Some(_) => {}
                        },
                    }
                }
            }
            // The writer flushes and closes the connection.
            reader_cancel.cancel();
            debug!("link closed");
            let _ = events.send(LinkEvent::Closed { peer, link_id }).await;
        }
        .instrument(span),
    );

    LinkHandle {
        peer,
        link_id,
        fingerprints,
        path,
        tx,
        bulk: BulkSender {
            tx: bulk_tx,
            max_message_size,
        },
        _close_on_drop: cancel.clone().drop_guard(),
        cancel,
        writer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_control_messages_go_out_together_up_to_the_message_size() {
        let (tx, mut rx) = mpsc::channel(16);
        for m in [
            &b"{\"b\":2}"[..],
            b"{\"c\":3}",
            b"{\"long\":\"xxxxxxxx\"}",
            b"{}",
        ] {
            tx.try_send(m.to_vec()).expect("room");
        }
        let mut carry = None;
        // Two fit beside the first in 24 bytes; the third waits for the next.
        let first = batch(b"{\"a\":1}".to_vec(), &mut rx, &mut carry, 24);
        assert_eq!(first, b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}");
        let next = carry.take().expect("carried");
        assert_eq!(
            batch(next, &mut rx, &mut carry, 24),
            b"{\"long\":\"xxxxxxxx\"}\n{}"
        );
        assert!(carry.is_none());
        // Alone, a message goes as it is.
        assert_eq!(batch(b"{}".to_vec(), &mut rx, &mut carry, 24), b"{}");
        // A binary frame is never joined to JSON, nor JSON to it.
        tx.try_send(vec![0xb1, 1]).expect("room");
        tx.try_send(b"{}".to_vec()).expect("room");
        assert_eq!(batch(b"{}".to_vec(), &mut rx, &mut carry, 24), b"{}");
        let binary = carry.take().expect("carried");
        assert_eq!(batch(binary, &mut rx, &mut carry, 24), [0xb1, 1]);
        assert!(carry.is_none(), "the JSON behind it waits in the queue");
    }

    #[tokio::test]
    async fn the_receive_budget_holds_bytes_until_their_credit_is_dropped() {
        let budget = ReceiveBudget::new(100);
        let first = budget.take(60).await;
        assert_eq!(budget.in_use(), 60);
        // 60 more do not fit until the first credit is given back.
        let second = budget.take(60);
        tokio::pin!(second);
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        drop(first);
        let second = second.await;
        assert_eq!(budget.in_use(), 60);
        drop(second);
        // A message larger than the whole budget takes all of it, and fits.
        let big = budget.take(1_000).await;
        assert_eq!(budget.in_use(), 100);
        drop(big);
        assert_eq!(budget.in_use(), 0);
        // Clones share one budget.
        let _c = budget.clone().take(30).await;
        assert_eq!(budget.in_use(), 30);
    }
}
