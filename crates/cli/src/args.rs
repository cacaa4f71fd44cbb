//! The command line: every flag and subcommand of `peer`, parsed by clap.
//! `main` validates them into a `DaemonConfig` or a control request.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "peer",
    version,
    about = "A jobmesh peer: runs jobs for its pool and submits its own."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Cmd>,
    #[command(flatten)]
    pub(crate) common: Common,
    #[command(flatten)]
    pub(crate) daemon: DaemonArgs,
}

/// Flags of the daemon and its clients alike: they may come before or after
/// a subcommand (`peer --pool lab jobs` = `peer jobs --pool lab`).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Pool and daemon")]
pub(crate) struct Common {
    /// WebSocket URL of the signal-server, or several of one cluster separated by commas (tried in turn when one cannot be reached or goes away). The daemon's default is ws://127.0.0.1:7070/ws; a client subcommand uses it only when no local daemon answers, joining the pool for that one command.
    #[arg(long, global = true, env = "JOBMESH_SIGNAL")]
    pub(crate) signal: Option<String>,
    /// Pool to join, or of the daemon to use [default: the invitation's pool, or "default"; for a client, the one daemon running]. `peer watch --pool [NAME]` watches the whole pool.
    #[arg(long, global = true, env = "JOBMESH_POOL", num_args = 0..=1, default_missing_value = "")]
    pub(crate) pool: Option<String>,
    /// Name shown in the pool, or of the daemon to use [default: host name; for a client, the one daemon running].
    #[arg(long, global = true, env = "JOBMESH_NAME")]
    pub(crate) name: Option<String>,
    /// Control socket path [default: per pool and name under $XDG_RUNTIME_DIR or the temp dir; a client finds the running daemon's].
    #[arg(long, global = true, env = "JOBMESH_CONTROL")]
    pub(crate) control: Option<PathBuf>,
    /// The daemon's data dir: its identity key, credential and journal [default: $XDG_DATA_HOME/jobmesh/POOL/NAME].
    #[arg(long, global = true, env = "JOBMESH_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) membership: Membership,
    /// Settings file: any flag as a TOML key (`slots = 4`), and exec handlers (`[[handler]]`, see docs/handlers.md); flags and JOBMESH_* variables override it [default: $XDG_CONFIG_HOME/jobmesh/peer.toml, if it exists].
    #[arg(long, global = true, env = "JOBMESH_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Colour in log lines: `auto` (on a terminal, unless NO_COLOR is set),
    /// `always` or `never`.
    #[arg(long, global = true, value_enum, env = "JOBMESH_COLOR", default_value_t = ColorChoice::Auto)]
    pub(crate) color: ColorChoice,
    /// Log lines as `text`, or `json` (one object a line, with the job and
    /// peer ids of their spans: for journald or a log collector).
    #[arg(long, global = true, value_enum, env = "JOBMESH_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether log lines on stderr get colour escapes.
    pub(crate) fn on_stderr(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stderr().is_terminal()
            }
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Submit a job and print its result (Ctrl-C cancels it).
    Submit(Box<SubmitArgs>),
    /// List the peers of the pool.
    Peers(PeersArgs),
    /// The pool at a glance: workers, slots and finished jobs per capability
    /// with their rates over the last minute, the slowest workers, and this
    /// daemon's own jobs and journal.
    Status(PeersArgs),
    /// What stands between this peer and the others: is the signal-server
    /// reachable and does it admit this peer, what public address STUN
    /// servers see and whether it changes per destination (the NAT), can
    /// the TURN server relay with this peer's credential, and (--peer) can
    /// a link to a member open and how. Exits 0 only when all of that works.
    Doctor(DoctorArgs),
    /// Change how many jobs the local daemon runs at once, while it runs:
    /// the pool sees it with its next stats; scaling down cancels nothing.
    Scale(ScaleArgs),
    /// What the local daemon runs: list, add or remove capabilities while
    /// it runs (removing one lets its running jobs finish).
    #[command(subcommand_required = false)]
    Capabilities(CapabilitiesArgs),
    /// List the local daemon's live and recent jobs.
    Jobs(JobsArgs),
    /// Cancel a job of the local daemon.
    Cancel(CancelArgs),
    /// Print the outcome of a job of the local daemon, from its journal
    /// (exit code 4 while it has not ended).
    Result(ResultArgs),
    /// Stream the local daemon's job events as they happen.
    Watch(WatchArgs),
    /// Print this peer's id and public key, from the identity key in its
    /// data dir (created there, owner-only, if it has none yet).
    Id(IdArgs),
    /// Own a closed pool: create its key, invite members, revoke them.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Run a local development mesh in this process: a signal-server, worker
    /// peers and this machine's daemon (which `peer submit` finds), an open
    /// pool on loopback, until Ctrl-C.
    Mesh(MeshArgs),
    /// Print a shell's completion script, e.g. `peer completions bash > /etc/bash_completion.d/peer`.
    Completions(CompletionsArgs),
    /// Write man pages: `peer.1` and one per subcommand (`peer-submit.1`, ...).
    Man(ManArgs),
    /// Print the daemon's effective settings as TOML, each with where it
    /// came from (flag, environment, settings file, default): `peer --slots 8
    /// config` shows what `peer --slots 8` would run with.
    Config,
}

#[derive(Args, Debug)]
pub(crate) struct MeshArgs {
    /// Where the signal-server listens (a free port if this one is taken).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub(crate) listen: String,
    /// Worker peers.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) workers: u32,
    /// What each worker runs, comma separated (`ocr` is left out, with a
    /// note, where tesseract is missing).
    #[arg(
        long = "with",
        value_delimiter = ',',
        default_value = "echo,sleep,thumbnail,ocr"
    )]
    pub(crate) with: Vec<String>,
    /// Jobs each worker runs at once.
    #[arg(long = "worker-slots", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) worker_slots: u32,
    /// Submit no demo job at start.
    #[arg(long)]
    pub(crate) no_demo: bool,
    /// Where this machine's daemon serves the pool's dashboard (a free port if this one is taken; loopback only).
    #[arg(long, default_value = "127.0.0.1:9470")]
    pub(crate) dashboard: String,
    /// Serve no dashboard.
    #[arg(long)]
    pub(crate) no_dashboard: bool,
}

#[derive(Args, Debug)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub(crate) struct ManArgs {
    /// Directory to write the pages into (created if missing).
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
}

/// How this peer proves it belongs to its pool.
#[derive(Args, Debug, Clone)]
pub(crate) struct Membership {
    /// An invitation from the pool's owner (`peer pool invite`), in a file, or `-` for stdin; the token may also come in $JOBMESH_TOKEN. Redeemed once: the daemon keeps its credential in its data dir.
    #[arg(long, global = true, value_name = "FILE|-")]
    pub(crate) token: Option<PathBuf>,
    /// Join an open pool, without a credential: anyone who reaches the signal-server can join, list and submit. For development only.
    #[arg(long, global = true, env = "JOBMESH_OPEN")]
    pub(crate) open: bool,
    /// For a wss:// signal-server: trust the CA (or self-signed) certificate in this PEM file instead of the system's roots.
    #[arg(long, global = true, env = "JOBMESH_CA")]
    pub(crate) ca: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PoolCmd {
    /// Create a pool's owner key; prints the pool key the signal-server needs.
    Init(PoolInitArgs),
    /// Mint an invitation: a signed, expiring, role-scoped token for one or more new members.
    Invite(PoolInviteArgs),
    /// Write the pool's revocation list: invitations or members whose credentials no longer count.
    Revoke(PoolRevokeArgs),
}

/// Where the owner keys live.
#[derive(Args, Debug)]
pub(crate) struct PoolDir {
    /// Directory of pool owner keys [default: $XDG_CONFIG_HOME/jobmesh/pools].
    #[arg(long, env = "JOBMESH_POOL_DIR")]
    pub(crate) pool_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct PoolInitArgs {
    /// The pool's name.
    #[arg(value_name = "POOL")]
    pub(crate) pool_name: String,
    #[command(flatten)]
    pub(crate) dir: PoolDir,
    /// Print JSON: {"pool", "pool_key", "key_file"}.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct PoolInviteArgs {
    /// The pool's name.
    #[arg(value_name = "POOL")]
    pub(crate) pool_name: String,
    /// Roles granted, comma separated: worker, submitter, observer.
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) role: Vec<String>,
    /// Only these capabilities (a worker may offer, a submitter may ask for), comma separated [default: any].
    #[arg(long, value_delimiter = ',')]
    pub(crate) capabilities: Vec<String>,
    /// How long the invitation and its credentials last, e.g. 30d, 12h.
    #[arg(long, default_value = "30d")]
    pub(crate) expires: humantime::Duration,
    /// Write the token to this file (owner-only) instead of stdout.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) dir: PoolDir,
}

#[derive(Args, Debug)]
pub(crate) struct PoolRevokeArgs {
    /// The pool's name.
    #[arg(value_name = "POOL")]
    pub(crate) pool_name: String,
    /// A member's public key (`peer id` prints it); repeat for more.
    #[arg(long = "member", value_name = "KEY")]
    pub(crate) members: Vec<String>,
    /// An invitation's key (`peer pool invite` prints it): every member that redeemed it; repeat for more.
    #[arg(long = "invite", value_name = "KEY")]
    pub(crate) invites: Vec<String>,
    #[command(flatten)]
    pub(crate) dir: PoolDir,
}

#[derive(Args, Debug)]
pub(crate) struct JobsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct CancelArgs {
    /// The job's id, or any unique prefix of it (`peer jobs` shows 8 characters).
    pub(crate) job_id: String,
}

#[derive(Args, Debug)]
pub(crate) struct CapabilitiesArgs {
    #[command(subcommand)]
    pub(crate) change: Option<CapabilityChange>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum CapabilityChange {
    /// Run these too: built-ins (echo, sleep, thumbnail, ocr) or exec
    /// handlers of the daemon's settings file (SIGHUP reads it again).
    Add {
        /// Capability names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Take no new jobs of these; running ones finish.
    Remove {
        /// Capability names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub(crate) struct ScaleArgs {
    /// Jobs run at once from now on.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(jobmesh_peer::MAX_SLOTS)))]
    pub(crate) slots: u32,
}

#[derive(Args, Debug)]
pub(crate) struct WatchArgs {
    /// One JSON object a line instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// The job events of every worker of the pool (this daemon observes the
    /// pool while you watch), not only this daemon's own jobs; the same as
    /// `peer watch --pool [NAME]`.
    #[arg(long)]
    pub(crate) all: bool,
}

#[derive(Args, Debug)]
pub(crate) struct SubmitArgs {
    /// Capability the job needs, e.g. `echo`.
    pub(crate) capability: String,
    /// The job's input as JSON; `-` reads it from stdin, `@FILE` from a file.
    #[arg(long, default_value = "{}", value_name = "JSON|-|@FILE")]
    pub(crate) input: String,
    /// Many jobs: one input (a JSON value) a line of FILE, or of stdin with
    /// `-`; their results are printed a line each, in input order, with a
    /// progress bar and a summary on stderr.
    #[arg(long, value_name = "FILE|-", conflicts_with_all = ["input", "out", "out_dir", "detach", "files"])]
    pub(crate) each: Option<PathBuf>,
    /// With --each: jobs in flight at once.
    #[arg(long, default_value_t = 32, requires = "each", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) parallel: u32,
    /// An input field, `KEY=VALUE` (a JSON value such as 256 or true, else a
    /// string); repeat for more. Added to the --input object.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub(crate) params: Vec<String>,
    /// A file sent with the job as an input blob; repeat for more.
    #[arg(long = "file", value_name = "PATH")]
    pub(crate) files: Vec<PathBuf>,
    /// Where the result's first blob is written; `-` writes it to stdout
    /// (the result JSON then goes to stderr).
    #[arg(long, value_name = "PATH|-")]
    pub(crate) out: Option<String>,
    /// A directory where every blob of the result is written, by name
    /// (created if missing, before the job runs).
    #[arg(long, value_name = "DIR")]
    pub(crate) out_dir: Option<PathBuf>,
    /// How long one attempt may take (and the job may wait for a free
    /// worker): seconds (`2.5`) or a duration (`90s`, `5m`, `1h 30m`).
    #[arg(long, default_value = "30", value_parser = seconds)]
    pub(crate) timeout: f64,
    /// Dispatch strategy for this job: round-robin, least-loaded, random, affinity, custom.
    #[arg(long)]
    pub(crate) strategy: Option<String>,
    /// Higher runs first when jobs queue.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub(crate) priority: i32,
    /// Retries after a lost worker, a timeout or a retryable handler error.
    #[arg(long, default_value_t = 2)]
    pub(crate) retries: u32,
    /// Affinity key: jobs with the same key go to the same worker while it lives.
    #[arg(long)]
    pub(crate) affinity: Option<String>,
    /// If the worker goes away mid-job, end the job `lost` instead of retrying it.
    #[arg(long)]
    pub(crate) no_retry_on_disconnect: bool,
    /// Print the envelope {job_id, status, worker, result, error, attempts, elapsed_ms}
    /// on stdout, and progress as JSON lines on stderr.
    #[arg(long)]
    pub(crate) json: bool,
    /// Print the job's id once the local daemon has journaled it, and exit;
    /// the job runs on (fetch its outcome with `peer result JOB_ID`).
    #[arg(long, conflicts_with_all = ["out", "out_dir"])]
    pub(crate) detach: bool,
}

/// Seconds, as a number or a duration people write (`90s`, `5m`).
fn seconds(raw: &str) -> Result<f64, String> {
    raw.trim().parse::<f64>().or_else(|_| {
        humantime::parse_duration(raw)
            .map(|d| d.as_secs_f64())
            .map_err(|e| format!("{e}: give seconds (2.5) or a duration (90s, 5m)"))
    })
}

#[derive(Args, Debug)]
pub(crate) struct ResultArgs {
    /// The job's id (printed by `peer submit --detach`), or any unique prefix of it.
    pub(crate) job_id: String,
    /// Where the result's first blob is written.
    #[arg(long, value_name = "PATH")]
    pub(crate) out: Option<PathBuf>,
    /// A directory where every blob of the result is written, by name
    /// (created if missing, before the job runs).
    #[arg(long, value_name = "DIR")]
    pub(crate) out_dir: Option<PathBuf>,
    /// Print the envelope instead of the result value.
    #[arg(long)]
    pub(crate) json: bool,
    /// Wait for the job to end (instead of exit code 4 while it runs).
    #[arg(long)]
    pub(crate) wait: bool,
}

#[derive(Args, Debug)]
pub(crate) struct IdArgs {
    /// Print JSON: {"peer_id", "public_key", "key_file"}.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct PeersArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct DoctorArgs {
    /// Also open (or show) a link to this member, by name or peer id.
    #[arg(long, value_name = "NAME")]
    pub(crate) peer: Option<String>,
    /// Print JSON: {"ok", "nat", "checks": [{"check", "status", "detail", "advice", "ms"}]}.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct DaemonArgs {
    /// Capabilities to run, comma separated (empty: submit only): echo, sleep, or exec handlers from --config.
    #[arg(
        long,
        env = "JOBMESH_CAPABILITIES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub(crate) capabilities: Vec<String>,
    /// Jobs run at once.
    #[arg(long, env = "JOBMESH_SLOTS", default_value_t = 2)]
    pub(crate) slots: u32,
    /// Which workers this peer learns of: `all`, `none` (a worker that
    /// never submits), or capabilities, comma separated (the workers
    /// offering one of them). In a pool of thousands, a peer that submits
    /// only some kinds of jobs, or none, saves itself and the signal-server
    /// hearing of every member.
    #[arg(
        long,
        env = "JOBMESH_VIEW",
        value_name = "all|none|CAPS",
        default_value = "all"
    )]
    pub(crate) view: String,
    /// Run CAPABILITY only for these submitters (public keys or peer ids), `CAPABILITY=KEY,KEY`; repeat for more capabilities.
    #[arg(long = "allow", value_name = "CAPABILITY=KEYS")]
    pub(crate) allow: Vec<String>,
    /// STUN/TURN server URL (repeatable), e.g. stun:stun.example.org:3478.
    #[arg(
        long = "ice-server",
        env = "JOBMESH_ICE_SERVERS",
        value_delimiter = ','
    )]
    pub(crate) ice_servers: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464; port 0 picks a free one, printed at start). Off by default: anyone who reaches the address reads them, without a credential.
    #[arg(long, env = "JOBMESH_METRICS", value_name = "ADDR")]
    pub(crate) metrics: Option<String>,
    /// Serve the pool's live dashboard at http://ADDR/ and the job API at /v1 (with /api/status and /metrics), e.g. 127.0.0.1:9470; port 0 picks a free one, printed at start. Off by default. A non-loopback address needs --http-token-file.
    #[arg(long, env = "JOBMESH_HTTP", value_name = "ADDR")]
    pub(crate) http: Option<String>,
    /// File holding the token --http asks for (16+ characters, e.g. from `openssl rand -hex 32`): sent as `Authorization: Bearer TOKEN`, or opened once in a browser as /?token=TOKEN.
    #[arg(long, env = "JOBMESH_HTTP_TOKEN_FILE", value_name = "FILE")]
    pub(crate) http_token_file: Option<PathBuf>,
    /// Seconds running jobs get to finish after SIGINT/SIGTERM.
    #[arg(long, env = "JOBMESH_GRACE_SECS", default_value_t = 30)]
    pub(crate) grace_secs: u64,
    /// Default dispatch strategy: round-robin, least-loaded, random, affinity.
    #[arg(long, env = "JOBMESH_DISPATCH", default_value = "least-loaded")]
    pub(crate) dispatch: String,
    /// Never run this peer's own jobs locally, even when it is the best candidate.
    #[arg(long, env = "JOBMESH_NO_SELF_DISPATCH")]
    pub(crate) no_self_dispatch: bool,
    /// Most jobs this peer holds (queued or running elsewhere); past it submits fail.
    #[arg(long, env = "JOBMESH_QUEUE_LIMIT", default_value_t = 10_000)]
    pub(crate) queue_limit: usize,
    /// Where blobs in transit and jobs' work dirs live [default: the system temp dir].
    #[arg(long, env = "JOBMESH_SPOOL_DIR")]
    pub(crate) spool_dir: Option<PathBuf>,
    /// Where blobs to and from daemons of this user on this host are handed over as files instead of sent over WebRTC (made private to the user; `off`: always over WebRTC) [default: /dev/shm/jobmesh-UID].
    #[arg(long, env = "JOBMESH_HANDOVER_DIR", value_name = "DIR|off")]
    pub(crate) handover_dir: Option<String>,
    /// Largest blob this peer sends or accepts, in MiB (at most 2048).
    #[arg(long, env = "JOBMESH_MAX_BLOB_MIB", default_value_t = 2048)]
    pub(crate) max_blob_mib: u64,
    /// MiB of blobs held in memory while received; past it they go to spool files.
    #[arg(long, env = "JOBMESH_BLOB_MEMORY_MIB", default_value_t = 64)]
    pub(crate) blob_memory_mib: u64,
    /// GiB of blobs from other peers the spool may hold at once (one peer
    /// half of it, one job a quarter); a job past it is refused before any
    /// byte is sent.
    #[arg(long, env = "JOBMESH_SPOOL_GIB", default_value_t = 16)]
    pub(crate) spool_gib: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_seconds_or_a_duration() {
        assert_eq!(seconds("2.5"), Ok(2.5));
        assert_eq!(seconds("90s"), Ok(90.0));
        assert_eq!(seconds("1h 30m"), Ok(5400.0));
        assert!(seconds("soon").is_err_and(|e| e.contains("90s")));
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
