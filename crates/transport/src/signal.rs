//! The signalling client: one task that keeps a WebSocket to `signal-server`
//! open, re-announcing this peer after every reconnect.
//!
//! Reconnect delays: `SignalConfig::reconnect_delay`, a pure function of the
//! attempt and a random unit, kept hand-written (issue 17): `backon` drives
//! async retries itself, and this loop also drops stale messages while it
//! waits and reports each delay (`SignalEvent::Disconnected`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jobmesh_identity::Identity;
use jobmesh_wire::signal::{encode, ClientMsg, ErrorCode, Join, ServerMsg, MAX_SERVER_MESSAGE};
use jobmesh_wire::{Capability, PROTOCOL_VERSION};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// What the signalling task reports to the daemon.
#[derive(Debug)]
pub enum SignalEvent {
    /// (Re)connected; the welcome with the pool snapshot follows as a `Message`.
    Connected,
    /// A message from the server (welcome first after each connect).
    Message(ServerMsg),
    /// The socket dropped; reconnecting after the given delay.
    Disconnected {
        /// Why.
        reason: String,
        /// Next attempt in.
        retry_in: Duration,
    },
    /// The server refused this peer for a reason that trying again will not
    /// change (not admitted to the pool, a proof or protocol version it does
    /// not accept): the client stops.
    Refused {
        /// The server's words.
        reason: String,
    },
}

/// Settings for [`run`].
#[derive(Debug, Clone)]
pub struct SignalConfig {
    /// `ws://host:port/ws`.
    pub url: String,
    /// More signal-servers of the same cluster: when the current one cannot
    /// be reached or its connection is lost, the next is tried, in turn.
    pub fallbacks: Vec<String>,
    /// What the hello asks for, made afresh after every connect.
    pub join: Join,
    /// Who this peer is: the hello proves it holds this key.
    pub identity: Identity,
    /// First reconnect delay ceiling.
    pub backoff_base: Duration,
    /// Largest reconnect delay.
    pub backoff_cap: Duration,
    /// How long to wait for the challenge after connecting, and for the
    /// welcome after the hello.
    pub welcome_timeout: Duration,
    /// For `wss://`: the roots the server's certificate must chain to
    /// ([`tls_config`]). `None`: the system's.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether to keep trying when the first connection fails for a reason
    /// that may pass (nothing listening yet, an unreachable host): a
    /// daemon does; a one-off command gives up at once and says why.
    pub persist: bool,
    /// What this peer runs, when it can change while it runs: each hello
    /// carries the current list, and a change while connected goes to the
    /// server as a `capabilities` message. `None`: `join`'s, fixed.
    pub capabilities: Option<watch::Receiver<Vec<Capability>>>,
}

impl SignalConfig {
    /// Defaults: backoff 100 ms doubling to 5 s, welcome within 10 s.
    pub fn new(url: String, join: Join, identity: Identity) -> Self {
        Self {
            url,
            fallbacks: Vec::new(),
            join,
            identity,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
            welcome_timeout: Duration::from_secs(10),
            tls: None,
            persist: true,
            capabilities: None,
        }
    }

    /// The delay before reconnect number `attempt` (from 0): exponential
    /// backoff with full jitter, drawn uniformly from
    /// `[0, min(backoff_cap, backoff_base · 2^attempt)]`. `unit` is a random
    /// number in `[0, 1)`; values outside are clamped.
    fn reconnect_delay(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self
            .backoff_base
            .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.backoff_cap)
            .min(self.backoff_cap);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// Errors of one connection attempt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// Could not open the WebSocket.
    #[error("cannot connect to the signal-server at {url}: {}", .diagnosis.hint)]
    Connect {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: tokio_tungstenite::tungstenite::Error,
        /// What it means, and whether trying again can help.
        diagnosis: Diagnosis,
    },
    /// The TLS roots could not be loaded.
    #[error("{0}")]
    Tls(String),
    /// The socket failed after it was open.
    #[error("signal-server connection failed: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server closed the socket.
    #[error("signal-server closed the connection{0}")]
    Closed(String),
    /// The server refused us.
    #[error("signal-server refused this peer: {message}")]
    Refused {
        /// Its code, when it sent one.
        code: Option<ErrorCode>,
        /// What it said.
        message: String,
    },
    /// No welcome in time.
    #[error("signal-server sent no welcome within {0:?}")]
    NoWelcome(Duration),
    /// The server sent something undecodable.
    #[error("signal-server sent a bad frame: {0}")]
    BadFrame(jobmesh_wire::DecodeError),
    /// The daemon is gone.
    #[error("daemon stopped")]
    DaemonGone,
}

/// What a failed connect means for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// What went wrong, in the user's terms, and what to do about it.
    pub hint: String,
    /// Whether trying again cannot help until something is changed (the
    /// URL, the certificate, the server): a configuration error, refused
    /// at once while this peer has never reached the server.
    pub lasting: bool,
}

/// Tells apart why a connection to `url` could not be opened: a wrong URL
/// (scheme, path), something else listening there, TLS on one side only, an
/// untrusted certificate (lasting), and nothing listening, an unknown or
/// unreachable host (which may pass).
pub fn diagnose(url: &str, e: &tokio_tungstenite::tungstenite::Error) -> Diagnosis {
    use std::io::ErrorKind;
    use tokio_tungstenite::tungstenite::error::UrlError;
    use tokio_tungstenite::tungstenite::Error;
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (host_port, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    let lasting = |hint: String| Diagnosis {
        hint,
        lasting: true,
    };
    let passing = |hint: String| Diagnosis {
        hint,
        lasting: false,
    };
    match e {
        _ if host.is_empty() => lasting(format!(
            "{url} names no host; it looks like ws://HOST:PORT/ws"
        )),
        Error::Url(UrlError::UnsupportedUrlScheme) => lasting(format!(
            "{url} is not a WebSocket URL: the signal-server's starts with ws:// (wss:// when it serves TLS), like ws://{host_port}/ws"
        )),
        Error::Url(u) => lasting(format!(
            "{url} is not a usable WebSocket URL ({u}); it looks like ws://HOST:PORT/ws"
        )),
        Error::Http(response) if response.status() == 404 => lasting(format!(
            "{host_port} answered 404 Not Found for /{path}: the signal-server's WebSocket is at /ws (ws://{host_port}/ws)"
        )),
        Error::Http(response) => lasting(format!(
            "{host_port} answered HTTP {} to the WebSocket upgrade: it is not a jobmesh signal-server, or a proxy in between refuses WebSockets",
            response.status()
        )),
        Error::Protocol(_) | Error::HttpFormat(_) => lasting(format!(
            "{host_port} does not answer as a WebSocket server: is it a jobmesh signal-server? (a server with TLS needs wss://)"
        )),
        e if tls_refused(e) => lasting(if tls_certificate_refused(e) {
            format!("the certificate of {host_port} is not trusted or does not name {host}: pass --ca FILE with the certificate of the CA that signed it (or the server's own, if self-signed)")
        } else {
            format!("{host_port} does not speak TLS: use ws:// (or start the signal-server with --tls-cert/--tls-key)")
        }),
        Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => passing(format!(
                "nothing listens on {host_port}: is the signal-server running there (`signal-server --listen {host_port}`), and is the port right?"
            )),
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable | ErrorKind::TimedOut => {
                passing(format!(
                    "{host_port} cannot be reached from here ({io}): check the address, the network and any firewall"
                ))
            }
            ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof => passing(format!(
                "{host_port} closed the connection before the WebSocket opened: a server at its connection limit, or not a jobmesh signal-server (a server with TLS needs wss://)"
            )),
            _ if io.to_string().contains("lookup address") => passing(format!(
                "cannot resolve the host name {host} ({io}): check the name"
            )),
            _ => passing(format!("{io}")),
        },
        other => passing(other.to_string()),
    }
}

/// Whether the TLS handshake failed (rustls's error reaches us inside an
/// I/O error).
fn tls_refused(e: &tokio_tungstenite::tungstenite::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Tls(_) => true,
        Error::Io(_) => rustls_error(e).is_some(),
        _ => false,
    }
}

/// Whether the TLS handshake failed on the server's certificate (rather
/// than on a server that does not speak TLS at all).
fn tls_certificate_refused(e: &tokio_tungstenite::tungstenite::Error) -> bool {
    matches!(
        rustls_error(e),
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
    )
}

fn rustls_error(e: &tokio_tungstenite::tungstenite::Error) -> Option<&rustls::Error> {
    match e {
        tokio_tungstenite::tungstenite::Error::Io(io) => io.get_ref()?.downcast_ref(),
        _ => None,
    }
}

/// A TLS client config for `wss://` signal-servers: trusting the PEM
/// certificates in `ca` (a private CA, or a self-signed server's own), or
/// the system's roots.
pub fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|c| c.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "--ca {}: no usable certificate in it",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(
                    "no system TLS roots found (install ca-certificates, or pass --ca FILE)".into(),
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Whether `url` sends this peer's hello in clear to another machine: plain
/// `ws://` to a host that is not loopback.
pub fn in_clear(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("ws://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    !(host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()))
}

impl SignalError {
    fn refused(code: ErrorCode, message: String) -> Self {
        SignalError::Refused {
            code: Some(code),
            message,
        }
    }

    /// Whether connecting again cannot help: the server refused this
    /// peer's hello itself (its pool admission, its proof, its version).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SignalError::Refused {
                code: Some(
                    ErrorCode::NotAdmitted
                        | ErrorCode::BadProof
                        | ErrorCode::WrongVersion
                        | ErrorCode::NameTaken
                ),
                ..
            }
        )
    }

    /// Whether the connection could not be opened for a reason that trying
    /// again will not change ([`Diagnosis::lasting`]): a configuration error
    /// while this peer has never reached the server (after that, possibly a
    /// server being replaced: worth retrying).
    fn is_lasting(&self) -> bool {
        matches!(self, SignalError::Connect { diagnosis, .. } if diagnosis.lasting)
    }
}

/// Keeps the signalling connection up until `cancel`, or until the server
/// refuses this peer for good ([`SignalEvent::Refused`]).
///
/// * `events` (bounded, owned by the daemon): server messages are sent with
///   `send().await` — the daemon loop is the consumer and drains it promptly; while
///   it is full this task stops reading the socket (TCP backpressure to the server).
/// * `outgoing` (bounded, filled by the daemon with `try_send`): written to the socket
///   in order while connected; while disconnected, messages are dropped (relays
///   of a handshake in progress fail its deadline; stats are re-sent on connect).
pub async fn run(
    config: SignalConfig,
    events: mpsc::Sender<SignalEvent>,
    mut outgoing: mpsc::Receiver<ClientMsg>,
    cancel: CancellationToken,
) {
    let mut attempt: u32 = 0;
    let mut ever_connected = false;
    // The last reason logged: a failure that repeats is logged once.
    let mut logged = String::new();
    let urls: Vec<&str> = std::iter::once(config.url.as_str())
        .chain(config.fallbacks.iter().map(String::as_str))
        .collect();
    // Which of `urls` is tried next: the one that worked last, or its next
    // after a failure.
    let mut current = 0;
    loop {
        let url = urls[current];
        let result = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            r = connect_once(&config, url, &events, &mut outgoing, &mut attempt, &mut ever_connected) => r,
        };
        let reason = match result {
            Ok(()) => return,
            Err(SignalError::DaemonGone) => return,
            // A configuration error, or a one-off command that cannot
            // connect, gives up once every server was tried.
            Err(e)
                if e.is_permanent()
                    || (!ever_connected
                        && (e.is_lasting() || !config.persist)
                        && current + 1 == urls.len()) =>
            {
                // The daemon reports it (`PoolSnapshot::refused`).
                let reason = e.to_string();
                info!(%reason, "not trying the signal-server again");
                let _ = events.send(SignalEvent::Refused { reason }).await;
                return;
            }
            Err(e) => format!("{e:#}"),
        };
        // The next server, then: the backoff grows once per round of them,
        // so a lost server's peers move to the others at once (with jitter,
        // not all in the same instant) and only a cluster that is all
        // unreachable is retried slowly.
        current = (current + 1) % urls.len();
        let round = attempt / urls.len() as u32;
        let retry_in = config.reconnect_delay(round, rand::random::<f64>());
        attempt = attempt.saturating_add(1);
        let retry_in_ms = retry_in.as_millis() as u64;
        if attempt == 1 {
            // The first failure since a connection worked.
            logged.clear();
        }
        if reason == logged {
            debug!(%reason, retry_in_ms, "signal-server still unreachable");
        } else {
            warn!(%reason, retry_in_ms, "signal-server connection lost; trying again");
            logged.clone_from(&reason);
        }
        if events
            .send(SignalEvent::Disconnected { reason, retry_in })
            .await
            .is_err()
        {
            return;
        }
        let sleep = tokio::time::sleep(retry_in);
        tokio::pin!(sleep);
        // While waiting, drop what the daemon wants to send: it is stale by reconnect.
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                () = &mut sleep => break,
                m = outgoing.recv() => if m.is_none() { return },
            }
        }
    }
}

/// Whether a jobmesh signal-server answers at `url` (`tls`: the client
/// configuration for `wss://`, None for the system's roots): opens the
/// WebSocket, reads the server's challenge, and closes. The time that took,
/// or what went wrong in the user's terms ([`diagnose`]).
pub async fn reach(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = std::time::Instant::now();
    let connector = match tls {
        Some(tls) => Some(Connector::Rustls(tls)),
        None if url.starts_with("wss:") => Some(Connector::Rustls(tls_config(None)?)),
        None => None,
    };
    let connect = tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector);
    let (mut ws, _) = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| format!("no answer from {url} within {timeout:?}"))?
        .map_err(|e| diagnose(url, &e).hint)?;
    let first = tokio::time::timeout(timeout, next_msg(&mut ws))
        .await
        .map_err(|_| format!("{url} accepted the WebSocket but sent nothing within {timeout:?}"))?;
    let _ = ws.close(None).await;
    match first {
        Ok(ServerMsg::Challenge { .. }) => Ok(started.elapsed()),
        Ok(other) => Err(format!(
            "{url} answered, but not as a jobmesh signal-server of protocol {PROTOCOL_VERSION} (its first frame: {other:?})"
        )),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

async fn connect_once(
    config: &SignalConfig,
    url: &str,
    events: &mpsc::Sender<SignalEvent>,
    outgoing: &mut mpsc::Receiver<ClientMsg>,
    attempt: &mut u32,
    ever_connected: &mut bool,
) -> Result<(), SignalError> {
    // The server's frames (a view page) may be larger than ours.
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_SERVER_MESSAGE))
        .max_frame_size(Some(MAX_SERVER_MESSAGE));
    let connector = match &config.tls {
        Some(tls) => Some(Connector::Rustls(tls.clone())),
        None if url.starts_with("wss:") => Some(Connector::Rustls(
            tls_config(None).map_err(SignalError::Tls)?,
        )),
        None => None,
    };
    let (mut ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(url, Some(ws_config), true, connector)
            .await
            .map_err(|source| SignalError::Connect {
                url: url.to_owned(),
                diagnosis: diagnose(url, &source),
                source,
            })?;
    // The server speaks first: a nonce for this connection, which the hello signs.
    let challenge = tokio::time::timeout(config.welcome_timeout, next_msg(&mut ws))
        .await
        .map_err(|_| SignalError::NoWelcome(config.welcome_timeout))??;
    let nonce = match challenge {
        ServerMsg::Challenge { nonce } => nonce,
        ServerMsg::Error { code, message } => return Err(SignalError::refused(code, message)),
        other => {
            return Err(SignalError::Refused {
                code: None,
                message: format!(
                    "expected a challenge first (is this a jobmesh signal-server of protocol {PROTOCOL_VERSION}?), got {other:?}"
                ),
            })
        }
    };
    let mut capabilities = config.capabilities.clone();
    let hello = match &mut capabilities {
        Some(now) => {
            let join = Join {
                capabilities: now.borrow_and_update().clone(),
                ..config.join.clone()
            };
            join.hello(&config.identity, &nonce)
        }
        None => config.join.hello(&config.identity, &nonce),
    };
    ws.send(Message::text(encode(&ClientMsg::Hello(hello))))
        .await?;
    // The welcome must come first.
    let welcome = tokio::time::timeout(config.welcome_timeout, next_msg(&mut ws))
        .await
        .map_err(|_| SignalError::NoWelcome(config.welcome_timeout))??;
    match &welcome {
        ServerMsg::Welcome { pool, .. } => {
            info!(%pool, %url, "joined pool");
        }
        ServerMsg::Error { code, message } => {
            return Err(SignalError::refused(*code, message.clone()))
        }
        other => {
            return Err(SignalError::Refused {
                code: None,
                message: format!("expected welcome, got {other:?}"),
            })
        }
    }
    *attempt = 0;
    *ever_connected = true;
    events
        .send(SignalEvent::Connected)
        .await
        .map_err(|_| SignalError::DaemonGone)?;
    events
        .send(SignalEvent::Message(welcome))
        .await
        .map_err(|_| SignalError::DaemonGone)?;
    loop {
        tokio::select! {
            msg = next_msg(&mut ws) => {
                let msg = msg?;
                match &msg {
                    ServerMsg::Error { code: ErrorCode::GoingAway, message } => {
                        info!(%message, "signal-server is going away");
                    }
                    ServerMsg::Error { code, message } => {
                        warn!(?code, %message, "signal-server reported an error");
                    }
                    _ => {}
                }
                events.send(SignalEvent::Message(msg)).await.map_err(|_| SignalError::DaemonGone)?;
            }
            out = outgoing.recv() => {
                let Some(out) = out else {
                    // Daemon dropped its sender: leave politely.
                    let _ = ws.close(None).await;
                    return Err(SignalError::DaemonGone);
                };
                ws.send(Message::text(encode(&out))).await?;
            }
            changed = changed(&mut capabilities) => {
                if changed {
                    let now = capabilities
                        .as_mut()
                        .map(|c| c.borrow_and_update().clone())
                        .unwrap_or_default();
                    let update = ClientMsg::Capabilities { capabilities: now };
                    ws.send(Message::text(encode(&update))).await?;
                } else {
                    // The daemon dropped its sender: the list stays as it is.
                    capabilities = None;
                }
            }
        }
    }
}

/// Resolves when the capabilities changed (true) or their sender is gone
/// (false); never without a receiver.
async fn changed(capabilities: &mut Option<watch::Receiver<Vec<Capability>>>) -> bool {
    match capabilities {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads the next server message, skipping control frames (tungstenite answers
/// pings itself while we read).
async fn next_msg(ws: &mut Ws) -> Result<ServerMsg, SignalError> {
    loop {
        let frame = ws
            .next()
            .await
            .ok_or_else(|| SignalError::Closed(String::new()))??;
        match frame {
            Message::Text(t) => {
                return ServerMsg::decode(t.as_bytes()).map_err(SignalError::BadFrame);
            }
            Message::Close(c) => {
                let why = c
                    .map(|c| format!(" ({}: {})", u16::from(c.code), c.reason))
                    .unwrap_or_default();
                return Err(SignalError::Closed(why));
            }
            Message::Binary(_) => {
                return Err(SignalError::BadFrame(jobmesh_wire::DecodeError::Binary))
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                debug!("signal-server heartbeat");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ws_to_another_machine_is_in_clear() {
        for url in [
            "ws://10.0.0.5:7070/ws",
            "ws://signal.example.org/ws",
            "ws://[2001:db8::1]:7070/ws",
        ] {
            assert!(in_clear(url), "{url}");
        }
        for url in [
            "wss://signal.example.org/ws",
            "ws://127.0.0.1:7070/ws",
            "ws://localhost:7070/ws",
            "ws://[::1]:7070/ws",
        ] {
            assert!(!in_clear(url), "{url}");
        }
    }

    #[test]
    fn reconnect_delay_grows_to_the_cap_and_jitters_down() {
        let join = Join {
            name: "p".into(),
            pool: "default".into(),
            capabilities: Vec::new(),
            slots: 0,
            credential: None,
            view: None,
        };
        let config = SignalConfig::new("ws://127.0.0.1:1/ws".into(), join, Identity::generate());
        let delay = |attempt, unit| config.reconnect_delay(attempt, unit);
        assert_eq!(delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(delay(30, 1.0), Duration::from_secs(5));
        assert_eq!(delay(u32::MAX, 1.0), Duration::from_secs(5));
        assert_eq!(delay(3, 0.5), Duration::from_millis(400));
        assert_eq!(delay(3, 0.0), Duration::ZERO);
        assert_eq!(delay(3, f64::NAN.max(2.0)), Duration::from_millis(800));
    }
}
