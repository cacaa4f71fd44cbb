//! The journal on its own thread: async callers queue changes and reads;
//! the thread commits every change that has queued up in one transaction
//! (one disk sync for all of them, if any of them needs one) and then
//! answers each caller.

use tokio::sync::{mpsc, oneshot};

use crate::{Durability, Journal, JournalError, Op};

/// Requests queued for the journal thread. Full: callers wait (`commit`,
/// `read`) or get their ops back (`try_commit`); a submit is therefore held
/// back by a slow disk instead of being acknowledged before it is durable.
pub const JOURNAL_QUEUE: usize = 1024;
/// Most changes one transaction takes before it is committed.
const MAX_GROUP_OPS: usize = 4096;

type Read = Box<dyn FnOnce(&mut Journal) + Send>;

/// Told of every transaction the journal thread commits: how long it took
/// (the disk sync included) and whether it was synced. For metrics; it runs
/// on the journal thread, so it must be quick.
pub type CommitObserver = std::sync::Arc<dyn Fn(std::time::Duration, Durability) + Send + Sync>;
type Done = oneshot::Sender<Result<(), JournalError>>;

enum Request {
    Commit {
        ops: Vec<Op>,
        durability: Durability,
        done: Done,
    },
    Read(Read),
}

/// A handle to the journal thread; cheap to clone. The thread ends when the
/// last handle is dropped, after finishing what was queued.
#[derive(Debug, Clone)]
pub struct JournalHandle {
    tx: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Commit { ops, .. } => write!(f, "Commit({} ops)", ops.len()),
            Request::Read(_) => f.write_str("Read"),
        }
    }
}

/// A queued commit; await [`Committed::done`] for its outcome.
#[derive(Debug)]
pub struct Committed(oneshot::Receiver<Result<(), JournalError>>);

impl Committed {
    /// Resolves once the changes are as durable as asked (or failed, and
    /// were not recorded).
    pub async fn done(self) -> Result<(), JournalError> {
        self.0.await.unwrap_or(Err(JournalError::Stopped))
    }
}

/// Starts the journal thread. [`Stopped`] resolves once the thread has
/// ended and closed the database (after the last handle was dropped), so the
/// same journal can be opened again.
pub fn spawn(journal: Journal) -> std::io::Result<(JournalHandle, Stopped)> {
    spawn_observed(journal, std::sync::Arc::new(|_, _| {}))
}

/// [`spawn`], telling `observer` of each transaction.
pub fn spawn_observed(
    journal: Journal,
    observer: CommitObserver,
) -> std::io::Result<(JournalHandle, Stopped)> {
    let (tx, rx) = mpsc::channel(JOURNAL_QUEUE);
    let (stopped_tx, stopped) = oneshot::channel();
    std::thread::Builder::new()
        .name("jobmesh-journal".into())
        .spawn(move || {
            run(journal, rx, &*observer);
            let _ = stopped_tx.send(());
        })?;
    Ok((JournalHandle { tx }, Stopped(stopped)))
}

/// The journal thread's end; see [`spawn`].
#[derive(Debug)]
pub struct Stopped(oneshot::Receiver<()>);

impl Stopped {
    /// Waits until the thread has closed the database.
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}

impl JournalHandle {
    /// Records `ops` as one unit and waits until they are as durable as
    /// `durability` says.
    pub async fn commit(&self, ops: Vec<Op>, durability: Durability) -> Result<(), JournalError> {
        self.queue(ops, durability).await?.done().await
    }

    /// Queues `ops` (waiting for room), without waiting for them to be
    /// written: whatever is queued afterwards is written after them.
    pub async fn queue(
        &self,
        ops: Vec<Op>,
        durability: Durability,
    ) -> Result<Committed, JournalError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::Commit {
                ops,
                durability,
                done,
            })
            .await
            .map_err(|_| JournalError::Stopped)?;
        Ok(Committed(rx))
    }

    /// Queues `ops` without waiting; hands them back when the queue is full
    /// (the caller keeps them and tries again) or the journal has stopped.
    pub fn try_commit(&self, ops: Vec<Op>, durability: Durability) -> Result<Committed, Vec<Op>> {
        let (done, rx) = oneshot::channel();
        self.tx
            .try_send(Request::Commit {
                ops,
                durability,
                done,
            })
            .map(|()| Committed(rx))
            .map_err(|e| match e.into_inner() {
                Request::Commit { ops, .. } => ops,
                Request::Read(_) => Vec::new(),
            })
    }

    /// Runs `f` on the journal thread (after every change queued before it)
    /// and returns its answer.
    pub async fn read<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Journal) -> Result<T, JournalError> + Send + 'static,
    {
        let (answer, rx) = oneshot::channel();
        let job: Read = Box::new(move |j| {
            let _ = answer.send(f(j));
        });
        self.tx
            .send(Request::Read(job))
            .await
            .map_err(|_| JournalError::Stopped)?;
        rx.await.unwrap_or(Err(JournalError::Stopped))
    }
}

fn run(
    mut journal: Journal,
    mut rx: mpsc::Receiver<Request>,
    observer: &(dyn Fn(std::time::Duration, Durability) + Send + Sync),
) {
    let mut group: Vec<(Vec<Op>, Done)> = Vec::new();
    let mut reads: Vec<Read> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        let mut ops = 0;
        let mut durability = Durability::Written;
        // Take whatever else is queued, up to a group's worth of changes;
        // the group is synced if any of its commits must be.
        while let Some(req) = next.take() {
            match req {
                Request::Commit {
                    ops: o,
                    durability: d,
                    done,
                } => {
                    ops += o.len();
                    if d == Durability::Synced {
                        durability = d;
                    }
                    group.push((o, done));
                }
                Request::Read(r) => reads.push(r),
            }
            if ops < MAX_GROUP_OPS {
                next = rx.try_recv().ok();
            }
        }
        if !group.is_empty() {
            let started = std::time::Instant::now();
            commit_group(&mut journal, &mut group, durability);
            observer(started.elapsed(), durability);
        }
        // Reads run after the changes queued before them are committed.
        for r in reads.drain(..) {
            r(&mut journal);
        }
    }
}

/// One transaction for the whole group; if it fails, each commit alone, so
/// only the one that cannot be written fails.
fn commit_group(journal: &mut Journal, group: &mut Vec<(Vec<Op>, Done)>, durability: Durability) {
    if group.is_empty() {
        return;
    }
    let all = group.iter().flat_map(|(ops, _)| ops.iter());
    match journal.apply_iter(all, durability) {
        Ok(()) => {
            for (_, done) in group.drain(..) {
                let _ = done.send(Ok(()));
            }
        }
        Err(e) if group.len() == 1 => {
            tracing::error!(error = %e, "journal commit failed");
            if let Some((_, done)) = group.pop() {
                let _ = done.send(Err(e));
            }
        }
        Err(_) => {
            for (ops, done) in group.drain(..) {
                let r = journal.apply_as(&ops, durability);
                if let Err(e) = &r {
                    tracing::error!(error = %e, "journal commit failed");
                }
                let _ = done.send(r);
            }
        }
    }
}
