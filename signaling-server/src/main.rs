//! `signal-server`: jobmesh's discovery and handshake relay.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use jobmesh_signal::{run, ServerConfig, MAX_PEERS_PER_POOL};
use tokio_util::sync::CancellationToken;

/// Tells jobmesh peers who else is in their pool and relays their WebRTC handshakes.
#[derive(Parser, Debug)]
#[command(name = "signal-server", version)]
struct Args {
    /// Address to listen on (use port 0 for any free port).
    #[arg(long, env = "JOBMESH_LISTEN", default_value = "127.0.0.1:7070")]
    listen: String,
    /// WebSocket ping interval in milliseconds; peers silent for 3 are removed.
    #[arg(long, env = "JOBMESH_HEARTBEAT_MS", default_value_t = jobmesh_wire::signal::DEFAULT_HEARTBEAT_MS)]
    heartbeat_ms: u64,
    /// Most peers in one pool.
    #[arg(long, default_value_t = MAX_PEERS_PER_POOL)]
    max_peers_per_pool: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("JOBMESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
    if args.heartbeat_ms == 0 {
        anyhow::bail!("--heartbeat-ms must be at least 1");
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; pick another with --listen",
                args.listen
            )
        })?;
    let addr = listener.local_addr().context("local address")?;
    let shutdown = CancellationToken::new();
    on_signals(shutdown.clone())?;
    println!("signal-server listening on ws://{addr}/ws");
    let config = ServerConfig {
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        max_peers_per_pool: args.max_peers_per_pool,
        ..ServerConfig::default()
    };
    run(listener, config, shutdown).await.context("serving")
}

/// Installs the SIGINT/SIGTERM handlers (before this returns, so a signal
/// right after the ready line is not missed); either one cancels `shutdown`.
fn on_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    Ok(())
}
