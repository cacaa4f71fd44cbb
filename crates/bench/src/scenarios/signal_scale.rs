//! signal-server scale: many lightweight WebSocket peers in one pool.
//!
//! The real `signal-server` binary runs as a child process (its pool limit
//! raised to N with `--max-peers-per-pool`, default 1,024; everything else
//! default). N clients in this process, plain tokio-tungstenite sockets
//! without WebRTC, say hello in one pool; at most [`IN_FLIGHT`] are between
//! their connect and their welcome at a time. Every client has one task that
//! keeps reading its socket (answering the server's pings) and keeps its view
//! of the pool as a bitset of member numbers: client `i` uses peer id `i + 1`,
//! so a member's number is read straight from the id in a `view` frame,
//! without decoding the JSON (there are N² member descriptions in a run, and
//! this process shares the cores with the server). Frames that mention the
//! publishing client (below) are decoded in full.
//!
//! Figures per N, one sample per repeat (a fresh server each):
//! * join time: from the first connect to the last welcome received;
//! * views complete: until every client's view lists all N-1 others;
//! * server RSS (VmRSS) then, and peak RSS (VmHWM);
//! * stats fan-out p50 / p99: one client sends a changed `stats`; the delay
//!   until each other client has it in a `view` frame, as the p50 / p99 over
//!   the receivers, averaged over a few changes 600 ms apart (so each meets
//!   clients whose view interval has passed: a change in a calm pool);
//! * view data per client: bytes of `view` frames a client received until
//!   its view was complete (N-1 members of ~150 B is the least possible);
//! * clients dropped: by the server as not reading, in attempts of the
//!   repeat that were then run again (see below); normally 0.
//!
//! History: with one queued message per change (protocol 1), joining was
//! O(N²) in server memory too (1.9 GiB at 3,000 peers, 10,000 out of reach)
//! and bursts of joins overflowed the 256-message client queues. The
//! versioned view (protocol 2) keeps no per-client backlog.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use jobmesh_peer::lock;
use jobmesh_peer::Identity;
use jobmesh_wire::signal::{encode, ClientMsg, Join, ServerMsg};
use jobmesh_wire::{PeerId, Stats};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::env::{self, Proc};
use crate::report::{quantile, Figure};
use crate::Ctx;

const SCENARIO: &str = "signal-scale";
const POOL: &str = "bench";
/// Clients between their connect and their welcome at any time, so the
/// server's accept backlog never overflows.
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

/// `--quick`: 200 and 1,000 peers, 2 stats changes each.
const QUICK: [usize; 2] = [200, 1_000];
/// The full run: 1,000 and 10,000 peers.
const FULL: [usize; 2] = [1_000, 10_000];
/// Quiet time before each measured stats change: longer than the server's
/// view interval (50 ms, or 0.5 s at 10,000 members).
const ROUND_GAP: Duration = Duration::from_millis(600);
/// Stats changes measured per repeat: quick, full.
const ROUNDS: (u64, u64) = (2, 5);

pub(crate) async fn run(ctx: Ctx) -> anyhow::Result<Vec<Figure>> {
    let (sizes, rounds) = if ctx.quick {
        (QUICK, ROUNDS.0)
    } else {
        (FULL, ROUNDS.1)
    };
    let largest = sizes.iter().max().copied().unwrap_or(0) as u64;
    check_open_files(largest + SPARE_FDS)?;
    let mut figures = Vec::new();
    for n in sizes {
        let repeats = if n > MANY_REPEATS_UP_TO {
            ctx.repeats.min(2)
        } else {
            ctx.repeats
        };
        let mut all: Vec<Sample> = Vec::new();
        for r in 0..repeats {
            all.push(measure_retrying(&ctx, n, rounds, r + 1).await?);
        }
        let label = format!("{n} peers");
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
            figure("views complete", "s", |s| s.settled_s),
            figure("server RSS", "MiB", |s| s.rss_mib),
            figure("server peak RSS", "MiB", |s| s.hwm_mib),
            figure("stats fan-out p50", "ms", |s| s.fanout_p50_ms),
            figure("stats fan-out p99", "ms", |s| s.fanout_p99_ms),
            figure("view data per client", "KiB", |s| s.view_kib),
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
/// not reading (a frame to them took over a heartbeat to write): on a
/// loaded 2-core machine a client task of this process may be starved that
/// long.
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
    view_kib: f64,
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

/// `signal-server` on 127.0.0.1:0 with room for `n` peers in a pool, all
/// connecting from this one address.
fn start_server(ctx: &Ctx, n: usize) -> anyhow::Result<(Proc, String)> {
    let room = (n + 64).to_string();
    env::signal_server(
        &ctx.bins,
        &[
            "--max-peers-per-pool",
            &n.to_string(),
            "--max-connections",
            &room,
            "--max-connections-per-ip",
            &room,
        ],
    )
}

/// A fresh server, `n` clients joining, then `rounds` stats changes.
async fn measure(ctx: &Ctx, n: usize, rounds: u64) -> anyhow::Result<Sample> {
    let (server, url) = start_server(ctx, n)?;
    let board = Arc::new(Board::new(n));
    let mut clients = JoinSet::new();
    let measured = drive(&mut clients, &server, &url, &board, n, rounds).await;
    // The server goes first: clients leaving one by one would only make it
    // tell the rest.
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
        clients.spawn(client(i, url.to_owned(), gate.clone(), board.clone(), cmds));
    }

    wait_for(board, t0, &format!("{n} peers joined"), || {
        board.welcomed.load(Ordering::Relaxed) >= n
    })
    .await?;
    let joined_at = board
        .stamp(&board.all_welcomed_at)
        .context("welcome time")?;
    wait_for(board, t0, &format!("{n} complete views"), || {
        board.complete.load(Ordering::Relaxed) >= n
    })
    .await?;
    let settled_at = board
        .stamp(&board.settled_at)
        .context("complete-views time")?;
    let rss_mib = server.rss_mib()?;
    let hwm_mib = env::status_kib(server.pid(), "VmHWM")? as f64 / 1024.0;

    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for seq in 1..=rounds {
        // Each change after a quiet spell, as a change in a calm pool is:
        // within the server's view interval of the last update a change
        // waits for the interval's end (by design, to batch bursts).
        tokio::time::sleep(ROUND_GAP).await;
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
        view_kib: board.view_bytes.load(Ordering::Relaxed) as f64 / n as f64 / 1024.0,
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
    members: Members,
    welcomed: AtomicUsize,
    all_welcomed_at: Mutex<Option<Instant>>,
    /// Clients whose view lists all N-1 others.
    complete: AtomicUsize,
    settled_at: Mutex<Option<Instant>>,
    /// Departures seen: nobody leaves during a run unless dropped.
    left: AtomicU64,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
    /// Bytes of `view` frames received by clients until their view was complete.
    view_bytes: AtomicU64,
    /// (seq, arrival) of every stats change of the publisher seen.
    seen: Mutex<Vec<(u64, Instant)>>,
}

/// The clients' identities (client `i`'s from a seed of `i`; the publisher
/// is client 0), and their ids' text back to their numbers.
struct Members {
    identities: Vec<Identity>,
    numbers: HashMap<String, usize>,
}

impl Members {
    fn new(n: usize) -> Self {
        let identities: Vec<Identity> = (0..n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
                Identity::from_seed(&seed)
            })
            .collect();
        let numbers = identities
            .iter()
            .enumerate()
            .map(|(i, id)| (id.peer_id().to_string(), i))
            .collect();
        Self {
            identities,
            numbers,
        }
    }

    fn id(&self, i: usize) -> PeerId {
        self.identities[i].peer_id()
    }

    /// The member number of a hyphenated id.
    fn number(&self, id: &str) -> Option<usize> {
        self.numbers.get(id).copied()
    }
}

/// One client's view: which members it knows.
struct View {
    known: Vec<u64>,
    count: usize,
    complete: bool,
    bytes: u64,
}

impl View {
    fn new(n: usize) -> Self {
        Self {
            known: vec![0; n.div_ceil(64)],
            count: 0,
            complete: false,
            bytes: 0,
        }
    }

    /// Marks member `i` known (`true`) or gone; returns whether that changed it.
    fn set(&mut self, i: usize, known: bool) -> bool {
        let Some(word) = self.known.get_mut(i / 64) else {
            return false;
        };
        let bit = 1u64 << (i % 64);
        let was = *word & bit != 0;
        if known {
            *word |= bit;
        } else {
            *word &= !bit;
        }
        match (was, known) {
            (false, true) => self.count += 1,
            (true, false) => self.count -= 1,
            _ => return false,
        }
        true
    }

    fn clear(&mut self) {
        self.known.iter_mut().for_each(|w| *w = 0);
        self.count = 0;
    }
}

impl Board {
    fn new(n: usize) -> Self {
        Self {
            n,
            members: Members::new(n),
            welcomed: AtomicUsize::new(0),
            all_welcomed_at: Mutex::new(None),
            complete: AtomicUsize::new(0),
            settled_at: Mutex::new(None),
            left: AtomicU64::new(0),
            failed: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            view_bytes: AtomicU64::new(0),
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
            "{} of {} welcomed, {} complete views",
            self.welcomed.load(Ordering::Relaxed),
            self.n,
            self.complete.load(Ordering::Relaxed),
        )
    }

    /// Clients failed so far, or reported gone by the server.
    fn lost(&self) -> Option<ClientsLost> {
        // A dropped client fails here too (its socket is reset); `left`
        // counts the reports of it, one per other member.
        let failed = self.failed.load(Ordering::Relaxed);
        let announced_gone = self.left.load(Ordering::Relaxed) > 0;
        let clients = failed.max(usize::from(announced_gone));
        (clients > 0).then(|| ClientsLost {
            clients,
            first: self.first_error().unwrap_or_else(|| {
                "the server reported departures (clients dropped as not reading or silent)".into()
            }),
        })
    }

    fn fail(&self, e: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        lock(&self.first_error).get_or_insert_with(|| format!("{e:#}"));
    }

    fn welcome(&self, at: Instant) {
        if self.welcomed.fetch_add(1, Ordering::Relaxed) + 1 == self.n {
            *lock(&self.all_welcomed_at) = Some(at);
        }
    }

    fn completed(&self, at: Instant, view: &View) {
        self.view_bytes.fetch_add(view.bytes, Ordering::Relaxed);
        if self.complete.fetch_add(1, Ordering::Relaxed) + 1 == self.n {
            *lock(&self.settled_at) = Some(at);
        }
    }

    /// Records one text frame. `Err`: the server refused us.
    fn frame(&self, text: &str, at: Instant, view: &mut View) -> anyhow::Result<()> {
        // serde writes an internally tagged enum's tag first.
        if text.starts_with(r#"{"type":"view""#) {
            return self.view(text, at, view);
        }
        let msg = ServerMsg::decode(text.as_bytes()).with_context(|| {
            format!(
                "undecodable frame from the server: {}",
                jobmesh_wire::truncate(text, 200)
            )
        })?;
        match msg {
            ServerMsg::Welcome { .. } => self.welcome(at),
            ServerMsg::Error { code, message } => bail!("server error {code:?}: {message}"),
            _ => {}
        }
        Ok(())
    }

    /// A `view` frame: ids scanned, not decoded (`left` comes before `peers`).
    fn view(&self, text: &str, at: Instant, view: &mut View) -> anyhow::Result<()> {
        if !view.complete {
            view.bytes += text.len() as u64;
        }
        if text.starts_with(r#"{"type":"view","reset":true"#) {
            view.clear();
        }
        let (left, peers) = text.split_once(r#""peers":["#).unwrap_or((text, ""));
        if let Some((_, ids)) = left.split_once(r#""left":["#) {
            let ids = ids.split_once(']').map_or(ids, |(ids, _)| ids);
            for id in ids.split(',') {
                if let Some(i) = self.members.number(id.trim_matches('"')) {
                    if view.set(i, false) {
                        self.left.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        let mut publisher = false;
        for at_id in memchr::memmem::find_iter(peers.as_bytes(), br#"{"id":""#) {
            let id = peers.get(at_id + 7..at_id + 43).unwrap_or_default();
            let Some(i) = self.members.number(id) else {
                bail!("a member id the bench did not hand out: {id:?}");
            };
            view.set(i, true);
            publisher |= i == 0;
        }
        if publisher {
            // A frame about the publisher: decode it for its stats.
            if let ServerMsg::View { peers, .. } = ServerMsg::decode(text.as_bytes())? {
                let me = self.members.id(0);
                if let Some(p) = peers.iter().find(|p| p.id == me) {
                    self.seen().push((p.stats.seq, at));
                }
            }
        }
        if !view.complete && view.count + 1 == self.n {
            view.complete = true;
            self.completed(at, view);
        }
        Ok(())
    }
}

/// One client for its whole life; failures are recorded on the board.
async fn client(
    i: usize,
    url: String,
    gate: Arc<Semaphore>,
    board: Arc<Board>,
    cmds: Option<mpsc::Receiver<Cmd>>,
) {
    if let Err(e) = client_loop(i, &url, &gate, &board, cmds).await {
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
    i: usize,
    url: &str,
    gate: &Semaphore,
    board: &Board,
    mut cmds: Option<mpsc::Receiver<Cmd>>,
) -> anyhow::Result<()> {
    let permit = gate.acquire().await.context("join gate closed")?;
    let (mut ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true),
    )
    .await
    .with_context(|| format!("connecting to {url}: no answer within {CONNECT_TIMEOUT:?}"))?
    .with_context(|| format!("connecting to {url}"))?;
    let nonce = match ws.next().await {
        Some(Ok(Message::Text(t))) => match ServerMsg::decode(t.as_bytes()) {
            Ok(ServerMsg::Challenge { nonce }) => nonce,
            other => bail!("expected the server's challenge first, got {other:?}"),
        },
        other => bail!("expected the server's challenge first, got {other:?}"),
    };
    let join = Join {
        // Unique, as names in a pool are; as long as the old fixed name.
        name: format!("client-{i:05}"),
        pool: POOL.into(),
        capabilities: Vec::new(),
        slots: 4,
        credential: None,
    };
    let hello = ClientMsg::Hello(join.hello(&board.members.identities[i], &nonce));
    ws.send(Message::text(encode(&hello)))
        .await
        .context("sending hello")?;
    let mut permit = Some(permit);
    let mut view = View::new(board.n);
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
                board.frame(t.as_str(), at, &mut view)?;
                // The welcome came first: let the next client connect.
                drop(permit.take());
            }
            Some(Ok(Message::Close(c))) => bail!("the server closed the socket: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                return Err(e).context(
                    "reading from the server (a reset means it dropped this client: a \
                     frame took over a heartbeat to write)",
                )
            }
            None => bail!("the server closed the socket"),
        }
    }
}

/// Small buffers: N of these live in this process.
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(jobmesh_wire::signal::MAX_SERVER_MESSAGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_numbers_round_trip_through_the_id_text() {
        let members = Members::new(100);
        for i in [0, 1, 63, 64, 99] {
            assert_eq!(members.number(&members.id(i).to_string()), Some(i));
        }
        assert_eq!(members.number("nope"), None);
    }

    #[test]
    fn a_view_frame_is_scanned_like_the_decoder_reads_it() {
        let board = Board::new(3);
        let mut view = View::new(3);
        let info = |i: usize| jobmesh_wire::PeerInfo {
            id: board.members.id(i),
            name: "bench-client".into(),
            capabilities: Vec::new(),
            stats: Stats {
                seq: 7,
                ..Stats::default()
            },
        };
        let page = |reset, left: Vec<PeerId>, peers| {
            encode(&ServerMsg::View {
                reset,
                left,
                peers,
                synced: true,
            })
        };
        let at = Instant::now();
        board
            .frame(&page(true, vec![], vec![info(0), info(2)]), at, &mut view)
            .expect("a view");
        assert_eq!((view.count, view.complete), (2, true));
        assert_eq!(board.seen().as_slice(), &[(7, at)]);
        board
            .frame(
                &page(false, vec![board.members.id(2)], vec![]),
                at,
                &mut view,
            )
            .expect("a view");
        assert_eq!(view.count, 1);
        assert!(board.lost().is_some(), "a departure is a lost client");
    }
}
