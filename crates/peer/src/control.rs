//! The local control API: a unix socket (mode 0600, local callers only) on
//! which `peer submit` and `peer peers` talk to a running daemon.
//!
//! One request per connection: a JSON line in, JSON lines out.
//! * `{"op":"submit","capability":"echo","input":{..},"options":{..},"events":true}` →
//!   with `events`, one `{"event":{..}}` line per job event as it happens;
//!   then the [`Envelope`] when the job ends. Closing the connection before
//!   the end cancels the job (Ctrl-C on `peer submit`). Blobs travel as
//!   absolute paths: `"files":[..]` are read by the daemon and sent as input
//!   blobs; the result's blobs are written to `"out"` (blob 0) and/or into
//!   `"out_dir"` (all, by name) before the envelope is sent.
//! * `{"op":"cancel","job_id":".."}` → `{"cancelled":true|false}`.
//! * `{"op":"jobs"}` → `{"jobs":[..]}` (live and recent, newest first).
//! * `{"op":"watch"}` → one [`WatchEvent`] line per event of every job, until
//!   the client leaves; `{"lagged":N}` when it fell behind and missed N.
//! * `{"op":"peers"}` → a [`PoolSnapshot`](crate::PoolSnapshot) as JSON.
//! * `{"op":"scale","slots":8}` → `{"slots":8,"before":2}`.
//! * `{"op":"capabilities","add":["ocr"],"remove":["sleep"]}` →
//!   `{"capabilities":["echo","ocr"]}` (both lists optional).
//! * a request that cannot be served → `{"daemon_error": "..."}`.
//!
//! **Sessions.** A first request with an `"id"` (any u64) makes the
//! connection a session: send any number of requests, each with its own id,
//! without waiting, and every line of an answer comes back with the id of
//! its request (`{"id":7,"job_id":..,"status":"completed",..}`), in the
//! order they are ready. That is how a program submits many jobs through
//! one connection ([`Session`] is a client). At most
//! [`MAX_SESSION_REQUESTS`] are in flight per session (the daemon stops
//! reading the next line until one ends); `watch` needs its own connection.
//! Closing the session cancels its jobs that are still running, as closing
//! a one-request connection does.
//!
//! At most [`MAX_CONTROL_CONNECTIONS`] are served at once (more wait in the
//! listen backlog); a request line is at most [`MAX_CONTROL_REQUEST`] bytes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jobmesh_wire::{Capability, PeerId, PeerInfo};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::api::{PeerHandle, PoolSnapshot};
use crate::blobs::Blob;
use crate::jobs::WatchEvent;
use crate::store::StoredJob;
use jobmesh_wire::dc::JobId;

/// Longest request line.
pub const MAX_CONTROL_REQUEST: usize = 1024 * 1024;
/// Control connections served at once.
pub const MAX_CONTROL_CONNECTIONS: usize = 64;
/// Requests in flight on one session.
pub const MAX_SESSION_REQUESTS: usize = 16_384;

pub mod running;
mod session;
pub use crate::envelope::{save_blobs, BlobInfo, Envelope, SubmitOptions, WorkerRef};
pub use session::Session;

/// A request on the control socket.
// One request per connection, parsed once: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run a job and answer with its envelope (and its events as they happen).
    Submit {
        /// Which handler.
        capability: Capability,
        /// Its input.
        input: Value,
        /// How to run it.
        #[serde(default)]
        options: SubmitOptions,
        /// Stream the job's events before the envelope.
        #[serde(default)]
        events: bool,
        /// Files sent as input blobs (absolute paths).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<PathBuf>,
        /// Where the result's first blob is written (absolute path).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        out: Option<PathBuf>,
        /// Where every blob of the result is written, by name (absolute path).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        out_dir: Option<PathBuf>,
        /// Answer with the job's id as soon as it is journaled, and let it
        /// run on without this connection (fetch it with `result`). Needs a
        /// daemon with a journal.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        detach: bool,
    },
    /// A job's outcome from the daemon's journal (e.g. after `detach`).
    Result {
        /// Which.
        job_id: JobId,
        /// Where the result's first blob is written (absolute path).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        out: Option<PathBuf>,
        /// Where every blob of the result is written, by name (absolute path).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        out_dir: Option<PathBuf>,
    },
    /// Cancel a job of this daemon.
    Cancel {
        /// Which.
        job_id: JobId,
    },
    /// List live and recent jobs.
    Jobs,
    /// Stream every job event.
    Watch,
    /// Stream the job events of every worker of the pool (observe it).
    WatchPool,
    /// Describe the pool.
    Peers,
    /// The pool at a glance (`peer status`).
    Status,
    /// How this daemon reaches the network (`peer doctor`): a
    /// [`crate::NetworkReport`], TURN credentials included (the control
    /// socket is its owner's only).
    Network,
    /// How the link to a member connected, opening one if there is none
    /// (`peer doctor --peer`): `{"peer", "name", "path"}`.
    Link {
        /// The member's name, or its peer id.
        peer: String,
    },
    /// Run up to `slots` jobs at once from now on (`peer scale`).
    Scale {
        /// The new slots.
        slots: u32,
    },
    /// Change what this daemon runs (`peer capabilities`): removes, then
    /// adds (built-ins, or exec handlers of its settings file). Answers the
    /// capabilities it runs now.
    Capabilities {
        /// To run from now on.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        add: Vec<Capability>,
        /// To stop taking jobs of.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        remove: Vec<Capability>,
    },
}

impl Request {
    /// A submit of `input` to `capability`: no blobs, default options, no
    /// event lines (just the envelope).
    pub fn submit(capability: Capability, input: Value) -> Self {
        Request::Submit {
            capability,
            input,
            options: SubmitOptions::default(),
            events: false,
            files: Vec::new(),
            out: None,
            out_dir: None,
            detach: false,
        }
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
    /// How each open data channel connected, by remote peer (none for a
    /// peer this daemon has no link to).
    #[serde(default)]
    pub links: std::collections::BTreeMap<PeerId, jobmesh_transport::path::LinkPath>,
}

impl From<PoolSnapshot> for PeersReply {
    fn from(s: PoolSnapshot) -> Self {
        Self {
            connected: s.connected,
            me: s.me,
            peers: s.peers,
            links: s.links,
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
    /// The socket or its directory could be replaced by another local user.
    #[error("{0}")]
    Unsafe(String),
}

/// This process's effective user id: the owner of the files it creates (and
/// of `/proc/self`, where it was read before).
fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Refuses a directory another local user could swap a socket into: one
/// owned by someone else (but root), or writable by group or others without
/// the sticky bit.
fn check_dir(dir: &Path) -> Result<(), ControlError> {
    let meta = std::fs::metadata(dir)?;
    let mode = meta.permissions().mode();
    let me = my_uid();
    // Root may use any daemon's socket (it could read its files anyway).
    let foreign = meta.uid() != me && meta.uid() != 0 && me != 0;
    let open = mode & 0o022 != 0 && mode & 0o1000 == 0;
    if foreign || open {
        return Err(ControlError::Unsafe(format!(
            "the control socket's directory {} is {} (mode {:o}): another user could put their own socket there; use a directory of yours, mode 700 (--control PATH), or set XDG_RUNTIME_DIR",
            dir.display(),
            if foreign { format!("owned by uid {}", meta.uid()) } else { "writable by others".to_owned() },
            mode & 0o7777,
        )));
    }
    Ok(())
}

/// Refuses a socket owned by another user: it is not our daemon's.
fn check_socket(path: &Path) -> Result<(), ControlError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.uid() != my_uid() && meta.uid() != 0 && my_uid() != 0 => Err(ControlError::Unsafe(format!(
            "the control socket {} belongs to uid {}, not to you: it is not your daemon's, and could read your jobs; not connecting",
            path.display(),
            meta.uid()
        ))),
        _ => Ok(()),
    }
}

/// Longest wait for a connection's first request line: an idle connection
/// would hold one of the [`MAX_CONTROL_CONNECTIONS`] slots.
pub const FIRST_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Pause after a failed accept (out of file descriptors, say).
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// This user's runtime directory for jobmesh: default control sockets and
/// the records of running daemons ([`running`]). `$XDG_RUNTIME_DIR/jobmesh`,
/// else `$TMPDIR/jobmesh-UID`.
pub fn runtime_dir() -> PathBuf {
    // `dirs::runtime_dir`: `$XDG_RUNTIME_DIR` when it is an absolute path.
    match dirs::runtime_dir() {
        Some(d) => d.join("jobmesh"),
        None => std::env::temp_dir().join(format!("jobmesh-{}", my_uid())),
    }
}

/// Where a daemon of `pool`/`name` listens when no `--control` is given:
/// `POOL-NAME.sock` in [`runtime_dir`].
pub fn default_path(pool: &str, name: &str) -> PathBuf {
    runtime_dir().join(format!("{pool}-{name}.sock"))
}

/// Binds the control socket (creating its directory 0700, the socket 0600).
/// A stale socket file nobody answers on is replaced.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        check_dir(dir)?;
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
                Err(e) => {
                    // Out of file descriptors, say: retrying at once would
                    // spin (and log) as fast as the CPU allows.
                    warn!(error = %e, "control accept failed; pausing {ACCEPT_BACKOFF:?}");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
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

/// A request line: the request, and its id when it belongs to a session.
#[derive(Deserialize)]
struct Tagged {
    #[serde(default)]
    id: Option<u64>,
    #[serde(flatten)]
    request: Request,
}

/// Reads one request line of at most [`MAX_CONTROL_REQUEST`] bytes; `None`
/// at the end of the stream.
async fn read_request(reader: &mut Reader) -> std::io::Result<Option<Result<Tagged, String>>> {
    let mut line = String::new();
    let n = (&mut *reader)
        .take(MAX_CONTROL_REQUEST as u64 + 1)
        .read_line(&mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(if line.len() > MAX_CONTROL_REQUEST {
        Err(format!("request larger than {MAX_CONTROL_REQUEST} bytes"))
    } else {
        serde_json::from_str::<Tagged>(&line).map_err(|e| format!("bad request: {e}"))
    }))
}

async fn handle(stream: UnixStream, daemon: &PeerHandle) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    // A connection that says nothing would hold one of the few slots.
    let first = tokio::time::timeout(FIRST_REQUEST_TIMEOUT, read_request(&mut reader))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request in time"))??;
    let Some(first) = first else {
        return Ok(());
    };
    let request = match first {
        Ok(Tagged {
            id: Some(id),
            request,
        }) => return session::serve(daemon, id, request, reader, write).await,
        Ok(Tagged { id: None, request }) => request,
        Err(e) => {
            write_line(&mut write, &error_json(&e)).await?;
            return write.shutdown().await;
        }
    };
    let reply = match answer(daemon, request).await {
        Answer::Line(line) => line,
        Answer::Watch => return watch(daemon, reader, write).await,
        Answer::WatchPool => return watch_pool(daemon, reader, write).await,
        Answer::Job { job, events, save } => {
            follow(
                daemon,
                job,
                events,
                save,
                &mut write,
                client_gone(&mut reader),
            )
            .await?;
            return write.shutdown().await;
        }
    };
    write_line(&mut write, &reply).await?;
    write.shutdown().await
}

/// What a request asks for.
enum Answer {
    /// One reply line.
    Line(String),
    /// A submitted job, to follow to its end.
    Job {
        job: crate::JobHandle,
        events: bool,
        save: Save,
    },
    /// Every job event, for as long as the client stays.
    Watch,
    /// Every worker's job events, for as long as the client stays.
    WatchPool,
}

/// Acts on one request.
async fn answer(daemon: &PeerHandle, request: Request) -> Answer {
    let line = match request {
        Request::Peers => to_json(&PeersReply::from(daemon.pool())),
        Request::Network => match daemon.network().await {
            Ok(report) => to_json(&report),
            Err(e) => error_json(&e.to_string()),
        },
        Request::Link { peer } => {
            let pool = daemon.pool();
            match pool.member(&peer) {
                None => error_json(&format!(
                    "no member named {peer:?} in the pool (peer peers lists them)"
                )),
                Some(p) => match daemon.link_to(p.id, crate::api::LINK_PROBE_TIMEOUT).await {
                    Ok(path) => to_json(&serde_json::json!({
                        "peer": p.id, "name": p.name, "path": path,
                    })),
                    Err(e) => error_json(&e.to_string()),
                },
            }
        }
        Request::Capabilities { add, remove } => {
            // In order; the first change refused stops the rest.
            let changed = async {
                let mut now = daemon.pool().me.capabilities;
                for c in remove {
                    now = daemon.remove_capability(c).await?;
                }
                for c in add {
                    now = daemon.add_capability(c, None).await?;
                }
                Ok::<_, crate::DaemonError>(now)
            };
            match changed.await {
                Ok(capabilities) => to_json(&serde_json::json!({ "capabilities": capabilities })),
                Err(e) => error_json(&e.to_string()),
            }
        }
        Request::Scale { slots } => match daemon.scale(slots).await {
            Ok(before) => to_json(&serde_json::json!({ "slots": slots, "before": before })),
            Err(e) => error_json(&e.to_string()),
        },
        Request::Status => match daemon.status().await {
            Ok(report) => to_json(&report),
            Err(e) => error_json(&e.to_string()),
        },
        Request::Jobs => match daemon.jobs().await {
            Ok(jobs) => to_json(&serde_json::json!({ "jobs": jobs })),
            Err(e) => error_json(&e.to_string()),
        },
        Request::Cancel { job_id } => {
            to_json(&serde_json::json!({ "cancelled": daemon.cancel(job_id).await }))
        }
        Request::Watch => return Answer::Watch,
        Request::WatchPool => return Answer::WatchPool,
        Request::Result {
            job_id,
            out,
            out_dir,
        } => match relative_path(out.iter().chain(&out_dir)) {
            Some(e) => e,
            None => stored_result(daemon, job_id, out, out_dir).await,
        },
        Request::Submit {
            capability,
            input,
            options,
            events,
            files,
            out,
            out_dir,
            detach,
        } => {
            let relative = relative_path(files.iter().chain(&out).chain(&out_dir));
            match (options.to_options(), relative) {
                (_, Some(e)) => e,
                (Err(e), _) => error_json(&e),
                (Ok(_), None) if detach && !daemon.keeps_journal() => error_json(
                    "--detach needs a daemon that keeps a journal (started with a data dir)",
                ),
                (Ok(options), None) if detach => {
                    let blobs = files.into_iter().map(Blob::from_file).collect();
                    match daemon
                        .submit_job(capability, input, blobs, options, false)
                        .await
                    {
                        Err(e) => error_json(&e.to_string()),
                        // Refused before it was journaled: say so now, as
                        // `peer result` would have nothing to tell later.
                        Ok(mut job) => match job.ended_at_once() {
                            Some(Ok(report)) => to_json(&Envelope::from_report(&report)),
                            Some(Err(e)) => error_json(&e.to_string()),
                            None => to_json(&Envelope::submitted(job.id())),
                        },
                    }
                }
                (Ok(options), None) => {
                    let blobs = files.into_iter().map(Blob::from_file).collect();
                    match daemon
                        .submit_job(capability, input, blobs, options, events)
                        .await
                    {
                        Err(e) => error_json(&e.to_string()),
                        Ok(job) => {
                            let save = Save { out, out_dir };
                            return Answer::Job { job, events, save };
                        }
                    }
                }
            }
        }
    };
    Answer::Line(line)
}

/// An error line if one of `paths` is relative.
fn relative_path<'a>(mut paths: impl Iterator<Item = &'a PathBuf>) -> Option<String> {
    paths.find(|p| !p.is_absolute()).map(|p| {
        error_json(&format!(
            "paths must be absolute (the daemon has its own working directory): {}",
            p.display()
        ))
    })
}

/// The answer to `result`: the kept envelope (its blobs copied where asked),
/// where an unfinished job stands, or why there is none.
async fn stored_result(
    daemon: &PeerHandle,
    job_id: JobId,
    out: Option<PathBuf>,
    out_dir: Option<PathBuf>,
) -> String {
    let envelope = match daemon.stored_result(job_id).await {
        Err(e) => return error_json(&e.to_string()),
        Ok(None) => {
            return error_json(&format!(
            "no job {job_id} in this daemon's journal: not submitted here, or its result expired"
        ))
        }
        Ok(Some(StoredJob::Unfinished { attempt, worker })) => {
            return to_json(&serde_json::json!({
                "job_id": job_id.to_string(),
                "status": if attempt == 0 { "queued" } else { "running" },
                "attempts": attempt,
                "worker": worker,
            }))
        }
        Ok(Some(StoredJob::Ended(v))) => v,
    };
    let mut envelope: Envelope = match serde_json::from_value(envelope) {
        Ok(e) => e,
        Err(e) => return error_json(&format!("the kept result of {job_id} is unreadable: {e}")),
    };
    if out.is_some() || out_dir.is_some() {
        let blobs = envelope.blobs.clone();
        let copied = tokio::task::spawn_blocking(move || {
            copy_kept_blobs(&blobs, out.as_deref(), out_dir.as_deref())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match copied {
            Ok(blobs) => envelope.blobs = blobs,
            Err(e) => return error_json(&e),
        }
    }
    to_json(&envelope)
}

/// Copies kept result blobs like [`save_blobs`] writes received ones.
fn copy_kept_blobs(
    blobs: &[BlobInfo],
    out: Option<&Path>,
    out_dir: Option<&Path>,
) -> Result<Vec<BlobInfo>, String> {
    blobs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let target = match (i, out, out_dir) {
                (0, Some(o), _) => o.to_owned(),
                (_, _, Some(d)) => d.join(b.name.clone().unwrap_or_else(|| format!("output-{i}"))),
                _ => return Ok(b.clone()),
            };
            let from = b
                .saved_to
                .as_deref()
                .ok_or_else(|| format!("result blob {i} was not kept"))?;
            std::fs::copy(from, &target).map_err(|e| {
                format!(
                    "result blob {i} could not be copied to {}: {e}",
                    target.display()
                )
            })?;
            Ok(BlobInfo {
                saved_to: Some(target),
                ..b.clone()
            })
        })
        .collect()
}

type Reader = BufReader<tokio::net::unix::OwnedReadHalf>;
type Writer = tokio::net::unix::OwnedWriteHalf;

/// Where the lines of an answer go: the connection itself, or a session's
/// writer (tagged with the request's id).
trait LineSink {
    async fn line(&mut self, line: String) -> std::io::Result<()>;
}

impl LineSink for Writer {
    async fn line(&mut self, line: String) -> std::io::Result<()> {
        write_line(self, &line).await
    }
}

async fn write_line(write: &mut Writer, line: &str) -> std::io::Result<()> {
    write.write_all(line.as_bytes()).await?;
    write.write_all(b"\n").await
}

/// Resolves when the client closes its end (or sends anything more).
async fn client_gone(reader: &mut Reader) {
    let mut buf = [0u8; 64];
    let _ = reader.read(&mut buf).await;
}

/// Where a submit's result blobs go.
struct Save {
    out: Option<PathBuf>,
    out_dir: Option<PathBuf>,
}

/// Follows a job to its end: its events (if asked) as they happen, then its
/// envelope, into `out`. `gone` resolving first (the client left) cancels
/// the job; so does a failed write.
async fn follow(
    daemon: &PeerHandle,
    mut job: crate::JobHandle,
    events: bool,
    save: Save,
    out: &mut impl LineSink,
    gone: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let clock = crate::jobs::Clock::now();
    let job_id = job.id();
    // Its events (if asked), then its outcome; the client leaving ends it.
    let run = async {
        while let Some(e) = job.next_event().await {
            if events {
                let record = WatchEvent::from_event(&e, &clock);
                out.line(to_json(&serde_json::json!({ "event": record })))
                    .await?;
            }
        }
        std::io::Result::Ok(job.result().await)
    };
    let result = tokio::select! {
        r = run => match r {
            Ok(result) => result,
            Err(e) => {
                // The client is gone (broken pipe) just as much as when it closes.
                debug!(%job_id, error = %e, "control client unreachable; cancelling its job");
                daemon.cancel(job_id).await;
                return Err(e);
            }
        },
        () = gone => {
            debug!(%job_id, "control client left; cancelling its job");
            daemon.cancel(job_id).await;
            return Ok(());
        }
    };
    let reply = match result {
        Ok(report) if report.blobs.is_empty() => to_json(&Envelope::from_report(&report)),
        Ok(report) => {
            let mut envelope = Envelope::from_report(&report);
            let blobs = report.blobs;
            let saved = tokio::task::spawn_blocking(move || {
                save_blobs(&blobs, save.out.as_deref(), save.out_dir.as_deref())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match saved {
                Ok(infos) => {
                    envelope.blobs = infos;
                    to_json(&envelope)
                }
                Err(e) => error_json(&e),
            }
        }
        Err(e) => error_json(&e.to_string()),
    };
    out.line(reply).await
}

/// Streams every job event until the client leaves.
async fn watch(daemon: &PeerHandle, mut reader: Reader, mut write: Writer) -> std::io::Result<()> {
    let mut events = daemon.watch();
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(e) => write_line(&mut write, &to_json(&e)).await?,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    write_line(&mut write, &to_json(&serde_json::json!({ "lagged": n }))).await?;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
            () = client_gone(&mut reader) => return Ok(()),
        }
    }
}

/// `watch_pool`: one line per observed event, `{"worker", "worker_name",
/// ...the event}`; `{"worker", "dropped": n}` when a worker dropped events
/// for this daemon, `{"lagged": n}` when this client missed batches.
async fn watch_pool(
    daemon: &PeerHandle,
    mut reader: Reader,
    mut write: Writer,
) -> std::io::Result<()> {
    /// Worker names remembered per stream (they are few: workers of one pool).
    const MAX_NAMES: usize = 4096;
    let Ok(mut observation) = daemon.observe().await else {
        return write_line(&mut write, &error_json("the daemon is stopping")).await;
    };
    let mut names: std::collections::HashMap<jobmesh_wire::PeerId, String> =
        std::collections::HashMap::new();
    loop {
        let batch = tokio::select! {
            b = observation.next() => b,
            () = client_gone(&mut reader) => return Ok(()),
        };
        let batch = match batch {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(()),
            Err(n) => {
                write_line(&mut write, &to_json(&serde_json::json!({ "lagged": n }))).await?;
                continue;
            }
        };
        // A worker that left (its jobs are `lost`) keeps the name it had.
        if !names.contains_key(&batch.worker) && names.len() < MAX_NAMES {
            let pool = daemon.pool();
            let found = std::iter::once(pool.me)
                .chain(pool.peers)
                .find(|p| p.id == batch.worker)
                .map(|p| p.name);
            if let Some(n) = found {
                names.insert(batch.worker, n);
            }
        }
        let name = names.get(&batch.worker);
        if batch.dropped > 0 {
            let line = serde_json::json!({ "worker": batch.worker, "dropped": batch.dropped });
            write_line(&mut write, &to_json(&line)).await?;
        }
        for e in batch.events {
            let mut line = serde_json::to_value(&e).unwrap_or_default();
            if let Some(obj) = line.as_object_mut() {
                obj.insert("worker".into(), serde_json::json!(batch.worker));
                obj.insert("worker_name".into(), serde_json::json!(name));
            }
            write_line(&mut write, &to_json(&line)).await?;
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| error_json(&e.to_string()))
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "daemon_error": message }).to_string()
}

/// Sends one request to the daemon at `path` and returns its JSON answer
/// (the last line, for a streaming answer).
pub async fn request(path: &Path, req: &Request) -> Result<Value, ControlError> {
    request_streaming(path, req, |_| {}).await
}

/// Sends one request; every `{"event":..}` line is handed to `on_event` as it
/// arrives; the answer (the first other line) is returned.
pub async fn request_streaming(
    path: &Path,
    req: &Request,
    mut on_event: impl FnMut(Value),
) -> Result<Value, ControlError> {
    let (mut lines, _write) = open(path, req).await?;
    while let Some(l) = lines.next_line().await? {
        let mut v: Value = serde_json::from_str(&l)?;
        if let Some(event) = v.get_mut("event") {
            on_event(event.take());
            continue;
        }
        if let Some(e) = v.get("daemon_error").and_then(Value::as_str) {
            return Err(ControlError::Daemon(e.to_owned()));
        }
        return Ok(v);
    }
    Err(ControlError::Daemon(
        "closed the connection without an answer".into(),
    ))
}

/// The daemon's job events as they happen (`{"op":"watch"}`), one JSON
/// object each, until the daemon stops.
pub struct Watch {
    lines: Lines,
    _write: Writer,
}

impl Watch {
    /// The next event, or `None` once the daemon closed the stream.
    pub async fn next(&mut self) -> Result<Option<Value>, ControlError> {
        match self.lines.next_line().await? {
            Some(l) => Ok(Some(serde_json::from_str(&l)?)),
            None => Ok(None),
        }
    }
}

/// Subscribes to a stream of the daemon at `path`: its own job events
/// ([`Request::Watch`]) or the pool's ([`Request::WatchPool`]).
pub async fn subscribe(path: &Path, what: &Request) -> Result<Watch, ControlError> {
    let (lines, write) = open(path, what).await?;
    Ok(Watch {
        lines,
        _write: write,
    })
}

type Lines = tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>;

/// Connects to the daemon whose control socket is `path`.
async fn connect(path: &Path) -> Result<UnixStream, ControlError> {
    check_socket(path)?;
    UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_owned(),
            source,
        })
}

/// Connects and sends `req`. The write half is returned so the caller keeps
/// it open: closing it tells the daemon the client left (and cancels a job).
async fn open(path: &Path, req: &Request) -> Result<(Lines, Writer), ControlError> {
    let (read, mut write) = connect(path).await?.into_split();
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    Ok((BufReader::new(read).lines(), write))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_is_per_pool_and_name() {
        let a = default_path("p", "a");
        assert!(a.to_string_lossy().ends_with("p-a.sock"), "{a:?}");
        assert_ne!(a, default_path("p", "b"));
    }

    #[tokio::test]
    async fn a_control_socket_is_not_bound_in_a_directory_others_can_write() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).expect("dir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let refused = bind(&shared.join("d.sock")).await.expect_err("refused");
        assert!(matches!(refused, ControlError::Unsafe(_)), "{refused}");
        assert!(
            refused.to_string().contains("writable by others"),
            "{refused}"
        );
        // Sticky, as /tmp is: others cannot replace our files there.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        let _ok = bind(&shared.join("d.sock")).await.expect("bound");
        // A directory of our own, 0700: fine.
        let own = tmp.path().join("own");
        let _ok = bind(&own.join("d.sock")).await.expect("bound");
        let mode = std::fs::metadata(&own).expect("dir").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
