//! signal-server scale: many lightweight WebSocket peers in one pool.
//!
//! The real `signal-server` binary runs as a child process (its pool limit
//! raised to N with `--max-peers-per-pool`, default 1,024; everything else
//! default). N clients, plain tokio-tungstenite sockets without WebRTC,
//! say hello in one pool. They run in child processes of this binary
//! ([`clients_main`], at most [`CLIENTS_PER_PROCESS`] each: one file
//! descriptor per client), which report what they saw, stamped with
//! CLOCK_MONOTONIC, on their stdout; in each at most [`IN_FLIGHT`] are
//! between their connect and their welcome at a time. Every client has one task that
//! keeps reading its socket (answering the server's pings) and keeps its view
//! of the pool as a bitset of member numbers: client `i` uses peer id `i + 1`,
//! so a member's number is read straight from the id in a `view` frame,
//! without decoding the JSON (there are N² member descriptions in a run, and
//! the clients share the cores with the servers). Frames that mention the
//! publishing client (below) are decoded in full.
//!
//! `signal-cluster` runs the same clients against three servers clustered
//! over a real `nats-server` (client `i` on server `i % 3`), against one
//! server in the same run, and adds: the stats fan-out to clients of the
//! publisher's own server and of the other servers apart, each server's RSS
//! (the largest reported), and the NATS traffic (`/varz` of nats-server's
//! monitoring port: bytes in + out per second while the pool joins, and
//! while it is calm). A third layout gives the clients filtered views
//! ([`Layout`]): what a pool of 30,000 needs.
//!
//! Figures per N, one sample per repeat (a fresh server each):
//! * join time: from the first connect to the last welcome received;
//! * views complete: until every client's view lists all N-1 others (with
//!   filtered views, all it asked for);
//! * server RSS (VmRSS) then, and peak RSS (VmHWM);
//! * stats fan-out p50 / p99: one client sends a changed `stats`; the delay
//!   until each other client has it in a `view` frame, as the p50 / p99 over
//!   the receivers, averaged over a few changes 600 ms apart (so each meets
//!   clients whose view interval has passed: a change in a calm pool);
//! * view data per client: bytes of `view` frames a client received until
//!   its view was complete (N-1 members of ~150 B is the least possible);
//! * clients dropped: by the server as not reading, in attempts of the
//!   repeat that were then run again (see below); normally 0;
//! * repeats completed: a repeat whose every attempt lost clients is
//!   reported on stderr and left out (a size the machine does not hold).
//!
//! History: with one queued message per change (protocol 1), joining was
//! O(N²) in server memory too (1.9 GiB at 3,000 peers, 10,000 out of reach)
//! and bursts of joins overflowed the 256-message client queues. The
//! versioned view (protocol 2) keeps no per-client backlog.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use jobmesh_peer::lock;
use jobmesh_peer::Identity;
use jobmesh_wire::signal::{encode, ClientMsg, Join, ServerMsg};
use jobmesh_wire::{Capability, PeerId, Stats};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::env::{self, Proc};
use crate::report::{quantile, Figure};
use crate::Ctx;

const SCENARIO: &str = "signal-scale";
const CLUSTER_SCENARIO: &str = "signal-cluster";
const POOL: &str = "bench";
/// Clients between their connect and their welcome at any time, so the
/// server's accept backlog never overflows.
const IN_FLIGHT: usize = 64;
/// Deadline for one WebSocket connect (and its HTTP upgrade).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for all N clients to be welcomed, and again for all join
/// announcements to be delivered.
const PHASE_TIMEOUT: Duration = Duration::from_secs(900);
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
const QUICK: [Layout; 2] = [Layout::alone(200), Layout::alone(1_000)];
/// The full run: 1,000 and 10,000 peers.
const FULL: [Layout; 2] = [Layout::alone(1_000), Layout::alone(10_000)];
/// `signal-cluster --quick`: 300 peers on one server, 900 on three.
const CLUSTER_QUICK: [Layout; 3] = [
    Layout::alone(300),
    Layout::clustered(900, 3),
    Layout::clustered(900, 3).filtered(),
];
/// `signal-cluster`: 10,000 peers on one server, 30,000 on three with
/// full views and with filtered ones.
const CLUSTER_FULL: [Layout; 3] = [
    Layout::alone(10_000),
    Layout::clustered(30_000, 3),
    Layout::clustered(30_000, 3).filtered(),
];
/// Quiet time before each measured stats change, at least: longer than the
/// server's view interval (50 ms, or N / 20,000 s at N members, to which
/// [`round_gap`] adds).
const ROUND_GAP: Duration = Duration::from_millis(600);
/// Stats changes measured per repeat: quick, full.
const ROUNDS: (u64, u64) = (2, 5);

/// Where the clients go: `servers` signal-servers, clustered over NATS
/// when more than one; client `i` connects to server `i % servers`.
/// With full views every client learns of every other, and offers
/// nothing. With `filtered` views, the pool is what a large pool is:
/// every client a worker of one of [`KINDS`] capabilities, one in
/// [`SUBMITTER_EVERY`] also a submitter that views the workers of its own
/// kind, the others viewing nobody (`peer --view none`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Layout {
    n: usize,
    servers: usize,
    filtered: bool,
}

/// Capabilities of a filtered layout's workers.
const KINDS: usize = 10;
/// One client in this many of a filtered layout submits.
const SUBMITTER_EVERY: usize = 100;

impl Layout {
    const fn alone(n: usize) -> Self {
        Self {
            n,
            servers: 1,
            filtered: false,
        }
    }

    const fn clustered(n: usize, servers: usize) -> Self {
        Self {
            n,
            servers,
            filtered: false,
        }
    }

    const fn filtered(self) -> Self {
        Self {
            filtered: true,
            ..self
        }
    }

    fn capability(i: usize) -> Capability {
        // Invariant: a short name of letters and digits.
        Capability::new(&format!("kind{}", i % KINDS)).expect("a valid capability")
    }

    /// Whether client `i` of a filtered layout submits (and views).
    fn submits(&self, i: usize) -> bool {
        self.filtered && i.is_multiple_of(SUBMITTER_EVERY)
    }

    /// What client `i` offers and which members it views (None: all).
    fn join_of(&self, i: usize) -> (Vec<Capability>, Option<Vec<Capability>>) {
        if !self.filtered {
            return (Vec::new(), None);
        }
        let view = match self.submits(i) {
            true => vec![Self::capability(i)],
            false => Vec::new(),
        };
        (vec![Self::capability(i)], Some(view))
    }

    /// Whether client `i`'s view holds client `j`.
    fn sees(&self, i: usize, j: usize) -> bool {
        i != j && (!self.filtered || (self.submits(i) && i % KINDS == j % KINDS))
    }

    /// How many members client `i`'s complete view holds.
    fn view_size(&self, i: usize) -> usize {
        match (self.filtered, self.submits(i)) {
            (false, _) => self.n - 1,
            (true, true) => (0..self.n).filter(|&j| self.sees(i, j)).count(),
            (true, false) => 0,
        }
    }

    /// How many clients see client 0's stats changes.
    fn watchers_of_first(&self) -> usize {
        (1..self.n).filter(|&i| self.sees(i, 0)).count()
    }

    fn server_of(&self, client: usize) -> usize {
        client % self.servers
    }

    fn label(&self) -> String {
        let label = match self.servers {
            1 => format!("{} peers", self.n),
            s => format!("{} peers over {s} servers", self.n),
        };
        match self.filtered {
            true => label + ", filtered views",
            false => label,
        }
    }
}

pub(crate) async fn run(ctx: Ctx) -> anyhow::Result<Vec<Figure>> {
    let layouts = if ctx.quick { QUICK } else { FULL };
    measure_layouts(&ctx, SCENARIO, &layouts).await
}

pub(crate) async fn run_cluster(ctx: Ctx) -> anyhow::Result<Vec<Figure>> {
    let layouts = if ctx.quick {
        CLUSTER_QUICK
    } else {
        CLUSTER_FULL
    };
    measure_layouts(&ctx, CLUSTER_SCENARIO, &layouts).await
}

async fn measure_layouts(
    ctx: &Ctx,
    scenario: &'static str,
    layouts: &[Layout],
) -> anyhow::Result<Vec<Figure>> {
    let rounds = if ctx.quick { ROUNDS.0 } else { ROUNDS.1 };
    // Sockets per process: a client process's, a server's.
    let most = layouts
        .iter()
        .map(|l| l.n.min(CLIENTS_PER_PROCESS).max(l.n.div_ceil(l.servers)))
        .max()
        .unwrap_or(0);
    raise_open_files(most as u64 + SPARE_FDS)?;
    let mut figures = Vec::new();
    for &layout in layouts {
        let repeats = if layout.n > MANY_REPEATS_UP_TO {
            ctx.repeats.min(2)
        } else {
            ctx.repeats
        };
        let label = layout.label();
        let mut all: Vec<Sample> = Vec::new();
        for r in 0..repeats {
            match measure_retrying(ctx, layout, rounds, r + 1).await {
                Ok(s) => all.push(s),
                // What does not hold at this size is a finding, not the
                // end of the run: reported, and the table says how many
                // repeats completed.
                Err(e) if e.downcast_ref::<ClientsLost>().is_some() => {
                    eprintln!(
                        "   {scenario}: {label}: repeat {} did not complete: {e:#}",
                        r + 1
                    );
                }
                Err(e) => return Err(e),
            }
        }
        figures.push(Figure::new(
            scenario,
            format!("{label}: repeats completed"),
            "repeats",
            vec![all.len() as f64],
        ));
        if all.is_empty() {
            continue;
        }
        let figure = |what: &str, unit: &'static str, f: fn(&Sample) -> f64| {
            Figure::new(
                scenario,
                format!("{label}: {what}"),
                unit,
                all.iter().map(f).collect(),
            )
        };
        figures.extend([
            figure("join time", "s", |s| s.join_s),
            figure("views complete", "s", |s| s.settled_s),
            // Whose CPU the join took, on these two cores.
            figure("server CPU until views complete", "s", |s| s.server_cpu_s),
            figure("client processes' CPU until views complete", "s", |s| {
                s.clients_cpu_s
            }),
        ]);
        if layout.servers == 1 {
            figures.extend([
                figure("server RSS", "MiB", |s| s.rss_mib),
                figure("server peak RSS", "MiB", |s| s.hwm_mib),
                figure("stats fan-out p50", "ms", |s| s.within.0),
                figure("stats fan-out p99", "ms", |s| s.within.1),
            ]);
        } else {
            figures.extend([
                figure("server RSS, largest", "MiB", |s| s.rss_mib),
                figure("server peak RSS, largest", "MiB", |s| s.hwm_mib),
                figure("stats fan-out p50, same server", "ms", |s| s.within.0),
                figure("stats fan-out p99, same server", "ms", |s| s.within.1),
                figure("stats fan-out p50, other servers", "ms", |s| s.across.0),
                figure("stats fan-out p99, other servers", "ms", |s| s.across.1),
                figure("NATS traffic while joining", "MiB/s", |s| {
                    s.nats.joining_mib_s
                }),
                figure("NATS traffic when calm", "KiB/s", |s| s.nats.calm_kib_s),
                figure("NATS messages when calm", "msg/s", |s| s.nats.calm_msgs_s),
            ]);
        }
        figures.extend([
            figure("view data per client", "KiB", |s| s.view_kib),
            // Dropped as slow in attempts that were then run again.
            figure("clients dropped", "clients", |s| s.lost_before as f64),
        ]);
    }
    Ok(figures)
}

/// Quiet time before a measured stats change in a pool of `n`: past the
/// server's view interval.
fn round_gap(n: usize) -> Duration {
    let interval = Duration::from_secs_f64(n as f64 / f64::from(jobmesh_signal_server::VIEW_RATE));
    ROUND_GAP.max(interval + Duration::from_millis(200))
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
    layout: Layout,
    rounds: u64,
    repeat: usize,
) -> anyhow::Result<Sample> {
    let n = layout.n;
    let mut lost_before = 0;
    for attempt in 1..=ATTEMPTS {
        let measured = measure(ctx, layout, rounds)
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
    /// Of the largest server.
    rss_mib: f64,
    hwm_mib: f64,
    /// Stats fan-out (p50, p99) in ms to the clients of the publisher's
    /// server, and of the others (NaN with one server).
    within: (f64, f64),
    across: (f64, f64),
    view_kib: f64,
    nats: NatsRates,
    /// CPU seconds from the first connect to complete views: the servers'
    /// (all of them), and the client processes'.
    server_cpu_s: f64,
    clients_cpu_s: f64,
}

/// NATS traffic of a clustered run (NaN with one server).
#[derive(Debug, Clone, Copy)]
struct NatsRates {
    /// Bytes in + out per second, from the first connect to complete views.
    joining_mib_s: f64,
    /// The same and messages per second during the stats changes.
    calm_kib_s: f64,
    calm_msgs_s: f64,
}

impl NatsRates {
    const NONE: Self = Self {
        joining_mib_s: f64::NAN,
        calm_kib_s: f64::NAN,
        calm_msgs_s: f64::NAN,
    };
}

/// Raises this process's open-files limit to `need` if it is lower (the
/// hard limit too when allowed: root), or fails with the fix. The servers
/// and nats-server are started from here and inherit it; each needs one
/// socket per client too.
fn raise_open_files(need: u64) -> anyhow::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft >= need {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_NOFILE, need, hard.max(need)).with_context(|| {
        format!(
            "this scenario needs {need} open files, the limit is {soft} (hard {hard}) and \
             may not be raised here: raise it (ulimit -n {need}, as root for a hard limit)"
        )
    })
}

/// The signal-servers of a layout (and the nats-server joining them),
/// stopped when dropped: the servers first.
struct Servers {
    procs: Vec<Proc>,
    urls: Vec<String>,
    nats: Option<env::Nats>,
}

impl Servers {
    /// `layout.servers` signal-servers on 127.0.0.1:0 with room for all
    /// `n` peers in one pool, all connecting from this one address.
    fn start(ctx: &Ctx, layout: Layout) -> anyhow::Result<Self> {
        let n = layout.n.to_string();
        let room = (layout.n + 64).to_string();
        let nats = (layout.servers > 1).then(env::Nats::start).transpose()?;
        let (mut procs, mut urls) = (Vec::new(), Vec::new());
        for k in 0..layout.servers {
            let mut args = vec![
                "--max-peers-per-pool".to_owned(),
                n.clone(),
                "--max-connections".to_owned(),
                room.clone(),
                "--max-connections-per-ip".to_owned(),
                room.clone(),
            ];
            if let Some(nats) = &nats {
                args.extend([
                    "--cluster".to_owned(),
                    nats.url.clone(),
                    "--server-id".to_owned(),
                    format!("bench-{k}"),
                ]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (proc, url) = env::signal_server(&ctx.bins, &args)?;
            procs.push(proc);
            urls.push(url);
        }
        Ok(Self { procs, urls, nats })
    }

    /// VmRSS and VmHWM in MiB of the largest server.
    fn largest_rss(&self) -> anyhow::Result<(f64, f64)> {
        let (mut rss, mut hwm) = (0.0f64, 0.0f64);
        for p in &self.procs {
            rss = rss.max(p.rss_mib()?);
            hwm = hwm.max(env::status_kib(p.pid(), "VmHWM")? as f64 / 1024.0);
        }
        Ok((rss, hwm))
    }

    /// CPU seconds all servers have used.
    fn cpu_secs(&self) -> anyhow::Result<f64> {
        self.procs.iter().map(|p| env::cpu_secs(p.pid())).sum()
    }

    /// NATS's message and byte counters now (zeroes without NATS).
    async fn nats_traffic(&self) -> anyhow::Result<env::NatsTraffic> {
        match &self.nats {
            Some(n) => n.traffic().await,
            None => Ok(env::NatsTraffic::default()),
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.procs.clear();
        self.nats = None;
    }
}

/// Fresh servers, `n` clients joining, then `rounds` stats changes.
async fn measure(ctx: &Ctx, layout: Layout, rounds: u64) -> anyhow::Result<Sample> {
    let servers = Servers::start(ctx, layout)?;
    let measured = drive(&servers, layout, rounds).await;
    // The servers go first: clients leaving one by one would only make
    // them tell the rest. (The client processes are killed when dropped.)
    drop(servers);
    measured
}

async fn drive(servers: &Servers, layout: Layout, rounds: u64) -> anyhow::Result<Sample> {
    let n = layout.n;
    let nats_before = servers.nats_traffic().await?;
    let server_cpu = servers.cpu_secs()?;
    let t0 = mono_ns()?;
    let mut fleet = Fleet::spawn(layout, &servers.urls)?;
    fleet
        .wait(t0, &format!("{n} peers joined"), |f| {
            f.children.iter().all(|c| c.welcomed.is_some())
        })
        .await?;
    let joined_at = fleet.children.iter().filter_map(|c| c.welcomed).max();
    fleet
        .wait(t0, &format!("{n} complete views"), |f| {
            f.children.iter().all(|c| c.complete.is_some())
        })
        .await?;
    let settled_at = fleet.children.iter().filter_map(|c| c.complete).max();
    let view_bytes: u64 = fleet.children.iter().map(|c| c.view_bytes).sum();
    let nats_joined = servers.nats_traffic().await?;
    let server_cpu_s = servers.cpu_secs()? - server_cpu;
    let clients_cpu_s = fleet.cpu_secs()?;
    let joining_s = secs(t0, mono_ns()?);
    let (rss_mib, hwm_mib) = servers.largest_rss()?;

    let calm_from = mono_ns()?;
    let (mut within, mut across) = (Vec::new(), Vec::new());
    for seq in 1..=rounds {
        // Each change after a quiet spell, as a change in a calm pool is:
        // within the server's view interval of the last update a change
        // waits for the interval's end (by design, to batch bursts).
        tokio::time::sleep(round_gap(n)).await;
        let (w, a) = fleet
            .fan_out(seq)
            .await
            .with_context(|| format!("stats change {seq}"))?;
        within.push(w);
        across.push(a);
    }
    let nats_calm = servers.nats_traffic().await?;
    let calm_s = secs(calm_from, mono_ns()?);
    if let Some(lost) = fleet.lost() {
        return Err(lost).context("after the stats changes");
    }
    let mean = |v: &[(f64, f64)]| {
        let k = v.len().max(1) as f64;
        (
            v.iter().map(|p| p.0).sum::<f64>() / k,
            v.iter().map(|p| p.1).sum::<f64>() / k,
        )
    };
    let nats = if servers.nats.is_some() {
        let joining = nats_joined.since(&nats_before);
        let calm = nats_calm.since(&nats_joined);
        NatsRates {
            joining_mib_s: joining.bytes as f64 / joining_s / (1024.0 * 1024.0),
            calm_kib_s: calm.bytes as f64 / calm_s / 1024.0,
            calm_msgs_s: calm.msgs as f64 / calm_s,
        }
    } else {
        NatsRates::NONE
    };
    Ok(Sample {
        lost_before: 0,
        join_s: secs(t0, joined_at.context("welcome time")?),
        settled_s: secs(t0, settled_at.context("complete-views time")?),
        rss_mib,
        hwm_mib,
        within: mean(&within),
        across: mean(&across),
        view_kib: view_bytes as f64 / n as f64 / 1024.0,
        nats,
        server_cpu_s,
        clients_cpu_s,
    })
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of a run.
fn mono_ns() -> anyhow::Result<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .context("clock_gettime(CLOCK_MONOTONIC)")?;
    Ok(u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u64::try_from(t.tv_nsec()).unwrap_or(0))
}

/// Seconds from `from` to `to` (nanoseconds of [`mono_ns`]).
fn secs(from: u64, to: u64) -> f64 {
    to.saturating_sub(from) as f64 / 1e9
}

/// Clients one process runs at most: each needs a file descriptor, and
/// the hard limit on these machines is 20,000 (without CAP_SYS_RESOURCE).
const CLIENTS_PER_PROCESS: usize = 10_000;

/// The environment variable that makes `jobmesh-bench` a client process
/// of this scenario ([`clients_main`]); its value is a [`ClientsSpec`].
pub(crate) const CLIENTS_ENV: &str = "JOBMESH_BENCH_SIGNAL_CLIENTS";

/// What one client process runs: clients `from..to` of `layout`, client
/// `i` on `urls[layout.server_of(i)]`.
#[derive(Debug, Serialize, Deserialize)]
struct ClientsSpec {
    layout: Layout,
    from: usize,
    to: usize,
    urls: Vec<String>,
}

/// What a client process reports, one line each on its stdout (times in
/// [`mono_ns`] nanoseconds).
#[derive(Debug, PartialEq)]
enum Report {
    /// Progress: clients welcomed, complete views.
    Progress(usize, usize),
    /// All its clients were welcomed, the last at.
    Welcomed(u64),
    /// All its clients' views are complete, the last at; bytes of view
    /// frames they received until then.
    Complete(u64, u64),
    /// Client 0 sent its stats change `seq` at.
    Sent(u64, u64),
    /// Client `client` saw change `seq` at.
    Seen(u64, usize, u64),
    /// Clients failed or dropped, and the first error.
    Lost(usize, String),
}

impl Report {
    fn line(&self) -> String {
        match self {
            Self::Progress(w, c) => format!("progress {w} {c}"),
            Self::Welcomed(at) => format!("welcomed {at}"),
            Self::Complete(at, bytes) => format!("complete {at} {bytes}"),
            Self::Sent(seq, at) => format!("sent {seq} {at}"),
            Self::Seen(seq, client, at) => format!("seen {seq} {client} {at}"),
            Self::Lost(clients, first) => format!("lost {clients} {}", first.replace('\n', " ")),
        }
    }

    fn parse(line: &str) -> Option<Self> {
        let mut w = line.split(' ');
        let kind = w.next()?;
        let mut num = || w.next()?.parse::<u64>().ok();
        Some(match kind {
            "progress" => Self::Progress(num()? as usize, num()? as usize),
            "welcomed" => Self::Welcomed(num()?),
            "complete" => Self::Complete(num()?, num()?),
            "sent" => Self::Sent(num()?, num()?),
            "seen" => Self::Seen(num()?, num()? as usize, num()?),
            "lost" => {
                let clients = num()? as usize;
                Self::Lost(clients, w.collect::<Vec<_>>().join(" "))
            }
            _ => return None,
        })
    }
}

/// The client processes of one repeat, as the measuring process sees them.
struct Fleet {
    layout: Layout,
    children: Vec<ChildState>,
    reports: mpsc::Receiver<(usize, anyhow::Result<Report>)>,
    /// Changes seen: (seq, client, at).
    seen: Vec<(u64, usize, u64)>,
    sent: HashMap<u64, u64>,
    lost: Option<ClientsLost>,
}

/// One client process and what it reported last.
struct ChildState {
    process: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    progress: (usize, usize),
    welcomed: Option<u64>,
    complete: Option<u64>,
    view_bytes: u64,
}

impl Fleet {
    /// CPU seconds the client processes have used (since they started).
    fn cpu_secs(&self) -> anyhow::Result<f64> {
        self.children
            .iter()
            .map(|c| env::cpu_secs(c.process.id().context("a client process ended")?))
            .sum()
    }

    /// Starts the client processes; their clients start joining at once.
    fn spawn(layout: Layout, urls: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("this binary's path")?;
        let (tx, reports) = mpsc::channel(1024);
        let mut children = Vec::new();
        for (k, from) in (0..layout.n).step_by(CLIENTS_PER_PROCESS).enumerate() {
            let spec = ClientsSpec {
                layout,
                from,
                to: (from + CLIENTS_PER_PROCESS).min(layout.n),
                urls: urls.to_vec(),
            };
            let mut process = tokio::process::Command::new(&exe)
                .env(CLIENTS_ENV, serde_json::to_string(&spec)?)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("starting a client process")?;
            let stdin = process.stdin.take().context("piped stdin")?;
            let stdout = process.stdout.take().context("piped stdout")?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                loop {
                    let report = match lines.next_line().await {
                        Ok(Some(l)) => Report::parse(&l)
                            .with_context(|| format!("a client process said {l:?}")),
                        Ok(None) => Err(anyhow::anyhow!("a client process ended")),
                        Err(e) => Err(e).context("reading a client process"),
                    };
                    let end = report.is_err();
                    if tx.send((k, report)).await.is_err() || end {
                        return;
                    }
                }
            });
            children.push(ChildState {
                process,
                stdin,
                progress: (0, 0),
                welcomed: None,
                complete: None,
                view_bytes: 0,
            });
        }
        Ok(Self {
            layout,
            children,
            reports,
            seen: Vec::new(),
            sent: HashMap::new(),
            lost: None,
        })
    }

    fn lost(&mut self) -> Option<ClientsLost> {
        self.lost.take()
    }

    /// Takes the next report; `Err` when a process ended or failed.
    async fn next(&mut self) -> anyhow::Result<()> {
        let (k, report) = self
            .reports
            .recv()
            .await
            .context("every client process ended")?;
        let child = &mut self.children[k];
        match report? {
            Report::Progress(w, c) => child.progress = (w, c),
            Report::Welcomed(at) => child.welcomed = Some(at),
            Report::Complete(at, bytes) => {
                child.complete = Some(at);
                child.view_bytes = bytes;
            }
            Report::Sent(seq, at) => {
                self.sent.insert(seq, at);
            }
            Report::Seen(seq, client, at) => self.seen.push((seq, client, at)),
            Report::Lost(clients, first) => {
                let lost = self.lost.get_or_insert(ClientsLost { clients: 0, first });
                lost.clients += clients;
            }
        }
        Ok(())
    }

    fn progress(&self) -> String {
        let (w, c) = self
            .children
            .iter()
            .fold((0, 0), |(w, c), s| (w + s.progress.0, c + s.progress.1));
        format!("{w} of {} welcomed, {c} complete views", self.layout.n)
    }

    /// Takes reports until `done`, failing when clients were lost, a
    /// process ended, or after [`PHASE_TIMEOUT`].
    async fn wait(
        &mut self,
        t0: u64,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut next_progress = start + PROGRESS;
        while !done(self) {
            if let Some(lost) = self.lost() {
                return Err(lost).with_context(|| format!("waiting for {what}"));
            }
            let left = PHASE_TIMEOUT.saturating_sub(start.elapsed());
            let next = tokio::time::timeout(left.min(PROGRESS), self.next()).await;
            match next {
                Ok(r) => r.with_context(|| format!("waiting for {what}"))?,
                Err(_) if start.elapsed() >= PHASE_TIMEOUT => {
                    bail!("{what}: not within {PHASE_TIMEOUT:?} ({})", self.progress())
                }
                Err(_) => {}
            }
            if Instant::now() >= next_progress {
                eprintln!(
                    "   signal-scale: waiting for {what}, {:.0} s: {}",
                    secs(t0, mono_ns()?),
                    self.progress()
                );
                next_progress += PROGRESS;
            }
        }
        Ok(())
    }

    /// Client 0 publishes stats with `seq`; returns (p50, p99) in ms of
    /// the delay until each other client saw them: of the clients on
    /// client 0's server, and of the others (NaN with one server).
    async fn fan_out(&mut self, seq: u64) -> anyhow::Result<((f64, f64), (f64, f64))> {
        self.seen.clear();
        let publisher = &mut self.children[0].stdin;
        publisher
            .write_all(format!("stats {seq}\n").as_bytes())
            .await
            .context("the publishing client process ended")?;
        let want = self.layout.watchers_of_first();
        let seen_all = move |f: &Self| f.sent.contains_key(&seq) && f.seen.len() >= want;
        let waited = tokio::time::timeout(FANOUT_TIMEOUT, async {
            while !seen_all(self) && self.lost.is_none() {
                self.next().await?;
            }
            anyhow::Ok(())
        })
        .await;
        if let Some(lost) = self.lost() {
            return Err(lost.into());
        }
        let sent_at = self.sent.get(&seq).copied();
        let (Ok(Ok(())), Some(sent_at)) = (waited, sent_at) else {
            bail!(
                "{} of {want} clients saw the stats change within {FANOUT_TIMEOUT:?}",
                self.seen.len()
            );
        };
        let (mut within, mut across) = (Vec::new(), Vec::new());
        let home = self.layout.server_of(0);
        for &(s, client, at) in &self.seen {
            if s != seq {
                continue;
            }
            let ms = secs(sent_at, at) * 1e3;
            if self.layout.server_of(client) == home {
                within.push(ms);
            } else {
                across.push(ms);
            }
        }
        let quantiles = |v: &mut Vec<f64>| (quantile(v, 0.5), quantile(v, 0.99));
        Ok((quantiles(&mut within), quantiles(&mut across)))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.process.start_kill();
        }
    }
}

/// A client process: runs the clients of `spec` (a [`ClientsSpec`] in
/// JSON) and reports on stdout until its stdin closes.
pub(crate) async fn clients_main(spec: &str) -> anyhow::Result<()> {
    let spec: ClientsSpec = serde_json::from_str(spec).context(CLIENTS_ENV)?;
    let layout = spec.layout;
    anyhow::ensure!(
        spec.urls.len() == layout.servers && spec.to <= layout.n,
        "{CLIENTS_ENV}: the clients and servers do not match the layout"
    );
    let board = Arc::new(Board::new(layout, spec.to - spec.from));
    let base = (Instant::now(), mono_ns()?);
    let ns = move |at: Instant| {
        base.1 + u64::try_from(at.saturating_duration_since(base.0).as_nanos()).unwrap_or(0)
    };
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let (cmd_tx, cmd_rx) = mpsc::channel(1);
    let mut cmd_rx = Some(cmd_rx);
    let mut clients = JoinSet::new();
    for i in spec.from..spec.to {
        let cmds = if i == 0 { cmd_rx.take() } else { None };
        let url = spec.urls[layout.server_of(i)].clone();
        clients.spawn(client(i, url, gate.clone(), board.clone(), cmds));
    }
    // Commands from the measuring process; its end is this one's.
    let (sent_tx, mut sent_rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Some(seq) = line.strip_prefix("stats ").and_then(|s| s.parse().ok()) else {
                continue;
            };
            let (sent, at) = oneshot::channel();
            if cmd_tx
                .send(Cmd {
                    msg: stats_change(seq),
                    sent,
                })
                .await
                .is_err()
            {
                break;
            }
            if let Ok(at) = at.await {
                let _ = sent_tx.send((seq, at)).await;
            }
        }
        std::process::exit(0);
    });
    let mut out = tokio::io::stdout();
    let say = |r: Report| r.line() + "\n";
    let (mut welcomed, mut complete, mut lost) = (false, false, false);
    let mut next_progress = Instant::now();
    loop {
        let mut lines = String::new();
        tokio::select! {
            Some((seq, at)) = sent_rx.recv() => lines += &say(Report::Sent(seq, ns(at))),
            () = tokio::time::sleep(POLL) => {}
        }
        if !welcomed {
            if let Some(at) = board.stamp(&board.all_welcomed_at) {
                lines += &say(Report::Welcomed(ns(at)));
                welcomed = true;
            }
        }
        if !complete {
            if let Some(at) = board.stamp(&board.settled_at) {
                let bytes = board.view_bytes.load(Ordering::Relaxed);
                lines += &say(Report::Complete(ns(at), bytes));
                complete = true;
            }
        }
        for (seq, at, client) in board.seen().drain(..) {
            lines += &say(Report::Seen(seq, client, ns(at)));
        }
        if !lost {
            if let Some(l) = board.lost() {
                lines += &say(Report::Lost(l.clients, l.first));
                lost = true;
            }
        }
        if Instant::now() >= next_progress {
            let progress = Report::Progress(
                board.welcomed.load(Ordering::Relaxed),
                board.complete.load(Ordering::Relaxed),
            );
            lines += &say(progress);
            next_progress += Duration::from_secs(1);
        }
        if !lines.is_empty() {
            out.write_all(lines.as_bytes()).await?;
            out.flush().await?;
        }
    }
}

/// Stats change `seq` of the publishing client.
fn stats_change(seq: u64) -> ClientMsg {
    ClientMsg::Stats {
        stats: Stats {
            slots: 4,
            running: u32::try_from(seq % 4).unwrap_or(0),
            queued: u32::try_from(seq).unwrap_or(u32::MAX),
            completed: seq,
            seq,
            ..Stats::default()
        },
    }
}

/// A frame for the publishing client to send; it reports when it did.
struct Cmd {
    msg: ClientMsg,
    sent: oneshot::Sender<Instant>,
}

/// What the client tasks record, shared with the measuring task.
struct Board {
    layout: Layout,
    /// Clients in this process.
    local: usize,
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
    /// (seq, arrival, client) of every stats change of the publisher seen.
    seen: Mutex<Vec<(u64, Instant, usize)>>,
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
    /// The client's number.
    me: usize,
    /// Members its complete view holds.
    size: usize,
    known: Vec<u64>,
    count: usize,
    complete: bool,
    bytes: u64,
}

impl View {
    fn new(layout: &Layout, me: usize) -> Self {
        Self {
            me,
            size: layout.view_size(me),
            known: vec![0; layout.n.div_ceil(64)],
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
    fn new(layout: Layout, local: usize) -> Self {
        Self {
            layout,
            local,
            members: Members::new(layout.n),
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

    fn seen(&self) -> MutexGuard<'_, Vec<(u64, Instant, usize)>> {
        lock(&self.seen)
    }

    fn first_error(&self) -> Option<String> {
        lock(&self.first_error).clone()
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
        if self.welcomed.fetch_add(1, Ordering::Relaxed) + 1 == self.local {
            *lock(&self.all_welcomed_at) = Some(at);
        }
    }

    fn completed(&self, at: Instant, view: &View) {
        self.view_bytes.fetch_add(view.bytes, Ordering::Relaxed);
        if self.complete.fetch_add(1, Ordering::Relaxed) + 1 == self.local {
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
                    self.seen().push((p.stats.seq, at, view.me));
                }
            }
        }
        if !view.complete && view.count == view.size {
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
    let (capabilities, view) = board.layout.join_of(i);
    let join = Join {
        // Unique, as names in a pool are; as long as the old fixed name.
        name: format!("client-{i:05}"),
        pool: POOL.into(),
        capabilities,
        slots: 4,
        credential: None,
        view,
    };
    let hello = ClientMsg::Hello(join.hello(&board.members.identities[i], &nonce));
    ws.send(Message::text(encode(&hello)))
        .await
        .context("sending hello")?;
    let mut permit = Some(permit);
    let mut view = View::new(&board.layout, i);
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
        let board = Board::new(Layout::alone(3), 3);
        let mut view = View::new(&Layout::alone(3), 1);
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
        assert_eq!(board.seen().as_slice(), &[(7, at, 1)]);
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
