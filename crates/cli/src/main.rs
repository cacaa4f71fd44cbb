//! `peer`: the jobmesh peer daemon (`peer --capabilities echo,sleep`) and its
//! client subcommands (`peer submit`, `peer peers`).
//!
//! This crate is the command line only: flags (clap) validated into a
//! `DaemonConfig`, the daemon started with its control socket and signal
//! handlers, and what the subcommands print (progress bar, tables, exit
//! codes). The daemon, the control API and the handlers are the library
//! `jobmesh-peer`; `anyhow` and the log subscriber live here, not there.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use jobmesh_peer::control::{self, Envelope, PeersReply, Request, SubmitOptions};
use jobmesh_peer::jobs::{JobRecord, WatchEvent};
use jobmesh_peer::StrategyKind;
use jobmesh_peer::{handlers, DaemonConfig, PeerHandle};
use jobmesh_transport::rtc::RtcConfig;
use jobmesh_wire::{Capability, PeerInfo};
use tokio_util::sync::CancellationToken;

mod args;
mod doctor;
mod each;
mod locate;
mod mesh;
mod out;
mod pool;
mod progress;
mod settings;
mod table;

use args::{
    CancelArgs, Cli, Cmd, Common, DaemonArgs, IdArgs, JobsArgs, PeersArgs, ResultArgs, SubmitArgs,
    WatchArgs,
};
use out::outln;
use progress::Progress;

/// Exit code for a usage error (bad flags or arguments).
const EXIT_USAGE: u8 = 2;

/// The default signal-server of a daemon.
const DEFAULT_SIGNAL: &str = "ws://127.0.0.1:7070/ws";

fn main() -> ExitCode {
    let (cli, matches, settings) = match settings::parse(std::env::args_os().collect()) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    init_tracing(
        cli.command.is_some(),
        cli.common.color.on_stderr(),
        cli.common.log_format == crate::args::LogFormat::Json,
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut common = cli.common;
    let mut command = cli.command;
    // `--pool` without a name: `peer watch --pool` watches the whole pool
    // (of the one daemon running); anywhere else a name is needed.
    if let Some(Cmd::Watch(args)) = &mut command {
        args.all |= pool_typed(&matches, &settings);
    }
    if common.pool.as_deref() == Some("") {
        if matches!(command, Some(Cmd::Watch(_))) {
            common.pool = None;
        } else {
            eprintln!("error: --pool needs a pool name (`peer watch --pool` alone watches the whole pool)");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let result = runtime.block_on(async move {
        match command {
            Some(Cmd::Submit(args)) => submit(*args, &common).await,
            Some(Cmd::Peers(args)) => peers(args, &common).await,
            Some(Cmd::Status(args)) => status(args.json, &common).await,
            Some(Cmd::Doctor(args)) => doctor::run(args, &common).await,
            Some(Cmd::Jobs(args)) => jobs(args, &common).await,
            Some(Cmd::Scale(args)) => scale(args.slots, &common).await,
            Some(Cmd::Capabilities(args)) => capabilities(args.change, &common).await,
            Some(Cmd::Cancel(args)) => cancel(args, &common).await,
            Some(Cmd::Result(args)) => result(args, &common).await,
            Some(Cmd::Watch(args)) => watch(args, &common).await,
            Some(Cmd::Id(args)) => id(args, common),
            Some(Cmd::Pool(cmd)) => pool::run(cmd),
            Some(Cmd::Completions(args)) => completions(&args),
            Some(Cmd::Man(args)) => man(&args),
            Some(Cmd::Mesh(args)) => mesh::run(args, common).await,
            Some(Cmd::Config) => {
                out::outln!("{}", settings::show(&matches, &settings).trim_end());
                Ok(0)
            }
            None => daemon(cli.daemon, common, &settings).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Whether `--pool` was typed on the command line (not from a variable or
/// the settings file).
fn pool_typed(matches: &clap::ArgMatches, settings: &settings::Settings) -> bool {
    let typed = |m: &clap::ArgMatches| {
        m.value_source("pool") == Some(clap::parser::ValueSource::CommandLine)
            && !settings.gave("pool")
    };
    typed(matches) || matches.subcommand().is_some_and(|(_, sub)| typed(sub))
}

fn init_tracing(client: bool, color: bool, json: bool) {
    // Clients stay quiet unless asked; the daemon logs at info. The webrtc
    // stack's own warnings (`rtc` and its `rtc_*` crates: a STUN check
    // before the remote's credentials, a write after close, an ICE role
    // switch) are races it recovers from, not something a user can act on:
    // errors only.
    const STACK: &str = "rtc=error,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,\
        rtc_datachannel=error,rtc_mdns=error,rtc_stun=error,rtc_turn=error,rtc_shared=error";
    let default = if client {
        format!("warn,webrtc=error,{STACK}")
    } else {
        format!("info,webrtc=warn,{STACK}")
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("JOBMESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        logs.json().try_init()
    } else {
        logs.with_ansi(color).try_init()
    };
}

/// The exec handlers of a settings file's `[[handler]]` entries.
fn exec_handlers(path: &std::path::Path, text: &str) -> anyhow::Result<handlers::Handlers> {
    let mut found = handlers::Handlers::new();
    for (cap, h) in jobmesh_peer::exec::parse(text, path).context("--config")? {
        found.insert(cap, std::sync::Arc::new(h));
    }
    Ok(found)
}

/// The capabilities asked for, each with its handler: from the exec config
/// if it declares one, else built in. Anything else is refused here, at start.
/// Also every exec handler of the config (`peer capabilities add` may
/// start one).
fn parse_capabilities(
    raw: &[String],
    config: Option<(&std::path::Path, &str)>,
) -> anyhow::Result<(Vec<Capability>, handlers::Handlers, handlers::Handlers)> {
    let caps = raw
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| Capability::new(s).map_err(|e| anyhow::anyhow!("--capabilities: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let available = match config {
        Some((path, text)) => exec_handlers(path, text)?,
        None => handlers::Handlers::new(),
    };
    let mut found = available.clone();
    let builtin: Vec<Capability> = caps
        .iter()
        .filter(|c| !found.contains_key(*c))
        .cloned()
        .collect();
    found.extend(handlers::builtin(&builtin).context("--capabilities")?);
    found.retain(|c, _| caps.contains(c));
    Ok((caps, found, available))
}

/// `--allow CAPABILITY=KEY,KEY`: per capability, the submitters it runs
/// jobs for, as public keys or peer ids.
fn parse_allow(
    raw: &[String],
) -> anyhow::Result<HashMap<Capability, HashSet<jobmesh_wire::PeerId>>> {
    let mut allow: HashMap<Capability, HashSet<jobmesh_wire::PeerId>> = HashMap::new();
    for entry in raw {
        let (cap, keys) = entry
            .split_once('=')
            .with_context(|| format!("--allow {entry:?}: expected CAPABILITY=KEY[,KEY...]"))?;
        let cap = Capability::new(cap.trim()).with_context(|| format!("--allow {entry:?}"))?;
        let set = allow.entry(cap).or_default();
        for key in keys.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let id = match key.parse::<jobmesh_identity::PublicKey>() {
                Ok(k) => k.peer_id(),
                Err(_) => key.parse::<uuid::Uuid>().map(jobmesh_wire::PeerId).map_err(|_| {
                    anyhow::anyhow!("--allow {entry:?}: {key:?} is neither a public key nor a peer id (`peer id` prints both)")
                })?,
            };
            set.insert(id);
        }
    }
    Ok(allow)
}

/// `--view`: None for `all`, the capabilities otherwise (`none`: empty).
fn parse_view(view: &str) -> anyhow::Result<Option<Vec<Capability>>> {
    match view.trim() {
        "all" => Ok(None),
        "none" => Ok(Some(Vec::new())),
        list => list
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| {
                Capability::new(c)
                    .map_err(|e| anyhow::anyhow!("--view: {e} (give all, none, or capabilities)"))
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map(Some),
    }
}

async fn daemon(
    args: DaemonArgs,
    common: Common,
    settings: &settings::Settings,
) -> anyhow::Result<u8> {
    let handlers_file = settings.path.as_deref().zip(settings.handlers.as_deref());
    let (capabilities, handlers, available) =
        parse_capabilities(&args.capabilities, handlers_file)?;
    let name = common.name.unwrap_or_else(jobmesh_peer::default_name);
    let (membership, pool) = pool::membership(
        &common.membership,
        common.pool.as_deref(),
        common.data_dir.as_deref(),
    )?;
    let control_path = common
        .control
        .unwrap_or_else(|| control::default_path(&pool, &name));
    let signal = common.signal.unwrap_or_else(|| DEFAULT_SIGNAL.to_owned());
    let (signal, fallbacks) = signal_urls(&signal)?;
    let mut config = DaemonConfig::new(signal, name.clone(), pool);
    config.signal_fallbacks = fallbacks;
    config.membership = membership;
    config.ca.clone_from(&common.membership.ca);
    config.allow = parse_allow(&args.allow)?;
    if args.slots == 0 && !capabilities.is_empty() {
        bail!(
            "--slots 0 with --capabilities: this worker could never run a job; give --slots 1 or more, or leave out --capabilities for a peer that only submits"
        );
    }
    config.slots = if capabilities.is_empty() {
        0
    } else {
        args.slots
    };
    config.capabilities = capabilities;
    config.view = parse_view(&args.view)?;
    config.grace = Duration::from_secs(args.grace_secs);
    let strategy: StrategyKind = args
        .dispatch
        .parse()
        .map_err(|e| anyhow::anyhow!("--dispatch: {e}"))?;
    if strategy == StrategyKind::Custom {
        bail!("--dispatch: \"custom\" needs a strategy written in Rust (see examples/library.rs)");
    }
    config.dispatcher.default_strategy = strategy;
    config.dispatcher.self_dispatch = !args.no_self_dispatch;
    config.dispatcher.queue_limit = args.queue_limit.max(1);
    if args.max_blob_mib == 0 || args.max_blob_mib > 2048 {
        bail!("--max-blob-mib must be 1..=2048");
    }
    config.blobs.max_blob_size = args.max_blob_mib * 1024 * 1024;
    config.blobs.memory_budget = args.blob_memory_mib * 1024 * 1024;
    if args.spool_gib == 0 {
        bail!("--spool-gib must be at least 1");
    }
    config.blobs.spool =
        jobmesh_peer::SpoolLimits::from_total(args.spool_gib.saturating_mul(1 << 30));
    config.spool_dir = args.spool_dir;
    match args.handover_dir.as_deref().map(str::trim) {
        None => {}
        Some("off") => config.handover_dir = None,
        Some("") => bail!("--handover-dir: give a directory, or off"),
        Some(dir) => config.handover_dir = Some(dir.into()),
    }
    config.data_dir = Some(data_dir(common.data_dir, &config.pool, &name)?);
    config.rtc = RtcConfig {
        ice_servers: args.ice_servers,
        ..RtcConfig::default()
    };
    let ext = jobmesh_peer::Extensions {
        handlers,
        available,
        strategy: None,
    };
    let shutdown = CancellationToken::new();
    on_signals(shutdown.clone())?;
    let http_access = match &args.http_token_file {
        Some(path) => {
            let token = read_secret(path)
                .with_context(|| format!("--http-token-file {}", path.display()))?;
            Some(jobmesh_http::Access::new(Some(&token))?)
        }
        None => None,
    };
    if http_access.is_some() && args.http.is_none() {
        bail!("--http-token-file needs --http ADDR (the token guards the dashboard)");
    }
    let access = http_access.unwrap_or(jobmesh_http::Access::new(None)?);
    let metrics_listener = match &args.metrics {
        Some(addr) => Some(jobmesh_http::bind("--metrics", addr, None).await?),
        None => None,
    };
    let http_listener = match &args.http {
        Some(addr) => Some(jobmesh_http::bind("--http", addr, Some(&access)).await?),
        None => None,
    };
    let (pool_name, signal_url) = (config.pool.clone(), config.signal_url.clone());
    let local = Local::start(config, ext, control_path, shutdown).await?;
    if let Some(path) = settings.path.clone() {
        reload_on_sighup(path, local.handle.clone())?;
    }
    tell_systemd_when_joined(local.handle.clone(), pool_name, signal_url);
    let mut served = String::new();
    if let Some(l) = metrics_listener {
        let app = jobmesh_http::metrics_router(local.handle.clone());
        let bound = jobmesh_http::spawn(l, app, local.control_cancel.clone())?;
        served.push_str(&format!("; metrics http://{bound}/metrics"));
    }
    if let Some(l) = http_listener {
        let stop = local.control_cancel.clone();
        let app = jobmesh_http::router(local.handle.clone(), access, stop.clone());
        let bound = jobmesh_http::spawn(l, app, stop)?;
        served.push_str(&format!("; dashboard http://{bound}/"));
    }
    outln!(
        "peer {name} {} running; control socket {}{served}",
        local.handle.id(),
        local.control_path.display()
    );
    Ok(local.run().await)
}

/// A secret from a file (its first 4 KiB), trimmed.
fn read_secret(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(4096)
        .read_to_string(&mut text)?;
    Ok(text.trim().to_owned())
}

/// A daemon of this machine: its peer, and the control socket and runtime
/// record through which client commands find it.
struct Local {
    handle: PeerHandle,
    control_path: PathBuf,
    control_cancel: CancellationToken,
    record: Option<control::running::Record>,
}

impl Local {
    /// Binds the control socket (first: a second daemon with the same name
    /// fails here), starts the peer, serves the socket and records it.
    async fn start(
        config: DaemonConfig,
        ext: jobmesh_peer::Extensions,
        control_path: PathBuf,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let listener = control::bind(&control_path)
            .await
            .with_context(|| format!("control socket {}", control_path.display()))?;
        let running = control::running::Running {
            pid: std::process::id(),
            pool: config.pool.clone(),
            name: config.name.clone(),
            signal: config.signal_url.clone(),
            control: control_path.clone(),
            started_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        let handle = jobmesh_peer::spawn_with(config, ext, shutdown)?;
        let record = control::running::announce(&control::runtime_dir(), &running)
            .map_err(|e| eprintln!("warning: cannot record this daemon in the runtime dir ({e}): client commands will need --control to find it"))
            .ok();
        let control_cancel = CancellationToken::new();
        tokio::spawn(control::serve(
            listener,
            control_path.clone(),
            handle.clone(),
            control_cancel.clone(),
        ));
        Ok(Self {
            handle,
            control_path,
            control_cancel,
            record,
        })
    }

    /// Until the peer stops (drained after a signal: 0) or its pool refuses
    /// it (1); then the socket and the record go.
    async fn run(self) -> u8 {
        let code = tokio::select! {
            () = self.handle.stopped() => 0,
            reason = self.handle.refused() => {
                eprintln!("error: {reason}");
                self.handle.shutdown();
                self.handle.stopped().await;
                1
            }
        };
        self.control_cancel.cancel();
        drop(self.record);
        let _ = std::fs::remove_file(&self.control_path);
        code
    }
}

/// First SIGINT/SIGTERM: graceful drain. Second: exit at once. The handlers
/// are installed before this returns, so a signal right after start is not missed.
fn on_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        for n in 0.. {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if n == 0 {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                shutdown.cancel();
            } else {
                eprintln!("second signal: exiting without waiting for running jobs");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

/// Under systemd (`Type=notify`, `$NOTIFY_SOCKET` set): the daemon is
/// ready once it has joined its pool (its view is whole), and says what it
/// waits for until then. Without `$NOTIFY_SOCKET` this sends nothing.
fn tell_systemd_when_joined(handle: PeerHandle, pool: String, url: String) {
    use sd_notify::NotifyState;
    let status = format!("joining pool {pool} at {url}");
    let _ = sd_notify::notify(false, &[NotifyState::Status(&status)]);
    tokio::spawn(async move {
        let joined = handle
            .wait_pool(Duration::MAX, |s| s.connected && s.synced)
            .await;
        if joined.is_ok_and(|s| s.refused.is_none()) {
            let status = format!("member of pool {pool}");
            let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(&status)]);
        }
    });
}

/// SIGHUP: reads the settings file's `[[handler]]` entries again; the
/// capabilities they declare that this daemon runs take their new handler
/// from their next job, and `peer capabilities add` can start the others.
fn reload_on_sighup(path: PathBuf, handle: PeerHandle) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let read = settings::handlers_in(&path)
                .map_err(anyhow::Error::msg)
                .and_then(|text| exec_handlers(&path, &text));
            match read {
                Ok(found) => match handle.reload_handlers(found).await {
                    Ok(changed) => {
                        tracing::info!(file = %path.display(), reloaded = changed.len(), "handlers read again (SIGHUP)")
                    }
                    Err(e) => tracing::warn!("handlers not reloaded: {e}"),
                },
                // A broken file changes nothing: what runs keeps running.
                Err(e) => {
                    tracing::warn!(file = %path.display(), "handlers not reloaded, the file is refused: {e:#}")
                }
            }
        }
    });
    Ok(())
}

/// How a client subcommand reaches the pool.
pub(crate) enum Via {
    Control(PathBuf),
    /// A short-lived submit-only daemon, shut down when the command ends.
    Ephemeral(Box<PeerHandle>),
}

/// `--signal`'s URLs: the first, and the others of its cluster (comma
/// separated), each at most once.
fn signal_urls(arg: &str) -> anyhow::Result<(String, Vec<String>)> {
    let mut urls: Vec<String> = Vec::new();
    for url in arg.split(',').map(str::trim) {
        if url.is_empty() {
            bail!("--signal {arg:?} has an empty URL; give ws://HOST:PORT/ws, or several separated by commas");
        }
        if !urls.iter().any(|u| u == url) {
            urls.push(url.to_owned());
        }
    }
    let first = urls.remove(0);
    Ok((first, urls))
}

pub(crate) async fn connect(common: &Common) -> anyhow::Result<Via> {
    let looked = match locate::daemon(common).await? {
        locate::Found::Daemon(path) => return Ok(Via::Control(path)),
        locate::Found::Nothing(looked) => looked,
    };
    let Some(url) = common.signal.clone() else {
        bail!(
            "{looked}; start one (`peer --capabilities ...`), or pass --signal ws://HOST:PORT/ws to join the pool for this one command"
        );
    };
    let name = format!("submit-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (membership, pool) = pool::membership(&common.membership, common.pool.as_deref(), None)?;
    let (first, fallbacks) = signal_urls(&url)?;
    let mut config = DaemonConfig::new(first, name, pool.clone());
    config.signal_fallbacks = fallbacks;
    config.membership = membership;
    config.ca.clone_from(&common.membership.ca);
    config.slots = 0;
    config.grace = Duration::from_secs(1);
    // One command: a server that cannot be reached is reported at once.
    config.persist = false;
    let handle = jobmesh_peer::spawn(config, CancellationToken::new())?;
    handle
        .wait_pool(Duration::from_secs(10), |s| s.synced)
        .await
        .with_context(|| format!("cannot join pool {pool:?}"))?;
    Ok(Via::Ephemeral(Box::new(handle)))
}

pub(crate) async fn finish(via: Via) {
    if let Via::Ephemeral(h) = via {
        h.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(3), h.stopped()).await;
    }
}

async fn submit(args: SubmitArgs, common: &Common) -> anyhow::Result<u8> {
    let capability = Capability::new(&args.capability).context("capability")?;
    if args.each.is_some() {
        return each::run(args, capability, common).await;
    }
    let mut input = read_input(&args.input)?;
    add_params(&mut input, &args.params)?;
    let cwd = std::env::current_dir().context("current directory")?;
    let files = args
        .files
        .iter()
        .map(|f| std::fs::canonicalize(f).with_context(|| format!("--file {}", f.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // `--out -`: the daemon writes a temp file, which is then copied to stdout.
    let stdout_blob = match args.out.as_deref() {
        Some("-") => Some(tempfile::NamedTempFile::new().context("temp file for --out -")?),
        _ => None,
    };
    let out = match (&stdout_blob, args.out.as_deref()) {
        (Some(t), _) => Some(t.path().to_owned()),
        (None, Some(o)) => Some(cwd.join(o)),
        (None, None) => None,
    };
    let out_dir = args.out_dir.as_ref().map(|d| cwd.join(d));
    // Where results go is settled before the job runs: a job that completes
    // with nowhere to put its blobs is work thrown away.
    if let Some(d) = &out_dir {
        std::fs::create_dir_all(d)
            .with_context(|| format!("cannot create --out-dir {}", d.display()))?;
    }
    if let (None, Some(o)) = (&stdout_blob, &out) {
        let dir = o.parent().unwrap_or(&cwd);
        if !dir.is_dir() {
            bail!(
                "--out {}: directory {} does not exist (create it, or use --out-dir, which is created)",
                o.display(),
                dir.display()
            );
        }
    }
    let options = submit_options(&args)?;
    let job_options = options.to_options().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut progress = Progress::new(args.json);
    let via = connect(common).await?;
    let envelope = match &via {
        Via::Control(path) if args.detach => {
            let req = Request::Submit {
                capability,
                input,
                options,
                events: false,
                files,
                out: None,
                out_dir: None,
                detach: true,
            };
            let envelope: Envelope = match control::request(path, &req).await {
                Ok(v) => serde_json::from_value(v).context("daemon reply")?,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return Ok(1);
                }
            };
            if args.json {
                outln!("{}", serde_json::to_string(&envelope)?);
            } else {
                outln!("{}", envelope.job_id);
            }
            return Ok(envelope.exit_code());
        }
        Via::Ephemeral(_) if args.detach => {
            finish(via).await;
            bail!("--detach needs a running local daemon to keep the job (start `peer`), not --signal");
        }
        Via::Control(path) => {
            let req = Request::Submit {
                capability,
                input,
                options,
                events: true,
                files,
                out,
                out_dir,
                detach: false,
            };
            // Ctrl-C drops the connection, and the daemon cancels the job.
            let reply = tokio::select! {
                r = control::request_streaming(path, &req, |e| progress.event(&e)) => r,
                _ = tokio::signal::ctrl_c() => {
                    progress.clear();
                    eprintln!("cancelled");
                    return Ok(130);
                }
            };
            match reply {
                Ok(v) => serde_json::from_value::<Envelope>(v).context("daemon reply")?,
                Err(e) => {
                    progress.clear();
                    eprintln!("error: {e:#}");
                    return Ok(1);
                }
            }
        }
        Via::Ephemeral(h) => {
            let blobs = files
                .into_iter()
                .map(jobmesh_peer::Blob::from_file)
                .collect();
            let outcome =
                run_ephemeral(h, capability, input, blobs, job_options, &mut progress).await;
            let saved = outcome.and_then(|report| {
                let mut envelope = Envelope::from_report(&report);
                envelope.blobs =
                    control::save_blobs(&report.blobs, out.as_deref(), out_dir.as_deref())
                        .map_err(|e| anyhow::anyhow!(e))?;
                Ok(envelope)
            });
            match saved {
                Ok(envelope) => envelope,
                Err(e) => {
                    progress.clear();
                    finish(via).await;
                    eprintln!("error: {e:#}");
                    return Ok(1);
                }
            }
        }
    };
    progress.clear();
    finish(via).await;
    let report = if args.json {
        Some(serde_json::to_string(&envelope)?)
    } else {
        envelope.result.as_ref().map(ToString::to_string)
    };
    match (&stdout_blob, report) {
        // The blob owns stdout; the result goes to stderr.
        (Some(tmp), report) => {
            if envelope.status == "completed" {
                let mut f = std::fs::File::open(tmp.path()).context("reading the result blob")?;
                if let Err(e) = std::io::copy(&mut f, &mut std::io::stdout().lock()) {
                    out::closed(&e);
                }
            }
            if let Some(r) = report {
                eprintln!("{r}");
            }
        }
        (None, Some(r)) => outln!("{r}"),
        (None, None) => {}
    }
    if envelope.status != "completed" {
        print_failure(&envelope);
        if envelope.status == "no_worker" {
            eprintln!("hint: `peer peers` shows who is in the pool and what each can run");
        }
    }
    Ok(envelope.exit_code())
}

/// The job options of `peer submit`'s flags, checked.
fn submit_options(args: &SubmitArgs) -> anyhow::Result<SubmitOptions> {
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 86_400.0) {
        bail!("--timeout must be between 0 and 86400 seconds");
    }
    let options = SubmitOptions {
        timeout_ms: Some((args.timeout * 1000.0).ceil() as u64),
        priority: Some(args.priority),
        retries: Some(args.retries),
        strategy: args.strategy.clone(),
        affinity: args.affinity.clone(),
        retry_on_disconnect: Some(!args.no_retry_on_disconnect),
    };
    options.to_options().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(options)
}

/// Runs a job on a short-lived in-process daemon; Ctrl-C cancels it.
async fn run_ephemeral(
    h: &PeerHandle,
    capability: Capability,
    input: serde_json::Value,
    blobs: Vec<jobmesh_peer::Blob>,
    options: jobmesh_peer::JobOptions,
    progress: &mut Progress,
) -> anyhow::Result<jobmesh_peer::JobReport> {
    let mut job = h
        .submit_with_blobs(capability, input, blobs, options)
        .await?;
    let clock = jobmesh_peer::jobs::Clock::now();
    let mut interrupted = false;
    loop {
        tokio::select! {
            ev = job.next_event() => match ev {
                Some(e) => progress.event(&serde_json::to_value(WatchEvent::from_event(&e, &clock))?),
                None => break,
            },
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                job.cancel().await;
            }
        }
    }
    Ok(job.result().await?)
}

/// `--input`: JSON given as is, `-` for stdin or `@FILE`; at most what a
/// control request may carry.
fn read_input(raw: &str) -> anyhow::Result<serde_json::Value> {
    use std::io::Read;
    let limit = control::MAX_CONTROL_REQUEST as u64;
    let read = |from: &mut dyn Read, what: &str| -> anyhow::Result<String> {
        let mut text = String::new();
        from.take(limit + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("reading the input from {what}"))?;
        if text.len() as u64 > limit {
            bail!("the input from {what} is over {} MiB", limit >> 20);
        }
        Ok(text)
    };
    let (text, what) = match raw {
        "-" => (
            read(&mut std::io::stdin().lock(), "stdin")?,
            "the input on stdin".to_owned(),
        ),
        _ => match raw.strip_prefix('@') {
            Some(path) => {
                let mut f = std::fs::File::open(path)
                    .with_context(|| format!("--input @{path}: cannot open it"))?;
                (read(&mut f, path)?, format!("--input @{path}"))
            }
            None => (raw.to_owned(), "--input".to_owned()),
        },
    };
    serde_json::from_str(&text).with_context(|| format!("{what} is not valid JSON"))
}

/// Adds `KEY=VALUE` params to the input object (`--param`).
fn add_params(input: &mut serde_json::Value, params: &[String]) -> anyhow::Result<()> {
    if !params.is_empty() && !input.is_object() {
        bail!("--param adds fields to the input, so --input must be a JSON object");
    }
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--param {p:?}: expected KEY=VALUE");
        };
        jobmesh_peer::envelope::add_param(input, k, v)
            .map_err(|e| anyhow::anyhow!("--param {p:?}: {e}"))?;
    }
    Ok(())
}

async fn capabilities(
    change: Option<crate::args::CapabilityChange>,
    common: &Common,
) -> anyhow::Result<u8> {
    use crate::args::CapabilityChange::{Add, Remove};
    let parse = |names: Vec<String>| {
        names
            .iter()
            .map(|n| Capability::new(n.trim()).map_err(|e| anyhow::anyhow!("{e}")))
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let (add, remove) = match change {
        None => (Vec::new(), Vec::new()),
        Some(Add { names }) => (parse(names)?, Vec::new()),
        Some(Remove { names }) => (Vec::new(), parse(names)?),
    };
    let path = locate::required(common).await?;
    let v = control::request(&path, &Request::Capabilities { add, remove }).await?;
    let now: Vec<Capability> = serde_json::from_value(v["capabilities"].clone())?;
    let names: Vec<&str> = now.iter().map(Capability::as_str).collect();
    outln!(
        "{}",
        if names.is_empty() {
            "(none: this daemon only submits)".to_owned()
        } else {
            names.join(",")
        }
    );
    Ok(0)
}

async fn scale(slots: u32, common: &Common) -> anyhow::Result<u8> {
    let path = locate::required(common).await?;
    let v = control::request(&path, &Request::Scale { slots }).await?;
    let before = v["before"].as_u64().unwrap_or_default();
    outln!("slots {before} → {slots}");
    Ok(0)
}

async fn jobs(args: JobsArgs, common: &Common) -> anyhow::Result<u8> {
    let path = locate::required(common).await?;
    let v = control::request(&path, &Request::Jobs).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&v["jobs"])?);
        return Ok(0);
    }
    let jobs: Vec<JobRecord> = serde_json::from_value(v["jobs"].clone())?;
    let names = member_names(&path).await;
    let rows = jobs
        .into_iter()
        .map(|j| {
            vec![
                short(&j.job_id.to_string()).to_owned(),
                j.capability.to_string(),
                j.state,
                j.worker
                    .as_deref()
                    .map_or("-".into(), |w| worker_label(&names, w)),
                j.attempts.to_string(),
                table::duration(j.queued_ms),
                table::duration(j.run_ms),
                table::duration(j.total_ms),
            ]
        })
        .collect();
    outln!(
        "{}",
        table::render(
            &[
                "JOB",
                "CAPABILITY",
                "STATE",
                "WORKER",
                "ATTEMPTS",
                "QUEUED",
                "RUN",
                "TOTAL"
            ],
            rows,
            &[4, 5, 6, 7],
        )
    );
    Ok(0)
}

/// The first 8 characters of an id: what tables show, and enough for
/// `peer result` and `peer cancel` (any unique prefix is).
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The names of the pool's members by id, from the daemon's view.
async fn member_names(path: &std::path::Path) -> HashMap<String, String> {
    let Ok(reply) = control::request(path, &Request::Peers)
        .await
        .map_err(anyhow::Error::from)
        .and_then(|v| Ok(serde_json::from_value::<PeersReply>(v)?))
    else {
        return HashMap::new();
    };
    std::iter::once(reply.me)
        .chain(reply.peers)
        .map(|p| (p.id.to_string(), p.name))
        .collect()
}

/// A worker by name, or by its short id once it has left the pool.
fn worker_label(names: &HashMap<String, String>, id: &str) -> String {
    names
        .get(id)
        .cloned()
        .unwrap_or_else(|| short(id).to_owned())
}

/// The job a user means by `given`: a whole id, or a unique prefix of one
/// of the daemon's live and recent jobs (as git takes commits).
async fn resolve_job(path: &std::path::Path, given: &str) -> anyhow::Result<uuid::Uuid> {
    if let Ok(id) = given.parse::<uuid::Uuid>() {
        return Ok(id);
    }
    let prefix = given.to_ascii_lowercase();
    if prefix.len() < 4 || !prefix.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        bail!("{given:?} is not a job id: give the id, or at least its first 4 characters (`peer jobs` lists them)");
    }
    let v = control::request(path, &Request::Jobs).await?;
    let jobs: Vec<JobRecord> = serde_json::from_value(v["jobs"].clone())?;
    let mut found: Vec<uuid::Uuid> = jobs
        .iter()
        .map(|j| j.job_id)
        .filter(|id| id.to_string().starts_with(&prefix))
        .collect();
    found.dedup();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => bail!("no job of this daemon starts with {given:?} (`peer jobs` lists its live and last 1,000 jobs; older ones need the whole id)"),
        many => {
            let list: Vec<String> = many.iter().map(ToString::to_string).collect();
            bail!("{given:?} is ambiguous: it starts {}; give more characters", list.join(", "))
        }
    }
}

async fn cancel(args: CancelArgs, common: &Common) -> anyhow::Result<u8> {
    let path = locate::required(common).await?;
    let job_id = resolve_job(&path, &args.job_id).await?;
    let v = control::request(&path, &Request::Cancel { job_id }).await?;
    if v["cancelled"].as_bool() == Some(true) {
        outln!("cancelled {job_id}");
        Ok(0)
    } else {
        eprintln!("job {job_id} is not live on this daemon (finished, or never submitted here); `peer jobs` lists them");
        Ok(1)
    }
}

/// Exit code of `peer result` for a job that has not ended yet.
const EXIT_UNFINISHED: u8 = 4;

/// The data dir given, or the default one of the daemon `name` in `pool`.
fn data_dir(given: Option<PathBuf>, pool: &str, name: &str) -> anyhow::Result<PathBuf> {
    given
        .or_else(|| jobmesh_peer::store::default_data_dir(pool, name))
        .context("no data dir: set --data-dir (no XDG_DATA_HOME and no home directory)")
}

fn id(args: IdArgs, common: Common) -> anyhow::Result<u8> {
    let name = common.name.unwrap_or_else(jobmesh_peer::default_name);
    let pool = common.pool.unwrap_or_else(|| "default".into());
    let dir = data_dir(common.data_dir, &pool, &name)?;
    let identity = jobmesh_peer::store::identity(&dir).map_err(anyhow::Error::msg)?;
    let key_file = dir.join(jobmesh_identity::KEY_FILE);
    if args.json {
        let out = serde_json::json!({
            "peer_id": identity.peer_id(),
            "public_key": identity.public(),
            "key_file": key_file,
        });
        outln!("{out}");
    } else {
        outln!("peer id     {}", identity.peer_id());
        outln!("public key  {}", identity.public());
        outln!("key file    {}", key_file.display());
    }
    Ok(0)
}

async fn result(args: ResultArgs, common: &Common) -> anyhow::Result<u8> {
    let cwd = std::env::current_dir().context("current directory")?;
    let out_dir = args.out_dir.map(|d| cwd.join(d));
    if let Some(d) = &out_dir {
        std::fs::create_dir_all(d)
            .with_context(|| format!("cannot create --out-dir {}", d.display()))?;
    }
    let path = locate::required(common).await?;
    let job_id = resolve_job(&path, &args.job_id).await?;
    let req = Request::Result {
        job_id,
        out: args.out.map(|o| cwd.join(o)),
        out_dir,
    };
    // With --wait: subscribed before the first look, so its end is not missed.
    let mut events = match args.wait {
        true => Some(control::subscribe(&path, &Request::Watch).await?),
        false => None,
    };
    let v = loop {
        let v = match control::request(&path, &req).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e:#}");
                return Ok(1);
            }
        };
        let Some(events) = events.as_mut().filter(|_| unfinished(&v)) else {
            break v;
        };
        // Its `finished` event, then the journal again; a second at most
        // between looks, in case the event came before the outcome was on
        // disk or this watcher lagged.
        let id = job_id.to_string();
        let next_look = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match events.next().await? {
                    Some(e) if e["job_id"].as_str() == Some(&id) && e["event"] == "finished" => {
                        return anyhow::Ok(());
                    }
                    Some(e) if e.get("lagged").is_some() => return Ok(()),
                    Some(_) => {}
                    None => bail!("the daemon stopped while job {id} ran"),
                }
            }
        });
        if let Ok(Err(e)) = next_look.await {
            eprintln!("error: {e:#}");
            return Ok(1);
        }
    };
    if unfinished(&v) {
        if args.json {
            outln!("{v}");
        } else {
            let state = match v["status"].as_str() {
                Some("running") => format!("running (attempt {})", v["attempts"]),
                _ => "queued".to_owned(),
            };
            eprintln!(
                "job {job_id} is {state}; try again later, or wait for it: peer result {job_id} --wait"
            );
        }
        return Ok(EXIT_UNFINISHED);
    }
    let envelope: Envelope = serde_json::from_value(v).context("daemon reply")?;
    if args.json {
        outln!("{}", serde_json::to_string(&envelope)?);
    } else if let Some(r) = &envelope.result {
        outln!("{r}");
    }
    if envelope.status != "completed" {
        print_failure(&envelope);
    }
    Ok(envelope.exit_code())
}

/// Whether a `result` answer is of a job that has not ended.
fn unfinished(v: &serde_json::Value) -> bool {
    matches!(v["status"].as_str(), Some("queued" | "running"))
}

/// `peer completions SHELL`: the script, on stdout.
fn completions(args: &args::CompletionsArgs) -> anyhow::Result<u8> {
    use clap::CommandFactory;
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "peer", &mut script);
    if let Err(e) = std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
        out::closed(&e);
    }
    Ok(0)
}

/// `peer man`: `peer.1`, and `peer-SUB.1` for every subcommand (and theirs).
fn man(args: &args::ManArgs) -> anyhow::Result<u8> {
    use clap::CommandFactory;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut root = Cli::command();
    // Propagates the shared flags into every subcommand's page.
    root.build();
    let mut pages = vec![(String::from("peer"), root)];
    let mut written = Vec::new();
    while let Some((name, command)) = pages.pop() {
        // The title and synopsis: `peer-submit`, `peer submit`.
        let command = command
            .display_name(name.clone())
            .bin_name(name.replace('-', " "));
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            pages.push((format!("{name}-{}", sub.get_name()), sub.clone()));
        }
        let path = args.dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .context("rendering a man page")?;
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    written.sort();
    for p in &written {
        outln!("{}", p.display());
    }
    Ok(0)
}

/// The stderr line of a job that did not complete.
fn print_failure(envelope: &Envelope) {
    match envelope.error.as_deref() {
        Some(e) if e != envelope.status => {
            eprintln!("error: job {} {}: {e}", envelope.job_id, envelope.status);
        }
        _ => eprintln!("error: job {} {}", envelope.job_id, envelope.status),
    }
}

async fn watch(args: WatchArgs, common: &Common) -> anyhow::Result<u8> {
    let path = locate::required(common).await?;
    if args.all {
        return watch_pool(&path, args.json).await;
    }
    let mut events = control::subscribe(&path, &Request::Watch).await?;
    let mut names = HashMap::new();
    // A worker not yet named is looked up once (it joined after the start).
    let mut asked: HashSet<String> = HashSet::new();
    while let Some(v) = events.next().await? {
        if args.json {
            outln!("{v}");
            continue;
        }
        if let Some(n) = v.get("lagged") {
            outln!("(missed {n} events)");
            continue;
        }
        let worker = match v["worker"].as_str() {
            Some(w) => {
                if !names.contains_key(w) && asked.insert(w.to_owned()) {
                    names = member_names(&path).await;
                }
                Some(worker_label(&names, w))
            }
            None => None,
        };
        let extra = match v["event"].as_str() {
            Some("queued") => v["capability"].as_str().map(str::to_owned),
            Some("dispatched" | "started") => worker,
            Some("progress") => v["progress"]["percent"].as_u64().map(|p| format!("{p}%")),
            Some("finished") => v["state"].as_str().map(str::to_owned),
            Some("retrying") => v["error"].as_str().map(str::to_owned),
            _ => None,
        };
        outln!(
            "{}  {}  {:<10}  {}",
            v["at_ms"].as_u64().map_or("-".into(), table::time_of_day),
            short(v["job_id"].as_str().unwrap_or_default()),
            v["event"].as_str().unwrap_or_default(),
            extra.unwrap_or_default()
        );
    }
    Ok(0)
}

async fn status(json: bool, common: &Common) -> anyhow::Result<u8> {
    let via = connect(common).await?;
    let report: jobmesh_peer::status::StatusReport = match &via {
        Via::Control(path) => {
            serde_json::from_value(control::request(path, &Request::Status).await?)?
        }
        Via::Ephemeral(h) => h.status().await?,
    };
    finish(via).await;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    outln!("{}", table::status(&report));
    if !report.connected {
        eprintln!(
            "note: this daemon is not connected to the signal-server; the figures may be stale"
        );
    }
    Ok(0)
}

/// `peer watch --all`: every worker's job events, a line each.
async fn watch_pool(path: &std::path::Path, json: bool) -> anyhow::Result<u8> {
    let mut events = control::subscribe(path, &Request::WatchPool).await?;
    while let Some(v) = events.next().await? {
        if json {
            outln!("{v}");
            continue;
        }
        if let Some(n) = v.get("lagged") {
            outln!("(missed {n} batches of events)");
            continue;
        }
        let worker = v["worker_name"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| short(v["worker"].as_str().unwrap_or_default()).to_owned());
        if let Some(n) = v.get("dropped") {
            outln!("(worker {worker} dropped {n} events: this watcher fell behind)");
            continue;
        }
        let extra = match v["event"].as_str() {
            Some("progress") => v["percent"].as_u64().map(|p| format!("{p}%")),
            Some("completed" | "cancelled") => {
                v["run_ms"].as_u64().map(|ms| table::duration(Some(ms)))
            }
            Some("failed") => Some(format!(
                "{}: {}",
                table::duration(v["run_ms"].as_u64()),
                v["error"].as_str().unwrap_or_default()
            )),
            _ => None,
        };
        outln!(
            "{}  {:<12}  {}  {:<10}  {:<10}  {}",
            v["at_ms"].as_u64().map_or("-".into(), table::time_of_day),
            worker,
            short(v["job_id"].as_str().unwrap_or_default()),
            v["event"].as_str().unwrap_or_default(),
            v["capability"].as_str().unwrap_or_default(),
            extra.unwrap_or_default()
        );
    }
    Ok(0)
}

async fn peers(args: PeersArgs, common: &Common) -> anyhow::Result<u8> {
    let via = connect(common).await?;
    let reply: PeersReply = match &via {
        Via::Control(path) => {
            serde_json::from_value(control::request(path, &Request::Peers).await?)?
        }
        Via::Ephemeral(h) => h.pool().into(),
    };
    finish(via).await;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(0);
    }
    let row = |p: &PeerInfo, me: bool| {
        let caps: Vec<&str> = p.capabilities.iter().map(Capability::as_str).collect();
        let state = if p.stats.draining {
            "draining"
        } else if p.stats.slots == 0 {
            "submits"
        } else if p.stats.running >= p.stats.slots {
            "busy"
        } else {
            "ready"
        };
        vec![
            format!("{}{}", p.name, if me { " (me)" } else { "" }),
            p.id.short(),
            if caps.is_empty() {
                "-".to_owned()
            } else {
                caps.join(",")
            },
            state.to_owned(),
            p.stats.slots.to_string(),
            p.stats.running.to_string(),
            p.stats.queued.to_string(),
            match reply.links.get(&p.id) {
                Some(path) => path.to_string(),
                None => "-".to_owned(),
            },
        ]
    };
    let rows = std::iter::once(row(&reply.me, true))
        .chain(reply.peers.iter().map(|p| row(p, false)))
        .collect();
    outln!(
        "{}",
        table::render(
            &[
                "NAME",
                "ID",
                "CAPABILITIES",
                "STATE",
                "SLOTS",
                "RUNNING",
                "QUEUED",
                "LINK"
            ],
            rows,
            &[4, 5, 6],
        )
    );
    if !reply.connected {
        eprintln!("note: this daemon is not connected to the signal-server; the list may be stale");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn signal_urls_are_split_on_commas_once_each() {
        let (first, rest) = super::signal_urls("ws://a/ws, ws://b/ws,ws://a/ws").expect("urls");
        assert_eq!(first, "ws://a/ws");
        assert_eq!(rest, ["ws://b/ws"]);
        let err = super::signal_urls("ws://a/ws,").expect_err("an empty url");
        assert!(err.to_string().contains("empty URL"), "{err}");
    }
}
