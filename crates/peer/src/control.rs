//! The local control API: a unix socket (mode 0600, local callers only) on
//! which `peer submit` and `peer peers` talk to a running daemon.
//!
//! One request per connection: a JSON line in, a JSON line out.
//! * `{"op":"submit","capability":"echo","input":{..},"timeout_ms":30000}` →
//!   an [`Envelope`] when the job ends.
//! * `{"op":"peers"}` → a [`PoolSnapshot`](crate::PoolSnapshot) as JSON.
//! * a request that cannot be served → `{"daemon_error": "..."}`.
//!
//! At most [`MAX_CONTROL_CONNECTIONS`] are served at once (more wait in the
//! listen backlog); a request line is at most [`MAX_CONTROL_REQUEST`] bytes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jobmesh_core::JobError;
use jobmesh_wire::{Capability, PeerInfo};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::daemon::{JobReport, PeerHandle, PoolSnapshot};

/// Longest request line.
pub const MAX_CONTROL_REQUEST: usize = 1024 * 1024;
/// Control connections served at once.
pub const MAX_CONTROL_CONNECTIONS: usize = 64;

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run a job and answer with its envelope.
    Submit {
        /// Which handler.
        capability: Capability,
        /// Its input.
        input: Value,
        /// How long to wait for it.
        timeout_ms: u64,
    },
    /// Describe the pool.
    Peers,
}

/// The worker in an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRef {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// How a job ended, as `peer submit --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The job.
    pub job_id: String,
    /// `completed`, `failed`, `rejected`, `lost`, `cancelled`, `timed_out`,
    /// `no_worker`, `queue_full` or `too_large`.
    pub status: String,
    /// Who ran it.
    pub worker: Option<WorkerRef>,
    /// The result, when completed.
    pub result: Option<Value>,
    /// The error, when not.
    pub error: Option<String>,
    /// From submit to outcome.
    pub elapsed_ms: u64,
}

impl Envelope {
    /// Builds the envelope of a finished job.
    pub fn from_report(r: &JobReport) -> Self {
        let (status, result, error) = match &r.result {
            Ok(v) => ("completed", Some(v.clone()), None),
            Err(e) => (status_of(e), None, Some(e.to_string())),
        };
        Self {
            job_id: r.job_id.to_string(),
            status: status.to_owned(),
            worker: r.worker.as_ref().map(|(id, name)| WorkerRef {
                id: id.to_string(),
                name: name.clone(),
            }),
            result,
            error,
            elapsed_ms: u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The CLI's exit code: 0 completed, 2 the input is too large (a usage
    /// error), 3 nobody could take it (no capable worker, timed out, queue
    /// full), 1 any other failure.
    pub fn exit_code(&self) -> u8 {
        match self.status.as_str() {
            "completed" => 0,
            "no_worker" | "timed_out" | "queue_full" => 3,
            "too_large" => 2,
            _ => 1,
        }
    }
}

fn status_of(e: &JobError) -> &'static str {
    match e {
        JobError::NoCapableWorker { .. } => "no_worker",
        JobError::QueueFull { .. } => "queue_full",
        JobError::TooLarge { .. } => "too_large",
        JobError::TimedOut { .. } => "timed_out",
        JobError::Rejected { .. } => "rejected",
        JobError::Lost { .. } => "lost",
        JobError::Cancelled => "cancelled",
        _ => "failed",
    }
}

/// The pool as `peer peers --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeersReply {
    /// Whether the daemon is connected to the signal-server.
    pub connected: bool,
    /// The daemon itself.
    pub me: PeerInfo,
    /// Everyone else.
    pub peers: Vec<PeerInfo>,
}

impl From<PoolSnapshot> for PeersReply {
    fn from(s: PoolSnapshot) -> Self {
        Self {
            connected: s.connected,
            me: s.me,
            peers: s.peers,
        }
    }
}

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No daemon listens there.
    #[error("no peer daemon answers on {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The conversation failed.
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon said no.
    #[error("peer daemon: {0}")]
    Daemon(String),
    /// The answer was not JSON.
    #[error("peer daemon sent an unreadable answer: {0}")]
    BadReply(#[from] serde_json::Error),
    /// Another daemon already serves this socket.
    #[error("another peer daemon already listens on {0}; pick another --control path or --name")]
    InUse(PathBuf),
}

/// Where a daemon of `pool`/`name` listens when no `--control` is given:
/// `$XDG_RUNTIME_DIR/jobmesh/POOL-NAME.sock`, else `$TMPDIR/jobmesh-UID/POOL-NAME.sock`.
pub fn default_path(pool: &str, name: &str) -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("jobmesh"),
        _ => {
            let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
            std::env::temp_dir().join(format!("jobmesh-{uid}"))
        }
    };
    dir.join(format!("{pool}-{name}.sock"))
}

/// Binds the control socket (creating its directory 0700, the socket 0600).
/// A stale socket file nobody answers on is replaced.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves control requests for `daemon` until `cancel`; removes the socket file at the end.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    daemon: PeerHandle,
    cancel: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            () = cancel.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => { warn!(error = %e, "control accept failed"); continue }
            },
        };
        let daemon = daemon.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                r = handle(stream, &daemon) => if let Err(e) = r { debug!(error = %e, "control connection ended") },
            }
            drop(permit);
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn handle(stream: UnixStream, daemon: &PeerHandle) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_CONTROL_REQUEST as u64 + 1))
        .read_line(&mut line)
        .await?;
    let reply = if line.len() > MAX_CONTROL_REQUEST {
        error_json(&format!("request larger than {MAX_CONTROL_REQUEST} bytes"))
    } else {
        match serde_json::from_str::<Request>(&line) {
            Err(e) => error_json(&format!("bad request: {e}")),
            Ok(Request::Peers) => to_json(&PeersReply::from(daemon.pool())),
            Ok(Request::Submit {
                capability,
                input,
                timeout_ms,
            }) => match daemon
                .submit(capability, input, Duration::from_millis(timeout_ms.max(1)))
                .await
            {
                Ok(report) => to_json(&Envelope::from_report(&report)),
                Err(e) => error_json(&e.to_string()),
            },
        }
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| error_json(&e.to_string()))
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "daemon_error": message }).to_string()
}

/// Sends one request to the daemon at `path` and returns its JSON answer.
pub async fn request(path: &Path, req: &Request) -> Result<Value, ControlError> {
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).await?;
    let v: Value = serde_json::from_str(&answer)?;
    if let Some(e) = v.get("daemon_error").and_then(Value::as_str) {
        return Err(ControlError::Daemon(e.to_owned()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_status() {
        let mk = |status: &str| Envelope {
            job_id: String::new(),
            status: status.into(),
            worker: None,
            result: None,
            error: None,
            elapsed_ms: 0,
        };
        assert_eq!(mk("completed").exit_code(), 0);
        assert_eq!(mk("failed").exit_code(), 1);
        assert_eq!(mk("rejected").exit_code(), 1);
        assert_eq!(mk("no_worker").exit_code(), 3);
        assert_eq!(mk("timed_out").exit_code(), 3);
    }

    #[test]
    fn default_path_is_per_pool_and_name() {
        let a = default_path("p", "a");
        assert!(a.to_string_lossy().ends_with("p-a.sock"), "{a:?}");
        assert_ne!(a, default_path("p", "b"));
    }
}
