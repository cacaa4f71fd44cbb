//! Sessions: many requests on one control connection, each tagged with an
//! id, answered in the order they are ready (see the parent module).
//!
//! Daemon side, per session: the connection's task reads request lines; each
//! request runs in a task of its own (at most [`MAX_SESSION_REQUESTS`]: the
//! reader waits for a permit before taking the next line); their lines go
//! through one bounded queue ([`SESSION_LINES`]; overflow: the request tasks
//! wait) to a writer task that batches them into the socket.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{
    answer, connect, error_json, follow, read_request, Answer, ControlError, LineSink, Reader,
    Request, Tagged, Writer, MAX_SESSION_REQUESTS,
};
use crate::api::PeerHandle;
use crate::lock;

/// Lines waiting for a session's writer, both ways. Overflow: the senders wait.
const SESSION_LINES: usize = 1024;

/// `line` (a JSON object) with `"id":id` first.
fn tag(id: u64, line: &str) -> String {
    match line.strip_prefix('{') {
        Some("}") => format!("{{\"id\":{id}}}"),
        Some(rest) => format!("{{\"id\":{id},{rest}"),
        // Invariant: every answer line is a JSON object.
        None => format!("{{\"id\":{id},\"daemon_error\":\"unexpected answer: {line}\"}}"),
    }
}

/// The lines of one request's answer, tagged, into the session's writer.
struct TaggedLines {
    id: u64,
    lines: mpsc::Sender<String>,
}

impl LineSink for TaggedLines {
    async fn line(&mut self, line: String) -> std::io::Result<()> {
        self.lines.send(tag(self.id, &line)).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the session's client left")
        })
    }
}

/// Serves a session whose first request (`first`, with `id`) was just read.
pub(super) async fn serve(
    daemon: &PeerHandle,
    id: u64,
    first: Request,
    mut reader: Reader,
    write: Writer,
) -> std::io::Result<()> {
    let (lines, queued) = mpsc::channel(SESSION_LINES);
    // Cancelled when the client leaves: its jobs still running are cancelled.
    let left = CancellationToken::new();
    let writer = tokio::spawn(write_lines(queued, write, left.clone()));
    let permits = Arc::new(Semaphore::new(MAX_SESSION_REQUESTS));
    let mut requests = JoinSet::new();
    let mut next = Some((id, first));
    loop {
        let (id, request) = match next.take() {
            Some(first) => first,
            None => match read_request(&mut reader).await {
                Ok(Some(Ok(Tagged {
                    id: Some(id),
                    request,
                }))) => (id, request),
                Ok(Some(Ok(Tagged { id: None, .. }))) => {
                    let e = error_json("in a session every request needs an \"id\"");
                    if lines.send(e).await.is_err() {
                        break;
                    }
                    continue;
                }
                // An unreadable line has no id to answer with.
                Ok(Some(Err(e))) => {
                    if lines.send(error_json(&e)).await.is_err() {
                        break;
                    }
                    continue;
                }
                Ok(None) | Err(_) => break,
            },
        };
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = left.cancelled() => break,
        };
        while requests.try_join_next().is_some() {}
        let out = TaggedLines {
            id,
            lines: lines.clone(),
        };
        requests.spawn(one(daemon.clone(), request, out, left.clone(), permit));
    }
    debug!(
        running = requests.len(),
        "control session ended; cancelling its running jobs"
    );
    left.cancel();
    while requests.join_next().await.is_some() {}
    drop(lines);
    let _ = writer.await;
    Ok(())
}

/// Answers one request of a session.
async fn one(
    daemon: PeerHandle,
    request: Request,
    mut out: TaggedLines,
    left: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let written = match answer(&daemon, request).await {
        Answer::Line(line) => out.line(line).await,
        Answer::Watch | Answer::WatchPool => {
            let e = error_json("watch needs a connection of its own: send it without an \"id\"");
            out.line(e).await
        }
        Answer::Job { job, events, save } => {
            follow(&daemon, job, events, save, &mut out, left.cancelled()).await
        }
    };
    if written.is_err() {
        left.cancel();
    }
}

/// The daemon's writer: queued lines into the socket; a failed write means
/// the client is gone, and its jobs are cancelled.
async fn write_lines(queued: mpsc::Receiver<String>, write: Writer, left: CancellationToken) {
    let mut w = BufWriter::new(write);
    if drain(queued, &mut w).await.is_err() {
        left.cancel();
        return;
    }
    let _ = w.shutdown().await;
}

/// Writes each queued line and a newline, flushing whenever no more are
/// ready (one write for a burst), until the queue closes.
async fn drain<W: AsyncWrite + Unpin>(
    mut queued: mpsc::Receiver<String>,
    w: &mut BufWriter<W>,
) -> std::io::Result<()> {
    while let Some(line) = queued.recv().await {
        let mut next = Some(line);
        while let Some(line) = next.take() {
            w.write_all(line.as_bytes()).await?;
            w.write_all(b"\n").await?;
            next = queued.try_recv().ok();
        }
        w.flush().await?;
    }
    Ok(())
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, ControlError>>>>>;

/// A client of a control session: submit many jobs (or any other request but
/// `watch`) through one connection without waiting for each answer. Event
/// lines are not delivered (ask for `events: false`). Dropping it closes
/// the connection, which cancels its jobs still running.
#[derive(Debug)]
pub struct Session {
    lines: mpsc::Sender<String>,
    pending: Pending,
    next_id: AtomicU64,
    tasks: JoinSet<()>,
}

impl Session {
    /// Connects to the daemon at `path`.
    pub async fn open(path: &Path) -> Result<Self, ControlError> {
        let (read, write) = connect(path).await?.into_split();
        let (lines, queued) = mpsc::channel(SESSION_LINES);
        let pending = Pending::default();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let _ = drain(queued, &mut BufWriter::new(write)).await;
        });
        tasks.spawn(read_answers(read, pending.clone()));
        Ok(Self {
            lines,
            pending,
            next_id: AtomicU64::new(1),
            tasks,
        })
    }

    /// Sends `req` and waits for its answer (for a submit: the envelope).
    pub async fn request(&self, req: &Request) -> Result<Value, ControlError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let line = tag(id, &serde_json::to_string(req)?);
        if self.lines.send(line).await.is_err() {
            lock(&self.pending).remove(&id);
            return Err(closed());
        }
        rx.await.unwrap_or_else(|_| Err(closed()))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

fn closed() -> ControlError {
    ControlError::Daemon("closed the session".into())
}

/// Hands each answer to the request with its id; fails every pending
/// request when the connection ends.
async fn read_answers(read: tokio::net::unix::OwnedReadHalf, pending: Pending) {
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(mut v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v.get("event").is_some() {
            continue;
        }
        let Some(id) = v.as_object_mut().and_then(|o| o.remove("id")) else {
            debug!(%line, "control session: an answer without an id");
            continue;
        };
        let Some(waiter) = id.as_u64().and_then(|id| lock(&pending).remove(&id)) else {
            continue;
        };
        let answer = match v.get("daemon_error").and_then(Value::as_str) {
            Some(e) => Err(ControlError::Daemon(e.to_owned())),
            None => Ok(v),
        };
        let _ = waiter.send(answer);
    }
    lock(&pending).clear();
}

#[cfg(test)]
mod tests {
    use super::tag;

    #[test]
    fn tagging_puts_the_id_first_in_any_object() {
        assert_eq!(tag(7, r#"{"a":1}"#), r#"{"id":7,"a":1}"#);
        assert_eq!(tag(0, "{}"), r#"{"id":0}"#);
        let odd = tag(3, "nope");
        assert!(
            serde_json::from_str::<serde_json::Value>(&odd).is_ok(),
            "{odd}"
        );
    }
}
