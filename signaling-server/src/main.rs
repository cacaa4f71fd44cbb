//! `signal-server`: jobmesh's discovery and handshake relay.
//!
//! Binds, prints one line `signal-server listening on ws://IP:PORT/ws` to
//! stdout (the real port, also with `--listen 127.0.0.1:0`), serves until
//! SIGINT or SIGTERM, then closes every socket with 1001 and exits 0.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use jobmesh_identity::PublicKey;
use jobmesh_signal_server::{limits, run, Admission, ServerConfig, MAX_PEERS_PER_POOL, RELAY_RATE};
use jobmesh_trust::Revocations;
use jobmesh_wire::signal::{DEFAULT_HEARTBEAT_MS, MISSED_HEARTBEATS};
use tokio_util::sync::CancellationToken;

/// Log filter when `JOBMESH_LOG` is not set.
const DEFAULT_LOG: &str = "jobmesh=info,jobmesh_signal_server=info,signal_server=info";

/// Tells jobmesh peers who else is in their pool and relays their WebRTC handshakes.
#[derive(Parser, Debug)]
#[command(name = "signal-server", version)]
struct Args {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, env = "JOBMESH_LISTEN", default_value = "127.0.0.1:7070")]
    listen: String,
    /// WebSocket ping interval in milliseconds; a peer silent for 3 intervals is removed.
    #[arg(
        long,
        env = "JOBMESH_HEARTBEAT_MS",
        default_value_t = DEFAULT_HEARTBEAT_MS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    heartbeat_ms: u64,
    /// Most peers in one pool.
    #[arg(
        long,
        default_value_t = MAX_PEERS_PER_POOL,
        value_parser = parse_at_least_one
    )]
    max_peers_per_pool: usize,
    /// Most connections at once; past it new ones are closed at once.
    #[arg(long, env = "JOBMESH_MAX_CONNECTIONS", default_value_t = limits::MAX_CONNECTIONS, value_parser = parse_at_least_one)]
    max_connections: usize,
    /// Most connections at once from one IP address.
    #[arg(long, env = "JOBMESH_MAX_CONNECTIONS_PER_IP", default_value_t = limits::MAX_CONNECTIONS_PER_IP, value_parser = parse_at_least_one)]
    max_connections_per_ip: usize,
    /// Relays one connection may send per second (bursts of twice as many); past it they are dropped.
    #[arg(long, env = "JOBMESH_RELAY_RATE", default_value_t = RELAY_RATE, value_parser = clap::value_parser!(u32).range(1..))]
    relay_rate: u32,
    /// A closed pool and its owner's public key, `NAME=KEY` (`peer pool init NAME` prints it); repeat for more pools. Only members with a credential signed by that key join it.
    #[arg(
        long = "pool-key",
        value_name = "NAME=KEY",
        env = "JOBMESH_POOL_KEYS",
        value_delimiter = ','
    )]
    pool_keys: Vec<String>,
    /// Admit anyone who proves a key to any pool without a --pool-key: no credentials. For development on a trusted machine only.
    #[arg(long, env = "JOBMESH_OPEN")]
    open: bool,
    /// A closed pool's revocation list (`peer pool revoke` writes it); repeat for more pools. Re-read on SIGHUP: withdrawn members are disconnected and refused, and every member is sent the list.
    #[arg(
        long = "revocations",
        value_name = "FILE",
        env = "JOBMESH_REVOCATIONS",
        value_delimiter = ','
    )]
    revocations: Vec<std::path::PathBuf>,
    /// Serve wss:// with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "JOBMESH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "JOBMESH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// File holding the bearer token `GET /api/pools` needs [default: the API answers nobody].
    #[arg(long, env = "JOBMESH_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<std::path::PathBuf>,
    /// A STUN server offered to every member in its welcome (`stun:HOST:PORT`; repeatable).
    #[arg(long = "stun-url", value_name = "URL")]
    stun_urls: Vec<String>,
    /// A TURN server offered to every member with a credential minted for it
    /// (`turn:HOST:PORT?transport=udp`, `…tcp`, `turns:…`; repeatable; needs --turn-secret-file).
    #[arg(long = "turn-url", value_name = "URL", requires = "turn_secret_file")]
    turn_urls: Vec<String>,
    /// File holding the secret shared with the TURN server (coturn's `static-auth-secret` with `use-auth-secret`).
    #[arg(long, env = "JOBMESH_TURN_SECRET_FILE", requires = "turn_urls")]
    turn_secret_file: Option<std::path::PathBuf>,
    /// How long a minted TURN credential is valid, in seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..=604_800))]
    turn_ttl_secs: u64,
    /// Share this server's pools with the other signal-servers on the same NATS server (`nats://HOST:4222`): each owns the peers connected to it, and every peer sees the whole pool. Without it the server runs alone.
    #[arg(long, value_name = "NATS_URL", env = "JOBMESH_CLUSTER")]
    cluster: Option<String>,
    /// This server's name in the cluster, kept across restarts: the others then drop what its previous run had as soon as it is back, instead of after 5 s of silence. Unique per server.
    #[arg(
        long,
        value_name = "NAME",
        env = "JOBMESH_SERVER_ID",
        requires = "cluster"
    )]
    server_id: Option<String>,
    /// Colour in log lines: `auto` (on a terminal, unless NO_COLOR is set), `always` or `never`.
    #[arg(long, env = "JOBMESH_COLOR", value_parser = ["auto", "always", "never"], default_value = "auto")]
    color: String,
    /// Log lines as `text`, or `json` (one object a line, for journald or a log collector).
    #[arg(long, env = "JOBMESH_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

/// A token or secret from the file `flag` names, trimmed; at least 16 characters.
fn read_secret(flag: &str, path: &std::path::Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))?;
    let secret = text.trim().to_owned();
    if secret.len() < 16 {
        anyhow::bail!("{flag} {}: it holds fewer than 16 characters; use a long random one (e.g. openssl rand -hex 32)", path.display());
    }
    Ok(secret)
}

/// The STUN and TURN servers the flags describe.
fn ice_offer(args: &Args) -> anyhow::Result<jobmesh_signal_server::ice::IceOffer> {
    use jobmesh_signal_server::ice::{IceOffer, Turn};
    use jobmesh_wire::signal::IceServer;
    let check = |flag: &str, urls: &[String]| {
        urls.iter().try_for_each(|u| {
            IceServer {
                urls: vec![u.clone()],
                username: None,
                credential: None,
            }
            .validate()
            .with_context(|| format!("{flag} {u}"))
        })
    };
    check("--stun-url", &args.stun_urls)?;
    check("--turn-url", &args.turn_urls)?;
    let turn = match &args.turn_secret_file {
        Some(path) => {
            Some(Turn {
                urls: args.turn_urls.clone(),
                // The same as coturn's static-auth-secret.
                secret: read_secret("--turn-secret-file", path)?,
                ttl: Duration::from_secs(args.turn_ttl_secs),
            })
        }
        None => None,
    };
    Ok(IceOffer {
        stun_urls: args.stun_urls.clone(),
        turn,
    })
}

/// The admission policy the flags describe.
fn admission(args: &Args) -> anyhow::Result<Admission> {
    let mut pools = std::collections::HashMap::new();
    for entry in &args.pool_keys {
        let (name, key) = entry
            .split_once('=')
            .with_context(|| format!("--pool-key {entry:?}: expected NAME=KEY"))?;
        let key: PublicKey = key
            .trim()
            .parse()
            .with_context(|| format!("--pool-key {entry:?}"))?;
        if pools.insert(name.trim().to_owned(), key).is_some() {
            anyhow::bail!("--pool-key: pool {name:?} is given twice");
        }
    }
    if pools.is_empty() && !args.open {
        anyhow::bail!(
            "no pool would admit anyone: pass --pool-key NAME=KEY for each closed pool (`peer pool init NAME` prints it), or --open for development (any pool admits anyone)"
        );
    }
    Ok(Admission {
        pools,
        open: args.open,
    })
}

/// A count of at least 1.
fn parse_at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("JOBMESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let color = match args.color.as_str() {
        "always" => true,
        "never" => false,
        _ => {
            use std::io::IsTerminal;
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stderr().is_terminal()
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(color).init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let admission = admission(&args)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(jobmesh_signal_server::tls::load(cert, key).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let admin_token = args
        .admin_token_file
        .as_deref()
        .map(|path| read_secret("--admin-token-file", path))
        .transpose()?;
    let ice = ice_offer(&args)?;
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            let hint = match e.kind() {
                std::io::ErrorKind::AddrInUse => "the address is in use; pick another with --listen",
                std::io::ErrorKind::PermissionDenied => {
                    "not allowed to bind there (ports below 1024 need privileges); pick another with --listen"
                }
                _ => "check the address (HOST:PORT, e.g. 127.0.0.1:7070) given to --listen",
            };
            return Err(
                anyhow::Error::new(e).context(format!("cannot listen on {}; {hint}", args.listen))
            );
        }
    };
    let addr = listener.local_addr().context("reading the bound address")?;
    let shutdown = CancellationToken::new();
    on_signals(shutdown.clone())?;
    // Before the ready line, like the other handlers: a SIGHUP right after
    // it is not missed.
    let (lists, revocations) = tokio::sync::watch::channel(load_revocations(&args.revocations)?);
    if !args.revocations.is_empty() {
        reload_on_hangup(args.revocations.clone(), lists)?;
    }

    let mut out = std::io::stdout().lock();
    writeln!(out, "signal-server listening on {scheme}://{addr}/ws")
        .and_then(|()| out.flush())
        .context("writing the ready line to stdout")?;
    drop(out);
    tracing::info!(
        %addr,
        heartbeat_ms = args.heartbeat_ms,
        missed = MISSED_HEARTBEATS,
        max_peers_per_pool = args.max_peers_per_pool,
        closed_pools = admission.pools.len(),
        "ready"
    );
    // Under systemd (Type=notify): ready once it listens.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    if scheme == "ws" && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "serving ws:// without TLS on a network address: hellos, pool views and relayed SDPs cross the network in clear (no payloads or secrets, but who is in which pool); use --tls-cert/--tls-key or a TLS proxy");
    }
    if admission.open {
        tracing::warn!("OPEN mode: any pool without a --pool-key admits anyone who reaches this server; they can list its members and submit jobs to them. For development only");
    }
    let config = ServerConfig {
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        max_peers_per_pool: args.max_peers_per_pool,
        admission,
        admin_token,
        revocations: Some(revocations),
        tls,
        limits: limits::Limits {
            max_connections: args.max_connections,
            max_per_ip: args.max_connections_per_ip,
            ..limits::Limits::default()
        },
        relay_rate: args.relay_rate,
        ice,
        cluster: args.cluster.clone(),
        server_id: args.server_id.clone(),
        ..ServerConfig::default()
    };
    run(listener, config, shutdown).await.context("serving")
}

/// Reads every revocation list file (the server checks each one's signature
/// against its pool's key when it applies it).
fn load_revocations(files: &[std::path::PathBuf]) -> anyhow::Result<Vec<Revocations>> {
    files
        .iter()
        .map(|path| {
            let bytes =
                std::fs::read(path).with_context(|| format!("--revocations {}", path.display()))?;
            serde_json::from_slice(&bytes)
                .with_context(|| format!("--revocations {}: not a revocation list", path.display()))
        })
        .collect()
}

/// On SIGHUP, reads the revocation lists again and hands them to the
/// server; a file that cannot be read keeps the lists held (and says why).
fn reload_on_hangup(
    files: Vec<std::path::PathBuf>,
    lists: tokio::sync::watch::Sender<Vec<Revocations>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match load_revocations(&files) {
                Ok(loaded) => {
                    tracing::info!(files = files.len(), "SIGHUP: revocation lists reloaded");
                    lists.send_replace(loaded);
                }
                Err(e) => tracing::error!("SIGHUP: {e:#}; keeping the revocation lists held"),
            }
        }
    });
    Ok(())
}

/// Installs the SIGINT/SIGTERM handlers (before the ready line, so a signal
/// right after it is not missed); either one cancels `shutdown`.
fn on_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!("{which}: shutting down");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        shutdown.cancel();
    });
    Ok(())
}
