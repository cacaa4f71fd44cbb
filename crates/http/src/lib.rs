//! A daemon's HTTP face: the live dashboard of its pool (`peer --http
//! ADDR`) and its Prometheus metrics (`peer --metrics ADDR`, or `/metrics`
//! beside the dashboard).
//!
//! Served on `--http`:
//! - `GET /`: the dashboard page; `GET /dashboard.js`: its web component,
//!   `<jobmesh-dashboard>` (both embedded in the binary, no build step);
//! - `GET /api/dashboard`: server-sent events, one `snapshot` a second
//!   ([`board::Snapshot`] as JSON), built from the pool view, the
//!   observers' stream and this daemon's jobs;
//! - `GET /api/status`: the status report as JSON (`peer status --json`);
//! - `GET /metrics`: the Prometheus text format.
//!
//! Access ([`Access`]): on a loopback address without a token, requests
//! must name a loopback host (a page elsewhere that rebinds its DNS name to
//! 127.0.0.1 gets 403); a non-loopback address needs a token
//! (`--http-token-file`), which a request carries as a bearer token or as
//! the cookie that `GET /?token=…` sets.

pub mod board;
pub mod jobs;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use jobmesh_peer::{Observation, PeerHandle};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::board::Board;

/// Dashboards streaming at once from one daemon (each observes the pool).
/// Past it a new one gets 503 until one closes.
pub const MAX_VIEWERS: usize = 16;
/// How often a dashboard gets a snapshot.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
/// Shortest token accepted.
pub const MIN_TOKEN: usize = 16;
/// The cookie `GET /?token=…` sets.
const COOKIE: &str = "jobmesh_token";

const INDEX_HTML: &str = include_str!("../assets/index.html");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");

/// Why the HTTP endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address cannot be listened on.
    #[error("{flag} {addr}: cannot listen there: {source}")]
    Bind {
        /// The flag that gave it.
        flag: &'static str,
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A non-loopback address without a token.
    #[error("{flag} {addr}: not a loopback address, so a token is needed (--http-token-file FILE with 16 or more characters, e.g. from `openssl rand -hex 32`), or bind to 127.0.0.1")]
    NeedsToken {
        /// The flag that gave it.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// The token is too short to guess slowly.
    #[error("the HTTP token is shorter than {MIN_TOKEN} characters; use a long random one (e.g. openssl rand -hex 32)")]
    ShortToken,
}

/// Who may use the dashboard.
#[derive(Clone)]
pub struct Access {
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Access {
    /// With `token` (trimmed; at least [`MIN_TOKEN`] characters), or none.
    pub fn new(token: Option<&str>) -> Result<Self, HttpError> {
        let token = token.map(str::trim);
        if token.is_some_and(|t| t.len() < MIN_TOKEN) {
            return Err(HttpError::ShortToken);
        }
        Ok(Self {
            token: token.map(Arc::from),
        })
    }
}

/// Binds `addr` for `flag` (before the daemon starts, so a taken port fails
/// the start). A non-loopback address needs `access` to hold a token.
pub async fn bind(
    flag: &'static str,
    addr: &str,
    access: Option<&Access>,
) -> Result<tokio::net::TcpListener, HttpError> {
    let bind_error = |source| HttpError::Bind {
        flag,
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    if !bound.ip().is_loopback() {
        match access {
            Some(a) if a.token.is_none() => {
                return Err(HttpError::NeedsToken { flag, addr: bound })
            }
            Some(_) => {}
            None => {
                warn!(%bound, "{flag}: readable by anyone who reaches {bound} (no credential is asked)")
            }
        }
    }
    Ok(listener)
}

/// `/metrics` alone, open (for `--metrics`: what Prometheus scrapes).
pub fn metrics_router(handle: PeerHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(Shared::new(handle, CancellationToken::new()))
}

/// The dashboard, its stream, the status report and `/metrics`, behind
/// `access`. Streams end when `stop` is cancelled.
pub fn router(handle: PeerHandle, access: Access, stop: CancellationToken) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/dashboard.js", get(script))
        .route("/api/dashboard", get(dashboard))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .merge(jobs::routes())
        .layer(axum::middleware::from_fn_with_state(access, guard))
        .with_state(Shared::new(handle, stop))
}

/// Serves `app` on `listener` until `stop`; returns the bound address.
pub fn spawn(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            warn!(%bound, "the HTTP endpoint stopped: {e}");
        }
    });
    Ok(bound)
}

#[derive(Clone)]
struct Shared {
    handle: PeerHandle,
    viewers: Arc<Semaphore>,
    /// Places of requests holding uploaded files ([`jobs::MAX_UPLOADS`]).
    uploads: Arc<Semaphore>,
    stop: CancellationToken,
}

impl Shared {
    fn new(handle: PeerHandle, stop: CancellationToken) -> Self {
        Self {
            handle,
            viewers: Arc::new(Semaphore::new(MAX_VIEWERS)),
            uploads: Arc::new(Semaphore::new(jobs::MAX_UPLOADS)),
            stop,
        }
    }
}

/// A request that failed: answered as JSON, `{"error": code, "message": …}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// Access control, in front of every route.
async fn guard(State(access): State<Access>, req: Request, next: Next) -> Response {
    let Some(token) = &access.token else {
        // Loopback without a token: only requests that name a loopback host,
        // so no other site can rebind its name to this port and read it.
        if loopback_host(req.headers()) {
            return next.run(req).await;
        }
        return error(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "this dashboard answers only to localhost, 127.0.0.1 or [::1] (to serve other names, give it a token with --http-token-file)",
        );
    };
    let same = |got: &str| bool::from(token.as_bytes().ct_eq(got.trim().as_bytes()));
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(same) || cookie(headers, COOKIE).is_some_and(same) {
        return next.run(req).await;
    }
    // `GET /?token=…`: keep it as a cookie and show the page without it in
    // the address bar.
    if req.uri().path() == "/" {
        let query: Query<std::collections::HashMap<String, String>> =
            Query::try_from_uri(req.uri()).unwrap_or_else(|_| Query(Default::default()));
        if let Some(given) = query.get("token").filter(|t| same(t)) {
            let set = format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
                given.trim()
            );
            if let Ok(set) = HeaderValue::from_str(&set) {
                return (
                    StatusCode::SEE_OTHER,
                    [
                        (header::SET_COOKIE, set),
                        (header::LOCATION, HeaderValue::from_static("/")),
                    ],
                )
                    .into_response();
            }
        }
    }
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this dashboard needs its token: open /?token=TOKEN once in the browser, or send Authorization: Bearer TOKEN",
    )
}

/// Whether the request's Host is localhost, 127.0.0.1 or [::1] (any port).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The value of cookie `name`, if the request carries it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Headers of the page and its script: no framing, scripts from here only.
fn page_headers(content_type: &'static str) -> [(header::HeaderName, &'static str); 4] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    ]
}

async fn index() -> impl IntoResponse {
    (page_headers("text/html; charset=utf-8"), INDEX_HTML)
}

async fn script() -> impl IntoResponse {
    (page_headers("text/javascript; charset=utf-8"), DASHBOARD_JS)
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.handle.metrics_text(),
    )
}

async fn status(State(s): State<Shared>) -> Response {
    match s.handle.status().await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "stopped", e.to_string()),
    }
}

/// One dashboard's stream: its own [`Board`] fed by an observation of the
/// pool, a snapshot each [`SNAPSHOT_EVERY`].
struct Viewer {
    handle: PeerHandle,
    observation: Observation,
    board: Board,
    tick: tokio::time::Interval,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl Viewer {
    /// The next snapshot; `None` when the daemon or the endpoint stops.
    async fn next(&mut self) -> Option<Event> {
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return None,
                _ = self.tick.tick() => return self.snapshot().await,
                batch = self.observation.next() => match batch {
                    Ok(Some(b)) => self.board.on_batch(&b),
                    Ok(None) => return None,
                    Err(missed) => self.board.missed(missed),
                },
            }
        }
    }

    async fn snapshot(&mut self) -> Option<Event> {
        // One listing of the daemon's jobs serves the status and the queue waits.
        let jobs = self.handle.jobs().await.ok()?;
        let status = self.handle.status_of(&jobs);
        let pool = self.handle.pool();
        let now = unix_ms();
        self.board.on_pool(now, &pool);
        let snap =
            self.board
                .snapshot(now, &status, &pool, &jobs, self.handle.data_channel_bytes());
        match Event::default().event("snapshot").json_data(&snap) {
            Ok(e) => Some(e),
            Err(e) => {
                warn!("dashboard snapshot not encoded: {e}");
                None
            }
        }
    }
}

async fn dashboard(State(s): State<Shared>) -> Response {
    let Ok(permit) = s.viewers.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_viewers",
            format!("{MAX_VIEWERS} dashboards are open on this daemon already; close one"),
        );
    };
    let observation = match s.handle.observe().await {
        Ok(o) => o,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "stopped", e.to_string()),
    };
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let viewer = Viewer {
        handle: s.handle.clone(),
        observation,
        board: Board::new(),
        tick,
        stop: s.stop.clone(),
        _permit: permit,
    };
    let events = futures_util::stream::unfold(viewer, |mut v| async move {
        let e = v.next().await?;
        Some((Ok::<_, std::convert::Infallible>(e), v))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
