//! An in-process signal-server on `127.0.0.1:0`, stopped on drop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobmesh_signal_server::{Counters, ServerConfig};
use jobmesh_wire::PeerId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::within;

/// Frames the tap can hold before it drops (and counts) them.
const TAP_QUEUE: usize = 65_536;

/// A running signal-server; cancelled on drop.
pub struct SignalGuard {
    url: String,
    /// `http://127.0.0.1:PORT`.
    pub http: String,
    /// The server's counters.
    pub counters: Arc<Counters>,
    cancel: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
    tapped: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl SignalGuard {
    /// Starts a server with default settings.
    pub async fn start() -> Self {
        Self::start_with(ServerConfig::open(), false).await
    }

    /// Starts a server with the given heartbeat interval.
    pub async fn start_with_heartbeat(heartbeat: Duration) -> Self {
        let config = ServerConfig {
            heartbeat,
            ..ServerConfig::open()
        };
        Self::start_with(config, false).await
    }

    /// Starts a server that records every text frame it receives.
    pub async fn start_tapped() -> Self {
        Self::start_with(ServerConfig::open(), true).await
    }

    /// Starts a server with `config`, optionally tapping frames.
    pub async fn start_with(config: ServerConfig, tap: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        Self::serve(listener, config, tap)
    }

    /// Starts a fresh server on the address a stopped one had (its port came
    /// from port 0), to test that peers come back by themselves.
    pub async fn restart_on(old: &SignalGuard) -> Self {
        let addr = old.http.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .unwrap_or_else(|e| panic!("re-bind {addr}: {e}"));
        Self::serve(listener, ServerConfig::open(), false)
    }

    fn serve(listener: tokio::net::TcpListener, mut config: ServerConfig, tap: bool) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let tapped = Arc::new(Mutex::new(Vec::new()));
        if tap {
            let (tx, mut rx) = mpsc::channel(TAP_QUEUE);
            config.tap = Some(tx);
            let store = tapped.clone();
            tokio::spawn(async move {
                while let Some(f) = rx.recv().await {
                    store.lock().expect("tap lock").push(f);
                }
            });
        }
        let counters = config.counters.clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(jobmesh_signal_server::run(listener, config, cancel.clone()));
        Self {
            url: format!("ws://{addr}/ws"),
            http: format!("http://{addr}"),
            counters,
            cancel,
            task: Some(task),
            tapped,
        }
    }

    /// The WebSocket URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every frame tapped so far (with [`start_tapped`](Self::start_tapped)).
    pub fn tapped_frames(&self) -> Vec<Vec<u8>> {
        assert_eq!(
            self.counters
                .tap_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            0,
            "the tap dropped frames"
        );
        self.tapped.lock().expect("tap lock").clone()
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            within("the signal-server to stop", task)
                .await
                .expect("server task")
                .expect("server ran");
        }
    }

    /// Joins `pool` with a raw WebSocket client that then never reads again,
    /// so it never answers the server's pings. Dropping it closes the socket.
    pub async fn silent_client(&self, pool: &str) -> SilentClient {
        let (ws, id) = crate::ws::join(&self.url, pool).await;
        SilentClient { id, _ws: ws }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A client that stopped reading; see [`SignalGuard::silent_client`].
pub struct SilentClient {
    /// Its peer id.
    pub id: PeerId,
    _ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}
