//! signal-server scale: many lightweight WebSocket peers in one pool.
//!
//! The real `signal-server` binary runs as a child process (its pool limit
//! raised to N with `--max-peers-per-pool`, default 1,024; everything else
//! default: 5 s heartbeat, 256-message queue per client, which has no flag).
//! N clients in this process, plain tokio-tungstenite sockets without
//! WebRTC, say hello in one pool; at most [`IN_FLIGHT`] are between their
//! connect and their welcome at a time. Every client has one task that keeps
//! reading its socket (answering the server's pings) and records what the
//! figures need: its welcome, how many `peer_joined` it saw, and when
//! `stats_changed` frames arrived. `peer_joined` and `welcome` frames are
//! recognised by their first bytes and not decoded (there are N²/2 of the
//! one, and the other is N × ~160 B of JSON; this process shares the cores
//! with the server); everything else is decoded.
//!
//! Figures per N, one sample per repeat (a fresh server each):
//! * join time: from the first connect to the last welcome received;
//! * announcements delivered: until all N(N-1)/2 `peer_joined` frames
//!   (each join is announced to every member already in) have arrived;
//! * server RSS (VmRSS) once those are delivered, and peak RSS (VmHWM);
//! * stats fan-out p50 / p99: one client sends a changed `stats`; the delay
//!   until each other client has its `stats_changed`, as the p50 / p99 over
//!   the receivers, averaged over a few changes;
//! * largest welcome: the size of the last joiner's snapshot of the pool;
//! * clients dropped: by the server as slow, in attempts of the repeat that
//!   were then run again (see below); normally 0.
//!
//! What it showed (2 cores): joining is O(N²) in time — every join encodes
//! a welcome of every member and one `peer_joined` per member — and the
//! server's RSS also grows as ~0.2 KiB × N² and stays there (1.9 GiB at
//! 3,000 peers), so 10,000 is capped (see [`FULL`]). A welcome exceeds the
//! 64 KiB `MAX_SIGNAL_MESSAGE` that jobmesh peers accept from ~400 members
//! on (this scenario's clients accept any size). More than 256 joins in
//! flight at once overflow members' queues and the server drops them as
//! slow, which is why joins are paced here; even paced, now and then
//! (about one 1,000-peer run in ten here, more on a loaded machine) the
//! server drops a few clients that were reading (its log: "client queue
//! full"). Such a repeat is run again and the drops are reported as a figure.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use jobmesh_wire::signal::{encode, ClientMsg, Hello, ServerMsg};
use jobmesh_wire::{PeerId, Stats, PROTOCOL_VERSION};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::env::{self, Proc};
use crate::report::{quantile, Figure};
use crate::Ctx;

const SCENARIO: &str = "signal-scale";
const POOL: &str = "bench";
/// Clients between their connect and their welcome at any time. Each join is
/// announced to every member through its 256-message server queue; with a
/// bounded number of joins in flight no queue can fill up while its
/// connection keeps being scheduled.
const IN_FLIGHT: usize = 64;
/// Deadline for one WebSocket connect (and its HTTP upgrade).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for all N clients to be welcomed, and again for all join
/// announcements to be delivered.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);
/// Deadline for one stats change to reach every other client.
const FANOUT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the measuring task looks at the clients' counters. Only waits
/// on it: every time measured is stamped by the client task that saw it.
const POLL: Duration = Duration::from_millis(2);
/// A progress line on stderr this often during a long phase.
const PROGRESS: Duration = Duration::from_secs(15);
/// File descriptors this process needs beyond one per client.
const SPARE_FDS: u64 = 256;
/// The largest N that runs more than two repeats (larger ones are slow).
const MANY_REPEATS_UP_TO: usize = 2_000;

/// One pool size to measure.
#[derive(Debug, Clone, Copy)]
struct Size {
    n: usize,
    /// The size the scenario is meant to reach, when `n` is a cap below it.
    capped_from: Option<usize>,
}

impl Size {
    fn label(self) -> String {
        match self.capped_from {
            Some(wanted) => format!("{} peers [{}k capped]", self.n, wanted / 1000),
            None => format!("{} peers", self.n),
        }
    }
}

/// `--quick`: 200 and 1,000 peers, 2 stats changes each.
const QUICK: [Size; 2] = [
    Size {
        n: 200,
        capped_from: None,
    },
    Size {
        n: 1_000,
        capped_from: None,
    },
];
/// The full run: 1,000 peers, and 3,000 instead of 10,000. Joining is
/// O(N²) in time and in memory (see the module docs): on 2 cores 3,000
/// peers join in 25–45 s (idle or busy machine) with 1.9 GiB of server RSS
/// and 1.9 GiB in this process, while 10,000 had 4,787 members after 90 s
/// (joins slowing as 1/N), which extrapolates to 5–7 min and ~20 GiB of
/// server RSS, plus ~15 GiB here: more than the 23 GiB machine has.
const FULL: [Size; 2] = [
    Size {
        n: 1_000,
        capped_from: None,
    },
    Size {
        n: 3_000,
        capped_from: Some(10_000),
    },
];
/// Stats changes measured per repeat: quick, full.
const ROUNDS: (u64, u64) = (2, 5);

pub(crate) async fn run(ctx: Ctx) -> anyhow::Result<Vec<Figure>> {
    let (sizes, rounds) = if ctx.quick {
        (QUICK, ROUNDS.0)
    } else {
        (FULL, ROUNDS.1)
    };
    let largest = sizes.iter().map(|s| s.n).max().unwrap_or(0) as u64;
    check_open_files(largest + SPARE_FDS)?;
    let mut figures = Vec::new();
    for size in sizes {
        let n = size.n;
        let repeats = if n > MANY_REPEATS_UP_TO {
            ctx.repeats.min(2)
        } else {
            ctx.repeats
        };
        let mut all: Vec<Sample> = Vec::new();
        for r in 0..repeats {
            all.push(measure_retrying(&ctx, n, rounds, r + 1).await?);
        }
        let label = size.label();
        let figure = |what: &str, unit: &'static str, f: fn(&Sample) -> f64| {
            Figure::new(
                SCENARIO,
                format!("{label}: {what}"),
                unit,
                all.iter().map(f).collect(),
            )
        };
        figures.extend([
            figure("join time", "s", |s| s.join_s),
            figure("announcements delivered", "s", |s| s.settled_s),
            figure("server RSS", "MiB", |s| s.rss_mib),
            figure("server peak RSS", "MiB", |s| s.hwm_mib),
            figure("stats fan-out p50", "ms", |s| s.fanout_p50_ms),
            figure("stats fan-out p99", "ms", |s| s.fanout_p99_ms),
            figure("largest welcome", "KiB", |s| s.welcome_kib),
            // Dropped as slow in attempts that were then run again.
            figure("clients dropped", "clients", |s| s.lost_before as f64),
        ]);
    }
    Ok(figures)
}

/// Attempts per repeat: a repeat in which the server dropped clients is
/// run again (the drops are reported as a figure), at most this often.
const ATTEMPTS: usize = 3;

/// One repeat of `n` peers, run again when the server dropped clients as
/// slow: on 2 cores that happens to a few healthy clients now and then, when
/// a burst of join announcements leaves some connection tasks (the server's
/// or this process's) unserved for 256 joins.
async fn measure_retrying(
    ctx: &Ctx,
    n: usize,
    rounds: u64,
    repeat: usize,
) -> anyhow::Result<Sample> {
    let mut lost_before = 0;
    for attempt in 1..=ATTEMPTS {
        let measured = measure(ctx, n, rounds)
            .await
            .with_context(|| format!("{n} peers, repeat {repeat}, attempt {attempt}"));
        match measured {
            Ok(mut s) => {
                s.lost_before = lost_before;
                return Ok(s);
            }
            Err(e) if attempt < ATTEMPTS => {
                let Some(lost) = e.downcast_ref::<ClientsLost>() else {
                    return Err(e);
                };
                lost_before += lost.clients;
                eprintln!("   signal-scale: {e:#}; running the repeat again");
            }
            Err(e) => return Err(e),
        }
    }
    bail!("{n} peers, repeat {repeat}: no attempt left")
}

/// Clients that failed (in practice: dropped by the server) during a repeat.
#[derive(Debug)]
struct ClientsLost {
    clients: usize,
    first: String,
}

impl std::fmt::Display for ClientsLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} client(s) lost, the first with: {}",
            self.clients, self.first
        )
    }
}

impl std::error::Error for ClientsLost {}

/// One repeat's measurements.
struct Sample {
    /// Clients dropped in earlier attempts of this repeat.
    lost_before: usize,
    join_s: f64,
    settled_s: f64,
    rss_mib: f64,
    hwm_mib: f64,
    fanout_p50_ms: f64,
    fanout_p99_ms: f64,
    welcome_kib: f64,
}

/// Fails early, with the fix, when this process may not open `need` files.
/// (The server is a separate process with the same limit and needs one
/// socket per client too.)
fn check_open_files(need: u64) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").context("/proc/self/limits")?;
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("no \"Max open files\" in /proc/self/limits")?;
    if soft == "unlimited" {
        return Ok(());
    }
    let soft: u64 = soft
        .parse()
        .with_context(|| format!("open-files limit {soft:?}"))?;
    if soft < need {
        bail!("this scenario needs {need} open files, the limit is {soft}: raise it (ulimit -n {need})");
    }
    Ok(())
}

/// `signal-server` on 127.0.0.1:0 with room for `n` peers in a pool.
fn start_server(ctx: &Ctx, n: usize) -> anyhow::Result<(Proc, String)> {
    env::signal_server(&ctx.bins, &["--max-peers-per-pool", &n.to_string()])
}

/// A fresh server, `n` clients joining, then `rounds` stats changes.
async fn measure(ctx: &Ctx, n: usize, rounds: u64) -> anyhow::Result<Sample> {
    let (server, url) = start_server(ctx, n)?;
    let board = Arc::new(Board::new(n));
    let mut clients = JoinSet::new();
    let measured = drive(&mut clients, &server, &url, &board, n, rounds).await;
    // The server goes first: clients leaving one by one would make it
    // announce N departures to N members.
    drop(server);
    clients.shutdown().await;
    measured
}

async fn drive(
    clients: &mut JoinSet<()>,
    server: &Proc,
    url: &str,
    board: &Arc<Board>,
    n: usize,
    rounds: u64,
) -> anyhow::Result<Sample> {
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let (cmd_tx, cmd_rx) = mpsc::channel(1);
    let mut cmd_rx = Some(cmd_rx);
    let t0 = Instant::now();
    for i in 0..n {
        let cmds = if i == 0 { cmd_rx.take() } else { None };
        clients.spawn(client(url.to_owned(), gate.clone(), board.clone(), cmds));
    }

    wait_for(board, t0, &format!("{n} peers joined"), || {
        board.welcomed.load(Ordering::Relaxed) >= n
    })
    .await?;
    let joined_at = board
        .stamp(&board.all_welcomed_at)
        .context("welcome time")?;
    let total = board.announcements;
    wait_for(board, t0, &format!("{total} join announcements"), || {
        board.announced.load(Ordering::Relaxed) >= total
    })
    .await?;
    let settled_at = board
        .stamp(&board.settled_at)
        .context("announcement time")?;
    let rss_mib = server.rss_mib()?;
    let hwm_mib = env::status_kib(server.pid(), "VmHWM")? as f64 / 1024.0;

    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for seq in 1..=rounds {
        let (p50, p99) = fan_out(board, &cmd_tx, n, seq)
            .await
            .with_context(|| format!("stats change {seq}"))?;
        p50s.push(p50);
        p99s.push(p99);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    if let Some(lost) = board.lost() {
        return Err(lost).context("after the stats changes");
    }
    Ok(Sample {
        lost_before: 0,
        join_s: joined_at.saturating_duration_since(t0).as_secs_f64(),
        settled_s: settled_at.saturating_duration_since(t0).as_secs_f64(),
        rss_mib,
        hwm_mib,
        fanout_p50_ms: mean(&p50s),
        fanout_p99_ms: mean(&p99s),
        welcome_kib: board.welcome_max_bytes.load(Ordering::Relaxed) as f64 / 1024.0,
    })
}

/// Waits until `done()`, failing when a client failed or after [`PHASE_TIMEOUT`].
async fn wait_for(
    board: &Board,
    t0: Instant,
    what: &str,
    done: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut next_progress = start + PROGRESS;
    while !done() {
        if let Some(lost) = board.lost() {
            return Err(lost).with_context(|| format!("waiting for {what}"));
        }
        let now = Instant::now();
        if now.saturating_duration_since(start) > PHASE_TIMEOUT {
            bail!(
                "{what}: not within {PHASE_TIMEOUT:?} ({})",
                board.progress()
            );
        }
        if now >= next_progress {
            eprintln!(
                "   signal-scale: waiting for {what}, {:.0} s: {}",
                now.saturating_duration_since(t0).as_secs_f64(),
                board.progress()
            );
            next_progress += PROGRESS;
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Client 0 publishes stats with `seq`; returns (p50, p99) in ms of the
/// delay until each other client saw them.
async fn fan_out(
    board: &Board,
    cmds: &mpsc::Sender<Cmd>,
    n: usize,
    seq: u64,
) -> anyhow::Result<(f64, f64)> {
    let stats = Stats {
        slots: 4,
        running: u32::try_from(seq % 4).unwrap_or(0),
        queued: u32::try_from(seq).unwrap_or(u32::MAX),
        completed: seq,
        seq,
        ..Stats::default()
    };
    let (sent_tx, sent_rx) = oneshot::channel();
    cmds.send(Cmd {
        msg: ClientMsg::Stats { stats },
        sent: sent_tx,
    })
    .await
    .context("the publishing client ended")?;
    let sent_at = sent_rx.await.context("the publishing client ended")?;
    let want = n - 1;
    let seen_for = |seq| board.seen().iter().filter(|(s, _)| *s == seq).count();
    let waited = tokio::time::timeout(FANOUT_TIMEOUT, async {
        while seen_for(seq) < want && board.lost().is_none() {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    if let Some(lost) = board.lost() {
        return Err(lost.into());
    }
    let mut delays: Vec<f64> = board
        .seen()
        .iter()
        .filter(|(s, _)| *s == seq)
        .map(|(_, at)| at.saturating_duration_since(sent_at).as_secs_f64() * 1e3)
        .collect();
    if waited.is_err() || delays.len() < want {
        bail!(
            "{} of {want} clients saw the stats change within {FANOUT_TIMEOUT:?}; {}",
            delays.len(),
            board.first_error().unwrap_or_default()
        );
    }
    board.seen().clear();
    Ok((quantile(&mut delays, 0.5), quantile(&mut delays, 0.99)))
}

/// A frame for the publishing client to send; it reports when it did.
struct Cmd {
    msg: ClientMsg,
    sent: oneshot::Sender<Instant>,
}

/// What the client tasks record, shared with the measuring task.
struct Board {
    n: usize,
    /// N(N-1)/2: every join is announced to each member already in.
    announcements: u64,
    welcomed: AtomicUsize,
    all_welcomed_at: Mutex<Option<Instant>>,
    announced: AtomicU64,
    settled_at: Mutex<Option<Instant>>,
    /// `peer_left` frames seen: nobody leaves during a run unless dropped.
    left: AtomicU64,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
    welcome_max_bytes: AtomicUsize,
    /// (seq, arrival) of every `stats_changed` seen.
    seen: Mutex<Vec<(u64, Instant)>>,
}

/// Locks a mutex that no holder can poison (nothing panics while holding one).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Board {
    fn new(n: usize) -> Self {
        let n64 = n as u64;
        Self {
            n,
            announcements: n64 * n64.saturating_sub(1) / 2,
            welcomed: AtomicUsize::new(0),
            all_welcomed_at: Mutex::new(None),
            announced: AtomicU64::new(0),
            settled_at: Mutex::new(None),
            left: AtomicU64::new(0),
            failed: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            welcome_max_bytes: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        }
    }

    fn stamp(&self, at: &Mutex<Option<Instant>>) -> Option<Instant> {
        *lock(at)
    }

    fn seen(&self) -> MutexGuard<'_, Vec<(u64, Instant)>> {
        lock(&self.seen)
    }

    fn first_error(&self) -> Option<String> {
        lock(&self.first_error).clone()
    }

    fn progress(&self) -> String {
        format!(
            "{} of {} welcomed, {} of {} join announcements delivered",
            self.welcomed.load(Ordering::Relaxed),
            self.n,
            self.announced.load(Ordering::Relaxed),
            self.announcements
        )
    }

    /// Clients failed so far, or announced as gone by the server.
    fn lost(&self) -> Option<ClientsLost> {
        // A dropped client fails here too (its socket is reset); `left`
        // counts the announcements of it, one per other member.
        let failed = self.failed.load(Ordering::Relaxed);
        let announced_gone = self.left.load(Ordering::Relaxed) > 0;
        let clients = failed.max(usize::from(announced_gone));
        (clients > 0).then(|| ClientsLost {
            clients,
            first: self.first_error().unwrap_or_else(|| {
                "the server announced departures (clients dropped as slow or silent)".into()
            }),
        })
    }

    fn fail(&self, e: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        lock(&self.first_error).get_or_insert_with(|| format!("{e:#}"));
    }

    fn welcome(&self, at: Instant, bytes: usize) {
        self.welcome_max_bytes.fetch_max(bytes, Ordering::Relaxed);
        if self.welcomed.fetch_add(1, Ordering::Relaxed) + 1 == self.n {
            *lock(&self.all_welcomed_at) = Some(at);
        }
    }

    fn peer_joined(&self, at: Instant) {
        if self.announced.fetch_add(1, Ordering::Relaxed) + 1 == self.announcements {
            *lock(&self.settled_at) = Some(at);
        }
    }

    /// Records one text frame. `Err`: the server refused us.
    fn frame(&self, text: &str, at: Instant, welcomed: &mut bool) -> anyhow::Result<()> {
        // Fast paths: serde writes an internally tagged enum's tag first.
        if text.starts_with(r#"{"type":"peer_joined""#) {
            self.peer_joined(at);
            return Ok(());
        }
        if !*welcomed && text.starts_with(r#"{"type":"welcome""#) {
            *welcomed = true;
            self.welcome(at, text.len());
            return Ok(());
        }
        // Not `ServerMsg::decode`: that refuses frames over 64 KiB, and the
        // welcome of a pool of more than ~400 peers is bigger.
        let msg: ServerMsg = serde_json::from_str(text).with_context(|| {
            format!(
                "undecodable frame from the server: {}",
                jobmesh_wire::truncate(text, 200)
            )
        })?;
        match msg {
            ServerMsg::Welcome { .. } if !*welcomed => {
                *welcomed = true;
                self.welcome(at, text.len());
            }
            ServerMsg::PeerJoined { .. } => self.peer_joined(at),
            ServerMsg::PeerLeft { .. } => {
                self.left.fetch_add(1, Ordering::Relaxed);
            }
            ServerMsg::StatsChanged { stats, .. } => self.seen().push((stats.seq, at)),
            ServerMsg::Error { code, message } => bail!("server error {code:?}: {message}"),
            _ => {}
        }
        Ok(())
    }
}

/// One client for its whole life; failures are recorded on the board.
async fn client(
    url: String,
    gate: Arc<Semaphore>,
    board: Arc<Board>,
    cmds: Option<mpsc::Receiver<Cmd>>,
) {
    if let Err(e) = client_loop(&url, &gate, &board, cmds).await {
        board.fail(&e);
    }
}

async fn next_cmd(cmds: &mut Option<mpsc::Receiver<Cmd>>) -> Option<Cmd> {
    match cmds {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn client_loop(
    url: &str,
    gate: &Semaphore,
    board: &Board,
    mut cmds: Option<mpsc::Receiver<Cmd>>,
) -> anyhow::Result<()> {
    let permit = gate.acquire().await.context("join gate closed")?;
    let (mut ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(url, None, true),
    )
    .await
    .with_context(|| format!("connecting to {url}: no answer within {CONNECT_TIMEOUT:?}"))?
    .with_context(|| format!("connecting to {url}"))?;
    let hello = ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        peer_id: PeerId::random(),
        name: "bench-client".into(),
        pool: POOL.into(),
        capabilities: Vec::new(),
        slots: 4,
    });
    ws.send(Message::text(encode(&hello)))
        .await
        .context("sending hello")?;
    let mut permit = Some(permit);
    let mut welcomed = false;
    loop {
        let frame = tokio::select! {
            cmd = next_cmd(&mut cmds) => {
                match cmd {
                    Some(Cmd { msg, sent }) => {
                        let at = Instant::now();
                        ws.send(Message::text(encode(&msg))).await.context("sending stats")?;
                        let _ = sent.send(at);
                    }
                    None => cmds = None,
                }
                continue;
            }
            frame = ws.next() => frame,
        };
        let at = Instant::now();
        match frame {
            Some(Ok(Message::Text(t))) => {
                board.frame(t.as_str(), at, &mut welcomed)?;
                if welcomed {
                    // Lets the next client connect.
                    drop(permit.take());
                }
            }
            Some(Ok(Message::Close(c))) => bail!("the server closed the socket: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                return Err(e).context(
                    "reading from the server (a reset means it dropped this client: its \
                     256-message queue filled up, or a frame took over a heartbeat to write)",
                )
            }
            None => bail!("the server closed the socket"),
        }
    }
}
